"""Applicability benchmark: does the demo model say when a slide is not its kind?

For each model seed (``--model-seeds``, default 0 and 1), trains the demo's model
(``workbench demo``'s settings: a self-calibrated ``"sew"`` model,
builtin encoder, no stain normalisation, on a synthetic ``tiny`` cohort of seed 0, label
high vs low grade), then runs :func:`workbench.tl.extract` on

- ``heldout``: fresh synthetic slides from the training distribution, drawn with other cohort
  seeds (never seen in training; default seeds 1-10, 8 slides each = 80); the share flagged is
  the false-alarm rate (target <= 5 %);
- ``shared``: every slide in ``../shared/data/slides`` (real H&E skin CMU-1, the real TCGA
  head-and-neck slide at 0.5 µm/px, the fluorescence DAPI slide): all should be flagged
  (the model saw only synthetic slides).

Baseline, in the same run: the brightfield check alone (what flagged slides before the
checkpoint recorded its training distribution). Prints one JSON line per slide and one summary
line per set and model seed, then pooled (count flagged, share with a 95 % Wilson interval);
the same lines go to ``benchmarks/results/applicability.jsonl``. About 15 min on the shared
2-core machine (two trainings of about 5 min; extraction takes about 0.5 s per slide).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/applicability.py \\
        [--work runs/applicability_bench] [--epochs 16] [--model-seeds 0 1] [--per-seed 8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABEL = "grade_group"
CLASSES = ["low grade (1-2)", "high grade (3)"]


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [math.nan, math.nan]
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 4), round(min(1.0, c + h), 4)]


def emit(record: dict, out) -> None:
    line = json.dumps(record, default=float)
    print(line, flush=True)
    out.write(line + "\n")
    out.flush()


def labelled(cohort):
    return cohort.assign(
        **{LABEL: lambda t: [CLASSES[int(g >= 3)] for g in t["grade"]]}
    )  # as the demo's cohort step


def train(work: Path, n: int, epochs: int, seed: int) -> Path:
    from workbench.datasets import make_cohort
    from workbench.models import read_checkpoint_config
    from workbench.tl import SlideTrainer

    folder = work / f"model_n{n}_e{epochs}_s{seed}"
    if (folder / "config.json").exists():
        if read_checkpoint_config(folder)["extra"].get("applicability"):
            return folder
    cohort = make_cohort(work / "train", n_patients=n, size="tiny", seed=0, progress=True)
    trainer = SlideTrainer(
        kind="sew", label=LABEL, classes=CLASSES, epochs=epochs, seed=seed, progress=True
    ).fit(labelled(cohort))
    return trainer.save(folder)


def parts(model, adata, thumb) -> dict:
    """Each block's distance / threshold ratio (the verdict keeps only the largest)."""
    from workbench.tl._applicability import (
        ApplicabilityRecord,
        slide_embedding,
        thumbnail_colour,
    )
    from workbench.tl._engine import edge_index_of

    rec = ApplicabilityRecord.from_dict(model.checkpoint_extra_["applicability"])
    emb = slide_embedding(model, np.asarray(adata.X, np.float32), edge_index_of(adata))
    d = rec.distances(colour=thumbnail_colour(thumb), embedding=emb)
    return {f"{k}_ratio": round(v["ratio"], 3) for k, v in d.items()}


