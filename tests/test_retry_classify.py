"""classify_error / retry_after against exceptions the real SDKs raise.

OpenAI errors are produced over real HTTP by `FakeOpenAIServer`; Anthropic and
Ollama errors by their real clients over a mock transport, or by constructing
their real exception classes; httpx/httpx2 errors by their own code.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from types import ModuleType
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai
import pydantic
import pytest
from anthropic.lib.credentials import WorkloadIdentityError
from autogen_core.models import UserMessage

from autogen_reliability import BudgetExceededError, ProviderResponseError
from autogen_reliability.retry._classify import (
    NEVER_RETRIED,
    RETRYABLE_BY_DEFAULT,
    ErrorKind,
    classify_error,
    kind_for_status,
    retry_after,
    retry_refused,
)
from autogen_reliability.testing import FakeOpenAIServer, FakeReply
from tests.conftest import MODEL, OpenAIClientFactory

K = ErrorKind
CHAT: list[Any] = [{"role": "user", "content": "hi"}]


async def raised(call: Callable[[], Awaitable[object]]) -> Exception:
    """The exception ``call()`` raises; fails the test if it returns."""
    try:
        await call()
    except Exception as exc:
        return exc
    pytest.fail("expected the call to raise")


async def drain(stream: AsyncIterator[Any], into: list[Any] | None = None) -> None:
    async for item in stream:
        if into is not None:
            into.append(item)


def cause_chain(exc: BaseException) -> list[type[BaseException]]:
    chain: list[type[BaseException]] = []
    current: BaseException | None = exc
    while current is not None:
        chain.append(type(current))
        current = current.__cause__
    return chain


@pytest.fixture
async def sdk(fake_openai_server: FakeOpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        # 1 s: well past a loaded machine's answer to the other replies, well short of the 2 s "late" ones.
        api_key="sk-test",
        base_url=fake_openai_server.base_url,
        max_retries=0,
        timeout=1.0,
    ) as client:
        yield client


@pytest.fixture
def closed_port() -> int:
    """A localhost port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --------------------------------------------------------------------------- the public contract


def test_error_kind_values_are_a_public_contract() -> None:
    assert {kind.name: kind.value for kind in ErrorKind} == {
        "RATE_LIMIT": "rate_limit",
        "TIMEOUT": "timeout",
        "CONNECTION": "connection",
        "SERVER_ERROR": "server_error",
        "OVERLOADED": "overloaded",
        "AUTHENTICATION": "authentication",
        "PERMISSION": "permission",
        "BAD_REQUEST": "bad_request",
        "NOT_FOUND": "not_found",
        "CONTEXT_LENGTH": "context_length",
        "CONTENT_FILTER": "content_filter",
        "INVALID_RESPONSE": "invalid_response",
        "CANCELLED": "cancelled",
        "UNKNOWN": "unknown",
    }


def test_default_retry_sets() -> None:
    assert frozenset({K.RATE_LIMIT, K.TIMEOUT, K.CONNECTION, K.SERVER_ERROR, K.OVERLOADED}) == RETRYABLE_BY_DEFAULT
    assert (
        frozenset({K.AUTHENTICATION, K.PERMISSION, K.BAD_REQUEST, K.NOT_FOUND, K.CONTEXT_LENGTH, K.CANCELLED})
        == NEVER_RETRIED
    )
    assert not RETRYABLE_BY_DEFAULT & NEVER_RETRIED
    # Left to the policy: a fresh sample may pass the filter or parse.
    assert set(ErrorKind) - RETRYABLE_BY_DEFAULT - NEVER_RETRIED == {K.CONTENT_FILTER, K.INVALID_RESPONSE, K.UNKNOWN}


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, None, None, K.BAD_REQUEST),
        (400, "context_length_exceeded", None, K.CONTEXT_LENGTH),
        (400, "Context_Length_Exceeded", None, K.CONTEXT_LENGTH),
        (400, None, "prompt is too long: 208310 tokens > 200000 maximum", K.CONTEXT_LENGTH),
        (400, None, "This model's maximum context length is 8192 tokens.", K.CONTEXT_LENGTH),
        (400, "content_filter", None, K.CONTENT_FILTER),
        (400, "content_policy_violation", None, K.CONTENT_FILTER),
        (401, "invalid_api_key", None, K.AUTHENTICATION),
        (402, None, None, K.PERMISSION),
        (403, None, None, K.PERMISSION),
        (404, None, None, K.NOT_FOUND),
        (408, None, None, K.TIMEOUT),
        (409, None, None, K.SERVER_ERROR),
        (413, None, None, K.BAD_REQUEST),
        (413, "context_length_exceeded", None, K.CONTEXT_LENGTH),
        (418, None, None, K.BAD_REQUEST),
        (422, None, None, K.BAD_REQUEST),
        (429, "rate_limit_exceeded", None, K.RATE_LIMIT),
        (429, "insufficient_quota", None, K.PERMISSION),
        (429, "enforced_spend_limit_reached", None, K.PERMISSION),
        (429, "contract_spend_limit_reached", None, K.PERMISSION),
        (500, None, None, K.SERVER_ERROR),
        (501, None, None, K.SERVER_ERROR),
        (502, None, None, K.SERVER_ERROR),
        (503, None, None, K.OVERLOADED),
        (504, None, None, K.SERVER_ERROR),
        (529, None, None, K.OVERLOADED),
        # Codes and context-length wording only refine 4xx: a 5xx stays a server fault.
        (500, "context_length_exceeded", "prompt is too long", K.SERVER_ERROR),
        (200, None, None, K.UNKNOWN),
        (302, None, None, K.UNKNOWN),
        (-1, None, None, K.UNKNOWN),
        (600, None, None, K.UNKNOWN),
    ],
)
def test_kind_for_status(status: int, code: str | None, message: str | None, expected: ErrorKind) -> None:
    assert kind_for_status(status, code, message) is expected


# --------------------------------------------------------------------------- openai, over real HTTP


