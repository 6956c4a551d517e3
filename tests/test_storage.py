"""The usage store on real databases: a SQLite file, and PostgreSQL when ``AUTOGEN_RELIABILITY_TEST_PG_URL`` is set.

Covers the round trip of every field, insert-or-ignore, the content table,
schema checks and migrations (models and revisions agree; an old database is
refused with the command that upgrades it), the wheel's migrations and the
``autogen-reliability db`` command.
"""

from __future__ import annotations

import dataclasses
import gc
import glob
import json
import logging
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from autogen_core.models import UserMessage
from sqlalchemy import Engine, create_engine, delete, inspect, make_url, select, text
from sqlalchemy.event import listen
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool, StaticPool

from autogen_reliability import configure, reliable
from autogen_reliability._cli import main as cli_main
from autogen_reliability._config import (
    ENV_DB_URL,
    ENV_SPOOL_DIR,
    AccountingSettings,
    default_db_url,
    default_recorder,
)
from autogen_reliability._config import settings as accounting_settings
from autogen_reliability._errors import ConfigurationError, ReliabilityError
from autogen_reliability.accounting import PricingTable, UsageRecorder
from autogen_reliability.accounting._events import ROW_FIELDS, UsageEvent
from autogen_reliability.storage import _bulk, _engine, _migrate
from autogen_reliability.storage._engine import POSTGRESQL_LOCK_TIMEOUT_MS, autocommit
from autogen_reliability.storage._models import (
    REPORT_INDEX,
    VERSION_TABLE,
    Base,
    UsageContent,
    UsageRecord,
    include_name,
)
from autogen_reliability.storage._store import (
    SchemaOutdatedError,
    SchemaTooNewError,
    StoreSchemaError,
    UsageStore,
)
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

from .conftest import OpenAIClientFactory, fork_child, run_cli
from .storage_fixtures import drop_pg_database, make_pg_database, pg_admin_url, store_url

__all__ = ["make_pg_database", "pg_admin_url", "store_url"]  # fixtures, imported for pytest to find

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 3, 1, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))  # 2025-02-28 23:30 UTC
NANOUSD_2_62 = 2**62


def full_event(**changes: Any) -> UsageEvent:
    """An event with every field set to something other than its default."""
    values: dict[str, Any] = {
        "call_id": uuid.uuid4(),
        "attempt": 2,
        "started_at": T0,
        "latency_ms": 1234.5,
        "event_id": uuid.uuid4(),
        "project": "acme-support",
        "session": "ticket-4711",
        "agent": "writer",
        "tags": {"team": "billing", "ünïcode": "✓"},
        "provider": "openai",
        "model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "prompt_tokens": 1200,
        "completion_tokens": 345,
        "cached_tokens": 1024,
        "cache_write_tokens": 7,
        "cache_write_1h_tokens": 5,
        "reasoning_tokens": 64,
        "tokens_estimated": True,
        "cost_nanousd": NANOUSD_2_62,
        "price_source": "genai-prices 0.2.3",
        "price_date": date(2024, 7, 18),
        "outcome": "invalid",
        "error_kind": "rate_limit",
        "http_status": 429,
        "error_message": "Rate limit reached; retry after 2 s",
        "finish_reason": "stop",
        "streamed": True,
        "cache_hit": True,
        "sanitizer_changes": {"html": 2, "control_chars": 1},
        "validation_errors": 3,
        "request_content": '[{"role": "user", "content": "hi"}]',
        "response_content": "Hello",
    }
    values.update(changes)
    return UsageEvent(**values)


def plain_event(**changes: Any) -> UsageEvent:
    """An event with only the required fields (so: no tags, unpriced, no content)."""
    values: dict[str, Any] = {"call_id": uuid.uuid4(), "attempt": 1, "started_at": datetime.now(UTC), "latency_ms": 5.0}
    values.update(changes)
    return UsageEvent(**values)


@pytest.fixture
def store(store_url: str) -> Iterator[UsageStore]:
    """A store on a new database of each backend, closed after the test."""
    with UsageStore(store_url) as opened:
        yield opened


def password_of(url: str) -> str | None:
    return make_url(url).password


# --- the rows ------------------------------------------------------------------------------------


def test_every_field_of_usage_event_is_a_column() -> None:
    event_fields = {field.name for field in dataclasses.fields(UsageEvent)}
    content = {"request_content", "response_content"}
    assert set(UsageRecord.__table__.columns.keys()) == (event_fields - content) | {"id", "day"}
    assert set(UsageContent.__table__.columns.keys()) == content | {"event_id"}


def test_full_event_sets_every_field() -> None:
    # Guards the round-trip test: a field left at its default would prove nothing.
    event, defaults = full_event(), plain_event()
    same = [f.name for f in dataclasses.fields(UsageEvent) if getattr(event, f.name) == getattr(defaults, f.name)]
    assert same == []


def test_an_event_as_a_row_and_back() -> None:
    for event in (full_event(), plain_event()):
        row = event.to_row()
        assert len(row) == len(ROW_FIELDS)
        assert UsageEvent.from_row(row) == event
        # What the recorder queues adds nothing to the garbage collector's work, however long it waits.
        gc.collect()
        assert not gc.is_tracked(row)


def test_round_trip_of_every_field(store: UsageStore) -> None:
    full, plain = full_event(), plain_event(started_at=T0 + timedelta(minutes=1))
    assert store.write([full, plain]) == 2

    back_full, back_plain = store.events()
    assert back_full == full
    assert back_plain == plain
    for event in (back_full, back_plain):
        assert event.started_at.tzinfo is UTC  # aware, and in UTC whatever it was written in
    assert back_full.started_at == T0
    assert back_full.started_at.isoformat() == "2025-02-28T23:30:15.123456+00:00"
    assert type(back_full.cost_nanousd) is int
    assert back_full.cost_nanousd == NANOUSD_2_62
    assert back_full.tags == {"team": "billing", "ünïcode": "✓"}
    assert back_full.sanitizer_changes == {"html": 2, "control_chars": 1}
    assert back_plain.cost_nanousd is None  # unpriced stays NULL, never 0
    assert back_plain.tags == {}
    assert back_plain.request_content is None


def test_day_is_the_utc_date_of_started_at(store: UsageStore) -> None:
    store.write([full_event()])
    with store.engine.connect() as connection:
        day, cost = connection.execute(select(UsageRecord.day, UsageRecord.cost_nanousd)).one()
    assert day == date(2025, 2, 28)  # the local date was March 1st
    assert cost == NANOUSD_2_62


def test_largest_cost_fits(store: UsageStore) -> None:
    event = plain_event(cost_nanousd=2**63 - 1)
    store.write([event])
    assert store.events()[0].cost_nanousd == 2**63 - 1


# The ledger's INTEGER columns (token counts, attempt, HTTP status, validation errors) are 32-bit on PostgreSQL.
INT_COLUMN_VALUES = [
    ("prompt_tokens", 2**31),
    ("completion_tokens", 2**63 - 1),
    ("cached_tokens", 2**31),
    ("cache_write_tokens", 2**40),
    ("cache_write_1h_tokens", 2**31),
    ("reasoning_tokens", 2**31),
    ("attempt", 2**31),
    ("http_status", -(2**31) - 1),
    ("validation_errors", 2**31),
]


@pytest.mark.parametrize(("field", "value"), INT_COLUMN_VALUES)
def test_a_number_an_integer_column_cannot_hold_is_refused_alike_on_every_backend(
    store: UsageStore, field: str, value: int
) -> None:
    """SQLite's INTEGER would take it and PostgreSQL's would not: both refuse it, before writing anything."""
    good = plain_event()
    with pytest.raises(ValueError, match=f"{field} {value} is outside what the ledger holds"):
        store.write([good, plain_event(**{field: value})])
    assert store.count() == 0  # the batch is refused whole, and the rollup has nothing of it
    assert store.report().totals.attempts == 0
    largest = plain_event(**{field: 2**31 - 1})  # the largest that fits, on both
    assert store.write([good, largest]) == 2
    assert getattr(store.events(call_id=largest.call_id)[0], field) == 2**31 - 1


@pytest.mark.parametrize("latency", [float("nan"), float("inf"), float("-inf"), -5.0])
def test_a_latency_no_attempt_can_take_is_refused_alike_on_every_backend(store: UsageStore, latency: float) -> None:
    """PostgreSQL's double precision takes NaN, infinities and negatives, SQLite's REAL all but NaN: neither does.

    Stored, one such row made every report of its project and day show NaN (or infinite) percentiles, which no
    JSON holds.
    """
    good = plain_event(latency_ms=1.5)
    with pytest.raises(ValueError, match=f"latency_ms {latency} is not a number of milliseconds from 0 up"):
        store.write([good, plain_event(latency_ms=latency)])
    assert store.count() == 0  # the batch is refused whole, and the rollup has nothing of it
    assert store.write([good, plain_event(latency_ms=0.0)]) == 2
    report = store.report()
    assert report.totals.attempts == 2
    assert report.totals.latency_p50_ms == pytest.approx(0.75, abs=0.1)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("latency_ms", True, "a number of milliseconds"),
        ("prompt_tokens", True, "an int"),
        ("attempt", True, "an int"),
        ("http_status", False, "an int"),
        ("cost_nanousd", True, "an int"),
        ("cost_nanousd", 1.5, "an int"),  # money is whole nano-USD: SQLite's INTEGER kept 1.5 as a REAL
        ("completion_tokens", 2.0, "an int"),
        ("streamed", 2, "True or False"),
        ("cache_hit", 1, "True or False"),
    ],
)
def test_a_value_of_the_wrong_kind_in_a_number_or_flag_column_is_refused_alike_on_every_backend(
    store: UsageStore, field: str, value: object, expected: str
) -> None:
    """SQLite stored ``latency_ms=True`` as 1 and a cost of 1.5 nano-USD as a REAL; PostgreSQL refused both."""
    good = plain_event()
    with pytest.raises(ValueError, match=f"{field} {value!r} is not {expected}"):
        store.write([good, plain_event(**{field: value})])
    assert store.count() == 0  # the batch is refused whole, and the rollup has nothing of it
    assert store.write([good, plain_event(latency_ms=250, streamed=True, cost_nanousd=None)]) == 2


def test_a_token_count_no_column_holds_goes_to_the_refused_file_on_every_backend(
    store_url: str, tmp_path: Path
) -> None:
    store = UsageStore(store_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    try:
        bad = plain_event(prompt_tokens=2**31, completion_tokens=5)
        batch = [plain_event(), bad, plain_event()]
        for event in batch:
            recorder.record(event)
        assert recorder.flush(10)
        assert store.count() == 2
        assert recorder.stats["refused"] == 1
        kept = [UsageEvent.from_json(json.loads(line)) for line in recorder.refused_path.open()]
        assert kept == [bad]
    finally:
        recorder.close()
        store.close()


def test_writing_the_same_events_again_adds_nothing(store: UsageStore) -> None:
    first = [plain_event() for _ in range(5)]
    assert store.write(first) == 5
    assert store.write(first) == 0
    more = [plain_event() for _ in range(3)]
    assert store.write([*first[:2], *more, first[4]]) == 3
    assert store.write([more[0], more[0]]) == 0
    fresh = plain_event()
    assert store.write([fresh, fresh, fresh]) == 1  # repeated inside one batch: stored once
    assert store.count() == 9
    assert store.write([]) == 0


def test_bulk_insert_stores_what_sqlalchemy_core_stores(store: UsageStore) -> None:
    """The bulk path (sqlite3 executemany, PostgreSQL COPY) writes the very values SQLAlchemy's types write."""
    events = [
        full_event(),
        plain_event(started_at=datetime(2024, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-3)))),
        plain_event(started_at=datetime(2025, 6, 1, 8, 0, 0, 0, tzinfo=UTC), tags={"a": "b", "quote": '"'}),
    ]
    rows = [event.to_row() for event in events]
    query = f"SELECT {', '.join(_bulk.COLUMNS)} FROM ar_usage_records ORDER BY event_id"

    def stored() -> list[tuple[Any, ...]]:
        with store.engine.begin() as connection:
            values = [tuple(row) for row in connection.exec_driver_sql(query)]
            connection.execute(delete(UsageRecord))
        return values

    with store.engine.begin() as connection:
        assert _bulk._core(connection, rows) == len(rows)
    by_core = stored()
    with store.engine.begin() as connection:
        assert _bulk.insert_records(connection, rows) == len(rows)
    assert stored() == by_core
    assert len(by_core) == len(events)


