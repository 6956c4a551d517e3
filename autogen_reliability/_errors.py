"""The exceptions autogen-reliability raises.

Errors of the provider (a rate limit, a bad request) are raised as the provider
SDK's own exceptions, unchanged; the classes here describe what *our* layer
decided or detected::

    ReliabilityError
    ├── ConfigurationError      (also a ValueError)
    ├── IncompleteStreamError
    │   └── TruncatedStreamError (a stream's body ended before its answer did: no finish reason, no [DONE])
    ├── ProviderResponseError   (a 2xx response whose body was an error object, not a completion)
    │   └── MalformedResponseError (... or neither: an HTML page, an empty body, a stream without events)
    ├── RetriesExhaustedError   (raised from a redacted copy of the last provider error)
    ├── CircuitOpenError
    ├── BudgetExceededError     (no request was sent: the scope's spend in the period reached its limit)
    ├── AllClientsFailedError   (also an ExceptionGroup: one (redacted) error per client tried)
    └── ResponseValidationError (the model's answer stayed invalid after re-asking)

A provider error that is not retried (a bad request, a failed authentication)
is never wrapped: it reaches the caller as the SDK raised it. The exception is
an error the SDK does not see as one: a provider that answers HTTP 200 with an
error body, which AutoGen's client fails on with a ``TypeError`` (or reads as an
empty stream), reaches the caller as :class:`ProviderResponseError`; one whose body
is no completion at all, as :class:`MalformedResponseError`.
"""

from __future__ import annotations

import enum
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from ._secret_text import redact

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "AllClientsFailedError",
    "BudgetExceededError",
    "CircuitOpenError",
    "ConfigurationError",
    "ErrorKind",
    "IncompleteStreamError",
    "MalformedResponseError",
    "ProviderResponseError",
    "ReliabilityError",
    "ResponseValidationError",
    "RetriesExhaustedError",
    "SchemaViolation",
    "TruncatedStreamError",
    "config_options",
    "describe_budget_key",
    "describe_period",
    "error_object",
    "format_usd",
    "is_finite",
    "printable",
    "shown_number",
    "shown_text",
    "validation_problems",
]

# The shared vocabulary: what went wrong with a provider request, and where an answer broke its schema.
# Defined here, below every stage, so that the errors, retry/ and validation/ need not import each other.


class ErrorKind(enum.Enum):
    """What went wrong with a provider request, whatever SDK raised it."""

    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    SERVER_ERROR = "server_error"
    OVERLOADED = "overloaded"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length"
    CONTENT_FILTER = "content_filter"
    INVALID_RESPONSE = "invalid_response"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One way in which a value does not match a schema.

    ``str()`` of it is ``"path: message"`` with every character that is not printable
    (control characters, escape sequences, bidi and invisible characters, which a
    model can put in a key) escaped as Python writes it (``\\x1b``), so that showing
    or logging it cannot act on a terminal.

    Attributes:
        path: JSON pointer (RFC 6901) to the offending part of the value, ``""`` for
            the value itself, e.g. ``"/items/0/name"``. A missing property is
            located where pydantic puts it, at the property (``"/age"``), and
            where JSON Schema puts it, at the object that lacks it (``""``).
            Exact, as a pointer must be: a key's characters are not escaped here.
        message: A concise human message, e.g. ``"Input should be a valid integer"``.
            What it quotes of the value is escaped as in ``str()``.

    Example:
        >>> str(SchemaViolation("/items/0/name", "Input should be a valid string"))
        '/items/0/name: Input should be a valid string'
        >>> str(SchemaViolation("", "'age' is a required property"))
        "(root): 'age' is a required property"
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{printable(self.path) or '(root)'}: {printable(self.message)}"


