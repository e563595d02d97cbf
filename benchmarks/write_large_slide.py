"""Write one large synthetic slide and report time and peak memory as one JSON line.

    .venv/bin/python benchmarks/write_large_slide.py               # 40960 x 40960 ("large")
    .venv/bin/python benchmarks/write_large_slide.py --size demo   # quicker check

The slide is drawn tile by tile from a coarse layout, so peak memory should not grow with the
slide: the target is a peak resident set size of at most 2 GB. The writer runs in a child
process, so the figure is the writer's own peak (``ru_maxrss`` of the child), not this
script's. The baseline printed beside it is the size of level 0 held as one uint8 array,
which is what a write-the-whole-image approach would need at least.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_BYTES = 2 * 1024**3

_CHILD = """
import json, sys, time
from workbench.datasets import make_slide
t = time.perf_counter()
truth = make_slide(sys.argv[1], size=sys.argv[2], grade=3, infiltration=0.6, seed=7,
                   progress=sys.argv[3] == "1")
print(json.dumps({"seconds": time.perf_counter() - t, "levels": truth.level_count,
                  "dimensions": list(truth.dimensions)}))
"""


def _size_arg(text: str):
    if "x" in text:
        w, h = text.lower().split("x")
        return [int(w), int(h)]
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="large", help='"tiny", "demo", "large" or WIDTHxHEIGHT')
    ap.add_argument("--keep", type=Path, default=None, help="write the slide here and keep it")
    ap.add_argument("--progress", action="store_true", help="show the tile progress bar")
    args = ap.parse_args(argv)
    size = _size_arg(args.size)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "large.tif"
        size_arg = size if isinstance(size, str) else f"{size[0]},{size[1]}"
        child = _CHILD
        if not isinstance(size, str):
            child = child.replace(
                "size=sys.argv[2]", "size=tuple(map(int, sys.argv[2].split(',')))"
            )
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", child, str(path), size_arg, "1" if args.progress else "0"],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - t
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        info = json.loads(out.stdout.strip().splitlines()[-1])
        file_bytes = path.stat().st_size
        opened = None
        try:
            import openslide

            with openslide.OpenSlide(str(path)) as slide:
                opened = {
                    "level_count": slide.level_count,
                    "vendor": slide.properties.get("openslide.vendor"),
                    "mpp_x": float(slide.properties.get(openslide.PROPERTY_NAME_MPP_X, "nan")),
                }
        except Exception as exc:  # report, do not hide, a slide OpenSlide cannot read
            opened = {"error": repr(exc)}

    width, height = info["dimensions"]
    peak = peak_kib * 1024
    print(
        json.dumps(
            {
                "benchmark": "write_large_slide",
                "size": args.size,
                "dimensions": [width, height],
                "levels": info["levels"],
                "seconds": round(info["seconds"], 1),
                "wall_seconds_with_startup": round(wall, 1),
                "megapixels_per_second": round(width * height / 1e6 / info["seconds"], 1),
                "file_mb": round(file_bytes / 1e6, 1),
                "peak_rss_mb": round(peak / 1e6, 1),
                "target_peak_rss_mb": round(TARGET_BYTES / 1e6, 1),
                "target_met": peak <= TARGET_BYTES,
                "baseline_level0_array_mb": round(width * height * 3 / 1e6, 1),
                "openslide": opened,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
