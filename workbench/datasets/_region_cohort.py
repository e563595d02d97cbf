"""Synthetic per-slide region AnnData with a planted spatial survival marker.

This is the one place where marker discovery simulates region data: the tests, the marker
notebooks and ``benchmarks/markers.py`` all use it (``datasets.simulate_region_cohort``). Survival is not simulated here (see below).

Each slide is a cloud of superpixel regions on a jittered grid over an elliptical piece of
tissue, with a round lesion. Every region has a hidden tissue type:

``tumour``
    regions inside the lesion;
``stroma``
    everything else by default;
``immune``
    an immune infiltrate: a background sprinkle anywhere (random per slide, no outcome
    signal) plus a band at the lesion margin whose density follows the patient's latent
    infiltration ``s`` (the planted marker);
``necrosis``
    a decoy patch inside the lesion whose size is random (no outcome signal);
``adipose``
    a decoy sprinkle over the non-lesion tissue, random amount (no outcome signal).

Focused features (``obsm["X_focus"]``) are Gaussian noise plus a type-specific offset, so a
clustering of the features can recover the types.

Patients (grade, infiltration, age) and their survival come from
:func:`workbench.datasets.simulate_patients`, the hazard model of the synthetic image cohort
(Weibull proportional hazards in grade, boundary infiltration and age; ``null=True`` removes
the grade and infiltration effects), so there is one hazard model in the package. Here the
latent ``s`` is that model's standardised infiltration (``datasets._survival.infiltration_z``).

**Sites** (``sites=k``): every patient belongs to one of ``k`` sites (labs), drawn at random.
A site changes two things, neither of them tissue:

* *stain*: the first half of the feature dimensions stands for colour; each site adds its own
  shift there, mixing a "haematoxylin" direction and an "eosin" direction in proportion to
  how nuclear-rich each tissue type is (:data:`HAEMATOXYLIN_SHARE`), so a site moves immune
  cells and stroma by different amounts and centring features per site cannot fully undo it;
* *outcome*: a baseline log hazard per site (case mix, era), drawn by
  :func:`workbench.datasets.simulate_patients` (``sites=k``, the same site model as the
  pixel-level ``datasets.make_cohort(sites=k)``), so site is associated with survival, also in
  a null cohort.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench._constants import (
    ADJACENCY,
    LESION_PROB,
    REGION_GRAPH,
    SLIDE_ID,
    SPATIAL,
    X_FOCUS,
)
from workbench.datasets._survival import infiltration_z, simulate_patients

if TYPE_CHECKING:  # anndata loads on first use: ``import workbench.datasets`` stays light
    from anndata import AnnData

TISSUE_TYPES = ("stroma", "tumour", "immune", "necrosis", "adipose")
#: How much of a site's stain shift follows its haematoxylin direction, per tissue type.
HAEMATOXYLIN_SHARE = {
    "stroma": 0.2,
    "tumour": 0.8,
    "immune": 0.95,
    "necrosis": 0.5,
    "adipose": 0.05,
}
_MPP = 0.5  # level-0 microns per pixel, as in the synthetic image cohort
_THUMB_SCALE = 32  # level-0 pixels per thumbnail pixel


def _type_means(n_features: int, seed: int) -> np.ndarray:
    # Fixed across every call with the same feature seed, so slides share their types.
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(TISSUE_TYPES) + 1, n_features))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return means * 8.0  # the last row is the per-grade tumour shift direction


def simulate_slide(
    slide_id: str,
    *,
    grade: int,
    infiltration: float,
    rng: np.random.Generator,
    n_regions: int = 500,
    n_features: int = 32,
    feature_seed: int = 12345,
    with_images: bool = True,
    stain_shift: np.ndarray | None = None,
    site: str | None = None,
) -> AnnData:
    """One slide's region AnnData with the documented keys and a hidden ``obs["true_type"]``.

    Parameters
    ----------
    slide_id
        Stored in ``uns["slide_id"]``.
    grade, infiltration
        Patient-level latent variables (see the module docstring).
    rng
        Random generator.
    n_regions
        Approximate number of regions.
    n_features
        Width of ``obsm["X_focus"]``.
    feature_seed
        Seed of the type-specific feature offsets (keep it fixed across a cohort).
    with_images
        Also build a label image and a thumbnail in ``uns["region_graph"]`` (for plots).
    stain_shift
        Per tissue type (rows in :data:`TISSUE_TYPES` order), the feature shift of this
        slide's site (see :func:`site_stain_shifts`).
    site
        The slide's site, recorded in ``uns["simulation"]``.

    Returns
    -------
    The slide's AnnData.
    """
    spacing = 200.0  # level-0 px between region centroids (100 um)
    # Ellipse with semi-axes a, b holding about n_regions grid points: pi*a*b = n*spacing^2.
    aspect = rng.uniform(1.0, 1.6)
    b = spacing * np.sqrt(n_regions / (np.pi * aspect))
    a = aspect * b
    cx, cy = a + 2 * spacing, b + 2 * spacing
    gx, gy = np.meshgrid(np.arange(0, 2 * cx, spacing), np.arange(0, 2 * cy, spacing))
    xy = np.column_stack([gx.ravel(), gy.ravel()])
    xy = xy + rng.uniform(-0.3, 0.3, size=xy.shape) * spacing
    inside = ((xy[:, 0] - cx) / a) ** 2 + ((xy[:, 1] - cy) / b) ** 2 <= 1.0
    xy = xy[inside]
    n = len(xy)

    # Lesion: a disc holding about a quarter of the tissue, kept inside the ellipse.
    r_les = np.sqrt(0.25 * a * b)
    ang = rng.uniform(0, 2 * np.pi)
    off = rng.uniform(0, 0.35)
    lx, ly = cx + off * a * np.cos(ang), cy + off * b * np.sin(ang)
    d_centre = np.hypot(xy[:, 0] - lx, xy[:, 1] - ly)
    lesion = d_centre <= r_les
    d_border_um = np.abs(d_centre - r_les) * _MPP

    types = np.where(lesion, "tumour", "stroma").astype(object)
    # Decoy adipose tissue first, so that the infiltrate below never displaces it: a random
    # amount over the non-lesion tissue, margin included, with no outcome signal.
    p_fat = rng.uniform(0.0, 0.4)
    types[~lesion & (rng.random(n) < p_fat)] = "adipose"
    # Margin infiltrate (planted): density among the margin's stroma follows the latent score.
    p_margin = 1.0 / (1.0 + np.exp(-(-0.5 + 1.5 * infiltration)))
    margin = (d_border_um <= 150.0) & ~lesion
    types[margin & (types == "stroma") & (rng.random(n) < p_margin)] = "immune"
    # Background infiltrate: random amount anywhere in the stroma, no signal.
    p_bg = rng.uniform(0.0, 0.1)
    types[(types == "stroma") & (rng.random(n) < p_bg)] = "immune"
    # Decoy necrosis: a patch in the lesion centre of random size, no signal.
    frac_nec = rng.uniform(0.0, 0.5)
    types[lesion & (d_centre <= np.sqrt(frac_nec) * r_les * 0.8)] = "necrosis"

    means = _type_means(n_features, feature_seed)
    codes = np.array([TISSUE_TYPES.index(t) for t in types])
    feats = means[codes] + rng.normal(size=(n, n_features))
    feats[codes == 1] += 0.3 * (grade - 2) * means[-1]
    if stain_shift is not None:
        feats += np.asarray(stain_shift, dtype=float)[codes]
    lesion_prob = np.clip(np.where(lesion, 0.85, 0.1) + rng.normal(0, 0.05, n), 0, 1)
    focus_score = lesion_prob * rng.uniform(0.5, 1.0, n)

    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    tree = cKDTree(xy)
    pairs = tree.query_pairs(1.6 * spacing, output_type="ndarray")
    ones = np.ones(len(pairs) * 2, dtype=np.float32)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    adjacency = csr_matrix((ones, (rows, cols)), shape=(n, n))

    obs = pd.DataFrame(
        {
            "region_id": np.arange(1, n + 1, dtype=np.int32),
            "focus_score": focus_score.astype(np.float32),
            LESION_PROB: lesion_prob.astype(np.float32),
            "is_focus": np.zeros(n, dtype=bool),
            "true_type": pd.Categorical(types.astype(str), categories=TISSUE_TYPES),
        },
        index=[f"{slide_id}_r{i}" for i in range(n)],
    )
    obs.loc[obs.index[np.argsort(-focus_score)[:4]], "is_focus"] = True
    width, height = int(2 * cx), int(2 * cy)
    graph = {
        "thumbnail_mpp": _MPP * _THUMB_SCALE,
        "scale_xy": [float(_THUMB_SCALE), float(_THUMB_SCALE)],
        "slide": {"path": f"{slide_id}.tif", "dimensions": [width, height], "mpp": _MPP},
    }
    if with_images:
        th, tw = height // _THUMB_SCALE, width // _THUMB_SCALE
        rr, cc = np.mgrid[0:th, 0:tw]
        pix = np.column_stack(
            [(cc.ravel() + 0.5) * _THUMB_SCALE, (rr.ravel() + 0.5) * _THUMB_SCALE]
        )
        dist, nearest = tree.query(pix)
        labels = np.where(dist <= 0.8 * spacing, nearest + 1, 0).reshape(th, tw).astype(np.int32)
        palette = np.array(
            [
                [0, 0, 0],
                [230, 180, 200],
                [170, 60, 140],
                [70, 40, 120],
                [200, 160, 120],
                [250, 240, 235],
            ],
            dtype=np.uint8,
        )
        thumb = palette[np.concatenate([[0], codes + 1])[labels]]
        thumb[labels == 0] = 245
        graph["labels"] = labels
        graph["thumbnail"] = thumb
    from anndata import AnnData

    adata = AnnData(
        X=np.zeros((n, 0), dtype=np.float32),
        obs=obs,
        obsm={SPATIAL: xy.astype(np.float64), X_FOCUS: feats.astype(np.float32)},
        obsp={ADJACENCY: adjacency},
        uns={
            SLIDE_ID: slide_id,
            REGION_GRAPH: graph,
            "explain": {"probabilities": [0.0, 0.0, 0.0]},
            "simulation": {
                "grade": int(grade),
                "infiltration": float(infiltration),
                **({"site": str(site)} if site is not None else {}),
            },
        },
    )
    return adata


def site_stain_shifts(
    n_sites: int, n_features: int, *, magnitude: float = 10.0, seed: int = 0
) -> np.ndarray:
    """Per site and tissue type, the shift a site's stain adds to the region features.

    Two random directions per site in the colour half of the features (a "haematoxylin" and
    an "eosin" one, each of length ``magnitude``), mixed per type by
    :data:`HAEMATOXYLIN_SHARE`. For scale: two tissue types' feature means are about 11 apart
    and a region's noise has length about ``sqrt(n_features)``.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(n_sites, len(TISSUE_TYPES), n_features)``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x517E]))
    n_colour = max(n_features // 2, 1)
    shifts = np.zeros((n_sites, len(TISSUE_TYPES), n_features))
    for s in range(n_sites):
        h, e = rng.normal(size=(2, n_colour))
        h *= magnitude / np.linalg.norm(h)
        e *= magnitude / np.linalg.norm(e)
        for t, name in enumerate(TISSUE_TYPES):
            w = HAEMATOXYLIN_SHARE[name]
            shifts[s, t, :n_colour] = w * h + (1 - w) * e
    return shifts


def simulate_region_cohort(
    n_patients: int = 100,
    *,
    null: bool = False,
    seed: int = 0,
    n_regions: int = 500,
    n_features: int = 32,
    with_images: bool = False,
    model=None,
    sites: int | None = None,
    site_shift: float = 10.0,
) -> tuple[list[AnnData], pd.DataFrame]:
    """A cohort of one-slide patients: region AnnData per slide plus a clinical table.

    Parameters
    ----------
    n_patients
        Number of patients (one slide each).
    null
        Survival does not depend on the slides (``datasets`` null model: no grade or
        infiltration effect; age keeps its small one; the sites keep theirs).
    seed
        Seed of everything drawn here.
    n_regions
        Approximate regions per slide.
    n_features
        Width of ``obsm["X_focus"]``.
    with_images
        Build label images and thumbnails too (needed by ``pl.marker_map`` only).
    model
        A ``workbench.datasets.HazardModel`` (default: its documented coefficients).
    sites
        Number of sites (``None``: one lab, no site effects); see the module docstring.
    site_shift
        Length of each site's stain directions in feature space (:func:`site_stain_shifts`);
        the default 10 is about the distance between two tissue types' feature means, the
        smallest of 6 / 10 / 14 / 20 at which phenotypes fitted on a 4-site cohort split by
        site (at 6 they still followed the tissue).

    Returns
    -------
    adatas : list of AnnData
        One per slide (``S0000``, ``S0001`` …) with the keys ``tl.extract`` writes:
        ``obsm["spatial"]`` (level-0 pixels), ``obsm["X_focus"]``, ``obsp["adjacency"]``,
        ``obs`` ``region_id``/``focus_score``/``lesion_prob``/``is_focus``, ``uns["slide_id"]``
        and ``uns["region_graph"]`` (label image and thumbnail with ``with_images``); plus the
        hidden ``obs["true_type"]`` and ``uns["simulation"]`` (grade, the latent infiltration
        score and site, kept there and never in the clinical table).
    clinical : pandas.DataFrame
        One row per patient: ``patient_id``, ``slide``, ``grade``, ``age``, ``time``, ``event``
        (and ``site`` with ``sites``).
    """
    if sites is not None and (int(sites) != sites or sites < 2):
        raise ValueError(f"sites must be None or an integer >= 2, got {sites!r}")
    patients = simulate_patients(n_patients, seed=seed, null=null, model=model, sites=sites)
    grade = patients["grade"].to_numpy()
    infiltration = infiltration_z(patients["infiltration"].to_numpy())
    site = shifts = None
    if sites is not None:
        names = sorted(patients["site"].unique())
        site = np.array([names.index(s) for s in patients["site"]])
        shifts = site_stain_shifts(sites, n_features, magnitude=site_shift, seed=seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E6]))
    adatas = []
    for i in range(n_patients):
        adatas.append(
            simulate_slide(
                f"S{i:04d}",
                grade=int(grade[i]),
                infiltration=float(infiltration[i]),
                rng=rng,
                n_regions=n_regions,
                n_features=n_features,
                with_images=with_images,
                stain_shift=None if shifts is None else shifts[site[i]],
                site=None if site is None else str(patients["site"].iloc[i]),
            )
        )
    clinical = pd.DataFrame(
        {
            "patient_id": [f"P{i:04d}" for i in range(n_patients)],
            "slide": [f"S{i:04d}" for i in range(n_patients)],
            "grade": grade.astype(int),
            "age": patients["age"].to_numpy(),
            "time": patients["time"].to_numpy(dtype=float),
            "event": patients["event"].to_numpy(dtype=int),
        }
    )
    if site is not None:
        clinical["site"] = patients["site"].astype(str).to_numpy()
    return adatas, clinical
