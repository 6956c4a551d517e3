"""Fixtures and helpers of the health probe's tests (test_health.py, test_health_routes.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import ChatCompletionClient, UserMessage

from autogen_reliability import CircuitBreakerPolicy, ReliableChatCompletionClient, reliable
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.storage import UsageStore

from .conftest import OpenAIClientFactory

__all__ = ["HI", "OPENS_AFTER_TWO", "Clock", "Wrap", "break_the_file", "calls", "recorder", "store", "wrap"]

HI = [UserMessage(content="hi", source="user")]


class Clock:
    """Monotonic seconds that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UsageStore]:
    """A SQLite ledger in the test's directory."""
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as ledger:
        yield ledger


@pytest.fixture
def recorder(store: UsageStore, tmp_path: Path) -> Iterator[UsageRecorder]:
    """A recorder writing to ``store``, spooling in the test's directory."""
    made = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    yield made
    made.close(timeout=5)


Wrap = Callable[..., ReliableChatCompletionClient]


@pytest.fixture
def wrap(make_openai_client: OpenAIClientFactory, recorder: UsageRecorder) -> Wrap:
    """A wrapped OpenAI client on the fake server, recording to ``recorder``, one attempt per call by default."""

    def make(*, client: ChatCompletionClient | None = None, **options: Any) -> ReliableChatCompletionClient:
        options.setdefault("retry", None)
        options.setdefault("recorder", recorder)
        return reliable(client if client is not None else make_openai_client(), **options)

    return make


async def calls(client: ReliableChatCompletionClient, count: int) -> None:
    """``count`` calls, each allowed to fail (the server's script says how)."""
    for _ in range(count):
        try:
            await client.create(HI)
        except Exception:  # the failures are what the probe is to see
            continue


OPENS_AFTER_TWO = CircuitBreakerPolicy(window=2, minimum_calls=2, failure_rate=0.5)


def break_the_file(store: UsageStore) -> None:
    """Where the SQLite database was, a directory: nothing can open it; no pooled connection survives."""
    path = Path(str(store.engine.url.database))
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    path.mkdir()
    store.engine.dispose()
