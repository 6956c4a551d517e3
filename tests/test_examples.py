"""Every script in examples/ runs to completion without warnings, into a ledger of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autogen_reliability._config import ENV_DB_URL, ENV_SPOOL_DIR
from autogen_reliability.storage import UsageStore

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


def run_example(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # No database URL from this environment: each example chooses its own ledger.
    env = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    env[ENV_SPOOL_DIR] = str(cwd / "spool")
    command: list[str | Path] = [sys.executable, script]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=cwd, env=env)


def ledger_of(script: Path, cwd: Path) -> Path:
    return cwd / f"{script.stem}.db"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    done = run_example(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr
    assert done.stdout.strip()
    assert UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}").count() >= 1  # the run was accounted for


def test_examples_run_in_turn_do_not_mix_their_numbers(tmp_path: Path) -> None:
    counts: dict[str, int] = {}
    for script in EXAMPLES:
        assert run_example(script, tmp_path).returncode == 0
        counts[script.name] = UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}").count()
    # Each ledger still holds only its own example's rows once the others have run beside it.
    for script in EXAMPLES:
        assert UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}").count() == counts[script.name]
    assert not (tmp_path / "autogen_reliability.db").exists()
