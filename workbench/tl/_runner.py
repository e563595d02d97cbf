"""The cohort runner: ``tl.extract_cohort`` over many slides (resume by fingerprint, in this
process or on a dask cluster) and ``tl.model_fingerprint``, the name of a trained model."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._constants import EXPLAIN, EXTRACT_FINGERPRINT
from workbench.io._fingerprint import canonical_json
from workbench.tl._calibration import model_temperature
from workbench.tl._engine import release_freed_memory
from workbench.tl._explain import extract, load_model

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["extract_cohort", "model_fingerprint"]

logger = logging.getLogger(__name__)


def _slide_table(slides) -> list[tuple[str, Any, float | None]]:
    """``(slide_id, path or Slide, mpp override)`` from a Cohort, a folder, a mapping or a
    list of paths (ids by :func:`workbench.io.slide_id`)."""
    from workbench.io import Cohort

    if isinstance(slides, Cohort):
        return [(sid, str(slides.slide_path(sid)), slides.mpp_of(sid)) for sid in slides.slide_ids]
    if isinstance(slides, Mapping):
        # Slide objects are kept as they are (usable without a dask client).
        return [
            (str(k), v if hasattr(v, "read_region") else str(v), None) for k, v in slides.items()
        ]
    if isinstance(slides, str | os.PathLike) and Path(slides).is_dir():
        slides = Cohort.from_folder(slides)
        return _slide_table(slides)
    if isinstance(slides, str | os.PathLike):
        slides = [slides]
    from workbench.io._cohort import _slide_table as paths_by_id

    return [(sid, str(p), None) for sid, p in paths_by_id(list(slides)).items()]


def _status_row(sid: str, path, out, status: str, error: str = "") -> dict:
    """One row of ``extract_cohort``'s status table."""
    return {
        "slide_id": sid,
        "path": str(getattr(path, "path", path)),
        "output": str(out),
        "status": status,
        "error": error,
    }


# ---------------------------------------------------------------------- fingerprints
def _checkpoint_json(folder: Path) -> dict:
    """``config.json`` of a checkpoint folder, read as JSON only (no torch)."""
    from workbench._errors import CheckpointError

    if folder.is_file():
        folder = folder.parent
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint at {str(folder)!r} (it has no config.json); pass the folder that "
            "`workbench train` or SlideTrainer.save wrote"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not readable JSON ({exc}); the checkpoint is damaged, save it again"
        ) from None
    if not isinstance(config, dict) or not {"model", "config", "weights_sha256"} <= set(config):
        raise CheckpointError(f"{str(path)!r} is not a workbench checkpoint configuration")
    return config


def model_fingerprint(model) -> str:
    """A SHA-256 that names a trained model: its class, configuration, weights and temperature.

    The same for a checkpoint folder and for the model saved there or loaded from it, so a
    result can say which model made it (``tl.extract_cohort`` records it in every file and
    recomputes the files another model made). The weights count by their tensors (names,
    shapes, dtypes, values), not by the bytes of the file, so a model and its checkpoint get
    the same fingerprint; reading a folder needs no torch.

    Parameters
    ----------
    model
        A checkpoint folder (or one of its files), or a model object
        (a :class:`~workbench.models.SlideModel` of any kind).

    Returns
    -------
    str
        64 hexadecimal digits.

    Raises
    ------
    CheckpointError
        The folder holds no readable checkpoint configuration.
    """
    if isinstance(model, str | os.PathLike):
        folder = Path(model)
        folder = folder.parent if folder.is_file() else folder
        config = _checkpoint_json(folder)
        name, cfg = config["model"], config["config"]
        temperature = model_temperature(_CheckpointRecord(config.get("extra")))
        weights_file = folder / config.get("weights_file", "model.safetensors")
        try:
            weights = _weights_digest(weights_file.read_bytes())
        except OSError as exc:
            from workbench._errors import CheckpointError

            raise CheckpointError(
                f"the weights of the checkpoint {str(folder)!r} cannot be read ({exc}); save "
                "the model again"
            ) from None
    else:
        from safetensors.torch import save

        name = type(model).__name__
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        weights, cfg = _weights_digest(save(state)), getattr(model, "config", {})
        temperature = model_temperature(model)
    record = {"model": name, "config": cfg, "weights": weights}
    if temperature != 1.0:  # a calibrated model makes other probabilities
        record["temperature"] = temperature
    text = canonical_json(record)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _CheckpointRecord:
    """What :func:`model_temperature` reads, from a checkpoint's ``extra`` without torch."""

    def __init__(self, extra) -> None:
        self.checkpoint_extra_ = extra if isinstance(extra, dict) else {}


