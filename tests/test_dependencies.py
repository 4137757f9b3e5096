"""Every module the agent and the extension import at run time is declared in pyproject.

A module that is only present because something else pulls it in works on the developer's
machine and breaks on a fresh one (skops did: central could not convert a single model).
The walk covers every import, also the lazy ones inside functions.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "agent", ROOT / "extension"]
FIRST_PARTY = {"handoff_agent", "jupyter_handoff"}

ONNX_FILES = ("onnx_convert.py", "serving/onnx_backend.py")
# Modules allowed to come from an extra, and only in these files, where they are imported
# lazily: the optional destination, and the plugin authors' test kit.
OPTIONAL = {
    "mlflow": ("mlflow", {"agent/handoff_agent/forwarding/mlflow_worker.py"}),
    "pytest": ("test", {"agent/handoff_agent/testing.py"}),
    # ONNX conversion and serving (the `serve` extra); without it, versions serve with skops.
    **{
        m: ("serve", {f"agent/handoff_agent/{f}" for f in ONNX_FILES})
        for m in ("skl2onnx", "onnxruntime", "onnxmltools", "onnx")
    },
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(reqs: list[str]) -> set[str]:
    return {normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group(0)) for r in reqs}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def imported_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name.split(".")[0] for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split(".")[0]]
    return []


def imports(eager_only: bool = False) -> dict[str, set[str]]:
    """Top-level module name -> the files (relative to the root) that import it.

    eager_only: only imports that run when the module is imported (not inside a function).
    """
    found: dict[str, set[str]] = {}
    for src in SOURCES:
        for path in src.rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            todo = [ast.parse(path.read_text(), filename=rel)]
            while todo:
                node = todo.pop()
                for name in imported_names(node):
                    found.setdefault(name, set()).add(rel)
                lazy = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                if not (eager_only and lazy):
                    todo.extend(ast.iter_child_nodes(node))
    return found


def third_party(found: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        m: files
        for m, files in found.items()
        if m not in sys.stdlib_module_names and m not in FIRST_PARTY
    }


def test_the_walk_sees_lazy_imports():
    found = imports()
    # drift imports scipy inside a function; the walk must see it, or it proves nothing.
    assert "agent/handoff_agent/checks/drift.py" in found["scipy"]
    assert "agent/handoff_agent/forwarding/mlflow_worker.py" in found["mlflow"]
    assert {"tornado", "skops", "sqlalchemy"} <= set(third_party(found))
    assert "scipy" not in imports(eager_only=True)


def test_every_runtime_import_is_declared():
    declared = requirement_names(project()["dependencies"])
    dists = packages_distributions()
    problems = []
    for module, files in sorted(third_party(imports()).items()):
        if module in OPTIONAL:
            continue
        provided_by = {normalise(d) for d in dists.get(module, [])}
        if not provided_by:
            problems.append(f"{module} (in {sorted(files)[0]}) is not installed here at all")
        elif not provided_by & declared:
            problems.append(
                f"{module} (in {sorted(files)[0]}) comes from {sorted(provided_by)}, "
                "which pyproject's dependencies do not declare"
            )
    assert not problems, "\n".join(problems)


def test_optional_modules_stay_in_their_extra_and_their_files():
    extras = project()["optional-dependencies"]
    found, eager = imports(), imports(eager_only=True)
    for module, (extra, allowed) in OPTIONAL.items():
        assert normalise(module) in requirement_names(extras[extra]), (module, extra)
        assert found.get(module, set()) <= allowed, (module, found[module] - allowed)
        # Imported inside a function: the agent starts and runs without the extra.
        assert module not in eager, (module, eager[module])


def test_every_dependency_has_a_floor():
    # .ci/min_constraints.py installs these floors and CI runs the tests on them.
    for req in project()["dependencies"]:
        assert re.search(r">=\s*[0-9]", req), req
