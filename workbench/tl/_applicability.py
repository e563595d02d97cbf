"""Is a slide the kind of slide a model was trained on?

A checkpoint carries an applicability record (``extra["applicability"]``): for the slides the
final model was fit on, the colour of their thumbnails (before any stain normalisation) and
the slide embedding of the model's global branch (the mean region features for a kind
without one). :class:`ApplicabilityRecord` summarises each block by its per-feature mean and
spread, measures how far a new slide lies from them (the root mean square of its z-scores)
and compares that with a threshold chosen on the training slides themselves: the
``quantile`` of their leave-one-out distances (each training slide measured against a record
fitted without it). A score above 1 means the slide is farther from the training slides than
almost every training slide is from the others.

:func:`applicability_verdict` combines that score with :func:`workbench.pp.check_brightfield`
into the verdict :func:`~workbench.tl.extract` stores in ``uns["explain"]["applicability"]``.
Everything here is numpy; :func:`slide_embedding` alone runs the model (torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from workbench._errors import CheckpointError

__all__ = ["ApplicabilityRecord", "applicability_verdict", "slide_embedding", "thumbnail_colour"]

#: The colour features of a thumbnail, in :func:`thumbnail_colour`'s order.
COLOUR_FEATURES = (
    "tissue fraction",
    "glass brightness",
    "mean optical density red",
    "mean optical density green",
    "mean optical density blue",
    "red share of optical density",
    "blue share of optical density",
)
_TISSUE_LEVEL = 220  # as pp.check_brightfield: darker than this (channel mean) is tissue
_BLACK_LEVEL = 40  # a pixel whose brightest channel is below this has no light
NO_RECORD = "no applicability record in this checkpoint"
_VERSION = 1


def thumbnail_colour(rgb) -> np.ndarray:
    """Colour statistics of a slide's thumbnail, the colour block of the applicability record.

    Parameters
    ----------
    rgb
        ``(rows, cols, 3)`` uint8 RGB thumbnail, the slide's own colours (before stain
        normalisation).

    Returns
    -------
    numpy.ndarray
        ``(7,)`` float64 in :data:`COLOUR_FEATURES` order: the share of tissue pixels (darker
        than glass, not black), the median brightness of the other pixels (glass; 0 when there
        are none), the mean optical density ``-log10((I + 1) / 256)`` per channel over tissue
        and the red and blue shares of it.

    Raises
    ------
    InvalidImageError
        Not a non-empty uint8 RGB array.
    """
    from workbench.pp._qc import _as_rgb

    f = _as_rgb(rgb).astype(np.float64)
    mean = f.mean(axis=2)
    tissue = (mean < _TISSUE_LEVEL) & (f.max(axis=2) >= _BLACK_LEVEL)
    glass = ~tissue
    tissue_fraction = float(tissue.mean())
    brightness = float(np.median(mean[glass])) if glass.any() else 0.0
    if tissue.any():
        od = -np.log10((f[tissue] + 1.0) / 256.0).mean(axis=0)
    else:
        od = np.zeros(3)
    total = float(od.sum())
    shares = od / total if total > 1e-9 else np.full(3, 1.0 / 3.0)
    return np.array([tissue_fraction, brightness, *od, shares[0], shares[2]], dtype=np.float64)


def slide_embedding(model, features, edge_index) -> np.ndarray:
    """The slide embedding the applicability record describes, from a slide's region graph.

    Parameters
    ----------
    model
        A slide model. Kinds with a global branch (``"sew"``, ``"global"``) give its pooled
        ``slide_embedding``; others the mean of the region features over the slide's regions.
    features
        ``(N, F)`` region features (tensor or array).
    edge_index
        ``(2, E)`` region adjacency (tensor or array).

    Returns
    -------
    numpy.ndarray
        ``(D,)`` float64.
    """
    import torch

    x = torch.as_tensor(
        np.asarray(features, dtype=np.float32) if not torch.is_tensor(features) else features
    )
    branch = getattr(model, "global_branch", None)
    if branch is None:
        return x.detach().float().mean(0).cpu().numpy().astype(np.float64)
    ei = torch.as_tensor(edge_index, dtype=torch.long)
    dev = next(branch.parameters()).device
    with torch.no_grad():
        out = branch(x.float().to(dev), ei.to(dev))
    return out["slide_embedding"].detach().float().reshape(-1).cpu().numpy().astype(np.float64)


class ApplicabilityRecord:
    """How the training slides looked, and how far a new slide is from them.

    Each block (``"colour"``: :func:`thumbnail_colour`; ``"embedding"``:
    :func:`slide_embedding`) is summarised by its per-feature mean and standard deviation
    over the training slides. A slide's distance to a block is the root mean square of its
    z-scores; its threshold is the ``quantile`` of the training slides' leave-one-out
    distances. The score is the largest distance / threshold ratio over the blocks.

    Parameters
    ----------
    quantile
        Which leave-one-out distance of the training slides is the threshold (0.99: with
        fewer than 100 slides, about the largest).
    min_slides
        Fewer training slides than this: no threshold can be set; :meth:`score` gives NaN.

    Attributes
    ----------
    blocks_
        ``{name: {"names", "mean", "std", "threshold", "loo"}}`` after :meth:`fit`.
    n_slides_
        Training slides the record was fitted on.
    """

    def __init__(self, *, quantile: float = 0.99, min_slides: int = 5) -> None:
        if not 0.5 <= float(quantile) <= 1.0:
            raise ValueError(f"quantile must be in [0.5, 1], got {quantile!r}")
        self.quantile = float(quantile)
        self.min_slides = max(3, int(min_slides))
        self.blocks_: dict[str, dict] = {}
        self.n_slides_ = 0

    def __repr__(self) -> str:
        blocks = ", ".join(f"{k} ({len(v['mean'])})" for k, v in self.blocks_.items())
        return f"ApplicabilityRecord(n_slides={self.n_slides_}, blocks=[{blocks}])"

    # ---------------------------------------------------------------------------- fit
    def fit(
        self,
        colour: np.ndarray | None = None,
        embedding: np.ndarray | None = None,
    ) -> ApplicabilityRecord:
        """Summarise the training slides; returns ``self``.

        Parameters
        ----------
        colour
            ``(n, 7)`` :func:`thumbnail_colour` of every training slide, or ``None`` (the
            slides were not read from files).
        embedding
            ``(n, D)`` :func:`slide_embedding` of every training slide, or ``None``.

        Returns
        -------
        ApplicabilityRecord
            ``self``, with ``blocks_`` and ``n_slides_``.

        Raises
        ------
        ValueError
            No block given, blocks with different slide counts, or non-finite values.
        """
        given = {"colour": colour, "embedding": embedding}
        given = {k: np.asarray(v, dtype=np.float64) for k, v in given.items() if v is not None}
        if not given:
            raise ValueError("give the colour or the embedding of the training slides")
        counts = {v.shape[0] for v in given.values()}
        if len(counts) != 1 or any(v.ndim != 2 for v in given.values()):
            raise ValueError("each block must be (n_slides, n_features) with the same n_slides")
        self.n_slides_ = counts.pop()
        self.blocks_ = {}
        for name, x in given.items():
            if not np.isfinite(x).all():
                raise ValueError(f"the {name} of the training slides has non-finite values")
            names = list(COLOUR_FEATURES) if name == "colour" else None
            if names is not None and x.shape[1] != len(names):
                raise ValueError(f"colour needs {len(names)} columns, got {x.shape[1]}")
            mean, std = _summary(x)
            loo = _leave_one_out(x) if len(x) >= self.min_slides else []
            threshold = float(np.quantile(loo, self.quantile)) if len(loo) else math.nan
            self.blocks_[name] = {
                "names": names or [f"dimension {i}" for i in range(x.shape[1])],
                "mean": mean.tolist(),
                "std": std.tolist(),
                "threshold": max(threshold, 1e-6) if math.isfinite(threshold) else math.nan,
                "loo": [float(v) for v in loo],
            }
        return self

    # --------------------------------------------------------------------------- score
    def distances(
        self, colour: np.ndarray | None = None, embedding: np.ndarray | None = None
    ) -> dict[str, dict]:
        """Per block: the slide's distance, its ratio to the threshold and its largest z-scores.

        Parameters
        ----------
        colour, embedding
            The slide's :func:`thumbnail_colour` and :func:`slide_embedding` (``None``: the
            block is not scored).

        Returns
        -------
        dict
            ``{block: {"distance", "ratio", "top": [(feature name, z), ...]}}`` for every
            block the record has and the slide gives.
        """
        self._require_fitted()
        out = {}
        for name, value in (("colour", colour), ("embedding", embedding)):
            block = self.blocks_.get(name)
            if block is None or value is None:
                continue
            v = np.asarray(value, dtype=np.float64).ravel()
            mean = np.asarray(block["mean"])
            if v.shape != mean.shape:
                raise CheckpointError(
                    f"the slide's {name} has {v.size} values, the applicability record "
                    f"{mean.size}: the checkpoint was made by another model or version; "
                    "train it again to record how its slides looked"
                )
            z = (v - mean) / np.asarray(block["std"])
            z = np.where(np.isfinite(z), z, 1e6)
            d = float(np.sqrt(np.mean(z**2)))
            order = np.argsort(-np.abs(z))[:2]
            out[name] = {
                "distance": d,
                "ratio": d / block["threshold"] if math.isfinite(block["threshold"]) else math.nan,
                "top": [(block["names"][i], float(z[i])) for i in order],
            }
        return out

    def score(
        self, colour: np.ndarray | None = None, embedding: np.ndarray | None = None
    ) -> tuple[float, list[str]]:
        """How far a slide is from the training slides, and why it is flagged.

        Parameters
        ----------
        colour, embedding
            The slide's :func:`thumbnail_colour` and :func:`slide_embedding` (``None``: the
            block is not scored).

        Returns
        -------
        score : float
            The largest distance / threshold ratio over the blocks: at most 1 for nearly
            every training slide, above 1 off the training distribution; NaN when no block
            could be scored (too few training slides, or nothing given).
        reasons : list of str
            One sentence per block beyond its threshold (empty when none is).
        """
        parts = self.distances(colour, embedding)
        ratios = [p["ratio"] for p in parts.values() if math.isfinite(p["ratio"])]
        reasons = []
        what = {
            "colour": "its thumbnail colour",
            "embedding": "the model's slide embedding",
        }
        for name, p in parts.items():
            if math.isfinite(p["ratio"]) and p["ratio"] > 1.0:
                top = ", ".join(f"{n} z = {z:+.1f}" for n, z in p["top"])
                reasons.append(
                    f"off the training distribution: {what[name]} lies {p['ratio']:.1f}× as far "
                    f"from the {self.n_slides_} training slides as the threshold set on them "
                    f"(most unlike: {top})"
                )
        return (max(ratios) if ratios else math.nan), reasons

    # --------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """The record as plain JSON (what the checkpoint stores).

        Returns
        -------
        dict
            ``version``, ``quantile``, ``min_slides``, ``n_slides`` and ``blocks``.
        """
        self._require_fitted()
        blocks = {
            k: {kk: (None if _is_nan(vv) else vv) for kk, vv in v.items()}
            for k, v in self.blocks_.items()
        }
        return {
            "version": _VERSION,
            "quantile": self.quantile,
            "min_slides": self.min_slides,
            "n_slides": self.n_slides_,
            "blocks": blocks,
        }

    @classmethod
    def from_dict(cls, record: Mapping) -> ApplicabilityRecord:
        """The record :meth:`to_dict` wrote.

        Parameters
        ----------
        record
            The checkpoint's ``extra["applicability"]``.

        Returns
        -------
        ApplicabilityRecord
            Fitted.

        Raises
        ------
        CheckpointError
            The record is not one this version can read.
        """
        try:
            if int(record["version"]) != _VERSION:
                raise KeyError("version")
            self = cls(quantile=float(record["quantile"]), min_slides=int(record["min_slides"]))
            self.n_slides_ = int(record["n_slides"])
            self.blocks_ = {}
            for name, b in dict(record["blocks"]).items():
                if name not in ("colour", "embedding"):
                    raise KeyError(name)
                t = b.get("threshold")
                self.blocks_[name] = {
                    "names": [str(n) for n in b["names"]],
                    "mean": [float(v) for v in b["mean"]],
                    "std": [float(v) for v in b["std"]],
                    "threshold": math.nan if t is None else float(t),
                    "loo": [float(v) for v in b.get("loo", [])],
                }
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the checkpoint's applicability record is not readable ({exc}); train the "
                "model again with this workbench version"
            ) from None
        return self

    def _require_fitted(self) -> None:
        if not self.blocks_:
            raise ValueError("fit the ApplicabilityRecord first")


def _is_nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _summary(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and a standard deviation kept away from zero (a feature that never
    varied in training must not make every new slide infinitely far)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1])
    typical = float(np.median(std)) if np.any(std > 0) else 1.0
    floor = np.maximum(1e-3 * np.abs(mean), 0.05 * typical) + 1e-9
    return mean, np.maximum(std, floor)


def _leave_one_out(x: np.ndarray) -> list[float]:
    """Each row's RMS z-distance from the summary of the other rows."""
    out = []
    for i in range(len(x)):
        rest = np.delete(x, i, axis=0)
        mean, std = _summary(rest)
        out.append(float(np.sqrt(np.mean(((x[i] - mean) / std) ** 2))))
    return out