@pytest.mark.parametrize(
    ("reply", "exc_type", "expected"),
    [
        pytest.param(FakeReply.error(429), openai.RateLimitError, K.RATE_LIMIT, id="429"),
        pytest.param(
            FakeReply.error(
                429, "You exceeded your current quota.", type="insufficient_quota", code="insufficient_quota"
            ),
            openai.RateLimitError,
            K.PERMISSION,
            id="429-insufficient_quota",
        ),
        pytest.param(
            # How OpenAI has sent it too (community.openai.com, "where to find all values of error type"): the
            # billing word in `type` only, `code` null. Out of credit all the same, not a rate limit.
            FakeReply(
                kind="error",
                status=429,
                error_message="You exceeded your current quota, please check your plan and billing details.",
                error_type="insufficient_quota",
                error_code=None,
            ),
            openai.RateLimitError,
            K.PERMISSION,
            id="429-insufficient_quota-type-only",
        ),
        pytest.param(
            FakeReply.error(
                400, "This model's maximum context length is 128000 tokens.", code="context_length_exceeded"
            ),
            openai.BadRequestError,
            K.CONTEXT_LENGTH,
            id="400-context_length_exceeded",
        ),
        pytest.param(
            # Context length is recognised by the code, not by the message.
            FakeReply.error(400, "Too many tokens.", code="context_length_exceeded"),
            openai.BadRequestError,
            K.CONTEXT_LENGTH,
            id="400-context_length_exceeded-code-only",
        ),
        pytest.param(FakeReply.error(400), openai.BadRequestError, K.BAD_REQUEST, id="400"),
        pytest.param(
            FakeReply.error(400, "The response was filtered.", code="content_filter"),
            openai.BadRequestError,
            K.CONTENT_FILTER,
            id="400-azure-content_filter",
        ),
        pytest.param(
            # Azure's content filter as a gateway relays it (LiteLLM's proxy): its code the status, Azure's inner
            # code kept beside it.
            FakeReply.malformed(
                b'{"error": {"message": "AzureException - The response was filtered due to the prompt triggering '
                b'Azure OpenAI\'s content management policy.", "type": null, "param": null, "code": "400", '
                b'"provider_specific_fields": {"innererror": {"code": "ResponsibleAIPolicyViolation", '
                b'"content_filter_result": {"hate": {"filtered": true, "severity": "high"}}}}}}',
                status=400,
            ),
            openai.BadRequestError,
            K.CONTENT_FILTER,
            id="400-azure-content_filter-relayed-innererror",
        ),
        pytest.param(
            FakeReply.malformed(
                b'{"error": {"message": "The response was filtered.", "code": "ResponsibleAIPolicyViolation", '
                b'"innererror": {"code": "ResponsibleAIPolicyViolation"}}}',
                status=400,
            ),
            openai.BadRequestError,
            K.CONTENT_FILTER,
            id="400-azure-ResponsibleAIPolicyViolation",
        ),
        pytest.param(
            FakeReply.error(400, "Rejected by the safety system.", code="content_policy_violation"),
            openai.BadRequestError,
            K.CONTENT_FILTER,
            id="400-content_policy_violation",
        ),
        pytest.param(FakeReply.error(401), openai.AuthenticationError, K.AUTHENTICATION, id="401"),
        pytest.param(FakeReply.error(403), openai.PermissionDeniedError, K.PERMISSION, id="403"),
        pytest.param(FakeReply.error(404), openai.NotFoundError, K.NOT_FOUND, id="404"),
        # openai has no dedicated classes for 408 and 413: they arrive as the base APIStatusError.
        pytest.param(FakeReply.error(408), openai.APIStatusError, K.TIMEOUT, id="408"),
        pytest.param(FakeReply.error(409), openai.ConflictError, K.SERVER_ERROR, id="409"),
        pytest.param(FakeReply.error(413), openai.APIStatusError, K.BAD_REQUEST, id="413"),
        pytest.param(FakeReply.error(422), openai.UnprocessableEntityError, K.BAD_REQUEST, id="422"),
        pytest.param(FakeReply.error(500), openai.InternalServerError, K.SERVER_ERROR, id="500"),
        pytest.param(FakeReply.error(502), openai.InternalServerError, K.SERVER_ERROR, id="502"),
        # No dedicated 503/529 classes either: the status code is what tells overload apart.
        pytest.param(FakeReply.error(503), openai.InternalServerError, K.OVERLOADED, id="503"),
        pytest.param(FakeReply.error(504), openai.InternalServerError, K.SERVER_ERROR, id="504"),
        pytest.param(FakeReply.error(529), openai.InternalServerError, K.OVERLOADED, id="529"),
        pytest.param(
            FakeReply.malformed(b"<html>Bad gateway</html>", status=502, content_type="text/html"),
            openai.InternalServerError,
            K.SERVER_ERROR,
            id="502-html-proxy-page",
        ),
        pytest.param(
            # Gemini's OpenAI-compatible endpoint: its error object inside a list; the SDK keeps the list as the body.
            FakeReply.malformed(
                b'[{"error": {"code": 400, "message": "The input token count (1200293) exceeds the maximum number '
                b'of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}]',
                status=400,
            ),
            openai.BadRequestError,
            K.CONTEXT_LENGTH,
            id="400-gemini-list-context-length",
        ),
        pytest.param(
            FakeReply.malformed(
                b'[{"error": {"code": 429, "message": "You exceeded your current quota.", "status": '
                b'"RESOURCE_EXHAUSTED"}}]',
                status=429,
            ),
            openai.RateLimitError,
            K.RATE_LIMIT,
            id="429-gemini-list",
        ),
        pytest.param(
            # Gemini refuses a key it does not know (or one expired) with a 400 INVALID_ARGUMENT, not a 401: only the
            # google.rpc.ErrorInfo's reason says that no request with that key can succeed.
            FakeReply.malformed(
                b'[{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": '
                b'"INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": '
                b'"API_KEY_INVALID", "domain": "googleapis.com", "metadata": {"service": '
                b'"generativelanguage.googleapis.com"}}, {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", '
                b'"locale": "en-US", "message": "API key not valid. Please pass a valid API key."}]}}]',
                status=400,
            ),
            openai.BadRequestError,
            K.AUTHENTICATION,
            id="400-gemini-list-api-key-invalid",
        ),
        pytest.param(
            # Gemini's free tier refused where it is not offered (or the API where Google does not serve it): a 400
            # FAILED_PRECONDITION, which no request of that project can pass until its billing or region changes.
            FakeReply.malformed(
                b'[{"error": {"code": 400, "message": "Gemini API free tier is not available in your country. Please '
                b'enable billing on your project in Google AI Studio.", "status": "FAILED_PRECONDITION"}}]',
                status=400,
            ),
            openai.BadRequestError,
            K.PERMISSION,
            id="400-gemini-list-failed-precondition",
        ),
        pytest.param(
            # llama.cpp's server: its own type, and a wording of its own.
            FakeReply.malformed(
                b'{"error": {"code": 400, "message": "request (4390 tokens) exceeds the available context size '
                b'(4096 tokens), try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 4390, '
                b'"n_ctx": 4096}}',
                status=400,
            ),
            openai.BadRequestError,
            K.CONTEXT_LENGTH,
            id="400-llama.cpp-exceed_context_size_error",
        ),
        pytest.param(
            # The error a plain string: the SDK keeps the string as the body, and its text says no more than the status.
            FakeReply.malformed(b'{"error": "This model\'s maximum context length is 8192 tokens."}', status=400),
            openai.BadRequestError,
            K.CONTEXT_LENGTH,
            id="400-string-error-context-length",
        ),
        pytest.param(
            # Hugging Face's text-generation-inference: its error a string, beside an error_type.
            FakeReply.malformed(
                b'{"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8192. Given: 8000 '
                b'`inputs` tokens and 512 `max_new_tokens`", "error_type": "validation"}',
                status=422,
            ),
            openai.UnprocessableEntityError,
            K.CONTEXT_LENGTH,
            id="422-tgi-inputs-and-max_new_tokens",
        ),
        pytest.param(
            FakeReply.malformed(
                b'{"error": "Input validation error: `inputs` must have less than 4096 tokens. Given: 5120", '
                b'"error_type": "validation"}',
                status=422,
            ),
            openai.UnprocessableEntityError,
            K.CONTEXT_LENGTH,
            id="422-tgi-inputs",
        ),
        pytest.param(FakeReply.reset(), openai.APIConnectionError, K.CONNECTION, id="connection-reset"),
        pytest.param(
            FakeReply.text("Hello there", disconnect_after_chunks=1),
            openai.APIConnectionError,
            K.CONNECTION,
            id="reset-mid-body",
        ),
        pytest.param(FakeReply.text("late", delay=2), openai.APITimeoutError, K.TIMEOUT, id="read-timeout"),
        # The SDK does not wrap it: a body that claims JSON but does not parse escapes raw.
        pytest.param(FakeReply.malformed(b"{not json"), json.JSONDecodeError, K.INVALID_RESPONSE, id="malformed-json"),
    ],
)
async def test_openai_errors_over_http(
    fake_openai_server: FakeOpenAIServer,
    sdk: openai.AsyncOpenAI,
    reply: FakeReply,
    exc_type: type[Exception],
    expected: ErrorKind,
) -> None:
    fake_openai_server.enqueue(reply)

    exc = await raised(lambda: sdk.chat.completions.create(model=MODEL, messages=CHAT))

    assert type(exc) is exc_type
    assert classify_error(exc) is expected
    assert fake_openai_server.request_count == 1


