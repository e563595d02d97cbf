from __future__ import annotations

import anndata
import numpy as np

from workbench.io import read_geojson
from workbench.tl import export_geojson


def _explained(target: str | None) -> anndata.AnnData:
    maps = np.zeros((2, 16, 16), dtype=np.float32)
    maps[:, 4:12, 4:12] = 1.0  # a lesion-map blob in each region: survival must not draw it
    ex = {
        "lesion_threshold": 0.5,
        "focus": {
            "boxes_xywh": np.array([[0, 0, 64, 64], [100, 40, 64, 64]], dtype=float),
            "focus_score": np.array([0.9, 0.7], dtype=np.float32),
            "lesion_prob": np.array([0.3, 0.2], dtype=np.float32),
            "lesion_maps": maps,
        },
    }
    if target is not None:
        ex["target"] = target
        ex["risk"] = 1.23
    adata = anndata.AnnData(np.zeros((3, 1), dtype=np.float32))
    adata.uns["explain"] = ex
    return adata


def test_survival_focus_regions_are_prognostic_with_risk_contribution(tmp_path):
    anns = read_geojson(export_geojson(_explained("survival"), tmp_path / "s.geojson"))
    assert [a.classification for a in anns] == ["Prognostic focus"] * 2  # no Tumor polygons
    assert np.allclose([a.measurements["risk_contribution"] for a in anns], [0.9, 0.7])
    assert all("lesion_prob" not in a.measurements for a in anns)
    x0, y0 = np.asarray(anns[1].geometry["coordinates"][0])[0]
    assert (x0, y0) == (100, 40)


def test_classification_models_keep_focus_and_tumor_classes(tmp_path):
    anns = read_geojson(export_geojson(_explained(None), tmp_path / "c.geojson"))
    classes = {a.classification for a in anns}
    assert classes == {"Focus region", "Tumor"}
    assert all("risk_contribution" not in a.measurements for a in anns)
