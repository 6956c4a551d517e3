"""The fake of Anthropic's Messages wire protocol, driven by the real anthropic SDK over HTTP.

The SDK parses every answer into its own types (``Message``, ``RawMessageStreamEvent``), so a shape
the fake got wrong fails here. Then AutoGen's AnthropicChatCompletionClient, wrapped by ``reliable``,
talks to it, and each usage row in a real ledger must hold Anthropic's numbers: the prompt with its
cache reads and writes (which AutoGen's ``RequestUsage`` leaves out), and their price, judged by
genai-prices' own reading of the same usage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core.memory import ListMemory, MemoryContent, MemoryMimeType
from autogen_core.models import CreateResult, ModelInfo, UserMessage
from autogen_ext.models.anthropic import (
    AnthropicBedrockChatCompletionClient,
    AnthropicChatCompletionClient,
    BedrockInfo,
)
from genai_prices import extract_usage

from autogen_reliability import ProviderResponseError, RetryPolicy, TruncatedStreamError, reliable
from autogen_reliability.accounting import PricingTable
from autogen_reliability.health import HealthProbe
from autogen_reliability.providers._usage_tap import (
    ProviderUsage,
    UsageSlot,
    UsageTapTransport,
    _BodyTap,
    attach_usage_tap,
)
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

from .anthropic_wire import AnthropicReply, FakeAnthropicServer
from .conftest import OpenAIClientFactory
from .read_past import read_past_marker
from .storage_fixtures import Ledger, ledger_rows, open_ledger
from .tapping import SIZES, events, fed, parsed_events, pieces

# The anthropic SDK warns that this model retires in June 2026; the fake answers for it all the same.
pytestmark = pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-0' is deprecated:DeprecationWarning")

MODEL = "claude-sonnet-4-0"
SNAPSHOT = "claude-sonnet-4-20250514"
OPUS = "claude-opus-4-1"
CACHED: dict[str, Any] = {
    "input_tokens": 1000,
    "output_tokens": 500,
    "cache_read_input_tokens": 6000,
    "cache_creation_input_tokens": 3000,
}
# The same, 2,000 of the 3,000 written with a 1-hour lifetime (2x the input price; 5-minute writes cost 1.25x).
CACHED_1H: dict[str, Any] = {
    **CACHED,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
}
HI: Any = [{"role": "user", "content": "hi"}]
HELLO = [UserMessage(content="hi", source="user")]


@pytest.fixture
def server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as fake:
        yield fake


async def test_a_message_is_parsed_by_the_sdk_with_its_usage(server: FakeAnthropicServer) -> None:
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED))
    async with anthropic.AsyncAnthropic(api_key="sk-local", base_url=server.base_url, max_retries=0) as sdk:
        message = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert (message.model, message.content[0].type, message.stop_reason) == (SNAPSHOT, "text", "end_turn")
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (1000, 500)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (6000, 3000)
    assert server.requests[0]["model"] == MODEL


async def test_a_stream_is_parsed_by_the_sdk_event_by_event(server: FakeAnthropicServer) -> None:
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED))
    async with anthropic.AsyncAnthropic(api_key="sk-local", base_url=server.base_url, max_retries=0) as sdk:
        stream = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HI, stream=True)
        events = [event async for event in stream]
    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK drops the ping
    start, delta = events[0], events[5]
    assert start.type == "message_start"
    assert delta.type == "message_delta"
    assert (start.message.model, start.message.usage.input_tokens, start.message.usage.output_tokens) == (
        SNAPSHOT,
        1000,
        1,
    )
    assert (start.message.usage.cache_read_input_tokens, start.message.usage.cache_creation_input_tokens) == (
        6000,
        3000,
    )
    assert (delta.usage.output_tokens, delta.usage.input_tokens) == (500, None)
    text = "".join(
        event.delta.text for event in events if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )
    assert text == "Hello there"


async def test_autogens_anthropic_client_reaches_the_server(server: FakeAnthropicServer) -> None:
    # AutoGen 0.7.5 sends temperature=, which anthropic 1.0 removed: this runs on the 0.x SDK the dev extra pins.
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED))
    client = AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url, max_retries=0)
    try:
        result = await client.create([UserMessage(content="hi", source="user")])
    finally:
        await client.close()
    assert result.content == "Hello there"
    assert len(server.requests) == 1
    # What AutoGen itself reports: Anthropic's input_tokens, which leave out the cache reads and writes.
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (1000, 500)


# --------------------------------------------------------------------------- the ledger's row, end to end


@pytest.fixture
def ledger(store_url: str, tmp_path: Path) -> Iterator[Ledger]:
    """A real store (SQLite file or PostgreSQL) and a recorder writing to it."""
    with open_ledger(store_url, tmp_path / "spool") as opened:
        yield opened


def _nanousd(usd: Decimal) -> int:
    return int((usd * Decimal(10**9)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


USAGES = {
    # Prompt caching: 1,000 new input tokens, 6,000 read from the cache, 3,000 written to it.
    "cache-read-and-write": CACHED,
    # What the API sends for a request that touched no cache.
    "cache-zero": {
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    },
    # An older API version, or a gateway, that leaves the cache fields out.
    "no-cache-fields": {"input_tokens": 1000, "output_tokens": 500},
    # The same caching, 2,000 of the 3,000 cache writes with a 1-hour lifetime (the API's cache_creation).
    "cache-1h-writes": CACHED_1H,
}
# At $3 input, $0.30 cache read, $3.75 cache write, $6 1-hour cache write and $15 output per million tokens.
COSTS = {"cache-read-and-write": 23_550_000, "cache-zero": 10_500_000, "no-cache-fields": 10_500_000}
COSTS["cache-1h-writes"] = 28_050_000  # 1,000 x 3 + 6,000 x 0.30 + 1,000 x 3.75 + 2,000 x 6 + 500 x 15


@pytest.mark.parametrize("stream", [False, True], ids=["create", "create_stream"])
@pytest.mark.parametrize("name", USAGES)
async def test_a_row_holds_anthropics_cache_tokens_and_their_price(
    server: FakeAnthropicServer, ledger: Ledger, name: str, stream: bool
) -> None:
    usage = USAGES[name]
    reply = AnthropicReply("Hello there", SNAPSHOT, usage)
    server.enqueue(reply)
    client = reliable(
        AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url), recorder=ledger[1]
    )
    try:
        if stream:
            items = [item async for item in client.create_stream(HELLO)]
            assert isinstance(items[-1], CreateResult)
        else:
            await client.create(HELLO)
    finally:
        await client.close()
    (row,) = ledger_rows(ledger)
    # The oracle: genai-prices reading the same Message body the fake sends, and pricing it itself.
    extracted = extract_usage({"type": "message", "model": SNAPSHOT, "usage": dict(usage)}, provider_id="anthropic")
    expected = extracted.usage
    tokens = (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens, row.cache_write_1h_tokens)
    assert (*tokens, row.completion_tokens) == (
        expected.input_tokens,  # genai-prices' input, as our prompt, includes cache reads and writes
        usage.get("cache_read_input_tokens"),
        usage.get("cache_creation_input_tokens"),
        usage.get("cache_creation", {}).get("ephemeral_1h_input_tokens"),
        expected.output_tokens,
    )
    assert (
        expected.cache_read_tokens or 0,
        expected.cache_write_tokens or 0,
        expected.cache_write_1h_tokens or 0,
    ) == (row.cached_tokens or 0, row.cache_write_tokens or 0, row.cache_write_1h_tokens or 0)
    assert (row.provider, row.model, row.response_model) == ("anthropic", MODEL, SNAPSHOT)
    assert (row.outcome, row.streamed, row.tokens_estimated) == ("ok", stream, False)
    assert row.cost_nanousd == _nanousd(extracted.calc_price().total_price)
    assert row.cost_nanousd == COSTS[name]


async def test_a_stream_whose_message_delta_repeats_the_whole_usage_is_counted_once(
    server: FakeAnthropicServer, ledger: Ledger
) -> None:
    # The API now sends cumulative counts of every field in message_delta, not only output_tokens.
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED, delta_usage=CACHED))
    client = reliable(
        AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url), recorder=ledger[1]
    )
    try:
        async for _ in client.create_stream(HELLO):
            pass
    finally:
        await client.close()
    (row,) = ledger_rows(ledger)
    assert (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens, row.completion_tokens) == (
        10_000,
        6000,
        3000,
        500,
    )
    assert row.cost_nanousd == 23_550_000


OVERRIDE = {"input": "3", "output": "15", "cached_input": "0.30", "cache_write": "3.75"}


@pytest.mark.parametrize("stream", [False, True], ids=["create", "create_stream"])
@pytest.mark.parametrize(
    ("rates", "cost"),
    [
        # 1,000 x 3 + 6,000 x 0.30 + 1,000 x 3.75 + 2,000 x 6 + 500 x 15 (per million): genai-prices' $6.
        ({**OVERRIDE, "cache_write_1h": "6"}, 28_050_000),
        # Without a 1-hour price, 1-hour writes cost cache_write, as genai-prices prices a model without one.
        (OVERRIDE, 23_550_000),
    ],
    ids=["with-cache_write_1h", "without"],
)
async def test_an_override_prices_one_hour_cache_writes_at_its_cache_write_1h(
    server: FakeAnthropicServer, ledger: Ledger, rates: dict[str, str], cost: int, stream: bool
) -> None:
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED_1H))
    client = reliable(
        AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url),
        recorder=ledger[1],
        pricing=PricingTable({"models": {MODEL: rates}}),
    )
    try:
        if stream:
            assert isinstance([item async for item in client.create_stream(HELLO)][-1], CreateResult)
        else:
            await client.create(HELLO)
    finally:
        await client.close()
    (row,) = ledger_rows(ledger)
    assert (row.cache_write_tokens, row.cache_write_1h_tokens) == (3000, 2000)
    assert (row.cost_nanousd, row.price_source) == (cost, "override")


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("stream", [False, True], ids=["create", "create_stream"])
async def test_an_anthropic_fallback_is_asked_for_its_own_model_not_the_calls_openai_one(
    server: FakeAnthropicServer,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    stream: bool,
) -> None:
    # The call asks the OpenAI primary for gpt-4o; Anthropic's API answers a request for gpt-4o with a 404.
    fake_openai_server.enqueue(FakeReply.error(500))
    server.enqueue(AnthropicReply("from Claude", SNAPSHOT, {"input_tokens": 10, "output_tokens": 2}))
    fallback = AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url)
    client = reliable(make_openai_client(), retry=None, fallbacks=[fallback], recorder=ledger[1])
    arguments = {"model": "gpt-4o", "temperature": 0.25}
    try:
        if stream:
            result = [item async for item in client.create_stream(HELLO, extra_create_args=arguments)][-1]
        else:
            result = await client.create(HELLO, extra_create_args=arguments)
    finally:
        await client.close()
    assert isinstance(result, CreateResult)
    assert result.content == "from Claude"
    assert fake_openai_server.requests[0].model == "gpt-4o"
    (asked,) = server.requests
    assert (asked["model"], asked["temperature"]) == (MODEL, 0.25)
    rows = sorted(ledger_rows(ledger), key=lambda row: row.attempt)
    assert [(row.provider, row.model) for row in rows] == [("openai", "gpt-4o"), ("anthropic", MODEL)]


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
async def test_an_agents_memory_reaches_an_anthropic_fallback_that_takes_one_run_of_system_messages(
    server: FakeAnthropicServer, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # An agent's memory is a system message after the task; the OpenAI primary's model_info (the wrapper's) says it
    # takes them anywhere, Claude's that it does not. When the primary failed, AutoGen's Anthropic client raised
    # "Multiple and Not continuous system messages are not supported" before sending, and the agent's run ended.
    memory = ListMemory()
    await memory.add(MemoryContent(content="The user's name is Ada.", mime_type=MemoryMimeType.TEXT))
    fallback = AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url)
    agent = AssistantAgent("writer", model_client=make_openai_client(), system_message="Be brief.", memory=[memory])
    reliable(agent, retry=None, fallbacks=[fallback], track_usage=False)
    fake_openai_server.enqueue(FakeReply.error(500))
    server.enqueue(AnthropicReply("Hello, Ada.", SNAPSHOT, {"input_tokens": 30, "output_tokens": 4}))
    try:
        result = await agent.run(task="Greet me.")
    finally:
        await fallback.close()
    assert result.messages[-1].to_text() == "Hello, Ada."
    (asked,) = server.requests
    assert asked["system"] == "Be brief."  # the first run of system messages stays the system prompt
    later = json.dumps(asked["messages"])
    assert "Greet me." in later
    assert "The user's name is Ada." in later  # the later one, as a user turn, as AutoGen's agents send it


# --------------------------------------------------------------------------- the usage tap on Anthropic's wire


async def anthropic_sse_body(server: FakeAnthropicServer, reply: AnthropicReply) -> bytes:
    """The bytes of the fake's stream for ``reply``, as a client receives them."""
    server.enqueue(reply)
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{server.base_url}/v1/messages", json={"stream": True})
    return response.content


