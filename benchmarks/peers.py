"""Tissue detection + tiling + reading the tiles: this package against LazySlide and TIAToolbox.

The same slide, the same tile size and resolution (256 px at 0.5 µm/px by default), and a
tile kept when at least half of it is tissue (each tool's own rule for that). Every tool runs
in a child process with its own Python (peers live in their own virtual environments, never
in the project's dependencies), one thread, and reports

* import seconds,
* detect seconds (tissue mask) and tile seconds (the tile grid over that mask), each the
  median of ``--rounds`` warm rounds (the first round is reported apart as ``cold``); the
  children of the tools alternate ``--repeats`` times and the medians over them are kept;
  the same as CPU seconds of the child (``time.process_time``: fairer than wall seconds on a
  shared machine, where another job can take the core in the middle of a round),
* read seconds and tiles/s for reading every tile it found,
* the number of tissue tiles, and the child's peak resident memory.

Set up the peers, each in a virtual environment of its own outside the repository (see
``requirements-peers.txt`` and ``requirements-tiatoolbox.txt``)::

    python3.11 -m venv /work/peer-venv                # LazySlide
    /work/peer-venv/bin/pip install torch==2.13.0
    /work/peer-venv/bin/pip install -c <(echo torch==2.13.0) -r benchmarks/requirements-peers.txt
    python3.11 -m venv /work/venv-tiatoolbox          # TIAToolbox 2.1.3 needs torch < 2.13
    /work/venv-tiatoolbox/bin/pip install torch==2.12.1
    /work/venv-tiatoolbox/bin/pip install -c <(echo torch==2.12.1) \
        -r benchmarks/requirements-tiatoolbox.txt

Run::

    python benchmarks/peers.py                                   # default slides
    python benchmarks/peers.py --slide my.svs --mpp 0.5 --tile 256
    python benchmarks/peers.py --lazyslide /path/python --tiatoolbox /path/python

A peer whose Python is absent is skipped with the reason (``"skipped"``); one that cannot be
imported or run is reported with its error message instead of numbers.
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
def clock():  # wall and CPU seconds of this process
    return time.perf_counter(), time.process_time()
def since(start, wall, cpu):
    wall.append(time.perf_counter() - start[0])
    cpu.append(time.process_time() - start[1])
def report(import_s, detect, tiling, read_s, n_tiles, extra=None, detect_cpu=(), tile_cpu=()):
    out = {"import_seconds": import_s, "detect_seconds_cold": detect[0],
           "tile_seconds_cold": tiling[0],
           "detect_seconds": statistics.median(detect[1:] or detect),
           "tile_seconds": statistics.median(tiling[1:] or tiling),
           "read_seconds": read_s, "tiles": n_tiles,
           "tiles_per_second_read": n_tiles / read_s if read_s else None,
           "peak_rss_mb": rss_mb(), **(extra or {})}
    out["detect_tile_seconds"] = out["detect_seconds"] + out["tile_seconds"]
    if detect_cpu and tile_cpu:
        out["detect_cpu_seconds"] = statistics.median(detect_cpu[1:] or detect_cpu)
        out["tile_cpu_seconds"] = statistics.median(tile_cpu[1:] or tile_cpu)
        out["detect_tile_cpu_seconds"] = out["detect_cpu_seconds"] + out["tile_cpu_seconds"]
    print(json.dumps(out))
"""

_OURS = (
    _COMMON
    + """
t = time.perf_counter()
from workbench import pp
from workbench.io import Slide
import anndata  # tile_tissue returns AnnData; count its import here, not in the first round
try:  # the default mask size of tile_tissue (older versions: the rule as it was)
    from workbench.pp._tiling import _mask_side
except ImportError:
    def _mask_side(slide, step0):
        W, H = slide.dimensions
        return int(min(max(256, -(-max(W, H) * 8 // step0)), 2048, max(W, H)))
import_s = time.perf_counter() - t
detect, tiling, detect_cpu, tile_cpu = [], [], [], []
for _ in range(rounds + 1):
    slide = Slide(path)
    t = clock()
    # the mask tile_tissue makes by default, then the grid over it (two steps, timed apart)
    step0 = tile * mpp / slide.require_mpp()
    side = _mask_side(slide, step0)
    mask = pp.detect_tissue(slide.thumbnail(max_size=side))
    since(t, detect, detect_cpu)
    t = clock()
    grid = pp.tile_tissue(slide, mpp=mpp, tile_size=tile, tissue_mask=mask)
    since(t, tiling, tile_cpu)
check = pp.tile_tissue(slide, mpp=mpp, tile_size=tile)  # the one-call default gives the same
assert check.n_obs == grid.n_obs, (check.n_obs, grid.n_obs)
t = time.perf_counter()
for x, y in zip(grid.obs["x"], grid.obs["y"]):
    slide.read_region((int(x), int(y)), (tile, tile), mpp=mpp)
import workbench
report(import_s, detect, tiling, time.perf_counter() - t, int(grid.n_obs),
       {"mask_shape": list(mask.shape), "version": f"workbench {workbench.__version__}"},
       detect_cpu, tile_cpu)
"""
)

