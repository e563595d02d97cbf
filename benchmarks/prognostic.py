"""Prognostic benchmark (issue #23): survival models on a synthetic cohort with planted hazard.

The cohort (``workbench.datasets.make_cohort``, default 120 patients, ``tiny`` slides, one slide
per patient) plants survival in grade and in the immune infiltration of the lesion boundary
(protective); a necrosis decoy is drawn independently and has no effect (see
``workbench.datasets._survival`` for the hazard model). On the same held-out folds of every
seed this script compares, in one run:

- ``sew``: the self-calibrated model trained with the Cox loss (``SlideTrainer(kind="sew",
  target="survival")``);
- ``sew_raise`` / ``sew_two_sided``: the same with an explicit focus rule
  (``risk_focus="raise"``: the focus learns each crop's detail risk and picks the regions that
  raise it most; ``"two-sided"``: it learns the crop's risk relative to the slide's median crop
  and picks the regions that depart most from the slide's typical region, either way);
- ``global``: GlobalOnly with the Cox loss (thumbnail graph only);
- ``abmil``: tile ABMIL with the Cox loss (the STAMP-style peer: every tissue tile);
- ``clinical``: a lifelines Cox model on the clinical table's covariates (grade, age);
- ``oracle``: a lifelines Cox model on the true hazard covariates (grade, planted
  infiltration, age): the ceiling.

Every seed draws its own patient folds (``--folds``, stratified by event) and seeds the models;
each network stops early on an inner 20 % (``--validation``) of its training patients (never the test fold).
Figures per seed and model: pooled out-of-fold Harrell's C with a patient-bootstrap interval,
the folds' Uno's C (IPCW) with intervals, training seconds, and ``tl.extract`` seconds per
slide (``--time-slides`` held-out slides per kind and seed). Focus: on held-out slides
(``--focus-slides`` per seed) the SEW focus regions found by ``tl.extract`` are checked against
the slide's planted layout: the share whose centre lies in the lesion-boundary infiltrate band
vs in the necrosis decoy, next to the same shares of all tissue regions (what a random pick
would give); ABMIL's attention focus on its timed slides the same way. SEW models also report
the same shares on their inner validation patients (``focus_validation``, up to
``--val-focus-slides`` per fold: training-side patients used only for early stopping, never a
test fold), which is where the default ``risk_focus`` rule is chosen (the ``risk_focus_choice``
summary line: the best-placed focus among the rules that lose at most 0.02 of validation C).

Null cohorts (``--null-seeds``): the same slides with survival redrawn under ``null=True``
(grade and infiltration effects removed; age kept), so nothing visible predicts it; the SEW
model's pooled out-of-fold C interval should cover 0.5 (count reported). The networks
(``--null-kinds``) are scored for focus there too: a focus that lands on the boundary band
under the null as well says the band looks unusual, not that it decides survival.

Slides are read once per process (a ``SlideTrainer`` whose ``_prepare`` serves every kind from
one cache: crops for SEW, tiles for ABMIL, the region graph for all); the cached crop
candidates and tile subsets are those of model seed 0.

The recorded run (``benchmarks/results/prognostic.jsonl``, three processes on the shared 2-core
machine, about 60 min): ``--parts planted --kinds sew global`` and ``--parts planted --kinds
abmil --no-cox`` (stopped after seed 0: 36 min of training per seed), ``--parts null --epochs
4``, ``--parts mosaic --mosaic-n 30 --seeds 0 --epochs 4``, then ``--parts summary``. The focus
rules (``risk_focus``), one process per seed, then ``--parts summary``::

    --kinds sew_raise sew_two_sided --epochs 6 --focus-slides 12 --val-focus-slides 4 \
        --time-slides 1 --n-boot 300 --parts planted --seeds S
    --null-kinds sew_two_sided sew_raise (same options) --parts null --null-seeds S

Prints JSON lines and appends them to ``benchmarks/results/prognostic.jsonl`` (``--out``);
``--parts summary`` reads that file back and adds the summary lines (mean +- SD over seeds,
targets). Parts can run in separate processes (e.g. ``--parts planted --kinds abmil`` next to
``--parts planted --kinds sew global`` and ``--parts null``)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/prognostic.py \\
        [--work runs/prognostic_bench] [--n-patients 120] [--seeds 0 1 2] [--folds 2] \\
        [--epochs 8] [--kinds sew global abmil] [--null-seeds 0 1 2 3 4] [--parts planted null]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "prognostic.jsonl"
CLINICAL_COVARIATES = ["grade", "age"]
ORACLE_COVARIATES = ["grade", "infiltration_z", "age"]
NETWORK_KINDS = ("sew", "global", "abmil")
# SEW with an explicit focus rule for survival (``risk_focus``; ``sew`` is the model's default)
SEW_VARIANTS = {"sew_raise": "raise", "sew_two_sided": "two-sided"}
NETWORKS = (*NETWORK_KINDS, *SEW_VARIANTS)


def emit(record: dict, out) -> None:
    """Print one JSON line and append it to the results file."""
    line = json.dumps(record, default=_plain)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON: {type(v).__name__}")


def _r(v, nd: int = 4):
    if v is None:
        return None
    if isinstance(v, list | tuple):
        return [_r(x, nd) for x in v]
    v = float(v)
    return round(v, nd) if np.isfinite(v) else None


# --------------------------------------------------------------------------- slides, once
_CACHE: dict = {}  # slide file -> its SlideSample; "__settings__" -> the reading settings
READ_TILES = {"on": True}  # read every slide's tiles too (only an ABMIL run needs them)


def _key(cohort, sid: str) -> str:
    """Cache key of a slide: its file (slide ids repeat across cohorts)."""
    return str(Path(cohort.slide_path(sid)).resolve())


def cached_trainer_class():
    """A :class:`~workbench.tl.SlideTrainer` that reads each slide once per process."""
    from workbench.tl import SlideTrainer
    from workbench.tl._engine import prepare_cohort

    class CachedTrainer(SlideTrainer):
        def _prepare(self, cohort, labels, encoder):
            missing = [s for s in cohort.slide_ids if _key(cohort, s) not in _CACHE]
            if missing:
                settings = _CACHE.setdefault("__settings__", self._settings(cohort, encoder))
                samples = prepare_cohort(
                    cohort.subset(missing),
                    dict.fromkeys(missing, 0),
                    settings=settings,
                    use_annotations=self.use_annotations,
                    tiles=READ_TILES["on"],  # every kind is served from one read
                    n_candidates=self.n_candidates,
                    max_tiles=self.max_tiles,
                    encoder=None,
                    seed=0,
                    progress=self.progress,
                )
                for s in samples:
                    _CACHE[_key(cohort, s.name)] = s
            ids = [s for s in cohort.slide_ids if _key(cohort, s) in _CACHE]
            return [_CACHE[_key(cohort, s)] for s in ids], dict(_CACHE["__settings__"])

    return CachedTrainer


# --------------------------------------------------------------------------- the planted layout
def layouts(cohort) -> dict:
    """The planted layout (boundary band, necrosis) of every slide, drawn again from its seed."""
    from workbench.datasets._layout import build_layout
    from workbench.datasets._slide import MPP

    w, h = cohort.params["dimensions"]
    out = {}
    for row in cohort.truth.itertuples(index=False):
        lay = build_layout(
            int(w), int(h), grade=int(row.grade), infiltration=float(row.infiltration),
            seed=int(row.slide_seed), mpp=MPP,
        )  # fmt: skip
        if abs(lay.necrosis_fraction() - float(row.necrosis_fraction)) > 1e-4:
            raise RuntimeError(f"layout of {row.slide_id} does not match the cohort's truth")
        out[str(row.slide_id)] = lay
    return out


def where_points(lay, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether level-0 points ``(n, 2)`` (x, y) lie in the boundary band / the necrosis."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    r = np.clip((xy[:, 1] // lay.downsample).astype(int), 0, lay.band_mask.shape[0] - 1)
    c = np.clip((xy[:, 0] // lay.downsample).astype(int), 0, lay.band_mask.shape[1] - 1)
    return lay.band_mask[r, c], lay.necrosis_mask[r, c]


def focus_counts(adata, lay) -> dict:
    """Focus regions (and all regions) of one extracted slide on the band and the decoy."""
    from workbench._constants import SPATIAL

    focus = np.asarray(adata.uns["explain"]["focus"]["centers_xy"], dtype=float).reshape(-1, 2)
    band, decoy = where_points(lay, focus)
    all_band, all_decoy = where_points(lay, np.asarray(adata.obsm[SPATIAL]))
    return {
        "focus": len(focus),
        "focus_band": int(band.sum()),
        "focus_decoy": int(decoy.sum()),
        "regions": len(all_band),
        "regions_band": int(all_band.sum()),
        "regions_decoy": int(all_decoy.sum()),
        "has_decoy": bool(lay.necrosis_mask.any()),
    }


def focus_record(counts: list[dict]) -> dict:
    """Shares over slides: focus on band / decoy, and all regions (chance) on band / decoy."""
    f = sum(c["focus"] for c in counts)
    r = sum(c["regions"] for c in counts)
    with_decoy = [c for c in counts if c["has_decoy"]]
    fd = sum(c["focus"] for c in with_decoy)
    return {
        "n_slides": len(counts),
        "n_focus": f,
        "focus_on_boundary": _r(sum(c["focus_band"] for c in counts) / f) if f else None,
        "focus_on_decoy": _r(sum(c["focus_decoy"] for c in counts) / f) if f else None,
        "chance_on_boundary": _r(sum(c["regions_band"] for c in counts) / r) if r else None,
        "chance_on_decoy": _r(sum(c["regions_decoy"] for c in counts) / r) if r else None,
        "n_slides_with_decoy": len(with_decoy),
        "focus_on_decoy_slides_with_decoy": (
            _r(sum(c["focus_decoy"] for c in with_decoy) / fd) if fd else None
        ),
    }


# --------------------------------------------------------------------------- models
def cox_risk(table, covariates, train_idx, test_idx) -> np.ndarray:
    """Held-out log partial hazards of a lifelines Cox model fit on the training rows."""
    from lifelines import CoxPHFitter

    cols = [*covariates, "time", "event"]
    cph = CoxPHFitter(penalizer=0.01)
    cph.fit(table.iloc[train_idx][cols], duration_col="time", event_col="event")
    return np.asarray(cph.predict_log_partial_hazard(table.iloc[test_idx][covariates]), float)


def train_network(kind, cohort, test_ids, seed, args):
    """A survival network of ``kind`` (a kind or a :data:`SEW_VARIANTS` name) trained on every
    slide but ``test_ids`` (early stopping on an inner ``args.validation`` of the training
    patients); its held-out slide risks."""
    from workbench.models import predict_samples

    trainer_cls = cached_trainer_class()
    kw = {"max_tiles": args.max_tiles} if kind == "abmil" else {}
    if kind in SEW_VARIANTS:
        kind, kw = "sew", {"model_kwargs": {"risk_focus": SEW_VARIANTS[kind]}}
    tr = trainer_cls(
        kind=kind, target="survival", validation=args.validation, epochs=args.epochs,
        patience=args.patience, lr=args.lr, seed=seed, use_annotations=False,
        progress=False, n_boot=0, **kw,
    )  # fmt: skip
    t0 = time.perf_counter()
    tr.fit(cohort, slide_ids=test_ids)
    train_s = time.perf_counter() - t0
    test = [_CACHE[_key(cohort, s)] for s in test_ids]
    readers = tr._readers(test, cohort, tr.settings_, None)
    risk = predict_samples(tr.model_, test, crop_sources=readers, return_logits=True)[:, 0]
    return tr, np.asarray(risk, float), train_s


def timed_extract(model, cohort, sid):
    """``tl.extract`` of one slide: the AnnData, wall and CPU seconds."""
    from workbench.tl import extract

    w0, c0 = time.perf_counter(), time.process_time()
    adata = extract(cohort.slide_path(sid), model, device="cpu")
    return adata, time.perf_counter() - w0, time.process_time() - c0


# --------------------------------------------------------------------------- one cross-validation
def cross_validate(cohort, table, models, seed, args, *, lays=None, tag="planted", out=None):
    """Every model on the same ``args.folds`` patient folds of this seed; one line per model."""
    from workbench.tl._cv import make_folds, pooled_survival_summary, survival_fold_figures
    from workbench.tl._train import EVENT_CLASSES

    ids = list(table["slide_id"])
    patients = list(table["patient_id"])
    time_, event = table["time"].to_numpy(float), table["event"].to_numpy(int)
    folds = make_folds(event, patients, int(args.folds), seed, classes=EVENT_CLASSES, warn=False)
    oof = {m: np.full(len(ids), np.nan) for m in models}
    per_fold = {m: [] for m in models}
    seconds = {m: [] for m in models}
    extract_s = {m: [] for m in models}
    focus = {m: [] for m in models}
    focus_val = {m: [] for m in models}
    val_c = {m: [] for m in models}
    epochs = {m: [] for m in models}
    for f, (tr_idx, te_idx) in enumerate(folds, start=1):
        test_ids = [ids[i] for i in te_idx]
        for m in models:
            if m == "clinical":
                risk = cox_risk(table, CLINICAL_COVARIATES, tr_idx, te_idx)
            elif m == "oracle":
                risk = cox_risk(table, ORACLE_COVARIATES, tr_idx, te_idx)
            else:
                tr, risk, train_s = train_network(m, cohort, test_ids, seed, args)
                seconds[m].append(train_s)
                epochs[m].append(tr.final_model_["epochs"])
                if lays is not None:  # timing on fold 1; SEW focus spread over the folds
                    n_time = args.time_slides if f == 1 else 0
                    n_extract = n_time
                    if m.startswith("sew"):
                        n_extract = max(n_time, -(-args.focus_slides // len(folds)))
                    for j, sid in enumerate(test_ids[:n_extract]):
                        adata, wall, _ = timed_extract(tr.model_, cohort, sid)
                        if j < n_time:
                            extract_s[m].append(wall)
                        focus[m].append(focus_counts(adata, lays[sid]))
                    if m.startswith("sew") and tr.validation_:  # where the rule is chosen
                        val_c[m].append(tr.validation_["c_index"])
                        for sid in tr.validation_["slides"][: args.val_focus_slides]:
                            adata, _, _ = timed_extract(tr.model_, cohort, sid)
                            focus_val[m].append(focus_counts(adata, lays[sid]))
            oof[m][te_idx] = risk
            per_fold[m].append(
                survival_fold_figures(
                    time_[te_idx],
                    event[te_idx],
                    risk,
                    time_[tr_idx],
                    event[tr_idx],
                    n_boot=args.n_boot,
                    seed=seed * 100 + f,
                )  # fmt: skip
            )
    lines = []
    for m in models:
        pooled = pooled_survival_summary(
            time_, event, oof[m], patients, np.ones(len(ids), int), n_boot=args.n_boot, seed=seed
        )
        uno = [p["uno_c"] for p in per_fold[m] if p["uno_c"] is not None]
        rec = {
            "bench": "prognostic",
            "cohort": tag,
            "model": m,
            "seed": seed,
            "n_patients": len(ids),
            "n_events": int(event.sum()),
            "folds": int(args.folds),
            "harrell_c": _r(pooled["harrell_c"]),
            "harrell_c_ci": _r(pooled["harrell_c_ci"]),
            "covers_half": (
                None
                if pooled["harrell_c_ci"] is None
                else bool(pooled["harrell_c_ci"][0] <= 0.5 <= pooled["harrell_c_ci"][1])
            ),
            "harrell_c_mean_of_folds": _r(np.mean([p["harrell_c"] for p in per_fold[m]])),
            "uno_c_mean_of_folds": _r(np.mean(uno)) if uno else None,
            "fold_harrell_c": [_r(p["harrell_c"]) for p in per_fold[m]],
            "fold_harrell_c_ci": [_r(p["harrell_c_ci"]) for p in per_fold[m]],
            "fold_uno_c": [_r(p["uno_c"]) for p in per_fold[m]],
            "fold_uno_c_ci": [_r(p["uno_c_ci"]) for p in per_fold[m]],
        }
        if m in NETWORKS:
            rec["epochs"] = epochs[m]
            rec["train_seconds"] = _r(sum(seconds[m]), 1)
            if extract_s[m]:
                rec["extract_seconds_per_slide"] = _r(np.median(extract_s[m]), 3)
                rec["extract_slides_timed"] = len(extract_s[m])
            if focus[m]:
                rec["focus"] = focus_record(focus[m])
            if focus_val[m]:
                rec["focus_validation"] = focus_record(focus_val[m])
                rec["validation_harrell_c"] = _r(val_c[m])
        emit(rec, out)
        lines.append(rec)
    return lines


def null_table(cohort, seed: int):
    """The cohort's patients with survival redrawn under ``null=True`` (seed of its own)."""
    from workbench.datasets._survival import simulate_survival

    t = cohort.truth.reset_index(drop=True)
    surv = simulate_survival(t["grade"], t["infiltration"], t["age"], seed=10_000 + seed,
                             null=True)  # fmt: skip
    out = t.drop(columns=["time", "event", "linear_predictor"]).copy()
    out[["time", "event"]] = surv[["time", "event"]].to_numpy()
    out["event"] = out["event"].astype(int)
    return out