def _weights_digest(data: bytes) -> str:
    """SHA-256 of a safetensors file's tensors (names, dtypes, shapes and bytes), whatever
    metadata it carries and in whatever order its header lists them: safetensors writes the
    header's keys in an order that can differ from one save to the next, so the digest of the
    file's bytes does not name the weights."""
    import struct

    from workbench._errors import CheckpointError

    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
    except (struct.error, ValueError) as exc:
        raise CheckpointError(f"not a safetensors file ({exc}); save the model again") from None
    body = memoryview(data)[8 + n :]
    digest = hashlib.sha256()
    for key in sorted(k for k in header if k != "__metadata__"):
        entry = header[key]
        start, end = entry["data_offsets"]
        digest.update(canonical_json([key, entry["dtype"], entry["shape"]]).encode("utf-8"))
        digest.update(body[start:end])
    return digest.hexdigest()


_SIGNATURE_BYTES = 1 << 16


def _slide_signature(path) -> dict | None:
    """Size and a SHA-256 of the first and last 64 KiB of a slide file (cheap for any size;
    a replaced file reads differently there)."""
    path = getattr(path, "path", path)
    if not isinstance(path, str | os.PathLike) or not Path(path).is_file():
        return None  # an in-memory slide
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read(_SIGNATURE_BYTES))
            if size > _SIGNATURE_BYTES:
                fh.seek(max(size - _SIGNATURE_BYTES, _SIGNATURE_BYTES))
                digest.update(fh.read(_SIGNATURE_BYTES))
    except OSError:
        return None
    return {"bytes": int(size), "sha256_ends": digest.hexdigest()}


def _extract_fingerprint(model_fp: str, top_k, mpp, path, force: bool = False) -> dict:
    """What one slide's output depends on (``None`` entries left out: h5ad cannot hold them)."""
    from workbench import __version__

    fp = {"model": model_fp, "workbench": __version__}
    if force:  # only when asked, so files made without it keep their fingerprint
        fp["force_grade"] = True
    if top_k is not None:
        fp["top_k"] = int(top_k)
    if mpp is not None:
        fp["mpp"] = float(mpp)
    sig = _slide_signature(path)
    if sig is not None:
        fp["slide"] = sig
    return fp


def _recorded_fingerprint(path: Path) -> dict | None:
    """The fingerprint an existing output records; ``None`` when it records none or cannot be
    read (truncated, not HDF5): either way the slide is computed again."""
    import h5py
    from anndata.io import read_elem

    try:
        with h5py.File(path, "r") as f:
            node = f.get(f"uns/{EXTRACT_FINGERPRINT}")
            return None if node is None else json.loads(canonical_json(read_elem(node)))
    except Exception:  # any unreadable file is recomputed, never trusted
        return None


def _same(a: dict | None, b: dict) -> bool:
    return a is not None and canonical_json(a) == canonical_json(b)


#: The applicability columns of ``extract_cohort``'s table (see ``tl.extract``).
APPLICABILITY_COLUMNS = ["applicable", "applicability_score", "graded", "applicability_reasons"]


def _recorded_applicability(path) -> dict:
    """The applicability verdict an output file stores, as table columns (NaN/empty when
    the file has none: made by an older version, or unreadable)."""
    import h5py
    from anndata.io import read_elem

    row = {"applicable": None, "applicability_score": np.nan, "graded": None}
    row["applicability_reasons"] = ""
    if path is None:
        return row
    try:
        with h5py.File(path, "r") as f:
            node = f.get(f"uns/{EXPLAIN}/applicability")
            if node is None:
                return row
            v = read_elem(node)
    except Exception:  # the status column already says what happened to the file
        return row
    reasons = v.get("reasons", [])
    reasons = [str(r) for r in np.atleast_1d(reasons) if str(r)] if len(reasons) else []
    return {
        "applicable": bool(v.get("applicable", True)),
        "applicability_score": float(v.get("score", np.nan)),
        "graded": bool(v.get("graded", True)),
        "applicability_reasons": "; ".join(reasons),
    }


