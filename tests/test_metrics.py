"""Prometheus metrics: scraped from /metrics, they say what the usage ledger says, with bounded labels."""

from __future__ import annotations

import math
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from autogen_core.models import ModelInfo, UserMessage
from autogen_ext.models.anthropic import AnthropicChatCompletionClient
from autogen_ext.models.cache import ChatCompletionCache
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from autogen_reliability import (
    BudgetPolicy,
    CircuitBreakerPolicy,
    CircuitOpenError,
    ConfigurationError,
    RetryPolicy,
    ValidationPolicy,
    _pipeline,
    reliable,
    usage_scope,
)
from autogen_reliability.accounting import UsageEvent, UsageRecorder, _feed
from autogen_reliability.metrics import OTHER, disable_metrics, enable_metrics, metrics_app
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import (
    FakeOpenAIServer,
    FakeReply,
    FakeUsage,
    RecordedRequest,
    ScriptedChatCompletionClient,
)

from .anthropic_wire import AnthropicReply, FakeAnthropicServer
from .conftest import OpenAIClientFactory, run_python
from .memory_cache import MemoryStore
from .storage_fixtures import Ledger, ledger_rows

HI = [UserMessage(content="hi", source="user")]
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02)
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
LOCAL_MODEL = ModelInfo(
    vision=False, function_calling=False, json_output=False, family="unknown", structured_output=False
)
P = "autogen_reliability_"


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """Metrics on, in a registry of this test's; off again after it."""
    registry = CollectorRegistry()
    assert enable_metrics(registry) is registry
    yield registry
    disable_metrics()


@pytest.fixture
def app(registry: CollectorRegistry) -> FastAPI:
    """A FastAPI application with the metrics app mounted at /metrics."""
    application = FastAPI()
    application.mount("/metrics", metrics_app())
    return application


