"""Atomic file writes: a crash or a bad input never leaves a half-written result.

Every file is first written into a hidden ``.partial/`` folder next to its destination and
then renamed onto the final name with :func:`os.replace`, which is atomic on POSIX and Windows
within one file system. The previous version of the file, if any, stays intact until the
rename.

Why a hidden folder: a process killed mid-write (``kill -9``, out of memory, a lost dask
worker) cannot remove its temporary file. Inside ``.partial/`` that file can never be taken
for a result: ``folder.glob("*.h5ad")`` or ``*.tif`` does not look into sub-folders, and
:func:`list_results` (what the package's readers use) also skips hidden names. The temporary
file keeps the real suffix, because some writers dispatch on it (PIL, ``numpy.save``), and its
name records who writes it (host, process id and start time) so that :func:`clean_partial`
can tell a dead writer's leftovers from a file another live process is still writing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from workbench._errors import WorkbenchError

if TYPE_CHECKING:  # pragma: no cover
    import anndata

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
"""Name of the hidden folder that holds files being written."""

DEFAULT_STALE_AFTER_S = 3600.0
"""A temporary file untouched this long is stale even when its writer cannot be checked."""

# <final name>.partial-<host hash>-<pid>-<process start>-<random><suffix>
_TEMP_RE = re.compile(r"\.partial-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]+")
# What the earlier scheme (a hidden mkstemp file beside the result) left behind after a kill:
# ".S000.h5ad.tmp-abc123.h5ad" (atomic_path) and ".model.safetensors.abc123.tmp" (checkpoints).
_LEGACY_RE = re.compile(r"^\..+(\.tmp-[A-Za-z0-9_]{6,}.*|\.[A-Za-z0-9_]{6,}\.tmp)$")


class OutputWriteError(WorkbenchError, OSError):
    """A result could not be written (read-only folder, full disk …); nothing was replaced."""


# ----------------------------------------------------------------------------- identity
def _host_hash() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _process_start(pid: int) -> int:
    """The kernel's start time of ``pid`` (clock ticks since boot), 0 where unknown.

    Together with the pid it identifies a process even after the pid has been reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # Field 22; the command name (field 2) may contain spaces, so count from its ")".
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):  # pragma: no cover - unexpected /proc format
        return 0


_IDENTITY: tuple[int, str] | None = None


def _writer_tag() -> str:
    global _IDENTITY
    pid = os.getpid()
    if _IDENTITY is None or _IDENTITY[0] != pid:  # recomputed after a fork
        _IDENTITY = (pid, f"{_host_hash()}-{pid}-{_process_start(pid)}")
    return _IDENTITY[1]


def _writer_alive(host: str, pid: int, start: int) -> bool | None:
    """Whether the process that made a temporary file still runs; ``None``: cannot tell."""
    if host != _host_hash() or sys.platform == "win32":
        # Another machine (a shared file system), or Windows, where os.kill(pid, 0) would
        # terminate the process: only the file's age can decide.
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    except OSError:  # pragma: no cover - unusual platforms
        return None
    if start and _process_start(pid) not in (0, start):
        return False  # the pid now belongs to a newer process
    return True


