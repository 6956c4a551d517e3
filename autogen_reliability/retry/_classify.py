"""Turning an exception from any provider SDK into an :class:`ErrorKind`.

AutoGen's model clients let the provider SDK's exceptions propagate unchanged,
so a retry policy sees ``openai``, ``anthropic``, ``ollama``, ``httpx`` and
``httpx2`` exceptions plus a few builtins. This module maps all of them onto
one small vocabulary, :class:`ErrorKind`, that policies can reason about.

Approach:
    * Classification is by exception **type** (``isinstance``) and by the
      structured fields the SDKs expose (HTTP ``status_code``, the error
      ``code``, Anthropic's ``error.type``), never by matching class-name
      strings, so SDK subclasses such as ``anthropic.EnforcedSpendLimitReachedError``
      are handled by their parents.
    * SDK classes are looked up in ``sys.modules`` and never imported
      (``providers.loaded_class``): if an exception came from an SDK, that SDK
      is already imported, and importing ``anthropic`` or ``ollama`` just to
      classify a ``TimeoutError`` would cost start-up time and could fail where
      the SDK is not installed.
    * Every HTTP status goes through one table, :func:`kind_for_status`, whatever
      SDK reported it.
    * Exceptions nothing else recognises are classified duck-typed by an int
      ``status_code`` (or ``response.status_code``), then through their
      ``__cause__`` chain (at most 5 links), and are otherwise ``UNKNOWN``.

Status table (:func:`kind_for_status`), applied to 4xx/5xx only:

    =====================  ================================================
    status                 kind
    =====================  ================================================
    400, 413, 422          BAD_REQUEST, unless the code/message says otherwise
    401                    AUTHENTICATION
    402                    PERMISSION (billing)
    403                    PERMISSION
    404                    NOT_FOUND
    408                    TIMEOUT
    409                    SERVER_ERROR (transient lock conflict; SDKs retry it)
    429                    RATE_LIMIT
    503, 529               OVERLOADED
    other 5xx              SERVER_ERROR
    other 4xx              BAD_REQUEST
    anything else          UNKNOWN
    =====================  ================================================

    Overrides for any 4xx: error code ``context_length_exceeded``, or a message
    containing ``prompt is too long`` or ``exceed context limit`` (Anthropic sends
    no code for either: the prompt alone, or the prompt and ``max_tokens``, is too
    long) or ``maximum context length`` (OpenAI-compatible servers), ``exceeds the
    maximum number of tokens allowed`` (Gemini), ``exceeds the available context
    size`` (llama.cpp's server) or text-generation-inference's two wordings of an
    input too long, with or without ``max_new_tokens`` -> CONTEXT_LENGTH;
    code ``content_filter`` / ``content_policy_violation``, or Azure's
    ``ResponsibleAIPolicyViolation`` as the code or the ``innererror``'s code
    (a gateway relaying Azure's refusal under a code of its own) -> CONTENT_FILTER;
    billing codes ``insufficient_quota`` (OpenAI 429, also when only the
    error's ``type`` says so and its code is null),
    ``contract_spend_limit_reached`` / ``enforced_spend_limit_reached``
    (Anthropic 429) -> PERMISSION; a ``google.rpc.ErrorInfo`` reason
    ``API_KEY_INVALID`` (Google's 400 for a key it does not know or one
    expired, Gemini's OpenAI-compatible endpoint's too) -> AUTHENTICATION;
    Google's ``status`` ``FAILED_PRECONDITION`` (Gemini's 400 for a free
    tier not offered where the request comes from) -> PERMISSION.

Exceptions, checked in this order (most specific first within an SDK):

    =================================================  ==========================
    exception                                          kind
    =================================================  ==========================
    any ``BaseException`` that is not an ``Exception``  CANCELLED
    (``asyncio.CancelledError``, ``KeyboardInterrupt``)
    ``BudgetExceededError`` (a wrapped client's        PERMISSION
    budget refused the call)
    ``ResponseValidationError`` (a wrapped             INVALID_RESPONSE
    client's answers stayed invalid)
    ``RetriesExhaustedError`` (a wrapped client        the kind of its last
    gave up)                                           failure
    ``MalformedResponseError`` (a 200 whose body is    INVALID_RESPONSE
    no completion: HTML, empty, a stream without
    events)
    ``ProviderResponseError`` (a 200 whose body is     as ``openai.APIError``
    an error object)
    ``TruncatedStreamError`` (a stream that ended      CONNECTION
    before its answer: no finish reason, no [DONE])
    ``openai.APITimeoutError``                         TIMEOUT
    ``openai.APIConnectionError``                      CONNECTION; INVALID_RESPONSE
                                                       raised from an
                                                       ``httpx[2].DecodingError``
    ``openai.APIResponseValidationError``              INVALID_RESPONSE
    ``openai.APIStatusError``                          status table
    ``openai.APIError`` (an SSE event with an          status table, via the
    ``error``: status is 200)                          status ``error.code``
                                                       names (OpenRouter's
                                                       502, OpenAI's codes),
                                                       else ``error.type``
                                                       (Anthropic's types);
                                                       SERVER_ERROR if none
                                                       (CONTEXT_LENGTH for a
                                                       context-length wording)
    ``openai.LengthFinishReasonError``                 INVALID_RESPONSE
    ``openai.ContentFilterFinishReasonError``          CONTENT_FILTER
    ``anthropic.APITimeoutError``                      TIMEOUT
    ``anthropic.APIConnectionError``                   as ``openai``'s
    ``anthropic.APIResponseValidationError``           INVALID_RESPONSE
    ``anthropic.APIStatusError`` with a 4xx/5xx        status table
    ``anthropic.APIStatusError`` otherwise (an         status table, via the
    ``event: error`` mid-stream: status is 200)        status Anthropic documents
                                                       for ``error.type``;
                                                       SERVER_ERROR if unknown
    ``anthropic.RetryableError``                       SERVER_ERROR
    ``anthropic.CredentialsError``                     AUTHENTICATION
    ``anthropic.APIError`` (other)                     SERVER_ERROR
    ``ollama.ResponseError``, ``status_code == -1``    SERVER_ERROR
    (an error line inside a stream)
    ``ollama.ResponseError``                           status table
    ``httpx[2].TimeoutException``                      TIMEOUT
    ``httpx[2].TransportError`` (``NetworkError``,     CONNECTION
    ``ProtocolError``, ``ProxyError``, ...)
    ``httpx[2].DecodingError``                         INVALID_RESPONSE
    ``httpx[2].TooManyRedirects``                      BAD_REQUEST
    ``httpx[2].HTTPStatusError``                       status table
    ``TimeoutError`` (``asyncio.TimeoutError``)        TIMEOUT
    ``ConnectionError`` (ollama's connect failure,     CONNECTION
    ``ConnectionResetError``, ...)
    ``json.JSONDecodeError`` (openai, malformed body)  INVALID_RESPONSE
    ``pydantic.ValidationError`` (structured output)   INVALID_RESPONSE
    int ``status_code`` / ``response.status_code``     status table
    anything else                                      its ``__cause__``, else
                                                       UNKNOWN
    =================================================  ==========================

:func:`retry_after` reads the wait a server asked for (``retry-after-ms``, then Azure's
``x-ms-retry-after-ms``, then ``Retry-After`` as seconds or an HTTP-date) from ``exc.response.headers``, else
from a ``google.rpc.RetryInfo``'s ``retryDelay`` in the error body (Gemini's);
:func:`retry_refused` whether it said ``x-should-retry: false``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, TypeAlias, TypeVar

from .._errors import (
    BudgetExceededError,
    ErrorKind,
    MalformedResponseError,
    ProviderResponseError,
    ResponseValidationError,
    RetriesExhaustedError,
    TruncatedStreamError,
    error_object,
)
from ..providers import loaded_class, loaded_module

__all__ = [
    "NEVER_RETRIED",
    "RETRYABLE_BY_DEFAULT",
    "ErrorKind",
    "classify_error",
    "http_status",
    "kind_for_status",
    "retry_after",
    "retry_refused",
]


RETRYABLE_BY_DEFAULT: Final[frozenset[ErrorKind]] = frozenset(
    {
        # The provider throttled this caller; the same request succeeds once the window passes.
        ErrorKind.RATE_LIMIT,
        # Nothing came back in time; the request itself may be fine.
        ErrorKind.TIMEOUT,
        # The request may never have reached the provider (refused, reset, DNS, TLS).
        ErrorKind.CONNECTION,
        # A 5xx (or 409 lock conflict, or an error event mid-stream) is the server's fault, not the request's.
        ErrorKind.SERVER_ERROR,
        # 503/529: capacity is short right now; back off and try again.
        ErrorKind.OVERLOADED,
    }
)
"""Kinds worth retrying unchanged: transient, and not caused by the request itself."""

NEVER_RETRIED: Final[frozenset[ErrorKind]] = frozenset(
    {
        # A bad or missing key fails identically on every attempt.
        ErrorKind.AUTHENTICATION,
        # Forbidden, or out of credit/quota: a person has to change something first.
        ErrorKind.PERMISSION,
        # The request itself is invalid; resending the same bytes gets the same 4xx.
        ErrorKind.BAD_REQUEST,
        # A wrong model name or URL does not appear by waiting.
        ErrorKind.NOT_FOUND,
        # The same prompt stays too long; only truncating or summarising it can help.
        ErrorKind.CONTEXT_LENGTH,
        # The caller asked us to stop; retrying would defy it.
        ErrorKind.CANCELLED,
    }
)
"""Kinds a retry can never fix. CONTENT_FILTER, INVALID_RESPONSE and UNKNOWN are in neither set:
a fresh sample may pass a filter or produce valid output, so that is the policy's call."""

