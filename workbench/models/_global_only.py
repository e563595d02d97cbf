"""Baseline: the global branch alone (no focus, no magnified crops)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from workbench.models._global import GLOBAL_BRANCH_OPTIONS, GlobalBranch

__all__ = ["GlobalOnly"]


class GlobalOnly(nn.Module):
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
    """

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

    @property
    def preprocessing(self) -> dict:
        return self.config["preprocessing"]

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor) -> dict:
        """Same outputs as :meth:`GlobalBranch.forward`."""
        return self.global_branch(features, edge_index)