def printable(text: str) -> str:
    """``text`` with each character that is not printable escaped as Python writes it (``"\\x1b"``, ``"\\u202e"``).

    For text a model wrote that goes into a message a person reads on a terminal or in a log: an escape
    sequence, a carriage return or a bidi override in it would act there. ``printable(printable(t)) ==
    printable(t)``.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


GiveUpReason = Literal["attempts", "deadline", "budget"]


class ReliabilityError(Exception):
    """Base class of every exception raised by autogen-reliability itself."""

    def __reduce__(self) -> tuple[Callable[..., BaseException], tuple[Any, ...], dict[str, Any]]:
        # Pickled (by a process pool's worker, by copy.copy) as its message and attributes, and rebuilt without
        # __init__: BaseException's way calls the class with the message alone, which the errors that take their
        # fields (BudgetExceededError(scope=..., ...)) refuse, and a pool that cannot unpickle an error breaks.
        return _reduction(self)


def _reduction(error: BaseException) -> tuple[Callable[..., BaseException], tuple[Any, ...], dict[str, Any]]:
    """How pickle rebuilds ``error``: by ``__new__`` with its args, then its attributes; a group's members so too.

    The members of an :class:`AllClientsFailedError` are provider errors too (a context length exceeded, a
    transient error the policy does not retry), and the SDKs' take keyword arguments BaseException's way does
    not give (``openai.APIStatusError(message, *, response, body)``): rebuilt so, they unpickle as ours do.
    """
    args = error.args
    if isinstance(error, BaseExceptionGroup):
        args = (error.message, [_Portable(member) for member in error.exceptions])
    return _rebuilt, (type(error), args), dict(vars(error))


class _Portable:
    """A member of an exception group as pickle sees it: written, and so read back, as :func:`_reduction` says."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Callable[..., BaseException], tuple[Any, ...], dict[str, Any]]:
        return _reduction(self.error)


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """An error of ``cls`` with ``args`` (its message), its attributes set by pickle afterwards.

    A group's members arrive rebuilt from pickle, and as they were (each in its :class:`_Portable`) from
    ``copy.copy``, which reuses them.
    """
    if issubclass(cls, BaseExceptionGroup):
        message, members = args
        args = (message, [member.error if isinstance(member, _Portable) else member for member in members])
    return cls.__new__(cls, *args)


class ConfigurationError(ReliabilityError, ValueError):
    """Raised at construction when an option is invalid; the message says which and why.

    The message quotes the value it refuses, unless it is a secret: it is redacted as every text of ours is (see
    ``_secret_text.redact``), so that an API key given by mistake to another option (``project=``, a tag, the
    query of a database URL) shows as ``[REDACTED]``, as does the key of any client a wrapper was built around.
    """

    def __init__(self, *args: object) -> None:
        # Here, not at each of the messages that quote a value: every one of them goes through this.
        super().__init__(*(redact(arg, limit=sys.maxsize) if isinstance(arg, str) else arg for arg in args))