_MAX_CAUSE_DEPTH: Final = 5
_Read = TypeVar("_Read")

# Status codes whose meaning is specific; ranges are handled in kind_for_status.
_STATUS_KINDS: Final[Mapping[int, ErrorKind]] = {
    401: ErrorKind.AUTHENTICATION,
    # 402 Payment Required: Anthropic's billing_error. Like a 403, retrying cannot help.
    402: ErrorKind.PERMISSION,
    403: ErrorKind.PERMISSION,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    # OpenAI and Anthropic use 409 for transient lock conflicts, and both SDKs retry it.
    409: ErrorKind.SERVER_ERROR,
    429: ErrorKind.RATE_LIMIT,
    503: ErrorKind.OVERLOADED,
    # Anthropic's "overloaded_error".
    529: ErrorKind.OVERLOADED,
}
_CONTEXT_LENGTH_CODES: Final = frozenset({"context_length_exceeded"})
# Anthropic sends no code for an over-long prompt, and OpenAI-compatible servers (vLLM and
# others) often send none either, so their documented wording is the only signal. Anthropic's second
# wording is for a prompt that fits but leaves no room for max_tokens ("input length and `max_tokens`
# exceed context limit: 198000 + 4096 > 200000, ..."), which it refuses rather than shortening the answer.
# Gemini says "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).", llama.cpp's
# server "request (4390 tokens) exceeds the available context size (4096 tokens), try increasing it", Hugging Face's
# text-generation-inference "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8192. Given: ..."
# (the prompt and max_tokens, as Anthropic's second wording) or "`inputs` must have less than 4096 tokens".
_CONTEXT_LENGTH_MESSAGES: Final = (
    "prompt is too long",
    "exceed context limit",
    "maximum context length",
    "exceeds the maximum number of tokens allowed",
    "exceeds the available context size",
    "`inputs` tokens + `max_new_tokens` must be",
    "`inputs` must have less than",
)
_CONTENT_FILTER_CODES: Final = frozenset({"content_filter", "content_policy_violation"})
# Azure's inner code of a content filter refusal: the only one left where a gateway relays the refusal under a code
# of its own ("400"), or where it is the top-level code.
_AZURE_FILTER_CODE: Final = "responsibleaipolicyviolation"  # ResponsibleAIPolicyViolation, compared in lower case
# Google refuses an API key it does not know, or one expired, with a 400 INVALID_ARGUMENT rather than a 401; the reason
# of the google.rpc.ErrorInfo among the error's details says so (Gemini's OpenAI-compatible endpoint included).
_AUTHENTICATION_CODES: Final = frozenset({"api_key_invalid"})
# Google's status for a request no request of the project can pass until its billing or region changes: Gemini's
# "free tier is not available in your country", "User location is not supported for the API use".
_GOOGLE_PERMISSION_STATUSES: Final = frozenset({"failed_precondition"})
# Out of money rather than over a rate: waiting a few seconds never helps.
_BILLING_CODES: Final = frozenset(
    {"insufficient_quota", "contract_spend_limit_reached", "enforced_spend_limit_reached"}
)
# What a code says of any 4xx, whatever its status (a context-length code or wording is checked first).
_CODE_KINDS: Final[Mapping[str, ErrorKind]] = {
    **dict.fromkeys(_CONTENT_FILTER_CODES, ErrorKind.CONTENT_FILTER),
    **dict.fromkeys(_BILLING_CODES, ErrorKind.PERMISSION),
    **dict.fromkeys(_AUTHENTICATION_CODES, ErrorKind.AUTHENTICATION),
    **dict.fromkeys(_GOOGLE_PERMISSION_STATUSES, ErrorKind.PERMISSION),
}
# The HTTP status Anthropic documents for each error.type. An error event in the middle of a
# stream arrives on a 200 response, so the type is the only clue to what happened.
_ANTHROPIC_TYPE_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# Of an error object that arrived on a 2xx (a gateway's, a proxy's, an error event in a stream), the HTTP status
# its code or type names where neither is a number: Anthropic's types (above), and the codes OpenAI sends with
# its 4xx and 5xx (whose type, "invalid_request_error" for a bad key too, says less).
_ERROR_NAME_STATUS: Final[Mapping[str, int]] = {
    **_ANTHROPIC_TYPE_STATUS,
    "context_length_exceeded": 400,
    "content_filter": 400,
    "content_policy_violation": 400,
    "invalid_api_key": 401,
    "model_not_found": 404,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
}


