"""Real-tissue survival mosaics: lymphocytes planted inside the tumour drive a documented hazard."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import WorkbenchError
from workbench.datasets import (
    SURVIVAL_MOSAIC_CLINICAL_COLUMNS,
    SURVIVAL_MOSAIC_TRUTH_COLUMNS,
    TilHazardModel,
    load_cohort,
    make_survival_mosaic_cohort,
)
from workbench.datasets._mosaic import load_material, plan_slide, split_material
from workbench.datasets._survival_mosaic import infiltrate, til_z

pytest.importorskip("openslide")
SIZE = (1536, 1152)


@pytest.fixture(scope="module")
def cohort(real_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("survival_mosaic")
    return make_survival_mosaic_cohort(
        root, n_train=2, n_test=2, size=SIZE, seed=3, data_dir=real_data, progress=False
    )


def test_infiltrate_turns_the_asked_share_of_tumour_cells_into_lymphocytes(real_data):
    pieces, _ = load_material(real_data)
    pool = split_material(pieces, seed=0)["train"]
    plan = plan_slide(2048, 1536, positive=True, pieces=pool, seed=5)
    tumour = np.argwhere(plan.cls == "tumour")
    before_lymph = plan.cls == "lymphocytes"
    new, n = infiltrate(plan, pool, 0.4, seed=5)
    assert n == round(0.4 * len(tumour)) and n > 0
    turned = (new.cls == "lymphocytes") & ~before_lymph
    assert turned.sum() == n
    assert (plan.cls[turned] == "tumour").all()  # only tumour cells, never anything else
    assert all(pool[int(k)].cls == "lymphocytes" for k in new.piece[turned])
    assert (new.cls[~turned] == plan.cls[~turned]).all()  # the rest of the slide is unchanged
    assert infiltrate(plan, pool, 0.0, seed=5)[1] == 0
    again, _ = infiltrate(plan, pool, 0.4, seed=5)
    assert (again.piece == new.piece).all()  # seeded


@pytest.mark.slow
def test_tables_follow_the_documented_hazard(cohort):
    t = cohort.truth
    assert list(t.columns) == SURVIVAL_MOSAIC_TRUTH_COLUMNS
    assert list(cohort.clinical.columns)[:1] == ["patient_id"]
    assert set(SURVIVAL_MOSAIC_CLINICAL_COLUMNS) - {"slide"} <= set(cohort.clinical.columns)
    assert list(t["split"]) == ["train", "train", "test", "test"]
    share = t["til_cells"] / (t["til_cells"] + t["tumour_cells"])
    np.testing.assert_allclose(t["til_share"], share, atol=1e-5)
    m = TilHazardModel()
    eta = m.log_hr_til * til_z(t["til_share"]) + m.log_hr_age * (t["age"] - 60) / 10
    np.testing.assert_allclose(t["linear_predictor"], eta, atol=1e-4)
    assert (t["time"] > 0).all() and set(t["event"]) <= {0, 1}
    assert cohort.params["survival_model"]["log_hr_til"] == pytest.approx(m.log_hr_til)
    assert load_cohort(cohort.root).truth.equals(t)


@pytest.mark.slow
def test_sides_share_no_source_image_and_a_resume_keeps_files(cohort, real_data):
    t = cohort.truth
    used = {
        s: set(";".join(t.loc[t["split"] == s, "groups"]).split(";")) for s in ("train", "test")
    }
    assert used["train"] and used["test"] and not used["train"] & used["test"]
    first = cohort.slide_path(cohort.slide_ids[0])
    stamp = first.stat().st_mtime_ns
    again = make_survival_mosaic_cohort(cohort.root, n_train=2, n_test=2, size=SIZE, seed=3,
                                        data_dir=real_data, progress=False)  # fmt: skip
    assert first.stat().st_mtime_ns == stamp and again.truth.equals(t)
    with pytest.raises(WorkbenchError, match="other arguments"):
        make_survival_mosaic_cohort(cohort.root, n_train=2, n_test=2, size=SIZE, seed=3,
                                    null=True, data_dir=real_data, progress=False)  # fmt: skip


def test_survival_draw_orientation_and_null():
    """More TILs, longer survival: over many drawn patients the TIL share orders the times;
    with the TIL effect removed it does not."""
    from lifelines.utils import concordance_index

    from workbench.datasets._survival_mosaic import _survival

    rng = np.random.default_rng(0)
    share = rng.uniform(0, 0.5, size=600)
    m = TilHazardModel()
    time, event = _survival(m.log_hr_til * til_z(share), m, seed=1)
    assert concordance_index(time, share, event) > 0.65  # high share = long survival
    time, event = _survival(np.zeros(600), m, seed=1)
    assert abs(concordance_index(time, share, event) - 0.5) < 0.05