def error_event(error: dict[str, Any]) -> FakeReply:
    """A 200 stream whose first event is ``{"error": error}``, as OpenRouter sends a failure once it accepted."""
    return FakeReply.malformed(
        b"data: " + json.dumps({"error": error}).encode() + b"\n\n", content_type="text/event-stream"
    )


@pytest.mark.parametrize(
    ("reply", "exc_type", "expected"),
    [
        pytest.param(FakeReply.error(429), openai.RateLimitError, K.RATE_LIMIT, id="429-before-first-chunk"),
        pytest.param(FakeReply.error(503), openai.InternalServerError, K.OVERLOADED, id="503-before-first-chunk"),
        # An SSE `event: error` after the 200: a bare APIError with no status code.
        pytest.param(
            FakeReply.text("Hello from fake", error_after_chunks=1), openai.APIError, K.SERVER_ERROR, id="sse-error"
        ),
        pytest.param(
            FakeReply.text("Hello from fake", disconnect_after_chunks=1),
            openai.APIConnectionError,
            K.CONNECTION,
            id="reset-mid-stream",
        ),
        # OpenRouter's error event on a 200: its code is the HTTP status the failure would have had.
        *(
            pytest.param(error_event({"code": code, "message": "m", **extra}), openai.APIError, kind, id=name)
            for name, code, extra, kind in [
                ("event-code-401", 401, {}, K.AUTHENTICATION),
                ("event-code-429", 429, {}, K.RATE_LIMIT),
                ("event-code-429-as-text", "429", {}, K.RATE_LIMIT),
                ("event-code-429-out-of-quota", 429, {"type": "insufficient_quota"}, K.PERMISSION),
                ("event-code-503", 503, {}, K.OVERLOADED),
                ("event-code-200", 200, {}, K.SERVER_ERROR),
                ("event-code-words", "server_error", {}, K.SERVER_ERROR),
                ("event-code-true", True, {}, K.SERVER_ERROR),
            ]
        ),
    ],
)
async def test_openai_stream_errors_over_http(
    fake_openai_server: FakeOpenAIServer,
    sdk: openai.AsyncOpenAI,
    reply: FakeReply,
    exc_type: type[Exception],
    expected: ErrorKind,
) -> None:
    fake_openai_server.enqueue(reply)

    async def consume() -> None:
        stream = await sdk.chat.completions.create(model=MODEL, messages=CHAT, stream=True)
        await drain(stream)

    exc = await raised(consume)

    assert type(exc) is exc_type
    assert classify_error(exc) is expected


async def test_openai_sse_error_arrives_after_chunks_and_has_no_status(
    fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI
) -> None:
    fake_openai_server.enqueue(FakeReply.text("Hello from fake", error_after_chunks=1))
    chunks: list[Any] = []

    async def consume() -> None:
        stream = await sdk.chat.completions.create(model=MODEL, messages=CHAT, stream=True)
        await drain(stream, chunks)

    exc = await raised(consume)

    assert any(chunk.choices and chunk.choices[0].delta.content for chunk in chunks)
    assert not hasattr(exc, "status_code")
    assert classify_error(exc) is K.SERVER_ERROR


async def test_openai_causes_classify_like_the_wrapper(
    fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI
) -> None:
    fake_openai_server.enqueue(FakeReply.text("late", delay=2))

    exc = await raised(lambda: sdk.chat.completions.create(model=MODEL, messages=CHAT))

    assert cause_chain(exc)[:2] == [openai.APITimeoutError, httpx2.ReadTimeout]
    assert exc.__cause__ is not None
    assert classify_error(exc.__cause__) is K.TIMEOUT


async def test_openai_connection_refused(closed_port: int) -> None:
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=f"http://127.0.0.1:{closed_port}/v1", max_retries=0
    ) as client:
        exc = await raised(lambda: client.chat.completions.create(model=MODEL, messages=CHAT))

    assert cause_chain(exc)[:2] == [openai.APIConnectionError, httpx2.ConnectError]
    assert classify_error(exc) is K.CONNECTION
    assert exc.__cause__ is not None
    assert classify_error(exc.__cause__) is K.CONNECTION


class Answer(pydantic.BaseModel):
    value: int


@pytest.mark.parametrize(
    ("reply", "exc_type", "expected"),
    [
        pytest.param(
            FakeReply.text('{"value": 1', finish_reason="length"),
            openai.LengthFinishReasonError,
            K.INVALID_RESPONSE,
            id="length",
        ),
        pytest.param(
            FakeReply.text('{"value": 1}', finish_reason="content_filter"),
            openai.ContentFilterFinishReasonError,
            K.CONTENT_FILTER,
            id="content_filter",
        ),
        pytest.param(
            FakeReply.text('{"value": "not a number"}'),
            pydantic.ValidationError,
            K.INVALID_RESPONSE,
            id="schema-mismatch",
        ),
    ],
)
async def test_openai_structured_output_errors(
    fake_openai_server: FakeOpenAIServer,
    sdk: openai.AsyncOpenAI,
    reply: FakeReply,
    exc_type: type[Exception],
    expected: ErrorKind,
) -> None:
    fake_openai_server.enqueue(reply)

    exc = await raised(lambda: sdk.chat.completions.parse(model=MODEL, messages=CHAT, response_format=Answer))

    assert isinstance(exc, exc_type)
    assert classify_error(exc) is expected


