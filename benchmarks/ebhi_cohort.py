"""SEW and its baselines on a real biopsy cohort (EBHI-Seg, one slide per case); JSON lines.

The cohort is :func:`workbench.datasets.make_ebhi_cohort` (143 cases of colorectal endoscopic
biopsies, label = adenocarcinoma or not, tumour masks of the adenocarcinoma images as QuPath
annotations) with its fixed case-level split: ``train`` (76 cases) to fit, ``val`` (19) to
choose settings, ``test`` (48) only to report. Slides are read the way a user reads them
(``io.Cohort.from_folder`` on the written slides, clinical table and annotations, then the
engine of ``tl``) and every model is trained with ``tl.SlideTrainer``.

Sections
--------
``ablation``
    Trained on ``train``, measured on ``val`` (never ``test``): the focus predictor's
    training target (``class`` = the original attribution of each slide's own class,
    ``lesion`` = attribution of the adenocarcinoma margin, zero on negative slides,
    ``detail`` = the detail branch's lesion answer, no attribution), whether that lesion
    answer is trained from slide labels by multiple-instance pooling (``mil``), with and
    without the tumour annotations; focus-in-lesion of the top-K focus regions on the
    adenocarcinoma slides against chance (the tumour share of the tissue regions), the
    ranking of regions by focus score (node AUC), the NMS radius, what the global branch itself
    points at (node AUC of its slide-margin attribution, attention and node head), and a
    region-feature probe (can the thumbnail superpixels' own features tell tumour from not?).
``focus_rules``
    Val cases only: which focus-selection rule to use. SEW trained as in ``benchmark``;
    on the val adenocarcinoma slides the focus predictor's own top 4 against the top 4 of
    its first M proposals (M = 8 … 32) ranked by the detail branch's lesion answer
    (``confirm_by="lesion"``) or by the peak of the encoder's evidence in each crop
    (``confirm_by="evidence"``), each at the kept regions' centres, at their evidence peaks
    and, as a model-free reference, at their darkest spots.
``benchmark``
    SEW, SEW without consistency, GlobalOnly and tile ABMIL (same frozen encoder), several
    seeds, trained on ``train`` for a fixed number of epochs chosen on ``val``; on ``test``:
    AUC with a bootstrap 95 % interval, balanced accuracy, ECE of the raw probabilities (10
    bins, top-label), focus-in-lesion (SEW: top-K focus regions; ABMIL: top-K attention
    tiles) with chance, and seconds per slide (1 torch thread).

Raw lines go to ``benchmarks/results/ebhi_cohort.jsonl`` (``--out``) and to stdout::

    python benchmarks/ebhi_cohort.py --section ablation
    python benchmarks/ebhi_cohort.py --section benchmark --seeds 0 1 2
    python benchmarks/ebhi_cohort.py --section benchmark --models sew --annotations
    python benchmarks/ebhi_cohort.py --section focus_rules --encoder crc_biopsy --epochs 20
    python benchmarks/ebhi_cohort.py --section benchmark --models sew --encoder crc_biopsy \
        --epochs 20 [--annotations]      # confirming among 24 by evidence (the default)
    python benchmarks/ebhi_cohort.py --section focus_figure   # docs/images/ebhi_focus_rules.png
    python benchmarks/ebhi_cohort.py --section figure          # docs/images/ebhi_focus.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABEL = "adenocarcinoma"
MODELS = ("sew", "sew_no_consistency", "global_only", "tile_abmil")
_KIND = {"sew": "sew", "sew_no_consistency": "sew", "global_only": "global", "tile_abmil": "abmil"}
#: Ablation variants: (focus target, lesion MIL, annotations).
VARIANTS = {
    "before": ("class", False, False),
    "lesion_target": ("lesion", False, False),
    "mil_only": ("class", True, False),
    "after": ("lesion", True, False),
    "before_annotated": ("class", False, True),
    "after_annotated": ("lesion", True, True),
    "detail_mil": ("detail", True, False),
    "detail_annotated": ("detail", True, True),
}


def emit(record: dict, out: Path | None) -> None:
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


# ----------------------------------------------------------------------------- data
def cohort_of(args):
    """The written EBHI cohort (truth) and the user's view of it (``io.Cohort.from_folder``)."""
    from workbench.datasets import make_ebhi_cohort
    from workbench.io import Cohort

    truth = make_ebhi_cohort(args.data_dir, Path(args.workdir) / "cohort", progress=False)
    root = truth.root
    user = Cohort.from_folder(
        root / "slides", root / "clinical.csv", annotations_dir=root / "annotations"
    )
    return truth, user


def settings_for(user, encoder: str) -> dict:
    from workbench.models import load_encoder
    from workbench.tl._engine import suggest_settings

    settings = suggest_settings(user.slide_path(user.slide_ids[0]))
    enc = load_encoder(encoder)
    if enc is not None:
        settings.update(detail_mpp=float(enc.mpp), crop_size=int(enc.input_size))
    return settings


def samples_for(user, ids, split: str, annotations: bool, settings: dict, args) -> list:
    """Training slides read once through the engine (graph, candidate crops, tiles), cached."""
    import torch

    from workbench.models import SlideSample, load_encoder
    from workbench.tl._engine import prepare_cohort

    tag = "ann" if annotations else "mil"
    more = "" if args.n_candidates == 8 else f"_c{args.n_candidates}"
    cache = Path(args.workdir) / f"samples_{args.encoder}_{split}_{tag}{more}.pt"
    if cache.exists():
        return [SlideSample(**r) for r in torch.load(cache, weights_only=True)]
    enc = load_encoder(args.encoder)
    labels = user.labels(LABEL)
    samples = prepare_cohort(
        user,
        {s: int(labels[s]) for s in ids},
        slide_ids=ids,
        settings=settings,
        use_annotations=annotations,
        tiles=True,
        n_candidates=args.n_candidates,
        max_tiles=256,
        encoder=enc if enc is not None and enc.frozen else None,
        seed=0,
        progress=False,
    )
    tmp = cache.with_suffix(".tmp")
    torch.save([{f.name: getattr(s, f.name) for f in fields(s)} for s in samples], tmp)
    os.replace(tmp, cache)
    return samples


