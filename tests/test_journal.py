"""A process killed outright (SIGKILL, the OOM killer) loses no usage row it recorded: the journal keeps them."""

from __future__ import annotations

import asyncio
import marshal
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import UserMessage

from autogen_reliability import ConfigurationError, ValidationPolicy, reliable
from autogen_reliability.accounting import PricingTable, TokenUsage, UsageRecorder
from autogen_reliability.accounting._events import ROW_FIELDS, UsageEvent
from autogen_reliability.accounting._journal import journal_supported, read_in_flight
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage, RecordedRequest

from .conftest import OpenAIClientFactory
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
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.accounting._events import UsageEvent
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


def test_every_request_the_server_received_has_one_row_after_sigkill(sqlite_url: str, tmp_path: Path) -> None:
    # 20 concurrent calls (half of them streams) through the wrapped real OpenAIChatCompletionClient. Then the
    # server stops answering: a third of the new calls get a 429 asking for a 50 s wait (the call waits to retry,
    # its first attempt over, its row not made yet), the others are held (a request waiting for its answer, a
    # stream half read). The process is killed with every worker stuck so: each request the server received
    # (and the provider would bill) must have exactly one row once the next process replays.
    lock = threading.Lock()
    answered: set[str] = set()
    rate_limited: set[str] = set()
    held: set[str] = set()
    hold = threading.Event()
    changed = threading.Condition()  # notified whenever the server or the child's output says something new

    def reply(request: RecordedRequest) -> FakeReply:
        label = str(request.messages[-1]["content"])
        try:
            with lock:
                if not hold.is_set():
                    answered.add(label)
                    return FakeReply.text("ok")
                if int(label.split("-")[1]) % 3 == 0 and label not in rate_limited:
                    rate_limited.add(label)
                    return FakeReply.error(429, headers={"Retry-After": "50"})
                held.add(label)
        finally:
            with changed:
                changed.notify_all()
        if request.stream:
            return FakeReply.text("one two three four", chunk_delay=60)  # read up to the first chunk, then wait
        return FakeReply.text("late", delay=60)

    script = textwrap.dedent(
        f"""
        import asyncio, os
        from autogen_core.models import UserMessage
        from autogen_ext.models.openai import OpenAIChatCompletionClient
        from autogen_reliability import RetryPolicy, reliable, usage_scope
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.storage import UsageStore

        async def main():
            # Long batch windows: the rows of the last calls are surely still in memory when the kill comes.
            recorder = UsageRecorder(
                UsageStore({sqlite_url!r}), spool_dir={str(tmp_path / "spool")!r}, flush_interval=60, batch_size=5000,
                max_queue=5000,
            )
            inner = OpenAIChatCompletionClient(model={MODEL!r}, api_key="sk-test", base_url=os.environ["BASE_URL"])

            def retrying(event):
                os.write(1, f"retry {{event.call.attribution.session}}\\n".encode())

            client = reliable(
                inner, recorder=recorder, circuit=None, retry=RetryPolicy(max_attempts=3, budget=None, deadline=300),
                on_retry=retrying,
            )
            labels = iter(range(10**9))

            async def worker(stream):
                for n in labels:
                    message = [UserMessage(content=f"call-{{n}}", source="user")]
                    async with usage_scope(session=f"call-{{n}}"):
                        if stream:
                            async for _ in client.create_stream(message):
                                pass
                        else:
                            await client.create(message)
                    os.write(1, f"done call-{{n}}\\n".encode())

            await asyncio.gather(*(worker(stream=index % 2 == 0) for index in range(20)))

        asyncio.run(main())
        """
    )
    done: set[str] = set()
    retried: set[str] = set()
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
                kind, label = line.split()
                with changed:
                    (done if kind == "done" else retried).add(label)
                    changed.notify_all()
            with changed:  # the child is gone
                changed.notify_all()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            with changed:
                changed.wait_for(lambda: len(done) >= 300 or child.poll() is not None, timeout=120)
            hold.set()

            def stuck() -> bool:
                # Every answer sent is taken in, every 429 is waiting to retry, and all 20 workers are stuck.
                # (A held attempt's in-flight row exists before its request is sent.)
                with lock:
                    return answered <= done and rate_limited <= retried and len(rate_limited) + len(held) >= 20

            with changed:
                changed.wait_for(lambda: stuck() or child.poll() is not None, timeout=120)
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert stuck(), "the workers did not all get stuck in time"
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(30)
        reader.join(10)
        requests = server.requests
    with lock:
        assert len(rate_limited) >= 3
        assert len(held) >= 3
        assert len(rate_limited) + len(held) == 20
        assert not (held & rate_limited)
        assert not (answered & (held | rate_limited))
    # The server's requests, each as (session, attempt): the n-th request of a label is attempt n of its call.
    sent: list[tuple[str, int]] = []
    for request in requests:
        label = str(request.messages[-1]["content"])
        sent.append((label, sum(1 for other, _ in sent if other == label) + 1))
    stored = replay(sqlite_url, tmp_path / "spool").events()
    assert len(stored) == len(requests)
    assert sorted((str(event.session), event.attempt) for event in stored) == sorted(sent)
    for event in stored:
        session = str(event.session)
        if session in answered:
            assert (event.outcome, event.tokens_estimated, event.prompt_tokens) == ("ok", False, 2), event
            assert event.cost_nanousd is not None
            assert event.cost_nanousd > 0
        elif session in rate_limited:  # its attempt ended (its row in the in-flight table); the call had not
            assert (event.outcome, event.error_kind, event.http_status) == ("error", "rate_limit", 429), event
        else:  # in flight: the provider got the request; the process died before the answer
            assert session in held
            assert (event.outcome, event.error_kind, event.tokens_estimated) == ("cancelled", "cancelled", True)
            assert event.prompt_tokens > 0
            # Priced as the table prices that many prompt tokens (gpt-4o-mini's price is one rate per token).
            price = PricingTable().price(
                "gpt-4o-mini", "openai", usage=TokenUsage(event.prompt_tokens, 0), at=event.started_at
            )
            assert price is not None
            assert event.cost_nanousd == price.nanousd > 0
            assert event.error_message == "the process ended before the attempt did"
    assert not list((tmp_path / "spool").glob("*.inflight*")), "the replayed table is deleted"
    assert not list((tmp_path / "spool").glob("*.journal"))


