"""Who a model client is: the provider and model it talks to, a name to show, the key it sends.

Read from the client's type (looked up where its SDK is already imported, never
imported here) and from where AutoGen keeps its configuration (see
``_clients.py``), seeing through wrappers. Nothing here calls the client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from autogen_core.models import ChatCompletionClient

from ._clients import create_args_of, inner_client, innermost, raw_config_of, sdk_client_of
from ._lookup import loaded_class

__all__ = [
    "AskedModels",
    "ClientModel",
    "api_key_of",
    "client_model",
    "describe_client",
    "infer_provider",
    "model_of",
    "resolve_model_alias",
    "takes_model_argument",
]

logger = logging.getLogger(__name__)

_resolve_model: Callable[[str], str] | None
try:  # AutoGen's alias -> snapshot table is private; without it, names stay as they are.
    from autogen_ext.models.openai._model_info import resolve_model as _resolve_model
except ImportError:  # pragma: no cover - depends on the AutoGen release
    _resolve_model = None


# By model name, for clients of unknown type. Deliberately short: open-weight families (llama,
# qwen, gemma, phi, ...) are served by many providers and locally, so they say nothing.
_NAME_RULES: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"^(?:ft:)?(?:gpt-|chatgpt-|o[1-9](?:$|[-.])|text-embedding-|dall-e|whisper-|tts-)"), "openai"),
    (re.compile(r"^claude"), "anthropic"),
    (re.compile(r"^gemini"), "google"),
    (re.compile(r"^(?:open-)?(?:mistral|mixtral|codestral|ministral|pixtral|magistral|devstral|voxtral)"), "mistral"),
    (re.compile(r"^grok"), "x-ai"),
    (re.compile(r"^deepseek"), "deepseek"),
    (re.compile(r"^command"), "cohere"),
)
_PREFIX_PROVIDERS: Final = frozenset(
    {"openai", "anthropic", "google", "mistral", "x-ai", "deepseek", "cohere", "azure"}
)


@lru_cache(maxsize=256)
def _provider_for_url(url: str) -> str | None:
    """The genai-prices provider whose API URL pattern ``url`` matches, if any."""
    # Loaded already when a PricingTable that uses it was made (_genai_pricing), else only now.
    from genai_prices import data_snapshot  # noqa: PLC0415

    for provider in data_snapshot.get_snapshot().providers:
        if re.match(provider.api_pattern, url):
            return provider.id
    return None


def _base_url(client: object) -> str | None:
    # The SDK client's base_url is the effective one: AutoGen's defaults for gemini-/claude- models
    # and OPENAI_BASE_URL included. The raw config is the fallback (e.g. before the SDK client exists).
    sdk_url = getattr(sdk_client_of(client), "base_url", None)
    if sdk_url is not None:
        return str(sdk_url)
    raw = raw_config_of(client)
    if raw is not None:
        configured = raw.get("base_url")
        if isinstance(configured, str) and configured:
            return configured
    return None


# (module, class, provider, whether a configured base URL decides instead), first match wins:
# subclasses before their bases. Modules are looked up in sys.modules, never imported.
_CLIENT_TYPES: Final[tuple[tuple[str, str, str | None, bool], ...]] = (
    ("autogen_ext.models.openai", "AzureOpenAIChatCompletionClient", "azure", False),
    ("autogen_ext.models.openai", "BaseOpenAIChatCompletionClient", "openai", True),
    # genai-prices prices Bedrock's model ids ("anthropic.claude-...-v2:0") under "aws".
    ("autogen_ext.models.anthropic", "AnthropicBedrockChatCompletionClient", "aws", False),
    ("autogen_ext.models.anthropic", "BaseAnthropicChatCompletionClient", "anthropic", True),
    ("autogen_ext.models.ollama", "OllamaChatCompletionClient", "ollama", False),
    ("autogen_ext.models.azure", "AzureAIChatCompletionClient", "azure", False),
    ("autogen_ext.models.llama_cpp", "LlamaCppChatCompletionClient", "llama-cpp", False),
    ("autogen_ext.models.replay", "ReplayChatCompletionClient", None, False),  # scripted answers: no provider
)


def _provider_of_client(client: object, depth: int = 0) -> tuple[bool, str | None]:
    """(whether the client's type was recognised, its provider)."""
    for module, name, provider, by_url in _CLIENT_TYPES:
        cls = loaded_class(module, name)
        if cls is not None and isinstance(client, cls):
            url = _base_url(client) if by_url else None
            # A URL genai-prices does not know (a gateway, a local server) keeps the API's own provider.
            return True, (_provider_for_url(url) if url else None) or provider
    inner = inner_client(client)
    if inner is not None and depth < 4:
        return _provider_of_client(inner, depth + 1)
    return False, None


def _provider_from_name(model: str) -> str | None:
    name = model.strip().lower()
    prefix, slash, rest = name.partition("/")
    if slash and prefix in _PREFIX_PROVIDERS:  # "openai/gpt-4o", as LiteLLM writes it
        return prefix
    for pattern, provider in _NAME_RULES:
        if pattern.search(rest if slash else name):
            return provider
    return None


def infer_provider(client: object, model: str | None = None) -> str | None:
    """The provider an AutoGen model client sends its requests to, as a genai-prices provider id.

    By the client's type first (no SDK module is imported to check):

    - ``AzureOpenAIChatCompletionClient`` -> ``"azure"``;
    - ``OpenAIChatCompletionClient`` -> the genai-prices provider whose API URL pattern its effective
      base URL matches (``"openai"`` for api.openai.com, ``"google"`` for Gemini's OpenAI endpoint,
      ``"groq"``, ``"openrouter"``, ``"together"``, ...); for any other URL (a gateway, a proxy, a
      local server) ``"openai"``: the API it speaks. genai-prices' ``openai`` provider prices only
      OpenAI's own models, so a gateway to OpenAI is priced right and a local ``llama3.1`` or
      ``deepseek-r1:8b`` stays unpriced (with no provider, genai-prices would guess from the name and
      price the latter as DeepSeek's hosted model). A local server that names its model like an
      OpenAI model (``gpt-oss-20b``, a fake server's ``gpt-4o-mini``) is priced at OpenAI's price
      unless an override says otherwise;
    - ``AnthropicChatCompletionClient`` -> ``"anthropic"`` (a base URL as above),
      ``AnthropicBedrockChatCompletionClient`` -> ``"aws"``;
    - ``OllamaChatCompletionClient`` -> ``"ollama"``; ``AzureAIChatCompletionClient`` -> ``"azure"``;
      ``LlamaCppChatCompletionClient`` -> ``"llama-cpp"``;
    - ``ReplayChatCompletionClient`` -> ``None`` (no provider);
    - ``ChatCompletionCache`` and wrappers exposing ``inner`` -> the wrapped client's provider.

    For other clients, by the model name (``model``, else :func:`model_of`): ``gpt-``, ``o1``/``o3``/``o4``...
    -> ``"openai"``, ``claude`` -> ``"anthropic"``, ``gemini`` -> ``"google"``, ``mistral``/``mixtral``/...
    -> ``"mistral"``, ``grok`` -> ``"x-ai"``, ``deepseek`` -> ``"deepseek"``, ``command`` -> ``"cohere"``;
    open-weight families (llama, qwen, ...) -> ``None``: they run anywhere.

    Args:
        client: The model client (any object; nothing is called on it).
        model: The model name, if known better than the client's configuration.

    Returns:
        The provider id, or ``None`` when it cannot be told. Never raises.

    Example:
        >>> from autogen_ext.models.openai import OpenAIChatCompletionClient
        >>> infer_provider(OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test"))
        'openai'
        >>> infer_provider(OpenAIChatCompletionClient(model="llama-3.1-8b-instant", api_key="x",
        ...     base_url="https://api.groq.com/openai/v1", model_info={"vision": False, "function_calling": True,
        ...     "json_output": True, "family": "unknown", "structured_output": True}))
        'groq'
        >>> infer_provider(object(), "claude-3-5-sonnet-20241022")
        'anthropic'
    """
    try:
        known, provider = _provider_of_client(client)
        if known:
            return provider
        name = model if model is not None else model_of(client)
        return _provider_from_name(name) if name else None
    except Exception:  # a probe of foreign objects must never break a call
        logger.debug("could not infer the provider of %s", type(client).__name__, exc_info=True)
        return None


def model_of(client: object) -> str | None:
    """The model name an AutoGen model client is configured with, read duck-typed.

    Reads ``_raw_config["model"]``, else ``_create_args["model"]`` (AutoGen's OpenAI, Azure,
    Anthropic and Ollama clients keep it there), else the wrapped client's of a
    ``ChatCompletionCache`` or a wrapper exposing ``inner``.

    Args:
        client: Any object.

    Returns:
        The model name, or ``None`` (e.g. for a ``ReplayChatCompletionClient``). Never raises.

    Example:
        >>> from autogen_ext.models.openai import OpenAIChatCompletionClient
        >>> model_of(OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test"))
        'gpt-4o-mini'
    """
    try:
        current: object | None = client
        for _ in range(5):
            if current is None:
                return None
            for config in (raw_config_of(current), create_args_of(current)):
                if config is not None:
                    name = config.get("model")
                    if isinstance(name, str) and name:
                        return name
            current = inner_client(current)
    except Exception:
        logger.debug("could not read the model of %s", type(client).__name__, exc_info=True)
    return None


def takes_model_argument(client: ChatCompletionClient) -> bool:
    """Whether ``client`` (under a cache or wrapper) sends ``extra_create_args["model"]`` as its request's model.

    AutoGen's provider clients (OpenAI, Azure, Anthropic, Ollama, Azure AI) keep what every request is sent
    in ``_create_args``, ``model`` included, and send a copy of it updated with the call's
    ``extra_create_args``: a ``model`` there is the model the request asks for. A client without them (a
    scripted or replayed one, a client of your own) is taken to ask for its own model. Never raises.
    """
    try:
        args = create_args_of(innermost(client))
    except Exception:
        logger.debug("could not read the create args of %s", type(client).__name__, exc_info=True)
        return False
    return args is not None and "model" in args


@dataclass(frozen=True, slots=True)
class ClientModel:
    """The model a client is made with, and whether a call can ask it for another: read once per client.

    :meth:`asked_for` is the one rule for the model an attempt asks for, which the usage rows, the
    metrics and the spans all name (see :func:`takes_model_argument`).

    Attributes:
        configured: The model the client is made with (:func:`model_of`).
        takes_model_argument: Whether the client sends ``extra_create_args["model"]`` as its request's model.
    """

    configured: str | None
    takes_model_argument: bool

    def asked_for(self, extra_create_args: Mapping[str, Any]) -> str | None:
        """The model an attempt with these ``extra_create_args`` asks for: a non-blank ``"model"`` there, or its own."""
        if extra_create_args and self.takes_model_argument:
            asked = extra_create_args.get("model")
            if isinstance(asked, str) and asked.strip():
                return asked
        return self.configured


def client_model(client: ChatCompletionClient) -> ClientModel:
    """The :class:`ClientModel` of ``client`` (under a cache or wrapper). Never raises."""
    return ClientModel(model_of(client), takes_model_argument(client))


_MAX_ASKED: Final = 64
"""Models calls asked one client for, remembered per client (past it, forgotten and read again)."""


class AskedModels:
    """The provider and model of each request to one client: read once per client, and once per model asked for.

    Attributes:
        model: The client's :class:`ClientModel`.
        own: The client's provider (:func:`infer_provider`) and model: what a plain call asks for.
    """

    __slots__ = ("_asked", "model", "own")

    def __init__(self, client: ChatCompletionClient) -> None:
        self.model = client_model(client)
        configured = self.model.configured
        self.own: tuple[str | None, str | None] = (infer_provider(client, configured), configured)
        self._asked: dict[str, tuple[str | None, str | None]] = {}

    def of(self, client: ChatCompletionClient, extra_create_args: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The provider and model a request to ``client`` (this one's) with these ``extra_create_args`` asks for."""
        if not extra_create_args:  # a plain call asks for the client's own model: no rule to apply
            return self.own
        asked = self.model.asked_for(extra_create_args)
        if asked is None or asked == self.own[1]:
            return self.own
        found = self._asked.get(asked)
        if found is None:
            if len(self._asked) >= _MAX_ASKED:
                self._asked.clear()
            found = self._asked[asked] = (infer_provider(client, asked), asked)
        return found


def describe_client(client: ChatCompletionClient) -> str:
    """``"OpenAIChatCompletionClient(gpt-4o-mini)"``: the class and model, never a key or a URL.

    A wrapper (ours, AutoGen's cache) is named with the model of the provider client under it: its ``model_info``
    has only the family (``gpt-41`` for ``gpt-4.1-mini``). An Azure OpenAI client built for one deployment is
    named with it too, ``"AzureOpenAIChatCompletionClient(gpt-4o-mini, deployment prod-chat)"``: deployments of one
    model (a region and its fallback) are told apart.
    """
    try:
        model = client.model_info.get("family", "")
        raw = raw_config_of(innermost(client))
        if raw is not None and isinstance(raw.get("model"), str):
            model = raw["model"]
        deployment = raw.get("azure_deployment") if raw is not None else None
        if model and isinstance(deployment, str) and deployment:
            model = f"{model}, deployment {deployment}"
    except Exception:  # a client whose model_info fails must still get a readable name
        model = ""
    return f"{type(client).__name__}({model})" if model else type(client).__name__


def api_key_of(client: ChatCompletionClient) -> str | None:
    """The API key the provider client sends, where it can be read, so that it can be kept out of what we write.

    The openai and anthropic SDK clients (AutoGen's ``_client``) hold it as
    ``api_key``; AutoGen's own config holds the one it was given.
    """
    client = innermost(client)
    key = getattr(sdk_client_of(client), "api_key", None)
    if isinstance(key, str) and key:
        return key
    raw_config = raw_config_of(client)
    key = raw_config.get("api_key") if raw_config is not None else None
    secret = getattr(key, "get_secret_value", None)  # a pydantic SecretStr
    key = secret() if callable(secret) else key
    return key if isinstance(key, str) and key else None


def resolve_model_alias(model: str) -> str:
    """The dated snapshot AutoGen takes an OpenAI model alias for (``gpt-4o-mini`` -> ``gpt-4o-mini-2024-07-18``).

    Names AutoGen does not know, and every name where its table is missing, are returned as given.
    """
    if _resolve_model is None:
        return model
    return _resolve_model(model)
