"""Real-tissue mosaic cohorts: readable pyramids, a split by source image, consistent truth."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import MosaicDataError
from workbench.datasets import (
    MOSAIC_CLINICAL_COLUMNS,
    MOSAIC_TRUTH_COLUMNS,
    SyntheticCohort,
    load_cohort,
    make_mosaic_cohort,
)
from workbench.datasets._mosaic import (
    PIECE_PX,
    PITCH_PX,
    TUMOUR_CLASSES,
    load_material,
    plan_slide,
    split_material,
)

openslide = pytest.importorskip("openslide")

SIZE = (1536, 1152)


@pytest.fixture(scope="module")
def mosaic(real_data, tmp_path_factory):
    """Two train and two test mosaic slides (one positive each) from the shared tiles."""
    root = tmp_path_factory.mktemp("mosaic")
    return make_mosaic_cohort(
        root, n_train=2, n_test=2, size=SIZE, seed=1, data_dir=real_data, progress=False
    )


@pytest.mark.slow
def test_slides_are_pyramids_openslide_reads_with_their_mpp(mosaic):
    assert isinstance(mosaic, SyntheticCohort)
    for sid in mosaic.slide_ids:
        with openslide.OpenSlide(str(mosaic.slide_path(sid))) as slide:
            assert slide.dimensions == SIZE
            assert slide.level_count >= 3
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
            rgb = np.asarray(slide.read_region((0, 0), 2, slide.level_dimensions[2]))[..., :3]
            assert rgb.std() > 10  # real tissue, not an empty page


@pytest.mark.slow
def test_tables_labels_and_reload(mosaic):
    assert set(MOSAIC_CLINICAL_COLUMNS) <= set(mosaic.clinical.columns)
    assert list(mosaic.truth.columns) == MOSAIC_TRUTH_COLUMNS
    truth = mosaic.truth
    assert list(truth["split"]) == ["train", "train", "test", "test"]
    assert sorted(truth.groupby("split")["tumour"].sum().tolist()) == [1, 1]
    labels = mosaic.labels("tumour")
    assert labels.to_dict() == dict(zip(truth["slide_id"], truth["tumour"], strict=True))
    again = load_cohort(mosaic.root)
    assert again.truth.equals(truth)


@pytest.mark.slow
def test_train_and_test_slides_share_no_source_image(mosaic):
    truth = mosaic.truth
    used = {
        side: set(";".join(truth.loc[truth["split"] == side, "groups"]).split(";"))
        for side in ("train", "test")
    }
    assert used["train"] and used["test"]
    assert not used["train"] & used["test"]
    split = mosaic.params["split"]
    assert not set(split["train"]["groups"]) & set(split["test"]["groups"])
    assert used["train"] <= set(split["train"]["groups"])
    assert used["test"] <= set(split["test"]["groups"])


@pytest.mark.slow
def test_lesion_truth_follows_the_tumour_cells(mosaic, real_data):
    pieces, _ = load_material(real_data)
    split = split_material(pieces, seed=1)
    for row in mosaic.truth.itertuples():
        mask, ds = mosaic.lesion_mask(row.slide_id)
        plan = plan_slide(*SIZE, positive=bool(row.tumour), pieces=split[row.split],
                          seed=int(row.slide_seed))  # fmt: skip
        present = {c for c in plan.cls[plan.used]}
        if not row.tumour:
            assert not mask.any() and row.lesion_fraction == 0
            assert not present & set(TUMOUR_CLASSES)  # no tumour, no complex stroma
            assert not mosaic.annotations(row.slide_id)
            continue
        assert mask.any() and 0 < row.lesion_fraction < 0.6
        assert row.tumour_cells == int(np.sum(plan.cls == "tumour")) > 0
        # every lesion pixel lies on a tumour cell's square
        tumour_px = np.zeros((SIZE[1], SIZE[0]), dtype=bool)
        for r, c in np.argwhere(plan.cls == "tumour"):
            tumour_px[
                r * PITCH_PX : r * PITCH_PX + PIECE_PX, c * PITCH_PX : c * PITCH_PX + PIECE_PX
            ] = True
        rows, cols = np.nonzero(mask)
        centres = tumour_px[
            np.minimum(rows * ds + ds // 2, SIZE[1] - 1),
            np.minimum(cols * ds + ds // 2, SIZE[0] - 1),
        ]
        assert centres.mean() > 0.97
        # the GeoJSON polygons rasterise back onto the PNG
        again, _ = mosaic.lesion_mask(row.slide_id, downsample=32)
        assert again.any()
        coarse = mask[: mask.shape[0] // 2 * 2, : mask.shape[1] // 2 * 2]
        coarse = coarse.reshape(coarse.shape[0] // 2, 2, coarse.shape[1] // 2, 2).mean((1, 3))
        h, w = min(coarse.shape[0], again.shape[0]), min(coarse.shape[1], again.shape[1])
        agree = (coarse[:h, :w] >= 0.5) == again[:h, :w]
        assert agree.mean() > 0.97


@pytest.mark.slow
def test_a_second_call_resumes_without_rewriting(mosaic, real_data):
    paths = [mosaic.slide_path(s) for s in mosaic.slide_ids]
    stamps = [p.stat().st_mtime_ns for p in paths]
    again = make_mosaic_cohort(mosaic.root, n_train=2, n_test=2, size=SIZE, seed=1,
                               data_dir=real_data, progress=False)  # fmt: skip
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    assert again.truth.equals(mosaic.truth)


def test_split_keeps_every_group_on_one_side(real_data):
    pieces, refs = load_material(real_data)
    assert {"tumour", "stroma"} <= set(refs)
    split = split_material(pieces, seed=0)
    train = {p.group for p in split["train"]}
    test = {p.group for p in split["test"]}
    assert not train & test and len(split["train"]) + len(split["test"]) == len(pieces)
    for cls in ("tumour", "stroma", "normal_mucosa"):
        assert any(p.cls == cls for p in split["train"]) and any(
            p.cls == cls for p in split["test"]
        )
    # the one OCDC source image goes to one side only
    ocdc = {side for side, ps in split.items() for p in ps if p.source == "ocdc"}
    assert len(ocdc) <= 1
    assert all(p.rgb.shape[0] >= PIECE_PX and p.rgb.dtype == np.uint8 for p in pieces)


def test_missing_real_data_says_where_to_look(tmp_path):
    with pytest.raises(MosaicDataError, match="data_dir"):
        make_mosaic_cohort(tmp_path / "m", n_train=1, n_test=1, data_dir=tmp_path / "nothing")
