"""Choose when CGAM's loss disk grows: always, never, or only where the network is unsure.

Validation data only. Views: every EBHI-Seg ``val`` view (``datasets.benchmark_views``, the
whole 224 px image resized to 448 px, as ``benchmarks/interactive.py`` draws its test views),
split into many-object and one-object views by the largest piece's share of the mask, and the
``val`` parts of OCDC, CAMELYON, MoNuSeg, TNBC and MoNuSAC. The network is the packaged one
(it was trained on the *train* parts of all these sets: tissue it knows) or, with
``--weights``, a checkpoint folder: the ``pretrain`` network (no real pair at all) or a
leave-one-dataset-out fold (``fold_ocdc``: OCDC is tissue it never saw), which stand in
for tissue the network does not know.

Every variant runs the standard click simulator (``evaluate_clicks``: 20 clicks, stop at IoU
0.90) on the same views in one process; ``cgam`` (the loss disk always grows: the default
before this script) and ``none`` (no per-click optimisation) are the baselines.

Prints one JSON line per (variant, set) with NoC@85/90, failures at 20 clicks, mIoU@1/3/5/10,
the share of clicks whose disk grew and 95 % bootstrap intervals of the per-view NoC@85
difference to ``cgam`` and to ``none``; then one ``pooled`` line per variant (every view of
every set, NoC@85 and failures) and a ``choice`` line: the variant with the lowest pooled
NoC@85 (ties: fewer failures) *for that network*. The default has to hold on both kinds of
network; ``--summarize FILE...`` pools the lines of several runs (variants run apart) per
network over the sets every variant shares.

Usage: ``python benchmarks/tune_cgam_disk.py [--weights DIR] [--quick] [--jsonl FILE]``.
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
    "cgam": {"disk_confidence": None},  # the disk grows for every click
    "none": {"method": "none"},
    "fixed": {"adaptive_disk": 0.0},  # every click keeps the 5 px disk
    # the disk grows only where the network, having seen the click, gives the click's pixel
    # its label with a logit below the threshold (on the click's side)
    "conf-2": {"disk_confidence": -2.0},
    "conf0": {"disk_confidence": 0.0},
    "conf2": {"disk_confidence": 2.0},
    # the grown disk stops short of the nearest pixel the network, having seen the click,
    # gives the other label with a logit at least this far beyond zero
    "stop0": {"disk_stop": 0.0},
    "stop2": {"disk_stop": 2.0},
    # the disk grows only from the n-th click on: the first clicks keep the small disk
    "from3": {"disk_grow_from": 3},
    "from5": {"disk_grow_from": 5},
    # a disk half as large: 0.4 x the distance to the nearest pixel with the click's label
    "grow0.4": {"adaptive_disk": 0.4},
    # the disk grows only where the network, having seen the click, outlined nothing much
    # around it (its region at the click smaller than a disk of k x loss_radius): an
    # exploratory rule of this script (ResponseGatedEngine), not an engine option
    "resp2": {"response_k": 2.0},
    "resp3": {"response_k": 3.0},
}


def make_engine(model, settings: dict):
    """The engine of a variant: :class:`RefinementEngine`, or for ``response_k`` an engine
    whose disk grows only where the network did not answer the click with a region."""
    from workbench.interactive import RefinementEngine

    settings = dict(settings)
    k = settings.pop("response_k", None)
    if k is None:
        return RefinementEngine(model, **settings)

    class ResponseGatedEngine(RefinementEngine):
        # Reuses the engine's disk_confidence hook: "confident" here means the network's
        # own region at the click (module as it stands) is at least a disk of k x loss_radius.
        def _click_confident(self, view, click, features, guide):
            from scipy import ndimage as ndi

            torch = self._torch
            with torch.no_grad():
                low = self._head_map(self.module(features, guide))
                logits = torch.nn.functional.interpolate(
                    low, size=view.work_rc, mode="bilinear", align_corners=False
                )[0, 0].numpy()
            if view.prior_work is not None:
                logits = logits + view.prior_work
            same = logits > 0 if click.positive else logits <= 0
            r = min(max(round((click.y + 0.5) * view.scale - 0.5), 0), view.work_rc[0] - 1)
            c = min(max(round((click.x + 0.5) * view.scale - 0.5), 0), view.work_rc[1] - 1)
            labels, _ = ndi.label(same)
            if labels[r, c] == 0:
                return False
            area = int((labels == labels[r, c]).sum())
            return area >= np.pi * (k * self.loss_radius) ** 2

    return ResponseGatedEngine(model, disk_confidence=0.0, **settings)


def largest_share(mask: np.ndarray) -> float:
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask)
    if n == 0:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return float(sizes.max() / sizes.sum())


def load_sets(root: Path, quick: bool, n_ebhi: int, n_nuclei: int) -> dict[str, list]:
    """The val views, by set name."""
    from workbench.datasets import benchmark_views

    views = benchmark_views(root, "ebhi", split="val", max_views=8 if quick else n_ebhi, seed=13)
    sets = {
        "ebhi_val:many_object": [v for v in views if largest_share(v[2]) < ONE_OBJECT_SHARE],
        "ebhi_val:one_object": [v for v in views if largest_share(v[2]) >= ONE_OBJECT_SHARE],
    }
    for dataset in ("ocdc", "camelyon", "monuseg", "tnbc", "monusac"):
        n = 1000 if dataset in ("ocdc", "camelyon") else n_nuclei
        try:
            got = benchmark_views(root, dataset, split="val", max_views=3 if quick else n, seed=13)
        except (OSError, ValueError):
            continue
        if got:
            sets[f"{dataset}_val"] = got
    return sets


def noc(ious, target: float, max_clicks: int) -> int:
    for k, value in enumerate(ious, start=1):
        if value >= target:
            return k
    return max_clicks


def boot_diff(a, b, seed: int = 0, n: int = 2000) -> list[float]:
    """95 % percentile-bootstrap interval of the mean paired difference ``a - b``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n, len(a)))
    d = (a[idx] - b[idx]).mean(axis=1)
    return [round(float(np.percentile(d, 2.5)), 3), round(float(np.percentile(d, 97.5)), 3)]