# ---------------------------------------------------------------------- running
def _extract_to_file(
    path,
    model,
    out_path: str,
    mpp: float | None,
    top_k: int | None,
    slide_id: str,
    encoder=None,
    fingerprint: dict | None = None,
    force: bool = False,
) -> str:
    from workbench.io import write_h5ad

    adata = extract(
        path, model, mpp=mpp, top_k=top_k, slide_id=slide_id, encoder=encoder, force=force
    )
    if fingerprint is not None:
        adata.uns[EXTRACT_FINGERPRINT] = fingerprint
    write_h5ad(adata, out_path)
    del adata
    release_freed_memory()  # else the heap grows slide after slide (glibc keeps freed blocks)
    return out_path


def _check_options(n_workers, top_k, connect_timeout) -> None:
    from workbench._errors import OptionError

    def whole(v) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not (whole(n_workers) and n_workers >= 1):
        raise OptionError(
            f"n_workers must be a whole number >= 1 (workers of a local dask cluster), got "
            f"{n_workers!r}; a cluster without workers would never finish"
        )
    if top_k is not None and not (whole(top_k) and top_k >= 1):
        raise OptionError(
            f"top_k must be None (the model's own) or a whole number >= 1, got {top_k!r}"
        )
    ok = isinstance(connect_timeout, int | float) and not isinstance(connect_timeout, bool)
    if not (ok and np.isfinite(connect_timeout) and connect_timeout > 0):
        raise OptionError(
            f"connect_timeout must be a number of seconds > 0, got {connect_timeout!r}"
        )


def _prepare_out_dir(out_dir: Path) -> None:
    from workbench.io._atomic import output_folder

    output_folder(out_dir, what="output folder for the per-slide results")


