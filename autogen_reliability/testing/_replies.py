"""What a test scripts and what it reads back: `FakeReply`, `FakeUsage`, `RecordedRequest`.

`FakeReply` objects are the script of a `FakeOpenAIServer` (see its constructors:
`FakeReply.text`, `FakeReply.json`, `FakeReply.tool_calls`, `FakeReply.error`,
`FakeReply.reset`, `FakeReply.malformed`); `RecordedRequest` is what the server
kept of each request, and what a `ReplyFactory` builds its reply from. Plain,
frozen values: how they become bytes on the wire is `._wire`'s job, and how they
are served is `._http`'s.
"""

from __future__ import annotations

import json as _json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal, cast, get_args

from .._errors import is_finite, shown_number
from .._redaction import masked_headers, masked_repr

__all__ = ["FakeReply", "FakeUsage", "RecordedRequest", "ReplyFactory", "ReplyKind", "describe_message"]

ReplyKind = Literal["completion", "error", "reset", "malformed"]
"""What a `FakeReply` makes the server do; see the `FakeReply` constructors."""

# Both the SDK and the server's own framing depend on these, so a reply may not override them.
_RESERVED_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "connection"})
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# No Content (204) and Not Modified (304) end at their headers; 1xx statuses are refused altogether.
_NO_BODY_STATUSES: Final = frozenset({204, 304})

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


def _frozen_headers(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    """The headers of a reply, checked, as a read-only mapping."""
    if headers is None:
        headers = {}
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of names to values, got {headers!r:.80}")
    for name, value in headers.items():
        if not isinstance(name, str):
            raise TypeError(f"header names are strings, got {name!r}")
        if not isinstance(value, str):
            # As on the wire, and as faults.status_error(headers=) takes them; a number is the likely slip.
            example = repr(str(value)) if isinstance(value, int | float) else "'1'"
            raise TypeError(f"header {name!r} must have a string value such as {example}, got {value!r}")
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is managed by the server and cannot be set per reply")
        if "\r" in value or "\n" in value or not value.isascii():
            raise ValueError(f"header {name!r} must have a single-line ASCII value, got {value!r}")
    return MappingProxyType(dict(headers))


def _check_status(status: object) -> None:
    # Checked before it is compared or looked up: "429" would otherwise fail inside, as a TypeError about >=.
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"status must be an int HTTP status such as 429, got {status!r}")


