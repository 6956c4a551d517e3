"""The health probe: real wrapped clients talking HTTP to FakeOpenAIServer, a real SQLite ledger and recorder."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import UserMessage
from autogen_ext.models.cache import ChatCompletionCache
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.pool import NullPool

from autogen_reliability import (
    AttemptEvent,
    Attribution,
    CircuitBreakerPolicy,
    ConfigurationError,
    HealthProbe,
    HealthReport,
    ReliableChatCompletionClient,
    RetryPolicy,
    usage_scope,
)
from autogen_reliability._pipeline import Call, Request
from autogen_reliability.accounting import UsageEvent, UsageRecorder
from autogen_reliability.accounting._events import UsageRow
from autogen_reliability.health import AttemptSummary, ProviderHealth, UsageStoreHealth
from autogen_reliability.health._active import ActiveChecker
from autogen_reliability.health._window import BUCKETS, LATENCY_BINS, AttemptWindow
from autogen_reliability.storage import UsageStore, _engine
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, ScriptedChatCompletionClient, faults

from .conftest import OpenAIClientFactory
from .health_fixtures import *  # noqa: F403  # the fixtures store, recorder, wrap
from .health_fixtures import HI, OPENS_AFTER_TWO, Clock, Wrap, break_the_file, calls
from .memory_cache import MemoryStore
from .storage_fixtures import drop_pg_database

FAKE_KEY = "sk-proj-HEALTHPROBEfakeKEY0123456789abcdef"  # a key the fake provider echoes back in error bodies


# ---- construction


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"error_rate_degraded": 0}, r"error_rate_degraded must be a number in \(0, 1\]"),
        ({"error_rate_unhealthy": 1.5}, r"error_rate_unhealthy must be a number in \(0, 1\]"),
        ({"error_rate_degraded": True}, "error_rate_degraded must be a number"),
        ({"error_rate_degraded": 0.6, "error_rate_unhealthy": 0.5}, "cannot exceed error_rate_unhealthy"),
        ({"ttl": 0}, "ttl must be > 0 seconds"),
        ({"timeout": -1}, "timeout must be > 0 seconds"),
        ({"timeout": "5"}, "timeout must be seconds"),
        ({"window": 0}, "window must be > 0 seconds"),
        ({"timeout": 10**400}, r"timeout must be finite, got an int too large for a float \(1329 bits\)"),
        ({"ttl": -(10**5000)}, "ttl must be finite, got an int too large for a float"),  # its repr is refused too
        ({"window": timedelta(days=2)}, "window must be at most 86400 seconds"),
        ({"window": 1e-320}, "window must be at least 1 second, got 1e-320"),  # its buckets' index overflowed
        ({"window": timedelta(milliseconds=500)}, "window must be at least 1 second"),
        ({"min_attempts": 0}, "min_attempts must be an int >= 1"),
        ({"active": "yes"}, "active must be True or False"),
        ({"critical": ["openai", "anthropic"]}, r"unknown components \['anthropic'\]"),
        ({"critical": "openai"}, "critical must be a list of component names"),
        ({"clock": 3}, "clock must be callable"),
        # Read at construction: a clock that reads no number would fail every attempt's observer, then check().
        ({"clock": lambda: datetime.now(UTC)}, r"clock must read seconds as a number .*, got a datetime"),
        ({"clock": lambda: float("nan")}, "clock must read seconds as a number .*, got nan"),
    ],
)
def test_invalid_options_fail_at_construction_with_the_reason(
    wrap: Wrap, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        HealthProbe({"openai": wrap()}, **options)


def test_clients_and_store_are_checked_at_construction(
    wrap: Wrap, make_openai_client: OpenAIClientFactory, store: UsageStore
) -> None:
    with pytest.raises(ConfigurationError, match=r"clients\['raw'\] is a OpenAIChatCompletionClient, not a wrapped"):
        HealthProbe({"raw": make_openai_client()})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="mapping of names to wrapped clients"):
        HealthProbe([wrap()])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="non-empty strings"):
        HealthProbe({"": wrap()})
    with pytest.raises(ConfigurationError, match="nothing to check"):
        HealthProbe({})
    with pytest.raises(ConfigurationError, match="store must be a UsageStore"):
        HealthProbe({"openai": wrap()}, "sqlite:///usage.db")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="names the store component"):
        HealthProbe({"usage_store": wrap()}, store)
    probe = HealthProbe({"openai": wrap()}, store, critical=["usage_store"])
    assert probe.components == ("openai", "usage_store")
    assert probe.critical == {"usage_store"}


# ---- clients, passive


async def test_clients_that_answer_and_a_store_that_answers_are_healthy(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, store: UsageStore
) -> None:
    client = wrap()
    probe = HealthProbe({"openai": client}, store)
    fake_openai_server.enqueue(*[FakeReply.text("fine")] * 3)
    await calls(client, 3)
    report = await probe.check()
    assert report.status == "healthy"
    assert report.ready
    assert report.checked_at.tzinfo is not None
    assert abs(report.checked_at - datetime.now(UTC)) < timedelta(minutes=1)
    health = report.clients["openai"]
    assert (health.status, health.attempts, health.error_rate, health.errors_by_kind) == ("healthy", 3, 0.0, {})
    assert health.p95_latency_ms is not None
    assert health.p95_latency_ms > 0
    assert health.active_check is None
    [primary] = health.providers
    assert (primary.role, primary.circuit, primary.name) == (
        "primary",
        "closed",
        "OpenAIChatCompletionClient(gpt-4o-mini)",
    )
    assert [attempt.outcome for attempt in primary.recent] == ["ok", "ok", "ok"]
    assert report.usage_store is not None
    assert report.usage_store.reachable
    assert report.usage_store.writer_alive
    assert report.usage_store.recorders == 1
    assert report.summary().components == {"openai": "healthy", "usage_store": "healthy"}
    assert len(fake_openai_server.all_requests) == 3  # passive: the calls' own requests, nothing more


@pytest.mark.parametrize(("failures", "status"), [(1, "healthy"), (2, "degraded"), (5, "unhealthy")])
async def test_the_error_rate_over_the_window_degrades_then_fails_a_client(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, failures: int, status: str
) -> None:
    client = wrap(circuit=None)  # only the error rate judges here
    probe = HealthProbe({"openai": client})
    fake_openai_server.enqueue(*[FakeReply.error(500)] * failures, *[FakeReply.text("fine")] * (10 - failures))
    await calls(client, 10)
    report = await probe.check()
    health = report.clients["openai"]
    assert health.error_rate == failures / 10
    assert health.errors_by_kind == {"server_error": failures}
    assert (health.status, report.status) == (status, status)
    if status != "healthy":
        assert f"error rate {failures / 10:.0%} over the last 300 s ({failures}/10)" in health.reasons[0]
    assert report.ready is (status != "unhealthy")


async def test_a_rate_limit_storm_the_retries_ride_out_leaves_the_client_healthy_and_ready(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    # Each call is rate-limited once, then answered on its retry: 10 calls, 20 attempts, half of them 429s. They
    # counted as failures: "error rate 50% (10/20)", unhealthy, and /readyz took every replica out at once.
    client = wrap(retry=RetryPolicy(initial_delay=0.001, max_delay=0.002, budget=None))
    probe = HealthProbe({"openai": client})
    for _ in range(10):
        fake_openai_server.enqueue(FakeReply.error(429, headers={"retry-after-ms": "1"}), FakeReply.text("fine"))
    await calls(client, 10)
    report = await probe.check()
    health = report.clients["openai"]
    assert (health.attempts, health.error_rate, health.errors_by_kind) == (20, 0.0, {"rate_limit": 10})
    assert (health.status, report.ready) == ("healthy", True)


async def test_rate_limits_that_outlast_the_retries_still_make_the_client_unhealthy(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    client = wrap(retry=RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=0.002, budget=None))
    probe = HealthProbe({"openai": client})
    fake_openai_server.enqueue(*[FakeReply.error(429, headers={"retry-after-ms": "1"})] * 20)
    await calls(client, 10)
    health = (await probe.check()).clients["openai"]
    assert (health.attempts, health.error_rate, health.errors_by_kind) == (20, 1.0, {"rate_limit": 20})
    assert health.status == "unhealthy"


async def test_failures_the_request_caused_do_not_count_in_the_error_rate(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    client = wrap()
    probe = HealthProbe({"openai": client})
    fake_openai_server.enqueue(*[FakeReply.error(400)] * 6, *[FakeReply.text("fine")] * 4)
    await calls(client, 10)
    health = (await probe.check()).clients["openai"]
    assert health.errors_by_kind == {"bad_request": 6}
    assert health.error_rate == 0.0
    assert health.status == "healthy"


async def test_failures_the_request_caused_do_not_dilute_the_error_rate_either(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    # Every request the provider could serve failed; the callers' own mistakes say nothing of that, as the
    # circuit breaker counts them neither as failures nor as successes.
    client = wrap(circuit=None)
    probe = HealthProbe({"openai": client}, min_attempts=4)
    fake_openai_server.enqueue(*[FakeReply.error(400)] * 6, *[FakeReply.error(500)] * 4)
    await calls(client, 10)
    health = (await probe.check()).clients["openai"]
    assert health.errors_by_kind == {"bad_request": 6, "server_error": 4}
    assert health.attempts == 10
    assert health.error_rate == 1.0
    assert health.status == "unhealthy"
    assert "error rate 100% over the last 300 s (4/4)" in health.reasons[0]
    # ...and they do not make a window judged: 6 refused requests and 1 server error are one attempt judged.
    quiet = wrap(circuit=None)
    patient = HealthProbe({"openai": quiet}, min_attempts=2)
    fake_openai_server.enqueue(*[FakeReply.error(400)] * 6, FakeReply.error(500))
    await calls(quiet, 7)
    assert (await patient.check()).clients["openai"].status == "healthy"


@pytest.mark.parametrize("cut_by", ["the retry deadline", "the SDK's timeout"])
async def test_a_provider_that_answers_nothing_before_the_deadline_is_unhealthy_as_one_the_sdk_times_out(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, make_openai_client: OpenAIClientFactory, cut_by: str
) -> None:
    # A provider that takes requests and never answers: every call fails, whichever timer ends its attempt. The
    # deadline's cut attempts were "cancelled", left out of the error rate: healthy, error rate None, while every
    # call failed with RetriesExhaustedError(reason="deadline"). The circuit breaker counts them as timeouts too.
    fake_openai_server.default = lambda request: FakeReply.text("too late", delay=math.inf)
    if cut_by == "the retry deadline":
        client = wrap(circuit=None, retry=RetryPolicy(max_attempts=1, deadline=0.2))
    else:
        client = wrap(circuit=None, client=make_openai_client(timeout=0.2))
    probe = HealthProbe({"openai": client})
    results = await asyncio.gather(*(client.create(HI) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(result, Exception) for result in results)
    health = (await probe.check()).clients["openai"]
    assert (health.attempts, health.error_rate, health.errors_by_kind) == (10, 1.0, {"timeout": 10})
    assert health.status == "unhealthy"
    assert health.providers[0].last_error is not None
    assert health.providers[0].last_error.error_kind == "timeout"


async def test_calls_their_callers_cancel_count_neither_as_failures_nor_as_attempts_judged(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    # Under a deadline that never fires: only the callers end these attempts.
    fake_openai_server.default = lambda request: FakeReply.text("too late", delay=math.inf)
    client = wrap(circuit=None, retry=RetryPolicy(max_attempts=1, deadline=60))
    probe = HealthProbe({"openai": client}, min_attempts=1)
    tasks = [asyncio.ensure_future(client.create(HI)) for _ in range(3)]
    await fake_openai_server.wait_for_requests_async(3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    health = (await probe.check()).clients["openai"]
    assert (health.attempts, health.error_rate, health.errors_by_kind) == (3, None, {"cancelled": 3})
    assert health.status == "healthy"


async def test_answers_from_a_client_side_cache_are_not_attempts_of_the_provider(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, make_openai_client: OpenAIClientFactory
) -> None:
    # AutoGen's ChatCompletionCache answers repeated prompts without a request: 9 hits must not hide that 5 of
    # the provider's 6 requests failed, nor pull its p95 latency down, nor push its requests out of `recent`.
    client = wrap(client=ChatCompletionCache(make_openai_client(), MemoryStore()), circuit=None)
    probe = HealthProbe({"cached": client}, min_attempts=5)
    fake_openai_server.enqueue(FakeReply.text("hello"), *[FakeReply.error(500)] * 5)
    await calls(client, 10)  # one request, then nine hits
    for number in range(5):
        await calls_with(client, f"new prompt {number}")
    assert fake_openai_server.request_count == 6
    health = (await probe.check()).clients["cached"]
    assert (health.attempts, health.error_rate, health.errors_by_kind) == (6, 5 / 6, {"server_error": 5})
    assert health.status == "unhealthy"
    assert [attempt.outcome for attempt in health.providers[0].recent] == ["ok", *["error"] * 5]


async def calls_with(client: ReliableChatCompletionClient, prompt: str) -> None:
    """One call with its own prompt (a cache miss), allowed to fail."""
    with contextlib.suppress(Exception):
        await client.create([UserMessage(content=prompt, source="user")])


async def test_a_window_with_too_few_attempts_is_not_judged(fake_openai_server: FakeOpenAIServer, wrap: Wrap) -> None:
    client = wrap()
    patient, eager = HealthProbe({"openai": client}), HealthProbe({"openai": client}, min_attempts=1)
    fake_openai_server.enqueue(FakeReply.error(503))
    await calls(client, 1)
    assert (await patient.check()).clients["openai"].status == "healthy"
    assert (await eager.check()).clients["openai"].status == "unhealthy"


async def test_attempts_older_than_the_window_are_forgotten(fake_openai_server: FakeOpenAIServer, wrap: Wrap) -> None:
    clock = Clock()
    client = wrap(circuit=None)
    probe = HealthProbe({"openai": client}, window=60, min_attempts=1, clock=clock)
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.error(500))
    await calls(client, 2)
    clock.now += 59
    assert (await probe.check()).clients["openai"].status == "unhealthy"
    clock.now += 2  # both ended more than a window (60 s, in buckets of 1 s) ago
    health = (await probe.check()).clients["openai"]
    assert (health.status, health.attempts, health.error_rate) == ("healthy", 0, None)
    assert health.providers[0].last_error is not None  # the latest error is kept, however old
    assert health.providers[0].last_error.error_kind == "server_error"


async def test_a_closed_probe_stops_watching(fake_openai_server: FakeOpenAIServer, wrap: Wrap) -> None:
    client = wrap()
    probe = HealthProbe({"openai": client})
    fake_openai_server.enqueue(FakeReply.text("seen"), FakeReply.text("not seen"))
    await calls(client, 1)
    probe.close()
    await calls(client, 1)
    assert (await probe.check()).clients["openai"].attempts == 1


async def test_a_probe_nobody_holds_stops_watching(fake_openai_server: FakeOpenAIServer, wrap: Wrap) -> None:
    # A probe built per request and never closed: once it is gone, the client no longer feeds its window.
    client = wrap()
    kept = HealthProbe({"openai": client})
    for _ in range(100):
        HealthProbe({"openai": client}, active=True)
    gc.collect()
    assert len(client._observers) == 1  # the probe still held
    fake_openai_server.enqueue(FakeReply.text("seen"))
    await calls(client, 1)
    assert (await kept.check()).clients["openai"].attempts == 1
    kept.close()
    assert len(client._observers) == 0


# ---- the window


def event_of(latency: float, error: BaseException | None = None) -> AttemptEvent:
    request = Request(Call(Attribution(), streamed=False, extra_create_args={}), HI)
    client = ReplayChatCompletionClient(["unused"])
    return AttemptEvent(request.call, 1, client, request, datetime.now(UTC), latency, None, error)


def test_the_p95_latency_is_read_from_the_histogram_within_its_bin_width() -> None:
    window = AttemptWindow(300, Clock())
    for milliseconds in range(1, 101):
        window.observe(event_of(milliseconds / 1000))
    p95 = window.stats().p95_latency
    assert p95 is not None
    assert 0.095 <= p95 <= 0.095 * 2 ** (1 / 4)
    same = AttemptWindow(300, Clock())
    for _ in range(20):
        same.observe(event_of(0.05))
    assert same.stats().p95_latency == 0.05  # never above the slowest attempt seen


def test_the_window_holds_the_same_memory_whatever_the_traffic() -> None:
    clock = Clock()
    window = AttemptWindow(300, clock)
    errors = [faults.connection_reset(), TimeoutError(), ValueError("odd")]
    for number in range(20_000):
        clock.now += 0.1  # 2,000 s of traffic: the window's 60 buckets were each used many times over
        window.observe(event_of(number % 997 / 100, errors[number % 3] if number % 4 == 0 else None))
    buckets = [bucket for bucket in window._buckets if bucket is not None]
    assert len(window._buckets) == BUCKETS
    assert all(len(bucket.latencies) == LATENCY_BINS and len(bucket.kinds) <= 3 for bucket in buckets)
    assert len(window.stats().recent) == 10
    assert window.stats().attempts == 3000  # the last 300 s at 10 per second


# ---- circuits and fallbacks


async def test_an_open_circuit_without_a_fallback_is_unhealthy(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    client = wrap(circuit=OPENS_AFTER_TWO)
    probe = HealthProbe({"openai": client}, min_attempts=100)  # the circuit alone judges
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.error(500))
    await calls(client, 3)  # the third is refused by the open circuit, without a request
    assert fake_openai_server.request_count == 2
    report = await probe.check()
    health = report.clients["openai"]
    assert health.providers[0].circuit == "open"
    assert health.status == report.status == "unhealthy"
    assert health.reasons == ["primary: circuit open: calls are refused without a request"]
    assert not report.ready


async def test_an_open_circuit_with_a_working_fallback_is_degraded(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, make_openai_client: OpenAIClientFactory
) -> None:
    primary, fallback = make_openai_client(), make_openai_client()
    client = wrap(client=primary, fallbacks=[fallback], circuit=OPENS_AFTER_TWO)
    probe = HealthProbe({"openai": client}, min_attempts=100)
    fake_openai_server.enqueue(
        FakeReply.error(500), FakeReply.text("fallback"), FakeReply.error(500), FakeReply.text("fallback")
    )
    await calls(client, 2)
    report = await probe.check()
    health = report.clients["openai"]
    assert [(p.role, p.circuit, p.status) for p in health.providers] == [
        ("primary", "open", "unhealthy"),
        ("fallback", "closed", "healthy"),
    ]
    assert [p.attempts for p in health.providers] == [2, 2]  # the observer sees the fallback's attempts too
    assert health.attempts == 4
    assert health.status == report.status == "degraded"
    assert "calls go to a fallback" in health.reasons
    assert report.ready


async def test_a_wrapped_fallback_is_judged_by_its_calls_and_its_providers_by_its_own_component(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, make_openai_client: OpenAIClientFactory
) -> None:
    # The fallback, a wrapper of its own, retries a 429 and answers: one call of it, two of its provider's attempts.
    backup = wrap(client=make_openai_client(model="gpt-4o"), retry=RetryPolicy(initial_delay=0.01, max_delay=0.02))
    client = wrap(fallbacks=[backup])
    probe = HealthProbe({"openai": client, "backup": backup}, min_attempts=1)
    fake_openai_server.enqueue(
        FakeReply.error(500), FakeReply.error(429, headers={"retry-after-ms": "10"}), FakeReply.text("fallback")
    )
    await calls(client, 1)
    report = await probe.check()
    primary, fallback = report.clients["openai"].providers
    assert [(primary.attempts, primary.error_rate), (fallback.attempts, fallback.error_rate)] == [(1, 1.0), (1, 0.0)]
    (provider,) = report.clients["backup"].providers
    # Its 429 was overcome by the retry: neither a failure nor an attempt judged (the error rate is 0 of 1).
    assert (provider.attempts, provider.error_rate, provider.errors_by_kind) == (2, 0.0, {"rate_limit": 1})
    # The rate's two terms are in the report, so a reader need not work out which attempts it judged.
    assert (provider.failed_attempts, provider.judged_attempts) == (0, 1)
    assert (primary.failed_attempts, primary.judged_attempts) == (1, 1)
    whole = report.clients["openai"]
    assert (whole.attempts, whole.failed_attempts, whole.judged_attempts, whole.error_rate) == (2, 1, 2, 0.5)


async def test_a_half_open_circuit_is_degraded(fake_openai_server: FakeOpenAIServer, wrap: Wrap) -> None:
    clock = Clock()
    policy = CircuitBreakerPolicy(window=2, minimum_calls=2, failure_rate=0.5, open_for=30, clock=clock)
    client = wrap(circuit=policy)
    probe = HealthProbe({"openai": client}, min_attempts=100)
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.error(500))
    await calls(client, 2)
    clock.now += 30
    health = (await probe.check()).clients["openai"]
    assert (health.providers[0].circuit, health.status) == ("half_open", "degraded")


async def test_a_component_that_is_not_critical_cannot_make_the_service_unready(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    main, extra = wrap(), wrap(circuit=OPENS_AFTER_TWO)
    probe = HealthProbe({"main": main, "extra": extra}, critical=["main"])
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.error(500))
    await calls(extra, 2)
    report = await probe.check()
    assert report.summary().components == {"main": "healthy", "extra": "unhealthy"}
    assert (report.clients["extra"].critical, report.clients["main"].critical) == (False, True)
    assert report.status == "degraded"


# ---- secrets


async def test_no_secret_reaches_the_report(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, make_openai_client: OpenAIClientFactory
) -> None:
    # The provider echoes the client's own key, a key of another client, a bearer token and a URL with a password.
    other = "sk-live-ANOTHERprojectKEY9876543210zyxw"
    echoed = (
        f"Incorrect API key provided: {FAKE_KEY}. Also tried {other} with "
        f"Authorization: Bearer tok_{'x' * 30} via https://admin:hunter2-secret@proxy.example"
    )
    client = wrap(client=make_openai_client(api_key=FAKE_KEY))
    probe = HealthProbe({"openai": client}, active=True, min_attempts=1)
    fake_openai_server.enqueue(FakeReply.error(401, echoed))
    fake_openai_server.enqueue_models(FakeReply.error(401, echoed))
    await calls(client, 1)
    report = await probe.check()
    text = report.model_dump_json()
    for secret in (FAKE_KEY, FAKE_KEY[8:], other, "x" * 30, "hunter2-secret"):
        assert secret.lower() not in text.lower()
    health = report.clients["openai"]
    assert health.active_check is not None
    assert health.active_check.ok is False
    assert health.active_check.error_kind == "authentication"
    assert "Incorrect API key provided: [REDACTED]" in (health.active_check.error or "")
    assert "https://admin:[REDACTED]@proxy.example" in (health.providers[0].recent[0].error or "")
    assert health.status == "unhealthy"


class Unprintable(Exception):
    """An exception whose ``__str__`` raises, as some SDKs' do on an odd response."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


