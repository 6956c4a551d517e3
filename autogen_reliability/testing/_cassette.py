"""Cassettes: a test's HTTP exchanges with a real provider, recorded once and replayed through `FakeOpenAIServer`.

The file (JSON, one per test; see `dump_cassette`)::

    {
      "version": 1,
      "base_url": "https://api.openai.com/v1",
      "interactions": [
        {"request": {"method": "POST", "url": ".../chat/completions", "headers": {...}, "body": {...}},
         "response": {"status": 429, "headers": {"retry-after-ms": "20", ...}, "body": {"error": {...}}}},
        {"request": {...}, "response": {"status": 200, "headers": {...}, "body": {...}}},
        {"request": {...}, "response": {"status": 200, "headers": {...}, "stream": [{"data": {...}}, ...]}},
        {"request": {...}, "error": "ConnectError: ..."}
      ]
    }

Bodies are kept as parsed JSON (a diff of two recordings shows the fields that
changed, one per line), a streamed answer as its server-sent events, one per
item, as they arrived (``{"data": {...}}``, ``{"event": "error", "data": ...}``,
``{"data": "[DONE]"}``), and a transport failure as ``error``.

Recording (`Recorder`) happens at the SDK's transport, as the usage tap does
(``providers/_usage_tap.py``): while a test records, ``httpx2.HTTPTransport`` and
``httpx2.AsyncHTTPTransport`` (what the openai SDK sends through, default
client or the user's own ``http_client``) hand each request under the
cassette's base URL to the real transport and its response body back to the
SDK chunk by chunk, as it arrives, keeping a copy. Only an allow-list of headers
is kept (so no credential survives under a name nobody thought of); the values
of the credential headers (the API key, organisation and project ids) are
replaced in every body and URL by ``[REDACTED]``, as is anything shaped like a
key in a response (providers echo keys in their 401 messages).

Replaying (`Replayer`) is a `FakeOpenAIServer` ``default``: each chat-completions
request is answered with the first exchange not played yet whose method, path
(relative to the base URL) and JSON body are equal to the request's; the
recorded status, headers and body go back verbatim, a stream as its events, a
transport failure as a connection reset. A request that matches nothing gets
HTTP 400 (``code: cassette_mismatch``; the SDK does not retry it) and the test
fails with a diff against the next exchange the cassette expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from ._replies import FakeReply, RecordedRequest

if TYPE_CHECKING:
    from ._server import FakeOpenAIServer

__all__ = [
    "CASSETTE_VERSION",
    "ENDED_EARLY",
    "CassetteError",
    "LLMCassette",
    "Replayer",
    "Scrubber",
    "body_value",
    "dump_cassette",
    "kept_request_headers",
    "kept_response_headers",
    "load_cassette",
    "sse_events",
]

CASSETTE_VERSION: Final = 1

# Request headers worth reading in a cassette; everything else (the key, user agent, platform) is dropped.
_REQUEST_HEADERS: Final = frozenset(
    {"content-type", "accept", "openai-beta", "anthropic-version", "anthropic-beta", "x-stainless-retry-count"}
)
# Response headers a client acts on (retry timing, rate limits) or that say what answered; nothing else is kept.
_RESPONSE_HEADERS: Final = frozenset(
    {
        "content-type",
        "retry-after",
        "retry-after-ms",
        "x-ms-retry-after-ms",  # Azure's name for retry-after-ms, which the wrapper reads too
        "x-should-retry",
        "openai-model",
        "openai-version",
    }
)
_RESPONSE_HEADER_PREFIXES: Final = ("x-ratelimit-", "anthropic-ratelimit-")
# Headers whose values are credentials or account ids: scrubbed from every body and URL of the cassette.
_CREDENTIAL_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
    }
)
_AUTH_SCHEME: Final = re.compile(r"^(?:bearer|basic|token)\s+", re.IGNORECASE)
_MIN_SECRET: Final = 6  # shorter values are placeholders ("EMPTY"), not secrets worth replacing everywhere
_REDACTED: Final = "[REDACTED]"
_NO_LIMIT: Final = 1 << 62
_SSE_LINE_END: Final = re.compile(r"\r\n|\r|\n")
# How a response's "truncated" note begins when the provider's connection failed mid-body (the replay fails too).
ENDED_EARLY: Final = "the body ended early"


# Half an emoji, as an answer cut inside one holds: JSON's "\\ud83d" escape, which UTF-8 cannot hold as a character.
_LONE_SURROGATE: Final = re.compile("([\ud800-\udfff])")


def _escaped_surrogates(json_text: str) -> str:
    """JSON text with each lone surrogate written as its escape, as the provider sent it: then it can be UTF-8."""
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", json_text)


class CassetteError(Exception):
    """A cassette file that cannot be read: missing, not JSON, or not in this format."""


# --------------------------------------------------------------------------- the file


def load_cassette(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """Read a cassette file.

    Args:
        path: The file.

    Returns:
        ``(base_url, interactions)``.

    Raises:
        CassetteError: The file is missing, not JSON, or not a version-1 cassette.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CassetteError(f"no cassette at {path}") from None
    except (OSError, ValueError) as exc:
        raise CassetteError(f"cannot read the cassette {path}: {exc}") from None
    if (
        not isinstance(document, dict)
        or document.get("version") != CASSETTE_VERSION
        or not isinstance(document.get("base_url"), str)
        or not isinstance(document.get("interactions"), list)
        or not all(
            isinstance(item, dict) and isinstance(item.get("request"), dict) for item in document["interactions"]
        )
    ):
        raise CassetteError(
            f"{path} is not a version-{CASSETTE_VERSION} autogen-reliability cassette "
            "(an object with version, base_url and interactions); re-record it with --llm-record"
        )
    return document["base_url"], document["interactions"]


