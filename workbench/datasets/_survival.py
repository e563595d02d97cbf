"""Patients of a synthetic cohort and their survival under a documented hazard model.

The model (all times in months)::

    z_infiltration = (infiltration - 0.5) / sqrt(0.9**2 / 12)      # infiltration ~ U(0.05, 0.95)
    eta = log_hr_grade * (grade - 2)
        + log_hr_infiltration * z_infiltration
        + log_hr_age * (age - 60) / 10
    h(t | x) = (k / lam) * (t / lam) ** (k - 1) * exp(eta)          # Weibull proportional hazards
    T = lam * (E / exp(eta)) ** (1 / k),  E ~ Exp(1)
    C = min(Exp(mean = censor_mean), admin_time);  time = min(T, C);  event = T <= C

Grade and the immune infiltration of the lesion boundary (the planted spatial marker) drive
survival; age has a small effect; the necrosis decoy is drawn independently and has none.
With ``null=True`` the grade and infiltration log-hazard ratios are zero, so survival is
independent of everything visible in the image (age keeps its effect).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

INFILTRATION_RANGE = (0.05, 0.95)


@dataclass(frozen=True)
class HazardModel:
    """Coefficients of the Weibull proportional-hazards model (times in months).

    Each parameter is kept as the attribute of the same name; the defaults are the model
    :func:`make_cohort` draws from.

    Parameters
    ----------
    log_hr_grade
        Log hazard ratio per grade step (``log(2)``: each step doubles the hazard).
    log_hr_infiltration
        Log hazard ratio per standard deviation of boundary infiltration (protective).
    log_hr_age
        Log hazard ratio per decade of age above 60.
    shape, scale
        Weibull baseline shape ``k`` and scale ``lam`` (months) at grade 2, mean
        infiltration and age 60.
    censor_mean
        Mean of the exponential random (loss to follow-up) censoring time.
    admin_time
        Administrative censoring: follow-up ends here.
    """

    log_hr_grade: float = math.log(2.0)
    log_hr_infiltration: float = math.log(0.55)
    log_hr_age: float = 0.15
    shape: float = 1.3
    scale: float = 80.0
    censor_mean: float = 240.0
    admin_time: float = 120.0

    def null(self) -> HazardModel:
        """The same model with the image-derived effects (grade, infiltration) removed.

        Returns
        -------
        HazardModel
            A copy with ``log_hr_grade = log_hr_infiltration = 0``.
        """
        return replace(self, log_hr_grade=0.0, log_hr_infiltration=0.0)

    def to_dict(self) -> dict:
        """The coefficients by name (as stored in ``cohort.json``).

        Returns
        -------
        dict
            One float per field.
        """
        return asdict(self)


def infiltration_z(infiltration: np.ndarray | float) -> np.ndarray:
    """Standardise planted infiltration with the population mean and SD of its uniform law.

    Parameters
    ----------
    infiltration
        Planted infiltration value(s) on ``INFILTRATION_RANGE``.

    Returns
    -------
    numpy.ndarray
        ``(infiltration - mean) / sd`` of the uniform law on ``INFILTRATION_RANGE``, the
        ``z`` of the survival model (a 0-d array for a single value).
    """
    lo, hi = INFILTRATION_RANGE
    mean, sd = (lo + hi) / 2, (hi - lo) / math.sqrt(12)
    return (np.asarray(infiltration, dtype=float) - mean) / sd


def linear_predictor(
    grade: np.ndarray, infiltration: np.ndarray, age: np.ndarray, model: HazardModel
) -> np.ndarray:
    """``eta`` of the hazard model for each patient."""
    return (
        model.log_hr_grade * (np.asarray(grade, dtype=float) - 2)
        + model.log_hr_infiltration * infiltration_z(infiltration)
        + model.log_hr_age * (np.asarray(age, dtype=float) - 60) / 10
    )


def simulate_survival(
    grade,
    infiltration,
    age,
    *,
    seed: int = 0,
    null: bool = False,
    model: HazardModel | None = None,
    baseline_log_hr: np.ndarray | None = None,
) -> pd.DataFrame:
    """Draw survival times for given covariates, without drawing any image.

    Parameters
    ----------
    grade, infiltration, age
        One value per patient (array-likes of equal length).
    seed
        Seed of the event and censoring times.
    null
        Remove the grade and infiltration effects (see :meth:`HazardModel.null`).
    model
        Coefficients; the documented defaults when ``None``.
    baseline_log_hr
        Per patient, a log multiplier of the baseline hazard (a site's own baseline: case
        mix, era, treatment); added to ``eta`` and kept even with ``null=True``.

    Returns
    -------
    DataFrame
        ``time`` (months, > 0), ``event`` (1 = death observed, 0 = censored),
        ``linear_predictor`` (``eta`` under the model actually used, site term included).
    """
    model = model or HazardModel()
    if null:
        model = model.null()
    grade = np.asarray(grade)
    n = grade.shape[0]
    if not (len(np.asarray(infiltration)) == len(np.asarray(age)) == n):
        raise ValueError("grade, infiltration and age must have the same length")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EB]))
    eta = linear_predictor(grade, infiltration, age, model)
    if baseline_log_hr is not None:
        eta = eta + np.asarray(baseline_log_hr, dtype=float).reshape(n)
    event_time = model.scale * (rng.exponential(size=n) / np.exp(eta)) ** (1 / model.shape)
    censor = np.minimum(rng.exponential(model.censor_mean, size=n), model.admin_time)
    time = np.maximum(np.minimum(event_time, censor), 0.1)
    return pd.DataFrame(
        {
            "time": np.round(time, 2),
            "event": (event_time <= censor).astype(int),
            "linear_predictor": eta,
        }
    )


#: Log hazard ratio between the highest- and lowest-risk site (their baselines differ by
#: ``exp(1.2)`` ~ 3.3x): sites spread evenly over ``[-0.6, 0.6]``.
SITE_LOG_HR_SPREAD = 1.2


def site_names(k: int) -> list[str]:
    """Names of ``k`` sites: ``"A"``, ``"B"`` … (at most 26)."""
    if not 1 <= int(k) <= 26:
        raise ValueError(f"sites must be between 1 and 26, got {k!r}")
    return [chr(ord("A") + i) for i in range(int(k))]


def draw_sites(k: int, *, seed: int = 0) -> list[dict]:
    """Draw ``k`` sites: each a stain (H and E colours and strengths) and a baseline hazard.

    Each site's haematoxylin and eosin optical-density colours are the standard ones turned
    by up to about 12 degrees (another lab's dyes, fixation and scanner), with strengths
    ``exp(N(0, 0.18))``; so slides of one site share a tint that a colour feature picks up.
    Baseline log-hazards are evenly spaced over ``[-0.6, 0.6]`` (:data:`SITE_LOG_HR_SPREAD`)
    in a random order, so site is associated with outcome but with nothing in the tissue.

    Parameters
    ----------
    k
        Number of sites (>= 1).
    seed
        Seed of the colours, strengths and the order of the baseline hazards.

    Returns
    -------
    list of dict
        ``site``, ``stain_vectors`` (2 x 3, rows H and E), ``stain_scale`` (h, e),
        ``log_hazard``.
    """
    from workbench.datasets._render import _EOSIN, _HEMATOXYLIN

    names = site_names(k)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x517E5]))
    half = SITE_LOG_HR_SPREAD / 2
    log_hr = np.linspace(-half, half, len(names)) if len(names) > 1 else np.zeros(1)
    log_hr = rng.permutation(log_hr)
    out = []
    for i, name in enumerate(names):
        vectors = []
        for base in (_HEMATOXYLIN, _EOSIN):
            v = base.astype(np.float64) + rng.normal(0.0, 0.12, size=3)
            v = np.clip(v, 0.03, None)
            vectors.append(v / np.linalg.norm(v))
        scale = np.exp(rng.normal(0.0, 0.18, size=2))
        out.append(
            {
                "site": name,
                "stain_vectors": np.round(np.asarray(vectors), 5).tolist(),
                "stain_scale": np.round(scale, 4).tolist(),
                "log_hazard": round(float(log_hr[i]), 5),
            }
        )
    return out


def simulate_patients(
    n_patients: int,
    *,
    seed: int = 0,
    null: bool = False,
    model: HazardModel | None = None,
    sites: int | None = None,
) -> pd.DataFrame:
    """Draw the patients of a cohort: covariates, survival and per-slide seeds.

    Grades cycle 1, 2, 3 and are then shuffled, so every grade is (nearly) equally common.
    Infiltration is uniform on ``INFILTRATION_RANGE`` and independent of grade; age is
    normal (mean 62, SD 10, clipped to 30-90). Nothing here draws pixels, so large cohorts
    are cheap (use it to check what a survival analysis can recover).

    With ``sites=k`` every patient also comes from one of ``k`` sites (balanced: cycled,
    then shuffled, from a random stream of its own, so the other columns are the same as
    without sites), and the site's baseline log-hazard (:func:`draw_sites`) is added to
    ``eta``: site is then associated with survival, also in a ``null`` cohort.

    Parameters
    ----------
    n_patients
        Number of patients (one slide each).
    seed
        Seed of everything drawn.
    null
        Remove the grade and infiltration effects on survival (see :meth:`HazardModel.null`).
    model
        Coefficients; the documented defaults when ``None``.
    sites
        Number of sites to deal patients to (see :func:`draw_sites`); ``None`` for none.

    Returns
    -------
    DataFrame
        ``patient_id`` (``P000``), ``slide_id`` (``S000``), ``grade``, ``infiltration``,
        ``age``, ``slide_seed``, ``time``, ``event``, ``linear_predictor``; with sites also
        ``site`` and ``site_log_hazard``.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0407]))
    grade = rng.permutation(np.resize(np.array([1, 2, 3]), n_patients))
    infiltration = np.round(rng.uniform(*INFILTRATION_RANGE, size=n_patients), 4)
    age = np.clip(np.round(rng.normal(62, 10, size=n_patients)), 30, 90).astype(int)
    slide_seed = rng.integers(0, 2**31 - 1, size=n_patients)
    width = max(3, len(str(n_patients - 1)))
    table = pd.DataFrame(
        {
            "patient_id": [f"P{i:0{width}d}" for i in range(n_patients)],
            "slide_id": [f"S{i:0{width}d}" for i in range(n_patients)],
            "grade": grade.astype(int),
            "infiltration": infiltration,
            "age": age,
            "slide_seed": slide_seed.astype(np.int64),
        }
    )
    site_hr = None
    if sites is not None:
        drawn = draw_sites(sites, seed=seed)
        site_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x517E]))
        index = site_rng.permutation(np.resize(np.arange(len(drawn)), n_patients))
        table["site"] = [drawn[i]["site"] for i in index]
        site_hr = np.asarray([drawn[i]["log_hazard"] for i in index], dtype=float)
        table["site_log_hazard"] = site_hr
    surv = simulate_survival(
        grade, infiltration, age, seed=seed, null=null, model=model, baseline_log_hr=site_hr
    )
    return pd.concat([table, surv], axis=1)
