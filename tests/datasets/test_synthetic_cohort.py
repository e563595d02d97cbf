"""Synthetic cohorts on disk: tables, layout, resume and errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from workbench import WorkbenchError
from workbench.datasets import (
    CLINICAL_COLUMNS,
    TRUTH_COLUMNS,
    HazardModel,
    load_cohort,
    make_cohort,
)

SMALL = (1024, 768)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_clinical_table_has_the_columns_and_valid_values(tiny_cohort):
    clinical = tiny_cohort.clinical
    assert list(clinical.columns) == CLINICAL_COLUMNS
    assert clinical["patient_id"].is_unique and clinical["slide"].is_unique
    assert list(clinical["patient_id"]) == [f"P{i:03d}" for i in range(6)]
    assert set(clinical["grade"]) == {1, 2, 3}
    assert clinical["grade"].value_counts().max() == 2  # balanced: 6 slides, 3 grades
    assert (clinical["time"] > 0).all() and clinical["time"].notna().all()
    assert set(clinical["event"]) <= {0, 1}
    assert clinical["age"].between(30, 90).all()
    assert list(clinical["slide"]) == [f"S{i:03d}" for i in range(6)]  # slide ids (io.Cohort)
    for sid in clinical["slide"]:
        assert tiny_cohort.slide_path(sid).is_file()


def test_truth_table_and_cohort_json(tiny_cohort):
    truth = tiny_cohort.truth
    assert list(truth.columns) == TRUTH_COLUMNS
    assert truth["necrosis_fraction"].between(0, 1).all()
    assert truth["lesion_fraction"].between(0, 1).all() and (truth["lesion_fraction"] > 0).all()
    assert (truth["infiltration_score"] >= 0).all()
    # the measured marker follows the planted infiltration
    assert truth["infiltration"].corr(truth["infiltration_score"], method="spearman") > 0.8
    params = json.loads((tiny_cohort.root / "cohort.json").read_text())
    assert params["hazard_model"]["coefficients"] == HazardModel().to_dict()
    assert params["mask_downsample"] == 16 and params["mpp"] == 0.5
    for rel in ("clinical.csv", "truth.csv"):
        assert (tiny_cohort.root / rel).is_file()


def test_load_cohort_round_trips(tiny_cohort):
    again = load_cohort(tiny_cohort.root)
    assert again.clinical.equals(tiny_cohort.clinical)
    assert np.allclose(again.truth["infiltration_score"], tiny_cohort.truth["infiltration_score"])
    assert again.slide_paths == tiny_cohort.slide_paths
    assert "6 slides" in repr(again)


def test_slide_lookup_by_any_id(tiny_cohort):
    path = tiny_cohort.slide_path("S001")
    assert path == tiny_cohort.root / "slides" / "S001.tif"
    assert tiny_cohort.slide_path("slides/S001.tif") == path
    assert tiny_cohort.slide_path("P001") == path
    mask, ds = tiny_cohort.lesion_mask("slides/S001.tif")
    assert mask.dtype == bool and mask.any() and ds == 16
    assert tiny_cohort.lesion_geojson("S001").name == "S001_lesion.geojson"
    with pytest.raises(KeyError, match="S000"):
        tiny_cohort.slide_path("S999")


def test_resume_skips_written_slides_and_redraws_deleted_ones(tmp_path):
    root = tmp_path / "c"
    first = make_cohort(root, n_patients=2, size=SMALL, seed=4, progress=False)
    paths = first.slide_paths
    stamps = [p.stat().st_mtime_ns for p in paths]
    digest = _digest(paths[1])

    again = make_cohort(root, n_patients=2, size=SMALL, seed=4, progress=False)
    assert [p.stat().st_mtime_ns for p in paths] == stamps  # nothing rewritten
    assert again.clinical.equals(first.clinical)

    paths[1].unlink()
    (root / "masks" / "S000_lesion.png").unlink()
    make_cohort(root, n_patients=2, size=SMALL, seed=4, progress=False)
    assert paths[1].is_file() and _digest(paths[1]) == digest
    assert paths[0].stat().st_mtime_ns == stamps[0]
    assert (root / "masks" / "S000_lesion.png").is_file()
    assert not list(root.rglob(".*tmp*"))  # no temporary files left behind


def test_other_arguments_in_the_same_folder_are_refused(tmp_path):
    root = tmp_path / "c"
    make_cohort(root, n_patients=1, size=SMALL, seed=1, progress=False)
    with pytest.raises(WorkbenchError, match="other arguments"):
        make_cohort(root, n_patients=1, size=SMALL, seed=2, progress=False)


def test_null_cohort_records_zero_effects(tmp_path):
    cohort = make_cohort(
        tmp_path / "n", n_patients=1, size=SMALL, seed=1, null=True, progress=False
    )
    coefs = cohort.params["hazard_model"]["coefficients"]
    assert coefs["log_hr_grade"] == 0 and coefs["log_hr_infiltration"] == 0
    assert cohort.params["hazard_model"]["planted_coefficients"]["log_hr_infiltration"] < 0


def test_load_cohort_explains_an_unfinished_folder(tmp_path):
    (tmp_path / "cohort.json").write_text("{}")
    with pytest.raises(WorkbenchError, match="make_cohort"):
        load_cohort(tmp_path)