def graphs_for(user, ids, settings: dict) -> dict:
    from workbench.tl._engine import open_slide, region_graph_for

    out = {}
    for sid in ids:
        t = time.perf_counter()
        with open_slide(user.slide_path(sid), settings) as slide:
            g = region_graph_for(slide, settings)
        out[sid] = (g, time.perf_counter() - t)
    return out


# ----------------------------------------------------------------------------- metrics
def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of positive-class probabilities: the project's one
    definition (:func:`workbench.tl.expected_calibration_error`, ten equal-width bins), the
    figure ``workbench train`` and the report give."""
    from workbench.tl import expected_calibration_error

    return expected_calibration_error(np.asarray(y, int), np.asarray(p, float), n_bins=bins)


def _metrics(y, p) -> dict:
    from workbench.tl import classification_metrics

    p = np.asarray(p, float)
    out = classification_metrics(np.asarray(y), np.column_stack([1 - p, p]))
    out["ece"] = ece(y, p)
    return out


def bootstrap(y, P, key: str, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95 % interval of the mean over seeds of a metric, resampling slides."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(set(y[idx].tolist())) < 2:
            continue
        vals.append(np.mean([_metrics(y[idx], np.asarray(p)[idx])[key] for p in P]))
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def bootstrap_mean(per_slide: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95 % interval of a per-slide mean (``(seeds, slides)`` averaged over seeds)."""
    rng = np.random.default_rng(seed)
    arr = np.atleast_2d(per_slide)
    vals = [arr[:, rng.integers(0, arr.shape[1], arr.shape[1])].mean() for _ in range(n_boot)]
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def _node_truth(graph, mask, ds) -> np.ndarray:
    from workbench.tl._engine import mask_at

    xy = np.asarray(graph.obsm["spatial"], dtype=float)
    return mask_at(mask, ds, xy[:, 0], xy[:, 1])


def _topk_hits(scores, graph, inside, k: int, hops: int) -> list[int]:
    import torch

    from workbench.models import graph_nms
    from workbench.tl._engine import edge_index_of

    idx = graph_nms(torch.as_tensor(scores, dtype=torch.float32), edge_index_of(graph), k=k,
                    hops=hops).numpy()  # fmt: skip
    return inside[idx].astype(int).tolist()


