"""What each kind of inner client needs in its request, decided per attempt.

A call's request is the same for the primary client and every fallback; what the
*provider* is sent may differ:

- **Stream usage.** AutoGen's OpenAI client reports (0, 0) tokens for a stream
  unless the request asks for usage. It is asked per call, only of OpenAI
  clients (others may reject the key; so does Azure OpenAI before api-version
  2024-09-01-preview), and only when the caller did not set
  ``include_usage`` or ``stream_options`` itself. (Set on the constructor, it
  would also be sent with plain calls.)
- **Structured output we validate ourselves.** Given ``json_output=<model>``,
  the openai SDK parses the answer strictly and raises on JSON wrapped in a
  fence or in prose before we could repair it. When the validation stage takes
  the answer over (``response_format``), an OpenAI client is sent the
  same JSON schema as a ``response_format`` dict with ``json_output=None``: the
  model is constrained alike, and the SDK hands the text back unparsed. Other
  clients get ``json_output`` unchanged; an Ollama client asked for no JSON
  (``json_output=None``) is sent the schema as its ``format``, unless the call
  or the client sends a ``format`` of its own.
- **Stream arguments of the OpenAI client.** ``create_stream``'s keyword
  arguments beyond the interface's go to the client, but those only AutoGen's
  OpenAI clients take (``include_usage``) not to a client of another kind (a
  fallback) whose ``create_stream`` does not take them: it would end the call
  with a ``TypeError`` instead of answering. Any other argument is passed as
  given, so a misspelt one fails as in the inner client's own call.

An OpenAI client under AutoGen's ``ChatCompletionCache`` is asked as a bare
one is: the cache passes ``json_output`` and ``extra_create_args`` on as given
(they are part of its key), so it gets the stream usage and the
``response_format`` too, and the answer it keeps has the provider's tokens.

The arguments come as plain values, not as the pipeline's request: this package
sits below the pipeline and imports nothing from it.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, BaseOpenAIChatCompletionClient
from pydantic import BaseModel

from ._clients import create_args_of, raw_config_of
from ._lookup import loaded_class

__all__ = ["provider_arguments", "strict_json_schema"]


def provider_arguments(
    client: ChatCompletionClient,
    *,
    tools: Sequence[Tool | ToolSchema],
    tool_choice: Tool | Literal["auto", "required", "none"],
    json_output: bool | type[BaseModel] | None,
    extra_create_args: Mapping[str, Any],
    cancellation_token: CancellationToken | None,
    response_format: Mapping[str, Any] | None,
    streaming: bool,
    stream_kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments of ``client.create`` / ``create_stream`` (all but the messages).

    Args:
        client: The client the attempt goes to.
        tools: As given to ``create``.
        tool_choice: As given to ``create``.
        json_output: As given to ``create``.
        extra_create_args: As given to ``create``.
        cancellation_token: As given to ``create``.
        response_format: A JSON-schema ``response_format`` the validation stage checks itself, if any.
        streaming: Whether the call is ``create_stream``.
        stream_kwargs: Keyword arguments of ``create_stream`` beyond the interface's (OpenAI's
            ``include_usage``); passed on for a stream only.
    """
    extra = extra_create_args
    if response_format is not None and isinstance(json_output, type) and not client.model_info.get("structured_output"):
        # The validation stage checks the answer against the model itself (response_format is its schema). A
        # client that says it cannot be asked for a model (a fallback of a model without structured output,
        # under a wrapper whose model_info is its primary's) would raise for it: it is asked for what it can give.
        json_output = True if client.model_info.get("json_output") else None
    openai = _openai_under_caches(client)
    if openai is not None:
        json_output, extra = _for_openai(
            openai,
            json_output=json_output,
            extra=extra,
            response_format=response_format,
            streaming=streaming,
            # The cache's create_stream takes none of the OpenAI client's own arguments (see below).
            stream_kwargs=stream_kwargs if openai is client else {},
        )
    elif response_format is not None and json_output is None:
        extra = _for_ollama(client, extra=extra, response_format=response_format)
    arguments: dict[str, Any] = {
        "tools": tools,
        "tool_choice": tool_choice,
        "json_output": json_output,
        "extra_create_args": extra,
        "cancellation_token": cancellation_token,
    }
    if streaming and stream_kwargs:
        if isinstance(client, BaseOpenAIChatCompletionClient):
            arguments.update(stream_kwargs)
        else:
            taken = _stream_arguments_taken(type(client))
            arguments.update(
                (name, value)
                for name, value in stream_kwargs.items()
                if name not in _OPENAI_STREAM_ONLY or taken is None or name in taken
            )
    return arguments


