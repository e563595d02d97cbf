"""tl.SlideTrainer: training on a cohort's own label column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import ClinicalTableError
from workbench.io import Cohort
from workbench.tl import SlideTrainer, classification_metrics, extract
from workbench.tl._train import _patient_split, encode_labels

SETTINGS = {"thumbnail_mpp": 4.0, "n_segments": 60, "detail_mpp": 2.0, "crop_size": 32}
SMALL = {"hidden": 8, "detail_width": 4, "embed_dim": 8, "top_k": 2}


def _disc(rng, *, dark: bool) -> np.ndarray:
    """A 192x256 H&E-like slide: a pink tissue disc, with a dark purple core when ``dark``."""
    rows, cols = np.mgrid[0:192, 0:256]
    img = np.full((192, 256, 3), 245.0)
    img[(rows - 96) ** 2 + (cols - 120) ** 2 < 75**2] = (230, 150, 190)
    if dark:
        img[(rows - 90) ** 2 + (cols - 130) ** 2 < 30**2] = (90, 40, 130)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, write_pyramid_tiff):
    """Eight small TIFF slides of four patients (two slides each), labels "tumour"/"normal"."""
    root = tmp_path_factory.mktemp("train_cohort")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(4):
        tumour = p % 2 == 0
        for k in range(2):
            sid = f"P{p}-{k}"
            write_pyramid_tiff(root / "slides" / f"{sid}.tif", _disc(rng, dark=tumour), mpp=2.0)
            rows.append({"patient_id": f"P{p}", "slide": sid,
                         "diagnosis": "tumour" if tumour else "normal", "code": p % 2})  # fmt: skip
    return Cohort.from_folder(root / "slides", pd.DataFrame(rows))


def _trainer(**kw) -> SlideTrainer:
    base = {"kind": "sew", "label": "diagnosis", "epochs": 3, "lr": 5e-3, "progress": False,
            "settings": SETTINGS, "model_kwargs": SMALL, "n_candidates": 4}  # fmt: skip
    base.update(kw)
    return SlideTrainer(**base)


def test_encode_labels_orders_classes():
    idx, classes = encode_labels(pd.Series(["b", "a", "b"]))
    assert classes == ["a", "b"] and idx.tolist() == [1, 0, 1]
    idx, classes = encode_labels(pd.Series([10, 2, 2]))
    assert classes == [2, 10] and idx.tolist() == [1, 0, 0]  # numbers sort as numbers
    idx, classes = encode_labels(pd.Series(["no", "yes"]), classes=["yes", "no"])
    assert idx.tolist() == [1, 0]
    with pytest.raises(ClinicalTableError, match=r"\['maybe'\] are not among the classes"):
        encode_labels(pd.Series(["yes", "maybe"]), classes=["yes", "no"])


def test_patient_split_keeps_patients_together_and_stratifies():
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1])
    groups = [f"P{i // 2}" for i in range(12)]
    folds = _patient_split(y, groups, 3, seed=0)
    assert len(folds) == 3
    for train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        assert set(y[test]) == {0, 1}
    with pytest.raises(ClinicalTableError, match="at least two"):
        _patient_split(np.array([0, 1, 1]), ["a", "b", "c"], 2, seed=0)


def test_classification_metrics_hand_checked():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    m = classification_metrics(y, p)
    assert m["auc"] == 1.0 and m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.75
    assert classification_metrics(np.array([1, 1]), p[:2])["auc"] is None
    three = classification_metrics(np.array([0, 1, 2]), np.eye(3))
    assert three["auc"] == 1.0 and three["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"kind": "vit"}, "kind must be one of"),
        ({"class_weight": "inverse"}, "class_weight must be one of"),
        ({"stain": "vahadane"}, "stain must be None"),
        ({"validation": 1.0}, "validation must be a share"),
        ({"folds": 1}, "folds must be at least 2"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\)"),
        ({"label_smoothing": -0.1}, r"label_smoothing must be a number in \[0, 1\)"),
        ({"label_smoothing": "a lot"}, r"label_smoothing must be a number in \[0, 1\)"),
        ({"label_smoothing": 0.1, "target": "survival"}, "not target='survival'"),
    ],
)
def test_bad_options_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        SlideTrainer(**kw)


def test_label_smoothing_reaches_the_slide_loss_and_is_stored_in_the_checkpoint(cohort, tmp_path):
    import json

    from workbench import OptionError
    from workbench._steps import training_record

    with pytest.raises(OptionError):
        SlideTrainer(label_smoothing=2)
    plain = _trainer(kind="global", epochs=2, seed=3, model_kwargs={"hidden": 8}).fit(cohort)
    smooth = _trainer(
        kind="global", epochs=2, seed=3, model_kwargs={"hidden": 8}, label_smoothing=0.2
    ).fit(cohort)
    # the same seed and slides: only the slide loss's target differs
    assert smooth.history_[0]["slide"] != pytest.approx(plain.history_[0]["slide"])
    path = smooth.save(tmp_path / "m")
    extra = json.loads((path / "config.json").read_text())["extra"]
    assert extra["label_smoothing"] == 0.2
    assert training_record(path)["label_smoothing"] == 0.2
    assert (
        json.loads((plain.save(tmp_path / "p") / "config.json").read_text())["extra"][
            "label_smoothing"
        ]
        == 0.0
    )


def test_label_problems_are_named(cohort):
    with pytest.raises(ClinicalTableError, match="say which clinical column.*diagnosis"):
        SlideTrainer(progress=False).fit(cohort)
    with pytest.raises(ClinicalTableError, match="no label column 'stage'"):
        _trainer(label="stage").fit(cohort)
    one = cohort.assign(diagnosis="tumour")
    with pytest.raises(ClinicalTableError, match="single class"):
        _trainer().fit(one)


@pytest.mark.slow
def test_string_labels_validation_split_early_stopping_and_checkpoint(cohort, tmp_path):
    from workbench.models import load_checkpoint

    t = _trainer(epochs=6, validation=0.5, patience=2, classes=["normal", "tumour"]).fit(cohort)
    assert t.classes_ == ["normal", "tumour"]
    held = t.validation_["slides"]
    patients = {cohort.patient_of(s) for s in held}
    assert len(held) == 2 * len(patients)  # a patient's two slides are held out together
    assert {s.name for s in t.samples_}.isdisjoint(held)
    assert {"auc", "accuracy", "balanced_accuracy", "loss"} <= set(t.validation_)
    assert all("val_loss" in h for h in t.history_)
    assert 1 <= t.best_epoch_ <= len(t.history_) <= 6
    assert t.model_.config["class_names"] == ["normal", "tumour"]
    path = t.save(tmp_path / "m")
    back = load_checkpoint(path)
    assert back.config["label"] == "diagnosis"
    assert back.checkpoint_extra_["validation"]["slides"] == held
    a = extract(cohort.slide_path("P0-0"), back)
    assert a.uns["explain"]["label"] == "diagnosis"
    assert a.uns["explain"]["predicted_label"] in ("normal", "tumour")


@pytest.mark.slow
def test_integer_labels_cross_validation_and_class_weights(cohort):
    imbalanced = cohort.subset(["P0-0", "P0-1", "P1-0", "P1-1", "P2-0", "P2-1", "P3-0"])
    t = _trainer(label="code", folds=2, epochs=2).fit(imbalanced)
    assert t.classes_ == [0, 1]
    cv = t.cv_
    assert list(cv["fold"]) == [1, 2] and (cv["n_test"] > 0).all()
    assert {"auc", "accuracy", "balanced_accuracy", "epochs"} <= set(cv.columns)
    tested = ";".join(cv["test_slides"]).split(";")
    assert sorted(tested) == sorted(imbalanced.slide_ids)  # every slide tested once
    weights = t._class_weights(np.array([s.label for s in t.samples_]), 2)
    assert weights[1] > weights[0]  # class 1 (3 slides) weighs more than class 0 (4)


@pytest.mark.slow
def test_global_and_abmil_train_on_the_same_cohort(cohort):
    g = _trainer(kind="global", model_kwargs={"hidden": 8}).fit(cohort)
    assert type(g.model_).__name__ == "GlobalOnly" and g.samples_[0].crops.shape[0] == 0
    a = _trainer(kind="abmil", model_kwargs={"detail_width": 4, "embed_dim": 8}, max_tiles=6)
    a = a.fit(cohort)
    assert a.samples_[0].tiles.shape[0] <= 6


def test_training_without_annotations_is_multiple_instance_only(cohort):
    t = _trainer(epochs=2).fit(cohort)
    assert all(s.node_labels is None and s.crop_masks is None for s in t.samples_)
    assert "node" not in t.history_[-1] and "detail" in t.history_[-1]


def test_stain_augmentation_matches_pp_augment_stain():
    from workbench.models._augment import apply_stain_jitter
    from workbench.pp import augment_stain

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    draws = np.random.default_rng(7)
    alpha, beta = draws.uniform(0.9, 1.1, 3), draws.uniform(-0.05, 0.05, 3)
    ref = augment_stain(img, sigma=0.1, bias=0.05, rng=7)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    out = apply_stain_jitter(x, torch.tensor(alpha)[None], torch.tensor(beta)[None])
    got = (out[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_frozen_encoder_through_the_trainer(cohort, tmp_path):
    from workbench.models import ModuleEncoder, load_checkpoint

    class Pool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 6)

        def forward(self, x):
            return self.proj(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    enc = ModuleEncoder(Pool(), input_size=24, mpp=3.0, name="pool")
    settings = {k: v for k, v in SETTINGS.items() if k not in ("detail_mpp", "crop_size")}
    t = _trainer(encoder=enc, settings=settings, epochs=2).fit(cohort)
    assert t.settings_["detail_mpp"] == 3.0 and t.settings_["crop_size"] == 24  # the encoder's
    assert all(s.crop_embeddings.shape[1] == 6 for s in t.samples_)
    path = t.save(tmp_path / "m")
    with pytest.raises(Exception, match="pass it"):
        load_checkpoint(path)
    back = load_checkpoint(path, encoder=enc)
    a = extract(cohort.slide_path("P1-0"), back)
    assert a.uns["explain"]["encoder"] == "pool"
    assert a.uns["explain"]["focus"]["crops"].shape[1:] == (24, 24, 3)
    assert a.uns["explain"]["focus"]["lesion_maps"].shape[1:] == (24, 24)


def test_stain_normalisation_is_stored_and_reapplied(cohort, tmp_path):
    if not hasattr(__import__("workbench.pp").pp, "StainNormalizer"):
        pytest.skip("workbench.pp.StainNormalizer is not there yet")
    from workbench.models import load_checkpoint
    from workbench.pp import StainNormalizer

    t = _trainer(stain="macenko", epochs=1).fit(cohort)
    spec = t.model_.preprocessing["stain"]
    assert spec["method"] == "macenko"
    path = t.save(tmp_path / "m")
    model = load_checkpoint(path)
    a = extract(cohort.slide_path("P0-0"), model)
    assert a.uns["explain"]["stain"] == "macenko"
    norm = StainNormalizer.from_dict(spec)
    box = a.uns["explain"]["focus"]["boxes_xywh"][0]
    with cohort.open("P0-0") as s:
        raw = s.read_region(tuple(box[:2]), (32, 32), mpp=2.0)
    np.testing.assert_array_equal(a.uns["explain"]["focus"]["crops"][0], norm.transform(raw))


def test_texture_encoder_through_the_trainer_and_back(cohort, tmp_path):
    from workbench.models import TextureEncoder, load_checkpoint

    settings = {k: v for k, v in SETTINGS.items() if k not in ("detail_mpp", "crop_size")}
    enc = TextureEncoder(input_size=24, mpp=3.0)
    t = _trainer(encoder=enc, settings=settings, epochs=2).fit(cohort)
    assert all(s.crop_embeddings.shape[1] == enc.embed_dim for s in t.samples_)
    back = load_checkpoint(t.save(tmp_path / "m"))  # nothing to pass: a built-in encoder
    a = extract(cohort.slide_path("P1-0"), back)
    assert a.uns["explain"]["encoder"] == "texture"
    assert a.uns["explain"]["focus"]["crops"].shape[1:] == (24, 24, 3)


# ----------------------------------------------------------------------------- splits, CV
def test_requested_splits_are_refused_before_any_slide_is_read(cohort, monkeypatch):
    from workbench import OptionError
    from workbench.tl import _train

    def no_reading(*a, **k):
        raise AssertionError("slides were read before the split was checked")

    monkeypatch.setattr(_train, "_prepare_cohort", no_reading)
    # 4 patients, 2 per class: 0.01 asks 1 in 100 of each class (the old split held out half)
    with pytest.raises(OptionError, match=r"validation=0.01 holds out 1 in 100.*'normal': 2"):
        _trainer(validation=0.01).fit(cohort)
    with pytest.raises(OptionError, match=r"folds=5 needs at least 5 patients.*there are 4"):
        _trainer(folds=5).fit(cohort)


def test_conflicting_labels_are_refused_or_dropped(cohort, caplog, monkeypatch):
    from workbench.tl import _train

    # patient A has a tumour and a normal slide; every other slide is its own patient
    patients = ["A", "A", "B", "C", "D", "E", "F", "G"]
    labels = ["tumour", "normal", "normal", "normal", "tumour", "tumour", "normal", "normal"]
    table = pd.DataFrame({"patient_id": patients, "slide": cohort.slide_ids, "diagnosis": labels})
    mixed = Cohort({s: cohort.slide_path(s) for s in cohort.slide_ids}, table)
    with pytest.raises(ClinicalTableError, match=r"1 patient\(s\) carry conflicting.*A \(normal, tumour\).*on_conflict='drop'"):  # fmt: skip
        _trainer(validation=0.5).fit(mixed)
    seen = {}

    def stop(c, labels, **k):  # record what would be read, then stop
        seen["slides"] = list(c.slide_ids)
        raise RuntimeError("stop")

    monkeypatch.setattr(_train, "_prepare_cohort", stop)
    with caplog.at_level("WARNING", logger="workbench.tl._train"), pytest.raises(RuntimeError):
        _trainer(folds=2, on_conflict="drop").fit(mixed)
    assert (
        "dropped 1 patient(s) carrying conflicting 'diagnosis' labels (2 slides): A" in caplog.text
    )
    assert seen["slides"] == cohort.slide_ids[2:]
    # without a split nothing needs a patient label: trained as given
    with pytest.raises(RuntimeError):
        _trainer().fit(mixed)
    assert len(seen["slides"]) == 8


@pytest.mark.slow
def test_repeated_cross_validation_pools_out_of_fold_predictions(cohort, tmp_path, caplog):
    import warnings

    from workbench import SplitWarning
    from workbench.models import load_checkpoint

    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level("INFO", logger="workbench.tl._train"),
    ):
        warnings.simplefilter("always")
        t = _trainer(folds=2, repeats=2, epochs=2, n_boot=200).fit(cohort)
    thin = [str(w.message) for w in caught if issubclass(w.category, SplitWarning)]
    # 2 patients of a class over 2 folds: each fold holds 1 patient of it, and says so
    assert any("fold 1: 2 slide(s) of 1 patient(s) of 'normal'" in m for m in thin)
    # 1 patient of a class left in each training part: no inner split, said once per repeat
    assert any(m.startswith("repeat 2, fold(s) [1, 2] of 2: the training part") for m in thin)
    assert sum("inner validation split" in m for m in thin) == 2
    cv = t.cv_
    assert list(cv["repeat"]) == [1, 1, 2, 2] and list(cv["fold"]) == [1, 2, 1, 2]
    assert {"n_test", "n_test_patients", "auc", "balanced_accuracy", "epochs"} <= set(cv.columns)
    assert set(cv["calibration"]) == {"none"}  # no inner split, no temperature
    oof = t.oof_
    assert list(oof.columns[:8]) == ["patient", "slide", "repeat", "fold", "label",
                                     "probability", "raw_probability", "predicted"]  # fmt: skip
    for r in (1, 2):  # every slide predicted once per repeat, by a fold that did not train on it
        part = oof[oof["repeat"] == r]
        assert sorted(part["slide"]) == sorted(cohort.slide_ids)
    for row in cv.to_dict("records"):
        tested = set(row["test_slides"].split(";"))
        assert tested == set(oof[(oof.repeat == row["repeat"]) & (oof.fold == row["fold"])].slide)
    assert set(oof["label"]) == {"normal", "tumour"}
    assert ((oof["probability"] >= 0) & (oof["probability"] <= 1)).all()
    s = t.cv_summary_
    assert s["folds"] == 2 and s["repeats"] == 2 and s["n_slides"] == 8 and s["n_patients"] == 4
    assert {"auc", "auc_ci", "balanced_accuracy", "ece", "ece_raw", "auc_by_repeat"} <= set(s)
    assert len(s["auc_by_repeat"]) == 2
    # progress lines: one per fold and per epoch, whatever the progress bar does
    assert "repeat 2/2 fold 2/2: 4 training slides" in caplog.text
    assert "repeat 1/2 fold 1/2 epoch 2/2: loss" in caplog.text
    assert "pooled out-of-fold AUC" in caplog.text
    # the final model: all patients, the folds' median epoch count, T from the pooled logits
    assert t.final_model_["fit_on"] == "all patients" and len(t.samples_) == 8
    assert t.calibration_["fitted_on"] == "out-of-fold predictions"
    path = t.save(tmp_path / "m")
    import pandas as pd

    saved = pd.read_csv(path / "oof_predictions.csv")
    assert len(saved) == 16 and list(saved["slide"]) == list(oof["slide"])
    extra = load_checkpoint(path).checkpoint_extra_
    assert extra["cv_summary"]["n_slides"] == 8 and extra["final_model"]["fit_on"] == "all patients"


def _noisy(cohort):
    """Labels that the images do not explain (two dark, two pale patients in each class), so
    held-out slides are sometimes wrong and a temperature can be fitted."""
    per_patient = {"P0": "tumour", "P1": "tumour", "P2": "normal", "P3": "normal"}
    return cohort.assign(diagnosis=[per_patient[cohort.patient_of(s)] for s in cohort.slide_ids])


@pytest.mark.slow
def test_checkpoint_carries_its_temperature_and_extract_applies_it(cohort, tmp_path):
    from workbench.models import load_checkpoint
    from workbench.tl import model_fingerprint
    from workbench.tl._calibration import model_temperature, softmax_with_temperature

    t = _trainer(validation=0.5, epochs=4, patience=4, lr=2e-2, seed=1).fit(_noisy(cohort))
    cal = t.calibration_
    assert cal is not None and cal["fitted_on"] == "validation patients"
    assert cal["status"] == "fitted" and cal["temperature"] != 1.0
    assert cal["nll_after"] <= cal["nll_before"]
    assert t.final_model_["fit_on"] == "training part"
    assert t.validation_["temperature"] == cal["temperature"]
    assert len(t.validation_["predictions"]) == len(t.validation_["slides"])
    path = t.save(tmp_path / "m")
    back = load_checkpoint(path)
    assert back.checkpoint_extra_["calibration"]["temperature"] == cal["temperature"]
    assert model_temperature(back) == model_temperature(t.model_) == cal["temperature"]
    assert model_fingerprint(path) == model_fingerprint(t.model_)
    a = extract(cohort.slide_path("P1-0"), t.model_).uns["explain"]
    b = extract(cohort.slide_path("P1-0"), back).uns["explain"]
    assert b["temperature"] == cal["temperature"]
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-6)
    np.testing.assert_allclose(a["raw_probabilities"], b["raw_probabilities"], rtol=1e-6)
    expected = softmax_with_temperature(np.log(b["raw_probabilities"]), cal["temperature"])
    np.testing.assert_allclose(b["probabilities"], expected, rtol=1e-6)
    assert not np.allclose(b["probabilities"], b["raw_probabilities"])
    # an old checkpoint (no calibration record) reads as T = 1
    from workbench.models import save_checkpoint

    old = save_checkpoint(back, tmp_path / "old", extra={"label": "diagnosis"})
    c = extract(cohort.slide_path("P1-0"), old).uns["explain"]
    assert c["temperature"] == 1.0
    np.testing.assert_allclose(c["probabilities"], c["raw_probabilities"])
    np.testing.assert_allclose(c["probabilities"], b["raw_probabilities"], rtol=1e-6)
    assert model_fingerprint(old) != model_fingerprint(path)


@pytest.mark.slow
def test_refit_trains_the_final_model_on_every_patient(cohort):
    t = _trainer(validation=0.5, epochs=3, patience=3, refit=True).fit(cohort)
    assert t.final_model_["fit_on"] == "all patients" and len(t.samples_) == 8
    assert t.final_model_["epochs"] == t.validation_["best_epoch"]
    assert len(t.history_) == t.final_model_["epochs"]
    assert t.validation_["slides"]  # measured before the refit
    with pytest.raises(ValueError, match="refit refits on all patients"):
        SlideTrainer(refit=True)
    with pytest.raises(ValueError, match="give folds too"):
        SlideTrainer(repeats=2)


def _graph_samples(n: int, seed: int = 0) -> list:
    """``n`` prepared slides (small random region graphs); class 1 has a shifted feature."""
    from workbench.models import SlideSample
    from workbench.pp import feature_names

    rng = np.random.default_rng(seed)
    f = len(feature_names())
    out = []
    for i in range(n):
        label = i % 2
        x = rng.normal(0, 1, (12, f)).astype(np.float32)
        x[:, 0] += 1.5 * label
        ring = np.arange(12)
        edges = np.stack([np.r_[ring, (ring + 1) % 12], np.r_[(ring + 1) % 12, ring]])
        out.append(SlideSample(torch.from_numpy(x), torch.from_numpy(edges).long(), label,
                               name=f"S{i:02d}"))  # fmt: skip
    return out


def test_each_fold_stops_early_on_its_own_training_patients_never_its_test_fold():
    samples = _graph_samples(20)
    t = SlideTrainer(kind="global", epochs=6, patience=2, folds=2, progress=False,
                     model_kwargs={"hidden": 8}, n_boot=100).fit(samples=samples)  # fmt: skip
    for row in t.cv_.to_dict("records"):
        test = set(row["test_slides"].split(";"))
        inner = set(row["inner_validation_slides"].split(";"))
        assert inner and not inner & test  # early stopping never sees the test fold
        assert row["n_inner_validation"] == len(inner) and row["n_train"] + len(inner) == 10
        assert 1 <= row["epochs"] <= 6
    assert set(t.cv_["calibration"]) <= {"fitted", "separable", "too_few"}
    assert len(t.oof_) == 20 and t.cv_summary_["auc"] is not None
    assert t.cv_summary_["auc_ci"][0] <= t.cv_summary_["auc"] <= t.cv_summary_["auc_ci"][1]
    assert t.final_model_["epochs"] == int(np.median(t.cv_["epochs"]))
