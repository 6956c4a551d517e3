"""Budgets: a call over its scope's limit sends no request; spend is read from the ledger that processes share.

Every call here costs whole dollars: the server reports a million prompt tokens
and the price table charges $1 per million, so spend is easy to follow. Most
budgets count all time (``period=None``): a test that ran across midnight UTC
would otherwise see its spend reset under it. Periods are tested with rows
written on chosen days and a clock set to those days.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import decimal
import json
import logging
import pickle
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import ChatCompletionClient, CreateResult, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient
from sqlalchemy import event

from autogen_reliability import (
    AttemptEvent,
    Attribution,
    BudgetAlert,
    BudgetExceededError,
    BudgetPolicy,
    CircuitBreakerPolicy,
    ConfigurationError,
    ErrorKind,
    ReliabilityError,
    ReliableChatCompletionClient,
    RetryPolicy,
    configure,
    reliable,
    usage_scope,
)
from autogen_reliability.accounting import PricingTable, UsageEvent, UsageRecorder
from autogen_reliability.budget import _tracker as budget_tracker
from autogen_reliability.budget._tracker import _by_ledger, ledger_key, tracker_for
from autogen_reliability.retry._circuit import breaker_for
from autogen_reliability.storage import UsageStore
from autogen_reliability.storage._models import REPORT_INDEX
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

from .conftest import OpenAIClientFactory, final_result, fork_child, run_python
from .storage_fixtures import Ledger, open_ledger

HI = [UserMessage(content="hi", source="user")]
PRICES = {"models": {"gpt-4o-mini": {"input": "1", "output": "1"}}}  # USD per million tokens
PRICING = PricingTable(PRICES)
ONE_DOLLAR = FakeUsage(prompt_tokens=1_000_000, completion_tokens=0)
UNPRICED_MODEL_INFO = {
    "vision": False,
    "function_calling": True,
    "json_output": True,
    "family": "unknown",
    "structured_output": True,
}


class Clock:
    """Seconds since the epoch that a test sets."""

    def __init__(self, at: datetime | None = None) -> None:
        self.now = at.timestamp() if at is not None else time.time()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


@pytest.fixture
def dollars(fake_openai_server: FakeOpenAIServer) -> FakeOpenAIServer:
    """The server, answering every request with usage that costs $1 at ``PRICING``."""
    fake_openai_server.default = FakeReply.text("ok", usage=ONE_DOLLAR)
    return fake_openai_server


@pytest.fixture
def any_ledger(store_url: str, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger on SQLite, then on PostgreSQL, and a recorder writing to it."""
    with open_ledger(store_url, tmp_path / "spool") as opened:
        yield opened


def wrap(
    make: OpenAIClientFactory, ledger: Ledger, budget: BudgetPolicy | None, **options: Any
) -> ReliableChatCompletionClient:
    return reliable(make(), recorder=ledger[1], pricing=PRICING, budget=budget, **options)


def replay() -> ChatCompletionClient:
    """A client for tests that never call it (AutoGen's replay client: a component that loads back)."""
    return ReplayChatCompletionClient(["unused"])


def spend(store: UsageStore, usd: int, *, at: datetime | None = None, **attribution: str | None) -> None:
    """Rows written to the ledger by someone else (another process, another recorder)."""
    store.write(
        [
            UsageEvent(
                call_id=uuid.uuid4(),
                attempt=1,
                started_at=at or datetime.now(UTC),
                latency_ms=1.0,
                model="gpt-4o-mini",
                cost_nanousd=10**9,
                **attribution,  # type: ignore[arg-type]
            )
            for _ in range(usd)
        ]
    )


async def consume(client: ChatCompletionClient) -> CreateResult:
    return await final_result(client.create_stream(HI))


# --- the stop ----------------------------------------------------------------------------------


async def test_at_the_limit_no_request_reaches_the_server(
    any_ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    client = wrap(make_openai_client, any_ledger, BudgetPolicy(limit_usd=2, period=None), project="acme")
    await client.create(HI)
    await client.create(HI)
    assert dollars.request_count == 2
    with pytest.raises(BudgetExceededError) as refused:
        await client.create(HI)
    assert dollars.request_count == 2
    error = refused.value
    assert isinstance(error, ReliabilityError)
    assert (error.scope, error.key, error.project, error.period, error.period_start) == (
        "project",
        "acme",
        "acme",
        None,
        None,
    )
    assert (error.limit_usd, error.spent_usd, error.unpriced) == (Decimal(2), Decimal(2), 0)
    assert str(error) == "budget exceeded for project 'acme': $2.00 spent of $2.00 in all; no request was sent"
    # The refused call is not a row: nothing was sent.
    assert any_ledger[1].flush(10)
    assert any_ledger[0].count() == 2


async def test_a_refusal_crosses_a_process_boundary_whole(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A worker of a ProcessPoolExecutor sends its exception back pickled: BudgetExceededError could not be
    # unpickled (its __init__ takes its fields, not the message), which broke the whole pool
    # (BrokenProcessPool) instead of telling the caller the budget refused. copy.copy() failed alike.
    client = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=1, period=None), project="acme")
    await client.create(HI)
    with pytest.raises(BudgetExceededError) as refused:
        await client.create(HI)
    error = refused.value
    fields = ("scope", "key", "project", "period", "period_start", "limit_usd", "spent_usd", "unpriced")
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(again) is BudgetExceededError
        assert str(again) == str(error)
        assert [getattr(again, name) for name in fields] == [getattr(error, name) for name in fields]
    assert dollars.request_count == 1


async def test_a_streamed_call_is_refused_too(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    client = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=1, period=None), project="acme")
    await consume(client)
    with pytest.raises(BudgetExceededError, match=r"\$1\.00 spent of \$1\.00"):
        await consume(client)
    assert dollars.request_count == 1


async def test_a_refusal_from_the_wrapped_client_is_not_retried_sent_to_a_fallback_or_counted_by_the_breaker(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    budgeted = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=1, period=None), project="acme")
    await budgeted.create(HI)  # the budget is spent
    # A wrapper around it that retries every kind a policy may (UNKNOWN too), with a fallback and a
    # breaker that opens after two failures: a refusal is none of these, the spend would go on elsewhere.
    retry_on = {ErrorKind.UNKNOWN, ErrorKind.INVALID_RESPONSE, ErrorKind.CONTENT_FILTER, ErrorKind.RATE_LIMIT}
    circuit = CircuitBreakerPolicy(window=2, minimum_calls=2, open_for=60)
    attempts: list[AttemptEvent] = []
    outer = ReliableChatCompletionClient(
        budgeted,
        retry=RetryPolicy(max_attempts=3, initial_delay=0, retry_on=frozenset(retry_on)),
        circuit=circuit,
        fallbacks=[make_openai_client(model="gpt-4.1")],
        track_usage=False,
        on_attempt=attempts.append,
    )
    for _ in range(2):
        with pytest.raises(BudgetExceededError, match=r"\$1\.00 spent of \$1\.00"):
            await outer.create(HI)
    with pytest.raises(BudgetExceededError):
        await consume(outer)
    assert dollars.request_count == 1  # the first call's, before the budget was spent
    assert [type(attempt.error) for attempt in attempts] == [BudgetExceededError] * 3  # one attempt per call
    assert breaker_for(budgeted, circuit).state == "closed"


