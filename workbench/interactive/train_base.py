"""Train the base click-conditioned segmenter: ``python -m workbench.interactive.train_base``.

Data: procedural H&E-like lesion views, lesion-centred views of a synthetic cohort (seed 7;
the benchmark uses seed 2024), plus the *training* split of the shared real
mask pairs when the shared data folder is present (every third real image is held out for
the benchmark and never used here). Clicks are simulated as in RITM-style training: a few
random positive/negative clicks, then a few rounds of corrective clicks placed by the
benchmark's click simulator on the network's own errors.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from workbench.interactive._clicks import Click, click_maps
from workbench.interactive._simulate import next_click


def _resize(image: np.ndarray, mask: np.ndarray, scale: float):
    from PIL import Image

    h, w = mask.shape
    size = (max(int(w * scale), 8), max(int(h * scale), 8))
    im = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) > 127
    return im, m


def _random_clicks(rng, mask: np.ndarray) -> list[Click]:
    clicks: list[Click] = []
    if rng.random() < 0.1:
        return clicks
    if mask.any():
        from scipy.ndimage import distance_transform_edt

        depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        deep = np.flatnonzero(depth >= 0.5 * depth.max())
        inside = np.flatnonzero(mask)
        n_pos = int(rng.integers(1, 3))
        for k in range(n_pos):
            i = int(rng.choice(deep if k == 0 else inside))
            clicks.append(Click(float(i % mask.shape[1]), float(i // mask.shape[1]), True))
    outside = np.flatnonzero(~mask)
    if outside.size:
        for _ in range(int(rng.integers(0, 3))):
            i = int(rng.choice(outside))
            clicks.append(Click(float(i % mask.shape[1]), float(i // mask.shape[1]), False))
    return clicks


def train(
    *,
    iterations: int = 900,
    batch: int = 8,
    crop: int = 144,
    real_root: str | Path | None = None,
    cohort_patients: int = 8,
    seed: int = 0,
    out: str | Path | None = None,
    log_every: int = 50,
) -> dict:
    """Train and save the base segmenter; returns the training description stored in JSON."""
    import torch
    import torch.nn.functional as F

    from workbench.interactive._base import BASE_CONFIG, BASE_WEIGHTS, save_base_model
    from workbench.interactive._data import real_mask_pairs, synthetic_lesion_views
    from workbench.models import DetailBranch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    work = 384  # the engine's default working size
    pool: list[tuple[np.ndarray, np.ndarray]] = []
    for image, mask in synthetic_lesion_views(60, size=320, seed=10_000 + seed):
        pool.append((image, mask))
    n_synthetic = len(pool)
    n_real = 0
    if real_root is not None and Path(real_root, "masks").is_dir():
        for dataset in ("ocdc", "camelyon"):
            for _, image, mask in real_mask_pairs(real_root, dataset, split="train"):
                s = work / max(mask.shape)
                for scale in (0.8 * s, s):
                    pool.append(_resize(image, mask, scale))
                    n_real += 1
    n_cohort = 0
    if cohort_patients:
        import tempfile

        from workbench.interactive._data import cohort_views

        with tempfile.TemporaryDirectory() as tmp:
            for fill in (0.35, 0.6, 0.9):
                views = cohort_views(tmp, n_patients=cohort_patients, seed=7, fill=fill)
                for _, image, mask in views:
                    pool.append(_resize(image, mask, work / max(mask.shape)))
                    n_cohort += 1
    # Sampling shares: real pairs 1/2 (hardest, most varied), procedural and cohort 1/4 each.
    weights = np.array(
        [1.0] * n_synthetic
        + [2.0 * n_synthetic / max(n_real, 1)] * n_real
        + [n_synthetic / max(n_cohort, 1)] * n_cohort
    )
    weights /= weights.sum()

    def sample():
        image, mask = pool[int(rng.choice(len(pool), p=weights))]
        h, w = mask.shape
        ch, cw = min(crop, h), min(crop, w)
        r0, c0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        im = image[r0 : r0 + ch, c0 : c0 + cw].astype(np.float32) / 255.0
        m = mask[r0 : r0 + ch, c0 : c0 + cw]
        k = int(rng.integers(0, 4))
        im, m = np.rot90(im, k), np.rot90(m, k)
        if rng.random() < 0.5:
            im, m = im[:, ::-1], m[:, ::-1]
        im = im * rng.uniform(0.85, 1.15, 3) + rng.uniform(-0.06, 0.06)
        if (ch, cw) != (crop, crop):
            im = np.pad(im, ((0, crop - ch), (0, crop - cw), (0, 0)), constant_values=0.9)
            m = np.pad(m, ((0, crop - ch), (0, crop - cw)))
        return np.clip(im, 0, 1).astype(np.float32), np.ascontiguousarray(m)

    net = DetailBranch(**BASE_CONFIG)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=iterations)
    start = time.perf_counter()
    running = 0.0
    for it in range(iterations):
        items = [sample() for _ in range(batch)]
        images = torch.from_numpy(np.stack([i for i, _ in items])).permute(0, 3, 1, 2).contiguous()
        masks = [m for _, m in items]
        clicks = [_random_clicks(rng, m) for m in masks]
        target = torch.from_numpy(np.stack(masks)).float()[:, None]

        def maps_of(cl):
            return torch.from_numpy(np.stack([click_maps(c, (crop, crop)) for c in cl]))

        rounds = int(rng.integers(0, 4)) if rng.random() < 0.8 else 0
        if rounds:
            net.eval()
            with torch.no_grad():
                for _ in range(rounds):
                    pred = (net(images, maps_of(clicks))["logits"][:, 0] > 0).numpy()
                    for b in range(batch):
                        c = next_click(pred[b], masks[b])
                        if c is not None:
                            clicks[b].append(c)
            net.train()
        logits = net(images, maps_of(clicks))["logits"]
        prob = torch.sigmoid(logits)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        inter = (prob * target).sum(dim=(1, 2, 3))
        dice = 1 - (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
        loss = bce + dice.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        running = 0.95 * running + 0.05 * value if it else value
        if log_every and (it + 1) % log_every == 0:
            print(
                f"iter {it + 1}/{iterations} loss {running:.3f} ({time.perf_counter() - start:.0f} s)"
            )
    net.eval()
    training = {
        "script": "python -m workbench.interactive.train_base",
        "iterations": iterations,
        "batch": batch,
        "crop": crop,
        "seed": seed,
        "optimizer": "AdamW lr 3e-3 one-cycle, BCE + soft Dice",
        "sampling": "real 1/2, procedural 1/4, cohort 1/4",
        "clicks": "1-2 positive + 0-2 negative random clicks, then 0-3 rounds of simulated corrective clicks",
        "data": {
            "procedural_views": n_synthetic,
            "cohort_views": n_cohort,
            "cohort": f"make_cohort(n_patients={cohort_patients}, size='tiny', seed=7), lesion-centred views at 3 zooms",
            "real_train_views": n_real,
            "real_split": "shared masks/{ocdc,camelyon}, sorted names, index % 3 != 0 (test = index % 3 == 0)",
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    save_base_model(net, out or BASE_WEIGHTS, training=training)
    return training


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=900)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=144)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="weights path (default: packaged weights)")
    default_root = os.environ.get("WORKBENCH_REAL_DATA") or str(
        Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
    parser.add_argument("--real-root", default=default_root)
    args = parser.parse_args(argv)
    info = train(
        iterations=args.iterations,
        batch=args.batch,
        crop=args.crop,
        real_root=args.real_root,
        seed=args.seed,
        out=args.out,
    )
    print(info)


if __name__ == "__main__":
    main()
