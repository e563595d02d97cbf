"""Error messages speak the reader's language: Python keywords in a notebook, command-line
options under ``workbench`` (``workbench._errors.remedy`` / ``speaking_to_cli``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench import MissingResolutionError, OptionError, datasets
from workbench._errors import remedy, speaking_to_cli
from workbench.cli import main
from workbench.io import Slide, write_h5ad
from workbench.tl._cv import check_folds, check_holdout


def test_remedy_follows_the_audience_and_restores_it():
    assert remedy("folds=3", "--folds 3") == "folds=3"
    with speaking_to_cli():
        assert remedy("folds=3", "--folds 3") == "--folds 3"
    assert remedy("folds=3", "--folds 3") == "folds=3"


def test_missing_mpp_names_the_keyword_or_the_option():
    slide = Slide.from_array(np.full((600, 800, 3), 200, np.uint8))
    with pytest.raises(MissingResolutionError, match=r"Slide\(path, mpp=0\.5\)"):
        slide.thumbnail(mpp=8.0)
    with speaking_to_cli(), pytest.raises(MissingResolutionError) as err:
        slide.thumbnail(mpp=8.0)
    assert "--mpp 0.5" in str(err.value) and "Slide(" not in str(err.value)


def test_fold_and_holdout_errors_name_the_option():
    y, groups = np.array([0, 0, 1, 1]), np.array(["a", "b", "c", "d"])
    with pytest.raises(OptionError, match=r"folds=9 .*folds <= 4"):
        check_folds(y, groups, 9)
    with speaking_to_cli(), pytest.raises(OptionError) as err:
        check_folds(y, groups, 9)
    assert "--folds 9" in str(err.value) and "--folds 4 or fewer" in str(err.value)
    assert "folds=" not in str(err.value)
    with speaking_to_cli(), pytest.raises(OptionError) as err:
        check_holdout(np.array([0, 0, 0, 1, 1, 1]), np.arange(6), 0.2)
    assert "--validation 0.2" in str(err.value) and "validation=" not in str(err.value)


def test_cli_discover_on_three_patients_names_the_minimum(tmp_path, capsys):
    adatas, clin = datasets.simulate_region_cohort(3, seed=1, n_regions=40)
    folder = tmp_path / "h5ad"
    for a in adatas:
        write_h5ad(a, folder / f"{a.uns['slide_id']}.h5ad")
    csv = tmp_path / "clinical.csv"
    pd.DataFrame(clin).to_csv(csv, index=False)
    code = main(["discover", str(folder), str(csv), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "at least 4 patients" in err and "--validation-fraction" in err
    assert "validation_fraction=" not in err


def test_cli_unmatched_rows_name_the_option(tmp_path, capsys):
    adatas, clin = datasets.simulate_region_cohort(6, seed=2, n_regions=40)
    folder = tmp_path / "h5ad"
    for a in adatas[:5]:  # one row without its slide
        write_h5ad(a, folder / f"{a.uns['slide_id']}.h5ad")
    csv = tmp_path / "clinical.csv"
    pd.DataFrame(clin).to_csv(csv, index=False)
    code = main(["discover", str(folder), str(csv), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--on-unmatched drop" in err and "on_unmatched=" not in err
