"""A provider that answers HTTP 200 with an error body, through the real SDK, AutoGen's client and FakeOpenAIServer.

OpenRouter documents it: a request that fails once accepted (the upstream provider failed, or generation had
begun) is answered ``200`` with ``{"error": {"code": 502, "message": ...}}``, and a stream carries the same
object in a ``data:`` event, possibly after content (then with ``"finish_reason": "error"``). Such an error is
classified as the HTTP status its ``code`` names, and retried, sent to a fallback or raised as that status is.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import openai
import pytest
from autogen_core.models import CreateResult, UserMessage

from autogen_reliability import (
    ErrorKind,
    HealthProbe,
    MalformedResponseError,
    ProviderResponseError,
    RetryPolicy,
    TruncatedStreamError,
    reliable,
)
from autogen_reliability.accounting._events import UsageEvent
from autogen_reliability.retry import classify_error
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

from .conftest import MODEL, OpenAIClientFactory, final_result
from .storage_fixtures import Ledger, ledger_rows
from .tapping import FAKE_COMPLETION

HI = [UserMessage(content="hi", source="user")]
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.05)
KEY = "sk-proj-Abcdefghijklmnop0123456789"

# create: a completion's body; stream-json: the same body answering a stream request (the SDK finds no event in
# it); stream-event: an SSE stream whose first event is the error, before any content.
Shape = Literal["create", "stream-json", "stream-event"]
SHAPES: list[Shape] = ["create", "stream-json", "stream-event"]

# The code the error body names -> its kind, and whether the wrapper retries it.
CODES = [
    (502, ErrorKind.SERVER_ERROR, True),
    (503, ErrorKind.OVERLOADED, True),
    (529, ErrorKind.OVERLOADED, True),
    (429, ErrorKind.RATE_LIMIT, True),
    (400, ErrorKind.BAD_REQUEST, False),
    (401, ErrorKind.AUTHENTICATION, False),
    (403, ErrorKind.PERMISSION, False),
]


def chunk(**fields: Any) -> dict[str, Any]:
    """A chat.completion.chunk as OpenRouter sends it, with ``fields`` added."""
    return {"id": "gen-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL, **fields}


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events) + b"data: [DONE]\n\n"


def error_reply(shape: Shape, code: int | str, message: str = "Upstream provider failed") -> FakeReply:
    error = {"code": code, "message": message}
    if shape == "stream-event":
        return FakeReply.malformed(sse({"error": error}), content_type="text/event-stream")
    return FakeReply.malformed(json.dumps({"error": error}).encode())


async def call(client: Any, shape: Shape) -> CreateResult:
    if shape == "create":
        result: CreateResult = await client.create(HI)
        return result
    return await final_result(client.create_stream(HI))


def rows(ledger: Ledger) -> list[UsageEvent]:
    return sorted(ledger_rows(ledger), key=lambda row: row.attempt)


@pytest.mark.parametrize(("code", "kind", "retried"), CODES, ids=[str(code) for code, _, _ in CODES])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_an_error_body_on_a_200_is_classified_by_the_status_its_code_names(
    shape: Shape,
    code: int,
    kind: ErrorKind,
    retried: bool,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    ledger: Ledger,
) -> None:
    fake_openai_server.enqueue(error_reply(shape, code), FakeReply.text("recovered"))
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    # The wire said 200; the SDK's own error for an event has no status at all.
    wire_status = None if shape == "stream-event" else 200
    if retried:
        result = await call(client, shape)
        assert result.content == "recovered"
        assert fake_openai_server.request_count == 2
        failed, answered = rows(ledger)
        assert answered.outcome == "ok"
    else:
        expected = openai.APIError if shape == "stream-event" else ProviderResponseError
        with pytest.raises(expected, match="Upstream provider failed"):
            await call(client, shape)
        assert fake_openai_server.request_count == 1
        (failed,) = rows(ledger)
    assert (failed.outcome, failed.error_kind, failed.http_status) == ("error", kind.value, wire_status)
    assert "Upstream provider failed" in str(failed.error_message)


# Error objects whose code is no number: the status is the one their code, else their type, names (OpenAI's codes,
# as a proxy passes them on with a 200; Anthropic's types, as a gateway in front of it does), else none.
NAMED: dict[str, tuple[object, ErrorKind]] = {
    "openai-context-length": (
        {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
        ErrorKind.CONTEXT_LENGTH,
    ),
    "openai-bad-key": (
        {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"},
        ErrorKind.AUTHENTICATION,
    ),
    "openai-quota": (
        {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": None},
        ErrorKind.PERMISSION,
    ),
    "openai-rate-limit": (
        {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
        ErrorKind.RATE_LIMIT,
    ),
    "openai-model": (
        {"message": "The model `gpt-9` does not exist", "type": "invalid_request_error", "code": "model_not_found"},
        ErrorKind.NOT_FOUND,
    ),
    "anthropic-auth": ({"type": "authentication_error", "message": "invalid x-api-key"}, ErrorKind.AUTHENTICATION),
    "anthropic-prompt-too-long": (
        {"type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"},
        ErrorKind.CONTEXT_LENGTH,
    ),
    "anthropic-overloaded": ({"type": "overloaded_error", "message": "Overloaded"}, ErrorKind.OVERLOADED),
    "message-only-context-length": ({"message": "maximum context length is 8192 tokens"}, ErrorKind.CONTEXT_LENGTH),
    "string-context-length": ("prompt is too long", ErrorKind.CONTEXT_LENGTH),
    "names-none": ({"message": "Upstream provider failed", "type": "upstream"}, ErrorKind.SERVER_ERROR),
}
# What a wrapper with a fallback does of each kind: retry it on the primary, send it to the fallback, or raise it.
GOES = {
    ErrorKind.SERVER_ERROR: "retried",
    ErrorKind.OVERLOADED: "retried",
    ErrorKind.RATE_LIMIT: "retried",
    ErrorKind.CONTEXT_LENGTH: "fallback",
}


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_an_error_body_without_a_numeric_code_is_classified_by_the_code_or_type_it_names(
    shape: Shape,
    name: str,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    ledger: Ledger,
) -> None:
    error, kind = NAMED[name]
    wire = {"error": error}
    if shape == "stream-event":
        reply = FakeReply.malformed(sse(wire), content_type="text/event-stream")
    else:
        reply = FakeReply.malformed(json.dumps(wire).encode())
    fake_openai_server.enqueue(reply, FakeReply.text("answered"))
    client = reliable(
        make_openai_client(), retry=FAST, recorder=ledger[1], fallbacks=[make_openai_client(model="gpt-4.1")]
    )
    goes = GOES.get(kind, "raised")
    if goes == "raised":
        with pytest.raises(openai.APIError if shape == "stream-event" else ProviderResponseError) as caught:
            await call(client, shape)
        assert classify_error(caught.value) is kind
    else:
        assert (await call(client, shape)).content == "answered"
    models = {"retried": [MODEL, MODEL], "fallback": [MODEL, "gpt-4.1"], "raised": [MODEL]}[goes]
    assert [request.model for request in fake_openai_server.requests] == models
    expected = [("error", kind.value, MODEL)] + ([("ok", None, models[1])] if goes != "raised" else [])
    assert [(row.outcome, row.error_kind, row.model) for row in rows(ledger)] == expected


@pytest.mark.parametrize("shape", ["create", "stream-json"])
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_an_error_body_counts_no_tokens_as_the_status_it_names_would_not(
    shape: Shape, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, ledger: Ledger
) -> None:
    # The provider refused the request, as a 429 or a 401 sent as a status does: nothing was generated or billed.
    fake_openai_server.enqueue(error_reply(shape, 429), FakeReply.error(429), FakeReply.text("recovered"))
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    assert (await call(client, shape)).content == "recovered"
    in_body, as_status, answered = rows(ledger)
    assert (in_body.http_status, as_status.http_status) == (200, 429)
    for row in (in_body, as_status):
        assert (row.error_kind, row.prompt_tokens, row.completion_tokens) == ("rate_limit", 0, 0)
        assert (row.tokens_estimated, row.cost_nanousd) == (False, 0)
    assert answered.outcome == "ok"


@pytest.mark.parametrize("shape", ["create", "stream-json"])
async def test_the_error_body_is_raised_as_our_error_with_the_providers_code_and_message_redacted(
    shape: Shape, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, ledger: Ledger
) -> None:
    fake_openai_server.enqueue(error_reply(shape, 401, f"Incorrect API key provided: {KEY}"))
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    with pytest.raises(ProviderResponseError) as caught:
        await call(client, shape)
    error = caught.value
    assert (error.status_code, error.code) == (200, 401)
    assert KEY not in json.dumps(error.body)
    assert str(error) == (
        "HTTP 200 with an error instead of a completion (code 401): Incorrect API key provided: [REDACTED]"
    )
    (row,) = rows(ledger)
    assert "Incorrect API key provided: [REDACTED]" in str(row.error_message)
    assert KEY not in str(row.error_message)


async def test_a_long_error_message_is_cut_in_the_errors_text_and_kept_whole_in_its_field(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A gateway that puts the upstream's whole page in error.message: str() of the error was that page (100,000
    # characters of it, the redacted copy's limit), and so was every traceback, log line and team's RuntimeError.
    page = "upstream said: " + "<div>busy</div> " * 20_000
    fake_openai_server.enqueue(error_reply("create", 502, page))
    client = reliable(make_openai_client(), retry=None)
    with pytest.raises(ProviderResponseError) as caught:
        await client.create(HI)
    error = caught.value
    assert error.message is not None
    assert len(error.message) >= 100_000 - 1  # the field: as the redacted copy keeps it
    text = str(error)
    assert text.startswith("HTTP 200 with an error instead of a completion (code 502): upstream said: <div>busy</div>")
    assert len(text) <= 1100
    assert text.endswith("<div>busy</div> …")


async def test_the_errors_text_shows_the_control_characters_of_the_providers_message_as_escapes(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    message = "busy\nCRITICAL:root:forged\x1b]52;c;cHduZWQ=\x07\u202e"
    fake_openai_server.enqueue(error_reply("create", 502, message))
    client = reliable(make_openai_client(), retry=None)
    with pytest.raises(ProviderResponseError) as caught:
        await client.create(HI)
    error = caught.value
    assert error.message == message  # the field: as the provider wrote it
    assert str(error) == (
        "HTTP 200 with an error instead of a completion (code 502): "
        "busy\\nCRITICAL:root:forged\\x1b]52;c;cHduZWQ=\\x07\\u202e"
    )


@pytest.mark.parametrize("shape", ["create", "stream-json"])
async def test_an_error_body_the_policy_does_not_retry_goes_to_the_fallback(
    shape: Shape, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(error_reply(shape, 502), FakeReply.text("from the fallback"))
    client = reliable(make_openai_client(), retry=None, fallbacks=[make_openai_client(model="gpt-4.1")])
    result = await call(client, shape)
    assert result.content == "from the fallback"
    assert [request.model for request in fake_openai_server.requests] == [MODEL, "gpt-4.1"]


@pytest.mark.parametrize(
    ("code", "kind"),
    [(503, ErrorKind.OVERLOADED), (429, ErrorKind.RATE_LIMIT), ("server_error", ErrorKind.SERVER_ERROR)],
    ids=["503", "429", "string-code"],
)
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_an_error_event_after_content_fails_the_stream_and_is_not_retried(
    code: int | str,
    kind: ErrorKind,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    ledger: Ledger,
) -> None:
    # OpenRouter's mid-stream form: the error beside a choice whose finish_reason is "error".
    body = sse(
        chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]),
        chunk(
            error={"code": code, "message": "Provider disconnected"},
            choices=[{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        ),
    )
    fake_openai_server.enqueue(FakeReply.malformed(body, content_type="text/event-stream"), FakeReply.text("unused"))
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    received: list[object] = []

    async def consume() -> None:
        async for item in client.create_stream(HI):
            received.append(item)

    with pytest.raises(openai.APIError, match="Provider disconnected"):
        await consume()
    assert received == ["Hel"]  # what was delivered stays delivered; no CreateResult
    assert fake_openai_server.request_count == 1
    ((row_kind, outcome),) = [(row.error_kind, row.outcome) for row in rows(ledger)]
    assert (row_kind, outcome) == (kind.value, "error")


async def test_an_error_beside_a_valid_completion_is_left_alone(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, ledger: Ledger
) -> None:
    body = {**FAKE_COMPLETION, "error": {"code": 502, "message": "a warning the provider left in"}}
    fake_openai_server.enqueue(FakeReply.malformed(json.dumps(body).encode()))
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    result = await client.create(HI)
    assert result.content == "fine"
    assert [(row.outcome, row.error_kind) for row in rows(ledger)] == [("ok", None)]


@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_an_error_beside_a_choice_that_failed_is_the_error(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, ledger: Ledger
) -> None:
    # OpenRouter's form of a generation that failed part-way: what arrived, its finish reason "error", the error.
    failed = {"index": 0, "message": {"role": "assistant", "content": "Hel"}, "finish_reason": "error"}
    body = {**FAKE_COMPLETION, "choices": [failed], "error": {"code": 502, "message": "Provider disconnected"}}
    fake_openai_server.enqueue(FakeReply.malformed(json.dumps(body).encode()), FakeReply.text("recovered"))
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    result = await client.create(HI)
    assert result.content == "recovered"
    assert fake_openai_server.request_count == 2
    failed_row, answered = rows(ledger)
    assert (failed_row.outcome, failed_row.error_kind, failed_row.http_status) == ("error", "server_error", 200)
    assert "Provider disconnected" in str(failed_row.error_message)
    # The tokens the provider counted for the failed generation, as it bills them.
    assert (failed_row.prompt_tokens, failed_row.completion_tokens, failed_row.tokens_estimated) == (3, 1, False)
    assert answered.outcome == "ok"


# A 200 whose body is no completion at all, asked for as a completion or as a stream. The openai SDK hands a body
# that is not JSON to AutoGen as a string (AttributeError: 'str' object has no attribute 'usage'), and reads one
# without an event as an empty stream: AutoGen's answer was "" with finish reason "unknown", a success.
NOT_A_COMPLETION = {
    "html": FakeReply.malformed(b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"),
    "empty": FakeReply.malformed(b""),
    "array": FakeReply.malformed(b"[]"),
    # JSON objects without what AutoGen reads: IndexError (list index out of range), and AttributeError ('NoneType'
    # object has no attribute 'function_call'), both UNKNOWN.
    "no-choice": FakeReply.malformed(json.dumps({**FAKE_COMPLETION, "choices": []}).encode()),
    "no-message": FakeReply.malformed(
        json.dumps({**FAKE_COMPLETION, "choices": [{"index": 0, "finish_reason": "stop"}]}).encode()
    ),
}
NOT_A_STREAM = {**NOT_A_COMPLETION, "completion": FakeReply.malformed(json.dumps(FAKE_COMPLETION).encode())}


MALFORMED: list[tuple[Shape, str]] = [("create", name) for name in NOT_A_COMPLETION] + [
    ("stream-json", name) for name in NOT_A_STREAM
]


@pytest.mark.parametrize(("shape", "name"), MALFORMED, ids=[f"{shape}-{name}" for shape, name in MALFORMED])
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_a_200_whose_body_is_no_completion_is_an_invalid_response(
    shape: Shape,
    name: str,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    ledger: Ledger,
) -> None:
    fake_openai_server.enqueue(NOT_A_STREAM[name], FakeReply.text("unused"))
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    with pytest.raises(MalformedResponseError) as caught:
        await call(client, shape)
    error = caught.value
    assert classify_error(error) is ErrorKind.INVALID_RESPONSE  # not retried by default, as documented
    assert fake_openai_server.request_count == 1
    assert error.status_code == 200
    assert str(error).startswith("HTTP 200 with ")
    assert "Bad Gateway" not in str(error)  # what the body was, not the body
    (row,) = rows(ledger)
    assert (row.outcome, row.error_kind, row.http_status) == ("error", "invalid_response", 200)
    assert row.error_message == str(error)


async def test_a_malformed_body_is_retried_when_the_policy_says_so(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, ledger: Ledger
) -> None:
    fake_openai_server.enqueue(NOT_A_COMPLETION["html"], FakeReply.text("recovered"))
    retry = RetryPolicy(initial_delay=0.01, max_delay=0.05, retry_on=frozenset({ErrorKind.INVALID_RESPONSE}))
    client = reliable(make_openai_client(), retry=retry, recorder=ledger[1])
    result = await final_result(client.create_stream(HI))
    assert result.content == "recovered"
    assert [(row.outcome, row.error_kind) for row in rows(ledger)] == [("error", "invalid_response"), ("ok", None)]


# A stream whose body ends cleanly before the provider said the answer had: a chunk without finish_reason, then
# nothing (no finish_reason in any chunk, no data: [DONE]), as a proxy that drops the tail or a close-delimited
# response cut off sends it. AutoGen's answer was what arrived ("Hel"), finish reason "unknown", a success.
def cut_stream(*contents: str) -> bytes:
    role = chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    pieces = [chunk(choices=[{"index": 0, "delta": {"content": text}, "finish_reason": None}]) for text in contents]
    return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in (role, *pieces))


@pytest.mark.autogen_reliability(allow_unused=True)  # the spare reply shows nothing retried
async def test_a_stream_cut_off_after_content_fails_and_is_not_retried(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, ledger: Ledger
) -> None:
    fake_openai_server.enqueue(
        FakeReply.malformed(cut_stream("Hel"), content_type="text/event-stream"), FakeReply.text("unused")
    )
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    probe = HealthProbe({"openai": client})
    received: list[object] = []

    async def consume() -> None:
        async for item in client.create_stream(HI):
            received.append(item)

    with pytest.raises(TruncatedStreamError) as caught:
        await consume()
    assert received == ["Hel"]  # what was delivered stays delivered; no CreateResult
    assert classify_error(caught.value) is ErrorKind.CONNECTION
    assert fake_openai_server.request_count == 1
    (row,) = rows(ledger)
    assert (row.outcome, row.error_kind, row.http_status, row.tokens_estimated) == ("error", "connection", 200, True)
    assert row.completion_tokens >= 1  # what arrived is counted
    health = (await probe.check()).clients["openai"]
    assert (health.attempts, health.errors_by_kind) == (1, {"connection": 1})


TOOL_CALL_BEGUN = chunk(
    choices=[
        {
            "index": 0,
            "delta": {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"id'},
                    }
                ]
            },
            "finish_reason": None,
        }
    ]
)


@pytest.mark.parametrize("cut", ["before-content", "in-a-tool-call"])
async def test_a_stream_cut_off_before_anything_was_handed_on_is_retried(
    cut: str, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, ledger: Ledger
) -> None:
    # AutoGen hands on nothing of a tool call before the end: a half-made call was the answer.
    body = cut_stream() + (
        b"data: " + json.dumps(TOOL_CALL_BEGUN).encode() + b"\n\n" if cut == "in-a-tool-call" else b""
    )
    fake_openai_server.enqueue(FakeReply.malformed(body, content_type="text/event-stream"), FakeReply.text("recovered"))
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    result = await final_result(client.create_stream(HI))
    assert result.content == "recovered"
    assert [(row.outcome, row.error_kind) for row in rows(ledger)] == [("error", "connection"), ("ok", None)]


# Streams that said they ended, by one sign or the other, are answers as before.
ENDED_STREAMS = {
    "finish-reason-no-done": b"".join(
        b"data: " + json.dumps(event).encode() + b"\n\n"
        for event in (
            chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "Hello"}, "finish_reason": None}]),
            chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        )
    ),
    "done-no-finish-reason": cut_stream("Hello") + b"data: [DONE]\n\n",
    "one-chunk-unusual-finish-reason": b"data: "
    + json.dumps(chunk(choices=[{"index": 0, "delta": {"content": "Hello"}, "finish_reason": "eos"}])).encode()
    + b"\n\n",
}


@pytest.mark.parametrize("name", ENDED_STREAMS)
async def test_a_stream_that_said_it_ended_is_an_answer(
    name: str, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, ledger: Ledger
) -> None:
    fake_openai_server.enqueue(FakeReply.malformed(ENDED_STREAMS[name], content_type="text/event-stream"))
    client = reliable(make_openai_client(), retry=FAST, recorder=ledger[1])
    result = await final_result(client.create_stream(HI))
    assert result.content == "Hello"
    assert [(row.outcome, row.error_kind) for row in rows(ledger)] == [("ok", None)]
