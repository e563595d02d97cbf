from __future__ import annotations

import json

import pytest

from workbench.cli import build_parser, main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "cohort" in out


def test_bad_size_is_rejected_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--size", "huge"])
    assert exc.value.code == 2
    assert "tiny" in capsys.readouterr().err


def test_demo_runs_then_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["demo", "--out", str(out), "--size", "tiny", "--n-patients", "2", "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_patients"] == 2
    assert all(s["levels"] >= 3 and s["mpp"] == 0.5 for s in summary["slides"])
    assert (out / "montage.png").stat().st_size > 1000
    manifest = json.loads((out / "run.json").read_text())
    assert set(manifest["steps"]) >= {"cohort", "summary"}
    capsys.readouterr()

    before = (out / "summary.json").stat().st_mtime_ns
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().out
    assert (out / "summary.json").stat().st_mtime_ns == before

    (out / "montage.png").unlink()  # a missing output makes its step run again
    assert main(args) == 0
    assert (out / "montage.png").exists()


def test_cohort_command_writes_slides(tmp_path):
    assert main(["cohort", str(tmp_path / "c"), "--n-patients", "1", "--no-progress"]) == 0
    assert (tmp_path / "c" / "clinical.csv").exists()


def test_parser_defaults():
    args = build_parser().parse_args(["demo"])
    assert args.size == "demo" and args.n_patients == 12 and str(args.out) == "runs/demo"
