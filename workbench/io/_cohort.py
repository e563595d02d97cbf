"""A cohort: slide files, a validated clinical table and optional lesion annotations.

:class:`Cohort` is the one shape a cohort has in the workbench. Training, extraction and
discovery take it; :class:`workbench.datasets.SyntheticCohort` is a subclass that also knows the
truth it planted. :func:`slide_id` is the one rule that turns a file name (or a path, or an id)
into a slide id, used for every output file name and every join with the clinical table.

Nothing here imports torch or OpenSlide; a slide file is opened only by :meth:`Cohort.open`.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench._constants import LESION_CLASS
from workbench._errors import (
    ClinicalTableError,
    CohortError,
    OptionError,
    UnknownSlideError,
    UnmatchedSlidesError,
    remedy,
)
from workbench.io._clinical import _names, read_clinical, validate_clinical

if TYPE_CHECKING:  # pragma: no cover
    from workbench.io._geojson import Annotation
    from workbench.io._slide import Slide

logger = logging.getLogger(__name__)

#: File extensions recognised as slides (lower case). ``.ome`` before ``.tif``/``.tiff`` is
#: part of the extension too (``S1.ome.tiff`` -> ``S1``).
SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
    ".qptiff",
    ".png",
    ".jpg",
    ".jpeg",
)
#: Extensions of annotation files looked for in ``annotations_dir``.
ANNOTATION_SUFFIXES = (".geojson", ".json")

_SEPARATORS = ("_", ".", "-", " ")


def slide_id(path: str | os.PathLike) -> str:
    """The slide id of a file name, a path or an id: the name without its slide extension.

    Only a known slide extension (:data:`SLIDE_SUFFIXES`, and an ``.ome`` before it) is
    removed, never everything after the first dot, so ids that contain dots survive (see
    the examples).

    Parameters
    ----------
    path
        A file name, a path (only its last part is read) or an id.

    Returns
    -------
    str
        The id: the name less a known slide extension; an id comes back unchanged.

    Examples
    --------
    >>> slide_id("dir/S1.ome.tiff")
    'S1'
    >>> slide_id("TCGA-AB-1234-01Z-00-DX1.5A1B.svs")
    'TCGA-AB-1234-01Z-00-DX1.5A1B'
    >>> slide_id("TCGA-AB-1234-01Z-00-DX1.5A1B")
    'TCGA-AB-1234-01Z-00-DX1.5A1B'
    """
    name = PurePath(str(path)).name
    lower = name.lower()
    for suffix in sorted(SLIDE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            if suffix in (".tif", ".tiff") and name.lower().endswith(".ome") and len(name) > 4:
                name = name[:-4]
            break
    return name


def _broken_link(path: Path) -> str | None:
    """Why a symbolic link cannot be followed (``None`` when it can, or is no link)."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python 3.11 reports a loop this way
        return "a symbolic link loop"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"a symbolic link to {os.readlink(path)!r}, which does not exist"
    return None


