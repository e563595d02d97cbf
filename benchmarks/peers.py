"""Tissue detection + tiling + reading the tiles: this package against LazySlide and TIAToolbox.

The same slide, the same tile size and resolution (256 px at 0.5 µm/px by default), and a
tile kept when at least half of it is tissue (each tool's own rule for that). Every tool runs
in a child process with its own Python (peers live in their own virtual environments, never
in the project's dependencies), one thread, and reports

* import seconds,
* detect seconds (tissue mask) and tile seconds (the tile grid over that mask), each the
  median of ``--rounds`` warm rounds (the first round is reported apart as ``cold``); the
  children of the tools alternate ``--repeats`` times and the medians over them are kept,
* read seconds and tiles/s for reading every tile it found,
* the number of tissue tiles, and the child's peak resident memory.

Set up the peers (see ``requirements-peers.txt``)::

    python3.11 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install torch==2.13.0
    /work/peer-venv/bin/pip install -c <(echo torch==2.13.0) -r benchmarks/requirements-peers.txt
    python3.11 -m venv /work/peer-venv-tia          # TIAToolbox 2.1.3 needs torch < 2.13
    /work/peer-venv-tia/bin/pip install torch==2.12.1 tiatoolbox==2.1.3 openslide-bin

Run::

    python benchmarks/peers.py                                   # default slides
    python benchmarks/peers.py --slide my.svs --mpp 0.5 --tile 256
    python benchmarks/peers.py --lazyslide /path/python --tiatoolbox /path/python

A peer that cannot be found, imported or run is reported with the reason (its error
message) instead of numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_COMMON = """
import json, resource, statistics, sys, time, warnings
warnings.simplefilter("ignore")
path, mpp, tile, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def rss_mb():  # VmHWM starts afresh at exec (ru_maxrss would include the parent's size)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
def report(import_s, detect, tiling, read_s, n_tiles, extra=None):
    out = {"import_seconds": import_s, "detect_seconds_cold": detect[0],
           "tile_seconds_cold": tiling[0],
           "detect_seconds": statistics.median(detect[1:] or detect),
           "tile_seconds": statistics.median(tiling[1:] or tiling),
           "read_seconds": read_s, "tiles": n_tiles,
           "tiles_per_second_read": n_tiles / read_s if read_s else None,
           "peak_rss_mb": rss_mb(), **(extra or {})}
    out["detect_tile_seconds"] = out["detect_seconds"] + out["tile_seconds"]
    print(json.dumps(out))
"""

_OURS = (
    _COMMON
    + """
