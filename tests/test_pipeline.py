"""The per-call pipeline: layers compose, every provider attempt ends in exactly one event."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import openai
import pytest
from autogen_core import CancellationToken
from autogen_core.models import AssistantMessage, CreateResult, UserMessage

import autogen_reliability
import autogen_reliability.testing
from autogen_reliability import AttemptEvent, Attribution, ReliableChatCompletionClient
from autogen_reliability._pipeline import (
    Call,
    CreateHandler,
    Layer,
    Pipeline,
    Request,
    StreamHandler,
    StreamItem,
    subscribe_attempts,
    subscribe_calls,
)
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, ScriptedChatCompletionClient, ScriptedReply

from .conftest import OpenAIClientFactory, contextlib_entered

HI = [UserMessage(content="hi", source="user")]


def new_request(streamed: bool = False) -> Request:
    return Request(Call(Attribution(project="p"), streamed=streamed, extra_create_args={}), HI)


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
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    pipeline = Pipeline(make_openai_client(), layers=[ReaskLayer(), RetryOnceLayer()], observers=[events.append])
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.text("not json"), FakeReply.text('{"ok": true}'))
    request = new_request()
    result = await pipeline.create(request)
    assert result.content == '{"ok": true}'
    assert fake_openai_server.request_count == 3
    assert [(event.attempt, event.outcome) for event in events] == [(1, "error"), (2, "ok"), (3, "ok")]
    assert {event.call.call_id for event in events} == {request.call.call_id}
    assert isinstance(events[0].error, openai.InternalServerError)
    assert len(request.messages) == 1, "the original request was mutated"
    last_body = fake_openai_server.requests[2].body
    assert last_body is not None
    assert [message["content"] for message in last_body["messages"]] == ["hi", "not json", "Answer in JSON."]
    assert all(event.latency >= 0 and event.started_at.tzinfo is not None for event in events)


async def test_stream_layers_compose(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    pipeline = Pipeline(make_openai_client(), layers=[RetryOnceLayer()], observers=[events.append])
    fake_openai_server.enqueue(FakeReply.error(503), FakeReply.text("streamed fine"))
    items = [item async for item in pipeline.create_stream(new_request(streamed=True))]
    assert "".join(item for item in items if isinstance(item, str)) == "streamed fine"
    assert [(event.attempt, event.outcome) for event in events] == [(1, "error"), (2, "ok")]


async def test_an_observer_that_raises_does_not_break_the_call(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: AttemptEvent) -> None:
        raise RuntimeError("observer bug")

    seen: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=[broken, seen.append])
    fake_openai_server.enqueue(FakeReply.text("still fine"))
    with caplog.at_level(logging.ERROR, logger="autogen_reliability"):
        result = await client.create(HI)
    assert result.content == "still fine"
    assert len(seen) == 1
    assert "attempt observer" in caplog.text
    assert "observer bug" in caplog.text


async def test_provider_error_is_raised_unchanged_and_observed(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), retry=None, on_attempt=events.append)
    fake_openai_server.enqueue(FakeReply.error(429, headers={"Retry-After": "1"}))
    with pytest.raises(openai.RateLimitError) as caught:
        await client.create(HI)
    assert caught.value.status_code == 429
    assert events[0].error is caught.value
    assert events[0].outcome == "error"
    assert events[0].result is None


async def test_abandoned_stream_is_observed_as_cancelled(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=events.append)
    fake_openai_server.enqueue(
        FakeReply.text("one two three four five six", hold_after_chunks=1)
    )  # the rest never comes
    stream = client.create_stream(HI)
    first = await asyncio.wait_for(anext(stream), 30)
    assert isinstance(first, str)
    await stream.aclose()
    assert [event.outcome for event in events] == ["cancelled"]


async def test_stream_read_to_its_result_then_closed_is_ok(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=events.append)
    fake_openai_server.enqueue(FakeReply.text("short"))
    stream = client.create_stream(HI)
    async for item in stream:
        if isinstance(item, CreateResult):
            break
    await stream.aclose()
    assert [event.outcome for event in events] == ["ok"]


async def test_error_mid_stream_is_observed(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=events.append)
    fake_openai_server.enqueue(FakeReply.text("Hello from the stream", error_after_chunks=2))
    received: list[StreamItem] = []

    async def consume() -> None:
        async for item in client.create_stream(HI):
            received.append(item)

    with pytest.raises(openai.APIError):
        await consume()
    assert received, "the chunks before the error reach the consumer"
    assert [event.outcome for event in events] == ["error"]


async def test_cancellation_propagates_and_is_observed(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    client = ReliableChatCompletionClient(make_openai_client(), on_attempt=events.append)
    fake_openai_server.enqueue(FakeReply.text("too late", hold_after_chunks=0))  # never answered: the call is in flight
    token = CancellationToken()
    call = asyncio.ensure_future(client.create(HI, cancellation_token=token))
    await fake_openai_server.wait_for_requests_async(1)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert [event.outcome for event in events] == ["cancelled"]


# -- the process's feed: every attempt and every call of every wrapped client ----------------------


class CallLog:
    """A call observer that writes down what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Call, Pipeline, BaseException | None]] = []

    def call_started(self, call: Call, pipeline: Pipeline) -> None:
        self.seen.append(("started", call, pipeline, None))

    def call_ended(self, call: Call, pipeline: Pipeline, error: BaseException | None) -> None:
        # The attempts are known by now: the end comes after every attempt's event.
        assert len(call.events) == call.attempts
        self.seen.append(("ended", call, pipeline, error))


