"""The one protocol every slide model follows, and the registry of model kinds.

A *kind* is a named :class:`SlideModel` subclass (``"sew"``, ``"global"``, ``"abmil"``). The
trainer (:class:`~workbench.models.Trainer`), checkpoints
(:func:`~workbench.models.save_checkpoint` / :func:`~workbench.models.load_checkpoint`),
explanation (:func:`workbench.tl.extract`) and the command line (``workbench train --kind``)
never tell kinds apart by hand: they call the hooks below and read :data:`MODEL_KINDS`. A new
kind is one file with a :class:`SlideModel` subclass plus one line in :data:`MODEL_KINDS`
(or a :func:`register_kind` call from your own code).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from workbench._errors import EncoderError, OptionError

if TYPE_CHECKING:  # pragma: no cover
    from workbench.models._trainer import SlideSample

__all__ = [
    "DEFAULT_TOP_K",
    "MODEL_KINDS",
    "SlideInputs",
    "SlideModel",
    "StepContext",
    "kind_of",
    "model_kind",
    "pool_by_region",
    "register_kind",
]

#: Focus regions picked by kinds whose configuration holds no ``top_k``.
DEFAULT_TOP_K = 4

# The registry: kind name -> "module:Class" (imported on first use) or the class itself.
_KINDS: dict[str, str | type] = {
    "sew": "workbench.models._model:SelfCalibratedModel",
    "global": "workbench.models._global_only:GlobalOnly",
    "abmil": "workbench.models._abmil:TileABMIL",
}

#: The registered model kinds (a read-only view: name -> ``"module:Class"`` or the class).
#: Iterating gives the names; ``workbench train --kind`` offers exactly these.
MODEL_KINDS: Mapping[str, str | type] = MappingProxyType(_KINDS)


def register_kind(name: str, cls: type | None = None):
    """Register a :class:`SlideModel` subclass under a kind name.

    Usable as a decorator (``@register_kind("mine")``) or a call. The class's ``kind``
    attribute is set to ``name``.

    Parameters
    ----------
    name
        The kind name (what ``SlideTrainer(kind=...)``, ``workbench train --kind`` and the
        checkpoint's ``"kind"`` entry say).
    cls
        The class; omit it to use the function as a decorator.

    Returns
    -------
    type or callable
        The class (or, without ``cls``, a decorator that registers and returns it).

    Raises
    ------
    OptionError
        ``name`` is empty or already names another class, or ``cls`` is not a
        :class:`SlideModel` subclass.
    """

    def add(c: type) -> type:
        if not isinstance(name, str) or not name.strip():
            raise OptionError(f"a model kind needs a non-empty name, got {name!r}")
        if not (isinstance(c, type) and issubclass(c, SlideModel)):
            raise OptionError(f"{c!r} is not a SlideModel subclass; it cannot be a model kind")
        known = _KINDS.get(name)
        if known is not None and _resolve(known) is not c:
            raise OptionError(f"the model kind {name!r} is taken by {_resolve(known).__name__}")
        c.kind = name
        _KINDS[name] = c
        return c

    return add if cls is None else add(cls)


def _resolve(entry: str | type) -> type:
    if isinstance(entry, type):
        return entry
    module, _, qualname = entry.partition(":")
    return getattr(importlib.import_module(module), qualname)


def model_kind(name: str) -> type[SlideModel]:
    """The :class:`SlideModel` class registered under a kind name.

    Parameters
    ----------
    name
        A kind name (see :data:`MODEL_KINDS`).

    Returns
    -------
    type
        The class.

    Raises
    ------
    OptionError
        No kind has this name (the message lists the registered ones).
    """
    if name not in _KINDS:
        raise OptionError(f"unknown model kind {name!r}; kind must be one of {tuple(_KINDS)}")
    return _resolve(_KINDS[name])


def kind_of(model: nn.Module | type) -> str:
    """The registered kind name of a model (or model class).

    Parameters
    ----------
    model
        A model object or class; a checkpoint records this name.

    Returns
    -------
    str
        The kind name.

    Raises
    ------
    OptionError
        The model's class is not a registered kind.
    """
    cls = model if isinstance(model, type) else type(model)
    for name, entry in _KINDS.items():
        if _resolve(entry) is cls:
            return name
    raise OptionError(
        f"{cls.__name__} is not a registered model kind (known: {tuple(_KINDS)}); register it "
        "with workbench.models.register_kind"
    )


def kind_by_class_name(class_name: str) -> str | None:
    """The kind whose class is called ``class_name`` (checkpoints written before kinds had
    names record only the class), or ``None``."""
    for name, entry in _KINDS.items():
        if _resolve(entry).__name__ == class_name:
            return name
    return None


# ------------------------------------------------------------------------------- protocol
@dataclass
class StepContext:
    """What a training step needs from the trainer (one object, so kinds never see it).

    Parameters
    ----------
    device
        Where the step runs.
    generator
        Seeded generator for sampling and augmentation.
    weights
        The curriculum weights of this epoch (:func:`~workbench.models.curriculum_weights`).
    slide_loss
        ``slide_loss(logits, label)``: the slide cross-entropy with the trainer's class weights.
    images
        ``images(uint8_or_float)``: float images on ``device`` in ``[0, 1]``, stain-augmented
        when the trainer augments.
    tiles_per_step
        Tiles sampled per slide and step by kinds that read tiles.
    """

    device: torch.device
    generator: torch.Generator
    weights: dict
    slide_loss: Callable[[torch.Tensor, int], torch.Tensor]
    images: Callable[[torch.Tensor], torch.Tensor]
    tiles_per_step: int = 16


class SlideInputs(Protocol):
    """What :meth:`SlideModel.infer` reads from one slide (tensors only; the data side,
    :func:`workbench.tl.extract`, implements it over the slide file).

    Attributes
    ----------
    features
        ``(N, F)`` float region features.
    edge_index
        ``(2, E)`` long region adjacency.
    tile_region
        ``(T,)`` long: the region each tissue tile's centre falls in (-1: none).
    region_tile
        ``(N,)`` long: the tile nearest each region's centre (for regions no tile centre
        falls in).
    """

    features: torch.Tensor
    edge_index: torch.Tensor
    tile_region: torch.Tensor
    region_tile: torch.Tensor

    def crops(self, nodes: Sequence[int]) -> torch.Tensor:
        """Crops of these regions at the detail magnification (read on demand, never whole).

        Parameters
        ----------
        nodes
            Region indices (rows of ``features``).

        Returns
        -------
        torch.Tensor
            ``(K, 3, S, S)`` float crops in ``[0, 1]``, one per node, in order.
        """

    def tile_batches(self) -> Iterator[torch.Tensor]:
        """The tissue tiles, batch by batch, in the order of ``tile_region``.

        Yields
        ------
        torch.Tensor
            ``(B, 3, S, S)`` float tiles in ``[0, 1]``.
        """


class SlideModel(nn.Module):
    """Base of every slide model kind: configuration, training and inference hooks.

    Subclasses set the class attributes, keep their constructor arguments in ``self.config``
    (plain JSON: what a checkpoint stores and :meth:`from_config` rebuilds from), and
    implement :meth:`training_step`, :meth:`predict_logits` and :meth:`infer`.

    Attributes
    ----------
    kind
        The registered kind name (set by the registry).
    reads
        What the data side caches for training besides the region graph: ``"crops"``
        (magnified crops of candidate regions) and/or ``"tiles"`` (every tissue tile).
    takes_encoder
        Whether a tile encoder (``SlideTrainer(encoder=...)``) applies.
    has_detail
        Whether the kind has a detail branch (lesion probability and maps of its focus
        regions); without one, ``tl.extract`` stores NaN there.
    region_score
        What :meth:`infer`'s ``region_scores`` are (stored in ``uns["explain"]``).
    config
        The constructor arguments.
    """

    kind: ClassVar[str] = ""
    reads: ClassVar[frozenset[str]] = frozenset()
    takes_encoder: ClassVar[bool] = False
    has_detail: ClassVar[bool] = False
    region_score: ClassVar[str] = ""

    config: dict

    # ------------------------------------------------------------------ configuration
    @property
    def preprocessing(self) -> dict:
        """The data-side settings stored with the model (thumbnail mpp, crop size …)."""
        return self.config["preprocessing"]

    @property
    def tile_encoder(self):
        """The attached frozen tile encoder (``None``: the kind's own network, or none)."""
        return None

    def attach_encoder(self, encoder) -> None:
        """Attach the frozen tile encoder the model was built for (kinds that take one).

        Parameters
        ----------
        encoder
            The frozen tile encoder.
        """
        raise EncoderError(f"a {type(self).__name__} takes no tile encoder")

    def to_config(self) -> dict:
        """A deep copy of the constructor arguments (plain JSON), as a checkpoint stores them.

        Returns
        -------
        dict
            Keyword arguments that :meth:`from_config` builds the same architecture from.
        """
        return copy.deepcopy(self.config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SlideModel:
        """Build an (untrained) model from :meth:`to_config`'s dict.

        Parameters
        ----------
        config
            The constructor arguments.

        Returns
        -------
        SlideModel
            A new model of this kind.
        """
        return cls(**dict(config))

    @classmethod
    def for_training(cls, *, in_features: int, encoder: dict | None = None, **kwargs) -> SlideModel:
        """The model ``SlideTrainer`` builds for a cohort.

        Parameters
        ----------
        in_features
            Region feature size.
        encoder
            A frozen tile encoder's ``spec()`` (only for kinds with ``takes_encoder``).
        **kwargs
            ``n_classes``, ``class_names``, ``label``, ``preprocessing`` and the user's
            ``model_kwargs``.

        Returns
        -------
        SlideModel
            A new model of this kind.
        """
        return cls(in_features=in_features, **kwargs)

    @property
    def predicts_risk(self) -> bool:
        """Whether the model is a survival model: built with ``n_classes=1``, its single
        output is a Cox risk score (log relative hazard; higher = shorter survival) instead
        of class logits."""
        return int(self.config.get("n_classes", 2)) == 1

    # ------------------------------------------------------------------ training hooks
    def fit_scaling(
        self, samples: Sequence[SlideSample], *, device: torch.device, seed: int
    ) -> None:
        """Set input standardisation from the training slides before the first step
        (default: nothing).

        Parameters
        ----------
        samples
            The training slides.
        device
            Where to run an encoder, if one is needed.
        seed
            Seeds any subsampling.
        """

    def training_step(
        self, sample: SlideSample, ctx: StepContext
    ) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """One slide's loss.

        Parameters
        ----------
        sample
            The cached slide.
        ctx
            The trainer's step context.

        Returns
        -------
        tuple
            ``(total loss, {term name: loss}, slide logits (n_classes,))``.
        """
        raise NotImplementedError

    def ready_for_early_stopping(self, weights: Mapping[str, float]) -> bool:
        """Whether validation losses of an epoch with these curriculum weights compare like
        with like (default: always).

        Parameters
        ----------
        weights
            The epoch's curriculum weights.

        Returns
        -------
        bool
        """
        return True

    def predict_logits(
        self, sample: SlideSample, *, device: torch.device, crop_source: Callable | None = None
    ) -> torch.Tensor:
        """Slide logits of a cached slide, as at inference (called without gradients).

        Parameters
        ----------
        sample
            The cached slide.
        device
            Where the model is.
        crop_source
            ``crop_source(nodes)`` -> crops (uint8) or frozen-encoder embeddings of any
            region (kinds that choose regions freely); ``None``: the sample's cached ones.

        Returns
        -------
        torch.Tensor
            ``(n_classes,)`` logits.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ inference
    def infer(self, inputs: SlideInputs, *, top_k: int | None = None) -> dict:
        """Explain one slide.

        Parameters
        ----------
        inputs
            The slide's tensors (:class:`SlideInputs`).
        top_k
            Focus regions to pick (default: the model's ``top_k``, else
            :data:`DEFAULT_TOP_K`).

        Returns
        -------
        dict
            Tensors: ``logits`` (n_classes,), ``region_scores`` (N,) in ``[0, 1]`` (the heat
            map), ``region_features`` (N, D), ``focus_index`` (K,); when the kind has them,
            ``global_logits`` (n_classes,; the thumbnail branch alone), ``slide_embedding``
            (D,; the thumbnail branch's pooled embedding), ``region_lesion_prob``
            (N,), and with a detail branch ``lesion_prob`` (K,) and ``lesion_maps`` (K, S, S)
            probabilities of the focus regions.
        """
        raise NotImplementedError

    def _top_k(self, top_k: int | None, n: int) -> int:
        k = top_k if top_k is not None else self.config.get("top_k", DEFAULT_TOP_K)
        return max(1, min(int(k), int(n)))


# ------------------------------------------------------------------------------- helpers
def to_float_image(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images to float in ``[0, 1]`` on ``device`` (float images unchanged)."""
    x = x.to(device)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def first_rows(crop_nodes: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Row of the first crop of every chosen node."""
    return torch.stack([torch.nonzero(crop_nodes == n)[0, 0] for n in chosen])


def pool_by_region(
    values: torch.Tensor, tile_region: torch.Tensor, region_tile: torch.Tensor
) -> torch.Tensor:
    """Per-region mean of per-tile values: the tiles whose centre falls in a region, or the
    tile nearest the region's centre when none does.

    Parameters
    ----------
    values
        ``(T, ...)`` per-tile values (attention, embeddings).
    tile_region
        ``(T,)`` region index of every tile (-1: none).
    region_tile
        ``(N,)`` the tile nearest every region.

    Returns
    -------
    torch.Tensor
        ``(N, ...)`` per-region values.
    """
    n = int(region_tile.shape[0])
    region = tile_region.to(values.device).long()
    inside = region >= 0
    sums = values.new_zeros((n, *values.shape[1:]))
    sums.index_add_(0, region[inside], values[inside])
    counts = torch.bincount(region[inside], minlength=n).to(values.dtype)
    shape = (n,) + (1,) * (values.dim() - 1)
    out = sums / counts.clamp(min=1).reshape(shape)
    empty = counts == 0
    if bool(empty.any()):
        out[empty] = values[region_tile.to(values.device).long()[empty]]
    return out


@torch.no_grad()
def embedding_scaling(
    samples: Sequence[SlideSample],
    *,
    cached: str,
    images: str,
    encoder,
    device: torch.device,
    seed: int,
    most: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Mean and standard deviation of a frozen encoder's embeddings on the training crops or
    tiles: the cached embeddings, else the encoder run once on up to ``most`` images.

    Returns
    -------
    tuple or None
        ``(mean, std)`` per dimension, or ``None`` when there is nothing to measure.
    """
    rows = [getattr(s, cached) for s in samples if getattr(s, cached) is not None]
    if not rows:
        pool = [getattr(s, images) for s in samples if getattr(s, images) is not None]
        if encoder is None or not pool:
            return None
        gen = torch.Generator().manual_seed(seed)
        per = max(1, most // len(pool))
        for x in pool:
            pick = torch.randperm(len(x), generator=gen)[:per]
            if len(pick):
                rows.append(encoder(to_float_image(x[pick], device))["embedding"].cpu())
    if not rows:
        return None
    raw = torch.cat([r.float() for r in rows])
    if len(raw) < 2:
        return None
    return raw.mean(0), raw.std(0).nan_to_num(1.0)


def feature_scaling(samples: Sequence[SlideSample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the region features of the training slides."""
    feats = torch.cat([s.features.float() for s in samples])
    return feats.mean(0), feats.std(0).nan_to_num(1.0)
