"""End to end in a real browser: JupyterLab 4 + Debian's Chromium driven by playwright.

A notebook shows a :class:`RegionRefiner` on a synthetic slide; the test clicks positive
inside the lesion (left click) and negative outside it (shift-click), presses Save, checks
that the kernel saw both clicks, the mask changed and the GeoJSON was written, then presses
the zoom-in button and waits for the view at the new magnification. A screenshot
is kept under ``test-artifacts/``.
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
slide = Slide.from_array(image, mpp=0.5, name="synthetic")
refiner = RegionRefiner(slide, output=Path("out") / "lesion.geojson", view_size=256,
                        view_downsample=2.0, overview_size=192)
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
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
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
            data = json.loads(out.read_text())
            assert data["type"] == "FeatureCollection" and data["features"]
            assert data["features"][0]["properties"]["classification"]["name"] == "Tumor"
            page.wait_for_function(
                "() => /saved/.test(document.querySelector('.wb-refiner-status')?.innerText || '')",
                timeout=30_000,
            )
            # Zoom in with the toolbar button: the view is read again at twice the magnification.
            page.locator(".wb-refiner-zoom-in").click()
            page.wait_for_function(
                "() => /, 1 px\\/px/.test(document.querySelector('.wb-refiner-status')?.innerText || '')",
                timeout=30_000,
            )
            page.screenshot(path=str(ARTIFACTS / "refiner_browser.png"), full_page=True)
        finally:
            browser.close()
