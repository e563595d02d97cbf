"""The packaged click network: where its checkpoint lies and how to load it.

The weights ship in the package as one checkpoint folder of the one format
(:func:`workbench.models.save_checkpoint`: ``model.safetensors`` + ``config.json`` with the
checksums); ``config.json``'s ``extra["training"]`` records how they were trained
(``python -m workbench.models.train_clicknet``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CLICK_SEGMENTER", "load_click_segmenter"]

#: The packaged click network's checkpoint folder (a :class:`ClickSegmenter`).
CLICK_SEGMENTER = Path(__file__).resolve().parent / "weights" / "click_segmenter"


def load_click_segmenter(path: str | os.PathLike | None = None):
    """Load a click network checkpoint (by default the packaged one), in eval mode.

    Parameters
    ----------
    path
        A checkpoint folder written by :func:`save_checkpoint` from a
        :class:`ClickSegmenter` (e.g. by ``python -m workbench.models.train_clicknet``);
        ``None`` for the packaged network (:data:`CLICK_SEGMENTER`).

    Returns
    -------
    ClickSegmenter
        The network in eval mode; ``checkpoint_extra_["training"]`` holds its training
        record.

    Raises
    ------
    workbench.CheckpointError
        Missing files, weights or configuration changed after saving (checksums), tensors
        that do not fit, or a checkpoint of another model.
    """
    from workbench.models._checkpoint import load_checkpoint
    from workbench.models._clickseg import ClickSegmenter

    return load_checkpoint(CLICK_SEGMENTER if path is None else path, expect=ClickSegmenter)
