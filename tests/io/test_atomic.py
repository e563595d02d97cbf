from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pytest

from workbench import WorkbenchError
from workbench.io import (
    OutputWriteError,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    write_h5ad,
)


def test_failed_write_keeps_previous_file(tmp_path):
    p = tmp_path / "result.txt"
    atomic_write_text(p, "first")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as fh:
            fh.write("half of the sec")
            raise RuntimeError("crash in the middle")
    assert p.read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["result.txt"]  # no temp file left behind


def test_atomic_path_for_writers_by_name(tmp_path):
    p = tmp_path / "sub" / "a.npy"
    with atomic_path(p) as tmp:
        assert tmp.parent == p.parent and tmp.suffix == ".npy"
        np.save(tmp, np.arange(3))
    np.testing.assert_array_equal(np.load(p), np.arange(3))


def test_atomic_path_requires_output(tmp_path):
    with pytest.raises(OutputWriteError, match="nothing was written"):
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.unlink()
    assert not (tmp_path / "x.bin").exists()


def test_read_only_folder_raises_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write to read-only folders (root)")
        with pytest.raises(OutputWriteError, match="not writable") as info:
            atomic_write_bytes(ro / "x.bin", b"data")
        assert isinstance(info.value, WorkbenchError)
    finally:
        ro.chmod(0o755)


def test_read_only_folder_detected_even_as_root(tmp_path, monkeypatch):
    import workbench.io._atomic as atomic

    monkeypatch.setattr(atomic.os, "access", lambda path, mode: False)
    with pytest.raises(OutputWriteError, match="not writable"):
        atomic_write_bytes(tmp_path / "x.bin", b"data")


def test_write_h5ad_round_trip_and_keeps_old_on_failure(tmp_path):
    p = tmp_path / "a.h5ad"
    a = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    a.uns["meta"] = {"mpp": None, "name": "x"}
    write_h5ad(a, p)
    b = ad.read_h5ad(p)
    np.testing.assert_array_equal(b.X, a.X)

    class Broken(ad.AnnData):
        def write_h5ad(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_h5ad(Broken(np.zeros((1, 1))), p)
    assert ad.read_h5ad(p).shape == (3, 2)


def test_results_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "shared.txt", "x")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644
