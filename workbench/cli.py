"""Command line: ``workbench demo`` (the main job) and friends.

Run ``workbench --help`` or ``workbench demo --help``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from workbench import ClinicalTableError, OptionError, WorkbenchError
from workbench._argtypes import existing_file as _existing_file
from workbench._argtypes import existing_folder as _existing_folder
from workbench._argtypes import existing_path as _existing_path
from workbench._argtypes import mpp_arg as _mpp_arg
from workbench._argtypes import out_file as _out_file
from workbench._argtypes import out_folder as _out_folder
from workbench._argtypes import positive_float as _positive_float
from workbench._argtypes import share as _share
from workbench._argtypes import smoothing as _smoothing
from workbench._argtypes import whole as _whole
from workbench._errors import speaking_to_cli


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


def _preprocessing_fields() -> list:
    """The fields of :class:`workbench.pp.Preprocessing` the command line sets (every one
    but the fitted stain normaliser, which ``--stain`` makes)."""
    import dataclasses

    from workbench.pp import Preprocessing

    return [f for f in dataclasses.fields(Preprocessing) if f.metadata["cli"]]


def _setting_value(name: str, text: str) -> float | int | None:
    """``text`` as the value of the preprocessing setting ``name``, checked by
    :class:`workbench.pp.Preprocessing` (its message names the allowed values)."""
    from workbench.pp import Preprocessing

    meta = {f.name: f.metadata for f in _preprocessing_fields()}[name]
    text = text.strip()
    if meta["none_ok"] and text.lower() == "none":
        value = None
    else:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} needs a number, got {text!r} ({Preprocessing.describe(name)})"
            ) from None
        if meta["kind"] is int and value.is_integer():
            value = int(value)
    try:
        Preprocessing.from_dict({name: value})
    except OptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _setting(text: str) -> tuple[str, float | int | None]:
    names = [f.name for f in _preprocessing_fields()]
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or key not in names:
        raise argparse.ArgumentTypeError(
            f"give KEY=VALUE with KEY one of {', '.join(names)}; got {text!r}"
        )
    return key, _setting_value(key, value)


def _add_preprocessing_options(parser: argparse.ArgumentParser) -> None:
    """One option per field of :class:`workbench.pp.Preprocessing` (help from its metadata),
    and ``--set KEY=VALUE`` for the same settings."""
    import functools

    from workbench.pp import Preprocessing

    group = parser.add_argument_group(
        "preprocessing (pp.Preprocessing, stored with the model)",
        "Not given: thumbnail_mpp is suggested from the first slide, detail_mpp and "
        "crop_size follow the tile encoder, the others take their defaults.",
    )
    names = []
    for f in _preprocessing_fields():
        names.append(f.name)
        parse = functools.partial(_setting_value, f.name)
        parse.__name__ = f.name  # argparse names the type in some messages
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"pre_{f.name}",
            type=parse,
            default=argparse.SUPPRESS,  # absent, not None: None is a value (no thumbnail cap)
            metavar="N" if f.metadata["kind"] is int else "X",
            help=Preprocessing.describe(f.name).replace("%", "%%"),
        )
    group.add_argument("--set", type=_setting, action="append", metavar="KEY=VALUE",
                       help=f"the same settings as KEY=VALUE ({', '.join(names)}); "
                       "repeatable; an option above wins")  # fmt: skip


def _settings_given(args: argparse.Namespace) -> dict:
    """The preprocessing settings given on the command line (``--set`` first, then the
    options named after the settings)."""
    given = dict(args.set or [])
    for f in _preprocessing_fields():
        if hasattr(args, f"pre_{f.name}"):
            given[f.name] = getattr(args, f"pre_{f.name}")
    return given


class _ProgressLines:
    """While training with ``--no-progress``: the trainer's progress lines (one per fold and
    per epoch) on stderr, so a long run never sits silent."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.logger = logging.getLogger("workbench.tl._train")
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("train: %(message)s"))
        self.handler.setLevel(logging.INFO)

    def __enter__(self):
        if self.on:
            self.level, self.propagate = self.logger.level, self.logger.propagate
            self.logger.addHandler(self.handler)
            self.logger.setLevel(logging.INFO)
            self.logger.propagate = False  # not twice with -v
        return self

    def __exit__(self, *exc) -> None:
        if self.on:
            self.logger.removeHandler(self.handler)
            self.logger.setLevel(self.level)
            self.logger.propagate = self.propagate