def list_slides(folder: str | os.PathLike) -> list[Path]:
    """Slide files in a folder (not its sub-folders), sorted by name; hidden files skipped.

    A slide-named symbolic link that leads nowhere (dangling, or a loop) is refused with a
    :class:`~workbench.CohortError` naming each one, rather than skipped without a word.

    Parameters
    ----------
    folder
        The folder to list.

    Returns
    -------
    list of pathlib.Path
        The slide files (extensions in :data:`SLIDE_SUFFIXES`), sorted by name.

    Raises
    ------
    workbench.CohortError
        ``folder`` is not a folder, or a slide-named link in it cannot be followed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CohortError(f"no slide folder at {str(folder)!r}; check the path")
    found, broken = [], []
    for p in folder.iterdir():
        if p.name.startswith(".") or not p.name.lower().endswith(SLIDE_SUFFIXES):
            continue
        why = _broken_link(p)
        if why:
            broken.append(f"{p.name}: {why}")
        elif p.is_file():
            found.append(p)
    if broken:
        raise CohortError(
            f"{len(broken)} slide link(s) in {str(folder)!r} cannot be opened "
            f"({'; '.join(sorted(broken)[:5])}); fix the link(s) or remove them"
        )
    return sorted(found)


def _slide_table(slides) -> dict[str, Path]:
    """``{slide_id: path}`` from a folder, a mapping or a list of paths."""
    if isinstance(slides, str | os.PathLike) and Path(slides).is_dir():
        slides = list_slides(slides)
    elif isinstance(slides, str | os.PathLike):
        slides = [slides]
    if isinstance(slides, Mapping):
        return {str(k): Path(v) for k, v in slides.items()}
    out: dict[str, Path] = {}
    clashes: dict[str, list[str]] = {}
    for p in slides:
        sid = slide_id(p)
        if sid in out:
            clashes.setdefault(sid, [str(out[sid])]).append(str(p))
        out[sid] = Path(p)
    if clashes:
        detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in list(clashes.items())[:5])
        raise CohortError(
            f"{len(clashes)} slide id(s) belong to more than one file ({detail}); rename the "
            "files or pass a {slide_id: path} mapping"
        )
    return out


def _match_annotation_files(folder: Path, ids: Sequence[str]) -> tuple[dict[str, Path], list]:
    """Annotation file per slide id; and the files that match no slide.

    A file matches a slide when its name without ``.geojson``/``.json`` is the slide id, the
    slide's file name (QuPath names exports after the image, e.g. ``S1.svs.geojson``), or the
    id followed by a separator and a tag (``S1_lesion.geojson``, ``S1.tumour.geojson``); the
    longest matching id wins, so ``S10_x`` goes to ``S10``, not ``S1``.
    """
    known = set(ids)
    by_length = sorted(ids, key=len, reverse=True)
    found: dict[str, Path] = {}
    unknown: list[str] = []
    for path in sorted(folder.iterdir()):
        lower = path.name.lower()
        if (
            not path.is_file()
            or path.name.startswith(".")
            or not lower.endswith(ANNOTATION_SUFFIXES)
        ):
            continue
        stem = path.name[: path.name.rindex(".")]
        sid = slide_id(stem)
        if sid not in known:
            sid = next(
                (s for s in by_length if stem.startswith(s) and stem[len(s)] in _SEPARATORS),
                None,
            )
        if sid is None:
            unknown.append(path.name)
            continue
        if sid in found:
            raise CohortError(
                f"two annotation files for slide {sid!r}: {found[sid].name} and {path.name}; "
                "keep one per slide"
            )
        found[sid] = path
    return found, unknown


def _read_table(clinical, slide_key: str | None, patient_key: str) -> pd.DataFrame | None:
    """The clinical table as a DataFrame (a copy), or ``None``; files go through
    :func:`~workbench.io.read_clinical`, the one reader (ids stay text)."""
    if clinical is None:
        return None
    if isinstance(clinical, pd.DataFrame):
        return clinical.copy()
    return read_clinical(clinical, id_columns=(slide_key, patient_key))


def _paths_from_table(table: pd.DataFrame, id_key: str, root: Path | None) -> dict[str, Path]:
    """``{slide_id: path}`` from the table's slide column (relative paths under ``root``)."""
    if id_key not in table:
        raise ClinicalTableError(
            f"the clinical table has no {id_key!r} column to take slide ids from; it has "
            f"{list(table.columns)}. Rename it or pass slide_key=/patient_key= (command line: "
            "--slide-key/--patient-key)"
        )
    base = root or Path.cwd()
    out: dict[str, Path] = {}
    for p in table[id_key].astype(str):  # a repeated id is the table's problem, named there
        out.setdefault(slide_id(p), base / p)
    return out


def _survival_columns(table: pd.DataFrame, duration_key, event_key) -> tuple:
    """The survival column names, or ``(None, None)`` for a table without survival."""
    if duration_key is None or event_key is None:
        return None, None
    present = [c for c in (duration_key, event_key) if c in table.columns]
    if not present:
        logger.info("cohort: no %r/%r columns, so no survival data", duration_key, event_key)
        return None, None
    if len(present) == 1:
        absent = event_key if present == [duration_key] else duration_key
        raise ClinicalTableError(
            f"the clinical table has {present[0]!r} but not {absent!r}; survival needs both "
            "(name them with duration_key=/event_key=, command line --duration-key/--event-key; "
            "or pass duration_key=None, event_key=None to use the table without survival)"
        )
    return duration_key, event_key


def _check_on_unmatched(on_unmatched: str) -> None:
    if on_unmatched not in ("raise", "drop"):
        raise OptionError(f"on_unmatched must be 'raise' or 'drop', got {on_unmatched!r}")


#: How many unmatched ids an error message lists.
_SHOWN = 5


