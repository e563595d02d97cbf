"""Training the slide models on a cohort's own label column.

:class:`SlideTrainer` fits any of the three models on any :class:`~workbench.io.Cohort`: a
clinical column as the slide label (binary or multi-class, strings or integers), lesion
annotations where the cohort has them (they supervise regions and magnified crops; without
them the detail branch learns from the slide label alone), a stratified validation split by
patient with early stopping and temperature scaling of the probabilities, or (repeated) k-fold
cross-validation with pooled out-of-fold figures, class weights against imbalance, stain
normalisation stored with the model and stain augmentation, and a pluggable tile encoder.
Slides are read once through the engine (:mod:`workbench.tl._engine`) and every epoch trains on
the cached tensors. The split rules are in :mod:`workbench.tl._cv`, the calibration in
:mod:`workbench.tl._calibration`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._errors import ClinicalTableError, OptionError, SplitWarning
from workbench.tl._calibration import (
    expected_calibration_error,
    fit_temperature,
    softmax_with_temperature,
)
from workbench.tl._cv import (
    ON_CONFLICT,
    OOF_FILE,
    check_folds,
    check_holdout,
    conflict_error,
    conflicting_patients,
    holdout_split,
    make_folds,
    pooled_summary,
)
from workbench.tl._engine import (
    CropReader,
    read_tiles,
    settings_of,
    suggest_settings,
    tissue_grid,
)
from workbench.tl._engine import prepare_cohort as _prepare_cohort

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from workbench.io import Cohort

logger = logging.getLogger(__name__)

CLASS_WEIGHTS = ("balanced", None)
STAIN_METHODS = ("macenko", "reinhard")
#: Share of a fold's training patients held out for early stopping when ``validation`` is unset.
INNER_VALIDATION = 0.2
#: Stain augmentation used when ``augment=True``.
DEFAULT_AUGMENT = {"sigma": 0.05, "bias": 0.02}


# ----------------------------------------------------------------------------- labels
def encode_labels(values: pd.Series, classes: Sequence | None = None) -> tuple[np.ndarray, list]:
    """Class indices of label values, and the class list (index order).

    Classes default to the sorted distinct values (numbers numerically, text
    alphabetically); ``classes`` fixes their order (for a binary task the last one is the
    positive class) and must contain every value.
    """
    distinct = list(dict.fromkeys(values.tolist()))
    if classes is None:
        try:
            classes = sorted(distinct)
        except TypeError:
            classes = sorted(distinct, key=str)
    classes = list(classes)
    lookup = {str(c): i for i, c in enumerate(classes)}
    if len(lookup) != len(classes):
        raise ClinicalTableError(f"classes must be distinct, got {classes}")
    unknown = sorted({str(v) for v in distinct} - set(lookup))
    if unknown:
        raise ClinicalTableError(
            f"label value(s) {unknown} are not among the classes {[str(c) for c in classes]}"
        )
    return np.asarray([lookup[str(v)] for v in values], dtype=np.int64), classes


def _patient_split(y, groups, n_splits: int, seed: int):
    """Stratified folds over patients (a patient's slides stay together)."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y)
    counts = np.bincount(y)
    n_splits = int(min(n_splits, counts[counts > 0].min(), len(set(groups))))
    if n_splits < 2:
        raise ClinicalTableError(
            "too few slides per class to hold some out: every class needs at least two "
            f"patients (class counts {counts.tolist()})"
        )
    with warnings.catch_warnings():  # sklearn warns when a class is rare; we checked above
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))


