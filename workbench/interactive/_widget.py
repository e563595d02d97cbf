"""``RegionRefiner``: the JupyterLab widget over a :class:`RefinementSession` (ipywidgets 8).

The widget holds no refinement state of its own and mirrors none of the session's API: the
view, the outline, navigation, undo and saving are ``refiner.session``'s
(:class:`RefinementSession`), and the widget redraws whenever the session changes, whoever
called it (a button, a key, or ``refiner.session.zoom_in()`` in a cell). What is the widget's
own: the drawn images (:meth:`RegionRefiner.render_view` with its overlay opacity), the
add/remove and "this one" / "all like this" toggles, the key bindings (:data:`KEYS`) and the
buttons. Clicks reach Python through ipyevents on ``ipywidgets.Image`` widgets: the browser
reports the click in the image's own pixel coordinates (``dataX``/``dataY``) whatever size the
image is drawn at. Every event handler is an ordinary method (``handle_click``,
``handle_overview_click``, ``handle_key``) so the widget can be driven and tested without a
browser. Over the view: drag to pan (``mousedown``/``mouseup`` more than :data:`DRAG_PX`
pixels apart), the wheel zooms in powers of two around the pointer, ``+``/``-`` zoom, the
arrow keys pan. The view is drawn at one screen pixel per image pixel (its layout names
its exact width and height) inside a fixed box of ``view_size`` pixels, so its aspect ratio
is exact at any browser width and the layout does not move when a zoomed-out view is smaller.
"""

from __future__ import annotations

import io

import numpy as np

from workbench._errors import WorkbenchError
from workbench.interactive._session import RefinementSession

__all__ = ["RegionRefiner"]

#: Keys the view answers to (when the pointer is over it): action name per key.
KEYS = {
    "+": "zoom_in",
    "=": "zoom_in",
    "-": "zoom_out",
    "ArrowLeft": "left",
    "ArrowRight": "right",
    "ArrowUp": "up",
    "ArrowDown": "down",
    "z": "undo",
    "n": "toggle",
    "a": "toggle_propagate",
}

#: A press and release on the view further apart than this (view pixels) is a drag, not a click.
DRAG_PX = 4.0

#: The "this one" / "all like this" toggle: label per engine propagate mode.
PROPAGATE_LABELS = {"one": "this one", "all": "all like this"}