async def test_an_error_whose_text_cannot_be_read_is_counted_and_shown_by_its_class(
    wrap: Wrap, store: UsageStore, recorder: UsageRecorder
) -> None:
    inner = ScriptedChatCompletionClient([Unprintable(), Unprintable()])
    client = wrap(client=inner, circuit=None)
    probe = HealthProbe({"scripted": client}, store, active=True, min_attempts=1)
    await calls(client, 1)  # the service's call; the active check is the second
    report = await probe.check()
    health = report.clients["scripted"]
    assert (health.attempts, health.errors_by_kind) == (1, {"unknown": 1})
    [attempt] = health.providers[0].recent
    assert attempt.error == "Unprintable: <str() failed: RuntimeError>"
    assert health.active_check is not None
    assert (health.active_check.ok, health.active_check.error) == (False, "Unprintable: <str() failed: RuntimeError>")
    assert health.status == "unhealthy"
    assert recorder.flush(10)
    assert [row.error_message for row in store.events()] == ["<str() failed: RuntimeError>"] * 2


async def test_a_store_error_whose_text_cannot_be_read_is_still_an_answer(store: UsageStore) -> None:
    def refuse(*args: Any) -> None:
        raise Unprintable

    probe = HealthProbe({}, store, timeout=10)
    event.listen(store.engine, "before_cursor_execute", refuse)
    try:
        first, second = await probe.check(), await probe.check()
    finally:
        event.remove(store.engine, "before_cursor_execute", refuse)
    for report in (first, second):
        assert report.usage_store is not None
        assert report.usage_store.error == "Unprintable: <str() failed: RuntimeError>"
        assert report.status == "unhealthy"
    assert (await probe.check()).status == "healthy"  # the round trip in flight was answered, not left waiting


