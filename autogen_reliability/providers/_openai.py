"""What each kind of inner client needs in its request, decided per attempt.

A call's :class:`~autogen_reliability._pipeline.Request` is the same for the
primary client and every fallback; what the *provider* is sent may differ:

- **Stream usage.** AutoGen's OpenAI client reports (0, 0) tokens for a stream
  unless the request asks for usage. It is asked per call, only of OpenAI
  clients (others may reject the key), and only when the caller did not set
  ``include_usage`` or ``stream_options`` itself. (Set on the constructor, it
  would also be sent with plain calls.)
- **Structured output we validate ourselves.** Given ``json_output=<model>``,
  the openai SDK parses the answer strictly and raises on JSON wrapped in a
  fence or in prose before we could repair it. When the validation stage takes
  the answer over (``request.response_format``), an OpenAI client is sent the
  same JSON schema as a ``response_format`` dict with ``json_output=None``: the
  model is constrained alike, and the SDK hands the text back unparsed. Other
  clients get ``json_output`` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autogen_core.models import ChatCompletionClient
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
from pydantic import BaseModel

if TYPE_CHECKING:
    from .._pipeline import Request

__all__ = ["api_key_of", "innermost", "provider_arguments"]


def innermost(client: ChatCompletionClient) -> ChatCompletionClient:
    """The provider client under AutoGen's cache and our own wrapper, which hold it one level down."""
    for _ in range(8):  # bounded: a wrapper pointing at itself must not loop
        inner = getattr(client, "inner", None) or getattr(client, "client", None)
        if not isinstance(inner, ChatCompletionClient) or inner is client:
            break
        client = inner
    return client


def api_key_of(client: ChatCompletionClient) -> str | None:
    """The API key the provider client sends, where it can be read, so that it can be kept out of what we write.

    The openai and anthropic SDK clients (AutoGen's ``_client``) hold it as
    ``api_key``; AutoGen's own config holds the one it was given.
    """
    client = innermost(client)
    key = getattr(getattr(client, "_client", None), "api_key", None)
    if isinstance(key, str) and key:
        return key
    raw_config = getattr(client, "_raw_config", None)
    key = raw_config.get("api_key") if isinstance(raw_config, dict) else None
    secret = getattr(key, "get_secret_value", None)  # a pydantic SecretStr
    key = secret() if callable(secret) else key
    return key if isinstance(key, str) and key else None


def provider_arguments(client: ChatCompletionClient, request: Request, *, streaming: bool) -> dict[str, Any]:
    """The keyword arguments of ``client.create`` / ``create_stream`` for ``request`` (all but the messages)."""
    json_output: bool | type[BaseModel] | None = request.json_output
    extra = request.extra_create_args
    if isinstance(client, BaseOpenAIChatCompletionClient):
        json_output, extra = _for_openai(client, request, streaming)
    arguments: dict[str, Any] = {
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "json_output": json_output,
        "extra_create_args": extra,
        "cancellation_token": request.cancellation_token,
    }
    if streaming:
        arguments.update(request.stream_kwargs)
    return arguments


def _for_openai(
    client: ChatCompletionClient, request: Request, streaming: bool
) -> tuple[bool | type[BaseModel] | None, Mapping[str, Any]]:
    json_output, extra = request.json_output, request.extra_create_args
    if (
        request.response_format is not None
        and "response_format" not in extra
        and json_output is not True  # JSON mode asked for explicitly stays JSON mode
        and client.model_info.get("structured_output", False)
    ):
        extra = {**extra, "response_format": request.response_format}
        json_output = None
    if streaming and "stream_options" not in extra and "include_usage" not in request.stream_kwargs:
        extra = {**extra, "stream_options": {"include_usage": True}}
    return json_output, extra
