"""Cross-validation of survival models: folds by patient, Uno's C, out-of-fold risks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_train_survival import _planted, _trainer  # tests/tl is on sys.path

from workbench import OptionError, SplitWarning
from workbench.tl import SlideTrainer, concordance_index, uno_concordance
from workbench.tl._cv import (
    censoring_survival,
    pooled_survival_summary,
    survival_fold_figures,
    uno_tau,
)

torch.set_num_threads(1)


def _uno_reference(time, event, risk, train_time, train_event, tau):
    """scikit-survival's documented concordance_index_ipcw, in plain loops: the censoring
    Kaplan-Meier of the training data, weight G(T_i)^-2 for an event i with T_i < tau, pairs
    T_i < T_j (or equal times with j censored), ties in risk counted 1/2."""
    times = sorted(set(t for t, e in zip(train_time, train_event, strict=True) if e == 0))

    def g(t):
        s = 1.0
        for u in times:
            if u > t:
                break
            n = sum(1 for x in train_time if x >= u)
            d = sum(1 for x, e in zip(train_time, train_event, strict=True) if x == u and e == 0)
            s *= 1 - d / n
        return s

    num = den = 0.0
    for i in range(len(time)):
        if not event[i] or time[i] >= tau:
            continue
        w = 1.0 / g(time[i]) ** 2
        for j in range(len(time)):
            if time[i] < time[j] or (time[i] == time[j] and not event[j]):
                den += w
                num += w * (1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0)
    return num / den


def test_uno_c_matches_the_reference_and_a_hand_computed_table():
    # by hand: training censorings at 2 (4 at risk) and 4 (2 at risk): G(1) = 1,
    # G(3) = 3/4, G(5) = 3/8 -> tau = largest test time <= 6 with G > 0 = 5.5
    tr_t, tr_e = [1.0, 2.0, 3.0, 4.0, 6.0], [1, 0, 1, 0, 1]
    assert censoring_survival(tr_t, tr_e, [1.0, 3.0, 5.0]).tolist() == pytest.approx(
        [1.0, 0.75, 0.375]
    )
    t, e, r = [1.0, 3.0, 5.0, 5.5], [1, 1, 1, 0], [3.0, 1.0, 2.0, 0.0]
    assert uno_tau(t, tr_t, tr_e) == 5.5
    # events: 1 (w 1) vs 3, 5, 5.5: 3 concordant; 3 (w G(3)^-2) vs 5, 5.5: risk 1 < 2 (no),
    # 1 > 0 (yes); 5 (w G(5)^-2) vs 5.5: 2 > 0 (yes)
    w1, w3, w5 = 1.0, 1 / 0.75**2, 1 / 0.375**2
    hand = (3 * w1 + 1 * w3 + 1 * w5) / (3 * w1 + 2 * w3 + 1 * w5)
    assert uno_concordance(t, e, r, tr_t, tr_e) == pytest.approx(hand)
    assert _uno_reference(t, e, r, tr_t, tr_e, 5.5) == pytest.approx(hand)
    # a random table with ties in time and in risk
    rng = np.random.default_rng(3)
    for _ in range(5):
        tr_t = rng.integers(1, 20, 40).astype(float)
        tr_e = (rng.uniform(size=40) < 0.6).astype(int)
        t = rng.integers(1, 22, 25).astype(float)
        e = (rng.uniform(size=25) < 0.6).astype(int)
        r = rng.integers(0, 5, 25).astype(float)
        tau = uno_tau(t, tr_t, tr_e)
        assert tau <= tr_t.max()
        ref = _uno_reference(t, e, r, tr_t, tr_e, tau)
        assert uno_concordance(t, e, r, tr_t, tr_e) == pytest.approx(ref)
        assert uno_concordance(t, e, r, tr_t, tr_e, tau=12.0) == pytest.approx(
            _uno_reference(t, e, r, tr_t, tr_e, 12.0)
        )
    # without censoring in the training part Uno's C (tau beyond every time) is Harrell's C
    t = rng.permutation(np.arange(1.0, 31.0))
    e = (rng.uniform(size=30) < 0.7).astype(int)
    r = rng.normal(size=30) - 0.05 * t
    u = uno_concordance(t, e, r, np.arange(1.0, 40.0), np.ones(39), tau=np.inf)
    assert u == pytest.approx(concordance_index(t, r, e))
    # orientation: higher risk = shorter survival
    assert uno_concordance(t, e, -t, t, e) == pytest.approx(1.0)


def test_bootstrap_figures_agree_with_the_point_estimates():
    rng = np.random.default_rng(0)
    t = rng.exponential(size=40)
    e = (rng.uniform(size=40) < 0.7).astype(int)
    r = -t + rng.normal(scale=0.5, size=40)
    f = survival_fold_figures(t, e, r, t, e, n_boot=200)
    assert f["harrell_c"] == pytest.approx(concordance_index(t, r, e))
    for key in ("harrell_c", "uno_c"):
        lo, hi = f[f"{key}_ci"]
        assert lo < f[key] < hi
    pats = [f"p{i}" for i in range(40)] * 2
    s = pooled_survival_summary(np.r_[t, t], np.r_[e, e], np.r_[r, r], pats, [1] * 40 + [2] * 40)
    assert s["harrell_c"] == pytest.approx(concordance_index(t, r, e))
    assert s["harrell_c_ci"][0] < s["harrell_c"] < s["harrell_c_ci"][1]


def _several_slides(samples, time, event, per=2):
    """Group consecutive slides into patients (the second slide copies the first's survival)."""
    patients = [f"P{i // per}" for i in range(len(samples))]
    time = np.asarray([time[i - i % per] for i in range(len(samples))])
    event = np.asarray([event[i - i % per] for i in range(len(samples))])
    for s, p in zip(samples, patients, strict=True):
        s.name = f"{p}-{s.name}"
    return samples, time, event


def test_survival_cross_validation_folds_oof_and_record(tmp_path, monkeypatch):
    samples, time, event, _ = _planted(n=48, seed=2)
    seen = []
    original = SlideTrainer._train_survival

    def spy(self, train, patients, *a, held, **kw):
        seen.append(({s.name for s in train}, {s.name for s in held}, kw.get("epochs")))
        return original(self, train, patients, *a, held=held, **kw)

    monkeypatch.setattr(SlideTrainer, "_train_survival", spy)
    tr = _trainer(folds=3, repeats=2, epochs=6, patience=2, n_boot=100).fit(
        samples=samples, survival=(time, event)
    )
    cv = tr.cv_
    assert len(cv) == 6 and len(seen) == 7  # 6 folds, then the final model
    for row, (train, held, _) in zip(cv.to_dict("records"), seen, strict=False):
        test = set(row["test_slides"].split(";"))
        assert held and not held & test and not train & test and not train & held
        assert held == set(row["inner_validation_slides"].split(";"))
        assert 0 <= row["uno_c"] <= 1 and row["harrell_c_ci"][0] <= row["harrell_c_ci"][1]
        assert row["n_test_events"] >= 1
    # the final model: every slide, the median early-stopped epochs, no early stopping
    train, held, epochs = seen[-1]
    assert len(train) == 48 and not held
    assert epochs == tr.final_model_["epochs"] == int(np.median(cv["epochs"]))
    assert tr.final_model_["fit_on"] == "all patients"
    oof = tr.oof_
    assert list(oof.columns) == ["patient", "fold", "repeat", "time", "event", "risk", "train_cut"]
    # one cut per fold model (the median risk of the patients it was fit on), not one for all
    cuts = oof.groupby(["repeat", "fold"])["train_cut"]
    assert (cuts.nunique() == 1).all() and oof["train_cut"].nunique() == 6
    assert np.isfinite(oof["train_cut"]).all()
    for r in (1, 2):  # every patient predicted once per repeat
        assert sorted(oof.loc[oof["repeat"] == r, "patient"]) == sorted(s.name for s in samples)
    assert np.isfinite(oof["risk"]).all()
    s = tr.cv_summary_
    assert s["harrell_c"] > 0.6 and s["harrell_c_ci"][0] < s["harrell_c"] < s["harrell_c_ci"][1]
    folder = tr.save(tmp_path / "m")
    extra = json.loads((folder / "config.json").read_text())["extra"]
    assert extra["oof_predictions"] == "oof_predictions.csv" and len(extra["cv"]) == 6
    assert extra["cv_summary"]["harrell_c"] == pytest.approx(s["harrell_c"])
    back = pd.read_csv(folder / "oof_predictions.csv")
    assert len(back) == 96 and back["risk"].to_numpy() == pytest.approx(oof["risk"].to_numpy())


def test_folds_keep_a_patients_slides_together():
    samples, time, event, _ = _planted(n=36, seed=4)
    samples, time, event = _several_slides(samples, time, event)
    tr = _trainer(folds=3, epochs=3, patience=2, n_boot=0)
    # prepared samples are one patient each (the CLI test below trains two slides of one
    # patient through a cohort): here the split itself, on the patients
    from workbench.tl._cv import make_folds

    patients = [s.name.split("-")[0] for s in samples]
    for f_tr, f_te in make_folds(event, patients, 3, 0, warn=False):
        assert not {patients[i] for i in f_tr} & {patients[i] for i in f_te}
    tr.fit(samples=samples, survival=(time, event))
    for row in tr.cv_.to_dict("records"):
        test = row["test_slides"].split(";")
        assert len(test) == row["n_test"]
        assert set(tr.oof_.loc[tr.oof_["fold"] == row["fold"], "patient"]) == set(test)


def test_a_fold_without_events_is_refused():
    samples, time, event, _ = _planted(n=12, seed=5)
    event = np.zeros(12, dtype=int)
    event[0] = 1  # one patient with an event: some fold's training part has none
    with pytest.raises(OptionError, match="every class needs at least 2 patients.*'event': 1"):
        _trainer(folds=3).fit(samples=samples, survival=(time, event))


def test_a_fold_whose_training_part_lacks_events_is_refused(monkeypatch):
    import workbench.tl._train as train_module

    samples, time, event, _ = _planted(n=12, seed=5)
    event = np.zeros(12, dtype=int)
    event[[0, 1]] = 1
    every = np.arange(12)
    # a split that puts both event patients in the test part of fold 1
    folds = [(every[2:], every[:2]), (every[[0, 1, *range(6, 12)]], every[2:6])]
    monkeypatch.setattr(train_module, "make_folds", lambda *a, **k: folds)
    with pytest.raises(OptionError, match=r"fold 1/2: its training part holds 10 patient\(s\) "
                       r"with 0 event\(s\)"):  # fmt: skip
        _trainer(folds=2).fit(samples=samples, survival=(time, event))


def test_survival_refit_needs_a_validation_split():
    """refit follows the early-stopped fit on a validation split, as for a class target."""
    with pytest.raises(ValueError, match="give validation"):
        _trainer(refit=True)
    assert _trainer(refit=True, validation=0.25).refit  # accepted with one


def test_cli_survival_folds_on_the_tiny_cohort(tiny_cohort, tmp_path, capsys):
    """Two slides of one patient stay in one fold; three folds stratified by event."""
    from workbench.cli import main

    root = tiny_cohort.root
    table = pd.read_csv(root / "clinical.csv")
    first = table.iloc[0]
    table.loc[1, ["patient_id", "time", "event"]] = [first["patient_id"], first["time"], 1]
    table.loc[3, "event"] = 0  # 5 patients: 3 with an event, 2 censored
    clinical = tmp_path / "clinical.csv"
    table.to_csv(clinical, index=False)
    out_dir = tmp_path / "m"
    args = ["train", str(root / "slides"), "--clinical", str(clinical), "--out", str(out_dir),
            "--kind", "global", "--epochs", "2", "--set", "n_segments=60", "--no-progress",
            "--survival", "time,event", "--folds", "3"]  # fmt: skip
    with pytest.warns(SplitWarning, match="too few for an inner validation split"):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "pooled out-of-fold Harrell's C" in out and out.count("  fold ") == 3
    assert "Uno's C" in out and "oof_predictions.csv" in out
    extra = json.loads((out_dir / "config.json").read_text())["extra"]
    assert extra["final_model"]["fit_on"] == "all patients" and len(extra["cv"]) == 3
    oof = pd.read_csv(out_dir / "oof_predictions.csv")
    assert sorted(oof["patient"]) == sorted(set(table["patient_id"]))  # one risk per patient
    for row in extra["cv"]:  # the patient's two slides sit in one test fold together
        test = row["test_slides"].split(";")
        assert ("S000" in test) == ("S001" in test)
    assert main([*args, "--refit"]) == 2  # refit follows a validation split, as for a label
    assert "--refit refits on all patients after --validation" in capsys.readouterr().err
