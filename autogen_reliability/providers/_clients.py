"""Where AutoGen's model clients keep what we need to read: one place for their private attributes.

AutoGen's provider clients (``OpenAIChatCompletionClient``, ``AzureOpenAI...``,
``AnthropicChatCompletionClient``, ``OllamaChatCompletionClient``, ...) expose
neither the SDK client they send through nor the configuration they were built
from. They keep them as:

- ``_client``: the SDK client (``openai.AsyncOpenAI``, ``anthropic.AsyncAnthropic``,
  ``ollama.AsyncClient``), with its ``api_key``, ``base_url``, ``max_retries``;
- ``_raw_config``: the keyword arguments the client was built with (what
  ``dump_component()`` writes), ``model`` among them;
- ``_create_args``: the arguments sent with every request, ``model`` among them.

Wrappers (AutoGen's ``ChatCompletionCache``, our own) hold the client they
delegate to one level down; :func:`innermost` is the one rule for seeing
through them. An AutoGen upgrade that moves any of this is fixed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autogen_core.models import ChatCompletionClient

__all__ = ["create_args_of", "inner_client", "innermost", "raw_config_of", "sdk_client_of"]

# Bounded: a wrapper pointing at itself, or a cycle of wrappers, must not loop.
_MAX_WRAPPERS = 8


def inner_client(client: object) -> ChatCompletionClient | None:
    """The client a wrapper delegates to, one level down, or ``None`` for a provider client.

    Our wrapper (and others, as pydantic-ai names it) holds it as ``inner``; AutoGen's
    ``ChatCompletionCache`` as ``client``.
    """
    for attribute in ("inner", "client"):
        inner = getattr(client, attribute, None)
        if isinstance(inner, ChatCompletionClient) and inner is not client:
            return inner
    return None


def innermost(client: ChatCompletionClient) -> ChatCompletionClient:
    """The provider client under AutoGen's cache and our own wrapper (and wrappers of those)."""
    for _ in range(_MAX_WRAPPERS):
        inner = inner_client(client)
        if inner is None:
            break
        client = inner
    return client


def sdk_client_of(client: object) -> Any:
    """The SDK client an AutoGen model client sends through (``openai.AsyncOpenAI``, ...), or ``None``."""
    return getattr(client, "_client", None)


def raw_config_of(client: object) -> Mapping[str, Any] | None:
    """The configuration an AutoGen model client was built with (a dict it owns), or ``None``."""
    config = getattr(client, "_raw_config", None)
    return config if isinstance(config, Mapping) else None


def create_args_of(client: object) -> Mapping[str, Any] | None:
    """The arguments an AutoGen model client sends with every request, or ``None``."""
    args = getattr(client, "_create_args", None)
    return args if isinstance(args, Mapping) else None


def response_format_of(client: ChatCompletionClient) -> object:
    """The ``response_format`` a client (under any wrapper) was built to send with every request, or ``None``.

    AutoGen's OpenAI clients take one in their configuration (``response_format={"type": "json_object"}``).
    """
    args = create_args_of(innermost(client))
    return args.get("response_format") if args is not None else None
