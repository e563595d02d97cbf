from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from workbench import WorkbenchError
from workbench.io import Slide, write_h5ad
from workbench.models import SelfCalibratedModel
from workbench.pp import feature_names
from workbench.report import write_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, request):
    """A run folder with every input of the report, made small and fast."""
    from workbench.datasets import simulate_region_cohort
    from workbench.tl import discover, extract

    he = request.getfixturevalue("he_like_image_module")
    root = tmp_path_factory.mktemp("run")
    (root / "summary.json").write_text(
        json.dumps(
            {
                "n_patients": 40,
                "grades": {"1": 13, "2": 13, "3": 14},
                "events": 27,
                "median_follow_up": 31.5,
                "slides": [
                    {
                        "slide_id": "S000",
                        "dimensions": [4096, 3072],
                        "levels": 5,
                        "mpp": 0.5,
                        "vendor": "aperio",
                    }
                ],
            }
        )  # fmt: skip
    )
    (root / "training.json").write_text(
        json.dumps(
            {"history": [{"epoch": e, "loss": 1.0 / e, "slide_loss": 0.5 / e} for e in range(1, 6)]}
        )  # fmt: skip
    )
    (root / "evaluation.json").write_text(
        json.dumps(
            {
                "task": "high grade vs low grade",
                "n_test": 12,
                "models": {"self-calibrated (SEW)": {"auc": 0.8125, "accuracy": 0.75}},
                "focus_hit_rate": 0.9375,
            }
        )
    )
    (root / "refine.json").write_text(
        json.dumps(
            {
                "slide_id": "S007",
                "n_clicks": 3,
                "method": "cgam",
                "iou_per_click": [0.41, 0.72, 0.86, 0.93],
                "geojson": "refined/S007.geojson",
            }
        )  # fmt: skip
    )
    torch.manual_seed(0)
    pre = {"thumbnail_mpp": 4.0, "n_segments": 120, "compactness": 10.0, "detail_mpp": 2.0,
           "crop_size": 64, "feature_names": feature_names()}  # fmt: skip
    model = SelfCalibratedModel(
        in_features=len(feature_names()), hidden=16, detail_width=8, embed_dim=16, top_k=3,
        preprocessing=pre, class_names=["low", "high"],
    ).eval()  # fmt: skip
    a = extract(Slide.from_array(he, mpp=2.0, name="disc"), model)
    (root / "slides").mkdir()
    write_h5ad(a, root / "slides" / "disc.h5ad")
    adatas, clinical = simulate_region_cohort(
        40, seed=1, n_regions=150, n_features=8, with_images=True
    )
    cohort = discover(adatas, clinical, seed=0, spatial_kwargs={"n_perms": 20})
    write_h5ad(cohort, root / "discovery.h5ad")
    return root, cohort


@pytest.fixture(scope="module")
def he_like_image_module():
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:384, 0:512]
    img = np.full((384, 512, 3), 245, dtype=np.float64)
    img[(rows - 192) ** 2 + (cols - 200) ** 2 < 150**2] = (230, 150, 190)
    img[(rows - 180) ** 2 + (cols - 230) ** 2 < 50**2] = (120, 60, 150)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_report_has_every_section_with_real_numbers(run_dir):
    root, cohort = run_dir
    path = write_report(root)
    html = path.read_text()
    for heading in ["Cohort", "Model performance", "Explanations", "Refined regions",
                    "Candidate markers", "Kaplan–Meier curves"]:  # fmt: skip
        assert f"<h2>{heading}</h2>" in html
    assert 'class="missing"' not in html
    assert "0.812" in html and "0.938" in html  # AUC and focus hit rate as stored
    assert "0.930" in html  # IoU after the clicks
    screen = cohort.uns["survival_screen"]
    top = screen.index[0]
    assert top in html
    q = screen["q_cox"].iloc[0]
    assert (f"{q:.3f}" if q >= 1e-3 else f"{q:.2e}") in html
    n_images = len(re.findall(r'src="data:image/png;base64,', html))
    assert n_images >= 6  # history, overlay, gallery, IoU, forest, KM
    assert "http://" not in html and "https://" not in html  # self-contained


def test_report_of_an_empty_run_says_what_is_missing(tmp_path):
    path = write_report(tmp_path, tmp_path / "r.html")
    html = path.read_text()
    assert html.count('class="missing"') == 7  # one per section, and nothing else drawn
    for source in ["summary.json", "evaluation.json", "slides/*.h5ad", "refine.json",
                   "discovery.h5ad"]:  # fmt: skip
        assert source in html  # each missing section names the file that would fill it
    # ... and the command that fills it, with this run's folder in it (not demo terms)
    assert f"workbench extract SLIDES --model {tmp_path}/model --out {tmp_path}/slides" in html
    assert f"workbench discover {tmp_path}/slides clinical.csv --out {tmp_path}" in html
    assert "workbench train SLIDES" in html and "--validation 0.2" in html
    assert "demo&#x27;s" not in html and "the demo's" not in html
    assert "data:image/png;base64," not in html


