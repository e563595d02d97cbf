"""Rebuild the README's demo figures from a finished demo run.

    .venv/bin/workbench demo                      # writes runs/demo
    .venv/bin/python tools/build_readme_figures.py [runs/demo]

Writes docs/images/demo_explain.png (overlay + focus gallery of a held-out slide),
docs/images/demo_refine.png (the refined region) and docs/images/demo_km.png (Kaplan-Meier
curves of the top marker), and rewrites the README's sentences that quote the run's figures
(between ``<!-- run:NAME -->`` and ``<!-- /run:NAME -->`` markers), so the numbers next to the
pictures always come from the same run.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from workbench import pl  # noqa: E402
from workbench._demo import held_out_slides  # noqa: E402
from workbench.io import atomic_write_text  # noqa: E402

OUT = Path("docs/images")


def save(fig, name: str, dpi: int = 80) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    im = Image.open(buf).convert("RGB")
    im.quantize(colors=192, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        OUT / name, optimize=True
    )


README = Path("README.md")


def run_sentences(run: Path) -> dict[str, str]:
    """The README sentences that quote a demo run's figures, by marker name."""
    evaluation = json.loads((run / "evaluation.json").read_text())
    sew = next(iter(evaluation["models"].values()))
    hits = sum(s["focus_in_lesion"] for s in evaluation["per_slide"])
    total = sum(s["n_focus"] for s in evaluation["per_slide"])
    refine = json.loads((run / "refine.json").read_text())
    ious = refine["iou_per_click"]  # [0]: the start outline, [i]: after click i
    return {
        "explain": (
            f"On the {evaluation['n_test']} held-out slides of the default run: AUC "
            f"{sew['auc']:.2f}, accuracy {sew['accuracy']:.2f}, and {hits} of {total} focus "
            f"regions ({hits / total:.2f}) centred in a true lesion."
        ),
        "refine": (
            f"IoU with the true lesion {ious[0]:.2f} → {ious[1]:.2f} after one click, "
            f"{ious[-1]:.2f} after {len(ious) - 1}"
        ),
    }


def rewrite_readme(text: str, sentences: dict[str, str]) -> str:
    """``text`` with every ``<!-- run:NAME -->…<!-- /run:NAME -->`` block holding its sentence."""
    for name, sentence in sentences.items():
        pattern = re.compile(rf"(<!-- run:{name} -->).*?(<!-- /run:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- run:{name} --> block")
        text = pattern.sub(lambda m, s=sentence: m.group(1) + s + m.group(2), text)
    return text


def main(run: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    evaluation = json.loads((run / "evaluation.json").read_text())
    high = [s for s in evaluation["per_slide"] if s["grade"] == 3]
    slide = (high or evaluation["per_slide"])[0]["slide"]  # a slide id
    assert slide in held_out_slides(run)
    a = ad.read_h5ad(run / "slides" / f"{slide}.h5ad")
    fig, ax = plt.subplots(figsize=(5, 4))
    pl.slide_overlay(a, ax=ax)
    save(fig, "demo_overlay.png")
    save(pl.focus_gallery(a), "demo_gallery.png")
    refine = json.loads((run / "refine.json").read_text())
    shutil.copy(run / refine["figure"], OUT / "demo_refine.png")
    cohort = ad.read_h5ad(run / "discovery.h5ad")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    pl.kaplan_meier(cohort, ax=ax)
    save(fig, "demo_km.png")
    atomic_write_text(README, rewrite_readme(README.read_text(), run_sentences(run)))
    print("figures written to", OUT, "and the run's sentences to", README)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/demo"))
