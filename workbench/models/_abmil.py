"""Baseline: attention MIL over every tissue tile at the detail magnification."""

from __future__ import annotations

import copy

import torch
from torch import nn

from workbench.models._attention import GatedAttentionPool
from workbench.models._detail import DetailBranch

__all__ = ["TileABMIL"]


class TileABMIL(nn.Module):
    """Exhaustive-tiling gated attention MIL with the detail branch as tile encoder.

    Every tissue tile of the slide, read at the same magnification as the self-calibrated
    model's crops, goes through the same :class:`DetailBranch` encoder (``encode`` then
    ``embed``); gated attention pools the tile embeddings into slide logits. Because the
    tile encoder is the same network, a speed comparison with :class:`SelfCalibratedModel`
    measures the focusing, not a lighter or heavier backbone.

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
    preprocessing, class_names
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
        preprocessing: dict | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        assert n_classes >= 2, "n_classes must be at least 2"
        self.config = {
            "n_classes": n_classes,
            "detail_width": detail_width,
            "embed_dim": embed_dim,
            "attn_dim": attn_dim,
            "dropout": dropout,
            "preprocessing": copy.deepcopy(preprocessing or {}),
            "class_names": list(class_names) if class_names else None,
        }
        self.encoder = DetailBranch(in_channels=3, width=detail_width, embed_dim=embed_dim)
        self.pool = GatedAttentionPool(in_dim=embed_dim, attn_dim=attn_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed_dim, n_classes)

    @property
    def preprocessing(self) -> dict:
        return self.config["preprocessing"]

    def embed_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """Tile embeddings ``(T, embed_dim)`` of float tiles ``(T, 3, S, S)`` in [0, 1]."""
        return self.encoder.embed(self.encoder.encode(tiles))

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
