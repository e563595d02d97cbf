"""benchmarks/interactive.py: which fold network each leave-one-dataset-out set uses, which
views it is tested on, and the variants it compares."""

from __future__ import annotations

import argparse

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("interactive")


def _args(
    folds, evals, datasets="ocdc,camelyon,monusac,monuseg,tnbc", sequential="ebhi_serrated,ebhi"
):
    return argparse.Namespace(
        real_root=str(folds / "no-data"), folds=str(folds), evals=evals, datasets=datasets,
        quick=True, nucleus_views=4, n_synthetic=2, cohort_root=str(folds / "cohort"),
        sequential_sets=sequential,
    )  # fmt: skip


def test_fold_network_of_a_set_held_out_alone_or_with_others(bench, tmp_path):
    (tmp_path / "fold_ocdc").mkdir()  # fold networks are checkpoint folders
    (tmp_path / "fold_monusac+monuseg+tnbc").mkdir()
    (tmp_path / "fold_tnbc.log").write_text("")  # a file is never a fold network
    assert bench.fold_weights(tmp_path, "ocdc").name == "fold_ocdc"
    for nucleus_set in ("monusac", "monuseg", "tnbc"):
        got = bench.fold_weights(tmp_path, nucleus_set)
        assert got.name == "fold_monusac+monuseg+tnbc"
    # No fold for CAMELYON: the expected path comes back, so the benchmark can say what to train.
    assert bench.fold_weights(tmp_path, "camelyon").name == "fold_camelyon"


def test_lodo_tests_outside_val_and_validation_skips_sets_held_out_by_the_same_fold(
    bench, tmp_path
):
    (tmp_path / "fold_monusac+monuseg+tnbc").mkdir()
    sets = bench.eval_sets(_args(tmp_path, "lodo,val"))
    lodo = {s["eval"]: s for s in sets if s["eval"].startswith("lodo:")}
    assert set(lodo) == {f"lodo:{d}" for d in ("ocdc", "camelyon", "monusac", "monuseg", "tnbc")}
    assert all(s["role"] == "test" and "outside its val part" in s["source"] for s in lodo.values())
    val = [s["eval"] for s in sets if s["role"] == "validation"]
    # The nucleus fold never validates on another nucleus set it was not trained on.
    assert "val:monuseg:ocdc" in val and "val:monuseg:tnbc" not in val
    assert "val:ocdc:camelyon" in val and "val:ocdc:monusac" in val


def test_old_fixed_disk_gate_is_a_benchmark_variant(bench):
    from workbench.interactive import RefinementEngine
    from workbench.models import ClickSegmenter

    model = ClickSegmenter(extra_channels=3, widths=(8, 16, 16), feature_channels=8)
    old = bench.make_engine("cgam_fixed_disk", model, rw_work=64)
    new = bench.make_engine("cgam", model, rw_work=64)
    assert isinstance(old, RefinementEngine) and old.method == new.method == "cgam"
    assert old.adaptive_disk == 0.0 and old.locality_weight == 1.0
    assert new.adaptive_disk > 0.0 and new.max_loss_radius > new.loss_radius


def test_sets_mixing_one_lesion_and_fragmented_masks_are_also_summarised_apart(bench):
    import numpy as np

    from workbench.models import ClickSegmenter

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    one = np.zeros((48, 48), bool)
    one[10:30, 10:30] = True
    pieces = np.zeros((48, 48), bool)
    pieces[4:14, 4:14] = pieces[30:40, 30:40] = pieces[4:14, 30:40] = True
    assert bench.largest_object_share(one) == 1.0
    assert abs(bench.largest_object_share(pieces) - 1 / 3) < 1e-9
    model = ClickSegmenter(extra_channels=3, widths=(8, 16, 16), feature_channels=8)
    views = [("a", image, one), ("b", image, pieces), ("c", image, one)]
    out = bench.run("none", views, model=model.eval(), max_clicks=3, rw_work=32)
    assert out["n_views"] == 3
    assert out["one_object"]["n_views"] == 2 and out["fragmented"]["n_views"] == 1
    assert len(out["fragmented"]["miou@1,3,5,10,20"]) == 2  # clicks 1 and 3 of 3
    # A set of one kind only carries no split.
    assert "one_object" not in bench.run("none", views[::2], model=model, max_clicks=2, rw_work=32)


def test_mean_dice_follows_iou_per_view_and_curves_are_read_at_1_3_5_10_20(bench):
    runs = [{"ious": [0.0, 0.5, 1.0]}, {"ious": [1.0, 1.0, 1.0]}]
    # Dice of IoU 0.5 is 2/3: the mean over views, not the Dice of the mean IoU.
    assert bench.mean_dice_per_click(runs) == [0.5, round((2 / 3 + 1) / 2, 4), 1.0]
    assert bench.mean_dice_per_click([]) == []
    curve = [round(0.05 * k, 2) for k in range(1, 21)]
    assert bench.at_clicks(curve) == [0.05, 0.15, 0.25, 0.5, 1.0]
    assert bench.at_clicks(curve[:4]) == [0.05, 0.15]


