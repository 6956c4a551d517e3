"""Every abstract member of AutoGen's ChatCompletionClient, run against the wrapper and the client it wraps."""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable

import pytest
from autogen_core.models import ChatCompletionClient, CreateResult, RequestUsage, UserMessage
from autogen_ext.models.cache import ChatCompletionCache
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient
from pydantic import BaseModel

from autogen_reliability import ReliableChatCompletionClient
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage, RecordedRequest

from .conftest import OpenAIClientFactory

HELLO = [UserMessage(content="Say hello to the team", source="user")]

Check = Callable[[FakeOpenAIServer, OpenAIClientFactory], Awaitable[None]]


async def check_create(fake_openai_server: FakeOpenAIServer, make: OpenAIClientFactory) -> None:
    reply = FakeReply.text("Hello, team!", usage=FakeUsage(prompt_tokens=11, completion_tokens=4))
    fake_openai_server.enqueue(reply, reply)
    plain = await make().create(HELLO)
    wrapped = await ReliableChatCompletionClient(make()).create(HELLO)
    assert wrapped == plain
    assert wrapped.content == "Hello, team!"
    assert wrapped.usage == RequestUsage(prompt_tokens=11, completion_tokens=4)
    assert fake_openai_server.requests[0].body == fake_openai_server.requests[1].body


async def check_create_stream(fake_openai_server: FakeOpenAIServer, make: OpenAIClientFactory) -> None:
    reply = FakeReply.text("Hello there, team!", usage=FakeUsage(prompt_tokens=9, completion_tokens=5))
    fake_openai_server.enqueue(reply, reply)
    plain = [item async for item in make().create_stream(HELLO, include_usage=True)]
    wrapped = [item async for item in ReliableChatCompletionClient(make()).create_stream(HELLO, include_usage=True)]
    assert wrapped == plain
    assert "".join(item for item in wrapped if isinstance(item, str)) == "Hello there, team!"
    final = wrapped[-1]
    assert isinstance(final, CreateResult)
    assert final.usage == RequestUsage(prompt_tokens=9, completion_tokens=5)


async def check_close(fake_openai_server: FakeOpenAIServer, make: OpenAIClientFactory) -> None:
    inner = make()
    fake_openai_server.enqueue(FakeReply.text("before close"))
    await ReliableChatCompletionClient(inner).create(HELLO)
    await ReliableChatCompletionClient(inner).close()
    with pytest.raises(Exception):  # noqa: B017, PT011  # the SDK refuses to use a closed HTTP client
        await inner.create(HELLO)
    assert fake_openai_server.request_count == 1


async def check_usage(fake_openai_server: FakeOpenAIServer, make: OpenAIClientFactory) -> None:
    inner = make()
    client = ReliableChatCompletionClient(ChatCompletionCache(inner))
    fake_openai_server.enqueue(
        FakeReply.text("first", usage=FakeUsage(prompt_tokens=10, completion_tokens=2)),
        FakeReply.text("second", usage=FakeUsage(prompt_tokens=20, completion_tokens=3)),
    )
    await client.create(HELLO)
    await client.create([UserMessage(content="Something else", source="user")])
    cached = await client.create(HELLO)  # served by the cache: no request
    assert cached.cached
    assert fake_openai_server.request_count == 2
    assert client.actual_usage() == RequestUsage(prompt_tokens=30, completion_tokens=5)
    assert client.total_usage() == RequestUsage(prompt_tokens=40, completion_tokens=7)
    # The wrapper's own counters: a second wrapper on the same inner client starts at zero.
    assert ReliableChatCompletionClient(inner).total_usage() == RequestUsage(0, 0)


async def check_count_tokens(fake_openai_server: FakeOpenAIServer, make: OpenAIClientFactory) -> None:
    # The OpenAI client would download a tiktoken encoding here; AutoGen's replay client counts offline.
    inner = ReplayChatCompletionClient(["unused"])
    assert ReliableChatCompletionClient(inner).count_tokens(HELLO) == inner.count_tokens(HELLO) == 5


async def check_remaining_tokens(fake_openai_server: FakeOpenAIServer, make: OpenAIClientFactory) -> None:
    inner = ReplayChatCompletionClient(["unused"])
    assert ReliableChatCompletionClient(inner).remaining_tokens(HELLO) == inner.remaining_tokens(HELLO) == 10000


