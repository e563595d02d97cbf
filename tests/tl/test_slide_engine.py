"""tl._engine: the one slide -> tensors engine shared by training, extraction and benchmarks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.io import Slide
from workbench.tl._engine import (
    CropReader,
    StainedSlide,
    crop_boxes,
    mask_at,
    mask_crops,
    node_lesion_fraction,
    prepare_slide,
    read_crops,
    region_graph_for,
    settings_of,
    suggest_settings,
    tissue_grid,
)

SETTINGS = {"thumbnail_mpp": 4.0, "n_segments": 120, "detail_mpp": 2.0, "crop_size": 32}


class Invert:
    """A stand-in stain normaliser whose effect is easy to see."""

    def transform(self, rgb):
        return 255 - np.asarray(rgb)

    def to_dict(self):  # pragma: no cover - not needed here
        return {}


@pytest.fixture
def slide(he_like_image):
    return Slide.from_array(he_like_image, mpp=2.0, name="disc")


def test_mask_at_is_the_one_rule_for_level0_points():
    mask = np.zeros((3, 4), bool)
    mask[0, 0] = mask[2, 3] = True
    # pixel (r, c) covers level-0 [c*ds, (c+1)*ds) x [r*ds, (r+1)*ds), here ds = 10
    x = np.array([0.0, 9.99, 10.0, 39.9, 40.0, -0.1, 35.0])
    y = np.array([0.0, 9.99, 0.0, 29.9, 29.9, 0.0, 30.0])
    np.testing.assert_array_equal(
        mask_at(mask, 10, x, y), [True, True, False, True, False, False, False]
    )
    grid = mask_at(mask, 10, np.array([[5.0, 35.0]]), np.array([[5.0], [25.0]]))
    np.testing.assert_array_equal(grid, [[True, False], [False, True]])


def test_mask_crops_sample_the_mask_at_pixel_centres():
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True  # level-0 [32, 96) at downsample 16
    boxes = np.array([[16.0, 16.0, 64.0, 64.0], [-64.0, -64.0, 64.0, 64.0]])
    crops = mask_crops(mask, 16, boxes, 8)
    assert crops.shape == (2, 1, 8, 8) and crops.dtype == np.uint8
    xs = 16 + (np.arange(8) + 0.5) * 8
    expected = mask_at(mask, 16, xs[None, :], xs[:, None])
    np.testing.assert_array_equal(crops[0, 0].astype(bool), expected)
    assert crops[0, 0, 2:, 2:].all() and not crops[0, 0, :2].any()
    assert not crops[1].any()  # outside the slide: no lesion


def test_node_lesion_fraction_follows_the_mask(slide):
    graph = region_graph_for(slide, SETTINGS)
    w, h = slide.dimensions
    mask = np.zeros((h // 16 + 1, w // 16 + 1), bool)
    mask[:, : mask.shape[1] // 2] = True  # left half of the slide is "lesion"
    frac = node_lesion_fraction(graph, mask, 16)
    assert frac.shape == (graph.n_obs,) and ((frac >= 0) & (frac <= 1)).all()
    x = graph.obsm["spatial"][:, 0]
    assert frac[x < 0.4 * w].mean() > 0.95 and frac[x > 0.6 * w].mean() < 0.05


def test_crops_are_centred_at_the_detail_resolution(slide):
    centers = np.array([[100.0, 120.0], [300.0, 200.0]])
    crops, boxes = read_crops(slide, centers, mpp=4.0, size=16)
    assert crops.shape == (2, 16, 16, 3) and crops.dtype == np.uint8
    np.testing.assert_allclose(boxes[:, 2:], 32.0)  # 16 px at 4 µm on a 2 µm slide
    np.testing.assert_allclose(boxes[:, :2] + boxes[:, 2:] / 2, centers)
    np.testing.assert_allclose(crop_boxes(slide, centers, mpp=4.0, size=16), boxes)


def test_stained_slide_normalises_what_the_models_read_and_keeps_coordinates(slide):
    stained = StainedSlide(slide, Invert())
    assert stained.dimensions == slide.dimensions and stained.mpp == slide.mpp
    np.testing.assert_array_equal(stained.thumbnail(mpp=4.0), 255 - slide.thumbnail(mpp=4.0))
    np.testing.assert_array_equal(
        stained.read_region((10, 10), (8, 8), mpp=2.0),
        255 - slide.read_region((10, 10), (8, 8), mpp=2.0),
    )
    crops, _ = read_crops(stained, np.array([[200.0, 200.0]]), mpp=2.0, size=8)
    raw, _ = read_crops(slide, np.array([[200.0, 200.0]]), mpp=2.0, size=8)
    np.testing.assert_array_equal(crops, 255 - raw)


def test_prepare_slide_with_a_lesion_mask(slide):
    w, h = slide.dimensions
    mask = np.zeros((h // 8 + 1, w // 8 + 1), bool)
    mask[20:30, 20:35] = True  # the purple core of the disc
    sample, graph = prepare_slide(
        slide, label=1, settings=SETTINGS, lesion_mask=(mask, 8), n_candidates=6, seed=0
    )
    assert sample.name == "disc" and sample.label == 1
    assert sample.features.shape == (graph.n_obs, graph.n_vars)
    assert sample.node_labels is not None and set(sample.node_labels.tolist()) <= {-1, 0, 1}
    assert sample.crops.shape[1:] == (3, 32, 32) and sample.crops.dtype == torch.uint8
    assert sample.crop_masks.shape == (len(sample.crops), 1, 32, 32)
    positive = sample.node_labels[sample.crop_nodes] == 1
    assert positive.any() and (sample.crop_masks[positive].float().mean() > 0.3)
    assert sample.node_xy.shape == (graph.n_obs, 2)
    assert sample.tiles is None and sample.crop_embeddings is None


def test_prepare_slide_without_masks_tiles_and_a_frozen_encoder(slide):
    from workbench.models import ModuleEncoder

    calls = []

    class Mean(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x.mean(dim=(2, 3))

    enc = ModuleEncoder(Mean(), input_size=32, mpp=2.0)
    calls.clear()
    sample, _ = prepare_slide(
        slide, label=0, settings=SETTINGS, n_candidates=4, tiles=True, max_tiles=5, encoder=enc
    )
    assert sample.node_labels is None and sample.crop_masks is None  # MIL only
    assert sample.crop_embeddings.shape == (4, 3)
    assert sample.tile_embeddings.shape[0] == min(5, len(tissue_grid(slide, SETTINGS)))
    assert sample.tiles is None  # tiles were embedded once, pixels not kept
    assert sum(calls) == 4 + len(sample.tile_embeddings)  # once per crop and tile


def test_crop_reader_reads_each_region_once(slide, monkeypatch):
    graph = region_graph_for(slide, SETTINGS)
    reader = CropReader(slide, graph.obsm["spatial"], SETTINGS)
    reads = []
    original = Slide.read_region

    def counting(self, *args, **kwargs):
        reads.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Slide, "read_region", counting)
    first = reader([3, 5])
    again = reader([5, 3, 7])
    assert first.shape == (2, 3, 32, 32) and torch.equal(again[1], first[0])
    assert len(reads) == 3  # regions 3, 5, then only 7


def test_settings_and_suggestions(slide):
    pre = settings_of({"crop_size": 64})
    assert pre["crop_size"] == 64 and pre["detail_mpp"] == 0.5 and pre["n_segments"] == 1500
    assert suggest_settings(slide)["thumbnail_mpp"] == 2.0  # a 1 mm slide: the finest allowed


def test_settings_of_takes_a_dataclass_a_dict_or_a_model():
    from workbench import OptionError
    from workbench.pp import Preprocessing

    pre = Preprocessing(n_segments=300)
    assert settings_of(pre) == pre.to_dict() == settings_of({"n_segments": 300})
    # a model records feature names beside its settings; an older checkpoint may hold
    # entries this version does not know: they are ignored, not refused
    model = type("M", (), {"preprocessing": {"n_segments": 60, "feature_names": ["a"], "x": 1}})
    got = settings_of(model())
    assert got["feature_names"] == ["a"] and got["n_segments"] == 60 and "x" not in got
    with pytest.raises(OptionError, match="unknown preprocessing setting.*'n_segment'"):
        settings_of({"n_segment": 60})
    with pytest.raises(OptionError, match="crop_size must be a whole number from 8"):
        settings_of({"crop_size": 0})


def test_tissue_grid_reads_min_tissue_from_the_settings(slide):
    loose = tissue_grid(slide, {**SETTINGS, "min_tissue": 0.0})
    strict = tissue_grid(slide, {**SETTINGS, "min_tissue": 1.0})
    default = tissue_grid(slide, SETTINGS)  # Preprocessing's 0.5
    assert len(strict) <= len(default) <= len(loose) and len(strict) < len(loose)


def test_a_fragment_smaller_than_a_tile_still_gets_its_best_tiles(he_like_image):
    rng = np.random.default_rng(0)
    canvas = np.clip(245 + rng.normal(0, 6, (256, 256, 3)), 0, 255).astype(np.uint8)  # glass
    canvas[100:140, 100:140] = he_like_image[170:210, 200:240]  # one small tissue fragment
    small = Slide.from_array(canvas, mpp=2.0, name="fragment")
    settings = {**SETTINGS, "crop_size": 64, "min_tissue": 0.5}  # 64-px tiles: <= 40 % tissue
    xy = tissue_grid(small, settings)
    assert 1 <= len(xy) <= 4  # the tiles holding the fragment, not none and not the glass
    for x, y in xy:
        assert x < 140 and x + 64 > 100 and y < 140 and y + 64 > 100