def test_ebhi_sets_test_unseen_cases_and_the_held_out_class(bench, tmp_path):
    sets = bench.eval_sets(_args(tmp_path, "indomain,loco,sequential", datasets="ebhi"))
    by_name = {s["eval"]: s for s in sets}
    assert set(by_name) == {
        "indomain:ebhi",
        "loco:ebhi_serrated",
        "sequential:ebhi_serrated",
        "sequential:ebhi",
    }
    assert all(s["role"] == "test" and s["weights"] is None for s in sets)
    assert "held out of training" in by_name["loco:ebhi_serrated"]["source"]
    assert by_name["sequential:ebhi"].get("protocol") == "sequential"
    assert "protocol" not in by_name["indomain:ebhi"]
    # The sequential protocol also runs on the other real sets' test parts.
    more = bench.eval_sets(_args(tmp_path, "sequential", sequential="ocdc,monuseg,ebhi_stroma"))
    assert [s["eval"] for s in more] == [
        "sequential:ocdc",
        "sequential:monuseg",
        "sequential:ebhi_stroma",
    ]
    with pytest.raises(SystemExit, match="unknown sequential set"):
        bench.eval_sets(_args(tmp_path, "sequential", sequential="glas"))


class _CountingEngine:
    """A stand-in engine: a square around each positive click (bigger once taught), and a
    record of what it was taught."""

    def __init__(self):
        self.taught: list[int] = []
        self.boost = 0

    def set_view(self, image):
        import numpy as np

        self.pred = np.zeros(image.shape[:2], bool)
        return self.pred

    def add_click(self, x, y, positive=True):
        r = 4 + 4 * self.boost  # a taught engine takes bigger steps
        if positive:
            self.pred[max(int(y) - r, 0) : int(y) + r, max(int(x) - r, 0) : int(x) + r] = True
        else:
            self.pred[max(int(y) - 2, 0) : int(y) + 2, max(int(x) - 2, 0) : int(x) + 2] = False
        return self.pred.copy()

    def adapt(self, image, mask, **kwargs):
        self.taught.append(int(mask.sum()))
        self.boost = 1
        return {"steps": 3, "seconds": 0.01, "cpu_seconds": 0.02, "accepted": True}

    def reset_adaptation(self):
        self.boost = 0

    def adaptation_state(self):
        return {"boost": self.boost}

    def load_adaptation(self, state):
        self.boost = 0 if state is None else state["boost"]


def test_sequential_protocol_adapts_after_each_view_and_scores_the_second_half(bench, monkeypatch):
    import numpy as np

    engines = []

    def fake_engine(method, model, *, rw_work, threads=1):
        engines.append(_CountingEngine())
        return engines[-1]

    monkeypatch.setattr(bench, "make_engine", fake_engine)
    image = np.zeros((32, 32, 3), np.uint8)
    views = []
    for k in range(5):
        gt = np.zeros((32, 32), bool)
        gt[4 : 22 + k, 4:28] = True
        views.append((f"v{k}", image, gt))
    out = bench.sequential("cgam", views, model=None, max_clicks=8, rw_work=32, orders=2)
    taught = [e.taught for e in engines]
    sizes = [int(gt.sum()) for _, _, gt in views]
    assert taught[0] == []  # the packaged engine of the baseline is never taught
    assert taught[1] == sizes  # order 0: the views as given
    assert sorted(taught[2]) == sorted(sizes) and len(taught) == 3  # order 1: a permutation
    plain, adapted = out["baseline"], out["adapted"]
    assert plain["n_views"] == adapted["n_views"] == 6  # views 3-5 of 5, in each of 2 orders
    assert len(adapted["mdice_per_click"]) == 8
    assert out["adapt"] == {
        "calls": 10,
        "accepted_share": 1.0,
        "mean_steps": 3.0,
        "cpu_seconds_median": 0.02,
        "cpu_seconds_max": 0.02,
    }
    assert [p["order"] for p in out["per_order"]] == [0, 1]
    # the second half is scored after teaching: the taught engine's bigger steps show there
    assert adapted["miou_per_click"][0] > plain["miou_per_click"][0] + 0.3
    assert adapted["miou_per_click"][2] > plain["miou_per_click"][2]
    paired = out["paired"]
    assert paired["d_miou5"] >= 0 and paired["d_noc85"] <= 0
    lo, hi = paired["d_noc85_ci95"]
    assert lo <= paired["d_noc85"] <= hi


def test_bootstrap_interval_brackets_the_mean(bench):
    lo, hi = bench.bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert bench.bootstrap_ci([2.0, 2.0]) == [2.0, 2.0]


def test_sequential_protocol_needs_an_engine_that_adapts(bench, monkeypatch):
    import numpy as np

    monkeypatch.setattr(bench, "make_engine", lambda *a, **k: object())
    view = ("v", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), bool))
    with pytest.raises(SystemExit, match="no adapt"):
        bench.sequential("random_walker", [view], model=None, max_clicks=2, rw_work=8)


def test_benchmark_engines_run_with_the_thread_count_they_are_given(bench):
    from workbench.models import ClickSegmenter

    model = ClickSegmenter(extra_channels=3, widths=(8, 16, 16), feature_channels=8)
    assert bench.make_engine("cgam", model, rw_work=64, threads=2).threads == 2
    assert bench.make_engine("random_walker", None, rw_work=64).threads == 1


def test_all_like_this_and_local_corrections_are_benchmark_variants(bench):
    from workbench.models import ClickSegmenter

    model = ClickSegmenter(extra_channels=3, widths=(8, 16, 16), feature_channels=8)
    default = bench.make_engine("cgam", model, rw_work=64)
    assert default.propagate == "one" and not default.local_corrections
    assert bench.make_engine("cgam_all", model, rw_work=64).propagate == "all"
    assert bench.make_engine("none_all", model, rw_work=64).method == "none"
    local = bench.make_engine("cgam_local", model, rw_work=64)
    assert local.local_corrections and local.propagate == "one"
