"""make_cohort options: grade_cue="detail" (grade only in the nuclei) and sites=k."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from workbench import WorkbenchError
from workbench.datasets import (
    CLINICAL_COLUMNS,
    TRUTH_COLUMNS,
    draw_sites,
    make_cohort,
    make_slide,
    simulate_patients,
    slide_truth,
)

SMALL = (1024, 768)


# --- grade_cue="detail" -------------------------------------------------------------------
def test_detail_cue_draws_the_same_lesions_at_every_grade(tmp_path):
    masks = [
        slide_truth(tmp_path / "x.tif", size=SMALL, grade=g, infiltration=0.5, seed=9,
                    grade_cue="detail").lesion_mask
        for g in (1, 2, 3)
    ]  # fmt: skip
    assert masks[0].any()
    assert all(np.array_equal(masks[0], m) for m in masks[1:])
    # by default grade shapes the lesions, so the same seed gives other lesions
    both = [
        slide_truth(tmp_path / "x.tif", size=SMALL, grade=g, infiltration=0.5, seed=9).lesion_mask
        for g in (1, 3)
    ]
    assert not np.array_equal(both[0], both[1])


def _lesion_patch(grade: int, cue: str, seed: int, side: int = 768) -> np.ndarray:
    """Pixels of a window that is lesion everywhere (so only the lesion's look counts)."""
    from workbench.datasets._layout import build_layout
    from workbench.datasets._render import SlideRenderer

    lay = build_layout(side, side, grade=grade, infiltration=0.3, seed=seed, grade_cue=cue)
    shape = lay.tissue_sdf.shape
    lay = dataclasses.replace(
        lay,
        tissue_sdf=np.full(shape, 20, np.float32),
        lesion_sdf=np.full(shape, 20, np.float32),
        necrosis_sdf=np.full(shape, -100, np.float32),
        immune=np.zeros(shape, np.float32),
        stain_scale=(1.0, 1.0),
    )
    return SlideRenderer(lay).render(0, 0, side, side)


def _box(img: np.ndarray, k: int) -> np.ndarray:
    h, w = img.shape[0] // k * k, img.shape[1] // k * k
    return img[:h, :w].reshape(h // k, k, w // k, k, 3).astype(np.float32).mean((1, 3))


@pytest.mark.slow
def test_detail_cue_hides_grade_on_the_thumbnail_but_not_at_high_magnification():
    from skimage.color import rgb2hed

    looks = {}
    for cue in ("detail", "both"):
        for g in (1, 3):
            img = _lesion_patch(g, cue, seed=5)
            thumb = _box(img, 8)  # 4 µm/px, the finest thumbnail the models use here
            dark = rgb2hed(img)[..., 0]
            looks[cue, g] = (thumb.mean((0, 1)), thumb.std((0, 1)), np.mean(dark > 0.14))
    # detail: thumbnail colour and texture agree within a couple of grey levels ...
    m1, s1, d1 = looks["detail", 1]
    m3, s3, d3 = looks["detail", 3]
    assert np.abs(m1 - m3).max() < 2.5
    assert np.abs(s1 - s3).max() < 1.5
    # ... while at 0.5 µm/px grade 3 has far more very dark chromatin (nucleoli, clumps)
    assert d3 > 2.0 * d1
    # the default cue shows grade on the thumbnail too (the easy task)
    b1, _, _ = looks["both", 1]
    b3, _, _ = looks["both", 3]
    assert np.abs(b1 - b3).max() > 8


@pytest.mark.slow
def test_detail_cohort_records_its_cue_and_refuses_another(tmp_path):
    cohort = make_cohort(
        tmp_path / "d", n_patients=2, size=SMALL, seed=3, grade_cue="detail", progress=False
    )
    assert cohort.params["grade_cue"] == "detail"
    assert list(cohort.clinical.columns)[: len(CLINICAL_COLUMNS)] == CLINICAL_COLUMNS
    with pytest.raises(WorkbenchError, match="grade_cue='detail'"):
        make_cohort(tmp_path / "d", n_patients=2, size=SMALL, seed=3, progress=False)


def test_unknown_grade_cue_lists_the_options(tmp_path):
    with pytest.raises(ValueError, match="both.*detail"):
        make_cohort(tmp_path / "x", n_patients=1, size=SMALL, grade_cue="nuclei")
    with pytest.raises(ValueError, match="grade_cue"):
        make_slide(tmp_path / "x.tif", size=SMALL, grade=1, infiltration=0.1, seed=0,
                   grade_cue="thumbnail")  # fmt: skip


# --- sites ----------------------------------------------------------------------------------
def test_sites_do_not_change_the_other_columns_but_shift_survival():
    plain = simulate_patients(60, seed=4)
    sited = simulate_patients(60, seed=4, sites=3)
    same = ["patient_id", "slide_id", "grade", "infiltration", "age", "slide_seed"]
    assert plain[same].equals(sited[same])
    assert sorted(sited["site"].value_counts().tolist()) == [20, 20, 20]  # balanced
    lookup = {d["site"]: d["log_hazard"] for d in draw_sites(3, seed=4)}
    assert np.allclose(sited["site_log_hazard"], sited["site"].map(lookup))
    assert np.allclose(
        sited["linear_predictor"] - plain["linear_predictor"], sited["site_log_hazard"]
    )


def test_site_is_prognostic_even_in_a_null_cohort():
    from lifelines import CoxPHFitter

    table = simulate_patients(3000, seed=1, null=True, sites=4)
    cph = CoxPHFitter().fit(table[["time", "event", "site_log_hazard", "age"]], "time", "event")
    # the site term enters eta with coefficient 1
    assert cph.params_["site_log_hazard"] == pytest.approx(1.0, abs=0.15)
    assert cph.summary.loc["site_log_hazard", "p"] < 1e-6


def test_sites_look_like_different_labs():
    sites = draw_sites(4, seed=2)
    assert [s["site"] for s in sites] == ["A", "B", "C", "D"]
    assert sorted(s["log_hazard"] for s in sites) == pytest.approx([-0.6, -0.2, 0.2, 0.6])
    vectors = np.array([s["stain_vectors"] for s in sites])
    assert np.allclose(np.linalg.norm(vectors, axis=2), 1.0, atol=1e-4)
    # the haematoxylin colour of two sites differs by several degrees
    cos = vectors[:, 0] @ vectors[:, 0].T
    angles = np.degrees(np.arccos(np.clip(cos[np.triu_indices(4, 1)], -1, 1)))
    assert angles.min() > 1.0 and angles.max() > 5.0


@pytest.mark.slow
def test_multi_site_cohort_tables_json_and_tint(tmp_path):
    cohort = make_cohort(tmp_path / "s", n_patients=4, size=SMALL, seed=6, sites=2,
                         null=True, progress=False)  # fmt: skip
    params = json.loads((tmp_path / "s" / "cohort.json").read_text())
    assert params["sites"] == 2 and len(params["site_model"]["sites"]) == 2
    assert list(cohort.clinical.columns) == [*CLINICAL_COLUMNS, "site"]
    assert list(cohort.truth.columns) == [*TRUTH_COLUMNS, "site", "site_log_hazard"]
    assert sorted(cohort.clinical["site"].unique()) == ["A", "B"]
    # the same slide drawn with each site's stain: same tissue, another tint
    stains = {
        d["site"]: {"vectors": d["stain_vectors"], "scale": d["stain_scale"]}
        for d in params["site_model"]["sites"]
    }
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    for path, site in ((a, "A"), (b, "B")):
        make_slide(path, size=SMALL, grade=2, infiltration=0.5, seed=1, stain=stains[site])
    from workbench.datasets import thumbnail

    ta, tb = thumbnail(a, max_side=256)[0], thumbnail(b, max_side=256)[0]
    tissue = ta.mean(axis=2) < 220
    assert np.abs(ta[tissue].mean(0) - tb[tissue].mean(0)).max() > 4
    truth_a = slide_truth(a, size=SMALL, grade=2, infiltration=0.5, seed=1, stain=stains["A"])
    truth_b = slide_truth(b, size=SMALL, grade=2, infiltration=0.5, seed=1, stain=stains["B"])
    assert np.array_equal(truth_a.lesion_mask, truth_b.lesion_mask)


def test_default_cohort_json_and_tables_carry_no_site_or_cue_keys(tiny_cohort):
    params = json.loads((tiny_cohort.root / "cohort.json").read_text())
    assert "sites" not in params and "grade_cue" not in params
    assert list(tiny_cohort.truth.columns) == TRUTH_COLUMNS


@pytest.mark.parametrize("bad", [0, 27, True, 2.5])
def test_bad_site_counts_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="sites"):
        make_cohort(tmp_path / "x", n_patients=1, size=SMALL, sites=bad)
