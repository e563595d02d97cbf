"""Train the click network under refinement: ``python -m workbench.interactive.train_base``.

RITM-style iterative training of a :class:`~workbench.models.ClickSegmenter` whose inputs are
the view, positive/negative click disks and the previous mask. For every batch a few
random clicks are drawn (the first at the object's centre half of the time, as the
benchmark's simulated user does), then 0–3 rounds of the network's own prediction followed
by a corrective click from the benchmark's click simulator, the prediction becoming the next
round's previous mask; the loss (BCE + soft Dice, click disks weighted up) is taken on the
last round.

Data (see :mod:`workbench.interactive._train_data`): crops of the shared real region pairs,
object-centred views of single nuclei from the nucleus sets, composites of real textures
(shared tiles and the inside/outside of real masks), procedural views and a synthetic cohort
(seed 7; the benchmark's cohort uses seed 2024). All at the engine's working resolution, with
strong stain (HED), colour, scale, flip and rotation augmentation.

Presets (``--preset``):

``pretrain``
    no real pair at all: tile composites, procedural and cohort views. Shared by every fold.
``fold:<set>``
    leave-one-dataset-out: every real set except ``<set>`` (their ``val`` part held out for
    choosing settings), starting from the pretrained weights.
``indomain``
    the ``train`` part of every real set (each set's ``test`` part is never seen; for
    EBHI-Seg only its ``fit`` part, its ``val`` cases being kept for choosing settings),
    starting from the pretrained weights (``--init packaged``: from the packaged network):
    the packaged network.

Every preset with real pairs holds the EBHI-Seg cases with a serrated-adenoma image out
altogether (``ebhi_serrated``: the leave-one-class-out check); EBHI-Seg masks are many
glands each and train as one target (``gland`` samples, zoom 0.65-3x of the 224 px images).

The whole schedule runs on CPU, one thread: ``pretrain`` (1,500 iterations) in 6–11 min and
each of the others (3,000 iterations by default) in 17–25 min, depending on the machine's load.
The run is seeded: on one thread, in the same environment, a rerun gives the same weights (a
rebuilt environment with other library versions need not; two such runs of one fold differed
by about 0.7 clicks NoC@85 in the benchmark).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from workbench.interactive._clicks import Click, click_maps
from workbench.interactive._simulate import next_click

PRESETS = ("pretrain", "indomain", "fold:<set>")
DEFAULT_PRETRAIN = Path("data/generated/interactive/pretrain.safetensors")
_DEFAULT_ITERATIONS = {"pretrain": 1500, "finetune": 3000}


def _default_root() -> str:
    return os.environ.get("WORKBENCH_REAL_DATA") or str(
        Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )


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


def _perturbed(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A plausible but wrong starting outline: the truth eroded/dilated and warped."""
    from scipy import ndimage as ndi

    out = mask.copy()
    k = int(rng.integers(2, 12))
    out = (
        ndi.binary_dilation(out, iterations=k)
        if rng.random() < 0.5
        else ndi.binary_erosion(out, iterations=k)
    )
    from workbench.interactive._train_data import _smooth_field

    noise = _smooth_field(rng, mask.shape[0], mask.shape[0] / 10)[: mask.shape[0], : mask.shape[1]]
    return out ^ (noise > 2.0)


