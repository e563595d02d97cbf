"""Exceptions raised by the workbench.

Every error the package raises on bad input is a subclass of :class:`WorkbenchError`, so a
notebook can catch them all at once, and each message says what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: Who reads the messages raised now: ``"python"`` (a notebook or script, the default) or
#: ``"cli"`` (inside :func:`workbench.cli.main`, which sets it).
_AUDIENCE: ContextVar[str] = ContextVar("workbench_error_audience", default="python")


def remedy(python: str, cli: str) -> str:
    """The way out an error message names, in the words of whoever reads it.

    Library code writes both spellings (``remedy("folds=None", "no --folds")``); inside
    :func:`speaking_to_cli` the command-line one is used, so a ``workbench`` user reads an
    option they can type instead of a Python call.

    Parameters
    ----------
    python
        The remedy as Python code or keyword (``"on_unmatched='drop'"``).
    cli
        The same remedy as command-line options (``"--on-unmatched drop"``).

    Returns
    -------
    str
        ``cli`` while :func:`speaking_to_cli` is active, else ``python``.
    """
    return cli if _AUDIENCE.get() == "cli" else python


@contextmanager
def speaking_to_cli() -> Iterator[None]:
    """Within this block, error messages name command-line options (:func:`remedy`).

    Yields
    ------
    None
        Nothing; the audience is restored when the block ends.
    """
    token = _AUDIENCE.set("cli")
    try:
        yield
    finally:
        _AUDIENCE.reset(token)


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on bad input."""


class SlideOpenError(WorkbenchError, OSError):
    """A slide file is missing, in a format OpenSlide cannot read, or damaged.

    Parameters
    ----------
    path
        The slide file (kept as ``self.path``, a string).
    reason
        What went wrong, in words (kept as ``self.reason``); the message is
        ``cannot open slide '<path>': <reason>``.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot open slide {self.path!r}: {reason}")


class MissingResolutionError(WorkbenchError, ValueError):
    """An operation needs microns per pixel, and the slide does not record it."""


class InvalidRegionError(WorkbenchError, ValueError):
    """A requested region is empty, negative, or lies outside the slide."""


class NoTissueError(WorkbenchError, ValueError):
    """Tissue detection found nothing to work on."""


class ClinicalTableError(WorkbenchError, ValueError):
    """A clinical table misses columns, has bad values, or does not match the slides."""


class UnmatchedSlidesError(ClinicalTableError):
    """Slides without a clinical row, or clinical rows without a slide, when the table is matched
    to the slides (:meth:`workbench.io.Cohort.match`); the message names a few of each and the
    option that leaves them out (``on_unmatched="drop"``, ``--on-unmatched drop``)."""


class CheckpointError(WorkbenchError, ValueError):
    """A model checkpoint is missing, truncated, tampered with, or of another model."""


class GeoJSONError(WorkbenchError, ValueError):
    """A GeoJSON file is not a FeatureCollection of polygons we can read."""


class GeoJSONRepairWarning(UserWarning):
    """``read_geojson(..., repair=True)`` changed a geometry; the message says what changed."""


class NotBrightfieldWarning(UserWarning):
    """A slide does not look like brightfield H&E (e.g. fluorescence), yet an H&E model reads it."""


class InvalidImageError(WorkbenchError, ValueError):
    """An image array is not what the function needs (shape, dtype, empty)."""


class RefinementError(WorkbenchError, ValueError):
    """Click refinement got an unknown method or option, or a save it cannot do."""


class InvalidViewError(RefinementError):
    """A refinement view is empty, too small (under 8 px a side) or not RGB, or a mask or
    navigation request does not fit it."""


class MarkerError(WorkbenchError, ValueError):
    """Marker discovery got inputs it cannot use (missing features, one outcome group, unfitted)."""


class StainError(WorkbenchError, ValueError):
    """An image cannot be stain-normalised (wrong shape or dtype, no stained tissue, one stain)."""


class CohortError(WorkbenchError, ValueError):
    """Slides, clinical table and annotations of a cohort do not fit together (duplicate slide
    ids, annotations or resolution overrides for slides that are not in the cohort)."""


class UnknownSlideError(CohortError, KeyError):
    """A slide id that the cohort does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EncoderError(WorkbenchError, ValueError):
    """A tile encoder cannot be used: unknown name, missing or unreadable file, wrong outputs, or
    another encoder than the one a checkpoint was trained with."""


class MosaicDataError(WorkbenchError, FileNotFoundError):
    """The real tissue tiles a mosaic cohort is composed from are missing or too few to split
    into train and test."""


class OptionError(WorkbenchError, ValueError):
    """An option has a value it does not accept (a count of 0, a share outside (0, 1) …); the
    message names the option and the valid values."""


class SplitWarning(UserWarning):
    """A requested split was made but is thin: a cross-validation fold holds fewer than two
    slides or patients of a class, or a fold's training part is too small for its inner
    validation split; the message names the counts."""


class ClusterError(WorkbenchError, RuntimeError):
    """A dask cluster cannot be started or reached (no scheduler at the address, a timeout)."""


class ResultFileError(WorkbenchError, OSError):
    """A result written by an earlier step (a per-slide ``.h5ad``, a run folder's files) is
    missing, truncated or not what that step writes."""


class NonFiniteError(WorkbenchError, ValueError):
    """NaN or infinite numbers where a result must be finite: an encoder's embeddings, a
    training loss, a checkpoint's weights, a slide's class probabilities. The message names
    what held them and the likely cause."""
