"""ScriptedChatCompletionClient and faults: every kind of item, and the library around them as in production.

The faults are judged against the real thing: the same failure served by
FakeOpenAIServer to AutoGen's OpenAI client through the real SDK. Under
``reliable(...)`` the retry layer, validation and the usage ledger (a real
SQLite file) must treat the scripted client as they treat a provider client.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

import openai
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import TextMessage, ToolCallSummaryMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import ToolSchema
from genai_prices import Usage, calc_price
from pydantic import BaseModel

from autogen_reliability import (
    ConfigurationError,
    ErrorKind,
    RetriesExhaustedError,
    RetryPolicy,
    ValidationPolicy,
    reliable,
    usage_scope,
)
from autogen_reliability.providers import ProviderUsage, capture_provider_usage, report_provider_usage
from autogen_reliability.retry import RetryEvent, classify_error, retry_after, set_testing
from autogen_reliability.retry._classify import NEVER_RETRIED, RETRYABLE_BY_DEFAULT
from autogen_reliability.testing import (
    FakeOpenAIServer,
    FakeReply,
    FakeUsage,
    ScriptedChatCompletionClient,
    ScriptedReply,
    ScriptedRequest,
    UnexpectedRequestError,
    faults,
)

from .conftest import OpenAIClientFactory
from .storage_fixtures import Ledger, ledger_rows

HI: list[LLMMessage] = [UserMessage(content="hi", source="user")]
TERSE: list[LLMMessage] = [
    SystemMessage(content="You are terse."),
    UserMessage(content="Say hello please", source="user"),
]

Mode = Literal["create", "stream"]
MODES: list[Mode] = ["create", "stream"]


async def call(client: ChatCompletionClient, mode: Mode, messages: Any = HI, **kwargs: Any) -> CreateResult:
    """One call, through ``create`` or by consuming ``create_stream`` to its final result."""
    if mode == "create":
        return await client.create(messages, **kwargs)
    final: CreateResult | None = None
    async for item in client.create_stream(messages, **kwargs):
        if isinstance(item, CreateResult):
            assert final is None, "a stream ends with exactly one CreateResult"
            final = item
        else:
            assert final is None, "no chunk may follow the CreateResult"
    assert final is not None
    return final


async def collect(stream: AsyncIterator[str | CreateResult], seen: list[str | CreateResult]) -> None:
    """Read ``stream`` into ``seen`` (what a consumer had when it failed stays there)."""
    async for item in stream:
        seen.append(item)


async def stream_items(client: ChatCompletionClient, messages: Any = HI, **kwargs: Any) -> list[str | CreateResult]:
    return [item async for item in client.create_stream(messages, **kwargs)]


class FakeTime:
    """A clock that moves only when someone sleeps on it: each wait is recorded, none is slept."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def policy(self, **options: Any) -> RetryPolicy:
        return RetryPolicy(**{"initial_delay": 0.01, "max_delay": 0.05, **options}, clock=self.clock, sleep=self.sleep)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


# --------------------------------------------------------------------------- items


@pytest.mark.parametrize("mode", MODES)
async def test_a_text_item_answers_with_its_text_and_the_word_count_usage(mode: Mode) -> None:
    client = ScriptedChatCompletionClient(["Hello there, friend"])
    result = await call(client, mode, TERSE)
    assert (result.content, result.finish_reason, result.cached, result.thought) == (
        "Hello there, friend",
        "stop",
        False,
        None,
    )
    # One per message plus its words (1 + 3, 1 + 3); the answer's three words.
    assert result.usage == RequestUsage(prompt_tokens=8, completion_tokens=3)


@pytest.mark.parametrize("mode", MODES)
async def test_dicts_and_lists_answer_with_their_json(mode: Mode) -> None:
    client = ScriptedChatCompletionClient([{"city": "Oslo", "population": 709_000}, [1, 2], ScriptedReply.json(None)])
    assert json.loads((await call(client, mode)).content) == {"city": "Oslo", "population": 709_000}  # type: ignore[arg-type]
    assert json.loads((await call(client, mode)).content) == [1, 2]  # type: ignore[arg-type]
    assert (await call(client, mode)).content == "null"


