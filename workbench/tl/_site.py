"""The site guard: markers that are mostly *where the slide was made* rather than tissue.

Slides from several hospitals differ in stain and scanner, and the region features (H&E
colour statistics, and the tokens learned from them) shift with them. Phenotypes can then
cluster by site, and when sites also differ in outcome (case mix, era, treatment) a site
detector looks like a prognostic marker. Three tools, used by ``tl.survival`` and
``tl.discover`` when a site column is known:

* :func:`site_association`: per marker, a Kruskal-Wallis test of its values across sites
  (BH q across markers) and the share of its rank variance that lies between sites
  (``eta2 = (H - k + 1) / (n - k)``); a marker with ``q_site < fdr`` and ``eta2 >=
  site_threshold`` is flagged ``mostly_site``;
* the Cox model stratified by site (lifelines' ``strata=``): every site keeps its own
  baseline hazard, so only within-site differences in a marker count;
* :func:`center_by_site`: region features centred and scaled within each site before the
  phenotypes are fitted (a region-level stand-in for stain normalisation; it removes the
  site's average shift, not shifts that differ between tissue types).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from workbench._constants import X_FOCUS
from workbench._errors import MarkerError
from workbench.tl._markers import _features, slide_id_of
from workbench.tl._stats import benjamini_hochberg, kruskal_eta2

logger = logging.getLogger(__name__)


def site_association(
    X: np.ndarray,
    markers: Sequence[str],
    sites: Sequence[str] | np.ndarray,
    *,
    fdr: float = 0.05,
    site_threshold: float = 0.5,
) -> pd.DataFrame:
    """Association of each marker with site.

    Parameters
    ----------
    X
        Patients × markers values (NaN allowed).
    markers
        Column names of ``X``.
    sites
        Site of each patient.
    fdr
        q-value level for the ``mostly_site`` flag.
    site_threshold
        Smallest between-site share of rank variance (eta squared) for the flag.

    Returns
    -------
    pandas.DataFrame
        Indexed by marker: ``p_site``, ``q_site`` (BH across markers), ``site_eta2``,
        ``n_sites``, ``mostly_site``.
    """
    sites = np.asarray(sites).astype(str)
    rows = [kruskal_eta2(X[:, j], sites) for j in range(len(markers))]
    table = pd.DataFrame(rows, index=list(markers), columns=["p_site", "site_eta2", "n_sites"])
    table["q_site"] = benjamini_hochberg(table["p_site"])
    table["mostly_site"] = (table["q_site"] < fdr) & (table["site_eta2"] >= site_threshold)
    return table[["p_site", "q_site", "site_eta2", "n_sites", "mostly_site"]]


def center_by_site(
    adatas: Sequence[AnnData],
    sites: Sequence[str] | Mapping[str, str],
    *,
    feature_key: str = X_FOCUS,
    key_added: str | None = None,
    scale: bool = True,
) -> str:
    """Centre (and scale) every slide's region features within its site.

    Each site's regions (pooled over its slides) get mean 0 and, with ``scale``, unit
    standard deviation per feature. The outcome is never used, so every slide may take part.

    Parameters
    ----------
    adatas
        Per-slide region AnnData with ``obsm[feature_key]``.
    sites
        Site of each slide: a sequence aligned with ``adatas`` or a mapping slide id → site.
    feature_key
        ``obsm`` key of the features.
    key_added
        ``obsm`` key of the centred features (default ``feature_key + "_site"``).
    scale
        Also divide by the site's standard deviation.

    Returns
    -------
    str
        The ``obsm`` key written (pass it to ``tl.markers(feature_key=...)``).
    """
    key_added = key_added or f"{feature_key}_site"
    adatas = list(adatas)
    if isinstance(sites, Mapping):
        ids = [slide_id_of(a) for a in adatas]
        missing = [i for i in ids if i not in sites]
        if missing:
            raise MarkerError(f"no site for slide(s) {missing[:10]}")
        labels = [str(sites[i]) for i in ids]
    else:
        labels = [str(s) for s in sites]
        if len(labels) != len(adatas):
            raise MarkerError(f"got {len(labels)} sites for {len(adatas)} slides")
    feats = [_features(a, feature_key) for a in adatas]
    for site in sorted(set(labels)):
        idx = [i for i, s in enumerate(labels) if s == site]
        pooled = np.vstack([feats[i] for i in idx])
        mean = pooled.mean(axis=0)
        sd = pooled.std(axis=0) if scale else np.ones(pooled.shape[1])
        sd = np.where(sd > 0, sd, 1.0)
        for i in idx:
            adatas[i].obsm[key_added] = ((feats[i] - mean) / sd).astype(np.float32)
    logger.info(
        "added obsm[%r] to %d slides (features centred within %d sites)",
        key_added, len(adatas), len(set(labels)),
    )  # fmt: skip
    return key_added


__all__ = ["center_by_site", "site_association"]