def evaluate(
    name: str,
    model,
    truth,
    user,
    ids,
    graphs,
    *,
    top_k: int = 4,
    confirm: tuple = (),
    confirm_by: str = "lesion",
) -> dict:
    """Probabilities, seconds per slide and focus-in-lesion on the adenocarcinoma slides;
    for SEW also with the detail side confirming the focus among ``m`` proposals, for each
    ``m`` in ``confirm`` (``confirm_candidates``, ranked by ``confirm_by``), at the confirmed
    regions' centres and at their evidence peaks; and, as a model-free reference for any
    point-in-crop figure, the darkest spot of each focus crop (:func:`darkest_points`)."""
    import torch
    from sklearn.metrics import roc_auc_score

    from workbench.tl import extract, focus_in_mask, predict_tiles
    from workbench.tl._engine import edge_index_of, mask_at

    labels = user.labels(LABEL)
    probs, seconds, hits, chance, node_auc, hops_hits = [], [], {}, {}, [], {0: {}, 2: {}}
    evidence: dict[str, list] = {}
    confirmed: dict[int, dict] = {}
    peak_hits: dict[str, list] = {}
    dark_hits: dict[str, list] = {}
    for sid in ids:
        graph, t_graph = graphs[sid]
        path = user.slide_path(sid)
        positive = int(labels[sid]) == 1
        mask = ds = None
        if positive:
            mask, ds = truth.lesion_mask(sid)
            inside = _node_truth(graph, mask, ds)
            chance[sid] = float(inside.mean())
        if name.startswith("sew"):
            t = time.perf_counter()
            ad = extract(path, model, graph=graph, slide_id=sid)
            seconds.append(time.perf_counter() - t + t_graph)
            probs.append(float(ad.uns["explain"]["probabilities"][1]))
            for m in confirm:
                # the same trained model with the detail branch confirming m proposals
                before = {k: model.config.get(k) for k in ("confirm_candidates", "confirm_by")}
                model.config.update(confirm_candidates=m, confirm_by=confirm_by)
                try:
                    adm = extract(path, model, graph=graph, slide_id=sid)
                finally:
                    model.config.update(before)
                confirmed.setdefault(m, {"p": [], "hits": {}})
                confirmed[m]["p"].append(float(adm.uns["explain"]["probabilities"][1]))
                if positive:
                    confirmed[m]["hits"][sid] = focus_in_mask(adm, mask, ds).astype(int).tolist()
                    for at in ("peak", "darkest"):
                        confirmed[m].setdefault(at, {})[sid] = _hits_at(adm, mask, ds, at)
            if positive:
                hits[sid] = focus_in_mask(ad, mask, ds).astype(int).tolist()
                peak_hits[sid] = _hits_at(ad, mask, ds, "peak")
                dark_hits[sid] = _hits_at(ad, mask, ds, "darkest")
                score = ad.obs["focus_score"].to_numpy()
                if 0 < inside.sum() < len(inside):
                    node_auc.append(float(roc_auc_score(inside, score)))
                for h in hops_hits:
                    hops_hits[h][sid] = _topk_hits(score, graph, inside, top_k, h)
                if 0 < inside.sum() < len(inside):
                    for key, value in _evidence(model, graph).items():
                        evidence.setdefault(key, []).append(float(roc_auc_score(inside, value)))
        elif name == "global_only":
            t = time.perf_counter()
            with torch.no_grad():
                x = torch.from_numpy(np.asarray(graph.X, dtype=np.float32))
                p = torch.softmax(model(x, edge_index_of(graph))["logits"], -1)[1]
            seconds.append(time.perf_counter() - t + t_graph)
            probs.append(float(p))
        else:
            t = time.perf_counter()
            res = predict_tiles(path, model, batch_size=64)
            seconds.append(time.perf_counter() - t)
            probs.append(float(res["probabilities"][1]))
            if positive:
                pre = model.preprocessing
                size0 = pre["crop_size"] * pre["detail_mpp"] / float(truth.params["mpp"])
                top = np.argsort(-res["attention"])[:top_k]
                centres = np.asarray(res["tiles_xy"], float)[top] + size0 / 2.0
                hits[sid] = mask_at(mask, ds, centres[:, 0], centres[:, 1]).astype(int).tolist()
    out = {"probabilities": probs, "seconds": seconds, "chance": chance}
    for m, res in confirmed.items():
        out[f"confirm{m}_probabilities"] = res["p"]
        out[f"focus_hits_confirm{m}"] = res["hits"]
        if res["hits"]:
            out[f"focus_in_lesion_confirm{m}"] = float(
                np.mean([np.mean(v) for v in res["hits"].values()])
            )
            for at in ("peak", "darkest"):
                out[f"focus_hits_confirm{m}_{at}"] = res[at]
                out[f"focus_in_lesion_confirm{m}_{at}"] = float(
                    np.mean([np.mean(v) for v in res[at].values()])
                )
    if peak_hits:  # the focus crops' evidence peaks (tl.focus_peaks) instead of their centres
        out["focus_hits_peak"] = peak_hits
        out["focus_in_lesion_peak"] = float(np.mean([np.mean(v) for v in peak_hits.values()]))
        out["focus_hits_darkest"] = dark_hits  # model-free reference: darkest spot of each crop
        out["focus_in_lesion_darkest"] = float(np.mean([np.mean(v) for v in dark_hits.values()]))
    if hits:
        out["focus_hits"] = hits
        out["focus_in_lesion"] = float(np.mean([np.mean(v) for v in hits.values()]))
        out["focus_chance"] = float(np.mean(list(chance.values())))
    if node_auc:
        out["focus_node_auc"] = float(np.mean(node_auc))
        for h, per in hops_hits.items():
            out[f"focus_in_lesion_hops{h}"] = float(np.mean([np.mean(v) for v in per.values()]))
    for key, values in evidence.items():
        out[f"node_auc_{key}"] = float(np.mean(values))
    return out


def darkest_points(adata) -> np.ndarray:
    """Level-0 point of each focus crop where the crop is darkest (mean RGB averaged over a
    window of 1/15 of the crop, about 12 µm at 0.9 µm/px): a *model-free* reference. On
    adenocarcinoma biopsies the densest epithelium of almost any crop lies on a tumour gland,
    so a point-in-crop figure is only as good as it beats this one."""
    focus = adata.uns["explain"]["focus"]
    return _darkest(focus["crops"], focus["boxes_xywh"])


