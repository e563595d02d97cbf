"""The refinement engine: clicks in, lesion mask out, with CGAM and three baselines.

Per view the image is resized once to the network's working size. On each click the
segmentation network (a :class:`~workbench.models.DetailBranch` with two click-map input
channels) runs once without gradients and its features are cached; then only a small
module between the cached features and the per-pixel head is optimised:

``"cgam"``
    the click-guided attention gate (:class:`~workbench.models.ClickGuidedGate`), loss =
    squared hinge on the clicked pixels + a penalty on logit changes outside the newest
    click's neighbourhood; gate parameters carry over from click to click.
``"fbrs"``
    f-BRS-style per-channel scale and bias (:class:`~workbench.models.ChannelScaleBias`), loss =
    squared hinge on the clicked pixels + an L2 pull of the parameters to the identity.
``"none"``
    no optimisation: the clicks act only through the network's click-map inputs.
``"random_walker"``
    no network: :func:`skimage.segmentation.random_walker` seeded by the click disks.

Nothing here knows about widgets; the widget and the benchmark both drive this class.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from workbench.interactive._clicks import Click, ClickState, click_maps

__all__ = ["METHODS", "RefinementEngine"]

METHODS = ("cgam", "fbrs", "none", "random_walker")


@dataclass
class _Snapshot:
    mask: np.ndarray
    logits: object  # torch tensor (1, 1, h, w) or None
    module_state: dict | None
    seconds: float


@dataclass
class _View:
    image: np.ndarray  # view pixels, uint8 (H, W, 3)
    work: object  # torch (1, 3, h, w) float in [0, 1]
    work_rc: tuple[int, int]
    scale: float  # work pixels per view pixel
    prior: np.ndarray | None  # view-resolution prior logits from the initial mask
    features: object = None  # cached backbone features (when not re-encoding per click)
    history: list[_Snapshot] = field(default_factory=list)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"view must be an (H, W, 3) RGB array, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255)
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


class RefinementEngine:
    """Interactive lesion refinement on one view at a time.

    Parameters
    ----------
    model
        Base segmentation network, a ``DetailBranch`` built with ``extra_channels=2``.
        ``None`` loads the packaged base network (:func:`load_base_model`); not needed for
        ``method="random_walker"``.
    method
        One of ``"cgam"`` (default), ``"fbrs"``, ``"none"``, ``"random_walker"``.
    work_size
        Longest side, in pixels, at which the network sees the view (views are never
        upsampled). Masks are always returned at the view's own size.
    steps
        Most optimisation steps per click (Adam); stops early once every clicked pixel is on
        the right side of the threshold.
    lr
        Adam learning rate for the gate / scale-bias parameters.
    click_radius
        Radius, in working pixels, of the click disks fed to the network.
    neighbourhood
        Radius of the newest click's neighbourhood as a fraction of the view's longest side;
        CGAM penalises logit changes outside it.
    locality_weight
        Weight of that penalty (CGAM) or of the L2 pull to the identity (f-BRS).
    prior_strength
        Logit added (+) inside / subtracted (-) outside an initial mask, so a loaded outline
        survives clicks elsewhere.
    margin
        Margin of the squared hinge loss on the clicked pixels, in logits.
    stop_margin
        Early stop once every clicked pixel's logit is on the right side by this much
        (0: on the right side of the threshold).
    reencode
        ``True`` (default): the backbone runs once per click with the click maps as input
        (cached for the optimisation steps of that click). ``False``: once per view without
        click maps, so clicks act only through the optimised module.
    """

    def __init__(
        self,
        model=None,
        *,
        method: str = "cgam",
        work_size: int = 384,
        steps: int = 20,
        lr: float = 0.1,
        click_radius: float = 5.0,
        neighbourhood: float = 0.3,
        locality_weight: float = 0.3,
        prior_strength: float = 4.0,
        margin: float = 1.0,
        stop_margin: float = 0.0,
        reencode: bool = True,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if work_size < 32:
            raise ValueError(f"work_size must be at least 32 pixels, got {work_size}")
        self.method = method
        self.work_size = int(work_size)
        self.steps = int(steps)
        self.lr = float(lr)
        self.click_radius = float(click_radius)
        self.neighbourhood = float(neighbourhood)
        self.locality_weight = float(locality_weight)
        self.prior_strength = float(prior_strength)
        self.margin = float(margin)
        self.stop_margin = float(stop_margin)
        self.reencode = bool(reencode)
        self.model = None
        self.module = None
        if method != "random_walker":
            import torch

            from workbench.interactive._base import load_base_model
            from workbench.models import ChannelScaleBias, ClickGuidedGate

            self.model = (model if model is not None else load_base_model()).eval()
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

    # ---------------------------------------------------------------- view -------------
    def set_view(self, image: np.ndarray, *, initial_mask: np.ndarray | None = None) -> np.ndarray:
        """Start refining ``image`` (H, W, 3); returns the starting mask.

        The starting mask is ``initial_mask`` (e.g. a saved outline or a lesion prediction)
        or, when there is none, an empty mask.
        """
        image = _as_rgb_uint8(image)
        h, w = image.shape[:2]
        if initial_mask is None:
            mask = np.zeros((h, w), dtype=bool)
            prior = None
        else:
            mask = np.asarray(initial_mask).astype(bool)
            if mask.shape != (h, w):
                raise ValueError(
                    f"initial_mask has shape {mask.shape}, but the view is {(h, w)}; "
                    "pass a mask of the view's size"
                )
            mask = mask.copy()
            prior = np.where(mask, self.prior_strength, -self.prior_strength).astype(np.float32)
        scale = min(1.0, self.work_size / max(h, w))
        work_rc = (max(int(round(h * scale)), 8), max(int(round(w * scale)), 8))
        work = None
        if self.model is not None or self.method == "random_walker":
            work = self._resize_image(image, work_rc)
        self._view = _View(image=image, work=work, work_rc=work_rc, scale=scale, prior=prior)
        self._view.history.append(_Snapshot(mask=mask, logits=None, module_state=None, seconds=0.0))
        self.clicks = ClickState((h, w))
        if self.module is not None:
            self.module.reset_parameters()
        self.last_seconds = 0.0
        return mask.copy()

    def _resize_image(self, image: np.ndarray, work_rc: tuple[int, int]):
        if self.method == "random_walker":
            if work_rc == image.shape[:2]:
                return image.astype(np.float32) / 255.0
            from skimage.transform import resize

            return resize(image, work_rc, order=1, anti_aliasing=True).astype(np.float32)
        torch = self._torch
        t = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0
        if work_rc != image.shape[:2]:
            t = torch.nn.functional.interpolate(t, size=work_rc, mode="area")
        return t.contiguous()

    def _require_view(self) -> _View:
        if self._view is None:
            raise RuntimeError("no view set: call set_view(image) first")
        return self._view

    # --------------------------------------------------------------- state -------------
    @property
    def mask(self) -> np.ndarray:
        """Current mask (bool, view size); a copy."""
        return self._require_view().history[-1].mask.copy()

    @property
    def shape_rc(self) -> tuple[int, int]:
        return self._require_view().image.shape[:2]

    def undo(self) -> np.ndarray:
        """Remove the newest click; restores exactly the mask and gate state before it."""
        view = self._require_view()
        if len(view.history) > 1:
            view.history.pop()
            self.clicks.undo()
            state = view.history[-1].module_state
            if self.module is not None:
                if state is None:
                    self.module.reset_parameters()
                else:
                    self.module.load_state_dict(state)
        return self.mask

    def reset(self) -> np.ndarray:
        """Forget all clicks; back to the starting mask."""
        view = self._require_view()
        del view.history[1:]
        self.clicks.reset()
        if self.module is not None:
            self.module.reset_parameters()
        return self.mask

    # --------------------------------------------------------------- clicks ------------
    def add_click(self, x: float, y: float, positive: bool = True) -> np.ndarray:
        """Add a click at view pixel ``(x, y)`` and return the refined mask.

        A click outside the view is ignored with a warning and the mask is unchanged.
        """
        view = self._require_view()
        click = Click(float(x), float(y), bool(positive))
        if not self.clicks.add(click):
            return self.mask
        start = time.perf_counter()
        if self.method == "random_walker":
            self.last_steps = 0
            mask, logits, state = self._random_walker(view), None, None
        else:
            mask, logits, state = self._network_step(view)
        seconds = time.perf_counter() - start
        self.last_seconds = seconds
        view.history.append(
            _Snapshot(mask=mask, logits=logits, module_state=state, seconds=seconds)
        )
        return mask.copy()

    # ------------------------------------------------------------ network --------------
    def _network_step(self, view: _View):
        torch = self._torch
        F = torch.nn.functional
        clicks = self.clicks.clicks
        h, w = view.image.shape[:2]
        maps = torch.from_numpy(
            click_maps(clicks, view.work_rc, radius=self.click_radius, scale=view.scale)
        )[None]
        if self.reencode or view.features is None:
            with torch.inference_mode():
                enc_maps = maps if self.reencode else torch.zeros_like(maps)
                features = self.model.encode(view.work, enc_maps)
            # Leave inference mode so autograd can flow through the cached features.
            features = features.clone()
            if not self.reencode:
                view.features = features
        else:
            features = view.features
        fh, fw = features.shape[2:]

        # Click positions in the feature grid's normalised coordinates: sampling there with
        # grid_sample gives exactly the value bilinear upsampling puts on the clicked pixel.
        xs = torch.tensor([(c.x + 0.5) / w * 2 - 1 for c in clicks], dtype=torch.float32)
        ys = torch.tensor([(c.y + 0.5) / h * 2 - 1 for c in clicks], dtype=torch.float32)
        grid = torch.stack([xs, ys], dim=1).view(1, 1, -1, 2)
        sign = torch.tensor([1.0 if c.positive else -1.0 for c in clicks])
        prior_at = torch.zeros(len(clicks))
        if view.prior is not None:
            prior_at = torch.tensor(
                [
                    view.prior[min(max(c.rc[0], 0), h - 1), min(max(c.rc[1], 0), w - 1)]
                    for c in clicks
                ]
            )

        def click_logits(low):
            vals = F.grid_sample(low, grid, mode="bilinear", align_corners=False)
            return vals.view(-1) + prior_at

        steps = 0
        if self.module is None:
            with torch.no_grad():
                low = self.model.head_lowres(features)
        else:
            gate_maps = F.adaptive_avg_pool2d(maps, (fh, fw))
            with torch.no_grad():
                reference = self.model.head_lowres(self.module(features, gate_maps))
            low = reference
            outside = None
            if self.method == "cgam":
                newest = clicks[-1]
                fy = (torch.arange(fh, dtype=torch.float32) + 0.5) * (h / fh) - 0.5
                fx = (torch.arange(fw, dtype=torch.float32) + 0.5) * (w / fw) - 0.5
                d2 = (fy[:, None] - newest.y) ** 2 + (fx[None, :] - newest.x) ** 2
                radius = self.neighbourhood * max(h, w)
                outside = (d2 > radius**2).float()[None, None]
                n_out = outside.sum().clamp(min=1.0)
            init = [p.detach().clone() for p in self.module.parameters()]
            params = [p for p in self.module.parameters()]
            for p in params:
                p.requires_grad_(True)
            optimiser = torch.optim.Adam(params, lr=self.lr)
            for _ in range(self.steps):
                with torch.no_grad():
                    if bool(torch.all(sign * click_logits(low) >= self.stop_margin)):
                        break
                optimiser.zero_grad(set_to_none=True)
                low = self.model.head_lowres(self.module(features, gate_maps))
                hinge = torch.relu(self.margin - sign * click_logits(low)).pow(2).mean()
                if outside is not None:
                    penalty = ((low - reference).pow(2) * outside).sum() / n_out
                else:
                    penalty = sum(((p - p0) ** 2).sum() for p, p0 in zip(params, init, strict=True))
                loss = hinge + self.locality_weight * penalty
                loss.backward()
                optimiser.step()
                steps += 1
                low = low.detach()
            with torch.no_grad():
                if steps:
                    low = self.model.head_lowres(self.module(features, gate_maps))
            for p in params:
                p.requires_grad_(False)
        self.last_steps = steps
        with torch.no_grad():
            logits = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        logits = logits.numpy()
        if view.prior is not None:
            logits = logits + view.prior
        state = copy.deepcopy(self.module.state_dict()) if self.module is not None else None
        return logits > 0, low.detach(), state

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
            mode="cg_j",
            tol=1e-3,
            channel_axis=-1,
            return_full_prob=True,
        )[0]
        if view.work_rc != (h, w):
            from skimage.transform import resize

            prob = resize(prob, (h, w), order=1)
        return prob > 0.5
