"""Global branch: graph convolutions over the thumbnail region graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench.models._attention import GatedAttentionPool
from workbench.models._graph import normalized_adjacency

__all__ = ["GlobalBranch"]


class _GraphConv(nn.Module):
    """One residual graph convolution: ``h + drop(act(norm(W (Â h))))``."""

    def __init__(self, *, dim: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        mixed = torch.sparse.mm(adj, h)
        return h + self.dropout(F.gelu(self.norm(self.linear(mixed))))


# Constructor options of GlobalBranch, which the assembled models store in their config
# and pass through unchanged.
GLOBAL_BRANCH_OPTIONS = (
    "in_features",
    "n_classes",
    "hidden",
    "gcn_layers",
    "transformer_layers",
    "heads",
    "dropout",
)


class GlobalBranch(nn.Module):
    """Slide-level classifier over a region graph (one slide per call).

    Node features are standardised (with statistics set by :meth:`set_feature_scaling`,
    identity until then), embedded, mixed by ``gcn_layers`` graph convolutions with the
    symmetric normalised adjacency, optionally by a small transformer encoder, then pooled
    by gated attention into slide logits. A per-node head gives region logits for node-level
    supervision where region labels exist.

    Parameters
    ----------
    in_features
        Size of each region's feature vector.
    n_classes
        Number of slide classes; 1 makes the single output a risk score (survival).
    hidden
        Token size.
    gcn_layers
        Number of graph convolutions.
    transformer_layers
        Transformer encoder layers after the graph convolutions (0 = none).
    heads
        Attention heads of the transformer.
    dropout
        Dropout inside the convolutions.
    node_classes
        Classes of the per-node head (2: lesion or not).
    """

    def __init__(
        self,
        *,
        in_features: int,
        n_classes: int = 2,
        hidden: int = 64,
        gcn_layers: int = 3,
        transformer_layers: int = 0,
        heads: int = 4,
        dropout: float = 0.1,
        node_classes: int = 2,
    ) -> None:
        super().__init__()
        assert in_features > 0, "in_features must be positive"
        assert n_classes >= 1, "n_classes must be at least 1 (1: a survival risk)"
        assert gcn_layers >= 1, "gcn_layers must be at least 1"
        assert transformer_layers >= 0, "transformer_layers must be >= 0"
        assert hidden % heads == 0, "hidden must be divisible by heads"
        self.in_features = in_features
        self.hidden = hidden
        self.n_classes = n_classes
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))
        self.embed = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.convs = nn.ModuleList(
            _GraphConv(dim=hidden, dropout=dropout) for _ in range(gcn_layers)
        )
        self.transformer = None
        if transformer_layers:
            layer = nn.TransformerEncoderLayer(
                d_model=hidden,
                nhead=heads,
                dim_feedforward=2 * hidden,
                dropout=dropout,
                batch_first=True,
                norm_first=True,
            )
            self.transformer = nn.TransformerEncoder(
                layer, num_layers=transformer_layers, enable_nested_tensor=False
            )
        self.pool = GatedAttentionPool(in_dim=hidden, attn_dim=hidden)
        self.classifier = nn.Linear(hidden, n_classes)
        self.node_head = nn.Linear(hidden, node_classes)

    @torch.no_grad()
    def set_feature_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the per-feature mean and standard deviation used to standardise inputs.

        Parameters
        ----------
        mean
            ``(in_features,)`` means of the training regions' features.
        std
            ``(in_features,)`` standard deviations (floored at 1e-6).
        """
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-6))

    def tokens(self, features: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Node tokens of one slide's region graph.

        Parameters
        ----------
        features
            ``(N, in_features)`` raw region features (standardised here).
        edge_index
            ``(2, E)`` edges of the region graph.

        Returns
        -------
        torch.Tensor
            ``(N, hidden)`` tokens after the graph convolutions (and the transformer layer,
            when the branch has one).
        """
        assert features.ndim == 2 and features.shape[1] == self.in_features, (
            f"features must be (N, {self.in_features}), got {tuple(features.shape)}"
        )
        n = features.shape[0]
        adj = normalized_adjacency(edge_index.to(features.device), n)
        h = self.embed((features - self.feature_mean) / self.feature_std)
        for conv in self.convs:
            h = conv(h, adj)
        if self.transformer is not None:
            h = self.transformer(h.unsqueeze(0)).squeeze(0)
        return h

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor) -> dict:
        """Classify one slide.

        Parameters
        ----------
        features
            ``(N, in_features)`` region features.
        edge_index
            ``(2, E)`` long tensor of linked region pairs.

        Returns
        -------
        dict
            ``tokens`` (N, hidden), ``logits`` (n_classes,), ``node_logits``
            (N, node_classes), ``attention`` (N,) pooling weights, ``slide_embedding``
            (hidden,).
        """
        h = self.tokens(features, edge_index)
        pooled = self.pool(h)
        return {
            "tokens": h,
            "logits": self.classifier(pooled["pooled"]),
            "node_logits": self.node_head(h),
            "attention": pooled["attention"],
            "slide_embedding": pooled["pooled"],
        }
