"""Classified retries through the real SDK and AutoGen client, against FakeOpenAIServer.

Every row of the behaviour table runs for plain ``create`` and for ``create_stream``.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import math
import pickle
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

import openai
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken, Image
from autogen_core.models import ChatCompletionClient, CreateResult, ModelInfo, UserMessage
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient
from pydantic import BaseModel

from autogen_reliability import (
    AllClientsFailedError,
    AttemptEvent,
    BudgetPolicy,
    CircuitBreakerPolicy,
    CircuitOpenError,
    ConfigurationError,
    ErrorKind,
    ReliableChatCompletionClient,
    RetriesExhaustedError,
    RetryBudget,
    RetryPolicy,
    ValidationPolicy,
    reliable,
)
from autogen_reliability._pipeline import deadline_timer
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.accounting._events import UsageEvent
from autogen_reliability.retry import (
    RetryEvent,
    classify_error,
    get_on_retry_hooks,
    log_retry,
    set_on_retry_hooks,
    set_testing,
)
from autogen_reliability.retry import _budget as retry_budget
from autogen_reliability.retry import _layer as retry_layer
from autogen_reliability.retry import _policy as retry_policy
from autogen_reliability.retry._classify import RETRYABLE_BY_DEFAULT
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, RecordedRequest

from .conftest import OpenAIClientFactory, contextlib_entered, final_result
from .storage_fixtures import Ledger, ledger_rows

HI = [UserMessage(content="hi", source="user")]
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.05)

Mode = Literal["create", "stream"]
MODES: list[Mode] = ["create", "stream"]


class FakeTime:
    """A clock that moves only when the wrapper sleeps: each wait is recorded, none is slept."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def policy(self, **options: Any) -> RetryPolicy:
        """FAST's backoff (0.01 s, at most 0.05 s) on this clock."""
        return RetryPolicy(**{"initial_delay": 0.01, "max_delay": 0.05, **options}, clock=self.clock, sleep=self.sleep)


@pytest.fixture
def fake_time() -> FakeTime:
    """Time for a retry policy that tests control: waits are recorded in ``slept``, the clock is ``now``."""
    return FakeTime()


async def call(client: ChatCompletionClient, mode: Mode, **kwargs: Any) -> CreateResult:
    if mode == "create":
        return await client.create(HI, **kwargs)
    return await final_result(client.create_stream(HI, **kwargs))


def rows(ledger: Ledger) -> list[UsageEvent]:
    return sorted(ledger_rows(ledger), key=lambda row: row.attempt)


@pytest.fixture
def testing_mode() -> Iterator[None]:
    set_testing(True)
    yield
    set_testing(False)


@pytest.mark.parametrize("mode", MODES)
async def test_429_with_retry_after_is_waited_out(
    mode: Mode, fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.error(429, headers={"Retry-After": "1"}), FakeReply.text("after the wait"))
    waits: list[float] = []
    client = reliable(make_openai_client(), retry=fake_time.policy(), on_retry=lambda event: waits.append(event.wait))
    result = await call(client, mode)
    assert result.content == "after the wait"
    assert fake_openai_server.request_count == 2
    # The server's second, not the backoff's 0.01-0.05 s.
    assert waits == fake_time.slept == [1.0]


@pytest.mark.parametrize("mode", MODES)
async def test_retry_after_ms_is_honoured_in_milliseconds(
    mode: Mode, fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.error(429, headers={"retry-after-ms": "200"}), FakeReply.text("ok"))
    waits: list[float] = []
    client = reliable(make_openai_client(), retry=fake_time.policy(), on_retry=lambda event: waits.append(event.wait))
    await call(client, mode)
    assert waits == [pytest.approx(0.2)]
    assert fake_time.slept == waits
    assert fake_openai_server.request_count == 2


@pytest.mark.parametrize("mode", MODES)
async def test_azures_x_ms_retry_after_ms_is_waited_out(
    mode: Mode, fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.error(429, headers={"x-ms-retry-after-ms": "2500"}), FakeReply.text("ok"))
    client = reliable(make_openai_client(), retry=fake_time.policy())
    await call(client, mode)
    assert fake_time.slept == [2.5]  # what the server asked for, not the 0.01-0.05 s backoff
    assert fake_openai_server.request_count == 2


def gemini_429(retry_delay: str) -> bytes:
    """Gemini's OpenAI-compatible 429: an error object inside a list, the wait in a RetryInfo's ``retryDelay``."""
    return json.dumps(
        [
            {
                "error": {
                    "code": 429,
                    "message": "Resource has been exhausted (e.g. check quota).",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [
                        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
                    ],
                }
            }
        ]
    ).encode()


