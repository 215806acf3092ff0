"""The shape of the code: no import circle in search/, api/ or workers/; one layer per setting.

The import graph is read from the source with ``ast`` (nothing is imported), and
counts every import statement, also those inside functions and under
``TYPE_CHECKING``: a late import hides a circle, it does not remove it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.settings import LAYERS, ApiSettings
from search.config import PREFIX, Settings
from workers.settings import WorkerSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("search", "api", "workers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, modules: set[str]) -> Iterator[str]:
    """The modules of ``modules`` that ``tree`` imports (``from pkg import mod`` included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module in modules:
                yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:
                    yield f"{node.module}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    paths = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    modules = {module_name(p): p for p in paths}
    return {
        name: set(imported(ast.parse(path.read_text(encoding="utf-8")), set(modules))) - {name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_among_the_modules():
    graph = import_graph()
    assert {"api.cli", "api.app", "workers.app", "workers.tasks", "search.engine"} <= set(graph)
    assert cycles(graph) == []


def test_the_circle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_sieve_variable_belongs_to_exactly_one_layer():
    assert set(LAYERS) == {Settings, ApiSettings, WorkerSettings}
    owners: dict[str, list[str]] = {}
    for layer in LAYERS:
        for name in layer.variables():
            owners.setdefault(name, []).append(layer.__name__)
    assert {name: layers for name, layers in owners.items() if len(layers) > 1} == {}
    assert all(name.startswith(PREFIX) for name in owners)
    # What the API and the workers moved out of the engine's settings is theirs alone.
    assert {"SIEVE_API_KEYS", "SIEVE_PORT", "SIEVE_INDEX_BACKEND"} <= ApiSettings.variables()
    assert {"SIEVE_BROKER_URL", "SIEVE_INDEX_QUEUE"} <= WorkerSettings.variables()
    assert not Settings.variables() & {"SIEVE_API_KEYS", "SIEVE_BROKER_URL", "SIEVE_EXTRA"}
