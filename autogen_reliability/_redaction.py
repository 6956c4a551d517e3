"""Keeping secrets out of what we store, log and raise.

Some providers echo part of the API key in their error messages ("Incorrect API
key provided: sk-proj-…"), upper-cased, with ``_`` for ``-``, or without its
prefix. Every provider text that leaves the library through us (an exception
message, a log line, a stored error) passes :func:`redact`, which hides two
things:

- the API key of every client a wrapper was built around (see
  :func:`remember_secret`), in any case, with ``-`` and ``_`` taken as one, and
  without its ``sk-proj-``-style prefix;
- anything shaped like a key, a bearer token, a key or a password in a URL, a
  password in a libpq connection string.

An error we raise never chains a provider error as it was: it chains
:func:`redacted_error`'s copy, of the same class, with the same status and
fields, secrets removed.

:func:`redact` and :func:`remember_secret` live in ``_secret_text``, at the bottom of
the package, where :class:`~autogen_reliability.ConfigurationError` redacts its own
message with them; they are used from here.
"""

from __future__ import annotations

import html
import logging
import re
import sys
import traceback
from collections.abc import Mapping
from dataclasses import fields
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._errors import error_object
from ._secret_text import redact, remember_secret, well_formed
from .providers import loaded_class, loaded_module

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "first_line",
    "log_failure",
    "masked_headers",
    "masked_repr",
    "message_of",
    "quoted",
    "redact",
    "redacted_error",
    "remember_secret",
    "well_formed",
]

QUOTED_LIMIT: Final = 40
"""The most characters of a value someone gave that an error message quotes back (:func:`quoted`)."""


def message_of(error: BaseException) -> str:
    """``str(error)``, never raising: an exception whose ``__str__`` raises (or returns no str) gives a stand-in.

    An SDK's ``Connection error.`` (or ``Request timed out.``; ollama's ``Failed to connect to Ollama...``,
    httpx's ``All connection attempts failed``) is followed by where the request went and why it failed, which
    the SDK keeps only in the errors it chains:
    ``Connection error. (http://127.0.0.1:8000: ConnectionRefusedError: [Errno 111] Connect call failed ...)``.
    An SDK's ``Error code: 502`` of a body that is not JSON (a gateway's page) is followed by what the body says:
    ``Error code: 502 (text/html: 502 Bad Gateway)``.

    For every text of an exception we did not make (a provider's, a driver's) that a health report, a span or a
    log line shows: what renders it must not fail with it. Not redacted: pass it to :func:`redact`.

    Example:
        >>> class Odd(Exception):
        ...     def __str__(self) -> str:
        ...         raise RuntimeError
        >>> message_of(Odd())
        '<str() failed: RuntimeError>'
    """
    try:
        text = str(error)
    except Exception as failure:  # whatever __str__ raises is what this guards against
        return f"<str() failed: {type(failure).__name__}>"
    if _is_one_of(error, _CONNECTION_ERRORS):
        return text + _unreachable(error)
    # ollama's "Failed to connect to Ollama..." is a ConnectionError raised over httpx's ConnectError, from None.
    context = error.__context__
    if isinstance(error, ConnectionError) and context is not None and _is_one_of(context, _CONNECTION_ERRORS):
        return text + _unreachable(context)
    if _is_one_of(error, _STATUS_ERRORS):
        return text + _page(error)
    return text


# The openai and anthropic SDKs' error for a request that got no HTTP response (APITimeoutError is one too), and
# legacy httpx's, which ollama's client raises as it is from a stream.
_CONNECTION_ERRORS: Final = (
    ("openai", "APIConnectionError"),
    ("anthropic", "APIConnectionError"),
    ("httpx", "TransportError"),
)
# Their error for an HTTP error status; of a body that is not JSON (a gateway's page) it says "Error code: 502" only.
_STATUS_ERRORS: Final = (("openai", "APIStatusError"), ("anthropic", "APIStatusError"))
_CAUSE_DEPTH: Final = 8
_REASON_LIMIT: Final = 300
_PAGE_SCAN: Final = 20_000  # a page's title is near its top; its text, without the title, too
_TITLE: Final = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG: Final = re.compile(r"<[^>]*>")


def _is_one_of(error: BaseException, classes: tuple[tuple[str, str], ...]) -> bool:
    for module, name in classes:
        cls = loaded_class(module, name, BaseException)
        if cls is not None and isinstance(error, cls):
            return True
    return False


