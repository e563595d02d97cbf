"""Quality checks on a slide's thumbnail before a model trained on H&E reads it.

:func:`check_brightfield` answers one question: does this image look like brightfield H&E?
Brightfield images are white light minus what the stains absorb, so glass is bright, dark
pixels are still coloured, and the two H&E dyes absorb green most (tissue is pink to purple).
Fluorescence (DAPI, FITC …) is the opposite: black where there is nothing, light emitted in
one colour channel where there is signal. The checks and their thresholds were set on the
shared real data: every H&E tile and mask image there (including dense lymphocyte tiles with
a median brightness of 43/255) passes, and the Hamamatsu DAPI slide fails on two counts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from workbench._errors import InvalidImageError, NotBrightfieldWarning

# A pixel whose brightest channel is below this is "black" (no light at all).
_BLACK_LEVEL = 40
# More than this share of black pixels: a dark background, i.e. not brightfield. Dense H&E
# tissue reaches about 0.2 (nct_crc_he_100k lymphocytes); the DAPI slide 0.76.
_MAX_BLACK_FRACTION = 0.5
# One channel carrying more than this share of all light: a single fluorescence channel.
# H&E reaches about 0.64 (a debris tile with a colour cast); the DAPI slide 0.95.
_MAX_CHANNEL_SHARE = 0.75
# In H&E tissue green is the weakest channel in nearly every pixel (0.46 at the lowest in
# the shared data, an augmented TNBC image); below this share the stain is something else.
_MIN_GREEN_LOWEST = 0.3
# Mean channel spread (max - min) of tissue pixels below this: a greyscale image.
_MIN_COLOUR_SPREAD = 6.0
# Pixels darker than this (mean of channels) count as tissue for the colour checks.
_TISSUE_LEVEL = 220
_CHANNELS = ("red", "green", "blue")


@dataclass(frozen=True)
class BrightfieldCheck:
    """What :func:`check_brightfield` found.

    Made by :func:`check_brightfield`; each parameter is kept as the attribute of the same
    name.

    Parameters
    ----------
    looks_like_he
        ``True`` when nothing suggests the image is not brightfield H&E.
    reasons
        One sentence per failed check (empty when ``looks_like_he``).
    black_fraction
        Share of pixels with no light in any channel.
    dominant_channel, dominant_share
        The channel carrying the most light and its share of all light (1/3 for grey).
    tissue_fraction
        Share of pixels darker than glass, on which the colour checks are made.
    green_lowest_fraction
        Share of those pixels whose green channel is the weakest (H&E: nearly all);
        ``None`` with too little tissue to judge.
    """

    looks_like_he: bool
    reasons: tuple[str, ...]
    black_fraction: float
    dominant_channel: str
    dominant_share: float
    tissue_fraction: float
    green_lowest_fraction: float | None

    @property
    def reason(self) -> str:
        """The reasons in one line, or a note that the image looks like brightfield H&E."""
        return "; ".join(self.reasons) if self.reasons else "looks like brightfield H&E"

    def __bool__(self) -> bool:
        return self.looks_like_he


def _as_rgb(image) -> np.ndarray:
    if hasattr(image, "thumbnail") and hasattr(image, "read_region"):  # a workbench Slide
        image = image.thumbnail(max_size=512)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InvalidImageError(
            f"check_brightfield needs an RGB image of shape (rows, cols, 3), got shape "
            f"{arr.shape}; pass a slide's thumbnail (Slide.thumbnail(max_size=512)) or the Slide"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidImageError("check_brightfield got an empty image (0 pixels)")
    if arr.dtype != np.uint8:
        raise InvalidImageError(
            f"check_brightfield needs uint8 RGB (0-255), got dtype {arr.dtype}; convert with "
            "skimage.util.img_as_ubyte or pass the thumbnail as read"
        )
    step = max(1, int(np.ceil(max(arr.shape[:2]) / 1024)))  # a thumbnail's worth of pixels
    return arr[::step, ::step, :3]


def check_brightfield(
    image, *, name: str | None = None, warn: bool = False, stacklevel: int = 2
) -> BrightfieldCheck:
    """Check that a slide looks like brightfield H&E before an H&E-trained model grades it.

    Four checks on the thumbnail: not a dark background (more than half the pixels without
    light: fluorescence or darkfield), not one colour channel carrying most of the light (a
    fluorescence channel such as DAPI), tissue not greyscale, and tissue coloured as H&E
    (green the weakest channel, as eosin and haematoxylin absorb it most; IHC's brown DAB does
    not). Only the first two apply to an image with almost no tissue.

    Parameters
    ----------
    image
        The slide's thumbnail, ``(rows, cols, 3)`` uint8 RGB, or a :class:`~workbench.io.Slide`
        (its 512-px thumbnail is read).
    name
        How to call the slide in the warning (e.g. its id or path).
    warn
        Also issue a :class:`~workbench.NotBrightfieldWarning` when a check fails.
    stacklevel
        Passed to :func:`warnings.warn`, so the warning points at the caller's line.

    Returns
    -------
    BrightfieldCheck
        ``looks_like_he``, the reasons and the measured numbers; truthy when it passes.

    Raises
    ------
    InvalidImageError
        The image is not a non-empty uint8 RGB array (or a Slide).
    """
    rgb = _as_rgb(image)
    f = rgb.astype(np.float32)
    black = float((rgb.max(axis=2) < _BLACK_LEVEL).mean())
    totals = f.reshape(-1, 3).sum(axis=0)
    share = float(totals.max() / totals.sum()) if totals.sum() > 0 else 1.0 / 3.0
    dominant = _CHANNELS[int(np.argmax(totals))]
    tissue = f.mean(axis=2) < _TISSUE_LEVEL
    tissue_fraction = float(tissue.mean())
    reasons: list[str] = []
    if black > _MAX_BLACK_FRACTION:
        reasons.append(
            f"{black:.0%} of the image is black (no light in any channel); brightfield glass "
            "is white, so this looks like fluorescence or darkfield"
        )
    if share > _MAX_CHANNEL_SHARE:
        reasons.append(
            f"the {dominant} channel carries {share:.0%} of all light: one fluorescence "
            "channel (e.g. DAPI in blue) rather than a stain seen in white light"
        )
    green_lowest = None
    if tissue_fraction >= 0.01 and not reasons:
        t = f[tissue]
        spread = float((t.max(axis=1) - t.min(axis=1)).mean())
        green_lowest = float(((t[:, 1] <= t[:, 0]) & (t[:, 1] <= t[:, 2])).mean())
        if spread < _MIN_COLOUR_SPREAD:
            reasons.append(
                f"the tissue has no colour (mean channel spread {spread:.1f} of 255): a "
                "greyscale image, not H&E"
            )
        elif green_lowest < _MIN_GREEN_LOWEST:
            reasons.append(
                f"only {green_lowest:.0%} of tissue pixels have green as their weakest channel "
                "(H&E: nearly all, as both dyes absorb green); another stain such as IHC/DAB?"
            )
    result = BrightfieldCheck(
        looks_like_he=not reasons,
        reasons=tuple(reasons),
        black_fraction=black,
        dominant_channel=dominant,
        dominant_share=share,
        tissue_fraction=tissue_fraction,
        green_lowest_fraction=green_lowest,
    )
    if warn and reasons:
        warnings.warn(
            NotBrightfieldWarning(
                f"{name or 'this slide'} does not look like brightfield H&E: {result.reason}. "
                "A model trained on H&E grades it anyway and the result will not mean much; "
                "check the file, or filter this warning if you know what you are doing"
            ),
            stacklevel=stacklevel,
        )
    return result