def _check_count(name: str, value: object, *, optional: bool = False) -> None:
    """A count (tokens, chunks): an int >= 0, or None where ``optional``; a float or a bool is a slip."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int{' or None' if optional else ''}, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_text(name: str, value: object, *, optional: bool = False) -> None:
    if not (isinstance(value, str) or (optional and value is None)):
        raise TypeError(f"{name} must be a string{' or None' if optional else ''}, got {value!r:.80}")


def is_wait(value: object) -> bool:
    """Whether ``value`` is a wait the harness can take: seconds >= 0 (not a bool), ``math.inf`` for no end."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and (is_finite(value) or value == math.inf)
        and value >= 0
    )


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not is_wait(value):
        raise ValueError(
            f"{name} must be >= 0 seconds (math.inf: until the server stops or is reset), got {shown_number(value)}"
        )


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True, slots=True)
class FakeUsage:
    """Token usage reported for one completion, in OpenAI's ``usage`` shape.

    Attributes:
        prompt_tokens: Tokens attributed to the request.
        completion_tokens: Tokens attributed to the reply.
        cached_tokens: Emitted as ``prompt_tokens_details.cached_tokens`` when given.
        reasoning_tokens: Emitted as ``completion_tokens_details.reasoning_tokens`` when given.
        cache_write_tokens: Of ``prompt_tokens``, those written to the prompt cache; emitted as
            ``prompt_tokens_details.cache_write_tokens`` when given.
        input_audio_tokens: Of ``prompt_tokens``, those of audio; emitted as
            ``prompt_tokens_details.audio_tokens`` when given.
        output_audio_tokens: Of ``completion_tokens``, those of audio; emitted as
            ``completion_tokens_details.audio_tokens`` when given.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_tokens: int | None = None
    input_audio_tokens: int | None = None
    output_audio_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "completion_tokens"):
            _check_count(name, getattr(self, name))
        for name in (
            "cached_tokens",
            "reasoning_tokens",
            "cache_write_tokens",
            "input_audio_tokens",
            "output_audio_tokens",
        ):
            _check_count(name, getattr(self, name), optional=True)

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
        prompt = _details(
            cached_tokens=self.cached_tokens,
            cache_write_tokens=self.cache_write_tokens,
            audio_tokens=self.input_audio_tokens,
        )
        completion = _details(reasoning_tokens=self.reasoning_tokens, audio_tokens=self.output_audio_tokens)
        if prompt:
            usage["prompt_tokens_details"] = prompt
        if completion:
            usage["completion_tokens_details"] = completion
        return usage


def _details(**counts: int | None) -> dict[str, int]:
    """A ``*_tokens_details`` object: the counts that were given, in OpenAI's field names."""
    return {name: count for name, count in counts.items() if count is not None}


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

    def __repr__(self) -> str:
        # A failed assertion on a request prints its repr: the key a client sent stays out of the test's output.
        return masked_repr(self, headers=masked_headers(self.headers))

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

    def describe(self) -> str:
        """The request as a short multi-line text: one line per message (cut), then the tools offered.

        What a test failure shows of a request nobody scripted an answer for.
        """
        lines = [f"  {number}. {describe_message(message)}" for number, message in enumerate(self.messages, 1)]
        if not lines and self.body is None:
            lines = [f"  (the body is not a JSON object: {self.raw[:80]!r})"]
        elif not lines:
            lines = ["  (no messages)"]
        tools = self.body.get("tools") if self.body is not None else None
        if isinstance(tools, list) and tools:
            names = [str(tool.get("function", {}).get("name", "?")) for tool in tools if isinstance(tool, dict)]
            lines.append(f"  tools offered: {', '.join(names)}")
        return "\n".join(lines)


# How much of each message `RecordedRequest.describe` shows: enough to recognise the turn.
_DESCRIBED_CHARACTERS: Final = 200


