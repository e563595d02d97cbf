"""Focus predictor: which regions deserve a magnified look."""

from __future__ import annotations

import torch
from torch import nn

from workbench.models._graph import graph_nms

__all__ = ["FOCUS_TARGETS", "FocusPredictor", "attribution_target", "focus_target"]

#: What the focus predictor learns to match (see :func:`focus_target`).
FOCUS_TARGETS = ("lesion", "class", "detail")


def attribution_target(
    class_score: torch.Tensor, tokens: torch.Tensor, *, eps: float = 1e-8
) -> torch.Tensor:
    """Normalised gradient-weighted attribution of a slide score to each node.

    For every node, the token is multiplied element-wise by the gradient of ``class_score``
    with respect to it and summed (a Grad-CAM style relevance); negative relevance is
    clipped, and the result is divided by its maximum so it lies in ``[0, 1]``. The result
    is detached: it is a training target, not part of the graph.

    Parameters
    ----------
    class_score
        Scalar that depends on ``tokens`` (e.g. the log-probability of the slide's class).
    tokens
        ``(N, D)`` node tokens that require grad.
    eps
        Added to the maximum before dividing, so an all-zero relevance stays zero.

    Returns
    -------
    torch.Tensor
        ``(N,)`` attribution in ``[0, 1]``.
    """
    (grad,) = torch.autograd.grad(class_score, tokens, retain_graph=True)
    relevance = torch.relu((grad * tokens).sum(dim=-1)).detach()
    return relevance / (relevance.max() + eps)


def focus_target(
    logits: torch.Tensor, tokens: torch.Tensor, label: int, *, kind: str = "lesion"
) -> torch.Tensor | None:
    """The attribution the focus predictor is trained to match on one slide, ``(N,)`` in [0, 1].

    Parameters
    ----------
    logits
        ``(C,)`` slide logits computed from ``tokens``.
    tokens
        ``(N, D)`` node tokens that require grad.
    label
        The slide's class index.
    kind
        ``"lesion"`` (default): class 0 is the reference class (no lesion: "benign",
        "negative", the lowest grade); on a slide of another class the target is the
        attribution (:func:`attribution_target`) of that class's logit margin over class 0,
        and on a class-0 slide it is zero everywhere (no region of it holds what makes a
        slide positive). ``"class"`` (the original rule): the attribution of the
        log-probability of the slide's own class on every slide, so on negative slides the
        focus learns the evidence *for* "negative" (normal tissue), which the same predictor
        then also scores high on positive slides; it also vanishes where the softmax
        saturates. ``"detail"``: no attribution at all (returns ``None``): the trainer
        teaches the focus the detail branch's lesion answer on the magnified crops it saw
        (and the region labels, where they exist).

    Returns
    -------
    torch.Tensor or None
        ``(N,)`` detached target (``None`` for ``"detail"``).
    """
    if kind not in FOCUS_TARGETS:
        raise ValueError(f"focus target must be one of {FOCUS_TARGETS}, got {kind!r}")
    label = int(label)
    if kind == "detail":
        return None
    if kind == "class":
        return attribution_target(torch.log_softmax(logits, dim=-1)[label], tokens)
    if label == 0:
        return tokens.new_zeros(tokens.shape[0]).detach()
    return attribution_target(logits[label] - logits[0], tokens)


class FocusPredictor(nn.Module):
    """Small MLP scoring every node on its (detached) global token.

    Parameters
    ----------
    token_dim
        Size of the node tokens.
    hidden
        Hidden width.
    top_k
        Default number of focus regions returned by :meth:`select`.
    hops
        Default suppression radius (graph steps) of :meth:`select`.
    """

    def __init__(self, *, token_dim: int, hidden: int = 64, top_k: int = 4, hops: int = 1) -> None:
        super().__init__()
        assert token_dim > 0 and hidden > 0, "token_dim and hidden must be positive"
        assert top_k >= 1, "top_k must be at least 1"
        self.top_k = top_k
        self.hops = hops
        self.mlp = nn.Sequential(
            nn.LayerNorm(token_dim), nn.Linear(token_dim, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )

    def forward(self, tokens: torch.Tensor) -> dict:
        """Score nodes.

        The tokens are detached, so the focus losses train this MLP only and never reshape
        the global branch.

        Parameters
        ----------
        tokens
            ``(N, D)`` node tokens of the global branch.

        Returns
        -------
        dict
            ``logits`` (N,) and ``scores`` (N,) = sigmoid of the logits.
        """
        logits = self.mlp(tokens.detach()).squeeze(-1)
        return {"logits": logits, "scores": torch.sigmoid(logits)}

    def select(
        self,
        scores: torch.Tensor,
        edge_index: torch.Tensor,
        *,
        k: int | None = None,
        hops: int | None = None,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Top-``k`` focus nodes after graph non-maximum suppression (see :func:`graph_nms`).

        Parameters
        ----------
        scores
            ``(N,)`` focus scores.
        edge_index
            ``(2, E)`` edges of the region graph.
        k
            Number of nodes; the predictor's ``top_k`` when ``None``.
        hops
            Suppression radius in graph steps; the predictor's ``hops`` when ``None``.
        candidates
            Node indices to choose from; all nodes when ``None``.

        Returns
        -------
        torch.Tensor
            Indices of the chosen nodes, best first.
        """
        return graph_nms(
            scores,
            edge_index,
            k=self.top_k if k is None else k,
            hops=self.hops if hops is None else hops,
            candidates=candidates,
        )