def _darkest(crops, boxes) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    crops = np.asarray(crops, float)
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    out = np.zeros((len(crops), 2))
    for i, (crop, box) in enumerate(zip(crops, boxes, strict=True)):
        dark = uniform_filter(255.0 - crop.mean(-1), max(1, crop.shape[1] // 15) | 1)
        r, c = np.unravel_index(np.argmax(dark), dark.shape)
        out[i] = (
            box[0] + (c + 0.5) * box[2] / dark.shape[1],
            box[1] + (r + 0.5) * box[3] / dark.shape[0],
        )
    return out


def _hits_at(adata, mask, ds, at: str) -> list[int]:
    """Focus hits at the evidence peaks (``"peak"``) or the darkest spots (``"darkest"``)."""
    from workbench.tl import focus_in_mask
    from workbench.tl._engine import mask_at

    if at == "peak":
        return focus_in_mask(adata, mask, ds, at="peak").astype(int).tolist()
    xy = darkest_points(adata)
    return mask_at(mask, ds, xy[:, 0], xy[:, 1]).astype(int).tolist()


def _evidence(model, graph) -> dict:
    """What the global branch itself points at: the attribution of the adenocarcinoma logit
    margin (the ``lesion`` focus target), its attention weights, the node head."""
    import torch

    from workbench.models import focus_target
    from workbench.tl._engine import edge_index_of

    x = torch.from_numpy(np.asarray(graph.X, dtype=np.float32))
    out = model.forward_global(x, edge_index_of(graph))
    return {
        "slide_margin_attribution": focus_target(out["logits"], out["tokens"], 1).numpy(),
        "attention": out["attention"].detach().numpy(),
        "node_head": torch.softmax(out["node_logits"], -1)[:, 1].detach().numpy(),
    }


def fit(name: str, samples, settings, seed: int, args, *, focus="lesion", mil=True):
    from workbench.tl import SlideTrainer

    t = time.perf_counter()
    kw = {"focus_target": focus, "lesion_mil": mil} if _KIND[name] == "sew" else {}
    trainer = SlideTrainer(
        kind=_KIND[name],
        label=LABEL,
        encoder=None if name == "global_only" else args.encoder,
        epochs=args.epochs,
        seed=seed,
        consistency=name != "sew_no_consistency",
        settings=dict(settings),
        model_kwargs=kw,
        progress=False,
    ).fit(samples=samples)
    return trainer, time.perf_counter() - t


# ----------------------------------------------------------------------------- sections
def region_probe(train_samples, val_samples) -> dict:
    """Can a linear model on the superpixels' own thumbnail features find the tumour?"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    def stack(samples):
        X, y = [], []
        for s in samples:
            if s.node_labels is None or int(s.label) == 0:
                continue
            keep = s.node_labels.numpy() >= 0
            X.append(s.features.numpy()[keep])
            y.append(s.node_labels.numpy()[keep])
        return np.concatenate(X), np.concatenate(y)

    Xt, yt = stack(train_samples)
    Xv, yv = stack(val_samples)
    sc = StandardScaler().fit(Xt)
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(sc.transform(Xt), yt)
    pure = [
        float((s.node_labels >= 0).float().mean())
        for s in val_samples
        if s.node_labels is not None and int(s.label) == 1
    ]
    return {
        "probe_node_auc_val": float(roc_auc_score(yv, clf.predict_proba(sc.transform(Xv))[:, 1])),
        "probe_train_nodes": int(len(yt)),
        "probe_val_nodes": int(len(yv)),
        "pure_node_share_val": float(np.mean(pure)),
    }


def run_ablation(args) -> None:
    out = Path(args.out)
    truth, user = cohort_of(args)
    settings = settings_for(user, args.encoder)
    train_ids, val_ids = truth.split_ids("train"), truth.split_ids("val")
    y_val = [int(user.labels(LABEL)[s]) for s in val_ids]
    graphs = graphs_for(user, val_ids, settings)
    needed = sorted({VARIANTS[v][2] for v in args.variants} | ({True} if args.probe else set()))
    train = {a: samples_for(user, train_ids, "train", a, settings, args) for a in needed}
    if args.probe:
        val_ann = samples_for(user, val_ids, "val", True, settings, args)
        emit({"section": "ablation_probe", "encoder": args.encoder, "settings": settings,
              **region_probe(train[True], val_ann)}, out)  # fmt: skip
    for variant in args.variants:
        focus, mil, ann = VARIANTS[variant]
        for seed in args.seeds:
            trainer, t_train = fit("sew", train[ann], settings, seed, args, focus=focus, mil=mil)
            res = evaluate("sew", trainer.model_, truth, user, val_ids, graphs)
            emit({"section": "ablation", "split": "val", "encoder": args.encoder,
                  "n_candidates": args.n_candidates,
                  "variant": variant, "focus_target": focus, "lesion_mil": mil,
                  "annotations": ann, "seed": seed, "epochs": args.epochs,
                  **_metrics(y_val, res["probabilities"]),
                  **{k: v for k, v in res.items() if k not in ("probabilities", "seconds",
                                                                "chance", "focus_hits")},
                  "train_seconds": t_train, "n_train": len(train_ids),
                  "n_val": len(val_ids), "n_val_positive": int(sum(y_val))}, out)  # fmt: skip


def _rows(out: Path, section: str, encoder: str, annotations: bool) -> dict:
    rows = {}
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if (r.get("section") == section and r.get("encoder") == encoder
                    and r.get("annotations") == annotations):  # fmt: skip
                rows[(r["model"], r["seed"])] = r
    return rows


def _log_probs(p) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-12, 1 - 1e-12)
    return np.column_stack([np.log1p(-p), np.log(p)])


def run_benchmark(args) -> None:
    """Train and test every (model, seed) not yet in ``--out``; then the summary lines."""
    import torch

    from workbench.tl import fit_temperature
    from workbench.tl._calibration import softmax_with_temperature

    out = Path(args.out)
    truth, user = cohort_of(args)
    settings = settings_for(user, args.encoder)
    train_ids, test_ids = truth.split_ids("train"), truth.split_ids("test")
    y_test = np.array([int(user.labels(LABEL)[s]) for s in test_ids])
    done = _rows(out, "benchmark", args.encoder, args.annotations)
    todo = [(m, s) for s in args.seeds for m in args.models if (m, s) not in done]
    if todo:
        t = time.perf_counter()
        samples = samples_for(user, train_ids, "train", args.annotations, settings, args)
        t_prep = time.perf_counter() - t
        graphs = graphs_for(user, test_ids, settings)
        val_ids = truth.split_ids("val")
        y_val = np.array([int(user.labels(LABEL)[s]) for s in val_ids])
        val_graphs = graphs_for(user, val_ids, settings)
    for name, seed in todo:
        torch.manual_seed(seed)
        trainer, t_train = fit(name, samples, settings, seed, args, focus=args.focus_target)
        confirm = tuple(args.confirm) if name.startswith("sew") else ()
        kw = {"confirm": confirm, "confirm_by": args.confirm_by}
        res = evaluate(name, trainer.model_, truth, user, test_ids, graphs, **kw)
        p = np.asarray(res["probabilities"])
        # temperature as a user gets it: fitted on the val cases, applied to the test cases
        rv = evaluate(name, trainer.model_, truth, user, val_ids, val_graphs, **kw)
        pv = rv["probabilities"]
        t_fit = fit_temperature(_log_probs(pv), y_val)
        p_cal = softmax_with_temperature(_log_probs(p), t_fit.temperature)[:, 1]
        row = {
            "section": "benchmark",
            "split": "test",
            "encoder": args.encoder,
            "annotations": args.annotations,
            "model": name,
            "seed": seed,
            "focus_target": args.focus_target if _KIND[name] == "sew" else None,
            "confirm_by": args.confirm_by if confirm else None,
            **_metrics(y_test, p),
            "ece_note": "raw probabilities (no temperature)",
            "train_seconds": t_train,
            "prepare_seconds_all_models": t_prep,
            "infer_seconds_per_slide_median": statistics.median(res["seconds"]),
            "epochs": args.epochs,
            "n_train": len(train_ids),
            "n_test": len(test_ids),
            "n_test_positive": int(y_test.sum()),
            "probabilities": [round(v, 4) for v in p.tolist()],
            "temperature": t_fit.temperature,
            "temperature_fitted_on": f"val ({len(val_ids)} cases)",
            "ece_calibrated": ece(y_test, p_cal),
            "calibrated_probabilities": [round(v, 4) for v in p_cal.tolist()],
            "val_probabilities": [round(float(v), 4) for v in pv],
            "labels": y_test.tolist(),
            "test_ids": test_ids,
        }
        for k in res:
            if k.startswith(("focus_", "node_auc_")):
                row[k] = res[k]
        for m in confirm:  # the same model, detail branch confirming the focus (test and val)
            pm = np.asarray(res[f"confirm{m}_probabilities"])
            row[f"confirm{m}_auc"] = _metrics(y_test, pm)["auc"]
            row[f"confirm{m}_probabilities"] = [round(v, 4) for v in pm.tolist()]
            row[f"val_focus_in_lesion_confirm{m}"] = rv.get(f"focus_in_lesion_confirm{m}")
            row[f"val_confirm{m}_auc"] = _metrics(y_val, rv[f"confirm{m}_probabilities"])["auc"]
            for at in ("peak", "darkest"):
                row[f"val_focus_in_lesion_confirm{m}_{at}"] = rv.get(
                    f"focus_in_lesion_confirm{m}_{at}"
                )
        if "focus_in_lesion_peak" in rv:
            row["val_focus_in_lesion_peak"] = rv["focus_in_lesion_peak"]
            row["val_focus_in_lesion_darkest"] = rv["focus_in_lesion_darkest"]
        if confirm:
            row["val_focus_in_lesion"] = rv.get("focus_in_lesion")
            row["val_focus_chance"] = rv.get("focus_chance")
            row["val_auc"] = _metrics(y_val, pv)["auc"]
        emit(row, out)
    if args.no_summary:
        return
    done = _rows(out, "benchmark", args.encoder, args.annotations)
    for name in args.models:
        rs = [done[(name, s)] for s in args.seeds if (name, s) in done]
        if rs:
            emit(summarise(name, rs, y_test, args), out)


#: focus_rules: proposals scored per slide, and the rules measured (ranking, proposals M).
RULE_PROPOSALS = 32
RULES = [("focus", 4)] + [(by, m) for by in ("lesion", "evidence") for m in (8, 12, 16, 24, 32)]


def proposal_hits(model, slide, graph, mask, ds) -> dict:
    """Every proposal's hit (centre, evidence peak, darkest spot) and its two confirmation
    scores, for the first ``RULE_PROPOSALS`` proposals (graph NMS order) of one slide."""
    import torch

    from workbench.tl import focus_peaks
    from workbench.tl._engine import mask_at, settings_of
    from workbench.tl._explain import _SlideInputs

    inputs = _SlideInputs(slide, graph, settings_of(model), torch.device("cpu"))
    with torch.no_grad():
        g = model.forward_global(inputs.features, inputs.edge_index)
        n = int(inputs.features.shape[0])
        cand = model.select_focus(g["focus_scores"], inputs.edge_index, k=min(RULE_PROPOSALS, n))
        images = inputs.crops(cand.tolist())
        det = model.forward_detail(images, g["tokens"][cand])
        before = model.config.get("confirm_by", "lesion")
        model.config["confirm_by"] = "evidence"
        try:
            evidence = model.confirm_scores(images, det).numpy()
        finally:
            model.config["confirm_by"] = before
    crops, boxes = inputs.focus_crops(cand.tolist())
    centres = np.asarray(graph.obsm["spatial"], float)[cand.numpy()]
    found = focus_peaks(model.tile_encoder, crops, boxes, None)
    peaks = found[0] if found is not None else centres
    dark = _darkest(crops, boxes)
    return {
        "center": mask_at(mask, ds, centres[:, 0], centres[:, 1]).astype(int),
        "peak": mask_at(mask, ds, peaks[:, 0], peaks[:, 1]).astype(int),
        "darkest": mask_at(mask, ds, dark[:, 0], dark[:, 1]).astype(int),
        "lesion": det["lesion_prob"].reshape(-1).numpy(),
        "evidence": evidence,
    }


def rule_hits(p: dict, by: str, m: int, k: int = 4) -> dict:
    """Hit rates of the ``k`` focus regions one rule keeps: the focus predictor's own top
    ``k`` (``by="focus"``) or the top ``k`` of the first ``m`` proposals by ``by``."""
    m = min(m, len(p["center"]))
    if by == "focus":
        keep = np.arange(min(k, m))
    else:
        keep = np.argsort(-np.asarray(p[by][:m]), kind="stable")[:k]
    return {at: float(np.mean(p[at][keep])) for at in ("center", "peak", "darkest")}


def run_focus_rules(args) -> None:
    """Choose the focus-selection rule on the val cases only: train as ``benchmark`` does
    (same seeds, epochs and samples), then on the val adenocarcinoma slides measure every
    rule of ``RULES`` at the kept regions' centres, their evidence peaks and (model-free)
    their darkest spots. Never touches the test cases."""
    import torch

    from workbench.tl._engine import open_slide, settings_of

    out = Path(args.out)
    truth, user = cohort_of(args)
    settings = settings_for(user, args.encoder)
    val_ids = truth.split_ids("val")
    labels = user.labels(LABEL)
    positive = [s for s in val_ids if int(labels[s]) == 1]
    graphs = graphs_for(user, positive, settings)
    samples = samples_for(user, truth.split_ids("train"), "train", args.annotations, settings, args)
    per_seed = {}
    for seed in args.seeds:
        torch.manual_seed(seed)
        trainer, _ = fit("sew", samples, settings, seed, args, focus=args.focus_target)
        model = trainer.model_.eval()
        found: dict[str, list] = {}
        chance = []
        for sid in positive:
            graph = graphs[sid][0]
            mask, ds = truth.lesion_mask(sid)
            chance.append(float(_node_truth(graph, mask, ds).mean()))
            with open_slide(user.slide_path(sid), settings_of(model)) as slide:
                p = proposal_hits(model, slide, graph, mask, ds)
            for by, m in RULES:
                for at, v in rule_hits(p, by, m).items():
                    found.setdefault(f"{by}{m}_{at}", []).append(v)
        row = {"section": "focus_rules", "split": "val", "encoder": args.encoder,
               "annotations": args.annotations, "seed": seed, "epochs": args.epochs,
               "n_slides": len(positive), "focus_chance": float(np.mean(chance)),
               **{k: float(np.mean(v)) for k, v in found.items()}}  # fmt: skip
        per_seed[seed] = row
        emit(row, out)
    keys = [
        k for k in next(iter(per_seed.values())) if k.endswith(("_center", "_peak", "_darkest"))
    ]
    emit({"section": "focus_rules_summary", "split": "val", "encoder": args.encoder,
          "annotations": args.annotations, "seeds": list(per_seed), "epochs": args.epochs,
          "focus_chance": float(np.mean([r["focus_chance"] for r in per_seed.values()])),
          "note": "rule = <ranking><M proposals>_<point>; focus4 = the focus predictor's own "
                  "top 4; darkest = model-free reference (darkest spot of each kept crop)",
          **{k: float(np.mean([r[k] for r in per_seed.values()])) for k in keys}}, out)  # fmt: skip


def run_calibration(args) -> None:
    """Temperature scaling as a user gets it: fit T on the val cases' predictions (never the
    test cases), apply it to the test cases, and report test ECE before and after."""
    import torch

    from workbench.tl import fit_temperature
    from workbench.tl._calibration import softmax_with_temperature

    out = Path(args.out)
    truth, user = cohort_of(args)
    settings = settings_for(user, args.encoder)
    ids = {part: truth.split_ids(part) for part in ("train", "val", "test")}
    y = {k: np.array([int(user.labels(LABEL)[s]) for s in v]) for k, v in ids.items()}
    samples = samples_for(user, ids["train"], "train", args.annotations, settings, args)
    graphs = {k: graphs_for(user, ids[k], settings) for k in ("val", "test")}

    def log_probs(p):
        p = np.clip(np.asarray(p, float), 1e-12, 1 - 1e-12)
        return np.column_stack([np.log1p(-p), np.log(p)])

    for name in args.models:
        for seed in args.seeds:
            torch.manual_seed(seed)
            trainer, _ = fit(name, samples, settings, seed, args, focus=args.focus_target)
            pv = evaluate(name, trainer.model_, truth, user, ids["val"], graphs["val"])
            pt = evaluate(name, trainer.model_, truth, user, ids["test"], graphs["test"])
            t_fit = fit_temperature(log_probs(pv["probabilities"]), y["val"])
            raw = np.asarray(pt["probabilities"], float)
            cal = softmax_with_temperature(log_probs(raw), t_fit.temperature)[:, 1]
            emit({"section": "calibration", "split": "test", "encoder": args.encoder,
                  "annotations": args.annotations, "model": name, "seed": seed,
                  "epochs": args.epochs, "temperature": t_fit.temperature,
                  "temperature_status": t_fit.status, "fitted_on": f"val ({len(ids['val'])} cases)",
                  "ece_raw": ece(y["test"], raw), "ece_calibrated": ece(y["test"], cal),
                  "ece_definition": "tl.expected_calibration_error (positive class, 10 bins)",
                  **{k: v for k, v in _metrics(y["test"], cal).items() if k != "ece"}},
                 out)  # fmt: skip


def summarise(name: str, rs: list[dict], y_test: np.ndarray, args) -> dict:
    """Mean over seeds with bootstrap intervals over test slides."""
    P = np.array([r["probabilities"] for r in rs])
    s = {
        "section": "summary",
        "split": "test",
        "encoder": args.encoder,
        "annotations": args.annotations,
        "model": name,
        "focus_target": rs[0].get("focus_target"),
        "confirm_by": rs[0].get("confirm_by"),
        "seeds": [r["seed"] for r in rs],
        "epochs": rs[0]["epochs"],
        "auc_mean": float(np.mean([r["auc"] for r in rs])),
        "auc_sd": float(np.std([r["auc"] for r in rs], ddof=1)) if len(rs) > 1 else 0.0,
        "auc_ci95": bootstrap(y_test, P, "auc"),
        "balanced_accuracy_mean": float(np.mean([r["balanced_accuracy"] for r in rs])),
        "balanced_accuracy_ci95": bootstrap(y_test, P, "balanced_accuracy"),
        # from the stored probabilities, so a summary always uses the current definition
        "ece_mean": float(np.mean([ece(y_test, r["probabilities"]) for r in rs])),
        "ece_definition": "tl.expected_calibration_error (positive class, 10 bins)",
        "ece_note": "raw probabilities (no temperature)",
        **(
            {
                "ece_calibrated_mean": float(np.mean([r["ece_calibrated"] for r in rs])),
                "ece_calibrated_sd": float(np.std([r["ece_calibrated"] for r in rs])),
                "temperatures": [round(r["temperature"], 3) for r in rs],
                "temperature_fitted_on": rs[0]["temperature_fitted_on"],
            }
            if all("ece_calibrated" in r for r in rs)
            else {}
        ),  # fmt: skip
        "infer_seconds_per_slide_median": float(
            np.median([r["infer_seconds_per_slide_median"] for r in rs])
        ),
        "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rs])),
    }
    if "focus_hits" in rs[0]:
        slides = sorted(rs[0]["focus_hits"])
        per = np.array([[np.mean(r["focus_hits"][x]) for x in slides] for r in rs])
        s["focus_in_lesion_mean"] = float(per.mean())
        s["focus_in_lesion_ci95"] = bootstrap_mean(per)
        s["focus_chance"] = rs[0]["focus_chance"]
        s["focus_what"] = "top-4 focus regions" if name.startswith("sew") else (
            "top-4 attention tiles")  # fmt: skip
    for key in [k for k in rs[0] if k.startswith("focus_hits_confirm")]:
        m = key[len("focus_hits_confirm") :]
        if not m.isdigit():  # the confirmed crops' peaks / darkest spots
            if all(key in r for r in rs):
                slides = sorted(rs[0][key])
                per = np.array([[np.mean(r[key][x]) for x in slides] for r in rs])
                s[f"focus_in_lesion_confirm{m}_mean"] = float(per.mean())
                s[f"focus_in_lesion_confirm{m}_ci95"] = bootstrap_mean(per)
                vals = [r.get(f"val_focus_in_lesion_confirm{m}") for r in rs]
                if all(v is not None for v in vals):
                    s[f"val_focus_in_lesion_confirm{m}_mean"] = float(np.mean(vals))
            continue
        if all(key in r for r in rs):
            slides = sorted(rs[0][key])
            per = np.array([[np.mean(r[key][x]) for x in slides] for r in rs])
            s[f"focus_in_lesion_confirm{m}_mean"] = float(per.mean())
            s[f"focus_in_lesion_confirm{m}_ci95"] = bootstrap_mean(per)
            s[f"confirm{m}_auc_mean"] = float(np.mean([r[f"confirm{m}_auc"] for r in rs]))
            s[f"val_focus_in_lesion_confirm{m}_mean"] = float(
                np.mean([r[f"val_focus_in_lesion_confirm{m}"] for r in rs])
            )
    if all("focus_hits_darkest" in r for r in rs):
        slides = sorted(rs[0]["focus_hits_darkest"])
        per = np.array([[np.mean(r["focus_hits_darkest"][x]) for x in slides] for r in rs])
        s["focus_in_lesion_darkest_mean"] = float(per.mean())
        s["focus_darkest_note"] = "model-free reference: the darkest spot of each focus crop"
        if all("val_focus_in_lesion_darkest" in r for r in rs):
            s["val_focus_in_lesion_darkest_mean"] = float(
                np.mean([r["val_focus_in_lesion_darkest"] for r in rs])
            )
    if all("focus_hits_peak" in r for r in rs):
        slides = sorted(rs[0]["focus_hits_peak"])
        per = np.array([[np.mean(r["focus_hits_peak"][x]) for x in slides] for r in rs])
        s["focus_in_lesion_peak_mean"] = float(per.mean())
        s["focus_in_lesion_peak_ci95"] = bootstrap_mean(per)
        if all("val_focus_in_lesion_peak" in r for r in rs):
            s["val_focus_in_lesion_peak_mean"] = float(
                np.mean([r["val_focus_in_lesion_peak"] for r in rs])
            )
    if all("val_focus_in_lesion" in r for r in rs):
        s["val_focus_in_lesion_mean"] = float(np.mean([r["val_focus_in_lesion"] for r in rs]))
        s["val_focus_chance"] = rs[0]["val_focus_chance"]
    if "focus_node_auc" in rs[0]:
        s["focus_node_auc_mean"] = float(np.mean([r["focus_node_auc"] for r in rs]))
    return s


def plot_figure(args) -> Path:
    """Focus-in-lesion of every ablation variant (val) and model (test) against chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(args.out).read_text().splitlines()]
    abl: dict[str, list] = {}
    for r in rows:
        if r.get("section") == "ablation" and r.get("n_candidates", 8) == 8:
            abl.setdefault(r["variant"], []).append(r)
    last = {}
    for r in rows:
        if r.get("section") == "summary" and "focus_in_lesion_mean" in r:
            tag = f"{r['model']}{' (annotated)' if r.get('annotations') else ''}"
            last[tag] = r
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    names = [v for v in VARIANTS if v in abl]
    vals = [np.mean([r["focus_in_lesion"] for r in abl[v]]) for v in names]
    aucs = [np.mean([r["focus_node_auc"] for r in abl[v]]) for v in names]
    chance = np.mean([r["focus_chance"] for v in names for r in abl[v]]) if names else 0.5
    x = np.arange(len(names))
    axes[0].bar(x - 0.2, vals, 0.4, label="top-4 focus in tumour", color="#2ca02c")
    axes[0].bar(x + 0.2, aucs, 0.4, label="region ranking AUC", color="#1f77b4")
    axes[0].axhline(chance, color="k", ls="--", lw=1, label=f"chance of a hit {chance:.2f}")
    axes[0].axhline(0.5, color="#1f77b4", ls=":", lw=1, label="chance of the AUC 0.5")
    axes[0].set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[0].set_title("focus ablation (val cases, adenocarcinoma slides)", fontsize=10)
    axes[0].legend(fontsize=7, loc="lower right")
    tags = list(last)
    axes[1].bar(np.arange(len(tags)), [last[t]["focus_in_lesion_mean"] for t in tags],
                yerr=np.array([[last[t]["focus_in_lesion_mean"] - last[t]["focus_in_lesion_ci95"][0],
                                last[t]["focus_in_lesion_ci95"][1] - last[t]["focus_in_lesion_mean"]]
                               for t in tags]).T if tags else None,
                color="#2ca02c", capsize=3)  # fmt: skip
    if tags:
        axes[1].axhline(last[tags[0]]["focus_chance"], color="k", ls="--", lw=1)
    axes[1].set_xticks(np.arange(len(tags)), [t.replace(" ", "\n") for t in tags], fontsize=8)
    axes[1].set_ylim(0, 1)
    axes[1].set_title("test cases: top-4 focus (ABMIL: attention tiles)", fontsize=10)
    fig.tight_layout()
    path = ROOT / "docs" / "images" / "ebhi_focus.png"
    fig.savefig(path, dpi=90)
    print(json.dumps({"figure": str(path)}))
    return path


