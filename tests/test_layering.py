"""The package's import graph: no circles, and every import points down the layering.

Read from the source (every import statement, deferred and ``TYPE_CHECKING`` ones
included), not from what happens to be loaded::

    core        _errors _secret_text _ids _threads _compat: the vocabulary, and what a secret looks like
    providers   what particular clients and SDKs need (tests/test_structure.py keeps it so)
    support     _redaction _context testing/
    pipeline    _pipeline: Call, Request, Layer, the attempt
    stages      retry/ < validation/ < accounting/ < reports/ < storage/ < budget/  (each may use the ones before it)
    assembly    _config (the process defaults) < _client (the layer list) < _wrap, health/, metrics/, otel/
    public      the package's __init__
    programs    _cli, _demo, __main__, fastapi/, the pytest plugin's modules in testing/: they use the public API
                as a user's program (or test) would
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import autogen_reliability

ROOT = Path(autogen_reliability.__file__).parent
PACKAGE = "autogen_reliability"

# Lower ranks are further down; an import may point to its own rank or below.
RANKS: dict[str, int] = {
    "_errors": 0,
    "_ids": 0,
    "_threads": 0,
    "_subscribers": 0,
    "_compat": 0,
    "_lazy": 0,
    "_secret_text": 0,  # what is shaped like a key, and the wrapped clients' keys: ConfigurationError redacts with it
    "providers": 1,
    "_redaction": 2,
    "_context": 2,
    "testing": 2,
    "_pipeline": 3,
    "retry": 4,
    "validation": 5,
    "accounting": 6,
    "reports": 7,  # the report's data and renderers: plain data, no SQL
    "storage": 8,
    "budget": 9,  # budgets read spend from the ledger
    "_config": 10,
    "_client": 11,
    "_wrap": 12,
    "health": 12,  # the probe watches wrapped clients (_client) and reads the stages' state
    "metrics": 12,  # observers of every wrapped client: Prometheus (extra [metrics]); nothing imports them
    "otel": 12,  # and OpenTelemetry spans (extra [otel])
    "": 13,  # the package's __init__: the public API
    "_cli": 14,  # the command and its demo use the public API, as a user's program would
    "_demo": 14,
    "fastapi": 14,  # the FastAPI integration (extra [fastapi]) uses the public API, as an application would
    "__main__": 14,
    # The pytest plugin lives in testing/ (pytest finds it there by the entry point), but its fixtures use the
    # public API as a user's tests would: wrapped clients, the store, the recorder. Ranked as programs.
    "testing.plugin": 14,
    "testing._pytest_fixtures": 14,
    "testing._pytest_network": 14,
    "testing._pytest_cassettes": 14,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def imports_in(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """The package's modules that ``source`` imports, wherever the statement is (deferred, ``TYPE_CHECKING``).

    ``module`` is the full dotted name of where the source lives, to resolve relative imports.
    """
    base = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join([*base[: len(base) - node.level + 1], *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name in MODULES and name != module}


GRAPH = {
    name: imports_in(path.read_text(), name, is_package=path.name == "__init__.py") for name, path in MODULES.items()
}


def _rank(module: str) -> int:
    inside = module.removeprefix(PACKAGE).lstrip(".")
    parts = inside.split(".")
    for length in range(len(parts), 1, -1):  # a module ranked on its own ("testing.plugin") before its package
        if ".".join(parts[:length]) in RANKS:
            return RANKS[".".join(parts[:length])]
    assert parts[0] in RANKS, f"{module} has no place in the layering: give it a rank in this test"
    return RANKS[parts[0]]


def _cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_every_module() -> None:
    assert f"{PACKAGE}._pipeline" in GRAPH[f"{PACKAGE}._client"]
    assert f"{PACKAGE}.storage._engine" in GRAPH[f"{PACKAGE}.storage._migrate"]


def test_there_are_no_import_circles() -> None:
    assert _cycles() == []


def test_the_circle_finder_finds_a_circle() -> None:
    GRAPH[f"{PACKAGE}._errors"].add(f"{PACKAGE}._client")
    try:
        assert any(f"{PACKAGE}._errors" in cycle for cycle in _cycles())
    finally:
        GRAPH[f"{PACKAGE}._errors"].discard(f"{PACKAGE}._client")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_points_down(module: str) -> None:
    upward = sorted(target for target in GRAPH[module] if _rank(target) > _rank(module))
    assert upward == [], f"{module} (rank {_rank(module)}) imports from above: {upward}"


def test_a_package_is_imported_by_its_modules_only_through_siblings() -> None:
    # A module importing its own package's __init__ would depend on everything the package exports.
    for module, targets in GRAPH.items():
        parent = module.rsplit(".", 1)[0]
        if parent != module and parent != PACKAGE:
            assert parent not in targets, f"{module} imports its own package {parent}"


def _documented_layers() -> list[tuple[str, str]]:
    """The table of layers in docs/architecture.md: (class name, file) per row, outermost first."""
    page = (ROOT.parent / "docs" / "architecture.md").read_text()
    table = page.split("The layers of a wrapped client today, outermost first", 1)[1].split("```")[1]
    rows = []
    for line in table.strip().splitlines():
        name, rest = line.split(None, 1)
        if name != "attempt":
            rows.append((name, rest.split(":", 1)[0].split()[0]))
    return rows


def test_the_layer_list_in_the_client_is_the_table_in_the_architecture_page() -> None:
    from autogen_ext.models.replay import ReplayChatCompletionClient  # noqa: PLC0415

    from autogen_reliability import BudgetPolicy, ReliableChatCompletionClient, ValidationPolicy  # noqa: PLC0415
    from autogen_reliability.retry._layer import FallbackLayer  # noqa: PLC0415

    wrapped = ReliableChatCompletionClient(
        ReplayChatCompletionClient(["a"]),
        fallbacks=[ReplayChatCompletionClient(["b"])],
        validation=ValidationPolicy(schema={"type": "object"}),
        budget=BudgetPolicy(limit_usd=1),
    )
    built = [
        (type(layer).__name__, str(Path(inspect.getfile(type(layer))).relative_to(ROOT)))
        for layer in wrapped._pipeline.layers
    ]
    assert built == _documented_layers()
    fallback = next(layer for layer in wrapped._pipeline.layers if isinstance(layer, FallbackLayer))
    # A fallback's own pipeline: the provider client's layers only, in the table's order.
    assert [type(layer).__name__ for layer in fallback.fallbacks[0].layers] == ["RetryLayer", "CircuitLayer"]
