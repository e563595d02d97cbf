"""benchmarks/tune_cgam_disk.py: its variants are engine settings, and ``--summarize`` pools
the lines of separate runs on the sets every variant shares."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tune(load_benchmark):
    return load_benchmark("tune_cgam_disk")


def test_every_variant_builds_an_engine(tune):
    import numpy as np

    from workbench.interactive import RefinementEngine
    from workbench.models import ClickSegmenter

    model = ClickSegmenter(extra_channels=3, widths=(8, 16, 16), feature_channels=8)
    engines = {name: tune.make_engine(model, kw) for name, kw in tune.VARIANTS.items()}
    assert all(isinstance(e, RefinementEngine) for e in engines.values())
    assert engines["none"].method == "none" and engines["fixed"].adaptive_disk == 0.0
    assert engines["conf0"].disk_confidence == 0.0 and engines["stop2"].disk_stop == 2.0
    assert engines["from3"].disk_grow_from == 3 and engines["cgam"].disk_stop is None
    # the response-gated variant runs clicks (its hook replaces the confidence test)
    engine = engines["resp2"]
    rng = np.random.default_rng(0)
    engine.set_view(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    engine.add_click(10, 10, True)
    engine._view.history[-1].work_mask[:] = False
    engine._view.history[-1].work_mask[5:8, 5:8] = True
    engine.add_click(50, 50, True)
    assert engine.last_disk_grown in (True, False)


def test_summarize_pools_only_the_sets_every_variant_has(tune, tmp_path):
    def line(network, set_name, variant, n, noc, fails):
        return {"network": network, "set": set_name, "variant": variant, "n_views": n,
                "noc85": noc, "failures85": fails}  # fmt: skip

    first = tmp_path / "a.jsonl"
    second = tmp_path / "b.jsonl"
    first.write_text(
        "\n".join(
            json.dumps(x)
            for x in (
                line("net", "s1", "cgam", 10, 4.0, 1),
                line("net", "s2", "cgam", 30, 8.0, 2),
                line("net", "s3", "cgam", 5, 1.0, 0),
                {"network": "net", "pooled": "cgam", "n_views": 45},  # not a per-set line
            )
        )
    )
    second.write_text(
        "\n".join(
            json.dumps(x)
            for x in (
                line("net", "s1", "fixed", 10, 2.0, 0),
                line("net", "s2", "fixed", 30, 6.0, 3),
            )
        )
    )
    out = {row["summary"]: row for row in tune.summarize([str(first), str(second)])}
    assert out["cgam"]["sets"] == ["s1", "s2"]  # s3 has no "fixed" line: left out
    assert out["cgam"]["n_views"] == 40 and out["cgam"]["noc85"] == pytest.approx(7.0)
    assert out["fixed"]["noc85"] == pytest.approx(5.0) and out["fixed"]["failures85"] == 3