def test_a_final_row_wins_over_the_in_flight_row_of_the_same_attempt(sqlite_url: str, tmp_path: Path) -> None:
    # Killed between the call's record() and the freeing of its slots: the journal and the table both hold the
    # attempt (same event id). The journal is replayed first: the final row is the one stored, once. A slot
    # killed half-way through its overwrite keeps the row before it (the half written last is torn).
    spool = tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import os, signal, uuid
        from dataclasses import replace
        from datetime import UTC, datetime
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.accounting._events import UsageEvent
        from autogen_reliability.storage import UsageStore

        recorder = UsageRecorder(UsageStore({sqlite_url!r}), spool_dir={str(spool)!r}, flush_interval=3600)
        table = recorder.in_flight
        def event(n, outcome):
            return UsageEvent(call_id=uuid.UUID(int=99), attempt=n, started_at=datetime.now(UTC), latency_ms=1.0,
                              event_id=uuid.UUID(int=n), outcome=outcome, prompt_tokens=n)
        # 1: provisional, then final in the slot and in the journal, slot not freed.
        slot = table.hold(event(1, "cancelled").to_row())
        table.update(slot, event(1, "error").to_row())
        recorder.record(event(1, "ok"))
        # 2: provisional, then an overwrite torn by the kill (its header never written).
        torn = table.hold(event(2, "cancelled").to_row())
        data, offset = table._place(torn[0])
        data[offset + 2048 + 16 : offset + 2048 + 64] = b"x" * 48
        # 3: provisional, then its answer; the call had not ended.
        third = table.hold(event(3, "cancelled").to_row())
        table.update(third, event(3, "error").to_row())
        # 4: freed after its call recorded it.
        fourth = table.hold(event(4, "cancelled").to_row())
        recorder.record(event(4, "ok"))
        table.release(fourth)
        print(table.held, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.split() == ["3"]
    assert len(list(spool.glob("*.inflight"))) == 1
    stored = replay(sqlite_url, spool).events()
    assert sorted((event.event_id.int, event.outcome) for event in stored) == [
        (1, "ok"),
        (2, "cancelled"),
        (3, "error"),
        (4, "ok"),
    ]
    assert not list(spool.glob("*.inflight*"))


def test_the_in_flight_table_of_a_live_process_is_not_replayed_and_goes_once_free(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = UsageStore(sqlite_url)
    alive = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    table = alive.in_flight
    assert table is not None
    event = events(1)[0]
    slot = table.hold(event.to_row())
    assert slot is not None
    assert table.held == 1
    UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False).close()  # replays only dead processes
    assert store.count() == 0
    alive.close()
    assert table.paths
    assert all(path.exists() for path in table.paths)
    alive.record(event)  # the call ends after close: its row goes to the spool
    paths = table.paths
    table.release(slot)
    assert table.held == 0
    assert not any(path.exists() for path in paths)
    assert table.hold(event.to_row()) is None  # closed


async def test_an_attempts_row_keeps_the_id_and_slot_it_had_from_its_start(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, sqlite_url: str, tmp_path: Path
) -> None:
    # The stored row of each attempt has the event id its in-flight row had (a kill between the call's record()
    # and the freeing of its slots replays the slot as a duplicate otherwise), and a slot is held from the
    # attempt's start to the call's end.
    fake_openai_server.enqueue(FakeReply.error(429, headers={"retry-after-ms": "10"}), FakeReply.text("ok"))
    store = UsageStore(sqlite_url)
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    table = recorder.in_flight
    assert table is not None
    seen: list[tuple[uuid.UUID | None, int]] = []
    client = reliable(
        make_openai_client(), recorder=recorder, on_attempt=lambda event: seen.append((event.event_id, table.held))
    )
    await client.create([UserMessage(content="hi", source="user")])
    assert [held for _, held in seen] == [1, 2]  # the first attempt's slot kept while the call retries
    assert table.held == 0
    recorder.close()
    stored = sorted(store.events(), key=lambda event: event.attempt)
    assert [event.event_id for event in stored] == [event_id for event_id, _ in seen]
    assert [event.outcome for event in stored] == ["error", "ok"]
    assert not list((tmp_path / "spool").glob("*.inflight*"))


async def test_an_answered_attempt_has_its_real_row_in_the_table_while_its_call_goes_on(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, sqlite_url: str, tmp_path: Path
) -> None:
    # An answered attempt's real row replaces its provisional one when it ends: a call that goes on, here
    # re-asking an invalid answer, must not leave the estimate behind if the process dies meanwhile.
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fake_openai_server.enqueue(
        FakeReply.text("no json", usage=FakeUsage(prompt_tokens=20, completion_tokens=2)),
        FakeReply.json({"n": 1}, usage=FakeUsage(prompt_tokens=40, completion_tokens=3), delay=0.5),
    )
    recorder = UsageRecorder(UsageStore(sqlite_url), spool_dir=tmp_path / "spool")
    table = recorder.in_flight
    assert table is not None
    client = reliable(make_openai_client(), recorder=recorder, validation=ValidationPolicy(schema=schema))
    call = asyncio.create_task(client.create([UserMessage(content="hi", source="user")]))
    await fake_openai_server.wait_for_requests_async(2)  # the re-ask is sent: its answer takes half a second
    held: list[UsageEvent] = []
    for path in table.paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            held += [UsageEvent.from_row(row) for row in read_in_flight(fd, path)]
        finally:
            os.close(fd)
    first, second = sorted(held, key=lambda event: event.attempt)
    # Made before validation judged it ("ok"); the call's end records it "invalid".
    assert (first.attempt, first.outcome, first.validation_errors) == (1, "ok", 0)
    assert (first.tokens_estimated, first.prompt_tokens, first.completion_tokens) == (False, 20, 2)
    assert (second.attempt, second.outcome, second.tokens_estimated) == (2, "cancelled", True)
    await call
    assert table.held == 0
    recorder.close()
    stored = sorted(UsageStore(sqlite_url).events(), key=lambda event: event.attempt)
    assert [(event.attempt, event.outcome, event.prompt_tokens) for event in stored] == [
        (1, "invalid", 20),
        (2, "ok", 40),
    ]


def _a_spool_and_its_prefix(sqlite_url: str, tmp_path: Path) -> tuple[UsageStore, Path, str]:
    """A store, a spool directory a recorder of it opened and closed, and the prefix of that store's spool files."""
    spool = tmp_path / "spool"
    spool.mkdir()
    store = UsageStore(sqlite_url)
    first = UsageRecorder(store, spool_dir=spool, close_sink=False)
    first.close()
    return store, spool, first.spool_path.name.split("-")[0]


def test_a_half_made_file_is_deleted_only_once_its_process_is_gone(sqlite_url: str, tmp_path: Path) -> None:
    # A file is made under a ".new" name, then locked: a replayer that takes its lock in between must not delete
    # it from under a live process (seen: the writer thread's replay racing the first in-flight table).
    store, spool, prefix = _a_spool_and_its_prefix(sqlite_url, tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead_pid = int(gone.stdout)
    live = spool / f"{prefix}-{os.getpid()}-abc-i0.inflight.new"
    dead = spool / f"{prefix}-{dead_pid}-abc-i0.inflight.new"
    live_journal = spool / f"{prefix}-{os.getpid()}-abc-000000.journal.new"
    dead_journal = spool / f"{prefix}-{dead_pid}-abc-000000.journal.new"
    for path in (live, dead, live_journal, dead_journal):
        path.write_bytes(b"")
    UsageRecorder(store, spool_dir=spool, close_sink=False).close()
    assert live_journal.exists()
    assert live.exists()
    assert not dead.exists()
    assert not dead_journal.exists()


def test_a_row_too_big_for_a_slot_keeps_the_old_behaviour(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = UsageRecorder(UsageStore(sqlite_url), spool_dir=tmp_path / "spool")
    table = recorder.in_flight
    assert table is not None
    big = events(1)[0]
    big = UsageEvent(**{**_fields(big), "tags": {"k": "v" * 5000}})
    assert table.hold(big.to_row()) is None
    assert table.hold(big.to_row()) is None
    assert sum("does not fit an in-flight slot" in record.getMessage() for record in caplog.records) == 1
    small = table.hold(events(1)[0].to_row())  # others still get a slot
    assert small is not None
    table.release(small)
    recorder.close()
    assert not list((tmp_path / "spool").glob("*.inflight*"))


def _fields(event: UsageEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in UsageEvent.__dataclass_fields__}


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
        ({"retry_interval": float("inf")}, r"retry_interval must be > 0 and <= 3600 seconds, got inf"),
        ({"retry_interval": 0}, r"retry_interval must be > 0"),
        ({"retry_interval": "5"}, r"retry_interval must be a number of seconds, got str"),
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


def killed_after_ten_rows(sqlite_url: str, spool: Path, fields: str = "") -> None:
    """A process records ten rows (event ids 1 to 10, with ``fields``), none stored yet, and is killed outright."""
    script = textwrap.dedent(
        f"""
        import os, signal, uuid
        from datetime import UTC, datetime
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.accounting._events import UsageEvent
        from autogen_reliability.storage import UsageStore

        recorder = UsageRecorder(UsageStore({sqlite_url!r}), spool_dir={str(spool)!r}, flush_interval=3600)
        for n in range(10):
            recorder.record(
                UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0,
                           event_id=uuid.UUID(int=n + 1), {fields})
            )
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_a_torn_record_at_the_end_of_a_journal_is_skipped(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A machine crash can leave the last record half written: its CRC fails, the rows before it count.
    spool = tmp_path / "spool"
    killed_after_ten_rows(sqlite_url, spool)
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
    assert any("torn or damaged record" in record.getMessage() for record in caplog.records)
    assert not list(spool.glob("*.journal"))


def test_a_damaged_record_in_the_middle_of_a_journal_costs_only_itself(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A byte the disk flipped in the third record: its CRC fails; the seven rows after it were dropped with it.
    spool = tmp_path / "spool"
    killed_after_ten_rows(sqlite_url, spool)
    (path,) = [path for path in spool.glob("*.journal") if path.read_bytes()[64:68] != bytes(4)]
    data = bytearray(path.read_bytes())
    offset = 64
    for _ in range(2):
        offset += 16 + int.from_bytes(data[offset : offset + 4], "little")
    data[offset + 16 + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    store = replay(sqlite_url, spool)
    assert {event.event_id for event in store.events()} == {uuid.UUID(int=n + 1) for n in range(10) if n != 2}
    (said,) = [record.getMessage() for record in caplog.records if "damaged record" in record.getMessage()]
    assert f"at byte {offset} of usage journal {path}" in said
    assert not list(spool.glob("*.journal"))


def test_a_journal_of_another_format_is_left_in_place_not_deleted(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A segment a newer version wrote (then rolled back), or whose header the disk damaged: its rows are not
    # readable here, but they are there; a replay that took it for empty deleted it, and its rows with it.
    spool = tmp_path / "spool"
    killed_after_ten_rows(sqlite_url, spool)
    (path,) = [path for path in spool.glob("*.journal") if path.read_bytes()[64:68] != bytes(4)]
    with open(path, "r+b") as journal:
        magic = journal.read(8)
        journal.seek(0)
        journal.write(b"ARJOURN2")
    store = replay(sqlite_url, spool)
    assert store.count() == 0
    assert path.exists()
    (said,) = [record.getMessage() for record in caplog.records if str(path) in record.getMessage()]
    assert "left in place" in said
    assert "ARJOURN2" in said
    with open(path, "r+b") as journal:  # read by what can read it (here: the header repaired)
        journal.write(magic)
    replay(sqlite_url, spool)
    assert {event.event_id for event in store.events()} == {uuid.UUID(int=n + 1) for n in range(10)}
    assert not list(spool.glob("*.journal"))


def test_an_in_flight_table_of_another_format_is_left_in_place_not_deleted(sqlite_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    recorder = UsageRecorder(UsageStore(sqlite_url), spool_dir=spool)
    recorder.close()
    prefix = recorder.spool_path.name.split("-")[0]  # the database's digest
    spool.mkdir(exist_ok=True)
    path = spool / f"{prefix}-999999-abc-i0.inflight"  # of a dead process, whose journal is replayed
    path.write_bytes(b"ARINFLT2" + bytes(4096 * 2 - 8))
    replay(sqlite_url, spool)
    assert path.exists()


def test_rows_recorded_after_the_journal_directory_was_removed_survive_sigkill(sqlite_url: str, tmp_path: Path) -> None:
    # The spool directory removed under a running process (by hand, a cleaner of old files): its rows went on
    # into the deleted segment, then into the deleted one made ready after it, which no later process can find.
    spool = tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import logging, os, signal, sys, threading, time, uuid
        from datetime import UTC, datetime
        from pathlib import Path
        from autogen_reliability.accounting import UsageRecorder
        from autogen_reliability.accounting._events import UsageEvent
        from autogen_reliability.storage import UsageStore

        class Held:  # the database, whose writes hang once `hold` is set: rows then wait in the journal only
            def __init__(self, store):
                self.store, self.url, self.hold = store, store.url, threading.Event()

            def write_rows(self, rows):
                if self.hold.is_set():
                    threading.Event().wait()
                return self.store.write_rows(rows)

            def write(self, events):
                return self.write_rows([event.to_row() for event in events])

            def close(self):
                self.store.close()

        def event(n):
            return UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0,
                              event_id=uuid.UUID(int=n))

        said = threading.Event()

        class Said(logging.Handler):
            def emit(self, record):
                if "was deleted while in use" in record.getMessage():
                    said.set()

        logging.basicConfig()
        logging.getLogger().addHandler(Said())  # after the handler that prints it
        sink = Held(UsageStore({sqlite_url!r}))
        recorder = UsageRecorder(sink, spool_dir={str(spool)!r}, flush_interval=0.05)
        for n in range(1, 20_001):  # past half a segment: the writer makes the next one ready
            recorder.record(event(n))
        assert recorder.flush(60)
        deadline = time.monotonic() + 30
        while len(list(Path({str(spool)!r}).glob("*.journal"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("remove it", flush=True)
        sys.stdin.readline()
        said.wait(10)  # the writer wakes up and finds its segment deleted
        sink.hold.set()
        for n in range(20_001, 20_006):
            recorder.record(event(n))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdin is not None
    assert child.stdout.readline() == "remove it\n"
    shutil.rmtree(spool)
    child.stdin.write("\n")
    child.stdin.flush()
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, stderr
    assert "was deleted while in use; the next rows go to a new segment" in stderr
    store = replay(sqlite_url, spool)
    assert {event.event_id for event in store.events()} == {uuid.UUID(int=n) for n in range(1, 20_006)}


def test_a_journal_left_by_the_version_before_one_hour_cache_writes_is_replayed(
    sqlite_url: str, tmp_path: Path
) -> None:
    # A process killed before an upgrade left rows of the older layout, a field short; they are still stored.
    spool = tmp_path / "spool"
    killed_after_ten_rows(
        sqlite_url,
        spool,
        "prompt_tokens=10_000, cached_tokens=6000, cache_write_tokens=3000, cache_write_1h_tokens=2000, "
        "reasoning_tokens=7",
    )
    (path,) = [path for path in spool.glob("*.journal") if path.read_bytes()[64:68] != bytes(4)]
    # Rewrite each record (u32 length, u32 crc32, u64 number, a marshal dump of the row's list of fields) as
    # the older version wrote it: without cache_write_1h_tokens.
    data = path.read_bytes()
    index = ROW_FIELDS.index("cache_write_1h_tokens")
    offset, records = 64, b""
    while length := int.from_bytes(data[offset : offset + 4], "little"):
        number = data[offset + 8 : offset + 16]
        fields = marshal.loads(data[offset + 16 : offset + 16 + length])
        assert (len(fields), fields[index - 1], fields[index], fields[index + 1]) == (len(ROW_FIELDS), 3000, 2000, 7)
        del fields[index]
        payload = marshal.dumps(fields)
        records += len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little") + number + payload
        offset += 16 + length
    assert len(records) < offset - 64
    path.write_bytes(data[:64] + records + bytes(len(data) - 64 - len(records)))
    store = replay(sqlite_url, spool)
    stored = sorted(store.events(), key=lambda event: event.event_id)
    assert [event.event_id for event in stored] == [uuid.UUID(int=n + 1) for n in range(10)]
    assert {
        (
            event.prompt_tokens,
            event.cached_tokens,
            event.cache_write_tokens,
            event.cache_write_1h_tokens,
            event.reasoning_tokens,
        )
        for event in stored
    } == {(10_000, 6000, 3000, None, 7)}
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


def test_a_half_made_file_left_long_ago_is_deleted_though_a_process_has_its_pid_again(
    sqlite_url: str, tmp_path: Path
) -> None:
    # In a container the next worker gets the pid of the one killed while it made a file: that pid lives for
    # as long as the service runs, and the half-made file (no row in it, its lock free) stayed with it.
    store, spool, prefix = _a_spool_and_its_prefix(sqlite_url, tmp_path)
    reused = os.getpid()  # alive: the pid of the process that died making the files, given to another since
    old = [spool / f"{prefix}-{reused}-abc-i0.inflight.new", spool / f"{prefix}-{reused}-abc-000000.journal.new"]
    fresh = spool / f"{prefix}-{reused}-def-000000.journal.new"  # its maker may be about to lock it
    for path in (*old, fresh):
        path.write_bytes(b"")
    an_hour_ago = time.time() - 3600
    for path in old:
        os.utime(path, (an_hour_ago, an_hour_ago))
    UsageRecorder(store, spool_dir=spool, close_sink=False).close()
    assert [path.exists() for path in old] == [False, False]  # before: both, for as long as the pid lived
    assert fresh.exists()
    store.close()
