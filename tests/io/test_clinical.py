"""io.validate_clinical / io.tcga_site: every bad table gets a ClinicalTableError naming rows."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from workbench import ClinicalTableError
from workbench.io import tcga_site, validate_clinical


def clinical(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(n)],
            "slide": [f"S{i}" for i in range(n)],
            "grade": [1, 2, 3, 1, 2, 3][:n],
            "age": [61.0, 55.0, 70.0, 48.0, 66.0, 59.0][:n],
            "time": [5.0, 10.0, 3.0, 8.0, 12.0, 1.0][:n],
            "event": [1, 0, 1, 1, 0, 1][:n],
        }
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.drop(columns=["time"]), r"misses column\(s\) \['time'\]"),
        (lambda d: d.assign(time=[5.0, np.nan, 3.0, 8.0, 12.0, 1.0]), r"1 missing 'time'.*P1"),
        (lambda d: d.assign(time=[5.0, -1.0, 3.0, 8.0, -2.0, 1.0]), r"2 negative 'time'.*P1, P4"),
        (lambda d: d.assign(time=["5", "x", 3, 8, 12, 1]), r"non-numeric 'time'.*P1"),
        (lambda d: d.assign(event=[1, 2, 0, 0, 0, 0]), r"not 0/1.*P1"),
        (lambda d: d.assign(event=0), "no events"),
        (
            lambda d: d.assign(slide=["S0", "S0", "S2", "S3", "S4", "S5"]),
            r"slide\(s\) listed more than once \(S0\)",
        ),
        (
            lambda d: d.assign(patient_id=["P0", "P0", "P2", "P3", "P4", "P5"]),
            r"disagree on 'time'/'event' \(P0\)",
        ),
    ],
)
def test_validate_clinical_names_the_problem(edit, message):
    with pytest.raises(ClinicalTableError, match=message):
        validate_clinical(edit(clinical()))


def test_validate_clinical_reads_csv_and_cleans_types(tmp_path):
    path = tmp_path / "clinical.csv"
    clinical().assign(event=[True, False, True, True, False, True]).to_csv(path, index=False)
    df = validate_clinical(path)
    assert df["event"].tolist() == [1, 0, 1, 1, 0, 1]
    assert df["time"].dtype == float
    with pytest.raises(ClinicalTableError, match="cannot read"):
        validate_clinical(tmp_path / "missing.csv")


def test_empty_and_headerless_files_say_what_is_wrong(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ClinicalTableError, match="is empty: it needs a header line"):
        validate_clinical(empty)
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("P0,S0,5.0,1\nP1,S1,10.0,0\n")
    with pytest.raises(ClinicalTableError, match="looks like data rather than column names"):
        validate_clinical(headerless)
    header_only = tmp_path / "header.csv"
    header_only.write_text("patient_id,slide,time,event\n")
    with pytest.raises(ClinicalTableError, match="no rows"):
        validate_clinical(header_only)


def test_numeric_covariate_with_text_or_nan_names_patients_and_columns():
    bad = clinical().astype({"age": object})
    bad.loc[2, "age"] = "seventy"
    bad.loc[4, "grade"] = np.nan
    with pytest.raises(ClinicalTableError) as err:
        validate_clinical(bad, covariates=["grade", "age"])
    msg = str(err.value)
    assert "covariate 'age' has 1 non-numeric value(s): 'seventy' (patient P2)" in msg
    assert "categorical=['age']" in msg
    assert "covariate 'grade' is missing for 1 patient(s) (P4)" in msg and "dropna=True" in msg
    # Without covariates= the same table is fine: only declared covariates are checked.
    assert len(validate_clinical(bad)) == 6


def test_dropna_leaves_out_and_logs_patients_with_missing_covariates(caplog):
    df = clinical()
    df.loc[[1, 3], "age"] = np.nan
    with caplog.at_level(logging.WARNING, logger="workbench"):
        out = validate_clinical(df, covariates=["age"], dropna=True)
    assert list(out["patient_id"]) == ["P0", "P2", "P4", "P5"]
    assert out.attrs["dropped_missing_covariates"] == ["P1", "P3"]
    assert out.attrs["dropped_slides"] == ["S1", "S3"]
    assert "left out 2 patient(s) with missing covariates: P1, P3" in caplog.text


def test_categorical_covariates_only_when_declared():
    df = clinical().assign(stage=["I", "II", "III", "I", "II", "I"])
    with pytest.raises(ClinicalTableError, match=r"'stage' has 6 non-numeric.*categorical"):
        validate_clinical(df, covariates=["stage"])
    out = validate_clinical(df, covariates=["stage", "age"], categorical=["stage"])
    assert out["stage"].tolist() == df["stage"].tolist() and out["age"].dtype == float
    with pytest.raises(ValueError, match="not covariates"):
        validate_clinical(df, covariates=["age"], categorical=["stage"])
    with pytest.raises(ClinicalTableError, match=r"covariate column\(s\) \['stage2'\]"):
        validate_clinical(df, covariates=["stage2"])


def test_tcga_site_reads_the_tissue_source_site():
    ids = ["TCGA-A2-A0T2-01Z-00-DX1.svs", "tcga-e2-a1b1", "TCGA-BH-A0B3-01A"]
    assert tcga_site(ids).tolist() == ["A2", "E2", "BH"]
    with pytest.raises(ClinicalTableError, match=r"not TCGA barcodes \(P1, slide-7\)"):
        tcga_site(["TCGA-A2-A0T2", "P1", "slide-7"])


def test_site_column_or_tcga_barcodes():
    df = clinical().assign(site=["a", "a", "b", "b", "c", np.nan])
    with pytest.raises(ClinicalTableError, match=r"site column 'site' is missing for 1 row.*P5"):
        validate_clinical(df, site_key="site")
    assert validate_clinical(df.iloc[:5], site_key="site")["site"].tolist() == list("aabbc")
    with pytest.raises(ClinicalTableError, match="site_key='hospital' is not a column"):
        validate_clinical(df, site_key="hospital")
    tcga = clinical(3).assign(
        patient_id=["TCGA-A2-0001", "TCGA-A2-0002", "TCGA-E9-0003"],
        slide=["TCGA-A2-0001-01Z-00-DX1", "TCGA-A2-0002-01Z-00-DX1", "TCGA-E9-0003-01Z-00-DX1"],
    )
    out = validate_clinical(tcga, site_key="tcga")
    assert out["site"].tolist() == ["A2", "A2", "E9"]
    # Patients that are not barcodes: the slide column is read instead.
    out = validate_clinical(tcga.assign(patient_id=["p1", "p2", "p3"]), site_key="tcga")
    assert out["site"].tolist() == ["A2", "A2", "E9"]
    # Slides of one patient at two sites is a contradiction worth naming.
    two = clinical(4).assign(patient_id=["P0", "P0", "P2", "P3"], time=5.0, event=1)
    two["site"] = ["a", "b", "a", "b"]
    with pytest.raises(ClinicalTableError, match=r"disagree on 'site' \(P0\)"):
        validate_clinical(two, site_key="site")


def test_table_without_survival_columns_for_training_cohorts():
    df = clinical().drop(columns=["time", "event"])
    out = validate_clinical(df, duration_key=None, event_key=None)
    assert list(out.columns) == list(df.columns)


def test_require_events_false_accepts_a_table_without_events():
    df = clinical().assign(event=0)
    with pytest.raises(ClinicalTableError, match="no events"):
        validate_clinical(df)
    assert validate_clinical(df, require_events=False)["event"].eq(0).all()


# ------------------------------------------------------------------ ids stay text (issue 24)
def _padded_csv(path):
    """Patients 007 and 7 are two people; slides 001 and 1 are two slides."""
    path.write_text("patient_id,slide,time,event\n007,001,5.0,1\n7,1,8.0,0\n010,010,3.0,1\n")
    return path


def test_read_clinical_keeps_ids_as_written(tmp_path):
    from workbench.io import read_clinical

    df = read_clinical(_padded_csv(tmp_path / "c.csv"))
    assert df["patient_id"].tolist() == ["007", "7", "010"]
    assert df["slide"].tolist() == ["001", "1", "010"]
    assert df["time"].dtype == float


def test_validate_clinical_from_a_csv_keeps_007_apart_from_7(tmp_path):
    df = validate_clinical(_padded_csv(tmp_path / "c.csv"))
    assert df["patient_id"].tolist() == ["007", "7", "010"]
    assert df["slide"].tolist() == ["001", "1", "010"]
    renamed = tmp_path / "r.csv"
    renamed.write_text("case,image,time,event\n007,001,5,1\n7,1,8,0\n")
    df = validate_clinical(renamed, patient_key="case", slide_key="image")
    assert df["case"].tolist() == ["007", "7"] and df["image"].tolist() == ["001", "1"]


def test_trailing_empty_spreadsheet_rows_are_ignored(tmp_path):
    from workbench.io import read_clinical

    path = tmp_path / "excel.csv"
    path.write_text("patient_id,slide,time,event\nP1,S1,5,1\nP2,S2,8,0\n,,,\n,,,\n")
    assert len(read_clinical(path)) == 2
    df = validate_clinical(path)
    assert df["patient_id"].tolist() == ["P1", "P2"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
def test_utf16_csv_says_save_as_utf8(tmp_path, encoding):
    from workbench.io import read_clinical

    path = tmp_path / "unicode.csv"
    path.write_bytes("patient_id,slide,time,event\nP1,S1,5,1\n".encode(encoding))
    with pytest.raises(ClinicalTableError, match="UTF-16.*save it as UTF-8 CSV"):
        read_clinical(path)
    with pytest.raises(ClinicalTableError, match="save it as UTF-8 CSV"):
        validate_clinical(path)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    from workbench.io import read_clinical

    path = tmp_path / "bom.csv"
    path.write_bytes("patient_id,slide,time,event\n007,S1,5,1\n".encode("utf-8-sig"))
    df = read_clinical(path)
    assert list(df.columns)[0] == "patient_id" and df["patient_id"].tolist() == ["007"]


def test_read_clinical_refuses_a_folder_and_a_missing_file(tmp_path):
    from workbench.io import read_clinical

    with pytest.raises(ClinicalTableError, match="is a folder"):
        read_clinical(tmp_path)
    with pytest.raises(ClinicalTableError, match="no clinical table at"):
        read_clinical(tmp_path / "nope.csv")


def test_infinite_times_are_called_infinite_not_nan_or_negative(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("patient_id,slide,time,event\nP1,S1,inf,0\nP2,S2,5,1\nP3,S3,-inf,1\n")
    with pytest.raises(ClinicalTableError, match=r"2 infinite 'time' value\(s\) \(patients P1, "
                       r"P3\); give the follow-up time") as info:  # fmt: skip
        validate_clinical(path)
    assert "NaN" not in str(info.value)


def test_all_zero_times_say_so():
    with pytest.raises(ClinicalTableError, match="every 'time' is 0, so there is no follow-up"):
        validate_clinical(clinical().assign(time=0.0))
    validate_clinical(clinical().assign(time=0.0), require_events=False)  # a training cohort
