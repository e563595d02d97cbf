"""The preprocessing settings of a model, in one frozen dataclass.

:class:`Preprocessing` lists every setting that decides what a model reads from a slide (the
region-graph thumbnail, the superpixels, the magnified crops and tiles, the stain
normalisation), with its default, its allowed range and a one-line description. Everything
else reads these: the slide -> tensors engine (``tl/_engine.py``), the trainer, extraction,
and the command line, whose ``workbench train`` options are made from the fields. A trained
model stores the dict form (:meth:`Preprocessing.to_dict`) in its checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workbench._errors import OptionError


def _setting(
    default: Any,
    help: str,  # noqa: A002 - the argparse word
    *,
    kind: type | str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    none_ok: bool = False,
    cli: bool = True,
):
    """A dataclass field with what the validation and the CLI need in its metadata."""
    meta = {"help": help, "kind": kind, "low": low, "high": high, "low_open": low_open,
            "none_ok": none_ok, "cli": cli}  # fmt: skip
    return field(default=default, metadata=meta)


def _allowed(meta: Mapping[str, Any]) -> str:
    """The allowed values of a numeric setting, in words."""
    if meta["kind"] is int:
        text = f"a whole number from {int(meta['low'])} to {int(meta['high'])}"
    else:
        bracket = "(" if meta["low_open"] else "["
        text = f"a number in {bracket}{meta['low']:g}, {meta['high']:g}]"
    return text + (" or None" if meta["none_ok"] else "")


def _check_number(name: str, value: Any, meta: Mapping[str, Any]) -> int | float | None:
    if value is None and meta["none_ok"]:
        return None
    bad = OptionError(
        f"Preprocessing: {name} must be {_allowed(meta)} ({meta['help']}), got {value!r}"
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad
    number = float(value)
    if not math.isfinite(number):
        raise bad
    if meta["kind"] is int:
        if not number.is_integer():
            raise bad
        number = int(number)
    low, high = meta["low"], meta["high"]
    if number < low or (meta["low_open"] and number == low) or number > high:
        raise bad
    return number


def _check_stain(value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) and callable(getattr(value, "to_dict", None)):
        value = value.to_dict()  # a fitted StainNormalizer
    if not isinstance(value, Mapping) or not {"format", "method", "fitted"} <= set(value):
        raise OptionError(
            "Preprocessing: stain must be None, a fitted pp.StainNormalizer or its to_dict() "
            f"(with 'format', 'method' and 'fitted'), got {value!r:.80}"
        )
    return _plain_copy(value)


def _plain_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_copy(v) for v in value]
    return value


@dataclass(frozen=True)
class Preprocessing:
    """Every preprocessing setting of a model, with its default and allowed range.

    A checkpoint stores :meth:`to_dict`; ``tl.SlideTrainer(settings=...)``, ``tl.extract`` and
    ``workbench train --n-segments …`` all go through this class, so a wrong value is refused
    in one place, with the same message, before any slide is read.

    Parameters
    ----------
    thumbnail_mpp
        µm/px of the thumbnail the region graph is cut from, in (0.001, 1000]. When it is
        not given, ``tl.SlideTrainer`` suggests one from the first slide
        (``workbench.tl._engine.suggest_settings``).
    thumbnail_max_px
        Cap on the thumbnail's longer side in pixels, 64 to 65536, or ``None`` for no cap;
        ``thumbnail_mpp`` is coarsened on larger slides to keep within it.
    n_segments
        SLIC superpixels over the tissue (the region graph's nodes), 2 to 1,000,000.
    detail_mpp
        µm/px of the magnified crops and the tissue tiles, in (0.001, 1000]. With a tile
        encoder, ``tl.SlideTrainer`` uses the encoder's mpp when it is not given.
    crop_size
        Side in pixels of the magnified crops and the tissue tiles, 8 to 8192. With a tile
        encoder, ``tl.SlideTrainer`` uses the encoder's input size when it is not given.
    min_tissue
        Tissue share in [0, 1] a tile of the tissue grid needs (tile models).
    stain
        Stain normalisation: ``None`` or a fitted :class:`~workbench.pp.StainNormalizer`
        (kept as its ``to_dict()``).

    Raises
    ------
    OptionError
        A value outside its range or of the wrong type; the message names the field, what
        it means and the allowed values.

    Examples
    --------
    >>> from workbench import pp
    >>> pre = pp.Preprocessing(n_segments=300)
    >>> pre.to_dict()["n_segments"], pre.crop_size
    (300, 256)
    """

    thumbnail_mpp: float = _setting(
        8.0, "µm/px of the region-graph thumbnail", kind=float, low=1e-3, high=1e3, low_open=True
    )
    thumbnail_max_px: int | None = _setting(
        1280,
        "cap on the thumbnail's longer side in px; thumbnail_mpp is coarsened to keep within it",
        kind=int,
        low=64,
        high=65_536,
        none_ok=True,
    )
    n_segments: int = _setting(
        1500, "SLIC superpixels over the tissue (region-graph nodes)", kind=int, low=2,
        high=1_000_000,
    )  # fmt: skip
    detail_mpp: float = _setting(
        0.5, "µm/px of the magnified crops and tissue tiles", kind=float, low=1e-3, high=1e3,
        low_open=True,
    )  # fmt: skip
    crop_size: int = _setting(
        256, "side in px of the magnified crops and tissue tiles", kind=int, low=8, high=8192
    )
    min_tissue: float = _setting(
        0.5, "tissue share a tile of the tissue grid needs", kind=float, low=0.0, high=1.0
    )
    stain: dict | None = _setting(
        None, "fitted stain normaliser (StainNormalizer.to_dict()) or None", kind="stain",
        cli=False,
    )  # fmt: skip

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["kind"] == "stain":
                checked = _check_stain(value)
            else:
                checked = _check_number(f.name, value, f.metadata)
            object.__setattr__(self, f.name, checked)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The setting names, in order.

        Returns
        -------
        tuple of str
            ``("thumbnail_mpp", "thumbnail_max_px", …, "stain")``.
        """
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON values (the form a checkpoint stores).

        Returns
        -------
        dict
            One entry per field (``stain`` a copy of the normaliser's dict, or ``None``).
        """
        return {name: _plain_copy(getattr(self, name)) for name in self.names()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Settings from a dict; missing keys take their defaults.

        Parameters
        ----------
        data
            Setting name -> value (e.g. a checkpoint's ``preprocessing`` without the entries
            a model records beside its settings, or ``{"n_segments": 300}``).

        Returns
        -------
        Preprocessing
            The validated settings.

        Raises
        ------
        OptionError
            An unknown key (the message lists the valid names) or a value outside its range.
        """
        if isinstance(data, Preprocessing):
            return data
        if not isinstance(data, Mapping):
            raise OptionError(f"Preprocessing settings must be a dict, got a {type(data).__name__}")
        unknown = [k for k in data if k not in cls.names()]
        if unknown:
            raise OptionError(
                f"unknown preprocessing setting(s) {', '.join(map(repr, unknown))}; the "
                f"settings are {', '.join(cls.names())}"
            )
        return cls(**dict(data))

    @classmethod
    def describe(cls, name: str) -> str:
        """One line on a setting: what it means, its allowed values and its default.

        Parameters
        ----------
        name
            A setting name (see :meth:`names`).

        Returns
        -------
        str
            E.g. ``"SLIC superpixels over the tissue (region-graph nodes); a whole number
            from 2 to 1000000; default 1500"``.

        Raises
        ------
        OptionError
            ``name`` is not a setting (the message lists the valid names).
        """
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        if name not in by_name:
            raise OptionError(
                f"unknown preprocessing setting {name!r}; the settings are {', '.join(by_name)}"
            )
        f = by_name[name]
        meta = f.metadata
        allowed = "" if meta["kind"] == "stain" else f"; {_allowed(meta)}"
        return f"{meta['help']}{allowed}; default {f.default}"


__all__ = ["Preprocessing"]
