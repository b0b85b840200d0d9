"""The model-kind boundary, read from the source: a kind's internals are its own.

Only a kind's folder imports its internals (``workers.kinds.image.*``, ``workers.kinds.text.*``;
the text kind's space library ``search_spaces.transformers.*`` is imported by the text kind and
itself only), and nothing outside them asks "is this a transformer / text?": generic code asks
:func:`workers.kinds.kind_of`, and the registry loads kinds from string targets.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("search_spaces", "agents", "workers", "service")
#: internals -> the modules allowed to import them (by prefix)
INTERNALS = {
    "workers.kinds.image": ("workers.kinds.image",),
    "workers.kinds.text": ("workers.kinds.text",),
    "search_spaces.transformers": ("search_spaces.transformers", "workers.kinds.text"),
}
KIND_TESTS = ("is_transformer", "is_transformer_space", "is_text_task", "is_text_spec", "is_text_model",
              "is_text_dataset")


def _modules() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every imported name, type-only imports included."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from (f"{base}.{a.name}" for a in node.names)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _violations() -> list[str]:
    bad = []
    for module, path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        for imported in _imports(tree, module, path.name == "__init__.py"):
            for internal, allowed in INTERNALS.items():
                if _within(imported, internal) and not any(_within(module, a) for a in allowed):
                    bad.append(f"{module} imports {imported}")
        owners = ("search_spaces.transformers", "workers.kinds.text")
        if any(_within(module, o) for o in owners):
            continue
        for node in ast.walk(tree):
            name = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "name", None)
            if isinstance(node, ast.Name | ast.Attribute | ast.FunctionDef) and name in KIND_TESTS:
                bad.append(f"{module} names {name} (line {node.lineno})")
    return sorted(set(bad))


def test_no_module_outside_a_kind_reaches_into_it() -> None:
    assert _violations() == []


def test_the_walk_sees_the_kinds() -> None:
    """Guards the test above against passing on an empty walk."""
    names = {m for m, _ in _modules()}
    assert {"workers.kinds.registry", "workers.kinds.image", "workers.kinds.text.scoring",
            "search_spaces.transformers.prune", "workers.evaluator"} <= names
    tree = ast.parse((ROOT / "workers/kinds/text/task.py").read_text())
    assert any(i.startswith("search_spaces.transformers") for i in _imports(tree, "workers.kinds.text.task", False))
