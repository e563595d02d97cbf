"""``RegionRefiner``: fix a lesion outline with clicks, in JupyterLab (ipywidgets 8).

Clicks reach Python through ipyevents on ``ipywidgets.Image`` widgets: the browser reports
the click in the image's own pixel coordinates (``dataX``/``dataY``), whatever size the image
is drawn at, and the widgets are plain ipywidgets, so nothing else needs installing. Every
event handler is an ordinary method (``handle_click``, ``handle_overview_click``, ``undo``,
``reset``, ``save`` …) so the widget can be driven and tested without a browser.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path

import numpy as np

from workbench._constants import LESION_CLASS, LESION_COLOR, LESION_REFINED
from workbench._errors import WorkbenchError

__all__ = ["RegionRefiner"]

_POS_COLOUR = (0, 200, 70)
_NEG_COLOUR = (230, 40, 40)
_MASK_COLOUR = np.array([255, 60, 200], np.float32)


def _encode(image: np.ndarray, fmt: str = "png") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def _draw_dot(img: np.ndarray, x: float, y: float, colour, radius: int = 4) -> None:
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


class RegionRefiner:
    """Refine a slide's lesion outline with positive and negative clicks.

    Parameters
    ----------
    slide
        A :class:`~workbench.io.Slide` or a path that ``Slide`` opens.
    adata
        Optional region AnnData of the slide (``pp.region_graph`` / ``tl.extract``). Its focus
        regions (``uns["explain"]``) are offered as places to go, its lesion maps are the
        starting outline when nothing was saved before, and :meth:`save` writes the refined
        lesion back into it (``obs["lesion_refined"]`` and ``uns["lesion_refined"]``).
    geojson
        Previously saved outline (ours or QuPath's own export) to start from; polygons
        classified ``"Tumor"`` (or unclassified) are read.
    output
        Where :meth:`save` writes the GeoJSON (default: ``geojson`` when given, else
        ``<slide name>.lesion.geojson`` next to the slide, or in the working folder for
        in-memory slides).
    adata_path
        When given, :meth:`save` also writes the updated AnnData there (atomically).
    view_size
        Side of the square view in pixels.
    view_downsample
        Level-0 pixels per view pixel (the view's magnification).
    method, engine
        Refinement method for a new :class:`RefinementEngine`, or a ready engine.
    overview_size
        Longest side of the overview thumbnail.
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
    ) -> None:
        from workbench.interactive._engine import RefinementEngine
        from workbench.io import Slide

        self.slide = slide if isinstance(slide, Slide) else Slide(slide)
        self.adata = adata
        self.adata_path = Path(adata_path) if adata_path is not None else None
        self.view_size = int(view_size)
        self.engine = engine if engine is not None else RefinementEngine(method=method)
        self.opacity = 0.4
        self.negative_mode = False
        self.status = ""
        self.saved_path: Path | None = None

        if output is None:
            if geojson is not None:
                output = geojson
            elif self.slide.path and Path(self.slide.path).exists():
                p = Path(self.slide.path)
                output = p.with_name(p.stem + ".lesion.geojson")
            else:
                output = Path.cwd() / "lesion.geojson"
        self.output = Path(output)

        self.overview = self.slide.thumbnail(max_size=int(overview_size))
        self.overview_scale = self.slide.thumbnail_scale(self.overview.shape)
        self._lesion = self._starting_lesion(geojson)  # shapely geometry, level-0 pixels
        self._view_origin = (0.0, 0.0)
        self._view_ds = float(view_downsample)
        self._view_image: np.ndarray | None = None
        self._ui = None
        self._focus = self._focus_regions()
        start = self._focus[0][1] if self._focus else self._lesion_centre()
        self.go_to(start)

    # ---------------------------------------------------------------- lesion store -----
    def _starting_lesion(self, geojson):
        from shapely.geometry import shape
        from shapely.ops import unary_union

        from workbench.io import read_geojson

        anns = []
        if geojson is not None and Path(geojson).exists():
            anns = read_geojson(geojson)
        elif self.adata is not None and LESION_REFINED in getattr(self.adata, "uns", {}):
            text = self.adata.uns[LESION_REFINED].get("geojson")
            if text:
                anns = self._annotations_from_text(str(text))
        elif self.adata is not None and "explain" in getattr(self.adata, "uns", {}):
            anns = self._explain_annotations()
        polys = []
        for ann in anns:
            if ann.geometry_type not in ("Polygon", "MultiPolygon"):
                continue
            if ann.classification not in (None, LESION_CLASS):
                continue
            geom = shape(ann.geometry)
            if not geom.is_valid:
                geom = geom.buffer(0)
            polys.append(geom)
        return unary_union(polys) if polys else None

    @staticmethod
    def _annotations_from_text(text: str):
        import tempfile

        from workbench.io import read_geojson

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "lesion.geojson"
            path.write_text(text)
            return read_geojson(path)

    def _explain_annotations(self):
        from workbench.io import mask_to_annotations

        ex = self.adata.uns["explain"]
        focus = ex.get("focus", {})
        thr = float(ex.get("lesion_threshold", 0.5))
        anns = []
        maps = focus.get("lesion_maps")
        boxes = focus.get("boxes_xywh")
        if maps is None or boxes is None:
            return anns
        for m, (x, y, w, h) in zip(np.asarray(maps), np.asarray(boxes, float), strict=False):
            mask = m >= thr
            if mask.any():
                anns.extend(
                    mask_to_annotations(
                        mask,
                        classification=LESION_CLASS,
                        scale_xy=(w / mask.shape[1], h / mask.shape[0]),
                        offset_xy=(x, y),
                    )
                )
        return anns

    def _focus_regions(self) -> list[tuple[str, tuple[float, float]]]:
        if self.adata is None or "explain" not in getattr(self.adata, "uns", {}):
            return []
        focus = self.adata.uns["explain"].get("focus", {})
        centres = np.asarray(focus.get("centers_xy", np.zeros((0, 2))), float)
        scores = np.asarray(focus.get("focus_score", np.zeros(len(centres))), float)
        probs = np.asarray(focus.get("lesion_prob", np.zeros(len(centres))), float)
        return [
            (f"focus {i + 1} (score {scores[i]:.2f}, lesion p {probs[i]:.2f})", tuple(c))
            for i, c in enumerate(centres)
        ]

    def _lesion_centre(self) -> tuple[float, float]:
        if self._lesion is not None and not self._lesion.is_empty:
            p = self._lesion.representative_point()
            return (p.x, p.y)
        w, h = self.slide.dimensions
        return (w / 2.0, h / 2.0)

    def _view_box(self):
        from shapely.geometry import box

        x0, y0 = self._view_origin
        h, w = self._view_image.shape[:2]
        return box(x0, y0, x0 + w * self._view_ds, y0 + h * self._view_ds)

    def _mask_in_view(self, geom) -> np.ndarray:
        from workbench.io import Annotation, annotations_to_mask

        h, w = self._view_image.shape[:2]
        if geom is None or geom.is_empty:
            return np.zeros((h, w), dtype=bool)
        clipped = geom.intersection(self._view_box())
        if clipped.is_empty:
            return np.zeros((h, w), dtype=bool)
        from shapely.geometry import mapping

        ann = Annotation(geometry=mapping(clipped), classification=LESION_CLASS)
        if ann.geometry_type not in ("Polygon", "MultiPolygon"):
            polys = [g for g in getattr(clipped, "geoms", []) if g.geom_type == "Polygon"]
            if not polys:
                return np.zeros((h, w), dtype=bool)
            from shapely.geometry import MultiPolygon

            ann = Annotation(geometry=mapping(MultiPolygon(polys)), classification=LESION_CLASS)
        return annotations_to_mask(
            [ann], (h, w), scale_xy=(self._view_ds, self._view_ds), offset_xy=self._view_origin
        )

    def _view_geometry(self, mask: np.ndarray):
        from shapely.geometry import shape
        from shapely.ops import unary_union

        from workbench.io import mask_to_annotations

        anns = mask_to_annotations(
            mask,
            classification=LESION_CLASS,
            scale_xy=(self._view_ds, self._view_ds),
            offset_xy=self._view_origin,
            min_area_px=4,
            tolerance=0.5,
        )
        polys = [shape(a.geometry).buffer(0) for a in anns]
        return unary_union(polys) if polys else None

    def _commit_view(self) -> None:
        """Fold the refined view mask into the slide-level lesion outline."""
        if self._view_image is None or self.engine.clicks is None or not len(self.engine.clicks):
            return
        inside = self._view_geometry(self.engine.mask)
        rest = self._lesion.difference(self._view_box()) if self._lesion is not None else None
        parts = [g for g in (rest, inside) if g is not None and not g.is_empty]
        from shapely.ops import unary_union

        self._lesion = unary_union(parts) if parts else None

    def lesion_annotations(self) -> list:
        """The current slide-level lesion outline (with the open view's edits) as annotations."""
        from shapely.geometry import mapping
        from shapely.ops import unary_union

        from workbench.io import Annotation

        geom = self._lesion
        if (
            self._view_image is not None
            and self.engine.clicks is not None
            and len(self.engine.clicks)
        ):
            inside = self._view_geometry(self.engine.mask)
            rest = geom.difference(self._view_box()) if geom is not None else None
            parts = [g for g in (rest, inside) if g is not None and not g.is_empty]
            geom = unary_union(parts) if parts else None
        if geom is None or geom.is_empty:
            return []
        polys = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
        anns = []
        for p in polys:
            if p.geom_type != "Polygon" or p.area <= 0:
                continue
            anns.append(
                Annotation(
                    geometry=mapping(p),
                    classification=LESION_CLASS,
                    color=LESION_COLOR,
                    measurements={"area_px": float(p.area)},
                )
            )
        return anns

    # ---------------------------------------------------------------- navigation -------
    def go_to(self, centre_xy) -> np.ndarray:
        """Open the view centred on level-0 ``centre_xy``; returns its starting mask."""
        self._commit_view()
        W, H = self.slide.dimensions
        ds = self._view_ds
        mpp = self.slide.mpp
        side = self.view_size
        if mpp is None:
            level = self.slide.best_level_for_downsample(ds)
            ds = float(self.slide.info.level_downsamples[level])
        span = side * ds
        x0 = float(np.clip(centre_xy[0] - span / 2, 0, max(W - span, 0)))
        y0 = float(np.clip(centre_xy[1] - span / 2, 0, max(H - span, 0)))
        w = int(min(side, np.floor((W - x0) / ds)))
        h = int(min(side, np.floor((H - y0) / ds)))
        if mpp is None:
            image = self.slide.read_region((x0, y0), (w, h), level=level)
        else:
            image = self.slide.read_region((x0, y0), (w, h), mpp=ds * mpp)
        self._view_ds = ds
        self._view_origin = (x0, y0)
        self._view_image = np.ascontiguousarray(image[:, :, :3])
        start = self._mask_in_view(self._lesion)
        self.engine.set_view(self._view_image, initial_mask=start if start.any() else None)
        self.status = f"view at x={x0:.0f}, y={y0:.0f} (level 0), {w}x{h} px, {ds:g} px/px"
        self._refresh(overview=True)
        return self.engine.mask

    def handle_overview_click(self, x: float, y: float) -> np.ndarray:
        """Go to the place clicked on the overview (``x``, ``y`` in thumbnail pixels)."""
        sx, sy = self.overview_scale
        h, w = self.overview.shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            warnings.warn(
                f"overview click ({x}, {y}) is outside the thumbnail; ignored", stacklevel=2
            )
            return self.engine.mask
        return self.go_to(((x + 0.5) * sx, (y + 0.5) * sy))

    def select_focus(self, index: int) -> np.ndarray:
        """Go to the ``index``-th focus region of ``adata.uns["explain"]``."""
        if not self._focus:
            raise WorkbenchError("this slide's AnnData has no focus regions (run tl.extract first)")
        return self.go_to(self._focus[int(index)][1])

    @property
    def view_origin_xy(self) -> tuple[float, float]:
        """Level-0 ``(x, y)`` of the open view's top-left corner."""
        return (float(self._view_origin[0]), float(self._view_origin[1]))

    @property
    def view_image(self) -> np.ndarray:
        """The open view's RGB pixels (uint8), as the engine sees them."""
        return self._view_image

    @property
    def view_downsample(self) -> float:
        """Level-0 pixels per view pixel."""
        return float(self._view_ds)

    def view_mask_of(self, mask: np.ndarray, downsample: float) -> np.ndarray:
        """Sample a whole-slide mask (drawn at ``downsample``) onto the open view's pixels.

        Handy for comparing the view with a reference outline, e.g. a cohort's lesion truth.
        """
        mask = np.asarray(mask, dtype=bool)
        h, w = self.mask.shape
        x0, y0 = self.view_origin_xy
        vds = self.view_downsample
        rows = ((y0 + (np.arange(h) + 0.5) * vds) / downsample).astype(int)
        cols = ((x0 + (np.arange(w) + 0.5) * vds) / downsample).astype(int)
        rows = np.clip(rows, 0, mask.shape[0] - 1)
        cols = np.clip(cols, 0, mask.shape[1] - 1)
        return mask[np.ix_(rows, cols)]

    # ---------------------------------------------------------------- clicks -----------
    @property
    def mask(self) -> np.ndarray:
        """The open view's current mask (bool, view pixels)."""
        return self.engine.mask

    def handle_click(self, x: float, y: float, positive: bool | None = None) -> np.ndarray:
        """A click on the view at pixel ``(x, y)``; ``positive=None`` follows the mode toggle."""
        if positive is None:
            positive = not self.negative_mode
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
        self._refresh()
        return mask

    def undo(self) -> np.ndarray:
        mask = self.engine.undo()
        self.status = f"undo: {len(self.engine.clicks)} clicks"
        self._refresh()
        return mask

    def reset(self) -> np.ndarray:
        mask = self.engine.reset()
        self.status = "reset to the starting outline"
        self._refresh()
        return mask

    def set_opacity(self, value: float) -> None:
        self.opacity = float(np.clip(value, 0.0, 1.0))
        self._refresh()

    def set_negative_mode(self, negative: bool) -> None:
        self.negative_mode = bool(negative)

    # ---------------------------------------------------------------- saving -----------
    def save(self, path: str | Path | None = None) -> Path:
        """Write the lesion outline as QuPath GeoJSON (atomically) and update the AnnData.

        Returns the GeoJSON path. On failure (e.g. a read-only folder) a
        :class:`~workbench.WorkbenchError` is raised and nothing in the refiner, the AnnData or
        the old file changes.

        Writes ``obs["lesion_refined"]`` (bool: at least half of the region inside the
        outline), ``obs["lesion_refined_fraction"]`` and ``uns["lesion_refined"]`` (``geojson``
        text, ``geojson_path``, ``mask`` at the region-label resolution, ``scale_xy``).
        """
        from workbench.io import write_geojson

        path = Path(path) if path is not None else self.output
        anns = self.lesion_annotations()
        written = write_geojson(path, anns)
        if self.adata is not None:
            self._write_back(anns, written)
        self.saved_path = Path(written)
        self.status = f"saved {len(anns)} lesion polygon(s) to {written}"
        self._refresh(overview=True)
        return Path(written)

    def _write_back(self, anns, path: Path) -> None:
        from workbench.io import annotations_to_mask, write_h5ad

        adata = self.adata.copy() if self.adata_path is not None else self.adata
        rg = adata.uns.get("region_graph")
        record = {
            "geojson_path": str(path),
            "geojson": json.dumps(
                {"type": "FeatureCollection", "features": [a.to_feature() for a in anns]}
            ),
            "n_polygons": len(anns),
        }
        obs_values = None
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
            fraction = inside[ids] / np.maximum(total[ids], 1)
            obs_values = fraction
        elif "spatial" in adata.obsm:
            # No label image: a region counts as lesion when its centroid lies inside.
            xy = np.asarray(adata.obsm["spatial"], float)
            from shapely import points
            from shapely.geometry import shape
            from shapely.ops import unary_union

            geom = unary_union([shape(a.geometry) for a in anns]) if anns else None
            obs_values = (
                geom.contains(points(xy)).astype(float) if geom is not None else np.zeros(len(xy))
            )
        if obs_values is not None:
            adata.obs[LESION_REFINED] = obs_values >= 0.5
            adata.obs[LESION_REFINED + "_fraction"] = obs_values.astype(np.float32)
        adata.uns[LESION_REFINED] = record
        if self.adata_path is not None:
            write_h5ad(adata, self.adata_path)  # raises before self.adata changes
            self.adata = adata

    def _on_save(self, *_):
        try:
            self.save()
        except WorkbenchError as exc:
            self.status = f"not saved: {exc}"
            self._refresh()

    # ---------------------------------------------------------------- rendering --------
    def render_view(self) -> np.ndarray:
        """The view with the mask overlay and the clicks drawn on it (uint8 RGB)."""
        img = self._view_image.astype(np.float32)
        mask = self.engine.mask
        a = self.opacity
        img[mask] = (1 - a) * img[mask] + a * _MASK_COLOUR
        img[_outline(mask)] = _MASK_COLOUR
        out = np.clip(img, 0, 255).astype(np.uint8)
        for c in self.engine.clicks.clicks:
            _draw_dot(out, c.x, c.y, _POS_COLOUR if c.positive else _NEG_COLOUR)
        return out

    def render_overview(self) -> np.ndarray:
        """The thumbnail with the lesion outline and the open view's box (uint8 RGB)."""
        from workbench.io import annotations_to_mask

        img = self.overview.astype(np.float32)
        anns = self.lesion_annotations()
        if anns:
            mask = annotations_to_mask(anns, img.shape[:2], scale_xy=self.overview_scale)
            img[mask] = (1 - self.opacity) * img[mask] + self.opacity * _MASK_COLOUR
        out = np.clip(img, 0, 255).astype(np.uint8)
        sx, sy = self.overview_scale
        x0, y0 = self._view_origin
        h, w = self._view_image.shape[:2]
        c0, r0 = int(x0 / sx), int(y0 / sy)
        c1 = min(int((x0 + w * self._view_ds) / sx), out.shape[1] - 1)
        r1 = min(int((y0 + h * self._view_ds) / sy), out.shape[0] - 1)
        out[r0 : r1 + 1, [c0, c1]] = (255, 200, 0)
        out[[r0, r1], c0 : c1 + 1] = (255, 200, 0)
        return out

    def _refresh(self, overview: bool = False) -> None:
        if self._ui is None:
            return
        self._view_widget.value = _encode(self.render_view(), "jpeg")
        if overview:
            self._overview_widget.value = _encode(self.render_overview())
        self._status_widget.value = self.status

    # ---------------------------------------------------------------- widgets ----------
    def _on_view_event(self, event: dict) -> None:
        x, y = event.get("dataX"), event.get("dataY")
        if x is None or y is None:
            return
        if event.get("type") == "contextmenu" or event.get("button") == 2:
            positive = False
        elif event.get("shiftKey"):
            positive = False
        else:
            positive = None
        self.handle_click(float(x), float(y), positive)

    def _on_overview_event(self, event: dict) -> None:
        x, y = event.get("dataX"), event.get("dataY")
        if x is not None and y is not None:
            self.handle_overview_click(float(x), float(y))

    def widget(self):
        """Build (once) and return the ipywidgets layout."""
        if self._ui is not None:
            return self._ui
        import ipywidgets as W
        from ipyevents import Event

        self._view_widget = W.Image(format="jpeg", layout=W.Layout(width="512px"))
        self._view_widget.add_class("wb-refiner-view")
        self._overview_widget = W.Image(format="png", layout=W.Layout(width="320px"))
        self._overview_widget.add_class("wb-refiner-overview")
        self._status_widget = W.Label(value=self.status)
        self._status_widget.add_class("wb-refiner-status")
        self._events = [
            Event(
                source=self._view_widget,
                watched_events=["click", "contextmenu"],
                prevent_default_action=True,
            ),
            Event(source=self._overview_widget, watched_events=["click"]),
        ]
        self._events[0].on_dom_event(self._on_view_event)
        self._events[1].on_dom_event(self._on_overview_event)

        mode = W.ToggleButtons(options=["positive", "negative"], value="positive")
        mode.observe(lambda ch: self.set_negative_mode(ch["new"] == "negative"), names="value")
        undo = W.Button(description="Undo", icon="undo")
        undo.on_click(lambda _: self.undo())
        reset = W.Button(description="Reset", icon="refresh")
        reset.on_click(lambda _: self.reset())
        save = W.Button(description="Save", icon="save", button_style="success")
        save.add_class("wb-refiner-save")
        save.on_click(self._on_save)
        opacity = W.FloatSlider(
            value=self.opacity, min=0.0, max=1.0, step=0.05, description="opacity"
        )
        opacity.observe(lambda ch: self.set_opacity(ch["new"]), names="value")
        controls = [mode, undo, reset, save]
        if self._focus:
            pick = W.Dropdown(options=[(name, i) for i, (name, _) in enumerate(self._focus)])
            pick.observe(lambda ch: self.select_focus(ch["new"]), names="value")
            controls.insert(0, pick)
        help_text = W.HTML(
            "<small>left click: add (or the toggle's kind); shift-click or right click: "
            "remove; click the overview to move</small>"
        )
        self._ui = W.VBox(
            [
                W.HBox(controls),
                W.HBox([self._view_widget, W.VBox([self._overview_widget, opacity, help_text])]),
                self._status_widget,
            ]
        )
        self._refresh(overview=True)
        return self._ui

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget())

    def __repr__(self) -> str:
        return (
            f"RegionRefiner({self.slide!r}, method={self.engine.method!r}, "
            f"clicks={len(self.engine.clicks)}, output={str(self.output)!r})"
        )
