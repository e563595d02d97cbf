"""``workbench train --encoder NAME`` with a registry encoder, and the model reloading it by name."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from workbench.cli import main
from workbench.models import LocalEncoder, VisionTransformer, load_checkpoint

TINY = {"embed_dim": 16, "depth": 1, "num_heads": 2, "patch_size": 8, "img_size": 32,
        "layer_scale": True, "reg_tokens": 1, "class_pos": False}  # fmt: skip


@pytest.mark.slow
def test_train_and_extract_with_a_registry_encoder(
    tmp_path, monkeypatch, capsys, he_like_image, write_pyramid_tiff
):
    torch.set_num_threads(1)
    rows = []
    for i in range(4):
        img = he_like_image if i % 2 else np.ascontiguousarray(he_like_image[:, ::-1])
        if i % 2:
            img = img.copy()
            img[150:220, 200:280] = (60, 30, 110)  # a dark core in class "b"
        write_pyramid_tiff(tmp_path / "slides" / f"s{i}.tif", img, mpp=2.0)
        rows.append({"patient_id": f"p{i}", "slide": f"s{i}.tif", "y": "ab"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY)
    save_file(
        {k: v.contiguous() for k, v in vit.state_dict().items()}, tmp_path / "tiny.safetensors"
    )
    registry = tmp_path / "encoders.json"
    registry.write_text(json.dumps({"tiny-vit": {"path": "tiny.safetensors", "architecture": TINY,
                                                 "input_size": 32, "mpp": 4.0}}))  # fmt: skip
    monkeypatch.setenv("WORKBENCH_ENCODERS", str(registry))

    small = ["--set", "thumbnail_mpp=4", "--set", "n_segments=60", "--epochs", "2", "--no-progress"]
    train = ["train", str(tmp_path / "slides"), "--clinical", str(tmp_path / "c.csv"),
             "--label", "y", "--out", str(tmp_path / "m"), *small]  # fmt: skip
    assert main([*train, "--encoder", "tiny-vit"]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert config["encoder"]["name"] == "tiny-vit" and config["encoder"]["source"] == "local"
    assert config["preprocessing"]["crop_size"] == 32 and config["preprocessing"]["detail_mpp"] == 4
    model = load_checkpoint(tmp_path / "m")  # found again by its name
    assert isinstance(model.tile_encoder, LocalEncoder)
    capsys.readouterr()
    extract = ["extract", str(tmp_path / "slides"), "--model", str(tmp_path / "m"), "--no-progress"]
    assert main([*extract, "--out", str(tmp_path / "o")]) == 0
    assert ad.read_h5ad(tmp_path / "o" / "s1.h5ad").uns["explain"]["encoder"] == "tiny-vit"
    # a mistyped name: one line naming the known ones, exit code 2
    assert main([*train, "--encoder", "tiny-vt"]) == 2
    err = capsys.readouterr().err
    assert "unknown encoder 'tiny-vt'" in err and "tiny-vit" in err
    assert len(err.strip().splitlines()) == 1
