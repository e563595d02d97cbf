from __future__ import annotations

import json

import numpy as np
import pytest

from workbench import MissingResolutionError
from workbench.io import Slide, read_geojson, write_h5ad
from workbench.models import save_checkpoint
from workbench.tl import export_geojson, extract, extract_cohort


@pytest.fixture(scope="module")
def model(tiny_sew):
    return tiny_sew(0)


@pytest.fixture
def array_slide(he_like_image):
    # 384x512 px at 2 µm/px: a thumbnail of 192x256 px at 4 µm/px.
    return Slide.from_array(he_like_image, mpp=2.0, name="disc")


def test_extract_writes_documented_keys(array_slide, model, tmp_path):
    adata = extract(array_slide, model)
    for key in ("focus_score", "lesion_prob", "is_focus", "region_id"):
        assert key in adata.obs
    assert adata.obs["is_focus"].sum() == 3
    assert ((adata.obs["focus_score"] >= 0) & (adata.obs["focus_score"] <= 1)).all()
    assert adata.obsm["X_focus"].shape == (adata.n_obs, 16)
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    ex = adata.uns["explain"]
    assert ex["class_names"] == ["low", "high"] and ex["predicted_label"] in ("low", "high")
    assert np.isclose(np.sum(ex["probabilities"]), 1.0)
    assert ex["slide"]["mpp"] == 2.0
    assert adata.uns["slide_id"] == "disc"
    focus = ex["focus"]
    assert focus["crops"].shape == (3, 64, 64, 3) and focus["crops"].dtype == np.uint8
    assert focus["lesion_maps"].shape == (3, 64, 64)
    # Focus boxes are centred on their regions' centroids (level-0 pixels).
    centres = focus["boxes_xywh"][:, :2] + focus["boxes_xywh"][:, 2:] / 2
    assert np.allclose(centres, adata.obsm["spatial"][focus["obs_index"]])
    assert np.allclose(focus["boxes_xywh"][:, 2], 64 * 1.0 / 2.0)  # 64 px at 1 µm = 32 level-0 px
    assert adata.obs["is_focus"].to_numpy()[focus["obs_index"]].all()
    # The result survives an h5ad round trip.
    import anndata as ad

    back = ad.read_h5ad(write_h5ad(adata, tmp_path / "s.h5ad"))
    assert np.array_equal(back.uns["explain"]["focus"]["crops"], focus["crops"])
    assert back.obs["is_focus"].dtype == bool


def test_extract_from_checkpoint_gives_same_answer(array_slide, model, tmp_path):
    save_checkpoint(model, tmp_path / "m")
    a = extract(array_slide, model)
    b = extract(array_slide, tmp_path / "m")
    assert np.allclose(a.uns["explain"]["probabilities"], b.uns["explain"]["probabilities"])
    assert np.array_equal(a.obs["is_focus"], b.obs["is_focus"])


def test_missing_mpp_raises(he_like_image, model):
    with pytest.raises(MissingResolutionError):
        extract(Slide.from_array(he_like_image), model)


def test_export_geojson_for_qupath(array_slide, model, tmp_path):
    adata = extract(array_slide, model)
    adata.uns["explain"]["focus"]["lesion_maps"][0, 10:30, 10:30] = 0.99
    adata.uns["explain"]["focus"]["lesion_maps"][0, :10] = 0.01
    path = export_geojson(adata, tmp_path / "focus.geojson")
    anns = read_geojson(path)
    classes = [a.classification for a in anns]
    assert classes.count("Focus region") == 3 and "Tumor" in classes
    raw = json.loads(path.read_text())
    assert raw["type"] == "FeatureCollection"
    box = adata.uns["explain"]["focus"]["boxes_xywh"][0]
    tumour = next(a for a in anns if a.classification == "Tumor")
    x0, y0, x1, y1 = tumour.bounds()
    assert box[0] - 1 <= x0 and x1 <= box[0] + box[2] + 1 and box[1] - 1 <= y0