def _train(args: argparse.Namespace) -> int:
    from workbench._steps import open_cohort, train_step

    survival = None
    if args.survival is not None:
        survival = tuple(c.strip() for c in args.survival.split(","))
        if len(survival) != 2 or not all(survival):
            raise OptionError(f"--survival takes two columns, TIME,EVENT; got {args.survival!r}")
        if args.label is not None:
            raise OptionError("give --label or --survival, not both")
        if args.kind not in ("sew", "global", "abmil"):
            raise OptionError(f"--survival trains --kind sew, global or abmil, not {args.kind!r}")
        import pandas as pd

        columns = list(pd.read_csv(args.clinical, nrows=0).columns)
        for column in survival:
            if column not in columns:
                raise ClinicalTableError(
                    f"no survival column {column!r} in the clinical table; its columns are "
                    f"{columns} (--survival TIME,EVENT)"
                )
        args.duration_key, args.event_key = survival  # the cohort reads the same columns
    elif args.label is None:
        raise OptionError("say what to learn: --label COLUMN, or --survival TIME,EVENT")
    cohort = open_cohort(
        args.slides,
        args.clinical,
        annotations=args.annotations,
        lesion_class=args.lesion_class,
        mpp=args.mpp,
        on_unmatched=args.on_unmatched,
        **_column_keys(args),
    )
    if args.repeats > 1 and args.folds is None:
        raise OptionError("--repeats repeats the cross-validation: give --folds too")
    if args.refit and args.validation is None:
        raise OptionError("--refit refits on all patients after --validation: give --validation")
    if args.label_smoothing and survival is not None:
        raise OptionError("--label-smoothing is for a --label, not --survival")
    model_kwargs = None
    if args.confirm_candidates is not None or args.confirm_by is not None:
        if args.kind != "sew":
            raise OptionError(
                "--confirm-candidates/--confirm-by is for --kind sew (its detail branch)"
            )
        model_kwargs = {}
        if args.confirm_candidates is not None:
            model_kwargs["confirm_candidates"] = args.confirm_candidates
        if args.confirm_by is not None:
            model_kwargs["confirm_by"] = args.confirm_by
    if args.risk_focus is not None:
        if args.survival is None or args.kind != "sew":
            raise OptionError("--risk-focus is for --survival with --kind sew (its focus)")
        model_kwargs = {**(model_kwargs or {}), "risk_focus": args.risk_focus}
    with _ProgressLines(args.no_progress):
        trainer = train_step(
            cohort,
            args.out,
            label=args.label,
            classes=args.classes.split(",") if args.classes else None,
            kind=args.kind,
            epochs=args.epochs,
            seed=args.seed,
            encoder=args.encoder,
            stain=args.stain,
            validation=args.validation,
            folds=args.folds,
            repeats=args.repeats,
            refit=args.refit,
            on_conflict=args.on_conflicting_labels,
            settings=_settings_given(args),
            progress=not args.no_progress,
            survival=survival,
            model_kwargs=model_kwargs,
            label_smoothing=args.label_smoothing,
        )
    final = trainer.final_model_
    if survival is not None:
        print(
            f"{args.kind} survival model trained on {len(trainer.samples_)} slides "
            f"({final['fit_on']}, {final['epochs']} epochs): Cox risk from {survival[0]!r} and "
            f"{survival[1]!r} (higher risk = shorter survival), saved in {args.out}"
        )
        if trainer.validation_:
            v = trainer.validation_
            c = "n/a" if v["c_index"] is None else f"{v['c_index']:.3f}"
            print(
                f"validation ({len(v['slides'])} slides of {v['n_patients']} patients, "
                f"{v['n_events']} events, "
                f"{'measured before the refit on all patients' if args.refit else 'not used to fit the model'}"
                f"): Harrell's C {c}"
            )
        if trainer.cv_ is not None:
            _print_survival_cv(trainer, args.out)
        return 0
    print(
        f"{args.kind} model trained on {len(trainer.samples_)} slides ({final['fit_on']}, "
        f"{final['epochs']} epochs) to predict {args.label!r} "
        f"({', '.join(map(str, trainer.classes_))}), saved in {args.out}"
    )
    if trainer.validation_:
        v = trainer.validation_
        print(
            f"validation ({len(v['slides'])} slides of {v['n_patients']} patients, "
            f"{'measured before the refit on all patients' if args.refit else 'not used to fit the final model'}"
            f"): {_metrics_line(v)}"
        )
    if trainer.calibration_:
        c = trainer.calibration_
        print(
            f"temperature {c['temperature']:.3g} ({c['status']}, fitted on {c['n']} "
            f"{c['fitted_on']}): ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}"
        )
    if trainer.cv_ is not None:
        s = trainer.cv_summary_
        ci = s["auc_ci"]
        interval = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f}, patients resampled)" if ci else ""
        auc = "n/a" if s["auc"] is None else f"{s['auc']:.3f}"
        print(
            f"cross-validation, {s['folds']} folds x {s['repeats']} repeat(s), {s['n_slides']} "
            f"slides of {s['n_patients']} patients: pooled out-of-fold AUC {auc}{interval}, "
            f"balanced accuracy {s['balanced_accuracy']:.3f}, ECE {s['ece']:.3f}"
        )
        for row in trainer.cv_.to_dict("records"):
            rep = f"repeat {row['repeat']} " if s["repeats"] > 1 else ""
            print(
                f"  {rep}fold {row['fold']} ({row['n_test']} slides, {row['n_test_patients']} "
                f"patients; stopped at epoch {row['epochs']}): {_metrics_line(row)}"
            )
        print(f"out-of-fold predictions: {Path(args.out) / 'oof_predictions.csv'}")
    return 0