def kind_for_status(status: int, code: str | None = None, message: str | None = None) -> ErrorKind:
    """Classify an HTTP error status, refined by the provider's error code and message.

    This is the one status table every SDK's errors go through; see the module docstring.

    Args:
        status: The HTTP status code.
        code: The provider's machine-readable error code (OpenAI's ``error.code``,
            Anthropic's ``error.details.error_code``), if any. Compared case-insensitively.
        message: The provider's human-readable error message, if any. Only searched for
            the context-length wordings that come without a code ("prompt is too long",
            "exceed context limit", "maximum context length", Gemini's and llama.cpp's: see
            the module docstring), case-insensitively.

    Returns:
        The kind; UNKNOWN for a status that is not 4xx or 5xx.
    """
    if 400 <= status <= 499:
        normalized = code.strip().lower() if code else None
        if normalized in _CONTEXT_LENGTH_CODES or _says_context_length(message):
            return ErrorKind.CONTEXT_LENGTH
        coded = _CODE_KINDS.get(normalized) if normalized else None
        return coded or _STATUS_KINDS.get(status, ErrorKind.BAD_REQUEST)
    if 500 <= status <= 599:
        return _STATUS_KINDS.get(status, ErrorKind.SERVER_ERROR)
    return ErrorKind.UNKNOWN


