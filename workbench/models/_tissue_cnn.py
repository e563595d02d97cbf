"""``crc_biopsy``: a packaged tile encoder, a compact CNN the project trained on real biopsies.

The frozen :class:`~workbench.models.TextureEncoder` describes a crop by fixed colour and
texture statistics; on the EBHI-Seg biopsy cohort those statistics cap what any slide model
can learn (a linear probe on them, trained with *image* labels, reaches a test-case AUC of
about 0.83). No foundation model can be downloaded here, so the project trains its own small
one: :class:`TissueNet`, five convolution stages (24 → 192 channels) on 192-px crops at
0.9 µm/px, trained to tell the five EBHI-Seg classes apart (adenocarcinoma, high- and
low-grade intraepithelial neoplasia, normal mucosa, serrated adenoma) from the images of the
*training* cases only (the fixed case split of :func:`workbench.datasets.ebhi_case_split`);
the validation cases chose the number of epochs, and the test cases were never used. How it
was made (data, split, epochs, seed, validation figures, the training command) is recorded
in the ``config.json`` next to the weights.

It is a tile encoder like any other: ``load_encoder("crc_biopsy")``, ``SlideTrainer(
encoder="crc_biopsy")`` or ``workbench train --encoder crc_biopsy``; the embedding is the
average-pooled last feature map (192 numbers). Checkpoints record it by name and checksum
(source ``"builtin"``), so they reload without any file. It was trained on colorectal
biopsies: on other organs check it against ``texture`` before trusting it.

:func:`train_tissue_net` is the training recipe (``python -m workbench.train_tile_encoder``
reruns it), public so that a user with labelled images of their own tissue can train the
same network on them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench._errors import EncoderError
from workbench.models._encoder import TISSUE_ENCODER, ModuleEncoder, file_sha256

__all__ = [
    "TissueNet",
    "load_tissue_encoder",
    "save_tissue_net",
    "train_tissue_net",
]

#: Where the packaged weights lie (``model.safetensors`` + ``config.json``).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "tile_encoder_crc_biopsy"
_WIDTHS = (24, 32, 64, 128, 192)
#: Per-channel offset subtracted from [0, 1] RGB (roughly the mean of H&E tissue); std 1.
_MEAN = (0.7, 0.55, 0.7)


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TissueNet(nn.Module):
    """A compact CNN for H&E crops: a strided stem and four double-convolution stages.

    Parameters
    ----------
    n_classes
        Outputs of the training head (the tissue classes it was trained on).
    widths
        Channels of the stem and of the four stages; the embedding has ``widths[-1]``.

    Notes
    -----
    ``forward`` returns ``{"embedding": (B, widths[-1])}`` (the average-pooled last feature
    map), which is what :class:`~workbench.models.ModuleEncoder` reads; :meth:`logits` gives
    the training head's class scores.
    """

    def __init__(self, n_classes: int = 5, widths: tuple[int, ...] = _WIDTHS) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"widths must hold 5 channel counts, got {widths!r}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList(
            _stage(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Linear(widths[-1], int(n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(B, C, H/16, W/16)`` of normalised crops ``x``."""
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                x = F.max_pool2d(x, 2)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, n_classes)`` of the training head."""
        return self.head(self.features(x).mean((2, 3)))

    def forward(self, x: torch.Tensor) -> dict:
        """``{"embedding": (B, C)}``: the average-pooled last feature map."""
        return {"embedding": self.features(x).mean((2, 3))}

    def evidence(self, x: torch.Tensor, target: int = 0) -> torch.Tensor:
        """Where in each crop the evidence for class ``target`` lies: ``(B, 1, H/16, W/16)``.

        The class-activation map of the training head: the last feature map weighted by
        class ``target``'s head weights minus the mean of the other classes' (for the
        packaged encoder, class 0 is adenocarcinoma). Its spatial mean is that class's logit
        margin over the others' mean (up to the biases).
        """
        w = self.head.weight
        others = torch.cat([w[:target], w[target + 1 :]]).mean(0)
        return torch.einsum("bchw,c->bhw", self.features(x), w[target] - others).unsqueeze(1)


class _PackagedEncoder(ModuleEncoder):
    """A :class:`ModuleEncoder` that checkpoints record by name (no file needed to reload)."""

    version: int = 1

    def spec(self) -> dict:
        return {**self._spec("builtin", None), "version": self.version}


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise EncoderError(
            f"the packaged encoder {TISSUE_ENCODER!r} has no config.json in {str(folder)!r}; "
            "reinstall the package or retrain it: python -m workbench.train_tile_encoder"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EncoderError(f"{str(path)!r} is not JSON ({exc})") from None


def load_tissue_encoder(
    folder: str | Path | None = None,
    *,
    input_size: int | None = None,
    mpp: float | None = None,
) -> ModuleEncoder:
    """The packaged ``crc_biopsy`` encoder (or one trained by :func:`train_tissue_net`).

    Parameters
    ----------
    folder
        A folder with ``model.safetensors`` + ``config.json`` (default: the packaged one).
    input_size, mpp
        Must equal what the network was trained at when given (crops are read at the
        trained geometry; a checkpoint passes its recorded values).

    Returns
    -------
    ModuleEncoder
        The frozen encoder. ``spec()["source"]`` is ``"builtin"`` for the packaged weights
        (a checkpoint rebuilds it by name) and ``"module"`` for another folder (pass
        ``load_checkpoint(..., encoder=load_tissue_encoder(folder))`` to reload).

    Raises
    ------
    EncoderError
        The folder lacks its files, the weights do not fit the network, or the geometry
        asked for differs from the trained one.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    packaged = folder is None
    folder = WEIGHTS_DIR if folder is None else Path(folder)
    cfg = _read_config(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise EncoderError(f"no model.safetensors in {str(folder)!r}")
    size, res = int(cfg["input_size"]), float(cfg["mpp"])
    if input_size is not None and int(input_size) != size:
        raise EncoderError(
            f"the {TISSUE_ENCODER!r} encoder was trained on {size}-px crops, not {input_size}"
        )
    if mpp is not None and abs(float(mpp) - res) > 1e-6:
        raise EncoderError(f"the {TISSUE_ENCODER!r} encoder was trained at {res} µm/px, not {mpp}")
    net = TissueNet(n_classes=len(cfg["classes"]), widths=tuple(cfg["widths"]))
    try:
        state = load_file(str(weights))
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderError(
            f"the weights in {str(weights)!r} do not fit TissueNet: {first}"
        ) from None
    net.eval()
    cls = _PackagedEncoder if packaged else ModuleEncoder
    return cls(
        net,
        input_size=size,
        mpp=res,
        mean=tuple(cfg.get("mean", _MEAN)),
        std=(1.0, 1.0, 1.0),
        name=TISSUE_ENCODER if packaged else str(cfg.get("name", "tissue_net")),
        embed_dim=int(cfg["widths"][-1]),
        sha256=file_sha256(weights),
    )


def _augment(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A random ``size`` crop, flip, quarter turn and stain jitter (in optical density)."""
    b, _, h, w = x.shape
    i, j = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    x = x[:, :, i : i + size, j : j + size]
    if rng.random() < 0.5:
        x = x.flip(3)
    x = torch.rot90(x, int(rng.integers(4)), (2, 3))
    od = -torch.log(x.clamp(1e-3, 1.0))
    scale = torch.from_numpy(1.0 + 0.1 * rng.standard_normal((b, 3, 1, 1))).float()
    shift = torch.from_numpy(0.03 * rng.standard_normal((b, 3, 1, 1))).float()
    return torch.exp(-(od * scale + shift)).clamp(0.0, 1.0)


def _centre(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[2:]
    i, j = (h - size) // 2, (w - size) // 2
    return x[:, :, i : i + size, j : j + size]


def train_tissue_net(
    images: torch.Tensor,
    labels: np.ndarray,
    *,
    classes: list[str],
    val_images: torch.Tensor | None = None,
    val_labels: np.ndarray | None = None,
    epochs: int = 20,
    input_size: int = 192,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[TissueNet, list[dict]]:
    """Train :class:`TissueNet` to tell tissue classes apart on labelled crops.

    Parameters
    ----------
    images
        ``(N, 3, S, S)`` RGB in ``[0, 1]`` with ``S >= input_size`` (random ``input_size``
        crops are drawn from them).
    labels
        ``N`` class indices into ``classes``.
    classes
        The class names (the head's outputs).
    val_images, val_labels
        Optional held-out crops: their accuracy and loss are logged after every epoch.
    epochs, input_size, batch_size, lr, seed
        The recipe: AdamW (weight decay 1e-3) with a one-cycle schedule peaking at ``lr``;
        flips, quarter turns and optical-density stain jitter.
    progress
        Show a tqdm bar over the epochs.

    Returns
    -------
    (TissueNet, list of dict)
        The trained network (eval mode) and one log record per epoch
        (``epoch``, ``loss``, and ``val_loss``/``val_accuracy`` with validation data).

    Raises
    ------
    ValueError
        Shapes or labels that do not fit.
    """
    from tqdm.auto import tqdm

    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] != len(labels):
        raise ValueError(f"images must be (N, 3, S, S) with N = {len(labels)} labels")
    if min(images.shape[2:]) < input_size:
        raise ValueError(f"images of {tuple(images.shape[2:])} px are smaller than {input_size}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"labels must lie in 0..{len(classes) - 1}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = TissueNet(n_classes=len(classes))
    mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
    steps = epochs * ((len(labels) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr / 2, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(steps, 1))
    y = torch.from_numpy(labels)
    log = []
    for epoch in tqdm(range(epochs), desc="tile encoder", disable=not progress):
        net.train()
        order = rng.permutation(len(labels))
        total = 0.0
        for k in range(0, len(order), batch_size):
            b = order[k : k + batch_size]
            loss = F.cross_entropy(net.logits(_augment(images[b], input_size, rng) - mean), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        rec = {"epoch": epoch + 1, "loss": total / max(len(labels), 1)}
        if val_images is not None and val_labels is not None and len(val_labels):
            net.eval()
            with torch.no_grad():
                out = torch.cat(
                    [
                        net.logits(_centre(val_images[k : k + 64], input_size) - mean)
                        for k in range(0, len(val_labels), 64)
                    ]
                )
            vy = torch.as_tensor(np.asarray(val_labels, dtype=np.int64))
            rec["val_loss"] = float(F.cross_entropy(out, vy))
            rec["val_accuracy"] = float((out.argmax(1) == vy).float().mean())
        log.append(rec)
    net.eval()
    return net, log


def save_tissue_net(net: TissueNet, folder: str | Path, *, record: dict) -> Path:
    """Write ``net`` as ``model.safetensors`` (float16) + ``config.json`` into ``folder``.

    Each file is written to a temporary name and renamed, config last, so an interrupted
    write leaves either the old pair or new weights that the old config still describes.

    Parameters
    ----------
    net
        A trained :class:`TissueNet`.
    folder
        The output folder (created; existing files are replaced only once written).
    record
        What the configuration records besides the architecture: at least ``classes``,
        ``input_size`` and ``mpp`` (what :func:`load_tissue_encoder` reads), and how the
        network was trained.

    Returns
    -------
    pathlib.Path
        ``folder``, readable by :func:`load_tissue_encoder`.
    """
    from safetensors.torch import save_file

    from workbench.io._atomic import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    widths = [net.stem[0].out_channels] + [s[0].out_channels for s in net.stages]
    cfg = {
        "name": TISSUE_ENCODER,
        "architecture": "TissueNet",
        "widths": widths,
        "mean": list(_MEAN),
        "dtype": "float16",
        "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **record,
    }
    with atomic_path(folder / "model.safetensors") as tmp:
        # float16 storage halves the file; load_tissue_encoder computes in float32
        state = {
            k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
            for k, v in net.state_dict().items()
        }
        save_file(state, str(tmp))
    with atomic_path(folder / "config.json") as tmp:
        Path(tmp).write_text(json.dumps(cfg, indent=2))
    return folder
