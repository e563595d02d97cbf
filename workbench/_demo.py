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


def _cohort_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        from workbench.datasets import make_cohort

        cohort = make_cohort(
            run.cohort_dir,
            n_patients=run.n_patients,
            size=run.size,
            seed=run.seed,
            progress=run.progress,
        )
        return {"n_slides": len(cohort.clinical)}

    return Step("cohort", ["cohort/clinical.csv", "cohort/cohort.json"], go)


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
    """Seeded, grade-stratified train/test split of the cohort's slides (one per patient)."""
    import numpy as np

    from workbench.datasets import load_cohort

    clinical = load_cohort(run.cohort_dir).clinical
    rng = np.random.default_rng(run.seed)
    train, test = [], []
    for _, group in clinical.groupby("grade"):
        slides = list(group["slide"].astype(str))
        rng.shuffle(slides)
        n_test = max(1, int(round(len(slides) * run.test_fraction)))
        test += slides[:n_test]
        train += slides[n_test:]
    return sorted(train), sorted(test)


def _train_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        from workbench.datasets import load_cohort
        from workbench.tl import SlideTrainer

        cohort = load_cohort(run.cohort_dir)
        train, test = _split(run)
        trainer = SlideTrainer(kind="sew", epochs=run.epochs, seed=run.seed, progress=run.progress)
        trainer.fit(cohort, slide_ids=[_slide_stem(s) for s in train])
        trainer.save(root / "model")
        history = [
            {k: float(v) for k, v in h.items() if isinstance(v, int | float)}
            for h in trainer.history_
        ]
        record = {"train_slides": train, "test_slides": test, "history": history}
        atomic_write_text(root / "training.json", json.dumps(record, indent=2))
        return {"n_train": len(train), "n_test": len(test), "epochs": run.epochs}

    return Step("train", ["model/config.json", "training.json"], go)


def _slide_stem(slide: str) -> str:
    return Path(slide).stem


def _extract_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        from workbench.datasets import load_cohort
        from workbench.tl import extract_cohort

        cohort = load_cohort(run.cohort_dir)
        slides = {_slide_stem(s): cohort.slide_path(s) for s in cohort.clinical["slide"]}
        table = extract_cohort(slides, root / "model", root / "slides", progress=run.progress)
        failed = table[table["status"] == "failed"] if "status" in table else table.iloc[:0]
        if len(failed):
            raise RuntimeError(f"extraction failed for {len(failed)} slide(s):\n{failed}")
        return {"n_slides": len(slides)}

    def outputs() -> list[str]:
        from workbench.datasets import load_cohort

        clinical = load_cohort(run.cohort_dir).clinical
        return [f"slides/{_slide_stem(s)}.h5ad" for s in clinical["slide"].astype(str)]

    return Step("extract", outputs, go)


def _evaluate_step(run: DemoRun) -> Step:
    def go(root: Path) -> dict:
        import anndata as ad
        import numpy as np
        from sklearn.metrics import roc_auc_score

        from workbench.datasets import load_cohort
        from workbench.tl import focus_in_mask, label_from_grade

        cohort = load_cohort(run.cohort_dir)
        test = json.loads((root / "training.json").read_text())["test_slides"]
        grade = cohort.clinical.set_index(cohort.clinical["slide"].astype(str))["grade"]
        y, p, hits, n_focus, per_slide = [], [], 0, 0, []
        for slide in test:
            a = ad.read_h5ad(root / "slides" / f"{_slide_stem(slide)}.h5ad")
            ex = a.uns["explain"]
            prob = float(np.asarray(ex["probabilities"]).ravel()[1])
            label = int(label_from_grade(int(grade[slide])))
            inside = focus_in_mask(a, *cohort.lesion_mask(slide))
            hits += int(inside.sum())
            n_focus += len(inside)
            y.append(label)
            p.append(prob)
            per_slide.append(
                {"slide": slide, "grade": int(grade[slide]), "p_high_grade": prob,
                 "focus_in_lesion": int(inside.sum()), "n_focus": len(inside)}
            )  # fmt: skip
        y_arr, p_arr = np.asarray(y), np.asarray(p)
        auc = float(roc_auc_score(y_arr, p_arr)) if len(set(y)) == 2 else None
        acc = float(((p_arr >= 0.5).astype(int) == y_arr).mean())
        record = {
            "task": "high grade (grade 3) vs grades 1-2, slide level",
            "n_test": len(test),
            "models": {"self-calibrated (SEW)": {"auc": auc, "accuracy": acc, "n_test": len(test)}},
            "focus_hit_rate": hits / max(n_focus, 1),
            "per_slide": per_slide,
        }
        atomic_write_text(root / "evaluation.json", json.dumps(record, indent=2))
        return {"auc": auc, "accuracy": acc, "focus_hit_rate": record["focus_hit_rate"]}

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
        slide = max(test, key=lambda s: int(cohort.lesion_mask(s)[0].sum()))
        sid = _slide_stem(slide)
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
        from workbench.datasets import load_cohort
        from workbench.io import write_h5ad
        from workbench.tl import discover, read_slides

        cohort = load_cohort(run.cohort_dir)
        adatas = read_slides(root / "slides")
        clinical = cohort.clinical.copy()
        clinical["slide"] = clinical["slide"].astype(str).map(_slide_stem)
        result = discover(adatas, clinical, seed=run.seed)
        write_h5ad(result, root / "discovery.h5ad")
        screen = result.uns["survival_screen"]
        screen.to_csv(root / "markers.csv")
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
