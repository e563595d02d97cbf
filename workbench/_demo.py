"""The main job: the demo run on the synthetic cohort, step by step, resumable.

Each step writes its outputs atomically into the run folder and records itself in
``run.json``; a second run skips the steps whose outputs are all present.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.io import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class Step:
    name: str
    outputs: list[str] | Callable[[], list[str]]
    run: Callable[[Path], dict]

    def output_names(self) -> list[str]:
        return list(self.outputs() if callable(self.outputs) else self.outputs)


@dataclass
class DemoRun:
    """A run folder and the steps that fill it."""

    root: Path
    size: str = "demo"
    n_patients: int = 12
    seed: int = 0
    epochs: int = 16
    test_fraction: float = 0.33
    progress: bool = True
    steps: list[Step] = field(default_factory=list)

    @property
    def cohort_dir(self) -> Path:
        return self.root / "cohort"

    def manifest(self) -> dict:
        path = self.root / "run.json"
        return json.loads(path.read_text()) if path.exists() else {"steps": {}}

    def _record(self, name: str, info: dict) -> None:
        m = self.manifest()
        m["config"] = {
            "size": self.size,
            "n_patients": self.n_patients,
            "seed": self.seed,
            "epochs": self.epochs,
        }
        m["steps"][name] = info
        atomic_write_text(self.root / "run.json", json.dumps(m, indent=2))

    def execute(self, *, force: bool = False, echo: Callable[[str], None] = print) -> dict:
        self.root.mkdir(parents=True, exist_ok=True)
        done = self.manifest()["steps"]
        for step in self.steps:
            names = step.output_names() if step.name in done else []
            # Once a step reruns, every later step reruns too: its inputs may have changed.
            if not force and step.name in done and all((self.root / o).exists() for o in names):
                shown = ", ".join(names[:3]) + (
                    f" … ({len(names)} files)" if len(names) > 3 else ""
                )
                echo(f"[{step.name}] done already, skipped ({shown})")
                continue
            echo(f"[{step.name}] running …")
            t = time.perf_counter()
            info = step.run(self.root) or {}
            info["seconds"] = round(time.perf_counter() - t, 2)
            self._record(step.name, info)
            force = True
            echo(f"[{step.name}] finished in {info['seconds']:.1f} s")
        return self.manifest()


#: The demo's label: a column the cohort step adds to the clinical table, as a user would.
LABEL = "grade_group"
CLASSES = ["low grade (1-2)", "high grade (3)"]  # binary: the last is the positive class


def _cohort_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        import pandas as pd

        from workbench.datasets import make_cohort

        cohort = make_cohort(
            run.cohort_dir,
            n_patients=run.n_patients,
            size=run.size,
            seed=run.seed,
            progress=run.progress,
        )
        # The label to learn goes into a clinical table of the run: what a user brings.
        table = pd.read_csv(run.cohort_dir / "clinical.csv", dtype={"patient_id": str})
        table[LABEL] = [CLASSES[int(g >= 3)] for g in table["grade"]]
        atomic_write_text(root / "clinical.csv", table.to_csv(index=False))
        return {"n_slides": len(cohort), "label": LABEL}

    return Step("cohort", ["cohort/clinical.csv", "cohort/cohort.json", "clinical.csv"], go)


def user_cohort(run: DemoRun):
    """The cohort as a user opens it: slide folder, clinical CSV, annotation folder."""
    from workbench._steps import open_cohort

    return open_cohort(
        run.cohort_dir / "slides",
        run.root / "clinical.csv",
        annotations=run.cohort_dir / "annotations",
    )


def _summary_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
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


def _train_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        from workbench._steps import train_step

        train, test = _split(run)
        trainer = train_step(
            user_cohort(run),
            root / "model",
            label=LABEL,
            classes=CLASSES,
            kind="sew",
            epochs=run.epochs,
            seed=run.seed,
            slide_ids=train,
            progress=run.progress,
        )
        record = json.loads((root / "model" / "training.json").read_text())
        record["test_slides"] = test
        atomic_write_text(root / "training.json", json.dumps(record, indent=2))
        return {"n_train": len(train), "n_test": len(test), "epochs": len(trainer.history_)}

    return Step("train", ["model/config.json", "training.json"], go)


def _extract_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        from workbench._steps import extract_step

        cohort = user_cohort(run)
        table = extract_step(cohort, root / "model", root / "slides", progress=run.progress)
        failed = table[table["status"] == "failed"]
        if len(failed):
            raise RuntimeError(f"extraction failed for {len(failed)} slide(s):\n{failed}")
        return {"n_slides": len(cohort)}

    def outputs() -> list[str]:
        from workbench.datasets import load_cohort

        return [f"slides/{sid}.h5ad" for sid in load_cohort(run.cohort_dir).slide_ids]

    return Step("extract", outputs, go)


def _evaluate_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        import anndata as ad
        import numpy as np

        from workbench.datasets import load_cohort
        from workbench.tl import classification_metrics, focus_in_mask

        truth = load_cohort(run.cohort_dir)  # the synthetic truth: lesion masks
        labels = user_cohort(run).labels(LABEL)
        grades = truth.labels("grade")
        test = json.loads((root / "training.json").read_text())["test_slides"]
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


def _refine_step(run: DemoRun, *, max_clicks: int = 8, target_iou: float = 0.9) -> Step:
    """Refine the lesion of one held-out slide with simulated clicks, as a user would."""

    def go(root: Path) -> dict:
        import anndata as ad
        import matplotlib.pyplot as plt

        from workbench.datasets import load_cohort
        from workbench.interactive import RegionRefiner, iou, next_click
        from workbench.io import atomic_path

        cohort = load_cohort(run.cohort_dir)
        test = json.loads((root / "training.json").read_text())["test_slides"]
        sid = max(test, key=lambda s: int(cohort.lesion_mask(s)[0].sum()))
        slide = sid
        h5ad = root / "slides" / f"{sid}.h5ad"
        refiner = RegionRefiner(
            cohort.slide_path(slide),
            adata=ad.read_h5ad(h5ad),
            output=root / "refined" / f"{sid}.lesion.geojson",
            adata_path=h5ad,
            view_size=384,
            view_downsample=4.0,
        )
        refiner.select_focus(0)
        truth, ds = cohort.lesion_mask(slide)
        gt = refiner.view_mask_of(truth, ds)
        before = refiner.mask.copy()
        ious = [iou(before, gt)]
        clicks = []
        while len(clicks) < max_clicks and ious[-1] < target_iou:
            click = next_click(refiner.mask, gt)
            if click is None:
                break
            refiner.handle_click(click.x, click.y, positive=click.positive)
            clicks.append({"x": click.x, "y": click.y, "positive": click.positive})
            ious.append(iou(refiner.mask, gt))
        path = refiner.save()

        fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
        for ax, (title, m) in zip(
            axes,
            [("model's lesion map", before), ("after the clicks", refiner.mask), ("truth", gt)],
            strict=True,
        ):
            ax.imshow(refiner.view_image)
            ax.contour(m, levels=[0.5], colors=["#ffd400"], linewidths=1.5)
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        for c in clicks:
            axes[1].plot(c["x"], c["y"], "o", ms=5, color="#00c000" if c["positive"] else "#e00000")
        with atomic_path(root / "refined" / f"{sid}.png") as tmp:
            fig.savefig(tmp, dpi=80, bbox_inches="tight")
        plt.close(fig)
        record = {
            "slide_id": sid,
            "method": refiner.engine.method,
            "n_clicks": len(clicks),
            "clicks": clicks,
            "iou_per_click": ious,
            "geojson": str(path.relative_to(root)),
            "figure": f"refined/{sid}.png",
            "view_origin_xy": list(refiner.view_origin_xy),
            "view_downsample": refiner.view_downsample,
        }
        atomic_write_text(root / "refine.json", json.dumps(record, indent=2))
        return {"slide": sid, "n_clicks": len(clicks), "iou": ious[-1]}

    return Step("refine", ["refine.json"], go)


def _discover_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        from workbench._steps import discover_step

        result = discover_step(root / "slides", user_cohort(run), root, seed=run.seed)
        screen = result.uns["survival_screen"]
        return {"n_markers": int(len(screen)), "n_called": int(screen["called"].sum())}

    return Step("discover", ["discovery.h5ad", "markers.csv"], go)


def _report_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        from workbench.report import write_report

        path = write_report(root)
        return {"report": path.name}

    return Step("report", ["report.html"], go)


def build_demo(
    root: str | Path,
    *,
    size: str = "tiny",
    n_patients: int = 36,
    seed: int = 0,
    epochs: int = 16,
    progress: bool = True,
) -> DemoRun:
    """The demo pipeline in ``root``: cohort → train → extract → evaluate → refine → discover
    → report."""
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
