"""A 200,000² slide without a pyramid: time and peak memory of the refusal, as JSON lines.

The slide (a tiled JPEG TIFF of 200,000 × 200,000 px, one level, 0.5 µm/px) is written from
one pre-encoded tile repeated, so writing it takes seconds and a few hundred MB of disk. Three
runs, each in its own child process (peak resident memory is per process):

1. ``refused``: ``Slide.thumbnail(max_size=1024)`` with the default decode limit
   (``Slide.max_decode_pixels``, 2**31): refused at once with advice to make a pyramid;
2. ``decode_anyway``: the same call with the limit lifted (what happened before the limit),
   stopped after ``--budget-s`` seconds; the share of level 0 decoded by then is reported, so
   the time the whole decode would take can be extrapolated;
3. ``pyramid``: the same slide with a pyramid (levels down to < 1,024 px): the thumbnail
   is read from a coarse level.

    python benchmarks/no_pyramid.py               # about three minutes, ~0.5 GB of temporary disk
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, resource, sys, threading, time

import workbench.io._slide as slide_mod
from workbench.io import Slide

case, path, budget = sys.argv[1], sys.argv[2], float(sys.argv[3])


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


decoded = [0]
original = slide_mod.Slide._raw_read


def counting(self, loc, level, size):
    decoded[0] += int(size[0]) * int(size[1])
    return original(self, loc, level, size)


slide_mod.Slide._raw_read = counting
slide = Slide(path)
if case == "decode_anyway":
    slide.max_decode_pixels = 10**12
base = rss_mb()
row = {"case": case, "dimensions": list(slide.dimensions), "levels": slide.level_count}
t = time.perf_counter()


def report(finished, error=None):
    W, H = slide.dimensions
    row.update(
        seconds=round(time.perf_counter() - t, 3),
        finished=finished,
        error=error,
        baseline_rss_mb=round(base, 1),
        peak_rss_mb=round(rss_mb(), 1),
        decoded_pixels=decoded[0],
        decoded_share_of_level0=round(decoded[0] / (W * H), 6),
    )
    print(json.dumps(row), flush=True)


def stop():
    report(False, f"stopped after {budget:g} s")
    import os
    os._exit(0)


timer = threading.Timer(budget, stop)
timer.daemon = True
timer.start()
try:
    thumb = slide.thumbnail(max_size=1024)
    row["thumbnail_shape"] = list(thumb.shape)
    report(True)
except Exception as exc:  # the refusal, as the user sees it
    report(False, f"{type(exc).__name__}: {str(exc)[:240]}")
timer.cancel()
"""


def write_slide(path: Path, side: int, *, pyramid: bool, tile: int = 1024) -> None:
    """A side × side slide from one pre-encoded JPEG tile (levels halve down to < 1,024 px)."""
    import imagecodecs
    import numpy as np
    import tifffile

    img = np.full((tile, tile, 3), (225, 190, 215), np.uint8)  # flat: small on disk
    encoded = imagecodecs.jpeg_encode(img, level=90)
    sizes = [side]
    while pyramid and sizes[-1] > 1024:
        sizes.append((sizes[-1] + 1) // 2)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, s in enumerate(sizes):
            n = ((s + tile - 1) // tile) ** 2
            res = 1e4 / (0.5 * 2**i)
            tw.write(
                (encoded for _ in range(n)),
                shape=(s, s, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="jpeg",
                photometric="rgb",
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=200_000, help="slide side in pixels")
    ap.add_argument("--budget-s", type=float, default=60.0, help="stop each run after this")
    args = ap.parse_args(argv)
    env = {"python": platform.python_version(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        flat, pyr = Path(tmp) / "flat.tif", Path(tmp) / "pyramid.tif"
        t = time.perf_counter()
        write_slide(flat, args.side, pyramid=False)
        write_slide(pyr, args.side, pyramid=True)
        written = round(time.perf_counter() - t, 1)
        for case, path in (("refused", flat), ("decode_anyway", flat), ("pyramid", pyr)):
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, case, str(path), str(args.budget_s)],
                capture_output=True,
                text=True,
                timeout=args.budget_s + 120,
            )
            lines = proc.stdout.strip().splitlines()
            row = json.loads(lines[-1]) if lines else {"case": case, "error": proc.stderr[-300:]}
            row = {"benchmark": "no_pyramid", **row, "file_mb": round(path.stat().st_size / 2**20)}
            print(json.dumps({**row, "write_seconds": written, **env}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
