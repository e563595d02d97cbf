"""The cohort at scale: ``tl.extract_cohort`` over hundreds of slides, its memory, and resume.

One JSON line per measurement, printed and appended to ``benchmarks/results/cohort_scale.jsonl``
(``--out``):

* ``"part": "slides"`` - the synthetic cohort: ``--slides`` pyramidal TIFFs of mixed sizes
  (mostly small, some 8,192 x 6,144, and ``--big`` slides of ``--big-size``, at least 100k px
  wide by default), written once by ``datasets.make_slide`` and reused by later runs (a
  ``plan.json`` in ``--root`` says what they are);
* ``"part": "extract"`` - ``extract_cohort`` in this process (``mode: "in-process"``) and on a
  local dask cluster of 1 and 2 workers (``client="local"``, the path a user takes, cluster
  start included): wall and CPU seconds (this process and its worker processes), slides per
  hour, the load average before, during and after, and per process the peak resident memory
  sampled every ``--interval`` s with its slope against the slides finished (MB per slide,
  least squares after the first 10 % of slides, so imports and the model load are not
  counted as growth);
* ``"part": "resume"`` - a 2-worker run on a cluster this script owns, one worker killed
  (SIGKILL) once a third of the slides are done: the run must finish with every slide
  ``done``, and every output must equal the in-process run's (region table, features,
  prediction); then the same call again, which must skip every slide;
* ``"part": "trainer"`` - ``SlideTrainer.fit`` (1 epoch) on the first N slides of the cohort
  for several N, each in a fresh child process: peak resident memory (``VmHWM``), the bytes
  the training cache (``samples_``: region features and graph, crops) holds in memory, and
  their slopes per slide;
* ``"part": "discover"`` - ``tl.discover`` on ``--discover-patients`` simulated patients
  (``datasets.simulate_region_cohort``), in a child process: seconds, CPU seconds, peak memory.

The model is a small self-calibrated model (3 epochs on 12 small synthetic slides, 100
superpixels on an 8 µm/px thumbnail, 64-px crops at 1 µm/px), so extraction is cheap per
slide and the run measures the runner, not the network.

On a shared machine the throughput ratio of 2 workers to 1 is only fair with idle cores:
every timing line carries the load average and CPU seconds next to wall seconds.

    python benchmarks/cohort_scale.py                      # 500 slides (about an hour)
    python benchmarks/cohort_scale.py --slides 40 --big 1 --big-size 16384x1024 \
        --parts slides,extract --modes 1                    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cohort_scale.jsonl"

#: Preprocessing of the benchmark model: cheap per slide at any slide size.
SETTINGS = {
    "thumbnail_mpp": 8.0,
    "thumbnail_max_px": 1024,
    "n_segments": 100,
    "detail_mpp": 1.0,
    "crop_size": 64,
}
#: The trainer part reads crops of the default size (256 px at 0.5 µm/px), as users train.
TRAINER_SETTINGS = {**SETTINGS, "detail_mpp": 0.5, "crop_size": 256}
MODEL_KWARGS = {"hidden": 16, "detail_width": 8, "embed_dim": 16}
#: Shares of the non-big slides per size (the rest are the big ones).
MIX = (((2048, 1536), 0.70), ((4096, 3072), 0.25), ((8192, 6144), 0.05))
TARGET_RSS_MB = 2048.0
TARGET_SLOPE_MB = 1.0
TARGET_RATIO = 1.7
PARTS = ("slides", "extract", "resume", "trainer", "discover")


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _emit(record: dict, out: Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


# ---------------------------------------------------------------------- the cohort
def slide_plan(
    n: int, n_big: int, big_size: tuple[int, int], distinct: int | None = None, seed: int = 0
) -> list[dict]:
    """What each slide is: id, size, grade, infiltration, seed (big slides shuffled in).

    With ``distinct``, only about that many of the small slides are drawn; the others are
    byte-identical copies (``copy_of``) of a drawn slide of the same size under their own
    name, which costs no drawing time (every copy is still extracted like any slide). The
    big slides are always drawn.
    """
    rng = np.random.default_rng(seed)
    n_small = n - n_big
    counts = [int(round(share * n_small)) for _, share in MIX]
    counts[0] += n_small - sum(counts)
    sizes = [s for (s, _), c in zip(MIX, counts, strict=True) for _ in range(c)]
    sizes += [tuple(big_size)] * n_big
    order = rng.permutation(len(sizes))
    keep = {}  # size -> how many of its slides are drawn
    for (size, share), c in zip(MIX, counts, strict=True):
        keep[size] = c if distinct is None else min(c, max(1, int(np.ceil(share * distinct))))
    keep[tuple(big_size)] = n_big
    drawn: dict[tuple, list[str]] = {}
    plan = []
    for i, j in enumerate(order):
        size = tuple(sizes[j])
        entry = {
            "slide_id": f"C{i:04d}",
            "size": [int(v) for v in size],
            "grade": int(rng.integers(1, 4)),
            "infiltration": round(float(rng.uniform(0.1, 0.9)), 3),
            "seed": int(seed * 100_000 + i),
        }
        mine = drawn.setdefault(size, [])
        if len(mine) < keep.get(size, len(sizes)):
            mine.append(entry["slide_id"])
        else:
            entry["copy_of"] = mine[i % len(mine)]
        plan.append(entry)
    return plan


def write_slides(root: Path, plan: list[dict], progress: bool = True) -> dict:
    """Write the planned slides under ``root/slides`` (those already there are kept)."""
    import shutil

    from tqdm.auto import tqdm

    from workbench.datasets import make_slide
    from workbench.io._atomic import atomic_write_text

    folder = root / "slides"
    folder.mkdir(parents=True, exist_ok=True)
    plan_file = root / "plan.json"
    if plan_file.exists() and json.loads(plan_file.read_text()) != plan:
        for f in folder.glob("*.tif"):  # another plan: its slides are not these
            f.unlink()
    atomic_write_text(plan_file, json.dumps(plan))
    t0, written = time.perf_counter(), 0
    for p in tqdm(plan, desc="write slides", disable=not progress):
        path = folder / f"{p['slide_id']}.tif"
        if path.exists() or "copy_of" in p:
            continue
        tmp = folder / f".{p['slide_id']}.partial.tif"
        make_slide(
            tmp,
            size=tuple(p["size"]),
            grade=p["grade"],
            infiltration=p["infiltration"],
            seed=p["seed"],
            progress=False,
        )
        os.replace(tmp, path)
        written += 1
    for p in plan:  # copies: a file of their own with the drawn slide's bytes
        path = folder / f"{p['slide_id']}.tif"
        if "copy_of" in p and not path.exists():
            tmp = folder / f".{p['slide_id']}.partial.tif"
            shutil.copyfile(folder / f"{p['copy_of']}.tif", tmp)
            os.replace(tmp, path)
    sizes = [tuple(p["size"]) for p in plan]
    return {
        "part": "slides",
        "slides": len(plan),
        "distinct_images": sum("copy_of" not in p for p in plan),
        "written_now": written,
        "write_seconds": round(time.perf_counter() - t0, 1),
        "sizes": {f"{w}x{h}": sizes.count((w, h)) for w, h in sorted(set(sizes))},
        "widest_px": max(w for w, _ in sizes),
        "total_megapixels": round(sum(w * h for w, h in sizes) / 1e6, 1),
        "file_gb": round(sum(f.stat().st_size for f in folder.glob("*.tif")) / 1e9, 2),
    }


def slide_paths(root: Path, plan: list[dict]) -> dict[str, str]:
    return {p["slide_id"]: str(root / "slides" / f"{p['slide_id']}.tif") for p in plan}


def clinical_table(plan: list[dict]):
    import pandas as pd

    return pd.DataFrame(
        {
            "patient_id": [f"P{p['slide_id'][1:]}" for p in plan],
            "slide": [p["slide_id"] for p in plan],
            "grade": [p["grade"] for p in plan],
        }
    )


def train_model(root: Path, epochs: int = 3) -> Path:
    """The small benchmark model, trained once on 12 small synthetic slides and kept."""
    out = root / "model"
    if (out / "config.json").exists():
        return out
    import torch

    from workbench.datasets import make_cohort
    from workbench.tl import SlideTrainer

    torch.manual_seed(0)
    cohort = make_cohort(root / "train", n_patients=12, size=(2048, 1536), seed=0, progress=False)
    trainer = SlideTrainer(
        kind="sew",
        label="grade",
        epochs=epochs,
        seed=0,
        progress=False,
        settings=SETTINGS,
        model_kwargs=MODEL_KWARGS,
    )
    trainer.fit(cohort)
    trainer.save(out)
    return out


# ---------------------------------------------------------------------- memory sampling
def _rss_anon_mb(proc) -> float | None:
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Sampler:
    """Samples, every ``interval`` s, the resident memory of this process and of its worker
    processes (children whose command line is not a helper's), the outputs written so far
    and the load average; keeps each process's last CPU times."""

    def __init__(self, out_dir: Path, interval: float = 0.5, workers: bool = True) -> None:
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.out_dir = out_dir
        self.interval = interval
        self.workers = workers
        self.samples: list[dict] = []  # {t, done, load1, rss: {pid: mb}, anon: {pid: mb}}
        self.cpu: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self):
        procs = [self.me]
        if self.workers:
            for p in self.me.children(recursive=True):
                try:
                    cmd = " ".join(p.cmdline())
                except self.psutil.Error:
                    continue
                if "resource_tracker" in cmd or "semaphore_tracker" in cmd:
                    continue
                procs.append(p)
        return procs

    def _take(self) -> None:
        rss, anon = {}, {}
        for p in self._procs():
            try:
                with p.oneshot():
                    rss[p.pid] = p.memory_info().rss / 2**20
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                a = _rss_anon_mb(p)
                if a is not None:
                    anon[p.pid] = a
                self.names.setdefault(p.pid, "main" if p.pid == self.me.pid else "worker")
            except self.psutil.Error:
                continue
        done = sum(1 for _ in self.out_dir.glob("*.h5ad")) if self.out_dir.exists() else 0
        self.samples.append(
            {"t": time.perf_counter(), "done": done, "load1": os.getloadavg()[0], "rss": rss}
            | {"anon": anon}
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def summary(self, n_slides: int) -> dict:
        """Per process (main, each worker pid): peak RSS, peak anonymous RSS, slope of RSS
        against the slides done after the first 10 % of them."""
        warm = max(1, int(np.ceil(0.1 * n_slides)))
        out = {}
        for pid, name in self.names.items():
            pts = [(s["done"], s["rss"].get(pid), s["anon"].get(pid)) for s in self.samples]
            pts = [p for p in pts if p[1] is not None and p[0] is not None]
            pts = [(d, r, a) for d, r, a in pts if r is not None]
            if not pts:
                continue
            done = np.array([d for d, _, _ in pts], float)
            rss = np.array([r for _, r, _ in pts], float)
            anon = np.array([np.nan if a is None else a for _, _, a in pts], float)
            late = done >= warm
            slope = None
            if late.sum() >= 3 and np.ptp(done[late]) > 0:
                slope = float(np.polyfit(done[late], rss[late], 1)[0])
            slope_anon = None
            ok = late & np.isfinite(anon)
            if ok.sum() >= 3 and np.ptp(done[ok]) > 0:
                slope_anon = float(np.polyfit(done[ok], anon[ok], 1)[0])
            key = "main" if name == "main" else f"worker {pid}"
            out[key] = {
                "peak_rss_mb": round(float(rss.max()), 1),
                "peak_rss_anon_mb": None if np.isnan(anon).all() else round(np.nanmax(anon), 1),
                "rss_at_warm_mb": round(float(rss[late][0]), 1) if late.any() else None,
                "rss_at_end_mb": round(float(rss[-1]), 1),
                "slope_mb_per_slide": None if slope is None else round(slope, 4),
                "slope_anon_mb_per_slide": None if slope_anon is None else round(slope_anon, 4),
                "samples": int(len(pts)),
            }
        return out


def _tables_equal(a: Path, b: Path) -> tuple[bool, str]:
    """Whether two extract outputs hold the same regions, features and prediction."""
    import anndata as ad

    from workbench._constants import EXTRACT_FINGERPRINT

    x, y = ad.read_h5ad(a), ad.read_h5ad(b)
    if x.shape != y.shape:
        return False, f"shape {x.shape} != {y.shape}"
    if not np.array_equal(np.asarray(x.X), np.asarray(y.X)):
        return False, "X differs"
    if not x.obs.equals(y.obs):
        return False, "obs differs"
    for k in set(x.obsm) | set(y.obsm):
        if k not in x.obsm or k not in y.obsm:
            return False, f"obsm {k} missing"
        if not np.array_equal(np.asarray(x.obsm[k]), np.asarray(y.obsm[k]), equal_nan=True):
            return False, f"obsm {k} differs"
    from workbench.io._fingerprint import canonical_json

    ux = {k: v for k, v in x.uns.items() if k != EXTRACT_FINGERPRINT}
    uy = {k: v for k, v in y.uns.items() if k != EXTRACT_FINGERPRINT}

    def text(u):
        try:
            return canonical_json(u)
        except Exception:  # arrays canonical_json does not take: compare their repr
            return repr(sorted(u))

    if set(ux) != set(uy):
        return False, "uns keys differ"
    for k in ux:
        if text({k: ux[k]}) != text({k: uy[k]}):
            return False, f"uns {k} differs"
    return True, ""


# ---------------------------------------------------------------------- extraction
def run_extract(paths: dict, model: Path, out_dir: Path, mode: str, args) -> dict:
    """One ``extract_cohort`` run, timed and sampled."""
    import shutil

    from workbench.tl import extract_cohort

    if out_dir.exists():
        shutil.rmtree(out_dir)
    client = None if mode == "in-process" else "local"
    n_workers = 1 if mode == "in-process" else int(mode)
    load_before = _load()
    t0, c0 = time.perf_counter(), time.process_time()
    with Sampler(out_dir, args.interval, workers=client is not None) as sampler:
        table = extract_cohort(
            paths, model, out_dir, client=client, n_workers=n_workers, progress=args.progress
        )
    wall = time.perf_counter() - t0
    main_cpu = time.process_time() - c0
    worker_cpu = sum(v for pid, v in sampler.cpu.items() if sampler.names.get(pid) == "worker")
    status = table["status"].value_counts().to_dict()
    procs = sampler.summary(len(paths))
    workers = {k: v for k, v in procs.items() if k != "main"} or {"main": procs["main"]}
    peak = max(v["peak_rss_mb"] for v in workers.values())
    slopes = [v["slope_mb_per_slide"] for v in workers.values()]
    slopes = [s for s in slopes if s is not None]
    loads = [s["load1"] for s in sampler.samples]
    return {
        "part": "extract",
        "mode": "in-process" if client is None else f"{n_workers} worker(s)",
        "n_workers": n_workers,
        "slides": len(paths),
        "status": status,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(main_cpu + worker_cpu, 1),
        "cpu_seconds_main": round(main_cpu, 1),
        "cpu_seconds_workers": round(worker_cpu, 1),
        "slides_per_hour": round(len(paths) / wall * 3600, 1),
        "slides_per_cpu_hour": round(len(paths) / max(main_cpu + worker_cpu, 1e-9) * 3600, 1),
        "load_before": load_before,
        "load_mean_during": round(float(np.mean(loads)), 2) if loads else None,
        "load_after": _load(),
        "peak_rss_mb_per_worker": peak,
        "max_slope_mb_per_slide": round(max(slopes), 4) if slopes else None,
        "processes": procs,
        "target_rss_met": peak <= TARGET_RSS_MB,
        "target_slope_met": bool(slopes) and max(slopes) < TARGET_SLOPE_MB,
        "slope_window": "slides done >= 10 % of the cohort",
    }


def run_resume(paths: dict, model: Path, out_dir: Path, reference: Path | None, args) -> dict:
    """A 2-worker run with one worker killed mid-run, checked against ``reference``."""
    import shutil

    from distributed import Client, LocalCluster

    from workbench.tl import extract_cohort

    if out_dir.exists():
        shutil.rmtree(out_dir)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    killed: dict = {}
    kill_at = max(1, len(paths) // 3)

    def killer() -> None:
        while not stop.is_set():
            done = sum(1 for _ in out_dir.glob("*.h5ad")) if out_dir.exists() else 0
            if done >= kill_at:
                pids = client.run(os.getpid)  # {worker address: pid}
                pid = pids[sorted(pids)[0]]
                os.kill(pid, signal.SIGKILL)
                killed.update({"pid": pid, "after_slides_done": done, "t": time.perf_counter()})
                return
            stop.wait(0.2)

    stop = threading.Event()
    thread = threading.Thread(target=killer, daemon=True)
    load_before = _load()
    t0 = time.perf_counter()
    try:
        thread.start()
        table = extract_cohort(paths, model, out_dir, client=client, progress=args.progress)
        wall = time.perf_counter() - t0
        stop.set()
        thread.join()
        again = extract_cohort(paths, model, out_dir, client=client, progress=False)
    finally:
        stop.set()
        client.close()
        cluster.close()
    status = table["status"].value_counts().to_dict()
    compared = differ = 0
    first_difference = ""
    if reference is not None:
        for sid in paths:
            a, b = out_dir / f"{sid}.h5ad", reference / f"{sid}.h5ad"
            if not (a.exists() and b.exists()):
                differ += 1
                first_difference = first_difference or f"{sid}: a file is missing"
                continue
            same, why = _tables_equal(a, b)
            compared += 1
            if not same:
                differ += 1
                first_difference = first_difference or f"{sid}: {why}"
    return {
        "part": "resume",
        "slides": len(paths),
        "killed_worker": bool(killed),
        "killed_after_slides_done": killed.get("after_slides_done"),
        "status": status,
        "finished": status.get("done", 0) == len(paths),
        "wall_seconds": round(wall, 1),
        "load_before": load_before,
        "load_after": _load(),
        "compared_with_uninterrupted": compared,
        "differing": differ,
        "first_difference": first_difference,
        "equal_to_uninterrupted": reference is not None and differ == 0 and compared == len(paths),
        "rerun_status": again["status"].value_counts().to_dict(),
        "rerun_skips_all": set(again["status"]) == {"skipped"},
    }


# ---------------------------------------------------------------------- child processes
_TRAINER_CHILD = r"""
import json, sys, time, resource
import torch
torch.set_num_threads(1)
import pandas as pd
from workbench.io import Cohort
from workbench.tl import SlideTrainer

spec = json.loads(sys.argv[1])
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
if not spec["on_disk"]:  # the cache as it was: every tensor in this process's memory
    from workbench.tl import _engine
    _engine.ON_DISK_BYTES = 1 << 62
def rss_anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024.0
table = pd.DataFrame(spec["clinical"])
cohort = Cohort({k: v for k, v in spec["paths"].items()}, clinical=table)
before = hwm()
t0, c0 = time.perf_counter(), time.process_time()
tr = SlideTrainer(kind="sew", label="grade", epochs=1, seed=0, progress=False,
                  settings=spec["settings"], model_kwargs=spec["model_kwargs"])
tr.fit(cohort)
maps = []
for line in open("/proc/self/maps"):
    if "workbench-cache-" in line:
        maps.append([int(v, 16) for v in line.split()[0].split("-")])
cache = mapped = 0
for s in tr.samples_:
    for name in ("features", "edge_index", "node_labels", "crops", "crop_nodes", "crop_masks",
                 "tiles", "crop_embeddings", "tile_embeddings", "node_xy"):
        v = getattr(s, name)
        if v is not None:
            size = v.numel() * v.element_size()
            cache += size
            if any(lo <= v.data_ptr() < hi for lo, hi in maps):
                mapped += size
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                  "peak_rss_mb": hwm(), "rss_anon_after_fit_mb": rss_anon(),
                  "rss_before_fit_mb": before, "cache_mb": cache / 2**20,
                  "cache_mapped_mb": mapped / 2**20, "cache_in_memory_mb": (cache - mapped) / 2**20,
                  "cached_slides": len(tr.samples_)}))
"""

_DISCOVER_CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from workbench import datasets, tl
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
n, n_regions = int(sys.argv[1]), int(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
adatas, clinical = datasets.simulate_region_cohort(n, seed=0, n_regions=n_regions)
sim_s, sim_c, sim_mb = time.perf_counter() - t0, time.process_time() - c0, hwm()
t0, c0 = time.perf_counter(), time.process_time()
res = tl.discover(adatas, clinical)
table = res[0] if isinstance(res, tuple) else res
print(json.dumps({"simulate_seconds": sim_s, "simulate_cpu_seconds": sim_c,
                  "rss_after_simulate_mb": sim_mb,
                  "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                  "peak_rss_mb": hwm(), "regions": int(sum(a.n_obs for a in adatas)),
                  "result": type(res).__name__,
                  "rows": int(getattr(table, "n_obs", getattr(table, "shape", [0])[0]))}))
"""


def _child(code: str, argv: list[str], timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    try:
        res = subprocess.run(
            [sys.executable, "-c", code, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=str(ROOT),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:g} s"}
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_trainer(paths: dict, plan: list[dict], sizes: list[int], args) -> dict:
    """SlideTrainer's peak memory and cache bytes against the number of training slides."""
    rows = []
    table = clinical_table(plan)
    for n in sizes:
        for on_disk in (True, False):
            ids = [p["slide_id"] for p in plan[:n]]
            spec = {
                "paths": {k: paths[k] for k in ids},
                "clinical": table[table["slide"].isin(ids)].to_dict(orient="list"),
                "settings": TRAINER_SETTINGS,
                "model_kwargs": MODEL_KWARGS,
                "on_disk": on_disk,
            }
            load_before = _load()
            out = _child(_TRAINER_CHILD, [json.dumps(spec)], args.child_timeout)
            out.update(
                {"slides": n, "on_disk": on_disk, "load_before": load_before, "load_after": _load()}
            )
            rows.append({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()})
    fit = {}
    for on_disk in (True, False):
        ok = [r for r in rows if "error" not in r and r["on_disk"] == on_disk]
        if len(ok) < 2:
            continue
        n = np.array([r["slides"] for r in ok], float)
        tag = "on_disk" if on_disk else "in_memory"
        for key in ("peak_rss_mb", "rss_anon_after_fit_mb", "cache_mb", "cache_in_memory_mb"):
            slope = float(np.polyfit(n, [r[key] for r in ok], 1)[0])
            fit[f"{tag}_{key}_slope_per_slide"] = round(slope, 4)
    return {
        "part": "trainer",
        "settings": TRAINER_SETTINGS,
        "runs": rows,
        **fit,
        "note": "on_disk: the cache as tl._engine.prepare_cohort now keeps it (tensors of 64 KiB "
        "or more memory-mapped); in_memory: as before (all in the process's memory)",
    }


def run_discover(n: int, n_regions: int, args) -> dict:
    load_before = _load()
    out = _child(_DISCOVER_CHILD, [str(n), str(n_regions)], args.child_timeout)
    out = {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}
    return {
        "part": "discover",
        "patients": n,
        "regions_per_slide": n_regions,
        **out,
        "load_before": load_before,
        "load_after": _load(),
    }


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=int, default=500, help="slides in the cohort")
    ap.add_argument("--big", type=int, default=2, help="slides of --big-size among them")
    ap.add_argument("--big-size", type=_size, default=(102_400, 4096), help="WIDTHxHEIGHT")
    ap.add_argument(
        "--distinct", type=int, default=150, help="small slides drawn; the rest are copies"
    )
    ap.add_argument("--root", type=Path, default=ROOT / "runs" / "cohort_scale")
    ap.add_argument("--out", default=str(RESULTS), help="JSON lines file ('' for none)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {PARTS}")
    ap.add_argument("--modes", default="in-process,1,2", help="in-process and worker counts")
    ap.add_argument("--trainer-sizes", default="25,50,100,200")
    ap.add_argument("--discover-patients", type=int, default=1000)
    ap.add_argument("--discover-regions", type=int, default=500)
    ap.add_argument("--interval", type=float, default=0.5, help="memory sampling period (s)")
    ap.add_argument("--child-timeout", type=float, default=3600.0)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or args.big > args.slides or args.slides < 1:
        ap.error(f"unknown parts {unknown}" if unknown else "--big must be <= --slides >= 1")
    out = Path(args.out) if args.out else None

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)

    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    try:
        code = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        code = ""
    common = {
        "benchmark": "cohort_scale",
        "code": code or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    plan = slide_plan(args.slides, args.big, args.big_size, args.distinct)
    paths = slide_paths(root, plan)
    need_slides = any(p in parts for p in ("slides", "extract", "resume", "trainer"))
    if need_slides:
        record = write_slides(root, plan, progress=args.progress)
        if "slides" in parts:
            _emit(common | record, out)
    model = train_model(root) if any(p in parts for p in ("extract", "resume")) else None
    reference, speeds = None, {}
    if "extract" in parts:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            if mode != "in-process" and not mode.isdigit():
                ap.error(f"--modes takes 'in-process' or worker counts, got {mode!r}")
            folder = root / f"out_{mode}"
            record = run_extract(paths, model, folder, mode, args)
            _emit(common | record, out)
            speeds[mode] = record
            if reference is None and record["status"].get("done") == len(paths):
                reference = folder
    if "1" in speeds and "2" in speeds:
        one, two = speeds["1"], speeds["2"]
        _emit(
            common
            | {
                "part": "scaling",
                "throughput_ratio_2_vs_1": round(one["wall_seconds"] / two["wall_seconds"], 3),
                "cpu_seconds_1": one["cpu_seconds"],
                "cpu_seconds_2": two["cpu_seconds"],
                "load_mean_during_1": one["load_mean_during"],
                "load_mean_during_2": two["load_mean_during"],
                "target_ratio": TARGET_RATIO,
                "note": "2 workers need 2 idle cores; on a shared machine the ratio is "
                "distorted by the other jobs (see the load averages)",
            },
            out,
        )
    if "resume" in parts:
        for name in ("out_in-process", "out_1", "out_2"):  # an earlier complete run
            done = root / name
            if reference is None and all((done / f"{sid}.h5ad").exists() for sid in paths):
                reference = done
        _emit(common | run_resume(paths, model, root / "out_resume", reference, args), out)
    if "trainer" in parts:
        sizes = [min(int(s), len(plan)) for s in args.trainer_sizes.split(",") if s.strip()]
        _emit(common | run_trainer(paths, plan, sorted(set(sizes)), args), out)
    if "discover" in parts:
        _emit(common | run_discover(args.discover_patients, args.discover_regions, args), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
