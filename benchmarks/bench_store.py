"""The usage store: sustained write rate, and what the covering index does for a grouped report.

1. Writes go through ``UsageStore.write`` in batches of 1,000 events (as the
   recorder sends them), in time order, into a new SQLite file and, when
   ``AUTOGEN_RELIABILITY_TEST_PG_URL`` is set (``scripts/ci-postgres.sh`` starts
   a server), into a new PostgreSQL database. Only ``write`` is timed, not
   making the events. Twice each: with random ids (``uuid4``, what
   ``UsageEvent`` makes today) and with time-ordered ids (the UUIDv7 layout).
   Random keys land all over the ``event_id`` and ``call_id`` indexes, so every
   row dirties its own index pages and the rate falls as the table grows
   (``--write-rows 1000000`` shows it); time-ordered keys append.
2. The report: per project, day and model, the sums of tokens and cost over 30
   of the 90 days held, over ``--report-rows`` rows in SQLite, with the
   covering index ``ix_ar_usage_records_report`` and after dropping it. Best
   of 3 runs each.

Machines here are shared and noisy: compare numbers within one run.

Run: ``python -m benchmarks.bench_store [--write-rows 200000] [--report-rows 1000000]``
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, create_engine, func, make_url, select
from sqlalchemy.pool import NullPool

from autogen_reliability.accounting._events import UsageEvent
from autogen_reliability.storage._models import REPORT_INDEX, UsageRecord
from autogen_reliability.storage._store import UsageStore

from .timing import at_least_one

PG_URL_ENV = "AUTOGEN_RELIABILITY_TEST_PG_URL"
BATCH = 1000
DAYS = 90
FIRST_DAY = datetime(2025, 1, 1, tzinfo=UTC)
PROJECTS = [f"project-{n}" for n in range(5)]
MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "o3-mini",
    "claude-sonnet-4",
    "claude-haiku-3.5",
    "llama3.1:8b",
    "qwen2.5",
]
AGENTS = [f"agent-{n}" for n in range(10)]


def time_ordered_uuid(at: datetime, rng: random.Random) -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, then version, variant and random bits (RFC 9562)."""
    millis = int(at.timestamp() * 1000) & (2**48 - 1)
    return uuid.UUID(int=millis << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62))