# ----------------------------------------------------------------------------- folders
def _prepare_folder(path: Path) -> None:
    if path.is_dir():
        raise OutputWriteError(
            f"{str(path)!r} is a folder, so a file of that name cannot be written; "
            "give a file name inside it"
        )
    for parent in (path.parent, *path.parent.parents):
        if parent.exists() and not parent.is_dir():
            raise OutputWriteError(
                f"cannot save {path.name!r}: {str(parent)!r} is a file, not a folder; "
                "choose an output folder that is not an existing file"
            )
        if parent.exists():
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(
            f"cannot create the folder {str(path.parent)!r} for {path.name!r}: {exc.strerror}; "
            "choose a writable location"
        ) from exc
    if not os.access(path.parent, os.W_OK):
        raise OutputWriteError(
            f"the folder {str(path.parent)!r} is not writable, so {path.name!r} cannot be saved "
            "there; choose a writable location"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _new_temp(path: Path, suffix: str) -> Path:
    """Create an empty, uniquely named temporary file for ``path`` inside ``.partial/``."""
    partial = path.parent / PARTIAL_DIR
    stem = path.name[:150]  # keep the temporary name under common 255-byte limits
    for _ in range(5):
        tmp = partial / f"{stem}.partial-{_writer_tag()}-{secrets.token_hex(4)}{suffix}"
        try:
            partial.mkdir(exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue  # a random clash: draw again
        except FileNotFoundError:
            continue  # another writer removed the empty .partial/ just now: make it again
        os.close(fd)
        return tmp
    raise OutputWriteError(f"could not create a temporary file for {str(path)!r} in {partial}")


def _remove_empty_partial(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (another writer) or already gone
        (folder / PARTIAL_DIR).rmdir()


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover - directories cannot be opened there
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# Failures of the write itself (as opposed to, say, a missing input read inside the block).
_WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.EIO,
    errno.EFBIG,
    getattr(errno, "EDQUOT", errno.ENOSPC),
}


def _write_failed(path: Path, exc: OSError) -> OutputWriteError:
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        hint = "the disk (or your quota) is full; free some space or choose another location"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the location is not writable; choose a writable location"
    else:
        hint = "check the location and try again"
    detail = exc.strerror or str(exc) or type(exc).__name__
    err = OutputWriteError(
        f"writing {str(path)!r} failed ({detail}): {hint}; the previous version, if any, "
        "is unchanged"
    )
    err.errno = code
    return err


# ----------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path for ``path``; rename it onto ``path`` if the block succeeds.

    For libraries that write by file name (tifffile, h5py, safetensors, PIL …). The
    temporary file lies in the hidden ``.partial/`` folder beside ``path`` and keeps the final
    suffix (or ``suffix``), since some writers dispatch on it. On an exception it is removed
    and ``path`` is left as it was; after a hard kill :func:`clean_partial` removes it.

    Parameters
    ----------
    path
        The file to write. Missing folders above it are created.
    suffix
        Suffix of the temporary file, when the writer needs another one than ``path``'s.

    Yields
    ------
    pathlib.Path
        The temporary file to write; it does not exist yet (remove-and-create is fine).

    Raises
    ------
    OutputWriteError
        The folder cannot be created or written, the target is a folder, the disk is full,
        or the block wrote nothing. Other exceptions from the block pass through unchanged.
    """
    path = Path(path)
    _prepare_folder(path)
    tmp = _new_temp(path, suffix if suffix is not None else path.suffix)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputWriteError(f"nothing was written for {str(path)!r}")
        _fsync_file(tmp)
        # Files we create get the permissions of any other file the user makes.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, WorkbenchError):
            names = {str(exc.filename), str(exc.filename2)}
            if exc.errno in _WRITE_ERRNOS or names & {str(tmp), str(path)}:
                raise _write_failed(path, exc) from exc
        raise
    finally:
        _remove_empty_partial(path.parent)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds.

    Parameters
    ----------
    path
        The file to write. Missing folders above it are created.
    mode
        ``"w"`` for text, ``"wb"`` for bytes.
    encoding
        Text encoding (ignored for ``"wb"``).

    Yields
    ------
    typing.IO
        The open temporary file; it is closed, flushed and renamed onto ``path`` when the
        block ends without an exception.

    Raises
    ------
    OutputWriteError
        The folder cannot be written or the disk is full; ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        kwargs = {"encoding": encoding} if mode == "w" else {}
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    Parameters
    ----------
    path
        The file to write. Missing folders above it are created.
    data
        The whole content.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path.

    Parameters
    ----------
    path
        The file to write. Missing folders above it are created.
    text
        The whole content.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_h5ad(adata: anndata.AnnData, path: str | os.PathLike) -> Path:
    """Write an AnnData to ``.h5ad`` atomically (the old file survives a failed write).

    Parameters
    ----------
    adata
        The data to write.
    path
        The ``.h5ad`` file. Missing folders above it are created.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    with atomic_path(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp)
    return path


# ----------------------------------------------------------------------------- reading side
def is_hidden(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> bool:
    """Whether ``path`` (or a folder between ``root`` and it) has a hidden name.

    Hidden names start with ``"."`` (``.partial/``, editor and OS files, the earlier
    ``.S000.h5ad.tmp-*`` leftovers) or ``"~$"`` (Office lock files). Readers skip them.

    Parameters
    ----------
    path
        The file or folder to check.
    root
        Only the parts of ``path`` below ``root`` are checked (a hidden folder above the
        results, such as ``~/.cache``, does not hide them). Default: only the name itself.

    Returns
    -------
    bool
        True when a checked name is hidden.
    """
    path = Path(path)
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return any(p.startswith((".", "~$")) for p in parts if p not in (".", ".."))


def list_results(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Files in ``folder`` matching ``pattern``, sorted, without hidden or temporary files.

    The glob every reader of results should use: a file still being written (or left by a
    killed writer) is never returned, even for recursive patterns such as ``"**/*.h5ad"``.

    Parameters
    ----------
    folder
        The folder to search. A missing folder gives an empty list.
    pattern
        A :meth:`pathlib.Path.glob` pattern relative to ``folder``.

    Returns
    -------
    list of pathlib.Path
        The matching files, sorted.
    """
    folder = Path(folder)
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not is_hidden(p, root=folder))


# ----------------------------------------------------------------------------- clean-up
def _stale_reason(path: Path, now: float, stale_after_s: float) -> str | None:
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return None  # gone already
    m = _TEMP_RE.search(path.name)
    if m is not None:
        alive = _writer_alive(m["host"], int(m["pid"]), int(m["start"]))
        if alive is False:
            return f"its writer (process {m['pid']}) is gone"
        if alive is None and age > stale_after_s:
            return f"untouched for {age / 60:.0f} min and its writer cannot be checked"
        verified = int(m["start"]) != 0  # pid and start time both match: the same process
        if alive and not verified and age > stale_after_s and int(m["pid"]) != os.getpid():
            # Without /proc a pid may have been reused; after this long, trust the age.
            return f"untouched for {age / 60:.0f} min"
        return None
    if age > stale_after_s:
        return f"untouched for {age / 60:.0f} min"
    return None


def clean_partial(
    folder: str | os.PathLike,
    *,
    recursive: bool = False,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> list[Path]:
    """Remove temporary files that killed writers left in ``folder``; call it when a step starts.

    A temporary file in ``folder/.partial/`` is removed when the process that was writing it
    no longer runs (same machine: checked by process id and start time), or, when that
    cannot be checked (written from another machine over a shared file system, or on
    Windows), when it has not been modified for ``stale_after_s`` seconds. A file that a live
    writer is still writing is never removed, so a step may call this while other workers of
    the same run are busy. Leftovers of the earlier naming scheme (``.S000.h5ad.tmp-*`` beside
    the result) are removed by age alone. Emptied ``.partial/`` folders are removed.

    Parameters
    ----------
    folder
        An output folder. A missing folder is fine (nothing to do).
    recursive
        Also clean every sub-folder (e.g. a whole run folder).
    stale_after_s
        Age after which a temporary file whose writer cannot be checked counts as stale.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if recursive:
        folders = [folder]
        for root, dirs, _ in os.walk(folder):
            dirs[:] = [d for d in dirs if d != PARTIAL_DIR]
            folders += [Path(root) / d for d in dirs]
    else:
        folders = [folder]
    now = time.time()
    removed: list[Path] = []
    for f in folders:
        candidates = []
        partial = f / PARTIAL_DIR
        if partial.is_dir():
            candidates += [p for p in partial.iterdir() if p.is_file()]
        with contextlib.suppress(OSError):
            candidates += [p for p in f.iterdir() if p.is_file() and _LEGACY_RE.match(p.name)]
        for p in candidates:
            reason = _stale_reason(p, now, stale_after_s)
            if reason is None:
                continue
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("could not remove the stale temporary file %s: %s", p, exc)
                continue
            logger.info("removed the stale temporary file %s (%s)", p, reason)
            removed.append(p)
        if partial.is_dir():
            _remove_empty_partial(f)
    return removed


def output_folder(
    path: str | os.PathLike, *, what: str = "output folder", create: bool = True
) -> Path:
    """``path`` as a folder a step may write into (created if missing, with ``create``).

    Raises
    ------
    OutputWriteError
        ``path`` (or a folder above it) is a file, or the folder cannot be created.
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"is inside {str(p)!r}, which is a file"
                raise OutputWriteError(
                    f"the {what} {str(path)!r} {where}; choose a folder (a new or existing one)"
                )
            break
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(
            f"cannot create the {what} {str(path)!r}: {exc.strerror or exc}; choose a writable "
            "location"
        ) from exc
    return path