def test_extract_cohort_resumes_and_reports_failures(he_like_image, model, tmp_path):
    slides = {
        "a": Slide.from_array(he_like_image, mpp=2.0, name="a"),
        "b": Slide.from_array(he_like_image[:, ::-1].copy(), mpp=2.0, name="b"),
        "bad": Slide.from_array(he_like_image, name="no-mpp"),
    }
    out = tmp_path / "run"
    first = extract_cohort(slides, model, out, progress=False)
    assert first.set_index("slide_id")["status"].to_dict() == {
        "a": "done",
        "b": "done",
        "bad": "failed",
    }
    assert "MissingResolutionError" in first.set_index("slide_id").loc["bad", "error"]
    assert sorted(p.name for p in out.iterdir()) == ["a.h5ad", "b.h5ad"]  # no temp files
    mtime = (out / "a.h5ad").stat().st_mtime_ns
    second = extract_cohort(slides, model, out, progress=False)
    assert second.set_index("slide_id").loc[["a", "b"], "status"].tolist() == ["skipped", "skipped"]
    assert (out / "a.h5ad").stat().st_mtime_ns == mtime


@pytest.mark.realdata
def test_real_cmu_slide_runs_through_extract(real_data, model):
    adata = extract(real_data / "slides" / "CMU-1-Small-Region.svs", model)
    assert adata.n_obs > 10 and adata.obs["is_focus"].sum() == 3
    assert adata.uns["explain"]["slide"]["vendor"] == "aperio"


@pytest.mark.realdata
def test_tcga_slide_without_mpp_needs_one(real_data, model):
    path = real_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(MissingResolutionError):
        extract(path, model)
    adata = extract(path, model, mpp=0.5)
    assert adata.uns["explain"]["slide"]["mpp"] == 0.5


# --- on the synthetic cohort ------------------------------------------------------------
TINY_SETTINGS = {"thumbnail_mpp": 8.0, "n_segments": 300, "crop_size": 64}
TINY_MODEL = {"hidden": 16, "detail_width": 8, "embed_dim": 16, "top_k": 2}


@pytest.fixture(scope="module")
def trained_on_tiny(tiny_cohort):
    from workbench.tl import SlideTrainer

    cohort = tiny_cohort.assign(high_grade=lambda t: (t["grade"] == 3).astype(int))
    return SlideTrainer(
        kind="sew",
        label="high_grade",
        epochs=6,
        lr=5e-3,
        progress=False,
        settings=TINY_SETTINGS,
        model_kwargs=TINY_MODEL,
    ).fit(cohort)


@pytest.mark.slow
def test_training_lowers_the_loss_on_tiny_cohort(trained_on_tiny, tiny_cohort):
    h = trained_on_tiny.history_
    assert len(h) == 6 and h[-1]["slide"] < h[0]["slide"] and h[-1]["node"] < h[0]["node"]
    assert h[-1]["detail"] < h[1 + 1]["detail"]  # detail losses on from epoch 2 (20 % of 6)
    labels = {s.name: s.label for s in trained_on_tiny.samples_}
    grades = tiny_cohort.labels("grade")
    assert sorted(labels) == [f"S{i:03d}" for i in range(6)]
    assert all(labels[sid] == int(g == 3) for sid, g in grades.items())
    assert trained_on_tiny.classes_ == [0, 1]
    assert "fitted on" in repr(trained_on_tiny)


