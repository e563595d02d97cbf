"""The main job: the demo run on the synthetic cohort, step by step, resumable and crash-safe.

Each step writes its outputs atomically into the run folder and records itself in
``run.json``: the *inputs* it ran with (its own settings, and what it read that an earlier
step made, such as the model's checksum), their *fingerprint* (a SHA-256 of those inputs),
the run id of the step before it at that time (``after``) and its own run id. A rerun skips a
step only when

1. its fingerprint is the same (no setting and no input changed),
2. the step before it has not run again since (``after`` is that step's current run id), and
3. every output it wrote is still there.

Otherwise the step runs again, and then every step after it does too (their ``after`` no
longer matches), per-slide outputs included: ``tl.extract_cohort`` recomputes every
``.h5ad`` whose recorded model or settings differ, and files of slides that are no longer in
the cohort are removed. ``force=True`` reruns every step from scratch. A run killed at any
moment (``kill -9``) resumes: temporary files of the killed run are removed when the run
starts (:func:`workbench.io.clean_partial`), and a step that did not record itself runs again.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench._errors import OptionError, WorkbenchError
from workbench.io import atomic_write_text, fingerprint

logger = logging.getLogger(__name__)

#: The smallest demo cohort: every grade in both the training and the held-out slides.
MIN_PATIENTS = 6


@dataclass
class Step:
    """One step of a run: its name, the files it writes (relative to the run folder), what it
    does (``run(root, force)`` returns a small record) and its own inputs and settings."""

    name: str
    outputs: list[str] | Callable[[], list[str]]
    run: Callable[[Path, bool], dict]
    inputs: Callable[[], dict] = dict

    def output_names(self) -> list[str] | None:
        """The outputs, or ``None`` when they cannot be listed (an earlier output is gone)."""
        try:
            return list(self.outputs() if callable(self.outputs) else self.outputs)
        except (OSError, ValueError, KeyError, WorkbenchError):
            return None


def _changes(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new), key=lambda k: (k not in new, k))
    diff = [k for k in keys if old.get(k) != new.get(k)]
    parts = []
    for k in diff[:3]:
        a, b = old.get(k), new.get(k)
        short = lambda v: (v[:12] + "…") if isinstance(v, str) and len(v) > 16 else v  # noqa: E731
        parts.append(f"{k} {short(a)!r} → {short(b)!r}")
    more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
    return "changed: " + ", ".join(parts) + more if parts else "its inputs changed"


@dataclass
class DemoRun:
    """A run folder and the steps that fill it."""

    root: Path
    size: str | tuple[int, int] = "tiny"
    n_patients: int = 36
    seed: int = 0
    epochs: int = 16
    test_fraction: float = 0.33
    progress: bool = True
    steps: list[Step] = field(default_factory=list)

    @property
    def cohort_dir(self) -> Path:
        return self.root / "cohort"

    @property
    def config(self) -> dict:
        size = self.size if isinstance(self.size, str) else [int(v) for v in self.size]
        return {
            "size": size,
            "n_patients": self.n_patients,
            "seed": self.seed,
            "epochs": self.epochs,
        }

    def manifest(self) -> dict:
        """``run.json`` (``{"steps": {}}`` when there is none or it cannot be read)."""
        path = self.root / "run.json"
        if not path.exists():
            return {"steps": {}}
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("%s cannot be read (%s); every step runs again", path, exc)
            return {"steps": {}}
        if not isinstance(m, dict) or not isinstance(m.get("steps"), dict):
            logger.warning("%s is not a run record; every step runs again", path)
            return {"steps": {}}
        return m

    def _write_manifest(self, m: dict) -> None:
        m["config"] = self.config
        atomic_write_text(self.root / "run.json", json.dumps(m, indent=2))

    def _why_rerun(self, step: Step, record: dict | None, fp: str, inputs: dict, after):
        """Why ``step`` must run (``None``: it is done and up to date)."""
        if not isinstance(record, dict):
            return "not run yet"
        if record.get("fingerprint") != fp:
            return _changes(record.get("inputs") or {}, inputs)
        if record.get("after") != after:
            return "an earlier step ran again"
        names = step.output_names()
        if names is None:
            return "its outputs cannot be listed"
        missing = [n for n in names if not (self.root / n).exists()]
        if missing:
            extra = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            return f"{missing[0]}{extra} missing"
        return None

    def execute(self, *, force: bool = False, echo: Callable[[str], None] = print) -> dict:
        """Run the steps that are not done (all of them with ``force``); returns ``run.json``.

        Raises
        ------
        OutputWriteError
            The run folder is a file or cannot be created.
        """
        from workbench._steps import start_step

        start_step(self.root, what="run folder")
        manifest = self.manifest()
        after = None
        for i, step in enumerate(self.steps):
            inputs = step.inputs()
            fp = fingerprint(inputs)
            record = manifest["steps"].get(step.name)
            reason = "--force" if force else self._why_rerun(step, record, fp, inputs, after)
            if reason is None:
                names = step.output_names() or []
                shown = ", ".join(names[:3]) + (
                    f" … ({len(names)} files)" if len(names) > 3 else ""
                )
                echo(f"[{step.name}] done already, skipped ({shown})")
                after = record["run"]
                continue
            # Records of this step and the later ones no longer hold once it starts again.
            later = [s.name for s in self.steps[i:] if s.name in manifest["steps"]]
            if later:
                for name in later:
                    del manifest["steps"][name]
                self._write_manifest(manifest)
            echo(f"[{step.name}] running ({reason}) …")
            t = time.perf_counter()
            info = step.run(self.root, force) or {}
            run_id = uuid.uuid4().hex[:12]
            manifest["steps"][step.name] = {
                **info,
                "seconds": round(time.perf_counter() - t, 2),
                "fingerprint": fp,
                "inputs": inputs,
                "after": after,
                "run": run_id,
            }
            self._write_manifest(manifest)
            after = run_id
            echo(f"[{step.name}] finished in {manifest['steps'][step.name]['seconds']:.1f} s")
        return manifest


#: The demo's label: a column the cohort step adds to the clinical table, as a user would.
LABEL = "grade_group"
CLASSES = ["low grade (1-2)", "high grade (3)"]  # binary: the last is the positive class


def _remove_other_cohort(run: DemoRun, force: bool) -> None:
    """Empty the run's cohort folder when it holds another cohort (or with ``force``): the
    cohort is the run's own generated data, and ``make_cohort`` refuses to mix two."""
    from workbench.datasets._cohort import _params, _same_params

    meta = run.cohort_dir / "cohort.json"
    if not run.cohort_dir.exists():
        return
    reason = "--force" if force else None
    if reason is None and meta.exists():
        try:
            old = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            old = {}
        if not _same_params(old, _params(run.n_patients, run.size, run.seed, False)):
            reason = "it holds a cohort drawn with other arguments"
    if reason is not None:
        logger.info("removing %s (%s); drawing the cohort again", run.cohort_dir, reason)
        shutil.rmtree(run.cohort_dir)


