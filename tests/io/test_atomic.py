from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pytest

from workbench import WorkbenchError
from workbench.io import (
    PARTIAL_DIR,
    OutputWriteError,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    clean_partial,
    is_hidden,
    list_results,
    write_h5ad,
)

RESULT_GLOBS = ("*.h5ad", "*.tif", "*.tiff", "*.json", "*.geojson", "*.png", "*.safetensors")


def _matches_any_result_glob(folder) -> list:
    return sorted({p for g in RESULT_GLOBS for p in folder.glob(g)})


def test_failed_write_keeps_previous_file(tmp_path):
    p = tmp_path / "result.txt"
    atomic_write_text(p, "first")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as fh:
            fh.write("half of the sec")
            raise RuntimeError("crash in the middle")
    assert p.read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["result.txt"]  # no temp file or .partial/ left


def test_temporary_file_keeps_the_suffix_but_no_result_glob_sees_it(tmp_path):
    p = tmp_path / "sub" / "S000.h5ad"
    with atomic_path(p) as tmp:
        assert tmp.parent == p.parent / PARTIAL_DIR and tmp.suffix == ".h5ad"
        ad.AnnData(np.ones((2, 2), np.float32)).write_h5ad(tmp)
        assert tmp.exists() and _matches_any_result_glob(p.parent) == []
        assert list_results(p.parent, "**/*.h5ad") == []  # not even recursively
    assert ad.read_h5ad(p).shape == (2, 2)
    assert sorted(os.listdir(p.parent)) == ["S000.h5ad"]  # the empty .partial/ is gone


def test_atomic_path_for_writers_that_need_the_suffix(tmp_path):
    p = tmp_path / "a.npy"
    with atomic_path(p) as tmp:
        np.save(tmp, np.arange(3))  # numpy appends ".npy" to a name without it
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


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "out").write_text("I am a file")
    with pytest.raises(OutputWriteError, match="'.*out' is a file, not a folder"):
        atomic_write_text(tmp_path / "out" / "deeper" / "run.json", "{}")
    with pytest.raises(OutputWriteError, match="is a folder"):
        atomic_write_text(tmp_path, "{}")
    assert (tmp_path / "out").read_text() == "I am a file"


def test_disk_full_becomes_output_write_error_and_keeps_the_old_file(tmp_path):
    p = atomic_write_text(tmp_path / "r.json", "old")
    with pytest.raises(OutputWriteError, match="disk \\(or your quota\\) is full") as info:
        with atomic_path(p) as tmp:
            tmp.write_text("new, half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["r.json"]


def test_failed_rename_becomes_output_write_error(tmp_path, monkeypatch):
    import workbench.io._atomic as atomic

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OutputWriteError, match="not writable"):
        atomic_write_text(tmp_path / "r.json", "x")
    assert os.listdir(tmp_path) == []


def test_other_errors_in_the_block_pass_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        with atomic_path(tmp_path / "r.json"):
            open(tmp_path / "missing-input.csv")
    assert not isinstance(info.value, OutputWriteError)


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
        q = atomic_write_bytes(tmp_path / "model.safetensors", b"x")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644 and q.stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- a writer killed mid-write
_CHILD = """
import sys, time
from pathlib import Path
import numpy as np
from workbench.io import atomic_path

target = Path(sys.argv[1])
with atomic_path(target) as tmp:
    if target.suffix == ".h5ad":
        import anndata
        anndata.AnnData(np.ones((4, 2), np.float32)).write_h5ad(tmp)
    else:
        import tifffile
        tifffile.imwrite(tmp, np.zeros((64, 64, 3), np.uint8))
    print(tmp, flush=True)  # a complete-looking file with the result's suffix now exists
    time.sleep(600)  # killed long before
"""


def _start_writer(target):
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(target)], stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline().strip()
    assert line, "the writer process died before writing"
    return proc, line


