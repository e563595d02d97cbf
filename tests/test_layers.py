"""The rooms of ``../shared/DESIGN.md`` §3 and which way imports may flow, read from the source.

Every module of ``workbench/`` is parsed with :mod:`ast`; every import counts, at module level
and inside functions alike (an import hidden in a function still runs, and still ties the two
modules together). Imports under ``if TYPE_CHECKING:`` never run and are skipped.

The rules, one test each:

* ``io``, ``pp``, ``models`` and ``datasets`` import nothing above them; ``io``, ``pp`` and
  ``datasets`` never import torch; ``models`` never imports AnnData, OpenSlide, scanpy, squidpy,
  ``workbench.io`` (except the one write rule, ``workbench.io._atomic``) or ``workbench.tl``;
* ``tl`` uses ``io``, ``pp`` and ``models`` only (no ``pl``, ``interactive``, ``datasets``, CLI,
  report or demo);
* ``pl`` reads AnnData only: no other room of the package, no torch, no OpenSlide;
* nothing outside ``workbench/interactive`` imports it, except the two entry points that drive
  its headless session (``cli``, ``_demo``), and those never import the widget;
* only ``workbench/interactive/_widget.py`` imports ipywidgets;
* no module but ``cli`` itself imports ``workbench.cli``;
* no import circles between modules (a package's ``__init__`` counts as a module, and
  importing ``a.b.c`` runs ``a.b``'s ``__init__`` first, so that edge counts too).

The checker itself is tested on small packages planted under ``tmp_path``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

#: Modules every room may import: they import nothing of the package themselves (checked).
BASE = {"workbench", "workbench._errors", "workbench._constants", "workbench._reliability"}
#: The rooms of the library, each with the rooms it may import (besides :data:`BASE`).
ALLOWED = {
    "io": {"io"},
    "pp": {"io", "pp"},
    "models": {"models"},
    "datasets": {"io", "pp", "datasets"},
    "tl": {"io", "pp", "models", "tl"},
    "pl": {"pl"},
}
#: Single modules a room may import although their room is out of bounds, and why.
ALLOWED_MODULES = {
    # The one rule for writing files (temporary name, then rename) is stdlib-only; models use
    # it for checkpoints and exported encoders instead of a second copy.
    "models": {"workbench.io._atomic"},
}
#: Third-party packages a room never imports.
BANNED = {
    "io": {"torch"},
    "pp": {"torch"},
    "datasets": {"torch"},
    "models": {"anndata", "openslide", "scanpy", "squidpy"},
    "pl": {"torch", "openslide"},
}
#: The modules that start things (they may drive the headless interactive session).
ENTRY_POINTS = {"workbench.cli", "workbench._demo"}
WIDGET_MODULE = "workbench.interactive._widget"
WIDGET_LIBRARIES = {"ipywidgets", "ipyevents"}

#: Imports that break a rule today and are being removed, as ``(importer, imported module)``.
#: The lead empties this set when the fixing branches are merged; a listed import that no
#: longer occurs fails :func:`test_known_violations_are_still_real`, so the list cannot go stale.
#: (module, import) pairs allowed for now; keep it empty.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


# ----------------------------------------------------------------------------- the checker
@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``module`` (in ``path``, at ``line``) runs ``target``."""

    module: str
    path: str
    line: int
    target: str
    statement: str
    local: bool

    def __str__(self) -> str:
        where = " (inside a function)" if self.local else ""
        return f"{self.path}:{self.line}: `{self.statement}`{where}"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, path: str, modules: set[str]):
        self.module, self.is_package, self.path, self.modules = module, is_package, path, modules
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, node: ast.stmt, target: str) -> None:
        statement = " ".join(ast.unparse(node).split())
        self.found.append(
            Import(self.module, self.path, node.lineno, target, statement, self.depth > 0)
        )

    def _function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # never runs: only its else branch counts
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module if self.is_package else self.module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        targets = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            target = sub if sub in self.modules else base
            if target not in targets:
                targets.append(target)
        for target in targets:
            self._add(node, target)


