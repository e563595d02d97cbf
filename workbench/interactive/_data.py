"""Views with ground-truth lesion masks, for training the base network and for benchmarks.

Two sources: the shared real image/mask pairs (``masks/{ocdc,camelyon}``, with a fixed
train/test split so benchmark images are never trained on) and procedurally generated
H&E-like lesion views (seeded, no files needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

__all__ = ["cohort_views", "lesion_view", "real_mask_pairs", "synthetic_lesion_views"]

REAL_DATASETS = ("ocdc", "camelyon")


def _is_test(index: int) -> bool:
    # Every third image (in sorted file-name order) is held out for the benchmark.
    return index % 3 == 0


def real_mask_pairs(
    root: str | Path, dataset: str, *, split: str = "test", min_fraction: float = 0.0
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Image / mask pairs of ``root/masks/<dataset>`` as ``(name, rgb uint8, bool mask)``.

    Parameters
    ----------
    root
        The shared data folder (contains ``masks/``).
    dataset
        ``"ocdc"`` or ``"camelyon"``.
    split
        ``"train"``, ``"test"`` (every third file in sorted order) or ``"all"``.
    min_fraction
        Skip pairs whose lesion covers less than this fraction of the image (empty masks
        have no lesion to click on).
    """
    from PIL import Image

    if dataset not in REAL_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(REAL_DATASETS)}")
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}; choose 'train', 'test' or 'all'")
    folder = Path(root) / "masks" / dataset
    images = sorted((folder / "images").glob("*.jpg"))
    out = []
    for i, path in enumerate(images):
        if split != "all" and _is_test(i) != (split == "test"):
            continue
        mask_path = folder / "masks" / path.name
        if not mask_path.exists():
            candidates = sorted((folder / "masks").glob(path.stem + ".*"))
            if not candidates:
                continue
            mask_path = candidates[0]
        image = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(mask_path).convert("L")) > 127
        if mask.shape != image.shape[:2]:
            mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST))
        if mask.mean() < min_fraction:
            continue
        out.append((path.stem, image, mask))
    return out


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def lesion_view(size: int = 256, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One procedural H&E-like view with an irregular lesion: ``(rgb uint8, bool mask)``.

    Pink stroma with fibre texture and scattered small nuclei; the lesion is a cluster of
    larger, darker, crowded nuclei on a purple background with an irregular outline. Some
    views contain two lesions or a lesion touching the border.
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
    """
    from scipy import ndimage as ndi

    from workbench.datasets import make_cohort
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
