"""The package layout (doc/architecture.md): no import circles, layers import downwards only, and
nothing outside ``ewoksxpcs.tools`` imports the tools except the command line, lazily.

Imports are read from the source (:mod:`ast`), lazy ones inside functions included, so a circle
that only closes at run time is found too.
"""

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGE = "ewoksxpcs"

#: Layers from the bottom up: a module may import its own layer and the layers below it.
LAYERS = {
    "engine": 0,
    "io": 1,
    "opencl": 2,
    "correlators": 3,
    "workflow": 4,
    "tasks": 5,
    "app": 6,
    "orange": 6,
    "tools": 7,
}

#: The only module that may import ``ewoksxpcs.tools`` from outside it (inside functions).
TOOLS_DISPATCHER = "ewoksxpcs.app.cli"


def _package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    return Path(next(iter(spec.submodule_search_locations)))


def _modules(root: Path) -> dict:
    """Module name -> source file, for every .py file of the package (kernels/ has none)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (PACKAGE,) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


class _Imports(ast.NodeVisitor):
    """(target module, lazy, imported names) of every import of one module of the package."""

    def __init__(self, name: str, path: Path, modules: dict):
        self.package = name if _is_package(path) else name.rpartition(".")[0]
        self.modules = modules
        self.depth = 0
        self.found = []

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, target: str, names=()):
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            self.found.append((target, self.depth > 0, tuple(names)))

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node):
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        names = [a.name for a in node.names]
        submodules = [n for n in names if f"{target}.{n}" in self.modules]
        for n in submodules:  # ``from . import module``
            self._add(f"{target}.{n}")
        rest = [n for n in names if n not in submodules]
        if rest:
            self._add(target, rest)


def _import_graph():
    modules = _modules(_package_dir())
    graph = {}
    for name, path in modules.items():
        visitor = _Imports(name, path, modules)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        graph[name] = [(t, lazy, names) for t, lazy, names in visitor.found if t in modules]
    return graph


def _cycles(graph: dict) -> list:
    """Strongly connected components of more than one module, or a module importing itself."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _, _ in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or any(t == v for t, _, _ in graph[v]):
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _layer(module: str):
    """The layer of a module; None for the package root and ``__main__`` (the facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.fixture(scope="module")
def graph():
    return _import_graph()


def test_graph_sees_the_package(graph):
    # A broken walk (no modules, no edges) would make the checks below pass vacuously.
    assert {"ewoksxpcs.engine.frames", "ewoksxpcs.correlators.modes", "ewoksxpcs.app.cli"} <= set(graph)
    assert any(t == "ewoksxpcs.engine.frames" for t, _, _ in graph["ewoksxpcs.io.load"])
    assert any(t.startswith("ewoksxpcs.tools.") and lazy for t, lazy, _ in graph[TOOLS_DISPATCHER])


def test_no_import_circles(graph):
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_circle():
    circle = {"a": [("b", True, ())], "b": [("c", False, ())], "c": [("a", False, ())], "d": []}
    assert _cycles(circle) == [["a", "b", "c"]]


def test_every_module_is_in_a_layer(graph):
    outside = sorted(m for m in graph if _layer(m) is None)
    assert outside == ["ewoksxpcs", "ewoksxpcs.__main__"]


def test_layers_import_downwards(graph):
    wrong = []
    for source, imports in graph.items():
        src = _layer(source)
        for target, lazy, names in imports:
            dst = _layer(target)
            if target == PACKAGE:
                # The package root holds the version and the public re-exports (which import the
                # layers): below the tools, only the version may be taken from it.
                if src not in (None, "tools") and set(names) != {"__version__"}:
                    wrong.append(f"{source} -> {target} {names}")
                continue
            if src is None or src == dst or dst is None:
                continue
            if dst == "tools" and source == TOOLS_DISPATCHER and lazy:
                continue  # checked by test_tools_imported_only_lazily_by_the_cli
            if dst not in LAYERS or src not in LAYERS or LAYERS[dst] >= LAYERS[src]:
                wrong.append(f"{source} -> {target}")
    assert wrong == []


def test_tools_imported_only_lazily_by_the_cli(graph):
    wrong = [
        f"{source} -> {target}" + ("" if lazy else " (at import time)")
        for source, imports in graph.items() if _layer(source) != "tools"
        for target, lazy, _ in imports
        if _layer(target) == "tools" and not (source == TOOLS_DISPATCHER and lazy)
    ]
    assert wrong == []
