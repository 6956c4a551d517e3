"""A real HTTP server that speaks the OpenAI Chat Completions wire protocol.

`FakeOpenAIServer` listens on ``127.0.0.1`` (a random free port), runs on a
background thread and answers ``POST /v1/chat/completions`` from a FIFO script
of `FakeReply` objects, so tests can drive the real ``openai`` SDK and AutoGen's
``OpenAIChatCompletionClient`` over real HTTP, including the SDK's own retry,
timeout and streaming code paths. Every request is recorded as a
`RecordedRequest` before it is answered.

Example:
    ```python
    import openai

    from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

    with FakeOpenAIServer() as server:
        server.enqueue(
            FakeReply.error(429, headers={"retry-after-ms": "10"}),
            FakeReply.text("Hello!", usage=FakeUsage(prompt_tokens=12, completion_tokens=3)),
        )
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url)
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
        assert completion.choices[0].message.content == "Hello!"
        assert server.request_count == 2  # the SDK retried the 429 by itself
    ```

Routes:
    * ``POST /v1/chat/completions``: the next scripted reply (see `FakeReply`),
      else the server's ``default``, else HTTP 400 explaining that the script
      ran out.
    * ``GET /v1/models`` and ``GET /v1/models/{id}``: the server's one model.
    * Anything else: HTTP 404 with an OpenAI-style error body.

The ``/v1`` prefix is optional on every route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
import re
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, Self, cast

_resolve_model: Callable[[str], str] | None
try:  # AutoGen's alias -> snapshot table is private; without it, names are echoed.
    from autogen_ext.models.openai._model_info import resolve_model as _resolve_model
except ImportError:  # pragma: no cover - depends on the AutoGen release
    _resolve_model = None

__all__ = ["FakeOpenAIServer", "FakeReply", "FakeUsage", "RecordedRequest", "ReplyFactory", "ReplyKind"]

ReplyKind = Literal["completion", "error", "reset", "malformed"]
"""What a `FakeReply` makes the server do; see the `FakeReply` constructors."""

_CHAT_PATHS: Final = frozenset({"/v1/chat/completions", "/chat/completions"})
_MODELS_PATHS: Final = frozenset({"/v1/models", "/models"})
_MODEL_PREFIXES: Final = ("/v1/models/", "/models/")
_SYSTEM_FINGERPRINT: Final = "fp_fake"
# Both the SDK and the server's own framing depend on these, so a reply may not override them.
_RESERVED_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "connection"})
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Whitespace stays attached to the following word so the pieces join back to the exact content.
_CONTENT_PIECE: Final = re.compile(r"\s*\S+|\s+")
_ARGUMENT_PIECE: Final = re.compile(r"\w+|\W+")
# How often serve_forever() checks for shutdown; this bounds how long stop() takes.
_POLL_INTERVAL: Final = 0.05
_MAX_LINE: Final = 65536

_DEFAULT_ERRORS: Final[Mapping[int, tuple[str, str, str | None]]] = {
    400: ("invalid_request_error", "Invalid request.", None),
    401: ("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    403: ("request_forbidden", "You are not allowed to access this resource.", None),
    404: ("invalid_request_error", "The requested resource does not exist.", None),
    408: ("invalid_request_error", "Request timed out.", None),
    409: ("invalid_request_error", "The request conflicts with the current state of the resource.", None),
    422: ("invalid_request_error", "The request could not be processed.", None),
    429: ("requests", "Rate limit reached for requests. Please try again later.", "rate_limit_exceeded"),
    500: ("server_error", "The server had an error while processing your request. Sorry about that!", None),
    502: ("server_error", "Bad gateway.", None),
    503: ("server_error", "The engine is currently overloaded, please try again later.", None),
    504: ("server_error", "Gateway timeout.", None),
}


def _default_error(status: int) -> tuple[str, str, str | None]:
    known = _DEFAULT_ERRORS.get(status)
    if known is not None:
        return known
    if status >= 500:
        return ("server_error", "The server had an error while processing your request.", None)
    return ("invalid_request_error", "The request was rejected.", None)


def _error_body(message: str, type_: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _dumps(obj: object) -> bytes:
    return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _frozen_headers(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(headers or {}))


def _snapshot_name(model: str) -> str:
    """The dated snapshot the real API reports for an alias, as AutoGen predicts it; else ``model``."""
    if _resolve_model is None:
        return model
    return _resolve_model(model)


def _check_non_negative(name: str, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True, slots=True)
class FakeUsage:
    """Token usage reported for one completion, in OpenAI's ``usage`` shape.

    Attributes:
        prompt_tokens: Tokens attributed to the request.
        completion_tokens: Tokens attributed to the reply.
        cached_tokens: Emitted as ``prompt_tokens_details.cached_tokens`` when given.
        reasoning_tokens: Emitted as ``completion_tokens_details.reasoning_tokens`` when given.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
            _check_non_negative(name, getattr(self, name))

    @property
    def total_tokens(self) -> int:
        """``prompt_tokens + completion_tokens``, as OpenAI reports it."""
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> dict[str, Any]:
        """Render the ``usage`` object exactly as the OpenAI API does.

        Returns:
            A JSON-ready dict; the ``*_details`` objects appear only when their counts were given.
        """
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request as the server received it.

    Attributes:
        method: The HTTP method, e.g. ``"POST"``.
        path: The request path without the query string, e.g. ``"/v1/chat/completions"``.
        headers: Request headers with lower-cased names (repeated headers joined with ``", "``).
        body: The body parsed as a JSON object, or None if it was empty, not JSON, or not an object.
        raw: The body bytes exactly as received.
        received_at: When the request finished arriving (UTC-aware).
        index: 0-based arrival order among *all* requests this server received since it was
            created or last `FakeOpenAIServer.reset`, i.e. the position in
            `FakeOpenAIServer.all_requests`. Equal to the position in
            `FakeOpenAIServer.requests` as long as only chat completions were requested.
    """

    method: str
    path: str
    headers: dict[str, str] = field(hash=False)
    body: dict[str, Any] | None = field(hash=False)
    raw: bytes
    received_at: datetime
    index: int

    @property
    def messages(self) -> list[dict[str, Any]]:
        """``body["messages"]``, or an empty list when the body has none."""
        messages = self.body.get("messages") if self.body is not None else None
        return cast("list[dict[str, Any]]", messages) if isinstance(messages, list) else []

    @property
    def stream(self) -> bool:
        """Whether the client asked for a streamed (server-sent events) response."""
        return self.body is not None and self.body.get("stream") is True

    @property
    def include_usage(self) -> bool:
        """Whether a streaming client asked for the final usage chunk (``stream_options.include_usage``)."""
        options = self.body.get("stream_options") if self.body is not None else None
        return isinstance(options, dict) and options.get("include_usage") is True

    @property
    def model(self) -> str | None:
        """The ``model`` the client asked for, if any."""
        model = self.body.get("model") if self.body is not None else None
        return model if isinstance(model, str) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeReply:
    """One scripted answer to a chat-completions request.

    Build replies with the classmethod constructors (`text`, `json`, `tool_calls`,
    `error`, `reset`, `malformed`) rather than the raw fields.

    Completion replies are rendered as a ``chat.completion`` object, or as
    ``chat.completion.chunk`` server-sent events when the request has
    ``"stream": true``. Streams start with a role-only chunk, then one chunk per
    word of content (whitespace kept, so the pieces join back to the exact
    content), then per tool call a chunk with its id and name followed by chunks
    with argument fragments, then a chunk carrying ``finish_reason``, then, only
    if the request set ``stream_options.include_usage``, a ``choices: []`` chunk
    with ``usage`` (earlier chunks then carry ``"usage": null``), then
    ``data: [DONE]``.

    Without an explicit ``usage`` the server computes a deterministic one:
    ``prompt_tokens`` is the number of whitespace-separated words in the string
    contents of the request's messages (text parts for list contents) plus one
    per message, at least 1; ``completion_tokens`` is the number of words in the
    reply content plus those in every tool call's name and arguments, at least 1.

    Attributes:
        kind: What the server does with this reply.
        content: Assistant message content (completion replies).
        calls: Tool calls as ``(name, arguments_json)`` pairs (completion replies).
        usage: Usage to report, or None to compute it as described above.
        finish_reason: The ``finish_reason`` to report.
        model: Model name to echo instead of the request's.
        delay: Seconds to wait before answering at all.
        chunk_delay: Seconds to wait between server-sent events.
        error_after_chunks: Streaming: send this many content/tool-call chunks
            after the role chunk, then an ``event: error`` SSE event. Non-streaming:
            answer HTTP 500 instead.
        disconnect_after_chunks: Streaming: send this many content/tool-call chunks
            after the role chunk, then reset the TCP connection. Non-streaming: send
            the headers and half the body, then reset.
        headers: Extra response headers.
        status: HTTP status for ``error`` and ``malformed`` replies.
        error_message: ``error.message`` for ``error`` replies.
        error_type: ``error.type`` for ``error`` replies.
        error_code: ``error.code`` for ``error`` replies.
        error_param: ``error.param`` for ``error`` replies.
        raw_body: The body sent verbatim by ``malformed`` replies.
        content_type: The ``Content-Type`` of ``malformed`` replies.
    """

    kind: ReplyKind = "completion"
    content: str | None = None
    calls: tuple[tuple[str, str], ...] = ()
    usage: FakeUsage | None = None
    finish_reason: str = "stop"
    model: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    error_after_chunks: int | None = None
    disconnect_after_chunks: int | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _frozen_headers(None), hash=False)
    status: int = 200
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_param: str | None = None
    raw_body: bytes = b""
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        for name in ("delay", "chunk_delay", "error_after_chunks", "disconnect_after_chunks"):
            _check_non_negative(name, getattr(self, name))
        if self.error_after_chunks is not None and self.disconnect_after_chunks is not None:
            raise ValueError("error_after_chunks and disconnect_after_chunks are mutually exclusive")
        if self.kind == "error" and not 400 <= self.status <= 599:
            raise ValueError(f"error replies need a 4xx or 5xx status, got {self.status}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be a valid HTTP status code, got {self.status}")
        for name, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is managed by the server and cannot be set per reply")
            if "\r" in value or "\n" in value or not value.isascii():
                raise ValueError(f"header {name!r} must have a single-line ASCII value, got {value!r}")
        # Freeze a caller-supplied dict so the reply stays immutable after construction.
        object.__setattr__(self, "headers", _frozen_headers(self.headers))

    @classmethod
    def text(
        cls,
        content: str,
        *,
        usage: FakeUsage | None = None,
        finish_reason: str = "stop",
        model: str | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        error_after_chunks: int | None = None,
        disconnect_after_chunks: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> FakeReply:
        """An assistant message with text content.

        Args:
            content: The message content.
            usage: Usage to report; computed from the words when None (see the class docs).
            finish_reason: The ``finish_reason`` to report.
            model: Model name to echo instead of the request's.
            delay: Seconds to wait before answering.
            chunk_delay: Seconds to wait between streamed events.
            error_after_chunks: Fail a stream with an SSE error event after this many chunks.
            disconnect_after_chunks: Reset a stream's connection after this many chunks.
            headers: Extra response headers.

        Returns:
            The reply.
        """
        return cls(
            content=content,
            usage=usage,
            finish_reason=finish_reason,
            model=model,
            delay=delay,
            chunk_delay=chunk_delay,
            error_after_chunks=error_after_chunks,
            disconnect_after_chunks=disconnect_after_chunks,
            headers=_frozen_headers(headers),
        )

    @classmethod
    def json(
        cls,
        obj: object,
        *,
        usage: FakeUsage | None = None,
        finish_reason: str = "stop",
        model: str | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        error_after_chunks: int | None = None,
        disconnect_after_chunks: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> FakeReply:
        """An assistant message whose content is ``json.dumps(obj)``.

        Args:
            obj: Any JSON-serialisable value.
            usage: See `text`.
            finish_reason: See `text`.
            model: See `text`.
            delay: See `text`.
            chunk_delay: See `text`.
            error_after_chunks: See `text`.
            disconnect_after_chunks: See `text`.
            headers: See `text`.

        Returns:
            The reply.
        """
        return cls.text(
            _json.dumps(obj),
            usage=usage,
            finish_reason=finish_reason,
            model=model,
            delay=delay,
            chunk_delay=chunk_delay,
            error_after_chunks=error_after_chunks,
            disconnect_after_chunks=disconnect_after_chunks,
            headers=headers,
        )

    @classmethod
    def tool_calls(
        cls,
        calls: Sequence[tuple[str, Mapping[str, Any] | str]],
        *,
        content: str | None = None,
        usage: FakeUsage | None = None,
        finish_reason: str = "tool_calls",
        model: str | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        error_after_chunks: int | None = None,
        disconnect_after_chunks: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> FakeReply:
        """An assistant message that calls tools.

        Tool-call ids are assigned by the server when the reply is served:
        ``call_1``, ``call_2``, ... in serving order across the server's lifetime
        (restarting after `FakeOpenAIServer.reset`), so ids never repeat within a
        conversation yet stay deterministic for a given script.

        Args:
            calls: ``(name, arguments)`` pairs; a mapping is sent as ``json.dumps(arguments)``,
                a string is sent verbatim (so it may be invalid JSON on purpose).
            content: Optional text sent alongside the calls.
            usage: See `text`.
            finish_reason: The ``finish_reason`` to report.
            model: See `text`.
            delay: See `text`.
            chunk_delay: See `text`.
            error_after_chunks: See `text`.
            disconnect_after_chunks: See `text`.
            headers: See `text`.

        Returns:
            The reply.

        Raises:
            ValueError: If ``calls`` is empty.
        """
        if not calls:
            raise ValueError("tool_calls() needs at least one (name, arguments) pair")
        encoded = tuple(
            (name, arguments if isinstance(arguments, str) else _json.dumps(dict(arguments)))
            for name, arguments in calls
        )
        return cls(
            content=content,
            calls=encoded,
            usage=usage,
            finish_reason=finish_reason,
            model=model,
            delay=delay,
            chunk_delay=chunk_delay,
            error_after_chunks=error_after_chunks,
            disconnect_after_chunks=disconnect_after_chunks,
            headers=_frozen_headers(headers),
        )

    @classmethod
    def error(
        cls,
        status: int,
        message: str | None = None,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> FakeReply:
        """An HTTP error with an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}``.

        Defaults follow the real API: 400 is ``invalid_request_error``, 401 adds code
        ``invalid_api_key``, 429 is type ``requests`` with code ``rate_limit_exceeded``,
        5xx is ``server_error``.

        Args:
            status: A 4xx or 5xx status code.
            message: ``error.message``; a status-appropriate default when None.
            type: ``error.type``; a status-appropriate default when None.
            code: ``error.code``; a status-appropriate default when None.
            param: ``error.param``.
            headers: Extra response headers, e.g. ``{"Retry-After": "1"}`` or ``{"retry-after-ms": "200"}``.
            delay: Seconds to wait before answering.

        Returns:
            The reply.
        """
        default_type, default_message, default_code = _default_error(status)
        return cls(
            kind="error",
            status=status,
            error_message=default_message if message is None else message,
            error_type=default_type if type is None else type,
            error_code=default_code if code is None else code,
            error_param=param,
            headers=_frozen_headers(headers),
            delay=delay,
        )

    @classmethod
    def reset(cls, delay: float = 0.0) -> FakeReply:
        """Abort the TCP connection with a RST, without sending a single byte.

        Args:
            delay: Seconds to wait before resetting.

        Returns:
            The reply.
        """
        return cls(kind="reset", delay=delay)

    @classmethod
    def malformed(
        cls,
        body: bytes = b"{not json",
        *,
        status: int = 200,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> FakeReply:
        """Send ``body`` verbatim (with a correct ``Content-Length``), whatever the request asked for.

        Args:
            body: The raw response body.
            status: The HTTP status.
            content_type: The ``Content-Type`` header.
            headers: Extra response headers.
            delay: Seconds to wait before answering.

        Returns:
            The reply.
        """
        return cls(
            kind="malformed",
            raw_body=body,
            status=status,
            content_type=content_type,
            headers=_frozen_headers(headers),
            delay=delay,
        )


ReplyFactory = Callable[[RecordedRequest], FakeReply]
"""A ``default`` that builds the reply from the request; it runs on the server thread."""


# --------------------------------------------------------------------------- rendering


def _count_words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _estimate_usage(request: RecordedRequest, reply: FakeReply) -> FakeUsage:
    prompt = 0
    for message in request.messages:
        prompt += 1
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            prompt += _count_words(content)
        elif isinstance(content, list):
            prompt += sum(
                _count_words(part.get("text"))
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
    completion = _count_words(reply.content)
    completion += sum(_count_words(name) + _count_words(arguments) for name, arguments in reply.calls)
    return FakeUsage(prompt_tokens=max(prompt, 1), completion_tokens=max(completion, 1))


@dataclass(frozen=True, slots=True)
class _Completion:
    """Everything needed to render one completion reply, resolved on the server."""

    id: str
    created: int
    model: str
    content: str | None
    calls: tuple[tuple[str, str, str], ...]  # (id, name, arguments)
    finish_reason: str
    usage: FakeUsage

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None, "annotations": []}
        if self.calls:
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
                for call_id, name, arguments in self.calls
            ]
        return message

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": self.message(), "logprobs": None, "finish_reason": self.finish_reason}],
            "usage": self.usage.to_openai(),
            "service_tier": "default",
            "system_fingerprint": _SYSTEM_FINGERPRINT,
        }

    def chunk(self, delta: dict[str, Any] | None, finish_reason: str | None, *, include_usage: bool) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": _SYSTEM_FINGERPRINT,
            "choices": [],
        }
        if delta is not None:
            chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        if include_usage:
            chunk["usage"] = None if delta is not None else self.usage.to_openai()
        return b"data: " + _dumps(chunk) + b"\n\n"

    def delta_chunks(self, *, include_usage: bool) -> list[bytes]:
        """The chunks that carry content or tool calls, i.e. the ones ``*_after_chunks`` count."""
        deltas: list[dict[str, Any]] = [{"content": piece} for piece in _CONTENT_PIECE.findall(self.content or "")]
        for index, (call_id, name, arguments) in enumerate(self.calls):
            deltas.append(
                {
                    "tool_calls": [
                        {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                    ]
                }
            )
            # Fragments like the real API's (`{"`, `city`, `":"`, ...) exercise the client's reassembly.
            deltas.extend(
                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                for piece in _ARGUMENT_PIECE.findall(arguments)
            )
        return [self.chunk(delta, None, include_usage=include_usage) for delta in deltas]

    def role_chunk(self, *, include_usage: bool) -> bytes:
        delta = {"role": "assistant", "content": "" if self.content is not None else None, "refusal": None}
        return self.chunk(delta, None, include_usage=include_usage)


def _sse_error(message: str) -> bytes:
    # The SDK raises openai.APIError for any SSE event whose JSON data has a truthy "error" key.
    return b"event: error\ndata: " + _dumps(_error_body(message, "server_error")) + b"\n\n"


def _chunk_frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _identity(data: bytes) -> bytes:
    return data


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# --------------------------------------------------------------------------- HTTP plumbing


class _BadRequestError(Exception):
    """The request could not be framed; answer 400 and close the connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY every response waits ~40 ms on Nagle + the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "FakeOpenAIServer"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean: the stdlib logs every request to stderr otherwise."""

    def do_GET(self) -> None:
        """Route a GET request."""
        self._dispatch()

    def do_POST(self) -> None:
        """Route a POST request."""
        self._dispatch()

    def do_PUT(self) -> None:
        """Route a PUT request."""
        self._dispatch()

    def do_PATCH(self) -> None:
        """Route a PATCH request."""
        self._dispatch()

    def do_DELETE(self) -> None:
        """Route a DELETE request."""
        self._dispatch()

    @property
    def _fake(self) -> FakeOpenAIServer:
        return cast("_FakeHTTPServer", self.server).owner

    # ---- routing

    def _dispatch(self) -> None:
        fake = self._fake
        framing_error: str | None = None
        try:
            raw = self._read_body()
        except (_BadRequestError, ValueError) as exc:
            raw, framing_error = b"", str(exc)
        path = self.path.split("?", 1)[0]
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else str(value)
        is_chat = path in _CHAT_PATHS
        request, reply, ordinal = fake._record(self.command, path, headers, raw, is_chat=is_chat)
        request_id = f"req_fake_{request.index}"

        if framing_error is not None:
            # The rest of the stream cannot be trusted to start at a request boundary.
            self.close_connection = True
            body = _error_body(f"Malformed request body: {framing_error}", "invalid_request_error")
            self._send_json(400, body, request_id=request_id)
        elif is_chat and self.command == "POST":
            self._serve_chat(request, reply, ordinal, request_id)
        elif path in _MODELS_PATHS and self.command == "GET":
            self._send_json(200, {"object": "list", "data": [fake._model_object()]}, request_id=request_id)
        elif path.startswith(_MODEL_PREFIXES) and self.command == "GET":
            model_id = path.split("/models/", 1)[1]
            if model_id == fake.model:
                self._send_json(200, fake._model_object(), request_id=request_id)
            else:
                message = f"The model '{model_id}' does not exist"
                body = _error_body(message, "invalid_request_error", code="model_not_found", param="model")
                self._send_json(404, body, request_id=request_id)
        else:
            body = _error_body(f"Invalid URL ({self.command} {path})", "invalid_request_error")
            self._send_json(404, body, request_id=request_id)

    def _serve_chat(self, request: RecordedRequest, reply: FakeReply | None, ordinal: int, request_id: str) -> None:
        fake = self._fake
        if request.body is None:
            message = "We could not parse the JSON body of your request. (FakeOpenAIServer expects a JSON object.)"
            self._send_json(400, _error_body(message, "invalid_request_error"), request_id=request_id)
            return
        if reply is None:
            try:
                reply = fake._default_reply(request, ordinal)
            except _ScriptError as exc:
                self._send_json(exc.status, exc.body, request_id=request_id, headers=exc.headers)
                return

        if reply.delay and fake._stopping.wait(reply.delay):
            self._abort()
            return
        if reply.kind == "reset":
            self._abort()
        elif reply.kind == "malformed":
            headers = {"Content-Type": reply.content_type, **reply.headers}
            self._send(reply.status, headers, reply.raw_body, request_id=request_id)
        elif reply.kind == "error":
            body = _error_body(
                reply.error_message or "", reply.error_type or "", code=reply.error_code, param=reply.error_param
            )
            self._send_json(reply.status, body, request_id=request_id, headers=reply.headers)
        elif request.stream:
            self._stream(fake._completion(request, reply, ordinal), reply, request, request_id)
        elif reply.error_after_chunks is not None:
            message = "FakeOpenAIServer: simulated server error (error_after_chunks on a non-streaming request)"
            self._send_json(500, _error_body(message, "server_error"), request_id=request_id, headers=reply.headers)
        else:
            completion = fake._completion(request, reply, ordinal)
            payload = _dumps(completion.body())
            if reply.disconnect_after_chunks is not None:
                head = self._head(200, {"Content-Type": "application/json", **reply.headers}, request_id, len(payload))
                self._write(head + payload[: len(payload) // 2])
                self._abort()
            else:
                self._send(200, {"Content-Type": "application/json", **reply.headers}, payload, request_id=request_id)

    def _stream(self, completion: _Completion, reply: FakeReply, request: RecordedRequest, request_id: str) -> None:
        include_usage = request.include_usage
        events = [completion.role_chunk(include_usage=include_usage)]
        deltas = completion.delta_chunks(include_usage=include_usage)
        reset_at_end = False
        if reply.error_after_chunks is not None:
            events += deltas[: reply.error_after_chunks]
            events.append(_sse_error(f"FakeOpenAIServer: simulated error after {reply.error_after_chunks} chunks"))
        elif reply.disconnect_after_chunks is not None:
            events += deltas[: reply.disconnect_after_chunks]
            reset_at_end = True
        else:
            events += deltas
            events.append(completion.chunk({}, completion.finish_reason, include_usage=include_usage))
            if include_usage:
                events.append(completion.chunk(None, None, include_usage=True))
            events.append(b"data: [DONE]\n\n")

        # An HTTP/1.0 client cannot take chunked encoding; the end of the body is then the end of the connection.
        chunked = self.request_version != "HTTP/1.0"
        if not chunked:
            self.close_connection = True
        frame: Callable[[bytes], bytes] = _chunk_frame if chunked else _identity
        ending = b"" if reset_at_end or not chunked else b"0\r\n\r\n"
        headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", **reply.headers}
        head = self._head(200, headers, request_id, None, chunked=chunked)

        if not reply.chunk_delay:
            ok = self._write(head + b"".join(frame(event) for event in events) + ending)
        else:
            # The terminator rides with the last event: the SDK waits up to 100 ms for it after [DONE].
            ok = self._write(head + frame(events[0]) + (ending if len(events) == 1 else b""))
            stopping = self._fake._stopping
            for position, event in enumerate(events[1:], start=2):
                if not ok or stopping.wait(reply.chunk_delay):
                    self._abort()
                    return
                ok = self._write(frame(event) + (ending if position == len(events) else b""))
        if reset_at_end or not ok:
            self._abort()

    # ---- I/O helpers

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(_MAX_LINE + 1)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                        pass  # trailers carry nothing the fake cares about
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(_MAX_LINE + 1)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        size = int(length)
        if size < 0:
            raise _BadRequestError("negative Content-Length")
        body = self.rfile.read(size)
        if len(body) != size:
            raise _BadRequestError("request body shorter than its Content-Length")
        return body

    def _head(
        self,
        status: int,
        headers: Mapping[str, str],
        request_id: str,
        content_length: int | None,
        *,
        chunked: bool = False,
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {_reason(status)}",
            f"Date: {self.date_time_string()}",
            f"Server: {self.server_version}",
            f"x-request-id: {request_id}",
        ]
        lines += (f"{name}: {value}" for name, value in headers.items())
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}")
        elif chunked:
            lines.append("Transfer-Encoding: chunked")
        lines.append(f"Connection: {'close' if self.close_connection else 'keep-alive'}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, headers: Mapping[str, str], body: bytes, *, request_id: str) -> None:
        # Headers and body in one write: one segment on the wire, nothing for Nagle to hold back.
        self._write(self._head(status, headers, request_id, len(body)) + body)

    def _send_json(
        self, status: int, obj: object, *, request_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, {"Content-Type": "application/json", **(headers or {})}, _dumps(obj), request_id=request_id)

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
        except OSError:
            # The client went away (e.g. it timed out); nothing left to answer.
            self.close_connection = True
            return False
        return True

    def _abort(self) -> None:
        """Drop the connection with a TCP RST instead of an orderly FIN."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile (a makefile() object) holds a reference that would postpone the real close until finish().
        self.rfile.close()
        self.connection.close()


