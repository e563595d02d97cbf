"""Training the slide models on a cohort: read each slide once, then train on the cache.

The slide label is *high grade*: class 1 for grade 3, class 0 for grades 1–2 (the synthetic
cohort's grade-3 lesions differ from the others in nuclear detail that only shows at high
magnification, which is what the focus + detail design is for).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._constants import REGION_GRAPH, SPATIAL
from workbench.tl._extract import (
    DEFAULT_PREPROCESSING,
    as_slide,
    cohort_slides,
    edge_index_of,
    read_crops,
    thumbnail_mpp_for,
    tissue_grid,
)

if TYPE_CHECKING:  # pragma: no cover
    from workbench.io import Slide

logger = logging.getLogger(__name__)

CLASS_NAMES = ["low grade (1-2)", "high grade (3)"]
MODEL_KINDS = ("sew", "global", "abmil")


def label_from_grade(grade: int) -> int:
    """Slide class of a grade: 1 (high grade) for grade 3, else 0."""
    return int(int(grade) >= 3)


def suggest_settings(slide: Slide | str | os.PathLike) -> dict:
    """Preprocessing for slides like this one: a thumbnail of about 512 px a side.

    ``thumbnail_mpp`` = long side in µm / 512, kept within 2–8 µm/px (8 µm/px for real
    slides of a centimetre or more; finer for small synthetic ones, so that their lesions
    still span several superpixels). The other settings keep their defaults.
    """
    slide = as_slide(slide)
    long_um = max(slide.dimensions) * slide.require_mpp()
    return {"thumbnail_mpp": float(min(8.0, max(2.0, long_um / 512.0)))}


def _node_lesion_fraction(adata, mask: np.ndarray, downsample: float) -> np.ndarray:
    """Share of each region's thumbnail pixels that fall inside the lesion mask."""
    rg = adata.uns[REGION_GRAPH]
    labels = np.asarray(rg["labels"])
    sx, sy = (float(v) for v in rg["scale_xy"])
    rows = np.clip(
        ((np.arange(labels.shape[0]) + 0.5) * sy / downsample).astype(int), 0, mask.shape[0] - 1
    )
    cols = np.clip(
        ((np.arange(labels.shape[1]) + 0.5) * sx / downsample).astype(int), 0, mask.shape[1] - 1
    )
    inside = np.asarray(mask, dtype=bool)[np.ix_(rows, cols)]
    n = adata.n_obs
    lab = labels.ravel()
    total = np.bincount(lab, minlength=n + 1)[1 : n + 1].astype(float)
    hits = np.bincount(lab, weights=inside.ravel().astype(float), minlength=n + 1)[1 : n + 1]
    return hits / np.maximum(total, 1.0)


