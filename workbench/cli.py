"""Command line: ``workbench demo`` (the main job) and friends.

Run ``workbench --help`` or ``workbench demo --help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from workbench import WorkbenchError


def _demo(args: argparse.Namespace) -> int:
    from workbench._demo import build_demo

    run = build_demo(
        args.out,
        size=args.size,
        n_patients=args.n_patients,
        seed=args.seed,
        epochs=args.epochs,
        progress=not args.no_progress,
    )
    print(f"workbench demo → {run.root.resolve()}")
    manifest = run.execute(force=args.force)
    print(f"done: {len(manifest['steps'])} steps recorded in {run.root / 'run.json'}")
    return 0


def _cohort(args: argparse.Namespace) -> int:
    from workbench.datasets import make_cohort

    cohort = make_cohort(
        args.out,
        n_patients=args.n_patients,
        size=args.size,
        seed=args.seed,
        null=args.null,
        progress=not args.no_progress,
    )
    print(f"{len(cohort.clinical)} synthetic slides in {Path(args.out).resolve()}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from workbench.datasets import load_cohort
    from workbench.tl import SlideTrainer

    cohort = load_cohort(args.cohort)
    trainer = SlideTrainer(
        kind=args.kind, epochs=args.epochs, seed=args.seed, progress=not args.no_progress
    ).fit(cohort)
    path = trainer.save(args.out)
    print(f"{args.kind} model trained on {len(trainer.samples_)} slides, saved in {path}")
    return 0


def _slide_paths(inputs: list[Path]) -> dict[str, Path]:
    from workbench import WorkbenchError

    suffixes = {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".bif", ".dcm"}
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in suffixes)
        else:
            paths.append(item)
    if not paths:
        raise WorkbenchError(f"no slide files found in {[str(i) for i in inputs]}")
    return {p.stem: p for p in paths}


def _extract(args: argparse.Namespace) -> int:
    from workbench.tl import extract_cohort

    slides = _slide_paths(args.slides)
    client = args.client
    table = extract_cohort(
        slides,
        args.model,
        args.out,
        client=client,
        n_workers=args.workers,
        mpp=args.mpp,
        top_k=args.top_k,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    counts = table["status"].value_counts().to_dict()
    print(f"extract: {counts} → {Path(args.out).resolve()}")
    failed = table[table["status"] == "failed"]
    for _, row in failed.iterrows():
        print(f"  failed {row['slide_id']}: {row['error']}", file=sys.stderr)
    return 1 if len(failed) else 0


def _discover(args: argparse.Namespace) -> int:
    import pandas as pd

    from workbench.io import write_h5ad
    from workbench.tl import discover, read_slides

    adatas = read_slides(args.slides)
    clinical = pd.read_csv(args.clinical)
    if "slide" in clinical:  # a path in the slide column matches its file's stem
        clinical["slide"] = [Path(str(s)).stem for s in clinical["slide"]]
    cohort = discover(
        adatas,
        clinical,
        validation_fraction=args.validation_fraction,
        on_unmatched=args.on_unmatched,
        seed=args.seed,
    )
    out = Path(args.out)
    write_h5ad(cohort, out / "discovery.h5ad")
    screen = cohort.uns["survival_screen"]
    from workbench.io import atomic_write_text

    atomic_write_text(out / "markers.csv", screen.to_csv())
    called = int(screen["called"].sum())
    print(f"{len(screen)} markers screened, {called} called at q < 0.05; see {out / 'markers.csv'}")
    print(screen.head(10)[["hr", "p_cox", "q_cox", "p_logrank", "q_logrank"]].to_string())
    return 0


def _report(args: argparse.Namespace) -> int:
    from workbench.report import write_report

    path = write_report(args.run, args.out, n_examples=args.examples)
    print(f"report written to {path.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Pathology Workbench: explain, refine and discover on whole-slide images.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="run the demo end to end on a synthetic cohort (resumable)",
        description="Generate the synthetic demo cohort and summarise it in a run folder. "
        "A second run skips the steps that are done.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    demo.add_argument(
        "--size", default="tiny", choices=["tiny", "demo", "large"], help="slide size"
    )
    demo.add_argument("--n-patients", type=int, default=36, help="number of synthetic patients")
    demo.add_argument("--epochs", type=int, default=16, help="training epochs of the model")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--force", action="store_true", help="redo every step")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_demo)

    cohort = sub.add_parser(
        "cohort",
        help="write a synthetic pyramidal cohort (slides, ground truth, clinical CSV)",
    )
    cohort.add_argument("out", type=Path, help="cohort folder")
    cohort.add_argument("--size", default="tiny", choices=["tiny", "demo", "large"])
    cohort.add_argument("--n-patients", type=int, default=12)
    cohort.add_argument("--seed", type=int, default=0)
    cohort.add_argument("--null", action="store_true", help="no planted survival effect")
    cohort.add_argument("--no-progress", action="store_true")
    cohort.set_defaults(func=_cohort)

    train = sub.add_parser(
        "train",
        help="train a model on a synthetic cohort folder (label: high grade)",
        description="Train the self-calibrated model (or a baseline) on every slide of a "
        "cohort folder written by `workbench cohort`, and save it as safetensors + JSON.",
    )
    train.add_argument("cohort", type=Path, help="cohort folder (`workbench cohort`)")
    train.add_argument("--out", type=Path, default=Path("runs/model"), help="checkpoint folder")
    train.add_argument("--kind", default="sew", choices=["sew", "global", "abmil"])
    train.add_argument("--epochs", type=int, default=16)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)

    extract = sub.add_parser(
        "extract",
        help="explain slides with a trained model: one .h5ad per slide (resumable)",
        description="Run the model on slide files or folders of them. Each slide's region "
        "AnnData is written atomically; slides already done are skipped.",
    )
    extract.add_argument("slides", type=Path, nargs="+", help="slide files and/or folders")
    extract.add_argument("--model", type=Path, required=True, help="checkpoint folder")
    extract.add_argument("--out", type=Path, required=True, help="output folder")
    extract.add_argument("--mpp", type=float, help="µm/px for slides that do not record it")
    extract.add_argument("--top-k", type=int, help="focus regions per slide")
    extract.add_argument(
        "--client", help="'local' for a local dask cluster, or a scheduler address"
    )
    extract.add_argument("--workers", type=int, default=2, help="workers of a local cluster")
    extract.add_argument("--overwrite", action="store_true", help="recompute finished slides")
    extract.add_argument("--no-progress", action="store_true")
    extract.set_defaults(func=_extract)

    disc = sub.add_parser(
        "discover",
        help="phenotypes, spatial markers and the honest survival screen",
        description="From a folder of per-slide .h5ad files and a clinical CSV (patient_id, "
        "slide, time, event, covariates) to discovery.h5ad and a ranked markers.csv. "
        "Phenotypes are fitted on discovery patients and tested on the others.",
    )
    disc.add_argument("slides", type=Path, help="folder of per-slide .h5ad (`workbench extract`)")
    disc.add_argument("clinical", type=Path, help="clinical CSV")
    disc.add_argument("--out", type=Path, required=True, help="output folder")
    disc.add_argument("--validation-fraction", type=float, default=0.5)
    disc.add_argument("--on-unmatched", default="raise", choices=["raise", "drop"])
    disc.add_argument("--seed", type=int, default=0)
    disc.set_defaults(func=_discover)

    report = sub.add_parser(
        "report",
        help="write the self-contained HTML report of a run folder",
    )
    report.add_argument("run", type=Path, help="run folder (e.g. runs/demo)")
    report.add_argument("--out", type=Path, help="HTML file (default: RUN/report.html)")
    report.add_argument("--examples", type=int, default=2, help="slides shown in detail")
    report.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