def classification_metrics(y: np.ndarray, probs: np.ndarray) -> dict:
    """AUC (one-vs-rest macro for several classes), accuracy and balanced accuracy.

    Parameters
    ----------
    y
        ``(n,)`` true class indices.
    probs
        ``(n, n_classes)`` predicted class probabilities.

    Returns
    -------
    dict
        ``auc`` (``None`` when a class is missing from ``y``), ``accuracy`` and
        ``balanced_accuracy`` (of the most probable class).
    """
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    y = np.asarray(y, dtype=int)
    probs = np.asarray(probs, dtype=float)
    pred = probs.argmax(1)
    auc = None
    if len(set(y.tolist())) == probs.shape[1]:
        auc = float(
            roc_auc_score(y, probs[:, 1])
            if probs.shape[1] == 2
            else roc_auc_score(y, probs, multi_class="ovr", labels=list(range(probs.shape[1])))
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        bacc = float(balanced_accuracy_score(y, pred))
    return {"auc": auc, "accuracy": float((pred == y).mean()), "balanced_accuracy": bacc}


def _cross_entropy(y: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(np.asarray(probs)[np.arange(len(y)), np.asarray(y, dtype=int)], 1e-7, 1.0)
    return float(-np.log(p).mean())


# ----------------------------------------------------------------------------- trainer
@dataclass
class SlideTrainer:
    """Train a slide model on a cohort's label column: a fitted object in the lifelines manner.

    Parameters
    ----------
    kind
        A registered model kind (:data:`workbench.models.MODEL_KINDS`): ``"sew"``
        (:class:`~workbench.models.SelfCalibratedModel`), ``"global"``
        (:class:`~workbench.models.GlobalOnly`), ``"abmil"``
        (:class:`~workbench.models.TileABMIL`) or one added with
        :func:`~workbench.models.register_kind`. What the slides are read for (crops, tiles,
        an encoder) follows the kind's class attributes.
    label
        The clinical column to learn (any values: strings or integers, two or more classes).
    classes
        Class order (default: sorted values); for two classes the last is the positive one
        (its probability is the one AUC and reports use).
    epochs, lr, seed, device, consistency, progress
        Passed to :class:`~workbench.models.Trainer` (``epochs`` is the most; early stopping
        may end sooner).
    validation
        Share of patients held out (stratified by label, a patient's slides together): 1 in
        ``round(1 / validation)`` patients of every class. Training stops early after
        ``patience`` epochs without a lower validation loss (the best epoch's weights kept),
        the temperature of the probabilities is fitted on these patients (``calibrate``) and
        their metrics are in ``validation_``. **The final model is then fit on the training
        part only** (``final_model_["fit_on"] == "training part"``), unless ``refit``. A share
        that the patients cannot give (a class with fewer than ``round(1 / validation)``
        patients) raises :class:`~workbench.OptionError` naming the counts. ``None``: no split.
    folds
        k-fold cross-validation by patient before the final fit: exactly ``k`` stratified
        folds (too few patients raises :class:`~workbench.OptionError`; a fold holding fewer
        than two slides or patients of a class gives a :class:`~workbench.SplitWarning`). Each
        fold's model stops early on an inner split of its own training patients (``validation``
        of them, else 20 %), never on its test fold, and fits its own temperature there.
        Results: the per-fold table ``cv_``, the out-of-fold predictions ``oof_`` and the
        pooled figures with a patient-bootstrap interval ``cv_summary_``. Without
        ``validation`` the final model is fit on all patients for the median of the folds'
        early-stopped epochs, its temperature fitted on the pooled out-of-fold logits.
    repeats
        Repeated cross-validation: the ``folds`` are drawn ``repeats`` times with different
        seeds (every slide predicted once per repeat); pooled figures are averaged over repeats.
    refit
        With ``validation``: after early stopping, fit the final model again on *all*
        patients for the best epoch count (no early stopping), keeping the temperature fitted
        on the held-out patients (``final_model_["fit_on"] == "all patients"``).
    calibrate
        Fit a temperature (:func:`~workbench.tl.fit_temperature`) on held-out patients; stored
        in the checkpoint (``extra["calibration"]``) and applied by :func:`~workbench.tl.extract`.
    on_conflict
        A patient whose slides carry different labels cannot sit on one side of a split: with
        ``validation`` or ``folds``, ``"raise"`` refuses (:class:`~workbench.ClinicalTableError`
        naming them), ``"drop"`` leaves their slides out and logs a warning naming them
        (``dropped_patients_``).
    n_boot
        Bootstrap resamples of the patients for the interval of the pooled out-of-fold AUC.
    patience
        Epochs without a lower validation loss before stopping.
    class_weight
        ``"balanced"`` (slide loss weighted by inverse class frequency) or ``None``.
    label_smoothing
        ``ε`` in ``[0, 1)``: the slide loss aims at ``1 - ε/2`` for a slide's class instead
        of 1 (two classes; :func:`~workbench.models.slide_loss`), so the logit margins the
        model learns stay bounded and its probabilities on new slides less extreme. Applies
        to every model fit (folds, final, refit); stored in the checkpoint
        (``extra["label_smoothing"]``). A temperature fitted afterwards (``calibrate``)
        still corrects what remains. Not for ``target="survival"``.
    stain
        Stain normalisation: ``None``, ``"macenko"`` or ``"reinhard"`` (fitted on thumbnails
        and tissue tiles of up to eight training slides), or a fitted
        :class:`~workbench.pp.StainNormalizer`. Applied to thumbnails, crops and tiles; stored
        with the model, so :func:`~workbench.tl.extract` applies the same normalisation.
    augment
        Stain augmentation of crops and tiles during training: ``True`` (HED jitter,
        ``DEFAULT_AUGMENT``), ``False``, or ``{"sigma": …, "bias": …}``.
    encoder
        Tile encoder of the detail branch (``"sew"``) or of the tiles (``"abmil"``): ``None``
        for the built-in compact network, a ``.pt2`` file, or any ``torch.nn.Module`` (see
        :func:`~workbench.models.load_encoder`). A frozen encoder's embeddings are computed
        once per crop and cached; crops are read at its ``mpp`` and ``input_size`` unless
        ``settings`` say otherwise.
    use_annotations
        Use the cohort's lesion annotations where it has them.
    n_candidates, max_tiles
        Crops cached per slide; tiles kept per slide for the tile baseline.
    settings
        Preprocessing overrides (``thumbnail_mpp``, ``n_segments``, ``detail_mpp``,
        ``crop_size`` …); stored with the model.
    model_kwargs
        Extra model constructor arguments (``hidden``, ``detail_width`` …).
    target
        ``"class"`` (learn the ``label`` column) or ``"survival"``: learn a Cox risk score
        from the ``time_key``/``event_key`` columns (kinds ``"sew"``, ``"global"`` and
        ``"abmil"``). The model is then built with ``n_classes=1``: its single output,
        global + detail for ``"sew"``, is the slide risk (log relative hazard; **higher risk = shorter
        survival**), trained with :func:`~workbench.models.cox_partial_likelihood` against
        the whole training set's risk set (:class:`~workbench.models.RiskSetMemory`: one
        optimiser step per slide, the other patients' latest risks held, so no step lacks
        events). A patient's risk is the mean of its slides' risks. With ``validation`` the
        held-out patients (stratified by event) stop training early on their Harrell's C
        (``1 - C`` is the watched ``val_loss``); ``validation_`` holds their C and risks.
        The focus is back-calibrated on the detail branch's risk; the consistency loss is
        unchanged. With ``folds`` the patients are split in folds stratified by event; each
        fold stops early on an inner split of its own training patients (never its test
        fold) and the final model is fit on all patients for the median early-stopped epochs.
        ``refit`` (with ``validation``) fits the final model again on all patients for the
        epoch count early stopping chose on the held-out patients, as for a class target
        (``validation_`` keeps the held-out figures of the early-stopped model).
        ``cv_`` then holds per fold ``harrell_c``, ``uno_c`` (IPCW, the censoring
        distribution of the fold's training part, truncated at ``tau``: see
        :func:`~workbench.tl.uno_concordance`), their patient-bootstrap intervals
        ``harrell_c_ci``/``uno_c_ci``, ``n_test_events`` and ``epochs``; ``oof_`` one row
        per patient and repeat (``patient``, ``fold``, ``repeat``, ``time``, ``event``,
        ``risk``, ``train_cut``: the median risk the fold's model gives the patients it was
        fit on, the fold's own risk-group cut); ``cv_summary_`` the pooled out-of-fold ``harrell_c`` with
        ``harrell_c_ci`` and the folds' mean ``uno_c_mean_of_folds``. A fold whose training
        part has no event or fewer than 2 patients is refused
        (:class:`~workbench.OptionError`). Kind ``"abmil"`` is the tile ABMIL-Cox peer: the
        same Cox loss and risk set on its attention-pooled tile risk. Not for survival:
        temperature calibration.
    time_key, event_key
        Survival columns of the clinical table: follow-up time (any unit, > 0) and event
        (1 observed, 0 censored).
    ties
        Tied event times in the Cox loss: ``"efron"`` or ``"breslow"``.

    Attributes
    ----------
    model_
        The trained model.
    history_
        Per-epoch losses and accuracy (and validation numbers).
    classes_
        The class values, in index order (``model_.config["class_names"]`` as text).
    samples_
        The cached slides the final model was trained on.
    validation_
        With ``validation``: held-out slides, their metrics and loss at the best epoch.
    calibration_
        The temperature record (``method``, ``temperature``, ``status``, ``n``,
        ``nll_before``, ``nll_after``, ``ece_before``, ``ece_after``, ``fitted_on``) or
        ``None`` (then ``T = 1``); also set on ``model_.calibration_``.
    final_model_
        How the final model was fit: ``fit_on`` (``"training part"`` or ``"all patients"``),
        ``slides``, ``patients``, ``epochs``, ``early_stopping``.
    cv_
        With ``folds``: a DataFrame, one row per fold and repeat (``repeat``, ``fold``,
        ``n_train``, ``n_inner_validation``, ``n_test``, ``n_test_patients``, ``epochs``,
        ``temperature``, ``calibration`` (the fold's temperature status: ``fitted``,
        ``separable``, ``too_few`` or ``none``), ``auc``, ``accuracy``, ``balanced_accuracy``,
        ``test_slides``, ``inner_validation_slides``), or ``None``.
    oof_
        With ``folds``: the out-of-fold predictions, one row per slide and repeat:
        ``patient``, ``slide``, ``repeat``, ``fold``, ``label`` (the class value),
        ``probability`` (calibrated; the positive class for two classes, the top class for
        more), ``raw_probability`` (the same before temperature scaling), ``predicted``, and
        for more than two classes ``prob_<class>`` columns. :meth:`save` writes it as
        ``oof_predictions.csv``.
    cv_summary_
        With ``folds``: pooled out-of-fold figures (:func:`workbench.tl._cv.pooled_summary`:
        ``auc``, ``auc_ci``, ``balanced_accuracy``, ``balanced_accuracy_ci``, ``accuracy``,
        ``auc_by_repeat``) plus ``ece``/``ece_raw`` of the calibrated and raw
        out-of-fold probabilities, ``folds``, ``repeats``, ``n_slides``, ``n_patients``.
    dropped_patients_
        Patients left out for conflicting labels (``on_conflict="drop"``).
    held_out_slides_
        Slides of the cohort that :meth:`fit` was told to leave out (``slide_ids=``), in
        cohort order: e.g. a test split made outside the trainer. Saved with the model.
    """

    kind: str = "sew"
    label: str | None = None
    classes: Sequence | None = None
    epochs: int = 30
    lr: float = 2e-3
    seed: int = 0
    device: str | None = None
    consistency: bool = True
    validation: float | None = None
    folds: int | None = None
    repeats: int = 1
    refit: bool = False
    calibrate: bool = True
    on_conflict: str = "raise"
    n_boot: int = 1000
    patience: int = 5
    class_weight: str | None = "balanced"
    label_smoothing: float = 0.0
    stain: Any = None
    augment: bool | Mapping = True
    encoder: Any = None
    use_annotations: bool = True
    n_candidates: int = 8
    max_tiles: int = 256
    progress: bool = True
    settings: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)
    target: str = "class"
    time_key: str = "time"
    event_key: str = "event"
    ties: str = "efron"

    def __post_init__(self) -> None:
        self._kind_class()  # an unknown kind fails here, naming the registered ones
        if self.target not in TARGETS:
            raise OptionError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.target == "survival":
            if self.kind not in SURVIVAL_KINDS:
                raise ValueError(
                    f"target='survival' trains the kinds {SURVIVAL_KINDS}, not {self.kind!r}"
                )
            if self.ties not in ("efron", "breslow"):
                raise OptionError(f"ties must be 'efron' or 'breslow', got {self.ties!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weight must be one of {CLASS_WEIGHTS}, got {self.class_weight!r}"
            )
        try:
            smoothing = float(self.label_smoothing)
        except (TypeError, ValueError):
            smoothing = float("nan")
        if not 0.0 <= smoothing < 1.0:
            raise OptionError(
                f"label_smoothing must be a number in [0, 1) (e.g. 0.1), got "
                f"{self.label_smoothing!r}"
            )
        if smoothing and self.target == "survival":
            raise OptionError("label_smoothing is for a class label, not target='survival'")
        self.label_smoothing = smoothing
        if isinstance(self.stain, str) and self.stain not in STAIN_METHODS:
            raise ValueError(
                f"stain must be None, one of {STAIN_METHODS} or a fitted StainNormalizer"
            )
        if self.validation is not None and not 0.0 < float(self.validation) < 1.0:
            raise ValueError(
                f"validation must be a share of patients in (0, 1), got {self.validation}"
            )
        if self.folds is not None and int(self.folds) < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if int(self.repeats) < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}")
        if int(self.repeats) > 1 and self.folds is None:
            raise ValueError("repeats repeats the cross-validation: give folds too")
        if self.on_conflict not in ON_CONFLICT:
            raise ValueError(f"on_conflict must be one of {ON_CONFLICT}, got {self.on_conflict!r}")
        if self.refit and self.validation is None:
            raise ValueError(
                "refit refits on all patients after a validation split: give validation"
            )
        if int(self.n_boot) < 0:
            raise ValueError(f"n_boot must be 0 or more, got {self.n_boot}")
        if int(self.epochs) < 1 or int(self.patience) < 1:
            raise ValueError("epochs and patience must be at least 1")

    def __repr__(self) -> str:
        if hasattr(self, "model_"):
            state = f"fitted on {len(self.samples_)} slides, classes {self.classes_}"
            if getattr(self, "validation_", None) and self.target == "survival":
                state += f", validation C {self.validation_.get('c_index')}"
            elif getattr(self, "validation_", None):
                state += f", validation AUC {self.validation_.get('auc')}"
        else:
            state = "not fitted"
        return (
            f"SlideTrainer(kind={self.kind!r}, label={self.label!r}, epochs={self.epochs}, "
            f"consistency={self.consistency}; {state})"
        )

    # ------------------------------------------------------------------------ pieces
    def _kind_class(self):
        """The model class of ``kind`` (from the registry of kinds)."""
        from workbench.models import MODEL_KINDS, model_kind

        if self.kind not in MODEL_KINDS:
            raise OptionError(f"kind must be one of {tuple(MODEL_KINDS)}, got {self.kind!r}")
        return model_kind(self.kind)

    def _augment(self) -> dict | None:
        if self.augment is True:
            return dict(DEFAULT_AUGMENT)
        if not self.augment:
            return None
        return dict(self.augment)

    def _settings(self, cohort: Cohort, encoder) -> dict:
        pre = dict(self.settings)
        if encoder is not None:
            pre.setdefault("detail_mpp", float(encoder.mpp))
            pre.setdefault("crop_size", int(encoder.input_size))
        if "thumbnail_mpp" not in pre:
            first = cohort.slide_ids[0]
            with cohort.open(first) as slide:
                pre = {**suggest_settings(slide), **pre}
        return pre

    def _fit_stain(self, cohort: Cohort, settings: dict):
        """The stain normaliser: given, or fitted on a sample of the training slides."""
        if self.stain is None:
            return None
        if not isinstance(self.stain, str):
            from workbench.tl._engine import stain_normalizer

            return stain_normalizer(self.stain)
        from workbench.pp import StainNormalizer

        rng = np.random.default_rng(self.seed)
        ids = cohort.slide_ids
        chosen = [ids[i] for i in sorted(rng.permutation(len(ids))[:8])]
        pre = settings_of(settings)
        images = []
        for sid in chosen:
            with cohort.open(sid) as slide:
                images.append(slide.thumbnail(mpp=float(pre["thumbnail_mpp"])))
                xy = tissue_grid(slide, pre)
                if len(xy):
                    pick = xy[np.sort(rng.permutation(len(xy))[:4])]
                    size = int(pre["crop_size"])
                    images.extend(read_tiles(slide, pick, mpp=float(pre["detail_mpp"]), size=size))
        norm = StainNormalizer(method=self.stain).fit(images)
        logger.info(
            "SlideTrainer: %r fitted on %d images of %d slides", norm, len(images), len(chosen)
        )
        return norm

    def _build(self, in_features: int, n_classes: int, settings: dict, encoder):
        from workbench.pp import feature_names

        pre = {**settings_of(settings), "feature_names": list(feature_names())}
        kw: dict[str, Any] = {
            "preprocessing": pre,
            "class_names": [str(c) for c in self.classes_],
            "n_classes": n_classes,
            "label": self.label,
        }
        kw.update(self.model_kwargs)
        cls = self._kind_class()
        if not cls.takes_encoder:
            return cls.for_training(in_features=in_features, **kw)
        spec = encoder.spec() if encoder is not None else None
        model = cls.for_training(in_features=in_features, encoder=spec, **kw)
        if encoder is not None:
            model.attach_encoder(encoder)
        return model

    def _class_weights(self, y: np.ndarray, n_classes: int):
        if self.class_weight is None:
            return None
        counts = np.bincount(y, minlength=n_classes).astype(float)
        if (counts == 0).any():
            missing = [str(self.classes_[i]) for i in np.flatnonzero(counts == 0)]
            raise ClinicalTableError(f"no training slide of class(es) {missing}")
        return (len(y) / (n_classes * counts)).tolist()

    def _readers(self, samples, cohort: Cohort | None, settings: dict, encoder) -> list | None:
        """Crop readers for choosing focus regions freely on held-out slides (kinds that read
        crops)."""
        if "crops" not in self._kind_class().reads or cohort is None:
            return None
        return [
            CropReader(
                cohort.slide_path(s.name),
                s.node_xy.numpy(),
                settings,
                mpp=cohort.mpp_of(s.name),
                encoder=encoder,
            )
            for s in samples
        ]

    def _train_one(
        self,
        train,
        held,
        readers,
        settings: dict,
        encoder,
        n_classes: int,
        *,
        epochs: int | None = None,
        tag: str = "",
    ):
        """One model on ``train``; early stopping on ``held`` when given. Returns the trainer."""
        import torch

        from workbench.models import Trainer, predict_samples

        torch.manual_seed(self.seed)
        model = self._build(train[0].features.shape[1], n_classes, settings, encoder)
        y_train = np.asarray([s.label for s in train])
        validate = None
        if held:
            y_held = np.asarray([s.label for s in held])

            def validate(m):
                probs = predict_samples(m, held, crop_sources=readers)
                return {
                    "loss": _cross_entropy(y_held, probs),
                    **_finite(classification_metrics(y_held, probs)),
                }

        n_epochs = int(epochs or self.epochs)
        where = f"{tag} " if tag else ""

        def on_epoch(record: dict) -> None:
            line = (
                f"{where}epoch {record['epoch']}/{n_epochs}: loss {record['loss']:.3f}, "
                f"training accuracy {record['accuracy']:.2f}"
            )
            if "val_loss" in record:
                line += f", validation loss {record['val_loss']:.3f}"
                if "val_auc" in record:
                    line += f", validation AUC {record['val_auc']:.3f}"
            logger.info(line)

        return Trainer(
            model,
            epochs=n_epochs,
            lr=self.lr,
            seed=self.seed,
            device=self.device,
            consistency=self.consistency,
            class_weights=self._class_weights(y_train, n_classes),
            label_smoothing=self.label_smoothing,
            augment=self._augment(),
            patience=self.patience if held else None,
            progress=self.progress,
        ).fit(train, validate=validate, on_epoch=on_epoch)

    def _temperature(
        self, model, held, readers, *, fitted_on: str, warn: bool = True
    ) -> dict | None:
        """Fit the temperature on held-out slides; the record (or ``None`` when not asked)."""
        from workbench.models import predict_samples

        if not self.calibrate or not held:
            return None
        y = np.asarray([s.label for s in held])
        logits = predict_samples(model, held, crop_sources=readers, return_logits=True)
        return _calibration_record(logits, y, fitted_on=fitted_on, warn=warn)

    # ------------------------------------------------------------------------ fit
    def fit(
        self,
        cohort: Cohort | None = None,
        *,
        slide_ids: Sequence[str] | None = None,
        samples: list | None = None,
        survival: tuple | None = None,
    ) -> SlideTrainer:
        """Train on a cohort (read here) or on already prepared ``samples``; returns ``self``.

        Every split asked for is checked before any slide is read.

        Parameters
        ----------
        cohort
            A :class:`~workbench.io.Cohort` (``label`` must name one of its clinical columns).
        slide_ids
            Train on these slides only (default: all of the cohort).
        samples
            Prepared :class:`~workbench.models.SlideSample` (labels already class indices;
            ``classes`` names them; each slide its own patient), instead of a cohort.
        survival
            With ``samples`` and ``target="survival"``: ``(time, event)``, one entry per
            sample.

        Returns
        -------
        SlideTrainer
            ``self``, with ``model_``, ``history_``, ``calibration_``, ``final_model_``,
            ``validation_`` and, with ``folds``, ``cv_``, ``oof_`` and ``cv_summary_``.

        Raises
        ------
        ClinicalTableError
            The label column is missing, has empty values or one class; with a split, a
            patient carries conflicting labels (``on_conflict="raise"``).
        OptionError
            The patients cannot give the validation share or the folds asked for (the
            message names the counts).
        EncoderError
            The encoder cannot be loaded.
        """
        from workbench.models import load_encoder

        if self.target == "survival":
            return self._fit_survival(
                cohort, slide_ids=slide_ids, samples=samples, survival=survival
            )
        if survival is not None:
            raise ValueError("survival= is for target='survival'")
        split = self.validation is not None or self.folds is not None
        self.dropped_patients_ = []
        self.held_out_slides_ = []
        if samples is None:
            if cohort is None:
                raise ValueError("give a cohort or prepared samples")
            if self.label is None:
                raise ClinicalTableError(
                    "say which clinical column to learn: SlideTrainer(label='<column>'); the "
                    f"table has {[c for c in cohort.clinical.columns if c != cohort.slide_key]}"
                )
            cohort = self._leave_out(cohort, slide_ids)
            values = cohort.labels(self.label)
            if split:
                cohort, values = self._resolve_conflicts(cohort, values)
            y, self.classes_ = encode_labels(values, self.classes)
            self._check_splits(y, [cohort.patient_of(s) for s in cohort.slide_ids])
            encoder = load_encoder(self.encoder) if self._kind_class().takes_encoder else None
            samples, settings = self._prepare(
                cohort, dict(zip(cohort.slide_ids, y.tolist(), strict=True)), encoder
            )
            patients = [cohort.patient_of(s.name) for s in samples]
        else:
            if not samples:
                raise ValueError("no training slides")
            settings = dict(self.settings)
            n = max(int(s.label) for s in samples) + 1
            self.classes_ = (
                list(self.classes) if self.classes is not None else list(range(max(n, 2)))
            )
            patients = [s.name or str(i) for i, s in enumerate(samples)]
            self._check_splits(np.asarray([s.label for s in samples]), patients)
            encoder = load_encoder(self.encoder) if self._kind_class().takes_encoder else None
            cohort = None
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ClinicalTableError("training needs at least two classes")
        self.cv_ = self.oof_ = self.cv_summary_ = None
        if self.folds is not None:
            self._cross_validate(samples, patients, cohort, settings, encoder, n_classes)
        self._fit_final(samples, patients, cohort, settings, encoder, n_classes)
        self.applicability_ = self._applicability_record(cohort)
        self.model_.applicability_ = self.applicability_
        logger.info("SlideTrainer: %r", self)
        return self

    def _leave_out(self, cohort: Cohort, slide_ids) -> Cohort:
        """``cohort`` restricted to ``slide_ids`` (all when ``None``); the slides left out are
        recorded in ``held_out_slides_``."""
        if slide_ids is None:
            return cohort
        everything = cohort.slide_ids
        cohort = cohort.subset(slide_ids)
        kept = set(cohort.slide_ids)
        self.held_out_slides_ = [s for s in everything if s not in kept]
        return cohort

    def _prepare(self, cohort: Cohort, labels: dict, encoder) -> tuple[list, dict]:
        """The cohort's cached slides and the settings they were read with (the stain
        normaliser fitted on the cohort included); ``labels``: slide id -> class index."""
        settings = self._settings(cohort, encoder)
        norm = self._fit_stain(cohort, settings)
        if norm is not None:
            settings["stain"] = norm.to_dict()
        reads = self._kind_class().reads
        samples = _prepare_cohort(
            cohort,
            labels,
            settings=settings,
            use_annotations=self.use_annotations,
            tiles="tiles" in reads,
            # A tile kind reads candidate crops too: its seeded tile subset follows them,
            # so results stay those of earlier versions.
            n_candidates=self.n_candidates if reads else 0,
            max_tiles=self.max_tiles,
            encoder=encoder if encoder is not None and encoder.frozen else None,
            seed=self.seed,
            progress=self.progress,
        )
        return samples, settings

    # ------------------------------------------------------------------------ survival
    def _fit_survival(self, cohort, *, slide_ids, samples, survival) -> SlideTrainer:
        """``fit`` for ``target="survival"`` (see the class docstring)."""
        from workbench.models import load_encoder

        self.dropped_patients_, self.held_out_slides_ = [], []
        self.cv_ = self.oof_ = self.cv_summary_ = None
        self.classes_ = ["risk"]
        encoder = load_encoder(self.encoder) if self._kind_class().takes_encoder else None
        if samples is None:
            if cohort is None:
                raise ValueError("give a cohort or prepared samples")
            cohort = self._leave_out(cohort, slide_ids)
            ids = cohort.slide_ids
            time, event = survival_columns(cohort.clinical, self.time_key, self.event_key, ids)
            patients = [cohort.patient_of(s) for s in ids]
            self._check_survival_split(event, patients)
            samples, settings = self._prepare(cohort, dict.fromkeys(ids, 0), encoder)
            where = {sid: i for i, sid in enumerate(ids)}
            order = [where[s.name] for s in samples]
            time, event = time[order], event[order]
            patients = [patients[i] for i in order]
        else:
            if not samples:
                raise ValueError("no training slides")
            if survival is None:
                raise ValueError("target='survival' with samples= needs survival=(time, event)")
            import pandas as pd

            table = pd.DataFrame({"time": survival[0], "event": survival[1]})
            if len(table) != len(samples):
                raise ValueError("survival=(time, event) needs one entry per sample")
            time, event = survival_columns(table, "time", "event", None)
            patients = [s.name or str(i) for i, s in enumerate(samples)]
            self._check_survival_split(event, patients)
            settings = dict(self.settings)
            cohort = None
        if self.folds is not None:
            self._cross_validate_survival(samples, patients, time, event, cohort, settings, encoder)
        train, held, readers = samples, [], None
        tr = np.arange(len(samples))
        if self.cv_ is not None and self.validation is None:
            epochs = int(np.median(self.cv_["epochs"].to_numpy(dtype=float)))
            epochs = max(1, min(epochs, int(self.epochs)))
            logger.info(
                "final model: all %d slides for %d epochs (median early-stopped epoch of the "
                "folds)",
                len(samples),
                epochs,
            )
            trainer = self._fit_all_survival(
                samples, patients, time, event, settings, encoder, epochs,
                "median early-stopped epoch of the folds",
            )  # fmt: skip
            self.validation_ = None
            self.best_epoch_ = trainer.best_epoch_
            return self._finish_survival(trainer, samples, settings, cohort)
        if self.validation is not None:
            tr, he = holdout_split(
                event, patients, float(self.validation), self.seed, classes=EVENT_CLASSES
            )
            train, held = [samples[i] for i in tr], [samples[i] for i in he]
            readers = self._readers(held, cohort, settings, encoder)
            held_p = [patients[i] for i in he]
            held_time, held_event = time[he], event[he]
        train_p = [patients[i] for i in tr]
        trainer = self._train_survival(
            train, train_p, time[tr], event[tr], settings, encoder,
            held=held, held_patients=held_p if held else None,
            held_time=held_time if held else None, held_event=held_event if held else None,
            readers=readers,
        )  # fmt: skip
        self.validation_ = None
        if held:
            risk = _slide_risks(trainer.model, held, readers)
            p_risk, p_time, p_event = patient_risks(risk, held_p, held_time, held_event)
            self.validation_ = {
                "slides": [s.name for s in held],
                "n_patients": len(p_risk),
                "n_events": int(p_event.sum()),
                "share": len(p_risk) / len(set(patients)),
                "c_index": concordance_index(p_time, p_risk, p_event),
                "best_epoch": trainer.best_epoch_,
                "predictions": [
                    {
                        "patient": p,
                        "slide": s.name,
                        "risk": float(r),
                        "time": float(t),
                        "event": int(e),
                    }
                    for p, s, r, t, e in zip(held_p, held, risk, held_time, held_event, strict=True)
                ],  # fmt: skip
            }
        self.history_ = trainer.history_
        self.best_epoch_ = trainer.best_epoch_
        self.final_model_ = {
            "fit_on": "training part" if held else "all patients",
            "slides": len(train),
            "patients": len(set(train_p)),
            "epochs": trainer.best_epoch_,
            "early_stopping": bool(held),
        }
        if self.refit and held:
            # The epoch count was chosen on the held-out patients; the final model now sees
            # every patient for that many epochs, without early stopping.
            epochs = max(1, int(trainer.best_epoch_ or self.epochs))
            logger.info("refit on all %d slides for %d epochs", len(samples), epochs)
            trainer = self._fit_all_survival(
                samples, patients, time, event, settings, encoder, epochs,
                "the early-stopped fit on the training part",
            )  # fmt: skip
            train = samples
        return self._finish_survival(trainer, train, settings, cohort)

    def _fit_all_survival(self, samples, patients, time, event, settings, encoder, epochs, why):
        """Train the final survival model on every patient for ``epochs`` (no early stopping);
        ``why`` says where the epoch count came from (recorded in ``final_model_``)."""
        trainer = self._train_survival(
            samples, patients, time, event, settings, encoder, held=[],
            held_patients=None, held_time=None, held_event=None, readers=None,
            epochs=epochs,
        )  # fmt: skip
        self.history_ = trainer.history_
        self.final_model_ = {
            "fit_on": "all patients",
            "slides": len(samples),
            "patients": len(set(patients)),
            "epochs": epochs,
            "early_stopping": False,
            "epochs_from": why,
        }
        return trainer

    def _finish_survival(self, trainer, train, settings, cohort) -> SlideTrainer:
        self.model_ = trainer.model.cpu().eval()
        self.calibration_ = None
        self.model_.calibration_ = None
        self.samples_ = train
        self.settings_ = settings
        self.applicability_ = self._applicability_record(cohort)
        self.model_.applicability_ = self.applicability_
        logger.info("SlideTrainer: %r", self)
        return self

    def _check_survival_split(self, event: np.ndarray, patients: list) -> None:
        if self.validation is not None:
            check_holdout(event, patients, float(self.validation), classes=EVENT_CLASSES)
        if self.folds is not None:
            check_folds(event, patients, int(self.folds), classes=EVENT_CLASSES)

    def _cross_validate_survival(
        self, samples, patients, time, event, cohort, settings, encoder
    ) -> None:
        """k-fold (repeated) cross-validation of the survival model by patient."""
        import pandas as pd
        from tqdm.auto import tqdm

        from workbench.tl._cv import (
            pooled_survival_summary,
            survival_fold_figures,
        )

        k, repeats = int(self.folds), int(self.repeats)
        inner = float(self.validation) if self.validation is not None else INNER_VALIDATION
        rows, oof = [], []
        bar = tqdm(total=k * repeats, desc="cross-validation", disable=not self.progress)
        for r in range(repeats):
            seed = self.seed + 1000 * r
            folds = make_folds(event, patients, k, seed, classes=EVENT_CLASSES, warn=False)
            for f, (tr, te) in enumerate(folds, start=1):
                tag = f"repeat {r + 1}/{repeats} fold {f}/{k}" if repeats > 1 else f"fold {f}/{k}"
                tr_p = [patients[i] for i in tr]
                _, tr_time, tr_event = patient_risks(np.zeros(len(tr)), tr_p, time[tr], event[tr])
                if len(tr_time) < 2 or tr_event.sum() == 0:
                    raise OptionError(
                        f"{tag}: its training part holds {len(tr_time)} patient(s) with "
                        f"{int(tr_event.sum())} event(s); a Cox model needs at least 2 patients "
                        "and one event. Ask for fewer folds or add patients with events"
                    )
                split = holdout_split(event[tr], tr_p, inner, seed + f, strict=False)
                fit_idx, held_idx = (tr, np.asarray([], int)) if split is None else (
                    tr[split[0]], tr[split[1]]
                )  # fmt: skip
                if split is None:
                    warnings.warn(
                        f"{tag}: the training part holds fewer than 2 patients with (or "
                        "without) an event, too few for an inner validation split; the fold "
                        f"trains all {self.epochs} epochs without early stopping",
                        SplitWarning,
                        stacklevel=3,
                    )
                train = [samples[i] for i in fit_idx]
                held = [samples[i] for i in held_idx]
                test = [samples[i] for i in te]
                readers = self._readers(held, cohort, settings, encoder) if held else None
                logger.info(
                    "%s: %d training slides, %d inner validation slides (early stopping), %d "
                    "test slides of %d patients",
                    tag, len(train), len(held), len(test), len({patients[i] for i in te}),
                )  # fmt: skip
                trainer = self._train_survival(
                    train, [patients[i] for i in fit_idx], time[fit_idx], event[fit_idx],
                    settings, encoder, held=held,
                    held_patients=[patients[i] for i in held_idx] if held else None,
                    held_time=time[held_idx] if held else None,
                    held_event=event[held_idx] if held else None, readers=readers,
                )  # fmt: skip
                risk = _slide_risks(
                    trainer.model, test, self._readers(test, cohort, settings, encoder)
                )
                te_p = [patients[i] for i in te]
                p_risk, p_time, p_event = patient_risks(risk, te_p, time[te], event[te])
                # the fold model's own cut: the median risk of the patients it was fit on (risk
                # scales differ between fold models, so held-out risks are cut fold by fold)
                fit_risk = _slide_risks(
                    trainer.model, train, self._readers(train, cohort, settings, encoder)
                )
                fit_p = [patients[i] for i in fit_idx]
                train_cut = float(
                    np.median(patient_risks(fit_risk, fit_p, time[fit_idx], event[fit_idx])[0])
                )
                figures = survival_fold_figures(
                    p_time, p_event, p_risk, tr_time, tr_event,
                    n_boot=int(self.n_boot), seed=self.seed + f + 1000 * r,
                )  # fmt: skip
                figures["harrell_c"] = concordance_index(p_time, p_risk, p_event)
                rows.append(
                    {
                        "repeat": r + 1,
                        "fold": f,
                        "n_train": len(train),
                        "n_inner_validation": len(held),
                        "n_test": len(test),
                        "n_test_patients": len(p_risk),
                        "n_test_events": int(p_event.sum()),
                        "epochs": trainer.best_epoch_,
                        **figures,
                        "test_slides": ";".join(s.name for s in test),
                        "inner_validation_slides": ";".join(s.name for s in held),
                    }
                )
                for p, t, e, v in zip(dict.fromkeys(te_p), p_time, p_event, p_risk, strict=True):
                    oof.append({"patient": str(p), "fold": f, "repeat": r + 1,
                                "time": float(t), "event": int(e), "risk": float(v),
                                "train_cut": train_cut})  # fmt: skip
                logger.info(
                    "%s done: Harrell's C %s, Uno's C %s, stopped at epoch %s of %d",
                    tag,
                    _fmt(figures["harrell_c"]),
                    _fmt(figures["uno_c"]),
                    trainer.best_epoch_,
                    self.epochs,
                )
                bar.update(1)
        bar.close()
        self.cv_ = pd.DataFrame(rows)
        self.oof_ = pd.DataFrame(oof)
        o = self.oof_
        summary = pooled_survival_summary(
            o["time"], o["event"], o["risk"], o["patient"], o["repeat"],
            n_boot=int(self.n_boot), seed=self.seed,
        )  # fmt: skip
        uno = [u for u in self.cv_["uno_c"] if u is not None and np.isfinite(u)]
        summary.update(
            {
                "uno_c_mean_of_folds": float(np.mean(uno)) if uno else None,
                "harrell_c_mean_of_folds": _mean_or_none(self.cv_["harrell_c"]),
                "folds": k,
                "repeats": repeats,
                "n_slides": len(samples),
                "n_patients": len(set(patients)),
                "n_events": int(o.drop_duplicates("patient")["event"].sum()),
                "inner_validation": inner,
            }
        )
        self.cv_summary_ = summary
        ci = summary["harrell_c_ci"]
        logger.info(
            "cross-validation (%d folds x %d repeats, %d patients): pooled out-of-fold "
            "Harrell's C %s%s; mean of the folds' Uno's C %s",
            k, repeats, len(set(patients)), _fmt(summary["harrell_c"]),
            "" if ci is None else f" (95% CI {ci[0]:.3f}-{ci[1]:.3f}, patients resampled)",
            _fmt(summary["uno_c_mean_of_folds"]),
        )  # fmt: skip

    def _train_survival(
        self, train, patients, time, event, settings, encoder, *, held, held_patients,
        held_time, held_event, readers, epochs=None,
    ):  # fmt: skip
        """One survival model on ``train``, stopping early on the held-out C-index."""
        import torch

        from workbench.models import RiskSetMemory, Trainer

        torch.manual_seed(self.seed)
        _, p_time, p_event = patient_risks(np.zeros(len(train)), patients, time, event)
        if p_event.sum() == 0:
            raise ClinicalTableError(
                f"no events ({self.event_key!r} = 1) among the training patients; a Cox model "
                "needs at least one"
            )
        order = {p: i for i, p in enumerate(dict.fromkeys(patients))}
        memory = RiskSetMemory(p_time, p_event, [order[p] for p in patients], ties=self.ties)
        model = self._build_risk_model(train[0].features.shape[1], settings, encoder)
        validate = None
        if held:

            def validate(m):
                risk = _slide_risks(m, held, readers)
                r, t, e = patient_risks(risk, held_patients, held_time, held_event)
                c = concordance_index(t, r, e)
                c = 0.5 if c is None else c
                return {"loss": 1.0 - c, "c_index": c}

        def on_epoch(record: dict) -> None:
            line = (
                f"epoch {record['epoch']}/{self.epochs}: Cox loss {record['loss']:.3f}, "
                f"training C {record['c_index']:.3f}"
            )
            if "val_c_index" in record:
                line += f", validation C {record['val_c_index']:.3f}"
            logger.info(line)

        return Trainer(
            model,
            epochs=int(epochs or self.epochs),
            lr=self.lr,
            seed=self.seed,
            device=self.device,
            consistency=self.consistency,
            augment=self._augment(),
            patience=self.patience if held else None,
            progress=self.progress,
            risk_set=memory,
        ).fit(train, validate=validate, on_epoch=on_epoch)

    def _build_risk_model(self, in_features: int, settings: dict, encoder):
        """The model of ``kind`` with one output, the risk."""
        saved = self.label
        try:
            self.label = None
            return self._build(in_features, 1, settings, encoder)
        finally:
            self.label = saved

    def _applicability_record(self, cohort: Cohort | None) -> dict | None:
        """How the final model's training slides looked (their thumbnails' colour, read here
        before any stain normalisation, and the model's slide embedding): the applicability
        record :func:`~workbench.tl.extract` scores new slides against."""
        from workbench.tl._applicability import training_record

        thumbnails = None
        if cohort is not None:
            from workbench.io import Slide

            def read(name):
                with Slide(cohort.slide_path(name), mpp=cohort.mpp_of(name)) as sl:
                    return sl.thumbnail(max_size=512)

            # one at a time: a list of every slide's thumbnail grew with the cohort (0.6 MB each)
            thumbnails = (read(s.name) for s in self.samples_)
        return training_record(self.model_, self.samples_, thumbnails)

    def _resolve_conflicts(self, cohort: Cohort, values):
        """Refuse, or drop, patients whose slides carry different labels."""
        patients = [cohort.patient_of(s) for s in values.index]
        conflicts = conflicting_patients(values.tolist(), patients)
        if not conflicts:
            return cohort, values
        if self.on_conflict == "raise":
            raise conflict_error(conflicts, self.label)
        keep = [s for s, p in zip(values.index, patients, strict=True) if p not in conflicts]
        logger.warning(
            "SlideTrainer: dropped %d patient(s) carrying conflicting %r labels (%d slides): %s",
            len(conflicts),
            self.label,
            len(values) - len(keep),
            "; ".join(f"{p} ({', '.join(v)})" for p, v in conflicts.items()),
        )
        self.dropped_patients_ = sorted(conflicts)
        if not keep:
            raise ClinicalTableError("every patient carries conflicting labels; nothing is left")
        cohort = cohort.subset(keep)
        return cohort, cohort.labels(self.label)

    def _check_splits(self, y: np.ndarray, patients: list) -> None:
        """The splits asked for, checked before anything is read (issue: never silently other)."""
        names = [str(c) for c in self.classes_]
        if self.validation is not None:
            check_holdout(y, patients, float(self.validation), classes=names)
        if self.folds is not None:
            check_folds(y, patients, int(self.folds), classes=names)

    def _fit_final(self, samples, patients, cohort, settings, encoder, n_classes) -> None:
        from workbench.models import predict_samples

        held, readers, train, calibration = [], None, samples, None
        self.validation_ = None
        n_patients = len(set(patients))
        if self.validation is not None:
            y = np.asarray([s.label for s in samples])
            tr, he = holdout_split(
                y, patients, float(self.validation), self.seed, classes=self.classes_
            )
            train, held = [samples[i] for i in tr], [samples[i] for i in he]
            readers = self._readers(held, cohort, settings, encoder)
            logger.info(
                "final model: %d training slides (%d patients), %d validation slides "
                "(%d patients) for early stopping and the temperature",
                len(train),
                len({patients[i] for i in tr}),
                len(held),
                len({patients[i] for i in he}),
            )
            trainer = self._train_one(
                train, held, readers, settings, encoder, n_classes, tag="final model"
            )
            calibration = self._temperature(
                trainer.model, held, readers, fitted_on="validation patients"
            )
            y_held = np.asarray([s.label for s in held])
            raw = predict_samples(trainer.model, held, crop_sources=readers, return_logits=True)
            t = calibration["temperature"] if calibration else 1.0
            probs = softmax_with_temperature(raw, 1.0)
            calibrated = softmax_with_temperature(raw, t)
            self.validation_ = {
                "slides": [s.name for s in held],
                "n_patients": len({patients[i] for i in he}),
                "share": len({patients[i] for i in he}) / n_patients,
                "loss": _cross_entropy(y_held, probs),
                "loss_calibrated": _cross_entropy(y_held, calibrated),
                "best_epoch": trainer.best_epoch_,
                "temperature": t,
                "ece_raw": expected_calibration_error(y_held, probs),
                "ece": expected_calibration_error(y_held, calibrated),
                **classification_metrics(y_held, probs),
                "predictions": [
                    {
                        "slide": s.name,
                        "label": _jsonable(self.classes_[int(s.label)]),
                        "y": int(s.label),
                        "probability": _positive(calibrated[i]),
                        "raw_probability": _positive(probs[i]),
                    }
                    for i, s in enumerate(held)
                ],
            }
            self.history_ = trainer.history_
            self.best_epoch_ = trainer.best_epoch_
            self.final_model_ = {
                "fit_on": "training part",
                "slides": len(train),
                "patients": len({patients[i] for i in tr}),
                "epochs": trainer.best_epoch_,
                "early_stopping": True,
            }
            if self.refit:
                epochs = int(trainer.best_epoch_ or self.epochs)
                logger.info("refit on all %d slides for %d epochs", len(samples), epochs)
                trainer = self._train_one(
                    samples, [], None, settings, encoder, n_classes, epochs=epochs, tag="refit"
                )
                train = samples
                self.history_ = trainer.history_
                self.final_model_ = {
                    "fit_on": "all patients",
                    "slides": len(samples),
                    "patients": n_patients,
                    "epochs": epochs,
                    "early_stopping": False,
                    "epochs_from": "the early-stopped fit on the training part",
                }
        elif self.cv_ is not None:
            epochs = int(np.median(self.cv_["epochs"].to_numpy(dtype=float)))
            epochs = max(1, min(epochs, int(self.epochs)))
            logger.info(
                "final model: all %d slides for %d epochs (median early-stopped epoch of the "
                "folds)",
                len(samples),
                epochs,
            )
            trainer = self._train_one(
                samples, [], None, settings, encoder, n_classes, epochs=epochs, tag="final model"
            )
            self.history_ = trainer.history_
            self.best_epoch_ = trainer.best_epoch_
            if self.calibrate:
                cols = [f"raw_logit_{i}" for i in range(n_classes)]
                calibration = _calibration_record(
                    self._oof_logits[cols].to_numpy(),
                    self._oof_logits["y"].to_numpy(),
                    fitted_on="out-of-fold predictions",
                )
            self.final_model_ = {
                "fit_on": "all patients",
                "slides": len(samples),
                "patients": n_patients,
                "epochs": epochs,
                "early_stopping": False,
                "epochs_from": "median early-stopped epoch of the folds",
            }
        else:
            trainer = self._train_one(train, [], None, settings, encoder, n_classes)
            self.history_ = trainer.history_
            self.best_epoch_ = trainer.best_epoch_
            self.final_model_ = {
                "fit_on": "all patients",
                "slides": len(samples),
                "patients": n_patients,
                "epochs": trainer.best_epoch_,
                "early_stopping": False,
            }
        self.model_ = trainer.model.cpu().eval()
        self.calibration_ = calibration
        self.model_.calibration_ = calibration
        self.samples_ = train
        self.settings_ = settings
        if calibration is not None:
            logger.info(
                "temperature %.3g fitted on %d %s (%s): NLL %.3f -> %.3f, ECE %.3f -> %.3f",
                calibration["temperature"],
                calibration["n"],
                calibration["fitted_on"],
                calibration["status"],
                calibration["nll_before"] or float("nan"),
                calibration["nll_after"] or float("nan"),
                calibration["ece_before"],
                calibration["ece_after"],
            )

    def _cross_validate(self, samples, patients, cohort, settings, encoder, n_classes) -> None:
        import pandas as pd
        from tqdm.auto import tqdm

        from workbench.models import predict_samples

        y = np.asarray([s.label for s in samples])
        k, repeats = int(self.folds), int(self.repeats)
        inner = float(self.validation) if self.validation is not None else INNER_VALIDATION
        rows, preds = [], []
        bar = tqdm(total=k * repeats, desc="cross-validation", disable=not self.progress)
        for r in range(repeats):
            seed = self.seed + 1000 * r
            folds = make_folds(y, patients, k, seed, classes=[str(c) for c in self.classes_])
            inner_splits = [
                holdout_split(y[tr], [patients[i] for i in tr], inner, seed + f, strict=False)
                for f, (tr, _) in enumerate(folds, start=1)
            ]
            lacking = [f for f, split in enumerate(inner_splits, start=1) if split is None]
            if lacking:
                where = f"repeat {r + 1}, " if repeats > 1 else ""
                warnings.warn(
                    f"{where}fold(s) {lacking} of {k}: the training part holds fewer than 2 "
                    "patients of a class, too few for an inner validation split; these folds "
                    f"train all {self.epochs} epochs without early stopping and keep T = 1",
                    SplitWarning,
                    stacklevel=3,
                )
            for f, (tr, te) in enumerate(folds, start=1):
                tag = f"repeat {r + 1}/{repeats} fold {f}/{k}" if repeats > 1 else f"fold {f}/{k}"
                train = [samples[i] for i in tr]
                test = [samples[i] for i in te]
                split = inner_splits[f - 1]
                held, readers = [], None
                if split is not None:
                    held = [train[i] for i in split[1]]
                    train = [train[i] for i in split[0]]
                    readers = self._readers(held, cohort, settings, encoder)
                logger.info(
                    "%s: %d training slides, %d inner validation slides (early stopping), %d "
                    "test slides of %d patients",
                    tag,
                    len(train),
                    len(held),
                    len(test),
                    len({patients[i] for i in te}),
                )
                trainer = self._train_one(
                    train, held, readers, settings, encoder, n_classes, tag=tag
                )
                calibration = self._temperature(
                    trainer.model, held, readers, fitted_on="inner validation patients", warn=False
                )  # a fold's status is in cv_["calibration"]
                t = calibration["temperature"] if calibration else 1.0
                logits = predict_samples(
                    trainer.model,
                    test,
                    crop_sources=self._readers(test, cohort, settings, encoder),
                    return_logits=True,
                )
                raw = softmax_with_temperature(logits, 1.0)
                probs = softmax_with_temperature(logits, t)
                m = classification_metrics(y[te], probs)
                rows.append(
                    {
                        "repeat": r + 1,
                        "fold": f,
                        "n_train": len(train),
                        "n_inner_validation": len(held),
                        "n_test": len(test),
                        "n_test_patients": len({patients[i] for i in te}),
                        "epochs": trainer.best_epoch_,
                        "temperature": t,
                        "calibration": calibration["status"] if calibration else "none",
                        **m,
                        "test_slides": ";".join(s.name for s in test),
                        "inner_validation_slides": ";".join(s.name for s in held),
                    }
                )
                for j, i in enumerate(te):
                    preds.append(
                        {
                            "patient": str(patients[i]),
                            "slide": samples[i].name,
                            "repeat": r + 1,
                            "fold": f,
                            "y": int(y[i]),
                            "probs": probs[j],
                            "raw": raw[j],
                            "logits": logits[j],
                        }
                    )
                logger.info(
                    "%s done: AUC %s, balanced accuracy %.3f, stopped at epoch %s of %d, T %.3g",
                    tag,
                    "n/a" if m["auc"] is None else f"{m['auc']:.3f}",
                    m["balanced_accuracy"],
                    trainer.best_epoch_,
                    self.epochs,
                    t,
                )
                bar.update(1)
        bar.close()
        self.cv_ = pd.DataFrame(rows)
        self.oof_ = _oof_table(preds, self.classes_)
        self._oof_logits = pd.DataFrame(
            {
                "y": [p["y"] for p in preds],
                **{
                    f"raw_logit_{c}": [float(p["logits"][c]) for p in preds]
                    for c in range(n_classes)
                },
            }
        )
        yy = np.asarray([p["y"] for p in preds])
        probs = np.stack([p["probs"] for p in preds])
        raw = np.stack([p["raw"] for p in preds])
        summary = pooled_summary(
            yy,
            probs,
            [p["patient"] for p in preds],
            [p["repeat"] for p in preds],
            n_boot=int(self.n_boot),
            seed=self.seed,
        )
        summary.update(
            {
                "ece": expected_calibration_error(yy, probs),
                "ece_raw": expected_calibration_error(yy, raw),
                "folds": k,
                "repeats": repeats,
                "n_slides": len(samples),
                "n_patients": len(set(patients)),
                "inner_validation": inner,
            }
        )
        self.cv_summary_ = summary
        ci = summary["auc_ci"]
        logger.info(
            "cross-validation (%d folds x %d repeats, %d slides of %d patients): pooled "
            "out-of-fold AUC %s%s, balanced accuracy %.3f, ECE %.3f (raw %.3f)",
            k,
            repeats,
            len(samples),
            len(set(patients)),
            "n/a" if summary["auc"] is None else f"{summary['auc']:.3f}",
            "" if ci is None else f" (95% CI {ci[0]:.3f}-{ci[1]:.3f}, patients resampled)",
            summary["balanced_accuracy"],
            summary["ece"],
            summary["ece_raw"],
        )  # each fold's own line was logged when it finished; the table is in cv_

    # ------------------------------------------------------------------------ save
    def save(self, directory: str | os.PathLike) -> Path:
        """Save the trained model as a checkpoint folder (safetensors + JSON) with its record.

        The checkpoint's ``extra`` is the whole training record, the one ``workbench report``
        shows (the command line writes no second copy): the label column and classes, the
        training settings, the per-epoch history, the slides it was trained on and those of
        the cohort left out of :meth:`fit` (``held_out_slides``), the validation and
        cross-validation results, how the final model was fit (``final_model``) and its
        temperature (``calibration``, read back by :func:`~workbench.tl._calibration.model_temperature`;
        ``None`` means ``T = 1``). With ``folds`` the out-of-fold predictions are also
        written to ``oof_predictions.csv`` in the folder (named in ``oof_predictions``).

        Parameters
        ----------
        directory
            The checkpoint folder (created if missing).

        Returns
        -------
        pathlib.Path
            The folder; ``config.json`` holds the record under ``"extra"`` (keys ``kind``,
            ``label``, ``classes``, ``epochs``, ``best_epoch``, ``seed``, ``consistency``,
            ``class_weight``, ``label_smoothing``, ``augment``, ``trained_on``, ``held_out_slides``,
            ``final_model``, ``calibration``, ``validation``, ``cv``, ``cv_summary``,
            ``oof_predictions``, ``dropped_patients``, ``applicability``, ``history``).
        """
        from workbench.io import atomic_write_text
        from workbench.models import save_checkpoint

        if not hasattr(self, "model_"):
            raise ValueError("fit the trainer before saving")
        has_oof = getattr(self, "oof_", None) is not None
        extra = {
            "kind": self.kind,
            "label": self.label,
            "classes": [_jsonable(c) for c in self.classes_],
            "epochs": self.epochs,
            "best_epoch": self.best_epoch_,
            "seed": self.seed,
            "consistency": self.consistency,
            "class_weight": self.class_weight,
            "label_smoothing": self.label_smoothing,
            "augment": self._augment(),
            "trained_on": [s.name for s in self.samples_],
            "held_out_slides": list(getattr(self, "held_out_slides_", [])),
            "final_model": _jsonable(getattr(self, "final_model_", None)),
            "calibration": _jsonable(getattr(self, "calibration_", None)),
            "validation": _jsonable(self.validation_),
            "cv": None if self.cv_ is None else _jsonable(self.cv_.to_dict("records")),
            "cv_summary": _jsonable(getattr(self, "cv_summary_", None)),
            "oof_predictions": OOF_FILE if has_oof else None,
            "dropped_patients": list(getattr(self, "dropped_patients_", [])),
            "applicability": getattr(self, "applicability_", None),
            "history": _jsonable(
                [{k: v for k, v in h.items() if k != "weights"} for h in self.history_]
            ),
        }
        if self.target == "survival":
            extra["survival"] = {
                "target": "survival",
                "time_key": self.time_key,
                "event_key": self.event_key,
                "ties": self.ties,
                "risk": "log relative hazard; higher risk = shorter survival",
            }
        folder = save_checkpoint(self.model_, directory, extra=extra)
        if has_oof:
            atomic_write_text(folder / OOF_FILE, self.oof_.to_csv(index=False))
        return folder