def _cohort_step(run: DemoRun) -> Step:
    def go(root: Path, force: bool) -> dict:
        from workbench.datasets import make_cohort
        from workbench.io import read_clinical

        _remove_other_cohort(run, force)
        cohort = make_cohort(
            run.cohort_dir,
            n_patients=run.n_patients,
            size=run.size,
            seed=run.seed,
            progress=run.progress,
        )
        # The label to learn goes into a clinical table of the run: what a user brings.
        table = read_clinical(run.cohort_dir / "clinical.csv")
        table[LABEL] = [CLASSES[int(g >= 3)] for g in table["grade"]]
        atomic_write_text(root / "clinical.csv", table.to_csv(index=False))
        return {"n_slides": len(cohort), "label": LABEL}

    def outputs() -> list[str]:
        from workbench.datasets import load_cohort

        cohort = load_cohort(run.cohort_dir)
        layout = cohort.params["files"]  # the cohort's own record of its file names
        files = ["cohort/clinical.csv", "cohort/cohort.json", "cohort/truth.csv", "clinical.csv"]
        for sid in cohort.slide_ids:
            for key in ("slides", "lesion_masks", "lesion_geojson"):
                files.append(f"cohort/{layout[key].format(slide_id=sid)}")
        return files

    def inputs() -> dict:
        from workbench.datasets._cohort import GENERATOR_VERSION

        return {
            "generator_version": GENERATOR_VERSION,
            "n_patients": run.n_patients,
            "size": run.config["size"],
            "seed": run.seed,
            "label": LABEL,
            "classes": CLASSES,
        }

    return Step("cohort", outputs, go, inputs)