def _config_for(preset: str, real_root: str | None) -> dict:
    from workbench.interactive._data import GLAND_DATASETS, REAL_DATASETS

    if preset == "pretrain":
        return {
            "datasets": (),
            "split": "train",
            "weights": {"tiles": 0.7, "procedural": 0.2, "cohort": 0.1},
            "init": None,
            "iterations": _DEFAULT_ITERATIONS["pretrain"],
            "lr": 2e-3,
            "crop": 192,
            "large_shapes": False,
            "first_click_share": 0.0,
            "texture_zoom": (0.8, 2.0),
            "splits": {},
            "gland_zoom": (0.65, 3.0),
        }
    weights = {
        "region": 0.2,
        "gland": 0.3,
        "nucleus": 0.12,
        "tiles": 0.13,
        "real_texture": 0.13,
        "procedural": 0.07,
        "cohort": 0.05,
    }
    splits: dict[str, str] = {}
    if preset == "indomain":
        datasets, split = REAL_DATASETS, "train"
        splits = {d: "fit" for d in GLAND_DATASETS}
    elif preset.startswith("fold:"):
        held = preset.split(":", 1)[1].split("+")
        unknown = [h for h in held if h not in REAL_DATASETS]
        if unknown or not held:
            raise SystemExit(
                f"unknown fold {preset!r}; name held-out sets from {', '.join(REAL_DATASETS)} "
                "joined by '+' (e.g. fold:ocdc or fold:monusac+monuseg+tnbc)"
            )
        datasets, split = tuple(d for d in REAL_DATASETS if d not in held), "not_val"
    else:
        raise SystemExit(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {
        "datasets": datasets,
        "split": split,
        "splits": splits,
        "weights": weights,
        "init": "pretrain",
        "iterations": _DEFAULT_ITERATIONS["finetune"],
        "lr": 1e-3,
        "crop": 224,
        "large_shapes": True,
        "first_click_share": 0.35,
        "texture_zoom": (0.5, 2.0),
        "gland_zoom": (0.65, 3.0),
    }


def _cohort_views(root: Path, n_patients: int) -> list:
    from workbench.interactive._data import cohort_views

    views = []
    for fill in (0.35, 0.6, 0.9):
        views += cohort_views(root, n_patients=n_patients, seed=7, fill=fill)
    return views


def train(
    *,
    preset: str,
    out: str | Path,
    real_root: str | Path | None = None,
    init: str | Path | None = None,
    iterations: int | None = None,
    batch: int = 8,
    crop: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    cohort_root: str | Path | None = None,
    cohort_patients: int = 8,
    log_every: int = 50,
    threads: int = 1,
) -> dict:
    """Train with ``preset`` and save safetensors + JSON at ``out``; returns the record."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from workbench.interactive._base import BASE_CONFIG, load_base_model, save_base_model
    from workbench.interactive._data import EBHI_HOLDOUT
    from workbench.interactive._train_data import TrainingSampler
    from workbench.models import ClickSegmenter

    torch.set_num_threads(int(threads))
    cfg = _config_for(preset, str(real_root) if real_root else None)
    iterations = int(cfg["iterations"] if iterations is None else iterations)
    if iterations < 1 or batch < 1:
        raise SystemExit(f"iterations and batch must be at least 1, got {iterations} and {batch}")
    lr = float(lr or cfg["lr"])
    crop = int(crop or cfg["crop"])
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()

    cohort = []
    if cfg["weights"].get("cohort", 0) > 0 and cohort_patients:
        root = Path(cohort_root) if cohort_root else Path("data/generated/train_cohort")
        cohort = _cohort_views(root, cohort_patients)
    if cfg["datasets"] and (real_root is None or not Path(real_root, "masks").is_dir()):
        raise SystemExit(f"preset {preset!r} needs the shared real data; pass --real-root")
    sampler = TrainingSampler(
        real_root=real_root if real_root and Path(real_root).is_dir() else None,
        datasets=cfg["datasets"],
        split=cfg["split"],
        splits=cfg["splits"],
        weights=cfg["weights"],
        crop=crop,
        cohort_views=cohort,
        large_shapes=cfg["large_shapes"],
        texture_zoom=cfg["texture_zoom"],
        gland_zoom=cfg["gland_zoom"],
    )
    first_share = float(cfg["first_click_share"])

    if init is not None and str(init) == "none":
        cfg["init"] = None
    init_sha = None
    if cfg["init"] is not None:
        from workbench.interactive._base import BASE_WEIGHTS

        if init is not None and str(init) == "packaged":
            init_path = BASE_WEIGHTS
        else:
            init_path = Path(init) if init else DEFAULT_PRETRAIN
        net = load_base_model(init_path).train()
        for p in net.parameters():
            p.requires_grad_(True)
        init_record = "packaged" if init_path == BASE_WEIGHTS else str(init_path)
        init_sha = hashlib.sha256(Path(init_path).read_bytes()).hexdigest()
    else:
        net = ClickSegmenter(**BASE_CONFIG).train()
        init_record = None
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=iterations, pct_start=0.1 if cfg["init"] is None else 0.05
    )

    def guidance(clicks, prev):
        maps = np.stack([click_maps(c, (crop, crop), radius=5.0) for c in clicks])
        return torch.cat([torch.from_numpy(maps), prev], dim=1)

    running, history = None, []
    bar = tqdm(range(iterations), desc=f"train {preset}", mininterval=30)
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
                prev[b, 0] = torch.from_numpy(_perturbed(rng, masks[b]).astype(np.float32))
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
        "script": "python -m workbench.interactive.train_base",
        "preset": preset,
        "init": init_record,
        "init_sha256": init_sha,
        "iterations": iterations,
        "batch": batch,
        "crop": crop,
        "composite_shapes": "large" if cfg["large_shapes"] else "pretrain (smaller)",
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
        "augmentation": (
            "rot90/flip, free rotation (p 0.25), HED stain jitter sigma 0.2 bias 0.05 (p 0.85), "
            "saturation/contrast/brightness/gamma (p 0.6), blur (p 0.2), noise (p 0.3), "
            "zoom 0.55-1.4 (real region crops), "
            f"{cfg['gland_zoom'][0]:g}-{cfg['gland_zoom'][1]:g} of the image's own pixels "
            "(EBHI-Seg gland crops, mirrored out below 1x), texture zoom "
            f"{cfg['texture_zoom'][0]:g}-{cfg['texture_zoom'][1]:g} (tile composites)"
        ),
        "data": {
            "datasets": list(cfg["datasets"]),
            "split": cfg["split"],
            "splits": dict(cfg["splits"]),
            "held_out": (
                {"ebhi": f"every case with a {', '.join(EBHI_HOLDOUT)} image"}
                if "ebhi" in cfg["datasets"]
                else {}
            ),
            "pairs": {k: v for k, v in sampler.counts.items()},
            "weights": sampler.weights,
            "samples_drawn": source_counts,
            "cohort": (
                f"make_cohort(n_patients={cohort_patients}, size='tiny', seed=7), 3 zooms"
                if cohort
                else None
            ),
        },
        "loss_history": history,
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "wall_seconds": round(time.perf_counter() - wall0, 1),
    }
    save_base_model(net, out, training=record)
    return record


def main(argv: list[str] | None = None) -> None:
    from workbench import WorkbenchError
    from workbench._argtypes import whole as _whole
    from workbench.interactive._base import BASE_WEIGHTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="indomain", help="pretrain, indomain or fold:<set>")
    parser.add_argument(
        "--out", default=None, help="weights path (default: the packaged weights for indomain)"
    )
    parser.add_argument(
        "--init",
        default=None,
        help=f"weights to start from: a path, 'packaged' or 'none' (default: {DEFAULT_PRETRAIN})",
    )
    parser.add_argument("--iterations", type=_whole(1), default=None)
    parser.add_argument("--batch", type=_whole(1), default=8)
    parser.add_argument("--crop", type=_whole(32), default=None, help="192 (pretrain) / 224")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=_whole(1), default=1)
    parser.add_argument("--real-root", default=_default_root())
    parser.add_argument("--cohort-root", default=None)
    parser.add_argument(
        "--cohort-patients", type=_whole(0), default=8, help="synthetic cohort size (0: none)"
    )
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        if args.preset != "indomain":
            raise SystemExit("--out is required for presets other than indomain")
        out = BASE_WEIGHTS
    try:
        record = _train_from(args, out)
    except WorkbenchError as exc:  # e.g. --init names no checkpoint: one line, exit 2
        parser.error(str(exc))
    print(json.dumps({k: v for k, v in record.items() if k != "loss_history"}))


def _train_from(args: argparse.Namespace, out) -> dict:
    return train(
        preset=args.preset,
        out=out,
        real_root=args.real_root,
        init=args.init,
        iterations=args.iterations,
        batch=args.batch,
        crop=args.crop,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        cohort_root=args.cohort_root,
        cohort_patients=args.cohort_patients,
    )


if __name__ == "__main__":
    main()
