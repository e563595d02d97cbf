"""End to end in a real browser: JupyterLab 4 + Debian's Chromium driven by playwright.

A notebook shows a :class:`RegionRefiner` on a synthetic slide that starts with a model
outline away from the lesion; the test clicks positive inside the lesion (left click) and
negative outside it (shift-click), presses Save, checks that the kernel saw both clicks, the
mask changed and the GeoJSON keeps the refined outline ("Tumor") apart from the model's
("Tumor (model)"). It then drags the view (pan), presses Undo (the click comes back off
after the pan), zooms out with the button and measures the drawn view image at two browser
widths (1100 and 800 px): its width/height ratio must be the image's within 1 %. A
screenshot is kept under ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

SETUP = r"""
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from workbench.interactive import RegionRefiner
from workbench.datasets import lesion_view
from workbench.io import Slide

image, truth = lesion_view(512, seed=7)
image, truth = image[:, :448].copy(), truth[:, :448].copy()  # not square: 448 x 512
slide = Slide.from_array(image, mpp=0.5, name="synthetic")
model_ring = [[20, 20], [100, 20], [100, 100], [20, 100], [20, 20]]
Path("start.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [model_ring]},
     "properties": {"objectType": "annotation", "classification": {"name": "Tumor (model)"},
                    "made_by": "model demo"}}]}))
refiner = RegionRefiner(slide, geojson=Path("start.geojson"),
                        output=Path("out") / "lesion.geojson", view_size=256,
                        view_downsample=1.0, overview_size=192, learn=False)
refiner.session.go_to((334, 375))
sub = refiner.session.view_mask_of(truth, 1.0)  # the true lesion on the view's pixels
inside = distance_transform_edt(np.pad(sub, 1))[1:-1, 1:-1]
outside = distance_transform_edt(np.pad(~sub, 1))[1:-1, 1:-1]
ri, ci = np.unravel_index(np.argmax(inside), sub.shape)
ro, co = np.unravel_index(np.argmax(outside), sub.shape)

log = Path("clicks.jsonl")
_handle = refiner.handle_click
def _logged(x, y, positive=None):
    mask = _handle(x, y, positive)
    with log.open("a") as fh:
        fh.write(json.dumps({"x": x, "y": y, "positive": refiner.session.engine.clicks.last.positive,
                             "mask_sum": int(mask.sum()), "status": refiner.session.status}) + "\n")
    return mask
refiner.handle_click = _logged
Path("points.json").write_text(json.dumps({
    "inside": [int(ci), int(ri)], "outside": [int(co), int(ro)],
    "view": list(refiner.session.view_image.shape[:2])}))
refiner
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _notebook(path: Path) -> None:
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "setup",
                "metadata": {},
                "outputs": [],
                "source": SETUP.strip().splitlines(keepends=True),
            }
        ],
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


