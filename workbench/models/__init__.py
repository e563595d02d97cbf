"""Torch models: tensors in, dicts of tensors out (no AnnData, no OpenSlide)."""

from __future__ import annotations

from workbench.models._abmil import TileABMIL
from workbench.models._attention import GatedAttentionPool
from workbench.models._augment import stain_jitter
from workbench.models._cgam import ChannelScaleBias, ClickGuidedGate
from workbench.models._checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from workbench.models._clicknet import CLICK_SEGMENTER, load_click_segmenter
from workbench.models._clicknet_train import train_click_segmenter
from workbench.models._clickseg import ClickSegmenter
from workbench.models._detail import DetailBranch
from workbench.models._encoder import (
    BUILTIN_ENCODERS,
    TISSUE_ENCODER,
    EncoderDetail,
    ModuleEncoder,
    TileEncoder,
    export_encoder,
)
from workbench.models._focus import FOCUS_TARGETS, FocusPredictor, attribution_target, focus_target
from workbench.models._global import GlobalBranch
from workbench.models._global_only import GlobalOnly
from workbench.models._graph import graph_nms, normalized_adjacency
from workbench.models._load_encoder import load_encoder
from workbench.models._local_encoders import (
    ENCODER_ARCHITECTURES,
    EncoderArchitecture,
    LocalEncoder,
    RegistryEntry,
    encoder_registry_path,
    load_local_encoder,
    read_encoder_registry,
)
from workbench.models._losses import (
    back_calibration_loss,
    binary_kl,
    consistency_loss,
    cox_partial_likelihood,
    curriculum_weights,
    detail_mask_loss,
    dice_loss,
    focus_loss,
    mil_lesion_loss,
    node_loss,
    slide_loss,
)
from workbench.models._model import CONFIRM_RULES, SelfCalibratedModel
from workbench.models._peaks import evidence_peaks
from workbench.models._protocol import (
    MODEL_KINDS,
    SlideInputs,
    SlideModel,
    StepContext,
    kind_of,
    model_kind,
    pool_by_region,
    register_kind,
)
from workbench.models._texture import TextureEncoder
from workbench.models._tissue_cnn import (
    TissueNet,
    load_tissue_encoder,
    save_tissue_net,
    train_tissue_net,
)
from workbench.models._trainer import (
    RiskSetMemory,
    SlideSample,
    Trainer,
    default_device,
    predict_samples,
)
from workbench.models._vit import VisionTransformer
from workbench.models._vit_weights import hf_vit_config, load_vit_weights, read_weights

__all__ = [
    "BUILTIN_ENCODERS",
    "CLICK_SEGMENTER",
    "CONFIRM_RULES",
    "FOCUS_TARGETS",
    "ChannelScaleBias",
    "ClickGuidedGate",
    "ClickSegmenter",
    "DetailBranch",
    "ENCODER_ARCHITECTURES",
    "EncoderArchitecture",
    "EncoderDetail",
    "FocusPredictor",
    "GatedAttentionPool",
    "GlobalBranch",
    "GlobalOnly",
    "LocalEncoder",
    "MODEL_KINDS",
    "ModuleEncoder",
    "RegistryEntry",
    "SelfCalibratedModel",
    "SlideInputs",
    "SlideModel",
    "SlideSample",
    "StepContext",
    "TextureEncoder",
    "TISSUE_ENCODER",
    "TissueNet",
    "TileABMIL",
    "TileEncoder",
    "RiskSetMemory",
    "Trainer",
    "VisionTransformer",
    "attribution_target",
    "back_calibration_loss",
    "binary_kl",
    "consistency_loss",
    "cox_partial_likelihood",
    "curriculum_weights",
    "default_device",
    "detail_mask_loss",
    "dice_loss",
    "encoder_registry_path",
    "evidence_peaks",
    "export_encoder",
    "focus_loss",
    "focus_target",
    "graph_nms",
    "hf_vit_config",
    "kind_of",
    "load_checkpoint",
    "load_click_segmenter",
    "load_encoder",
    "load_local_encoder",
    "load_tissue_encoder",
    "load_vit_weights",
    "mil_lesion_loss",
    "model_kind",
    "node_loss",
    "normalized_adjacency",
    "pool_by_region",
    "predict_samples",
    "read_checkpoint_config",
    "read_encoder_registry",
    "read_weights",
    "register_kind",
    "save_checkpoint",
    "slide_loss",
    "stain_jitter",
    "train_click_segmenter",
    "save_tissue_net",
    "train_tissue_net",
]
