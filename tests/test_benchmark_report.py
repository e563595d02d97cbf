"""benchmarks/slide_inference.py --figure: the table, report and targets read back from JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("slide_inference")


def _summary(task, model, auc, encoder=None, **extra):
    row = {"section": "summary", "task": task, "model": model, "seeds": [0, 1, 2],
           "auc_mean": auc, "auc_sd": 0.01, "auc_ci95": [auc - 0.1, min(1.0, auc + 0.1)],
           "balanced_accuracy_mean": auc, "infer_seconds_per_slide_median": 0.5, **extra}  # fmt: skip
    if encoder:
        row["encoder"] = encoder
    return row


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_reads_every_task_and_encoder_and_marks_missed_targets(bench, tmp_path):
    res = tmp_path / "results"
    old = _summary("detail", "sew", 0.40)
    _write(res / "detail.jsonl", [old, _summary("detail", "sew", 0.48)])  # the last one counts
    _write(
        bench.results_path(tmp_path, "detail", "texture"),
        [
            _summary(
                "detail",
                "sew",
                0.97,
                "texture",
                focus_hit_rate_mean=0.9,
                focus_hit_rate_chance=0.11,
            ),  # fmt: skip
            _summary("detail", "tile_abmil", 0.95, "texture"),
            {
                "section": "targets",
                "task": "detail",
                "encoder": "texture",
                "target_sew_auc_ge_abmil_minus_0.02": True,
                "target_sew_auc_ge_global_plus_0.10": False,
                "sew_auc_minus_global_auc": 0.05,
            },
        ],  # fmt: skip
    )
    _write(res / "speed.jsonl", [{"section": "speed", "slide": "40960x40960",
           "sew_seconds_median": 3.7, "sew_peak_rss_mb_max": 640.0,
           "tile_abmil_seconds_median": 139.0, "tile_abmil_peak_rss_mb_max": 910.0,
           "tile_abmil": [{"tiles": 10445}], "speedup_abmil_over_sew": 37.6}])  # fmt: skip
    assert bench.results_path(tmp_path, "detail").name == "detail.jsonl"
    assert bench.results_path(tmp_path, "detail", "texture").name == "detail_texture.jsonl"
    rows = bench.summary_rows(tmp_path)
    assert [(r["encoder"], r["model"], r["auc_mean"]) for r in rows] == [
        ("builtin", "sew", 0.48),
        ("texture", "sew", 0.97),
        ("texture", "tile_abmil", 0.95),
    ]
    text = bench.report_markdown(
        rows, bench.target_rows(tmp_path), "images/x.png", bench.speed_rows(tmp_path)
    )
    assert "| detail | texture | sew | 0.97 ± 0.01" in text and "0.90 (0.11)" in text
    assert "sew_auc_ge_abmil_minus_0.02: met" in text
    assert "sew_auc_ge_global_plus_0.10: **missed**" in text
    assert "| 40960x40960 | builtin | 3.7 | 0.62 | 139 | 10445 | 0.89 | 37.6x |" in text
    assert "![AUC vs seconds](images/x.png)" in text


def test_vit_speed_figures_extrapolate_abmil_from_its_sample_and_say_so(bench):
    sew = {"seconds": 12.0, "cpu_seconds": 20.0, "peak_rss_mb": 1700.0}
    abmil = {"seconds": 70.0, "cpu_seconds": 130.0, "peak_rss_mb": 1900.0, "tissue_tiles": 6400,
             "sample_tiles": 64, "grid_seconds": 6.0, "grid_cpu_seconds": 2.0,
             "sample_seconds": 64.0, "sample_cpu_seconds": 128.0}  # fmt: skip
    row = bench.vit_speed_figures(sew, abmil, [40960, 40960], threads=2)
    assert row["extrapolated"] is True and row["abmil_tiles_measured"] == 64
    assert row["abmil_s_measured"] == 70.0  # the measured part stays apart
    assert row["abmil_s_extrapolated"] == pytest.approx(6.0 + 64.0 * 100)
    assert row["abmil_cpu_s_extrapolated"] == pytest.approx(2.0 + 128.0 * 100)
    assert row["speedup_abmil_over_sew"] == pytest.approx(6406.0 / 12.0)
    assert row["target_sew_le_20s_2_threads"] is True and row["target_speedup_ge_100"] is True
    # one thread on a small slide: no target flags; a sample covering every tile is no guess
    full = {**abmil, "tissue_tiles": 48, "sample_tiles": 48}
    small = bench.vit_speed_figures({**sew, "seconds": 30.0}, full, [2220, 2967], threads=1)
    assert small["extrapolated"] is False
    assert small["abmil_s_extrapolated"] == pytest.approx(6.0 + 64.0)
    assert not any(k.startswith("target_") for k in small)
    # a failed child leaves its figures out instead of inventing them
    failed = bench.vit_speed_figures({"error": "killed"}, abmil, [40960, 40960], threads=2)
    assert "sew_s" not in failed and "speedup_abmil_over_sew" not in failed


def test_vit_speed_markdown_marks_the_extrapolated_run(bench, tmp_path):
    sew = {"seconds": 12.0, "cpu_seconds": 20.0, "peak_rss_mb": 1700.0, "load_avg_1m_before": 3.0}
    abmil = {"seconds": 70.0, "cpu_seconds": 130.0, "peak_rss_mb": 1900.0, "tissue_tiles": 6400,
             "sample_tiles": 64, "grid_seconds": 6.0, "grid_cpu_seconds": 2.0,
             "sample_seconds": 64.0, "sample_cpu_seconds": 128.0}  # fmt: skip
    row = {"section": "speed_vit", "slide": "40960x40960", "threads": 2, "sew": sew,
           **bench.vit_speed_figures(sew, abmil, [40960, 40960], threads=2)}  # fmt: skip
    path = tmp_path / "speed_uni.jsonl"
    _write(path, [{**row, "threads": 2, "sew_s": 99.0}, row])  # the later line wins
    rows = bench.vit_speed_rows(path)
    text = bench.vit_speed_markdown(rows)
    assert len(rows) == 1 and "| 40960x40960 | 2 | 3.0 | 12.0 (20.0) |" in text
    assert "6,406 (12,802) †" in text and "534x (640x)" in text
    assert "sew_le_20s_2_threads: met" in text