async def check_capabilities(fake_openai_server: FakeOpenAIServer, make: OpenAIClientFactory) -> None:
    inner = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = inner.capabilities
    with pytest.warns(DeprecationWarning, match="model_info"):
        assert ReliableChatCompletionClient(inner).capabilities == expected


async def check_model_info(fake_openai_server: FakeOpenAIServer, make: OpenAIClientFactory) -> None:
    inner = make(model_info={"vision": False, "function_calling": True, "json_output": True, "family": "gpt-4o",
                             "structured_output": True, "multiple_system_messages": True})  # fmt: skip
    assert ReliableChatCompletionClient(inner).model_info == inner.model_info
    assert ReliableChatCompletionClient(inner).model_info["family"] == "gpt-4o"


CHECKS: dict[str, Check] = {
    "create": check_create,
    "create_stream": check_create_stream,
    "close": check_close,
    "actual_usage": check_usage,
    "total_usage": check_usage,
    "count_tokens": check_count_tokens,
    "remaining_tokens": check_remaining_tokens,
    "capabilities": check_capabilities,
    "model_info": check_model_info,
}


def test_every_abstract_member_has_a_check() -> None:
    assert set(CHECKS) == set(ChatCompletionClient.__abstractmethods__)


def test_wrapper_is_a_concrete_chat_completion_client() -> None:
    assert not ReliableChatCompletionClient.__abstractmethods__


