from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


# --- what the package imports at run time (the rooms' rules are in tests/test_layers.py) ---
PACKAGE = Path(__file__).resolve().parents[1] / "workbench"


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


IMPORTS = _runtime_imports()


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