async def test_anthropic_clients_are_tapped_and_bedrock_is_left_alone() -> None:
    client = AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url="http://127.0.0.1:9")
    assert attach_usage_tap(client) is True
    assert isinstance(client._client._client._transport, UsageTapTransport)
    await client.close()
    # Bedrock's AsyncAnthropicBedrock is not an AsyncAnthropic, and streams AWS's binary event stream: not read.
    bedrock = AnthropicBedrockChatCompletionClient(
        model="anthropic.claude-3-5-sonnet-20241022-v2:0",
        model_info=ModelInfo(
            vision=False, function_calling=True, json_output=False, family="claude-3-5-sonnet", structured_output=False
        ),
        bedrock_info=BedrockInfo(aws_access_key="k", aws_secret_key="s", aws_session_token="t", aws_region="us-east-1"),
    )
    assert attach_usage_tap(bedrock) is False


async def test_a_stream_parses_only_message_start_and_message_delta(
    server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # message_delta as the API sends it now: every field, those it has no count for null.
    delta = {**CACHED, "input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 501}
    body = await anthropic_sse_body(server, AnthropicReply("Hello there", SNAPSHOT, CACHED, delta_usage=delta))
    chunks = events(body)
    assert len(chunks) == 8  # one event per chunk, as the fake (and the API) sends them
    parsed = parsed_events(monkeypatch)
    slot = fed(chunks)
    # message_start's input and cache counts, message_delta's output; null in message_delta keeps the start's.
    assert slot.usage == ProviderUsage(10_000, 501, 6000, None, 3000, SNAPSHOT, "msg_fake_1")
    assert slot.usages == [slot.usage]
    assert slot.tap_failures == 0
    assert [json.loads(data)["type"] for data in parsed] == ["message_start", "message_delta"]


async def test_a_stream_cut_off_before_message_delta_reports_message_starts_counts_as_a_partial_usage(
    server: FakeAnthropicServer,
) -> None:
    body = await anthropic_sse_body(server, AnthropicReply("Hello there", SNAPSHOT, CACHED))
    slot = fed([body[: body.index(b"event: message_delta")]])
    # Without message_delta the output count is only the start value: no usage, but the prompt's exact counts,
    # the completion unknown (the ledger estimates it from what streamed).
    assert (slot.usage, slot.usages, slot.model, slot.response_id, slot.tap_failures) == (
        None,
        [],
        SNAPSHOT,
        "msg_fake_1",
        0,
    )
    assert slot.partial_usage == ProviderUsage(10_000, None, 6000, None, 3000, SNAPSHOT, "msg_fake_1")


async def test_a_whole_streams_partial_usage_gives_way_to_its_usage(server: FakeAnthropicServer) -> None:
    body = await anthropic_sse_body(server, AnthropicReply("Hello there", SNAPSHOT, CACHED))
    outer = UsageSlot()
    slot = UsageSlot(outer)
    tap = _BodyTap((slot, outer), sse=True, decoder=None)
    tap.feed(body)
    tap.finish()
    for each in (slot, outer):
        assert (each.usage, each.partial_usage) == (
            ProviderUsage(10_000, 500, 6000, None, 3000, SNAPSHOT, "msg_fake_1"),
            None,
        )


def cache_counts(usage: ProviderUsage | None) -> tuple[int | None, ...] | None:
    """A usage's prompt, cache reads, cache writes, 1-hour cache writes and completion."""
    if usage is None:
        return None
    return (
        usage.prompt_tokens,
        usage.cached_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
        usage.completion_tokens,
    )


async def test_the_tap_reads_the_one_hour_part_of_the_cache_writes_of_a_message_and_a_stream(
    server: FakeAnthropicServer,
) -> None:
    expected = (10_000, 6000, 3000, 2000, 500)
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED_1H))
    async with httpx.AsyncClient() as http:
        message = (await http.post(f"{server.base_url}/v1/messages", json={})).content
    slot = UsageSlot()
    tap = _BodyTap((slot,), sse=False, decoder=None)
    tap.feed(message)
    tap.finish()
    assert cache_counts(slot.usage) == expected
    # A stream: message_start's usage holds the split; message_delta (here only output_tokens) completes it.
    body = await anthropic_sse_body(server, AnthropicReply("Hello there", SNAPSHOT, CACHED_1H))
    for size in (*SIZES, len(body)):
        assert cache_counts(fed(pieces(body, size)).usage) == expected, size
    # A stream cut off before message_delta: its partial usage has the split too, the completion unknown.
    cut = fed([body[: body.index(b"event: message_delta")]])
    assert cache_counts(cut.partial_usage) == (10_000, 6000, 3000, 2000, None)
    # message_delta repeating the whole usage (cumulative), or sending the split as null: counted once.
    for delta in (CACHED_1H, {**CACHED_1H, "cache_creation": None}):
        body = await anthropic_sse_body(server, AnthropicReply("Hello there", SNAPSHOT, CACHED_1H, delta_usage=delta))
        assert cache_counts(fed(events(body)).usage) == expected
    # No split (an older API version, a gateway), or one of 5-minute writes only: no 1-hour writes.
    for usage in (CACHED, {**CACHED, "cache_creation": {"ephemeral_5m_input_tokens": 3000}}):
        body = await anthropic_sse_body(server, AnthropicReply("Hello there", SNAPSHOT, usage))
        assert cache_counts(fed(events(body)).usage) == (10_000, 6000, 3000, None, 500)


