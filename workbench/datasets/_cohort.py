"""A synthetic cohort on disk: slides, ground truth and a clinical table with planted survival.

Layout of a cohort folder (``root``)::

    cohort.json                      parameters, hazard coefficients, file layout
    clinical.csv                     patient_id, slide, grade, age, time, event
    truth.csv                        hidden truth: infiltration, infiltration_score,
                                     necrosis_fraction, linear_predictor, ...
    slides/S000.tif                  pyramidal tiled JPEG TIFF (Aperio-style header)
    masks/S000_lesion.png            lesion mask, one pixel per 16 x 16 level-0 pixels
    annotations/S000_lesion.geojson  lesion polygons ("Tumor"), level-0 pixel coordinates

``slide`` in the CSVs is the TIFF's path relative to ``root``. Every file is written
atomically; a second :func:`make_cohort` with the same arguments skips slides that are
already complete (resume) and redraws any that were deleted.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from workbench._constants import LESION_CLASS, LESION_COLOR
from workbench._errors import WorkbenchError
from workbench.datasets._layout import LAYOUT_DOWNSAMPLE
from workbench.datasets._slide import MPP, SlideTruth, make_slide, resolve_size, slide_truth
from workbench.datasets._survival import (
    SITE_LOG_HR_SPREAD,
    HazardModel,
    draw_sites,
    infiltration_z,
    simulate_patients,
)
from workbench.io._clinical import read_clinical
from workbench.io._cohort import Cohort

#: Bumped whenever the same arguments would draw different pixels or tables.
GENERATOR_VERSION = 1
#: Version of the ``grade_cue="detail"`` nuclei (recorded only in detail cohorts, so a
#: detail cohort drawn with older looks is not resumed with new ones).
DETAIL_CUE_VERSION = 2

CLINICAL_COLUMNS = ["patient_id", "slide", "grade", "age", "time", "event"]
TRUTH_COLUMNS = [
    "patient_id",
    "slide_id",
    "slide",
    "grade",
    "age",
    "infiltration",
    "infiltration_z",
    "infiltration_score",
    "necrosis_fraction",
    "lesion_fraction",
    "tissue_fraction",
    "linear_predictor",
    "time",
    "event",
    "slide_seed",
]


class SyntheticCohort(Cohort):
    """A synthetic cohort read from (or just written to) its folder: a :class:`~workbench.io.Cohort`
    that also carries the truth it planted.

    Parameters
    ----------
    root
        The cohort folder.
    clinical
        What a user would receive (``clinical.csv``): ``patient_id``, ``slide`` (path relative
        to ``root``), ``grade``, ``age``, ``time`` (months), ``event`` (1 = death). Validated
        like any clinical table; in :attr:`clinical` the ``slide`` column holds slide ids.
    truth
        What was planted, one row per slide (see ``TRUTH_COLUMNS``).
    params
        The contents of ``cohort.json``.

    Attributes
    ----------
    truth, params, root
        As given. The lesion annotations are the folder's ``annotations/`` GeoJSON, and
        :meth:`lesion_mask` returns the ground-truth mask PNG.
    """

    def __init__(
        self, root: str | os.PathLike, clinical: pd.DataFrame, truth: pd.DataFrame, params: dict
    ) -> None:
        root = Path(root)
        slides = {
            str(sid): root / str(rel)
            for sid, rel in zip(truth["slide_id"], truth["slide"], strict=True)
        }
        annotations = root / "annotations"
        super().__init__(
            slides,
            clinical,
            annotations_dir=annotations if annotations.is_dir() else None,
            root=root,
        )
        self.truth = truth.reset_index(drop=True)
        self.params = params

    def __repr__(self) -> str:
        p = self.params
        w, h = p["dimensions"]
        return (
            f"SyntheticCohort({len(self)} slides of {w}x{h} px, seed={p['seed']}, "
            f"null={p['null']}, root={str(self.root)!r})"
        )

    def _subset_hook(self, keys: list[str]) -> None:
        order = {k: i for i, k in enumerate(keys)}
        rows = self.truth[self.truth["slide_id"].astype(str).isin(order)]
        idx = np.argsort([order[str(s)] for s in rows["slide_id"]])
        self.truth = rows.iloc[idx].reset_index(drop=True)

    @property
    def slide_paths(self) -> list[Path]:
        """Absolute paths of the slide files, in table order."""
        return [self.slide_path(s) for s in self.slide_ids]

    @property
    def mask_downsample(self) -> int:
        """Level-0 pixels per pixel of the lesion mask PNGs."""
        return int(self.params["mask_downsample"])

    def lesion_geojson(self, slide: str | os.PathLike) -> Path:
        """Path of a slide's lesion GeoJSON (QuPath ``Tumor`` polygons, level-0 pixels).

        Parameters
        ----------
        slide
            A slide id, file name or path of the cohort.

        Returns
        -------
        pathlib.Path
            The ``.geojson`` file.
        """
        return self.root / _geojson_rel(self._key(slide))

    def lesion_annotations(self, slide: str | os.PathLike) -> list:
        """The lesion polygons of a slide as :class:`workbench.io.Annotation` objects.

        Parameters
        ----------
        slide
            A slide id, file name or path of the cohort.

        Returns
        -------
        list of workbench.io.Annotation
            The planted lesions, one polygon each.
        """
        from workbench.io import read_geojson

        return read_geojson(self.lesion_geojson(slide))

    def lesion_mask(
        self, slide: str | os.PathLike, downsample: float | None = None
    ) -> tuple[np.ndarray, float]:
        """A slide's ground-truth lesion mask.

        The stored PNG at its own downsample, unless another ``downsample`` is asked for,
        which is rasterised from the GeoJSON.

        Parameters
        ----------
        slide
            A slide id, file name or path of the cohort.
        downsample
            Level-0 pixels per mask pixel; ``None`` for the stored mask's.

        Returns
        -------
        mask : numpy.ndarray
            ``(rows, cols)`` bool, True inside a lesion.
        downsample : float
            Level-0 pixels per mask pixel.
        """
        from PIL import Image

        if downsample is not None and float(downsample) != self.mask_downsample:
            return super().lesion_mask(slide, downsample)
        with Image.open(self.root / _mask_rel(self._key(slide))) as im:
            mask = np.asarray(im.convert("L")) > 127
        return mask, self.mask_downsample


def _slide_rel(sid: str) -> str:
    return f"slides/{sid}.tif"


def _mask_rel(sid: str) -> str:
    return f"masks/{sid}_lesion.png"


def _geojson_rel(sid: str) -> str:
    return f"annotations/{sid}_lesion.geojson"


def write_lesion_truth(
    root: Path, sid: str, mask: np.ndarray, downsample: int, *, id_format: str, **outline
) -> None:
    """A slide's lesion truth, both ways: the mask as PNG (``masks/<sid>_lesion.png``, one
    pixel per ``downsample`` level-0 pixels) and its outlines as QuPath GeoJSON in level-0
    pixels (``annotations/<sid>_lesion.geojson``). Feature ids are uuid5 of ``id_format``
    filled with ``sid`` and the rank ``i`` (not random), so a redrawn cohort is identical; ``outline`` goes to
    :func:`~workbench.io.mask_to_annotations`. Both writes are atomic."""
    from PIL import Image

    from workbench.io import atomic_write_bytes, mask_to_annotations, write_geojson

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    atomic_write_bytes(root / _mask_rel(sid), buf.getvalue())
    annotations = mask_to_annotations(
        mask,
        classification=LESION_CLASS,
        color=LESION_COLOR,
        scale_xy=(downsample, downsample),
        offset_xy=(0.0, 0.0),
        **outline,
    )
    for i, ann in enumerate(annotations):
        ann.id = str(uuid.uuid5(uuid.NAMESPACE_URL, id_format.format(sid=sid, i=i)))
    write_geojson(root / _geojson_rel(sid), annotations)


def read_cohort_params(meta: Path) -> dict | None:
    """The arguments an earlier call recorded in ``cohort.json`` (None when there is none),
    so that a generator can refuse to mix two cohorts in one folder."""
    if not meta.exists():
        return None
    try:
        return json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkbenchError(
            f"{str(meta)!r} is not readable JSON ({exc}); delete it or choose another folder"
        ) from exc


def _write_masks(root: Path, sid: str, truth: SlideTruth) -> None:
    write_lesion_truth(
        root,
        sid,
        truth.lesion_mask,
        truth.mask_downsample,
        id_format="workbench-synthetic/{sid}/lesion/{i}",
    )


def _params(
    n_patients: int, size, seed: int, null: bool, grade_cue: str = "both", sites: int | None = None
) -> dict:
    width, height = resolve_size(size)
    model = HazardModel()
    used = model.null() if null else model
    params = {
        "generator": "workbench.datasets",
        "generator_version": GENERATOR_VERSION,
        "n_patients": int(n_patients),
        "size": size if isinstance(size, str) else [width, height],
        "dimensions": [width, height],
        "mpp": MPP,
        "seed": int(seed),
        "null": bool(null),
        "mask_downsample": LAYOUT_DOWNSAMPLE,
        "hazard_model": {
            "form": "Weibull proportional hazards: h(t|x) = (k/lam) (t/lam)^(k-1) exp(eta)",
            "eta": "log_hr_grade*(grade-2) + log_hr_infiltration*infiltration_z "
            "+ log_hr_age*(age-60)/10",
            "infiltration_z": "(infiltration - 0.5) / (0.9 / sqrt(12)); infiltration ~ U(0.05, 0.95)",
            "censoring": "min(Exponential(censor_mean), admin_time)",
            "time_unit": "months",
            "coefficients": used.to_dict(),
            "planted_coefficients": model.to_dict(),
            "decoy": "necrosis_fraction is drawn independently and has no effect",
        },
        "files": {
            "clinical": "clinical.csv",
            "truth": "truth.csv",
            "slides": "slides/{slide_id}.tif",
            "lesion_masks": "masks/{slide_id}_lesion.png",
            "lesion_geojson": "annotations/{slide_id}_lesion.geojson",
        },
    }
    # New options are recorded only when used, so a default cohort.json stays as it was.
    if grade_cue != "both":
        params["grade_cue"] = grade_cue
        params["grade_cue_version"] = DETAIL_CUE_VERSION
        params["grade_cue_note"] = (
            "lesion count, size and outline are drawn independently of grade; grade shows "
            "only inside the nuclei (ragged outlines, open chromatin with coarse clumps, "
            "large nucleoli, mitoses; same nuclear size and mean colour), visible at "
            "<= 1 um/px"
        )
    if sites is not None:
        params["sites"] = int(sites)
        params["site_model"] = {
            "stain": "per site: H and E optical-density colours and strengths (stain_vectors "
            "rows H, E; stain_scale h, e) used for all of its slides",
            "baseline_hazard": "eta += log_hazard of the patient's site (also when null)",
            "log_hazard_spread": SITE_LOG_HR_SPREAD,
            "assignment": "balanced: sites cycled over patients, then shuffled",
            "sites": draw_sites(int(sites), seed=seed),
        }
        params["hazard_model"]["eta"] += " + site_log_hazard"
    return params


def _same_params(old: dict, new: dict) -> bool:
    keys = ("generator_version", "n_patients", "dimensions", "seed", "null")
    same = all(old.get(k) == new.get(k) for k in keys)
    return (
        same
        and old.get("grade_cue", "both") == new.get("grade_cue", "both")
        and old.get("grade_cue_version") == new.get("grade_cue_version")
        and old.get("sites") == new.get("sites")
    )


def make_cohort(
    root: str | os.PathLike,
    *,
    n_patients: int = 12,
    size: str | tuple[int, int] = "tiny",
    seed: int = 0,
    null: bool = False,
    grade_cue: str = "both",
    sites: int | None = None,
    progress: bool = True,
) -> SyntheticCohort:
    """Write (or finish writing) a synthetic cohort and return it.

    One slide per patient (``P000`` ↔ ``S000``). Grades are balanced (1, 2, 3 cycled, then
    shuffled); planted infiltration is uniform and independent of grade; survival follows
    the hazard model documented in :mod:`workbench.datasets` (``null=True`` removes the
    grade and infiltration effects). Files already written by an earlier call with the same
    arguments are kept (resume); a deleted slide is drawn again, identical to the first time.

    Parameters
    ----------
    root
        The cohort folder (created if needed). Suggested: ``data/generated/<name>``.
    n_patients
        Number of patients (= slides).
    size
        ``"tiny"``, ``"demo"``, ``"large"`` or ``(width, height)`` (see ``SIZES``).
    seed
        Seed of the whole cohort.
    null
        Remove the planted survival effects.
    grade_cue
        ``"both"`` (default): grade shows in lesion size, count and outline (visible on the
        thumbnail) and in the nuclei. ``"detail"``: lesions are drawn independently of
        grade, which shows only in the nuclei at <= 1 µm/px (a task the thumbnail alone
        cannot solve); see :mod:`workbench.datasets`.
    sites
        ``None`` (default): one site, today's slides and tables. ``k``: every patient comes
        from one of ``k`` sites ``"A"``, ``"B"`` … (balanced), each with its own stain
        (H and E colours and strengths, so its slides share a tint) and its own baseline
        hazard (so site is associated with survival, also when ``null``); ``clinical.csv``
        gains a ``site`` column, ``truth.csv`` ``site`` and ``site_log_hazard``, and
        ``cohort.json`` records every site's stain and hazard under ``site_model``.
    progress
        Show a tqdm bar over slides.

    Returns
    -------
    SyntheticCohort
        With ``clinical``, ``truth`` and helpers to find slides, masks and GeoJSON.
    """
    from tqdm.auto import tqdm

    from workbench.datasets._render import GRADE_CUES
    from workbench.io import atomic_write_text, clean_partial

    if grade_cue not in GRADE_CUES:
        raise ValueError(f"grade_cue must be one of {GRADE_CUES}, got {grade_cue!r}")
    if sites is not None and (
        isinstance(sites, bool) or not isinstance(sites, int | np.integer) or not 1 <= sites <= 26
    ):
        raise ValueError(f"sites must be None or an integer from 1 to 26, got {sites!r}")
    root = Path(root)
    params = _params(n_patients, size, seed, null, grade_cue, sites)
    meta = root / "cohort.json"
    old = read_cohort_params(meta)
    if old is not None:
        if not _same_params(old, params):
            raise WorkbenchError(
                f"{str(root)!r} holds a cohort made with other arguments "
                f"(n_patients={old.get('n_patients')}, size={old.get('size')}, "
                f"seed={old.get('seed')}, null={old.get('null')}, "
                f"grade_cue={old.get('grade_cue', 'both')!r} "
                f"(version {old.get('grade_cue_version')}), sites={old.get('sites')}); "
                "choose another folder or delete this one"
            )
    root.mkdir(parents=True, exist_ok=True)
    clean_partial(root, recursive=True)  # temporary files of a killed earlier call
    atomic_write_text(meta, json.dumps(params, indent=2))

    patients = simulate_patients(n_patients, seed=seed, null=null, sites=sites)
    stains = {}
    if sites is not None:
        stains = {
            d["site"]: {"vectors": d["stain_vectors"], "scale": d["stain_scale"]}
            for d in params["site_model"]["sites"]
        }
    rows = []
    bar = tqdm(patients.itertuples(index=False), total=len(patients), desc="cohort",
               unit="slide", disable=not progress)  # fmt: skip
    for p in bar:
        sid = p.slide_id
        slide = root / _slide_rel(sid)
        kwargs = {
            "size": size,
            "grade": int(p.grade),
            "infiltration": float(p.infiltration),
            "seed": int(p.slide_seed),
        }
        if grade_cue != "both":
            kwargs["grade_cue"] = grade_cue
        if sites is not None:
            kwargs["stain"] = stains[p.site]
        if slide.exists():
            truth = slide_truth(slide, **kwargs)
        else:
            # a tile bar too when one slide takes minutes
            truth = make_slide(
                slide, **kwargs, progress=progress and max(params["dimensions"]) >= 16384
            )
        if not (root / _mask_rel(sid)).exists() or not (root / _geojson_rel(sid)).exists():
            _write_masks(root, sid, truth)
        rows.append(
            {
                "slide_id": sid,
                "slide": _slide_rel(sid),
                "infiltration_score": round(truth.infiltration_score, 3),
                "necrosis_fraction": round(truth.necrosis_fraction, 5),
                "lesion_fraction": round(truth.lesion_fraction, 5),
                "tissue_fraction": round(truth.tissue_fraction, 5),
            }
        )
    measured = pd.DataFrame(rows)
    table = patients.merge(measured, on="slide_id", how="left")
    table["infiltration_z"] = np.round(infiltration_z(table["infiltration"]), 5)
    table["linear_predictor"] = np.round(table["linear_predictor"], 5)
    clinical_cols, truth_cols = list(CLINICAL_COLUMNS), list(TRUTH_COLUMNS)
    if sites is not None:
        clinical_cols.append("site")
        truth_cols += ["site", "site_log_hazard"]
    clinical = table[clinical_cols].copy()
    truth = table[truth_cols].copy()
    atomic_write_text(root / "clinical.csv", clinical.to_csv(index=False))
    atomic_write_text(root / "truth.csv", truth.to_csv(index=False))
    return SyntheticCohort(root=root, clinical=clinical, truth=truth, params=params)


def load_cohort(root: str | os.PathLike) -> SyntheticCohort:
    """Read a cohort written by :func:`make_cohort`.

    Parameters
    ----------
    root
        The cohort folder (holding ``cohort.json``, ``clinical.csv``, ``truth.csv`` and the
        slides).

    Returns
    -------
    SyntheticCohort
        The slides, the clinical table and the planted truth.

    Raises
    ------
    WorkbenchError
        When ``cohort.json``, ``clinical.csv`` or ``truth.csv`` is missing (an unfinished
        cohort: rerun :func:`make_cohort` with the same arguments to complete it).
    """
    root = Path(root)
    missing = [n for n in ("cohort.json", "clinical.csv", "truth.csv") if not (root / n).exists()]
    if missing:
        raise WorkbenchError(
            f"{str(root)!r} is not a complete synthetic cohort (missing {', '.join(missing)}); "
            "run workbench.datasets.make_cohort there with the same arguments to finish it"
        )
    params = json.loads((root / "cohort.json").read_text())
    ids = ("patient_id", "slide_id", "slide")
    clinical = read_clinical(root / "clinical.csv", id_columns=ids)
    truth = read_clinical(root / "truth.csv", id_columns=ids)
    return SyntheticCohort(root=root, clinical=clinical, truth=truth, params=params)
