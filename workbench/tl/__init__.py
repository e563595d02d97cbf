"""AnnData-level tools: explain slides with a trained model, train it, export results, and
discover prognostic spatial markers (phenotypes, spatial statistics, cohort, survival screen)."""

from __future__ import annotations

from workbench.tl._calibration import (
    expected_calibration_error,
    fit_temperature,
    model_temperature,
    reliability_table,
)
from workbench.tl._cohort import cohort, read_slides, validate_clinical
from workbench.tl._discover import (
    discover,
    fold_patients,
    match_phenotypes,
    outcome_groups,
    split_patients,
)
from workbench.tl._explain import extract, load_model, predict_tiles
from workbench.tl._families import family_screen, marker_families
from workbench.tl._markers import FeatureUniqueness, markers
from workbench.tl._qupath import export_geojson, focus_annotations, focus_in_mask
from workbench.tl._runner import extract_cohort, model_fingerprint
from workbench.tl._simulate import simulate_region_cohort
from workbench.tl._site import center_by_site, site_association
from workbench.tl._spatial import spatial, spatial_many
from workbench.tl._survival import benjamini_hochberg, survival
from workbench.tl._train import (
    SlideTrainer,
    classification_metrics,
    encode_labels,
    prepare_cohort,
    prepare_slide,
    suggest_settings,
)

__all__ = [
    "FeatureUniqueness",
    "SlideTrainer",
    "benjamini_hochberg",
    "classification_metrics",
    "center_by_site",
    "cohort",
    "discover",
    "encode_labels",
    "expected_calibration_error",
    "export_geojson",
    "extract",
    "extract_cohort",
    "family_screen",
    "fit_temperature",
    "focus_annotations",
    "focus_in_mask",
    "fold_patients",
    "load_model",
    "marker_families",
    "markers",
    "match_phenotypes",
    "model_fingerprint",
    "model_temperature",
    "outcome_groups",
    "predict_tiles",
    "prepare_cohort",
    "prepare_slide",
    "suggest_settings",
    "read_slides",
    "reliability_table",
    "simulate_region_cohort",
    "site_association",
    "spatial",
    "spatial_many",
    "split_patients",
    "survival",
    "validate_clinical",
]
