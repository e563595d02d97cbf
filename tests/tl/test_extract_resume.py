"""``tl.extract_cohort`` resumes only what the same model made: fingerprints, stale files,
temporary files of a killed run, and the options that used to hang or crash."""

from __future__ import annotations

import os
import socket

import anndata as ad
import numpy as np
import pytest

from workbench import CheckpointError, ClusterError, OptionError
from workbench._constants import EXTRACT_FINGERPRINT
from workbench.io import OutputWriteError, Slide
from workbench.models import save_checkpoint
from workbench.tl import extract_cohort, model_fingerprint


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sew):
    """Two different small models, each also saved as a checkpoint folder."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        m = tiny_sew(seed)
        out[name] = (m, save_checkpoint(m, root / name))
    return out


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory, write_pyramid_tiff, tiny_slide_image):
    root = tmp_path_factory.mktemp("slides")
    img = tiny_slide_image(3)
    return {
        "s1": write_pyramid_tiff(root / "s1.tif", img, mpp=2.0),
        "s2": write_pyramid_tiff(root / "s2.tif", np.ascontiguousarray(img[:, ::-1]), mpp=2.0),
    }


def _status(table) -> dict:
    return table.set_index("slide_id")["status"].to_dict()


def test_model_fingerprint_is_the_same_for_a_model_and_its_checkpoint(models):
    (a, a_dir), b_dir = models["a"], models["b"][1]
    assert (
        model_fingerprint(a) == model_fingerprint(a_dir) == model_fingerprint(a_dir / "config.json")
    )
    assert model_fingerprint(a_dir) != model_fingerprint(b_dir)
    assert len(model_fingerprint(a_dir)) == 64


def test_model_fingerprint_of_a_folder_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        model_fingerprint(tmp_path)


def test_files_record_their_model_and_another_model_recomputes_them(models, slide_files, tmp_path):
    (_, a_dir), (_, b_dir) = models["a"], models["b"]
    out = tmp_path / "out"
    assert set(_status(extract_cohort(slide_files, a_dir, out, progress=False)).values()) == {
        "done"
    }
    fp = ad.read_h5ad(out / "s1.h5ad").uns[EXTRACT_FINGERPRINT]
    assert fp["model"] == model_fingerprint(a_dir)
    assert fp["slide"]["bytes"] == os.path.getsize(slide_files["s1"])
    before = {sid: (out / f"{sid}.h5ad").stat().st_mtime_ns for sid in slide_files}

    # The same model (as an object this time: same fingerprint): nothing recomputed.
    again = extract_cohort(slide_files, models["a"][0], out, progress=False)
    assert set(_status(again).values()) == {"skipped"}
    assert {sid: (out / f"{sid}.h5ad").stat().st_mtime_ns for sid in slide_files} == before

    # Another model: every file is stale and computed again, never kept.
    other = extract_cohort(slide_files, b_dir, out, progress=False)
    assert set(_status(other).values()) == {"done"}
    for sid in slide_files:
        assert ad.read_h5ad(out / f"{sid}.h5ad").uns[EXTRACT_FINGERPRINT]["model"] == (
            model_fingerprint(b_dir)
        )

    # Other settings (top_k) are part of the fingerprint too.
    fewer = extract_cohort(slide_files, b_dir, out, top_k=2, progress=False)
    assert set(_status(fewer).values()) == {"done"}
    assert int(ad.read_h5ad(out / "s2.h5ad").obs["is_focus"].sum()) == 2


def test_a_file_without_fingerprint_or_damaged_is_recomputed(models, slide_files, tmp_path):
    a_dir = models["a"][1]
    out = tmp_path / "out"
    extract_cohort(slide_files, a_dir, out, progress=False)
    old = ad.read_h5ad(out / "s1.h5ad")
    del old.uns[EXTRACT_FINGERPRINT]  # as an earlier workbench wrote it
    old.write_h5ad(out / "s1.h5ad")
    data = (out / "s2.h5ad").read_bytes()
    (out / "s2.h5ad").write_bytes(data[: len(data) // 3])  # truncated
    table = extract_cohort(slide_files, a_dir, out, progress=False)
    assert _status(table) == {"s1": "done", "s2": "done"}
    for sid in slide_files:
        assert EXTRACT_FINGERPRINT in ad.read_h5ad(out / f"{sid}.h5ad").uns


def test_a_dead_writers_temporary_file_is_removed_when_extraction_starts(
    models, slide_files, tmp_path
):
    out = tmp_path / "out"
    (out / ".partial").mkdir(parents=True)
    from workbench.io._atomic import _host_hash

    # The name a killed writer on this machine (pid 999999999, which cannot run) leaves.
    leftover = out / ".partial" / f"s1.h5ad.partial-{_host_hash()}-999999999-1-abcd.h5ad"
    leftover.write_bytes(b"half")
    extract_cohort({"s1": slide_files["s1"]}, models["a"][1], out, progress=False)
    assert not (out / ".partial").exists()
    assert sorted(p.name for p in out.iterdir()) == ["s1.h5ad"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"client": "local", "n_workers": 0}, "n_workers must be a whole number >= 1"),
        ({"n_workers": -1}, "n_workers must be"),
        ({"n_workers": 1.5}, "n_workers must be"),
        ({"top_k": 0}, "top_k must be None"),
        ({"connect_timeout": 0}, "connect_timeout must be"),
    ],
)
def test_bad_options_are_refused_before_any_work(models, slide_files, tmp_path, kwargs, match):
    with pytest.raises(OptionError, match=match):
        extract_cohort(slide_files, models["a"][1], tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_fails_fast_with_one_message(models, slide_files, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(ClusterError, match="no dask scheduler answers at") as info:
        extract_cohort(
            slide_files, models["a"][1], tmp_path / "o", client=address, connect_timeout=1
        )
    assert "\n" not in str(info.value)
    with pytest.raises(ClusterError, match="not a scheduler address"):
        extract_cohort(slide_files, models["a"][1], tmp_path / "o", client="tcp://nohost")


class _SilentServer:
    """A tcp server on 127.0.0.1 that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.mark.slow
