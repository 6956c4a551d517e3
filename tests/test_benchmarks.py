"""Every benchmark still runs: each is smoke-run with ``--quick`` (tiny sizes), so none can rot.

Nothing is timed here (speed is what the benchmarks print, not what tests
assert): a benchmark passes if it exits 0, says something, and, where it
writes JSON, writes JSON. Those that check what they measured (the e2e and
memory benchmarks count the usage rows) exit non-zero when it is wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).parent.parent
BENCHMARKS = sorted(path.stem.removeprefix("bench_") for path in (ROOT / "benchmarks").glob("bench_*.py"))
# The benchmarks issue #14 names, each run as `python -m benchmarks NAME`.
NAMED = ("e2e", "overhead", "recorder", "report", "memory", "import")
# Those that take --json PATH.
WRITES_JSON = frozenset({"budget", "e2e", "import", "memory", "observers", "report", "startup"})


def run_benchmark(name: str, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    command: list[str | Path] = [sys.executable, "-m", "benchmarks", name, *arguments]
    # The tree under test first, as for the tests themselves.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_every_named_benchmark_exists() -> None:
    aliases = {"overhead": "wrapper_overhead"}
    for name in NAMED:
        assert aliases.get(name, name) in BENCHMARKS, f"python -m benchmarks {name} has no bench_*.py"


def test_an_unknown_benchmark_is_refused_with_the_known_names() -> None:
    done = run_benchmark("no-such-thing")
    assert done.returncode != 0
    assert "known:" in done.stderr
    assert "e2e" in done.stderr
    assert "overhead" in done.stderr


@pytest.mark.parametrize("name", BENCHMARKS)
def test_the_benchmark_runs(name: str, tmp_path: Path) -> None:
    output = tmp_path / f"{name}.json"
    arguments: list[str | Path] = ["--quick"]
    if name in WRITES_JSON:
        arguments += ["--json", output]
    done = run_benchmark(name, *arguments)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.stdout.strip()
    if name in WRITES_JSON:
        assert isinstance(json.loads(output.read_text()), dict)


def test_memory_distinct_runs_with_a_session_project_agent_and_tag_per_call(tmp_path: Path) -> None:
    # The long-lived service's case docs/performance.md reports; the smoke run above gives every call the same.
    output = tmp_path / "memory.json"
    done = run_benchmark("memory", "--quick", "--distinct", "--json", output)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    results = json.loads(output.read_text())
    assert results["distinct"] is True
    assert results["rows_exact"] is True


def test_e2e_diagnose_and_steps_run(tmp_path: Path) -> None:
    # The options docs/performance.md's breakdown of a call comes from; the smoke run above takes neither.
    output = tmp_path / "e2e.json"
    done = run_benchmark("e2e", "--quick", "--no-litellm", "--diagnose", "--steps", "--json", output)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    results = json.loads(output.read_text())
    assert {"wrapper, all off", "everything on, held", "usage, tap detached"} <= set(results["table"]["plain"])
    steps = results["steps_us"]
    assert len(steps) == 5
    assert all(value > 0 for value in steps.values())  # each step ran, and was timed, inside the calls
    assert "the same price, in a loop of its own" in done.stdout


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("e2e", ["--rounds", "0"]),  # was taken as "the default": a full run of 50 rounds
        ("e2e", ["--quick", "--calls", "-1"]),
        ("e2e", ["--quick", "--switch-interval", "0"]),  # sys.setswitchinterval's ValueError, once the server ran
        ("memory", ["--calls", "0"]),  # was taken as "the default": 100,000 calls
        ("memory", ["--quick", "--calls", "-5"]),
        ("import", ["--runs", "0"]),
        ("report", ["--repeat", "0"]),
        ("report", ["--rows", "-5"]),
        ("startup", ["--rounds", "-1"]),
        ("store", ["--write-rows", "0"]),
    ],
)
def test_a_size_below_one_or_a_zero_interval_is_refused_in_one_line(name: str, arguments: list[str]) -> None:
    done = run_benchmark(name, *arguments)
    assert done.returncode == 2, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    assert "must be " in done.stderr.strip().splitlines()[-1]  # at least 1; more than 0 seconds
    assert not done.stdout.strip()  # refused before anything ran


@pytest.mark.parametrize("name", sorted(set(BENCHMARKS) - WRITES_JSON))
def test_a_benchmark_that_writes_no_json_refuses_json_and_unknown_options(name: str, tmp_path: Path) -> None:
    # It ran and exited 0 with --json ignored (no file written), and a mistyped --quik ran the full size.
    output = tmp_path / "out.json"
    done = run_benchmark(name, "--quick", "--json", output)
    assert done.returncode == 2, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    refusal = done.stderr.strip().splitlines()[-1]
    assert f"python -m benchmarks {name.replace('wrapper_overhead', 'overhead')}: error:" in refusal
    assert "--json" in refusal or "out.json" in refusal  # fake_server takes the path for its count of requests
    assert not done.stdout.strip()  # refused before anything ran
    assert not output.exists()


def test_the_recorder_benchmark_leaves_the_postgresql_database_it_is_given_as_it_was(
    make_pg_database: Callable[[], str],
) -> None:
    # Its write rates ran in a database of their own, but its event-loop runs recorded into the database of
    # AUTOGEN_RELIABILITY_TEST_PG_URL itself: the ledger's tables made there, and every run's rows left in them.
    url = make_pg_database()
    command = [sys.executable, "-m", "benchmarks", "recorder", "--quick"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOGEN_RELIABILITY_TEST_PG_URL": url}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    ran = [line for line in done.stdout.splitlines() if line.lstrip().startswith("postgresql")]
    assert any("rows written" in line for line in ran)  # the event-loop runs recorded to PostgreSQL
    engine = create_engine(url, poolclass=NullPool)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
