"""`ScriptedChatCompletionClient`: an in-process model client that answers from a script.

No HTTP, no SDK: each ``create()`` / ``create_stream()`` takes the next item of
the script and answers with it (text, JSON, tool calls, a ``CreateResult``, a
stream of chunks) or raises it (an exception, typically one of ``faults``' real
provider errors, so that retry classification sees what it sees in
production). What each request carried is kept in `ScriptedChatCompletionClient.requests`;
a request the script did not expect raises `UnexpectedRequestError`, which
shows the request's messages.

It follows AutoGen's ``ReplayChatCompletionClient`` where the two overlap (a
list of answers consumed in order, a string streamed word by word then its
``CreateResult``, ``actual_usage()`` the last answer's usage, a component
config), and differs where a test of a reliability library needs it to look
like a real provider client:

* answers are not ``cached`` (Replay's are, and a cached answer is a cache hit:
  no cost, no usage row of its own);
* usage numbers follow `FakeOpenAIServer`'s deterministic word rule, or the
  item's own, and reach the usage ledger with the model that answered;
* every capability in ``model_info`` is on, since the script answers whatever
  it holds (pass ``model_info=`` to test how an agent treats a weaker model).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import warnings
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final, Literal, Self, TypeAlias, get_args

from autogen_core import CancellationToken, Component, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    ChatCompletionTokenLogprob,
    CreateResult,
    FinishReasons,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,  # deprecated by AutoGen, still abstract in the interface
    ModelFamily,
    ModelInfo,
    RequestUsage,
    validate_model_info,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, ConfigDict

from .._errors import ComponentConfig, ConfigurationError, shown_number
from ..providers import ProviderUsage, report_provider_usage
from ._replies import FakeUsage, is_wait

__all__ = [
    "ScriptItem",
    "ScriptedChatCompletionClient",
    "ScriptedChatCompletionClientConfig",
    "ScriptedReply",
    "ScriptedRequest",
    "UnexpectedRequestError",
]

logger = logging.getLogger("autogen_reliability")

DEFAULT_MODEL: Final = "gpt-4o-mini"
# Whitespace stays attached to the following word so that the pieces join back to the exact text
# (FakeOpenAIServer streams the same pieces).
_PIECE: Final = re.compile(r"\s*\S+|\s+")
_FINISH_REASONS: Final = frozenset(get_args(FinishReasons))
# How much of each message an UnexpectedRequestError shows: enough to recognise the turn.
_SHOWN_CHARS: Final = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptedReply:
    """One scripted answer (or failure) of a `ScriptedChatCompletionClient`.

    Build replies with the constructors (`text`, `json`, `tool_call`, `tool_calls`,
    `stream`, `error`, `result`); a script may also hold plain items, which
    become replies as `ScriptItem` describes. The fields mirror AutoGen's
    ``CreateResult``, plus what happens around the answer.

    Attributes:
        content: The answer: text, or tool calls (a call with an empty ``id`` gets
            ``call_1``, ``call_2``, ... in serving order, as `FakeOpenAIServer` numbers them).
        usage: The tokens to report (a ``FakeUsage``, kept so; a ``RequestUsage`` becomes one); None
            for the client's default (its ``usage=``, else the word rule of
            `ScriptedChatCompletionClient`). Its cached, cache-write, reasoning and audio
            tokens reach the usage ledger as a provider's would.
        finish_reason: As AutoGen reports it (``"stop"``, ``"length"``, ``"function_calls"``, ...).
        thought: Reasoning text, or the text a model sent alongside tool calls.
        model: The model that answered, as a provider reports it (e.g. a dated snapshot);
            None for the client's ``model``.
        cached: Whether the answer claims to come from a cache (no cost is recorded for it).
        logprobs: Returned as given.
        delay: Seconds to wait before answering (or raising); ``math.inf`` waits until the
            call is cancelled. The wait honours the call's ``cancellation_token``.
        chunks: What ``create_stream`` yields before the final ``CreateResult``; None splits
            text content into words, and for tool calls the ``thought`` sent with them (the calls
            themselves yield no chunk), as AutoGen's OpenAI client streams them.
        raises: Raised instead of answering: by ``create``, and by ``create_stream`` after
            ``chunks`` (before any chunk when ``chunks`` is None).
    """

    content: str | tuple[FunctionCall, ...] = ""
    usage: FakeUsage | RequestUsage | None = None
    finish_reason: FinishReasons = "stop"
    thought: str | None = None
    model: str | None = None
    cached: bool = False
    logprobs: tuple[ChatCompletionTokenLogprob, ...] | None = None
    delay: float = 0.0
    chunks: tuple[str, ...] | None = None
    raises: BaseException | None = None

    def __post_init__(self) -> None:
        if isinstance(self.content, list):
            object.__setattr__(self, "content", tuple(self.content))
        if self.chunks is not None:
            object.__setattr__(self, "chunks", _chunks(self.chunks))
        if not isinstance(self.content, str | tuple):
            raise ConfigurationError(f"content must be text or tool calls, got {type(self.content).__name__}")
        if not isinstance(self.content, str):
            for number, call in enumerate(self.content):
                _check_call(call, number)
        for name in ("thought", "model"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{name} must be a string or None, got {type(value).__name__}")
        if self.finish_reason not in _FINISH_REASONS:
            raise ConfigurationError(
                f"finish_reason must be one of AutoGen's {sorted(_FINISH_REASONS)}, got {self.finish_reason!r}"
            )
        # A RequestUsage given to the constructor directly, as the named constructors take it too.
        object.__setattr__(self, "usage", _usage(self.usage))
        object.__setattr__(self, "delay", _seconds("delay", self.delay))
        if self.chunks is not None:
            if not isinstance(self.content, str):
                raise ConfigurationError("chunks stream text; a reply with tool calls has none")
            if self.raises is None and "".join(self.chunks) != self.content:
                raise ConfigurationError(
                    f"the chunks {list(self.chunks)!r} do not join to the content {self.content!r}"
                )
        if self.raises is not None and not isinstance(self.raises, BaseException):
            raise ConfigurationError(f"raises must be an exception instance, got {type(self.raises).__name__}")

    # ---- constructors

    @classmethod
    def text(
        cls,
        content: str,
        *,
        usage: FakeUsage | RequestUsage | None = None,
        finish_reason: FinishReasons = "stop",
        thought: str | None = None,
        model: str | None = None,
        delay: float | timedelta = 0.0,
        chunks: Sequence[str] | None = None,
    ) -> ScriptedReply:
        """A text answer.

        Args:
            content: The answer's text.
            usage: The tokens to report (``FakeUsage`` for cached or reasoning tokens too);
                None for the client's default.
            finish_reason: The finish reason to report.
            thought: Reasoning text to report alongside.
            model: The model that answered; None for the client's.
            delay: Seconds (or a timedelta) to wait before answering; ``math.inf``: until cancelled.
            chunks: The pieces ``create_stream`` yields; they must join to ``content``.
                None: word by word.

        Returns:
            The reply.
        """
        return cls(
            content=content,
            usage=_usage(usage),
            finish_reason=finish_reason,
            thought=thought,
            model=model,
            delay=_seconds("delay", delay),
            chunks=_chunks(chunks) if chunks is not None else None,
        )

    @classmethod
    def json(
        cls,
        value: object,
        *,
        usage: FakeUsage | RequestUsage | None = None,
        model: str | None = None,
        delay: float | timedelta = 0.0,
    ) -> ScriptedReply:
        """An answer whose text is ``json.dumps(value)``.

        Args:
            value: Any JSON-serialisable value (a pydantic model: dump it first).
            usage: See `text`.
            model: See `text`.
            delay: See `text`.

        Returns:
            The reply.

        Raises:
            ConfigurationError: ``value`` cannot be serialised as JSON.
        """
        return cls.text(_dumps(value), usage=usage, model=model, delay=delay)

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        id: str = "",  # FunctionCall's own name for it
        thought: str | None = None,
        usage: FakeUsage | RequestUsage | None = None,
        model: str | None = None,
        delay: float | timedelta = 0.0,
    ) -> ScriptedReply:
        """An answer that calls one tool.

        Args:
            name: The tool's name.
            arguments: Its arguments: a mapping is sent as JSON, a string verbatim (so it may
                be invalid JSON on purpose); None for no arguments (``{}``).
            id: The call's id; empty for ``call_1``, ``call_2``, ... in serving order.
            thought: Text sent alongside the call; ``create_stream`` yields it word by word before the result.
            usage: See `text`.
            model: See `text`.
            delay: See `text`.

        Returns:
            The reply.
        """
        return cls.tool_calls([FunctionCall(id=id, name=name, arguments=_arguments(arguments))], thought=thought,
                              usage=usage, model=model, delay=delay)  # fmt: skip

    @classmethod
    def tool_calls(
        cls,
        calls: Sequence[FunctionCall | tuple[str, Mapping[str, Any] | str]],
        *,
        thought: str | None = None,
        usage: FakeUsage | RequestUsage | None = None,
        model: str | None = None,
        delay: float | timedelta = 0.0,
    ) -> ScriptedReply:
        """An answer that calls several tools at once.

        Args:
            calls: ``FunctionCall`` objects, or ``(name, arguments)`` pairs (arguments as in `tool_call`).
            thought: See `tool_call`.
            usage: See `text`.
            model: See `text`.
            delay: See `text`.

        Returns:
            The reply.

        Raises:
            ConfigurationError: ``calls`` is empty, or a call is not one of these (the reason is said).
        """
        if isinstance(calls, str | bytes | Mapping) or not isinstance(calls, Sequence):
            raise ConfigurationError(f"calls must be a list of calls, not a {type(calls).__name__}")
        if not calls:
            raise ConfigurationError("tool_calls() needs at least one call")
        made: list[FunctionCall] = []
        for number, call in enumerate(calls):
            if isinstance(call, FunctionCall):
                made.append(call)
            elif isinstance(call, tuple | list) and len(call) == 2:  # a (name, arguments) pair
                made.append(FunctionCall(id="", name=call[0], arguments=_arguments(call[1])))
            else:
                raise ConfigurationError(
                    f"calls[{number}] must be a FunctionCall or a (name, arguments) pair, got {call!r:.100}"
                )
        return cls(
            content=tuple(made),
            finish_reason="function_calls",
            thought=thought,
            usage=_usage(usage),
            model=model,
            delay=_seconds("delay", delay),
        )

    @classmethod
    def stream(
        cls,
        chunks: Sequence[str],
        *,
        raises: BaseException | None = None,
        usage: FakeUsage | RequestUsage | None = None,
        model: str | None = None,
        delay: float | timedelta = 0.0,
    ) -> ScriptedReply:
        """A text answer streamed in exactly these chunks (``create`` answers with their join).

        Args:
            chunks: The pieces ``create_stream`` yields before its ``CreateResult``.
            raises: Raised after the chunks instead of the final result, as a provider's error
                in the middle of a stream is (``faults.stream_error()``); ``create`` raises it too.
            usage: See `text`.
            model: See `text`.
            delay: See `text`.

        Returns:
            The reply.

        Raises:
            ConfigurationError: ``chunks`` is not a list of strings.
        """
        pieces = _chunks(chunks)
        return cls(
            content="".join(pieces),
            chunks=pieces,
            raises=raises,
            usage=_usage(usage),
            model=model,
            delay=_seconds("delay", delay),
        )

    @classmethod
    def error(cls, error: BaseException, *, delay: float | timedelta = 0.0) -> ScriptedReply:
        """Raise ``error`` instead of answering (a plain exception in the script does the same without a delay).

        Args:
            error: The exception, e.g. ``faults.rate_limit(retry_after=1)``.
            delay: Seconds (or a timedelta) to wait before raising.

        Returns:
            The reply.
        """
        return cls(raises=error, delay=_seconds("delay", delay))

    @classmethod
    def result(
        cls,
        result: CreateResult,
        *,
        model: str | None = None,
        delay: float | timedelta = 0.0,
    ) -> ScriptedReply:
        """Answer with a copy of ``result`` (its usage included): what a ``CreateResult`` in the script does.

        Args:
            result: The answer.
            model: See `text`.
            delay: See `text`.

        Returns:
            The reply.
        """
        content = result.content if isinstance(result.content, str) else tuple(result.content)
        return cls(
            content=content,
            usage=FakeUsage(result.usage.prompt_tokens, result.usage.completion_tokens),
            finish_reason=result.finish_reason,
            thought=result.thought,
            model=model,
            cached=result.cached,
            logprobs=tuple(result.logprobs) if result.logprobs is not None else None,
            delay=_seconds("delay", delay),
        )


ScriptItem: TypeAlias = (
    str | Mapping[str, Any] | Sequence[Any] | FunctionCall | CreateResult | ScriptedReply | BaseException
)
"""What a script may hold, and what each answers:

