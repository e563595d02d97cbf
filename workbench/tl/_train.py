"""Training the slide models on a cohort's own label column.

:class:`SlideTrainer` fits any of the three models on any :class:`~workbench.io.Cohort`: a
clinical column as the slide label (binary or multi-class, strings or integers), lesion
annotations where the cohort has them (they supervise regions and magnified crops; without
them the detail branch learns from the slide label alone), a stratified validation split by
patient with early stopping, or k-fold cross-validation with per-fold metrics, class weights
against imbalance, stain normalisation stored with the model and stain augmentation, and a
pluggable tile encoder. Slides are read once through the engine (:mod:`workbench.tl._engine`)
and every epoch trains on the cached tensors.
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

from workbench._errors import ClinicalTableError
from workbench.tl._engine import (
    DEFAULT_PREPROCESSING,
    CropReader,
    mask_crops,
    prepare_slide,
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

MODEL_KINDS = ("sew", "global", "abmil")
CLASS_WEIGHTS = ("balanced", None)
STAIN_METHODS = ("macenko", "reinhard")
#: Stain augmentation used when ``augment=True``.
DEFAULT_AUGMENT = {"sigma": 0.05, "bias": 0.02}
# Kept for code written before labels came from a clinical column.
_mask_crops = mask_crops


def label_from_grade(grade: int) -> int:
    """Slide class of a grade: 1 (high grade) for grade 3, else 0 (kept for older code; train
    on a label column instead)."""
    return int(int(grade) >= 3)


def prepare_cohort(cohort, labels=None, **kwargs) -> list:
    """:func:`workbench.tl._engine.prepare_cohort`; without ``labels`` (deprecated) the old
    high-grade label is taken from a ``grade`` column."""
    if labels is None and "grade" in cohort.clinical:
        warnings.warn(
            "prepare_cohort without labels= uses the grade column (high grade vs 1-2); pass "
            "labels or use SlideTrainer(label=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        grades = cohort.labels("grade")
        labels = {sid: label_from_grade(g) for sid, g in grades.items()}
    if "use_masks" in kwargs:
        kwargs["use_annotations"] = kwargs.pop("use_masks")
    return _prepare_cohort(cohort, labels, **kwargs)


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

    AUC is ``None`` when a class is missing from ``y``.
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
        ``"sew"`` (:class:`~workbench.models.SelfCalibratedModel`), ``"global"``
        (:class:`~workbench.models.GlobalOnly`) or ``"abmil"``
        (:class:`~workbench.models.TileABMIL`).
    label
        The clinical column to learn (any values: strings or integers, two or more classes).
    classes
        Class order (default: sorted values); for two classes the last is the positive one
        (its probability is the one AUC and reports use).
    epochs, lr, seed, device, consistency, progress
        Passed to :class:`~workbench.models.Trainer` (``epochs`` is the most; early stopping
        may end sooner).
    validation
        Share of patients held out (stratified by label, a patient's slides together) to watch
        the validation loss: early stopping after ``patience`` epochs without improvement,
        the best epoch's weights kept, metrics in ``validation_``. ``None``: no split.
    folds
        k-fold cross-validation by patient before the final fit: one model per fold, its
        held-out AUC, accuracy and balanced accuracy in ``cv_`` (with ``validation``, each
        fold stops early on an inner split of its own training part, never on its test fold).
    patience
        Epochs without a lower validation loss before stopping.
    class_weight
        ``"balanced"`` (slide loss weighted by inverse class frequency) or ``None``.
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
    cv_
        With ``folds``: a DataFrame, one row per fold (``auc``, ``accuracy``,
        ``balanced_accuracy``, ``n_train``, ``n_test``, ``epochs``), or ``None``.
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
    patience: int = 5
    class_weight: str | None = "balanced"
    stain: Any = None
    augment: bool | Mapping = True
    encoder: Any = None
    use_annotations: bool = True
    n_candidates: int = 8
    max_tiles: int = 256
    progress: bool = True
    settings: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weight must be one of {CLASS_WEIGHTS}, got {self.class_weight!r}"
            )
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
        if int(self.epochs) < 1 or int(self.patience) < 1:
            raise ValueError("epochs and patience must be at least 1")

    def __repr__(self) -> str:
        if hasattr(self, "model_"):
            state = f"fitted on {len(self.samples_)} slides, classes {self.classes_}"
            if getattr(self, "validation_", None):
                state += f", validation AUC {self.validation_.get('auc')}"
        else:
            state = "not fitted"
        return (
            f"SlideTrainer(kind={self.kind!r}, label={self.label!r}, epochs={self.epochs}, "
            f"consistency={self.consistency}; {state})"
        )

    # ------------------------------------------------------------------------ pieces
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
        from workbench.models import GlobalOnly, SelfCalibratedModel, TileABMIL
        from workbench.pp import feature_names

        pre = {**DEFAULT_PREPROCESSING, **settings, "feature_names": list(feature_names())}
        kw: dict[str, Any] = {
            "preprocessing": pre,
            "class_names": [str(c) for c in self.classes_],
            "n_classes": n_classes,
            "label": self.label,
        }
        kw.update(self.model_kwargs)
        spec = encoder.spec() if encoder is not None else None
        if self.kind == "sew":
            model = SelfCalibratedModel(in_features=in_features, encoder=spec, **kw)
        elif self.kind == "global":
            return GlobalOnly(in_features=in_features, **kw)
        else:
            model = TileABMIL(encoder=spec, **kw)
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
        """Crop readers for choosing focus regions freely on held-out slides (SEW only)."""
        if self.kind != "sew" or cohort is None:
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

    def _train_one(self, train, held, readers, settings: dict, encoder, n_classes: int):
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

        return Trainer(
            model,
            epochs=self.epochs,
            lr=self.lr,
            seed=self.seed,
            device=self.device,
            consistency=self.consistency,
            class_weights=self._class_weights(y_train, n_classes),
            augment=self._augment(),
            patience=self.patience if held else None,
            progress=self.progress,
        ).fit(train, validate=validate)

    def _split(self, samples, patients, fraction: float, seed: int):
        y = np.asarray([s.label for s in samples])
        folds = _patient_split(y, patients, max(2, int(round(1.0 / fraction))), seed)
        train_idx, held_idx = folds[0]
        return [samples[i] for i in train_idx], [samples[i] for i in held_idx]

    # ------------------------------------------------------------------------ fit
    def fit(
        self,
        cohort: Cohort | None = None,
        *,
        slide_ids: Sequence[str] | None = None,
        samples: list | None = None,
    ) -> SlideTrainer:
        """Train on a cohort (read here) or on already prepared ``samples``; returns ``self``.

        Parameters
        ----------
        cohort
            A :class:`~workbench.io.Cohort` (``label`` must name one of its clinical columns).
        slide_ids
            Train on these slides only (default: all of the cohort).
        samples
            Prepared :class:`~workbench.models.SlideSample` (labels already class indices;
            ``classes`` names them), instead of a cohort.

        Raises
        ------
        ClinicalTableError
            The label column is missing, has empty values or one class; a class has too few
            patients for the split asked for.
        EncoderError
            The encoder cannot be loaded.
        """
        from workbench.models import load_encoder
        from workbench.models._trainer import predict_samples

        encoder = load_encoder(self.encoder) if self.kind != "global" else None
        patients = None
        if samples is None:
            if cohort is None:
                raise ValueError("give a cohort or prepared samples")
            if self.label is None:
                raise ClinicalTableError(
                    "say which clinical column to learn: SlideTrainer(label='<column>'); the "
                    f"table has {[c for c in cohort.clinical.columns if c != cohort.slide_col]}"
                )
            if slide_ids is not None:
                cohort = cohort.subset(slide_ids)
            y, self.classes_ = encode_labels(cohort.labels(self.label), self.classes)
            settings = self._settings(cohort, encoder)
            norm = self._fit_stain(cohort, settings)
            if norm is not None:
                settings["stain"] = norm.to_dict()
            samples = _prepare_cohort(
                cohort,
                dict(zip(cohort.slide_ids, y.tolist(), strict=True)),
                settings=settings,
                use_annotations=self.use_annotations,
                tiles=self.kind == "abmil",
                n_candidates=0 if self.kind == "global" else self.n_candidates,
                max_tiles=self.max_tiles,
                encoder=encoder if encoder is not None and encoder.frozen else None,
                seed=self.seed,
                progress=self.progress,
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
            cohort = None
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ClinicalTableError("training needs at least two classes")
        self.cv_ = None
        if self.folds is not None:
            self.cv_ = self._cross_validate(samples, patients, cohort, settings, encoder, n_classes)
        held, readers, train = [], None, samples
        self.validation_ = None
        if self.validation is not None:
            train, held = self._split(samples, patients, float(self.validation), self.seed)
            readers = self._readers(held, cohort, settings, encoder)
        trainer = self._train_one(train, held, readers, settings, encoder, n_classes)
        self.model_ = trainer.model.cpu().eval()
        self.history_ = trainer.history_
        self.best_epoch_ = trainer.best_epoch_
        self.samples_ = train
        self.settings_ = settings
        if held:
            y_held = np.asarray([s.label for s in held])
            probs = predict_samples(self.model_, held, crop_sources=readers)
            self.validation_ = {
                "slides": [s.name for s in held],
                "loss": _cross_entropy(y_held, probs),
                "best_epoch": self.best_epoch_,
                **classification_metrics(y_held, probs),
            }
        logger.info("SlideTrainer: %r", self)
        return self

    def _cross_validate(self, samples, patients, cohort, settings, encoder, n_classes):
        import pandas as pd
        from tqdm.auto import tqdm

        from workbench.models._trainer import predict_samples

        y = np.asarray([s.label for s in samples])
        rows = []
        folds = _patient_split(y, patients, int(self.folds), self.seed)
        for k, (tr, te) in enumerate(
            tqdm(folds, desc="cross-validation", disable=not self.progress)
        ):
            train = [samples[i] for i in tr]
            test = [samples[i] for i in te]
            held, readers = [], None
            if self.validation is not None:
                train, held = self._split(
                    train, [patients[i] for i in tr], float(self.validation), self.seed + k + 1
                )
                readers = self._readers(held, cohort, settings, encoder)
            trainer = self._train_one(train, held, readers, settings, encoder, n_classes)
            probs = predict_samples(
                trainer.model, test, crop_sources=self._readers(test, cohort, settings, encoder)
            )
            rows.append(
                {
                    "fold": k + 1,
                    "n_train": len(train),
                    "n_test": len(test),
                    "epochs": trainer.best_epoch_,
                    **classification_metrics(y[te], probs),
                    "test_slides": ";".join(s.name for s in test),
                }
            )
        table = pd.DataFrame(rows)
        logger.info("SlideTrainer cross-validation:\n%s", table.drop(columns="test_slides"))
        return table

    # ------------------------------------------------------------------------ save
    def save(self, directory: str | os.PathLike) -> Path:
        """Save the trained model as a checkpoint folder (safetensors + JSON).

        The JSON keeps the label column and classes, the training settings, the history,
        the validation and cross-validation results and the slides it was trained on.
        """
        from workbench.models import save_checkpoint

        if not hasattr(self, "model_"):
            raise ValueError("fit the trainer before saving")
        extra = {
            "kind": self.kind,
            "label": self.label,
            "classes": [_jsonable(c) for c in self.classes_],
            "epochs": self.epochs,
            "best_epoch": self.best_epoch_,
            "seed": self.seed,
            "consistency": self.consistency,
            "class_weight": self.class_weight,
            "augment": self._augment(),
            "trained_on": [s.name for s in self.samples_],
            "validation": _jsonable(self.validation_),
            "cv": None if self.cv_ is None else _jsonable(self.cv_.to_dict("records")),
            "history": [{k: v for k, v in h.items() if k != "weights"} for h in self.history_],
        }
        return save_checkpoint(self.model_, directory, extra=extra)


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
    "MODEL_KINDS",
    "SlideTrainer",
    "classification_metrics",
    "encode_labels",
    "prepare_cohort",
    "prepare_slide",
    "suggest_settings",
]
