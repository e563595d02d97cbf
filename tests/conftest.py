"""Shared fixtures: real shared data (skipped when absent) and tiny synthetic inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

_ROOT = Path(__file__).resolve().parents[1]


def _real_data_dir() -> Path | None:
    env = os.environ.get("WORKBENCH_REAL_DATA")
    for cand in ([Path(env)] if env else []) + [_ROOT.parent / "shared" / "data"]:
        if cand.is_dir() and (cand / "slides").is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real data folder (``../shared/data`` or ``$WORKBENCH_REAL_DATA``)."""
    path = _real_data_dir()
    if path is None:
        pytest.skip(
            "real data not found: set WORKBENCH_REAL_DATA or place the shared data in ../shared/data"
        )
    return path


@pytest.fixture
def he_like_image() -> np.ndarray:
    """A 384×512 H&E-like RGB image: white glass, a pink tissue disc, a purple core."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:384, 0:512]
    img = np.full((384, 512, 3), 245, dtype=np.float64)
    tissue = (rows - 192) ** 2 + (cols - 200) ** 2 < 150**2
    core = (rows - 180) ** 2 + (cols - 230) ** 2 < 50**2
    img[tissue] = (230, 150, 190)
    img[core] = (120, 60, 150)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """Six tiny synthetic slides (4096×3072, seed 0) with truth and clinical tables, once per run."""
    from workbench.datasets import make_cohort

    return make_cohort(
        tmp_path_factory.mktemp("cohort"), n_patients=6, size="tiny", seed=0, progress=False
    )
