"""The refinement engine: clicks in, lesion mask out, with CGAM and three baselines.

Per view the image is resized once to the network's working size. The base network
(:class:`~workbench.models.ClickSegmenter`: RGB + positive/negative click disks + the previous
mask) turns the clicks into features; a small module between those features and the
per-pixel head is then optimised on the clicks:

``"cgam"``
    the click-guided attention gate (:class:`~workbench.models.ClickGuidedGate`). From the
    second click on it is optimised with Adam (``steps`` steps) on a squared hinge loss over
    a disk around every click (each click counts equally; the disk grows with the wrong region
    the click sits in and keeps clear of clicks of the other sign, see ``adaptive_disk``)
    plus a penalty on logit changes outside the newest click's neighbourhood; its state
    carries over from click to click.
    With ``network_clicks=N`` (the reference uses 8) the network sees only the first N
    clicks and later clicks act through the gate alone (the features of the last network
    click stay cached); by default the network sees every click.
``"fbrs"``
    f-BRS-style per-channel scale and bias (:class:`~workbench.models.ChannelScaleBias`),
    optimised the same way from the second click on, with an L2 pull to the identity instead
    of the locality penalty; the network sees every click.
``"none"``
    no optimisation: the clicks act only through the network's inputs.
``"random_walker"``
    no network: :func:`skimage.segmentation.random_walker` seeded by the click disks.

The gate and the head are pointwise, so an optimisation step evaluates them only on the
feature pixels under the click disks and on a fixed sample of pixels outside the newest
click's neighbourhood: its cost does not grow with the view.

Nothing here knows about widgets or slides; the session, the widget and the benchmark all
drive this class.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench._errors import InvalidViewError, RefinementError
from workbench.interactive._clicks import ClickState
from workbench.models._clicks import Click, click_maps, soft_click_maps

__all__ = ["METHODS", "PROPAGATE", "RefinementEngine"]

METHODS = ("cgam", "fbrs", "none", "random_walker")
PROPAGATE = ("one", "all")
MIN_VIEW_SIDE = 8
_HOLDOUT_BLOCKS = 4  # adapt(): checkerboard blocks per side of the view
ADAPT_LOSSES = ("bce_dice", "bce", "balanced")  # adapt(loss=...)


@dataclass
class _Snapshot:
    mask: np.ndarray  # view resolution
    work_mask: np.ndarray | None  # working resolution (the network's "previous mask")
    module_state: dict | None
    features: object  # the network features in use after this click (torch) or None
    seconds: float
    steps: int = 0
    net_mask: np.ndarray | None = None  # the network's mask before proposals (view size)


@dataclass
class _View:
    image: np.ndarray  # view pixels, uint8 (H, W, 3)
    work: object  # torch (1, 3, h, w) float in [0, 1] (numpy for the random walker)
    work_rc: tuple[int, int]
    scale: float  # work pixels per view pixel
    prior: np.ndarray | None  # view-resolution prior logits from the initial mask
    prior_work: np.ndarray | None  # the same at the working resolution
    blank_features: object = None  # features without clicks (reencode=False)
    similarity: object = None  # (unit features, click-free foreground) for proposals
    history: list[_Snapshot] = field(default_factory=list)
    loss_radii: list[float] = field(default_factory=list)  # per click, working pixels


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads, then restore the caller's setting.

    ``None`` leaves the setting alone. Setting it is cheap when it is already ``n``.
    """
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InvalidViewError(f"a view must be an (H, W, 3) RGB array, got shape {arr.shape}")
    if min(arr.shape[:2]) < MIN_VIEW_SIDE:
        raise InvalidViewError(
            f"a view of {arr.shape[1]}x{arr.shape[0]} pixels is too small to refine; it needs "
            f"at least {MIN_VIEW_SIDE} pixels a side (zoom in, or move away from the slide's edge)"
        )
    arr = arr[:, :, :3]
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=2).sum())
        raise InvalidViewError(
            f"the view has {bad} pixel(s) that are NaN or infinite (of {arr.shape[0] * arr.shape[1]});"
            " give finite RGB values (uint8 0-255 or floats 0-1), e.g. fill them with white"
        )
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255)
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def _disk_offsets(radius: float) -> np.ndarray:
    """Sample offsets ``(k, 2)`` (x, y) of a disk of ``radius`` working pixels: about 80
    points whatever the radius."""
    stride = max(1, int(round(radius / 5.0)))
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1 : stride, -r : r + 1 : stride]
    keep = dy**2 + dx**2 <= radius**2
    return np.stack([dx[keep], dy[keep]], axis=1).astype(np.float32)


def _resize_bool(mask: np.ndarray, shape_rc: tuple[int, int]) -> np.ndarray:
    if mask.shape == tuple(shape_rc):
        return mask.copy()
    from PIL import Image

    small = Image.fromarray(mask.astype(np.uint8) * 255).resize(shape_rc[::-1], Image.BILINEAR)
    return np.asarray(small) > 127


