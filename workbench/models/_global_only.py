"""Baseline: the global branch alone (no focus, no magnified crops)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from workbench.models._focus import attribution_target
from workbench.models._global import GLOBAL_BRANCH_OPTIONS, GlobalBranch
from workbench.models._graph import graph_nms
from workbench.models._losses import node_loss
from workbench.models._protocol import SlideInputs, SlideModel, StepContext, feature_scaling

if TYPE_CHECKING:  # pragma: no cover
    from workbench.models._trainer import SlideSample

__all__ = ["GlobalOnly"]


class GlobalOnly(SlideModel):
    """Slide classifier from the thumbnail region graph only.

    The same :class:`GlobalBranch` as in :class:`SelfCalibratedModel`, trained with slide
    (and node) cross-entropy only; the benchmark compares it to show what the magnified
    detail adds.

    Parameters
    ----------
    in_features, n_classes, hidden, gcn_layers, transformer_layers, heads, dropout
        Passed to :class:`GlobalBranch`.
    preprocessing, class_names, label
        As in :class:`SelfCalibratedModel`.

    Notes
    -----
    Explained by :func:`workbench.tl.extract` like every kind: its region scores are the
    gradient attribution of the predicted class (:func:`~workbench.models.attribution_target`
    of its log-probability: how much each region's token pushes the answer), and its focus
    regions the top-K of those after graph NMS. It has no detail branch, so the lesion
    probabilities and maps are NaN.
    """

    kind = "global"
    region_score = "gradient attribution of the predicted class"

    def __init__(
        self,
        *,
        in_features: int,
        n_classes: int = 2,
        hidden: int = 64,
        gcn_layers: int = 3,
        transformer_layers: int = 0,
        heads: int = 4,
        dropout: float = 0.1,
        preprocessing: dict | None = None,
        class_names: list[str] | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__()
        self.config = {
            "in_features": in_features,
            "n_classes": n_classes,
            "hidden": hidden,
            "gcn_layers": gcn_layers,
            "transformer_layers": transformer_layers,
            "heads": heads,
            "dropout": dropout,
            "preprocessing": copy.deepcopy(preprocessing or {}),
            "class_names": list(class_names) if class_names else None,
            "label": label,
        }
        self.global_branch = GlobalBranch(**{k: self.config[k] for k in GLOBAL_BRANCH_OPTIONS})

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor) -> dict:
        """Same outputs as :meth:`GlobalBranch.forward`.

        Parameters
        ----------
        features
            ``(N, F)`` region features.
        edge_index
            ``(2, E)`` region adjacency.

        Returns
        -------
        dict
            The outputs of :meth:`GlobalBranch.forward` (``logits``, ``node_logits``,
            ``tokens`` …).
        """
        return self.global_branch(features, edge_index)

    # ------------------------------------------------------------------ SlideModel hooks
    def fit_scaling(
        self, samples: Sequence[SlideSample], *, device: torch.device, seed: int
    ) -> None:
        """Standardise the region features (see :meth:`SlideModel.fit_scaling`).

        Parameters
        ----------
        samples
            The training slides.
        device
            Where to run an encoder, if one is needed.
        seed
            Seeds any subsampling.
        """
        self.global_branch.set_feature_scaling(*feature_scaling(samples))

    def training_step(
        self, sample: SlideSample, ctx: StepContext
    ) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """Slide (and, with region labels, node) cross-entropy, unweighted by the curriculum
        (see :meth:`SlideModel.training_step`).

        Parameters
        ----------
        sample
            The cached slide.
        ctx
            The trainer's step context.

        Returns
        -------
        tuple
            ``(total loss, {term name: loss}, slide logits (n_classes,))``.
        """
        out = self(sample.features.to(ctx.device).float(), sample.edge_index.to(ctx.device))
        parts = {"slide": ctx.slide_loss(out["logits"], sample.label)}
        if sample.node_labels is not None:
            parts["node"] = node_loss(out["node_logits"], sample.node_labels.to(ctx.device))
        return sum(parts.values()), parts, out["logits"]

    def predict_logits(
        self, sample: SlideSample, *, device: torch.device, crop_source: Callable | None = None
    ) -> torch.Tensor:
        """Slide logits from the region graph alone (``crop_source`` is not used).

        Parameters
        ----------
        sample
            The cached slide.
        device
            Where the model is.
        crop_source
            Not used (the region graph is all this kind reads).

        Returns
        -------
        torch.Tensor
            ``(n_classes,)`` logits.
        """
        return self(sample.features.to(device).float(), sample.edge_index.to(device))["logits"]

    def infer(self, inputs: SlideInputs, *, top_k: int | None = None) -> dict:
        """Slide logits, the gradient attribution of the predicted class as region scores and
        its top-K regions after graph NMS (see :meth:`SlideModel.infer`).

        Parameters
        ----------
        inputs
            The slide's tensors (:class:`SlideInputs`).
        top_k
            Focus regions to pick (default: the model's ``top_k``).

        Returns
        -------
        dict
            ``logits`` and ``global_logits`` (the same), ``slide_embedding``,
            ``region_scores`` (attribution in ``[0, 1]``), ``region_features`` (node tokens),
            ``focus_index``.
        """
        x, ei = inputs.features, inputs.edge_index
        with torch.enable_grad():
            out = self(x, ei)
            if self.predicts_risk:  # survival: what pushes the risk up
                score = out["logits"][0]
            else:
                pred = int(out["logits"].detach().argmax())
                score = torch.log_softmax(out["logits"], -1)[pred]
            scores = attribution_target(score, out["tokens"])
        idx = graph_nms(scores, ei, k=self._top_k(top_k, x.shape[0]), hops=1)
        logits = out["logits"].detach()
        return {
            "logits": logits,
            "global_logits": logits,
            "slide_embedding": out["slide_embedding"].detach(),
            "region_scores": scores,
            "region_features": out["tokens"].detach(),
            "focus_index": idx,
        }
