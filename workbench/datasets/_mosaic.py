"""Real-tissue mosaic cohorts: pyramidal slides composed from real H&E tiles.

The synthetic cohort (:func:`make_cohort`) knows its truth exactly but its textures are drawn
by a program. A mosaic slide is the other trade-off: every tissue pixel is real H&E from the
shared data set (``tiles/<source>/<class>/`` class tiles, and the tumour parts of the
``masks/ocdc`` and ``masks/camelyon`` patches), laid out on a grid like tissue on a slide,
with a ground truth that follows from the tile classes and the masks.

How a slide is composed
-----------------------
1. **Material.** Every class tile is one piece (224-px tiles are cropped at a random offset
   to 150 px, Kather 2016 tiles are 150 px already; all are ~0.5 µm/px). Each ocdc/camelyon
   image is cut into 150-px windows; windows whose mask covers at least half of them become
   tumour pieces that carry their pixel mask. ``background`` tiles are not used (glass is
   drawn), nor the three CRC-VAL-HE-7K debris tiles with a blue colour cast (PROVENANCE).
2. **Colour harmonisation.** The sources differ in colour (Macenko-normalised CRC-VAL-HE-7K
   against raw Kather 2016 …), which a classifier would learn as a seam. Each image's CIELAB
   mean and SD (of its tissue pixels) are moved 80 % of the way onto those of its class
   averaged over the sources (Reinhard-style, per class); glass-white pixels keep their
   colour.
3. **Split by source image.** Pieces are grouped by the image they come from (Kather 2016:
   ``CRC-Prim-HE-NN``; OCDC: its one source image ``1009009``; the other sets record no source
   image, so each file is its own group) and whole groups are dealt to the train or the test
   side, balancing each class. Train slides are built from train pieces only and test slides
   from test pieces only: no source tile is shared.
4. **Layout.** A grid of 150-px cells at a 134-px pitch (16 px of overlap) over one to three
   smooth tissue islands on glass. Cells of the islands are divided into compartments of one
   class each (stroma, muscle, normal mucosa, lymphocytes, adipose, mucus, debris). A
   **positive** slide gets one tumour cluster (a noisy disc covering about 12-25 % of the
   tissue cells) of tumour pieces, ringed by some ``complex_stroma`` (stroma with single
   tumour cells); a **negative** slide has neither.
5. **Pixels.** Each placed piece is rotated by a multiple of 90 degrees, maybe flipped, and
   colour-jittered in HED space (the model of :func:`workbench.pp.augment_stain`: one draw
   per slide, a smaller one per piece), so no two slides repeat. Overlapping pieces are blended with smooth
   weights over the 16-px overlaps (no hard seams); the island outline is a smooth
   anti-aliased edge to glass. Rendered window by window into a tiled JPEG pyramid
   (:func:`~workbench.datasets._pyramid.write_pyramid`), mpp 0.5 recorded.
6. **Truth.** The lesion probability of a pixel is the blended share of tumour in it (1 for
   a tumour tile, the mask for an ocdc/camelyon piece, 0 elsewhere); its block mean over
   16 x 16 pixels >= 0.5 is the lesion mask (PNG) and its polygons the GeoJSON (QuPath class
   ``Tumor``). ``complex_stroma`` counts as not lesion.

What it can and cannot show
---------------------------
It shows whether a model finds and recognises real tumour texture among real non-tumour
textures when trained and tested on different source images. It cannot show generalisation
to new patients or labs in any strong sense: there are only 1-4 source images per class
(8 tumour tiles, one OCDC slide, 31 CAMELYON patches of unknown origin), the same source
pieces recur in many slides of one side (rotated, flipped, jittered), the layout is a grid,
ocdc/camelyon scales are assumed, not recorded, and every tissue "compartment" is one class.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench._errors import MosaicDataError, WorkbenchError
from workbench.datasets._cohort import read_cohort_params
from workbench.datasets._layout import LAYOUT_DOWNSAMPLE

#: Bumped whenever the same arguments would compose different slides or tables.
MOSAIC_VERSION = 1

#: Side of a placed piece, its overlap with the neighbours and the grid pitch (level-0 px).
PIECE_PX = 150
OVERLAP_PX = 16
PITCH_PX = PIECE_PX - OVERLAP_PX

#: Microns per pixel recorded in the mosaic slides (the tiles are 0.495-0.5 µm/px).
MOSAIC_MPP = 0.5

#: Classes that make up the tissue of every slide, with their share of compartments.
TISSUE_CLASSES = {
    "stroma": 0.28,
    "normal_mucosa": 0.20,
    "muscle": 0.14,
    "lymphocytes": 0.12,
    "adipose": 0.10,
    "mucus": 0.08,
    "debris": 0.08,
}
#: Classes only positive slides hold (complex stroma contains single tumour cells).
TUMOUR_CLASSES = ("tumour", "complex_stroma")

MOSAIC_CLINICAL_COLUMNS = ["patient_id", "slide", "tumour", "split"]
MOSAIC_TRUTH_COLUMNS = [
    "patient_id",
    "slide_id",
    "slide",
    "tumour",
    "split",
    "lesion_fraction",
    "tissue_fraction",
    "tumour_cells",
    "tissue_cells",
    "groups",
    "slide_seed",
]

_TILE_SOURCES = ("kather2016", "crc_val_he_7k", "nct_crc_he_100k")
_MASK_SOURCES = ("ocdc", "camelyon")
_BLUE_CAST = {"DEB-TCGA-DKYWVQIP", "DEB-TCGA-EIIQLRRN", "DEB-TCGA-VFLRIKDV"}
_GLASS = np.array([243.0, 242.0, 240.0], dtype=np.float32)
_MIN_MASK_SHARE = 0.5
_IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class Piece:
    """One piece of real tissue the mosaic can place.

    Attributes
    ----------
    key
        ``source/class/file`` (``#rRcC`` appended for a window of a mask patch).
    source
        Data set folder (``kather2016`` …, ``ocdc``, ``camelyon``).
    group
        Source image id used to split train from test.
    cls
        Tissue class.
    rgb
        ``(h, w, 3)`` uint8 pixels, at least ``PIECE_PX`` a side (colour-harmonised).
    lesion
        ``(h, w)`` float32 lesion share per pixel (1 for tumour tiles, the mask for
        ocdc/camelyon windows, 0 elsewhere).
    """

    key: str
    source: str
    group: str
    cls: str
    rgb: np.ndarray = field(repr=False)
    lesion: np.ndarray = field(repr=False)


def _group_of(source: str, name: str) -> str:
    stem = Path(name).name.split(".")[0]
    if source == "kather2016":
        m = re.search(r"CRC-Prim-HE-(\d+)", name)
        return f"kather2016:CRC-Prim-HE-{m.group(1)}" if m else f"kather2016:{stem}"
    if source == "ocdc":
        return f"ocdc:{stem.split('_')[0]}"
    return f"{source}:{stem}"


def default_data_dir() -> Path | None:
    """``$WORKBENCH_REAL_DATA`` or ``../shared/data`` next to the working folder, if present."""
    env = os.environ.get("WORKBENCH_REAL_DATA")
    for cand in ([Path(env)] if env else []) + [Path.cwd().parent / "shared" / "data"]:
        if (cand / "tiles").is_dir():
            return cand
    return None


def _resolve_data_dir(data_dir) -> Path:
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    if path is None or not (path / "tiles").is_dir():
        where = str(data_dir) if data_dir is not None else "$WORKBENCH_REAL_DATA or ../shared/data"
        raise MosaicDataError(
            f"no real tile folder found at {where!r}: a mosaic cohort is composed from the "
            "shared real data (a folder with tiles/<source>/<class>/ and masks/ocdc, "
            "masks/camelyon); pass data_dir= or set WORKBENCH_REAL_DATA"
        )
    return path


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass
class _Image:
    source: str
    group: str
    cls: str
    name: str
    rgb: np.ndarray
    mask: np.ndarray | None  # lesion mask of an ocdc/camelyon patch


def _read_images(root: Path) -> list[_Image]:
    images = []
    for source in _TILE_SOURCES:
        for cls_dir in sorted((root / "tiles" / source).glob("*")):
            cls = cls_dir.name
            if not cls_dir.is_dir() or cls not in {*TISSUE_CLASSES, *TUMOUR_CLASSES}:
                continue
            for f in sorted(cls_dir.iterdir()):
                if f.suffix.lower() not in _IMAGE_SUFFIXES or f.stem in _BLUE_CAST:
                    continue
                rgb = _read_rgb(f)
                if min(rgb.shape[:2]) >= PIECE_PX:
                    images.append(_Image(source, _group_of(source, f.name), cls, f.name, rgb, None))
    for source in _MASK_SOURCES:
        folder = root / "masks" / source / "images"
        for f in sorted(folder.glob("*")) if folder.is_dir() else []:
            mask_file = root / "masks" / source / "masks" / f.name
            if f.suffix.lower() not in _IMAGE_SUFFIXES or not mask_file.exists():
                continue
            mask = (_read_rgb(mask_file)[..., 0] > 127).astype(np.float32)
            if mask.mean() < 0.05:  # a normal patch (or nearly): no tumour to take
                continue
            rgb = _read_rgb(f)
            images.append(_Image(source, _group_of(source, f.name), "tumour", f.name, rgb, mask))
    return images


def _tissue_lab(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from skimage.color import rgb2lab

    lab = rgb2lab(rgb).astype(np.float32)
    flat = lab.reshape(-1, 3)
    tissue = flat[flat[:, 0] < 88.0]
    return lab, (tissue if len(tissue) >= 100 else flat)


def _harmonise(images: list[_Image], strength: float) -> dict:
    """Reinhard-style colour match of every image to its class's mean over sources (CIELAB).

    The reference of a class is the mean over sources of that source's pooled LAB mean and
    SD of the class's tissue pixels (not glass-white); each image's own mean and SD are
    mapped a share ``strength`` of the way onto it. Near-white pixels keep their colour.
    Returns the class references.
    """
    from skimage.color import lab2rgb

    labs, stats = [], {}
    for im in images:
        lab, tissue = _tissue_lab(im.rgb)
        labs.append((lab, tissue.mean(0), tissue.std(0) + 1e-3))
        stats.setdefault((im.source, im.cls), []).append(tissue)
    per_source = {
        k: (np.concatenate(v).mean(0), np.concatenate(v).std(0)) for k, v in stats.items()
    }
    refs = {}
    for cls in sorted({c for _, c in per_source}):
        rows = [v for (_, c), v in per_source.items() if c == cls]
        refs[cls] = (np.mean([r[0] for r in rows], 0), np.mean([r[1] for r in rows], 0))
    for im, (lab, mean, sd) in zip(images, labs, strict=True):
        ref_mean, ref_sd = refs[im.cls]
        scale = 1.0 + strength * (np.clip(ref_sd / sd, 0.6, 1.6) - 1.0)
        mapped = (lab - mean) * scale + mean + strength * (ref_mean - mean)
        keep = np.clip((95.0 - lab[..., :1]) / 10.0, 0.0, 1.0)  # glass and fat stay white
        lab = keep * mapped + (1 - keep) * lab
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a few out-of-gamut pixels are clipped
                im.rgb = (np.clip(lab2rgb(lab), 0, 1) * 255 + 0.5).astype(np.uint8)
    return {
        c: {"lab_mean": np.round(m, 3).tolist(), "lab_sd": np.round(d, 3).tolist()}
        for c, (m, d) in refs.items()
    }


def _cut(images: list[_Image]) -> list[Piece]:
    pieces = []
    for im in images:
        if im.mask is None:
            fill = 1.0 if im.cls == "tumour" else 0.0
            lesion = np.full(im.rgb.shape[:2], fill, np.float32)
            key = f"{im.source}/{im.cls}/{im.name}"
            pieces.append(Piece(key, im.source, im.group, im.cls, im.rgb, lesion))
            continue
        h, w = im.mask.shape
        for r, y in enumerate(np.linspace(0, h - PIECE_PX, math.ceil(h / PIECE_PX))):
            for c, x in enumerate(np.linspace(0, w - PIECE_PX, math.ceil(w / PIECE_PX))):
                y0, x0 = int(round(y)), int(round(x))
                win = im.mask[y0 : y0 + PIECE_PX, x0 : x0 + PIECE_PX]
                if win.mean() < _MIN_MASK_SHARE:
                    continue
                pieces.append(
                    Piece(
                        f"{im.source}/tumour/{im.name}#r{r}c{c}",
                        im.source,
                        im.group,
                        "tumour",
                        im.rgb[y0 : y0 + PIECE_PX, x0 : x0 + PIECE_PX].copy(),
                        win.copy(),
                    )
                )
    return pieces


_MATERIAL_CACHE: dict[tuple[str, float], tuple[list[Piece], dict]] = {}


def load_material(
    data_dir: str | os.PathLike | None = None, *, harmonise: float = 0.8
) -> tuple[list[Piece], dict]:
    """Every piece of real tissue in the shared data, colour-harmonised.

    Parameters
    ----------
    data_dir
        The shared real data folder (default ``$WORKBENCH_REAL_DATA`` or ``../shared/data``).
    harmonise
        How far (0-1) each image's CIELAB mean and SD move onto its class's mean over sources
        (0 keeps the sources' own colours, seams and all).

    Returns
    -------
    (pieces, references)
        The pieces and the per-class colour references used.

    Raises
    ------
    MosaicDataError
        When the folder or the tumour/stroma material is missing.
    """
    root = _resolve_data_dir(data_dir)
    key = (str(root.resolve()), float(harmonise))
    if key not in _MATERIAL_CACHE:  # the same files give the same pieces: read them once
        images = _read_images(root)
        classes = {im.cls for im in images}
        missing = [c for c in ("tumour", "stroma") if c not in classes]
        if missing:
            raise MosaicDataError(
                f"the real data at {str(root)!r} has no {', '.join(missing)} tiles; a mosaic "
                "needs tiles/<source>/tumour and tiles/<source>/stroma at least"
            )
        refs = _harmonise(images, float(harmonise)) if harmonise > 0 else {}
        _MATERIAL_CACHE[key] = (_cut(images), refs)
    pieces, refs = _MATERIAL_CACHE[key]
    return list(pieces), refs


def split_material(
    pieces: list[Piece], *, test_fraction: float = 0.5, seed: int = 0
) -> dict[str, list[Piece]]:
    """Deal whole source groups to ``"train"`` and ``"test"``, balancing every class.

    Groups are visited largest first (ties in a seeded order); each goes to the side that is
    furthest below its share of the group's classes. Every class with at least two groups
    ends up on both sides.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5917]))
    groups: dict[str, list[Piece]] = {}
    for p in pieces:
        groups.setdefault(p.group, []).append(p)
    names = sorted(groups)
    order = rng.permutation(len(names))
    names = sorted((names[i] for i in order), key=lambda g: -len(groups[g]))
    totals: dict[str, int] = {}
    for p in pieces:
        totals[p.cls] = totals.get(p.cls, 0) + 1
    share = {"train": 1.0 - test_fraction, "test": test_fraction}
    count = {side: dict.fromkeys(totals, 0) for side in share}
    # classes met for the first time go alternately to each side (so both get some)
    first = {}
    side_of: dict[str, str] = {}
    for g in names:
        classes = sorted({p.cls for p in groups[g]})
        need = {
            side: sum(share[side] * totals[c] - count[side][c] for c in classes) for side in share
        }
        empty = [c for c in classes if count["train"][c] == 0 or count["test"][c] == 0]
        if empty and all(count[s][empty[0]] == 0 for s in share):
            side = first.setdefault(empty[0], "train" if rng.random() < 0.5 else "test")
        elif empty:
            c = empty[0]
            side = "train" if count["train"][c] == 0 else "test"
        else:
            side = max(share, key=lambda s: (need[s], s == "test"))
        side_of[g] = side
        for p in groups[g]:
            count[side][p.cls] += 1
    return {side: [p for p in pieces if side_of[p.group] == side] for side in share}


