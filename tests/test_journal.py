"""A process killed outright (SIGKILL, the OOM killer) loses no usage row it recorded: the journal keeps them."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from autogen_reliability import ConfigurationError, UsageRecorder
from autogen_reliability.accounting._journal import journal_supported
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, RecordedRequest

from .test_recorder import events

pytestmark = pytest.mark.skipif(not journal_supported(), reason="the journal needs flock (not on Windows)")

MODEL = "gpt-4o-mini"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'usage.db'}"


def replay(sqlite_url: str, spool: Path) -> UsageStore:
    """What the next process does: a recorder on the same database and spool directory, opened and closed."""
    store = UsageStore(sqlite_url)
    UsageRecorder(store, spool_dir=spool, close_sink=False).close()
    return store


@pytest.mark.parametrize("database", ["answering", "locked"])
def test_a_process_killed_while_recording_fast_loses_no_row(sqlite_url: str, tmp_path: Path, database: str) -> None:
    # The writer is busy (writing, or with the database locked, spooling) when the process kills itself right
    # after its last record(): every event recorded must reach the database once the next process replays.
    count = 20_000
    holder = None
    if database == "locked":
        UsageStore(sqlite_url).close()
        holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    script = textwrap.dedent(
        f"""
        import os, signal, uuid
        from datetime import UTC, datetime
        from autogen_reliability import UsageRecorder
        from autogen_reliability.accounting.events import UsageEvent
        from autogen_reliability.storage import UsageStore

        recorder = UsageRecorder(UsageStore({sqlite_url!r}), spool_dir={str(tmp_path / "spool")!r}, batch_size=500)
        call = uuid.uuid4()
        for n in range({count}):
            recorder.record(
                UsageEvent(
                    call_id=call, attempt=n + 1, started_at=datetime.now(UTC), latency_ms=1.0,
                    event_id=uuid.UUID(int=n + 1), prompt_tokens=n, cost_nanousd=n,
                )
            )
        print("recorded", recorder.stats, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    finally:
        if holder is not None:
            holder.execute("COMMIT")
            holder.close()
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "recorded" in done.stdout
    store = replay(sqlite_url, tmp_path / "spool")
    stored = store.events()
    assert len(stored) == count
    assert {event.event_id for event in stored} == {uuid.UUID(int=n + 1) for n in range(count)}
    assert sum(event.cost_nanousd or 0 for event in stored) == sum(range(count))
    assert not list((tmp_path / "spool").glob("*.journal")), "the replayed journal is deleted"


def test_every_request_the_server_answered_has_one_row_after_sigkill(sqlite_url: str, tmp_path: Path) -> None:
    # 20 concurrent calls through the wrapped real OpenAIChatCompletionClient, then the server stops answering
    # (20 calls wait on it) and the process is killed while the rows of its last calls are still unwritten.
    lock = threading.Lock()
    answered: set[str] = set()
    hold = threading.Event()

    def reply(request: RecordedRequest) -> FakeReply:
        label = str(request.messages[-1]["content"])
        if hold.is_set():
            return FakeReply.text("late", delay=60)
        with lock:
            answered.add(label)
        return FakeReply.text("ok")

    script = textwrap.dedent(
        f"""
        import asyncio, os
        from autogen_core.models import UserMessage
        from autogen_ext.models.openai import OpenAIChatCompletionClient
        from autogen_reliability import UsageRecorder, reliable, usage_scope
        from autogen_reliability.storage import UsageStore

        async def main():
            # Long batch windows: the rows of the last calls are surely still in memory when the kill comes.
            recorder = UsageRecorder(
                UsageStore({sqlite_url!r}), spool_dir={str(tmp_path / "spool")!r}, flush_interval=60, batch_size=5000,
                max_queue=5000,
            )
            inner = OpenAIChatCompletionClient(model={MODEL!r}, api_key="sk-test", base_url=os.environ["BASE_URL"])
            client = reliable(inner, recorder=recorder)
            labels = iter(range(10**9))

            async def worker():
                for n in labels:
                    async with usage_scope(session=f"call-{{n}}"):
                        await client.create([UserMessage(content=f"call-{{n}}", source="user")])
                    os.write(1, f"done call-{{n}}\\n".encode())

            await asyncio.gather(*(worker() for _ in range(20)))

        asyncio.run(main())
        """
    )
    done: set[str] = set()
    with FakeOpenAIServer(model=MODEL, default=reply) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "BASE_URL": server.base_url},
        )

        def read() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                done.add(line.split()[1])

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 120
            while len(done) < 300 and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            hold.set()
            with lock:
                seen = set(answered)
            # Wait until the client has taken in every answer sent (their rows are recorded) and each of its 20
            # workers waits on a request the server holds, then kill it.
            while (not seen <= done or server.request_count < len(seen) + 20) and time.monotonic() < deadline:
                if child.poll() is not None:
                    break
                time.sleep(0.05)
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert seen <= done, f"{len(seen - done)} answers not taken in"
            requests = server.request_count
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(30)
        reader.join(10)
    assert requests == len(seen) + 20  # 20 calls were waiting on the server when the process died
    with lock:
        assert answered == seen
    stored = replay(sqlite_url, tmp_path / "spool").events()
    sessions = [str(event.session) for event in stored]
    assert len(stored) == len(seen)
    assert sorted(sessions) == sorted(seen)  # one row per answered request, none twice, none missing
    assert all(event.outcome == "ok" and event.prompt_tokens > 0 for event in stored)


