"""Option value types shared by the CLI and the training entry points."""

from __future__ import annotations

import argparse

import pytest

from workbench._argtypes import existing_file, existing_folder, mpp_arg, share, smoothing, whole


def test_whole_refuses_below_low_and_non_integers_with_the_reason():
    parse = whole(2, " (two folds at least)")
    assert parse("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="at least 2 \\(two folds at least\\)"):
        parse("1")
    with pytest.raises(argparse.ArgumentTypeError, match="not a whole number"):
        parse("2.5")


def test_share_and_mpp_refuse_out_of_range_values():
    assert share("0.2") == 0.2
    for bad in ("0", "1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            share(bad)
    assert mpp_arg("S1=0.25,S2=0.5") == {"S1": 0.25, "S2": 0.5}
    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        mpp_arg("-1")


def test_smoothing_takes_zero_up_to_but_not_one():
    assert smoothing("0") == 0.0 and smoothing("0.1") == 0.1
    for bad, phrase in (("1", "below 1"), ("-0.01", "at least 0"), ("nan", "at least 0"),
                        ("x", "not a number")):  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError, match=phrase):
            smoothing(bad)


def test_existing_paths_tell_files_from_folders(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("x\n")
    assert existing_file("clinical CSV")(str(f)) == f
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder"):
        existing_file("clinical CSV")(str(tmp_path))
    with pytest.raises(argparse.ArgumentTypeError, match="is a file"):
        existing_folder("slide folder")(str(f))