# --------------------------------------------------------------------------- streams that never reach message_delta

LOOKUP = "lookup_order"
# A tool call's input as Anthropic streams it: input_json_delta fragments, joined the JSON of the input.
LOOKUP_JSON = ('{"order_id"', ': 4711, "no', 'te": "refund"}')


def tool_reply(text: str = "On it.", **options: Any) -> AnthropicReply:
    """A stream of ``text`` (two deltas), then a tool_use block calling ``lookup_order`` (three fragments)."""
    return AnthropicReply(text, SNAPSHOT, CACHED, tool_name=LOOKUP, tool_json=LOOKUP_JSON, **options)


async def test_a_tool_call_stream_is_parsed_by_the_sdk(server: FakeAnthropicServer) -> None:
    server.enqueue(tool_reply(), tool_reply())
    async with anthropic.AsyncAnthropic(api_key="sk-local", base_url=server.base_url, max_retries=0) as sdk:
        stream = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HI, stream=True)
        events = [event async for event in stream]
        message = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)
    starts = [event for event in events if event.type == "content_block_start"]
    assert [start.content_block.type for start in starts] == ["text", "tool_use"]
    tool = starts[1].content_block
    assert tool.type == "tool_use"
    assert (tool.name, tool.id) == (LOOKUP, "toolu_fake_1")
    fragments = [
        event.delta.partial_json
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
    ]
    assert fragments == list(LOOKUP_JSON)
    assert json.loads("".join(fragments)) == {"order_id": 4711, "note": "refund"}
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.stop_reason == "tool_use"
    block = message.content[1]
    assert block.type == "tool_use"
    assert (block.name, block.input) == (LOOKUP, {"order_id": 4711, "note": "refund"})


