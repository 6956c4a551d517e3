"""FakeOpenAIServer driven by the real openai SDK and AutoGen's real OpenAIChatCompletionClient over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import math
import socket
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC
from typing import Any, TypeVar

import httpx
import openai
import pytest
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, RequestUsage, SystemMessage, UserMessage
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, OpenAIChatCompletionClient
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage, RecordedRequest

T = TypeVar("T")

MODEL = "gpt-4o-mini"
# The real API answers with the dated snapshot; AutoGen warns on every create() when it does not get it back.
SNAPSHOT = "gpt-4o-mini-2024-07-18"
USER = [UserMessage(content="What is the weather in Paris?", source="user")]
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(MODEL, model_aliases={MODEL: SNAPSHOT}) as fake:
        yield fake


@pytest.fixture
async def client(server: FakeOpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def autogen(server: FakeOpenAIServer) -> AsyncIterator[OpenAIChatCompletionClient]:
    # Never call count_tokens()/remaining_tokens() on it: they download a tiktoken file.
    model_client = OpenAIChatCompletionClient(model=MODEL, api_key="sk-test", base_url=server.base_url, max_retries=0)
    yield model_client
    await model_client.close()


async def drain(stream: AsyncIterator[T], into: list[T]) -> None:
    async for item in stream:
        into.append(item)


def get_weather(city: str) -> str:
    """Look up the weather in a city."""
    return f"Sunny in {city}"


WEATHER_TOOL = FunctionTool(get_weather, description="Look up the weather in a city.")


def sse_payloads(body: bytes) -> list[str]:
    return [line.removeprefix("data: ") for line in body.decode().split("\n") if line.startswith("data: ")]


def raw_post(conn: http.client.HTTPConnection, body: object) -> tuple[http.client.HTTPResponse, bytes]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", "/v1/chat/completions", body=payload, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response, response.read()


def open_stream(port: int) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A streaming chat completion on a connection of its own, read event by event with `next_event`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = json.dumps({"model": MODEL, "messages": CHAT, "stream": True}).encode()
    conn.request("POST", "/v1/chat/completions", body=payload, headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def next_event(response: http.client.HTTPResponse) -> str:
    """The data of the next server-sent event; blocks until the server has sent it."""
    line = response.readline()
    assert response.readline() == b"\n", f"not one event: {line!r}"
    return line.decode().removeprefix("data: ").removesuffix("\n")


# --------------------------------------------------------------------------- completions


async def test_text_reply_through_autogen(server: FakeOpenAIServer, autogen: OpenAIChatCompletionClient) -> None:
    server.enqueue(FakeReply.text("It is sunny.", usage=FakeUsage(prompt_tokens=21, completion_tokens=4)))

    result = await autogen.create([SystemMessage(content="Be brief."), *USER])

    assert result.content == "It is sunny."
    assert result.finish_reason == "stop"
    assert result.usage == RequestUsage(prompt_tokens=21, completion_tokens=4)
    assert server.pending == 0
    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.model == MODEL
    assert request.stream is False
    assert request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather in Paris?", "name": "user"},
    ]
    assert request.index == 0
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["content-type"] == "application/json"
    assert request.body == json.loads(request.raw)
    assert request.received_at.tzinfo is UTC


async def test_a_recorded_requests_repr_hides_the_key_the_client_sent(server: FakeOpenAIServer) -> None:
    # A failed `assert server.requests == ...` prints each request's repr: a real key must not be in it.
    key = "sk-proj-Real0Key1Copied2From3Env4"
    server.enqueue(FakeReply.text("hello"))
    async with openai.AsyncOpenAI(
        base_url=server.url, api_key=key, max_retries=0, default_headers={"X-Portkey-Api-Key": "pk-gateway-secret-99"}
    ) as sdk:
        await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])

    [request] = server.requests
    shown = repr(request)
    assert "Real0Key1" not in shown
    assert "gateway-secret" not in shown
    assert "'authorization': '[REDACTED]'" in shown
    assert "'x-portkey-api-key': '[REDACTED]'" in shown
    assert "'content-type': 'application/json'" in shown
    assert shown.startswith("RecordedRequest(method='POST', path='/v1/chat/completions', headers={")
    assert request.headers["authorization"] == f"Bearer {key}"  # the request itself keeps what was sent


async def test_completion_object_has_the_openai_shape(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    usage = FakeUsage(prompt_tokens=10, completion_tokens=5, cached_tokens=4, reasoning_tokens=2)
    server.enqueue(FakeReply.text("Hi!", usage=usage), FakeReply.text("Again", model="gpt-4o-2024-08-06"))

    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=CHAT)
    completion = raw.parse()
    second = await client.chat.completions.create(model=MODEL, messages=CHAT)

    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["x-request-id"] == "req_fake_0"
    assert int(raw.headers["content-length"]) == len(raw.content)
    assert completion.id == "chatcmpl-fake-1"
    assert completion.object == "chat.completion"
    assert completion.model == SNAPSHOT
    assert isinstance(completion.created, int)
    assert completion.system_fingerprint == "fp_fake"
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason, choice.logprobs) == (0, "stop", None)
    assert (choice.message.role, choice.message.content, choice.message.refusal) == ("assistant", "Hi!", None)
    assert choice.message.tool_calls is None
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        10,
        5,
        15,
    )
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 4
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 2
    assert (second.id, second.model) == ("chatcmpl-fake-2", "gpt-4o-2024-08-06")


async def test_the_service_tier_is_the_one_asked_for_unless_the_reply_names_another(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    # As OpenAI answers: the tier that served the request, "default" for none or "auto"; a reply's own tier
    # stands for OpenAI serving a flex request at the standard tier, say.
    server.enqueue(
        FakeReply.text("a"),
        FakeReply.text("b"),
        FakeReply.text("c"),
        FakeReply.json({}, service_tier="default"),
        FakeReply.text("d e"),
    )
    tiers: list[object] = []
    for asked in (None, "auto", "flex", "flex"):
        extra = {"service_tier": asked} if asked else {}
        completion = await client.chat.completions.create(model=MODEL, messages=CHAT, extra_body=extra)
        tiers.append(completion.service_tier)
    stream = await client.chat.completions.create(
        model=MODEL, messages=CHAT, stream=True, extra_body={"service_tier": "priority"}
    )
    tiers.append({chunk.service_tier async for chunk in stream})
    assert tiers == ["default", "default", "flex", "default", {"priority"}]
    with pytest.raises(TypeError, match="service_tier must be a string or None"):
        FakeReply.text("x", service_tier=2)  # type: ignore[arg-type]


async def test_model_is_reported_as_the_snapshot_autogen_expects() -> None:
    async with FakeOpenAIServer(MODEL, default=FakeReply.text("ok")) as fake:
        model_client = OpenAIChatCompletionClient(model=MODEL, api_key="sk-test", base_url=fake.base_url, max_retries=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # AutoGen warns "Resolved model mismatch" on any other name
            await model_client.create(USER)
        await model_client.close()
        async with openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0) as sdk:
            snapshot = await sdk.chat.completions.create(model=MODEL, messages=CHAT)
            unknown = await sdk.chat.completions.create(model="my-model", messages=CHAT)
    assert snapshot.model == "gpt-4o-mini-2024-07-18"
    assert unknown.model == "my-model"


async def test_usage_is_computed_from_words_when_not_scripted(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("one two  three"), FakeReply.tool_calls([("get_weather", {"city": "New York"})]))
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be very brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello there"}, {"type": "image_url", "image_url": {"url": "x y"}}],
        },
    ]

    text = await client.chat.completions.create(model=MODEL, messages=messages)
    calls = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": ""}])

    # prompt: 3 + 2 words, + 1 per message; completion: 3 words.
    assert text.usage is not None
    assert (text.usage.prompt_tokens, text.usage.completion_tokens) == (7, 3)
    # prompt: 0 words + 1 message; completion: the name (1 word) + '{"city": "New York"}' (3 words).
    assert calls.usage is not None
    assert (calls.usage.prompt_tokens, calls.usage.completion_tokens) == (1, 4)


async def test_json_reply(server: FakeOpenAIServer, autogen: OpenAIChatCompletionClient) -> None:
    server.enqueue(FakeReply.json({"city": "Paris", "temp": 21}))

    result = await autogen.create(USER, json_output=True)

    assert isinstance(result.content, str)
    assert json.loads(result.content) == {"city": "Paris", "temp": 21}
    assert server.requests[0].body is not None
    assert server.requests[0].body["response_format"] == {"type": "json_object"}


class Weather(BaseModel):
    city: str
    temp: int


async def test_structured_output_goes_through_the_sdk_parse_helper(
    server: FakeOpenAIServer, autogen: OpenAIChatCompletionClient
) -> None:
    server.enqueue(FakeReply.json({"city": "Paris", "temp": 21}))

    with warnings.catch_warnings():
        # AutoGen dumps the parsed completion with a pydantic serializer warning of its own.
        warnings.simplefilter("ignore", UserWarning)
        result = await autogen.create(USER, json_output=Weather)

    assert isinstance(result.content, str)
    assert Weather.model_validate_json(result.content) == Weather(city="Paris", temp=21)
    body = server.requests[0].body
    assert body is not None
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Weather"


async def test_tool_calls_through_autogen(server: FakeOpenAIServer, autogen: OpenAIChatCompletionClient) -> None:
    server.enqueue(
        FakeReply.tool_calls([("get_weather", {"city": "Paris"}), ("get_weather", '{"city": "Rome"')]),
        FakeReply.tool_calls([("get_weather", {"city": "Oslo"})], content="Let me check."),
    )

    first = await autogen.create(USER, tools=[WEATHER_TOOL])
    second = await autogen.create(USER, tools=[WEATHER_TOOL])

    assert first.finish_reason == "function_calls"
    assert first.content == [
        FunctionCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
        # Invalid JSON arguments are passed through verbatim.
        FunctionCall(id="call_2", name="get_weather", arguments='{"city": "Rome"'),
    ]
    # Ids keep counting across replies, so they never repeat within a conversation.
    assert second.content == [FunctionCall(id="call_3", name="get_weather", arguments='{"city": "Oslo"}')]
    assert second.thought == "Let me check."
    body = server.requests[0].body
    assert body is not None
    assert [tool["function"]["name"] for tool in body["tools"]] == ["get_weather"]


async def test_tool_calls_streamed_through_autogen(
    server: FakeOpenAIServer, autogen: OpenAIChatCompletionClient
) -> None:
    server.enqueue(FakeReply.tool_calls([("get_weather", {"city": "Paris", "unit": "C"}), ("get_weather", "{bad")]))

    items = [item async for item in autogen.create_stream(USER, tools=[WEATHER_TOOL])]

    result = items[-1]
    assert isinstance(result, CreateResult)
    assert result.finish_reason == "function_calls"
    assert result.content == [
        FunctionCall(id="call_1", name="get_weather", arguments='{"city": "Paris", "unit": "C"}'),
        FunctionCall(id="call_2", name="get_weather", arguments="{bad"),
    ]
    assert server.requests[0].stream is True


# --------------------------------------------------------------------------- streaming


async def test_streamed_text_with_usage(server: FakeOpenAIServer, autogen: OpenAIChatCompletionClient) -> None:
    content = "It is  sunny in Paris today.\nBring sunglasses. "
    server.enqueue(FakeReply.text(content, usage=FakeUsage(prompt_tokens=30, completion_tokens=11)))

    items = [
        item
        async for item in autogen.create_stream(USER, extra_create_args={"stream_options": {"include_usage": True}})
    ]

    *chunks, result = items
    assert all(isinstance(chunk, str) for chunk in chunks)
    # One chunk per word (whitespace rides with the next word) plus the trailing space.
    assert len(chunks) == len(content.split()) + 1
    assert "".join(str(chunk) for chunk in chunks) == content
    assert isinstance(result, CreateResult)
    assert result.content == content
    assert result.finish_reason == "stop"
    assert result.usage == RequestUsage(prompt_tokens=30, completion_tokens=11)
    assert server.requests[0].include_usage is True


async def test_streamed_text_without_usage_reports_zero(
    server: FakeOpenAIServer, autogen: OpenAIChatCompletionClient, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("No usage here.", usage=FakeUsage(prompt_tokens=3, completion_tokens=3)))
    server.enqueue(FakeReply.text("No usage here."))

    items = [item async for item in autogen.create_stream(USER)]
    stream = await client.chat.completions.create(model=MODEL, messages=CHAT, stream=True)
    sdk_chunks = [chunk async for chunk in stream]

    result = items[-1]
    assert isinstance(result, CreateResult)
    assert result.content == "No usage here."
    assert result.usage == RequestUsage(prompt_tokens=0, completion_tokens=0)
    assert all(chunk.usage is None and len(chunk.choices) == 1 for chunk in sdk_chunks)
    assert sdk_chunks[0].choices[0].delta.role == "assistant"
    assert sdk_chunks[-1].choices[0].finish_reason == "stop"


def test_stream_wire_format(server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply.text("a b", usage=FakeUsage(prompt_tokens=2, completion_tokens=2)), FakeReply.text("a b"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    streaming: dict[str, Any] = {"model": MODEL, "messages": CHAT, "stream": True}

    with_usage, body_with_usage = raw_post(conn, {**streaming, "stream_options": {"include_usage": True}})
    without_usage, body_without_usage = raw_post(conn, streaming)
    conn.close()

    for response in (with_usage, without_usage):
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Length") is None
        assert not response.will_close
    *events, done = sse_payloads(body_with_usage)
    assert done == "[DONE]"
    chunks = [json.loads(event) for event in events]
    assert [chunk["choices"][0]["delta"] for chunk in chunks[:-1]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "a"},
        {"content": " b"},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # As OpenAI does: every chunk but the last carries "usage": null, the last has no choices.
    assert all("usage" in chunk and chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    plain = [json.loads(event) for event in sse_payloads(body_without_usage)[:-1]]
    assert len(plain) == 4
    assert all("usage" not in chunk for chunk in plain)
    assert server.connection_count == 1


async def test_chunk_delay_keeps_the_stream_whole_and_in_order(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("one two three", chunk_delay=0.01))

    stream = await client.chat.completions.create(model=MODEL, messages=CHAT, stream=True)
    chunks = [chunk async for chunk in stream]

    # role + 3 words + finish; how far apart they arrive is measured in benchmarks/bench_fake_server.py.
    assert [chunk.choices[0].delta.content for chunk in chunks] == ["", "one", " two", " three", None]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chunk_delay_sends_each_event_before_waiting_for_the_next() -> None:
    # A minute before every event but the first: the role chunk must be on the wire while the server waits,
    # and the rest must not be. stop() ends the wait by resetting the connection, so the body stays unfinished;
    # had the server written the whole stream at once, it would be complete.
    fake = FakeOpenAIServer(MODEL, default=FakeReply.text("one two three", chunk_delay=60)).start()
    conn, response = open_stream(fake.port)
    try:
        role = json.loads(next_event(response))
        assert role["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
        fake.stop()
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()
    finally:
        fake.stop()
        conn.close()


async def test_hold_after_chunks_sends_the_rest_on_release(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("one two three", hold_after_chunks=1))

    stream = await client.chat.completions.create(model=MODEL, messages=CHAT, stream=True)
    # The role chunk and the first word are sent before the hold (the bound keeps a broken hold from hanging).
    seen = [await asyncio.wait_for(anext(stream), 30) for _ in range(2)]
    server.release()
    seen += [chunk async for chunk in stream]

    assert [chunk.choices[0].delta.content for chunk in seen] == ["", "one", " two", " three", None]


def test_a_held_stream_has_sent_exactly_the_chunks_before_its_hold() -> None:
    # stop() resets a held connection: what the client got by then is what was sent before the hold.
    fake = FakeOpenAIServer(MODEL, default=FakeReply.text("one two three", hold_after_chunks=2)).start()
    conn, response = open_stream(fake.port)
    try:
        events = [json.loads(next_event(response)) for _ in range(3)]
        fake.stop()
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()
    finally:
        fake.stop()
        conn.close()
    assert [event["choices"][0]["delta"].get("content") for event in events] == ["", "one", " two"]


@pytest.mark.parametrize(
    ("reply", "after_release"),
    [
        # A hold past the end of a cut-short stream comes before the error event...
        (FakeReply.text("one two three", error_after_chunks=1, hold_after_chunks=5), "error"),
        # ...or before the reset.
        (FakeReply.text("one two three", disconnect_after_chunks=1, hold_after_chunks=5), "reset"),
    ],
    ids=["error", "disconnect"],
)
def test_a_hold_past_the_last_chunk_comes_before_the_end(
    server: FakeOpenAIServer, reply: FakeReply, after_release: str
) -> None:
    server.enqueue(reply)
    conn, response = open_stream(server.port)
    try:
        events = [json.loads(next_event(response)) for _ in range(2)]
        server.release()
        if after_release == "error":
            assert response.read().startswith(b"event: error\ndata: ")
        else:
            with pytest.raises((http.client.IncompleteRead, ConnectionError)):
                response.read()
    finally:
        conn.close()
    assert [event["choices"][0]["delta"].get("content") for event in events] == ["", "one"]


async def test_a_held_answer_waits_for_release_and_releases_are_kept(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("held", hold_after_chunks=0), FakeReply.json([2], hold_after_chunks=0))
    first = asyncio.ensure_future(client.chat.completions.create(model=MODEL, messages=CHAT))

    [request] = await server.wait_for_requests_async(1)
    assert request.messages == CHAT
    assert not first.done()  # recorded, and held: nothing can have been answered yet
    server.release(2)  # one for this reply, one kept for the next, which has not arrived yet
    # The bounds only keep a broken hold from hanging the test for the SDK's ten minutes.
    assert (await asyncio.wait_for(first, 30)).choices[0].message.content == "held"
    second = await asyncio.wait_for(client.chat.completions.create(model=MODEL, messages=CHAT), 30)
    assert second.choices[0].message.content == "[2]"


# --------------------------------------------------------------------------- HTTP errors


async def test_rate_limit_with_retry_after(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(FakeReply.error(429, headers={"Retry-After": "1"}))

    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model=MODEL, messages=CHAT)

    error = info.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "1"
    assert (error.type, error.code) == ("requests", "rate_limit_exceeded")
    assert error.body == {
        "message": "Rate limit reached for requests. Please try again later.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }


@pytest.mark.parametrize(
    ("reply", "stream", "kept"),
    [
        (FakeReply.text("hi", headers={"content-type": "application/vnd.odd+json"}), False, {}),
        (FakeReply.text("hi", headers={"CONTENT-TYPE": "text/event-stream", "cache-control": "max-age=5"}), True, {}),
        (FakeReply.error(429, headers={"Content-type": "text/plain"}), False, {}),
        (FakeReply.malformed(b"oops", content_type="text/html", headers={"content-type": "text/plain"}), False, {}),
        (FakeReply.text("hi", headers={"x-request-id": "req_scripted", "server": "gateway/1"}), False, {}),
        (FakeReply.text("hi", headers={"x-other": "1"}), False, {"content-type": "application/json"}),
    ],
    ids=["completion", "stream", "error", "malformed", "own-lines", "none-named"],
)
def test_a_header_of_the_reply_replaces_the_servers_own_of_that_name(
    server: FakeOpenAIServer, reply: FakeReply, stream: bool, kept: dict[str, str]
) -> None:
    # Sent next to the server's own before: two Content-Types, which a client reads as one joined value.
    server.enqueue(reply)
    response = httpx.post(
        f"{server.base_url}/chat/completions", json={"model": MODEL, "messages": CHAT, "stream": stream}, timeout=10
    )
    expected = {name.lower(): value for name, value in reply.headers.items()} | kept
    for name, value in expected.items():
        assert response.headers.get_list(name) == [value]
    assert len(response.headers.get_list("date")) == len(response.headers.get_list("x-request-id")) == 1


async def test_a_scripted_content_type_is_the_one_the_sdk_sees(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("Hi!", headers={"content-type": "application/json; charset=utf-8"}))
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=CHAT)
    assert raw.headers.get_list("content-type") == ["application/json; charset=utf-8"]
    assert raw.parse().choices[0].message.content == "Hi!"


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_request_error"),
        (403, openai.PermissionDeniedError, "request_forbidden"),
        (404, openai.NotFoundError, "invalid_request_error"),
        (422, openai.UnprocessableEntityError, "invalid_request_error"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
async def test_error_status_maps_to_sdk_exception(
    server: FakeOpenAIServer,
    client: openai.AsyncOpenAI,
    status: int,
    exception: type[openai.APIStatusError],
    error_type: str,
) -> None:
    server.enqueue(FakeReply.error(status, f"scripted {status}", param="messages"))

    with pytest.raises(exception) as info:
        await client.chat.completions.create(model=MODEL, messages=CHAT)

    assert type(info.value) is exception
    assert info.value.status_code == status
    assert info.value.type == error_type
    assert info.value.param == "messages"
    assert f"scripted {status}" in info.value.message


async def test_error_defaults_follow_openai() -> None:
    assert FakeReply.error(401).error_code == "invalid_api_key"
    assert FakeReply.error(400).error_type == "invalid_request_error"
    assert FakeReply.error(502).error_type == "server_error"
    custom = FakeReply.error(429, "slow down", type="tokens", code="custom")
    assert (custom.error_message, custom.error_type, custom.error_code) == ("slow down", "tokens", "custom")


async def test_a_lone_surrogate_is_sent_escaped_as_a_json_encoder_writes_it(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    # Half an emoji, as an answer cut inside one comes: UTF-8 cannot hold it, JSON's "\\ud83d" can.
    server.enqueue(
        FakeReply.text("Typo \ud83d", model="gpt-\udfff"),
        FakeReply.text("Typo \ud83d end"),
        FakeReply.error(500, "cut \ud83d"),
    )

    completion = await client.chat.completions.create(model=MODEL, messages=CHAT)
    assert (completion.choices[0].message.content, completion.model) == ("Typo \ud83d", "gpt-\udfff")
    stream = await client.chat.completions.create(model=MODEL, messages=CHAT, stream=True)
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert "".join(piece for piece in pieces if piece) == "Typo \ud83d end"
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model=MODEL, messages=CHAT)
    assert info.value.message == "Error code: 500 - cut \ud83d"


# --------------------------------------------------------------------------- transport faults


async def test_delay_triggers_client_timeout(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    # The reply comes after a minute, the client gives up after 0.2 s: only the timeout can end the call.
    server.enqueue(FakeReply.text("too late", delay=60), FakeReply.text("on time"))

    async with client as sdk:
        with pytest.raises(openai.APITimeoutError):
            await sdk.chat.completions.create(model=MODEL, messages=CHAT, timeout=0.2)
        # Recorded before the reply was (never) sent, and the server still serves other connections.
        assert server.request_count == 1
        completion = await sdk.chat.completions.create(model=MODEL, messages=CHAT)
    assert completion.choices[0].message.content == "on time"


async def test_reset_raises_connection_error(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(FakeReply.reset(), FakeReply.text("after the reset"))

    with pytest.raises(openai.APIConnectionError) as info:
        await client.chat.completions.create(model=MODEL, messages=CHAT)
    completion = await client.chat.completions.create(model=MODEL, messages=CHAT)

    assert type(info.value) is openai.APIConnectionError
    assert server.request_count == 2
    assert completion.choices[0].message.content == "after the reset"
    assert server.connection_count == 2


async def test_malformed_json_body_escapes_as_json_decode_error(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI, autogen: OpenAIChatCompletionClient
) -> None:
    server.enqueue(FakeReply.malformed(), FakeReply.malformed())

    # The SDK does not wrap this in an openai exception.
    with pytest.raises(json.JSONDecodeError):
        await client.chat.completions.create(model=MODEL, messages=CHAT)
    with pytest.raises(json.JSONDecodeError):
        await autogen.create(USER)


async def test_malformed_non_json_body_is_returned_as_a_string_by_the_sdk(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI, autogen: OpenAIChatCompletionClient
) -> None:
    server.enqueue(FakeReply.malformed(b"<html>bad gateway</html>", content_type="text/html"))
    server.enqueue(FakeReply.malformed(b"<html>bad gateway</html>", content_type="text/html"))

    # Without strict response validation the SDK hands back the body text instead of a ChatCompletion...
    completion: object = await client.chat.completions.create(model=MODEL, messages=CHAT)
    assert completion == "<html>bad gateway</html>"
    # ...which AutoGen then trips over.
    with pytest.raises(AttributeError, match="'str' object has no attribute"):
        await autogen.create(USER)


@pytest.mark.parametrize(("status", "error"), [(204, json.JSONDecodeError), (304, openai.APIStatusError)])
async def test_a_malformed_reply_whose_status_has_no_body_is_refused_with_one(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI, status: int, error: type[Exception]
) -> None:
    # HTTP gives these no body: the client would read one as the start of the next response on the connection.
    refused = rf"a malformed\(\) reply with status {status} cannot have a body .*, got 2 bytes; pass b''"
    with pytest.raises(ValueError, match=refused):
        FakeReply.malformed(b"{}", status=status)
    with pytest.raises(ValueError, match=r"cannot have a body .*, got 9 bytes"):
        FakeReply.malformed(status=status)  # the default body too

    server.enqueue(FakeReply.malformed(b"", status=status), FakeReply.text("next"))
    with pytest.raises(error):  # the SDK's own error for an empty 204, a 304
        await client.chat.completions.create(model=MODEL, messages=CHAT)
    completion = await client.chat.completions.create(model=MODEL, messages=CHAT)
    assert completion.choices[0].message.content == "next"
    assert server.connection_count == 1  # the same connection read on, at the next response


async def test_error_mid_stream_raises_api_error_after_chunks(
    server: FakeOpenAIServer, autogen: OpenAIChatCompletionClient, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("one two three four", error_after_chunks=2))
    server.enqueue(FakeReply.text("one two three four", error_after_chunks=1))
    received: list[str | CreateResult] = []
    chunks: list[Any] = []

    with pytest.raises(openai.APIError) as info:
        await drain(autogen.create_stream(USER), received)
    stream = await client.chat.completions.create(model=MODEL, messages=CHAT, stream=True)
    with pytest.raises(openai.APIError) as sdk_info:
        await drain(stream, chunks)

    assert type(info.value) is openai.APIError
    assert received == ["one", " two"]
    assert "simulated error after 2 chunks" in info.value.message
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "server_error"
    assert [chunk.choices[0].delta.content for chunk in chunks] == ["", "one"]
    assert type(sdk_info.value) is openai.APIError


async def test_error_after_chunks_on_a_non_streaming_request_is_a_500(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("never sent", error_after_chunks=0))

    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model=MODEL, messages=CHAT)

    assert info.value.status_code == 500


async def test_disconnect_mid_stream(server: FakeOpenAIServer, autogen: OpenAIChatCompletionClient) -> None:
    server.enqueue(FakeReply.text("one two three four", disconnect_after_chunks=3))
    received: list[str | CreateResult] = []

    with pytest.raises(openai.APIConnectionError) as info:
        await drain(autogen.create_stream(USER), received)

    assert type(info.value) is openai.APIConnectionError
    assert received == ["one", " two", " three"]


async def test_disconnect_on_a_non_streaming_request(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(FakeReply.text("half a body", disconnect_after_chunks=0))

    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model=MODEL, messages=CHAT)


# --------------------------------------------------------------------------- script and defaults


async def test_unscripted_request_without_default_is_a_bad_request(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("only one"))
    await client.chat.completions.create(model=MODEL, messages=CHAT)

    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=CHAT)

    assert "FakeOpenAIServer: no scripted reply left for request #2" in info.value.message
    assert "enqueue(...)" in info.value.message
    assert "default=..." in info.value.message
    assert server.request_count == 2


async def test_an_unscripted_request_is_kept_with_its_messages(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("only one"))
    await client.chat.completions.create(model=MODEL, messages=CHAT)
    unexpected: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "And the weather in Paris? " + "very " * 60 + "long"},
    ]

    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=MODEL, messages=unexpected, tools=[{"type": "function", "function": {"name": "get_weather"}}]
        )

    assert "(its last message: user: 'And the weather in Paris? very very" in info.value.message
    assert [request.index for request in server.unexpected_requests] == [1]
    description = server.unexpected_requests[0].describe().splitlines()
    assert description[0] == "  1. system: 'You are terse.'"
    assert description[1].startswith("  2. user: 'And the weather in Paris? very very")
    assert description[1].endswith("\u2026'")  # cut, and says so
    assert len(description[1]) < 220
    assert description[2] == "  tools offered: get_weather"
    server.reset()
    assert server.unexpected_requests == []


def test_a_request_that_is_not_json_describes_its_body(server: FakeOpenAIServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    raw_post(conn, b"{oops")
    raw_post(conn, {"model": MODEL, "messages": []})
    conn.close()

    assert server.requests[0].describe() == "  (the body is not a JSON object: b'{oops')"
    assert server.requests[1].describe() == "  (no messages)"
    assert server.unexpected_requests == [server.requests[1]]  # the first one never reached the script


def test_url_is_the_base_url_for_a_client(server: FakeOpenAIServer) -> None:
    assert server.url == server.base_url == f"http://127.0.0.1:{server.port}/v1"
    stopped = FakeOpenAIServer()
    with pytest.raises(RuntimeError, match="not running"):
        stopped.url  # noqa: B018


async def test_default_reply_and_callable() -> None:
    def echo(request: RecordedRequest) -> FakeReply:
        return FakeReply.text(f"echo #{request.index}: {request.messages[-1]['content']}")

    async with (
        FakeOpenAIServer(default=echo) as fake,
        openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0) as sdk,
    ):
        fake.enqueue(FakeReply.text("scripted first"))
        replies = [
            await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
            for text in ("a", "b", "c")
        ]
        fake.default = FakeReply.text("constant")
        constant = await sdk.chat.completions.create(model=MODEL, messages=CHAT)

    assert [reply.choices[0].message.content for reply in replies] == ["scripted first", "echo #1: b", "echo #2: c"]
    assert constant.choices[0].message.content == "constant"


async def test_failing_default_callable_is_a_500_the_sdk_does_not_retry() -> None:
    def broken(request: RecordedRequest) -> FakeReply:
        raise RuntimeError("boom")

    async with (
        FakeOpenAIServer(default=broken) as fake,
        openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=2) as sdk,
    ):
        with pytest.raises(openai.InternalServerError, match="RuntimeError: boom"):
            await sdk.chat.completions.create(model=MODEL, messages=CHAT)
        assert fake.request_count == 1


async def test_concurrent_requests_each_get_their_own_reply() -> None:
    def echo(request: RecordedRequest) -> FakeReply:
        return FakeReply.text(f"re: {request.messages[0]['content']}", chunk_delay=0.001)

    async with (
        FakeOpenAIServer(default=echo) as fake,
        openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0) as sdk,
    ):
        completions = await asyncio.gather(
            *(
                sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(25)
            )
        )
        assert fake.request_count == 25
        assert sorted(request.index for request in fake.requests) == list(range(25))

    assert [completion.choices[0].message.content for completion in completions] == [f"re: q{i}" for i in range(25)]


def test_reset_forgets_script_and_records(server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply.text("a"), FakeReply.text("b"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    raw_post(conn, {"model": MODEL, "messages": CHAT})

    assert server.remaining == [FakeReply.text("b")]
    server.reset()

    assert (server.pending, server.request_count, server.requests, server.all_requests) == (0, 0, [], [])
    assert server.remaining == []
    server.enqueue(FakeReply.text("c"))
    raw_post(conn, {"model": MODEL, "messages": CHAT})
    conn.close()
    assert server.requests[0].index == 0


@pytest.mark.parametrize(
    "earlier",
    [FakeReply.text("earlier", hold_after_chunks=0), FakeReply.text("earlier", delay=3600)],
    ids=["held", "delayed"],
)
def test_reset_ends_the_answers_still_pending_of_earlier_requests(server: FakeOpenAIServer, earlier: FakeReply) -> None:
    # A server shared between tests: a reply the last test held (or delayed) must not answer into this one.
    server.enqueue(earlier)
    before = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    before.request("POST", "/v1/chat/completions", body=json.dumps({"model": MODEL, "messages": CHAT}))
    server.wait_for_requests(1)

    server.reset()
    server.enqueue(FakeReply.text("later", hold_after_chunks=0))
    after = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    after.request("POST", "/v1/chat/completions", body=json.dumps({"model": MODEL, "messages": CHAT}))
    server.wait_for_requests(1)
    server.release()  # for the hold of this test's reply, not the earlier one's
    try:
        # Ended as stop() ends it: the connection is reset, without a byte of the earlier answer.
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            before.getresponse().read()
        response = after.getresponse()
        assert json.loads(response.read())["choices"][0]["message"]["content"] == "later"
    finally:
        before.close()
        after.close()


def test_requests_is_a_snapshot(server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply.text("a"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    raw_post(conn, {"model": MODEL, "messages": CHAT})
    conn.close()

    snapshot = server.requests
    snapshot.clear()

    assert len(server.requests) == 1


def test_invalid_json_request_is_a_400_that_keeps_the_script(server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply.text("kept"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    response, body = raw_post(conn, b"{oops")
    conn.close()

    assert response.status == 400
    assert "could not parse the JSON body" in json.loads(body)["error"]["message"]
    assert server.pending == 1
    [request] = server.requests
    assert (request.body, request.raw) == (None, b"{oops")


def test_chunked_request_bodies_are_read(server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply.text("ok"))
    payload = json.dumps({"model": MODEL, "messages": CHAT}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    conn.request(
        "POST",
        "/v1/chat/completions",
        body=iter([payload[:10], payload[10:]]),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    response.read()
    conn.close()

    assert response.status == 200
    assert server.requests[0].raw == payload


def test_unframeable_request_is_recorded_and_answered_400(server: FakeOpenAIServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk

    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in head
    assert "Malformed request body" in json.loads(body)["error"]["message"]
    assert server.requests[0].raw == b""


_FRAMED = json.dumps({"model": MODEL, "messages": CHAT}).encode()


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Content-Length: +%d\r\n" % len(_FRAMED), id="signed-length"),
        pytest.param(b"Content-Length: %d_0\r\n" % (len(_FRAMED) // 10), id="underscore-in-length"),
        pytest.param(b"Content-Length: %d\r\nContent-Length: 5\r\n" % len(_FRAMED), id="two-lengths"),
        pytest.param(b"Content-Length: 99999999999999999999\r\n", id="length-too-large-to-read"),
        pytest.param(b"Transfer-Encoding: chunked\r\n\r\n-1\r\n", id="negative-chunk-size"),
        pytest.param(b"Transfer-Encoding: chunked\r\n\r\n+%x\r\n" % len(_FRAMED), id="signed-chunk-size"),
    ],
)
def test_request_framing_that_is_not_http_is_answered_400(server: FakeOpenAIServer, framing: bytes) -> None:
    # RFC 9112: Content-Length is 1*DIGIT (equal if repeated), a chunk size 1*HEXDIG. Python's int() also takes
    # "+37", "3_7" and "-1"; a length past sys.maxsize raised OverflowError (a traceback, no answer), and
    # a chunk size of -1 read until the client hung up.
    server.default = FakeReply.text("framed")
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + framing
    request = head + (b"" if b"chunked" in framing else b"\r\n") + _FRAMED
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk

    status, _, body = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert b"Connection: close" in status
    assert "Malformed request body" in json.loads(body)["error"]["message"]
    assert server.requests[0].raw == b""


# --------------------------------------------------------------------------- other routes


async def test_models_routes(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    page = await client.models.list()
    model = await client.models.retrieve(MODEL)
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("no-such-model")

    assert [(m.id, m.object, m.owned_by) for m in page.data] == [(MODEL, "model", "fake")]
    assert isinstance(page.data[0].created, int)
    assert model.id == MODEL
    assert info.value.code == "model_not_found"
    # Only chat completions land in `requests`; `all_requests` has everything.
    assert server.requests == []
    assert [(r.method, r.path) for r in server.all_requests] == [
        ("GET", "/v1/models"),
        ("GET", f"/v1/models/{MODEL}"),
        ("GET", "/v1/models/no-such-model"),
    ]


async def test_azure_openai_paths_are_served_as_the_routes_they_stand_for(server: FakeOpenAIServer) -> None:
    # An Azure OpenAI client given the server's root as its endpoint: a deployment's chat completions (the key in an
    # api-key header, api-version in the query), and the resource's model listing.
    key = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c"
    server.enqueue(FakeReply.text("Sunny", usage=FakeUsage(prompt_tokens=12, completion_tokens=1)))
    server.enqueue(FakeReply.text("Hi"))
    deployment = AzureOpenAIChatCompletionClient(
        model=MODEL, azure_deployment="prod-chat", api_version="2024-10-21", azure_endpoint=server.root_url, api_key=key
    )
    result = await deployment.create(USER)
    chunks = [chunk async for chunk in deployment.create_stream(USER)]
    async with openai.AsyncAzureOpenAI(api_key=key, api_version="2024-10-21", azure_endpoint=server.root_url) as sdk:
        listing = await sdk.models.list()
    await deployment.close()

    assert (result.content, result.usage) == ("Sunny", RequestUsage(prompt_tokens=12, completion_tokens=1))
    assert isinstance(chunks[-1], CreateResult)
    assert chunks[-1].content == "Hi"
    assert [model.id for model in listing.data] == [MODEL]
    assert [(r.method, r.path) for r in server.all_requests] == [
        ("POST", "/openai/deployments/prod-chat/chat/completions"),
        ("POST", "/openai/deployments/prod-chat/chat/completions"),
        ("GET", "/openai/models"),
    ]
    assert [r.headers["api-key"] for r in server.requests] == [key, key]
    assert len(server.models_requests) == 1
    assert server.root_url + "/v1" == server.base_url


@pytest.mark.parametrize("model", ["meta-llama/Llama-3.1-8B-Instruct", "my model", "modèle"])
async def test_a_model_named_with_characters_a_url_escapes_is_found(server: FakeOpenAIServer, model: str) -> None:
    # The SDK sends the id percent-encoded (meta-llama%2FLlama-3.1-8B-Instruct), as a vLLM server is asked for
    # its Hugging Face model; the fake compared that text to its model's name and answered 404.
    server.model = model
    async with openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as sdk:
        found = await sdk.models.retrieve(model)
        with pytest.raises(openai.NotFoundError, match=r"The model 'meta-llama/other' does not exist"):
            await sdk.models.retrieve("meta-llama/other")

    assert found.id == model
    assert "%" in server.all_requests[0].path  # recorded as received


async def test_the_model_listing_can_be_scripted(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue_models(
        FakeReply.error(401, "Incorrect API key provided: sk-echo"), FakeReply.reset(), FakeReply(delay=0.01)
    )
    with pytest.raises(openai.AuthenticationError, match="sk-echo"):
        await client.models.list()
    with pytest.raises(openai.APIConnectionError):
        await client.models.list()
    delayed = await client.models.list()
    usual = await client.models.list()  # the script is used up: the usual listing

    assert [m.id for m in delayed.data] == [m.id for m in usual.data] == [MODEL]
    assert len(server.models_requests) == 4
    assert server.requests == []  # listings are not chat completions
    await client.models.retrieve(MODEL)  # one model is not the listing: never scripted, never counted
    assert len(server.models_requests) == 4


async def test_a_held_model_listing_hangs_until_released(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue_models(FakeReply(hold_after_chunks=0), FakeReply(hold_after_chunks=0))
    with pytest.raises(openai.APITimeoutError):
        await client.models.list(timeout=0.2)  # nothing releases it: it hangs past the client's timeout
    server.release(2)  # one for the listing that timed out (still held), one kept for the next
    assert [m.id for m in (await client.models.list()).data] == [MODEL]
    assert len(server.models_requests) == 2


def test_enqueue_models_takes_fake_replies_only(server: FakeOpenAIServer) -> None:
    with pytest.raises(TypeError, match="enqueue_models"):
        server.enqueue_models("a listing")  # type: ignore[arg-type]


async def test_unknown_path_is_an_openai_style_404(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.embeddings.create(model="text-embedding-3-small", input="hi")

    assert info.value.message.startswith("Error code: 404")
    assert "Invalid URL (POST /v1/embeddings)" in info.value.message
    assert info.value.type == "invalid_request_error"
    assert server.request_count == 0
    assert server.all_requests[0].path == "/v1/embeddings"


# --------------------------------------------------------------------------- connections and retries


async def test_keep_alive_reuses_one_connection(server: FakeOpenAIServer, client: openai.AsyncOpenAI) -> None:
    for i in range(30):
        server.enqueue(FakeReply.text(f"reply {i}"), FakeReply.text(f"streamed {i}"), FakeReply.error(400))
        completion = await client.chat.completions.create(model=MODEL, messages=CHAT)
        stream = await client.chat.completions.create(model=MODEL, messages=CHAT, stream=True)
        streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model=MODEL, messages=CHAT)
        assert (completion.choices[0].message.content, streamed) == (f"reply {i}", f"streamed {i}")

    assert server.request_count == 90
    assert server.connection_count == 1


async def test_sdk_retries_are_visible_as_separate_requests(server: FakeOpenAIServer) -> None:
    # retry-after-ms keeps the SDK's back-off short (its default starts at 0.5 s).
    server.enqueue(
        FakeReply.error(500, headers={"retry-after-ms": "10"}),
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("third time lucky"),
    )

    async with openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=2) as sdk:
        completion = await sdk.chat.completions.create(model=MODEL, messages=CHAT)

    assert completion.choices[0].message.content == "third time lucky"
    assert server.request_count == 3
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1", "2"]
    assert len({r.raw for r in server.requests}) == 1


def test_works_from_sync_code(server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply.text("sync hello"), FakeReply.text("sync stream"))

    with openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as sdk:
        completion = sdk.chat.completions.create(model=MODEL, messages=CHAT)
        stream = sdk.chat.completions.create(model=MODEL, messages=CHAT, stream=True)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)

    assert (completion.choices[0].message.content, streamed) == ("sync hello", "sync stream")


# --------------------------------------------------------------------------- lifecycle


def test_stop_closes_idle_keep_alive_connections_and_is_idempotent() -> None:
    # How long stop() takes is measured in benchmarks/bench_fake_server.py; here, what it does.
    fake = FakeOpenAIServer(default=FakeReply.text("hi")).start()
    port = fake.port
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(3)]
    for conn in conns:
        response, _ = raw_post(conn, {"model": MODEL, "messages": CHAT})
        assert not response.will_close

    fake.stop()
    fake.stop()

    assert not fake.running
    for conn in conns[1:]:
        assert conn.sock is not None
        assert conn.sock.recv(1) == b""  # the server closed its end, unasked
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.base_url
    # The idle connections were closed and the port no longer accepts new ones.
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        raw_post(conns[0], {"model": MODEL, "messages": CHAT})
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    for conn in conns:
        conn.close()


def test_stop_interrupts_a_delayed_reply() -> None:
    # An hour's delay, and the SDK waits up to ten minutes: only stop() can end this call within the join below.
    fake = FakeOpenAIServer(default=FakeReply.text("never", delay=3600)).start()
    errors: list[BaseException] = []

    def call() -> None:
        with openai.OpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0) as sdk:
            try:
                sdk.chat.completions.create(model=MODEL, messages=CHAT)
            except openai.APIError as exc:
                errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    fake.wait_for_requests(1)

    fake.stop()
    caller.join(timeout=60)

    assert not caller.is_alive()
    assert [type(error) for error in errors] == [openai.APIConnectionError]


# --------------------------------------------------------------------------- waiting for requests


def test_wait_for_requests_returns_them_once_they_have_arrived(server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply.text("first", hold_after_chunks=0), FakeReply.text("second", hold_after_chunks=0))
    answers: list[str] = []

    def call(n: int) -> None:
        with openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=30) as sdk:
            completion = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"call {n}"}])
            answers.append(completion.choices[0].message.content or "")

    callers = [threading.Thread(target=call, args=(n,)) for n in range(2)]
    for caller in callers:
        caller.start()
    requests = server.wait_for_requests(2)

    assert sorted(request.messages[0]["content"] for request in requests) == ["call 0", "call 1"]
    assert answers == []  # recorded on arrival, before the (held) answers
    server.release(2)
    for caller in callers:
        caller.join(timeout=30)
    assert sorted(answers) == ["first", "second"]
    assert server.wait_for_requests(0) == server.requests


def test_wait_for_requests_says_how_many_arrived_when_it_times_out(server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply.text("only one"), FakeReply.text("unused"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    raw_post(conn, {"model": MODEL, "messages": CHAT})
    conn.close()

    message = r"waited 0.01 s for 2 chat-completions requests, 1 arrived \(1 scripted replies left\)"
    with pytest.raises(TimeoutError, match=message):
        server.wait_for_requests(2, timeout=0.01)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        server.wait_for_requests(-1)
    with pytest.raises(ValueError, match="timeout must be a number of seconds"):
        server.wait_for_requests(1, timeout=-1)
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds .* got an int too large for a float"):
        server.wait_for_requests(1, timeout=10**400)


async def test_wait_for_requests_on_the_clients_event_loop_says_to_await_the_async_wait(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    # The blocking wait stops the loop that would send the request: "0 arrived" alone blames the client.
    server.enqueue(FakeReply.text("hi"))
    call = asyncio.create_task(client.chat.completions.create(model=MODEL, messages=CHAT))
    message = (
        r"waited 0.01 s for 1 chat-completions request, 0 arrived \(1 scripted replies left\); this thread runs "
        r"an event loop, which this blocking wait stopped: a client on it could not send. In a coroutine, await "
        r"wait_for_requests_async\(n\) instead."
    )
    with pytest.raises(TimeoutError, match=message):
        server.wait_for_requests(1, timeout=0.01)
    [request] = await server.wait_for_requests_async(1)
    assert request.messages == CHAT
    assert (await call).choices[0].message.content == "hi"


@pytest.mark.parametrize("timeout", [math.inf, 1e12], ids=["inf", "past-the-lock"])
def test_wait_for_requests_without_an_end_waits_for_the_request(server: FakeOpenAIServer, timeout: float) -> None:
    # Accepted, as by wait_for_requests_async; the lock's wait took it and raised OverflowError at once.
    server.enqueue(FakeReply.text("hi"))
    caller = threading.Thread(target=post_in_a_while, args=(server,))
    caller.start()
    try:
        [request] = server.wait_for_requests(1, timeout=timeout)
    finally:
        caller.join(timeout=30)
    assert request.messages == CHAT


def post_in_a_while(server: FakeOpenAIServer) -> None:
    # A moment after the wait began (nothing waits on this sleep: the test waits for the request).
    threading.Event().wait(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    raw_post(conn, {"model": MODEL, "messages": CHAT})
    conn.close()


async def test_wait_for_requests_async_is_woken_by_the_request(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    server.enqueue(FakeReply.text("hi"))
    waiting = asyncio.ensure_future(server.wait_for_requests_async(1))
    await asyncio.sleep(0)  # one loop turn: the wait is registered before the request exists
    assert not waiting.done()

    await client.chat.completions.create(model=MODEL, messages=CHAT)

    [request] = await waiting
    assert request.messages == CHAT


async def test_wait_for_requests_async_times_out_and_can_be_cancelled(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(TimeoutError, match=r"for 1 chat-completions request, 0 arrived"):
        await server.wait_for_requests_async(1, timeout=0.01)
    waiting = asyncio.ensure_future(server.wait_for_requests_async(1, timeout=None))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    # The request finds no waiter left to wake, and a new wait sees it.
    server.enqueue(FakeReply.text("hi"))
    await client.chat.completions.create(model=MODEL, messages=CHAT)
    assert len(await server.wait_for_requests_async(1)) == 1


def test_start_twice_raises_and_restart_after_stop_works() -> None:
    fake = FakeOpenAIServer(default=FakeReply.text("hi"))
    fake.stop()  # never started: harmless
    with fake:
        with pytest.raises(RuntimeError, match="already running"):
            fake.start()
        first_url = fake.base_url
    with fake:
        conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
        response, _ = raw_post(conn, {"model": MODEL, "messages": CHAT})
        conn.close()
    assert first_url.startswith("http://127.0.0.1:")
    assert first_url.endswith("/v1")
    assert response.status == 200
    assert fake.request_count == 1


# --------------------------------------------------------------------------- value objects


def test_reply_validation() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        FakeReply.text("x", error_after_chunks=1, disconnect_after_chunks=1)
    with pytest.raises(ValueError, match="4xx or 5xx"):
        FakeReply.error(200)
    with pytest.raises(ValueError, match="delay must be >= 0"):
        FakeReply.text("x", delay=-1)
    with pytest.raises(ValueError, match="hold_after_chunks must be >= 0"):
        FakeReply.text("x", hold_after_chunks=-1)
    with pytest.raises(ValueError, match="count must be an int >= 1"):
        FakeOpenAIServer().release(0)
    with pytest.raises(ValueError, match="single-line"):
        FakeReply.text("x", headers={"x-evil": "a\r\nb"})
    with pytest.raises(ValueError, match="managed by the server"):
        FakeReply.text("x", headers={"Content-Length": "1"})
    with pytest.raises(ValueError, match="at least one"):
        FakeReply.tool_calls([])
    with pytest.raises(TypeError, match="FakeReply"):
        FakeOpenAIServer().enqueue("hello")  # type: ignore[arg-type]


def test_reply_misuse_is_refused_with_what_is_expected() -> None:
    with pytest.raises(TypeError, match=r"status must be an int HTTP status such as 429, got '429'"):
        FakeReply.error("429")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"status must be an int HTTP status such as 429, got True"):
        FakeReply.malformed(status=True)
    # faults.rate_limit(retry_after=1) takes a number; a header is text, as on the wire.
    with pytest.raises(TypeError, match=r"header 'Retry-After' must have a string value such as '1', got 1"):
        FakeReply.error(429, headers={"Retry-After": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"header names are strings, got 1"):
        FakeReply.text("x", headers={1: "a"})  # type: ignore[dict-item]
    pair = r"tool_calls\(\) takes \(name, arguments\) pairs such as \[\('add', \{'a': 1\}\)\]"
    with pytest.raises(TypeError, match=rf"{pair}, got 'add'"):
        FakeReply.tool_calls(["add"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=rf"{pair}, got \('add', \{{'a': 1\}}, 'extra'\)"):
        FakeReply.tool_calls([("add", {"a": 1}, "extra")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=rf"{pair}, got \(5, '\{{\}}'\)"):
        FakeReply.tool_calls([(5, "{}")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=rf"{pair}, got \('add', 5\)"):
        FakeReply.tool_calls([("add", 5)])  # type: ignore[list-item]


def slip(value: object) -> Any:
    """``value``, of a type the parameter does not take, past the type checker: what a test without one passes."""
    return value


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: FakeReply.text("x", delay=math.nan), ValueError, r"delay must be >= 0 seconds \(math.inf: until"),
        (lambda: FakeReply.text("x", delay=-0.5), ValueError, r"delay must be >= 0 seconds .*, got -0.5"),
        (lambda: FakeReply.text("x", delay=10**400), ValueError, r"delay must be >= 0 seconds .*too large"),
        (lambda: FakeReply.text("x", delay=slip("1")), TypeError, r"delay must be a number of seconds, got '1'"),
        (lambda: FakeReply.error(429, delay=True), TypeError, r"delay must be a number of seconds, got True"),
        (lambda: FakeReply.text("x", chunk_delay=-math.inf), ValueError, r"chunk_delay must be >= 0 seconds"),
        (
            lambda: FakeReply.text("x", hold_after_chunks=slip(1.5)),
            TypeError,
            r"hold_after_chunks must be an int or None",
        ),
        (lambda: FakeReply.text("x", error_after_chunks=True), TypeError, r"error_after_chunks must be an int or"),
        (lambda: FakeReply.text("x", disconnect_after_chunks=-1), ValueError, r"disconnect_after_chunks must be >= 0"),
        (lambda: FakeReply.malformed(status=101), ValueError, r"status must be .*200 to 599.*, got 101"),
        (lambda: FakeReply.malformed(status=600), ValueError, r"status must be .*200 to 599.*, got 600"),
        (lambda: FakeReply.malformed(status=slip(429.0)), TypeError, r"status must be an int HTTP status"),
        (lambda: FakeUsage(slip(1.5), 2), TypeError, r"prompt_tokens must be an int, got 1.5"),
        (lambda: FakeUsage(1, -2), ValueError, r"completion_tokens must be >= 0, got -2"),
        (lambda: FakeUsage(True, 2), TypeError, r"prompt_tokens must be an int, got True"),
        (
            lambda: FakeUsage(1, 2, cached_tokens=slip(math.nan)),
            TypeError,
            r"cached_tokens must be an int or None, got nan",
        ),
        (
            lambda: FakeUsage(1, 2, reasoning_tokens=slip("3")),
            TypeError,
            r"reasoning_tokens must be an int or None, got '3'",
        ),
    ],
    ids=[
        *("delay-nan", "delay-negative", "delay-huge-int", "delay-str", "delay-bool", "chunk_delay-minus-inf"),
        *("hold-float", "error_after-bool", "disconnect_after-negative", "status-1xx", "status-600", "status-float"),
        *("prompt-float", "completion-negative", "prompt-bool", "cached-nan", "reasoning-str"),
    ],
)
def test_numbers_are_checked_at_construction_naming_the_field(make: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: FakeReply.text(slip(42)), TypeError, r"content must be a string or None, got 42"),
        (lambda: FakeReply.text("x", finish_reason=slip(None)), TypeError, r"finish_reason must be a string, got None"),
        (lambda: FakeReply.text("x", model=slip(4)), TypeError, r"model must be a string or None, got 4"),
        (lambda: FakeReply.json([1], usage=slip({"prompt_tokens": 1})), TypeError, r"usage must be a FakeUsage or"),
        (lambda: FakeReply.text("x", headers=slip("x-a: 1")), TypeError, r"headers must be a mapping"),
        (lambda: FakeReply.error(429, slip(b"slow down")), TypeError, r"error_message must be a string or None"),
        (lambda: FakeReply.error(429, code=slip(429)), TypeError, r"error_code must be a string or None, got 429"),
        (lambda: FakeReply.error(400, type=slip(ValueError)), TypeError, r"error_type must be a string or None"),
        (lambda: FakeReply.error(400, param=slip(["a"])), TypeError, r"error_param must be a string or None"),
        (lambda: FakeReply.malformed(slip("{not json")), TypeError, r"raw_body .* must be bytes such as b'"),
        (lambda: FakeReply.malformed(content_type=slip(None)), TypeError, r"content_type must be a string, got None"),
        (lambda: FakeReply.malformed(content_type="text/plain\r\nx: y"), ValueError, r"content_type must be a single"),
        (lambda: FakeReply(kind=slip("timeout")), ValueError, r"kind must be one of 'completion', 'error', 're"),
        (lambda: FakeReply(calls=slip((("f", {"a": 1}),))), TypeError, r"calls must be a tuple of \(name, arguments"),
    ],
    ids=[
        *("content", "finish_reason", "model", "usage-dict", "headers-str", "error_message-bytes", "error_code-int"),
        *("error_type-class", "error_param-list", "raw_body-str", "content_type-none", "content_type-crlf", "kind"),
        "calls-mapping",
    ],
)
def test_values_of_the_wrong_type_are_refused_at_construction_naming_the_field(
    make: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make()


def test_a_default_of_the_wrong_type_is_refused_when_given() -> None:
    hint = r"default must be a FakeReply, a function of the RecordedRequest returning one, or None, got"
    with pytest.raises(TypeError, match=rf"{hint} 'Hello!' \(FakeReply.text\('Hello!'\) answers with that text\)"):
        FakeOpenAIServer(default=slip("Hello!"))
    server = FakeOpenAIServer(default=FakeReply.text("fine"))
    with pytest.raises(TypeError, match=rf"{hint} \{{'content': 'x'\}}"):
        server.default = slip({"content": "x"})
    assert server.default == FakeReply.text("fine")  # kept
    server.default = None


ALIASES = r"model_aliases maps .* \(non-empty strings\), got "


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"model": slip(None)}, TypeError, r"model must be a non-empty string such as 'gpt-4o-mini', got None"),
        ({"model": " "}, ValueError, r"model must be a non-empty string such as 'gpt-4o-mini', got ' '"),
        ({"model": slip(4)}, TypeError, r"model must be a non-empty string such as 'gpt-4o-mini', got 4"),
        ({"model_aliases": slip([("gpt-4o", "gpt-4o-2024-08-06")])}, TypeError, r"model_aliases must be a mapping"),
        ({"model_aliases": {"gpt-4o": slip(1)}}, TypeError, ALIASES + r"'gpt-4o': 1"),
        ({"model_aliases": {slip(None): "gpt-4o"}}, TypeError, ALIASES + r"None: 'gpt-4o'"),
        ({"model_aliases": {"gpt-4o": ""}}, ValueError, ALIASES + r"'gpt-4o': ''"),
        ({"port": -1}, ValueError, r"port must be an int from 0 to 65535 \(0: a free one\), got -1"),
        ({"port": 65536}, ValueError, r"port must be an int from 0 to 65535 \(0: a free one\), got 65536"),
        ({"port": slip("8080")}, TypeError, r"port must be an int from 0 to 65535 \(0: a free one\), got '8080'"),
        ({"port": slip(True)}, TypeError, r"port must be an int from 0 to 65535 \(0: a free one\), got True"),
        ({"port": slip(None)}, TypeError, r"port must be an int from 0 to 65535 \(0: a free one\), got None"),
    ],
    ids=[
        *("model-none", "model-blank", "model-int", "aliases-pairs", "aliases-int-value", "aliases-none-key"),
        *("aliases-empty-value", "port-negative", "port-too-high", "port-str", "port-bool", "port-none"),
    ],
)
def test_server_options_are_refused_when_the_server_is_made(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):  # as default= is: not at start(), nor at the first request
        FakeOpenAIServer(**options)


def test_valid_server_options_are_taken_and_checked_again_when_reassigned() -> None:
    FakeOpenAIServer(port=65535, model_aliases={})  # not started: the port need not be free
    with FakeOpenAIServer("my-model", port=0, model_aliases={"my-model": "my-model-v2"}) as server:
        assert server.port > 0  # 0: a free one
        assert (server.model, server.model_aliases) == ("my-model", {"my-model": "my-model-v2"})
        with pytest.raises(ValueError, match=r"model must be a non-empty string such as 'gpt-4o-mini', got ''"):
            server.model = ""
        with pytest.raises(TypeError, match=r"model_aliases maps .* got 'a': None"):
            server.model_aliases = {"a": slip(None)}
        assert (server.model, server.model_aliases) == ("my-model", {"my-model": "my-model-v2"})  # kept
        with pytest.raises(TypeError):  # changed in place, past the check: refused (assign a new mapping)
            server.model_aliases["a"] = slip(None)  # type: ignore[index]
        assert server.model_aliases == {"my-model": "my-model-v2"}


@pytest.mark.parametrize("delay", [math.inf, 1e12], ids=["inf", "beyond-the-thread-timeout"])
async def test_an_endless_delay_waits_until_the_server_is_reset_or_stops(
    server: FakeOpenAIServer, client: openai.AsyncOpenAI, delay: float
) -> None:
    server.enqueue(*[FakeReply.text("never", delay=delay)] * 2)
    with pytest.raises(openai.APITimeoutError):  # it waits: nothing comes back, not even a closed connection
        await client.with_options(timeout=0.5).chat.completions.create(model=MODEL, messages=CHAT)

    pending = asyncio.ensure_future(client.chat.completions.create(model=MODEL, messages=CHAT))
    await server.wait_for_requests_async(2)
    server.reset()
    with pytest.raises(openai.APIConnectionError):
        await asyncio.wait_for(pending, 30)  # the bound only keeps a broken reset from hanging the test


def test_an_endless_chunk_delay_stalls_a_stream_after_its_first_event(server: FakeOpenAIServer) -> None:
    server.enqueue(FakeReply.text("one two", chunk_delay=math.inf))
    conn, response = open_stream(server.port)
    try:
        assert json.loads(next_event(response))["choices"][0]["delta"]["role"] == "assistant"
        assert conn.sock is not None
        conn.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):  # nothing follows, not even the end of the connection
            response.readline()
    finally:
        conn.close()


def test_replies_are_immutable() -> None:
    headers = {"x-a": "1"}
    reply = FakeReply.text("x", headers=headers)
    headers["x-b"] = "2"

    assert dict(reply.headers) == {"x-a": "1"}
    with pytest.raises(TypeError):
        reply.headers["x-c"] = "3"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.content = "y"  # type: ignore[misc]
    assert FakeReply.json({"a": [1, 2]}).content == '{"a": [1, 2]}'
    assert FakeReply.tool_calls([("f", {"x": 1})]).calls == (("f", '{"x": 1}'),)
    assert FakeUsage(3, 4).to_openai() == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize("body", [b"", b'{"id": "chatcmpl-1", "cho'])
def test_a_malformed_reply_with_disconnect_sends_its_body_then_resets(body: bytes) -> None:
    # How a cassette replays a body the provider cut off: what came, then the failure (an empty body too: its
    # chunk would have been the chunked encoding's end, an orderly empty answer).
    with FakeOpenAIServer() as server:
        server.enqueue(dataclasses.replace(FakeReply.malformed(body), disconnect_after_chunks=0))
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        client.close()
