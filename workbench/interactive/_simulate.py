"""The standard click simulator and number-of-clicks metrics (f-BRS / RITM protocol)."""

from __future__ import annotations

import time
import warnings

import numpy as np

from workbench.models._clicks import next_click

__all__ = ["evaluate_clicks", "evaluate_sequential", "iou", "summarize"]


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks.

    Parameters
    ----------
    pred, gt
        The two masks, same shape (non-zero is inside).

    Returns
    -------
    float
        ``|pred & gt| / |pred | gt|``, or 1.0 when both are empty.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


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

    Parameters
    ----------
    engine
        A :class:`~workbench.interactive.RefinementEngine` (or anything with ``set_view``
        and ``add_click``; a ``last_steps`` attribute is read when present).
    image
        The ``(H, W, 3)`` uint8 view.
    gt
        Its ``(H, W)`` ground-truth mask.
    max_clicks
        Most clicks made.
    target_iou
        IoU at which the user stops.

    Returns
    -------
    dict
        ``ious`` (IoU after each click, padded with the last value up to ``max_clicks``),
        ``seconds`` (engine time per click actually made), ``cpu_seconds`` (the process's
        CPU time for it: on a busy shared machine closer to what an idle one takes),
        ``steps`` (optimisation steps per click), ``n_clicks`` and ``optimised_clicks``
        (clicks with at least one step).
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
    """Summarise click runs: NoC per target, failures, mean IoU per click and timing.

    ``optimised_share`` and ``mean_steps`` are taken over the clicks from the second on (the
    first click of a view is the network's alone by design).

    Parameters
    ----------
    runs
        One :func:`evaluate_clicks` result per view.
    max_clicks
        The click budget the runs used (the NoC of a view that never reaches a target).
    targets
        IoU targets to report.

    Returns
    -------
    dict
        ``n_views``; per target ``t`` (as a percentage ``k``) ``noc<k>`` (mean number of
        clicks to reach it) and ``failures<k>`` (views that never did); ``optimised_share``
        and ``mean_steps``; ``miou_per_click`` (mean IoU after each click);
        ``sec_per_click_median``, ``sec_per_click_p95``, ``cpu_per_click_median`` and
        ``cpu_per_click_p95``.
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


def _view_parts(view) -> tuple[str, np.ndarray, np.ndarray]:
    if len(view) == 3:
        name, image, mask = view
        return str(name), image, mask
    if len(view) == 2:
        image, mask = view
        return "", image, mask
    raise ValueError("a view must be (image, mask) or (name, image, mask)")


def evaluate_sequential(
    engine,
    views,
    *,
    max_clicks: int = 20,
    target_iou: float = 0.90,
    baseline: bool = True,
    reset: bool = True,
    adapt_kwargs: dict | None = None,
    progress: bool = False,
) -> dict:
    """The sequential protocol: views in the given order, the engine learning from each.

    For each view in turn the simulated user refines it (:func:`evaluate_clicks`) with the
    engine as adapted so far, then the engine adapts on the view's true mask (the outline a
    user would confirm; :meth:`RefinementEngine.adapt`). With ``baseline`` every view is
    also refined by the packaged network (no adaptation), so the two can be compared view
    by view.

    Parameters
    ----------
    engine
        A :class:`RefinementEngine` (or a zero-argument callable returning one: called once
        for the adapted run and once for the baseline).
    views
        ``(name, image, mask)`` or ``(image, mask)`` items, in the order the user meets them.
    max_clicks, target_iou
        As in :func:`evaluate_clicks`.
    baseline
        Also run every view without adaptation.
    reset
        Start from the packaged network (``engine.reset_adaptation()`` first).
    adapt_kwargs
        Keyword arguments for :meth:`RefinementEngine.adapt` (e.g. ``{"seconds": 2.0}``).
    progress
        Show a tqdm bar.

    Returns
    -------
    dict
        ``names``; ``adapted`` and ``baseline`` (one :func:`evaluate_clicks` result per view,
        ``baseline`` is ``None`` without it); ``adapt`` (the report of each ``adapt`` call:
        ``steps``, ``seconds`` …); ``second_half`` with :func:`summarize` of the second half
        of the views (``adapted`` and ``baseline``), the part where adaptation can have
        learnt something.
    """
    factory = engine if callable(engine) and not hasattr(engine, "add_click") else None
    adapted_engine = factory() if factory is not None else engine
    if reset:
        adapted_engine.reset_adaptation()
    base_engine = None
    if baseline:
        base_engine = factory() if factory is not None else None
        if base_engine is not None:
            base_engine.reset_adaptation()
    items = [_view_parts(v) for v in views]
    iterator = items
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(items, desc="sequential views", unit="view")
    names, adapted_runs, baseline_runs, reports = [], [], [], []
    for name, image, mask in iterator:
        names.append(name)
        adapted_runs.append(
            evaluate_clicks(
                adapted_engine, image, mask, max_clicks=max_clicks, target_iou=target_iou
            )
        )
        if baseline:
            if base_engine is not None:
                baseline_runs.append(
                    evaluate_clicks(
                        base_engine, image, mask, max_clicks=max_clicks, target_iou=target_iou
                    )
                )
            else:  # one engine: set its adaptation aside for the baseline run
                state = adapted_engine.adaptation_state()
                memory = list(getattr(adapted_engine, "_memory", []))  # replay samples
                adapted_engine.reset_adaptation()
                try:
                    baseline_runs.append(
                        evaluate_clicks(
                            adapted_engine,
                            image,
                            mask,
                            max_clicks=max_clicks,
                            target_iou=target_iou,
                        )
                    )
                finally:
                    adapted_engine.load_adaptation(state)
                    if hasattr(adapted_engine, "_memory"):
                        adapted_engine._memory = memory
        reports.append(
            adapted_engine.adapt(image, np.asarray(mask, dtype=bool), **(adapt_kwargs or {}))
        )
    half = len(items) // 2
    second = {"adapted": summarize(adapted_runs[half:], max_clicks=max_clicks)}
    if baseline:
        second["baseline"] = summarize(baseline_runs[half:], max_clicks=max_clicks)
    return {
        "names": names,
        "adapted": adapted_runs,
        "baseline": baseline_runs if baseline else None,
        "adapt": reports,
        "second_half": second,
    }
