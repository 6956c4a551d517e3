"""Packaging: what pyproject.toml puts in the sdist and the wheel is what the repository holds.

Building a wheel is too slow for the suite; these checks read pyproject.toml's lists
and compare them with the files on disk and with what git tracks.
"""

from __future__ import annotations

import shutil
import subprocess
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