@pytest.mark.parametrize("mode", MODES)
async def test_a_retry_delay_in_the_error_body_is_waited_out(
    mode: Mode, fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Gemini sends no Retry-After: the wait it asks for is in the body, as a google.rpc.RetryInfo.
    fake_openai_server.enqueue(FakeReply.malformed(gemini_429("37s"), status=429), FakeReply.text("after the wait"))
    events: list[RetryEvent] = []
    client = reliable(make_openai_client(), retry=fake_time.policy(), on_retry=events.append)
    result = await call(client, mode)
    assert result.content == "after the wait"
    assert fake_openai_server.request_count == 2
    # The server's 37 s, not the backoff's 0.01-0.05 s.
    assert [event.wait for event in events] == fake_time.slept == [37.0]


@pytest.mark.parametrize("mode", MODES)
async def test_a_retry_delay_in_an_error_object_is_waited_out_and_a_header_comes_first(
    mode: Mode, fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.250s"}
    body = json.dumps({"error": {"code": 503, "message": "The model is overloaded.", "details": [retry_info]}})
    fake_openai_server.enqueue(
        FakeReply.malformed(body.encode(), status=503),
        FakeReply.malformed(body.encode(), status=503, headers={"Retry-After": "2"}),
        FakeReply.text("ok"),
    )
    client = reliable(make_openai_client(), retry=fake_time.policy())
    await call(client, mode)
    assert fake_time.slept == [1.25, 2.0]
    assert fake_openai_server.request_count == 3


@pytest.mark.parametrize(
    "asking",
    [
        pytest.param(FakeReply.error(429, headers={"Retry-After": "3600"}), id="retry-after"),
        pytest.param(FakeReply.malformed(gemini_429("3600s"), status=429), id="retry-delay-in-body"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
async def test_a_retry_after_beyond_the_limit_fails_at_once(
    mode: Mode,
    asking: FakeReply,
    fake_time: FakeTime,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(asking)
    events: list[RetryEvent] = []
    client = reliable(make_openai_client(), retry=fake_time.policy(), on_retry=events.append)
    with pytest.raises(openai.RateLimitError):
        await call(client, mode)
    assert (events, fake_time.slept) == ([], [])  # no retry, no wait
    assert fake_openai_server.request_count == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_a_server_that_says_x_should_retry_false_is_not_retried(
    mode: Mode, fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The SDK obeys the header; the wrapper switched the SDK's retries off, so it must obey it in their place.
    fake_openai_server.enqueue(FakeReply.error(500, headers={"x-should-retry": "false"}), FakeReply.text("unused"))
    events: list[RetryEvent] = []
    client = reliable(make_openai_client(), retry=fake_time.policy(), on_retry=events.append)
    with pytest.raises(openai.InternalServerError):
        await call(client, mode)
    assert (events, fake_time.slept) == ([], [])  # no retry, no wait
    assert fake_openai_server.request_count == 1


@pytest.mark.parametrize("mode", MODES)
async def test_a_failing_reply_factory_is_asked_once(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The fake server answers a factory that raises with a 500 and x-should-retry: false: a bug in the test,
    # reported once, under its own message, not retried into a RetriesExhaustedError.
    asked: list[RecordedRequest] = []

    def broken(request: RecordedRequest) -> FakeReply:
        asked.append(request)
        raise LookupError("no reply for this prompt")

    fake_openai_server.default = broken
    with pytest.raises(openai.InternalServerError, match="default reply factory raised LookupError"):
        await call(reliable(make_openai_client(), retry=FAST, track_usage=False), mode)
    assert len(asked) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_waits_and_the_deadline_are_on_the_policys_clock(
    mode: Mode, fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Retry-After 4 s against a 10 s deadline: waits end at 4 and 8; a third wait would end at 12.
    fake_openai_server.default = FakeReply.error(503, headers={"Retry-After": "4"})
    events: list[RetryEvent] = []
    policy = fake_time.policy(max_attempts=5, deadline=10)
    client = reliable(make_openai_client(), retry=policy, on_retry=events.append)
    with pytest.raises(RetriesExhaustedError, match=r"the next wait would pass the deadline \(10 s\)") as caught:
        await call(client, mode)
    assert (caught.value.reason, caught.value.attempts) == ("deadline", 3)
    assert fake_time.slept == [4.0, 4.0]
    assert [(event.attempt, event.wait, event.elapsed) for event in events] == [(1, 4.0, 0.0), (2, 4.0, 4.0)]
    assert fake_openai_server.request_count == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("mode", MODES)
async def test_server_errors_are_retried(
    mode: Mode, status: int, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.error(status), FakeReply.error(status), FakeReply.text("third time lucky"))
    result = await call(reliable(make_openai_client(), retry=FAST), mode)
    assert result.content == "third time lucky"
    assert fake_openai_server.request_count == 3


@pytest.mark.parametrize("mode", MODES)
async def test_persistent_500_makes_exactly_max_attempts_requests(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.default = FakeReply.error(500)
    inner = make_openai_client(max_retries=2)  # the SDK would retry too: the wrapper switches that off
    client = reliable(inner, retry=FAST)
    with pytest.raises(RetriesExhaustedError) as caught:
        await call(client, mode)
    assert fake_openai_server.request_count == 3  # not 9
    error = caught.value
    assert (error.attempts, error.reason) == (3, "attempts")
    assert error.kinds == (ErrorKind.SERVER_ERROR,) * 3
    assert isinstance(error.__cause__, openai.InternalServerError)
    assert inner.dump_component().config["max_retries"] == 0


@pytest.mark.parametrize("mode", MODES)
async def test_read_timeout_is_retried(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.text("too slow", delay=1.0), FakeReply.text("in time"))
    result = await call(reliable(make_openai_client(timeout=0.3), retry=FAST), mode)
    assert result.content == "in time"
    assert fake_openai_server.request_count == 2


@pytest.mark.parametrize("mode", MODES)
async def test_connection_reset_is_retried(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.reset(), FakeReply.text("reconnected"))
    result = await call(reliable(make_openai_client(), retry=FAST), mode)
    assert result.content == "reconnected"
    assert fake_openai_server.request_count == 2


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("failure", ["refused", "tls"])
async def test_a_provider_that_cannot_be_reached_is_named_with_the_reason_in_the_error_rows_and_log(
    mode: Mode,
    failure: str,
    fake_openai_server: FakeOpenAIServer,
    ledger: Ledger,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The SDK says "Connection error." whatever happened; where it went and why are only in its chained errors.
    if failure == "refused":
        where, why = f"http://127.0.0.1:{closed_port()}", "ConnectionRefusedError: "
    else:  # https:// to a server that speaks plain HTTP
        where, why = fake_openai_server.root_url.replace("http://", "https://"), "SSLError: [SSL: WRONG_VERSION_NUMBER]"
    # Credentials in the URL are not part of where it went.
    base_url = where.replace("://", "://user:hunter2-secret@") + "/v1?api-key=query-secret"
    client = reliable(make_openai_client(base_url=base_url), retry=FAST, recorder=ledger[1])
    with caplog.at_level(logging.WARNING, logger="autogen_reliability"), pytest.raises(RetriesExhaustedError) as caught:
        await call(client, mode)
    said = f"Connection error. ({where}: {why}"
    assert caught.value.kinds == (ErrorKind.CONNECTION,) * 3
    assert f"last error: {said}" in str(caught.value)
    assert [row.outcome for row in rows(ledger)] == ["error"] * 3
    assert all((row.error_message or "").startswith(said) for row in rows(ledger))
    logged = [record.getMessage() for record in caplog.records if record.name == "autogen_reliability"]
    assert len(logged) == 2
    assert all(said in line for line in logged)
    for text in [str(caught.value), *logged, *(row.error_message or "" for row in rows(ledger))]:
        assert "secret" not in text
    assert fake_openai_server.request_count == 0


NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>"
    b"\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
ENVOY_503 = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (
            FakeReply.malformed(NGINX_502, status=502, content_type="text/html"),
            "Error code: 502 (text/html: 502 Bad Gateway)",
        ),
        (
            FakeReply.malformed(ENVOY_503, status=503, content_type="text/plain"),
            f"Error code: 503 (text/plain: {ENVOY_503.decode()})",
        ),
    ],
    ids=["nginx-html", "envoy-text"],
)
async def test_a_gateways_error_page_is_summed_up_in_the_error_and_rows(
    mode: Mode,
    reply: FakeReply,
    said: str,
    fake_openai_server: FakeOpenAIServer,
    ledger: Ledger,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The SDK says only "Error code: 502" of a body that is not JSON, and keeps the page as the error's body.
    fake_openai_server.default = reply
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    with pytest.raises(RetriesExhaustedError) as caught:
        await call(client, mode)
    assert fake_openai_server.request_count == 3
    assert str(caught.value).endswith(f"last error: {said}")
    assert [row.error_message for row in rows(ledger)] == [said] * 3


GEMINI_429 = (
    b'[{"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": '
    b'"RESOURCE_EXHAUSTED"}}]'
)


@pytest.mark.parametrize("mode", MODES)
async def test_an_error_object_inside_a_list_is_quoted_in_the_error_and_rows(
    mode: Mode, fake_openai_server: FakeOpenAIServer, ledger: Ledger, make_openai_client: OpenAIClientFactory
) -> None:
    # Gemini's OpenAI-compatible endpoint: the SDK quotes the message of an error object, not of one in a list.
    fake_openai_server.default = FakeReply.malformed(GEMINI_429, status=429)
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    with pytest.raises(RetriesExhaustedError) as caught:
        await call(client, mode)
    said = "Error code: 429 (application/json: Resource has been exhausted (e.g. check quota).)"
    assert fake_openai_server.request_count == 3
    assert str(caught.value).endswith(f"last error: {said}")
    assert [row.error_message for row in rows(ledger)] == [said] * 3


async def test_stream_dropped_before_its_first_chunk_is_retried(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(
        FakeReply.text("never seen", disconnect_after_chunks=0), FakeReply.text("complete answer")
    )
    items = [item async for item in reliable(make_openai_client(), retry=FAST).create_stream(HI)]
    assert "".join(item for item in items if isinstance(item, str)) == "complete answer"
    assert fake_openai_server.request_count == 2


@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_error_after_the_first_streamed_chunk_is_not_retried(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(
        FakeReply.text("Hello from a failing stream", error_after_chunks=2), FakeReply.text("unused")
    )
    client = reliable(make_openai_client(), retry=FAST)
    received: list[object] = []

    async def consume() -> None:
        async for item in client.create_stream(HI):
            received.append(item)

    with pytest.raises(openai.APIError):
        await consume()
    assert fake_openai_server.request_count == 1
    assert "".join(str(item) for item in received) == "Hello from"
    assert fake_openai_server.pending == 1


class Ticket(BaseModel):
    id: int
    note: str


# What holds a stream back until its final result: validation, and the sanitiser when JSON was asked for.
# Each: the wrapper's options, create_stream's arguments.
BUFFERED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "validated": ({"validation": ValidationPolicy(schema=Ticket)}, {}),
    "sanitized-json": ({}, {"json_output": True}),
}


async def read_all(client: ChatCompletionClient, buffered: str) -> list[object]:
    return [item async for item in client.create_stream(HI, **BUFFERED[buffered][1])]


@pytest.mark.parametrize("buffered", BUFFERED)
async def test_a_buffered_stream_is_retried_after_an_error_mid_stream(
    buffered: str,
    fake_openai_server: FakeOpenAIServer,
    ledger: tuple[UsageStore, UsageRecorder],
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The consumer has nothing yet when the provider fails half-way: as for create(), the call is retried.
    fake_openai_server.enqueue(
        FakeReply.text('{"id": 1, "note": "cut short here"}', error_after_chunks=2),
        FakeReply.text('{"id": 2, "note": "complete"}'),
    )
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1], **BUFFERED[buffered][0])
    items = await read_all(client, buffered)
    # The failed attempt's chunks are dropped, never joined to the retry's.
    assert [item for item in items if isinstance(item, str)] == ['{"id": 2, "note": "complete"}']
    assert fake_openai_server.request_count == 2
    assert [row.outcome for row in rows(ledger)] == ["error", "ok"]


@pytest.mark.parametrize("retry", [None, RetryPolicy(max_attempts=1)], ids=["no-retry", "retries-spent"])
@pytest.mark.parametrize("buffered", BUFFERED)
async def test_a_buffered_stream_goes_to_the_fallback_after_an_error_mid_stream(
    buffered: str,
    retry: RetryPolicy | None,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(
        FakeReply.text('{"id": 1, "note": "cut short here"}', error_after_chunks=2),
        FakeReply.text('{"id": 2, "note": "from the fallback"}'),
    )
    fallback = make_openai_client(model="gpt-4.1")
    client = reliable(make_openai_client(), retry=retry, fallbacks=[fallback], **BUFFERED[buffered][0])
    items = await read_all(client, buffered)
    assert [item for item in items if isinstance(item, str)] == ['{"id": 2, "note": "from the fallback"}']
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4o-mini", "gpt-4.1"]


@pytest.mark.parametrize("buffered", BUFFERED)
async def test_the_deadline_bounds_a_buffered_stream_until_its_first_chunk_is_handed_on(
    buffered: str,
    fake_openai_server: FakeOpenAIServer,
    ledger: tuple[UsageStore, UsageRecorder],
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The provider's first chunk comes at once, the rest over seconds: the consumer would wait for all of it.
    fake_openai_server.enqueue(FakeReply.text('{"id": 1, "note": "one slow word at a time"}', chunk_delay=0.4))
    policy = RetryPolicy(initial_delay=0, deadline=1)
    client = reliable(make_openai_client(), retry=policy, recorder=ledger[1], **BUFFERED[buffered][0])
    async with asyncio.timeout(30):  # a guard against hanging, should the deadline not hold
        with pytest.raises(RetriesExhaustedError, match=r"deadline \(1 s\)") as caught:
            await read_all(client, buffered)
    assert (caught.value.reason, caught.value.kinds) == ("deadline", (ErrorKind.TIMEOUT,))
    assert [(row.outcome, row.error_kind) for row in rows(ledger)] == [("error", "timeout")]


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
    ],
)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_client_errors_are_not_retried_and_raised_unchanged(
    mode: Mode,
    status: int,
    error_class: type[openai.APIStatusError],
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(FakeReply.error(status), FakeReply.text("unused"))
    with pytest.raises(error_class) as caught:
        await call(reliable(make_openai_client(), retry=FAST), mode)
    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert fake_openai_server.request_count == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare replies show nothing retried, nothing fallen back to
async def test_out_of_quota_named_only_by_its_type_is_neither_retried_nor_sent_to_a_fallback(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # OpenAI has answered an exhausted quota with the billing word in `type` and a null `code`.
    out_of_quota = FakeReply(
        kind="error",
        status=429,
        error_message="You exceeded your current quota, please check your plan and billing details.",
        error_type="insufficient_quota",
        error_code=None,
    )
    fake_openai_server.enqueue(out_of_quota, FakeReply.text("unused"), FakeReply.text("unused"))
    client = reliable(make_openai_client(), retry=FAST, fallbacks=[make_openai_client(model="gpt-4.1")])
    with pytest.raises(openai.RateLimitError):
        await call(client, mode)
    assert fake_openai_server.request_count == 1


@pytest.mark.parametrize("mode", MODES)
async def test_context_length_is_not_retried_but_goes_to_a_fallback(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    too_long = FakeReply.error(400, message="maximum context length is 128000 tokens", code="context_length_exceeded")
    fake_openai_server.enqueue(too_long)
    with pytest.raises(openai.BadRequestError):
        await call(reliable(make_openai_client(), retry=FAST), mode)
    assert fake_openai_server.request_count == 1

    fake_openai_server.reset()
    fake_openai_server.enqueue(too_long, FakeReply.text("answered by the long-context model"))
    events: list[AttemptEvent] = []
    primary = make_openai_client()
    fallback = make_openai_client(model="gpt-4.1")
    client = reliable(primary, retry=FAST, fallbacks=[fallback], on_attempt=events.append)
    result = await call(client, mode)
    assert result.content == "answered by the long-context model"
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4o-mini", "gpt-4.1"]
    assert [(event.client, event.attempt, event.outcome) for event in events] == [
        (primary, 1, "error"),
        (fallback, 2, "ok"),
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_open_circuit_sends_no_request(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.default = FakeReply.error(503)
    circuit = CircuitBreakerPolicy(window=4, minimum_calls=4, failure_rate=0.5, open_for=60)
    client = reliable(make_openai_client(), retry=RetryPolicy(max_attempts=2, initial_delay=0), circuit=circuit)
    for _ in range(2):
        with pytest.raises(RetriesExhaustedError):
            await call(client, mode)
    assert fake_openai_server.request_count == 4
    with pytest.raises(CircuitOpenError) as caught:
        await call(client, mode)
    assert fake_openai_server.request_count == 4
    assert caught.value.retry_in > 50
    assert "OpenAIChatCompletionClient(gpt-4o-mini)" in str(caught.value)
    # Two calls were made: the window counts their four attempts, and says so.
    assert ": 4 of the last 4 attempts failed; " in str(caught.value)


@pytest.mark.parametrize("mode", MODES)
async def test_open_circuit_goes_to_the_fallback(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    circuit = CircuitBreakerPolicy(window=2, minimum_calls=2, open_for=60)
    primary = make_openai_client()
    # Open the primary's circuit: its breaker is shared by every wrapper of it.
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.error(500))
    with pytest.raises(RetriesExhaustedError):
        await call(reliable(primary, retry=RetryPolicy(max_attempts=2, initial_delay=0), circuit=circuit), mode)
    fake_openai_server.reset()
    fake_openai_server.enqueue(FakeReply.text("from the fallback"))
    client = reliable(primary, circuit=circuit, fallbacks=[make_openai_client(model="gpt-4.1")])
    result = await call(client, mode)
    assert result.content == "from the fallback"
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4.1"]


async def test_when_every_client_fails_each_error_is_kept(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.default = FakeReply.error(503)
    client = reliable(
        make_openai_client(),
        retry=RetryPolicy(max_attempts=2, initial_delay=0),
        fallbacks=[make_openai_client(model="gpt-4.1"), make_openai_client(model="o3")],
    )
    with pytest.raises(AllClientsFailedError) as caught:
        await client.create(HI)
    assert fake_openai_server.request_count == 6
    errors = caught.value.exceptions
    assert len(errors) == 3
    assert all(isinstance(error, RetriesExhaustedError) for error in errors)
    assert all(isinstance(error.__cause__, openai.InternalServerError) for error in errors)


def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


PIXEL = Image.from_base64(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
TEXT_ONLY = ModelInfo(vision=False, function_calling=False, json_output=False, structured_output=False, family="x")
# What the call needs of a model that AutoGen's clients check before sending: the model_info key that says so.
NEEDS: dict[str, tuple[dict[str, Any], str]] = {
    "tools": ({"messages": HI, "tools": [FunctionTool(add, description="Adds.")]}, "function_calling"),
    "image": ({"messages": [UserMessage(content=["What is this?", PIXEL], source="user")]}, "vision"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("need", list(NEEDS))
async def test_a_fallback_whose_model_info_cannot_take_the_call_is_passed_over_with_the_reason(
    mode: Mode, need: str, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The wrapper's model_info is its primary's, so an agent offers tools and images to it. A fallback whose
    # model_info says it takes neither raised AutoGen's "Model does not support function calling" (or vision)
    # ValueError when the primary failed: the primary's error was lost, and a next fallback that could answer
    # was never asked.
    arguments, key = NEEDS[need]
    messages = arguments["messages"]
    kwargs = {name: value for name, value in arguments.items() if name != "messages"}
    local = make_openai_client(model="llama3.1:8b", model_info=TEXT_ONLY)
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.text("from gpt-4.1"))
    client = reliable(make_openai_client(), retry=None, fallbacks=[local, make_openai_client(model="gpt-4.1")])

    async def ask(client: ChatCompletionClient) -> CreateResult:
        if mode == "create":
            return await client.create(messages, **kwargs)
        return await final_result(client.create_stream(messages, **kwargs))

    assert (await ask(client)).content == "from gpt-4.1"
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4o-mini", "gpt-4.1"]
    # With no other fallback, the call fails with the primary's error and why the fallback was not asked.
    fake_openai_server.reset()
    fake_openai_server.enqueue(FakeReply.error(500))
    with pytest.raises(AllClientsFailedError) as caught:
        await ask(reliable(make_openai_client(), retry=None, fallbacks=[local]))
    assert fake_openai_server.request_count == 1
    primary_error, refused = caught.value.exceptions
    assert isinstance(primary_error, openai.InternalServerError)
    assert isinstance(refused, ConfigurationError)
    assert f"its model_info says {key}=False" in str(refused)
    assert "OpenAIChatCompletionClient(llama3.1:8b) was not asked" in str(refused)


async def test_when_every_client_fails_with_a_provider_error_the_error_still_pickles(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Every client over its context length (never retried, sent to the next client): the group holds the
    # provider's errors themselves. The openai SDK's take keyword arguments pickle cannot give, so a process
    # pool's worker that raised the group broke the pool: pickle.loads failed with the SDK's TypeError.
    fake_openai_server.default = FakeReply.error(400, "maximum context length exceeded", code="context_length_exceeded")
    client = reliable(make_openai_client(), fallbacks=[make_openai_client(model="gpt-4.1")])
    with pytest.raises(AllClientsFailedError) as caught:
        await client.create(HI)
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is AllClientsFailedError
    assert str(again) == str(caught.value)
    assert [type(error) for error in again.exceptions] == [openai.BadRequestError] * 2
    first = again.exceptions[0]
    assert isinstance(first, openai.BadRequestError)
    assert (first.status_code, first.code) == (400, "context_length_exceeded")
    assert str(first) == str(caught.value.exceptions[0])
    assert first.response.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("mode", MODES)
async def test_a_wrapped_client_that_gave_up_is_not_retried_by_the_wrapper_around_it(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A wrapped client (nested, or among the fallbacks) retries under its own policy; its RetriesExhaustedError
    # says it gave up. Retried by the outer wrapper, each of its attempts became max_attempts of its own: 3 x 2.
    fake_openai_server.default = FakeReply.error(503)
    inner_policy = RetryPolicy(max_attempts=2, initial_delay=0)
    nested = ReliableChatCompletionClient(reliable(make_openai_client(), retry=inner_policy), retry=FAST)
    with pytest.raises(RetriesExhaustedError) as caught:
        await call(nested, mode)
    assert (caught.value.attempts, fake_openai_server.request_count) == (2, 2)
    fake_openai_server.reset()
    fake_openai_server.default = FakeReply.error(503)
    wrapped_fallback = reliable(make_openai_client(model="gpt-4.1"), retry=inner_policy)
    client = reliable(make_openai_client(), retry=FAST, fallbacks=[wrapped_fallback])
    with pytest.raises(AllClientsFailedError) as failed:
        await call(client, mode)
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4o-mini"] * 3 + ["gpt-4.1"] * 2
    errors = failed.value.exceptions
    assert all(isinstance(error, RetriesExhaustedError) for error in errors)
    assert [getattr(error, "attempts", None) for error in errors] == [3, 2]


async def test_errors_about_a_wrapped_fallback_name_its_model_not_its_family(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A wrapped client was described by its model_info's family, as AutoGen groups models: a gpt-4.1-mini
    # fallback was "ReliableChatCompletionClient(gpt-41)" in AllClientsFailedError and in the CircuitOpenError
    # (and the circuit_state gauge) of the breaker guarding it, a model no one asked for.
    fake_openai_server.default = FakeReply.error(503)
    circuit = CircuitBreakerPolicy(window=2, minimum_calls=2)
    wrapped = reliable(make_openai_client(model="gpt-4.1-mini"), retry=None, circuit=None)
    client = reliable(make_openai_client(model="gpt-4o"), retry=None, circuit=circuit, fallbacks=[wrapped])
    for _ in range(2):
        with pytest.raises(AllClientsFailedError) as failed:
            await client.create(HI)
        assert str(failed.value).startswith(
            "the primary client and every fallback (ReliableChatCompletionClient(gpt-4.1-mini)) failed"
        )
    with pytest.raises(AllClientsFailedError) as failed:
        await client.create(HI)
    opened = [str(error) for error in failed.value.exceptions]
    assert opened[0].startswith("circuit open for OpenAIChatCompletionClient(gpt-4o): ")
    assert opened[1].startswith("circuit open for ReliableChatCompletionClient(gpt-4.1-mini): ")


@pytest.mark.parametrize("mode", MODES)
async def test_a_wrapped_client_whose_fallbacks_all_failed_goes_to_the_next_fallback(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Its AllClientsFailedError says it and each of its fallbacks gave up: the outer wrapper asks its next client.
    fake_openai_server.default = FakeReply.error(503)
    once = RetryPolicy(max_attempts=1)
    wrapped = reliable(make_openai_client(model="gpt-4.1"), retry=once, fallbacks=[make_openai_client(model="o3")])
    client = reliable(make_openai_client(), retry=once, fallbacks=[wrapped, make_openai_client(model="gpt-4o")])
    fake_openai_server.enqueue(*[FakeReply.error(503)] * 3, FakeReply.text("from the last fallback"))
    result = await call(client, mode)
    assert result.content == "from the last fallback"
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4o-mini", "gpt-4.1", "o3", "gpt-4o"]
    fake_openai_server.reset()
    fake_openai_server.default = FakeReply.error(503)
    nested = ReliableChatCompletionClient(wrapped, retry=once, fallbacks=[make_openai_client(model="gpt-4o")])
    with pytest.raises(AllClientsFailedError) as caught:
        await call(nested, mode)
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4.1", "o3", "gpt-4o"]
    inner_failure, last = caught.value.exceptions
    assert isinstance(inner_failure, AllClientsFailedError)
    assert isinstance(last, RetriesExhaustedError)


@pytest.mark.parametrize("mode", MODES)
async def test_an_open_circuit_is_not_retried_even_with_unknown_in_retry_on(
    mode: Mode, fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A CircuitOpenError is the breaker giving up, as a RetriesExhaustedError is the retries: classified UNKNOWN,
    # it was retried by a policy that retries UNKNOWN, each retry a wait and a retry-budget token for no request,
    # and the call ended in RetriesExhaustedError counting attempts that were never sent.
    fake_openai_server.default = FakeReply.error(503)
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, capacity=5)
    policy = fake_time.policy(max_attempts=4, retry_on=RETRYABLE_BY_DEFAULT | {ErrorKind.UNKNOWN}, budget=budget)
    circuit = CircuitBreakerPolicy(window=2, minimum_calls=2, failure_rate=1.0, open_for=60, clock=fake_time.clock)
    events: list[RetryEvent] = []
    client = reliable(make_openai_client(), retry=policy, circuit=circuit, on_retry=events.append, track_usage=False)
    with pytest.raises(CircuitOpenError):  # two 503s open the circuit; the third attempt meets it
        await call(client, mode)
    assert fake_openai_server.request_count == 2
    assert [event.error_kind for event in events] == [ErrorKind.OVERLOADED] * 2
    assert len(fake_time.slept) == 2
    events.clear()
    with pytest.raises(CircuitOpenError):  # open from the start: fails at once
        await call(client, mode)
    assert (events, len(fake_time.slept), fake_openai_server.request_count) == ([], 2, 2)
    state = retry_budget.budget_for(client.inner, budget, fake_time.clock)
    assert state.tokens == 3  # the two retries that were sent, no more


@pytest.mark.parametrize("mode", MODES)
async def test_a_wrapped_client_whose_fallbacks_all_failed_is_not_retried_with_unknown_in_retry_on(
    mode: Mode, fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Its AllClientsFailedError says it and its fallbacks gave up: retrying it ran the whole inner chain again.
    fake_openai_server.default = FakeReply.error(503)
    once = RetryPolicy(max_attempts=1)
    wrapped = reliable(make_openai_client(), retry=once, fallbacks=[make_openai_client(model="o3")])
    policy = fake_time.policy(max_attempts=3, retry_on=RETRYABLE_BY_DEFAULT | {ErrorKind.UNKNOWN})
    events: list[RetryEvent] = []
    nested = ReliableChatCompletionClient(wrapped, retry=policy, on_retry=events.append, track_usage=False)
    with pytest.raises(AllClientsFailedError):
        await call(nested, mode)
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4o-mini", "o3"]
    assert (events, fake_time.slept) == ([], [])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "retry",
    [
        pytest.param(None, id="retry-off"),
        pytest.param(RetryPolicy(retry_on=frozenset()), id="retry-on-nothing"),
        pytest.param(RetryPolicy(retry_on=frozenset({ErrorKind.RATE_LIMIT})), id="retry-on-rate-limits-only"),
    ],
)
async def test_a_transient_error_the_policy_does_not_retry_goes_to_the_fallback(
    mode: Mode, retry: RetryPolicy | None, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A provider that is down, on a client told not to retry that: straight to the next client. Only retry=None did;
    # a retry_on without OVERLOADED raised the 503 and never asked the fallback.
    fake_openai_server.enqueue(FakeReply.error(503), FakeReply.text("from the fallback"))
    client = reliable(make_openai_client(), retry=retry, fallbacks=[make_openai_client(model="gpt-4.1")])
    result = await call(client, mode)
    assert result.content == "from the fallback"
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4o-mini", "gpt-4.1"]


async def test_a_bad_request_does_not_go_to_a_fallback(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.error(400))
    client = reliable(make_openai_client(), fallbacks=[make_openai_client(model="gpt-4.1")])
    with pytest.raises(openai.BadRequestError):
        await client.create(HI)
    assert fake_openai_server.request_count == 1


# A call's extra_create_args={"model": ...} asks the primary for another model of its provider. The fallback
# was made on purpose for a model of its own (another deployment, another provider): asked for the primary's
# override, one of another provider answers 404, one of the same provider answers as the wrong model.
OVERRIDE = {"model": "gpt-4o", "temperature": 0.25, "seed": 7, "user": "u-1"}
PASSED_ON = {"temperature": 0.25, "seed": 7, "user": "u-1"}


def passed_on(request: RecordedRequest) -> dict[str, Any]:
    assert request.body is not None
    return {name: request.body.get(name) for name in PASSED_ON}


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("mode", MODES)
async def test_a_fallback_is_asked_for_its_own_model_not_the_one_the_call_asks_the_primary_for(
    mode: Mode, fake_openai_server: FakeOpenAIServer, ledger: Ledger, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.text("from the fallback"))
    client = reliable(
        make_openai_client(), retry=None, fallbacks=[make_openai_client(model="gpt-4.1")], recorder=ledger[1]
    )
    arguments = dict(OVERRIDE)
    result = await call(client, mode, extra_create_args=arguments)
    assert result.content == "from the fallback"
    primary, fallback = fake_openai_server.requests
    assert (primary.model, fallback.model) == ("gpt-4o", "gpt-4.1")
    # Every other argument of the call is the fallback's too.
    assert passed_on(primary) == passed_on(fallback) == PASSED_ON
    assert arguments == OVERRIDE  # the caller's mapping is left as it was
    assert [(row.model, row.outcome) for row in rows(ledger)] == [("gpt-4o", "error"), ("gpt-4.1", "ok")]


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")
@pytest.mark.parametrize("mode", MODES)
async def test_a_wrapped_fallback_and_its_own_fallbacks_are_asked_for_their_own_models(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The override goes to the primary through a wrapper around it, and to no fallback at any depth.
    once = RetryPolicy(max_attempts=1)
    wrapped_primary = reliable(make_openai_client(), retry=once, fallbacks=[make_openai_client(model="o3")])
    wrapped_fallback = reliable(
        make_openai_client(model="gpt-4.1"), retry=once, fallbacks=[make_openai_client(model="o4-mini")]
    )
    client = ReliableChatCompletionClient(wrapped_primary, retry=None, fallbacks=[wrapped_fallback], track_usage=False)
    fake_openai_server.enqueue(*[FakeReply.error(503)] * 3, FakeReply.text("from the last fallback"))
    result = await call(client, mode, extra_create_args=dict(OVERRIDE))
    assert result.content == "from the last fallback"
    requests = fake_openai_server.requests
    assert [request.model for request in requests] == ["gpt-4o", "o3", "gpt-4.1", "o4-mini"]
    assert all(passed_on(request) == PASSED_ON for request in requests)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_cancellation_propagates_at_once_without_retry(
    mode: Mode, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    waiting = asyncio.Event()
    slept: list[float] = []

    async def sleep_until_cancelled(seconds: float) -> None:
        slept.append(seconds)
        waiting.set()
        await asyncio.Event().wait()  # only a cancellation ends this wait

    fake_openai_server.enqueue(FakeReply.error(429, headers={"Retry-After": "5"}), FakeReply.text("unused"))
    token = CancellationToken()
    client = reliable(make_openai_client(), retry=RetryPolicy(sleep=sleep_until_cancelled))
    task = asyncio.ensure_future(call(client, mode, cancellation_token=token))
    async with asyncio.timeout(30):  # a guard against hanging, not a measurement
        await waiting.wait()  # the 429 came back; the wrapper is waiting out Retry-After
    assert slept == [5.0]
    token.cancel()
    done, _ = await asyncio.wait({task}, timeout=30)
    if not done:
        task.cancel()
        pytest.fail("cancelling the token did not end the wait")
    with pytest.raises(asyncio.CancelledError):
        task.result()
    assert fake_openai_server.request_count == 1


async def test_cancelling_the_task_is_not_retried(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    arrived, answer = threading.Event(), threading.Event()

    def slow(request: RecordedRequest) -> FakeReply:
        arrived.set()
        answer.wait(60)
        return FakeReply.text("slow")

    fake_openai_server.default = slow
    task = asyncio.ensure_future(reliable(make_openai_client()).create(HI))
    try:
        assert await asyncio.to_thread(arrived.wait, 30), "the request never reached the server"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(30):  # a guard: a retry would wait for an answer that comes only below
                await task
    finally:
        answer.set()
    assert fake_openai_server.request_count == 1


async def test_retries_are_reported_to_hooks_and_logged(
    fake_time: FakeTime,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_openai_server.enqueue(FakeReply.error(503, headers={"retry-after-ms": "10"}), FakeReply.text("ok"))
    events: list[RetryEvent] = []
    fake_time.now = 100.0
    client = reliable(make_openai_client(), retry=fake_time.policy(), on_retry=events.append, agent="writer")
    with caplog.at_level(logging.WARNING, logger="autogen_reliability"):
        await client.create(HI)
    (event,) = events
    assert (event.attempt, event.error_kind) == (1, ErrorKind.OVERLOADED)
    assert isinstance(event.error, openai.InternalServerError)
    assert 0.01 <= event.wait <= 0.05  # at least the server's 10 ms, at most the backoff's cap
    assert fake_time.slept == [event.wait]
    assert event.elapsed == 0.0  # on the policy's clock, which the failed attempt did not move
    (record,) = [record for record in caplog.records if record.name == "autogen_reliability"]
    assert record.getMessage().startswith(
        f"retrying model call {event.call.call_id} in {event.wait:.2f} s after attempt 1 failed (overloaded): "
    )
    assert record.levelno == logging.WARNING
    assert record.__dict__["error_kind"] == "overloaded"
    assert record.__dict__["attempt"] == 1
    assert record.__dict__["agent"] == "writer"
    assert record.__dict__["call_id"] == str(event.call.call_id)


async def test_a_provider_message_cannot_forge_a_second_log_line_or_drive_the_terminal(
    fake_time: FakeTime,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = "boom\nCRITICAL:autogen_reliability:budget exceeded\r\x1b[2J\x9b1m\u202eok"
    fake_openai_server.enqueue(FakeReply.error(500, message), FakeReply.text("ok"))
    with caplog.at_level(logging.WARNING, logger="autogen_reliability"):
        await reliable(make_openai_client(), retry=fake_time.policy()).create(HI)
    (record,) = [record for record in caplog.records if record.name == "autogen_reliability"]
    line = record.getMessage()
    assert line.isprintable()  # one line, no escape sequence or bidi override
    assert line.endswith(
        "failed (server_error): Error code: 500 - "
        "boom\\nCRITICAL:autogen_reliability:budget exceeded\\r\\x1b[2J\\x9b1m\\u202eok"
    )


async def test_the_text_of_retries_exhausted_shows_the_control_characters_of_the_last_error_as_escapes(
    fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # AutoGen's runtime logs a failed agent's error, and a terminal shows it: an OSC 52 in it wrote the clipboard.
    fake_openai_server.default = FakeReply.error(500, "busy\nCRITICAL:root:forged\x1b]52;c;cHduZWQ=\x07\u202e")
    with pytest.raises(RetriesExhaustedError) as caught:
        await reliable(make_openai_client(), retry=fake_time.policy(max_attempts=2)).create(HI)
    assert str(caught.value).endswith(
        "; last error: Error code: 500 - busy\\nCRITICAL:root:forged\\x1b]52;c;cHduZWQ=\\x07\\u202e"
    )


async def test_deadline_stops_retrying(
    fake_time: FakeTime, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.default = FakeReply.error(429, headers={"Retry-After": "2"})
    policy = fake_time.policy(max_attempts=5, deadline=timedelta(seconds=1))
    client = reliable(make_openai_client(), retry=policy)
    with pytest.raises(RetriesExhaustedError, match=r"the next wait would pass the deadline \(1 s\)") as caught:
        await client.create(HI)
    assert caught.value.reason == "deadline"
    assert fake_time.slept == []  # it did not sleep into the deadline
    assert fake_openai_server.request_count == 1


@pytest.mark.parametrize("failures", [0, 1], ids=["first-attempt", "a-retry"])
@pytest.mark.parametrize("mode", MODES)
async def test_the_deadline_cancels_an_attempt_in_flight(
    mode: Mode,
    failures: int,
    fake_openai_server: FakeOpenAIServer,
    ledger: tuple[UsageStore, UsageRecorder],
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The last request is answered only once the call is over: only the deadline can end the call.
    answer = threading.Event()

    def too_late(request: RecordedRequest) -> FakeReply:
        answer.wait(60)
        return FakeReply.text("too late")

    fake_openai_server.enqueue(*[FakeReply.error(500)] * failures)
    fake_openai_server.default = too_late
    # A deadline of 3 s, not 1: on a loaded machine the first request of a new client once took more than 1 s
    # to reach the server, and the deadline then cancelled an attempt that had sent nothing.
    client = reliable(make_openai_client(), retry=RetryPolicy(initial_delay=0, deadline=3), recorder=ledger[1])
    try:
        async with asyncio.timeout(30):  # a guard against hanging, should the deadline not hold
            with pytest.raises(RetriesExhaustedError, match=r"deadline \(3 s\)") as caught:
                await call(client, mode)
    finally:
        answer.set()
    assert (caught.value.reason, caught.value.attempts) == ("deadline", failures + 1)
    # The cut attempt timed out, as the SDK's own timeout would say: the error, its kind and its row agree.
    assert caught.value.kinds == (ErrorKind.SERVER_ERROR,) * failures + (ErrorKind.TIMEOUT,)
    assert classify_error(caught.value) is ErrorKind.TIMEOUT
    assert fake_openai_server.request_count == failures + 1
    assert [(row.outcome, row.error_kind) for row in rows(ledger)] == [("error", "server_error")] * failures + [
        ("error", "timeout")
    ]
    cut = rows(ledger)[-1]
    assert (cut.tokens_estimated, cut.prompt_tokens > 0) == (True, True)  # the provider had the request


@pytest.mark.parametrize("mode", [*MODES, *BUFFERED])
async def test_a_primary_that_never_answers_goes_to_the_fallback_once_its_deadline_passed(
    mode: str,
    fake_openai_server: FakeOpenAIServer,
    ledger: tuple[UsageStore, UsageRecorder],
    make_openai_client: OpenAIClientFactory,
) -> None:
    # A hung provider is what a fallback is for: the deadline ends the primary's attempt, a timeout, and the
    # fallback answers the call.
    def by_model(request: RecordedRequest) -> FakeReply:
        if request.model == "gpt-4o-mini":
            return FakeReply.text("too late", delay=math.inf)
        return FakeReply.text('{"id": 2, "note": "from the fallback"}')

    fake_openai_server.default = by_model
    options = BUFFERED[mode][0] if mode in BUFFERED else {}
    client = reliable(
        make_openai_client(),
        retry=RetryPolicy(initial_delay=0, deadline=1),
        fallbacks=[make_openai_client(model="gpt-4.1")],
        recorder=ledger[1],
        **options,
    )
    async with asyncio.timeout(30):  # a guard against hanging, should the deadline not hold
        if mode in BUFFERED:
            items = await read_all(client, mode)
            content = "".join(item for item in items if isinstance(item, str))
        else:
            content = str((await call(client, "stream" if mode == "stream" else "create")).content)
    assert content == '{"id": 2, "note": "from the fallback"}'
    assert [(row.model, row.outcome, row.error_kind) for row in rows(ledger)] == [
        ("gpt-4o-mini", "error", "timeout"),
        ("gpt-4.1", "ok", None),
    ]


async def test_an_attempt_its_caller_cancelled_stays_cancelled(
    fake_openai_server: FakeOpenAIServer,
    ledger: tuple[UsageStore, UsageRecorder],
    make_openai_client: OpenAIClientFactory,
) -> None:
    # Only the deadline's own cut is a timeout: the caller's cancel says nothing of the provider.
    fake_openai_server.default = lambda request: FakeReply.text("too late", delay=math.inf)
    client = reliable(make_openai_client(), retry=RetryPolicy(deadline=60), recorder=ledger[1])
    task = asyncio.ensure_future(client.create(HI))
    await fake_openai_server.wait_for_requests_async(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(row.outcome, row.error_kind) for row in rows(ledger)] == [("cancelled", "cancelled")]


async def test_test_mode_makes_waits_zero(
    testing_mode: None,
    fake_time: FakeTime,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"Retry-After": "5"}), FakeReply.error(500), FakeReply.text("ok")
    )
    events: list[RetryEvent] = []
    # The default backoff (0.5 s, doubled) and the server's 5 s, on a clock and a sleep the test watches.
    policy = RetryPolicy(clock=fake_time.clock, sleep=fake_time.sleep)
    assert (await reliable(make_openai_client(), retry=policy, on_retry=events.append).create(HI)).content == "ok"
    assert [event.wait for event in events] == [0.0, 0.0]
    assert fake_time.slept == []
    assert fake_openai_server.request_count == 3


async def test_retry_budget_is_shared_by_the_wrappers_of_one_client(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Five agents on one provider during an outage: retries are capped by one budget, not multiplied by five.
    fake_openai_server.default = FakeReply.error(503)
    shared = make_openai_client()
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, capacity=3)
    policy = RetryPolicy(max_attempts=3, initial_delay=0, budget=budget)
    agents = [reliable(shared, agent=f"agent-{n}", retry=policy, circuit=None) for n in range(5)]
    reasons = []
    for client in agents:
        with pytest.raises(RetriesExhaustedError) as caught:
            await client.create(HI)
        reasons.append(caught.value.reason)
    assert fake_openai_server.request_count == 5 + 3
    assert reasons.count("budget") >= 3


@pytest.mark.parametrize("faults", [[429, 503], [503, 429]])
async def test_a_team_run_completes_through_injected_faults(
    faults: list[int], fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    shared = make_openai_client()
    team = RoundRobinGroupChat(
        [AssistantAgent("writer", model_client=shared), AssistantAgent("critic", model_client=shared)],
        termination_condition=MaxMessageTermination(3),
    )
    reliable(team, retry=FAST)
    first, second = (FakeReply.error(status, headers={"retry-after-ms": "5"}) for status in faults)
    fake_openai_server.enqueue(first, FakeReply.text("draft"), second, FakeReply.text("looks good"))
    result = await team.run(task="Write.")
    assert [message.source for message in result.messages] == ["user", "writer", "critic"]
    assert fake_openai_server.request_count == 4


async def test_an_assistant_agent_completes_through_a_429(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.error(429, headers={"retry-after-ms": "5"}), FakeReply.text("fine"))
    agent = reliable(AssistantAgent("solo", model_client=make_openai_client(), model_client_stream=True), retry=FAST)
    result = await agent.run(task="Go.")
    assert result.messages[-1].dump()["content"] == "fine"
    assert fake_openai_server.request_count == 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare replies show nothing retried
async def test_retry_none_switches_off_the_sdks_retries_too(
    mode: Mode, fake_openai_server: FakeOpenAIServer, ledger: tuple[UsageStore, UsageRecorder]
) -> None:
    # AutoGen's client as a user builds it: the SDK's default max_retries (2), not the fixture's 0.
    inner = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test", base_url=fake_openai_server.base_url)
    try:
        assert inner._client.max_retries == 2
        fake_openai_server.enqueue(
            FakeReply.error(429, headers={"retry-after-ms": "1"}),
            FakeReply.error(503, headers={"retry-after-ms": "1"}),
            FakeReply.text("ok"),
        )
        client = reliable(inner, retry=None, recorder=ledger[1])
        with pytest.raises(openai.RateLimitError):
            await call(client, mode)
        assert fake_openai_server.request_count == 1  # one attempt is one HTTP request: the SDK did not retry behind us
        assert [(row.attempt, row.http_status) for row in rows(ledger)] == [(1, 429)]
        assert inner.dump_component().config["max_retries"] == 0
    finally:
        await inner.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "between 1 and 10"),
        ({"max_attempts": 11}, "between 1 and 10"),
        ({"max_attempts": 2.5}, "must be an int"),
        ({"initial_delay": -1}, "initial_delay must be >= 0"),
        ({"initial_delay": 10, "max_delay": 1}, "must not exceed max_delay"),
        ({"deadline": 0}, "deadline must be > 0"),
        ({"deadline": float("inf")}, "deadline must be finite"),
        ({"max_retry_after": "60"}, "max_retry_after must be seconds"),
        ({"retry_on": {ErrorKind.BAD_REQUEST}}, "retry_on may not contain BAD_REQUEST"),
        ({"retry_on": {ErrorKind.CANCELLED, ErrorKind.AUTHENTICATION}}, "AUTHENTICATION, CANCELLED"),
        ({"retry_on": ErrorKind.RATE_LIMIT}, "collection of ErrorKind"),
        ({"retry_on": {"rate_limit"}}, "must contain ErrorKind members"),
        ({"retry_on": None}, "collection of ErrorKind"),
        ({"retry_on": 5}, "collection of ErrorKind"),
        ({"budget": 0.1}, "budget must be a RetryBudget"),
        ({"jitter": "no"}, "jitter must be True or False"),
        ({"respect_retry_after": 0}, "respect_retry_after must be True or False"),
        ({"initial_delay": float("nan")}, "initial_delay must be finite"),
        ({"max_delay": float("inf")}, "max_delay must be finite"),
        ({"max_retry_after": -1}, "max_retry_after must be >= 0"),
        ({"max_attempts": True}, "must be an int"),
        ({"clock": 3.0}, "clock must be callable"),
        ({"sleep": "asyncio.sleep"}, "sleep must be callable"),
        ({"sleep": time.sleep}, r"sleep must be an async function .*got time\.sleep"),
        ({"sleep": lambda seconds: None}, "sleep must be an async function"),
    ],
)
def test_retry_policy_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RetryPolicy(**kwargs)


class AsyncSleeper:
    """A callable object whose ``__call__`` is async: a sleep as good as an ``async def`` function."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


class LooksAsync:
    """A synchronous callable that ``inspect`` takes for a coroutine function.

    What a mock, or from Python 3.12 ``inspect.markcoroutinefunction``, can make of any function: it passes the
    check at construction, and only the call shows that its result cannot be awaited.
    """

    __name__ = "looks_async"
    __defaults__ = None
    __kwdefaults__ = None
    __code__ = (lambda seconds: None).__code__.replace(co_flags=inspect.CO_COROUTINE)

    def __call__(self, seconds: float) -> None:
        return None


async def test_sleep_must_be_awaitable(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.error(503), FakeReply.text("ok"), FakeReply.error(503))
    sleeper = AsyncSleeper()
    client = reliable(make_openai_client(), retry=RetryPolicy(initial_delay=1, jitter=False, sleep=sleeper))
    assert (await call(client, "create")).content == "ok"
    assert sleeper.slept == [1.0]
    assert inspect.iscoroutinefunction(LooksAsync())
    client = reliable(make_openai_client(), retry=RetryPolicy(initial_delay=1, jitter=False, sleep=LooksAsync()))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"RetryPolicy\.sleep must be an async function: .* returned NoneType"):
        await call(client, "create")
    assert fake_openai_server.request_count == 3


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: RetryBudget(ratio=1.5), "must be <= 1"),
        (lambda: RetryBudget(capacity=0.5), "capacity must be >= 1"),
        (lambda: RetryBudget(min_per_second=-1), "must be a number >= 0"),
        (lambda: CircuitBreakerPolicy(window=0), "window must be an int >= 1"),
        (lambda: CircuitBreakerPolicy(window=5, minimum_calls=6), "cannot exceed window"),
        (lambda: CircuitBreakerPolicy(failure_rate=0), r"failure_rate must be in \(0, 1\]"),
        (lambda: CircuitBreakerPolicy(open_for=0), "open_for must be > 0"),
        (lambda: RetryBudget(capacity=float("inf")), "capacity must be finite"),
        (lambda: RetryBudget(capacity=10**5000), "capacity must be finite, got an int too large for a float"),
        (lambda: RetryBudget(min_per_second=float("inf")), "min_per_second must be finite"),
        (lambda: RetryBudget(ratio=float("nan")), "must be a number >= 0"),
        (lambda: RetryBudget(ratio=True), "must be a number >= 0"),
        (lambda: CircuitBreakerPolicy(failure_rate=float("nan")), r"failure_rate must be in \(0, 1\]"),
        # A rate in range, of another type, was refused as out of range: "must be in (0, 1], got Decimal('0.5')".
        (
            lambda: CircuitBreakerPolicy(failure_rate=Decimal("0.5")),  # type: ignore[arg-type]
            r"^CircuitBreakerPolicy\.failure_rate must be a number \(an int or a float\), got Decimal\('0\.5'\)$",
        ),
        (
            lambda: CircuitBreakerPolicy.from_config({"failure_rate": "0.5"}),
            r"^CircuitBreakerPolicy\.failure_rate must be a number \(an int or a float\), got '0\.5'$",
        ),
        (lambda: CircuitBreakerPolicy(failure_rate=True), r"failure_rate must be a number \(an int or a float\)"),
        (lambda: CircuitBreakerPolicy(half_open_probes=0), "half_open_probes must be an int >= 1"),
        (lambda: CircuitBreakerPolicy(minimum_calls=2.0), "minimum_calls must be an int >= 1"),  # type: ignore[arg-type]
        (lambda: CircuitBreakerPolicy(open_for=float("inf")), "open_for must be finite"),
        (lambda: CircuitBreakerPolicy(clock=None), "clock must be callable"),  # type: ignore[arg-type]
    ],
)
def test_budget_and_circuit_reject_bad_values(factory: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        factory()


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            lambda: RetryPolicy.from_config({"max_attempt": 3}),
            r"unknown RetryPolicy option\(s\) max_attempt; known: .*",
        ),
        (
            lambda: RetryPolicy.from_config({"retry_on": ["ratelimit"]}),
            "unknown error kind 'ratelimit'; known: .*rate_limit",
        ),
        (lambda: RetryPolicy.from_config({"retry_on": "rate_limit"}), "retry_on must be a list of error kinds"),
        (lambda: RetryPolicy.from_config({"retry_on": None}), "retry_on must be a list of error kinds"),
        (lambda: RetryPolicy.from_config({"budget": {"ratios": 0.2}}), r"unknown RetryBudget option\(s\) ratios"),
        (lambda: RetryPolicy.from_config({"budget": 0.1}), "a RetryBudget config must be a mapping, not float"),
        (lambda: RetryPolicy.from_config([]), "a RetryPolicy config must be a mapping, not list"),  # type: ignore[arg-type]
        (lambda: CircuitBreakerPolicy.from_config({"windows": 3}), r"unknown CircuitBreakerPolicy option\(s\) windows"),
        (lambda: RetryBudget.from_config({"capacity": 5, "cap": 1}), r"unknown RetryBudget option\(s\) cap; known: "),
    ],
)
def test_from_config_refuses_unknown_options_and_kinds(factory: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        factory()


def test_policies_accept_timedeltas() -> None:
    policy = RetryPolicy(initial_delay=timedelta(milliseconds=100), deadline=timedelta(minutes=2))
    assert policy.to_config()["initial_delay"] == 0.1
    assert policy.to_config()["deadline"] == 120.0
    assert CircuitBreakerPolicy(open_for=timedelta(seconds=5)).to_config()["open_for"] == 5.0


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (RetryPolicy, "initial_delay"),
        (RetryPolicy, "max_delay"),
        (RetryPolicy, "deadline"),
        (RetryPolicy, "max_retry_after"),
        (CircuitBreakerPolicy, "open_for"),
        (lambda **option: BudgetPolicy(limit_usd=1, **option), "refresh"),
    ],
)
def test_a_duration_is_held_in_seconds_however_it_was_written(make: Any, option: str) -> None:
    # Equal policies share a breaker, a budget tracker: 30 s written as a timedelta is the same policy.
    written = make(**{option: timedelta(seconds=8)})
    assert written == make(**{option: 8.0}) == make(**{option: 8})
    assert hash(written) == hash(make(**{option: 8.0}))
    assert getattr(written, option) == 8.0
    assert type(getattr(written, option)) is float
    assert f"{option}=8.0" in repr(written)
    assert type(written).from_config(written.to_config()) == written
    assert written.to_config()[option] == 8.0


def test_wrapper_rejects_bad_policy_options() -> None:
    stub = ReplayChatCompletionClient(["x"])
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
        ReliableChatCompletionClient(stub, retry=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="circuit must be a CircuitBreakerPolicy"):
        ReliableChatCompletionClient(stub, circuit={"window": 3})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="fallbacks must be a list"):
        ReliableChatCompletionClient(stub, fallbacks=stub)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="on_retry takes callables"):
        ReliableChatCompletionClient(stub, on_retry=["log"])  # type: ignore[list-item]


def test_a_fallback_must_be_another_client() -> None:
    primary, other = ReplayChatCompletionClient(["x"]), ReplayChatCompletionClient(["y"])
    with pytest.raises(ConfigurationError, match="fallbacks\\[0\\] is the primary client"):
        reliable(primary, fallbacks=[primary])
    with pytest.raises(ConfigurationError, match="fallbacks\\[0\\] is the primary client"):
        reliable(primary, fallbacks=[reliable(primary, project="p")])  # the same provider client underneath
    with pytest.raises(ConfigurationError, match="fallbacks\\[1\\] repeats fallbacks\\[0\\]"):
        reliable(primary, fallbacks=[other, other])
    assert reliable(primary, fallbacks=[other]).options["fallbacks"] == [other]


async def test_only_openai_clients_are_asked_for_stream_usage(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    class RecordingReplay(ReplayChatCompletionClient):
        stream_args: list[Any]

        def create_stream(self, messages: Any, **kwargs: Any) -> Any:
            self.stream_args.append(kwargs["extra_create_args"])
            return super().create_stream(messages, **kwargs)

    fake_openai_server.enqueue(FakeReply.error(400, code="context_length_exceeded"))
    fallback = RecordingReplay(["from the replay client"])
    fallback.stream_args = []
    client = reliable(make_openai_client(), fallbacks=[fallback])
    items = [item async for item in client.create_stream(HI)]
    assert isinstance(items[-1], CreateResult)
    assert items[-1].content == "from the replay client"
    assert fake_openai_server.requests[0].body is not None
    assert fake_openai_server.requests[0].body["stream_options"] == {"include_usage": True}
    assert fallback.stream_args == [{}]


async def test_a_fallback_of_another_kind_is_not_sent_the_openai_clients_stream_arguments(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # AutoGen's OpenAI client takes include_usage (and max_consecutive_empty_chunk_tolerance); other clients'
    # create_stream has the interface's arguments only, and a TypeError would end the call instead of the fallback.
    fake_openai_server.enqueue(FakeReply.error(500))
    fallback = ReplayChatCompletionClient(["from the replay client"])
    client = reliable(make_openai_client(), retry=RetryPolicy(max_attempts=1), fallbacks=[fallback])
    items = [item async for item in client.create_stream(HI, include_usage=True)]
    assert isinstance(items[-1], CreateResult)
    assert items[-1].content == "from the replay client"
    assert fake_openai_server.requests[0].body is not None
    assert fake_openai_server.requests[0].body["stream_options"] == {"include_usage": True}


async def test_a_stream_argument_no_client_takes_still_fails_as_the_inner_clients_own_call_does(
    make_openai_client: OpenAIClientFactory,
) -> None:
    with pytest.raises(TypeError, match="include_usgae"):
        await anext(reliable(make_openai_client()).create_stream(HI, include_usgae=True))


@pytest.fixture
def retry_hooks() -> Iterator[None]:
    """Restores the process-wide retry hooks to the default after the test."""
    yield
    set_on_retry_hooks(None)


async def test_retry_logging_is_one_hook_that_can_be_replaced_or_removed(
    retry_hooks: None,
    fake_time: FakeTime,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    own: list[RetryEvent] = []
    # Built before any change; without a circuit, which five calls failing once each would open (and say so).
    client = reliable(make_openai_client(), retry=fake_time.policy(), on_retry=own.append, circuit=None)

    async def retried_once() -> list[logging.LogRecord]:
        caplog.clear()
        fake_openai_server.enqueue(FakeReply.error(503), FakeReply.text("ok"))
        with caplog.at_level(logging.WARNING, logger="autogen_reliability"):
            assert (await client.create(HI)).content == "ok"
        return [record for record in caplog.records if record.name == "autogen_reliability"]

    assert get_on_retry_hooks() == (log_retry,)
    assert [record.getMessage()[:19] for record in await retried_once()] == ["retrying model call"]

    instead: list[RetryEvent] = []
    set_on_retry_hooks([instead.append])
    assert await retried_once() == []
    assert len(instead) == 1

    set_on_retry_hooks([])  # retry logging off
    assert await retried_once() == []

    def broken(event: RetryEvent) -> None:
        raise RuntimeError("a hook that fails")

    set_on_retry_hooks([broken])  # logged, never propagated
    [failure] = await retried_once()
    assert failure.getMessage().splitlines()[0] == f"retry hook {broken!r} failed"
    assert failure.getMessage().splitlines()[-1] == "RuntimeError: a hook that fails"  # with its traceback

    set_on_retry_hooks(None)  # the default again
    assert get_on_retry_hooks() == (log_retry,)
    assert len(await retried_once()) == 1
    assert len(instead) == 1
    assert len(own) == 5  # the wrapper's own hooks ran every time, whatever the process-wide ones were
    with pytest.raises(ConfigurationError, match="takes a list of callables"):
        set_on_retry_hooks(log_retry)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="a retry hook must be callable"):
        set_on_retry_hooks(["log"])  # type: ignore[list-item]
    # Neither a list nor a callable: said so, not Python's TypeError from tuple(), nor "a hook ... got str" per letter.
    for not_a_list in (42, "log_retry"):
        with pytest.raises(ConfigurationError, match=r"takes a list of callables .*, got (int|str)"):
            set_on_retry_hooks(not_a_list)  # type: ignore[arg-type]
    assert get_on_retry_hooks() == (log_retry,)  # left as it was


def test_clock_and_sleep_are_code_not_configuration(fake_time: FakeTime) -> None:
    retry = RetryPolicy(max_attempts=4, clock=fake_time.clock, sleep=fake_time.sleep)
    circuit = CircuitBreakerPolicy(window=4, minimum_calls=2, clock=fake_time.clock)
    assert "clock" not in retry.to_config()
    assert "sleep" not in retry.to_config()
    assert "clock" not in circuit.to_config()
    client = reliable(ReplayChatCompletionClient(["x"]), retry=retry, circuit=circuit)
    loaded = ReliableChatCompletionClient.load_component(client.dump_component())
    assert loaded.options["retry"] == RetryPolicy(max_attempts=4)  # the default clock and sleep again
    assert loaded.options["circuit"] == CircuitBreakerPolicy(window=4, minimum_calls=2)
    assert loaded.options["retry"] != retry  # a clock is part of what a policy is
    assert "clock" not in repr(retry)


async def test_a_policy_is_validated_once_not_per_call(
    monkeypatch: pytest.MonkeyPatch, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    client = reliable(make_openai_client(), retry=RetryPolicy(initial_delay=0, deadline=timedelta(minutes=1)))

    def converted_again(*args: Any, **kwargs: Any) -> float:
        raise AssertionError("a call converted the policy's times again")

    monkeypatch.setattr(retry_policy, "as_seconds", converted_again)
    monkeypatch.setattr(retry_layer, "as_seconds", converted_again, raising=False)  # should it ever import it
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.error(429), FakeReply.text("ok"))
    assert (await client.create(HI)).content == "ok"
    assert fake_openai_server.request_count == 3


def test_a_call_left_pending_on_a_loop_that_was_stopped_and_closed_ends_quietly_with_its_rows(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # loop.stop() and loop.close() with a call waiting to retry: the garbage collector closes the call's coroutine
    # later, in a context of its own. Its rows are made; the deadline's context variable has nothing to put back.
    unraisable: list[str] = []
    monkeypatch.setattr(
        sys, "unraisablehook", lambda seen: unraisable.append(f"{seen.exc_type.__name__}: {seen.exc_value}")
    )
    waiting = threading.Event()

    async def sleep(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()  # the loop stops first

    inner = OpenAIChatCompletionClient(
        model="gpt-4o-mini", api_key="sk-test", base_url=fake_openai_server.base_url, max_retries=0
    )
    client = reliable(inner, recorder=ledger[1], retry=RetryPolicy(sleep=sleep), circuit=None)
    fake_openai_server.enqueue(FakeReply.error(500))

    def run() -> None:
        loop = asyncio.new_event_loop()
        task = loop.create_task(client.create(HI))
        while not waiting.is_set():
            loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()  # the call still waits to retry
        del task

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        logging.getLogger("asyncio").disabled = True  # "Task was destroyed but it is pending!": the caller's task
        try:
            thread = threading.Thread(target=run)
            thread.start()
            thread.join(30)
            gc.collect()
        finally:
            logging.getLogger("asyncio").disabled = False
    # Before: ["ValueError: <Token var=<ContextVar name='autogen_reliability_deadline_timer' ...> was created in a
    # different Context"], printed as "Exception ignored in: <coroutine object AccountingLayer.create ...>".
    assert unraisable == []
    assert [(row.attempt, row.outcome, row.http_status) for row in ledger_rows(ledger)] == [(1, "error", 500)]


def test_a_loop_closed_while_a_call_waits_to_retry_holds_no_task_of_ours_and_its_token_still_cancels(
    fake_openai_server: FakeOpenAIServer,
) -> None:
    # A test framework or a script closes its loop with a call waiting out a backoff, the call linked to the
    # caller's CancellationToken (a team's run). Only the caller's own task may be left pending: the wait was a
    # task of ours besides, which asyncio reported as "Task was destroyed but it is pending!" once collected,
    # and the token, still holding it, raised RuntimeError('Event loop is closed') from cancel() later on.
    began = asyncio.Event()

    async def sleep(seconds: float) -> None:
        began.set()  # the answer read, the wait begun
        await asyncio.Event().wait()  # the loop is closed first

    inner = OpenAIChatCompletionClient(
        model="gpt-4o-mini", api_key="sk-test", base_url=fake_openai_server.base_url, max_retries=0
    )
    client = reliable(inner, retry=RetryPolicy(sleep=sleep), circuit=None, track_usage=False)
    fake_openai_server.enqueue(FakeReply.error(500))
    token = CancellationToken()
    reported: list[str] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: reported.append(context["message"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        call = loop.create_task(client.create(HI, cancellation_token=token))
        loop.run_until_complete(asyncio.wait_for(began.wait(), 30))
        loop.close()
        left = asyncio.all_tasks(loop)
        assert left == {call}  # before: the call and the wait's own task (sleep())
        left.clear()
        token.cancel()  # before: RuntimeError: Event loop is closed
        del call, token  # the token holds the first attempt's error, whose traceback holds the call's frames
        gc.collect()
    assert reported == ["Task was destroyed but it is pending!"]  # the caller's; before: the wait's too


async def test_the_deadline_of_a_call_enters_no_context_manager_of_contextlib() -> None:
    # Counted, not timed: entered and left by every call through the retry layer.
    with contextlib_entered() as entered:
        async with retry_layer._Deadline(60) as timer:
            assert deadline_timer.get() is timer
    assert deadline_timer.get() is None
    assert entered == []
