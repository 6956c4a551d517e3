"""The rollups (``ar_usage_rollup``, ``ar_usage_session_days``) always equal their ``GROUP BY`` over the stored rows.

After writes (new rows only, a replayed batch adds nothing), after retention
(a cutoff at a midnight and inside a day), after the migration's backfill, and
with two stores writing to one PostgreSQL ledger at once. "Equal" is every
column: the key, the sums, the smallest and largest latency, the 64 buckets
(counted in Python by the writer, in SQL by the rebuild: the same bounds).
Reports read through the rollup are checked against the rows in tests/test_report.py.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.pool import NullPool

from autogen_reliability.accounting import UsageEvent
from autogen_reliability.storage import UsageStore, _bulk, _migrate, _rollup
from autogen_reliability.storage._rollup import (
    BOUNDS,
    COLUMNS,
    ROLLUP,
    SESSION_COLUMNS,
    SESSION_DAYS,
    bucket_of,
    select_from_records,
    select_sessions_from_records,
)

from .storage_fixtures import make_pg_database, pg_admin_url, store_url  # noqa: F401 - fixtures

START = datetime(2025, 5, 1, tzinfo=UTC)


def made_events(count: int, seed: int) -> list[UsageEvent]:
    """Events over four UTC days with every case of a key and a latency: NULL and '' apart, bucket edges, big costs."""
    rng = random.Random(seed)
    latencies = [0.0, 9.999, 10.0, BOUNDS[5], BOUNDS[5] * (1 - 1e-15), 299_999.0, 300_000.0, 1e6]
    events = []
    for _ in range(count):
        events.append(
            UsageEvent(
                call_id=uuid.uuid4(),
                attempt=rng.choice((1, 1, 1, 2, 3)),
                started_at=START + timedelta(seconds=rng.randrange(4 * 86_400)),
                latency_ms=rng.choice(latencies) if rng.random() < 0.3 else round(rng.lognormvariate(6.5, 1.2), 3),
                project=rng.choice((None, "", "alpha", "beta")),
                session=rng.choice((None, "s1", "s2")),
                agent=rng.choice((None, "", "writer")),
                provider=rng.choice((None, "openai")),
                model=rng.choice((None, "gpt-4o", "")),
                prompt_tokens=rng.randrange(5000),
                completion_tokens=rng.randrange(800),
                cached_tokens=rng.choice((None, rng.randrange(100))),
                reasoning_tokens=rng.choice((None, rng.randrange(100))),
                cache_write_tokens=rng.choice((None, rng.randrange(100))),
                cost_nanousd=rng.choice((None, rng.randrange(10**9), 2**62)),
                outcome=rng.choice(("ok", "ok", "error", "invalid", "cancelled")),
                error_kind=rng.choice((None, "rate_limit", "")),
                cache_hit=rng.random() < 0.1,
            )
        )
    return events


def rollup_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(select(*(ROLLUP.c[name] for name in COLUMNS))))


def rows_rolled_up(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(select_from_records()))


def session_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(select(*(SESSION_DAYS.c[n] for n in SESSION_COLUMNS))))


def sessions_rolled_up(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return sorted(tuple(row) for row in connection.execute(select_sessions_from_records()))


def assert_rollup_is_the_rows(engine: Engine) -> None:
    assert rollup_rows(engine) == rows_rolled_up(engine)
    assert session_rows(engine) == sessions_rolled_up(engine)


@pytest.fixture
def store(store_url: str) -> Any:  # noqa: F811
    with UsageStore(store_url) as opened:
        yield opened


def test_bucket_bounds() -> None:
    assert bucket_of(0.0) == 0
    assert bucket_of(9.999) == 0
    assert bucket_of(10.0) == 1
    assert bucket_of(299_999.0) == 62
    assert bucket_of(300_000.0) == 63
    assert bucket_of(1e9) == 63


def test_writes_keep_the_rollup_and_a_replay_adds_nothing(store: UsageStore) -> None:
    events = made_events(600, seed=1)
    assert store.write(events[:400]) == 400
    assert_rollup_is_the_rows(store.engine)
    before = rollup_rows(store.engine)
    assert store.write(events[:400]) == 0  # the same batch again
    assert rollup_rows(store.engine) == before
    # Part replayed, part new: only the new are counted.
    assert store.write(events[300:]) == 200
    assert_rollup_is_the_rows(store.engine)
    assert sum(row[COLUMNS.index("attempts")] for row in rollup_rows(store.engine)) == 600
    with store.engine.connect() as connection:
        with_session = connection.execute(text("SELECT count(*) FROM ar_usage_records WHERE session IS NOT NULL"))
        assert (
            sum(row[SESSION_COLUMNS.index("attempts")] for row in session_rows(store.engine)) == with_session.scalar()
        )
    # NULL and '' are different keys.
    keys = {(row[1], row[COLUMNS.index("nulls")] & 1) for row in rollup_rows(store.engine)}
    assert ("", 0) in keys
    assert ("", 1) in keys
    session_keys = {(row[1], row[SESSION_COLUMNS.index("nulls")] & 1) for row in session_rows(store.engine)}
    assert ("", 0) in session_keys
    assert ("", 1) in session_keys


def test_a_batch_of_whole_and_fractional_latencies_is_written(store: UsageStore) -> None:
    # latency_ms is a float, and an int is one to a type checker (250 ms, from a timer in whole milliseconds):
    # PostgreSQL's rollup write sent the batch's latencies as one array, which psycopg refused to make of both.
    events = made_events(2, seed=6)
    events = [replace(events[0], latency_ms=250), replace(events[1], latency_ms=12.5)]
    assert store.write(events) == 2
    assert_rollup_is_the_rows(store.engine)
    with store.engine.connect() as connection:
        latencies = connection.execute(select(ROLLUP.c.latency_min_ms, ROLLUP.c.latency_max_ms)).all()
    assert min(low for low, _ in latencies) == 12.5
    assert max(high for _, high in latencies) == 250.0


@pytest.mark.parametrize(
    "cutoff",
    [
        datetime(2025, 5, 3, tzinfo=UTC),  # a midnight: two whole days go
        datetime(2025, 5, 2, 13, 17, 5, tzinfo=UTC),  # inside a day: the rest of that day stays
        datetime(2025, 4, 1, tzinfo=UTC),  # nothing to delete
        datetime(2025, 6, 1, tzinfo=UTC),  # everything
    ],
    ids=str,
)
def test_retention_keeps_the_rollup_equal_to_the_rows(store: UsageStore, cutoff: datetime) -> None:
    store.write(made_events(500, seed=2))
    result = store.delete_older_than(cutoff, batch_size=37)
    assert_rollup_is_the_rows(store.engine)
    days = {row[0] for row in rollup_rows(store.engine)}
    assert all(day >= cutoff.date() for day in days)
    if result.records:
        assert result.oldest is not None
        assert result.oldest < cutoff


def test_retention_inside_the_last_day_of_the_calendar(store: UsageStore) -> None:
    # Its rebuild summed the rows up to the next midnight, and 9999-12-31 has none: OverflowError, nothing deleted.
    last_day = datetime(9999, 12, 31, tzinfo=UTC)
    events = made_events(3, seed=7)
    hours = (0, 5, 23)
    store.write(
        [replace(event, started_at=last_day + timedelta(hours=hour)) for event, hour in zip(events, hours, strict=True)]
    )
    assert store.delete_older_than(last_day + timedelta(hours=12)).records == 2
    assert store.count() == 1
    assert_rollup_is_the_rows(store.engine)
    assert sum(row[COLUMNS.index("attempts")] for row in rollup_rows(store.engine)) == 1


@pytest.mark.parametrize("base", ["0003", "0004", "0006"])
def test_the_migrations_backfill_equals_what_writes_produce(store: UsageStore, base: str) -> None:
    events = made_events(500, seed=3)
    store.write(events)
    written, sessions = rollup_rows(store.engine), session_rows(store.engine)
    assert written
    assert sessions
    cache_writes = sum(event.cache_write_tokens or 0 for event in events)
    assert cache_writes > 0
    assert sum(row[COLUMNS.index("cache_write_tokens")] for row in written) == cache_writes
    with store.engine.connect() as connection, _migrate.migration_transaction(connection):
        command.downgrade(_migrate.alembic_config(connection), base)
    _migrate.upgrade(store.engine)
    assert rollup_rows(store.engine) == written
    assert session_rows(store.engine) == sessions


def test_a_downgrade_to_0004_fills_its_rollup_from_the_rows(store: UsageStore) -> None:
    # Revision 0004's rollup has a row per outcome and error kind; the package of that revision reads it.
    events = made_events(500, seed=5)
    store.write(events)
    with store.engine.connect() as connection, _migrate.migration_transaction(connection):
        command.downgrade(_migrate.alembic_config(connection), "0004")
    hours = ", ".join(f"h{index:02d}" for index in range(64))
    with store.engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT outcome, attempts, cost_high, cost_low, prompt_tokens, {hours} FROM ar_usage_rollup")
        ).all()
    assert sum(row[1] for row in rows) == len(events)
    assert sum(sum(row[5:]) for row in rows) == len(events)
    assert sum(row[2] * 2**31 + row[3] for row in rows) == sum(event.cost_nanousd or 0 for event in events)
    for outcome in ("ok", "error", "invalid", "cancelled"):
        of_outcome = [event for event in events if event.outcome == outcome]
        assert sum(row[1] for row in rows if row[0] == outcome) == len(of_outcome)
        assert sum(row[4] for row in rows if row[0] == outcome) == sum(event.prompt_tokens for event in of_outcome)


def test_two_stores_writing_one_postgresql_ledger_keep_the_rollup(make_pg_database: Any) -> None:  # noqa: F811
    url = make_pg_database()
    events = made_events(3000, seed=4)
    # Overlapping batches, in different orders: both writers insert and replay the same events at once.
    batches = [events[start : start + 250] for start in range(0, len(events), 150)]
    errors: list[BaseException] = []

    def write(order: list[list[UsageEvent]]) -> None:
        engine = create_engine(url, poolclass=NullPool)
        try:
            writer = UsageStore(engine)
            for batch in order:
                writer.write(batch)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            engine.dispose()

    UsageStore(url).close()  # the schema, before the writers race to make it
    threads = [
        threading.Thread(target=write, args=(batches,)),
        threading.Thread(target=write, args=(batches[::-1],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with UsageStore(url) as check:
        assert check.count() == len(events)
        assert_rollup_is_the_rows(check.engine)


def test_retention_and_a_writer_on_the_days_it_sums_again_on_postgresql(make_pg_database: Any) -> None:  # noqa: F811
    # Retention deleted a day's rollup rows, then summed the day again from its rows in a second statement: a
    # writer that added a new key of that day in between made the second fail (duplicate key). Retention now
    # sets only the rollup rows it locked, and leaves the writer's new key (only the writer's rows) as written.
    url = make_pg_database()
    day = datetime(2025, 5, 2, tzinfo=UTC)
    old = made_events(50, seed=8)
    with UsageStore(url) as store:
        store.write([replace(event, started_at=day + timedelta(minutes=index)) for index, event in enumerate(old)])
        late = replace(made_events(1, seed=9)[0], started_at=day + timedelta(hours=20), project="a project of its own")
        written: list[int] = []
        errors: list[BaseException] = []

        def write_late() -> None:
            engine = create_engine(url, poolclass=NullPool)
            try:
                written.append(UsageStore(engine).write([late]))
            except BaseException as error:  # reported by the main thread
                errors.append(error)
            finally:
                engine.dispose()

        writer = threading.Thread(target=write_late)

        def between_delete_and_sum(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.startswith(f"INSERT INTO {ROLLUP.name}") and not writer.is_alive() and not written:
                writer.start()
                writer.join(timeout=1)  # it commits here: its key is new, no row of it is locked

        event.listen(store.engine, "before_cursor_execute", between_delete_and_sum)
        try:
            result = store.delete_older_than(day + timedelta(hours=1), batch_size=1000)
        finally:
            event.remove(store.engine, "before_cursor_execute", between_delete_and_sum)
        writer.join()
        assert not errors
        assert written == [1]
        assert result.records == len(old)
        assert store.count() == 1
        assert_rollup_is_the_rows(store.engine)


def test_retention_and_a_writer_locking_the_days_rollup_rows_in_turn_on_postgresql(make_pg_database: Any) -> None:  # noqa: F811
    # Retention deleted the day's rollup rows in the table's order ("b" was written first), a writer upserts its
    # keys in key order: the writer held "a" and waited for "b", which retention held, waiting for "a": deadlock,
    # and the retention run failed. Retention now locks the day's rollup rows in key order too, so it waits.
    url = make_pg_database()
    day = datetime(2025, 5, 2, tzinfo=UTC)
    base = replace(made_events(1, seed=10)[0], session="s1")

    def at(minutes: int, project: str) -> UsageEvent:
        return replace(
            base,
            event_id=uuid.uuid4(),
            call_id=uuid.uuid4(),
            started_at=day + timedelta(minutes=minutes),
            project=project,
        )

    holding = threading.Event()
    errors: list[BaseException] = []

    def write_a_then_b() -> None:
        # One writer's transaction, paused between its two keys: what one batch of both does in one statement.
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                for index, project in enumerate(("a", "b")):
                    rows = [at(600 + index, project).to_row()]
                    assert _bulk.insert_records(connection, rows) == 1
                    _rollup.add_rows(connection, rows)
                    if index == 0:
                        holding.set()
                        wait_for_a_lock_wait(url)  # retention waits for "a" (or, before the fix, holds "b")
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            engine.dispose()

    with UsageStore(url) as store:
        store.write([at(0, "b")])
        store.write([at(1, "a")])
        # Many keys of the day, after those two in key order, and their statistics: the delete scans the table.
        store.write([at(2 + index, f"p{index:03d}") for index in range(200)])
        with store.engine.begin() as connection:
            connection.exec_driver_sql(f"ANALYZE {ROLLUP.name}")
        writer = threading.Thread(target=write_a_then_b)
        writer.start()
        assert holding.wait(10), errors
        try:
            result = store.delete_older_than(day + timedelta(hours=5))
        finally:
            writer.join()
        assert not errors
        assert result.records == 202
        assert store.count() == 2
        assert_rollup_is_the_rows(store.engine)


def wait_for_a_lock_wait(url: str) -> None:
    """Returns once a session of ``url``'s database waits for a lock (or after 10 s)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        deadline = time.monotonic() + 10
        with engine.connect() as connection:
            while time.monotonic() < deadline:
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
                connection.rollback()  # a new snapshot of the activity for the next look
                if waiting:
                    return
                time.sleep(0.05)
    finally:
        engine.dispose()
