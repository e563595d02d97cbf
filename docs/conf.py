"""Sphinx configuration for the Pathology Workbench API reference.

Build with ``make docs`` (HTML lands in ``docs/_build/html``). The API pages are generated
from each sub-package's ``__all__``: ``docs/api/<package>.rst`` is written here on every
build (only when its text changes) and autosummary writes one page per exported name into
``docs/api/generated/``. Notebooks are rendered from their stored outputs and never run.
Nothing here reaches the network (no intersphinx).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the checkout, not whatever is installed

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import workbench  # noqa: E402

project = "Pathology Workbench"
author = "Pathology Workbench contributors"
copyright = "the Pathology Workbench contributors"  # noqa: A001
release = version = workbench.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
]

# The sub-packages documented, in reading order, with a one-line title each.
PACKAGES = {
    "workbench": "Errors and the top level",
    "workbench.io": "io: slides, cohorts, GeoJSON, atomic files",
    "workbench.pp": "pp: tissue, tiles, regions, stain",
    "workbench.datasets": "datasets: synthetic and real cohorts",
    "workbench.models": "models: torch modules, losses, trainer, checkpoints",
    "workbench.tl": "tl: explain, train, discover",
    "workbench.pl": "pl: plots of what tl stored",
    "workbench.interactive": "interactive: click-guided refinement",
}

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    "notebooks/sanitize.cfg",
    "Thumbs.db",
    ".DS_Store",
]

# -- autodoc / autosummary ---------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autosummary_ignore_module_all = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
autodoc_mock_imports: list[str] = []

# -- numpydoc ----------------------------------------------------------------------------
numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
# Checked on every documented docstring: no unknown sections (GL06), sections in order (GL07),
# no documented parameter that the signature lacks (PR02). Checked on every exported name
# (the pages autosummary makes, not the methods listed on a class page): every parameter
# documented (PR01) and a Returns section when something is returned (RT01), the rule that
# tests/test_docstrings.py enforces, with the same PENDING exceptions (read from that file,
# so the list lives in one place).
numpydoc_validation_checks = {"GL06", "GL07", "PR02", "PR01", "RT01"}


def _pending() -> list[str]:
    import ast

    tree = ast.parse((ROOT / "tests" / "test_docstrings.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PENDING":
            return sorted(ast.literal_eval(node.value) or [])
    raise RuntimeError("tests/test_docstrings.py has no PENDING set")


def _inherited_constructors() -> list[str]:
    """Exported classes whose constructor is not the package's.

    ``nn.Module``'s ``*args``, or a :class:`typing.Protocol`'s placeholder (a protocol is
    never constructed).
    """
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for member in module.__all__:
            obj = getattr(module, member)
            init = getattr(obj, "__init__", None)
            if not inspect.isclass(obj) or issubclass(obj, BaseException):
                continue
            if getattr(obj, "_is_protocol", False) or (
                not getattr(init, "__module__", "").startswith("workbench")
                and "__init__" not in vars(obj)
            ):
                names.append(f"{package}.{member}")
    return names


numpydoc_validation_exclude = {
    # members listed on a class page (Class.method): their sections are not required yet
    r"\.[A-Z]\w*\.[a-z_]\w*$",
    *(rf"^{re.escape(name)}$" for name in _pending() + _inherited_constructors()),
}

# -- myst-nb: notebooks are shown with their stored outputs, never executed ----------------
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
# Widget views stored in the notebooks need the live kernel; show their text fallback.
nb_mime_priority_overrides = [
    ("html", "application/vnd.jupyter.widget-view+json", None),
]

# -- HTML ----------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"Pathology Workbench {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Explain, refine and discover on whole-slide images.",
    # notebook cells and signatures are wide; alabaster's default page is 940 px
    "page_width": "1240px",
    "sidebar_width": "240px",
}


# -- the generated API pages ---------------------------------------------------------------
def _kind(obj) -> str:
    if inspect.isclass(obj):
        if issubclass(obj, Warning):
            return "Warnings"
        if issubclass(obj, BaseException):
            return "Errors"
        return "Classes"
    if callable(obj):
        return "Functions"
    return "Constants"


def _write_if_changed(path: Path, text: str) -> None:
    # Rewriting an unchanged file would make Sphinx rebuild every page that links to it.
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# Where each object got its page: a name exported by two packages (an error class that a
# sub-package re-exports) is documented once, under the first package in PACKAGES.
DOCUMENTED_AT: dict[int, str] = {}


def _package_page(name: str, title: str) -> str:
    module = importlib.import_module(name)
    groups: dict[str, list[str]] = {}
    elsewhere: list[str] = []
    for member in module.__all__:
        if member.startswith("__"):
            continue
        obj = getattr(module, member)
        kind = _kind(obj)
        if kind != "Constants" and id(obj) in DOCUMENTED_AT:
            elsewhere.append(f"``{member}``: see :py:obj:`{DOCUMENTED_AT[id(obj)]}`")
            continue
        if kind != "Constants":
            DOCUMENTED_AT[id(obj)] = f"{name}.{member}"
        groups.setdefault(kind, []).append(member)
    lines = [title, "=" * len(title), "", f".. automodule:: {name}", ""]
    for kind in ("Classes", "Functions", "Errors", "Warnings"):
        if kind not in groups:
            continue
        lines += [kind, "-" * len(kind), "", f".. currentmodule:: {name}", ""]
        lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   {member}" for member in sorted(groups[kind])] + [""]
    if "Constants" in groups:
        lines += ["Constants", "---------", ""]
        lines += [".. list-table::", "   :header-rows: 1", "", "   * - Name", "     - Value"]
        for member in sorted(groups["Constants"]):
            value = repr(getattr(module, member))
            lines += [f"   * - ``{name}.{member}``", f"     - ``{value}``"]
        lines.append("")
    if elsewhere:
        lines += ["Also exported here", "------------------", ""]
        lines += [f"* {item}" for item in sorted(elsewhere)] + [""]
    lines += _module_notes(name, module)
    return "\n".join(lines)


def _module_notes(name: str, module) -> list[str]:
    """The docstrings of the private modules behind a package's exports.

    Docstrings say "see the module docstring" for the background (models, file layouts,
    algorithms) that the private ``_module.py`` files describe; they are shown here, one
    section per module, in the order the exports first use them.
    """
    modules: list[str] = []
    for member in module.__all__:
        obj = getattr(module, member)
        where = getattr(obj, "__module__", None) if callable(obj) else None
        if where and where.startswith(f"{name}._") and where not in modules:
            modules.append(where)
    documented = [m for m in modules if (importlib.import_module(m).__doc__ or "").strip()]
    if not documented:
        return []
    title = "Background: the modules"
    lines = [title, "-" * len(title), ""]
    lines += [
        "What each implementation module says about itself (the docstrings above refer to",
        "these as *the module docstring*).",
        "",
    ]
    for where in documented:
        heading = f"``{where}``"
        lines += [heading, "~" * len(heading), ""]
        lines += [f".. automodule:: {where}", "   :no-index:", ""]
    return lines


def _help_text(parser: argparse.ArgumentParser) -> str:
    os.environ.setdefault("COLUMNS", "100")
    return parser.format_help()


def _cli_page() -> str:
    from workbench.cli import build_parser

    parser = build_parser()
    title = "Command line: ``workbench``"
    lines = [title, "=" * len(title), ""]
    lines += [
        "Every command prints one line and exits with code 2 on a user's mistake; ``--debug``",
        "shows the full traceback. The help below is generated from the parser.",
        "",
        ".. code-block:: text",
        "",
    ]
    lines += ["   " + line for line in _help_text(parser).splitlines()] + [""]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subparsers:
        for command, sub in action.choices.items():
            heading = f"``workbench {command}``"
            lines += [heading, "-" * len(heading), "", ".. code-block:: text", ""]
            lines += ["   " + line for line in _help_text(sub).splitlines()] + [""]
    lines += [
        "The report",
        "----------",
        "",
        ".. currentmodule:: workbench",
        "",
        ".. autosummary::",
        "   :toctree: generated",
        "   :nosignatures:",
        "",
        "   report.write_report",
        "   cli.main",
        "",
    ]
    return "\n".join(lines)


def _write_api_pages() -> None:
    api = DOCS / "api"
    pages = []
    for name, title in PACKAGES.items():
        page = name.replace("workbench.", "") if name != "workbench" else "errors"
        _write_if_changed(api / f"{page}.rst", _package_page(name, title))
        pages.append(page)
    _write_if_changed(api / "cli.rst", _cli_page())
    pages.append("cli")
    title = "API reference"
    index = [title, "=" * len(title), ""]
    index += [
        "One page per sub-package, listing the names in its ``__all__``; each name has its own",
        "page. ``tl`` verbs name the AnnData keys they write under *Returns*.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    index += [f"   {page}" for page in pages] + [""]
    _write_if_changed(api / "index.rst", "\n".join(index))
    # A name no longer exported leaves its generated stub behind; Sphinx would still read it
    # (an orphan page, or an import that fails), so remove stubs nothing lists any more.
    wanted = set(DOCUMENTED_AT.values()) | {"workbench.report.write_report", "workbench.cli.main"}
    for stub in (api / "generated").glob("*.rst"):
        if stub.stem not in wanted:
            stub.unlink()


_write_api_pages()
