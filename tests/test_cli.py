"""The autogen-reliability command: the demo, and one-line errors for bad arguments."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import autogen_reliability
from autogen_reliability import __version__
from autogen_reliability._cli import main

from .conftest import run_cli


@pytest.mark.parametrize("stream", [False, True])
def test_demo_runs_a_team_and_reports_usage_per_agent(stream: bool, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--stream"] if stream else ["demo"]) == 0
    out = capsys.readouterr().out
    assert "[writer] Hi Dana" in out
    assert "~ writer: attempt 1 failed (rate_limit), retrying in 0.60 s" in out
    assert "~ critic: attempt 1 failed (overloaded), retrying in" in out
    assert "[triage] Triage(ticket=4711, priority='high', summary='Refund not received <img src=\"x\">')" in out
    assert out.rstrip().endswith("(7 rows recorded, 7 requests served)")
    row = r"^\s+(writer|critic|triage)" + r"\s+(\d+)" * 5 + r"\s+(\d+\.\d{9})$"
    rows = {match[0]: match[1:] for match in re.findall(row, out, flags=re.MULTILINE)}
    assert set(rows) == {"writer", "critic", "triage"}
    for agent, (calls, attempts, failed, prompt, completion, cost) in rows.items():
        assert (int(calls), int(attempts), int(failed)) == ((1, 1, 0) if agent == "triage" else (2, 3, 1))
        # gpt-4o-mini list prices: $0.15 per million prompt tokens, $0.60 per million completion tokens
        expected = (Decimal(prompt) * Decimal("0.15") + Decimal(completion) * Decimal("0.60")) / 10**6
        assert Decimal(cost) == expected.quantize(Decimal("0.000000001"))


def test_demo_from_the_installed_command() -> None:
    command = Path(sys.executable).parent / "autogen-reliability"  # installed next to this interpreter
    done = subprocess.run([command, "demo"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Usage ledger by agent" in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: COMMAND"),
        (("bogus",), "invalid choice: 'bogus'"),
        (("demo", "--rounds", "3"), "unrecognized arguments: --rounds 3"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("autogen-reliability: error: ")
    assert message in lines[0]


def test_help_exits_0() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    assert "demo" in done.stdout


def test_version_prints_the_installed_version() -> None:
    done = run_cli("--version")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"autogen-reliability {__version__}\n"
    assert __version__ == importlib.metadata.version("autogen-reliability")
    assert "__version__" in autogen_reliability.__all__
