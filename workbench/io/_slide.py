"""One reader for whole-slide images: OpenSlide files and in-memory arrays alike.

Coordinates at this boundary are ``(x, y)`` in level-0 pixels (``location_xy``) and sizes are
``(width, height)`` (``size_xy``); arrays that come back are ``(row, col, channel)`` RGB uint8.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench._errors import (
    InvalidRegionError,
    MissingResolutionError,
    SlideOpenError,
    remedy,
)

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

# OpenSlide keeps decoded tiles in a per-slide cache; bound it so a cohort run cannot grow
# without limit (OpenSlide's own default is 32 MiB).
DEFAULT_CACHE_BYTES = 64 * 2**20

# The largest region (output pixels) read_region and thumbnail return unless told otherwise:
# 2**28 px is a 16,384² RGB array of 768 MiB. Larger requests are almost always a mistake
# (level-0 coordinates taken for another level's, a whole slide at 0.25 µm/px) and would end
# in an unexplained MemoryError; they raise InvalidRegionError saying how to read in tiles.
DEFAULT_MAX_REGION_PIXELS = 2**28

# A region up to this many source pixels, wholly on the slide, is read in one OpenSlide call
# (as before); anything larger, partly outside the slide or resampled from more than this is
# read in chunks of _CHUNK_PIXELS, which bounds the transient RGBA buffers (4 bytes/px, about
# twice) whatever the request.
_BLOCK_PIXELS = 2**24
_CHUNK_PIXELS = 2**22

# A coarse request on a slide without a coarse enough level would decode more than this many
# source pixels: read it from the file's own associated thumbnail instead when that suffices.
_ASSOCIATED_THUMBNAIL_PIXELS = 2**26

# A downsampled read (a thumbnail, a region at a coarse mpp) that would decode more than this
# many source pixels, because the file has no level coarse enough (no pyramid) and no
# associated thumbnail that suffices, is refused with advice to make a pyramid: 2**31 px is a
# 46,000² level 0, about a minute of decoding. A 200,000² single-level slide (4 x 10**10 px)
# would otherwise decode for half an hour or more. Reads at level-0 resolution are bounded
# by their output size and never hit this limit.
DEFAULT_MAX_DECODE_PIXELS = 2**31

# A magic number check before OpenSlide sees the file: a text file named .svs then gets a
# clear message rather than OpenSlide's "Unsupported or missing image file".
_MAGIC = {
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "BigTIFF",
    b"MM\x00+": "BigTIFF",
}


@dataclass(frozen=True)
class SlideInfo:
    """What a slide file records about itself.

    Made by :class:`Slide` (``Slide(...).info``); each parameter is kept as the attribute of
    the same name.

    Parameters
    ----------
    path
        The file, or ``"<array:name>"`` for an in-memory slide.
    dimensions
        ``(width, height)`` of level 0 in pixels.
    level_dimensions
        ``(width, height)`` of every pyramid level, finest first.
    level_downsamples
        Downsample factor of every level relative to level 0.
    mpp
        Microns per pixel at level 0, ``None`` when the file does not record it (and no
        override was given).
    vendor
        OpenSlide's vendor string (``"aperio"``, ``"generic-tiff"``, ``"hamamatsu"`` …) or
        ``"array"``.
    objective_power
        Scanning objective magnification, ``None`` when unknown.
    """

    path: str
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    vendor: str
    objective_power: float | None

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    def to_dict(self) -> dict:
        """Plain-JSON form (lists instead of tuples, ``None`` kept) for AnnData ``uns``.

        Returns
        -------
        dict
            The fields by name (``uns["region_graph"]["slide"]`` holds it).
        """
        return {
            "path": self.path,
            "dimensions": list(self.dimensions),
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": self.mpp,
            "vendor": self.vendor,
            "objective_power": self.objective_power,
        }


def _float_or_none(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _tiff_truncation(path: Path) -> str | None:
    """A reason string when a TIFF's directory chain points past the end of the file."""
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(16)
            if head[:4] not in _MAGIC:
                return None
            order = "<" if head[:2] == b"II" else ">"
            big = _MAGIC[head[:4]] == "BigTIFF"
            offset = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[
                0
            ]
            seen = 0
            while offset and seen < 64:
                if offset >= size:
                    return (
                        f"the file is truncated: it is {size:,} bytes but its TIFF directory "
                        f"{seen} starts at byte {offset:,}; copy or download it again"
                    )
                fh.seek(offset)
                count_raw = fh.read(8 if big else 2)
                n = struct.unpack(order + ("Q" if big else "H"), count_raw)[0]
                entry = 20 if big else 12
                fh.seek(offset + len(count_raw) + n * entry)
                nxt = fh.read(8 if big else 4)
                if len(nxt) < (8 if big else 4):
                    return f"the file is truncated inside TIFF directory {seen}; copy it again"
                offset = struct.unpack(order + ("Q" if big else "I"), nxt)[0]
                seen += 1
    except (OSError, struct.error):
        return None
    return None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SlideOpenError(path, "no such file; check the path and the working directory")
    if path.is_dir() and path.suffix.lower() != ".mrxs":
        raise SlideOpenError(path, "this is a folder, not a slide file")
    if path.is_file() and path.stat().st_size == 0:
        raise SlideOpenError(path, "the file is empty (0 bytes); copy it again")


