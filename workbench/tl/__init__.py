"""AnnData-level tools: explain slides with a trained model, train it, export results."""

from __future__ import annotations

from workbench.tl._extract import (
    export_geojson,
    extract,
    extract_cohort,
    focus_annotations,
    predict_tiles,
)
from workbench.tl._train import (
    SlideTrainer,
    label_from_grade,
    prepare_cohort,
    prepare_slide,
    train_default,
)

__all__ = [
    "SlideTrainer",
    "export_geojson",
    "extract",
    "extract_cohort",
    "focus_annotations",
    "label_from_grade",
    "predict_tiles",
    "prepare_cohort",
    "prepare_slide",
    "train_default",
]
