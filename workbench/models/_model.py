"""The self-calibrated model: global branch + focus predictor + detail branch."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from workbench.models._detail import DetailBranch
from workbench.models._encoder import EncoderDetail, TileEncoder
from workbench.models._focus import FOCUS_TARGETS, FocusPredictor, focus_target
from workbench.models._global import GLOBAL_BRANCH_OPTIONS, GlobalBranch
from workbench.models._losses import (
    back_calibration_loss,
    binary_kl,
    consistency_loss,
    detail_mask_loss,
    focus_loss,
    mil_lesion_loss,
    node_loss,
)
from workbench.models._peaks import evidence_peaks
from workbench.models._protocol import (
    SlideInputs,
    SlideModel,
    StepContext,
    embedding_scaling,
    feature_scaling,
    first_rows,
    to_float_image,
)

if TYPE_CHECKING:  # pragma: no cover
    from workbench.models._trainer import SlideSample

__all__ = ["CONFIRM_RULES", "SelfCalibratedModel"]

#: How the detail side ranks the focus proposals when it confirms them (``confirm_by``).
CONFIRM_RULES = ("lesion", "evidence")

# How a survival model's focus is calibrated and chosen (``risk_focus``).
RISK_FOCUS_RULES = ("two-sided", "raise")


def _median(x: torch.Tensor) -> torch.Tensor:
    """The median of a 1-d tensor (mean of the two middle values), without gradient."""
    x = x.detach().reshape(-1).float()
    return torch.quantile(x, 0.5) if x.numel() > 1 else x.mean()


def _risk_answer(risk: torch.Tensor, rule: str) -> torch.Tensor:
    """The magnified view's answer that a survival model's focus is calibrated on, per crop.

    ``"raise"``: ``sigmoid(risk)``. ``"two-sided"``: ``sigmoid(risk - median)`` over the
    slide's crops, the crop's risk relative to the slide's typical crop (0.5: typical; a
    protective crop is near 0, a harmful one near 1); the focus is then chosen by its distance
    from the slide's median score (:func:`_two_sided`).
    """
    if rule == "raise":
        return torch.sigmoid(risk)
    return torch.sigmoid(risk - _median(risk).to(risk.dtype))


def _two_sided(scores: torch.Tensor) -> torch.Tensor:
    """``|score - median score|``: how far each region's relative risk departs from the
    slide's typical region, in either direction (what a two-sided focus is chosen by)."""
    return (scores - _median(scores).to(scores.dtype)).abs()