def run_variant(engine, views, max_clicks: int) -> tuple[list[dict], float]:
    """Every view through the click simulator; also the share of clicks whose disk grew."""
    from workbench.interactive import evaluate_clicks

    grown: list[bool] = []
    add_click = engine.add_click

    def recording(*a, **kw):
        out = add_click(*a, **kw)
        if getattr(engine, "last_disk_grown", None) is not None:
            grown.append(bool(engine.last_disk_grown))
        return out

    engine.add_click = recording
    runs = [evaluate_clicks(engine, im, gt, max_clicks=max_clicks) for _, im, gt in views]
    return runs, (float(np.mean(grown)) if grown else 0.0)


def summarize(paths: list[str]) -> list[dict]:
    """Pool the per-set lines of several runs (several networks, variants run apart).

    Parameters
    ----------
    paths
        JSONL files written with ``--jsonl``.

    Returns
    -------
    list of dict
        One line per (network, variant): views, mean NoC@85 and failures pooled over the
        sets that *every* variant of that network was run on (so the variants are compared
        on the same views), and those sets.
    """
    per: dict[str, dict[tuple[str, str], dict]] = {}
    for path in paths:
        for raw in Path(path).read_text().splitlines():
            line = json.loads(raw)
            if "set" in line:
                per.setdefault(line["network"], {})[(line["set"], line["variant"])] = line
    out = []
    for network, lines in per.items():
        variants = sorted({v for _, v in lines})
        common = sorted(s for s in {s for s, _ in lines} if all((s, v) in lines for v in variants))
        for variant in variants:
            got = [lines[(s, variant)] for s in common]
            n = sum(g["n_views"] for g in got)
            if not n:
                continue
            out.append(
                {
                    "network": network,
                    "summary": variant,
                    "sets": common,
                    "n_views": n,
                    "noc85": round(sum(g["noc85"] * g["n_views"] for g in got) / n, 3),
                    "failures85": sum(g["failures85"] for g in got),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--real-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--weights", default=None, help="checkpoint folder (default: packaged)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sets", default=None, help="comma-separated set names (default: all)")
    parser.add_argument("--ebhi-views", type=int, default=1000, help="EBHI val views at most")
    parser.add_argument("--nucleus-views", type=int, default=20)
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument(
        "--baselines",
        default="cgam,none",
        help="variants always run first (the paired intervals need them in the same run)",
    )
    parser.add_argument("--quick", action="store_true", help="a few views per set")
    parser.add_argument("--jsonl", default=None, help="append the JSON lines to this file")
    parser.add_argument(
        "--summarize",
        nargs="+",
        default=None,
        help="pool the lines of these JSONL files (no run): one line per network and variant",
    )
    args = parser.parse_args()
    if args.summarize:
        for line in summarize(args.summarize):
            print(json.dumps(line))
        return

    import torch
    from tqdm.auto import tqdm

    from workbench.models import load_click_segmenter

    torch.set_num_threads(1)
    model = load_click_segmenter(args.weights)
    network = Path(args.weights).name if args.weights else "packaged"
    sets = load_sets(Path(args.real_root), args.quick, args.ebhi_views, args.nucleus_views)
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets.split(",")}
    names = args.variants.split(",")
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    baselines = [b for b in args.baselines.split(",") if b]
    names = baselines + [v for v in names if v not in baselines]

    def emit(line: dict) -> None:
        print(json.dumps(line), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(line) + "\n")

    nocs: dict[tuple[str, str], list[int]] = {}
    fails: dict[tuple[str, str], list[bool]] = {}
    for set_name, views in sets.items():
        if not views:
            continue
        for variant in names:
            engine = make_engine(model, VARIANTS[variant])
            start = time.process_time()
            runs, grown = run_variant(
                engine, tqdm(views, desc=f"{set_name} {variant}", leave=False), args.max_clicks
            )
            curve = np.mean([r["ious"] for r in runs], axis=0)
            n85 = [noc(r["ious"], 0.85, args.max_clicks) for r in runs]
            n90 = [noc(r["ious"], 0.90, args.max_clicks) for r in runs]
            nocs[(set_name, variant)] = n85
            fails[(set_name, variant)] = [max(r["ious"]) < 0.85 for r in runs]
            line = {
                "network": network,
                "set": set_name,
                "variant": variant,
                "settings": VARIANTS[variant],
                "n_views": len(runs),
                "noc85": round(float(np.mean(n85)), 3),
                "noc90": round(float(np.mean(n90)), 3),
                "failures85": int(sum(fails[(set_name, variant)])),
                **{
                    f"miou@{k}": round(float(curve[k - 1]), 4)
                    for k in (1, 3, 5, 10)
                    if k <= len(curve)
                },
                "grown_share": round(grown, 3),
                "noc85_per_view": n85,  # for paired comparisons across runs
                "cpu_seconds": round(time.process_time() - start, 1),
            }
            for base in ("cgam", "none"):
                if variant != base and (set_name, base) in nocs:
                    line[f"noc85_minus_{base}_ci95"] = boot_diff(n85, nocs[(set_name, base)])
            emit(line)

    pooled = {}
    for variant in names:
        n85 = [x for s in sets if (s, variant) in nocs for x in nocs[(s, variant)]]
        f85 = [x for s in sets if (s, variant) in fails for x in fails[(s, variant)]]
        if not n85:
            continue
        base = {
            b: [x for s in sets if (s, b) in nocs for x in nocs[(s, b)]] for b in ("cgam", "none")
        }
        pooled[variant] = (float(np.mean(n85)), int(sum(f85)))
        line = {
            "network": network,
            "pooled": variant,
            "n_views": len(n85),
            "noc85": round(pooled[variant][0], 3),
            "failures85": pooled[variant][1],
        }
        for b, other in base.items():
            if variant != b:
                line[f"noc85_minus_{b}_ci95"] = boot_diff(n85, other)
        emit(line)
    if not pooled:
        return
    best = min(pooled, key=lambda v: pooled[v])
    emit({"network": network, "choice": best, "rule": "lowest pooled NoC@85, then failures"})


if __name__ == "__main__":
    main()
