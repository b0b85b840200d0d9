"""The package layering, read from the source: every import between autoprune's four packages,
at module level, inside functions and inside ``if TYPE_CHECKING:`` blocks alike.

One-way dependencies ``service -> workers -> agents -> search_spaces``, no import cycles between
modules, and the lower layers free of the service's heavy parts (Ray, the database, the web).
A type-only import never runs, but it is still knowledge of the other module: two modules that
name each other's types are one unit split in two files, so it counts for cycles and layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search_spaces", "agents", "workers", "service")  # lowest layer first
FORBIDDEN = {
    "search_spaces": ("ray", "sqlalchemy", "fastapi", "service", "workers", "agents"),
    "agents": ("ray", "sqlalchemy", "fastapi", "service", "workers"),
    "workers": ("sqlalchemy", "fastapi", "service"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, package: str) -> Iterator[str]:
    """Absolute names of everything ``tree`` imports, type-only imports included (``from a
    import b`` yields ``a.b``; the caller keeps it if that is a module, else falls back to ``a``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from (f"{base}.{alias.name}" for alias in node.names)
        yield from _imports(node, package)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for imported in _imports(ast.parse(path.read_text(), str(path)), package):
            while imported and imported not in files and imported.split(".")[0] in PACKAGES:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                deps.add(imported)
        graph[name] = deps
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_the_packages() -> None:
    """Guards the other tests against passing on an empty graph."""
    assert {"search_spaces.build", "agents.base", "workers.pool", "service.runner"} <= GRAPH.keys()
    assert "search_spaces.graph" in GRAPH["search_spaces.prune"]
    assert "workers.loop" in GRAPH["service.runner"] or any(d.startswith("workers") for d in GRAPH["service.runner"])


def test_no_import_cycles_between_modules() -> None:
    edges = [f"{m} -> {d}" for cycle in _cycles(GRAPH) for m in cycle for d in sorted(GRAPH[m]) if d in cycle]
    assert edges == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_upper_ones_or_heavy_services(package: str) -> None:
    bad = sorted(
        f"{module} imports {dep}"
        for module, deps in GRAPH.items()
        if module.split(".")[0] == package
        for dep in deps
        if dep.split(".")[0] in FORBIDDEN[package]
    )
    assert bad == []


def test_type_only_imports_count() -> None:
    """A cycle closed only by an ``if TYPE_CHECKING:`` import is still a cycle."""
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n"
    assert list(_imports(ast.parse(source), "pkg")) == ["typing.TYPE_CHECKING", "pkg.b.B"]
    nested = "import typing\nif typing.TYPE_CHECKING:\n    from . import c\nelse:\n    import d\n"
    assert list(_imports(ast.parse(nested), "pkg")) == ["typing", "pkg.c", "d"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