@pytest.mark.slow
def test_trained_model_round_trips_and_extracts_cohort(trained_on_tiny, tiny_cohort, tmp_path):
    from distributed import Client

    from workbench.models import load_checkpoint

    path = trained_on_tiny.save(tmp_path / "model")
    model = load_checkpoint(path)
    assert model.preprocessing["crop_size"] == 64
    assert model.checkpoint_extra_["kind"] == "sew"
    assert model.checkpoint_extra_["label"] == "high_grade"
    assert model.config["class_names"] == ["0", "1"] and model.config["label"] == "high_grade"
    sid = "S000"
    a = extract(tiny_cohort.slide_path(sid), trained_on_tiny.model_)
    b = extract(tiny_cohort.slide_path(sid), model)
    assert np.allclose(a.uns["explain"]["probabilities"], b.uns["explain"]["probabilities"])
    assert b.uns["explain"]["label"] == "high_grade" and b.uns["explain"]["encoder"] == "builtin"
    ids = ["S000", "S001"]
    with Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
    ) as client:
        table = extract_cohort(
            tiny_cohort.subset(ids), path, tmp_path / "run", client=client, progress=False
        )
    assert table["status"].tolist() == ["done", "done"]
    import anndata as ad

    back = ad.read_h5ad(tmp_path / "run" / f"{ids[0]}.h5ad")
    assert np.allclose(back.uns["explain"]["probabilities"], b.uns["explain"]["probabilities"])


@pytest.mark.slow
def test_extract_cohort_names_files_by_slide_id(trained_on_tiny, tiny_cohort, tmp_path):
    table = extract_cohort(tiny_cohort, trained_on_tiny.model_, tmp_path, progress=False)
    assert table["slide_id"].tolist() == [f"S{i:03d}" for i in range(6)]
    assert (table["status"] == "done").all()
    assert sorted(p.name for p in tmp_path.glob("*.h5ad")) == [f"S{i:03d}.h5ad" for i in range(6)]
    import anndata as ad

    assert ad.read_h5ad(tmp_path / "S003.h5ad").uns["slide_id"] == "S003"


def test_extract_cohort_takes_a_list_a_folder_or_a_cohort_with_mpp_overrides(
    he_like_image, model, tmp_path, write_pyramid_tiff
):
    from workbench.io import Cohort

    folder = tmp_path / "slides"
    write_pyramid_tiff(folder / "S1.ome.tiff", he_like_image, mpp=2.0)
    write_pyramid_tiff(folder / "TCGA-XX-0001.5A1B.tif", he_like_image, mpp=None)
    first = extract_cohort([folder / "S1.ome.tiff"], model, tmp_path / "a", progress=False)
    assert first["slide_id"].tolist() == ["S1"] and first["status"].tolist() == ["done"]
    # a folder: the slide without an mpp fails (named), the other is done
    second = extract_cohort(folder, model, tmp_path / "b", progress=False).set_index("slide_id")
    assert second.loc["S1", "status"] == "done"
    assert "MissingResolutionError" in second.loc["TCGA-XX-0001.5A1B", "error"]
    # a cohort carries the override for that slide
    cohort = Cohort.from_folder(folder, mpp={"TCGA-XX-0001.5A1B": 2.0})
    third = extract_cohort(cohort, model, tmp_path / "b", progress=False).set_index("slide_id")
    assert third["status"].to_dict() == {"S1": "skipped", "TCGA-XX-0001.5A1B": "done"}
    import anndata as ad

    out = ad.read_h5ad(tmp_path / "b" / "TCGA-XX-0001.5A1B.h5ad")
    assert out.uns["slide_id"] == "TCGA-XX-0001.5A1B" and out.uns["explain"]["slide"]["mpp"] == 2.0


def test_focus_in_mask_hand_checked():
    import anndata as ad

    from workbench.tl import focus_in_mask

    a = ad.AnnData(np.zeros((1, 1), np.float32))
    # centres in level-0 pixels; the mask is drawn at downsample 16 (so 4x4 mask = 64 px)
    a.uns["explain"] = {"focus": {"centers_xy": np.array([[8.0, 8.0], [40.0, 8.0], [63.0, 63.0],
                                                          [500.0, -3.0]])}}  # fmt: skip
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True  # level-0 x, y in [0, 16)
    mask[3, 3] = True
    np.testing.assert_array_equal(focus_in_mask(a, mask, 16), [True, False, True, False])


@pytest.mark.realdata
def test_a_fluorescence_slide_is_flagged_before_it_is_graded(real_data, model):
    from workbench import NotBrightfieldWarning

    with pytest.warns(NotBrightfieldWarning):
        extract(real_data / "slides" / "hamamatsu-dapi-7-levels.ndpi", model)


