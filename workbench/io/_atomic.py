"""Atomic file writes: a crash or a bad input never leaves a half-written result.

Everything is written to a temporary file in the destination folder and renamed onto the
final name with :func:`os.replace`, which is atomic on POSIX and Windows within one file
system. The previous version of the file, if any, stays intact until the rename.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from workbench._errors import WorkbenchError

if TYPE_CHECKING:  # pragma: no cover
    import anndata


class OutputWriteError(WorkbenchError, OSError):
    """A result could not be written (read-only folder, full disk …); nothing was replaced."""


def _prepare_folder(path: Path) -> None:
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    For libraries that write by file name (tifffile, h5py, safetensors …). The temporary name
    keeps the final suffix (or ``suffix``), since some writers dispatch on it. On an exception
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    _prepare_folder(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.tmp-",
        suffix=suffix if suffix is not None else path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if not tmp_path.exists():
            raise OutputWriteError(f"nothing was written for {str(path)!r}")
        # mkstemp makes a private (0600) file; give the result the usual permissions.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        kwargs = {"encoding": encoding} if mode == "w" else {}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_h5ad(adata: anndata.AnnData, path: str | os.PathLike) -> Path:
    """Write an AnnData to ``.h5ad`` atomically (the old file survives a failed write)."""
    path = Path(path)
    with atomic_path(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp)
    return path