def _page(error: BaseException) -> str:
    """What an error status's body that is not JSON says, in a line: `` (text/html: 502 Bad Gateway)``.

    An HTML page's title, else its first line of text; a text's first line. Nothing for a JSON object, whose
    message the SDK quotes already; of a JSON list (Gemini's OpenAI-compatible endpoint: ``[{"error": {...}}]``),
    which it does not quote, the message of its first error.
    """
    try:
        body = error.body  # type: ignore[attr-defined]  # the SDKs keep the text they could not parse as JSON
        if isinstance(body, list):
            first = error_object(body)  # Gemini's: the message of its first error
            message = first.get("message") if isinstance(first, Mapping) else None
            text = message[:_PAGE_SCAN] if isinstance(message, str) else ""
        elif isinstance(body, str):
            head = body[:_PAGE_SCAN]
            title = _TITLE.search(head)
            text = html.unescape(title.group(1) if title is not None else _TAG.sub("\n", head))
        else:
            return ""
        line = next((" ".join(line.split()) for line in text.splitlines() if line.strip()), "")
        content_type = str(error.response.headers.get("content-type", "")).split(";")[0].strip()  # type: ignore[attr-defined]
    except Exception:  # an error made without a body or a response: the SDK's text alone
        return ""
    if not line:
        return ""
    return f" ({content_type or 'body'}: {line[:_REASON_LIMIT]})"