def _mask_crops(mask: np.ndarray, downsample: float, boxes: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour crops ``(K, 1, size, size)`` uint8 of a lesion mask over level-0 boxes."""
    out = np.zeros((len(boxes), 1, size, size), dtype=np.uint8)
    mask = np.asarray(mask, dtype=bool)
    for i, (x0, y0, w, h) in enumerate(boxes):
        xs = ((x0 + (np.arange(size) + 0.5) * w / size) / downsample).astype(int)
        ys = ((y0 + (np.arange(size) + 0.5) * h / size) / downsample).astype(int)
        okx = (xs >= 0) & (xs < mask.shape[1])
        oky = (ys >= 0) & (ys < mask.shape[0])
        sub = np.zeros((size, size), dtype=bool)
        sub[np.ix_(oky, okx)] = mask[np.ix_(ys[oky], xs[okx])]
        out[i, 0] = sub
    return out


def _spread_pick(nodes: np.ndarray, edge_index, n_nodes: int, k: int, rng) -> np.ndarray:
    import torch

    from workbench.models import graph_nms

    if len(nodes) == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    scores = torch.from_numpy(rng.random(n_nodes))
    picked = graph_nms(
        scores, edge_index, k=min(k, len(nodes)), hops=1, candidates=torch.from_numpy(nodes)
    )
    return picked.numpy()


def prepare_slide(
    slide: Slide | str | os.PathLike,
    *,
    label: int,
    settings: dict | None = None,
    lesion_mask: tuple[np.ndarray, float] | None = None,
    n_candidates: int = 8,
    tiles: bool = False,
    max_tiles: int = 256,
    seed: int = 0,
    name: str = "",
):
    """Read what training needs from one slide, once.

    Parameters
    ----------
    slide
        Slide or path (needs an mpp).
    label
        Slide class.
    settings
        Preprocessing (``thumbnail_mpp``, ``n_segments``, ``detail_mpp``, ``crop_size``).
    lesion_mask
        ``(mask, downsample)`` ground-truth lesion mask and its level-0 px per mask px, or
        ``None`` (then no node labels and no crop masks: multiple-instance learning only).
    n_candidates
        Magnified crops cached per slide (half inside lesions, half outside, spread out).
    tiles
        Also read tissue tiles at the detail magnification (for :class:`TileABMIL`).
    max_tiles
        At most this many tiles are kept per slide for training (a random subset).
    seed
        Seeds the choice of candidates and tiles.

    Returns
    -------
    (SlideSample, AnnData)
        The cached tensors and the slide's region graph.
    """
    import torch

    from workbench.models import SlideSample
    from workbench.pp import region_graph

    pre = {**DEFAULT_PREPROCESSING, **(settings or {})}
    rng = np.random.default_rng(seed)
    slide = as_slide(slide)
    adata = region_graph(
        slide, thumbnail_mpp=thumbnail_mpp_for(slide, pre), n_segments=int(pre["n_segments"])
    )
    ei = edge_index_of(adata)
    n = adata.n_obs
    node_labels = None
    if lesion_mask is not None:
        mask, ds = lesion_mask
        frac = _node_lesion_fraction(adata, mask, float(ds))
        node_labels = np.full(n, -1, dtype=np.int64)
        node_labels[frac >= 0.5] = 1
        node_labels[frac <= 0.05] = 0
        pos = _spread_pick(np.flatnonzero(frac >= 0.5), ei, n, n_candidates // 2, rng)
        neg = _spread_pick(np.flatnonzero(frac <= 0.05), ei, n, n_candidates - len(pos), rng)
        cand = np.concatenate([pos, neg])
    else:
        cand = _spread_pick(np.arange(n), ei, n, n_candidates, rng)
    size, dmpp = int(pre["crop_size"]), float(pre["detail_mpp"])
    centers = np.asarray(adata.obsm[SPATIAL])[cand]
    crops, boxes = read_crops(slide, centers, mpp=dmpp, size=size)
    crop_masks = None
    if lesion_mask is not None:
        crop_masks = torch.from_numpy(
            _mask_crops(lesion_mask[0], float(lesion_mask[1]), boxes, size)
        )
    tile_tensor = None
    if tiles:
        xy = tissue_grid(slide, pre)
        if len(xy) > max_tiles:
            xy = xy[np.sort(rng.choice(len(xy), max_tiles, replace=False))]
        arr = (
            np.stack([slide.read_region(tuple(p), (size, size), mpp=dmpp) for p in xy])
            if len(xy)
            else np.zeros((0, size, size, 3), np.uint8)
        )
        tile_tensor = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    sample = SlideSample(
        features=torch.from_numpy(np.asarray(adata.X, dtype=np.float32)),
        edge_index=ei,
        label=int(label),
        node_labels=None if node_labels is None else torch.from_numpy(node_labels),
        crops=torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous(),
        crop_nodes=torch.from_numpy(cand.astype(np.int64)),
        crop_masks=crop_masks,
        tiles=tile_tensor,
        name=name or Path(str(slide.path)).stem,
    )
    return sample, adata


def prepare_cohort(
    cohort,
    *,
    slide_ids: list[str] | None = None,
    settings: dict | None = None,
    use_masks: bool = True,
    tiles: bool = False,
    n_candidates: int = 8,
    max_tiles: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> list:
    """:func:`prepare_slide` for every slide of a synthetic cohort (labels from the grade).

    Returns the list of :class:`~workbench.models.SlideSample` (reusable across models and
    epochs, so the slides are read only once).
    """
    from tqdm.auto import tqdm

    rows = dict(cohort_slides(cohort))
    # Accept ids ("S000") as well as the clinical table's slide column ("slides/S000.tif").
    ids = list(rows) if slide_ids is None else [Path(str(s)).stem for s in slide_ids]
    missing = [s for s in ids if s not in rows]
    if missing:
        raise KeyError(
            f"slides {missing[:3]} are not in the cohort; ids look like {list(rows)[:3]}"
        )
    samples = []
    for i, sid in enumerate(tqdm(ids, desc="read slides", disable=not progress)):
        mask = cohort.lesion_mask(sid) if use_masks else None
        sample, _ = prepare_slide(
            cohort.slide_path(sid),
            label=label_from_grade(rows[sid]["grade"]),
            settings=settings,
            lesion_mask=mask,
            n_candidates=n_candidates,
            tiles=tiles,
            max_tiles=max_tiles,
            seed=seed + i,
            name=str(sid),
        )
        samples.append(sample)
    return samples


@dataclass
class SlideTrainer:
    """Train a slide model on a cohort: a fitted object in the lifelines manner.

    Parameters
    ----------
    kind
        ``"sew"`` (:class:`~workbench.models.SelfCalibratedModel`), ``"global"``
        (:class:`~workbench.models.GlobalOnly`) or ``"abmil"``
        (:class:`~workbench.models.TileABMIL`).
    epochs, lr, seed, device, consistency, progress
        Passed to :class:`~workbench.models.Trainer`.
    settings
        Preprocessing overrides (``thumbnail_mpp``, ``n_segments``, ``detail_mpp``,
        ``crop_size``); stored with the model.
    model_kwargs
        Extra model constructor arguments (``hidden``, ``detail_width`` …).

    Attributes
    ----------
    model_
        The trained model.
    history_
        Per-epoch losses and accuracy.
    samples_
        The cached training slides.
    """

    kind: str = "sew"
    epochs: int = 30
    lr: float = 2e-3
    seed: int = 0
    device: str | None = None
    consistency: bool = True
    progress: bool = True
    settings: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {MODEL_KINDS}, got {self.kind!r}")

    def __repr__(self) -> str:
        state = (
            f"fitted on {len(self.samples_)} slides" if hasattr(self, "model_") else "not fitted"
        )
        return f"SlideTrainer(kind={self.kind!r}, epochs={self.epochs}, consistency={self.consistency}; {state})"

    def _build(self, in_features: int, feature_names: list[str]):
        from workbench.models import GlobalOnly, SelfCalibratedModel, TileABMIL

        pre = {**DEFAULT_PREPROCESSING, **self.settings, "feature_names": list(feature_names)}
        kw: dict[str, Any] = {"preprocessing": pre, "class_names": CLASS_NAMES, "n_classes": 2}
        kw.update(self.model_kwargs)
        if self.kind == "sew":
            return SelfCalibratedModel(in_features=in_features, **kw)
        if self.kind == "global":
            return GlobalOnly(in_features=in_features, **kw)
        return TileABMIL(**kw)

    def fit(
        self,
        cohort=None,
        *,
        samples: list | None = None,
        slide_ids: list[str] | None = None,
        feature_names: list[str] | None = None,
    ) -> SlideTrainer:
        """Train on a cohort (read here) or on already prepared ``samples``; returns ``self``."""
        import torch

        from workbench.models import Trainer
        from workbench.pp import feature_names as default_names

        if samples is None:
            if cohort is None:
                raise ValueError("give a cohort or prepared samples")
            if "thumbnail_mpp" not in self.settings:
                first = cohort_slides(cohort)[0][0]
                self.settings = {**suggest_settings(cohort.slide_path(first)), **self.settings}
            samples = prepare_cohort(
                cohort,
                slide_ids=slide_ids,
                settings=self.settings,
                tiles=self.kind == "abmil",
                seed=self.seed,
                progress=self.progress,
            )
        if not samples:
            raise ValueError("no training slides")
        torch.manual_seed(self.seed)
        names = list(feature_names or default_names())
        model = self._build(samples[0].features.shape[1], names)
        trainer = Trainer(
            model,
            epochs=self.epochs,
            lr=self.lr,
            seed=self.seed,
            device=self.device,
            consistency=self.consistency,
            progress=self.progress,
        ).fit(samples)
        self.model_ = model.cpu().eval()
        self.history_ = trainer.history_
        self.samples_ = samples
        return self

    def save(self, directory: str | os.PathLike) -> Path:
        """Save the trained model as a checkpoint folder (safetensors + JSON)."""
        from workbench.models import save_checkpoint

        if not hasattr(self, "model_"):
            raise ValueError("fit the trainer before saving")
        extra = {
            "kind": self.kind,
            "epochs": self.epochs,
            "seed": self.seed,
            "consistency": self.consistency,
            "trained_on": [s.name for s in self.samples_],
            "label": "high grade: class 1 = grade 3, class 0 = grades 1-2",
            "history": [{k: v for k, v in h.items() if k != "weights"} for h in self.history_],
        }
        return save_checkpoint(self.model_, directory, extra=extra)


def train_default(
    cohort,
    out_dir: str | os.PathLike,
    *,
    epochs: int = 24,
    seed: int = 0,
    progress: bool = True,
) -> SlideTrainer:
    """Train the demo model on a synthetic cohort and save it to ``out_dir/model``.

    Sized for a few minutes on two CPU cores. The label is high grade (grade 3) vs grades
    1–2. Load the result with :func:`workbench.models.load_checkpoint`.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    trainer = SlideTrainer(kind="sew", epochs=epochs, seed=seed, progress=progress).fit(cohort)
    path = trainer.save(Path(out_dir) / "model")
    logger.info("train_default: model saved in %s", path)
    return trainer


__all__ = [
    "CLASS_NAMES",
    "SlideTrainer",
    "label_from_grade",
    "prepare_cohort",
    "prepare_slide",
    "suggest_settings",
    "train_default",
]
