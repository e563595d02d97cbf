"""Write a tiled JPEG TIFF pyramid from a window renderer, in bounded memory.

Level 0 is drawn one strip of tiles at a time and streamed to tifffile as an iterator of
tiles. Each finished strip is halved (2 x 2 box average) into the next level, whose tiles are
kept losslessly compressed in an anonymous temporary file until their page is written; the
halving cascades down to the smallest level. Every level is its own TIFF page (OpenSlide
ignores SubIFDs), finest first.

Memory use is a few strips of the widest level plus the renderer's working arrays, whatever
the slide size; the temporary file holds about a third of the level-0 pixels, compressed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator

import numpy as np

#: Writes with more level-0 bytes than this use BigTIFF offsets.
_BIGTIFF_BYTES = 2**31


def level_shapes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """``(width, height)`` of every level: halve until the long side fits in one tile."""
    shapes = [(int(width), int(height))]
    while max(shapes[-1]) > tile:
        w, h = shapes[-1]
        shapes.append(((w + 1) // 2, (h + 1) // 2))
    return shapes


class _TileStore:
    """Tiles of one level in an anonymous temporary file (LZ4), read back in order."""

    def __init__(self, tile: int) -> None:
        self.tile = tile
        self._file = tempfile.TemporaryFile()
        self._sizes: list[int] = []

    def append(self, tile_rgb: np.ndarray) -> None:
        import imagecodecs

        data = imagecodecs.lz4_encode(np.ascontiguousarray(tile_rgb).tobytes())
        self._file.write(data)
        self._sizes.append(len(data))

    def __len__(self) -> int:
        return len(self._sizes)

    def tiles(self) -> Iterator[np.ndarray]:
        import imagecodecs

        self._file.seek(0)
        for size in self._sizes:
            raw = imagecodecs.lz4_decode(self._file.read(size))
            yield np.frombuffer(raw, dtype=np.uint8).reshape(self.tile, self.tile, 3)

    def close(self) -> None:
        self._file.close()


class _Halver:
    """Receives full-width rows of one level, emits the next level's rows and tiles."""

    def __init__(self, width: int, tile: int, store: _TileStore, below: _Halver | None) -> None:
        self.width = width  # width of the level this halver produces
        self.tile = tile
        self.store = store
        self.below = below
        self._pending: np.ndarray | None = None  # an unpaired row of the level above
        self._rows: list[np.ndarray] = []
        self._count = 0

    def push(self, rows: np.ndarray) -> None:
        if self._pending is not None:
            rows = np.concatenate([self._pending, rows], axis=0)
            self._pending = None
        if rows.shape[0] % 2:
            self._pending = rows[-1:].copy()
            rows = rows[:-1]
        if rows.shape[0]:
            self._emit(_halve(rows, self.width))

    def _emit(self, rows: np.ndarray) -> None:
        if self.below is not None:
            self.below.push(rows)
        self._rows.append(rows)
        self._count += rows.shape[0]
        while self._count >= self.tile:
            strip = np.concatenate(self._rows, axis=0)
            self._store_strip(strip[: self.tile])
            rest = strip[self.tile :]
            self._rows = [rest] if rest.shape[0] else []
            self._count = rest.shape[0]

    def _store_strip(self, strip: np.ndarray) -> None:
        t = self.tile
        padded_w = -(-self.width // t) * t
        if strip.shape[0] < t or strip.shape[1] < padded_w:
            full = np.zeros((t, padded_w, 3), dtype=np.uint8)
            full[: strip.shape[0], : strip.shape[1]] = strip
            strip = full
        for x in range(0, padded_w, t):
            self.store.append(strip[:, x : x + t])

    def finish(self) -> None:
        if self._pending is not None:  # odd height: the last row pairs with itself
            row, self._pending = self._pending, None
            self._emit(_halve(np.concatenate([row, row], axis=0), self.width))
        if self._count:
            self._store_strip(np.concatenate(self._rows, axis=0))
            self._rows, self._count = [], 0
        if self.below is not None:
            self.below.finish()


def _halve(rows: np.ndarray, out_width: int) -> np.ndarray:
    """2 x 2 box average of an even number of rows; an odd last column pairs with itself."""
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, rows[:, -1:]], axis=1)
    acc = rows[0::2, 0::2].astype(np.uint16)
    acc += rows[1::2, 0::2]
    acc += rows[0::2, 1::2]
    acc += rows[1::2, 1::2]
    acc += 2
    acc >>= 2
    return acc[:, :out_width].astype(np.uint8)


def write_pyramid(
    path: str | os.PathLike,
    *,
    width: int,
    height: int,
    render: Callable[[int, int, int, int], np.ndarray],
    mpp: float,
    description: str | None,
    tile: int = 256,
    chunk: int = 1024,
    quality: int = 85,
    progress: bool = False,
    desc: str = "slide",
) -> list[tuple[int, int]]:
    """Write a pyramidal tiled JPEG TIFF, one page per level, and return the level shapes.

    Parameters
    ----------
    render
        ``render(x0, y0, w, h)`` returns the ``(h, w, 3)`` uint8 level-0 window.
    mpp
        Microns per pixel at level 0; each page records its own resolution tags.
    description
        ImageDescription of page 0 (e.g. an Aperio header); ``None`` writes none.
    chunk
        Width in pixels of the windows asked from ``render`` (a multiple of ``tile``).
    """
    import tifffile
    from tqdm.auto import tqdm

    if chunk % tile:
        raise ValueError(f"chunk ({chunk}) must be a multiple of tile ({tile})")
    shapes = level_shapes(width, height, tile)
    stores = [_TileStore(tile) for _ in shapes[1:]]
    halver = None
    for (w_k, _), store in zip(reversed(shapes[1:]), reversed(stores), strict=True):
        halver = _Halver(w_k, tile, store, halver)
    n_tx, n_ty = -(-width // tile), -(-height // tile)

    def level0() -> Iterator[np.ndarray]:
        with tqdm(total=n_tx * n_ty, desc=desc, unit="tile", disable=not progress) as bar:
            for ty in range(n_ty):
                y0 = ty * tile
                h = min(tile, height - y0)
                strip = np.zeros((tile, n_tx * tile, 3), dtype=np.uint8)
                for x0 in range(0, width, chunk):
                    w = min(chunk, width - x0)
                    strip[:h, x0 : x0 + w] = render(x0, y0, w, h)
                    bar.update(-(-w // tile))
                # hand the strip down before yielding: tifffile stops pulling after the last tile
                if halver is not None:
                    halver.push(strip[:h, :width])
                    if ty == n_ty - 1:
                        halver.finish()
                for tx in range(n_tx):
                    yield strip[:, tx * tile : (tx + 1) * tile]

    bigtiff = width * height * 3 > _BIGTIFF_BYTES
    options = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": int(quality)},
        "resolutionunit": "CENTIMETER",
        "metadata": None,
        "software": False,
    }
    try:
        with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
            for level, (w_k, h_k) in enumerate(shapes):
                px_per_cm = 1e4 / (mpp * 2**level)
                tiles = level0() if level == 0 else stores[level - 1].tiles()
                if level > 0 and len(stores[level - 1]) != -(-w_k // tile) * -(-h_k // tile):
                    raise RuntimeError(f"level {level} has {len(stores[level - 1])} tiles")
                tif.write(
                    tiles,
                    shape=(h_k, w_k, 3),
                    resolution=(px_per_cm, px_per_cm),
                    description=description if level == 0 else None,
                    subfiletype=0 if level == 0 else 1,
                    **options,
                )
    finally:
        for store in stores:
            store.close()
    return shapes