def test_report_needs_an_existing_folder(tmp_path):
    with pytest.raises(WorkbenchError, match="workbench demo"):
        write_report(tmp_path / "nope")


@pytest.mark.browser
def test_report_renders_in_a_real_browser(run_dir):
    import shutil
    from pathlib import Path

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    root, _ = run_dir
    path = write_report(root)
    artifacts = Path(__file__).resolve().parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            for sid in ["cohort", "model", "explain", "refine", "phenotypes", "markers",
                        "survival"]:  # fmt: skip
                assert page.locator(f"section#{sid} h2").is_visible()
            gallery = page.locator("section#phenotypes figure.phenotype-gallery img")
            assert gallery.evaluate("i => i.naturalWidth") > 200
            assert page.locator("section#survival figure img").count() >= 1
            broken = page.evaluate(
                "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
            )
            assert broken == 0
            assert page.evaluate("document.images.length") >= 6
            page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        finally:
            browser.close()
    assert (artifacts / "report.png").stat().st_size > 10_000


def test_report_leaves_the_callers_matplotlib_backend_alone(run_dir, tmp_path):
    import matplotlib

    root, _ = run_dir
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend
    try:
        write_report(root, tmp_path / "r.html")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


def test_report_names_the_label_and_shows_validation_and_folds(tmp_path):
    training = {
        "label": "grade_group",
        "classes": ["low grade (1-2)", "high grade (3)"],
        "kind": "sew",
        "train_slides": ["S000", "S001", "S002"],
        "validation": {"slides": ["S003"], "best_epoch": 4, "auc": 0.875, "accuracy": 0.75,
                       "balanced_accuracy": 0.7083},
        "cv": [{"fold": 1, "n_train": 3, "n_test": 2, "epochs": 5, "auc": 0.6667, "accuracy": 0.5,
                "balanced_accuracy": 0.5}],
        "history": [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e, "val_auc": 0.9,
                     "accuracy": 0.5} for e in range(1, 5)],
    }  # fmt: skip
    (tmp_path / "training.json").write_text(json.dumps(training))
    html = write_report(tmp_path).read_text()
    assert "Label learnt: <b>grade_group</b>" in html and "high grade (3)" in html
    assert "0.875" in html and "0.708" in html  # validation AUC, balanced accuracy
    assert "Cross-validation by patient" in html and "0.667" in html
    assert html.count("data:image/png;base64,") == 1  # the history plot


def test_report_shows_calibration_pooled_cross_validation_and_reliability(tmp_path):
    import pandas as pd

    model = tmp_path / "model"  # `workbench train --out RUN/model`: found there too
    model.mkdir()
    rng = np.random.default_rng(0)
    n = 24
    y = np.array([0, 1] * (n // 2))
    p = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.2, n), 0.01, 0.99)
    oof = pd.DataFrame({"patient": [f"P{i}" for i in range(n)], "slide": [f"S{i}" for i in range(n)],
                        "repeat": 1, "fold": [1 + i % 3 for i in range(n)],
                        "label": [["benign", "malignant"][v] for v in y], "probability": p,
                        "raw_probability": np.where(p > 0.5, 0.999, 0.001)})  # fmt: skip
    oof.to_csv(model / "oof_predictions.csv", index=False)
    training = {
        "label": "diagnosis", "classes": ["benign", "malignant"], "kind": "sew",
        "train_slides": [f"S{i}" for i in range(n)],
        "final_model": {"fit_on": "all patients", "slides": n, "patients": n, "epochs": 7,
                        "early_stopping": False},
        "calibration": {"temperature": 2.345, "status": "fitted", "n": n,
                        "fitted_on": "out-of-fold predictions", "ece_before": 0.31,
                        "ece_after": 0.08},
        "cv": [{"repeat": 1, "fold": f, "n_train": 16, "n_test": 8, "n_test_patients": 8,
                "epochs": 7, "temperature": 2.0, "auc": 0.9, "accuracy": 0.8,
                "balanced_accuracy": 0.8} for f in (1, 2, 3)],
        "cv_summary": {"folds": 3, "repeats": 1, "n_slides": n, "n_patients": n, "auc": 0.912,
                       "auc_ci": [0.801, 0.987], "balanced_accuracy": 0.833, "ece": 0.071,
                       "ece_raw": 0.29},
        "oof_predictions": "oof_predictions.csv",
    }  # fmt: skip
    (model / "training.json").write_text(json.dumps(training))
    html = write_report(tmp_path).read_text()
    assert "fit on <b>all patients</b>" in html
    assert "T = <b>2.345</b>" in html and "0.310 → 0.080" in html
    assert "pooled out-of-fold AUC <b>0.912</b> (95% CI 0.801–0.987, patients resampled)" in html
    assert "n_test_patients" in html
    assert "Reliability of the out-of-fold predictions" in html
    assert html.count("data:image/png;base64,") == 1  # the reliability diagram