def cohort_with(cohort, table):
    """A :class:`~workbench.io.Cohort` of the same slides with this survival table."""
    import pandas as pd

    from workbench.io import Cohort

    root = Path(cohort.root)
    clinical = pd.read_csv(root / "clinical.csv")
    new = table.set_index("patient_id").loc[clinical["patient_id"], ["time", "event"]]
    clinical[["time", "event"]] = new.to_numpy()
    clinical["event"] = clinical["event"].astype(int)
    return Cohort.from_folder(root / "slides", clinical)


# --------------------------------------------------------------------------- real-tissue mosaics
MOSAIC_ORACLE = ["til_share", "age"]


def mosaic_benchmark(args, out) -> list[dict]:
    """Train on the train side of a survival mosaic cohort, test on the test side (no source
    image shared); one line per model and seed."""
    from workbench.datasets import make_survival_mosaic_cohort
    from workbench.tl._cv import survival_fold_figures

    root = args.work / f"survival_mosaic_{args.mosaic_n}_{args.cohort_seed}"
    t0 = time.perf_counter()
    cohort = make_survival_mosaic_cohort(root, n_train=args.mosaic_n, n_test=args.mosaic_n,
                                         seed=args.cohort_seed, progress=False)  # fmt: skip
    t = cohort.truth.reset_index(drop=True)
    emit({"bench": "prognostic", "event": "cohort", "root": str(root), "kind": "survival_mosaic",
          "n_train": int((t["split"] == "train").sum()), "n_test": int((t["split"] == "test").sum()),
          "n_events": int(t["event"].sum()), "seconds": _r(time.perf_counter() - t0, 1)}, out)  # fmt: skip
    tr_idx = np.flatnonzero(t["split"] == "train")
    te_idx = np.flatnonzero(t["split"] == "test")
    test_ids = list(t["slide_id"].iloc[te_idx])
    time_, event = t["time"].to_numpy(float), t["event"].to_numpy(int)
    lines = []
    for seed in args.seeds:
        for m in ["oracle", "clinical", *args.mosaic_kinds]:
            rec = {"bench": "prognostic", "cohort": "mosaic", "model": m, "seed": seed,
                   "n_train": len(tr_idx), "n_test": len(te_idx),
                   "n_test_events": int(event[te_idx].sum())}  # fmt: skip
            if m == "oracle":
                risk = cox_risk(t, MOSAIC_ORACLE, tr_idx, te_idx)
            elif m == "clinical":
                risk = cox_risk(t, ["age"], tr_idx, te_idx)
            else:
                tr, risk, train_s = train_network(m, cohort, test_ids, seed, args)
                rec["epochs"] = tr.final_model_["epochs"]
                rec["train_seconds"] = _r(train_s, 1)
                walls = [timed_extract(tr.model_, cohort, sid)[1]
                         for sid in test_ids[: args.time_slides]]  # fmt: skip
                rec["extract_seconds_per_slide"] = _r(np.median(walls), 3)
                rec["extract_slides_timed"] = len(walls)
            fig = survival_fold_figures(time_[te_idx], event[te_idx], risk, time_[tr_idx],
                                        event[tr_idx], n_boot=args.n_boot, seed=seed)  # fmt: skip
            rec.update({k: _r(fig[k]) for k in ("harrell_c", "harrell_c_ci", "uno_c", "uno_c_ci")})
            emit(rec, out)
            lines.append(rec)
    return lines


