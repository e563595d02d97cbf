"""Every exported name has a numpydoc docstring with the sections the API reference needs.

Walks ``__all__`` of the top level and of each sub-package and parses each docstring with
numpydoc's own parser. Required: a summary line; ``Parameters`` for a function that takes
arguments (for a class: for its ``__init__`` arguments, in the class docstring or in
``__init__``'s); ``Returns`` (or ``Yields``) for a function that returns something. Every
documented parameter must exist in the signature and, where a Parameters section is
required, every argument must be documented.

``PENDING`` lists the names, in files being rewritten elsewhere, that still lack a section;
the test fails when one of them becomes complete (or stops being exported), so the list
can only shrink.
"""

from __future__ import annotations

import importlib
import inspect
import warnings

import pytest

import workbench

docscrape = pytest.importorskip("numpydoc.docscrape", reason="numpydoc is in the test extra")

PACKAGES = ["workbench"] + [f"workbench.{name}" for name in workbench._SUBPACKAGES]
# Documented on the API reference's command-line page though in no ``__all__``.
ALSO_DOCUMENTED = ["workbench.report.write_report", "workbench.cli.main"]

# Exported names whose docstrings live in files owned by the redesign of issue #22 and still
# lack a required section. Remove a name once its docstring is complete (the test says which).
PENDING: set[str] = set()


def _exported() -> list[tuple[str, object]]:
    seen: dict[int, str] = {}
    out = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if name.startswith("__") or not callable(obj) or id(obj) in seen:
                continue  # constants have no docstring of their own; re-exports checked once
            seen[id(obj)] = f"{package}.{name}"
            out.append((f"{package}.{name}", obj))
    for dotted in ALSO_DOCUMENTED:
        module, name = dotted.rsplit(".", 1)
        out.append((dotted, getattr(importlib.import_module(module), name)))
    return out


def _arguments(func) -> list[str]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    # the signature of a class is its __init__'s without ``self``
    return [
        name
        for name, p in sig.parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _documented(section) -> set[str]:
    names = set()
    for param in section:
        for name in param.name.split(","):
            names.add(name.strip().lstrip("*"))
    return names


def _returns_something(func) -> bool:
    try:
        annotation = inspect.signature(func).return_annotation
    except (TypeError, ValueError):
        return False
    return annotation not in (inspect.Signature.empty, None, "None", "NoReturn")


def _parse(doc: str) -> docscrape.NumpyDocString:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown section or a malformed one is a problem
        return docscrape.NumpyDocString(doc)


def problems(obj) -> list[str]:
    """What the docstring of ``obj`` lacks (empty when complete)."""
    doc = inspect.getdoc(obj)
    if not doc or not doc.strip():
        return ["no docstring"]
    try:
        parsed = _parse(doc)
    except Exception as exc:  # numpydoc raises ValueError or warns on a bad section
        return [f"numpydoc cannot parse it: {exc}"]
    out = []
    if not parsed["Summary"] or not "".join(parsed["Summary"]).strip():
        out.append("no summary line")
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return out  # exceptions take a message; their docstring says when they are raised
        init_doc = inspect.getdoc(obj.__init__) if "__init__" in vars(obj) else None
        params = list(parsed["Parameters"])
        if init_doc and init_doc != doc:
            try:
                params += list(_parse(init_doc)["Parameters"])
            except Exception as exc:
                out.append(f"numpydoc cannot parse __init__'s docstring: {exc}")
        arguments = _arguments(obj)
    else:
        params = list(parsed["Parameters"]) + list(parsed["Other Parameters"])
        arguments = _arguments(obj)
        if _returns_something(obj) and not (parsed["Returns"] or parsed["Yields"]):
            out.append("no Returns section")
    documented = _documented(params)
    if arguments and not params:
        out.append("no Parameters section")
    elif arguments:
        undocumented = [a for a in arguments if a not in documented]
        if undocumented:
            out.append(f"parameters not documented: {undocumented}")
    unknown = sorted(documented - set(arguments) - {""})
    if unknown and not _has_var_keywords(obj):
        # a Parameters entry for an argument that does not exist is always wrong
        out.append(f"documented but not in the signature: {unknown}")
    return out


def _has_var_keywords(obj) -> bool:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in sig.parameters.values())


def test_every_exported_name_has_the_numpydoc_sections():
    incomplete = {name: problems(obj) for name, obj in _exported()}
    incomplete = {name: found for name, found in incomplete.items() if found}
    new = {name: found for name, found in incomplete.items() if name not in PENDING}
    assert not new, "docstrings lacking sections:\n" + "\n".join(
        f"  {name}: {'; '.join(found)}" for name, found in sorted(new.items())
    )


def test_pending_list_only_holds_names_still_incomplete():
    exported = dict(_exported())
    gone = sorted(PENDING - set(exported))
    done = sorted(name for name in PENDING & set(exported) if not problems(exported[name]))
    assert not gone, f"no longer exported, remove from PENDING: {gone}"
    assert not done, f"docstring now complete, remove from PENDING: {done}"


def _example_function(slide, *, level: int = 0) -> dict:
    """Read something.

    Parameters
    ----------
    slide
        The slide.

    Returns
    -------
    The result.
    """


def test_checker_reports_an_undocumented_argument_and_a_missing_returns():
    assert problems(_example_function) == ["parameters not documented: ['level']"]

    def no_returns(x: int) -> int:
        """Double.

        Parameters
        ----------
        x
            A number.
        """
        return 2 * x

    assert problems(no_returns) == ["no Returns section"]

    def stale(x: int) -> None:
        """Do.

        Parameters
        ----------
        x
            A number.
        y
            Gone.
        """

    assert problems(stale) == ["documented but not in the signature: ['y']"]


def test_checker_reads_class_parameters_from_the_class_or_init():
    class Documented:
        """A thing.

        Parameters
        ----------
        size
            How big.
        """

        def __init__(self, size: int) -> None:
            self.size = size

    class Bare:
        """A thing."""

        def __init__(self, size: int) -> None:
            self.size = size

    assert problems(Documented) == []
    assert problems(Bare) == ["no Parameters section"]
