"""The steps of a run, each implemented once: the CLI's commands and the demo call these.

Every step is a short sequence of public calls (``io.Cohort``, ``tl.SlideTrainer``,
``tl.extract_cohort``, ``tl.discover``) plus the files it writes into a run folder, so that
``workbench train …`` on a user's folder and the demo's train step are the same code.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import pandas as pd

    from workbench.io import Cohort
    from workbench.tl import SlideTrainer

logger = logging.getLogger(__name__)


def output_folder(
    path: str | os.PathLike, *, what: str = "output folder", create: bool = True
) -> Path:
    """``path`` as a folder a step may write into (see :func:`workbench.io._atomic.output_folder`)."""
    from workbench.io._atomic import output_folder as _output_folder

    return _output_folder(path, what=what, create=create)


def start_step(
    folder: str | os.PathLike, *, what: str = "output folder", create: bool = True
) -> Path:
    """Where a step starts: make sure ``folder`` can be written and remove the temporary files
    that an interrupted earlier run left in it (:func:`workbench.io.clean_partial`). With
    ``create=False`` a missing folder is left for the step to make once its inputs checked
    out (a step that fails on bad input leaves nothing behind)."""
    from workbench.io import OutputWriteError, clean_partial

    folder = output_folder(folder, what=what, create=create)
    probe = folder if folder.exists() else next((p for p in folder.parents if p.exists()), None)
    if probe is not None and not os.access(probe, os.W_OK):  # before any work, not after it
        raise OutputWriteError(
            f"the {what} {str(folder)!r} is not writable"
            + (f" ({str(probe)!r} is read-only)" if probe != folder else "")
            + "; choose a writable location"
        )
    removed = clean_partial(folder, recursive=True)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run", len(removed))
    return folder


def slide_results(folder: str | os.PathLike) -> list[Path]:
    """The per-slide ``.h5ad`` files of ``folder`` (what ``tl.extract_cohort`` writes), each
    checked to open as HDF5.

    Raises
    ------
    ResultFileError
        The folder is missing or holds no ``.h5ad`` file, or a file is truncated or not HDF5
        (named, with what to do).
    """
    import h5py

    from workbench import ResultFileError
    from workbench.io import list_results

    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ResultFileError(
            f"the slide results folder {str(folder)!r} {what}; give the folder that "
            "`workbench extract --out` wrote"
        )
    paths = list_results(folder, "*.h5ad")
    if not paths:
        raise ResultFileError(
            f"no .h5ad files in {str(folder)!r}; run `workbench extract SLIDES --model MODEL "
            f"--out {folder}` first"
        )
    for p in paths:
        try:
            with h5py.File(p, "r"):
                pass
        except OSError as exc:
            reason = str(exc).split("(", 1)[-1].rstrip(")") if "(" in str(exc) else str(exc)
            raise ResultFileError(
                f"{str(p)!r} cannot be read ({reason}): it is truncated or not an .h5ad file; "
                "delete it and run `workbench extract` again (finished slides are skipped)"
            ) from None
    return paths


def open_cohort(
    slides: str | os.PathLike,
    clinical: str | os.PathLike | pd.DataFrame | None = None,
    *,
    annotations: str | os.PathLike | None = None,
    lesion_class: str | Sequence[str] | None = "Tumor",
    mpp: float | Mapping[str, float] | None = None,
    on_unmatched: str = "raise",
    **keys,
) -> Cohort:
    """``io.Cohort.from_folder`` with the CLI's options (``keys``: ``slide_key=`` …)."""
    from workbench.io import Cohort

    return Cohort.from_folder(
        slides,
        clinical,
        mpp=mpp,
        annotations_dir=annotations,
        lesion_class=lesion_class,
        on_unmatched=on_unmatched,
        **keys,
    )


def train_step(
    cohort: Cohort,
    out: str | os.PathLike,
    *,
    label: str,
    classes: Sequence[str] | None = None,
    kind: str = "sew",
    epochs: int = 30,
    seed: int = 0,
    encoder: Any = None,
    stain: str | None = None,
    validation: float | None = None,
    folds: int | None = None,
    repeats: int = 1,
    refit: bool = False,
    on_conflict: str = "raise",
    slide_ids: Sequence[str] | None = None,
    settings: dict | None = None,
    progress: bool = True,
    survival: tuple[str, str] | None = None,
    model_kwargs: dict | None = None,
    label_smoothing: float = 0.0,
) -> SlideTrainer:
    """Train on ``cohort``'s ``label`` column and save the checkpoint folder ``out``.

    ``model_kwargs`` go to the model's constructor (e.g. ``{"confirm_candidates": 12}`` for
    ``kind="sew"``); ``label_smoothing`` to :class:`~workbench.tl.SlideTrainer` (stored in
    the checkpoint's record).

    With ``survival=(time_column, event_column)`` the model learns a Cox risk instead
    (``SlideTrainer(target="survival")``; ``label`` is not used).

    The checkpoint holds the training record (:meth:`~workbench.tl.SlideTrainer.save`: label,
    classes, the slides used and those left out, how the final model was fit, its
    temperature, the history and the validation / cross-validation results), which
    :func:`training_record` and ``workbench report`` read; with ``folds``,
    ``out/oof_predictions.csv`` holds the out-of-fold predictions. A ``training.json`` that
    an earlier version wrote into ``out`` is removed (it would describe the model replaced).
    """
    from workbench.tl import SlideTrainer

    out = start_step(out, what="checkpoint folder", create=False)
    if classes is not None:
        # Values of the column keep their type; classes given as text match them by text.
        values = {str(v): v for v in cohort.labels(label).unique()}
        classes = [values.get(str(c), c) for c in classes]
    more: dict[str, Any] = {}
    if survival is not None:
        more = {"target": "survival", "time_key": survival[0], "event_key": survival[1]}
    if model_kwargs:
        more["model_kwargs"] = dict(model_kwargs)
    trainer = SlideTrainer(
        **more,
        kind=kind,
        label=label,
        classes=classes,
        epochs=epochs,
        seed=seed,
        encoder=encoder,
        stain=stain,
        validation=validation,
        folds=folds,
        repeats=repeats,
        refit=refit,
        on_conflict=on_conflict,
        settings=dict(settings or {}),
        progress=progress,
        label_smoothing=label_smoothing,
    )
    trainer.fit(cohort, slide_ids=slide_ids)
    trainer.save(out)
    (out / LEGACY_RECORD).unlink(missing_ok=True)
    return trainer