def test_a_port_that_accepts_and_never_answers_fails_within_the_timeout(
    models, slide_files, tmp_path
):
    """``--client`` to such a port used to hang in dask's handshake despite --connect-timeout."""
    import subprocess
    import sys

    server = _SilentServer()
    try:
        cmd = [sys.executable, "-m", "workbench.cli", "extract", *map(str, slide_files.values()),
               "--model", str(models["a"][1]), "--out", str(tmp_path / "o"), "--no-progress",
               "--client", f"tcp://127.0.0.1:{server.port}", "--connect-timeout", "2"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        # the generous limit only stops a hang from blocking the suite; it is not a speed test
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    finally:
        server.close()
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "accepts connections but sent nothing within 2 s" in lines[0]


def test_a_real_scheduler_passes_the_greeting_check():
    from distributed import LocalCluster

    from workbench.tl._runner import _check_reachable

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        _check_reachable(cluster.scheduler_address, 5.0)  # says its handshake first: accepted
    server = _SilentServer()
    try:
        with pytest.raises(ClusterError, match="sent nothing within 0.5 s"):
            _check_reachable(f"127.0.0.1:{server.port}", 0.5)
    finally:
        server.close()


def test_an_output_folder_that_is_a_file_is_refused(models, slide_files, tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputWriteError, match="is a file"):
        extract_cohort(slide_files, models["a"][1], tmp_path / "out", progress=False)
    with pytest.raises(OutputWriteError, match="is a file"):
        extract_cohort(slide_files, models["a"][1], tmp_path / "out" / "sub", progress=False)


def test_a_tampered_checkpoint_is_refused_before_any_slide(models, slide_files, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(models["a"][1], bad)
    cfg = (bad / "config.json").read_text().replace('"low"', '"LOW"')
    (bad / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="changed after saving"):
        extract_cohort(slide_files, bad, tmp_path / "out", progress=False)


def test_in_memory_slides_have_no_file_signature(models, he_like_image, tmp_path):
    s = Slide.from_array(he_like_image, mpp=2.0, name="mem")
    extract_cohort({"mem": s}, models["a"][0], tmp_path / "o", progress=False)
    fp = ad.read_h5ad(tmp_path / "o" / "mem.h5ad").uns[EXTRACT_FINGERPRINT]
    assert "slide" not in fp and fp["model"] == model_fingerprint(models["a"][0])
    again = extract_cohort({"mem": s}, models["a"][0], tmp_path / "o", progress=False)
    assert _status(again) == {"mem": "skipped"}
