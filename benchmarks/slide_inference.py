"""Self-calibrated model (SEW) against its baselines, on tasks that tell them apart; JSON lines.

Models (one tile encoder for all, ``--encoder``: ``builtin`` = the compact ``DetailBranch``
trained with each model, or ``texture`` = the frozen ``models.TextureEncoder`` of stain and
local-binary-pattern measures):

* ``sew``                 the self-calibrated model (thumbnail graph, top-K focus crops)
* ``sew_no_consistency``  the same without the feature-consistency and back-calibration losses
* ``global_only``         the thumbnail graph branch alone
* ``tile_abmil``          gated attention MIL over every tissue tile at the detail magnification

Tasks (train and test slides never overlap):

* ``default``  synthetic cohort, label grade 3 vs 1-2, grade visible on the thumbnail too
* ``detail``   synthetic cohort with ``grade_cue="detail"``: lesions drawn independently of
               grade, grade only inside the nuclei (needs <= 1 µm/px)
* ``mosaic``   real-tissue mosaic slides (``make_mosaic_cohort``), tumour-positive vs
               negative, train and test slides from different source images

Sections:

``accuracy`` (per task)
    Every model trained with several seeds on the same cached training slides; on the test
    slides AUC, balanced accuracy and accuracy per seed, then mean ± SD over seeds and a
    bootstrap 95 % interval (test slides resampled, statistic = mean over seeds); focus hit
    rate (share of the top-K focus regions centred in a true lesion, on slides that have one;
    chance = lesion share of the tissue) and lesion Dice inside the focus crops, for the two
    SEW variants; training seconds and inference seconds per slide (region graph included).
``speed``
    Seconds per slide and peak resident memory of SEW and TileABMIL on a 40,960² synthetic
    slide and on a slide over 100,000 px wide (both written tile by tile), each run in a
    child process of its own (one torch thread).
``speed`` with ``--encoder uni``
    The same comparison with a tile encoder of UNI's architecture and size (the plain-torch
    ``models.VisionTransformer`` ViT-L/16, 224 px at 0.5 µm/px, random weights written once to a
    local weights file and loaded by ``models.load_encoder("uni", weights=...)``: the cost of
    a ViT does not depend on its weights). On the 40,960² synthetic slide and on a real slide
    (``CMU-1-Small-Region.svs`` from the shared data), with 1 and 2 torch threads
    (``--speed-threads``): SEW's whole ``tl.extract`` (region graph + 4 focus crops through the
    encoder) against tile ABMIL. Tile ABMIL over every tissue tile would take hours on a CPU,
    so its tissue grid is computed in full (that gives the tile count) and a fixed, seeded
    sample of ``--abmil-sample`` tiles (64) is read and encoded; the full run is extrapolated
    from the sample and printed as a separate field (``abmil_s_extrapolated``,
    ``"extrapolated": true``) next to the measured part. Wall seconds, CPU seconds of the child
    (``time.process_time``, all its threads: fairer on a shared machine), peak resident memory
    and the load average before and after each child are recorded.

Results are appended to ``<workdir>/results/*.jsonl`` and printed; a (task, model, seed)
already there is not run again, so sections and tasks can be run separately and resumed.

    python benchmarks/slide_inference.py --section accuracy --task detail
    python benchmarks/slide_inference.py --section speed
    python benchmarks/slide_inference.py --quick              # small smoke run of everything
    python benchmarks/slide_inference.py --section accuracy --task detail --encoder texture
    python benchmarks/slide_inference.py --figure             # table, plot and report in docs/
    python benchmarks/slide_inference.py --section speed --encoder uni   # ViT-L/16, ~30 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("sew", "sew_no_consistency", "global_only", "tile_abmil")
#: Tile encoders shared by SEW's detail branch and the tile baseline: the compact network
#: trained with each model, the frozen texture measures (``models.TextureEncoder``), or a
#: foundation-size ViT-L/16 of UNI's architecture (random weights; ``--section speed`` only).
ENCODERS = ("builtin", "texture", "uni")
#: Encoders timed with random weights (no accuracy section).
FOUNDATION_ENCODERS = ("uni",)
TASKS = ("default", "detail", "mosaic")
_KIND = {"sew": "sew", "sew_no_consistency": "sew", "global_only": "global", "tile_abmil": "abmil"}
NO_GPU = {
    "available": False,
    "note": "no GPU was lent to this session: every figure is CPU-only (1 torch thread)",
}


def emit(record: dict, out: Path | None = None) -> None:
    line = json.dumps(record, default=_json_default)
    print(line, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(line + "\n")


def _json_default(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(type(v))


def _rss_mb() -> float:
    """Peak resident memory of this process since it started (MB).

    ``VmHWM`` from ``/proc/self/status``: unlike ``ru_maxrss`` it starts afresh at ``exec``,
    so a child started from a big parent does not report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ----------------------------------------------------------------------------- data
def task_data(task: str, args) -> dict:
    """Train and test slides of a task: cohorts, ids, labels (written once, then reused)."""
    from workbench.datasets import make_cohort, make_mosaic_cohort

    base = Path(args.workdir) / task
    if task == "mosaic":
        cohort = make_mosaic_cohort(
            base / "cohort",
            n_train=args.n_train,
            n_test=args.n_test,
            size=tuple(args.mosaic_size),
            seed=args.data_seed,
            data_dir=args.data_dir,
            progress=False,
        )
        t = cohort.truth
        ids = {s: list(t.loc[t["split"] == s, "slide_id"]) for s in ("train", "test")}
        y = dict(zip(t["slide_id"], t["tumour"].astype(int), strict=True))
        return {
            "train": (cohort, ids["train"], np.array([y[s] for s in ids["train"]])),
            "test": (cohort, ids["test"], np.array([y[s] for s in ids["test"]])),
            "label": "tumour-positive (1) vs negative (0)",
            "lesion_slides": [s for s in ids["test"] if y[s] == 1],
            "lesion_fraction": dict(zip(t["slide_id"], t["lesion_fraction"], strict=True)),
        }
    cue = "detail" if task == "detail" else "both"
    offset = 100 if task == "detail" else 0
    out = {"label": "high grade (grade 3) vs grades 1-2"}
    for split, seed, n in (("train", 1000, args.n_train), ("test", 2000, args.n_test)):
        cohort = make_cohort(
            base / split,
            n_patients=n,
            size=args.size,
            seed=seed + offset + args.data_seed,
            grade_cue=cue,
            progress=False,
        )
        ids = list(cohort.truth["slide_id"])
        out[split] = (cohort, ids, (cohort.truth["grade"].to_numpy() >= 3).astype(int))
        if split == "test":
            out["lesion_slides"] = ids  # every synthetic slide has a lesion
            out["lesion_fraction"] = dict(
                zip(cohort.truth["slide_id"], cohort.truth["lesion_fraction"], strict=True)
            )
    return out


