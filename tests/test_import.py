from __future__ import annotations

import subprocess
import sys

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
