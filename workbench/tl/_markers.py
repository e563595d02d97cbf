"""Feature uniqueness: region phenotypes that tell outcome groups apart (SEW, DESIGN.md §6).

The focused region features of every slide are pooled, standardised and reduced by PCA to
the components holding 95% of the variance. Each outcome group is then clustered on its own
(KMeans, k chosen by silhouette). A cluster is *unique* when its part of feature space holds
a larger share of its own group's regions than of the other groups' regions:

``territory(c)``
    points whose nearest centroid among the clusters of c's group is c, no farther than
    ``radius(c)`` (the 95th percentile of c's members' distances to the centroid);
``p_own``, ``p_other``
    shares of the own group's / the other groups' regions in the territory;
``uniqueness = p_own * (p_own - p_other) / (p_own + p_other)``
    a contrast in [-1, 1] weighted by the cluster's size (its share of its own group).

The highest-scoring clusters (uniqueness > 0) become the candidate phenotypes
``phenotype_1``, ``phenotype_2``, ... in rank order. Every region of every slide is then
assigned the nearest phenotype whose territory radius it falls in, else ``"other"``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from workbench._constants import FEATURE_UNIQUENESS, PHENOTYPE, SLIDE_ID, X_FOCUS, X_UNIQUENESS
from workbench._errors import MarkerError

logger = logging.getLogger(__name__)

OTHER = "other"


def slide_id_of(adata: AnnData, *, fallback: str | None = None) -> str:
    """The slide identifier stored in ``uns`` (``slide_id``, else :func:`workbench.io.slide_id` of
    the slide path).

    Parameters
    ----------
    adata
        A per-slide region AnnData.
    fallback
        Returned when nothing is recorded; without it a missing id raises :class:`MarkerError`.
    """
    sid = adata.uns.get(SLIDE_ID)
    for where in ("region_graph", "explain"):  # the one slide-id rule, as tl.extract
        if sid is not None:
            break
        slide = adata.uns.get(where, {}).get("slide", {})
        path = slide.get("path") if isinstance(slide, Mapping) else None
        if path:
            from workbench.io import slide_id

            sid = slide_id(path)  # the one slide-id rule (S1.ome.tiff -> S1)
    if sid is None:
        if fallback is not None:
            return fallback
        raise MarkerError(
            "a slide AnnData has no uns['slide_id'] (nor uns['region_graph']['slide']['path']); "
            "set adata.uns['slide_id'] or pass slide_ids=[...]"
        )
    return str(sid)


def _slide_ids(adatas: Sequence[AnnData], slide_ids: Sequence[str] | None) -> list[str]:
    if slide_ids is not None:
        if len(slide_ids) != len(adatas):
            raise MarkerError(f"got {len(slide_ids)} slide_ids for {len(adatas)} slides")
        ids = [str(s) for s in slide_ids]
    else:
        ids = [slide_id_of(a, fallback=f"slide_{i}") for i, a in enumerate(adatas)]
    dup = pd.Index(ids)[pd.Index(ids).duplicated()].unique().tolist()
    if dup:
        raise MarkerError(f"slide ids must be unique; repeated: {dup[:5]}")
    return ids


def _features(adata: AnnData, key: str) -> np.ndarray:
    if key not in adata.obsm:
        raise MarkerError(
            f"adata.obsm[{key!r}] is missing (slide {slide_id_of(adata, fallback='?')}); "
            f"run tl.extract first or pass feature_key= one of {list(adata.obsm)}"
        )
    X = np.asarray(adata.obsm[key], dtype=np.float64)
    if not np.isfinite(X).all():
        raise MarkerError(f"adata.obsm[{key!r}] holds NaN or infinite values")
    return X


class FeatureUniqueness:
    """Fit outcome-unique region phenotypes on a set of slides; assign them to any slide.

    Parameters
    ----------
    n_phenotypes
        How many of the most unique clusters become phenotypes (fewer if fewer score > 0).
    k_range
        Smallest and largest k tried per outcome group; the best silhouette wins.
    variance
        Share of variance the PCA keeps.
    feature_key
        ``obsm`` key of the focused features.
    max_regions_per_slide
        Regions drawn per slide for fitting (all slides weigh alike; assignment uses all).
    radius_quantile
        Quantile of member-to-centroid distances that bounds a cluster's territory.
    random_state
        Seed for subsampling, KMeans and silhouette sampling.
    n_threads
        OpenMP/BLAS threads for the fit (``None``: the libraries' default). 1 by default:
        on a busy 2-core machine KMeans ran 4-5x slower with its default thread pool.

    Attributes
    ----------
    clusters_
        One row per cluster: group, size, shares, purity, uniqueness, radius, phenotype.
    phenotypes_
        Names of the candidate phenotypes, in rank order.
    centroids_
        Phenotype centroids in the PCA space (rows follow ``phenotypes_``).
    """

    def __init__(
        self,
        *,
        n_phenotypes: int = 4,
        k_range: tuple[int, int] = (2, 8),
        variance: float = 0.95,
        feature_key: str = X_FOCUS,
        max_regions_per_slide: int = 200,
        radius_quantile: float = 0.95,
        random_state: int = 0,
        n_threads: int | None = 1,
    ) -> None:
        if n_phenotypes < 1:
            raise ValueError(f"n_phenotypes must be >= 1, got {n_phenotypes}")
        if not (2 <= k_range[0] <= k_range[1]):
            raise ValueError(
                f"k_range must be (k_min, k_max) with 2 <= k_min <= k_max, got {k_range}"
            )
        if not 0 < variance <= 1:
            raise ValueError(f"variance must be in (0, 1], got {variance}")
        self.n_phenotypes = n_phenotypes
        self.k_range = tuple(k_range)
        self.variance = variance
        self.feature_key = feature_key
        self.max_regions_per_slide = max_regions_per_slide
        self.radius_quantile = radius_quantile
        self.random_state = random_state
        self.n_threads = n_threads

    # --- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        adatas: Sequence[AnnData],
        groups: Sequence | Mapping,
        *,
        slide_ids: Sequence[str] | None = None,
    ) -> FeatureUniqueness:
        """Fit on slides labelled by outcome group.

        Parameters
        ----------
        adatas
            Per-slide region AnnData with ``obsm[feature_key]``.
        groups
            Outcome group per slide: a sequence aligned with ``adatas`` or a mapping from slide
            id to group. Slides whose group is missing (``None``/NaN) are left out of the fit
            (logged). At least two groups are needed.
        slide_ids
            Slide ids aligned with ``adatas`` (default: ``uns["slide_id"]``).

        Returns
        -------
        self
        """
        from contextlib import nullcontext

        import sklearn.cluster  # noqa: F401  (loaded first: a thread limit only reaches
        import sklearn.metrics  # noqa: F401  libraries already loaded; KMeans ran ~30x
        from threadpoolctl import threadpool_limits  # slower on a busy machine otherwise)

        limit = threadpool_limits(self.n_threads) if self.n_threads else nullcontext()
        with limit:
            return self._fit(adatas, groups, slide_ids)

    def _fit(self, adatas, groups, slide_ids) -> FeatureUniqueness:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
        from sklearn.metrics import silhouette_score

        adatas = list(adatas)
        if not adatas:
            raise MarkerError("no slides to fit on")
        ids = _slide_ids(adatas, slide_ids)
        if isinstance(groups, Mapping):
            labels = [groups.get(i) for i in ids]
        else:
            labels = list(groups)
            if len(labels) != len(adatas):
                raise MarkerError(f"got {len(labels)} groups for {len(adatas)} slides")
        keep = [i for i, g in enumerate(labels) if g is not None and not pd.isna(g)]
        if len(keep) < len(adatas):
            logger.info(
                "feature uniqueness: %d of %d slides have no group and are not used for fitting",
                len(adatas) - len(keep),
                len(adatas),
            )
        group_names = sorted({str(labels[i]) for i in keep})
        if len(group_names) < 2:
            raise MarkerError(
                f"feature uniqueness needs at least two outcome groups, got {group_names}"
            )

        rng = np.random.default_rng(self.random_state)
        blocks, block_groups = [], []
        for i in keep:
            X = _features(adatas[i], self.feature_key)
            if len(X) > self.max_regions_per_slide:
                X = X[rng.choice(len(X), self.max_regions_per_slide, replace=False)]
            blocks.append(X)
            block_groups.append(np.full(len(X), str(labels[i]), dtype=object))
        widths = {b.shape[1] for b in blocks}
        if len(widths) != 1:
            raise MarkerError(
                f"obsm[{self.feature_key!r}] has different widths across slides: {sorted(widths)}"
            )
        X = np.vstack(blocks)
        g = np.concatenate(block_groups)

        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        n_comp = self.variance if self.variance < 1 else None
        self.pca_ = PCA(n_components=n_comp, svd_solver="full", random_state=self.random_state)
        Z = self.pca_.fit_transform((X - self.mean_) / self.scale_)
        self.n_components_ = Z.shape[1]

        rows, cents = [], []
        self.silhouette_ = {}
        for name in group_names:
            Zg = Z[g == name]
            k_lo, k_hi = self.k_range[0], min(self.k_range[1], len(Zg) - 1)
            if k_hi < k_lo:
                raise MarkerError(f"group {name!r} has only {len(Zg)} regions; cannot cluster it")
            scores, fits = {}, {}
            for k in range(k_lo, k_hi + 1):
                km = KMeans(n_clusters=k, n_init=2, random_state=self.random_state).fit(Zg)
                if len(np.unique(km.labels_)) < 2:
                    continue
                scores[k] = float(
                    silhouette_score(
                        Zg,
                        km.labels_,
                        sample_size=min(2000, len(Zg)),
                        random_state=self.random_state,
                    )
                )
                fits[k] = km
            if not scores:
                raise MarkerError(f"group {name!r}: every clustering collapsed to one cluster")
            best = max(scores, key=scores.get)
            self.silhouette_[name] = scores
            km = fits[best]
            # Territories: nearest own-group centroid, within the cluster's radius.
            d_all = np.linalg.norm(Z[:, None, :] - km.cluster_centers_[None, :, :], axis=2)
            nearest = d_all.argmin(axis=1)
            n_own, n_other = (g == name).sum(), (g != name).sum()
            for c in range(best):
                member = km.labels_ == c
                d_mem = np.linalg.norm(Zg[member] - km.cluster_centers_[c], axis=1)
                radius = float(np.quantile(d_mem, self.radius_quantile))
                territory = (nearest == c) & (d_all[:, c] <= radius)
                p_own = territory[g == name].sum() / n_own
                p_other = territory[g != name].sum() / n_other
                contrast = (p_own - p_other) / (p_own + p_other) if p_own + p_other > 0 else 0.0
                rows.append(
                    {
                        "cluster": f"{name}:{c}",
                        "group": name,
                        "k": best,
                        "size": int(member.sum()),
                        "share_own": float(p_own),
                        "share_other": float(p_other),
                        "purity": float(p_own / (p_own + p_other))
                        if p_own + p_other > 0
                        else np.nan,
                        "uniqueness": float(p_own * contrast),
                        "radius": radius,
                    }
                )
                cents.append(km.cluster_centers_[c])
        table = pd.DataFrame(rows).set_index("cluster")
        cents = np.asarray(cents)
        order = np.argsort(-table["uniqueness"].to_numpy(), kind="stable")
        chosen: list[int] = []
        for j in order:
            if len(chosen) == self.n_phenotypes or table["uniqueness"].iloc[j] <= 0:
                break
            # A candidate sitting inside an already chosen phenotype is the same pattern.
            if any(
                np.linalg.norm(cents[j] - cents[c])
                < min(table["radius"].iloc[j], table["radius"].iloc[c]) / 2
                for c in chosen
            ):
                continue
            chosen.append(int(j))
        if not chosen:
            raise MarkerError(
                "no cluster is more frequent in its own group than in the others; no phenotype found"
            )
        table["phenotype"] = ""
        names = [f"phenotype_{r + 1}" for r in range(len(chosen))]
        for name, j in zip(names, chosen, strict=True):
            table.iloc[j, table.columns.get_loc("phenotype")] = name
        table["pc1"] = cents[:, 0]
        table["pc2"] = cents[:, 1] if cents.shape[1] > 1 else 0.0
        self.clusters_ = table
        self.cluster_centroids_ = cents
        self.phenotypes_ = names
        self.centroids_ = cents[chosen]
        self.radius_ = table["radius"].to_numpy()[chosen]
        self.groups_ = group_names
        self.n_slides_fit_ = len(keep)
        self.n_regions_fit_ = int(len(X))
        self.slide_ids_fit_ = [ids[i] for i in keep]
        logger.info(
            "feature uniqueness: %d phenotypes from %d clusters on %d regions of %d slides",
            len(names),
            len(table),
            len(X),
            len(keep),
        )
        return self

    # --- applying --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "centroids_"):
            raise MarkerError(
                "this FeatureUniqueness is not fitted yet; call .fit(adatas, groups) first"
            )

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Standardise and project raw focused features into the fitted PCA space.

        Parameters
        ----------
        X
            ``(n, d)`` raw focused features (``d`` as at :meth:`fit`).

        Returns
        -------
        numpy.ndarray
            ``(n, n_components)`` PCA coordinates (what ``obsm["X_uniqueness"]`` holds).

        Raises
        ------
        MarkerError
            The model is not fitted or ``X`` has another width.
        """
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean_):
            raise MarkerError(f"expected features of width {len(self.mean_)}, got shape {X.shape}")
        return self.pca_.transform((X - self.mean_) / self.scale_)

    def assign(self, X: np.ndarray) -> np.ndarray:
        """Phenotype name per row of raw focused features (``"other"`` outside every territory).

        Parameters
        ----------
        X
            ``(n, d)`` raw focused features.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` object array of phenotype names.
        """
        Z = self.embed(X)
        d = np.linalg.norm(Z[:, None, :] - self.centroids_[None, :, :], axis=2)
        best = d.argmin(axis=1)
        inside = d[np.arange(len(Z)), best] <= self.radius_[best]
        return np.where(inside, np.asarray(self.phenotypes_, dtype=object)[best], OTHER)

    def transform(
        self, adata: AnnData, *, key_added: str = PHENOTYPE, copy: bool = False
    ) -> AnnData | None:
        """Write the phenotypes of one slide's regions.

        Parameters
        ----------
        adata
            A region AnnData with ``obsm[feature_key]``.
        key_added
            ``obs`` column for the phenotype.
        copy
            Return a modified copy instead of writing in place.

        Returns
        -------
        anndata.AnnData or None
            The annotated copy with ``copy=True``, else ``None`` (``adata`` is annotated in
            place). Writes ``obs[key_added]`` (categorical: phenotypes then ``"other"``),
            ``obs[key_added + "_cluster"]`` (nearest cluster of any group),
            ``obsm["X_uniqueness"]`` (PCA coordinates) and ``uns["feature_uniqueness"]``.
        """
        self._check_fitted()
        if copy:
            adata = adata.copy()
        X = _features(adata, self.feature_key)
        Z = self.embed(X)
        labels = self.assign(X)
        near = np.linalg.norm(Z[:, None, :] - self.cluster_centroids_[None, :, :], axis=2).argmin(
            axis=1
        )
        adata.obs[key_added] = pd.Categorical(labels, categories=[*self.phenotypes_, OTHER])
        adata.obs[f"{key_added}_cluster"] = pd.Categorical(
            self.clusters_.index.to_numpy()[near], categories=list(self.clusters_.index)
        )
        adata.obsm[X_UNIQUENESS] = Z.astype(np.float32)
        adata.uns[FEATURE_UNIQUENESS] = {
            "clusters": self.clusters_.reset_index(),
            "phenotypes": list(self.phenotypes_),
            "key_added": key_added,
            "params": {
                "n_phenotypes": self.n_phenotypes,
                "k_range": list(self.k_range),
                "variance": self.variance,
                "feature_key": self.feature_key,
                "n_components": int(self.n_components_),
                "n_slides_fit": int(self.n_slides_fit_),
                "groups": list(self.groups_),
                "fit_slides": list(self.slide_ids_fit_),
            },
        }
        return adata if copy else None

    def feature_centroids(self) -> np.ndarray:
        """Phenotype centroids mapped back to the raw feature space (rows follow ``phenotypes_``).

        Models fitted on different slides have different standardisations and PCA bases;
        in the raw feature space their phenotypes can be compared (``tl.discover`` matches
        the phenotypes of its cross-fitting folds this way).

        Returns
        -------
        numpy.ndarray
            ``(n_phenotypes, d)`` centroids in raw feature units.
        """
        self._check_fitted()
        return self.pca_.inverse_transform(self.centroids_) * self.scale_ + self.mean_

    def rename_phenotypes(self, names: Mapping[str, str]) -> FeatureUniqueness:
        """Give the phenotypes new names (e.g. the names matched across cross-fitting folds).

        Parameters
        ----------
        names
            Old name → new name for every phenotype; the new names must be unique.

        Returns
        -------
        self
        """
        self._check_fitted()
        missing = [p for p in self.phenotypes_ if p not in names]
        new = [str(names[p]) for p in self.phenotypes_ if p in names]
        if missing or len(set(new)) != len(new) or OTHER in new:
            raise MarkerError(
                f"rename_phenotypes needs a unique new name (not {OTHER!r}) for every "
                f"phenotype {self.phenotypes_}; got {dict(names)}"
            )
        self.clusters_["phenotype"] = [
            str(names.get(p, p)) if p else "" for p in self.clusters_["phenotype"]
        ]
        self.phenotypes_ = new
        return self

    def __repr__(self) -> str:
        if not hasattr(self, "centroids_"):
            return f"FeatureUniqueness(n_phenotypes={self.n_phenotypes}, k_range={self.k_range}, unfitted)"
        return (
            f"FeatureUniqueness(fitted on {self.n_slides_fit_} slides / {self.n_regions_fit_} regions, "
            f"groups={self.groups_}, {self.n_components_} PCs, {len(self.clusters_)} clusters, "
            f"phenotypes={self.phenotypes_})"
        )