@pytest.mark.parametrize("mode", MODES)
async def test_tool_call_items_answer_with_calls_numbered_in_serving_order(mode: Mode) -> None:
    client = ScriptedChatCompletionClient(
        [
            ScriptedReply.tool_call("add", {"a": 1, "b": 2}),
            FunctionCall(id="mine", name="lookup", arguments='{"q": "x"}'),
            [FunctionCall(id="", name="a", arguments="{}"), FunctionCall(id="", name="b", arguments="{}")],
            ScriptedReply.tool_calls([("add", '{"a": 1,'), ("search", {"q": "tea"})], thought="Let me check."),
            ScriptedReply.tool_call("noop"),
        ]
    )
    first = await call(client, mode)
    assert first.content == [FunctionCall(id="call_1", name="add", arguments='{"a": 1, "b": 2}')]
    assert first.finish_reason == "function_calls"
    assert (await call(client, mode)).content == [FunctionCall(id="mine", name="lookup", arguments='{"q": "x"}')]
    assert [c.id for c in (await call(client, mode)).content] == ["call_2", "call_3"]  # type: ignore[union-attr]
    fourth = await call(client, mode)
    # A string is sent verbatim, even when it is not JSON: a test of a model's broken arguments.
    assert fourth.content == [
        FunctionCall(id="call_4", name="add", arguments='{"a": 1,'),
        FunctionCall(id="call_5", name="search", arguments='{"q": "tea"}'),
    ]
    assert fourth.thought == "Let me check."
    assert (await call(client, mode)).content == [FunctionCall(id="call_6", name="noop", arguments="{}")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_create_result_item_is_answered_as_a_copy_with_its_own_usage(mode: Mode) -> None:
    scripted = CreateResult(
        finish_reason="length", content="cut sh", usage=RequestUsage(10, 2), cached=False, thought="hmm"
    )
    client = ScriptedChatCompletionClient([scripted, scripted])
    first = await call(client, mode)
    assert first == scripted
    assert first is not scripted
    first.usage.prompt_tokens = 999  # a consumer changing its answer changes nothing scripted
    assert await call(client, mode) == scripted


@pytest.mark.parametrize("mode", MODES)
async def test_usage_comes_from_the_item_else_the_clients_default_else_the_word_count(mode: Mode) -> None:
    client = ScriptedChatCompletionClient(
        [
            ScriptedReply.text("one", usage=RequestUsage(prompt_tokens=100, completion_tokens=7)),
            ScriptedReply.text("two", usage=FakeUsage(prompt_tokens=50, completion_tokens=5, cached_tokens=40)),
            ScriptedReply(content="built directly", usage=RequestUsage(prompt_tokens=3, completion_tokens=4)),
            "three",
        ],
        usage=RequestUsage(prompt_tokens=11, completion_tokens=1),
    )
    assert (await call(client, mode)).usage == RequestUsage(100, 7)
    assert (await call(client, mode)).usage == RequestUsage(50, 5)
    assert (await call(client, mode)).usage == RequestUsage(3, 4)
    assert (await call(client, mode)).usage == RequestUsage(11, 1)
    assert client.actual_usage() == RequestUsage(11, 1)  # the last answer's, as AutoGen's Replay client says
    assert client.total_usage() == RequestUsage(164, 17)


@pytest.mark.parametrize("mode", MODES)
async def test_an_exception_item_is_raised_when_its_turn_comes(mode: Mode) -> None:
    error = ValueError("the scripted failure")
    client = ScriptedChatCompletionClient(["first", error, "after"])
    await call(client, mode)
    with pytest.raises(ValueError, match="the scripted failure") as caught:
        await call(client, mode)
    assert caught.value is error
    assert client.remaining == ["after"]
    assert (await call(client, mode)).content == "after"
    assert client.total_usage() == RequestUsage(4, 2)  # two answers of (2, 1); a failure answers nothing


@pytest.mark.parametrize("mode", MODES)
async def test_a_delay_is_waited_with_the_injected_sleep(mode: Mode, fake_time: FakeTime) -> None:
    client = ScriptedChatCompletionClient(
        [
            ScriptedReply.text("late", delay=2.5),
            ScriptedReply.error(faults.timeout(), delay=timedelta(seconds=30)),
            "now",
        ],
        sleep=fake_time.sleep,
    )
    assert (await call(client, mode)).content == "late"
    with pytest.raises(openai.APITimeoutError):
        await call(client, mode)
    await call(client, mode)
    assert fake_time.slept == [2.5, 30.0]


@pytest.mark.parametrize("mode", MODES)
async def test_a_delay_ends_when_the_cancellation_token_is_cancelled(mode: Mode) -> None:
    client = ScriptedChatCompletionClient([ScriptedReply.text("never", delay=math.inf), "next"])
    token = CancellationToken()
    pending = asyncio.ensure_future(call(client, mode, cancellation_token=token))
    await client.wait_for_requests(1)  # recorded when it arrives, before its delay
    assert not pending.done()
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert client.remaining == ["next"]  # the hanging item was used, as a server takes the reply it holds
    assert client.requests[0].cancellation_token is token


async def test_a_delay_ends_when_the_task_is_cancelled() -> None:
    client = ScriptedChatCompletionClient([ScriptedReply.text("never", delay=math.inf)])
    pending = asyncio.ensure_future(client.create(HI))
    await client.wait_for_requests(1)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_waiting_for_requests_says_how_many_arrived() -> None:
    client = ScriptedChatCompletionClient(["a"])
    await client.create(HI)
    assert await client.wait_for_requests(1) == client.requests
    with pytest.raises(TimeoutError, match=r"1 of 2 requests arrived at ScriptedChatCompletionClient\(gpt-4o-mini"):
        await client.wait_for_requests(2, timeout=0.01)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n": -1}, r"n must be an int >= 0, got -1"),
        ({"n": True}, r"n must be an int >= 0, got True"),
        ({"n": 1.5}, r"n must be an int >= 0, got 1.5"),
        ({"n": "2"}, r"n must be an int >= 0, got '2'"),
        ({"timeout": -1}, r"timeout must be seconds >= 0 .* got -1"),
        ({"timeout": math.nan}, r"timeout must be seconds >= 0 .* got nan"),
        ({"timeout": "1"}, r"timeout must be seconds >= 0 .* got '1'"),
        ({"timeout": True}, r"timeout must be seconds >= 0 .* got True"),
    ],
)
async def test_waiting_for_requests_refuses_a_count_or_timeout_that_cannot_be_waited_for(
    arguments: dict[str, Any], message: str
) -> None:
    # A negative count returned at once, a NaN timeout waited for ever, and a string failed with a bare TypeError.
    client = ScriptedChatCompletionClient([])
    with pytest.raises(ConfigurationError, match=message):
        await asyncio.wait_for(client.wait_for_requests(**arguments), 1)


async def test_waiting_for_requests_with_an_infinite_timeout_waits_as_none_does() -> None:
    client = ScriptedChatCompletionClient(["a"])
    waiting = asyncio.ensure_future(client.wait_for_requests(1, timeout=math.inf))
    await client.create(HI)
    assert await waiting == client.requests
    assert await client.wait_for_requests(0, timeout=0) == client.requests


async def test_a_token_cancelled_before_the_call_cancels_it() -> None:
    client = ScriptedChatCompletionClient(["unused"])
    token = CancellationToken()
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await client.create(HI, cancellation_token=token)


# --------------------------------------------------------------------------- streaming


async def test_text_streams_word_by_word_then_its_create_result() -> None:
    client = ScriptedChatCompletionClient(["Once upon  a time"])
    items = await stream_items(client)
    assert items[:-1] == ["Once", " upon", "  a", " time"]  # the pieces join to the exact text
    final = items[-1]
    assert isinstance(final, CreateResult)
    assert final.content == "Once upon  a time"


async def test_a_stream_item_yields_exactly_its_chunks_and_create_answers_with_their_join() -> None:
    client = ScriptedChatCompletionClient([ScriptedReply.stream(["Hel", "lo", "!"]), ScriptedReply.stream(["a", "b"])])
    items = await stream_items(client)
    assert items[:-1] == ["Hel", "lo", "!"]
    assert isinstance(items[-1], CreateResult)
    assert items[-1].content == "Hello!"
    assert (await client.create(HI)).content == "ab"


async def test_text_with_chunks_must_join_to_its_content() -> None:
    client = ScriptedChatCompletionClient([ScriptedReply.text("Hello", chunks=["He", "llo"])])
    assert (await stream_items(client))[:-1] == ["He", "llo"]
    with pytest.raises(ConfigurationError, match="do not join to the content"):
        ScriptedReply.text("Hello", chunks=["Hel", "p"])


