"""AnnData-level tools: explain slides with a trained model, train it, export results, and
discover prognostic spatial markers (phenotypes, spatial statistics, cohort, survival screen)."""

from __future__ import annotations

from workbench.tl._aggregate import aggregate, cohort, read_slides
from workbench.tl._applicability import ApplicabilityRecord
from workbench.tl._calibration import expected_calibration_error, fit_temperature
from workbench.tl._cv import uno_concordance
from workbench.tl._discover import discover, match_phenotypes, outcome_groups
from workbench.tl._exemplars import phenotype_exemplars
from workbench.tl._explain import extract, focus_peaks, load_model, predict_tiles
from workbench.tl._families import marker_families
from workbench.tl._marker_names import describe_marker
from workbench.tl._markers import FeatureUniqueness, markers
from workbench.tl._qupath import export_geojson, focus_annotations, focus_in_mask
from workbench.tl._runner import extract_cohort, model_fingerprint
from workbench.tl._site import center_by_site
from workbench.tl._spatial import spatial, spatial_many
from workbench.tl._survival import survival
from workbench.tl._train import SlideTrainer, classification_metrics, concordance_index

__all__ = [
    "ApplicabilityRecord",
    "FeatureUniqueness",
    "SlideTrainer",
    "aggregate",
    "classification_metrics",
    "concordance_index",
    "center_by_site",
    "cohort",
    "describe_marker",
    "discover",
    "expected_calibration_error",
    "export_geojson",
    "extract",
    "extract_cohort",
    "fit_temperature",
    "focus_annotations",
    "focus_in_mask",
    "focus_peaks",
    "load_model",
    "marker_families",
    "markers",
    "match_phenotypes",
    "model_fingerprint",
    "outcome_groups",
    "phenotype_exemplars",
    "predict_tiles",
    "read_slides",
    "spatial",
    "spatial_many",
    "survival",
    "uno_concordance",
]
