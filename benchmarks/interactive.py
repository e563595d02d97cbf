"""Interactive refinement benchmark: NoC@85/90, mIoU per click, failures, seconds per click.

Runs every method (CGAM and the three baselines) with the standard click simulator on
(a) synthetic lesion views, (b) the held-out test split of the shared real masks
(``masks/ocdc`` and ``masks/camelyon``; every third image in sorted order — the base network
never saw them), and (c) a latency run on 1024 x 1024 views (real test images upsampled).
Prints one JSON line per (dataset, method).

    .venv/bin/python benchmarks/interactive.py [--real-root ../shared/data] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def synthetic_views(n: int, size: int):
    """Views around lesions of the synthetic cohort if it is available, else procedural."""
    from workbench.interactive._data import synthetic_lesion_views

    # Seeds 50_000+ are disjoint from the training seeds (10_000 .. 10_059).
    return "procedural", [
        (f"p{i}", im, m)
        for i, (im, m) in enumerate(synthetic_lesion_views(n, size=size, seed=50_000))
    ]


def upsample(image: np.ndarray, mask: np.ndarray, side: int):
    from PIL import Image

    im = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
    m = (
        np.asarray(
            Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.BILINEAR)
        )
        > 127
    )
    return im, m


def run(method: str, views, *, max_clicks: int, model, rw_work: int) -> dict:
    from workbench.interactive import RefinementEngine, evaluate_clicks, summarize

    kwargs: dict = {"work_size": rw_work} if method == "random_walker" else {}
    if method.endswith("_cached"):
        # The literal reading of the spec: backbone features once per view (no click maps
        # into the backbone); clicks act only through the gate / scale-bias optimisation.
        method, kwargs = method.removesuffix("_cached"), {"reencode": False}
    engine = RefinementEngine(model if method != "random_walker" else None, method=method, **kwargs)
    runs = [evaluate_clicks(engine, im, gt, max_clicks=max_clicks) for _, im, gt in views]
    return summarize(runs, max_clicks=max_clicks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = os.environ.get("WORKBENCH_REAL_DATA") or str(
        Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    parser.add_argument("--real-root", default=default_root)
    parser.add_argument("--methods", default="cgam,fbrs,none,random_walker,cgam_cached,fbrs_cached")
    parser.add_argument("--datasets", default="cohort,synthetic,ocdc,camelyon,latency1024")
    parser.add_argument(
        "--cohort-root",
        default=str(
            Path(__file__).resolve().parents[1] / "data" / "generated" / "bench_interactive"
        ),
    )
    parser.add_argument("--n-patients", type=int, default=6)
    parser.add_argument("--n-synthetic", type=int, default=8)
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--rw-work-size", type=int, default=160)
    parser.add_argument("--quick", action="store_true", help="fewer views, for a smoke run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from workbench.interactive import load_base_model
    from workbench.interactive._data import cohort_views, real_mask_pairs

    model = load_base_model()
    methods = args.methods.split(",")
    datasets = args.datasets.split(",")
    n_syn = 3 if args.quick else args.n_synthetic
    meta = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    for dataset in datasets:
        if dataset == "cohort":
            source = f"synthetic cohort (tiny, seed 2024, {args.n_patients} slides), lesion-centred views"
            views = cohort_views(
                Path(args.cohort_root), n_patients=2 if args.quick else args.n_patients, seed=2024
            )
        elif dataset == "synthetic":
            source, views = synthetic_views(n_syn, 320)
        elif dataset in ("ocdc", "camelyon"):
            if not Path(args.real_root, "masks", dataset).is_dir():
                print(json.dumps({"dataset": dataset, "skipped": "shared masks not found"}))
                continue
            source = "shared test split"
            views = real_mask_pairs(args.real_root, dataset, split="test", min_fraction=0.01)
            if args.quick:
                views = views[:3]
        elif dataset == "latency1024":
            if Path(args.real_root, "masks", "ocdc").is_dir():
                base = real_mask_pairs(args.real_root, "ocdc", split="test", min_fraction=0.01)
                source = "ocdc test split upsampled to 1024x1024"
            else:
                source, base = synthetic_views(4, 320)
                source += " upsampled to 1024x1024"
            views = [(n, *upsample(im, m, 1024)) for n, im, m in base[: 2 if args.quick else 4]]
        else:
            raise SystemExit(f"unknown dataset {dataset!r}")
        for method in methods:
            if dataset == "latency1024" and method == "random_walker":
                continue
            start = time.perf_counter()
            summary = run(
                method, views, max_clicks=args.max_clicks, model=model, rw_work=args.rw_work_size
            )
            curve = summary.pop("miou_per_click")
            line = {
                "dataset": dataset,
                "source": source,
                "method": method,
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()},
                "miou@1,3,5,10,20": [curve[i] for i in (0, 2, 4, 9, 19) if i < len(curve)],
                "view_px": list(views[0][2].shape),
                "wall_s": round(time.perf_counter() - start, 1),
                **meta,
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
