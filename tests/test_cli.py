from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from workbench._demo import held_out_slides
from workbench._steps import training_record
from workbench.cli import build_parser, main


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "cohort" in out


def test_bad_size_is_rejected_with_the_choices(capsys):
    assert main(["demo", "--size", "huge"]) == 2
    err = capsys.readouterr().err
    assert "tiny" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_runs_end_to_end_then_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["demo", "--out", str(out), "--n-patients", "9", "--epochs", "2", "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_patients"] == 9
    assert all(s["levels"] >= 3 and s["mpp"] == 0.5 for s in summary["slides"])
    assert (out / "montage.png").stat().st_size > 1000
    manifest = json.loads((out / "run.json").read_text())
    steps = ["cohort", "summary", "train", "extract", "evaluate", "refine", "discover", "report"]
    assert list(manifest["steps"]) == steps
    assert (out / "model" / "model.safetensors").exists()
    assert not (out / "training.json").exists()  # the record lives in the checkpoint only
    training = training_record(out / "model")
    test = held_out_slides(out)
    assert test == training["held_out_slides"] and not set(training["train_slides"]) & set(test)
    assert len(training["train_slides"]) + len(test) == 9
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["n_test"] == len(test) >= 3
    assert 0.0 <= evaluation["focus_hit_rate"] <= 1.0
    assert len(list((out / "slides").glob("*.h5ad"))) == 9
    refine = json.loads((out / "refine.json").read_text())
    assert refine["slide_id"] in set(test)
    assert training["label"] == "grade_group" and training["classes"][-1] == "high grade (3)"
    clinical = (out / "clinical.csv").read_text()  # the label column, written as a user would
    assert "grade_group" in clinical.splitlines()[0]
    assert len(refine["iou_per_click"]) == refine["n_clicks"] + 1
    assert refine["iou_per_click"][-1] > refine["iou_per_click"][0]
    assert (out / refine["geojson"]).exists()
    refined = ad.read_h5ad(out / "slides" / f"{refine['slide_id']}.h5ad")
    assert "lesion_refined" in refined.obs and refined.obs["lesion_refined"].any()
    discovery = ad.read_h5ad(out / "discovery.h5ad")
    assert "survival_screen" in discovery.uns and discovery.n_obs == 9
    html = (out / "report.html").read_text()
    assert "Candidate markers" in html and "data:image/png;base64," in html
    capsys.readouterr()

    before = (out / "report.html").stat().st_mtime_ns
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.count("skipped") == len(steps)
    assert (out / "report.html").stat().st_mtime_ns == before

    # A lost per-slide result is recomputed, and every step after it reruns on the new inputs.
    victim = sorted((out / "slides").glob("*.h5ad"))[0]
    refined = f"{refine['slide_id']}.h5ad"  # rewritten by the refine step when it reruns
    others = {
        p.name: p.stat().st_mtime_ns
        for p in (out / "slides").glob("*.h5ad")
        if p != victim and p.name != refined
    }
    victim.unlink()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "[train] done already" in text
    for step in ["extract", "evaluate", "refine", "discover", "report"]:
        assert f"[{step}] running" in text
    assert victim.exists()
    assert {n: (out / "slides" / n).stat().st_mtime_ns for n in others} == others  # kept


def test_cohort_command_writes_slides(tmp_path):
    assert main(["cohort", str(tmp_path / "c"), "--n-patients", "1", "--no-progress"]) == 0
    assert (tmp_path / "c" / "clinical.csv").exists()


def test_parser_defaults():
    args = build_parser().parse_args(["demo"])
    assert args.size == "tiny" and args.n_patients == 36 and args.epochs == 16
    assert str(args.out) == "runs/demo"


