"""``RefinementSession``: refine a slide's lesion outline with clicks, without any UI.

The session owns the lesion outline of one slide in **level-0 pixels** (a shapely geometry),
and a *view*: a window of the slide at some magnification that the refinement engine works
on. Moving the view (go to a point or a focus region, zoom in/out, pan) first folds the open
view's clicks into the slide outline, then draws the outline into the new view as its
starting mask, so nothing is lost between views or magnifications. :meth:`save` writes the
outline as QuPath GeoJSON and, with an AnnData, the refined lesion per region, validating
every output path before anything is written.

The geometry between view masks and the level-0 outline is in
:mod:`workbench.interactive._outline` (pure functions), the overlay images in
:mod:`workbench.interactive._render`; this class holds the state (outline, view, engine) and
the navigation and saving rules. The widget (:class:`~workbench.interactive.RegionRefiner`,
reached as ``refiner.session``), the demo and the tests all drive this class; nothing here
imports ipywidgets.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

from workbench._constants import LESION_REFINED
from workbench._errors import InvalidViewError, RefinementError
from workbench.interactive import _outline, _render

__all__ = ["RefinementSession"]

LESION_REFINED_FRACTION = LESION_REFINED + "_fraction"
_DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def _check_output_path(path: Path, what: str) -> Path:
    """Raise :class:`~workbench.io.OutputWriteError` unless ``path`` can be written."""
    from workbench.io import OutputWriteError

    path = Path(path).expanduser()
    if path.exists() and path.is_dir():
        raise OutputWriteError(
            f"the {what} path {str(path)!r} is a folder; give a file name inside it"
        )
    existing = path.parent
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputWriteError(
            f"cannot save the {what} to {str(path)!r}: {str(existing)!r} is a file, not a "
            "folder; choose another location"
        )
    if not os.access(existing, os.W_OK):
        raise OutputWriteError(
            f"cannot save the {what} to {str(path)!r}: {str(existing)!r} is not writable; "
            "choose a writable location"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputWriteError(
            f"cannot replace the {what} {str(path)!r}: the file is read-only; choose "
            "another name or make it writable"
        )
    return path


class RefinementSession:
    """Refine a slide's lesion outline with positive and negative clicks, headless.

    Parameters
    ----------
    slide
        A :class:`~workbench.io.Slide` or a path that ``Slide`` opens.
    adata
        Optional region AnnData of the slide (``pp.region_graph`` / ``tl.extract``). Its focus
        regions (``uns["explain"]``) are offered as places to go, its lesion maps are the
        starting outline when nothing was saved before, and :meth:`save` writes the refined
        lesion back (``obs["lesion_refined"]``, ``obs["lesion_refined_fraction"]``,
        ``uns["lesion_refined"]``).
    geojson
        Previously saved outline (ours or a QuPath export) to start from; polygons classified
        ``"Tumor"`` (or unclassified) are read.
    output
        Where :meth:`save` writes the GeoJSON (default: ``geojson`` when given, else
        ``<slide name>.lesion.geojson`` next to the slide, or ``lesion.geojson`` in the
        working folder for in-memory slides).
    adata_path
        When given, :meth:`save` also writes the updated AnnData there.
    view_size
        Side of the square view in pixels.
    view_downsample
        Level-0 pixels per view pixel at the start (the view's magnification).
    method, engine
        Refinement method for a new :class:`RefinementEngine`, or a ready engine.
    overview_size
        Longest side of the overview thumbnail.
    zoom_step
        Factor of one :meth:`zoom_in` / :meth:`zoom_out`, rounded to a power of two (at
        least 2): magnifications are powers of two.
    min_downsample
        The finest magnification :meth:`zoom_in` goes to (level-0 pixels per view pixel).
    learn
        Learn from the user (default ``True``): when a view with clicks is left (any
        navigation) or saved, the engine adapts to its final outline
        (:meth:`RefinementEngine.adapt`, about a second); :meth:`save` writes the adapted
        state next to the GeoJSON as ``<name>.adaptation.safetensors`` (``slide.lesion.geojson``
        -> ``slide.lesion.adaptation.safetensors``, see :func:`adaptation_path_for`), and a
        new session with the same output loads it. A file that does not fit the engine's
        network (or is damaged) is ignored with a :class:`UserWarning`. ``False``: no
        adaptation, nothing read or written besides the outline.
    min_area_um2
        :meth:`save` drops polygons smaller than this (µm², default 50: about a lymphocyte's
        area, so a stray speck is not saved as a lesion).
    smooth_um
        Radius (µm, default 20) by which the model's start outline (the focus regions' lesion
        maps) is smoothed, an opening then a closing (:func:`_outline.smooth`), at least one
        lesion-map cell, so the maps' pixel staircase and box corners are not saved. Without a
        recorded resolution (``slide.mpp`` is ``None``) these two µm values are converted at
        0.5 µm per level-0 pixel.
    """

    def __init__(
        self,
        slide,
        *,
        adata=None,
        geojson: str | Path | None = None,
        output: str | Path | None = None,
        adata_path: str | Path | None = None,
        view_size: int = 512,
        view_downsample: float = 2.0,
        method: str = "cgam",
        engine=None,
        overview_size: int = 512,
        zoom_step: float = 2.0,
        min_downsample: float = 1.0,
        learn: bool = True,
        min_area_um2: float = 50.0,
        smooth_um: float = 20.0,
    ) -> None:
        from workbench.interactive._engine import RefinementEngine
        from workbench.io import Slide

        if not (isinstance(view_size, int | np.integer) and view_size >= 8):
            raise InvalidViewError(f"view_size must be an integer >= 8 pixels, got {view_size!r}")
        for name, value, low in (
            ("view_downsample", view_downsample, 0.0),
            ("zoom_step", zoom_step, 1.0),
            ("min_downsample", min_downsample, 0.0),
            ("min_area_um2", min_area_um2, -1e-300),
            ("smooth_um", smooth_um, -1e-300),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > low):
                raise RefinementError(f"{name} must be a finite number > {low:g}, got {value!r}")
        self.slide = slide if isinstance(slide, Slide) else Slide(slide)
        self.adata = adata
        self.adata_path = Path(adata_path) if adata_path is not None else None
        self.view_size = int(view_size)
        self.zoom_step = float(zoom_step)
        self.min_downsample = float(min_downsample)
        self.min_area_um2 = float(min_area_um2)
        self.smooth_um = float(smooth_um)
        self.engine = engine if engine is not None else RefinementEngine(method=method)
        self.status = ""
        self.saved_path: Path | None = None

        if output is None:
            if geojson is not None:
                output = geojson
            elif self.slide.path and Path(self.slide.path).exists():
                from workbench.io import slide_id

                p = Path(self.slide.path)
                output = p.with_name(slide_id(p) + ".lesion.geojson")
            else:
                output = Path.cwd() / "lesion.geojson"
        self.output = Path(output)
        self.learn = bool(learn)
        self.history_views = 20  # views with clicks that undo can go back to
        self._learnt_key = None
        self._listeners: list = []  # called with overview=True/False after every change
        self._refined_area = None  # level 0: where the user refined (views with clicks)
        self._model_made_by = self._model_name()
        self._past: list[dict] = []  # one entry per view left with clicks (undo across views)
        self._load_adaptation()

        self.overview = self.slide.thumbnail(max_size=int(overview_size))
        self.overview_scale = self.slide.thumbnail_scale(self.overview.shape)
        self._lesion = self._starting_lesion(geojson)  # shapely geometry, level-0 pixels
        self._origin = (0.0, 0.0)
        self._ds = float(view_downsample)
        self._image: np.ndarray | None = None
        self._focus = self._focus_regions()
        start = self._focus[0][1] if self._focus else self._lesion_centre()
        self.go_to(start)

    # ---------------------------------------------------------------- lesion store -----
    @property
    def um_per_px(self) -> float:
        """µm per level-0 pixel (``slide.mpp``; 0.5 when the slide records none)."""
        return float(self.slide.mpp) if self.slide.mpp else 0.5

    def _model_name(self) -> str:
        """``"model <fingerprint>"`` of the AnnData's model (what its start outline is by)."""
        from workbench._constants import EXTRACT_FINGERPRINT

        uns = getattr(self.adata, "uns", {}) if self.adata is not None else {}
        fp = uns.get(EXTRACT_FINGERPRINT, {})
        if isinstance(fp, dict) and fp.get("model"):
            return f"model {str(fp['model'])[:16]}"
        name = uns.get("explain", {}).get("model") if isinstance(uns.get("explain"), dict) else None
        return f"model {name}" if name else "model (unknown)"

    def _starting_lesion(self, geojson):
        from workbench.io import read_geojson

        anns, predicted = [], False
        if geojson is not None and Path(geojson).exists():
            anns = read_geojson(geojson)
        elif self.adata is not None and LESION_REFINED in getattr(self.adata, "uns", {}):
            text = self.adata.uns[LESION_REFINED].get("geojson")
            if text:
                anns = _outline.annotations_from_text(str(text))
        elif self.adata is not None and "explain" in getattr(self.adata, "uns", {}):
            explain = self.adata.uns["explain"]
            anns, predicted = _outline.focus_annotations(explain), True
        geom = _outline.outline_from_annotations(anns)
        if geom is None:
            return None
        geom = _outline.on_slide(geom, self.slide.dimensions, geojson)
        if predicted:
            return _outline.smooth(geom, self._smoothing_radius(explain))
        # A saved outline: what the model made stays the model's, the rest is the user's.
        model = [a for a in anns if a.classification == _outline.MODEL_CLASS]
        for a in model:
            if a.properties.get("made_by"):
                self._model_made_by = str(a.properties["made_by"])
                break
        mine = [a for a in anns if a.classification != _outline.MODEL_CLASS]
        self._refined_area = _outline.outline_from_annotations(mine)
        return geom

    def _smoothing_radius(self, explain: dict) -> float:
        """:attr:`smooth_um` in level-0 pixels, at least one lesion-map cell."""
        cell = 0.0
        focus = explain.get("focus", {})
        maps, boxes = focus.get("lesion_maps"), focus.get("boxes_xywh")
        if maps is not None and boxes is not None and len(np.asarray(boxes)):
            m = np.asarray(maps)
            b = np.asarray(boxes, float)
            cell = float(np.max(b[:, 2:4] / np.array(m.shape[1:3])[::-1]))
        if self.smooth_um <= 0:
            return 0.0
        return max(self.smooth_um / self.um_per_px, cell)

    def _focus_regions(self) -> list[tuple[str, tuple[float, float]]]:
        if self.adata is None or "explain" not in getattr(self.adata, "uns", {}):
            return []
        focus = self.adata.uns["explain"].get("focus", {})
        centres = np.asarray(focus.get("centers_xy", np.zeros((0, 2))), float)
        scores = np.asarray(focus.get("focus_score", np.zeros(len(centres))), float)
        probs = np.asarray(focus.get("lesion_prob", np.zeros(len(centres))), float)
        return [
            (
                f"focus {i + 1} (score {scores[i]:.2f}"
                + (f", lesion p {probs[i]:.2f})" if np.isfinite(probs[i]) else ")"),
                tuple(c),
            )
            for i, c in enumerate(centres)
        ]

    @property
    def focus_regions(self) -> list[tuple[str, tuple[float, float]]]:
        """``(label, level-0 centre (x, y))`` of the AnnData's focus regions (may be empty)."""
        return list(self._focus)

    def _lesion_centre(self) -> tuple[float, float]:
        if self._lesion is not None and not self._lesion.is_empty:
            p = self._lesion.representative_point()
            return (p.x, p.y)
        w, h = self.slide.dimensions
        return (w / 2.0, h / 2.0)

    def _view_box(self):
        return _outline.view_box(self._origin, self._image.shape, self._ds)

    def _mask_in_view(self, geom) -> np.ndarray:
        return _outline.mask_in_view(geom, self._origin, self._image.shape, self._ds)

    def _edited(self) -> bool:
        return (
            self._image is not None
            and self.engine.clicks is not None
            and len(self.engine.clicks) > 0
        )

    def _merged_lesion(self):
        """The slide outline with the open view's edits in place of what it covered."""
        if not self._edited():
            return self._lesion
        inside = _outline.view_geometry(self.engine.mask, self._origin, self._ds)
        return _outline.merge_view(self._lesion, inside, self._view_box())

    @property
    def lesion(self):
        """The slide-level outline (shapely geometry in level-0 pixels, or ``None``), with the
        open view's edits."""
        return self._merged_lesion()

    def _refined_now(self):
        """Where the user refined, with the open view when it has clicks (level 0)."""
        if not self._edited():
            return self._refined_area
        from shapely.ops import unary_union

        parts = [g for g in (self._refined_area, self._view_box()) if g is not None]
        return unary_union(parts)

    def lesion_annotations(self) -> list:
        """The current slide-level lesion outline (with the open view's edits) as annotations.

        As :meth:`save` writes it: clipped to the slide, without polygons under
        :attr:`min_area_um2`, the user's polygons (class ``"Tumor"``) apart from the model's
        start outline (``"Tumor (model)"``), each with ``properties.source`` and
        ``properties.made_by`` (:func:`_outline.saved_annotations`).

        Returns
        -------
        list of workbench.io.Annotation
            The annotations, level-0 pixels (empty without an outline).
        """
        geom = _outline.tidy(
            self._merged_lesion(),
            self.slide.dimensions,
            self.min_area_um2 / self.um_per_px**2,
        )
        return _outline.saved_annotations(
            geom,
            self._refined_now(),
            made_by_user=f"user clicks ({self.engine.method})",
            made_by_model=self._model_made_by,
            um_per_px=self.um_per_px,
        )

    # ---------------------------------------------------------------- navigation -------
    def _max_downsample(self) -> float:
        W, H = self.slide.dimensions
        whole = 2.0 ** math.ceil(math.log2(max(max(W, H) / self.view_size, 1e-9)))
        return max(whole, self.min_downsample)

    def _read(self, x0: float, y0: float, w: int, h: int, ds: float) -> np.ndarray:
        if self.slide.mpp is not None:
            return self.slide.read_region((x0, y0), (w, h), mpp=ds * self.slide.mpp)
        # No resolution recorded: read the best pyramid level and resample to the view.
        from PIL import Image

        level = self.slide.best_level_for_downsample(ds)
        level_ds = float(self.slide.info.level_downsamples[level])
        lw = max(int(round(w * ds / level_ds)), 1)
        lh = max(int(round(h * ds / level_ds)), 1)
        image = self.slide.read_region((x0, y0), (lw, lh), level=level)[:, :, :3]
        if (lw, lh) != (w, h):
            image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h)))
        return image

    def go_to(self, centre_xy, *, downsample: float | None = None) -> np.ndarray:
        """Open the view centred on level-0 ``centre_xy``.

        The open view's clicks are folded into the slide outline first. The view is clamped
        to the slide, and the downsample to ``min_downsample`` .. the whole slide.

        Parameters
        ----------
        centre_xy
            Level-0 ``(x, y)`` of the new view's centre.
        downsample
            Level-0 pixels per view pixel; default: the current magnification.

        Returns
        -------
        numpy.ndarray
            The new view's starting mask (bool, view pixels).

        Raises
        ------
        InvalidViewError
            ``centre_xy`` or ``downsample`` is not finite, or the view would be degenerate.
        """
        try:
            cx, cy = (float(v) for v in centre_xy)
        except (TypeError, ValueError) as exc:
            raise InvalidViewError(
                f"centre_xy must be a level-0 (x, y) pair, got {centre_xy!r}"
            ) from exc
        ds = self._ds if downsample is None else downsample
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise InvalidViewError(f"centre_xy must be finite, got {centre_xy!r}")
        if not (isinstance(ds, int | float | np.floating) and math.isfinite(ds) and ds > 0):
            raise InvalidViewError(f"downsample must be a finite number > 0, got {ds!r}")
        ds = float(np.clip(ds, self.min_downsample, self._max_downsample()))
        W, H = self.slide.dimensions
        span = self.view_size * ds
        x0 = float(np.clip(cx - span / 2, 0, max(W - span, 0)))
        y0 = float(np.clip(cy - span / 2, 0, max(H - span, 0)))
        w = int(min(self.view_size, math.floor((W - x0) / ds)))
        h = int(min(self.view_size, math.floor((H - y0) / ds)))
        if w < 8 or h < 8:
            raise InvalidViewError(
                f"a view of {max(w, 0)}x{max(h, 0)} pixels at {ds:g} level-0 px per px is too "
                f"small to refine (the slide is {W}x{H}); zoom in (a smaller downsample)"
            )
        image = self._read(x0, y0, w, h, ds)
        self._commit_view()  # only once the new view is known to open
        self._ds = ds
        self._origin = (x0, y0)
        self._image = np.ascontiguousarray(image[:, :, :3])
        start = self._mask_in_view(self._lesion)
        self.engine.set_view(self._image, initial_mask=start if start.any() else None)
        self.status = f"view at x={x0:.0f}, y={y0:.0f} (level 0), {w}x{h} px, {self.scale_text}"
        self._changed(overview=True)
        return self.engine.mask

    def _commit_view(self) -> None:
        if self._edited():
            self._learn_from_view()
            self._past.append(
                {
                    "lesion": self._lesion,
                    "refined": self._refined_area,
                    "origin": self._origin,
                    "ds": self._ds,
                    "image": self._image,
                    "engine": (self.engine._view, self.engine.clicks),
                }
            )
            del self._past[: -self.history_views]
            refined = self._refined_now()
            self._lesion = self._merged_lesion()
            self._refined_area = refined

    # ---------------------------------------------------------------- learning ---------
    def _can_learn(self) -> bool:
        from workbench.interactive._adapt import supports_adaptation

        model = getattr(self.engine, "model", None)
        return self.learn and model is not None and supports_adaptation(model)

    @property
    def adaptation_path(self) -> Path:
        """Where :meth:`save` writes the engine's adaptation (next to the GeoJSON)."""
        from workbench.interactive._adapt import adaptation_path_for

        return adaptation_path_for(self.output)

    def _load_adaptation(self) -> None:
        if not self._can_learn() or not self.adaptation_path.is_file():
            return
        try:
            self.engine.load_adaptation(self.adaptation_path)
        except RefinementError as exc:
            warnings.warn(
                f"adaptation not loaded, starting from the packaged network: {exc}",
                UserWarning,
                stacklevel=3,
            )

    def _learn_from_view(self) -> None:
        """Adapt the engine to the open view's outline once (skipped when this very outline
        was learnt already, e.g. saved then left)."""
        if not self._can_learn() or not self._edited():
            return
        import hashlib

        mask = self.engine.mask
        key = (
            self._origin,
            self._ds,
            mask.shape,
            hashlib.sha256(np.packbits(mask).tobytes()).hexdigest(),
        )
        if key == self._learnt_key:
            return
        self.engine.adapt(self._image, mask)
        self._learnt_key = key

    @property
    def view_centre_xy(self) -> tuple[float, float]:
        """Level-0 ``(x, y)`` of the open view's centre."""
        h, w = self._image.shape[:2]
        return (self._origin[0] + w * self._ds / 2, self._origin[1] + h * self._ds / 2)

    def go_to_overview(self, x: float, y: float) -> np.ndarray:
        """Go to the place ``(x, y)`` of the overview thumbnail (its pixels).

        A point outside the thumbnail is ignored with a :class:`UserWarning`.

        Parameters
        ----------
        x, y
            Column and row in overview pixels (:attr:`overview`).

        Returns
        -------
        numpy.ndarray
            The new view's starting mask; the open view's mask when the point is ignored.
        """
        sx, sy = self.overview_scale
        h, w = self.overview.shape[:2]
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < w and 0 <= y < h):
            warnings.warn(
                f"overview click ({x}, {y}) is outside the {w}x{h} thumbnail; ignored",
                UserWarning,
                stacklevel=2,
            )
            return self.engine.mask
        return self.go_to(((x + 0.5) * sx, (y + 0.5) * sy))

    def select_focus(self, index: int) -> np.ndarray:
        """Go to the ``index``-th focus region of ``adata.uns["explain"]``.

        Parameters
        ----------
        index
            Which focus region, counting from 0 (the order of the explanation).

        Returns
        -------
        numpy.ndarray
            The new view's starting mask (bool, view pixels).

        Raises
        ------
        RefinementError
            The AnnData has no focus regions, or ``index`` is out of range.
        """
        if not self._focus:
            raise RefinementError(
                "this slide's AnnData has no focus regions (run tl.extract first)"
            )
        if not 0 <= int(index) < len(self._focus):
            raise RefinementError(
                f"focus region {index} does not exist; choose 0..{len(self._focus) - 1}"
            )
        return self.go_to(self._focus[int(index)][1])

    @property
    def scale_text(self) -> str:
        """The view's resolution in words: ``"0.50 µm/px"`` (or ``"2× level 0"`` without an mpp)."""
        if self.slide.mpp:
            return f"{self._ds * self.slide.mpp:.3g} µm/px"
        return f"{self._ds:g}× level 0 (no µm/px recorded)"

    @property
    def view_um_per_px(self) -> float | None:
        """µm per view pixel (``None`` when the slide records no resolution)."""
        return self._ds * float(self.slide.mpp) if self.slide.mpp else None

    def zoom(self, factor: float, at_xy: tuple[float, float] | None = None) -> np.ndarray:
        """Magnify the view by ``factor`` (> 1 zooms in), to a power of two.

        The new downsample (level-0 pixels per view pixel) is a power of two (``…, 0.5, 1, 2,
        4, …``; zooming in: the one at or below ``downsample / factor``, out: at or above) within ``min_downsample`` and the whole slide, so the magnifications are the
        pyramid's. The view zooms around its centre or, with ``at_xy`` (a view pixel, e.g.
        under the mouse wheel), around that point, which stays where it is on the screen.

        Parameters
        ----------
        factor
            How much to magnify (2: twice; 0.5: half), before rounding to a power of two.
        at_xy
            The view pixel ``(x, y)`` to zoom around (default: the view's centre).

        Returns
        -------
        numpy.ndarray
            The new view's starting mask.
        """
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
            raise InvalidViewError(f"zoom factor must be a finite number > 0, got {factor!r}")
        exact = math.log2(self._ds / float(factor))
        # zooming in: the next power of two at or below; out: at or above (1e-6: rounding)
        step = math.floor(exact + 1e-6) if factor >= 1 else math.ceil(exact - 1e-6)
        target = 2.0**step
        target = float(np.clip(target, self.min_downsample, self._max_downsample()))
        cx, cy = self.view_centre_xy
        if at_xy is not None:
            px = self._origin[0] + float(at_xy[0]) * self._ds
            py = self._origin[1] + float(at_xy[1]) * self._ds
            k = target / self._ds
            cx, cy = px + (cx - px) * k, py + (cy - py) * k
        return self.go_to((cx, cy), downsample=target)

    def drag(self, dx: float, dy: float) -> np.ndarray:
        """Pan as if the image were dragged by ``(dx, dy)`` view pixels (drag right: the
        slide moves right, the view goes left).

        Parameters
        ----------
        dx, dy
            How far the pointer moved, in view pixels.

        Returns
        -------
        numpy.ndarray
            The new view's starting mask.
        """
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (dx, dy)):
            raise InvalidViewError(f"drag must be finite numbers of pixels, got {(dx, dy)!r}")
        cx, cy = self.view_centre_xy
        return self.go_to((cx - dx * self._ds, cy - dy * self._ds))

    def zoom_in(self) -> np.ndarray:
        """Twice the magnification (``zoom_step``), down to ``min_downsample``.

        Returns
        -------
        numpy.ndarray
            The new view's starting mask (bool, view pixels).
        """
        return self.zoom(self._zoom_factor())

    def zoom_out(self) -> np.ndarray:
        """Half the magnification, up to the whole slide in one view.

        Returns
        -------
        numpy.ndarray
            The new view's starting mask (bool, view pixels).
        """
        return self.zoom(1.0 / self._zoom_factor())

    def _zoom_factor(self) -> float:
        return 2.0 ** max(1, round(math.log2(self.zoom_step)))

    def pan(self, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
        """Move the view by ``(dx, dy)`` view widths/heights.

        ``pan(0.5, 0)`` moves half a view to the right; ``pan("left")`` half a view left.

        Parameters
        ----------
        dx
            Step right in view widths (negative: left), or a direction name (``"left"``,
            ``"right"``, ``"up"``, ``"down"``) that moves by half a view.
        dy
            Step down in view heights (negative: up); ignored with a direction name.

        Returns
        -------
        numpy.ndarray
            The new view's starting mask (bool, view pixels).

        Raises
        ------
        InvalidViewError
            An unknown direction name, or steps that are not finite numbers.
        """
        if isinstance(dx, str):
            if dx not in _DIRECTIONS:
                raise InvalidViewError(
                    f"unknown direction {dx!r}; choose one of {', '.join(_DIRECTIONS)}"
                )
            ux, uy = _DIRECTIONS[dx]
            dx, dy = 0.5 * ux, 0.5 * uy
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (dx, dy)):
            raise InvalidViewError(f"pan steps must be finite numbers, got {(dx, dy)!r}")
        h, w = self._image.shape[:2]
        cx, cy = self.view_centre_xy
        return self.go_to((cx + dx * w * self._ds, cy + dy * h * self._ds))

    @property
    def view_origin_xy(self) -> tuple[float, float]:
        """Level-0 ``(x, y)`` of the open view's top-left corner."""
        return (float(self._origin[0]), float(self._origin[1]))

    @property
    def view_image(self) -> np.ndarray:
        """The open view's RGB pixels (uint8), as the engine sees them."""
        return self._image

    @property
    def view_downsample(self) -> float:
        """Level-0 pixels per view pixel."""
        return float(self._ds)

    def view_mask_of(self, mask: np.ndarray, downsample: float) -> np.ndarray:
        """Sample a whole-slide mask (drawn at ``downsample``) onto the open view's pixels.

        Handy for comparing the view with a reference outline, e.g. a cohort's lesion truth.

        Parameters
        ----------
        mask
            A whole-slide mask, one pixel per ``downsample`` level-0 pixels.
        downsample
            Level-0 pixels per pixel of ``mask``.

        Returns
        -------
        numpy.ndarray
            The mask under each view pixel's centre, the shape of the view.
        """
        return _outline.sample_mask(mask, downsample, self._origin, self._image.shape, self._ds)

    # ---------------------------------------------------------------- clicks -----------
    @property
    def mask(self) -> np.ndarray:
        """The open view's current mask (bool, view pixels)."""
        return self.engine.mask

    @property
    def clicks(self):
        """The open view's clicks (:class:`Click` tuple, view pixels)."""
        return self.engine.clicks.clicks

    def click(self, x: float, y: float, positive: bool = True) -> np.ndarray:
        """Click on the view at pixel ``(x, y)`` and refine the mask.

        A click outside the view is ignored with a :class:`UserWarning` (the status says so).

        Parameters
        ----------
        x, y
            Column and row in view pixels.
        positive
            ``True`` adds to the lesion, ``False`` removes.

        Returns
        -------
        numpy.ndarray
            The refined mask (bool, view pixels).
        """
        n_before = len(self.engine.clicks)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mask = self.engine.add_click(x, y, positive)
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=2)
        if len(self.engine.clicks) == n_before:
            self.status = f"click at ({x:.0f}, {y:.0f}) is outside the view; ignored"
        else:
            ms = (time.perf_counter() - start) * 1000
            kind = "positive" if positive else "negative"
            self.status = (
                f"{kind} click {len(self.engine.clicks)} at ({x:.0f}, {y:.0f}): "
                f"{ms:.0f} ms, lesion {mask.mean() * 100:.1f}% of view"
            )
        self._changed(overview=True)
        return mask

    def undo(self) -> np.ndarray:
        """Remove the newest click, in this view or, when it has none, in the view left before.

        The history is the slide's, not the view's: after a pan or a zoom, undo goes back to
        the last view that had clicks (its place, magnification and clicks) and removes its
        newest click, so the slide outline is exactly what it was before that click. Up to
        :attr:`history_views` views are remembered.

        Returns
        -------
        numpy.ndarray
            The open view's mask after the undo.
        """
        if len(self.engine.clicks) == 0 and self._past:
            entry = self._past.pop()
            self._lesion, self._refined_area = entry["lesion"], entry["refined"]
            self._origin, self._ds, self._image = entry["origin"], entry["ds"], entry["image"]
            self.engine._view, self.engine.clicks = entry["engine"]
            self._learnt_key = None
            mask = self.engine.undo()
            self.status = (
                f"undo: back to the view at x={self._origin[0]:.0f}, y={self._origin[1]:.0f}, "
                f"{len(self.engine.clicks)} clicks left there"
            )
        else:
            mask = self.engine.undo()
            self.status = f"undo: {len(self.engine.clicks)} clicks"
        self._changed(overview=True)
        return mask

    @property
    def can_undo(self) -> bool:
        """Whether :meth:`undo` has a click to remove (in this view or a view left before)."""
        return len(self.engine.clicks) > 0 or bool(self._past)

    def reset(self) -> np.ndarray:
        """Forget the open view's clicks.

        Returns
        -------
        numpy.ndarray
            The view's starting mask.
        """
        mask = self.engine.reset()
        self.status = "reset to the starting outline"
        self._changed(overview=True)
        return mask

    # ---------------------------------------------------------------- saving -----------
    def save(self, path: str | Path | None = None, *, adata_path: str | Path | None = None) -> Path:
        """Write the outline as QuPath GeoJSON and, with an AnnData, the refined lesion.

        All or nothing: every output path is checked first (a folder, a file where a folder
        should be, a read-only place, ``adata_path`` without an AnnData …), then both files
        are written to temporary files and renamed into place, the GeoJSON last. On any
        failure nothing on disk and nothing in the session or the AnnData changes.

        Writes ``obs["lesion_refined"]`` (bool: at least half of the region inside the
        outline), ``obs["lesion_refined_fraction"]`` and ``uns["lesion_refined"]`` (``geojson``
        text, ``geojson_path``, ``n_polygons``, ``mask`` at the region-label resolution and
        its ``scale_xy``). With ``adata_path`` (here or in the constructor) the updated
        AnnData is written there and becomes ``self.adata`` (the object passed in stays as
        it was); without, the AnnData passed in is updated in place.

        With ``learn`` the engine first adapts to the open view's outline and its adapted
        state is written next to the GeoJSON (:attr:`adaptation_path`).

        Parameters
        ----------
        path
            The GeoJSON file; default: the session's ``output``.
        adata_path
            Where to write the updated AnnData (``.h5ad``); default: the constructor's.

        Returns
        -------
        Path
            The GeoJSON file.

        Raises
        ------
        OutputWriteError
            A path cannot be written (what to fix is in the message).
        RefinementError
            ``adata_path`` was given but the session has no AnnData, or it is the GeoJSON
            path, or it does not end with ``.h5ad``.
        """
        from workbench.io import atomic_path, write_geojson

        geo_path = _check_output_path(Path(path) if path is not None else self.output, "GeoJSON")
        h5_path = Path(adata_path) if adata_path is not None else self.adata_path
        if h5_path is not None:
            if self.adata is None:
                raise RefinementError(
                    f"adata_path={str(h5_path)!r} was given but the session has no AnnData; "
                    "pass adata= when opening the session, or drop adata_path"
                )
            if h5_path.suffix != ".h5ad":
                raise RefinementError(f"adata_path must name an .h5ad file, got {str(h5_path)!r}")
            h5_path = _check_output_path(h5_path, "AnnData")
            if h5_path.resolve() == geo_path.resolve():
                raise RefinementError(
                    f"the GeoJSON and the AnnData would both be written to {str(geo_path)!r}; "
                    "give them different names"
                )
        learn_path = None
        if self._can_learn():
            from workbench.interactive._adapt import adaptation_path_for

            learn_path = _check_output_path(adaptation_path_for(geo_path), "adaptation")
        anns = self.lesion_annotations()
        updated = self._written_back(anns, geo_path) if self.adata is not None else None
        before = (self.engine.adaptation_state(), self._learnt_key) if learn_path else None
        try:
            if learn_path is not None:
                self._learn_from_view()
            with atomic_path(geo_path) as tmp_geo:
                write_geojson(tmp_geo, anns)  # checks every geometry; raises before any rename
                if h5_path is not None:
                    with atomic_path(h5_path, suffix=".h5ad") as tmp_h5:
                        updated.write_h5ad(tmp_h5)
                if learn_path is not None and self.engine.adapted:
                    self.engine.save_adaptation(learn_path)
        except BaseException:
            if before is not None:  # nothing learnt from a save that did not happen
                self.engine.load_adaptation(before[0])
                self._learnt_key = before[1]
            raise
        if updated is not None:
            if h5_path is not None:
                self.adata = updated
            else:
                self._copy_refinement(updated, self.adata)
        self.saved_path = geo_path
        self.status = f"saved {len(anns)} lesion polygon(s) to {geo_path}"
        self._changed(overview=True)
        return geo_path

    @staticmethod
    def _copy_refinement(src, dst) -> None:
        for key in (LESION_REFINED, LESION_REFINED_FRACTION):
            if key in src.obs:
                dst.obs[key] = src.obs[key].to_numpy()
        dst.uns[LESION_REFINED] = src.uns[LESION_REFINED]

    def _written_back(self, anns, path: Path):
        """A copy of the AnnData with the refined lesion written into it."""
        from workbench.io import annotations_to_mask

        adata = self.adata.copy()
        rg = adata.uns.get("region_graph")
        record = {
            "geojson_path": str(path),
            "geojson": json.dumps(
                {"type": "FeatureCollection", "features": [a.to_feature() for a in anns]}
            ),
            "n_polygons": len(anns),
        }
        values = None
        if rg is not None and "labels" in rg:
            labels = np.asarray(rg["labels"])
            scale_xy = tuple(float(v) for v in np.asarray(rg.get("scale_xy", self.overview_scale)))
            mask = annotations_to_mask(anns, labels.shape, scale_xy=scale_xy)
            record["mask"] = mask.astype(np.uint8)
            record["scale_xy"] = np.asarray(scale_xy, float)
            if "region_id" in adata.obs:
                ids = adata.obs["region_id"].to_numpy().astype(np.int64)
            else:
                ids = np.arange(1, adata.n_obs + 1)
            n = int(max(labels.max(), ids.max())) + 1
            total = np.bincount(labels.ravel(), minlength=n)
            inside = np.bincount(labels.ravel(), weights=mask.ravel().astype(float), minlength=n)
            values = inside[ids] / np.maximum(total[ids], 1)
        elif "spatial" in adata.obsm:
            # No label image: a region counts as lesion when its centroid lies inside.
            from shapely import points
            from shapely.geometry import shape
            from shapely.ops import unary_union

            xy = np.asarray(adata.obsm["spatial"], float)
            geom = unary_union([shape(a.geometry) for a in anns]) if anns else None
            values = (
                geom.contains(points(xy)).astype(float) if geom is not None else np.zeros(len(xy))
            )
        if values is not None:
            adata.obs[LESION_REFINED] = values >= 0.5
            adata.obs[LESION_REFINED_FRACTION] = values.astype(np.float32)
        adata.uns[LESION_REFINED] = record
        return adata

    # ---------------------------------------------------------------- rendering --------
    def render_view(self, *, opacity: float = 0.4) -> np.ndarray:
        """The view with the mask overlay, the clicks and a scale bar in µm (when the slide
        records its resolution) drawn on it.

        Parameters
        ----------
        opacity
            Fill opacity of the mask overlay.

        Returns
        -------
        numpy.ndarray
            ``(H, W, 3)`` uint8 RGB.
        """
        out = _render.render_view(
            self._image, self.engine.mask, self.engine.clicks.clicks, opacity=opacity
        )
        if self.view_um_per_px is not None:
            _render.draw_scale_bar(out, self.view_um_per_px)
        return out

    def render_overview(self, *, opacity: float = 0.4) -> np.ndarray:
        """The thumbnail with the lesion outline and the open view's box.

        Parameters
        ----------
        opacity
            Fill opacity of the lesion overlay.

        Returns
        -------
        numpy.ndarray
            The overview, uint8 RGB.
        """
        return _render.render_overview(
            self.overview,
            self.overview_scale,
            self.lesion_annotations(),
            self._view_box().bounds,
            opacity=opacity,
        )

    def _changed(self, *, overview: bool) -> None:
        """Tell the listeners (the widget) that the view (and, with ``overview``, the
        outline or the view's place) changed."""
        for listener in list(self._listeners):
            listener(overview=overview)

    def __repr__(self) -> str:
        return (
            f"RefinementSession({self.slide!r}, method={self.engine.method!r}, "
            f"view {self.scale_text} at {self.view_origin_xy}, "
            f"clicks={len(self.engine.clicks)}, output={str(self.output)!r})"
        )
