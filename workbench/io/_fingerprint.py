"""One rule for naming a set of inputs by a digest: canonical JSON, then SHA-256.

A demo step records the fingerprint of its inputs in ``run.json`` and a rerun compares it;
the cohort runner names the model and settings behind every per-slide file the same way. The
text is JSON with sorted keys and no spaces (``","`` and ``":"`` separators, ASCII escapes), so
two equal values give the same bytes whatever order their keys were built in, and a
fingerprint recorded by an earlier version of the workbench stays valid.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _plain(value: Any) -> Any:
    """JSON for the few non-JSON types a record may hold: NumPy scalars and arrays, and
    settings objects with a ``to_dict()`` (such as :class:`workbench.pp.Preprocessing`)."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(
        f"cannot fingerprint a {type(value).__name__}: give JSON values (dict, list, str, "
        "number, bool, None), NumPy numbers or arrays, or an object with to_dict()"
    )


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: keys sorted, no spaces, ASCII only.

    Parameters
    ----------
    value
        JSON values (dict, list, str, int, float, bool, None), NumPy scalars and arrays
        (written as numbers and lists) and objects with a ``to_dict()`` method, nested freely.

    Returns
    -------
    str
        The text; equal values give equal text whatever the order of their keys.

    Raises
    ------
    TypeError
        ``value`` holds something else (the message names its type).
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)


def fingerprint(value: Any) -> str:
    """SHA-256 of :func:`canonical_json` of ``value`` (UTF-8), as 64 hexadecimal digits.

    Parameters
    ----------
    value
        What :func:`canonical_json` accepts, typically a dict of settings and of the digests
        of the files an operation read.

    Returns
    -------
    str
        64 lowercase hexadecimal digits.

    Raises
    ------
    TypeError
        ``value`` holds something :func:`canonical_json` cannot write.
    """
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


__all__ = ["canonical_json", "fingerprint"]
