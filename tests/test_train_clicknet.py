"""The click network's training entry point (``python -m workbench.train_clicknet``): presets,
the record it writes in the checkpoint, and reruns."""

from __future__ import annotations

import pytest

from workbench import train_clicknet
from workbench.models import CLICK_SEGMENTER, load_click_segmenter, read_checkpoint_config


def test_unknown_presets_and_folds_say_what_to_choose():
    with pytest.raises(SystemExit, match="choose one of pretrain, indomain"):
        train_clicknet.preset_config("finetune")
    with pytest.raises(SystemExit, match="unknown fold 'fold:colon'.*fold:monusac"):
        train_clicknet.preset_config("fold:colon")
    with pytest.raises(SystemExit, match="--out is required"):
        train_clicknet.main(["--preset", "pretrain"])


def test_fold_presets_hold_out_every_named_set_and_the_val_parts():
    cfg = train_clicknet.preset_config("fold:monusac+monuseg+tnbc")
    assert cfg["datasets"] == ("ocdc", "camelyon", "ebhi") and cfg["split"] == "not_val"
    indomain = train_clicknet.preset_config("indomain")
    assert indomain["split"] == "train" and "ebhi" in indomain["datasets"]
    # EBHI-Seg's val cases choose settings: the packaged network never trains on them
    assert indomain["splits"] == {"ebhi": "fit"} and indomain["weights"]["gland"] > 0
    assert cfg["iterations"] == train_clicknet._DEFAULT_ITERATIONS["finetune"]
    assert train_clicknet.preset_config("pretrain")["datasets"] == ()


@pytest.mark.realdata
def test_a_seeded_run_is_repeatable_and_records_how_it_was_trained(real_data, tmp_path):
    def tiny(preset, out, **kw):
        return train_clicknet.train_preset(
            preset=preset, out=out, real_root=real_data, iterations=4, batch=2, crop=96,
            cohort_patients=0, log_every=2, **kw,
        )  # fmt: skip

    first = tiny("pretrain", tmp_path / "a")
    tiny("pretrain", tmp_path / "b")
    second = read_checkpoint_config(tmp_path / "b")["extra"]["training"]
    meta_a = read_checkpoint_config(tmp_path / "a")
    # same seed, same thread count: the same run (CPU kernels may differ in the last bits)
    assert second["loss_history"] == first["loss_history"]
    wa, wb = (
        load_click_segmenter(tmp_path / "a").state_dict(),
        load_click_segmenter(tmp_path / "b").state_dict(),
    )
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    assert first["iterations"] == 4 and [h[0] for h in first["loss_history"]] == [2, 4]
    assert sum(first["samples_drawn"].values()) == 4 * 2
    assert meta_a["extra"]["training"]["preset"] == "pretrain"
    assert meta_a["extra"]["training"]["script"] == "python -m workbench.train_clicknet"
    net = load_click_segmenter(tmp_path / "a")  # loads, checksums verified
    assert net.checkpoint_extra_["training"]["loss_history"] == first["loss_history"]

    other = tiny("pretrain", tmp_path / "c", seed=1)
    assert other["seed"] == 1
    assert read_checkpoint_config(tmp_path / "c")["weights_sha256"] != meta_a["weights_sha256"]

    fold = tiny("fold:ocdc", tmp_path / "fold", init=tmp_path / "a")
    assert fold["init"] == str(tmp_path / "a")
    assert "ocdc" not in fold["data"]["datasets"] and "camelyon" in fold["data"]["datasets"]
    assert "ocdc" not in fold["data"]["pairs"] and fold["data"]["pairs"]["camelyon"] > 0


@pytest.mark.realdata
def test_gland_samples_keep_every_gland_of_a_mask_and_only_the_fit_cases(real_data):
    import numpy as np
    from scipy import ndimage as ndi

    from workbench.datasets import ClickTrainingSampler, load_mask_pairs

    if not (real_data / "masks" / "ebhi_seg").is_dir():
        pytest.skip("the shared data has no EBHI-Seg folder")
    sampler = ClickTrainingSampler(
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
    record = train_clicknet.train_preset(
        preset="fold:monusac+monuseg+tnbc", out=tmp_path / "w", real_root=real_data,
        init="packaged", iterations=2, batch=2, crop=96, cohort_patients=0, log_every=1,
    )  # fmt: skip
    assert record["init"] == "packaged"
    assert record["init_sha256"] == read_checkpoint_config(CLICK_SEGMENTER)["weights_sha256"]
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
        str(tmp_path / "w"),
    ]
    with pytest.raises(SystemExit) as exc:
        train_clicknet.main(out + argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.realdata
def test_a_missing_init_checkpoint_is_one_line_and_exit_code_2(real_data, tmp_path, capsys):
    argv = ["--preset", "fold:ocdc", "--real-root", str(real_data), "--cohort-patients", "0"]
    argv += ["--init", str(tmp_path / "none"), "--out", str(tmp_path / "w")]
    with pytest.raises(SystemExit) as exc:
        train_clicknet.main(argv)
    assert exc.value.code == 2 and "no checkpoint folder at" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
