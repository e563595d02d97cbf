"""io.Cohort and io.slide_id: one shape for a cohort, one rule for a slide id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench import ClinicalTableError, CohortError, UnknownSlideError, UnmatchedSlidesError
from workbench._errors import speaking_to_cli
from workbench.io import Annotation, Cohort, slide_id, write_geojson


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dir/S1.ome.tiff", "S1"),
        ("S1.OME.TIF", "S1"),
        ("TCGA-AB-1234-01Z-00-DX1.5A1B.svs", "TCGA-AB-1234-01Z-00-DX1.5A1B"),
        ("TCGA-AB-1234-01Z-00-DX1.5A1B", "TCGA-AB-1234-01Z-00-DX1.5A1B"),  # an id stays an id
        ("/abs/path/slide.v2.ndpi", "slide.v2"),
        ("slides/S000.tif", "S000"),
        ("case 7.mrxs", "case 7"),
        (".svs", ".svs"),  # nothing but an extension: left alone
    ],
)
def test_slide_id_strips_only_the_slide_extension(name, expected):
    assert slide_id(name) == expected


def _square(x0, y0, side, cls="Tumor"):
    ring = [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]
    return Annotation({"type": "Polygon", "coordinates": [ring]}, classification=cls)


@pytest.fixture
def folder(tmp_path, write_pyramid_tiff):
    """Four real TIFF slides (two patients with two slides each) and a clinical table."""
    rng = np.random.default_rng(0)
    slides = tmp_path / "slides"
    for name in ("A1.tif", "A2.ome.tiff", "B1.tif", "TCGA-XX-0001-01Z-00-DX1.5A1B.tif"):
        rgb = rng.integers(150, 255, (320, 480, 3), dtype=np.uint8)
        write_pyramid_tiff(slides / name, rgb, mpp=0.5)
    (slides / ".A1.tif.partial-1234.tif").write_bytes(b"half written")  # hidden: never a slide
    (slides / "notes.txt").write_text("not a slide")
    clinical = pd.DataFrame(
        {
            "patient_id": ["P1", "P1", "P2", "P3"],
            # ids, a file name, a path: all accepted
            "slide": ["A1", "A2.ome.tiff", "slides/B1.tif", "TCGA-XX-0001-01Z-00-DX1.5A1B"],
            "time": [10.0, 10.0, 4.5, 7.0],
            "event": [1, 1, 0, 1],
            "tumour": ["yes", "yes", "no", "no"],
            "grade": [3, 3, 1, 2],
        }
    )
    csv = tmp_path / "clinical.csv"
    clinical.to_csv(csv, index=False)
    return tmp_path, slides, csv, clinical


def test_from_folder_matches_every_spelling_of_the_slide(folder):
    _, slides, csv, _ = folder
    cohort = Cohort.from_folder(slides, csv)
    assert cohort.slide_ids == ["A1", "A2", "B1", "TCGA-XX-0001-01Z-00-DX1.5A1B"]
    assert list(cohort.clinical["slide"]) == cohort.slide_ids
    assert cohort.patients == ["P1", "P2", "P3"]  # P1 has two slides
    assert cohort.patient_of("A2") == "P1"
    assert cohort.slide_path("A2") == slides / "A2.ome.tiff"
    assert cohort.slide_path("slides/A2.ome.tiff") == slides / "A2.ome.tiff"
    assert cohort.slide_path("P2") == slides / "B1.tif"  # a one-slide patient's id
    assert cohort.has_survival and cohort.duration_key == "time"
    assert cohort.clinical["time"].dtype == float and cohort.clinical["event"].dtype == int
    assert len(cohort) == 4 and list(cohort) == cohort.slide_ids and "B1" in cohort
    assert "4 slides, 3 patients" in repr(cohort)
    with pytest.raises(UnknownSlideError, match="no slide 'Z9'.*A1, A2"):
        cohort.slide_path("Z9")
    with pytest.raises(KeyError):  # also a KeyError, for dict-like use
        cohort.slide_path("P1")  # two slides: ambiguous


def test_cohort_from_list_or_mapping_without_a_table(folder):
    _, slides, _, _ = folder
    paths = sorted(p for p in slides.glob("*.tif") if not p.name.startswith("."))
    cohort = Cohort(paths)
    assert cohort.slide_ids == ["A1", "B1", "TCGA-XX-0001-01Z-00-DX1.5A1B"]
    assert cohort.patients == cohort.slide_ids and not cohort.has_survival
    named = Cohort({"first": paths[0], "second": paths[1]})
    assert named.slide_ids == ["first", "second"]
    assert named.slide_path("second") == paths[1]


def test_slide_paths_from_the_table_itself(folder):
    root, _, _, clinical = folder
    table = clinical.assign(slide=["slides/A1.tif", "slides/A2.ome.tiff", "slides/B1.tif",
                                   "slides/TCGA-XX-0001-01Z-00-DX1.5A1B.tif"])  # fmt: skip
    table.to_csv(root / "with_paths.csv", index=False)
    cohort = Cohort(None, root / "with_paths.csv")  # relative to the CSV's folder
    assert cohort.slide_path("B1") == root / "slides" / "B1.tif"


def test_a_table_without_survival_can_still_train(folder):
    _, slides, _, clinical = folder
    cohort = Cohort.from_folder(slides, clinical.drop(columns=["time", "event"]))
    assert not cohort.has_survival and cohort.duration_key is None
    assert cohort.labels("tumour").to_dict()["B1"] == "no"
    with pytest.raises(ClinicalTableError, match="has 'time' but not 'event'"):
        Cohort.from_folder(slides, clinical.drop(columns=["event"]))
    censored = Cohort.from_folder(slides, clinical.assign(event=0))  # no events: fine here
    assert censored.clinical["event"].sum() == 0


def test_bad_survival_values_are_named(folder):
    _, slides, _, clinical = folder
    with pytest.raises(ClinicalTableError, match="negative 'time'.*P2"):
        Cohort.from_folder(slides, clinical.assign(time=[1.0, 1.0, -2.0, 3.0]))
    with pytest.raises(ClinicalTableError, match="disagree"):
        Cohort.from_folder(slides, clinical.assign(time=[1.0, 2.0, 2.0, 3.0]))


def test_listed_but_absent_and_unlisted_slides(folder):
    _, slides, _, clinical = folder
    extra = pd.concat([clinical, clinical.iloc[[2]].assign(slide="GONE.svs", patient_id="P9")])
    with pytest.raises(
        UnmatchedSlidesError,
        match=r"1 clinical row\(s\) have no slide among the slide files \('GONE.svs' \(row 5, "
        r"patient P9\)\).*on_unmatched='drop'",
    ):
        Cohort.from_folder(slides, extra)
    dropped = Cohort.from_folder(slides, extra, on_unmatched="drop")
    assert "GONE" not in dropped.slide_ids and len(dropped) == 4
    with pytest.raises(ClinicalTableError, match="1 slide.*no row in the clinical table.*B1"):
        Cohort.from_folder(slides, clinical.drop(index=2))
    assert "B1" not in Cohort.from_folder(slides, clinical.drop(index=2), on_unmatched="drop")


def test_duplicate_ids_are_refused(folder, write_pyramid_tiff):
    _, slides, _, clinical = folder
    write_pyramid_tiff(slides / "A1.svs", np.full((64, 64, 3), 200, np.uint8))
    with pytest.raises(CohortError, match="A1: .*A1.svs, .*A1.tif"):
        Cohort.from_folder(slides, clinical)
    (slides / "A1.svs").unlink()
    twice = pd.concat([clinical, clinical.iloc[[0]]])
    with pytest.raises(ClinicalTableError, match="listed more than once"):
        Cohort.from_folder(slides, twice)


def test_missing_columns_and_files(folder, tmp_path):
    _, slides, csv, clinical = folder
    with pytest.raises(ClinicalTableError, match="patient_id"):
        Cohort.from_folder(slides, clinical.drop(columns=["patient_id"]))
    with pytest.raises(ClinicalTableError, match="no clinical table"):
        Cohort.from_folder(slides, tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ClinicalTableError, match="is empty"):
        Cohort.from_folder(slides, tmp_path / "empty.csv")
    (tmp_path / "no_slides").mkdir()
    with pytest.raises(CohortError, match="no slide files"):
        Cohort.from_folder(tmp_path / "no_slides", csv)
    with pytest.raises(CohortError, match="no slide folder"):
        Cohort.from_folder(tmp_path / "missing", csv)


def test_labels_are_checked(folder):
    _, slides, csv, clinical = folder
    cohort = Cohort.from_folder(slides, csv)
    labels = cohort.labels("grade")
    assert labels.index.tolist() == cohort.slide_ids and labels["A1"] == 3
    with pytest.raises(ClinicalTableError, match="no label column 'stage'.*'grade'"):
        cohort.labels("stage")
    one = Cohort.from_folder(slides, clinical.assign(tumour="yes"))
    with pytest.raises(ClinicalTableError, match="single class"):
        one.labels("tumour")
    holes = Cohort.from_folder(slides, clinical.assign(tumour=["yes", None, "no", " "]))
    with pytest.raises(ClinicalTableError, match="2 slide.*A2, TCGA"):
        holes.labels("tumour")


def test_mpp_overrides(folder):
    _, slides, csv, _ = folder
    cohort = Cohort.from_folder(slides, csv, mpp={"B1": 0.25})
    assert cohort.mpp_of("B1") == 0.25 and cohort.mpp_of("A1") is None
    with cohort.open("B1") as s, cohort.open("A1") as t:
        assert s.mpp == 0.25 and t.mpp == 0.5
    assert Cohort.from_folder(slides, csv, mpp=1.0).open("A2").mpp == 1.0
    with pytest.raises(CohortError, match="not in the cohort.*Q7"):
        Cohort.from_folder(slides, csv, mpp={"Q7": 0.5})
    with pytest.raises(CohortError, match="positive"):
        Cohort.from_folder(slides, csv, mpp={"A1": -1.0})


def test_annotations_ours_and_qupath_named(folder):
    root, slides, csv, _ = folder
    ann = root / "annotations"
    write_geojson(ann / "A1_lesion.geojson", [_square(40, 40, 100)])  # ours
    # a QuPath export named after the image, with another class beside the lesion
    write_geojson(
        ann / "B1.tif.geojson", [_square(0, 0, 64, "Tumour"), _square(200, 0, 64, "Stroma")]
    )
    write_geojson(ann / "A2.geojson", [_square(0, 0, 10, "Stroma")])  # annotated, no lesion
    cohort = Cohort.from_folder(slides, csv, annotations_dir=ann, lesion_class=["Tumor", "tumour"])
    assert cohort.has_annotations
    assert cohort.annotation_file("A1").name == "A1_lesion.geojson"
    assert len(cohort.annotations("B1")) == 1  # the stroma square is not the lesion
    assert (
        cohort.annotations("A2") == []
        and cohort.annotations("TCGA-XX-0001-01Z-00-DX1.5A1B") is None
    )
    mask, ds = cohort.lesion_mask("A1", downsample=8)
    assert ds == 8 and mask.shape == (40, 60)  # 320 x 480 slide at 8 px per mask px
    assert mask[5:17, 5:17].all() and mask.sum() == pytest.approx((100 / 8) ** 2, rel=0.3)
    assert not cohort.lesion_mask("A2")[0].any()
    assert cohort.lesion_mask("TCGA-XX-0001-01Z-00-DX1.5A1B") is None
    everything = Cohort.from_folder(slides, csv, annotations_dir=ann, lesion_class=None)
    assert len(everything.annotations("B1")) == 2


def test_annotation_for_an_unknown_slide_is_refused(folder):
    root, slides, csv, _ = folder
    ann = root / "annotations"
    write_geojson(ann / "A10_lesion.geojson", [_square(0, 0, 5)])  # A1 is not a prefix match
    with pytest.raises(CohortError, match="match no slide.*A10_lesion.geojson"):
        Cohort.from_folder(slides, csv, annotations_dir=ann)
    (ann / "A10_lesion.geojson").unlink()
    write_geojson(ann / "A1.geojson", [_square(0, 0, 5)])
    write_geojson(ann / "A1_other.geojson", [_square(0, 0, 5)])
    with pytest.raises(CohortError, match="two annotation files for slide 'A1'"):
        Cohort.from_folder(slides, csv, annotations_dir=ann)
    with pytest.raises(CohortError, match="no annotation folder"):
        Cohort.from_folder(slides, csv, annotations_dir=root / "nope")


def test_subset_keeps_order_and_annotations(folder):
    root, slides, csv, _ = folder
    write_geojson(root / "ann" / "B1.geojson", [_square(0, 0, 64)])
    cohort = Cohort.from_folder(slides, csv, annotations_dir=root / "ann", mpp={"B1": 0.3})
    sub = cohort.subset(["B1", "slides/A1.tif"])
    assert sub.slide_ids == ["B1", "A1"] and sub.patients == ["P2", "P1"]
    assert sub.annotations("B1") is not None and sub.mpp_of("B1") == 0.3
    assert len(cohort) == 4  # the original is untouched
    with pytest.raises(UnknownSlideError):
        sub.slide_path("A2")
    with pytest.raises(CohortError, match="more than once"):
        cohort.subset(["A1", "A1"])


def test_synthetic_cohort_is_a_cohort_with_truth(tiny_cohort):
    from workbench.datasets import SyntheticCohort

    assert isinstance(tiny_cohort, Cohort) and isinstance(tiny_cohort, SyntheticCohort)
    assert tiny_cohort.slide_ids == [f"S{i:03d}" for i in range(6)]
    assert list(tiny_cohort.clinical["slide"]) == tiny_cohort.slide_ids
    assert tiny_cohort.has_annotations and tiny_cohort.has_survival
    # the truth PNG and the GeoJSON rasterised by Cohort agree
    png, ds = tiny_cohort.lesion_mask("S002")
    geo, ds2 = Cohort.lesion_mask(tiny_cohort, "S002", downsample=ds)
    assert ds == ds2 == 16 and png.shape == geo.shape
    assert (png & geo).sum() / (png | geo).sum() > 0.95
    sub = tiny_cohort.subset(["S004", "S001"])
    assert isinstance(sub, SyntheticCohort) and sub.truth["slide_id"].tolist() == ["S004", "S001"]
    assert sub.labels("grade").index.tolist() == ["S004", "S001"]


def test_annotations_of_slides_left_out_of_the_table_are_ignored(folder):
    root, slides, _, clinical = folder
    ann = root / "annotations"
    write_geojson(ann / "A1.geojson", [_square(0, 0, 8)])
    write_geojson(ann / "B1.geojson", [_square(0, 0, 8)])
    cohort = Cohort.from_folder(
        slides, clinical.drop(index=2), annotations_dir=ann, on_unmatched="drop"
    )
    assert "B1" not in cohort and cohort.annotation_file("A1").name == "A1.geojson"


def test_slide_links_that_lead_nowhere_are_named_not_skipped(tmp_path):
    from workbench.io import list_slides

    (tmp_path / "S1.tif").write_text("x")
    (tmp_path / "S2.svs").symlink_to(tmp_path / "moved" / "S2.svs")
    (tmp_path / "a.svs").symlink_to("b.svs")
    (tmp_path / "b.svs").symlink_to("a.svs")
    (tmp_path / "S3.svs").symlink_to(tmp_path / "S1.tif")  # a working link is a slide
    with pytest.raises(CohortError, match=r"3 slide link\(s\).*S2.svs: a symbolic link to "
                       r".*moved/S2.svs', which does not exist.*a.svs: a symbolic link loop"):  # fmt: skip
        list_slides(tmp_path)
    with pytest.raises(CohortError, match="b.svs: a symbolic link loop"):
        Cohort.from_folder(tmp_path)
    for name in ("S2.svs", "a.svs", "b.svs"):
        (tmp_path / name).unlink()
    assert [p.name for p in list_slides(tmp_path)] == ["S1.tif", "S3.svs"]


def test_clinical_csv_ids_stay_text_in_a_cohort(tmp_path):
    for name in ("001.tif", "1.tif"):
        (tmp_path / name).write_text("x")
    csv = tmp_path / "c.csv"
    csv.write_text("patient_id,slide,time,event\n007,001,5,1\n7,1,8,0\n,,,\n")
    cohort = Cohort.from_folder(tmp_path, csv)
    assert cohort.slide_ids == ["001", "1"] and cohort.patients == ["007", "7"]
    assert cohort.patient_of("001") == "007"


def _table(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["007", "007", "7", "P3"][:n],
            "slide": ["001", "S2.svs", "1", "S4"][:n],
            "time": [5.0, 5.0, 8.0, 2.0][:n],
            "event": [1, 1, 0, 1][:n],
        }
    )


def test_match_returns_the_rows_in_the_given_order():
    cohort = Cohort.from_clinical(_table())
    assert cohort.slide_ids == ["001", "S2", "1", "S4"]  # a table alone is a cohort
    rows = cohort.match(["S4", "1", "S2.svs", "001"])
    assert rows.index.tolist() == ["S4", "1", "S2.svs", "001"]  # as given
    assert rows["patient_id"].tolist() == ["P3", "7", "007", "007"]
    assert rows["slide"].tolist() == ["S4", "1", "S2", "001"]
    assert rows.attrs["unmatched_slides"] == rows.attrs["unmatched_rows"] == []
    with pytest.raises(CohortError, match="more than once: S2, S2.svs"):
        cohort.match(["S2", "S2.svs"])
    with pytest.raises(ValueError, match="on_unmatched"):
        cohort.match(["S4"], on_unmatched="ignore")


def test_match_raises_naming_a_few_unmatched_ids_and_the_option_or_drops(caplog):
    import logging

    cohort = Cohort.from_clinical(_table())
    given = ["001", "S2", "1", *(f"X{i}" for i in range(7))]
    with pytest.raises(UnmatchedSlidesError) as info:
        cohort.match(given)
    msg = str(info.value)
    assert "7 slide(s) of the slides given have no row in the clinical table" in msg
    assert "X0, X1, X2, X3, X4 and 2 more" in msg  # a few, not all
    assert (
        "1 clinical row(s) have no slide among the slides given ('S4' (row 4, patient P3))" in msg
    )
    assert "on_unmatched='drop'" in msg and "--on-unmatched drop" not in msg
    with speaking_to_cli(), pytest.raises(UnmatchedSlidesError) as info:
        cohort.match(given)
    assert "--on-unmatched drop" in str(info.value) and "on_unmatched=" not in str(info.value)
    assert isinstance(info.value, ClinicalTableError)  # the family a notebook catches
    with caplog.at_level(logging.WARNING, logger="workbench"):
        rows = cohort.match(given, on_unmatched="drop")
    assert rows.index.tolist() == ["001", "S2", "1"]
    assert rows.attrs["unmatched_slides"] == [f"X{i}" for i in range(7)]
    assert rows.attrs["unmatched_rows"] == ["S4"] and rows.attrs["unmatched_patients"] == ["P3"]
    assert "left out 7 slide(s)" in caplog.text and "dropped 1 clinical row(s)" in caplog.text
    with pytest.raises(UnmatchedSlidesError, match="no slide of the slides given has a row.*"
                       "'slide' column holds 001, S2, 1, S4"):  # fmt: skip
        cohort.match(["7", "01"], on_unmatched="drop")  # ids are text: 01 is not 001


def test_a_patient_table_is_a_cohort_of_patients():
    table = _table().drop(columns="slide").iloc[[0, 2, 3]]
    cohort = Cohort.from_clinical(table, slide_key=None)
    assert cohort.slide_key is None and cohort.slide_ids == ["007", "7", "P3"]
    assert cohort.match(["7", "007", "P3"])["time"].tolist() == [8.0, 5.0, 2.0]
    with pytest.raises(UnmatchedSlidesError, match=r"1 patient\(s\) of the patients given.*8"):
        cohort.match(["007", "7", "P3", "8"])
    with pytest.raises(ClinicalTableError, match="duplicate patient id"):
        Cohort.from_clinical(_table().drop(columns="slide"), slide_key=None)


def test_from_clinical_reads_csv_ids_as_text_and_keeps_a_cohort(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("case,slide_name,months,dead\n007,001.svs,5,1\n7,002.svs,8,0\n")
    keys = {"slide_key": "slide_name", "patient_key": "case", "duration_key": "months",
            "event_key": "dead"}  # fmt: skip
    cohort = Cohort.from_clinical(csv, **keys)
    assert cohort.patients == ["007", "7"] and cohort.slide_ids == ["001", "002"]
    assert (cohort.slide_key, cohort.patient_key) == ("slide_name", "case")
    assert (cohort.duration_key, cohort.event_key) == ("months", "dead")
    assert Cohort.from_clinical(cohort) is cohort
    with pytest.raises(ClinicalTableError, match="no 'slide' column.*--slide-key"):
        Cohort.from_clinical(csv)
    with pytest.raises(ClinicalTableError, match="not list"):
        Cohort.from_clinical(["a.csv"])