_LAZYSLIDE = (
    _COMMON
    + """
t = time.perf_counter()
import lazyslide as zs
from wsidata import open_wsi
import_s = time.perf_counter() - t
detect, tiling, detect_cpu, tile_cpu = [], [], [], []
for _ in range(rounds + 1):
    wsi = open_wsi(path)
    t = clock()
    zs.pp.find_tissues(wsi)
    since(t, detect, detect_cpu)
    t = clock()
    zs.pp.tile_tissues(wsi, tile, mpp=mpp)
    since(t, tiling, tile_cpu)
n = len(wsi["tiles"])
t = time.perf_counter()
got = sum(1 for _ in wsi.iter.tile_images("tiles"))
read_s = time.perf_counter() - t
import lazyslide, wsidata
report(import_s, detect, tiling, read_s, n, {"read": got, "tissue_pieces": len(wsi["tissues"]),
       "version": f"lazyslide {lazyslide.__version__}, wsidata {wsidata.__version__}"},
       detect_cpu, tile_cpu)
"""
)

_TIATOOLBOX = (
    _COMMON
    + """
t = time.perf_counter()
from tiatoolbox.tools import patchextraction
from tiatoolbox.wsicore.wsireader import OpenSlideWSIReader
import_s = time.perf_counter() - t
detect, tiling, detect_cpu, tile_cpu = [], [], [], []
for _ in range(rounds + 1):
    reader = OpenSlideWSIReader(path)
    t = clock()
    mask = reader.tissue_mask(method="otsu")  # its default: Otsu at 1.25x objective power
    since(t, detect, detect_cpu)
    t = clock()
    ex = patchextraction.get_patch_extractor(
        "slidingwindow", input_img=reader, input_mask=mask, patch_size=(tile, tile),
        resolution=mpp, units="mpp", stride=(tile, tile), min_mask_ratio=0.5)
    n = len(ex)
    since(t, tiling, tile_cpu)
t = time.perf_counter()
got = sum(1 for _ in ex)
import tiatoolbox
report(import_s, detect, tiling, time.perf_counter() - t, n,
       {"read": got, "version": f"tiatoolbox {tiatoolbox.__version__}"}, detect_cpu, tile_cpu)
"""
)

TOOLS = {"workbench": _OURS, "lazyslide": _LAZYSLIDE, "tiatoolbox": _TIATOOLBOX}


def run_tool(python: str | None, code: str, slide: Path, args, *, ours: str | None = None) -> dict:
    if python is None or not Path(python).exists():
        return {"skipped": f"no Python for this tool at {python!r} (its virtual environment is "
                "absent): install it (see the header of benchmarks/peers.py) or pass its "
                "interpreter"}  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}  # fmt: skip
    env.pop("PYTHONPATH", None)
    if ours:  # this checkout's package (or the baseline's), not the installed one
        env["PYTHONPATH"] = ours
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

    ok = [r for r in results if "error" not in r and "skipped" not in r]
    if not ok:
        return results[0]
    out = dict(ok[0])
    for key, value in ok[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "tiles":
            out[key] = statistics.median(r[key] for r in ok if r.get(key) is not None)
    out["detect_tile_seconds_runs"] = [r["detect_tile_seconds"] for r in ok]
    if all("detect_tile_cpu_seconds" in r for r in ok):
        out["detect_tile_cpu_seconds_runs"] = [r["detect_tile_cpu_seconds"] for r in ok]
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
    ):
        if cand.exists():
            out.append(cand)
    mosaic = bench / "mosaic" / "cohort" / "slides" / "S036.tif"  # slide_inference.py's
    if not mosaic.exists():
        mosaic = _small_mosaic(bench / "peers_mosaic")
    if mosaic is not None:
        out.append(mosaic)
    return out


