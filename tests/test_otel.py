"""OpenTelemetry spans: a GenAI `chat` span per call under the caller's span, a child span per provider attempt."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator, Sequence
from decimal import Decimal

import openai
import pytest
from autogen_core.models import CreateResult, UserMessage
from autogen_ext.models.cache import ChatCompletionCache
from autogen_ext.models.openai import OpenAIChatCompletionClient
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceState
from opentelemetry.util.types import Attributes

from autogen_reliability import (
    ConfigurationError,
    ResponseValidationError,
    RetriesExhaustedError,
    RetryPolicy,
    ValidationPolicy,
    reliable,
    usage_scope,
)
from autogen_reliability.otel import disable_tracing, enable_tracing
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage, ScriptedChatCompletionClient

from .conftest import OpenAIClientFactory, run_python, validating_around_a_wrapped_client
from .memory_cache import MemoryStore
from .storage_fixtures import Ledger, ledger_rows

HI = [UserMessage(content="hi, this prompt stays out of every span", source="user")]
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02)
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
R = "autogen_reliability."


@pytest.fixture
def provider() -> TracerProvider:
    """An SDK tracer provider of this test's own (the global one is left alone)."""
    return TracerProvider()


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    """Tracing on, to an in-memory exporter; off again after the test."""
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_tracing(provider)
    yield exporter
    disable_tracing()


def chat_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith("chat")]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    found = [
        span
        for span in exporter.get_finished_spans()
        if span.parent is not None and parent.context is not None and span.parent.span_id == parent.context.span_id
    ]
    return sorted(found, key=lambda span: str((span.attributes or {}).get(f"{R}attempt")))


def every_string(span: ReadableSpan) -> list[str]:
    """Every text a span carries: its name, attribute values, status, events."""
    texts = [span.name, span.status.description or ""]
    for value in (span.attributes or {}).values():
        texts.extend(str(item) for item in (value if isinstance(value, tuple) else (value,)))
    for event in span.events:
        texts.append(event.name)
        texts.extend(str(value) for value in (event.attributes or {}).values())
    return texts