def _match_rows(
    table: pd.DataFrame,
    found: Sequence[str],
    *,
    id_key: str,
    patient_key: str,
    on_unmatched: str,
    among: str,
    spelled: Sequence[str] | None = None,
    row_names: Sequence[str] | None = None,
) -> tuple[pd.Series, list[str]]:
    """The one rule that matches a checked table to the slides there are.

    ``found`` are the slide ids that exist (files, AnnData, marker rows), ``spelled`` how they
    were given (for messages), ``row_names`` how the table named each row's slide. Returns
    ``(matched, no_row)``: a boolean Series over the table's rows (the row has a slide) and
    the given spellings of the slides without a row. Unmatched ids on either side raise
    :class:`~workbench.UnmatchedSlidesError` (``on_unmatched="raise"``) or are logged.
    """
    unit = "slide" if id_key != patient_key else "patient"
    spelled = list(found) if spelled is None else list(spelled)
    ids = table[id_key].astype(str)
    known = set(ids)
    no_row = [s for s, f in zip(spelled, found, strict=True) if f not in known]
    matched = ids.isin(set(found))
    absent = np.flatnonzero(~matched.to_numpy())
    names = list(ids) if row_names is None else [str(n) for n in row_names]
    rows = []
    for i in absent:
        who = "" if unit == "patient" else f", patient {table[patient_key].iloc[i]}"
        rows.append(f"{names[i]!r} (row {i + 1}{who})")
    if not matched.any():
        raise UnmatchedSlidesError(
            f"no {unit} of {among} has a row in the clinical table: {among} are "
            f"{_names(spelled, _SHOWN) or 'none'}, the table's {id_key!r} column holds "
            f"{_names(list(ids), _SHOWN)}. Check the ids or pass slide_key=/patient_key= "
            "(command line: --slide-key/--patient-key)"
        )
    if (no_row or len(rows)) and on_unmatched == "raise":
        msg = []
        if no_row:
            msg.append(
                f"{len(no_row)} {unit}(s) of {among} have no row in the clinical table "
                f"({_names(no_row, _SHOWN)})"
            )
        if rows:
            msg.append(
                f"{len(rows)} clinical row(s) have no {unit} among {among} ({_names(rows, _SHOWN)})"
            )
        raise UnmatchedSlidesError(
            "; ".join(msg)
            + ". Fix the ids, or "
            + remedy("pass on_unmatched='drop'", "add --on-unmatched drop")
            + " to leave them out"
        )
    if no_row:
        logger.warning(
            "cohort: left out %d %s(s) without a clinical row: %s",
            len(no_row), unit, _names(no_row),
        )  # fmt: skip
    if rows:
        logger.warning(
            "cohort: dropped %d clinical row(s) without a %s among %s: %s",
            len(rows), unit, among, _names(rows),
        )  # fmt: skip
    return matched, no_row


def _check_table(
    table: pd.DataFrame,
    paths: dict[str, Path],
    on_unmatched: str,
    *,
    slide_key: str | None,
    patient_key: str,
    duration_key: str | None,
    event_key: str | None,
) -> pd.DataFrame:
    """The validated table, slide column as ids, restricted to the slides that are there."""
    id_key = slide_key or patient_key
    for col in dict.fromkeys((id_key, patient_key)):
        if col not in table.columns:
            raise ClinicalTableError(
                f"the clinical table misses the column {col!r}; it has {list(table.columns)}. "
                "Rename it or pass slide_key=/patient_key= (command line: "
                "--slide-key/--patient-key)"
            )
    table = table.copy()
    raw = table[id_key].astype(str)
    if slide_key:
        table[slide_key] = [slide_id(v) if str(v) not in paths else str(v) for v in raw]
    clean = validate_clinical(
        table,
        patient_key=patient_key,
        slide_key=slide_key,
        duration_key=duration_key,
        event_key=event_key,
        require_events=False,
    )
    matched, _ = _match_rows(
        clean.reset_index(drop=True),
        list(paths),
        id_key=id_key,
        patient_key=patient_key,
        on_unmatched=on_unmatched,
        among="the slide files",
        row_names=list(raw),
    )
    return clean[matched.to_numpy()].reset_index(drop=True)


def _resolution_overrides(mpp, ids: Sequence[str]) -> dict[str, float]:
    """``{slide_id: mpp}`` from one number or a mapping (unknown ids refused)."""
    if mpp is None:
        return {}
    if isinstance(mpp, Mapping):
        out = {str(k): float(v) for k, v in mpp.items()}
        unknown = sorted(set(out) - set(ids))
        if unknown:
            raise CohortError(
                f"mpp overrides for {len(unknown)} slide(s) not in the cohort "
                f"({_names(unknown)}); slide ids look like {_names(list(ids)[:3])}"
            )
    else:
        out = {sid: float(mpp) for sid in ids}
    bad = sorted(k for k, v in out.items() if not np.isfinite(v) or v <= 0)
    if bad:
        raise CohortError(f"mpp must be a positive number of µm per pixel ({_names(bad)})")
    return out


