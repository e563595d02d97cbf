"""environment.yml cannot be solved here (no conda), so check it agrees with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _extras(req: str) -> list[str]:
    m = re.search(r"\[([^\]]+)\]", req)
    return [e.strip() for e in m.group(1).split(",")] if m else []


def _env_names() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {_name(d) for d in dep["pip"] if not d.startswith("-")}
        else:
            names.add(_name(dep.split("=")[0] if "=" in dep and "<" not in dep else dep))
    return names


def test_environment_lists_every_pyproject_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    names = _env_names()
    missing = []
    for req in reqs:
        if _name(req) not in names:
            missing.append(req)
        # an extra such as dask[distributed] must be spelt out for conda
        missing += [f"{req} (extra {e})" for e in _extras(req) if e not in names]
    assert not missing, f"environment.yml lacks: {missing}"


def test_environment_pins_cpu_torch_like_the_makefile():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "torch==2.13.0" in pip
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    assert "pip install -q torch==2.13.0" in (ROOT / "Makefile").read_text()
    assert "python=3.11" in env["dependencies"]
