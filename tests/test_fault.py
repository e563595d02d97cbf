"""``kill -9`` at the worst moments.

1. A child process runs ``tl.extract_cohort`` on two slides and is killed (SIGKILL, no
   clean-up of any kind) after the second slide's file is written to its temporary name and
   before it is renamed into place: the finished slide is intact, the half-saved one is
   invisible to every reader, and a plain rerun removes the leftovers, keeps the finished slide
   and computes the other.
2. The whole demo on a tiny cohort is killed at ten moments spread over all of its steps
   (seeded random delays after each step starts), restarted after each kill, then left to
   finish: its outputs equal those of an uninterrupted run and nothing temporary is left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from workbench.io import PARTIAL_DIR, list_results
from workbench.models import save_checkpoint
from workbench.tl import extract_cohort, read_slides

CHILD = textwrap.dedent(
    """
    import os, sys, time
    flag, model, out, s1, s2 = sys.argv[1:]
    real_replace = os.replace

    def replace_then_hang(src, dst):
        if str(dst).endswith("s2.h5ad"):  # s2 is written, not yet renamed: hang here
            open(flag, "w").close()
            time.sleep(600)
        return real_replace(src, dst)

    os.replace = replace_then_hang
    from workbench.tl import extract_cohort
    extract_cohort({"s1": s1, "s2": s2}, model, out, progress=False)
    """
)


@pytest.fixture
def setup(tmp_path, write_pyramid_tiff, tiny_sew, tiny_slide_image):
    img = tiny_slide_image(5)
    slides = {
        "s1": write_pyramid_tiff(tmp_path / "s1.tif", img, mpp=2.0),
        "s2": write_pyramid_tiff(tmp_path / "s2.tif", np.ascontiguousarray(img[::-1]), mpp=2.0),
    }
    return slides, save_checkpoint(tiny_sew(0), tmp_path / "model"), tmp_path / "out"


def _kill_while_saving(tmp_path, slides, ckpt, out) -> None:
    flag = tmp_path / "saving-s2"
    args = [str(flag), str(ckpt), str(out), str(slides["s1"]), str(slides["s2"])]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env)
    try:
        while not flag.exists():  # a hang guard, not a speed check
            if child.poll() is not None:
                pytest.fail(f"the child ended (code {child.returncode}) before saving s2")
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill_9_while_saving_loses_nothing_and_rerun_resumes(tmp_path, setup):
    slides, ckpt, out = setup
    _kill_while_saving(tmp_path, slides, ckpt, out)

    # The killed run left s1 complete and s2 only as a temporary file in .partial/.
    assert (out / "s1.h5ad").is_file()
    assert not (out / "s2.h5ad").exists()
    leftovers = list((out / PARTIAL_DIR).iterdir())
    assert leftovers and all(p.name.startswith("s2.h5ad") for p in leftovers)
    # No reader mistakes the temporary file for a result.
    assert [p.name for p in list_results(out, "*.h5ad")] == ["s1.h5ad"]
    assert [a.uns["slide_id"] for a in read_slides(out)] == ["s1"]
    before = (out / "s1.h5ad").stat().st_mtime_ns

    # A plain rerun: leftovers removed, s1 kept (same model and settings), s2 computed.
    table = extract_cohort(slides, ckpt, out, progress=False)
    assert dict(zip(table["slide_id"], table["status"], strict=True)) == {
        "s1": "skipped",
        "s2": "done",
    }
    assert (out / "s1.h5ad").stat().st_mtime_ns == before
    assert not (out / PARTIAL_DIR).exists()
    assert sorted(a.uns["slide_id"] for a in read_slides(out)) == ["s1", "s2"]


# ------------------------------------------------------------------------- the whole demo
DEMO = ["demo", "--n-patients", "6", "--epochs", "1", "--no-progress"]
STEPS = ["cohort", "summary", "train", "extract", "evaluate", "refine", "discover", "report"]
#: Kill k happens while step ``KILL_AT[k]`` runs (or while the run starts, when that step
#: is done already): two kills in the cohort step, then at least one in every step.
KILL_AT = [0, 0, 1, 2, 2, 3, 4, 5, 6, 7]
HANG_GUARD_S = 900  # a demo that does not move for this long is stuck: fail, never wait on


def _demo_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", *DEMO, "--out", str(out)]


def _done_steps(out: Path) -> list[str]:
    try:
        return list(json.loads((out / "run.json").read_text())["steps"])
    except (OSError, ValueError, KeyError):
        return []  # no record yet (or one half written by a killed writer: never, atomic)


def _run_to_end(out: Path) -> None:
    done = subprocess.run(_demo_cmd(out), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-3000:]


def _comparable(out: Path) -> dict:
    """What an interrupted run must reproduce exactly (timings and run ids left out)."""
    import anndata as ad
    import pandas as pd

    from workbench.tl import model_fingerprint

    run = json.loads((out / "run.json").read_text())
    # Left out: timings, run ids, and how many slides the last extract run computed itself
    # (after a kill the rerun computes only the slides the killed one had not finished).
    volatile = ("seconds", "run", "after", "computed")
    steps = {
        name: {k: v for k, v in rec.items() if k not in volatile}
        for name, rec in run["steps"].items()
    }
    files = sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() or p.name == ".partial"
    )
    slides = {
        p.name: ad.read_h5ad(p).obs.select_dtypes("number").round(9).to_json(orient="split")
        for p in sorted((out / "slides").glob("*.h5ad"))
    }
    return {
        "steps": steps,
        "files": files,
        "model": model_fingerprint(out / "model"),
        "evaluation": json.loads((out / "evaluation.json").read_text()),
        "refine": json.loads((out / "refine.json").read_text()),
        # as JSON text: NaN (an untestable marker) compares equal to NaN there
        "markers": pd.read_csv(out / "markers.csv", index_col=0).round(9).to_json(orient="split"),
        "slides": slides,
    }


@pytest.mark.slow
def test_demo_killed_at_ten_moments_finishes_as_if_never_interrupted(tmp_path):
    reference, faulty = tmp_path / "reference", tmp_path / "faulty"
    _run_to_end(reference)

    rng = random.Random(20261202)
    kills = []
    for target in KILL_AT:
        child = subprocess.Popen(
            _demo_cmd(faulty), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            start = time.monotonic()
            # Wait until the target step is running (every step before it recorded) …
            while len(_done_steps(faulty)) < target and child.poll() is None:
                assert time.monotonic() - start < HANG_GUARD_S, "the demo stopped moving"
                time.sleep(0.05)
            # … then kill it a random moment later: inside that step, or at its very end.
            time.sleep(rng.uniform(0.0, 4.0))
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                kills.append((target, len(_done_steps(faulty))))
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
    assert len(kills) >= 8, f"too few kills landed: {kills}"
    assert {at for at, _ in kills} >= set(range(len(STEPS) - 1)), kills  # every step hit

    _run_to_end(faulty)  # the plain rerun a user would make
    assert not list(faulty.rglob(".partial")), "temporary files were left behind"
    got, want = _comparable(faulty), _comparable(reference)
    for key in want:
        assert got[key] == want[key], f"{key} differs after the kills {kills}"
