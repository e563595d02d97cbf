"""Small synthetic region graphs for the model tests."""

from __future__ import annotations

import pytest
import torch


def grid_graph(rows: int, cols: int) -> torch.Tensor:
    """4-neighbour grid edges ``(2, E)``; node ``r * cols + c``."""
    edges = []
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if c + 1 < cols:
                edges.append((i, i + 1))
            if r + 1 < rows:
                edges.append((i, i + cols))
    return torch.tensor(edges, dtype=torch.long).T.contiguous()


def random_slide(n_rows: int = 6, n_cols: int = 6, n_features: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_rows * n_cols, n_features, generator=g)
    return x, grid_graph(n_rows, n_cols)


@pytest.fixture
def grid():
    """``grid(rows, cols)`` -> 4-neighbour grid edges."""
    return grid_graph


@pytest.fixture
def toy_slide():
    """``toy_slide(rows=6, cols=6, n_features=10)`` -> random ``(x, edge_index)`` on a grid."""
    return random_slide
