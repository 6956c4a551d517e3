"""``ReliableChatCompletionClient``: the wrapped model client at the centre of the library.

It is a drop-in AutoGen ``ChatCompletionClient``: every member behaves as the
inner client's does unless a policy says otherwise. Each call becomes a
:class:`~autogen_reliability.pipeline.Request` that runs through the
:class:`~autogen_reliability.pipeline.Pipeline`; this module only assembles the
pipeline from the options and keeps the wrapper's own usage counters. It holds
no policy logic.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal, Self, TypedDict

from autogen_core import CancellationToken, Component, ComponentModel
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,  # deprecated by AutoGen, still part of the interface
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
from pydantic import BaseModel
from typing_extensions import Unpack

from .context import Attribution, resolve_attribution
from .errors import ConfigurationError
from .pipeline import AttemptEvent, AttemptObserver, Call, Pipeline, Request, StreamItem

__all__ = ["ReliableChatCompletionClient", "ReliableChatCompletionClientConfig", "ReliableOptions", "check_options"]


class ReliableOptions(TypedDict, total=False):
    """The options of :class:`ReliableChatCompletionClient`, also taken by :func:`~autogen_reliability.reliable`."""

    project: str | None
    agent: str | None
    tags: Mapping[str, str] | None
    on_attempt: AttemptObserver | Sequence[AttemptObserver] | None


def check_options(options: Mapping[str, Any]) -> Attribution:
    """Validates wrapper options as the constructor does; returns the attribution defaults they bind.

    Raises:
        ConfigurationError: an unknown option, or an invalid value.
    """
    unknown = options.keys() - _OPTION_NAMES
    if unknown:
        raise ConfigurationError(f"unknown option(s) {sorted(unknown)}; valid options: {sorted(_OPTION_NAMES)}")
    _observers(options)
    return Attribution(project=options.get("project"), agent=options.get("agent"), tags=options.get("tags") or {})


def _observers(options: Mapping[str, Any]) -> tuple[AttemptObserver, ...]:
    hooks = options.get("on_attempt")
    if hooks is None:
        return ()
    observers = (hooks,) if callable(hooks) else tuple(hooks)
    for hook in observers:
        if not callable(hook):
            raise ConfigurationError(f"on_attempt takes callables taking an AttemptEvent, got {type(hook).__name__}")
    return observers


_OPTION_NAMES = frozenset(ReliableOptions.__annotations__)


class ReliableChatCompletionClientConfig(BaseModel):
    """Declarative configuration of :class:`ReliableChatCompletionClient`."""

    client: ComponentModel
    project: str | None = None
    agent: str | None = None
    tags: dict[str, str] | None = None


class ReliableChatCompletionClient(ChatCompletionClient, Component[ReliableChatCompletionClientConfig]):
    """Wraps an AutoGen model client and makes each call observable and attributable.

    A drop-in for the client it wraps: agents, teams and ``dump_component()`` see
    the same interface, the same ``model_info`` and the same results.

    Args:
        client: The model client to wrap (OpenAI, Azure, Anthropic, Ollama, ...).
        project: Default project for the usage of this client.
        agent: Default agent name (``reliable(agent)`` binds the agent's name).
        tags: Default tags, merged under the tags of any active ``usage_scope``.
        on_attempt: Called with an :class:`~autogen_reliability.AttemptEvent` at the
            end of every provider attempt (one callable or several). Hooks are code,
            not configuration: ``dump_component()`` leaves them out.

    Raises:
        ConfigurationError: an option is invalid.

    Example:
        >>> from autogen_ext.models.openai import OpenAIChatCompletionClient
        >>> inner = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-...")
        >>> client = ReliableChatCompletionClient(inner, project="acme-support")
    """

    component_type = "model"
    component_config_schema = ReliableChatCompletionClientConfig
    component_provider_override = "autogen_reliability.ReliableChatCompletionClient"

    def __init__(self, client: ChatCompletionClient, **options: Unpack[ReliableOptions]) -> None:
        if not isinstance(client, ChatCompletionClient):
            raise ConfigurationError(
                f"client must be an autogen_core.models.ChatCompletionClient, got {type(client).__name__}"
            )
        self._inner = client
        self._options: ReliableOptions = options
        self._attribution = check_options(options)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._actual_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._pipeline = Pipeline(client, layers=(), observers=(self._count_usage, *_observers(options)))

    @property
    def inner(self) -> ChatCompletionClient:
        """The wrapped client."""
        return self._inner

    @property
    def attribution(self) -> Attribution:
        """The attribution defaults bound on this wrapper."""
        return self._attribution

    @property
    def options(self) -> ReliableOptions:
        """The options this wrapper was built with (a copy)."""
        return ReliableOptions(**self._options)

    def with_options(self, **changes: Unpack[ReliableOptions]) -> ReliableChatCompletionClient:
        """A new wrapper around the same inner client, with ``changes`` laid over these options."""
        merged: ReliableOptions = {**self._options, **changes}
        return type(self)(self._inner, **merged)

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in self._options.items())
        return f"{type(self).__name__}({type(self._inner).__name__}(...){', ' if options else ''}{options})"

    # -- the interface ---------------------------------------------------------------

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
        """Create one response through the pipeline; see ``ChatCompletionClient.create``."""
        request = Request(
            Call(resolve_attribution(self._attribution), streamed=False),
            messages,
            tools,
            tool_choice,
            json_output,
            extra_create_args,
            cancellation_token,
        )
        return await self._pipeline.create(request)

    def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[StreamItem, None]:
        """Stream one response through the pipeline; see ``ChatCompletionClient.create_stream``.

        Extra keyword arguments (e.g. the OpenAI client's ``include_usage``) are
        passed to the inner client. When the inner client is an OpenAI client and
        the caller did not say otherwise, usage is requested for this stream, so
        streamed calls are counted like plain ones.
        """
        if (
            isinstance(self._inner, BaseOpenAIChatCompletionClient)
            and "include_usage" not in kwargs
            and "stream_options" not in extra_create_args
        ):
            extra_create_args = {**extra_create_args, "stream_options": {"include_usage": True}}
        request = Request(
            Call(resolve_attribution(self._attribution), streamed=True),
            messages,
            tools,
            tool_choice,
            json_output,
            extra_create_args,
            cancellation_token,
            kwargs,
        )
        return self._pipeline.create_stream(request)

    async def close(self) -> None:
        """Close the inner client."""
        await self._inner.close()

    def actual_usage(self) -> RequestUsage:
        """Tokens of the provider attempts made through this wrapper, excluding results served from a cache."""
        return RequestUsage(self._actual_usage.prompt_tokens, self._actual_usage.completion_tokens)

    def total_usage(self) -> RequestUsage:
        """Tokens of every result that passed through this wrapper, cached ones included."""
        return RequestUsage(self._total_usage.prompt_tokens, self._total_usage.completion_tokens)

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The inner client's token count."""
        return self._inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The inner client's remaining-token count."""
        return self._inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        """Deprecated by AutoGen; use :attr:`model_info`."""
        warnings.warn("capabilities is deprecated, use model_info instead", DeprecationWarning, stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        """The inner client's ``model_info``, unchanged (agents branch on it)."""
        return self._inner.model_info

    # -- internals ---------------------------------------------------------------------

    def _count_usage(self, event: AttemptEvent) -> None:
        result = event.result
        if result is None:
            return
        self._total_usage = RequestUsage(
            self._total_usage.prompt_tokens + result.usage.prompt_tokens,
            self._total_usage.completion_tokens + result.usage.completion_tokens,
        )
        if not result.cached:
            self._actual_usage = RequestUsage(
                self._actual_usage.prompt_tokens + result.usage.prompt_tokens,
                self._actual_usage.completion_tokens + result.usage.completion_tokens,
            )

    # -- component -----------------------------------------------------------------

    def _to_config(self) -> ReliableChatCompletionClientConfig:
        tags = self._attribution.tags
        return ReliableChatCompletionClientConfig(
            client=self._inner.dump_component(),
            project=self._attribution.project,
            agent=self._attribution.agent,
            tags=dict(tags) if tags else None,
        )

    @classmethod
    def _from_config(cls, config: ReliableChatCompletionClientConfig) -> Self:
        inner = ChatCompletionClient.load_component(config.client)
        options = config.model_dump(exclude={"client"}, exclude_none=True)
        return cls(inner, **options)