* ``str`` -- that text (streamed word by word);
* a ``dict`` or a ``list`` -- its JSON text (a list of ``FunctionCall`` objects: those tool calls);
* a ``FunctionCall`` -- that one tool call;
* a ``CreateResult`` -- a copy of it;
* a `ScriptedReply` -- as it says (usage, delay, chunks, model, ...);
* an exception instance -- raised, e.g. ``faults.rate_limit(retry_after=1)``.
"""


@dataclass(frozen=True, slots=True)
class ScriptedRequest:
    """What one ``create()`` or ``create_stream()`` call of a `ScriptedChatCompletionClient` got.

    Attributes:
        index: 0-based position among the client's requests.
        messages: The messages, as given.
        tools: The tools offered (``Tool`` objects or ``ToolSchema`` dicts).
        tool_choice: As given.
        json_output: As given (None, a bool, or a pydantic model class).
        extra_create_args: As given.
        cancellation_token: As given.
        stream: Whether it came through ``create_stream``.
        stream_options: ``create_stream``'s keyword arguments beyond the interface's
            (OpenAI's ``include_usage``).
    """

    index: int
    messages: list[LLMMessage]
    tools: list[Tool | ToolSchema]
    tool_choice: Tool | Literal["auto", "required", "none"]
    json_output: bool | type[BaseModel] | None
    extra_create_args: Mapping[str, Any]
    cancellation_token: CancellationToken | None = field(repr=False)
    stream: bool
    stream_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools offered, in order."""
        return [_tool_name(tool) for tool in self.tools]

    @property
    def last_message(self) -> LLMMessage | None:
        """The last message (the turn the model answers), or None for a request without messages."""
        return self.messages[-1] if self.messages else None

    def describe(self) -> str:
        """The request as a short multi-line text: one line per message (cut), then the tools."""
        lines = [f"  {number}. {_describe_message(message)}" for number, message in enumerate(self.messages, 1)]
        if not lines:
            lines = ["  (no messages)"]
        if self.tools:
            lines.append(f"  tools offered: {', '.join(self.tool_names)}")
        if self.json_output is not None:
            shown = self.json_output.__name__ if isinstance(self.json_output, type) else self.json_output
            lines.append(f"  json_output: {shown}")
        return "\n".join(lines)


class UnexpectedRequestError(AssertionError):
    """Raised when a `ScriptedChatCompletionClient` gets a request after its script ran out.

    An ``AssertionError``, so pytest shows it as a failed expectation. The
    message shows the request's messages; ``request`` is the `ScriptedRequest`.
    """

    def __init__(self, client: ScriptedChatCompletionClient, request: ScriptedRequest) -> None:
        self.request = request
        call = "create_stream()" if request.stream else "create()"
        used = client.consumed
        super().__init__(
            f"ScriptedChatCompletionClient({client.model}) got a request its script did not expect: "
            f"request #{request.index + 1} ({call}) came when no item was left "
            f"({_plural(used, 'item')} of the script {'was' if used == 1 else 'were'} used).\n"
            f"The request's messages:\n{request.describe()}\n"
            "Script an answer for it (add an item to the script, or client.enqueue(...)), "
            "or give the client a default= answer for any further request."
        )


class _UsageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # as the config around it: a misspelt key is refused, not dropped

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_tokens: int | None = None
    input_audio_tokens: int | None = None
    output_audio_tokens: int | None = None


class _ReplyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str | list[FunctionCall] = ""
    usage: _UsageConfig | None = None
    finish_reason: FinishReasons = "stop"
    thought: str | None = None
    model: str | None = None
    cached: bool = False
    logprobs: list[ChatCompletionTokenLogprob] | None = None
    delay: float = 0.0
    # A delay of math.inf: JSON has no infinity (the component's JSON would say null).
    until_cancelled: bool = False
    chunks: list[str] | None = None


class ScriptedChatCompletionClientConfig(ComponentConfig):
    """The component configuration of a `ScriptedChatCompletionClient` (``dump_component()``).

    The script as it was given (consumed items included, as AutoGen's Replay client
    dumps its list), every item as a reply; a script holding exceptions cannot be dumped.
    """

    script: list[_ReplyConfig]
    model: str = DEFAULT_MODEL
    model_info: ModelInfo | None = None
    usage: _UsageConfig | None = None
    default: _ReplyConfig | None = None
    context_window: int = 128_000


class ScriptedChatCompletionClient(ChatCompletionClient, Component[ScriptedChatCompletionClientConfig]):
    """An in-process ``ChatCompletionClient`` that answers from a script: no HTTP, no SDK, no cost.

    Each ``create()`` or ``create_stream()`` takes the next item of the script
    (see `ScriptItem`): text, JSON, tool calls, ``CreateResult`` objects and
    `ScriptedReply` objects answer; exceptions are raised, so a script of
    ``faults`` (real provider errors) drives a retry policy as production would.
    A request after the script ran out raises `UnexpectedRequestError` with the
    request's messages, unless a ``default`` answers it.

    Usage: an item's own usage; else the client's ``usage``; else a
    deterministic count, the one `FakeOpenAIServer` reports: ``prompt_tokens``
    is one per message (per tool result) plus the words of its text, at least 1;
    ``completion_tokens`` is the words of the answer (of each tool call's name and
    arguments), at least 1. Under ``reliable(...)`` the usage rows name this
    client's ``model`` (so it is priced as that model: ``gpt-4o-mini`` by default)
    and the item's ``model`` as the response model.

    Args:
        script: The items, answered in order. More can be added with `enqueue`.
        model: The model this client stands for: what usage rows are priced as.
        model_info: Its capabilities; default: everything on, family ``unknown``.
        usage: The usage of items that bring none, instead of the word count.
        default: What to answer once the script ran out: an item, or a function of the
            `ScriptedRequest` returning one. None: raise `UnexpectedRequestError`.
        context_window: The token limit ``remaining_tokens()`` counts down from.
        sleep: Waits out an item's ``delay`` (``await sleep(seconds)``); a test can
            inject one that records the delay instead of waiting.

    Raises:
        ConfigurationError: an item or an option is invalid (the reason is said).

    Attributes:
        requests: What each request got (`ScriptedRequest`), in order, unexpected ones included.
        unexpected_requests: The requests that found no scripted answer (each raised
            `UnexpectedRequestError`; a team or an ``except Exception`` may have swallowed it).
        closed: Whether ``close()`` was called.

    Example:
        >>> from autogen_reliability import reliable
        >>> from autogen_reliability.testing import faults
        >>> client = ScriptedChatCompletionClient([faults.rate_limit(retry_after=1), "Hello!"])
        >>> agent_client = reliable(client)  # retries the 429, then answers "Hello!"
        >>> client.remaining[1]
        'Hello!'
    """

    component_type = "model"
    component_config_schema = ScriptedChatCompletionClientConfig
    component_provider_override = "autogen_reliability.testing.ScriptedChatCompletionClient"

    def __init__(
        self,
        script: Iterable[ScriptItem] = (),
        *,
        model: str = DEFAULT_MODEL,
        model_info: ModelInfo | None = None,
        usage: FakeUsage | RequestUsage | None = None,
        default: ScriptItem | Callable[[ScriptedRequest], ScriptItem] | None = None,
        context_window: int = 128_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if isinstance(script, str | bytes | Mapping):
            raise ConfigurationError("script must be a list of items, e.g. ['Hello!'], not a single item")
        if not isinstance(script, Iterable):
            raise ConfigurationError(f"script must be a list of items, e.g. ['Hello!'], got {script!r:.100}")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
        if isinstance(context_window, bool) or not isinstance(context_window, int) or context_window < 1:
            raise ConfigurationError(f"context_window must be a positive int, got {context_window!r}")
        if not callable(sleep):
            raise ConfigurationError(f"sleep must be callable, got {type(sleep).__name__}")
        if model_info is None:
            model_info = every_capability()
        else:
            try:
                validate_model_info(model_info)
            except ValueError as exc:
                raise ConfigurationError(f"model_info: {exc}") from exc
        self._model_info = model_info
        self._usage = _usage(usage)
        self._script: deque[tuple[ScriptItem, ScriptedReply]] = deque()
        self._given: list[ScriptItem] = []
        self._default: ScriptItem | Callable[[ScriptedRequest], ScriptItem] | None = default
        if default is not None and not callable(default):
            _reply(default, "default")  # refuse a bad default now, not at the first surplus request
        self._context_window = context_window
        self._sleep = sleep
        # Kept where AutoGen's provider clients keep the arguments they were built with: the library
        # reads a client's model there (providers.model_of), so usage rows name this client's model
        # and price it as they would a real client's.
        self._raw_config: dict[str, Any] = {"model": model}
        self._calls_served = 0
        self._actual_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self.requests: list[ScriptedRequest] = []
        self._request_waiters: list[asyncio.Future[None]] = []
        self.unexpected_requests: list[ScriptedRequest] = []
        self.closed = False
        self.enqueue(*script)

    def __repr__(self) -> str:
        return f"ScriptedChatCompletionClient({self.model}, {len(self._script)} of {len(self._given)} items left)"

    # ---- the script

    @property
    def model(self) -> str:
        """The model this client stands for (what usage rows are priced as)."""
        model: str = self._raw_config["model"]
        return model

    @property
    def consumed(self) -> int:
        """How many script items were used so far (answered or raised)."""
        return len(self._given) - len(self._script)

    @property
    def remaining(self) -> list[ScriptItem]:
        """The script items not consumed yet, as they were given, in order."""
        return [item for item, _ in self._script]

    async def wait_for_requests(
        self,
        n: int = 1,
        # A parameter, as in FakeOpenAIServer's, so that on expiry the error can say how many requests arrived.
        timeout: float | None = 5.0,  # noqa: ASYNC109
    ) -> list[ScriptedRequest]:
        """Wait until at least ``n`` requests have arrived, as ``FakeOpenAIServer.wait_for_requests_async`` does.

        A request is recorded when it arrives, before its item's delay: the moment to
        cancel a call that hangs, or to look at what it was sent. Nothing polls.

        Args:
            n: How many requests to wait for.
            timeout: Seconds to wait at most; None (or ``math.inf``) waits as long as it takes.

        Returns:
            `requests` (all of them: at least ``n``).

        Raises:
            TimeoutError: fewer requests arrived in time (the message says how many).
            ConfigurationError: ``n`` is not an int >= 0, or ``timeout`` not seconds >= 0.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"n must be an int >= 0, got {n!r:.100}")
        seconds = None if timeout is None else _seconds("timeout", timeout)
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None or math.isinf(seconds) else loop.time() + seconds
        while len(self.requests) < n:
            waiter: asyncio.Future[None] = loop.create_future()
            self._request_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, None if deadline is None else max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise TimeoutError(
                    f"{len(self.requests)} of {n} requests arrived at {self!r} within {timeout} s"
                ) from None
        return self.requests

    def enqueue(self, *items: ScriptItem) -> None:
        """Add items at the end of the script.

        Raises:
            ConfigurationError: an item is not a `ScriptItem` (nothing is added then).
        """
        offset = len(self._given)
        replies = [_reply(item, f"item {offset + number}") for number, item in enumerate(items)]
        self._given.extend(items)
        self._script.extend(zip(items, replies, strict=True))

    # ---- the interface

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],  # the interface's exact signature
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Answer with the next script item, or raise it; see ``ChatCompletionClient.create``.

        Raises:
            UnexpectedRequestError: the script ran out and there is no ``default``.
            asyncio.CancelledError: the call was cancelled during the item's delay.
        """
        request = self._record(
            messages=messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
            stream_options=None,
        )
        reply = self._take(request)
        await self._wait(reply.delay, cancellation_token)
        if reply.raises is not None:
            raise reply.raises.with_traceback(None)
        return self._answer(reply, request)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Yield the next script item chunk by chunk, then its ``CreateResult``; see the interface's ``create_stream``.

        As with AutoGen's clients, nothing happens before the first item is asked
        for. Keyword arguments beyond the interface's (OpenAI's ``include_usage``)
        are accepted and recorded in `ScriptedRequest.stream_options`.

        Raises:
            UnexpectedRequestError: the script ran out and there is no ``default``.
            asyncio.CancelledError: the call was cancelled during the item's delay or between chunks.
        """
        request = self._record(
            messages=messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
            stream_options=kwargs,
        )
        reply = self._take(request)
        await self._wait(reply.delay, cancellation_token)
        if reply.raises is not None and reply.chunks is None:
            raise reply.raises.with_traceback(None)
        if reply.chunks is not None:
            chunks: Sequence[str] = reply.chunks
        elif isinstance(reply.content, str):
            chunks = _PIECE.findall(reply.content)
        else:
            # The text a model sends before its tool calls streams as AutoGen's OpenAI client yields it.
            chunks = _PIECE.findall(reply.thought or "")
        for chunk in chunks:
            _check_cancelled(cancellation_token)
            yield chunk
        if reply.raises is not None:
            raise reply.raises.with_traceback(None)
        _check_cancelled(cancellation_token)
        yield self._answer(reply, request)

    async def close(self) -> None:
        """Mark the client closed (it keeps answering: there is nothing to release)."""
        self.closed = True

    def actual_usage(self) -> RequestUsage:
        """The usage of the last answer, as AutoGen's Replay client reports it."""
        return RequestUsage(self._actual_usage.prompt_tokens, self._actual_usage.completion_tokens)

    def total_usage(self) -> RequestUsage:
        """The usage of every answer so far, added up."""
        return RequestUsage(self._total_usage.prompt_tokens, self._total_usage.completion_tokens)

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The ``prompt_tokens`` an answer to ``messages`` reports by default (the word rule; tools not counted)."""
        return _prompt_tokens(messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """``context_window`` minus `count_tokens`, at least 0."""
        return max(0, self._context_window - self.count_tokens(messages, tools=tools))

    @property
    def capabilities(self) -> ModelCapabilities:
        """Deprecated by AutoGen; use :attr:`model_info`."""
        warnings.warn("capabilities is deprecated, use model_info instead", DeprecationWarning, stacklevel=2)
        return self._model_info

    @property
    def model_info(self) -> ModelInfo:
        """The capabilities given, or everything on (family ``unknown``)."""
        return self._model_info

    # ---- component configuration

    def _to_config(self) -> ScriptedChatCompletionClientConfig:
        default = self._default
        if callable(default):
            raise TypeError("a ScriptedChatCompletionClient whose default is a function cannot be dumped")
        return ScriptedChatCompletionClientConfig(
            script=[_reply_config(_reply(item, f"item {number}"), number) for number, item in enumerate(self._given)],
            model=self.model,
            model_info=self._model_info,
            usage=_usage_config(self._usage),
            default=_reply_config(_reply(default, "default"), "default") if default is not None else None,
            context_window=self._context_window,
        )

    @classmethod
    def _from_config(cls, config: ScriptedChatCompletionClientConfig) -> Self:
        return cls(
            [_reply_from_config(item) for item in config.script],
            model=config.model,
            model_info=config.model_info,
            usage=_usage_from_config(config.usage),
            default=_reply_from_config(config.default) if config.default is not None else None,
            context_window=config.context_window,
        )

    # ---- internals

    def _record(
        self,
        *,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
        cancellation_token: CancellationToken | None,
        stream_options: Mapping[str, Any] | None,
    ) -> ScriptedRequest:
        """Keep what the call got; ``stream_options`` is None for ``create()``."""
        request = ScriptedRequest(
            index=len(self.requests),
            messages=list(messages),
            tools=list(tools),
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=MappingProxyType(dict(extra_create_args)),
            cancellation_token=cancellation_token,
            stream=stream_options is not None,
            stream_options=MappingProxyType(dict(stream_options or {})),
        )
        self.requests.append(request)
        waiters, self._request_waiters = self._request_waiters, []
        for waiter in waiters:
            # Through the waiter's own loop, which may be another thread's (woken so) or closed (nobody waits).
            with contextlib.suppress(RuntimeError):
                waiter.get_loop().call_soon_threadsafe(_settle, waiter)
        return request

    def _take(self, request: ScriptedRequest) -> ScriptedReply:
        if self._script:
            _, reply = self._script.popleft()
            return reply
        if self._default is not None:
            item = self._default(request) if callable(self._default) else self._default
            return _reply(item, "the default's answer")
        self.unexpected_requests.append(request)
        raise UnexpectedRequestError(self, request)

    async def _wait(self, seconds: float, token: CancellationToken | None) -> None:
        if seconds <= 0:
            _check_cancelled(token)
            return
        # As AutoGen's clients do with the SDK call: a future the cancellation token can cancel.
        waiter: asyncio.Future[Any] = (
            asyncio.get_running_loop().create_future()
            if math.isinf(seconds)
            else asyncio.ensure_future(self._sleep(seconds))
        )
        if token is not None:
            token.link_future(waiter)
        try:
            await waiter
        finally:
            waiter.cancel()

    def _answer(self, reply: ScriptedReply, request: ScriptedRequest) -> CreateResult:
        content: str | list[FunctionCall]
        if isinstance(reply.content, str):
            content = reply.content
        else:
            content = [
                FunctionCall(id=call.id or self._next_call_id(), name=call.name, arguments=call.arguments)
                for call in reply.content
            ]
        usage = _usage(reply.usage) or self._usage or _word_usage(request.messages, content, reply.thought)
        result = CreateResult(
            finish_reason=reply.finish_reason,
            content=content,
            usage=RequestUsage(usage.prompt_tokens, usage.completion_tokens),
            cached=reply.cached,
            logprobs=[logprob.model_copy(deep=True) for logprob in reply.logprobs] if reply.logprobs else None,
            thought=reply.thought,
        )
        self._actual_usage = RequestUsage(usage.prompt_tokens, usage.completion_tokens)
        self._total_usage = RequestUsage(
            self._total_usage.prompt_tokens + usage.prompt_tokens,
            self._total_usage.completion_tokens + usage.completion_tokens,
        )
        if not reply.cached:  # a cache hit sends nothing to a provider, so there is no response to report
            report_provider_usage(
                ProviderUsage(
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cached_tokens=usage.cached_tokens,
                    reasoning_tokens=usage.reasoning_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                    cache_write_1h_tokens=None,
                    model=reply.model or self.model,
                    input_audio_tokens=usage.input_audio_tokens,
                    output_audio_tokens=usage.output_audio_tokens,
                    response_id=f"scripted-{request.index + 1}",
                )
            )
        return result

    def _next_call_id(self) -> str:
        self._calls_served += 1
        return f"call_{self._calls_served}"


# --------------------------------------------------------------------------- helpers


def every_capability() -> ModelInfo:
    """A model's capabilities with everything on, family ``unknown``: a client whose answers a test scripts."""
    return ModelInfo(
        vision=True,
        function_calling=True,
        json_output=True,
        family=ModelFamily.UNKNOWN,
        structured_output=True,
        multiple_system_messages=True,
    )


def _seconds(name: str, value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if not is_wait(seconds):
        raise ConfigurationError(f"{name} must be seconds >= 0 (a number or a timedelta; math.inf: until cancelled), "
                                 f"got {shown_number(value)}")  # fmt: skip
    return float(seconds)


def _usage(usage: FakeUsage | RequestUsage | None) -> FakeUsage | None:
    if usage is None or isinstance(usage, FakeUsage):
        return usage
    if isinstance(usage, RequestUsage):
        return FakeUsage(usage.prompt_tokens, usage.completion_tokens)
    raise ConfigurationError(f"usage must be a FakeUsage or a RequestUsage, got {type(usage).__name__}")


def _dumps(value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"a JSON item must be JSON-serialisable: {exc}") from exc


def _arguments(arguments: Mapping[str, Any] | str | None) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    if not isinstance(arguments, Mapping):
        raise ConfigurationError(
            f"arguments must be a mapping (sent as JSON) or a string (sent verbatim), got {type(arguments).__name__}"
        )
    return _dumps(dict(arguments))


def _check_call(call: object, number: int) -> None:
    """A tool call as AutoGen's agents take it: an id (empty: numbered when served), a name, arguments as text."""
    if not isinstance(call, FunctionCall):
        raise ConfigurationError(f"tool calls must be FunctionCall objects, got {type(call).__name__}")
    if not isinstance(call.name, str) or not call.name:
        raise ConfigurationError(f"tool call {number}: name must be a non-empty string, got {call.name!r:.100}")
    if not isinstance(call.id, str):
        raise ConfigurationError(f"tool call {number}: id must be a string, got {call.id!r:.100}")
    if not isinstance(call.arguments, str):
        raise ConfigurationError(
            f"tool call {number}: arguments must be a string (JSON), got {type(call.arguments).__name__}"
        )


def _chunks(chunks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(chunks, str):
        raise ConfigurationError("chunks must be a list of strings, not one str (it would stream letter by letter)")
    if isinstance(chunks, bytes | Mapping) or not isinstance(chunks, Sequence):
        raise ConfigurationError(f"chunks must be a list of strings, got {type(chunks).__name__}")
    for chunk in chunks:
        if not isinstance(chunk, str):
            raise ConfigurationError(f"chunks must be strings, got {type(chunk).__name__}")
    return tuple(chunks)


def _reply(item: object, where: str) -> ScriptedReply:  # noqa: PLR0911  # one return per kind of item
    """The reply an item stands for (see `ScriptItem`); a clear error for anything else."""
    if isinstance(item, ScriptedReply):
        return item
    if isinstance(item, str):
        return ScriptedReply(content=item)
    if isinstance(item, BaseException):
        return ScriptedReply(raises=item)
    if isinstance(item, CreateResult):
        return ScriptedReply.result(item)
    if isinstance(item, FunctionCall):
        return ScriptedReply.tool_calls([item])
    if isinstance(item, type) and issubclass(item, BaseException):
        raise ConfigurationError(f"{where} is the exception class {item.__name__}; script an instance of it")
    if (
        isinstance(item, Sequence)
        and not isinstance(item, bytes)
        and item
        and all(isinstance(call, FunctionCall) for call in item)
    ):
        return ScriptedReply.tool_calls(list(item))
    if isinstance(item, Mapping | Sequence) and not isinstance(item, bytes):
        try:
            return ScriptedReply(content=json.dumps(item))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{where} cannot be serialised as JSON: {exc}") from exc
    raise ConfigurationError(
        f"{where} is a {type(item).__name__}; a script holds text, a dict or list (JSON), FunctionCall objects, "
        "a CreateResult, a ScriptedReply, or an exception to raise"
    )


def _check_cancelled(token: CancellationToken | None) -> None:
    if token is not None and token.is_cancelled():
        raise asyncio.CancelledError


def _words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _prompt_tokens(messages: Sequence[LLMMessage]) -> int:
    """One per message as it goes on the wire (one per tool result) plus the words of its text, at least 1.

    The text of an assistant's tool-call turn is its ``thought``: AutoGen's OpenAI client sends it as that
    message's content.
    """
    count = 0
    for message in messages:
        if isinstance(message, FunctionExecutionResultMessage):
            count += sum(1 + _words(result.content) for result in message.content)
            continue
        count += 1
        content = message.content
        if isinstance(content, str):
            count += _words(content)
        elif isinstance(message, AssistantMessage):  # tool calls go as calls; the text sent with them as content
            count += _words(message.thought)
        else:
            count += sum(_words(part) for part in content)
    return max(count, 1)


def _word_usage(messages: Sequence[LLMMessage], content: str | list[FunctionCall], thought: str | None) -> FakeUsage:
    if isinstance(content, str):
        completion = _words(content)
    else:
        completion = _words(thought) + sum(_words(call.name) + _words(call.arguments) for call in content)
    return FakeUsage(prompt_tokens=_prompt_tokens(messages), completion_tokens=max(completion, 1))


def _tool_name(tool: Tool | ToolSchema) -> str:
    if isinstance(tool, Mapping):
        return str(tool.get("name", "?"))
    return str(getattr(tool, "name", "?"))


def _describe_message(message: LLMMessage) -> str:
    kind = type(message).__name__
    source = getattr(message, "source", None)
    head = f"{kind} ({source})" if source else kind
    content = message.content
    if isinstance(content, str):
        text = content
    else:
        parts: list[str] = []
        for part in content:
            if isinstance(part, FunctionCall):  # an assistant's tool calls
                parts.append(f"calls {part.name}({part.arguments})")
            elif isinstance(part, FunctionExecutionResult):
                parts.append(f"{part.name} -> {part.content}")
            else:
                parts.append(part if isinstance(part, str) else f"<{type(part).__name__}>")
        text = "; ".join(parts)
    text = " ".join(text.split())
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 1] + "…"
    return f"{head}: {text}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _usage_config(usage: FakeUsage | None) -> _UsageConfig | None:
    if usage is None:
        return None
    return _UsageConfig(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        input_audio_tokens=usage.input_audio_tokens,
        output_audio_tokens=usage.output_audio_tokens,
    )


def _usage_from_config(config: _UsageConfig | None) -> FakeUsage | None:
    if config is None:
        return None
    return FakeUsage(**config.model_dump())


def _reply_config(reply: ScriptedReply, where: int | str) -> _ReplyConfig:
    if reply.raises is not None:
        name = f"item {where}" if isinstance(where, int) else where
        raise TypeError(
            f"a ScriptedChatCompletionClient whose script raises an exception ({name}: "
            f"{type(reply.raises).__name__}) cannot be dumped: an exception is code, not configuration"
        )
    return _ReplyConfig(
        content=reply.content if isinstance(reply.content, str) else list(reply.content),
        usage=_usage_config(_usage(reply.usage)),
        finish_reason=reply.finish_reason,
        thought=reply.thought,
        model=reply.model,
        cached=reply.cached,
        logprobs=list(reply.logprobs) if reply.logprobs is not None else None,
        delay=0.0 if math.isinf(reply.delay) else reply.delay,
        until_cancelled=math.isinf(reply.delay),
        chunks=list(reply.chunks) if reply.chunks is not None else None,
    )


def _reply_from_config(config: _ReplyConfig) -> ScriptedReply:
    return ScriptedReply(
        content=config.content if isinstance(config.content, str) else tuple(config.content),
        usage=_usage_from_config(config.usage),
        finish_reason=config.finish_reason,
        thought=config.thought,
        model=config.model,
        cached=config.cached,
        logprobs=tuple(config.logprobs) if config.logprobs is not None else None,
        delay=math.inf if config.until_cancelled else config.delay,
        chunks=tuple(config.chunks) if config.chunks is not None else None,
    )


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # not cancelled or timed out meanwhile
        waiter.set_result(None)
