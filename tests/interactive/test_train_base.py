"""The click network's training script: presets, the record it writes, and reruns."""

from __future__ import annotations

import json

import pytest

from workbench.interactive import load_base_model, train_base


def test_unknown_presets_and_folds_say_what_to_choose():
    with pytest.raises(SystemExit, match="choose one of pretrain, indomain"):
        train_base._config_for("finetune", None)
    with pytest.raises(SystemExit, match="unknown fold 'fold:colon'.*fold:monusac"):
        train_base._config_for("fold:colon", None)
    with pytest.raises(SystemExit, match="--out is required"):
        train_base.main(["--preset", "pretrain"])


def test_fold_presets_hold_out_every_named_set_and_the_val_parts():
    cfg = train_base._config_for("fold:monusac+monuseg+tnbc", None)
    assert cfg["datasets"] == ("ocdc", "camelyon", "ebhi") and cfg["split"] == "not_val"
    indomain = train_base._config_for("indomain", None)
    assert indomain["split"] == "train" and "ebhi" in indomain["datasets"]
    # EBHI-Seg's val cases choose settings: the packaged network never trains on them
    assert indomain["splits"] == {"ebhi": "fit"} and indomain["weights"]["gland"] > 0
    assert cfg["iterations"] == train_base._DEFAULT_ITERATIONS["finetune"]
    assert train_base._config_for("pretrain", None)["datasets"] == ()


@pytest.mark.realdata
def test_a_seeded_run_is_repeatable_and_records_how_it_was_trained(real_data, tmp_path):
    def tiny(preset, out, **kw):
        return train_base.train(
            preset=preset, out=out, real_root=real_data, iterations=4, batch=2, crop=96,
            cohort_patients=0, log_every=2, **kw,
        )  # fmt: skip

    first = tiny("pretrain", tmp_path / "a.safetensors")
    tiny("pretrain", tmp_path / "b.safetensors")
    meta_a = json.loads((tmp_path / "a.json").read_text())
    meta_b = json.loads((tmp_path / "b.json").read_text())
    assert meta_a["sha256"] == meta_b["sha256"]  # same seed, same thread count: same weights
    assert first["iterations"] == 4 and [h[0] for h in first["loss_history"]] == [2, 4]
    assert sum(first["data"]["samples_drawn"].values()) == 4 * 2
    load_base_model(tmp_path / "a.safetensors")  # loads, checksum verified

    other = tiny("pretrain", tmp_path / "c.safetensors", seed=1)
    assert other["seed"] == 1
    assert json.loads((tmp_path / "c.json").read_text())["sha256"] != meta_a["sha256"]

    fold = tiny("fold:ocdc", tmp_path / "fold.safetensors", init=tmp_path / "a.safetensors")
    assert fold["init"] == str(tmp_path / "a.safetensors")
    assert "ocdc" not in fold["data"]["datasets"] and "camelyon" in fold["data"]["datasets"]
    assert "ocdc" not in fold["data"]["pairs"] and fold["data"]["pairs"]["camelyon"] > 0


@pytest.mark.realdata
def test_gland_samples_keep_every_gland_of_a_mask_and_only_the_fit_cases(real_data):
    import numpy as np
    from scipy import ndimage as ndi

    from workbench.interactive._data import load_mask_pairs
    from workbench.interactive._train_data import TrainingSampler

    if not (real_data / "masks" / "ebhi_seg").is_dir():
        pytest.skip("the shared data has no EBHI-Seg folder")
    sampler = TrainingSampler(
        real_root=real_data, datasets=("ebhi",), splits={"ebhi": "fit"},
        weights={"gland": 1.0}, crop=96, procedural_views=0,
    )  # fmt: skip
    fit = load_mask_pairs(real_data, "ebhi", split="fit", min_fraction=0.005)
    assert sampler.counts["ebhi"] == len(fit) == len(sampler.glands)
    val_test = load_mask_pairs(real_data, "ebhi", split="test") + load_mask_pairs(
        real_data, "ebhi", split="val"
    )
    seen = {g[0].tobytes()[:4096] for g in sampler.glands}
    assert not any(p.image.tobytes()[:4096] in seen for p in val_test[:40])
    rng = np.random.default_rng(0)
    drawn = [sampler.draw(rng) for _ in range(24)]
    assert {src for src, _, _ in drawn} == {"gland"}
    assert all(im.shape == (96, 96, 3) and m.any() for _, im, m in drawn)
    assert sum(ndi.label(m)[1] > 1 for _, _, m in drawn) >= 6  # several glands, one target


@pytest.mark.realdata
def test_a_run_from_the_packaged_network_records_its_start(real_data, tmp_path):
    from workbench.interactive._base import BASE_WEIGHTS

    record = train_base.train(
        preset="fold:monusac+monuseg+tnbc", out=tmp_path / "w.safetensors", real_root=real_data,
        init="packaged", iterations=2, batch=2, crop=96, cohort_patients=0, log_every=1,
    )  # fmt: skip
    import hashlib

    assert record["init"] == "packaged"
    assert record["init_sha256"] == hashlib.sha256(BASE_WEIGHTS.read_bytes()).hexdigest()
    assert record["data"]["held_out"] == {"ebhi": "every case with a Serrated_adenoma image"}
    assert record["data"]["pairs"]["ebhi"] > 0 and "monusac" not in record["data"]["pairs"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iterations", "0"], "--iterations: must be at least 1"),
        (["--batch", "0"], "--batch: must be at least 1"),
    ],
)
def test_cli_mistakes_end_in_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    out = [
        "--preset",
        "pretrain",
        "--cohort-patients",
        "0",
        "--out",
        str(tmp_path / "w.safetensors"),
    ]
    with pytest.raises(SystemExit) as exc:
        train_base.main(out + argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "w.safetensors").exists()


@pytest.mark.realdata
def test_a_missing_init_checkpoint_is_one_line_and_exit_code_2(real_data, tmp_path, capsys):
    argv = ["--preset", "fold:ocdc", "--real-root", str(real_data), "--cohort-patients", "0"]
    argv += ["--init", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "w.safetensors")]
    with pytest.raises(SystemExit) as exc:
        train_base.main(argv)
    assert exc.value.code == 2 and "base network weights not found" in capsys.readouterr().err
    assert not (tmp_path / "w.safetensors").exists()