@pytest.mark.parametrize("member", sorted(ChatCompletionClient.__abstractmethods__))
async def test_member_behaves_as_the_inner_clients(
    member: str, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    await CHECKS[member](fake_openai_server, make_openai_client)


async def test_create_takes_messages_by_keyword(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # SelectorGroupChat calls create(messages=...) and create_stream(messages=...).
    client = ReliableChatCompletionClient(make_openai_client())
    fake_openai_server.enqueue(FakeReply.text("by keyword"), FakeReply.text("streamed by keyword"))
    assert (await client.create(messages=HELLO)).content == "by keyword"
    items = [item async for item in client.create_stream(messages=HELLO)]
    assert isinstance(items[-1], CreateResult)
    assert items[-1].content == "streamed by keyword"


async def test_result_is_the_inner_clients_object_untouched(make_openai_client: OpenAIClientFactory) -> None:
    inner = ReplayChatCompletionClient(
        [CreateResult(finish_reason="stop", content="x", usage=RequestUsage(1, 1), cached=False)]
    )
    result = await ReliableChatCompletionClient(inner).create(HELLO)
    assert result == CreateResult(finish_reason="stop", content="x", usage=RequestUsage(1, 1), cached=False)


async def test_stream_asks_openai_for_usage(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.text("counted", usage=FakeUsage(prompt_tokens=7, completion_tokens=1)))
    client = ReliableChatCompletionClient(make_openai_client())
    items = [item async for item in client.create_stream(HELLO)]
    assert fake_openai_server.requests[0].body is not None
    assert fake_openai_server.requests[0].body["stream_options"] == {"include_usage": True}
    assert isinstance(items[-1], CreateResult)
    assert items[-1].usage == RequestUsage(prompt_tokens=7, completion_tokens=1)
    assert client.total_usage() == RequestUsage(prompt_tokens=7, completion_tokens=1)


async def test_stream_through_autogens_cache_asks_openai_for_usage(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The cache passes extra_create_args on as given: the OpenAI client under it is asked as a bare one is.
    # Seen as a client of another kind, it was not asked: the row's tokens were estimated, and the cache kept
    # an answer of (0, 0) tokens for every later hit.
    fake_openai_server.enqueue(FakeReply.text("counted", usage=FakeUsage(prompt_tokens=7, completion_tokens=1)))
    client = ReliableChatCompletionClient(ChatCompletionCache(make_openai_client()), track_usage=False)
    items = [item async for item in client.create_stream(HELLO)]
    assert fake_openai_server.requests[0].body is not None
    assert fake_openai_server.requests[0].body["stream_options"] == {"include_usage": True}
    assert isinstance(items[-1], CreateResult)
    assert items[-1].usage == RequestUsage(prompt_tokens=7, completion_tokens=1)
    hit = [item async for item in client.create_stream(HELLO)]  # the same request: served by the cache
    assert fake_openai_server.request_count == 1
    assert isinstance(hit[-1], CreateResult)
    assert hit[-1].cached
    assert hit[-1].usage == RequestUsage(prompt_tokens=7, completion_tokens=1)


class City(BaseModel):
    name: str


async def test_structured_output_through_autogens_cache_is_validated_by_the_wrapper(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A bare OpenAI client is sent the schema as a response_format and the wrapper reads the answer itself, so
    # JSON in a fence is repaired. Under the cache, json_output went to the SDK's strict parse, which raised.
    fence = '```json\n{"name": "Paris"}\n```'
    fake_openai_server.enqueue(FakeReply.text(fence), FakeReply.text(fence))
    client = ReliableChatCompletionClient(ChatCompletionCache(make_openai_client()), track_usage=False)
    result = await client.create(HELLO, json_output=City)
    assert City.model_validate_json(str(result.content)) == City(name="Paris")
    body = fake_openai_server.requests[0].body
    assert body is not None
    assert body["response_format"]["type"] == "json_schema"
    items = [
        item async for item in client.create_stream([UserMessage(content="Again", source="user")], json_output=City)
    ]
    assert isinstance(items[-1], CreateResult)
    assert City.model_validate_json(str(items[-1].content)) == City(name="Paris")


async def test_stream_leaves_an_explicit_stream_options_alone(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.text("not counted"))
    client = ReliableChatCompletionClient(make_openai_client())
    options = {"stream_options": {"include_usage": False}}
    items = [item async for item in client.create_stream(HELLO, extra_create_args=options)]
    assert fake_openai_server.requests[0].body is not None
    assert fake_openai_server.requests[0].body["stream_options"] == {"include_usage": False}
    assert isinstance(items[-1], CreateResult)
    assert items[-1].usage == RequestUsage(0, 0)


async def test_plain_create_is_not_sent_stream_options(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.text("plain"))
    await ReliableChatCompletionClient(make_openai_client()).create(HELLO)
    assert fake_openai_server.requests[0].body is not None
    assert "stream_options" not in fake_openai_server.requests[0].body


def azure_client(server: FakeOpenAIServer, api_version: str) -> AzureOpenAIChatCompletionClient:
    return AzureOpenAIChatCompletionClient(
        model="gpt-4o-mini",
        azure_deployment="prod-chat",
        api_version=api_version,
        azure_endpoint=server.root_url,
        api_key="9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c",
    )


@pytest.mark.parametrize("api_version", ["2024-06-01", "2024-02-15-preview", "2024-08-01-preview"])
async def test_an_azure_api_version_without_stream_options_is_not_sent_them(
    fake_openai_server: FakeOpenAIServer, api_version: str
) -> None:
    # Azure OpenAI takes stream_options from 2024-09-01-preview on (GA 2024-10-21); an older api-version refuses
    # the whole request. Every stream of a wrapped client failed so, though the same client alone streamed.
    def azure(request: RecordedRequest) -> FakeReply:
        if request.body is not None and "stream_options" in request.body:
            return FakeReply.error(400, "Unrecognized request argument supplied: stream_options", code=None)
        return FakeReply.text("streamed")

    fake_openai_server.default = azure
    client = ReliableChatCompletionClient(azure_client(fake_openai_server, api_version), track_usage=False)
    items = [item async for item in client.create_stream(HELLO)]
    await client.close()
    assert isinstance(items[-1], CreateResult)
    assert items[-1].content == "streamed"
    assert fake_openai_server.requests[0].body is not None
    assert "stream_options" not in fake_openai_server.requests[0].body


@pytest.mark.parametrize("api_version", ["2024-10-21", "2024-09-01-preview", "2025-04-01-preview", "preview"])
async def test_an_azure_api_version_with_stream_options_is_asked_for_usage(
    fake_openai_server: FakeOpenAIServer, api_version: str
) -> None:
    fake_openai_server.enqueue(FakeReply.text("counted", usage=FakeUsage(prompt_tokens=7, completion_tokens=1)))
    client = ReliableChatCompletionClient(azure_client(fake_openai_server, api_version), track_usage=False)
    items = [item async for item in client.create_stream(HELLO)]
    await client.close()
    assert fake_openai_server.requests[0].body is not None
    assert fake_openai_server.requests[0].body["stream_options"] == {"include_usage": True}
    assert isinstance(items[-1], CreateResult)
    assert items[-1].usage == RequestUsage(prompt_tokens=7, completion_tokens=1)
