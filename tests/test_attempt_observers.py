"""Observers added to a live wrapper: they see every provider attempt, the fallbacks' too, from then on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from autogen_core.models import UserMessage

from autogen_reliability import (
    AttemptEvent,
    CircuitBreakerPolicy,
    ConfigurationError,
    ReliableChatCompletionClient,
    RetryPolicy,
)
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

from .conftest import OpenAIClientFactory

HI = [UserMessage(content="hi", source="user")]


async def test_an_added_observer_sees_the_primary_and_the_fallback_attempts(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    primary, fallback = make_openai_client(), make_openai_client()
    client = ReliableChatCompletionClient(primary, fallbacks=[fallback], retry=None, track_usage=False)
    seen: list[AttemptEvent] = []
    fake_openai_server.enqueue(FakeReply.text("before"))
    await client.create(HI)  # made before the observer was added: not seen
    client.add_attempt_observer(seen.append)
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.text("from the fallback"))
    result = await client.create(HI)
    assert result.content == "from the fallback"
    assert [(event.client, event.outcome) for event in seen] == [(primary, "error"), (fallback, "ok")]


async def test_an_observer_is_added_once_and_removed(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    client = ReliableChatCompletionClient(make_openai_client(), track_usage=False)
    seen: list[AttemptEvent] = []
    client.add_attempt_observer(seen.append)
    client.add_attempt_observer(seen.append)
    fake_openai_server.enqueue(FakeReply.text("one"), FakeReply.text("two"))
    await client.create(HI)
    assert len(seen) == 1
    client.remove_attempt_observer(seen.append)
    client.remove_attempt_observer(seen.append)  # not there any more: ignored
    await client.create(HI)
    assert len(seen) == 1


async def test_an_added_observer_that_raises_is_logged_and_the_others_still_see(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: AttemptEvent) -> None:
        raise RuntimeError("probe bug")

    client = ReliableChatCompletionClient(make_openai_client(), track_usage=False)
    seen: list[AttemptEvent] = []
    client.add_attempt_observer(broken)
    client.add_attempt_observer(seen.append)
    fake_openai_server.enqueue(FakeReply.text("still fine"))
    with caplog.at_level(logging.ERROR, logger="autogen_reliability"):
        result = await client.create(HI)
    assert result.content == "still fine"
    assert len(seen) == 1
    assert "probe bug" in caplog.text


def test_an_observer_must_be_callable(make_openai_client: OpenAIClientFactory) -> None:
    client = ReliableChatCompletionClient(make_openai_client(), track_usage=False)
    with pytest.raises(ConfigurationError, match="must be callable"):
        client.add_attempt_observer("print")  # type: ignore[arg-type]


def test_the_wrapper_says_which_fallbacks_circuit_and_recorder_it_uses(
    make_openai_client: OpenAIClientFactory, tmp_path: Path
) -> None:
    fallback = make_openai_client()
    policy = CircuitBreakerPolicy(window=4, minimum_calls=2)
    recorder = UsageRecorder(UsageStore(f"sqlite:///{tmp_path / 'usage.db'}"), spool_dir=tmp_path / "spool")
    try:
        client = ReliableChatCompletionClient(
            make_openai_client(), fallbacks=[fallback], circuit=policy, recorder=recorder, retry=RetryPolicy()
        )
        assert client.fallbacks == (fallback,)
        assert client.circuit is policy
        assert client.recorder is recorder
        plain = ReliableChatCompletionClient(make_openai_client(), circuit=None, track_usage=False)
        assert plain.fallbacks == ()
        assert plain.circuit is None
        assert plain.recorder is None
        assert ReliableChatCompletionClient(make_openai_client(), track_usage=False).circuit == CircuitBreakerPolicy()
    finally:
        recorder.close()
