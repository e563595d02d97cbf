"""A survival model's focused features feed tl.discover unchanged (issue #23, item 3).

The slides come from the public path a user takes: ``SlideTrainer(target="survival")`` on
a tiny synthetic cohort, ``tl.extract`` with the saved checkpoint, then ``tl.discover``:
region phenotypes fitted on ``obsm["X_focus"]``, their spatial statistics per slide and the
survival screen of the patients that did not fit them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench import tl
from workbench.io import Cohort

torch.set_num_threads(1)

SMALL = {"hidden": 8, "detail_width": 4, "embed_dim": 8, "top_k": 3}
FAST = {
    "marker_kwargs": {"n_phenotypes": 2, "k_range": (2, 3)},
    "spatial_kwargs": {"families": ("direct", "moran"), "n_perms": 10},
    # six patients: below the screen's default minimum of 10, so lowered to test them all
    "survival_kwargs": {"cv_top": 0, "min_patients": 6, "min_events": 1},
}
#: uns["explain"] keys of a class model that a survival model's extract leaves out.
CLASS_ONLY = ("probabilities", "raw_probabilities", "temperature", "global_probabilities",
              "predicted_class", "predicted_label")  # fmt: skip


def _survival_slides(tiny_cohort, tmp_path, kind: str):
    root = tiny_cohort.root
    cohort = Cohort.from_folder(root / "slides", root / "clinical.csv")
    kw = {"model_kwargs": SMALL, "n_candidates": 4} if kind == "sew" else {}
    trainer = tl.SlideTrainer(kind=kind, target="survival", epochs=2, seed=0, progress=False,
                              settings={"n_segments": 60}, **kw)  # fmt: skip
    folder = trainer.fit(cohort).save(tmp_path / "model")
    adatas = [tl.extract(cohort.slide_path(s), folder) for s in cohort.slide_ids]
    return cohort, adatas


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sew", "global"])
def test_a_survival_models_focused_features_feed_discover_unchanged(tiny_cohort, tmp_path, kind):
    cohort, adatas = _survival_slides(tiny_cohort, tmp_path, kind)
    for a in adatas:  # really a survival model's output: a risk, no class keys
        ex = a.uns["explain"]
        assert ex["target"] == "survival" and np.isfinite(ex["risk"])
        assert not set(CLASS_ONLY) & set(ex)
        assert a.obsm["X_focus"].shape[0] == a.n_obs
    found = tl.discover(adatas, cohort, folds=3, seed=0, **FAST)
    # region phenotypes, fitted on the focused features, on every region of every slide
    for a in adatas:
        params = a.uns["feature_uniqueness"]["params"]
        assert params["feature_key"] == "X_focus"
        assert a.obs["phenotype"].notna().all() and a.obs["phenotype"].nunique() >= 1
        markers = a.uns["spatial_markers"]  # spatial statistics per slide
        assert len(markers) and np.isfinite(markers["value"].to_numpy(float)).any()
    # every patient tested by phenotypes fitted on the other folds, with survival
    screen = found.uns["survival_screen"]
    tested = found.uns["survival_screen_params"]["tested_patients"]
    assert sorted(tested) == sorted(cohort.clinical["patient_id"].astype(str))
    assert {"hr", "p_cox", "q_cox", "p_logrank", "called"} <= set(screen.columns)
    assert np.isfinite(screen["p_cox"].to_numpy(float)).any()
    assert found.uns["phenotype_exemplars"]["phenotypes"]


def test_exemplars_of_cross_fitted_slides_are_chosen_in_the_focused_features():
    """Cross-fitted folds each project into their own uniqueness space (own PCA basis, often
    another width): the exemplars are then chosen in the focused features, which every slide
    shares, instead of stacking incomparable coordinates (this raised for a survival model's
    slides, whose folds happened to keep 25 and 26 components)."""
    from workbench.datasets import simulate_region_cohort
    from workbench.tl import FeatureUniqueness
    from workbench.tl._exemplars import phenotype_exemplars

    adatas, clin = simulate_region_cohort(12, seed=3, n_regions=60, n_features=8)
    groups = ["short" if e and t < clin["time"].median() else "long"
              for t, e in zip(clin["time"], clin["event"], strict=True)]  # fmt: skip
    kw = {"n_phenotypes": 2, "k_range": (2, 3), "random_state": 0}
    a = FeatureUniqueness(variance=0.5, **kw).fit(adatas[6:], groups[6:])
    b = FeatureUniqueness(variance=0.99, **kw).fit(adatas[:6], groups[:6])
    for ad_ in adatas[:6]:
        a.transform(ad_)
    for ad_ in adatas[6:]:
        b.transform(ad_)
    widths = {ad_.obsm["X_uniqueness"].shape[1] for ad_ in adatas}
    assert len(widths) == 2  # two spaces of different widths, as after cross-fitting
    out = phenotype_exemplars(adatas)
    assert out["params"]["chosen_by"].endswith("X_focus")
    assert sum(e["n_regions"] for e in out["phenotypes"].values()) > 0
    # one model for every slide: its uniqueness space is used, as before
    for ad_ in adatas:
        a.transform(ad_)
    assert phenotype_exemplars(adatas)["params"]["chosen_by"].endswith("X_uniqueness")
