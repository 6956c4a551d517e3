"""``UsageStore.report`` over a million synthetic rows, on SQLite and on PostgreSQL.

The ledger is made by ``benchmarks/synthetic.py`` (30 days ending today, 5
projects, 8 agents and calls without one, 6 models of which one unpriced,
about 50,000 sessions, 5 % failed and 3 % re-asked first attempts, tags),
loaded into a new SQLite file and, when ``AUTOGEN_RELIABILITY_TEST_PG_URL`` is
set, into a new PostgreSQL database, then analysed (``ANALYZE``; ``VACUUM
ANALYZE`` on PostgreSQL), as a ledger that has been in use for a while is.

Each case is a whole ``store.report(...)`` call, from the arguments to the
``UsageReport``: every query, percentiles, top sessions and the sums in
Python. Best and median of ``--repeat`` runs. The goals of issue #11: the full
report (30 days, every project, by agent and model, with percentiles) within
0.5 s, the last 7 days within 50 ms.

Machines here are shared and noisy (2 cores, other jobs running): compare
numbers within one run, and read the load average printed with them.

Run: ``python -m benchmarks.bench_report [--rows 1000000] [--repeat 5] [--json FILE]``
(``--rows 2000 --repeat 1`` is a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

from autogen_reliability.reports import UsageReport
from autogen_reliability.storage import UsageStore

from . import synthetic
from .timing import at_least_one

PG_URL_ENV = "AUTOGEN_RELIABILITY_TEST_PG_URL"
FULL_GOAL_S = 0.5
WEEK_GOAL_S = 0.05


@dataclass(frozen=True)
class Case:
    """One report to time: its name, the call, and the goal of the issue (None: none was set)."""

    name: str
    call: Callable[[UsageStore, date], UsageReport]
    goal_s: float | None


CASES = (
    Case("full: 30 days, all projects, by agent+model", lambda store, _: store.report(), FULL_GOAL_S),
    Case("last 7 days, all projects", lambda store, last: store.report(since=last - timedelta(days=6)), WEEK_GOAL_S),
    Case(
        "last 7 days, one project",
        lambda store, last: store.report("acme-support", since=last - timedelta(days=6)),
        WEEK_GOAL_S,
    ),
    Case("full, by day+model", lambda store, _: store.report(group_by=("day", "model")), None),
    Case("full, by tag:team+week", lambda store, _: store.report(group_by=("tag:team", "week")), None),
    Case("full, by session", lambda store, _: store.report(group_by=("session",)), None),
)


@dataclass
class Result:
    """The timings of one case on one backend."""

    backend: str
    case: str
    rows: int
    attempts_in_report: int
    best_s: float
    median_s: float
    runs: int
    goal_s: float | None
    met: bool | None


def time_cases(backend: str, store: UsageStore, rows: int, last_day: date, repeat: int) -> list[Result]:
    results = []
    for case in CASES:
        timings = []
        report = None
        for _ in range(repeat):
            start = time.perf_counter()
            report = case.call(store, last_day)
            timings.append(time.perf_counter() - start)
        assert report is not None
        best = min(timings)
        results.append(
            Result(
                backend=backend,
                case=case.name,
                rows=rows,
                attempts_in_report=report.totals.attempts,
                best_s=best,
                median_s=statistics.median(timings),
                runs=repeat,
                goal_s=case.goal_s,
                met=None if case.goal_s is None else best <= case.goal_s,
            )
        )
    return results


def fill(store: UsageStore, made: list[tuple[Any, ...]]) -> float:
    """Loads and analyses; returns the rows per second of the load."""
    start = time.perf_counter()
    synthetic.load(store, made)
    rate = len(made) / (time.perf_counter() - start)
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    else:
        synthetic.analyze(store)
    return rate


@contextmanager
def sqlite_store() -> Iterator[UsageStore]:
    with tempfile.TemporaryDirectory() as directory, UsageStore(f"sqlite:///{directory}/report.db") as store:
        yield store


@contextmanager
def postgresql_store(admin_url: str) -> Iterator[UsageStore]:
    # A database of its own, so the run neither sees nor leaves rows elsewhere.
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"ar_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with UsageStore(url) as store:
            yield store
    finally:
        with admin.connect() as connection:
            # Not WITH (FORCE): the store's connections are closed, and FORCE refuses to end an autovacuum
            # worker (a role without pg_signal_backend may not), which a plain DROP ends itself.
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


def print_table(results: list[Result]) -> None:
    print(f"  {'backend':<11} {'case':<44} {'attempts':>10} {'best':>9} {'median':>9} {'goal':>8}  met")
    for result in results:
        goal = "-" if result.goal_s is None else f"{result.goal_s:.3f} s"
        met = "-" if result.met is None else ("yes" if result.met else "NO")
        print(
            f"  {result.backend:<11} {result.case:<44} {result.attempts_in_report:>10,} "
            f"{result.best_s:>7.3f} s {result.median_s:>7.3f} s {goal:>8}  {met}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks report", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=at_least_one, default=1_000_000, help="rows in the ledger")
    parser.add_argument("--repeat", type=at_least_one, default=5, help="runs of each report (best and median shown)")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(tempfile.gettempdir()) / "autogen_reliability_bench_report.json",
        help="where to write the results as JSON",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: --rows 2000 --repeat 1")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = 2_000, 1
    last_day = datetime.now(UTC).date()
    start = time.perf_counter()
    made = synthetic.rows(args.rows, first_day=synthetic.first_day_for(last_day))
    print(f"Made {len(made):,} synthetic rows over {synthetic.DAYS} days in {time.perf_counter() - start:.1f} s")
    backends: list[tuple[str, Callable[[], Any]]] = [("sqlite", sqlite_store)]
    admin_url = os.environ.get(PG_URL_ENV)
    if admin_url:
        backends.append(("postgresql", lambda: postgresql_store(admin_url)))
    else:
        print(f"PostgreSQL: skipped (set {PG_URL_ENV}; scripts/ci-postgres.sh starts a server)")
    results: list[Result] = []
    loads: dict[str, float] = {}
    for backend, open_store in backends:
        with open_store() as store:
            loads[backend] = fill(store, made)
            print(f"{backend}: loaded at {loads[backend]:,.0f} rows/s; load average {os.getloadavg()[0]:.2f}")
            results.extend(time_cases(backend, store, len(made), last_day, args.repeat))
    print(f"UsageStore.report, best and median of {args.repeat} (load average now {os.getloadavg()[0]:.2f}):")
    print_table(results)
    args.json.write_text(
        json.dumps(
            {
                "benchmark": "report",
                "rows": len(made),
                "repeat": args.repeat,
                "when": datetime.now(UTC).isoformat(),
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "load_rows_per_s": loads,
                "results": [asdict(result) for result in results],
            },
            indent=2,
        )
    )
    print(f"Results written to {args.json}")


if __name__ == "__main__":
    main()
