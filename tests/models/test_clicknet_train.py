"""The click network in the one checkpoint format: the packaged weights, and the training loop."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from workbench import CheckpointError
from workbench.models import (
    CLICK_SEGMENTER,
    ClickSegmenter,
    load_checkpoint,
    load_click_segmenter,
    read_checkpoint_config,
    save_checkpoint,
    train_click_segmenter,
)

# SHA-256 over (name, bytes) of every tensor of the packaged network, in name order, computed
# from the weights file of the earlier format (interactive/weights/base_segmenter.safetensors)
# before it was converted: the conversion kept every tensor bit for bit.
PACKAGED_TENSORS_SHA256 = "032b9ef97ac87975738dd0d442ffb740c2fa022b710ee599ff86eb9d534313fb"


def _tensors_sha256(model) -> str:
    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(t.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_the_packaged_network_loads_with_its_checksums_and_provenance():
    config = read_checkpoint_config(CLICK_SEGMENTER)
    data = (CLICK_SEGMENTER / "model.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == config["weights_sha256"]
    net = load_click_segmenter()
    assert isinstance(net, ClickSegmenter) and not net.training
    assert _tensors_sha256(net) == PACKAGED_TENSORS_SHA256
    training = net.checkpoint_extra_["training"]
    assert training["preset"] == "indomain" and training["iterations"] == 2500
    assert net.checkpoint_extra_["converted_from"]["sha256"].startswith("7d737c7e")


def test_a_changed_packaged_weights_file_is_refused(tmp_path):
    copy = shutil.copytree(CLICK_SEGMENTER, tmp_path / "net")
    weights = copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_click_segmenter(copy)


def test_a_click_segmenter_round_trips_bit_for_bit_and_bad_widths_are_refused(tmp_path):
    torch.manual_seed(0)
    net = ClickSegmenter(widths=(8, 12, 16), feature_channels=8, head_hidden=8).eval()
    save_checkpoint(net, tmp_path / "net", extra={"note": "test"})
    again = load_checkpoint(tmp_path / "net", expect=ClickSegmenter)
    x, e = torch.rand(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x, e)["logits"], again(x, e)["logits"])
    assert again.config == net.config and again.checkpoint_extra_ == {"note": "test"}
    with pytest.raises(CheckpointError, match="holds a ClickSegmenter, not a"):
        load_checkpoint(tmp_path / "net", expect=torch.nn.Linear)

    # a configuration edited (and re-digested) to absurd widths is refused before building
    from workbench.models._checkpoint import _config_digest

    cfg_path = tmp_path / "net" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["config"]["widths"] = [8, 12, 10**7]
    cfg["config_sha256"] = _config_digest(cfg)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="widths must be"):
        load_click_segmenter(tmp_path / "net")


class _Disks:
    """A tiny sampler: a bright disk on a darker, noisy background."""

    def draw(self, rng):
        side = 48
        r, c = np.mgrid[:side, :side]
        cy, cx, rad = rng.uniform(16, 32), rng.uniform(16, 32), rng.uniform(6, 12)
        mask = (r - cy) ** 2 + (c - cx) ** 2 < rad**2
        image = 0.3 + 0.4 * mask[..., None] + rng.normal(0, 0.05, (side, side, 3))
        return "disks", np.clip(image, 0, 1).astype(np.float32), mask

    def perturbed(self, rng, mask):
        return np.roll(mask, int(rng.integers(1, 4)), axis=0)


def test_the_training_loop_saves_a_reproducible_checkpoint_with_its_record(tmp_path):
    def run(out, seed=0, **kw):
        return train_click_segmenter(
            _Disks(), out=out, iterations=3, crop=48, lr=1e-3, batch=2, seed=seed,
            log_every=1, record={"preset": "test"}, **kw,
        )  # fmt: skip

    def weights(name):
        return load_click_segmenter(tmp_path / name).state_dict()

    def max_change(x, y):
        return max(float((x[k] - y[k]).abs().max()) for k in x)

    record = run(tmp_path / "a")
    again = run(tmp_path / "b")
    a = read_checkpoint_config(tmp_path / "a")
    # seeded, one thread: the same run (CPU kernels may differ in the last float bits)
    assert again["loss_history"] == record["loss_history"]
    assert max_change(weights("a"), weights("b")) < 1e-5
    assert record["preset"] == "test" and record["samples_drawn"] == {"disks": 6}
    assert [h[0] for h in record["loss_history"]] == [1, 2, 3] and record["init"] is None
    assert a["extra"]["training"]["loss_history"] == record["loss_history"]
    other = run(tmp_path / "c", seed=1)
    assert max_change(weights("a"), weights("c")) > 1e-4  # another seed, another run
    assert other["seed"] == 1

    fine = run(tmp_path / "d", init=tmp_path / "a")
    assert fine["init"] == str(tmp_path / "a") and fine["init_sha256"] == a["weights_sha256"]
    with pytest.raises(ValueError, match="at least 1"):
        train_click_segmenter(_Disks(), out=tmp_path / "e", iterations=0, crop=48, lr=1e-3)
