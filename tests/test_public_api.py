"""The public surface: what each package exports, and the old import paths that still work for a release."""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import json
import pickle
import pkgutil
import re
import subprocess
import sys
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest

import autogen_reliability
from autogen_reliability import (
    AllClientsFailedError,
    BudgetExceededError,
    CircuitOpenError,
    ErrorKind,
    ResponseValidationError,
    RetriesExhaustedError,
    _compat,
    _lazy,
    accounting,
)
from autogen_reliability._errors import ProviderResponseError, SchemaViolation
from autogen_reliability.storage import StoreSchemaError

from .conftest import run_python

PACKAGES = [
    "autogen_reliability",
    "autogen_reliability.accounting",
    "autogen_reliability.budget",
    "autogen_reliability.fastapi",
    "autogen_reliability.health",
    "autogen_reliability.metrics",
    "autogen_reliability.otel",
    "autogen_reliability.providers",
    "autogen_reliability.reports",
    "autogen_reliability.retry",
    "autogen_reliability.storage",
    "autogen_reliability.testing",
    "autogen_reliability.validation",
]


PUBLIC_MODULES = {
    # pytest loads plugins by module name (the pytest11 entry point): this one is named by the entry point.
    "autogen_reliability.testing.plugin",
}


def test_every_module_is_private_behind_its_package() -> None:
    for module in pkgutil.walk_packages(autogen_reliability.__path__, "autogen_reliability."):
        leaf = module.name.rsplit(".", 1)[-1]
        public = module.name in PUBLIC_MODULES
        assert module.ispkg or leaf.startswith("_") or public, f"{module.name} is a public module"


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_public_names_that_exist(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    assert names == sorted(names, key=str.casefold) or names == sorted(names)
    for name in names:
        assert not name.startswith("_") or name == "__version__", f"{package}.__all__ lists {name}"
        assert getattr(module, name) is not None


def test_the_top_level_holds_the_headline_api() -> None:
    headline = {
        "reliable",
        "usage_scope",
        "configure",
        "RetryPolicy",
        "CircuitBreakerPolicy",
        "ValidationPolicy",
        "SanitizePolicy",
        "ReliabilityError",
        "ConfigurationError",
        "RetriesExhaustedError",
        "ResponseValidationError",
        "JSONExtractionError",
        "SchemaViolation",
        "UsageStore",
        "__version__",
    }
    assert headline <= set(autogen_reliability.__all__)
    assert "UsageRecorder" not in autogen_reliability.__all__  # second tier: autogen_reliability.accounting


_OLD_PATHS_PROBE = """
import importlib, json, sys, warnings
from autogen_reliability import _compat
found = {}
for old, (new, instead) in _compat.MOVED_MODULES.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module("autogen_reliability." + old)
    found[old] = {
        "warnings": [str(w.message) for w in caught if w.category is DeprecationWarning],
        "same": module is importlib.import_module("autogen_reliability." + new),
    }
print(json.dumps(found))
"""


def test_every_old_module_path_warns_and_gives_the_module_that_replaced_it() -> None:
    # A fresh interpreter, where no old path was imported yet (each warns on its first import only).
    done = run_python(_OLD_PATHS_PROBE)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert sorted(found) == sorted(_compat.MOVED_MODULES)
    for old, (_new, instead) in _compat.MOVED_MODULES.items():
        assert found[old]["same"], old
        assert found[old]["warnings"] == [
            f"autogen_reliability.{old} is a private module now; import from {instead} instead "
            "(the old path goes away in the release after next)"
        ], old


def test_an_old_path_names_the_importer_in_its_warning() -> None:
    sys.modules.pop("autogen_reliability.retry.policy", None)
    with pytest.warns(DeprecationWarning, match="autogen_reliability.retry.policy") as caught:
        # __import__ is what an import statement runs; written out so type checkers do not resolve the old path.
        old = __import__("autogen_reliability.retry.policy", fromlist=["RetryPolicy"])
    assert caught[0].filename == __file__
    assert old.RetryPolicy is autogen_reliability.RetryPolicy


MOVED_NAMES = [(autogen_reliability, name) for name in sorted(autogen_reliability._MOVED)] + [
    (accounting, name) for name in sorted(accounting._MOVED)
]


@pytest.mark.parametrize(("package", "name"), MOVED_NAMES, ids=lambda value: getattr(value, "__name__", value))
def test_a_name_that_left_a_package_warns_and_names_its_home(package: ModuleType, name: str) -> None:
    home = importlib.import_module(package._MOVED[name])
    with pytest.warns(DeprecationWarning, match=f"import it from {home.__name__}"):
        value = getattr(package, name)
    assert value is getattr(home, name)
    assert name in home.__all__
    assert name not in package.__all__


def test_an_unknown_top_level_name_is_an_attribute_error() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            autogen_reliability.nope  # noqa: B018


def test_docs_api_lists_each_packages_public_names() -> None:
    """docs/api.md lists exactly what each public package exports, so the page cannot drift from the code."""
    page = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    listed: dict[str, list[str]] = {}
    package = None
    for line in page.splitlines():
        heading = re.fullmatch(r"## `([\w.]+)`", line)
        if heading:
            package = heading.group(1)
            listed[package] = []
        elif package is not None and (entry := re.match(r"- \[?`(\w+)`", line)):
            listed[package].append(entry.group(1))
    assert sorted(listed) == sorted(PACKAGES)
    for name, names in listed.items():
        assert names == list(importlib.import_module(name).__all__), f"docs/api.md's {name} section"


def test_docs_api_says_what_each_public_name_is() -> None:
    """Each entry has its line: a docstring's first line, or, for an alias or a value, one written on the page."""
    page = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    entries = [line for line in page.splitlines() if re.match(r"- \[?`\w+`", line)]
    assert entries
    assert [line for line in entries if not re.search(r"\): \S", line)] == []


def test_docs_api_is_what_scripts_api_md_writes() -> None:
    """The page's one-line descriptions come from the docstrings too: change one, run scripts/api_md.py."""
    script = Path(__file__).parent.parent / "scripts" / "api_md.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"docs/api.md is stale: run python scripts/api_md.py\n{done.stderr}"


# ---- the names load on first use (autogen_reliability/_lazy.py)

LAZY_PACKAGES = [
    "autogen_reliability",
    "autogen_reliability.testing",
    "autogen_reliability.testing.plugin",
    "autogen_reliability.validation",
]

# What `import autogen_reliability` must not load: a user pays for these when a public name is first used.
HEAVY = (
    "autogen_core",
    "autogen_agentchat",
    "autogen_ext",
    "openai",
    "sqlalchemy",
    "alembic",
    "genai_prices",
    "httpx",
    "httpx2",
)


def _type_checking_imports(package: str) -> dict[str, str]:
    """Name -> relative module, as the package's ``if TYPE_CHECKING:`` block imports it (what type checkers see)."""
    source = Path(importlib.import_module(package).__file__ or "").read_text()
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    found |= {
                        alias.asname or alias.name: "." * statement.level + statement.module
                        for alias in statement.names
                    }
                elif isinstance(statement, ast.ImportFrom):  # from . import _faults as faults: a module
                    found |= {
                        alias.asname or alias.name: "." * statement.level + alias.name for alias in statement.names
                    }
    return found


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_a_lazy_package_loads_each_public_name_from_where_type_checkers_see_it(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module._HOMES) == sorted(name for name in module.__all__ if name != "__version__")
    seen = _type_checking_imports(package)
    assert sorted(seen) == sorted(module._HOMES)
    for name, home in module._HOMES.items():
        where = importlib.util.resolve_name(home, module.__package__)
        assert importlib.util.resolve_name(seen[name], module.__package__) == where, name
        holder = importlib.import_module(where)
        assert getattr(module, name) is getattr(holder, name, holder)  # a name may be a module: faults


def test_a_lazy_name_that_is_a_module_is_that_module() -> None:
    namespace: dict[str, object] = {}
    value = _lazy.load("autogen_reliability", "compat", {"compat": "._compat"}, namespace)
    assert value is _compat
    assert namespace == {"compat": _compat}


_FRESH_IMPORT = """
import json, sys
import autogen_reliability
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
listed = sorted(set(autogen_reliability.__all__) - set(dir(autogen_reliability)))
kept_before = "reliable" in vars(autogen_reliability)
from autogen_reliability import RetryPolicy, __version__, reliable
with_reliable = sorted(name for name in {heavy!r} if name in sys.modules)
from autogen_reliability import UsageStore
from autogen_reliability.testing import FakeOpenAIServer
retry = autogen_reliability.retry  # a subpackage that `import autogen_reliability` used to load
print(json.dumps({{
    "heavy": heavy,
    "with_reliable": with_reliable,
    "heavy_after_use": sorted(name for name in {heavy!r} if name in sys.modules),
    "kept": [kept_before, vars(autogen_reliability)["reliable"] is reliable],
    "not_listed": listed,
    "loaded": [reliable.__module__, UsageStore.__module__, FakeOpenAIServer.__module__],
    "same": retry.RetryPolicy is RetryPolicy,
    "version": __version__ == autogen_reliability.__version__,
}}))
"""


def test_importing_the_package_loads_nothing_heavy_until_a_name_is_used() -> None:
    done = run_python(_FRESH_IMPORT.format(heavy=HEAVY))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found == {
        "heavy": [],
        # reliable's module loads AutoGen and the SDK it wraps (which sends through httpx2, not httpx); the
        # store's SQLAlchemy, and genai-prices' data, load when a wrapper or a store is first made; alembic
        # only to migrate a database.
        "with_reliable": sorted(set(HEAVY) - {"httpx", "sqlalchemy", "alembic", "genai_prices"}),
        "heavy_after_use": sorted(set(HEAVY) - {"httpx", "genai_prices", "alembic"}),
        "kept": [False, True],  # read once, then an attribute of the package like any other
        "not_listed": [],
        "loaded": [
            "autogen_reliability._wrap",
            "autogen_reliability.storage._store",
            "autogen_reliability.testing._server",
        ],
        "same": True,
        "version": True,
    }


def _errors() -> list[Exception]:
    """One of each exception the library raises that takes fields rather than a message."""
    refused = BudgetExceededError(
        scope="session",
        key="t-1",
        project="acme",
        period="day",
        period_start=datetime(2026, 3, 10, tzinfo=UTC),
        limit_usd=Decimal("2.5"),
        spent_usd=Decimal("2.500000001"),
        unpriced=2,
    )
    return [
        refused,
        RetriesExhaustedError(3, [ErrorKind.RATE_LIMIT] * 3, "attempts", "429 slow down"),
        CircuitOpenError("OpenAIChatCompletionClient(gpt-4o-mini)", 12.5, 5, 10),
        ResponseValidationError([SchemaViolation(path="$.a", message="required")], '{"b": 1}', 2),
        ProviderResponseError(502, {"error": {"code": 502, "message": "bad gateway"}}),
        StoreSchemaError("outdated", url="sqlite:///u.db", current="0001", head="0002"),
        AllClientsFailedError("every client failed", [refused, ValueError("x")]),
    ]


@pytest.mark.parametrize("error", _errors(), ids=lambda error: type(error).__name__)
def test_an_error_pickles_and_copies_whole(error: Exception) -> None:
    # A process pool's worker sends its exception back pickled: one that cannot be rebuilt breaks the pool.
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(again) is type(error)
        assert str(again) == str(error)
        assert repr(again.args) == repr(error.args)  # an exception group's errors: equal only by what they say
        assert vars(again) == vars(error)
