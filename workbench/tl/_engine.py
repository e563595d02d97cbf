"""The one slide -> tensors engine: what the models read from a slide, and how.

Training (:mod:`workbench.tl._train`), extraction (:mod:`workbench.tl._explain`) and the
benchmarks read slides through these functions only, so a model sees at inference exactly
what it saw in training: the region graph of a thumbnail at the same resolution, magnified
crops at the same mpp and size centred on the same level-0 points, tissue tiles on the same
grid, the same stain normalisation, and lesion masks sampled at the same level-0 points.

Settings (``preprocessing``, stored in every checkpoint as a dict) are the fields of
:class:`workbench.pp.Preprocessing`: their defaults, ranges and meaning are written there once.
:func:`settings_of` turns a model, a dict or a ``Preprocessing`` into the complete dict every
function here reads.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._constants import ADJACENCY, REGION_GRAPH, SPATIAL
from workbench.pp._settings import Preprocessing

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import torch

    from workbench.io import Cohort, Slide

logger = logging.getLogger(__name__)

#: Entries a model's ``preprocessing`` records beside its settings (not settings themselves).
RECORDED_KEYS = ("feature_names",)


def settings_of(model_or_settings) -> dict:
    """Complete preprocessing settings as a dict: the defaults updated by the given ones.

    Parameters
    ----------
    model_or_settings
        A :class:`~workbench.pp.Preprocessing`; a dict of settings (missing ones take their
        defaults; an unknown key is refused); or a model, whose ``preprocessing`` dict is read
        (an entry this version does not know, from an older checkpoint, is ignored).

    Returns
    -------
    dict
        :meth:`Preprocessing.to_dict` of the validated settings, plus the entries of
        :data:`RECORDED_KEYS` the input carried (``feature_names``).

    Raises
    ------
    OptionError
        An unknown setting in a dict (the message lists the valid names) or a value outside
        its range (the message names the field and the allowed values).
    """
    if isinstance(model_or_settings, Preprocessing):
        return model_or_settings.to_dict()
    strict = isinstance(model_or_settings, Mapping)
    given = dict(
        model_or_settings if strict else getattr(model_or_settings, "preprocessing", None) or {}
    )
    recorded = {k: given.pop(k) for k in RECORDED_KEYS if k in given}
    if not strict:
        ignored = [k for k in given if k not in Preprocessing.names()]
        if ignored:
            logger.debug("ignoring unknown preprocessing entries %s of the model", ignored)
        given = {k: v for k, v in given.items() if k in Preprocessing.names()}
    return {**recorded, **Preprocessing.from_dict(given).to_dict()}


# ----------------------------------------------------------------------------- slides
def as_slide(slide: Slide | str | os.PathLike, *, mpp: float | None = None) -> Slide:
    """A :class:`~workbench.io.Slide` from a path or a slide (``mpp`` overrides the file's)."""
    from workbench.io import Slide

    if isinstance(slide, StainedSlide):
        return slide
    if isinstance(slide, Slide):
        if mpp is not None and slide.mpp != mpp:
            if slide.info.vendor == "array":
                raise ValueError("give mpp= to Slide.from_array, not here")
            return Slide(slide.path, mpp=mpp)
        return slide
    return Slide(slide, mpp=mpp)


class StainedSlide:
    """A slide whose thumbnails and regions come back stain-normalised.

    Everything else (``info``, ``dimensions``, ``mpp``, ``thumbnail_scale`` …) is the
    wrapped slide's, so the region graph and tile grid of a stained slide live in the same
    level-0 coordinates.

    Parameters
    ----------
    slide
        The slide.
    normalizer
        A fitted :class:`workbench.pp.StainNormalizer` (anything with ``transform(rgb)``).
    """

    def __init__(self, slide: Slide, normalizer) -> None:
        self._slide = slide
        self.normalizer = normalizer

    def __getattr__(self, name: str):
        return getattr(self._slide, name)

    def __repr__(self) -> str:
        return f"StainedSlide({self._slide!r}, {self.normalizer!r})"

    def __enter__(self) -> StainedSlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self._slide.close()

    def _apply(self, rgb: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # glass-only crops are left as they are, silently
            warnings.simplefilter("ignore", UserWarning)
            return self.normalizer.transform(rgb)

    def thumbnail(self, **kwargs) -> np.ndarray:
        return self._apply(self._slide.thumbnail(**kwargs))

    def read_region(self, *args, **kwargs) -> np.ndarray:
        return self._apply(self._slide.read_region(*args, **kwargs))


def stain_normalizer(spec) -> Any:
    """A fitted normaliser from ``None``, a fitted object or its ``to_dict`` form."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        from workbench.pp import StainNormalizer

        return StainNormalizer.from_dict(dict(spec))
    if not hasattr(spec, "transform"):
        raise TypeError(f"stain must be a fitted StainNormalizer or its dict, got {spec!r}")
    return spec


def with_stain(slide: Slide, spec) -> Slide | StainedSlide:
    """``slide`` seen through the stain normalisation ``spec`` (unchanged when ``None``)."""
    norm = stain_normalizer(spec)
    return slide if norm is None else StainedSlide(slide, norm)


def open_slide(slide, settings: Mapping | None = None, *, mpp: float | None = None):
    """Open a slide (path or Slide) with its mpp override and the settings' stain normaliser."""
    return with_stain(as_slide(slide, mpp=mpp), (settings or {}).get("stain"))


# ----------------------------------------------------------------------------- settings
def suggest_settings(slide: Slide | str | os.PathLike) -> dict:
    """Preprocessing for slides like this one: a thumbnail of about 512 px a side.

    ``thumbnail_mpp`` = long side in µm / 512, kept within 2–8 µm/px (8 µm/px for real
    slides of a centimetre or more; finer for small ones, so that their lesions still span
    several superpixels). The other settings keep their defaults.
    """
    slide = as_slide(slide)
    long_um = max(slide.dimensions) * slide.require_mpp()
    return {"thumbnail_mpp": float(min(8.0, max(2.0, long_um / 512.0)))}


def thumbnail_mpp_for(slide: Slide, settings: Mapping) -> float:
    """Thumbnail resolution for a slide: ``thumbnail_mpp``, coarsened if needed so the
    thumbnail's longer side stays within ``thumbnail_max_px`` (bounds the superpixel cost
    on very large slides)."""
    mpp = float(settings["thumbnail_mpp"])
    cap = settings.get("thumbnail_max_px")
    if cap:
        long_um = max(slide.dimensions) * slide.require_mpp()
        mpp = max(mpp, long_um / float(cap))
    return mpp


# ----------------------------------------------------------------------------- graph
def region_graph_for(slide, settings: Mapping) -> anndata.AnnData:
    """The region graph a model with these settings reads (``pp.region_graph``)."""
    from workbench.pp import region_graph

    settings = settings_of(settings)
    return region_graph(
        slide,
        thumbnail_mpp=thumbnail_mpp_for(slide, settings),
        n_segments=int(settings["n_segments"]),
    )


def edge_index_of(adata: anndata.AnnData) -> torch.Tensor:
    """``(2, E)`` long tensor of the region adjacency in ``obsp["adjacency"]``."""
    import scipy.sparse as sp
    import torch

    coo = sp.coo_matrix(adata.obsp[ADJACENCY])
    keep = coo.row < coo.col
    return torch.from_numpy(np.vstack([coo.row[keep], coo.col[keep]]).astype(np.int64))


def mask_at(mask: np.ndarray, downsample: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Values of a whole-slide boolean ``mask`` (drawn at ``downsample`` level-0 px per mask
    px) at level-0 points ``(x, y)``; points outside the mask are ``False``.

    The one rule for reading a mask at level-0 points: the mask pixel ``(r, c)`` covers
    level-0 ``[c * ds, (c + 1) * ds) x [r * ds, (r + 1) * ds)``.
    """
    mask = np.asarray(mask, dtype=bool)
    cols = np.floor(np.asarray(x, dtype=np.float64) / downsample).astype(np.int64)
    rows = np.floor(np.asarray(y, dtype=np.float64) / downsample).astype(np.int64)
    rows, cols = np.broadcast_arrays(rows, cols)
    inside = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
    out = np.zeros(rows.shape, dtype=bool)
    out[inside] = mask[rows[inside], cols[inside]]
    return out


def node_lesion_fraction(adata: anndata.AnnData, mask: np.ndarray, downsample: float) -> np.ndarray:
    """Share of each region's thumbnail pixels whose level-0 centre falls in ``mask``."""
    rg = adata.uns[REGION_GRAPH]
    labels = np.asarray(rg["labels"])
    sx, sy = (float(v) for v in rg["scale_xy"])
    ys = (np.arange(labels.shape[0]) + 0.5) * sy
    xs = (np.arange(labels.shape[1]) + 0.5) * sx
    inside = mask_at(mask, downsample, xs[None, :], ys[:, None])
    n = adata.n_obs
    lab = labels.ravel()
    total = np.bincount(lab, minlength=n + 1)[1 : n + 1].astype(float)
    hits = np.bincount(lab, weights=inside.ravel().astype(float), minlength=n + 1)[1 : n + 1]
    return hits / np.maximum(total, 1.0)


# ----------------------------------------------------------------------------- crops, tiles
def crop_boxes(slide, centers_xy: np.ndarray, *, mpp: float, size: int) -> np.ndarray:
    """``(K, 4)`` level-0 ``(x, y, width, height)`` of crops of ``size`` px at ``mpp``
    centred on level-0 points."""
    side0 = size * mpp / slide.require_mpp()
    c = np.asarray(centers_xy, dtype=np.float64).reshape(-1, 2)
    return np.column_stack([c - side0 / 2.0, np.full((len(c), 2), side0)])


def read_crops(slide, centers_xy: np.ndarray, *, mpp: float, size: int) -> tuple:
    """Square crops of ``size`` px at ``mpp`` centred on level-0 points.

    Returns
    -------
    crops
        ``(K, size, size, 3)`` uint8.
    boxes
        ``(K, 4)`` level-0 ``(x, y, width, height)`` of each crop.
    """
    boxes = crop_boxes(slide, centers_xy, mpp=mpp, size=size)
    crops = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for i, (x0, y0, _, _) in enumerate(boxes):
        crops[i] = slide.read_region((x0, y0), (size, size), mpp=mpp)
    return crops, boxes


def mask_crops(mask: np.ndarray, downsample: float, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crops ``(K, 1, size, size)`` uint8 of a lesion mask over level-0 boxes: each crop pixel
    takes the mask value at its centre's level-0 point (:func:`mask_at`)."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    out = np.zeros((len(boxes), 1, size, size), dtype=np.uint8)
    steps = np.arange(size) + 0.5
    for i, (x0, y0, w, h) in enumerate(boxes):
        xs = x0 + steps * w / size
        ys = y0 + steps * h / size
        out[i, 0] = mask_at(mask, downsample, xs[None, :], ys[:, None])
    return out


def tissue_grid(slide, settings: Mapping) -> np.ndarray:
    """Level-0 top-left corners ``(T, 2)`` of the tissue tiles at the detail magnification.

    Tissue is detected on the same thumbnail resolution as the region graph (detection on
    fine, near-full-resolution thumbnails misses pale stroma), so the tile baseline and the
    region graph see the same tissue. A slide whose tissue fills no whole tile (a small
    biopsy fragment under a large tile) keeps its tiles with the most tissue (at least half of
    the best tile's share) rather than none, so that tile models can still read it.
    """
    from workbench.pp import detect_tissue, tile_tissue

    settings = settings_of(settings)
    mask = detect_tissue(slide.thumbnail(mpp=thumbnail_mpp_for(slide, settings)))
    kw = {"mpp": float(settings["detail_mpp"]), "tile_size": int(settings["crop_size"])}
    grid = tile_tissue(slide, min_tissue=float(settings["min_tissue"]), tissue_mask=mask, **kw)
    if grid.n_obs == 0:
        grid = tile_tissue(slide, min_tissue=0.0, tissue_mask=mask, **kw)
        share = grid.obs["tissue_fraction"].to_numpy()
        if len(share) and share.max() > 0:
            grid = grid[share >= 0.5 * share.max()]
    return np.column_stack([grid.obs["x"].to_numpy(), grid.obs["y"].to_numpy()]).reshape(-1, 2)


def read_tiles(slide, corners_xy: np.ndarray, *, mpp: float, size: int) -> np.ndarray:
    """``(T, size, size, 3)`` uint8 tiles with level-0 top-left corners ``corners_xy``."""
    corners_xy = np.asarray(corners_xy).reshape(-1, 2)
    out = np.empty((len(corners_xy), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(corners_xy):
        out[i] = slide.read_region(tuple(p), (size, size), mpp=mpp)
    return out


def to_tensor_images(images: np.ndarray, device=None) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float in [0, 1]."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)
    return t.to(device) if device is not None else t


def to_uint8_tensor(images: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` uint8 (how samples keep crops compactly)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def spread_pick(nodes: np.ndarray, edge_index, n_nodes: int, k: int, rng) -> np.ndarray:
    """Up to ``k`` of ``nodes``, drawn at random but spread out (graph NMS over random scores)."""
    import torch

    from workbench.models import graph_nms

    if len(nodes) == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    scores = torch.from_numpy(rng.random(n_nodes))
    picked = graph_nms(
        scores, edge_index, k=min(k, len(nodes)), hops=1, candidates=torch.from_numpy(nodes)
    )
    return picked.numpy()


def embed_images(encoder, images: np.ndarray, *, batch_size: int = 32, device=None):
    """Frozen-encoder embeddings ``(B, E)`` of uint8 images, in batches (no gradients)."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = to_tensor_images(images[start : start + batch_size], device)
            out.append(encoder(batch)["embedding"].float().cpu())
    if not out:
        return torch.zeros((0, int(encoder.embed_dim)), dtype=torch.float32)
    return torch.cat(out)


# ----------------------------------------------------------------------------- one slide
def prepare_slide(
    slide: Slide | str | os.PathLike,
    *,
    label: int,
    settings: Mapping | None = None,
    lesion_mask: tuple[np.ndarray, float] | None = None,
    n_candidates: int = 8,
    tiles: bool = False,
    max_tiles: int = 256,
    encoder=None,
    seed: int = 0,
    name: str = "",
    mpp: float | None = None,
):
    """Read what training needs from one slide, once.

    Parameters
    ----------
    slide
        Slide or path (needs an mpp, or ``mpp=``).
    label
        Slide class index.
    settings
        Preprocessing (see the module documentation); ``stain`` is applied to the thumbnail,
        crops and tiles.
    lesion_mask
        ``(mask, downsample)`` lesion mask and its level-0 px per mask px (annotations or
        truth), or ``None`` (no node labels, no crop masks: multiple-instance learning only).
    n_candidates
        Magnified crops cached per slide: with a mask half inside lesions and half outside,
        else spread over the slide.
    tiles
        Also read tissue tiles at the detail magnification (for the tile baseline).
    max_tiles
        At most this many tiles are kept (a seeded random subset).
    encoder
        A frozen tile encoder (:class:`workbench.models.TileEncoder` with ``frozen``): crops and
        tiles are embedded once here and the embeddings cached in the sample.
    seed
        Seeds the choice of candidates and tiles.
    name
        Slide id stored in the sample.
    mpp
        Resolution override.

    Returns
    -------
    (SlideSample, AnnData)
        The cached tensors and the slide's region graph.
    """
    import torch

    from workbench.models import SlideSample

    pre = settings_of(settings)
    rng = np.random.default_rng(seed)
    slide = open_slide(slide, pre, mpp=mpp)
    adata = region_graph_for(slide, pre)
    ei = edge_index_of(adata)
    n = adata.n_obs
    node_labels = None
    if lesion_mask is not None:
        mask, ds = lesion_mask
        frac = node_lesion_fraction(adata, mask, float(ds))
        node_labels = np.full(n, -1, dtype=np.int64)
        node_labels[frac >= 0.5] = 1
        node_labels[frac <= 0.05] = 0
        pos = spread_pick(np.flatnonzero(frac >= 0.5), ei, n, n_candidates // 2, rng)
        neg = spread_pick(np.flatnonzero(frac <= 0.05), ei, n, n_candidates - len(pos), rng)
        cand = np.concatenate([pos, neg])
    else:
        cand = spread_pick(np.arange(n), ei, n, n_candidates, rng)
    size, dmpp = int(pre["crop_size"]), float(pre["detail_mpp"])
    centers = np.asarray(adata.obsm[SPATIAL])[cand]
    crops, boxes = read_crops(slide, centers, mpp=dmpp, size=size)
    crop_masks = None
    if lesion_mask is not None:
        crop_masks = torch.from_numpy(
            mask_crops(lesion_mask[0], float(lesion_mask[1]), boxes, size)
        )
    tile_tensor = tile_emb = None
    if tiles:
        xy = tissue_grid(slide, pre)
        if len(xy) > max_tiles:
            xy = xy[np.sort(rng.choice(len(xy), max_tiles, replace=False))]
        arr = read_tiles(slide, xy, mpp=dmpp, size=size)
        if encoder is not None:
            tile_emb = embed_images(encoder, arr)
        else:
            tile_tensor = to_uint8_tensor(arr)
    crop_emb = embed_images(encoder, crops) if encoder is not None else None
    sample = SlideSample(
        features=torch.from_numpy(np.asarray(adata.X, dtype=np.float32)),
        edge_index=ei,
        label=int(label),
        node_labels=None if node_labels is None else torch.from_numpy(node_labels),
        crops=to_uint8_tensor(crops),
        crop_nodes=torch.from_numpy(cand.astype(np.int64)),
        crop_masks=crop_masks,
        tiles=tile_tensor,
        crop_embeddings=crop_emb,
        tile_embeddings=tile_emb,
        node_xy=torch.from_numpy(np.asarray(adata.obsm[SPATIAL], dtype=np.float64)),
        name=name or _name_of(slide),
    )
    return sample, adata


def _name_of(slide) -> str:
    from workbench.io import slide_id

    path = str(slide.path)
    if path.startswith("<array:") and path.endswith(">"):
        return path[len("<array:") : -1]
    return slide_id(path)


def prepare_cohort(
    cohort: Cohort,
    labels: Mapping[str, int] | Sequence[int] | None = None,
    *,
    slide_ids: Sequence[str] | None = None,
    settings: Mapping | None = None,
    use_annotations: bool = True,
    tiles: bool = False,
    n_candidates: int = 8,
    max_tiles: int = 256,
    encoder=None,
    seed: int = 0,
    progress: bool = True,
    on_disk: bool = True,
) -> list:
    """:func:`prepare_slide` for slides of a :class:`~workbench.io.Cohort`.

    Parameters
    ----------
    cohort
        The cohort (its mpp overrides and lesion masks are used).
    labels
        Class index per slide id (or per slide, in order); ``None`` gives every sample label 0
        (for inference-only use).
    slide_ids
        Slides to read (default: all), any key :meth:`Cohort.slide_path` accepts.
    use_annotations
        Use the cohort's lesion masks where it has them (node labels and crop masks).
    on_disk
        Keep each sample's larger tensors (crops, tiles, masks, embeddings, region features
        and graph: :data:`ON_DISK_BYTES` or more) in memory-mapped temporary files instead
        of this process's memory (see :func:`memory_mapped`), so the memory a cohort holds
        does not grow with its size; the values are the same.

    Returns
    -------
    list of workbench.models.SlideSample
        One sample per slide, reusable across models and epochs, so the slides are read
        only once.
    """
    from tqdm.auto import tqdm

    ids = [cohort._key(s) for s in (cohort.slide_ids if slide_ids is None else slide_ids)]
    if labels is None:
        labels = dict.fromkeys(ids, 0)
    elif not isinstance(labels, Mapping):
        labels = dict(zip(ids, labels, strict=True))
    samples = []
    for i, sid in enumerate(tqdm(ids, desc="read slides", disable=not progress)):
        mask = cohort.lesion_mask(sid) if use_annotations else None
        sample, _ = prepare_slide(
            cohort.slide_path(sid),
            label=int(labels[sid]),
            settings=settings,
            lesion_mask=mask,
            n_candidates=n_candidates,
            tiles=tiles,
            max_tiles=max_tiles,
            encoder=encoder,
            seed=seed + i,
            name=sid,
            mpp=cohort.mpp_of(sid),
        )
        samples.append(_on_disk(sample) if on_disk else sample)
        release_freed_memory()
    return samples


_LIBC: list = []


def release_freed_memory() -> bool:
    """Hand memory that was freed but kept by the C allocator back to the system.

    glibc's ``malloc`` raises its threshold for serving large blocks from the heap after
    such blocks are freed, and a heap that per-slide work (decoded tiles, thumbnails,
    superpixels) leaves fragmented keeps growing over a cohort although nothing is kept
    (about 1.2 MB per slide when reading a cohort). ``malloc_trim(0)`` returns the free
    pages; elsewhere than glibc this does nothing.

    Returns
    -------
    bool
        Whether memory was handed back.
    """
    if not _LIBC:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            trim = libc.malloc_trim
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
            trim = None
        _LIBC.append(trim)
    trim = _LIBC[0]
    return bool(trim(0)) if trim is not None else False


#: Sample tensors of at least this many bytes go to memory-mapped files (``on_disk``).
ON_DISK_BYTES = 1 << 16

_SAMPLE_TENSORS = (
    "features", "edge_index", "crops", "crop_masks", "tiles", "crop_embeddings",
    "tile_embeddings", "node_xy",
)  # fmt: skip


def memory_mapped(tensor):
    """The same values in a copy-on-write memory map of a temporary file.

    The file (in :func:`tempfile.gettempdir`, i.e. ``$TMPDIR``) is removed at once: the
    mapping keeps it readable and its disk space is freed with the tensor. Its pages are the
    kernel's page cache, which it can drop and read again under memory pressure, instead of
    this process's own memory.

    Parameters
    ----------
    tensor
        A CPU tensor.

    Returns
    -------
    torch.Tensor
        Equal to ``tensor`` (dtype and shape included), backed by the mapped file.
    """
    import tempfile

    import torch

    arr = tensor.detach().cpu().contiguous().numpy()
    fd, name = tempfile.mkstemp(prefix="workbench-cache-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr)
        mapped = np.load(name, mmap_mode="c")  # private: a write never reaches the file
    finally:
        os.unlink(name)
    return torch.from_numpy(mapped)


def _on_disk(sample):
    """``sample`` with its larger tensors memory-mapped (see :func:`memory_mapped`)."""
    for name in _SAMPLE_TENSORS:
        value = getattr(sample, name)
        if value is not None and value.numel() * value.element_size() >= ON_DISK_BYTES:
            setattr(sample, name, memory_mapped(value))
    return sample


class CropReader:
    """Magnified crops of a slide's regions, read on demand and remembered.

    Used where a model chooses which regions to look at (validation during training): the
    crops of a region are read the first time it is chosen and reused afterwards.

    Parameters
    ----------
    slide
        Path or Slide.
    centers_xy
        ``(N, 2)`` level-0 centres of the regions.
    settings
        Preprocessing (``detail_mpp``, ``crop_size``, ``stain``).
    mpp
        Resolution override.
    encoder
        A frozen encoder: embeddings are remembered instead of pixels.
    """

    def __init__(self, slide, centers_xy, settings: Mapping, *, mpp=None, encoder=None) -> None:
        self._path = slide
        self._mpp = mpp
        self._slide = None
        self.settings = settings_of(settings)
        self.centers_xy = np.asarray(centers_xy, dtype=np.float64).reshape(-1, 2)
        self.encoder = encoder
        self._cache: dict[int, Any] = {}

    def __call__(self, nodes: Sequence[int]):
        """``(K, 3, S, S)`` uint8 crops (or ``(K, E)`` embeddings) of these regions."""
        import torch

        nodes = [int(n) for n in nodes]
        todo = [n for n in nodes if n not in self._cache]
        if todo:
            if self._slide is None:
                self._slide = open_slide(self._path, self.settings, mpp=self._mpp)
            size, dmpp = int(self.settings["crop_size"]), float(self.settings["detail_mpp"])
            crops, _ = read_crops(self._slide, self.centers_xy[todo], mpp=dmpp, size=size)
            values = (
                embed_images(self.encoder, crops)
                if self.encoder is not None
                else to_uint8_tensor(crops)
            )
            for n, v in zip(todo, values, strict=True):
                self._cache[n] = v
        return torch.stack([self._cache[n] for n in nodes])


__all__ = [
    "RECORDED_KEYS",
    "CropReader",
    "StainedSlide",
    "as_slide",
    "crop_boxes",
    "edge_index_of",
    "embed_images",
    "mask_at",
    "mask_crops",
    "memory_mapped",
    "node_lesion_fraction",
    "open_slide",
    "prepare_cohort",
    "prepare_slide",
    "read_crops",
    "read_tiles",
    "region_graph_for",
    "release_freed_memory",
    "settings_of",
    "spread_pick",
    "stain_normalizer",
    "suggest_settings",
    "thumbnail_mpp_for",
    "tissue_grid",
    "to_tensor_images",
    "to_uint8_tensor",
    "with_stain",
]
