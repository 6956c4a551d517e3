"""The usage tap, driven through AutoGen's real OpenAIChatCompletionClient and the real local OpenAI-wire server.

Never call count_tokens()/remaining_tokens() on an OpenAI client here: they download a tiktoken file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import random
import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from autogen_core.models import CreateResult, UserMessage
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, OpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient

from autogen_reliability.providers import _usage_tap as usage_tap
from autogen_reliability.providers._usage_tap import (
    MAX_JSON_BYTES,
    ProviderUsage,
    UsageSlot,
    UsageTapTransport,
    attach_usage_tap,
    capture_provider_usage,
    current_usage_slot,
)
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage, RecordedRequest

from .tapping import FAKE_COMPLETION, SIZES, events, fed, parsed_events, pieces

MODEL = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"  # what the server (like the real API) reports for the alias
USER = [UserMessage(content="Say hello", source="user")]
WITH_USAGE: dict[str, Any] = {"stream_options": {"include_usage": True}}


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(MODEL) as fake:
        yield fake


ClientFactory = Callable[..., OpenAIChatCompletionClient]


@pytest.fixture
async def make_client(server: FakeOpenAIServer) -> AsyncIterator[ClientFactory]:
    """AutoGen clients pointed at ``server`` with the SDK's retries off; tapped unless ``tap=False``."""
    made: list[OpenAIChatCompletionClient] = []

    def make(*, tap: bool = True, **overrides: Any) -> OpenAIChatCompletionClient:
        options: dict[str, Any] = {"model": MODEL, "api_key": "sk-test", "base_url": server.base_url, "max_retries": 0}
        options.update(overrides)
        client = OpenAIChatCompletionClient(**options)
        if tap:
            assert attach_usage_tap(client) is True
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def http_client_of(client: OpenAIChatCompletionClient) -> Any:
    return client._client._client


async def collect(stream: AsyncIterator[str | CreateResult]) -> list[str | CreateResult]:
    return [item async for item in stream]


async def drain_into(stream: AsyncIterator[str | CreateResult], received: list[str | CreateResult]) -> None:
    async for item in stream:
        received.append(item)


# --------------------------------------------------------------------------- create()