def test_report_says_when_no_temperature_could_be_fitted(tmp_path):
    training = {"label": "diagnosis", "classes": ["benign", "malignant"], "kind": "sew",
                "calibration": {"temperature": 1.0, "status": "separable", "n": 19,
                                "fitted_on": "validation patients", "ece_before": 0.02,
                                "ece_after": 0.02}}  # fmt: skip
    (tmp_path / "training.json").write_text(json.dumps(training))
    html = write_report(tmp_path).read_text()
    assert "Probabilities are <b>not calibrated</b>" in html
    assert "19 validation patients" in html and "classified correctly" in html
    assert "calibrated by temperature scaling" not in html
    training["calibration"]["status"] = "fitted"
    (tmp_path / "training.json").write_text(json.dumps(training))
    assert "calibrated by temperature scaling" in write_report(tmp_path).read_text()


def test_report_shows_calibrated_slide_probabilities(tmp_path, tiny_sew, he_like_image):
    from workbench.io import Slide, write_h5ad
    from workbench.tl import extract

    model = tiny_sew(0)
    model.calibration_ = {"temperature": 3.0}
    a = extract(Slide.from_array(he_like_image, mpp=2.0, name="S1"), model)
    write_h5ad(a, tmp_path / "slides" / "S1.h5ad")
    ex = a.uns["explain"]
    html = write_report(tmp_path).read_text()
    pairs = zip(ex["class_names"], ex["probabilities"], strict=True)
    shown = ", ".join(f"{n}: {p:.2f}" for n, p in pairs)
    before = ", ".join(f"{p:.2f}" for p in ex["raw_probabilities"])
    assert f"{shown} (calibrated, T = 3.00; before: {before})" in html


def _without_images(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "IMG", html)


@pytest.mark.slow
def test_model_trained_in_python_reports_like_the_command_line(tiny_cohort, tmp_path):
    """The training record lives in the checkpoint (SlideTrainer.save), so a model trained in
    a notebook gets the same report as one from `workbench train`, and no training.json."""
    from workbench._steps import open_cohort
    from workbench.cli import main
    from workbench.report import _section_model
    from workbench.tl import SlideTrainer

    root = tiny_cohort.root
    slides, clinical, annotations = root / "slides", root / "clinical.csv", root / "annotations"
    cli = tmp_path / "cli"
    assert main(["train", str(slides), "--clinical", str(clinical), "--label", "grade",
                 "--annotations", str(annotations), "--kind", "global", "--epochs", "3",
                 "--thumbnail-mpp", "4", "--n-segments", "60", "--out", str(cli / "model"),
                 "--no-progress"]) == 0  # fmt: skip
    cohort = open_cohort(slides, clinical, annotations=annotations)
    trainer = SlideTrainer(kind="global", label="grade", epochs=3, progress=False,
                           settings={"thumbnail_mpp": 4.0, "n_segments": 60})  # fmt: skip
    py = tmp_path / "py"
    trainer.fit(cohort).save(py / "model")
    assert not (py / "model" / "training.json").exists()
    assert not (cli / "model" / "training.json").exists()

    shown = _section_model(py)
    assert "Label learnt: <b>grade</b> (classes: 1, 2, 3), 6 training slides, global" in shown
    assert "The final model was fit on <b>" in shown
    assert shown.count("data:image/png;base64,") == 1  # the training history
    assert _without_images(shown).replace(str(py), "RUN") == _without_images(
        _section_model(cli)
    ).replace(str(cli), "RUN")
    # the report reads the checkpoint folder itself as well as RUN/model
    html = write_report(py / "model", tmp_path / "r.html").read_text()
    record_part = _without_images(shown)[_without_images(shown).index("<p>Label learnt") :]
    assert record_part in _without_images(html)

    # a test split made outside the trainer is recorded and shown
    held = cohort.slide_ids[:2]
    keep = [s for s in cohort.slide_ids if s not in held]
    again = SlideTrainer(kind="global", label="grade", epochs=1, progress=False,
                         settings={"thumbnail_mpp": 4.0, "n_segments": 60})  # fmt: skip
    again.fit(cohort, slide_ids=keep).save(tmp_path / "split")
    record = json.loads((tmp_path / "split" / "config.json").read_text())["extra"]
    assert record["held_out_slides"] == held and record["trained_on"] == keep
    assert "4 training slides (2 of the cohort left out of training)" in _section_model(
        tmp_path / "split"
    )


