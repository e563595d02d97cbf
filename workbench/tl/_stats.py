"""Statistics helpers shared by the marker screens: pure NumPy/SciPy, no AnnData.

* :func:`benjamini_hochberg`: q-values across markers (``tl.survival``), across families
  (``tl._families.family_screen``) and across the site tests (``tl._site``);
* :func:`simes`: one p-value for a family of tests of the same hypothesis;
* :func:`kruskal_eta2`: a Kruskal-Wallis test across groups and the share of rank variance
  between them (the site guard).

They live here, below the screens that call them, so that ``_survival``, ``_families`` and
``_site`` import them without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["benjamini_hochberg", "kruskal_eta2", "simes"]


def benjamini_hochberg(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN stays NaN and is not counted.

    Parameters
    ----------
    p
        Raw p-values; NaN marks a test that could not be run.

    Returns
    -------
    numpy.ndarray
        q-values in the order of ``p`` (float, capped at 1), NaN where ``p`` is NaN; the
        number of tests ``m`` counts only the finite p-values.
    """
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def simes(p: Sequence[float] | np.ndarray) -> float:
    """Simes' combined p-value of several tests of one hypothesis family (NaN ignored).

    ``min_i(m * p_(i) / i)`` over the sorted p-values: equal to the common value when every
    member agrees, and to ``m * p_min`` when a single member stands out.

    Parameters
    ----------
    p
        The members' p-values.

    Returns
    -------
    float
        The family's p-value (at most 1); NaN when no member has a finite p-value.
    """
    p = np.sort(np.asarray(p, dtype=float)[np.isfinite(p)])
    if len(p) == 0:
        return float("nan")
    return float(min(1.0, np.min(p * len(p) / np.arange(1, len(p) + 1))))


def kruskal_eta2(values: np.ndarray, sites: np.ndarray) -> tuple[float, float, int]:
    """Kruskal-Wallis H test of ``values`` across ``sites`` (NaN values skipped).

    Parameters
    ----------
    values
        One value per observation (NaN allowed).
    sites
        The group (site) of each observation.

    Returns
    -------
    tuple of (float, float, int)
        ``(p, eta2, k)``: the p-value, the rank-based eta squared ``(H - k + 1) / (n - k)``
        clipped to [0, 1], and the number of sites with at least two values; p and eta2 are
        NaN when fewer than two such sites remain or every value is tied.
    """
    from scipy.stats import kruskal

    values = np.asarray(values, dtype=float)
    sites = np.asarray(sites).astype(str)
    ok = np.isfinite(values)
    groups = [values[ok & (sites == s)] for s in np.unique(sites[ok])]
    groups = [g for g in groups if len(g) >= 2]
    k = len(groups)
    n = sum(len(g) for g in groups)
    if k < 2 or n <= k or np.ptp(np.concatenate(groups)) == 0:
        return float("nan"), float("nan"), k
    h, p = kruskal(*groups)
    eta2 = float(np.clip((h - k + 1) / (n - k), 0.0, 1.0))
    return float(p), eta2, k
