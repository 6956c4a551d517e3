"""The per-call pipeline: layers compose, every provider attempt ends in exactly one event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import openai
import pytest
from autogen_core import CancellationToken
from autogen_core.models import AssistantMessage, CreateResult, UserMessage

from autogen_reliability import AttemptEvent, Attribution, ReliableChatCompletionClient
from autogen_reliability._pipeline import Call, CreateHandler, Layer, Pipeline, Request, StreamHandler, StreamItem
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

from .conftest import OpenAIClientFactory

HI = [UserMessage(content="hi", source="user")]


def new_request(streamed: bool = False) -> Request:
    return Request(Call(Attribution(project="p"), streamed=streamed), HI)


class RetryOnceLayer(Layer):
    """A toy retry, to show a layer can call the rest of the chain again."""

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        try:
            return await call_next(request)
        except openai.InternalServerError:
            return await call_next(request)

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        try:
            items = [item async for item in call_next(request)]
        except openai.InternalServerError:
            items = [item async for item in call_next(request)]
        for item in items:
            yield item


class ReaskLayer(Layer):
    """A toy re-ask, to show a layer derives a new request instead of mutating one."""

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        result = await call_next(request)
        if result.content == "not json":
            follow_up = [*request.messages, AssistantMessage(content="not json", source="model"),
                         UserMessage(content="Answer in JSON.", source="validator")]  # fmt: skip
            result = await call_next(request.replace(messages=follow_up))
        return result


async def test_layers_compose_and_attempts_share_the_call(
    server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    pipeline = Pipeline(make_openai_client(), layers=[ReaskLayer(), RetryOnceLayer()], observers=[events.append])
    server.enqueue(FakeReply.error(500), FakeReply.text("not json"), FakeReply.text('{"ok": true}'))
    request = new_request()
    result = await pipeline.create(request)
    assert result.content == '{"ok": true}'
    assert server.request_count == 3
    assert [(event.attempt, event.outcome) for event in events] == [(1, "error"), (2, "ok"), (3, "ok")]
    assert {event.call.call_id for event in events} == {request.call.call_id}
    assert isinstance(events[0].error, openai.InternalServerError)
    assert len(request.messages) == 1, "the original request was mutated"
    last_body = server.requests[2].body
    assert last_body is not None
    assert [message["content"] for message in last_body["messages"]] == ["hi", "not json", "Answer in JSON."]
    assert all(event.latency >= 0 and event.started_at.tzinfo is not None for event in events)


async def test_stream_layers_compose(server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory) -> None:
    events: list[AttemptEvent] = []
    pipeline = Pipeline(make_openai_client(), layers=[RetryOnceLayer()], observers=[events.append])
    server.enqueue(FakeReply.error(503), FakeReply.text("streamed fine"))
    items = [item async for item in pipeline.create_stream(new_request(streamed=True))]
    assert "".join(item for item in items if isinstance(item, str)) == "streamed fine"
    assert [(event.attempt, event.outcome) for event in events] == [(1, "error"), (2, "ok")]


async def test_an_observer_that_raises_does_not_break_the_call(
    server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: AttemptEvent) -> None:
        raise RuntimeError("observer bug")

    seen: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=[broken, seen.append])
    server.enqueue(FakeReply.text("still fine"))
    with caplog.at_level(logging.ERROR, logger="autogen_reliability"):
        result = await client.create(HI)
    assert result.content == "still fine"
    assert len(seen) == 1
    assert "attempt observer" in caplog.text
    assert "observer bug" in caplog.text


async def test_provider_error_is_raised_unchanged_and_observed(
    server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), retry=None, on_attempt=events.append)
    server.enqueue(FakeReply.error(429, headers={"Retry-After": "1"}))
    with pytest.raises(openai.RateLimitError) as caught:
        await client.create(HI)
    assert caught.value.status_code == 429
    assert events[0].error is caught.value
    assert events[0].outcome == "error"
    assert events[0].result is None


async def test_abandoned_stream_is_observed_as_cancelled(
    server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=events.append)
    server.enqueue(FakeReply.text("one two three four five six", hold_after_chunks=1))  # the rest never comes
    stream = client.create_stream(HI)
    first = await asyncio.wait_for(anext(stream), 30)
    assert isinstance(first, str)
    await stream.aclose()
    assert [event.outcome for event in events] == ["cancelled"]


async def test_stream_read_to_its_result_then_closed_is_ok(
    server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=events.append)
    server.enqueue(FakeReply.text("short"))
    stream = client.create_stream(HI)
    async for item in stream:
        if isinstance(item, CreateResult):
            break
    await stream.aclose()
    assert [event.outcome for event in events] == ["ok"]


async def test_error_mid_stream_is_observed(server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=events.append)
    server.enqueue(FakeReply.text("Hello from the stream", error_after_chunks=2))
    received: list[StreamItem] = []

    async def consume() -> None:
        async for item in client.create_stream(HI):
            received.append(item)

    with pytest.raises(openai.APIError):
        await consume()
    assert received, "the chunks before the error reach the consumer"
    assert [event.outcome for event in events] == ["error"]


async def test_cancellation_propagates_and_is_observed(
    server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=events.append)
    server.enqueue(FakeReply.text("too late", hold_after_chunks=0))  # never answered: the call is in flight
    token = CancellationToken()
    call = asyncio.ensure_future(client.create(HI, cancellation_token=token))
    await server.wait_for_requests_async(1)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert [event.outcome for event in events] == ["cancelled"]
