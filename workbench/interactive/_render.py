"""Rendering for the refinement UI: the view and the overview as RGB images (no state).

:class:`~workbench.interactive.RefinementSession` calls these with its view and outline;
the widget shows the result. Colours: the lesion in magenta (filled at ``opacity``, edge
opaque), positive clicks green, negative clicks red, the open view's box on the overview
amber.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "draw_dot",
    "draw_scale_bar",
    "mask_edge",
    "render_overview",
    "render_view",
    "scale_bar_length",
]

POSITIVE_COLOUR = (0, 200, 70)
NEGATIVE_COLOUR = (230, 40, 40)
MASK_COLOUR = np.array([255, 60, 200], np.float32)
BOX_COLOUR = (255, 200, 0)


def mask_edge(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` on its edge (a one-pixel inner outline; the image border
    counts as outside)."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def draw_dot(img: np.ndarray, x: float, y: float, colour, radius: int = 4) -> None:
    """Draw a filled disk with a white ring at view pixel ``(x, y)`` into ``img`` (in place;
    the part outside the image is clipped)."""
    h, w = img.shape[:2]
    r0, c0 = int(round(y)), int(round(x))
    rr, cc = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disk = rr**2 + cc**2 <= radius**2
    ring = disk & (rr**2 + cc**2 >= (radius - 1.5) ** 2)
    for m, col in ((disk, colour), (ring, (255, 255, 255))):
        ys, xs = np.nonzero(m)
        ys, xs = ys + r0 - radius, xs + c0 - radius
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        img[ys[keep], xs[keep]] = col


def render_view(image: np.ndarray, mask: np.ndarray, clicks, *, opacity: float = 0.4):
    """The view with the mask overlaid and the clicks drawn (a new uint8 RGB array).

    Parameters
    ----------
    image
        The view's RGB pixels, ``(H, W, 3)``.
    mask
        The lesion in the view, boolean ``(H, W)``.
    clicks
        The view's clicks (objects with ``x``, ``y``, ``positive``; view pixels).
    opacity
        Fill opacity of the mask (its edge is drawn opaque).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.
    """
    img = image.astype(np.float32)
    img[mask] = (1 - opacity) * img[mask] + opacity * MASK_COLOUR
    img[mask_edge(mask)] = MASK_COLOUR
    out = np.clip(img, 0, 255).astype(np.uint8)
    for c in clicks:
        draw_dot(out, c.x, c.y, POSITIVE_COLOUR if c.positive else NEGATIVE_COLOUR)
    return out


def render_overview(
    overview: np.ndarray,
    overview_scale: tuple[float, float],
    annotations: list,
    view_box_xyxy: tuple[float, float, float, float],
    *,
    opacity: float = 0.4,
) -> np.ndarray:
    """The thumbnail with the lesion outline filled in and the open view's box drawn.

    Parameters
    ----------
    overview
        The slide's thumbnail, ``(h, w, 3)``.
    overview_scale
        Level-0 pixels per thumbnail pixel, ``(sx, sy)``.
    annotations
        The lesion outline as annotations (level 0).
    view_box_xyxy
        The open view's box ``(x0, y0, x1, y1)`` in level-0 pixels.
    opacity
        Fill opacity of the lesion.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8.
    """
    from workbench.io import annotations_to_mask

    img = overview.astype(np.float32)
    if annotations:
        mask = annotations_to_mask(annotations, img.shape[:2], scale_xy=overview_scale)
        img[mask] = (1 - opacity) * img[mask] + opacity * MASK_COLOUR
    out = np.clip(img, 0, 255).astype(np.uint8)
    sx, sy = overview_scale
    x0, y0, x1, y1 = view_box_xyxy
    c0, r0 = int(x0 / sx), int(y0 / sy)
    c1 = min(int(x1 / sx), out.shape[1] - 1)
    r1 = min(int(y1 / sy), out.shape[0] - 1)
    out[r0 : r1 + 1, [c0, c1]] = BOX_COLOUR
    out[[r0, r1], c0 : c1 + 1] = BOX_COLOUR
    return out


#: Lengths a scale bar may show (µm): round numbers.
SCALE_BAR_UM = tuple(m * 10**e for e in range(-1, 6) for m in (1, 2, 5))


def scale_bar_length(um_per_px: float, width_px: int, fraction: float = 0.25) -> float:
    """The longest round length (1, 2, 5 × 10^k µm) that fits in ``fraction`` of the width.

    Parameters
    ----------
    um_per_px
        µm per image pixel.
    width_px
        The image's width in pixels.
    fraction
        The most of the width the bar may take.

    Returns
    -------
    float
        The bar's length in µm (the shortest round length when none fits).
    """
    room = float(um_per_px) * float(width_px) * float(fraction)
    fitting = [v for v in SCALE_BAR_UM if v <= room]
    return float(fitting[-1] if fitting else SCALE_BAR_UM[0])


_FONT = None


def _label_font():
    """A font for the scale bar's label and how it writes "micro": DejaVu Sans (the system's
    or matplotlib's copy) has "µ"; Pillow's built-in font does not, so then it is "u"."""
    global _FONT
    if _FONT is None:
        import importlib.util
        from pathlib import Path

        from PIL import ImageFont

        candidates = ["DejaVuSans.ttf"]
        spec = importlib.util.find_spec("matplotlib")
        if spec is not None and spec.origin:
            candidates.append(
                str(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
            )
        for name in candidates:
            try:
                _FONT = (ImageFont.truetype(name, 12), "µ")
                break
            except OSError:
                continue
        else:
            _FONT = (ImageFont.load_default(), "u")
    return _FONT


def draw_scale_bar(img: np.ndarray, um_per_px: float) -> float:
    """Draw a scale bar with its length in µm at the bottom left of ``img`` (in place).

    A black bar of a round length (:func:`scale_bar_length`) on a white label box, with the
    length written above it.

    Parameters
    ----------
    img
        ``(H, W, 3)`` uint8 image, changed in place.
    um_per_px
        µm per image pixel.

    Returns
    -------
    float
        The length drawn, in µm.
    """
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    um = scale_bar_length(um_per_px, w)
    length = max(int(round(um / um_per_px)), 1)
    font, micro = _label_font()
    text = f"{um:g} {micro}m"
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left, bottom - top
    pad = 4
    x0, y1 = 6, h - 6
    box_w = max(length, tw) + 2 * pad
    box_h = th + 6 + 2 * pad + 2
    y0 = y1 - box_h
    draw.rectangle([x0, y0, x0 + box_w, y1], fill=(255, 255, 255))
    draw.text((x0 + pad - left, y0 + pad - top), text, fill=(0, 0, 0), font=font)
    bar_y = y1 - pad - 4
    draw.rectangle([x0 + pad, bar_y, x0 + pad + length - 1, bar_y + 3], fill=(0, 0, 0))
    img[...] = np.asarray(canvas)
    return um
