"""Choose the "all like this" and local-correction settings of the refinement engine.

Validation data only: the EBHI-Seg ``val`` cases (views resized to 448 px, split into
many-object and one-object views by the largest piece's share of the mask, as
``benchmarks/interactive.py`` does) and the ``val`` parts of the other real sets
(``datasets.benchmark_views``). Every variant runs the standard click simulator
(``evaluate_clicks``, 20 clicks, stop at IoU 0.90) with the packaged network; the baseline
(``propagate="one"``, no local corrections) runs in the same process.

Prints one JSON line per (variant, set) with NoC@85/90, mIoU@1/3/5/10 and a 95 % bootstrap
interval of each variant's NoC@85 difference to the baseline on the same views, then a
``choice`` line with the rule applied:

- ``propagate="all"`` becomes the default only if it lowers NoC@85 on the many-object views
  and costs no other set (one-object EBHI views, the other sets' val parts) more than 0.3
  clicks;
- ``local_corrections=True`` only if it lowers NoC@85 on the many-object views and costs
  no set more than 0.3 clicks.

The ``none`` and ``cgam_*`` variants try the per-click optimisation itself (no refinement;
a larger step, more steps, a weaker locality penalty, a larger margin); they print their lines
and are not part of the choice.

Usage: ``python benchmarks/tune_propagate.py [--quick] [--real-root ../shared/data]``.
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

ONE_OBJECT_SHARE = 0.9  # largest piece >= 90 % of the mask: a one-object view
VARIANTS = {
    "one": {},
    "all@0.4": {"propagate": "all", "similarity": 0.4},
    "all@0.5": {"propagate": "all", "similarity": 0.5},
    "all@0.6": {"propagate": "all", "similarity": 0.6},
    "all@0.7": {"propagate": "all", "similarity": 0.7},
    "local@2": {"local_corrections": True, "local_from": 2},
    "local@3": {"local_corrections": True, "local_from": 3},
    "local@5": {"local_corrections": True, "local_from": 5},
    # the per-click optimisation itself (CGAM), against "one" (CGAM defaults) and "none"
    "none": {"method": "none"},
    "cgam_lr0.1": {"lr": 0.1},
    "cgam_steps50": {"steps": 50},
    "cgam_locality0.1": {"locality_weight": 0.1},
    "cgam_margin3": {"margin": 3.0},
    "cgam_maxr16": {"max_loss_radius": 16.0},
    "cgam_maxr32": {"max_loss_radius": 32.0},
}


def _resized(image, mask, side):
    from PIL import Image

    im = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((side, side), Image.BILINEAR)
    return im, np.asarray(m) > 127


def largest_share(mask: np.ndarray) -> float:
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask)
    if n == 0:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return float(sizes.max() / sizes.sum())


def load_sets(root: Path, quick: bool, n_ebhi: int = 32, n_other: int = 6) -> dict[str, list]:
    from workbench.datasets import benchmark_views, ebhi_images

    items = ebhi_images(root, split="val")
    step = max(len(items) // (12 if quick else n_ebhi), 1)
    many, one = [], []
    for item in items[::step]:
        image, mask = item.load()
        if mask.mean() < 0.01:
            continue
        view = (item.name, *_resized(image, mask, 448))
        (one if largest_share(view[2]) >= ONE_OBJECT_SHARE else many).append(view)
    sets = {"ebhi_val:many_object": many, "ebhi_val:one_object": one}
    for dataset, n in (("ocdc", 8), ("camelyon", 8), ("monuseg", 10), ("tnbc", 10)):
        try:
            views = benchmark_views(
                root, dataset, split="val", max_views=3 if quick else n, seed=13
            )
        except (OSError, ValueError):
            continue
        if views:
            sets[f"{dataset}_val"] = views
    return sets


def _noc(ious, target, max_clicks):
    for k, v in enumerate(ious, start=1):
        if v >= target:
            return k
    return max_clicks


def _boot_diff(a, b, seed=0, n=2000):
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    d = (a[idx] - b[idx]).mean(axis=1)
    return [round(float(np.percentile(d, 2.5)), 3), round(float(np.percentile(d, 97.5)), 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--real-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--ebhi-views", type=int, default=32, help="EBHI val images sampled")
    parser.add_argument("--other-views", type=int, default=6, help="views per other set")
    args = parser.parse_args()

    import torch
    from tqdm.auto import tqdm

    from workbench.interactive import RefinementEngine, evaluate_clicks
    from workbench.models import load_click_segmenter

    torch.set_num_threads(1)
    model = load_click_segmenter()
    sets = load_sets(Path(args.real_root), args.quick, args.ebhi_views, args.other_views)
    names = args.variants.split(",")
    if "one" not in names:
        names.insert(0, "one")
    nocs: dict[tuple[str, str], list[int]] = {}
    for set_name, views in sets.items():
        for variant in names:
            engine = RefinementEngine(model, **VARIANTS[variant])
            runs = []
            start = time.process_time()
            for _, image, mask in tqdm(views, desc=f"{set_name} {variant}", leave=False):
                runs.append(
                    evaluate_clicks(
                        engine, image, mask, max_clicks=args.max_clicks, target_iou=0.90
                    )
                )
            curve = np.mean([r["ious"] for r in runs], axis=0)
            n85 = [_noc(r["ious"], 0.85, args.max_clicks) for r in runs]
            n90 = [_noc(r["ious"], 0.90, args.max_clicks) for r in runs]
            nocs[(set_name, variant)] = n85
            line = {
                "set": set_name,
                "variant": variant,
                "settings": VARIANTS[variant],
                "n_views": len(runs),
                "noc85": round(float(np.mean(n85)), 3),
                "noc90": round(float(np.mean(n90)), 3),
                "failures85": int(sum(max(r["ious"]) < 0.85 for r in runs)),
                **{
                    f"miou@{k}": round(float(curve[k - 1]), 4)
                    for k in (1, 3, 5, 10)
                    if k <= len(curve)
                },
                "cpu_per_click_median": round(
                    float(np.median([s for r in runs for s in r["cpu_seconds"]])), 4
                ),
                "cpu_seconds": round(time.process_time() - start, 1),
            }
            if variant != "one":
                line["noc85_minus_one_ci95"] = _boot_diff(n85, nocs[(set_name, "one")])
            print(json.dumps(line), flush=True)

    def delta(set_name, variant):
        if (set_name, variant) not in nocs:
            return None
        return float(np.mean(nocs[(set_name, variant)]) - np.mean(nocs[(set_name, "one")]))

    many, one_sets = "ebhi_val:many_object", [s for s in sets if s != "ebhi_val:many_object"]
    best_all = min(
        (v for v in names if v.startswith("all")), key=lambda v: delta(many, v), default=None
    )
    best_local = min(
        (v for v in names if v.startswith("local")), key=lambda v: delta(many, v), default=None
    )
    choice = {"choice": True, "propagate": "one", "local_corrections": False}
    if best_all is not None:
        gain = delta(many, best_all)
        cost = max((delta(s, best_all) for s in one_sets), default=0.0)
        choice["best_all"] = {
            "variant": best_all,
            "many_object_delta": gain,
            "one_object_delta": cost,
        }
        if gain < 0 and cost <= 0.3:
            choice["propagate"] = "all"
            choice["similarity"] = VARIANTS[best_all]["similarity"]
    if best_local is not None:
        gain = delta(many, best_local)
        cost = max(delta(s, best_local) for s in one_sets)
        choice["best_local"] = {
            "variant": best_local,
            "many_object_delta": gain,
            "worst_other_delta": cost,
        }
        if gain < 0 and cost <= 0.3:
            choice["local_corrections"] = True
            choice["local_from"] = VARIANTS[best_local]["local_from"]
    print(json.dumps(choice), flush=True)


if __name__ == "__main__":
    main()