class _FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive connections would otherwise make server_close() wait for their threads forever.
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: FakeOpenAIServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() looks up the host's FQDN, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        self.owner._connection_opened()
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        # Clients vanishing mid-request is routine here (timeouts, resets); only real bugs deserve a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake every handler blocked on an idle keep-alive connection so its thread can exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _ScriptError(Exception):
    """The server cannot produce a reply from its script; carries the HTTP error to answer with."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body
        self.headers: Mapping[str, str] = headers or {}


# --------------------------------------------------------------------------- public server


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP/1.1 server on 127.0.0.1, scripted with `FakeReply` objects.

    The server runs on a daemon thread, so it serves sync and async clients alike.
    Use it as a context manager (``with`` or ``async with``), or call `start` and
    `stop` yourself.

    Each ``POST /v1/chat/completions`` consumes the next scripted reply (FIFO, see
    `enqueue`). When the script is empty the ``default`` is used: a `FakeReply`,
    or a callable that receives the `RecordedRequest` and returns one (if it
    raises, the client gets HTTP 500 with ``x-should-retry: false`` so the SDK
    does not retry). With no default, the server answers HTTP 400 (which the SDK
    does not retry) with a message saying the script ran out.

    Requests whose body is not a JSON object are answered with HTTP 400 and do not
    consume a scripted reply.

    Completions report the model as the real API does: an alias comes back as its
    dated snapshot (``gpt-4o-mini`` as ``gpt-4o-mini-2024-07-18``, the snapshot
    AutoGen's client expects; it warns "Resolved model mismatch" otherwise). Other
    names are echoed. ``model_aliases`` and a reply's ``model`` override this.

    Attributes:
        model: The model listed by ``/v1/models`` and echoed when a request names none.
        default: The reply used when the script is empty; may be reassigned at any time.
        model_aliases: Requested model name -> model name reported in responses.
    """

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        default: FakeReply | ReplyFactory | None = None,
        *,
        model_aliases: Mapping[str, str] | None = None,
        port: int = 0,
    ) -> None:
        """Create a stopped server.

        Args:
            model: The model listed by ``/v1/models`` and echoed when a request names none.
            default: The reply used when the script is empty (see the class docs).
            model_aliases: Requested model name -> model name to report in responses, e.g.
                ``{"gpt-4o-mini": "gpt-4o-mini-2024-07-18"}`` as the real API does.
            port: Port to listen on; 0 picks a free one.
        """
        self.model = model
        self.default = default
        self.model_aliases: Mapping[str, str] = dict(model_aliases or {})
        self._port = port
        self._lock = threading.Lock()
        self._queue: deque[FakeReply] = deque()
        self._requests: list[RecordedRequest] = []
        self._all_requests: list[RecordedRequest] = []
        self._tool_calls_served = 0
        self._connections_opened = 0
        self._created = int(time.time())
        self._stopping = threading.Event()
        self._httpd: _FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> Self:
        """Bind the port and start serving on a background thread.

        The port is bound and listening when this returns. A stopped server may
        be started again (on a new port unless one was given); its script and
        recorded requests are kept.

        Returns:
            The server itself, so ``server = FakeOpenAIServer().start()`` works.

        Raises:
            RuntimeError: If the server is already running.
        """
        with self._lock:
            if self._httpd is not None:
                raise RuntimeError("FakeOpenAIServer is already running")
            self._stopping = threading.Event()
            httpd = _FakeHTTPServer(("127.0.0.1", self._port), self)
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name=f"FakeOpenAIServer:{httpd.server_port}",
                daemon=True,
            )
            self._httpd, self._thread = httpd, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket and every open connection.

        Returns within about 50 ms even when clients hold idle keep-alive
        connections or a reply is sleeping on ``delay``. Calling it again, or on a
        server that never started, does nothing.
        """
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # stop() blocks for up to one poll interval; keep that off the event loop.
        await asyncio.to_thread(self.stop)

    @property
    def running(self) -> bool:
        """Whether the server is currently serving."""
        return self._httpd is not None

    @property
    def port(self) -> int:
        """The bound TCP port.

        Raises:
            RuntimeError: If the server is not running.
        """
        httpd = self._httpd
        if httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() or use it as a context manager")
        return httpd.server_port

    @property
    def base_url(self) -> str:
        """The URL to pass as ``base_url`` to OpenAI clients, e.g. ``"http://127.0.0.1:54321/v1"``.

        Raises:
            RuntimeError: If the server is not running.
        """
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- script and records

    def enqueue(self, *replies: FakeReply) -> None:
        """Append replies to the script; each chat-completions request consumes the oldest one.

        Args:
            *replies: The replies, in the order they should be served.

        Raises:
            TypeError: If something other than a `FakeReply` is passed.
        """
        for reply in replies:
            if not isinstance(reply, FakeReply):
                raise TypeError(f"enqueue() takes FakeReply objects, got {type(reply).__name__}")
        with self._lock:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every chat-completions request received, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def all_requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received on any path (models, unknown paths too), oldest first."""
        with self._lock:
            return list(self._all_requests)

    @property
    def request_count(self) -> int:
        """How many chat-completions requests were received."""
        with self._lock:
            return len(self._requests)

    @property
    def connection_count(self) -> int:
        """How many TCP connections clients have opened; stays at 1 for sequential keep-alive requests."""
        with self._lock:
            return self._connections_opened

    @property
    def pending(self) -> int:
        """How many scripted replies have not been served yet."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget the script and every recorded request, and restart ids, indices and counters from zero."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._all_requests.clear()
            self._tool_calls_served = 0
            self._connections_opened = 0

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"<FakeOpenAIServer {where} model={self.model!r} pending={self.pending} requests={self.request_count}>"

    # ---- used by the request handler

    def _connection_opened(self) -> None:
        with self._lock:
            self._connections_opened += 1

    def _record(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, *, is_chat: bool
    ) -> tuple[RecordedRequest, FakeReply | None, int]:
        """Record a request and, for a well-formed chat completion, take the next scripted reply.

        Both happen under one lock so concurrent requests get replies in arrival order.

        Returns:
            The recorded request, the scripted reply (None if none applies), and the 1-based
            number of this chat-completions request (0 for other requests).
        """
        try:
            parsed = _json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        body = cast("dict[str, Any]", parsed) if isinstance(parsed, dict) else None
        with self._lock:
            request = RecordedRequest(
                method=method,
                path=path,
                headers=headers,
                body=body,
                raw=raw,
                received_at=datetime.now(UTC),
                index=len(self._all_requests),
            )
            self._all_requests.append(request)
            if not is_chat or method != "POST":
                return request, None, 0
            self._requests.append(request)
            reply = self._queue.popleft() if body is not None and self._queue else None
            return request, reply, len(self._requests)

    def _default_reply(self, request: RecordedRequest, ordinal: int) -> FakeReply:
        default = self.default
        if isinstance(default, FakeReply):
            return default
        if default is None:
            message = (
                f"FakeOpenAIServer: no scripted reply left for request #{ordinal}; "
                "script one with enqueue(...) or pass default=..."
            )
            raise _ScriptError(400, _error_body(message, "invalid_request_error", code="no_scripted_reply"))
        # A failing factory is a bug in the test, not something for the SDK to retry.
        no_retry = {"x-should-retry": "false"}
        try:
            reply = default(request)
        except Exception as exc:
            message = f"FakeOpenAIServer: default reply factory raised {type(exc).__name__}: {exc}"
            raise _ScriptError(500, _error_body(message, "server_error"), no_retry) from exc
        if not isinstance(reply, FakeReply):
            message = f"FakeOpenAIServer: default reply factory returned {type(reply).__name__}, not FakeReply"
            raise _ScriptError(500, _error_body(message, "server_error"), no_retry)
        return reply

    def _completion(self, request: RecordedRequest, reply: FakeReply, ordinal: int) -> _Completion:
        with self._lock:
            first = self._tool_calls_served + 1
            self._tool_calls_served += len(reply.calls)
        calls = tuple((f"call_{first + i}", name, arguments) for i, (name, arguments) in enumerate(reply.calls))
        requested = request.model or self.model
        return _Completion(
            id=f"chatcmpl-fake-{ordinal}",
            created=int(time.time()),
            model=reply.model or self.model_aliases.get(requested) or _snapshot_name(requested),
            content=reply.content,
            calls=calls,
            finish_reason=reply.finish_reason,
            usage=reply.usage or _estimate_usage(request, reply),
        )

    def _model_object(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": self._created, "owned_by": "fake"}
