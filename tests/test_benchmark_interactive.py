"""benchmarks/interactive.py: which fold network each leave-one-dataset-out set uses, which
views it is tested on, and the variants it compares."""

from __future__ import annotations

import argparse

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("interactive")


def _args(folds, evals, datasets="ocdc,camelyon,monusac,monuseg,tnbc"):
    return argparse.Namespace(
        real_root=str(folds / "no-data"), folds=str(folds), evals=evals, datasets=datasets,
        quick=True, nucleus_views=4, n_synthetic=2, cohort_root=str(folds / "cohort"),
    )  # fmt: skip


def test_fold_network_of_a_set_held_out_alone_or_with_others(bench, tmp_path):
    (tmp_path / "fold_ocdc.safetensors").write_bytes(b"")
    (tmp_path / "fold_monusac+monuseg+tnbc.safetensors").write_bytes(b"")
    assert bench.fold_weights(tmp_path, "ocdc").name == "fold_ocdc.safetensors"
    for nucleus_set in ("monusac", "monuseg", "tnbc"):
        got = bench.fold_weights(tmp_path, nucleus_set)
        assert got.name == "fold_monusac+monuseg+tnbc.safetensors"
    # No fold for CAMELYON: the expected path comes back, so the benchmark can say what to train.
    assert bench.fold_weights(tmp_path, "camelyon").name == "fold_camelyon.safetensors"


def test_lodo_tests_outside_val_and_validation_skips_sets_held_out_by_the_same_fold(
    bench, tmp_path
):
    (tmp_path / "fold_monusac+monuseg+tnbc.safetensors").write_bytes(b"")
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
