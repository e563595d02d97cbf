from __future__ import annotations

import warnings

import numpy as np
import pytest

from workbench.interactive import RefinementEngine, RegionRefiner
from workbench.io import read_geojson

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.mark.parametrize(
    "name",
    ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs", "hamamatsu-dapi-7-levels.ndpi"],
)
def test_refiner_opens_real_slides_and_saves(real_data, tmp_path, name):
    path = real_data / "slides" / name
    if not path.exists():
        pytest.skip(f"{name} not in the shared data")
    out = tmp_path / f"{name}.geojson"
    ref = RegionRefiner(
        path,
        engine=RefinementEngine(),
        output=out,
        view_size=256,
        view_downsample=4.0,
        overview_size=256,
    )
    h, w = ref.session.mask.shape
    assert ref.session.view_image.shape == (h, w, 3) and not ref.session.mask.any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mask = ref.handle_click(w / 2, h / 2, positive=True)
    assert mask[int(h / 2), int(w / 2)]
    ref.session.save()
    anns = read_geojson(out)
    assert anns
    # Polygons are in level-0 pixels, inside the slide.
    W, H = ref.session.slide.dimensions
    x_min, y_min, x_max, y_max = np.array([a.bounds() for a in anns]).T
    assert x_min.min() >= 0 and y_min.min() >= 0 and x_max.max() <= W and y_max.max() <= H