async def test_a_count_beyond_what_the_ledger_holds_is_taken_as_not_reported(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    # 2**64 - 1 is a provider's unsigned -1, and 2**31 is past the ledger's INTEGER columns (PostgreSQL's are
    # 32-bit): no count of tokens.
    client = make_client()
    server.enqueue(
        FakeReply.text("a", usage=FakeUsage(prompt_tokens=2**64 - 1, completion_tokens=5, cached_tokens=2**63)),
        FakeReply.text("b", usage=FakeUsage(prompt_tokens=2**31, completion_tokens=2**31 - 1, cached_tokens=2**31)),
        FakeReply.text("c", usage=FakeUsage(prompt_tokens=2**31 - 1, completion_tokens=5)),
    )
    with capture_provider_usage() as slot:
        await client.create(USER)
        await client.create(USER)
        await client.create(USER)
    beyond, past_int, largest = slot.usages
    assert (beyond.prompt_tokens, beyond.completion_tokens, beyond.cached_tokens) == (None, 5, None)
    assert (past_int.prompt_tokens, past_int.completion_tokens, past_int.cached_tokens) == (None, 2**31 - 1, None)
    assert (largest.prompt_tokens, largest.completion_tokens) == (2**31 - 1, 5)


async def test_create_records_cached_and_reasoning_tokens_and_the_model(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    usage = FakeUsage(prompt_tokens=120, completion_tokens=30, cached_tokens=64, reasoning_tokens=12)
    server.enqueue(FakeReply.text("Hello!", usage=usage))

    with capture_provider_usage() as slot:
        assert current_usage_slot() is slot
        result = await client.create(USER)
    assert current_usage_slot() is None

    assert result.content == "Hello!"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (120, 30)  # AutoGen's view, unchanged
    assert slot.usage == ProviderUsage(
        prompt_tokens=120,
        completion_tokens=30,
        cached_tokens=64,
        reasoning_tokens=12,
        cache_write_tokens=None,
        model=SNAPSHOT,
        response_id="chatcmpl-fake-1",
        service_tier="default",
    )
    assert slot.usages == [slot.usage]
    assert (slot.status, slot.model, slot.response_id) == (200, SNAPSHOT, "chatcmpl-fake-1")
    assert slot.request_id == "req_fake_0"
    assert (slot.responses, slot.tap_failures) == (1, 0)


async def test_fake_usage_scripts_cache_writes_and_audio_tokens_in_openai_details(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    usage = FakeUsage(
        prompt_tokens=300,
        completion_tokens=40,
        cached_tokens=100,
        cache_write_tokens=150,
        input_audio_tokens=20,
        output_audio_tokens=25,
    )
    assert usage.to_openai() == {
        "prompt_tokens": 300,
        "completion_tokens": 40,
        "total_tokens": 340,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 150, "audio_tokens": 20},
        "completion_tokens_details": {"audio_tokens": 25},
    }
    server.enqueue(FakeReply.text("Hello!", usage=usage))

    with capture_provider_usage() as slot:
        await make_client().create(USER)

    assert slot.usage is not None
    assert (slot.usage.cached_tokens, slot.usage.cache_write_tokens, slot.usage.reasoning_tokens) == (100, 150, None)
    assert (slot.usage.input_audio_tokens, slot.usage.output_audio_tokens) == (20, 25)
    with pytest.raises(ValueError, match="cache_write_tokens must be >= 0"):
        FakeUsage(1, 1, cache_write_tokens=-1)


async def test_requests_outside_a_capture_are_not_recorded(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    server.enqueue(FakeReply.text("one"), FakeReply.text("two"))
    await client.create(USER)
    with capture_provider_usage() as slot:
        pass
    await client.create(USER)
    assert (slot.usage, slot.status, slot.responses) == (None, None, 0)


async def test_nested_captures_both_receive_and_the_inner_one_only_its_own(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    server.enqueue(FakeReply.text("a", usage=FakeUsage(1, 1)), FakeReply.text("b", usage=FakeUsage(2, 2)))
    with capture_provider_usage() as outer:
        await client.create(USER)
        with capture_provider_usage() as inner:
            await client.create(USER)
        assert current_usage_slot() is outer
    assert inner.usage is not None
    assert inner.usage.prompt_tokens == 2
    assert inner.responses == 1
    assert [u.prompt_tokens for u in outer.usages] == [1, 2]
    assert outer.responses == 2


async def test_sdk_retries_count_as_responses_and_the_last_one_wins(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client(max_retries=1)
    server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("ok", usage=FakeUsage(7, 3, cached_tokens=0)),
    )
    with capture_provider_usage() as slot:
        await client.create(USER)
    assert server.request_count == 2
    assert (slot.responses, slot.status) == (2, 200)
    assert slot.usage is not None
    assert (slot.usage.prompt_tokens, slot.usage.cached_tokens) == (7, 0)


# --------------------------------------------------------------------------- create_stream()


async def test_stream_records_the_usage_chunk_without_holding_chunks_back(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    words = "one two three four five six seven eight"
    usage = FakeUsage(prompt_tokens=50, completion_tokens=8, cached_tokens=32, reasoning_tokens=4)
    # The server sends the first word, then holds the rest (the finish and usage chunks too) until released.
    server.enqueue(FakeReply.text(words, usage=usage, hold_after_chunks=1))

    arrivals: list[tuple[str | CreateResult, ProviderUsage | None]] = []
    with capture_provider_usage() as slot:
        stream = client.create_stream(USER, extra_create_args=WITH_USAGE)
        # The first word must reach the consumer while the rest does not exist yet: a tap that held chunks
        # back would never hand it out (the bound only keeps that failure from hanging the test).
        first = await asyncio.wait_for(anext(stream), 30)
        arrivals.append((first, slot.usage))
        server.release()
        async for item in stream:
            arrivals.append((item, slot.usage))

    assert first == "one"
    texts = [item for item, _ in arrivals if isinstance(item, str)]
    assert "".join(texts) == words
    assert all(seen is None for item, seen in arrivals if isinstance(item, str)), "usage before the usage chunk?"

    final = arrivals[-1][0]
    assert isinstance(final, CreateResult)
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (50, 8)
    assert slot.usage == ProviderUsage(50, 8, 32, 4, None, SNAPSHOT, "chatcmpl-fake-1", service_tier="default")
    assert arrivals[-1][1] == slot.usage  # already recorded when AutoGen hands out its CreateResult
    assert (slot.status, slot.responses, slot.tap_failures) == (200, 1, 0)


async def test_stream_without_usage_records_the_model_but_no_usage(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    server.enqueue(FakeReply.text("no usage here"))
    with capture_provider_usage() as slot:
        items = await collect(client.create_stream(USER))
    assert isinstance(items[-1], CreateResult)
    assert server.requests[0].include_usage is False
    assert slot.usage is None
    assert (slot.model, slot.response_id, slot.status, slot.tap_failures) == (SNAPSHOT, "chatcmpl-fake-1", 200, 0)


async def test_a_stream_reports_to_the_slot_active_when_its_request_was_sent(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    # The usage chunk is sent only after the first word is read, under the other slot.
    server.enqueue(FakeReply.text("alpha beta gamma", usage=FakeUsage(9, 3), hold_after_chunks=1))
    stream = client.create_stream(USER, extra_create_args=WITH_USAGE)
    with capture_provider_usage() as opened_in:
        first = await asyncio.wait_for(anext(stream), 30)  # create_stream sends its request on the first __anext__
    assert first == "alpha"
    assert opened_in.usage is None
    server.release()
    with capture_provider_usage() as read_in:
        rest = await collect(stream)
    assert isinstance(rest[-1], CreateResult)
    assert opened_in.usage is not None
    assert opened_in.usage.prompt_tokens == 9
    assert (read_in.usage, read_in.responses) == (None, 0)


async def test_anext_in_slot_makes_the_slot_current_for_each_step_only(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    server.enqueue(FakeReply.text("alpha beta gamma", usage=FakeUsage(9, 3), chunk_delay=0.01))
    stream = client.create_stream(USER, extra_create_args=WITH_USAGE)
    slot = usage_tap.new_usage_slot()
    items: list[str | CreateResult] = []
    while True:
        # Each step in a task of its own, as asyncio.wait_for(anext(...)) runs it on Python 3.11.
        step = asyncio.ensure_future(usage_tap.anext_in_slot(stream, slot))
        try:
            items.append(await step)
        except StopAsyncIteration:
            break
        assert current_usage_slot() is None  # never leaks into the consumer between steps
    assert isinstance(items[-1], CreateResult)
    assert slot.usage is not None
    assert (slot.usage.prompt_tokens, slot.responses) == (9, 1)


@pytest.mark.parametrize("ending", ["exhausted", "aclose from another task"])
async def test_a_capture_held_across_yields_exits_quietly_in_another_context(
    ending: str, server: FakeOpenAIServer, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The pattern anext_in_slot replaces: still, its exit in a foreign context must not raise.
    client = make_client()
    server.enqueue(FakeReply.text("alpha beta gamma", usage=FakeUsage(9, 3), chunk_delay=0.01))
    slots: list[UsageSlot] = []

    async def captured() -> AsyncIterator[str | CreateResult]:
        with capture_provider_usage() as slot:
            slots.append(slot)
            async for item in client.create_stream(USER, extra_create_args=WITH_USAGE):
                yield item

    async def step(stream: AsyncIterator[str | CreateResult]) -> str | CreateResult:
        return await anext(stream)

    stream = captured()
    assert await asyncio.create_task(step(stream)) == "alpha"
    if ending == "exhausted":
        rest = [await asyncio.create_task(step(stream)) for _ in range(3)]  # " beta", " gamma", the result
        assert isinstance(rest[-1], CreateResult)
        with pytest.raises(StopAsyncIteration):
            await asyncio.create_task(step(stream))
        assert slots[0].usage is not None
        assert slots[0].usage.prompt_tokens == 9
    else:
        await asyncio.create_task(stream.aclose())  # type: ignore[attr-defined]
    assert current_usage_slot() is None
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []


async def test_concurrent_calls_each_fill_their_own_slot(server: FakeOpenAIServer, make_client: ClientFactory) -> None:
    client = make_client()

    def reply(request: RecordedRequest) -> FakeReply:
        # Runs on the server thread: the usage depends on the request, and the first tasks answer last.
        index = int(re.findall(r"task (\d+)", json.dumps(request.messages))[0])
        usage = FakeUsage(prompt_tokens=100 + index, completion_tokens=10 + index, cached_tokens=index)
        return FakeReply.text(f"answer {index}", usage=usage, delay=(9 - index) * 0.02, chunk_delay=0.005)

    server.default = reply

    async def call(index: int) -> UsageSlot:
        messages = [UserMessage(content=f"task {index}", source="user")]
        with capture_provider_usage() as slot:
            if index % 2:
                result: str | CreateResult = await client.create(messages)
            else:
                items = await collect(client.create_stream(messages, extra_create_args=WITH_USAGE))
                result = items[-1]
        assert isinstance(result, CreateResult)
        assert result.content == f"answer {index}"
        return slot

    with capture_provider_usage() as everything:
        slots = await asyncio.gather(*(call(index) for index in range(10)))

    for index, slot in enumerate(slots):
        assert slot.usage is not None, index
        assert (slot.usage.prompt_tokens, slot.usage.completion_tokens, slot.usage.cached_tokens) == (
            100 + index,
            10 + index,
            index,
        )
        assert (slot.responses, len(slot.usages), slot.tap_failures) == (1, 1, 0)
    assert sorted(u.prompt_tokens or 0 for u in everything.usages) == [100 + i for i in range(10)]
    assert everything.responses == 10


# --------------------------------------------------------------------------- errors: the SDK's behaviour is unchanged


async def test_an_error_response_records_its_status_and_the_sdk_still_raises(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    server.enqueue(FakeReply.error(429))
    with capture_provider_usage() as slot, pytest.raises(openai.RateLimitError) as caught:
        await client.create(USER)
    assert caught.value.status_code == 429
    assert (slot.status, slot.usage, slot.responses, slot.tap_failures) == (429, None, 1, 0)


async def test_an_error_mid_stream_raises_only_the_sdks_api_error(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    server.enqueue(FakeReply.text("Hello from the server", error_after_chunks=2))
    received: list[str | CreateResult] = []
    with capture_provider_usage() as slot, pytest.raises(openai.APIError) as caught:
        await drain_into(client.create_stream(USER, extra_create_args=WITH_USAGE), received)
    assert type(caught.value) is openai.APIError
    assert received == ["Hello", " from"]
    assert (slot.status, slot.usage, slot.model, slot.tap_failures) == (200, None, SNAPSHOT, 0)


async def test_a_200_whose_body_is_an_error_keeps_the_error_in_the_slot_and_the_next_response_clears_it(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    # OpenRouter's answer to a request that failed once accepted; AutoGen fails on it as the untapped client does.
    error = {"code": 502, "message": "Upstream provider failed", "metadata": {"provider_name": "x"}}
    server.enqueue(FakeReply.malformed(json.dumps({"error": error}).encode()), FakeReply.text("fine"))
    client = make_client()
    with capture_provider_usage() as outer:
        with capture_provider_usage() as slot, pytest.raises(TypeError):
            await client.create(USER)
        assert (slot.status, slot.body_error, slot.usage, slot.tap_failures) == (200, error, None, 0)
        assert outer.body_error == error
        await client.create(USER)
    assert outer.responses == 2
    assert outer.body_error is None  # of the last response, as status is


# The body of a 200, asked for as a completion or as a stream -> what the tap says it was, once read to its end.
BODY_SHAPES = [
    (FakeReply.malformed(b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"), "other"),
    (FakeReply.malformed(b""), "empty"),
    (FakeReply.malformed(b"{not json"), "other"),
    (FakeReply.malformed(b"[1, 2]"), "other"),
    (FakeReply.malformed(json.dumps(FAKE_COMPLETION).encode()), "completion"),
    (FakeReply.malformed(json.dumps({**FAKE_COMPLETION, "choices": []}).encode()), "object"),
    (FakeReply.malformed(b": keep-alive\n\ndata: [DONE]\n\n", content_type="text/event-stream"), "other"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(
    ("reply", "shape"), BODY_SHAPES, ids=["html", "empty", "broken", "array", "completion", "no-choice", "none"]
)
async def test_the_slot_says_what_a_successful_body_was_once_it_ended(
    server: FakeOpenAIServer, make_client: ClientFactory, reply: FakeReply, shape: str, stream: bool
) -> None:
    server.enqueue(reply)
    with capture_provider_usage() as slot, contextlib.suppress(Exception):  # AutoGen fails on most of them
        if stream:
            await collect(make_client().create_stream(USER))
        else:
            await make_client().create(USER)
    assert (slot.status, slot.body_shape) == (200, shape)


async def test_a_stream_of_events_is_events_and_an_error_status_has_no_shape(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    body = b'data: {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": []}\n\n'
    server.enqueue(FakeReply.malformed(body, content_type="text/event-stream"), FakeReply.error(500))
    client = make_client()
    with capture_provider_usage() as slot:
        await collect(client.create_stream(USER))
        streamed = slot.body_shape
        with pytest.raises(openai.InternalServerError):
            await client.create(USER)
    assert streamed == "events"
    assert (slot.status, slot.body_shape) == (500, None)  # of the last response, which was not read


@pytest.mark.parametrize("error", [None, {}, ""])
async def test_an_empty_error_member_is_no_error(
    server: FakeOpenAIServer, make_client: ClientFactory, error: object
) -> None:
    server.enqueue(FakeReply.malformed(json.dumps({**FAKE_COMPLETION, "error": error}).encode()))
    with capture_provider_usage() as slot:
        result = await make_client().create(USER)
    assert result.content == "fine"
    assert (slot.body_error, slot.usage is not None) == (None, True)


def outcome_of(exc: BaseException) -> tuple[type[BaseException], str]:
    return type(exc), str(exc)


@pytest.mark.parametrize(
    ("reply", "stream"),
    [
        pytest.param(FakeReply.malformed(b"{not json"), False, id="malformed-json"),
        pytest.param(
            FakeReply.malformed(b'{"id": 1, "choices": "nope"}'),
            False,
            id="wrong-shape-json",
            # The SDK and AutoGen warn about the shape and the missing model; that is what is being compared.
            marks=pytest.mark.filterwarnings("ignore::UserWarning"),
        ),
        pytest.param(
            FakeReply.malformed(b"data: {broken\n\n", content_type="text/event-stream"), True, id="malformed-sse"
        ),
        pytest.param(FakeReply.malformed(b"<html>oops</html>", content_type="text/html"), False, id="html"),
        pytest.param(FakeReply.text("a b c d", disconnect_after_chunks=2), True, id="disconnect-mid-stream"),
        pytest.param(FakeReply.text("a b c d", disconnect_after_chunks=1), False, id="disconnect-mid-body"),
        pytest.param(FakeReply.error(500), True, id="500-stream"),
    ],
)
async def test_broken_responses_raise_exactly_what_the_untapped_sdk_raises(
    server: FakeOpenAIServer, make_client: ClientFactory, reply: FakeReply, stream: bool
) -> None:
    outcomes: dict[bool, tuple[type[BaseException], str]] = {}
    slots: dict[bool, UsageSlot] = {}
    for tapped in (False, True):
        client = make_client(tap=tapped)
        server.enqueue(reply)
        with capture_provider_usage() as slot:
            try:
                if stream:
                    await collect(client.create_stream(USER, extra_create_args=WITH_USAGE))
                else:
                    await client.create(USER)
            except Exception as exc:
                outcomes[tapped] = outcome_of(exc)
        slots[tapped] = slot
    assert outcomes[True] == outcomes[False]
    assert outcomes[True][0] is not AssertionError
    assert slots[True].usage is None
    assert slots[False].responses == 0  # the untapped client reports nothing


async def test_a_malformed_json_body_is_counted_as_a_tap_failure(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    server.enqueue(FakeReply.malformed(b"{not json"))
    with capture_provider_usage() as slot, pytest.raises(Exception):  # noqa: B017, PT011 - whatever the SDK raises
        await client.create(USER)
    assert (slot.status, slot.usage, slot.tap_failures) == (200, None, 1)


# --------------------------------------------------------------------------- encodings and framing


def completion_body(usage: FakeUsage, model: str = "gpt-4o-2024-08-06") -> bytes:
    body = {
        "id": "chatcmpl-encoded",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage.to_openai(),
    }
    return json.dumps(body).encode()


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        pytest.param("gzip", gzip.compress, id="gzip"),
        pytest.param("deflate", zlib.compress, id="deflate"),
        pytest.param("deflate", raw_deflate, id="raw-deflate"),
        pytest.param("identity", lambda data: data, id="identity"),
    ],
)
async def test_compressed_json_bodies_are_inspected_on_a_decoded_copy(
    server: FakeOpenAIServer, make_client: ClientFactory, encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    client = make_client()
    body = completion_body(FakeUsage(40, 2, cached_tokens=16, reasoning_tokens=0), model=SNAPSHOT)
    server.enqueue(FakeReply.malformed(encode(body), headers={"Content-Encoding": encoding}))
    with capture_provider_usage() as slot:
        result = await client.create(USER)
    assert result.content == "Hi"  # the SDK decoded the original bytes itself
    assert slot.usage == ProviderUsage(40, 2, 16, 0, None, SNAPSHOT, "chatcmpl-encoded")
    assert slot.tap_failures == 0


async def test_an_unknown_encoding_is_left_alone(server: FakeOpenAIServer) -> None:
    # No AutoGen client can decode "x-unknown" either; talk HTTP directly to see the tap give up quietly.
    async with httpx2.AsyncClient(transport=UsageTapTransport(httpx2.AsyncHTTPTransport())) as http:
        server.enqueue(FakeReply.malformed(b"opaque", headers={"Content-Encoding": "x-unknown"}))
        with capture_provider_usage() as slot:
            response = await http.post(f"{server.base_url}/chat/completions", json={"model": MODEL, "messages": []})
    assert response.status_code == 200
    assert (slot.status, slot.usage, slot.tap_failures) == (200, None, 1)


async def real_sse_body(server: FakeOpenAIServer, usage: FakeUsage) -> bytes:
    """The exact bytes the server streams for a completion with a usage chunk."""
    return await sse_body(server, FakeReply.text("The quick brown fox", usage=usage))


async def sse_body(server: FakeOpenAIServer, reply: FakeReply) -> bytes:
    """The exact bytes the server streams for ``reply``, asked for with its usage chunk."""
    server.enqueue(reply)
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            f"{server.base_url}/chat/completions",
            json={"model": MODEL, "messages": [], "stream": True, "stream_options": {"include_usage": True}},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    return response.content


@pytest.mark.parametrize(
    ("streamed", "content_type"),
    [
        pytest.param(True, "application/x-ndjson", id="stream-as-ndjson"),  # LitServe's OpenAISpec
        pytest.param(True, "application/json", id="stream-as-json"),
        pytest.param(True, "text/plain", id="stream-as-text"),  # a framework's plain StreamingResponse
        pytest.param(False, "text/plain", id="json-as-text"),
        pytest.param(False, "application/octet-stream", id="json-as-bytes"),
    ],
)
async def test_a_body_the_sdk_reads_under_another_content_type_is_read_as_the_sdk_reads_it(
    server: FakeOpenAIServer, make_client: ClientFactory, streamed: bool, content_type: str
) -> None:
    # The openai SDK reads a stream's body as events, and a completion's as JSON, whatever the Content-Type
    # says: servers that label a stream application/x-ndjson or text/plain, or a completion text/plain, work
    # with it. The tap reads them as the SDK does, or their cached tokens and model would be lost.
    usage = FakeUsage(40, 4, cached_tokens=16)
    if streamed:
        body = await real_sse_body(server, usage)
        expected = ProviderUsage(40, 4, 16, None, None, SNAPSHOT, "chatcmpl-fake-1", service_tier="default")
    else:
        body = completion_body(usage, model=SNAPSHOT)
        expected = ProviderUsage(40, 4, 16, None, None, SNAPSHOT, "chatcmpl-encoded")
    client = make_client()
    server.enqueue(FakeReply.malformed(body, content_type=content_type))
    with capture_provider_usage() as slot:
        if streamed:
            result = (await collect(client.create_stream(USER, extra_create_args=WITH_USAGE)))[-1]
        else:
            result = await client.create(USER)
    assert isinstance(result, CreateResult)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (40, 4)  # the SDK read it
    assert (slot.usage, slot.model, slot.tap_failures) == (expected, SNAPSHOT, 0)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
async def test_sse_lines_split_anywhere_across_chunks_are_reassembled(server: FakeOpenAIServer, newline: bytes) -> None:
    body = (await real_sse_body(server, FakeUsage(21, 4, cached_tokens=5))).replace(b"\n", newline)
    expected = ProviderUsage(21, 4, 5, None, None, SNAPSHOT, "chatcmpl-fake-1", service_tier="default")
    for size in (*SIZES, len(body)):
        slot = fed(pieces(body, size))
        assert (slot.usage, slot.model, slot.tap_failures) == (expected, SNAPSHOT, 0), size


async def test_a_stream_is_cut_off_only_where_no_finish_reason_and_no_done_ended_it(server: FakeOpenAIServer) -> None:
    # OpenAI's stream: ..., a chunk with the finish reason, the usage chunk, data: [DONE]. Anthropic's:
    # message_delta with the stop_reason, then message_stop. A body without any of them ended before its answer.
    whole = await real_sse_body(server, FakeUsage(21, 4))
    done = b"data: [DONE]\n\n"
    without_done = whole.removesuffix(done)
    finish = without_done.index(b'"finish_reason":"stop"')
    cut = without_done[: without_done.rindex(b"data: ", 0, finish)]  # the content chunks only
    anthropic = [
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-x",'
        b'"content":[],"stop_reason":null,"usage":{"input_tokens":5,"output_tokens":1}}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hi"}}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":2}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]
    bodies = {
        "whole": (whole, False),
        "no-done": (without_done, False),  # servers that end with the finish reason (and the usage chunk)
        "done-only": (cut + done, False),  # a finish reason never given, but the stream said it ended
        "anthropic": (b"".join(anthropic), False),
        "anthropic-no-message-stop": (b"".join(anthropic[:3]), False),
        "anthropic-stop-only": (b"".join((*anthropic[:2], anthropic[3])), False),
        "cut": (cut, True),
        "cut-inside-an-event": (without_done[: finish - 10], True),
        "anthropic-cut": (b"".join(anthropic[:2]), True),
    }
    for name, (body, was_cut) in bodies.items():
        for chunks in (*(pieces(body, size) for size in SIZES), events(body), [body]):
            slot = fed(chunks)
            assert (slot.body_shape, slot.stream_cut, slot.tap_failures) == ("events", was_cut, 0), name


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
async def test_a_stream_read_event_by_event_parses_only_the_identity_and_the_usage_chunk(
    server: FakeOpenAIServer, newline: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = (await real_sse_body(server, FakeUsage(21, 4, cached_tokens=5))).replace(b"\n", newline)
    chunks = events(body, newline * 2)
    assert len(chunks) > 4  # what a server sends: one event per chunk, each with "usage":null but the last
    parsed = parsed_events(monkeypatch)
    slot = fed(chunks)
    assert (slot.usage, slot.model, slot.tap_failures) == (
        ProviderUsage(21, 4, 5, None, None, SNAPSHOT, "chatcmpl-fake-1", service_tier="default"),
        SNAPSHOT,
        0,
    )
    # The first chunk for the model, the usage chunk; the chunks between were never split into events.
    assert len(parsed) == 2
    assert b'"usage":{' in parsed[-1].replace(b" ", b"")


async def test_a_usage_object_on_a_data_line_of_its_own_is_still_read() -> None:
    # The usage broken onto a data line of its own: the same event, its data lines joined with a newline.
    usage = b'{"prompt_tokens":3,"completion_tokens":1}'
    slot = fed(
        [
            b'data: {"id":"c-1","model":"m-1","choices":[],"usage":null}\n\n',
            b'data: {"id":"c-1","model":"m-1","choices":[],"usage":\ndata: ' + usage + b"}\n\n",
            b"data: [DONE]\n\n",
        ]
    )
    assert slot.usage == ProviderUsage(3, 1, None, None, None, "m-1", "c-1")


async def test_a_tool_call_streams_names_and_arguments_are_counted_and_text_is_not(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    # AutoGen yields nothing of a tool call before its CreateResult: the tap counts what came on the wire.
    calls: list[tuple[str, dict[str, Any] | str]] = [
        ("lookup_order", {"order_id": 4711}),
        ("refund", '{"amount": "42.00 €", "why": "late"}'),
    ]
    server.enqueue(
        FakeReply.tool_calls(calls, content="Looking that up.", usage=FakeUsage(9, 12)),
        FakeReply.text("Only text here", usage=FakeUsage(9, 3)),
    )
    client = make_client()
    with capture_provider_usage() as outer:
        with capture_provider_usage() as calling:
            items = await collect(client.create_stream(USER, extra_create_args=WITH_USAGE))
        with capture_provider_usage() as texting:
            await collect(client.create_stream(USER, extra_create_args=WITH_USAGE))
    final = items[-1]
    assert isinstance(final, CreateResult)
    assert isinstance(final.content, list)
    # Decoded characters, as a stream's text is counted: a quote (\" on the wire) is one, the euro sign (3 bytes) one.
    expected = sum(len(call.name) + len(call.arguments) for call in final.content)
    assert expected == len('lookup_order{"order_id": 4711}refund{"amount": "42.00 €", "why": "late"}')
    assert (calling.tool_call_chars, texting.tool_call_chars, outer.tool_call_chars) == (expected, 0, expected)
    assert calling.usage is not None
    assert calling.usage.completion_tokens == 12


async def test_tool_call_chunks_split_anywhere_are_counted_once(server: FakeOpenAIServer) -> None:
    calls = [("lookup_order", {"order_id": 4711, "note": "refund"})]
    body = await sse_body(server, FakeReply.tool_calls(calls, usage=FakeUsage(5, 9)))
    expected = len("lookup_order") + len('{"order_id": 4711, "note": "refund"}')
    for size in (*SIZES, len(body)):
        slot = fed(pieces(body, size))
        assert (slot.tool_call_chars, slot.tap_failures) == (expected, 0), size
        assert slot.usage is not None


@pytest.mark.parametrize("none", [b"null", b"[]", b"[ ]"])
async def test_a_text_stream_naming_no_tool_calls_in_every_chunk_is_still_not_split(
    none: bytes, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some OpenAI-compatible servers send "tool_calls": null, or an empty list, in every delta: no tool call,
    # nothing to parse.
    named = b'"tool_calls": ' + none
    body = (await real_sse_body(server, FakeUsage(21, 4))).replace(b'"delta":{', b'"delta":{' + named + b",")
    chunks = events(body)
    assert all(named in chunk for chunk in chunks[:-3])
    parsed = parsed_events(monkeypatch)
    slot = fed(chunks)
    assert (slot.usage, slot.tool_call_chars, slot.tap_failures) == (
        ProviderUsage(21, 4, None, None, None, SNAPSHOT, "chatcmpl-fake-1", service_tier="default"),
        0,
        0,
    )
    assert len(parsed) == 2  # the first chunk for the model, the usage chunk


def logprobs_body(tokens: int, *, usage: FakeUsage | None, indent: int | None = None) -> bytes:
    """A completion with ``top_logprobs=20`` for each of its ``tokens``: about 1 KB of body per token."""
    rng = random.Random(tokens)
    body: dict[str, Any] = {
        "id": "chatcmpl-logprobs",
        "object": "chat.completion",
        "created": 1,
        "model": SNAPSHOT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(f" w{i}" for i in range(tokens))},
                "logprobs": {
                    "content": [
                        {
                            "token": f" w{i}",
                            "logprob": -rng.random(),
                            "bytes": [32, 119],
                            "top_logprobs": [
                                {"token": f" x{rng.randrange(10**6)}", "logprob": -rng.random() * 9, "bytes": [32]}
                                for _ in range(20)
                            ],
                        }
                        for i in range(tokens)
                    ]
                },
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage.to_openai()
    body["service_tier"] = "flex"
    body["system_fingerprint"] = "fp_1"
    return json.dumps(body, indent=indent).encode()


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
async def test_a_json_body_too_large_to_keep_is_read_from_its_edges(
    server: FakeOpenAIServer, make_client: ClientFactory, encoding: str, indent: int | None
) -> None:
    # logprobs with top_logprobs=20 make a body of 1 KB a token: 3,000 tokens are past MAX_JSON_BYTES. Its usage
    # (after the choices) and its id and model (before them) are still read, not the whole body kept.
    client = make_client()
    usage = FakeUsage(5000, 3000, cached_tokens=4096, reasoning_tokens=0)
    body = logprobs_body(3000, usage=usage, indent=indent)
    assert len(body) > MAX_JSON_BYTES
    server.enqueue(
        FakeReply.malformed(gzip.compress(body) if encoding == "gzip" else body, headers={"Content-Encoding": encoding})
    )
    with capture_provider_usage() as slot:
        result = await client.create(USER, extra_create_args={"logprobs": True, "top_logprobs": 20})
    assert isinstance(result.content, str)
    assert result.content.startswith(" w0 w1")  # the SDK got the body as it was
    assert result.logprobs is not None
    assert len(result.logprobs) == 3000
    assert (slot.usage, slot.tap_failures) == (
        ProviderUsage(5000, 3000, 4096, 0, None, SNAPSHOT, "chatcmpl-logprobs", service_tier="flex"),
        0,
    )


async def test_a_json_body_too_large_to_keep_without_a_usage_at_its_end_is_a_tap_failure(
    server: FakeOpenAIServer, make_client: ClientFactory
) -> None:
    client = make_client()
    server.enqueue(FakeReply.malformed(logprobs_body(3000, usage=None)))
    with capture_provider_usage() as slot:
        result = await client.create(USER)
    assert isinstance(result.content, str)
    assert (slot.status, slot.usage, slot.model, slot.tap_failures) == (200, None, SNAPSHOT, 1)


# --------------------------------------------------------------------------- attaching


async def test_attaching_twice_installs_one_wrapper(make_client: ClientFactory) -> None:
    client = make_client()
    http = http_client_of(client)
    transport = http._transport
    assert isinstance(transport, UsageTapTransport)
    assert not isinstance(transport.wrapped, UsageTapTransport)
    assert attach_usage_tap(client) is True
    assert http._transport is transport


async def test_a_user_supplied_httpx2_client_is_tapped(server: FakeOpenAIServer, make_client: ClientFactory) -> None:
    http = httpx2.AsyncClient()
    client = make_client(http_client=http)
    assert http_client_of(client) is http
    assert isinstance(http._transport, UsageTapTransport)
    server.enqueue(FakeReply.text("hi", usage=FakeUsage(3, 1, cached_tokens=2)))
    with capture_provider_usage() as slot:
        await client.create(USER)
    assert slot.usage is not None
    assert slot.usage.cached_tokens == 2


async def test_a_legacy_httpx_client_is_tapped_too(server: FakeOpenAIServer, make_client: ClientFactory) -> None:
    http = httpx.AsyncClient()
    client = make_client(http_client=http)
    server.enqueue(
        FakeReply.text("hi", usage=FakeUsage(3, 1, reasoning_tokens=1)),
        FakeReply.text("hi there", usage=FakeUsage(4, 2, cached_tokens=1)),
    )
    with capture_provider_usage() as slot:
        await client.create(USER)
        items = await collect(client.create_stream(USER, extra_create_args=WITH_USAGE))
    assert isinstance(items[-1], CreateResult)
    assert items[-1].content == "hi there"
    assert [(u.prompt_tokens, u.cached_tokens, u.reasoning_tokens) for u in slot.usages] == [(3, None, 1), (4, 1, None)]


async def test_mounted_transports_are_tapped(server: FakeOpenAIServer, make_client: ClientFactory) -> None:
    http = httpx2.AsyncClient(mounts={"http://127.0.0.1": httpx2.AsyncHTTPTransport()})
    client = make_client(http_client=http)
    assert all(isinstance(t, UsageTapTransport) for t in http._mounts.values())
    server.enqueue(FakeReply.text("hi", usage=FakeUsage(5, 1)))
    with capture_provider_usage() as slot:
        await client.create(USER)
    assert slot.usage is not None
    assert slot.usage.prompt_tokens == 5


async def test_in_memory_responses_of_a_mock_transport_are_read_at_once() -> None:
    body = completion_body(FakeUsage(8, 2, cached_tokens=8))

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    options: dict[str, Any] = {"model": "gpt-4o", "api_key": "sk-test", "max_retries": 0, "http_client": http}
    client = OpenAIChatCompletionClient(**options)
    assert attach_usage_tap(client) is True
    with capture_provider_usage() as slot:
        await client.create(USER)
    await client.close()
    assert slot.usage == ProviderUsage(8, 2, 8, None, None, "gpt-4o-2024-08-06", "chatcmpl-encoded")


async def test_azure_clients_are_tapped() -> None:
    client = AzureOpenAIChatCompletionClient(
        model="gpt-4o",
        azure_deployment="gpt-4o",
        api_version="2024-06-01",
        azure_endpoint="http://127.0.0.1:9",
        api_key="sk-test",
    )
    assert attach_usage_tap(client) is True
    assert isinstance(client._client._client._transport, UsageTapTransport)
    await client.close()


def test_other_clients_are_left_alone() -> None:
    replay = ReplayChatCompletionClient(["hi"])
    assert attach_usage_tap(replay) is False
    assert attach_usage_tap(object()) is False
    assert attach_usage_tap(None) is False


async def test_unexpected_internals_return_false_log_once_and_change_nothing(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_tap, "_logged", set())  # "once" is per process; start this test from scratch
    client = make_client(tap=False)
    sdk = client._client
    real_http = sdk._client
    sdk._client = object()  # type: ignore[assignment]  # what a future SDK without ._transport would look like
    try:
        with caplog.at_level(logging.DEBUG, logger="autogen_reliability.providers._usage_tap"):
            assert attach_usage_tap(client) is False
            assert attach_usage_tap(client) is False
    finally:
        sdk._client = real_http
    assert len([r for r in caplog.records if "not tapped" in r.getMessage()]) == 1
    assert not isinstance(real_http._transport, UsageTapTransport)


async def test_dump_component_is_unchanged_by_the_tap(server: FakeOpenAIServer, make_client: ClientFactory) -> None:
    untapped = make_client(tap=False)
    before = untapped.dump_component()
    tapped = make_client(tap=False)
    assert attach_usage_tap(tapped) is True
    assert tapped.dump_component() == before
    assert tapped.dump_component().model_dump_json() == before.model_dump_json()
    reloaded = OpenAIChatCompletionClient.load_component(tapped.dump_component())
    assert not isinstance(http_client_of(reloaded)._transport, UsageTapTransport)  # a new client, tap it again
    await reloaded.close()


async def test_close_closes_the_wrapped_transport(server: FakeOpenAIServer, make_client: ClientFactory) -> None:
    client = make_client()
    server.enqueue(FakeReply.text("hi"))
    with capture_provider_usage():
        await client.create(USER)
    transport = http_client_of(client)._transport
    assert isinstance(transport, UsageTapTransport)
    pool = transport._pool  # reaches the wrapped transport's attribute
    assert len(pool.connections) == 1
    await client.close()
    assert http_client_of(client).is_closed
    assert len(pool.connections) == 0


async def test_the_headers_the_tap_reads_are_found_in_any_case_and_repeats_joined() -> None:
    body = completion_body(FakeUsage(8, 2))
    headers = [
        ("X-Request-ID", "req-1"),
        ("x-request-id", "req-2"),  # repeated: joined, as headers.get joins them
        ("CONTENT-TYPE", "Application/JSON; charset=utf-8"),
        ("Content-Encoding", "identity"),
    ]

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers=headers)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    options: dict[str, Any] = {"model": "gpt-4o", "api_key": "sk-test", "max_retries": 0, "http_client": http}
    client = OpenAIChatCompletionClient(**options)
    assert attach_usage_tap(client) is True
    with capture_provider_usage() as slot:
        await client.create(USER)
    await client.close()
    assert slot.request_id == "req-1, req-2"
    assert slot.usage is not None
    assert (slot.usage.prompt_tokens, slot.usage.completion_tokens) == (8, 2)
    assert slot.tap_failures == 0


def test_the_service_tier_beside_the_usage_is_read_from_a_responses_api_event() -> None:
    # The Responses API's response.completed event: the tier is the response's, beside its usage.
    response = {
        "id": "resp_1",
        "model": "gpt-5-mini-2025-08-07",
        "service_tier": "flex",
        "usage": {"input_tokens": 30, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 10}},
    }
    event = {"type": "response.completed", "response": response}
    slot = fed([b"data: " + json.dumps(event).encode() + b"\n\n"])
    assert slot.usage == ProviderUsage(30, 5, 10, None, None, "gpt-5-mini-2025-08-07", "resp_1", service_tier="flex")
    # A tier that is no string is no tier.
    chunk = {**FAKE_COMPLETION, "service_tier": {"name": "flex"}}
    slot = fed([b"data: " + json.dumps(chunk).encode() + b"\n\n"])
    assert slot.usage is not None
    assert slot.usage.service_tier is None
