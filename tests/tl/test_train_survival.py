"""tl.SlideTrainer(target="survival"): Cox training, its orientation, and the risk it writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import ClinicalTableError
from workbench.models import RiskSetMemory, SlideSample
from workbench.tl import SlideTrainer, concordance_index
from workbench.tl._train import patient_risks, survival_columns

torch.set_num_threads(1)
SMALL = {"hidden": 8, "detail_width": 4, "embed_dim": 8, "top_k": 2}


def _planted(n=48, seed=0, n_nodes=12, crop=16, n_tiles=0):
    """Slides whose region features carry a planted hazard: risk z = mean of feature 0 over
    the slide's regions; time ~ Exponential(rate exp(1.5 z)); a quarter censored early.
    With ``n_tiles`` every slide also gets tiles whose red channel shows the same shift
    (for the tile ABMIL)."""
    rng = np.random.default_rng(seed)
    samples, z = [], []
    chain = torch.tensor([[i, i + 1] for i in range(n_nodes - 1)]).T
    edge_index = torch.cat([chain, chain.flip(0)], 1)
    for i in range(n):
        shift = rng.normal()
        feats = rng.normal(size=(n_nodes, 6)).astype(np.float32)
        feats[:, 0] += shift
        crops = rng.integers(0, 255, size=(4, 3, crop, crop), dtype=np.uint8)
        crops[:, 0] = np.clip(128 + 60 * shift, 0, 255)  # the magnified view sees it too
        tiles = None
        if n_tiles:
            t = rng.integers(0, 255, size=(n_tiles, 3, crop, crop), dtype=np.uint8)
            t[:, 0] = np.clip(128 + 60 * shift, 0, 255)  # the tiles show it too
            tiles = torch.from_numpy(t)
        samples.append(
            SlideSample(
                features=torch.from_numpy(feats),
                edge_index=edge_index,
                label=0,
                crops=torch.from_numpy(crops),
                crop_nodes=torch.tensor([0, 3, 6, 9]),
                tiles=tiles,
                name=f"S{i}",
            )
        )
        z.append(feats[:, 0].mean())
    z = np.asarray(z)
    time = rng.exponential(1.0 / np.exp(1.5 * z))
    censor = rng.uniform(size=n) < 0.25
    time = np.where(censor, time * rng.uniform(0.3, 1.0, size=n), time)
    event = (~censor).astype(int)
    return samples, time, event, z


def _trainer(**kw):
    base = {"kind": "global", "target": "survival", "epochs": 8, "lr": 1e-2,
            "progress": False, "model_kwargs": {"hidden": 8}}  # fmt: skip
    base.update(kw)
    return SlideTrainer(**base)


@pytest.mark.parametrize("kind", ["global", "abmil", pytest.param("sew", marks=pytest.mark.slow)])
def test_survival_orientation_higher_risk_shorter_survival(kind):
    """The pinned orientation: the stored risk grows with the hazard, so lifelines'
    concordance_index(time, -risk, event) (it wants a score that grows with survival) is
    well above 0.5 on held-out slides of a planted-hazard table, near the oracle's. For the
    tile ABMIL-Cox the hazard is visible in the red channel of each slide's tiles."""
    from lifelines.utils import concordance_index as lifelines_c

    samples, time, event, z = _planted(n=80, n_tiles=8 if kind == "abmil" else 0)
    kw = {"model_kwargs": SMALL} if kind == "sew" else {}
    if kind == "abmil":
        kw = {"model_kwargs": {"detail_width": 4, "embed_dim": 8, "attn_dim": 8},
              "augment": False}  # fmt: skip
    tr = _trainer(kind=kind, **kw).fit(samples=samples[:56], survival=(time[:56], event[:56]))
    assert tr.model_.predicts_risk and tr.model_.config["n_classes"] == 1
    test, t, e = samples[56:], time[56:], event[56:]
    with torch.no_grad():
        risk = np.asarray([float(tr.model_.predict_logits(s, device=torch.device("cpu"))[0])
                           for s in test])  # fmt: skip
    c = lifelines_c(t, -risk, e)
    oracle = lifelines_c(t, -z[56:], e)
    assert c > 0.65 and c > oracle - 0.1, (c, oracle)
    assert concordance_index(t, risk, e) == pytest.approx(c)
    # and the training C the trainer records rises above chance
    assert tr.history_[-1]["c_index"] > 0.6 and "accuracy" not in tr.history_[-1]


def test_validation_early_stopping_on_c_index_and_record(tmp_path):
    samples, time, event, _ = _planted(seed=1)
    tr = _trainer(validation=0.25, epochs=6, patience=2).fit(
        samples=samples, survival=(time, event)
    )
    v = tr.validation_
    assert v["n_patients"] == len(v["slides"]) and 0 < v["n_events"] <= v["n_patients"]
    assert not set(v["slides"]) & {s.name for s in tr.samples_}  # never trained on
    assert all("val_c_index" in h for h in tr.history_)
    best = tr.history_[tr.best_epoch_ - 1]
    assert best["val_loss"] == pytest.approx(1 - best["val_c_index"])
    assert best["val_c_index"] == max(h["val_c_index"] for h in tr.history_)
    assert v["c_index"] == pytest.approx(best["val_c_index"])
    assert "validation C" in repr(tr)
    folder = tr.save(tmp_path / "m")
    from workbench.models import load_checkpoint

    model = load_checkpoint(folder)
    assert model.checkpoint_extra_["survival"]["time_key"] == "time" and model.predicts_risk


