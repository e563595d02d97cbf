"""Click-guided lesion refinement, the UI core: click state, the CGAM engine and baselines,
number-of-clicks metrics, outline geometry (``_outline``: pure functions in level-0 pixels),
the headless :class:`RefinementSession` (views, navigation, save/write-back), rendering
(``_render``) and the JupyterLab widget :class:`RegionRefiner`, a thin binding that exposes
its session as ``refiner.session``.

It trains nothing: the click network, its checkpoint and its training loop are in
:mod:`workbench.models` (``load_click_segmenter``, ``train_click_segmenter``; the presets in
``python -m workbench.train_clicknet``), the views with ground truth in
:mod:`workbench.datasets` (``benchmark_views``, ``lesion_view``). ``Click``, ``click_maps``,
``soft_click_maps`` and the simulated user ``next_click`` are defined with the network
(``workbench.models._clicks``) and exported here. Nothing else in the package imports this
module; ipywidgets loads only when :class:`RegionRefiner` is first used.
"""

from __future__ import annotations

from workbench._errors import InvalidViewError, RefinementError
from workbench.interactive._adapt import ADAPTATION_SUFFIX, adaptation_path_for
from workbench.interactive._clicks import ClickState
from workbench.interactive._engine import METHODS, PROPAGATE, RefinementEngine
from workbench.interactive._session import RefinementSession
from workbench.interactive._simulate import (
    evaluate_clicks,
    evaluate_sequential,
    iou,
    summarize,
)
from workbench.models._clicks import Click, click_maps, next_click, soft_click_maps

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
    "click_maps",
    "evaluate_clicks",
    "evaluate_sequential",
    "iou",
    "next_click",
    "soft_click_maps",
    "summarize",
]


def __getattr__(name: str):
    if name == "RegionRefiner":
        from workbench.interactive._widget import RegionRefiner

        return RegionRefiner
    raise AttributeError(f"module 'workbench.interactive' has no attribute {name!r}")
