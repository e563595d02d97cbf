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

Grade on the thumbnail or only in the nuclei
--------------------------------------------
By default (``grade_cue="both"``) grade shapes the lesions too, so a thumbnail alone reveals
it (grade 3 = large, rough, many lesions). ``make_cohort(..., grade_cue="detail")`` makes a
task that needs the magnified view: lesion count, size, outline and satellites are drawn
from one distribution whatever the grade (the same seed gives the same lesions at every
grade), every grade grows solid sheets on the same nucleus grid with the same nuclear size
distribution, elongation, darkness and cytoplasm, and grade shows only inside the nuclei:
grade 3 has ragged outlines, prominent nucleoli, coarse clumped chromatin and mitotic
figures, grade 1 smooth nuclei without nucleoli or mitoses. These details are a few pixels
at 0.5 µm/px and average out at >= 4 µm/px (the mean colour of a lesion matches across
grades within a grey level).

Sites
-----
``make_cohort(..., sites=k)`` draws ``k`` sites (:func:`draw_sites`): each stains its slides
with its own H and E colours and strengths and has its own baseline hazard (log-hazards
evenly spread over [-0.6, 0.6]), so site is associated with survival (also when ``null``) and
colour features carry site. Patients are dealt to sites evenly; ``clinical.csv`` gains a
``site`` column. Without ``sites`` the output is what it always was.

Real-tissue mosaics
-------------------
:func:`make_mosaic_cohort` composes slides from the real H&E tiles and tumour patches of the
shared data (tumour-positive slides with a tumour cluster, negatives without), split by
source image into train and test slides; see :mod:`workbench.datasets._mosaic`.
:func:`make_survival_mosaic_cohort` makes every such slide tumour-positive, plants real
lymphocyte tiles inside the tumour (tumour-infiltrating lymphocytes) and draws survival from
a documented hazard on their share; see :mod:`workbench.datasets._survival_mosaic`.

Real biopsy images (EBHI-Seg)
-----------------------------
:func:`ebhi_images` indexes the shared EBHI-Seg colorectal biopsy images and their
gland/tumour masks, with one fixed case-level split (:func:`ebhi_case_split`) that every
trainer and benchmark uses; see :mod:`workbench.datasets._ebhi`. :func:`make_ebhi_cohort`
turns them into a slide-level cohort (one pyramidal slide per case, label adenocarcinoma or
not, tumour annotations as QuPath GeoJSON); see :mod:`workbench.datasets._ebhi_cohort`.

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

Region clouds without pixels
----------------------------
:func:`simulate_region_cohort` skips the slides altogether: per-slide region AnnData (the keys
``tl.extract`` writes, with hidden tissue types and a planted margin-infiltration marker) and a
clinical table drawn from the same hazard model, for marker discovery in tests, notebooks and
``benchmarks/markers.py``; see :mod:`workbench.datasets._region_cohort`.
"""

from __future__ import annotations

from workbench.datasets._click_samples import ClickTrainingSampler
from workbench.datasets._cohort import (
    CLINICAL_COLUMNS,
    TRUTH_COLUMNS,
    SyntheticCohort,
    load_cohort,
    make_cohort,
)
from workbench.datasets._ebhi import (
    EBHI_CLASSES,
    EBHI_SPLITS,
    EbhiImage,
    ebhi_case_split,
    ebhi_images,
)
from workbench.datasets._ebhi_cohort import (
    EBHI_CLINICAL_COLUMNS,
    EBHI_MPP,
    EBHI_TRUTH_COLUMNS,
    EbhiCohort,
    load_ebhi_cohort,
    make_ebhi_cohort,
)
from workbench.datasets._mask_pairs import (
    EBHI_HOLDOUT,
    EVAL_ONLY_DATASETS,
    GLAND_DATASETS,
    NUCLEUS_DATASETS,
    REAL_DATASETS,
    REGION_DATASETS,
    MaskPair,
    benchmark_views,
    cohort_views,
    lesion_view,
    load_mask_pairs,
)
from workbench.datasets._montage import montage, thumbnail
from workbench.datasets._mosaic import (
    MOSAIC_CLINICAL_COLUMNS,
    MOSAIC_TRUTH_COLUMNS,
    MosaicDataError,
    make_mosaic_cohort,
)
from workbench.datasets._region_cohort import simulate_region_cohort
from workbench.datasets._slide import MPP, SIZES, SlideTruth, make_slide, slide_truth
from workbench.datasets._survival import (
    HazardModel,
    draw_sites,
    infiltration_z,
    simulate_patients,
    simulate_survival,
)
from workbench.datasets._survival_mosaic import (
    SURVIVAL_MOSAIC_CLINICAL_COLUMNS,
    SURVIVAL_MOSAIC_TRUTH_COLUMNS,
    TilHazardModel,
    make_survival_mosaic_cohort,
)

__all__ = [
    "EBHI_HOLDOUT",
    "EVAL_ONLY_DATASETS",
    "GLAND_DATASETS",
    "NUCLEUS_DATASETS",
    "REAL_DATASETS",
    "REGION_DATASETS",
    "ClickTrainingSampler",
    "MaskPair",
    "benchmark_views",
    "cohort_views",
    "lesion_view",
    "load_mask_pairs",
    "CLINICAL_COLUMNS",
    "EBHI_CLASSES",
    "EBHI_CLINICAL_COLUMNS",
    "EBHI_MPP",
    "EBHI_TRUTH_COLUMNS",
    "EBHI_SPLITS",
    "MOSAIC_CLINICAL_COLUMNS",
    "MOSAIC_TRUTH_COLUMNS",
    "MPP",
    "SIZES",
    "SURVIVAL_MOSAIC_CLINICAL_COLUMNS",
    "SURVIVAL_MOSAIC_TRUTH_COLUMNS",
    "TRUTH_COLUMNS",
    "EbhiCohort",
    "EbhiImage",
    "HazardModel",
    "MosaicDataError",
    "SlideTruth",
    "SyntheticCohort",
    "TilHazardModel",
    "draw_sites",
    "ebhi_case_split",
    "ebhi_images",
    "infiltration_z",
    "load_cohort",
    "load_ebhi_cohort",
    "make_cohort",
    "make_ebhi_cohort",
    "make_mosaic_cohort",
    "make_survival_mosaic_cohort",
    "make_slide",
    "montage",
    "simulate_patients",
    "simulate_region_cohort",
    "simulate_survival",
    "slide_truth",
    "thumbnail",
]