def test_an_he_slide_is_not_flagged(array_slide, model):
    import warnings

    from workbench import NotBrightfieldWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", NotBrightfieldWarning)
        extract(array_slide, model)


def test_nan_weights_give_an_error_not_a_label(array_slide, model):
    import copy

    import torch

    from workbench import NonFiniteError

    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.global_branch.classifier.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"class probabilities of slide disc hold \d NaN.*"
                       r"cause: the network's weights global_branch.classifier.weight"):  # fmt: skip
        extract(array_slide, broken)


def test_extract_applies_the_checkpoint_temperature(array_slide, model, tmp_path):
    from workbench.tl import model_fingerprint
    from workbench.tl._calibration import softmax_with_temperature

    plain = save_checkpoint(model, tmp_path / "plain")  # saved without calibration: T = 1
    hot = save_checkpoint(model, tmp_path / "hot", extra={"calibration": {"temperature": 3.0}})
    a = extract(array_slide, plain).uns["explain"]
    b = extract(array_slide, hot).uns["explain"]
    assert a["temperature"] == 1.0 and b["temperature"] == 3.0
    assert np.allclose(a["probabilities"], a["raw_probabilities"])
    assert np.allclose(b["raw_probabilities"], a["raw_probabilities"])
    expected = softmax_with_temperature(np.log(b["raw_probabilities"]), 3.0)
    assert np.allclose(b["probabilities"], expected)
    # softer, same class
    assert abs(b["probabilities"][1] - 0.5) <= abs(a["probabilities"][1] - 0.5) + 1e-9
    assert b["predicted_class"] == a["predicted_class"]
    # the same model object with the record attached gives the same answer and fingerprint
    model.calibration_ = {"temperature": 3.0}
    try:
        c = extract(array_slide, model).uns["explain"]
        assert np.allclose(c["probabilities"], b["probabilities"])
        assert model_fingerprint(model) == model_fingerprint(hot)
    finally:
        del model.calibration_
    assert model_fingerprint(model) == model_fingerprint(plain) != model_fingerprint(hot)


# --- every model kind explains with the same layout --------------------------------------
def _untrained(kind: str, model):
    """An untrained model of ``kind`` with the tiny SEW model's preprocessing and classes."""
    import torch

    from workbench.models import model_kind
    from workbench.pp import feature_names

    torch.manual_seed(0)
    kw = {
        "preprocessing": dict(model.preprocessing),
        "class_names": ["low", "high"],
    }
    if kind == "global":
        return model_kind(kind)(in_features=len(feature_names()), hidden=16, **kw).eval()
    return model_kind(kind)(detail_width=8, embed_dim=16, **kw).eval()


@pytest.mark.parametrize("kind", ["global", "abmil"])
def test_every_kind_extracts_the_same_layout(kind, array_slide, model, tmp_path):
    reference = extract(array_slide, model)
    other = _untrained(kind, model)
    adata = extract(array_slide, other, top_k=3)
    ex, ref = adata.uns["explain"], reference.uns["explain"]
    assert set(ex) == set(ref) and set(ex["focus"]) == set(ref["focus"])
    assert ex["kind"] == kind and ref["kind"] == "sew"
    assert ex["region_score"] != ref["region_score"]
    assert list(adata.obs.columns) == list(reference.obs.columns)
    assert adata.obs["is_focus"].sum() == 3
    scores = adata.obs["focus_score"].to_numpy()
    assert scores.min() == pytest.approx(0.0, abs=1e-6) and scores.max() == pytest.approx(
        1.0, abs=1e-3
    )
    focus = ex["focus"]
    assert np.array_equal(np.flatnonzero(adata.obs["is_focus"]), np.sort(focus["obs_index"]))
    assert focus["crops"].shape == (3, 64, 64, 3) and focus["crops"].dtype == np.uint8
    assert focus["crops"].std() > 0  # the focus regions were read from the slide
    # no detail branch: the lesion outputs are NaN, documented
    assert np.isnan(adata.obs["lesion_prob"]).all()
    assert np.isnan(focus["lesion_prob"]).all() and np.isnan(focus["lesion_maps"]).all()
    assert focus["lesion_maps"].shape == (3, 64, 64)
    assert adata.obsm["X_focus"].shape[0] == adata.n_obs
    assert np.isfinite(adata.obsm["X_focus"]).all()
    assert np.isclose(np.sum(ex["probabilities"]), 1.0)
    if kind == "global":
        assert np.allclose(ex["global_probabilities"], ex["raw_probabilities"])
    else:
        assert np.isnan(ex["global_probabilities"]).all()
    write_h5ad(adata, tmp_path / "a.h5ad")  # the NaN entries store
    out = export_geojson(adata, tmp_path / "a.geojson")

    def no_nan(token):
        raise AssertionError(f"{token} in the GeoJSON")

    features = json.loads(out.read_text(), parse_constant=no_nan)["features"]
    assert len(features) == 3  # focus boxes, no lesion polygons
    assert all("lesion_prob" not in str(f) for f in features)