def classify_error(exc: BaseException) -> ErrorKind:
    """Classify an exception raised by a provider SDK, its HTTP layer, or asyncio.

    Never imports an SDK and never raises.

    Args:
        exc: The exception, typically caught around a model client's ``create`` or
            ``create_stream``.

    Returns:
        The kind of failure; UNKNOWN when neither the exception nor its ``__cause__``
        chain (up to 5 links) is recognised.
    """
    current: BaseException | None = exc
    for _ in range(_MAX_CAUSE_DEPTH + 1):
        if current is None:
            break
        try:
            kind = _classify_one(current)
        except Exception:  # callers run this inside `except`; it must not replace their exception
            kind = ErrorKind.UNKNOWN
        if kind is not ErrorKind.UNKNOWN:
            return kind
        current = current.__cause__
    return ErrorKind.UNKNOWN


def http_status(exc: BaseException) -> int | None:
    """The HTTP status ``exc`` came with (its ``status_code``), or None when it has none.

    ollama's ``ResponseError`` for an ``{"error": ...}`` line inside a stream, which arrived on a 200, says
    ``status_code == -1``: no status, as the openai SDK's error for an SSE error event has none. Only a
    status from 100 to 599 is one.
    """
    status = _attr(exc, "status_code")
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        return status
    return None


def retry_after(exc: BaseException) -> float | None:
    """The wait the server asked for before the next attempt, in seconds.

    Read duck-typed from ``exc.response.headers`` (an ``httpx2`` or ``httpx``
    response for openai/anthropic ``APIStatusError`` and ``HTTPStatusError``),
    falling back to the ``__cause__`` chain. ``retry-after-ms`` (milliseconds),
    then Azure's ``x-ms-retry-after-ms`` (the same), take precedence over
    ``Retry-After`` (seconds, or an HTTP-date); a header that is malformed or
    negative is ignored. An HTTP-date is counted from the response's own
    ``Date`` (the server's clock, which may be off ours), else from our clock.
    Without a usable header, the ``retryDelay`` of a ``google.rpc.RetryInfo``
    in the error's ``details`` (``exc.body``, an object or a list as Gemini
    sends it), a protobuf Duration such as ``"37s"`` or ``"1.250s"``, counts
    the same; in another form it is ignored. ``x-ratelimit-reset-*`` is not
    read: it says when a window resets, not when to retry.

    Args:
        exc: The exception, typically a 429 or 503.

    Returns:
        Seconds to wait (0.0 for an HTTP-date not after the response's), ``math.inf`` when the
        number is too large for a float (the server wants a very long wait, so do
        not fall back to a short backoff), or None when no usable header or ``retryDelay`` was sent.
        Never raises: a broken header must not break the retry path.
    """
    asked = _from_headers(exc, _retry_after_from_headers)
    return asked if asked is not None else _from_chain(exc, _retry_delay_in_body)