def test_patients_with_several_slides_get_the_mean_risk():
    r, t, e = patient_risks([1.0, 3.0, 5.0], ["a", "b", "a"], [2.0, 1.0, 2.0], [1, 0, 1])
    assert r.tolist() == [3.0, 3.0] and t.tolist() == [2.0, 1.0] and e.tolist() == [1, 0]
    with pytest.raises(ClinicalTableError, match="different survival values"):
        patient_risks([1.0, 2.0], ["a", "a"], [1.0, 2.0], [1, 1])
    # the training risk set averages a patient's slides the same way
    mem = RiskSetMemory([2.0, 1.0], [1, 1], [0, 1, 0])
    mem.update(torch.tensor([4.0]), 0)
    live = torch.tensor([0.0], requires_grad=True)
    loss = mem.loss(live, 2)
    loss.backward()
    # patient a's risk is (4 + live) / 2; a dies at 2, b at 1 with a at risk
    p = torch.tensor([2.0, 0.0])
    ref = -(p[1] - torch.logsumexp(p, 0)) - (p[0] - p[0])
    assert float(loss.detach()) == pytest.approx(float(ref))
    assert float(live.grad) == pytest.approx(0.5 * float(torch.softmax(p, 0)[0]))


def test_survival_table_problems_are_named():
    table = pd.DataFrame({"time": [1.0, 2.0], "event": [0, 0]})
    with pytest.raises(ClinicalTableError, match="no events in 'event'"):
        survival_columns(table, "time", "event", ["a", "b"])
    with pytest.raises(ClinicalTableError, match="no survival column 'os'"):
        survival_columns(table, "os", "event", ["a", "b"])
    with pytest.raises(ClinicalTableError, match="no positive number in 'time'.*b"):
        survival_columns(table.assign(time=[1.0, np.nan]), "time", "event", ["a", "b"])
    with pytest.raises(ClinicalTableError, match="other than 0 or 1"):
        survival_columns(table.assign(event=[1, 2]), "time", "event", ["a", "b"])


@pytest.mark.parametrize(
    "kw, message",
    [({"refit": True}, "give validation"), ({"ties": "exact"}, "ties"),
     ({"target": "grade"}, "target must be")],
)  # fmt: skip
def test_bad_survival_options_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        _trainer(**kw)


@pytest.mark.slow
def test_sew_survival_on_the_tiny_cohort_and_extract_writes_risk(tiny_cohort, tmp_path):
    from workbench.io import Cohort
    from workbench.tl import extract

    root = tiny_cohort.root
    cohort = Cohort.from_folder(root / "slides", root / "clinical.csv")
    tr = SlideTrainer(kind="sew", target="survival", epochs=2, progress=False,
                      settings={"n_segments": 60}, model_kwargs=SMALL,
                      n_candidates=4)  # fmt: skip
    tr.fit(cohort)
    assert len(tr.samples_) == len(cohort.slide_ids) and tr.history_[-1]["slide"] > 0
    folder = tr.save(tmp_path / "model")
    sid = cohort.slide_ids[0]
    adata = extract(cohort.slide_path(sid), folder)
    ex = adata.uns["explain"]
    assert ex["target"] == "survival" and np.isfinite(ex["risk"]) and np.isfinite(ex["global_risk"])
    assert "probabilities" not in ex and "predicted_label" not in ex
    assert adata.obs["focus_score"].between(0, 1).all() and adata.obs["is_focus"].sum() >= 1
    # the stored risk is the model's output on the slide (global + detail)
    assert ex["risk"] != ex["global_risk"]


def test_cohort_without_events_or_survival_column_is_refused(tiny_cohort, tmp_path):
    from workbench.io import Cohort

    root = tiny_cohort.root
    table = pd.read_csv(root / "clinical.csv").assign(event=0)
    cohort = Cohort.from_folder(root / "slides", table)
    with pytest.raises(ClinicalTableError, match="no events in 'event'"):
        SlideTrainer(target="survival", progress=False).fit(cohort)
    with pytest.raises(ClinicalTableError, match="no survival column 'os'"):
        SlideTrainer(target="survival", time_key="os", progress=False).fit(cohort)


