"""Training loop for the slide models (torch only; data arrive as cached tensors)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workbench.models._abmil import TileABMIL
from workbench.models._focus import attribution_target
from workbench.models._global_only import GlobalOnly
from workbench.models._losses import (
    back_calibration_loss,
    consistency_loss,
    curriculum_weights,
    detail_mask_loss,
    focus_loss,
    node_loss,
    slide_loss,
)
from workbench.models._model import SelfCalibratedModel

__all__ = ["SlideSample", "Trainer", "default_device"]


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class SlideSample:
    """One training slide, already read from disk (so epochs never touch the file again).

    Attributes
    ----------
    features
        ``(N, F)`` float32 region features.
    edge_index
        ``(2, E)`` long region adjacency.
    label
        Slide class index.
    node_labels
        ``(N,)`` long region labels (1 lesion, 0 not, -1 unknown) or ``None``.
    crops
        ``(M, 3, S, S)`` uint8 magnified crops of candidate regions, or ``None``.
    crop_nodes
        ``(M,)`` long node index of every crop.
    crop_masks
        ``(M, 1, S, S)`` uint8 0/1 lesion masks of the crops, or ``None`` (then the detail
        branch learns from the slide label only, by multiple-instance pooling).
    tiles
        ``(T, 3, S, S)`` uint8 tissue tiles for :class:`TileABMIL`, or ``None``.
    name
        Slide identifier.
    """

    features: torch.Tensor
    edge_index: torch.Tensor
    label: int
    node_labels: torch.Tensor | None = None
    crops: torch.Tensor | None = None
    crop_nodes: torch.Tensor | None = None
    crop_masks: torch.Tensor | None = None
    tiles: torch.Tensor | None = None
    name: str = ""


def _to_float_image(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


class Trainer:
    """Fits a :class:`SelfCalibratedModel`, :class:`GlobalOnly` or :class:`TileABMIL`.

    One optimiser step per slide (Adam), slides shuffled every epoch with a seeded generator.
    For the self-calibrated model the losses follow the curriculum of
    :func:`~workbench.models.curriculum_weights`: slide, node and focus losses from the start,
    detail losses from ``detail_start`` of the epochs, consistency and back-calibration
    ramping in after that (never, when ``consistency=False``: the ablation).

    Parameters
    ----------
    model
        The model to train (modified in place).
    epochs
        Passes over the training slides.
    lr, weight_decay
        AdamW settings.
    seed
        Seeds torch and the shuffling.
    device
        ``None`` = CUDA when available, else CPU.
    detail_start, ramp
        Curriculum (fractions of the run).
    consistency
        Whether the feature-consistency and back-calibration losses are used.
    tiles_per_step
        Tiles sampled per slide and step when training :class:`TileABMIL` (inference uses all).
    progress
        Show a tqdm progress bar.

    Attributes
    ----------
    history_
        One dict per epoch: mean losses, training accuracy and the curriculum weights.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        epochs: int = 20,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        device: str | torch.device | None = None,
        detail_start: float = 0.2,
        ramp: float = 0.2,
        consistency: bool = True,
        tiles_per_step: int = 16,
        progress: bool = True,
    ) -> None:
        if not isinstance(model, SelfCalibratedModel | GlobalOnly | TileABMIL):
            raise TypeError(
                f"Trainer trains SelfCalibratedModel, GlobalOnly or TileABMIL, not {type(model).__name__}"
            )
        assert epochs >= 1, "epochs must be at least 1"
        self.model = model
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = torch.device(device) if device is not None else default_device()
        self.detail_start = detail_start
        self.ramp = ramp
        self.consistency = consistency
        self.tiles_per_step = tiles_per_step
        self.progress = progress
        self.history_: list[dict] = []
        self.n_slides_: int | None = None

    def __repr__(self) -> str:
        fitted = f"fitted on {self.n_slides_} slides" if self.n_slides_ else "not fitted"
        return (
            f"Trainer({type(self.model).__name__}, epochs={self.epochs}, lr={self.lr}, "
            f"consistency={self.consistency}, device={self.device.type}; {fitted})"
        )

    # ------------------------------------------------------------------------------------
    def _set_scaling(self, samples: list[SlideSample]) -> None:
        if isinstance(self.model, TileABMIL):
            return
        feats = torch.cat([s.features.float() for s in samples])
        mean = feats.mean(0)
        std = feats.std(0).nan_to_num(1.0)
        self.model.global_branch.set_feature_scaling(mean, std)

    def _sew_step(self, s: SlideSample, w: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        model: SelfCalibratedModel = self.model
        dev = self.device
        x = s.features.to(dev).float()
        ei = s.edge_index.to(dev)
        out = model.forward_global(x, ei)
        logits = out["logits"]
        parts = {"slide": slide_loss(logits, s.label)}
        log_prob = torch.log_softmax(logits, dim=-1)[s.label]
        attribution = attribution_target(log_prob, out["tokens"])
        parts["focus"] = focus_loss(out["focus_logits"], attribution)
        if s.node_labels is not None:
            parts["node"] = node_loss(out["node_logits"], s.node_labels.to(dev))
        final_logits = logits
        if w["detail"] > 0 and s.crops is not None and len(s.crops):
            crops = _to_float_image(s.crops, dev)
            crop_nodes = s.crop_nodes.to(dev)
            det = model.detail(crops)
            if s.crop_masks is not None:
                parts["detail"] = detail_mask_loss(det["logits"], s.crop_masks.to(dev).float())
            chosen = model.select_focus(out["focus_scores"], ei, candidates=crop_nodes)
            # First crop row of every chosen node.
            rows = torch.stack([torch.nonzero(crop_nodes == n)[0, 0] for n in chosen])
            emb = det["embedding"][rows]
            final_logits = logits + model.detail_classifier(emb.mean(0))
            mil = slide_loss(final_logits, s.label)
            parts["detail"] = parts.get("detail", 0.0) + mil
            if w["consistency"] > 0:
                parts["consistency"] = consistency_loss(model.project(out["tokens"][chosen]), emb)
                parts["calibration"] = back_calibration_loss(
                    out["focus_logits"][crop_nodes], det["lesion_prob"]
                )
        total = sum(w[k] * v for k, v in parts.items())
        return total, parts, final_logits

    def _global_step(self, s: SlideSample, w: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        out = self.model(s.features.to(self.device).float(), s.edge_index.to(self.device))
        parts = {"slide": slide_loss(out["logits"], s.label)}
        if s.node_labels is not None:
            parts["node"] = node_loss(out["node_logits"], s.node_labels.to(self.device))
        return sum(parts.values()), parts, out["logits"]

    def _abmil_step(
        self, s: SlideSample, w: dict, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict, torch.Tensor]:
        if s.tiles is None or not len(s.tiles):
            raise ValueError(f"slide {s.name!r} has no tiles; TileABMIL needs SlideSample.tiles")
        n = len(s.tiles)
        idx = torch.randperm(n, generator=gen)[: self.tiles_per_step]
        out = self.model(_to_float_image(s.tiles[idx], self.device))
        parts = {"slide": slide_loss(out["logits"], s.label)}
        return parts["slide"], parts, out["logits"]

    def fit(self, samples: list[SlideSample]) -> Trainer:
        """Train on ``samples``; returns ``self`` with ``history_`` filled."""
        from tqdm.auto import tqdm

        samples = list(samples)
        if not samples:
            raise ValueError("no training slides given")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        model = self.model.to(self.device)
        self._set_scaling(samples)
        model.to(self.device)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total_steps = self.epochs * len(samples)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
        self.history_ = []
        self.n_slides_ = len(samples)
        bar = tqdm(
            range(self.epochs), desc=f"train {type(model).__name__}", disable=not self.progress
        )
        for epoch in bar:
            model.train()
            w = curriculum_weights(
                epoch,
                self.epochs,
                detail_start=self.detail_start,
                ramp=self.ramp,
                consistency=self.consistency,
            )
            sums: dict[str, float] = {}
            correct = 0
            for i in rng.permutation(len(samples)):
                s = samples[int(i)]
                if isinstance(model, SelfCalibratedModel):
                    loss, parts, logits = self._sew_step(s, w)
                elif isinstance(model, GlobalOnly):
                    loss, parts, logits = self._global_step(s, w)
                else:
                    loss, parts, logits = self._abmil_step(s, w, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                sched.step()
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
                correct += int(int(logits.detach().argmax()) == int(s.label))
            record = {"epoch": epoch + 1, **{k: v / len(samples) for k, v in sums.items()}}
            record["accuracy"] = correct / len(samples)
            record["weights"] = dict(w)
            self.history_.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.2f}")
        model.eval()
        return self
