"""Interactive refinement benchmark: NoC@80/85/90, failures, mIoU/mDice per click, s per click.

Every method (CGAM and its baselines f-BRS, no refinement, random walker) with the standard
click simulator (next click at the deepest error, up to 20 clicks or IoU 0.90) on:

``lodo:<set>``
    leave-one-dataset-out: the network trained *without* ``<set>``
    (``python -m workbench.train_clicknet --preset fold:<set> --iterations 3000``,
    about 25 min each on one CPU thread) on every pair of
    ``<set>`` outside its ``val`` part (region sets: whole images; nucleus sets: object-centred
    views of single nuclei). The ``val`` parts are left out because the engine's settings
    (loss disk, locality weight) were chosen on them;
``indomain:<set>``
    the packaged network on the ``test`` part of ``<set>`` (never trained on);
``val:<set>``
    the fold networks on the ``val`` parts of their training sets: where settings are chosen
    (reported with ``"role": "validation"``, never as a result). The engine's loss-disk and
    locality settings were chosen on the ``val`` parts of OCDC, CAMELYON, MoNuSeg and TNBC with
    the ``pretrain`` network, which never saw a real pair;
``synthetic:procedural`` / ``synthetic:cohort``
    procedural views (seeds 50,000+) and lesion views of an unseen synthetic cohort (seed 2024);
``indomain:ebhi`` / ``loco:ebhi_serrated``
    many-object biopsy views (EBHI-Seg, every gland of a mask one target, the whole 224 px
    image resized to 448 px): the packaged network on the ``test`` cases (unseen cases of
    seen classes), and on the serrated adenomas, a class whose every case was held out of
    training and tuning (leave-one-class-out). Views are drawn round-robin over cases, at
    most ``--ebhi-views`` per set;
``sequential:<set>``
    the test views of a real set (``--sequential-sets``) in ``--sequential-orders`` orders
    (order 0 by class and file name, the others random); after each view the engine adapts on
    its true mask (:meth:`RefinementEngine.adapt`), as when a user confirms an outline; NoC
    and mIoU@5 on the second half of each order (pooled), with and without adaptation, and
    the paired per-view change with a bootstrap interval. ``ebhi_stroma`` is the EBHI-Seg
    test views with the stroma and lumen as the outline (the complement of the gland mask):
    a target the network was never taught, where a user's own convention has to be learnt;
``latency1024``
    seconds per click on 1024 x 1024 views (real test images resized), at each torch thread
    count of ``--latency-threads``.

Where a set mixes one-lesion masks with fragmented ones (largest piece < 90% of the mask),
each line also carries ``one_object`` and ``fragmented`` summaries of the two kinds of view.

Every line carries NoC@80/85/90, failures at 20 clicks (NoF ``failures85`` / ``failures90``),
mIoU and mDice after 1, 3, 5, 10 and 20 clicks and the median / p95 seconds per click.

Prints one JSON line per (evaluation set, method), appends them to ``--jsonl`` and draws the
mIoU-per-click figure (``--plot``).

    .venv/bin/python benchmarks/interactive.py [--quick] [--evals lodo,indomain,synthetic,latency]
    .venv/bin/python benchmarks/interactive.py --evals ebhi,sequential --datasets ebhi
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NETWORK_METHODS = ("cgam", "fbrs", "none")
CURVE_AT = (1, 3, 5, 10, 20)  # clicks at which mIoU and mDice are reported


def _default_root() -> str:
    return os.environ.get("WORKBENCH_REAL_DATA") or str(ROOT.parent / "shared" / "data")


def resize_view(image: np.ndarray, mask: np.ndarray, side: int):
    from PIL import Image

    im = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.BILINEAR)
    return im, np.asarray(m) > 127


def make_engine(method: str, model, *, rw_work: int, threads: int = 1):
    """The engine of a benchmark method (variants of CGAM by name), with its torch threads."""
    from workbench.interactive import RefinementEngine

    if method == "random_walker":
        return RefinementEngine(method="random_walker", work_size=rw_work, threads=threads)
    variants = {
        "cgam_n8": ("cgam", {"network_clicks": 8}),  # the reference: clicks 9+ via the gate only
        # The gate as it shipped before: loss on the 5-pixel click disk only, locality weight 1.
        "cgam_fixed_disk": ("cgam", {"adaptive_disk": 0.0, "locality_weight": 1.0}),
        "cgam_cached": ("cgam", {"reencode": False}),
        "fbrs_cached": ("fbrs", {"reencode": False}),
        # "all like this": a positive click also proposes the similar structures of the view
        "cgam_all": ("cgam", {"propagate": "all"}),
        "none_all": ("none", {"propagate": "all"}),
        # local corrections: from the third click on, a click changes only its region's box
        "cgam_local": ("cgam", {"local_corrections": True}),
    }
    base, kwargs = variants.get(method, (method, {}))
    return RefinementEngine(model, method=base, threads=threads, **kwargs)


def largest_object_share(mask: np.ndarray) -> float:
    """The share of the mask's pixels in its largest connected component (1 for one object)."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask)
    if n == 0:
        return 0.0
    return float(np.bincount(labels.ravel())[1:].max() / labels.astype(bool).sum())


