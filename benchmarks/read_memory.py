"""Peak memory of ``Slide.read_region`` / ``thumbnail`` on requests that used to blow up.

Each case runs in its own child process (peak resident memory is per process), once with
``Slide`` and once with the reader as it was before the pixel limit and block-wise reads
(a faithful copy of the earlier code, below), on the same file in the same run:

1. a 10,000² level-0 region half outside a 12,288 × 10,240 pyramidal slide (result 0.28 GiB);
2. a 100,000² region (a 28 GiB result; now refused at once with advice to read in tiles);
3. a 1,000² region at 100 µm/px on a single-level copy of that slide (the earlier code read
   the whole 200,000² level-0 extent, 149 GiB, slide or not);
4. a 1,024-px thumbnail of the single-level copy (earlier: the whole level 0 at once).

Children run with an address-space limit (``--limit-gb``, default 12) so the earlier code's
huge allocations fail with MemoryError instead of pushing a shared machine into swap.

    python benchmarks/read_memory.py            # about two minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, math, resource, sys, time
import numpy as np

case, impl, path = sys.argv[1], sys.argv[2], sys.argv[3]


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- the reader before this change (workbench/io/_slide.py at f7b9771~1), for comparison
def before_raw(osr, loc, level, size):
    arr = np.asarray(osr.read_region(tuple(loc), level, tuple(size)))
    if (arr[..., 3] == 255).all():
        return arr[..., :3]
    a = arr[..., 3:4].astype(np.float32) / 255.0
    rgb = arr[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def before_best_level(osr, downsample):
    best = 0
    for i, d in enumerate(osr.level_downsamples):
        if d <= downsample * 1.01:
            best = i
    return best


def before_resize(src, size):
    from PIL import Image
    w, h = size
    if src.shape[1] == w and src.shape[0] == h:
        return src
    return np.asarray(Image.fromarray(src).resize((w, h), Image.Resampling.BOX))


def before_read_region(osr, loc, size, scale):
    if scale == 1.0:
        return before_raw(osr, loc, 0, size)
    level = before_best_level(osr, scale)
    rel = scale / osr.level_downsamples[level]
    w, h = size
    sw, sh = max(1, int(math.ceil(w * rel))), max(1, int(math.ceil(h * rel)))
    return before_resize(before_raw(osr, loc, level, (sw, sh)), (w, h))


def before_thumbnail(osr, max_size):
    W, H = osr.dimensions
    scale = max(W, H) / float(max_size)
    ow, oh = max(1, int(round(W / scale))), max(1, int(round(H / scale)))
    level = before_best_level(osr, scale)
    lw, lh = osr.level_dimensions[level]
    return before_resize(before_raw(osr, (0, 0), level, (lw, lh)), (ow, oh))


# ---- the cases
import openslide
from workbench.io import Slide

osr = openslide.OpenSlide(path)
slide = Slide(path)
W, H = slide.dimensions
mpp0 = slide.mpp
requests = {
    "half_outside_10000": dict(loc=(W - 5000, 0), size=(10000, 10000), scale=1.0),
    "oversize_100000": dict(loc=(0, 0), size=(100000, 100000), scale=1.0),
    "single_level_mpp100": dict(loc=(0, 0), size=(1000, 1000), scale=100.0 / mpp0),
}
base = rss_mb()
t = time.perf_counter()
out, error = None, None
try:
    if case == "thumbnail_single_level":
        out = slide.thumbnail(max_size=1024) if impl == "workbench" else before_thumbnail(osr, 1024)
    else:
        r = requests[case]
        if impl == "workbench":
            out = slide.read_region(r["loc"], r["size"], mpp=None if r["scale"] == 1.0 else 100.0)
        else:
            out = before_read_region(osr, r["loc"], r["size"], r["scale"])
except Exception as exc:  # what the user saw
    error = f"{type(exc).__name__}: {str(exc)[:160]}"
print(json.dumps({
    "seconds": time.perf_counter() - t,
    "baseline_rss_mb": base,
    "peak_rss_mb": rss_mb(),
    "result_mb": None if out is None else out.nbytes / 2**20,
    "result_shape": None if out is None else list(out.shape),
    "error": error,
}))
"""


def _limit(gb: float):
    def apply() -> None:
        n = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (n, n))

    return apply


def run_case(case: str, impl: str, path: Path, limit_gb: float) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, case, impl, str(path)],
        capture_output=True,
        text=True,
        preexec_fn=_limit(limit_gb),
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": f"child exited {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_slides(folder: Path) -> tuple[Path, Path]:
    """A 12,288 x 10,240 synthetic pyramid and a single-level copy of its level 0."""
    import numpy as np
    import openslide
    import tifffile

    from workbench.datasets import make_slide

    pyramid = folder / "pyramid.tif"
    make_slide(pyramid, size=(12288, 10240), grade=3, infiltration=0.5, seed=3, progress=False)
    osr = openslide.OpenSlide(str(pyramid))
    W, H = osr.dimensions
    tile = 256

    def tiles():
        for y in range(0, H, tile):
            for x in range(0, W, tile):
                yield np.asarray(osr.read_region((x, y), 0, (tile, tile)))[..., :3]

    single = folder / "single_level.tif"
    res = 1e4 / 0.5
    tifffile.imwrite(
        single,
        tiles(),
        shape=(H, W, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        compression="jpeg",
        photometric="rgb",
        resolution=(res, res),
        resolutionunit="CENTIMETER",
    )
    return pyramid, single


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit-gb", type=float, default=12.0, help="address-space limit per child")
    args = ap.parse_args(argv)
    env = {"python": platform.python_version(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        pyramid, single = write_slides(Path(tmp))
        cases = [
            ("half_outside_10000", pyramid),
            ("oversize_100000", pyramid),
            ("single_level_mpp100", single),
            ("thumbnail_single_level", single),
        ]
        for case, path in cases:
            row = {"benchmark": "read_memory", "case": case, "slide": path.name}
            for impl in ("before", "workbench"):
                r = run_case(case, impl, path, args.limit_gb)
                for k, v in r.items():
                    row[f"{impl}_{k}"] = round(v, 2) if isinstance(v, float) else v
            b, n = row.get("before_peak_rss_mb"), row.get("workbench_peak_rss_mb")
            if b and n and row.get("workbench_baseline_rss_mb"):
                row["workbench_extra_mb"] = round(n - row["workbench_baseline_rss_mb"], 1)
                row["before_extra_mb"] = round(b - row["before_baseline_rss_mb"], 1)
                row["peak_ratio_before_over_workbench"] = round(b / n, 2)
            row["limit_gb"] = args.limit_gb
            print(json.dumps({**row, **env}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