def test_openai_response_validation_error() -> None:
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    response = httpx2.Response(200, request=request, text="<html>")

    exc = openai.APIResponseValidationError(response=response, body="<html>")

    # It carries status_code 200 and subclasses APIError; neither may decide its kind.
    assert classify_error(exc) is K.INVALID_RESPONSE


# --------------------------------------------------------------------------- AutoGen's OpenAI client


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(FakeReply.error(429), K.RATE_LIMIT, id="429"),
        pytest.param(FakeReply.error(400, code="context_length_exceeded"), K.CONTEXT_LENGTH, id="context-length"),
        pytest.param(FakeReply.error(503), K.OVERLOADED, id="503"),
        pytest.param(FakeReply.text("late", delay=2), K.TIMEOUT, id="timeout"),
        pytest.param(FakeReply.reset(), K.CONNECTION, id="reset"),
        pytest.param(FakeReply.malformed(b"{not json"), K.INVALID_RESPONSE, id="malformed-json"),
        # AutoGen returns the SDK's str for a non-JSON 200 and then fails on `.usage` with an
        # AttributeError: a bug, not a provider failure, so it stays UNKNOWN (never guessed at).
        pytest.param(FakeReply.malformed(b"<html>", content_type="text/html"), K.UNKNOWN, id="html-200"),
    ],
)
async def test_autogen_client_create(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, reply: FakeReply, expected: ErrorKind
) -> None:
    client = make_openai_client(timeout=1.0)  # as the `sdk` fixture's
    fake_openai_server.enqueue(reply)

    exc = await raised(lambda: client.create([UserMessage(content="hi", source="user")]))

    assert classify_error(exc) is expected


async def test_autogen_client_stream_error_after_chunks(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    client = make_openai_client()
    fake_openai_server.enqueue(FakeReply.text("Hello from fake", error_after_chunks=1))
    received: list[Any] = []

    exc = await raised(lambda: drain(client.create_stream([UserMessage(content="hi", source="user")]), received))

    assert received  # the failure comes after text was already handed to the consumer
    assert type(exc) is openai.APIError
    assert classify_error(exc) is K.SERVER_ERROR


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"code": 502, "message": "Upstream failed"}, K.SERVER_ERROR),
        ({"code": 529, "message": "Overloaded"}, K.OVERLOADED),
        ({"code": 401, "message": "No auth"}, K.AUTHENTICATION),
        ({"code": 400, "message": "This model's maximum context length is 8192 tokens"}, K.CONTEXT_LENGTH),
        ({"code": "server_error", "message": "Provider disconnected"}, K.SERVER_ERROR),
        ("an error as a bare string", K.SERVER_ERROR),
    ],
)
def test_an_error_body_on_a_200_is_classified_by_the_status_its_code_names(error: object, expected: ErrorKind) -> None:
    # Raised by the wrapper (AutoGen's client fails on such a body with a TypeError): see tests/test_error_bodies.py.
    exc = ProviderResponseError(200, error)
    assert exc.status_code == 200
    assert classify_error(exc) is expected


# --------------------------------------------------------------------------- retry_after on real 429s


def _http_date(delta: timedelta) -> str:
    return format_datetime(datetime.now(UTC) + delta, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "1"}, 1.0, id="seconds"),
        pytest.param({"Retry-After": "1.5"}, 1.5, id="fractional-seconds"),
        pytest.param({"Retry-After": "0"}, 0.0, id="zero"),
        pytest.param({"retry-after-ms": "200"}, 0.2, id="milliseconds"),
        pytest.param({"retry-after-ms": "200", "Retry-After": "5"}, 0.2, id="ms-takes-precedence"),
        pytest.param({"retry-after-ms": "soon", "Retry-After": "2"}, 2.0, id="bad-ms-falls-back"),
        pytest.param({"retry-after-ms": "-5", "Retry-After": "2"}, 2.0, id="negative-ms-falls-back"),
        pytest.param({"Retry-After": _http_date(timedelta(days=-1))}, 0.0, id="date-in-the-past"),
        pytest.param({"Retry-After": "soon"}, None, id="garbage"),
        pytest.param({"Retry-After": "-1"}, None, id="negative"),
        pytest.param({"Retry-After": "nan"}, None, id="nan"),
        pytest.param({"Retry-After": "inf"}, None, id="inf-literal"),
        pytest.param({"Retry-After": "1_0"}, None, id="underscores"),  # float() reads 10
        pytest.param({"Retry-After": "+5"}, None, id="signed"),
        pytest.param({"retry-after-ms": "1e3"}, 1.0, id="ms-exponent"),
        # Azure's services send the wait in milliseconds under this name too (azure-core reads it after retry-after-ms).
        pytest.param({"x-ms-retry-after-ms": "1500"}, 1.5, id="azure-x-ms-milliseconds"),
        pytest.param({"x-ms-retry-after-ms": "1500", "Retry-After": "1"}, 1.5, id="azure-x-ms-takes-precedence"),
        pytest.param({"retry-after-ms": "200", "x-ms-retry-after-ms": "900"}, 0.2, id="ms-before-azure-x-ms"),
        pytest.param({"Retry-After": "9" * 400}, math.inf, id="overflow-means-very-long"),
        pytest.param({}, None, id="no-header"),
    ],
)
async def test_retry_after_on_real_429(
    fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI, headers: dict[str, str], expected: float | None
) -> None:
    fake_openai_server.enqueue(FakeReply.error(429, headers=headers))

    exc = await raised(lambda: sdk.chat.completions.create(model=MODEL, messages=CHAT))

    assert isinstance(exc, openai.RateLimitError)
    assert type(exc.response) is httpx2.Response
    assert retry_after(exc) == (pytest.approx(expected) if expected is not None else None)


async def test_retry_after_http_date(fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI) -> None:
    fake_openai_server.enqueue(FakeReply.error(429, headers={"Retry-After": _http_date(timedelta(seconds=30))}))

    exc = await raised(lambda: sdk.chat.completions.create(model=MODEL, messages=CHAT))

    delay = retry_after(exc)
    # HTTP-dates have whole-second resolution.
    assert delay is not None
    assert 28 <= delay <= 30