def _sample_to_dict(s) -> dict:
    return {f.name: getattr(s, f.name) for f in fields(s)}


def train_samples(task: str, data: dict, settings: dict, args) -> list:
    """The training slides read once (graph, candidate crops and tiles), cached on disk."""
    import torch

    from workbench.models import SlideSample
    from workbench.tl._engine import prepare_cohort

    cache = Path(args.workdir) / task / f"train_samples_{args.n_train}.pt"
    if cache.exists():
        rows = torch.load(cache, weights_only=True)
        return [SlideSample(**r) for r in rows]
    cohort, ids, y = data["train"]
    samples = prepare_cohort(
        cohort,
        dict(zip(ids, y.tolist(), strict=True)),
        slide_ids=ids,
        settings=settings,
        use_annotations=True,
        tiles=True,
        n_candidates=8,
        max_tiles=args.max_tiles,
        seed=0,
        progress=False,
    )
    tmp = cache.with_suffix(".tmp")
    torch.save([_sample_to_dict(s) for s in samples], tmp)
    os.replace(tmp, cache)
    return samples


def test_graphs(data: dict, settings: dict) -> dict:
    """Region graph of every test slide, with the seconds it took (part of inference)."""
    from workbench.tl._engine import open_slide, region_graph_for

    cohort, ids, _ = data["test"]
    out = {}
    for sid in ids:
        t = time.perf_counter()
        with open_slide(cohort.slide_path(sid), settings) as slide:
            graph = region_graph_for(slide, settings)
        out[sid] = (graph, time.perf_counter() - t)
    return out


# ----------------------------------------------------------------------------- models
def fit_model(name: str, samples: list, settings: dict, seed: int, epochs: int, encoder=None):
    from workbench.tl import SlideTrainer

    t = time.perf_counter()
    trainer = SlideTrainer(
        kind=_KIND[name],
        encoder=None if name == "global_only" else encoder,
        epochs=epochs,
        seed=seed,
        consistency=name != "sew_no_consistency",
        settings=dict(settings),
        progress=False,
    ).fit(samples=samples)
    return trainer, time.perf_counter() - t


def _dice(truth: np.ndarray, pred: np.ndarray) -> float:
    denom = truth.sum() + pred.sum()
    return 1.0 if denom == 0 else float(2.0 * (truth & pred).sum() / denom)


def evaluate(name: str, model, data: dict, graphs: dict) -> dict:
    """Probabilities, per-slide seconds and (for SEW) focus hits and Dice on the test slides."""
    import torch

    from workbench.tl import extract, focus_in_mask, predict_tiles
    from workbench.tl._engine import edge_index_of, mask_crops

    cohort, ids, _ = data["test"]
    probs, seconds, hits, dices = [], [], {}, []
    lesion = set(data["lesion_slides"])
    for sid in ids:
        graph, t_graph = graphs[sid]
        path = cohort.slide_path(sid)
        if name in ("sew", "sew_no_consistency"):
            t = time.perf_counter()
            ad = extract(path, model, graph=graph, slide_id=sid)
            seconds.append(time.perf_counter() - t + t_graph)
            probs.append(float(ad.uns["explain"]["probabilities"][1]))
            if sid in lesion:
                mask, ds = cohort.lesion_mask(sid)
                hits[sid] = focus_in_mask(ad, mask, ds).astype(int).tolist()
                focus = ad.uns["explain"]["focus"]
                size = int(focus["crop_size"])
                truth = mask_crops(mask, float(ds), np.asarray(focus["boxes_xywh"]), size)
                for k, lmap in enumerate(focus["lesion_maps"]):
                    dices.append(_dice(truth[k, 0].astype(bool), np.asarray(lmap) >= 0.5))
        elif name == "global_only":
            t = time.perf_counter()
            with torch.no_grad():
                x = torch.from_numpy(np.asarray(graph.X, dtype=np.float32))
                out = model(x, edge_index_of(graph))
                p = torch.softmax(out["logits"], -1)[1]
            seconds.append(time.perf_counter() - t + t_graph)
            probs.append(float(p))
        else:
            t = time.perf_counter()
            res = predict_tiles(path, model, batch_size=64)
            seconds.append(time.perf_counter() - t)
            probs.append(float(res["probabilities"][1]))
    out = {"probabilities": probs, "seconds": seconds}
    if hits:
        flat = [h for v in hits.values() for h in v]
        out["focus_hit_rate"] = float(np.mean(flat))
        out["focus_hits"] = hits
        out["focus_lesion_dice"] = float(np.mean(dices))
    return out


def _metrics(y: np.ndarray, p: np.ndarray) -> dict:
    from workbench.tl import classification_metrics

    return classification_metrics(y, np.column_stack([1 - p, p]))