def test_risk_set_memory_steps_add_up_to_the_full_batch_gradient():
    """With the weights standing still, an epoch of one-slide steps gives exactly the
    full-batch Cox gradient (times the number of events), and the memory's training C is
    lifelines' Harrell's C."""
    from lifelines.utils import concordance_index as lifelines_c

    from workbench.models import cox_partial_likelihood

    rng = np.random.default_rng(0)
    n = 15
    time = np.round(rng.exponential(size=n), 1) + 0.1
    event = (rng.uniform(size=n) > 0.3).astype(int)
    risk = torch.tensor(rng.normal(size=n), dtype=torch.float64)
    full = risk.clone().requires_grad_(True)
    cox_partial_likelihood(full, torch.tensor(time), torch.tensor(event)).backward()
    mem = RiskSetMemory(time, event, list(range(n)))
    for i in range(n):
        mem.update(risk[i : i + 1], i)
    steps = []
    for i in range(n):
        live = risk[i : i + 1].clone().requires_grad_(True)
        mem.loss(live, i).backward()
        steps.append(float(live.grad))
    np.testing.assert_allclose(steps, full.grad.numpy() * event.sum(), rtol=1e-9)
    assert mem.c_index() == pytest.approx(lifelines_c(time, -risk.numpy(), event))


def test_refit_fits_the_final_model_on_all_patients_for_the_early_stopped_epochs():
    """refit=True: the epoch count is chosen on the held-out patients, then the final model
    is trained on every patient for that many epochs without early stopping; the held-out
    figures of the early-stopped model stay in validation_."""
    samples, time, event, _ = _planted(seed=2)
    kw = {"validation": 0.25, "epochs": 6, "patience": 2}
    plain = _trainer(**kw).fit(samples=samples, survival=(time, event))
    tr = _trainer(refit=True, **kw).fit(samples=samples, survival=(time, event))
    assert plain.final_model_["fit_on"] == "training part"
    f = tr.final_model_
    assert f["fit_on"] == "all patients" and f["slides"] == len(samples)
    assert f["patients"] == len(samples) and not f["early_stopping"]
    assert f["epochs"] == plain.best_epoch_ == tr.best_epoch_
    assert len(tr.history_) == f["epochs"] and "val_c_index" not in tr.history_[-1]
    assert {s.name for s in tr.samples_} == {s.name for s in samples}
    # the validation record is the early-stopped model's, as without refit
    assert tr.validation_["c_index"] == pytest.approx(plain.validation_["c_index"])
    assert set(tr.validation_["slides"]) == set(plain.validation_["slides"])
    # the refitted model saw the held-out patients: its weights differ from the plain fit
    a = torch.cat([p.detach().flatten() for p in plain.model_.parameters()])
    b = torch.cat([p.detach().flatten() for p in tr.model_.parameters()])
    assert not torch.allclose(a, b)


@pytest.mark.slow
def test_cli_abmil_survival_then_extract_writes_risk_and_attention(tiny_cohort, tmp_path, capsys):
    """`workbench train --kind abmil --survival time,event` trains the tile ABMIL-Cox peer;
    `workbench extract` then writes its risk and its tile attention as the region scores."""
    import anndata as ad

    from workbench.cli import main

    root = tiny_cohort.root
    base = ["train", str(root / "slides"), "--clinical", str(root / "clinical.csv"),
            "--kind", "abmil", "--survival", "time,event", "--epochs", "1",
            "--set", "n_segments=60", "--set", "crop_size=32", "--no-progress"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("abmil survival model trained on 6 slides") and "shorter survival" in out
    extract = ["extract", str(root / "slides"), "--model", str(tmp_path / "m"),
               "--out", str(tmp_path / "x"), "--no-progress"]  # fmt: skip
    assert main(extract) == 0
    adata = ad.read_h5ad(tmp_path / "x" / "S001.h5ad")
    ex = adata.uns["explain"]
    assert ex["target"] == "survival" and ex["kind"] == "abmil" and np.isfinite(ex["risk"])
    assert "probabilities" not in ex and "tile attention" in ex["region_score"]
    score = adata.obs["focus_score"].to_numpy()
    assert score.min() == pytest.approx(0.0) and score.max() == pytest.approx(1.0)
    assert adata.obs["is_focus"].sum() >= 1
    # the most attended region is among the focus regions (graph NMS keeps the top one)
    assert bool(adata.obs["is_focus"].to_numpy()[int(np.argmax(score))])
    capsys.readouterr()
    # --refit without --validation is one line on stderr, exit code 2
    assert main([*base, "--refit", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "give --validation" in err and len(err.strip().splitlines()) == 1


def test_sew_survival_risk_focus_reaches_the_model_and_its_checkpoint(tmp_path):
    """``model_kwargs={"risk_focus": ...}`` builds the SEW survival model with that focus rule,
    the saved checkpoint keeps it, and an unknown rule is refused before training."""
    from workbench import OptionError
    from workbench.models import load_checkpoint

    samples, time, event, _ = _planted(n=16, seed=2)
    tr = _trainer(kind="sew", epochs=1, model_kwargs={**SMALL, "risk_focus": "two-sided"})
    tr.fit(samples=samples, survival=(time, event))
    assert tr.model_.config["risk_focus"] == "two-sided"
    assert load_checkpoint(tr.save(tmp_path / "m")).config["risk_focus"] == "two-sided"
    with pytest.raises(OptionError, match="risk_focus must be one of"):
        _trainer(kind="sew", epochs=1, model_kwargs={**SMALL, "risk_focus": "down"}).fit(
            samples=samples, survival=(time, event)
        )
