from __future__ import annotations

import torch

from workbench.models import graph_nms, normalized_adjacency


def test_normalized_adjacency_is_symmetric_with_self_loops():
    adj = normalized_adjacency(torch.tensor([[0, 1], [1, 2]]), 3).to_dense()
    assert torch.allclose(adj, adj.T)
    assert (adj.diagonal() > 0).all()
    # node 0 (degree 2 incl. loop) and node 1 (degree 3): 1/sqrt(2*3)
    assert torch.isclose(adj[0, 1], torch.tensor(1 / 6**0.5))
    assert adj[0, 2] == 0


def test_nms_picks_spread_out_regions(grid):
    ei = grid(10, 10)
    # A single hot spot around node (2, 2) plus a weaker one far away at (8, 8).
    rr, cc = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
    scores = torch.exp(-((rr - 2) ** 2 + (cc - 2) ** 2) / 4.0) + 0.5 * torch.exp(
        -((rr - 8) ** 2 + (cc - 8) ** 2) / 4.0
    )
    chosen = graph_nms(scores.flatten(), ei, k=4, hops=2)
    assert chosen[0] == 2 * 10 + 2
    pos = torch.stack([chosen // 10, chosen % 10], 1)
    # Every pair is more than 2 grid steps apart (Manhattan distance = hop distance on a grid).
    d = (pos[:, None] - pos[None]).abs().sum(-1)
    assert (d[~torch.eye(4, dtype=bool)] > 2).all()
    assert (8 * 10 + 8) in chosen.tolist()
    # Without suppression the top four cluster on the first hot spot.
    plain = graph_nms(scores.flatten(), ei, k=4, hops=0)
    pos0 = torch.stack([plain // 10, plain % 10], 1)
    assert ((pos0 - torch.tensor([2, 2])).abs().sum(-1) <= 1).all()


def test_nms_respects_candidates_and_fills_up(grid):
    ei = grid(1, 5)
    chosen = graph_nms(torch.arange(5.0), ei, k=3, hops=5, candidates=torch.tensor([0, 1, 4]))
    assert chosen.tolist() == [4, 1, 0]
