"""The click network's training loop (RITM-style iterative training of a ClickSegmenter).

Inputs are the view, positive/negative click disks and the previous mask. For every batch a
few random clicks are drawn (the first at the object's centre half of the time, as the
benchmark's simulated user does), then 0–3 rounds of the network's own prediction followed by
a corrective click from the standard click simulator
(:func:`workbench.models._clicks.next_click`), the prediction becoming the next round's
previous mask; the loss (BCE + soft Dice, click disks weighted up) is taken on the last round.

The data come from a *sampler* (an object with ``draw(rng) -> (source, image, mask)`` and
``perturbed(rng, mask) -> mask``, e.g. :class:`workbench.datasets.ClickTrainingSampler`), so
this module sees arrays and tensors only. The presets that choose the data and the schedule,
and the command line, are in :mod:`workbench.train_clicknet`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from workbench.models._clicks import Click, click_maps, next_click

__all__ = ["train_click_segmenter"]


def _initial_clicks(
    rng: np.random.Generator, mask: np.ndarray, *, extra: bool = True
) -> list[Click]:
    """First positive click (centre half of the time) plus, with ``extra``, a few random extra
    clicks."""
    from scipy.ndimage import binary_dilation, distance_transform_edt

    clicks: list[Click] = []
    h, w = mask.shape
    depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    if depth.max() <= 0:
        return clicks

    def at(index: int, positive: bool) -> Click:
        return Click(float(index % w), float(index // w), positive)

    if rng.random() < 0.5:
        clicks.append(at(int(np.argmax(depth)), True))
    else:
        inner = np.flatnonzero(depth >= min(3.0, depth.max()))
        clicks.append(at(int(rng.choice(inner)), True))
    if not extra:
        return clicks
    if rng.random() < 0.3:
        inside = np.flatnonzero(depth >= min(2.0, depth.max()))
        for _ in range(int(rng.integers(1, 3))):
            clicks.append(at(int(rng.choice(inside)), True))
    if rng.random() < 0.35:
        near = binary_dilation(mask, iterations=int(rng.integers(4, 24))) & ~mask
        pool = np.flatnonzero(near if (rng.random() < 0.6 and near.any()) else ~mask)
        if pool.size:
            for _ in range(int(rng.integers(1, 4))):
                clicks.append(at(int(rng.choice(pool)), False))
    return clicks


def train_click_segmenter(
    sampler,
    *,
    out: str | os.PathLike,
    iterations: int,
    crop: int,
    lr: float,
    batch: int = 8,
    seed: int = 0,
    init: str | os.PathLike | None = None,
    first_click_share: float = 0.35,
    log_every: int = 50,
    threads: int = 1,
    label: str = "clicknet",
    record: dict | None = None,
    started: tuple[float, float] | None = None,
) -> dict:
    """Train a :class:`ClickSegmenter` on ``sampler``'s samples and save it at ``out``.

    Parameters
    ----------
    sampler
        Draws ``(source, image float32 (crop, crop, 3), mask bool)`` with ``draw(rng)`` and a
        wrong starting outline with ``perturbed(rng, mask)``
        (:class:`workbench.datasets.ClickTrainingSampler`).
    out
        Checkpoint folder to write (:func:`save_checkpoint`); the training record goes into
        its ``extra["training"]``.
    iterations, crop, lr, batch
        Schedule: AdamW with a one-cycle learning rate peaking at ``lr``, weight decay 1e-4,
        gradient clip 5; ``crop`` is the side of the sampler's samples.
    seed
        Seeds the clicks, the sampler's draws and torch (with ``threads=1`` a rerun gives the
        same weights).
    init
        A click network checkpoint folder to start from (``None``: random initialisation,
        with a longer warm-up).
    first_click_share
        Share of samples that are a first click alone (one positive click, no previous mask,
        no corrective round).
    log_every
        Iterations between log lines (and loss history entries); 0 for none.
    threads
        torch threads.
    label
        Name on the progress bar.
    record
        Entries to put first in the training record (e.g. the preset and the data).
    started
        ``(process_time, perf_counter)`` at which the run started (data preparation
        included); by default when this function starts.

    Returns
    -------
    dict
        The training record: ``record``'s entries, then ``init``/``init_sha256``, the
        schedule, ``samples_drawn`` per source, ``loss_history`` and CPU/wall seconds.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from workbench.models._checkpoint import read_checkpoint_config, save_checkpoint
    from workbench.models._clicknet import CLICK_SEGMENTER, load_click_segmenter
    from workbench.models._clickseg import ClickSegmenter

    torch.set_num_threads(int(threads))
    iterations, batch, crop, lr = int(iterations), int(batch), int(crop), float(lr)
    if iterations < 1 or batch < 1:
        raise ValueError(f"iterations and batch must be at least 1, got {iterations} and {batch}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    cpu0, wall0 = started if started is not None else (time.process_time(), time.perf_counter())
    first_share = float(first_click_share)

    init_sha = None
    if init is not None:
        init_path = Path(init)
        net = load_click_segmenter(init_path).train()
        for p in net.parameters():
            p.requires_grad_(True)
        init_record = "packaged" if init_path == CLICK_SEGMENTER else str(init_path)
        init_sha = read_checkpoint_config(init_path)["weights_sha256"]
    else:
        net = ClickSegmenter().train()
        init_record = None
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=iterations, pct_start=0.1 if init is None else 0.05
    )

    def guidance(clicks, prev):
        maps = np.stack([click_maps(c, (crop, crop), radius=5.0) for c in clicks])
        return torch.cat([torch.from_numpy(maps), prev], dim=1)

    running, history = None, []
    bar = tqdm(range(iterations), desc=f"train {label}", mininterval=30)
    source_counts: dict[str, int] = {}
    for it in bar:
        drawn = [sampler.draw(rng) for _ in range(batch)]
        for src, _, _ in drawn:
            source_counts[src] = source_counts.get(src, 0) + 1
        images = torch.from_numpy(np.stack([im for _, im, _ in drawn])).permute(0, 3, 1, 2)
        images = images.contiguous()
        masks = [m for _, _, m in drawn]
        # "single" samples are the first click on an empty view: one positive click, no
        # previous mask, no corrective round (what a user sees first).
        single = rng.random(batch) < first_share if first_share > 0 else np.zeros(batch, bool)
        clicks = [_initial_clicks(rng, m, extra=not single[b]) for b, m in enumerate(masks)]
        prev = torch.zeros(batch, 1, crop, crop)
        for b in range(batch):
            if rng.random() < 0.1 and not single[b]:
                prev[b, 0] = torch.from_numpy(sampler.perturbed(rng, masks[b]).astype(np.float32))
        rounds = int(rng.integers(1, 4)) if rng.random() < 0.8 else 0
        if rounds and not single.all():
            with torch.no_grad():
                for _ in range(rounds):
                    logits = net(images, guidance(clicks, prev))["logits"]
                    pred = (logits[:, 0] > 0).numpy()
                    for b in range(batch):
                        if single[b]:
                            continue
                        c = next_click(pred[b], masks[b])
                        if c is not None:
                            clicks[b].append(c)
                    pred[single] = False
                    prev = torch.from_numpy(pred[:, None].astype(np.float32))
        extra = guidance(clicks, prev)
        target = torch.from_numpy(np.stack(masks)).float()[:, None]
        logits = net(images, extra)["logits"]
        weight = 1.0 + 4.0 * extra[:, :2].amax(dim=1, keepdim=True)
        bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
        prob = torch.sigmoid(logits)
        inter = (prob * target).sum(dim=(1, 2, 3))
        dice = 1 - (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
        loss = bce + dice.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if log_every and (it + 1) % log_every == 0:
            history.append([it + 1, round(running, 4)])
            bar.set_postfix(loss=f"{running:.3f}")
            print(
                f"iter {it + 1}/{iterations} loss {running:.3f} "
                f"cpu {time.process_time() - cpu0:.0f} s wall {time.perf_counter() - wall0:.0f} s",
                flush=True,
            )
    net.eval()
    record = {
        **(record or {}),
        "init": init_record,
        "init_sha256": init_sha,
        "iterations": iterations,
        "batch": batch,
        "crop": crop,
        "seed": seed,
        "threads": int(threads),
        "optimizer": f"AdamW lr {lr:g} one-cycle, weight decay 1e-4, grad clip 5",
        "loss": "BCE (click disks x5) + soft Dice, on the last of 0-3 corrective rounds",
        "inputs": "RGB + positive/negative click disks (radius 5) + previous mask",
        "clicks": (
            f"a share {first_share:g} of samples: one positive click alone (at the object's "
            "centre p 0.5, else inside), empty previous mask, no corrective round; the others: "
            "first positive at the centre (p 0.5) or inside; extra positives (p 0.3), "
            "negatives near or away from the object (p 0.35); then 1-3 rounds (p 0.8) of "
            "prediction + a simulated corrective click; start from a perturbed truth (p 0.1)"
        ),
        "samples_drawn": source_counts,
        "loss_history": history,
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "wall_seconds": round(time.perf_counter() - wall0, 1),
    }
    save_checkpoint(net, out, extra={"training": record})
    return record
