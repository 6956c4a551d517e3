"""The fake of Anthropic's Messages wire protocol, driven by the real anthropic SDK over HTTP.

The SDK parses every answer into its own types (``Message``, ``RawMessageStreamEvent``), so a shape
the fake got wrong fails here. The last test is a tripwire: AutoGen's AnthropicChatCompletionClient
cannot send a request with the anthropic SDK installed here (see its reason).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from autogen_core.models import UserMessage
from autogen_ext.models.anthropic import AnthropicChatCompletionClient

from .anthropic_wire import AnthropicReply, FakeAnthropicServer

MODEL = "claude-sonnet-4-0"
SNAPSHOT = "claude-sonnet-4-20250514"
CACHED: dict[str, Any] = {
    "input_tokens": 1000,
    "output_tokens": 500,
    "cache_read_input_tokens": 6000,
    "cache_creation_input_tokens": 3000,
}
HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as fake:
        yield fake


async def test_a_message_is_parsed_by_the_sdk_with_its_usage(server: FakeAnthropicServer) -> None:
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED))
    async with anthropic.AsyncAnthropic(api_key="sk-local", base_url=server.base_url, max_retries=0) as sdk:
        message = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert (message.model, message.content[0].type, message.stop_reason) == (SNAPSHOT, "text", "end_turn")
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (1000, 500)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (6000, 3000)
    assert server.requests[0]["model"] == MODEL


async def test_a_stream_is_parsed_by_the_sdk_event_by_event(server: FakeAnthropicServer) -> None:
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED))
    async with anthropic.AsyncAnthropic(api_key="sk-local", base_url=server.base_url, max_retries=0) as sdk:
        stream = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HI, stream=True)
        events = [event async for event in stream]
    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK drops the ping
    start, delta = events[0], events[5]
    assert start.type == "message_start"
    assert delta.type == "message_delta"
    assert (start.message.model, start.message.usage.input_tokens, start.message.usage.output_tokens) == (
        SNAPSHOT,
        1000,
        1,
    )
    assert (start.message.usage.cache_read_input_tokens, start.message.usage.cache_creation_input_tokens) == (
        6000,
        3000,
    )
    assert (delta.usage.output_tokens, delta.usage.input_tokens) == (500, None)
    text = "".join(
        event.delta.text for event in events if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )
    assert text == "Hello there"


@pytest.mark.xfail(
    "temperature" not in inspect.signature(anthropic.resources.AsyncMessages.create).parameters,
    raises=TypeError,
    strict=True,
    reason="AutoGen 0.7.5's Anthropic client always sends temperature=, which this anthropic SDK no longer takes",
)
async def test_autogens_anthropic_client_reaches_the_server(server: FakeAnthropicServer) -> None:
    # When this passes, the usage tap can be made to read Anthropic's cache tokens and tested end to end.
    server.enqueue(AnthropicReply("Hello there", SNAPSHOT, CACHED))
    client = AnthropicChatCompletionClient(model=MODEL, api_key="sk-local", base_url=server.base_url, max_retries=0)
    try:
        result = await client.create([UserMessage(content="hi", source="user")])
    finally:
        await client.close()
    assert result.content == "Hello there"
    assert len(server.requests) == 1