def test_abmil_extract_maps_tile_attention_onto_regions(array_slide, model):
    import torch

    from workbench.models import pool_by_region
    from workbench.tl._engine import read_tiles, tissue_grid, to_tensor_images
    from workbench.tl._explain import _SlideInputs

    model = _untrained("abmil", model)
    adata = extract(array_slide, model, top_k=2)
    # the same numbers from the tiles read directly
    pre = model.preprocessing
    xy = tissue_grid(array_slide, pre)
    tiles = read_tiles(array_slide, xy, mpp=pre["detail_mpp"], size=pre["crop_size"])
    with torch.no_grad():
        att = model(to_tensor_images(tiles))["attention"]
    inputs = _SlideInputs(array_slide, adata, pre, torch.device("cpu"))
    region = pool_by_region(att, inputs.tile_region, inputs.region_tile).numpy()
    expected = (region - region.min()) / (region.max() - region.min())
    assert np.allclose(adata.obs["focus_score"].to_numpy(), expected, atol=1e-5)
    # every tile centre lies in the region it is mapped to
    labels = adata.uns["region_graph"]["labels"]
    sx, sy = adata.uns["region_graph"]["scale_xy"]
    side0 = pre["crop_size"] * pre["detail_mpp"] / 2.0  # level-0 px per tile (slide at 2 µm/px)
    c = xy + side0 / 2
    mapped = inputs.tile_region.numpy()
    ids = adata.obs["region_id"].to_numpy()
    for (cx, cy), r in zip(c, mapped, strict=True):
        label = labels[int(cy / sy), int(cx / sx)]
        assert (r == -1 and label == 0) or ids[r] == label


def test_extract_can_confirm_the_focus_for_one_call_and_leaves_the_model_as_it_was(
    array_slide, model
):
    from workbench import OptionError

    before = dict(model.config)
    adata = extract(array_slide, model, confirm_candidates=6, confirm_by="evidence")
    assert model.config == before  # the override was for this call only
    focus = adata.uns["explain"]["focus"]
    assert focus["selection"] == "top 3 of 6 proposals by evidence peak"
    assert extract(array_slide, model).uns["explain"]["focus"]["selection"] == (
        "top 3 by focus predictor"
    )
    # the same as a model configured that way
    model.config.update(confirm_candidates=6, confirm_by="evidence")
    try:
        same = extract(array_slide, model)
    finally:
        model.config.update(before)
    assert np.array_equal(same.uns["explain"]["focus"]["obs_index"], focus["obs_index"])
    with pytest.raises(OptionError, match="confirm_by must be one of"):
        extract(array_slide, model, confirm_by="mean")
    with pytest.raises(OptionError, match="whole number"):
        extract(array_slide, model, confirm_candidates=-1)
    with pytest.raises(OptionError, match="self-calibrated"):
        extract(array_slide, _untrained("abmil", model), confirm_candidates=6)
    assert model.config == before
