"""Explaining one slide with a trained model: ``tl.extract`` (the per-slide AnnData) and
``tl.predict_tiles`` (the exhaustive-tiling baseline's prediction), with their input handling."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from workbench._constants import EXPLAIN, SLIDE_ID, SPATIAL, X_FOCUS
from workbench.tl._calibration import model_temperature, softmax_with_temperature
from workbench.tl._engine import (
    edge_index_of,
    open_slide,
    read_crops,
    read_tiles,
    region_graph_for,
    settings_of,
    tissue_grid,
    to_tensor_images,
)

if TYPE_CHECKING:  # pragma: no cover
    import anndata

    from workbench.io import Slide

__all__ = ["extract", "load_model", "predict_tiles"]

logger = logging.getLogger(__name__)


def load_model(model, *, encoder=None, expect: type | None = None):
    """A model object from a model or a checkpoint folder of any registered kind.

    Parameters
    ----------
    model
        A :class:`~workbench.models.SlideModel` or a checkpoint folder
        (:func:`~workbench.models.load_checkpoint`).
    encoder
        The frozen tile encoder a checkpoint was trained with, when it is not at its recorded
        path (a ``.pt2`` file or a module); attached to a model object that has none.
    expect
        The model class a checkpoint must hold (``None``: any kind).

    Returns
    -------
    SlideModel
        The model (a checkpoint is loaded on the CPU, in eval mode).
    """
    if isinstance(model, str | os.PathLike):
        from workbench.models import load_checkpoint

        return load_checkpoint(model, encoder=encoder, expect=expect)
    if encoder is not None and getattr(model, "tile_encoder", None) is None:
        from workbench.models import load_encoder

        model.attach_encoder(load_encoder(encoder))
    return model


def _default_slide_id(slide) -> str:
    from workbench.io import slide_id

    path = str(slide.path)
    if path.startswith("<array:") and path.endswith(">"):
        return path[len("<array:") : -1]
    return slide_id(path)


def _check_brightfield(slide, name: str, *, force: bool):
    """The slide's own thumbnail (before any stain normalisation) and
    :func:`~workbench.pp.check_brightfield`'s answer on it; a ``NotBrightfieldWarning`` when
    it does not look like brightfield H&E (fluorescence, dark background …)."""
    import warnings

    from workbench._errors import NotBrightfieldWarning
    from workbench.pp import check_brightfield

    raw = getattr(slide, "_slide", slide)  # a StainedSlide's own slide
    thumb = raw.thumbnail(max_size=512)
    check = check_brightfield(thumb, name=name)
    if not check:
        then = (
            "graded anyway, as forced; the result will not mean much"
            if force
            else "not graded (probabilities NaN; force=True or --force-grade grades it)"
        )
        warnings.warn(
            NotBrightfieldWarning(
                f"{name} does not look like brightfield H&E: {check.reason}. The model was "
                f"trained on H&E: {then}. The verdict is stored in "
                "uns['explain']['applicability']"
            ),
            stacklevel=4,
        )
    return thumb, check


def _applicability(model, thumb, check, inputs, out: dict, *, force: bool) -> dict:
    """The slide's applicability verdict against the checkpoint's record (the slide embedding
    from ``out``, the model's ``infer`` output, when the kind gives one: no second pass)."""
    from workbench.tl._applicability import (
        applicability_verdict,
        slide_embedding,
        thumbnail_colour,
    )

    record = getattr(model, "applicability_", None)
    if record is None:
        record = (getattr(model, "checkpoint_extra_", None) or {}).get("applicability")
    colour = embedding = None
    if record is not None:
        colour = thumbnail_colour(thumb)
        if out.get("slide_embedding") is not None:
            embedding = out["slide_embedding"].detach().float().reshape(-1).cpu().numpy()
            embedding = embedding.astype(np.float64)
        else:
            embedding = slide_embedding(model, inputs.features, inputs.edge_index)
    return applicability_verdict(check, record, colour=colour, embedding=embedding, forced=force)


def _class_names(model, n: int) -> list[str]:
    names = getattr(model, "config", {}).get("class_names")
    return list(names) if names else [f"class {i}" for i in range(n)]


def extract(
    slide: Slide | str | os.PathLike,
    model,
    *,
    mpp: float | None = None,
    top_k: int | None = None,
    graph: anndata.AnnData | None = None,
    device: str | None = None,
    lesion_threshold: float = 0.5,
    slide_id: str | None = None,
    encoder=None,
    batch_size: int = 32,
    force: bool = False,
    confirm_candidates: int | None = None,
    confirm_by: str | None = None,
) -> anndata.AnnData:
    """Explain one slide with a model of any kind: region graph, region scores, focus regions,
    slide probabilities (and, with a detail branch, lesion maps).

    The slide is read through the same engine (:mod:`workbench.tl._engine`) and with the same
    settings as in training, stain normalisation included; never the whole of level 0. The
    model's own :meth:`~workbench.models.SlideModel.infer` decides what it reads: the
    self-calibrated model (``"sew"``) the thumbnail and ``top_k`` magnified crops,
    ``"global"`` the thumbnail only, ``"abmil"`` every tissue tile (in batches). Every kind
    writes the same layout, so plots, reports, the QuPath export and the marker discovery
    read any of them.

    Parameters
    ----------
    slide
        A :class:`~workbench.io.Slide` or a path.
    model
        A trained :class:`~workbench.models.SlideModel` of any registered kind, or its
        checkpoint folder.
    mpp
        Microns per pixel to use when the file does not record it.
    top_k
        Number of focus regions (default: the model's ``top_k``, else 4).
    graph
        A precomputed :func:`workbench.pp.region_graph` of this slide (else computed with the
        model's preprocessing settings).
    device
        Torch device (default CPU).
    lesion_threshold
        Probability above which a lesion-map pixel counts as lesion (for outlines/export).
    slide_id
        Identifier stored in ``uns["slide_id"]`` (default: :func:`workbench.io.slide_id` of the
        file name).
    encoder
        The frozen tile encoder a checkpoint was trained with, when it is not at the path
        the checkpoint records (a ``.pt2`` file or a module).
    batch_size
        Tiles per batch for kinds that read every tile.
    force
        Grade the slide even when it does not look like brightfield H&E (see
        ``applicability`` below); the verdict and its reasons are stored either way.
    confirm_candidates
        Self-calibrated models (``"sew"``) only: for this call, let the detail side confirm
        the focus among this many proposals (``0``: the focus predictor's own top-K;
        default: the model's setting, see :class:`~workbench.models.SelfCalibratedModel`).
    confirm_by
        Self-calibrated models only: for this call, what ranks the proposals,
        ``"lesion"`` or ``"evidence"`` (:data:`~workbench.models.CONFIRM_RULES`; default:
        the model's setting). The model itself is left as it was.

    Returns
    -------
    AnnData
        The region graph (see :func:`workbench.pp.region_graph`) plus
        ``obs["focus_score"]`` (the kind's region score in ``[0, 1]``, the heat map: the focus
        predictor for ``"sew"``, the gradient attribution of the predicted class for
        ``"global"``, the mean tile attention for ``"abmil"``), ``obs["is_focus"]`` (one of
        the top-K after graph NMS), ``obs["lesion_prob"]`` (the detail branch's pooled lesion
        probability for focus regions and the global node head's estimate elsewhere; **NaN
        for kinds without a detail branch**), ``obsm["X_focus"]`` (region features: node
        tokens, or for ``"abmil"`` the mean embedding of the region's tiles),
        ``uns["slide_id"]`` and ``uns["explain"]`` with ``kind`` (the registered kind name),
        ``model`` (its class), ``region_score`` (what ``focus_score`` is), ``label`` (the
        clinical column it learnt), ``class_names``, ``probabilities`` (slide, final,
        calibrated: ``softmax(logits / T)`` with the temperature ``T`` the checkpoint
        carries), ``raw_probabilities`` (the same before calibration), ``temperature`` (1.0
        for a model without one), ``global_probabilities`` (the thumbnail branch alone,
        uncalibrated; NaN for ``"abmil"``, which has none), ``predicted_class``,
        ``predicted_label``, ``slide`` (metadata), ``stain`` (the normalisation method or
        ``"none"``), ``encoder`` (its name, or ``"builtin"``), ``lesion_threshold`` and
        ``focus`` = {``obs_index``, ``region_id``, ``centers_xy``, ``peak_xy`` (level-0: the
        point of each focus crop where the lesion evidence peaks, see :func:`focus_peaks`),
        ``peak_source`` (``"encoder"``, ``"lesion_map"`` or ``"center"``), ``boxes_xywh`` (level-0),
        ``focus_score``, ``lesion_prob`` (NaN without a detail branch), ``crops`` (K, S, S, 3
        uint8 at the detail magnification, stain-normalised when the model was trained so),
        ``lesion_maps`` (K, S, S float32 probabilities; NaN without a detail branch),
        ``detail_mpp``, ``crop_size``, ``selection`` (how the regions were chosen, in words:
        ``"top 4 by focus predictor"`` or, with ``confirm_candidates``, e.g. ``"top 4 of 24
        proposals by evidence peak"``)}, and ``applicability`` = {``applicable`` (bool: the
        slide looks like brightfield H&E and lies within the training distribution the
        checkpoint records), ``score`` (distance from the training slides in units of the
        threshold set on them, above 1 off-domain; NaN when the checkpoint has no record),
        ``reasons`` (one sentence each; ``"no applicability record in this checkpoint"``
        for an older checkpoint), ``brightfield`` and ``graded``}. A slide that is not
        brightfield H&E is **not graded** unless ``force``: ``probabilities``,
        ``raw_probabilities`` and ``global_probabilities`` are NaN, ``predicted_class`` is
        -1 and ``predicted_label`` is ``""`` (a survival model's ``risk`` is NaN; the focus
        regions and heat map are kept). An off-domain slide is graded and flagged
        (``applicable`` False). The keys are the same for every kind. A survival
        model (trained with ``SlideTrainer(target="survival")``, ``n_classes=1``) writes
        ``risk`` (the slide risk, global + detail: a log relative hazard, **higher = shorter
        survival**; comparable between slides of one model only), ``global_risk`` (the
        thumbnail branch alone; NaN for kinds without one) and ``target`` = ``"survival"``
        instead of ``probabilities``, ``raw_probabilities``, ``temperature``,
        ``global_probabilities``, ``predicted_class`` and ``predicted_label``; the region
        scores and focus regions are as for every kind.

    Raises
    ------
    MissingResolutionError
        The slide records no mpp and none was given.
    NoTissueError
        A kind that reads tiles found no tissue tile.
    OptionError
        ``confirm_candidates``/``confirm_by`` for a kind that does not confirm its focus, a
        negative ``confirm_candidates`` or an unknown ``confirm_by``.
    """
    model = load_model(model, encoder=encoder)
    override = _confirm_override(model, confirm_candidates, confirm_by)
    if not override:
        return _extract(slide, model, mpp=mpp, top_k=top_k, graph=graph, device=device,
                        lesion_threshold=lesion_threshold, slide_id=slide_id,
                        batch_size=batch_size, force=force)  # fmt: skip
    before = {k: model.config.get(k) for k in override}
    model.config.update(override)
    try:
        return _extract(slide, model, mpp=mpp, top_k=top_k, graph=graph, device=device,
                        lesion_threshold=lesion_threshold, slide_id=slide_id,
                        batch_size=batch_size, force=force)  # fmt: skip
    finally:
        model.config.update(before)


def _confirm_override(model, candidates: int | None, by: str | None) -> dict:
    """The ``confirm_candidates``/``confirm_by`` settings one extraction asks for, checked."""
    from workbench._errors import OptionError
    from workbench.models import CONFIRM_RULES

    out: dict = {}
    if candidates is None and by is None:
        return out
    if "confirm_candidates" not in getattr(model, "config", {}):
        raise OptionError(
            f"confirm_candidates/confirm_by are for self-calibrated models ('sew'), not a "
            f"{type(model).__name__}"
        )
    if candidates is not None:
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 0:
            raise OptionError(f"confirm_candidates must be a whole number >= 0, not {candidates!r}")
        out["confirm_candidates"] = int(candidates)
    if by is not None:
        if by not in CONFIRM_RULES:
            raise OptionError(f"confirm_by must be one of {CONFIRM_RULES}, not {by!r}")
        out["confirm_by"] = by
    return out


def _extract(
    slide, model, *, mpp, top_k, graph, device, lesion_threshold, slide_id, batch_size, force
) -> anndata.AnnData:
    """:func:`extract` once the model is loaded and its confirmation settings are in place."""
    import torch

    from workbench.models import kind_of

    kind = kind_of(model)
    pre = settings_of(model)
    slide = open_slide(slide, pre, mpp=mpp)
    slide.require_mpp()
    sid = str(slide_id or _default_slide_id(slide))
    thumb, check = _check_brightfield(slide, sid, force=force)
    dev = torch.device(device or "cpu")
    model = model.to(dev).eval()
    if graph is None:
        adata = region_graph_for(slide, pre)
    else:
        adata = graph.copy()
    names = pre.get("feature_names")
    if names is not None and list(adata.var_names) != list(names):
        raise ValueError(
            "the region features do not match the ones the model was trained on "
            f"({adata.n_vars} vs {len(names)} columns); recompute the region graph with this "
            "workbench version"
        )
    inputs = _SlideInputs(slide, adata, pre, dev, batch_size=batch_size)
    with torch.no_grad():
        out = model.infer(inputs, top_k=top_k)
    idx_np = out["focus_index"].cpu().numpy().astype(np.int64)
    k, n_classes = len(idx_np), int(out["logits"].shape[-1])
    size, dmpp = inputs.size, inputs.detail_mpp
    crops, boxes = inputs.focus_crops(idx_np)
    raw_logits = out["logits"].float().cpu().numpy().astype(np.float64)
    if "global_logits" in out:
        gprobs = torch.softmax(out["global_logits"], -1).cpu().numpy().astype(np.float64)
    else:
        gprobs = np.full(n_classes, np.nan)
    temperature = model_temperature(model)
    raw_probs = softmax_with_temperature(raw_logits, 1.0)
    probs = softmax_with_temperature(raw_logits, temperature)
    _require_finite_probabilities(probs, sid, model, {"region features": inputs.features})
    applicability = _applicability(model, thumb, check, inputs, out, force=force)
    focus_score = out["region_scores"].float().cpu().numpy().astype(np.float32)
    lesion = _numpy_or_nan(out.get("region_lesion_prob"), (adata.n_obs,))
    det_prob = _numpy_or_nan(out.get("lesion_prob"), (k,))
    maps = _numpy_or_nan(out.get("lesion_maps"), (k, size, size))
    is_focus = np.zeros(adata.n_obs, dtype=bool)
    is_focus[idx_np] = True
    adata.obs["focus_score"] = focus_score
    adata.obs["lesion_prob"] = lesion
    adata.obs["is_focus"] = is_focus
    adata.obsm[X_FOCUS] = out["region_features"].float().cpu().numpy().astype(np.float32)
    classes = _class_names(model, len(probs))
    pred = int(np.argmax(probs))
    predicted_label = classes[pred]
    if not applicability["graded"]:  # not brightfield H&E and not forced: no grade
        probs, raw_probs = np.full_like(probs, np.nan), np.full_like(raw_probs, np.nan)
        gprobs = np.full_like(gprobs, np.nan)
        pred, predicted_label = -1, ""
    region_ids = (
        adata.obs["region_id"].to_numpy()[idx_np] if "region_id" in adata.obs else idx_np + 1
    )
    centers = np.asarray(adata.obsm[SPATIAL])[idx_np]
    adata.uns[SLIDE_ID] = sid
    stain = pre.get("stain")
    enc = model.tile_encoder
    peaks, peak_source = _focus_peaks(enc, crops, boxes, maps, centers)
    adata.uns[EXPLAIN] = {
        "kind": kind,
        "model": type(model).__name__,
        "region_score": type(model).region_score,
        "label": model.config.get("label") or "",
        "class_names": classes,
        "probabilities": probs,
        "raw_probabilities": raw_probs,
        "temperature": float(temperature),
        "global_probabilities": gprobs,
        "predicted_class": pred,
        "predicted_label": predicted_label,
        "slide": slide.info.to_dict(),
        "stain": str(stain.get("method")) if isinstance(stain, Mapping) else "none",
        "encoder": enc.name if enc is not None else "builtin",
        "lesion_threshold": float(lesion_threshold),
        "focus": {
            "obs_index": idx_np,
            "region_id": np.asarray(region_ids, dtype=np.int64),
            "centers_xy": centers.astype(np.float64),
            "peak_xy": peaks,
            "peak_source": peak_source,
            "boxes_xywh": boxes,
            "focus_score": focus_score[idx_np],
            "lesion_prob": det_prob,
            "crops": crops,
            "lesion_maps": maps,
            "detail_mpp": dmpp,
            "crop_size": size,
            "selection": _selection(model, k, adata.n_obs),
        },
        "applicability": applicability,
    }
    if model.predicts_risk:  # a survival model: its one output is a risk, not a class
        ex = adata.uns[EXPLAIN]
        for key in (
            "probabilities",
            "raw_probabilities",
            "temperature",
            "global_probabilities",
            "predicted_class",
            "predicted_label",
        ):
            ex.pop(key)
        ex["target"] = "survival"
        graded = bool(applicability["graded"])  # not brightfield H&E, not forced: no risk
        ex["risk"] = float(raw_logits[0]) if graded else float("nan")
        glob = out.get("global_logits")
        ex["global_risk"] = (
            float(glob.reshape(-1)[0]) if glob is not None and graded else float("nan")
        )
        logger.info(
            "extract (%s): %s -> risk %.3f, %d focus regions", kind, slide.path, ex["risk"], k
        )
        return adata
    logger.info(
        "extract (%s): %s -> %s, %d focus regions%s; added obs focus_score/lesion_prob/"
        "is_focus, obsm['X_focus'], uns['explain']",
        kind,
        slide.path,
        f"{classes[pred]} (p={probs[pred]:.3f})" if pred >= 0 else "not graded",
        k,
        ""
        if applicability["applicable"]
        else " (flagged: " + "; ".join(applicability["reasons"]) + ")",
    )
    return adata


def _selection(model, k: int, n_regions: int) -> str:
    """How the focus regions were chosen, in words (``uns["explain"]["focus"]["selection"]``)."""
    config = getattr(model, "config", {})
    m = min(int(config.get("confirm_candidates") or 0), n_regions)
    if m > k:
        by = config.get("confirm_by", "lesion")
        what = "evidence peak" if by == "evidence" else "detail lesion answer"
        return f"top {k} of {m} proposals by {what}"
    return f"top {k} by {type(model).region_score}"


def _numpy_or_nan(value, shape: tuple) -> np.ndarray:
    """A model output as float32 numpy, or NaN of ``shape`` when the kind has none."""
    if value is None:
        return np.full(shape, np.nan, dtype=np.float32)
    return value.float().cpu().numpy().astype(np.float32)


def focus_peaks(
    encoder, crops: np.ndarray, boxes: np.ndarray, lesion_maps: np.ndarray | None = None
) -> tuple[np.ndarray, str] | None:
    """The level-0 point of each focus crop where the lesion evidence peaks.

    The evidence is the tile encoder's own class-evidence map when it has one
    (:meth:`~workbench.models.ModuleEncoder.evidence_maps`; for ``crc_biopsy`` the
    adenocarcinoma evidence), else the detail branch's pixel lesion map (the built-in
    network); it is averaged over a window of a sixth of the crop before its maximum is
    taken, so one bright pixel does not decide (:func:`workbench.models.evidence_peaks`, the
    rule the model's evidence confirmation ranks crops by). A focus region is a superpixel of the
    thumbnail and its magnified crop often holds both lesion and the tissue beside it; the
    peak says where in the crop the lesion is.

    Parameters
    ----------
    encoder
        The model's frozen tile encoder, or ``None``.
    crops
        ``(K, S, S, 3)`` uint8 focus crops.
    boxes
        ``(K, 4)`` level-0 boxes (x, y, width, height) of the crops.
    lesion_maps
        ``(K, S, S)`` lesion probabilities of the crops, or ``None``/NaN.

    Returns
    -------
    (numpy.ndarray, str) or None
        ``(K, 2)`` level-0 points and the source (``"encoder"`` or ``"lesion_map"``);
        ``None`` when neither gives a map.
    """
    import torch

    from workbench.models import evidence_peaks

    k = len(crops)
    if k == 0:
        return None
    ev, source = None, ""
    if encoder is not None and hasattr(encoder, "evidence_maps"):
        images = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255
        maps = encoder.evidence_maps(images)
        if maps is not None:
            ev, source = maps, "encoder"
    if ev is None and lesion_maps is not None:
        m = np.asarray(lesion_maps, dtype=np.float64)
        if m.ndim == 3 and m.shape[1] > 1 and np.isfinite(m).all():
            ev, source = torch.from_numpy(m), "lesion_map"
    if ev is None:
        return None
    peak = evidence_peaks(ev)
    rows, cols = peak["row"].numpy(), peak["col"].numpy()
    h, w = ev.shape[-2:]
    b = np.asarray(boxes, float).reshape(-1, 4)
    out = np.column_stack(
        [b[:, 0] + (cols + 0.5) * b[:, 2] / w, b[:, 1] + (rows + 0.5) * b[:, 3] / h]
    )
    return out, source


def _focus_peaks(encoder, crops, boxes, maps, centers) -> tuple[np.ndarray, str]:
    found = focus_peaks(encoder, crops, boxes, maps)
    if found is None:
        return np.asarray(centers, dtype=np.float64).reshape(-1, 2), "center"
    return found


class _SlideInputs:
    """:class:`~workbench.models.SlideInputs` over a slide and its region graph: tensors on
    ``device``, crops read on demand (and kept, so the focus crops are read once), the tile
    grid and its mapping onto the regions computed on first use."""

    def __init__(self, slide, adata, pre: Mapping, device, *, batch_size: int = 32) -> None:
        import torch

        self.slide, self.adata, self.device = slide, adata, device
        self.size, self.detail_mpp = int(pre["crop_size"]), float(pre["detail_mpp"])
        self.pre, self.batch_size = pre, max(1, int(batch_size))
        self.features = torch.from_numpy(np.asarray(adata.X, dtype=np.float32)).to(device)
        self.edge_index = edge_index_of(adata).to(device)
        self._centres = np.asarray(adata.obsm[SPATIAL], dtype=np.float64).reshape(-1, 2)
        self._read: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._tiles = None

    # crops ---------------------------------------------------------------------------
    def _read_crops(self, nodes: list[int]) -> None:
        todo = [n for n in dict.fromkeys(nodes) if n not in self._read]
        if todo:
            crops, boxes = read_crops(
                self.slide, self._centres[todo], mpp=self.detail_mpp, size=self.size
            )
            for n, c, b in zip(todo, crops, boxes, strict=True):
                self._read[n] = (c, b)

    def crops(self, nodes):
        nodes = [int(n) for n in nodes]
        self._read_crops(nodes)
        return to_tensor_images(np.stack([self._read[n][0] for n in nodes]), self.device)

    def focus_crops(self, nodes) -> tuple[np.ndarray, np.ndarray]:
        """``(K, S, S, 3)`` uint8 crops and ``(K, 4)`` level-0 boxes of these regions."""
        nodes = [int(n) for n in nodes]
        self._read_crops(nodes)
        if not nodes:
            return np.zeros((0, self.size, self.size, 3), np.uint8), np.zeros((0, 4))
        crops = np.stack([self._read[n][0] for n in nodes])
        return crops, np.stack([self._read[n][1] for n in nodes]).astype(np.float64)

    # tiles ---------------------------------------------------------------------------
    def _tile_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tile corners, the region of every tile centre and the tile nearest every region."""
        if self._tiles is None:
            from scipy.spatial import cKDTree

            from workbench._constants import REGION_GRAPH

            xy = tissue_grid(self.slide, self.pre)
            if len(xy) == 0:
                from workbench._errors import NoTissueError

                raise NoTissueError(f"no tissue tiles in {self.slide.path!r}")
            side0 = self.size * self.detail_mpp / self.slide.require_mpp()
            centres = np.asarray(xy, dtype=np.float64) + side0 / 2.0
            rg = self.adata.uns[REGION_GRAPH]
            labels = np.asarray(rg["labels"])
            sx, sy = (float(v) for v in rg["scale_xy"])
            cols = np.clip((centres[:, 0] / sx).astype(np.int64), 0, labels.shape[1] - 1)
            rows = np.clip((centres[:, 1] / sy).astype(np.int64), 0, labels.shape[0] - 1)
            ids = (
                self.adata.obs["region_id"].to_numpy().astype(np.int64)
                if "region_id" in self.adata.obs
                else np.arange(1, self.adata.n_obs + 1)
            )
            lut = np.full(int(max(labels.max(), ids.max())) + 1, -1, dtype=np.int64)
            lut[ids] = np.arange(len(ids))
            tile_region = lut[labels[rows, cols]]
            _, region_tile = cKDTree(centres).query(self._centres)
            self._tiles = (xy, tile_region, np.asarray(region_tile, dtype=np.int64))
        return self._tiles

    @property
    def tile_region(self):
        import torch

        return torch.from_numpy(self._tile_grid()[1]).to(self.device)

    @property
    def region_tile(self):
        import torch

        return torch.from_numpy(self._tile_grid()[2]).to(self.device)

    def tile_batches(self):
        xy = self._tile_grid()[0]
        for start in range(0, len(xy), self.batch_size):
            batch = read_tiles(
                self.slide, xy[start : start + self.batch_size], mpp=self.detail_mpp, size=self.size
            )
            yield to_tensor_images(batch, self.device)


def _require_finite_probabilities(probs, sid: str, model, inputs: dict) -> None:
    """A slide's class probabilities are finite, or a NonFiniteError names the slide and cause."""
    if np.isfinite(probs).all():
        return
    from workbench.models._finite import nonfinite_cause, require_finite

    require_finite(
        probs, f"the class probabilities of slide {sid}", f"cause: {nonfinite_cause(model, inputs)}"
    )


# ---------------------------------------------------------------------------------------
def predict_tiles(
    slide: Slide | str | os.PathLike,
    model,
    *,
    mpp: float | None = None,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = False,
    encoder=None,
) -> dict:
    """Slide prediction of the exhaustive-tiling :class:`~workbench.models.TileABMIL`.

    Every tissue tile at the model's detail magnification is read (in batches, so memory
    stays bounded) and embedded; the embeddings are pooled once at the end. (For the full
    per-region explanation of a ``TileABMIL``, its attention mapped onto the regions, use
    :func:`extract`.)

    Parameters
    ----------
    slide
        A :class:`~workbench.io.Slide` or a path.
    model
        A trained :class:`~workbench.models.TileABMIL` or its checkpoint folder.
    mpp
        Microns per pixel to use when the file does not record it.
    batch_size
        Tiles read and embedded at once.
    device
        Torch device (default CPU).
    progress
        Show a tqdm progress bar over the batches.
    encoder
        The frozen tile encoder a checkpoint was trained with, when it is not at its
        recorded path.

    Returns
    -------
    dict
        ``probabilities`` (n_classes,; calibrated with the model's temperature, as in
        :func:`extract`), ``raw_probabilities`` (before calibration), ``temperature``,
        ``attention`` (T,), ``n_tiles``, ``tiles_xy``
        (T, 2 level-0 top-left corners).
    """
    import torch
    from tqdm.auto import tqdm

    from workbench.models import TileABMIL

    model = load_model(model, encoder=encoder, expect=TileABMIL)
    pre = settings_of(model)
    slide = open_slide(slide, pre, mpp=mpp)
    dev = torch.device(device or "cpu")
    model = model.to(dev).eval()
    size, dmpp = int(pre["crop_size"]), float(pre["detail_mpp"])
    xy = tissue_grid(slide, pre)
    if len(xy) == 0:
        from workbench._errors import NoTissueError

        raise NoTissueError(f"no tissue tiles in {slide.path!r}")
    embs = []
    with torch.no_grad():
        for start in tqdm(range(0, len(xy), batch_size), disable=not progress, desc="tiles"):
            batch = read_tiles(slide, xy[start : start + batch_size], mpp=dmpp, size=size)
            embs.append(model.embed_tiles(to_tensor_images(batch, dev)))
        out = model.pool_embeddings(torch.cat(embs))
    logits = out["logits"].float().cpu().numpy().astype(np.float64)
    probs = softmax_with_temperature(logits, model_temperature(model))
    _require_finite_probabilities(probs, _default_slide_id(slide), model, {})
    return {
        "probabilities": probs,
        "raw_probabilities": softmax_with_temperature(logits, 1.0),
        "temperature": model_temperature(model),
        "attention": out["attention"].cpu().numpy(),
        "n_tiles": int(len(xy)),
        "tiles_xy": xy,
    }