class RefinementEngine:
    """Interactive lesion refinement on one view at a time.

    Parameters
    ----------
    model
        Base network: a :class:`~workbench.models.ClickSegmenter` (or an older
        ``DetailBranch`` with two click channels). ``None`` loads the packaged network
        (:func:`workbench.models.load_click_segmenter`); not needed for ``method="random_walker"``.
    method
        One of ``"cgam"`` (default), ``"fbrs"``, ``"none"``, ``"random_walker"``.
    work_size
        Longest side, in pixels, at which the network sees the view (views are never
        upsampled). Masks are always returned at the view's own size.
    steps
        Adam steps per click from the second click on (CGAM, f-BRS). The loop ends early
        only when the loss is exactly zero (every pixel of every click disk beyond the
        margin, nothing changed outside), where a step could not change anything.
    lr
        Adam learning rate for the gate / scale-bias parameters.
    click_radius
        Radius, in working pixels, of the click disks fed to the network.
    loss_radius
        Smallest radius, in working pixels, of the disk around each click that the CGAM /
        f-BRS loss covers (default: ``click_radius``).
    adaptive_disk, max_loss_radius
        The loss disk of a click grows to ``adaptive_disk`` times the click's distance to
        the nearest pixel the mask before it already gave the click's label (about how far
        the wrong region it sits in reaches: a user, like the simulated one, clicks well
        inside a wrong region), between ``loss_radius`` and ``max_loss_radius`` working
        pixels. A click whose label the mask has nowhere yet keeps ``loss_radius``.
        ``adaptive_disk=0`` gives every click the fixed disk. The defaults (0.8, 64, with
        ``locality_weight=0.3``) were chosen on the validation parts of the shared sets
        with a network that never saw a real pair; with the fixed disk the network alone
        already satisfied most clicks and the gate almost never ran.
    disk_confidence
        ``None`` (default) or a logit: the newest click's disk grows only when the network,
        given the click, does *not* yet give the clicked pixel the click's label with at least
        this logit on its side (else it keeps ``loss_radius``).
    disk_stop
        ``None`` (default) or a logit: a grown disk stops short of the nearest pixel the
        network confidently (at least this logit) gives the other label.
    disk_grow_from
        Disks grow only from this click on (default 1: every click). The three were tried on
        the val parts (``benchmarks/tune_cgam_disk.py``, ``tune_cgam_disk_val*.jsonl``): none
        kept the grown disk's gain on unseen tissue while matching the fixed disk on tissue
        the network knows, so all stay off; ``last_disk_grown`` says what happened to the
        newest click's disk.
    gate_radius
        Decay length of the gate's soft click maps, as a fraction of the view's longest side.
    neighbourhood
        Radius of the newest click's neighbourhood as a fraction of the view's longest side;
        CGAM penalises logit changes outside it.
    locality_weight
        Weight of that penalty (CGAM) or of the L2 pull to the identity (f-BRS).
    margin
        Margin of the squared hinge loss on the click disks, in logits.
    network_clicks
        CGAM only: how many clicks the network itself sees; later clicks act through the
        gate alone (the CGAM reference uses 8). ``None`` (default, chosen on validation
        data: with 8, NoC@85 was 0.4-0.8 clicks worse on the validation parts of CAMELYON and
        MoNuSeg): the network sees every click.
    prior_strength
        Logit added (+) inside / subtracted (-) outside an initial mask, so a loaded outline
        survives clicks elsewhere.
    reencode
        ``True`` (default): the network runs on each click it sees, with the click maps and
        the previous mask as inputs. ``False``: once per view without clicks, so clicks act
        only through the optimised module.
    penalty_points
        How many feature pixels outside the newest click's neighbourhood the locality
        penalty samples (evenly spread).
    threads
        Torch intra-op threads the engine uses for each click and each :meth:`adapt`
        (set around the work, the caller's setting restored after). The default, 1, keeps
        a click fast when other work shares the CPU (measured on a busy 2-core machine:
        151 ms per click with 1 thread, 485 ms with 2). ``None`` leaves torch's setting.
    propagate
        ``"one"``: a click refines the clicked object. ``"all"`` ("all like this"): a
        positive click also proposes the similar structures of the view (other glands,
        tumour nests). The network's features of the view without clicks are standardised
        per channel; the mean feature under the network's connected component at each
        positive click is a prototype, the feature at each negative click a negative one;
        regions whose cosine similarity to the nearest positive prototype reaches
        ``similarity`` and beats every negative prototype (and, with ``min_foreground``, where
        the click-free network sees foreground) are added, except pieces smaller than
        ``min_proposal`` of the view or holding a negative click. Proposals only add to the
        network's mask (the clicked object is never undone) and are not fed back to the
        network; ``undo`` restores. Switch per engine (:attr:`propagate`) or per click
        (``add_click(..., propagate=)``). Default ``"one"``, chosen on validation data
        (``benchmarks/tune_propagate.py``: EBHI-Seg ``val`` cases at 448 px split into
        many-object and one-object views, and the ``val`` parts of the other real sets;
        packaged network, 10 clicks): on 8 many-object EBHI views ``"all"`` with
        ``similarity=0.4`` raised mIoU@1 from 0.17 to 0.33 and mIoU@5 from 0.60 to 0.63
        (NoC@85 was 10 of 10 either way), but it cost the one-object EBHI views 0.6 clicks
        (NoC@85 9.2 -> 9.8, mIoU@5 0.69 -> 0.63) and CAMELYON 0.6 clicks (3.0 -> 3.6): more
        than the 0.3 allowed. 0.4 beat 0.6 on the many-object views (mIoU@5 0.63 vs 0.58).
    similarity, min_foreground, min_proposal
        The proposal settings above.
    local_corrections, local_from, local_pad
        Local corrections (Clore, EMBC 2026): from click ``local_from`` on (counting from 1),
        a click changes the mask only inside the bounding box (grown by ``local_pad`` view
        pixels) of the connected region of change containing the click (or the nearest one,
        within a tenth of the view); elsewhere the mask before the click stays, so a late
        click cannot damage a far part of the outline. Off by default, chosen on the same
        validation data: from the third click on it lowered NoC@85 on the MoNuSeg and TNBC
        nuclei (5.2 -> 4.6, 8.4 -> 7.5) but raised it on CAMELYON (3.0 -> 3.4) and lowered
        mIoU@5 on the many-object EBHI views (0.60 -> 0.54): the network's own later clicks
        often fix far errors there, which a local update forbids.
    """

    def __init__(
        self,
        model=None,
        *,
        method: str = "cgam",
        work_size: int = 384,
        steps: int = 20,
        lr: float = 0.05,
        click_radius: float = 5.0,
        loss_radius: float | None = None,
        gate_radius: float = 0.08,
        neighbourhood: float = 0.2,
        locality_weight: float = 0.3,
        margin: float = 1.0,
        network_clicks: int | None = None,
        prior_strength: float = 4.0,
        reencode: bool = True,
        penalty_points: int = 768,
        adaptive_disk: float = 0.8,
        max_loss_radius: float = 64.0,
        disk_confidence: float | None = None,
        disk_stop: float | None = None,
        disk_grow_from: int = 1,
        threads: int | None = 1,
        propagate: str = "one",
        similarity: float = 0.4,
        min_foreground: float = 0.0,
        min_proposal: float = 0.002,
        local_corrections: bool = False,
        local_from: int = 3,
        local_pad: int = 4,
    ) -> None:
        if method not in METHODS:
            raise RefinementError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if work_size < 32:
            raise RefinementError(f"work_size must be at least 32 pixels, got {work_size}")
        if steps < 0 or (network_clicks is not None and network_clicks < 1):
            raise RefinementError(
                f"steps must be >= 0 and network_clicks >= 1 (or None), got steps={steps}, "
                f"network_clicks={network_clicks}"
            )
        if threads is not None and (not isinstance(threads, int | np.integer) or threads < 1):
            raise RefinementError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = None if threads is None else int(threads)
        for name, value in (("disk_confidence", disk_confidence), ("disk_stop", disk_stop)):
            if value is not None and not np.isfinite(float(value)):
                raise RefinementError(f"{name} must be a finite logit or None, got {value!r}")
        if disk_grow_from < 1:
            raise RefinementError(f"disk_grow_from must be >= 1, got {disk_grow_from}")
        if local_from < 1 or local_pad < 0:
            raise RefinementError(
                f"local_from must be >= 1 and local_pad >= 0, got {local_from}, {local_pad}"
            )
        self.similarity = float(similarity)
        self.min_foreground = float(min_foreground)
        self.min_proposal = float(min_proposal)
        self.local_corrections = bool(local_corrections)
        self.local_from = int(local_from)
        self.local_pad = int(local_pad)
        self.method = method
        self.propagate = propagate  # checked by the property
        self.work_size = int(work_size)
        self.steps = int(steps)
        self.lr = float(lr)
        self.click_radius = float(click_radius)
        self.loss_radius = float(click_radius if loss_radius is None else loss_radius)
        self.gate_radius = float(gate_radius)
        self.neighbourhood = float(neighbourhood)
        self.locality_weight = float(locality_weight)
        self.margin = float(margin)
        self.network_clicks = None if network_clicks is None else int(network_clicks)
        self.prior_strength = float(prior_strength)
        self.reencode = bool(reencode)
        self.penalty_points = int(penalty_points)
        self.model = None
        self.module = None
        if method != "random_walker":
            import torch

            from workbench.models import ChannelScaleBias, ClickGuidedGate, load_click_segmenter

            self.model = (model if model is not None else load_click_segmenter()).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            channels = self.model.feature_channels
            if method == "cgam":
                self.module = ClickGuidedGate(feature_channels=channels, click_channels=2)
            elif method == "fbrs":
                self.module = ChannelScaleBias(feature_channels=channels)
            self._torch = torch
        self._view: _View | None = None
        self.clicks: ClickState | None = None
        self.last_seconds: float = 0.0
        self.last_steps: int = 0
        self.adaptive_disk = float(adaptive_disk)
        self.max_loss_radius = float(max_loss_radius)
        self.disk_confidence = None if disk_confidence is None else float(disk_confidence)
        self.disk_stop = None if disk_stop is None else float(disk_stop)
        self.disk_grow_from = int(disk_grow_from)
        self.last_disk_grown: bool | None = None
        self._adapter: dict | None = None  # torch tensors; None: the packaged behaviour
        self._adapted_images = 0
        self._memory: list = []  # adapt(memory=...): feature samples of recent outlines
        self._base_sha: str | None = None

    @property
    def propagate(self) -> str:
        """``"one"`` (a click refines the clicked object) or ``"all"`` (a positive click also
        proposes the similar structures of the view); the widget's toggle sets it."""
        return self._propagate

    @propagate.setter
    def propagate(self, value: str) -> None:
        if value not in PROPAGATE:
            raise RefinementError(
                f"unknown propagate mode {value!r}; choose one of {', '.join(PROPAGATE)}"
            )
        if value == "all" and self.method == "random_walker":
            raise RefinementError(
                "propagate='all' needs the network's features; the random walker has none"
            )
        self._propagate = value

    # ---------------------------------------------------------------- view -------------
    def set_view(self, image: np.ndarray, *, initial_mask: np.ndarray | None = None) -> np.ndarray:
        """Start refining ``image``, forgetting the previous view's clicks.

        The starting mask is ``initial_mask`` (e.g. a saved outline or a lesion prediction)
        or, when there is none, an empty mask.

        Parameters
        ----------
        image
            ``(H, W, 3)`` RGB view (uint8, or float in ``[0, 1]``).
        initial_mask
            ``(H, W)`` starting mask, or ``None`` for an empty one.

        Returns
        -------
        numpy.ndarray
            The starting mask (bool, view pixels).

        Raises
        ------
        InvalidViewError
            The image is not RGB, or smaller than 8 pixels a side; or ``initial_mask`` does
            not have the view's shape.
        """
        image = _as_rgb_uint8(image)
        h, w = image.shape[:2]
        if initial_mask is None:
            mask = np.zeros((h, w), dtype=bool)
            prior = None
        else:
            mask = np.asarray(initial_mask).astype(bool)
            if mask.shape != (h, w):
                raise InvalidViewError(
                    f"initial_mask has shape {mask.shape}, but the view is {(h, w)}; "
                    "pass a mask of the view's size"
                )
            mask = mask.copy()
            prior = np.where(mask, self.prior_strength, -self.prior_strength).astype(np.float32)
        scale, work_rc = self._work_geometry(h, w)
        with torch_threads(self.threads if self.model is not None else None):
            work = self._resize_image(image, work_rc)
        work_mask = _resize_bool(mask, work_rc)
        prior_work = None
        if prior is not None:
            prior_work = np.where(work_mask, self.prior_strength, -self.prior_strength).astype(
                np.float32
            )
        self._view = _View(
            image=image,
            work=work,
            work_rc=work_rc,
            scale=scale,
            prior=prior,
            prior_work=prior_work,
        )
        self._view.history.append(
            _Snapshot(mask=mask, work_mask=work_mask, module_state=None, features=None, seconds=0.0)
        )
        self.clicks = ClickState((h, w))
        if self.module is not None:
            self.module.reset_parameters()
        self.last_seconds = 0.0
        self.last_steps = 0
        if self.propagate == "all":  # the click-free features now, not on the first click
            with torch_threads(self.threads):
                self._similarity_maps(self._view)
        return mask.copy()

    def _work_geometry(self, h: int, w: int) -> tuple[float, tuple[int, int]]:
        scale = min(1.0, self.work_size / max(h, w))
        scale = max(scale, min(1.0, MIN_VIEW_SIDE / min(h, w)))
        return scale, (max(int(round(h * scale)), 1), max(int(round(w * scale)), 1))

    def _resize_image(self, image: np.ndarray, work_rc: tuple[int, int]):
        if self.method == "random_walker":
            if work_rc == image.shape[:2]:
                return image.astype(np.float32) / 255.0
            from skimage.transform import resize

            return resize(image, work_rc, order=1, anti_aliasing=True).astype(np.float32)
        torch = self._torch
        t = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0
        if work_rc != image.shape[:2]:
            mode = "area" if work_rc[0] <= image.shape[0] else "bilinear"
            t = torch.nn.functional.interpolate(t, size=work_rc, mode=mode)
        return t.contiguous()

    def _require_view(self) -> _View:
        if self._view is None:
            raise InvalidViewError("no view set: call set_view(image) first")
        return self._view

    # --------------------------------------------------------------- state -------------
    @property
    def mask(self) -> np.ndarray:
        """Current mask (bool, view size); a copy."""
        return self._require_view().history[-1].mask.copy()

    @property
    def shape_rc(self) -> tuple[int, int]:
        """``(rows, cols)`` of the open view."""
        return self._require_view().image.shape[:2]

    @property
    def image(self) -> np.ndarray:
        """The view being refined (uint8 RGB)."""
        return self._require_view().image

    @property
    def steps_per_click(self) -> list[int]:
        """Optimisation steps taken on each click so far (0 where none)."""
        return [s.steps for s in self._require_view().history[1:]]

    def undo(self) -> np.ndarray:
        """Remove the newest click; restores exactly the mask and gate state before it.

        Returns
        -------
        numpy.ndarray
            The mask before that click (unchanged when there was no click).
        """
        view = self._require_view()
        if len(view.history) > 1:
            view.history.pop()
            view.loss_radii.pop()
            self.clicks.undo()
            self._restore(view.history[-1].module_state)
        return self.mask

    def reset(self) -> np.ndarray:
        """Forget all clicks of the view.

        Returns
        -------
        numpy.ndarray
            The view's starting mask.
        """
        view = self._require_view()
        del view.history[1:]
        view.loss_radii.clear()
        self.clicks.reset()
        self._restore(None)
        return self.mask

    def _restore(self, state: dict | None) -> None:
        if self.module is None:
            return
        if state is None:
            self.module.reset_parameters()
        else:
            self.module.load_state_dict(state)

    # ---------------------------------------------------------- adaptation ------------
    def _require_adaptable(self) -> None:
        from workbench.interactive._adapt import supports_adaptation

        if self.model is None:
            raise RefinementError(
                "the random walker has no network to adapt; use method='cgam', 'fbrs' or 'none'"
            )
        if not supports_adaptation(self.model):
            raise RefinementError(
                f"a {type(self.model).__name__} base network cannot be adapted; use a "
                "ClickSegmenter (the packaged network is one)"
            )

    @property
    def base_sha256(self) -> str:
        """SHA-256 of the base network's parameters (what an adaptation file must match)."""
        self._require_adaptable()
        if self._base_sha is None:
            from workbench.interactive._adapt import network_sha256

            self._base_sha = network_sha256(self.model)
        return self._base_sha

    @property
    def adapted(self) -> bool:
        """Whether the engine carries an adaptation (else it is the packaged network)."""
        return self._adapter is not None

    @property
    def adapted_images(self) -> int:
        """How many confirmed outlines the current adaptation learnt from."""
        return self._adapted_images

    def adapt(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        steps: int = 60,
        seconds: float = 2.0,
        clicks: int = 3,
        lr: float = 0.01,
        pull: float = 0.01,
        max_points: int = 8192,
        holdout: bool = True,
        min_gain: float = 0.0,
        average: bool = True,
        memory: int = 0,
        loss: str = "bce_dice",
    ) -> dict:
        """Learn from one confirmed outline: a few Adam steps on the head's adapter.

        The simulated user of :func:`~workbench.interactive.next_click` makes ``clicks``
        clicks on ``image`` (each on the error the engine, as adapted so far, leaves); the
        network's features for each of those click states are computed once (the backbone
        is frozen), then the adapter (a per-channel scale and shift of the features, the
        head's hidden bias and its last layer: 32 + 32 + 32 + 33 numbers for the packaged
        network) is trained to make the per-pixel logits match ``mask``, with the loss the
        network was trained with (binary cross-entropy + soft Dice) and an L2 pull (``pull``)
        to the packaged values.

        Two guards keep one outline from pulling the engine away from what it does well
        (without them, learning each outline in full cost 1.7 clicks at NoC@85 on the unseen
        serrated-adenoma class; see ``benchmarks/tune_adapt.py``):

        - ``holdout``: the view is cut into a 4 x 4 checkerboard; the white squares train,
          the black ones pick the step with the lowest loss (early stopping), and the
          outline is learnt only if that loss beats the adapter's loss there before the call
          by more than ``min_gain`` (as a fraction). A rejected outline changes nothing.
        - ``average``: the adapter is a running mean over the accepted outlines: the n-th
          moves it 1/n of the way to what it learnt from that outline alone.

        The packaged weights never change and :meth:`reset_adaptation` drops the adapter. The
        open view (if any) keeps its mask; the next click uses the adapted head.

        Parameters
        ----------
        image
            The view (H, W, 3) RGB whose outline the user confirmed.
        mask
            The confirmed outline (bool, H x W).
        steps
            Most Adam steps.
        seconds
            CPU-time budget for the whole call (encoding included; the process's CPU time,
            so a busy machine does not cut the learning short): the loop stops at the first
            step past it. With the defaults a call takes 0.2-0.7 s of CPU on one thread
            (448 px EBHI-Seg views).
        clicks
            Simulated click rounds (1-10) to learn from.
        lr
            Adam learning rate.
        pull
            Weight of the squared distance to the packaged values.
        max_points
            Most feature pixels per step (an even sample over all rounds).
        holdout
            Train on half of the view and stop / accept on the other half (above);
            ``False`` trains on every pixel for ``steps`` steps and always accepts.
        min_gain
            With ``holdout``: the least relative drop of the held-out loss that gets an
            outline accepted (0: any drop).
        average
            Running mean over accepted outlines (above); ``False``: each accepted outline
            replaces the adapter by what was learnt from it, starting from the previous one.
        loss
            ``"bce_dice"`` (default): mean binary cross-entropy + soft Dice, the network's
            own training loss. ``"bce"``: the cross-entropy alone. ``"balanced"`` (as shipped
            before): object and background pixels weigh the same whatever their areas,
            which pushes small objects (a nucleus in its view) to grow: on the test views it
            cost 1.4 clicks at NoC@85 on MoNuSeg nuclei (mIoU@1 0.69 -> 0.60).
        memory
            Replay: keep feature samples (a quarter of ``max_points`` per outline) of the
            ``memory`` outlines before this one and train and check on them together with
            this one, each outline counting the same (0: off). The samples live in this engine only (not in
            the adaptation file); :meth:`reset_adaptation` forgets them.

        Returns
        -------
        dict
            ``steps`` taken, ``clicks`` simulated, ``seconds`` (wall) and ``cpu_seconds``
            spent, ``loss_before`` and ``loss_after`` (the cross-entropy on the sampled
            pixels, before and with the adapter the call leaves), ``accepted`` (whether the
            outline was learnt), ``best_step`` (the step kept), with ``holdout`` also
            ``holdout_before`` / ``holdout_after`` (the held-out loss at the start and at
            the kept step), ``samples`` (feature pixels trained and checked on, replayed ones
            included) and ``n_images`` (the outlines the adaptation has now learnt from).

        Raises
        ------
        RefinementError
            Random-walker engine or a network without a per-pixel head; bad options.
        InvalidViewError
            ``image`` is not an RGB view or ``mask`` does not have its shape.
        """
        self._require_adaptable()
        if not (isinstance(steps, int | np.integer) and steps >= 0):
            raise RefinementError(f"steps must be an integer >= 0, got {steps!r}")
        if not (isinstance(clicks, int | np.integer) and 1 <= clicks <= 10):
            raise RefinementError(f"clicks must be an integer from 1 to 10, got {clicks!r}")
        for name, value in (("seconds", seconds), ("lr", lr)):
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise RefinementError(f"{name} must be a finite number > 0, got {value!r}")
        for name, value in (("pull", pull), ("min_gain", min_gain)):
            if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
                raise RefinementError(f"{name} must be a finite number >= 0, got {value!r}")
        if min_gain >= 1:
            raise RefinementError(f"min_gain must be below 1, got {min_gain!r}")
        if not (isinstance(memory, int | np.integer) and memory >= 0):
            raise RefinementError(f"memory must be an integer >= 0, got {memory!r}")
        if loss not in ADAPT_LOSSES:
            raise RefinementError(f"loss must be one of {', '.join(ADAPT_LOSSES)}, got {loss!r}")
        start, start_cpu = time.perf_counter(), time.process_time()
        image = _as_rgb_uint8(image)
        mask = np.asarray(mask)
        if mask.shape != image.shape[:2]:
            raise InvalidViewError(
                f"mask has shape {mask.shape}, but the image is {image.shape[:2]}; pass the "
                "confirmed outline of this image"
            )
        with torch_threads(self.threads):
            report = self._adapt(
                image,
                mask.astype(bool),
                steps=int(steps),
                budget=float(seconds),
                clicks=int(clicks),
                lr=float(lr),
                pull=float(pull),
                max_points=int(max_points),
                holdout=bool(holdout),
                min_gain=float(min_gain),
                average=bool(average),
                memory=int(memory),
                loss=loss,
                start=start_cpu,
            )
        report["seconds"] = time.perf_counter() - start
        report["cpu_seconds"] = time.process_time() - start_cpu
        report["n_images"] = self._adapted_images
        return report

    def _adapt(
        self,
        image,
        mask,
        *,
        steps,
        budget,
        clicks,
        lr,
        pull,
        max_points,
        holdout,
        min_gain,
        average,
        memory,
        loss,
        start,
    ) -> dict:
        from workbench.interactive._adapt import packaged_parameters
        from workbench.models._clicks import next_click

        torch = self._torch
        F = torch.nn.functional
        h, w = image.shape[:2]
        _, work_rc = self._work_geometry(h, w)
        work = self._resize_image(image, work_rc)
        gt = _resize_bool(mask, work_rc)
        pred = np.zeros(work_rc, dtype=bool)
        made: list[Click] = []
        rounds = []
        for _ in range(clicks):
            click = next_click(pred, gt)
            if click is None:
                break
            made.append(click)
            maps = click_maps(made, work_rc, radius=self.click_radius, scale=1.0)
            extra = [torch.from_numpy(maps)[None]]
            if self.model.extra_channels >= 3:
                extra.append(torch.from_numpy(pred.astype(np.float32))[None, None])
            with torch.inference_mode():
                features = self.model.encode(work, torch.cat(extra, dim=1)).clone()
                low = self._head_map(features)
                logits = F.interpolate(low, size=work_rc, mode="bilinear", align_corners=False)
            rounds.append(features)
            pred = logits[0, 0].numpy() > 0
        report = {
            "steps": 0,
            "clicks": len(made),
            "loss_before": None,
            "loss_after": None,
            "accepted": False,
        }
        if not rounds:
            return report
        fh, fw = rounds[0].shape[2:]
        target = F.interpolate(
            torch.from_numpy(gt.astype(np.float32))[None, None], size=(fh, fw), mode="area"
        )[0, 0].reshape(-1)
        # Checkerboard of 4 x 4 blocks over the view: with ``holdout`` the white blocks train
        # and the black ones tell when to stop (and whether the adaptation helps at all).
        bi = (np.arange(fh) * _HOLDOUT_BLOCKS) // fh
        bj = (np.arange(fw) * _HOLDOUT_BLOCKS) // fw
        black = torch.from_numpy(((bi[:, None] + bj[None, :]) % 2 == 1).reshape(-1))
        x = torch.cat([f[0].flatten(1).T for f in rounds])
        y = target.repeat(len(rounds))
        held = black.repeat(len(rounds))
        own = max_points if memory == 0 else max(max_points // 4, 1)
        if len(x) > own:
            keep = torch.from_numpy(np.linspace(0, len(x) - 1, own).astype(np.int64))
            x, y, held = x[keep], y[keep], held[keep]
        if memory > 0:
            # Replay: the samples of the last ``memory`` outlines train and check with this
            # one, each outline counting the same.
            past = self._memory[-memory:]
            self._memory = [*past, (x, y, held)][-memory:]
            if past:
                x = torch.cat([x, *(p[0] for p in past)])
                y = torch.cat([y, *(p[1] for p in past)])
                held = torch.cat([held, *(p[2] for p in past)])

        report["samples"] = len(x)

        def balanced(part):
            yp = y[part]
            if loss != "balanced":  # every pixel the same: a mean, as the network learnt
                return torch.full_like(yp, 1.0 / max(len(yp), 1))
            # The object and the background weigh the same whatever their areas.
            pos = float(yp.sum())
            neg = float(len(yp)) - pos
            return torch.where(
                yp > 0.5,
                torch.tensor(0.5 / max(pos, 1.0)),
                torch.tensor(0.5 / max(neg, 1.0)),
            )

        if holdout and bool(held.any()) and bool((~held).any()):
            fit, check = ~held, held
        else:
            fit = check = torch.ones(len(y), dtype=torch.bool)
        x_fit, y_fit, w_fit = x[fit], y[fit], balanced(fit)
        x_chk, y_chk, w_chk = x[check], y[check], balanced(check)
        packaged = packaged_parameters(self.model)
        current = packaged if self._adapter is None else self._adapter
        names = list(packaged)
        sizes = [packaged[k].numel() for k in names]
        theta0 = torch.cat([packaged[k].reshape(-1) for k in names])
        theta_start = torch.cat([current[k].detach().reshape(-1) for k in names]).clone()
        theta = theta_start.clone()

        def unflat(flat):
            return dict(zip(names, torch.split(flat, sizes), strict=True))

        def bce(flat, xs, ys, ws):
            logits = self._head_points(xs, unflat(flat))
            value = F.binary_cross_entropy_with_logits(logits, ys, weight=ws, reduction="sum")
            if loss == "bce_dice":  # the network's own training loss: BCE + soft Dice
                prob = torch.sigmoid(logits)
                value = value + 1 - (2 * (prob * ys).sum() + 1) / (prob.sum() + ys.sum() + 1)
            return value

        with torch.no_grad():
            report["loss_before"] = float(bce(theta, x, y, balanced(torch.ones_like(held))))
            check_start = float(bce(theta, x_chk, y_chk, w_chk))
        best, best_check, best_step = theta.clone(), check_start, 0
        # Adam, written out (as in the click optimisation): a few tensor operations per step.
        m = torch.zeros_like(theta)
        v = torch.zeros_like(theta)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        taken = 0
        for t in range(1, steps + 1):
            if time.process_time() - start > budget:
                break
            theta.requires_grad_(True)
            objective = bce(theta, x_fit, y_fit, w_fit) + pull * (theta - theta0).pow(2).sum()
            (grad,) = torch.autograd.grad(objective, theta)
            with torch.no_grad():
                theta = theta.detach()
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                theta -= lr * (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
                taken += 1
                if fit is check:
                    best, best_step = theta.clone(), taken
                else:
                    now = float(bce(theta, x_chk, y_chk, w_chk))
                    if now < best_check:
                        best, best_check, best_step = theta.clone(), now, taken
        report["steps"] = taken
        report["best_step"] = best_step
        if fit is not check:
            report["holdout_before"] = check_start
            report["holdout_after"] = best_check
        accepted = best_step > 0 and (fit is check or best_check < check_start * (1.0 - min_gain))
        if accepted and average and self._adapted_images > 0:
            # A running mean over the outlines learnt so far: the n-th accepted outline moves
            # the adapter 1/n of the way to what it alone would make of it.
            rate = 1.0 / (self._adapted_images + 1)
            best = theta_start + rate * (best - theta_start)
        final = best if accepted else theta_start
        with torch.no_grad():
            report["loss_after"] = float(bce(final, x, y, balanced(torch.ones_like(held))))
        report["accepted"] = bool(accepted)
        if accepted:
            self._adapter = {k: v.detach().clone() for k, v in unflat(final).items()}
            self._adapted_images += 1
        return report

    def reset_adaptation(self) -> None:
        """Forget every adaptation: the engine computes exactly what the packaged network
        does (the open view keeps its mask; the next click uses the packaged head)."""
        self._adapter = None
        self._adapted_images = 0
        self._memory = []

    def adaptation_state(self) -> dict | None:
        """The adaptation as plain data, or ``None`` at the packaged behaviour.

        Returns
        -------
        dict or None
            ``parameters`` (name -> float32 array), ``base_sha256`` (the network it belongs
            to) and ``n_images`` (how many outlines it learnt from).
        """
        if self._adapter is None:
            return None
        return {
            "parameters": {k: v.detach().numpy().copy() for k, v in self._adapter.items()},
            "base_sha256": self.base_sha256,
            "n_images": self._adapted_images,
        }

    def load_adaptation(self, source: str | Path | dict | None) -> None:
        """Take an adaptation from a file (:meth:`save_adaptation`) or from
        :meth:`adaptation_state` (``None`` resets to the packaged network).

        Parameters
        ----------
        source
            Path of an adaptation file, a state dict, or ``None``.

        Raises
        ------
        RefinementError
            The file is missing, truncated, altered, or made for another base network (its
            recorded network checksum differs); a state dict of another network.
        """
        from workbench.interactive._adapt import check_parameters, read_adaptation

        self._require_adaptable()
        if source is None:
            self.reset_adaptation()
            return
        if isinstance(source, dict):
            if source.get("base_sha256") != self.base_sha256:
                raise RefinementError(
                    "this adaptation state was made for another base network; it cannot be "
                    "loaded into this engine"
                )
            params, n_images, where = (
                source.get("parameters", {}),
                source.get("n_images", 0),
                "state",
            )
        else:
            params, meta = read_adaptation(source, base_sha256=self.base_sha256)
            n_images, where = meta["n_images"], repr(str(source))
        check_parameters(params, self.model, where)
        torch = self._torch
        self._adapter = {
            k: torch.tensor(np.asarray(params[k], dtype=np.float32)).reshape(-1)
            for k in (
                "feature_scale",
                "feature_shift",
                "head_in.bias",
                "head_out.weight",
                "head_out.bias",
            )
        }
        self._adapted_images = int(n_images)

    def save_adaptation(self, path: str | Path) -> Path:
        """Write the adaptation (the packaged values when there is none) as one small
        safetensors file with checksums; atomic.

        Parameters
        ----------
        path
            Target file (``.safetensors``).

        Returns
        -------
        Path
            The file written.
        """
        from workbench.interactive._adapt import packaged_parameters, write_adaptation

        self._require_adaptable()
        params = self._adapter if self._adapter is not None else packaged_parameters(self.model)
        return write_adaptation(
            path, params, base_sha256=self.base_sha256, n_images=self._adapted_images
        )

    # --------------------------------------------------------------- clicks ------------
    def add_click(
        self, x: float, y: float, positive: bool = True, *, propagate: str | None = None
    ) -> np.ndarray:
        """Add a click at view pixel ``(x, y)`` and return the refined mask.

        A click outside the view is ignored with a :class:`UserWarning` and the mask is
        unchanged (a stray click must not end a refinement session).

        Parameters
        ----------
        x, y
            The click in view pixels (column, row).
        positive
            ``True``: part of the object; ``False``: not.
        propagate
            ``"one"`` or ``"all"`` for this click only (default: :attr:`propagate`).

        Returns
        -------
        numpy.ndarray
            The mask after the click (bool, view size).
        """
        view = self._require_view()
        mode = self.propagate if propagate is None else propagate
        if mode not in PROPAGATE or (mode == "all" and self.method == "random_walker"):
            raise RefinementError(
                f"propagate must be one of {', '.join(PROPAGATE)} ('all' needs a network), "
                f"got {mode!r}"
            )
        click = Click(float(x), float(y), bool(positive))
        if not self.clicks.add(click):
            return self.mask
        start = time.perf_counter()
        view.loss_radii.append(self._loss_radius_of(view, click))
        last = view.history[-1]
        if self.method == "random_walker":
            snap = _Snapshot(self._random_walker(view), None, None, None, 0.0)
        else:
            with torch_threads(self.threads):
                snap = self._network_step(view)
        snap.net_mask = snap.mask
        if self.local_corrections and len(self.clicks) >= self.local_from:
            self._localise(view, last, snap, click)
        if mode == "all" and any(c.positive for c in self.clicks.clicks):
            with torch_threads(self.threads):
                snap.mask = snap.net_mask | self._proposals(view, snap.net_mask)
        snap.seconds = time.perf_counter() - start
        self.last_seconds = snap.seconds
        self.last_steps = snap.steps
        view.history.append(snap)
        return snap.mask.copy()

    def _localise(self, view: _View, last: _Snapshot, snap: _Snapshot, click: Click) -> None:
        """Keep the mask before the click outside the click's region of change."""
        from workbench.interactive._local import local_region

        before = last.net_mask if last.net_mask is not None else last.mask
        box = local_region(before, snap.net_mask, click.rc, pad=self.local_pad)
        net = before.copy()
        if box is not None:
            net[box] = snap.net_mask[box]
        snap.net_mask = snap.mask = net
        if snap.work_mask is not None and last.work_mask is not None:
            work = last.work_mask.copy()
            if box is not None:
                s = view.scale
                hw, ww = view.work_rc
                rows = slice(
                    int(np.floor(box[0].start * s)), min(int(np.ceil(box[0].stop * s)), hw)
                )
                cols = slice(
                    int(np.floor(box[1].start * s)), min(int(np.ceil(box[1].stop * s)), ww)
                )
                work[rows, cols] = snap.work_mask[rows, cols]
            snap.work_mask = work

    def _similarity_maps(self, view: _View):
        """(standardised click-free features, click-free foreground), once per view."""
        from workbench.interactive._local import standardised_features

        if view.similarity is None:
            torch = self._torch
            with torch.inference_mode():
                blank = self.model.encode(view.work)
                foreground = torch.sigmoid(self._head_map(blank))[0, 0]
                view.similarity = (standardised_features(blank), foreground)
        return view.similarity

    def _proposals(self, view: _View, net_mask: np.ndarray) -> np.ndarray:
        """The "all like this" regions to add to ``net_mask`` (see :func:`similar_regions`)."""
        from workbench.interactive._local import similar_regions

        torch = self._torch
        unit, foreground = self._similarity_maps(view)
        clicks = self.clicks.clicks
        small = net_mask
        if view.scale < 1.0:  # work at the network's resolution, not the (larger) view's
            small = _resize_bool(net_mask, view.work_rc)
            s = view.scale
            clicks = [
                Click((c.x + 0.5) * s - 0.5, (c.y + 0.5) * s - 0.5, c.positive) for c in clicks
            ]
        with torch.inference_mode():
            proposed = similar_regions(
                unit,
                foreground,
                small,
                clicks,
                threshold=self.similarity,
                min_foreground=self.min_foreground,
                min_area=self.min_proposal,
            )
        if proposed.shape != net_mask.shape:
            proposed = _resize_bool(proposed, net_mask.shape) & ~net_mask
        return proposed

    def _loss_radius_of(self, view: _View, click: Click) -> float:
        """Radius (working pixels) of the disk the click loss covers for ``click``.

        Fixed (``loss_radius``), or with ``adaptive_disk > 0`` that fraction of the click's
        distance to the nearest pixel the current mask already gives the click's label (the
        click sits inside a region the mask has wrong; about how far that region reaches),
        between ``loss_radius`` and ``max_loss_radius``.
        """
        if self.adaptive_disk <= 0 or self.method not in ("cgam", "fbrs"):
            return self.loss_radius
        if len(self.clicks) < self.disk_grow_from:  # the click is already in self.clicks
            return self.loss_radius
        prev = view.history[-1].work_mask
        same = prev if click.positive else ~prev
        if not same.any():
            # Nothing carries the click's label yet (a first click on an empty view): how far
            # the object reaches is unknown, so the loss keeps to the click's own disk.
            return self.loss_radius
        cx = (click.x + 0.5) * view.scale - 0.5
        cy = (click.y + 0.5) * view.scale - 0.5
        rows, cols = np.nonzero(same)
        d = float(np.sqrt(((rows - cy) ** 2 + (cols - cx) ** 2).min()))
        return float(np.clip(self.adaptive_disk * d, self.loss_radius, self.max_loss_radius))

    # ------------------------------------------------------------ network --------------
    def _encode(self, view: _View, clicks, prev_work: np.ndarray):
        torch = self._torch
        if not self.reencode:
            if view.blank_features is None:
                with torch.inference_mode():
                    view.blank_features = self.model.encode(view.work).clone()
            return view.blank_features
        maps = click_maps(clicks, view.work_rc, radius=self.click_radius, scale=view.scale)
        extra = [torch.from_numpy(maps)[None]]
        if self.model.extra_channels >= 3:
            extra.append(torch.from_numpy(prev_work.astype(np.float32))[None, None])
        with torch.inference_mode():
            features = self.model.encode(view.work, torch.cat(extra, dim=1))
        return features.clone()  # a normal tensor: autograd may flow from it

    def _head_points(self, x, adapter: dict | None = None):
        """Logits of feature points ``x`` (N, C); with the adapter when there is one."""
        F = self._torch.nn.functional
        first = getattr(self.model, "head_in", None) or self.model.head_hidden
        out = self.model.head_out
        adapter = self._adapter if adapter is None else adapter
        if adapter is None:
            hidden = F.relu(F.linear(x, first.weight.flatten(1), first.bias))
            return F.linear(hidden, out.weight.flatten(1), out.bias)[:, 0]
        x = x * adapter["feature_scale"] + adapter["feature_shift"]
        hidden = F.relu(F.linear(x, first.weight.flatten(1), adapter["head_in.bias"]))
        return hidden @ adapter["head_out.weight"] + adapter["head_out.bias"]

    def _head_map(self, features):
        """Logits ``(1, 1, h, w)`` at the feature resolution; with the adapter if any."""
        adapter = self._adapter
        if adapter is None:
            return self.model.head_lowres(features)
        F = self._torch.nn.functional
        c = features.shape[1]
        x = features * adapter["feature_scale"].view(1, c, 1, 1)
        x = x + adapter["feature_shift"].view(1, c, 1, 1)
        hidden = F.relu(F.conv2d(x, self.model.head_in.weight, adapter["head_in.bias"]))
        weight = adapter["head_out.weight"].view(1, -1, 1, 1)
        return F.conv2d(hidden, weight, adapter["head_out.bias"])

    def _disk_samples(self, view: _View, clicks, fh: int, fw: int):
        """Bilinear weights from feature pixels to every work pixel of every click disk."""
        hw, ww = view.work_rc
        pts, owner = [], []
        radii = self._effective_radii(view, clicks)
        for k, c in enumerate(clicks):
            cx = (c.x + 0.5) * view.scale - 0.5
            cy = (c.y + 0.5) * view.scale - 0.5
            p = _disk_offsets(radii[k]) + np.array([round(cx), round(cy)], np.float32)
            p = p[(p[:, 0] >= 0) & (p[:, 0] < ww) & (p[:, 1] >= 0) & (p[:, 1] < hw)]
            if not len(p):
                p = np.array([[min(max(round(cx), 0), ww - 1), min(max(round(cy), 0), hw - 1)]])
            pts.append(p)
            owner.append(np.full(len(p), k))
        pts = np.concatenate(pts).astype(np.float64)
        owner = np.concatenate(owner)
        # Work pixel centre -> feature grid coordinate (as bilinear interpolation with
        # align_corners=False sees it), clamped at the border like F.interpolate.
        u = np.clip((pts[:, 0] + 0.5) * fw / ww - 0.5, 0, fw - 1)
        v = np.clip((pts[:, 1] + 0.5) * fh / hw - 0.5, 0, fh - 1)
        j0, i0 = np.floor(u).astype(int), np.floor(v).astype(int)
        j1, i1 = np.minimum(j0 + 1, fw - 1), np.minimum(i0 + 1, fh - 1)
        du, dv = u - j0, v - i0
        corners = [
            (i0, j0, (1 - dv) * (1 - du)),
            (i0, j1, (1 - dv) * du),
            (i1, j0, dv * (1 - du)),
            (i1, j1, dv * du),
        ]
        flat = np.concatenate([i * fw + j for i, j, _ in corners])
        unique, inverse = np.unique(flat, return_inverse=True)
        weights = np.zeros((len(pts), len(unique)), np.float32)
        n = len(pts)
        for k, (_, _, wgt) in enumerate(corners):
            np.add.at(weights, (np.arange(n), inverse[k * n : (k + 1) * n]), wgt)
        prior = np.zeros(n, np.float32)
        if view.prior_work is not None:
            r = np.clip(pts[:, 1].astype(int), 0, hw - 1)
            c = np.clip(pts[:, 0].astype(int), 0, ww - 1)
            prior = view.prior_work[r, c]
        sign = np.array([1.0 if clicks[k].positive else -1.0 for k in owner], np.float32)
        # Every click counts equally, whatever the number of its disk pixels inside the view.
        counts = np.bincount(owner, minlength=len(clicks)).astype(np.float32)
        point_weight = 1.0 / (counts[owner] * len(clicks))
        return unique, weights, prior, sign, point_weight

    def _effective_radii(self, view: _View, clicks) -> np.ndarray:
        """Loss-disk radii (working pixels) with no disk reaching past half the distance to
        a click of the other sign: a later click says that an earlier, grown disk covered
        pixels of the other label, so both disks shrink to keep apart."""
        radii = np.asarray(view.loss_radii[: len(clicks)], dtype=np.float64).copy()
        if len(clicks) < 2:
            return radii
        xy = np.array([[c.x, c.y] for c in clicks], dtype=np.float64) * view.scale
        sign = np.array([c.positive for c in clicks])
        dist = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
        dist[sign[:, None] == sign[None, :]] = np.inf
        return np.maximum(np.minimum(radii, 0.5 * dist.min(axis=1)), 1.0)

    def _penalty_points(self, view: _View, fh: int, fw: int) -> np.ndarray:
        newest = self.clicks.last
        h, w = view.image.shape[:2]
        fy = (np.arange(fh) + 0.5) * (h / fh) - 0.5
        fx = (np.arange(fw) + 0.5) * (w / fw) - 0.5
        d2 = (fy[:, None] - newest.y) ** 2 + (fx[None, :] - newest.x) ** 2
        outside = np.flatnonzero((d2 > (self.neighbourhood * max(h, w)) ** 2).ravel())
        if len(outside) > self.penalty_points:
            outside = outside[np.linspace(0, len(outside) - 1, self.penalty_points).astype(int)]
        return outside

    def _network_step(self, view: _View) -> _Snapshot:
        torch = self._torch
        F = torch.nn.functional
        clicks = self.clicks.clicks
        last = view.history[-1]
        n = len(clicks)
        sees_click = self.method != "cgam" or self.network_clicks is None
        sees_click = sees_click or n <= self.network_clicks
        if sees_click or last.features is None:
            features = self._encode(view, clicks, last.work_mask)
        else:
            features = last.features
        fh, fw = features.shape[2:]
        h, w = view.image.shape[:2]
        guide = None
        if self.method == "cgam":
            guide = torch.from_numpy(
                soft_click_maps(
                    clicks, (fh, fw), radius=self.gate_radius * max(fh, fw), scale=fw / w
                )
            )[None]

        self.last_disk_grown = None
        if self.module is not None and view.loss_radii and view.loss_radii[-1] > self.loss_radius:
            self.last_disk_grown = True
            if self.disk_confidence is not None and self._click_confident(
                view, clicks[-1], features, guide
            ):
                view.loss_radii[-1] = self.loss_radius
                self.last_disk_grown = False
            elif self.disk_stop is not None:
                view.loss_radii[-1] = self._stopped_radius(view, clicks[-1], features, guide)
                self.last_disk_grown = view.loss_radii[-1] > self.loss_radius
        steps = 0
        if self.module is not None and n >= 2 and self.steps > 0:
            steps = self._optimise(view, clicks, features, guide)
        with torch.no_grad():
            gated = features if self.module is None else self.module(features, guide)
            low = self._head_map(gated)
            work_logits = F.interpolate(
                low, size=view.work_rc, mode="bilinear", align_corners=False
            )
            view_logits = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        work_logits = work_logits[0, 0].numpy()
        view_logits = view_logits[0, 0].numpy()
        if view.prior is not None:
            work_logits = work_logits + view.prior_work
            view_logits = view_logits + view.prior
        state = copy.deepcopy(self.module.state_dict()) if self.module is not None else None
        return _Snapshot(
            mask=view_logits > 0,
            work_mask=work_logits > 0,
            module_state=state,
            features=features,
            seconds=0.0,
            steps=steps,
        )

    def _click_confident(self, view: _View, click: Click, features, guide) -> bool:
        """Whether the network with the module as it stands gives ``click``'s pixel the
        click's label with a logit of at least :attr:`disk_confidence` on its side."""
        torch = self._torch
        fh, fw = features.shape[2:]
        hw, ww = view.work_rc
        cx = (click.x + 0.5) * view.scale - 0.5
        cy = (click.y + 0.5) * view.scale - 0.5
        # Work pixel -> feature grid (bilinear, align_corners=False, clamped at the border).
        u = float(np.clip((cx + 0.5) * fw / ww - 0.5, 0, fw - 1))
        v = float(np.clip((cy + 0.5) * fh / hw - 0.5, 0, fh - 1))
        j0, i0 = int(np.floor(u)), int(np.floor(v))
        j1, i1 = min(j0 + 1, fw - 1), min(i0 + 1, fh - 1)
        du, dv = u - j0, v - i0
        idx = torch.tensor([i0 * fw + j0, i0 * fw + j1, i1 * fw + j0, i1 * fw + j1])
        wgt = torch.tensor(
            [(1 - dv) * (1 - du), (1 - dv) * du, dv * (1 - du), dv * du], dtype=torch.float32
        )
        flat = features[0].flatten(1).T[idx]
        g = guide[0].flatten(1).T[idx] if guide is not None else None
        with torch.no_grad():
            theta = self.module.flat_parameters()
            logit = float(wgt @ self._head_points(self.module.gate_points_flat(theta, flat, g)))
        if view.prior_work is not None:
            r = min(max(round(cy), 0), hw - 1)
            c = min(max(round(cx), 0), ww - 1)
            logit += float(view.prior_work[r, c])
        sign = 1.0 if click.positive else -1.0
        return sign * logit >= self.disk_confidence

    def _stopped_radius(self, view: _View, click: Click, features, guide) -> float:
        """The newest click's grown radius, cut short of the nearest working pixel the
        network (module as it stands) gives the other label with logit >= ``disk_stop``."""
        torch = self._torch
        F = torch.nn.functional
        radius = view.loss_radii[-1]
        with torch.no_grad():
            gated = features if self.module is None else self.module(features, guide)
            low = self._head_map(gated)
            logits = F.interpolate(low, size=view.work_rc, mode="bilinear", align_corners=False)
        logits = logits[0, 0].numpy()
        if view.prior_work is not None:
            logits = logits + view.prior_work
        hw, ww = view.work_rc
        cx = round((click.x + 0.5) * view.scale - 0.5)
        cy = round((click.y + 0.5) * view.scale - 0.5)
        r = int(np.ceil(radius))
        rows = slice(max(cy - r, 0), min(cy + r + 1, hw))
        cols = slice(max(cx - r, 0), min(cx + r + 1, ww))
        dy, dx = np.mgrid[rows, cols]
        dist = np.hypot(dy - cy, dx - cx)
        sign = 1.0 if click.positive else -1.0
        against = (sign * logits[rows, cols] <= -self.disk_stop) & (dist <= radius)
        if not against.any():
            return radius
        return float(np.clip(dist[against].min() - 1.0, self.loss_radius, radius))

    def _optimise(self, view: _View, clicks, features, guide) -> int:
        """Adam on the module's parameters (one flat vector, a hand-written update: a few
        tensor operations per step, no optimiser object to build)."""
        torch = self._torch
        fh, fw = features.shape[2:]
        flat = features[0].flatten(1).T  # (fh * fw, C)
        guide_flat = guide[0].flatten(1).T if guide is not None else None
        unique, weights, prior, sign, point_weight = self._disk_samples(view, clicks, fh, fw)
        n_disk = len(unique)
        idx = torch.from_numpy(unique)
        if self.method == "cgam":
            idx = torch.cat([idx, torch.from_numpy(self._penalty_points(view, fh, fw))])
        f_pts = flat[idx]
        g_pts = guide_flat[idx] if guide_flat is not None else None
        w_disk = torch.from_numpy(weights)
        prior_t = torch.from_numpy(prior)
        sign_t = torch.from_numpy(sign)
        pw_t = torch.from_numpy(point_weight.astype(np.float32))
        module = self.module
        theta0 = module.flat_parameters()
        with torch.no_grad():
            reference = self._head_points(module.gate_points_flat(theta0, f_pts, g_pts))[n_disk:]
        theta = theta0.clone().requires_grad_(True)
        m = torch.zeros_like(theta)
        v = torch.zeros_like(theta)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        steps = 0
        for t in range(1, self.steps + 1):
            out = self._head_points(module.gate_points_flat(theta, f_pts, g_pts))
            logits = w_disk @ out[:n_disk] + prior_t
            loss = (torch.relu(self.margin - sign_t * logits).pow(2) * pw_t).sum()
            if self.method == "cgam":
                penalty = (out[n_disk:] - reference).pow(2).mean()
            else:
                penalty = (theta - theta0).pow(2).sum()
            loss = loss + self.locality_weight * penalty
            if float(loss.detach()) == 0.0:
                break  # nothing left to fix and nothing changed: a step would be a no-op
            (grad,) = torch.autograd.grad(loss, theta)
            with torch.no_grad():
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = self.lr * (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
                theta -= step
            steps += 1
        module.load_flat_parameters(theta.detach())
        return steps

    # ------------------------------------------------------------- walker ---------------
    def _random_walker(self, view: _View) -> np.ndarray:
        from skimage.segmentation import random_walker

        clicks = self.clicks.clicks
        h, w = view.image.shape[:2]
        if not any(c.positive for c in clicks):
            return np.zeros((h, w), dtype=bool)
        maps = click_maps(clicks, view.work_rc, radius=self.click_radius, scale=view.scale)
        labels = np.zeros(view.work_rc, dtype=np.int32)
        if not any(not c.positive for c in clicks):
            # Without a negative click the frame of the view stands in for the background.
            labels[0, :] = labels[-1, :] = labels[:, 0] = labels[:, -1] = 2
        labels[maps[1] > 0] = 2
        labels[maps[0] > 0] = 1
        prob = random_walker(
            view.work,
            labels,
            beta=130,
            mode="bf",  # a direct sparse solve: exact, and 40x faster than "cg_j" here
            channel_axis=-1,
            return_full_prob=True,
        )[0]
        if view.work_rc != (h, w):
            from skimage.transform import resize

            prob = resize(prob, (h, w), order=1)
        return prob > 0.5

    def __repr__(self) -> str:
        view = "no view" if self._view is None else f"view {self.shape_rc[1]}x{self.shape_rc[0]}"
        n = 0 if self.clicks is None else len(self.clicks)
        return f"RefinementEngine(method={self.method!r}, {view}, {n} clicks)"
