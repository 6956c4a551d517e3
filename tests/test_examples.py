"""Every script in examples/ runs to completion without warnings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autogen_reliability.storage import UsageStore

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    # The examples record usage to the default database: keep it out of the checkout.
    env = {**os.environ, "AUTOGEN_RELIABILITY_DB_URL": f"sqlite:///{tmp_path / 'usage.db'}"}
    env["AUTOGEN_RELIABILITY_SPOOL_DIR"] = str(tmp_path / "spool")
    command: list[str | Path] = [sys.executable, script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr
    assert done.stdout.strip()
    assert UsageStore(env["AUTOGEN_RELIABILITY_DB_URL"]).count() >= 1  # the run was accounted for