def user_cohort(run: DemoRun):
    """The cohort as a user opens it: slide folder, clinical CSV, annotation folder."""
    from workbench._steps import open_cohort

    return open_cohort(
        run.cohort_dir / "slides",
        run.root / "clinical.csv",
        annotations=run.cohort_dir / "annotations",
    )


def _summary_step(run: DemoRun) -> Step:
    def go(root: Path, force: bool) -> dict:
        import matplotlib.pyplot as plt

        from workbench.datasets import load_cohort, montage
        from workbench.io import Slide, atomic_path

        cohort = load_cohort(run.cohort_dir)
        clinical = cohort.clinical
        slides = []
        for sid in cohort.truth["slide_id"]:
            with Slide(cohort.slide_path(sid)) as s:
                slides.append(
                    {
                        "slide_id": sid,
                        "dimensions": list(s.dimensions),
                        "levels": s.level_count,
                        "mpp": s.mpp,
                        "vendor": s.info.vendor,
                    }
                )
        summary = {
            "n_patients": int(len(clinical)),
            "grades": {
                str(k): int(v) for k, v in clinical["grade"].value_counts().sort_index().items()
            },
            "events": int(clinical["event"].sum()),
            "median_follow_up": float(clinical["time"].median()),
            "slides": slides,
        }
        atomic_write_text(root / "summary.json", json.dumps(summary, indent=2))
        fig = montage(cohort)
        fig = fig if hasattr(fig, "savefig") else fig.figure
        with atomic_path(root / "montage.png") as tmp:
            fig.savefig(tmp, dpi=90, bbox_inches="tight")
        plt.close(fig)
        return {"summary": "summary.json", "montage": "montage.png"}

    return Step("summary", ["summary.json", "montage.png"], go)


def _split(run: DemoRun) -> tuple[list[str], list[str]]:
    """Seeded, grade-stratified train/test split of the cohort's slide ids (one per patient)."""
    import numpy as np

    from workbench.datasets import load_cohort

    grades = load_cohort(run.cohort_dir).labels("grade")
    rng = np.random.default_rng(run.seed)
    train, test = [], []
    for grade in sorted(set(grades)):
        slides = sorted(grades.index[grades == grade])
        rng.shuffle(slides)
        n_test = max(1, int(round(len(slides) * run.test_fraction)))
        test += slides[:n_test]
        train += slides[n_test:]
    return sorted(train), sorted(test)


#: How the demo trains (recorded in the train step's inputs).
TRAIN_SETTINGS = {"kind": "sew", "encoder": "builtin", "stain": None, "validation": None}


