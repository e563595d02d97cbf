"""The self-calibrated model: global branch + focus predictor + detail branch."""

from __future__ import annotations

import copy

import torch
from torch import nn

from workbench.models._detail import DetailBranch
from workbench.models._encoder import EncoderDetail, TileEncoder
from workbench.models._focus import FOCUS_TARGETS, FocusPredictor
from workbench.models._global import GLOBAL_BRANCH_OPTIONS, GlobalBranch

__all__ = ["SelfCalibratedModel"]


class SelfCalibratedModel(nn.Module):
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
        Slide classes.
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
    """

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
    ) -> None:
        super().__init__()
        assert focus_target in FOCUS_TARGETS, f"focus_target must be one of {FOCUS_TARGETS}"
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
    def preprocessing(self) -> dict:
        return self.config["preprocessing"]

    @property
    def tile_encoder(self) -> TileEncoder | None:
        """The attached frozen tile encoder (``None`` with the built-in detail network)."""
        return getattr(self.detail, "encoder", None)

    def attach_encoder(self, encoder: TileEncoder) -> None:
        """Attach the frozen tile encoder this model was built for (see ``encoder``)."""
        from workbench.models._encoder import check_encoder

        check_encoder(self.config.get("encoder"), encoder)
        self.detail.attach(encoder)

    # ------------------------------------------------------------------------------------
    def forward_global(self, features: torch.Tensor, edge_index: torch.Tensor) -> dict:
        """Global branch and focus scores of one slide.

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
        """Indices of the focus regions (graph NMS over the focus scores)."""
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