def test_the_journal_is_trimmed_as_rows_are_stored(sqlite_url: str, tmp_path: Path) -> None:
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", batch_size=2000, close_sink=False)
    for event in events(60_000):  # about four segments of journal
        recorder.record(event)
    assert recorder.flush(60)
    assert len(recorder.journal_paths) == 1  # only the segment being appended to is kept
    assert len(list((tmp_path / "spool").glob("*.journal"))) <= 2  # and the one made ready for the next rows
    recorder.close()
    assert store.count() == 60_000
    assert not list((tmp_path / "spool").glob("*.journal"))


def test_the_journal_of_a_live_recorder_is_not_replayed_by_another(sqlite_url: str, tmp_path: Path) -> None:
    store = UsageStore(sqlite_url)
    # A recorder whose rows wait in memory (and in its journal) for an hour.
    alive = UsageRecorder(store, spool_dir=tmp_path / "spool", flush_interval=3600, close_sink=False)
    recorded = events(100)
    for event in recorded:
        alive.record(event)
    assert alive.journal_paths
    other = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)  # replays what dead ones left
    other.close()
    assert store.count() == 0
    assert all(path.exists() for path in alive.journal_paths)
    alive.close()
    assert {event.event_id for event in store.events()} == {event.event_id for event in recorded}


