"""Choose how :meth:`RefinementEngine.adapt` learns from confirmed outlines (sequential protocol).

The sequential protocol (:func:`~workbench.interactive.evaluate_sequential`): views of one set
in an order, the simulated user refines each (standard click simulator, 20 clicks, stop at
IoU 0.90), then the engine adapts on the view's true mask. Scored on the second half of the
order, against the packaged network on the same views (paired per view). Each set runs in
several random orders (``--orders``); a line gives the mean over orders of the second-half
NoC@85 and mIoU@5 change, and a 95 % bootstrap interval over the (order, view) pairs.

``ebhi_stroma`` is EBHI-Seg with the stroma and lumen as the outline (the complement of the
gland mask): a target the network was never taught, where there is something to learn.

``--split val`` (the default) uses validation data only, where settings are chosen: the
EBHI-Seg ``val`` cases and the ``val`` parts of the other real sets. ``--split test`` reports
the chosen setting on test views (EBHI-Seg ``test`` cases, the held-out serrated class, the
other sets' ``test`` parts).

Usage::

    python benchmarks/tune_adapt.py [--split val] [--variants old,default] [--sets ebhi,ocdc]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: adapt() keyword arguments per variant; "default" is what adapt() does without any.
VARIANTS = {
    "old": {"holdout": False, "average": False},  # as shipped before: fit the last outline
    "default": {},
    "holdout_only": {"average": False},
    "average_only": {"holdout": False},
    "pull1": {"pull": 1.0},
    "lr03": {"lr": 0.03},
    "gain05": {"min_gain": 0.05},
    "clicks1": {"clicks": 1},
    "clicks5": {"clicks": 5},
    "balanced": {"loss": "balanced"},  # the loss before bce_dice became the default
    "bce": {"loss": "bce"},
    "replay": {"memory": 16, "average": False},
    "replay_avg": {"memory": 16},
}


def _noc(ious, target=0.85, max_clicks=20):
    for k, v in enumerate(ious, start=1):
        if v >= target:
            return k
    return max_clicks


def load_views(root, dataset, split, max_views, seed=21):
    from workbench.datasets._mask_pairs import benchmark_views

    return benchmark_views(root, dataset, split=split, max_views=max_views, seed=seed)


def bootstrap(diffs, n=2000, seed=0):
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (n, len(diffs)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 3), round(float(np.percentile(means, 97.5)), 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--real-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--sets", default="ebhi,ocdc,camelyon,monuseg,tnbc,monusac")
    parser.add_argument("--variants", default="old,default")
    parser.add_argument("--method", default="cgam")
    parser.add_argument("--orders", type=int, default=3)
    parser.add_argument("--max-views", type=int, default=40)
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--jsonl", default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from workbench.interactive import RefinementEngine, evaluate_clicks, evaluate_sequential
    from workbench.models import load_click_segmenter

    model = load_click_segmenter()

    def emit(line):
        print(json.dumps(line), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(line) + "\n")

    for name in args.sets.split(","):
        dataset, split = name, args.split
        if name == "ebhi_serrated":
            split = "test"  # the held-out class has no val part: test only
            if args.split == "val":
                continue
        if name == "ebhi_stroma":  # the complement of the gland mask: a target never taught
            views = [
                (n, im, ~m)
                for n, im, m in load_views(args.real_root, "ebhi", split, args.max_views)
            ]
        else:
            views = load_views(args.real_root, dataset, split, args.max_views)
        if len(views) < 4:
            emit({"set": name, "split": split, "skipped": f"{len(views)} views"})
            continue
        engine = RefinementEngine(model, method=args.method)
        base = {
            n: evaluate_clicks(engine, im, gt, max_clicks=args.max_clicks)["ious"]
            for n, im, gt in views
        }
        for variant in args.variants.split(","):
            kwargs = VARIANTS[variant]
            d_noc, d_miou, per_order = [], [], []
            accepted, cpu = [], []
            start = time.perf_counter()
            for order in range(args.orders):
                perm = np.random.default_rng(order).permutation(len(views))
                seq = [views[i] for i in perm]
                out = evaluate_sequential(
                    RefinementEngine(model, method=args.method),
                    seq,
                    max_clicks=args.max_clicks,
                    baseline=False,
                    adapt_kwargs=kwargs,
                )
                half = len(seq) // 2
                dn, dm = [], []
                for (n, _, _), run in zip(seq[half:], out["adapted"][half:], strict=True):
                    dn.append(_noc(run["ious"]) - _noc(base[n]))
                    dm.append(run["ious"][4] - base[n][4])
                d_noc += dn
                d_miou += dm
                per_order.append([round(float(np.mean(dn)), 3), round(float(np.mean(dm)), 4)])
                accepted += [bool(r.get("accepted", True)) for r in out["adapt"]]
                cpu += [r["cpu_seconds"] for r in out["adapt"]]
            second = [
                views[i][0]
                for o in range(args.orders)
                for i in np.random.default_rng(o).permutation(len(views))[len(views) // 2 :]
            ]
            emit(
                {
                    "bench": "tune_adapt",
                    "set": name,
                    "split": split,
                    "method": args.method,
                    "variant": variant,
                    "adapt_kwargs": kwargs,
                    "n_views": len(views),
                    "orders": args.orders,
                    "baseline_noc85": round(float(np.mean([_noc(base[n]) for n in second])), 3),
                    "baseline_miou5": round(float(np.mean([base[n][4] for n in second])), 4),
                    "d_noc85": round(float(np.mean(d_noc)), 3),
                    "d_noc85_ci95": bootstrap(d_noc),
                    "d_miou5": round(float(np.mean(d_miou)), 4),
                    "d_miou5_ci95": bootstrap(d_miou),
                    "per_order_d_noc85_d_miou5": per_order,
                    "accepted_share": round(float(np.mean(accepted)), 3),
                    "adapt_cpu_s_median": round(float(np.median(cpu)), 3),
                    "adapt_cpu_s_max": round(float(np.max(cpu)), 3),
                    "wall_s": round(time.perf_counter() - start, 1),
                }
            )


if __name__ == "__main__":
    main()
