"""Training loop for the slide models (torch only; data arrive as cached tensors)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workbench._errors import NonFiniteError
from workbench.models._augment import stain_jitter
from workbench.models._finite import nonfinite_cause, nonfinite_names, require_finite
from workbench.models._losses import (
    COX_TIES,
    cox_partial_likelihood,
    curriculum_weights,
    slide_loss,
)
from workbench.models._protocol import MODEL_KINDS, SlideModel, StepContext, to_float_image

__all__ = ["RiskSetMemory", "SlideSample", "Trainer", "default_device", "predict_samples"]


def default_device() -> torch.device:
    """The device to train and predict on: CUDA when available, else CPU.

    Returns
    -------
    torch.device
        ``cuda`` or ``cpu``.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class SlideSample:
    """One training slide, already read from disk (so epochs never touch the file again).

    Parameters
    ----------
    features
        ``(N, F)`` float32 region features.
    edge_index
        ``(2, E)`` long region adjacency.
    label
        Slide class index.
    node_labels
        ``(N,)`` long region labels (1 lesion, 0 not, -1 unknown) or ``None``.
    crops
        ``(M, 3, S, S)`` uint8 magnified crops of candidate regions, or ``None``.
    crop_nodes
        ``(M,)`` long node index of every crop.
    crop_masks
        ``(M, 1, S, S)`` uint8 0/1 lesion masks of the crops, or ``None`` (then the detail
        branch learns from the slide label only, by multiple-instance pooling).
    tiles
        ``(T, 3, S, S)`` uint8 tissue tiles for :class:`TileABMIL`, or ``None``.
    crop_embeddings
        ``(M, E)`` frozen-encoder embeddings of the crops (computed once, instead of running
        the encoder every epoch), or ``None``.
    tile_embeddings
        ``(T, E)`` frozen-encoder embeddings of the tiles, or ``None``.
    node_xy
        ``(N, 2)`` level-0 centres of the regions (where to read more crops), or ``None``.
    name
        Slide identifier.
    """

    features: torch.Tensor
    edge_index: torch.Tensor
    label: int
    node_labels: torch.Tensor | None = None
    crops: torch.Tensor | None = None
    crop_nodes: torch.Tensor | None = None
    crop_masks: torch.Tensor | None = None
    tiles: torch.Tensor | None = None
    crop_embeddings: torch.Tensor | None = None
    tile_embeddings: torch.Tensor | None = None
    node_xy: torch.Tensor | None = None
    name: str = ""


