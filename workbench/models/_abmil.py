"""Baseline: attention MIL over every tissue tile at the detail magnification."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from workbench.models._attention import GatedAttentionPool
from workbench.models._detail import DetailBranch
from workbench.models._encoder import TileEncoder, check_encoder, set_scaling
from workbench.models._graph import graph_nms
from workbench.models._protocol import (
    SlideInputs,
    SlideModel,
    StepContext,
    embedding_scaling,
    pool_by_region,
    to_float_image,
)

if TYPE_CHECKING:  # pragma: no cover
    from workbench.models._trainer import SlideSample

__all__ = ["TileABMIL"]


class TileABMIL(SlideModel):
    """Exhaustive-tiling gated attention MIL with the detail branch as tile encoder.

    Every tissue tile of the slide, read at the same magnification as the self-calibrated
    model's crops, goes through the same :class:`DetailBranch` encoder (``encode`` then
    ``embed``); gated attention pools the tile embeddings into slide logits. Because the
    tile encoder is the same network, a speed comparison with :class:`SelfCalibratedModel`
    measures the focusing, not a lighter or heavier backbone. With ``encoder`` (the spec of a
    frozen :class:`~workbench.models.TileEncoder`) the tiles go through that encoder instead
    (attached with :meth:`attach_encoder`, its embeddings cached by the trainer) and a small
    trainable projection.

    Parameters
    ----------
    n_classes
        Slide classes; ``1`` builds a survival model whose single output is a Cox risk
        (log relative hazard; higher = shorter survival), the STAMP-style tile ABMIL-Cox
        peer :class:`~workbench.tl.SlideTrainer` trains with ``target="survival"``.
    detail_width, embed_dim
        Passed to :class:`DetailBranch`.
    attn_dim
        Hidden size of the attention pooling.
    dropout
        Dropout on the pooled embedding.
    encoder
        ``None`` (the built-in :class:`DetailBranch`) or a frozen encoder's ``spec()``.
    preprocessing, class_names, label
        As in :class:`SelfCalibratedModel`.

    Notes
    -----
    Explained by :func:`workbench.tl.extract` like every kind: its tile attention becomes
    region scores (the mean attention of the tiles whose centre falls in a region, the nearest
    tile's for a region no tile centre falls in, scaled to ``[0, 1]`` over the slide), its
    focus regions are the top-K of those after graph NMS on the region graph, and its region
    features the mean tile embeddings. It has no detail branch, so the lesion probabilities
    and maps are NaN.
    """

    kind = "abmil"
    reads = frozenset({"tiles"})
    takes_encoder = True
    region_score = "tile attention (mean over the region's tiles)"

    def __init__(
        self,
        *,
        n_classes: int = 2,
        detail_width: int = 16,
        embed_dim: int = 64,
        attn_dim: int = 64,
        dropout: float = 0.1,
        encoder: dict | None = None,
        preprocessing: dict | None = None,
        class_names: list[str] | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__()
        assert n_classes >= 1, "n_classes must be at least 1 (1: a survival risk model)"
        self.config = {
            "n_classes": n_classes,
            "detail_width": detail_width,
            "embed_dim": embed_dim,
            "attn_dim": attn_dim,
            "dropout": dropout,
            "encoder": copy.deepcopy(encoder) if encoder else None,
            "preprocessing": copy.deepcopy(preprocessing or {}),
            "class_names": list(class_names) if class_names else None,
            "label": label,
        }
        if encoder:
            e = int(encoder["embed_dim"])
            self.encoder = None
            self.project = nn.Sequential(nn.LayerNorm(e), nn.Linear(e, embed_dim), nn.GELU())
            # Standardisation of the raw embeddings, set by the trainer (see EncoderDetail).
            self.register_buffer("raw_mean", torch.zeros(e))
            self.register_buffer("raw_std", torch.ones(e))
        else:
            self.encoder = DetailBranch(in_channels=3, width=detail_width, embed_dim=embed_dim)
        object.__setattr__(self, "_tile_encoder", None)
        self.pool = GatedAttentionPool(in_dim=embed_dim, attn_dim=attn_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed_dim, n_classes)

    @property
    def tile_encoder(self) -> TileEncoder | None:
        """The attached frozen tile encoder (``None`` with the built-in network)."""
        return self._tile_encoder

    def attach_encoder(self, encoder: TileEncoder) -> None:
        """Attach the frozen tile encoder this model was built for.

        Parameters
        ----------
        encoder
            The encoder whose ``spec()`` matches the one recorded in the configuration.
        """
        check_encoder(self.config.get("encoder"), encoder)
        object.__setattr__(self, "_tile_encoder", encoder)

    def set_embedding_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the per-dimension mean and standard deviation of the frozen encoder's output.

        Parameters
        ----------
        mean, std
            ``(E,)`` per-dimension mean and standard deviation.
        """
        if self.encoder is not None:
            raise ValueError("the built-in tile network learns its own scale; nothing to set")
        set_scaling(self.raw_mean, self.raw_std, mean, std)

    def embed_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Tile embeddings ``(T, embed_dim)`` from (cached) frozen-encoder embeddings.

        Parameters
        ----------
        raw
            ``(T, E)`` frozen-encoder embeddings.

        Returns
        -------
        torch.Tensor
            ``(T, embed_dim)`` standardised and projected embeddings.
        """
        return self.project((raw.float() - self.raw_mean) / self.raw_std)

    def embed_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """Tile embeddings ``(T, embed_dim)`` of float tiles ``(T, 3, S, S)`` in [0, 1].

        Parameters
        ----------
        tiles
            ``(T, 3, S, S)`` float tiles in ``[0, 1]``.

        Returns
        -------
        torch.Tensor
            ``(T, embed_dim)`` embeddings.
        """
        if self.encoder is not None:
            return self.encoder.embed(self.encoder.encode(tiles))
        if self._tile_encoder is None:
            from workbench._errors import EncoderError

            raise EncoderError("no tile encoder attached; load the checkpoint with encoder=…")
        return self.embed_raw(self._tile_encoder(tiles)["embedding"].to(tiles.device))

    def pool_embeddings(self, embeddings: torch.Tensor) -> dict:
        """Slide ``logits`` (n_classes,) and tile ``attention`` (T,) from tile embeddings.

        Parameters
        ----------
        embeddings
            ``(T, embed_dim)`` tile embeddings.

        Returns
        -------
        dict
            ``logits`` (n_classes,) and ``attention`` (T,).
        """
        pooled = self.pool(embeddings)
        return {
            "logits": self.classifier(self.dropout(pooled["pooled"])),
            "attention": pooled["attention"],
        }

    def forward(self, tiles: torch.Tensor) -> dict:
        """Classify one slide from all its tiles ``(T, 3, S, S)``.

        Parameters
        ----------
        tiles
            ``(T, 3, S, S)`` float tiles in ``[0, 1]``.

        Returns
        -------
        dict
            ``logits`` (n_classes,), ``attention`` (T,), ``embeddings`` (T, embed_dim).
        """
        emb = self.embed_tiles(tiles)
        out = self.pool_embeddings(emb)
        out["embeddings"] = emb
        return out

    # ------------------------------------------------------------------ SlideModel hooks
    @classmethod
    def for_training(cls, *, in_features: int, encoder: dict | None = None, **kwargs) -> TileABMIL:
        """The model ``SlideTrainer`` builds (reads tiles, so ``in_features`` is not used).

        Parameters
        ----------
        in_features
            Region feature size (not used).
        encoder
            A frozen tile encoder's ``spec()``, or ``None`` for the built-in network.
        **kwargs
            The other constructor arguments.

        Returns
        -------
        TileABMIL
            A new, untrained model.
        """
        return cls(encoder=encoder, **kwargs)

    def fit_scaling(
        self, samples: Sequence[SlideSample], *, device: torch.device, seed: int
    ) -> None:
        """With a frozen encoder, standardise its tile embeddings (the built-in tile network
        learns its own scale); see :meth:`SlideModel.fit_scaling`.

        Parameters
        ----------
        samples
            The training slides.
        device
            Where to run the frozen encoder over images that have no cached embeddings.
        seed
            Seeds the subsampling of the slides.
        """
        if self.encoder is not None:
            return
        stats = embedding_scaling(
            samples,
            cached="tile_embeddings",
            images="tiles",
            encoder=self.tile_encoder,
            device=device,
            seed=seed,
        )
        if stats is not None:
            self.set_embedding_scaling(*stats)

    def training_step(
        self, sample: SlideSample, ctx: StepContext
    ) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """Slide loss on ``ctx.tiles_per_step`` tiles sampled from the slide (see
        :meth:`SlideModel.training_step`): the cross-entropy, or for a survival model
        (``n_classes=1``) the trainer's Cox loss of the pooled risk against the risk set.

        Parameters
        ----------
        sample
            The cached slide.
        ctx
            The trainer's step context.

        Returns
        -------
        tuple
            ``(total loss, {term name: loss}, slide logits (n_classes,))``; for a survival
            model the logits are the ``(1,)`` risk.
        """
        s = sample
        source = s.tile_embeddings if s.tile_embeddings is not None else s.tiles
        if source is None or not len(source):
            raise ValueError(f"slide {s.name!r} has no tiles; TileABMIL needs SlideSample.tiles")
        idx = torch.randperm(len(source), generator=ctx.generator)[: ctx.tiles_per_step]
        if s.tile_embeddings is not None:
            emb = self.embed_raw(s.tile_embeddings[idx].to(ctx.device))
        else:
            emb = self.embed_tiles(ctx.images(s.tiles[idx]))
        out = self.pool_embeddings(emb)
        parts = {"slide": ctx.slide_loss(out["logits"], s.label)}
        return parts["slide"], parts, out["logits"]

    def predict_logits(
        self, sample: SlideSample, *, device: torch.device, crop_source: Callable | None = None
    ) -> torch.Tensor:
        """Slide logits pooled over every cached tile (``crop_source`` is not used).

        Parameters
        ----------
        sample
            The cached slide (its tiles or tile embeddings).
        device
            Where the model is.
        crop_source
            Not used (every cached tile is read).

        Returns
        -------
        torch.Tensor
            ``(n_classes,)`` logits.
        """
        if sample.tile_embeddings is not None:
            emb = self.embed_raw(sample.tile_embeddings.to(device))
        else:
            emb = self.embed_tiles(to_float_image(sample.tiles, device))
        return self.pool_embeddings(emb)["logits"]

    @torch.no_grad()
    def infer(self, inputs: SlideInputs, *, top_k: int | None = None) -> dict:
        """Every tissue tile embedded (in batches), attention-pooled into slide logits; the
        tile attention mapped onto the regions (see :meth:`SlideModel.infer`).

        Parameters
        ----------
        inputs
            The slide's tensors (:class:`SlideInputs`).
        top_k
            Focus regions to pick (default: the model's ``top_k``).

        Returns
        -------
        dict
            ``logits`` (for a survival model the ``(1,)`` risk), ``region_scores`` (region
            attention scaled to ``[0, 1]`` over the slide: the least attended region 0, the
            most attended 1),
            ``region_features`` (mean tile embeddings), ``focus_index`` (top-K regions after
            graph NMS) and ``tile_attention`` (T,).
        """
        emb = torch.cat([self.embed_tiles(batch) for batch in inputs.tile_batches()])
        out = self.pool_embeddings(emb)
        attention = out["attention"].float()
        scores = pool_by_region(attention, inputs.tile_region, inputs.region_tile)
        low = scores.min()
        scores = (scores - low) / (scores.max() - low).clamp(min=1e-12)
        n = int(inputs.region_tile.shape[0])
        idx = graph_nms(scores, inputs.edge_index, k=self._top_k(top_k, n), hops=1)
        return {
            "logits": out["logits"],
            "region_scores": scores,
            "region_features": pool_by_region(emb.float(), inputs.tile_region, inputs.region_tile),
            "focus_index": idx,
            "tile_attention": attention,
        }
