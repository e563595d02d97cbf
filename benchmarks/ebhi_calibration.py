"""Calibrated probabilities of SEW on the real biopsy cohort (EBHI-Seg), chosen without the test
cases; JSON lines.

The cohort, split and encoder are those of ``benchmarks/ebhi_cohort.py`` (whose helpers this
script imports): :func:`workbench.datasets.make_ebhi_cohort`, one slide per case, label
adenocarcinoma or not, ``train`` 76 cases to fit, ``val`` 19 to choose, ``test`` 48 only to
report. SEW (``SlideTrainer(kind="sew", encoder="crc_biopsy")``, focus target ``detail``,
lesion MIL, slide labels only, no validation split, 20 epochs) is trained on ``train`` with
the slide loss's label smoothing ``ε`` (``SlideTrainer(label_smoothing=ε)``; ``ε = 0`` is the
baseline, the recipe of ``ebhi_cohort.py``) for every seed. Each model's slide logits are
computed on ``val`` and ``test`` the way :func:`workbench.tl.extract` computes them (focus
regions chosen among all regions, their crops read from the slides; the first two test slides
of the first model are checked against ``extract``).

What is compared, on the test cases (every choice made on ``val``):

- ``single``: one model per seed; ``raw`` probabilities and ``val_T`` (a temperature fitted on
  the val cases' logits, as ``SlideTrainer(validation=…)`` fits one);
- ``ensemble``: the mean probability of the seeds' models (``raw`` and ``val_T``, the
  temperature fitted on the val cases' ensemble log-odds);
- ``ε``: chosen as the value with the lowest mean val NLL of the single models (raw); the test
  figures of every ``ε`` are written too, each labelled by whether val chose it;
- ``--section cv``: ``SlideTrainer(folds=k)`` on the train + val cases, as ``workbench train
  --folds k`` runs it: the final model on all 95 cases, its temperature from the pooled
  out-of-fold logits (and, as a diagnosis, the temperatures the out-of-fold logits of the train
  cases and of the val cases give apart: the encoder was trained on the train cases' images).

Every figure is computed from each slide's log-odds (stored at full precision in the ``model``
and ``cv`` lines), never from rounded or float32-saturated probabilities.

Figures: AUC with a bootstrap 95 % interval over test cases, balanced accuracy, ECE
(:func:`workbench.tl.expected_calibration_error`, 10 bins), NLL, the temperatures, and the
oracle temperature (fitted on the test cases themselves: never usable, a yardstick).

    python benchmarks/ebhi_calibration.py --workdir /work/main/runs/ebhi_bench            # fits
    python benchmarks/ebhi_calibration.py --workdir … --section cv --smoothing 0          # 95 cases
    python benchmarks/ebhi_calibration.py --workdir … --section summary                   # lines
    python benchmarks/ebhi_calibration.py --section figure    # docs/images/ebhi_calibration.png

Raw lines go to ``benchmarks/results/ebhi_calibration_v2.jsonl`` (``--out``) and stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from ebhi_cohort import (  # noqa: E402
    LABEL,
    cohort_of,
    ece,
    emit,
    samples_for,
    settings_for,
)

SECTION = "calibration_v2"


# ----------------------------------------------------------------------------- log-odds figures
# Everything is computed from each slide's log-odds ``m = z_1 - z_0`` (the logit margin), never
# from rounded or float32-saturated probabilities: a temperature divides ``m``.
def prob(m) -> np.ndarray:
    from scipy.special import expit

    return expit(np.asarray(m, float))


def nll(y, m) -> float:
    """Mean negative log-likelihood of log-odds ``m`` (stable for any margin)."""
    y, m = np.asarray(y, int), np.asarray(m, float)
    return float(np.mean(np.where(y == 1, np.logaddexp(0, -m), np.logaddexp(0, m))))


def figures(y, m) -> dict:
    """AUC, balanced accuracy, ECE and NLL of log-odds ``m``."""
    from workbench.tl import classification_metrics

    m = np.asarray(m, float)
    p = prob(m)
    auc = classification_metrics(np.asarray(y), np.column_stack([-m, m]))["auc"]  # margins
    bacc = classification_metrics(np.asarray(y), np.column_stack([1 - p, p]))["balanced_accuracy"]
    return {"auc": auc, "balanced_accuracy": bacc, "ece": ece(y, p), "nll": nll(y, m)}


def temperature(y, m) -> dict:
    """The temperature :func:`workbench.tl.fit_temperature` fits to these log-odds."""
    from workbench.tl import fit_temperature

    m = np.asarray(m, float)
    fit = fit_temperature(np.column_stack([np.zeros_like(m), m]), np.asarray(y, int))
    return {"temperature": fit.temperature, "status": fit.status}


def ensemble_logodds(M) -> np.ndarray:
    """Log-odds of the mean probability of several models (``(models, slides)`` log-odds),
    computed in log space so that saturated members stay exact."""
    from scipy.special import logsumexp

    M = np.asarray(M, float)
    log_p = logsumexp(-np.logaddexp(0, -M), axis=0)
    log_q = logsumexp(-np.logaddexp(0, M), axis=0)
    return log_p - log_q


def _one(key: str, y, m) -> float:
    """One :func:`figures` key, computed alone (the bootstrap's inner loop)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    if key == "auc":
        return float(roc_auc_score(y, m))
    if key == "balanced_accuracy":
        return float(balanced_accuracy_score(y, (np.asarray(m) > 0).astype(int)))
    return figures(y, m)[key]


def bootstrap(y, M, key: str, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95 % interval of the mean over models of a :func:`figures` key, resampling test
    slides (``M``: ``(models, slides)`` log-odds)."""
    y, M = np.asarray(y), np.atleast_2d(np.asarray(M, float))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(set(y[idx].tolist())) < 2:
            continue
        vals.append(np.mean([_one(key, y[idx], m[idx]) for m in M]))
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def _ece_interval(y, p, n_boot: int = 1000, seed: int = 0) -> list[float]:
    y, p = np.asarray(y), np.asarray(p)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        vals.append(ece(y[idx], p[idx]))
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


# ----------------------------------------------------------------------------- fitting
def _trainer(settings, seed: int, smoothing: float, args, **more):
    """The SEW trainer every section uses (slide labels, the benchmark's focus settings)."""
    from workbench.tl import SlideTrainer

    return SlideTrainer(
        kind="sew",
        label=LABEL,
        encoder=args.encoder,
        epochs=args.epochs,
        seed=seed,
        settings=dict(settings),
        model_kwargs={"focus_target": "detail", "lesion_mil": True},
        label_smoothing=smoothing,
        progress=False,
        **more,
    )


def _fit(samples, settings, seed: int, smoothing: float, args):
    t = time.perf_counter()
    trainer = _trainer(settings, seed, smoothing, args).fit(samples=samples)
    return trainer, time.perf_counter() - t


def _readers(user, samples, settings, encoder) -> list:
    """One crop reader per slide, kept across models: a frozen encoder's embeddings of a
    region are computed once, whichever model chooses it."""
    from workbench.tl._engine import CropReader

    return [
        CropReader(
            user.slide_path(s.name),
            s.node_xy.numpy(),
            settings,
            mpp=user.mpp_of(s.name),
            encoder=encoder,
        )
        for s in samples
    ]


def _logodds(model, samples, readers) -> list[float]:
    from workbench.models import predict_samples

    z = predict_samples(model, samples, crop_sources=readers, return_logits=True)
    return [float(v) for v in z[:, 1] - z[:, 0]]


def _check_extract(model, user, samples, m) -> float:
    """Largest difference between these probabilities and ``tl.extract``'s (first 2 slides)."""
    from workbench.tl import extract

    gaps = []
    for s, q in zip(samples[:2], prob(m[:2]), strict=True):
        ad = extract(user.slide_path(s.name), model, slide_id=s.name)
        gaps.append(abs(float(ad.uns["explain"]["probabilities"][1]) - q))
    return float(max(gaps))


def _done(out: Path) -> set:
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if r.get("section") == SECTION and r.get("kind") == "model":
                done.add((r["encoder"], r["epochs"], r["seed"], r["label_smoothing"]))
    return done


def run_fits(args) -> None:
    """Train and predict every (seed, ε) not yet in ``--out``; one line each."""
    import torch

    from workbench.models import load_encoder

    out = Path(args.out)
    done = _done(out)
    todo = [
        (seed, eps)
        for eps in args.smoothing
        for seed in args.seeds
        if (args.encoder, args.epochs, seed, eps) not in done
    ]
    if not todo:
        return
    truth, user = cohort_of(args)
    settings = settings_for(user, args.encoder)
    ids = {part: truth.split_ids(part) for part in ("train", "val", "test")}
    samples = {part: samples_for(user, ids[part], part, False, settings, args) for part in ids}
    encoder = load_encoder(args.encoder)
    readers = {part: _readers(user, samples[part], settings, encoder) for part in ("val", "test")}
    y = {part: [int(s.label) for s in samples[part]] for part in ("val", "test")}
    checked = False
    for seed, eps in todo:
        torch.manual_seed(seed)
        trainer, t_train = _fit(samples["train"], settings, seed, eps, args)
        t = time.perf_counter()
        m = {part: _logodds(trainer.model_, samples[part], readers[part]) for part in readers}
        row = {
            "section": SECTION,
            "kind": "model",
            "encoder": args.encoder,
            "epochs": args.epochs,
            "seed": seed,
            "label_smoothing": eps,
            "train_seconds": t_train,
            "predict_seconds": time.perf_counter() - t,
            "n_train": len(samples["train"]),
            "val_ids": [s.name for s in samples["val"]],
            "val_labels": y["val"],
            "val_logodds": m["val"],
            "test_ids": [s.name for s in samples["test"]],
            "test_labels": y["test"],
            "test_logodds": m["test"],
            "test_probabilities": [round(float(v), 4) for v in prob(m["test"])],
        }
        if not checked:
            row["extract_max_gap_2_test_slides"] = _check_extract(
                trainer.model_, user, samples["test"], m["test"]
            )
            checked = True
        emit(row, out)


def run_cv(args) -> None:
    """``SlideTrainer(folds=k)`` on the train + val cases (95) as a user runs ``workbench train
    --folds k``: the final model is fit on all of them and its temperature on the pooled
    out-of-fold logits. Also the temperatures the out-of-fold logits of the train cases alone
    and of the val cases alone would give (the encoder was trained on the train cases' images,
    not the val cases'). One line per (seed, ε) with the test log-odds of the final model."""
    import torch

    from workbench.models import load_encoder

    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if r.get("section") == SECTION and r.get("kind") == "cv":
                done.add((r["encoder"], r["epochs"], r["folds"], r["seed"], r["label_smoothing"]))
    todo = [
        (seed, eps)
        for eps in args.smoothing
        for seed in args.seeds
        if (args.encoder, args.epochs, args.folds, seed, eps) not in done
    ]
    if not todo:
        return
    truth, user = cohort_of(args)
    settings = settings_for(user, args.encoder)
    ids = {part: truth.split_ids(part) for part in ("train", "val", "test")}
    test = samples_for(user, ids["test"], "test", False, settings, args)
    encoder = load_encoder(args.encoder)
    readers = _readers(user, test, settings, encoder)
    for seed, eps in todo:
        torch.manual_seed(seed)
        t = time.perf_counter()
        trainer = _trainer(settings, seed, eps, args, folds=args.folds, use_annotations=False).fit(
            user, slide_ids=ids["train"] + ids["val"]
        )
        t_fit = time.perf_counter() - t
        oof = trainer._oof_logits.assign(slide=trainer.oof_["slide"].to_numpy())
        oof_m = (oof["raw_logit_1"] - oof["raw_logit_0"]).to_numpy()
        is_val = oof["slide"].isin(ids["val"]).to_numpy()
        yo = oof["y"].to_numpy()
        row = {
            "section": SECTION,
            "kind": "cv",
            "encoder": args.encoder,
            "epochs": args.epochs,
            "folds": args.folds,
            "seed": seed,
            "label_smoothing": eps,
            "fit_seconds": t_fit,
            "n_cases": len(ids["train"]) + len(ids["val"]),
            "final_model": trainer.final_model_,
            "temperature_oof": trainer.calibration_["temperature"],
            "temperature_oof_status": trainer.calibration_["status"],
            "temperature_oof_train_cases": temperature(yo[~is_val], oof_m[~is_val])["temperature"],
            "temperature_oof_val_cases": temperature(yo[is_val], oof_m[is_val])["temperature"],
            "oof_auc_train_cases": figures(yo[~is_val], oof_m[~is_val])["auc"],
            "oof_auc_val_cases": figures(yo[is_val], oof_m[is_val])["auc"],
            "cv_summary": {k: v for k, v in trainer.cv_summary_.items() if k != "auc_by_repeat"},
            "fold_temperatures": trainer.cv_["temperature"].tolist(),
            "fold_epochs": trainer.cv_["epochs"].tolist(),
            "test_labels": [int(x.label) for x in test],
            "test_logodds": _logodds(trainer.model_, test, readers),
        }
        emit(row, out)


def run_encoder_probe(args) -> None:
    """Is the encoder more sure of the cases it was trained on? Its own 5-class head on the
    cached candidate crops' embeddings (8 per slide, those SEW trains on): per split the mean
    top-class probability of a crop, and the case-level AUC of the largest adenocarcinoma
    probability among a slide's crops."""
    import torch
    from sklearn.metrics import roc_auc_score

    from workbench.models import load_encoder

    truth, user = cohort_of(args)
    settings = settings_for(user, args.encoder)
    net = next(m for m in load_encoder(args.encoder).modules() if hasattr(m, "head"))
    row = {"section": SECTION, "kind": "encoder_probe", "encoder": args.encoder}
    for part in ("train", "val", "test"):
        samples = samples_for(user, truth.split_ids(part), part, False, settings, args)
        top, adeno, y = [], [], []
        for s in samples:
            with torch.no_grad():
                p = torch.softmax(net.head(s.crop_embeddings.float()), -1)
            top.append(float(p.max(1).values.mean()))
            adeno.append(float(p[:, 0].max()))  # class 0: adenocarcinoma
            y.append(int(s.label))
        row[part] = {
            "n_cases": len(samples),
            "crop_top_probability_mean": float(np.mean(top)),
            "case_auc_max_adenocarcinoma_crop": float(roc_auc_score(y, adeno)),
        }
    emit(row, Path(args.out))


# ----------------------------------------------------------------------------- summary
def _models(out: Path, args) -> dict:
    rows = {}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        if (r.get("section") == SECTION and r.get("kind") == "model"
                and r["encoder"] == args.encoder and r["epochs"] == args.epochs
                and r["seed"] in args.seeds):  # fmt: skip
            rows[(r["label_smoothing"], r["seed"])] = r
    return rows


def _evaluate(yv, mv, yt, mt) -> dict:
    """Test figures of raw and val-temperature log-odds (one model or an ensemble)."""
    tv = temperature(yv, mv)
    cal = np.asarray(mt, float) / tv["temperature"]
    oracle = temperature(yt, mt)
    return {
        "val": figures(yv, mv),
        "val_temperature": tv["temperature"],
        "val_temperature_status": tv["status"],
        "test_raw": figures(yt, mt),
        "test_val_T": figures(yt, cal),
        "oracle_test_temperature": oracle["temperature"],
        "oracle_test_ece": ece(yt, prob(np.asarray(mt, float) / oracle["temperature"])),
        "test_logodds_val_T": cal,
    }


def summarise(args) -> list[dict]:
    """One line per (ε, single/ensemble), the ε val chose marked, then the cross-validation
    lines; emitted and returned."""
    out = Path(args.out)
    rows = _models(out, args)
    val_nll = {}
    for eps in sorted({e for e, _ in rows}):
        rs = [rows[(eps, s)] for s in args.seeds if (eps, s) in rows]
        if len(rs) == len(args.seeds):
            val_nll[eps] = float(np.mean([nll(r["val_labels"], r["val_logodds"]) for r in rs]))
    chosen = min(val_nll, key=val_nll.get) if val_nll else None
    lines = []
    for eps in sorted(val_nll):
        rs = [rows[(eps, s)] for s in args.seeds]
        yv, yt = np.asarray(rs[0]["val_labels"]), np.asarray(rs[0]["test_labels"])
        single = [_evaluate(yv, r["val_logodds"], yt, r["test_logodds"]) for r in rs]
        M_raw = np.array([r["test_logodds"] for r in rs])
        M_cal = np.array([s["test_logodds_val_T"] for s in single])
        base = {
            "section": "calibration_v2_summary",
            "encoder": args.encoder,
            "epochs": args.epochs,
            "seeds": list(args.seeds),
            "label_smoothing": eps,
            "val_chose_this_smoothing": eps == chosen,
            "choice_rule": "lowest mean val NLL (raw probabilities) over label_smoothing "
            f"{sorted(val_nll)}",
            "val_nll_mean": val_nll[eps],
            "n_val": int(len(yv)),
            "n_test": int(len(yt)),
            "n_test_positive": int(yt.sum()),
        }

        def mean(key, part, items):
            return float(np.mean([s[part][key] for s in items]))

        lines.append(
            {
                **base,
                "what": "single models (one per seed)",
                "auc_mean": mean("auc", "test_raw", single),
                "auc_per_seed": [s["test_raw"]["auc"] for s in single],
                "auc_ci95": bootstrap(yt, M_raw, "auc", args.n_boot),
                "balanced_accuracy_raw_mean": mean("balanced_accuracy", "test_raw", single),
                "balanced_accuracy_val_T_mean": mean("balanced_accuracy", "test_val_T", single),
                "balanced_accuracy_val_T_ci95": bootstrap(
                    yt, M_cal, "balanced_accuracy", args.n_boot
                ),
                "ece_raw_mean": mean("ece", "test_raw", single),
                "ece_val_T_mean": mean("ece", "test_val_T", single),
                "ece_val_T_per_seed": [s["test_val_T"]["ece"] for s in single],
                "nll_raw_mean": mean("nll", "test_raw", single),
                "nll_val_T_mean": mean("nll", "test_val_T", single),
                "val_temperatures": [s["val_temperature"] for s in single],
                "val_temperature_status": [s["val_temperature_status"] for s in single],
                "oracle_test_temperatures": [s["oracle_test_temperature"] for s in single],
                "oracle_test_ece_mean": float(np.mean([s["oracle_test_ece"] for s in single])),
                "val_auc_mean": mean("auc", "val", single),
                "val_ece_raw_mean": mean("ece", "val", single),
            }
        )
        m_ens = ensemble_logodds(M_raw)
        ens = _evaluate(yv, ensemble_logodds([r["val_logodds"] for r in rs]), yt, m_ens)
        lines.append(
            {
                **base,
                "what": f"ensemble: mean probability of the {len(rs)} seeds' models",
                "auc": ens["test_raw"]["auc"],
                "auc_ci95": bootstrap(yt, m_ens, "auc", args.n_boot),
                "balanced_accuracy_raw": ens["test_raw"]["balanced_accuracy"],
                "balanced_accuracy_val_T": ens["test_val_T"]["balanced_accuracy"],
                "ece_raw": ens["test_raw"]["ece"],
                "ece_val_T": ens["test_val_T"]["ece"],
                "ece_val_T_ci95": _ece_interval(yt, prob(ens["test_logodds_val_T"]), args.n_boot),
                "nll_raw": ens["test_raw"]["nll"],
                "nll_val_T": ens["test_val_T"]["nll"],
                "val_temperature": ens["val_temperature"],
                "val_temperature_status": ens["val_temperature_status"],
                "oracle_test_temperature": ens["oracle_test_temperature"],
                "oracle_test_ece": ens["oracle_test_ece"],
                "val_auc": ens["val"]["auc"],
                "val_nll_ensemble": ens["val"]["nll"],
            }
        )
    lines.extend(_cv_summary(out, args))
    for line in lines:
        emit(line, out)
    return lines


def _cv_rows(out: Path, args) -> list[dict]:
    rows = {}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        if (r.get("section") == SECTION and r.get("kind") == "cv"
                and r["encoder"] == args.encoder and r["epochs"] == args.epochs
                and r["seed"] in args.seeds):  # fmt: skip
            rows[(r["label_smoothing"], r["folds"], r["seed"])] = r
    return [rows[k] for k in sorted(rows)]


def _cv_summary(out: Path, args) -> list[dict]:
    """Per (ε, folds): the final model of ``SlideTrainer(folds=k)`` on train + val with its
    out-of-fold temperature, on the test cases (and with the temperature the val cases'
    out-of-fold logits alone give)."""
    groups: dict = {}
    for r in _cv_rows(out, args):
        groups.setdefault((r["label_smoothing"], r["folds"]), []).append(r)
    lines = []
    for (eps, k), rs in sorted(groups.items()):
        yt = np.asarray(rs[0]["test_labels"])
        M = np.array([r["test_logodds"] for r in rs])
        per = [
            {
                "raw": figures(yt, m),
                "oof_T": figures(yt, m / r["temperature_oof"]),
                "oof_val_cases_T": figures(yt, m / r["temperature_oof_val_cases"]),
                "oracle": temperature(yt, m)["temperature"],
            }
            for r, m in zip(rs, M, strict=True)
        ]

        def mean(part, key, per=per):
            return float(np.mean([p[part][key] for p in per]))

        lines.append(
            {
                "section": "calibration_v2_summary",
                "encoder": args.encoder,
                "epochs": args.epochs,
                "what": f"SlideTrainer(folds={k}) on train + val ({rs[0]['n_cases']} cases): "
                "final model on all, temperature from the pooled out-of-fold logits",
                "label_smoothing": eps,
                "seeds": [r["seed"] for r in rs],
                "auc_mean": mean("raw", "auc"),
                "auc_per_seed": [p["raw"]["auc"] for p in per],
                "auc_ci95": bootstrap(yt, M, "auc", args.n_boot),
                "balanced_accuracy_oof_T_mean": mean("oof_T", "balanced_accuracy"),
                "ece_raw_mean": mean("raw", "ece"),
                "ece_oof_T_mean": mean("oof_T", "ece"),
                "ece_oof_T_per_seed": [p["oof_T"]["ece"] for p in per],
                "nll_raw_mean": mean("raw", "nll"),
                "nll_oof_T_mean": mean("oof_T", "nll"),
                "temperatures_oof": [r["temperature_oof"] for r in rs],
                "temperatures_oof_train_cases": [r["temperature_oof_train_cases"] for r in rs],
                "temperatures_oof_val_cases": [r["temperature_oof_val_cases"] for r in rs],
                "ece_oof_val_cases_T_mean": mean("oof_val_cases_T", "ece"),
                "oof_auc_train_cases": [r["oof_auc_train_cases"] for r in rs],
                "oof_auc_val_cases": [r["oof_auc_val_cases"] for r in rs],
                "pooled_oof_auc": [r["cv_summary"]["auc"] for r in rs],
                "final_epochs": [r["final_model"]["epochs"] for r in rs],
                "oracle_test_temperatures": [p["oracle"] for p in per],
            }
        )
        if len(rs) > 1:  # the seeds' final models, each calibrated by its own T, averaged
            m_ens = ensemble_logodds([m / r["temperature_oof"] for r, m in zip(rs, M, strict=True)])
            f = figures(yt, m_ens)
            lines.append(
                {
                    **{
                        k: lines[-1][k]
                        for k in ("section", "encoder", "epochs", "label_smoothing", "seeds")
                    },
                    "what": f"ensemble: mean probability of the {len(rs)} seeds' SlideTrainer("
                    f"folds={k}) final models, each divided by its own out-of-fold temperature",
                    "auc": f["auc"],
                    "auc_ci95": bootstrap(yt, m_ens, "auc", args.n_boot),
                    "balanced_accuracy": f["balanced_accuracy"],
                    "ece": f["ece"],
                    "ece_ci95": _ece_interval(yt, prob(m_ens), args.n_boot),
                    "nll": f["nll"],
                    "oracle_test_temperature": temperature(yt, m_ens)["temperature"],
                }
            )
    return lines


# ----------------------------------------------------------------------------- figure
def plot_figure(args) -> Path:
    """Reliability diagrams on the test cases: single models (seeds pooled) and the seed
    ensemble, raw and with the temperature chosen without the test cases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from workbench.tl._calibration import reliability_table

    out = Path(args.out)
    rows = _models(out, args)
    summary = [json.loads(x) for x in out.read_text().splitlines()
               if '"calibration_v2_summary"' in x]  # fmt: skip
    chosen = next((x["label_smoothing"] for x in summary if x.get("val_chose_this_smoothing")), 0.0)

    def pairs(eps):
        rs = [rows[(eps, s)] for s in args.seeds if (eps, s) in rows]
        return rs, np.asarray(rs[0]["val_labels"]), np.asarray(rs[0]["test_labels"])

    single, ensemble = [], []
    for eps in sorted({0.0, chosen}):
        rs, yv, yt = pairs(eps)
        for calibrate in (False, True):
            ms = []
            for r in rs:
                t = temperature(yv, r["val_logodds"])["temperature"] if calibrate else 1.0
                ms.append(np.asarray(r["test_logodds"]) / t)
            name = f"ε={eps:g} {'T from val' if calibrate else 'raw'}"
            single.append((name, np.tile(yt, len(ms)), prob(np.concatenate(ms))))
            mv = ensemble_logodds([r["val_logodds"] for r in rs])
            mt = ensemble_logodds([r["test_logodds"] for r in rs])
            t = temperature(yv, mv)["temperature"] if calibrate else 1.0
            ensemble.append((name, yt, prob(mt / t)))
    cv = [r for r in _cv_rows(out, args) if r["label_smoothing"] == 0.0]
    if cv:
        yt = np.asarray(cv[0]["test_labels"])
        ms = [np.asarray(r["test_logodds"]) / r["temperature_oof"] for r in cv]
        single.append(("5-fold CV on train+val, T out-of-fold", np.tile(yt, len(ms)),
                       prob(np.concatenate(ms))))  # fmt: skip
        if len(ms) > 1:
            ensemble.append(("5-fold CV models, own T out-of-fold", yt,
                             prob(ensemble_logodds(ms))))  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.6), sharey=True)
    titles = ("single models, seeds pooled", f"ensemble of {len(args.seeds)} seeds")
    for ax, curves, title in zip(axes, (single, ensemble), titles, strict=True):
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        for name, y, p in curves:
            tab = reliability_table(y, p)
            ax.plot(tab["confidence"], tab["frequency"], "-" if "raw" not in name else ":",
                    marker="o", ms=3, label=f"{name}: ECE {ece(y, p):.3f}")  # fmt: skip
        ax.set_title(f"{title} — 48 test cases", fontsize=10)
        ax.set_xlabel("predicted probability of adenocarcinoma")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("observed share of adenocarcinoma cases")
    fig.suptitle(f"SEW + crc_biopsy, EBHI-Seg: calibration chosen on val (val chose ε = {chosen:g})",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    path = ROOT / "docs" / "images" / "ebhi_calibration.png"
    fig.savefig(path, dpi=90)
    print(json.dumps({"figure": str(path)}))
    return path


def main(argv=None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--section", choices=("fit", "cv", "encoder", "summary", "figure"), default="fit"
    )
    p.add_argument("--folds", type=int, default=5, help="cv: folds over the train + val cases")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--workdir", default=str(ROOT / "runs" / "ebhi_bench"))
    p.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "ebhi_calibration_v2.jsonl")
    )
    p.add_argument("--encoder", default="crc_biopsy", choices=("texture", "builtin", "crc_biopsy"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--smoothing", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3],
                   help="label smoothing values to fit (0 = the baseline)")  # fmt: skip
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--n-candidates", type=int, default=8,
                   help="magnified crops cached per slide (as ebhi_cohort.py)")  # fmt: skip
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sections = {"fit": run_fits, "cv": run_cv, "encoder": run_encoder_probe,
                "summary": summarise, "figure": plot_figure}  # fmt: skip
    sections[args.section](args)


if __name__ == "__main__":
    sys.exit(main())