def _unreachable(error: BaseException) -> str:
    """Where an SDK's ``Connection error.`` went and why it failed: `` (https://host:port: SSLError: ...)``.

    The SDK's message is the same for a refused port, a host that does not resolve, a TLS failure or a dead proxy;
    the reason is in the errors it chains, the deepest one that says something (the refused address). Where is the
    URL's scheme, host and port only: never its user, password, path or query, which may carry a key.
    """
    try:
        url = error.request.url  # type: ignore[attr-defined]  # the SDKs' APIConnectionError keeps its request
        host = url.host if ":" not in url.host else f"[{url.host}]"
        where = f"{url.scheme}://{host}" + (f":{url.port}" if url.port is not None else "")
    except Exception:  # an error made without a request: the reason alone
        where = ""
    reason = ""
    current, seen = error, 0
    while seen < _CAUSE_DEPTH:
        # httpcore raises its ConnectError with the refused OSError as a suppressed context: still what happened.
        chained = current.__cause__ or current.__context__
        if not isinstance(chained, Exception):  # the end, or a CancelledError of the HTTP client's timeout
            break
        current, seen = chained, seen + 1
        said = message_of(chained).strip().splitlines()
        if said or not reason:
            reason = f"{type(chained).__name__}: {said[0]}" if said else type(chained).__name__
    if not reason:
        return f" ({where})" if where else ""
    return f" ({where}: {reason[:_REASON_LIMIT]})" if where else f" ({reason[:_REASON_LIMIT]})"


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of :func:`message_of` ``error``, cut to ``limit`` characters: a driver's error for a log line.

    Not redacted: pass it to :func:`redact` where it may carry a secret.
    """
    lines = message_of(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


# A traceback with its chain is longer than a log line, and still bounded.
_TRACEBACK_LIMIT: Final = 20_000


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """``logger.exception(message, *args)``, the traceback of the exception being handled passed through :func:`redact`.

    For the failure of the user's code that sees provider errors (a retry hook, an observer): one that raises
    ``from event.error`` chains the provider's error, and logging's own traceback would print its text, key and all.
    """
    error = sys.exc_info()[1]
    if error is None:
        logger.error(message, *args)
        return
    shown = redact("".join(traceback.format_exception(error)).rstrip("\n"), limit=_TRACEBACK_LIMIT)
    logger.error(message + "\n%s", *args, shown)


def quoted(text: str) -> str:
    """``text``, a value someone gave, fit to quote in an error: secrets hidden, cut to 40 characters, in quotes.

    Example:
        >>> quoted("sk-proj-abc123def456")
        "'[REDACTED]'"
    """
    # Hidden before it is cut, so that a key across the cut is not shown in part; the first cut
    # (far longer than any key) only bounds the work for a value of megabytes.
    return repr(redact(text[: QUOTED_LIMIT * 10], limit=QUOTED_LIMIT))


def masked_repr(instance: DataclassInstance, **masked: object) -> str:
    """The repr a dataclass writes for ``instance``, with each field named in ``masked`` shown as that value instead.

    For configuration that holds a database URL: the object keeps the password to connect with, its repr
    (and so every log line and error that shows the object) shows the URL as ``masked_url`` writes it.
    """
    shown = (
        f"{option.name}={masked[option.name] if option.name in masked else getattr(instance, option.name)!r}"
        for option in fields(instance)
        if option.repr
    )
    return f"{type(instance).__qualname__}({', '.join(shown)})"


# A copy keeps long bodies whole (a log line's limit is for log lines), but not without end.
_COPY_LIMIT: Final = 100_000
_CHAIN_LIMIT: Final = 5
# Request headers that carry the key itself; response headers that no longer describe a re-built body.
_DROPPED_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie", "set-cookie"}
)
_BODY_HEADERS: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})
# A request header of the user's (``default_headers``) named like one that carries a credential: a gateway's key
# beside the provider's ("Ocp-Apim-Subscription-Key", "x-portkey-api-key", "X-Gateway-Token"), whose value we
# cannot tell from any other text. Not for responses, whose "x-ratelimit-remaining-tokens" says how many are left.
_CREDENTIAL_HEADER: Final = re.compile(r"auth|key|token|secret|passw|cookie", re.IGNORECASE)
_E = TypeVar("_E", bound=BaseException)


def redacted_error(error: _E) -> _E:
    """A copy of ``error`` that can be chained, logged and kept without leaking a secret.

    The copy is of the same class (``except openai.RateLimitError`` and
    :func:`~autogen_reliability.retry.classify_error` see what they saw), with the
    same fields: strings, dicts and lists redacted, an httpx(2) request re-built
    without its ``Authorization`` header (nor any other named like a key, a
    token or a secret), an httpx(2) response re-built with a
    redacted body. Its ``__cause__`` chain is copied likewise (5 links at
    most), and so are the members of an exception group; it has no
    ``__context__`` and no traceback, whose frames would hold the SDK's locals.
    """
    return _copy(error, _CHAIN_LIMIT)


def _copy(error: _E, depth: int) -> _E:
    clone: _E
    if isinstance(error, BaseExceptionGroup):
        # A group is made by __new__ from its message and members (it takes no fewer), each member copied likewise.
        message = redact(error.message, limit=_COPY_LIMIT)
        members = [_copy(member, depth) for member in error.exceptions]
        clone = type(error).__new__(type(error), message, members)
        clone.args = (message, members)
    else:
        clone = type(error).__new__(type(error))
        clone.args = tuple(_scrub(arg) for arg in error.args)
    state = getattr(error, "__dict__", None)
    if state is not None:
        clone.__dict__.update({name: _scrub(value) for name, value in state.items()})
    cause = error.__cause__
    clone.__cause__ = _copy(cause, depth - 1) if cause is not None and depth > 1 else None
    clone.__context__ = None
    clone.__suppress_context__ = True
    return clone


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value, limit=_COPY_LIMIT)
    if value is None or isinstance(value, int | float | Enum):
        return value
    if isinstance(value, Mapping):
        return {key: _scrub(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_scrub(item) for item in value)
    return _scrub_http(value)


def _scrub_http(value: Any) -> Any:
    # openai and anthropic >= 1.0 use httpx2, anthropic 0.x and ollama httpx; each is imported already when an
    # error holds its objects.
    for name in ("httpx2", "httpx"):
        httpx: Any = loaded_module(name)
        if httpx is not None and isinstance(value, httpx.Request):
            return _request(httpx, value)
        if httpx is not None and isinstance(value, httpx.Response):
            return _response(httpx, value)
    return value  # no SDK we know keeps a secret in any other kind of field


def masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with the value of each one that carries a credential (by its name) shown as ``[REDACTED]``."""
    return {
        name: "[REDACTED]" if name.lower() in _DROPPED_HEADERS or _CREDENTIAL_HEADER.search(name) else value
        for name, value in headers.items()
    }


def _headers(headers: Any, dropped: frozenset[str], *, credentials: bool = False) -> list[tuple[str, str]]:
    """``headers`` without those ``dropped`` (and, with ``credentials``, those named like a credential)."""
    return [
        (name, redact(value))
        for name, value in headers.items()
        if name.lower() not in dropped and not (credentials and _CREDENTIAL_HEADER.search(name))
    ]


def _request(httpx: Any, request: Any) -> Any:
    try:
        url = httpx.URL(redact(str(request.url), limit=_COPY_LIMIT))
    except Exception:  # a redacted URL that no longer parses: keep where it went, not how
        url = request.url.copy_with(query=None)
    return httpx.Request(request.method, url, headers=_headers(request.headers, _DROPPED_HEADERS, credentials=True))


def _response(httpx: Any, response: Any) -> Any:
    try:
        text = response.text
    except Exception:  # a streamed response that was never read: there is no body to keep
        text = ""
    try:
        request = _request(httpx, response.request)
    except RuntimeError:  # a response built without a request
        request = None
    return httpx.Response(
        response.status_code,
        headers=_headers(response.headers, _DROPPED_HEADERS | _BODY_HEADERS),
        content=redact(text, limit=_COPY_LIMIT).encode(),
        request=request,
    )
