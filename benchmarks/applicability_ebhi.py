"""Applicability on real tissue: a model trained on real colorectal biopsies (EBHI-Seg) is
asked to flag what it has not seen, and not to flag held-out biopsies of its own kind.

Trains the self-calibrated model (texture encoder, slide labels only) on the EBHI cohort's
``train`` cases (``datasets.make_ebhi_cohort``: one slide per case, fixed split by case id),
then runs :func:`workbench.tl.extract` on

- ``heldout``: the cohort's ``test`` cases (real biopsies of the same kind, never trained or
  tuned on): the share flagged is the false-alarm rate (target <= 5 %);
- ``shared``: every slide in ``../shared/data/slides`` (skin CMU-1, a TCGA head-and-neck slide,
  a fluorescence DAPI slide): other organs, scanners or modality, all should be flagged.

Baseline in the same run: the brightfield check alone. One JSON line per slide and one summary
per set (``benchmarks/results/applicability_ebhi.jsonl``; the file is written to a temporary
name and renamed at the end, so an interrupted run leaves the previous results).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/applicability_ebhi.py \\
        [--cohort runs/ebhi_bench/cohort] [--epochs 12] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from applicability import emit, run_slide, summary  # noqa: E402  (the synthetic benchmark's)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path, default=ROOT / "runs" / "ebhi_bench" / "cohort")
    ap.add_argument("--real-root", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "applicability_ebhi")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/applicability_ebhi.jsonl"
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from workbench.datasets import load_ebhi_cohort, make_ebhi_cohort
    from workbench.io import atomic_path
    from workbench.models import load_checkpoint
    from workbench.tl import SlideTrainer

    t0 = time.perf_counter()
    if not (args.cohort / "cohort.json").exists():
        make_ebhi_cohort(args.real_root / "masks" / "ebhi_seg", args.cohort)
    cohort = load_ebhi_cohort(args.cohort)
    folder = args.work / f"sew_texture_e{args.epochs}_s{args.seed}"
    if not (folder / "config.json").exists():
        SlideTrainer(
            kind="sew", label="adenocarcinoma", encoder="texture", epochs=args.epochs,
            seed=args.seed, progress=True,
        ).fit(cohort, slide_ids=cohort.split_ids("train")).save(folder)  # fmt: skip
    model = load_checkpoint(folder)
    rec = model.checkpoint_extra_["applicability"]
    slides = args.real_root / "slides"
    rows = [
        run_slide(model, cohort.slide_path(sid), sid, "heldout") for sid in cohort.split_ids("test")
    ]
    for path in sorted(slides.glob("*")) if slides.is_dir() else []:
        mpp = 0.5 if path.name.startswith("tcga-") else None  # no mpp in that header
        rows.append(run_slide(model, path, path.stem, "shared", mpp=mpp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp, open(tmp, "w", encoding="utf-8") as out:
        emit(
            {
                "bench": "applicability_ebhi",
                "model": folder.name,
                "n_train": rec["n_slides"],
                "thresholds": {k: b["threshold"] for k, b in rec["blocks"].items()},
            },
            out,
        )
        for row in rows:
            emit(row, out)
        for group in ("heldout", "shared"):
            emit({**summary(rows, group), "bench": "applicability_ebhi"}, out)
        emit({"bench": "applicability_ebhi", "total_seconds": round(time.perf_counter() - t0, 1)},
             out)  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