# --------------------------------------------------------------------------- summary
def pooled_focus(foc: list[dict]) -> dict:
    """Focus shares pooled over seeds (weighted by focus regions); chance as the seeds' mean."""
    n = sum(f["n_focus"] for f in foc)

    def pooled(key):
        return _r(sum((f[key] or 0) * f["n_focus"] for f in foc) / n) if n else None

    return {
        "n_slides": sum(f["n_slides"] for f in foc),
        "n_focus": n,
        "focus_on_boundary": pooled("focus_on_boundary"),
        "focus_on_decoy": pooled("focus_on_decoy"),
        "chance_on_boundary": _r(np.mean([f["chance_on_boundary"] for f in foc])),
        "chance_on_decoy": _r(np.mean([f["chance_on_decoy"] for f in foc])),
    }


C_TOLERANCE = 0.02  # a focus rule may cost at most this much validation C


def risk_focus_choice(lines: list[dict]) -> dict | None:
    """The ``risk_focus`` rule chosen on the validation patients: the highest share of focus on
    the boundary band minus the share on the decoy among the rules whose validation C is within
    :data:`C_TOLERANCE` of the best (a better-placed focus is not worth a worse model), next to
    the rules' test-fold figures."""
    got = {
        m: x
        for x in lines
        for m, rule in SEW_VARIANTS.items()
        if x.get("summary") == "planted" and x.get("model") == m and x.get("focus_validation")
    }
    if len(got) < 2:
        return None

    def score(x):
        f = x["focus_validation"]
        return (f["focus_on_boundary"] or 0) - (f["focus_on_decoy"] or 0)

    by_focus = max(got, key=lambda m: score(got[m]))
    val_c = {m: x.get("validation_harrell_c_mean") or 0.0 for m, x in got.items()}
    by_c = max(got, key=lambda m: val_c[m])
    ok = [m for m in got if val_c[m] >= val_c[by_c] - C_TOLERANCE]
    best = max(ok, key=lambda m: score(got[m]))
    return {
        "bench": "prognostic",
        "summary": "risk_focus_choice",
        "chosen_on": "inner validation patients (never a test fold)",
        "rule": f"best focus (boundary - decoy) among rules within {C_TOLERANCE} of the best C",
        "best_focus": SEW_VARIANTS[by_focus],
        "best_c": SEW_VARIANTS[by_c],
        "chosen": SEW_VARIANTS[best],
        "validation": {
            SEW_VARIANTS[m]: {
                "focus_on_boundary": x["focus_validation"]["focus_on_boundary"],
                "focus_on_decoy": x["focus_validation"]["focus_on_decoy"],
                "chance_on_boundary": x["focus_validation"]["chance_on_boundary"],
                "harrell_c": x.get("validation_harrell_c_mean"),
            }
            for m, x in got.items()
        },
        "test": {
            SEW_VARIANTS[m]: {
                "focus_on_boundary": (x.get("focus") or {}).get("focus_on_boundary"),
                "focus_on_decoy": (x.get("focus") or {}).get("focus_on_decoy"),
                "harrell_c": x["harrell_c_mean"],
                "harrell_c_mean_of_folds": x["harrell_c_mean_of_folds_mean"],
            }
            for m, x in got.items()
        },
    }