class Slide:
    """A whole-slide image, read through OpenSlide or held in memory.

    Parameters
    ----------
    path
        Any file OpenSlide opens (.svs, .ndpi, .tif, .mrxs, …).
    mpp
        Microns per pixel at level 0, overriding (or standing in for) what the file records.
    cache_bytes
        Size of OpenSlide's decoded-tile cache for this slide.

    max_region_pixels
        The largest region (in output pixels) this slide's :meth:`read_region` and
        :meth:`thumbnail` return; by default the class-wide ``Slide.max_region_pixels``
        (:data:`DEFAULT_MAX_REGION_PIXELS`, 2**28). Change the class attribute to change it
        for every slide.

    Raises
    ------
    SlideOpenError
        The file is missing, not a slide, in an unsupported format, or truncated.

    Examples
    --------
    >>> with Slide("slide.svs") as s:  # doctest: +SKIP
    ...     tile = s.read_region((1000, 2000), (512, 512), mpp=1.0)
    """

    #: Class-wide read limit in output pixels; a ``max_region_pixels=`` argument overrides it.
    max_region_pixels: int = DEFAULT_MAX_REGION_PIXELS
    #: The most source pixels a downsampled read may decode (:data:`DEFAULT_MAX_DECODE_PIXELS`);
    #: set it on the class or on one slide to decode a large slide without a pyramid anyway.
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        mpp: float | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_region_pixels: int | None = None,
    ) -> None:
        self._array_levels: list[np.ndarray] | None = None
        self._osr = None
        self._assoc_thumb: tuple | None = None
        if max_region_pixels is not None:
            self.max_region_pixels = _pixel_limit(max_region_pixels)
        path = Path(path)
        _check_file(path)
        if mpp is not None and _float_or_none(mpp) is None:
            raise ValueError(f"mpp must be a positive number of microns per pixel, got {mpp!r}")
        self._osr = self._open(path, cache_bytes)
        osr = self._osr
        props = osr.properties
        import openslide

        file_mpp = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_X))
        self._info = SlideInfo(
            path=str(path),
            dimensions=tuple(int(v) for v in osr.dimensions),
            level_dimensions=tuple(tuple(int(v) for v in d) for d in osr.level_dimensions),
            level_downsamples=tuple(float(d) for d in osr.level_downsamples),
            mpp=float(mpp) if mpp is not None else file_mpp,
            vendor=str(props.get(openslide.PROPERTY_NAME_VENDOR) or "unknown"),
            objective_power=_float_or_none(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
        )
        self._validate_readable(path)

    @staticmethod
    def _open(path: Path, cache_bytes: int):
        try:
            import openslide
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ImportError(
                "reading slide files needs openslide-python and openslide-bin: "
                "pip install openslide-python openslide-bin"
            ) from exc
        if path.is_file():
            with open(path, "rb") as fh:
                head = fh.read(4)
            if path.suffix.lower() in {".svs", ".tif", ".tiff", ".ndpi"} and head not in _MAGIC:
                raise SlideOpenError(
                    path,
                    f"not a TIFF-based slide although named {path.suffix!r} "
                    f"(first bytes {head!r}); is it a text file or a download error page?",
                )
        try:
            osr = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            truncated = _tiff_truncation(path)
            if truncated:
                raise SlideOpenError(path, truncated) from exc
            raise SlideOpenError(
                path,
                "unsupported or unrecognised format (OpenSlide reads .svs, .ndpi, "
                ".tif/.tiff pyramids, .mrxs, .scn, .vms, .bif, .dcm)",
            ) from exc
        except openslide.OpenSlideError as exc:
            raise SlideOpenError(path, f"the file is damaged or truncated ({exc})") from exc
        except OSError as exc:
            raise SlideOpenError(path, str(exc)) from exc
        if cache_bytes:
            try:
                osr.set_cache(openslide.OpenSlideCache(int(cache_bytes)))
            except (AttributeError, openslide.OpenSlideError):  # pragma: no cover - old lib
                pass
        return osr

    def _validate_readable(self, path: Path) -> None:
        """Decode the far-corner pixel of every level.

        A truncated file usually opens (its header is intact) and fails only when missing
        tiles are decoded; the last tiles of each level are the ones a truncation removes
        first, so reading them catches the common case at open time for a few tile decodes.
        """
        import openslide

        try:
            for level, (lw, lh) in enumerate(self._info.level_dimensions):
                ds = self._info.level_downsamples[level]
                x = int((lw - 1) * ds)
                y = int((lh - 1) * ds)
                self._osr.read_region((x, y), level, (1, 1))
        except openslide.OpenSlideError as exc:
            self.close()
            raise SlideOpenError(path, f"the file is damaged or truncated ({exc})") from exc

    @classmethod
    def from_array(
        cls,
        image: np.ndarray,
        *,
        mpp: float | None = None,
        name: str = "array",
        n_levels: int | None = None,
        max_region_pixels: int | None = None,
    ) -> Slide:
        """An in-memory slide from an ``(rows, cols, 3)`` uint8 RGB (or RGBA) array.

        A pyramid of 2× downsamples is built (``n_levels`` levels, by default until the
        coarsest level is below 512 pixels a side), so level choice behaves as for a file.

        Parameters
        ----------
        image
            ``(rows, cols, 3)`` or ``(rows, cols, 4)`` uint8 array (alpha is dropped).
        mpp
            Microns per pixel of ``image``; ``None`` leaves the resolution unknown.
        name
            Shown in the slide's path as ``"<array:name>"``.
        n_levels
            Number of pyramid levels to build.
        max_region_pixels
            Read limit of this slide (see the class).

        Returns
        -------
        Slide
            A slide with vendor ``"array"`` that reads like a file-backed one.
        """
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"image must have shape (rows, cols, 3 or 4), got {arr.shape}")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError("image is empty")
        if arr.dtype != np.uint8:
            raise ValueError(f"image must be uint8 RGB, got dtype {arr.dtype}")
        if mpp is not None and _float_or_none(mpp) is None:
            raise ValueError(f"mpp must be a positive number of microns per pixel, got {mpp!r}")
        arr = arr[..., :3]
        levels = [arr]
        while (n_levels is None and max(levels[-1].shape[:2]) > 512) or (
            n_levels is not None and len(levels) < n_levels
        ):
            prev = levels[-1]
            if min(prev.shape[:2]) < 2:
                break
            levels.append(_downsample2(prev))
        self = cls.__new__(cls)
        self._osr = None
        self._assoc_thumb = None
        self._array_levels = levels
        if max_region_pixels is not None:
            self.max_region_pixels = _pixel_limit(max_region_pixels)
        h, w = arr.shape[:2]
        dims = tuple((int(lv.shape[1]), int(lv.shape[0])) for lv in levels)
        self._info = SlideInfo(
            path=f"<array:{name}>",
            dimensions=(int(w), int(h)),
            level_dimensions=dims,
            level_downsamples=tuple(float(2**i) for i in range(len(levels))),
            mpp=float(mpp) if mpp is not None else None,
            vendor="array",
            objective_power=None,
        )
        return self

    # ------------------------------------------------------------------ properties
    @property
    def info(self) -> SlideInfo:
        """What the file records: dimensions, levels, mpp, vendor, objective."""
        return self._info

    @property
    def path(self) -> str:
        """The file, or ``"<array:name>"`` for an in-memory slide."""
        return self._info.path

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0 in pixels."""
        return self._info.dimensions

    @property
    def mpp(self) -> float | None:
        """Microns per pixel at level 0, ``None`` when unknown."""
        return self._info.mpp

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return self._info.level_count

    def require_mpp(self) -> float:
        """The level-0 mpp, or a :class:`MissingResolutionError` that says how to supply it.

        Returns
        -------
        float
            Microns per pixel at level 0.

        Raises
        ------
        MissingResolutionError
            The slide does not record its resolution and none was given.
        """
        if self._info.mpp is None:
            raise MissingResolutionError(
                f"slide {self.path!r} does not record its resolution (microns per pixel); "
                + remedy(
                    "pass it explicitly, e.g. Slide(path, mpp=0.5), or ask for levels/max_size "
                    "instead of mpp",
                    "give it with --mpp 0.5 (every slide) or --mpp SLIDE=0.5,OTHER=0.25 (per "
                    "slide); 0.25 is typical at 40x, 0.5 at 20x",
                )
            )
        return self._info.mpp

    def __repr__(self) -> str:
        w, h = self.dimensions
        mpp = f"{self.mpp:g} µm/px" if self.mpp else "mpp unknown"
        return (
            f"Slide({self.path!r}, {w}×{h}, {self.level_count} levels, {mpp}, {self._info.vendor})"
        )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the file (a no-op for an in-memory slide); ``with Slide(...)`` calls it."""
        if self._osr is not None:
            self._osr.close()
            self._osr = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # Picklable for dask workers: the file is reopened on the other side.
        extra = {}
        if "max_region_pixels" in self.__dict__:
            extra["max_region_pixels"] = self.__dict__["max_region_pixels"]
        if self._array_levels is not None:
            return {"array": self._array_levels[0], "info": self._info, **extra}
        return {"path": self._info.path, "info": self._info, **extra}

    def __setstate__(self, state: dict) -> None:
        limit = state.get("max_region_pixels")
        if "array" in state:
            other = Slide.from_array(state["array"], mpp=state["info"].mpp, max_region_pixels=limit)
            self.__dict__.update(other.__dict__)
            self._info = state["info"]
        else:
            other = Slide(state["path"], mpp=state["info"].mpp, max_region_pixels=limit)
            self.__dict__.update(other.__dict__)

    # ------------------------------------------------------------------ levels
    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (1 % slack).

        Parameters
        ----------
        downsample
            Wanted level-0 pixels per output pixel.

        Returns
        -------
        int
            The level index (0 when every level is finer than asked).
        """
        best = 0
        for i, d in enumerate(self._info.level_downsamples):
            if d <= downsample * 1.01:
                best = i
        return best

    def _raw_read(self, location_xy: tuple[int, int], level: int, size_xy: tuple[int, int]):
        """Read ``size_xy`` pixels at ``level`` from level-0 ``location_xy``; white outside.

        One OpenSlide call; callers keep ``size_xy`` within ``_BLOCK_PIXELS``.
        """
        if self._array_levels is not None:
            return self._array_read(location_xy, level, size_xy)
        if self._osr is None:
            raise SlideOpenError(
                self.path, "the slide was closed; open it again (or read inside its with-block)"
            )
        import openslide

        try:
            # The OpenSlide C library is thread-safe; no lock is needed around reads.
            rgba = self._osr.read_region(tuple(location_xy), level, tuple(size_xy))
        except openslide.OpenSlideError as exc:
            raise SlideOpenError(self.path, f"the file is damaged or truncated ({exc})") from exc
        arr = np.asarray(rgba)
        if (arr[..., 3] == 255).all():
            # A view of the RGB channels: copying them would cost ~10 % of a tile read.
            return arr[..., :3]
        return _composite_on_white(arr)

    def _read_level_resized(
        self, level: int, size_xy: tuple[int, int], out_xy: tuple[int, int]
    ) -> np.ndarray:
        """A whole (small) level resized to ``out_xy``: ``_resize(_raw_read(...))``.

        An opaque OpenSlide read is converted and resized by Pillow directly, without the
        round trip through a full-size array and back (two copies of the level, most of the
        cost of a small slide's thumbnail); the pixels are the same.
        """
        if self._array_levels is not None or self._osr is None:
            return _resize(self._raw_read((0, 0), level, size_xy), out_xy)
        import openslide

        try:
            argb = _read_argb(self._osr, level, size_xy)
            if argb is None:  # an OpenSlide binding without the raw call
                rgba = np.asarray(self._osr.read_region((0, 0), level, tuple(size_xy)))
        except openslide.OpenSlideError as exc:
            raise SlideOpenError(self.path, f"the file is damaged or truncated ({exc})") from exc
        if argb is None:
            opaque = (rgba[..., 3] == 255).all()
            return _resize(rgba[..., :3] if opaque else _composite_on_white(rgba), out_xy)
        if int(argb.min()) >= 0xFF000000:  # every alpha is 255: the colours are as stored
            from PIL import Image

            raw = "BGRX" if sys.byteorder == "little" else "XRGB"
            img = Image.frombuffer("RGB", tuple(size_xy), argb, "raw", raw, 0, 1)
            return _resize_image(img, out_xy)
        from openslide.lowlevel import _convert

        _convert.argb2rgba(argb)  # un-premultiplied RGBA, as read_region gives
        rgba = argb.view(np.uint8).reshape(argb.shape[0], argb.shape[1], 4)
        return _resize(_composite_on_white(rgba), out_xy)

    def _array_read(self, location_xy, level, size_xy) -> np.ndarray:
        src = self._array_levels[level]
        ds = self._info.level_downsamples[level]
        x0 = int(math.floor(location_xy[0] / ds))
        y0 = int(math.floor(location_xy[1] / ds))
        return _crop_padded(src, x0, y0, int(size_xy[0]), int(size_xy[1]))

    # ------------------------------------------------------------------ reading
    def read_region(
        self,
        location_xy: Sequence[float],
        size_xy: Sequence[int],
        *,
        mpp: float | None = None,
        level: int | None = None,
        max_pixels: int | None = None,
    ) -> np.ndarray:
        """Read a region as an ``(rows, cols, 3)`` uint8 RGB array.

        Only the part of the region that lies on the slide is decoded (in chunks of at most
        2**22 source pixels); the rest is white. Memory therefore stays close to the size of
        the result whatever the request.

        Parameters
        ----------
        location_xy
            Top-left corner in level-0 pixels.
        size_xy
            ``(width, height)`` of the output in pixels, at the requested ``mpp`` or ``level``
            (at level 0 when neither is given).
        mpp
            Output resolution in microns per pixel. The coarsest level that is not coarser
            than needed is read and resampled, so the work stays proportional to the output;
            when the file has no such level and the read would decode more than 2**26 pixels,
            the file's own associated thumbnail is used if it is fine enough.
        level
            Read this pyramid level directly (no resampling). Exclusive with ``mpp``.
        max_pixels
            Refuse outputs larger than this many pixels; by default the slide's
            ``max_region_pixels`` (2**28, a 768 MiB array).

        Returns
        -------
        numpy.ndarray
            ``(height, width, 3)`` uint8 RGB, white where the region leaves the slide.

        Raises
        ------
        InvalidRegionError
            A non-finite location, a zero or negative size, a region that does not overlap
            the slide, or one above the pixel limit (the message says how to read it in
            tiles).
        MissingResolutionError
            ``mpp`` was asked for and the slide's resolution is unknown.
        """
        if mpp is not None and level is not None:
            raise InvalidRegionError("give either mpp= or level=, not both")
        x, y = _finite_pair(location_xy, "location_xy", "(x, y) in level-0 pixels")
        w, h = _region_size(size_xy)
        self._check_budget(w, h, max_pixels)
        if level is not None:
            if not isinstance(level, int | np.integer) or not 0 <= level < self.level_count:
                raise InvalidRegionError(
                    f"level {level} does not exist; this slide has levels 0..{self.level_count - 1}"
                )
            level = int(level)
            scale = self._info.level_downsamples[level]
        elif mpp is not None:
            if _float_or_none(mpp) is None:
                raise InvalidRegionError(
                    f"mpp must be a positive number of microns per pixel, got {mpp!r}"
                )
            scale = float(mpp) / self.require_mpp()
        else:
            scale = 1.0
        self._check_overlap(x, y, w * scale, h * scale)
        if level is not None or scale == 1.0:
            return self._read_level((int(round(x)), int(round(y))), level or 0, (w, h))
        return self._read_scaled((x, y), (w, h), scale)

    def _check_budget(self, w: int, h: int, max_pixels: int | None, *, hint: str = "") -> None:
        limit = self.max_region_pixels if max_pixels is None else _pixel_limit(max_pixels)
        if w * h <= limit:
            return
        tile = 1 << max(8, min(12, int(math.log2(max(1, limit)) // 2)))
        raise InvalidRegionError(
            f"a region of {w:,} × {h:,} = {w * h:,} pixels ({w * h * 3 / 2**30:.1f} GiB as RGB) "
            f"exceeds the read limit of {limit:,} pixels; read it in tiles (a loop over "
            f"read_region with tiles of e.g. {tile:,} × {tile:,}, or pp.tile_tissue)"
            f"{hint}, or raise the limit with max_pixels= for this call, "
            "Slide(..., max_region_pixels=) for this slide or Slide.max_region_pixels for all"
        )

    def _check_decode(self, source_px: float, level: int, scale: float, what: str) -> None:
        """Refuse a downsampled read that would decode more than ``max_decode_pixels`` of
        ``level`` (no coarser level, no associated thumbnail fine enough): say how to make a
        pyramid instead of decoding for an hour."""
        if self._array_levels is not None or source_px <= self.max_decode_pixels:
            return
        thumb = self._associated_thumbnail() if source_px > _ASSOCIATED_THUMBNAIL_PIXELS else None
        if thumb is not None and scale >= max(thumb[1], thumb[2]):
            return  # served from the file's own thumbnail
        lw, lh = self._info.level_dimensions[level]
        why = (
            "the file has no pyramid (a single level)"
            if self.level_count == 1
            else f"level {level} ({lw:,} × {lh:,}) is the file's coarsest level"
        )
        name = Path(self.path).name
        stem = name.split(".")[0] or "slide"
        raise InvalidRegionError(
            f"{what} would decode {source_px:,.0f} pixels of {name} because {why}, above the "
            f"decode limit of {self.max_decode_pixels:,} pixels (about a minute). Give the "
            f"slide a pyramid once, e.g. `vips tiffsave {name} {stem}_pyramid.tif --tile "
            "--pyramid --compression jpeg --Q 90 --bigtiff` or QuPath (File > Export images > "
            "OME TIFF, pyramidal), and use that file; or set Slide.max_decode_pixels higher to "
            "decode it anyway (slow)"
        )

    def _check_overlap(self, x: float, y: float, w0: float, h0: float) -> None:
        W, H = self.dimensions
        if x >= W or y >= H or x + w0 <= 0 or y + h0 <= 0:
            raise InvalidRegionError(
                f"region at location_xy={(x, y)} of level-0 size {(round(w0), round(h0))} lies "
                f"outside the slide (level-0 size {W}×{H}); location_xy is (x, y) in level-0 pixels"
            )

    def _read_level(self, loc0: tuple[int, int], level: int, size_xy: tuple[int, int]):
        """``size_xy`` pixels of ``level`` from level-0 ``loc0``, decoding only the inside."""
        if self._array_levels is not None:
            return self._raw_read(loc0, level, size_xy)  # slices only the inside already
        w, h = size_xy
        ds = self._info.level_downsamples[level]
        lw, lh = self._info.level_dimensions[level]
        px, py = loc0[0] / ds, loc0[1] / ds  # top-left in this level's pixels
        c0, c1 = max(0, math.ceil(-px - 1e-9)), min(w, math.ceil(lw - px - 1e-9))
        r0, r1 = max(0, math.ceil(-py - 1e-9)), min(h, math.ceil(lh - py - 1e-9))
        if (c0, r0, c1, r1) == (0, 0, w, h) and w * h <= _BLOCK_PIXELS:
            return self._raw_read(loc0, level, size_xy)  # the common case: one call, no copy
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        if c1 <= c0 or r1 <= r0:
            return out
        chunk = min(_CHUNK_PIXELS, _BLOCK_PIXELS)
        cols = min(c1 - c0, chunk)
        rows = max(1, chunk // cols)
        for r in range(r0, r1, rows):
            rh = min(rows, r1 - r)
            for c in range(c0, c1, cols):
                cw = min(cols, c1 - c)
                loc = (int(round(loc0[0] + c * ds)), int(round(loc0[1] + r * ds)))
                out[r : r + rh, c : c + cw] = self._raw_read(loc, level, (cw, rh))
        return out

    def _read_scaled(self, location_xy, size_xy, scale: float) -> np.ndarray:
        """Read an output of ``size_xy`` covering ``size_xy * scale`` level-0 pixels."""
        level = self.best_level_for_downsample(scale)
        ds = self._info.level_downsamples[level]
        rel = scale / ds  # source pixels (at `level`) per output pixel, >= ~1
        x, y = location_xy
        w, h = size_xy
        if abs(rel - 1.0) < 1e-3:
            return self._read_level((int(round(x)), int(round(y))), level, (w, h))
        W, H = self.dimensions
        on_slide = (min(W, x + w * scale) - max(0.0, x)) * (min(H, y + h * scale) - max(0.0, y))
        self._check_decode(on_slide / ds**2, level, scale, f"a {w:,} × {h:,} px region")
        # Output pixels that overlap the slide; the others stay white and are never read.
        c0, c1 = max(0, math.floor(-x / scale)), min(w, math.ceil((W - x) / scale))
        r0, r1 = max(0, math.floor(-y / scale)), min(h, math.ceil((H - y) / scale))
        sw, sh = max(1, int(math.ceil(w * rel))), max(1, int(math.ceil(h * rel)))
        small = sw * sh <= min(_BLOCK_PIXELS, _ASSOCIATED_THUMBNAIL_PIXELS)
        if (c0, r0, c1, r1) == (0, 0, w, h) and small:
            src = self._raw_read((int(round(x)), int(round(y))), level, (sw, sh))
            return _resize(src, (w, h))
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        box0 = (x + c0 * scale, y + r0 * scale, x + c1 * scale, y + r1 * scale)  # level 0
        source_px = (box0[2] - box0[0]) * (box0[3] - box0[1]) / ds**2
        self._resample_into(out[r0:r1, c0:c1], box0, level, scale, source_px)
        return out

    def _resample_into(self, dst, box0, level: int, scale: float, source_px: float) -> None:
        """Fill ``dst`` with the level-0 box ``box0`` (x0, y0, x1, y1), resampled."""
        thumb = self._associated_thumbnail() if source_px > _ASSOCIATED_THUMBNAIL_PIXELS else None
        if thumb is not None and scale >= max(thumb[1], thumb[2]):
            arr, tx, ty = thumb
            box = (box0[0] / tx, box0[1] / ty, box0[2] / tx, box0[3] / ty)

            def read(rx: int, ry: int, rw: int, rh: int) -> np.ndarray:
                return _crop_padded(arr, rx, ry, rw, rh)

        else:
            ds = self._info.level_downsamples[level]
            box = tuple(v / ds for v in box0)

            def read(rx: int, ry: int, rw: int, rh: int) -> np.ndarray:
                return self._raw_read((int(round(rx * ds)), int(round(ry * ds))), level, (rw, rh))

        _resample_blocks(dst, box, read)

    def thumbnail(
        self,
        *,
        mpp: float | None = None,
        max_size: int | None = None,
        max_pixels: int | None = None,
    ) -> np.ndarray:
        """The whole slide at ``mpp`` microns per pixel, or fitting in ``max_size`` pixels.

        Exactly one of ``mpp`` and ``max_size`` must be given. The output covers the whole
        level-0 extent; its size is ``round(dimensions * mpp0 / mpp)``. The coarsest level
        that is fine enough is read in blocks (or, for a slide without coarse levels, the
        file's associated thumbnail when it is fine enough), so memory stays close to the
        output's size. ``max_pixels`` is the read limit, as for :meth:`read_region`.

        A slide without a pyramid (one level) whose level 0 holds more than
        :attr:`max_decode_pixels` (2**31) pixels is refused with an
        :class:`~workbench.InvalidRegionError` that says how to make a pyramid (``vips
        tiffsave --pyramid`` or a QuPath export), unless its associated thumbnail is fine
        enough; the same holds for :meth:`read_region` at a coarse ``mpp``.

        Parameters
        ----------
        mpp
            Output resolution in microns per pixel.
        max_size
            The longest side of the output in pixels (the aspect ratio is kept).
        max_pixels
            Refuse outputs larger than this many pixels; by default the slide's
            ``max_region_pixels``.

        Returns
        -------
        numpy.ndarray
            ``(rows, cols, 3)`` uint8 RGB of the whole slide; :meth:`thumbnail_scale` gives
            its level-0 pixels per pixel.

        Raises
        ------
        InvalidRegionError
            Neither or both of ``mpp`` and ``max_size``, an output above the limit, or a large
            slide without a pyramid.
        MissingResolutionError
            ``mpp`` was asked for and the slide's resolution is unknown.
        """
        if (mpp is None) == (max_size is None):
            raise InvalidRegionError("give exactly one of mpp= or max_size=")
        W, H = self.dimensions
        if mpp is not None:
            if _float_or_none(mpp) is None:
                raise InvalidRegionError(
                    f"mpp must be a positive number of microns per pixel, got {mpp!r}"
                )
            scale = float(mpp) / self.require_mpp()
        else:
            if _float_or_none(max_size) is None or int(max_size) <= 0:
                raise InvalidRegionError(f"max_size must be a positive number, got {max_size!r}")
            scale = max(W, H) / float(int(max_size))
        ow, oh = max(1, int(round(W / scale))), max(1, int(round(H / scale)))
        self._check_budget(ow, oh, max_pixels, hint=", ask for a coarser mpp= or a max_size=")
        # Scale per axis so the output covers the slide exactly.
        level = self.best_level_for_downsample(scale)
        lw, lh = self._info.level_dimensions[level]
        self._check_decode(float(lw * lh), level, scale, f"a {ow:,} × {oh:,} px thumbnail")
        if lw * lh <= min(_BLOCK_PIXELS, _ASSOCIATED_THUMBNAIL_PIXELS):
            if (lw, lh) == (ow, oh):
                return self._raw_read((0, 0), level, (lw, lh))
            return self._read_level_resized(level, (lw, lh), (ow, oh))
        if (lw, lh) == (ow, oh):
            return self._read_level((0, 0), level, (lw, lh))
        out = np.empty((oh, ow, 3), dtype=np.uint8)
        ds = self._info.level_downsamples[level]
        box0 = (0.0, 0.0, lw * ds, lh * ds)  # the whole level, as the small case resizes it
        self._resample_into(out, box0, level, scale, float(lw * lh))
        return out

    def _associated_thumbnail(self) -> tuple[np.ndarray, float, float] | None:
        """The file's associated ``thumbnail`` image and its level-0 px per pixel, if usable.

        Usable when it shows the whole level-0 extent (same aspect ratio within 2 %).
        """
        if self._assoc_thumb is None:
            found: tuple = ()
            if self._osr is not None:
                import openslide

                try:
                    img = self._osr.associated_images.get("thumbnail")
                except (openslide.OpenSlideError, KeyError):  # pragma: no cover - damaged
                    img = None
                if img is not None:
                    W, H = self.dimensions
                    tx, ty = W / img.size[0], H / img.size[1]
                    if tx > 1 and abs(tx / ty - 1.0) < 0.02:
                        found = (np.asarray(img.convert("RGB")), tx, ty)
            self._assoc_thumb = found
        return self._assoc_thumb or None

    def thumbnail_scale(self, thumbnail_shape: Sequence[int]) -> tuple[float, float]:
        """Level-0 pixels per thumbnail pixel along ``(x, y)`` for a thumbnail of that shape.

        Parameters
        ----------
        thumbnail_shape
            The thumbnail array's shape (``(rows, cols, ...)``).

        Returns
        -------
        tuple of float
            ``(scale_x, scale_y)``.
        """
        W, H = self.dimensions
        return W / float(thumbnail_shape[1]), H / float(thumbnail_shape[0])


def _pixel_limit(value: object) -> int:
    try:
        limit = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        limit = 0
    if limit <= 0:
        raise InvalidRegionError(f"a pixel limit must be a positive integer, got {value!r}")
    return limit


def _finite_pair(values: object, name: str, meaning: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InvalidRegionError(f"{name} must be two numbers {meaning}, got {values!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise InvalidRegionError(f"{name} must be two finite numbers {meaning}, got {values!r}")
    return a, b


def _region_size(size_xy: object) -> tuple[int, int]:
    w, h = _finite_pair(size_xy, "size_xy", "(width, height) in pixels")
    w, h = int(w), int(h)
    if w <= 0 or h <= 0:
        raise InvalidRegionError(f"region size must be positive, got size_xy={(w, h)}")
    return w, h


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """RGB of an RGBA array composited onto white, in integers (no float copies)."""
    rgb = np.array(rgba[..., :3])
    alpha = rgba[..., 3]
    part = alpha != 255
    a = alpha[part].astype(np.uint16)[:, None]
    rgb[part] = ((rgb[part].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return rgb


def _crop_padded(src: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """``src[y0:y0+h, x0:x0+w]`` with white where the window leaves ``src``."""
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + w, src.shape[1]), min(y0 + h, src.shape[0])
    if (sx0, sy0, sx1, sy1) == (x0, y0, x0 + w, y0 + h):
        return src[sy0:sy1, sx0:sx1]
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = src[sy0:sy1, sx0:sx1]
    return out


def _resample_blocks(dst: np.ndarray, box: tuple[float, ...], read) -> None:
    """Resample the source box ``(x0, y0, x1, y1)`` into ``dst``, block by block.

    ``read(x, y, w, h)`` returns source pixels (white outside the source). Each block reads
    at most ``_CHUNK_PIXELS`` source pixels, filter margin included, and Pillow's
    ``box=`` places it exactly, so the blocks join without seams.
    """
    from PIL import Image

    oh, ow = dst.shape[:2]
    x0, y0, x1, y1 = box
    rx, ry = (x1 - x0) / ow, (y1 - y0) / oh  # source pixels per output pixel
    margin = 2
    method = Image.Resampling.BOX if rx >= 1 and ry >= 1 else Image.Resampling.BILINEAR
    pad = 2 * margin + 2  # the margin on both sides, plus rounding out to whole pixels
    chunk = min(_CHUNK_PIXELS, _BLOCK_PIXELS)
    if (ow * rx + pad) * (ry + pad) <= chunk:
        bw = ow
    else:
        bw = max(1, int((math.sqrt(chunk) - pad) / rx))
    bh = max(1, int((chunk / (bw * rx + pad) - pad) / ry))
    for r in range(0, oh, bh):
        rr = min(bh, oh - r)
        sy0, sy1 = y0 + r * ry, y0 + (r + rr) * ry
        iy0, iy1 = math.floor(sy0) - margin, math.ceil(sy1) + margin
        for c in range(0, ow, bw):
            cc = min(bw, ow - c)
            sx0, sx1 = x0 + c * rx, x0 + (c + cc) * rx
            ix0, ix1 = math.floor(sx0) - margin, math.ceil(sx1) + margin
            src = read(ix0, iy0, ix1 - ix0, iy1 - iy0)
            img = Image.fromarray(np.ascontiguousarray(src))
            part = img.resize((cc, rr), method, box=(sx0 - ix0, sy0 - iy0, sx1 - ix0, sy1 - iy0))
            dst[r : r + rr, c : c + cc] = np.asarray(part)


def _read_argb(osr, level: int, size_xy: tuple[int, int]) -> np.ndarray | None:
    """A whole level as OpenSlide's premultiplied ARGB words ``(h, w)`` uint32, or None.

    The library call behind ``OpenSlide.read_region``, into an uninitialised NumPy buffer:
    it skips the zero-filled ctypes buffer, the RGBA conversion and the Pillow image that
    the small-level thumbnail does not need. None when the binding lacks the call.
    """
    try:
        from ctypes import POINTER, c_uint32

        from openslide import lowlevel

        call, handle = lowlevel._read_region, osr._osr
    except (ImportError, AttributeError):  # pragma: no cover - other openslide-python
        return None
    w, h = int(size_xy[0]), int(size_xy[1])
    buf = np.empty((h, w), dtype=np.uint32)
    call(handle, buf.ctypes.data_as(POINTER(c_uint32)), 0, 0, int(level), w, h)
    return buf


def _downsample2(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    h2, w2 = max(1, h // 2), max(1, w // 2)
    a = arr[: h2 * 2, : w2 * 2].astype(np.uint16)
    if h >= 2 and w >= 2:
        out = (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4
    else:  # pragma: no cover - degenerate strips
        out = a[:h2, :w2]
    return out.astype(np.uint8)


def _resize(src: np.ndarray, size_xy: tuple[int, int]) -> np.ndarray:
    """Area-average downscale (or bilinear upscale) ``src`` to ``size_xy`` with Pillow."""
    from PIL import Image

    w, h = size_xy
    if src.shape[1] == w and src.shape[0] == h:
        return src
    return _resize_image(Image.fromarray(src), size_xy)


def _resize_image(img, size_xy: tuple[int, int]) -> np.ndarray:
    """A Pillow RGB image resized as :func:`_resize` does, as an array."""
    from PIL import Image

    w, h = size_xy
    method = (
        Image.Resampling.BOX if (img.width >= w and img.height >= h) else Image.Resampling.BILINEAR
    )
    return np.asarray(img.resize((w, h), method))
