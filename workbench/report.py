"""A self-contained HTML report of a run folder (every figure embedded, no external files).

The report reads what the steps of a run wrote and never recomputes results; a section whose
inputs are missing says so instead of failing. Inputs, all relative to the run folder:

==========================  =========================================================
``run.json``                steps, their timings and the run's configuration
``summary.json``            the cohort: patients, grades, events, slide metadata
``montage.png``             thumbnails of the cohort
``config.json``             the model checkpoint's training record (``SlideTrainer.save``):
                            history (loss per epoch), how the final model was fit, its
                            temperature, cross-validation figures, the held-out slides (the run folder itself
                            or its ``model/`` folder; a ``training.json`` of an older run
                            is read when no checkpoint holds a record)
``oof_predictions.csv``     out-of-fold predictions beside the checkpoint (``--folds``); a
                            survival model's (``patient, fold, repeat, time, event, risk``
                            and, when recorded, ``train_cut``) give the risk groups
``evaluation.json``         held-out slide-level metrics of each model
``slides/*.h5ad``           per-slide explanations (``workbench.tl.extract``)
``refine.json``             click-refinement record (IoU per click, the GeoJSON written)
``discovery.h5ad``          cohort AnnData with the survival screen and the phenotype
                            exemplars (``workbench.tl.discover``)
``cohort/cohort.json``      the synthetic cohort's parameters (its time unit)
==========================  =========================================================

A section that a run lacks names the command that would fill it, with the run's own paths.

A run whose model learnt survival (``workbench train --survival TIME,EVENT``) gets two
sections in place of "Explanations": **Risk groups**, Kaplan–Meier curves of the predicted
risk groups (numbers at risk below) on the most honest patients the run has — out-of-fold,
else held-out test patients (times from ``discovery.h5ad``), else validation patients; cut
at the median risk of training patients only; in-sample curves only when nothing else exists,
titled and described as such — and **Prognostic focus**, the diverging risk maps and magnified
focus regions of a few slides (held out first) with each region's risk contribution, and the
region features that follow the risk contribution over every explained slide.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from workbench.io import atomic_write_text, clean_partial, list_results

logger = logging.getLogger(__name__)

#: Column of an out-of-fold table with the median risk each fold model gave its own training
#: patients (the honest cut-point of that fold's risk groups), when the trainer records it.
TRAIN_CUT = "train_cut"

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0;
       color: #1d2330; background: #f6f7f9; }
header { background: #3b2a55; color: white; padding: 1.2em 2em; }
header h1 { margin: 0; font-size: 1.6em; }
header p { margin: .3em 0 0; opacity: .85; }
nav { padding: .6em 2em; background: #e9e4f0; position: sticky; top: 0; }
nav a { margin-right: 1.2em; color: #3b2a55; text-decoration: none; font-weight: 600; }
main { padding: 0 2em 3em; max-width: 1200px; }
section { background: white; margin: 1.2em 0; padding: 1em 1.5em; border-radius: 8px;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h2 { color: #3b2a55; border-bottom: 2px solid #e9e4f0; padding-bottom: .3em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border-bottom: 1px solid #e3e3e8; padding: .3em .8em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f1eef6; }
tr.called td { background: #fff3d6; font-weight: 600; }
img { max-width: 100%; height: auto; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; }
.figs figure { margin: 0; }
figcaption { font-size: .85em; color: #555; }
.missing { color: #8a6d3b; background: #fcf8e3; padding: .5em .8em; border-radius: 4px; }
.note { color: #555; font-size: .9em; }
.metric { display: inline-block; margin-right: 2em; }
.metric b { font-size: 1.5em; color: #3b2a55; display: block; }
.marker-table td:last-child, .marker-table th:last-child { text-align: left; max-width: 30em;
       font-size: .85em; color: #333; font-weight: normal; }
#survival .figs figure { max-width: 540px; }
code { background: #f1eef6; padding: 0 .25em; border-radius: 3px; }
"""


def _fig_to_img(fig, *, alt: str, width: int | None = None) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{w}>'


