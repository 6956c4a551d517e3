"""providers/: what the library knows about AutoGen's clients and the SDKs, checked on the real clients."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import threading
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import httpx
import ollama
import pytest
from autogen_core import CacheStore
from autogen_core.models import ChatCompletionClient, CreateResult, ModelInfo, RequestUsage, UserMessage
from autogen_core.tools import FunctionTool
from autogen_ext.models.anthropic import AnthropicBedrockChatCompletionClient, AnthropicChatCompletionClient
from autogen_ext.models.cache import ChatCompletionCache
from autogen_ext.models.ollama import OllamaChatCompletionClient
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, OpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient
from pydantic import BaseModel

from autogen_reliability import HealthProbe, ReliableChatCompletionClient, ValidationPolicy, reliable
from autogen_reliability.accounting import Cost, PricingTable, TokenUsage
from autogen_reliability.accounting._genai_pricing import GENAI_PRICES_VERSION
from autogen_reliability.providers import (
    client_model,
    describe_client,
    infer_provider,
    inner_client,
    innermost,
    loaded_class,
    loaded_module,
    model_of,
)

from .conftest import run_python
from .storage_fixtures import Ledger, ledger_rows

AT = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)
SOURCE = f"genai-prices {GENAI_PRICES_VERSION}"
UNKNOWN_MODEL_INFO = ModelInfo(
    vision=False, function_calling=True, json_output=True, family="unknown", structured_output=True
)


def price(table: PricingTable, model: str, provider: str | None = None, **usage: Any) -> Cost | None:
    return table.price(model, provider, usage=TokenUsage(**usage), at=AT)


class MemoryStore(CacheStore[Any]):
    def get(self, key: str, default: Any = None) -> Any:
        return default

    def set(self, key: str, value: Any) -> None:
        return None


# --------------------------------------------------------------------------------------------------
# infer_provider and model_of
# --------------------------------------------------------------------------------------------------


def test_openai_client() -> None:
    client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test")
    assert infer_provider(client) == "openai"
    assert model_of(client) == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://api.together.xyz/v1", "together"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", "google"),
        ("https://acme.openai.azure.com/openai/v1/", "azure"),
        ("https://api.anthropic.com/v1/", "anthropic"),
        ("http://localhost:11434/v1", "openai"),  # unknown URLs: the API the client speaks
        ("http://127.0.0.1:8000/v1", "openai"),
        ("https://user:secret@llm-gateway.acme.internal/v1", "openai"),
    ],
)
def test_openai_client_by_base_url(base_url: str, expected: str) -> None:
    client = OpenAIChatCompletionClient(
        model="some-model", api_key="sk-test", base_url=base_url, model_info=UNKNOWN_MODEL_INFO
    )
    provider = infer_provider(client)
    assert provider == expected
    assert "secret" not in (provider or "")


def test_openai_client_for_a_gateway_or_local_server() -> None:
    table = PricingTable()
    # A gateway that forwards to OpenAI: OpenAI's price.
    gateway = OpenAIChatCompletionClient(
        model="gpt-4o-mini", api_key="sk-test", base_url="https://llm.acme.internal/v1"
    )
    assert infer_provider(gateway) == "openai"
    cost = price(table, "gpt-4o-mini", infer_provider(gateway), prompt_tokens=10, completion_tokens=1)
    assert cost is not None
    assert cost.source == SOURCE
    # Local open-weight models stay unpriced: genai-prices' "openai" has only OpenAI's models. Without the
    # provider, genai-prices would take the Ollama distill "deepseek-r1:8b" for DeepSeek's hosted model.
    for model in ("llama3.1", "qwen2.5:7b", "deepseek-r1:8b", "gpt-oss:20b"):
        local = OpenAIChatCompletionClient(
            model=model, api_key="x", base_url="http://localhost:11434/v1", model_info=UNKNOWN_MODEL_INFO
        )
        assert infer_provider(local) == "openai"
        assert price(table, model, infer_provider(local), prompt_tokens=10, completion_tokens=1) is None
    assert price(table, "deepseek-r1:8b", None, prompt_tokens=10, completion_tokens=1) is not None


def test_openai_client_for_gemini_uses_autogens_default_base_url() -> None:
    client = OpenAIChatCompletionClient(model="gemini-2.0-flash", api_key="x")
    assert infer_provider(client) == "google"
    assert model_of(client) == "gemini-2.0-flash"


def test_azure_openai_client() -> None:
    client = AzureOpenAIChatCompletionClient(
        model="gpt-4o",
        azure_endpoint="https://acme.openai.azure.com/",
        azure_deployment="prod-gpt4o",
        api_version="2024-06-01",
        api_key="x",
    )
    assert infer_provider(client) == "azure"
    assert model_of(client) == "gpt-4o"


def test_anthropic_clients() -> None:
    client = AnthropicChatCompletionClient(model="claude-3-5-sonnet-20241022", api_key="x")
    assert infer_provider(client) == "anthropic"
    assert model_of(client) == "claude-3-5-sonnet-20241022"
    bedrock = AnthropicBedrockChatCompletionClient(
        model="anthropic.claude-3-5-sonnet-20241022-v2:0",
        bedrock_info={
            "aws_access_key": "a",
            "aws_secret_key": "b",
            "aws_session_token": "c",
            "aws_region": "us-east-1",
        },
        model_info=UNKNOWN_MODEL_INFO,
    )
    assert infer_provider(bedrock) == "aws"
    assert model_of(bedrock) == "anthropic.claude-3-5-sonnet-20241022-v2:0"
    assert price(PricingTable(), model_of(bedrock) or "", "aws", prompt_tokens=10, completion_tokens=1) is not None


def test_ollama_client() -> None:
    client = OllamaChatCompletionClient(model="llama3.1")
    assert infer_provider(client) == "ollama"
    assert model_of(client) == "llama3.1"
    # No price for a local model unless an override gives one.
    assert price(PricingTable(), "llama3.1", "ollama", prompt_tokens=10, completion_tokens=1) is None


def test_replay_client_has_no_provider_or_model() -> None:
    client = ReplayChatCompletionClient(["hello"])
    assert infer_provider(client) is None
    assert infer_provider(client, "gpt-4o") is None
    assert model_of(client) is None


def test_wrapped_clients_are_seen_through() -> None:
    class MemoryStore(CacheStore[Any]):
        def get(self, key: str, default: Any = None) -> Any:
            return default

        def set(self, key: str, value: Any) -> None:
            return None

    inner = AnthropicChatCompletionClient(model="claude-3-5-haiku-20241022", api_key="x")
    cached = ChatCompletionCache(inner, MemoryStore())
    assert infer_provider(cached) == "anthropic"
    assert model_of(cached) == "claude-3-5-haiku-20241022"

    class Wrapper:
        def __init__(self, inner: object) -> None:
            self.inner = inner

    assert infer_provider(Wrapper(cached)) == "anthropic"
    assert model_of(Wrapper(cached)) == "claude-3-5-haiku-20241022"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o-mini", "openai"),
        ("GPT-4.1", "openai"),
        ("o1", "openai"),
        ("o3-mini", "openai"),
        ("o4-mini-2025-04-16", "openai"),
        ("ft:gpt-4o-mini:acme::abc123", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("openai/gpt-4o", "openai"),
        ("claude-3-5-sonnet-20241022", "anthropic"),
        ("gemini-2.5-pro", "google"),
        ("mistral-large-latest", "mistral"),
        ("mixtral-8x7b", "mistral"),
        ("codestral-latest", "mistral"),
        ("grok-3", "x-ai"),
        ("deepseek-chat", "deepseek"),
        ("command-r-plus", "cohere"),
        ("llama3.1:8b", None),
        ("meta-llama/Llama-3.1-8B-Instruct", None),
        ("qwen2.5", None),
        ("omni-model", None),  # "o" and a digit only: not every o-word is OpenAI's
        ("", None),
    ],
)
def test_provider_by_model_name_for_unknown_clients(model: str, expected: str | None) -> None:
    assert infer_provider(object(), model) == expected


def test_model_name_read_from_an_unknown_client() -> None:
    class Custom:
        def __init__(self) -> None:
            self._create_args = {"model": "claude-3-opus-20240229", "temperature": 0}

    assert model_of(Custom()) == "claude-3-opus-20240229"
    assert infer_provider(Custom()) == "anthropic"


def test_inference_never_raises_on_hostile_objects() -> None:
    class Hostile:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("boom")

        @property
        def _raw_config(self) -> Any:
            raise RuntimeError("boom")

    assert infer_provider(Hostile()) is None
    assert model_of(Hostile()) is None
    assert infer_provider(None) is None
    assert model_of(None) is None
    assert model_of(type("Odd", (), {"_raw_config": {"model": 42}})()) is None


def test_inference_imports_no_provider_sdk() -> None:
    script = textwrap.dedent(
        """
        import sys
        from autogen_reliability.providers import infer_provider, model_of
        before = {m for m in sys.modules if m.startswith(("anthropic", "ollama", "autogen_ext.models.anthropic",
                                                            "autogen_ext.models.ollama", "autogen_ext.models.replay"))}
        assert infer_provider(object(), "claude-3-5-sonnet") == "anthropic"
        assert model_of(object()) is None
        after = {m for m in sys.modules if m.startswith(("anthropic", "ollama", "autogen_ext.models.anthropic",
                                                           "autogen_ext.models.ollama", "autogen_ext.models.replay"))}
        assert after == before, after - before
        print("ok")
        """
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------------------------------
# Seeing through wrappers: one rule for every caller
# --------------------------------------------------------------------------------------------------


def test_innermost_sees_through_the_cache_and_our_wrapper() -> None:
    provider = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test")
    cached = ChatCompletionCache(provider, MemoryStore())
    wrapped = ReliableChatCompletionClient(cached)
    assert inner_client(wrapped) is cached
    assert inner_client(cached) is provider
    assert inner_client(provider) is None
    assert innermost(wrapped) is provider
    assert innermost(provider) is provider


def test_the_model_an_attempt_asks_for_is_one_rule_for_every_caller() -> None:
    # The usage rows, the metrics and the spans all name the model through this rule.
    provider = OpenAIChatCompletionClient(model="gpt-4o", api_key="sk-test")
    for client in (provider, ReliableChatCompletionClient(ChatCompletionCache(provider, MemoryStore()))):
        model = client_model(client)
        assert (model.configured, model.takes_model_argument) == ("gpt-4o", True)
        assert model.asked_for({}) == "gpt-4o"
        assert model.asked_for({"temperature": 0}) == "gpt-4o"
        assert model.asked_for({"model": "gpt-4o-mini"}) == "gpt-4o-mini"
        for ignored in ("", "  ", None, 4):  # not a model the SDK would send
            assert model.asked_for({"model": ignored}) == "gpt-4o"
    # A client that keeps no create args asks for its own model whatever extra_create_args say.
    replay = client_model(ReplayChatCompletionClient(["hello"]))
    assert (replay.configured, replay.takes_model_argument) == (None, False)
    assert replay.asked_for({"model": "gpt-4o-mini"}) is None


def test_innermost_stops_on_a_cycle_of_wrappers() -> None:
    first = ChatCompletionCache(ReplayChatCompletionClient(["a"]), MemoryStore())
    second = ChatCompletionCache(first, MemoryStore())
    first.client = second  # a cycle: first -> second -> first
    assert innermost(first) in (first, second)  # returns, whichever it stopped on


def test_describe_client_names_the_class_and_model_never_the_key_or_url() -> None:
    client = OpenAIChatCompletionClient(
        model="gpt-4o-mini", api_key="sk-secret-key-123456", base_url="https://user:pw@gateway.acme.internal/v1"
    )
    assert describe_client(client) == "OpenAIChatCompletionClient(gpt-4o-mini)"
    assert describe_client(ReplayChatCompletionClient(["a"])) == "ReplayChatCompletionClient(unknown)"  # its family

    class Broken(ReplayChatCompletionClient):
        @property
        def model_info(self) -> ModelInfo:
            raise RuntimeError("no info")

    assert describe_client(Broken(["a"])) == "Broken"


# --------------------------------------------------------------------------------------------------
# The lookup: only where already imported
# --------------------------------------------------------------------------------------------------


def test_loaded_class_finds_only_classes_of_imported_modules() -> None:
    assert loaded_class("json", "JSONDecodeError") is __import__("json").JSONDecodeError
    assert loaded_class("json", "JSONDecodeError", ValueError) is __import__("json").JSONDecodeError
    assert loaded_class("json", "JSONDecodeError", KeyError) is None  # not that kind of class
    assert loaded_class("json", "dumps") is None  # a function, not a class
    assert loaded_class("json", "Nope") is None
    assert loaded_module("json") is sys.modules["json"]


def test_the_lookup_never_imports() -> None:
    script = textwrap.dedent(
        """
        import sys
        from autogen_reliability.providers import loaded_class, loaded_module
        assert "xml.dom.minidom" not in sys.modules
        assert loaded_module("xml.dom.minidom") is None
        assert loaded_class("xml.dom.minidom", "Document") is None
        assert "xml.dom.minidom" not in sys.modules
        print("ok")
        """
    )
    done = run_python(script)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------------------------------
# Ollama's own client, against a server that speaks its wire
# --------------------------------------------------------------------------------------------------


class _OllamaWire(BaseHTTPRequestHandler):
    """Answers ``POST /api/chat`` with the next scripted (status, NDJSON lines) of its server."""

    server: _OllamaServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        self.server.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status, lines = self.server.replies.pop(0)
        body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        self.send_response(status)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _OllamaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OllamaWire)
        self.replies: list[tuple[int, list[dict[str, Any]]]] = []
        self.requests: list[dict[str, Any]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def ollama_server() -> Iterator[_OllamaServer]:
    server = _OllamaServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _ollama_line(content: str, *, done: bool, tool_calls: Any = None, **counts: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {"model": "llama3.1:8b", "created_at": "2025-09-01T12:00:00Z", "message": message, "done": done, **counts}


async def test_an_ollama_error_line_mid_stream_has_no_http_status_in_its_row(
    ollama_server: _OllamaServer, ledger: Ledger
) -> None:
    # Ollama answers 200 and then, inside the stream, an {"error": ...} line: the ollama SDK raises a ResponseError
    # whose status_code is -1, its mark for "no status". The row, as for an SSE error event, has no HTTP status.
    ollama_server.replies = [
        (200, [_ollama_line("Hel", done=False), {"error": "an error was encountered while running the model"}]),
        (500, [{"error": "model runner has unexpectedly stopped"}]),
    ]
    client = reliable(
        OllamaChatCompletionClient(model="llama3.1:8b", host=ollama_server.url), recorder=ledger[1], retry=None
    )
    hello = [UserMessage(content="hi", source="user")]
    try:
        with pytest.raises(ollama.ResponseError):
            async for _ in client.create_stream(hello):
                pass
        with pytest.raises(ollama.ResponseError):
            await client.create(hello)
    finally:
        await client.close()
    streamed, created = ledger_rows(ledger)
    assert (streamed.provider, streamed.outcome, streamed.error_kind, streamed.http_status) == (
        "ollama",
        "error",
        "server_error",
        None,
    )
    assert (created.error_kind, created.http_status) == ("server_error", 500)  # a real status is kept


async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@pytest.mark.parametrize("max_response_chars", [20, 200_000], ids=["cut", "whole"])
async def test_an_ollama_tool_call_is_reasked_with_arguments_its_client_can_send(
    max_response_chars: int, ollama_server: _OllamaServer
) -> None:
    # The Ollama client json.loads every echoed tool call's arguments into a mapping: arguments cut for
    # max_response_chars, or that were no JSON object, made the re-ask raise JSONDecodeError before anything was
    # sent. They are echoed as a JSON object holding what the model wrote.
    too_long = {"a": 1, "b": 2, "note": "x" * 40}
    wrong = {"a": "one", "b": 2}
    called = [{"function": {"name": "add", "arguments": too_long if max_response_chars == 20 else wrong}}]
    ollama_server.replies = [
        (200, [_ollama_line("", done=True, tool_calls=called, done_reason="stop")]),
        (200, [_ollama_line("", done=True, tool_calls=[{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}])]),
    ]
    client = reliable(
        OllamaChatCompletionClient(model="llama3.1:8b", host=ollama_server.url),
        validation=ValidationPolicy(max_response_chars=max_response_chars),
        retry=None,
    )
    try:
        result = await client.create([UserMessage(content="1 + 2?", source="user")], tools=[FunctionTool(add, "")])
    finally:
        await client.close()
    assert isinstance(result.content, list)
    assert json.loads(result.content[0].arguments) == {"a": 1, "b": 2}
    echoed = ollama_server.requests[1]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    if max_response_chars == 20:
        assert echoed == {"invalid_arguments": json.dumps(too_long)[:20] + "… [48 more characters]"}
    else:
        assert echoed == wrong  # valid JSON is echoed as it was


async def test_the_health_check_of_an_ollama_client_asks_for_one_token_with_the_clients_options(
    ollama_server: _OllamaServer, ledger: Ledger
) -> None:
    # The check's "completion capped at one token" was sent uncapped to Ollama: a local model answered "ping" with
    # as many tokens as it liked, on the service's GPU or CPU, within the check's timeout or not. It asks for
    # num_predict=1 now, in the options the client sends (num_ctx kept: another one reloads the model).
    ollama_server.replies = [(200, [_ollama_line("pong", done=True, done_reason="length", eval_count=1)])]
    client = reliable(
        OllamaChatCompletionClient(model="llama3.1:8b", host=ollama_server.url, options={"num_ctx": 8192}),
        recorder=ledger[1],
    )
    try:
        report = await HealthProbe({"ollama": client}, active=True).check()
    finally:
        await client.close()
    check = report.clients["ollama"].active_check
    assert check is not None
    assert (check.ok, check.method) == (True, "completion")
    [request] = ollama_server.requests
    assert request["options"] == {"num_ctx": 8192, "num_predict": 1}
    [row] = ledger_rows(ledger)
    assert (row.completion_tokens, dict(row.tags)) == (1, {"health_check": "true"})


class _Ticket(BaseModel):
    id: int
    priority: Literal["low", "high"]


@pytest.mark.parametrize("schema", [_Ticket, _Ticket.model_json_schema()], ids=["model", "json-schema"])
async def test_an_ollama_client_is_asked_for_the_validation_schema(
    schema: type[BaseModel] | dict[str, Any], ollama_server: _OllamaServer
) -> None:
    # "With a schema, that schema is what every call asks for": an Ollama client was sent no `format` at all, so the
    # model was not held to the schema, and each answer that did not match it was re-asked (another generation).
    ollama_server.replies = [(200, [_ollama_line('{"id": 1, "priority": "low"}', done=True, done_reason="stop")])]
    client = reliable(
        OllamaChatCompletionClient(model="llama3.1:8b", host=ollama_server.url),
        validation=ValidationPolicy(schema=schema),
        recorder=None,
    )
    try:
        result = await client.create([UserMessage(content="Ticket 1?", source="user")])
    finally:
        await client.close()
    assert json.loads(str(result.content)) == {"id": 1, "priority": "low"}
    sent = ollama_server.requests[0]["format"]
    assert sent["properties"].keys() == {"id", "priority"}
    assert sent["required"] == ["id", "priority"]


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
async def test_an_ollama_daemon_that_is_down_is_named_with_the_reason_in_the_error_row(
    streaming: bool, ledger: Ledger
) -> None:
    # Ollama's client says "Failed to connect to Ollama..." (create) or httpx's "All connection attempts failed"
    # (a stream) whatever host it was sent to and whatever happened: the row, the retry log and the final error
    # said no more. They name where the request went and why, as for the openai SDK's "Connection error.".
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = reliable(
        OllamaChatCompletionClient(model="llama3.1:8b", host=f"http://127.0.0.1:{port}"), recorder=ledger[1], retry=None
    )
    hello = [UserMessage(content="hi", source="user")]

    async def call() -> None:
        if streaming:
            async for _ in client.create_stream(hello):
                pass
        else:
            await client.create(hello)

    try:
        with pytest.raises((ConnectionError, httpx.ConnectError)):
            await call()
    finally:
        await client.close()
    [row] = ledger_rows(ledger)
    assert (row.outcome, row.error_kind) == ("error", "connection")
    assert f" (http://127.0.0.1:{port}: ConnectionRefusedError: " in (row.error_message or "")


# --------------------------------------------------------------------------------------------------
# A model client of the user's own
# --------------------------------------------------------------------------------------------------


class _OwnClient(ChatCompletionClient):
    """A model client of one's own: none of AutoGen's, answering "hello" with 100 + 20 tokens."""

    def __init__(self, model: str | None) -> None:
        if model is not None:
            self._raw_config = {"model": model}

    async def create(self, messages: Any, **kwargs: Any) -> CreateResult:
        usage = RequestUsage(prompt_tokens=100, completion_tokens=20)
        return CreateResult(finish_reason="stop", content="hello", usage=usage, cached=False)

    async def create_stream(self, messages: Any, **kwargs: Any) -> AsyncGenerator[str | CreateResult, None]:
        yield await self.create(messages)

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return RequestUsage(prompt_tokens=0, completion_tokens=0)

    def total_usage(self) -> RequestUsage:
        return RequestUsage(prompt_tokens=0, completion_tokens=0)

    def count_tokens(self, messages: Any, **kwargs: Any) -> int:
        return 0

    def remaining_tokens(self, messages: Any, **kwargs: Any) -> int:
        return 0

    @property
    def capabilities(self) -> Any:
        return self.model_info

    @property
    def model_info(self) -> ModelInfo:
        return UNKNOWN_MODEL_INFO


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (None, (None, None, None)),  # nothing to read the model from: unpriced, not $0
        # As docs/accounting.md says to name it: 100 x $0.15 + 20 x $0.60 per million tokens.
        ("gpt-4o-mini", ("openai", "gpt-4o-mini", 27_000)),
    ],
)
async def test_a_client_of_ones_own_is_priced_by_the_model_its_raw_config_names(
    ledger: Ledger, model: str | None, expected: tuple[str | None, str | None, int | None]
) -> None:
    client = reliable(_OwnClient(model), recorder=ledger[1])
    await client.create([UserMessage(content="hi", source="user")])
    (row,) = ledger_rows(ledger)
    assert (row.provider, row.model, row.cost_nanousd) == expected
    assert (row.prompt_tokens, row.completion_tokens, row.outcome) == (100, 20, "ok")
