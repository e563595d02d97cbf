"""The training cache lives in memory-mapped temporary files: same values, same training,
nothing left on disk, and the process's own memory does not hold the crops."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from workbench.tl import _engine
from workbench.tl._engine import memory_mapped, prepare_cohort

PRE = {"thumbnail_mpp": 8.0, "n_segments": 60, "detail_mpp": 1.0, "crop_size": 64}


def _cache_maps() -> list[str]:
    with open("/proc/self/maps") as fh:
        return [line for line in fh if "workbench-cache-" in line]


def _is_mapped(t: torch.Tensor) -> bool:
    """Whether the tensor's bytes lie in a mapping of one of our cache files."""
    ptr = t.data_ptr()
    for line in _cache_maps():
        lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
        if lo <= ptr < hi:
            return True
    return False


def test_a_memory_mapped_tensor_equals_the_original_and_its_file_is_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    before = len(_cache_maps())
    for t in (
        torch.randint(0, 255, (4, 3, 40, 40), dtype=torch.uint8),
        torch.randn(300, 7),
        torch.arange(20, dtype=torch.int64).reshape(2, 10),
        torch.randn(6, 6)[:, ::2],  # not contiguous
    ):
        m = memory_mapped(t)
        assert m.dtype == t.dtype and m.shape == t.shape and torch.equal(m, t)
    assert list(tmp_path.iterdir()) == []  # removed at once, kept alive by the mapping
    m = memory_mapped(torch.zeros(1000))
    assert len(_cache_maps()) > before and _is_mapped(m)
    assert all("(deleted)" in line for line in _cache_maps())
    m += 1  # copy-on-write: writable, and the write stays private
    assert float(m.sum()) == 1000.0


def test_the_cached_cohort_is_mapped_and_equal_to_the_one_in_memory(tiny_cohort):
    ids = tiny_cohort.slide_ids[:2]
    kw = {"slide_ids": ids, "settings": PRE, "n_candidates": 8, "progress": False}
    mapped = prepare_cohort(tiny_cohort, **kw)
    plain = prepare_cohort(tiny_cohort, **kw, on_disk=False)
    for a, b in zip(mapped, plain, strict=True):
        for name in _engine._SAMPLE_TENSORS:
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                assert torch.equal(x, y), name
        # the crops (8 x 3 x 64 x 64 uint8 = 96 KiB) are mapped, plain ones are not
        assert _is_mapped(a.crops) and not _is_mapped(b.crops)


@pytest.mark.slow
def test_training_on_the_mapped_cache_gives_the_same_model(tiny_cohort, monkeypatch):
    from workbench.tl import SlideTrainer

    def fit():
        torch.manual_seed(0)
        tr = SlideTrainer(
            kind="sew", label="grade", epochs=2, seed=0, progress=False, settings=PRE,
            model_kwargs={"hidden": 16, "detail_width": 8, "embed_dim": 16},
        )  # fmt: skip
        return tr.fit(tiny_cohort)

    mapped = fit()
    assert _is_mapped(mapped.samples_[0].crops)
    monkeypatch.setattr(_engine, "ON_DISK_BYTES", 1 << 62)  # nothing mapped
    plain = fit()
    a, b = mapped.model_.state_dict(), plain.model_.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_freed_memory_is_handed_back_where_the_allocator_allows(monkeypatch):
    import sys

    from workbench.tl._engine import release_freed_memory

    # free-but-kept heap after many mid-sized blocks: glibc hands the pages back
    keep = [np.ones(300_000, np.uint8) for _ in range(200)]
    del keep[::2]
    got = release_freed_memory()
    assert isinstance(got, bool)
    if sys.platform.startswith("linux") and os.path.exists("/lib/x86_64-linux-gnu/libc.so.6"):
        assert _engine._LIBC[0] is not None  # found glibc's malloc_trim
    monkeypatch.setattr(_engine, "_LIBC", [None])  # no such call: nothing happens
    assert release_freed_memory() is False