async def test_autogens_anthropic_client_streams_the_fakes_tool_call(server: FakeAnthropicServer) -> None:
    server.enqueue(tool_reply())
    client = AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url, max_retries=0)
    try:
        items = [item async for item in client.create_stream(HELLO)]
    finally:
        await client.close()
    # The text streams; of the tool call, AutoGen yields nothing until its CreateResult.
    assert items[:-1] == ["On ", "it."]
    result = items[-1]
    assert isinstance(result, CreateResult)
    assert isinstance(result.content, list)
    assert [(call.name, json.loads(call.arguments)) for call in result.content] == [
        (LOOKUP, {"order_id": 4711, "note": "refund"})
    ]


async def test_a_tool_call_streams_name_and_input_are_counted_and_text_is_not(
    server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = await anthropic_sse_body(server, tool_reply())
    expected = len(LOOKUP) + len("".join(LOOKUP_JSON))
    for size in (*SIZES, len(body)):
        slot = fed(pieces(body, size))
        assert (slot.tool_call_chars, slot.tap_failures) == (expected, 0), size
        assert slot.usage == ProviderUsage(10_000, 500, 6000, None, 3000, SNAPSHOT, "msg_fake_1"), size
    # One event per chunk, as the API sends them: the text's events are not even split, let alone parsed.
    parsed = parsed_events(monkeypatch)
    slot = fed(events(body))
    assert (slot.tool_call_chars, slot.tap_failures) == (expected, 0)
    kinds = [
        (event["type"], (event.get("content_block") or event.get("delta") or {}).get("type"))
        for event in map(json.loads, parsed)
    ]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", "tool_use"),
        *[("content_block_delta", "input_json_delta")] * len(LOOKUP_JSON),
        ("message_delta", None),
    ]


