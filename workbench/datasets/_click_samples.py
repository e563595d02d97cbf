"""Training samples for the click network (torch-free): real pairs, real-texture composites, synthetic views.

Every sample is a ``(crop, crop)`` view at the engine's working resolution with its exact
object mask. Sources (weights chosen by the training script):

``region``
    a crop of a real region-mask pair (OCDC, CAMELYON), resized so the whole image would be
    about the engine's working size, times a random zoom;
``gland``
    a crop of a real many-object pair (EBHI-Seg biopsies: every gland of the mask is one
    target, never split into components) at a zoom of ``gland_zoom`` times the image's own
    scale (EBHI-Seg is about 0.8-1 µm/px at 224 px, so the default 0.65-3x spans about
    0.3-1.4 µm/px; below 1x the image is mirrored out to fill the crop, and lower zooms would
    fill most of the crop with mirror images: coarser scales come from the region pairs and
    the tile composites);
``nucleus``
    an object-centred view of one nucleus of a real nucleus-mask pair (its connected
    component is the object; the other nuclei are background);
``tiles``
    a random smooth shape (blob, polygon, elastically warped, sometimes with a hole) filled
    with the texture of one tissue class of the shared tiles and pasted, with a blended edge,
    into the texture of another class (DESIGN §5);
``real_texture``
    the same with real lesion texture (the inside of a real tumour mask, or a tumour tile)
    pasted into real background (the outside of a real mask, or a non-tumour tile);
``procedural`` / ``cohort``
    the procedural H&E-like views and lesion-centred views of a synthetic cohort.

Then the same augmentation for all: rotations by 90° and flips, small free rotations, HED
stain jitter (:func:`workbench.pp.augment_stain`), brightness/contrast/saturation/gamma,
blur and noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from workbench.datasets._mask_pairs import (
    GLAND_DATASETS,
    REGION_DATASETS,
    load_mask_pairs,
    nucleus_objects,
    object_view,
)

__all__ = ["SOURCES", "ClickTrainingSampler", "load_tiles"]

SOURCES = ("region", "gland", "nucleus", "tiles", "real_texture", "procedural", "cohort")
TUMOUR = "tumour"
# complex_stroma holds single tumour cells: neither a clean lesion nor a clean background.
_SKIP_CLASSES = ("complex_stroma",)


def load_tiles(root: str | Path) -> dict[str, list[np.ndarray]]:
    """The shared tissue-class tiles as ``{class: [rgb uint8, ...]}`` (all sources)."""
    from PIL import Image

    out: dict[str, list[np.ndarray]] = {}
    base = Path(root) / "tiles"
    if not base.is_dir():
        return out
    for source in sorted(p for p in base.iterdir() if p.is_dir()):
        for cls in sorted(p for p in source.iterdir() if p.is_dir()):
            if cls.name in _SKIP_CLASSES:
                continue
            for f in sorted(cls.iterdir()):
                if f.suffix.lower() in (".png", ".tif", ".tiff", ".jpg"):
                    out.setdefault(cls.name, []).append(np.asarray(Image.open(f).convert("RGB")))
    return out


def _resize(image: np.ndarray, size_rc: tuple[int, int], *, mask: bool = False) -> np.ndarray:
    from PIL import Image

    h, w = size_rc
    if image.shape[:2] == (h, w):
        return image
    if mask:
        m = Image.fromarray(image.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)
        return np.asarray(m) > 127
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _texture(rng: np.random.Generator, image: np.ndarray, side: int, zoom: float) -> np.ndarray:
    """A ``side`` square of ``image``'s texture at ``zoom`` (mirror-tiled when too small)."""
    need = int(np.ceil(side / zoom))
    h, w = image.shape[:2]
    if h < need or w < need:
        reps = (int(np.ceil(need / h)) + 1, int(np.ceil(need / w)) + 1)
        flipped_v = np.concatenate([image, image[::-1]], axis=0)
        tiled = np.concatenate([flipped_v, flipped_v[:, ::-1]], axis=1)
        image = np.tile(tiled, (reps[0] // 2 + 1, reps[1] // 2 + 1, 1))
        h, w = image.shape[:2]
    r0 = int(rng.integers(0, h - need + 1))
    c0 = int(rng.integers(0, w - need + 1))
    return _resize(np.ascontiguousarray(image[r0 : r0 + need, c0 : c0 + need]), (side, side))


def _smooth_field(rng: np.random.Generator, side: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed unit-variance noise, drawn coarse and upsampled (fast for big sigma)."""
    step = max(int(sigma / 3), 1)
    n = side // step + 2
    field = ndi.gaussian_filter(rng.standard_normal((n, n)), sigma / step, mode="wrap")
    field = ndi.zoom(field, step, order=1)[:side, :side]
    return field / (field.std() + 1e-8)


def random_shape(rng: np.random.Generator, side: int, *, large: bool = True) -> np.ndarray:
    """A random smooth region (blob, polygon or elastic shape, sometimes with a hole).

    ``large=False`` keeps to the smaller, more central shapes of the pretraining schedule
    (radii up to 0.38 of the side, at most 75% of the area)."""
    lo, hi = (0.15, 0.85) if large else (0.2, 0.8)
    r_blob, r_poly, f_max = (0.45, 0.5, 0.85) if large else (0.38, 0.4, 0.75)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)
    for _ in range(20):
        kind = rng.choice(["blob", "polygon", "blob"])
        mask = np.zeros((side, side), bool)
        for _ in range(1 + int(rng.random() < 0.25)):
            cy, cx = rng.uniform(lo, hi, 2) * side
            if kind == "blob":
                ry, rx = rng.uniform(0.08, r_blob, 2) * side
                theta = rng.uniform(0, np.pi)
                dy, dx = rows - cy, cols - cx
                u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
                v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
                wobble = _smooth_field(rng, side, side / rng.uniform(5, 16))
                wobble *= rng.uniform(0.1, 0.6)
                mask |= (u**2 + v**2) < 1.0 + wobble
            else:
                from PIL import Image, ImageDraw

                n = int(rng.integers(4, 12))
                angles = np.sort(rng.uniform(0, 2 * np.pi, n))
                radius = rng.uniform(0.1, r_poly) * side * rng.uniform(0.5, 1.0, n)
                pts = [
                    (float(cx + r * np.cos(a)), float(cy + r * np.sin(a)))
                    for a, r in zip(angles, radius, strict=True)
                ]
                canvas = Image.new("L", (side, side), 0)
                ImageDraw.Draw(canvas).polygon(pts, fill=255)
                mask |= np.asarray(canvas) > 127
        if rng.random() < 0.5:  # elastic warp
            amp = rng.uniform(2, 10)
            sig = side / rng.uniform(6, 14)
            dy = amp * _smooth_field(rng, side, sig)
            dx = amp * _smooth_field(rng, side, sig)
            mask = (
                ndi.map_coordinates(mask.astype(np.float32), [rows + dy, cols + dx], order=1) > 0.5
            )
        if rng.random() < 0.12 and mask.sum() > 400:  # a hole (a lumen, a necrotic centre)
            depth = ndi.distance_transform_edt(mask)
            mask &= depth < rng.uniform(0.4, 0.8) * depth.max()
        fraction = mask.mean()
        if 0.02 <= fraction <= f_max:
            return mask
    return mask


def _blend(rng, fg: np.ndarray, bg: np.ndarray, shape: np.ndarray):
    alpha = ndi.gaussian_filter(shape.astype(np.float32), rng.uniform(0.6, 3.0))[..., None]
    image = alpha * fg.astype(np.float32) + (1 - alpha) * bg.astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), alpha[..., 0] > 0.5


@dataclass
class _RegionPair:
    image: np.ndarray  # resized so the longest side is about the working size
    mask: np.ndarray
    inside: list = field(default_factory=list)  # (r, c) windows almost all lesion
    outside: list = field(default_factory=list)  # (r, c) windows almost all background


def _windows(mask: np.ndarray, side: int, *, lesion: bool, stride: int = 16) -> list:
    integral = np.pad(mask.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape
    out = []
    for r in range(0, h - side + 1, stride):
        for c in range(0, w - side + 1, stride):
            s = integral[r + side, c + side] - integral[r, c + side] - integral[r + side, c]
            s = (s + integral[r, c]) / side**2
            if (s > 0.97) if lesion else (s < 0.03):
                out.append((r, c))
    return out


class ClickTrainingSampler:
    """Draws ``(image float32 (crop, crop, 3) in [0, 1], mask bool)`` training samples.

    Parameters
    ----------
    real_root
        The shared data folder, or ``None`` for no real data (tiles included).
    datasets
        Real sets to use (pairs and, for the region sets, textures).
    split
        Which part of each set (see :func:`~workbench.datasets.load_mask_pairs`).
    splits
        Per-set exceptions to ``split``, e.g. ``{"ebhi": "fit"}`` to keep a set's ``val``
        part out of training.
    weights
        Sampling weight per source in :data:`SOURCES`; sources without data are dropped.
    crop
        Side of a sample in working pixels.
    work_size
        The engine's working size (longest side of a view).
    procedural_views, procedural_seed
        How many procedural views to pre-generate, from which seed.
    cohort_views
        ``(name, rgb, mask)`` lesion views of a synthetic cohort, or ``None``.
    stain_sigma, stain_bias
        Strength of the HED stain jitter.
    large_shapes
        Composite shapes up to 0.45 of the crop and 85% of its area (``False``: 0.38, 75%).
    texture_zoom
        Range of the magnification applied to the shared tiles' texture in tile composites
        (below 1: lower magnification than the tiles' 0.5 µm/px, as in a region-level view).
    gland_zoom
        Range (log-uniform) of the zoom of a ``gland`` crop relative to the image's own
        pixels.
    """

    def __init__(
        self,
        *,
        real_root: str | Path | None,
        datasets: tuple[str, ...] = (),
        split: str = "train",
        splits: dict[str, str] | None = None,
        weights: dict[str, float],
        crop: int = 192,
        work_size: int = 384,
        procedural_views: int = 60,
        procedural_seed: int = 10_000,
        cohort_views: list | None = None,
        stain_sigma: float = 0.2,
        stain_bias: float = 0.05,
        large_shapes: bool = True,
        texture_zoom: tuple[float, float] = (0.8, 2.0),
        gland_zoom: tuple[float, float] = (0.65, 3.0),
    ) -> None:
        from workbench.datasets._mask_pairs import synthetic_lesion_views

        unknown = set(weights) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)}; choose from {', '.join(SOURCES)}")
        self.crop = int(crop)
        self.work_size = int(work_size)
        self.stain_sigma = float(stain_sigma)
        self.stain_bias = float(stain_bias)
        self.large_shapes = bool(large_shapes)
        self.texture_zoom = (float(texture_zoom[0]), float(texture_zoom[1]))
        self.gland_zoom = (float(gland_zoom[0]), float(gland_zoom[1]))
        self.regions: list[_RegionPair] = []
        self.glands: list[tuple[np.ndarray, np.ndarray]] = []
        self.nuclei: list[tuple[np.ndarray, np.ndarray, list]] = []
        self.tiles: dict[str, list[np.ndarray]] = {}
        self.counts: dict[str, int] = {}
        tex = 96  # texture windows, in working pixels
        if real_root is not None:
            self.tiles = load_tiles(real_root)
            for dataset in datasets:
                part = (splits or {}).get(dataset, split)
                least = 0.005 if dataset in GLAND_DATASETS else 0.0
                pairs = load_mask_pairs(real_root, dataset, split=part, min_fraction=least)
                self.counts[dataset] = len(pairs)
                for p in pairs:
                    if dataset in GLAND_DATASETS:
                        self.glands.append((p.image, p.mask))
                    elif dataset in REGION_DATASETS:
                        s = self.work_size / max(p.mask.shape)
                        size = (round(p.mask.shape[0] * s), round(p.mask.shape[1] * s))
                        image = _resize(p.image, size)
                        mask = _resize(p.mask, size, mask=True)
                        self.regions.append(
                            _RegionPair(
                                image,
                                mask,
                                _windows(mask, tex, lesion=True),
                                _windows(mask, tex, lesion=False),
                            )
                        )
                    else:
                        labels, objs = nucleus_objects(p.mask, min_area=40)
                        if objs:
                            self.nuclei.append((p.image, labels, objs))
        self.counts["tiles"] = sum(len(v) for v in self.tiles.values())
        self.procedural = (
            synthetic_lesion_views(procedural_views, size=320, seed=procedural_seed)
            if weights.get("procedural", 0) > 0
            else []
        )
        self.cohort = [(im, m) for _, im, m in (cohort_views or [])]
        self.counts["procedural"] = len(self.procedural)
        self.counts["cohort"] = len(self.cohort)
        available = {
            "region": any(r.mask.any() for r in self.regions),
            "gland": bool(self.glands),
            "nucleus": bool(self.nuclei),
            "tiles": len(self.tiles) >= 2,
            "real_texture": any(r.inside for r in self.regions) or TUMOUR in self.tiles,
            "procedural": bool(self.procedural),
            "cohort": bool(self.cohort),
        }
        self.weights = {k: float(v) for k, v in weights.items() if v > 0 and available[k]}
        if not self.weights:
            raise ValueError("no training source has data; check real_root and the weights")
        names = list(self.weights)
        p = np.array([self.weights[k] for k in names])
        self._names, self._p = names, p / p.sum()

    # ------------------------------------------------------------------ sources --------
    def _region(self, rng):
        for _ in range(20):
            pair = self.regions[int(rng.integers(len(self.regions)))]
            zoom = float(np.exp(rng.uniform(np.log(0.55), np.log(1.4))))
            view, mask = self._crop(rng, pair.image, pair.mask, zoom)
            if 0.005 < mask.mean():
                return view, mask
        return view, mask

    def _crop(self, rng, image, mask, zoom, pad_mode: str = "reflect"):
        need = int(round(self.crop / zoom))
        h, w = mask.shape
        if h < need or w < need:
            pad = ((0, max(need - h, 0)), (0, max(need - w, 0)))
            if pad_mode == "symmetric":  # mirror on both sides, so the image sits anywhere
                before = [int(rng.integers(0, p[1] + 1)) for p in pad]
                pad = ((before[0], pad[0][1] - before[0]), (before[1], pad[1][1] - before[1]))
            image = np.pad(image, pad + ((0, 0),), mode=pad_mode)
            mask = np.pad(mask, pad, mode=pad_mode)
            h, w = mask.shape
        r0 = int(rng.integers(0, h - need + 1))
        c0 = int(rng.integers(0, w - need + 1))
        im = _resize(np.ascontiguousarray(image[r0 : r0 + need, c0 : c0 + need]), (self.crop,) * 2)
        m = _resize(
            np.ascontiguousarray(mask[r0 : r0 + need, c0 : c0 + need]), (self.crop,) * 2, mask=True
        )
        return im, m

    def _gland(self, rng):
        lo, hi = self.gland_zoom
        for _ in range(20):
            image, mask = self.glands[int(rng.integers(len(self.glands)))]
            zoom = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            view, target = self._crop(rng, image, mask, zoom, pad_mode="symmetric")
            if 0.005 < target.mean():
                return view, target
        return view, target

    def _nucleus(self, rng):
        image, labels, objs = self.nuclei[int(rng.integers(len(self.nuclei)))]
        obj = objs[int(rng.integers(len(objs)))]
        context = float(rng.uniform(1.8, 3.5))
        return object_view(image, labels, obj, rng=rng, side=self.crop, context=context)

    def _tile(self, rng, cls: str) -> np.ndarray:
        tiles = self.tiles[cls]
        return tiles[int(rng.integers(len(tiles)))]

    def _tiles(self, rng):
        classes = sorted(self.tiles)
        fg_cls = TUMOUR if (TUMOUR in self.tiles and rng.random() < 0.4) else rng.choice(classes)
        bg_cls = rng.choice([c for c in classes if c != fg_cls])
        lo, hi = self.texture_zoom
        zoom = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        fg = _texture(rng, self._tile(rng, fg_cls), self.crop, zoom)
        bg = _texture(rng, self._tile(rng, bg_cls), self.crop, zoom * rng.uniform(0.85, 1.15))
        return _blend(rng, fg, bg, random_shape(rng, self.crop, large=self.large_shapes))

    def _real_texture(self, rng):
        zoom = float(np.exp(rng.uniform(np.log(0.8), np.log(1.6))))
        inside = [r for r in self.regions if r.inside]
        outside = [r for r in self.regions if r.outside]
        if inside and (rng.random() < 0.7 or TUMOUR not in self.tiles):
            pair = inside[int(rng.integers(len(inside)))]
            r, c = pair.inside[int(rng.integers(len(pair.inside)))]
            fg = _texture(rng, pair.image[r : r + 96, c : c + 96], self.crop, zoom)
        else:
            fg = _texture(rng, self._tile(rng, TUMOUR), self.crop, zoom)
        others = [c for c in self.tiles if c != TUMOUR]
        if outside and (rng.random() < 0.5 or not others):
            pair = outside[int(rng.integers(len(outside)))]
            r, c = pair.outside[int(rng.integers(len(pair.outside)))]
            bg = _texture(rng, pair.image[r : r + 96, c : c + 96], self.crop, zoom)
        else:
            bg = _texture(rng, self._tile(rng, rng.choice(others)), self.crop, zoom)
        return _blend(rng, fg, bg, random_shape(rng, self.crop, large=self.large_shapes))

    def _synthetic(self, rng, pool):
        image, mask = pool[int(rng.integers(len(pool)))]
        s = self.work_size / max(mask.shape)
        zoom = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)))) * s
        return self._crop(rng, image, mask, zoom)

    # ------------------------------------------------------------------ public ---------
    def draw(self, rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray]:
        """One augmented sample.

        Parameters
        ----------
        rng
            Random generator.

        Returns
        -------
        tuple[str, numpy.ndarray, numpy.ndarray]
            ``(source, image float32 (crop, crop, 3) in [0, 1], mask bool (crop, crop))``.
        """
        source = self._names[int(rng.choice(len(self._names), p=self._p))]
        for _ in range(10):
            if source == "region":
                image, mask = self._region(rng)
            elif source == "gland":
                image, mask = self._gland(rng)
            elif source == "nucleus":
                image, mask = self._nucleus(rng)
            elif source == "tiles":
                image, mask = self._tiles(rng)
            elif source == "real_texture":
                image, mask = self._real_texture(rng)
            elif source == "procedural":
                image, mask = self._synthetic(rng, self.procedural)
            else:
                image, mask = self._synthetic(rng, self.cohort)
            if mask.any():
                break
        image, mask = self.augment(rng, image, mask)
        return source, image, mask

    def perturbed(self, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
        """A plausible but wrong previous outline: ``mask`` eroded or dilated, then warped.

        Parameters
        ----------
        rng
            Random generator (drawn from in a fixed order: a reproducible run).
        mask
            The true mask, boolean ``(side, side)``.

        Returns
        -------
        numpy.ndarray
            A boolean mask of the same shape (what training uses as a "previous mask").
        """
        out = mask.copy()
        k = int(rng.integers(2, 12))
        out = (
            ndi.binary_dilation(out, iterations=k)
            if rng.random() < 0.5
            else ndi.binary_erosion(out, iterations=k)
        )
        side = mask.shape[0]
        noise = _smooth_field(rng, side, side / 10)[:side, : mask.shape[1]]
        return out ^ (noise > 2.0)

    def augment(self, rng: np.random.Generator, image: np.ndarray, mask: np.ndarray):
        """Geometric and colour augmentation of a uint8 view; returns float32 [0, 1].

        Parameters
        ----------
        rng
            The random generator (the sampler's draws stay reproducible).
        image
            ``(H, W, 3)`` uint8 view.
        mask
            ``(H, W)`` bool mask, moved with the image.

        Returns
        -------
        tuple
            ``(image, mask)``: the float32 image in ``[0, 1]`` and the mask, rotated, flipped
            and stain/colour/blur/noise augmented.
        """
        from workbench.pp import augment_stain

        k = int(rng.integers(0, 4))
        image, mask = np.rot90(image, k), np.rot90(mask, k)
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        image, mask = np.ascontiguousarray(image), np.ascontiguousarray(mask)
        if rng.random() < 0.25:
            angle = float(rng.uniform(-45, 45))
            image = ndi.rotate(image, angle, axes=(0, 1), reshape=False, order=1, mode="reflect")
            mask = (
                ndi.rotate(mask.astype(np.float32), angle, reshape=False, order=1, mode="reflect")
                > 0.5
            )
        if rng.random() < 0.85:
            image = augment_stain(image, sigma=self.stain_sigma, bias=self.stain_bias, rng=rng)
        out = image.astype(np.float32) / 255.0
        if rng.random() < 0.6:
            grey = out.mean(axis=2, keepdims=True)
            out = grey + (out - grey) * rng.uniform(0.6, 1.4)  # saturation
            out = (out - 0.5) * rng.uniform(0.75, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)
            out = np.clip(out, 0, 1) ** rng.uniform(0.75, 1.35)
        if rng.random() < 0.2:
            out = ndi.gaussian_filter(out, (rng.uniform(0.4, 1.5),) * 2 + (0,))
        if rng.random() < 0.3:
            out = out + rng.normal(0, rng.uniform(0.005, 0.03), out.shape)
        return np.clip(out, 0, 1).astype(np.float32), mask