def extract_cohort(
    slides: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike] | Any,
    model,
    out_dir: str | os.PathLike,
    *,
    client: Any = None,
    n_workers: int = 2,
    mpp: float | None = None,
    top_k: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    encoder=None,
    connect_timeout: float = 10.0,
    force: bool = False,
) -> pd.DataFrame:
    """Run :func:`extract` on many slides, one ``<slide_id>.h5ad`` per slide in ``out_dir``.

    Each file is written atomically (temporary file, then rename), so an interrupted run
    leaves only complete files; temporary files that a killed run left behind are removed
    first (:func:`workbench.io.clean_partial`). Every file records what it was made from in
    ``uns["extract_fingerprint"]``: the model (:func:`model_fingerprint`: its class,
    configuration and weights, hence also its tile encoder and stain normalisation), the
    ``top_k`` and ``mpp`` asked for, the slide file (size and a checksum of its first and
    last 64 KiB) and the workbench version. A rerun skips a slide only when its file records
    the same fingerprint (resume); a file made by another model or with other settings, or
    one that cannot be read, is removed and computed again. A slide that fails is reported
    in the returned table and does not stop the others.

    Parameters
    ----------
    slides
        A :class:`~workbench.io.Cohort` (its per-slide mpp overrides apply), a folder of
        slides, ``{slide_id: path}``, or a list of paths (ids by
        :func:`workbench.io.slide_id`).
    model
        A trained :class:`~workbench.models.SlideModel` of any kind, or its checkpoint folder.
    out_dir
        Output folder (created if missing).
    client
        ``None`` runs in this process; ``"local"`` starts a local ``dask.distributed``
        cluster of ``n_workers`` single-threaded workers for this call; a scheduler address
        (``"tcp://host:8786"``) or a ``distributed.Client`` fans the slides out to that
        cluster (workers need the slide paths and ``out_dir`` on a shared file system).
    n_workers
        Workers of the local cluster (at least 1).
    mpp
        Resolution for slides that record none (a cohort's own overrides come first).
    top_k
        Focus regions per slide (default: the model's; at least 1).
    overwrite
        Recompute every slide, also those whose output was made by this model.
    progress
        Show a tqdm progress bar.
    encoder
        The frozen tile encoder the checkpoint was trained with, if not at its recorded path.
    connect_timeout
        Seconds to wait for a scheduler at the ``client`` address before giving up.
    force
        Grade slides that do not look like brightfield H&E too (``extract(force=True)``).

    Returns
    -------
    pandas.DataFrame
        One row per slide: ``slide_id``, ``path`` (input), ``output``, ``status``
        (``"done"``, ``"skipped"`` or ``"failed"``), ``error``, and the slide's stored
        applicability verdict (``uns["explain"]["applicability"]``): ``applicable``,
        ``applicability_score``, ``graded`` and ``applicability_reasons`` (joined by
        ``"; "``); empty for a failed slide or a file written before verdicts existed.

    Raises
    ------
    OptionError
        ``n_workers``, ``top_k`` or ``connect_timeout`` out of range.
    OutputWriteError
        ``out_dir`` is a file or cannot be created.
    CheckpointError
        ``model`` names no readable, untampered checkpoint.
    ClusterError
        The local cluster cannot start, or no scheduler answers at the ``client`` address.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from workbench.io import clean_partial

    _check_options(n_workers, top_k, connect_timeout)
    table = _slide_table(slides)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    clean_partial(out_dir, recursive=True)
    if isinstance(model, str | os.PathLike):
        from workbench.models import read_checkpoint_config

        read_checkpoint_config(model)  # a missing or edited checkpoint fails here, once
    model_fp = model_fingerprint(model)
    rows, todo, stale = [], [], 0
    for sid, path, own_mpp in table:
        out = out_dir / f"{sid}.h5ad"
        slide_mpp = own_mpp if own_mpp is not None else mpp
        fp = _extract_fingerprint(model_fp, top_k, slide_mpp, path, force)
        if out.exists() and not overwrite:
            if _same(_recorded_fingerprint(out), fp):
                rows.append(_status_row(sid, path, out, "skipped"))
                continue
            logger.info("%s was made by another model, other settings or slide; recomputed", out)
            out.unlink(missing_ok=True)  # a stale result is never left for a reader
            stale += 1
        todo.append((sid, path, str(out), slide_mpp, fp))
    if stale:
        logger.warning(
            "extract_cohort: %d existing file(s) in %s were made by another model or with other "
            "settings; they are computed again",
            stale,
            out_dir,
        )
    if todo and client is None:
        model = load_model(model, encoder=encoder)
        for sid, path, out, slide_mpp, fp in tqdm(todo, desc="extract", disable=not progress):
            try:
                _extract_to_file(
                    path, model, out, slide_mpp, top_k, sid, fingerprint=fp, force=force
                )
                rows.append(_status_row(sid, path, out, "done"))
            except Exception as exc:  # report and carry on with the other slides
                logger.warning("extract failed on %s: %s", path, exc)
                rows.append(_status_row(sid, path, out, "failed", f"{type(exc).__name__}: {exc}"))
    elif todo:
        rows.extend(
            _extract_distributed(
                todo,
                model,
                out_dir,
                client,
                n_workers,
                top_k,
                progress,
                encoder,
                connect_timeout,
                force=force,
            )
        )
    order = {sid: i for i, (sid, _, _) in enumerate(table)}
    for row in rows:
        ok = row["status"] != "failed"
        row.update(_recorded_applicability(row["output"]) if ok else _recorded_applicability(None))
    columns = ["slide_id", "path", "output", "status", "error", *APPLICABILITY_COLUMNS]
    df = pd.DataFrame(rows, columns=columns)
    df = df.sort_values("slide_id", key=lambda s: s.map(order)).reset_index(drop=True)
    logger.info("extract_cohort: %s", df["status"].value_counts().to_dict())
    return df


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast, with a clear message, when nothing listens at a tcp/tls scheduler address."""
    import socket
    from urllib.parse import urlsplit

    from workbench._errors import ClusterError

    text = address if "://" in address else f"tcp://{address}"
    parts = urlsplit(text)
    if parts.scheme not in ("tcp", "tls"):
        return  # other transports (ucx, inproc …): left to dask
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise ClusterError(
            f"{address!r} is not a scheduler address; give 'local' or tcp://HOST:PORT "
            "(e.g. tcp://scheduler:8786)"
        )
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if parts.scheme == "tcp":
                _expect_scheduler_greeting(sock, address, timeout)
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(
            f"no dask scheduler answers at {address!r} ({why} within {timeout:g} s); check the "
            "address, start one with `dask scheduler`, or use client='local' (--client local)"
        ) from None


