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
    outputs: list[str]
    run: Callable[[Path], dict]


@dataclass
class DemoRun:
    """A run folder and the steps that fill it."""

    root: Path
    size: str = "demo"
    n_patients: int = 12
    seed: int = 0
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
        m["config"] = {"size": self.size, "n_patients": self.n_patients, "seed": self.seed}
        m["steps"][name] = info
        atomic_write_text(self.root / "run.json", json.dumps(m, indent=2))

    def execute(self, *, force: bool = False, echo: Callable[[str], None] = print) -> dict:
        self.root.mkdir(parents=True, exist_ok=True)
        done = self.manifest()["steps"]
        for step in self.steps:
            outs = [self.root / o for o in step.outputs]
            if not force and step.name in done and all(o.exists() for o in outs):
                echo(f"[{step.name}] done already, skipped ({', '.join(step.outputs)})")
                continue
            echo(f"[{step.name}] running …")
            t = time.perf_counter()
            info = step.run(self.root) or {}
            info["seconds"] = round(time.perf_counter() - t, 2)
            self._record(step.name, info)
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
        import matplotlib

        matplotlib.use("Agg")
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


def build_demo(
    root: str | Path,
    *,
    size: str = "demo",
    n_patients: int = 12,
    seed: int = 0,
    progress: bool = True,
) -> DemoRun:
    """The demo pipeline in ``root``: synthetic cohort, then its summary and montage."""
    run = DemoRun(Path(root), size=size, n_patients=n_patients, seed=seed, progress=progress)
    run.steps = [_cohort_step(run), _summary_step(run)]
    return run