def _print_survival_cv(trainer, out) -> None:
    def fmt(v, ci=None):
        if v is None or not math.isfinite(v):
            return "n/a"
        return f"{v:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")

    s = trainer.cv_summary_
    print(
        f"cross-validation, {s['folds']} folds x {s['repeats']} repeat(s), {s['n_patients']} "
        f"patients ({s['n_events']} events): pooled out-of-fold Harrell's C "
        f"{fmt(s['harrell_c'], s['harrell_c_ci'])} (patients resampled), mean of the folds' "
        f"Uno's C {fmt(s['uno_c_mean_of_folds'])}"
    )
    for row in trainer.cv_.to_dict("records"):
        rep = f"repeat {row['repeat']} " if s["repeats"] > 1 else ""
        print(
            f"  {rep}fold {row['fold']} ({row['n_test_patients']} patients, "
            f"{row['n_test_events']} events; stopped at epoch {row['epochs']}): Harrell's C "
            f"{fmt(row['harrell_c'], row['harrell_c_ci'])}, Uno's C "
            f"{fmt(row['uno_c'], row['uno_c_ci'])}"
        )
    print(f"out-of-fold risks: {Path(out) / 'oof_predictions.csv'}")


def _metrics_line(m: dict) -> str:
    def fmt(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"

    return (
        f"AUC {fmt(m.get('auc'))}, accuracy {fmt(m.get('accuracy'))}, "
        f"balanced accuracy {fmt(m.get('balanced_accuracy'))}"
    )


def _slide_paths(inputs: list[Path]) -> list[Path]:
    """The slide files given (folders listed); the ids are taken by the one rule of
    :class:`workbench.io.Cohort`, which refuses two files with one slide id."""
    from workbench import CohortError
    from workbench.io import is_hidden, list_slides

    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths += [p for p in list_slides(item) if not is_hidden(p)]
        else:
            paths.append(item)
    if not paths:
        raise CohortError(
            f"no slide files in {', '.join(repr(str(i)) for i in inputs)}; give slide files "
            "(.svs, .tif, .ndpi …) or folders of them"
        )
    return list({p.resolve(): p for p in paths}.values())  # one file named twice is one slide


def _extract(args: argparse.Namespace) -> int:
    from workbench._steps import extract_step
    from workbench.io import Cohort

    slides = _slide_paths(args.slides)
    if args.clinical is not None or isinstance(args.mpp, dict):
        # a cohort: the slides the table lists, per-slide mpp overrides
        slides = Cohort(
            slides,
            args.clinical,
            mpp=args.mpp,
            on_unmatched=args.on_unmatched,
            **_column_keys(args),
        )
    table = extract_step(
        slides,
        args.model,
        args.out,
        client=args.client,
        n_workers=args.workers,
        mpp=None if isinstance(args.mpp, dict) else args.mpp,
        top_k=args.top_k,
        overwrite=args.overwrite,
        encoder=args.encoder,
        progress=not args.no_progress,
        connect_timeout=args.connect_timeout,
        force=args.force_grade,
    )
    counts = table["status"].value_counts().to_dict()
    print(f"extract: {counts} → {Path(args.out).resolve()}")
    _print_flagged(table)
    failed = table[table["status"] == "failed"]
    for _, row in failed.iterrows():
        print(f"  failed {row['slide_id']}: {row['error']}", file=sys.stderr)
    return 1 if len(failed) else 0


def _print_flagged(table) -> None:
    """One line per slide whose stored applicability verdict flags it (tl.extract)."""
    if "applicable" not in table:
        return
    for _, row in table[table["applicable"].eq(False)].iterrows():
        graded = "graded" if row["graded"] else "not graded"
        score = row["applicability_score"]
        score = f", score {score:.1f}" if score == score else ""
        print(f"  flagged {row['slide_id']} ({graded}{score}): {row['applicability_reasons']}")


def _discover(args: argparse.Namespace) -> int:
    from workbench._steps import discover_step

    cohort = discover_step(
        args.slides,
        args.clinical,
        args.out,
        validation_fraction=args.validation_fraction,
        folds=args.folds,
        site_key=args.site,
        on_unmatched=args.on_unmatched,
        seed=args.seed,
        **_column_keys(args),
    )
    out = Path(args.out)
    screen = cohort.uns["survival_screen"]
    called = int(screen["called"].sum())
    print(f"{len(screen)} markers screened, {called} called at q < 0.05; see {out / 'markers.csv'}")
    fams = cohort.uns.get("survival_families")
    if fams is not None:
        print(f"{len(fams)} marker families, {int(fams['called'].sum())} called")
    print(screen.head(10)[["hr", "p_cox", "q_cox", "p_logrank", "q_logrank"]].to_string())
    return 0


#: What ``workbench report`` reads from a run folder (see :mod:`workbench.report`).
REPORT_INPUTS = (
    "run.json",
    "summary.json",
    "montage.png",
    "config.json",
    "model/config.json",
    "training.json",
    "evaluation.json",
    "slides/*.h5ad",
    "refine.json",
    "discovery.h5ad",
)


def _check_run_folder(run: Path) -> None:
    """Refuse a folder with none of the files a report shows (a blank page helps no one)."""
    from workbench import ResultFileError

    if not any(any(run.glob(pattern)) for pattern in REPORT_INPUTS):
        raise ResultFileError(
            f"{str(run)!r} holds none of the files a report shows ({', '.join(REPORT_INPUTS)}); "
            "give the folder of a run (`workbench demo --out`), or run `workbench demo` first"
        )


def _report(args: argparse.Namespace) -> int:
    from workbench.report import write_report

    _check_run_folder(args.run)
    path = write_report(args.run, args.out, n_examples=args.examples, time_unit=args.time_unit)
    print(f"report written to {path.resolve()}")
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (and exit code 2)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


#: The clinical column options every command that reads a table takes: ``(option, key,
#: default, what, old spelling kept as a hidden alias)``.
COLUMN_OPTIONS = (
    ("--slide-key", "slide_key", "slide", "slides (ids, file names or paths)", "--slide-col"),
    ("--patient-key", "patient_key", "patient_id", "patients", "--patient-col"),
    ("--duration-key", "duration_key", "time", "survival times", None),
    ("--event-key", "event_key", "event", "events (1 = event, 0 = censored)", None),
)


def _column_options(parser: argparse.ArgumentParser) -> None:
    """The shared group of clinical column names (``--slide-key`` …), the ``*_key`` words of
    :class:`workbench.io.Cohort`; ``--slide-col``/``--patient-col`` still work (hidden)."""
    group = parser.add_argument_group("clinical table columns")
    for option, key, default, what, old in COLUMN_OPTIONS:
        group.add_argument(option, dest=key, default=default, metavar="COLUMN",
                           help=f"column of the {what} (default: {default})")  # fmt: skip
        if old:
            group.add_argument(old, dest=key, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _column_keys(args: argparse.Namespace) -> dict:
    """The column names given on the command line, as :class:`~workbench.io.Cohort` keywords."""
    return {key: getattr(args, key) for _, key, *_ in COLUMN_OPTIONS}


class _ModelKinds:
    """The ``--kind`` choices: the registry of model kinds (``workbench.models.MODEL_KINDS``),
    read only when a choice is checked or listed, so the parser stays light (no torch)."""

    def _names(self) -> tuple[str, ...]:
        from workbench.models import MODEL_KINDS

        return tuple(MODEL_KINDS)

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self):
        return iter(self._names())


def _common(parser: argparse.ArgumentParser) -> None:
    """``-v`` and ``--debug`` after the command too (``workbench demo --debug``)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log what each step does")  # fmt: skip
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="workbench",
        description="Pathology Workbench: explain, refine and discover on whole-slide images.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    seed_help = "random seed (a whole number >= 0)"

    demo = sub.add_parser(
        "demo",
        help="run the demo end to end on a synthetic cohort (resumable)",
        description="Generate the synthetic demo cohort, train, explain, refine, discover and "
        "report, in a run folder. Each step records a fingerprint of its inputs and settings in "
        "run.json; a rerun skips the steps whose fingerprint and outputs are unchanged and "
        "reruns the first changed step and every step after it.",
    )
    demo.add_argument("--out", type=_out_folder, default=Path("runs/demo"), help="run folder")
    demo.add_argument(
        "--size", default="tiny", choices=["tiny", "demo", "large"], help="slide size"
    )
    demo.add_argument("--n-patients", type=_whole(6, " (every grade in training and test)"),
                      default=36, help="number of synthetic patients (at least 6)")  # fmt: skip
    demo.add_argument("--epochs", type=_whole(1), default=16, help="training epochs of the model")
    demo.add_argument("--seed", type=_whole(0), default=0, help=seed_help)
    demo.add_argument("--force", action="store_true", help="redo every step")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_demo)

    cohort = sub.add_parser(
        "cohort",
        help="write a synthetic pyramidal cohort (slides, ground truth, clinical CSV)",
    )
    cohort.add_argument("out", type=_out_folder, help="cohort folder")
    cohort.add_argument("--size", default="tiny", choices=["tiny", "demo", "large"])
    cohort.add_argument("--n-patients", type=_whole(1), default=12)
    cohort.add_argument("--seed", type=_whole(0), default=0, help=seed_help)
    cohort.add_argument("--null", action="store_true", help="no planted survival effect")
    cohort.add_argument("--no-progress", action="store_true")
    cohort.set_defaults(func=_cohort)

    train = sub.add_parser(
        "train",
        help="train a model on your slides and a label column of your clinical table",
        description="Train the self-calibrated model (or a baseline) on a folder of slides and "
        "a label column of a clinical CSV (one row per slide: patient_id, slide, the label, "
        "optionally time/event), and save it as safetensors + JSON. With --annotations, lesion "
        "polygons (QuPath GeoJSON, one file per slide, named after it) supervise regions and "
        "magnified crops; without, the model learns from the slide labels alone.",
    )
    train.add_argument("slides", type=_existing_folder("slide folder"), help="folder of slides")
    train.add_argument("--clinical", type=_existing_file("clinical CSV"), required=True,
                       help="clinical CSV, one row per slide")  # fmt: skip
    train.add_argument(
        "--label", help="clinical column to learn (two or more classes; or give --survival)"
    )
    train.add_argument("--survival", metavar="TIME,EVENT",
                       help="learn a Cox risk (higher = shorter survival) from these two "
                       "columns instead of a label: follow-up time, event 1 / censored 0 "
                       "(kinds sew, global and abmil)")  # fmt: skip
    train.add_argument("--risk-focus", choices=["two-sided", "raise"],
                       help="--survival --kind sew: focus on the regions that raise the risk "
                       "most (raise, the default) or on those whose risk departs most from the "
                       "slide's typical region either way (two-sided)")  # fmt: skip
    train.add_argument("--classes", help="class order, comma-separated (binary: last = positive)")
    train.add_argument("--annotations", type=_existing_folder("annotation folder"),
                       help="folder of per-slide GeoJSON annotations")  # fmt: skip
    train.add_argument("--lesion-class", default="Tumor", help="annotation class of the lesion")
    train.add_argument("--kind", default="sew", choices=_ModelKinds(), metavar="KIND",
                       help="model kind, one of %(choices)s (every kind trains, extracts and "
                       "explains)")  # fmt: skip
    train.add_argument(
        "--encoder",
        help="tile encoder: 'builtin', 'texture', 'crc_biopsy' (a packaged CNN trained on "
        "colorectal biopsies), a name of the local encoder registry ($WORKBENCH_ENCODERS or "
        "~/.config/workbench/encoders.json) or a .pt2 file",
    )
    train.add_argument("--stain", choices=["macenko", "reinhard"], help="stain normalisation")
    train.add_argument(
        "--confirm-candidates",
        type=_whole(0),
        metavar="M",
        help="sew: at extraction the detail branch magnifies M focus proposals and keeps the "
        "top-k most lesion-like (default 0: the focus predictor's own top-k)",
    )
    train.add_argument(
        "--confirm-by",
        choices=["lesion", "evidence"],
        help="sew, with --confirm-candidates: rank the proposals by the detail branch's lesion "
        "answer (default) or by where the tile encoder's lesion evidence peaks in each crop",
    )
    train.add_argument("--validation", type=_share, help="share of patients held out (1 in "
                       "round(1/share) of each class) for early stopping and the temperature "
                       "of the probabilities; the final model is fit on the rest (see "
                       "--refit)")  # fmt: skip
    train.add_argument("--folds", type=_whole(2), help="k-fold cross-validation by patient "
                       "(k >= 2) first: pooled out-of-fold AUC with a bootstrap interval, "
                       "per-fold table, oof_predictions.csv; each fold stops early on an "
                       "inner split of its training patients (with --survival: folds "
                       "stratified by event, Harrell's and Uno's C)")  # fmt: skip
    train.add_argument("--repeats", type=_whole(1), default=1,
                       help="repeat the cross-validation with new folds (small cohorts)")  # fmt: skip
    train.add_argument("--refit", action="store_true", help="with --validation: refit the "
                       "final model on all patients for the early-stopped epoch count "
                       "(default: the final model is fit on the training part only)")  # fmt: skip
    train.add_argument("--label-smoothing", type=_smoothing, default=0.0, metavar="EPS",
                       help="label smoothing of the slide loss, in [0, 1) (e.g. 0.1): the "
                       "model is trained towards 1 - EPS/2 instead of 1, so its probabilities "
                       "on new slides stay off 0 and 1; stored in the checkpoint (default 0)")  # fmt: skip
    train.add_argument("--on-conflicting-labels", default="raise", choices=["raise", "drop"],
                       help="patients whose slides carry different labels, with a split: "
                       "refuse, or drop them (logged)")  # fmt: skip
    train.add_argument("--mpp", type=_mpp_arg, help="µm/px: a number, or S1=0.25,S2=0.5 per slide")
    train.add_argument("--on-unmatched", default="raise", choices=["raise", "drop"],
                       help="rows without a slide file / slides without a row")  # fmt: skip
    _add_preprocessing_options(train)
    train.add_argument("--out", type=_out_folder, default=Path("runs/model"),
                       help="checkpoint folder")  # fmt: skip
    train.add_argument("--epochs", type=_whole(1), default=30)
    train.add_argument("--seed", type=_whole(0), default=0, help=seed_help)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)

    extract = sub.add_parser(
        "extract",
        help="explain slides with a trained model: one .h5ad per slide (resumable)",
        description="Run the model on slide files or folders of them. Each slide's region "
        "AnnData is written atomically and records the model and settings that made it; a "
        "rerun skips the slides whose file records the same ones and recomputes the others.",
    )
    extract.add_argument("slides", type=_existing_path, nargs="+",
                         help="slide files and/or folders")  # fmt: skip
    extract.add_argument("--model", type=_existing_folder("checkpoint folder", " (`workbench "
                         "train --out`)"), required=True, help="checkpoint folder")  # fmt: skip
    extract.add_argument("--out", type=_out_folder, required=True, help="output folder")
    extract.add_argument("--mpp", type=_mpp_arg, help="µm/px: a number, or S1=0.25,S2=0.5")
    extract.add_argument("--clinical", type=_existing_file("clinical CSV"),
                         help="clinical CSV: only the slides it lists")  # fmt: skip
    extract.add_argument("--on-unmatched", default="raise", choices=["raise", "drop"],
                         help="with --clinical: rows without a file / files without a row")  # fmt: skip
    extract.add_argument(
        "--encoder",
        help="the tile encoder (.pt2 file or registry name), if not where the model recorded it",
    )
    extract.add_argument("--top-k", type=_whole(1), help="focus regions per slide (default: "
                         "the model's)")  # fmt: skip
    extract.add_argument(
        "--client", help="'local' for a local dask cluster, or a scheduler address"
    )
    extract.add_argument("--workers", type=_whole(1), default=2,
                         help="workers of a local cluster (at least 1)")  # fmt: skip
    extract.add_argument("--connect-timeout", type=_positive_float, default=10.0,
                         help="seconds to wait for the --client scheduler")  # fmt: skip
    extract.add_argument("--overwrite", action="store_true", help="recompute finished slides")
    extract.add_argument("--force-grade", action="store_true",
                         help="grade slides that do not look like brightfield H&E too (they "
                         "are still flagged)")  # fmt: skip
    extract.add_argument("--no-progress", action="store_true")
    extract.set_defaults(func=_extract)

    disc = sub.add_parser(
        "discover",
        help="phenotypes, spatial markers and the honest survival screen",
        description="From a folder of per-slide .h5ad files and a clinical CSV (patient_id, "
        "slide, time, event, covariates) to discovery.h5ad and a ranked markers.csv. "
        "Phenotypes are fitted on discovery patients and tested on the others.",
    )
    disc.add_argument("slides", type=_existing_folder("folder of per-slide .h5ad files",
                      " (`workbench extract --out`)"),
                      help="folder of per-slide .h5ad (`workbench extract`)")  # fmt: skip
    disc.add_argument("clinical", type=_existing_file("clinical CSV"), help="clinical CSV")
    disc.add_argument("--out", type=_out_folder, required=True, help="output folder")
    disc.add_argument("--validation-fraction", type=_share, default=0.5,
                      help="share of patients tested (the rest choose the phenotypes)")  # fmt: skip
    disc.add_argument(
        "--folds",
        type=_whole(2),
        default=None,
        help="cross-fitting folds (every patient tested by phenotypes fitted on other folds); "
        "default: one discovery/validation split",
    )
    disc.add_argument(
        "--site",
        default=None,
        help="clinical column with each slide's site (or 'tcga': from TCGA barcodes); turns "
        "on the site guard (site-stratified Cox, site association of every marker)",
    )
    disc.add_argument("--on-unmatched", default="raise", choices=["raise", "drop"])
    disc.add_argument("--seed", type=_whole(0), default=0, help=seed_help)
    disc.set_defaults(func=_discover)

    report = sub.add_parser(
        "report",
        help="write the self-contained HTML report of a run folder",
    )
    report.add_argument("run", type=_existing_folder("run folder", "; run `workbench demo` "
                        "first, or give the folder of a run"), help="run folder (e.g. "
                        "runs/demo)")  # fmt: skip
    report.add_argument("--out", type=_out_file, help="HTML file (default: RUN/report.html)")
    report.add_argument("--examples", type=_whole(0), default=2, help="slides shown in detail")
    report.add_argument(
        "--time-unit",
        help="unit of the clinical follow-up times, e.g. months (default: what the run records)",
    )
    report.set_defaults(func=_report)
    for p in (train, extract, disc):  # the commands that read a clinical table
        _column_options(p)
    for p in (demo, cohort, train, extract, disc, report):
        _common(p)
    return parser


#: What a user's mistake raises, besides WorkbenchError: the OS errors of a path they gave.
_PATH_ERRORS = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    FileExistsError,
)
_PATH_HINTS = {
    FileNotFoundError: "no such file or folder; check the path",
    NotADirectoryError: "a file where a folder is needed; check the path",
    IsADirectoryError: "a folder where a file is needed; check the path",
    PermissionError: "permission denied; choose a location you can read and write",
    FileExistsError: "already exists; choose another name",
}


def _one_line(exc: BaseException) -> str:
    """The error as one line that says what to fix."""
    if not isinstance(exc, WorkbenchError) and isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {_PATH_HINTS.get(type(exc), exc.strerror or str(exc))}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    for line in lines[1:]:  # a list of problems: "…: - a - b" becomes "…: a; b"
        line = line.lstrip("-* ").strip()
        text += (" " if text.endswith(":") else "; ") + line
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code.

    Parameters
    ----------
    argv
        The arguments after the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        The exit code: 0 done, 1 some slides failed, 2 a mistake in the command or its
        inputs (said in one line on stderr), 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2, already said in one line)
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        with speaking_to_cli():  # errors name options (--folds), not keywords (folds=)
            return int(args.func(args) or 0)
    except (WorkbenchError, *_PATH_ERRORS) as exc:
        if args.debug:
            raise
        print(f"workbench {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(
            f"workbench {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
