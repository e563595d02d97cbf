"""Losses of the self-calibrated model and the curriculum that weights them.

All functions take tensors and return a scalar tensor (mean over their items).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "back_calibration_loss",
    "binary_kl",
    "consistency_loss",
    "cox_partial_likelihood",
    "curriculum_weights",
    "detail_mask_loss",
    "dice_loss",
    "focus_loss",
    "mil_lesion_loss",
    "node_loss",
    "slide_loss",
]


def slide_loss(
    logits: torch.Tensor,
    label: torch.Tensor | int,
    *,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of slide logits ``(C,)`` or ``(B, C)`` against class indices.

    With ``label_smoothing`` ``ε > 0`` the target puts ``1 - ε + ε / C`` on the slide's class
    and ``ε / C`` on every other class (Szegedy et al. 2016; Müller et al., "When does label
    smoothing help?", 2019): the loss is then smallest at a finite logit margin,
    ``log((1 - ε + ε / C) / (ε / C))`` between the true class and the others (2.94 for
    ``ε = 0.1``, two classes), so training stops pushing the probabilities of the training
    slides to 0 and 1.

    ``weight`` ``(C,)`` scales each class's term (class weights against imbalance); for one
    slide the loss is multiplied by its class's weight, so an epoch of one-slide steps
    weighs the classes as a weighted batch would.

    Parameters
    ----------
    logits
        ``(C,)`` logits of one slide or ``(B, C)`` of a batch.
    label
        The class index (or ``(B,)`` indices).
    weight
        ``(C,)`` class weights; ``None`` weighs every class 1.
    label_smoothing
        ``ε`` in ``[0, 1)``; 0 is the plain cross-entropy.

    Returns
    -------
    torch.Tensor
        Scalar: the (weighted) mean cross-entropy.
    """
    assert 0.0 <= label_smoothing < 1.0, "label_smoothing must be in [0, 1)"
    if logits.ndim == 1:
        logits = logits.unsqueeze(0)
    label = torch.as_tensor(label, dtype=torch.long, device=logits.device).reshape(-1)
    loss = F.cross_entropy(logits, label, reduction="none", label_smoothing=float(label_smoothing))
    if weight is not None:
        loss = loss * weight.to(logits.device, logits.dtype)[label]
    return loss.mean()