@pytest.mark.parametrize("skew", [timedelta(minutes=10), timedelta(minutes=-10)], ids=["server-ahead", "server-behind"])
async def test_retry_after_http_date_is_counted_from_the_responses_own_date(
    fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI, skew: timedelta
) -> None:
    # The server's clock is ten minutes off ours: its Date and its Retry-After are both on its clock, so the wait
    # it asks for is their difference (as a cache reads Expires against Date, RFC 9111 4.2.1), not 10 min +- 30 s.
    date = datetime.now(UTC) + skew
    headers = {"Date": format_datetime(date, usegmt=True), "Retry-After": _http_date(skew + timedelta(seconds=30))}
    fake_openai_server.enqueue(FakeReply.error(429, headers=headers))

    exc = await raised(lambda: sdk.chat.completions.create(model=MODEL, messages=CHAT))

    assert isinstance(exc, openai.RateLimitError)
    assert exc.response.headers["date"] == headers["Date"]  # as the server sent it
    assert retry_after(exc) in (30.0, 31.0)  # whole seconds: each date is cut to its second


async def test_retry_after_on_503(fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI) -> None:
    fake_openai_server.enqueue(FakeReply.error(503, headers={"Retry-After": "3"}))

    exc = await raised(lambda: sdk.chat.completions.create(model=MODEL, messages=CHAT))

    assert (classify_error(exc), retry_after(exc)) == (K.OVERLOADED, 3.0)


def _retry_info_body(retry_delay: object, *, in_list: bool = True) -> bytes:
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
    error = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [retry_info]}}
    return json.dumps([error] if in_list else error).encode()


@pytest.mark.parametrize(
    ("retry_delay", "expected"),
    [
        pytest.param("37s", 37.0, id="seconds"),
        pytest.param("0.5s", 0.5, id="fraction"),
        pytest.param("1.250s", 1.25, id="milliseconds"),
        pytest.param("0s", 0.0, id="zero"),
        pytest.param("9" * 400 + "s", math.inf, id="overflow-means-very-long"),
        pytest.param("37", None, id="no-unit"),
        pytest.param("-1s", None, id="negative"),
        pytest.param("1.s", None, id="empty-fraction"),
        pytest.param("1e3s", None, id="exponent"),
        pytest.param("2m", None, id="minutes"),
        pytest.param(" 37s", None, id="padded"),
        pytest.param("\u0663s", None, id="other-scripts-digits"),
        pytest.param(37, None, id="number"),
        pytest.param({"seconds": 37}, None, id="object"),
    ],
)
async def test_retry_after_reads_a_retry_delay_in_the_body(
    fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI, retry_delay: object, expected: float | None
) -> None:
    fake_openai_server.enqueue(FakeReply.malformed(_retry_info_body(retry_delay), status=429))

    exc = await raised(lambda: sdk.chat.completions.create(model=MODEL, messages=CHAT))

    assert isinstance(exc, openai.RateLimitError)
    assert retry_after(exc) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "2"}, 2.0, id="retry-after"),
        pytest.param({"retry-after-ms": "200"}, 0.2, id="retry-after-ms"),
        pytest.param({"Retry-After": "soon"}, 37.0, id="bad-header-falls-back"),
        # A window's reset is not a wait to retry after (the openai SDK does not read it either).
        pytest.param({"x-ratelimit-reset-requests": "5s"}, 37.0, id="ratelimit-reset-ignored"),
    ],
)
async def test_a_header_comes_before_a_retry_delay_in_the_body(
    fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI, headers: dict[str, str], expected: float
) -> None:
    body = _retry_info_body("37s", in_list=False)
    fake_openai_server.enqueue(FakeReply.malformed(body, status=429, headers=headers))

    exc = await raised(lambda: sdk.chat.completions.create(model=MODEL, messages=CHAT))

    assert classify_error(exc) is K.RATE_LIMIT
    assert retry_after(exc) == pytest.approx(expected)


def test_a_retry_delay_is_read_through_the_cause_and_odd_bodies_never_raise() -> None:
    retry_info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "4s"}
    outer = RuntimeError("provider call failed")
    outer.__cause__ = _WithBody({"details": [retry_info]})
    assert retry_after(outer) == 4.0
    other_type = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "retryDelay": "4s"}
    for body in (None, "text", [], [1], {"details": "4s"}, {"details": [1, None]}, {"details": [other_type]}):
        assert retry_after(_WithBody(body)) is None


class _WithBody(Exception):
    def __init__(self, body: object) -> None:
        super().__init__("wrapped")
        self.body = body


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"x-should-retry": "false"}, True, id="false"),
        pytest.param({"X-Should-Retry": " FALSE "}, True, id="any-case"),
        pytest.param({"x-should-retry": "true"}, False, id="true"),
        pytest.param({"x-should-retry": "no"}, False, id="garbage"),
        pytest.param({}, False, id="no-header"),
    ],
)
async def test_retry_refused_reads_x_should_retry(
    fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI, headers: dict[str, str], expected: bool
) -> None:
    fake_openai_server.enqueue(FakeReply.error(503, headers=headers))

    exc = await raised(lambda: sdk.chat.completions.create(model=MODEL, messages=CHAT))

    assert retry_refused(exc) is expected


def test_retry_refused_follows_the_cause_and_never_raises() -> None:
    outer = RuntimeError("provider call failed")
    outer.__cause__ = _WithResponse(_Plain(headers={"x-should-retry": "false"}))
    assert retry_refused(outer) is True
    assert retry_refused(_WithResponse(_ExplodingResponse())) is False
    assert retry_refused(TimeoutError()) is False


class _ExplodingResponse:
    @property
    def headers(self) -> object:
        raise RuntimeError("broken response object")


class _BadHeaders(dict[str, str]):
    def get(self, *args: object, **kwargs: object) -> Any:
        raise ValueError("broken headers")


class _WithResponse(Exception):
    def __init__(self, response: object) -> None:
        super().__init__("wrapped")
        self.response = response


class _Plain:
    def __init__(self, **attributes: object) -> None:
        self.__dict__.update(attributes)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(TimeoutError(), None, id="no-response"),
        pytest.param(_WithResponse(None), None, id="response-none"),
        pytest.param(_WithResponse(_ExplodingResponse()), None, id="headers-property-raises"),
        pytest.param(_WithResponse(_Plain(headers=_BadHeaders())), None, id="headers-get-raises"),
        pytest.param(_WithResponse(_Plain(headers=["retry-after", "1"])), None, id="headers-not-a-mapping"),
        pytest.param(_WithResponse(_Plain(headers={"Retry-After": "4"})), 4.0, id="plain-dict-any-case"),
        pytest.param(_WithResponse(_Plain(headers={"retry-after": b"4"})), 4.0, id="bytes-value"),
        pytest.param(_WithResponse(httpx.Response(429, headers={"Retry-After": "2"})), 2.0, id="legacy-httpx-response"),
    ],
)
def test_retry_after_is_duck_typed_and_never_raises(exc: BaseException, expected: float | None) -> None:
    assert retry_after(exc) == expected