def retry_refused(exc: BaseException) -> bool:
    """Whether the server said a retry will not help: ``x-should-retry: false`` on its response.

    The openai and anthropic SDKs obey the header (it is theirs, not a standard one); the wrapper switches
    their retries off and retries in their place, so it obeys it too. Read as :func:`retry_after` reads
    its headers; ``true``, which the SDKs take as leave to retry any status, is not read: what is retried
    stays a matter of the error's kind.

    Args:
        exc: The exception, typically a 429 or a 5xx.

    Returns:
        True only for ``x-should-retry: false`` (in any case). Never raises.
    """
    return _from_headers(exc, _should_retry_false) is True


def _from_headers(exc: BaseException, read: Callable[[object], _Read | None]) -> _Read | None:
    """``read(headers)`` of the first response in ``exc``'s ``__cause__`` chain for which it is not None."""
    return _from_chain(exc, lambda current: read(_attr(_attr(current, "response"), "headers")))


def _from_chain(exc: BaseException, read: Callable[[BaseException], _Read | None]) -> _Read | None:
    """``read(error)`` of the first error in ``exc``'s ``__cause__`` chain for which it is not None."""
    try:
        current: BaseException | None = exc
        for _ in range(_MAX_CAUSE_DEPTH + 1):
            if current is None:
                break
            found = read(current)
            if found is not None:
                return found
            current = current.__cause__
    except Exception:  # documented to never raise, whatever the exception carries
        return None
    return None


# --------------------------------------------------------------------------- classification


_Handler: TypeAlias = ErrorKind | Callable[[BaseException], ErrorKind]
# Per SDK module, (class attribute name, kind or classifier), most specific class first.
_Rules: TypeAlias = tuple[tuple[str, _Handler], ...]


def _connection(exc: BaseException) -> ErrorKind:
    # The openai and anthropic SDKs raise their APIConnectionError from any error of the HTTP client while the
    # response is read, httpx's DecodingError included: then the body arrived, and was malformed (broken gzip).
    cause = exc.__cause__
    if cause is not None and _classify_sdk(cause) is ErrorKind.INVALID_RESPONSE:
        return ErrorKind.INVALID_RESPONSE
    return ErrorKind.CONNECTION


def _openai_status(exc: BaseException) -> ErrorKind:
    return _by_status(exc, _attr(exc, "status_code"), _attr(exc, "body")) or ErrorKind.UNKNOWN


def _openai_error_event(exc: BaseException) -> ErrorKind:
    # An error object on a 200, as an SSE event's or a whole body's: decided by the status it names (see
    # _by_status_in_error); a failure of the server's when it names none.
    return _by_status_in_error(_attr(exc, "body")) or ErrorKind.SERVER_ERROR


def _by_status_in_error(error: object) -> ErrorKind | None:
    """The status table's verdict on an error object that arrived on a 2xx, by the status it names, else None.

    The status is its ``code`` where that is an HTTP error status (OpenRouter's ``502``, LiteLLM's ``"429"``), else
    the one its ``code`` or then its ``type`` names (`_ERROR_NAME_STATUS`: OpenAI's codes, Anthropic's types), else
    none; a message in a context-length wording is a ``CONTEXT_LENGTH`` whatever it came with.
    """
    code = _dig(error, "code")
    error_type = _first_str(_dig(error, "type"))
    message = _first_str(_dig(error, "message"), error)  # {"error": "..."}: the error is its message
    if isinstance(code, str) and code.isascii() and code.isdigit() and len(code) == 3:
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        # The code is the status; the type refines it as a code would (a billing type: out of quota, not a rate
        # limit), and the message as any status's (a context-length wording).
        return kind_for_status(code, error_type, message)
    name = _first_str(code)
    for named in (name, error_type):
        status = _ERROR_NAME_STATUS.get(named.strip().lower()) if named else None
        if status is not None:
            # A billing type stands in for a code, as on a 429 (see _by_status).
            return kind_for_status(status, name or error_type, message)
    return kind_for_status(400, None, message) if _says_context_length(message) else None


def _says_context_length(message: str | None) -> bool:
    lowered = message.lower() if message else ""
    return any(marker in lowered for marker in _CONTEXT_LENGTH_MESSAGES)