def node_loss(node_logits: torch.Tensor, node_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over labelled nodes; label ``-1`` marks a node without a label.

    Parameters
    ----------
    node_logits
        ``(N, C)`` logits of the graph's nodes.
    node_labels
        ``(N,)`` class indices, ``-1`` where a node has no label.

    Returns
    -------
    torch.Tensor
        Scalar: mean cross-entropy over the labelled nodes; zero (still attached to
        the graph) when no node is labelled.
    """
    labelled = node_labels >= 0
    if not bool(labelled.any()):
        return node_logits.sum() * 0.0
    return F.cross_entropy(node_logits[labelled], node_labels[labelled].long())


def binary_kl(logits: torch.Tensor, target: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """Mean KL divergence ``KL(Bernoulli(target) || Bernoulli(sigmoid(logits)))``.

    Equal to binary cross-entropy minus the target's own entropy, so it is exactly zero when
    the prediction equals the target (for soft targets too), unlike plain BCE.

    Parameters
    ----------
    logits
        Predicted logits, any shape.
    target
        Target probabilities in ``[0, 1]``, the shape of ``logits``.
    eps
        Targets are clipped to ``[eps, 1 - eps]`` so their entropy stays finite.

    Returns
    -------
    torch.Tensor
        Scalar: the mean KL divergence (>= 0).
    """
    target = target.to(logits.dtype).clamp(eps, 1 - eps)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    entropy = -(target * target.log() + (1 - target) * (1 - target).log())
    return (bce - entropy).mean()


def focus_loss(focus_logits: torch.Tensor, attribution: torch.Tensor) -> torch.Tensor:
    """Binary KL of the focus scores against the (detached) normalised attribution.

    Parameters
    ----------
    focus_logits
        ``(N,)`` focus logits of the graph's nodes.
    attribution
        ``(N,)`` attribution target in ``[0, 1]`` (see :func:`attribution_target`); no
        gradient flows into it.

    Returns
    -------
    torch.Tensor
        Scalar: :func:`binary_kl` of the two.
    """
    return binary_kl(focus_logits, attribution.detach())


def dice_loss(logits: torch.Tensor, mask: torch.Tensor, *, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per image ``(B, 1, H, W)``, averaged over the batch.

    Parameters
    ----------
    logits
        ``(B, 1, H, W)`` logits.
    mask
        ``(B, 1, H, W)`` 0/1 target.
    eps
        Smoothing added to the numerator and denominator (an empty mask and an empty
        prediction give 0).

    Returns
    -------
    torch.Tensor
        Scalar: mean of ``1 - Dice`` over the batch.
    """
    prob = torch.sigmoid(logits).flatten(1)
    mask = mask.to(prob.dtype).flatten(1)
    inter = (prob * mask).sum(1)
    return (1 - (2 * inter + eps) / (prob.sum(1) + mask.sum(1) + eps)).mean()


def detail_mask_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixel binary cross-entropy plus soft Dice of lesion logits against a 0/1 mask.

    Parameters
    ----------
    logits
        ``(B, 1, H, W)`` lesion logits of the detail branch.
    mask
        ``(B, 1, H, W)`` 0/1 lesion mask.

    Returns
    -------
    torch.Tensor
        Scalar: BCE + :func:`dice_loss`.
    """
    mask = mask.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, mask) + dice_loss(logits, mask)


def mil_lesion_loss(crop_logits: torch.Tensor, label: int) -> torch.Tensor:
    """Multiple-instance loss of per-crop lesion logits ``(K,)`` from the slide label alone.

    A slide of class 0 (the reference, no lesion) has no lesion crop: every crop's logit is
    pushed toward "not lesion". A slide of another class has at least one: its highest crop
    logit is pushed toward "lesion" (max pooling). This is what trains the detail branch's
    lesion answer, the target of back-calibration, where no masks exist.

    Parameters
    ----------
    crop_logits
        ``(K,)`` lesion logits of the slide's crops.
    label
        The slide's class index (0 = no lesion).

    Returns
    -------
    torch.Tensor
        Scalar: binary cross-entropy of the crops (class 0) or of the top crop.
    """
    crop_logits = crop_logits.reshape(-1)
    if int(label) == 0:
        return F.binary_cross_entropy_with_logits(crop_logits, torch.zeros_like(crop_logits))
    top = crop_logits.max().reshape(1)
    return F.binary_cross_entropy_with_logits(top, torch.ones_like(top))


def consistency_loss(
    projected: torch.Tensor, detail_embedding: torch.Tensor, *, kind: str = "cosine"
) -> torch.Tensor:
    """Agreement of projected global tokens with detail embeddings (detail side frozen).

    Parameters
    ----------
    projected
        ``(K, E)`` projected node tokens of the focus regions.
    detail_embedding
        ``(K, E)`` detail embeddings of the same regions; gradients do not flow into them.
    kind
        ``"cosine"`` (1 - cosine similarity) or ``"mse"``.

    Returns
    -------
    torch.Tensor
        Scalar: the mean disagreement over the ``K`` regions.
    """
    target = detail_embedding.detach()
    if kind == "cosine":
        return (1 - F.cosine_similarity(projected, target, dim=-1, eps=1e-8)).mean()
    if kind == "mse":
        return F.mse_loss(projected, target)
    raise ValueError(f"kind must be one of 'cosine', 'mse'; got {kind!r}")


def back_calibration_loss(focus_logits: torch.Tensor, lesion_prob: torch.Tensor) -> torch.Tensor:
    """Binary KL pulling focus scores toward the detail branch's (frozen) lesion answer.

    Parameters
    ----------
    focus_logits
        ``(K,)`` focus logits of the regions the detail branch looked at.
    lesion_prob
        ``(K,)`` the detail branch's lesion probabilities there; no gradient flows into them.

    Returns
    -------
    torch.Tensor
        Scalar: :func:`binary_kl` of the two.
    """
    return binary_kl(focus_logits, lesion_prob.detach())


def curriculum_weights(
    epoch: int,
    n_epochs: int,
    *,
    detail_start: float = 0.2,
    ramp: float = 0.2,
    consistency: bool = True,
) -> dict[str, float]:
    """Loss weights for an epoch (0-based) of a run of ``n_epochs``.

    The slide, node and focus losses are on from the start; the detail losses switch on at
    ``detail_start`` of the run; consistency and back-calibration then ramp linearly from 0
    to 1 over the next ``ramp`` of the run (and stay 0 when ``consistency`` is false, the
    ablation).

    Parameters
    ----------
    epoch
        The epoch, counted from 0.
    n_epochs
        Epochs in the run.
    detail_start
        Share of the run after which the detail losses switch on.
    ramp
        Share of the run over which consistency and back-calibration ramp up to 1.
    consistency
        False turns consistency and back-calibration off (the ablation).

    Returns
    -------
    dict
        Weights keyed ``"slide"``, ``"node"``, ``"focus"``, ``"detail"``,
        ``"consistency"`` and ``"calibration"``.
    """
    assert n_epochs >= 1 and 0 <= epoch, "need n_epochs >= 1 and epoch >= 0"
    progress = epoch / n_epochs
    detail = 1.0 if progress >= detail_start else 0.0
    if not consistency or progress < detail_start:
        ramp_w = 0.0
    elif ramp <= 0:
        ramp_w = 1.0
    else:
        ramp_w = min(1.0, (progress - detail_start) / ramp + 1.0 / (n_epochs * ramp))
    return {
        "slide": 1.0,
        "node": 1.0,
        "focus": 1.0,
        "detail": detail,
        "consistency": ramp_w,
        "calibration": ramp_w,
    }


COX_TIES = ("efron", "breslow")


def cox_partial_likelihood(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    *,
    ties: str = "efron",
) -> torch.Tensor:
    """Negative log Cox partial likelihood of risk scores, averaged over the events.

    Higher ``risk`` means a higher hazard, that is *shorter* survival: a model trained on
    this loss ranks the patients who die first highest. Every distinct event time ``t``
    contributes the risks of the patients who die at ``t`` against the log of the summed
    ``exp(risk)`` of the patients still at risk then (``time >= t``), computed with the risk
    set's maximum taken out so large risks do not overflow. Tied event times are handled by
    Efron's approximation (the default, as lifelines and R's ``survival`` do) or by
    Breslow's. Censored patients only ever sit in risk sets.

    Parameters
    ----------
    risk
        ``(n,)`` risk scores (log relative hazards), e.g. one slide logit per patient.
    time
        ``(n,)`` follow-up times (event or censoring).
    event
        ``(n,)`` 1 where the event (death, relapse) was observed, 0 where censored.
    ties
        ``"efron"`` or ``"breslow"``.

    Returns
    -------
    torch.Tensor
        Scalar: minus the log partial likelihood divided by the number of events. With no
        event it is an exact zero that still belongs to the graph (its gradient is zero), so
        a batch without events never gives NaN.

    Raises
    ------
    ValueError
        ``ties`` is not one of the two methods, or the three inputs differ in length.
    """
    if ties not in COX_TIES:
        raise ValueError(f"ties must be one of {COX_TIES}, got {ties!r}")
    risk = risk.reshape(-1)
    time = torch.as_tensor(time, device=risk.device).reshape(-1)
    event = torch.as_tensor(event, device=risk.device).reshape(-1).bool()
    if not (risk.shape == time.shape == event.shape):
        raise ValueError(
            f"risk, time and event need one entry per patient; got {tuple(risk.shape)}, "
            f"{tuple(time.shape)} and {tuple(event.shape)}"
        )
    n_events = int(event.sum())
    if n_events == 0:
        return risk.sum() * 0.0
    times = torch.unique(time[event])  # (k,) distinct event times
    at_risk = time.unsqueeze(0) >= times.unsqueeze(1)  # (k, n)
    died = (time.unsqueeze(0) == times.unsqueeze(1)) & event.unsqueeze(0)  # (k, n)
    d = died.sum(1).to(risk.dtype)  # (k,) deaths at each time
    observed = risk[event].sum()
    masked = torch.where(
        at_risk, risk.unsqueeze(0), torch.full_like(at_risk, -torch.inf, dtype=risk.dtype)
    )
    if ties == "breslow":
        log_sets = (d * torch.logsumexp(masked, dim=1)).sum()
    else:
        top = masked.max(1).values.detach()  # (k,) per risk set, for stability
        scaled = torch.exp(masked - top.unsqueeze(1))  # 0 outside the risk set
        s_risk = scaled.sum(1)  # (k,)
        s_died = (scaled * died.to(risk.dtype)).sum(1)  # (k,)
        most = int(d.max())
        steps = torch.arange(most, device=risk.device, dtype=risk.dtype)  # l = 0 .. d-1
        used = steps.unsqueeze(0) < d.unsqueeze(1)  # (k, most)
        frac = torch.where(
            used, steps.unsqueeze(0) / d.unsqueeze(1), torch.zeros_like(used, dtype=risk.dtype)
        )
        inner = s_risk.unsqueeze(1) - frac * s_died.unsqueeze(1)  # > 0 where used
        logs = torch.where(
            used, torch.log(inner.clamp_min(torch.finfo(risk.dtype).tiny)), torch.zeros_like(inner)
        )
        log_sets = (logs.sum(1) + d * top).sum()
    return (log_sets - observed) / n_events