def run(method: str, views, *, model, max_clicks: int, rw_work: int, threads: int = 1) -> dict:
    """Summary over every view, plus the same summary split by the shape of the truth: views
    whose mask is one lesion (largest component >= 90% of it) and fragmented ones (several
    pieces, as in CAMELYON's blocky masks), when a set has both."""
    from workbench.interactive import evaluate_clicks, summarize

    engine = make_engine(method, model, rw_work=rw_work, threads=threads)
    runs = [evaluate_clicks(engine, im, gt, max_clicks=max_clicks) for _, im, gt in views]
    summary = summarize(runs, max_clicks=max_clicks)
    summary["mdice_per_click"] = mean_dice_per_click(runs)
    one = [largest_object_share(gt) >= 0.9 for _, _, gt in views]
    if any(one) and not all(one):
        for key, keep in (("one_object", True), ("fragmented", False)):
            kept = [r for r, o in zip(runs, one, strict=True) if o == keep]
            part = summarize(kept, max_clicks=max_clicks)
            curve = part["miou_per_click"]
            summary[key] = {
                "n_views": part["n_views"],
                **{k: round(part[k], 4) for k in ("noc80", "noc85", "noc90")},
                "failures85": part["failures85"],
                "miou@1,3,5,10,20": [curve[i] for i in (0, 2, 4, 9, 19) if i < len(curve)],
            }
    return summary


def mean_dice_per_click(runs: list[dict]) -> list[float]:
    """Mean Dice after each click over the views (Dice = 2 IoU / (1 + IoU) per view)."""
    if not runs:
        return []
    ious = np.asarray([r["ious"] for r in runs], dtype=float)
    return [round(float(v), 4) for v in (2 * ious / (1 + ious)).mean(axis=0)]


def at_clicks(curve: list[float]) -> list[float]:
    """The values of a per-click curve after 1, 3, 5, 10 and 20 clicks (those it has)."""
    return [curve[k - 1] for k in CURVE_AT if k <= len(curve)]