#: The file earlier versions wrote the training record to, beside the checkpoint (and, in a
#: demo run, into the run folder); read only when a checkpoint holds no record.
LEGACY_RECORD = "training.json"


def training_record(folder: str | os.PathLike) -> dict | None:
    """The training record of a model: what :meth:`~workbench.tl.SlideTrainer.save` stored
    in its checkpoint, read without torch.

    Parameters
    ----------
    folder
        A checkpoint folder (``config.json`` + weights). A folder of an older run that holds a
        ``training.json`` instead (and no record in a checkpoint) is read too.

    Returns
    -------
    dict or None
        The record (``kind``, ``label``, ``classes``, ``train_slides``,
        ``held_out_slides``, ``final_model``, ``calibration``, ``validation``, ``cv``,
        ``cv_summary``, ``oof_predictions``, ``history`` …), with the names of older records
        mapped to these (``trained_on`` -> ``train_slides``, ``test_slides`` ->
        ``held_out_slides``); ``None`` when the folder holds neither.
    """
    folder = Path(folder)
    record = None
    config = folder / "config.json"
    if config.is_file():
        try:
            extra = json.loads(config.read_text(encoding="utf-8")).get("extra")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            logger.warning("%s cannot be read (%s); no training record from it", config, exc)
            extra = None
        if isinstance(extra, dict) and "history" in extra:
            record = dict(extra)
    if record is None and (folder / LEGACY_RECORD).is_file():
        try:
            record = json.loads((folder / LEGACY_RECORD).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("%s cannot be read (%s)", folder / LEGACY_RECORD, exc)
        if not isinstance(record, dict):
            record = None
    if record is None:
        return None
    record.setdefault("train_slides", record.get("trained_on", []))
    record.setdefault("held_out_slides", record.get("test_slides", []))
    if "oof_predictions" not in record and (folder / "oof_predictions.csv").is_file():
        record["oof_predictions"] = "oof_predictions.csv"  # checkpoints saved before the key
    return record


def extract_step(
    slides,
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    client: Any = None,
    n_workers: int = 2,
    mpp: float | None = None,
    top_k: int | None = None,
    overwrite: bool = False,
    encoder: Any = None,
    progress: bool = True,
    connect_timeout: float = 10.0,
    force: bool = False,
) -> pd.DataFrame:
    """Explain every slide of a cohort (or folder, or list) into ``out/<slide_id>.h5ad``.

    Resumable: a slide whose file records the same model and settings is skipped, any other
    file is computed again (see :func:`workbench.tl.extract_cohort`).
    """
    from workbench.tl import extract_cohort

    return extract_cohort(
        slides,
        model,
        out,
        client=client,
        n_workers=n_workers,
        mpp=mpp,
        top_k=top_k,
        overwrite=overwrite,
        encoder=encoder,
        progress=progress,
        connect_timeout=connect_timeout,
        force=force,
    )


def discover_step(
    slides_dir: str | os.PathLike,
    clinical,
    out: str | os.PathLike,
    *,
    validation_fraction: float = 0.5,
    folds: int | None = None,
    site_key: str | None = None,
    on_unmatched: str = "raise",
    seed: int = 0,
    **keys,
) -> anndata.AnnData:
    """Phenotypes, spatial markers and the survival screen; writes ``discovery.h5ad`` and
    ``markers.csv`` into ``out``.

    ``clinical`` is a :class:`~workbench.io.Cohort` (its table and column names are used), a
    DataFrame or a CSV path (its slide column may hold ids, file names or paths; ``keys``
    name its columns: ``slide_key=``, ``patient_key=``, ``duration_key=``, ``event_key=``).
    """
    from workbench.io import Cohort, atomic_write_text, write_h5ad
    from workbench.tl import discover, read_slides

    out = start_step(out)
    slide_results(slides_dir)  # a missing, empty or damaged folder: one clear error
    cohort = Cohort.from_clinical(clinical, **keys)
    result = discover(
        read_slides(slides_dir),
        cohort,
        validation_fraction=validation_fraction,
        folds=folds,
        site_key=site_key,
        on_unmatched=on_unmatched,
        seed=seed,
    )
    write_h5ad(result, out / "discovery.h5ad")
    atomic_write_text(out / "markers.csv", result.uns["survival_screen"].to_csv())
    return result
