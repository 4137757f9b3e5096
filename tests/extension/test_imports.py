"""The notebook extension's modules form no import cycle, lazy imports included.

Layers: errors/config/refs/report at the bottom, then client, data, bundle_writer, comparison
and timeline, then api and magics, with the widgets (views) drawn from them. A module that
needs something from a higher one moves that thing down (refs.py) instead of importing up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jupyter_handoff

PACKAGE = Path(jupyter_handoff.__file__).parent


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its body (not under
    ``if TYPE_CHECKING:``, which never runs)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        tree = ast.parse(path.read_text())
        static = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in static:
                continue
            if isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                # a module's own packages are imported before it anyway
                if name in modules and name != module and not module.startswith(name + "."):
                    graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_extension_has_no_import_cycle():
    graph = import_graph(PACKAGE, "jupyter_handoff")
    assert "jupyter_handoff.refs" in graph["jupyter_handoff.api"]  # the graph sees imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_lazy_cycle(tmp_path):
    # Given two modules where one imports the other inside a function, and back
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from .a import x\n    return x\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n"
    )
    # Then the cycle is found, and a type-checking-only import is not one
    assert cycles(import_graph(pkg, "pkg")) == [["pkg.a", "pkg.b"]]


def test_no_public_name_is_shadowed_by_a_submodule():
    """``from jupyter_handoff import deployments`` must stay the function: once a submodule
    of the same name is imported, Python puts the module in its place."""
    submodules = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()
    }
    assert not submodules & set(jupyter_handoff.__all__)