def _openai_under_caches(client: ChatCompletionClient) -> BaseOpenAIChatCompletionClient | None:
    """The OpenAI client ``client`` is, or that AutoGen's cache (one or several) over it sends to; else None."""
    for _ in range(_MAX_CACHES):
        if isinstance(client, BaseOpenAIChatCompletionClient):
            return client
        # Looked up, not imported: without its module, no client is a cache (and a call pays no import).
        cache = getattr(sys.modules.get("autogen_ext.models.cache"), "ChatCompletionCache", None)
        if cache is None or not isinstance(client, cache):
            return None
        client = client.client
    return None


_MAX_CACHES: Final = 8  # a cache over itself, or a cycle of caches, must not loop


def _keyword_names(function: Any) -> frozenset[str] | None:
    """The names of ``function``'s keyword arguments; None if it takes any (``**kwargs``) or cannot be read."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return frozenset(parameter.name for parameter in parameters)


# What AutoGen's OpenAI clients' create_stream takes beyond the interface's: include_usage, and
# max_consecutive_empty_chunk_tolerance while it lasts.
_OPENAI_STREAM_ONLY: Final = (_keyword_names(BaseOpenAIChatCompletionClient.create_stream) or frozenset()) - (
    _keyword_names(ChatCompletionClient.create_stream) or frozenset()
)


@functools.lru_cache(maxsize=64)
def _stream_arguments_taken(cls: type[ChatCompletionClient]) -> frozenset[str] | None:
    """The keyword arguments the ``create_stream`` of ``cls`` takes; None for any."""
    return _keyword_names(cls.create_stream)


def _for_openai(
    client: ChatCompletionClient,
    *,
    json_output: bool | type[BaseModel] | None,
    extra: Mapping[str, Any],
    response_format: Mapping[str, Any] | None,
    streaming: bool,
    stream_kwargs: Mapping[str, Any],
) -> tuple[bool | type[BaseModel] | None, Mapping[str, Any]]:
    if (
        response_format is not None
        and "response_format" not in extra
        and json_output is not True  # JSON mode asked for explicitly stays JSON mode
        and client.model_info.get("structured_output", False)
    ):
        extra = {**extra, "response_format": response_format}
        json_output = None
    if (
        streaming
        and "stream_options" not in extra
        and "include_usage" not in stream_kwargs
        and _takes_stream_options(client)
    ):
        extra = {**extra, "stream_options": {"include_usage": True}}
    return json_output, extra


def _for_ollama(
    client: ChatCompletionClient, *, extra: Mapping[str, Any], response_format: Mapping[str, Any]
) -> Mapping[str, Any]:
    """``extra`` with the validation stage's schema as Ollama's ``format``, for an Ollama client asked for no JSON.

    Not when the call or the client sends a ``format`` (or AutoGen's older ``response_format``) of its own.
    """
    ollama = loaded_class("autogen_ext.models.ollama", "OllamaChatCompletionClient")
    if ollama is None or not isinstance(client, ollama):
        return extra
    own = create_args_of(client) or {}
    if any(key in arguments for key in ("format", "response_format") for arguments in (extra, own)):
        return extra
    return {**extra, "format": response_format["json_schema"]["schema"]}


# Azure OpenAI takes stream_options from api-version 2024-09-01-preview on (GA: 2024-10-21). An older one refuses
# the whole request (400 "Unrecognized request argument supplied: stream_options"); its streams report no usage.
_AZURE_STREAM_OPTIONS_SINCE: Final = "2024-09-01"
_DATED_VERSION: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _takes_stream_options(client: ChatCompletionClient) -> bool:
    """Whether ``client``'s API takes ``stream_options``: any but an Azure OpenAI client of an older api-version."""
    if not isinstance(client, AzureOpenAIChatCompletionClient):
        return True
    config = raw_config_of(client)
    version = config.get("api_version") if config is not None else None
    if not isinstance(version, str) or _DATED_VERSION.match(version) is None:
        return True  # "preview", "latest" (the v1 API): today's
    return version[:10] >= _AZURE_STREAM_OPTIONS_SINCE


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any] | None:
    """The JSON schema the openai SDK sends for ``response_format=model`` (its strict transform).

    ``None`` where this SDK release does not have the transform; the caller then sends the
    model's plain schema, not strict.
    """
    try:
        # Private in the SDK, but it is what its own `response_format=Model` goes through.
        from openai.lib._pydantic import to_strict_json_schema  # noqa: PLC0415 -- import only when asked
    except ImportError:
        return None
    return to_strict_json_schema(model)