async def test_spend_another_process_wrote_to_the_ledger_counts(
    any_ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    spend(any_ledger[0], 5, project="acme")
    spend(any_ledger[0], 9, project="other")
    client = wrap(make_openai_client, any_ledger, BudgetPolicy(limit_usd=6, period=None), project="acme")
    await client.create(HI)
    with pytest.raises(BudgetExceededError) as refused:
        await client.create(HI)
    assert refused.value.spent_usd == Decimal(6)
    assert dollars.request_count == 1


async def test_rows_not_yet_written_count_once_before_and_after_they_are(
    tmp_path: Path, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    store = UsageStore(f"sqlite:///{tmp_path / 'usage.db'}")
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", flush_interval=3600, close_sink=False)
    clock = Clock()
    policy = BudgetPolicy(limit_usd=3, period=None, refresh=5, clock=clock)
    try:
        client = wrap(make_openai_client, (store, recorder), policy, project="acme")
        for _ in range(3):
            await client.create(HI)
        assert store.count() == 0  # all three still wait in the recorder
        with pytest.raises(BudgetExceededError) as before:
            await client.create(HI)
        assert before.value.spent_usd == Decimal(3)
        assert recorder.flush(10)
        assert store.count() == 3
        # A read after the rows reached the ledger finds them there, and stops counting them locally.
        clock.now += 6
        with pytest.raises(BudgetExceededError):
            await client.create(HI)
        assert tracker_for(policy, recorder).wait_for_reads()
        with pytest.raises(BudgetExceededError) as after:
            await client.create(HI)
        assert after.value.spent_usd == Decimal(3)  # not 6
        assert dollars.request_count == 3
    finally:
        recorder.close()
        store.close()


class ReadBeforeFeed(UsageRecorder):
    """A recorder whose row reaches the ledger, and is read there by the budget, as soon as it is handed over.

    The interleaving where the recorder's thread and a reader thread both run between the hand-over and what
    follows it on the call's thread (a busy process may switch threads there), made certain.
    """

    read: Callable[[], None] | None = None

    def record(self, event: UsageEvent) -> None:
        super().record(event)
        assert self.flush(10)
        if self.read is not None:
            self.read()


async def test_a_row_written_and_read_the_moment_it_is_recorded_counts_once(
    tmp_path: Path, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    store = UsageStore(f"sqlite:///{tmp_path / 'usage.db'}")
    recorder = ReadBeforeFeed(store, spool_dir=tmp_path / "spool", close_sink=False)
    clock = Clock()
    policy = BudgetPolicy(limit_usd=3, period=None, refresh=5, clock=clock)
    try:
        client = wrap(make_openai_client, (store, recorder), policy, project="acme")
        tracker = tracker_for(policy, recorder)

        def read() -> None:
            clock.now += 6  # the figure is stale: this check starts a read, which finds the row just written
            with contextlib.suppress(BudgetExceededError):  # the third call's own row makes $3: the next is refused
                tracker.admit(Attribution(project="acme"))
            assert tracker.wait_for_reads()

        recorder.read = read
        for calls in (1, 2):
            await client.create(HI)
            assert store.count() == calls
            assert tracker.spend() == [("acme", "acme", calls * 10**9)]  # in the ledger's sum, not also pending
        await client.create(HI)  # $2 of $3 spent: it goes on
        assert dollars.request_count == 3
        with pytest.raises(BudgetExceededError, match=r"\$3\.00 spent of \$3\.00"):
            await client.create(HI)
    finally:
        recorder.close()
        store.close()


_CHILD = """
import asyncio, json, sys
from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_reliability import BudgetExceededError, BudgetPolicy, reliable
from autogen_reliability.accounting import PricingTable, UsageRecorder
from autogen_reliability.storage import UsageStore
from autogen_reliability.storage._models import REPORT_INDEX

base_url, url, spool, prices = sys.argv[1:5]


async def main() -> None:
    store = UsageStore(url)
    recorder = UsageRecorder(store, spool_dir=spool)
    inner = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test", base_url=base_url, max_retries=0)
    pricing = PricingTable(json.loads(prices))
    budget = BudgetPolicy(limit_usd=3, period=None)
    client = reliable(inner, recorder=recorder, pricing=pricing, project="shared", budget=budget)
    calls = 0
    try:
        while calls < 10:
            await client.create([UserMessage(content="hi", source="user")])
            calls += 1
    except BudgetExceededError as error:
        print(calls, error.spent_usd)
    await inner.close()
    recorder.close()


asyncio.run(main())
"""


async def test_two_processes_sharing_one_sqlite_ledger_share_one_budget(
    tmp_path: Path, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    clock = Clock()
    policy = BudgetPolicy(limit_usd=3, period=None, refresh=5, clock=clock)
    with open_ledger(url, tmp_path / "spool") as ledger:
        client = wrap(make_openai_client, ledger, policy, project="shared")
        await client.create(HI)  # this process: $1
        assert ledger[1].flush(10)
        # The other process sees this one's dollar in the ledger: two more calls and it is refused.
        child = await asyncio.to_thread(
            run_python, _CHILD, dollars.base_url, url, str(tmp_path / "child-spool"), json.dumps(PRICES)
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout.split() == ["2", "3"]
        assert dollars.request_count == 3
        # And this one sees the other's two once its figure is read again (every `refresh` seconds).
        clock.now += 6
        await client.create(HI)  # the figure was stale: this call went on with it, and a read began
        assert tracker_for(policy, ledger[1]).wait_for_reads()
        with pytest.raises(BudgetExceededError) as refused:
            await client.create(HI)
        assert refused.value.spent_usd == Decimal(4)
        assert dollars.request_count == 4


_RECORDS_AND_WAITS = """
import asyncio, json, sys
from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_reliability import reliable
from autogen_reliability.accounting import PricingTable, UsageRecorder
from autogen_reliability.storage import UsageStore

base_url, url, spool, prices = sys.argv[1:5]


async def main() -> None:
    store = UsageStore(url)
    # A batch window longer than the test: its rows wait in the queue (and its journal) until close().
    recorder = UsageRecorder(store, spool_dir=spool, flush_interval=3600)
    inner = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test", base_url=base_url, max_retries=0)
    client = reliable(inner, recorder=recorder, pricing=PricingTable(json.loads(prices)), project="shared")
    for _ in range(2):
        await client.create([UserMessage(content="hi", source="user")])
    print("spent", flush=True)
    sys.stdin.readline()  # the other process checks its budget meanwhile
    await inner.close()
    recorder.close()
    store.close()


asyncio.run(main())
"""


async def test_another_processs_calls_its_recorder_has_not_written_are_not_in_a_fresh_figure(
    tmp_path: Path, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    """docs/budgets.md, "How far spend can pass the limit": a figure read after another process's calls ended
    still lacks them until that process's recorder has written them (its batch window, or its spool)."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    clock = Clock()
    policy = BudgetPolicy(limit_usd=3, period=None, refresh=5, clock=clock)
    with open_ledger(url, tmp_path / "spool") as ledger:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RECORDS_AND_WAITS,
            dollars.base_url,
            url,
            str(tmp_path / "child-spool"),
            json.dumps(PRICES),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            assert await asyncio.wait_for(child.stdout.readline(), 60) == b"spent\n"
            assert dollars.request_count == 2  # the other process's $2 were answered, and are not stored yet
            client = wrap(make_openai_client, ledger, policy, project="shared")
            for _ in range(3):  # the first check reads the ledger now: after the other process's calls ended
                await client.create(HI)
            with pytest.raises(BudgetExceededError) as refused:
                await client.create(HI)
            assert refused.value.spent_usd == Decimal(3)  # its own $3: the other's $2 unseen
            assert dollars.request_count == 5  # $5 spent on a $3 budget
        finally:
            _, stderr = await asyncio.wait_for(child.communicate(b"\n"), 60)
        assert child.returncode == 0, stderr.decode()
        clock.now += 6  # the figure is stale: the next check goes on with it and reads again
        with pytest.raises(BudgetExceededError):
            await client.create(HI)
        assert tracker_for(policy, ledger[1]).wait_for_reads()
        with pytest.raises(BudgetExceededError) as refused:
            await client.create(HI)
        assert refused.value.spent_usd == Decimal(5)  # written at the other process's exit, and read
        assert dollars.request_count == 5


_EXITS_WITHOUT_CLOSING = """
import asyncio, sys
from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_reliability import BudgetPolicy, configure, reliable

base_url, url, spool = sys.argv[1:4]
configure(db_url=url, spool_dir=spool)


async def main() -> None:
    inner = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test", base_url=base_url, max_retries=0)
    client = reliable(inner, budget=BudgetPolicy(limit_usd=100, period=None), project="acme")
    await client.create([UserMessage(content="hi", source="user")])
    await client.create([UserMessage(content="hi", source="user")])  # after the budget's first read


asyncio.run(main())  # and exits, closing nothing: as a script does
"""


async def test_a_process_that_exits_leaves_its_sqlite_ledger_whole_in_its_file(
    tmp_path: Path, dollars: FakeOpenAIServer
) -> None:
    # The budget's reader kept a connection of its own open to the end: SQLite checkpoints its write-ahead
    # log when the last connection closes, so the rows stayed in usage.db-wal, and a copy of usage.db alone
    # (a backup, a file sent to a colleague) held none of them.
    database = tmp_path / "usage.db"
    child = await asyncio.to_thread(
        run_python, _EXITS_WITHOUT_CLOSING, dollars.base_url, f"sqlite:///{database}", str(tmp_path / "spool")
    )
    assert child.returncode == 0, child.stderr
    assert dollars.request_count == 2
    assert not database.with_name("usage.db-wal").exists()
    copy = tmp_path / "copy.db"
    copy.write_bytes(database.read_bytes())
    with UsageStore(f"sqlite:///{copy}") as store:
        assert len(store.events(project="acme")) == 2


async def test_a_child_forked_while_a_read_was_in_flight_reads_for_itself(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A pre-forking server or a multiprocessing pool forks while a call of the parent waits for its budget's
    # first read. The reader thread doing it stays in the parent: the child must not wait for its answer.

    store, recorder = ledger
    reading, gate = threading.Event(), threading.Event()

    def held(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "sum(" in statement.lower():
            reading.set()
            gate.wait(30)

    def work() -> None:
        gate.set()  # the child's copy of the gate: its own reads go through
        result = asyncio.run(asyncio.wait_for(client.create(HI), 20))
        assert result.content == "ok"

    def fork() -> None:
        exit_codes.append(fork_child(work, timeout=60))

    exit_codes: list[int | None] = []

    event.listen(store.engine, "before_cursor_execute", held)
    client = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=100, period=None), project="acme")
    call = asyncio.create_task(client.create(HI))
    try:
        assert await asyncio.to_thread(reading.wait, 10)  # the parent's call waits for the read, on a reader thread
        # Forked from a thread that runs no event loop (nor is a pool's worker: such a child always exits with 1).
        forking = threading.Thread(target=fork)
        forking.start()
        await asyncio.to_thread(forking.join, 90)
        assert exit_codes == [0]  # before: [1], TimeoutError: the child waited for the parent's read
    finally:
        gate.set()
        await call
        event.remove(store.engine, "before_cursor_execute", held)
    assert recorder.flush(10)
    assert dollars.request_count == 2
    assert len(store.events(project="acme")) == 2


class HoldingClock(Clock):
    """A clock that stops the thread named ``holder`` at its ``at``-th reading until ``go`` is set.

    The moment a thread switch can come at, made certain: the registry's work a thread is in the middle of.
    """

    def __init__(self, holder: str, at: int) -> None:
        super().__init__()
        self.holder, self.at, self.readings = holder, at, 0
        self.held, self.go = threading.Event(), threading.Event()

    def __call__(self) -> float:
        if threading.current_thread().name == self.holder:
            self.readings += 1
            if self.readings == self.at:
                self.held.set()
                self.go.wait(30)
        return self.now


async def test_a_child_forked_while_a_wrapper_was_being_made_counts_its_own_calls(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A thread of the parent makes a wrapper, whose budget's new tracker takes on the unwritten rows another
    # budget of the ledger counts, while another thread forks (a multiprocessing pool, say).

    other = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=100, period=None, refresh=3600), project="other")
    await other.create(HI)  # a row the other budget counts until its next read
    # The clock's first reading on the thread starts the tracker's period; its second counts that row.
    clock = HoldingClock("making-a-wrapper", at=2)
    policy = BudgetPolicy(limit_usd=2, period=None, refresh=3600, clock=clock)
    making = threading.Thread(target=wrap, args=(make_openai_client, ledger, policy), name="making-a-wrapper")
    forked = threading.Event()
    calls: list[int | None] = []

    def work() -> None:
        async def spend_until_refused() -> int:
            client = wrap(make_openai_client, ledger, policy, project="acme")
            for made in range(5):
                try:
                    await client.create(HI)
                except BudgetExceededError:
                    return made
            return 5

        raise SystemExit(asyncio.run(asyncio.wait_for(spend_until_refused(), 20)))

    def fork() -> None:
        calls.append(fork_child(work, forked=forked, timeout=60))

    making.start()
    try:
        assert await asyncio.to_thread(clock.held.wait, 10)
        forking = threading.Thread(target=fork)
        forking.start()
        # Until the fork is done, or for a while: a fork that waits for the wrapper to be made waits for this.
        await asyncio.to_thread(forked.wait, 2)
    finally:
        clock.go.set()
    await asyncio.to_thread(making.join, 30)
    await asyncio.to_thread(forking.join, 90)
    assert calls == [2]  # $2 of $2: the third is refused. Before: [5], none of the child's calls counted
    assert len(ledger[0].events(project="acme")) == 2


async def test_the_first_check_of_a_key_reads_once_off_the_event_loop(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    store = ledger[0]
    reads: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "sum(" in statement.lower():
            reads.append(threading.current_thread().name)

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        policy = BudgetPolicy(limit_usd=100, period=None, refresh=3600)  # no read again, however slow the calls
        client = wrap(make_openai_client, ledger, policy, project="acme")
        await asyncio.gather(*(client.create(HI) for _ in range(10)))
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert dollars.request_count == 10
    assert reads == ["autogen-reliability-budget"]  # one read for ten waiting calls, on a reader thread


@pytest.mark.parametrize(
    ("scope", "key", "index"),
    [
        ("project", "acme", REPORT_INDEX),
        ("session", ("acme", "t-1"), "ix_ar_usage_records_session_spend"),
        ("agent", ("acme", None), "ix_ar_usage_records_agent_spend"),
    ],
)
def test_the_spend_read_uses_only_an_index(ledger: Ledger, scope: str, key: object, index: str) -> None:
    tracker = tracker_for(BudgetPolicy(limit_usd=1, scope=scope), ledger[1])  # type: ignore[arg-type]
    query = tracker._spend_query(key, date(2026, 3, 1), date(2026, 4, 1))
    with ledger[0].engine.connect() as connection:
        sql = str(query.compile(connection, compile_kwargs={"literal_binds": True}))
        plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
    assert f"USING COVERING INDEX {index}" in " ".join(str(row[-1]) for row in plan)


# --- the ledger unreadable ---------------------------------------------------------------------


async def test_a_ledger_that_cannot_be_read_leaves_the_processs_own_spend_counted(
    tmp_path: Path,
    dollars: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = "postgresql+psycopg://budget:secret-pw@127.0.0.1:1/usage"  # nothing listens on port 1
    recorder = UsageRecorder(lambda: UsageStore(down), spool_dir=tmp_path / "spool", name=down)
    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    try:
        policy = BudgetPolicy(limit_usd=2, period=None, store=down)
        client = reliable(make_openai_client(), recorder=recorder, pricing=PRICING, budget=policy, project="acme")
        await client.create(HI)
        await client.create(HI)
        with pytest.raises(BudgetExceededError, match=r"\$2\.00 spent of \$2\.00"):
            await client.create(HI)
    finally:
        recorder.close(timeout=10)
    assert dollars.request_count == 2
    said = [record.getMessage() for record in caplog.records if "budgets cannot read" in record.getMessage()]
    assert len(said) == 1
    assert "until it answers they count the spend last read plus this process's own" in said[0]
    assert "secret-pw" not in caplog.text


async def test_a_key_whose_spend_cannot_be_read_still_counts_its_own_written_rows_while_others_are_read(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # One project's sum fails (the server's statement_timeout, over its many rows, say) while the other keys of
    # the budget are read: the process still stops it at the limit by its own spend.
    def timeout(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "sum(" in statement.lower() and "acme" in str(parameters):
            raise RuntimeError("canceling statement due to statement timeout")

    clock = Clock()
    policy = BudgetPolicy(limit_usd=2, period=None, refresh=5, clock=clock)
    acme = wrap(make_openai_client, ledger, policy, project="acme")
    tracker = tracker_for(policy, ledger[1])
    event.listen(ledger[0].engine, "before_cursor_execute", timeout)
    sent = 0
    try:
        for index in range(4):
            with contextlib.suppress(BudgetExceededError):
                await acme.create(HI)
                sent += 1
            assert ledger[1].flush(10)  # its row is in the ledger
            clock.now += 6
            # Another key's first check: its read finds acme's row stored.
            await wrap(make_openai_client, ledger, policy, project=f"other-{index}").create(HI)
            assert tracker.wait_for_reads()
    finally:
        event.remove(ledger[0].engine, "before_cursor_execute", timeout)
    assert sent == 2  # before: 4, each row let go once stored, though no figure of acme's counted it
    assert ("acme", "acme", 2 * 10**9) in tracker.spend()


async def test_a_key_whose_spend_cannot_be_read_lets_no_other_keys_first_call_go_unread(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # One project's sum fails (the server's statement_timeout, over its many rows, say); the ledger answers every
    # other read. Another project, already over its limit in the ledger, makes its first call in this process.
    tried: list[str] = []

    def timeout(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "sum(" in statement.lower() and "acme" in str(parameters):
            tried.append("acme")
            raise RuntimeError("canceling statement due to statement timeout")

    spend(ledger[0], 5, project="big")
    clock = Clock()
    policy = BudgetPolicy(limit_usd=2, period=None, refresh=5, clock=clock)
    event.listen(ledger[0].engine, "before_cursor_execute", timeout)
    try:
        await wrap(make_openai_client, ledger, policy, project="acme").create(HI)  # unread: its own spend counts
        with pytest.raises(BudgetExceededError) as refused:
            await wrap(make_openai_client, ledger, policy, project="big").create(HI)
        # acme's next call goes on with its own spend ($1), not waiting for its sum again within `refresh`.
        await wrap(make_openai_client, ledger, policy, project="acme").create(HI)
    finally:
        event.remove(ledger[0].engine, "before_cursor_execute", timeout)
    assert refused.value.spent_usd == Decimal(5)  # before: its call was sent, unread, at $5 of $2
    assert dollars.request_count == 2
    assert tried == ["acme"]


async def test_a_key_whose_spend_cannot_be_read_is_said_once_not_the_ledger_down_and_up_at_each_read(
    ledger: Ledger,
    dollars: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One project's sum fails at every read (the server's statement_timeout); the ledger answers the others.
    def timeout(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "sum(" in statement.lower() and "acme" in str(parameters):
            raise RuntimeError("canceling statement due to statement timeout")

    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    clock = Clock()
    policy = BudgetPolicy(limit_usd=100, period=None, refresh=5, clock=clock)
    acme = wrap(make_openai_client, ledger, policy, project="acme")
    other = wrap(make_openai_client, ledger, policy, project="other")
    tracker = tracker_for(policy, ledger[1])
    event.listen(ledger[0].engine, "before_cursor_execute", timeout)
    try:
        for _ in range(4):
            await acme.create(HI)
            assert tracker.wait_for_reads()
            await other.create(HI)
            assert tracker.wait_for_reads()
            clock.now += 6  # each key is read again at its next check
    finally:
        event.remove(ledger[0].engine, "before_cursor_execute", timeout)
    said = [record.getMessage() for record in caplog.records if "usage ledger" in record.getMessage()]
    assert len(said) == 1  # before: 8, "cannot read the usage ledger" and "read the usage ledger again" by turns
    assert said[0].startswith("budgets cannot read the spend of project 'acme' from the usage ledger sqlite:///")
    assert "(RuntimeError: canceling statement due to statement timeout)" in said[0]
    assert dollars.request_count == 8


async def test_a_pruning_read_the_database_refuses_is_said_once_not_the_ledger_down_and_up_at_each_read(
    ledger: Ledger,
    dollars: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Another tenant's calls (no call of this budget checks its key) are counted until a read finds them stored: the
    # read asking only that (no sum: the first query of its transaction) fails at every try (the server's
    # statement_timeout); the ledger answers the budget's own key.
    def begin(conn: Any) -> None:
        conn.info["summed"] = False

    def timeout(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "sum(" in statement.lower():
            conn.info["summed"] = True
        elif "event_id in" in statement.lower() and not conn.info.get("summed", True):
            raise RuntimeError("canceling statement due to statement timeout")

    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    clock = Clock()
    policy = BudgetPolicy(limit_usd=100, period=None, refresh=5, clock=clock)
    acme = wrap(make_openai_client, ledger, policy, project="acme")
    tenant = wrap(make_openai_client, ledger, None, project="tenant")
    tracker = tracker_for(policy, ledger[1])
    event.listen(ledger[0].engine, "begin", begin)
    event.listen(ledger[0].engine, "before_cursor_execute", timeout)
    try:
        for _ in range(4):
            await tenant.create(HI)  # its row starts the pruning read, which fails
            assert tracker.wait_for_reads()
            await acme.create(HI)  # its key's read succeeds
            assert tracker.wait_for_reads()
            clock.now += 6
    finally:
        event.remove(ledger[0].engine, "before_cursor_execute", timeout)
        event.remove(ledger[0].engine, "begin", begin)
    said = [record.getMessage() for record in caplog.records if "usage ledger" in record.getMessage()]
    assert len(said) == 1, said  # before: 6, "cannot read the usage ledger" and "read the usage ledger again" by turns
    assert said[0].startswith("budgets cannot ask the usage ledger sqlite:///")
    assert "which rows of keys no call checked are stored (RuntimeError: canceling statement" in said[0]
    assert ("acme", "acme", 4 * 10**9) in tracker.spend()
    await tenant.create(HI)  # the database answers it again
    assert tracker.wait_for_reads()
    said = [record.getMessage() for record in caplog.records if "usage ledger" in record.getMessage()]
    assert len(said) == 2
    assert said[1].startswith("budgets ask the usage ledger sqlite:///")
    assert said[1].endswith(" which rows of keys no call checked are stored again")
    assert dollars.request_count == 9


async def test_a_recorder_whose_database_is_unknown_needs_a_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    recorder = UsageRecorder(lambda: UsageStore(url), spool_dir=tmp_path / "spool", name=url)
    try:
        with pytest.raises(ConfigurationError, match=r"give BudgetPolicy\(store=\.\.\.\)"):
            reliable(replay(), recorder=recorder, budget=BudgetPolicy(limit_usd=1))
    finally:
        recorder.close()


async def test_a_store_other_than_the_recorders_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(ConfigurationError, match="its own calls would never count"):
        reliable(replay(), recorder=ledger[1], budget=BudgetPolicy(limit_usd=1, store=other))


# --- scopes ------------------------------------------------------------------------------------


async def test_each_scope_key_has_a_budget_of_its_own(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    per_session = BudgetPolicy(limit_usd=1, period=None, scope="session")
    client = wrap(make_openai_client, ledger, per_session, project="p1")
    with usage_scope(session="a"):
        await client.create(HI)
        with pytest.raises(BudgetExceededError) as refused:
            await client.create(HI)
    assert (refused.value.scope, refused.value.key, refused.value.project) == ("session", "a", "p1")
    assert "session 'a' of project 'p1': $1.00 spent" in str(refused.value)
    with usage_scope(session="b"):
        await client.create(HI)
    with usage_scope(project="p2", session="a"):  # session "a" of another project
        await client.create(HI)
    # Calls without a session share one budget of their own.
    await client.create(HI)
    with pytest.raises(BudgetExceededError, match="calls without a session of project 'p1'"):
        await client.create(HI)
    assert dollars.request_count == 4

    per_agent = BudgetPolicy(limit_usd=1, period=None, scope="agent")
    writer = wrap(make_openai_client, ledger, per_agent, project="p1", agent="writer")
    critic = wrap(make_openai_client, ledger, per_agent, project="p1", agent="critic")
    await writer.create(HI)
    with pytest.raises(BudgetExceededError, match="agent 'writer' of project 'p1'"):
        await writer.create(HI)
    await critic.create(HI)
    assert dollars.request_count == 6

    per_project = BudgetPolicy(limit_usd=5, period=None)
    await wrap(make_openai_client, ledger, per_project, project="p2").create(HI)  # p2 had $1: now $2
    with pytest.raises(BudgetExceededError, match=r"project 'p1': \$5\.00 spent"):
        await wrap(make_openai_client, ledger, per_project, project="p1").create(HI)
    assert dollars.request_count == 7
    # Calls of no agent share one budget too, named in good English ("a agent" it was).
    nobody = wrap(make_openai_client, ledger, per_agent, project="p3")
    await nobody.create(HI)
    with pytest.raises(BudgetExceededError) as refused:
        await nobody.create(HI)
    assert str(refused.value).startswith("budget exceeded for calls without an agent of project 'p3': $1.00 spent")
    assert dollars.request_count == 8


async def test_sessions_gone_idle_leave_neither_their_rows_nor_their_states_in_memory(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A service with a budget per session: each conversation makes a call or two, and is never seen again.
    monkeypatch.setattr(budget_tracker, "MAX_KEYS", 10)
    clock = Clock()
    policy = BudgetPolicy(limit_usd=100, period=None, scope="session", refresh=5, clock=clock)
    client = wrap(make_openai_client, ledger, policy, project="acme")
    tracker = tracker_for(policy, ledger[1])
    for index in range(40):
        with usage_scope(session=f"conversation-{index}"):
            await client.create(HI)
        assert ledger[1].flush(10)  # its row is in the ledger
        clock.now += 1
        assert tracker.wait_for_reads()
    assert ledger[0].count() == 40
    # Rows stored for more than `refresh` are let go (the ledger's sum counts them), and so are idle sessions
    # past MAX_KEYS: not every conversation ever served, kept until the period ends (never, with period=None).
    assert len(tracker.pending_events()) <= 6
    assert len(tracker.spend()) <= 10
    with usage_scope(session="conversation-0"):  # a session that comes back still counts what it spent
        await client.create(HI)
    assert ("acme", "conversation-0", 2 * 10**9) in tracker.spend()


class ClockBetween(Clock):
    """A clock that runs ``between`` once, at its ``at``-th reading after ``armed``: what another call did then."""

    def __init__(self) -> None:
        super().__init__()
        self.armed, self.readings, self.at = False, 0, 0
        self.between: Callable[[], object] = lambda: None

    def __call__(self) -> float:
        if self.armed:
            self.readings += 1
            if self.readings == self.at:
                self.between()
        return self.now


async def test_a_key_whose_state_was_let_go_while_its_first_check_waited_is_read_again_not_taken_as_nothing(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past MAX_KEYS, a new key lets go the states that hold nothing unwritten: the one whose figure was just read
    # for a call still waiting to be resumed, too, when the event loop runs another call's first check before it.
    monkeypatch.setattr(budget_tracker, "MAX_KEYS", 1)
    spend(ledger[0], 2, project="acme")  # at its limit
    clock = ClockBetween()
    policy = BudgetPolicy(limit_usd=2, period=None, refresh=3600, clock=clock)
    client = wrap(make_openai_client, ledger, policy, project="acme")
    tracker = tracker_for(policy, ledger[1])
    # The call's first check starts the read (reading 1) and, once it is done, decides (reading 2): between the
    # two, another session's first check.
    clock.between = lambda: tracker.admit(Attribution(project="other"))
    clock.armed, clock.at = True, 2
    with pytest.raises(BudgetExceededError, match=r"\$2\.00 spent of \$2\.00"):
        await client.create(HI)
    assert tracker.wait_for_reads()
    assert dollars.request_count == 0  # before: 1, decided as if acme had spent nothing


async def test_a_tenant_gone_idle_does_not_keep_every_other_tenants_rows(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Tenants on plans of their own: a budget per limit, each fed every tenant's rows until they are written.
    clock = Clock()
    idle_policy = BudgetPolicy(limit_usd=100, period=None, refresh=5, clock=clock)
    busy_policy = BudgetPolicy(limit_usd=101, period=None, refresh=5, clock=clock)
    await wrap(make_openai_client, ledger, idle_policy, project="idle").create(HI)
    busy = wrap(make_openai_client, ledger, busy_policy, project="busy")
    idle = tracker_for(idle_policy, ledger[1])
    for _ in range(30):
        await busy.create(HI)
        assert ledger[1].flush(10)
        clock.now += 1
        assert idle.wait_for_reads()
    assert ledger[0].count() == 31
    # The idle tenant's budget lets the busy one's written rows go, though none of its own calls reads the ledger.
    assert len(idle.pending_events()) <= 6
    assert ("idle", "idle", 10**9) in idle.spend()


# --- periods -----------------------------------------------------------------------------------


async def test_a_new_day_starts_from_nothing(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    day = datetime(2026, 3, 10, tzinfo=UTC)
    spend(ledger[0], 2, at=day + timedelta(hours=23, minutes=59), project="acme")
    spend(ledger[0], 5, at=day - timedelta(seconds=1), project="acme")  # the day before
    clock = Clock(day + timedelta(hours=23, minutes=59, seconds=59))
    client = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=2, period="day", clock=clock), project="acme")
    with pytest.raises(BudgetExceededError) as refused:
        await client.create(HI)
    assert refused.value.period_start == day
    assert "this day (since 2026-03-10 00:00 UTC)" in str(refused.value)
    clock.set(day + timedelta(days=1))
    await client.create(HI)
    assert dollars.request_count == 1


async def test_wrappers_sharing_a_budget_each_check_their_calls_on_their_own_clock(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    day = datetime(2026, 3, 10, tzinfo=UTC)
    spend(ledger[0], 2, at=day + timedelta(hours=12), project="acme")
    clock = Clock(day + timedelta(hours=13))
    today = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=2, period="day", clock=clock), project="acme")
    with pytest.raises(BudgetExceededError):
        await today.create(HI)
    tomorrow = Clock(day + timedelta(days=1, hours=1))  # an equal budget: the same tracker, another clock
    later = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=2, period="day", clock=tomorrow), project="acme")
    await later.create(HI)  # a new day on its clock: nothing spent yet
    assert len(_by_ledger[ledger_key(ledger[0])]) == 1
    assert dollars.request_count == 1


async def test_a_week_runs_monday_to_sunday_and_a_month_is_the_calendars(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    monday = datetime(2026, 3, 2, tzinfo=UTC)
    spend(ledger[0], 1, at=monday, project="w")
    spend(ledger[0], 1, at=monday + timedelta(days=6, hours=23), project="w")  # Sunday night
    spend(ledger[0], 3, at=monday - timedelta(seconds=1), project="w")  # the Sunday before
    clock = Clock(monday + timedelta(days=6, hours=23, minutes=30))
    weekly = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=2, period="week", clock=clock), project="w")
    with pytest.raises(BudgetExceededError, match=r"\$2\.00 spent of \$2\.00 this week \(since 2026-03-02 00:00 UTC\)"):
        await weekly.create(HI)
    clock.set(monday + timedelta(days=7))
    await weekly.create(HI)

    spend(ledger[0], 2, at=datetime(2026, 2, 28, 12, tzinfo=UTC), project="m")
    spend(ledger[0], 4, at=datetime(2026, 1, 31, 12, tzinfo=UTC), project="m")
    clock = Clock(datetime(2026, 2, 28, 23, tzinfo=UTC))
    monthly = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=2, period="month", clock=clock), project="m")
    with pytest.raises(BudgetExceededError, match=r"this month \(since 2026-02-01 00:00 UTC\)"):
        await monthly.create(HI)
    clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    await monthly.create(HI)
    assert dollars.request_count == 2


async def test_a_clock_set_back_reads_the_ledger_again_after_refresh_not_once_it_catches_up(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    clock = Clock()
    policy = BudgetPolicy(limit_usd=4, period=None, refresh=5, clock=clock)
    client = wrap(make_openai_client, ledger, policy, project="acme")
    await client.create(HI)  # the first check reads the ledger: nothing spent yet
    spend(ledger[0], 3, project="acme")  # another process spends $3
    clock.now -= 3600  # the machine's clock is set back an hour (NTP steps it, a VM resumes)
    clock.now += 6  # and then runs on past refresh
    await client.create(HI)  # goes on with the figure it has, and reads the ledger again meanwhile
    assert tracker_for(policy, ledger[1]).wait_for_reads()
    with pytest.raises(BudgetExceededError) as refused:
        await client.create(HI)
    assert refused.value.spent_usd == Decimal(5)  # not $2: the other process's $3 is counted
    assert dollars.request_count == 2


# --- alerts and warn mode ----------------------------------------------------------------------


async def test_alerts_fire_once_per_threshold_per_period(
    ledger: Ledger,
    dollars: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alerts: list[BudgetAlert] = []
    day = datetime(2026, 3, 10, tzinfo=UTC)
    clock = Clock(day + timedelta(hours=12))
    spend(ledger[0], 3, at=day + timedelta(hours=1), project="acme")
    policy = BudgetPolicy(limit_usd=10, period="day", alert_at=(0.5, 0.8), on_alert=alerts.append, clock=clock)
    client = wrap(make_openai_client, ledger, policy, project="acme")
    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    for extra in (0, 3, 3, 0, 2):  # the ledger's spend on this fake day grows as if calls cost money there
        spend(ledger[0], extra, at=day + timedelta(hours=2), project="acme")
        clock.now += 10  # past `refresh`: each check reads again (in the background)
        await client.create(HI)
        assert tracker_for(policy, ledger[1]).wait_for_reads()
    # Figures are read in the background: each check judges the one read before it.
    assert alerts[0] == BudgetAlert(
        threshold=Decimal("0.5"),
        spent_usd=Decimal(6),
        limit_usd=Decimal(10),
        scope="project",
        key="acme",
        project="acme",
        period="day",
        period_start=day,
    )
    assert [(alert.threshold, alert.spent_usd) for alert in alerts] == [
        (Decimal("0.5"), Decimal(6)),
        (Decimal("0.8"), Decimal(9)),
    ]
    assert "budget alert" not in caplog.text  # on_alert replaces the log line
    # The next day starts again: its spend reaches a threshold, which fires again.
    clock.set(day + timedelta(days=1, hours=1))
    spend(ledger[0], 6, at=day + timedelta(days=1), project="acme")
    await client.create(HI)
    assert [(alert.threshold, alert.spent_usd, alert.period_start) for alert in alerts[2:]] == [
        (Decimal("0.5"), Decimal(6), day + timedelta(days=1))
    ]
    assert dollars.request_count == 6


async def test_without_on_alert_an_alert_is_a_warning_in_the_log(
    ledger: Ledger,
    dollars: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    client = wrap(make_openai_client, ledger, BudgetPolicy(limit_usd=4, period=None), project="acme")
    for _ in range(4):
        await client.create(HI)
    with pytest.raises(BudgetExceededError):
        await client.create(HI)
    said = [record for record in caplog.records if record.getMessage().startswith("budget alert")]
    assert [record.getMessage() for record in said] == [
        "budget alert for project 'acme': $2.00 spent, 50% or more of $4.00 in all",  # 0.8 is $3.20
        "budget alert for project 'acme': $4.00 spent, 80% or more of $4.00 in all",
    ]
    assert said[1].threshold == "0.8"  # type: ignore[attr-defined]  # an extra= field
    assert dollars.request_count == 4


async def test_an_alert_hook_that_returns_a_coroutine_is_said_never_silently_dropped(
    ledger: Ledger,
    dollars: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A hook made async in a way construction cannot see (a plain function that returns a coroutine): its
    # coroutine was dropped unawaited, the alert lost with nothing but a RuntimeWarning, unseen in production.
    alerts: list[BudgetAlert] = []

    async def notify(alert: BudgetAlert) -> None:
        alerts.append(alert)

    def hook(alert: BudgetAlert) -> Coroutine[Any, Any, None]:
        return notify(alert)

    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    policy = BudgetPolicy(limit_usd=2, period=None, alert_at=(0.5,), on_alert=hook)
    client = wrap(make_openai_client, ledger, policy, project="acme")
    with warnings_as_errors():
        await client.create(HI)
        await client.create(HI)  # $1 spent: the alert fires, and the call goes on
    assert dollars.request_count == 2
    assert alerts == []
    said = [record for record in caplog.records if "on_alert" in record.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.ERROR
    message = said[0].getMessage()
    assert message.startswith(
        "a budget's on_alert hook returned a coroutine, which was not run (the hook must be a plain function): "
        "alert for project 'acme': $1.00 spent"
    )


async def test_a_policy_made_per_request_with_a_hook_of_its_own_adds_no_tracker_and_alerts_its_caller(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A service builds the budget per request, its alert hook a closure over the tenant: a new hook, so a new
    # hash, each time. Those requests share one budget, and each alert reaches the hook of the call that found it.
    alerts: list[tuple[str, str | None, Decimal]] = []

    def notifier(tenant: str) -> Callable[[BudgetAlert], None]:
        def notify(alert: BudgetAlert) -> None:
            alerts.append((tenant, alert.key, alert.spent_usd))

        return notify

    refused = 0
    for request in range(30):
        tenant = f"tenant-{request % 3}"
        policy = BudgetPolicy(limit_usd=4, period=None, alert_at=(0.5,), on_alert=notifier(tenant))
        client = wrap(make_openai_client, ledger, policy, project=tenant)
        try:
            await client.create(HI)
        except BudgetExceededError:
            refused += 1
    assert len(_by_ledger[ledger_key(ledger[0])]) == 1  # not one tracker per request, each fed every event
    assert dollars.request_count == 12  # four calls per tenant
    assert refused == 18
    # Once per tenant, as for a policy made once: not again on every later request.
    assert sorted(alerts) == [(f"tenant-{index}", f"tenant-{index}", Decimal(2)) for index in range(3)]


@pytest.mark.parametrize("made_per_request", ["clock", "store"])
async def test_a_policy_made_per_request_with_a_clock_or_store_of_its_own_adds_no_tracker(
    ledger: Ledger, dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, made_per_request: str
) -> None:
    # A service builds the budget per request with a clock object, or a UsageStore of the ledger, made there:
    # equal budgets on one database, each a new object. They share one budget, as equal policies do.
    alerts: list[tuple[str | None, Decimal]] = []
    url = ledger[0].engine.url.render_as_string(hide_password=False)
    stores: list[UsageStore] = []
    refused = 0
    try:
        for request in range(30):
            tenant = f"tenant-{request % 3}"
            if made_per_request == "clock":
                own: dict[str, Any] = {"clock": Clock()}
            else:
                stores.append(UsageStore(url))
                own = {"store": stores[-1]}
            policy = BudgetPolicy(
                limit_usd=4, period=None, alert_at=(0.5,), on_alert=lambda a: alerts.append((a.key, a.spent_usd)), **own
            )
            client = wrap(make_openai_client, ledger, policy, project=tenant)
            try:
                await client.create(HI)
            except BudgetExceededError:
                refused += 1
    finally:
        for store in stores:
            store.close()
    assert len(_by_ledger[ledger_key(ledger[0])]) == 1  # not one tracker per request, each fed every event
    assert dollars.request_count == 12  # four calls per tenant
    assert refused == 18
    assert sorted(alerts) == [(f"tenant-{index}", Decimal(2)) for index in range(3)]  # once per tenant


async def test_warn_mode_logs_once_and_sends(
    ledger: Ledger,
    dollars: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    policy = BudgetPolicy(limit_usd=1, period=None, on_exceed="warn", alert_at=())
    client = wrap(make_openai_client, ledger, policy, project="acme")
    for _ in range(4):
        await client.create(HI)
    assert dollars.request_count == 4
    said = [record.getMessage() for record in caplog.records if "budget exceeded" in record.getMessage()]
    assert said == [
        "budget exceeded for project 'acme': $1.00 spent of $1.00 in all; the call goes on "
        "(on_exceed='warn'), and this is said once this period"
    ]


@contextmanager
def warnings_as_errors() -> Iterator[None]:
    """Any warning (a coroutine never awaited, say) raised as an error where it is emitted."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- unpriced calls ----------------------------------------------------------------------------


async def test_unpriced_calls_are_counted_apart_and_said(
    ledger: Ledger,
    dollars: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    policy = BudgetPolicy(limit_usd=1, period=None)
    local = reliable(
        make_openai_client(model="acme-internal-7b", model_info=UNPRICED_MODEL_INFO),
        recorder=ledger[1],
        pricing=PRICING,
        budget=policy,
        project="acme",
    )
    await local.create(HI)
    await local.create(HI)  # unpriced: never reaches a dollar
    said = [record.getMessage() for record in caplog.records if "has no price" in record.getMessage()]
    assert said == [
        "model 'acme-internal-7b' has no price, so its calls cannot count toward the budget of project 'acme' "
        "($1 in all); they are counted as unpriced attempts. Give it a price (PricingTable) to count its cost"
    ]
    priced = wrap(make_openai_client, ledger, policy, project="acme")
    await priced.create(HI)
    with pytest.raises(BudgetExceededError) as refused:
        await local.create(HI)
    assert refused.value.unpriced == 2
    assert str(refused.value).endswith("(2 unpriced attempt(s) are not counted: their cost is unknown)")
    assert dollars.request_count == 3


async def test_unpriced_models_said_by_a_long_lived_budget_are_remembered_up_to_a_bound(
    ledger: Ledger,
    dollars: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A gateway passes each tenant's model on (a fine-tune, an adapter): names without end, none of them priced.
    monkeypatch.setattr(budget_tracker, "MOST_UNPRICED_MODELS", 10)
    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    policy = BudgetPolicy(limit_usd=1, period=None)
    client = wrap(make_openai_client, ledger, policy, project="acme")
    tracker = tracker_for(policy, ledger[1])
    for index in range(40):
        await client.create(HI, extra_create_args={"model": f"ft:acme-{index}"})
    assert dollars.request_count == 40
    assert len(tracker._unpriced_models) == 10  # the last ten named, not all forty
    said = [record.getMessage() for record in caplog.records if "has no price" in record.getMessage()]
    assert len(said) == 40
    assert said[-1].startswith("model 'ft:acme-39' has no price")
    await client.create(HI, extra_create_args={"model": "ft:acme-39"})  # remembered: not said again
    await client.create(HI, extra_create_args={"model": "ft:acme-0"})  # forgotten: said again, once
    said = [record.getMessage() for record in caplog.records if "has no price" in record.getMessage()]
    assert len(said) == 41
    assert said[-1].startswith("model 'ft:acme-0' has no price")
    assert len(tracker._unpriced_models) == 10


# --- configuration -----------------------------------------------------------------------------


@dataclass
class UnhashableHook:
    """A callable with value equality, and so no hash."""

    def __call__(self, alert: BudgetAlert) -> None:
        pass


async def async_hook(alert: BudgetAlert) -> None:
    pass


class AsyncHook:
    async def __call__(self, alert: BudgetAlert) -> None:
        pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit_usd": 0}, "limit_usd must be above zero"),
        ({"limit_usd": -5}, "limit_usd must be above zero"),
        ({"limit_usd": "ten"}, "limit_usd must be a decimal number"),
        ({"limit_usd": float("nan")}, "limit_usd must be finite"),
        ({"limit_usd": Decimal("Infinity")}, "limit_usd must be finite"),
        ({"limit_usd": True}, r"limit_usd must be a number \(an amount in USD\), got bool"),
        ({"limit_usd": 5, "alert_at": (True,)}, r"alert_at must be a number \(a fraction of the limit\), got bool"),
        ({"limit_usd": 5, "alert_at": ("half",)}, r"alert_at must be a decimal number \(a fraction of the limit\)"),
        ({"limit_usd": None}, "limit_usd must be a Decimal, an int or a decimal string"),
        ({"limit_usd": "0.0000000001"}, "at most 9 decimal places"),
        # Refused before the conversion to nano-USD, which would hang on such exponents.
        ({"limit_usd": "1e-999999999"}, "at most 9 decimal places"),
        ({"limit_usd": "1000000000000.000000001"}, r"limit_usd must be at most 1,000,000,000,000 USD"),
        ({"limit_usd": 10**400}, r"USD \(a limit above it stops nothing\), got 1.000000e\+400"),
        ({"limit_usd": Decimal("1e999999999")}, "at most 1,000,000,000,000 USD"),
        ({"limit_usd": 1e300}, "at most 1,000,000,000,000 USD"),
        ({"limit_usd": 1, "period": "year"}, "period must be 'day', 'week', 'month' or None"),
        ({"limit_usd": 1, "scope": "team"}, "scope must be 'project', 'session' or 'agent'"),
        ({"limit_usd": 1, "on_exceed": "stop"}, "on_exceed must be 'raise' or 'warn'"),
        ({"limit_usd": 1, "alert_at": (0.8, 0.5)}, "alert_at must be increasing"),
        ({"limit_usd": 1, "alert_at": (0.5, 0.5)}, "alert_at must be increasing"),
        ({"limit_usd": 1, "alert_at": (0, 0.5)}, "between 0 and 1"),
        ({"limit_usd": 1, "alert_at": (1,)}, "between 0 and 1"),
        ({"limit_usd": 1, "alert_at": "0.5"}, "alert_at must be a sequence of fractions"),
        ({"limit_usd": 1, "alert_at": 0.5}, "alert_at must be a sequence of fractions"),
        ({"limit_usd": 1, "on_alert": "log"}, "on_alert must be callable or None"),
        ({"limit_usd": 1, "on_alert": async_hook}, r"on_alert must be a plain function, not async \(async_hook\)"),
        ({"limit_usd": 1, "on_alert": AsyncHook()}, r"on_alert must be a plain function, not async \(AsyncHook\)"),
        ({"limit_usd": 1, "refresh": 0}, "refresh must be > 0 and <= 3600 seconds"),
        ({"limit_usd": 1, "refresh": timedelta(hours=2)}, "refresh must be > 0 and <= 3600 seconds"),
        ({"limit_usd": 1, "refresh": "5"}, "refresh must be seconds"),
        ({"limit_usd": 1, "refresh": 10**5000}, "refresh must be > 0 and <= 3600 seconds, got an int too large for a"),
        ({"limit_usd": 1, "store": 42}, "store must be a UsageStore, a database URL or None"),
        ({"limit_usd": 1, "store": "sqlite://"}, "an in-memory SQLite database is private"),
        ({"limit_usd": 1, "store": "mysql://u@h/db"}, "supports SQLite and PostgreSQL"),
        ({"limit_usd": 1, "clock": 5}, "clock must be callable"),
        # Clocks that would put every call in 1970, or fail at the first call: the budget silently stopped nothing
        # (a monotonic clock, as RetryPolicy and CircuitBreakerPolicy take), or every call raised TypeError.
        ({"limit_usd": 1, "clock": time.monotonic}, r"clock must read seconds since the epoch \(as time\.time"),
        ({"limit_usd": 1, "clock": time.perf_counter}, r"it read .* \(1970-01-"),
        ({"limit_usd": 1, "clock": lambda: datetime.now(UTC)}, "seconds since the epoch .*got a datetime"),
        ({"limit_usd": 1, "clock": lambda: float("nan")}, "clock must read seconds since the epoch .*got nan"),
        ({"limit_usd": 1, "on_alert": UnhashableHook()}, "on_alert must be hashable"),
    ],
)
def test_every_bad_option_is_refused_with_its_reason(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        BudgetPolicy(**options)


def test_money_is_kept_exact() -> None:
    assert BudgetPolicy(limit_usd=0.1).limit_usd == Decimal("0.1")  # what was written, not 0.1000000000000000055...
    assert BudgetPolicy(limit_usd="12.50").limit_usd == Decimal("12.50")
    assert BudgetPolicy(limit_usd=3).limit_nanousd == 3 * 10**9
    assert BudgetPolicy(limit_usd="1e12").limit_nanousd == 10**21  # the largest limit there is
    assert BudgetPolicy(limit_usd="1E-9").limit_nanousd == 1
    assert BudgetPolicy(limit_usd=Decimal("1000e-12")).limit_nanousd == 1
    policy = BudgetPolicy(limit_usd="0.000000003", alert_at=(0.5,))
    assert policy.alert_nanousd == (2,)  # spent >= 1.5 nano-USD is spent >= 2
    assert BudgetPolicy(limit_usd=1, alert_at=["0.25", Decimal("0.75")]).alert_at == (Decimal("0.25"), Decimal("0.75"))


async def test_money_is_exact_whatever_decimal_context_the_caller_runs_in(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # An application that sets its own decimal precision (a 4-digit context here) around its calls: the budget's
    # refusal was decimal.InvalidOperation (the message's cents quantized in 4 digits), not BudgetExceededError,
    # and its alerts said $1235 for $1234.56789, their thresholds rounded to the same 4 digits.
    fake_openai_server.default = FakeReply.text("ok", usage=ONE_DOLLAR)
    pricing = PricingTable({"models": {"gpt-4o-mini": {"input": "1234.56789", "output": "1"}}})
    alerts: list[BudgetAlert] = []
    with decimal.localcontext(prec=4):
        policy = BudgetPolicy(limit_usd="2000.000000001", period=None, alert_at=("0.6172839",), on_alert=alerts.append)
        assert policy.alert_nanousd == (1234567800001,)  # 0.6172839 x 2000000000001 nano-USD, rounded up
        client = reliable(make_openai_client(), recorder=ledger[1], pricing=pricing, budget=policy, project="acme")
        await client.create(HI)
        await client.create(HI)
        with pytest.raises(BudgetExceededError) as refused:
            await client.create(HI)
        assert str(alerts[0]) == "project 'acme': $1234.56789 spent, 61.72839% or more of $2000.000000001 in all"
    assert refused.value.spent_usd == Decimal("2469.13578")
    assert "$2469.13578 spent of $2000.000000001 in all" in str(refused.value)
    assert [alert.spent_usd for alert in alerts] == [Decimal("1234.56789")]
    assert fake_openai_server.request_count == 2


def test_the_wrapper_refuses_a_bad_budget(ledger: Ledger) -> None:
    with pytest.raises(ConfigurationError, match="budget must be a BudgetPolicy or None"):
        reliable(replay(), recorder=ledger[1], budget=5)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="budget needs track_usage=True"):
        reliable(replay(), track_usage=False, budget=BudgetPolicy(limit_usd=1))
    with pytest.raises(ConfigurationError, match="budget must be a BudgetPolicy or None"):
        configure(budget="5")  # type: ignore[arg-type]


@contextmanager
def default_budget(policy: BudgetPolicy) -> Iterator[BudgetPolicy]:
    """``policy`` as the process default budget, removed afterwards."""
    configure(budget=policy)
    try:
        yield policy
    finally:
        configure(budget=None)


async def test_the_configured_default_applies_and_budget_none_opts_out(
    dollars: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    project = f"default-{uuid.uuid4().hex[:8]}"  # the session's ledger is shared by every test
    before = reliable(make_openai_client(), pricing=PRICING, project=project)
    with default_budget(BudgetPolicy(limit_usd=1, period=None)) as policy:
        assert configure(content_limit=5000).budget is policy  # another setting changed: the budget stays
        budgeted = reliable(make_openai_client(), pricing=PRICING, project=project)
        opted_out = reliable(make_openai_client(), pricing=PRICING, project=project, budget=None)
        silent = reliable(make_openai_client(), track_usage=False, project=project)  # records nothing: no budget
        await budgeted.create(HI)
        with pytest.raises(BudgetExceededError):
            await budgeted.create(HI)
        await opted_out.create(HI)
        await before.create(HI)
        await silent.create(HI)
    assert configure().budget is None
    assert dollars.request_count == 4


def test_the_budget_round_trips_as_a_component(ledger: Ledger, tmp_path: Path) -> None:
    calls: list[BudgetAlert] = []
    policy = BudgetPolicy(
        limit_usd="12.50",
        period="week",
        scope="agent",
        on_exceed="warn",
        alert_at=(0.25, 0.9),
        on_alert=calls.append,
        refresh=timedelta(seconds=30),
    )
    client = reliable(replay(), recorder=ledger[1], budget=policy, project="acme")
    dumped = client.dump_component()
    assert dumped.config["budget"] == {
        "limit_usd": "12.50",
        "period": "week",
        "scope": "agent",
        "on_exceed": "warn",
        "alert_at": ["0.25", "0.9"],
        "refresh": 30.0,
    }
    loaded = ChatCompletionClient.load_component(json.loads(dumped.model_dump_json()))
    assert isinstance(loaded, ReliableChatCompletionClient)
    restored = loaded.options["budget"]
    assert restored is not None
    assert restored.to_config() == policy.to_config()
    assert restored.on_alert is None  # hooks are code, not configuration

    off = reliable(replay(), recorder=ledger[1], budget=None).dump_component()
    assert off.config["budget"] == "off"
    assert ChatCompletionClient.load_component(off).options["budget"] is None  # type: ignore[attr-defined]
    default = reliable(replay(), recorder=ledger[1]).dump_component()
    assert default.config.get("budget") is None  # the loading process's default
    assert "budget" not in ChatCompletionClient.load_component(default).options  # type: ignore[attr-defined]


def test_from_config_refuses_unknown_options() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown BudgetPolicy option\(s\) limit; known: .*limit_usd"):
        BudgetPolicy.from_config({"limit": "1.00"})
    with pytest.raises(ConfigurationError, match=r"^a BudgetPolicy config needs limit_usd$"):
        BudgetPolicy.from_config({"period": "day"})
    with pytest.raises(ConfigurationError, match=r"^a BudgetPolicy config needs limit_usd$"):
        BudgetPolicy.from_config({})
    # As a wrapper's dumped budget, loaded with the wrapper.
    dumped = reliable(replay(), budget=BudgetPolicy(limit_usd=1)).dump_component().model_dump(mode="json")
    del dumped["config"]["budget"]["limit_usd"]
    with pytest.raises(ConfigurationError, match=r"^a BudgetPolicy config needs limit_usd$"):
        ChatCompletionClient.load_component(dumped)
    with pytest.raises(ConfigurationError, match="a BudgetPolicy config must be a mapping, not str"):
        BudgetPolicy.from_config("1.00")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "dumped"),
    [
        ("postgresql+psycopg://app:hunter2@db.example/usage", "postgresql+psycopg://app:***@db.example/usage"),
        # libpq takes the password as a query parameter too, which SQLAlchemy's masking does not know.
        (
            "postgresql+psycopg://app@db.example/usage?sslmode=require&password=hunter2",
            "postgresql+psycopg://app@db.example/usage?password=***&sslmode=require",
        ),
    ],
)
def test_a_store_url_is_dumped_without_its_password(url: str, dumped: str) -> None:
    config = BudgetPolicy(limit_usd=1, store=url).to_config()
    assert config["store"] == dumped
    with pytest.raises(ConfigurationError, match=r"password masked \(\*\*\*\)"):
        BudgetPolicy.from_config(config)
    plain = BudgetPolicy(limit_usd=1, store="postgresql+psycopg://app@db.example/usage")
    assert BudgetPolicy.from_config(plain.to_config()) == plain


@pytest.fixture(autouse=True)
def _no_default_budget_leaks() -> Iterator[None]:
    yield
    assert configure().budget is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://app:s3cret@db.example/usage", "postgresql+psycopg://app:***@db.example/usage"),
        (
            "postgresql+psycopg://app@db.example/usage?password=s3cret",
            "postgresql+psycopg://app@db.example/usage?password=***",
        ),
    ],
)
def test_the_repr_of_a_policy_hides_the_store_urls_password(
    url: str, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    policy = BudgetPolicy(limit_usd=1, store=url)
    with caplog.at_level(logging.INFO, logger="autogen_reliability"):
        logging.getLogger("autogen_reliability").info("budget %s", policy)
    for text in (repr(policy), str(policy), caplog.text):
        assert "s3cret" not in text
        assert f"store={shown!r}" in text
    assert policy.store == url  # the policy still reads the database it was given
    assert repr(BudgetPolicy(limit_usd="2.5", period=None)) == (
        "BudgetPolicy(limit_usd=Decimal('2.5'), period=None, scope='project', on_exceed='raise', "
        "alert_at=(Decimal('0.5'), Decimal('0.8')), on_alert=None, refresh=5.0, store=None)"
    )
