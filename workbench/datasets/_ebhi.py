"""EBHI-Seg: real colorectal biopsy images with gland/tumour masks, indexed and split by case.

The shared folder ``<root>/masks/ebhi_seg`` holds 224 x 224 px H&E camera images of
endoscopic biopsies in five class folders (``Adenocarcinoma``, ``High-grade_IN``,
``Low-grade_IN``, ``Normal``, ``Serrated_adenoma``), each with ``images/`` and ``masks/`` of
the same file name, and a ``manifest.csv`` naming the case of every file. One case (patient)
can have images in several classes, so every split here is by case, across classes: a case
is wholly in ``test``, ``val`` or ``train``.

The split rule is fixed and does not depend on which cases a folder holds (a user's copy with
more or fewer cases keeps every shared case where it was): the SHA-256 of ``"ebhi:<case>"``
picks one of 20 buckets; buckets 0-5 are ``test`` (~30 %), 6-8 ``val`` (~15 %, for choosing
settings, never for reporting), the rest ``train``. ``holdout_classes`` moves every case with
an image of those classes out of ``train`` and ``val`` (a leave-one-class-out check: the
held-out lesion type is never seen, not even as another image of the same patient).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from workbench._errors import WorkbenchError

__all__ = [
    "EBHI_CLASSES",
    "EBHI_SPLITS",
    "EbhiImage",
    "ebhi_case_split",
    "ebhi_images",
]

EBHI_CLASSES = ("Adenocarcinoma", "High-grade_IN", "Low-grade_IN", "Normal", "Serrated_adenoma")
EBHI_SPLITS = ("test", "val", "train", "not_test", "holdout", "all")
_BUCKETS = 20
_TEST_BUCKETS = range(0, 6)
_VAL_BUCKETS = range(6, 9)


@dataclass(frozen=True)
class EbhiImage:
    """One EBHI-Seg image: its files, class, case and split (no pixels loaded).

    Made by :func:`ebhi_images`; each parameter is kept as the attribute of the same name.

    Parameters
    ----------
    image_path
        The RGB image file.
    mask_path
        Its gland/tumour mask (white = inside).
    cls
        The class folder the image lies in, one of ``EBHI_CLASSES``.
    case_id
        The case (patient) the image belongs to; splits never divide a case.
    split
        ``"test"``, ``"val"``, ``"train"`` or ``"holdout"`` (see :func:`ebhi_case_split`).
    """

    image_path: Path
    mask_path: Path
    cls: str  # class folder name, one of EBHI_CLASSES
    case_id: str
    split: str  # "test", "val", "train" or "holdout"

    @property
    def name(self) -> str:
        """The image file's name without its suffix."""
        return self.image_path.stem

    def load(self):
        """Read the image and its mask.

        Returns
        -------
        image : numpy.ndarray
            ``(H, W, 3)`` uint8 RGB.
        mask : numpy.ndarray
            ``(H, W)`` bool, the mask file binarised at > 127 (resized to the image with
            nearest neighbours where the sizes differ).
        """
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(self.image_path).convert("RGB"))
        mask = np.asarray(Image.open(self.mask_path).convert("L")) > 127
        if mask.shape != image.shape[:2]:
            mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST))
        return image, mask


def ebhi_case_split(case_id: str) -> str:
    """The split of one case: ``"test"``, ``"val"`` or ``"train"``.

    Parameters
    ----------
    case_id
        The case (patient) id of the manifest, e.g. ``"2001837"``.

    Returns
    -------
    str
        The split name; fixed by the id alone.
    """
    digest = hashlib.sha256(f"ebhi:{case_id}".encode()).hexdigest()
    bucket = int(digest, 16) % _BUCKETS
    if bucket in _TEST_BUCKETS:
        return "test"
    if bucket in _VAL_BUCKETS:
        return "val"
    return "train"


def ebhi_images(
    root: str | Path,
    *,
    split: str = "all",
    classes: tuple[str, ...] | list[str] | None = None,
    holdout_classes: tuple[str, ...] | list[str] = (),
) -> list[EbhiImage]:
    """The EBHI-Seg images of the shared data, with their case and split.

    Parameters
    ----------
    root
        The shared data folder (holds ``masks/ebhi_seg``), or the ``ebhi_seg`` folder itself.
    split
        ``"test"``, ``"val"``, ``"train"``, ``"not_test"`` (train and val), ``"holdout"``
        (the cases of ``holdout_classes``) or ``"all"``.
    classes
        Keep only images of these class folders (default: all five).
    holdout_classes
        Every case with an image of one of these classes gets the split ``"holdout"`` (all
        its images, whatever their class): such cases are in no other split.

    Returns
    -------
    list of EbhiImage
        The images in file order (class folder, then file name).

    Raises
    ------
    WorkbenchError
        The folder or its manifest is missing, or a class or split name is unknown.
    """
    if split not in EBHI_SPLITS:
        raise WorkbenchError(
            f"unknown EBHI split {split!r}; choose one of {', '.join(EBHI_SPLITS)}"
        )
    for cls in list(classes or ()) + list(holdout_classes):
        if cls not in EBHI_CLASSES:
            raise WorkbenchError(
                f"unknown EBHI-Seg class {cls!r}; choose from {', '.join(EBHI_CLASSES)}"
            )
    folder = Path(root)
    if not (folder / "manifest.csv").is_file():
        folder = folder / "masks" / "ebhi_seg"
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise WorkbenchError(
            f"no EBHI-Seg manifest at {manifest}: pass the shared data folder "
            "(the one holding masks/ebhi_seg)"
        )
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["role"] == "image"]
    held_cases = {r["case_id"] for r in rows if r["file"].split("/")[0] in set(holdout_classes)}
    wanted = set(classes) if classes else set(EBHI_CLASSES)
    out = []
    for row in sorted(rows, key=lambda r: r["file"]):
        cls = row["file"].split("/")[0]
        if cls not in wanted:
            continue
        image_path = folder / row["file"]
        mask_path = folder / cls / "masks" / image_path.name
        if not mask_path.is_file():
            continue
        case = row["case_id"]
        part = "holdout" if case in held_cases else ebhi_case_split(case)
        keep = split == "all" or part == split or (split == "not_test" and part in ("train", "val"))
        if keep:
            out.append(EbhiImage(image_path, mask_path, cls, case, part))
    return out