def sequential(
    method: str,
    views,
    *,
    model,
    max_clicks: int,
    rw_work: int,
    orders: int = 1,
    adapt_kwargs: dict | None = None,
) -> dict:
    """The sequential protocol (:func:`~workbench.interactive.evaluate_sequential`): ``views``
    in ``orders`` orders (order 0 as given, the others random permutations with seeds 1, 2,
    ...), one engine adapting on each view's true mask after it, against the packaged
    network on the same views (which does not depend on the order, so it runs once per view).

    Returns ``{"adapted": summary, "baseline": summary}`` of the second halves (every order's
    second half pooled: ``n_views`` = orders x half), ``per_order`` (second-half NoC@85 and
    mIoU@5 of each order, baseline and adapted), ``paired`` (the mean per-view change of
    NoC@85 and mIoU@5 with 95 % bootstrap intervals over the pooled (order, view) pairs) and
    what the adaptations took (``adapt``)."""
    from workbench.interactive import evaluate_clicks, evaluate_sequential, summarize

    def factory():
        engine = make_engine(method, model, rw_work=rw_work)
        if not hasattr(engine, "adapt"):
            raise SystemExit(f"{method} has no adapt(): the sequential protocol needs it")
        return engine

    fixed = factory()
    base = [evaluate_clicks(fixed, im, gt, max_clicks=max_clicks) for _, im, gt in views]
    half = len(views) // 2
    adapted_runs, baseline_runs, per_order, reports = [], [], [], []
    for order in range(orders):
        perm = (
            np.arange(len(views))
            if order == 0
            else np.random.default_rng(order).permutation(len(views))
        )
        result = evaluate_sequential(
            factory,
            [views[i] for i in perm],
            max_clicks=max_clicks,
            baseline=False,
            adapt_kwargs=adapt_kwargs,
        )
        second_a = result["adapted"][half:]
        second_b = [base[i] for i in perm[half:]]
        adapted_runs += second_a
        baseline_runs += second_b
        reports += [r for r in result["adapt"] if isinstance(r, dict)]
        sa = summarize(second_a, max_clicks=max_clicks)
        sb = summarize(second_b, max_clicks=max_clicks)
        per_order.append(
            {
                "order": order,
                "noc85": [round(sb["noc85"], 3), round(sa["noc85"], 3)],
                "miou@5": [sb["miou_per_click"][4], sa["miou_per_click"][4]],
            }
        )
    out = {}
    for key, runs in (("adapted", adapted_runs), ("baseline", baseline_runs)):
        summary = summarize(runs, max_clicks=max_clicks)
        summary["mdice_per_click"] = mean_dice_per_click(runs)
        out[key] = summary
    d_noc = [
        _noc(a["ious"], 0.85, max_clicks) - _noc(b["ious"], 0.85, max_clicks)
        for a, b in zip(adapted_runs, baseline_runs, strict=True)
    ]
    d_miou = [a["ious"][4] - b["ious"][4] for a, b in zip(adapted_runs, baseline_runs, strict=True)]
    out["paired"] = {
        "d_noc85": round(float(np.mean(d_noc)), 3),
        "d_noc85_ci95": bootstrap_ci(d_noc),
        "d_miou5": round(float(np.mean(d_miou)), 4),
        "d_miou5_ci95": bootstrap_ci(d_miou),
    }
    out["per_order"] = per_order
    out["adapt"] = {
        "calls": len(reports),
        "accepted_share": round(float(np.mean([r.get("accepted", True) for r in reports])), 3)
        if reports
        else None,
        "mean_steps": round(float(np.mean([r.get("steps", 0) for r in reports])), 1)
        if reports
        else None,
        "cpu_seconds_median": round(float(np.median([r["cpu_seconds"] for r in reports])), 3)
        if reports
        else None,
        "cpu_seconds_max": round(float(np.max([r["cpu_seconds"] for r in reports])), 3)
        if reports
        else None,
    }
    return out


def _noc(ious, target: float, max_clicks: int) -> int:
    for k, value in enumerate(ious, start=1):
        if value >= target:
            return k
    return max_clicks