# The replies, and how many of their events come before the cut or the hold: a text stream cut after its first
# text delta (message_start, the text block's start, a ping, "Looking up or"); a text and a tool call cut after
# the call's name and two of its input's three fragments. The marker is in the last event that came.
ENDS = {
    "text": (AnthropicReply("Looking up order 4711 now.", SNAPSHOT, CACHED), 4, b"Looking up or"),
    "tool call": (tool_reply(), 9, b"4711"),
}
CAME = {
    "text": len("Looking up or"),
    "tool call": len("On it.") + len(LOOKUP) + len('{"order_id": 4711, "no'),
}


@pytest.mark.parametrize("reply", ENDS, ids=ENDS.keys())
@pytest.mark.parametrize("ending", ["cut off", "cancelled"])
async def test_a_stream_ended_before_message_delta_keeps_message_starts_prompt_and_estimates_the_rest(
    server: FakeAnthropicServer, ledger: Ledger, reply: str, ending: str
) -> None:
    # message_start counted the prompt (input, cache reads and writes) exactly; only the completion is unknown.
    # It is estimated from what had streamed: the text AutoGen yielded, and the tool call the tap saw on the wire.
    scripted, events, marker = ENDS[reply]
    if ending == "cut off":
        server.enqueue(dataclasses.replace(scripted, cut_after_events=events))
    else:
        server.enqueue(dataclasses.replace(scripted, hold_after_events=events))
    watch = read_past_marker(httpx, marker)
    async with httpx.AsyncClient(transport=watch) as http:
        # AutoGen hands http_client to AsyncAnthropic, though its TypedDict of options leaves it out.
        anthropic_client = AnthropicChatCompletionClient(
            model=MODEL,
            api_key="sk-local",
            base_url=server.base_url,
            max_retries=0,
            http_client=http,  # type: ignore[call-arg]
        )
        client = reliable(anthropic_client, recorder=ledger[1], retry=None)
        step = asyncio.ensure_future(collect(client.create_stream(HELLO)))
        if ending == "cut off":
            with pytest.raises(httpx.RemoteProtocolError):
                await step
        else:
            await asyncio.wait_for(watch.read_past.wait(), 30)
            step.cancel()
            with pytest.raises(asyncio.CancelledError):
                await step
            server.release()
    (row,) = ledger_rows(ledger)
    assert len(server.requests) == 1
    completion = CAME[reply] // 4
    assert (row.outcome, row.streamed, row.tokens_estimated) == (
        "error" if ending == "cut off" else "cancelled",
        True,
        True,
    )
    assert (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens, row.completion_tokens) == (
        10_000,
        6000,
        3000,
        completion,
    )
    assert (row.provider, row.model, row.response_model) == ("anthropic", MODEL, SNAPSHOT)
    # The oracle: genai-prices pricing the same usage, had message_delta counted that completion.
    extracted = extract_usage(
        {"type": "message", "model": SNAPSHOT, "usage": {**CACHED, "output_tokens": completion}},
        provider_id="anthropic",
    )
    assert row.cost_nanousd == _nanousd(extracted.calc_price().total_price)


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