async def test_a_tool_call_streams_only_its_create_result() -> None:
    client = ScriptedChatCompletionClient([ScriptedReply.tool_call("add", {"a": 1})])
    items = await stream_items(client)
    assert len(items) == 1
    assert isinstance(items[0], CreateResult)
    assert items[0].content == [FunctionCall(id="call_1", name="add", arguments='{"a": 1}')]


async def test_the_text_sent_with_tool_calls_streams_as_autogens_openai_client_streams_it(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The provider sends the text before the calls; AutoGen's client yields it as it comes, then the result
    # with the text as its thought. The scripted client yielded the result alone: a consumer of the chunks
    # (a UI, ModelClientStreamingChunkEvent, the sanitiser) saw nothing of the text.
    fake_openai_server.enqueue(FakeReply.tool_calls([("add", {"a": 1})], content="Let me add that up."))
    real = await stream_items(make_openai_client())
    scripted = ScriptedChatCompletionClient([ScriptedReply.tool_call("add", {"a": 1}, thought="Let me add that up.")])

    items = await stream_items(scripted)

    assert real[:-1] == ["Let", " me", " add", " that", " up."]
    assert items[:-1] == real[:-1]
    final, real_final = items[-1], real[-1]
    assert isinstance(final, CreateResult)
    assert isinstance(real_final, CreateResult)
    assert (final.content, final.thought, final.finish_reason) == (
        real_final.content,
        real_final.thought,
        real_final.finish_reason,
    )


async def test_an_error_after_chunks_ends_the_stream_as_a_mid_stream_provider_error_does() -> None:
    client = ScriptedChatCompletionClient([ScriptedReply.stream(["Hel", "lo"], raises=faults.stream_error())])
    seen: list[str | CreateResult] = []
    with pytest.raises(openai.APIError) as caught:
        await collect(client.create_stream(HI), seen)
    assert seen == ["Hel", "lo"]
    assert classify_error(caught.value) is ErrorKind.SERVER_ERROR


async def test_an_exception_item_fails_a_stream_before_any_chunk() -> None:
    client = ScriptedChatCompletionClient([faults.server_error()])
    stream = client.create_stream(HI)
    with pytest.raises(openai.InternalServerError):
        await anext(stream)


async def test_nothing_is_taken_before_the_stream_is_read() -> None:
    client = ScriptedChatCompletionClient(["a", "b"])
    stream = client.create_stream(HI)  # as AutoGen's clients: no request until the first item is asked for
    assert (client.requests, client.remaining) == ([], ["a", "b"])
    await stream.aclose()
    assert client.remaining == ["a", "b"]


# --------------------------------------------------------------------------- the script and the requests


async def test_a_request_after_the_script_ran_out_fails_showing_its_messages() -> None:
    client = ScriptedChatCompletionClient(["only answer"])
    await client.create(HI)
    messages: list[LLMMessage] = [
        SystemMessage(content="You are a helpful assistant."),
        UserMessage(content="What is 2 + 2?\nShow your work.", source="user"),
        AssistantMessage(content=[FunctionCall(id="c1", name="add", arguments='{"a": 2, "b": 2}')], source="calc"),
        FunctionExecutionResultMessage(content=[FunctionExecutionResult(content="4", name="add", call_id="c1")]),
        UserMessage(content="x" * 1000, source="user"),
    ]
    with pytest.raises(UnexpectedRequestError) as caught:
        await client.create(messages, tools=[ToolSchema(name="add")])
    error = caught.value
    assert isinstance(error, AssertionError)  # pytest shows it as a failed expectation
    text = str(error)
    assert "request #2 (create())" in text
    assert "1 item of the script was used" in text
    assert "1. SystemMessage: You are a helpful assistant." in text
    assert "2. UserMessage (user): What is 2 + 2? Show your work." in text
    assert '3. AssistantMessage (calc): calls add({"a": 2, "b": 2})' in text
    assert "4. FunctionExecutionResultMessage: add -> 4" in text
    assert "x" * 299 + "…" in text
    assert "x" * 300 not in text  # a long message is cut
    assert "tools offered: add" in text
    assert "client.enqueue(...)" in text
    assert "default=" in text
    assert error.request is client.requests[1]
    assert client.unexpected_requests == [client.requests[1]]


async def test_an_unexpected_stream_request_fails_at_its_first_item() -> None:
    client = ScriptedChatCompletionClient([])
    with pytest.raises(
        UnexpectedRequestError, match=r"request #1 \(create_stream\(\)\).*0 items of the script were used"
    ):
        await stream_items(client)


async def test_a_default_answers_every_request_after_the_script() -> None:
    client = ScriptedChatCompletionClient(["scripted"], default="fallback")
    assert [(await client.create(HI)).content for _ in range(3)] == ["scripted", "fallback", "fallback"]
    assert client.unexpected_requests == []


async def test_a_default_function_answers_from_the_request() -> None:
    def echo(request: ScriptedRequest) -> ScriptedReply:
        last = request.last_message
        assert isinstance(last, UserMessage)
        return ScriptedReply.text(f"you said: {last.content}")

    client = ScriptedChatCompletionClient(default=echo)
    assert (await client.create([UserMessage(content="ping", source="user")])).content == "you said: ping"


async def test_remaining_enqueue_and_consumed_follow_the_script() -> None:
    error = faults.rate_limit()
    client = ScriptedChatCompletionClient(["a", {"b": 1}])
    client.enqueue(error, "c")
    assert client.remaining == ["a", {"b": 1}, error, "c"]
    await client.create(HI)
    assert (client.remaining, client.consumed) == ([{"b": 1}, error, "c"], 1)
    await client.create(HI)
    with pytest.raises(openai.RateLimitError):
        await client.create(HI)
    assert (client.remaining, client.consumed) == (["c"], 3)
    assert repr(client) == "ScriptedChatCompletionClient(gpt-4o-mini, 1 of 4 items left)"


class Answer(BaseModel):
    value: int


async def test_requests_record_what_each_call_got() -> None:
    client = ScriptedChatCompletionClient(["one", "two"])
    token = CancellationToken()
    tool: ToolSchema = {"name": "add", "description": "Add"}
    await client.create(
        TERSE, tools=[tool], tool_choice="required", json_output=Answer, extra_create_args={"temperature": 0}
    )
    await stream_items(client, HI, cancellation_token=token, include_usage=True)
    first, second = client.requests
    assert (first.index, first.messages, first.tools, first.tool_names) == (0, TERSE, [tool], ["add"])
    assert (first.tool_choice, first.json_output, dict(first.extra_create_args)) == (
        "required",
        Answer,
        {"temperature": 0},
    )
    assert (first.stream, dict(first.stream_options), first.cancellation_token) == (False, {}, None)
    assert (second.index, second.messages, second.tools, second.json_output) == (1, HI, [], None)
    assert (second.stream, dict(second.stream_options), second.cancellation_token) == (
        True,
        {"include_usage": True},
        token,
    )
    assert second.last_message == HI[0]


async def test_the_rest_of_the_interface() -> None:
    client = ScriptedChatCompletionClient(["a b c"], context_window=20)
    assert client.count_tokens(TERSE) == 8
    assert client.count_tokens([]) == 1  # at least 1, as the server counts
    assert client.remaining_tokens(TERSE) == 12
    assert client.remaining_tokens([UserMessage(content="w " * 50, source="u")]) == 0
    info = client.model_info
    assert (info["function_calling"], info["json_output"], info["structured_output"], info["vision"]) == (True,) * 4
    assert info["family"] == ModelFamily.UNKNOWN
    with pytest.warns(DeprecationWarning, match="use model_info"):
        assert client.capabilities == info
    assert not client.closed
    await client.close()
    assert client.closed
    weak = ModelInfo(vision=False, function_calling=False, json_output=False, family="x", structured_output=False)
    assert ScriptedChatCompletionClient([], model_info=weak).model_info == weak


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ScriptedChatCompletionClient([TimeoutError]), "the exception class TimeoutError; script an instance"),  # type: ignore[list-item]
        (lambda: ScriptedChatCompletionClient([object()]), "item 0 is a object; a script holds text"),  # type: ignore[list-item]
        (lambda: ScriptedChatCompletionClient(["ok", {"when": object()}]), "item 1 cannot be serialised as JSON"),
        (lambda: ScriptedChatCompletionClient("Hello!"), "script must be a list of items"),
        (lambda: ScriptedChatCompletionClient(None), r"script must be a list of items, e.g. \['Hello!'\], got None"),  # type: ignore[arg-type]
        (lambda: ScriptedChatCompletionClient(42), r"script must be a list of items, e.g. \['Hello!'\], got 42"),  # type: ignore[arg-type]
        (lambda: ScriptedChatCompletionClient([], model=""), "model must be a non-empty string"),
        (lambda: ScriptedChatCompletionClient([], context_window=0), "context_window must be a positive int"),
        (lambda: ScriptedChatCompletionClient([], default=3.5), "default is a float"),  # type: ignore[arg-type]
        (lambda: ScriptedChatCompletionClient([], model_info={"vision": True}), "model_info: "),  # type: ignore[arg-type]
        (lambda: ScriptedReply.text("x", delay=-1), "delay must be seconds >= 0"),
        (lambda: ScriptedReply.text("x", delay=10**400), "delay must be seconds >= 0 .* got an int too large for a"),
        (lambda: ScriptedReply.text("x", usage=(1, 2)), "usage must be a FakeUsage or a RequestUsage"),  # type: ignore[arg-type]
        (lambda: ScriptedReply.tool_calls([]), "needs at least one call"),
        (lambda: ScriptedReply(content=(FunctionCall(id="", name="a", arguments="{}"),), chunks=("x",)), "chunks"),
        (lambda: ScriptedReply(content=42), "content must be text or tool calls, got int"),  # type: ignore[arg-type]
        (lambda: ScriptedReply(content="x", finish_reason="tool_calls"), "finish_reason must be one of AutoGen's"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_item_or_option_is_refused_at_construction(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ScriptedReply.tool_call(None), r"tool call 0: name must be a non-empty string, got None"),  # type: ignore[arg-type]
        (lambda: ScriptedReply.tool_call(""), r"tool call 0: name must be a non-empty string, got ''"),
        (lambda: ScriptedReply.tool_call("add", 5), r"arguments must be a mapping .* or a string .*, got int"),  # type: ignore[arg-type]
        (lambda: ScriptedReply.tool_call("add", [1, 2]), r"arguments must be a mapping .* or a string .*, got list"),  # type: ignore[arg-type]
        (lambda: ScriptedReply.tool_call("add", id=3), r"tool call 0: id must be a string, got 3"),  # type: ignore[arg-type]
        (lambda: ScriptedReply.tool_call("add", thought=3), r"thought must be a string or None, got int"),  # type: ignore[arg-type]
        (lambda: ScriptedReply.tool_calls("add"), r"calls must be a list of calls, not a str"),  # type: ignore[arg-type]
        (lambda: ScriptedReply.tool_calls(["ab"]), r"calls\[0\] must be a FunctionCall or a \(name, arg"),  # type: ignore[list-item]
        (lambda: ScriptedReply.tool_calls([("add",)]), r"calls\[0\] must be a FunctionCall or a \(name, arg"),  # type: ignore[list-item]
        (lambda: ScriptedReply.tool_calls([{"name": "add"}]), r"calls\[0\] must be a FunctionCall or a \(name, arg"),  # type: ignore[list-item]
        (lambda: ScriptedReply.tool_calls([(1, {})]), r"tool call 0: name must be a non-empty string, got 1"),  # type: ignore[list-item]
        (lambda: ScriptedReply.tool_calls([("add", 5)]), r"arguments must be a mapping .* or a string .*, got int"),  # type: ignore[list-item]
        (
            lambda: ScriptedReply.tool_calls([FunctionCall(id="", name="add", arguments={"a": 1})]),  # type: ignore[arg-type]
            r"tool call 0: arguments must be a string \(JSON\), got dict",
        ),
        (
            lambda: ScriptedChatCompletionClient([[FunctionCall(id="", name="", arguments="{}")]]),
            r"tool call 0: name must be a non-empty string",
        ),
        (lambda: ScriptedReply.stream("Hello world"), r"chunks must be a list of strings, not one str"),
        (lambda: ScriptedReply.stream(None), r"chunks must be a list of strings, got NoneType"),  # type: ignore[arg-type]
        (lambda: ScriptedReply.stream([1, 2]), r"chunks must be strings, got int"),  # type: ignore[list-item]
        (lambda: ScriptedReply.stream(["a"], model=3), r"model must be a string or None, got int"),  # type: ignore[arg-type]
        (lambda: ScriptedReply.text("ab", chunks="ab"), r"chunks must be a list of strings, not one str"),
        (lambda: ScriptedReply(content="ab", chunks="ab"), r"chunks must be a list of strings, not one str"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_tool_call_or_stream_is_refused_at_construction(make: Callable[[], object], message: str) -> None:
    # Each of these was taken, then failed inside a run (an agent's tool call without a name, a stream
    # of single characters, a TypeError from json.dumps or str.join); a script item is checked as a reply.
    with pytest.raises(ConfigurationError, match=message):
        make()


async def test_dump_and_load_component_round_trip_the_script() -> None:
    client = ScriptedChatCompletionClient(
        [
            "text",
            {"json": True},
            ScriptedReply.tool_call("add", {"a": 1}),
            ScriptedReply.text(
                "slow",
                delay=math.inf,
                usage=FakeUsage(
                    3, 4, cached_tokens=1, cache_write_tokens=1, input_audio_tokens=1, output_audio_tokens=2
                ),
                model="snap",
            ),
            ScriptedReply.stream(["a", "b"]),
        ],
        model="claude-3-5-haiku-latest",
        usage=RequestUsage(9, 9),
        default="again",
        context_window=1000,
    )
    dumped = client.dump_component()
    assert dumped.provider == "autogen_reliability.testing.ScriptedChatCompletionClient"
    loaded = ChatCompletionClient.load_component(json.loads(dumped.model_dump_json()))
    assert isinstance(loaded, ScriptedChatCompletionClient)
    assert loaded.model == "claude-3-5-haiku-latest"
    assert loaded.dump_component() == dumped
    assert (await loaded.create(HI)).content == "text"
    assert (await loaded.create(HI)).usage == RequestUsage(9, 9)
    assert (await loaded.create(HI)).content == [FunctionCall(id="call_1", name="add", arguments='{"a": 1}')]


@pytest.mark.parametrize(
    ("where", "misspelt"),
    [("script.0", {"contnet": "hi"}), ("usage", {"prompt_tokens": 1, "completion_tokens": 2, "cahced_tokens": 3})],
)
def test_a_misspelt_key_in_a_dumped_script_is_refused_when_loaded(where: str, misspelt: dict[str, object]) -> None:
    # A hand-edited config: "contnet" would load a reply of "" and "cahced_tokens" a usage without its cache.
    config = ScriptedChatCompletionClient(["hi"]).dump_component().model_dump()
    if where == "usage":
        config["config"]["usage"] = misspelt
    else:
        config["config"]["script"][0] = misspelt
    with pytest.raises(ConfigurationError, match=rf"{where}\.(contnet|cahced_tokens): unknown option"):
        ChatCompletionClient.load_component(config)


def test_a_script_of_exceptions_cannot_be_dumped() -> None:
    with pytest.raises(TypeError, match=r"item 1: RateLimitError\) cannot be dumped"):
        ScriptedChatCompletionClient(["ok", faults.rate_limit()]).dump_component()
    with pytest.raises(TypeError, match="default is a function"):
        ScriptedChatCompletionClient([], default=lambda request: "x").dump_component()


# --------------------------------------------------------------------------- faults are the real errors


async def _real_error(
    fake_openai_server: FakeOpenAIServer, make: OpenAIClientFactory, reply: FakeReply, mode: Mode
) -> Exception:
    """The exception AutoGen's OpenAI client raises when FakeOpenAIServer serves ``reply``."""
    fake_openai_server.enqueue(reply)
    # Only a held reply must time out, and it never answers before the release below: a short timeout cannot
    # lose that race. Every other reply must arrive first; a short timeout there raced the server's answer (on
    # a loaded machine, past 0.2 s the SDK raised APITimeoutError instead of the error compared), so it is ample.
    client = make(timeout=0.2 if reply.hold_after_chunks is not None else 30)
    try:
        await call(client, mode)
    except Exception as exc:  # whatever the SDK raises is what we compare with
        return exc
    finally:
        fake_openai_server.release()
    raise AssertionError("the client did not fail")


CONTEXT_MESSAGE = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in 128001 tokens. "
    "Please reduce the length of the messages."
)
STATUS_FAULTS: list[tuple[str, Callable[[], openai.APIStatusError], FakeReply]] = [
    ("rate_limit", lambda: faults.rate_limit(retry_after=1), FakeReply.error(429, headers={"Retry-After": "1"})),
    ("rate_limit_no_header", faults.rate_limit, FakeReply.error(429)),
    ("quota", lambda: faults.rate_limit(code="insufficient_quota"), FakeReply.error(429, code="insufficient_quota")),
    ("server_error", faults.server_error, FakeReply.error(500)),
    ("overloaded", lambda: faults.server_error(503, retry_after=2), FakeReply.error(503, headers={"retry-after": "2"})),
    ("bad_gateway", lambda: faults.server_error(502), FakeReply.error(502)),
    (
        "context_length",
        faults.context_length,
        FakeReply.error(400, CONTEXT_MESSAGE, code="context_length_exceeded", param="messages"),
    ),
    ("authentication", lambda: faults.status_error(401), FakeReply.error(401)),
    ("not_found", lambda: faults.status_error(404), FakeReply.error(404)),
    ("conflict", lambda: faults.status_error(409), FakeReply.error(409)),
    ("unprocessable", lambda: faults.status_error(422), FakeReply.error(422)),
    ("teapot", lambda: faults.status_error(418), FakeReply.error(418)),
]


@pytest.mark.parametrize(("name", "make_fault", "reply"), STATUS_FAULTS, ids=[row[0] for row in STATUS_FAULTS])
async def test_a_status_fault_is_the_error_the_sdk_raises_for_that_response(
    name: str,
    make_fault: Callable[[], openai.APIStatusError],
    reply: FakeReply,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    real = await _real_error(fake_openai_server, make_openai_client, reply, "create")
    fault = make_fault()
    assert isinstance(real, openai.APIStatusError)
    assert type(fault) is type(real)
    assert (fault.status_code, fault.body, str(fault)) == (real.status_code, real.body, str(real))
    assert (fault.code, fault.type, fault.param) == (real.code, real.type, real.param)
    assert fault.response.headers.get("retry-after") == real.response.headers.get("retry-after")
    assert classify_error(fault) is classify_error(real)
    assert retry_after(fault) == retry_after(real)


@pytest.mark.parametrize(
    ("make_fault", "reply", "mode"),
    [
        (faults.timeout, FakeReply.text("held", hold_after_chunks=0), "create"),
        (faults.connection_reset, FakeReply.reset(), "create"),
        (faults.stream_error, FakeReply.text("Hello big world", error_after_chunks=1), "stream"),
    ],
    ids=["timeout", "connection_reset", "stream_error"],
)
async def test_a_transport_fault_is_the_error_the_sdk_raises_for_that_failure(
    make_fault: Callable[[], openai.APIError],
    reply: FakeReply,
    mode: Mode,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    real = await _real_error(fake_openai_server, make_openai_client, reply, mode)
    fault = make_fault()
    assert type(fault) is type(real)
    assert getattr(fault, "status_code", None) is getattr(real, "status_code", None) is None
    assert fault.type == real.type
    if real.__cause__ is not None:
        # The SDK raises it from the transport's error; classification may read either.
        assert type(fault.__cause__) is type(real.__cause__)
    assert classify_error(fault) is classify_error(real)
    assert retry_after(fault) is retry_after(real) is None


@pytest.mark.parametrize(
    ("fault", "kind", "retried", "wait"),
    [
        (faults.rate_limit(retry_after=1), ErrorKind.RATE_LIMIT, True, 1.0),
        (faults.rate_limit(retry_after=timedelta(milliseconds=1500)), ErrorKind.RATE_LIMIT, True, 1.5),
        (faults.rate_limit(), ErrorKind.RATE_LIMIT, True, None),
        (faults.rate_limit(code="insufficient_quota"), ErrorKind.PERMISSION, False, None),
        (faults.server_error(), ErrorKind.SERVER_ERROR, True, None),
        (faults.server_error(503, retry_after=3), ErrorKind.OVERLOADED, True, 3.0),
        (faults.timeout(), ErrorKind.TIMEOUT, True, None),
        (faults.connection_reset(), ErrorKind.CONNECTION, True, None),
        (faults.context_length(), ErrorKind.CONTEXT_LENGTH, False, None),
        (faults.stream_error(), ErrorKind.SERVER_ERROR, True, None),
        (faults.status_error(401), ErrorKind.AUTHENTICATION, False, None),
    ],
)
def test_each_fault_is_classified_as_in_production(
    fault: BaseException, kind: ErrorKind, retried: bool, wait: float | None
) -> None:
    assert classify_error(fault) is kind
    assert (kind in RETRYABLE_BY_DEFAULT) is retried
    assert (kind in NEVER_RETRIED) is (not retried)
    assert retry_after(fault) == wait


def test_retry_after_is_written_as_servers_write_it() -> None:
    assert faults.rate_limit(retry_after=2).response.headers["retry-after"] == "2"
    assert faults.rate_limit(retry_after=0.25).response.headers["retry-after"] == "0.25"
    assert "retry-after" not in faults.rate_limit().response.headers
    assert faults.rate_limit(headers={"retry-after-ms": "250"}).response.headers["retry-after-ms"] == "250"
    assert retry_after(faults.rate_limit(headers={"retry-after-ms": "250"})) == 0.25


def test_faults_refuse_what_no_server_sends() -> None:
    with pytest.raises(ConfigurationError, match="4xx or 5xx"):
        faults.status_error(200)
    with pytest.raises(ConfigurationError, match="takes a 5xx status"):
        faults.server_error(429)
    with pytest.raises(ConfigurationError, match="retry_after must be seconds"):
        faults.rate_limit(retry_after=-1)
    with pytest.raises(ConfigurationError, match=r"retry_after must be seconds .* got an int too large for a float"):
        faults.rate_limit(retry_after=10**400)
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        faults.malformed_json('{"valid": true}')


def test_malformed_json_is_an_answer_that_is_not_json() -> None:
    reply = faults.malformed_json()
    assert isinstance(reply, ScriptedReply)
    assert isinstance(reply.content, str)
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.content)
    assert reply.raises is None


# --------------------------------------------------------------------------- under reliable(...)


@pytest.mark.parametrize("mode", MODES)
async def test_a_429_burst_then_success_is_retried_honouring_retry_after(mode: Mode, fake_time: FakeTime) -> None:
    client = ScriptedChatCompletionClient([faults.rate_limit(retry_after=1), faults.rate_limit(retry_after=2), "done"])
    events: list[RetryEvent] = []
    wrapped = reliable(client, retry=fake_time.policy(max_attempts=3), on_retry=events.append, track_usage=False)
    assert (await call(wrapped, mode)).content == "done"
    assert len(client.requests) == 3
    assert client.remaining == []
    assert [(event.attempt, event.error_kind, event.wait) for event in events] == [
        (1, ErrorKind.RATE_LIMIT, 1.0),
        (2, ErrorKind.RATE_LIMIT, 2.0),
    ]
    assert fake_time.slept == [1.0, 2.0]  # the server's seconds, not the 0.01-0.05 s backoff


@pytest.mark.parametrize("mode", MODES)
async def test_a_burst_longer_than_the_attempts_exhausts_them(mode: Mode, fake_time: FakeTime) -> None:
    client = ScriptedChatCompletionClient([faults.server_error(503)] * 3 + ["too late"])
    wrapped = reliable(client, retry=fake_time.policy(max_attempts=3), track_usage=False)
    with pytest.raises(RetriesExhaustedError) as caught:
        await call(wrapped, mode)
    assert caught.value.kinds == (ErrorKind.OVERLOADED,) * 3
    assert isinstance(caught.value.__cause__, openai.InternalServerError)
    assert client.remaining == ["too late"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_fault_that_is_never_retried_is_raised_at_once(mode: Mode, fake_time: FakeTime) -> None:
    client = ScriptedChatCompletionClient([faults.context_length(), "unused"])
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        await call(reliable(client, retry=fake_time.policy(), track_usage=False), mode)
    assert (len(client.requests), fake_time.slept) == (1, [])


async def test_testing_mode_retries_without_waiting() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = ScriptedChatCompletionClient([faults.rate_limit(retry_after=30), faults.timeout(), "ok"])
    set_testing(True)
    try:
        wrapped = reliable(client, retry=RetryPolicy(sleep=sleep), track_usage=False)
        assert (await wrapped.create(HI)).content == "ok"
    finally:
        set_testing(False)
    assert (len(client.requests), slept) == (3, [])


async def test_a_stream_that_failed_after_its_first_chunk_is_not_retried(fake_time: FakeTime) -> None:
    client = ScriptedChatCompletionClient([ScriptedReply.stream(["Hel", "lo"], raises=faults.stream_error()), "unused"])
    wrapped = reliable(client, retry=fake_time.policy(), track_usage=False, sanitize=None)
    seen: list[str | CreateResult] = []
    with pytest.raises(openai.APIError):
        await collect(wrapped.create_stream(HI), seen)
    assert seen == ["Hel", "lo"]
    assert client.remaining == ["unused"]


@pytest.mark.parametrize("mode", MODES)
async def test_validation_re_asks_and_the_next_item_answers(mode: Mode) -> None:
    client = ScriptedChatCompletionClient([faults.malformed_json(), {"value": 42}])
    wrapped = reliable(client, validation=ValidationPolicy(schema=Answer, reask=1), track_usage=False)
    result = await call(wrapped, mode)
    assert Answer.model_validate_json(result.content) == Answer(value=42)  # type: ignore[arg-type]
    assert client.remaining == []
    first, second = client.requests
    assert first.messages == HI
    reask = second.messages[-1]
    assert isinstance(reask, UserMessage)
    assert isinstance(reask.content, str)
    assert reask.content.startswith("Your previous answer could not be used:")
    assert second.messages[len(HI)] == AssistantMessage(content=faults.malformed_json().content, source="assistant")  # type: ignore[arg-type]


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_an_assistant_agent_runs_on_a_scripted_client() -> None:
    client = ScriptedChatCompletionClient(
        [ScriptedReply.tool_call("add", {"a": 19, "b": 23}), "19 + 23 = 42."], model="gpt-4o-mini"
    )
    agent = AssistantAgent("calculator", model_client=reliable(client), tools=[add], reflect_on_tool_use=True)
    result = await agent.run(task="What is 19 + 23?")
    assert result.messages[-1].to_text() == "19 + 23 = 42."
    first, second = client.requests
    assert first.tool_names == ["add"]
    assert second.tools == []  # the reflection pass offers no tools
    tool_result = second.messages[-1]
    assert isinstance(tool_result, FunctionExecutionResultMessage)
    assert tool_result.content[0].content == "42"


async def run_calculator(client: ChatCompletionClient, stream: bool) -> TaskResult:
    agent = AssistantAgent("calculator", model_client=client, tools=[add], model_client_stream=stream)
    return await agent.run(task="What is 19 + 23? Use the tool.")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_an_agent_sees_the_same_as_from_the_real_client_and_server(
    stream: bool, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The same script, once as FakeOpenAIServer replies to AutoGen's OpenAI client, once as items.
    fake_openai_server.enqueue(FakeReply.tool_calls([("add", {"a": 19, "b": 23})]))
    real = await run_calculator(make_openai_client(stream_options={"include_usage": True}), stream)
    scripted = await run_calculator(
        ScriptedChatCompletionClient([ScriptedReply.tool_call("add", {"a": 19, "b": 23})]), stream
    )

    def seen(result: TaskResult) -> list[tuple[str, str, Any]]:
        return [(type(m).__name__, m.to_text(), m.models_usage) for m in result.messages]

    assert seen(scripted) == seen(real)
    assert isinstance(scripted.messages[-1], ToolCallSummaryMessage)


async def test_the_text_sent_with_tool_calls_counts_in_the_next_prompt_as_the_server_counts_it(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # AutoGen sends an assistant turn's thought as the content of its tool-call message, and the server counts
    # its words; the scripted client counted that message as 1, so the reflection's prompt cost less there.
    fake_openai_server.enqueue(
        FakeReply.tool_calls([("add", {"a": 19, "b": 23})], content="Let me add these up."), FakeReply.text("42.")
    )
    scripted_client = ScriptedChatCompletionClient(
        [ScriptedReply.tool_call("add", {"a": 19, "b": 23}, thought="Let me add these up."), "42."]
    )
    runs = []
    for client in (make_openai_client(), scripted_client):
        agent = AssistantAgent("calculator", model_client=client, tools=[add], reflect_on_tool_use=True)
        runs.append(await agent.run(task="What is 19 + 23? Use the tool."))
    real, scripted = ([m.models_usage for m in run.messages if m.models_usage] for run in runs)

    assert fake_openai_server.requests[1].messages[2]["content"] == "Let me add these up."
    assert scripted == real
    # The reflection's prompt: the first one, then the tool-call turn (1 + 5 words) and the tool's result (1 + 1).
    assert real[1].prompt_tokens - real[0].prompt_tokens == 6 + 2


async def test_a_two_agent_team_runs_on_scripted_clients_through_a_429_burst(fake_time: FakeTime) -> None:
    writer_client = ScriptedChatCompletionClient([faults.rate_limit(retry_after=1), "Draft: hello.", "Final: Hello!"])
    critic_client = ScriptedChatCompletionClient(["Add an exclamation mark."])
    writer = AssistantAgent("writer", model_client=writer_client)
    critic = AssistantAgent("critic", model_client=critic_client)
    team = reliable(
        RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(4)),
        retry=fake_time.policy(),
        track_usage=False,
    )
    result = await team.run(task="Write a greeting.")
    assert [(m.source, m.to_text()) for m in result.messages] == [
        ("user", "Write a greeting."),
        ("writer", "Draft: hello."),
        ("critic", "Add an exclamation mark."),
        ("writer", "Final: Hello!"),
    ]
    assert (writer_client.remaining, critic_client.remaining, fake_time.slept) == ([], [], [1.0])
    # The critic was asked with the writer's draft in front of it.
    critic_request = critic_client.requests[0]
    sources = [m.source for m in critic_request.messages if isinstance(m, UserMessage | AssistantMessage)]
    assert sources == ["user", "writer"]


async def test_an_unexpected_request_inside_a_team_is_kept_for_the_test_to_see() -> None:
    writer_client = ScriptedChatCompletionClient(["Only one answer."])
    critic_client = ScriptedChatCompletionClient(["Fine."])
    team = RoundRobinGroupChat(
        [AssistantAgent("writer", model_client=writer_client), AssistantAgent("critic", model_client=critic_client)],
        termination_condition=MaxMessageTermination(4),
    )
    # A team turns the error into a RuntimeError carrying its text; the client keeps the request.
    with pytest.raises(RuntimeError, match=r"UnexpectedRequestError: .*got a request its script did not expect"):
        await team.run(task="Write a greeting.")
    assert [request.index for request in writer_client.unexpected_requests] == [1]


# --------------------------------------------------------------------------- the usage ledger


@pytest.mark.parametrize("mode", MODES)
async def test_usage_rows_carry_the_items_usage_and_model(mode: Mode, ledger: Ledger, fake_time: FakeTime) -> None:
    client = ScriptedChatCompletionClient(
        [
            faults.rate_limit(retry_after=1),
            ScriptedReply.text(
                "Hello!",
                usage=FakeUsage(prompt_tokens=1200, completion_tokens=80, cached_tokens=1000, reasoning_tokens=20),
                model="gpt-4o-mini-2024-07-18",
            ),
        ]
    )
    wrapped = reliable(client, recorder=ledger[1], retry=fake_time.policy(), project="acme", agent="writer")
    with usage_scope(session="scripted-1"):
        await call(wrapped, mode)
    failed, answered = sorted(ledger_rows(ledger), key=lambda row: row.attempt)
    assert failed.call_id == answered.call_id
    assert (failed.attempt, failed.outcome, failed.error_kind, failed.http_status) == (1, "error", "rate_limit", 429)
    assert (failed.prompt_tokens, failed.completion_tokens) == (0, 0)
    assert (answered.attempt, answered.outcome, answered.streamed) == (2, "ok", mode == "stream")
    assert (answered.project, answered.session, answered.agent) == ("acme", "scripted-1", "writer")
    assert (answered.provider, answered.model, answered.response_model) == (
        "openai",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
    )
    assert (answered.prompt_tokens, answered.completion_tokens) == (1200, 80)
    assert (answered.cached_tokens, answered.reasoning_tokens, answered.tokens_estimated) == (1000, 20, False)
    expected = calc_price(
        Usage(input_tokens=1200, output_tokens=80, cache_read_tokens=1000),
        model_ref="gpt-4o-mini",
        provider_id="openai",
    ).total_price
    assert answered.cost_nanousd == int((expected * Decimal(10**9)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


async def test_usage_rows_carry_the_items_cache_writes(ledger: Ledger) -> None:
    client = ScriptedChatCompletionClient(
        [
            ScriptedReply.text(
                "Hello!", usage=FakeUsage(prompt_tokens=1200, completion_tokens=80, cache_write_tokens=900)
            )
        ]
    )
    await reliable(client, recorder=ledger[1]).create(HI)
    (row,) = ledger_rows(ledger)
    assert (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens) == (1200, None, 900)


async def test_usage_rows_of_the_word_count_and_of_an_unpriced_model(ledger: Ledger) -> None:
    priced = ScriptedChatCompletionClient(["two words"])
    local = ScriptedChatCompletionClient(["three more words"], model="my-local-model")
    await reliable(priced, recorder=ledger[1]).create(TERSE)
    await reliable(local, recorder=ledger[1]).create(HI)
    by_model = {row.model: row for row in ledger_rows(ledger)}
    assert (by_model["gpt-4o-mini"].prompt_tokens, by_model["gpt-4o-mini"].completion_tokens) == (8, 2)
    assert by_model["gpt-4o-mini"].response_model == "gpt-4o-mini"
    assert by_model["gpt-4o-mini"].cost_nanousd is not None
    assert by_model["gpt-4o-mini"].tokens_estimated is False
    row = by_model["my-local-model"]
    assert (row.provider, row.cost_nanousd, row.prompt_tokens, row.completion_tokens) == (None, None, 2, 3)


def test_an_in_process_client_reports_its_usage_to_every_enclosing_capture() -> None:
    usage = ProviderUsage(12, 3, None, None, None, "gpt-4o-mini-2024-07-18", "scripted-1")
    assert report_provider_usage(usage) is False  # no capture: nobody listens, nothing breaks
    with capture_provider_usage() as outer, capture_provider_usage() as inner:
        assert report_provider_usage(usage) is True
    for slot in (inner, outer):
        assert (slot.usage, slot.usages, slot.model, slot.response_id) == (usage, [usage], usage.model, "scripted-1")
        assert (slot.responses, slot.status) == (1, 200)


async def test_a_cached_answer_is_recorded_as_a_cache_hit(ledger: Ledger) -> None:
    scripted = CreateResult(finish_reason="stop", content="from cache", usage=RequestUsage(40, 3), cached=True)
    await reliable(ScriptedChatCompletionClient([scripted]), recorder=ledger[1]).create(HI)
    (row,) = ledger_rows(ledger)
    assert (row.cache_hit, row.cost_nanousd, row.price_source, row.response_model) == (True, 0, "cache", None)
    # No request was sent: no cost, and the tokens of the answer replayed, as docs/accounting.md says.
    assert (row.prompt_tokens, row.completion_tokens, row.tokens_estimated) == (40, 3, False)


async def test_a_text_message_from_a_scripted_agent_carries_its_usage() -> None:
    client = ScriptedChatCompletionClient([ScriptedReply.text("Hi!", usage=RequestUsage(12, 2))])
    result = await AssistantAgent("solo", model_client=client).run(task="Greet me.")
    last = result.messages[-1]
    assert isinstance(last, TextMessage)
    assert last.models_usage == RequestUsage(12, 2)


async def test_waiting_for_requests_wakes_for_a_request_made_on_another_threads_event_loop() -> None:
    # The request comes from a thread running its own loop (asyncio.run in a worker thread): the waiter's loop,
    # blocked in its selector, was never woken. It returned at its timeout's timer, here 60 s, or never without one.
    client = ScriptedChatCompletionClient(["a"])
    seen = threading.Event()
    woke: list[bool] = []

    def other_loop() -> None:
        asyncio.run(client.create(HI))
        woke.append(seen.wait(30))  # 30 s only guards against hanging

    thread = threading.Thread(target=other_loop)
    thread.start()
    try:
        assert await client.wait_for_requests(1, timeout=60) == client.requests
    finally:
        seen.set()
    await asyncio.to_thread(thread.join, 60)
    assert woke == [True]  # before: [False]


def test_a_wait_left_on_a_closed_event_loop_does_not_fail_the_next_request() -> None:
    # A loop closed while a wait_for_requests of it was pending (loop.close() without cancelling it): the next
    # request, on another loop, set that loop's future and raised RuntimeError: Event loop is closed.
    client = ScriptedChatCompletionClient(["a"])
    loop = asyncio.new_event_loop()
    waiting = loop.create_task(client.wait_for_requests(1, timeout=None))
    loop.run_until_complete(asyncio.sleep(0))  # the wait is pending
    loop.close()
    assert asyncio.run(client.create(HI)).content == "a"
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.disabled = True  # "Task was destroyed but it is pending!": the wait, which its loop left so
    try:
        del waiting
        gc.collect()
    finally:
        asyncio_log.disabled = False