def describe_message(message: object) -> str:
    """One chat message of a request body in a line: its role and its text (cut), or its tool calls."""
    if not isinstance(message, dict):
        return repr(message)[:_DESCRIBED_CHARACTERS]
    content = message.get("content")
    if isinstance(content, list):  # parts: the text ones joined, the others named
        content = " ".join(
            str(part.get("text", "")) if isinstance(part, dict) and part.get("type") == "text" else f"[{part!r:.20}]"
            for part in content
        )
    text = "" if content is None else str(content)
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        names = [str(call.get("function", {}).get("name", "?")) for call in calls if isinstance(call, dict)]
        text = f"{text} [tool calls: {', '.join(names)}]".strip()
    if len(text) > _DESCRIBED_CHARACTERS:
        text = text[: _DESCRIBED_CHARACTERS - 1] + "\u2026"
    return f"{message.get('role', '?')}: {text!r}" if text else f"{message.get('role', '?')}: (no content)"


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
        service_tier: The ``service_tier`` the completion (every chunk of a stream) reports, as OpenAI's
            names the tier that served the request: ``"flex"``, ``"priority"``, ... None: the request's
            ``service_tier``, ``"default"`` when it asked for none or for ``"auto"``.
        delay: Seconds to wait before answering at all; ``math.inf`` waits until the server
            stops or is reset (`FakeOpenAIServer.reset`), which reset the connection.
        chunk_delay: Seconds to wait between server-sent events; ``math.inf`` stalls the
            stream after its first event until the server stops or is reset.
        error_after_chunks: Streaming: send this many content/tool-call chunks
            after the role chunk, then an ``event: error`` SSE event. Non-streaming:
            answer HTTP 500 instead.
        disconnect_after_chunks: Streaming: send this many content/tool-call chunks
            after the role chunk, then reset the TCP connection. Non-streaming: send
            the headers and half the body, then reset. A ``malformed`` reply (any
            count): send its body, then reset before the response ends (how a cassette
            replays a body the provider cut off).
        hold_after_chunks: Streaming: send this many content/tool-call chunks after
            the role chunk (fewer if the stream has fewer), then wait until the test
            calls `FakeOpenAIServer.release`; then send the rest. An answer that is
            not streamed waits for `release` before it is sent at all. A test can so look at what
            a consumer has seen of a stream before the rest exists, without timing
            anything. Stopping the server resets a held connection.
        headers: Extra response headers. One the server sends of its own (``Content-Type``,
            ``Cache-Control``, ``Date``, ``Server``, ``x-request-id``) is replaced by the reply's,
            whatever the case of its name, not sent twice.
        status: HTTP status for ``error`` (400 to 599) and ``malformed`` (200 to 599) replies.
        error_message: ``error.message`` for ``error`` replies.
        error_type: ``error.type`` for ``error`` replies.
        error_code: ``error.code`` for ``error`` replies.
        error_param: ``error.param`` for ``error`` replies.
        raw_body: The body sent verbatim by ``malformed`` replies (empty with status 204 or 304).
        content_type: The ``Content-Type`` of ``malformed`` replies (a ``content-type`` in
            ``headers`` wins).
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
    hold_after_chunks: int | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _frozen_headers(None), hash=False)
    status: int = 200
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_param: str | None = None
    raw_body: bytes = b""
    content_type: str = "application/json"
    service_tier: str | None = None

    def __post_init__(self) -> None:
        # Checked here, not where the server renders the reply: there a wrong type is an HTTP 500 or a hang.
        if self.kind not in get_args(ReplyKind):
            kinds = ", ".join(repr(kind) for kind in get_args(ReplyKind))
            raise ValueError(f"kind must be one of {kinds}, got {self.kind!r}")
        _check_text("content", self.content, optional=True)
        if not isinstance(self.calls, tuple) or not all(
            isinstance(call, tuple) and len(call) == 2 and all(isinstance(part, str) for part in call)
            for call in self.calls
        ):
            raise TypeError(
                "calls must be a tuple of (name, arguments_json) pairs of strings (FakeReply.tool_calls "
                f"makes them from a list), got {self.calls!r:.80}"
            )
        if not (self.usage is None or isinstance(self.usage, FakeUsage)):
            raise TypeError(f"usage must be a FakeUsage or None, got {self.usage!r:.80}")
        _check_text("finish_reason", self.finish_reason)
        for name in ("model", "service_tier", "error_message", "error_type", "error_code", "error_param"):
            _check_text(name, getattr(self, name), optional=True)
        if not isinstance(self.raw_body, bytes):
            raise TypeError(
                f"raw_body (the body of malformed()) must be bytes such as b'{{}}', got {self.raw_body!r:.80}"
            )
        _check_text("content_type", self.content_type)
        if "\r" in self.content_type or "\n" in self.content_type or not self.content_type.isascii():
            raise ValueError(f"content_type must be a single-line ASCII value, got {self.content_type!r}")
        for name in ("delay", "chunk_delay"):
            _check_seconds(name, getattr(self, name))
        for name in ("error_after_chunks", "disconnect_after_chunks", "hold_after_chunks"):
            _check_count(name, getattr(self, name), optional=True)
        if self.error_after_chunks is not None and self.disconnect_after_chunks is not None:
            raise ValueError("error_after_chunks and disconnect_after_chunks are mutually exclusive")
        _check_status(self.status)
        if self.kind == "error" and not 400 <= self.status <= 599:
            raise ValueError(f"error replies need a 4xx or 5xx status, got {self.status}")
        if not 200 <= self.status <= 599:
            # A 1xx is not an answer: the client reads it as an interim response and waits for the real one.
            raise ValueError(f"status must be an HTTP status from 200 to 599, got {self.status}")
        if self.kind == "malformed" and self.status in _NO_BODY_STATUSES and self.raw_body:
            # The client reads no body after these: the bytes would be taken as the start of the next response.
            raise ValueError(
                f"a malformed() reply with status {self.status} cannot have a body (HTTP allows none; the client "
                f"would read it as the next response on the connection), got {len(self.raw_body)} bytes; pass b''"
            )
        # Checked, and a caller-supplied dict frozen so that the reply stays immutable after construction.
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
        hold_after_chunks: int | None = None,
        headers: Mapping[str, str] | None = None,
        service_tier: str | None = None,
    ) -> FakeReply:
        """An assistant message with text content.

        Args:
            content: The message content.
            usage: Usage to report; computed from the words when None (see the class docs).
            finish_reason: The ``finish_reason`` to report.
            model: Model name to echo instead of the request's.
            delay: Seconds to wait before answering; ``math.inf``: until the server stops or is reset.
            chunk_delay: Seconds to wait between streamed events.
            error_after_chunks: Fail a stream with an SSE error event after this many chunks.
            disconnect_after_chunks: Reset a stream's connection after this many chunks.
            hold_after_chunks: Wait for `FakeOpenAIServer.release` after this many chunks.
            headers: Extra response headers; one named like a header the server sends of its own
                (``content-type``, in any case) replaces it.
            service_tier: The tier the answer says served it (``"flex"``, ``"priority"``, ...); None: the
                request's, ``"default"`` for none or ``"auto"``.

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
            hold_after_chunks=hold_after_chunks,
            headers=_frozen_headers(headers),
            service_tier=service_tier,
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
        hold_after_chunks: int | None = None,
        headers: Mapping[str, str] | None = None,
        service_tier: str | None = None,
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
            hold_after_chunks: See `text`.
            headers: See `text`.
            service_tier: See `text`.

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
            hold_after_chunks=hold_after_chunks,
            headers=headers,
            service_tier=service_tier,
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
        hold_after_chunks: int | None = None,
        headers: Mapping[str, str] | None = None,
        service_tier: str | None = None,
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
            hold_after_chunks: See `text`.
            headers: See `text`.
            service_tier: See `text`.

        Returns:
            The reply.

        Raises:
            ValueError: If ``calls`` is empty.
            TypeError: If an item is not a ``(name, arguments)`` pair of a string and a mapping or string.
        """
        if not calls:
            raise ValueError("tool_calls() needs at least one (name, arguments) pair")
        for call in calls:
            if not (
                isinstance(call, tuple | list)
                and len(call) == 2
                and isinstance(call[0], str)
                and isinstance(call[1], str | Mapping)
            ):
                raise TypeError(
                    f"tool_calls() takes (name, arguments) pairs such as [('add', {{'a': 1}})], got {call!r}"
                )
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
            hold_after_chunks=hold_after_chunks,
            headers=_frozen_headers(headers),
            service_tier=service_tier,
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
            headers: Extra response headers, e.g. ``{"Retry-After": "1"}`` or ``{"retry-after-ms": "200"}``
                (values are strings, as on the wire).
            delay: Seconds to wait before answering; ``math.inf``: until the server stops or is reset.

        Returns:
            The reply.

        Raises:
            TypeError: If ``status`` is not an int, or a header value is not a string.
            ValueError: If ``status`` is not a 4xx or 5xx.
        """
        _check_status(status)
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
            body: The raw response body; empty with status 204 or 304, which HTTP gives no body.
            status: The HTTP status, from 200 to 599.
            content_type: The ``Content-Type`` header.
            headers: Extra response headers; one named like a header the server sends of its own
                (``content-type``, in any case) replaces it.
            delay: Seconds to wait before answering; ``math.inf``: until the server stops or is reset.

        Returns:
            The reply.

        Raises:
            TypeError: If ``body`` is not bytes, or ``status`` not an int.
            ValueError: If ``status`` is not from 200 to 599, or is 204 or 304 with a ``body``.
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