def _anthropic_status(exc: BaseException) -> ErrorKind:
    body = _attr(exc, "body")
    kind = _by_status(exc, _attr(exc, "status_code"), body)
    if kind is not None:
        return kind
    error_type = _first_str(_attr(exc, "type"), _dig(body, "error", "type"))
    status = _ANTHROPIC_TYPE_STATUS.get(error_type) if error_type else None
    if status is None:
        # An unrecognised error event mid-stream is still the server failing the response.
        return ErrorKind.SERVER_ERROR
    return kind_for_status(status, _error_code(exc, body), _error_message(exc, body))


def _ollama_status(exc: BaseException) -> ErrorKind:
    # -1 marks an {"error": ...} line inside a stream; the server gave up mid-response.
    return _by_status(exc, _attr(exc, "status_code"), None) or ErrorKind.SERVER_ERROR


def _httpx_status(exc: BaseException) -> ErrorKind:
    response = _attr(exc, "response")
    return _by_status(exc, _attr(response, "status_code"), _response_json(response)) or ErrorKind.UNKNOWN


_OPENAI_RULES: Final[_Rules] = (
    # APITimeoutError subclasses APIConnectionError, and APIResponseValidationError and
    # APIStatusError subclass APIError, so the order matters.
    ("APITimeoutError", ErrorKind.TIMEOUT),
    ("APIConnectionError", _connection),
    ("APIResponseValidationError", ErrorKind.INVALID_RESPONSE),
    ("APIStatusError", _openai_status),
    # A bare APIError is an SSE error event after the 200 was sent.
    ("APIError", _openai_error_event),
    ("LengthFinishReasonError", ErrorKind.INVALID_RESPONSE),
    ("ContentFilterFinishReasonError", ErrorKind.CONTENT_FILTER),
)
_ANTHROPIC_RULES: Final[_Rules] = (
    ("APITimeoutError", ErrorKind.TIMEOUT),
    ("APIConnectionError", _connection),
    ("APIResponseValidationError", ErrorKind.INVALID_RESPONSE),
    ("APIStatusError", _anthropic_status),
    ("APIError", ErrorKind.SERVER_ERROR),
    # Raised by middleware precisely to ask for a retry.
    ("RetryableError", ErrorKind.SERVER_ERROR),
    # Credentials that cannot be loaded will not load on the next attempt either.
    ("CredentialsError", ErrorKind.AUTHENTICATION),
)
_OLLAMA_RULES: Final[_Rules] = (("ResponseError", _ollama_status),)
_HTTPX_RULES: Final[_Rules] = (
    # TimeoutException subclasses TransportError.
    ("TimeoutException", ErrorKind.TIMEOUT),
    ("TransportError", ErrorKind.CONNECTION),
    # The body arrived but could not be decoded (e.g. broken gzip).
    ("DecodingError", ErrorKind.INVALID_RESPONSE),
    # A redirect loop is a misconfigured URL; it loops again on every attempt.
    ("TooManyRedirects", ErrorKind.BAD_REQUEST),
    ("HTTPStatusError", _httpx_status),
)
# openai and anthropic >= 1.0 use httpx2; anthropic 0.x (what AutoGen 0.7.5 needs) and ollama use legacy httpx;
# a custom http_client may be either.
_SDK_RULES: Final[tuple[tuple[str, _Rules], ...]] = (
    ("openai", _OPENAI_RULES),
    ("anthropic", _ANTHROPIC_RULES),
    ("ollama", _OLLAMA_RULES),
    ("httpx2", _HTTPX_RULES),
    ("httpx", _HTTPX_RULES),
)


# TimeoutError is an OSError, not a ConnectionError, so the order here is only for clarity.
_BUILTIN_RULES: Final[tuple[tuple[type[BaseException], ErrorKind], ...]] = (
    (TimeoutError, ErrorKind.TIMEOUT),
    (ConnectionError, ErrorKind.CONNECTION),
    # The openai SDK lets it escape unwrapped when a body labelled application/json does not parse.
    (json.JSONDecodeError, ErrorKind.INVALID_RESPONSE),
)


def _classify_one(exc: BaseException) -> ErrorKind:
    """Classify ``exc`` alone, without looking at its cause."""
    if not isinstance(exc, Exception):
        # CancelledError, KeyboardInterrupt, SystemExit: a request to stop, never a provider failure.
        return ErrorKind.CANCELLED
    return (
        _classify_own(exc)
        or _classify_sdk(exc)
        or _classify_builtin(exc)
        or _classify_duck_typed(exc)
        or ErrorKind.UNKNOWN
    )


