"""The README quotes the demo run's figures through tools/build_readme_figures.py, so they
cannot drift from the run they describe."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location(
        "build_readme_figures", ROOT / "tools" / "build_readme_figures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path) -> Path:
    per_slide = [
        {"slide": f"S{i}", "grade": 3, "focus_in_lesion": 3 + (i % 2), "n_focus": 4}
        for i in range(4)
    ]
    (tmp_path / "evaluation.json").write_text(json.dumps({
        "n_test": 4, "models": {"sew": {"auc": 0.875, "accuracy": 0.75}},
        "per_slide": per_slide,
    }))  # fmt: skip
    (tmp_path / "refine.json").write_text(json.dumps({"iou_per_click": [0.1, 0.5, 0.6, 0.9]}))
    return tmp_path


def test_sentences_come_from_the_run(tool, tmp_path):
    sentences = tool.run_sentences(_run(tmp_path))
    assert sentences["explain"] == (
        "On the 4 held-out slides of the default run: AUC 0.88, accuracy 0.75, and 14 of 16 "
        "focus regions (0.88) centred in a true lesion."
    )
    assert sentences["refine"] == (
        "IoU with the true lesion 0.10 → 0.50 after one click, 0.90 after 3"
    )


def test_rewrite_replaces_only_the_marked_blocks(tool, tmp_path):
    text = (
        "a <!-- run:explain -->old<!-- /run:explain --> b <!-- run:refine -->x<!-- /run:refine -->"
    )
    out = tool.rewrite_readme(text, tool.run_sentences(_run(tmp_path)))
    assert out.startswith("a <!-- run:explain -->On the 4 held-out") and " b " in out
    with pytest.raises(SystemExit, match="run:refine"):
        tool.rewrite_readme("no markers here <!-- run:explain --><!-- /run:explain -->",
                            {"refine": "x"})  # fmt: skip


def test_readme_holds_every_marked_block(tool):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("explain", "refine"):
        assert re.search(rf"<!-- run:{name} -->.+?<!-- /run:{name} -->", text, re.S), name
