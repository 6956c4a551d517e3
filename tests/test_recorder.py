"""The recorder never blocks, never drops: outages go to the spool and are replayed exactly once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.event import listen
from sqlalchemy.pool import NullPool

from autogen_reliability import ConfigurationError
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.accounting._events import UsageEvent, UsageRow
from autogen_reliability.accounting._recorder import DEFAULT_MAX_QUEUE
from autogen_reliability.storage import UsageStore, _engine

from .test_storage import full_event, plain_event

PG_CLUSTER_ENV = "AUTOGEN_RELIABILITY_TEST_PG_CLUSTER"
# How long the recorder waits before trying a database that failed again (5 s by default): the tests
# wait for the replay, so a short interval is what makes them quick.
RETRY = 0.05
# SQLite's busy timeout in the tests that lock the file: each write fails after 50 ms instead of the
# store's 2 s (the tests only need it to fail), and the child processes below set the same.
BUSY_TIMEOUT_MS = 50


def events(count: int, call: uuid.UUID | None = None) -> list[UsageEvent]:
    call_id = call or uuid.uuid4()
    now = datetime.now(UTC)
    return [
        UsageEvent(call_id=call_id, attempt=n + 1, started_at=now, latency_ms=1.0, prompt_tokens=n, cost_nanousd=n)
        for n in range(count)
    ]


class WatchedStore:
    """A `UsageStore` as the recorder's sink, telling the test about every write the writer thread tries.

    Tests wait on it (`wait_until`, `wait_for_rows`) instead of polling the database. With a ``gate``,
    each write first waits until the gate is set.
    """

    def __init__(self, store: UsageStore, *, gate: threading.Event | None = None) -> None:
        self.store = store
        self.url = store.url  # names the spool files, as the store's own URL does
        self.gate = gate
        self.started = 0  # writes begun
        self.batches: list[int] = []  # rows per write that succeeded
        self.failures = 0  # writes that raised
        self.threads: set[int] = set()  # the threads that wrote
        self._changed = threading.Condition()

    def write(self, events: Sequence[UsageEvent]) -> int:
        return self.write_rows([event.to_row() for event in events])

    def write_rows(self, rows: Sequence[UsageRow]) -> int:
        with self._changed:
            self.started += 1
            self.threads.add(threading.get_ident())
            self._changed.notify_all()
        if self.gate is not None:
            self.gate.wait(30)
        try:
            written = self.store.write_rows(rows)
        except Exception:
            with self._changed:
                self.failures += 1
                self._changed.notify_all()
            raise
        with self._changed:
            self.batches.append(len(rows))
            self._changed.notify_all()
        return written

    def close(self) -> None:
        self.store.close()

    def wait_until(self, predicate: Callable[[], bool], what: str, seconds: float = 30) -> None:
        """Returns once ``predicate()`` holds; it is asked again after every write the recorder tries."""
        with self._changed:
            if not self._changed.wait_for(predicate, seconds):
                raise AssertionError(f"after {seconds} s, still not {what}")

    def wait_for_rows(self, count: int, seconds: float = 30) -> None:
        """Returns once the database holds ``count`` rows (a replay comes when the database retry is due)."""
        self.wait_until(lambda: self.store.count() >= count, f"{count} rows stored", seconds)


class ReopenedStore(WatchedStore):
    """A `WatchedStore` that the recorder reopens before it tries the database again, as it does a `UsageStore`."""

    def reopen(self) -> None:
        self.store.reopen()


def until(predicate: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Returns once ``predicate()`` holds, asked every 10 ms: for what the writer thread changes without a write."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {seconds} s, still not {what}")
        time.sleep(0.01)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'usage.db'}"


@pytest.fixture
def locked(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sqlite3.Connection]:
    """Another process's exclusive transaction on the SQLite file: every write of ours fails as 'database is locked'."""
    monkeypatch.setattr(_engine, "SQLITE_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)
    UsageStore(sqlite_url).close()  # create the schema first
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    yield holder
    holder.close()


def test_record_never_waits_for_the_database_and_writes_in_batches(sqlite_url: str, tmp_path: Path) -> None:
    # record() does no I/O: it returns while the writer thread is stuck inside a write. What a call
    # costs is measured in benchmarks/bench_recorder.py.
    store = WatchedStore(UsageStore(sqlite_url), gate=threading.Event())
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", flush_interval=0.1, close_sink=False)
    batch = events(5000)
    recorder.record(batch[0])
    store.wait_until(lambda: store.started == 1, "writing the first event")  # and held there by the gate
    for event in batch[1:]:
        recorder.record(event)
    assert recorder.pending == 5000
    assert store.batches == []
    assert store.gate is not None
    store.gate.set()
    assert recorder.flush(10)
    assert store.store.count() == 5000
    assert recorder.stats["written"] == 5000
    assert store.batches == [1, 1000, 1000, 1000, 1000, 999]  # batch_size rows at a time once they wait
    assert threading.get_ident() not in store.threads
    recorder.close()
    store.close()


def test_a_sink_of_your_own_gets_the_events(tmp_path: Path) -> None:
    class ListSink:
        def __init__(self) -> None:
            self.events: list[UsageEvent] = []

        def write(self, events: Sequence[UsageEvent]) -> int:
            self.events.extend(events)
            return len(events)

        def close(self) -> None:
            pass

    sink = ListSink()
    recorded = [full_event(), plain_event(), *events(3)]
    recorder = UsageRecorder(sink, spool_dir=tmp_path / "spool")
    for event in recorded:
        recorder.record(event)
    recorder.close()
    assert sink.events == recorded


def test_an_event_with_unstorable_text_does_not_hold_its_batch_back(sqlite_url: str, tmp_path: Path) -> None:
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    batch = [*events(10), plain_event(response_content="cut \ud83d"), *events(10)]
    for event in batch:
        recorder.record(event)
    assert recorder.flush(10)
    assert store.count() == 21
    assert recorder.stats["spooled"] == 0
    recorder.close()


class Unprintable(Exception):
    """An exception whose ``__str__`` raises (a driver's, or a sink of the user's)."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


def test_a_write_error_whose_text_cannot_be_read_spools_the_batch_and_says_so(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class FailsOnce(WatchedStore):
        def write_rows(self, rows: Sequence[UsageRow]) -> int:
            if not self.failures:
                self.failures += 1
                raise Unprintable
            return super().write_rows(rows)

    store = FailsOnce(UsageStore(sqlite_url))
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", retry_interval=RETRY, close_sink=False)
    recorded = events(5)
    for event in recorded:
        recorder.record(event)
    assert recorder.flush(10)  # the batch was spooled, not lost half-way
    store.wait_for_rows(5)  # and replayed
    recorder.close()
    assert "usage database unavailable (Unprintable: <str() failed: RuntimeError>)" in caplog.text
    assert "writer failed" not in caplog.text


def test_a_sink_that_raises_a_base_exception_spools_the_batch_and_the_writer_carries_on(
    sqlite_url: str, tmp_path: Path
) -> None:
    # A sink of the user's that runs asyncio inside can raise CancelledError, which is no Exception:
    # it must count as the database failing (the batch spooled, then replayed), not end the writer
    # thread with the batch gone from memory and flush() waiting forever.
    class CancelledOnce(WatchedStore):
        def write_rows(self, rows: Sequence[UsageRow]) -> int:
            if not self.failures:
                self.failures += 1
                raise asyncio.CancelledError
            return super().write_rows(rows)

    store = CancelledOnce(UsageStore(sqlite_url))
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", retry_interval=RETRY, close_sink=False)
    for event in events(5):
        recorder.record(event)
    assert recorder.flush(10)
    store.wait_for_rows(5)
    assert recorder.writer_alive
    assert recorder.stats["failed_writes"] == 1
    recorder.close()


def test_a_factory_that_raises_a_base_exception_spools_until_it_makes_the_sink(sqlite_url: str, tmp_path: Path) -> None:
    calls: list[int] = []

    def factory() -> UsageStore:
        calls.append(1)
        if len(calls) <= 2:  # the writer's first connection, then the first write
            raise asyncio.CancelledError
        return UsageStore(sqlite_url)

    recorder = UsageRecorder(factory, spool_dir=tmp_path / "spool", name=sqlite_url, retry_interval=RETRY)
    for event in events(5):
        recorder.record(event)
    assert recorder.flush(10)
    until(lambda: recorder.spooled == 0, "the spool replayed")
    assert recorder.writer_alive
    assert recorder.stats["spooled"] == 5
    recorder.close()
    assert UsageStore(sqlite_url).count() == 5


def test_a_bug_in_the_writer_puts_its_batch_back_and_the_writer_carries_on(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The safety net for a defect of ours that no test can reach otherwise: one write raises after the
    # batch left the queue. The batch must go back to the queue, not vanish with flush() waiting for it.
    real_write = UsageRecorder._write
    bugs: list[int] = []

    def write_with_a_bug(recorder: UsageRecorder, batch: list[UsageRow]) -> bool:
        if not bugs:
            bugs.append(len(batch))
            raise RuntimeError("a defect in the writer")
        return real_write(recorder, batch)

    monkeypatch.setattr(UsageRecorder, "_write", write_with_a_bug)
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    for event in events(5):
        recorder.record(event)
    assert recorder.flush(10)
    assert bugs == [5]
    assert recorder.writer_alive
    assert store.count() == 5
    recorder.close()
    assert "the usage recorder's writer failed; it carries on" in caplog.text
    assert "RuntimeError: a defect in the writer" in caplog.text


def refused(tmp_path: Path) -> list[dict[str, object]]:
    """The events kept in the spool directory's files of events the database refused."""
    return [json.loads(line) for path in (tmp_path / "spool").glob("*.refused.jsonl") for line in path.open()]


def test_an_event_the_database_refuses_is_kept_aside_and_its_batch_stored(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLite's INTEGER holds no count of 2**64 - 1 (an event of some sink of the user's, say).
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", retry_interval=RETRY, close_sink=False)
    bad = plain_event(prompt_tokens=2**64 - 1)
    batch = [*events(10), bad, *events(10)]
    for event in batch:
        recorder.record(event)
    assert recorder.flush(10)
    assert store.count() == 20
    assert (recorder.stats["written"], recorder.stats["spooled"], recorder.stats["refused"]) == (20, 0, 1)
    assert recorder.spooled == 0
    assert [UsageEvent.from_json(kept) for kept in refused(tmp_path)] == [bad]
    assert recorder.refused_path.name.endswith(".refused.jsonl")
    assert "refused 1 usage event" in caplog.text
    later = events(5)  # the database is not taken for down: the next batch goes straight in
    for event in later:
        recorder.record(event)
    assert recorder.flush(10)
    assert store.count() == 25
    assert recorder.stats["failed_writes"] == 0
    recorder.close()
    assert not list((tmp_path / "spool").glob(f"{recorder.spool_path.stem}*"))


def test_the_events_refused_in_a_batch_are_one_line_in_the_log(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Events of a sink of the user's with a count no column holds, every other one: one line says it, not one each.
    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", retry_interval=RETRY, close_sink=False)
    good, bad = events(100), [plain_event(prompt_tokens=2**64 - 1) for _ in range(100)]
    for pair in zip(good, bad, strict=True):
        recorder.record(pair[0])
        recorder.record(pair[1])
    assert recorder.flush(10)  # one batch: everything was queued when the writer woke
    recorder.close()
    assert store.count() == 100
    assert recorder.stats["refused"] == 100
    assert len(refused(tmp_path)) == 100
    (said,) = [record for record in caplog.records if record.name == "autogen_reliability"]
    assert said.levelno == logging.ERROR
    assert said.getMessage().startswith("the usage database refused 100 usage event(s) (ValueError: ")
    assert said.getMessage().endswith(f"; kept in {recorder.refused_path}, not retried")


def test_an_event_whose_value_no_json_holds_is_refused_and_holds_back_no_other(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A cost as a Decimal (an event of the user's): the refused file, and the spool, are JSON, which has no
    # Decimal. Its batch, and every one after it, were held in memory for ever, and lost at close.
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", retry_interval=RETRY, close_sink=False)
    bad = plain_event(cost_nanousd=Decimal("1.5"))
    for event in [*events(3), bad, *events(3)]:
        recorder.record(event)
    assert recorder.flush(10)
    later = events(2)
    for event in later:
        recorder.record(event)
    assert recorder.flush(10)
    assert store.count() == 8
    assert (recorder.stats["refused"], recorder.stats["failed_writes"], recorder.held_in_memory) == (1, 0, 0)
    assert [kept["cost_nanousd"] for kept in refused(tmp_path)] == ["1.5"]  # as its text, for whoever fixes it
    assert "cost_nanousd Decimal('1.5') is not an int" in caplog.text
    recorder.close()


def test_spool_and_refused_files_are_readable_by_their_owner_only(sqlite_url: str, tmp_path: Path) -> None:
    # They hold what the rows hold: tags, error texts, captured prompts and answers; the journal is 0600 too.
    class RefusingSink:
        url = "refusing"

        def write(self, events: Sequence[UsageEvent]) -> int:
            raise ValueError("no column holds that")

        def close(self) -> None:
            pass

    mask = os.umask(0o022)  # the usual default: files 0644
    try:
        spooling = UsageRecorder(
            UsageStore(sqlite_url), spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY
        )
        refusing = UsageRecorder(RefusingSink(), spool_dir=tmp_path / "spool", flush_interval=0.05)
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as blocker:
            blocker.execute("BEGIN EXCLUSIVE")
            for recorder in (spooling, refusing):
                recorder.record(plain_event(tags={"user": "alice"}, error_message="what the provider said"))
                assert recorder.flush(30)
            assert spooling.stats["spooled"] == 1
            assert refusing.stats["refused"] == 1
            files = [spooling.spool_path, refusing.refused_path, *spooling.journal_paths]
            assert {oct(path.stat().st_mode & 0o777) for path in files} == {"0o600"}
            blocker.rollback()
        spooling.close()
        refusing.close()
    finally:
        os.umask(mask)


def test_an_event_the_database_refuses_holds_back_no_other_spool_file_or_journal(
    sqlite_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    store = UsageStore(sqlite_url)
    # A process killed outright: its rows are only in its journal.
    script = textwrap.dedent(
        f"""
        import os, uuid
        from datetime import UTC, datetime
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.accounting._events import UsageEvent
        from autogen_reliability.storage import UsageStore

        recorder = UsageRecorder(UsageStore({sqlite_url!r}), spool_dir={str(spool)!r}, flush_interval=3600)
        for _ in range(3):
            recorder.record(UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0))
        os._exit(0)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    # Spool files of processes that are gone (pids above the kernel's limit), the first with a refused event.
    prefix = next(spool.glob("*")).name.split("-")[0]
    bad = plain_event(prompt_tokens=2**64 - 1)
    first, second = events(4), events(5)
    poisoned = spool / f"{prefix}-{2**22 + 1}.jsonl"
    poisoned.write_text("".join(json.dumps(event.to_json()) + "\n" for event in [first[0], bad, *first[1:]]))
    later = spool / f"{prefix}-{2**22 + 2}.jsonl"
    later.write_text("".join(json.dumps(event.to_json()) + "\n" for event in second))
    UsageRecorder(store, spool_dir=spool, close_sink=False).close()
    assert store.count() == 3 + 4 + 5
    assert not poisoned.exists()
    assert not later.exists()
    assert [UsageEvent.from_json(kept) for kept in refused(tmp_path)] == [bad]
    # Replayed once more (the file is never replayed itself), nothing is stored twice or refused again.
    UsageRecorder(store, spool_dir=spool, close_sink=False).close()
    assert store.count() == 12
    assert len(refused(tmp_path)) == 1


def test_locked_sqlite_spools_then_replays_without_duplicates(
    sqlite_url: str, tmp_path: Path, locked: sqlite3.Connection
) -> None:
    store = WatchedStore(UsageStore(sqlite_url))
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    first = events(300)
    for event in first:
        recorder.record(event)
    assert recorder.flush(30)
    assert recorder.stats["spooled"] == 300
    assert recorder.spooled == 300
    locked.execute("COMMIT")  # the other process lets go
    second = events(200)
    for event in second:
        recorder.record(event)
    store.wait_for_rows(500)
    recorder.close()
    stored = store.store.events()
    assert len(stored) == 500
    assert {event.event_id for event in stored} == {event.event_id for event in first + second}
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_the_spool_backlog_counts_until_a_replay_stores_it(
    sqlite_url: str, tmp_path: Path, locked: sqlite3.Connection
) -> None:
    # A replay renames the spool file before it reads it; one that fails leaves the events waiting, and counted.
    store = WatchedStore(UsageStore(sqlite_url))
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    assert recorder.writer_alive
    assert recorder.spooled_since is None
    before = datetime.now(UTC)
    for event in events(30):
        recorder.record(event)
    assert recorder.flush(30)
    store.wait_until(lambda: store.failures >= 3, "a write and two replays refused")
    assert recorder.spooled == 30
    since = recorder.spooled_since
    assert since is not None
    assert before <= since <= datetime.now(UTC)
    locked.execute("COMMIT")
    store.wait_for_rows(30)
    recorder.close()
    assert recorder.spooled == 0
    assert recorder.spooled_since is None
    assert not recorder.writer_alive


def test_an_outage_is_said_once_and_its_end_with_the_events_spooled_meanwhile(
    sqlite_url: str, tmp_path: Path, locked: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # The database comes back while nothing new is recorded: the writer's own retry replays the spool.
    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    store = WatchedStore(UsageStore(sqlite_url))
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    for event in events(300):
        recorder.record(event)
    assert recorder.flush(30)
    store.wait_until(lambda: store.failures >= 5, "a write and four replays refused")
    locked.execute("COMMIT")
    store.wait_for_rows(300)
    recorder.close()
    said = [record for record in caplog.records if record.name == "autogen_reliability"]
    assert [record.levelno for record in said] == [logging.WARNING, logging.WARNING]
    down, back = said
    assert down.getMessage().startswith("usage database unavailable (OperationalError: ")
    assert re.fullmatch(
        r"usage database reachable again after \d+\.\d s; replaying the 300 events spooled meanwhile", back.getMessage()
    )
    assert back.__dict__["spooled"] == 300
    assert back.__dict__["spool"] == str(recorder.spool_path)


def test_every_field_survives_the_spool(sqlite_url: str, tmp_path: Path, locked: sqlite3.Connection) -> None:
    store = WatchedStore(UsageStore(sqlite_url))
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    full, plain = full_event(), plain_event()
    recorder.record(full)
    recorder.record(plain)
    assert recorder.flush(30)
    assert recorder.spooled == 2
    locked.execute("COMMIT")
    store.wait_for_rows(2)  # replayed by the writer's own retry: nothing new was recorded
    recorder.close()
    stored = {event.event_id: event for event in store.store.events()}
    assert stored[full.event_id] == full
    assert stored[plain.event_id] == plain


def _refused_spool(store: WatchedStore, blocked: Path, *, max_queue: int = DEFAULT_MAX_QUEUE) -> UsageRecorder:
    """A recorder (batches of 10) whose spool directory is a file, put there after the recorder was made (which
    refuses one). Without a journal, which would make the directory on the writer thread while the test takes it
    away."""
    recorder = UsageRecorder(
        store,
        spool_dir=blocked,
        flush_interval=0.05,
        batch_size=10,
        max_queue=max_queue,
        retry_interval=RETRY,
        close_sink=False,
        journal=False,
    )
    shutil.rmtree(blocked, ignore_errors=True)
    blocked.write_text("a file where the spool directory should be")
    return recorder


def test_when_the_spool_cannot_be_written_either_events_wait_in_memory(
    sqlite_url: str, tmp_path: Path, locked: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    store = WatchedStore(UsageStore(sqlite_url))
    blocked = tmp_path / "spool"
    recorder = _refused_spool(store, blocked)
    first = events(25)
    for event in first:
        recorder.record(event)
    # Three tries of the database, and after each of the first two, one of the spool: all refused.
    store.wait_until(lambda: store.failures >= 3, "three failed writes")
    assert not recorder.flush(0.1)  # neither the database (locked) nor the disk takes them
    assert recorder.pending == 25
    assert recorder.stats["spooled"] == 0
    assert sum("cannot write the usage spool" in record.getMessage() for record in caplog.records) == 1  # once
    blocked.unlink()  # the disk is back
    assert recorder.flush(30)
    assert recorder.spooled == 25
    locked.execute("COMMIT")  # and the database too
    second = events(5)
    for event in second:
        recorder.record(event)
    store.wait_for_rows(30)
    recorder.close()
    assert {event.event_id for event in store.store.events()} == {event.event_id for event in first + second}


@pytest.mark.parametrize("count", [5, 25], ids=["a batch", "past max_queue"])
def test_events_held_in_memory_go_to_the_database_when_it_is_back_while_the_spool_still_refuses(
    sqlite_url: str, tmp_path: Path, locked: sqlite3.Connection, count: int
) -> None:
    # Past max_queue the writer first spills the excess to the spool: that being refused must not keep the
    # database from being tried.
    store = WatchedStore(UsageStore(sqlite_url))
    recorder = _refused_spool(store, tmp_path / "spool", max_queue=10)
    recorded = events(count)
    for event in recorded:
        recorder.record(event)
    # Neither the database (locked) nor the disk takes them.
    until(lambda: recorder.held_in_memory == count, f"{count} events held in memory")
    assert not recorder.flush(0.1)
    assert recorder.stats["spooled"] == 0
    locked.execute("COMMIT")  # the database is back; the spool directory is still a file
    store.wait_for_rows(count)
    assert recorder.flush(30)
    assert recorder.held_in_memory == 0
    recorder.close()
    assert {event.event_id for event in store.store.events()} == {event.event_id for event in recorded}
    assert recorder.stats["spooled"] == 0


def test_a_full_queue_spills_to_the_spool_and_drops_nothing(
    sqlite_url: str, tmp_path: Path, locked: sqlite3.Connection
) -> None:
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", batch_size=10, max_queue=50, close_sink=False)
    for event in events(2000):
        recorder.record(event)
    assert recorder.flush(60)
    assert recorder.stats["spooled"] == 2000
    locked.execute("COMMIT")
    recorder.close()  # a clean close tries the database once more
    recorder2 = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    recorder2.close()
    assert store.count() == 2000


def test_replay_after_a_crash_half_way_counts_nothing_twice(sqlite_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    store = UsageStore(sqlite_url)
    batch = events(100)
    store.write(batch[:60])  # stored before the crash...
    spool.mkdir()
    # ...but still in the spool file of a process that is gone (a pid above the kernel's limit).
    probe = UsageRecorder(store, spool_dir=tmp_path / "probe", close_sink=False)
    prefix = probe.spool_path.name.split("-")[0]  # spool files of one database share it
    probe.close()
    orphan = spool / f"{prefix}-{2**22 + 1}.jsonl"
    orphan.write_text("".join(json.dumps(event.to_json()) + "\n" for event in batch) + '{"torn": ')
    recorder = UsageRecorder(store, spool_dir=spool, close_sink=False)
    recorder.close()
    assert store.count() == 100
    assert not orphan.exists()


def test_a_spool_file_is_replayed_by_one_process_at_a_time(sqlite_url: str, tmp_path: Path) -> None:
    """The workers of a restarted service all start at once: one replays a dead process's spool, not each of them."""
    spool = tmp_path / "spool"
    spool.mkdir()
    probe = UsageRecorder(UsageStore(sqlite_url), spool_dir=tmp_path / "probe")
    prefix = probe.spool_path.name.split("-")[0]
    probe.close()
    batch = events(50)
    orphan = spool / f"{prefix}-{2**22 + 1}.jsonl"  # a process that is gone
    orphan.write_text("".join(json.dumps(event.to_json()) + "\n" for event in batch))
    first = WatchedStore(UsageStore(sqlite_url), gate=threading.Event())
    replaying = UsageRecorder(first, spool_dir=spool, batch_size=10)
    first.wait_until(lambda: first.started >= 1, "the first recorder replaying the orphan")
    other = UsageRecorder(UsageStore(sqlite_url), spool_dir=spool)  # replays at start, then closes
    other.close()
    assert other.stats["replayed"] == 0  # the file is the first one's to replay: it left it alone
    assert orphan.exists()
    assert first.gate is not None
    first.gate.set()
    replaying.close()
    assert replaying.stats["replayed"] == 50
    with UsageStore(sqlite_url) as store:
        assert store.count() == 50
    assert not orphan.exists()


class LockedAfter(WatchedStore):
    """A `WatchedStore` whose file another connection locks (``BEGIN EXCLUSIVE``) once it stored ``rows`` rows."""

    def __init__(self, store: UsageStore, holder: sqlite3.Connection, rows: int) -> None:
        super().__init__(store)
        self.holder = holder
        self.rows = rows
        self.failed_before_lock: int | None = None  # the writes that had failed when the file was locked

    def write_rows(self, rows: Sequence[UsageRow]) -> int:
        written = super().write_rows(rows)
        if self.failed_before_lock is None and sum(self.batches) >= self.rows:
            self.holder.execute("BEGIN EXCLUSIVE")
            self.failed_before_lock = self.failures
        return written


def test_a_replay_that_fails_part_way_goes_on_where_it_stopped(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its stored batches are neither counted in ``replayed`` again nor refused again when the replay is retried."""
    monkeypatch.setattr(_engine, "SQLITE_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)
    spool = tmp_path / "spool"
    spool.mkdir()
    probe = UsageRecorder(UsageStore(sqlite_url), spool_dir=tmp_path / "probe")
    prefix = probe.spool_path.name.split("-")[0]
    probe.close()
    bad = plain_event(prompt_tokens=2**64 - 1)  # in the first batch: refused, its 9 neighbours stored
    batch = [bad, *events(29)]
    orphan = spool / f"{prefix}-{2**22 + 1}.jsonl"  # a process that is gone
    orphan.write_text("".join(json.dumps(event.to_json()) + "\n" for event in batch))
    holder = sqlite3.connect(
        sqlite_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None, check_same_thread=False
    )
    store = LockedAfter(UsageStore(sqlite_url), holder, rows=9)
    recorder = UsageRecorder(store, spool_dir=spool, batch_size=10, retry_interval=RETRY, close_sink=False)
    store.wait_until(
        lambda: store.failed_before_lock is not None and store.failures >= store.failed_before_lock + 3,
        "the next batch, then two retries, found the file locked",
    )
    holder.execute("COMMIT")  # the other process lets go
    store.wait_for_rows(29)
    until(lambda: not orphan.exists(), "the orphan replayed and removed")
    recorder.close()
    holder.close()
    assert store.store.count() == 29
    assert (recorder.stats["replayed"], recorder.stats["refused"]) == (29, 1)
    assert [UsageEvent.from_json(kept) for kept in refused(tmp_path)] == [bad]


def test_an_event_refused_in_a_batch_the_database_then_fails_is_kept_aside_once(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its batch goes to the spool whole, and the row is refused when the batch is stored, not each time it is tried."""
    monkeypatch.setattr(_engine, "SQLITE_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)
    UsageStore(sqlite_url).close()
    holder = sqlite3.connect(
        sqlite_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None, check_same_thread=False
    )
    # Written in halves to find the refused row: 4 of its neighbours are stored, then the file is locked.
    store = LockedAfter(UsageStore(sqlite_url), holder, rows=4)
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", batch_size=10, flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    bad = plain_event(prompt_tokens=2**64 - 1)
    for event in [bad, *events(9)]:
        recorder.record(event)
    assert recorder.flush(30)
    assert recorder.stats["spooled"] == 10
    holder.execute("COMMIT")  # the other process lets go
    store.wait_for_rows(9)
    until(lambda: recorder.spooled == 0, "the spool replayed")
    recorder.close()
    holder.close()
    assert store.store.count() == 9
    assert recorder.stats["refused"] == 1
    assert [UsageEvent.from_json(kept) for kept in refused(tmp_path)] == [bad]


def test_garbage_in_a_spool_file_costs_only_its_own_lines(sqlite_url: str, tmp_path: Path) -> None:
    """Bytes that are no UTF-8, or JSON that is no event, are skipped; the rows around them are replayed."""
    spool = tmp_path / "spool"
    store = UsageStore(sqlite_url)
    batch = events(6)
    probe = UsageRecorder(store, spool_dir=tmp_path / "probe", close_sink=False)
    prefix = probe.spool_path.name.split("-")[0]
    probe.close()
    spool.mkdir()
    lines = [json.dumps(event.to_json()).encode() + b"\n" for event in batch]
    # What a crash of the machine can leave in a file (a block of old disk contents), and an id of no type.
    junk = [b"\xff\xfe\x00garbage\x93\n", b'{"event_id": 5}\n']
    orphan = spool / f"{prefix}-{2**22 + 1}.jsonl"
    orphan.write_bytes(b"".join([*lines[:2], junk[0], *lines[2:4], junk[1], *lines[4:]]))
    recorder = UsageRecorder(store, spool_dir=spool, close_sink=False)
    recorder.close()
    assert store.count() == 6
    assert not orphan.exists()
    assert recorder.stats["failed_writes"] == 0  # the database was never taken for down


def test_a_spool_file_that_cannot_be_read_holds_back_neither_the_database_nor_the_journals(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An OSError reading one spool file is that file's, not the database failing (which spooled every row)."""
    spool = tmp_path / "spool"
    store = UsageStore(sqlite_url)
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_THREE_ROWS.format(url=sqlite_url, spool=str(spool))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == 0, killed.stderr
    prefix = next(spool.glob("*.journal")).name.split("-")[0]
    # A path that open() refuses, as it refuses a file of another user's process written with umask 077
    # (the tests may run as root, who reads any file: a directory of that name refuses root too).
    unreadable = spool / f"{prefix}-{2**22 + 1}.jsonl"
    unreadable.mkdir()
    recorder = UsageRecorder(store, spool_dir=spool, flush_interval=0.05, close_sink=False)
    recorder.record(plain_event())
    assert recorder.flush(10)
    recorder.close()
    assert store.count() == 3 + 1  # the dead process's journal replayed, the new row written
    assert (recorder.stats["failed_writes"], recorder.stats["spooled"]) == (0, 0)
    assert "usage database unavailable" not in caplog.text
    assert f"could not replay the usage file {unreadable} (IsADirectoryError" in caplog.text
    assert unreadable.is_dir()  # left in place


_KILLED_AFTER_THREE_ROWS = """
import os, uuid
from datetime import UTC, datetime
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.accounting._events import UsageEvent
from autogen_reliability.storage import UsageStore

recorder = UsageRecorder(UsageStore({url!r}), spool_dir={spool!r}, flush_interval=3600)
for _ in range(3):
    recorder.record(UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0))
os._exit(0)
"""


def test_a_forked_child_writes_its_own_rows(sqlite_url: str, tmp_path: Path) -> None:
    """A recorder made before a fork (multiprocessing's workers, a pre-forking server) records in the child too.

    The parent's writer thread does not come along: the child gets one of its own, and its own journal and
    spool file, and writes what it recorded when it exits (a multiprocessing child ends with ``os._exit``).
    """
    import multiprocessing  # noqa: PLC0415

    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", flush_interval=0.05, close_sink=False)
    first = events(1)[0]
    recorder.record(first)
    assert recorder.flush(10)
    in_child = events(5)

    def work() -> None:
        for event in in_child:
            recorder.record(event)

    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert {event.event_id for event in store.events()} == {first.event_id, *(event.event_id for event in in_child)}
    assert not list((tmp_path / "spool").glob("*.jsonl"))  # written, not left in a spool file (the parent's)
    killed = events(3)

    def work_and_die() -> None:  # killed outright: its rows are in a journal of its own
        for event in killed:
            recorder.record(event)
        os.kill(os.getpid(), signal.SIGKILL)

    child = multiprocessing.get_context("fork").Process(target=work_and_die)
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    later = events(2)  # the parent goes on recording as before
    for event in later:
        recorder.record(event)
    recorder.close()
    assert store.count() == 8
    UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False).close()  # the next process
    assert store.count() == 11
    assert not list((tmp_path / "spool").iterdir())


_LOCKER = """
import sqlite3, sys
holder = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
for _ in sys.stdin:
    holder.execute("COMMIT" if holder.in_transaction else "BEGIN EXCLUSIVE")
    print(flush=True)
"""


def test_a_child_forked_during_an_outage_says_its_end_with_its_own_spooled_events(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its counters start at zero: the events the parent had spooled before the outage are not taken off its own."""
    import multiprocessing  # noqa: PLC0415

    monkeypatch.setattr(_engine, "SQLITE_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)
    store = UsageStore(sqlite_url)
    # Another process locks the file, and lets go, at each line (a lock of this process would be the child's too).
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, sqlite_url.removeprefix("sqlite:///")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def toggle() -> None:
        assert locker.stdin is not None
        assert locker.stdout is not None
        locker.stdin.write("\n")
        locker.stdin.flush()
        assert locker.stdout.readline() == "\n"

    context = multiprocessing.get_context("fork")
    spooled, back = context.Event(), context.Event()
    said = context.Queue()
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )

    def work() -> None:
        class Said(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "reachable again" in record.getMessage():
                    said.put((record.getMessage().split("; ")[1], record.__dict__["spooled"]))

        logging.getLogger("autogen_reliability").addHandler(Said())
        recorder.record(events(1)[0])
        assert recorder.flush(30)
        spooled.set()
        assert back.wait(30)
        until(lambda: recorder.spooled == 0, "the child's row replayed")

    child = context.Process(target=work)
    try:
        toggle()
        for event in events(3):  # a first outage: 3 spooled, then replayed
            recorder.record(event)
        assert recorder.flush(30)
        toggle()
        until(lambda: store.count() == 3, "the 3 rows replayed")
        toggle()  # a second outage, the parent's 3 spooled events counted before it
        for event in events(2):
            recorder.record(event)
        assert recorder.flush(30)
        until(lambda: recorder.stats["spooled"] == 5, "the parent's 2 rows spooled")
        child.start()
        assert spooled.wait(30)
        toggle()
        back.set()
        child.join(60)
        assert child.exitcode == 0
        assert said.get(timeout=10) == ("replaying the 1 events spooled meanwhile", 1)
    finally:
        if child.pid is not None:
            child.kill()
            child.join(30)
        locker.kill()
        locker.wait(30)
    recorder.close()
    until(lambda: store.count() == 3 + 2 + 1, "every row stored")


def test_a_sqlite_file_deleted_mid_run_is_made_again_and_gets_every_row(sqlite_url: str, tmp_path: Path) -> None:
    store = ReopenedStore(UsageStore(sqlite_url))
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    for event in events(3):
        recorder.record(event)
    assert recorder.flush(10)
    for suffix in ("", "-wal", "-shm"):
        Path(sqlite_url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    later = events(4)
    for event in later:
        recorder.record(event)
    # Spooled, then replayed into the file made again (counted from the writes: the file may have no tables yet).
    store.wait_until(lambda: sum(store.batches) == 7, "the 4 rows replayed")
    recorder.close()
    assert {event.event_id for event in store.store.events()} == {event.event_id for event in later}
    assert recorder.stats["written"] == 3
    assert recorder.stats["replayed"] == 4


def test_a_connection_that_opened_sqlite_read_only_is_dropped_and_its_rows_replayed(
    sqlite_url: str, tmp_path: Path
) -> None:
    # SQLite opens a file it cannot write read-only, and that connection stays read-only once the file is
    # writable again. The tests may run as root, who writes any file, so query_only stands in for the
    # permissions: SQLite refuses writes with it as it does on a read-only file (SQLITE_READONLY).
    read_only = threading.Event()
    read_only.set()

    def open_as_the_file_allows(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        if read_only.is_set():
            dbapi_connection.execute("PRAGMA query_only = ON")

    store = ReopenedStore(UsageStore(sqlite_url))
    listen(store.store.engine, "connect", open_as_the_file_allows)
    store.store.engine.dispose()  # the schema check's connection was opened before the file turned read-only
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    recorded = events(5)
    for usage in recorded:
        recorder.record(usage)
    store.wait_until(lambda: store.failures >= 2, "a write and a replay refused")
    read_only.clear()  # the file's permissions are fixed
    # Counted from the writes, so that only the writer thread takes connections from the pool.
    store.wait_until(lambda: sum(store.batches) == 5, "the 5 rows replayed")
    recorder.close()
    assert recorder.stats["spooled"] == 5
    assert {usage.event_id for usage in store.store.events()} == {usage.event_id for usage in recorded}


def test_a_cleanup_batch_longer_than_the_busy_timeout_spools_a_writers_rows_then_they_land(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/storage.md, "Retention": on SQLite a writer waits for a cleanup batch only its busy timeout, then spools.

    The batch here is held open until the writer has spooled, as a batch of 10,000 rows and their days' rollups
    takes seconds on a busy machine (measured: 3.3 s a batch, 5 spells of spooling per writer in one cleanup).
    """
    monkeypatch.setattr(_engine, "SQLITE_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)
    old = datetime.now(UTC).replace(year=2020)
    cleaner = UsageStore(sqlite_url)
    cleaner.write([plain_event(started_at=old) for _ in range(5)])
    in_batch, release = threading.Event(), threading.Event()

    def hold_the_batch(_connection: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM AR_USAGE_RECORDS"):
            in_batch.set()
            assert release.wait(30), "the writer never spooled"

    listen(cleaner.engine, "after_cursor_execute", hold_the_batch)
    cleanup = threading.Thread(target=lambda: cleaner.delete_older_than(old.date().replace(year=2021)))
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    cleanup.start()
    try:
        assert in_batch.wait(30)
        recorded = [plain_event() for _ in range(3)]
        for usage in recorded:
            recorder.record(usage)
        deadline = time.monotonic() + 30
        while recorder.stats["spooled"] < len(recorded) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder.stats["spooled"] == len(recorded)  # not waited for: spooled
    finally:
        release.set()
        cleanup.join(30)
    assert not cleanup.is_alive()
    assert "usage database unavailable (OperationalError: (sqlite3.OperationalError) database is locked)" in caplog.text
    deadline = time.monotonic() + 30
    while recorder.stats["replayed"] < len(recorded) and time.monotonic() < deadline:
        time.sleep(0.01)
    recorder.close()
    assert {usage.event_id for usage in store.events()} == {usage.event_id for usage in recorded}
    assert "usage database reachable again" in caplog.text
    store.close()
    cleaner.close()


def test_sigkill_loses_nothing_once_the_journal_is_replayed(sqlite_url: str, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys, uuid
        from datetime import UTC, datetime
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.accounting._events import UsageEvent
        from autogen_reliability.storage import UsageStore

        # A long batch window: the writer stores what flush() asks for, and little else before the kill.
        recorder = UsageRecorder(UsageStore({sqlite_url!r}), spool_dir={str(tmp_path / "spool")!r}, flush_interval=60)
        def event():
            return UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0)
        for _ in range(500):
            recorder.record(event())
        assert recorder.flush(30)  # these 500 are stored
        for _ in range(50):
            recorder.record(event())  # recorded just before the kill: inside the window
        print("recorded", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "recorded" in done.stdout
    store = UsageStore(sqlite_url)
    assert 500 <= store.count() <= 550  # the last 50 are not all written yet (a wake-up flush() left may write some)...
    UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False).close()
    assert store.count() == 550  # ...but it is in the journal, which the next recorder replays


def test_spool_of_a_killed_process_is_replayed_by_the_next_one(
    sqlite_url: str, tmp_path: Path, locked: sqlite3.Connection
) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, uuid
        from datetime import UTC, datetime
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.accounting._events import UsageEvent
        from autogen_reliability.storage import UsageStore, _engine

        _engine.SQLITE_BUSY_TIMEOUT_MS = {BUSY_TIMEOUT_MS}  # the database is locked: fail fast and spool
        recorder = UsageRecorder(UsageStore({sqlite_url!r}), spool_dir={str(tmp_path / "spool")!r}, flush_interval=0.05)
        for _ in range(120):
            recorder.record(UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0))
        recorder.flush(30)  # the database is locked: all 120 are in the spool, fsynced
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    locked.execute("COMMIT")
    store = UsageStore(sqlite_url)
    UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False).close()
    assert store.count() == 120


def test_a_dead_process_spool_is_replayed_while_another_process_has_its_pid(sqlite_url: str, tmp_path: Path) -> None:
    """A pid is reused (by a process of another service, in a container its next worker's): its spool still goes in."""
    spool = tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import os, signal, uuid
        from datetime import UTC, datetime
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.accounting._events import UsageEvent
        from autogen_reliability.storage import UsageStore, _engine

        _engine.SQLITE_BUSY_TIMEOUT_MS = {BUSY_TIMEOUT_MS}  # the database is locked: fail fast and spool
        recorder = UsageRecorder(
            UsageStore({sqlite_url!r}), spool_dir={str(spool)!r}, flush_interval=0.05, journal=False
        )
        for _ in range(7):
            recorder.record(UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0))
        recorder.flush(30)  # the database is locked: all 7 are in the spool, fsynced
        print(recorder.spool_path.name, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    UsageStore(sqlite_url).close()
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    holder.execute("COMMIT")
    holder.close()
    assert done.returncode == -signal.SIGKILL, done.stderr
    prefix = done.stdout.strip().split("-")[0]
    # A process that is not a recorder of this database, alive, and now holding the dead one's pid.
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        spooled = spool / f"{prefix}-{unrelated.pid}.jsonl"
        (spool / done.stdout.strip()).rename(spooled)  # what the dead process left, under the pid reused
        for leftover in spool.glob(f"{prefix}-*.lock"):
            leftover.rename(leftover.with_name(f"{prefix}-{unrelated.pid}.lock"))
        store = UsageStore(sqlite_url)
        UsageRecorder(store, spool_dir=spool, close_sink=False).close()
        assert store.count() == 7
        assert not spooled.exists()
        assert not list(spool.glob("*.lock"))  # the dead process's, whose spool is all replayed
        store.close()
    finally:
        unrelated.kill()
        unrelated.wait(30)


def test_the_spool_of_a_live_process_is_left_to_it(sqlite_url: str, tmp_path: Path) -> None:
    """Its lock file says it lives: another recorder of the database, started meanwhile, does not replay its file."""
    spool = tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import os, sys, uuid
        from datetime import UTC, datetime
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.accounting._events import UsageEvent
        from autogen_reliability.storage import UsageStore, _engine

        _engine.SQLITE_BUSY_TIMEOUT_MS = {BUSY_TIMEOUT_MS}  # the database is locked: fail fast and spool
        recorder = UsageRecorder(
            UsageStore({sqlite_url!r}), spool_dir={str(spool)!r}, flush_interval=0.05, retry_interval=3600
        )
        for _ in range(4):
            recorder.record(UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0))
        recorder.flush(30)
        print(recorder.spool_path.name, flush=True)
        sys.stdin.readline()
        os._exit(0)  # no close(): its spool is left as it is
        """
    )
    UsageStore(sqlite_url).close()
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    live = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout is not None
        spooled = spool / live.stdout.readline().strip()
        holder.execute("COMMIT")
        store = UsageStore(sqlite_url)
        UsageRecorder(store, spool_dir=spool, close_sink=False).close()
        assert store.count() == 0
        assert spooled.exists()
        assert live.stdin is not None
        live.stdin.write("\n")
        live.stdin.flush()
        assert live.wait(60) == 0
        UsageRecorder(store, spool_dir=spool, close_sink=False).close()  # the next process, once it is gone
        assert store.count() == 4
        assert sorted(path.name for path in spool.iterdir()) == []
        store.close()
    finally:
        live.kill()
        live.wait(30)
        holder.close()


def test_postgresql_stopped_mid_run_then_started(tmp_path: Path, store_url: str) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("this outage is of a PostgreSQL server")
    cluster = os.environ.get(PG_CLUSTER_ENV)
    if not cluster:
        pytest.skip(f"set {PG_CLUSTER_ENV} (e.g. '15 arci') to let this test stop and start the server")
    store = WatchedStore(UsageStore(store_url))
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    before = events(100)
    for event in before:
        recorder.record(event)
    assert recorder.flush(30)
    subprocess.run(["pg_ctlcluster", *cluster.split(), "stop", "-m", "fast"], check=True, timeout=60)
    try:
        during = events(150)
        for event in during:
            recorder.record(event)
        assert recorder.flush(30)
        assert recorder.spooled == 150
    finally:
        subprocess.run(["pg_ctlcluster", *cluster.split(), "start"], check=True, timeout=60)
    store.wait_for_rows(250, seconds=60)
    recorder.close()
    assert {event.event_id for event in store.store.events()} == {event.event_id for event in before + during}


def test_a_locked_postgresql_table_spools_then_replays(tmp_path: Path, make_pg_database: Callable[[], str]) -> None:
    # A migration or a LOCK TABLE elsewhere: the writer gives up after the lock timeout instead of waiting it out.
    url = make_pg_database()
    store = WatchedStore(UsageStore(url))
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    holder = create_engine(url, poolclass=NullPool).connect()
    try:
        holder.execute(text("LOCK TABLE ar_usage_records IN ACCESS EXCLUSIVE MODE"))
        during = events(100)
        for event in during:
            recorder.record(event)
        assert recorder.flush(30)  # while the lock is still held
        assert recorder.spooled == 100
    finally:
        holder.rollback()
        holder.close()
    after = events(10)
    for event in after:
        recorder.record(event)
    store.wait_for_rows(110)
    recorder.close()
    assert {event.event_id for event in store.store.events()} == {event.event_id for event in during + after}


def test_a_row_postgresql_cannot_index_is_refused_and_its_batch_stored(
    tmp_path: Path, make_pg_database: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    # A model name of 4,000 characters that do not compress (as a provider could answer, or a config hold):
    # the report index's row would be past PostgreSQL's btree limit of 2,704 bytes (ProgramLimitExceeded,
    # an OperationalError). The database is up: only that row can never go in.
    store = UsageStore(make_pg_database())
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", retry_interval=RETRY, close_sink=False)
    bad = plain_event(model=os.urandom(2000).hex())
    batch = [*events(10), bad, *events(10)]
    for event in batch:
        recorder.record(event)
    assert recorder.flush(30)
    assert store.count() == 20
    assert (recorder.stats["written"], recorder.stats["spooled"], recorder.stats["refused"]) == (20, 0, 1)
    assert recorder.stats["failed_writes"] == 0
    assert recorder.spooled == 0
    assert [UsageEvent.from_json(kept) for kept in refused(tmp_path)] == [bad]
    assert "refused 1 usage event(s) (OperationalError" in caplog.text
    assert "index row size" in caplog.text
    assert "usage database unavailable" not in caplog.text
    recorder.close()
    assert not list((tmp_path / "spool").glob(f"{recorder.spool_path.stem}*"))
    # Such a row spooled by an older version, whose batch waited there for ever: its replay stores the others.
    stuck = [*events(3), plain_event(agent=os.urandom(2000).hex()), *events(3)]
    spooled = recorder.spool_path.with_name(f"{recorder.spool_path.stem.split('-')[0]}-{2**22 + 1}.jsonl")
    spooled.write_text("".join(json.dumps(event.to_json()) + "\n" for event in stuck))
    UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False).close()
    assert store.count() == 26
    assert not spooled.exists()
    assert [UsageEvent.from_json(kept) for kept in refused(tmp_path)] == [bad, stuck[3]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"flush_interval": 0}, "flush_interval must be > 0"),
        ({"flush_interval": 10**400}, "flush_interval must be > 0 and <= 3600 seconds, got an int too large"),
        ({"retry_interval": -(10**5000)}, "retry_interval must be > 0 and <= 3600 seconds, got an int too large"),
        ({"batch_size": 100, "max_queue": 10}, "max_queue must be an int >= batch_size"),
    ],
)
def test_bad_recorder_options_fail_at_construction(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        UsageRecorder(UsageStore(f"sqlite:///{tmp_path / 'x.db'}"), spool_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [10**400, -(10**5000)], ids=["10**400", "-10**5000"])
def test_a_timeout_too_large_for_a_float_is_refused_by_flush_and_close(tmp_path: Path, timeout: int) -> None:
    recorder = UsageRecorder(UsageStore(f"sqlite:///{tmp_path / 'x.db'}"), spool_dir=tmp_path / "spool")
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds or None, got an int too large"):
        recorder.flush(timeout)
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds or None, got an int too large"):
        recorder.close(timeout)
    recorder.close()


def test_a_sink_made_by_a_factory_needs_a_name(sqlite_url: str, tmp_path: Path) -> None:
    # Spool files and journals are named before the factory runs: named after the function, the rows
    # spooled for one database would be replayed into another recorder's, made by another function
    # of the same name (every lambda is "<lambda>").
    made: list[UsageStore] = []

    def factory() -> UsageStore:
        made.append(UsageStore(sqlite_url))
        return made[-1]

    with pytest.raises(ConfigurationError, match=r"name=.*database URL"):
        UsageRecorder(factory, spool_dir=tmp_path / "spool")
    assert made == []
    assert not (tmp_path / "spool").exists()
    recorder = UsageRecorder(factory, spool_dir=tmp_path / "spool", name=sqlite_url)
    recorder.record(plain_event())
    recorder.close()
    assert made[0].count() == 1


def test_a_spool_dir_that_is_a_file_or_under_one_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    file = tmp_path / "spool"
    file.write_text("")
    for spool_dir, message in ((file, "is not a directory"), (file / "under", f"cannot be made: {file} is not a")):
        with pytest.raises(ConfigurationError, match=f"^spool_dir {spool_dir} {message}"):
            UsageRecorder(UsageStore(sqlite_url), spool_dir=spool_dir)


def test_a_spool_dir_starting_with_a_tilde_is_under_the_home_directory(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As pip or git read "~/...": a literal "~" directory in the working directory was made before.
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)

    def unreachable() -> UsageStore:
        raise ConnectionRefusedError("the database is down")

    recorder = UsageRecorder(unreachable, spool_dir="~/spool", name=sqlite_url, flush_interval=0.05)
    recorder.record(plain_event())
    recorder.close(timeout=0.5)
    # The row, spooled, and the lock file that says its process lives.
    assert sorted(path.suffix for path in (home / "spool").iterdir()) == [".jsonl", ".lock"]
    assert list(work.iterdir()) == []
    with pytest.raises(ConfigurationError, match=r"^spool_dir ~no-such-user-here/spool cannot be expanded: no such"):
        UsageRecorder(UsageStore(sqlite_url), spool_dir="~no-such-user-here/spool")


def test_rows_the_journal_could_not_hold_are_not_said_to_be_in_it_at_close(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    gate = threading.Event()

    def unreachable() -> UsageStore:  # the writer thread waits here before it makes any journal file
        gate.wait(30)
        raise ConnectionRefusedError("the database is down")

    recorder = UsageRecorder(unreachable, spool_dir=spool, name=sqlite_url, flush_interval=0.05, retry_interval=RETRY)
    spool.write_text("")  # made a file after the recorder checked it: neither the journal nor the spool can be written
    recorder.record(plain_event())
    gate.set()
    recorder.close(timeout=0.5)
    said = [record.getMessage() for record in caplog.records if "neither written nor spooled" in record.getMessage()]
    assert said == [
        "1 usage events could be neither written nor spooled; they are lost (the journal could not hold them)"
    ]


def test_a_spool_write_cut_off_half_way_loses_none_of_the_rows_appended_after_it(
    sqlite_url: str, tmp_path: Path, locked: sqlite3.Connection
) -> None:
    """A spool append that stopped mid-line (a full disk, a file size limit) leaves a line without its end.

    The rows of that append stay queued and are spooled again; what is appended next starts on a line of its
    own, so only the torn fragment is skipped when the spool is replayed, never the first row after it.
    """
    store = WatchedStore(UsageStore(sqlite_url))
    recorder = UsageRecorder(
        store, spool_dir=tmp_path / "spool", flush_interval=0.05, retry_interval=RETRY, close_sink=False
    )
    recorded = events(50)
    torn = json.dumps(recorded[0].to_json())
    recorder.spool_path.parent.mkdir(parents=True, exist_ok=True)
    recorder.spool_path.write_text(torn[: len(torn) // 2])  # what the cut-off write left behind
    for event in recorded:
        recorder.record(event)
    assert recorder.flush(30)
    assert recorder.stats["spooled"] == 50
    locked.execute("COMMIT")  # the database is back: the spool is replayed
    until(lambda: recorder.spooled == 0, "the spool replayed")
    recorder.close()
    assert {event.event_id for event in store.store.events()} == {event.event_id for event in recorded}


def test_close_keeps_to_its_timeout_while_a_write_hangs(sqlite_url: str, tmp_path: Path) -> None:
    """A database that stopped answering mid-write: close() (at exit, 10 s) waits its timeout, not twice that."""
    spool = tmp_path / "spool"
    store = WatchedStore(UsageStore(sqlite_url), gate=threading.Event())
    recorder = UsageRecorder(store, spool_dir=spool, flush_interval=0.05, close_sink=False)
    hung, behind = events(5), events(3)
    for event in hung:
        recorder.record(event)
    store.wait_until(lambda: store.started >= 1, "a write begun")
    for event in behind:
        recorder.record(event)
    # What close() gives the writer thread to end, once flush() has spent the timeout on the hung write: what is
    # left of its one deadline (nothing), not the whole timeout again.
    joins: list[float | None] = []
    join = recorder._thread.join

    def watched_join(timeout: float | None = None) -> None:
        joins.append(timeout)
        join(timeout)

    recorder._thread.join = watched_join  # type: ignore[method-assign]
    recorder.close(timeout=2)
    assert joins == [0.0]
    assert recorder.spooled == 3  # the rows behind the hung write
    assert list(spool.glob("*.journal"))  # and every row still unstored, for the next process
    assert store.gate is not None
    store.gate.set()
    store.wait_until(lambda: bool(store.batches), "the hung write done")
    UsageRecorder(store.store, spool_dir=spool, close_sink=False).close()
    assert {event.event_id for event in store.store.events()} == {event.event_id for event in hung + behind}


def test_the_spooled_counter_counts_the_rows_close_and_a_late_record_spool(sqlite_url: str, tmp_path: Path) -> None:
    """stats["spooled"] counts every row that went to the spool, as recorder.spooled does while they wait there."""
    store = WatchedStore(UsageStore(sqlite_url), gate=threading.Event())
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", flush_interval=0.05, close_sink=False)
    for event in events(5):
        recorder.record(event)
    store.wait_until(lambda: store.started >= 1, "a write begun")  # and hung there by the gate
    for event in events(3):
        recorder.record(event)
    recorder.close(timeout=0.5)  # the 3 rows behind the hung write go to the spool
    assert (recorder.spooled, recorder.stats["spooled"]) == (3, 3)
    recorder.record(events(1)[0])  # after close: straight to the spool
    assert (recorder.spooled, recorder.stats["spooled"]) == (4, 4)
    assert store.gate is not None
    store.gate.set()
    store.wait_until(lambda: bool(store.batches), "the hung write done")
    store.close()


def test_the_lock_file_of_a_process_killed_before_its_first_spooled_row_is_deleted_by_the_next_replay(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Killed between taking its lock file and writing its spool file: nothing of it is left for good."""
    spool = tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import sys
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.storage import UsageStore

        recorder = UsageRecorder(UsageStore({sqlite_url!r}), spool_dir={str(spool)!r})
        recorder._spool._hold()  # what its first spooled batch does before it writes the rows
        print(recorder._spool.lock_path.name, flush=True)
        sys.stdin.readline()  # then it is killed
        """
    )
    store = UsageStore(sqlite_url)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        lock = spool / holder.stdout.readline().strip()
        UsageRecorder(store, spool_dir=spool, close_sink=False).close()
        assert lock.exists()  # its process lives, and holds it
        holder.kill()
        assert holder.wait(30) == -signal.SIGKILL
    finally:
        holder.kill()
        holder.wait(30)
    UsageRecorder(store, spool_dir=spool, close_sink=False).close()
    assert sorted(path.name for path in spool.iterdir()) == []  # before: the dead process's lock file, for ever
    store.close()