def test_every_text_of_a_report_is_redacted_cut_and_well_formed_however_it_was_made() -> None:
    # A report a service builds or edits itself (or one read back) holds to what check() promises.
    key = "sk-proj-ReportTEXTkey0123456789abcdef"
    raw = f"{key} cut \ud83d {'x' * 5000}"
    attempt = AttemptSummary(
        started_at=datetime.now(UTC), outcome="error", error_kind="unknown", error=raw, latency_ms=1.0
    )
    provider = ProviderHealth(
        name=raw,
        role="primary",
        status="unhealthy",
        reasons=[raw],
        circuit="closed",
        attempts=1,
        error_rate=1.0,
        failed_attempts=1,
        judged_attempts=1,
        errors_by_kind={"unknown": 1},
        p95_latency_ms=None,
        last_error=attempt,
        recent=[attempt],
    )
    store = UsageStoreHealth(
        status="unhealthy",
        critical=True,
        reasons=[raw],
        url=f"postgresql://me:{key}@db.example/usage",
        reachable=False,
        error=raw,
        recorders=0,
        writer_alive=None,
        queue_depth=0,
        held_in_memory=0,
        spool_backlog=0,
        backlog_age_seconds=None,
    )
    texts = [attempt.error, provider.name, *provider.reasons, *store.reasons, store.url, store.error]
    for text in texts:
        assert text is not None
        assert key[8:] not in text
        assert "\ud83d" not in text
        assert text.startswith("[REDACTED] cut \ufffd") or text == "postgresql://me:[REDACTED]@db.example/usage"
    assert [len(text or "") for text in (attempt.error, store.error)] == [300, 300]
    assert max(len(text or "") for text in texts) <= 1000
    assert UsageStoreHealth.model_validate_json(store.model_dump_json()) == store