def test_an_engine_in_autocommit_mode_writes_and_skips_stored_events(store_url: str) -> None:
    # An application's own engine may be in AUTOCOMMIT: there is no transaction to take a savepoint in.
    engine = create_engine(store_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        store = UsageStore(engine)
        first = [plain_event() for _ in range(40)]
        assert store.write(first) == 40
        assert store.write([*first, plain_event()]) == 1
        assert store.count() == 41
    finally:
        engine.dispose()


def test_an_engine_in_autocommit_mode_streams_events(store_url: str) -> None:
    # PostgreSQL's server-side cursor (DECLARE) needs a transaction, which an engine in AUTOCOMMIT never opens.
    engine = create_engine(store_url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    try:
        store = UsageStore(engine)
        assert store.write([plain_event() for _ in range(5)]) == 5
        streamed = [event.event_id for event in store.iter_events(batch_size=2)]
        assert streamed == [event.event_id for event in store.events()]
        assert len(streamed) == 5
        with engine.connect() as connection:
            assert autocommit(connection)  # back in the pool as the application made it
    finally:
        engine.dispose()


def test_an_autocommit_engine_writes_under_the_write_timeouts_too(make_pg_database: Callable[[], str]) -> None:
    """A LOCK TABLE elsewhere: a write through an application's engine in AUTOCOMMIT gives up after the lock
    timeout as any other write does (a ``set_config(..., true)`` outside a transaction sets nothing), and the
    engine's connection goes back to the pool with its own settings."""
    url = make_pg_database()
    engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    holder = create_engine(url, poolclass=NullPool).connect()
    try:
        store = UsageStore(engine)
        holder.execute(text("LOCK TABLE ar_usage_records IN ACCESS EXCLUSIVE MODE"))
        outcome: list[object] = []

        def write() -> None:
            try:
                outcome.append(store.write([plain_event()]))
            except Exception as error:
                outcome.append(error)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        writer.join(POSTGRESQL_LOCK_TIMEOUT_MS / 1000 + 8)
        holder.rollback()  # a write still waiting goes on now, and the test does not hang
        writer.join(30)
        assert len(outcome) == 1
        assert isinstance(outcome[0], OperationalError)
        assert "lock timeout" in str(outcome[0])
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
        assert store.write([plain_event()]) == 1
    finally:
        holder.close()
        engine.dispose()


@pytest.mark.parametrize("isolation_level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_write_another_writer_got_in_the_way_of_is_tried_again_not_spooled(
    make_pg_database: Callable[[], str], tmp_path: Path, caplog: pytest.LogCaptureFixture, isolation_level: str
) -> None:
    """An application's engine in REPEATABLE READ or SERIALIZABLE: a write whose rollup row another writer updated
    after the write's snapshot fails with a serialization failure, which PostgreSQL asks the client to run again.
    It was said as the database being unavailable, and the batch (and every row after it) spooled."""
    url = make_pg_database()
    engine = create_engine(url, isolation_level=isolation_level)
    other = UsageStore(url)  # another process's writer, on the same day's rollup row
    store = UsageStore(engine)
    raced: list[int] = []

    def another_writer_commits(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The write's transaction has its snapshot (its first statement): another writer commits in between.
        if statement == _engine.POSTGRESQL_WRITE_TIMEOUTS and not raced:
            raced.append(other.write([plain_event(project="acme")]))

    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    try:
        assert store.write([plain_event(project="acme")]) == 1  # the day's rollup row is there
        listen(engine, "after_cursor_execute", another_writer_commits)
        with caplog.at_level(logging.WARNING, logger="autogen_reliability"):
            recorder.record(plain_event(project="acme"))
            assert recorder.flush(30)
        assert raced == [1]
        assert recorder.stats == {"written": 1, "spooled": 0, "replayed": 0, "failed_writes": 0, "refused": 0}
        assert "unavailable" not in caplog.text
        assert store.count() == 3
        assert store.report("acme").totals.attempts == 3  # the rollup counts each row once
        with engine.connect() as connection:  # back in the pool at the application's level
            assert connection.exec_driver_sql("SHOW transaction_isolation").scalar() == isolation_level.lower()
    finally:
        recorder.close()
        other.close()
        engine.dispose()


@pytest.mark.parametrize("isolation_level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_retention_through_an_engine_in_repeatable_read_sums_what_another_writer_added_meanwhile(
    make_pg_database: Callable[[], str], isolation_level: str
) -> None:
    """Retention sums a day again after locking its rollup rows: a writer that added to one after the batch's
    snapshot failed the deletion (a serialization failure raised to the caller), through such an engine."""
    url = make_pg_database()
    engine = create_engine(url, isolation_level=isolation_level)
    other = UsageStore(url)
    store = UsageStore(engine)
    day = datetime(2025, 5, 1, tzinfo=UTC)
    raced: list[int] = []

    def another_writer_commits(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("SELECT ar_usage_records.id") and not raced:
            raced.append(other.write([plain_event(project="acme", started_at=day + timedelta(hours=18))]))

    try:
        store.write([plain_event(project="acme", started_at=day + timedelta(hours=hour)) for hour in (1, 12)])
        listen(engine, "after_cursor_execute", another_writer_commits)
        assert store.delete_older_than(day + timedelta(hours=6)).records == 1
        assert raced == [1]
        assert store.count() == 2
        assert store.report("acme").totals.attempts == 2
    finally:
        other.close()
        engine.dispose()


def test_an_engine_whose_schema_translate_map_moves_the_ledger_is_refused(store_url: str, tmp_path: Path) -> None:
    """The ledger's bulk writes and migrations name its tables without a schema, which such a map does not
    translate: its first migration failed half-way (DuplicateTable, or UndefinedTable at 0006), and with a ledger
    in both schemas every row was refused for good (its content's foreign key found no record)."""
    moved = create_engine(store_url).execution_options(schema_translate_map={None: "ledger"})
    elsewhere = create_engine(store_url).execution_options(schema_translate_map={"reports": "reports_2025"})
    try:
        for use in (UsageStore, _migrate.upgrade, _migrate.current_revision):
            with pytest.raises(ConfigurationError, match=r"schema_translate_map puts the usage tables in 'ledger'"):
                use(moved)
        with moved.connect() as connection:
            assert inspect(connection).get_table_names() == []  # nothing made
        with UsageStore(elsewhere) as store:  # a map of other schemas' tables leaves ours where they are
            recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
            recorder.record(plain_event(request_content="[]"))
            recorder.close()
            assert recorder.stats["written"] == 1
            assert store.count() == 1
    finally:
        moved.dispose()
        elsewhere.dispose()


def test_an_async_engine_is_refused_naming_the_engine_to_give() -> None:
    # An application on SQLAlchemy's asyncio API has an AsyncEngine at hand: it was refused as if the store took
    # URLs only ("a database URL must be a string such as sqlite:///usage.db, got AsyncEngine").
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    engine = create_async_engine("postgresql+psycopg://app:secret-pw@db.internal/usage")
    for use in (UsageStore, _migrate.upgrade, _migrate.current_revision):
        with pytest.raises(ConfigurationError) as caught:
            use(engine)  # type: ignore[arg-type]
        assert "AsyncEngine" in str(caught.value)
        assert "create_engine" in str(caught.value)
        assert "secret-pw" not in str(caught.value)


def test_a_write_through_an_autocommit_engine_that_fails_half_way_is_counted_once_written_again(
    make_pg_database: Callable[[], str],
) -> None:
    """Through an engine in AUTOCOMMIT each statement of a write committed on its own: a batch whose rows went in
    and whose rollup upsert then failed (its lock timeout, while retention held the day's rollup rows) was spooled,
    and its replay found the rows stored and added nothing: the reports counted one row fewer than the ledger held,
    for good. The write is one transaction now: it leaves nothing, and its replay stores and counts it."""
    url = make_pg_database()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    holder = create_engine(url, poolclass=NullPool).connect()
    try:
        store = UsageStore(engine)
        assert store.write([plain_event(project="acme")]) == 1
        holder.execute(text("SELECT * FROM ar_usage_rollup FOR UPDATE"))  # as retention holds a day's rollup rows
        late = plain_event(project="acme")
        with pytest.raises(Exception, match="lock timeout"):  # the driver's: the rollup's upsert runs on its cursor
            store.write([late])
        holder.rollback()
        assert store.count() == 1  # the failed write left nothing behind
        assert store.write([late]) == 1  # its replay
        assert store.count() == 2
        assert store.report("acme").totals.attempts == 2
        with engine.connect() as connection:
            assert autocommit(connection)  # back in the pool as the application made it
    finally:
        holder.close()
        engine.dispose()


def test_a_write_through_a_sqlite_autocommit_engine_that_fails_half_way_is_counted_once_written_again(
    tmp_path: Path,
) -> None:
    """On SQLite too, each statement of a write through an engine in AUTOCOMMIT committed on its own: a batch whose
    rows went in and whose rollup upsert then failed was spooled, and its replay found the rows stored and added
    nothing to the reports, for good. The write is one transaction now: it leaves nothing, and its replay counts."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", isolation_level="AUTOCOMMIT")
    try:
        store = UsageStore(engine)
        assert store.write([plain_event(project="acme")]) == 1
        with engine.connect() as connection:  # the rollup's upsert fails, after the rows went in
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON ar_usage_rollup BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        late = plain_event(project="acme")
        with pytest.raises(Exception, match="refused"):
            store.write([late])
        with engine.connect() as connection:
            connection.exec_driver_sql("DROP TRIGGER refuse")
        assert store.count() == 1  # the failed write left nothing behind
        assert store.write([late]) == 1  # its replay
        assert (store.count(), store.report("acme").totals.attempts) == (2, 2)
        with engine.connect() as connection:
            assert autocommit(connection)  # back in the pool as the application made it
    finally:
        engine.dispose()


def test_text_no_database_can_hold_is_stored_with_replacement_characters(store: UsageStore) -> None:
    # A lone surrogate (an answer cut inside an emoji) cannot be UTF-8; PostgreSQL refuses NUL. Refused, the
    # row would hold its whole batch in the spool forever.
    clean = full_event()
    poisoned = plain_event(
        error_message="cut \ud83d emoji", agent="a\x00b", tags={"k\x00": "\udfff"}, response_content="x\x00y"
    )
    assert store.write([clean, poisoned]) == 2
    back = {event.event_id: event for event in store.events()}
    assert back[clean.event_id] == clean
    stored = back[poisoned.event_id]
    assert stored.error_message == "cut \ufffd emoji"
    assert stored.agent == "a\ufffdb"
    assert stored.tags == {"k\ufffd": "\ufffd"}
    assert stored.response_content == "x\ufffdy"


def test_a_nul_is_stored_as_a_replacement_character_on_every_backend(store: UsageStore) -> None:
    # SQLite takes NUL where PostgreSQL refuses it: SQLite kept "acme\x00" while events(project=...) refuses a
    # NUL ("the ledger holds none") and "acme\ufffd" matched nothing, so no filter reached the row there.
    event = plain_event(
        project="acme\x00", session="s\x00", model="m\x00", response_model="gpt\x00", tags={"k\x00": "v\x00"}
    )
    assert store.write([event]) == 1
    [stored] = store.events(project="acme\ufffd")
    assert (stored.project, stored.session, stored.model, stored.response_model) == (
        "acme\ufffd",
        "s\ufffd",
        "m\ufffd",
        "gpt\ufffd",
    )
    assert stored.tags == {"k\ufffd": "v\ufffd"}


def test_a_batch_of_thousands_is_one_write(store: UsageStore) -> None:
    events = [plain_event(project=f"p{i % 7}", cost_nanousd=i) for i in range(2500)]
    assert store.write(events) == 2500
    assert store.count() == 2500
    assert sum(event.cost_nanousd or 0 for event in store.events()) == sum(range(2500))


def test_content_rows_only_for_events_with_content(store: UsageStore) -> None:
    with_both = full_event()
    request_only = full_event(response_content=None)
    response_only = full_event(request_content=None, response_content="")
    without = full_event(request_content=None, response_content=None)
    assert store.write([with_both, request_only, response_only, without]) == 4
    assert store.write([with_both]) == 0

    with store.engine.connect() as connection:
        rows = dict(connection.execute(select(UsageContent.event_id, UsageContent.response_content)).all())
    assert rows == {with_both.event_id: "Hello", request_only.event_id: None, response_only.event_id: ""}
    back = {event.event_id: event for event in store.events()}
    assert back[request_only.event_id] == request_only
    assert back[response_only.event_id].response_content == ""
    assert back[without.event_id].request_content is None


def test_deleting_a_record_deletes_its_content(store: UsageStore) -> None:
    event = full_event()
    store.write([event])
    with store.engine.begin() as connection:
        connection.execute(delete(UsageRecord))
    with store.engine.connect() as connection:
        assert connection.execute(select(UsageContent.event_id)).all() == []


def test_a_naive_started_at_is_refused_where_the_event_is_made(store: UsageStore) -> None:
    # Refused when the event is made, not in a batch write that would fail (and be spooled) forever.
    with pytest.raises(ValueError, match="must be timezone-aware"):
        plain_event(started_at=datetime(2025, 1, 1, 12, 0))
    store.write([plain_event(started_at=datetime(2025, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=9))))])
    (stored,) = store.events()
    assert stored.day.isoformat() == "2025-01-01"  # 12:00 at UTC+9 is 03:00 UTC


@pytest.mark.parametrize(
    "offset",
    [timedelta(microseconds=1), timedelta(seconds=561), timedelta(hours=20), -timedelta(hours=23, minutes=59)],
    ids=["a-microsecond", "seconds", "plus-20h", "minus-23h59"],
)
def test_a_started_at_at_any_offset_python_has_is_stored(store: UsageStore, offset: timedelta) -> None:
    # PostgreSQL refused offsets it has not (a fraction of a second, beyond 15:59), which COPY sent as given:
    # a DataError, and the event went to the recorder's refused file on PostgreSQL only.
    started = datetime(2025, 5, 2, 0, 0, tzinfo=timezone(offset))
    assert store.write([plain_event(started_at=started)]) == 1
    (stored,) = store.events()
    assert stored.started_at == started
    assert stored.started_at.utcoffset() == timedelta(0)
    assert stored.day == started.astimezone(UTC).date()


def test_events_filters_and_order(store: UsageStore) -> None:
    call = uuid.uuid4()
    base = datetime(2025, 5, 1, tzinfo=UTC)
    attempts = [plain_event(call_id=call, attempt=n, started_at=base + timedelta(seconds=n)) for n in (3, 1, 2)]
    others = [
        plain_event(project="other", started_at=base - timedelta(days=1)),
        plain_event(project="acme", started_at=base + timedelta(days=1)),
    ]
    store.write([*attempts, *others])

    assert [e.attempt for e in store.events(call_id=call)] == [1, 2, 3]
    assert [e.project for e in store.events(project="acme")] == ["acme"]
    assert len(store.events(since=base)) == 4
    assert len(store.events(since=base, until=base + timedelta(seconds=2))) == 1  # until is exclusive
    # A bound in another time zone is the same instant.
    assert len(store.events(until=base.astimezone(timezone(timedelta(hours=-5))))) == 1
    assert [e.started_at for e in store.events()] == sorted(e.started_at for e in [*attempts, *others])


def test_events_takes_a_call_id_as_a_uuid_or_its_text_alike_on_every_backend(store: UsageStore) -> None:
    call = uuid.uuid4()
    store.write([plain_event(call_id=call, attempt=n) for n in (1, 2)] + [plain_event()])
    # Its text, as an export or a log shows it: SQLite's driver used to fail on it (StatementError, 'str' object
    # has no attribute 'hex') while PostgreSQL's took it.
    for given in (call, str(call), call.hex):
        assert [e.attempt for e in store.events(call_id=given)] == [1, 2]
    assert store.events(call_id=str(uuid.uuid4())) == []
    # Anything else matched nothing on SQLite and failed in PostgreSQL (uuid = integer): refused alike.
    for bad in (5, "ticket-4711", b"\x00" * 16):
        with pytest.raises(ConfigurationError, match=r"call_id must be a uuid\.UUID or its text"):
            store.events(call_id=bad)  # type: ignore[arg-type]


def test_events_takes_a_date_as_its_midnight_utc(store: UsageStore) -> None:
    late_on_the_30th = datetime(2025, 4, 30, 23, 59, 59, tzinfo=UTC)
    may_day = [datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 5, 1, 23, 59, 59, 999999, tzinfo=UTC)]
    store.write([plain_event(started_at=t) for t in (late_on_the_30th, *may_day, datetime(2025, 5, 2, tzinfo=UTC))])
    assert [e.started_at for e in store.events(since=date(2025, 5, 1), until=date(2025, 5, 2))] == may_day
    assert [e.started_at for e in store.events(until=date(2025, 5, 1))] == [late_on_the_30th]


@pytest.mark.parametrize("bound", ["since", "until"])
def test_events_refuses_a_naive_datetime_saying_what_to_pass(store: UsageStore, bound: str) -> None:
    naive: dict[str, Any] = {bound: datetime(2025, 5, 1, 12, 0)}
    with pytest.raises(ConfigurationError, match=f"{bound} must be timezone-aware.* or a date") as caught:
        store.events(**naive)  # used to raise SQLAlchemy's StatementError
    assert "2025-05-01T12:00:00" in str(caught.value)
    text_bound: dict[str, Any] = {bound: "2025-05-01"}
    with pytest.raises(ConfigurationError, match=f"{bound} must be a timezone-aware datetime or a date, got str"):
        store.events(**text_bound)


# In range as written, outside the years 1 to 9999 once in UTC.
PAST_9999 = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
BEFORE_1 = datetime(1, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=5)))


@pytest.mark.parametrize("bound", [PAST_9999, BEFORE_1], ids=["past-9999", "before-1"])
def test_a_bound_outside_the_datetime_range_once_in_utc_is_refused_by_every_reader(
    store: UsageStore, bound: datetime
) -> None:
    store.write([plain_event()])
    refused = r"since .* is outside the years 1 to 9999 once in UTC"
    readers: list[Callable[[], object]] = [
        lambda: store.events(since=bound),
        lambda: store.iter_events(since=bound),  # when it is called, not when it is iterated
        lambda: store.sessions(since=bound),
        lambda: store.report(since=bound),
    ]
    for read in readers:
        with pytest.raises(ConfigurationError, match=refused):  # used to raise OverflowError / StatementError
            read()
    with pytest.raises(ConfigurationError, match=r"cutoff .* is outside the years 1 to 9999 once in UTC"):
        store.delete_older_than(bound, dry_run=True)


def test_until_before_since_is_refused_by_every_reader_as_report_refuses_it(store: UsageStore) -> None:
    store.write([plain_event(session="s", started_at=datetime(2025, 5, 2, tzinfo=UTC))])
    swapped: dict[str, Any] = {"since": date(2025, 5, 3), "until": date(2025, 5, 1)}
    readers: list[Callable[[], object]] = [
        lambda: store.report(**swapped),
        lambda: store.events(**swapped),  # used to return [] as if nothing had happened in those days
        lambda: store.iter_events(**swapped),
        lambda: store.sessions(**swapped),
    ]
    for read in readers:
        with pytest.raises(ConfigurationError, match=r"until \(2025-05-01T00:00:00\+00:00\) is before since"):
            read()
    # One instant is an empty period, not a mistake.
    assert store.events(since=date(2025, 5, 2), until=date(2025, 5, 2)) == []
    assert store.sessions(since=date(2025, 5, 2), until=date(2025, 5, 2)) == []


def test_delete_older_than_gives_its_cutoff_in_utc(store: UsageStore) -> None:
    cutoff = datetime(2025, 5, 1, 5, 0, tzinfo=timezone(timedelta(hours=5)))
    result = store.delete_older_than(cutoff, dry_run=True)
    assert result.cutoff == cutoff
    assert result.cutoff.utcoffset() == timedelta(0)  # as RetentionResult says; it was the +05:00 given


def test_written_from_a_background_thread(store_url: str) -> None:
    store = UsageStore(store_url)  # made on this thread, used from another, as the recorder does
    errors: list[BaseException] = []
    events = [plain_event() for _ in range(10)]

    def writer() -> None:
        try:
            store.write(events)
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()
    assert errors == []
    assert store.count() == 10
    store.close()


def test_in_memory_sqlite_read_by_other_threads_while_the_recorder_writes_loses_and_spools_nothing(
    tmp_path: Path,
) -> None:
    # The one connection of sqlite:// was used by every thread at once: a read's BEGIN or its rollback on return
    # fell inside the recorder's write ("cannot start a transaction within a transaction"), spooling its batches
    # (2,000 recorded: 260 stored, 1,740 spooled), and a rollback could undo a batch the recorder counted written.
    store = UsageStore("sqlite://")
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", batch_size=20, close_sink=False)
    done = threading.Event()
    errors: list[Exception] = []

    def read() -> None:
        while not done.is_set():
            try:
                store.count()
                store.report()
            except Exception as error:  # reported by the assertion below
                errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for _ in range(500):
        recorder.record(plain_event())
    recorder.flush()
    done.set()
    for reader in readers:
        reader.join()
    recorder.close()
    assert (store.count(), recorder.spooled, recorder.stats["failed_writes"], errors) == (500, 0, 0, [])
    store.close()


def test_in_memory_sqlite_is_one_database_for_all_threads() -> None:
    store = UsageStore("sqlite://")
    thread = threading.Thread(target=store.write, args=([plain_event()],))
    thread.start()
    thread.join()
    assert store.count() == 1
    store.close()


@pytest.mark.parametrize(
    "engine_options",
    [{}, {"poolclass": NullPool}],
    ids=["default pool, a connection per thread", "NullPool"],
)
def test_an_engine_of_a_database_in_memory_per_connection_is_refused(engine_options: dict[str, Any]) -> None:
    # SQLAlchemy gives sqlite:// a connection, so a database, per thread: the store made its tables in the
    # opening thread's, and the recorder's thread wrote to an empty one ("no such table"), spooling every row.
    engine = create_engine("sqlite://", **engine_options)
    with pytest.raises(ConfigurationError, match=r"in memory.*poolclass=StaticPool"):
        UsageStore(engine)
    engine.dispose()


def test_an_engine_of_one_database_in_memory_records_from_the_recorder_thread(tmp_path: Path) -> None:
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    store = UsageStore(engine)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    for _ in range(3):
        recorder.record(plain_event())
    recorder.close()
    assert (store.count(), recorder.spooled) == (3, 0)
    engine.dispose()


# --- connections ---------------------------------------------------------------------------------


def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as store, store.engine.connect() as connection:
        pragma = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
        }
    assert pragma == {"journal_mode": "wal", "busy_timeout": 2000, "synchronous": 1, "foreign_keys": 1}


def test_a_sqlite_url_s_own_timeout_wins_over_the_busy_timeout(tmp_path: Path) -> None:
    # sqlite3's timeout= in the URL was accepted, then overridden by the store's PRAGMA busy_timeout=2000: a ledger
    # on a busy file spooled after 2 s whatever the URL said. As a libpq parameter does on PostgreSQL, it wins now.
    for query, busy_timeout in (("", 2000), ("?timeout=30", 30_000), ("?timeout=0.5", 500)):
        with (
            UsageStore(f"sqlite:///{tmp_path / 'usage.db'}{query}") as store,
            store.engine.connect() as connection,
        ):
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == busy_timeout


@pytest.mark.parametrize("named", ["sqlite:///{path}", "sqlite:///file:{path}?uri=true"])
def test_a_sqlite_file_deleted_under_the_store_gets_no_more_rows_until_reopen_makes_it_again(
    named: str, tmp_path: Path
) -> None:
    path = tmp_path / "usage.db"
    store = UsageStore(named.format(path=path))
    store.write([plain_event()])
    for name in ("usage.db", "usage.db-wal", "usage.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    kept = plain_event()
    with pytest.raises(OperationalError, match="no such table"):  # not into the deleted file, which no one reads
        store.write([kept])
    store.reopen()
    assert store.write([kept]) == 1
    store.close()
    with UsageStore(f"sqlite:///{path}") as reopened:
        assert [event.event_id for event in reopened.events()] == [kept.event_id]


@pytest.mark.parametrize("create", [True, False])
def test_a_relative_sqlite_path_keeps_its_file_after_the_process_changes_directory(
    create: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default URL (sqlite:///autogen_reliability.db) is relative; a daemon or a tool may chdir later.
    # SQLAlchemy opens the file it named when the engine was made, so the rows go on going there.
    (tmp_path / "app").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    UsageStore("sqlite:///usage.db").close()
    store = UsageStore("sqlite:///usage.db", create=create)
    store.write([plain_event()])
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert store.write([plain_event(), plain_event()]) == 2
    store.reopen()  # what the recorder does after a failed write
    assert store.write([plain_event()]) == 1
    assert store.count() == 4
    store.close()
    assert os.listdir(tmp_path / "elsewhere") == []
    with UsageStore(f"sqlite:///{tmp_path / 'app' / 'usage.db'}", create=False) as opened:
        assert opened.count() == 4


def test_ping_and_close(store_url: str) -> None:
    store = UsageStore(store_url)
    store.ping()
    store.close()
    store.close()  # twice is fine


def test_an_engine_passed_in_stays_open(store_url: str) -> None:
    engine = create_engine(store_url)
    store = UsageStore(engine)
    store.write([plain_event()])
    store.close()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM ar_usage_records")).scalar() == 1
    engine.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_through_connections_of_its_own_on_an_engine_passed_in(store_url: str) -> None:
    # A store on the application's engine, then a fork (gunicorn --preload, a multiprocessing pool): the child's
    # rows went through the connection the parent's pool kept, a PostgreSQL socket or a SQLite handle that two
    # processes then used at once. The store's own engines started the child with an empty pool; this one now too.
    engine = create_engine(store_url)
    assert _a_row_then_a_forked_childs(engine) == 2  # before: the child exited 1, on the parent's connection
    engine.dispose()


def _a_row_then_a_forked_childs(engine: Engine) -> int:
    """A store on ``engine`` writes a row, then a forked child one, which must check out a connection it opened
    itself (or it exits 1); the rows stored."""
    opened_by: list[int] = []  # the process that opened each connection checked out, in order
    listen(engine, "connect", lambda _dbapi, record: record.info.setdefault("pid", os.getpid()))
    listen(engine, "checkout", lambda _dbapi, record, _proxy: opened_by.append(record.info["pid"]))
    store = UsageStore(engine)
    store.write([plain_event()])

    def work() -> None:
        store.write([plain_event()])
        raise SystemExit(0 if opened_by[-1] == os.getpid() else 1)

    assert fork_child(work) == 0
    try:
        return store.count()
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_through_connections_of_its_own_on_an_engine_whose_creator_opens_a_file(
    tmp_path: Path,
) -> None:
    # create_engine("sqlite://", creator=...) is SQLAlchemy's way to open SQLite as one likes: the URL says memory,
    # the connections open a file. Its pool was left as it was in the child, which wrote through the parent's handle.
    path = tmp_path / "app.db"
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(path, check_same_thread=False))
    assert _a_row_then_a_forked_childs(engine) == 2  # before: the child exited 1, on the parent's connection
    engine.dispose()


def test_postgresql_connections_notice_a_vanished_server(make_pg_database: Callable[[], str]) -> None:
    # TCP keepalives and a user timeout: a server gone without closing the connection fails a write in ~25 s
    # (its batch is spooled) instead of after the kernel's 15 minutes of retransmissions.
    url = make_pg_database()
    for query, idle in (("", "10"), ("?keepalives_idle=60", "60")):  # the URL's own setting wins
        with UsageStore(url + query) as store, store.engine.connect() as connection:
            parameters = connection.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
        assert parameters["keepalives_idle"] == idle
        assert parameters["tcp_user_timeout"] == "25000"
        assert parameters["connect_timeout"] == "10"


def _lose_prepared_statements(store: UsageStore) -> None:
    """What a pooler in transaction mode (PgBouncer) does: the next transaction runs on a server connection that
    never saw the statements psycopg prepared. Through libpq, so that psycopg does not know they are gone."""
    with store.engine.connect() as connection:
        connection.connection.driver_connection.pgconn.exec_(b"DEALLOCATE ALL")  # type: ignore[union-attr]


def test_postgresql_connections_stop_preparing_statements_once_the_server_loses_them(
    make_pg_database: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    """Behind PgBouncer in transaction pooling mode, psycopg's prepared statements (after 5 runs of a query) are
    lost between transactions: every write failed with 'prepared statement "_pg3_0" does not exist', and the
    recorder's rows stayed in the spool for as long as the process ran. Once the server lost one, the store's
    connections prepare no statement: the write that met it fails (its batch is spooled), the next ones work."""
    url = make_pg_database()
    written = 0
    with UsageStore(url) as store:
        for _ in range(8):  # psycopg prepares a query on its 5th run
            written += store.write([plain_event()])
        _lose_prepared_statements(store)
        with pytest.raises(ProgrammingError, match=r'prepared statement "_pg3_[0-9]+" does not exist'):
            store.write([plain_event()])
        for _ in range(3):
            for _ in range(8):  # writes commit: psycopg keeps what it prepared (a rollback would forget it)
                written += store.write([plain_event()])
            _lose_prepared_statements(store)
        assert written == store.count() == 8 + 3 * 8
    assert "no longer prepare statements" in caplog.text


def test_prepare_threshold_in_a_postgresql_url_is_psycopgs_setting(make_pg_database: Callable[[], str]) -> None:
    # psycopg's own advice behind PgBouncer in transaction mode; given in the URL, it reached psycopg as the
    # text "none" and every query failed with TypeError "'>=' not supported between instances of 'int' and 'str'".
    url = make_pg_database()
    thresholds = {"?prepare_threshold=none": None, "?prepare_threshold=None": None, "?prepare_threshold=2": 2}
    for query, threshold in thresholds.items():
        with UsageStore(url + query) as store:
            with store.engine.connect() as connection:
                assert connection.connection.driver_connection.prepare_threshold == threshold  # type: ignore[union-attr]
            before = store.count()
            for _ in range(8):
                store.write([plain_event()])
                store.report()
            assert store.count() == before + 8


@pytest.mark.parametrize("datestyle", ["SQL, DMY", "German, DMY", "Postgres, MDY"])
def test_a_postgresql_database_with_another_datestyle_reads_its_times_back(
    make_pg_database: Callable[[], str], tmp_path: Path, datestyle: str
) -> None:
    """psycopg 3 reads a timestamp only as DateStyle ISO writes it; a server's or database's own (SQL, DMY is
    common in Europe) made every read of started_at fail with NotImplementedError, a traceback in the CLI."""
    url = make_pg_database()
    with create_engine(url, poolclass=NullPool).connect() as connection:
        database = connection.exec_driver_sql("SELECT current_database()").scalar()
        connection.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET datestyle = '{datestyle}'")
        connection.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone = 'America/New_York'")
        connection.commit()
    written = [plain_event(project="p", session="s", started_at=T0 + timedelta(hours=hour)) for hour in (0, 3, 30)]
    with UsageStore(url) as store:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW timezone").scalar() == "America/New_York"
        assert store.write(written) == 3
        assert store.events() == written
        assert list(store.iter_events()) == written
        (session,) = store.sessions("p")
        assert (session.first_seen, session.last_seen) == (T0.astimezone(UTC), written[-1].started_at)
        assert store.delete_older_than(T0 + timedelta(hours=1), dry_run=True).newest == T0
        out = tmp_path / "p.jsonl"
        assert cli_main(["export", "--project", "p", "--db", url, "--out", str(out)]) == 0
        assert [json.loads(line)["started_at"] for line in out.read_text().splitlines()] == [
            event.started_at.astimezone(UTC).isoformat() for event in written
        ]


def test_ping_raises_when_the_server_is_gone(make_pg_database: Callable[[], str], pg_admin_url: str) -> None:
    url = make_pg_database()
    store = UsageStore(url)
    name = make_url(url).database
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    drop_pg_database(admin, str(name))
    admin.dispose()
    with pytest.raises(OperationalError):
        store.ping()
    with pytest.raises(OperationalError):
        store.write([plain_event()])
    store.close()


NEVER_WORKING_URLS = [  # (URL, what the message says)
    ("not a url", "malformed database URL"),
    ("mysql://user:secret-pw@localhost/db", "supports SQLite and PostgreSQL databases, not 'mysql'"),
    ("foo://bar", "supports SQLite and PostgreSQL databases, not 'foo'"),
    # Heroku's, Render's and libpq's scheme, which SQLAlchemy no longer reads: "supports PostgreSQL, not 'postgres'".
    (
        "postgres://user:secret-pw@db.internal:5432/usage",
        "a SQLAlchemy URL names PostgreSQL postgresql://, not postgres://: write postgresql+psycopg://user:***@",
    ),
    ("postgres+psycopg2://user:secret-pw@host/db", "not postgres://: write postgresql+psycopg2://user:***@host/db"),
    ("sqlite+nosuchdriver:///usage.db", "no SQLAlchemy driver 'sqlite+nosuchdriver'"),
    ("postgresql+psycopg://user:secret-pw@host:abc/db", "malformed database URL: its port is not a number"),
    ("postgresql+psycopg://user:secret-pw@host:99999/db", "user:***@host:99999/db is not between 1 and 65535"),
    ("postgresql+psycopg://user:secret-pw@host:0/db", "is not between 1 and 65535"),
    ("postgresql+psycopg://user@host:0/db?password=secret-pw", "user@host:0/db?password=*** is not between"),
    # SQLAlchemy ends the password at its first @: the rest of it would be shown as the host.
    ("postgresql+psycopg://user:s3cret@secret-pw@host/db", "the password contains '@'; URL-encode it as %40"),
    ("postgresql+psycopg://user:s3cret@secret-pw@host:99999/db", "the password contains '@'"),
    (
        "postgresql+pg8000://user:secret-pw@host/db",
        "'postgresql+pg8000' is not installed (No module named 'pg8000'); "
        "pip install 'autogen-reliability[postgresql]' installs psycopg 3, for postgresql+psycopg://",
    ),
    ("postgresql+asyncpg://user:secret-pw@host/db", "is an asyncio driver; the usage store writes from a thread"),
    (
        "postgresql+psycopg://user:secret-pw@host/db?prepare_threshold=sometimes",
        "prepare_threshold in the database URL must be a whole number of runs, or none (never prepare), "
        "not 'sometimes'",
    ),
    ("postgresql+psycopg://user:secret-pw@host/db?prepare_threshold=-1", "or none (never prepare), not '-1'"),
    ("postgresql+psycopg://u:secret-pw@h/db?prepare_threshold=1&prepare_threshold=2", "or none (never prepare), not"),
    ("postgresql+psycopg_async://user:secret-pw@host/db", "needs a synchronous one, such as postgresql+psycopg://"),
    ("sqlite:////no/such/dir/usage.db", "the directory of the SQLite database /no/such/dir/usage.db does not exist"),
    # Two slashes: SQLAlchemy reads "usage.db" as a host, and SQLite's driver refused it at the first connection.
    ("sqlite://usage.db", "a SQLite URL has no host (sqlite://usage.db names one): write sqlite:///usage.db"),
    ("sqlite://data/usage.db", "write sqlite:///data/usage.db (three slashes: a path from the working directory)"),
    ("sqlite://user:secret-pw@host/usage.db", "(sqlite://user:***@host/usage.db names one): write sqlite:///"),
    # SQLAlchemy hands SQLite the path as written (made absolute): a ~ in a URL is a directory named ~.
    (
        "sqlite:///~/usage.db",
        "the directory of the SQLite database ~/usage.db does not exist: ~ "
        f"(a URL's ~ is not expanded: write the full path, {Path.home() / 'usage.db'})",
    ),
    ("sqlite:///" + "x" * 300 + ".db", "the SQLite database xxx"),
    ("sqlite:///" + "x" * 300 + "/usage.db", ": File name too long"),
    # SQLite's own parameters, which the driver would drop (or SQLite take for part of the file's name).
    (
        "sqlite:///usage.db?mode=ro",
        "SQLite reads 'mode' only from a file: URI with uri=true, such as sqlite:///file:usage.db?mode=ro&uri=true",
    ),
    ("sqlite:///usage.db?mode=ro&uri=true", "such as sqlite:///file:usage.db?mode=ro&uri=true"),
    (
        "sqlite:///usage.db?timeout=5&immutable=1&cache=shared",
        "SQLite reads 'immutable', 'cache' only from a file: URI",
    ),
    ("sqlite://?mode=memory", "such as sqlite:///file::memory:?mode=memory&uri=true"),
    # The suggested URL shows a secret parameter's value as a URL is shown: masked.
    (
        "sqlite:///usage.db?password=secret-pw&mode=ro",
        "SQLite reads 'password', 'mode' only from a file: URI with uri=true, such as "
        "sqlite:///file:usage.db?password=***&mode=ro&uri=true",
    ),
    ("sqlite:///usage.db?key=secret-pw", "such as sqlite:///file:usage.db?key=***&uri=true"),
]


@pytest.mark.parametrize(("url", "message"), NEVER_WORKING_URLS)
def test_urls_that_can_never_work_fail_at_construction(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        UsageStore(url)
    assert message in str(caught.value)
    assert "secret-pw" not in str(caught.value)
    assert caught.value.__cause__ is None or "secret-pw" not in str(caught.value.__cause__)


def test_a_sqlite_path_through_a_file_or_to_a_directory_fails_at_construction(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigurationError, match=r"usage\.db is not a directory: "):
        UsageStore(f"sqlite:///{tmp_path / 'a-file' / 'usage.db'}")
    with pytest.raises(ConfigurationError) as caught:
        UsageStore(f"sqlite:///{tmp_path}")
    assert f"the SQLite database {tmp_path} is a directory, not a file" in str(caught.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_urls_are_accepted(url: str) -> None:
    with UsageStore(url) as store:
        store.write([plain_event()])
        assert store.count() == 1


def test_create_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="create must be True or False, got 'no'"):
        UsageStore(f"sqlite:///{tmp_path / 'usage.db'}", create="no")  # type: ignore[arg-type]
    assert not (tmp_path / "usage.db").exists()


def test_a_missing_driver_names_the_extra_to_install(tmp_path: Path) -> None:
    # A process without psycopg, as after `pip install autogen-reliability` without the extra.
    probe = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from autogen_reliability import ConfigurationError, configure\n"
        "from autogen_reliability.storage import UsageStore\n"
        "for attempt in (lambda: configure(db_url=sys.argv[1]), lambda: UsageStore(sys.argv[1])):\n"
        "    try:\n"
        "        attempt()\n"
        "    except ConfigurationError as error:\n"
        "        print(error)\n"
    )
    for url in ("postgresql+psycopg://app:secret-pw@db/usage", "postgresql://app:secret-pw@db/usage"):
        done = subprocess.run(
            [sys.executable, "-c", probe, url], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 2, done.stdout
        for line in lines:
            assert "is not installed" in line
            assert "pip install 'autogen-reliability[postgresql]'" in line
            assert "secret-pw" not in line


# --- schema and migrations -----------------------------------------------------------------------


def test_a_new_empty_database_is_brought_to_head(store_url: str) -> None:
    assert _migrate.current_revision(store_url) is None
    with UsageStore(store_url) as store:
        assert _migrate.current_revision(store.engine) == _migrate.head_revision()
        tables = set(inspect(store.engine).get_table_names())
    assert {"ar_usage_records", "ar_usage_content", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # an application's own alembic table stays untouched


def test_the_ledger_shares_a_database_with_an_application(store_url: str) -> None:
    engine = create_engine(store_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        connection.exec_driver_sql("INSERT INTO alembic_version VALUES ('app0042')")
        connection.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    with UsageStore(store_url) as store:
        store.write([plain_event()])
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "app0042"
        migration = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "include_name": include_name}
        )
        assert compare_metadata(migration, Base.metadata) == []  # "orders" is not ours: not proposed for removal
    engine.dispose()


def test_models_and_migrations_agree(store_url: str) -> None:
    _migrate.upgrade(store_url)
    engine = create_engine(store_url, poolclass=NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "include_name": include_name, "compare_type": True}
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_downgrade_to_base_and_up_again(store_url: str) -> None:
    _migrate.upgrade(store_url)
    engine = create_engine(store_url, poolclass=NullPool)
    with engine.connect() as connection, _migrate.migration_transaction(connection):
        command.downgrade(_migrate.alembic_config(connection), "base")
    assert _migrate.current_revision(engine) is None
    assert [name for name in inspect(engine).get_table_names() if name != VERSION_TABLE] == []
    _migrate.upgrade(engine)
    assert _migrate.current_revision(engine) == _migrate.head_revision()
    engine.dispose()


def test_wasted_tokens_past_32_bits_are_summed_exactly_by_the_upgrade_retention_and_reports(store_url: str) -> None:
    # Each count fits its 32-bit column, their sum does not. On PostgreSQL, 0005's backfill of the rollup (and
    # retention's rebuild of a day, and a report by outcome) added them as 32-bit integers: "integer out of
    # range", so a ledger at 0004 holding such a row could not be upgraded at all.
    day = datetime(2026, 1, 1, 12, tzinfo=UTC)
    wasted = full_event(
        started_at=day, outcome="error", prompt_tokens=2_000_000_000, completion_tokens=500_000_000, cost_nanousd=7
    )
    with UsageStore(store_url) as store:
        engine = store.engine
        store.write([wasted, full_event(started_at=day - timedelta(hours=1), outcome="ok", cost_nanousd=5)])
        with engine.connect() as connection, _migrate.migration_transaction(connection):
            command.downgrade(_migrate.alembic_config(connection), "0004")
        _migrate.upgrade(engine)
        waste = {line.outcome: line.tokens for line in store.report().waste}
        assert waste["error"] == 2_500_000_000  # from the rollup the upgrade filled
        assert store.report(group_by=("outcome",)).totals.waste_tokens == 2_500_000_000  # from the rows
        assert store.delete_older_than(day - timedelta(minutes=30)).records == 1  # rebuilds the day's rollup
        assert store.report().totals.waste_tokens == 2_500_000_000


def test_0006_adds_the_one_hour_cache_writes_and_keeps_the_rows_either_way(store_url: str) -> None:
    # A ledger at 0005 with a row in it: the upgrade keeps the row (no 1-hour writes known: NULL), rows written
    # after it keep their count, and the downgrade drops the column and keeps every row.
    with UsageStore(store_url) as store:
        engine = store.engine
        store.write([full_event(event_id=uuid.UUID(int=1), cache_write_1h_tokens=None)])
        with engine.connect() as connection, _migrate.migration_transaction(connection):
            command.downgrade(_migrate.alembic_config(connection), "0005")
        assert "cache_write_1h_tokens" not in {
            column["name"] for column in inspect(engine).get_columns("ar_usage_records")
        }
        assert _migrate.current_revision(engine) == "0005"
        _migrate.upgrade(engine)
        assert _migrate.current_revision(engine) == _migrate.head_revision()
        store.write([full_event(event_id=uuid.UUID(int=2))])
        written = {event.event_id.int: event for event in store.events()}
        assert {key: (event.cache_write_tokens, event.cache_write_1h_tokens) for key, event in written.items()} == {
            1: (7, None),
            2: (7, 5),
        }
        with engine.connect() as connection, _migrate.migration_transaction(connection):
            command.downgrade(_migrate.alembic_config(connection), "0005")
        with engine.connect() as connection:
            kept = connection.execute(text("SELECT cache_write_tokens, prompt_tokens FROM ar_usage_records")).all()
        assert sorted(kept) == [(7, 1200), (7, 1200)]
        _migrate.upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "include_name": include_name, "compare_type": True}
            )
            assert compare_metadata(context, Base.metadata) == []


def test_the_scripts_are_named_after_their_revisions_in_one_growing_line() -> None:
    # What lets a store at head be opened without loading alembic (head_revision reads the file names).
    scripts = list(reversed(list(_migrate._script_directory(_migrate.script_location()).walk_revisions())))
    assert [Path(script.path).name.split("_", 1)[0] for script in scripts] == [script.revision for script in scripts]
    assert [script.down_revision for script in scripts] == [None, *[script.revision for script in scripts[:-1]]]
    assert [script.revision for script in scripts] == sorted(script.revision for script in scripts)
    assert _migrate.head_revision() == scripts[-1].revision


def test_current_revision_reads_the_version_table_as_alembic_does(store_url: str) -> None:
    engine = create_engine(store_url, poolclass=NullPool)

    def both() -> tuple[str | None, str | None]:
        with engine.connect() as connection:
            alembic = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return _migrate.current_revision(connection), alembic.get_current_revision()

    assert both() == (None, None)  # no version table
    _migrate.upgrade(engine)
    assert both() == (HEAD, HEAD)
    with engine.begin() as connection:
        connection.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('0001')"))
    with pytest.raises(RuntimeError, match="more than one revision"), engine.connect() as connection:
        _migrate.current_revision(connection)
    with engine.begin() as connection:
        connection.execute(text(f"DELETE FROM {VERSION_TABLE}"))
    assert both() == (None, None)  # an empty version table
    engine.dispose()


def test_a_store_at_head_opens_without_loading_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    _migrate.upgrade(url)
    probe = (
        "import sys; from autogen_reliability.storage import UsageStore; "
        "store = UsageStore(sys.argv[1]); store.close(); print(sorted(m for m in sys.modules if 'alembic' in m))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe, url], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


def test_concurrent_stores_on_a_new_database_all_open(store_url: str) -> None:
    # Application workers starting together: one creates the tables, the others wait and find them.
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def open_store() -> None:
        barrier.wait()
        step = "opening"
        try:
            with UsageStore(store_url) as store:
                step = "writing"
                store.write([plain_event()])
                step = "closing"
            outcomes.append("ok")
        except Exception:  # reported by the assertion below, with where it happened
            outcomes.append(f"failed while {step}:\n{traceback.format_exc()}")

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["ok"] * 6
    assert _migrate.current_revision(store_url) == _migrate.head_revision()


_OPEN_WITH_AN_AUTOCOMMIT_ENGINE = """
import sys
from sqlalchemy import create_engine
from autogen_reliability.storage import UsageStore
engine = create_engine(sys.argv[1], isolation_level="AUTOCOMMIT")
UsageStore(engine).close()
engine.dispose()
"""


def test_processes_opening_a_new_database_with_autocommit_engines_all_open(
    store_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # An application's own engine may be in AUTOCOMMIT (the store writes through one). Workers starting
    # together each migrate through theirs: the migration must still be one transaction under the lock.
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    postgresql = make_url(store_url).get_backend_name() == "postgresql"
    make: Callable[[], str] | None = request.getfixturevalue("make_pg_database") if postgresql else None
    for round_ in range(3):  # three workers on a new database, three times: once lucky is not enough
        url = store_url if round_ == 0 else make() if make else f"sqlite:///{tmp_path / f'usage-{round_}.db'}"
        workers = [
            subprocess.Popen(  # this interpreter, our own library
                [sys.executable, "-c", _OPEN_WITH_AN_AUTOCOMMIT_ENGINE, url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment,
            )
            for _ in range(3)
        ]
        failed = [err for worker in workers if (err := worker.communicate(timeout=120)[1]) and worker.returncode]
        assert failed == []
        assert _migrate.current_revision(url) == _migrate.head_revision()


def test_0007_rolls_up_the_cache_writes_of_the_stored_rows_and_keeps_them_either_way(store_url: str) -> None:
    # A ledger at 0006 with rows in it: reports had no cache writes (the rollup had no column for them). The
    # upgrade fills the new column from the rows, reports from the rollup and from the rows agree, and the
    # downgrade drops the column and keeps every row with its cache writes.
    day = datetime(2026, 1, 1, 12, tzinfo=UTC)
    with UsageStore(store_url) as store:
        engine = store.engine
        store.write(
            [
                full_event(event_id=uuid.UUID(int=1), started_at=day, cache_write_tokens=300, cost_nanousd=5),
                full_event(
                    event_id=uuid.UUID(int=2), started_at=day, cache_write_tokens=None, model="gpt-4o", cost_nanousd=5
                ),
            ]
        )
        with engine.connect() as connection, _migrate.migration_transaction(connection):
            command.downgrade(_migrate.alembic_config(connection), "0006")
        assert "cache_write_tokens" not in {column["name"] for column in inspect(engine).get_columns("ar_usage_rollup")}
        _migrate.upgrade(engine)
        assert _migrate.current_revision(engine) == _migrate.head_revision()
        store.write([full_event(event_id=uuid.UUID(int=3), started_at=day + timedelta(hours=1), cost_nanousd=5)])
        assert store.report().totals.cache_write_tokens == 307  # from the rollup
        assert store.report(group_by=("outcome",)).totals.cache_write_tokens == 307  # from the rows
        by_model = {group.key["model"]: group.usage.cache_write_tokens for group in store.report().by_model}
        assert by_model == {"gpt-4o-mini": 307, "gpt-4o": 0}
        with engine.connect() as connection, _migrate.migration_transaction(connection):
            command.downgrade(_migrate.alembic_config(connection), "0006")
        with engine.connect() as connection:
            kept = connection.execute(text("SELECT cache_write_tokens FROM ar_usage_records")).scalars().all()
            attempts = connection.execute(text("SELECT sum(attempts) FROM ar_usage_rollup")).scalar_one()
        assert sorted(kept, key=lambda count: count or 0) == [None, 7, 300]
        assert attempts == 3
        _migrate.upgrade(engine)
        assert store.report().totals.cache_write_tokens == 307
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "include_name": include_name, "compare_type": True}
            )
            assert compare_metadata(context, Base.metadata) == []


def test_a_migration_through_an_autocommit_engine_that_fails_leaves_nothing_half_done(store_url: str) -> None:
    # Revision 0004 creates ar_usage_rollup; a table of that name already there makes it fail half-way.
    engine = create_engine(store_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE ar_usage_rollup (x INTEGER)")
    autocommit = create_engine(store_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with pytest.raises(Exception, match="ar_usage_rollup"):
        _migrate.upgrade(autocommit)
    # Rolled back whole, as through any other engine: no revision, no tables of the revisions before.
    assert _migrate.current_revision(engine) is None
    assert sorted(inspect(engine).get_table_names()) == ["ar_usage_rollup"]
    autocommit.dispose()
    engine.dispose()


def test_threads_creating_separate_databases_at_once_all_migrate(tmp_path: Path) -> None:
    # Two recorders of one process, each with its own ledger, starting together: alembic keeps the
    # running migration in module globals (alembic.context, alembic.op), so two at once in one
    # process broke each other ("KeyError: 'script'") unless the library lets them take turns.
    rounds, width = 8, 4
    failures: list[str] = []
    for round_ in range(rounds):
        barrier = threading.Barrier(width)

        def migrate(url: str, barrier: threading.Barrier) -> None:
            barrier.wait()
            try:
                _migrate.upgrade(url)
            except Exception:  # reported by the assertion below
                failures.append(traceback.format_exc())

        urls = [f"sqlite:///{tmp_path}/ledger-{round_}-{n}.db" for n in range(width)]
        threads = [threading.Thread(target=migrate, args=(url, barrier)) for url in urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert [_migrate.current_revision(url) for url in urls] == [_migrate.head_revision()] * width


HEAD = _migrate.head_revision()
NEXT = "9999"
NEXT_REVISION = f'''"""Test-only: the next release's revision, adding a column.

Revision ID: {NEXT}
Revises: {HEAD}
"""

import sqlalchemy as sa
from alembic import op

revision = "{NEXT}"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On SQLite: copy the table, drop it, rename the copy (what most changes need there). Elsewhere: ALTER.
    recreate = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("ar_usage_records", recreate=recreate) as batch:
        batch.add_column(sa.Column("region", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ar_usage_records") as batch:
        batch.drop_column("region")
'''


@pytest.fixture
def next_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Switches the library to a copy of its migrations plus a next revision, as the next release would ship.

    An "older database" is made honestly by making the library newer: the
    database stays at the real head.
    """
    scripts = tmp_path / "migrations"
    shutil.copytree(_migrate.script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / f"{NEXT}_region.py").write_text(NEXT_REVISION)

    def switch() -> None:
        monkeypatch.setattr(_migrate, "script_location", lambda: scripts)

    return switch


def test_an_older_database_is_refused_with_the_command_that_upgrades_it(
    store_url: str, next_release: Callable[[], None]
) -> None:
    kept = [full_event(), plain_event()]
    with UsageStore(store_url) as store:  # made at the real head
        store.write(kept)
    next_release()
    assert _migrate.head_revision() == NEXT

    with pytest.raises(SchemaOutdatedError) as caught:
        UsageStore(store_url)
    error = caught.value
    masked = make_url(store_url).render_as_string(hide_password=True)
    assert (error.current, error.head, error.url) == (HEAD, NEXT, masked)
    assert f"is at schema revision {HEAD}" in str(error)
    assert f"needs revision {NEXT}" in str(error)
    assert error.command == f"autogen-reliability db upgrade --url {shlex.quote(masked)}"  # quoted if it has ***
    assert error.command in str(error)
    assert isinstance(error, StoreSchemaError)
    assert isinstance(error, ReliabilityError)
    password = password_of(store_url)
    if password:
        assert password not in str(error)
        assert ":***@" in str(error)

    # What the command does. On SQLite the table is re-created: with foreign keys on, dropping the old
    # ar_usage_records would cascade and delete every captured content row (seen before the fix).
    _migrate.upgrade(store_url)
    with UsageStore(store_url) as store:
        assert store.events() == sorted(kept, key=lambda event: event.started_at)
        assert "region" in {column["name"] for column in inspect(store.engine).get_columns("ar_usage_records")}


def test_create_false_never_creates_tables(store_url: str, tmp_path: Path) -> None:
    with pytest.raises(SchemaOutdatedError, match="has no usage tables"):
        UsageStore(store_url, create=False)
    assert _migrate.current_revision(store_url) is None
    missing = tmp_path / "missing.db"
    with pytest.raises(SchemaOutdatedError, match="db upgrade --url"):
        UsageStore(f"sqlite:///{missing}", create=False)
    assert not missing.exists()


def test_a_database_from_a_newer_release_is_refused(store_url: str) -> None:
    _migrate.upgrade(store_url)
    engine = create_engine(store_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(SchemaTooNewError, match="revision 0099, which this autogen-reliability does not know"):
        UsageStore(store_url)
    # Migrating from Python says the same (alembic's own words were "Can't locate revision identified by '0099'").
    with pytest.raises(SchemaTooNewError, match="revision 0099, which this autogen-reliability does not know"):
        _migrate.upgrade(store_url)
    done = run_cli("db", "upgrade", "--url", store_url)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1
    assert "a newer release migrated it" in done.stderr


def test_a_postgresql_role_that_may_not_create_the_tables_is_told_which_privilege_it_lacks(
    make_pg_database: Callable[[], str],
) -> None:
    # Before: a raw ProgrammingError ("permission denied for schema public") from UsageStore, and the same words,
    # naming no privilege, from db upgrade; a search_path of no schema: "no schema has been selected to create in".
    url = make_pg_database()
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA ledger")
        connection.exec_driver_sql("REVOKE CREATE ON SCHEMA ledger FROM CURRENT_USER")  # the owner's own, too
        user = connection.exec_driver_sql("SELECT current_user").scalar_one()
    engine.dispose()
    in_ledger = make_url(url).update_query_dict({"options": "-csearch_path=ledger"}).render_as_string(False)
    nowhere = make_url(url).update_query_dict({"options": "-csearch_path=nosuch"}).render_as_string(False)
    password = password_of(url)
    assert password
    grant = f"GRANT CREATE ON SCHEMA ledger TO {engine.dialect.identifier_preparer.quote(user)}"
    for target, says in (
        (in_ledger, f"the role {user} lacks the CREATE privilege on schema ledger: grant it ({grant})"),
        (nowhere, "no schema of its search_path (nosuch) exists"),
    ):
        with pytest.raises(StoreSchemaError) as caught:
            UsageStore(target)
        assert type(caught.value) is StoreSchemaError
        assert "has no usage tables, and they cannot be created: " + says in str(caught.value)
        assert password not in str(caught.value)
        done = run_cli("db", "upgrade", "--url", target)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.splitlines() == [f"autogen-reliability: error: {caught.value}"]
        assert _migrate.current_revision(target) is None  # nothing created, not even the version table


def test_tables_made_without_migrations_are_refused(store_url: str) -> None:
    engine = create_engine(store_url, poolclass=NullPool)
    Base.metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(StoreSchemaError, match="not made by autogen-reliability's migrations") as caught:
        UsageStore(store_url)
    # The db commands say the same, where db current said "none (no usage tables; autogen-reliability db upgrade
    # creates them)" and db upgrade then failed on "table ar_usage_records already exists".
    for command_ in ("current", "upgrade"):
        done = run_cli("db", command_, "--url", store_url)
        assert (done.returncode, done.stdout) == (1, ""), command_
        assert done.stderr.splitlines() == [f"autogen-reliability: error: {caught.value}"], command_
    with pytest.raises(StoreSchemaError, match="not made by autogen-reliability's migrations"):
        _migrate.upgrade(store_url)
    assert _migrate.current_revision(store_url) is None


def test_a_version_row_without_tables_is_refused(store_url: str) -> None:
    _migrate.upgrade(store_url)
    engine = create_engine(store_url, poolclass=NullPool)
    Base.metadata.drop_all(engine)
    engine.dispose()
    with pytest.raises(StoreSchemaError, match="the tables were dropped"):
        UsageStore(store_url)


def test_the_report_query_reads_only_the_covering_index(tmp_path: Path) -> None:
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as store, store.engine.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT project, day, model, sum(prompt_tokens), sum(completion_tokens), "
            "sum(cost_nanousd) FROM ar_usage_records WHERE day BETWEEN '2025-01-01' AND '2025-01-30' "
            "GROUP BY project, day, model"
        ).all()
    detail = " ".join(str(row[-1]) for row in plan)
    assert f"USING COVERING INDEX {REPORT_INDEX}" in detail
    assert "TEMP B-TREE" not in detail  # grouped in index order, no sort


# --- secrets -------------------------------------------------------------------------------------


def test_the_password_never_shows(
    make_pg_database: Callable[[], str], caplog: pytest.LogCaptureFixture, next_release: Callable[[], None]
) -> None:
    url = make_pg_database()
    password = password_of(url)
    assert password
    caplog.set_level("DEBUG")
    with UsageStore(url) as store:
        store.write([plain_event()])
        shown = [repr(store), store.url]
    wrong = make_url(url).set(password="not-the-" + password).render_as_string(hide_password=False)
    with pytest.raises(OperationalError) as refused:
        UsageStore(wrong)
    shown.append(str(refused.value))
    next_release()
    with pytest.raises(SchemaOutdatedError) as outdated:
        UsageStore(url)
    shown.append(str(outdated.value))
    for args in (("db", "current", "--url", url), ("db", "upgrade", "--url", wrong)):
        done = run_cli(*args)
        shown += [done.stdout, done.stderr]
    shown.append(caplog.text)
    for text_shown in shown:
        assert password not in text_shown
    assert "***" in shown[0]


# --- configure() -------------------------------------------------------------------------------


@pytest.fixture
def restore_settings() -> Iterator[AccountingSettings]:
    """The process defaults as they were; put back after the test (configure() is process-wide)."""
    saved = accounting_settings()
    yield saved
    configure(
        db_url=saved.db_url,
        pricing=saved.pricing,
        capture_content=saved.capture_content,
        content_limit=saved.content_limit,
        spool_dir=saved.spool_dir,
    )


def test_rows_spooled_under_an_old_password_are_replayed_with_the_new_one(
    tmp_path: Path, make_pg_database: Callable[[], str], restore_settings: AccountingSettings
) -> None:
    """configure()'s recorder names its spool after the database, not its password: a rotated one strands nothing.

    The password is revoked while the application runs (its rows go to the spool at close), and the application
    is configured again with the new one: its recorder replays them.
    """
    url = make_url(make_pg_database())
    revoked = url.set(password="revoked-password").render_as_string(hide_password=False)
    current = url.render_as_string(hide_password=False)
    spool = tmp_path / "spool"
    configure(db_url=revoked, spool_dir=spool)
    before = default_recorder()
    recorded = [plain_event() for _ in range(20)]
    for event in recorded:
        before.record(event)
    configure(db_url=current)  # closes the recorder of the revoked password: its rows are spooled
    assert before.stats["spooled"] == 20
    after = default_recorder()
    assert after.flush(30)
    deadline = time.monotonic() + 10
    while list(spool.glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.01)
    with UsageStore(current) as store:
        assert {event.event_id for event in store.events()} == {event.event_id for event in recorded}
        # One name with a store's own recorder too (named after store.url, password masked).
        own = UsageRecorder(store, spool_dir=tmp_path / "own", close_sink=False)
        own.close()
        assert after.spool_path.name == own.spool_path.name


@pytest.mark.parametrize(("url", "message"), NEVER_WORKING_URLS)
def test_configure_refuses_urls_that_can_never_work(
    url: str, message: str, restore_settings: AccountingSettings
) -> None:
    # Accepted before, the recorder then spooled every row forever.
    with pytest.raises(ConfigurationError) as caught:
        configure(db_url=url)
    assert str(caught.value).startswith("db_url: ")
    assert message in str(caught.value)
    assert "secret-pw" not in str(caught.value)
    assert accounting_settings() == restore_settings  # nothing changed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"content_limit": 0}, "content_limit must be a positive int, got 0"),
        ({"content_limit": -5}, "content_limit must be a positive int, got -5"),
        ({"content_limit": 1.5}, "content_limit must be a positive int, got 1.5"),
        ({"content_limit": float("inf")}, "content_limit must be a positive int, got inf"),
        ({"content_limit": float("nan")}, "content_limit must be a positive int, got nan"),
        ({"content_limit": True}, "content_limit must be a positive int, got True"),
        ({"content_limit": "10"}, "content_limit must be a positive int, got '10'"),
        ({"capture_content": "no"}, "capture_content must be True or False, got 'no'"),
        ({"capture_content": 1}, "capture_content must be True or False, got 1"),
        ({"spool_dir": 3}, "spool_dir must be a directory path, got 3"),
        ({"spool_dir": ""}, "spool_dir must be a directory path, got ''"),
        # Taken as written before: a directory named "   ", or "./ /data/spool" off the volume meant.
        ({"spool_dir": "   "}, "spool_dir '   ' starts or ends with whitespace"),
        ({"spool_dir": " /data/spool"}, "spool_dir ' /data/spool' starts or ends with whitespace"),
        ({"spool_dir": Path("/data/spool\n")}, "spool_dir '/data/spool\\n' starts or ends with whitespace"),
        ({"db_url": b"sqlite://"}, "db_url must be a SQLAlchemy URL string such as sqlite:///usage.db, got bytes"),
        ({"db_url": ""}, "db_url: malformed database URL"),
        ({"pricing": {"models": {}}}, "pricing must be a PricingTable, got dict"),
        ({"spool": "/tmp/spool"}, "unknown option(s) ['spool']; valid options: ['budget', 'capture_content', "),
        ({"bogus": 1, "db_url": "sqlite://"}, "unknown option(s) ['bogus']"),
    ],
)
def test_configure_refuses_bad_options(
    options: dict[str, Any], message: str, restore_settings: AccountingSettings
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        configure(**options)
    assert message in str(caught.value)
    assert accounting_settings() == restore_settings


def test_configure_refuses_a_spool_dir_that_is_a_file_or_under_one(
    tmp_path: Path, restore_settings: AccountingSettings
) -> None:
    # Accepted before: found only once the database was down, and then the rows had nowhere to go.
    file = tmp_path / "usage.db"
    file.write_text("")
    with pytest.raises(ConfigurationError, match=f"^spool_dir {file} is not a directory$"):
        configure(spool_dir=file)
    with pytest.raises(ConfigurationError, match=f"^spool_dir {file / 'spool'} cannot be made: {file} is not a"):
        configure(spool_dir=str(file / "spool"))
    assert accounting_settings() == restore_settings
    assert configure(spool_dir=tmp_path / "new" / "spool").spool_dir == tmp_path / "new" / "spool"  # made when used


def test_a_spool_dir_variable_naming_a_file_is_refused_naming_the_variable(tmp_path: Path) -> None:
    file = tmp_path / "usage.db"
    file.write_text("")
    assert _configure_in_a_new_process(tmp_path, {ENV_SPOOL_DIR: str(file)}) == [
        f"{ENV_SPOOL_DIR} {file} is not a directory"
    ]


def test_a_spool_dir_variable_with_a_stray_space_is_refused_naming_the_variable(tmp_path: Path) -> None:
    spool = f"{tmp_path / 'spool'} "
    assert _configure_in_a_new_process(tmp_path, {ENV_SPOOL_DIR: spool}) == [
        f"{ENV_SPOOL_DIR} {spool!r} starts or ends with whitespace; strip it (a directory name with a space at "
        "either end is taken for a stray one)"
    ]
    assert not Path(spool).exists()


def test_a_spool_dir_given_to_configure_wins_over_a_bad_variable(tmp_path: Path) -> None:
    # The argument overrides the variable, as db_url= does AUTOGEN_RELIABILITY_DB_URL: a stale variable naming a
    # file was refused before, naming the variable, though configure(spool_dir=...) said where to spool.
    file = tmp_path / "usage.db"
    file.write_text("")
    spool = tmp_path / "spool"
    printed = _configure_in_a_new_process(
        tmp_path,
        {ENV_SPOOL_DIR: str(file)},
        call=f"configure(spool_dir={str(spool)!r})",
        then="from autogen_reliability._config import settings\nprint(settings().spool_dir)\n",
    )
    assert printed == [str(spool)]


def test_a_spool_dir_starting_with_a_tilde_is_under_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_settings: AccountingSettings
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    assert configure(spool_dir="~/spool").spool_dir == home / "spool"
    assert configure(spool_dir=Path("~") / "other").spool_dir == home / "other"
    printed = _configure_in_a_new_process(
        tmp_path, {ENV_SPOOL_DIR: "~/from-env", "HOME": str(home)}, then="print(configure().spool_dir)\n"
    )
    assert printed == [str(home / "from-env")]


def _configure_in_a_new_process(
    tmp_path: Path, environment: dict[str, str], then: str = "", call: str = "configure()"
) -> list[str]:
    """What a new process prints: the error of its first ``configure()`` (variables are read then), then ``then``."""
    probe = (
        "from autogen_reliability import ConfigurationError, configure\n"
        "try:\n"
        f"    {call}\n"
        "except ConfigurationError as error:\n"
        "    print(error)\n"
    ) + then
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, **environment},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


async def test_a_later_configure_changes_only_what_it_names(
    restore_settings: AccountingSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    monkeypatch.chdir(tmp_path)  # where the default database file would go
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    configure(db_url=ledger, spool_dir=tmp_path / "spool")
    recorder = default_recorder()
    prices = PricingTable({"models": {"gpt-4o-mini": {"input": "1", "output": "2"}}})  # USD per million tokens
    configure(pricing=prices)  # used to put db_url and spool_dir back to their defaults
    configure(capture_content=True)  # used to put the pricing back too
    now = accounting_settings()
    assert (now.db_url, now.spool_dir, now.pricing, now.capture_content) == (ledger, tmp_path / "spool", prices, True)
    assert default_recorder() is recorder  # still open: wrappers made before keep recording

    fake_openai_server.enqueue(FakeReply.text("hello", usage=FakeUsage(prompt_tokens=1000, completion_tokens=500)))
    await reliable(make_openai_client()).create([UserMessage(content="hi", source="user")])
    assert recorder.flush(10)
    with UsageStore(ledger) as store:
        (row,) = store.events()
    assert row.cost_nanousd == 2_000_000  # 1,000 x $1 + 500 x $2 per million tokens = $0.002
    assert row.request_content is not None
    assert "hi" in row.request_content
    assert not (tmp_path / "autogen_reliability.db").exists()


def test_a_url_from_the_environment_is_checked_and_named(tmp_path: Path) -> None:
    printed = _configure_in_a_new_process(
        tmp_path,
        {ENV_DB_URL: "mysql://app:secret-pw@db/usage"},
        then="print(configure(db_url='sqlite://').db_url)\n",  # a URL given wins over the variable's
    )
    assert printed == [
        f"{ENV_DB_URL}: the usage store supports SQLite and PostgreSQL databases, not 'mysql'",
        "sqlite://",
    ]


# --- the wheel and the command line --------------------------------------------------------------


def test_the_wheel_ships_the_migrations_and_they_run_from_it(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("autogen_reliability-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = "autogen_reliability/migrations/"
    assert {
        shipped + "env.py",
        shipped + "script.py.mako",
        shipped + "alembic.ini",
        shipped + "versions/0001_usage_ledger.py",
    } <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]

    # Installed (unpacked) apart from the checkout, the library finds and runs its shipped copy.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import sys; from autogen_reliability import storage; print(storage._migrate.script_location()); "
        "storage.upgrade(sys.argv[1]); print(storage.current_revision(sys.argv[1]))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe, f"sqlite:///{tmp_path / 'wheel.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [str(site / "autogen_reliability" / "migrations"), _migrate.head_revision()]


def test_the_checkout_finds_its_top_level_migrations() -> None:
    assert _migrate.script_location() == ROOT / "migrations"


def test_cli_db_upgrade_and_current(store_url: str) -> None:
    masked = make_url(store_url).render_as_string(hide_password=True)
    head = _migrate.head_revision()

    done = run_cli("db", "current", "--url", store_url)
    assert (done.returncode, done.stderr) == (0, "")
    no_tables = "no such file" if store_url.startswith("sqlite") else "no usage tables"
    assert done.stdout.startswith(f"{masked}: none ({no_tables}; autogen-reliability db upgrade creates ")

    done = run_cli("db", "upgrade", "--url", store_url)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"{masked}: upgraded from none to {head} (head)\n"

    done = run_cli("db", "upgrade", "--url", store_url)
    assert done.stdout == f"{masked}: {head} (head), nothing to upgrade\n"

    done = run_cli("db", "current", "--url", store_url)
    assert (done.returncode, done.stdout) == (0, f"{masked}: {head} (head)\n")


def test_cli_db_upgrade_that_waited_for_another_one_says_there_was_nothing_to_upgrade(tmp_path: Path) -> None:
    # Two workers running `db upgrade` at a deploy: the one that waited for the other's lock found the
    # schema at head and migrated nothing, yet said "upgraded from 0001", from a read made before its turn.
    path = tmp_path / "usage.db"
    url = f"sqlite:///{path}"
    _migrate.upgrade(url, "0001")
    engine = create_engine(url, poolclass=NullPool)
    environment = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    with engine.connect() as connection, _migrate.migration_transaction(connection):  # the other worker's turn
        waiting = subprocess.Popen(  # this interpreter, our own command
            [sys.executable, "-m", "autogen_reliability", "db", "upgrade", "--url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        # Once it has the file open it reads the revision (0001: ours is not committed) and waits for the lock.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            os.path.realpath(fd) == str(path) for fd in glob.glob(f"/proc/{waiting.pid}/fd/*")
        ):
            time.sleep(0.05)
        time.sleep(1)
        command.upgrade(_migrate.alembic_config(connection), "head")
    out, err = waiting.communicate(timeout=120)
    engine.dispose()
    head = _migrate.head_revision()
    assert (waiting.returncode, err) == (0, "")
    assert out == f"{url}: {head} (head), nothing to upgrade\n"
    assert _migrate.current_revision(url) == head


def test_cli_reads_the_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    done = run_cli("db", "upgrade", env={ENV_DB_URL: url}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{url}: upgraded from none")
    done = run_cli("db", "current", cwd=tmp_path)  # no variable: the default file in the working directory
    assert (done.returncode, done.stdout) == (
        0,
        "sqlite:///autogen_reliability.db: none (no such file; autogen-reliability db upgrade creates it)\n",
    )
    assert not (tmp_path / "autogen_reliability.db").exists()  # looking created nothing
    done = run_cli("db", "upgrade", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "autogen_reliability.db").exists()


def test_default_db_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DB_URL, raising=False)
    assert default_db_url() == "sqlite:///autogen_reliability.db"
    monkeypatch.setenv(ENV_DB_URL, "")
    assert default_db_url() == "sqlite:///autogen_reliability.db"
    monkeypatch.setenv(ENV_DB_URL, "postgresql+psycopg://u@h/db")
    assert default_db_url() == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "bad database URL: malformed database URL"),
        ("mysql://user:secret@localhost/db", "supports SQLite and PostgreSQL databases, not 'mysql'"),
        ("postgres://user:secret@localhost/db", "write postgresql+psycopg://user:***@localhost/db"),
        ("sqlite+nosuchdriver:///usage.db", "no SQLAlchemy driver 'sqlite+nosuchdriver'"),
        ("postgresql+psycopg://user:secret@host:abc/db", "bad database URL: malformed database URL: its port"),
        # `db current` used to say that `db upgrade` creates it, and `db upgrade` then failed.
        ("sqlite:////no/such/dir/x.db", "the directory of the SQLite database /no/such/dir/x.db does not exist"),
        ("postgresql+psycopg://user:s3cret@secret@127.0.0.1:1/db", "the password contains '@'; URL-encode it as %40"),
        ("sqlite://usage.db", "a SQLite URL has no host (sqlite://usage.db names one): write sqlite:///usage.db"),
    ],
)
@pytest.mark.parametrize("command", ["current", "upgrade"])
def test_cli_bad_url_exits_2_with_one_line(command: str, url: str, message: str) -> None:
    done = run_cli("db", command, "--url", url)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("autogen-reliability: error: ")
    assert message in line
    assert "secret" not in line


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://user:secret@127.0.0.1:1/db", "postgresql+psycopg://user:***@127.0.0.1:1/db"),
        ("postgresql+psycopg:///db?host=127.0.0.1&port=1&password=secret", "?host=127.0.0.1&password=***&port=1"),
    ],
)
@pytest.mark.parametrize("command", [("db", "upgrade", "--url"), ("report", "--db")])
def test_cli_unreachable_database_exits_1_with_one_line(url: str, shown: str, command: tuple[str, ...]) -> None:
    done = run_cli(*command, url)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("autogen-reliability: error: cannot use the database postgresql+psycopg://")
    assert f"{shown}: " in line
    assert "secret" not in line


def test_cli_db_needs_a_subcommand() -> None:
    done = run_cli("db")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_the_parent_migrates_migrates_its_own_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parent's thread is inside a migration (alembic holds the process's turn for its whole run) when the
    # process forks: the child's own migration, of another database, waited for that turn for ever. (The fork
    # waits for the migration's SQLite transaction only briefly here: it goes on while alembic's turn is held.)

    from sqlalchemy.event import listen  # noqa: PLC0415

    monkeypatch.setattr(_engine, "SQLITE_FORK_WAIT_S", 0.2)

    engine = create_engine(f"sqlite:///{tmp_path / 'parent.db'}", poolclass=NullPool)
    inside, leave = threading.Event(), threading.Event()

    def hold(*args: Any) -> None:
        if str(args[2]).lstrip().upper().startswith("CREATE TABLE") and not inside.is_set():
            inside.set()
            leave.wait(60)

    listen(engine, "before_cursor_execute", hold)
    migrating = threading.Thread(target=_migrate.upgrade, args=(engine,))
    child_url = f"sqlite:///{tmp_path / 'child.db'}"

    def work() -> None:
        _migrate.upgrade(child_url)
        raise SystemExit(0 if _migrate.current_revision(child_url) == _migrate.head_revision() else 2)

    migrating.start()
    try:
        assert inside.wait(30)
        assert fork_child(work) == 0  # before: None, killed after waiting 30 s for the parent's migration
    finally:
        leave.set()
        migrating.join(30)
    assert _migrate.current_revision(engine) == _migrate.head_revision()
    engine.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("transaction", ["write", "retention", "migration"])
def test_a_child_forked_during_a_write_transaction_on_the_sqlite_file_writes_to_it(
    tmp_path: Path, transaction: str
) -> None:
    # A thread of the parent is inside a write transaction on the file (the recorder's batch, a retention batch, a
    # migration) when the process forks. The child inherits SQLite's record of the parent's locks, so it took the
    # write lock held for good: its store could not write ("database is locked") nor migrate (killed after 30 s).
    # The fork now waits for the transaction to end.
    from sqlalchemy.event import listen  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'usage.db'}"
    if transaction == "migration":
        engine = create_engine(url, poolclass=NullPool)
        writing = threading.Thread(target=_migrate.upgrade, args=(engine,))
    else:
        store = UsageStore(url)
        store.write([plain_event(started_at=datetime(2020, 1, 1, tzinfo=UTC))])
        engine = store.engine
        cutoff = datetime(2021, 1, 1, tzinfo=UTC)
        write = store.delete_older_than if transaction == "retention" else store.write
        writing = threading.Thread(target=write, args=(cutoff if transaction == "retention" else [plain_event()],))
    inside, forked = threading.Event(), threading.Event()

    def hold(_connection: Any) -> None:  # on the first commit, its write lock held
        if not inside.is_set():
            inside.set()
            forked.wait(2)  # until the fork, or for 2 s when the fork waits for this transaction

    listen(engine, "commit", hold)

    def work() -> None:
        with UsageStore(url) as child:
            child.write([plain_event()])
            raise SystemExit(0 if child.count() else 2)

    writing.start()
    try:
        assert inside.wait(30)
        assert fork_child(work, forked=forked) == 0  # before: 1 ("database is locked"), and None for a migration
    finally:
        forked.set()
        writing.join(30)
    engine.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_waits_for_a_sqlite_write_transaction_only_so_long_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy.event import listen  # noqa: PLC0415

    monkeypatch.setattr(_engine, "SQLITE_FORK_WAIT_S", 0.2)
    store = UsageStore(f"sqlite:///{tmp_path / 'usage.db'}")
    inside, forked = threading.Event(), threading.Event()

    def hold(_connection: Any) -> None:
        inside.set()
        forked.wait(30)

    listen(store.engine, "commit", hold)
    writing = threading.Thread(target=store.write, args=([plain_event()],))
    writing.start()

    def work() -> None:
        store.write([plain_event()])

    try:
        assert inside.wait(30)
        assert fork_child(work, forked=forked) == 1  # the child the wait was for: "database is locked"
    finally:
        forked.set()
        writing.join(30)
    assert [record.getMessage() for record in caplog.records] == [
        "a fork waited 0.2 s for a write transaction on a SQLite database of this process, and goes on: the child "
        "cannot write to that database, and keeps its usage rows in its spool"
    ]
    assert store.count() == 1
    store.close()
