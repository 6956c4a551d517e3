"""The cheapest request that shows a provider answers, per kind of client (for the health probe's active checks).

An OpenAI-compatible client (OpenAI, Azure OpenAI, and the many servers that
speak its wire protocol: vLLM, Ollama's ``/v1``, LiteLLM, ...) can list its
models, ``GET {base_url}/models``, which costs nothing; not an Azure client
built for a deployment, whose base URL is the deployment's. Any other client is
asked for a completion of one token, where we know how to say "one token"
(``max_tokens``; Ollama's ``num_predict``; and, for an Anthropic client built
with extended thinking, without thinking).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from autogen_core.models import ChatCompletionClient

from ._clients import create_args_of, innermost, sdk_client_of
from ._lookup import loaded_class

__all__ = ["model_listing", "one_token_arguments"]

ModelListing = Callable[[float], Awaitable[None]]


def model_listing(client: ChatCompletionClient) -> ModelListing | None:
    """For a client that sends through the openai SDK: ``list_models(seconds)``, one free ``GET /models``; else None.

    The request is made once, without the SDK's retries, and gives up after
    ``seconds`` (the SDK raises ``openai.APITimeoutError``).
    """
    sdk: Any = sdk_client_of(innermost(client))
    async_openai = loaded_class("openai", "AsyncOpenAI")
    if async_openai is None or not isinstance(sdk, async_openai):
        return None
    if "/deployments/" in str(getattr(sdk, "base_url", "")):
        # An Azure OpenAI client built for one deployment sends every request under the deployment's URL,
        # where GET .../deployments/NAME/models is not the resource's model listing.
        return None
    openai_client: Any = sdk  # typed Any: the openai SDK is a dependency, but this module names none of it

    async def list_models(seconds: float) -> None:
        await openai_client.with_options(max_retries=0).models.list(timeout=seconds)

    return list_models


def one_token_arguments(client: ChatCompletionClient) -> Mapping[str, Any]:
    """``extra_create_args`` that cap a completion of ``client`` at one token, where its kind of client takes one.

    An Anthropic client built with extended thinking (``thinking={"type": "enabled", ...}``) sends it with every
    request, and the API refuses ``max_tokens`` that is not above the thinking budget: its check is also sent
    ``thinking={"type": "disabled"}``. AutoGen's Ollama client moves ``num_predict`` into the ``options`` it sends,
    beside those it was built with (a ``num_ctx`` other than the model's loaded one would reload the model).
    """
    client = innermost(client)
    openai = loaded_class("autogen_ext.models.openai", "BaseOpenAIChatCompletionClient")
    if openai is not None and isinstance(client, openai):
        return {"max_tokens": 1}
    anthropic = loaded_class("autogen_ext.models.anthropic", "BaseAnthropicChatCompletionClient")
    if anthropic is not None and isinstance(client, anthropic):
        args = create_args_of(client)
        thinking = args.get("thinking") if args is not None else None
        if isinstance(thinking, Mapping) and thinking.get("type") != "disabled":
            return {"max_tokens": 1, "thinking": {"type": "disabled"}}
        return {"max_tokens": 1}
    ollama = loaded_class("autogen_ext.models.ollama", "OllamaChatCompletionClient")
    if ollama is not None and isinstance(client, ollama):
        return {"num_predict": 1}
    return {}  # an argument a client does not know could fail the check for the wrong reason