def test_retry_after_follows_the_cause() -> None:
    request = httpx.Request("POST", "http://ollama.local/api/chat")
    response = httpx.Response(429, request=request, headers={"retry-after-ms": "1500"})
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as inner:
        outer = RuntimeError("provider call failed")
        outer.__cause__ = inner

    assert retry_after(outer) == 1.5
    assert classify_error(outer) is K.RATE_LIMIT


# --------------------------------------------------------------------------- anthropic


_ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"


def _anthropic_body(error_type: str, message: str, error_code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error}


def _anthropic_status_error(
    cls: type[anthropic.APIStatusError], status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> anthropic.APIStatusError:
    # The SDK's own shape: an httpx response (anthropic 0.x, which AutoGen 0.7.5 needs, is built on httpx),
    # and the full {"type": "error", "error": {...}} body.
    request = httpx.Request("POST", _ANTHROPIC_URL)
    response = httpx.Response(status, request=request, json=body, headers=headers)
    return cls(f"Error code: {status} - {body}", response=response, body=body)


@pytest.mark.parametrize(
    ("cls", "status", "body", "expected"),
    [
        (anthropic.RateLimitError, 429, _anthropic_body("rate_limit_error", "Too many requests"), K.RATE_LIMIT),
        (anthropic.OverloadedError, 529, _anthropic_body("overloaded_error", "Overloaded"), K.OVERLOADED),
        (
            anthropic.BadRequestError,
            400,
            _anthropic_body("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"),
            K.CONTEXT_LENGTH,
        ),
        (
            anthropic.BadRequestError,
            400,
            _anthropic_body("invalid_request_error", "max_tokens: Field required"),
            K.BAD_REQUEST,
        ),
        (
            anthropic.AuthenticationError,
            401,
            _anthropic_body("authentication_error", "invalid x-api-key"),
            K.AUTHENTICATION,
        ),
        # anthropic 0.x has no class of its own for 402, 408 and 504: the client raises these.
        (anthropic.APIStatusError, 402, _anthropic_body("billing_error", "Credit balance too low"), K.PERMISSION),
        (anthropic.PermissionDeniedError, 403, _anthropic_body("permission_error", "Not allowed"), K.PERMISSION),
        (anthropic.NotFoundError, 404, _anthropic_body("not_found_error", "model: claude-x"), K.NOT_FOUND),
        (anthropic.APIStatusError, 408, _anthropic_body("timeout_error", "Request timeout"), K.TIMEOUT),
        (anthropic.ConflictError, 409, _anthropic_body("conflict_error", "Conflict"), K.SERVER_ERROR),
        (anthropic.RequestTooLargeError, 413, _anthropic_body("request_too_large", "Request too large"), K.BAD_REQUEST),
        (anthropic.InternalServerError, 500, _anthropic_body("api_error", "Internal server error"), K.SERVER_ERROR),
        (anthropic.InternalServerError, 503, _anthropic_body("api_error", "Unavailable"), K.OVERLOADED),
        (anthropic.InternalServerError, 504, _anthropic_body("timeout_error", "Gateway timeout"), K.SERVER_ERROR),
        (
            # The spend limit is a 429 whose error_code says so (anthropic 0.x has no class for it).
            anthropic.RateLimitError,
            429,
            _anthropic_body("rate_limit_error", "Spend limit reached", "enforced_spend_limit_reached"),
            K.PERMISSION,
        ),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_anthropic_status_errors(
    cls: type[anthropic.APIStatusError], status: int, body: dict[str, Any], expected: ErrorKind
) -> None:
    exc = _anthropic_status_error(cls, status, body)

    assert exc.status_code == status
    assert classify_error(exc) is expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(anthropic.APITimeoutError(request=httpx.Request("POST", _ANTHROPIC_URL)), K.TIMEOUT, id="timeout"),
        pytest.param(
            anthropic.APIConnectionError(request=httpx.Request("POST", _ANTHROPIC_URL)), K.CONNECTION, id="connection"
        ),
        pytest.param(
            anthropic.APIResponseValidationError(
                response=httpx.Response(200, request=httpx.Request("POST", _ANTHROPIC_URL)), body=None
            ),
            K.INVALID_RESPONSE,
            id="response-validation",
        ),
        # anthropic 0.x's failed token exchange (no CredentialsError yet): judged by the status it carries.
        pytest.param(
            WorkloadIdentityError("token exchange failed", status_code=401), K.AUTHENTICATION, id="workload-identity"
        ),
        pytest.param(anthropic.RetryableError("middleware asked for a retry"), K.SERVER_ERROR, id="retryable"),
    ],
)
def test_anthropic_other_errors(exc: Exception, expected: ErrorKind) -> None:
    assert classify_error(exc) is expected


def _anthropic_client(handler: Callable[[httpx.Request], httpx.Response]) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-test",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )


async def _anthropic_create(client: anthropic.AsyncAnthropic, *, stream: bool = False) -> None:
    if stream:
        events = await client.messages.create(
            model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        await drain(events)
    else:
        await client.messages.create(model="claude-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}])


# A body labelled gzip that is not: the SDKs raise their APIConnectionError *from* httpx's DecodingError, though the
# connection was fine and the body arrived; a malformed body, as a bare DecodingError is.
BROKEN_GZIP = {"Content-Encoding": "gzip", "Content-Type": "application/json"}


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_openai_sdk_broken_gzip_body_is_an_invalid_response(
    fake_openai_server: FakeOpenAIServer, sdk: openai.AsyncOpenAI, stream: bool
) -> None:
    fake_openai_server.enqueue(FakeReply.malformed(b"this is not gzip at all", headers=BROKEN_GZIP))

    async def call() -> None:
        if stream:
            await drain(await sdk.chat.completions.create(model=MODEL, messages=CHAT, stream=True))
        else:
            await sdk.chat.completions.create(model=MODEL, messages=CHAT)

    exc = await raised(call)

    assert type(exc) is openai.APIConnectionError
    assert isinstance(exc.__cause__, httpx2.DecodingError)
    assert classify_error(exc) is K.INVALID_RESPONSE


async def test_anthropic_sdk_broken_gzip_body_is_an_invalid_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"this is not gzip at all", headers=BROKEN_GZIP)

    async with _anthropic_client(handler) as client:
        exc = await raised(lambda: _anthropic_create(client))

    assert type(exc) is anthropic.APIConnectionError
    assert isinstance(exc.__cause__, httpx.DecodingError)
    assert classify_error(exc) is K.INVALID_RESPONSE


async def test_anthropic_sdk_429_with_retry_after() -> None:
    body = _anthropic_body("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json=body, headers={"retry-after": "3"})

    async with _anthropic_client(handler) as client:
        exc = await raised(lambda: _anthropic_create(client))

    assert type(exc) is anthropic.RateLimitError
    assert (classify_error(exc), retry_after(exc)) == (K.RATE_LIMIT, 3.0)


@pytest.mark.parametrize(
    "message",
    [
        "prompt is too long: 208310 tokens > 200000 maximum",
        # The prompt fits, but not with the answer max_tokens asks room for (AutoGen's default is 4096): Anthropic
        # refuses the request rather than shortening the answer, from Claude 3.7 Sonnet on.
        "input length and `max_tokens` exceed context limit: 198000 + 4096 > 200000, decrease input length or "
        "`max_tokens` and try again",
    ],
    ids=["prompt-too-long", "prompt-and-max-tokens"],
)
async def test_anthropic_sdk_prompt_too_long(message: str) -> None:
    body = _anthropic_body("invalid_request_error", message)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=body)

    async with _anthropic_client(handler) as client:
        exc = await raised(lambda: _anthropic_create(client))

    assert type(exc) is anthropic.BadRequestError
    assert classify_error(exc) is K.CONTEXT_LENGTH


_MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-test",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    },
}


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", K.OVERLOADED),
        ("rate_limit_error", K.RATE_LIMIT),
        ("api_error", K.SERVER_ERROR),
        ("some_future_error", K.SERVER_ERROR),
    ],
)
async def test_anthropic_sdk_error_event_mid_stream(error_type: str, expected: ErrorKind) -> None:
    sse = (
        f"event: message_start\ndata: {json.dumps(_MESSAGE_START)}\n\n"
        f"event: error\ndata: {json.dumps(_anthropic_body(error_type, 'Overloaded'))}\n\n"
    ).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})

    async with _anthropic_client(handler) as client:
        exc = await raised(lambda: _anthropic_create(client, stream=True))

    # The SDK builds the error from the 200 stream response: its status says nothing.
    assert type(exc) is anthropic.APIStatusError
    assert exc.status_code == 200
    assert classify_error(exc) is expected