def test_checkpoint_record_wins_over_a_stale_training_json(tmp_path):
    from workbench.report import _section_model

    model = tmp_path / "model"
    model.mkdir()
    record = {"label": "new", "classes": ["a", "b"], "kind": "global", "trained_on": ["S1"],
              "held_out_slides": [], "history": [{"epoch": 1, "loss": 0.5}]}  # fmt: skip
    (model / "config.json").write_text(json.dumps({"extra": record}))
    (tmp_path / "training.json").write_text(json.dumps({"label": "old", "history": []}))
    shown = _section_model(tmp_path)
    assert "Label learnt: <b>new</b>" in shown and "1 training slides" in shown
    assert "<b>old</b>" not in shown


def _sections(html: str) -> dict[str, str]:
    """The body of each ``<section id=...>`` of a report."""
    return dict(re.findall(r'<section id="(\w+)"><h2>[^<]*</h2>(.*?)</section>', html, re.S))


def test_report_shows_one_gallery_row_per_phenotype(run_dir):
    root, cohort = run_dir
    html = write_report(root).read_text()
    body = _sections(html)["phenotypes"]
    stored = cohort.uns["phenotype_exemplars"]["phenotypes"]
    assert len(stored) >= 2
    assert f'data-rows="{len(stored)}"' in body and "data:image/png;base64," in body
    for name, entry in stored.items():
        assert f"<td>{name}</td><td>{entry['n_regions']}</td>" in body  # one table row each
        assert len(entry["crops"]) > 0


def test_every_marker_in_the_table_has_a_sentence(run_dir):
    from html import escape

    from workbench.tl import describe_marker

    root, cohort = run_dir
    body = _sections(write_report(root).read_text())["markers"]
    table = body[body.index('<div class="marker-table">') :]
    table = table[: table.index("</table>")]
    markers = re.findall(r"<tr(?: class=\"called\")?><td>([^<]+)</td>", table)
    assert markers == [escape(m) for m in cohort.uns["survival_screen"].index[:15]]
    for m in cohort.uns["survival_screen"].index[:15]:
        sentence = describe_marker(m)
        assert "not one of tl.spatial" not in sentence
        assert f"<td>{escape(sentence)}</td></tr>" in table
    assert "Does a marker add to the clinical variables?" in body  # concordance explained
    assert "can score <i>below</i> clinical alone" in body


def test_kaplan_meier_section_names_the_time_unit(run_dir, tmp_path):
    import shutil

    root, _ = run_dir
    html = write_report(root, tmp_path / "a.html").read_text()
    assert "--time-unit months" in _sections(html)["survival"]  # unknown: says how to set it
    html = write_report(root, tmp_path / "b.html", time_unit="days").read_text()
    assert "Times are in days." in _sections(html)["survival"]
    run = tmp_path / "run"
    shutil.copytree(root, run)
    (run / "cohort").mkdir()
    (run / "cohort" / "cohort.json").write_text(
        json.dumps({"hazard_model": {"time_unit": "months"}})
    )
    html = write_report(run).read_text()
    assert "Times are in months." in _sections(html)["survival"]
    assert "median follow-up (months)" in html


def test_report_draws_a_split_once_not_its_mirror_image():
    import pandas as pd

    from workbench import tl
    from workbench.report import _km_markers

    rng = np.random.default_rng(0)
    n = 60
    risk = rng.normal(size=n)
    clin = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)],
                         "time": rng.exponential(10 * np.exp(-risk)), "event": 1})  # fmt: skip
    values = pd.DataFrame(
        {"share": risk, "complement": -risk, "other": rng.normal(size=n)}, index=clin["patient_id"]
    )
    co = tl.aggregate(values, clin, slide_key=None)
    co.obs["discovery_split"] = pd.Categorical(["discovery"] * 20 + ["validation"] * 40)
    tl.survival(co, cv_top=0)
    chosen, skipped = _km_markers(co, ["share", "complement", "other"])
    assert chosen == ["share", "other"]
    assert skipped == [("complement", "share")]


def _slide_copies(src, folder, names):
    import anndata as ad

    folder.mkdir(parents=True)
    for name in names:
        a = ad.read_h5ad(src)
        a.uns["slide_id"] = name
        write_h5ad(a, folder / f"{name}.h5ad")