@pytest.mark.parametrize("name", ["S000.h5ad", "S002.tif"])
def test_sigkill_mid_write_leaves_nothing_a_result_glob_matches(tmp_path, name):
    done = tmp_path / ("S001" + os.path.splitext(name)[1])
    with atomic_path(done) as tmp:
        tmp.write_bytes(b"a finished result")
    proc, tmp_name = _start_writer(tmp_path / name)
    proc.kill()  # SIGKILL: no clean-up code runs
    proc.wait()
    leftover = tmp_path / PARTIAL_DIR / os.path.basename(tmp_name)
    assert leftover.exists()  # the killed writer could not remove it ...
    assert _matches_any_result_glob(tmp_path) == [done]  # ... but no result glob sees it
    assert list_results(tmp_path, "**/*") == [done]
    assert not (tmp_path / name).exists()
    # the next run's clean-up removes it (its writer is gone) and the empty .partial/
    assert clean_partial(tmp_path) == [leftover]
    assert sorted(os.listdir(tmp_path)) == [done.name]


def test_clean_up_never_removes_a_file_a_live_writer_is_writing(tmp_path):
    proc, tmp_name = _start_writer(tmp_path / "S000.h5ad")
    try:
        leftover = tmp_path / PARTIAL_DIR / os.path.basename(tmp_name)
        old = time.time() - 10 * 24 * 3600
        os.utime(leftover, (old, old))  # even when it looks ten days old
        assert clean_partial(tmp_path, stale_after_s=60) == []
        assert leftover.exists()
    finally:
        proc.kill()
        proc.wait()
    assert clean_partial(tmp_path) == [leftover]


def _fake_temp(folder, *, host: str, pid: int, start: int, age_s: float = 0.0):
    partial = folder / PARTIAL_DIR
    partial.mkdir(parents=True, exist_ok=True)
    p = partial / f"S9.h5ad.partial-{host}-{pid}-{start}-0badc0de.h5ad"
    p.write_bytes(b"half")
    if age_s:
        t = time.time() - age_s
        os.utime(p, (t, t))
    return p


def test_clean_up_of_files_from_another_machine_goes_by_age(tmp_path):
    fresh = _fake_temp(tmp_path, host="00000000", pid=1, start=5)
    old = _fake_temp(tmp_path / "b", host="00000000", pid=1, start=5, age_s=7200)
    assert clean_partial(tmp_path, recursive=True, stale_after_s=3600) == [old]
    assert fresh.exists() and not (tmp_path / "b" / PARTIAL_DIR).exists()


def test_a_reused_pid_does_not_keep_a_dead_writers_file(tmp_path):
    import workbench.io._atomic as atomic

    tag = atomic._writer_tag().split("-")
    host, pid, start = tag[0], int(tag[1]), int(tag[2])
    if start == 0:
        pytest.skip("no /proc: process start times are unknown here")
    mine = _fake_temp(tmp_path, host=host, pid=pid, start=start)
    other = _fake_temp(tmp_path / "x", host=host, pid=pid, start=start + 1)  # same pid, older life
    assert clean_partial(tmp_path, recursive=True) == [other]
    assert mine.exists()


def test_leftovers_of_the_earlier_temp_naming_are_hidden_and_cleaned_by_age(tmp_path):
    legacy = tmp_path / ".S000.h5ad.tmp-k2j4h1x9.h5ad"  # what a kill left before this scheme
    legacy.write_bytes(b"half")
    ckpt = tmp_path / ".model.safetensors.ab12cd34.tmp"
    ckpt.write_bytes(b"half")
    keep = tmp_path / ".gitignore"
    keep.write_text("*\n")
    assert list_results(tmp_path, "*.h5ad") == [] and is_hidden(legacy)
    assert clean_partial(tmp_path) == []  # could be a live writer of the old scheme
    t = time.time() - 7200
    for p in (legacy, ckpt, keep):
        os.utime(p, (t, t))
    assert sorted(clean_partial(tmp_path)) == sorted([legacy, ckpt])
    assert keep.exists()


def test_list_results_skips_hidden_files_and_folders(tmp_path):
    for rel in ("a.h5ad", "sub/b.h5ad", ".c.h5ad", ".cache/d.h5ad", "sub/~$e.h5ad"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert list_results(tmp_path, "*.h5ad") == [tmp_path / "a.h5ad"]
    assert list_results(tmp_path, "**/*.h5ad") == [tmp_path / "a.h5ad", tmp_path / "sub/b.h5ad"]
    assert clean_partial(tmp_path / "missing") == []
