"""Synthetic per-slide region AnnData with a planted spatial survival marker.

This is the one place where marker discovery simulates data: the tests and
``benchmarks/markers.py`` both use it, so the hazard model below is written once.

Each slide is a cloud of superpixel regions on a jittered grid over an elliptical piece of
tissue, with a round lesion. Every region has a hidden tissue type:

``tumour``    regions inside the lesion;
``stroma``    everything else by default;
``immune``    an immune infiltrate: a background sprinkle anywhere (random per slide, no
              outcome signal) plus a band at the lesion margin whose density follows the
              patient's latent infiltration score ``s`` (the planted marker);
``necrosis``  a decoy patch inside the lesion whose size is random (no outcome signal);
``adipose``   a decoy sprinkle over the non-lesion tissue, random amount (no outcome signal).

Focused features (``obsm["X_focus"]``) are Gaussian noise plus a type-specific offset, so a
clustering of the features can recover the types. Survival follows a proportional-hazards
model with exponential baseline::

    h(t | grade, s) = h0 * exp(beta_grade * (grade - 2) + beta_infiltration * s)

with independent uniform censoring. ``null=True`` sets ``beta_infiltration = 0``: the slides
are drawn the same way, only the outcome no longer depends on them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from workbench._constants import (
    ADJACENCY,
    LESION_PROB,
    REGION_GRAPH,
    SLIDE_ID,
    SPATIAL,
    X_FOCUS,
)

TISSUE_TYPES = ("stroma", "tumour", "immune", "necrosis", "adipose")
_MPP = 0.5  # level-0 microns per pixel, as in the synthetic image cohort
_THUMB_SCALE = 32  # level-0 pixels per thumbnail pixel


def simulate_survival(
    grade: np.ndarray,
    infiltration: np.ndarray,
    *,
    rng: np.random.Generator,
    null: bool = False,
    beta_grade: float = 0.5,
    beta_infiltration: float = -1.0,
    baseline_hazard: float = 0.05,
    max_follow_up: float = 60.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw survival times and event indicators from the proportional-hazards model above.

    Parameters
    ----------
    grade
        Tumour grade per patient (1-3).
    infiltration
        Latent infiltration score per patient (standard normal).
    rng
        Random generator.
    null
        Remove the infiltration effect (grade still acts).
    beta_grade, beta_infiltration
        Log hazard ratios per grade step and per unit of ``infiltration``; a negative
        ``beta_infiltration`` means infiltrated tumours do better.
    baseline_hazard
        Events per month at grade 2 and ``infiltration = 0``.
    max_follow_up
        Censoring times are uniform on ``(0, max_follow_up)`` months.

    Returns
    -------
    ``(time, event)``: follow-up in months (float) and 1/0 event indicators (int).
    """
    grade = np.asarray(grade, dtype=float)
    infiltration = np.asarray(infiltration, dtype=float)
    b_inf = 0.0 if null else beta_infiltration
    hazard = baseline_hazard * np.exp(beta_grade * (grade - 2.0) + b_inf * infiltration)
    t_event = rng.exponential(1.0 / hazard)
    t_censor = rng.uniform(0.0, max_follow_up, size=len(hazard))
    time = np.minimum(t_event, t_censor)
    event = (t_event <= t_censor).astype(int)
    return np.maximum(time, 1e-3), event


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
    # Margin infiltrate (planted): density follows the latent score.
    p_margin = 1.0 / (1.0 + np.exp(-(-0.5 + 1.5 * infiltration)))
    margin = (d_border_um <= 150.0) & ~lesion
    types[margin & (rng.random(n) < p_margin)] = "immune"
    # Background infiltrate: random amount anywhere in the stroma, no signal.
    p_bg = rng.uniform(0.0, 0.1)
    types[(types == "stroma") & (rng.random(n) < p_bg)] = "immune"
    # Decoy adipose tissue: random amount over the non-lesion tissue, no signal.
    p_fat = rng.uniform(0.0, 0.4)
    types[(types == "stroma") & (rng.random(n) < p_fat)] = "adipose"
    # Decoy necrosis: a patch in the lesion centre of random size, no signal.
    frac_nec = rng.uniform(0.0, 0.5)
    types[lesion & (d_centre <= np.sqrt(frac_nec) * r_les * 0.8)] = "necrosis"

    means = _type_means(n_features, feature_seed)
    codes = np.array([TISSUE_TYPES.index(t) for t in types])
    feats = means[codes] + rng.normal(size=(n, n_features))
    feats[codes == 1] += 0.3 * (grade - 2) * means[-1]
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
    adata = AnnData(
        X=np.zeros((n, 0), dtype=np.float32),
        obs=obs,
        obsm={SPATIAL: xy.astype(np.float64), X_FOCUS: feats.astype(np.float32)},
        obsp={ADJACENCY: adjacency},
        uns={
            SLIDE_ID: slide_id,
            REGION_GRAPH: graph,
            "explain": {"probabilities": [0.0, 0.0, 0.0]},
            "simulation": {"grade": int(grade), "infiltration": float(infiltration)},
        },
    )
    return adata


def simulate_region_cohort(
    n_patients: int = 100,
    *,
    null: bool = False,
    seed: int = 0,
    n_regions: int = 500,
    n_features: int = 32,
    with_images: bool = False,
    beta_infiltration: float = -1.0,
    beta_grade: float = 0.5,
) -> tuple[list[AnnData], pd.DataFrame]:
    """A cohort of one-slide patients: region AnnData per slide plus a clinical table.

    Parameters
    ----------
    n_patients
        Number of patients (one slide each).
    null
        Survival does not depend on the slides (grade still acts).
    seed
        Seed of everything drawn here.
    n_regions
        Approximate regions per slide.
    n_features
        Width of ``obsm["X_focus"]``.
    with_images
        Build label images and thumbnails too (needed by ``pl.marker_map`` only).
    beta_infiltration, beta_grade
        Log hazard ratios (see :func:`simulate_survival`).

    Returns
    -------
    ``(adatas, clinical)``: the slides, and a table with columns ``patient_id``, ``slide``,
    ``grade``, ``age``, ``time``, ``event``. The latent infiltration score is kept in each
    slide's ``uns["simulation"]``, never in the clinical table.
    """
    rng = np.random.default_rng(seed)
    grade = rng.choice([1, 2, 3], size=n_patients, p=[0.3, 0.4, 0.3])
    infiltration = rng.normal(size=n_patients)
    age = np.round(rng.normal(62, 10, size=n_patients), 1)
    time, event = simulate_survival(
        grade,
        infiltration,
        rng=rng,
        null=null,
        beta_grade=beta_grade,
        beta_infiltration=beta_infiltration,
    )
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
            )
        )
    clinical = pd.DataFrame(
        {
            "patient_id": [f"P{i:04d}" for i in range(n_patients)],
            "slide": [f"S{i:04d}" for i in range(n_patients)],
            "grade": grade.astype(int),
            "age": age,
            "time": np.round(time, 3),
            "event": event.astype(int),
        }
    )
    return adatas, clinical
