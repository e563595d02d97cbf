"""Views with ground-truth masks, for training the base network and for benchmarks.

Sources:

- the shared real image/mask pairs in ``<root>/masks/<set>``: two region-mask sets (``ocdc``
  tumour regions, ``camelyon`` metastases) and three nucleus-mask sets (``monusac``,
  ``monuseg``, ``tnbc``), whose connected components are single objects. Every set is split
  by *source group* (patient for the TCGA nucleus sets, source image otherwise), in sorted
  group order: ``test`` = every third group, ``val`` = every sixth group starting at the
  second (used to choose settings, never to report), the rest for training;
- the shared EBHI-Seg colorectal biopsies (``ebhi``, many glands per mask, kept whole as one
  target), split by case with :func:`workbench.datasets.ebhi_images` (``test`` ~30 %,
  ``val`` ~15 %, the rest ``fit``). Every case with a serrated-adenoma image is held out of
  ``ebhi`` altogether: its serrated images are the evaluation-only set ``ebhi_serrated``
  (leave-one-class-out: a lesion type no training or tuning step saw);
- procedurally generated H&E-like lesion views (seeded, no files needed);
- lesion-centred views of a synthetic cohort.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "EBHI_HOLDOUT",
    "EVAL_ONLY_DATASETS",
    "GLAND_DATASETS",
    "NUCLEUS_DATASETS",
    "REAL_DATASETS",
    "REGION_DATASETS",
    "SPLITS",
    "MaskPair",
    "benchmark_views",
    "cohort_views",
    "lesion_view",
    "load_mask_pairs",
    "object_views",
    "real_mask_pairs",
    "source_group",
    "synthetic_lesion_views",
]

REGION_DATASETS = ("ocdc", "camelyon")
NUCLEUS_DATASETS = ("monusac", "monuseg", "tnbc")
GLAND_DATASETS = ("ebhi",)
REAL_DATASETS = REGION_DATASETS + NUCLEUS_DATASETS + GLAND_DATASETS
# Sets that are only ever evaluated: a whole lesion class held out of training and tuning.
EVAL_ONLY_DATASETS = ("ebhi_serrated",)
EBHI_HOLDOUT = ("Serrated_adenoma",)
SPLITS = ("test", "val", "train", "fit", "not_val", "all")
OBJECT_VIEW = 192  # side of an object-centred view (nucleus sets)
GLAND_VIEW = 448  # side of an EBHI-Seg evaluation view (224 px images, about 0.45 µm/px)


@dataclass(frozen=True)
class MaskPair:
    """One real image with its binary mask.

    Parameters
    ----------
    dataset
        The data set the image comes from (a folder name under the masks root).
    name
        The image's name within its data set.
    group
        The unit a split must not cut (patient or source image, :func:`source_group`).
    split
        ``"test"``, ``"val"`` or ``"train"`` (the fit part).
    image
        ``(H, W, 3)`` uint8 RGB image.
    mask
        ``(H, W)`` bool mask of the structures (lesion, glands or nuclei).
    """

    dataset: str
    name: str
    group: str
    split: str  # "test", "val" or "train" (the fit part)
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool


def source_group(dataset: str, stem: str) -> str:
    """The unit a split must not cut: patient (TCGA nucleus sets) or source image.

    MoNuSAC and MoNuSeg names start with a TCGA barcode whose first 12 characters name the
    patient; TNBC names end with the number of the source image (the augmented copies of one
    image share it); OCDC and CAMELYON pairs are separate patches.
    """
    if dataset in ("monusac", "monuseg") and stem.startswith("TCGA-"):
        return stem[:12]
    if dataset == "tnbc":
        return stem.rsplit("_", 1)[-1]
    return stem


def _split_of(index: int) -> str:
    if index % 3 == 0:
        return "test"
    if index % 6 == 1:
        return "val"
    return "train"


def _in_split(split_of_group: str, split: str) -> bool:
    if split == "all":
        return True
    if split == "train":  # everything an in-domain network may train on
        return split_of_group != "test"
    if split == "not_val":  # everything but validation (a leave-one-dataset-out fold)
        return split_of_group != "val"
    if split == "fit":
        return split_of_group == "train"
    return split_of_group == split


def load_mask_pairs(
    root: str | Path, dataset: str, *, split: str = "all", min_fraction: float = 0.0
) -> list[MaskPair]:
    """The image / mask pairs of ``root/masks/<dataset>`` in ``split``.

    Parameters
    ----------
    root
        The shared data folder (contains ``masks/``).
    dataset
        One of :data:`REAL_DATASETS` or :data:`EVAL_ONLY_DATASETS`.
    split
        ``"test"``, ``"val"``, ``"train"`` (everything but test: what an in-domain network
        trains on), ``"fit"`` (train without val), ``"not_val"`` (test and fit: what a
        leave-one-dataset-out fold trains on) or ``"all"``. An evaluation-only set has
        pairs in ``"test"``, ``"not_val"`` and ``"all"`` only.
    min_fraction
        Skip pairs whose mask covers less than this fraction (empty masks have nothing to
        click on).

    Returns
    -------
    list of MaskPair
        The pairs in file order, with their source group (case for EBHI-Seg) and split.
    """
    from PIL import Image

    if dataset not in REAL_DATASETS + EVAL_ONLY_DATASETS:
        raise ValueError(
            f"unknown dataset {dataset!r}; choose one of "
            f"{', '.join(REAL_DATASETS + EVAL_ONLY_DATASETS)}"
        )
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if dataset in ("ebhi", "ebhi_serrated"):
        return _ebhi_pairs(root, dataset, split, min_fraction)
    folder = Path(root) / "masks" / dataset
    images = sorted(p for p in (folder / "images").glob("*") if p.suffix.lower() in _IMAGE_EXT)
    groups = sorted({source_group(dataset, p.stem) for p in images})
    split_of_group = {g: _split_of(i) for i, g in enumerate(groups)}
    out = []
    for path in images:
        group = source_group(dataset, path.stem)
        if not _in_split(split_of_group[group], split):
            continue
        candidates = sorted((folder / "masks").glob(path.stem + ".*"))
        if not candidates:
            continue
        image = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(candidates[0]).convert("L")) > 127
        if mask.shape != image.shape[:2]:
            mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST))
        if mask.mean() < min_fraction:
            continue
        out.append(MaskPair(dataset, path.stem, group, split_of_group[group], image, mask))
    return out


_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


def _ebhi_pairs(root, dataset: str, split: str, min_fraction: float) -> list[MaskPair]:
    """EBHI-Seg pairs: ``ebhi`` by its case split (``fit`` = the index's ``train``), without
    the held-out class's cases; ``ebhi_serrated`` = the held-out class's own images."""
    from workbench.datasets._ebhi import ebhi_images

    items = ebhi_images(root, holdout_classes=EBHI_HOLDOUT)
    out = []
    for item in items:
        if dataset == "ebhi_serrated":
            if item.split != "holdout" or item.cls not in EBHI_HOLDOUT:
                continue
            part = "test"
        else:
            if item.split == "holdout":
                continue
            part = "train" if item.split == "train" else item.split
        if not _in_split(part, split):
            continue
        image, mask = item.load()
        if mask.mean() < min_fraction:
            continue
        name = f"{item.cls}/{item.name}"
        out.append(MaskPair(dataset, name, item.case_id, part, image, mask))
    return out


def real_mask_pairs(
    root: str | Path, dataset: str, *, split: str = "test", min_fraction: float = 0.0
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Image / mask pairs as ``(name, rgb uint8, bool mask)`` (see :func:`load_mask_pairs`)."""
    return [
        (p.name, p.image, p.mask)
        for p in load_mask_pairs(root, dataset, split=split, min_fraction=min_fraction)
    ]


def nucleus_objects(mask: np.ndarray, *, min_area: int = 80, max_side: int = 120):
    """Connected components of a nucleus mask usable as click targets.

    Returns ``(labels, [(label, slice_rows, slice_cols), ...])`` for components of at least
    ``min_area`` pixels, at most ``max_side`` wide, not touching the image border.
    """
    labels, n = ndi.label(mask)
    if n == 0:
        return labels, []
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    h, w = mask.shape
    out = []
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None or areas[k] < min_area:
            continue
        rs, cs = sl
        if rs.start == 0 or cs.start == 0 or rs.stop == h or cs.stop == w:
            continue
        if max(rs.stop - rs.start, cs.stop - cs.start) > max_side:
            continue
        out.append((k, rs, cs))
    return labels, out


def object_view(
    image: np.ndarray,
    labels: np.ndarray,
    obj: tuple,
    *,
    rng: np.random.Generator,
    side: int = OBJECT_VIEW,
    context: float = 2.5,
    jitter: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """An object-centred view: a square crop about ``context`` times the object's size,
    shifted by up to ``jitter`` of its side, resized to ``side`` pixels (the digital zoom a
    user applies to outline one nucleus). The target is that object alone."""
    from PIL import Image

    k, rs, cs = obj
    h, w = labels.shape
    extent = max(rs.stop - rs.start, cs.stop - cs.start)
    crop = int(np.clip(round(context * extent * rng.uniform(0.85, 1.2)), 48, min(h, w)))
    cy = (rs.start + rs.stop) / 2 + rng.uniform(-jitter, jitter) * crop
    cx = (cs.start + cs.stop) / 2 + rng.uniform(-jitter, jitter) * crop
    r0 = int(np.clip(round(cy - crop / 2), 0, h - crop))
    c0 = int(np.clip(round(cx - crop / 2), 0, w - crop))
    im = image[r0 : r0 + crop, c0 : c0 + crop]
    m = labels[r0 : r0 + crop, c0 : c0 + crop] == k
    im = np.asarray(Image.fromarray(im).resize((side, side), Image.BILINEAR))
    m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((side, side), Image.BILINEAR))
    return im, m > 127


def _round_robin(lists: list[list]) -> list:
    lists = [list(lst) for lst in lists]
    out = []
    while any(lists):
        for lst in lists:
            if lst:
                out.append(lst.pop(0))
    return out


def object_views(
    pairs: list[MaskPair], *, max_views: int = 40, seed: int = 0, side: int = OBJECT_VIEW
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Object-centred views of single nuclei, spread evenly over the source groups.

    Objects are drawn round-robin over groups (patients) and images, seeded, so a set with
    many objects in one image does not dominate.
    """
    rng = np.random.default_rng(seed)
    per_group: dict[str, list] = {}
    for pair in pairs:
        labels, objs = nucleus_objects(pair.mask)
        order = rng.permutation(len(objs))
        per_group.setdefault(pair.group, []).append([(pair, labels, objs[i]) for i in order])
    queues = [_round_robin(lists) for lists in per_group.values()]
    views = []
    while len(views) < max_views and any(queues):
        for q in queues:
            if q and len(views) < max_views:
                pair, labels, obj = q.pop(0)
                im, m = object_view(pair.image, labels, obj, rng=rng, side=side)
                if m.any():
                    views.append((f"{pair.name}#{obj[0]}", im, m))
    return views


def benchmark_views(
    root: str | Path,
    dataset: str,
    *,
    split: str,
    max_views: int = 40,
    seed: int = 0,
    view_side: int = GLAND_VIEW,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Evaluation views of a real set.

    Parameters
    ----------
    root
        The shared data folder (contains ``masks/``).
    dataset
        One of :data:`REAL_DATASETS` or :data:`EVAL_ONLY_DATASETS`.
    split
        Which part of the set (see :func:`load_mask_pairs`).
    max_views
        At most this many views.
    seed
        Seeds the choice of nuclei and of EBHI-Seg images.
    view_side
        Side of an EBHI-Seg view: the whole 224 px image resized to it (448 px is about
        0.45 µm/px, a 20x-like view with several glands in it).

    Returns
    -------
    list of tuple
        ``(name, rgb uint8, bool mask)`` views: whole pairs (region sets, lesion ≥ 1 % of
        the image), object-centred single-nucleus views (nucleus sets), or whole biopsy
        images with every gland of the mask as one target (EBHI-Seg), drawn round-robin
        over cases so that no case dominates.
    """
    if dataset in REGION_DATASETS:
        pairs = load_mask_pairs(root, dataset, split=split, min_fraction=0.01)
        return [(p.name, p.image, p.mask) for p in pairs][:max_views]
    if dataset in GLAND_DATASETS + EVAL_ONLY_DATASETS:
        pairs = load_mask_pairs(root, dataset, split=split, min_fraction=0.01)
        rng = np.random.default_rng(seed)
        per_case: dict[str, list[MaskPair]] = {}
        for pair in pairs:
            per_case.setdefault(pair.group, []).append(pair)
        cases = sorted(per_case)
        queues = [[per_case[c][i] for i in rng.permutation(len(per_case[c]))] for c in cases]
        queues = [queues[i] for i in rng.permutation(len(queues))]
        chosen = _round_robin(queues)[:max_views]
        return [(p.name, *_resize_pair(p.image, p.mask, view_side)) for p in chosen]
    pairs = load_mask_pairs(root, dataset, split=split)
    return object_views(pairs, max_views=max_views, seed=seed)


def _resize_pair(image: np.ndarray, mask: np.ndarray, side: int):
    from PIL import Image

    if image.shape[:2] == (side, side):
        return image, mask
    im = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.BILINEAR)
    return im, np.asarray(m) > 127


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def lesion_view(size: int = 256, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One procedural H&E-like view with an irregular lesion: ``(rgb uint8, bool mask)``.

    Pink stroma with fibre texture and scattered small nuclei; the lesion is a cluster of
    larger, darker, crowded nuclei on a purple background with an irregular outline. Some
    views contain two lesions or a lesion touching the border.

    Parameters
    ----------
    size
        Side of the square view in pixels.
    seed
        Seed of the random generator; the same seed gives the same view.

    Returns
    -------
    tuple of numpy.ndarray
        ``(rgb, mask)``: the ``(size, size, 3)`` uint8 image and its ``(size, size)`` bool
        lesion mask.
    """
    rng = np.random.default_rng(seed)
    h = w = int(size)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(1 + int(rng.random() < 0.3)):
        cy, cx = rng.uniform(0.2, 0.8, 2) * (h, w)
        ry, rx = rng.uniform(0.12, 0.3, 2) * (h, w)
        theta = rng.uniform(0, np.pi)
        dy, dx = rows - cy, cols - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
        wobble = 0.35 * _smooth_noise(rng, (h, w), sigma=size / 16)
        mask |= (u**2 + v**2) < 1.0 + wobble
    mask = ndi.binary_opening(mask, iterations=2)

    stroma = np.array([232, 170, 200], np.float32)
    lesion = np.array([175, 120, 185], np.float32)
    img = np.where(mask[..., None], lesion, stroma)
    fibres = ndi.gaussian_filter(rng.standard_normal((h, w)), (1, 6))
    img += (18 * fibres / (fibres.std() + 1e-8))[..., None] * (~mask)[..., None]
    img += (10 * _smooth_noise(rng, (h, w), sigma=size / 10))[..., None]

    nuclei = np.zeros((h, w), np.float32)
    for inside, density, radius in ((False, 0.0015, 2.2), (True, 0.012, 3.5)):
        region = mask if inside else ~mask
        n = int(density * region.sum())
        if n == 0:
            continue
        idx = rng.choice(np.flatnonzero(region), size=n, replace=False)
        pts = np.zeros(h * w, np.float32)
        pts[idx] = 1.0
        nuclei += (ndi.gaussian_filter(pts.reshape(h, w), radius) * radius**2 * 6).clip(0, 1)
    nucleus_colour = np.array([70, 40, 120], np.float32)
    a = nuclei.clip(0, 1)[..., None]
    img = img * (1 - a) + nucleus_colour * a
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def synthetic_lesion_views(n: int, *, size: int = 256, seed: int = 0):
    """``n`` procedural lesion views (see :func:`lesion_view`), seeds ``seed .. seed+n-1``."""
    return [lesion_view(size, seed=seed + i) for i in range(n)]


def cohort_views(
    root: str | Path,
    *,
    n_patients: int,
    seed: int,
    side: int = 512,
    per_slide: int = 2,
    fill: float = 0.6,
):
    """``(name, rgb, mask)`` views centred on the largest lesions of a synthetic cohort.

    The cohort (``size="tiny"``, ``seed``) is written to ``root`` (or reused). Each view is
    ``side`` pixels square, read from the pyramid at a magnification where the lesion spans
    about ``fill`` of the view; the ground truth is the cohort's lesion mask cut to the same
    window. Training uses seed 7 and the benchmark seed 2024, so they never share a slide.

    Parameters
    ----------
    root
        Folder the synthetic cohort is written to, or read from when already there.
    n_patients
        Number of patients of the cohort.
    seed
        Seed of the cohort.
    side
        Side of each view in pixels.
    per_slide
        At most this many views per slide (its largest lesions).
    fill
        Fraction of the view the lesion's extent spans.

    Returns
    -------
    list of tuple
        ``(name, rgb, mask)`` per view: ``"<slide id>-<lesion>"``, the ``(side, side, 3)``
        uint8 image and its ``(side, side)`` bool lesion mask. Views whose mask covers under
        1 % of the window are left out.
    """
    from workbench.datasets._cohort import make_cohort
    from workbench.io import Slide

    cohort = make_cohort(Path(root), n_patients=n_patients, size="tiny", seed=seed, progress=False)
    views = []
    for sid in cohort.slide_ids:
        mask, ds = cohort.lesion_mask(sid)
        labels, n = ndi.label(mask)
        if n == 0:
            continue
        sizes = ndi.sum(mask, labels, index=range(1, n + 1))
        order = np.argsort(sizes)[::-1][:per_slide]
        slide = Slide(cohort.slide_path(sid))
        W, H = slide.dimensions
        for k in order:
            rows, cols = np.nonzero(labels == k + 1)
            if len(rows) < 20:
                continue
            cy, cx = (rows.mean() + 0.5) * ds, (cols.mean() + 0.5) * ds
            extent = max(np.ptp(rows) + 1, np.ptp(cols) + 1) * ds
            view_ds = max(extent / (fill * side), 1.0)
            span = side * view_ds
            x0 = float(np.clip(cx - span / 2, 0, max(W - span, 0)))
            y0 = float(np.clip(cy - span / 2, 0, max(H - span, 0)))
            image = slide.read_region((x0, y0), (side, side), mpp=view_ds * slide.mpp)
            # Ground truth: the mask pixel under each view pixel's centre.
            centres = (np.arange(side) + 0.5) * view_ds
            r = np.clip(((y0 + centres) / ds).astype(int), 0, mask.shape[0] - 1)
            c = np.clip(((x0 + centres) / ds).astype(int), 0, mask.shape[1] - 1)
            gt = mask[np.ix_(r, c)]
            if gt.mean() > 0.01:
                views.append((f"{sid}-{k}", np.ascontiguousarray(image[:, :, :3]), gt))
        slide.close()
    return views
