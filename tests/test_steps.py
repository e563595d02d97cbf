"""workbench._steps: the training record, read from a checkpoint or an older run's file."""

from __future__ import annotations

import json

import pytest

from workbench import ResultFileError
from workbench._demo import held_out_slides
from workbench._steps import training_record


def _checkpoint(folder, extra):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model": "GlobalOnly", "extra": extra}))


def test_record_comes_from_the_checkpoint_with_the_one_vocabulary(tmp_path):
    _checkpoint(tmp_path, {"label": "y", "trained_on": ["S1", "S2"], "held_out_slides": ["S3"],
                           "history": [{"epoch": 1, "loss": 0.7}]})  # fmt: skip
    record = training_record(tmp_path)
    assert record["train_slides"] == ["S1", "S2"] and record["held_out_slides"] == ["S3"]
    assert "oof_predictions" not in record  # no file: nothing claimed


def test_checkpoint_saved_before_the_oof_key_finds_its_predictions_file(tmp_path):
    _checkpoint(tmp_path, {"label": "y", "trained_on": [], "history": []})
    (tmp_path / "oof_predictions.csv").write_text("slide,probability\nS1,0.5\n")
    assert training_record(tmp_path)["oof_predictions"] == "oof_predictions.csv"
    # a checkpoint that says it has none is believed, whatever file lies beside it
    _checkpoint(tmp_path, {"label": "y", "history": [], "oof_predictions": None})
    assert training_record(tmp_path)["oof_predictions"] is None


def test_an_older_runs_training_json_is_read_when_no_checkpoint_holds_a_record(tmp_path):
    (tmp_path / "training.json").write_text(
        json.dumps({"label": "y", "train_slides": ["S1"], "test_slides": ["S2"], "history": []})
    )
    record = training_record(tmp_path)
    assert record["held_out_slides"] == ["S2"] and record["train_slides"] == ["S1"]
    # a checkpoint without a record (saved by models.save_checkpoint alone) does not hide it
    _checkpoint(tmp_path, {})
    assert training_record(tmp_path)["label"] == "y"
    assert training_record(tmp_path / "nothing") is None


def test_unreadable_checkpoint_config_gives_no_record_and_a_warning(tmp_path, caplog):
    (tmp_path / "config.json").write_text("{not json")
    assert training_record(tmp_path) is None
    assert "cannot be read" in caplog.text


def test_demo_test_slides_from_the_checkpoint_or_an_older_run_folder(tmp_path):
    _checkpoint(tmp_path / "model", {"label": "y", "history": [], "held_out_slides": ["S4"]})
    assert held_out_slides(tmp_path) == ["S4"]
    # a run folder of an earlier version: the checkpoint has a record without the held-out
    # slides, the run folder's training.json lists them
    _checkpoint(tmp_path / "model", {"label": "y", "history": [], "trained_on": ["S1"]})
    (tmp_path / "training.json").write_text(json.dumps({"test_slides": ["S2", "S3"]}))
    assert held_out_slides(tmp_path) == ["S2", "S3"]
    (tmp_path / "training.json").unlink()
    with pytest.raises(ResultFileError, match="records no held-out test slides"):
        held_out_slides(tmp_path)