def _encode(image: np.ndarray, fmt: str = "png") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class RegionRefiner:
    """Refine a slide's lesion outline with clicks, in JupyterLab.

    Takes the same arguments as :class:`RefinementSession` (``slide``, ``adata``, ``geojson``,
    ``output``, ``adata_path``, ``view_size``, ``view_downsample``, ``method``, ``engine``,
    ``overview_size``, ``zoom_step``, ``min_downsample``, ``learn``, ``min_area_um2``,
    ``smooth_um``), or a ready session as
    ``session=``. Display it (last line of a cell) to get the view, the overview, and the
    buttons: positive/negative toggle, "this one" / "all like this" toggle (the engine's
    :attr:`~RefinementEngine.propagate` mode: whether a positive click also proposes the
    similar structures of the view), zoom in/out, pan, undo, reset, save.

    Everything about the slide, the view and the outline is read from and done through
    :attr:`session` (``refiner.session.mask``, ``refiner.session.save()`` …); the widget
    redraws after every change of the session.

    Parameters
    ----------
    slide
        Path of the slide or an open :class:`~workbench.io.Slide`; leave out when giving
        ``session``.
    session
        A ready :class:`RefinementSession`, instead of ``slide`` and options.
    **kwargs
        The other arguments of :class:`RefinementSession` (with ``slide`` only).

    Attributes
    ----------
    session
        The :class:`RefinementSession` the widget shows and drives.
    opacity
        Fill opacity of the lesion overlay in the drawn images.
    negative_mode
        Whether a plain click removes (the add/remove toggle).

    Raises
    ------
    workbench.WorkbenchError
        Neither a slide nor a session given, or both.
    """

    def __init__(self, slide=None, *, session: RefinementSession | None = None, **kwargs) -> None:
        if session is None:
            if slide is None:
                raise WorkbenchError("give a slide (path or Slide) or a RefinementSession")
            session = RefinementSession(slide, **kwargs)
        elif slide is not None or kwargs:
            raise WorkbenchError("give either a slide with options or session=, not both")
        self.session = session
        self.opacity = 0.4
        self.negative_mode = False
        self._ui = None
        self._press: tuple[float, float] | None = None  # where the mouse went down on the view
        self._dragged = False  # the next "click" ends a drag: not a click
        session._listeners.append(self._on_session_change)

    def _on_session_change(self, *, overview: bool) -> None:
        self._refresh(overview=overview)

    # ---------------------------------------------------------------- handlers ----------
    def handle_overview_click(self, x: float, y: float) -> np.ndarray:
        """A click on the overview: the session goes there.

        Parameters
        ----------
        x, y
            The clicked place in thumbnail pixels.

        Returns
        -------
        numpy.ndarray
            The new view's starting mask (:meth:`RefinementSession.go_to_overview`).
        """
        return self.session.go_to_overview(x, y)

    def handle_click(self, x: float, y: float, positive: bool | None = None) -> np.ndarray:
        """A click on the view: the session refines the outline with it.

        Parameters
        ----------
        x, y
            The clicked view pixel.
        positive
            Add (``True``) or remove (``False``); ``None`` follows the add/remove toggle.

        Returns
        -------
        numpy.ndarray
            The refined mask (:meth:`RefinementSession.click`).
        """
        if positive is None:
            positive = not self.negative_mode
        return self.session.click(x, y, positive)

    def handle_drag(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """A drag on the view from ``(x0, y0)`` to ``(x1, y1)`` (view pixels): pan with it.

        Parameters
        ----------
        x0, y0, x1, y1
            Where the mouse went down and where it was released.

        Returns
        -------
        numpy.ndarray
            The new view's starting mask (:meth:`RefinementSession.drag`).
        """
        return self.session.drag(x1 - x0, y1 - y0)

    def handle_wheel(self, x: float, y: float, delta_y: float) -> np.ndarray | None:
        """A wheel turn over the view at ``(x, y)``: zoom in (away from the user, ``delta_y <
        0``) or out by a factor of two around that point.

        Parameters
        ----------
        x, y
            The view pixel under the pointer.
        delta_y
            The browser's ``deltaY`` (negative: zoom in); 0 is ignored.

        Returns
        -------
        numpy.ndarray | None
            The new view's starting mask, or ``None`` when ``delta_y`` is 0.
        """
        if not delta_y:
            return None
        return self.session.zoom(2.0 if delta_y < 0 else 0.5, at_xy=(x, y))

    def handle_key(self, key: str) -> np.ndarray | None:
        """A key pressed over the view (see :data:`KEYS`).

        Parameters
        ----------
        key
            The browser's key name (``"+"``, ``"ArrowLeft"``, ``"z"`` …).

        Returns
        -------
        numpy.ndarray | None
            The view's mask after the action, or ``None`` for a key without one (ignored).
        """
        action = KEYS.get(key)
        if action is None:
            return None
        if action == "toggle":
            self.set_negative_mode(not self.negative_mode)
            return self.session.mask
        if action == "toggle_propagate":
            return self.toggle_propagate()
        if action in ("left", "right", "up", "down"):
            return self.session.pan(action)
        return getattr(self.session, action)()

    def set_opacity(self, value: float) -> None:
        """Set the overlay's fill opacity (clipped to [0, 1]) and redraw.

        Parameters
        ----------
        value
            The opacity.

        Returns
        -------
        None
        """
        self.opacity = float(np.clip(value, 0.0, 1.0))
        self._refresh()

    def set_negative_mode(self, negative: bool) -> None:
        """Set the add/remove toggle (what a plain click does).

        Parameters
        ----------
        negative
            ``True``: a plain click removes.

        Returns
        -------
        None
        """
        self.negative_mode = bool(negative)
        if self._ui is not None and hasattr(self, "_mode_widget"):
            self._mode_widget.value = "negative" if self.negative_mode else "positive"

    def set_propagate(self, mode: str) -> None:
        """Switch between "this one" and "all like this"; the next click uses it.

        Parameters
        ----------
        mode
            ``"one"`` or ``"all"`` (the engine's :attr:`~RefinementEngine.propagate`).

        Returns
        -------
        None

        Raises
        ------
        RefinementError
            An unknown mode (the message names the valid ones), or ``"all"`` on a
            random-walker engine.
        """
        self.session.engine.propagate = mode
        self.session.status = f"clicks now refine: {PROPAGATE_LABELS[mode]}"
        if self._ui is not None and hasattr(self, "_propagate_widget"):
            label = PROPAGATE_LABELS[mode]
            if self._propagate_widget.value != label:
                self._propagate_widget.value = label
        self._refresh()

    def toggle_propagate(self) -> np.ndarray:
        """Flip between "this one" and "all like this" (key ``a``).

        Returns
        -------
        numpy.ndarray
            The view's mask (unchanged; the next click uses the new mode).
        """
        self.set_propagate("one" if self.session.engine.propagate == "all" else "all")
        return self.session.mask

    def _guarded(self, action, *args):
        """Run a button's action; a WorkbenchError goes to the status line, not a traceback."""
        try:
            return action(*args)
        except WorkbenchError as exc:
            self.session.status = f"not done: {exc}"
            self._refresh()
            return None

    def _on_save(self, *_):
        try:
            self.session.save()
        except WorkbenchError as exc:
            self.session.status = f"not saved: {exc}"
            self._refresh()

    # ---------------------------------------------------------------- rendering --------
    def render_view(self) -> np.ndarray:
        """The view as the widget draws it (overlay at :attr:`opacity`, clicks).

        Returns
        -------
        numpy.ndarray
            ``(H, W, 3)`` uint8 (:meth:`RefinementSession.render_view`).
        """
        return self.session.render_view(opacity=self.opacity)

    def render_overview(self) -> np.ndarray:
        """The overview as the widget draws it (outline at :attr:`opacity`, the view's box).

        Returns
        -------
        numpy.ndarray
            ``(h, w, 3)`` uint8 (:meth:`RefinementSession.render_overview`).
        """
        return self.session.render_overview(opacity=self.opacity)

    def _refresh(self, overview: bool = False) -> None:
        if self._ui is None:
            return
        image = self.render_view()
        h, w = image.shape[:2]
        layout = self._view_widget.layout
        if layout.width != f"{w}px" or layout.height != f"{h}px":
            # Exactly the image's pixels: no stretching by the surrounding flex box.
            layout.width = layout.min_width = layout.max_width = f"{w}px"
            layout.height = layout.min_height = layout.max_height = f"{h}px"
        self._view_widget.value = _encode(image, "jpeg")
        self._scale_widget.value = self.session.scale_text
        if overview:
            self._overview_widget.value = _encode(self.render_overview())
        self._status_widget.value = self.session.status

    # ---------------------------------------------------------------- widgets ----------
    def _on_view_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "keydown":
            self._guarded(self.handle_key, str(event.get("key", "")))
            return
        x, y = event.get("dataX"), event.get("dataY")
        if x is None or y is None:
            return
        if kind == "wheel":
            self._guarded(self.handle_wheel, float(x), float(y), float(event.get("deltaY", 0)))
            return
        if kind == "mousedown":
            self._press = (float(x), float(y)) if event.get("button", 0) == 0 else None
            self._dragged = False
            return
        if kind == "mouseup":
            press, self._press = self._press, None
            if press is not None and np.hypot(x - press[0], y - press[1]) > DRAG_PX:
                self._dragged = True
                self._guarded(self.handle_drag, *press, float(x), float(y))
            return
        if kind == "click" and self._dragged:  # the release of a drag
            self._dragged = False
            return
        if kind == "contextmenu" or event.get("button") == 2 or event.get("shiftKey"):
            positive = False
        else:
            positive = None
        self.handle_click(float(x), float(y), positive)

    def _on_overview_event(self, event: dict) -> None:
        x, y = event.get("dataX"), event.get("dataY")
        if x is not None and y is not None:
            self._guarded(self.handle_overview_click, float(x), float(y))

    def widget(self):
        """Build (once) the ipywidgets layout.

        Returns
        -------
        ipywidgets.VBox
            The view, the overview, the toggles, buttons and the status line.
        """
        if self._ui is not None:
            return self._ui
        import ipywidgets as W
        from ipyevents import Event

        self._view_widget = W.Image(
            format="jpeg", layout=W.Layout(object_fit="contain", flex="0 0 auto")
        )
        self._view_widget.add_class("wb-refiner-view")
        side = f"{self.session.view_size}px"
        view_box = W.Box(
            [self._view_widget],
            layout=W.Layout(
                width=side,
                height=side,
                min_width=side,
                min_height=side,
                flex="0 0 auto",
                align_items="flex-start",
                justify_content="flex-start",
                overflow="hidden",
            ),
        )
        view_box.add_class("wb-refiner-view-box")
        self._overview_widget = W.Image(format="png", layout=W.Layout(width="320px"))
        self._overview_widget.add_class("wb-refiner-overview")
        self._scale_widget = W.Label(value=self.session.scale_text)
        self._scale_widget.add_class("wb-refiner-scale")
        self._status_widget = W.Label(value=self.session.status)
        self._status_widget.add_class("wb-refiner-status")
        self._events = [
            Event(
                source=self._view_widget,
                watched_events=["click", "contextmenu", "keydown", "mousedown", "mouseup"],
                prevent_default_action=True,
            ),
            Event(source=self._overview_widget, watched_events=["click"]),
            Event(
                source=self._view_widget,
                watched_events=["wheel"],
                prevent_default_action=True,
                throttle_or_debounce="throttle",
                wait=250,
            ),
        ]
        self._events[0].on_dom_event(self._on_view_event)
        self._events[1].on_dom_event(self._on_overview_event)
        self._events[2].on_dom_event(self._on_view_event)

        self._mode_widget = W.ToggleButtons(options=["positive", "negative"], value="positive")
        self._mode_widget.observe(
            lambda ch: setattr(self, "negative_mode", ch["new"] == "negative"), names="value"
        )

        self._propagate_widget = None
        if getattr(self.session.engine, "model", None) is not None:
            labels = {v: k for k, v in PROPAGATE_LABELS.items()}
            self._propagate_widget = W.ToggleButtons(
                options=list(PROPAGATE_LABELS.values()),
                value=PROPAGATE_LABELS[self.session.engine.propagate],
                tooltips=[
                    "a click refines the clicked object",
                    "a positive click also proposes the similar structures in the view",
                ],
            )
            self._propagate_widget.add_class("wb-refiner-propagate")
            self._propagate_widget.observe(
                lambda ch: self._guarded(self.set_propagate, labels[ch["new"]]), names="value"
            )

        def button(description, icon, action, css, *args):
            b = W.Button(
                description=description, icon=icon, layout=W.Layout(width="auto", flex="0 0 auto")
            )
            b.add_class(css)
            b.on_click(lambda _: self._guarded(action, *args))
            return b

        undo = button("Undo", "undo", self.session.undo, "wb-refiner-undo")
        reset = button("Reset", "refresh", self.session.reset, "wb-refiner-reset")
        save = W.Button(description="Save", icon="save", button_style="success")
        save.add_class("wb-refiner-save")
        save.on_click(self._on_save)
        zoom = [
            button("", "search-plus", self.session.zoom_in, "wb-refiner-zoom-in"),
            button("", "search-minus", self.session.zoom_out, "wb-refiner-zoom-out"),
        ]
        arrows = [
            button("", f"arrow-{d}", self.session.pan, f"wb-refiner-pan-{d}", d)
            for d in ("left", "up", "down", "right")
        ]
        opacity = W.FloatSlider(
            value=self.opacity, min=0.0, max=1.0, step=0.05, description="opacity"
        )
        opacity.observe(lambda ch: self.set_opacity(ch["new"]), names="value")
        controls = [self._mode_widget, undo, reset, save]
        if self._propagate_widget is not None:
            controls.insert(1, self._propagate_widget)
        focus = self.session.focus_regions
        if focus:
            pick = W.Dropdown(options=[(name, i) for i, (name, _) in enumerate(focus)])
            pick.observe(
                lambda ch: self._guarded(self.session.select_focus, ch["new"]), names="value"
            )
            controls.insert(0, pick)
        help_text = W.HTML(
            "<small>left click: add (or the toggle's kind); shift-click or right click: "
            "remove; drag: pan; wheel or +/-: zoom (x2); arrow keys pan; z undo (also "
            "after a pan or zoom); n toggles add/remove, a toggles this one / all like "
            "this; click the overview to move. The bar at the bottom left is to scale "
            "(µm).</small>"
        )
        self._ui = W.VBox(
            [
                W.HBox(controls),
                W.HBox([*zoom, *arrows, self._scale_widget]),
                W.HBox(
                    [
                        view_box,
                        W.VBox(
                            [self._overview_widget, opacity, help_text],
                            layout=W.Layout(width="330px", flex="0 0 auto"),
                        ),
                    ],
                    layout=W.Layout(align_items="flex-start", flex_flow="row wrap"),
                ),
                self._status_widget,
            ]
        )
        self._refresh(overview=True)
        return self._ui

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget())

    def __repr__(self) -> str:
        s = self.session
        return (
            f"RegionRefiner({s.slide!r}, method={s.engine.method!r}, "
            f"clicks={len(s.engine.clicks)}, output={str(s.output)!r})"
        )