def _file_to_img(path: Path, *, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _missing(what: str, how: str, command: str = "") -> str:
    """A section the run lacks: what is missing, which file would hold it, the command."""
    cmd = f" To fill it: <code>{html.escape(command)}</code>" if command else ""
    return f'<p class="missing">No {html.escape(what)} in this run ({html.escape(how)}).{cmd}</p>'


def _commands(root: Path) -> dict[str, str]:
    """The command that fills each section, with this run's folder in it."""
    run = str(root)
    return {
        "train": f"workbench train SLIDES --clinical clinical.csv --label LABEL "
        f"--validation 0.2 --out {run}/model",
        "extract": f"workbench extract SLIDES --model {run}/model --out {run}/slides",
        "discover": f"workbench discover {run}/slides clinical.csv --out {run}",
        "train_survival": f"workbench train SLIDES --clinical clinical.csv --survival TIME,EVENT "
        f"--folds 5 --out {run}/model",
        "demo": f"workbench demo --out {run}",
    }


def _unreadable(path: Path, exc: Exception) -> str:
    logger.warning("report: cannot read %s (%s)", path, exc)
    return (
        f'<p class="missing">{html.escape(path.name)} cannot be read ({html.escape(type(exc).__name__)}'
        f": {html.escape(str(exc)[:200])}); it is damaged: delete it and rerun the step that "
        "writes it.</p>"
    )


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        if not np.isfinite(v):
            return "–"
        if v != 0 and (abs(v) < 10 ** (-digits) or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(rows: list[dict], columns: list[str], *, classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------- sections
def _section_cohort(root: Path, unit: str | None, cohort=None) -> str:
    summary = _read_json(root / "summary.json")
    if summary is None:
        return _cohort_from_results(root, unit, cohort)
    grades = ", ".join(f"grade {k}: {v}" for k, v in summary.get("grades", {}).items())
    out = [
        f'<p><span class="metric"><b>{summary["n_patients"]}</b>patients</span>'
        f'<span class="metric"><b>{summary.get("events", "–")}</b>deaths observed</span>'
        f'<span class="metric"><b>{_fmt(summary.get("median_follow_up"), 1)}</b>'
        f"median follow-up ({html.escape(unit or 'time units')})</span></p>",
        f"<p>{html.escape(grades)}</p>",
    ]
    slides = summary.get("slides", [])
    if slides:
        s0 = slides[0]
        out.append(
            f'<p class="note">Slides: {len(slides)} pyramidal TIFFs, e.g. '
            f"{s0['dimensions'][0]}×{s0['dimensions'][1]} px, {s0['levels']} levels, "
            f"{s0['mpp']} µm/px, vendor {html.escape(str(s0['vendor']))}.</p>"
        )
    if (root / "montage.png").exists():
        out.append(_file_to_img(root / "montage.png", alt="cohort montage"))
    return "\n".join(out)


def _cohort_from_results(root: Path, unit: str | None, cohort) -> str:
    """A user's run has no ``summary.json`` (the demo writes it): describe the cohort from
    the explained slides and the discovery's patients instead."""
    files = list_results(root / "slides", "*.h5ad")
    out = []
    if cohort is not None:
        params = dict(cohort.uns.get("survival_screen_params", {}))
        dkey, ekey = params.get("duration_key", "time"), params.get("event_key", "event")
        metrics = [f'<span class="metric"><b>{cohort.n_obs}</b>patients</span>']
        if ekey in cohort.obs:
            events = int(np.nansum(cohort.obs[ekey].to_numpy(dtype=float)))
            metrics.append(f'<span class="metric"><b>{events}</b>events observed</span>')
        if dkey in cohort.obs:
            median = float(np.nanmedian(cohort.obs[dkey].to_numpy(dtype=float)))
            metrics.append(
                f'<span class="metric"><b>{_fmt(median, 1)}</b>median follow-up '
                f"({html.escape(unit or 'time units')})</span>"
            )
        out.append(f"<p>{''.join(metrics)}</p>")
    if files:
        out.append(
            f"<p>{len(files)} slide{'s' if len(files) != 1 else ''} explained in "
            f"<code>{html.escape(str(root / 'slides'))}</code>.</p>"
        )
    if not out:
        cmd = _commands(root)
        return _missing(
            "cohort",
            "no summary.json (written by `workbench demo`), no slides/*.h5ad and no discovery.h5ad",
            cmd["extract"],
        )
    return "\n".join(out)


def _section_model(root: Path) -> str:
    import matplotlib.pyplot as plt

    out = []
    evaluation = _read_json(root / "evaluation.json")
    where, training = _training_record(root)
    if evaluation is None and not training:
        out.append(
            _missing(
                "model evaluation",
                "no evaluation.json (written by `workbench demo`) and no training record",
                _commands(root)["train"] + "  (or --folds 5 for cross-validation)",
            )
        )
    elif evaluation is None and not (
        training.get("validation") or training.get("cv") or training.get("cv_summary")
    ):
        survival_model = (training.get("survival") or {}).get("target") == "survival"
        out.append(
            _missing(
                "held-out evaluation",
                "the model was trained without validation patients or cross-validation",
                _commands(root)["train_survival"]
                if survival_model
                else _commands(root)["train"] + "  (or --folds 5)",
            )
        )
    if evaluation is not None:
        models = evaluation.get("models", {})
        rows = [{"model": name, **m} for name, m in models.items()]
        cols = ["model", "auc", "accuracy", "n_test", "seconds_per_slide"]
        out.append(
            f"<p>Task: {html.escape(evaluation.get('task', ''))}. Held-out slides "
            f"(not used for training): {evaluation.get('n_test', '–')}.</p>"
        )
        out.append(_table(rows, [c for c in cols if any(c in r for r in rows)]))
        if "focus_hit_rate" in evaluation:
            out.append(
                f"<p>Focus hit rate (share of top-K focus regions centred in a true lesion): "
                f"<b>{_fmt(evaluation['focus_hit_rate'])}</b>.</p>"
            )
    where, training = _training_record(root)
    survival = training.get("survival") or {}
    if survival.get("target") == "survival":  # a model trained on survival (Cox)
        held = training.get("held_out_slides") or []
        out.append(
            "<p>Survival learnt (Cox partial likelihood): time "
            f"<b>{html.escape(str(survival.get('time_key')))}</b>, event "
            f"<b>{html.escape(str(survival.get('event_key')))}</b> (ties: "
            f"{html.escape(str(survival.get('ties')))}); the slide risk is a log relative "
            f"hazard, higher = shorter survival. {len(training.get('train_slides', []))} "
            "training slides"
            + (f" ({len(held)} of the cohort left out of training)" if held else "")
            + f", {html.escape(str(training.get('kind', 'sew')))} model.</p>"
        )
    elif training.get("label"):
        held = training.get("held_out_slides") or []
        classes = ", ".join(str(c) for c in training.get("classes", []))
        out.append(
            f"<p>Label learnt: <b>{html.escape(str(training['label']))}</b> (classes: "
            f"{html.escape(classes)}), {len(training.get('train_slides', []))} training slides"
            + (f" ({len(held)} of the cohort left out of training)" if held else "")
            + f", {html.escape(str(training.get('kind', 'sew')))} model.</p>"
        )
    final = training.get("final_model")
    if final:
        out.append(
            f"<p>The final model was fit on <b>{html.escape(str(final.get('fit_on')))}</b> "
            f"({_fmt(final.get('slides'))} slides of {_fmt(final.get('patients'))} patients, "
            f"{_fmt(final.get('epochs'))} epochs"
            f"{', early stopping on the validation patients' if final.get('early_stopping') else ''}"
            ").</p>"
        )
    validation = training.get("validation")
    if validation and "c_index" in validation:  # a survival model's validation patients
        out.append(
            f"<p>Validation ({_fmt(validation.get('n_patients'))} held-out patients, "
            f"{_fmt(validation.get('n_events'))} events, early stopping; best epoch "
            f"{_fmt(validation.get('best_epoch'))}): Harrell's C "
            f"<b>{_fmt(validation.get('c_index'))}</b> (slightly optimistic: training stopped "
            "on it).</p>"
        )
    elif validation:
        out.append(
            f"<p>Validation ({len(validation.get('slides', []))} held-out slides, early "
            f"stopping; best epoch {_fmt(validation.get('best_epoch'))}): AUC "
            f"{_fmt(validation.get('auc'))}, accuracy {_fmt(validation.get('accuracy'))}, "
            f"balanced accuracy {_fmt(validation.get('balanced_accuracy'))}.</p>"
        )
    calibration = training.get("calibration")
    unfitted = {
        "separable": "every one of them was classified correctly, so no temperature could be "
        "fitted",
        "too_few": "too few of them (or a single class) to fit one",
    }
    if calibration and calibration.get("status") in unfitted:
        out.append(
            f"<p>Probabilities are <b>not calibrated</b>: the temperature stays 1 on the "
            f"{_fmt(calibration.get('n'))} {html.escape(str(calibration.get('fitted_on')))} "
            f"({unfitted[calibration['status']]}). The probabilities below are the model's own "
            "and may be overconfident on new slides; more held-out patients, or "
            "cross-validation (<code>--folds</code>), give a temperature.</p>"
        )
    elif calibration:
        out.append(
            f"<p>Probabilities are calibrated by temperature scaling: T = "
            f"<b>{_fmt(calibration.get('temperature'))}</b> ({html.escape(str(calibration.get('status')))}"
            f", fitted on {_fmt(calibration.get('n'))} {html.escape(str(calibration.get('fitted_on')))}"
            f"; ECE there {_fmt(calibration.get('ece_before'))} → "
            f"{_fmt(calibration.get('ece_after'))}). Every probability below is calibrated.</p>"
        )
    summary = training.get("cv_summary")
    if summary and "harrell_c" in summary:  # survival cross-validation
        ci = summary.get("harrell_c_ci")
        interval = f" (95% CI {_fmt(ci[0])}–{_fmt(ci[1])}, patients resampled)" if ci else ""
        out.append(
            f"<p>Cross-validation by patient, {_fmt(summary.get('folds'))} folds × "
            f"{_fmt(summary.get('repeats'))} repeat(s): pooled out-of-fold Harrell's C "
            f"<b>{_fmt(summary.get('harrell_c'))}</b>{interval}; mean of the folds' Harrell's C "
            f"{_fmt(summary.get('harrell_c_mean_of_folds'))}, Uno's C "
            f"{_fmt(summary.get('uno_c_mean_of_folds'))} (above 0.5: higher risk, shorter "
            "survival). Each fold stopped early on an inner split of its own training "
            "patients.</p>"
        )
    elif summary:
        ci = summary.get("auc_ci")
        interval = f" (95% CI {_fmt(ci[0])}–{_fmt(ci[1])}, patients resampled)" if ci else ""
        out.append(
            f"<p>Cross-validation by patient, {_fmt(summary.get('folds'))} folds × "
            f"{_fmt(summary.get('repeats'))} repeat(s), {_fmt(summary.get('n_slides'))} slides of "
            f"{_fmt(summary.get('n_patients'))} patients: pooled out-of-fold AUC "
            f"<b>{_fmt(summary.get('auc'))}</b>{interval}, balanced accuracy "
            f"{_fmt(summary.get('balanced_accuracy'))}, ECE {_fmt(summary.get('ece'))} (before "
            f"calibration {_fmt(summary.get('ece_raw'))}). Each fold stopped early on an inner "
            "split of its own training patients.</p>"
        )
    if training.get("cv"):
        cols = ["repeat", "fold", "n_train", "n_test", "n_test_patients", "epochs",
                "temperature", "auc", "accuracy", "balanced_accuracy", "n_test_events",
                "harrell_c", "uno_c", "tau"]  # fmt: skip
        rows = training["cv"]
        intro = "Per fold" if summary else "Cross-validation by patient"
        out.append(
            f"<p>{intro}:</p>" + _table(rows, [c for c in cols if any(c in r for r in rows)])
        )
    reliability = _reliability_figure(where, training)
    if reliability:
        out.append(reliability)
    history = training.get("history")
    if history:
        fig, ax = plt.subplots(figsize=(6, 3))
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
        keys = list(dict.fromkeys(k for h in history for k in h))
        terms = [k for k in keys if k not in ("epoch", "accuracy") and not k.startswith("val_")]
        for key in terms:
            ax.plot(epochs, [h.get(key, np.nan) for h in history], label=key)
        if "val_loss" in keys:
            ax.plot(epochs, [h.get("val_loss", np.nan) for h in history], "k:", label="val_loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (total and terms)")
        ax.legend(fontsize=7, loc="upper left")
        if "accuracy" in keys:
            acc = ax.twinx()
            acc.plot(epochs, [h.get("accuracy", np.nan) for h in history], "k--", lw=1,
                     label="training accuracy")  # fmt: skip
            acc.set_ylim(0, 1.05)
            acc.set_ylabel("accuracy")
            acc.legend(fontsize=7, loc="upper right")
        ax.set_title("training history")
        out.append(_fig_to_img(fig, alt="training history"))
    return "\n".join(out)


def _training_record(root: Path) -> tuple[Path, dict]:
    """The training record and the folder it came from: the checkpoint in the run folder or
    its ``model/`` folder (``workbench train --out RUN/model``, the demo), else a
    ``training.json`` an older version wrote there."""
    from workbench._steps import LEGACY_RECORD, training_record

    folders = (root, root / "model")
    for folder in folders:  # a checkpoint's record first: a stale training.json never wins
        if (folder / "config.json").is_file():
            record = training_record(folder)
            if record is not None:
                return folder, record
    for folder in folders:
        if (folder / LEGACY_RECORD).is_file():
            return folder, training_record(folder) or {}
    return root, {}


def _reliability_figure(where: Path, training: dict) -> str:
    """Reliability diagram of held-out predictions: the out-of-fold ones when there are,
    else the validation patients' (on which the temperature was fitted, so optimistic)."""
    from workbench import pl

    classes = [str(c) for c in training.get("classes", [])]
    y = p = raw = None
    caption = ""
    oof_path = where / "oof_predictions.csv"
    if training.get("oof_predictions") and oof_path.exists() and len(classes) >= 2:
        import pandas as pd

        try:
            oof = pd.read_csv(oof_path, dtype={"label": str})
        except (OSError, ValueError) as exc:
            return _unreadable(oof_path, exc)
        lookup = {c: i for i, c in enumerate(classes)}
        y = np.asarray([lookup.get(str(v), -1) for v in oof["label"]])
        if len(classes) == 2:
            p, raw = oof["probability"].to_numpy(), oof["raw_probability"].to_numpy()
        elif all(f"prob_{c}" in oof for c in classes):
            p = oof[[f"prob_{c}" for c in classes]].to_numpy()
        caption = "out-of-fold predictions of the cross-validation (every slide held out)"
    elif (training.get("validation") or {}).get("predictions") and len(classes) == 2:
        preds = training["validation"]["predictions"]
        y = np.asarray([int(r["y"]) for r in preds])
        p = np.asarray([r["probability"] for r in preds], dtype=float)
        raw = np.asarray([r["raw_probability"] for r in preds], dtype=float)
        caption = "validation patients (the temperature was fitted on them, so this is optimistic)"
    if p is None or y is None or (y < 0).any() or len(y) == 0:
        return ""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    pl.reliability(y, p, raw=raw, ax=ax)
    return (
        f"<figure>{_fig_to_img(fig, alt='reliability diagram')}<figcaption>Reliability of the "
        f"{html.escape(caption)}.</figcaption></figure>"
    )


def _section_explain(root: Path, n_examples: int) -> str:
    import anndata as ad
    import matplotlib.pyplot as plt

    from workbench import pl

    # list_results: temporary files of an interrupted run (in .partial/, hidden) never show
    files = list_results(root / "slides", "*.h5ad")
    if not files:
        return _missing("slide explanations", "no slides/*.h5ad", _commands(root)["extract"])
    _, training = _training_record(root)
    chosen, which = example_slides(files, training, n_examples)
    out = [
        f"<p>{len(files)} slide{'s' if len(files) != 1 else ''} explained. For each example: "
        "the thumbnail with the focus heat map, the lesion outlines found at high "
        "magnification and the top-K focus regions (boxes); then the magnified focus regions "
        "with their lesion maps.</p>",
        f'<p class="note">{which}</p>',
    ]
    for f in chosen:
        try:
            a = ad.read_h5ad(f)
        except (OSError, KeyError, ValueError) as exc:
            out.append(_unreadable(f, exc))
            continue
        explain = a.uns.get("explain", {})
        probs = explain.get("slide_probabilities", explain.get("probabilities"))
        label = ""
        what = "slide-level probabilities"
        if explain.get("target") == "survival":  # a Cox model: a risk, not class probabilities
            what = "slide risk"
            label = f"{float(explain.get('risk', np.nan)):.2f} (log relative hazard; higher = shorter survival)"
            probs = None
        if probs is not None:
            probs = np.asarray(probs, dtype=float).ravel()
            names = list(explain.get("class_names", [f"class {i}" for i in range(len(probs))]))
            label = ", ".join(f"{n}: {p:.2f}" for n, p in zip(names, probs, strict=False))
            temperature = float(explain.get("temperature", 1.0))
            raw = explain.get("raw_probabilities")
            if raw is not None and temperature != 1.0:
                raw = np.asarray(raw, dtype=float).ravel()
                before = ", ".join(f"{p:.2f}" for p in raw)
                label += f" (calibrated, T = {temperature:.2f}; before: {before})"
            if explain.get("label"):
                label = f"{explain['label']} — {label}"
        sid = str(a.uns.get("slide_id", f.name.removesuffix(".h5ad")))
        if explain.get("kind") not in (None, "sew"):  # other kinds: what the heat map shows
            label += f" — {explain['kind']} model; heat map: {explain.get('region_score', '')}"
            if not np.isfinite(np.asarray(explain["focus"]["lesion_prob"], float)).any():
                label += "; no detail branch, so no lesion maps"
        fig, ax = plt.subplots(figsize=(5, 4))
        pl.slide_overlay(a, ax=ax)
        ax.set_title(sid, fontsize=9)
        overlay = _fig_to_img(fig, alt=f"overlay {sid}")
        gallery = _fig_to_img(pl.focus_gallery(a), alt=f"focus gallery {sid}")
        flag, grey = _applicability_flag(explain)
        out.append(
            f'<h3>{html.escape(sid)}</h3>{flag}<p class="note"{grey}>{what}: '
            f'{html.escape(label)}</p><div class="figs"><figure>{overlay}</figure>'
            f"<figure>{gallery}</figure></div>"
        )
    return "\n".join(out)


def _slide_of(path: Path) -> str:
    return path.name.removesuffix(".h5ad")


def example_slides(files: list[Path], training: dict, n_examples: int) -> tuple[list[Path], str]:
    """The slides to show as examples, held-out ones first, and a sentence saying which.

    Parameters
    ----------
    files
        The run's ``slides/*.h5ad`` files (slide id = file name without ``.h5ad``).
    training
        The training record (``_training_record``): ``test_slides`` or ``held_out_slides``
        (held out from training, validation and calibration), ``train_slides``,
        ``validation.slides``.
    n_examples
        How many to show.

    Returns
    -------
    tuple
        The chosen files and an HTML sentence naming what kind of slides they are.
    """
    by_id = {_slide_of(f): f for f in files}
    test = [str(s) for s in training.get("test_slides") or training.get("held_out_slides") or []]
    train = {str(s) for s in training.get("train_slides") or []}
    val = [str(s) for s in (training.get("validation") or {}).get("slides") or []]
    held = [by_id[s] for s in test if s in by_id]
    if held:
        return held[:n_examples], (
            f"The examples are held-out test slides ({len(held)} in this run): the model was "
            "neither trained, stopped nor calibrated on them."
        )
    if train:
        unseen = [f for sid, f in by_id.items() if sid not in train and sid not in set(val)]
        if unseen:
            return unseen[:n_examples], (
                "The examples are slides the model never saw while it was trained "
                f"({len(unseen)} in this run)."
            )
        valid = [by_id[s] for s in val if s in by_id]
        if valid:
            return valid[:n_examples], (
                "The examples are validation slides: held out from fitting the weights, but "
                "used to choose when training stopped, so slightly optimistic."
            )
        return files[:n_examples], (
            "<b>The examples are training slides</b>: the model learnt from them, so they "
            "look better than new slides would. Hold slides out with <code>workbench train "
            "--validation 0.2</code>, or explain new slides with <code>workbench extract</code>."
        )
    return files[:n_examples], (
        "The run records no held-out slides (no <code>test_slides</code> in the training "
        "record), so these examples may be slides the model was trained on."
    )


def _applicability_flag(explain: dict) -> tuple[str, str]:
    """A flagged slide's note (why the model may not apply to it) and the style that greys
    its grade, from ``uns["explain"]["applicability"]``; ``("", "")`` when it is applicable
    or was explained before verdicts existed."""
    app = explain.get("applicability")
    if not isinstance(app, dict) or bool(app.get("applicable", True)):
        return "", ""
    reasons = [str(r) for r in np.atleast_1d(app.get("reasons", [])) if str(r)]
    graded = bool(app.get("graded", True))
    head = "flagged: the model may not apply to this slide" + ("" if graded else " (not graded)")
    note = "; ".join(reasons) or "no reason recorded"
    flag = (
        f'<p class="flagged" style="color:#a33"><b>&#9888; {html.escape(head)}</b>: '
        f"{html.escape(note)}</p>"
    )
    return flag, ' style="color:#999"'


def _section_refine(root: Path) -> str:
    import matplotlib.pyplot as plt

    record = _read_json(root / "refine.json")
    if record is None:
        return (
            '<p class="missing">No refined regions in this run (no refine.json). Refinement '
            "is interactive: open a slide in JupyterLab with <code>workbench.interactive</code> "
            "(notebook 03), click to correct a lesion and save it as GeoJSON "
            "(<code>workbench demo</code> shows a simulated refinement in its own report).</p>"
        )
    out = [
        f"<p>Slide <b>{html.escape(str(record.get('slide_id')))}</b>: the lesion in a focus "
        f"region was refined by {record.get('n_clicks', '–')} simulated clicks "
        f"({html.escape(str(record.get('method', 'cgam')))}), the click placed at the error "
        "pixel farthest from the error boundary each time. The refined outline was saved as "
        f"QuPath GeoJSON (<code>{html.escape(str(record.get('geojson', '')))}</code>) and written "
        "back into the slide's AnnData for marker discovery.</p>"
    ]
    ious = record.get("iou_per_click")
    if ious:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(range(len(ious)), ious, marker="o")
        ax.set_xlabel("clicks")
        ax.set_ylabel("IoU with the true lesion")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        out.append(_fig_to_img(fig, alt="IoU per click"))
        out.append(
            f"<p>IoU before clicks {_fmt(ious[0])}, after {len(ious) - 1} clicks "
            f"{_fmt(ious[-1])}.</p>"
        )
    if record.get("figure") and (root / record["figure"]).exists():
        out.append(_file_to_img(root / record["figure"], alt="refined region"))
    return "\n".join(out)


def _load_discovery(root: Path):
    """``(cohort AnnData or None, HTML to show instead or "")`` for ``discovery.h5ad``."""
    import anndata as ad

    path = root / "discovery.h5ad"
    if not path.exists():
        return None, _missing("marker discovery", "no discovery.h5ad", _commands(root)["discover"])
    try:
        return ad.read_h5ad(path), ""
    except (OSError, KeyError, ValueError) as exc:
        return None, _unreadable(path, exc)


def _section_phenotypes(root: Path, cohort, problem: str) -> str:
    from workbench import pl
    from workbench._constants import PHENOTYPE_EXEMPLARS

    if cohort is None:
        return problem
    stored = cohort.uns.get(PHENOTYPE_EXEMPLARS)
    if not stored or not stored.get("phenotypes"):
        return _missing(
            "phenotype gallery",
            "discovery.h5ad was written before phenotype exemplars were stored",
            _commands(root)["discover"],
        )
    table = stored["phenotypes"]
    rows = [
        {"phenotype": name, "regions": int(e.get("n_regions", 0)),
         "slides": int(e.get("n_slides", 0)), "crops shown": len(np.asarray(e["crops"]))}
        for name, e in table.items()
    ]  # fmt: skip
    params = stored.get("params", {})
    out = [
        "<p>A phenotype is a kind of tissue region (its colour, texture and nuclei, as the "
        "region features describe them) that is more common in one outcome group than the "
        "other, found by <code>tl.markers</code> on the discovery patients. Each row shows "
        "the regions closest to the phenotype's average, at most one per slide, as "
        f"{_fmt(params.get('size_um'), 0)} µm squares centred on the region. Regions that fit "
        "no phenotype are “other”.</p>",
        _table(rows, ["phenotype", "regions", "slides", "crops shown"]),
    ]
    try:
        fig = pl.phenotype_gallery(cohort)
        out.append(
            f'<figure class="phenotype-gallery" data-rows="{len(table)}">'
            f"{_fig_to_img(fig, alt='phenotype gallery')}</figure>"
        )
    except (KeyError, ValueError) as exc:
        out.append(f'<p class="note">gallery unavailable: {html.escape(str(exc))}</p>')
    return "\n".join(out)


def _median_split(cohort, marker: str):
    """Above-median indicator of ``marker`` over the tested patients (as pl.kaplan_meier)."""
    import pandas as pd

    params = dict(cohort.uns.get("survival_screen_params", {}))
    tested = params.get("tested_patients")
    sub = cohort[cohort.obs_names.isin(tested)] if tested is not None else cohort
    x = pd.Series(np.asarray(sub[:, marker].X, dtype=float).ravel(), index=sub.obs_names)
    x = x[np.isfinite(x)]
    return x > x.median()


def _km_markers(
    cohort, candidates: list[str], limit: int = 2
) -> tuple[list[str], list[tuple[str, str]]]:
    """The strongest candidate, then others only when they split the patients differently
    (a mirror image of a drawn split, e.g. a share and its complement, is left out)."""
    chosen: list[str] = []
    skipped: list[tuple[str, str]] = []
    splits = {}
    for marker in candidates:
        if len(chosen) >= limit:
            break
        split = _median_split(cohort, marker)
        same = False
        for other in chosen:
            a, b = splits[other].align(split, join="inner")
            if len(a) and abs(float((a == b).mean()) - 0.5) >= 0.3:
                same = True
                skipped.append((marker, other))
                break
        if not same:
            chosen.append(marker)
            splits[marker] = split
    return chosen, skipped


_CV_MODELS = {
    "clinical": "the clinical covariates alone",
    "marker": "the marker alone",
    "clinical + marker": "the clinical covariates and the marker",
}


def _concordance(cohort) -> str:
    import pandas as pd

    cv = cohort.uns.get("survival_cv")
    if cv is None:
        return ""
    cvdf = cv if isinstance(cv, pd.DataFrame) else pd.DataFrame(cv)
    if not len(cvdf):
        return ""
    params = dict(cohort.uns.get("survival_screen_params", {}))
    raw = params.get("covariates")
    covs = [] if raw is None else [str(c) for c in np.asarray(raw, dtype=object).ravel()]
    rows = [
        {"Cox model": str(r.get("model")), "marker": str(r.get("marker") or ""),
         "C-index": r.get("c_index"), "± SD over folds": r.get("c_index_sd")}
        for r in cvdf.head(9).to_dict("records")
    ]  # fmt: skip
    who = ", ".join(covs) if covs else "none recorded"
    return (
        "<h3>Does a marker add to the clinical variables?</h3><p>Each row is a Cox model "
        "scored by cross-validated concordance (C-index: the share of patient pairs whose "
        "survival times the model orders correctly; 0.5 is chance, 1 is perfect) on the tested "
        f"patients: “clinical” uses the clinical covariates alone ({html.escape(who)}), "
        "“marker” the marker alone, “clinical + marker” both. Every model is fitted on some "
        "folds and scored on the fold it did not see, so adding a marker adds parameters that "
        "can fit noise in a small cohort: “clinical + marker” can score <i>below</i> clinical "
        "alone, and a marker adds information only where it scores clearly above clinical "
        "alone (by more than the spread over folds).</p>"
        + _table(rows, ["Cox model", "marker", "C-index", "± SD over folds"])
    )


def _section_markers(
    root: Path, cohort, problem: str, unit: str | None, fdr: float = 0.05
) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    from workbench import pl
    from workbench.tl import describe_marker

    if cohort is None:
        return problem, problem
    screen = cohort.uns.get("survival_screen")
    if screen is None:
        missing = _missing(
            "survival screen", "discovery.h5ad has no uns['survival_screen']",
            _commands(root)["discover"],
        )  # fmt: skip
        return missing, missing
    import pandas as pd

    table = screen if isinstance(screen, pd.DataFrame) else pd.DataFrame(screen)
    split = cohort.obs.get("discovery_split")
    n_disc = int((split == "discovery").sum()) if split is not None else None
    n_val = int((split == "validation").sum()) if split is not None else None
    rows = [
        {"marker": idx, **r, "what it measures": describe_marker(str(idx))}
        for idx, r in table.head(15).to_dict("index").items()
    ]
    cols = ["marker", "hr", "hr_lower", "hr_upper", "p_cox", "q_cox", "p_logrank", "q_logrank"]
    classes = ["called" if bool(r.get("called")) else "" for r in rows]
    n_called = int(table["called"].fillna(False).astype(bool).sum()) if "called" in table else 0
    info = cohort.uns.get("discovery", {})
    if info.get("mode") == "crossfit":
        who = (
            f"Phenotypes were cross-fitted in <b>{info.get('folds')}</b> folds: each of the "
            f"<b>{n_val}</b> patients was tested with phenotypes fitted on the other folds."
        )
    else:
        who = (
            f"Phenotypes and markers were chosen on <b>{n_disc}</b> discovery patients and "
            f"tested on <b>{n_val}</b> validation patients who took no part in choosing them."
        )
    params = cohort.uns.get("survival_screen_params", {})
    agg = html.escape(str(cohort.uns.get("cohort", {}).get("aggregate", "mean")))
    if params.get("stratified_by_site"):
        who += f" Cox models are stratified by site ({html.escape(str(params['site_key']))})."
        cols += ["hr_strat", "q_strat", "site_eta2", "mostly_site"]
    markers_html = [
        f"<p>{who} Univariable Cox (standardised marker) and log-rank (median split) per "
        f"marker, Benjamini–Hochberg across {len(table)} markers: <b>{n_called}</b> called at "
        f"q &lt; {fdr}.</p>",
        '<p class="note">Columns: <b>hr</b> hazard ratio per standard deviation of the marker '
        "(above 1: higher values, shorter survival) with its 95% interval "
        "(<b>hr_lower</b>–<b>hr_upper</b>); <b>p_cox</b>/<b>q_cox</b> the Cox p-value and its "
        "false-discovery-rate q-value; <b>p_logrank</b>/<b>q_logrank</b> the same for the "
        f"median split drawn below. Each marker is one number per patient (the {agg} over the "
        "patient's slides); <b>what it measures</b> says which. Phenotype numbers refer to "
        "the gallery above.</p>",
    ]
    fams = cohort.uns.get("survival_families")
    if fams is not None and len(fams):
        fams = fams if isinstance(fams, pd.DataFrame) else pd.DataFrame(fams)
        n_fam = int(fams["called"].astype(bool).sum())
        markers_html.append(
            f"<p>Markers whose values move together (|Spearman ρ| ≥ "
            f"{cohort.uns['marker_families']['params']['threshold']}) form <b>{len(fams)}</b> "
            f"families; <b>{n_fam}</b> called (Simes within a family, Benjamini–Hochberg "
            "across families). A family marked “mostly site” is led by a marker whose values "
            "differ mainly between sites.</p>"
        )
        frows = [{"family": i, **r} for i, r in fams.head(10).to_dict("index").items()]
        fcols = ["family", "n_members", "best", "hr", "p_family", "q_family"]
        fcols += ["mostly_site"] if "mostly_site" in fams else []
        fclasses = ["called" if bool(r.get("called")) else "" for r in frows]
        markers_html.append(_table(frows, fcols, classes=fclasses))
    shown = [c for c in cols if c in table.columns or c == "marker"] + ["what it measures"]
    markers_html.append(f'<div class="marker-table">{_table(rows, shown, classes=classes)}</div>')
    try:
        fig, ax = plt.subplots(figsize=(6, 4))
        pl.forest(cohort, ax=ax)
        markers_html.append(_fig_to_img(fig, alt="forest plot"))
    except (KeyError, ValueError) as exc:
        markers_html.append(f'<p class="note">forest plot unavailable: {html.escape(str(exc))}</p>')
    markers_html.append(_concordance(cohort))
    best = list(fams["best"]) if fams is not None and len(fams) else list(table.index)
    testable = [str(m) for m in best if np.isfinite(table.loc[m, "p_cox"])]
    km_markers, skipped = _km_markers(cohort, testable)
    km_html = []
    for marker in km_markers:
        try:
            fig, ax = plt.subplots(figsize=(5.2, 3.6))
            pl.kaplan_meier(cohort, marker, ax=ax, time_unit=unit)
            km_html.append(
                f"<figure>{_fig_to_img(fig, alt=f'KM {marker}')}<figcaption>"
                f"{html.escape(describe_marker(marker))}</figcaption></figure>"
            )
        except (KeyError, ValueError) as exc:
            km_html.append(f'<p class="note">{html.escape(str(exc))}</p>')
    if not km_html:
        n_tested = len(params.get("tested_patients", []))
        return "\n".join(markers_html), _missing(
            "Kaplan–Meier curves",
            f"no marker could be tested on the {n_tested} tested patients; a survival screen "
            "needs more patients and events, so rerun workbench discover on a larger cohort",
        )
    unit_note = (
        f"Times are in {html.escape(unit)}."
        if unit
        else "The run does not record the time unit; give it with <code>workbench report "
        "--time-unit months</code> (or <code>write_report(..., time_unit=)</code>)."
    )
    intro = (
        "<p>Survival of the tested patients above vs at or below the median of the strongest "
        "candidate marker"
        + (
            ", then of the next candidate that splits the patients differently"
            if len(km_markers) > 1
            else ""
        )
        + f"; the numbers at risk are under each plot. {unit_note}</p>"
    )
    if skipped:
        intro += (
            '<p class="note">Not drawn: '
            + "; ".join(
                f"{html.escape(m)}, whose median split puts the patients in nearly the same "
                f"two groups as {html.escape(o)}'s (or swaps them)"
                for m, o in skipped
            )
            + ".</p>"
        )
    return "\n".join(markers_html), intro + '<div class="figs">' + "".join(km_html) + "</div>"


def _time_unit(root: Path, cohort=None) -> str | None:
    """The follow-up time unit: run.json's configuration, the discovery record, then the
    synthetic cohort's ``cohort.json`` (``hazard_model.time_unit``); ``None`` if unknown."""
    config = (_read_json(root / "run.json") or {}).get("config", {}) or {}
    if config.get("time_unit"):
        return str(config["time_unit"])
    if cohort is not None and cohort.uns.get("discovery", {}).get("time_unit"):
        return str(cohort.uns["discovery"]["time_unit"])
    for folder in (root / "cohort", root):
        meta = _read_json(folder / "cohort.json") or {}
        unit = (meta.get("hazard_model") or {}).get("time_unit")
        if unit:
            return str(unit)
    return None


# ----------------------------------------------------------------- survival model sections
def _is_survival_run(training: dict, files: list[Path]) -> bool:
    """A run whose model learnt survival: its training record says so, or (a run without a
    record) its first explained slide carries a risk instead of class probabilities."""
    if (training.get("survival") or {}).get("target") == "survival":
        return True
    if training.get("label") or not files:
        return False
    import anndata as ad

    try:
        return ad.read_h5ad(files[0]).uns.get("explain", {}).get("target") == "survival"
    except (OSError, KeyError, ValueError):
        return False


def _feature_stats(adata) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """One slide's focused-feature figures: per region feature, the focus regions' mean minus
    the slide's mean in the slide's SDs, and the Spearman correlation of the feature with the
    regions' risk contribution; ``None`` when the slide has too few regions to say."""
    from scipy.stats import spearmanr

    if adata.n_obs < 3 or "focus_score" not in adata.obs or "is_focus" not in adata.obs:
        return None
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    x = np.asarray(x, dtype=float)
    score = adata.obs["focus_score"].to_numpy(dtype=float)
    focus = adata.obs["is_focus"].to_numpy(dtype=bool)
    if not focus.any() or not np.isfinite(score).all() or np.ptp(score) == 0:
        return None
    sd = x.std(axis=0)
    ok = np.flatnonzero(sd > 0)
    diff, rho = np.full(x.shape[1], np.nan), np.full(x.shape[1], np.nan)
    diff[ok] = (x[focus][:, ok].mean(axis=0) - x[:, ok].mean(axis=0)) / sd[ok]
    for j in ok:
        rho[j] = spearmanr(x[:, j], score).statistic
    return [str(v) for v in adata.var_names], diff, rho


def _survival_slides(files: list[Path]) -> tuple[dict[str, Path], dict[str, float], list]:
    """Read every slide a survival model explained once: ``{slide id: file}``, ``{slide id:
    risk}`` (graded slides only) and each slide's focused-feature figures."""
    import anndata as ad

    paths, risks, stats = {}, {}, []
    for f in files:
        try:
            a = ad.read_h5ad(f)
        except (OSError, KeyError, ValueError):
            continue  # the Explanations/prognostic examples say which file is damaged
        ex = a.uns.get("explain", {})
        if ex.get("target") != "survival":
            continue
        sid = _slide_of(f)
        paths[sid] = f
        risk = float(ex.get("risk", np.nan))
        if np.isfinite(risk):
            risks[sid] = risk
        figures = _feature_stats(a)
        if figures is not None:
            stats.append(figures)
    return paths, risks, stats


def _focus_features(stats: list, top: int = 8):
    """The region features that follow the risk contribution most closely, averaged over
    slides (see :func:`_feature_stats`); slides with other region features are left out."""
    import warnings

    import pandas as pd

    if not stats:
        return pd.DataFrame()
    names = stats[0][0]
    same = [(d, r) for n, d, r in stats if n == names]
    diffs, rhos = np.asarray([d for d, _ in same]), np.asarray([r for _, r in same])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature constant on every slide
        table = pd.DataFrame(
            {"focus_vs_other_sd": np.nanmean(diffs, axis=0),
             "rho_risk": np.nanmean(rhos, axis=0),
             "slides": np.isfinite(rhos).sum(axis=0).astype(int),
             "what it measures": [_feature_words(n) for n in names]},
            index=names,
        )  # fmt: skip
    table = table[np.isfinite(table["rho_risk"])]
    order = table["rho_risk"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].head(top)


_FEATURE_WORDS = {
    "h_mean": "haematoxylin (nuclei) stain, mean",
    "h_std": "haematoxylin (nuclei) stain, spread",
    "h_p90": "haematoxylin (nuclei) stain, densest tenth",
    "e_mean": "eosin (cytoplasm, stroma) stain, mean",
    "e_std": "eosin (cytoplasm, stroma) stain, spread",
    "e_p90": "eosin (cytoplasm, stroma) stain, densest tenth",
    "od_mean": "total stain (optical density), mean",
    "lightness_mean": "lightness, mean",
    "lightness_std": "lightness, spread",
    "saturation_mean": "colour saturation, mean",
    "log_area_px": "region size (log of its area)",
    "boundary_fraction": "share of the region's pixels on its outline (thin, ragged regions)",
}


def _feature_words(name: str) -> str:
    """A few plain words on what a region feature (``pp.feature_names``) measures."""
    if name in _FEATURE_WORDS:
        return _FEATURE_WORDS[name]
    stem, _, tail = name.rpartition("_")
    if stem in ("h_hist", "e_hist") and tail.isdigit():
        stain = "haematoxylin (nuclei)" if stem == "h_hist" else "eosin (cytoplasm, stroma)"
        return f"{stain} stain, share of pixels in bin {int(tail) + 1} of 8 (higher: denser)"
    if stem == "lbp" and tail.isdigit():
        return f"texture: share of pixels with local-binary-pattern code {tail}"
    return "region feature"


def _patient_table(cohort, risks: dict[str, float]):
    """One row per patient of the discovery cohort with an explained slide: the mean risk of
    its slides (the trainer's rule for a patient with several), its time, event and slides;
    ``None`` when the cohort records no slides or no survival columns."""
    import pandas as pd

    if cohort is None or "slides" not in cohort.obs:
        return None
    info = dict(cohort.uns.get("cohort", {}))
    params = dict(cohort.uns.get("survival_screen_params", {}))
    dkey = info.get("duration_key") or params.get("duration_key") or "time"
    ekey = info.get("event_key") or params.get("event_key") or "event"
    if dkey not in cohort.obs or ekey not in cohort.obs:
        return None
    rows = []
    for patient, row in cohort.obs.iterrows():
        slides = [s for s in str(row["slides"]).split(";") if s in risks]
        if slides:
            rows.append({"patient": str(patient), "slides": slides,
                         "risk": float(np.mean([risks[s] for s in slides])),
                         "time": float(row[dkey]), "event": float(row[ekey])})  # fmt: skip
    table = pd.DataFrame(rows)
    if not len(table) or not np.isfinite(table[["time", "event"]].to_numpy(float)).all():
        return None
    return table


def _km_risk_groups(*, unit: str | None, prefix: str, **kwargs) -> str:
    """``pl.risk_groups`` as an embedded figure whose title starts with who is drawn."""
    import matplotlib.pyplot as plt

    from workbench import pl

    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    pl.risk_groups(ax=ax, time_unit=unit, **kwargs)
    ax.set_title(f"{prefix}\n{ax.get_title()}", fontsize=9)
    return f'<figure class="risk-groups">{_fig_to_img(fig, alt="risk groups")}</figure>'


_RISK_NOTE = (
    '<p class="note">Each curve is a predicted risk group (low: at or below the cut-point, '
    "high: above it), the numbers at risk under the plot. The cut-point (the median risk) is "
    "taken from risks of patients the model was <i>trained</i> on, never from the patients "
    "drawn, so the gap between the curves is not tuned on them.</p>"
)


def _oof_risk_groups(oof_path: Path, unit: str | None) -> str | None:
    """Risk groups of the out-of-fold risks; ``None`` for a class model's out-of-fold file."""
    import pandas as pd

    try:
        oof = pd.read_csv(oof_path, dtype={"patient": str})
    except (OSError, ValueError) as exc:
        return _unreadable(oof_path, exc)
    if not {"risk", "time", "event", "fold"} <= set(oof.columns):
        return None
    first = int(oof["repeat"].min()) if "repeat" in oof else 1
    rep = oof[oof["repeat"] == first] if "repeat" in oof else oof
    n_rep = int(oof["repeat"].nunique()) if "repeat" in oof else 1
    where = f"<code>{html.escape(oof_path.name)}</code>" + (
        f", repeat {first} of {n_rep}" if n_rep > 1 else ""
    )
    if TRAIN_CUT in rep and np.isfinite(rep[TRAIN_CUT].to_numpy(float)).all():
        # each fold model's own cut: the median risk it gave its training patients
        cuts = {f: [float(c)] for f, c in rep.groupby("fold")[TRAIN_CUT].first().items()}
        how = (
            "Each fold's patients are cut at the median risk that the same fold model gave its "
            "own training patients."
        )
        kwargs = {"train_risk": cuts}
    else:
        medians = rep.groupby("fold")["risk"].median()
        how = (
            "The cut-point for one fold's patients is the median of the other folds' "
            "out-of-fold risks, i.e. risks of that fold's training patients, given by the "
            "models that did not see them (the file records no fold model's own cut). A Cox "
            "risk has no fixed origin, so fold models' risks can sit at different levels: here "
            f"the folds' median risks run from {medians.min():.2f} to {medians.max():.2f}"
            + (
                ", far enough apart that the groups partly reflect the fold a patient was in."
                if medians.max() - medians.min() > rep["risk"].std()
                else "."
            )
        )
        kwargs = {}
    try:
        fig = _km_risk_groups(data=rep, unit=unit, prefix="held out: out-of-fold risks", **kwargs)
    except (ValueError, KeyError) as exc:  # OptionError, ClinicalTableError are ValueErrors
        return f'<p class="note">risk groups unavailable: {html.escape(str(exc))}</p>'
    return (
        f"<p>Held-out patients: the risk of each of the <b>{len(rep)}</b> patients comes from "
        f"the cross-validation fold model that did not see them (out-of-fold, {where}). "
        f"{how}</p>{_RISK_NOTE}{fig}"
    )


def _section_risk_groups(root: Path, where: Path, training: dict, cohort, risks, unit) -> str:
    """Kaplan–Meier curves of the model's predicted risk groups on the most honest patients
    the run has: out-of-fold, else held-out test, else validation patients; in-sample only
    when nothing else exists, and then said so in the title and the text."""
    cmd = _commands(root)["train_survival"]
    oof_name = training.get("oof_predictions")
    if oof_name and (where / str(oof_name)).exists():
        shown = _oof_risk_groups(where / str(oof_name), unit)
        if shown is not None:
            return shown
    train = {str(s) for s in training.get("train_slides") or []}
    val_slides = {str(s) for s in (training.get("validation") or {}).get("slides") or []}
    patients = _patient_table(cohort, risks)
    train_risk = None
    if patients is not None and train:
        is_train = patients["slides"].map(lambda ss: any(s in train for s in ss))
        is_val = patients["slides"].map(lambda ss: any(s in val_slides for s in ss))
        held = patients[~is_train & ~is_val]
        train_risk = patients.loc[is_train, "risk"].to_numpy()
        if len(held) >= 4 and held["event"].sum() >= 1 and len(train_risk) >= 2:
            fig = _km_risk_groups(
                risk=held["risk"], time=held["time"], event=held["event"],
                train_risk=train_risk, unit=unit, prefix="held out: test patients",
            )  # fmt: skip
            return (
                f"<p>Held-out test patients: the <b>{len(held)}</b> patients whose slides the "
                "model never saw (neither trained nor stopped on them), cut at the median risk "
                f"of the {len(train_risk)} training patients.</p>{_RISK_NOTE}{fig}"
            )
    if train_risk is None or len(train_risk) < 2:
        own = [risks[s] for s in sorted(train) if s in risks]
        train_risk = np.asarray(own) if len(own) >= 2 else None
    preds = (training.get("validation") or {}).get("predictions") or []
    if preds and train_risk is not None:
        import pandas as pd

        from workbench.tl._train import patient_risks

        v = pd.DataFrame(preds)
        r, t, e = patient_risks(v["risk"], list(v["patient"].astype(str)), v["time"], v["event"])
        if len(r) >= 4 and e.sum() >= 1:
            fig = _km_risk_groups(
                risk=r, time=t, event=e, train_risk=train_risk, unit=unit,
                prefix="validation patients (training stopped on them: slightly optimistic)",
            )  # fmt: skip
            return (
                f"<p>Validation patients: the <b>{len(r)}</b> patients held out from fitting "
                "the weights but used to choose when training stopped (so slightly "
                f"optimistic), cut at the median risk of {len(train_risk)} training "
                "patients. For held-out figures of every patient, cross-validate: "
                f"<code>{html.escape(cmd)}</code>.</p>{_RISK_NOTE}{fig}"
            )
    if patients is not None and len(patients) >= 4 and patients["event"].sum() >= 1:
        fig = _km_risk_groups(
            risk=patients["risk"], time=patients["time"], event=patients["event"],
            train_risk=patients["risk"], unit=unit,
            prefix="IN-SAMPLE: the model was trained on these patients (not held out)",
        )  # fmt: skip
        return (
            '<p class="missing"><b>In-sample only.</b> This run has no out-of-fold, held-out '
            f"or validation risks, so the curves below are the <b>{len(patients)}</b> "
            "patients' own risks from a model trained on them, cut at their own median: they "
            "show how well the model fits, not how it would sort new patients. For held-out "
            f"curves: <code>{html.escape(cmd)}</code>.</p>{fig}"
        )
    why = "no out-of-fold risks (the model was trained without --folds, so no oof_predictions.csv)"
    if cohort is None:
        why += " and no survival times for the explained slides (no discovery.h5ad)"
    elif patients is None:
        why += (
            " and no survival times for the explained slides (discovery.h5ad lists no slides "
            "with a risk, or has no time and event columns)"
        )
    return _missing("held-out risk groups", why, cmd)


def _section_prognostic(
    root: Path, training: dict, paths: dict[str, Path], stats: list, n_examples: int, cohort
) -> str:
    """A survival model's explanations: for a few slides (held out first) the diverging
    risk map and the magnified prognostic focus regions with their risk contribution, then
    what the focused regions look like over every explained slide."""
    import anndata as ad
    import matplotlib.pyplot as plt

    from workbench import pl

    cmd = _commands(root)
    if not paths:
        return _missing(
            "prognostic focus", "no slides/*.h5ad explained by the survival model", cmd["extract"]
        )
    chosen, which = example_slides(list(paths.values()), training, n_examples)
    out = [
        f"<p>{len(paths)} slide{'s' if len(paths) != 1 else ''} explained by the survival "
        "model. For each example: the thumbnail with each region's <b>risk contribution</b> "
        "(the region score learnt with the Cox loss) in a diverging map — red regions push "
        "the slide's risk up more than its typical region, blue ones less, white is the "
        "slide's median region — and the top-K <b>prognostic focus</b> regions (boxes); then "
        "those regions at high magnification, each titled with its risk contribution. The "
        "slide risk is a log relative hazard: higher = shorter survival, comparable between "
        "slides of this model only.</p>",
        f'<p class="note">{which}</p>',
    ]
    for f in chosen:
        try:
            a = ad.read_h5ad(f)
        except (OSError, KeyError, ValueError) as exc:
            out.append(_unreadable(f, exc))
            continue
        ex = a.uns["explain"]
        sid = _slide_of(f)
        fig, ax = plt.subplots(figsize=(5, 4))
        pl.slide_overlay(a, ax=ax)
        ax.set_title(f"{sid}: {ax.get_title()}", fontsize=9)
        overlay = _fig_to_img(fig, alt=f"risk map {sid}")
        gallery = _fig_to_img(pl.focus_gallery(a), alt=f"prognostic focus {sid}")
        flag, grey = _applicability_flag(ex)
        scores = ", ".join(f"{s:.2f}" for s in np.asarray(ex["focus"]["focus_score"], float))
        median = float(np.nanmedian(a.obs["focus_score"].to_numpy(dtype=float)))
        out.append(
            f'<h3>{html.escape(sid)}</h3>{flag}<p class="note"{grey}>slide risk: '
            f"{_fmt(float(ex.get('risk', np.nan)), 2)} (log relative hazard; higher = shorter "
            f"survival); risk contribution of the focus regions: {scores} (slide median "
            f'{median:.2f}).</p><div class="figs"><figure>{overlay}</figure>'
            f"<figure>{gallery}</figure></div>"
        )
    table = _focus_features(stats)
    if len(table):
        rows = [{"region feature": name, **r} for name, r in table.to_dict("index").items()]
        out.append(
            "<h3>The focused features</h3><p>What the prognostic focus regions look like over "
            f"the {len(stats)} explained slides: for each region feature, how far the focus "
            "regions lie from their slide's mean (<b>focus_vs_other_sd</b>, in the slide's "
            "standard deviations) and how closely it follows the regions' risk contribution "
            "(<b>rho_risk</b>, Spearman correlation over all regions of a slide), both averaged "
            "over slides; the features that follow the risk contribution most closely first. "
            "They describe where the model looks; they are not tests of survival.</p>"
            + _table(
                rows,
                ["region feature", "focus_vs_other_sd", "rho_risk", "slides", "what it measures"],
            )  # fmt: skip
        )
    if cohort is not None:
        out.append(
            "<p>The focused features (<code>obsm['X_focus']</code>) are region features like "
            "any other: marker discovery turned them into the phenotypes, spatial markers and "
            "survival screen of the sections below.</p>"
        )
    else:
        out.append(
            _missing(
                "marker discovery on the focused features",
                "no discovery.h5ad; the focused features (obsm['X_focus']) feed it unchanged",
                cmd["discover"],
            )
        )
    return "\n".join(out)


def write_report(
    run_dir: str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    n_examples: int = 2,
    title: str = "Pathology Workbench run",
    time_unit: str | None = None,
) -> Path:
    """Write ``report.html`` for a run folder and return its path.

    Parameters
    ----------
    run_dir
        The run folder (see the module docstring for what is read).
    path
        Where to write; default ``run_dir/report.html``. Written atomically.
    n_examples
        How many slides get an explanation figure (held-out slides first).
    title
        The page's title.
    time_unit
        Unit of the clinical follow-up times (``"months"``), shown on the Kaplan–Meier axes
        and the cohort's follow-up; default: what the run records (``run.json``
        ``config.time_unit``, the synthetic cohort's ``cohort.json``), else left unnamed.

    Returns
    -------
    pathlib.Path
        The report written.
    """
    root = Path(run_dir)
    if not root.is_dir():
        from workbench._errors import WorkbenchError

        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise WorkbenchError(f"run folder {str(root)!r} {what}; run `workbench demo` first")
    path = Path(path) if path is not None else root / "report.html"
    if path.is_dir():
        from workbench.io import OutputWriteError

        raise OutputWriteError(f"{str(path)!r} is a folder; give the report a file name")
    clean_partial(root, recursive=True)  # what an interrupted run left is never read
    manifest = _read_json(root / "run.json") or {}
    cohort, problem = _load_discovery(root)
    unit = time_unit or _time_unit(root, cohort)
    markers_html, km_html = _section_markers(root, cohort, problem, unit)
    where, training = _training_record(root)
    files = list_results(root / "slides", "*.h5ad")
    if _is_survival_run(training, files):  # risk groups, and the risk maps as prognostic focus
        paths, risks, stats = _survival_slides(files)
        risk_groups = _section_risk_groups(root, where, training, cohort, risks, unit)
        prognostic = _section_prognostic(root, training, paths, stats, n_examples, cohort)
        explained = [
            ("risk_groups", "Risk groups", risk_groups),
            ("prognostic", "Prognostic focus", prognostic),
        ]
    else:
        explained = [("explain", "Explanations", _section_explain(root, n_examples))]
    sections = [
        ("cohort", "Cohort", _section_cohort(root, unit, cohort)),
        ("model", "Model performance", _section_model(root)),
        *explained,
        ("refine", "Refined regions", _section_refine(root)),
        ("phenotypes", "Phenotypes", _section_phenotypes(root, cohort, problem)),
        ("markers", "Candidate markers", markers_html),
        ("survival", "Kaplan–Meier curves", km_html),
    ]
    steps = manifest.get("steps", {})
    step_rows = [{"step": k, "seconds": v.get("seconds")} for k, v in steps.items()]
    from workbench import __version__

    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(str(root.resolve()))} · "
        f"workbench {__version__} · {now}</p></header>",
        "<nav>" + "".join(f'<a href="#{sid}">{name}</a>' for sid, name, _ in sections) + "</nav>",
        "<main>",
    ]
    for sid, name, body in sections:
        parts.append(f'<section id="{sid}"><h2>{name}</h2>{body}</section>')
    if step_rows:
        parts.append(
            '<section id="steps"><h2>Run steps</h2>'
            + _table(step_rows, ["step", "seconds"])
            + f'<p class="note">configuration: {html.escape(json.dumps(manifest.get("config", {})))}'
            "</p></section>"
        )
    parts.append("</main></body></html>")
    atomic_write_text(path, "\n".join(parts))
    logger.info("report written to %s", path)
    return path