def bootstrap_ci(values, n: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of the mean of ``values``."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def fold_weights(folds: Path, dataset: str) -> Path:
    """The fold network trained without ``dataset``: the checkpoint folder ``fold_<dataset>``, or
    a fold that held out several sets together (``fold_monusac+monuseg+tnbc``)."""
    own = folds / f"fold_{dataset}"
    if own.exists():
        return own
    for path in sorted(p for p in folds.glob("fold_*") if p.is_dir()):
        if dataset in path.name.removeprefix("fold_").split("+"):
            return path
    return own


def eval_sets(args) -> list[dict]:
    """What to evaluate: name, role, weights (None = packaged) and a loader of views."""
    from workbench.datasets._mask_pairs import (
        GLAND_DATASETS,
        NUCLEUS_DATASETS,
        REAL_DATASETS,
        benchmark_views,
        cohort_views,
        load_mask_pairs,
        synthetic_lesion_views,
    )

    root = Path(args.real_root)
    have_real = (root / "masks").is_dir()
    n_obj = 6 if args.quick else args.nucleus_views
    n_region = 3 if args.quick else 1000
    n_ebhi = 4 if args.quick else args.ebhi_views
    folds = Path(args.folds)
    sets: list[dict] = []
    wanted = args.evals.split(",")
    datasets = args.datasets.split(",")

    def real(dataset, split, seed):
        def load():
            n = n_obj if dataset in NUCLEUS_DATASETS else n_region
            n = n_ebhi if dataset in GLAND_DATASETS else n
            return benchmark_views(root, dataset, split=split, max_views=n, seed=seed)

        return load

    for dataset in datasets:
        if dataset not in REAL_DATASETS:
            raise SystemExit(f"unknown dataset {dataset!r}; choose from {', '.join(REAL_DATASETS)}")
        if "lodo" in wanted:
            sets.append(
                {
                    "eval": f"lodo:{dataset}",
                    "role": "test",
                    "weights": fold_weights(folds, dataset),
                    "source": f"pairs of {dataset} outside its val part; network trained "
                    f"without {dataset}",
                    "views": real(dataset, "not_val", 11),
                    "needs_real": True,
                }
            )
        if "indomain" in wanted:
            sets.append(
                {
                    "eval": f"indomain:{dataset}",
                    "role": "test",
                    "weights": None,
                    "source": (
                        f"test split of {dataset} (every third source group)"
                        if dataset not in GLAND_DATASETS
                        else f"{dataset} test cases (unseen cases of seen classes), whole 224 px "
                        "images at 448 px, every gland of a mask one target"
                    ),
                    "views": real(dataset, "test", 12),
                    "needs_real": True,
                }
            )

    def ebhi(dataset, split, seed):
        return lambda: benchmark_views(root, dataset, split=split, max_views=n_ebhi, seed=seed)

    if "loco" in wanted:
        sets.append(
            {
                "eval": "loco:ebhi_serrated",
                "role": "test",
                "weights": None,
                "source": "EBHI-Seg serrated adenomas: a class whose every case was held out of "
                "training and tuning (leave-one-class-out), 448 px views",
                "views": ebhi("ebhi_serrated", "test", 15),
                "needs_real": True,
            }
        )
    if "sequential" in wanted:
        for dataset in args.sequential_sets.split(","):
            split = "test"
            if dataset not in (*REAL_DATASETS, "ebhi_serrated", "ebhi_stroma"):
                raise SystemExit(f"unknown sequential set {dataset!r}")

            def ordered(dataset=dataset, split=split):
                # ebhi_stroma: the EBHI-Seg test views with the complement of the gland mask
                # as the outline (stroma and lumen): a target the network was never taught.
                source = "ebhi" if dataset == "ebhi_stroma" else dataset
                n = n_ebhi if source in ("ebhi", "ebhi_serrated") else n_obj
                n = n if source not in ("ocdc", "camelyon") else n_region
                views = benchmark_views(root, source, split=split, max_views=n, seed=16)
                if dataset == "ebhi_stroma":
                    views = [(name, im, ~m) for name, im, m in views]
                return sorted(views, key=lambda v: v[0])  # order 0: by class, then file

            sets.append(
                {
                    "eval": f"sequential:{dataset}",
                    "role": "test",
                    "weights": None,
                    "source": f"{dataset} test views (order 0 by name, then random orders); "
                    "the engine adapts on each view's true mask after it; figures on the "
                    "second half of each order, pooled",
                    "views": ordered,
                    "needs_real": True,
                    "protocol": "sequential",
                }
            )
    if "val" in wanted:
        for held in datasets:
            weights = fold_weights(folds, held)
            held_out = set(weights.name.removeprefix("fold_").split("+")) | {held}
            for dataset in REAL_DATASETS:
                if dataset in held_out:
                    continue
                sets.append(
                    {
                        "eval": f"val:{held}:{dataset}",
                        "role": "validation",
                        "weights": weights,
                        "source": f"val split of {dataset}, network of fold {held}",
                        "views": real(dataset, "val", 13),
                        "needs_real": True,
                    }
                )
    if "synthetic" in wanted:
        n_syn = 3 if args.quick else args.n_synthetic
        sets.append(
            {
                "eval": "synthetic:procedural",
                "role": "test",
                "weights": None,
                "source": "procedural lesion views, seeds 50,000+ (training used 10,000+)",
                "views": lambda: [
                    (f"p{i}", im, m)
                    for i, (im, m) in enumerate(
                        synthetic_lesion_views(n_syn, size=320, seed=50_000)
                    )
                ],
                "needs_real": False,
            }
        )
        sets.append(
            {
                "eval": "synthetic:cohort",
                "role": "test",
                "weights": None,
                "source": "lesion-centred views of a synthetic cohort (tiny, seed 2024)",
                "views": lambda: cohort_views(
                    Path(args.cohort_root), n_patients=2 if args.quick else 6, seed=2024
                ),
                "needs_real": False,
            }
        )
    if "latency" in wanted:

        def latency_views():
            if not have_real:
                base = [(f"p{i}", im, m) for i, (im, m) in enumerate(synthetic_lesion_views(4))]
            else:
                base = benchmark_views(root, "ocdc", split="test")[:2]
                base += [
                    (p.name, p.image, p.mask)
                    for p in load_mask_pairs(root, "monuseg", split="test")[:2]
                ]
            return [(n, *resize_view(im, m, 1024)) for n, im, m in base[: 2 if args.quick else 4]]

        sets.append(
            {
                "eval": "latency1024",
                "role": "test",
                "weights": None,
                "source": "ocdc + monuseg test images resized to 1024x1024",
                "views": latency_views,
                "needs_real": False,
            }
        )
    return sets


OLD_SUFFIX = "_old_network"  # a method of an earlier network, drawn dashed for comparison


def plot_curves(lines: list[dict], path: Path) -> None:
    """mIoU per click per method, one panel per evaluation set (methods named
    ``<method>_old_network`` are drawn dashed in their method's colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [e for e in dict.fromkeys(line["eval"] for line in lines) if e != "latency1024"]
    if not evals:
        return
    cols = min(4, len(evals))
    rows = int(np.ceil(len(evals) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    colours = {
        "cgam": "#d62728",
        "cgam_n8": "#ff9896",
        "cgam_fixed_disk": "#9467bd",
        "fbrs": "#1f77b4",
        "none": "#7f7f7f",
        "random_walker": "#2ca02c",
    }
    for ax, name in zip(axes.ravel(), evals, strict=False):
        for line in lines:
            if line["eval"] != name:
                continue
            curve = line["miou_per_click"]
            method = line["method"]
            base = method.removesuffix(OLD_SUFFIX)
            ax.plot(
                range(1, len(curve) + 1),
                curve,
                label=method.replace("_", " ") if base != method else method,
                color=colours.get(base),
                lw=1.2 if base != method else 1.6,
                ls="--" if base != method else "-",
            )
        n_views = next(ln["n_views"] for ln in lines if ln["eval"] == name)
        ax.set_title(f"{name} (n={n_views})", fontsize=9)
        ax.set_ylim(0, 1)
        ax.axhline(0.85, color="grey", lw=0.6, ls="--")
        ax.set_xlabel("clicks", fontsize=8)
        ax.set_ylabel("mIoU", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(evals) :]:
        ax.set_axis_off()
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    from workbench.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-root", default=_default_root())
    parser.add_argument("--folds", default=str(ROOT / "data" / "generated" / "interactive"))
    parser.add_argument("--methods", default="cgam,cgam_fixed_disk,cgam_n8,fbrs,none,random_walker")
    parser.add_argument("--evals", default="lodo,indomain,loco,sequential,synthetic,latency")
    parser.add_argument("--datasets", default="ocdc,camelyon,monusac,monuseg,tnbc,ebhi")
    parser.add_argument(
        "--cohort-root", default=str(ROOT / "data" / "generated" / "bench_interactive")
    )
    parser.add_argument("--n-synthetic", type=int, default=8)
    parser.add_argument("--nucleus-views", type=int, default=30)
    parser.add_argument("--ebhi-views", type=int, default=40, help="views per EBHI-Seg set")
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--rw-work-size", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--latency-threads", default="1,2", help="torch thread counts of the latency runs"
    )
    parser.add_argument(
        "--sequential-methods", default="cgam", help="methods run with the sequential protocol"
    )
    parser.add_argument(
        "--sequential-sets",
        default="ebhi_serrated,ebhi,ocdc,camelyon,monuseg,tnbc,monusac",
        help="test sets run with the sequential protocol",
    )
    parser.add_argument(
        "--sequential-orders", type=int, default=3, help="orders of the views per sequential set"
    )
    parser.add_argument(
        "--weights", default=None, help="network to test instead of the packaged one"
    )
    parser.add_argument("--quick", action="store_true", help="a few views each, for a smoke run")
    parser.add_argument("--jsonl", default=None, help="append the JSON lines to this file")
    parser.add_argument("--plot", default=None, help="write the mIoU-per-click figure here")
    args = parser.parse_args()

    import torch

    from workbench.models import load_click_segmenter

    packaged = load_click_segmenter(args.weights)
    packaged_name = Path(args.weights).name if args.weights else "packaged"
    packaged_sha = _sha_of(Path(args.weights) if args.weights else None)
    methods = args.methods.split(",")
    lines: list[dict] = []

    def emit(spec, method, summary, views, weights, threads, start, **extra):
        curve = summary["miou_per_click"]
        line = {
            "eval": spec["eval"],
            "role": spec["role"],
            "source": spec["source"],
            "method": method,
            **extra,
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()},
            "miou@1,3,5,10,20": at_clicks(curve),
            "mdice@1,3,5,10,20": at_clicks(summary.get("mdice_per_click", [])),
            "view_px": list(views[0][2].shape),
            "weights": packaged_name if weights is None else Path(weights).name,
            "weights_sha256": packaged_sha if weights is None else _sha_of(Path(weights)),
            "torch_threads": threads,
            "cpu_count": os.cpu_count(),
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "wall_s": round(time.perf_counter() - start, 1),
        }
        lines.append(line)
        print(json.dumps(line), flush=True)
        if args.jsonl:
            Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(line) + "\n")

    for spec in eval_sets(args):
        if spec["needs_real"] and not Path(args.real_root, "masks").is_dir():
            print(json.dumps({"eval": spec["eval"], "skipped": "shared masks not found"}))
            continue
        weights = spec["weights"]
        if weights is not None and not Path(weights).exists():
            print(
                json.dumps(
                    {
                        "eval": spec["eval"],
                        "skipped": f"no fold network at {weights}; train it with "
                        "python -m workbench.train_clicknet --preset fold:<set> --out ...",
                    }
                )
            )
            continue
        model = packaged if weights is None else load_click_segmenter(weights)
        views = spec["views"]()
        if not views:
            print(json.dumps({"eval": spec["eval"], "skipped": "no views"}))
            continue
        kw = {"model": model, "max_clicks": args.max_clicks, "rw_work": args.rw_work_size}
        if spec.get("protocol") == "sequential":
            torch.set_num_threads(args.threads)
            for method in args.sequential_methods.split(","):
                start = time.perf_counter()
                out = sequential(method, views, orders=args.sequential_orders, **kw)
                for adapt in (False, True):
                    summary = out["adapted" if adapt else "baseline"]
                    extra = {
                        "adapt": adapt,
                        "n_sequence": len(views),
                        "orders": args.sequential_orders,
                        "scored": "second half of every order, pooled",
                    }
                    if adapt:
                        extra["adaptation"] = out["adapt"]
                        extra["paired"] = out["paired"]
                        extra["per_order"] = out["per_order"]
                    emit(spec, method, summary, views, weights, args.threads, start, **extra)
            continue
        thread_counts = [args.threads]
        if spec["eval"] == "latency1024":
            thread_counts = [int(t) for t in str(args.latency_threads).split(",")]
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for method in methods:
                if spec["eval"] == "latency1024" and method == "random_walker":
                    continue
                start = time.perf_counter()
                summary = run(method, views, threads=threads, **kw)
                emit(spec, method, summary, views, weights, threads, start)
    if args.plot and lines:
        plot_curves([ln for ln in lines if ln["role"] == "test"], Path(args.plot))


def _sha_of(path: Path | None) -> str:
    """SHA-256 of a checkpoint's weights (the packaged one when ``path`` is None), first 12
    digits, as its ``config.json`` records (and the loader verifies)."""
    from workbench.models import CLICK_SEGMENTER, read_checkpoint_config

    return read_checkpoint_config(path or CLICK_SEGMENTER)["weights_sha256"][:12]


if __name__ == "__main__":
    main()