def run_slide(model, path, sid: str, group: str, mpp=None) -> dict:
    from workbench.io import Slide
    from workbench.tl import extract

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = extract(path, model, slide_id=sid, mpp=mpp)
    ex = a.uns["explain"]
    app = ex["applicability"]
    with Slide(path, mpp=mpp) as s:
        thumb = s.thumbnail(max_size=512)
    probs = np.asarray(ex["probabilities"], float)
    return {
        "bench": "applicability",
        "set": group,
        "slide": sid,
        "applicable": bool(app["applicable"]),
        "flagged": not bool(app["applicable"]),
        "score": round(float(app["score"]), 3),
        **parts(model, a, thumb),
        "brightfield": bool(app["brightfield"]),
        "graded": bool(app["graded"]),
        "baseline_flagged": not bool(app["brightfield"]),
        "p_high_grade": None if np.isnan(probs).all() else round(float(probs[1]), 4),
        "reasons": list(app["reasons"]),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def summary(rows: list[dict], group: str) -> dict:
    sel = [r for r in rows if r["set"] == group]
    k = sum(r["flagged"] for r in sel)
    kb = sum(r["baseline_flagged"] for r in sel)
    return {
        "bench": "applicability",
        "summary": group,
        "n": len(sel),
        "flagged": k,
        "flagged_share": round(k / len(sel), 4) if sel else None,
        "flagged_share_wilson95": wilson(k, len(sel)),
        "baseline_brightfield_only_flagged": kb,
        "not_graded": sum(not r["graded"] for r in sel),
    }


def figure(results: Path, png: Path) -> None:
    """Scores of every slide (log scale) per set and model seed, the threshold at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if "slide" in r]
    seeds = sorted({r["model_seed"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, seed in enumerate(seeds):
        for j, group in enumerate(("heldout", "shared")):
            sel = [r for r in rows if r["model_seed"] == seed and r["set"] == group]
            x = np.full(len(sel), 2 * i + j) + np.linspace(-0.15, 0.15, len(sel))
            ax.scatter(x, [r["score"] for r in sel], s=14, c="C0" if j == 0 else "C3")
            for xx, r in zip(x, sel, strict=True):
                if group == "shared":
                    ax.annotate(r["slide"][:16], (xx, r["score"]), fontsize=6, xytext=(4, 0),
                                textcoords="offset points")  # fmt: skip
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(2 * len(seeds)))
    ax.set_xticklabels(
        [f"{g}\nmodel seed {s}" for s in seeds for g in ("held-out synthetic", "shared real")],
        fontsize=7,
    )
    ax.set_ylabel("applicability score (1 = threshold)")
    ax.set_title("Flagged above the dashed line", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    print(json.dumps({"bench": "applicability", "figure": str(png.relative_to(ROOT))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "applicability_bench")
    ap.add_argument("--real-root", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--n-train", type=int, default=36, help="demo: 36 patients")
    ap.add_argument("--epochs", type=int, default=16, help="demo: 16")
    ap.add_argument("--model-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--heldout-seeds", type=int, nargs="+", default=list(range(1, 11)))
    ap.add_argument("--per-seed", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/applicability.jsonl")
    ap.add_argument("--figure", action="store_true", help="only draw the figure from --out")
    args = ap.parse_args()
    if args.figure:
        figure(args.out, ROOT / "docs" / "images" / "applicability_scores.png")
        return

    import torch

    torch.set_num_threads(1)
    from workbench.datasets import make_cohort
    from workbench.models import load_checkpoint

    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    heldout = []
    for s in args.heldout_seeds:
        cohort = make_cohort(
            args.work / f"heldout_seed{s}",
            n_patients=args.per_seed,
            size="tiny",
            seed=s,
            progress=False,
        )
        heldout += [(cohort.slide_path(sid), f"seed{s}/{sid}") for sid in cohort.slide_ids]
    slides = args.real_root / "slides"
    shared = sorted(slides.glob("*")) if slides.is_dir() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    everything: list[dict] = []
    with open(args.out, "w", encoding="utf-8") as out:
        for model_seed in args.model_seeds:
            t1 = time.perf_counter()
            folder = train(args.work, args.n_train, args.epochs, model_seed)
            model = load_checkpoint(folder)
            rec = model.checkpoint_extra_["applicability"]
            emit(
                {
                    "bench": "applicability",
                    "model": folder.name,
                    "model_seed": model_seed,
                    "n_train": rec["n_slides"],
                    "thresholds": {k: b["threshold"] for k, b in rec["blocks"].items()},
                    "train_loo_above_threshold": {
                        k: int(np.sum(np.asarray(b["loo"]) > b["threshold"]))
                        for k, b in rec["blocks"].items()
                    },
                    "train_seconds (0 when cached)": round(time.perf_counter() - t1, 1),
                },
                out,
            )
            rows: list[dict] = []
            for path, sid in heldout:
                rows.append(run_slide(model, path, sid, "heldout"))
            for path in shared:
                mpp = 0.5 if path.name.startswith("tcga-") else None  # no mpp in that header
                rows.append(run_slide(model, path, path.stem, "shared", mpp=mpp))
            for row in rows:
                emit({"model_seed": model_seed, **row}, out)
            for group in ("heldout", "shared"):
                emit({"model_seed": model_seed, **summary(rows, group)}, out)
            everything += rows
        for group in ("heldout", "shared"):
            emit({"model_seed": "all", **summary(everything, group)}, out)
        emit({"bench": "applicability", "total_seconds": round(time.perf_counter() - t0, 1)}, out)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
