"""Self-calibrated model (SEW) against its baselines, printed as JSON lines.

One run, on synthetic slides generated here (train and test cohorts are generated from
different seeds, so the test slides are held apart from training):

1. ``accuracy``: slide AUC and accuracy of SEW, SEW without the consistency losses (the
   ablation), GlobalOnly and TileABMIL, all trained on the same slides and labels (high
   grade = grade 3 vs grades 1-2).
2. ``focus``: focus hit rate (share of the top-K focus regions whose centre lies in a true
   lesion) and lesion Dice inside the focus regions, for SEW and the ablation.
3. ``speed``: median seconds per slide of SEW (thumbnail, region graph, global branch,
   top-K crops, detail branch) and TileABMIL (every tissue tile at the detail
   magnification through the same encoder) on large synthetic slides (>= 40,000 px a
   side), and their ratio. Targets: ratio >= 20, SEW AUC >= TileABMIL AUC - 0.02, hit rate
   >= 0.9.

    python benchmarks/slide_inference.py            # full run (about 20 min on 2 cores)
    python benchmarks/slide_inference.py --quick    # smoke run: few slides and epochs, and
                                                    # the timing on a demo-size slide only
    python benchmarks/slide_inference.py --workdir data/generated/bench   # keep the slides
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def emit(record: dict) -> None:
    print(json.dumps(record, default=float), flush=True)


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None


def evaluate_sew(model, cohort, ids, labels) -> dict:
    from workbench.tl import extract, focus_in_mask
    from workbench.tl._train import _mask_crops

    probs, hits, dices, graphs, per_slide = [], [], [], {}, {}
    for sid in ids:
        adata = extract(cohort.slide_path(sid), model)
        graphs[sid] = adata
        ex = adata.uns["explain"]
        probs.append(float(ex["probabilities"][1]))
        mask, ds = cohort.lesion_mask(sid)
        focus = ex["focus"]
        inside = focus_in_mask(adata, mask, ds)
        hits += inside.tolist()
        per_slide[sid] = inside.tolist()
        for box, lmap in zip(focus["boxes_xywh"], focus["lesion_maps"], strict=True):
            truth = _mask_crops(mask, ds, box[None], lmap.shape[0])[0, 0].astype(bool)
            pred = lmap >= 0.5
            denom = truth.sum() + pred.sum()
            dices.append(1.0 if denom == 0 else 2.0 * (truth & pred).sum() / denom)
    p = np.asarray(probs)
    return {
        "auc": auc(labels, p),
        "accuracy": float(np.mean((p >= 0.5) == labels)),
        "focus_hit_rate": float(np.mean(hits)),
        "focus_lesion_dice": float(np.mean(dices)),
        "graphs": graphs,
        "per_slide_hits": {k: int(sum(v)) for k, v in per_slide.items()},
    }


def evaluate_global(model, graphs, ids, labels) -> dict:
    import torch

    from workbench.tl._extract import edge_index_of

    probs = []
    with torch.no_grad():
        for sid in ids:
            a = graphs[sid]
            out = model(torch.from_numpy(np.asarray(a.X, dtype=np.float32)), edge_index_of(a))
            probs.append(float(torch.softmax(out["logits"], -1)[1]))
    p = np.asarray(probs)
    return {"auc": auc(labels, p), "accuracy": float(np.mean((p >= 0.5) == labels))}


def evaluate_abmil(model, cohort, ids, labels) -> dict:
    from workbench.tl import predict_tiles

    p = np.asarray(
        [float(predict_tiles(cohort.slide_path(s), model)["probabilities"][1]) for s in ids]
    )
    return {"auc": auc(labels, p), "accuracy": float(np.mean((p >= 0.5) == labels))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="tiny cohorts, few epochs, one large slide"
    )
    ap.add_argument("--n-train", type=int, default=18)
    ap.add_argument("--n-test", type=int, default=12)
    ap.add_argument("--size", default="tiny", help="synthetic slide size of the cohorts")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--n-large", type=int, default=1, help="large slides for the timing")
    ap.add_argument("--large-size", default="large")
    # One torch thread: on a shared 2-core machine two threads made both models slower.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="keep generated slides here (default: temp)")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.size, args.epochs = 8, 6, "tiny", 12
        args.n_large, args.large_size = 1, "demo"

    import torch

    torch.set_num_threads(args.threads)
    from workbench.datasets import make_cohort
    from workbench.tl import SlideTrainer, extract, predict_tiles
    from workbench.tl._extract import cohort_slides
    from workbench.tl._train import label_from_grade, prepare_cohort, suggest_settings

    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    root = Path(args.workdir or tmp.name)
    t0 = time.perf_counter()
    emit(
        {
            "benchmark": "slide_inference",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": args.threads,
            "device": "cpu",
            "args": vars(args),
        }
    )
    train = make_cohort(
        root / "train",
        n_patients=args.n_train,
        size=args.size,
        seed=1000 + args.seed,
        progress=False,
    )
    test = make_cohort(
        root / "test", n_patients=args.n_test, size=args.size, seed=2000 + args.seed, progress=False
    )
    train_ids = [sid for sid, _ in cohort_slides(train)]
    test_rows = cohort_slides(test)
    test_ids = [sid for sid, _ in test_rows]
    y_test = np.asarray([label_from_grade(row["grade"]) for _, row in test_rows])
    settings = suggest_settings(train.slide_path(train_ids[0]))
    samples = prepare_cohort(train, settings=settings, tiles=True, seed=args.seed, progress=False)
    t_data = time.perf_counter() - t0

    def fit(kind: str, consistency: bool = True):
        t = time.perf_counter()
        trainer = SlideTrainer(
            kind=kind, epochs=args.epochs, seed=args.seed, consistency=consistency, progress=False
        )
        trainer.fit(samples=samples)
        return trainer.model_, time.perf_counter() - t

    sew, t_sew = fit("sew")
    ablation, t_abl = fit("sew", consistency=False)
    glob, t_glob = fit("global")
    abmil, t_abmil = fit("abmil")

    r_sew = evaluate_sew(sew, test, test_ids, y_test)
    r_abl = evaluate_sew(ablation, test, test_ids, y_test)
    r_glob = evaluate_global(glob, r_sew["graphs"], test_ids, y_test)
    r_abmil = evaluate_abmil(abmil, test, test_ids, y_test)
    emit(
        {
            "section": "accuracy",
            "n_train": len(train_ids),
            "n_test": len(test_ids),
            "test_high_grade": int(y_test.sum()),
            "label": "high grade (grade 3) vs grades 1-2",
            "settings": settings,
            "sew": {k: r_sew[k] for k in ("auc", "accuracy")},
            "sew_no_consistency": {k: r_abl[k] for k in ("auc", "accuracy")},
            "global_only": r_glob,
            "tile_abmil": r_abmil,
            "train_seconds": {
                "sew": t_sew,
                "sew_no_consistency": t_abl,
                "global_only": t_glob,
                "tile_abmil": t_abmil,
            },
            "data_seconds": t_data,
            "target_auc_vs_abmil": (
                None
                if r_sew["auc"] is None or r_abmil["auc"] is None
                else r_sew["auc"] >= r_abmil["auc"] - 0.02
            ),
        }
    )
    emit(
        {
            "section": "focus",
            "top_k": int(sew.focus.top_k),
            "sew": {k: r_sew[k] for k in ("focus_hit_rate", "focus_lesion_dice")},
            "sew_no_consistency": {k: r_abl[k] for k in ("focus_hit_rate", "focus_lesion_dice")},
            "target_hit_rate": r_sew["focus_hit_rate"] >= 0.9,
        }
    )

    if not args.skip_speed:
        from workbench.datasets import make_slide
        from workbench.io import Slide

        t_sew_s, t_abmil_s, sizes, tiles = [], [], [], []
        for i in range(args.n_large):
            path = root / f"large_{i}.tiff"
            if not path.exists():
                make_slide(
                    path,
                    size=args.large_size,
                    grade=3 - i % 2,
                    infiltration=0.5,
                    seed=77 + i,
                    progress=False,
                )
            sizes.append(list(Slide(path).dimensions))
            t = time.perf_counter()
            extract(path, sew)
            t_sew_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            res = predict_tiles(path, abmil, batch_size=64)
            t_abmil_s.append(time.perf_counter() - t)
            tiles.append(res["n_tiles"])
        med_sew, med_abmil = statistics.median(t_sew_s), statistics.median(t_abmil_s)
        emit(
            {
                "section": "speed",
                "slides": len(t_sew_s),
                "dimensions": sizes,
                "abmil_tiles": tiles,
                "sew_seconds": t_sew_s,
                "abmil_seconds": t_abmil_s,
                "sew_median_s": med_sew,
                "abmil_median_s": med_abmil,
                "speedup": med_abmil / med_sew,
                "target_speedup": med_abmil / med_sew >= 20,
            }
        )
    emit({"section": "done", "total_seconds": time.perf_counter() - t0})
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