# ---- active checks


async def test_active_checks_make_one_request_per_ttl_however_many_check_at_once(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    clock = Clock()
    client = wrap()
    probe = HealthProbe({"openai": client}, active=True, ttl=30, clock=clock)
    fake_openai_server.enqueue_models(FakeReply(delay=0.2))  # still in flight while the other checks arrive
    reports = await asyncio.gather(*(probe.check() for _ in range(100)))
    assert len(fake_openai_server.models_requests) == 1
    checks = [report.clients["openai"].active_check for report in reports]
    assert all(check is not None and check.ok and check.method == "list_models" for check in checks)
    assert len({check.checked_at for check in checks if check is not None}) == 1
    clock.now += 29
    await probe.check()
    assert len(fake_openai_server.models_requests) == 1  # reused
    clock.now += 1
    again = await probe.check()
    assert len(fake_openai_server.models_requests) == 2  # ttl passed: one new request
    assert again.clients["openai"].active_check is not None
    assert again.clients["openai"].active_check.age_seconds == 0.0
    assert fake_openai_server.request_count == 0  # never a completion


async def test_the_timeout_is_honoured_against_a_provider_that_hangs(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    client = wrap()
    probe = HealthProbe({"openai": client}, active=True, timeout=0.2)
    fake_openai_server.enqueue_models(FakeReply(hold_after_chunks=0))  # never answers (until the server stops)
    report = await probe.check()
    check = report.clients["openai"].active_check
    assert check is not None
    assert (check.ok, check.error_kind) == (False, "timeout")
    assert report.clients["openai"].status == report.status == "unhealthy"
    assert report.clients["openai"].reasons[0].startswith("primary: active check (list_models) failed")
    assert len(fake_openai_server.models_requests) == 1


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (FakeReply.error(400, "Unrecognized request argument supplied: limit"), "bad_request"),
        (FakeReply.error(400, "This model's maximum context length is 8192 tokens"), "context_length"),
        (FakeReply.error(400, "Your request was rejected", code="content_filter"), "content_filter"),
    ],
)
async def test_an_active_check_the_provider_refuses_for_its_request_is_unknown_not_a_failure(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, reply: FakeReply, kind: str
) -> None:
    # The provider answered, refusing the probe's own request: that says nothing of its health.
    client = wrap()
    probe = HealthProbe({"openai": client}, active=True)
    fake_openai_server.enqueue_models(reply)
    report = await probe.check()
    check = report.clients["openai"].active_check
    assert check is not None
    assert (check.ok, check.error_kind) == (None, kind)
    assert check.error is not None
    assert check.error.startswith("BadRequestError: ")
    assert report.clients["openai"].status == report.status == "healthy"
    assert report.clients["openai"].reasons == []
    assert '"ok":null' in report.model_dump_json()