async def test_a_retried_call_is_one_chat_span_under_the_callers_with_an_attempt_span_each(
    spans: InMemorySpanExporter,
    provider: TracerProvider,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    client = reliable(make_openai_client(), recorder=ledger[1], project="acme", agent="writer", retry=FAST)
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("hello", usage=FakeUsage(prompt_tokens=1200, completion_tokens=80, cached_tokens=1000)),
    )
    tracer = provider.get_tracer("the application")
    with tracer.start_as_current_span("handle request") as parent, usage_scope(session="ticket-4711"):
        await client.create(HI)
    rows = ledger_rows(ledger)
    (call,) = [span for span in chat_spans(spans) if span.attributes and f"{R}call_id" in span.attributes]
    assert call.parent is not None
    assert call.parent.span_id == parent.get_span_context().span_id
    assert call.name == "chat gpt-4o-mini"
    assert call.kind is SpanKind.CLIENT
    assert call.status.status_code is StatusCode.UNSET
    attributes = dict(call.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (1200, 80)
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.conversation.id"] == "ticket-4711"
    assert (attributes[f"{R}project"], attributes[f"{R}session"], attributes[f"{R}agent"]) == (
        "acme",
        "ticket-4711",
        "writer",
    )
    assert attributes[f"{R}call_id"] == str(rows[0].call_id)
    assert attributes[f"{R}attempts"] == 2
    assert attributes[f"{R}outcome"] == "ok"
    # The cost is the ledger's, exactly, as a decimal string.
    assert Decimal(str(attributes[f"{R}cost_usd"])) * 10**9 == sum(row.cost_nanousd or 0 for row in rows) > 0

    failed, answered = children(spans, call)
    assert [span.name for span in (failed, answered)] == ["chat gpt-4o-mini"] * 2
    assert failed.kind is answered.kind is SpanKind.CLIENT
    assert failed.attributes is not None
    assert answered.attributes is not None
    assert (failed.attributes[f"{R}attempt"], answered.attributes[f"{R}attempt"]) == (1, 2)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "RateLimitError"
    assert failed.attributes[f"{R}error_kind"] == "rate_limit"
    assert failed.attributes["http.response.status_code"] == 429
    assert failed.attributes[f"{R}outcome"] == "error"
    assert answered.status.status_code is StatusCode.UNSET
    assert "error.type" not in answered.attributes
    assert answered.attributes["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert Decimal(str(answered.attributes[f"{R}cost_usd"])) * 10**9 == rows[1].cost_nanousd
    # Each attempt in its own time, inside the call's.
    assert call.start_time is not None
    assert call.end_time is not None
    assert failed.start_time is not None
    assert failed.end_time is not None
    assert answered.start_time is not None
    assert answered.end_time is not None
    assert call.start_time <= failed.start_time <= failed.end_time <= answered.start_time
    assert answered.start_time <= answered.end_time <= call.end_time
    # No message content anywhere.
    for span in (call, failed, answered):
        assert not any("this prompt stays out" in text or text == "hello" for text in every_string(span))


async def test_a_failed_call_is_an_error_span_and_carries_no_key(
    spans: InMemorySpanExporter, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    key = "sk-proj-Recognisable0123456789abcdef"
    client = reliable(make_openai_client(api_key=key), retry=None, track_usage=False)
    fake_openai_server.enqueue(FakeReply.error(401, message=f"Incorrect API key provided: {key}."))
    with pytest.raises(openai.AuthenticationError):
        await client.create(HI)
    (call,) = [span for span in chat_spans(spans) if span.parent is None]
    (attempt,) = children(spans, call)
    for span in (call, attempt):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "AuthenticationError"
        assert span.attributes[f"{R}error_kind"] == "authentication"
        assert "Incorrect API key provided" in (span.status.description or "")
        assert not any("Recognisable0123456789" in text for text in every_string(span))
    assert attempt.attributes is not None
    assert attempt.attributes["http.response.status_code"] == 401


async def test_a_connection_failure_names_where_it_went_but_no_credential_path_or_query_of_the_base_url(
    spans: InMemorySpanExporter,
) -> None:
    with socket.socket() as taken:  # a port nothing listens on once it is closed
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
    base_url = f"http://deploy-user:s3cret-pass@127.0.0.1:{port}/v1/deployments/team-private?api-key=k3y-in-query"
    inner = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test", base_url=base_url, max_retries=0)
    client = reliable(inner, retry=None, track_usage=False)
    with pytest.raises(openai.APIConnectionError):
        await client.create(HI)
    (call,) = [span for span in chat_spans(spans) if span.parent is None]
    (attempt,) = children(spans, call)
    for span in (call, attempt):
        assert span.status.status_code is StatusCode.ERROR
        # As the page says: the scheme, host and port it tried, as a backend's server.address would have them.
        assert f"(http://127.0.0.1:{port}: " in (span.status.description or "")
        for text in every_string(span):
            for secret in ("deploy-user", "s3cret-pass", "team-private", "k3y-in-query", "/v1"):
                assert secret not in text


class Unprintable(Exception):
    """An exception whose ``__str__`` raises, as some SDKs' do on an odd response."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


class Started(SpanProcessor):
    """Remembers every span started, to tell whether each was ended."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.spans.append(span)


async def test_an_attempt_the_deadline_cut_short_is_a_timeout_span(
    spans: InMemorySpanExporter, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A provider that never answers: the deadline ends the attempt, which timed out (not "cancelled", which says
    # the caller stopped it), as the SDK's own timeout would have; the call's span says the deadline passed.
    fake_openai_server.default = lambda request: FakeReply.text("too late", delay=math.inf)
    client = reliable(make_openai_client(), retry=RetryPolicy(max_attempts=1, deadline=1), track_usage=False)
    with pytest.raises(RetriesExhaustedError):
        await client.create(HI)
    (call,) = [span for span in chat_spans(spans) if span.parent is None]
    assert call.attributes is not None
    assert (call.attributes[f"{R}outcome"], call.attributes[f"{R}error_kind"]) == ("error", "timeout")
    assert "deadline (1 s)" in str(call.status.description)
    (attempt,) = children(spans, call)
    assert attempt.attributes is not None
    assert (attempt.attributes[f"{R}outcome"], attempt.attributes[f"{R}error_kind"]) == ("error", "timeout")
    assert attempt.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("track_usage", [False, True], ids=["without usage", "with usage"])
async def test_an_error_whose_text_cannot_be_read_still_ends_every_span(
    provider: TracerProvider, spans: InMemorySpanExporter, ledger: Ledger, track_usage: bool
) -> None:
    started = Started()
    provider.add_span_processor(started)
    recording = {"recorder": ledger[1]} if track_usage else {"track_usage": False}
    client = reliable(ScriptedChatCompletionClient([Unprintable()]), retry=None, **recording)
    with pytest.raises(Unprintable):
        await client.create(HI)
    assert started.spans
    assert all(span.end_time is not None for span in started.spans)
    (call,) = [span for span in chat_spans(spans) if span.parent is None]
    (attempt,) = children(spans, call)
    for span in (call, attempt):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "Unprintable: <str() failed: RuntimeError>"
        assert (span.attributes or {})["error.type"] == "Unprintable"


async def test_lone_surrogates_reach_no_span(spans: InMemorySpanExporter) -> None:
    # An exporter encodes every string in UTF-8 (OTLP's protobuf), which holds no lone surrogate.
    inner = ScriptedChatCompletionClient([ValueError("cut \ud83d")], model="gpt-\udfff")
    client = reliable(inner, project="acme-\ud800", agent="writer", retry=None, track_usage=False)
    with usage_scope(session="ticket-\udc00"), pytest.raises(ValueError, match="cut"):
        await client.create(HI)
    (call,) = [span for span in chat_spans(spans) if span.parent is None]
    (attempt,) = children(spans, call)
    for span in (call, attempt):
        for text in every_string(span):
            text.encode()  # no UnicodeEncodeError
        assert span.name == "chat gpt-\ufffd"
        attributes = span.attributes or {}
        assert (attributes[f"{R}project"], attributes[f"{R}session"], attributes["gen_ai.request.model"]) == (
            "acme-\ufffd",
            "ticket-\ufffd",
            "gpt-\ufffd",
        )
        assert span.status.description == "ValueError: cut \ufffd"


@pytest.mark.parametrize("recorded", [True, False], ids=["usage rows", "no usage rows"])
async def test_an_answer_validation_rejected_is_an_attempt_span_marked_invalid_not_an_error(
    recorded: bool,
    spans: InMemorySpanExporter,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # Validation's verdict is the span's with or without a ledger to read it from.
    recording = {"recorder": ledger[1]} if recorded else {"track_usage": False}
    client = reliable(make_openai_client(), validation=ValidationPolicy(SCHEMA), **recording)
    fake_openai_server.enqueue(
        FakeReply.text("no json", usage=FakeUsage(prompt_tokens=20, completion_tokens=2)),
        FakeReply.json({"n": 1}, usage=FakeUsage(prompt_tokens=40, completion_tokens=3)),
    )
    await client.create(HI)
    (call,) = [span for span in chat_spans(spans) if span.parent is None]
    rejected, accepted = children(spans, call)
    assert rejected.attributes is not None
    assert accepted.attributes is not None
    assert rejected.attributes[f"{R}outcome"] == "invalid"
    assert rejected.attributes[f"{R}validation_errors"] == 1
    assert rejected.status.status_code is StatusCode.UNSET
    assert accepted.attributes[f"{R}outcome"] == "ok"
    assert call.attributes is not None
    assert f"{R}validation_errors" not in accepted.attributes
    assert (call.attributes["gen_ai.usage.input_tokens"], call.attributes["gen_ai.usage.output_tokens"]) == (60, 5)
    assert [row.outcome for row in ledger_rows(ledger)] == (["invalid", "ok"] if recorded else [])


async def test_an_answer_still_invalid_fails_the_call_span_without_the_answers_text(
    spans: InMemorySpanExporter,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # A schema error quotes the value it rejects: the model's answer, which may hold the user's data.
    client = reliable(make_openai_client(), recorder=ledger[1], validation=ValidationPolicy(SCHEMA, reask=0))
    fake_openai_server.enqueue(FakeReply.json({"n": "Jane Doe, 12 Elm Street"}))
    with pytest.raises(ResponseValidationError, match="Jane Doe"):  # the caller's error keeps it
        await client.create(HI)
    (call,) = [span for span in chat_spans(spans) if span.parent is None]
    assert call.status.status_code is StatusCode.ERROR
    assert (
        call.status.description
        == "ResponseValidationError: the model's answer was invalid after 1 attempt(s): 1 violation(s)"
    )
    assert (call.attributes or {})["error.type"] == "ResponseValidationError"
    for span in (call, *children(spans, call)):
        assert not any("Jane Doe" in text or "Elm Street" in text for text in every_string(span))


async def test_a_stream_is_a_span_too(
    spans: InMemorySpanExporter, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    client = reliable(make_openai_client(), track_usage=False)
    fake_openai_server.enqueue(FakeReply.text("streamed words", usage=FakeUsage(prompt_tokens=7, completion_tokens=2)))
    items = [item async for item in client.create_stream(HI)]
    assert isinstance(items[-1], CreateResult)
    (call,) = [span for span in chat_spans(spans) if span.parent is None]
    (attempt,) = children(spans, call)
    assert call.attributes is not None
    assert call.attributes[f"{R}streamed"] is True
    assert attempt.attributes is not None
    assert (attempt.attributes["gen_ai.usage.input_tokens"], attempt.attributes["gen_ai.usage.output_tokens"]) == (7, 2)
    assert call.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "create_stream"])
async def test_without_usage_rows_an_attempt_span_has_the_providers_own_usage_and_model(
    streamed: bool,
    spans: InMemorySpanExporter,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # AutoGen's RequestUsage drops the cached and reasoning tokens, and its CreateResult has no model: the
    # provider's response has them.
    client = reliable(make_openai_client(), track_usage=False)
    usage = FakeUsage(prompt_tokens=1000, completion_tokens=50, cached_tokens=800, reasoning_tokens=30)
    fake_openai_server.enqueue(FakeReply.text("an answer", usage=usage))
    if streamed:
        async for _ in client.create_stream(HI):
            pass
    else:
        await client.create(HI)
    (call,) = [span for span in chat_spans(spans) if span.parent is None]
    (attempt,) = children(spans, call)
    assert attempt.attributes is not None
    assert {name: value for name, value in attempt.attributes.items() if name.startswith("gen_ai.u")} == {
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 50,
        "gen_ai.usage.cache_read.input_tokens": 800,
        "gen_ai.usage.reasoning.output_tokens": 30,
    }
    assert attempt.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert call.attributes is not None
    assert call.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("recorded", [True, False], ids=["usage rows", "no usage rows"])
async def test_a_model_asked_for_in_extra_create_args_is_the_spans_request_model(
    recorded: bool,
    spans: InMemorySpanExporter,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # AutoGen's clients send extra_create_args over their own: the request asks for gpt-4o-mini, and the
    # ledger names and prices it so; the spans name it as the ledger does. A plain call names the client's own.
    recording = {"recorder": ledger[1]} if recorded else {"track_usage": False}
    client = reliable(make_openai_client(model="gpt-4o"), retry=FAST, **recording)
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("hello", usage=FakeUsage(prompt_tokens=12, completion_tokens=3)),
        FakeReply.text("plain", usage=FakeUsage(prompt_tokens=12, completion_tokens=3)),
    )
    await client.create(HI, extra_create_args={"model": "gpt-4o-mini"})
    await client.create(HI)
    assert [request.model for request in fake_openai_server.requests] == [
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o",
    ]
    overridden, plain = sorted(
        (span for span in chat_spans(spans) if span.parent is None), key=lambda s: s.start_time or 0
    )
    attempts = children(spans, overridden)
    assert len(attempts) == 2
    for span in (overridden, *attempts):
        assert span.name == "chat gpt-4o-mini"
        assert span.attributes is not None
        assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert span.attributes["gen_ai.provider.name"] == "openai"
    for span in (plain, *children(spans, plain)):
        assert span.name == "chat gpt-4o"
        assert (span.attributes or {})["gen_ai.request.model"] == "gpt-4o"
    if recorded:
        assert [row.model for row in ledger_rows(ledger)] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]


@pytest.mark.parametrize("recorded", [True, False], ids=["usage rows", "no usage rows"])
async def test_a_wrapped_fallbacks_tokens_and_cost_are_on_its_own_spans_once(
    recorded: bool,
    spans: InMemorySpanExporter,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The primary fails; the fallback, a wrapper of its own, is retried once (a 429) and answers.
    recorder = ledger[1] if recorded else None
    backup = reliable(make_openai_client(model="gpt-4o"), retry=FAST, recorder=recorder, track_usage=recorded)
    client = reliable(make_openai_client(), retry=None, fallbacks=[backup], recorder=recorder, track_usage=recorded)
    fake_openai_server.enqueue(
        FakeReply.error(500),
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("from the fallback", usage=FakeUsage(prompt_tokens=30, completion_tokens=3)),
    )
    await client.create(HI)
    calls = {span.name: span for span in chat_spans(spans) if span.attributes and f"{R}call_id" in span.attributes}
    outer, inner = calls["chat gpt-4o-mini"], calls["chat gpt-4o"]
    on_primary, on_backup = children(spans, outer)
    assert [len(children(spans, inner)), fake_openai_server.request_count] == [2, 3]
    # The outer call's attempt on the wrapper is a call of that wrapper: its span says so and counts nothing.
    assert on_backup.attributes is not None
    assert on_backup.attributes[f"{R}on_wrapper"] is True
    assert on_backup.attributes[f"{R}outcome"] == "ok"
    assert "gen_ai.usage.input_tokens" not in on_backup.attributes
    assert f"{R}cost_usd" not in on_backup.attributes
    assert on_primary.attributes is not None
    assert f"{R}on_wrapper" not in on_primary.attributes

    def summed(found: list[ReadableSpan], name: str) -> int:
        return sum(int(str((span.attributes or {}).get(name, 0))) for span in found)

    attempts = [span for span in chat_spans(spans) if f"{R}attempt" in (span.attributes or {})]
    # Summed over every attempt span, or over every call span, each provider request's tokens count once.
    for found in (attempts, [outer, inner]):
        assert summed(found, "gen_ai.usage.input_tokens") == 30
        assert summed(found, "gen_ai.usage.output_tokens") == 3
    if recorded:
        rows = ledger_rows(ledger)
        assert len(rows) == 3
        costs = [Decimal(str((span.attributes or {}).get(f"{R}cost_usd", 0))) for span in (outer, inner)]
        assert sum(costs) * 10**9 == sum(row.cost_nanousd or 0 for row in rows) > 0


async def test_a_wrapped_fallback_that_records_nothing_under_one_that_does_has_its_cost_on_the_outer_spans(
    spans: InMemorySpanExporter,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # Only the outer wrapper records: its row of the attempt on the fallback is the one with that call's cost.
    backup = reliable(make_openai_client(model="gpt-4o"), track_usage=False, retry=None)
    client = reliable(make_openai_client(), recorder=ledger[1], retry=None, fallbacks=[backup])
    fake_openai_server.enqueue(
        FakeReply.error(500), FakeReply.text("b", usage=FakeUsage(prompt_tokens=40, completion_tokens=4))
    )
    await client.create(HI)
    rows = ledger_rows(ledger)
    ledger_cost = sum(row.cost_nanousd or 0 for row in rows)
    assert ledger_cost > 0
    calls = {span.name: span for span in chat_spans(spans) if span.attributes and f"{R}call_id" in span.attributes}
    outer, inner = calls["chat gpt-4o-mini"], calls["chat gpt-4o"]
    _, on_backup = children(spans, outer)
    assert on_backup.attributes is not None
    assert on_backup.attributes[f"{R}on_wrapper"] is True
    assert "gen_ai.usage.input_tokens" not in on_backup.attributes  # the fallback's own spans carry them

    def summed(found: list[ReadableSpan], name: str) -> Decimal:
        return sum((Decimal(str((span.attributes or {}).get(name, 0))) for span in found), Decimal(0))

    attempts = [span for span in chat_spans(spans) if f"{R}attempt" in (span.attributes or {})]
    # Summed over every attempt span, or over every call span: each request once, the ledger's cost.
    for found in (attempts, [outer, inner]):
        assert summed(found, "gen_ai.usage.input_tokens") == 40
        assert summed(found, "gen_ai.usage.output_tokens") == 4
        assert summed(found, f"{R}cost_usd") * 10**9 == ledger_cost


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("inner", ["nested", "nested-unrecorded", "fallback", "fallback-unrecorded"])
async def test_an_answer_the_outer_wrappers_validation_refused_is_invalid_on_its_requests_span_with_its_rows_cost(
    inner: str,
    streamed: bool,
    spans: InMemorySpanExporter,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # A wrapped client (nested in the outer wrapper, or its fallback) answered; the outer wrapper's validation
    # refused the answer and re-asked. The ledger's row of that request is invalid, and its span says what the
    # row says: the outcome, the violations and the cost, which sum over the spans to the ledger's.
    client = validating_around_a_wrapped_client(inner, ledger[1], fake_openai_server, make_openai_client)
    if streamed:
        async for _item in client.create_stream(HI):
            pass
    else:
        await client.create(HI)
    rows = ledger_rows(ledger)
    assert len(rows) == fake_openai_server.request_count
    requests = [
        span.attributes or {}
        for span in sorted(chat_spans(spans), key=lambda span: span.start_time or 0)
        if f"{R}attempt" in (span.attributes or {}) and f"{R}on_wrapper" not in (span.attributes or {})
    ]
    answered = [attributes for attributes in requests if "gen_ai.response.finish_reasons" in attributes]
    assert [(row.outcome, row.validation_errors) for row in rows if row.http_status is None] == [
        ("invalid", 1),
        ("ok", 0),
    ]
    assert [(span[f"{R}outcome"], span.get(f"{R}validation_errors", 0)) for span in answered] == [
        ("invalid", 1),
        ("ok", 0),
    ]
    ledger_cost = sum(row.cost_nanousd or 0 for row in rows)
    assert ledger_cost > 0
    assert sum(Decimal(str(span.get(f"{R}cost_usd", 0))) for span in requests) * 10**9 == ledger_cost
    calls = [span.attributes or {} for span in chat_spans(spans) if f"{R}call_id" in (span.attributes or {})]
    assert sum(Decimal(str(span.get(f"{R}cost_usd", 0))) for span in calls) * 10**9 == ledger_cost


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
async def test_an_answer_autogens_cache_gives_between_two_wrappers_has_its_rows_tokens_on_the_outer_spans(
    streamed: bool,
    spans: InMemorySpanExporter,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # A miss is the inner wrapper's request, row and spans; a hit made no call there: the outer wrapper's row is
    # its only record, and so its attempt span carries that row's tokens and cost (0), as under a bare client.
    fake_openai_server.enqueue(FakeReply.text("drafted", usage=FakeUsage(prompt_tokens=30, completion_tokens=4)))
    cache = ChatCompletionCache(reliable(make_openai_client(), recorder=ledger[1], retry=None), MemoryStore())
    client = reliable(cache, recorder=ledger[1], retry=None)
    for _ in range(2):
        if streamed:
            async for _item in client.create_stream(HI):
                pass
        else:
            await client.create(HI)
    rows = ledger_rows(ledger)
    assert [(row.cache_hit, row.prompt_tokens, row.completion_tokens) for row in rows] == [
        (False, 30, 4),
        (True, 30, 4),
    ]
    (call,) = [span for span in chat_spans(spans) if (span.attributes or {}).get(f"{R}call_id") == str(rows[1].call_id)]
    (hit,) = children(spans, call)
    assert hit.attributes is not None
    assert f"{R}on_wrapper" not in hit.attributes
    assert hit.attributes[f"{R}cost_usd"] == "0"

    def summed(found: list[ReadableSpan], name: str) -> int:
        return sum(int(str((span.attributes or {}).get(name, 0))) for span in found)

    attempts = [span for span in chat_spans(spans) if f"{R}attempt" in (span.attributes or {})]
    calls = [span for span in chat_spans(spans) if f"{R}attempt" not in (span.attributes or {})]
    # Summed over every attempt span, or over every call span: the ledger's tokens, each row once.
    for found in (attempts, calls):
        assert summed(found, "gen_ai.usage.input_tokens") == sum(row.prompt_tokens for row in rows) == 60
        assert summed(found, "gen_ai.usage.output_tokens") == sum(row.completion_tokens for row in rows) == 8


async def test_tracing_off_makes_no_spans_and_enabling_is_idempotent(
    provider: TracerProvider, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_tracing(provider)
    enable_tracing(provider)
    enable_tracing()  # on already: the provider in use stays
    with pytest.raises(ConfigurationError, match="another tracer provider"):
        enable_tracing(TracerProvider())
    fake_openai_server.default = FakeReply.text("ok")
    client = reliable(make_openai_client(), track_usage=False)
    await client.create(HI)
    assert len(chat_spans(exporter)) == 2  # one call, one attempt: subscribed once
    disable_tracing()
    disable_tracing()
    await client.create(HI)
    assert len(chat_spans(exporter)) == 2
    with pytest.raises(ConfigurationError, match="TracerProvider"):
        enable_tracing("provider")  # type: ignore[arg-type]


class KeepFailures(Sampler):
    """Samples only spans that start with an ``error.type``: what a head sampler can read is what a span starts with."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        keep = attributes is not None and "error.type" in attributes
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "KeepFailures"


async def test_a_sampler_sees_whole_spans_and_can_keep_the_failed_calls_only(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=KeepFailures())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_tracing(provider)
    try:
        client = reliable(make_openai_client(), retry=None, track_usage=False)
        fake_openai_server.enqueue(FakeReply.text("fine"), FakeReply.error(400))
        await client.create(HI)
        with pytest.raises(openai.BadRequestError):
            await client.create(HI)
    finally:
        disable_tracing()
    kept = exporter.get_finished_spans()
    assert len(kept) == 2  # the failed call and its attempt; the answered call was dropped whole
    assert {(span.attributes or {}).get("error.type") for span in kept} == {"BadRequestError"}


# The global tracer provider can be set once per process: this test runs an agent in one of its own.
AGENT_RUN = """
import asyncio, json
from autogen_agentchat.agents import AssistantAgent
from autogen_ext.models.openai import OpenAIChatCompletionClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from autogen_reliability import reliable
from autogen_reliability.otel import enable_tracing
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)  # AutoGen's own spans go to the global provider
enable_tracing()

async def main():
    with FakeOpenAIServer() as server:
        server.enqueue(FakeReply.text("a reply"))
        inner = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test", base_url=server.base_url)
        agent = AssistantAgent("writer", model_client=reliable(inner, track_usage=False))
        await agent.run(task="Draft a reply")
        await inner.close()
    spans = {span.context.span_id: span for span in exporter.get_finished_spans()}
    print(json.dumps([
        [span.name, spans[span.parent.span_id].name if span.parent and span.parent.span_id in spans else None]
        for span in spans.values()
    ]))

asyncio.run(main())
"""


def test_under_autogens_own_agent_span() -> None:
    done = run_python(AGENT_RUN)
    assert done.returncode == 0, done.stderr
    names = json.loads(done.stdout.strip().splitlines()[-1])
    call = [parent for name, parent in names if name == "chat gpt-4o-mini" and parent != "chat gpt-4o-mini"]
    assert call == ["invoke_agent writer"]


def test_importing_the_package_without_opentelemetry_names_the_extra() -> None:
    # autogen-core itself requires opentelemetry-api, so it is hidden only once the library is imported.
    script = (
        "import sys, autogen_reliability; sys.modules['opentelemetry.trace'] = None; import autogen_reliability.otel"
    )
    done = run_python(script)
    assert done.returncode != 0
    assert "ImportError: autogen_reliability.otel needs opentelemetry-api" in done.stderr
    assert "pip install 'autogen-reliability[otel]'" in done.stderr
