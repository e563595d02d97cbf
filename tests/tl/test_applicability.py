"""Applicability: the checkpoint records how its training slides looked; extract scores each
slide against it and against the brightfield check (issue #25, item 1)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from workbench import CheckpointError
from workbench.io import Slide
from workbench.models import save_checkpoint
from workbench.pp import check_brightfield
from workbench.tl import ApplicabilityRecord, extract
from workbench.tl._applicability import (
    COLOUR_FEATURES,
    NO_RECORD,
    applicability_verdict,
    thumbnail_colour,
)


def _fluorescence_image(seed: int = 0) -> np.ndarray:
    """A DAPI-like field: black background, bright blue nuclei (spots)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 12, (384, 512, 3)).astype(np.float64)
    rows, cols = np.mgrid[0:384, 0:512]
    for r, c in rng.uniform((20, 20), (364, 492), (60, 2)):
        spot = (rows - r) ** 2 + (cols - c) ** 2 < 9**2
        img[spot] = (20, 30, 230)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def fluorescence_slide():
    return Slide.from_array(_fluorescence_image(), mpp=2.0, name="dapi")


# --- the record (numpy only) ------------------------------------------------------------
def _gaussian(n, d=8, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(0.5, 3.0, d) + 10.0 + shift


def test_record_passes_its_own_distribution_and_flags_a_shifted_slide():
    rec = ApplicabilityRecord().fit(embedding=_gaussian(40))
    held = _gaussian(300, seed=1)
    scores = np.array([rec.score(embedding=v)[0] for v in held])
    assert np.mean(scores > 1) < 0.1  # the threshold sits at the top of the LOO distances
    score, reasons = rec.score(embedding=_gaussian(1, shift=6.0, seed=2)[0])
    assert score > 1 and len(reasons) == 1 and "off the training distribution" in reasons[0]
    assert "slide embedding" in reasons[0]
    # The training slides themselves are (nearly all) within the threshold.
    own = np.array([rec.score(embedding=v)[0] for v in _gaussian(40)])
    assert np.mean(own <= 1) >= 0.95


def test_record_round_trips_through_json_and_scores_the_same():
    colour = np.abs(_gaussian(12, d=len(COLOUR_FEATURES), seed=4)) / 10
    rec = ApplicabilityRecord().fit(colour=colour, embedding=_gaussian(12, seed=5))
    back = ApplicabilityRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    probe = dict(colour=colour[0] * 3, embedding=_gaussian(1, shift=4, seed=6)[0])
    assert back.score(**probe) == rec.score(**probe)
    assert rec.score(**probe)[0] > 1
    assert "colour" in repr(back) and back.n_slides_ == 12


def test_too_few_training_slides_give_no_score():
    rec = ApplicabilityRecord(min_slides=5).fit(embedding=_gaussian(4))
    score, reasons = rec.score(embedding=_gaussian(1, shift=50)[0])
    assert math.isnan(score) and reasons == []
    assert rec.to_dict()["blocks"]["embedding"]["threshold"] is None  # JSON: no NaN
    check = check_brightfield(_he_image())
    v = applicability_verdict(check, rec.to_dict(), embedding=_gaussian(1)[0])
    assert v["applicable"] and math.isnan(v["score"]) and "fewer than 5" in v["reasons"][0]


def test_bad_records_and_inputs_are_refused():
    with pytest.raises(ValueError, match="colour or the embedding"):
        ApplicabilityRecord().fit()
    with pytest.raises(ValueError, match="same n_slides"):
        ApplicabilityRecord().fit(colour=np.zeros((5, 7)), embedding=np.zeros((6, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        ApplicabilityRecord().fit(embedding=np.full((6, 3), np.nan))
    with pytest.raises(ValueError, match="quantile"):
        ApplicabilityRecord(quantile=0.1)
    with pytest.raises(CheckpointError, match="not readable"):
        ApplicabilityRecord.from_dict({"version": 99})
    rec = ApplicabilityRecord().fit(embedding=_gaussian(8))
    with pytest.raises(CheckpointError, match="another model"):
        rec.score(embedding=np.zeros(3))


def _he_image():
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:384, 0:512]
    img = np.full((384, 512, 3), 245.0)
    img[(rows - 192) ** 2 + (cols - 200) ** 2 < 150**2] = (230, 150, 190)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_thumbnail_colour_tells_fluorescence_from_he():
    he, fl = thumbnail_colour(_he_image()), thumbnail_colour(_fluorescence_image())
    assert he.shape == fl.shape == (len(COLOUR_FEATURES),)
    assert 0.2 < he[0] < 0.7 and he[1] > 230  # a tissue disc on bright glass
    assert fl[1] < 20  # the "glass" of a fluorescence image is black
    assert he[3] > he[2] and he[3] > he[4]  # H&E absorbs green most


def test_verdict_without_record_and_without_brightfield():
    fl = check_brightfield(_fluorescence_image())
    v = applicability_verdict(fl, None)
    assert v["applicable"] is False and v["graded"] is False and v["brightfield"] is False
    assert math.isnan(v["score"]) and NO_RECORD in v["reasons"]
    assert any(r.startswith("not brightfield H&E") for r in v["reasons"])
    assert any("--force-grade" in r for r in v["reasons"])
    forced = applicability_verdict(fl, None, forced=True)
    assert (
        forced["graded"]
        and not forced["applicable"]
        and "graded anyway (forced)" in forced["reasons"]
    )
    he = applicability_verdict(check_brightfield(_he_image()), None)
    assert he == {
        "applicable": True, "score": he["score"], "reasons": [NO_RECORD],
        "brightfield": True, "graded": True,
    }  # fmt: skip
    assert math.isnan(he["score"])


# --- extract ----------------------------------------------------------------------------
def test_fluorescence_slide_is_not_graded_without_force(fluorescence_slide, tiny_sew, tmp_path):
    import anndata as ad

    from workbench.io import write_h5ad

    model = tiny_sew(0)
    with pytest.warns(UserWarning, match="brightfield"):
        a = extract(fluorescence_slide, model)
    ex = a.uns["explain"]
    app = ex["applicability"]
    assert app["applicable"] is False and app["graded"] is False
    assert np.isnan(ex["probabilities"]).all() and np.isnan(ex["raw_probabilities"]).all()
    assert ex["predicted_class"] == -1 and ex["predicted_label"] == ""
    # stored: the verdict survives the file (and so reaches a rerun and the report)
    back = ad.read_h5ad(write_h5ad(a, tmp_path / "dapi.h5ad")).uns["explain"]["applicability"]
    assert not bool(back["applicable"]) and any("not brightfield" in r for r in back["reasons"])
    import matplotlib.pyplot as plt

    from workbench import pl

    ax = pl.slide_overlay(a, title=True)
    assert ax.get_title() == "not graded (not brightfield H&E)"
    plt.close("all")
    with pytest.warns(UserWarning, match="brightfield"):
        forced = extract(fluorescence_slide, model, force=True).uns["explain"]
    assert np.isclose(np.sum(forced["probabilities"]), 1.0) and forced["predicted_class"] >= 0
    assert forced["applicability"]["applicable"] is False
    assert "graded anyway (forced)" in forced["applicability"]["reasons"]


def test_old_checkpoint_without_record_still_extracts(he_like_image, tiny_sew, tmp_path):
    folder = save_checkpoint(tiny_sew(0), tmp_path / "old")  # no extra: as before records
    a = extract(Slide.from_array(he_like_image, mpp=2.0, name="disc"), folder)
    app = a.uns["explain"]["applicability"]
    assert app["applicable"] is True and math.isnan(app["score"])
    assert app["reasons"] == [NO_RECORD]
    assert np.isclose(np.sum(a.uns["explain"]["probabilities"]), 1.0)


TINY_SETTINGS = {"thumbnail_mpp": 8.0, "n_segments": 300, "crop_size": 64}
TINY_MODEL = {"hidden": 16, "detail_width": 8, "embed_dim": 16, "top_k": 2}


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory):
    from workbench.tl import SlideTrainer

    cohort = tiny_cohort.assign(high_grade=lambda t: (t["grade"] == 3).astype(int))
    trainer = SlideTrainer(
        kind="sew", label="high_grade", epochs=2, lr=5e-3, progress=False,
        settings=TINY_SETTINGS, model_kwargs=TINY_MODEL,
    ).fit(cohort)  # fmt: skip
    return trainer, trainer.save(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.mark.slow
def test_record_round_trips_in_the_checkpoint(trained):
    from workbench.models import load_checkpoint, read_checkpoint_config

    trainer, folder = trained
    rec = trainer.applicability_
    assert rec["n_slides"] == 6 and set(rec["blocks"]) == {"colour", "embedding"}
    assert len(rec["blocks"]["embedding"]["mean"]) == 16  # the global branch's embedding
    assert read_checkpoint_config(folder)["extra"]["applicability"] == json.loads(json.dumps(rec))
    assert load_checkpoint(folder).checkpoint_extra_["applicability"] == rec


@pytest.mark.slow
def test_training_slide_is_applicable_and_fluorescence_is_not(trained, tiny_cohort):
    _, folder = trained
    a = extract(tiny_cohort.slide_path("S001"), folder)
    app = a.uns["explain"]["applicability"]
    assert app["applicable"] is True and app["brightfield"] and app["graded"]
    assert 0 <= app["score"] <= 1 and app["reasons"] == []
    fl = Slide.from_array(_fluorescence_image(), mpp=2.0, name="dapi")
    with pytest.warns(UserWarning, match="brightfield"):
        b = extract(fl, folder)
    app = b.uns["explain"]["applicability"]
    assert app["applicable"] is False and app["score"] > 1
    assert any("thumbnail colour" in r for r in app["reasons"])
    assert np.isnan(b.uns["explain"]["probabilities"]).all()


# --- shown: extract_cohort's table and the command line -----------------------------------
def test_cli_extract_prints_one_line_per_flagged_slide(
    he_like_image, tiny_sew, write_pyramid_tiff, tmp_path, capsys
):
    from workbench.cli import main
    from workbench.tl import extract_cohort

    slides = tmp_path / "slides"
    write_pyramid_tiff(slides / "disc.tif", he_like_image, mpp=2.0)
    write_pyramid_tiff(slides / "dapi.tif", _fluorescence_image(), mpp=2.0)
    ckpt = save_checkpoint(tiny_sew(0), tmp_path / "model")
    out = tmp_path / "out"
    assert main(["extract", str(slides), "--model", str(ckpt), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    flagged = [line for line in printed.splitlines() if "flagged" in line]
    assert len(flagged) == 1 and flagged[0].startswith("  flagged dapi (not graded)")
    assert "not brightfield H&E" in flagged[0]
    # the table reads the stored verdicts, also of skipped slides (a rerun)
    table = extract_cohort(slides, ckpt, out, progress=False).set_index("slide_id")
    assert table["status"].tolist() == ["skipped", "skipped"]
    assert table.loc["dapi", "applicable"] == False  # noqa: E712 (an object column)
    assert table.loc["disc", "applicable"] and table.loc["disc", "graded"]
    assert not table.loc["dapi", "graded"]
    assert NO_RECORD in table.loc["disc", "applicability_reasons"]
    # --force-grade: recomputed (another fingerprint), graded and still flagged
    assert main(["extract", str(slides), "--model", str(ckpt), "--out", str(out),
                 "--no-progress", "--force-grade"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "'done': 2" in printed and "  flagged dapi (graded)" in printed


@pytest.mark.realdata
def test_real_fluorescence_slide_is_stored_as_not_applicable(real_data, tiny_sew):
    from workbench import NotBrightfieldWarning

    with pytest.warns(NotBrightfieldWarning, match="not graded"):
        a = extract(real_data / "slides" / "hamamatsu-dapi-7-levels.ndpi", tiny_sew(0))
    ex = a.uns["explain"]
    assert ex["applicability"]["applicable"] is False and ex["predicted_class"] == -1
    assert np.isnan(ex["probabilities"]).all()


def test_report_shows_a_flagged_slide_as_flagged(
    fluorescence_slide, he_like_image, tiny_sew, tmp_path
):
    from workbench.io import write_h5ad
    from workbench.report import write_report

    model = tiny_sew(0)
    with pytest.warns(UserWarning, match="brightfield"):
        write_h5ad(extract(fluorescence_slide, model), tmp_path / "slides" / "dapi.h5ad")
    disc = Slide.from_array(he_like_image, mpp=2.0, name="disc")
    write_h5ad(extract(disc, model), tmp_path / "slides" / "disc.h5ad")
    page = write_report(tmp_path).read_text()
    assert page.count("flagged: the model may not apply to this slide (not graded)") == 1
    dapi = page[page.index("<h3>dapi</h3>") :]
    assert dapi.index("not brightfield H&amp;E") < dapi.index('style="color:#999"')
    disc_part = page[page.index("<h3>disc</h3>") :].split("<h3>")[1]
    assert 'class="flagged"' not in disc_part and "color:#999" not in disc_part


def test_samples_without_files_record_the_embedding_only():
    import torch

    from workbench.models import SlideSample
    from workbench.pp import feature_names
    from workbench.tl import SlideTrainer
    from workbench.tl._applicability import slide_embedding

    rng = np.random.default_rng(0)
    ring = np.arange(12)
    edges = torch.from_numpy(np.stack([np.r_[ring, (ring + 1) % 12], np.r_[(ring + 1) % 12, ring]]))
    samples = []
    for i in range(8):
        x = rng.normal(0, 1, (12, len(feature_names()))).astype(np.float32)
        x[:, 0] += 1.5 * (i % 2)
        samples.append(SlideSample(torch.from_numpy(x), edges.long(), i % 2, name=f"S{i}"))
    t = SlideTrainer(kind="global", epochs=2, progress=False, model_kwargs={"hidden": 8})
    rec = t.fit(samples=samples).applicability_
    assert set(rec["blocks"]) == {"embedding"} and rec["n_slides"] == 8
    assert len(rec["blocks"]["embedding"]["mean"]) == 8  # the global branch's hidden width
    # a kind without a global branch: the mean region features stand in
    x = samples[0].features
    assert np.allclose(slide_embedding(object(), x, samples[0].edge_index), x.mean(0).numpy())


@pytest.mark.slow
def test_a_model_object_sent_to_dask_workers_keeps_its_record_and_temperature(
    he_like_image, tiny_sew, write_pyramid_tiff, tmp_path
):
    import anndata as ad

    from workbench.tl import extract_cohort

    tif = write_pyramid_tiff(tmp_path / "slides" / "disc.tif", he_like_image, mpp=2.0)
    model = tiny_sew(0)
    model.calibration_ = {"temperature": np.float64(3.0)}
    model.applicability_ = ApplicabilityRecord().fit(embedding=_gaussian(8, d=16)).to_dict()
    here = extract(Slide(tif), model).uns["explain"]
    table = extract_cohort(
        {"disc": tif}, model, tmp_path / "out", client="local", n_workers=1, progress=False
    )
    assert table["status"].tolist() == ["done"]
    there = ad.read_h5ad(tmp_path / "out" / "disc.h5ad").uns["explain"]
    assert there["temperature"] == 3.0
    assert np.isclose(there["applicability"]["score"], here["applicability"]["score"])
    assert table.loc[0, "applicable"] == here["applicability"]["applicable"]