def summary(path: Path, out) -> list[dict]:
    """Mean +- SD over seeds per model, the targets, and the null count, from the results."""
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("bench") == "prognostic" and "cohort" in r]
    lines = []
    planted = [r for r in rows if r["cohort"] == "planted"]
    by_seed: dict[str, dict] = {}  # model -> seed -> (pooled C, mean of the folds' C)
    for m in ("oracle", "clinical", *NETWORKS):
        rs = {r["seed"]: r for r in planted if r["model"] == m}  # the last line of a seed
        if not rs:
            continue
        rs = [rs[k] for k in sorted(rs)]
        c = np.asarray([r["harrell_c"] for r in rs], float)
        f = np.asarray([r.get("harrell_c_mean_of_folds", np.nan) for r in rs], float)
        u = np.asarray([r["uno_c_mean_of_folds"] for r in rs if r["uno_c_mean_of_folds"]], float)
        by_seed[m] = {r["seed"]: (r["harrell_c"], r.get("harrell_c_mean_of_folds")) for r in rs}
        rec = {
            "bench": "prognostic",
            "summary": "planted",
            "model": m,
            "seeds": [r["seed"] for r in rs],
            "harrell_c_mean": _r(c.mean()),
            "harrell_c_sd": _r(c.std(ddof=1)) if len(c) > 1 else None,
            "harrell_c_mean_of_folds_mean": _r(np.nanmean(f)) if np.isfinite(f).any() else None,
            "harrell_c_ci_by_seed": [r["harrell_c_ci"] for r in rs],
            "uno_c_mean": _r(u.mean()) if len(u) else None,
            "uno_c_sd": _r(u.std(ddof=1)) if len(u) > 1 else None,
        }
        ext = [r["extract_seconds_per_slide"] for r in rs if r.get("extract_seconds_per_slide")]
        if ext:
            rec["extract_seconds_per_slide"] = _r(np.median(ext), 3)
        for key in ("focus", "focus_validation"):
            foc = [r[key] for r in rs if r.get(key)]
            if foc:
                rec[key] = pooled_focus(foc)
        vc = [c for r in rs for c in r.get("validation_harrell_c") or []]
        if vc:
            rec["validation_harrell_c_mean"] = _r(np.mean(vc))
        emit(rec, out)
        lines.append(rec)
    for sm in [x for x in ("sew", *SEW_VARIANTS) if x in by_seed]:
        # Each comparison on the seeds both models have (pooled out-of-fold C; the mean of
        # the folds' C, which does not mix the folds' risk scales, in brackets).
        rec = {"bench": "prognostic", "summary": "targets", "model": sm}
        for m in ("oracle", "clinical", "abmil", "global"):
            seeds = sorted(set(by_seed[sm]) & set(by_seed.get(m, {})))
            if not seeds:
                continue
            sew = np.asarray([by_seed[sm][k] for k in seeds], float)
            other = np.asarray([by_seed[m][k] for k in seeds], float)
            rec[f"vs_{m}"] = {
                "seeds": seeds,
                "sew_c": _r(sew[:, 0].mean()),
                f"{m}_c": _r(other[:, 0].mean()),
                "sew_c_mean_of_folds": _r(sew[:, 1].mean()),
                f"{m}_c_mean_of_folds": _r(other[:, 1].mean()),
            }
            if m == "oracle":
                rec["c_at_least_oracle_minus_0.05"] = bool(
                    sew[:, 0].mean() >= other[:, 0].mean() - 0.05
                )
                rec["c_mean_of_folds_at_least_oracle_minus_0.05"] = bool(
                    sew[:, 1].mean() >= other[:, 1].mean() - 0.05
                )
            else:
                rec[f"ahead_of_{m}"] = bool(sew[:, 0].mean() > other[:, 0].mean())
                rec[f"ahead_of_{m}_mean_of_folds"] = bool(sew[:, 1].mean() > other[:, 1].mean())
        sew = [x for x in lines if x.get("model") == sm and "focus" in x]
        if sew:
            f = sew[0]["focus"]
            rec["focus_on_boundary_at_least_0.8"] = bool((f["focus_on_boundary"] or 0) >= 0.8)
            rec["focus_on_decoy_at_most_0.1"] = bool((f["focus_on_decoy"] or 0) <= 0.1)
        emit(rec, out)
        lines.append(rec)
    rec = risk_focus_choice(lines)
    if rec is not None:
        emit(rec, out)
        lines.append(rec)
    mosaic = [r for r in rows if r["cohort"] == "mosaic"]
    mmeans, mtime = {}, {}
    for m in ("oracle", "clinical", *NETWORK_KINDS):
        rs = {r["seed"]: r for r in mosaic if r["model"] == m}
        if not rs:
            continue
        rs = [rs[k] for k in sorted(rs)]
        c = np.asarray([r["harrell_c"] for r in rs], float)
        u = np.asarray([r["uno_c"] for r in rs if r["uno_c"] is not None], float)
        mmeans[m] = float(c.mean())
        rec = {"bench": "prognostic", "summary": "mosaic", "model": m,
               "seeds": [r["seed"] for r in rs], "harrell_c_mean": _r(c.mean()),
               "harrell_c_sd": _r(c.std(ddof=1)) if len(c) > 1 else None,
               "harrell_c_ci_by_seed": [r["harrell_c_ci"] for r in rs],
               "uno_c_mean": _r(u.mean()) if len(u) else None}  # fmt: skip
        ext = [r["extract_seconds_per_slide"] for r in rs if r.get("extract_seconds_per_slide")]
        if ext:
            mtime[m] = float(np.median(ext))
            rec["extract_seconds_per_slide"] = _r(mtime[m], 3)
        emit(rec, out)
        lines.append(rec)
    if "sew" in mmeans:
        rec = {"bench": "prognostic", "summary": "mosaic_targets",
               "sew_harrell_c": _r(mmeans["sew"]),
               "c_at_least_0.70": bool(mmeans["sew"] >= 0.70)}  # fmt: skip
        if "abmil" in mmeans:
            rec["c_at_least_abmil_minus_0.02"] = bool(mmeans["sew"] >= mmeans["abmil"] - 0.02)
        if "sew" in mtime and "abmil" in mtime:
            rec["abmil_over_sew_extract_time"] = _r(mtime["abmil"] / mtime["sew"], 2)
            rec["at_least_20x_faster"] = bool(mtime["abmil"] / mtime["sew"] >= 20)
        emit(rec, out)
        lines.append(rec)
    for m in NETWORKS:
        null = {r["seed"]: r for r in rows if r["cohort"] == "null" and r["model"] == m}
        if not null:
            continue
        covered = [bool(r["covers_half"]) for r in null.values()]
        rec = {
            "bench": "prognostic",
            "summary": "null",
            "model": m,
            "n_null_seeds": len(covered),
            "covers_half": int(sum(covered)),
            "share_covering": _r(sum(covered) / len(covered)),
            "target_share_at_least_0.95": bool(sum(covered) / len(covered) >= 0.95),
            "harrell_c_by_seed": [null[k]["harrell_c"] for k in sorted(null)],
        }
        # where the focus goes when nothing visible predicts survival (the same slides)
        for key in ("focus", "focus_validation"):
            foc = [r[key] for r in null.values() if r.get(key)]
            if foc:
                rec[key] = pooled_focus(foc)
        emit(rec, out)
        lines.append(rec)
    return lines