def markers(
    adatas: Sequence[AnnData] | AnnData,
    groups: Sequence | Mapping,
    *,
    n_phenotypes: int = 4,
    k_range: tuple[int, int] = (2, 8),
    variance: float = 0.95,
    feature_key: str = X_FOCUS,
    key_added: str = PHENOTYPE,
    slide_ids: Sequence[str] | None = None,
    apply_to: Sequence[AnnData] | None = None,
    max_regions_per_slide: int = 200,
    random_state: int = 0,
) -> FeatureUniqueness:
    """Find outcome-unique region phenotypes and write them to every slide.

    Parameters
    ----------
    adatas
        Per-slide region AnnData to fit on (``obsm[feature_key]``).
    groups
        Outcome group per slide (sequence aligned with ``adatas`` or mapping slide id → group).
    n_phenotypes, k_range, variance, feature_key, max_regions_per_slide, random_state
        See :class:`FeatureUniqueness`.
    key_added
        ``obs`` column that receives the phenotype.
    slide_ids
        Slide ids aligned with ``adatas`` (default ``uns["slide_id"]``).
    apply_to
        Further slides that get phenotypes without taking part in the fit (e.g. the
        validation patients' slides).

    Returns
    -------
    FeatureUniqueness
        The fitted model. Every slide in ``adatas`` and ``apply_to`` gets
        ``obs[key_added]``, ``obs[key_added + "_cluster"]``, ``obsm["X_uniqueness"]`` and
        ``uns["feature_uniqueness"]`` (see :meth:`FeatureUniqueness.transform`).
    """
    if isinstance(adatas, AnnData):
        adatas = [adatas]
    model = FeatureUniqueness(
        n_phenotypes=n_phenotypes,
        k_range=k_range,
        variance=variance,
        feature_key=feature_key,
        max_regions_per_slide=max_regions_per_slide,
        random_state=random_state,
    ).fit(adatas, groups, slide_ids=slide_ids)
    targets = list(adatas) + list(apply_to or [])
    for a in targets:
        model.transform(a, key_added=key_added)
    logger.info(
        "added obs[%r], obsm[%r] and uns[%r] to %d slides",
        key_added,
        X_UNIQUENESS,
        FEATURE_UNIQUENESS,
        len(targets),
    )
    return model
