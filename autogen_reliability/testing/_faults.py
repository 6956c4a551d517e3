"""Real provider errors to script, built as the openai SDK builds them: ``faults.rate_limit(retry_after=1)``.

Each function returns the exception the openai SDK raises for that failure,
with what the SDK puts in it: an ``httpx2.Response`` carrying the status, the
headers (``retry-after``) and OpenAI's JSON error body; the error ``code``,
``type`` and ``param``; for a timeout or a reset, the transport error as its
``__cause__``. Retry classification (``autogen_reliability.retry.classify_error``)
therefore sees exactly what it sees in production:

    =======================  ==================================  =================
    fault                    exception                           classified as
    =======================  ==================================  =================
    ``rate_limit()``         ``openai.RateLimitError`` 429       RATE_LIMIT
    ``server_error()``       ``openai.InternalServerError`` 500  SERVER_ERROR
    ``server_error(503)``    ``openai.InternalServerError`` 503  OVERLOADED
    ``timeout()``            ``openai.APITimeoutError``          TIMEOUT
    ``connection_reset()``   ``openai.APIConnectionError``       CONNECTION
    ``context_length()``     ``openai.BadRequestError`` 400      CONTEXT_LENGTH
    ``stream_error()``       ``openai.APIError`` (mid-stream)    SERVER_ERROR
    ``status_error(n)``      the SDK's class for status ``n``    by status
    ``malformed_json()``     (an answer, not an exception)       --
    =======================  ==================================  =================

Put them in a `ScriptedChatCompletionClient`'s script (raised when their turn
comes), or raise them from anything else that stands in for a provider.

Example:
    >>> from autogen_reliability.retry import classify_error, retry_after
    >>> error = rate_limit(retry_after=2)
    >>> error.status_code, classify_error(error).value, retry_after(error)
    (429, 'rate_limit', 2.0)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final, TypeVar

import httpx2
import openai

from .._errors import ConfigurationError, is_finite, shown_number
from ._replies import _default_error
from ._scripted import ScriptedReply

__all__ = [
    "connection_reset",
    "context_length",
    "malformed_json",
    "rate_limit",
    "server_error",
    "status_error",
    "stream_error",
    "timeout",
]

_E = TypeVar("_E", bound=BaseException)

# Where the request the error belongs to went; nothing is ever sent there.
_URL: Final = "https://api.openai.com/v1/chat/completions"

# The classes the openai SDK raises per status (its client's _make_status_error); >= 500 is InternalServerError.
_STATUS_CLASSES: Final[Mapping[int, type[openai.APIStatusError]]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def status_error(
    status: int,
    message: str | None = None,
    *,
    type: str | None = None,  # OpenAI's field name
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> openai.APIStatusError:
    """The error the openai SDK raises for an HTTP error response with OpenAI's error body.

    The class is the SDK's for the status (``BadRequestError`` for 400, ``RateLimitError``
    for 429, ``InternalServerError`` for any 5xx, ...); defaults for the body follow the
    real API, as ``FakeReply.error`` does.

    Args:
        status: A 4xx or 5xx status.
        message: ``error.message``; a status-appropriate default when None.
        type: ``error.type``; a status-appropriate default when None.
        code: ``error.code``; a status-appropriate default when None.
        param: ``error.param``.
        headers: Response headers, e.g. ``{"retry-after": "2"}``.

    Returns:
        The exception, with ``.response`` (an ``httpx2.Response``), ``.status_code``,
        ``.body``, ``.code``, ``.type`` and ``.param`` as the SDK sets them.

    Raises:
        ConfigurationError: ``status`` is not a 4xx or 5xx.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ConfigurationError(f"status must be a 4xx or 5xx HTTP status, got {status!r}")
    default_type, default_message, default_code = _default_error(status)
    error = {
        "message": default_message if message is None else message,
        "type": default_type if type is None else type,
        "param": param,
        "code": default_code if code is None else code,
    }
    request = _request()
    response = httpx2.Response(
        status,
        headers={"content-type": "application/json", **(headers or {})},
        content=json.dumps({"error": error}).encode(),
        request=request,
    )
    cls = _STATUS_CLASSES.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    # As the SDK words it: the status, then only the error's message (never the whole body).
    return cls(f"Error code: {status} - {error['message']}", response=response, body=error)


def rate_limit(
    retry_after: float | timedelta | None = None,
    *,
    message: str | None = None,
    code: str = "rate_limit_exceeded",
    headers: Mapping[str, str] | None = None,
) -> openai.RateLimitError:
    """A 429 ``openai.RateLimitError``, with a ``retry-after`` header when ``retry_after`` is given.

    Args:
        retry_after: Seconds (or a timedelta) the server asks the client to wait; None sends no header,
            and the retry policy backs off on its own.
        message: ``error.message``; OpenAI's wording when None.
        code: ``error.code``; ``"insufficient_quota"`` makes it the out-of-credit 429, which is never retried.
        headers: More response headers (``retry-after-ms``, ``x-ratelimit-*``).

    Returns:
        The exception.
    """
    sent = dict(headers or {})
    if retry_after is not None:
        sent["retry-after"] = _header_seconds("retry_after", retry_after)
    error = status_error(429, message, code=code, headers=sent)
    assert isinstance(error, openai.RateLimitError)  # the SDK's class for 429
    return error