@torch.no_grad()
def predict_samples(
    model: nn.Module,
    samples: Sequence[SlideSample],
    *,
    crop_sources: Sequence[Callable] | None = None,
    device: str | torch.device | None = None,
    return_logits: bool = False,
) -> np.ndarray:
    """Slide class probabilities ``(n, n_classes)`` of cached samples, as at inference
    (with ``return_logits=True`` the slide logits instead, e.g. to fit a temperature).

    Every kind answers through its :meth:`~workbench.models.SlideModel.predict_logits`. For
    :class:`SelfCalibratedModel` the focus regions are chosen among all regions and their
    crops come from ``crop_sources[i](nodes)`` (a callable returning ``(K, 3, S, S)`` uint8
    crops, or ``(K, E)`` embeddings for a frozen encoder, of those regions — e.g.
    :class:`workbench.tl._engine.CropReader`); without sources the choice is limited to the
    sample's cached crops. :class:`GlobalOnly` reads the graph only; :class:`TileABMIL` pools
    every cached tile.

    Parameters
    ----------
    model
        A :class:`~workbench.models.SlideModel` of any kind.
    samples
        The cached slides.
    crop_sources
        One crop source per sample (kinds that choose regions freely), or ``None``.
    device
        Where to run (default: where the model is).
    return_logits
        Return the slide logits instead of probabilities.

    Returns
    -------
    numpy.ndarray
        ``(n, n_classes)`` float64 probabilities (or logits).
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i, s in enumerate(samples):
        x = s.features.to(dev).float()
        source = crop_sources[i] if crop_sources is not None else None
        logits = model.predict_logits(s, device=dev, crop_source=source)
        probs = torch.softmax(logits.float(), -1)
        if not torch.isfinite(probs).all():
            cause = nonfinite_cause(model, {"region features": x})
            require_finite(
                probs, f"the class probabilities of slide {s.name or i}", f"cause: {cause}"
            )
        scores = logits.float() if return_logits else probs
        out.append(scores.cpu().numpy())
    model.train(was_training)
    return np.stack(out).astype(np.float64) if out else np.zeros((0, 0))


class RiskSetMemory:
    """The whole training set's risk set, held across the one-slide steps of the Cox loss.

    The trainer takes one optimiser step per slide, but a Cox partial likelihood needs a
    risk set with events in it. This keeps the latest risk of every training slide
    (detached) and scores each step's slide against all of them: the step's loss is the
    partial likelihood over *every* training patient, with this slide's risk live (carrying
    gradient) and the others as last seen. So no step lacks events whenever the training
    set has one, and over an epoch the steps add up to the full-batch gradient with slightly
    stale neighbours (exact when the weights stand still). A patient with several slides has
    one risk: the mean of its slides' risks. The loss is multiplied by the number of events,
    so one slide's gradient is its own martingale residual, on the scale of a cross-entropy
    term, whatever the cohort size.

    Parameters
    ----------
    time, event
        ``(P,)`` follow-up time and event (1) / censoring (0) of every patient.
    patient
        ``(n,)`` the patient index of every training slide, in the order of the samples.
    ties
        ``"efron"`` or ``"breslow"`` (see :func:`~workbench.models.cox_partial_likelihood`).
    """

    def __init__(self, time, event, patient, *, ties: str = "efron") -> None:
        if ties not in COX_TIES:
            raise ValueError(f"ties must be one of {COX_TIES}, got {ties!r}")
        self.time = torch.as_tensor(np.asarray(time, dtype=np.float64))
        self.event = torch.as_tensor(np.asarray(event, dtype=np.float64))
        self.patient = torch.as_tensor(np.asarray(patient, dtype=np.int64))
        assert self.time.shape == self.event.shape, "one time and one event per patient"
        assert int(self.patient.max()) < len(self.time), "patient index out of range"
        self.ties = ties
        self.risk = torch.zeros(len(self.patient), dtype=torch.float64)
        counts = torch.bincount(self.patient, minlength=len(self.time)).to(torch.float64)
        assert bool((counts > 0).all()), "every patient needs a training slide"
        self.counts = counts
        self.n_events = int(self.event.sum())

    def loss(self, logits: torch.Tensor, index: int) -> torch.Tensor:
        """The step's Cox loss with slide ``index``'s risk (its single logit) live.

        Parameters
        ----------
        logits
            ``(1,)`` the slide's risk.
        index
            The slide's position in the training samples.

        Returns
        -------
        torch.Tensor
            Scalar: the events times the mean negative log partial likelihood.
        """
        live = logits.reshape(-1)[0]
        dev, dt = live.device, live.dtype
        others = self.risk.to(dev, dt).clone()
        others[index] = 0.0
        slide_risk = (
            others
            + torch.nn.functional.one_hot(torch.tensor(index, device=dev), len(others)).to(dt)
            * live
        )
        sums = torch.zeros(len(self.time), device=dev, dtype=dt).index_add(
            0, self.patient.to(dev), slide_risk
        )
        patient_risk = sums / self.counts.to(dev, dt)
        cox = cox_partial_likelihood(
            patient_risk, self.time.to(dev, dt), self.event.to(dev, dt), ties=self.ties
        )
        return cox * max(self.n_events, 1)

    def update(self, logits: torch.Tensor, index: int) -> None:
        """Remember slide ``index``'s latest risk.

        Parameters
        ----------
        logits
            ``(1,)`` the slide's risk.
        index
            The slide's position in the training samples.
        """
        self.risk[index] = float(logits.detach().reshape(-1)[0])

    def c_index(self) -> float:
        """Harrell's C of the remembered patient risks (higher risk, shorter survival).

        Returns
        -------
        float
            The share of comparable patient pairs (the shorter time an event) that the risks
            order correctly, ties in risk counting a half; NaN without a comparable pair.
        """
        risk = (
            torch.zeros(len(self.time), dtype=torch.float64).index_add(0, self.patient, self.risk)
            / self.counts
        ).numpy()
        t, e = self.time.numpy(), self.event.numpy().astype(bool)
        # i died before j was last seen (or at the time j was censored, as in lifelines)
        pairs = e[:, None] & (
            (t[:, None] < t[None, :]) | ((t[:, None] == t[None, :]) & ~e[None, :])
        )
        if not pairs.any():
            return float("nan")
        diff = risk[:, None] - risk[None, :]
        score = np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))
        return float(score[pairs].mean())


def _stop_on_nonfinite(
    model: nn.Module, s: SlideSample, parts: dict, epoch: int, n: int, step: int
):
    """Raise :class:`~workbench.NonFiniteError` for a NaN/inf training loss, naming the step,
    the loss terms that are not finite and the likely cause (inputs, else weights)."""
    terms = nonfinite_names({k: v for k, v in parts.items() if torch.is_tensor(v)})
    inputs = {
        "region features": s.features,
        "crop embeddings": s.crop_embeddings,
        "tile embeddings": s.tile_embeddings,
    }
    raise NonFiniteError(
        f"training stopped at step {step + 1} (epoch {epoch + 1}, step {step % n + 1} of {n}, "
        f"slide {s.name or '?'}): the loss is not finite (term(s) {', '.join(terms) or 'total'}); "
        f"cause: {nonfinite_cause(model, inputs)}"
    )


class Trainer:
    """Fits a :class:`~workbench.models.SlideModel` of any registered kind.

    One optimiser step per slide (AdamW, cosine schedule), slides shuffled every epoch with a
    seeded generator; each step is the model's own
    :meth:`~workbench.models.SlideModel.training_step`. For the self-calibrated model the losses follow the curriculum of
    :func:`~workbench.models.curriculum_weights`: slide, node and focus losses from the start,
    detail losses from ``detail_start`` of the epochs, consistency and back-calibration
    ramping in after that (never, when ``consistency=False``: the ablation).

    Parameters
    ----------
    model
        The model to train (modified in place).
    epochs
        Passes over the training slides (at most, with early stopping).
    lr, weight_decay
        AdamW settings.
    seed
        Seeds torch, the shuffling and the augmentation.
    device
        ``None`` = CUDA when available, else CPU.
    detail_start, ramp
        Curriculum (fractions of the run).
    consistency
        Whether the feature-consistency and back-calibration losses are used.
    tiles_per_step
        Tiles sampled per slide and step when training :class:`TileABMIL` (inference uses all).
    class_weights
        ``(n_classes,)`` weights of the slide loss (e.g. inverse class frequencies), or ``None``.
    label_smoothing
        ``ε`` in ``[0, 1)`` of the slide loss (:func:`~workbench.models.slide_loss`): every
        slide cross-entropy of a training step (for SEW also the global + detail one) aims at
        ``1 - ε + ε / C`` instead of 1, which bounds the logit margins the model learns.
        Not for survival training (``risk_set``).
    augment
        Stain augmentation of crops and tiles (``{"sigma": 0.05, "bias": 0.02}``, see
        :func:`~workbench.models.stain_jitter`), or ``None``. Cached frozen-encoder embeddings
        are not augmented.
    patience
        Early stopping: with a ``validate`` callback in :meth:`fit`, stop after this many
        epochs without a lower validation loss and keep the best epoch's weights.
    progress
        Show a tqdm progress bar.
    risk_set
        Survival training: a :class:`RiskSetMemory` over the training samples (in their
        order). The slide loss is then the Cox loss of the model's single output (the risk;
        higher = shorter survival) against the whole training risk set, ``class_weights``
        do not apply and the history holds ``c_index`` (the training Harrell's C of the
        remembered risks) instead of ``accuracy``.

    Attributes
    ----------
    history_
        One dict per epoch: mean losses, training accuracy, the curriculum weights and, with
        validation, ``val_loss`` and the other numbers ``validate`` returned.
    best_epoch_
        The epoch whose weights were kept (the last one without validation).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        epochs: int = 20,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        device: str | torch.device | None = None,
        detail_start: float = 0.2,
        ramp: float = 0.2,
        consistency: bool = True,
        tiles_per_step: int = 16,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        augment: dict | None = None,
        patience: int | None = None,
        progress: bool = True,
        risk_set: RiskSetMemory | None = None,
    ) -> None:
        if not isinstance(model, SlideModel):
            raise TypeError(
                f"Trainer trains a SlideModel (kinds {tuple(MODEL_KINDS)}), not "
                f"{type(model).__name__}"
            )
        assert epochs >= 1, "epochs must be at least 1"
        assert patience is None or patience >= 1, "patience must be at least 1"
        label_smoothing = float(label_smoothing)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if label_smoothing and risk_set is not None:
            raise ValueError("label_smoothing is for class labels, not the Cox loss (risk_set)")
        self.model = model
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = torch.device(device) if device is not None else default_device()
        self.detail_start = detail_start
        self.ramp = ramp
        self.consistency = consistency
        self.tiles_per_step = tiles_per_step
        self.class_weights = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        self.label_smoothing = label_smoothing
        self.augment = dict(augment) if augment else None
        self.patience = patience
        self.progress = progress
        self.risk_set = risk_set
        self.history_: list[dict] = []
        self.n_slides_: int | None = None
        self.best_epoch_: int | None = None

    def __repr__(self) -> str:
        fitted = f"fitted on {self.n_slides_} slides" if self.n_slides_ else "not fitted"
        return (
            f"Trainer({type(self.model).__name__}, epochs={self.epochs}, lr={self.lr}, "
            f"consistency={self.consistency}, device={self.device.type}; {fitted})"
        )

    # ------------------------------------------------------------------------------------
    def _images(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        images = to_float_image(x, self.device)
        if self.augment:
            images = stain_jitter(images, generator=gen, **self.augment)
        return images

    def _slide_loss(self, logits: torch.Tensor, label: int) -> torch.Tensor:
        return slide_loss(
            logits, label, weight=self.class_weights, label_smoothing=self.label_smoothing
        )

    def fit(
        self,
        samples: list[SlideSample],
        *,
        validate: Callable[[nn.Module], dict] | None = None,
        on_epoch: Callable[[dict], None] | None = None,
    ) -> Trainer:
        """Train the model on ``samples``.

        Parameters
        ----------
        samples
            The training slides.
        validate
            Called with the model after every epoch; returns a dict with ``"loss"`` (the
            validation loss early stopping watches) and any other numbers to record, each
            stored in ``history_`` with a ``val_`` prefix.
        on_epoch
            Called with each epoch's record (as stored in ``history_``) once the epoch ends,
            e.g. to print one progress line per epoch when the progress bar is off.

        Returns
        -------
        Trainer
            ``self``, with ``history_`` (one record per epoch) and ``n_slides_`` set and the
            model trained in place.

        Raises
        ------
        ValueError
            ``samples`` is empty.
        """
        from tqdm.auto import tqdm

        samples = list(samples)
        if not samples:
            raise ValueError("no training slides given")
        if self.risk_set is not None and len(self.risk_set.patient) != len(samples):
            raise ValueError("the risk set needs one patient index per training slide")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        model = self.model.to(self.device)
        model.fit_scaling(samples, device=self.device, seed=self.seed)
        model.to(self.device)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total_steps = self.epochs * len(samples)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
        self.history_ = []
        self.n_slides_ = len(samples)
        best_loss, best_state, waited, step = math.inf, None, 0, 0
        bar = tqdm(
            range(self.epochs), desc=f"train {type(model).__name__}", disable=not self.progress
        )
        for epoch in bar:
            model.train()
            w = curriculum_weights(
                epoch,
                self.epochs,
                detail_start=self.detail_start,
                ramp=self.ramp,
                consistency=self.consistency,
            )
            sums: dict[str, float] = {}
            correct = 0
            for i in rng.permutation(len(samples)):
                s = samples[int(i)]
                if self.risk_set is not None:

                    def step_loss(logits, label, i=int(i)):
                        return self.risk_set.loss(logits, i)
                else:
                    step_loss = self._slide_loss
                ctx = StepContext(
                    device=self.device,
                    generator=gen,
                    weights=w,
                    slide_loss=step_loss,
                    images=lambda x: self._images(x, gen),
                    tiles_per_step=self.tiles_per_step,
                )
                loss, parts, logits = model.training_step(s, ctx)
                if not torch.isfinite(loss.detach()):
                    _stop_on_nonfinite(model, s, parts, epoch, len(samples), step)
                step += 1
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                sched.step()
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
                if self.risk_set is not None:
                    self.risk_set.update(logits, int(i))
                else:
                    correct += int(int(logits.detach().argmax()) == int(s.label))
            record = {"epoch": epoch + 1, **{k: v / len(samples) for k, v in sums.items()}}
            if self.risk_set is None:
                record["accuracy"] = correct / len(samples)
                postfix = {"loss": f"{record['loss']:.3f}", "acc": f"{record['accuracy']:.2f}"}
            else:  # survival: the training Harrell's C of the remembered risks
                record["c_index"] = self.risk_set.c_index()
                postfix = {"loss": f"{record['loss']:.3f}", "C": f"{record['c_index']:.2f}"}
            record["weights"] = dict(w)
            if validate is not None:
                model.eval()
                val = validate(model)
                record.update({f"val_{k}": float(v) for k, v in val.items()})
                postfix["val"] = f"{record['val_loss']:.3f}"
                # Only once the detail branch is on do validation losses compare like with like.
                if model.ready_for_early_stopping(w):
                    if record["val_loss"] < best_loss - 1e-6:
                        best_loss, waited = record["val_loss"], 0
                        best_state = copy.deepcopy(model.state_dict())
                        self.best_epoch_ = epoch + 1
                    else:
                        waited += 1
            self.history_.append(record)
            bar.set_postfix(**postfix)
            if on_epoch is not None:
                on_epoch(record)
            if validate is not None and self.patience is not None and waited >= self.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            self.best_epoch_ = len(self.history_)
        model.eval()
        return self