def _classify_own(exc: BaseException) -> ErrorKind | None:
    """This library's errors that stand for a provider's failure, and a budget's refusal."""
    if isinstance(exc, ResponseValidationError):
        return ErrorKind.INVALID_RESPONSE
    if isinstance(exc, BudgetExceededError):
        # From a budgeted client this one wraps: like a provider's "out of credit", a person has to act. A retry,
        # a fallback (spending elsewhere what the budget refused) or a breaker counting it would defy the budget.
        return ErrorKind.PERMISSION
    if isinstance(exc, RetriesExhaustedError) and exc.kinds:
        return exc.kinds[-1]
    if isinstance(exc, MalformedResponseError | TruncatedStreamError):
        # A stream cut off ends as a connection reset mid-stream does: the request itself may be fine.
        return ErrorKind.CONNECTION if isinstance(exc, TruncatedStreamError) else ErrorKind.INVALID_RESPONSE
    if isinstance(exc, ProviderResponseError):
        return _openai_error_event(exc)
    return None


def _classify_sdk(exc: BaseException) -> ErrorKind | None:
    for module_name, rules in _SDK_RULES:
        if loaded_module(module_name) is None:
            continue
        for class_name, handler in rules:
            cls = loaded_class(module_name, class_name, BaseException)
            if cls is not None and isinstance(exc, cls):
                return handler if isinstance(handler, ErrorKind) else handler(exc)
    return None


def _classify_builtin(exc: BaseException) -> ErrorKind | None:
    for cls, kind in _BUILTIN_RULES:
        if isinstance(exc, cls):
            return kind
    # The openai SDK's structured-output parse() raises it for JSON that does not fit the schema.
    validation_error = loaded_class("pydantic_core", "ValidationError", BaseException)
    if validation_error is not None and isinstance(exc, validation_error):
        return ErrorKind.INVALID_RESPONSE
    return None


def _classify_duck_typed(exc: BaseException) -> ErrorKind | None:
    # Other SDKs: most expose the HTTP status as status_code, or on a requests-style response.
    body = _attr(exc, "body")
    return _by_status(exc, _attr(exc, "status_code"), body) or _by_status(
        exc, _attr(_attr(exc, "response"), "status_code"), body
    )


def _by_status(exc: BaseException, status: object, body: object) -> ErrorKind | None:
    """The status table's verdict, or None when ``status`` is not an HTTP error status."""
    # bool is an int; True is not a status code.
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        return None
    body = error_object(body)
    code = _error_code(exc, body)
    inner = (
        code,
        _dig(body, "innererror", "code"),
        _dig(body, "provider_specific_fields", "innererror", "code"),  # LiteLLM's proxy relaying Azure's
    )
    if any(isinstance(found, str) and found.strip().lower() == _AZURE_FILTER_CODE for found in inner):
        code = "content_filter"
    if code is None:
        # OpenAI has sent an exhausted quota as {"type": "insufficient_quota", "code": null}: a 429 that only its
        # type tells apart from a rate limit. Only a billing type stands in for the code: the others ("requests",
        # "invalid_request_error", ...) say no more than the status does.
        error_type = _first_str(_attr(exc, "type"), _dig(body, "type"), _dig(body, "error", "type"))
        if error_type is not None and error_type.strip().lower() in _BILLING_CODES:
            code = error_type
        else:
            code = _google_reason(body)
    return kind_for_status(status, code, _error_message(exc, body))


def _google_reason(error: object) -> str | None:
    """Google's code of an error object: the ``reason`` of a ``google.rpc.ErrorInfo`` among its ``details``, else
    its ``status`` when that is ``FAILED_PRECONDITION`` (other statuses say no more than the HTTP status)."""
    details = _dig(error, "details")
    if isinstance(details, list):
        for detail in details:
            if isinstance(detail, Mapping) and detail.get("@type") == _ERROR_INFO:
                return _first_str(detail.get("reason"))
    status = _first_str(_dig(error, "status"))
    return status if status is not None and status.lower() in _GOOGLE_PERMISSION_STATUSES else None


def _error_code(exc: BaseException, body: object) -> str | None:
    # openai exposes it as .code (from body["code"]), anthropic as .error_code (from
    # body["error"]["details"]["error_code"]); other shapes nest it under "error".
    return _first_str(
        _attr(exc, "code"),
        _attr(exc, "error_code"),
        _dig(body, "code"),
        _dig(body, "error", "code"),
        _dig(body, "error", "details", "error_code"),
        _dig(body, "details", "error_code"),
    )


