"""Packaging: what pyproject.toml puts in the sdist and the wheel is what the repository holds.

Building a wheel is too slow for the suite; these checks read pyproject.toml's lists
and compare them with the files on disk and with what git tracks.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent


def hatch_targets() -> Any:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["hatch"]["build"]["targets"]


def tracked_top_level() -> set[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist holds only what its include list named)")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True, timeout=60
    ).stdout
    return {path.split("/", 1)[0] for path in listed.split("\0") if path}


def test_the_sdist_includes_what_git_tracks_and_nothing_else_of_the_checkout() -> None:
    # Without an include list, hatchling puts in every file of the checkout but those the top .gitignore names:
    # a .hypothesis/ left by `make test` (ignored by its own .gitignore) or a .env went to the index too.
    include = hatch_targets()["sdist"]["include"]
    assert {entry.removeprefix("/") for entry in include} == tracked_top_level()
    assert all(entry.startswith("/") for entry in include)  # anchored: "docs" alone would match tests/docs too


def test_the_wheel_ships_the_migrations_and_the_package_data() -> None:
    wheel = hatch_targets()["wheel"]
    assert wheel["packages"] == ["autogen_reliability"]
    assert wheel["force-include"] == {"migrations": "autogen_reliability/migrations"}
    for name in ("env.py", "script.py.mako", "alembic.ini", "versions/0001_usage_ledger.py"):
        assert (ROOT / "migrations" / name).is_file(), name
    for name in ("py.typed", "reports/templates/report.html.j2"):
        assert (ROOT / "autogen_reliability" / name).is_file(), name


# Imported by the package, declared through the dependency whose API they are part of, not on their own.
_COME_WITH: dict[str, str] = {
    "markupsafe": "Jinja2",  # jinja2's Markup
    "pydantic-core": "pydantic",  # pydantic's validation errors
    "starlette": "fastapi",  # FastAPI's requests and responses are starlette's
    "openai": "autogen-ext",  # the [openai] extra of autogen-ext, which the clients we wrap come from
    "pytest": "",  # the pytest plugin runs inside the user's own pytest
}


def _distribution_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_package_the_library_imports_is_a_declared_dependency() -> None:
    # httpx2 was imported by the usage tap and the testing harness while arriving only through genai-prices
    # and openai: a release of either that dropped it would have broken `import` of ours.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    declared = {_distribution_name(r) for r in project["dependencies"]}
    declared |= {_distribution_name(r) for name, group in extras.items() if name not in ("dev", "docs") for r in group}
    distributions = importlib.metadata.packages_distributions()
    imported: dict[str, set[str]] = {}
    for path in sorted((ROOT / "autogen_reliability").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("autogen_reliability", "_typeshed"):
                    continue
                for distribution in distributions.get(top, [top]):
                    imported.setdefault(distribution.lower().replace("_", "-"), set()).add(path.name)
    undeclared = {
        name: sorted(files)
        for name, files in imported.items()
        if name not in declared and name not in _COME_WITH and not name.startswith("opentelemetry-")
    }
    assert undeclared == {}
    assert all(parent == "" or parent.lower() in declared for parent in _COME_WITH.values())
