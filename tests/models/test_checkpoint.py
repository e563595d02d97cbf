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


def test_tampered_config_raises(saved):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["hidden"] = 32  # weights no longer fit
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


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
    cfg = json.loads((path / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256(junk).hexdigest()
    cfg["weights_bytes"] = len(junk)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)
