"""The API reference builds with warnings as errors and has a page for every exported name.

This is what keeps ``make docs`` true in CI: the same Sphinx command, into a temporary folder.
"""

from __future__ import annotations

import html
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import workbench

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["workbench"] + [f"workbench.{name}" for name in workbench._SUBPACKAGES]

pytest.importorskip("sphinx", reason="the docs tools are in the test extra: pip install -e .[test]")
pytest.importorskip("numpydoc", reason="the docs tools are in the test extra")
pytest.importorskip("myst_nb", reason="the docs tools are in the test extra")


def _exported() -> list[tuple[str, str, object]]:
    out = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            if not name.startswith("__"):
                out.append((package, name, getattr(module, name)))
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    done = subprocess.run(
        [*cmd, str(ROOT / "docs"), str(out)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"sphinx failed:\n{done.stderr[-6000:]}"
    return out


def _text(path: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


@pytest.mark.slow
def test_docs_build_with_warnings_as_errors_has_a_page_per_exported_name(site):
    generated = site / "api" / "generated"
    exported = _exported()
    # an object exported by two packages (a re-exported error) has one page, under either name
    pages_of: dict[int, set[str]] = {}
    for package, name, obj in exported:
        pages_of.setdefault(id(obj), set()).add(f"{package}.{name}.html")
    missing = []
    for package, name, obj in exported:
        if inspect.isclass(obj) or callable(obj):
            if not any((generated / page).is_file() for page in pages_of[id(obj)]):
                missing.append(f"{package}.{name}")
        else:  # constants are listed with their value on the package page
            page = "errors" if package == "workbench" else package.split(".", 1)[1]
            if f"{package}.{name}" not in _text(site / "api" / f"{page}.html"):
                missing.append(f"{package}.{name}")
    for dotted in ("workbench.report.write_report", "workbench.cli.main"):  # the CLI page's
        if not (generated / f"{dotted}.html").is_file():
            missing.append(dotted)
    assert not missing, f"no API page for: {missing}"


@pytest.mark.slow
def test_docs_pages_carry_the_docstrings_and_the_notebooks(site):
    # a page is the docstring rendered, not an empty stub
    from workbench.io import Slide

    summary = inspect.getdoc(Slide).splitlines()[0].strip()
    assert summary[:40] in _text(site / "api" / "generated" / "workbench.io.Slide.html")
    # the private modules' docstrings (the background docstrings refer to) are on the pages
    import workbench.tl._spatial as spatial_module

    first = spatial_module.__doc__.strip().splitlines()[0]
    assert first in _text(site / "api" / "tl.html")
    # the notebooks are shown with their stored outputs (images), not re-run
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = site / "notebooks" / f"{notebook.stem}.html"
        assert page.is_file(), f"{notebook.name} is not rendered"
    assert any((site / "_images").glob("*.png")) or any((site / "_images").glob("*.jpg"))
    # the command line page is generated from the parser: every command is there
    from workbench.cli import build_parser

    cli = _text(site / "api" / "cli.html")
    commands = next(
        a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"
    ).choices
    assert commands and all(f"workbench {command}" in cli for command in commands)
    # the landing page is the README
    readme_title = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
    assert readme_title in _text(site / "index.html")