# A stream whose body ends cleanly (a proxy dropped its tail): after the text's block, before message_delta; or inside
# message_delta, after its stop_reason, before its usage. The SDK hands on no event the body ended inside, so AutoGen
# saw no stop reason either way, and counted the completion as message_start's placeholder output_tokens.
CLEAN_ENDS = {"before message_delta": (6, None), "inside message_delta": (6, '"usage"')}


@pytest.mark.parametrize("end", CLEAN_ENDS)
async def test_a_stream_that_ends_cleanly_before_its_stop_reason_arrived_is_truncated(
    server: FakeAnthropicServer, ledger: Ledger, end: str
) -> None:
    events, within = CLEAN_ENDS[end]
    server.enqueue(
        AnthropicReply("Hello there", SNAPSHOT, CACHED, end_after_events=events, end_within=within),
        AnthropicReply("unused", SNAPSHOT, CACHED),
    )
    client = reliable(
        AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url),
        recorder=ledger[1],
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.05),
    )
    received: list[object] = []

    async def consume() -> None:
        async for item in client.create_stream(HELLO):
            received.append(item)

    try:
        with pytest.raises(TruncatedStreamError):
            await consume()
    finally:
        await client.close()
    assert received == ["Hello", " there"]  # handed on before the end came: not retried
    assert len(server.requests) == 1
    (row,) = ledger_rows(ledger)
    assert (row.outcome, row.error_kind, row.http_status, row.tokens_estimated) == ("error", "connection", 200, True)
    # message_start's prompt, exact; the completion estimated from the text that arrived.
    assert (row.prompt_tokens, row.completion_tokens) == (10_000, len("Hello there") // 4)


@pytest.mark.parametrize("end", CLEAN_ENDS)
async def test_a_tool_call_stream_that_ends_cleanly_before_its_stop_reason_arrived_is_retried(
    server: FakeAnthropicServer, ledger: Ledger, end: str
) -> None:
    events, within = CLEAN_ENDS[end]  # the tool call's block has as many events as the text's
    server.enqueue(tool_reply("", end_after_events=events, end_within=within), tool_reply(""))
    client = reliable(
        AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url),
        recorder=ledger[1],
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.05),
    )
    try:
        items = [item async for item in client.create_stream(HELLO)]
    finally:
        await client.close()
    (result,) = items  # AutoGen hands on nothing of a tool call before its result
    assert isinstance(result, CreateResult)
    assert result.finish_reason == "function_calls"
    assert isinstance(result.content, list)
    assert [(call.name, json.loads(call.arguments)) for call in result.content] == [
        (LOOKUP, {"order_id": 4711, "note": "refund"})
    ]
    assert len(server.requests) == 2
    rows = sorted(ledger_rows(ledger), key=lambda row: row.attempt)
    assert [(row.outcome, row.error_kind) for row in rows] == [("error", "connection"), ("ok", None)]


