"""Patient ``007`` stays ``007`` on every path a clinical table takes into the package.

The table enters through ``io.read_clinical`` only (ids as text) and is joined to the slides
by ``io.Cohort.match`` only; these tests walk each path a user takes (a notebook, the
command line) with a table whose patients ``007`` and ``7`` are two different people, under
column names that are not the defaults.
"""

from __future__ import annotations

import types

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from workbench import datasets, tl
from workbench.cli import main
from workbench.io import Cohort, read_clinical, write_h5ad

FAST = {
    "marker_kwargs": {"n_phenotypes": 2, "k_range": (2, 4), "max_regions_per_slide": 40},
    "spatial_kwargs": {"families": ("direct",)},
    "survival_kwargs": {"cv_top": 0},
}
KEYS = {"patient_key": "case", "slide_key": "image", "duration_key": "months", "event_key": "dead"}
OPTIONS = ["--patient-key", "case", "--slide-key", "image", "--duration-key", "months",
           "--event-key", "dead"]  # fmt: skip


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    """12 simulated slides named ``001`` … ``012``; patients ``007`` and ``7`` among them, in a
    CSV whose columns are ``case``/``image``/``months``/``dead`` and whose slide column holds
    file names."""
    root = tmp_path_factory.mktemp("padded")
    adatas, clin = datasets.simulate_region_cohort(12, seed=5, n_regions=60)
    slide_of = {s: f"{i + 1:03d}" for i, s in enumerate(clin["slide"])}
    patient_of = {p: f"{i:03d}" if i % 2 else str(i) for i, p in enumerate(clin["patient_id"])}
    patient_of[clin["patient_id"].iloc[7]] = "007"
    patient_of[clin["patient_id"].iloc[8]] = "7"
    for a in adatas:
        a.uns = {**a.uns, "slide_id": slide_of[a.uns["slide_id"]]}
    table = pd.DataFrame(
        {
            "case": clin["patient_id"].map(patient_of),
            "image": [f"{slide_of[s]}.svs" for s in clin["slide"]],
            "months": clin["time"],
            "dead": clin["event"],
            "grade": clin["grade"],
        }
    )
    csv = root / "clinical.csv"
    table.to_csv(csv, index=False)
    h5ad = root / "h5ad"
    for a in adatas:
        write_h5ad(a, h5ad / f"{a.uns['slide_id']}.h5ad")
    return {"root": root, "adatas": adatas, "csv": csv, "h5ad": h5ad}


def _check(obs_names, slides_of_007):
    assert {"007", "7"} <= set(obs_names)
    assert slides_of_007 == "008"  # the 8th slide belongs to patient 007, not to 7


def test_read_clinical_keeps_named_id_columns_as_text(padded):
    table = read_clinical(padded["csv"], id_columns=("case", "image"))
    assert (table["case"] == "007").sum() == 1 and (table["case"] == "7").sum() == 1


def test_io_cohort(padded):
    cohort = Cohort.from_clinical(padded["csv"], **KEYS)
    assert "007" in cohort.patients and "7" in cohort.patients
    assert cohort.patient_of("008") == "007" and cohort.patient_of("009") == "7"
    rows = cohort.match(["008.svs", "009"], on_unmatched="drop")
    assert rows["case"].tolist() == ["007", "7"]


def test_notebook_discover_given_a_path(padded):
    co = tl.discover(padded["adatas"], padded["csv"], **KEYS, **FAST)
    assert co.n_obs == 12
    _check(co.obs_names, co.obs.loc["007", "slides"])


def test_aggregate_given_a_path_and_a_cohort(padded):
    adatas = [a.copy() for a in padded["adatas"]]
    rng = np.random.default_rng(0)
    values = pd.DataFrame(
        rng.normal(size=(len(adatas), 2)), index=[a.uns["slide_id"] for a in adatas]
    )
    co = tl.aggregate(values, padded["csv"], **KEYS)
    _check(co.obs_names, co.obs.loc["007", "slides"])
    again = tl.aggregate(values, Cohort.from_clinical(padded["csv"], **KEYS))
    assert again.obs_names.tolist() == co.obs_names.tolist()


@pytest.mark.slow
def test_cli_discover(padded, capsys):
    out = padded["root"] / "discovery"
    assert main(["discover", str(padded["h5ad"]), str(padded["csv"]), "--out", str(out),
                 *OPTIONS]) == 0  # fmt: skip
    co = ad.read_h5ad(out / "discovery.h5ad")
    _check(co.obs_names, co.obs.loc["007", "slides"])
    assert capsys.readouterr().err == ""


def test_cli_train_reads_the_table_with_ids_as_text(padded, tmp_path, monkeypatch, capsys):
    """The train command's cohort, up to the trainer (training itself: tests/test_cli.py)."""
    import workbench._steps as steps

    slides = tmp_path / "slides"
    slides.mkdir()
    for i in range(12):
        (slides / f"{i + 1:03d}.svs").write_bytes(b"")  # the ids matter here, not the pixels
    seen = {}

    def train_step(cohort, out, **kwargs):
        seen["cohort"] = cohort
        return types.SimpleNamespace(
            final_model_={"fit_on": "all", "epochs": 1}, samples_=cohort.slide_ids,
            classes_=[1, 2, 3], validation_=None, calibration_=None, cv_=None,
        )  # fmt: skip

    monkeypatch.setattr(steps, "train_step", train_step)
    args = ["train", str(slides), "--clinical", str(padded["csv"]), "--label", "grade",
            "--out", str(tmp_path / "m"), "--no-progress", *OPTIONS]  # fmt: skip
    assert main(args) == 0
    cohort = seen["cohort"]
    assert cohort.patient_of("008") == "007" and cohort.patient_of("009") == "7"
    assert cohort.patient_key == "case" and cohort.duration_key == "months"
    capsys.readouterr()
    old = [a if a != "--patient-key" else "--patient-col" for a in args]  # the old spelling
    assert main(old) == 0 and seen["cohort"].patient_key == "case"
