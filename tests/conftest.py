"""Shared fixtures: a real local OpenAI-wire server and AutoGen clients that talk HTTP to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from autogen_ext.models.openai import OpenAIChatCompletionClient

from autogen_reliability.testing import FakeOpenAIServer

MODEL = "gpt-4o-mini"

OpenAIClientFactory = Callable[..., OpenAIChatCompletionClient]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """A started FakeOpenAIServer on 127.0.0.1, stopped after the test."""
    with FakeOpenAIServer(model=MODEL) as fake:
        yield fake


@pytest.fixture
async def make_openai_client(server: FakeOpenAIServer) -> AsyncIterator[OpenAIClientFactory]:
    """Builds AutoGen's real OpenAIChatCompletionClient pointed at ``server``; closes them after the test.

    The SDK's own retries are off (``max_retries=0``) unless a test asks for them.
    """
    made: list[OpenAIChatCompletionClient] = []

    def make(**overrides: Any) -> OpenAIChatCompletionClient:
        options: dict[str, Any] = {"model": MODEL, "api_key": "sk-test", "base_url": server.base_url, "max_retries": 0}
        options.update(overrides)
        client = OpenAIChatCompletionClient(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
