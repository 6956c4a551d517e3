"""Wrapped streams driven, closed or abandoned from other tasks: they end cleanly and every request gets its row.

A consumer may run each ``anext`` in a task of its own (``asyncio.wait_for`` does), close the
stream from another task, or drop it half-way and leave the closing to the garbage collector.
AutoGen's bare client copes with all three; the wrapper must too, and its ledger must still hold
exactly one row per HTTP request the server received. Everything runs through the real SDK
against FakeOpenAIServer into a real SQLite file.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
from collections.abc import AsyncGenerator

import pytest
from autogen_core.models import CreateResult, UserMessage

from autogen_reliability import RetryPolicy, reliable, usage_scope
from autogen_reliability._client import ReliableChatCompletionClient
from autogen_reliability._pipeline import StreamItem
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage, RecordedRequest

from .conftest import OpenAIClientFactory
from .storage_fixtures import Ledger, ledger_rows

HI = [UserMessage(content="hi", source="user")]
WORDS = "one two three four five six"
USAGE = FakeUsage(prompt_tokens=31, completion_tokens=6)
STEP_TIMEOUT = 10.0  # generous: only there to make each anext run in a task of its own


rows = ledger_rows


async def settle() -> None:
    """Collect abandoned generators and wait for the tasks asyncio starts to close them (their ``aclose``)."""
    for _ in range(5):
        gc.collect()
        await asyncio.sleep(0)  # the finalizer hook creates its task with call_soon_threadsafe: one loop turn
        finalizers = asyncio.all_tasks() - {asyncio.current_task()}
        if not finalizers:
            return
        await asyncio.wait(finalizers, timeout=10)


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{record.name}: {record.getMessage()}" for record in caplog.records if record.levelno >= logging.ERROR]


async def _next(stream: AsyncGenerator[StreamItem, None]) -> StreamItem:
    return await anext(stream)


async def step(stream: AsyncGenerator[StreamItem, None]) -> StreamItem:
    """One ``anext`` in a task of its own, as ``asyncio.wait_for(anext(gen), t)`` runs it on Python 3.11.

    The task is made explicitly because from Python 3.12 ``wait_for`` awaits in the caller's task.
    """
    return await asyncio.wait_for(asyncio.create_task(_next(stream)), STEP_TIMEOUT)


async def read_each_step_in_a_new_task(stream: AsyncGenerator[StreamItem, None]) -> list[StreamItem]:
    items: list[StreamItem] = []
    while True:
        try:
            items.append(await step(stream))
        except StopAsyncIteration:
            return items


def wrapped(
    make_openai_client: OpenAIClientFactory, ledger: Ledger, retry: RetryPolicy | None = None
) -> ReliableChatCompletionClient:
    return reliable(make_openai_client(), recorder=ledger[1], retry=retry)


async def test_each_anext_in_its_own_task_ends_normally_with_one_row(
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai_server.enqueue(FakeReply.text(WORDS, usage=USAGE, chunk_delay=0.005))
    client = wrapped(make_openai_client, ledger)

    with usage_scope(session="per-task"):
        items = await read_each_step_in_a_new_task(client.create_stream(HI))
    await settle()

    assert "".join(item for item in items if isinstance(item, str)) == WORDS
    assert isinstance(items[-1], CreateResult)
    assert logged(caplog) == []
    (row,) = rows(ledger)
    assert len(fake_openai_server.requests) == 1
    assert (row.outcome, row.prompt_tokens, row.completion_tokens, row.session) == ("ok", 31, 6, "per-task")
    assert row.response_model == "gpt-4o-mini-2024-07-18"  # the tap saw the response


async def test_a_retried_stream_read_step_by_step_in_new_tasks_has_a_row_per_request(
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai_server.enqueue(FakeReply.error(503), FakeReply.text(WORDS, usage=USAGE))
    client = wrapped(make_openai_client, ledger, retry=RetryPolicy(initial_delay=0.01, max_delay=0.02))

    items = await read_each_step_in_a_new_task(client.create_stream(HI))
    await settle()

    assert isinstance(items[-1], CreateResult)
    assert logged(caplog) == []
    found = sorted(rows(ledger), key=lambda row: row.attempt)
    assert len(found) == len(fake_openai_server.requests) == 2
    assert [(row.attempt, row.outcome, row.http_status) for row in found] == [(1, "error", 503), (2, "ok", None)]
    assert found[1].prompt_tokens == 31


@pytest.mark.parametrize("read", [2, "all"], ids=["half-way", "after-the-result"])
async def test_aclose_from_another_task_ends_normally_with_one_row(
    read: int | str,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai_server.enqueue(FakeReply.text(WORDS, usage=USAGE, chunk_delay=0.005))
    client = wrapped(make_openai_client, ledger)
    stream = client.create_stream(HI)

    final: CreateResult | None = None
    while read == "all" and final is None:
        item = await anext(stream)
        final = item if isinstance(item, CreateResult) else None
    for _ in range(read if isinstance(read, int) else 0):
        await anext(stream)
    await asyncio.create_task(stream.aclose())  # raises nothing
    await settle()

    assert logged(caplog) == []
    (row,) = rows(ledger)
    assert len(fake_openai_server.requests) == 1
    if final is None:
        assert (row.outcome, row.finish_reason) == ("cancelled", None)
    else:
        assert (row.outcome, row.prompt_tokens, row.completion_tokens) == ("ok", 31, 6)


async def test_a_stream_abandoned_half_way_and_collected_has_one_row_and_logs_nothing(
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai_server.enqueue(FakeReply.text(WORDS, usage=USAGE, chunk_delay=0.005))
    client = wrapped(make_openai_client, ledger)
    stream = client.create_stream(HI)
    assert await step(stream) == "one"
    assert await anext(stream) == " two"

    del stream  # asyncio's finalizer hook closes it in a task of its own
    await settle()

    assert logged(caplog) == []
    (row,) = rows(ledger)
    assert len(fake_openai_server.requests) == 1
    assert row.outcome == "cancelled"


async def test_concurrent_streams_read_in_new_tasks_each_get_their_own_usage(
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def reply(request: RecordedRequest) -> FakeReply:
        # The usage depends on the request, and the first calls answer last.
        index = int(re.findall(r"task (\d+)", json.dumps(request.messages))[0])
        usage = FakeUsage(prompt_tokens=100 + index, completion_tokens=10 + index)
        return FakeReply.text(f"answer {index}", usage=usage, delay=(7 - index) * 0.02, chunk_delay=0.005)

    fake_openai_server.default = reply
    client = wrapped(make_openai_client, ledger)

    async def call(index: int) -> None:
        with usage_scope(session=f"s{index}"):
            stream = client.create_stream([UserMessage(content=f"task {index}", source="user")])
        if index % 2:
            await read_each_step_in_a_new_task(stream)
        else:  # read half-way, then dropped for the garbage collector
            await step(stream)
            del stream

    await asyncio.gather(*(call(index) for index in range(8)))
    await settle()

    assert logged(caplog) == []
    found = {row.session: row for row in rows(ledger)}
    assert len(found) == len(fake_openai_server.requests) == 8
    for index in range(1, 8, 2):
        row = found[f"s{index}"]
        assert (row.outcome, row.prompt_tokens, row.completion_tokens) == ("ok", 100 + index, 10 + index)
    assert {found[f"s{index}"].outcome for index in range(0, 8, 2)} == {"cancelled"}


async def test_a_call_made_between_two_steps_of_a_stream_is_not_counted_in_the_streams_row(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The stream asks for no usage, so the call between its steps is the only usage on the wire.
    fake_openai_server.enqueue(
        FakeReply.text(WORDS, chunk_delay=0.01),
        FakeReply.text("meanwhile", usage=FakeUsage(prompt_tokens=777, completion_tokens=77)),
    )
    client = wrapped(make_openai_client, ledger)

    with usage_scope(session="stream"):
        stream = client.create_stream(HI, extra_create_args={"stream_options": {"include_usage": False}})
    assert await anext(stream) == "one"
    with usage_scope(session="between"):
        await client.create(HI)
    rest = [item async for item in stream]
    assert isinstance(rest[-1], CreateResult)

    found = {row.session: row for row in rows(ledger)}
    assert len(found) == len(fake_openai_server.requests) == 2
    assert (found["between"].prompt_tokens, found["between"].completion_tokens) == (777, 77)
    assert found["stream"].prompt_tokens != 777
    assert found["stream"].completion_tokens != 77
    assert fake_openai_server.requests[0].include_usage is False
