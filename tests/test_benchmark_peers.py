"""benchmarks/peers.py: a missing peer is skipped with its reason; medians over repeated runs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def peers(load_benchmark):
    return load_benchmark("peers")


def test_a_peer_without_its_venv_is_skipped_with_the_reason(peers, tmp_path):
    args = argparse.Namespace(mpp=0.5, tile=256, rounds=1, timeout=10)
    out = peers.run_tool(str(tmp_path / "no-venv" / "python"), "print(1)", tmp_path, args)
    assert set(out) == {"skipped"} and "virtual environment is absent" in out["skipped"]
    assert peers._combine([out, out]) == out  # nothing to combine: the reason is kept


def test_repeated_runs_are_combined_by_their_medians(peers):
    runs = [
        {"detect_tile_seconds": s, "detect_tile_cpu_seconds": c, "tiles": 38, "version": "x"}
        for s, c in ((0.3, 0.2), (0.9, 0.25), (0.4, 0.3))
    ]
    out = peers._combine([*runs, {"error": "killed"}])
    assert out["detect_tile_seconds"] == 0.4 and out["detect_tile_cpu_seconds"] == 0.25
    assert out["tiles"] == 38 and out["repeats"] == 3 and out["failed_runs"] == ["killed"]
    assert out["detect_tile_cpu_seconds_runs"] == [0.2, 0.25, 0.3]


def test_ours_times_the_mask_tile_tissue_makes_by_default(
    peers, tmp_path, write_pyramid_tiff, tiny_slide_image
):
    import sys

    img = np.tile(tiny_slide_image(1), (6, 6, 1))  # 2,304 x 3,072: a small pyramidal slide
    slide = write_pyramid_tiff(tmp_path / "s.tif", img, mpp=0.5)
    args = argparse.Namespace(mpp=0.5, tile=256, rounds=1, timeout=300)
    out = peers.run_tool(sys.executable, peers.TOOLS["workbench"], slide, args, ours=str(ROOT))
    assert "error" not in out, out
    # the child checks that tile_tissue's one-call default finds the same tiles; the mask
    # is the stored 8 µm/px level (192 x 144), as tile_tissue chooses it
    assert out["mask_shape"] == [144, 192] and out["tiles"] > 0
    assert out["detect_tile_cpu_seconds"] > 0