def random_uuid(_at: datetime, rng: random.Random) -> uuid.UUID:
    """A UUIDv4, as ``uuid.uuid4()`` makes, but reproducible."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


ID_KINDS = {"random ids (uuid4)": random_uuid, "time-ordered ids (uuid7)": time_ordered_uuid}


def batches(
    rows: int, seed: int, make_id: Callable[[datetime, random.Random], uuid.UUID]
) -> Iterator[list[UsageEvent]]:
    """``rows`` plausible events (a few failed attempts, a few unpriced models), ``BATCH`` at a time."""
    rng = random.Random(seed)
    # In time order, as a recorder writes them, spread evenly over the days.
    step = DAYS * 86400 / rows
    for start in range(0, rows, BATCH):
        batch = []
        for index in range(start, min(start + BATCH, rows)):
            model = rng.choice(MODELS)
            failed = rng.random() < 0.05
            started_at = FIRST_DAY + timedelta(seconds=index * step)
            batch.append(
                UsageEvent(
                    call_id=make_id(started_at, rng),
                    event_id=make_id(started_at, rng),
                    attempt=1,
                    started_at=started_at,
                    latency_ms=rng.uniform(200, 4000),
                    project=rng.choice(PROJECTS),
                    session=f"s{rng.randrange(10_000)}",
                    agent=rng.choice(AGENTS),
                    tags={"env": "prod"},
                    provider="openai",
                    model=model,
                    response_model=model,
                    prompt_tokens=0 if failed else rng.randrange(50, 4000),
                    completion_tokens=0 if failed else rng.randrange(10, 800),
                    cost_nanousd=None if ":" in model else rng.randrange(10_000, 5_000_000),
                    outcome="error" if failed else "ok",
                    error_kind="rate_limit" if failed else None,
                    http_status=429 if failed else None,
                    finish_reason=None if failed else "stop",
                )
            )
        yield batch


def write_rate(
    store: UsageStore, rows: int, make_id: Callable[[datetime, random.Random], uuid.UUID]
) -> tuple[float, float]:
    """Rows per second and seconds spent in ``store.write`` for ``rows`` events."""
    spent = 0.0
    for batch in batches(rows, 1, make_id):
        start = time.perf_counter()
        store.write(batch)
        spent += time.perf_counter() - start
    return rows / spent, spent


def report_seconds(engine: Engine) -> tuple[float, int]:
    """Best of 3 runs of the grouped report over days 30 to 59, and how many groups it returned."""
    record = UsageRecord
    query = (
        select(
            record.project,
            record.day,
            record.model,
            func.count(),
            func.sum(record.prompt_tokens),
            func.sum(record.completion_tokens),
            func.sum(record.cost_nanousd),
        )
        .where(record.day >= date(2025, 1, 31), record.day < date(2025, 3, 2))
        .group_by(record.project, record.day, record.model)
    )
    best, groups = float("inf"), 0
    for _ in range(3):
        start = time.perf_counter()
        with engine.connect() as connection:
            groups = len(connection.execute(query).all())
        best = min(best, time.perf_counter() - start)
    return best, groups


def sqlite_writes(rows: int) -> None:
    for kind, make_id in ID_KINDS.items():
        with tempfile.TemporaryDirectory() as directory, UsageStore(f"sqlite:///{directory}/bench.db") as store:
            rate, spent = write_rate(store, rows, make_id)
        print(f"  SQLite (WAL)  {kind:<26} {rows:>9,} rows: {rate:>7,.0f} rows/s ({spent:.1f} s)")


def postgresql_writes(admin_url: str, rows: int) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        for kind, make_id in ID_KINDS.items():
            # A database of its own, so the run neither sees nor leaves rows elsewhere.
            name = f"ar_bench_{uuid.uuid4().hex[:12]}"
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            try:
                url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
                with UsageStore(url) as store:
                    rate, spent = write_rate(store, rows, make_id)
                print(f"  PostgreSQL    {kind:<26} {rows:>9,} rows: {rate:>7,.0f} rows/s ({spent:.1f} s)")
            finally:
                with admin.connect() as connection:
                    # Not WITH (FORCE): the store's connections are closed, and FORCE refuses to end an autovacuum
                    # worker (a role without pg_signal_backend may not), which a plain DROP ends itself.
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        admin.dispose()


def sqlite_report(rows: int) -> None:
    with tempfile.TemporaryDirectory() as directory, UsageStore(f"sqlite:///{directory}/bench.db") as store:
        rate, spent = write_rate(store, rows, time_ordered_uuid)
        print(f"  (filled with {rows:,} rows, time-ordered ids: {rate:,.0f} rows/s, {spent:.1f} s)")
        with store.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")  # as a long-lived database has: plans from real statistics
            connection.commit()
        with_index, groups = report_seconds(store.engine)
        with store.engine.begin() as connection:
            connection.exec_driver_sql(f"DROP INDEX {REPORT_INDEX}")
        without_index, same_groups = report_seconds(store.engine)
        assert groups == same_groups
        print(f"  {groups:,} groups, best of 3: with the covering index {with_index:.3f} s, ", end="")
        print(f"without it {without_index:.3f} s: {without_index / with_index:.1f}x faster with it")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks store", description=__doc__.splitlines()[0])
    parser.add_argument("--write-rows", type=at_least_one, default=200_000, help="rows per write-rate run")
    parser.add_argument("--report-rows", type=at_least_one, default=1_000_000, help="rows the SQLite report reads")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 rows each")
    args = parser.parse_args()
    if args.quick:
        args.write_rows, args.report_rows = 2_000, 2_000
    print(f"Writes through UsageStore.write, batches of {BATCH:,}:")
    sqlite_writes(args.write_rows)
    admin_url = os.environ.get(PG_URL_ENV)
    if admin_url:
        postgresql_writes(admin_url, args.write_rows)
    else:
        print(f"  PostgreSQL: skipped (set {PG_URL_ENV}; scripts/ci-postgres.sh starts a server)")
    print(f"Grouped report on SQLite (project, day, model; 30 of {DAYS} days; sums of tokens and cost):")
    sqlite_report(args.report_rows)


if __name__ == "__main__":
    main()
