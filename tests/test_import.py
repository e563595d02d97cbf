from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ["torch", "openslide", "squidpy", "scanpy", "lifelines", "ipywidgets", "matplotlib.pyplot"]


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_workbench_is_light():
    assert _loaded_after("import workbench") == []


def test_io_pp_datasets_do_not_import_torch():
    loaded = _loaded_after("import workbench.io, workbench.pp, workbench.datasets")
    assert "torch" not in loaded
    assert "matplotlib.pyplot" not in loaded


def test_subpackages_load_lazily_by_attribute():
    import workbench

    assert workbench.io.Slide.__name__ == "Slide"
    try:
        workbench.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("unknown attribute did not raise")


# --- DESIGN §3: which way imports may flow, checked on the source ------------------------
PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
SUBPACKAGES = {"io", "pp", "models", "tl", "pl", "interactive", "datasets"}
BASE = {"_errors", "_constants"}


def _runtime_imports() -> dict[str, set[str]]:
    """Module -> absolute names it imports at run time (function bodies included; imports
    under ``if TYPE_CHECKING:`` skipped). ``from workbench import pl`` counts as
    ``workbench.pl``."""
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        names: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
                if node.module == "workbench":
                    names.update(f"workbench.{a.name}" for a in node.names)
        out[module] = names
    return out


def _room(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "workbench" or len(parts) == 1:
        return None
    return parts[1]


IMPORTS = _runtime_imports()


def _violations(rooms: set[str], forbidden: set[str]) -> list[str]:
    return sorted(
        f"{m} imports {t}"
        for m, targets in IMPORTS.items()
        if _room(m) in rooms
        for t in targets
        if (_room(t) in forbidden) or (t.split(".")[0] in forbidden)
    )


def test_the_walk_sees_the_package():
    assert (
        "workbench.tl._train" in IMPORTS
        and "workbench.tl._engine" in IMPORTS["workbench.tl._train"]
    )
    assert len(IMPORTS) > 40


@pytest.mark.parametrize(
    ("rooms", "allowed"),
    [
        ({"io"}, BASE | {"io"}),
        ({"pp"}, BASE | {"io", "pp"}),
        ({"models"}, BASE | {"io", "models"}),
        ({"datasets"}, BASE | {"io", "pp", "datasets"}),
    ],
)
def test_lower_rooms_import_nothing_above_them(rooms, allowed):
    others = (SUBPACKAGES | {"tl", "pl", "report", "cli", "_demo", "_steps"}) - allowed
    assert _violations(rooms, others) == []


def test_models_never_see_anndata_or_openslide():
    assert _violations({"models"}, {"anndata", "openslide", "scanpy", "squidpy"}) == []


def test_tl_never_imports_plots_or_the_interactive_room():
    assert _violations({"tl"}, {"pl", "interactive"}) == []
    assert _violations({"pl"}, {"tl", "models", "interactive", "datasets"}) == []


def test_nothing_in_the_library_imports_interactive():
    library = SUBPACKAGES - {"interactive"} | {"report", "_steps"}
    assert _violations(library, {"interactive"}) == []


def test_only_the_widget_module_imports_ipywidgets():
    users = sorted(
        m
        for m, targets in IMPORTS.items()
        if any(t.split(".")[0] in ("ipywidgets", "ipyevents") for t in targets)
    )
    assert users == ["workbench.interactive._widget"]


def test_applications_use_the_headless_session_not_the_widget():
    apps = {"workbench.cli", "workbench._demo", "workbench._steps", "workbench.report"}
    offenders = []
    for module in apps:
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "workbench.interactive"
            ):
                widget = node.module.endswith("_widget") or any(
                    a.name == "RegionRefiner" for a in node.names
                )
                if widget:
                    offenders.append(f"{module}: from {node.module} import ...")
    assert offenders == []


def test_every_third_party_import_is_a_declared_dependency():
    """What the package imports at run time is in pyproject's dependencies (nothing a user's
    install would lack)."""
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    declared = set()
    for dep in project["dependencies"]:  # "dask[distributed]" declares distributed too
        declared.add(re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].lower().replace("_", "-"))
        extras = re.search(r"\[([^\]]+)\]", dep)
        declared |= {e.strip() for e in extras.group(1).split(",")} if extras else set()
    dists = packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = {}
    for module, targets in IMPORTS.items():
        for t in targets:
            top = t.split(".")[0]
            if top in stdlib or top in ("workbench", "__future__"):
                continue
            names = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
            if not names & declared:
                missing.setdefault(top, module)
    assert missing == {}, f"undeclared imports (module: first user): {missing}"
