"""models: the packaged ``crc_biopsy`` tile encoder (TissueNet) and its training recipe."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from workbench import EncoderError
from workbench.models import (
    TISSUE_ENCODER,
    SelfCalibratedModel,
    TissueNet,
    load_checkpoint,
    load_encoder,
    load_tissue_encoder,
    save_checkpoint,
    save_tissue_net,
    train_tissue_net,
)
from workbench.models._tissue_cnn import WEIGHTS_DIR


def test_the_packaged_encoder_loads_by_name_frozen_and_deterministic():
    enc = load_encoder(TISSUE_ENCODER)
    assert (enc.name, enc.embed_dim, enc.input_size, enc.mpp) == ("crc_biopsy", 192, 192, 0.9)
    assert enc.spec()["source"] == "builtin" and enc.frozen
    assert not any(p.requires_grad for p in enc.parameters())
    x = torch.rand(3, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    a = enc(x)["embedding"]
    b = enc(x[:1])["embedding"]  # batch-independent (BatchNorm in inference mode)
    assert a.shape == (3, 192) and torch.allclose(a[:1], b, atol=1e-5)
    assert torch.isfinite(a).all() and (a >= 0).all()  # pooled ReLU features


def test_the_packaged_weights_record_how_they_were_made():
    cfg = json.loads((WEIGHTS_DIR / "config.json").read_text())
    assert cfg["classes"][0] == "Adenocarcinoma" and len(cfg["classes"]) == 5
    assert "train" in cfg["trained_on"] and "test" in cfg["trained_on"]
    assert cfg["log"][-1]["epoch"] == cfg["epochs"] == 30  # the log runs to the last epoch
    assert cfg["log"][-1]["val_case_auc_adenocarcinoma_max"] > 0.9
    assert (cfg["input_size"], cfg["mpp"]) == (192, 0.9)


def test_geometry_that_differs_from_training_is_refused():
    with pytest.raises(EncoderError, match="192-px crops, not 224"):
        load_encoder(TISSUE_ENCODER, input_size=224)
    with pytest.raises(EncoderError, match="0.9 µm/px, not 0.5"):
        load_encoder(TISSUE_ENCODER, mpp=0.5)


def test_missing_or_corrupt_weights_raise_a_clear_error(tmp_path):
    folder = tmp_path / "enc"
    shutil.copytree(WEIGHTS_DIR, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EncoderError, match="do not fit TissueNet"):
        load_tissue_encoder(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(EncoderError, match="no model.safetensors"):
        load_tissue_encoder(folder)
    with pytest.raises(EncoderError, match="no config.json"):
        load_tissue_encoder(tmp_path / "nowhere")


def test_a_checkpoint_rebuilds_the_packaged_encoder_by_name(tmp_path):
    enc = load_encoder(TISSUE_ENCODER)
    model = SelfCalibratedModel(in_features=6, hidden=8, embed_dim=8, encoder=enc.spec())
    model.attach_encoder(enc)
    save_checkpoint(model, tmp_path / "m")
    back = load_checkpoint(tmp_path / "m")  # nothing passed: rebuilt from the record
    assert back.tile_encoder.sha256 == enc.sha256
    crops = torch.rand(2, 3, 192, 192)
    with torch.no_grad():
        assert torch.allclose(
            model.forward_detail(crops)["embedding"], back.forward_detail(crops)["embedding"]
        )


def _toy(n: int, seed: int):
    """Reddish vs bluish noisy crops: two classes any working recipe separates."""
    g = torch.Generator().manual_seed(seed)
    y = np.arange(n) % 2
    x = 0.5 + 0.1 * torch.randn(n, 3, 40, 40, generator=g)
    x[y == 0, 0] += 0.3
    x[y == 1, 2] += 0.3
    return x.clamp(0, 1), y


def test_the_recipe_learns_a_separable_task_and_saves_a_loadable_encoder(tmp_path):
    torch.set_num_threads(1)
    x, y = _toy(128, 0)
    vx, vy = _toy(16, 1)
    net, log = train_tissue_net(
        x, y, classes=["red", "blue"], val_images=vx, val_labels=vy, epochs=8, input_size=32,
        batch_size=16, progress=False,
    )  # fmt: skip
    assert isinstance(net, TissueNet) and len(log) == 8
    assert log[-1]["val_accuracy"] == 1.0 and log[-1]["loss"] < log[0]["loss"]
    out = save_tissue_net(net, tmp_path / "enc", record={"classes": ["red", "blue"],
                                                         "input_size": 32, "mpp": 2.0})  # fmt: skip
    from safetensors.torch import load_file

    stored = load_file(str(out / "model.safetensors"))
    assert stored["head.weight"].dtype == torch.float16  # half the file, computed in float32
    enc = load_tissue_encoder(out)
    assert enc.spec()["source"] == "module" and enc.input_size == 32  # not the packaged one
    small = torch.nn.functional.interpolate(vx, size=(32, 32), mode="bilinear")  # as read
    with torch.no_grad():
        ref = net(small - torch.tensor([0.7, 0.55, 0.7]).view(1, 3, 1, 1))
    assert torch.allclose(enc(vx)["embedding"], ref["embedding"], rtol=1e-2, atol=1e-2)
    emb = enc(vx)["embedding"]
    assert emb.shape == (16, 192)
    with pytest.raises(ValueError, match="smaller than 64"):
        train_tissue_net(x, y, classes=["a", "b"], input_size=64, epochs=1, progress=False)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        train_tissue_net(x, y + 1, classes=["a", "b"], input_size=32, epochs=1, progress=False)


def test_the_training_command_refuses_a_folder_without_ebhi(tmp_path, capsys):
    from workbench.train_tile_encoder import main

    assert main(["--data", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "EBHI-Seg" in err[0]


def test_the_evidence_map_is_the_class_margin_spread_over_the_crop():
    enc = load_encoder(TISSUE_ENCODER)
    net = enc.module
    x = torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(1))
    z = x - torch.tensor(enc.mean).view(1, 3, 1, 1)
    with torch.no_grad():
        ev = net.evidence(z)
        logits = net.logits(z)
    b = net.head.bias.detach()
    margin = logits[:, 0] - logits[:, 1:].mean(1) - (b[0] - b[1:].mean())
    assert ev.shape == (2, 1, 12, 12)
    assert torch.allclose(ev.mean((1, 2, 3)), margin, atol=1e-4)
    maps = enc.evidence_maps(x[:, :, :96, :96])  # any crop size: resized in and out
    assert maps.shape == (2, 96, 96) and torch.isfinite(maps).all()


def test_an_encoder_without_evidence_says_none():
    from workbench.models import ModuleEncoder

    enc = ModuleEncoder(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(1)),
                        input_size=16)  # fmt: skip
    assert enc.evidence_maps(torch.rand(2, 3, 16, 16)) is None


def test_the_training_command_names_an_unreadable_image(tmp_path, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    import workbench.datasets as datasets
    from workbench.datasets import EbhiImage
    from workbench.train_tile_encoder import main

    good = tmp_path / "good.png"
    Image.fromarray(np.full((224, 224, 3), 200, np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    small = tmp_path / "small.png"
    Image.fromarray(np.full((100, 120, 3), 200, np.uint8)).save(small)
    fields = EbhiImage.__dataclass_fields__

    def image(path):
        values = {"image_path": path, "cls": "Normal", "case_id": "1", "split": "train"}
        return EbhiImage(**{k: values.get(k, path) for k in fields})

    for broken, said in ((bad, "cannot decode image"), (small, "must share one size")):
        monkeypatch.setattr(
            datasets, "ebhi_images", lambda root, split, b=broken: [image(good), image(b)]
        )
        assert main(["--data", str(tmp_path), "--no-progress", "--epochs", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0] and broken.name in err[0], err