async def test_anthropic_sdk_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with _anthropic_client(handler) as client:
        exc = await raised(lambda: _anthropic_create(client))

    assert cause_chain(exc) == [anthropic.APITimeoutError, httpx.ReadTimeout]
    assert classify_error(exc) is K.TIMEOUT


# --------------------------------------------------------------------------- ollama


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(ollama.ResponseError("too many requests", status_code=429), K.RATE_LIMIT, id="429"),
        pytest.param(ollama.ResponseError('{"error": "model not found"}', status_code=404), K.NOT_FOUND, id="404"),
        pytest.param(ollama.ResponseError("server busy", status_code=503), K.OVERLOADED, id="503"),
        pytest.param(ollama.ResponseError("llama runner crashed", status_code=500), K.SERVER_ERROR, id="500"),
        pytest.param(ollama.ResponseError("error line in a stream"), K.SERVER_ERROR, id="in-stream-minus-1"),
        pytest.param(ConnectionError("Failed to connect to Ollama."), K.CONNECTION, id="builtin-ConnectionError"),
    ],
)
def test_ollama_errors(exc: Exception, expected: ErrorKind) -> None:
    assert classify_error(exc) is expected


async def _ollama_chat(client: ollama.AsyncClient, *, stream: bool = False) -> None:
    messages = [{"role": "user", "content": "hi"}]
    if stream:
        await drain(await client.chat(model="llama3", messages=messages, stream=True))
    else:
        await client.chat(model="llama3", messages=messages)


def _ollama_client(handler: Callable[[httpx.Request], httpx.Response]) -> ollama.AsyncClient:
    return ollama.AsyncClient(transport=httpx.MockTransport(handler))


async def test_ollama_sdk_status_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"error": "too many requests"})

    async with _ollama_client(handler) as client:
        exc = await raised(lambda: _ollama_chat(client))

    assert type(exc) is ollama.ResponseError
    assert exc.status_code == 429
    assert classify_error(exc) is K.RATE_LIMIT


async def test_ollama_sdk_error_line_mid_stream() -> None:
    chunk = {"model": "llama3", "created_at": "2025-01-01T00:00:00Z", "message": {"role": "assistant", "content": "Hi"}}
    body = json.dumps({**chunk, "done": False}) + "\n" + json.dumps({"error": "llama runner crashed"}) + "\n"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body.encode())

    async with _ollama_client(handler) as client:
        exc = await raised(lambda: _ollama_chat(client, stream=True))

    assert type(exc) is ollama.ResponseError
    assert exc.status_code == -1
    assert classify_error(exc) is K.SERVER_ERROR


@pytest.mark.parametrize(
    ("stream", "exc_type"),
    [
        # Non-streaming calls turn httpx.ConnectError into the builtin; streaming ones do not wrap it.
        pytest.param(False, ConnectionError, id="create"),
        pytest.param(True, httpx.ConnectError, id="stream"),
    ],
)
async def test_ollama_sdk_connect_failure(stream: bool, exc_type: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("All connection attempts failed", request=request)

    async with _ollama_client(handler) as client:
        exc = await raised(lambda: _ollama_chat(client, stream=stream))

    assert type(exc) is exc_type
    assert classify_error(exc) is K.CONNECTION


# --------------------------------------------------------------------------- httpx and httpx2


@pytest.fixture(params=[httpx, httpx2], ids=["httpx", "httpx2"])
def http(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ReadTimeout", K.TIMEOUT),
        ("ConnectTimeout", K.TIMEOUT),
        ("WriteTimeout", K.TIMEOUT),
        ("PoolTimeout", K.TIMEOUT),
        ("ConnectError", K.CONNECTION),
        ("ReadError", K.CONNECTION),
        ("WriteError", K.CONNECTION),
        ("RemoteProtocolError", K.CONNECTION),
        ("ProxyError", K.CONNECTION),
        ("DecodingError", K.INVALID_RESPONSE),
        ("TooManyRedirects", K.BAD_REQUEST),
    ],
)
def test_httpx_request_errors(http: ModuleType, name: str, expected: ErrorKind) -> None:
    request = http.Request("POST", "http://127.0.0.1/v1/chat/completions")
    exc = getattr(http, name)("failed", request=request)

    assert classify_error(exc) is expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, None, K.RATE_LIMIT),
        (429, {"error": {"code": "insufficient_quota", "message": "quota"}}, K.PERMISSION),
        (400, {"error": {"type": "invalid_request_error", "message": "prompt is too long"}}, K.CONTEXT_LENGTH),
        (401, None, K.AUTHENTICATION),
        (404, None, K.NOT_FOUND),
        (503, None, K.OVERLOADED),
        (500, None, K.SERVER_ERROR),
    ],
)
def test_httpx_status_errors(http: ModuleType, status: int, body: object, expected: ErrorKind) -> None:
    request = http.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = (
        http.Response(status, request=request, json=body)
        if body is not None
        else http.Response(status, request=request)
    )
    with pytest.raises(http.HTTPStatusError) as info:
        response.raise_for_status()

    assert classify_error(info.value) is expected