def bootstrap(y: np.ndarray, P: np.ndarray, *, key: str, n_boot: int, seed: int = 0):
    """95 % interval of the mean over seeds of a metric, resampling test slides."""
    rng = np.random.default_rng(seed)
    n = len(y)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        if len(set(y[idx].tolist())) < 2:
            continue
        values.append(np.mean([_metrics(y[idx], p[idx])[key] for p in P]))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def bootstrap_hits(H: list[dict], *, n_boot: int, seed: int = 0):
    """95 % interval of the mean focus hit rate, resampling slides (hits per slide per seed)."""
    rng = np.random.default_rng(seed)
    slides = sorted(H[0])
    arr = np.array([[np.mean(h[s]) for s in slides] for h in H])  # seeds x slides
    vals = [arr[:, rng.integers(0, len(slides), len(slides))].mean() for _ in range(n_boot)]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def _done(path: Path) -> dict:
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("section") == "accuracy":
                rows[(r["model"], r["seed"])] = r
    return rows


def run_accuracy(task: str, args) -> None:
    import torch

    from workbench.models import save_checkpoint
    from workbench.tl._engine import suggest_settings

    out = results_path(args.workdir, task, args.encoder)
    done = _done(out)
    todo = [(m, s) for s in args.seeds for m in args.models if (m, s) not in done]
    t0 = time.perf_counter()
    data = task_data(task, args)
    cohort, train_ids, y_train = data["train"]
    _, test_ids, y_test = data["test"]
    settings = suggest_settings(cohort.slide_path(train_ids[0]))
    emit({"section": "data", "task": task, "label": data["label"], "n_train": len(train_ids),
          "n_train_positive": int(y_train.sum()), "n_test": len(test_ids),
          "n_test_positive": int(y_test.sum()), "settings": settings,
          "seconds": time.perf_counter() - t0, "todo": len(todo)})  # fmt: skip
    if todo:
        t = time.perf_counter()
        samples = train_samples(task, data, settings, args)
        t_prep = time.perf_counter() - t
        graphs = test_graphs(data, settings)
        for model_name, seed in todo:
            torch.manual_seed(seed)
            trainer, t_train = fit_model(
                model_name, samples, settings, seed, args.epochs, encoder=args.encoder
            )
            res = evaluate(model_name, trainer.model_, data, graphs)
            p = np.asarray(res["probabilities"])
            row = {
                "section": "accuracy",
                "task": task,
                "encoder": args.encoder,
                "model": model_name,
                "seed": seed,
                **_metrics(y_test, p),
                "train_seconds": t_train,
                "prepare_seconds_all_models": t_prep,
                "infer_seconds_per_slide_median": statistics.median(res["seconds"]),
                "infer_seconds_per_slide_mean": float(np.mean(res["seconds"])),
                "epochs": args.epochs,
                "n_train": len(train_ids),
                "n_test": len(test_ids),
                "probabilities": [round(v, 4) for v in res["probabilities"]],
                "labels": y_test.tolist(),
                "test_ids": test_ids,
            }
            for k in ("focus_hit_rate", "focus_lesion_dice", "focus_hits"):
                if k in res:
                    row[k] = res[k]
            emit(row, out)
            if seed == args.seeds[0]:
                folder = task if args.encoder == "builtin" else f"{task}_{args.encoder}"
                save_checkpoint(trainer.model_, Path(args.workdir) / "models" / folder / model_name)
        done = _done(out)
    summarise(task, done, y_test, data, args, out)


def summarise(task: str, done: dict, y: np.ndarray, data: dict, args, out: Path) -> None:
    summary = {}
    for m in args.models:
        rows = [done[(m, s)] for s in args.seeds if (m, s) in done]
        if not rows:
            continue
        P = np.array([r["probabilities"] for r in rows])
        aucs = [r["auc"] for r in rows]
        baccs = [r["balanced_accuracy"] for r in rows]
        s = {
            "section": "summary",
            "task": task,
            "encoder": args.encoder,
            "model": m,
            "seeds": [r["seed"] for r in rows],
            "auc_mean": float(np.mean(aucs)),
            "auc_sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
            "auc_ci95": bootstrap(y, P, key="auc", n_boot=args.n_boot),
            "balanced_accuracy_mean": float(np.mean(baccs)),
            "balanced_accuracy_sd": float(np.std(baccs, ddof=1)) if len(baccs) > 1 else 0.0,
            "balanced_accuracy_ci95": bootstrap(y, P, key="balanced_accuracy", n_boot=args.n_boot),
            "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rows])),
            "infer_seconds_per_slide_median": float(
                np.median([r["infer_seconds_per_slide_median"] for r in rows])
            ),
        }
        if "focus_hit_rate" in rows[0]:
            hr = [r["focus_hit_rate"] for r in rows]
            s["focus_hit_rate_mean"] = float(np.mean(hr))
            s["focus_hit_rate_sd"] = float(np.std(hr, ddof=1)) if len(hr) > 1 else 0.0
            s["focus_hit_rate_ci95"] = bootstrap_hits(
                [r["focus_hits"] for r in rows], n_boot=args.n_boot
            )
            s["focus_hit_rate_chance"] = float(
                np.mean([data["lesion_fraction"][sid] for sid in data["lesion_slides"]])
            )
            s["focus_lesion_dice_mean"] = float(np.mean([r["focus_lesion_dice"] for r in rows]))
        summary[m] = s
        emit(s, out)
    if not {"sew", "global_only", "tile_abmil"} <= set(summary):
        return
    sew, glob, abmil = summary["sew"], summary["global_only"], summary["tile_abmil"]
    targets = {
        "section": "targets",
        "task": task,
        "encoder": args.encoder,
        "sew_auc_minus_abmil_auc": sew["auc_mean"] - abmil["auc_mean"],
        "sew_auc_minus_global_auc": sew["auc_mean"] - glob["auc_mean"],
        "infer_seconds_ratio_abmil_over_sew_on_test_slides": abmil["infer_seconds_per_slide_median"]
        / sew["infer_seconds_per_slide_median"],
    }
    if "sew_no_consistency" in summary and "focus_hit_rate_mean" in sew:
        targets["focus_hit_rate_drop_without_consistency"] = (
            sew["focus_hit_rate_mean"] - summary["sew_no_consistency"]["focus_hit_rate_mean"]
        )
    if task == "detail":
        targets["target_sew_auc_ge_abmil_minus_0.02"] = targets["sew_auc_minus_abmil_auc"] >= -0.02
        targets["target_sew_auc_ge_global_plus_0.10"] = targets["sew_auc_minus_global_auc"] >= 0.10
    if task == "mosaic":
        targets["target_focus_hit_rate_ge_0.8"] = sew.get("focus_hit_rate_mean", 0) >= 0.8
        targets["focus_hit_rate_chance"] = sew.get("focus_hit_rate_chance")
        targets["target_sew_auc_ge_0.9"] = sew["auc_mean"] >= 0.9
    emit(targets, out)


