from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from workbench._errors import WorkbenchError
from workbench.datasets import (
    EBHI_CLINICAL_COLUMNS,
    EBHI_MPP,
    EBHI_TRUTH_COLUMNS,
    ebhi_case_split,
    load_ebhi_cohort,
    make_ebhi_cohort,
)


def _fake_ebhi(root, cases: dict[str, list[str]], size: int = 40):
    """A tiny EBHI-Seg folder: ``cases`` maps a case id to the classes of its images.

    Every image is pink with a purple square in its top-left quarter; its mask is that square.
    """
    folder = root / "masks" / "ebhi_seg"
    rows = []
    for case, classes in cases.items():
        for n, cls in enumerate(classes):
            name = f"GT{case}-1-400-{n}.png"
            for sub in ("images", "masks"):
                (folder / cls / sub).mkdir(parents=True, exist_ok=True)
            rgb = np.full((size, size, 3), (230, 150, 200), np.uint8)
            rgb[: size // 2, : size // 2] = (120, 60, 160)
            mask = np.zeros((size, size), np.uint8)
            mask[: size // 2, : size // 2] = 255
            Image.fromarray(rgb).save(folder / cls / "images" / name)
            Image.fromarray(mask).save(folder / cls / "masks" / name)
            rows.append({"file": f"{cls}/images/{name}", "role": "image", "cls": cls,
                         "case_id": case})  # fmt: skip
    with open(folder / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "role", "cls", "case_id"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture
def fake_source(tmp_path):
    cases = {
        "101": ["Adenocarcinoma", "Adenocarcinoma", "Normal"],  # positive, mixed
        "102": ["Normal", "Low-grade_IN"],  # negative: dysplasia masks are not tumour
        "103": ["High-grade_IN"],
    }
    return _fake_ebhi(tmp_path / "data", cases), cases


def test_fake_cohort_slides_labels_annotations_and_truth(fake_source, tmp_path):
    from workbench.io import Cohort, Slide, read_geojson

    source, cases = fake_source
    cohort = make_ebhi_cohort(source, tmp_path / "cohort", gap_px=8, margin_px=16, progress=False)
    assert list(cohort.clinical.columns) == EBHI_CLINICAL_COLUMNS
    assert list(cohort.truth.columns) == EBHI_TRUTH_COLUMNS
    t = cohort.truth.set_index("patient_id")
    assert t.loc["101", "adenocarcinoma"] == 1 and t.loc["102", "adenocarcinoma"] == 0
    assert t.loc["103", "adenocarcinoma"] == 0
    assert t.loc["101", "n_images"] == 3 and t.loc["101", "n_adenocarcinoma_images"] == 2
    assert all(t.loc[c, "split"] == ebhi_case_split(c) for c in cases)
    # two tumour squares of 20 x 20 over three fragments of 40 x 40 tissue
    assert t.loc["101", "lesion_fraction"] == pytest.approx(2 * 400 / (3 * 1600), abs=1e-4)
    assert t.loc["102", "lesion_fraction"] == 0.0

    with Slide(tmp_path / "cohort" / "slides" / "C101.tif") as slide:
        assert slide.mpp == pytest.approx(EBHI_MPP)
        assert slide.info.vendor == "generic-tiff"
        w, h = slide.dimensions
        assert (w, h) == (t.loc["101", "width"], t.loc["101", "height"])
        pixels = slide.read_region((0, 0), (w, h), level=0)
    glass = (pixels > 225).all(axis=2)
    assert glass[:16].all() and glass[:, :16].all()  # the margin is glass
    assert 2 * 1600 < (~glass).sum() < 4 * 1600  # three fragments of tissue (JPEG edges aside)

    anns = read_geojson(cohort.lesion_geojson("C101"))
    assert len(anns) == 2 and all(a.classification == "Tumor" for a in anns)
    from shapely.geometry import shape

    areas = sorted(shape(a.geometry).area for a in anns)
    assert areas == pytest.approx([400, 400], rel=0.1)
    # each tumour polygon sits on purple pixels of the slide (level-0 coordinates)
    for a in anns:
        c = shape(a.geometry).centroid
        r, g, b = pixels[int(c.y), int(c.x)].astype(int)
        assert b > g + 40
    assert read_geojson(cohort.lesion_geojson("C102")) == []
    mask, ds = cohort.lesion_mask("C101")
    assert ds == 2 and mask.sum() * ds * ds == pytest.approx(800, rel=0.1)

    # the user's path: a folder of slides, the clinical table and the annotation folder
    user = Cohort.from_folder(
        tmp_path / "cohort" / "slides",
        tmp_path / "cohort" / "clinical.csv",
        annotations_dir=tmp_path / "cohort" / "annotations",
    )
    assert sorted(user.slide_ids) == ["C101", "C102", "C103"]
    assert user.labels("adenocarcinoma").to_dict() == {"C101": 1, "C102": 0, "C103": 0}
    assert user.lesion_mask("C101", downsample=2)[0].sum() == pytest.approx(mask.sum(), rel=0.1)

    again = load_ebhi_cohort(tmp_path / "cohort")
    assert again.truth.equals(cohort.truth)
    assert sorted(again.split_ids("train") + again.split_ids("val") + again.split_ids("test")) == [
        "C101", "C102", "C103"]  # fmt: skip
    assert "EbhiCohort(3 slides" in repr(again)


def test_resume_redraws_a_deleted_slide_identically_and_refuses_other_arguments(
    fake_source, tmp_path
):
    source, _ = fake_source
    root = tmp_path / "cohort"
    make_ebhi_cohort(source, root, progress=False)
    first = (root / "slides" / "C101.tif").read_bytes()
    (root / "slides" / "C101.tif").unlink()
    make_ebhi_cohort(source, root, progress=False)
    assert (root / "slides" / "C101.tif").read_bytes() == first
    with pytest.raises(WorkbenchError, match="other arguments"):
        make_ebhi_cohort(source, root, seed=1, progress=False)


def test_bad_arguments_are_refused(fake_source, tmp_path):
    source, _ = fake_source
    with pytest.raises(WorkbenchError, match="unknown split"):
        make_ebhi_cohort(source, tmp_path / "c", splits=["dev"], progress=False)
    with pytest.raises(WorkbenchError, match="no EBHI-Seg manifest"):
        make_ebhi_cohort(tmp_path / "nowhere", tmp_path / "c", progress=False)
    with pytest.raises(WorkbenchError, match="not a complete EBHI cohort"):
        load_ebhi_cohort(tmp_path / "empty")


@pytest.mark.realdata
def test_real_cohort_one_slide_per_case(real_data, tmp_path):
    if not (real_data / "masks" / "ebhi_seg").is_dir():
        pytest.skip("the shared data has no masks/ebhi_seg")
    from workbench.datasets import ebhi_images
    from workbench.io import Slide

    cohort = make_ebhi_cohort(real_data, tmp_path / "ebhi", max_cases=2, progress=False)
    assert len(cohort) == 6 and set(cohort.truth["split"]) == {"train", "val", "test"}
    images = ebhi_images(real_data)
    for row in cohort.truth.itertuples():
        mine = [im for im in images if im.case_id == row.patient_id]
        assert row.n_images == len(mine)
        assert row.adenocarcinoma == int(any(im.cls == "Adenocarcinoma" for im in mine))
        with Slide(cohort.slide_path(row.slide_id)) as slide:
            assert slide.mpp == pytest.approx(EBHI_MPP) and slide.level_count >= 2
        mask, _ = cohort.lesion_mask(row.slide_id)
        assert bool(mask.any()) == bool(row.adenocarcinoma)
        if row.adenocarcinoma:
            assert 0.05 < row.lesion_fraction < 1.0