def _train_step(run: DemoRun) -> Step:
    def go(root: Path, force: bool) -> dict:
        from workbench._steps import LEGACY_RECORD, train_step

        train, test = _split(run)
        trainer = train_step(
            user_cohort(run),
            root / "model",
            label=LABEL,
            classes=CLASSES,
            kind=TRAIN_SETTINGS["kind"],
            epochs=run.epochs,
            seed=run.seed,
            encoder=None,
            stain=TRAIN_SETTINGS["stain"],
            validation=TRAIN_SETTINGS["validation"],
            slide_ids=train,
            progress=run.progress,
        )
        # the checkpoint records the left-out slides (the test split); an earlier version's
        # copy of the record in the run folder would describe the model just replaced
        (root / LEGACY_RECORD).unlink(missing_ok=True)
        return {"n_train": len(train), "n_test": len(test), "epochs": len(trainer.history_)}

    def inputs() -> dict:
        from workbench import __version__

        return {
            **TRAIN_SETTINGS,
            "label": LABEL,
            "classes": CLASSES,
            "epochs": run.epochs,
            "seed": run.seed,
            "test_fraction": run.test_fraction,
            "workbench": __version__,
        }

    return Step("train", ["model/config.json", "model/model.safetensors"], go, inputs)


def held_out_slides(root: Path) -> list[str]:
    """The demo's held-out test slides: those the train step left out of training, as the
    checkpoint ``root/model`` records them (``held_out_slides``; in a run folder of an
    earlier version, its ``training.json``).

    Parameters
    ----------
    root
        The run folder.

    Returns
    -------
    list of str
        Slide ids, sorted as the cohort lists them.

    Raises
    ------
    ResultFileError
        No record names them (the train step has not run, or its checkpoint is damaged).
    """
    from workbench._errors import ResultFileError
    from workbench._steps import training_record

    slides = (training_record(root / "model") or {}).get("held_out_slides")
    if not slides:  # a run folder of an earlier version kept them beside the model
        slides = (training_record(root) or {}).get("held_out_slides")
    if not slides:
        raise ResultFileError(
            f"the model in {str(root / 'model')!r} records no held-out test slides; run the "
            "train step again (`workbench demo --force`)"
        )
    return [str(s) for s in slides]


def _extract_step(run: DemoRun) -> Step:
    def go(root: Path, force: bool) -> dict:
        from workbench._steps import extract_step
        from workbench.io import list_results

        cohort = user_cohort(run)
        keep = {f"{sid}.h5ad" for sid in cohort.slide_ids}
        for p in list_results(root / "slides", "*.h5ad"):
            if p.name not in keep:  # a slide of an earlier, larger cohort
                logger.info("removing %s: its slide is not in the cohort", p)
                p.unlink()
        table = extract_step(
            cohort, root / "model", root / "slides", overwrite=force, progress=run.progress
        )
        failed = table[table["status"] == "failed"]
        if len(failed):
            raise RuntimeError(f"extraction failed for {len(failed)} slide(s):\n{failed}")
        counts = table["status"].value_counts().to_dict()
        return {"n_slides": len(cohort), "computed": int(counts.get("done", 0))}

    def outputs() -> list[str]:
        from workbench.datasets import load_cohort

        return [f"slides/{sid}.h5ad" for sid in load_cohort(run.cohort_dir).slide_ids]

    def inputs() -> dict:
        from workbench.tl import model_fingerprint

        return {"model": model_fingerprint(run.root / "model"), "top_k": None, "mpp": None}

    return Step("extract", outputs, go, inputs)