# ----------------------------------------------------------------------------- speed
_CHILD_WRITE = """
import json, sys, time
from workbench.datasets import make_slide
w, h = (int(v) for v in sys.argv[2].split("x"))
t = time.perf_counter()
truth = make_slide(sys.argv[1], size=(w, h), grade=3, infiltration=0.5, seed=77)
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
print(json.dumps({"seconds": time.perf_counter() - t, "levels": truth.level_count,
                  "peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


def _child(args_list: list[str], threads: int = 1) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    res = subprocess.run(
        [sys.executable, *args_list], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_child(kind: str, slide: str, model: str) -> None:
    """One timed inference in this (child) process; prints seconds and own peak RSS."""
    import torch

    torch.set_num_threads(1)
    from workbench.models import load_checkpoint
    from workbench.tl import extract, predict_tiles

    m = load_checkpoint(model)
    before = _rss_mb()
    t = time.perf_counter()
    if kind == "sew":
        ad = extract(slide, m)
        extra = {"regions": int(ad.n_obs), "focus": len(ad.uns["explain"]["focus"]["obs_index"])}
    else:
        res = predict_tiles(slide, m, batch_size=64)
        extra = {"tiles": int(res["n_tiles"])}
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": _rss_mb(),
                      "rss_before_mb": before, **extra}))  # fmt: skip


def _speed_models(args) -> dict:
    """Checkpoints of SEW and TileABMIL: the accuracy run's, or fresh (untrained) ones.

    Inference cost does not depend on the weights (K crops for SEW, every tissue tile for
    the tile model), so untrained models time the same; the JSON says which were used.
    """
    from workbench.models import save_checkpoint
    from workbench.tl import SlideTrainer

    out = {}
    suffix = "" if args.encoder == "builtin" else f"_{args.encoder}"
    for name in ("sew", "tile_abmil"):
        for task in ("detail", "default", "mosaic"):
            d = Path(args.workdir) / "models" / f"{task}{suffix}" / name
            if (d / "config.json").exists():
                out[name] = (str(d), f"trained on the {task} task (the last seed run)")
                break
        else:
            from workbench.datasets import make_cohort
            from workbench.tl._engine import prepare_cohort, suggest_settings

            c = make_cohort(Path(args.workdir) / "speed_fit", n_patients=2, size="tiny",
                            progress=False)  # fmt: skip
            settings = suggest_settings(c.slide_path(c.slide_ids[0]))
            samples = prepare_cohort(c, [0, 1], settings=settings, tiles=True, progress=False)
            tr = SlideTrainer(kind=_KIND[name], epochs=1, settings=settings, progress=False,
                              encoder=None if args.encoder == "builtin" else args.encoder)  # fmt: skip
            tr.fit(samples=samples)
            d = Path(args.workdir) / "models" / f"speed{suffix}" / name
            save_checkpoint(tr.model_, d)
            out[name] = (str(d), "one epoch on two slides (timing only)")
    return out


def run_speed(args) -> None:
    out = Path(args.workdir) / "results" / "speed.jsonl"
    models = _speed_models(args)
    slides = []
    for size in args.speed_sizes:
        path = Path(args.workdir) / f"speed_{size}.tif"
        write = None
        if not path.exists():
            write = _child(["-c", _CHILD_WRITE, str(path), size])
        slides.append((size, path, write))
    for size, path, write in slides:
        from workbench.io import Slide

        with Slide(path) as s:
            dims = list(s.dimensions)
        row = {"section": "speed", "slide": size, "encoder": args.encoder, "dimensions": dims,
               "write": write,
               "gpu": NO_GPU, "threads": 1, "models": {k: v[1] for k, v in models.items()}}  # fmt: skip
        for _rep in range(args.speed_repeats):
            for name in ("sew", "tile_abmil"):
                kind = "sew" if name == "sew" else "abmil"
                res = _child([__file__, "--child", kind, "--slide", str(path), "--model",
                              models[name][0]])  # fmt: skip
                row.setdefault(name, []).append(res)
        for name in ("sew", "tile_abmil"):
            ok = [r for r in row[name] if "seconds" in r]
            row[f"{name}_seconds_median"] = (
                statistics.median(r["seconds"] for r in ok) if ok else None
            )
            row[f"{name}_peak_rss_mb_max"] = max((r["peak_rss_mb"] for r in ok), default=None)
        if row["sew_seconds_median"] and row["tile_abmil_seconds_median"]:
            row["speedup_abmil_over_sew"] = (
                row["tile_abmil_seconds_median"] / row["sew_seconds_median"]
            )
            row["target_speedup_ge_20"] = row["speedup_abmil_over_sew"] >= 20
        if dims[0] >= 100_000 and row["sew_peak_rss_mb_max"] is not None:
            row["target_sew_peak_rss_le_2gb"] = row["sew_peak_rss_mb_max"] <= 2048
        emit(row, out)


# ----------------------------------------------------------------------------- speed, ViT-L
_VIT_WEIGHTS_SEED = 0


def _load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def run_child_vit(kind: str, slide: str, model: str, threads: int, sample: int) -> None:
    """One timed SEW inference, or tile ABMIL on a fixed sample of tiles, in this (child)
    process with ``threads`` torch threads; prints wall and CPU seconds and own peak RSS."""
    import torch

    torch.set_num_threads(threads)
    from workbench.models import load_checkpoint
    from workbench.tl import extract
    from workbench.tl._engine import (
        open_slide,
        read_tiles,
        settings_of,
        tissue_grid,
        to_tensor_images,
    )

    load0 = _load_avg()
    m = load_checkpoint(model)
    images = [0]

    def count(_module, inputs):
        images[0] += int(inputs[0].shape[0])

    m.tile_encoder.register_forward_pre_hook(count)
    with torch.no_grad():  # the weights resident before timing (loaded once per cohort)
        sum(float(p.sum()) for p in m.parameters())
    before = _rss_mb()
    t, c = time.perf_counter(), time.process_time()
    if kind == "sew_vit":
        ad = extract(slide, m)
        out = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
               "regions": int(ad.n_obs), "focus": len(ad.uns["explain"]["focus"]["obs_index"])}  # fmt: skip
    else:
        pre = settings_of(m)
        size, dmpp = int(pre["crop_size"]), float(pre["detail_mpp"])
        with open_slide(slide, pre) as s:
            xy = tissue_grid(s, pre)
            grid_s, grid_cpu = time.perf_counter() - t, time.process_time() - c
            rng = np.random.default_rng(0)
            pick = np.sort(rng.permutation(len(xy))[: min(sample, len(xy))])
            t1, c1 = time.perf_counter(), time.process_time()
            embs = []
            with torch.no_grad():
                for start in range(0, len(pick), 16):
                    batch = read_tiles(s, xy[pick[start : start + 16]], mpp=dmpp, size=size)
                    embs.append(m.embed_tiles(to_tensor_images(batch)))
                m.pool_embeddings(torch.cat(embs))
            tiles_s, tiles_cpu = time.perf_counter() - t1, time.process_time() - c1
        out = {"grid_seconds": grid_s, "grid_cpu_seconds": grid_cpu, "tissue_tiles": len(xy),
               "sample_tiles": int(len(pick)), "sample_seconds": tiles_s,
               "sample_cpu_seconds": tiles_cpu,
               "seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c}  # fmt: skip
    out.update({"encoder_images": images[0], "threads": threads, "peak_rss_mb": _rss_mb(),
                "rss_before_mb": before, "load_avg_1m_before": load0,
                "load_avg_1m_after": _load_avg()})  # fmt: skip
    print(json.dumps(out))


def _vit_models(args) -> dict:
    """Untrained SEW and TileABMIL checkpoints with the ``uni`` architecture's encoder.

    The ViT-L/16 gets seeded random weights, written once to a local ``model.safetensors`` and
    loaded through ``models.load_encoder`` exactly as real UNI weights would be; the heads
    are untrained (inference cost does not depend on weights).
    """
    import torch
    from safetensors.torch import save_file

    from workbench.models import (
        ENCODER_ARCHITECTURES,
        SelfCalibratedModel,
        TileABMIL,
        VisionTransformer,
        load_encoder,
        save_checkpoint,
    )
    from workbench.pp import feature_names

    arch = ENCODER_ARCHITECTURES[args.encoder]
    weights = Path(args.workdir) / "encoders" / f"{args.encoder}_random" / "model.safetensors"
    if not weights.exists():
        torch.manual_seed(_VIT_WEIGHTS_SEED)
        vit = VisionTransformer(**arch.vit)
        weights.parent.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp))
        os.replace(tmp, weights)
        del vit
    enc = load_encoder(args.encoder, weights=weights)
    pre = {"thumbnail_mpp": 8.0, "detail_mpp": float(enc.mpp), "crop_size": int(enc.input_size),
           "feature_names": list(feature_names())}  # fmt: skip
    kw = {"preprocessing": pre, "n_classes": 2, "encoder": enc.spec(), "label": "timing only"}
    out = {}
    for name, model in (
        ("sew", SelfCalibratedModel(in_features=len(pre["feature_names"]), **kw)),
        ("tile_abmil", TileABMIL(**kw)),
    ):
        model.attach_encoder(enc)
        d = Path(args.workdir) / "models" / f"speed_{args.encoder}" / name
        save_checkpoint(model, d)
        out[name] = str(d)
    return {"models": out, "weights": str(weights), "architecture": arch.summary,
            "params_m": round(sum(p.numel() for p in enc.parameters()) / 1e6, 1),
            "input_size": int(enc.input_size), "mpp": float(enc.mpp)}  # fmt: skip


def _vit_slides(args) -> list[tuple[str, Path, dict | None]]:
    """``(name, path, write record)``: the synthetic slides of ``--speed-sizes`` and the real one."""
    out = []
    for size in args.speed_sizes:
        path = Path(args.workdir) / f"speed_{size}.tif"
        write = None
        if not path.exists():
            write = _child(["-c", _CHILD_WRITE, str(path), size])
        out.append((size, path, write))
    if args.real_slide and Path(args.real_slide).exists():
        out.append((Path(args.real_slide).name, Path(args.real_slide), None))
    elif args.real_slide:
        emit({"section": "speed_vit", "skipped": str(args.real_slide),
              "reason": "real slide not found (shared data absent)"})  # fmt: skip
    return out


def vit_speed_figures(sew: dict, abmil: dict, dims: list[int], threads: int) -> dict:
    """The per-slide figures of a ViT speed row from the two children's measurements.

    Tile ABMIL's full run is extrapolated from its sample: the tissue grid as measured (it
    covers every tile) plus the sample's seconds per tile times the tissue tiles; when the
    sample covered every tile nothing is extrapolated (``"extrapolated": false``).
    """
    row: dict = {}
    if "seconds" in sew:
        row["sew_s"], row["sew_cpu_s"] = sew["seconds"], sew["cpu_seconds"]
        row["sew_peak_rss_mb"] = sew["peak_rss_mb"]
    if "seconds" in abmil:
        n, k = abmil["tissue_tiles"], abmil["sample_tiles"]
        row["tissue_tiles"] = n
        row["abmil_tiles_measured"] = k
        row["abmil_s_measured"] = abmil["seconds"]
        row["abmil_cpu_s_measured"] = abmil["cpu_seconds"]
        row["abmil_peak_rss_mb_measured"] = abmil["peak_rss_mb"]
        row["abmil_s_extrapolated"] = (
            abmil["grid_seconds"] + abmil["sample_seconds"] * n / k if k else None
        )
        row["abmil_cpu_s_extrapolated"] = (
            abmil["grid_cpu_seconds"] + abmil["sample_cpu_seconds"] * n / k if k else None
        )
        row["extrapolated"] = k < n
        row["extrapolation"] = (
            "abmil_s_extrapolated = grid_seconds (measured, all tiles) + sample_seconds "
            f"x tissue_tiles / sample_tiles ({n} / {k}); reading + encoding scale with "
            "the tile count, the attention pooling is negligible"
        )
    if row.get("sew_s") and row.get("abmil_s_extrapolated"):
        row["speedup_abmil_over_sew"] = row["abmil_s_extrapolated"] / row["sew_s"]
        row["speedup_abmil_over_sew_cpu"] = row["abmil_cpu_s_extrapolated"] / row["sew_cpu_s"]
        if dims[0] >= 40_960 and threads == 2:
            row["target_sew_le_20s_2_threads"] = row["sew_s"] <= 20
            row["target_sew_cpu_le_40s_2_threads"] = row["sew_cpu_s"] <= 40
        if dims[0] >= 40_960:
            row["target_speedup_ge_100"] = row["speedup_abmil_over_sew"] >= 100
            row["target_speedup_ge_100_cpu"] = row["speedup_abmil_over_sew_cpu"] >= 100
    return row


def run_speed_vit(args) -> None:
    """SEW against tile ABMIL with a ViT-L/16 tile encoder: see the module docstring."""
    from workbench.io import Slide

    out = Path(args.workdir) / "results" / f"speed_{args.encoder}.jsonl"
    info = _vit_models(args)
    models = info.pop("models")
    for name, path, write in _vit_slides(args):
        with Slide(path) as s:
            dims, mpp = list(s.dimensions), s.mpp
        for threads in args.speed_threads:
            row = {"section": "speed_vit", "slide": name, "encoder": args.encoder, **info,
                   "weights_kind": f"random (seed {_VIT_WEIGHTS_SEED}), timing only",
                   "dimensions": dims, "mpp": mpp, "write": write, "threads": threads,
                   "gpu": {**NO_GPU, "note": f"no GPU: CPU only, {threads} torch thread(s)"},
                   "cpus": os.cpu_count()}  # fmt: skip
            sew = _child([__file__, "--child", "sew_vit", "--slide", str(path), "--model",
                          models["sew"], "--threads", str(threads)], threads)  # fmt: skip
            abmil = _child([__file__, "--child", "abmil_sample", "--slide", str(path), "--model",
                            models["tile_abmil"], "--threads", str(threads),
                            "--abmil-sample", str(args.abmil_sample)], threads)  # fmt: skip
            row["sew"], row["abmil_sample"] = sew, abmil
            row.update(vit_speed_figures(sew, abmil, dims, threads))
            emit(row, out)


# ----------------------------------------------------------------------------- figure
def results_path(workdir: str | os.PathLike, task: str, encoder: str = "builtin") -> Path:
    """Where the accuracy lines of a task (and tile encoder) go."""
    name = task if encoder == "builtin" else f"{task}_{encoder}"
    return Path(workdir) / "results" / f"{name}.jsonl"


def _latest(workdir: str | os.PathLike, section: str) -> list[dict]:
    """Every ``section`` line of every (task, encoder) results file, in file order, each
    tagged with its encoder (lines written before the encoder existed are ``builtin``)."""
    rows = []
    for task in TASKS:
        for encoder in ENCODERS:
            path = results_path(workdir, task, encoder)
            if path.exists():
                for line in path.read_text().splitlines():
                    r = json.loads(line)
                    if r.get("section") == section:
                        rows.append({**r, "encoder": r.get("encoder", encoder)})
    return rows


def summary_rows(workdir: str | os.PathLike) -> list[dict]:
    """The latest ``summary`` line of every (task, encoder, model), in task/encoder/model order."""
    last = {(r["task"], r["encoder"], r["model"]): r for r in _latest(workdir, "summary")}
    return [last[(t, e, m)] for t in TASKS for e in ENCODERS for m in MODELS if (t, e, m) in last]


def markdown_table(rows: list[dict]) -> str:
    """A small Markdown table of the summary rows (README / report)."""
    out = [
        "| task | encoder | model | AUC mean ± SD [95% CI] | balanced acc. | focus hit (chance) "
        "| s / slide |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        hit = ""
        if "focus_hit_rate_mean" in r:
            hit = f"{r['focus_hit_rate_mean']:.2f} ({r['focus_hit_rate_chance']:.2f})"
        lo, hi = r["auc_ci95"]
        out.append(
            f"| {r['task']} | {r.get('encoder', 'builtin')} | {r['model']} | {r['auc_mean']:.2f} ± {r['auc_sd']:.2f} "
            f"[{lo:.2f}, {hi:.2f}] | {r['balanced_accuracy_mean']:.2f} | {hit} | "
            f"{r['infer_seconds_per_slide_median']:.2f} |"
        )
    return "\n".join(out)


def plot_auc_vs_seconds(rows: list[dict], ax=None):
    """AUC (mean ± SD over seeds) against inference seconds per slide, every model and task."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {"default": "#1f77b4", "detail": "#d62728", "mosaic": "#2ca02c"}
    markers = {"sew": "o", "sew_no_consistency": "s", "global_only": "^", "tile_abmil": "D"}
    for r in rows:
        ax.errorbar(r["infer_seconds_per_slide_median"], r["auc_mean"], yerr=r["auc_sd"],
                    fmt=markers[r["model"]], color=colours[r["task"]], ms=7, capsize=3,
                    alpha=0.9, mfc="none" if r.get("encoder") == "texture" else None)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("inference seconds per test slide (median, 1 CPU thread)")
    ax.set_ylabel("test AUC (mean ± SD over seeds)")
    ax.set_ylim(0.3, 1.05)
    ax.axhline(0.5, color="0.7", lw=0.8, ls="--")
    handles = [Line2D([], [], color=c, marker="o", ls="", label=t) for t, c in colours.items()]
    handles += [Line2D([], [], color="0.3", marker=m, ls="", label=k) for k, m in markers.items()]
    if any(r.get("encoder") == "texture" for r in rows):
        handles.append(Line2D([], [], color="0.3", marker="o", mfc="none", ls="",
                              label="hollow: texture encoder"))  # fmt: skip
    ax.legend(handles=handles, fontsize=7, ncol=2, loc="lower right")
    ax.set_title("SEW and baselines: accuracy against cost, every task", fontsize=10)
    return ax