def test_examples_are_the_held_out_slides_when_the_run_records_them(run_dir, tmp_path):
    root, _ = run_dir
    _slide_copies(root / "slides" / "disc.h5ad", tmp_path / "slides", ["A", "B", "C"])
    record = {"train_slides": ["A", "B"], "test_slides": ["C"]}
    (tmp_path / "training.json").write_text(json.dumps(record))
    body = _sections(write_report(tmp_path, n_examples=1).read_text())["explain"]
    assert re.findall(r"<h3>(\w+)</h3>", body) == ["C"]
    assert "held-out test slides" in body
    # no test slides recorded, but a slide the model never saw: that one
    (tmp_path / "training.json").write_text(json.dumps({"train_slides": ["A", "C"]}))
    body = _sections(write_report(tmp_path, n_examples=1).read_text())["explain"]
    assert re.findall(r"<h3>(\w+)</h3>", body) == ["B"] and "never saw" in body
    # every slide was trained on: shown, and said so
    (tmp_path / "training.json").write_text(json.dumps({"train_slides": ["A", "B", "C"]}))
    body = _sections(write_report(tmp_path, n_examples=1).read_text())["explain"]
    assert "The examples are training slides" in body and "--validation 0.2" in body


def test_examples_read_the_test_slides_from_the_checkpoint_record(run_dir, tmp_path):
    """The checkpoint's own record (config.json ``extra``) is read before training.json."""
    from workbench.report import _training_record

    root, _ = run_dir
    _slide_copies(root / "slides" / "disc.h5ad", tmp_path / "slides", ["A", "B"])
    (tmp_path / "model").mkdir()
    model = SelfCalibratedModel(
        in_features=len(feature_names()), hidden=8, detail_width=4, embed_dim=8, top_k=2,
        class_names=["low", "high"],
    )  # fmt: skip
    from workbench.models import save_checkpoint

    save_checkpoint(model, tmp_path / "model", extra={"held_out_slides": ["B"], "label": "grade",
                                                      "train_slides": ["A"], "history": []})  # fmt: skip
    (tmp_path / "training.json").write_text(json.dumps({"test_slides": ["A"], "label": "old"}))
    _, record = _training_record(tmp_path)  # the checkpoint's record wins over a stale file
    assert record["held_out_slides"] == ["B"] and record["label"] == "grade"
    body = _sections(write_report(tmp_path, n_examples=1).read_text())["explain"]
    assert re.findall(r"<h3>(\w+)</h3>", body) == ["B"]


def test_a_run_with_a_model_and_slides_names_the_discover_command(run_dir, tmp_path):
    root, _ = run_dir
    _slide_copies(root / "slides" / "disc.h5ad", tmp_path / "slides", ["A"])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "training.json").write_text(
        json.dumps({"label": "grade", "classes": ["low", "high"], "train_slides": ["Z"]})
    )
    sections = _sections(write_report(tmp_path).read_text())
    command = f"workbench discover {tmp_path}/slides clinical.csv --out {tmp_path}"
    for sid in ("phenotypes", "markers", "survival"):
        assert command in sections[sid], sid
    for sid in ("cohort", "explain"):
        assert 'class="missing"' not in sections[sid], sid
    assert "1 slide explained" in sections["cohort"]
    # trained without validation patients: the model section says how to hold some out
    assert "Label learnt: <b>grade</b>" in sections["model"]
    assert "No held-out evaluation" in sections["model"] and "--validation 0.2" in sections["model"]
    assert "workbench.interactive" in sections["refine"]


def test_a_survival_run_reports_risk_not_probabilities(run_dir, tmp_path):
    """A Cox model's run: the model section says what was learnt and the examples give the
    slide risk (higher = shorter survival), not an empty probabilities line."""
    import anndata as ad

    root, _ = run_dir
    a = ad.read_h5ad(root / "slides" / "disc.h5ad")
    ex = a.uns["explain"]
    for key in ("probabilities", "raw_probabilities", "temperature", "global_probabilities",
                "predicted_class", "predicted_label"):  # fmt: skip
        ex.pop(key, None)
    ex.update(target="survival", risk=1.25, global_risk=0.5)
    write_h5ad(a, tmp_path / "slides" / "S1.h5ad")
    (tmp_path / "model").mkdir()
    record = {"history": [{"epoch": 1, "loss": 0.7}], "kind": "global", "train_slides": ["S0"],
              "held_out_slides": ["S1"], "survival": {"target": "survival", "time_key": "time",
              "event_key": "event", "ties": "efron"}}  # fmt: skip
    record["cv_summary"] = {"folds": 3, "repeats": 1, "harrell_c": 0.71,
                            "harrell_c_ci": [0.6, 0.8], "harrell_c_mean_of_folds": 0.72,
                            "uno_c_mean_of_folds": 0.7}  # fmt: skip
    record["cv"] = [{"repeat": 0, "fold": 1, "harrell_c": 0.75, "uno_c": 0.74, "tau": 30.0}]
    (tmp_path / "model" / "config.json").write_text(json.dumps({"extra": record}))
    sections = _sections(write_report(tmp_path, n_examples=1).read_text())
    assert "pooled out-of-fold Harrell's C <b>0.710</b> (95% CI 0.600" in sections["model"]
    assert "<th>uno_c</th>" in sections["model"] and "AUC" not in sections["model"]
    assert "Survival learnt (Cox partial likelihood): time <b>time</b>" in sections["model"]
    assert "Label learnt" not in sections["model"]
    # a survival model's examples are its prognostic focus (no separate Explanations)
    assert "explain" not in sections
    assert (
        "slide risk: 1.25 (log relative hazard; higher = shorter survival)"
        in sections["prognostic"]
    )
    assert "slide-level probabilities" not in sections["prognostic"]