def _evaluate_step(run: DemoRun) -> Step:
    def go(root: Path, force: bool) -> dict:
        import anndata as ad
        import numpy as np

        from workbench.datasets import load_cohort
        from workbench.tl import classification_metrics, focus_in_mask

        truth = load_cohort(run.cohort_dir)  # the synthetic truth: lesion masks
        labels = user_cohort(run).labels(LABEL)
        grades = truth.labels("grade")
        test = held_out_slides(root)
        y, probs, hits, n_focus, per_slide = [], [], 0, 0, []
        for sid in test:
            a = ad.read_h5ad(root / "slides" / f"{sid}.h5ad")
            ex = a.uns["explain"]
            names = [str(c) for c in ex["class_names"]]
            p = np.asarray(ex["probabilities"], dtype=float).ravel()
            inside = focus_in_mask(a, *truth.lesion_mask(sid))
            hits += int(inside.sum())
            n_focus += len(inside)
            y.append(names.index(str(labels[sid])))
            probs.append(p)
            per_slide.append(
                {"slide": sid, "grade": int(grades[sid]), "label": str(labels[sid]),
                 "p_high_grade": float(p[names.index(CLASSES[1])]),
                 "focus_in_lesion": int(inside.sum()), "n_focus": len(inside)}
            )  # fmt: skip
        metrics = classification_metrics(np.asarray(y), np.asarray(probs))
        record = {
            "task": f"{LABEL}: {CLASSES[1]} vs {CLASSES[0]}, slide level",
            "label": LABEL,
            "n_test": len(test),
            "models": {"self-calibrated (SEW)": {**metrics, "n_test": len(test)}},
            "focus_hit_rate": hits / max(n_focus, 1),
            "per_slide": per_slide,
        }
        atomic_write_text(root / "evaluation.json", json.dumps(record, indent=2))
        return {"auc": metrics["auc"], "accuracy": metrics["accuracy"],
                "focus_hit_rate": record["focus_hit_rate"]}  # fmt: skip

    return Step("evaluate", ["evaluation.json"], go)


#: How the refine step clicks (recorded in its inputs).
REFINE_SETTINGS = {
    "method": "cgam",
    "max_clicks": 8,
    "target_iou": 0.9,
    "view_size": 384,
    "view_downsample": 4.0,
}


def _without_refinement(adata):
    """The slide's AnnData as extraction wrote it: a refinement saved by an earlier (perhaps
    interrupted) refine step is dropped, so that every run refines from the same start."""
    from workbench._constants import LESION_REFINED

    cols = [c for c in (LESION_REFINED, f"{LESION_REFINED}_fraction") if c in adata.obs]
    if cols:
        adata.obs = adata.obs.drop(columns=cols)
    adata.uns.pop(LESION_REFINED, None)
    return adata


def _refine_step(run: DemoRun) -> Step:
    """Refine the lesion of one held-out slide with simulated clicks, as a user would, in the
    headless :class:`~workbench.interactive.RefinementSession` (no widget)."""
    settings = REFINE_SETTINGS

    def go(root: Path, force: bool) -> dict:
        import anndata as ad
        import matplotlib.pyplot as plt

        from workbench.datasets import load_cohort
        from workbench.interactive import RefinementSession, iou, next_click
        from workbench.io import atomic_path

        cohort = load_cohort(run.cohort_dir)
        test = held_out_slides(root)
        sid = max(test, key=lambda s: int(cohort.lesion_mask(s)[0].sum()))
        h5ad = root / "slides" / f"{sid}.h5ad"
        refined = root / "refined"
        for p in refined.glob("*") if refined.is_dir() else []:
            if p.is_file() and not p.name.startswith(f"{sid}."):  # another slide's, earlier
                p.unlink()
        session = RefinementSession(
            cohort.slide_path(sid),
            adata=_without_refinement(ad.read_h5ad(h5ad)),
            output=refined / f"{sid}.lesion.geojson",
            adata_path=h5ad,
            view_size=settings["view_size"],
            view_downsample=settings["view_downsample"],
            method=settings["method"],
            learn=False,  # a rerun (e.g. after a kill) must refine exactly as the first run
        )
        session.select_focus(0)
        truth, ds = cohort.lesion_mask(sid)
        gt = session.view_mask_of(truth, ds)
        before = session.mask.copy()
        ious = [iou(before, gt)]
        clicks = []
        while len(clicks) < settings["max_clicks"] and ious[-1] < settings["target_iou"]:
            click = next_click(session.mask, gt)
            if click is None:
                break
            session.click(click.x, click.y, positive=click.positive)
            clicks.append({"x": click.x, "y": click.y, "positive": click.positive})
            ious.append(iou(session.mask, gt))
        path = session.save()

        fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
        for ax, (title, m) in zip(
            axes,
            [("model's lesion map", before), ("after the clicks", session.mask), ("truth", gt)],
            strict=True,
        ):
            ax.imshow(session.view_image)
            ax.contour(m, levels=[0.5], colors=["#ffd400"], linewidths=1.5)
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        for c in clicks:
            axes[1].plot(c["x"], c["y"], "o", ms=5, color="#00c000" if c["positive"] else "#e00000")
        with atomic_path(refined / f"{sid}.png") as tmp:
            fig.savefig(tmp, dpi=80, bbox_inches="tight")
        plt.close(fig)
        record = {
            "slide_id": sid,
            "method": session.engine.method,
            "n_clicks": len(clicks),
            "clicks": clicks,
            "iou_per_click": ious,
            "geojson": str(path.relative_to(root)),
            "figure": f"refined/{sid}.png",
            "view_origin_xy": list(session.view_origin_xy),
            "view_downsample": session.view_downsample,
        }
        atomic_write_text(root / "refine.json", json.dumps(record, indent=2))
        return {"slide": sid, "n_clicks": len(clicks), "iou": ious[-1]}

    def outputs() -> list[str]:
        record = json.loads((run.root / "refine.json").read_text())
        return ["refine.json", record["geojson"], record["figure"]]

    def inputs() -> dict:
        from workbench.models import CLICK_SEGMENTER, read_checkpoint_config

        segmenter = read_checkpoint_config(CLICK_SEGMENTER)["weights_sha256"]
        return {**settings, "segmenter": segmenter}

    return Step("refine", outputs, go, inputs)