def _small_mosaic(root: Path) -> Path | None:
    """A 3,072 x 2,304 real-tissue mosaic slide (needs the shared data's tiles), or None."""
    from workbench.datasets import make_mosaic_cohort
    from workbench.datasets._mosaic import default_data_dir

    data = default_data_dir() or (ROOT.parent / "shared" / "data")
    if not (Path(data) / "tiles").is_dir():
        return None
    cohort = make_mosaic_cohort(root, n_train=1, n_test=1, size=(3072, 2304), seed=0,
                                data_dir=data, progress=False)  # fmt: skip
    return Path(cohort.slide_path(cohort.slide_ids[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", nargs="+", type=Path, help="slides (default: synthetic + real)")
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="warm rounds inside each child")
    ap.add_argument("--repeats", type=int, default=3, help="child runs per tool, alternating")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--lazyslide", default="/work/peer-venv/bin/python")
    ap.add_argument("--tiatoolbox", default="/work/venv-tiatoolbox/bin/python")
    ap.add_argument("--tools", nargs="+", choices=list(TOOLS), default=list(TOOLS))
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a folder holding an older workbench/ package: timed as "
                    "'workbench_baseline' in the same run (e.g. from git archive)")  # fmt: skip
    args = ap.parse_args(argv)
    pythons = {"workbench": sys.executable, "lazyslide": args.lazyslide,
               "tiatoolbox": args.tiatoolbox}  # fmt: skip
    roots = {"workbench": str(ROOT)}
    if args.baseline is not None:
        TOOLS["workbench_baseline"] = _OURS
        pythons["workbench_baseline"] = sys.executable
        roots["workbench_baseline"] = str(args.baseline.resolve())
        args.tools = [*args.tools, "workbench_baseline"]
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
                runs[tool].append(
                    run_tool(pythons[tool], TOOLS[tool], slide, args, ours=roots.get(tool))
                )
        for tool, results in runs.items():
            row[tool] = _combine(results)
        row["load_avg_1m"] = round(os.getloadavg()[0], 2)
        base, new = row.get("workbench_baseline", {}), row.get("workbench", {})
        if "detect_tile_cpu_seconds" in base and "detect_tile_cpu_seconds" in new:
            row["ours_speedup_over_baseline_cpu"] = (
                base["detect_tile_cpu_seconds"] / new["detect_tile_cpu_seconds"]
            )
            row["ours_same_tiles_as_baseline"] = base["tiles"] == new["tiles"]
        ok = {t: r for t, r in row.items() if isinstance(r, dict) and "detect_tile_seconds" in r}
        if "workbench" in ok and any(not t.startswith("workbench") for t in ok):
            peers = {t: r for t, r in ok.items() if not t.startswith("workbench")}
            fastest = min(peers, key=lambda t: peers[t]["detect_tile_seconds"])
            ours = ok["workbench"]
            row["fastest_peer"] = fastest
            row["ratio_fastest_peer_over_ours"] = (
                peers[fastest]["detect_tile_seconds"] / ours["detect_tile_seconds"]
            )
            row["tiles_ours_over_fastest_peer"] = ours["tiles"] / max(peers[fastest]["tiles"], 1)
            row["target_at_least_as_fast"] = row["ratio_fastest_peer_over_ours"] >= 1.0
            if all("detect_tile_cpu_seconds" in r for r in ok.values()):
                fastest_cpu = min(peers, key=lambda t: peers[t]["detect_tile_cpu_seconds"])
                row["fastest_peer_cpu"] = fastest_cpu
                row["ratio_fastest_peer_over_ours_cpu"] = (
                    peers[fastest_cpu]["detect_tile_cpu_seconds"] / ours["detect_tile_cpu_seconds"]
                )
                row["target_at_least_as_fast_cpu"] = row["ratio_fastest_peer_over_ours_cpu"] >= 1.0
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
