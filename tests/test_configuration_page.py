"""docs/configuration.md lists every option of configure() and reliable(), and every variable of ours read."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from autogen_reliability import ReliableOptions, configure

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
_VARIABLE = re.compile(r"\bAUTOGEN_RELIABILITY_[A-Z0-9_]*[A-Z0-9]\b")
# Where a variable of ours can be read: the package (its CLI and pytest plugin too), the alembic environment,
# and this repository's tests, benchmarks, scripts and CI.
_SOURCES = ("autogen_reliability", "migrations", "tests", "benchmarks", "scripts", ".ci")


def _named_in_sources() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for top in _SOURCES:
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or path.suffix not in ("", ".py", ".ini", ".toml") or path == Path(__file__):
                continue
            for name in _VARIABLE.findall(path.read_text(encoding="utf-8", errors="replace")):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _table_options(heading: str) -> list[str]:
    """The first column of the first table after ``heading``: the options it lists."""
    section = PAGE[PAGE.index(heading) :]
    rows = re.search(r"^\| option \|.*?\n\|[-| ]+\|\n((?:\|.*\n)+)", section, re.MULTILINE)
    assert rows is not None, f"no option table after {heading!r}"
    return [re.match(r"\| `(\w+)` \|", row).group(1) for row in rows.group(1).splitlines()]  # type: ignore[union-attr]


def test_every_variable_of_ours_that_is_read_is_on_the_page() -> None:
    missing = {name: sorted(paths) for name, paths in _named_in_sources().items() if name not in PAGE}
    assert not missing, f"read but not on docs/configuration.md: {missing}"


def test_every_variable_on_the_page_is_read_somewhere() -> None:
    read = _named_in_sources()
    assert not [name for name in set(_VARIABLE.findall(PAGE)) if name not in read]


def test_the_option_tables_list_every_option_and_no_other() -> None:
    assert _table_options("## `configure()`") == [
        name for name in inspect.signature(configure).parameters if name != "unknown"
    ]
    assert _table_options("## `reliable()`") == list(ReliableOptions.__annotations__)