TARGETS = ("class", "survival")
SURVIVAL_KINDS = ("sew", "global", "abmil")
EVENT_CLASSES = ["censored", "event"]


def survival_columns(table, time_key: str, event_key: str, slide_ids) -> tuple:
    """Follow-up times and 0/1 events of a clinical table's slides, checked.

    Parameters
    ----------
    table
        The clinical table (one row per slide, in ``slide_ids`` order).
    time_key, event_key
        The survival columns.
    slide_ids
        Slide names for messages (``None``: row numbers).

    Returns
    -------
    tuple
        ``(time, event)``: float64 and int64 arrays.

    Raises
    ------
    ClinicalTableError
        A column is missing, a value is empty, not a number, a time is not positive, an
        event is not 0/1, or no slide has an event.
    """
    import pandas as pd

    names = list(slide_ids) if slide_ids is not None else [str(i) for i in range(len(table))]
    for key in (time_key, event_key):
        if key not in table.columns:
            raise ClinicalTableError(
                f"no survival column {key!r} in the clinical table; its columns are "
                f"{list(table.columns)} (name them with time_key=/event_key=, command line "
                "--survival TIME,EVENT)"
            )
    time = pd.to_numeric(table[time_key], errors="coerce").to_numpy(dtype=float)
    event = pd.to_numeric(table[event_key], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(time) | (time <= 0)
    if bad.any():
        raise ClinicalTableError(
            f"{int(bad.sum())} slide(s) have no positive number in {time_key!r} "
            f"({', '.join(names[i] for i in np.flatnonzero(bad)[:5])}); fill them in or leave "
            "those slides out"
        )
    bad = ~np.isin(event, (0.0, 1.0))
    if bad.any():
        raise ClinicalTableError(
            f"{int(bad.sum())} slide(s) have an {event_key!r} value other than 0 or 1 "
            f"({', '.join(names[i] for i in np.flatnonzero(bad)[:5])})"
        )
    if event.sum() == 0:
        raise ClinicalTableError(
            f"no events in {event_key!r} (every patient censored): a Cox model needs at "
            "least one event"
        )
    return time, event.astype(np.int64)


def patient_risks(risk, patients, time, event) -> tuple:
    """One risk per patient: the mean of its slides' risks (time and event from its slides).

    Parameters
    ----------
    risk
        ``(n,)`` slide risks.
    patients
        ``(n,)`` patient of every slide.
    time, event
        ``(n,)`` the slides' survival values (equal within a patient).

    Returns
    -------
    tuple
        ``(risk, time, event)`` per patient, in order of first appearance.

    Raises
    ------
    ClinicalTableError
        A patient's slides disagree on time or event.
    """
    order = list(dict.fromkeys(patients))
    where = {p: i for i, p in enumerate(order)}
    idx = np.asarray([where[p] for p in patients])
    risk, time, event = (np.asarray(a, dtype=float) for a in (risk, time, event))
    n = len(order)
    sums = np.bincount(idx, weights=risk, minlength=n)
    counts = np.bincount(idx, minlength=n)
    p_time = np.full(n, np.nan)
    p_event = np.full(n, np.nan)
    for i, k in enumerate(idx):
        if not np.isnan(p_time[k]) and (p_time[k] != time[i] or p_event[k] != event[i]):
            raise ClinicalTableError(
                f"patient {order[k]!r} has slides with different survival values; a patient "
                "has one follow-up time and one event"
            )
        p_time[k], p_event[k] = time[i], event[i]
    return sums / counts, p_time, p_event.astype(np.int64)


def concordance_index(time, risk, event) -> float | None:
    """Harrell's C of risk scores: the share of comparable patient pairs whose order of risk
    matches their order of death (higher risk = shorter survival).

    Parameters
    ----------
    time, risk, event
        One entry per patient: follow-up time, risk score, event (1) or censored (0).

    Returns
    -------
    float or None
        C in ``[0, 1]`` (0.5: chance), from lifelines' ``concordance_index`` given ``-risk``
        (lifelines expects a score that grows with survival); ``None`` without a comparable
        pair.
    """
    from lifelines.utils import concordance_index as lifelines_c

    try:
        return float(lifelines_c(np.asarray(time), -np.asarray(risk), np.asarray(event)))
    except ZeroDivisionError:
        return None


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _mean_or_none(values) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def _slide_risks(model, samples, readers) -> np.ndarray:
    from workbench.models import predict_samples

    return predict_samples(model, samples, crop_sources=readers, return_logits=True)[:, 0]


def _positive(p: np.ndarray) -> float:
    """The probability a single number stands for: the positive class of two, else the top."""
    p = np.asarray(p, dtype=float)
    return float(p[1] if len(p) == 2 else p.max())


def _calibration_record(
    logits: np.ndarray, y: np.ndarray, *, fitted_on: str, warn: bool = True
) -> dict:
    fit = fit_temperature(logits, y)
    before = softmax_with_temperature(logits, 1.0)
    after = softmax_with_temperature(logits, fit.temperature)
    if fit.status == "separable" and warn:
        warnings.warn(
            f"every one of the {fit.n} {fitted_on} is classified correctly, so the temperature "
            "cannot be estimated from them (the NLL keeps falling as T shrinks); T stays 1",
            UserWarning,
            stacklevel=4,
        )
    return {
        **fit.to_dict(),
        "fitted_on": fitted_on,
        "ece_before": expected_calibration_error(y, before),
        "ece_after": expected_calibration_error(y, after),
    }


def _oof_table(preds: list[dict], classes: list):
    import pandas as pd

    rows = []
    for p in preds:
        probs, raw = np.asarray(p["probs"]), np.asarray(p["raw"])
        row = {
            "patient": p["patient"],
            "slide": p["slide"],
            "repeat": p["repeat"],
            "fold": p["fold"],
            "label": _jsonable(classes[p["y"]]),
            "probability": _positive(probs),
            "raw_probability": _positive(raw),
            "predicted": _jsonable(classes[int(probs.argmax())]),
        }
        if len(probs) > 2:
            row.update({f"prob_{c}": float(v) for c, v in zip(classes, probs, strict=True)})
        rows.append(row)
    return pd.DataFrame(rows)


def _finite(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


__all__ = [
    "SlideTrainer",
    "classification_metrics",
    "concordance_index",
    "encode_labels",
]