async def test_an_active_check_a_rate_limit_answers_is_unknown_not_a_failure(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    # A 429 is the provider, up, asking for fewer requests: a check failed on it would make every replica
    # unready at once for ttl, for a limit they share, as the window's rule for 429s avoids.
    client = wrap()
    probe = HealthProbe({"openai": client}, active=True)
    fake_openai_server.enqueue_models(FakeReply.error(429, headers={"Retry-After": "1"}))
    report = await probe.check()
    check = report.clients["openai"].active_check
    assert check is not None
    assert (check.ok, check.error_kind) == (None, "rate_limit")
    assert (check.error or "").startswith("RateLimitError: ")
    assert report.clients["openai"].status == report.status == "healthy"
    # Out of credit is no rate limit: still a failed check.
    quota = FakeReply.error(429, "You exceeded your current quota", code="insufficient_quota")
    fake_openai_server.enqueue_models(quota)
    report = await HealthProbe({"openai": client}, active=True).check()
    check = report.clients["openai"].active_check
    assert check is not None
    assert (check.ok, check.error_kind) == (False, "permission")
    assert report.status == "unhealthy"


async def test_a_server_without_a_model_listing_is_unknown_not_a_failure(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    # A gateway that forwards the completions only answers GET /models with a 404: it is up, and a
    # readiness probe that failed on it would keep the service out of rotation for good.
    client = wrap()
    probe = HealthProbe({"openai": client}, active=True)
    fake_openai_server.enqueue_models(FakeReply.error(404, "Not Found"))
    report = await probe.check()
    check = report.clients["openai"].active_check
    assert check is not None
    assert (check.method, check.ok, check.error_kind) == ("list_models", None, "not_found")
    assert (check.error or "").startswith("NotFoundError: ")
    assert report.clients["openai"].status == report.status == "healthy"
    # The calls' own 404s (a wrong model or URL) still count against the client.
    fake_openai_server.enqueue(FakeReply.error(404, "The model `gpt-4o-mini` does not exist"))
    await calls(client, 1)
    assert (await probe.check()).clients["openai"].providers[0].errors_by_kind == {"not_found": 1}


async def test_a_one_token_completion_refused_for_its_prompt_is_unknown_not_a_failure(wrap: Wrap) -> None:
    client = wrap(client=ScriptedChatCompletionClient([faults.context_length(max_tokens=1)]), circuit=None)
    report = await HealthProbe({"scripted": client}, active=True).check()
    check = report.clients["scripted"].active_check
    assert check is not None
    assert (check.method, check.ok, check.error_kind) == ("completion", None, "context_length")
    assert report.status == "healthy"


def test_each_kind_of_client_gets_the_cheapest_check_that_works(
    wrap: Wrap, make_openai_client: OpenAIClientFactory
) -> None:
    azure: dict[str, Any] = {
        "model": "gpt-4o",
        "azure_endpoint": "https://acme.openai.azure.com",
        "api_version": "2024-06-01",
        "api_key": FAKE_KEY,
    }
    kinds = {
        "openai": make_openai_client(),
        "azure resource": AzureOpenAIChatCompletionClient(**azure),
        # Under a deployment's URL, GET /models is not the model listing: a one-token completion instead.
        "azure deployment": AzureOpenAIChatCompletionClient(**azure, azure_deployment="chat"),
        "replay": ReplayChatCompletionClient(["pong"]),
    }
    methods = {
        name: ActiveChecker(wrap(client=client), ttl=1, timeout=1, clock=Clock()).method
        for name, client in kinds.items()
    }
    assert methods == {
        "openai": "list_models",
        "azure resource": "list_models",
        "azure deployment": "completion",
        "replay": "completion",
    }


async def test_azure_deployments_of_one_model_are_told_apart_by_their_deployment(
    wrap: Wrap, fake_openai_server: FakeOpenAIServer
) -> None:
    # A deployment in one region with a fallback deployment of the same model in another: both were listed as
    # "AzureOpenAIChatCompletionClient(gpt-4o-mini)", and so named in the circuit breaker's and fallback's logs.
    def deployment(name: str) -> AzureOpenAIChatCompletionClient:
        return AzureOpenAIChatCompletionClient(
            model="gpt-4o-mini",
            azure_deployment=name,
            api_version="2024-10-21",
            azure_endpoint=fake_openai_server.root_url,
            api_key="9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c",
        )

    client = wrap(client=deployment("chat-eastus"), fallbacks=[deployment("chat-westeurope")])
    probe = HealthProbe({"chat": client})
    fake_openai_server.enqueue(FakeReply.error(500, "The server had an error"), FakeReply.text("pong"))
    await client.create(HI)
    await client.close()

    providers = (await probe.check()).clients["chat"].providers
    assert [(provider.name, provider.role, provider.errors_by_kind) for provider in providers] == [
        ("AzureOpenAIChatCompletionClient(gpt-4o-mini, deployment chat-eastus)", "primary", {"server_error": 1}),
        ("AzureOpenAIChatCompletionClient(gpt-4o-mini, deployment chat-westeurope)", "fallback", {}),
    ]
    assert [request.path for request in fake_openai_server.requests] == [
        "/openai/deployments/chat-eastus/chat/completions",
        "/openai/deployments/chat-westeurope/chat/completions",
    ]


async def test_a_one_token_check_an_open_circuit_refuses_is_unknown_and_not_held_once_it_half_opens(
    wrap: Wrap,
) -> None:
    # The open circuit refuses the check without a request, as a budget would: no answer from the provider. The
    # circuit says it is open; the refusal kept for ttl must not keep the client unready once it half-opens.
    clock = Clock()
    policy = CircuitBreakerPolicy(window=2, minimum_calls=2, failure_rate=0.5, open_for=30, clock=clock)
    inner = ScriptedChatCompletionClient([faults.server_error(), faults.server_error(), "pong"])
    client = wrap(client=inner, circuit=policy)
    probe = HealthProbe({"scripted": client}, active=True, ttl=30, clock=clock, min_attempts=100)
    await calls(client, 2)  # the circuit opens, for 30 s
    clock.now += 10
    health = (await probe.check()).clients["scripted"]
    check = health.active_check
    assert check is not None
    assert (check.method, check.ok, check.error_kind) == ("completion", None, None)
    assert (check.error or "").startswith("not asked: circuit open for ScriptedChatCompletionClient")
    assert (health.status, health.reasons) == (
        "unhealthy",
        ["primary: circuit open: calls are refused without a request"],
    )
    clock.now += 25  # the circuit half-opens; the check's result is 25 s old, still reused
    report = await probe.check()
    health = report.clients["scripted"]
    assert health.active_check is not None
    assert health.active_check.age_seconds == 25
    assert (health.providers[0].circuit, health.status, report.ready) == ("half_open", "degraded", True)


async def test_a_one_token_check_behind_a_client_side_cache_asks_the_provider_every_time(
    wrap: Wrap, recorder: UsageRecorder, store: UsageStore
) -> None:
    # AutoGen's ChatCompletionCache would answer every "ping" after the first from the cache: ok forever, the
    # provider never asked again. The check goes to the client under the cache.
    clock = Clock()
    inner = ScriptedChatCompletionClient(["pong", faults.server_error()])
    client = wrap(client=ChatCompletionCache(inner, MemoryStore()), project="acme")
    probe = HealthProbe({"cached": client}, active=True, ttl=30, clock=clock)
    first = (await probe.check()).clients["cached"]
    assert first.active_check is not None
    assert (first.active_check.method, first.active_check.ok) == ("completion", True)
    clock.now += 30
    second = (await probe.check()).clients["cached"]
    assert second.active_check is not None
    assert (second.active_check.ok, second.active_check.error_kind) == (False, "server_error")
    assert second.status == "unhealthy"
    assert recorder.flush(10)
    rows = store.events()
    assert [(row.project, row.cache_hit, dict(row.tags)) for row in rows] == [
        ("acme", False, {"health_check": "true"})
    ] * 2


async def test_a_check_whose_event_loop_stops_is_not_held_against_the_client(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    # A server's loop (TestClient's, say) stops while the check it started is in flight: the callers
    # waiting for it elsewhere get "unknown", and the next check asks the provider again.
    checker = ActiveChecker(wrap(), ttl=3600, timeout=30, clock=Clock())
    fake_openai_server.enqueue_models(FakeReply(hold_after_chunks=0))
    started, joined = threading.Event(), threading.Event()

    async def start_and_stop() -> None:
        asyncio.get_running_loop().create_task(checker.check())
        for _ in range(1000):  # until the listing reaches the server (held there)
            if fake_openai_server.models_requests:
                break
            await asyncio.sleep(0.01)
        started.set()
        await asyncio.to_thread(joined.wait, 10)
        # Returning ends asyncio.run, which cancels the check in flight and closes the loop.

    stopping = asyncio.create_task(asyncio.to_thread(asyncio.run, start_and_stop()))
    assert await asyncio.to_thread(started.wait, 10)
    waiting = asyncio.create_task(checker.check())
    await asyncio.sleep(0)  # this check now waits for the one in flight
    joined.set()
    await stopping
    first = await waiting
    assert (first.ok, first.error) == (None, "cancelled: its event loop stopped")
    second = await checker.check()
    assert second.ok is True  # asked again: the cancelled result was not kept for ttl
    assert len(fake_openai_server.models_requests) == 2


async def test_a_client_without_a_model_listing_gets_a_one_token_completion_in_the_ledger(
    wrap: Wrap, recorder: UsageRecorder, store: UsageStore
) -> None:
    client = wrap(client=ReplayChatCompletionClient(["pong"]), project="acme", tags={"tier": "gold"})
    probe = HealthProbe({"replay": client}, active=True)
    # The replay client has one answer: a second request in one ttl would fail the check.
    reports = await asyncio.gather(*(probe.check() for _ in range(20)))
    checks = [report.clients["replay"].active_check for report in reports]
    assert all(check is not None and check.ok and check.method == "completion" for check in checks)
    assert reports[-1].clients["replay"].attempts == 0  # health checks do not count as the service's traffic
    assert recorder.flush(10)
    [row] = store.events()
    assert row.project == "acme"
    assert dict(row.tags) == {"tier": "gold", "health_check": "true"}


async def test_a_one_token_check_is_billed_to_the_wrapper_whatever_scope_the_check_runs_in(
    wrap: Wrap, recorder: UsageRecorder, store: UsageStore
) -> None:
    # A /health request that runs inside a caller's attribution (UsageContextMiddleware without the route exempt,
    # an agent's turn) starts the check that every caller shares: the row is the wrapper's, as the docs say.
    client = wrap(client=ReplayChatCompletionClient(["pong"]), project="acme", tags={"tier": "gold"})
    probe = HealthProbe({"replay": client}, active=True)
    with usage_scope(project="caller", session="s-1", agent="someone", tags={"health_check": "false"}):
        report = await probe.check()
    check = report.clients["replay"].active_check
    assert check is not None
    assert check.ok
    assert recorder.flush(10)
    [row] = store.events()
    assert (row.project, row.session, row.agent) == ("acme", None, None)
    assert dict(row.tags) == {"tier": "gold", "health_check": "true"}


# ---- the usage store


@pytest.fixture
def locked(store: UsageStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[sqlite3.Connection]:
    """Another process's exclusive transaction on the ledger's file: every write fails as 'database is locked'."""
    monkeypatch.setattr(_engine, "SQLITE_BUSY_TIMEOUT_MS", 50)
    store.engine.dispose()  # new connections, with the short busy timeout
    holder = sqlite3.connect(str(store.engine.url.database), timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    yield holder
    holder.close()


async def test_rows_waiting_in_the_spool_degrade_the_store(
    fake_openai_server: FakeOpenAIServer,
    wrap: Wrap,
    store: UsageStore,
    recorder: UsageRecorder,
    locked: sqlite3.Connection,
) -> None:
    client = wrap()
    probe = HealthProbe({"openai": client}, store)
    fake_openai_server.enqueue(*[FakeReply.text("fine")] * 3)
    await calls(client, 3)
    assert recorder.flush(30)  # the database refused them: they are in the spool
    report = await probe.check()
    health = report.usage_store
    assert health is not None
    assert health.reachable  # SELECT 1 reads no table: the database answers, it cannot take writes
    assert (health.spool_backlog, health.queue_depth, health.writer_alive) == (3, 0, True)
    assert health.backlog_age_seconds is not None
    assert health.backlog_age_seconds >= 0
    assert health.status == report.status == "degraded"
    assert health.reasons[0].startswith("3 usage rows wait in the spool to be written")
    assert report.ready


async def test_rows_held_in_memory_make_the_store_unhealthy(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, store: UsageStore, tmp_path: Path, locked: sqlite3.Connection
) -> None:
    # The database takes no write (locked; SELECT 1 still answers) and the spool directory is a file: the rows
    # have nowhere to go but memory. Without a journal, whose directory the writer thread would make again.
    blocked = tmp_path / "blocked-spool"
    holding = UsageRecorder(
        store, spool_dir=blocked, flush_interval=0.05, retry_interval=0.05, close_sink=False, journal=False
    )
    try:
        blocked.write_text("a file where the spool directory should be")
        client = wrap(recorder=holding)
        probe = HealthProbe({"openai": client}, store)
        fake_openai_server.enqueue(*[FakeReply.text("fine")] * 3)
        await calls(client, 3)
        # Two failed writes: the spool was tried (and refused) after the first.
        await wait_for(lambda: holding.stats["failed_writes"] >= 2, "two failed writes")
        assert holding.held_in_memory == 3
        assert holding.stats["spooled"] == 0
        report = await probe.check()
        health = report.usage_store
        assert health is not None
        assert health.reachable
        assert (health.held_in_memory, health.spool_backlog) == (3, 0)
        assert (health.status, report.status) == ("unhealthy", "unhealthy")
        assert health.reasons[0].startswith("3 usage rows are held in memory")
        blocked.unlink()  # the disk is back: the rows go to the spool, which degrades the store only
        assert await asyncio.to_thread(holding.flush, 30)
        assert holding.held_in_memory == 0
        after = (await probe.check()).usage_store
        assert after is not None
        assert (after.held_in_memory, after.spool_backlog, after.status) == (0, 3, "degraded")
        locked.execute("ROLLBACK")  # and the database: the spool is replayed into it
        await wait_for(lambda: store.count() == 3, "the 3 rows stored")
    finally:
        holding.close(timeout=5)


async def wait_for(predicate: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Returns once ``predicate()`` holds (asked every 10 ms, off nothing: the recorder's thread changes it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"after {seconds} s, still not {what}")
        await asyncio.sleep(0.01)


async def test_an_unreachable_store_is_unhealthy(wrap: Wrap, store: UsageStore) -> None:
    probe = HealthProbe({"openai": wrap()}, store)
    break_the_file(store)
    report = await probe.check()
    health = report.usage_store
    assert health is not None
    assert not health.reachable
    assert health.round_trip_ms is None
    assert health.error is not None
    assert "unable to open database file" in health.error
    assert health.status == report.status == "unhealthy"
    assert not report.ready


async def test_a_postgresql_store_that_goes_away_is_unhealthy_and_its_password_stays_out(
    wrap: Wrap, make_pg_database: Callable[[], str], pg_admin_url: str
) -> None:
    url = make_pg_database()
    password = make_url(url).password
    with UsageStore(url) as pg_store:
        probe = HealthProbe({"openai": wrap()}, pg_store)
        before = await probe.check()
        admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        drop_pg_database(admin, str(make_url(url).database))
        admin.dispose()
        after = await probe.check()
    assert before.usage_store is not None
    assert before.usage_store.reachable
    assert after.usage_store is not None
    assert not after.usage_store.reachable
    assert "does not exist" in (after.usage_store.error or "")
    assert after.status == "unhealthy"
    if password:
        assert password not in before.model_dump_json() + after.model_dump_json()


class CrashingSink:
    """A sink whose write ends the thread that calls it, as a bug that escapes every ``except Exception`` would."""

    url = "crashing-sink"

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.wrote = threading.Event()

    def write(self, events: Sequence[UsageEvent]) -> int:
        return self.write_rows([event.to_row() for event in events])

    def write_rows(self, rows: Sequence[UsageRow]) -> int:
        self.thread = threading.current_thread()
        self.wrote.set()
        raise SystemExit("the writer thread ends here")

    def close(self) -> None:
        pass


# pytest reports every exception that ends a thread; ending this one is the point.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_dead_writer_thread_is_unhealthy(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, store: UsageStore, tmp_path: Path
) -> None:
    sink = CrashingSink()
    crashing = UsageRecorder(sink, spool_dir=tmp_path / "crash-spool", flush_interval=0.05)
    try:
        client = wrap(recorder=crashing)
        probe = HealthProbe({"openai": client}, store)
        assert (await probe.check()).usage_store.writer_alive  # type: ignore[union-attr]
        fake_openai_server.enqueue(FakeReply.text("recorded, never written"))
        await calls(client, 1)
        assert await asyncio.to_thread(sink.wrote.wait, 10)
        assert sink.thread is not None
        await asyncio.to_thread(sink.thread.join, 10)
        report = await probe.check()
        health = report.usage_store
        assert health is not None
        assert health.reachable
        assert (health.writer_alive, health.status, report.status) == (False, "unhealthy", "unhealthy")
        assert "writer thread is not running" in health.reasons[0]
    finally:
        crashing.close(timeout=0.1)


async def test_the_report_is_json_that_reads_back(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, store: UsageStore
) -> None:
    client = wrap()
    probe = HealthProbe({"openai": client}, store)
    fake_openai_server.enqueue(FakeReply.error(429), FakeReply.text("fine"))
    await calls(client, 2)
    report = await probe.check()
    assert HealthReport.model_validate_json(report.model_dump_json()) == report