def scrape(app: FastAPI) -> list[Sample]:
    """Every sample /metrics serves, read back with prometheus_client's own parser."""
    with TestClient(app) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def values(samples: list[Sample], name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of ``name``, keyed by the values of ``labels``, summed over the other labels."""
    found: dict[tuple[str, ...], float] = {}
    for sample in samples:
        if sample.name == name:
            key = tuple(sample.labels[label] for label in labels)
            found[key] = found.get(key, 0.0) + sample.value
    return found


async def test_a_scripted_run_scrapes_as_the_ledger_counts(
    app: FastAPI, ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    writer = reliable(make_openai_client(), recorder=ledger[1], project="acme", agent="writer", retry=FAST)
    checker = reliable(
        make_openai_client(), recorder=ledger[1], project="acme", agent="checker", validation=ValidationPolicy(SCHEMA)
    )
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("after the 429", usage=FakeUsage(prompt_tokens=120, completion_tokens=12, cached_tokens=100)),
        FakeReply.error(503, headers={"retry-after-ms": "10"}),
        FakeReply.text("after the 503", usage=FakeUsage(prompt_tokens=90, completion_tokens=9, reasoning_tokens=4)),
        FakeReply.text("no json here", usage=FakeUsage(prompt_tokens=20, completion_tokens=3)),
        FakeReply.json({"n": 1}, usage=FakeUsage(prompt_tokens=45, completion_tokens=5)),
        *[FakeReply.text(f"ok {n}", usage=FakeUsage(prompt_tokens=10 + n, completion_tokens=2)) for n in range(3)],
        FakeReply.error(400, message="malformed request"),
    )
    with usage_scope(session="ticket-4711"):
        await writer.create(HI)
        await writer.create(HI)
        await checker.create(HI)
        for _ in range(3):
            await writer.create(HI)
        with pytest.raises(openai.BadRequestError):
            await writer.create(HI)
    rows = ledger_rows(ledger)
    assert len(rows) == fake_openai_server.request_count == 10
    samples = scrape(app)

    # Attempts: a row each. An answer validation rejected is an attempt the provider answered ("ok").
    ledger_attempts = Counter(
        (row.agent or "", row.model or "", "ok" if row.outcome == "invalid" else row.outcome, row.error_kind or "")
        for row in rows
    )
    assert values(samples, f"{P}attempts_total", "agent", "model", "outcome", "error_kind") == ledger_attempts
    assert values(samples, f"{P}attempts_total", "project") == {("acme",): 10}
    # Retries: the attempts after a call's first, by what ended the attempt before.
    by_call = {(row.call_id, row.attempt): row for row in rows}
    ledger_retries = Counter(
        (row.agent or "", by_call[row.call_id, row.attempt - 1].error_kind or "invalid")
        for row in rows
        if row.attempt > 1
    )
    assert ledger_retries == {("writer", "rate_limit"): 1, ("writer", "overloaded"): 1, ("checker", "invalid"): 1}
    assert values(samples, f"{P}retries_total", "agent", "error_kind") == ledger_retries
    # Tokens and cost: the ledger's sums, to the nano-USD.
    for kind in ("prompt", "completion", "cached", "reasoning"):
        total = sum(getattr(row, f"{kind}_tokens") or 0 for row in rows)
        assert values(samples, f"{P}tokens_total", "kind").get((kind,), 0) == total, kind
    assert total_tokens(rows) == (308, 35, 100, 4)  # what the server sent: the sums are not vacuous
    (cost,) = values(samples, f"{P}cost_usd_total", "project", "model").values()
    ledger_cost = sum(row.cost_nanousd or 0 for row in rows)
    assert ledger_cost > 0
    assert round(Decimal(repr(cost)) * 10**9) == ledger_cost
    assert values(samples, f"{P}unpriced_attempts_total") == {}
    # Calls: one per call_id; the 400 ended its call.
    assert len({row.call_id for row in rows}) == 7
    assert values(samples, f"{P}calls_total", "agent", "outcome", "error_type") == {
        ("writer", "ok", ""): 5,
        ("checker", "ok", ""): 1,
        ("writer", "error", "BadRequestError"): 1,
    }
    # Durations: one observation per attempt and per call.
    assert sum(values(samples, f"{P}attempt_duration_seconds_count").values()) == 10
    assert sum(values(samples, f"{P}call_duration_seconds_count").values()) == 7
    # Sessions are never a label, and the session's value appears nowhere.
    assert all("session" not in sample.labels for sample in samples)
    assert all("ticket-4711" not in value for sample in samples for value in sample.labels.values())


def total_tokens(rows: list[UsageEvent]) -> tuple[int, int, int, int]:
    return (
        sum(row.prompt_tokens for row in rows),
        sum(row.completion_tokens for row in rows),
        sum(row.cached_tokens or 0 for row in rows),
        sum(row.reasoning_tokens or 0 for row in rows),
    )


async def test_without_usage_rows_tokens_come_from_the_attempts_and_nothing_is_counted_twice(
    app: FastAPI, ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    unrecorded = reliable(make_openai_client(), project="quiet", track_usage=False)
    recorded = reliable(make_openai_client(), project="loud", recorder=ledger[1])
    fake_openai_server.enqueue(
        FakeReply.text("a", usage=FakeUsage(prompt_tokens=30, completion_tokens=3)),
        FakeReply.text("b", usage=FakeUsage(prompt_tokens=40, completion_tokens=4)),
        FakeReply.text("c", usage=FakeUsage(prompt_tokens=50, completion_tokens=5)),
    )
    await unrecorded.create(HI)
    await unrecorded.create(HI)
    await recorded.create(HI)
    samples = scrape(app)
    assert values(samples, f"{P}tokens_total", "project", "kind") == {
        ("quiet", "prompt"): 70,
        ("quiet", "completion"): 7,
        ("loud", "prompt"): 50,
        ("loud", "completion"): 5,
    }
    # No usage row, no price: the unrecorded calls have no cost, and are not "unpriced" rows either.
    assert set(values(samples, f"{P}cost_usd_total", "project")) == {("loud",)}
    assert values(samples, f"{P}unpriced_attempts_total") == {}
    assert values(samples, f"{P}attempts_total", "project") == {("quiet",): 2, ("loud",): 1}


@pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-0' is deprecated:DeprecationWarning")
async def test_without_usage_rows_tokens_are_the_providers_own_with_their_cached_and_reasoning_parts(
    app: FastAPI, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # AutoGen's RequestUsage drops cached and reasoning tokens, and its Anthropic client reports the prompt
    # without what was read from or written to the cache: the provider's own numbers are the response's.
    openai_client = reliable(make_openai_client(), project="openai", track_usage=False)
    fake_openai_server.enqueue(
        FakeReply.text("a", usage=FakeUsage(prompt_tokens=1000, completion_tokens=50, cached_tokens=800)),
        FakeReply.text("b", usage=FakeUsage(prompt_tokens=100, completion_tokens=40, reasoning_tokens=30)),
    )
    await openai_client.create(HI)
    async for _ in openai_client.create_stream(HI):
        pass
    cached = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 1000}
    cached["cache_creation_input_tokens"] = 200
    with FakeAnthropicServer() as anthropic_server:
        inner = AnthropicChatCompletionClient(
            model="claude-sonnet-4-0", api_key="sk-ant-test", base_url=anthropic_server.base_url, max_retries=0
        )
        anthropic_client = reliable(inner, project="anthropic", track_usage=False)
        anthropic_server.enqueue(*[AnthropicReply("hello", "claude-sonnet-4-20250514", cached)] * 2)
        await anthropic_client.create(HI)
        async for _ in anthropic_client.create_stream(HI):
            pass
        await inner.close()
    assert values(scrape(app), f"{P}tokens_total", "project", "kind") == {
        ("openai", "prompt"): 1100,
        ("openai", "completion"): 90,
        ("openai", "cached"): 800,
        ("openai", "reasoning"): 30,
        ("anthropic", "prompt"): 2 * 1210,  # the ledger's prompt: 10 new, 1,000 read from the cache, 200 written
        ("anthropic", "completion"): 2 * 5,
        ("anthropic", "cached"): 2 * 1000,
    }


async def test_the_attempts_of_a_wrapped_fallback_are_counted_once(
    app: FastAPI, ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The primary fails; the fallback, a wrapper of its own, is retried once (a 429) and answers.
    backup = reliable(make_openai_client(model="gpt-4o"), recorder=ledger[1], project="acme", retry=FAST)
    client = reliable(make_openai_client(), recorder=ledger[1], project="acme", retry=None, fallbacks=[backup])
    fake_openai_server.enqueue(
        FakeReply.error(500),
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("from the fallback", usage=FakeUsage(prompt_tokens=30, completion_tokens=3)),
    )
    await client.create(HI)
    rows = ledger_rows(ledger)
    assert len(rows) == fake_openai_server.request_count == 3
    samples = scrape(app)
    ledger_attempts = Counter((row.model or "", row.outcome, row.error_kind or "") for row in rows)
    assert ledger_attempts == {
        ("gpt-4o-mini", "error", "server_error"): 1,
        ("gpt-4o", "error", "rate_limit"): 1,
        ("gpt-4o", "ok", ""): 1,
    }
    assert values(samples, f"{P}attempts_total", "model", "outcome", "error_kind") == ledger_attempts
    assert sum(values(samples, f"{P}attempt_duration_seconds_count").values()) == 3
    assert values(samples, f"{P}retries_total", "model", "error_kind") == {("gpt-4o", "rate_limit"): 1}
    assert values(samples, f"{P}tokens_total", "model", "kind") == {
        ("gpt-4o", "prompt"): 30,
        ("gpt-4o", "completion"): 3,
    }


async def test_an_attempt_the_deadline_cut_short_is_counted_as_a_timeout(
    app: FastAPI, ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The primary never answers; its deadline ends the attempt and the fallback answers. The cut attempt timed
    # out: so say its row, its series and the fallback's retry (before, "cancelled", as a caller's cancel).
    def by_model(request: RecordedRequest) -> FakeReply:
        if request.model == "gpt-4o-mini":
            return FakeReply.text("too late", delay=math.inf)
        return FakeReply.text("from the fallback")

    fake_openai_server.default = by_model
    client = reliable(
        make_openai_client(),
        recorder=ledger[1],
        retry=RetryPolicy(deadline=1),
        fallbacks=[make_openai_client(model="gpt-4.1")],
    )
    assert (await client.create(HI)).content == "from the fallback"
    attempts = Counter((row.model or "", row.outcome, row.error_kind or "") for row in ledger_rows(ledger))
    assert attempts == {("gpt-4o-mini", "error", "timeout"): 1, ("gpt-4.1", "ok", ""): 1}
    samples = scrape(app)
    assert values(samples, f"{P}attempts_total", "model", "outcome", "error_kind") == attempts
    assert values(samples, f"{P}retries_total", "model", "error_kind") == {("gpt-4.1", "timeout"): 1}


async def test_a_wrapped_fallback_without_usage_rows_has_its_tokens_counted_once(
    app: FastAPI, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    backup = reliable(make_openai_client(model="gpt-4o"), track_usage=False, retry=None)
    client = reliable(make_openai_client(), track_usage=False, retry=None, fallbacks=[backup])
    fake_openai_server.enqueue(
        FakeReply.error(500), FakeReply.text("b", usage=FakeUsage(prompt_tokens=40, completion_tokens=4))
    )
    await client.create(HI)
    samples = scrape(app)
    assert values(samples, f"{P}attempts_total", "model", "outcome") == {
        ("gpt-4o-mini", "error"): 1,
        ("gpt-4o", "ok"): 1,
    }
    assert values(samples, f"{P}tokens_total", "model", "kind") == {
        ("gpt-4o", "prompt"): 40,
        ("gpt-4o", "completion"): 4,
    }


async def test_tokens_under_autogens_cache_over_a_wrapper_that_records_nothing_are_the_ledgers(
    app: FastAPI, ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A miss: the inner wrapper's request is recorded through the outer one. A hit: the outer's row of its
    # attempt on the cache is the only record, with the answer's tokens (at no cost); metrics count them too.
    inner = reliable(make_openai_client(), track_usage=False, retry=None)
    client = reliable(ChatCompletionCache(inner, MemoryStore()), recorder=ledger[1], retry=None)
    fake_openai_server.enqueue(FakeReply.text("b", usage=FakeUsage(prompt_tokens=40, completion_tokens=4)))
    await client.create(HI)
    await client.create(HI)
    rows = ledger_rows(ledger)
    assert [(row.prompt_tokens, row.completion_tokens, row.cache_hit) for row in rows] == [
        (40, 4, False),
        (40, 4, True),
    ]
    assert len(fake_openai_server.requests) == 1
    samples = scrape(app)
    assert values(samples, f"{P}tokens_total", "kind") == {("prompt",): 80, ("completion",): 8}
    # The request, and the hit: an attempt as under a bare client's cache, not one on the wrapper.
    assert values(samples, f"{P}attempts_total", "outcome") == {("ok",): 2}


async def test_a_wrapped_fallback_that_records_nothing_under_one_that_does_has_its_tokens_counted_once(
    app: FastAPI, ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Only the outer wrapper records: its row of the attempt on the fallback is the ledger's one record of
    # that request, and the fallback's own call counts the request's tokens, from its provider attempt.
    backup = reliable(make_openai_client(model="gpt-4o"), track_usage=False, retry=None)
    client = reliable(make_openai_client(), recorder=ledger[1], retry=None, fallbacks=[backup])
    fake_openai_server.enqueue(
        FakeReply.error(500), FakeReply.text("b", usage=FakeUsage(prompt_tokens=40, completion_tokens=4))
    )
    await client.create(HI)
    rows = ledger_rows(ledger)
    assert [(row.model, row.prompt_tokens, row.completion_tokens) for row in rows] == [
        ("gpt-4o-mini", 0, 0),
        ("gpt-4o", 40, 4),
    ]
    samples = scrape(app)
    assert values(samples, f"{P}attempts_total", "model", "outcome") == {
        ("gpt-4o-mini", "error"): 1,
        ("gpt-4o", "ok"): 1,
    }
    assert values(samples, f"{P}tokens_total", "model", "kind") == {
        ("gpt-4o", "prompt"): 40,
        ("gpt-4o", "completion"): 4,
    }
    # The cost is the row's, the ledger's only one.
    assert round(Decimal(repr(sum(values(samples, f"{P}cost_usd_total").values()))) * 10**9) == sum(
        row.cost_nanousd or 0 for row in rows
    )


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("recorded", [True, False], ids=["usage rows", "no usage rows"])
async def test_a_model_asked_for_in_extra_create_args_labels_the_series_as_the_ledger_names_it(
    recorded: bool,
    app: FastAPI,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # AutoGen's clients send extra_create_args over their own: the request asks for gpt-4o-mini, the
    # provider answers and bills as gpt-4o-mini, and the ledger names that model. So do the metrics.
    recording = {"recorder": ledger[1]} if recorded else {"track_usage": False}
    client = reliable(make_openai_client(model="gpt-4o"), retry=FAST, **recording)
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("as the mini", usage=FakeUsage(prompt_tokens=30, completion_tokens=3)),
        FakeReply.text("as itself", usage=FakeUsage(prompt_tokens=40, completion_tokens=4)),
    )
    await client.create(HI, extra_create_args={"model": "gpt-4o-mini"})
    await client.create(HI)
    assert [request.model for request in fake_openai_server.requests] == [
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o",
    ]
    samples = scrape(app)
    attempts = {
        ("gpt-4o-mini", "error", "rate_limit"): 1,
        ("gpt-4o-mini", "ok", ""): 1,
        ("gpt-4o", "ok", ""): 1,
    }
    if recorded:
        rows = ledger_rows(ledger)
        assert Counter((row.model or "", row.outcome, row.error_kind or "") for row in rows) == attempts
    assert values(samples, f"{P}attempts_total", "model", "outcome", "error_kind") == attempts
    assert values(samples, f"{P}attempt_duration_seconds_count", "model") == {("gpt-4o-mini",): 2, ("gpt-4o",): 1}
    assert values(samples, f"{P}retries_total", "model", "error_kind") == {("gpt-4o-mini", "rate_limit"): 1}
    assert values(samples, f"{P}calls_total", "model", "outcome") == {("gpt-4o-mini", "ok"): 1, ("gpt-4o", "ok"): 1}
    assert values(samples, f"{P}call_duration_seconds_count", "model") == {("gpt-4o-mini",): 1, ("gpt-4o",): 1}
    assert values(samples, f"{P}tokens_total", "model", "kind") == {
        ("gpt-4o-mini", "prompt"): 30,
        ("gpt-4o-mini", "completion"): 3,
        ("gpt-4o", "prompt"): 40,
        ("gpt-4o", "completion"): 4,
    }
    if recorded:
        assert set(values(samples, f"{P}cost_usd_total", "model")) == {("gpt-4o-mini",), ("gpt-4o",)}


@pytest.mark.filterwarnings("ignore:Resolved model mismatch:UserWarning")  # AutoGen's, about its token counting
@pytest.mark.parametrize("recorded", [True, False], ids=["usage rows", "no usage rows"])
async def test_a_fallbacks_attempt_is_labelled_its_own_model_not_the_one_the_call_asks_the_primary_for(
    recorded: bool,
    app: FastAPI,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The call's "model" is the primary's; the fallback is sent the call without it and asks for its own.
    recording = {"recorder": ledger[1]} if recorded else {"track_usage": False}
    fallback = make_openai_client(model="gpt-4.1")
    client = reliable(make_openai_client(), retry=None, fallbacks=[fallback], **recording)
    fake_openai_server.enqueue(
        FakeReply.error(500),
        FakeReply.text("from the fallback", usage=FakeUsage(prompt_tokens=30, completion_tokens=3)),
    )
    await client.create(HI, extra_create_args={"model": "gpt-4o"})
    assert [request.model for request in fake_openai_server.requests] == ["gpt-4o", "gpt-4.1"]
    samples = scrape(app)
    attempts = {("gpt-4o", "error", "server_error"): 1, ("gpt-4.1", "ok", ""): 1}
    if recorded:
        assert Counter((row.model or "", row.outcome, row.error_kind or "") for row in ledger_rows(ledger)) == attempts
    assert values(samples, f"{P}attempts_total", "model", "outcome", "error_kind") == attempts
    assert values(samples, f"{P}tokens_total", "model", "kind") == {
        ("gpt-4.1", "prompt"): 30,
        ("gpt-4.1", "completion"): 3,
    }
    # The call is labelled by what it asked its primary for, as a call answered by a fallback always is.
    assert values(samples, f"{P}calls_total", "model", "outcome") == {("gpt-4o", "ok"): 1}


async def test_a_call_refused_before_any_request_is_counted_under_the_model_it_asked_for(
    app: FastAPI, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A model name of this test's own: breakers of other tests' clients may still be alive.
    inner = make_openai_client(model="refused-configured-model", model_info=LOCAL_MODEL)
    policy = CircuitBreakerPolicy(window=1, minimum_calls=1, failure_rate=0.5, open_for=600)
    client = reliable(inner, retry=None, circuit=policy, track_usage=False)
    fake_openai_server.default = FakeReply.error(500)
    asked = {"model": "refused-asked-model"}
    with pytest.raises(openai.InternalServerError):
        await client.create(HI, extra_create_args=asked)
    with pytest.raises(CircuitOpenError):
        await client.create(HI, extra_create_args=asked)
    assert fake_openai_server.request_count == 1
    samples = scrape(app)
    assert values(samples, f"{P}calls_total", "model", "error_type") == {
        ("refused-asked-model", "InternalServerError"): 1,
        ("refused-asked-model", "CircuitOpenError"): 1,
    }
    # The breaker belongs to the client, whatever model its calls ask for: its gauge names the client's own.
    circuits = values(samples, f"{P}circuit_state", "model", "state")
    assert circuits[("refused-configured-model", "open")] == 1
    assert not any(model == "refused-asked-model" for model, _ in circuits)


class _SteppedBack(datetime):
    """The wall clock an hour behind: a call starts on it, and ends after NTP has stepped the clock an hour on."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]  # a plain datetime, as stored
        return datetime.now(tz) - timedelta(hours=1)


async def test_a_calls_duration_is_what_elapsed_not_how_far_the_wall_clock_moved(
    app: FastAPI,
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_openai_server.enqueue(FakeReply.text("ok", usage=FakeUsage(prompt_tokens=10, completion_tokens=2)))
    client = reliable(make_openai_client(), recorder=ledger[1], retry=None)
    monkeypatch.setattr(_pipeline, "datetime", _SteppedBack)  # the call starts, by the wall clock, an hour ago
    await client.create(HI)
    monkeypatch.undo()
    (row,) = ledger_rows(ledger)
    assert datetime.now(UTC) - row.started_at > timedelta(minutes=59)  # the ledger has the wall clock's time
    samples = scrape(app)
    # The one call is in the histogram's finite buckets (at most 81.92 s), not past them as 3,600 s.
    assert values(samples, f"{P}call_duration_seconds_count") == {(): 1}
    assert values(samples, f"{P}call_duration_seconds_bucket", "le")[("81.92",)] == 1
    assert values(samples, f"{P}attempt_duration_seconds_bucket", "le")[("81.92",)] == 1


async def test_an_unpriced_model_is_counted_as_such(
    app: FastAPI, ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    client = reliable(make_openai_client(model="acme-internal-7b", model_info=LOCAL_MODEL), recorder=ledger[1])
    fake_openai_server.enqueue(FakeReply.text("local", usage=FakeUsage(prompt_tokens=8, completion_tokens=1)))
    await client.create(HI)
    samples = scrape(app)
    assert values(samples, f"{P}unpriced_attempts_total", "model") == {("acme-internal-7b",): 1}
    assert values(samples, f"{P}cost_usd_total") == {}
    (row,) = ledger_rows(ledger)
    assert row.cost_nanousd is None


class Unprintable(Exception):
    """An exception whose ``__str__`` raises, as some SDKs' do on an odd response."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


async def test_an_error_whose_text_cannot_be_read_is_counted(app: FastAPI, ledger: Ledger) -> None:
    client = reliable(ScriptedChatCompletionClient([Unprintable()]), retry=None, recorder=ledger[1], project="acme")
    with pytest.raises(Unprintable):
        await client.create(HI)
    samples = scrape(app)
    assert values(samples, f"{P}attempts_total", "outcome", "error_kind") == {("error", "unknown"): 1}
    assert values(samples, f"{P}calls_total", "outcome", "error_type") == {("error", "Unprintable"): 1}
    (row,) = ledger_rows(ledger)
    assert row.error_message == "<str() failed: RuntimeError>"


async def test_the_circuit_state_gauge_follows_the_breaker(
    app: FastAPI, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A model name of this test's own: breakers of other tests' clients may still be alive.
    inner = make_openai_client(model="circuit-gauge-model", model_info=LOCAL_MODEL)
    policy = CircuitBreakerPolicy(window=2, minimum_calls=2, failure_rate=0.5, open_for=600)
    client = reliable(inner, retry=None, circuit=policy, track_usage=False)

    def state() -> dict[tuple[str, ...], float]:
        gauge = values(scrape(app), f"{P}circuit_state", "model", "client", "state")
        return {key[2:]: value for key, value in gauge.items() if key[0] == "circuit-gauge-model"}

    closed = {("closed",): 1, ("half_open",): 0, ("open",): 0}
    assert {(key[0],): value for key, value in state().items()} == closed
    assert {key[0] for key in values(scrape(app), f"{P}circuit_state", "client")} >= {
        "OpenAIChatCompletionClient(circuit-gauge-model)"
    }
    fake_openai_server.default = FakeReply.error(500)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await client.create(HI)
    with pytest.raises(CircuitOpenError):
        await client.create(HI)
    assert state() == {("open",): 1, ("half_open",): 0, ("closed",): 0}
    assert fake_openai_server.request_count == 2


async def test_the_spool_backlog_gauge_counts_rows_waiting_for_an_unreachable_database(
    app: FastAPI, tmp_path: Path, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    before = values(scrape(app), f"{P}usage_spool_backlog")[()]
    missing = tmp_path / "no such directory" / "usage.db"
    url = f"sqlite:///{missing}"
    recorder = UsageRecorder(lambda: UsageStore(url), spool_dir=tmp_path / "spool", name=url)
    try:
        client = reliable(make_openai_client(), recorder=recorder)
        fake_openai_server.default = FakeReply.text("answered")
        for _ in range(3):
            await client.create(HI)
        assert recorder.flush(10)
        assert recorder.spooled == 3
        samples = scrape(app)
        assert values(samples, f"{P}usage_spool_backlog")[()] == before + 3
        assert values(samples, f"{P}usage_queue_depth")[()] >= 0
    finally:
        recorder.close()


async def test_the_budget_gauge_says_what_the_budget_has_left(
    app: FastAPI, ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A project of this test's own: budget trackers live as long as the process.
    policy = BudgetPolicy(limit_usd="0.5", period="day", scope="project", alert_at=())
    client = reliable(make_openai_client(), recorder=ledger[1], project="budget-gauge", budget=policy)
    fake_openai_server.enqueue(FakeReply.text("spend", usage=FakeUsage(prompt_tokens=10_000, completion_tokens=1_000)))
    await client.create(HI)
    (row,) = ledger_rows(ledger)
    assert row.cost_nanousd
    samples = scrape(app)
    key = ("budget-gauge", "", "project", "day")
    remaining = values(samples, f"{P}budget_remaining_usd", "project", "agent", "scope", "period")[key]
    assert round((Decimal("0.5") - Decimal(repr(remaining))) * 10**9) == row.cost_nanousd
    assert values(samples, f"{P}budget_limit_usd", "project", "agent", "scope", "period")[key] == 0.5


async def test_the_budget_gauge_of_a_tenant_is_its_own_plans_not_another_plans_it_never_checked(
    app: FastAPI, ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Tenants on plans of their own: each plan's budget counts every tenant's rows until they are written (in case
    # a call of its own comes for them), but only the pro plan's budget checks the pro tenant's calls.
    basic = BudgetPolicy(limit_usd="0.5", period="day", alert_at=())
    pro = BudgetPolicy(limit_usd=10, period="day", alert_at=())
    fake_openai_server.default = FakeReply.text("spend", usage=FakeUsage(prompt_tokens=10_000, completion_tokens=1_000))
    await reliable(make_openai_client(), recorder=ledger[1], project="gauge-basic", budget=basic).create(HI)
    await reliable(make_openai_client(), recorder=ledger[1], project="gauge-pro", budget=pro).create(HI)
    spent = Decimal(sum(row.cost_nanousd or 0 for row in ledger_rows(ledger) if row.project == "gauge-pro")) / 10**9
    assert spent
    samples = scrape(app)
    remaining = values(samples, f"{P}budget_remaining_usd", "project", "agent", "scope", "period")
    limits = values(samples, f"{P}budget_limit_usd", "project", "agent", "scope", "period")
    key = ("gauge-pro", "", "project", "day")
    assert Decimal(repr(remaining[key])) == 10 - spent  # before: 0.5 - spent, the basic plan's
    assert limits[key] == 10


async def test_label_values_past_the_limit_are_reported_as_other(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    registry = enable_metrics(CollectorRegistry(), max_label_values=2)
    try:
        app = FastAPI()
        app.mount("/metrics", metrics_app())
        fake_openai_server.default = FakeReply.text("ok")
        inner = make_openai_client()
        for project in ("p1", "p2", "p3", "p4", "p1"):
            await reliable(inner, project=project, track_usage=False).create(HI)
        samples = scrape(app)
    finally:
        disable_metrics()
    assert values(samples, f"{P}attempts_total", "project") == {("p1",): 2, ("p2",): 1, (OTHER,): 2}
    assert registry is not None


async def test_lone_surrogates_in_label_values_are_scraped_as_u_fffd(app: FastAPI, ledger: Ledger) -> None:
    # A project from a request header, a model's name: Prometheus' text is UTF-8, which holds no lone surrogate.
    inner = ScriptedChatCompletionClient(["fine"], model="gpt-\udfff")
    client = reliable(inner, recorder=ledger[1], project="acme-\ud800", agent="writer-\udc00", retry=None)
    await client.create(HI)
    samples = scrape(app)
    assert values(samples, f"{P}attempts_total", "project", "agent", "model") == {
        ("acme-\ufffd", "writer-\ufffd", "gpt-\ufffd"): 1
    }
    assert values(samples, f"{P}tokens_total", "project", "kind")[("acme-\ufffd", "prompt")] > 0


async def test_the_circuit_gauges_client_label_is_bounded_too(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    registry = enable_metrics(CollectorRegistry(), max_label_values=3)
    try:
        app = FastAPI()
        app.mount("/metrics", metrics_app())
        fake_openai_server.default = FakeReply.text("ok")
        clients = [
            reliable(
                make_openai_client(model=f"tenant-{n}-model", model_info=LOCAL_MODEL),
                retry=None,
                circuit=CircuitBreakerPolicy(),
                track_usage=False,
            )
            for n in range(12)
        ]
        for client in clients:
            await client.create(HI)
        gauge = values(scrape(app), f"{P}circuit_state", "client", "model", "state")
    finally:
        disable_metrics()
    # The client's name holds its model's: it is bounded as the model label is (breakers of other tests count).
    assert len({client for client, _, _ in gauge}) <= 3 + 1
    assert len({model for _, model, _ in gauge}) <= 3 + 1
    assert (OTHER, OTHER, "closed") in gauge
    assert len(gauge) <= 4 * 4 * 3
    assert registry is not None


def test_enabling_is_idempotent_and_says_what_conflicts() -> None:
    registry = enable_metrics()
    try:
        assert enable_metrics() is registry
        assert enable_metrics(registry, max_label_values=100) is registry
        with pytest.raises(ConfigurationError, match="another registry"):
            enable_metrics(CollectorRegistry())
        with pytest.raises(ConfigurationError, match="max_label_values=100"):
            enable_metrics(max_label_values=5)
        names = {metric.name for metric in registry.collect()}
        assert f"{P}calls" in names
    finally:
        disable_metrics()
    disable_metrics()  # off already: nothing to do
    assert list(registry.collect()) == []
    with pytest.raises(ConfigurationError, match="max_label_values"):
        enable_metrics(max_label_values=0)
    with pytest.raises(ConfigurationError, match="CollectorRegistry"):
        enable_metrics("registry")  # type: ignore[arg-type]


def test_the_metrics_land_in_a_registry_that_has_names_of_its_own_or_say_why_not() -> None:
    from prometheus_client import Counter  # noqa: PLC0415

    registry = CollectorRegistry()
    Counter("autogen_reliability_calls", "a metric of the application's own, by our name", registry=registry)
    with pytest.raises(ConfigurationError, match="cannot add the metrics"):
        enable_metrics(registry)
    # Nothing was left half on: metrics can be turned on elsewhere.
    other = enable_metrics(CollectorRegistry())
    disable_metrics()
    assert other is not registry


class HandsOverOnUnregister(CollectorRegistry):
    """A registry that, the first time it takes a collector out, lets another thread turn metrics on (waits 0.5 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []
        self.turned_on = threading.Event()

    def unregister(self, collector: Collector) -> None:
        if self.turned_on.is_set():  # once only
            super().unregister(collector)
            return

        def turn_on() -> None:
            try:
                enable_metrics(self)
            except BaseException as error:  # reported by the test
                self.errors.append(error)
            self.turned_on.set()

        threading.Thread(target=turn_on).start()
        self.turned_on.wait(0.5)  # enough for the other thread, unless it waits for this one
        super().unregister(collector)


def test_metrics_turned_off_in_one_thread_can_be_turned_on_in_another_at_once() -> None:
    registry = HandsOverOnUnregister()
    enable_metrics(registry)
    disable_metrics()
    assert registry.turned_on.wait(5)
    try:
        # Off, then on in the other thread: it found the old collector still in the registry, and failed.
        assert registry.errors == []
        assert enable_metrics() is registry
        assert {metric.name for metric in registry.collect()} >= {f"{P}calls", f"{P}attempts"}
    finally:
        disable_metrics()


def test_turning_metrics_off_unsubscribes_them_from_every_feed() -> None:
    before = (_pipeline.attempt_feed.current, _pipeline.call_feed.current, _feed.listeners.current)
    enable_metrics()
    assert len(_pipeline.attempt_feed.current) == len(before[0]) + 1
    assert len(_pipeline.call_feed.current) == len(before[1]) + 1
    assert len(_feed.listeners.current) == len(before[2]) + 1
    disable_metrics()
    assert (_pipeline.attempt_feed.current, _pipeline.call_feed.current, _feed.listeners.current) == before


def test_importing_the_package_without_prometheus_client_names_the_extra() -> None:
    done = run_python("import sys; sys.modules['prometheus_client'] = None; import autogen_reliability.metrics")
    assert done.returncode != 0
    assert "ImportError: autogen_reliability.metrics needs prometheus-client" in done.stderr
    assert "pip install 'autogen-reliability[metrics]'" in done.stderr


def test_the_library_does_not_import_prometheus_client() -> None:
    done = run_python("import sys; from autogen_reliability import *; print('prometheus_client' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_metrics_turned_on_in_prometheus_multiprocess_mode_say_they_are_this_processs_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # gunicorn or `uvicorn --workers N` with the directory set: a scrape reads the worker that answers it.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="PROMETHEUS_MULTIPROC_DIR is set.*this process only") as said:
        registry = enable_metrics()
    try:
        assert [warning.filename for warning in said] == [__file__]  # where the application turned them on
        assert enable_metrics() is registry  # said once, when they are turned on
        assert f"{P}calls" in {metric.name for metric in registry.collect()}
    finally:
        disable_metrics()
    app = FastAPI()
    with pytest.warns(RuntimeWarning, match="PROMETHEUS_MULTIPROC_DIR") as said:
        app.mount("/metrics", metrics_app())
    try:
        assert [warning.filename for warning in said] == [__file__]
        scrape(app)
    finally:
        disable_metrics()
    assert list(tmp_path.iterdir()) == []  # nothing of ours in the directory: MultiProcessCollector sees none of it


def test_metrics_turned_on_outside_multiprocess_mode_say_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enable_metrics()
    disable_metrics()
