"""The standard click simulator and number-of-clicks metrics (f-BRS / RITM protocol)."""

from __future__ import annotations

import time
import warnings

import numpy as np
from scipy.ndimage import distance_transform_edt

from workbench.interactive._clicks import Click

__all__ = ["evaluate_clicks", "iou", "next_click", "summarize"]


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def _depth(error: np.ndarray) -> np.ndarray:
    # Pad with background so that the view border counts as the edge of an error region.
    padded = np.pad(error, 1, mode="constant", constant_values=False)
    return distance_transform_edt(padded)[1:-1, 1:-1]


def next_click(pred: np.ndarray, gt: np.ndarray) -> Click | None:
    """Where a simulated user clicks next, or ``None`` when there is no error left.

    The click goes to the error pixel farthest from the boundary of its error region: a
    positive click in a false negative region or a negative click in a false positive
    region, whichever is deeper (ties go to the positive click).
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    fn_depth = _depth(gt & ~pred)
    fp_depth = _depth(pred & ~gt)
    fn_max, fp_max = float(fn_depth.max(initial=0.0)), float(fp_depth.max(initial=0.0))
    if fn_max == 0.0 and fp_max == 0.0:
        return None
    positive = fn_max >= fp_max
    depth = fn_depth if positive else fp_depth
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return Click(x=float(c), y=float(r), positive=bool(positive))


def evaluate_clicks(
    engine,
    image: np.ndarray,
    gt: np.ndarray,
    *,
    max_clicks: int = 20,
    target_iou: float = 0.90,
) -> dict:
    """Run the click protocol on one view.

    Starts from an empty mask, adds simulated clicks until the IoU reaches ``target_iou`` or
    ``max_clicks`` clicks were made.

    Returns
    -------
    dict
        ``ious`` (IoU after each click, padded with the last value up to ``max_clicks``),
        ``seconds`` (engine time per click actually made), ``cpu_seconds`` (the process's
        CPU time for it: on a busy shared machine closer to what an idle one takes),
        ``steps`` (optimisation steps per
        click), ``n_clicks`` and ``optimised_clicks`` (clicks with at least one step).
    """
    gt = np.asarray(gt, dtype=bool)
    pred = engine.set_view(image)
    ious: list[float] = []
    seconds: list[float] = []
    cpu: list[float] = []
    steps: list[int] = []
    for _ in range(max_clicks):
        click = next_click(pred, gt)
        if click is None:
            ious.append(1.0)
            break
        start, start_cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pred = engine.add_click(click.x, click.y, click.positive)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        steps.append(int(getattr(engine, "last_steps", 0)))
        ious.append(iou(pred, gt))
        if ious[-1] >= target_iou:
            break
    n_clicks = len(ious)
    ious = ious + [ious[-1]] * (max_clicks - len(ious))
    return {
        "ious": ious,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "steps": steps,
        "n_clicks": n_clicks,
        "optimised_clicks": int(sum(s > 0 for s in steps)),
    }


def _noc(ious: list[float], target: float, max_clicks: int) -> int:
    for k, value in enumerate(ious, start=1):
        if value >= target:
            return k
    return max_clicks


def summarize(runs: list[dict], *, max_clicks: int = 20, targets=(0.80, 0.85, 0.90)) -> dict:
    """NoC at each target, failures at ``max_clicks``, mean IoU per click, optimisation
    share and timing.

    ``optimised_share`` and ``mean_steps`` are taken over the clicks from the second on (the
    first click of a view is the network's alone by design).
    """
    out: dict = {"n_views": len(runs)}
    for t in targets:
        nocs = [_noc(r["ious"], t, max_clicks) for r in runs]
        key = int(round(t * 100))
        out[f"noc{key}"] = float(np.mean(nocs)) if nocs else float("nan")
        out[f"failures{key}"] = int(sum(max(r["ious"]) < t for r in runs))
    curve = np.mean([r["ious"] for r in runs], axis=0) if runs else np.zeros(0)
    later = [s for r in runs for s in r.get("steps", [])[1:]]
    out["optimised_share"] = float(np.mean([s > 0 for s in later])) if later else 0.0
    out["mean_steps"] = float(np.mean(later)) if later else 0.0
    out["miou_per_click"] = [round(float(v), 4) for v in curve]
    secs = np.concatenate([np.asarray(r["seconds"], dtype=float) for r in runs]) if runs else []
    out["sec_per_click_median"] = float(np.median(secs)) if len(secs) else float("nan")
    out["sec_per_click_p95"] = float(np.percentile(secs, 95)) if len(secs) else float("nan")
    cpu = (
        np.concatenate([np.asarray(r.get("cpu_seconds", []), float) for r in runs]) if runs else []
    )
    out["cpu_per_click_median"] = float(np.median(cpu)) if len(cpu) else float("nan")
    out["cpu_per_click_p95"] = float(np.percentile(cpu, 95)) if len(cpu) else float("nan")
    return out