async def test_a_stream_that_ends_cleanly_after_its_stop_reason_is_an_answer(
    server: FakeAnthropicServer, ledger: Ledger
) -> None:
    # message_delta came whole; only message_stop, which carries nothing, is missing.
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED, end_after_events=7))
    client = reliable(
        AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url), recorder=ledger[1]
    )
    try:
        items = [item async for item in client.create_stream(HELLO)]
    finally:
        await client.close()
    result = items[-1]
    assert isinstance(result, CreateResult)
    assert (result.content, result.finish_reason) == ("Hello there", "stop")
    (row,) = ledger_rows(ledger)
    assert (row.outcome, row.tokens_estimated, row.completion_tokens, row.cost_nanousd) == (
        "ok",
        False,
        500,
        23_550_000,
    )


# --------------------------------------------------------------------------- the health probe's active check


async def test_the_active_check_of_a_client_that_thinks_is_a_request_the_api_takes(
    server: FakeAnthropicServer,
) -> None:
    # Extended thinking set on the client goes with every request, the probe's one-token completion too, which
    # the API refuses (max_tokens must be above the thinking budget): the check would be "unknown" forever.
    server.enqueue(AnthropicReply("p", SNAPSHOT, {"input_tokens": 8, "output_tokens": 1}))
    inner = AnthropicChatCompletionClient(
        model=MODEL, api_key="sk-local", base_url=server.base_url, thinking={"type": "enabled", "budget_tokens": 2048}
    )
    client = reliable(inner, track_usage=False)
    try:
        report = await HealthProbe({"claude": client}, active=True).check()
    finally:
        await client.close()
    check = report.clients["claude"].active_check
    assert check is not None
    assert (check.ok, check.method, check.error) == (True, "completion", None)
    (sent,) = server.requests
    assert (sent["max_tokens"], sent["thinking"]) == (1, {"type": "disabled"})


