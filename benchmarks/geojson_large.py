"""Reading and writing a full QuPath export (cell detections + a few lesion annotations).

A QuPath "export all objects" GeoJSON holds a few lesion annotations and up to hundreds of
thousands of cell detections (small polygons, classification and measurements). For 30,000
and 300,000 detections (plus 3 annotations) this script times, each in its own child process
(so the peak resident memory is the operation's own), the reader and writer as they were
before this change (``workbench/io/_geojson.py`` at ``--old-ref``, loaded from git) and as
they are now:

* ``read``: ``read_geojson(path)`` (old: every feature, each checked; new: annotations only,
  detections skipped unchecked, the default);
* ``read_all``: the new reader with ``object_types=None`` (every feature, vectorised checks);
* ``open_lesion``: what the refiner does on opening the file: read, keep ``Tumor`` polygons,
  union them (old: the 300,000 detections are unioned too);
* ``write``: ``write_geojson`` of every feature as annotations (each checked first).

One JSON line per (operation, size, implementation), with wall-clock ``seconds`` and
``cpu_seconds`` (the process's own CPU time: the fairer figure on a busy shared machine)::

    python benchmarks/geojson_large.py                  # tens of minutes on 2 busy cores
    python benchmarks/geojson_large.py --sizes 3000     # a quick check
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import importlib.util, json, resource, sys, time

op, impl, path, old_file = sys.argv[1:5]


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


import workbench.io._geojson as new
if impl == "old":
    spec = importlib.util.spec_from_file_location("old_geojson", old_file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_geojson"] = mod
    spec.loader.exec_module(mod)
else:
    mod = new
base = rss_mb()
row = {}
if op == "write":
    anns = mod.read_geojson(path) if impl == "old" else mod.read_geojson(path, object_types=None)
    base = rss_mb()
    t, c = time.perf_counter(), time.process_time()
    mod.write_geojson(path + f".{impl}.out", anns)
    row["n_features"] = len(anns)
else:
    t, c = time.perf_counter(), time.process_time()
    if op == "read_all":
        anns = mod.read_geojson(path, object_types=None)
    else:
        anns = mod.read_geojson(path)
    row["n_features"] = len(anns)
    if op == "open_lesion":
        from shapely.geometry import shape
        from shapely.ops import unary_union

        polys = [shape(a.geometry) for a in anns
                 if a.geometry_type in ("Polygon", "MultiPolygon") and a.classification in (None, "Tumor")]
        lesion = unary_union(polys)
        row["lesion_parts"] = len(getattr(lesion, "geoms", [lesion]))
row.update(seconds=round(time.perf_counter() - t, 3),
           cpu_seconds=round(time.process_time() - c, 3), baseline_rss_mb=round(base, 1),
           peak_rss_mb=round(rss_mb(), 1))
print(json.dumps(row))
"""


def qupath_export(n_detections: int, n_annotations: int = 3, seed: int = 0) -> dict:
    """A FeatureCollection like QuPath's "export all objects": lesion annotations and small
    cell detections (16-vertex ellipses) classified Tumor, with measurements."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feats = []
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    for i in range(n_annotations):
        cx, cy = rng.uniform(5000, 95000, 2)
        r = 2000 * (1 + 0.2 * np.sin(3 * t))
        ring = np.c_[cx + r * np.cos(t), cy + r * np.sin(t)].round(1).tolist()
        feats.append(
            {
                "type": "Feature",
                "id": f"a{i}",
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                },
            }
        )
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for i in range(n_detections):
        cx, cy = rng.uniform(0, 100_000, 2)
        ring = np.c_[cx + 6 * np.cos(t), cy + 5 * np.sin(t)].round(2).tolist()
        feats.append(
            {
                "type": "Feature",
                "id": f"d{i}",
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                    "measurements": {"Nucleus: Area": 94.2, "Nucleus: Perimeter": 34.9},
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30_000, 300_000])
    ap.add_argument("--old-ref", default="79a743b", help="git commit of the earlier reader")
    ap.add_argument("--limit-s", type=float, default=1200, help="give up on one run after this")
    ap.add_argument(
        "--ops",
        nargs="+",
        default=["read", "read_all", "open_lesion", "write"],
        help="what to time",
    )
    ap.add_argument("--impls", nargs="+", default=["old", "new"], choices=["old", "new"])
    ap.add_argument("--write-export", nargs=2, metavar=("N", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_export:
        n, path = args.write_export
        Path(path).write_text(json.dumps(qupath_export(int(n))))
        return 0
    root = Path(__file__).resolve().parents[1]
    env = {"python": platform.python_version(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        old_file = Path(tmp) / "old_geojson.py"
        old_file.write_text(
            subprocess.run(
                ["git", "show", f"{args.old_ref}:workbench/io/_geojson.py"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for n in args.sizes:
            path = Path(tmp) / f"export_{n}.geojson"
            # written by a child, so this process stays small: a child's peak resident size
            # (ru_maxrss) starts from its parent's at the fork
            subprocess.run(
                [sys.executable, __file__, "--write-export", str(n), str(path)], check=True
            )
            for op in args.ops:
                for impl in args.impls:
                    if op == "read_all" and impl == "old":
                        continue  # the old reader always reads everything: that is "read"
                    row = {"benchmark": "geojson_large", "op": op, "impl": impl,
                           "n_detections": n, "file_mb": round(path.stat().st_size / 2**20, 1)}  # fmt: skip
                    try:
                        proc = subprocess.run(
                            [sys.executable, "-c", _CHILD, op, impl, str(path), str(old_file)],
                            capture_output=True,
                            text=True,
                            timeout=args.limit_s,
                        )
                        lines = proc.stdout.strip().splitlines()
                        row.update(
                            json.loads(lines[-1]) if lines else {"error": proc.stderr[-300:]}
                        )
                    except subprocess.TimeoutExpired:
                        row["error"] = f"not finished within {args.limit_s:g} s"
                    print(json.dumps({**row, **env}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