#: How the discover step screens (recorded in its inputs).
DISCOVER_SETTINGS = {"validation_fraction": 0.5, "folds": None, "site_key": None}


def _discover_step(run: DemoRun) -> Step:
    def go(root: Path, force: bool) -> dict:
        from workbench._steps import discover_step

        result = discover_step(
            root / "slides", user_cohort(run), root, seed=run.seed, **DISCOVER_SETTINGS
        )
        screen = result.uns["survival_screen"]
        return {"n_markers": int(len(screen)), "n_called": int(screen["called"].sum())}

    def inputs() -> dict:
        return {**DISCOVER_SETTINGS, "seed": run.seed}

    return Step("discover", ["discovery.h5ad", "markers.csv"], go, inputs)


def _report_step(run: DemoRun) -> Step:
    def go(root: Path, force: bool) -> dict:
        from workbench.report import write_report

        path = write_report(root, n_examples=2)
        return {"report": path.name}

    return Step("report", ["report.html"], go, lambda: {"n_examples": 2})


def build_demo(
    root: str | Path,
    *,
    size: str | tuple[int, int] = "tiny",
    n_patients: int = 36,
    seed: int = 0,
    epochs: int = 16,
    progress: bool = True,
) -> DemoRun:
    """The demo pipeline in ``root``: cohort → summary → train → extract → evaluate → refine
    → discover → report.

    Raises
    ------
    OptionError
        Fewer than :data:`MIN_PATIENTS` patients, fewer than one epoch, a negative seed.
    """
    for name, value, low in (("n_patients", n_patients, MIN_PATIENTS), ("epochs", epochs, 1),
                             ("seed", seed, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            why = " (every grade in training and held-out slides)" if name == "n_patients" else ""
            raise OptionError(f"{name} must be a whole number >= {low}{why}, got {value!r}")
    run = DemoRun(
        Path(root), size=size, n_patients=n_patients, seed=seed, epochs=epochs, progress=progress
    )
    run.steps = [
        _cohort_step(run),
        _summary_step(run),
        _train_step(run),
        _extract_step(run),
        _evaluate_step(run),
        _refine_step(run),
        _discover_step(run),
        _report_step(run),
    ]
    return run
