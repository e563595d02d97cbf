"""Baseline: attention MIL over every tissue tile at the detail magnification."""

from __future__ import annotations

import copy

import torch
from torch import nn

from workbench.models._attention import GatedAttentionPool
from workbench.models._detail import DetailBranch
from workbench.models._encoder import TileEncoder, check_encoder, set_scaling

__all__ = ["TileABMIL"]


class TileABMIL(nn.Module):
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
        Slide classes.
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
    """

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
        assert n_classes >= 2, "n_classes must be at least 2"
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
    def preprocessing(self) -> dict:
        return self.config["preprocessing"]

    @property
    def tile_encoder(self) -> TileEncoder | None:
        """The attached frozen tile encoder (``None`` with the built-in network)."""
        return self._tile_encoder

    def attach_encoder(self, encoder: TileEncoder) -> None:
        """Attach the frozen tile encoder this model was built for."""
        check_encoder(self.config.get("encoder"), encoder)
        object.__setattr__(self, "_tile_encoder", encoder)

    def set_embedding_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the per-dimension mean and standard deviation of the frozen encoder's output."""
        if self.encoder is not None:
            raise ValueError("the built-in tile network learns its own scale; nothing to set")
        set_scaling(self.raw_mean, self.raw_std, mean, std)

    def embed_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Tile embeddings ``(T, embed_dim)`` from (cached) frozen-encoder embeddings."""
        return self.project((raw.float() - self.raw_mean) / self.raw_std)

    def embed_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """Tile embeddings ``(T, embed_dim)`` of float tiles ``(T, 3, S, S)`` in [0, 1]."""
        if self.encoder is not None:
            return self.encoder.embed(self.encoder.encode(tiles))
        if self._tile_encoder is None:
            from workbench._errors import EncoderError

            raise EncoderError("no tile encoder attached; load the checkpoint with encoder=…")
        return self.embed_raw(self._tile_encoder(tiles)["embedding"].to(tiles.device))

    def pool_embeddings(self, embeddings: torch.Tensor) -> dict:
        """Slide ``logits`` (n_classes,) and tile ``attention`` (T,) from tile embeddings."""
        pooled = self.pool(embeddings)
        return {
            "logits": self.classifier(self.dropout(pooled["pooled"])),
            "attention": pooled["attention"],
        }

    def forward(self, tiles: torch.Tensor) -> dict:
        """Classify one slide from all its tiles ``(T, 3, S, S)``.

        Returns
        -------
        dict
            ``logits`` (n_classes,), ``attention`` (T,), ``embeddings`` (T, embed_dim).
        """
        emb = self.embed_tiles(tiles)
        out = self.pool_embeddings(emb)
        out["embeddings"] = emb
        return out
