"""Click-guided lesion refinement: click state, the CGAM engine and baselines, the click
simulator with NoC metrics, the headless :class:`RefinementSession` (views, navigation,
save) and the JupyterLab widget :class:`RegionRefiner` bound to it.

Nothing else in the package imports this module; ipywidgets loads only when
:class:`RegionRefiner` is first used.
"""

from __future__ import annotations

from workbench._errors import InvalidViewError, RefinementError
from workbench.interactive._adapt import ADAPTATION_SUFFIX, adaptation_path_for
from workbench.interactive._base import load_base_model, read_base_config, save_base_model
from workbench.interactive._clicks import Click, ClickState, click_maps, soft_click_maps
from workbench.interactive._engine import METHODS, PROPAGATE, RefinementEngine
from workbench.interactive._session import RefinementSession
from workbench.interactive._simulate import (
    evaluate_clicks,
    evaluate_sequential,
    iou,
    next_click,
    summarize,
)

__all__ = [
    "ADAPTATION_SUFFIX",
    "METHODS",
    "PROPAGATE",
    "Click",
    "ClickState",
    "InvalidViewError",
    "RefinementEngine",
    "RefinementError",
    "RefinementSession",
    "RegionRefiner",
    "adaptation_path_for",
    "benchmark_views",
    "click_maps",
    "evaluate_clicks",
    "evaluate_sequential",
    "iou",
    "load_base_model",
    "next_click",
    "read_base_config",
    "save_base_model",
    "soft_click_maps",
    "summarize",
]


def __getattr__(name: str):
    if name == "RegionRefiner":
        from workbench.interactive._widget import RegionRefiner

        return RegionRefiner
    if name == "benchmark_views":  # loads scipy.ndimage: only when asked for
        from workbench.interactive._data import benchmark_views

        return benchmark_views
    raise AttributeError(f"module 'workbench.interactive' has no attribute {name!r}")