# An Anthropic error object answered with status 200 (a gateway in front of the API), to a message or a stream asked
# for: classified by the status Anthropic documents for its type, as the same object as a stream's `event: error` is.
GATEWAY_ERRORS = {
    "authentication_error": ("invalid x-api-key", "authentication", [MODEL]),
    "invalid_request_error": ("prompt is too long: 250000 tokens > 200000 maximum", "context_length", [MODEL, OPUS]),
    "overloaded_error": ("Overloaded", "overloaded", [MODEL, MODEL]),
}


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("error_type", GATEWAY_ERRORS)
async def test_an_anthropic_error_object_on_a_200_is_classified_by_its_type(
    server: FakeAnthropicServer, ledger: Ledger, error_type: str, streamed: bool
) -> None:
    message, kind, models = GATEWAY_ERRORS[error_type]
    error = {"type": "error", "error": {"type": error_type, "message": message}}
    server.enqueue(AnthropicReply("", SNAPSHOT, CACHED, json_body=error), AnthropicReply("Hello", SNAPSHOT, CACHED))
    client = reliable(
        AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url),
        recorder=ledger[1],
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.05),
        fallbacks=[AnthropicChatCompletionClient(model=OPUS, api_key="sk-local", base_url=server.base_url)],
    )
    try:
        if len(models) == 1:
            with pytest.raises(ProviderResponseError, match="invalid x-api-key"):
                await (collect(client.create_stream(HELLO)) if streamed else client.create(HELLO))
        else:
            result = (await collect(client.create_stream(HELLO)))[-1] if streamed else await client.create(HELLO)
            assert result.content == "Hello"
    finally:
        await client.close()
    assert [request["model"] for request in server.requests] == models
    rows = sorted(ledger_rows(ledger), key=lambda row: row.attempt)
    answered = [("ok", None, None, models[1])] if len(models) > 1 else []
    assert [(row.outcome, row.error_kind, row.http_status, row.model) for row in rows] == [
        ("error", kind, 200, MODEL),
        *answered,
    ]