def dump_cassette(path: Path, base_url: str, interactions: list[dict[str, Any]]) -> None:
    """Write a cassette file (directories created), indented and with a final newline, so it diffs well."""
    # A stream's events go one per line, as they came over the wire: the stream reads (and diffs) chunk by chunk.
    events: list[str] = []

    def one_line(event: Any) -> str:
        events.append(json.dumps(event, ensure_ascii=False, separators=(", ", ": ")))
        return f"\x00cassette-event-{len(events) - 1}\x00"

    laid_out = []
    for interaction in interactions:
        response = interaction.get("response")
        if isinstance(response, dict) and isinstance(response.get("stream"), list):
            response = {**response, "stream": [one_line(event) for event in response["stream"]]}
            interaction = {**interaction, "response": response}  # noqa: PLW2901 - a laid-out copy
        laid_out.append(interaction)
    document = {"version": CASSETTE_VERSION, "base_url": base_url, "interactions": laid_out}
    text = json.dumps(document, indent=2, ensure_ascii=False)
    text = re.sub(r'"\\u0000cassette-event-(\d+)\\u0000"', lambda match: events[int(match.group(1))], text)
    text = _escaped_surrogates(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- scrubbing


class Scrubber:
    """Replaces the credential values seen in the recorded requests, in any string of the cassette."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def learn(self, headers: Mapping[str, str]) -> None:
        for name, value in headers.items():
            if name.lower() in _CREDENTIAL_HEADERS:
                secret = _AUTH_SCHEME.sub("", value).strip()
                if len(secret) >= _MIN_SECRET:
                    self._secrets.add(secret)

    def text(self, text: str, *, shaped_like_keys: bool) -> str:
        # Longest first: a key that contains another is replaced whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = re.sub(re.escape(secret), _REDACTED, text, flags=re.IGNORECASE)
        if not shaped_like_keys:
            return text
        # The library's redaction loads the providers package (and the SDK): only when a cassette is written.
        from .._redaction import redact  # noqa: PLC0415

        # Around each lone surrogate, which redact() would make U+FFFD: the replay answers what was recorded.
        pieces = _LONE_SURROGATE.split(text)
        pieces[::2] = [redact(piece, limit=_NO_LIMIT) for piece in pieces[::2]]
        return "".join(pieces)

    def value(self, value: Any, *, shaped_like_keys: bool) -> Any:
        if isinstance(value, str):
            return self.text(value, shaped_like_keys=shaped_like_keys)
        if isinstance(value, list):
            return [self.value(item, shaped_like_keys=shaped_like_keys) for item in value]
        if isinstance(value, dict):
            return {key: self.value(item, shaped_like_keys=shaped_like_keys) for key, item in value.items()}
        return value

    def interaction(self, interaction: dict[str, Any]) -> dict[str, Any]:
        """The interaction as it may be written: request bodies lose only the credentials (so replayed requests
        still match them), URLs and responses also lose anything shaped like a key."""
        request = dict(interaction["request"])
        request["url"] = self.text(request["url"], shaped_like_keys=True)
        if "body" in request:
            request["body"] = self.value(request["body"], shaped_like_keys=False)
        scrubbed: dict[str, Any] = {"request": request}
        for key in ("response", "error"):
            if key in interaction:
                scrubbed[key] = self.value(interaction[key], shaped_like_keys=True)
        return scrubbed


def kept_request_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name: value for name, value in headers if name in _REQUEST_HEADERS}


def kept_response_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {
        name: value
        for name, value in headers
        if name in _RESPONSE_HEADERS or name.startswith(_RESPONSE_HEADER_PREFIXES)
    }


def body_value(data: bytes, content_type: str) -> tuple[str, Any]:
    """``(key, value)`` of a body in the cassette: ``("body", parsed JSON)`` when it is JSON, else ``("text", ...)``."""
    text = data.decode("utf-8", errors="replace")
    if "json" in content_type or text[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            return "body", json.loads(text)
    return "text", text


def sse_events(text: str) -> list[dict[str, Any]]:
    """Split a ``text/event-stream`` body into its events: ``{"data": parsed JSON or text}``, plus the other fields."""
    events: list[dict[str, Any]] = []
    # Lines end with CRLF, LF or CR only (not at U+2028 and the others str.splitlines() takes, which JSON holds raw);
    # a blank line ends an event.
    for block in re.split(r"(?:\r\n|\r|\n){2}", text):
        if not block.strip():
            continue
        event: dict[str, Any] = {}
        data: list[str] = []
        for line in _SSE_LINE_END.split(block):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name:
                event[name] = value
            else:
                event.setdefault("comment", value)
        if data:
            joined = "\n".join(data)
            try:
                event["data"] = json.loads(joined) if joined != "[DONE]" else joined
            except ValueError:
                event["data"] = joined
        events.append(event)
    return events


def _sse_bytes(events: list[dict[str, Any]]) -> bytes:
    """The events of a recorded stream on the wire again (compact JSON, as providers send it)."""
    out: list[str] = []
    for event in events:
        lines = [f"{name}: {value}" for name, value in event.items() if name not in ("data", "comment")]
        if "comment" in event:
            lines.insert(0, f": {event['comment']}")
        if "data" in event:
            data = event["data"]
            text = (
                data
                if isinstance(data, str)
                else _escaped_surrogates(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
            )
            lines += [f"data: {line}" for line in text.split("\n")]
        out.append("\n".join(lines) + "\n\n")
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------- replaying


def _relative_path(url: str, base_url: str) -> str:
    path = url.split("?", 1)[0]
    base = base_url.rstrip("/")
    if path.startswith(base):
        return path[len(base) :] or "/"
    return "/" + path.split("://", 1)[-1].split("/", 1)[-1]


def _shown(body: Any) -> list[str]:
    if isinstance(body, str):
        return body.splitlines()
    return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


class Replayer:
    """Answers a `FakeOpenAIServer`'s chat-completions requests from a cassette (its ``default``)."""

    def __init__(self, base_url: str, interactions: list[dict[str, Any]], server_base_path: str = "/v1") -> None:
        """Create the replayer.

        Args:
            base_url: The cassette's base URL (paths are compared relative to it).
            interactions: The cassette's exchanges.
            server_base_path: The path of the fake server's base URL (``/v1``).
        """
        self.base_url = base_url
        self.interactions = interactions
        self._server_base_path = server_base_path
        self._played = [False] * len(interactions)
        self._lock = threading.Lock()
        self.mismatches: list[str] = []

    def __call__(self, request: RecordedRequest) -> FakeReply:
        """The reply to ``request``: the first unplayed matching exchange, or a 400 that says what differed."""
        path = request.path.removeprefix(self._server_base_path) or "/"
        body: Any = request.body if request.body is not None else request.raw.decode("utf-8", errors="replace")
        with self._lock:
            for index, interaction in enumerate(self.interactions):
                if not self._played[index] and self._matches(interaction["request"], request.method, path, body):
                    self._played[index] = True
                    return _reply(interaction)
            message = self._mismatch(request.method, path, body)
            self.mismatches.append(message)
        return FakeReply.error(
            400,
            message,
            type="invalid_request_error",
            code="cassette_mismatch",
            headers={"x-should-retry": "false"},
        )

    def unplayed(self) -> list[tuple[int, dict[str, Any]]]:
        """The exchanges no request asked for, with their 0-based positions in the cassette."""
        with self._lock:
            return [(index, item) for index, item in enumerate(self.interactions) if not self._played[index]]

    def _matches(self, recorded: dict[str, Any], method: str, path: str, body: Any) -> bool:
        recorded_body = recorded.get("body", recorded.get("text", ""))
        return (
            recorded.get("method") == method
            and _relative_path(str(recorded.get("url", "")), self.base_url) == path
            and recorded_body == (body if body is not None else "")
        )

    def _mismatch(self, method: str, path: str, body: Any) -> str:
        left = [(index, item) for index, item in enumerate(self.interactions) if not self._played[index]]
        if not left:
            return (
                f"the cassette has no exchange left for this request ({len(self.interactions)} recorded, all "
                "played): the test now makes more requests than when it was recorded; re-record it with "
                f"--llm-record.\nThis request: {method} {path}\n  " + "\n  ".join(_shown(body))
            )
        index, expected = left[0]
        recorded = expected["request"]
        recorded_path = _relative_path(str(recorded.get("url", "")), self.base_url)
        diff = difflib.unified_diff(
            _shown(recorded.get("body", recorded.get("text", ""))),
            _shown(body),
            f"cassette, exchange #{index + 1} (the next one): {recorded.get('method')} {recorded_path}",
            f"this request: {method} {path}",
            lineterm="",
        )
        return (
            "this request does not match the cassette (method, path and JSON body must be equal); the test or "
            "what it sends changed since the recording: re-record it with --llm-record.\n" + "\n".join(diff)
        )


def _reply(interaction: dict[str, Any]) -> FakeReply:
    response = interaction.get("response")
    if not isinstance(response, dict):
        return FakeReply.reset()  # recorded as a transport failure: the client sees its connection fail
    headers = {str(name): str(value) for name, value in dict(response.get("headers") or {}).items()}
    content_type = headers.pop("content-type", "application/json")
    if "stream" in response:
        body = _sse_bytes(list(response["stream"]))
    elif "body" in response:
        body = _escaped_surrogates(json.dumps(response["body"], ensure_ascii=False)).encode("utf-8")
    else:
        body = str(response.get("text", "")).encode("utf-8")
    # `malformed` sends a body verbatim with the status and headers given: what a replay needs.
    reply = FakeReply.malformed(body, status=int(response["status"]), content_type=content_type, headers=headers)
    if str(response.get("truncated", "")).startswith(ENDED_EARLY):
        # The connection failed mid-body while recording: the client gets what came, then the failure again.
        return dataclasses.replace(reply, disconnect_after_chunks=0)
    return reply


# --------------------------------------------------------------------------- what the fixture gives a test


class _Recording(Protocol):
    """What `LLMCassette` reads of a ``_recorder.Recorder`` (which imports this module)."""

    @property
    def interactions(self) -> list[dict[str, Any]]: ...


class LLMCassette:
    """The cassette of one test (what the ``llm_cassette`` fixture gives it): recorded or replayed.

    While replaying (the default), a `FakeOpenAIServer` answers from the cassette,
    and the environment points the openai SDK at it (``OPENAI_BASE_URL``, and a
    placeholder ``OPENAI_API_KEY``), so a client built without ``base_url`` /
    ``api_key`` goes there; one built with them should take `base_url` and
    `api_key` from here. While recording (``pytest --llm-record``), both are the
    real provider's, and every exchange with `base_url` is written to `path` when
    the test ends.

    Attributes:
        path: The cassette file.
        mode: ``"record"`` or ``"replay"``.
        base_url: The base URL to give a client (``.../v1``; replaying an Azure OpenAI deployment's cassette,
            the server's ``/openai/deployments/NAME``, as recorded).
        api_key: The API key to give a client: the real one while recording, a placeholder while replaying.
        server: The replaying `FakeOpenAIServer` (its ``requests`` are what the test sent); None while recording.
    """

    def __init__(
        self,
        path: Path,
        mode: Literal["record", "replay"],
        base_url: str,
        api_key: str,
        *,
        recorder: _Recording | None = None,
        replayer: Replayer | None = None,
        server: FakeOpenAIServer | None = None,
    ) -> None:
        """Built by the ``llm_cassette`` fixture; a test does not make one itself."""
        self.path = path
        self.mode: Literal["record", "replay"] = mode
        self.base_url = base_url
        self.api_key = api_key
        self.server = server
        self._recorder = recorder
        self._replayer = replayer

    @property
    def interactions(self) -> list[dict[str, Any]]:
        """The exchanges: recorded so far (credentials scrubbed), or read from the file."""
        if self._recorder is not None:
            return self._recorder.interactions
        return self._replayer.interactions if self._replayer is not None else []

    def __repr__(self) -> str:
        return f"<LLMCassette {self.mode} {self.path} ({len(self.interactions)} exchanges)>"