def scan(package: Path) -> tuple[set[str], list[Import]]:
    """Every module of ``package`` and every import its modules run."""
    root = package.parent
    paths = {_module_name(p, root): p for p in sorted(package.rglob("*.py"))}
    modules = set(paths)
    imports: list[Import] = []
    for name, path in sorted(paths.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        collector = _Collector(
            name, path.name == "__init__.py", str(path.relative_to(root)), modules
        )
        collector.visit(tree)
        imports += collector.found
    return modules, imports


def room_of(name: str) -> str | None:
    """``"tl"`` for ``workbench.tl._train``, ``"cli"`` for ``workbench.cli``; ``None`` outside."""
    parts = name.split(".")
    if parts[0] != "workbench":
        return None
    return parts[1] if len(parts) > 1 else ""


def _internal(imp: Import) -> bool:
    return room_of(imp.target) is not None


def _top(name: str) -> str:
    return name.split(".")[0]


def rule_rooms(imports: list[Import]) -> list[Import]:
    """Imports from a room of :data:`ALLOWED` into a room it may not use."""
    bad = []
    for imp in imports:
        room = room_of(imp.module)
        if room not in ALLOWED or not _internal(imp) or imp.target in BASE:
            continue
        if room_of(imp.target) in ALLOWED[room]:
            continue
        if imp.target in ALLOWED_MODULES.get(room, set()):
            continue
        bad.append(imp)
    return bad


def rule_base(imports: list[Import]) -> list[Import]:
    """The shared base modules import nothing else of the package."""
    return [i for i in imports if i.module in BASE and _internal(i) and i.target not in BASE]


def rule_banned(imports: list[Import], rooms: set[str]) -> list[Import]:
    """Third-party imports a room in ``rooms`` never makes (:data:`BANNED`)."""
    return [
        i
        for i in imports
        if room_of(i.module) in rooms and _top(i.target) in BANNED.get(room_of(i.module), set())
    ]


def rule_interactive(imports: list[Import]) -> list[Import]:
    """Imports of ``workbench.interactive`` from outside it (entry points: no widget)."""
    bad = []
    for imp in imports:
        if room_of(imp.module) == "interactive" or room_of(imp.target) != "interactive":
            continue
        widget = imp.target == WIDGET_MODULE or "RegionRefiner" in imp.statement
        if imp.module not in ENTRY_POINTS or widget:
            bad.append(imp)
    return bad


def rule_widget_libraries(imports: list[Import]) -> list[Import]:
    """ipywidgets (or ipyevents) imported anywhere but the widget module."""
    return [i for i in imports if _top(i.target) in WIDGET_LIBRARIES and i.module != WIDGET_MODULE]


def rule_cli(imports: list[Import]) -> list[Import]:
    """Library modules importing the command line."""
    return [i for i in imports if i.target == "workbench.cli" and i.module != "workbench.cli"]


def graph(modules: set[str], imports: list[Import]) -> dict[str, dict[str, Import]]:
    """Module -> {module it runs: the import that does it}, inside the package only.

    Importing ``a.b.c`` runs the ``__init__`` of ``a.b`` first (unless the importer already
    lives in ``a.b``), so that package is an edge too; the root package (whose ``__init__``
    loads its sub-packages lazily) is left out.
    """
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in imports:
        if imp.module not in modules or not _internal(imp):
            continue
        target = imp.target
        while target and target not in modules:  # ``import a.b.name`` of a non-module
            target = target.rpartition(".")[0]
        chain = [target]
        parent = target.rpartition(".")[0]
        while parent.count("."):  # the packages above it, except the root
            if not imp.module.startswith(parent + "."):
                chain.append(parent)
            parent = parent.rpartition(".")[0]
        for t in chain:
            if t in modules and t != imp.module:
                edges[imp.module].setdefault(t, imp)
    return edges


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Closed paths (``[a, b, …, a]``) of modules that import each other: within each strongly
    connected group (Tarjan's algorithm, without recursion), the shortest circle through each
    member, each circle once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    paths: set[tuple[str, ...]] = set()
    for group in groups:  # through each member, the shortest way back to it within the group
        members = set(group)
        for first in group:
            came_from: dict[str, str] = {}
            frontier = [first]
            while frontier and first not in came_from:
                nxt = []
                for node in frontier:
                    for child in sorted(edges[node]):
                        if child in members and child not in came_from:
                            came_from[child] = node
                            nxt.append(child)
                frontier = nxt
            path = [first]
            node = came_from[first]
            while node != first:
                path.append(node)
                node = came_from[node]
            path = path[::-1]  # first, …, the module that imports first
            start = path.index(min(path))  # the same circle found from another member
            paths.add(tuple(path[start:] + path[:start]))
    return [[*path, path[0]] for path in sorted(paths)]


def describe_cycle(path: list[str], edges: dict[str, dict[str, Import]]) -> str:
    steps = [f"    {a} -> {b}: {edges[a][b]}" for a, b in zip(path, path[1:], strict=False)]
    return " -> ".join(path) + "\n" + "\n".join(steps)


def _known(imp: Import) -> bool:
    return (imp.module, imp.target) in KNOWN_VIOLATIONS


def stale(imports: list[Import], known: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Entries of ``known`` that no rule finds any more (fixed, so they must leave the list)."""
    every_rule = (
        rule_rooms(imports) + rule_base(imports) + rule_interactive(imports)
        + rule_widget_libraries(imports) + rule_cli(imports)
    )  # fmt: skip
    return sorted(known - {(i.module, i.target) for i in every_rule})


def _report(rule: str, offenders: list[Import]) -> str:
    lines = "\n".join(f"  {imp}" for imp in offenders)
    return f"{len(offenders)} import(s) break the rule: {rule}\n{lines}"


# ----------------------------------------------------------------------------- the package
MODULES, IMPORTS = scan(PACKAGE)


def test_the_scan_sees_the_package_and_function_local_imports():
    assert len(MODULES) > 50 and "workbench.tl._train" in MODULES
    assert any(i.module == "workbench.tl._train" and i.target == "workbench.tl._engine"
               for i in IMPORTS)  # fmt: skip
    assert any(i.local for i in IMPORTS) and any(not i.local for i in IMPORTS)


def test_base_modules_import_nothing_else_of_the_package():
    offenders = rule_base(IMPORTS)
    assert not offenders, _report(
        "_errors/_constants/_reliability import only each other", offenders
    )


@pytest.mark.parametrize("room", ["io", "pp", "models", "datasets"])
def test_lower_rooms_import_nothing_above_them(room):
    offenders = [i for i in rule_rooms(IMPORTS) if room_of(i.module) == room]
    allowed = sorted(ALLOWED[room] | ALLOWED_MODULES.get(room, set()))
    assert not offenders, _report(f"{room} imports only the base modules and {allowed}", offenders)


def test_io_pp_datasets_never_import_torch():
    offenders = rule_banned(IMPORTS, {"io", "pp", "datasets"})
    assert not offenders, _report("io, pp and datasets never import torch", offenders)


def test_models_never_see_anndata_openslide_io_or_tl():
    offenders = rule_banned(IMPORTS, {"models"}) + [
        i
        for i in IMPORTS
        if room_of(i.module) == "models"
        and room_of(i.target) in ("io", "tl")
        and i.target not in ALLOWED_MODULES["models"]
    ]
    assert not offenders, _report(
        "models take tensors: no anndata/openslide/scanpy/squidpy, no workbench.io (but "
        "io._atomic) or workbench.tl",
        offenders,
    )


def test_tl_uses_only_io_pp_and_models():
    offenders = [i for i in rule_rooms(IMPORTS) if room_of(i.module) == "tl"]
    assert not offenders, _report(
        "tl uses io/pp/models (not pl, interactive, datasets, cli, report, the demo)", offenders
    )


def test_pl_reads_anndata_only():
    offenders = [i for i in rule_rooms(IMPORTS) if room_of(i.module) == "pl"]
    offenders += rule_banned(IMPORTS, {"pl"})
    assert not offenders, _report(
        "pl plots what tl stored in AnnData: no other room, no torch/openslide", offenders
    )


def test_nothing_outside_interactive_imports_it():
    offenders = rule_interactive(IMPORTS)
    assert not offenders, _report(
        f"only workbench/interactive imports workbench.interactive ({sorted(ENTRY_POINTS)} "
        "may drive its headless session, never the widget)",
        offenders,
    )


def test_only_the_widget_module_imports_ipywidgets():
    offenders = rule_widget_libraries(IMPORTS)
    assert not offenders, _report(f"only {WIDGET_MODULE} imports ipywidgets", offenders)


def test_no_library_module_imports_the_cli():
    offenders = [i for i in rule_cli(IMPORTS) if not _known(i)]
    assert not offenders, _report("no module but workbench.cli imports workbench.cli", offenders)


def test_known_violations_are_still_real():
    fixed = stale(IMPORTS, KNOWN_VIOLATIONS)
    assert not fixed, f"fixed, so remove from KNOWN_VIOLATIONS in tests/test_layers.py: {fixed}"


def test_no_import_circles():
    edges = graph(MODULES, [i for i in IMPORTS if not _known(i)])
    found = cycles(edges)
    assert not found, f"{len(found)} import circle(s):\n" + "\n".join(
        describe_cycle(path, edges) for path in found
    )


# ----------------------------------------------------------------------------- the checker itself
def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake ``workbench`` package under ``tmp_path`` with ``files`` (path -> source)."""
    package = tmp_path / "workbench"
    for rel, source in {"__init__.py": "", **files}.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(package).parents:
            init = package / parent / "__init__.py"
            if not init.exists():
                init.write_text("")
        path.write_text(source)
    return package


def test_checker_finds_a_planted_upward_import_inside_a_function(tmp_path):
    package = _plant(tmp_path, {
        "io/_reader.py": "import numpy\n\ndef read():\n    from workbench.tl._x import f\n    return f\n",
        "tl/_x.py": "def f():\n    pass\n",
        "pl/_plot.py": "from workbench.tl import markers\n",
    })  # fmt: skip
    _, imports = scan(package)
    offenders = rule_rooms(imports)
    assert [(i.path, i.line, i.target, i.local) for i in offenders] == [
        ("workbench/io/_reader.py", 4, "workbench.tl._x", True),
        ("workbench/pl/_plot.py", 1, "workbench.tl", False),
    ]
    message = _report("io imports nothing above it", offenders)
    assert (
        "workbench/io/_reader.py:4: `from workbench.tl._x import f` (inside a function)" in message
    )


def test_checker_finds_banned_libraries_and_skips_type_checking_imports(tmp_path):
    package = _plant(tmp_path, {
        "pp/_a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
        "datasets/_b.py": "def make():\n    import torch.nn as nn\n",
        "models/_c.py": "import anndata\nfrom workbench.io._atomic import atomic_path\n",
        "models/_d.py": "from workbench.io import Slide\n",
    })  # fmt: skip
    _, imports = scan(package)
    banned = rule_banned(imports, {"io", "pp", "datasets", "models"})
    assert [(i.module, i.target) for i in banned] == [
        ("workbench.datasets._b", "torch.nn"),
        ("workbench.models._c", "anndata"),
    ]
    assert [(i.module, i.target) for i in rule_rooms(imports)] == [
        ("workbench.models._d", "workbench.io")  # io._atomic is allowed, the rest of io is not
    ]


def test_checker_finds_interactive_widget_and_cli_imports(tmp_path):
    package = _plant(tmp_path, {
        "interactive/__init__.py": "from workbench.interactive._widget import RegionRefiner\n",
        "interactive/_widget.py": "import ipywidgets\n",
        "interactive/_session.py": "import ipywidgets as w\n\ndef go():\n    from workbench.cli import _whole\n",
        "tl/_a.py": "def f():\n    from workbench.interactive import RefinementSession\n",
        "_demo.py": "from workbench.interactive import RefinementSession\n",
        "cli.py": "from workbench.interactive import RegionRefiner\n",
    })  # fmt: skip
    _, imports = scan(package)
    assert [i.module for i in rule_interactive(imports)] == ["workbench.cli", "workbench.tl._a"]
    assert [i.module for i in rule_widget_libraries(imports)] == ["workbench.interactive._session"]
    assert [(i.module, i.line) for i in rule_cli(imports)] == [
        ("workbench.interactive._session", 4)
    ]


def test_checker_reports_a_circle_hidden_in_function_local_imports(tmp_path):
    package = _plant(tmp_path, {
        "tl/_survival.py": "def screen():\n    from workbench.tl._site import guard\n",
        "tl/_site.py": "from workbench.tl._stats import bh\n\ndef guard():\n    from ._survival import screen\n",
        "tl/_stats.py": "def bh():\n    pass\n",
        "models/_m.py": "import workbench.pp._p\n",
        "pp/__init__.py": "from workbench.pp._q import q\n",
        "pp/_q.py": "def q():\n    from workbench.models import _m\n",
    })  # fmt: skip
    modules, imports = scan(package)
    edges = graph(modules, imports)
    found = cycles(edges)
    assert found == [
        ["workbench.models._m", "workbench.pp", "workbench.pp._q", "workbench.models._m"],
        ["workbench.tl._site", "workbench.tl._survival", "workbench.tl._site"],
    ]
    text = describe_cycle(found[1], edges)
    assert "workbench/tl/_site.py:4: `from ._survival import screen` (inside a function)" in text
    # Moving the shared helper into its own module (the fix) opens the circle.
    (package / "tl" / "_site.py").write_text("from workbench.tl._stats import bh\n")
    modules, imports = scan(package)
    assert cycles(graph(modules, imports)) == [found[0]]


def test_checker_notices_a_stale_known_violation(tmp_path):
    known = {("workbench.interactive.train_base", "workbench.cli")}
    package = _plant(tmp_path, {
        "interactive/train_base.py": "def main():\n    from workbench.cli import _whole\n",
        "cli.py": "def _whole():\n    pass\n",
    })  # fmt: skip
    assert stale(scan(package)[1], known) == []
    (package / "interactive" / "train_base.py").write_text("from workbench._types import whole\n")
    assert stale(scan(package)[1], known) == sorted(known)
