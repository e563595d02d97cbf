"""Finite numbers or a clear refusal: one check for embeddings, losses, weights, probabilities.

A NaN that gets through turns every later number into NaN without a word (a slide labelled
with p = [nan, nan]); these helpers stop at the first one and say where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from workbench._errors import NonFiniteError


def _count_bad(value) -> tuple[int, int]:
    """``(non-finite count, total count)`` of a tensor or array (non-float: ``(0, n)``)."""
    if torch.is_tensor(value):
        if not (value.is_floating_point() or value.is_complex()):
            return 0, value.numel()
        return int((~torch.isfinite(value.detach())).sum()), value.numel()
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.inexact):
        return 0, arr.size
    return int((~np.isfinite(arr)).sum()), arr.size


def require_finite(value, what: str, hint: str = "") -> None:
    """Raise :class:`~workbench.NonFiniteError` when ``value`` holds a NaN or an infinity.

    Parameters
    ----------
    value
        A tensor or array (non-float values always pass).
    what
        What the numbers are, for the message (e.g. ``"the encoder's embeddings of slide S1"``).
    hint
        What to do about it, appended to the message.

    Returns
    -------
    None
    """
    bad, total = _count_bad(value)
    if bad:
        raise NonFiniteError(
            f"{what} hold {bad} NaN or infinite value(s) of {total}" + (f"; {hint}" if hint else "")
        )


def nonfinite_names(tensors: Mapping[str, object]) -> list[str]:
    """Names of the entries of ``tensors`` that hold a NaN or an infinity.

    Parameters
    ----------
    tensors
        ``{name: tensor or array}`` (``None`` values are skipped).

    Returns
    -------
    list of str
        The names, in the mapping's order.
    """
    return [k for k, v in tensors.items() if v is not None and _count_bad(v)[0]]


def nonfinite_cause(model: nn.Module | None, inputs: Mapping[str, object]) -> str:
    """Where a non-finite result most likely came from: the inputs, else the weights.

    Parameters
    ----------
    model
        The network (its parameters and buffers are checked), or ``None``.
    inputs
        ``{name: tensor or array}`` the network was given.

    Returns
    -------
    str
        A phrase such as ``"the inputs region features hold NaN/inf"``.
    """
    bad_in = nonfinite_names(inputs)
    if bad_in:
        return f"the input(s) {', '.join(bad_in)} hold NaN/inf"
    if model is not None:
        state = dict(model.named_parameters())
        state.update(dict(model.named_buffers()))
        bad_w = nonfinite_names(state)
        if bad_w:
            more = " …" if len(bad_w) > 4 else ""
            return f"the network's weights {', '.join(bad_w[:4])}{more} hold NaN/inf"
    return (
        "inputs and weights are finite, so a computation overflowed (e.g. a learning rate too high)"
    )


__all__ = ["nonfinite_cause", "nonfinite_names", "require_finite"]