class Cohort:
    """Slide files with one validated clinical row per slide, and optional lesion annotations.

    Parameters
    ----------
    slides
        A folder of slide files, a list of paths (ids from :func:`slide_id`), a
        ``{slide_id: path}`` mapping, or ``None`` to take the slide ids (and paths) from the
        clinical table's slide column (relative paths are resolved against ``root``; a file is
        opened only when asked for, so a table alone is a cohort too).
    clinical
        A DataFrame, the path of a CSV file (read by :func:`~workbench.io.read_clinical`: ids
        stay text), or ``None`` (then every slide is its own patient and there is no survival).
        One row per slide; the slide column may hold slide ids, file names or paths; several
        rows may share a patient.
    slide_key, patient_key
        Clinical column names of the slide and the patient. ``slide_key=None``: a table of
        patients (one row each), whose patient ids serve as the slide ids.
    duration_key, event_key
        Survival columns. When the table has neither column the cohort has no survival (it
        can still train); ``None`` says so explicitly.
    mpp
        Microns per pixel for slides whose files do not record it: one number for every slide,
        or ``{slide_id: mpp}`` overrides.
    annotations_dir
        Folder of GeoJSON files, one per slide (ours or QuPath exports), matched to slides by
        name (see :meth:`annotation_file`).
    lesion_class
        QuPath classification name(s) that mark the lesion (matched without regard to case);
        ``None`` takes every polygon.
    on_unmatched
        ``"raise"`` (default): a clinical row whose slide is absent, or a slide without a row,
        raises :class:`~workbench.UnmatchedSlidesError` naming them; ``"drop"`` leaves them out
        and logs their names (the rule of :meth:`match`).
    root
        Folder against which relative slide paths of the table are resolved (default: the
        CSV's folder, else the working directory).

    Attributes
    ----------
    clinical
        The validated table, one row per slide of the cohort (its slide column holds slide
        ids, ``duration_key`` float, ``event_key`` 0/1).
    slide_key, patient_key, duration_key, event_key
        The column names (``duration_key``/``event_key`` are ``None`` without survival).

    Raises
    ------
    ClinicalTableError
        Missing columns, bad survival values, duplicated slides; every problem is named.
    UnmatchedSlidesError
        Rows whose slide file is absent or slides without a row (see ``on_unmatched``).
    CohortError
        Two files with the same slide id, annotation files that match no slide, resolution
        overrides for unknown slides.
    """

    def __init__(
        self,
        slides: str | os.PathLike | Iterable | Mapping | None = None,
        clinical: pd.DataFrame | str | os.PathLike | None = None,
        *,
        slide_key: str | None = "slide",
        patient_key: str = "patient_id",
        duration_key: str | None = "time",
        event_key: str | None = "event",
        mpp: float | Mapping[str, float] | None = None,
        annotations_dir: str | os.PathLike | None = None,
        lesion_class: str | Sequence[str] | None = LESION_CLASS,
        on_unmatched: str = "raise",
        root: str | os.PathLike | None = None,
    ) -> None:
        _check_on_unmatched(on_unmatched)
        self.slide_key = slide_key
        self.patient_key = patient_key
        self._id_key = slide_key or patient_key
        table = _read_table(clinical, slide_key, patient_key)
        if root is None and isinstance(clinical, str | os.PathLike):
            root = Path(clinical).parent
        self.root = Path(root) if root is not None else None
        if slides is None:
            if table is None:
                raise CohortError("give slides, a clinical table with their paths, or both")
            paths = _paths_from_table(table, self._id_key, self.root)
        else:
            paths = _slide_table(slides)
        if table is None:
            ids = list(paths)
            table = pd.DataFrame({self._id_key: ids, patient_key: ids})
            duration_key = event_key = None
        self.duration_key, self.event_key = _survival_columns(table, duration_key, event_key)
        self.clinical = _check_table(
            table,
            paths,
            on_unmatched,
            slide_key=slide_key,
            patient_key=patient_key,
            duration_key=self.duration_key,
            event_key=self.event_key,
        )
        self._paths = {sid: paths[sid] for sid in self.clinical[self._id_key]}
        self._mpp = _resolution_overrides(mpp, list(self._paths))
        self.lesion_class = lesion_class
        self.annotations_dir = Path(annotations_dir) if annotations_dir is not None else None
        self._annotation_files = self._find_annotations(list(paths))
        self._annotation_cache: dict[str, list] = {}
        self._dimensions: dict[str, tuple[int, int]] = {}

    # ------------------------------------------------------------------------ building
    @classmethod
    def from_folder(
        cls,
        slides_dir: str | os.PathLike,
        clinical: pd.DataFrame | str | os.PathLike | None = None,
        **kwargs,
    ) -> Cohort:
        """Every slide file in ``slides_dir`` (hidden files skipped) with its clinical rows.

        Parameters
        ----------
        slides_dir
            Folder of slide files (not its sub-folders).
        clinical
            The clinical table (DataFrame or CSV path), or ``None``.
        **kwargs
            The keywords of :class:`Cohort` (``slide_key=``, ``on_unmatched=`` …).

        Returns
        -------
        Cohort
            The slides of the folder that have a clinical row.
        """
        files = list_slides(slides_dir)
        if not files:
            raise CohortError(
                f"no slide files in {str(slides_dir)!r} (looked for "
                f"{', '.join(SLIDE_SUFFIXES[:9])} …)"
            )
        return cls(files, clinical, **kwargs)

    @classmethod
    def from_clinical(
        cls,
        clinical: Cohort | pd.DataFrame | str | os.PathLike,
        *,
        slide_key: str | None = "slide",
        patient_key: str = "patient_id",
        duration_key: str | None = "time",
        event_key: str | None = "event",
    ) -> Cohort:
        """A cohort as it is, or a clinical table (DataFrame or CSV path) made into one.

        How :func:`workbench.tl.discover`, :func:`workbench.tl.aggregate` and the command line
        take their table: a CSV goes through :func:`~workbench.io.read_clinical` (ids stay
        text), the slide column may hold ids, file names or paths, and the slides are matched
        later, by :meth:`match`. No slide file is opened.

        Parameters
        ----------
        clinical
            A :class:`Cohort` (returned unchanged: its own column names hold), a DataFrame or
            the path of a CSV file.
        slide_key, patient_key, duration_key, event_key
            Column names of a table (see :class:`Cohort`); ignored for a :class:`Cohort`.

        Returns
        -------
        Cohort
            One slide per row of the table (``slide_key=None``: one patient per row).
        """
        if isinstance(clinical, Cohort):
            return clinical
        if not isinstance(clinical, pd.DataFrame | str | os.PathLike):
            raise ClinicalTableError(
                f"the clinical table must be an io.Cohort, a DataFrame or the path of a CSV "
                f"file, not {type(clinical).__name__}"
            )
        return cls(
            None,
            clinical,
            slide_key=slide_key,
            patient_key=patient_key,
            duration_key=duration_key,
            event_key=event_key,
        )

    def match(self, slide_ids: Iterable[str], *, on_unmatched: str = "raise") -> pd.DataFrame:
        """The clinical rows of these slides: the one rule that joins slides to the table.

        A slide id matches a row when it is the row's slide id, or when :func:`slide_id` of
        it is (``"S1.svs"`` matches ``S1``); ids are compared as text (``007`` is not ``7``).
        Used by the cohort itself (files vs table), :func:`workbench.tl.discover`,
        :func:`workbench.tl.aggregate` and the command line.

        Parameters
        ----------
        slide_ids
            The slides there are (AnnData ``uns["slide_id"]``, marker-table rows, file names);
            with ``slide_key=None``, patient ids.
        on_unmatched
            ``"raise"`` (default): slides without a row, or rows of the cohort without a slide,
            raise :class:`~workbench.UnmatchedSlidesError` naming a few of each; ``"drop"``
            leaves them out and logs their names.

        Returns
        -------
        pandas.DataFrame
            The matched rows of :attr:`clinical` in the order of ``slide_ids``, indexed by the
            ids as given. ``attrs["unmatched_slides"]``: the given ids without a row;
            ``attrs["unmatched_rows"]``: the cohort's slide ids without a given slide;
            ``attrs["unmatched_patients"]``: patients none of whose slides was given.
        """
        _check_on_unmatched(on_unmatched)
        given = [str(s) for s in slide_ids]
        known = set(self._paths)
        found = [s if s in known or slide_id(s) not in known else slide_id(s) for s in given]
        count = Counter(found)
        dup = sorted({g for g, f in zip(given, found, strict=True) if count[f] > 1})
        if dup:
            raise CohortError(f"slide ids must be unique; given more than once: {_names(dup)}")
        table = self.clinical.reset_index(drop=True)
        matched, no_row = _match_rows(
            table,
            found,
            spelled=given,
            id_key=self._id_key,
            patient_key=self.patient_key,
            on_unmatched=on_unmatched,
            among=f"the {'slide' if self.slide_key else 'patient'}s given",
        )
        by_id = table[matched.to_numpy()]
        by_id.index = pd.Index(by_id[self._id_key].astype(str))
        keep = [(g, f) for g, f in zip(given, found, strict=True) if f in by_id.index]
        rows = by_id.loc[[f for _, f in keep]]
        rows.index = pd.Index([g for g, _ in keep])
        unmatched = table[~matched.to_numpy()]
        rows.attrs = {
            "unmatched_slides": no_row,
            "unmatched_rows": [str(s) for s in unmatched[self._id_key]],
            "unmatched_patients": sorted(
                set(map(str, unmatched[self.patient_key])) - set(map(str, rows[self.patient_key]))
            ),
        }
        return rows

    def _with_clinical(self, table: pd.DataFrame) -> Cohort:
        """A copy restricted to the rows of ``table`` (a checked version of :attr:`clinical`,
        e.g. with covariates converted or rows left out), which becomes its table."""
        new = self.subset(list(table[self._id_key].astype(str)))
        new.clinical = table.reset_index(drop=True)
        return new

    def _find_annotations(self, all_ids: list[str]) -> dict[str, Path]:
        """Annotation files of the cohort's slides; files of slides given but left out of the
        cohort (no clinical row) are ignored, files that match no slide at all are refused."""
        if self.annotations_dir is None:
            return {}
        if not self.annotations_dir.is_dir():
            raise CohortError(f"no annotation folder at {str(self.annotations_dir)!r}")
        found, unknown = _match_annotation_files(self.annotations_dir, all_ids)
        found = {k: v for k, v in found.items() if k in self._paths}
        if unknown:
            raise CohortError(
                f"{len(unknown)} annotation file(s) in {str(self.annotations_dir)!r} match no "
                f"slide of the cohort ({_names(unknown)}); name each file after its slide "
                f"(e.g. {self.slide_ids[0]}.geojson) or remove it"
            )
        logger.info("cohort: annotations for %d of %d slides", len(found), len(self))
        return found

    # ------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._paths)

    def __iter__(self) -> Iterator[str]:
        return iter(self.slide_ids)

    def __contains__(self, key: object) -> bool:
        try:
            self._key(key)  # type: ignore[arg-type]
        except UnknownSlideError:
            return False
        return True

    def __repr__(self) -> str:
        n_pat = len(self.patients)
        surv = (
            f"survival {self.duration_key}/{self.event_key}" if self.has_survival else "no survival"
        )
        ann = (
            f"annotations for {len(self._annotation_files)}"
            if self.has_annotations
            else "no annotations"
        )
        return f"{type(self).__name__}({len(self)} slides, {n_pat} patients, {surv}, {ann})"

    @property
    def slide_ids(self) -> list[str]:
        """Slide ids in table order."""
        return [str(s) for s in self.clinical[self._id_key]]

    @property
    def patients(self) -> list[str]:
        """Patient ids in table order (a patient may have several slides)."""
        return list(dict.fromkeys(str(p) for p in self.clinical[self.patient_key]))

    @property
    def has_survival(self) -> bool:
        """Whether the cohort has survival columns (``duration_key`` and ``event_key``)."""
        return self.duration_key is not None

    @property
    def has_annotations(self) -> bool:
        """Whether any slide has an annotation file."""
        return bool(self._annotation_files)

    def _key(self, key: str | os.PathLike) -> str:
        key = str(key)
        if key in self._paths:
            return key
        sid = slide_id(key)
        if sid in self._paths:
            return sid
        rows = self.clinical[self.clinical[self.patient_key] == key]
        if len(rows) == 1:
            return str(rows[self._id_key].iloc[0])
        more = " …" if len(self) > 5 else ""
        raise UnknownSlideError(
            f"no slide {key!r} in this cohort; slide ids are {', '.join(self.slide_ids[:5])}{more}"
        )

    def slide_path(self, slide: str | os.PathLike) -> Path:
        """Path of a slide file.

        Parameters
        ----------
        slide
            Slide id, file name, path or a one-slide patient's id.

        Returns
        -------
        pathlib.Path
            The slide file.

        Raises
        ------
        workbench.UnknownSlideError
            No slide of the cohort matches ``slide``.
        """
        return self._paths[self._key(slide)]

    def mpp_of(self, slide: str | os.PathLike) -> float | None:
        """The resolution override of a slide.

        Parameters
        ----------
        slide
            Slide id, file name, path or a one-slide patient's id.

        Returns
        -------
        float or None
            µm per level-0 pixel given to the cohort (``mpp=``), or ``None`` (the file's own).
        """
        return self._mpp.get(self._key(slide))

    def open(self, slide: str | os.PathLike) -> Slide:
        """Open a slide with its resolution override applied.

        Parameters
        ----------
        slide
            Slide id, file name, path or a one-slide patient's id.

        Returns
        -------
        workbench.io.Slide
            The open slide (close it, or use it as a context manager).
        """
        from workbench.io._slide import Slide

        return Slide(self.slide_path(slide), mpp=self.mpp_of(slide))

    def patient_of(self, slide: str | os.PathLike) -> str:
        """The patient a slide belongs to.

        Parameters
        ----------
        slide
            Slide id, file name, path or a one-slide patient's id.

        Returns
        -------
        str
            The patient id (``patient_key`` column).
        """
        sid = self._key(slide)
        return str(self.clinical.loc[self.clinical[self._id_key] == sid, self.patient_key].iloc[0])

    def labels(self, column: str) -> pd.Series:
        """A clinical column as slide labels, indexed by slide id.

        Parameters
        ----------
        column
            The clinical column.

        Returns
        -------
        pandas.Series
            The labels in :attr:`slide_ids` order, named ``column``.

        Raises
        ------
        ClinicalTableError
            The column is missing, has empty values (the slides are named) or only one class.
        """
        if column not in self.clinical.columns:
            usable = [c for c in self.clinical.columns if c not in (self._id_key,)]
            raise ClinicalTableError(
                f"no label column {column!r} in the clinical table; its columns are {usable}"
            )
        values = self.clinical[column]
        values = pd.Series(values.to_numpy(), index=self.slide_ids, name=column)
        empty = values.isna() | (values.astype(str).str.strip() == "")
        if empty.any():
            raise ClinicalTableError(
                f"{int(empty.sum())} slide(s) have no {column!r} label "
                f"({_names(values.index[empty])}); fill them in or leave those slides out "
                "(cohort.subset)"
            )
        if values.nunique() < 2:
            raise ClinicalTableError(
                f"the label column {column!r} has a single class ({values.iloc[0]!r}) over "
                f"{len(values)} slide(s); training needs at least two classes"
            )
        return values

    # ------------------------------------------------------------------------ annotations
    def annotation_file(self, slide: str | os.PathLike) -> Path | None:
        """The annotation file matched to a slide, or ``None``.

        Matching: the file name without ``.geojson``/``.json`` is the slide id, the slide's
        file name (``S1.svs.geojson``, as QuPath names exports) or the id followed by ``_``,
        ``.``, ``-`` or a space and a tag (``S1_lesion.geojson``).

        Parameters
        ----------
        slide
            Slide id, file name, path or a one-slide patient's id.

        Returns
        -------
        pathlib.Path or None
            The file, or ``None`` when the slide has none.
        """
        return self._annotation_files.get(self._key(slide))

    def annotations(self, slide: str | os.PathLike) -> list[Annotation] | None:
        """The slide's lesion polygons (``lesion_class`` only), or ``None`` without a file.

        An annotation file without lesion polygons gives ``[]``: an annotated slide without a
        lesion.

        Parameters
        ----------
        slide
            Slide id, file name, path or a one-slide patient's id.

        Returns
        -------
        list of workbench.io.Annotation or None
            The polygons (level-0 pixels), or ``None`` when the slide has no annotation file.
        """
        sid = self._key(slide)
        path = self._annotation_files.get(sid)
        if path is None:
            return None
        if sid not in self._annotation_cache:
            from workbench.io._geojson import read_geojson

            anns = [a for a in read_geojson(path) if a.geometry_type in ("Polygon", "MultiPolygon")]
            if self.lesion_class is not None:
                wanted = (
                    [self.lesion_class] if isinstance(self.lesion_class, str) else self.lesion_class
                )
                wanted_lower = {w.lower() for w in wanted}
                anns = [a for a in anns if (a.classification or "").lower() in wanted_lower]
            self._annotation_cache[sid] = anns
        return list(self._annotation_cache[sid])

    def dimensions(self, slide: str | os.PathLike) -> tuple[int, int]:
        """Level-0 ``(width, height)`` of a slide (opened once, then remembered).

        Parameters
        ----------
        slide
            Slide id, file name, path or a one-slide patient's id.

        Returns
        -------
        tuple of int
            ``(width, height)`` in level-0 pixels.
        """
        sid = self._key(slide)
        if sid not in self._dimensions:
            with self.open(sid) as s:
                self._dimensions[sid] = tuple(int(v) for v in s.dimensions)
        return self._dimensions[sid]

    def lesion_mask(
        self, slide: str | os.PathLike, downsample: float = 16
    ) -> tuple[np.ndarray, float] | None:
        """The lesion annotations rasterised at ``downsample`` level-0 pixels per mask pixel.

        Parameters
        ----------
        slide
            Slide id, file name, path or a one-slide patient's id.
        downsample
            Level-0 pixels per mask pixel.

        Returns
        -------
        tuple or None
            ``(mask, downsample)`` with ``mask`` a bool array covering the slide, or ``None``
            when the slide has no annotation file.
        """
        anns = self.annotations(slide)
        if anns is None:
            return None
        from workbench.io._geojson import annotations_to_mask

        w, h = self.dimensions(slide)
        ds = float(downsample)
        shape = (max(1, int(np.ceil(h / ds))), max(1, int(np.ceil(w / ds))))
        return annotations_to_mask(anns, shape, scale_xy=(ds, ds)), ds

    # ------------------------------------------------------------------------ subsets
    def subset(self, slides: Iterable[str | os.PathLike]) -> Cohort:
        """A cohort of these slides, in the given order.

        Parameters
        ----------
        slides
            Keys that :meth:`slide_path` accepts, each slide once.

        Returns
        -------
        Cohort
            A new cohort of the same class (this one is unchanged).

        Raises
        ------
        workbench.CohortError
            No slide given, or a slide named more than once.
        workbench.UnknownSlideError
            A key matches no slide.
        """
        keys = [self._key(s) for s in slides]
        if not keys:
            raise CohortError("a subset needs at least one slide")
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise CohortError(f"slides named more than once in the subset ({_names(dup)})")
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        order = {k: i for i, k in enumerate(keys)}
        rows = self.clinical[self.clinical[self._id_key].isin(order)]
        new.clinical = rows.iloc[np.argsort([order[s] for s in rows[self._id_key]])].reset_index(
            drop=True
        )
        new._paths = {k: self._paths[k] for k in keys}
        new._mpp = {k: v for k, v in self._mpp.items() if k in order}
        new._annotation_files = {k: v for k, v in self._annotation_files.items() if k in order}
        new._annotation_cache = {k: v for k, v in self._annotation_cache.items() if k in order}
        new._dimensions = {k: v for k, v in self._dimensions.items() if k in order}
        new._subset_hook(keys)
        return new

    def assign(self, **columns) -> Cohort:
        """A copy of the cohort with clinical columns added or replaced.

        Works like :meth:`pandas.DataFrame.assign`.

        Parameters
        ----------
        **columns
            Column name → a Series indexed by slide id, a sequence in :attr:`slide_ids`
            order, a scalar, or a function of the clinical table.

        Returns
        -------
        Cohort
            The new cohort (this one is unchanged).

        Raises
        ------
        workbench.CohortError
            A column would replace the slide id, patient or survival columns.

        Examples
        --------
        >>> cohort = cohort.assign(high_grade=lambda t: t["grade"] >= 3)  # doctest: +SKIP
        """
        protected = {self._id_key, self.patient_key, self.duration_key, self.event_key} - {None}
        clash = sorted(protected & set(columns))
        if clash:
            raise CohortError(f"assign cannot replace the identifier/survival columns {clash}")
        new = self.subset(self.slide_ids)
        table = new.clinical.copy()
        for name, value in columns.items():
            if callable(value):
                value = value(table)
            if isinstance(value, pd.Series):
                by_id = set(self.slide_ids) <= set(map(str, value.index))
                if by_id:
                    value = value.set_axis(value.index.map(str)).reindex(self.slide_ids)
                value = value.to_numpy()
            table[name] = value
        new.clinical = table
        return new

    def _subset_hook(self, keys: list[str]) -> None:
        """Subclasses restrict what else they carry to the subset's slides."""


__all__ = ["ANNOTATION_SUFFIXES", "SLIDE_SUFFIXES", "Cohort", "list_slides", "slide_id"]