def applicability_verdict(
    brightfield,
    record: Mapping | ApplicabilityRecord | None,
    *,
    colour: np.ndarray | None = None,
    embedding: np.ndarray | None = None,
    forced: bool = False,
) -> dict:
    """The verdict :func:`~workbench.tl.extract` stores in ``uns["explain"]["applicability"]``.

    Parameters
    ----------
    brightfield
        :func:`workbench.pp.check_brightfield`'s result for the slide's thumbnail.
    record
        The checkpoint's ``extra["applicability"]`` (or a fitted record); ``None`` for a
        checkpoint saved before records existed.
    colour, embedding
        The slide's :func:`thumbnail_colour` and :func:`slide_embedding`.
    forced
        The user asked for a grade whatever the verdict (noted in the reasons).

    Returns
    -------
    dict
        ``applicable`` (False when the slide is not brightfield H&E or lies off the training
        distribution), ``score`` (:meth:`ApplicabilityRecord.score`; NaN without a record),
        ``reasons`` (one sentence each), ``brightfield`` (:func:`~workbench.pp.check_brightfield`
        passed) and ``graded`` (probabilities were given: brightfield, or ``forced``).
    """
    reasons = [f"not brightfield H&E: {r}" for r in brightfield.reasons]
    score = math.nan
    if record is None:
        reasons.append(NO_RECORD)
    else:
        if not isinstance(record, ApplicabilityRecord):
            record = ApplicabilityRecord.from_dict(record)
        score, off = record.score(colour, embedding)
        reasons.extend(off)
        if not math.isfinite(score):
            reasons.append(
                f"the record holds {record.n_slides_} training slides, fewer than "
                f"{record.min_slides}: no threshold, the slide is not scored"
            )
    looks = bool(brightfield.looks_like_he)
    applicable = looks and not (math.isfinite(score) and score > 1.0)
    graded = looks or bool(forced)
    if not looks:
        reasons.append(
            "graded anyway (forced)"
            if forced
            else "not graded: probabilities left NaN (force the grade with "
            "extract(..., force=True) or `workbench extract --force-grade`)"
        )
    return {
        "applicable": bool(applicable),
        "score": float(score),
        "reasons": list(reasons),
        "brightfield": looks,
        "graded": bool(graded),
    }


def training_record(
    model, samples: Sequence, thumbnails: Sequence | None = None, **kwargs
) -> dict | None:
    """The applicability record of a trained model as plain JSON (``None`` without slides).

    Parameters
    ----------
    model
        The trained model (its :func:`slide_embedding` of every sample is recorded).
    samples
        The training :class:`~workbench.models.SlideSample` the final model was fit on.
    thumbnails
        Their thumbnails (same order), or ``None`` when the slides were not read from files.
    **kwargs
        Passed to :class:`ApplicabilityRecord`.

    Returns
    -------
    dict or None
        :meth:`ApplicabilityRecord.to_dict`.
    """
    if not samples:
        return None
    emb = np.stack([slide_embedding(model, s.features, s.edge_index) for s in samples])
    colour = None
    if thumbnails is not None:
        colour = np.stack([thumbnail_colour(t) for t in thumbnails])
    return ApplicabilityRecord(**kwargs).fit(colour=colour, embedding=emb).to_dict()