def _expect_scheduler_greeting(sock, address: str, timeout: float) -> None:
    """A dask scheduler speaks first on a new tcp connection (its handshake); a program that
    accepts the connection and says nothing would make dask's own connect wait forever (its
    handshake read has no time limit), so wait at most ``timeout`` for the first bytes."""
    from workbench._errors import ClusterError

    sock.settimeout(timeout)
    try:
        first = sock.recv(1)
    except TimeoutError:
        raise ClusterError(
            f"something at {address!r} accepts connections but sent nothing within "
            f"{timeout:g} s, so it is not a dask scheduler (or is stuck); check the address "
            "and port, or raise --connect-timeout"
        ) from None
    if not first:
        raise ClusterError(
            f"something at {address!r} accepted the connection and closed it at once; it is "
            "not a dask scheduler that takes clients; check the address and port"
        )


def _extract_distributed(
    todo,
    model,
    out_dir,
    client,
    n_workers,
    top_k,
    progress,
    encoder,
    connect_timeout=10.0,
    *,
    force: bool = False,
) -> list[dict]:
    import dask
    from distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    from workbench._errors import ClusterError

    # Workers load the model from a checkpoint folder: plain files, nothing pickled.
    if isinstance(model, str | os.PathLike):
        ckpt = str(model)
    else:
        from workbench.models import save_checkpoint

        # what extract reads besides the weights travels too: temperature, applicability record
        recorded = getattr(model, "checkpoint_extra_", None) or {}
        extra = {}
        for key in ("calibration", "applicability"):
            value = getattr(model, f"{key}_", None)
            value = recorded.get(key) if value is None else value
            if value is not None:
                extra[key] = json.loads(canonical_json(value))
        ckpt = str(save_checkpoint(model, out_dir / ".model", extra=extra))
    enc = encoder
    if enc is None and getattr(model, "tile_encoder", None) is not None:
        enc = getattr(model.tile_encoder, "file", None)  # a module cannot travel; a file can
    if enc is not None and not isinstance(enc, str | os.PathLike):
        raise TypeError("with a dask client, pass the tile encoder as a .pt2 file path")
    own_client = own_cluster = None
    if client == "local":
        try:
            own_cluster = LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            own_client = client = Client(own_cluster)
        except Exception as exc:  # whatever stopped the workers, say it in one line
            if own_cluster is not None:
                own_cluster.close()
            raise ClusterError(
                f"could not start a local dask cluster of {n_workers} worker(s): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    elif isinstance(client, str):
        _check_reachable(client, connect_timeout)
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": f"{connect_timeout}s"}):
                own_client = client = Client(client, timeout=connect_timeout)
        except Exception as exc:  # a timeout, a refused handshake, another protocol …
            raise ClusterError(
                f"could not connect to the dask scheduler at {client!r} within "
                f"{connect_timeout:g} s ({type(exc).__name__}: {exc}); check the address"
            ) from None
    rows = []
    try:
        futures = {
            client.submit(
                _extract_to_file,
                path,
                ckpt,
                out,
                slide_mpp,
                top_k,
                sid,
                enc,
                fp,
                force,
                pure=False,
            ): (sid, path, out)
            for sid, path, out, slide_mpp, fp in todo
        }
        for fut in tqdm(
            as_completed(futures), total=len(futures), desc="extract", disable=not progress
        ):
            sid, path, out = futures.pop(fut)
            try:
                fut.result()
                rows.append(_status_row(sid, path, out, "done"))
            except Exception as exc:
                rows.append(_status_row(sid, path, out, "failed", f"{type(exc).__name__}: {exc}"))
            fut.release()  # the cluster forgets a finished slide (its state grew with the run)
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    return rows