@pytest.mark.slow
def test_train_extract_discover_report_commands(tiny_cohort, tmp_path, capsys):
    root = tiny_cohort.root
    model = tmp_path / "model"
    clinical = str(root / "clinical.csv")  # its slide column holds paths: accepted
    train = ["train", str(root / "slides"), "--clinical", clinical, "--label", "grade",
             "--annotations", str(root / "annotations"), "--out", str(model), "--epochs", "1",
             "--no-progress"]  # fmt: skip
    assert main(train) == 0
    assert "predict 'grade' (1, 2, 3)" in capsys.readouterr().out
    assert (model / "model.safetensors").exists() and (model / "config.json").exists()
    assert [str(c) for c in training_record(model)["classes"]] == ["1", "2", "3"]
    assert not (model / "training.json").exists()

    slides = tmp_path / "slides"
    args = ["extract", str(root / "slides"), "--model", str(model), "--out", str(slides)]
    assert main([*args, "--no-progress"]) == 0
    assert len(list(slides.glob("*.h5ad"))) == len(tiny_cohort.clinical)
    capsys.readouterr()
    assert main([*args, "--no-progress"]) == 0
    assert "'skipped': 6" in capsys.readouterr().out
    missing = ["extract", str(tmp_path / "missing.svs"), "--model", str(model), "--out",
               str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert main(missing) == 2  # a mistake in the command: one line, exit code 2
    assert "no slide file or folder" in capsys.readouterr().err
    (tmp_path / "broken.svs").write_bytes(b"not a slide")  # a slide that fails: exit code 1
    broken = ["extract", str(tmp_path / "broken.svs"), "--model", str(model), "--out",
              str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert main(broken) == 1
    err = capsys.readouterr().err
    assert "failed broken" in err and "Traceback" not in err

    assert main(["discover", str(slides), clinical, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "markers.csv").read_text().count("\n") > 5
    assert ad.read_h5ad(tmp_path / "discovery.h5ad").n_obs == len(tiny_cohort.clinical)

    assert main(["report", str(tmp_path), "--time-unit", "days"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "Candidate markers" in html and "median follow-up (days)" in html
    assert "closest to the phenotype's average" in html  # the gallery, from discovery.h5ad


#: uns["explain"] keys every model kind writes (tl.extract).
EXPLAIN_KEYS = {"kind", "model", "region_score", "label", "class_names", "probabilities",
                "raw_probabilities", "temperature", "global_probabilities", "predicted_class",
                "predicted_label", "slide", "stain", "encoder", "lesion_threshold", "focus",
                "applicability"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sew", "global", "abmil"])
def test_every_kind_trains_extracts_and_reports_from_the_command_line(
    kind, tiny_cohort, tmp_path, capsys
):
    root = tiny_cohort.root
    run = tmp_path / "run"
    train = ["train", str(root / "slides"), "--clinical", str(root / "clinical.csv"),
             "--label", "grade", "--kind", kind, "--out", str(run / "model"), "--epochs", "1",
             "--set", "thumbnail_mpp=8", "--set", "n_segments=200", "--set", "crop_size=48",
             "--set", "detail_mpp=2",
             "--no-progress"]  # fmt: skip
    if kind == "sew":  # the detail branch confirms the focus among 6 proposals
        train += ["--confirm-candidates", "6", "--confirm-by", "evidence"]
    assert main(train) == 0
    assert capsys.readouterr().out.startswith(f"{kind} model trained on 6 slides")
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["kind"] == kind
    if kind == "sew":
        from workbench.models import load_checkpoint

        config = load_checkpoint(run / "model").config
        assert config["confirm_candidates"] == 6 and config["confirm_by"] == "evidence"
    extract = ["extract", str(root / "slides"), "--model", str(run / "model"), "--out",
               str(run / "slides"), "--no-progress"]  # fmt: skip
    assert main(extract) == 0
    assert "'done': 6" in capsys.readouterr().out
    a = ad.read_h5ad(run / "slides" / "S001.h5ad")
    ex = a.uns["explain"]
    assert set(ex) == EXPLAIN_KEYS and ex["kind"] == kind
    assert a.obs["is_focus"].sum() == len(ex["focus"]["obs_index"]) >= 1
    assert np.isfinite(a.obs["focus_score"]).all() and "X_focus" in a.obsm
    assert np.isnan(a.obs["lesion_prob"]).all() == (kind != "sew")
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "6 slides explained" in html and "S001" in html and "data:image/png;base64," in html
    assert (f"{kind} model; heat map" in html) == (kind != "sew")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--label", "stage"], "no label column 'stage'"),
        (["--label", "grade", "--encoder", "uni"], "unknown encoder 'uni'"),
        (["--label", "grade", "--encoder", "nope/enc.pt2"], "no encoder file"),
        (
            ["--label", "grade", "--kind", "global", "--confirm-candidates", "6"],
            "--confirm-candidates/--confirm-by is for --kind sew",
        ),  # fmt: skip
        (
            ["--label", "grade", "--kind", "abmil", "--confirm-by", "evidence"],
            "--confirm-candidates/--confirm-by is for --kind sew",
        ),  # fmt: skip
        (
            ["--label", "grade", "--risk-focus", "raise"],
            "--risk-focus is for --survival with --kind sew",
        ),  # fmt: skip
    ],
)
def test_train_command_explains_bad_inputs(tiny_cohort, tmp_path, capsys, extra, message):
    root = tiny_cohort.root
    args = ["train", str(root / "slides"), "--clinical", str(root / "clinical.csv"),
            "--out", str(tmp_path / "m"), "--no-progress", *extra]  # fmt: skip
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_train_command_stores_its_label_smoothing_in_the_checkpoint(tiny_cohort, tmp_path, capsys):
    root = tiny_cohort.root
    out = tmp_path / "m"
    args = ["train", str(root / "slides"), "--clinical", str(root / "clinical.csv"),
            "--label", "grade", "--kind", "global", "--epochs", "1", "--label-smoothing", "0.15",
            "--set", "thumbnail_mpp=8", "--set", "n_segments=60", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert json.loads((out / "config.json").read_text())["extra"]["label_smoothing"] == 0.15


def test_train_command_rejects_bad_option_values(tmp_path, capsys):
    (tmp_path / "c.csv").write_text("slide,y\nS1,a\n")
    base = ["train", str(tmp_path), "--clinical", str(tmp_path / "c.csv"), "--label", "y"]
    for bad, phrase in (
        (["--validation", "1.5"], "between 0 and 1"),
        (["--mpp", "S1=abc"], "mpp"),
        (["--kind", "vit"], "invalid choice: 'vit' (choose from 'sew', 'global', 'abmil')"),
        (["--label-smoothing", "1.5"], "must be at least 0 and below 1"),
        (["--label-smoothing", "-0.1"], "must be at least 0 and below 1"),
        (["--label-smoothing", "some"], "not a number: 'some'"),
        (["--risk-focus", "up"], "invalid choice: 'up' (choose from 'two-sided', 'raise')"),
    ):
        assert main([*base, *bad]) == 2
        err = capsys.readouterr().err
        assert phrase in err and len(err.strip().splitlines()) == 1


def test_preprocessing_options_are_the_dataclass_fields(tmp_path, capsys):
    import dataclasses

    from workbench.cli import _settings_given
    from workbench.pp import Preprocessing

    (tmp_path / "c.csv").write_text("slide,y\nS1,a\n")
    base = ["train", str(tmp_path), "--clinical", str(tmp_path / "c.csv"), "--label", "y"]
    parser = build_parser()
    args = parser.parse_args([*base, "--n-segments", "60", "--thumbnail-max-px", "none",
                              "--set", "crop_size=32", "--set", "n_segments=10"])  # fmt: skip
    assert _settings_given(args) == {"crop_size": 32, "n_segments": 60, "thumbnail_max_px": None}
    assert _settings_given(parser.parse_args(base)) == {}  # nothing given: nothing overridden
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(Preprocessing):
        if f.name == "stain":  # --stain fits one; its dict is no command-line value
            continue
        option = f"--{f.name.replace('_', '-')}"
        assert option in help_text and Preprocessing.describe(f.name) in help_text
    for bad, phrase in (
        (["--n-segments", "1"], "n_segments must be a whole number from 2 to 1000000"),
        (["--crop-size", "abc"], "crop_size needs a number, got 'abc'"),
        (["--set", "min_tissue=2"], "min_tissue must be a number in [0, 1]"),
        (["--set", "stain=x"], "KEY one of thumbnail_mpp"),
    ):
        assert main([*base, *bad]) == 2
        err = capsys.readouterr().err
        assert phrase in err and len(err.strip().splitlines()) == 1


def test_report_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "workbench demo" in capsys.readouterr().err


@pytest.mark.slow
def test_train_and_extract_with_a_pt2_encoder(tmp_path, capsys, he_like_image, write_pyramid_tiff):
    import shutil

    import pandas as pd
    import torch

    from workbench.models import export_encoder

    rows = []
    for i in range(4):
        img = he_like_image if i % 2 else np.ascontiguousarray(he_like_image[:, ::-1])
        if i % 2:
            img = img.copy()
            img[150:220, 200:280] = (60, 30, 110)  # a dark core in class "b"
        write_pyramid_tiff(tmp_path / "slides" / f"s{i}.tif", img, mpp=2.0)
        rows.append({"patient_id": f"p{i}", "slide": f"s{i}.tif", "y": "ab"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 8, stride=8)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    torch.manual_seed(0)
    enc = export_encoder(Net(), tmp_path / "enc.pt2", input_size=32, mpp=4.0, name="net")
    small = ["--set", "thumbnail_mpp=4", "--set", "n_segments=60", "--epochs", "2", "--no-progress"]
    train = ["train", str(tmp_path / "slides"), "--clinical", str(tmp_path / "c.csv"),
             "--label", "y", "--encoder", str(enc), "--out", str(tmp_path / "m"), *small]  # fmt: skip
    assert main(train) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert config["encoder"]["name"] == "net" and config["encoder"]["source"] == "file"
    assert config["preprocessing"]["crop_size"] == 32 and config["preprocessing"]["detail_mpp"] == 4
    capsys.readouterr()
    extract = ["extract", str(tmp_path / "slides"), "--model", str(tmp_path / "m"), "--no-progress"]
    assert main([*extract, "--out", str(tmp_path / "o1")]) == 0  # the recorded .pt2 is found
    assert ad.read_h5ad(tmp_path / "o1" / "s1.h5ad").uns["explain"]["encoder"] == "net"
    moved = tmp_path / "elsewhere.pt2"
    shutil.move(enc, moved)
    assert main([*extract, "--out", str(tmp_path / "o2")]) == 2
    assert "pass it" in capsys.readouterr().err
    assert main([*extract, "--out", str(tmp_path / "o2"), "--encoder", str(moved)]) == 0


@pytest.mark.slow
def test_train_cross_validation_reports_pooled_figures_and_progress_lines(
    tmp_path, capsys, he_like_image, write_pyramid_tiff
):
    import pandas as pd

    rows = []
    for i in range(8):  # 8 one-slide patients: 4 "a" (plain), 4 "b" (a dark core)
        img = he_like_image.copy()
        if i % 2:
            img[150:220, 200:280] = (60, 30, 110)
        write_pyramid_tiff(tmp_path / "slides" / f"s{i}.tif", img, mpp=2.0)
        rows.append({"patient_id": f"p{i}", "slide": f"s{i}", "y": "ab"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    small = ["--set", "thumbnail_mpp=4", "--set", "n_segments=60", "--set", "detail_mpp=4",
             "--set", "crop_size=32", "--epochs", "2", "--no-progress"]  # fmt: skip
    train = ["train", str(tmp_path / "slides"), "--clinical", str(tmp_path / "c.csv"),
             "--label", "y", "--kind", "global", "--folds", "4", "--repeats", "2",
             "--out", str(tmp_path / "m"), *small]  # fmt: skip
    with pytest.warns(Warning):  # thin folds (1 patient of a class each) are named
        assert main(train) == 0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert "cross-validation, 4 folds x 2 repeat(s), 8 slides of 8 patients: pooled " in out
    assert "out-of-fold AUC" in out and "balanced accuracy" in out
    assert out.count("  repeat ") == 8  # the per-fold table: 4 folds x 2 repeats
    # progress lines with --no-progress: one per fold and per epoch, on stderr
    assert "train: repeat 2/2 fold 4/4: " in err
    assert "train: repeat 1/2 fold 1/4 epoch 1/2: loss" in err
    assert "train: final model epoch" in err
    oof = pd.read_csv(tmp_path / "m" / "oof_predictions.csv")
    assert len(oof) == 16 and set(oof["fold"]) == {1, 2, 3, 4} and set(oof["repeat"]) == {1, 2}
    record = training_record(tmp_path / "m")
    assert record["cv_summary"]["folds"] == 4 and record["final_model"]["fit_on"] == "all patients"
    assert record["oof_predictions"] == "oof_predictions.csv"


@pytest.mark.parametrize("command", ["train", "extract", "discover"])
def test_every_command_that_reads_a_table_takes_the_column_options(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "clinical table columns" in text
    for option in ("--slide-key", "--patient-key", "--duration-key", "--event-key"):
        assert option in text
    assert "--patient-col" not in text  # the old spelling still works, unlisted


def test_discover_names_a_missing_column_in_one_line(tmp_path, capsys):
    import anndata

    from workbench.io import write_h5ad

    write_h5ad(anndata.AnnData(np.zeros((2, 1))), tmp_path / "h5ad" / "S1.h5ad")
    (tmp_path / "c.csv").write_text("case,slide,months,dead\n007,S1,5,1\n")
    args = ["discover", str(tmp_path / "h5ad"), str(tmp_path / "c.csv"), "--out",
            str(tmp_path / "o")]  # fmt: skip
    for extra, column in (([], "patient_id"), (["--patient-key", "nope"], "nope")):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert f"'{column}'" in err and "--patient-key" in err
    assert main([*args, "--patient-key", "case"]) == 2  # no survival under the default names
    err = capsys.readouterr().err
    assert (
        len(err.strip().splitlines()) == 1 and "needs survival" in err and "--duration-key" in err
    )
    assert main([*args, "--patient-key", "case", "--duration-key", "months"]) == 2
    err = capsys.readouterr().err
    assert "has 'months' but not 'event'" in err and "--event-key" in err


@pytest.mark.slow
def test_train_survival_then_extract_writes_risk_and_mistakes_are_one_line(
    tiny_cohort, tmp_path, capsys
):
    root = tiny_cohort.root
    base = ["train", str(root / "slides"), "--out", str(tmp_path / "m"), "--epochs", "1",
            "--set", "n_segments=60", "--set", "crop_size=32", "--no-progress"]  # fmt: skip
    clinical = ["--clinical", str(root / "clinical.csv")]
    assert main([*base, *clinical, "--survival", "time,event"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sew survival model trained on 6 slides") and "shorter survival" in out
    assert (
        json.loads((tmp_path / "m" / "config.json").read_text())["extra"]["survival"]["event_key"]
        == "event"
    )
    extract = ["extract", str(root / "slides"), "--model", str(tmp_path / "m"),
               "--out", str(tmp_path / "x"), "--no-progress"]  # fmt: skip
    assert main(extract) == 0
    ex = ad.read_h5ad(tmp_path / "x" / "S001.h5ad").uns["explain"]
    assert ex["target"] == "survival" and np.isfinite(ex["risk"]) and "probabilities" not in ex
    capsys.readouterr()
    none = tmp_path / "no_events.csv"
    pd.read_csv(root / "clinical.csv").assign(event=0).to_csv(none, index=False)
    for extra, message in [
        ([*clinical, "--survival", "os,event"], "no survival column 'os'"),
        (["--clinical", str(none), "--survival", "time,event"], "no events in 'event'"),
        ([*clinical, "--survival", "time"], "--survival takes two columns"),
        ([*clinical, "--survival", "time,event", "--label", "grade"], "not both"),
        ([*clinical], "--label COLUMN, or --survival TIME,EVENT"),
        (
            [*clinical, "--survival", "time,event", "--label-smoothing", "0.1"],
            "--label-smoothing is for a --label",
        ),
    ]:
        args = [*base, *extra]
        args[args.index("--out") + 1] = str(tmp_path / "bad")
        assert main(args) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
