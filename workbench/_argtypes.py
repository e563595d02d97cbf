"""Value types for command-line options (argparse ``type=``), shared by ``workbench`` and
the training entry points (``python -m workbench.models.train_clicknet``).

Each type turns a user's mistake into an :class:`argparse.ArgumentTypeError` whose message
says what to give instead; argparse prints it as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = [
    "existing_file",
    "existing_folder",
    "existing_path",
    "mpp_arg",
    "mpp_option",
    "out_file",
    "out_folder",
    "positive_float",
    "share",
    "smoothing",
    "whole",
]


def mpp_option(value: str | None):
    """``--mpp 0.25`` for every slide, or ``--mpp S1=0.25,S2=0.5`` per slide.

    Parameters
    ----------
    value
        The option's text, or ``None`` when it was not given.

    Returns
    -------
    float | dict[str, float] | None
        One µm/px for every slide, a µm/px per slide id, or ``None``.
    """
    if value is None:
        return None
    if "=" not in value:
        return float(value)
    out = {}
    for part in value.split(","):
        sid, _, mpp = part.partition("=")
        out[sid.strip()] = float(mpp)
    return out


def _number(text: str) -> float:
    """The option's text as a float, or the one-line argparse error naming it."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def positive_float(text: str) -> float:
    """A finite number above zero.

    Parameters
    ----------
    text
        The option's text.

    Returns
    -------
    float
        The number.
    """
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def mpp_arg(text: str):
    """A checked :func:`mpp_option`: every µm/px finite and positive.

    Parameters
    ----------
    text
        The option's text (``0.25`` or ``S1=0.25,S2=0.5``).

    Returns
    -------
    float | dict[str, float]
        One µm/px for every slide, or a µm/px per slide id.
    """
    try:
        mpp = mpp_option(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give µm per pixel as a number (0.25) or per slide (S1=0.25,S2=0.5), got {text!r}"
        ) from None
    values = mpp.values() if isinstance(mpp, dict) else [mpp]
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"mpp must be a positive number of µm per pixel, got {text!r}"
        )
    return mpp


def share(text: str) -> float:
    """A fraction strictly between 0 and 1.

    Parameters
    ----------
    text
        The option's text.

    Returns
    -------
    float
        The fraction.
    """
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1 (e.g. 0.2), got {text}")
    return value


def smoothing(text: str) -> float:
    """A label-smoothing amount: a number in ``[0, 1)`` (0 turns it off).

    Parameters
    ----------
    text
        The option's text.

    Returns
    -------
    float
        The amount.
    """
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"must be at least 0 and below 1 (e.g. 0.1; 0 turns it off), got {text}"
        )
    return value


def whole(low: int, what: str = ""):
    """The type of a whole-number option with a lower bound.

    Parameters
    ----------
    low
        The smallest value allowed.
    what
        Why, appended to the refusal (e.g. ``" (every grade in training and test)"``).

    Returns
    -------
    Callable[[str], int]
        A parser for argparse's ``type=``.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}{what}, got {value}")
        return value

    parse.__name__ = f"whole number >= {low}"  # argparse names the type in some messages
    return parse


def out_folder(text: str) -> Path:
    """An output folder: new or existing, but not a file (nor inside one).

    The same check the steps make (:func:`workbench.io._atomic.output_folder`), made before
    anything runs.

    Parameters
    ----------
    text
        The option's text.

    Returns
    -------
    pathlib.Path
        The folder (not created).
    """
    from workbench.io import OutputWriteError
    from workbench.io._atomic import output_folder

    try:
        return output_folder(text, what="folder for the results", create=False)
    except OutputWriteError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def out_file(text: str) -> Path:
    """An output file: not an existing folder, and its folder not a file.

    Parameters
    ----------
    text
        The option's text.

    Returns
    -------
    pathlib.Path
        The file path.
    """
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a folder; give a file name, e.g. report.html"
        )
    out_folder(str(path.parent))
    return path


def existing_folder(what: str, hint: str = ""):
    """The type of an option naming a folder that must exist.

    Parameters
    ----------
    what
        What the folder holds, for the refusal (e.g. ``"slide folder"``).
    hint
        Added to the "not found" refusal (e.g. which command makes the folder).

    Returns
    -------
    Callable[[str], pathlib.Path]
        A parser for argparse's ``type=``.
    """

    def parse(text: str) -> Path:
        path = Path(text)
        if not path.exists():
            raise argparse.ArgumentTypeError(f"no {what} at {text!r}{hint}; check the path")
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a file; give the {what}")
        return path

    return parse


def existing_file(what: str):
    """The type of an option naming a file that must exist.

    Parameters
    ----------
    what
        What the file is, for the refusal (e.g. ``"clinical CSV"``).

    Returns
    -------
    Callable[[str], pathlib.Path]
        A parser for argparse's ``type=``.
    """

    def parse(text: str) -> Path:
        path = Path(text)
        if not path.exists():
            raise argparse.ArgumentTypeError(f"no {what} at {text!r}; check the path")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a folder; give the {what} file")
        return path

    return parse


def existing_path(text: str) -> Path:
    """A slide file or folder that exists.

    Parameters
    ----------
    text
        The option's text.

    Returns
    -------
    pathlib.Path
        The path.
    """
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no slide file or folder at {text!r}; check the path")
    return path
