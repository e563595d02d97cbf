"""A real-tissue survival cohort: mosaic slides whose survival follows the lymphocytes inside the tumour.

Every slide is a tumour-positive real-tissue mosaic (:mod:`workbench.datasets._mosaic`: real
H&E pieces from the shared tiles and masks, split by source image into a train and a test
side, so no source tile is shared). On top of that recipe:

1. **Tumour-infiltrating lymphocytes (TILs).** Each patient draws a TIL share
   ``til ~ U(0, 0.5)``; that share of the tumour cluster's cells (rounded) is replaced by
   real ``lymphocytes`` pieces of the slide's side, chosen at random inside the cluster. The
   share the slide actually shows, ``til_share = til_cells / (tumour_cells + til_cells)``,
   is what the hazard reads, so the planted marker is visible in the pixels as drawn.
2. **A decoy.** The ordinary mosaic compartments already hold ``lymphocytes`` outside the
   tumour (about 12 % of compartments, drawn independently of ``til``): lymphocytes that do
   *not* carry the outcome. Their share of the tissue cells is recorded as
   ``stromal_lymphocyte_share``.
3. **Survival** (months; as in :mod:`workbench.datasets._survival`)::

       z = (til_share - 0.25) / (0.5 / sqrt(12))
       eta = log_hr_til * z + log_hr_age * (age - 60) / 10
       T = scale * (E / exp(eta)) ** (1 / shape),  E ~ Exp(1)
       C = min(Exp(mean censor_mean), admin_time);  time = min(T, C);  event = [T <= C]

   with ``log_hr_til = log(0.45)`` per SD (more TILs, longer survival, as tumour-infiltrating
   lymphocytes are in colorectal and breast cancer), ``log_hr_age = 0.15`` per decade, Weibull
   shape 1.3 and scale 80. ``null=True`` sets ``log_hr_til = 0``: nothing visible predicts
   survival (age keeps its effect).

``clinical.csv`` holds ``patient_id``, ``slide``, ``age``, ``time``, ``event``, ``split``;
``truth.csv`` adds ``til``, ``til_share``, ``til_z``, ``til_cells``, ``tumour_cells``,
``stromal_lymphocyte_share``, ``linear_predictor`` and the mosaic's own columns. Train on the
``train`` side and test on the ``test`` side to measure across source images.

What it cannot show: the same few lymphocyte and tumour source tiles recur in many slides (1-4
per class and side), so a model may learn those tiles rather than lymphocytes in general.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from workbench._errors import MosaicDataError, WorkbenchError

#: Range of the drawn TIL share of the tumour cluster.
TIL_RANGE = (0.0, 0.5)
#: Bumped whenever the same arguments would compose different slides or tables.
SURVIVAL_MOSAIC_VERSION = 1

SURVIVAL_MOSAIC_CLINICAL_COLUMNS = ["patient_id", "slide", "age", "time", "event", "split"]
SURVIVAL_MOSAIC_TRUTH_COLUMNS = [
    "patient_id",
    "slide_id",
    "slide",
    "split",
    "age",
    "til",
    "til_share",
    "til_z",
    "til_cells",
    "tumour_cells",
    "stromal_lymphocyte_share",
    "linear_predictor",
    "time",
    "event",
    "lesion_fraction",
    "tissue_fraction",
    "groups",
    "slide_seed",
]


@dataclass(frozen=True)
class TilHazardModel:
    """Coefficients of the TIL survival model (times in months).

    Parameters
    ----------
    log_hr_til
        Log hazard ratio per standard deviation of the TIL share (protective: negative).
    log_hr_age
        Log hazard ratio per decade of age above 60.
    shape, scale
        Weibull baseline shape and scale (months).
    censor_mean
        Mean of the exponential (loss to follow-up) censoring time.
    admin_time
        Administrative censoring: follow-up ends here.
    """

    log_hr_til: float = math.log(0.45)
    log_hr_age: float = 0.15
    shape: float = 1.3
    scale: float = 80.0
    censor_mean: float = 240.0
    admin_time: float = 120.0


def til_z(share) -> np.ndarray:
    """Standardise TIL shares with the mean and SD of the uniform law on :data:`TIL_RANGE`.

    Parameters
    ----------
    share
        TIL share(s) of the tumour cluster.

    Returns
    -------
    numpy.ndarray
        ``(share - mean) / sd``.
    """
    lo, hi = TIL_RANGE
    return (np.asarray(share, dtype=float) - (lo + hi) / 2) / ((hi - lo) / math.sqrt(12))


def infiltrate(plan, pieces: list, til: float, seed: int):
    """Replace a share ``til`` of the tumour cluster's cells by lymphocyte pieces.

    Parameters
    ----------
    plan
        A positive :class:`~workbench.datasets._mosaic.MosaicPlan`.
    pieces
        The side's pieces the plan indexes (they must include ``lymphocytes``).
    til
        Share of the tumour cells to turn into lymphocyte cells (0-1).
    seed
        Seeds the choice of cells, pieces and crop offsets.

    Returns
    -------
    (MosaicPlan, int)
        A new plan and the number of cells turned into lymphocytes.
    """
    from workbench.datasets._mosaic import PIECE_PX

    lymph = [i for i, p in enumerate(pieces) if p.cls == "lymphocytes"]
    if not lymph:
        raise MosaicDataError("no lymphocyte pieces on this side of the split")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7111]))
    cells = np.argwhere(plan.cls == "tumour")
    n = int(round(float(til) * len(cells)))
    cls, piece, offset = plan.cls.copy(), plan.piece.copy(), plan.offset.copy()
    for r, c in cells[rng.permutation(len(cells))[:n]]:
        i = int(lymph[int(rng.integers(len(lymph)))])
        h, w = pieces[i].rgb.shape[:2]
        cls[r, c] = "lymphocytes"
        piece[r, c] = i
        offset[r, c] = (int(rng.integers(w - PIECE_PX + 1)), int(rng.integers(h - PIECE_PX + 1)))
    return replace(plan, cls=cls, piece=piece, offset=offset), n


def _survival(eta: np.ndarray, model: TilHazardModel, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7112]))
    n = len(eta)
    event_time = model.scale * (rng.exponential(size=n) / np.exp(eta)) ** (1 / model.shape)
    censor = np.minimum(rng.exponential(model.censor_mean, size=n), model.admin_time)
    time = np.maximum(np.minimum(event_time, censor), 0.1)
    return np.round(time, 2), (event_time <= censor).astype(int)


def make_survival_mosaic_cohort(
    root: str | os.PathLike,
    *,
    n_train: int = 60,
    n_test: int = 60,
    size: str | tuple[int, int] = (2048, 1536),
    seed: int = 0,
    null: bool = False,
    model: TilHazardModel | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
):
    """Compose (or finish composing) a real-tissue mosaic cohort with TIL-driven survival.

    See :mod:`workbench.datasets._survival_mosaic` for the recipe and the hazard model. Slides
    ``S000`` … (the first ``n_train`` from the train pieces, the rest from the test pieces)
    are pyramidal JPEG TIFFs at 0.5 µm/px with lesion masks and GeoJSON like
    :func:`make_mosaic_cohort`. A second call with the same arguments keeps finished slides.

    Parameters
    ----------
    root
        The cohort folder (created if needed).
    n_train, n_test
        Slides (= patients) composed from the train and from the test pieces.
    size
        ``(width, height)`` in level-0 pixels, or a name of ``SIZES``.
    seed
        Seed of the split, the layouts, the TIL shares, ages and survival.
    null
        No TIL effect on survival (``log_hr_til = 0``).
    model
        Hazard coefficients; :class:`TilHazardModel` defaults when ``None``.
    data_dir
        The shared real data folder; default ``$WORKBENCH_REAL_DATA`` or ``../shared/data``.
    progress
        Show a tqdm bar over slides.

    Returns
    -------
    SyntheticCohort
        A :class:`~workbench.io.Cohort` with ``truth`` and ``params`` (survival columns
        ``time`` and ``event``).

    Raises
    ------
    MosaicDataError
        The real data are not there, or a side lacks tumour, stroma or lymphocyte pieces.
    WorkbenchError
        ``root`` holds a cohort made with other arguments.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from workbench.datasets._cohort import (
        SyntheticCohort,
        _geojson_rel,
        _mask_rel,
        _slide_rel,
        _write_masks,
        read_cohort_params,
    )
    from workbench.datasets._mosaic import (
        _MaskTruth,
        _params,
        _resolve_data_dir,
        _write_slide,
        load_material,
        plan_slide,
        split_material,
    )
    from workbench.datasets._slide import resolve_size
    from workbench.io import atomic_write_text

    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got {n_train}, {n_test}")
    model = model or TilHazardModel()
    if null:
        model = replace(model, log_hr_til=0.0)
    width, height = resolve_size(size)
    data = _resolve_data_dir(data_dir)
    pieces, transforms = load_material(data)
    split = split_material(pieces, seed=seed)
    for side, n in (("train", n_train), ("test", n_test)):
        have = {p.cls for p in split[side]}
        if n and not {"tumour", "stroma", "lymphocytes"} <= have:
            raise MosaicDataError(
                f"the {side} split has no tumour, stroma or lymphocyte pieces (it has "
                f"{sorted(have)}); the real data hold too few source images to split"
            )
    params = _params(n_train, n_test, size, seed, 0.5, data, transforms, split)
    params.update(
        {
            "generator": "workbench.datasets.make_survival_mosaic_cohort",
            "generator_version": SURVIVAL_MOSAIC_VERSION,
            "kind": "survival_mosaic",
            "null": bool(null),
            "positive_fraction": 1.0,
            "label": None,
            "survival_model": {
                **asdict(model),
                "til_range": list(TIL_RANGE),
                "eta": "log_hr_til * til_z + log_hr_age * (age - 60) / 10",
                "til_z": "(til_share - 0.25) / (0.5 / sqrt(12)); til_share = til_cells / "
                "(tumour_cells + til_cells) as composed",
                "decoy": "lymphocyte compartments outside the tumour (no effect)",
            },
        }
    )
    root = Path(root)
    meta = root / "cohort.json"
    old = read_cohort_params(meta)
    keys = ("generator_version", "kind", "n_train", "n_test", "dimensions", "seed", "null",
            "split", "survival_model")  # fmt: skip
    if old is not None and not all(old.get(k) == params.get(k) for k in keys):
        raise WorkbenchError(
            f"{str(root)!r} holds a cohort made with other arguments or material "
            f"(n_train={old.get('n_train')}, n_test={old.get('n_test')}, "
            f"seed={old.get('seed')}, null={old.get('null')}); choose another folder or "
            "delete this one"
        )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta, json.dumps(params, indent=2, default=float))

    n = n_train + n_test
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7110]))
    til = rng.uniform(*TIL_RANGE, size=n)
    age = np.clip(np.round(rng.normal(62, 10, size=n)), 30, 90).astype(int)
    slide_seed = rng.integers(0, 2**31 - 1, size=n)
    width_id = max(3, len(str(n - 1)))
    rows = []
    bar = tqdm(range(n), desc="survival mosaic", unit="slide", disable=not progress)
    for i in bar:
        side = "train" if i < n_train else "test"
        sid = f"S{i:0{width_id}d}"
        pool = split[side]
        plan = plan_slide(width, height, positive=True, pieces=pool, seed=int(slide_seed[i]))
        plan, n_til = infiltrate(plan, pool, float(til[i]), int(slide_seed[i]))
        slide, mask_png = root / _slide_rel(sid), root / _mask_rel(sid)
        if slide.exists() and mask_png.exists() and (root / _geojson_rel(sid)).exists():
            with Image.open(mask_png) as im:
                lesion = np.asarray(im.convert("L")) > 127
        else:
            lesion = _write_slide(slide, plan, pool)
            _write_masks(root, sid, _MaskTruth(lesion))
        tissue = plan.tissue_sdf > 0
        tumour = int(np.sum(plan.cls == "tumour"))
        stromal = int(np.sum(plan.cls == "lymphocytes")) - n_til
        rows.append(
            {
                "patient_id": f"P{i:0{width_id}d}",
                "slide_id": sid,
                "slide": _slide_rel(sid),
                "split": side,
                "age": int(age[i]),
                "til": round(float(til[i]), 5),
                "til_share": round(n_til / max(tumour + n_til, 1), 5),
                "til_cells": n_til,
                "tumour_cells": tumour,
                "stromal_lymphocyte_share": round(stromal / max(int(plan.used.sum()), 1), 5),
                "lesion_fraction": round(float(lesion.sum() / max(tissue.sum(), 1)), 5),
                "tissue_fraction": round(float(tissue.mean()), 5),
                "groups": ";".join(sorted({pool[int(k)].group for k in plan.piece[plan.used]})),
                "slide_seed": int(slide_seed[i]),
            }
        )
    df = pd.DataFrame(rows)
    df["til_z"] = np.round(til_z(df["til_share"]), 5)
    eta = model.log_hr_til * til_z(df["til_share"]) + model.log_hr_age * (df["age"] - 60) / 10
    df["linear_predictor"] = np.round(eta, 5)
    df["time"], df["event"] = _survival(np.asarray(eta, float), model, seed)
    clinical = df[SURVIVAL_MOSAIC_CLINICAL_COLUMNS].copy()
    truth = df[SURVIVAL_MOSAIC_TRUTH_COLUMNS].copy()
    atomic_write_text(root / "clinical.csv", clinical.to_csv(index=False))
    atomic_write_text(root / "truth.csv", truth.to_csv(index=False))
    return SyntheticCohort(root=root, clinical=clinical, truth=truth, params=params)