def _error_message(exc: BaseException, body: object) -> str | None:
    # ollama keeps the server's text in .error; anthropic in .api_message; openai's .message
    # repeats it after "Error code: NNN - ".
    found = _first_str(
        _dig(body, "message"),
        _dig(body, "error", "message"),
        body,  # {"error": "..."}: the SDK keeps the string as the body; a page that is not JSON as well
        _attr(exc, "api_message"),
        _attr(exc, "error"),
        _attr(exc, "message"),
    )
    if found is not None:
        return found
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break classification
        return None


def _response_json(response: object) -> object:
    """The parsed body of an httpx/httpx2 response, or None if it is unread or not JSON."""
    if response is None:
        return None
    try:
        # The SDK response types are untyped here: duck-typed across httpx and httpx2.
        parse: object = getattr(response, "json", None)
        return parse() if callable(parse) else None
    except Exception:  # ResponseNotRead, JSONDecodeError, decoding errors alike
        return None


def _attr(obj: object, name: str) -> object:
    """``getattr(obj, name, None)``, also when the attribute is a property that raises."""
    if obj is None:
        return None
    try:
        value: object = getattr(obj, name, None)
    except Exception:  # classification must survive odd exception objects
        return None
    return value


def _dig(obj: object, *path: str) -> object:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _first_str(*candidates: object) -> str | None:
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


# --------------------------------------------------------------------------- Retry-After


def _retry_after_from_headers(headers: object) -> float | None:
    if headers is None:
        return None
    # x-ms-retry-after-ms: Azure's services' name for the same (azure-core's retry policy reads both).
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        millis = _parse_delay(_header(headers, name))
        if millis is not None:
            return millis / 1000
    raw = _header(headers, "retry-after")
    seconds = _parse_delay(raw)
    if seconds is not None:
        return seconds
    when = _parse_http_date(raw)
    if when is None:
        return None
    # The server's Date is on the clock its Retry-After is: the wait is their difference, whatever the skew between
    # its clock and ours (as a cache reads Expires against Date, RFC 9111 4.2.1). Without one, our clock.
    now = _parse_http_date(_header(headers, "date")) or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _retry_delay_in_body(exc: BaseException) -> float | None:
    """The ``retryDelay`` of a ``google.rpc.RetryInfo`` among the ``details`` of the error body the SDK kept.

    Gemini's OpenAI-compatible endpoint sends no ``Retry-After`` with its 429: the wait it asks for is in the body,
    ``[{"error": {"code": 429, ..., "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
    "retryDelay": "37s"}]}}]``, a list the SDK keeps as it is, or an object whose ``error`` it keeps.
    """
    error = error_object(_attr(exc, "body"))
    details = _dig(error, "details")
    if details is None:
        details = _dig(error, "error", "details")
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, Mapping) and detail.get("@type") == _RETRY_INFO:
            return _parse_duration(detail.get("retryDelay"))
    return None


_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO: Final = "type.googleapis.com/google.rpc.ErrorInfo"


def _parse_duration(raw: object) -> float | None:
    """Seconds of a protobuf ``Duration`` in its JSON form (``"37s"``, ``"1.250s"``), else None.

    Digits, an optional fraction and ``s`` only; a negative one is no wait, and one too big for a float is ``math.inf``.
    """
    if not isinstance(raw, str) or _DURATION.fullmatch(raw) is None:
        return None
    return float(raw[:-1])


_DURATION = re.compile(r"[0-9]+(?:\.[0-9]+)?s")


def _should_retry_false(headers: object) -> bool | None:
    value = _header(headers, "x-should-retry")
    return True if value is not None and value.lower() == "false" else None


def _header(headers: object, name: str) -> str | None:
    """A header value, case-insensitively, from httpx/httpx2 ``Headers`` or a plain mapping."""
    value: object = None
    if isinstance(headers, Mapping):
        # httpx and httpx2 Headers are Mappings with case-insensitive get(); a dict is not.
        value = headers.get(name)
        if value is None:
            value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.strip() if isinstance(value, str) else None


def _parse_delay(raw: str | None) -> float | None:
    """A non-negative number of units, ``math.inf`` for one too big for a float, else None.

    Digits, a decimal point and an exponent only (RFC 9110's delay-seconds are digits; ``retry-after-ms`` may carry
    a fraction): ``float()`` alone would also read ``"1_0"`` as 10, ``"inf"``, ``"nan"`` and other scripts' digits.
    """
    if not raw or _DELAY.fullmatch(raw) is None:
        return None
    return float(raw)  # 400 digits is a server asking for a very long wait: inf


_DELAY = re.compile(r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")


def _parse_http_date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 9110: an HTTP-date is always GMT; "-0000" parses as naive.
        when = when.replace(tzinfo=UTC)
    return when
