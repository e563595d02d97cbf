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