class SelfCalibratedModel(SlideModel):
    """Explainable slide classifier that looks closely only where it needs to.

    A :class:`GlobalBranch` reads the thumbnail region graph and gives node tokens and slide
    logits; a :class:`FocusPredictor` scores the nodes and graph NMS picks ``top_k`` spread-out
    focus regions; a :class:`DetailBranch` reads magnified crops of those regions only and
    gives lesion maps, region embeddings and a pooled lesion probability. A linear projection
    maps node tokens into the detail embedding space (for the feature-consistency loss), and a
    linear head on the mean detail embedding of the focus crops adds detail logits to the
    global ones, so nuclear detail that the thumbnail cannot show still informs the answer.

    Parameters
    ----------
    in_features
        Region feature size (columns of the region graph's ``X``).
    n_classes
        Slide classes. ``1`` builds a survival model: the single output (global + detail) is
        a Cox risk score (higher = shorter survival), the detail branch's lesion answer is not
        trained from the (absent) class label, and the focus is back-calibrated on each focus
        crop's detail risk and chosen by the ``risk_focus`` rule; needs
        ``focus_target="detail"``.
    hidden
        Node token size.
    gcn_layers, transformer_layers, heads, dropout
        Passed to :class:`GlobalBranch`.
    focus_hidden
        Hidden width of the focus MLP.
    top_k
        Number of focus regions.
    nms_hops
        Graph NMS suppression radius in graph steps. 1 (direct neighbours) by default: at the
        default thumbnail resolution a small lesion is only a few regions across, and a wider
        radius pushes later picks out of it.
    detail_width, embed_dim
        Passed to :class:`DetailBranch`.
    encoder
        ``None`` for the built-in compact detail network, or the ``spec()`` of a frozen
        :class:`~workbench.models.TileEncoder`: the detail branch is then an
        :class:`~workbench.models.EncoderDetail` (trainable heads on the encoder's
        embeddings), and the encoder itself is attached with :meth:`attach_encoder` (it is not
        part of this model's weights).
    preprocessing
        JSON-able settings the data side needs to feed this model (thumbnail mpp, detail mpp,
        crop size, feature names …); stored in checkpoints, not used by the network.
    class_names
        Names of the slide classes, for reports.
    label
        The clinical column the classes come from (for reports).
    focus_target
        What the focus predictor learns (:func:`~workbench.models.focus_target`):
        ``"detail"`` (default: no attribution; the focus learns the detail branch's lesion
        answer on the magnified crops, which without masks is trained from the slide labels
        by multiple-instance pooling), ``"lesion"`` (the attribution of the evidence for a
        class other than class 0, zero on class-0 slides, plus back-calibration) or
        ``"class"`` (the original rule: the attribution of the evidence for each slide's own
        class). Except with ``"class"``, region labels (from annotations) are the focus
        target wherever they exist. On the real EBHI biopsy cohort the slide classifier's own
        evidence sits *off* the tumour (the stroma around it tells adenocarcinoma from
        dysplasia), so attribution targets pull the focus away from the lesion; see
        ``benchmarks/ebhi_cohort.py``.
    lesion_mil
        Train the detail branch's lesion answer from slide labels by multiple-instance
        pooling (:func:`~workbench.models.mil_lesion_loss`) on slides without masks, so that
        back-calibration pulls the focus toward something learnt. ``False`` leaves it
        untrained there (the original behaviour).
    confirm_candidates
        At inference, let the detail branch confirm the focus: the focus predictor proposes
        this many spread-out regions (graph NMS), all are magnified, and the ``top_k`` with
        the highest detail lesion answer become the focus regions. ``0`` (default) keeps the
        focus predictor's own top ``top_k``. Costs ``confirm_candidates`` crops per slide
        instead of ``top_k``; training is unchanged. Can be changed on a trained model
        (``model.config["confirm_candidates"] = 12``).
    confirm_by
        What ranks the proposals when ``confirm_candidates`` is on (:data:`CONFIRM_RULES`):
        ``"lesion"`` (default: the detail branch's pooled lesion answer of each crop) or
        ``"evidence"`` (the peak of the window-averaged evidence map inside each crop, by
        :func:`~workbench.models.evidence_peaks`: the frozen tile encoder's own
        class-evidence map when it has one, e.g. the adenocarcinoma evidence of
        ``crc_biopsy``, else the detail branch's pixel lesion map). The crop-level lesion
        answer cannot tell a tumour gland from the stroma beside it when one crop spans
        both; the evidence peak can. Can be changed on a trained model too.
    risk_focus
        Survival models only (``n_classes=1``): how the focus is calibrated and chosen.
        ``"raise"`` (default): the focus predictor learns ``sigmoid(r)`` of each magnified
        crop's detail risk ``r`` and the top scores are chosen, i.e. the regions that raise the
        risk most. ``"two-sided"``: it learns ``sigmoid(r - median)``, the crop's risk relative
        to the median over the slide's crops (scores stay a signed relative risk: above 0.5
        raises the risk, below lowers it), and the focus regions are those whose score departs
        most from the slide's median score in *either* direction (a protective immune
        infiltrate as much as high-grade tumour). On the planted synthetic cohort's validation
        patients the two-sided focus sat on the protective boundary band more often (0.64 vs
        0.38) but the model's C was lower (0.62 vs 0.68), and under a null cohort its focus
        still went to the band; see ``benchmarks/prognostic.py``.
    """

    kind = "sew"
    reads = frozenset({"crops"})
    takes_encoder = True
    has_detail = True
    region_score = "focus predictor"

    def __init__(
        self,
        *,
        in_features: int,
        n_classes: int = 2,
        hidden: int = 64,
        gcn_layers: int = 3,
        transformer_layers: int = 0,
        heads: int = 4,
        dropout: float = 0.1,
        focus_hidden: int = 64,
        top_k: int = 4,
        nms_hops: int = 1,
        detail_width: int = 16,
        embed_dim: int = 64,
        encoder: dict | None = None,
        preprocessing: dict | None = None,
        class_names: list[str] | None = None,
        label: str | None = None,
        focus_target: str = "detail",
        lesion_mil: bool = True,
        confirm_candidates: int = 0,
        confirm_by: str = "lesion",
        risk_focus: str = "raise",
    ) -> None:
        super().__init__()
        from workbench._errors import OptionError

        if confirm_by not in CONFIRM_RULES:
            raise OptionError(f"confirm_by must be one of {CONFIRM_RULES}, not {confirm_by!r}")
        if risk_focus not in RISK_FOCUS_RULES:
            raise OptionError(f"risk_focus must be one of {RISK_FOCUS_RULES}, got {risk_focus!r}")
        assert focus_target in FOCUS_TARGETS, f"focus_target must be one of {FOCUS_TARGETS}"
        assert n_classes >= 2 or focus_target == "detail", (
            "a survival model (n_classes=1) needs focus_target='detail'"
        )
        if class_names is not None:
            assert len(class_names) == n_classes, "class_names must have n_classes entries"
        self.config = {
            "in_features": in_features,
            "n_classes": n_classes,
            "hidden": hidden,
            "gcn_layers": gcn_layers,
            "transformer_layers": transformer_layers,
            "heads": heads,
            "dropout": dropout,
            "focus_hidden": focus_hidden,
            "top_k": top_k,
            "nms_hops": nms_hops,
            "detail_width": detail_width,
            "embed_dim": embed_dim,
            "encoder": copy.deepcopy(encoder) if encoder else None,
            "preprocessing": copy.deepcopy(preprocessing or {}),
            "class_names": list(class_names) if class_names else None,
            "label": label,
            "focus_target": focus_target,
            "lesion_mil": bool(lesion_mil),
            "confirm_candidates": int(confirm_candidates),
            "confirm_by": confirm_by,
            "risk_focus": risk_focus,
        }
        self.global_branch = GlobalBranch(**{k: self.config[k] for k in GLOBAL_BRANCH_OPTIONS})
        self.focus = FocusPredictor(
            token_dim=hidden, hidden=focus_hidden, top_k=top_k, hops=nms_hops
        )
        if encoder:
            self.detail = EncoderDetail(in_dim=int(encoder["embed_dim"]), embed_dim=embed_dim)
        else:
            self.detail = DetailBranch(in_channels=3, width=detail_width, embed_dim=embed_dim)
        self.project = nn.Sequential(
            nn.Linear(hidden, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim)
        )
        self.detail_classifier = nn.Linear(embed_dim, n_classes)

    @property
    def tile_encoder(self) -> TileEncoder | None:
        """The attached frozen tile encoder (``None`` with the built-in detail network)."""
        return getattr(self.detail, "encoder", None)

    def attach_encoder(self, encoder: TileEncoder) -> None:
        """Attach the frozen tile encoder this model was built for (see ``encoder``).

        Parameters
        ----------
        encoder
            The encoder whose ``spec()`` matches the one recorded in the configuration.
        """
        from workbench.models._encoder import check_encoder

        check_encoder(self.config.get("encoder"), encoder)
        self.detail.attach(encoder)

    # ------------------------------------------------------------------------------------
    def forward_global(self, features: torch.Tensor, edge_index: torch.Tensor) -> dict:
        """Global branch and focus scores of one slide.

        Parameters
        ----------
        features
            ``(N, F)`` region features.
        edge_index
            ``(2, E)`` region adjacency.

        Returns
        -------
        dict
            The :class:`GlobalBranch` outputs (``tokens``, ``logits``, ``node_logits``,
            ``attention``, ``slide_embedding``) plus ``focus_logits`` and ``focus_scores``
            (N,).
        """
        out = dict(self.global_branch(features, edge_index))
        focus = self.focus(out["tokens"])
        out["focus_logits"] = focus["logits"]
        out["focus_scores"] = focus["scores"]
        return out

    def select_focus(
        self,
        focus_scores: torch.Tensor,
        edge_index: torch.Tensor,
        *,
        k: int | None = None,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Indices of the focus regions (graph NMS over the focus scores; for a survival
        model with ``risk_focus="two-sided"`` over their distance from the median score).

        Parameters
        ----------
        focus_scores
            ``(N,)`` focus scores of every region of the slide.
        edge_index
            ``(2, E)`` region adjacency.
        k
            Regions to pick (default: the focus predictor's ``top_k``).
        candidates
            Node indices to choose among (default: every region).

        Returns
        -------
        torch.Tensor
            ``(K,)`` long node indices of the focus regions.
        """
        if self.predicts_risk and self.config.get("risk_focus") == "two-sided":
            focus_scores = _two_sided(focus_scores)  # extreme relative risk, either way
        return self.focus.select(focus_scores, edge_index, k=k, candidates=candidates)

    def forward_detail(
        self,
        crops: torch.Tensor | None,
        tokens: torch.Tensor | None = None,
        *,
        embeddings: torch.Tensor | None = None,
    ) -> dict:
        """Detail branch on magnified crops of focus regions.

        Parameters
        ----------
        crops
            ``(K, 3, S, S)`` float images in ``[0, 1]``.
        tokens
            ``(K, hidden)`` node tokens of the same regions, to be projected (optional).
        embeddings
            Instead of ``crops``: cached ``(K, E)`` embeddings of a frozen tile encoder.

        Returns
        -------
        dict
            ``lesion_logits`` (K, 1, S, S), ``lesion_prob`` (K,), ``embedding`` (K, E),
            ``detail_logits`` (n_classes,) from the mean embedding, and ``projected`` (K, E)
            when tokens are given.
        """
        if embeddings is not None:
            if not isinstance(self.detail, EncoderDetail):
                raise ValueError("embeddings= needs a model built with a frozen tile encoder")
            det = self.detail.from_embeddings(embeddings)
        else:
            det = self.detail(crops)
        logits = det["logits"]
        if crops is not None and logits.shape[-2:] != crops.shape[-2:]:
            logits = logits.expand(-1, -1, *crops.shape[-2:])  # one logit per crop, as a map
        out = {
            "lesion_logits": logits,
            "lesion_prob": det["lesion_prob"],
            "embedding": det["embedding"],
            "detail_logits": self.detail_classifier(det["embedding"].mean(0)),
        }
        if tokens is not None:
            out["projected"] = self.project(tokens)
        return out

    def forward(
        self,
        features: torch.Tensor,
        edge_index: torch.Tensor,
        crops: torch.Tensor | None = None,
        focus_index: torch.Tensor | None = None,
    ) -> dict:
        """Classify one slide, with the magnified crops of its focus regions when given.

        Without ``crops`` the answer is the global branch's alone (``logits`` equals
        ``global_logits``). With ``crops`` (one per entry of ``focus_index``, typically the
        regions picked by :meth:`select_focus`), the detail outputs are added and
        ``logits = global_logits + detail_logits``.

        Parameters
        ----------
        features
            ``(N, F)`` region features.
        edge_index
            ``(2, E)`` region adjacency.
        crops
            ``(K, 3, S, S)`` float crops in ``[0, 1]`` of the regions in ``focus_index``.
        focus_index
            ``(K,)`` node index of each crop.

        Returns
        -------
        dict
            Everything :meth:`forward_global` returns (its ``logits`` renamed
            ``global_logits``), ``logits`` (n_classes,), and with crops the
            :meth:`forward_detail` outputs and ``focus_index``.
        """
        out = self.forward_global(features, edge_index)
        out["global_logits"] = out.pop("logits")
        out["logits"] = out["global_logits"]
        if crops is not None:
            assert focus_index is not None, "pass focus_index (the node of every crop) with crops"
            focus_index = torch.as_tensor(focus_index, dtype=torch.long, device=crops.device)
            assert focus_index.shape[0] == crops.shape[0], "one focus_index entry per crop"
            det = self.forward_detail(crops, out["tokens"][focus_index])
            out.update(det)
            out["focus_index"] = focus_index
            out["logits"] = out["global_logits"] + det["detail_logits"]
        return out

    # ------------------------------------------------------------------ SlideModel hooks
    @classmethod
    def for_training(
        cls, *, in_features: int, encoder: dict | None = None, **kwargs
    ) -> SelfCalibratedModel:
        """The model ``SlideTrainer`` builds (see :meth:`SlideModel.for_training`).

        Parameters
        ----------
        in_features
            Region feature size.
        encoder
            A frozen tile encoder's ``spec()``, or ``None`` for the built-in network.
        **kwargs
            The other constructor arguments.

        Returns
        -------
        SelfCalibratedModel
            A new, untrained model.
        """
        return cls(in_features=in_features, encoder=encoder, **kwargs)

    def fit_scaling(
        self, samples: Sequence[SlideSample], *, device: torch.device, seed: int
    ) -> None:
        """Standardise the region features and, with a frozen encoder, its crop embeddings
        (see :meth:`SlideModel.fit_scaling`).

        Parameters
        ----------
        samples
            The training slides.
        device
            Where to run the frozen encoder over images that have no cached embeddings.
        seed
            Seeds the subsampling of the slides.
        """
        self.global_branch.set_feature_scaling(*feature_scaling(samples))
        if not hasattr(self.detail, "set_embedding_scaling"):
            return
        stats = embedding_scaling(
            samples,
            cached="crop_embeddings",
            images="crops",
            encoder=self.tile_encoder,
            device=device,
            seed=seed,
        )
        if stats is not None:
            self.detail.set_embedding_scaling(*stats)

    def ready_for_early_stopping(self, weights: Mapping[str, float]) -> bool:
        """Only once the detail branch is on do validation losses compare like with like.

        Parameters
        ----------
        weights
            The epoch's curriculum weights.

        Returns
        -------
        bool
            Whether the detail weight is above 0.
        """
        return weights["detail"] > 0

    def training_step(
        self, sample: SlideSample, ctx: StepContext
    ) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """Slide, node and focus losses, then (by the curriculum) detail, consistency and
        back-calibration (see :meth:`SlideModel.training_step`).

        Parameters
        ----------
        sample
            The cached slide.
        ctx
            The trainer's step context.

        Returns
        -------
        tuple
            ``(total loss, {term name: loss}, slide logits (n_classes,))``.
        """
        s, w, dev = sample, ctx.weights, ctx.device
        x = s.features.to(dev).float()
        ei = s.edge_index.to(dev)
        out = self.forward_global(x, ei)
        logits = out["logits"]
        parts = {"slide": ctx.slide_loss(logits, s.label)}
        kind = self.config.get("focus_target", "class")
        labels = s.node_labels.to(dev) if s.node_labels is not None else None
        known = labels >= 0 if labels is not None and kind != "class" else None
        if kind != "detail":
            target = focus_target(logits, out["tokens"], s.label, kind=kind)
            if known is not None:  # region labels, where they exist, are the target
                target = torch.where(known, labels.to(target.dtype), target)
            parts["focus"] = focus_loss(out["focus_logits"], target)
        elif known is not None and bool(known.any()):
            parts["focus"] = binary_kl(out["focus_logits"][known], labels[known].float())
        if labels is not None:
            parts["node"] = node_loss(out["node_logits"], labels)
        final_logits = logits
        have_crops = (
            s.crop_nodes is not None
            and len(s.crop_nodes)
            and (s.crop_embeddings is not None or s.crops is not None)
        )
        if w["detail"] > 0 and have_crops:
            crop_nodes = s.crop_nodes.to(dev)
            if s.crop_embeddings is not None:
                det = self.detail.from_embeddings(s.crop_embeddings.to(dev))
            else:
                det = self.detail(ctx.images(s.crops))
            if s.crop_masks is not None:
                masks = s.crop_masks.to(dev).float()
                if getattr(self.detail, "pixel_maps", True):
                    parts["detail"] = detail_mask_loss(det["logits"], masks)
                else:  # one lesion logit per crop: its target is the crop's lesion share
                    pooled = det["logits"].flatten(1).mean(1)
                    parts["detail"] = binary_kl(pooled, masks.flatten(1).mean(1))
            elif self.config.get("lesion_mil", False) and not self.predicts_risk:  # MIL
                prob = det["lesion_prob"].clamp(1e-6, 1 - 1e-6)
                parts["detail"] = mil_lesion_loss(torch.logit(prob), s.label)
            # The magnified view's answer the focus is calibrated on: the lesion probability
            # or, for a survival model, each crop's detail risk (its share of the slide risk:
            # the detail head is linear, so the mean over crops is the detail risk) by the
            # risk_focus rule.
            answer = det["lesion_prob"]
            if self.predicts_risk:
                risk = self.detail_classifier(det["embedding"])[:, 0]
                answer = _risk_answer(risk, self.config["risk_focus"])
            if kind == "detail":  # the focus learns the magnified view's lesion answer
                seen = binary_kl(out["focus_logits"][crop_nodes], answer.detach())
                parts["focus"] = parts["focus"] + seen if "focus" in parts else seen
            chosen = self.select_focus(out["focus_scores"], ei, candidates=crop_nodes)
            emb = det["embedding"][first_rows(crop_nodes, chosen)]
            final_logits = logits + self.detail_classifier(emb.mean(0))
            mil = ctx.slide_loss(final_logits, s.label)
            parts["detail"] = parts.get("detail", 0.0) + mil
            if w["consistency"] > 0:
                parts["consistency"] = consistency_loss(self.project(out["tokens"][chosen]), emb)
                parts["calibration"] = back_calibration_loss(
                    out["focus_logits"][crop_nodes], answer
                )
        total = sum(w[k] * v for k, v in parts.items())
        return total, parts, final_logits

    def predict_logits(
        self, sample: SlideSample, *, device: torch.device, crop_source: Callable | None = None
    ) -> torch.Tensor:
        """Global logits plus the detail logits of the focus regions chosen among all regions
        (crops from ``crop_source``) or, without a source, among the sample's cached crops.

        Parameters
        ----------
        sample
            The cached slide.
        device
            Where the model is.
        crop_source
            ``crop_source(nodes)`` -> uint8 crops or frozen-encoder embeddings of any region;
            ``None``: choose among the sample's cached crops.

        Returns
        -------
        torch.Tensor
            ``(n_classes,)`` logits.
        """
        s = sample
        x = s.features.to(device).float()
        ei = s.edge_index.to(device)
        g = self.forward_global(x, ei)
        if crop_source is not None:
            idx = self.select_focus(g["focus_scores"], ei)
            got = crop_source(idx.cpu().tolist())
        else:
            nodes = s.crop_nodes.to(device)
            idx = self.select_focus(g["focus_scores"], ei, candidates=nodes)
            rows = first_rows(nodes, idx).cpu()
            got = (s.crop_embeddings if s.crop_embeddings is not None else s.crops)[rows]
        if got.dtype == torch.uint8:
            det = self.forward_detail(to_float_image(got, device))
        else:
            det = self.forward_detail(None, embeddings=got.to(device))
        return g["logits"] + det["detail_logits"]

    @torch.no_grad()
    def confirm_scores(self, images: torch.Tensor, detail: Mapping) -> torch.Tensor:
        """How strongly each proposal crop shows the lesion, by the ``confirm_by`` rule.

        Parameters
        ----------
        images
            ``(M, 3, S, S)`` float crops in ``[0, 1]`` of the proposals.
        detail
            :meth:`forward_detail` of those crops.

        Returns
        -------
        torch.Tensor
            ``(M,)`` scores, higher = more lesion: the pooled lesion probability
            (``"lesion"``) or the peak of the window-averaged evidence map (``"evidence"``:
            the tile encoder's evidence maps, else the detail branch's lesion maps).
        """
        if self.config.get("confirm_by", "lesion") == "evidence":
            maps = None
            enc = self.tile_encoder
            if enc is not None and hasattr(enc, "evidence_maps"):
                maps = enc.evidence_maps(images)
            if maps is None:  # a one-logit-per-crop branch gives a constant map here
                maps = torch.sigmoid(detail["lesion_logits"][:, 0])
            return evidence_peaks(maps)["value"]
        return detail["lesion_prob"].reshape(-1)

    @torch.no_grad()
    def infer(self, inputs: SlideInputs, *, top_k: int | None = None) -> dict:
        """Global branch, focus regions by graph NMS, their magnified crops through the detail
        branch (see :meth:`SlideModel.infer`).

        Parameters
        ----------
        inputs
            The slide's tensors (:class:`SlideInputs`).
        top_k
            Focus regions to pick (default: the model's ``top_k``).

        Returns
        -------
        dict
            ``logits`` (global + detail), ``global_logits``, ``region_scores`` (the focus
            scores), ``region_features`` (node tokens), ``focus_index``, ``lesion_prob`` and
            ``lesion_maps`` of the focus regions, and ``region_lesion_prob`` (the detail
            branch's answer on focus regions, the node head's estimate elsewhere).
        """
        x, ei = inputs.features, inputs.edge_index
        g = self.forward_global(x, ei)
        k = max(1, min(int(top_k or self.focus.top_k), x.shape[0]))
        m = min(int(self.config.get("confirm_candidates") or 0), x.shape[0])
        if m > k:
            # the detail branch confirms: magnify m proposals, keep the k most lesion-like
            cand = self.select_focus(g["focus_scores"], ei, k=m)
            images = inputs.crops(cand.cpu().tolist())
            probe = self.forward_detail(images, g["tokens"][cand])
            score = self.confirm_scores(images, probe)
            order = torch.argsort(score.reshape(-1), descending=True, stable=True)[:k]
            idx = cand[order.to(cand.device)]
        else:
            idx = self.select_focus(g["focus_scores"], ei, k=k)
        det = self.forward_detail(inputs.crops(idx.cpu().tolist()), g["tokens"][idx])
        lesion = torch.softmax(g["node_logits"], -1)[:, 1].clone()
        lesion[idx] = det["lesion_prob"].to(lesion.dtype)
        return {
            "logits": g["logits"] + det["detail_logits"],
            "global_logits": g["logits"],
            "slide_embedding": g["slide_embedding"],
            "region_scores": g["focus_scores"],
            "region_features": g["tokens"],
            "focus_index": idx,
            "lesion_prob": det["lesion_prob"],
            "lesion_maps": torch.sigmoid(det["lesion_logits"][:, 0]),
            "region_lesion_prob": lesion,
        }