# --------------------------------------------------------------------------- main
def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "prognostic_bench")
    p.add_argument("--n-patients", type=int, default=120)
    p.add_argument("--size", default="tiny", help="slide size: tiny, demo, or W,H")
    p.add_argument("--cohort-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--validation", type=float, default=0.2, help="inner early-stopping share")
    p.add_argument("--max-tiles", type=int, default=64, help="tiles cached per slide (ABMIL)")
    p.add_argument("--kinds", nargs="+", default=list(NETWORK_KINDS), choices=NETWORKS)
    p.add_argument("--no-cox", action="store_true", help="skip the clinical and oracle Cox")
    p.add_argument("--null-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    p.add_argument("--null-kinds", nargs="+", default=["sew"], choices=NETWORKS,
                   help="networks trained on the null cohorts")  # fmt: skip
    p.add_argument("--focus-slides", type=int, default=20, help="SEW focus: held-out slides/seed")
    p.add_argument("--val-focus-slides", type=int, default=6,
                   help="SEW focus on inner validation patients: slides per fold")  # fmt: skip
    p.add_argument("--time-slides", type=int, default=3, help="extract timing: slides/kind/seed")
    p.add_argument("--n-boot", type=int, default=500)
    p.add_argument("--parts", nargs="+", default=["planted", "null", "summary"],
                   choices=["planted", "null", "mosaic", "summary"])  # fmt: skip
    p.add_argument("--mosaic-n", type=int, default=60, help="mosaic slides per side")
    p.add_argument("--mosaic-kinds", nargs="+", default=["sew", "abmil"], choices=NETWORK_KINDS)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    import torch

    from workbench.datasets import make_cohort

    args = parse(argv)
    torch.set_num_threads(1)
    logging.getLogger("workbench").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    size = tuple(int(v) for v in args.size.split(",")) if "," in args.size else args.size
    args.out.parent.mkdir(parents=True, exist_ok=True)
    READ_TILES["on"] = "abmil" in {*args.kinds, *args.mosaic_kinds, *args.null_kinds}
    lines: list[dict] = []
    with open(args.out, "a") as out:
        if "planted" in args.parts or "null" in args.parts:
            name = f"planted_{args.size.replace(',', 'x')}_{args.n_patients}_{args.cohort_seed}"
            t0 = time.perf_counter()
            cohort = make_cohort(args.work / name, n_patients=args.n_patients, size=size,
                                 seed=args.cohort_seed, progress=False)  # fmt: skip
            emit({"bench": "prognostic", "event": "cohort", "root": str(cohort.root),
                  "n_patients": len(cohort), "size": args.size,
                  "n_events": int(cohort.truth["event"].sum()),
                  "seconds": _r(time.perf_counter() - t0, 1), "threads": torch.get_num_threads(),
                  "omp_threads": os.environ.get("OMP_NUM_THREADS")}, out)  # fmt: skip
        if "planted" in args.parts:
            lays = layouts(cohort)
            table = cohort.truth.reset_index(drop=True)
            models = ([] if args.no_cox else ["oracle", "clinical"]) + list(args.kinds)
            for seed in args.seeds:
                lines += cross_validate(cohort, table, models, seed, args, lays=lays, out=out)
        if "null" in args.parts:
            for seed in args.null_seeds:
                table = null_table(cohort, seed)
                null_cohort = cohort_with(cohort, table)
                models = ([] if args.no_cox else ["clinical"]) + list(args.null_kinds)
                lines += cross_validate(null_cohort, table, models, seed, args, tag="null",
                                        lays=layouts(cohort), out=out)  # fmt: skip
        if "mosaic" in args.parts:
            lines += mosaic_benchmark(args, out)
    if "summary" in args.parts:
        with open(args.out, "a") as out:
            lines += summary(args.out, out)
    return lines


if __name__ == "__main__":
    main()
