"""benchmarks/cohort_scale.py on a tiny cohort: every part runs and its checks can fail."""

from __future__ import annotations

import json
from collections import Counter

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("cohort_scale")


def test_the_plan_mixes_sizes_keeps_big_slides_drawn_and_copies_the_rest(bench):
    plan = bench.slide_plan(60, 2, (20_000, 512), distinct=12)
    sizes = Counter(tuple(p["size"]) for p in plan)
    assert len(plan) == 60 and sizes[(20_000, 512)] == 2 and len(sizes) == 4
    assert len({p["slide_id"] for p in plan}) == 60
    by_id = {p["slide_id"]: p for p in plan}
    copies = [p for p in plan if "copy_of" in p]
    assert copies and all("copy_of" not in by_id[p["copy_of"]] for p in copies)
    assert all(by_id[p["copy_of"]]["size"] == p["size"] for p in copies)
    assert not any("copy_of" in p for p in plan if tuple(p["size"]) == (20_000, 512))
    assert bench.slide_plan(60, 2, (20_000, 512), distinct=12) == plan  # seeded
    assert not any("copy_of" in p for p in bench.slide_plan(20, 1, (9000, 512)))


def test_slopes_are_fitted_after_the_warm_up_per_process(bench, tmp_path):
    s = bench.Sampler(tmp_path, workers=False)
    pid = s.me.pid
    s.names[pid] = "main"
    # 2 MB per slide after a jump during the first slide (the warm-up, not counted)
    s.samples = [{"done": d, "rss": {pid: 500.0 + 2 * d}, "anon": {}} for d in range(1, 11)]
    s.samples.insert(0, {"done": 0, "rss": {pid: 100.0}, "anon": {}})
    out = s.summary(10)["main"]
    assert out["slope_mb_per_slide"] == pytest.approx(2.0)
    assert out["peak_rss_mb"] == 520.0 and out["peak_rss_anon_mb"] is None


@pytest.mark.slow
def test_a_tiny_cohort_extracts_resumes_after_a_killed_worker_and_is_measured(
    bench, tmp_path, capsys
):
    out = tmp_path / "lines.jsonl"
    argv = [
        "--slides", "6", "--big", "1", "--big-size", "6144x768", "--distinct", "2",
        "--root", str(tmp_path / "root"), "--out", str(out), "--modes", "in-process",
        "--trainer-sizes", "2,4", "--discover-patients", "16", "--discover-regions", "40",
        "--interval", "0.1",
    ]  # fmt: skip
    assert bench.main(argv) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert capsys.readouterr().out.count("\n") == len(lines)
    by_part = {r["part"]: r for r in lines}
    assert set(by_part) == {"slides", "extract", "resume", "trainer", "discover"}
    slides = by_part["slides"]
    assert slides["slides"] == 6 and slides["widest_px"] == 6144 and slides["distinct_images"] < 6

    ext = by_part["extract"]
    assert ext["status"] == {"done": 6} and ext["mode"] == "in-process"
    assert ext["wall_seconds"] > 0 and ext["cpu_seconds"] > 0 and len(ext["load_before"]) == 3
    assert 50 < ext["peak_rss_mb_per_worker"] < 4096
    assert ext["processes"]["main"]["samples"] >= 2

    res = by_part["resume"]
    assert res["killed_worker"] and res["finished"], res
    assert res["compared_with_uninterrupted"] == 6 and res["equal_to_uninterrupted"], res
    assert res["rerun_skips_all"]

    tr = by_part["trainer"]
    assert [(r["slides"], r["on_disk"]) for r in tr["runs"]] == [
        (2, True), (2, False), (4, True), (4, False)
    ]  # fmt: skip
    assert all("error" not in r for r in tr["runs"]), tr
    on, off = tr["runs"][2], tr["runs"][3]
    assert on["cache_mb"] == off["cache_mb"] > tr["runs"][0]["cache_mb"] > 0
    assert on["cache_mapped_mb"] > 0 and off["cache_mapped_mb"] == 0
    assert on["cache_in_memory_mb"] < off["cache_in_memory_mb"] == off["cache_mb"]
    assert "on_disk_cache_in_memory_mb_slope_per_slide" in tr

    disc = by_part["discover"]
    assert "error" not in disc, disc
    assert disc["patients"] == 16 and disc["seconds"] > 0 and disc["peak_rss_mb"] > 0

    # a different plan in the same folder removes the slides of the old one
    root = ["--root", str(tmp_path / "root"), "--out", str(out)]
    assert bench.main(["--slides", "3", "--big", "0", *root, "--parts", "slides"]) == 0
    again = json.loads(out.read_text().splitlines()[-1])
    assert again["slides"] == 3 and again["written_now"] >= 1