def server_error(
    status: int = 500,
    *,
    retry_after: float | timedelta | None = None,
    message: str | None = None,
) -> openai.InternalServerError:
    """A 5xx ``openai.InternalServerError`` (503 is classified OVERLOADED, the others SERVER_ERROR).

    Args:
        status: A 5xx status: 500, 502, 503 (overloaded), 504, ...
        retry_after: Seconds (or a timedelta) for a ``retry-after`` header; None sends none.
        message: ``error.message``; OpenAI's wording when None.

    Returns:
        The exception.

    Raises:
        ConfigurationError: ``status`` is not a 5xx.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
        raise ConfigurationError(f"server_error() takes a 5xx status, got {status!r}")
    headers = {"retry-after": _header_seconds("retry_after", retry_after)} if retry_after is not None else None
    error = status_error(status, message, headers=headers)
    assert isinstance(error, openai.InternalServerError)  # the SDK's class for any 5xx
    return error


def context_length(max_tokens: int = 128_000, requested: int | None = None) -> openai.BadRequestError:
    """The 400 ``openai.BadRequestError`` with code ``context_length_exceeded``: a prompt that is too long.

    Never retried: the same prompt stays too long.

    Args:
        max_tokens: The model's context window, as the message states it.
        requested: The tokens the messages came to; ``max_tokens + 1`` when None.

    Returns:
        The exception.
    """
    asked = max_tokens + 1 if requested is None else requested
    message = (
        f"This model's maximum context length is {max_tokens} tokens. However, your messages resulted in "
        f"{asked} tokens. Please reduce the length of the messages."
    )
    error = status_error(400, message, type="invalid_request_error", code="context_length_exceeded", param="messages")
    assert isinstance(error, openai.BadRequestError)  # the SDK's class for 400
    return error


def timeout() -> openai.APITimeoutError:
    """The ``openai.APITimeoutError`` of a request that got no answer in time (the read timed out).

    Returns:
        The exception, its ``__cause__`` the ``httpx2.ReadTimeout`` the SDK raises it from.
    """
    request = _request()
    error = openai.APITimeoutError(request=request)
    return _caused_by(error, httpx2.ReadTimeout("The read operation timed out", request=request))


def connection_reset() -> openai.APIConnectionError:
    """The ``openai.APIConnectionError`` of a connection the server reset before answering.

    Returns:
        The exception, its ``__cause__`` the ``httpx2.ReadError`` the SDK raises it from.
    """
    request = _request()
    reset = _caused_by(
        httpx2.ReadError("[Errno 104] Connection reset by peer", request=request),
        ConnectionResetError(104, "Connection reset by peer"),
    )
    return _caused_by(openai.APIConnectionError(request=request), reset)


def stream_error(message: str = "The server had an error while processing your request.") -> openai.APIError:
    """The bare ``openai.APIError`` an SSE ``event: error`` raises in the middle of a stream.

    Script it as the end of a stream that already sent chunks:
    ``ScriptedReply.stream(["Hel", "lo"], raises=faults.stream_error())``.

    Args:
        message: The error's message.

    Returns:
        The exception (no status: the 200 was sent before the error).
    """
    body = {"message": message, "type": "server_error"}
    return openai.APIError(message, _request(), body=body)


def malformed_json(
    text: str = '{"answer": 42, "reason": "the',
    *,
    usage: Any = None,
    model: str | None = None,
) -> ScriptedReply:
    """An answer that is not valid JSON (cut off, by default), for validation to re-ask.

    Not an exception: the provider answered, and only the answer is wrong.

    Args:
        text: The broken answer.
        usage: Its usage (a ``FakeUsage`` or ``RequestUsage``); None for the client's default.
        model: The model that answered; None for the client's.

    Returns:
        A script item.

    Raises:
        ConfigurationError: ``text`` is valid JSON after all.
    """
    try:
        json.loads(text)
    except ValueError:
        return ScriptedReply.text(text, usage=usage, model=model)
    raise ConfigurationError(f"malformed_json() needs text that is not valid JSON, got {text!r}")


# --------------------------------------------------------------------------- helpers


def _request() -> httpx2.Request:
    return httpx2.Request("POST", _URL)


def _header_seconds(name: str, value: float | timedelta) -> str:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not is_finite(seconds) or seconds < 0:
        raise ConfigurationError(f"{name} must be seconds >= 0 (a number or a timedelta), got {shown_number(value)}")
    # As servers write it: whole seconds without a decimal point; a fraction as a plain decimal.
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _caused_by(error: _E, cause: BaseException) -> _E:
    """``error`` as ``raise error from cause`` leaves it."""
    error.__cause__ = cause
    error.__suppress_context__ = True
    return error
