"""Validation benchmark of marker discovery; prints one JSON object per line.

1. ``planted``: a simulated cohort (``workbench.tl._simulate``: regions with a hidden tissue
   type, survival from a hazard model with grade + immune infiltration at the lesion margin)
   goes through the honest ``tl.discover`` pipeline (phenotypes fitted on the discovery half,
   screen on the validation half). Reported: the rank and q-value of the planted marker
   (``boundary_density`` of the phenotype that is mostly immune), the top marker, and whether
   any marker of a decoy phenotype (mostly necrosis or adipose tissue) was called.
2. ``null``: the same pipeline on cohorts drawn with ``null=True`` (outcome independent of the
   slides; grade still acts). Reported: the share of cohorts with any call at q < 0.05, with
   a Wilson 95% interval.
3. ``gbsg2``: the screen on lifelines' GBSG2 (real clinical data, shipped with lifelines)
   against direct ``CoxPHFitter`` / ``logrank_test`` calls: the largest differences.

Run: ``.venv/bin/python benchmarks/markers.py [--patients 160] [--nulls 20] [--regions 300]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import numpy as np
import pandas as pd

from workbench import tl
from workbench.tl._simulate import simulate_region_cohort

DECOY_TYPES = ("necrosis", "adipose")


def emit(**record) -> None:
    print(json.dumps(record, default=float), flush=True)


def phenotype_types(adatas) -> dict[str, str]:
    """Majority hidden tissue type of each phenotype, pooled over slides."""
    obs = pd.concat([a.obs[["phenotype", "true_type"]] for a in adatas])
    tab = pd.crosstab(obs["phenotype"].astype(str), obs["true_type"].astype(str))
    return {p: tab.loc[p].idxmax() for p in tab.index if p != "other"}


def run_cohort(adatas, clinical, *, seed: int, families, cv_top: int):
    co = tl.discover(
        adatas,
        clinical,
        seed=seed,
        spatial_kwargs={"families": families, "n_perms": 100},
        survival_kwargs={"cv_top": cv_top},
    )
    return co, co.uns["survival_screen"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def planted(args) -> None:
    t0 = time.perf_counter()
    adatas, clinical = simulate_region_cohort(args.patients, seed=args.seed, n_regions=args.regions)
    co, table = run_cohort(adatas, clinical, seed=args.seed, families=args.families, cv_top=5)
    types = phenotype_types(adatas)
    immune = [p for p, t in types.items() if t == "immune"]
    decoys = [p for p, t in types.items() if t in DECOY_TYPES]
    target = f"boundary_density:{immune[0]}" if immune else None
    ranked = list(table.index)
    decoy_called = [
        m for m in ranked if table.loc[m, "called"] and co.var.loc[m, "phenotype"] in decoys
    ]
    cv = co.uns["survival_cv"]
    emit(
        benchmark="markers",
        part="planted",
        patients=args.patients,
        validation_patients=len(co.uns["discovery"]["validation_patients"]),
        regions_per_slide=args.regions,
        markers_tested=int(table["p_cox"].notna().sum()),
        phenotype_types=types,
        target=target,
        target_rank=(ranked.index(target) + 1) if target in ranked else None,
        target_q_cox=float(table.loc[target, "q_cox"]) if target in ranked else None,
        target_q_logrank=float(table.loc[target, "q_logrank"]) if target in ranked else None,
        target_hr_per_sd=float(table.loc[target, "hr"]) if target in ranked else None,
        target_cv_c_index=(
            float(cv.loc[(cv["marker"] == target) & (cv["model"] == "marker"), "c_index"].iloc[0])
            if target in set(cv["marker"])
            else None
        ),
        top_marker=ranked[0],
        # Markers ranked above the target, with the hidden type of their phenotype: in this
        # simulation the infiltrate replaces stroma, so stroma's margin density is the
        # target's compositional complement and carries the same planted signal.
        above_target=(
            {m: types.get(co.var.loc[m, "phenotype"], "?") for m in ranked[: ranked.index(target)]}
            if target in ranked
            else None
        ),
        called=[m for m in ranked if table.loc[m, "called"]],
        decoy_phenotypes=decoys,
        decoy_markers_called=decoy_called,
        seconds=round(time.perf_counter() - t0, 1),
    )


def nulls(args) -> None:
    t0 = time.perf_counter()
    any_cox, any_lr, n_calls = 0, 0, []
    for i in range(args.nulls):
        seed = 1000 + i
        adatas, clinical = simulate_region_cohort(
            args.null_patients, seed=seed, null=True, n_regions=args.regions
        )
        _, table = run_cohort(adatas, clinical, seed=seed, families=args.families, cv_top=0)
        calls = int((table["q_cox"] < 0.05).sum())
        n_calls.append(calls)
        any_cox += calls > 0
        any_lr += bool((table["q_logrank"] < 0.05).any())
    lo, hi = wilson(any_cox, args.nulls)
    emit(
        benchmark="markers",
        part="null",
        cohorts=args.nulls,
        patients=args.null_patients,
        share_any_call_cox_q05=any_cox / args.nulls,
        wilson95=[round(lo, 3), round(hi, 3)],
        share_any_call_logrank_q05=any_lr / args.nulls,
        calls_per_cohort=n_calls,
        target=0.05,
        seconds=round(time.perf_counter() - t0, 1),
    )


def gbsg2() -> None:
    from lifelines import CoxPHFitter
    from lifelines.datasets import load_gbsg2
    from lifelines.statistics import logrank_test

    t0 = time.perf_counter()
    df = load_gbsg2()
    df.index = [f"G{i}" for i in range(len(df))]
    names = ["age", "tsize", "pnodes", "progrec", "estrec"]
    clinical = pd.DataFrame(
        {"patient_id": df.index, "time": df["time"].astype(float), "event": df["cens"]}
    )
    co = tl.cohort(df[names], clinical, slide_key=None)
    table = tl.survival(co, cv_top=0)
    diff = {"hr": 0.0, "p_cox": 0.0, "logrank_stat": 0.0, "p_logrank": 0.0}
    for m in names:
        x = df[m].astype(float)
        d = pd.DataFrame({"time": df["time"], "cens": df["cens"], m: (x - x.mean()) / x.std()})
        s = CoxPHFitter().fit(d, "time", "cens").summary.loc[m]
        high = x > x.median()
        lr = logrank_test(
            df["time"][high],
            df["time"][~high],
            event_observed_A=df["cens"][high],
            event_observed_B=df["cens"][~high],
        )
        for key, ref in (
            ("hr", s["exp(coef)"]),
            ("p_cox", s["p"]),
            ("logrank_stat", lr.test_statistic),
            ("p_logrank", lr.p_value),
        ):
            diff[key] = max(diff[key], abs(float(table.loc[m, key]) - float(ref)))
    emit(
        benchmark="markers",
        part="gbsg2",
        patients=int(co.n_obs),
        markers=names,
        max_abs_diff_vs_direct_lifelines=diff,
        equal=all(v < 1e-8 for v in diff.values()),
        called=[m for m in table.index if table.loc[m, "called"]],
        seconds=round(time.perf_counter() - t0, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--null-patients", type=int, default=100)
    parser.add_argument("--nulls", type=int, default=20)
    parser.add_argument("--regions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--families",
        default="direct,nhood,cooc,moran,ripley",
        help="comma-separated tl.spatial families",
    )
    parser.add_argument("--parts", default="gbsg2,planted,null")
    args = parser.parse_args()
    args.families = tuple(args.families.split(","))
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    parts = args.parts.split(",")
    if "gbsg2" in parts:
        gbsg2()
    if "planted" in parts:
        planted(args)
    if "null" in parts:
        nulls(args)


if __name__ == "__main__":
    main()
