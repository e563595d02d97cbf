from __future__ import annotations

import json

import pytest
import torch

from workbench import CheckpointError
from workbench.models import (
    GlobalOnly,
    SelfCalibratedModel,
    TileABMIL,
    load_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = SelfCalibratedModel(
        in_features=10, hidden=16, detail_width=8, embed_dim=16, preprocessing={"detail_mpp": 1.0}
    ).eval()
    model.global_branch.set_feature_scaling(torch.arange(10.0), torch.full((10,), 2.0))
    save_checkpoint(model, tmp_path / "ckpt", extra={"note": "test"})
    return model, tmp_path / "ckpt"


def test_save_load_gives_identical_outputs(saved, toy_slide):
    model, path = saved
    loaded = load_checkpoint(path)
    x, ei = toy_slide()
    crops = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = model(x, ei, crops=crops, focus_index=torch.tensor([1, 7]))
        b = loaded(x, ei, crops=crops, focus_index=torch.tensor([1, 7]))
    for key in ("logits", "focus_scores", "lesion_logits", "tokens"):
        assert torch.equal(a[key], b[key]), key
    assert loaded.preprocessing == {"detail_mpp": 1.0}
    assert loaded.checkpoint_extra_ == {"note": "test"}


@pytest.mark.parametrize("model", [GlobalOnly(in_features=4, hidden=8), TileABMIL(detail_width=8)])
def test_baselines_round_trip(tmp_path, model):
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path, expect=type(model))
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)


def test_truncated_weights_raise(saved):
    _, path = saved
    w = path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_tampered_weights_raise(saved):
    _, path = saved
    w = path / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def _rewrite(path, edit, *, reseal: bool):
    """Edit config.json; with ``reseal`` also recompute its checksum (a consistent forgery)."""
    from workbench.models._checkpoint import _config_digest

    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    if reseal:
        cfg["config_sha256"] = _config_digest(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def test_edited_config_is_caught_by_its_checksum(saved):
    _, path = saved
    _rewrite(path, lambda c: c["config"].update(class_names=["high", "low"]), reseal=False)
    with pytest.raises(CheckpointError, match="changed after saving"):
        load_checkpoint(path)


def test_reversed_class_names_raise(tmp_path):
    model = GlobalOnly(in_features=4, hidden=8, class_names=["low", "high"])
    save_checkpoint(model, tmp_path)
    _rewrite(tmp_path, lambda c: c["config"]["class_names"].reverse(), reseal=False)
    with pytest.raises(CheckpointError, match="checksum does not match"):
        load_checkpoint(tmp_path)


def test_resealed_config_that_does_not_fit_the_weights_raises(saved):
    _, path = saved
    _rewrite(path, lambda c: c["config"].update(hidden=32), reseal=True)
    with pytest.raises(CheckpointError, match=r"do not fit.*shape: .*global_branch"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hidden", 200_000),
        ("in_features", -1),
        ("top_k", 1.5),
        ("dropout", 7.0),
        ("n_classes", True),
    ],
)
def test_config_values_are_range_checked_before_building(saved, monkeypatch, key, value):
    _, path = saved
    _rewrite(path, lambda c: c["config"].update({key: value}), reseal=True)

    def never(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("the model was built from an out-of-range configuration")

    monkeypatch.setattr(SelfCalibratedModel, "__init__", never)
    with pytest.raises(CheckpointError, match=f"{key}=.*outside the supported range"):
        load_checkpoint(path)


def test_format_1_checkpoints_are_refused_with_advice(saved):
    _, path = saved
    _rewrite(path, lambda c: c.update(version=1), reseal=False)
    with pytest.raises(CheckpointError, match="earlier workbench.*train the model again"):
        load_checkpoint(path)


def test_checkpoint_files_get_the_usual_permissions_and_no_leftovers(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    save_checkpoint(GlobalOnly(in_features=4, hidden=8), tmp_path / "m")
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors",
    ]


def test_pickle_file_is_refused(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path)


def test_wrong_model_class_raises(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="not a TileABMIL"):
        load_checkpoint(path, expect=TileABMIL)


def test_consistently_tampered_files_still_raise(saved):
    import hashlib

    _, path = saved
    junk = b"not a safetensors file" * 4
    (path / "model.safetensors").write_bytes(junk)
    _rewrite(
        path,
        lambda c: c.update(
            weights_sha256=hashlib.sha256(junk).hexdigest(), weights_bytes=len(junk)
        ),
        reseal=True,
    )
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)


def _nan_weights(model):
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    return model


def test_nan_weights_are_not_saved():
    from workbench import NonFiniteError

    model = _nan_weights(GlobalOnly(in_features=4, hidden=8))
    name = next(n for n, _ in model.named_parameters())
    with pytest.raises(
        NonFiniteError, match=rf"NaN or infinite weights in 1 tensor\(s\) \({name}\)"
    ):
        save_checkpoint(model, "never-written")


def test_checkpoint_with_nan_weights_is_refused_naming_the_tensor(tmp_path):
    """Weights saved as NaN (a forged or older checkpoint, checksums consistent) are refused."""
    import hashlib

    from safetensors.torch import save

    model = GlobalOnly(in_features=4, hidden=8)
    save_checkpoint(model, tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = sorted(state)[-1]
    state[key].view(-1)[0] = float("inf")
    data = save(state, metadata={"format": "workbench-checkpoint", "model": "GlobalOnly"})
    (tmp_path / "model.safetensors").write_bytes(data)
    _rewrite(
        tmp_path,
        lambda c: c.update(
            weights_sha256=hashlib.sha256(data).hexdigest(), weights_bytes=len(data)
        ),
        reseal=True,
    )
    with pytest.raises(
        CheckpointError, match=rf"NaN or infinite weights in 1 tensor\(s\) \({key}\)"
    ):
        load_checkpoint(tmp_path)