async def test_httpx_status_error_with_unread_stream_body(http: ModuleType) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"error": {"code": "insufficient_quota"}}'

    def handler(request: Any) -> Any:
        # An async iterator, unlike bytes, leaves the body unread until the caller reads it.
        return http.Response(429, content=body())

    async with (
        http.AsyncClient(transport=http.MockTransport(handler)) as client,
        client.stream("POST", "http://127.0.0.1/v1/chat/completions") as response,
    ):
        with pytest.raises(http.HTTPStatusError) as info:
            response.raise_for_status()

        # The body is unread, so its code is unknowable: the status alone decides, without raising.
        assert classify_error(info.value) is K.RATE_LIMIT


# --------------------------------------------------------------------------- builtins, causes, duck typing


class _Unknown(Exception):
    pass


class _StatusError(Exception):
    def __init__(self, status_code: object, **attributes: object) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code
        self.__dict__.update(attributes)


class _ExplodingBody(dict[str, object]):
    def get(self, *args: object, **kwargs: object) -> Any:
        raise RuntimeError("broken body mapping")


class _ExplodingCode(Exception):
    status_code = 429

    @property
    def code(self) -> str:
        raise RuntimeError("broken property")


def _chained(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def _chain_of(depth: int, innermost: BaseException) -> BaseException:
    exc = innermost
    for level in range(depth):
        exc = _chained(_Unknown(f"level {level}"), exc)
    return exc


def _json_error() -> json.JSONDecodeError:
    try:
        json.loads("{not json")
    except json.JSONDecodeError as exc:
        return exc
    raise AssertionError("unreachable")


def _validation_error() -> pydantic.ValidationError:
    try:
        Answer.model_validate({"value": "nope"})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def _openai_rate_limit() -> openai.RateLimitError:
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    body = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}
    return openai.RateLimitError("Error code: 429", response=httpx2.Response(429, request=request), body=body)


def _budget_exceeded() -> BudgetExceededError:
    return BudgetExceededError(
        scope="project",
        key="acme",
        project="acme",
        period=None,
        period_start=None,
        limit_usd=Decimal(1),
        spent_usd=Decimal(1),
    )


def _cycle() -> BaseException:
    first, second = _Unknown("a"), _Unknown("b")
    first.__cause__, second.__cause__ = second, first
    return first


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(asyncio.CancelledError(), K.CANCELLED, id="CancelledError"),
        pytest.param(KeyboardInterrupt(), K.CANCELLED, id="KeyboardInterrupt"),
        pytest.param(TimeoutError(), K.TIMEOUT, id="TimeoutError"),
        pytest.param(ConnectionResetError(104, "reset by peer"), K.CONNECTION, id="ConnectionResetError"),
        pytest.param(ConnectionRefusedError(111, "refused"), K.CONNECTION, id="ConnectionRefusedError"),
        pytest.param(BrokenPipeError(), K.CONNECTION, id="BrokenPipeError"),
        pytest.param(_json_error(), K.INVALID_RESPONSE, id="JSONDecodeError"),
        pytest.param(_validation_error(), K.INVALID_RESPONSE, id="pydantic.ValidationError"),
        pytest.param(ValueError("something else"), K.UNKNOWN, id="unknown"),
        pytest.param(OSError("disk full"), K.UNKNOWN, id="other-OSError"),
        pytest.param(_chained(_Unknown("wrapped"), _openai_rate_limit()), K.RATE_LIMIT, id="cause-is-RateLimitError"),
        pytest.param(_chain_of(5, TimeoutError()), K.TIMEOUT, id="cause-5-deep"),
        pytest.param(_chain_of(6, TimeoutError()), K.UNKNOWN, id="cause-too-deep"),
        pytest.param(_cycle(), K.UNKNOWN, id="cause-cycle"),
        # A budget refused the call (in a client this one wraps): retrying or another client would spend on.
        pytest.param(_budget_exceeded(), K.PERMISSION, id="BudgetExceededError"),
        pytest.param(
            _chained(_Unknown("wrapped"), _budget_exceeded()), K.PERMISSION, id="cause-is-BudgetExceededError"
        ),
        # The wrapper's kind wins over its cause's.
        pytest.param(_chained(TimeoutError(), ConnectionResetError()), K.TIMEOUT, id="outer-wins"),
        # AutoGen teams re-raise provider errors as RuntimeError("RateLimitError: Error code: 429 ...")
        # with no cause; the text is not trusted.
        pytest.param(RuntimeError("RateLimitError: Error code: 429 - rate limited"), K.UNKNOWN, id="name-in-message"),
        pytest.param(_StatusError(503), K.OVERLOADED, id="status_code-503"),
        pytest.param(_StatusError(429, code="insufficient_quota"), K.PERMISSION, id="status_code-with-code"),
        pytest.param(
            _StatusError(400, body={"error": {"code": "context_length_exceeded"}}), K.CONTEXT_LENGTH, id="duck-body"
        ),
        pytest.param(_StatusError(200), K.UNKNOWN, id="status_code-200"),
        pytest.param(_StatusError("503"), K.UNKNOWN, id="status_code-str"),
        pytest.param(_StatusError(True), K.UNKNOWN, id="status_code-bool"),
        pytest.param(_WithResponse(_Plain(status_code=404)), K.NOT_FOUND, id="response.status_code"),
        pytest.param(_ExplodingCode(), K.RATE_LIMIT, id="raising-property"),
        pytest.param(_StatusError(429, body=_ExplodingBody()), K.UNKNOWN, id="raising-body-is-unknown-not-a-crash"),
        pytest.param(
            _chained(_StatusError(429, body=_ExplodingBody()), TimeoutError()), K.TIMEOUT, id="raising-body-then-cause"
        ),
    ],
)
def test_builtin_and_generic(exc: BaseException, expected: ErrorKind) -> None:
    assert classify_error(exc) is expected


def test_classification_does_not_import_sdks() -> None:
    script = textwrap.dedent(
        """
        import asyncio, json, sys

        import autogen_reliability.retry._classify as classify

        before = set(sys.modules)
        kinds = [
            classify.classify_error(exc)
            for exc in (TimeoutError(), ConnectionResetError(), asyncio.CancelledError(), ValueError("x"))
        ]
        assert classify.retry_after(TimeoutError()) is None
        added = set(sys.modules) - before
        assert not added, added
        assert "anthropic" not in sys.modules
        assert "ollama" not in sys.modules
        print(json.dumps([kind.value for kind in kinds]))
        """
    )

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["timeout", "connection", "cancelled", "unknown"]
