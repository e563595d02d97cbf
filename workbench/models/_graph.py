"""Graph helpers shared by the models: normalised sparse adjacency and graph NMS.

Graphs travel as ``edge_index`` tensors of shape ``(2, E)`` (one column per directed edge;
an undirected link appears once or twice, both are accepted). Nothing here needs SciPy.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["graph_nms", "hop_neighbourhoods", "normalized_adjacency"]


def _check_edges(edge_index: torch.Tensor, n_nodes: int) -> torch.Tensor:
    edge_index = torch.as_tensor(edge_index, dtype=torch.long)
    if edge_index.numel() == 0:
        return edge_index.reshape(2, 0)
    assert edge_index.ndim == 2 and edge_index.shape[0] == 2, (
        f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}"
    )
    assert int(edge_index.min()) >= 0 and int(edge_index.max()) < n_nodes, (
        f"edge_index refers to nodes outside 0..{n_nodes - 1}"
    )
    return edge_index


def normalized_adjacency(edge_index: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Symmetrically normalised adjacency with self loops, as a sparse COO tensor.

    Computes ``D^-1/2 (A + I) D^-1/2`` where ``A`` is the symmetrised 0/1 adjacency, the
    propagation matrix of a graph convolution.

    Parameters
    ----------
    edge_index
        ``(2, E)`` long tensor of node pairs.
    n_nodes
        Number of nodes.

    Returns
    -------
    torch.Tensor
        Coalesced sparse ``(n_nodes, n_nodes)`` float tensor on the device of ``edge_index``.
    """
    edge_index = _check_edges(edge_index, n_nodes)
    device = edge_index.device
    loops = torch.arange(n_nodes, device=device)
    rows = torch.cat([edge_index[0], edge_index[1], loops])
    cols = torch.cat([edge_index[1], edge_index[0], loops])
    # Deduplicate (a, b) pairs so an edge listed in both directions counts once.
    key = torch.unique(rows * n_nodes + cols)
    rows, cols = key // n_nodes, key % n_nodes
    degree = torch.bincount(rows, minlength=n_nodes).to(torch.float32)
    inv_sqrt = degree.clamp(min=1.0).rsqrt()
    values = inv_sqrt[rows] * inv_sqrt[cols]
    adj = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n_nodes, n_nodes), check_invariants=False
    )
    return adj.coalesce()


def _neighbour_lists(edge_index: torch.Tensor, n_nodes: int) -> list[list[int]]:
    edges = _check_edges(edge_index, n_nodes).cpu().numpy()
    neighbours: list[list[int]] = [[] for _ in range(n_nodes)]
    for a, b in edges.T:
        if a != b:
            neighbours[a].append(int(b))
            neighbours[b].append(int(a))
    return neighbours


def _within_hops(neighbours: list[list[int]], start: int, hops: int) -> list[int]:
    seen = {start}
    frontier = [start]
    for _ in range(hops):
        nxt = [o for node in frontier for o in neighbours[node] if o not in seen]
        nxt = list(dict.fromkeys(nxt))
        seen.update(nxt)
        frontier = nxt
        if not frontier:
            break
    return list(seen)


def hop_neighbourhoods(edge_index: torch.Tensor, n_nodes: int, hops: int) -> list[np.ndarray]:
    """Nodes within ``hops`` graph steps of every node (itself included)."""
    neighbours = _neighbour_lists(edge_index, n_nodes)
    return [np.asarray(_within_hops(neighbours, i, hops), dtype=np.int64) for i in range(n_nodes)]


def graph_nms(
    scores: torch.Tensor,
    edge_index: torch.Tensor,
    *,
    k: int = 4,
    hops: int = 2,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Top-``k`` nodes by score, each suppressing its neighbours within ``hops`` steps.

    Greedy non-maximum suppression on the graph: the best remaining node is taken, then every
    node at most ``hops`` edges away is removed from consideration, so the chosen regions are
    spread over the slide rather than clustered on one hot spot. When suppression leaves fewer
    than ``k`` nodes, the best suppressed nodes fill the remaining places (never duplicates).

    Parameters
    ----------
    scores
        ``(N,)`` node scores (higher is better).
    edge_index
        ``(2, E)`` graph edges.
    k
        Number of nodes to return (fewer only when the graph has fewer nodes or candidates).
    hops
        Suppression radius in graph steps; 0 disables suppression.
    candidates
        Optional node indices to choose from (others are never picked, but still transmit
        suppression).

    Returns
    -------
    torch.Tensor
        Long tensor of chosen node indices, best first.
    """
    assert k >= 1, "k must be at least 1"
    assert hops >= 0, "hops must be >= 0"
    scores_np = scores.detach().float().cpu().numpy().reshape(-1)
    n = scores_np.shape[0]
    if candidates is None:
        pool = np.arange(n)
    else:
        pool = np.unique(torch.as_tensor(candidates).cpu().numpy().astype(np.int64))
    order = pool[np.argsort(-scores_np[pool], kind="stable")]
    neighbours = _neighbour_lists(edge_index, n) if hops > 0 else None
    suppressed = np.zeros(n, dtype=bool)
    chosen: list[int] = []
    for node in order:
        if len(chosen) == k:
            break
        if suppressed[node]:
            continue
        chosen.append(int(node))
        if neighbours is not None:
            suppressed[_within_hops(neighbours, int(node), hops)] = True
        else:
            suppressed[node] = True
    if len(chosen) < k:
        taken = set(chosen)
        chosen.extend(int(v) for v in order if int(v) not in taken)
        chosen = chosen[:k]
    return torch.as_tensor(chosen, dtype=torch.long, device=scores.device)
