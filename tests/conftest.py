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


def _write_pyramid_tiff(path, rgb: np.ndarray, *, mpp: float | None = 0.5, tile: int = 256):
    """Write an RGB array as a small pyramidal JPEG TIFF (one page per level, reduced levels
    marked ``subfiletype=1`` so OpenSlide's generic-tiff reader sees them), with the mpp in the
    resolution tags (none when ``mpp`` is ``None``)."""
    import tifffile
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    levels = [np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)]
    while max(levels[-1].shape[:2]) > tile:
        h, w = levels[-1].shape[:2]
        small = Image.fromarray(levels[-1]).resize((max(1, w // 2), max(1, h // 2)), Image.BOX)
        levels.append(np.asarray(small))
    with tifffile.TiffWriter(path) as tw:
        for i, level in enumerate(levels):
            kwargs = {}
            if mpp is not None:
                px_per_cm = 1e4 / (mpp * 2**i)
                kwargs = {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}
            tw.write(
                level, tile=(tile, tile), compression="jpeg", photometric="rgb",
                subfiletype=1 if i else 0, **kwargs,
            )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def write_pyramid_tiff():
    """``write_pyramid_tiff(path, rgb, mpp=0.5)`` -> path of a small OpenSlide-readable TIFF."""
    return _write_pyramid_tiff


#: Preprocessing of the tiny self-calibrated models the extraction and fault tests share.
TINY_PRE = {"thumbnail_mpp": 4.0, "n_segments": 120, "detail_mpp": 1.0, "crop_size": 64}


@pytest.fixture(scope="session")
def tiny_sew():
    """``tiny_sew(seed=0)`` -> a small untrained SelfCalibratedModel (eval mode, 2 classes)."""
    import torch

    from workbench.models import SelfCalibratedModel
    from workbench.pp import feature_names

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return SelfCalibratedModel(
            in_features=len(feature_names()),
            hidden=16,
            detail_width=8,
            embed_dim=16,
            top_k=3,
            preprocessing={**TINY_PRE, "feature_names": feature_names()},
            class_names=["low", "high"],
        ).eval()

    return make


@pytest.fixture(scope="session")
def tiny_slide_image():
    """``tiny_slide_image(seed)`` -> a 384 x 512 RGB image: tissue with a darker lesion."""

    def make(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        img = np.full((384, 512, 3), 240, np.uint8)
        img[60:320, 80:420] = (200, 120, 170)
        img[140:220, 200:300] = (110, 50, 140)
        return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)

    return make


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of ``benchmarks/`` by file name (they are scripts, not a package)."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