def is_finite(number: float) -> bool:
    """``math.isfinite(number)``, but False for an int too large for a float, where it raises ``OverflowError``."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def shown_number(value: object) -> str:
    """``repr(value)`` for an error message; an int too large for a float by its size (a repr of more than
    4,300 digits raises ``ValueError``, and one of 400 is no help)."""
    if isinstance(value, int) and not isinstance(value, bool) and not is_finite(value):
        return f"an int too large for a float ({value.bit_length()} bits)"
    return repr(value)


def check_clock(name: str, clock: object, *, reads: str, hashable: bool = True) -> float:
    """Refuses, at construction, a clock a shared breaker, retry budget or budget tracker could not run on; returns
    what it read.

    It must be callable and hashable: the breakers and trackers that wrappers share are found by their policy,
    clock included (an unhashable one failed at ``reliable()`` with a bare ``TypeError``). And it must read a
    finite number: read once here, as it is at every call, since a clock read only later (a breaker's, when the
    circuit opens) would fail then, in the middle of an outage, with the provider's error lost.

    Args:
        name: The option, as the message names it.
        clock: The option's value.
        reads: What the clock reads, for the message: ``"seconds as a number (as time.monotonic does)"``.
        hashable: Whether it must be hashable (False for a clock nothing shared is looked up by: the health
            probe's).
    """
    if not callable(clock):
        raise ConfigurationError(f"{name} must be callable, got {type(clock).__name__}")
    try:
        if hashable:
            hash(clock)
    except TypeError:
        raise ConfigurationError(
            f"{name} must be hashable (a function or a method is), got {type(clock).__name__}"
        ) from None
    now = clock()
    if isinstance(now, bool) or not isinstance(now, int | float) or not is_finite(now):
        shown = shown_number(now) if isinstance(now, int | float) else f"a {type(now).__name__}"
        raise ConfigurationError(f"{name} must read {reads}, got {shown}")
    return float(now)


def config_options(owner: type[DataclassInstance], config: object) -> dict[str, Any]:
    """``config``, a policy's ``from_config`` mapping, as keyword arguments of the dataclass ``owner``.

    A misspelt option is refused by name, with the options there are, and a missing one is named, rather
    than left to the ``TypeError`` of an unexpected keyword or of a missing argument.
    """
    name = owner.__name__
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"a {name} config must be a mapping, not {type(config).__name__}")
    options = [option for option in fields(owner) if option.init]
    known = sorted(option.name for option in options)
    unknown = sorted(str(key) for key in config if key not in known)
    if unknown:
        raise ConfigurationError(f"unknown {name} option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    missing = [
        option.name
        for option in options
        if option.name not in config and option.default is MISSING and option.default_factory is MISSING
    ]
    if missing:
        raise ConfigurationError(f"a {name} config needs {', '.join(missing)}")
    return dict(config)


class ComponentConfig(BaseModel):
    """The config model of one of our AutoGen components: a config of the wrong shape is a :class:`ConfigurationError`.

    AutoGen's ``load_component`` validates a component's config with ``model_validate`` before calling
    ``_from_config``; a component that cannot be loaded is refused as every invalid option of it is, naming
    each key and what is wrong with it, never with pydantic's ``ValidationError``, whose text repeats the
    values it was given (an API key among them). An unknown key is refused too, as our policies'
    ``from_config`` refuse one: a misspelt ``"budegt"`` would otherwise load a wrapper without its budget.
    """

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as error:
            name = cls.__name__.removesuffix("Config")
            # Not chained: the ValidationError's text repeats the values.
            raise ConfigurationError(f"a {name} config is invalid: {validation_problems(error)}") from None


def validation_problems(error: ValidationError, within: str = "") -> str:
    """What pydantic refused, each key (under ``within``) and what is wrong with it, without the values it was given.

    ``str(error)`` quotes them (``input_value={'api_key': 'sk-proj-...', ...}``): an API key among them.
    """
    return "; ".join(
        f"{'.'.join((*([within] if within else []), *map(str, problem['loc']))) or '<config>'}: "
        + ("unknown option" if problem["type"] == "extra_forbidden" else problem["msg"])
        for problem in error.errors(include_url=False, include_input=False)
    )


class IncompleteStreamError(ReliabilityError):
    """Describes a stream from the inner client that ended without its final ``CreateResult``."""


class TruncatedStreamError(IncompleteStreamError):
    """Raised when a stream's body ended cleanly before the provider's answer did.

    No event in its last chunks gave a finish reason (OpenAI's ``finish_reason``, Anthropic's ``stop_reason`` or
    ``message_stop``) and none was ``data: [DONE]``: what a proxy that drops a stream's tail sends, or a
    close-delimited response cut off. The openai SDK reads such a body to its end without an error, and
    AutoGen's client hands on what arrived as the answer, with finish reason ``"unknown"``; the wrapper raises
    this instead of that final result. Text chunks already handed on stay handed on; a stream that handed on
    nothing (a tool call's: AutoGen holds it until the end) is retried.
    :func:`~autogen_reliability.retry.classify_error` classifies it as ``CONNECTION``, as a connection reset
    mid-stream is.

    Attributes:
        status_code: The HTTP status the stream was sent with (a 2xx, usually 200).
    """

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(f"HTTP {status_code} stream ended before its answer did: no finish reason and no data: [DONE]")


def error_object(body: object) -> object:
    """The error object of an error body as the SDK keeps it (a JSON object's ``error`` member, or the body).

    Gemini's OpenAI-compatible endpoint puts its error object inside a list, ``[{"error": {"code": 400, "message":
    ...}}]``, which the SDK keeps as it is: the object of its first item is the error.
    """
    if isinstance(body, list) and body and isinstance(body[0], Mapping):
        first: Mapping[str, object] = body[0]
        error = first.get("error")
        return error if isinstance(error, Mapping) else first
    return body


class ProviderResponseError(ReliabilityError):
    """Raised when a provider answered a successful HTTP status with an error object instead of a completion.

    OpenRouter does so when a request fails once accepted (the upstream provider failed, or generation had
    begun): status 200, body ``{"error": {"code": 502, "message": "..."}}``. AutoGen's OpenAI client finds no
    completion in it and fails with a ``TypeError`` (a stream: ends empty); the wrapper raises this instead.
    :func:`~autogen_reliability.retry.classify_error` classifies it as the HTTP status its ``code`` names
    (502 a server error, retried; 429 a rate limit; 401 an authentication error, never retried; OpenAI's
    ``"context_length_exceeded"`` a 400 whose prompt is too long), else its ``type`` (Anthropic's
    ``"authentication_error"``, ``"overloaded_error"``, ...: a gateway passing Anthropic's error on with a 200),
    and as a server error when neither names one, as it does an error event in a stream. Its texts have
    secrets redacted, as every error of ours.

    Attributes:
        status_code: The HTTP status the response was sent with (a 2xx, usually 200), which the usage row's
            ``http_status`` records; the status the provider meant is ``code``.
        code: The error object's ``code`` as the provider wrote it (OpenRouter's is the HTTP status: ``502``),
            or None.
        body: The ``error`` member of the response body (an object, or the string some servers send).
        message: The provider's message (``error.message``, or the error itself where it is a string), or None;
            whole, while the error's text cuts it at 1,000 characters (see :func:`shown_text`) and shows its
            control and bidi characters as escapes (``\\n``, ``\\x1b``).
    """

    def __init__(self, status_code: int, body: object) -> None:
        self.status_code = status_code
        self.body = body
        self.code: object = body.get("code") if isinstance(body, Mapping) else None
        message = body.get("message") if isinstance(body, Mapping) else body
        self.message = message if isinstance(message, str) and message else None
        code = f" (code {self.code})" if isinstance(self.code, str | int) and not isinstance(self.code, bool) else ""
        shown = printable(shown_text(self.message)) if self.message else "no message"
        super().__init__(f"HTTP {status_code} with an error instead of a completion{code}: {shown}")


# The most characters of a provider's message that the text of our error repeats (its field keeps it whole).
_SHOWN_CHARS: Final = 1000


def shown_text(text: str) -> str:
    """``text``, a provider's message, fit for an error's text: cut at a space within 1,000 characters, ``…`` added.

    A gateway may send the upstream's whole page as the message, and the error's text is every traceback's, log
    line's and team's ``RuntimeError``'s. The cut drops the word it falls in: a key cut in two would show its head,
    which redaction (done afterwards, on the whole text) may no longer know for one.
    """
    if len(text) <= _SHOWN_CHARS:
        return text
    head = text[:_SHOWN_CHARS]
    if not text[_SHOWN_CHARS].isspace():
        head = re.sub(r"\S+$", "", head)
    return f"{head.rstrip()} …".lstrip()


# What a body the usage tap read was (providers.BodyShape), as the message of a MalformedResponseError says it.
_SHAPES: Final[Mapping[str, str]] = {
    "completion": "a JSON completion",
    "object": "a JSON object that holds no completion",
    "events": "server-sent events",
    "empty": "an empty body",
    "other": "a body that is neither a JSON object nor server-sent events",
}


class MalformedResponseError(ProviderResponseError):
    """Raised when a provider answered a successful HTTP status with a body that is not a completion at all.

    A proxy's HTML error page sent with status 200, an empty body, JSON that is not an object or holds no
    completion (``"choices": []``, a choice without its ``message``), or, for a
    stream, a body without a single server-sent event (a JSON completion from a server that ignored
    ``"stream": true`` included). AutoGen's OpenAI client fails on the first with an ``AttributeError``
    (the openai SDK hands it the text of a body that is not JSON) and reads the last as an empty answer
    (``""``, finish reason ``"unknown"``); the wrapper raises this instead.
    :func:`~autogen_reliability.retry.classify_error` classifies it as ``INVALID_RESPONSE``. The body is not
    repeated in the message: it says only what the body was.

    Attributes:
        status_code: The HTTP status the response was sent with (a 2xx, usually 200).
        shape: What the body was: ``"completion"`` (a JSON completion), ``"object"`` (a JSON object that holds
            none: ``"choices": []``, a choice without its ``message``), ``"events"``, ``"empty"`` or ``"other"``
            (anything else: HTML, text, broken JSON, JSON that is not an object, an event stream without an event).
        code: None. body: None. message: What the body was, in words.
    """

    def __init__(self, status_code: int, shape: str, *, stream: bool) -> None:
        self.status_code = status_code
        self.shape = shape
        self.code = None
        self.body = None
        self.message = _SHAPES.get(shape, shape)
        wanted = "a stream of server-sent events" if stream else "a completion"
        ReliabilityError.__init__(self, f"HTTP {status_code} with {self.message} instead of {wanted}")


class RetriesExhaustedError(ReliabilityError):
    """Raised when a retryable provider error persisted and the retry policy gave up.

    The ``__cause__`` is a redacted copy of the last provider error: the same
    class and fields, no secret (see :func:`~autogen_reliability._redaction.redacted_error`).
    A call whose deadline passed during an attempt has none: that attempt was cancelled, as its provider had
    not answered in time.

    Attributes:
        attempts: How many attempts were made.
        kinds: The :class:`~autogen_reliability.ErrorKind` of each failed attempt, in order
            (``TIMEOUT`` for an attempt the deadline cut short, as for one the SDK's own timeout ended).
        reason: Why retrying stopped: ``"attempts"`` (the policy's ``max_attempts``),
            ``"deadline"`` (the deadline passed during an attempt, which was cancelled,
            or the next wait would pass it) or ``"budget"`` (the retry budget shared by
            this provider client is spent).
        deadline: The policy's deadline in seconds, when ``reason`` is ``"deadline"``.
    """

    def __init__(
        self,
        attempts: int,
        kinds: Sequence[ErrorKind],
        reason: GiveUpReason,
        last_error: str,
        *,
        deadline: float | None = None,
        in_flight: bool = False,
    ) -> None:
        self.attempts = attempts
        self.kinds = tuple(kinds)
        self.reason: GiveUpReason = reason
        self.deadline = deadline
        named = f"the deadline ({deadline:g} s)" if deadline is not None else "the deadline"
        why = {
            "attempts": "no attempts left",
            "deadline": f"{named} passed during attempt {attempts}, which was cancelled"
            if in_flight
            else f"the next wait would pass {named}",
            "budget": "the retry budget for this client is spent",
        }[reason]
        kinds_text = ", ".join(kind.value for kind in self.kinds)
        # The provider's text, on one line and with its escape sequences shown (see printable()).
        last = printable(last_error)
        super().__init__(f"gave up after {attempts} attempt(s) ({kinds_text}): {why}; last error: {last}")


class CircuitOpenError(ReliabilityError):
    """Raised without any request when the circuit breaker of a provider client is open.

    Attributes:
        client: A short description of the client whose circuit is open.
        retry_in: Seconds until the circuit lets a probe request through; 0 while it is half-open and its
            probes are all in flight (the next is let through when one ends).
        probes_in_flight: The probe requests under way while half-open (0 while the circuit is open).
    """

    def __init__(self, client: str, retry_in: float, failures: int, window: int, *, probes_in_flight: int = 0) -> None:
        self.client = client
        self.retry_in = retry_in
        self.probes_in_flight = probes_in_flight
        why = f"{failures} of the last {window} attempts failed"
        if probes_in_flight:
            # Half-open: "next probe allowed in 0.0 s" would say to try again at once, and that is refused too.
            message = (
                f"circuit half-open for {client}: {why}; {probes_in_flight} probe request(s) in flight, "
                "no other is sent until one ends"
            )
        else:
            message = f"circuit open for {client}: {why}; next probe allowed in {retry_in:.1f} s"
        super().__init__(message)


class BudgetExceededError(ReliabilityError):
    """Raised without any request when the spend of the call's budget scope in the period reached its limit.

    The spend is what the usage ledger holds for the scope and period plus this
    process's rows not yet written to it (see ``docs/budgets.md``). Unpriced
    attempts have no cost and are not in ``spent_usd``; ``unpriced`` says how many
    there were.

    Attributes:
        scope: ``"project"``, ``"session"`` or ``"agent"``: what the budget is kept per.
        key: The call's value of that scope (its project, session or agent; ``None`` when
            the call had none: such calls share one budget).
        project: The call's project (a session's or agent's budget is kept within its project).
        period: ``"day"``, ``"week"``, ``"month"`` (UTC), or ``None`` (all time).
        period_start: When the period began (UTC); ``None`` for all time.
        limit_usd: The limit.
        spent_usd: The priced spend counted, exact.
        unpriced: Attempts in the period whose cost is unknown (a model without a price).
    """

    def __init__(
        self,
        *,
        scope: str,
        key: str | None,
        project: str | None,
        period: str | None,
        period_start: datetime | None,
        limit_usd: Decimal,
        spent_usd: Decimal,
        unpriced: int = 0,
    ) -> None:
        self.scope = scope
        self.key = key
        self.project = project
        self.period = period
        self.period_start = period_start
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.unpriced = unpriced
        super().__init__(
            f"budget exceeded for {describe_budget_key(scope, key, project)}: ${format_usd(spent_usd)} spent "
            f"of ${format_usd(limit_usd)} {describe_period(period, period_start)}; no request was sent"
            + (f" ({unpriced} unpriced attempt(s) are not counted: their cost is unknown)" if unpriced else "")
        )


# Money in messages is shown in a context of its own: the caller's (decimal.getcontext(), which an application may
# have set to a few digits) would round the amount, or refuse to quantize it (InvalidOperation).
_EXACT_USD: Final = Context(prec=60)


def format_usd(amount: Decimal) -> str:
    """An exact amount of USD for a message: cents at least, more digits only where there are more."""
    cents = amount.quantize(Decimal("0.01"), context=_EXACT_USD)
    return f"{cents:f}" if cents == amount else f"{amount.normalize(_EXACT_USD):f}"


def describe_budget_key(scope: str, key: str | None, project: str | None) -> str:
    """``project 'acme'``, ``session 't-1' of project 'acme'``, ``calls without an agent``..."""
    named = f"{scope} {key!r}" if key is not None else f"calls without {'an' if scope == 'agent' else 'a'} {scope}"
    if scope == "project":
        return named
    return f"{named} of project {project!r}" if project is not None else f"{named} without a project"


def describe_period(period: str | None, start: datetime | None) -> str:
    """``this day (since 2026-05-01 00:00 UTC)``, or ``in all`` for a budget without a period."""
    if period is None or start is None:
        return "in all"
    return f"this {period} (since {start:%Y-%m-%d %H:%M} UTC)"


class AllClientsFailedError(ReliabilityError, ExceptionGroup[Exception]):
    """Raised when the primary client and every fallback failed; holds one error per client, in order."""

    def __new__(cls, message: str, errors: Sequence[Exception]) -> AllClientsFailedError:
        return super().__new__(cls, message, errors)

    def derive(self, excs: Sequence[Exception]) -> AllClientsFailedError:  # type: ignore[override]
        return AllClientsFailedError(self.message, excs)


class ResponseValidationError(ReliabilityError):
    """Raised when the model's answer is still invalid after every re-ask the policy allows.

    Its message lists the first violations, with every secret they quote of the answer redacted (a key or a
    password the model copied into a field): it is what logs print. ``errors`` and ``raw`` keep them as they were.

    Attributes:
        errors: Every violation of the last answer (``path`` and ``message`` each).
        raw: The last answer's text as the model wrote it (tool calls rendered as JSON).
        attempts: How many answers were asked for (1 + re-asks).
    """

    def __init__(self, errors: Sequence[SchemaViolation], raw: str, attempts: int) -> None:
        self.errors = tuple(errors)
        self.raw = raw
        self.attempts = attempts
        shown = redact("; ".join(str(error) for error in self.errors[:5]), limit=sys.maxsize)
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"the model's answer was invalid after {attempts} attempt(s): {shown}{more}")