t = time.perf_counter()
from workbench import pp
from workbench.io import Slide
import anndata  # tile_tissue returns AnnData; count its import here, not in the first round
import_s = time.perf_counter() - t
detect, tiling = [], []
for _ in range(rounds + 1):
    slide = Slide(path)
    t = time.perf_counter()
    # the mask tile_tissue makes by default, then the grid over it (two steps, timed apart)
    W, H = slide.dimensions
    step0 = tile * mpp / slide.require_mpp()
    side = int(min(max(256, -(-max(W, H) * 8 // step0)), 2048, max(W, H)))
    mask = pp.detect_tissue(slide.thumbnail(max_size=side))
    detect.append(time.perf_counter() - t)
    t = time.perf_counter()
    grid = pp.tile_tissue(slide, mpp=mpp, tile_size=tile, tissue_mask=mask)
    tiling.append(time.perf_counter() - t)
check = pp.tile_tissue(slide, mpp=mpp, tile_size=tile)  # the one-call default gives the same
assert check.n_obs == grid.n_obs, (check.n_obs, grid.n_obs)
t = time.perf_counter()
for x, y in zip(grid.obs["x"], grid.obs["y"]):
    slide.read_region((int(x), int(y)), (tile, tile), mpp=mpp)
report(import_s, detect, tiling, time.perf_counter() - t, int(grid.n_obs),
       {"mask_shape": list(mask.shape)})
"""
)

_LAZYSLIDE = (
    _COMMON
    + """
t = time.perf_counter()
import lazyslide as zs
from wsidata import open_wsi
import_s = time.perf_counter() - t
detect, tiling = [], []
for _ in range(rounds + 1):
    wsi = open_wsi(path)
    t = time.perf_counter()
    zs.pp.find_tissues(wsi)
    detect.append(time.perf_counter() - t)
    t = time.perf_counter()
    zs.pp.tile_tissues(wsi, tile, mpp=mpp)
    tiling.append(time.perf_counter() - t)
n = len(wsi["tiles"])
t = time.perf_counter()
got = sum(1 for _ in wsi.iter.tile_images("tiles"))
read_s = time.perf_counter() - t
import lazyslide, wsidata
report(import_s, detect, tiling, read_s, n, {"read": got, "tissue_pieces": len(wsi["tissues"]),
       "version": f"lazyslide {lazyslide.__version__}, wsidata {wsidata.__version__}"})
"""
)

_TIATOOLBOX = (
    _COMMON
    + """
t = time.perf_counter()
from tiatoolbox.tools import patchextraction
from tiatoolbox.wsicore.wsireader import OpenSlideWSIReader
import_s = time.perf_counter() - t
detect, tiling = [], []
for _ in range(rounds + 1):
    reader = OpenSlideWSIReader(path)
    t = time.perf_counter()
    mask = reader.tissue_mask(method="otsu")  # its default: Otsu at 1.25x objective power
    detect.append(time.perf_counter() - t)
    t = time.perf_counter()
    ex = patchextraction.get_patch_extractor(
        "slidingwindow", input_img=reader, input_mask=mask, patch_size=(tile, tile),
        resolution=mpp, units="mpp", stride=(tile, tile), min_mask_ratio=0.5)
    n = len(ex)
    tiling.append(time.perf_counter() - t)
t = time.perf_counter()
got = sum(1 for _ in ex)
import tiatoolbox
report(import_s, detect, tiling, time.perf_counter() - t, n,
       {"read": got, "version": f"tiatoolbox {tiatoolbox.__version__}"})
"""
)

TOOLS = {"workbench": _OURS, "lazyslide": _LAZYSLIDE, "tiatoolbox": _TIATOOLBOX}


def run_tool(python: str | None, code: str, slide: Path, args) -> dict:
    if python is None or not Path(python).exists():
        return {"error": f"no Python for this tool at {python!r}; install it (see the header of "
                "benchmarks/peers.py) or pass its interpreter"}  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}  # fmt: skip
    env.pop("PYTHONPATH", None)
    try:
        res = subprocess.run(
            [python, "-c", code, str(slide), str(args.mpp), str(args.tile), str(args.rounds)],
            capture_output=True, text=True, env=env, cwd="/tmp", timeout=args.timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {args.timeout} s"}
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        return {"error": " | ".join(lines[-3:]) or f"exit code {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _combine(results: list[dict]) -> dict:
    """Medians over the repeated child runs of one tool (each value also listed)."""
    import statistics

    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[0]
    out = dict(ok[0])
    for key, value in ok[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "tiles":
            out[key] = statistics.median(r[key] for r in ok if r.get(key) is not None)
    out["detect_tile_seconds_runs"] = [r["detect_tile_seconds"] for r in ok]
    out["repeats"] = len(ok)
    if len(ok) < len(results):
        out["failed_runs"] = [r["error"] for r in results if "error" in r]
    return out


def default_slides() -> list[Path]:
    bench = ROOT / "data" / "generated" / "bench"
    out = []
    demo = bench / "demo_8192.tif"
    if not demo.exists():
        from workbench.datasets import make_slide

        demo.parent.mkdir(parents=True, exist_ok=True)
        make_slide(demo, size="demo", grade=3, infiltration=0.5, seed=77)
    out.append(demo)
    for cand in (
        bench / "speed_40960x40960.tif",
        ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs",
        bench / "mosaic" / "cohort" / "slides" / "S036.tif",
    ):
        if cand.exists():
            out.append(cand)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", nargs="+", type=Path, help="slides (default: synthetic + real)")
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="warm rounds inside each child")
    ap.add_argument("--repeats", type=int, default=3, help="child runs per tool, alternating")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--lazyslide", default="/work/peer-venv/bin/python")
    ap.add_argument("--tiatoolbox", default="/work/peer-venv-tia/bin/python")
    ap.add_argument("--tools", nargs="+", choices=list(TOOLS), default=list(TOOLS))
    args = ap.parse_args(argv)
    pythons = {"workbench": sys.executable, "lazyslide": args.lazyslide,
               "tiatoolbox": args.tiatoolbox}  # fmt: skip
    print(json.dumps({"benchmark": "peers", "python": platform.python_version(),
                      "cpus": os.cpu_count(), "mpp": args.mpp, "tile": args.tile,
                      "rounds": args.rounds, "repeats": args.repeats, "gpu": None,
                      "pythons": pythons}), flush=True)  # fmt: skip
    from workbench.io import Slide

    for slide in [Path(p).resolve() for p in (args.slide or default_slides())]:
        with Slide(slide) as s:
            info = {"dimensions": list(s.dimensions), "mpp": s.mpp, "levels": s.level_count}
        row = {"section": "peers", "slide": str(slide), **info}
        runs: dict[str, list[dict]] = {t: [] for t in args.tools}
        for _ in range(args.repeats):  # tools alternate, so a busy spell hits them alike
            for tool in args.tools:
                runs[tool].append(run_tool(pythons[tool], TOOLS[tool], slide, args))
        for tool, results in runs.items():
            row[tool] = _combine(results)
        ok = {t: r for t, r in row.items() if isinstance(r, dict) and "detect_tile_seconds" in r}
        if "workbench" in ok and len(ok) > 1:
            peers = {t: r for t, r in ok.items() if t != "workbench"}
            fastest = min(peers, key=lambda t: peers[t]["detect_tile_seconds"])
            ours = ok["workbench"]
            row["fastest_peer"] = fastest
            row["ratio_fastest_peer_over_ours"] = (
                peers[fastest]["detect_tile_seconds"] / ours["detect_tile_seconds"]
            )
            row["tiles_ours_over_fastest_peer"] = ours["tiles"] / max(peers[fastest]["tiles"], 1)
            row["target_at_least_as_fast"] = row["ratio_fastest_peer_over_ours"] >= 1.0
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
