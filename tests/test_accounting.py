"""One usage row per provider attempt: rows equal the requests the server received, tokens and cost exact."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import ChatCompletionClient, CreateResult, ModelInfo, UserMessage
from autogen_ext.models.cache import ChatCompletionCache
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient
from genai_prices import Usage, calc_price

from autogen_reliability import (
    BudgetPolicy,
    ConfigurationError,
    ReliableChatCompletionClient,
    ResponseValidationError,
    RetriesExhaustedError,
    RetryPolicy,
    ValidationPolicy,
    _config,
    configure,
    reliable,
    usage_scope,
)
from autogen_reliability._config import AccountingSettings, default_recorder
from autogen_reliability._config import settings as accounting_settings
from autogen_reliability.accounting import Cost, PricingTable, TokenUsage, UsageRecorder
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

from .conftest import OpenAIClientFactory, final_result, fork_child, validating_around_a_wrapped_client
from .memory_cache import MemoryStore
from .read_past import read_past_marker
from .storage_fixtures import Ledger, ledger_rows, open_ledger

HI = [UserMessage(content="hi", source="user")]
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02)


@pytest.fixture
def ledger(store_url: str, tmp_path: Path) -> Iterator[Ledger]:
    """A real store (SQLite file or PostgreSQL) and a recorder writing to it."""
    with open_ledger(store_url, tmp_path / "spool") as opened:
        yield opened


rows = ledger_rows


async def consume(client: ChatCompletionClient) -> CreateResult:
    return await final_result(client.create_stream(HI))


async def ask(client: ChatCompletionClient, *, streamed: bool) -> CreateResult:
    """``HI`` asked of ``client``, streamed or not: the final result."""
    return await consume(client) if streamed else await client.create(HI)


async def test_plain_call_is_one_row_with_the_servers_numbers(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(
        FakeReply.text("hello", usage=FakeUsage(prompt_tokens=1200, completion_tokens=80, cached_tokens=1000))
    )
    client = reliable(make_openai_client(), recorder=ledger[1], project="acme", agent="writer", tags={"tier": "gold"})
    with usage_scope(session="t-1"):
        await client.create(HI)
    (row,) = rows(ledger)
    assert (row.project, row.session, row.agent, dict(row.tags)) == ("acme", "t-1", "writer", {"tier": "gold"})
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (1200, 80, 1000)
    assert (row.provider, row.model, row.response_model) == ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (row.outcome, row.attempt, row.streamed, row.tokens_estimated) == ("ok", 1, False, False)
    assert row.started_at.tzinfo is not None
    expected = calc_price(
        Usage(input_tokens=1200, output_tokens=80, cache_read_tokens=1000),
        model_ref="gpt-4o-mini",
        provider_id="openai",
    ).total_price
    assert row.cost_nanousd == int((expected * Decimal(10**9)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert row.price_source is not None
    assert row.price_source.startswith("genai-prices")


async def test_streamed_call_is_counted_from_the_usage_chunk(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(
        FakeReply.text("streamed answer", usage=FakeUsage(prompt_tokens=33, completion_tokens=3))
    )
    await consume(reliable(make_openai_client(), recorder=ledger[1]))
    (row,) = rows(ledger)
    assert (row.prompt_tokens, row.completion_tokens, row.streamed, row.tokens_estimated) == (33, 3, True, False)


@pytest.mark.parametrize("count", [2**31, 2**63 - 1, 2**64 - 1])
async def test_a_token_count_no_ledger_holds_is_estimated_and_the_row_stored(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    count: int,
) -> None:
    # A provider's unsigned -1 (2**64 - 1) is no count, nor is anything past the ledger's INTEGER columns
    # (2**31 - 1 on PostgreSQL): the prompt is estimated, as when none is reported, on every backend.
    fake_openai_server.enqueue(FakeReply.text("big", usage=FakeUsage(prompt_tokens=count, completion_tokens=5)))
    await reliable(make_openai_client(), recorder=ledger[1]).create(HI)
    (row,) = rows(ledger)
    assert (row.outcome, row.completion_tokens, row.tokens_estimated) == ("ok", 5, True)
    assert 0 < row.prompt_tokens < 100
    assert row.cost_nanousd is not None
    assert row.cost_nanousd > 0
    assert ledger[1].stats["spooled"] == 0


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
async def test_a_fractional_token_count_is_estimated_and_the_row_stored(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
    streamed: bool,
) -> None:
    # The openai SDK hands AutoGen a count it cannot read as an int as it came (1000.5), and AutoGen reports it.
    usage = {"prompt_tokens": 1000.5, "completion_tokens": 100, "total_tokens": 1100.5}
    fake_openai_server.enqueue(raw_reply("gpt-4o-mini", usage, streamed=streamed))
    client = reliable(make_openai_client(), recorder=ledger[1])
    result = await consume(client) if streamed else await client.create(HI)
    assert result.usage.prompt_tokens == 1000.5
    (row,) = rows(ledger)
    assert (row.outcome, row.completion_tokens, row.tokens_estimated) == ("ok", 100, True)
    assert isinstance(row.prompt_tokens, int)
    assert 0 < row.prompt_tokens < 100
    assert row.cost_nanousd is not None
    assert row.cost_nanousd > 0
    assert (ledger[1].stats["spooled"], ledger[1].refused_path.exists()) == (0, False)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
@pytest.mark.parametrize("spelled", [float, str], ids=["float", "string"])
async def test_counts_spelled_as_whole_floats_or_digits_are_read_as_the_sdk_reads_them(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    streamed: bool,
    spelled: type,
) -> None:
    # Some OpenAI-compatible servers write counts as 400.0 or "400"; the openai SDK reads them as 400.
    usage = {
        "prompt_tokens": spelled(1000),
        "completion_tokens": spelled(100),
        "total_tokens": spelled(1100),
        "prompt_tokens_details": {"cached_tokens": spelled(400)},
        "completion_tokens_details": {"reasoning_tokens": spelled(20)},
    }
    fake_openai_server.enqueue(raw_reply("gpt-4o-mini", usage, streamed=streamed))
    client = reliable(make_openai_client(), recorder=ledger[1])
    result = await consume(client) if streamed else await client.create(HI)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (1000, 100)
    (row,) = rows(ledger)
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.reasoning_tokens) == (1000, 100, 400, 20)
    assert row.tokens_estimated is False
    # At gpt-4o-mini's $0.15 (new input), $0.075 (cached) and $0.60 (output) per million: was 210,000, all as new.
    assert row.cost_nanousd == 600 * 150 + 400 * 75 + 100 * 600


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
async def test_a_usage_without_its_prompt_keeps_the_completion_the_provider_counted(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    streamed: bool,
) -> None:
    # AutoGen 0.7.5 fails on a usage without prompt_tokens (it adds None); the provider still billed the answer,
    # whose completion it counted: only the prompt is estimated, streamed as not.
    usage = {"completion_tokens": 100, "total_tokens": 1100}
    fake_openai_server.enqueue(raw_reply("gpt-4o-mini", usage, streamed=streamed))
    client = reliable(make_openai_client(), recorder=ledger[1], retry=None)
    with pytest.raises(TypeError):
        await (consume(client) if streamed else client.create(HI))
    (row,) = rows(ledger)
    assert (row.outcome, row.completion_tokens, row.tokens_estimated) == ("error", 100, True)
    assert 0 < row.prompt_tokens < 100
    assert row.cost_nanousd == row.prompt_tokens * 150 + 100 * 600  # gpt-4o-mini's $0.15 and $0.60 per million


async def test_more_cached_tokens_than_prompt_tokens_keep_the_row_and_price_all_of_the_prompt_as_cached(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai_server.enqueue(
        FakeReply.text("c", usage=FakeUsage(prompt_tokens=100, completion_tokens=5, cached_tokens=150))
    )
    await reliable(make_openai_client(), recorder=ledger[1]).create(HI)
    (row,) = rows(ledger)
    # The provider's numbers as it sent them; only the price reads no more cached tokens than the prompt had.
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.tokens_estimated) == (100, 5, 150, False)
    assert (row.provider, row.model, row.response_model) == ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    price = PricingTable().price(
        "gpt-4o-mini", "openai", usage=TokenUsage(100, 5, cached_tokens=100), at=row.started_at
    )
    assert price is not None
    assert (row.cost_nanousd, row.price_source) == (price.nanousd, price.source)
    assert "could not price" not in caplog.text


async def test_a_stream_abandoned_after_its_first_chunk_is_estimated_as_its_in_flight_row_was(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The provider got the request and bills it; its usage chunk never came: the prompt is estimated and priced.
    fake_openai_server.enqueue(
        FakeReply.text("one two three four", usage=FakeUsage(prompt_tokens=77, completion_tokens=4), chunk_delay=0.05)
    )
    stream = reliable(make_openai_client(), recorder=ledger[1]).create_stream(HI)
    await anext(stream)
    await stream.aclose()
    (row,) = rows(ledger)
    assert (row.outcome, row.error_kind, row.tokens_estimated) == ("cancelled", "cancelled", True)
    assert row.prompt_tokens > 0
    assert row.cost_nanousd is not None
    assert row.cost_nanousd > 0


@pytest.mark.parametrize("fault", ["disconnect", "error event"])
async def test_a_stream_that_fails_after_its_first_chunks_is_estimated_not_recorded_free(
    fault: str,
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The provider answered (HTTP 200) and generated what was streamed; the connection, or the provider, then
    # failed before the usage chunk. That is billed: not 0 tokens at $0 presented as the provider's numbers.
    answer = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    usage = FakeUsage(prompt_tokens=77, completion_tokens=12)
    if fault == "disconnect":
        fake_openai_server.enqueue(FakeReply.text(answer, usage=usage, disconnect_after_chunks=6))
    else:
        fake_openai_server.enqueue(FakeReply.text(answer, usage=usage, error_after_chunks=6))
    stream = reliable(make_openai_client(), recorder=ledger[1], retry=FAST).create_stream(HI)
    streamed = ""
    for _ in range(6):
        item = await anext(stream)
        assert isinstance(item, str)
        streamed += item
    with pytest.raises(openai.APIError):
        await anext(stream)
    assert streamed == "alpha beta gamma delta epsilon zeta"
    (row,) = rows(ledger)
    assert len(fake_openai_server.requests) == 1
    assert (row.outcome, row.tokens_estimated) == ("error", True)
    assert row.prompt_tokens > 0
    assert row.completion_tokens == len(streamed) // 4  # the text that did arrive (a token per 4 characters)
    assert row.cost_nanousd is not None
    assert row.cost_nanousd > 0


@pytest.mark.parametrize("fault", ["disconnect", "error event"])
async def test_a_tool_call_stream_cut_off_is_estimated_from_the_call_that_came(
    fault: str,
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # A tool call streams no text: AutoGen yields nothing until its CreateResult. The provider generated (and
    # bills) the name and the argument fragments that came before the cut; the row counts them as it counts text.
    calls = [("lookup_order", {"order_id": 4711, "note": "refund the customer"})]
    usage = FakeUsage(prompt_tokens=77, completion_tokens=20)
    # The chunk with the call's name, then six argument fragments: {"  order_id  ":   4711  , "  note
    if fault == "disconnect":
        fake_openai_server.enqueue(FakeReply.tool_calls(calls, usage=usage, disconnect_after_chunks=7))
    else:
        fake_openai_server.enqueue(FakeReply.tool_calls(calls, usage=usage, error_after_chunks=7))
    with pytest.raises(openai.APIError):
        await consume(reliable(make_openai_client(), recorder=ledger[1], retry=None))
    (row,) = rows(ledger)
    assert (row.outcome, row.tokens_estimated, row.streamed) == ("error", True, True)
    assert row.prompt_tokens > 0
    came = len("lookup_order") + len('{"order_id": 4711, "note')
    assert row.completion_tokens == came // 4
    assert row.cost_nanousd is not None
    assert row.cost_nanousd > 0


async def test_a_tool_call_stream_cancelled_half_way_is_estimated_from_the_call_that_came(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The caller gives up (a timeout, a cancelled agent) while the call's arguments are still streaming: as when
    # the connection drops, the name and the fragments that came are counted.
    calls = [("lookup_order", {"order_id": 4711, "note": "refund the customer"})]
    fake_openai_server.enqueue(
        FakeReply.tool_calls(calls, usage=FakeUsage(prompt_tokens=77, completion_tokens=20), hold_after_chunks=7)
    )
    watch = read_past_marker(httpx2, b"note")  # the last fragment before the hold
    async with httpx2.AsyncClient(transport=watch) as http:
        client = reliable(make_openai_client(http_client=http), recorder=ledger[1], retry=None)
        step = asyncio.ensure_future(anext(client.create_stream(HI)))
        await asyncio.wait_for(watch.read_past.wait(), 30)
        step.cancel()
        with pytest.raises(asyncio.CancelledError):
            await step
    (row,) = rows(ledger)
    assert (row.outcome, row.tokens_estimated, row.streamed) == ("cancelled", True, True)
    assert row.prompt_tokens > 0
    assert row.completion_tokens == (len("lookup_order") + len('{"order_id": 4711, "note')) // 4


@pytest.mark.parametrize("ending", ["no usage asked for", "cut off"])
async def test_a_stream_without_a_usage_chunk_still_records_which_model_answered(
    ending: str,
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # Every chunk names the model that answered; the usage chunk is not the only one that does.
    client = reliable(make_openai_client(), recorder=ledger[1], retry=None)
    if ending == "cut off":
        fake_openai_server.enqueue(FakeReply.text("one two three four", disconnect_after_chunks=2))
        with pytest.raises(openai.APIConnectionError):
            await consume(client)
    else:
        fake_openai_server.enqueue(FakeReply.text("one two three four"))
        async for _ in client.create_stream(HI, extra_create_args={"stream_options": {"include_usage": False}}):
            pass
    (row,) = rows(ledger)
    assert (row.model, row.response_model, row.tokens_estimated) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", True)


async def test_a_stream_refused_before_it_answered_costs_nothing(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(FakeReply.error(400))
    with pytest.raises(openai.BadRequestError):
        await consume(reliable(make_openai_client(), recorder=ledger[1]))
    (row,) = rows(ledger)
    assert (row.outcome, row.http_status, row.tokens_estimated) == ("error", 400, False)
    assert (row.prompt_tokens, row.completion_tokens, row.cost_nanousd) == (0, 0, 0)


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_request_the_sdk_timed_out_waiting_for_is_estimated_as_a_deadline_is(
    streamed: bool,
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The SDK's read timeout fires with the whole request at the provider, which goes on answering (and billing):
    # the same attempt as one our deadline cancels, whose row has its prompt estimated and priced, not a free 0.
    fake_openai_server.enqueue(FakeReply.text("slow", delay=math.inf), FakeReply.reset())
    # Only the read times out soon: on a busy machine a connect timeout as short would fire first, no read timeout.
    client = reliable(make_openai_client(timeout=openai.Timeout(30.0, read=0.2)), recorder=ledger[1], retry=None)
    with pytest.raises(openai.APITimeoutError):
        await (consume(client) if streamed else client.create(HI))
    with pytest.raises(openai.APIConnectionError):  # a connection reset before any answer: no sign it was taken
        await (consume(client) if streamed else client.create(HI))
    timed_out, reset = rows(ledger)
    assert (timed_out.outcome, timed_out.error_kind, timed_out.tokens_estimated) == ("error", "timeout", True)
    assert (timed_out.prompt_tokens, timed_out.completion_tokens) == (max(1, len("hi") // 4), 0)
    assert timed_out.cost_nanousd is not None
    assert timed_out.cost_nanousd > 0
    assert (reset.error_kind, reset.tokens_estimated, reset.prompt_tokens, reset.cost_nanousd) == (
        "connection",
        False,
        0,
        0,
    )


async def test_retried_call_is_a_row_per_request(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("ok", usage=FakeUsage(prompt_tokens=10, completion_tokens=2)),
    )
    await reliable(make_openai_client(), recorder=ledger[1], retry=FAST).create(HI)
    found = rows(ledger)
    assert len(found) == fake_openai_server.request_count == 2
    assert len({row.call_id for row in found}) == 1
    first, second = found
    assert (first.attempt, first.outcome, first.error_kind, first.http_status) == (1, "error", "rate_limit", 429)
    assert (first.prompt_tokens, first.completion_tokens, first.cost_nanousd) == (0, 0, 0)
    assert first.error_message is not None
    assert "429" in first.error_message
    assert (second.attempt, second.outcome, second.prompt_tokens) == (2, "ok", 10)


async def test_reasked_attempts_are_rows_marked_invalid(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fake_openai_server.enqueue(
        FakeReply.text("no json", usage=FakeUsage(prompt_tokens=20, completion_tokens=2)),
        FakeReply.json({"n": 1}, usage=FakeUsage(prompt_tokens=40, completion_tokens=3)),
    )
    await reliable(make_openai_client(), recorder=ledger[1], validation=ValidationPolicy(schema=schema)).create(HI)
    found = rows(ledger)
    assert [(row.attempt, row.outcome, row.validation_errors) for row in found] == [(1, "invalid", 1), (2, "ok", 0)]
    assert sum(row.prompt_tokens for row in found) == 60
    assert all(row.cost_nanousd for row in found)  # the invalid answer cost money too


async def test_failed_call_rows_and_a_cancelled_one(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.default = FakeReply.error(500)
    client = reliable(make_openai_client(), recorder=ledger[1], retry=RetryPolicy(max_attempts=3, initial_delay=0))
    with pytest.raises(RetriesExhaustedError):
        await client.create(HI)
    fake_openai_server.default = FakeReply.error(400, message="Incorrect API key provided: sk-proj-abcdef123456")
    with pytest.raises(openai.BadRequestError):
        await client.create(HI)
    found = rows(ledger)
    assert len(found) == fake_openai_server.request_count == 4
    assert [row.error_kind for row in found] == ["server_error"] * 3 + ["bad_request"]
    assert all(row.outcome == "error" for row in found)
    last_message = found[-1].error_message
    assert last_message is not None
    assert "sk-proj" not in last_message
    assert "[REDACTED]" in last_message


async def test_a_wrapper_around_wrapped_clients_adds_no_row_for_their_attempts(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # A wrapped client records its own provider attempts: the outer wrapper's attempt on it (nested in it, or
    # as its fallback) is one of its calls, not one more request. A bare fallback's attempt is the outer's row.
    fake_openai_server.enqueue(
        FakeReply.error(500),  # the nested wrapper's two attempts
        FakeReply.error(500),
        FakeReply.error(503),  # the wrapped fallback's one
        FakeReply.text("from the bare fallback", usage=FakeUsage(prompt_tokens=7, completion_tokens=2)),
    )
    recorder = ledger[1]
    nested = ReliableChatCompletionClient(
        make_openai_client(), recorder=recorder, retry=RetryPolicy(max_attempts=2, initial_delay=0)
    )
    wrapped_fallback = ReliableChatCompletionClient(make_openai_client(), recorder=recorder, retry=None)
    outer = ReliableChatCompletionClient(
        nested, recorder=recorder, retry=None, fallbacks=[wrapped_fallback, make_openai_client()]
    )
    answer = await outer.create(HI)
    assert answer.content == "from the bare fallback"
    found = rows(ledger)
    assert len(found) == fake_openai_server.request_count == 4
    assert [row.error_kind for row in found] == ["server_error", "server_error", "overloaded", None]
    assert [row.http_status for row in found] == [500, 500, 503, None]
    assert sum(row.prompt_tokens for row in found) == 7
    # Three calls: the nested wrapper's, the wrapped fallback's, and the outer's (its attempt on the bare client).
    assert len({row.call_id for row in found}) == 3


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
async def test_autogens_cache_under_the_wrapper_is_a_row_per_answer_and_over_it_answers_without_a_row(
    streamed: bool,
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # docs/architecture.md, "AutoGen's ChatCompletionCache": under the wrapper, a hit is a row at no cost with the
    # answer's tokens, in total_usage() and not in actual_usage(); over it, a hit never reaches the wrapper.
    usage = FakeUsage(prompt_tokens=30, completion_tokens=4)
    fake_openai_server.enqueue(FakeReply.text("a", usage=usage), FakeReply.text("b", usage=usage))
    under = reliable(ChatCompletionCache(make_openai_client(), MemoryStore()), recorder=ledger[1], project="under")
    wrapped = reliable(make_openai_client(), recorder=ledger[1], project="over")
    over = ChatCompletionCache(wrapped, MemoryStore())
    for client in (under, over):
        for _ in range(2):
            answer = await (consume(client) if streamed else client.create(HI))
        assert answer.cached
    assert fake_openai_server.request_count == 2
    found = rows(ledger)
    assert [(row.project, row.cache_hit, row.prompt_tokens, row.cost_nanousd) for row in found] == [
        ("under", False, 30, 30 * 150 + 4 * 600),  # gpt-4o-mini: $0.15 and $0.60 per million
        ("under", True, 30, 0),
        ("over", False, 30, 30 * 150 + 4 * 600),
    ]
    assert (under.total_usage().prompt_tokens, under.actual_usage().prompt_tokens) == (60, 30)
    assert (wrapped.total_usage().prompt_tokens, wrapped.actual_usage().prompt_tokens) == (30, 30)


async def test_answers_refused_by_validation_are_replayed_by_autogens_cache_under_the_wrapper_not_over_it(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # docs/architecture.md, "AutoGen's ChatCompletionCache": the cache under the wrapper keeps the refused answers,
    # and the call fails again from it with no request; over the wrapper it keeps only what was handed on.
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fake_openai_server.default = FakeReply.json({"n": 1})
    policy = ValidationPolicy(schema=schema, reask=1)
    under = reliable(ChatCompletionCache(make_openai_client(), MemoryStore()), recorder=ledger[1], validation=policy)
    over = ChatCompletionCache(reliable(make_openai_client(), recorder=ledger[1], validation=policy), MemoryStore())
    for client in (under, over):
        fake_openai_server.enqueue(FakeReply.text("no json"), FakeReply.text("still no json"))
        with pytest.raises(ResponseValidationError):
            await client.create(HI)
    assert fake_openai_server.request_count == 4
    with pytest.raises(ResponseValidationError):
        await under.create(HI)  # from the cache, both answers: nothing sent
    assert fake_openai_server.request_count == 4
    assert (await over.create(HI)).content == '{"n": 1}'  # asked again, and answered
    assert fake_openai_server.request_count == 5
    found = rows(ledger)
    assert [(row.outcome, row.cache_hit, row.cost_nanousd == 0) for row in found[4:6]] == [
        ("invalid", True, True),
        ("invalid", True, True),
    ]


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
async def test_an_answer_autogens_cache_gives_between_two_wrappers_that_record_is_a_row_at_no_cost(
    streamed: bool,
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # An agent whose client is AutoGen's cache over a wrapped client, wrapped again by reliable(agent): a miss is
    # the inner wrapper's request and row; a hit makes no request there, and is the outer wrapper's row, a cache
    # hit at no cost with the tokens of the answer replayed, as it is with a bare client under the cache.
    fake_openai_server.enqueue(FakeReply.text("drafted", usage=FakeUsage(prompt_tokens=30, completion_tokens=4)))
    cache = ChatCompletionCache(reliable(make_openai_client(), recorder=ledger[1], retry=None), MemoryStore())
    for _ in range(2):  # an agent built per request, as a service does: the second one's prompt is the first's
        writer = AssistantAgent("writer", model_client=cache, model_client_stream=streamed)
        reliable(writer, recorder=ledger[1], project="acme")
        result = await writer.run(task="Draft.")
        assert result.messages[-1].to_text() == "drafted"
    assert fake_openai_server.request_count == 1
    found = rows(ledger)
    assert [(row.project, row.agent, row.cache_hit, row.outcome, row.streamed) for row in found] == [
        ("acme", "writer", False, "ok", streamed),
        ("acme", "writer", True, "ok", streamed),
    ]
    assert [(row.prompt_tokens, row.completion_tokens) for row in found] == [(30, 4), (30, 4)]
    assert [(row.cost_nanousd, row.price_source) for row in found] == [
        (30 * 150 + 4 * 600, found[0].price_source),  # gpt-4o-mini: $0.15 and $0.60 per million
        (0, "cache"),
    ]
    assert len({row.call_id for row in found}) == 2


async def test_a_request_is_not_taken_for_a_cache_hit_when_autogens_cache_answers_its_answer_to_another_call(
    ledger: tuple[UsageStore, UsageRecorder],
    tmp_path: Path,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # AutoGen's cache keeps the answer it passed on, and marks that object cached=True when it answers another
    # call with it. The first call's request (re-asked, so its call has not ended yet) is billed all the same:
    # its row is no cache hit, and costs what the server's numbers say, with or without a journal.
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    usage = FakeUsage(prompt_tokens=20, completion_tokens=2)
    fake_openai_server.enqueue(
        FakeReply.text("no json", usage=usage),
        replace(FakeReply.json({"n": 1}, usage=usage), hold_after_chunks=0),  # the first call's re-ask, held
        FakeReply.json({"n": 2}, usage=usage),  # the second call's re-ask
    )
    recorder = UsageRecorder(ledger[0], spool_dir=tmp_path / "no-journal", close_sink=False, journal=False)
    try:
        client = reliable(
            ChatCompletionCache(make_openai_client(), MemoryStore()),
            recorder=recorder,
            retry=None,
            validation=ValidationPolicy(schema=schema),
        )
        first = asyncio.create_task(client.create(HI))
        await fake_openai_server.wait_for_requests_async(2)
        second = await client.create(HI)  # its first answer is the first call's, from the cache
        fake_openai_server.release()
        assert ((await first).content, second.content) == ('{"n": 1}', '{"n": 2}')
        assert recorder.flush(10)
    finally:
        recorder.close()
    found = sorted(ledger[0].events(), key=lambda row: (row.cache_hit, row.started_at))
    assert fake_openai_server.request_count == 3
    assert [(row.attempt, row.outcome, row.cache_hit, row.cost_nanousd) for row in found] == [
        (1, "invalid", False, 20 * 150 + 2 * 600),  # gpt-4o-mini: $0.15 and $0.60 per million
        (2, "ok", False, 20 * 150 + 2 * 600),
        (2, "ok", False, 20 * 150 + 2 * 600),
        (1, "invalid", True, 0),
    ]


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
async def test_a_wrapped_client_that_records_nothing_has_a_row_per_request_under_one_that_does(
    streamed: bool,
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The nested wrapper retries a 429 and re-asks an invalid answer; the fallback retries a 429. Each of the
    # six requests is a row of the outer wrapper's ledger, with the server's numbers: the outer's attempt on a
    # wrapped client kept one row, the last response's (the 429s lost, the invalid answer's 20 + 2 tokens unbilled).
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    usages = [FakeUsage(prompt_tokens=20, completion_tokens=2), FakeUsage(prompt_tokens=40, completion_tokens=3)]
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("no json", usage=usages[0]),
        FakeReply.json({"n": 1}, usage=usages[1]),
    )
    nested = reliable(make_openai_client(), track_usage=False, retry=FAST, validation=ValidationPolicy(schema=schema))
    outer = ReliableChatCompletionClient(nested, recorder=ledger[1], retry=None)
    await (consume(outer) if streamed else outer.create(HI))
    found = rows(ledger)
    assert len(found) == fake_openai_server.request_count == 3
    assert [(row.attempt, row.outcome, row.http_status, row.validation_errors) for row in found] == [
        (1, "error", 429, 0),
        (2, "invalid", None, 1),
        (3, "ok", None, 0),
    ]
    assert [(row.prompt_tokens, row.completion_tokens) for row in found] == [(0, 0), (20, 2), (40, 3)]
    assert all(row.streamed is streamed for row in found)
    assert found[1].cost_nanousd == 20 * 150 + 2 * 600  # gpt-4o-mini: $0.15 and $0.60 per million
    assert sum(row.cost_nanousd or 0 for row in found) == 60 * 150 + 5 * 600

    backup = reliable(make_openai_client(model="gpt-4o"), track_usage=False, retry=FAST)
    outer = reliable(make_openai_client(), recorder=ledger[1], retry=None, fallbacks=[backup])
    fake_openai_server.enqueue(
        FakeReply.error(500),
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("b", usage=FakeUsage(prompt_tokens=10, completion_tokens=2)),
    )
    await (consume(outer) if streamed else outer.create(HI))
    found = rows(ledger)[3:]
    assert len(found) == fake_openai_server.request_count - 3 == 3
    assert [(row.model, row.attempt, row.http_status, row.prompt_tokens) for row in found] == [
        ("gpt-4o-mini", 1, 500, 0),
        ("gpt-4o", 1, 429, 0),  # the fallback's call: a call_id of its own, as a fallback that records has
        ("gpt-4o", 2, None, 10),
    ]
    assert found[2].cost_nanousd == 10 * 2500 + 2 * 10000
    assert {row.project for row in found} == {None}


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("inner", ["nested", "nested-unrecorded", "fallback", "fallback-unrecorded"])
async def test_an_answer_the_outer_wrappers_validation_refused_is_invalid_in_the_row_of_its_request(
    inner: str,
    streamed: bool,
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The request was made by a wrapped client (nested in the outer wrapper, or its fallback), whose row it is;
    # the outer wrapper's validation refused its answer and re-asked. That row said "ok", 0 violations: the
    # report's waste and re-ask rate left out an answer paid for and thrown away.
    outer = validating_around_a_wrapped_client(inner, ledger[1], fake_openai_server, make_openai_client)
    answer = await (consume(outer) if streamed else outer.create(HI))
    assert answer.content == '{"n": 1}'
    answered = [row for row in rows(ledger) if row.http_status is None]
    assert len(rows(ledger)) == fake_openai_server.request_count
    assert [(row.outcome, row.validation_errors, row.prompt_tokens) for row in answered] == [
        ("invalid", 1, 20),
        ("ok", 0, 20),
    ]


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
async def test_a_wrapper_that_records_nothing_between_two_that_do_has_a_row_per_request(
    streamed: bool,
    ledger: tuple[UsageStore, UsageRecorder],
    tmp_path: Path,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The outer wrapper records, the middle one records nothing (it borrows the outer's accounting), the innermost
    # records itself: each request is one row, of the innermost's ledger if it made it, else of the outer's.
    usage = FakeUsage(prompt_tokens=20, completion_tokens=2)
    retry_429 = FakeReply.error(429, headers={"retry-after-ms": "10"})
    with open_ledger(f"sqlite:///{tmp_path / 'inner.db'}", tmp_path / "inner-spool") as inner:
        # Nested: the innermost's two requests are its rows.
        fake_openai_server.enqueue(retry_429, FakeReply.text("a", usage=usage))
        middle = ReliableChatCompletionClient(
            reliable(make_openai_client(), recorder=inner[1], retry=FAST), track_usage=False, retry=None
        )
        outer = ReliableChatCompletionClient(middle, recorder=ledger[1], retry=None)
        await (consume(outer) if streamed else outer.create(HI))
        assert (len(rows(ledger)), len(rows(inner))) == (0, fake_openai_server.request_count) == (0, 2)

        # The innermost as the middle's fallback: the middle's 500 is the outer's row, the fallback's two requests
        # the innermost's rows only (the middle's attempt on it was one more row of the outer's: 4 for 3).
        fake_openai_server.enqueue(FakeReply.error(500), retry_429, FakeReply.text("b", usage=usage))
        backup = reliable(make_openai_client(model="gpt-4o"), recorder=inner[1], retry=FAST)
        middle = ReliableChatCompletionClient(make_openai_client(), track_usage=False, retry=None, fallbacks=[backup])
        outer = ReliableChatCompletionClient(middle, recorder=ledger[1], retry=None)
        await (consume(outer) if streamed else outer.create(HI))
        assert [(row.model, row.http_status) for row in rows(ledger)] == [("gpt-4o-mini", 500)]
        assert [(row.model, row.http_status, row.prompt_tokens) for row in rows(inner)[2:]] == [
            ("gpt-4o", 429, 0),
            ("gpt-4o", None, 20),
        ]

        # The innermost as the middle's primary, a provider client its fallback: the fallback's request is the
        # outer's row (it had none: the middle, wrapping a wrapper that records, was taken for one that records).
        fake_openai_server.enqueue(FakeReply.error(500), FakeReply.text("c", usage=usage))
        primary = reliable(make_openai_client(model="gpt-4o"), recorder=inner[1], retry=None)
        middle = ReliableChatCompletionClient(primary, track_usage=False, retry=None, fallbacks=[make_openai_client()])
        outer = ReliableChatCompletionClient(middle, recorder=ledger[1], retry=None)
        await (consume(outer) if streamed else outer.create(HI))
        assert [(row.model, row.http_status) for row in rows(inner)[4:]] == [("gpt-4o", 500)]
        assert [(row.model, row.http_status, row.prompt_tokens) for row in rows(ledger)[1:]] == [
            ("gpt-4o-mini", None, 20)
        ]
        assert len(rows(ledger)) + len(rows(inner)) == fake_openai_server.request_count == 7


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
async def test_two_nested_wrappers_that_record_nothing_have_a_row_and_an_in_flight_row_per_request(
    streamed: bool,
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # Only the outer wrapper records: each request is one row of its ledger, and holds one in-flight row while it
    # runs (the middle's attempt on the innermost held one more).
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("a", usage=FakeUsage(prompt_tokens=20, completion_tokens=2), delay=0.5),
    )
    innermost = reliable(make_openai_client(), track_usage=False, retry=FAST)
    middle = ReliableChatCompletionClient(innermost, track_usage=False, retry=None)
    outer = ReliableChatCompletionClient(middle, recorder=ledger[1], retry=None)
    table = ledger[1].in_flight
    assert table is not None
    call = asyncio.create_task(consume(outer) if streamed else outer.create(HI))
    await fake_openai_server.wait_for_requests_async(2)
    assert table.held == 2  # the 429's row (its call has not ended) and the answer's
    await call
    assert table.held == 0
    found = rows(ledger)
    assert len(found) == fake_openai_server.request_count == 2
    assert [(row.attempt, row.http_status, row.prompt_tokens) for row in found] == [(1, 429, 0), (2, None, 20)]


async def test_token_sums_over_a_team_run_equal_what_the_server_returned(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    usages = [FakeUsage(prompt_tokens=100 + n, completion_tokens=10 + n) for n in range(3)]
    fake_openai_server.enqueue(
        FakeReply.error(503, headers={"retry-after-ms": "5"}),
        *[FakeReply.text(f"answer {n}", usage=usage) for n, usage in enumerate(usages)],
    )
    agent = reliable(AssistantAgent("solo", model_client=make_openai_client()), recorder=ledger[1], retry=FAST)
    for task in ("one", "two", "three"):
        await agent.run(task=task)
    found = rows(ledger)
    assert len(found) == fake_openai_server.request_count == 4
    assert sum(row.prompt_tokens for row in found) == sum(usage.prompt_tokens for usage in usages)
    assert sum(row.completion_tokens for row in found) == sum(usage.completion_tokens for usage in usages)
    assert {row.agent for row in found} == {"solo"}


async def test_unknown_model_is_unpriced_not_free(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(FakeReply.text("hi"))
    info = {
        "vision": False,
        "function_calling": True,
        "json_output": True,
        "family": "unknown",
        "structured_output": True,
    }
    await reliable(make_openai_client(model="acme-internal-7b", model_info=info), recorder=ledger[1]).create(HI)
    (row,) = rows(ledger)
    assert row.cost_nanousd is None
    assert row.price_source is None


async def test_price_overrides_win(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(
        FakeReply.text("hi", usage=FakeUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000))
    )
    pricing = PricingTable({"models": {"gpt-4o-mini": {"input": "1", "output": "2"}}})
    await reliable(make_openai_client(), recorder=ledger[1], pricing=pricing).create(HI)
    (row,) = rows(ledger)
    assert row.cost_nanousd == 3 * 10**9
    assert row.price_source == "override"


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
async def test_a_model_asked_for_in_extra_create_args_is_the_one_recorded_and_priced(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    streamed: bool,
) -> None:
    # AutoGen's clients send extra_create_args over their own create args, "model" included: the request
    # asks for that model, and the provider bills its price, not the price of the model the client was made with.
    fake_openai_server.enqueue(
        FakeReply.text("hi", usage=FakeUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000))
    )
    pricing = PricingTable(
        {"models": {"gpt-4o-mini": {"input": "1", "output": "2"}, "acme-large": {"input": "10", "output": "20"}}}
    )
    client = reliable(make_openai_client(), recorder=ledger[1], pricing=pricing)  # made with gpt-4o-mini
    if streamed:
        async for _ in client.create_stream(HI, extra_create_args={"model": "acme-large"}):
            pass
    else:
        await client.create(HI, extra_create_args={"model": "acme-large"})
    assert fake_openai_server.requests[0].model == "acme-large"
    (row,) = rows(ledger)
    assert (row.provider, row.model, row.response_model) == ("openai", "acme-large", "acme-large")
    assert (row.cost_nanousd, row.price_source) == (30 * 10**9, "override")


def azure_reply(model: str, *, streamed: bool) -> FakeReply:
    """An answer as Azure OpenAI sends it: the model that answered named, content filter results, 1,000 + 100 tokens.

    A stream opens with Azure's chunk of prompt filter results (no choices, no model, no id).
    """
    filtered = {"hate": {"filtered": False, "severity": "safe"}}
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    answer = {"id": "chatcmpl-az", "created": 1, "model": model, "system_fingerprint": "fp_az"}
    if not streamed:
        message = {"role": "assistant", "content": "Hi"}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "content_filter_results": filtered}
        results = [{"prompt_index": 0, "content_filter_results": filtered}]
        body = {**answer, "object": "chat.completion", "choices": [choice], "usage": usage}
        return FakeReply.malformed(json.dumps({**body, "prompt_filter_results": results}).encode())
    chunk = {**answer, "object": "chat.completion.chunk"}
    prompt_filtered = {"id": "", "created": 0, "model": "", "object": "", "choices": [], "prompt_filter_results": []}
    events = [
        prompt_filtered,
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "content_filter_results": {}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": "Hi"}, "content_filter_results": filtered}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "content_filter_results": {}}]},
        {**chunk, "choices": [], "usage": usage},
    ]
    stream = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return FakeReply.malformed(stream.encode(), content_type="text/event-stream")


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
async def test_an_azure_deployment_named_as_its_model_is_priced_as_the_model_that_answered(
    ledger: tuple[UsageStore, UsageRecorder], fake_openai_server: FakeOpenAIServer, streamed: bool
) -> None:
    # model= the deployment's name, as many Azure users build it: no price table knows it, but Azure's answer names
    # the model that answered, which is what the deployment bills. An answer from a model no table knows stays
    # unpriced, never $0.
    azure = AzureOpenAIChatCompletionClient(
        model="my-gpt4o-prod",
        azure_deployment="my-gpt4o-prod",
        api_version="2024-10-21",
        azure_endpoint=fake_openai_server.root_url,
        api_key="0123456789abcdef0123456789abcdef",
        model_info=ModelInfo(
            vision=False, function_calling=True, json_output=True, family="unknown", structured_output=True
        ),
    )
    client = reliable(azure, recorder=ledger[1], retry=RetryPolicy(max_attempts=1))
    fake_openai_server.enqueue(azure_reply("gpt-4o-2024-08-06", streamed=streamed))
    fake_openai_server.enqueue(azure_reply("acme-secret-model", streamed=streamed))
    assert (await ask(client, streamed=streamed)).content == "Hi"
    assert (await ask(client, streamed=streamed)).content == "Hi"
    await client.close()

    priced, unknown = rows(ledger)
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100)
    expected = PricingTable().price("gpt-4o", "azure", usage=usage, at=priced.started_at)
    assert expected is not None
    assert (priced.provider, priced.model, priced.response_model) == ("azure", "my-gpt4o-prod", "gpt-4o-2024-08-06")
    assert (priced.prompt_tokens, priced.completion_tokens, priced.tokens_estimated) == (1000, 100, False)
    assert priced.cost_nanousd == expected.nanousd > 0
    assert priced.price_source == f"{expected.source}; priced as gpt-4o-2024-08-06"
    assert (unknown.model, unknown.response_model) == ("my-gpt4o-prod", "acme-secret-model")
    assert (unknown.cost_nanousd, unknown.price_source) == (None, None)


async def test_a_model_the_table_knows_is_never_priced_as_the_one_that_answered(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # An override of the deployment's name wins; one dated after the request leaves it unpriced (the override is
    # authoritative for the names it lists), not priced as the model that answered.
    pricing = PricingTable(
        {
            "models": {
                "prod-chat": {"input": "1", "output": "2"},
                "later-chat": {"prices": [{"effective_from": "2999-01-01", "input": "1", "output": "2"}]},
            }
        }
    )
    usage = FakeUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    for name in ("prod-chat", "later-chat"):
        fake_openai_server.enqueue(FakeReply.text("hi", model="gpt-4o-2024-08-06", usage=usage))
        client = make_openai_client(model=name, model_info=UNKNOWN_MODEL_INFO)
        with pytest.warns(UserWarning, match="Resolved model mismatch"):
            await reliable(client, recorder=ledger[1], pricing=pricing).create(HI)
    overridden, not_yet = rows(ledger)
    assert (overridden.model, overridden.cost_nanousd, overridden.price_source) == ("prod-chat", 3 * 10**9, "override")
    assert (not_yet.model, not_yet.response_model) == ("later-chat", "gpt-4o-2024-08-06")
    assert (not_yet.cost_nanousd, not_yet.price_source) == (None, None)


def raw_reply(model: str, usage: dict[str, Any], *, streamed: bool) -> FakeReply:
    """An answer "Hi" whose usage object is ``usage`` as given: a provider's own shape, beyond FakeUsage's."""
    answer = {"id": "chatcmpl-x", "created": 1, "model": model}
    if streamed:
        chunk = {**answer, "object": "chat.completion.chunk"}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**chunk, "choices": [], "usage": usage},
        ]
        body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
        return FakeReply.malformed(body.encode(), content_type="text/event-stream")
    message = {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    body = json.dumps({**answer, "object": "chat.completion", "choices": [message], "usage": usage})
    return FakeReply.malformed(body.encode())


UNKNOWN_MODEL_INFO: dict[str, Any] = {
    "vision": False,
    "function_calling": True,
    "json_output": True,
    "family": "unknown",
    "structured_output": True,
}


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
async def test_reasoning_tokens_a_provider_counts_apart_from_the_completion_are_recorded_and_priced(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    streamed: bool,
) -> None:
    # xAI reports reasoning tokens beside completion_tokens, not inside it as OpenAI does: its total_tokens is
    # prompt + completion + reasoning, and it bills the reasoning at the output price.
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 2,
        "total_tokens": 1388,
        "completion_tokens_details": {"reasoning_tokens": 386},
    }
    reply = raw_reply("grok-3-mini", usage, streamed=streamed)
    fake_openai_server.enqueue(reply)
    pricing = PricingTable({"models": {"grok-3-mini": {"input": "1", "output": "2"}}})
    inner = make_openai_client(model="grok-3-mini", model_info=UNKNOWN_MODEL_INFO)
    client = reliable(inner, recorder=ledger[1], pricing=pricing)
    await ask(client, streamed=streamed)
    (row,) = rows(ledger)
    # As OpenAI counts them (and every other row holds them): the completion includes its reasoning.
    assert (row.prompt_tokens, row.completion_tokens, row.reasoning_tokens) == (1000, 388, 386)
    assert (row.tokens_estimated, row.streamed) == (False, streamed)
    assert row.cost_nanousd == 1000 * 1000 + 388 * 2000  # nano-USD at $1 and $2 per million tokens


GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"


class _ToFakeServer(httpx2.AsyncBaseTransport):
    """Sends a request made for another host (Gemini's) to the fake server, as that host would receive it."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self._server = server
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = httpx2.URL(self._server.base_url + "/chat/completions")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def gemini_reply(model: str, usage: dict[str, Any], *, streamed: bool) -> FakeReply:
    """An answer "Hi" as Gemini's OpenAI-compatible endpoint writes it: a stream's usage in its last chunk."""
    if not streamed:
        return raw_reply(model, usage, streamed=False)
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": model}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage},
    ]
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return FakeReply.malformed(body.encode(), content_type="text/event-stream")


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
@pytest.mark.parametrize(
    "usage",
    [
        # Gemini's OpenAI-compatible endpoint counts a thinking model's thoughts in total_tokens only.
        pytest.param({"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1420}, id="thoughts-in-total"),
        pytest.param(
            {
                "prompt_tokens": 1000,
                "completion_tokens": 20,
                "total_tokens": 1420,
                "completion_tokens_details": {"reasoning_tokens": 400},
            },
            id="thoughts-in-details",
        ),
        pytest.param(  # as a gateway that counts them in the completion, as OpenAI does, writes it
            {
                "prompt_tokens": 1000,
                "completion_tokens": 420,
                "total_tokens": 1420,
                "completion_tokens_details": {"reasoning_tokens": 400},
            },
            id="thoughts-in-completion",
        ),
    ],
)
async def test_a_gemini_thinking_models_thoughts_are_recorded_and_priced_as_output(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    usage: dict[str, Any],
    streamed: bool,
) -> None:
    # Google bills a thinking model's thoughts at the output price; the 400 of them here are not in
    # completion_tokens, only in total_tokens (or in completion_tokens_details.reasoning_tokens).
    usage = {**usage, "prompt_tokens_details": {"cached_tokens": 600}}
    fake_openai_server.enqueue(gemini_reply("gemini-2.5-flash", usage, streamed=streamed))
    async with httpx2.AsyncClient(transport=_ToFakeServer(fake_openai_server)) as http:
        inner = make_openai_client(model="gemini-2.5-flash", base_url=GEMINI_BASE_URL, http_client=http)
        await ask(reliable(inner, recorder=ledger[1]), streamed=streamed)
    (row,) = rows(ledger)
    assert (row.provider, row.model, row.tokens_estimated, row.streamed) == (
        "google",
        "gemini-2.5-flash",
        False,
        streamed,
    )
    assert (row.prompt_tokens, row.cached_tokens) == (1000, 600)
    assert (row.completion_tokens, row.reasoning_tokens) == (420, 400)
    expected = calc_price(
        Usage(input_tokens=1000, cache_read_tokens=600, output_tokens=420),
        model_ref="gemini-2.5-flash",
        provider_id="google",
        genai_request_timestamp=row.started_at,
    ).total_price
    assert row.cost_nanousd == int((expected * Decimal(10**9)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


async def test_a_larger_total_tokens_of_a_model_that_is_no_gemini_leaves_its_completion_as_counted(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # Only Gemini's endpoint is known to leave its thoughts out of completion_tokens; another server's total is
    # not taken for reasoning.
    usage = {"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1420}
    fake_openai_server.enqueue(raw_reply("llama-3.1-8b-instant", usage, streamed=False))
    pricing = PricingTable({"models": {"llama-3.1-8b-instant": {"input": "1", "output": "2"}}})
    inner = make_openai_client(model="llama-3.1-8b-instant", model_info=UNKNOWN_MODEL_INFO)
    await reliable(inner, recorder=ledger[1], pricing=pricing).create(HI)
    (row,) = rows(ledger)
    assert (row.prompt_tokens, row.completion_tokens, row.reasoning_tokens) == (1000, 20, None)


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
async def test_prompt_cache_hits_a_provider_reports_in_its_own_fields_are_recorded_and_priced(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    streamed: bool,
) -> None:
    # DeepSeek reports its cache hits as prompt_cache_hit_tokens (prompt_tokens = hits + misses), with no
    # prompt_tokens_details, and bills them at its cache-read price.
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "total_tokens": 1100,
        "prompt_cache_hit_tokens": 800,
        "prompt_cache_miss_tokens": 200,
    }
    fake_openai_server.enqueue(raw_reply("deepseek-chat", usage, streamed=streamed))
    pricing = PricingTable({"models": {"deepseek-chat": {"input": "1", "output": "2", "cached_input": "0.1"}}})
    inner = make_openai_client(model="deepseek-chat", model_info=UNKNOWN_MODEL_INFO)
    client = reliable(inner, recorder=ledger[1], pricing=pricing)
    await ask(client, streamed=streamed)
    (row,) = rows(ledger)
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (1000, 100, 800)
    assert row.cost_nanousd == 200 * 1000 + 800 * 100 + 100 * 2000  # nano-USD at $1, $0.1 and $2 per million


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
async def test_prompt_cache_writes_openai_reports_in_the_prompts_details_are_recorded_and_priced(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    streamed: bool,
) -> None:
    # OpenAI's models with a cache-write price (and OpenRouter's Claude) report the writes as
    # prompt_tokens_details.cache_write_tokens, part of prompt_tokens, billed above the input price.
    usage = {
        "prompt_tokens": 10_000,
        "completion_tokens": 500,
        "total_tokens": 10_500,
        "prompt_tokens_details": {"cached_tokens": 4_000, "cache_write_tokens": 3_000, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 100, "audio_tokens": 0},
    }
    fake_openai_server.enqueue(raw_reply("gpt-6-luna", usage, streamed=streamed))
    inner = make_openai_client(model="gpt-6-luna", model_info=UNKNOWN_MODEL_INFO)
    client = reliable(inner, recorder=ledger[1])
    await ask(client, streamed=streamed)
    (row,) = rows(ledger)
    assert (row.prompt_tokens, row.completion_tokens) == (10_000, 500)
    assert (row.cached_tokens, row.cache_write_tokens, row.reasoning_tokens) == (4_000, 3_000, 100)
    expected = calc_price(
        Usage(input_tokens=10_000, output_tokens=500, cache_read_tokens=4_000, cache_write_tokens=3_000),
        model_ref="gpt-6-luna",
        provider_id="openai",
        genai_request_timestamp=row.started_at,
    ).total_price
    assert expected == Decimal("0.000965")  # 3,000 new at $0.10, 4,000 read at $0.01, 3,000 written at $0.125
    assert row.cost_nanousd == 965_000  # was 890,000: the writes priced as new input


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
async def test_audio_tokens_are_priced_at_the_models_audio_prices(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    streamed: bool,
) -> None:
    # An audio model (extra_create_args={"modalities": ["text", "audio"], ...}) counts the audio of the prompt and
    # of the answer in the details, part of prompt_tokens and completion_tokens, and bills them at its audio prices.
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 600},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 150},
    }
    fake_openai_server.enqueue(
        raw_reply("gpt-audio", usage, streamed=streamed), raw_reply("gpt-4o-mini", usage, streamed=streamed)
    )
    audio = reliable(make_openai_client(model="gpt-audio", model_info=UNKNOWN_MODEL_INFO), recorder=ledger[1])
    text = reliable(make_openai_client(), recorder=ledger[1])  # gpt-4o-mini: no audio price, all at its own
    for client in (audio, text):
        await ask(client, streamed=streamed)
    by_model = {row.model: row for row in rows(ledger)}
    audio_row, text_row = by_model["gpt-audio"], by_model["gpt-4o-mini"]
    expected = [
        calc_price(
            Usage(input_tokens=1000, output_tokens=200, input_audio_tokens=600, output_audio_tokens=150),
            model_ref=model,
            provider_id="openai",
            genai_request_timestamp=row.started_at,
        ).total_price
        for model, row in (("gpt-audio", audio_row), ("gpt-4o-mini", text_row))
    ]
    # gpt-audio: 400 text tokens in at $2.50, 600 of audio at $32, 50 text tokens out at $10, 150 of audio at $64.
    assert expected == [Decimal("0.0303"), Decimal("0.00027")]
    assert (audio_row.prompt_tokens, audio_row.completion_tokens, audio_row.tokens_estimated) == (1000, 200, False)
    assert audio_row.cost_nanousd == 30_300_000  # was 4,500,000: every token at the text prices
    assert text_row.cost_nanousd == 270_000


async def test_the_usage_groq_reports_in_its_own_member_of_a_stream_not_asked_for_usage_is_recorded(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # Groq reports a stream's usage in the last chunk's x_groq member whether or not include_usage was asked for.
    answer = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "llama-3.1-8b-instant"}
    usage = {"queue_time": 0.02, "prompt_tokens": 1000, "prompt_time": 0.01, "completion_tokens": 100}
    first = {"index": 0, "delta": {"role": "assistant", "content": "Hi"}}
    last = {"index": 0, "delta": {}, "finish_reason": "stop"}
    events = [
        {**answer, "choices": [first], "x_groq": {"id": "r"}},
        {**answer, "choices": [last], "x_groq": {"id": "r", "usage": usage}},
    ]
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    fake_openai_server.enqueue(FakeReply.malformed(body.encode(), content_type="text/event-stream"))
    pricing = PricingTable({"models": {"llama-3.1-8b-instant": {"input": "1", "output": "2"}}})
    inner = make_openai_client(model="llama-3.1-8b-instant", model_info=UNKNOWN_MODEL_INFO)
    client = reliable(inner, recorder=ledger[1], pricing=pricing)
    async for _ in client.create_stream(HI, include_usage=False):
        pass
    (row,) = rows(ledger)
    assert (row.prompt_tokens, row.completion_tokens, row.tokens_estimated) == (1000, 100, False)
    assert row.cost_nanousd == 1000 * 1000 + 100 * 2000  # nano-USD at $1 and $2 per million tokens


TIER_USAGE = FakeUsage(prompt_tokens=10_000, completion_tokens=2_000, cached_tokens=4_000)


def tier_price(tier: str | None, at: Any) -> int:
    """genai-prices' own price of TIER_USAGE on gpt-5-mini when ``tier`` served it, in nano-USD."""
    usd = calc_price(
        Usage(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=4_000),
        model_ref="gpt-5-mini",
        provider_id="openai",
        genai_request_timestamp=at,
        price_context=None if tier is None else {"service_tier": tier},
    ).total_price
    return int((usd * Decimal(10**9)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
@pytest.mark.parametrize(
    ("asked", "served"),
    [("flex", None), ("priority", None), ("flex", "default"), (None, None)],
    ids=["flex", "priority", "flex-served-at-default", "no-tier"],
)
async def test_an_answer_is_priced_at_the_service_tier_the_provider_says_served_it(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    streamed: bool,
    asked: str | None,
    served: str | None,
) -> None:
    # OpenAI's Flex processing costs half the standard price and Priority more; the answer's service_tier
    # (every chunk's, in a stream) names the tier that served the request, which may not be the one asked for.
    fake_openai_server.enqueue(FakeReply.text("Hi", usage=TIER_USAGE, service_tier=served))
    client = reliable(make_openai_client(model="gpt-5-mini", model_info=UNKNOWN_MODEL_INFO), recorder=ledger[1])
    extra = {"service_tier": asked} if asked else {}
    if streamed:
        await final_result(client.create_stream(HI, extra_create_args=extra))
    else:
        await client.create(HI, extra_create_args=extra)
    (row,) = rows(ledger)
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (10_000, 2_000, 4_000)
    tier = served or asked
    assert row.cost_nanousd == tier_price(tier, row.started_at)
    standard = tier_price(None, row.started_at)
    if tier == "flex":
        assert row.cost_nanousd * 2 == standard
    elif tier == "priority":
        assert row.cost_nanousd > standard


async def test_a_pricing_table_of_ones_own_written_before_service_tiers_still_prices_standard_answers(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # A subclass whose price() takes no service_tier (as it was before tiers were priced): every OpenAI answer
    # says "default", and that is the standard price, so the table is asked as it always was.
    class MarkedUp(PricingTable):
        def price(  # type: ignore[override]  # the signature of before service tiers, on purpose
            self, model: str, provider: str | None, *, usage: TokenUsage, at: datetime | None = None
        ) -> Cost | None:
            cost = super().price(model, provider, usage=usage, at=at)
            return None if cost is None else dataclasses.replace(cost, nanousd=cost.nanousd * 2, usd=cost.usd * 2)

    fake_openai_server.enqueue(
        FakeReply.text("Hi", usage=FakeUsage(prompt_tokens=1000, completion_tokens=100), service_tier="default"),
        FakeReply.text("Hi", usage=FakeUsage(prompt_tokens=1000, completion_tokens=100), service_tier="flex"),
    )
    client = reliable(make_openai_client(), recorder=ledger[1], pricing=MarkedUp())
    await client.create(HI)
    await client.create(HI, extra_create_args={"service_tier": "flex"})
    standard, flex = rows(ledger)
    plain = PricingTable().price("gpt-4o-mini", "openai", usage=TokenUsage(1000, 100), at=standard.started_at)
    assert plain is not None
    assert standard.cost_nanousd == plain.nanousd * 2
    assert flex.cost_nanousd is None  # a tier it cannot be asked about: unpriced, the row kept


async def test_a_pricing_table_that_fails_on_every_answer_is_said_once_not_per_attempt(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The table of before service tiers, on a service that asks for Flex processing: every answer it is asked
    # about raises a TypeError. One ERROR (with the traceback) says so, not one per attempt.
    class MarkedUp(PricingTable):
        def price(  # type: ignore[override]  # the signature of before service tiers, on purpose
            self, model: str, provider: str | None, *, usage: TokenUsage, at: datetime | None = None
        ) -> Cost | None:
            return super().price(model, provider, usage=usage, at=at)

    caplog.set_level(logging.WARNING, logger="autogen_reliability")
    fake_openai_server.default = FakeReply.text(
        "Hi", usage=FakeUsage(prompt_tokens=10, completion_tokens=1), service_tier="flex"
    )
    client = reliable(make_openai_client(), recorder=ledger[1], pricing=MarkedUp())
    for _ in range(20):
        await client.create(HI, extra_create_args={"service_tier": "flex"})
    assert [row.cost_nanousd for row in rows(ledger)] == [None] * 20  # every row kept, unpriced
    (said,) = [record for record in caplog.records if record.name == "autogen_reliability"]
    assert said.levelno == logging.ERROR
    assert said.exc_info is not None
    assert said.exc_info[0] is TypeError
    assert re.fullmatch(
        r"could not price attempt 1 of call \S+ \(gpt-4o-mini at openai, service tier 'flex'\); recording it "
        r"unpriced, and the next such attempts too without saying it again",
        said.getMessage(),
    )


async def test_track_usage_false_records_nothing(
    tmp_path: Path, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    before = configure()
    configure(db_url=f"sqlite:///{tmp_path / 'default.db'}", spool_dir=tmp_path / "spool")
    try:
        fake_openai_server.enqueue(FakeReply.text("not recorded"), FakeReply.text("recorded"))
        untracked = reliable(make_openai_client(), track_usage=False)
        assert untracked.recorder is None
        await untracked.create(HI)
        await reliable(make_openai_client()).create(HI)  # the process's recorder, for comparison
        assert default_recorder().flush(10)
        store = UsageStore(f"sqlite:///{tmp_path / 'default.db'}")
        try:
            assert [event.outcome for event in store.events()] == ["ok"]  # the tracked call's row only
        finally:
            store.close()
    finally:
        configure(db_url=before.db_url, spool_dir=before.spool_dir)


@pytest.mark.parametrize("option", ["recorder", "pricing"])
def test_track_usage_false_refuses_a_recorder_or_pricing(
    option: str, ledger: tuple[UsageStore, UsageRecorder], make_openai_client: OpenAIClientFactory
) -> None:
    given: dict[str, Any] = {"recorder": ledger[1]} if option == "recorder" else {"pricing": PricingTable()}
    with pytest.raises(ConfigurationError, match=f"{option}= needs track_usage=True"):
        reliable(make_openai_client(), track_usage=False, **given)
    agent = AssistantAgent("writer", model_client=make_openai_client())
    with pytest.raises(ConfigurationError, match=f"{option}= needs track_usage=True"):
        reliable(agent, track_usage=False, **given)


async def test_every_field_of_an_attempts_row_holds_what_the_attempt_said(
    ledger: tuple[UsageStore, UsageRecorder],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # Each field by name, for a failed attempt and for an answer with everything a row records: cached and
    # reasoning tokens, a sanitised escape, the captured request and answer.
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text(
            "hello \x1b[31mthere",
            usage=FakeUsage(prompt_tokens=50, completion_tokens=9, cached_tokens=20, reasoning_tokens=4),
        ),
    )
    saved = accounting_settings().capture_content
    configure(capture_content=True)
    try:
        client = reliable(
            make_openai_client(), recorder=ledger[1], retry=FAST, project="acme", agent="writer", tags={"k": "v"}
        )
    finally:
        configure(capture_content=saved)
    with usage_scope(session="s-1"):
        await client.create(HI)
    failed, answered = rows(ledger)
    asked = '[{"content": "hi", "source": "user", "type": "UserMessage"}]'
    for row in (failed, answered):
        assert (row.project, row.session, row.agent, dict(row.tags)) == ("acme", "s-1", "writer", {"k": "v"})
        assert (row.provider, row.model, row.streamed, row.cache_hit, row.tokens_estimated) == (
            "openai",
            "gpt-4o-mini",
            False,
            False,
            False,
        )
        assert row.request_content == asked
    assert failed.call_id == answered.call_id
    assert failed.event_id != answered.event_id
    assert answered.started_at >= failed.started_at + timedelta(milliseconds=failed.latency_ms)
    assert (failed.attempt, failed.outcome, failed.error_kind, failed.http_status) == (1, "error", "rate_limit", 429)
    assert failed.error_message is not None
    assert "429" in failed.error_message
    assert (failed.prompt_tokens, failed.completion_tokens, failed.cost_nanousd) == (0, 0, 0)
    assert (failed.cached_tokens, failed.reasoning_tokens, failed.response_model, failed.finish_reason) == (
        None,
        None,
        None,
        None,
    )
    assert (dict(failed.sanitizer_changes), failed.validation_errors, failed.response_content) == ({}, 0, None)
    assert (answered.attempt, answered.outcome, answered.error_kind, answered.http_status) == (2, "ok", None, None)
    assert answered.error_message is None
    assert (answered.prompt_tokens, answered.completion_tokens) == (50, 9)
    assert (answered.cached_tokens, answered.cache_write_tokens, answered.reasoning_tokens) == (20, None, 4)
    assert (answered.response_model, answered.finish_reason) == ("gpt-4o-mini-2024-07-18", "stop")
    price = PricingTable().price(
        "gpt-4o-mini", "openai", usage=TokenUsage(50, 9, cached_tokens=20), at=answered.started_at
    )
    assert price is not None
    assert (answered.cost_nanousd, answered.price_source, answered.price_date) == (
        price.nanousd,
        price.source,
        price.effective_from,
    )
    assert (dict(answered.sanitizer_changes), answered.validation_errors) == ({"ansi": 1}, 0)
    assert answered.response_content == "hello \x1b[31mthere"  # what the provider answered, as it was billed


def test_the_repr_of_the_settings_hides_the_databases_password(caplog: pytest.LogCaptureFixture) -> None:
    url = "postgresql+psycopg://app:s3cret@db.example/usage"
    current = replace(accounting_settings(), db_url=url, budget=BudgetPolicy(limit_usd=1, store=url))
    with caplog.at_level(logging.INFO, logger="autogen_reliability"):
        logging.getLogger("autogen_reliability").info("accounting settings: %s", current)
    for text in (repr(current), caplog.text):
        assert "s3cret" not in text
        assert "db_url='postgresql+psycopg://app:***@db.example/usage'" in text
        assert "store='postgresql+psycopg://app:***@db.example/usage'" in text
    assert current.db_url == url  # the recorder connects with the password
    # A URL SQLAlchemy cannot parse (configure() refuses it; the class alone does not) is still shown masked.
    unparsed = repr(AccountingSettings(db_url="postgresql://app:s3cret@db.example:port/usage"))
    assert "db_url='postgresql://app:[REDACTED]@db.example:port/usage'" in unparsed
    pricing = PricingTable()
    plain = AccountingSettings(db_url="sqlite:///usage.db", pricing=pricing, spool_dir=Path("spool"))
    assert repr(plain) == (
        f"AccountingSettings(db_url='sqlite:///usage.db', pricing={pricing!r}, capture_content=False, "
        "content_limit=10000, spool_dir=PosixPath('spool'), budget=None)"
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_a_thread_configured_the_process_reads_its_settings(tmp_path: Path) -> None:
    # Another thread is inside configure() or default_recorder() (making the process's recorder: imports, a
    # thread, journal files) when the process forks: the child had that lock held for ever, by a thread it does
    # not have, and its first reliable(), configure() or settings() waited for it without end.
    before = configure()
    configure(db_url=f"sqlite:///{tmp_path / 'default.db'}", spool_dir=tmp_path / "spool")
    inside, leave = threading.Event(), threading.Event()

    def configuring() -> None:
        with _config._lock:  # as default_recorder() holds it while it makes the recorder
            inside.set()
            leave.wait(60)

    def work() -> None:
        raise SystemExit(0 if accounting_settings().db_url.endswith("default.db") else 2)

    holder = threading.Thread(target=configuring)
    holder.start()
    try:
        assert inside.wait(10)
        assert fork_child(work) == 0  # before: None, killed after waiting 30 s for the parent thread's lock
    finally:
        leave.set()
        holder.join(10)
        configure(db_url=before.db_url, spool_dir=before.spool_dir)