# ------------------------------------------------------------------ survival model sections
def _survival_slides(src, folder, risks: dict[str, float]):
    """Copies of an explained slide as a survival model writes them (tl.extract leaves out
    the class keys), each with its own risk."""
    import anndata as ad

    folder.mkdir(parents=True, exist_ok=True)
    for name, risk in risks.items():
        a = ad.read_h5ad(src)
        ex = a.uns["explain"]
        for key in ("probabilities", "raw_probabilities", "temperature", "global_probabilities",
                    "predicted_class", "predicted_label"):  # fmt: skip
            ex.pop(key, None)
        ex.update(target="survival", risk=float(risk), global_risk=float(risk) / 2)
        a.uns["slide_id"] = name
        write_h5ad(a, folder / f"{name}.h5ad")


def _survival_record(train: list[str], **extra) -> dict:
    return {"history": [{"epoch": 1, "loss": 0.7}], "kind": "sew", "train_slides": train,
            "held_out_slides": [], "survival": {"target": "survival", "time_key": "time",
            "event_key": "event", "ties": "efron"}, **extra}  # fmt: skip


def _write_record(root, record: dict) -> None:
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / "config.json").write_text(json.dumps({"extra": record}))


def _survival_cohort(risks: dict[str, float], seed: int = 0):
    """A discovery cohort AnnData of one patient per slide whose survival follows the risk
    (so that the risk groups separate), with the `slides`, time and event columns
    tl.aggregate writes."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = list(risks)
    r = np.array([risks[s] for s in names])
    time = rng.exponential(30 * np.exp(-1.5 * r)).round(2) + 0.5
    event = (rng.uniform(size=len(r)) < 0.8).astype(int)
    obs = pd.DataFrame({"time": time, "event": event, "slides": names},
                       index=[f"P{s[1:]}" for s in names])  # fmt: skip
    co = ad.AnnData(X=np.zeros((len(r), 1)), obs=obs)
    co.uns["cohort"] = {"duration_key": "time", "event_key": "event"}
    return co


def _spy_risk_groups(monkeypatch):
    """Record what the report hands pl.risk_groups (the curves themselves are pixels)."""
    from workbench import pl

    calls = []
    real = pl.risk_groups

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pl, "risk_groups", spy)
    return calls


def test_a_survival_run_renders_risk_groups_and_prognostic_focus(run_dir, tmp_path, monkeypatch):
    """Out-of-fold risks -> held-out risk groups (each fold cut on its own training
    patients' median when the file records it); the examples -> prognostic focus with the
    diverging risk map, the magnified focus regions and the focused features."""
    import pandas as pd

    root, _ = run_dir
    names = [f"S{i:02d}" for i in range(6)]
    _survival_slides(root / "slides" / "disc.h5ad", tmp_path / "slides",
                     dict(zip(names, np.linspace(-1, 1, 6), strict=True)))  # fmt: skip
    rng = np.random.default_rng(0)
    n = 30
    fold = np.arange(n) % 3 + 1
    risk = rng.normal(size=n) + 2.0 * fold  # fold models at different levels
    oof = pd.DataFrame({"patient": [f"P{i:03d}" for i in range(n)], "fold": fold, "repeat": 1,
                        "time": rng.exponential(20, n).round(2) + 0.1, "event": 1, "risk": risk,
                        "train_cut": 2.0 * fold})  # fmt: skip
    oof.to_csv(tmp_path / "model_oof.csv", index=False)
    _write_record(tmp_path, _survival_record(names[:4], oof_predictions="oof_predictions.csv"))
    (tmp_path / "model_oof.csv").rename(tmp_path / "model" / "oof_predictions.csv")
    calls = _spy_risk_groups(monkeypatch)
    html = write_report(tmp_path, n_examples=2).read_text()
    sections = _sections(html)
    assert "explain" not in sections  # the risk maps live in "Prognostic focus"
    assert '<a href="#risk_groups">Risk groups</a>' in html
    groups = sections["risk_groups"]
    assert "Held-out patients" in groups and "out-of-fold" in groups
    assert "its own training patients" in groups and 'class="missing"' not in groups
    assert groups.count("data:image/png;base64,") == 1
    (call,) = calls
    assert len(call["data"]) == n and call["train_risk"] == {1: [2.0], 2: [4.0], 3: [6.0]}
    focus = sections["prognostic"]
    # held-out slides first: S04 and S05 were not trained on
    assert re.findall(r"<h3>(S\d+)</h3>", focus) == ["S04", "S05"]
    assert focus.count("data:image/png;base64,") == 4  # a risk map and a gallery each
    assert "risk contribution" in focus and "slide risk: 0.60" in focus
    assert "The focused features" in focus and "rho_risk" in focus
    assert "what it measures" in focus and "haematoxylin" in focus
    # no discovery in this run: the focused features' next step is named
    assert f"workbench discover {tmp_path}/slides clinical.csv" in focus


def test_out_of_fold_risk_groups_without_fold_cuts_say_the_folds_differ(tmp_path, monkeypatch):
    import pandas as pd

    rng = np.random.default_rng(1)
    n = 30
    fold = np.arange(n) % 3 + 1
    oof = pd.DataFrame({"patient": [f"P{i}" for i in range(n)], "fold": fold,
                        "repeat": 1, "time": rng.exponential(20, n) + 0.1, "event": 1,
                        "risk": rng.normal(size=n) + 3.0 * fold})  # fmt: skip
    _write_record(tmp_path, _survival_record([], oof_predictions="oof_predictions.csv"))
    twice = pd.concat([oof, oof.assign(repeat=2)])  # repeats: one patient drawn once
    twice.to_csv(tmp_path / "model" / "oof_predictions.csv", index=False)
    calls = _spy_risk_groups(monkeypatch)
    groups = _sections(write_report(tmp_path).read_text())["risk_groups"]
    (call,) = calls
    assert len(call["data"]) == n and "train_risk" not in call  # other folds' risks
    assert "repeat 1 of 2" in groups and "other folds' out-of-fold risks" in groups
    assert "partly reflect the fold a patient was in" in groups


def test_risk_groups_of_held_out_test_patients_cut_on_training_patients(
    run_dir, tmp_path, monkeypatch
):
    root, _ = run_dir
    names = [f"S{i:02d}" for i in range(12)]
    risks = dict(zip(names, np.linspace(-1.5, 1.5, 12), strict=True))
    _survival_slides(root / "slides" / "disc.h5ad", tmp_path / "slides", risks)
    write_h5ad(_survival_cohort(risks), tmp_path / "discovery.h5ad")
    train = names[::2]
    _write_record(tmp_path, _survival_record(train))
    calls = _spy_risk_groups(monkeypatch)
    groups = _sections(write_report(tmp_path).read_text())["risk_groups"]
    assert "Held-out test patients" in groups and "6 training patients" in groups
    (call,) = calls
    assert np.allclose(call["risk"], [risks[s] for s in names[1::2]])  # the held-out ones
    assert np.allclose(call["train_risk"], [risks[s] for s in train])


def test_only_in_sample_risks_are_called_in_sample(run_dir, tmp_path, monkeypatch):
    """Every explained patient was trained on and there are no out-of-fold risks: the curves
    are drawn, but the title and the text say plainly that they are in-sample."""
    import matplotlib.axes

    root, _ = run_dir
    names = [f"S{i:02d}" for i in range(8)]
    risks = dict(zip(names, np.linspace(-1, 1, 8), strict=True))
    _survival_slides(root / "slides" / "disc.h5ad", tmp_path / "slides", risks)
    write_h5ad(_survival_cohort(risks), tmp_path / "discovery.h5ad")
    _write_record(tmp_path, _survival_record(names))
    titles = []
    real = matplotlib.axes.Axes.set_title

    def keep(self, label, *args, **kwargs):
        titles.append(str(label))
        return real(self, label, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", keep)
    groups = _sections(write_report(tmp_path).read_text())["risk_groups"]
    assert "In-sample only" in groups and "not how it would sort new patients" in groups
    assert "--survival TIME,EVENT --folds 5" in groups  # how to get held-out curves
    assert any(t.startswith("IN-SAMPLE: the model was trained on these patients") for t in titles)
    assert not any(t.startswith("held out") for t in titles)


def test_a_class_run_has_no_survival_sections(run_dir):
    root, _ = run_dir
    sections = _sections(write_report(root).read_text())
    assert "risk_groups" not in sections and "prognostic" not in sections
    assert "explain" in sections


def test_missing_survival_inputs_name_the_command(run_dir, tmp_path):
    """A survival model without cross-validation or survival times, and one without
    explained slides: each section names the command that would fill it."""
    root, _ = run_dir
    _write_record(tmp_path, _survival_record(["S00"]))
    sections = _sections(write_report(tmp_path).read_text())
    train = (
        "workbench train SLIDES --clinical clinical.csv --survival TIME,EVENT --folds 5 "
        f"--out {tmp_path}/model"
    )
    assert 'class="missing"' in sections["risk_groups"] and train in sections["risk_groups"]
    assert "no discovery.h5ad" in sections["risk_groups"]
    assert train in sections["model"] and "--label" not in sections["model"]  # no held-out C
    extract = f"workbench extract SLIDES --model {tmp_path}/model --out {tmp_path}/slides"
    assert 'class="missing"' in sections["prognostic"] and extract in sections["prognostic"]
    # slides explained but trained without folds, and no discovery: still named
    _survival_slides(root / "slides" / "disc.h5ad", tmp_path / "slides", {"S00": 0.3})
    sections = _sections(write_report(tmp_path).read_text())
    assert train in sections["risk_groups"]
    assert sections["prognostic"].count("data:image/png;base64,") == 2
    # a discovery cohort without survival columns: said so, and the command named
    co = _survival_cohort({"S00": 0.3})
    del co.obs["time"]
    write_h5ad(co, tmp_path / "discovery.h5ad")
    groups = _sections(write_report(tmp_path).read_text())["risk_groups"]
    assert "no time and event columns" in groups and train in groups


def test_risk_groups_of_validation_patients_say_they_stopped_training(
    run_dir, tmp_path, monkeypatch
):
    """No folds and no patient left out, but validation patients: their curves, cut on the
    training slides' risks, and the figure says they chose when training stopped."""
    root, _ = run_dir
    train = [f"S{i:02d}" for i in range(6)]
    risks = dict(zip(train, np.linspace(-1, 1, 6), strict=True))
    _survival_slides(root / "slides" / "disc.h5ad", tmp_path / "slides", risks)
    preds = [{"patient": f"V{i}", "slide": f"V{i}", "risk": float(r), "time": 5.0 + 10 * i,
              "event": i % 2} for i, r in enumerate(np.linspace(-2, 2, 8))]  # fmt: skip
    _write_record(tmp_path, _survival_record(train, validation={"slides": [p["slide"] for p in preds],
                                                                "predictions": preds}))  # fmt: skip
    record = json.loads((tmp_path / "model" / "config.json").read_text())
    record["extra"]["validation"].update(n_patients=8, n_events=4, best_epoch=3, c_index=0.6875)
    (tmp_path / "model" / "config.json").write_text(json.dumps(record))
    calls = _spy_risk_groups(monkeypatch)
    sections = _sections(write_report(tmp_path).read_text())
    groups = sections["risk_groups"]
    assert "Validation patients" in groups and "slightly" in groups
    assert "Harrell's C <b>0.688</b>" in sections["model"] and "AUC" not in sections["model"]
    (call,) = calls
    assert np.allclose(call["risk"], [p["risk"] for p in preds])
    assert np.allclose(call["train_risk"], [risks[s] for s in train])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*too few for an inner validation split")
def test_a_cross_validated_survival_model_reports_from_its_own_files(tiny_cohort, tmp_path):
    """The real files of `SlideTrainer(target="survival", folds=2)` + `tl.extract_cohort`:
    the report draws the out-of-fold risk groups and the prognostic focus."""
    from workbench.io import Cohort, read_clinical
    from workbench.tl import SlideTrainer, extract_cohort

    root = tiny_cohort.root
    table = read_clinical(root / "clinical.csv")
    table.loc[table["event"].astype(int).eq(1).idxmax(), "event"] = 0  # 2 censored: 2 folds
    cohort = Cohort.from_folder(root / "slides", table)
    trainer = SlideTrainer(kind="global", target="survival", folds=2, epochs=2, seed=0,
                           progress=False, n_boot=50,
                           settings={"thumbnail_mpp": 4.0, "n_segments": 60})  # fmt: skip
    trainer.fit(cohort).save(tmp_path / "model")
    extract_cohort(cohort, tmp_path / "model", tmp_path / "slides", progress=False)
    sections = _sections(write_report(tmp_path, n_examples=1).read_text())
    groups = sections["risk_groups"]
    assert "out-of-fold" in groups and f"<b>{len(trainer.oof_)}</b> patients" in groups
    assert groups.count("data:image/png;base64,") == 1 and 'class="missing"' not in groups
    focus = sections["prognostic"]
    assert f"{len(cohort.slide_ids)} slides explained by the survival model" in focus
    assert focus.count("data:image/png;base64,") == 2 and "The focused features" in focus
    assert "explain" not in sections