async def test_the_feed_sees_every_attempt_and_each_call_once_fallbacks_included(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    attempts: list[AttemptEvent] = []
    calls = CallLog()
    stop_attempts = subscribe_attempts(attempts.append)
    stop_calls = subscribe_calls(calls)
    try:
        primary, fallback = make_openai_client(), make_openai_client(model="gpt-4o")
        client = ReliableChatCompletionClient(primary, retry=None, fallbacks=[fallback])
        fake_openai_server.enqueue(FakeReply.error(503), FakeReply.text("from the fallback"))
        result = await client.create(HI)
    finally:
        stop_attempts()
        stop_calls()
    assert result.content == "from the fallback"
    assert [(event.attempt, event.outcome, event.client) for event in attempts] == [
        (1, "error", primary),
        (2, "ok", fallback),
    ]
    # One call, announced by the wrapper's pipeline; the fallback's pipeline does not announce it again.
    assert [(kind, pipeline.client, error) for kind, _, pipeline, error in calls.seen] == [
        ("started", primary, None),
        ("ended", primary, None),
    ]
    assert calls.seen[0][1] is calls.seen[1][1] is attempts[0].call


async def test_a_failed_call_ends_with_its_error_and_unsubscribed_observers_hear_nothing(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    calls = CallLog()
    client = ReliableChatCompletionClient(make_openai_client(), retry=None)
    stop = subscribe_calls(calls)
    fake_openai_server.enqueue(FakeReply.error(400), FakeReply.text("unheard"))
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.create(HI)
    finally:
        stop()
    await client.create(HI)
    assert [(kind, error) for kind, _, _, error in calls.seen] == [("started", None), ("ended", caught.value)]


async def test_a_stream_ends_after_its_last_item_or_when_abandoned(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    calls = CallLog()
    client = ReliableChatCompletionClient(make_openai_client())
    stop = subscribe_calls(calls)
    fake_openai_server.enqueue(FakeReply.text("one two three"), FakeReply.text("four five six"))
    try:
        items = [item async for item in client.create_stream(HI)]
        assert isinstance(items[-1], CreateResult)
        assert [kind for kind, *_ in calls.seen] == ["started", "ended"]
        assert calls.seen[-1][3] is None
        stream = client.create_stream(HI)
        await anext(stream)  # the first chunk, then the consumer walks away
        await stream.aclose()
    finally:
        stop()
    assert [kind for kind, *_ in calls.seen] == ["started", "ended", "started", "ended"]
    assert isinstance(calls.seen[-1][3], GeneratorExit)  # no answer was handed on: the call did not complete


async def test_a_feed_observer_that_raises_is_logged_and_kept(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[int] = []

    def broken(event: AttemptEvent) -> None:
        failures.append(event.attempt)
        raise RuntimeError("feed observer bug")

    class BrokenCalls:
        def call_started(self, call: Call, pipeline: Pipeline) -> None:
            raise RuntimeError("call observer bug")

        def call_ended(self, call: Call, pipeline: Pipeline, error: BaseException | None) -> None:
            raise RuntimeError("call observer bug")

    stops = [subscribe_attempts(broken), subscribe_calls(BrokenCalls())]
    client = ReliableChatCompletionClient(make_openai_client())
    fake_openai_server.enqueue(FakeReply.text("first"), FakeReply.text("second"))
    try:
        with caplog.at_level(logging.ERROR, logger="autogen_reliability"):
            assert (await client.create(HI)).content == "first"
            assert (await client.create(HI)).content == "second"
    finally:
        for stop in stops:
            stop()
    assert failures == [1, 1]  # still subscribed after it raised
    # Each failure is one line, then its traceback (redacted: an observer's error may chain a provider's).
    logged = [record.getMessage().splitlines()[-1] for record in caplog.records]
    assert logged.count("RuntimeError: feed observer bug") == 2
    assert logged.count("RuntimeError: call observer bug") == 4


@pytest.mark.parametrize("observed", [False, True], ids=["recorded", "recorded and observed"])
async def test_a_finished_call_is_freed_without_the_garbage_collector(
    observed: bool, tmp_path: Path, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A call and its attempt events refer to each other. Once the call has ended (recorded, observers told)
    # it lets them go, so a finished call and its messages are freed at once, not at the next full collection.
    recorder = UsageRecorder(UsageStore(f"sqlite:///{tmp_path / 'usage.db'}"), spool_dir=tmp_path / "spool")
    client = ReliableChatCompletionClient(make_openai_client(), recorder=recorder)
    told: list[str] = []

    class Kinds:  # keeps what it was told, not the calls (a CallLog would keep them alive)
        def call_started(self, call: Call, pipeline: Pipeline) -> None:
            told.append("started")

        def call_ended(self, call: Call, pipeline: Pipeline, error: BaseException | None) -> None:
            told.append(f"ended after {len(call.events)} attempt(s)")

    stop = subscribe_calls(Kinds()) if observed else None
    fake_openai_server.enqueue(FakeReply.text("plain"), FakeReply.text("streamed answer"))
    gc.collect()
    gc.disable()
    try:
        assert (await client.create(HI)).content == "plain"
        assert isinstance([item async for item in client.create_stream(HI)][-1], CreateResult)
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept in gc.garbage, to look at
        gc.collect()
        left_to_the_collector = [found for found in gc.garbage if isinstance(found, Call | AttemptEvent)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        if stop is not None:
            stop()
    recorder.close()
    assert left_to_the_collector == []
    assert recorder.stats["written"] == 2  # both calls were recorded before they let their events go
    if observed:  # the observers still saw every attempt at the end
        assert told == ["started", "ended after 1 attempt(s)"] * 2


def test_an_attempt_interrupted_by_ctrl_c_is_recorded_as_cancelled(tmp_path: Path) -> None:
    # Ctrl-C while a step of the call runs its own code (a loop not run by asyncio.run, a notebook's) raises
    # KeyboardInterrupt through the attempt: a request to stop, as a cancellation is, not a provider's failure.
    store = UsageStore(f"sqlite:///{tmp_path / 'usage.db'}")
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    events: list[AttemptEvent] = []
    inner = ScriptedChatCompletionClient([ScriptedReply.error(KeyboardInterrupt())])
    client = ReliableChatCompletionClient(inner, recorder=recorder, on_attempt=events.append)
    try:
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(client.create(HI))
        assert recorder.flush(10)
        rows = store.events()
    finally:
        recorder.close()
        store.close()
    assert [event.outcome for event in events] == ["cancelled"]
    assert [(row.outcome, row.error_kind) for row in rows] == [("cancelled", "cancelled")]


async def test_a_streamed_chunk_costs_the_wrapper_a_few_calls() -> None:
    # Counted, not timed: the calls the library's own frames make (Python and builtin), per chunk of a stream.
    words = tuple(f"w{number} " for number in range(100))
    inner = ScriptedChatCompletionClient(
        [ScriptedReply.text("w0 ", chunks=words[:1]), ScriptedReply.text("".join(words), chunks=words)]
    )
    client = ReliableChatCompletionClient(inner, retry=None, circuit=None, sanitize=None, track_usage=False)
    library = str(Path(autogen_reliability.__file__).parent)
    scripted = str(Path(autogen_reliability.testing.__file__).parent)
    counts: list[int] = []
    for _ in range(2):
        calls = 0

        def count(frame: Any, event: str, arg: Any) -> None:
            nonlocal calls
            name = frame.f_code.co_filename
            if event in ("call", "c_call") and name.startswith(library) and not name.startswith(scripted):
                calls += 1

        sys.setprofile(count)
        try:
            async for _item in client.create_stream(HI):
                pass
        finally:
            sys.setprofile(None)
        counts.append(calls)
    per_chunk = (counts[1] - counts[0]) / 99
    # The frames that hand the chunk on resumed, the usage slot set and reset around the next item, the item's type
    # and its length: no coroutine per item, no second look at its type.
    assert per_chunk <= 6, per_chunk


async def test_a_plain_attempt_captures_its_usage_without_a_context_manager() -> None:
    # Counted, not timed: a generator-based context manager is half a dozen calls, on every call.
    client = ReliableChatCompletionClient(
        ScriptedChatCompletionClient([ScriptedReply.text("hi")]),
        retry=None,
        circuit=None,
        sanitize=None,
        track_usage=False,
    )
    with contextlib_entered() as entered:
        result = await client.create(HI)
    assert result.content == "hi"
    assert entered == []