def test_a_journal_left_by_a_recorder_that_could_store_nothing_is_replayed(sqlite_url: str, tmp_path: Path) -> None:
    # Neither the database nor the spool takes the rows at close: the journal keeps them for the next process.
    class BrokenSink:
        url = "broken"

        def write(self, events: Any) -> int:
            raise OSError("down")

        def close(self) -> None:
            pass

    spool = tmp_path / "spool"
    dead = UsageRecorder(BrokenSink(), spool_dir=spool, name=sqlite_url, flush_interval=0.05)
    spool.mkdir(exist_ok=True)
    dead.spool_path.symlink_to(tmp_path / "no" / "such" / "file")  # the spool cannot be written either
    recorded = events(50)
    for event in recorded:
        dead.record(event)
    dead.close(timeout=3)
    assert dead.stats["spooled"] == 0
    dead.spool_path.unlink()
    assert list(spool.glob("*.journal"))
    store = replay(sqlite_url, spool)
    assert {event.event_id for event in store.events()} == {event.event_id for event in recorded}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flush_interval": float("inf")}, r"flush_interval must be > 0 and <= 3600 seconds, got inf"),
        ({"flush_interval": 1e10}, r"flush_interval must be > 0 and <= 3600 seconds"),
        ({"flush_interval": float("nan")}, r"flush_interval must be > 0 and <= 3600 seconds, got nan"),
        ({"flush_interval": -1}, r"flush_interval must be > 0"),
        ({"flush_interval": "1"}, r"flush_interval must be a number of seconds, got str"),
        ({"flush_interval": True}, r"flush_interval must be a number of seconds, got bool"),
        ({"batch_size": True}, r"batch_size must be an int, got bool"),
        ({"batch_size": 10.0}, r"batch_size must be an int, got float"),
        ({"batch_size": 10**12}, r"batch_size must be an int >= 1 and <= 100_000_000"),
        ({"max_queue": 10**12}, r"max_queue must be an int >= batch_size \(1000\) and <= 100_000_000"),
        ({"max_queue": float("inf")}, r"max_queue must be an int, got float"),
        ({"close_sink": "yes"}, r"close_sink must be True or False"),
        ({"journal": 1}, r"journal must be True or False"),
        ({"name": 5}, r"name must be a str, got int"),
    ],
)
def test_bad_numeric_recorder_options_fail_at_construction(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        UsageRecorder(UsageStore(f"sqlite:///{tmp_path / 'x.db'}"), spool_dir=tmp_path, **kwargs)


def test_the_largest_flush_interval_runs(sqlite_url: str, tmp_path: Path) -> None:
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", flush_interval=3600, close_sink=False)
    recorded = events(3)
    for event in recorded:
        recorder.record(event)
    assert recorder.flush(10)  # the writer thread is alive and answers the flush
    recorder.close()
    assert store.count() == 3


def test_a_torn_record_at_the_end_of_a_journal_is_skipped(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A machine crash can leave the last record half written: its CRC fails, the rows before it count.
    spool = tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import os, signal, uuid
        from datetime import UTC, datetime
        from autogen_reliability import UsageRecorder
        from autogen_reliability.accounting.events import UsageEvent
        from autogen_reliability.storage import UsageStore

        recorder = UsageRecorder(UsageStore({sqlite_url!r}), spool_dir={str(spool)!r}, flush_interval=3600)
        for n in range(10):
            recorder.record(
                UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0,
                           event_id=uuid.UUID(int=n + 1))
            )
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    written = [path for path in spool.glob("*.journal") if path.read_bytes()[64:68] != bytes(4)]
    assert len(written) == 1  # (and maybe an empty segment made ready for the next rows)
    path = written[0]
    data = path.read_bytes()
    end = 64  # after the header, records of u32 length, u32 crc32, u64 number, payload; then zeros
    while length := int.from_bytes(data[end : end + 4], "little"):
        end += 16 + length
    torn = (50).to_bytes(4, "little") + (12345).to_bytes(4, "little") + (10).to_bytes(8, "little") + b"\x01" * 20
    with open(path, "r+b") as journal:
        journal.seek(end)
        journal.write(torn)
    store = replay(sqlite_url, spool)
    assert {event.event_id for event in store.events()} == {uuid.UUID(int=n + 1) for n in range(10)}
    assert any("torn record" in record.getMessage() for record in caplog.records)
    assert not list(spool.glob("*.journal"))


def test_flush_and_close_take_an_infinite_timeout_and_refuse_nan(sqlite_url: str, tmp_path: Path) -> None:
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    recorder.record(events(1)[0])
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds or None, got nan"):
        recorder.flush(float("nan"))
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds or None"):
        recorder.close(timeout=float("nan"))
    assert recorder.flush(float("inf"))
    recorder.close(timeout=float("inf"))  # joined the writer thread for ever, not OverflowError
    assert store.count() == 1