@pytest.fixture
def jupyterlab(tmp_path):
    if shutil.which("chromium") is None:
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium); browser test skipped"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed"
    )
    root = tmp_path / "root"
    root.mkdir()
    _notebook(root / "refine.ipynb")
    port, token = _free_port(), uuid.uuid4().hex
    env = dict(os.environ)
    for key, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
    ):
        env[key] = str(tmp_path / sub)
    # No "news" prompt that could sit over the page.
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    log = open(tmp_path / "jupyterlab.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up():
        if proc.poll() is not None:
            raise AssertionError(
                f"JupyterLab exited: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        _wait_for(up, 120, "JupyterLab to answer")
        yield {"url": f"{base}/lab/tree/refine.ipynb?token={token}", "root": root}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_refiner_in_jupyterlab(jupyterlab):
    from playwright.sync_api import sync_playwright

    root: Path = jupyterlab["root"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.goto(jupyterlab["url"])
            # The notebook is open and its kernel is idle.
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_function(
                "() => /Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')",
                timeout=120_000,
            )
            # Deterministic route: focus the cell, run it with Shift+Enter.
            page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
            page.keyboard.press("Shift+Enter")
            _wait_for(
                lambda: (root / "points.json").exists(), 180, "the notebook to set up the refiner"
            )
            points = json.loads((root / "points.json").read_text())
            view = page.locator("img.wb-refiner-view")
            view.wait_for(state="visible", timeout=60_000)
            _wait_for(
                lambda: view.evaluate("el => el.complete && el.naturalWidth > 0"),
                60,
                "the view image",
            )
            natural = view.evaluate("el => [el.naturalWidth, el.naturalHeight]")
            box = view.bounding_box()
            sx, sy = box["width"] / natural[0], box["height"] / natural[1]
            before = view.get_attribute("src")
            clicks = root / "clicks.jsonl"

            def logged():
                return clicks.read_text().splitlines() if clicks.exists() else []

            xi, yi = points["inside"]
            view.click(position={"x": (xi + 0.5) * sx, "y": (yi + 0.5) * sy})
            _wait_for(lambda: len(logged()) >= 1, 60, "the positive click to reach the kernel")
            xo, yo = points["outside"]
            view.click(position={"x": (xo + 0.5) * sx, "y": (yo + 0.5) * sy}, modifiers=["Shift"])
            _wait_for(lambda: len(logged()) >= 2, 60, "the negative click to reach the kernel")
            _wait_for(lambda: view.get_attribute("src") != before, 30, "the view image to update")
            page.wait_for_function(
                "() => /negative click 2/.test(document.querySelector('.wb-refiner-status')?.innerText || '')",
                timeout=30_000,
            )
            first, second = (json.loads(line) for line in logged()[:2])
            assert first["positive"] is True and second["positive"] is False
            assert first["mask_sum"] > 0  # the mask changed from the empty start
            assert abs(first["x"] - xi) <= 1.5 and abs(first["y"] - yi) <= 1.5

            page.locator(".wb-refiner-save").click()
            out = root / "out" / "lesion.geojson"
            _wait_for(out.exists, 60, "the GeoJSON to be written")
            page.wait_for_function(
                "() => /saved/.test(document.querySelector('.wb-refiner-status')?.innerText || '')",
                timeout=30_000,
            )
            data = json.loads(out.read_text())
            assert data["type"] == "FeatureCollection" and data["features"]
            props = [f["properties"] for f in data["features"]]
            by_class = {p["classification"]["name"]: p for p in props}
            assert set(by_class) == {"Tumor", "Tumor (model)"}  # refined apart from predicted
            assert by_class["Tumor"]["made_by"] == "user clicks (cgam)"
            assert by_class["Tumor (model)"]["made_by"] == "model demo"

            def status_matches(pattern: str) -> None:
                page.wait_for_function(
                    "p => new RegExp(p).test("
                    "document.querySelector('.wb-refiner-status')?.innerText || '')",
                    arg=pattern,
                    timeout=30_000,
                )

            # Drag the view to pan, then undo: the negative click is undone in the view before.
            box = view.bounding_box()
            page.mouse.move(box["x"] + 100, box["y"] + 100)
            page.mouse.down()
            page.mouse.move(box["x"] + 140, box["y"] + 120, steps=5)
            page.mouse.up()
            status_matches("^view at")
            assert len(logged()) == 2  # the drag was not a click
            page.locator(".wb-refiner-undo").click()
            status_matches("undo: back to the view .* 1 clicks left")
            # Zoom out with the button: the whole slide, 224 x 256 view pixels, at 1 µm/px.
            page.locator(".wb-refiner-zoom-out").click()
            status_matches("1 µm/px")
            scale = page.locator(".wb-refiner-scale")
            assert scale.inner_text().strip() == "1 µm/px"
            _wait_for(
                lambda: view.evaluate("el => el.naturalWidth === 224 && el.complete"),
                30,
                "the zoomed-out view image",
            )
            for width in (1100, 800):
                page.set_viewport_size({"width": width, "height": 1000})
                page.wait_for_timeout(500)
                natural = view.evaluate("el => [el.naturalWidth, el.naturalHeight]")
                drawn = view.evaluate(
                    "el => { const r = el.getBoundingClientRect(); return [r.width, r.height]; }"
                )
                ratio = (drawn[0] / drawn[1]) / (natural[0] / natural[1])
                assert abs(ratio - 1) <= 0.01, (width, natural, drawn)
                page.screenshot(
                    path=str(ARTIFACTS / f"refiner_browser_{width}.png"), full_page=True
                )
        finally:
            browser.close()
