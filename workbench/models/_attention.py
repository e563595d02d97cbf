"""Gated attention pooling: a bag of vectors in, one weighted summary out."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GatedAttentionPool"]


class GatedAttentionPool(nn.Module):
    """Gated attention pooling of a bag of instance vectors (attention-MIL style).

    Each instance gets a score ``w^T (tanh(V h) * sigmoid(U h))``; the scores are softmaxed
    over the bag and the instances are averaged with those weights.

    Parameters
    ----------
    in_dim
        Size of each instance vector.
    attn_dim
        Hidden size of the scoring network.
    """

    def __init__(self, *, in_dim: int, attn_dim: int = 64) -> None:
        super().__init__()
        assert in_dim > 0 and attn_dim > 0, "in_dim and attn_dim must be positive"
        self.value = nn.Linear(in_dim, attn_dim)
        self.gate = nn.Linear(in_dim, attn_dim)
        self.score = nn.Linear(attn_dim, 1)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """Unnormalised attention score per instance.

        Parameters
        ----------
        h
            ``(N, in_dim)`` instance features.

        Returns
        -------
        torch.Tensor
            ``(N,)`` scores (a softmax of them gives the attention weights).
        """
        return self.score(torch.tanh(self.value(h)) * torch.sigmoid(self.gate(h))).squeeze(-1)

    def forward(self, h: torch.Tensor) -> dict:
        """Pool a bag of instances.

        Parameters
        ----------
        h
            ``(N, in_dim)`` instance features, ``N >= 1``.

        Returns
        -------
        dict
            ``pooled`` (in_dim,), ``attention`` (N,) weights summing to one, ``scores`` (N,).
        """
        assert h.ndim == 2 and h.shape[0] > 0, (
            f"h must be a non-empty (N, D) bag, got {tuple(h.shape)}"
        )
        s = self.scores(h)
        a = torch.softmax(s, dim=0)
        return {"pooled": (a.unsqueeze(-1) * h).sum(0), "attention": a, "scores": s}