# ------------------------------------------------------------------------------ layout
@dataclass
class MosaicPlan:
    """Where every piece of one mosaic slide goes (cell arrays are ``(row, col)``)."""

    width: int
    height: int
    positive: bool
    seed: int
    tissue_sdf: np.ndarray  # layout grid (LAYOUT_DOWNSAMPLE px per cell), positive inside
    used: np.ndarray  # bool cells that carry a piece
    piece: np.ndarray  # int index into the pool, -1 for none
    rot: np.ndarray
    flip: np.ndarray
    offset: np.ndarray  # (rows, cols, 2) crop offsets (x, y) inside larger pieces
    cls: np.ndarray  # object array of class names ("" for unused)

    @property
    def tumour_cells(self) -> int:
        return int(np.sum(self.cls == "tumour"))


def _cell_grid(width: int, height: int) -> tuple[int, int]:
    return (
        max(1, math.ceil((height - OVERLAP_PX) / PITCH_PX)),
        max(1, math.ceil((width - OVERLAP_PX) / PITCH_PX)),
    )


def _tissue_field(width: int, height: int, rng) -> np.ndarray:
    from workbench.datasets._layout import (
        _drop_small,
        _ellipse_q,
        _noise,
        _signed_distance,
    )

    ds = LAYOUT_DOWNSAMPLE
    hl, wl = math.ceil(height / ds), math.ceil(width / ds)
    yy, xx = np.mgrid[0:hl, 0:wl].astype(np.float32) + 0.5
    n_islands = int(rng.integers(1, 4))
    cols = math.ceil(math.sqrt(n_islands * wl / hl))
    rows = math.ceil(n_islands / cols)
    cells = np.sort(rng.choice(rows * cols, size=n_islands, replace=False))
    cw, ch = wl / cols, hl / rows
    rough = _noise(rng, (hl, wl), 2.5 * max(rows, cols))
    field_ = np.full((hl, wl), -np.inf, dtype=np.float32)
    for cell in cells:
        r, c = divmod(int(cell), cols)
        cx = (c + 0.5 + rng.uniform(-0.06, 0.06)) * cw
        cy = (r + 0.5 + rng.uniform(-0.06, 0.06)) * ch
        rx, ry = cw * rng.uniform(0.36, 0.46), ch * rng.uniform(0.36, 0.46)
        q = _ellipse_q(xx, yy, cx, cy, rx, ry, rng.uniform(0, math.pi))
        field_ = np.maximum(field_, 1.0 - q + 0.25 * rough)
    tissue = field_ > 0
    margin = max(2, round(0.02 * min(hl, wl)))
    tissue[:margin] = tissue[-margin:] = False
    tissue[:, :margin] = tissue[:, -margin:] = False
    tissue = _drop_small(tissue, max(4, int(0.003 * hl * wl)))
    if not tissue.any():
        tissue[hl // 4 : 3 * hl // 4, wl // 4 : 3 * wl // 4] = True
    return _signed_distance(tissue)


def _pick(pool: dict[str, list[int]], cls: str, rng) -> int:
    return int(pool[cls][int(rng.integers(len(pool[cls])))])


def plan_slide(
    width: int, height: int, *, positive: bool, pieces: list[Piece], seed: int
) -> MosaicPlan:
    """Lay out one slide: tissue islands, class compartments and (if positive) the tumour."""
    from scipy import ndimage

    from workbench.datasets._layout import _noise

    streams = np.random.SeedSequence([int(seed), 0x305A1C]).spawn(4)
    rng_tissue, rng_class, rng_tumour, rng_piece = (np.random.default_rng(s) for s in streams)
    sdf = _tissue_field(width, height, rng_tissue)
    n_rows, n_cols = _cell_grid(width, height)
    ds = LAYOUT_DOWNSAMPLE
    # a cell carries a piece when tissue comes within a few pixels of its square
    cover = np.zeros((n_rows, n_cols), dtype=np.float32)
    inside = np.zeros((n_rows, n_cols), dtype=np.float32)
    for r in range(n_rows):
        for c in range(n_cols):
            y0, x0 = r * PITCH_PX // ds, c * PITCH_PX // ds
            y1, x1 = (r * PITCH_PX + PIECE_PX) // ds + 1, (c * PITCH_PX + PIECE_PX) // ds + 1
            block = sdf[y0:y1, x0:x1]
            cover[r, c] = block.max() if block.size else -1e9
            inside[r, c] = (block > 0).mean() if block.size else 0.0
    used = cover > -1.0
    tissue_cells = inside >= 0.5

    pool: dict[str, list[int]] = {}
    for i, p in enumerate(pieces):
        pool.setdefault(p.cls, []).append(i)
    tissue_classes = [c for c in TISSUE_CLASSES if c in pool]
    weights = np.array([TISSUE_CLASSES[c] for c in tissue_classes])
    weights = weights / weights.sum()

    # compartments: noisy Voronoi cells around class seeds
    cls = np.full((n_rows, n_cols), "", dtype=object)
    idx = np.argwhere(used)
    n_seeds = max(3, len(idx) // 30)
    seeds = idx[rng_class.choice(len(idx), size=min(n_seeds, len(idx)), replace=False)]
    seed_cls = rng_class.choice(len(tissue_classes), size=len(seeds), p=weights)
    wobble = _noise(rng_class, (n_rows, n_cols), 3.0) * 1.5
    dist = np.full((n_rows, n_cols), np.inf)
    rr, cc = np.mgrid[0:n_rows, 0:n_cols]
    for (sr, sc), k in zip(seeds, seed_cls, strict=True):
        d = np.hypot(rr - sr, cc - sc) + wobble
        better = d < dist
        dist[better] = d[better]
        cls[better] = tissue_classes[int(k)]
    cls[~used] = ""

    if positive:
        depth = ndimage.distance_transform_edt(tissue_cells)
        share = rng_tumour.uniform(0.12, 0.25)
        radius = max(1.2, math.sqrt(share * max(int(tissue_cells.sum()), 1) / math.pi))
        ok = np.argwhere(depth >= min(radius, depth.max()) * 0.8)
        if not len(ok):
            ok = np.argwhere(depth == depth.max())
        cr, cc0 = ok[int(rng_tumour.integers(len(ok)))]
        wob = _noise(rng_tumour, (n_rows, n_cols), 2.0)
        q = np.hypot(rr - cr, cc - cc0) / radius + 0.2 * wob
        cluster = (q < 1.0) & used
        if not cluster.any():
            cluster[cr, cc0] = True
        cls[cluster] = "tumour"
        if "complex_stroma" in pool:
            ring = ndimage.binary_dilation(cluster, iterations=1) & ~cluster & used
            ring &= rng_tumour.random((n_rows, n_cols)) < 0.5
            cls[ring] = "complex_stroma"

    piece = np.full((n_rows, n_cols), -1, dtype=np.int64)
    offset = np.zeros((n_rows, n_cols, 2), dtype=np.int64)
    tumour_tiles = [i for i in pool.get("tumour", []) if pieces[i].source in _TILE_SOURCES]
    tumour_windows = [i for i in pool.get("tumour", []) if pieces[i].source in _MASK_SOURCES]
    for r, c in np.argwhere(used):
        name = cls[r, c]
        if name == "tumour" and tumour_tiles and tumour_windows:
            choice = tumour_tiles if rng_piece.random() < 0.5 else tumour_windows
            i = int(choice[int(rng_piece.integers(len(choice)))])
        else:
            i = _pick(pool, name, rng_piece)
        piece[r, c] = i
        h, w = pieces[i].rgb.shape[:2]
        offset[r, c] = (
            int(rng_piece.integers(w - PIECE_PX + 1)),
            int(rng_piece.integers(h - PIECE_PX + 1)),
        )
    return MosaicPlan(
        width=int(width),
        height=int(height),
        positive=bool(positive),
        seed=int(seed),
        tissue_sdf=sdf,
        used=used,
        piece=piece,
        rot=rng_piece.integers(0, 4, size=(n_rows, n_cols)),
        flip=rng_piece.random((n_rows, n_cols)) < 0.5,
        offset=offset,
        cls=cls,
    )


def _hed_jitter(rgb: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Scale and shift the haematoxylin, eosin and DAB amounts of an RGB image (float32 RGB out).

    The same model as :func:`workbench.pp.augment_stain` (Ruifrok-Johnston HED optical
    densities; the shift scaled by how stained a pixel is, so glass stays white), with the
    factors given rather than drawn, so a slide-wide and a per-piece draw compose in one pass.
    """
    from skimage.color import hed_from_rgb, rgb_from_hed

    od = -np.log(np.maximum(rgb.astype(np.float32) / 255.0, 1.0 / 255.0))
    conc = od @ hed_from_rgb.astype(np.float32)
    stained = np.clip(od.sum(axis=2, keepdims=True) / 0.3, 0.0, 1.0)
    conc = conc * alpha.astype(np.float32) + beta.astype(np.float32) * stained
    out = np.exp(-(conc @ rgb_from_hed.astype(np.float32))) * 255.0
    return np.clip(out, 0.0, 255.0)


def _taper() -> np.ndarray:
    u = np.arange(PIECE_PX, dtype=np.float32) + 0.5
    t = np.clip(np.minimum(u, PIECE_PX - u) / OVERLAP_PX, 0.0, 1.0)
    t = t * t * (3 - 2 * t)
    return np.maximum(np.outer(t, t), 1e-4).astype(np.float32)


class MosaicRenderer:
    """Draw any level-0 window of a mosaic slide; collects the lesion truth as it goes."""

    def __init__(self, plan: MosaicPlan, pieces: list[Piece]) -> None:
        self.plan = plan
        self.pieces = pieces
        self.weight = _taper()
        ds = LAYOUT_DOWNSAMPLE
        self.lesion = np.zeros(
            (math.ceil(plan.height / ds), math.ceil(plan.width / ds)), dtype=np.float32
        )
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        # one stain draw for the whole slide (another day's staining), a small one per piece
        slide_rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 0x511DE]))
        self._slide_alpha = slide_rng.uniform(0.92, 1.08, size=3)
        self._slide_beta = slide_rng.uniform(-0.02, 0.02, size=3)

    def _piece(self, r: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get((r, c))
        if hit is not None:
            return hit
        plan = self.plan
        p = self.pieces[int(plan.piece[r, c])]
        ox, oy = (int(v) for v in plan.offset[r, c])
        rgb = p.rgb[oy : oy + PIECE_PX, ox : ox + PIECE_PX]
        les = p.lesion[oy : oy + PIECE_PX, ox : ox + PIECE_PX]
        k = int(plan.rot[r, c])
        rgb, les = np.rot90(rgb, k), np.rot90(les, k)
        if plan.flip[r, c]:
            rgb, les = rgb[:, ::-1], les[:, ::-1]
        cell_rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 0x7113, r, c]))
        alpha = self._slide_alpha * cell_rng.uniform(0.975, 1.025, size=3)
        beta = self._slide_beta + cell_rng.uniform(-0.008, 0.008, size=3)
        rgb = _hed_jitter(np.ascontiguousarray(rgb), alpha, beta)
        out = (rgb.astype(np.float32), np.ascontiguousarray(les, dtype=np.float32))
        self._cache[(r, c)] = out
        return out

    def render(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 of the level-0 window at ``(x0, y0)`` of size ``(w, h)``."""
        from workbench.datasets._render import _smoothstep_sdf, _upsample

        plan = self.plan
        acc = np.zeros((h, w, 3), dtype=np.float32)
        les = np.zeros((h, w), dtype=np.float32)
        wsum = np.zeros((h, w), dtype=np.float32)
        n_rows, n_cols = plan.used.shape
        r0 = max(0, (y0 - PIECE_PX) // PITCH_PX)
        c0 = max(0, (x0 - PIECE_PX) // PITCH_PX)
        r1 = min(n_rows - 1, (y0 + h - 1) // PITCH_PX)
        c1 = min(n_cols - 1, (x0 + w - 1) // PITCH_PX)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                if not plan.used[r, c]:
                    continue
                px, py = c * PITCH_PX, r * PITCH_PX
                ax0, ay0 = max(px, x0), max(py, y0)
                ax1, ay1 = min(px + PIECE_PX, x0 + w), min(py + PIECE_PX, y0 + h)
                if ax1 <= ax0 or ay1 <= ay0:
                    continue
                rgb, lesion = self._piece(r, c)
                sy, sx = slice(ay0 - py, ay1 - py), slice(ax0 - px, ax1 - px)
                ty, tx = slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0)
                wt = self.weight[sy, sx]
                acc[ty, tx] += rgb[sy, sx] * wt[..., None]
                les[ty, tx] += lesion[sy, sx] * wt
                wsum[ty, tx] += wt
        # drop cached pieces of rows this and later windows no longer reach
        for key in [k for k in self._cache if k[0] < r0 - 1]:
            del self._cache[key]
        has = wsum > 0
        safe = np.where(has, wsum, 1.0)
        tissue_img = np.where(has[..., None], acc / safe[..., None], _GLASS)
        alpha = (
            _smoothstep_sdf(_upsample(plan.tissue_sdf, x0, y0, w, h, LAYOUT_DOWNSAMPLE), 0.35) * has
        )
        out = alpha[..., None] * tissue_img + (1 - alpha[..., None]) * _GLASS
        self._collect(x0, y0, alpha * les / safe)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def _collect(self, x0: int, y0: int, lesion: np.ndarray) -> None:
        """Block means of the lesion share over the window's 16 x 16 squares."""
        ds = LAYOUT_DOWNSAMPLE
        h, w = lesion.shape
        hb, wb = math.ceil(h / ds), math.ceil(w / ds)
        pad = np.zeros((hb * ds, wb * ds), dtype=np.float32)
        pad[:h, :w] = lesion
        block = pad.reshape(hb, ds, wb, ds).mean(axis=(1, 3))
        self.lesion[y0 // ds : y0 // ds + hb, x0 // ds : x0 // ds + wb] = block


# ------------------------------------------------------------------------------ cohort
def _params(n_train, n_test, size, seed, positive_fraction, data_dir, transforms, split) -> dict:
    from workbench.datasets._slide import resolve_size

    width, height = resolve_size(size)
    return {
        "generator": "workbench.datasets.make_mosaic_cohort",
        "generator_version": MOSAIC_VERSION,
        "kind": "mosaic",
        "n_train": int(n_train),
        "n_test": int(n_test),
        "n_patients": int(n_train) + int(n_test),
        "size": size if isinstance(size, str) else [width, height],
        "dimensions": [width, height],
        "mpp": MOSAIC_MPP,
        "seed": int(seed),
        "null": None,
        "positive_fraction": float(positive_fraction),
        "label": "tumour",
        "mask_downsample": LAYOUT_DOWNSAMPLE,
        "data_dir": str(data_dir),
        "grid": {"piece_px": PIECE_PX, "overlap_px": OVERLAP_PX, "pitch_px": PITCH_PX},
        "tissue_classes": TISSUE_CLASSES,
        "positive_only_classes": list(TUMOUR_CLASSES),
        "harmonisation": {
            "method": "per image, CIELAB mean/SD 80% of the way onto its class's mean over sources",
            "class_references": transforms,
        },
        "split": {
            side: {
                "groups": sorted({p.group for p in ps}),
                "pieces_per_class": {
                    c: sum(p.cls == c for p in ps) for c in sorted({p.cls for p in ps})
                },
            }
            for side, ps in split.items()
        },
        "files": {
            "clinical": "clinical.csv",
            "truth": "truth.csv",
            "slides": "slides/{slide_id}.tif",
            "lesion_masks": "masks/{slide_id}_lesion.png",
            "lesion_geojson": "annotations/{slide_id}_lesion.geojson",
        },
    }


def _same(old: dict, new: dict) -> bool:
    keys = ("generator_version", "kind", "n_train", "n_test", "dimensions", "seed",
            "positive_fraction", "split")  # fmt: skip
    return all(old.get(k) == new.get(k) for k in keys)


@dataclass(frozen=True)
class _MaskTruth:
    lesion_mask: np.ndarray
    mask_downsample: int = LAYOUT_DOWNSAMPLE


def _write_slide(path: Path, plan: MosaicPlan, pieces: list[Piece]) -> np.ndarray:
    from workbench.datasets._pyramid import write_pyramid
    from workbench.datasets._slide import OBJECTIVE_POWER
    from workbench.io import atomic_path

    renderer = MosaicRenderer(plan, pieces)
    w, h = plan.width, plan.height
    description = (
        f"Aperio Image Library v12.0.0 \r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=85"
        f"|AppMag = {OBJECTIVE_POWER}|MPP = {MOSAIC_MPP}|Workbench = mosaic"
    )
    with atomic_path(path) as tmp:
        write_pyramid(
            tmp,
            width=w,
            height=h,
            render=renderer.render,
            mpp=MOSAIC_MPP,
            description=description,
            tile=256,
            chunk=1024,
            quality=85,
            desc=path.name,
        )
    return renderer.lesion >= 0.5


def make_mosaic_cohort(
    root: str | os.PathLike,
    *,
    n_train: int = 24,
    n_test: int = 24,
    size: str | tuple[int, int] = (2048, 1536),
    seed: int = 0,
    positive_fraction: float = 0.5,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
):
    """Compose (or finish composing) a cohort of real-tissue mosaic slides and return it.

    Slides ``S000`` … are pyramidal JPEG TIFFs (0.5 µm/px recorded, Aperio-style header,
    levels halving down to one 256-px tile) made of real H&E pieces from ``data_dir`` (see
    :mod:`workbench.datasets._mosaic` for the recipe). The first ``n_train`` slides are built
    from the train pieces, the others from the test pieces; source images never cross. In
    each split ``positive_fraction`` of the slides (rounded) hold a tumour cluster.

    The folder has the layout of :func:`make_cohort`: ``cohort.json`` (parameters, the split
    of source groups, the colour maps), ``clinical.csv`` (``patient_id``, ``slide``,
    ``tumour`` = the label, ``split``), ``truth.csv`` (plus ``lesion_fraction`` = tumour share
    of the tissue, i.e. the focus hit rate of random picks, ``tumour_cells``, the source
    ``groups`` used …), ``slides/``, ``masks/`` (lesion PNG at 1/16) and ``annotations/``
    (lesion GeoJSON, QuPath class ``Tumor``). A second call with the same arguments skips
    finished slides; deleted ones are composed again, identically.

    Parameters
    ----------
    root
        The cohort folder (created if needed).
    n_train, n_test
        Slides composed from the train and the test pieces.
    size
        ``(width, height)`` in level-0 pixels, or a name of :data:`SIZES`.
    seed
        Seed of the split, the layouts and the jitter.
    positive_fraction
        Share of tumour-positive slides in each split.
    data_dir
        The shared real data folder (``tiles/``, ``masks/``); default
        ``$WORKBENCH_REAL_DATA`` or ``../shared/data``.
    progress
        Show a tqdm bar over slides.

    Returns
    -------
    SyntheticCohort
        A :class:`~workbench.io.Cohort` with ``truth`` and ``params``; the label column is
        ``tumour``.

    Raises
    ------
    MosaicDataError
        The real data are not there.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from workbench.datasets._cohort import (
        SyntheticCohort,
        _geojson_rel,
        _mask_rel,
        _slide_rel,
        _write_masks,
    )
    from workbench.datasets._slide import resolve_size
    from workbench.io import atomic_write_text

    if n_train < 0 or n_test < 0 or n_train + n_test < 1:
        raise ValueError(f"need at least one slide, got n_train={n_train}, n_test={n_test}")
    if not 0.0 < positive_fraction < 1.0:
        raise ValueError(f"positive_fraction must lie in (0, 1), got {positive_fraction}")
    width, height = resolve_size(size)
    data = _resolve_data_dir(data_dir)
    pieces, transforms = load_material(data)
    split = split_material(pieces, seed=seed)
    for side, n in (("train", n_train), ("test", n_test)):
        have = {p.cls for p in split[side]}
        if n and not {"tumour", "stroma"} <= have:
            raise MosaicDataError(
                f"the {side} split has no tumour or stroma pieces (it has {sorted(have)}); the "
                "real data hold too few source images to split"
            )
    root = Path(root)
    params = _params(n_train, n_test, size, seed, positive_fraction, data, transforms, split)
    meta = root / "cohort.json"
    old = read_cohort_params(meta)
    if old is not None:
        if not _same(old, params):
            raise WorkbenchError(
                f"{str(root)!r} holds a cohort made with other arguments or material "
                f"(n_train={old.get('n_train')}, n_test={old.get('n_test')}, "
                f"size={old.get('size')}, seed={old.get('seed')}); choose another folder or "
                "delete this one"
            )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta, json.dumps(params, indent=2))

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x305A1]))
    n = n_train + n_test
    width_id = max(3, len(str(n - 1)))
    rows = []
    for side, count, start in (("train", n_train, 0), ("test", n_test, n_train)):
        n_pos = int(round(positive_fraction * count))
        labels = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(count - n_pos, int)])
        for j in range(count):
            rows.append((start + j, side, int(labels[j]), int(rng.integers(0, 2**31 - 1))))
    table = []
    bar = tqdm(rows, desc="mosaic", unit="slide", disable=not progress)
    for i, side, positive, slide_seed in bar:
        sid = f"S{i:0{width_id}d}"
        pool = split[side]
        plan = plan_slide(width, height, positive=bool(positive), pieces=pool, seed=slide_seed)
        slide = root / _slide_rel(sid)
        mask_png = root / _mask_rel(sid)
        if slide.exists() and mask_png.exists() and (root / _geojson_rel(sid)).exists():
            with Image.open(mask_png) as im:
                lesion = np.asarray(im.convert("L")) > 127
        else:
            lesion = _write_slide(slide, plan, pool)
            _write_masks(root, sid, _MaskTruth(lesion))
        tissue = plan.tissue_sdf > 0
        used = plan.piece[plan.used]
        table.append(
            {
                "patient_id": f"P{i:0{width_id}d}",
                "slide_id": sid,
                "slide": _slide_rel(sid),
                "tumour": int(positive),
                "split": side,
                "lesion_fraction": round(float(lesion.sum() / max(tissue.sum(), 1)), 5),
                "tissue_fraction": round(float(tissue.mean()), 5),
                "tumour_cells": plan.tumour_cells,
                "tissue_cells": int(plan.used.sum()),
                "groups": ";".join(sorted({pool[int(k)].group for k in used})),
                "slide_seed": slide_seed,
            }
        )
    df = pd.DataFrame(table)
    clinical = df[MOSAIC_CLINICAL_COLUMNS].copy()
    truth = df[MOSAIC_TRUTH_COLUMNS].copy()
    atomic_write_text(root / "clinical.csv", clinical.to_csv(index=False))
    atomic_write_text(root / "truth.csv", truth.to_csv(index=False))
    return SyntheticCohort(root=root, clinical=clinical, truth=truth, params=params)
