"""The cohort montage: one labelled thumbnail per slide."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from workbench.datasets import montage, thumbnail  # noqa: E402


def test_montage_shows_every_slide_with_its_grade(tiny_cohort):
    ax = montage(tiny_cohort, ncols=3, max_side=128)
    try:
        images = ax.get_images()
        assert len(images) == 1
        canvas = np.asarray(images[0].get_array())
        assert canvas.shape[0] < canvas.shape[1]  # 2 rows x 3 columns of 4:3 thumbnails
        assert (canvas < 250).any()  # not blank
        labels = [t.get_text() for t in ax.texts]
        grades = tiny_cohort.truth.set_index("slide_id")["grade"]
        assert labels == [f"{sid} · grade {grades[sid]}" for sid in tiny_cohort.slide_ids]
    finally:
        plt.close(ax.figure)


def test_thumbnail_reads_a_small_level(tiny_cohort):
    image, downsample = thumbnail(tiny_cohort.slide_paths[0], max_side=300)
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert downsample == 8 and image.shape[:2] == (384, 512)
