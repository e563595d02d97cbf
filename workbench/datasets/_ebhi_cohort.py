"""A real slide-level biopsy cohort from EBHI-Seg: one pyramidal slide per case.

EBHI-Seg gives 224 x 224 px camera images of colorectal endoscopic biopsies with masks, each
named after its case (see :mod:`workbench.datasets._ebhi`). :func:`make_ebhi_cohort` turns
them into what a user of the workbench has: a folder of slides (one per case = patient), a
clinical table with a slide-level label, and QuPath annotations of the tumour.

How a slide is laid out
-----------------------
* Every image of the case is one tissue fragment. The fragments are laid on a grid of
  ``ceil(sqrt(n))`` columns in a seeded order (by case), each shifted by a few pixels within
  its cell, separated by at least ``gap_px`` of white glass and framed by ``margin_px``; the
  rest of the slide is glass (RGB 243, 242, 240, as in the other generated slides). Pixels are
  the image's own: no resampling, no colour change.
* Resolution: the images come from a microscope camera at 400x with no recorded scale; a
  colonic crypt spans ~60-90 px, so they are ~0.8-1 µm/px. The slides record the assumed
  :data:`EBHI_MPP` = 0.9 µm/px (level 0 = the images' own pixels).
* Written with :func:`~workbench.datasets._pyramid.write_pyramid` (tiled JPEG, one page per
  level, resolution tags: OpenSlide opens it as ``generic-tiff`` with the mpp).

Label and truth
---------------
* ``adenocarcinoma`` = 1 when the case has any image of the ``Adenocarcinoma`` class, else 0
  (its other images are high-/low-grade intraepithelial neoplasia, serrated adenoma or
  normal mucosa).
* The masks of the ``Adenocarcinoma`` images (binarised at > 127) are the tumour; masks of the
  other classes (dysplastic or normal epithelium) are not tumour. The tumour is written as a
  mask PNG (``masks/<slide>_lesion.png``, one pixel per :data:`EBHI_MASK_DOWNSAMPLE` level-0
  pixels) and as QuPath GeoJSON polygons of class ``Tumor`` in level-0 pixels
  (``annotations/<slide>_lesion.geojson``; negatives get an empty collection).
* ``truth.csv`` records per slide the ``lesion_fraction`` = tumour pixels / tissue pixels,
  where tissue = fragment pixels that are not glass-white (the hit rate of focus regions
  picked at random over the tissue), and the image counts per class.

The split is the fixed case-level one of :func:`~workbench.datasets.ebhi_case_split`
(``test``, ``val``, ``train``), written to the clinical table's ``split`` column.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from workbench._errors import WorkbenchError
from workbench.datasets._cohort import (
    SyntheticCohort,
    _geojson_rel,
    _mask_rel,
    _slide_rel,
    read_cohort_params,
    write_lesion_truth,
)

__all__ = [
    "EBHI_CLINICAL_COLUMNS",
    "EBHI_MASK_DOWNSAMPLE",
    "EBHI_MPP",
    "EBHI_TRUTH_COLUMNS",
    "EbhiCohort",
    "load_ebhi_cohort",
    "make_ebhi_cohort",
]

#: Bumped whenever the same arguments would lay out different slides or tables.
EBHI_COHORT_VERSION = 1
#: Assumed microns per pixel of the EBHI-Seg images (not recorded by the source).
EBHI_MPP = 0.9
#: Level-0 pixels per pixel of the lesion mask PNGs (glands are 50-100 px across).
EBHI_MASK_DOWNSAMPLE = 2
#: The label column of the clinical table.
EBHI_LABEL = "adenocarcinoma"

EBHI_CLINICAL_COLUMNS = ["patient_id", "slide", EBHI_LABEL, "split"]
EBHI_TRUTH_COLUMNS = [
    "patient_id",
    "slide_id",
    "slide",
    EBHI_LABEL,
    "split",
    "n_images",
    "n_adenocarcinoma_images",
    "classes",
    "lesion_fraction",
    "tissue_px",
    "width",
    "height",
]

_GLASS = np.array([243, 242, 240], dtype=np.uint8)
_WHITE_LEVEL = 220  # a fragment pixel with every channel above this is glass, not tissue
_JITTER_PX = 12


class EbhiCohort(SyntheticCohort):
    """An EBHI-Seg slide cohort read from its folder: a :class:`~workbench.io.Cohort` with
    the tumour truth of every slide (``truth``, ``lesion_mask``, ``lesion_geojson``).

    Parameters
    ----------
    root, clinical, truth, params
        As for :class:`~workbench.datasets.SyntheticCohort`.
    """

    def __repr__(self) -> str:
        t = self.truth
        parts = ", ".join(f"{s} {int((t['split'] == s).sum())}" for s in ("train", "val", "test"))
        return (
            f"EbhiCohort({len(self)} slides ({parts}), {int(t[EBHI_LABEL].sum())} with "
            f"adenocarcinoma, mpp {self.params['mpp']}, root={str(self.root)!r})"
        )

    def split_ids(self, split: str) -> list[str]:
        """Slide ids of one split, in table order.

        Parameters
        ----------
        split
            ``"train"``, ``"val"`` or ``"test"``.

        Returns
        -------
        list of str
            The slide ids.

        Raises
        ------
        WorkbenchError
            Another split name.
        """
        if split not in ("train", "val", "test"):
            raise WorkbenchError(f"unknown split {split!r}; choose train, val or test")
        t = self.truth
        return [str(s) for s in t.loc[t["split"] == split, "slide_id"]]


def _layout(n: int, rng: np.random.Generator, *, tile: int, gap: int, margin: int):
    """Top-left corners ``(n, 2)`` (x, y) and the slide size for ``n`` fragments."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    pitch = tile + gap + _JITTER_PX
    width = 2 * margin + cols * pitch - gap - _JITTER_PX
    height = 2 * margin + rows * pitch - gap - _JITTER_PX
    cells = rng.permutation(rows * cols)[:n]
    jitter = rng.integers(0, _JITTER_PX + 1, size=(n, 2))
    xy = np.column_stack([cells % cols, cells // cols]) * pitch + margin + jitter
    return xy.astype(int), int(width), int(height)


def _compose(images, rng, *, gap: int, margin: int):
    """The slide canvas, its tumour mask and tissue mask (level 0), and the fragment corners."""
    loaded = [im.load() for im in images]
    tile = max(max(rgb.shape[:2]) for rgb, _ in loaded)
    xy, width, height = _layout(len(loaded), rng, tile=tile, gap=gap, margin=margin)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = _GLASS
    tumour = np.zeros((height, width), dtype=bool)
    tissue = np.zeros((height, width), dtype=bool)
    for im, (rgb, mask), (x, y) in zip(images, loaded, xy, strict=True):
        h, w = rgb.shape[:2]
        canvas[y : y + h, x : x + w] = rgb
        is_tissue = ~(rgb > _WHITE_LEVEL).all(axis=2)
        tissue[y : y + h, x : x + w] = is_tissue
        if im.cls == "Adenocarcinoma":
            tumour[y : y + h, x : x + w] = mask
    return canvas, tumour, tissue, xy


def _block_any(mask: np.ndarray, ds: int) -> np.ndarray:
    h, w = mask.shape
    hb, wb = math.ceil(h / ds), math.ceil(w / ds)
    pad = np.zeros((hb * ds, wb * ds), dtype=np.float32)
    pad[:h, :w] = mask
    return pad.reshape(hb, ds, wb, ds).mean(axis=(1, 3)) >= 0.5


def _write_slide(path: Path, canvas: np.ndarray, sid: str) -> None:
    from workbench.datasets._pyramid import write_pyramid
    from workbench.io import atomic_path

    height, width = canvas.shape[:2]

    def render(x0: int, y0: int, w: int, h: int) -> np.ndarray:
        return canvas[y0 : y0 + h, x0 : x0 + w]

    with atomic_path(path) as tmp:
        write_pyramid(
            tmp,
            width=width,
            height=height,
            render=render,
            mpp=EBHI_MPP,
            description=None,
            tile=256,
            chunk=1024,
            quality=90,
            desc=sid,
        )


def _write_truth(root: Path, sid: str, lesion: np.ndarray) -> None:
    write_lesion_truth(
        root,
        sid,
        lesion,
        EBHI_MASK_DOWNSAMPLE,
        id_format="workbench-ebhi/{sid}/tumour/{i}",
        min_area_px=4,
        tolerance=0.5,
    )


def _params(source: Path, splits, seed: int, gap: int, margin: int, cases: list[str]) -> dict:
    return {
        "generator": "workbench.datasets.make_ebhi_cohort",
        "generator_version": EBHI_COHORT_VERSION,
        "kind": "ebhi",
        "source": str(source),
        "dataset": "EBHI-Seg (Shi et al., Front. Med. 10:1114673, 2023; figshare 21540159)",
        "mpp": EBHI_MPP,
        "mpp_note": "assumed: the images record no scale; a crypt spans ~60-90 px (~0.8-1 um/px)",
        "seed": int(seed),
        "splits": list(splits),
        "split_rule": "workbench.datasets.ebhi_case_split (SHA-256 of the case id)",
        "gap_px": int(gap),
        "margin_px": int(margin),
        "label": EBHI_LABEL,
        "label_rule": "1 when the case has any Adenocarcinoma image, else 0",
        "lesion_rule": "the masks (> 127) of the Adenocarcinoma images; other classes' masks "
        "(dysplastic or normal epithelium) are not tumour",
        "tissue_rule": f"fragment pixels with some channel <= {_WHITE_LEVEL}",
        "mask_downsample": EBHI_MASK_DOWNSAMPLE,
        "cases": cases,
        "n_patients": len(cases),
        "files": {
            "clinical": "clinical.csv",
            "truth": "truth.csv",
            "slides": "slides/{slide_id}.tif",
            "lesion_masks": "masks/{slide_id}_lesion.png",
            "lesion_geojson": "annotations/{slide_id}_lesion.geojson",
        },
    }


def _same(old: dict, new: dict) -> bool:
    keys = ("generator_version", "kind", "seed", "splits", "gap_px", "margin_px", "cases")
    return all(old.get(k) == new.get(k) for k in keys)


def _slide_id_of_case(case_id: str) -> str:
    """The slide id of a case: ``"C"`` + the case id (e.g. ``"C2001837"``)."""
    return f"C{case_id}"


def make_ebhi_cohort(
    source: str | os.PathLike,
    root: str | os.PathLike,
    *,
    splits: tuple[str, ...] | list[str] = ("train", "val", "test"),
    seed: int = 0,
    gap_px: int = 48,
    margin_px: int = 96,
    max_cases: int | None = None,
    progress: bool = True,
) -> EbhiCohort:
    """Write (or finish writing) a slide-level cohort of EBHI-Seg biopsies and return it.

    One slide per case (``C<case>``; patient id = case id): its images laid on a grid as tissue
    fragments on glass, a tiled JPEG pyramid with the assumed 0.9 µm/px recorded; label
    ``adenocarcinoma`` (any ``Adenocarcinoma`` image); the tumour masks of those images as
    QuPath GeoJSON (class ``Tumor``, level-0 pixels) and as a mask PNG; the fixed case-level
    split. See :mod:`workbench.datasets._ebhi_cohort` for the rules. A second call with the
    same arguments keeps finished slides; deleted ones are written again, identically.

    Parameters
    ----------
    source
        The shared data folder (holding ``masks/ebhi_seg``) or the ``ebhi_seg`` folder.
    root
        The cohort folder (created if needed).
    splits
        Which case splits to write (``"train"``, ``"val"``, ``"test"``).
    seed
        Seed of the fragment order and placement.
    gap_px, margin_px
        Glass between fragments and around them (level-0 pixels).
    max_cases
        Write only the first cases (in case-id order) of each split (quick runs, tests).
    progress
        Show a tqdm bar over slides.

    Returns
    -------
    EbhiCohort
        A :class:`~workbench.io.Cohort` (label column ``adenocarcinoma``, ``split`` column)
        with ``truth``, ``params``, ``lesion_mask`` and ``split_ids``. Files written:
        ``cohort.json``, ``clinical.csv`` (``patient_id``, ``slide``, ``adenocarcinoma``,
        ``split``), ``truth.csv`` (:data:`EBHI_TRUTH_COLUMNS`), ``slides/``, ``masks/``,
        ``annotations/``.

    Raises
    ------
    WorkbenchError
        The EBHI-Seg folder is missing, a split name is unknown, no case is selected, or
        ``root`` holds a cohort made with other arguments.
    """
    from tqdm.auto import tqdm

    from workbench.datasets._ebhi import ebhi_images
    from workbench.io import atomic_write_text, clean_partial

    splits = list(splits)
    bad = [s for s in splits if s not in ("train", "val", "test")]
    if bad or not splits:
        raise WorkbenchError(f"unknown split(s) {bad or splits}; choose from train, val, test")
    if gap_px < 0 or margin_px < 0:
        raise WorkbenchError(f"gap_px and margin_px must be >= 0, got {gap_px}, {margin_px}")
    images = ebhi_images(source)
    by_case: dict[str, list] = {}
    for im in images:
        if im.split in splits:
            by_case.setdefault(im.case_id, []).append(im)
    cases = sorted(by_case)
    if max_cases is not None:
        keep = []
        for s in splits:
            keep += [c for c in cases if by_case[c][0].split == s][: int(max_cases)]
        cases = sorted(keep)
    if not cases:
        raise WorkbenchError(f"no EBHI-Seg case of the split(s) {splits} under {str(source)!r}")
    root = Path(root)
    params = _params(Path(source), splits, seed, gap_px, margin_px, cases)
    meta = root / "cohort.json"
    old = read_cohort_params(meta)
    if old is not None:
        if not _same(old, params):
            raise WorkbenchError(
                f"{str(root)!r} holds a cohort made with other arguments (splits="
                f"{old.get('splits')}, seed={old.get('seed')}, {len(old.get('cases', []))} "
                "cases); choose another folder or delete this one"
            )
    root.mkdir(parents=True, exist_ok=True)
    clean_partial(root, recursive=True)
    atomic_write_text(meta, json.dumps(params, indent=2))
    rows = []
    for case in tqdm(cases, desc="ebhi cohort", unit="slide", disable=not progress):
        case_images = by_case[case]
        sid = _slide_id_of_case(case)
        case_key = int(hashlib.sha256(case.encode()).hexdigest()[:8], 16)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), case_key]))
        canvas, tumour, tissue, _ = _compose(case_images, rng, gap=gap_px, margin=margin_px)
        slide, mask_png = root / _slide_rel(sid), root / _mask_rel(sid)
        if not slide.exists():
            _write_slide(slide, canvas, sid)
        if not mask_png.exists() or not (root / _geojson_rel(sid)).exists():
            _write_truth(root, sid, _block_any(tumour, EBHI_MASK_DOWNSAMPLE))
        n_adeno = sum(im.cls == "Adenocarcinoma" for im in case_images)
        rows.append(
            {
                "patient_id": case,
                "slide_id": sid,
                "slide": _slide_rel(sid),
                EBHI_LABEL: int(n_adeno > 0),
                "split": case_images[0].split,
                "n_images": len(case_images),
                "n_adenocarcinoma_images": n_adeno,
                "classes": ";".join(sorted({im.cls for im in case_images})),
                "lesion_fraction": round(float((tumour & tissue).sum() / max(tissue.sum(), 1)), 5),
                "tissue_px": int(tissue.sum()),
                "width": canvas.shape[1],
                "height": canvas.shape[0],
            }
        )
        del canvas
    df = pd.DataFrame(rows, columns=EBHI_TRUTH_COLUMNS)
    clinical = df[EBHI_CLINICAL_COLUMNS].copy()
    truth = df.copy()
    atomic_write_text(root / "clinical.csv", clinical.to_csv(index=False))
    atomic_write_text(root / "truth.csv", truth.to_csv(index=False))
    return EbhiCohort(root=root, clinical=clinical, truth=truth, params=params)


def load_ebhi_cohort(root: str | os.PathLike) -> EbhiCohort:
    """Read a cohort written by :func:`make_ebhi_cohort`.

    Parameters
    ----------
    root
        The cohort folder.

    Returns
    -------
    EbhiCohort
        The cohort with its truth.

    Raises
    ------
    WorkbenchError
        ``cohort.json``, ``clinical.csv`` or ``truth.csv`` is missing (rerun
        :func:`make_ebhi_cohort` with the same arguments to finish it).
    """
    root = Path(root)
    missing = [n for n in ("cohort.json", "clinical.csv", "truth.csv") if not (root / n).exists()]
    if missing:
        raise WorkbenchError(
            f"{str(root)!r} is not a complete EBHI cohort (missing {', '.join(missing)}); run "
            "workbench.datasets.make_ebhi_cohort there with the same arguments to finish it"
        )
    from workbench.io import read_clinical

    params = read_cohort_params(root / "cohort.json")
    ids = ("patient_id", "slide_id", "slide")
    clinical = read_clinical(root / "clinical.csv", id_columns=ids)
    truth = read_clinical(root / "truth.csv", id_columns=ids)
    return EbhiCohort(root=root, clinical=clinical, truth=truth, params=params)
