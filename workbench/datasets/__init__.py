"""Synthetic H&E cohorts: real pyramidal TIFFs with known lesions, infiltrates and survival.

The default data of the workbench and its test bed. :func:`make_cohort` writes one slide per
patient plus ground truth and a clinical table; :func:`make_slide` writes a single slide.

Slides
------
Tiled JPEG TIFFs, one page per pyramid level (2x steps, 256 px tiles), 0.5 µm/px at level 0,
with an Aperio-style description so OpenSlide reports vendor ``aperio``, the mpp and a 20x
objective. On white glass lie a few tissue islands of pink, fibrous stroma with fibroblasts.
Lesions (QuPath class ``Tumor``) depend on grade:

* grade 1 - one or two small round lesions of glands (lumens lined by orderly, modest,
  pale oval nuclei);
* grade 2 - larger, rougher lesions, fewer glands, bigger and more varied nuclei;
* grade 3 - two large infiltrative lesions with satellite nests, solid sheets of crowded,
  large, dark, pleomorphic nuclei with nucleoli and mitoses.

The nuclear detail that defines grade needs ~0.5-2 µm/px to be seen; at thumbnail scale
(~8 µm/px) a lesion shows only as a denser, more purple area. Around each lesion boundary a
patchy band of lymphocytes (small, round, very dark nuclei) has a density set by the
planted ``infiltration``. Pale eosinophilic necrotic patches with nuclear debris are a
decoy: drawn independently of everything else, they carry no outcome signal.

Slides are drawn tile by tile from a coarse layout (8 µm/px) with nuclei placed by a seeded
hash of a global cell grid, so memory stays bounded at any size (the ``large`` 40960² slide
included) and the same seed gives byte-identical files.

Survival model
--------------
Times are in months. For each patient::

    z  = (infiltration - 0.5) / (0.9 / sqrt(12))           infiltration ~ U(0.05, 0.95)
    eta = log(2.0) * (grade - 2) + log(0.55) * z + 0.15 * (age - 60) / 10
    h(t | x) = (k / lam) * (t / lam) ** (k - 1) * exp(eta)   Weibull, k = 1.3, lam = 80
    T = lam * (E / exp(eta)) ** (1 / k),  E ~ Exp(1)
    C = min(Exp(mean 240), 120);  time = min(T, C);  event = [T <= C]

so each grade step doubles the hazard, one SD more boundary infiltration lowers it by 45 %,
and about 60-70 % of deaths are observed. ``null=True`` sets the grade and infiltration
log-hazard ratios to 0 (survival then owes nothing to the image; age keeps its small
effect). The coefficients actually used are stored in ``cohort.json``; the hidden truth
(infiltration, its z-score, the measured ``infiltration_score`` in immune cells per mm² of
the boundary band, ``necrosis_fraction``, ``linear_predictor``) goes to ``truth.csv``.
:func:`simulate_patients` / :func:`simulate_survival` draw the same tables without pixels.
"""

from __future__ import annotations

from workbench.datasets._cohort import (
    CLINICAL_COLUMNS,
    TRUTH_COLUMNS,
    SyntheticCohort,
    load_cohort,
    make_cohort,
)
from workbench.datasets._montage import montage, thumbnail
from workbench.datasets._slide import MPP, SIZES, SlideTruth, make_slide, slide_truth
from workbench.datasets._survival import (
    HazardModel,
    infiltration_z,
    simulate_patients,
    simulate_survival,
)

__all__ = [
    "CLINICAL_COLUMNS",
    "MPP",
    "SIZES",
    "TRUTH_COLUMNS",
    "HazardModel",
    "SlideTruth",
    "SyntheticCohort",
    "infiltration_z",
    "load_cohort",
    "make_cohort",
    "make_slide",
    "montage",
    "simulate_patients",
    "simulate_survival",
    "slide_truth",
    "thumbnail",
]