def target_rows(workdir: str | os.PathLike) -> list[dict]:
    """The latest ``targets`` line of every (task, encoder)."""
    return list({(r["task"], r["encoder"]): r for r in _latest(workdir, "targets")}.values())


def speed_rows(workdir: str | os.PathLike) -> list[dict]:
    """The latest ``speed`` line of every slide size in ``<workdir>/results/speed.jsonl``."""
    path = Path(workdir) / "results" / "speed.jsonl"
    last: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("section") == "speed":
                last[(r["slide"], r.get("encoder", "builtin"))] = r
    return list(last.values())


def vit_speed_rows(path: str | os.PathLike) -> list[dict]:
    """The latest ``speed_vit`` line of every (slide, threads) in a JSON-lines file."""
    last: dict = {}
    path = Path(path)
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("section") == "speed_vit" and "sew" in r:
                last[(r["slide"], r["threads"])] = r
    return list(last.values())


def vit_speed_markdown(rows: list[dict]) -> str:
    """Markdown section of the ViT-L/16 speed lines (SEW vs tile ABMIL, measured and
    extrapolated apart)."""
    out = [
        "## Speed with a foundation-size encoder (ViT-L/16 of UNI's size, random weights)",
        "",
        "SEW: the whole `tl.extract` (region graph + 4 focus crops through the encoder). Tile "
        "ABMIL: the tissue grid in full, then a fixed sample of tiles read and encoded; the "
        "full run is *extrapolated* from the sample (marked †) unless the sample covered every "
        "tile. Wall seconds depend on the machine's load (1-minute load average given); CPU "
        "seconds of the child process are the fairer figure on a shared machine.",
        "",
        "| slide | threads | load | SEW s (CPU s) | SEW peak RSS GB | tissue tiles | ABMIL measured "
        "s (CPU s), tiles | ABMIL full run s (CPU s) | ABMIL / SEW wall (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "sew_s" not in r or "abmil_s_extrapolated" not in r:
            continue
        mark = " †" if r.get("extrapolated") else ""
        load = r["sew"].get("load_avg_1m_before", "")
        out.append(
            f"| {r['slide']} | {r['threads']} | {load} | {r['sew_s']:.1f} ({r['sew_cpu_s']:.1f}) "
            f"| {r['sew_peak_rss_mb'] / 1024:.2f} | {r['tissue_tiles']:,} "
            f"| {r['abmil_s_measured']:.0f} ({r['abmil_cpu_s_measured']:.0f}), "
            f"{r['abmil_tiles_measured']} | {r['abmil_s_extrapolated']:,.0f} "
            f"({r['abmil_cpu_s_extrapolated']:,.0f}){mark} "
            f"| {r['speedup_abmil_over_sew']:.0f}x ({r['speedup_abmil_over_sew_cpu']:.0f}x) |"
        )
    for r in rows:
        flags = {k: v for k, v in r.items() if k.startswith("target_")}
        if flags:
            met = ", ".join(f"{k[7:]}: {'met' if v else '**missed**'}" for k, v in flags.items())
            out.append(f"\n- **{r['slide']}, {r['threads']} thread(s)**: {met}")
    return "\n".join(out) + "\n"


def report_markdown(
    rows: list[dict],
    targets: list[dict],
    image: str,
    speed: list[dict] | None = None,
    vit: list[dict] | None = None,
) -> str:
    """The benchmark report: the table, the plot and every target line, as Markdown."""
    out = [
        "# Self-calibrated model benchmark (`benchmarks/slide_inference.py`)",
        "",
        "Written by `python benchmarks/slide_inference.py --figure` from the JSON lines in the",
        "benchmark's `results/` folder: mean ± SD over training seeds, bootstrap 95% interval",
        "over test slides, inference seconds per test slide (median, 1 CPU thread).",
        "",
        markdown_table(rows),
        "",
        f"![AUC vs seconds]({image})",
        "",
        "## Targets",
        "",
    ]
    for t in targets:
        flags = {k: v for k, v in t.items() if k.startswith("target_")}
        numbers = {
            k: round(v, 3) if isinstance(v, float) else v
            for k, v in t.items()
            if k not in flags and k not in ("section", "task", "encoder")
        }
        met = ", ".join(f"{k[7:]}: {'met' if v else '**missed**'}" for k, v in flags.items())
        out.append(f"- **{t['task']}** ({t['encoder']} encoder): {met or 'no target'}; {numbers}")
    if speed:
        out += ["", "## Speed (one slide, each model in its own process, 1 CPU thread)", "",
                "| slide | encoder | SEW s | SEW peak RSS GB | tile ABMIL s | tiles "
                "| ABMIL peak RSS GB | ABMIL / SEW |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in speed:
            tiles = r["tile_abmil"][0].get("tiles", "") if r.get("tile_abmil") else ""
            out.append(
                f"| {r['slide']} | {r.get('encoder', 'builtin')} | {r['sew_seconds_median']:.1f} | "
                f"{r['sew_peak_rss_mb_max'] / 1024:.2f} | {r['tile_abmil_seconds_median']:.0f} | "
                f"{tiles} | {r['tile_abmil_peak_rss_mb_max'] / 1024:.2f} | "
                f"{r['speedup_abmil_over_sew']:.1f}x |"
            )
    if vit:
        out += ["", vit_speed_markdown(vit).rstrip("\n")]
    return "\n".join(out) + "\n"


def figure(args) -> None:
    """Print the Markdown table, write ``docs/images/bench_auc_vs_seconds.png`` and the
    report ``docs/benchmark_slide_inference.md`` (table, plot, targets)."""
    import matplotlib

    matplotlib.use("Agg")  # a script, not a notebook
    rows = summary_rows(args.workdir)
    if not rows:
        print("no summary rows yet: run --section accuracy first")
        return
    print(markdown_table(rows))
    ax = plot_auc_vs_seconds(rows)
    ax.figure.tight_layout()
    target = ROOT / "docs" / "images" / "bench_auc_vs_seconds.png"
    ax.figure.savefig(target, dpi=130)
    print(f"wrote {target}")
    report = ROOT / "docs" / "benchmark_slide_inference.md"
    tmp = report.with_suffix(".md.tmp")
    vit = vit_speed_rows(Path(args.workdir) / "results" / "speed_uni.jsonl")
    vit = vit or vit_speed_rows(ROOT / "benchmarks" / "results" / "slide_inference_vit.jsonl")
    text = report_markdown(
        rows, target_rows(args.workdir), "images/" + target.name, speed_rows(args.workdir), vit
    )
    tmp.write_text(text)
    os.replace(tmp, report)
    print(f"wrote {report}")


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", choices=("accuracy", "speed", "all"), default="all")
    ap.add_argument("--task", choices=(*TASKS, "all"), default="all")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--encoder", choices=ENCODERS, default="builtin",
                    help="tile encoder of SEW's detail branch and of tile ABMIL")  # fmt: skip
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--n-train", type=int, default=36)
    ap.add_argument("--n-test", type=int, default=24)
    ap.add_argument("--size", default="tiny", help="synthetic slide size")
    ap.add_argument("--mosaic-size", nargs=2, type=int, default=[3072, 2304])
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--max-tiles", type=int, default=96, help="tiles cached per training slide")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="shared real data (for the mosaic task)")
    ap.add_argument(
        "--speed-sizes",
        nargs="*",
        default=None,
        help="synthetic slides of the speed section (default: 40960x40960 and "
        "102400x25600; 40960x40960 alone with --encoder uni)",
    )
    ap.add_argument("--speed-repeats", type=int, default=1)
    ap.add_argument(
        "--speed-threads",
        nargs="+",
        type=int,
        default=[1, 2],
        help="torch threads of the ViT speed runs (--encoder uni)",
    )
    ap.add_argument(
        "--abmil-sample",
        type=int,
        default=64,
        help="tiles tile ABMIL reads and encodes in the ViT speed runs",
    )
    ap.add_argument(
        "--real-slide",
        default=str(ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"),
        help="real slide of the ViT speed runs ('' to skip)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=str(ROOT / "data" / "generated" / "bench"))
    ap.add_argument("--figure", action="store_true", help="print the table, draw the plot")
    ap.add_argument(
        "--child", choices=("sew", "abmil", "sew_vit", "abmil_sample"), help=argparse.SUPPRESS
    )
    ap.add_argument("--slide", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child in ("sew_vit", "abmil_sample"):
        run_child_vit(args.child, args.slide, args.model, args.threads, args.abmil_sample)
        return 0
    if args.child:
        run_child(args.child, args.slide, args.model)
        return 0
    if args.encoder in FOUNDATION_ENCODERS and args.section != "speed" and not args.figure:
        ap.error(
            f"--encoder {args.encoder} has random weights (timing only): use it with "
            "--section speed"
        )
    if args.speed_sizes is None:
        args.speed_sizes = ["40960x40960"]
        if args.encoder not in FOUNDATION_ENCODERS:
            args.speed_sizes.append("102400x25600")
    if args.quick:
        args.n_train, args.n_test, args.epochs, args.seeds = 6, 6, 3, [0]
        args.mosaic_size, args.n_boot, args.max_tiles = [1536, 1152], 200, 32
        args.speed_sizes = ["8192x6144"]
        args.workdir = str(Path(args.workdir).with_name(Path(args.workdir).name + "_quick"))
    if args.figure:
        figure(args)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    if args.data_dir is None:
        from workbench.datasets._mosaic import default_data_dir

        found = default_data_dir() or (ROOT.parent / "shared" / "data")
        args.data_dir = str(found)
    emit({"benchmark": "slide_inference", "python": platform.python_version(),
          "torch": torch.__version__, "threads": args.threads, "device": "cpu", "gpu": NO_GPU,
          "cpus": os.cpu_count(), "args": vars(args)})  # fmt: skip
    t0 = time.perf_counter()
    if args.section in ("accuracy", "all"):
        for task in TASKS if args.task == "all" else (args.task,):
            run_accuracy(task, args)
    if args.section in ("speed", "all"):
        if args.encoder in FOUNDATION_ENCODERS:
            run_speed_vit(args)
        else:
            run_speed(args)
    emit({"section": "done", "total_seconds": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