def plot_focus_rules(args) -> Path:
    """Focus on tumour by selection rule: val (the choice, ``ebhi_focus_rules.jsonl``) and
    test (the chosen rule once, ``ebhi_cohort_confirm.jsonl``), centres, peaks and the
    model-free darkest spot, with and without annotations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = ROOT / "benchmarks" / "results"
    read = lambda name: [json.loads(x) for x in (results / name).read_text().splitlines()]  # noqa: E731
    val = {r["annotations"]: r for r in read("ebhi_focus_rules.jsonl")
           if r["section"] == "focus_rules_summary"}  # fmt: skip
    test = {r["annotations"]: r for r in read("ebhi_cohort_confirm.jsonl")
            if r["section"] == "summary"}  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    colours = {"centre": "#2ca02c", "peak": "#1f77b4", "darkest (no model)": "#bbbbbb"}
    for ax, (title, rows, bars) in zip(axes, (
        ("val cases: the choice", val, lambda r: {
            "focus 4": [r["focus4_center"], r["focus4_peak"], r["focus4_darkest"]],
            "lesion 12": [r["lesion12_center"], r["lesion12_peak"], r["lesion12_darkest"]],
            "evidence 24": [r["evidence24_center"], r["evidence24_peak"],
                            r["evidence24_darkest"]]}),
        ("test cases: the chosen rule, once", test, lambda r: {
            "focus 4": [r["focus_in_lesion_mean"], r["focus_in_lesion_peak_mean"],
                        r["focus_in_lesion_darkest_mean"]],
            "evidence 24": [r["focus_in_lesion_confirm24_mean"],
                            r["focus_in_lesion_confirm24_peak_mean"],
                            r["focus_in_lesion_confirm24_darkest_mean"]]}),
    ), strict=True):  # fmt: skip
        labels, x0 = [], 0
        for ann in (False, True):
            if ann not in rows:
                continue
            for name, vals in bars(rows[ann]).items():
                for j, (what, c) in enumerate(colours.items()):
                    ax.bar(x0 + 0.27 * (j - 1), vals[j], 0.27, color=c,
                           label=what if x0 == 0 else None)  # fmt: skip
                labels.append(f"{name}\n{'annotated' if ann else 'slide labels'}")
                x0 += 1
        chance = next(iter(rows.values()))["focus_chance"]
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance (centres) {chance:.2f}")
        ax.axhline(0.8, color="r", ls=":", lw=1, label="target 0.80 (slide labels)")
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("share of the 4 focus points on tumour")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = ROOT / "docs" / "images" / "ebhi_focus_rules.png"
    fig.savefig(path, dpi=90)
    print(json.dumps({"figure": str(path)}))
    return path


def main(argv=None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--section", default="benchmark",
                   choices=("ablation", "benchmark", "calibration", "figure", "focus_rules",
                            "focus_figure"))  # fmt: skip
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--workdir", default=str(ROOT / "runs" / "ebhi_bench"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ebhi_cohort.jsonl"))
    p.add_argument("--encoder", default="texture", choices=("texture", "builtin", "crc_biopsy"))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--probe", action="store_true",
                   help="ablation: also fit the region-feature probe (needs the annotations)")  # fmt: skip
    p.add_argument("--n-candidates", type=int, default=8,
                   help="magnified crops cached per training slide")  # fmt: skip
    p.add_argument("--focus-target", default="detail", choices=("lesion", "class", "detail"))
    p.add_argument("--confirm", type=int, nargs="*", default=[24],
                   help="benchmark: also measure SEW with the detail branch confirming the "
                   "focus among this many proposals (confirm_candidates)")  # fmt: skip
    p.add_argument("--confirm-by", default="evidence", choices=("lesion", "evidence"),
                   help="benchmark: what ranks the proposals when confirming (confirm_by; "
                   "24 by evidence chosen on val by --section focus_rules)")  # fmt: skip
    p.add_argument("--no-summary", action="store_true",
                   help="benchmark: only train and test (run the summary from another call)")  # fmt: skip
    p.add_argument("--annotations", action="store_true",
                   help="benchmark: train with the tumour annotations (default: slide labels only)")  # fmt: skip
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sections = {"ablation": run_ablation, "benchmark": run_benchmark,
                "calibration": run_calibration, "figure": plot_figure,
                "focus_rules": run_focus_rules, "focus_figure": plot_focus_rules}  # fmt: skip
    sections[args.section](args)


if __name__ == "__main__":
    sys.exit(main())
