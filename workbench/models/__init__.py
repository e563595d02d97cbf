"""Torch models: tensors in, dicts of tensors out (no AnnData, no OpenSlide)."""

from __future__ import annotations

from workbench.models._abmil import TileABMIL
from workbench.models._attention import GatedAttentionPool
from workbench.models._cgam import ChannelScaleBias, ClickGuidedGate
from workbench.models._checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from workbench.models._detail import DetailBranch
from workbench.models._focus import FocusPredictor, attribution_target
from workbench.models._global import GlobalBranch
from workbench.models._global_only import GlobalOnly
from workbench.models._graph import graph_nms, normalized_adjacency
from workbench.models._losses import (
    back_calibration_loss,
    binary_kl,
    consistency_loss,
    curriculum_weights,
    detail_mask_loss,
    dice_loss,
    focus_loss,
    node_loss,
    slide_loss,
)
from workbench.models._model import SelfCalibratedModel
from workbench.models._trainer import SlideSample, Trainer, default_device

__all__ = [
    "ChannelScaleBias",
    "ClickGuidedGate",
    "DetailBranch",
    "FocusPredictor",
    "GatedAttentionPool",
    "GlobalBranch",
    "GlobalOnly",
    "SelfCalibratedModel",
    "SlideSample",
    "TileABMIL",
    "Trainer",
    "attribution_target",
    "back_calibration_loss",
    "binary_kl",
    "consistency_loss",
    "curriculum_weights",
    "default_device",
    "detail_mask_loss",
    "dice_loss",
    "focus_loss",
    "graph_nms",
    "load_checkpoint",
    "node_loss",
    "normalized_adjacency",
    "read_checkpoint_config",
    "save_checkpoint",
    "slide_loss",
]
