"""Classified retries with backoff that honours ``Retry-After``: the policy, in tenacity's terms.

:class:`RetryPolicy` says when to retry; :class:`~autogen_reliability.retry._layer.RetryLayer`
applies it to each call of the wrapped client. As stamina does, the policy is
converted once, at construction, into tenacity's own strategies, which the
layer composes with ``|``; tenacity's defaults (retry any exception, forever,
and hide the error in a ``RetryError``) are not used:

- only the :class:`~autogen_reliability.ErrorKind` values in ``retry_on`` are
  retried; anything else (a bad request, a cancellation) is re-raised at once,
  unchanged;
- ``stop_after_attempt(max_attempts) | StopBeforeDeadline(...) |
  StopWhenBudgetSpent(...)``: attempts, the deadline of the logical call (waits
  included) and the retry budget shared by all wrappers of the same provider
  client all bound it (a rate limit retried at the server's own ``Retry-After``
  takes no token of the budget);
- the wait is the longer of the server's ``Retry-After`` and tenacity's
  exponential backoff with full jitter (``wait_random_exponential``, capped at
  ``max_delay``); a server asking for more than ``max_retry_after`` gets its
  error raised at once rather than a long sleep;
- when retrying stops, :class:`~autogen_reliability.RetriesExhaustedError` is
  raised *from* the last provider error.

Time is a parameter: the policy's ``clock`` measures the deadline and each
:class:`RetryEvent`'s ``elapsed``, its ``sleep`` waits between attempts, so a
test injects both instead of sleeping. Each retry is handed to the process-wide
hooks (:func:`get_on_retry_hooks`; by default :func:`log_retry`, one WARNING
line) and then to the wrapper's own ``on_retry`` hooks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from tenacity import RetryCallState, stop_after_attempt, wait_exponential, wait_random_exponential
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .._errors import ConfigurationError, check_clock, config_options, is_finite, printable, shown_number
from .._pipeline import Call
from .._redaction import message_of, redact
from ._budget import RetryBudget, RetryBudgetState
from ._classify import NEVER_RETRIED, RETRYABLE_BY_DEFAULT, ErrorKind, classify_error, retry_after

__all__ = [
    "MONOTONIC_SECONDS",
    "RetryEvent",
    "RetryObserver",
    "RetryPolicy",
    "StopBeforeDeadline",
    "StopWhenBudgetSpent",
    "WaitRetryAfter",
    "as_seconds",
    "get_on_retry_hooks",
    "is_testing",
    "log_retry",
    "set_on_retry_hooks",
    "set_testing",
]

MONOTONIC_SECONDS: Final = "seconds as a number (as time.monotonic does)"
"""What the clocks of the retry policy and the circuit breaker read, as their errors say."""

logger = logging.getLogger("autogen_reliability")

MAX_ATTEMPTS_CEILING: Final = 10
_testing = False


def set_testing(enabled: bool) -> None:
    """Test mode: every retry wait becomes zero (attempts, deadlines and budgets still apply).

    Meant for the test suites of applications built on this library, so that
    a test of a 429 storm does not sleep.
    """
    global _testing  # noqa: PLW0603  # one process-wide switch, like stamina's
    _testing = bool(enabled)


def is_testing() -> bool:
    """Whether :func:`set_testing` turned test mode on."""
    return _testing


def as_seconds(name: str, value: float | timedelta, *, allow_zero: bool = True) -> float:
    """``value`` in seconds; a clear :class:`ConfigurationError` when it is not a finite, non-negative duration."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(f"{name} must be seconds (a number) or a timedelta, got {type(value).__name__}")
    if not is_finite(seconds):
        raise ConfigurationError(f"{name} must be finite, got {shown_number(value)}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value!r}")
    return float(seconds)


class WaitRetryAfter(wait_base):
    """At least what the server asked for (``Retry-After``, ...: see :func:`retry_after`), else ``backoff``'s wait.

    Not ``backoff + ...``: tenacity's ``+`` adds waits up, and a server's
    ``Retry-After`` is a floor, not an extra. Not tenacity's ``wait_exception``
    either: it came in tenacity 9.2, and we support 9.0.
    """

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = self.backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome is not None else None
        asked = retry_after(error) if error is not None else None
        return backoff if asked is None else max(backoff, asked)


class StopBeforeDeadline(stop_base):
    """Stops when the next attempt would start more than ``deadline`` seconds after ``start``, on ``clock``.

    tenacity's ``stop_before_delay`` measures from the start of its own loop on
    ``time.monotonic``; the deadline covers the whole call, whose first attempt
    runs before the loop (see ``RetryLayer``), and time is injectable.
    """

    def __init__(self, deadline: float, start: float, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.start = start
        self.clock = clock
        self.fired = False

    def __call__(self, retry_state: RetryCallState) -> bool:
        self.fired = self.clock() - self.start + retry_state.upcoming_sleep > self.deadline
        return self.fired


def _paced_by_server(error: BaseException) -> bool:
    """Whether ``error`` is a rate limit whose server said when to come back (see :func:`retry_after`)."""
    return classify_error(error) is ErrorKind.RATE_LIMIT and retry_after(error) is not None


class StopWhenBudgetSpent(stop_base):
    """Stops when the provider client's retry budget is spent; takes the retry's token otherwise.

    Last in a ``|``: tenacity's ``stop_any`` stops at the first strategy that
    fires, so a token is spent only for a retry that will be made.

    A retry of a rate limit that waits the server's own ``Retry-After`` (``server_paced``: the policy honours it)
    takes no token: the provider is up and throttles us itself, the wait it chose spreads the retries, and
    attempts and the deadline still bound them. Charged, a burst of 40 calls each refused once by a 429 spent
    the default bucket's 10 tokens and 30 calls gave up, though each would have been answered by its retry.
    The budget is for retries the provider did not ask for: 5xx, overload, timeouts, connection errors.
    """

    def __init__(self, budget: RetryBudgetState, *, server_paced: bool = True) -> None:
        self.budget = budget
        self.server_paced = server_paced
        self.fired = False
        self.spent = False  # whether the retry about to be made took a token (one to give back if it is not made)

    def __call__(self, retry_state: RetryCallState) -> bool:
        error = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if self.server_paced and error is not None and _paced_by_server(error):
            self.fired = self.spent = False
            return False
        self.spent = self.budget.try_spend()
        self.fired = not self.spent
        return self.fired


def _callable(name: str, value: object) -> None:
    if not callable(value):
        raise ConfigurationError(f"{name} must be callable, got {type(value).__name__}")


def _async(name: str, value: Callable[..., object]) -> None:
    # Awaited between attempts: a synchronous sleep such as time.sleep would fail only at the first retry, with
    # asyncio's TypeError that does not say which option is wrong (and blocking the event loop if it could run).
    if inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(type(value).__call__):
        return
    described = f"{getattr(value, '__module__', None) or ''}.{getattr(value, '__qualname__', type(value).__name__)}"
    raise ConfigurationError(
        f"{name} must be an async function (awaited as `await {name}(seconds)`), got {described.lstrip('.')}, "
        "which is not async"
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to retry a failed provider request. Validated at construction.

    Times take seconds or a ``timedelta`` and are held as seconds (a ``float``): policies
    equal in what they do are equal, however their times were written.

    Args:
        max_attempts: Attempts in all, the first included (1 turns retrying off); at most 10.
        initial_delay: Backoff before the first retry; doubled for each further one.
        max_delay: The cap of the exponential backoff.
        deadline: Seconds for the whole logical call, waits included: no retry
            starts whose wait would end past it.
        jitter: Full jitter (a uniform wait between 0 and the backoff), so that
            many clients failing together do not retry together.
        respect_retry_after: Wait at least what the server asks for
            (``retry-after-ms`` / ``Retry-After`` / a body's ``retryDelay``).
        max_retry_after: A server asking for a longer wait gets its error raised
            at once instead of a long sleep.
        retry_on: The error kinds that are retried, a set (held as a ``frozenset``). Kinds that can never succeed
            on a retry (bad request, authentication, permission, not found,
            context length, cancellation) are refused. An open circuit, and a
            wrapped client that gave up, are never retried, whatever this holds.
        budget: The retry budget shared by every wrapper of the same provider
            client; ``None`` turns it off.
        clock: Seconds on a monotonic clock: the deadline, the budget's refill
            and :attr:`RetryEvent.elapsed` are measured on it; read once here, it
            must be hashable and return a finite number. Code, not
            configuration: :meth:`to_config` leaves it out.
        sleep: Waits between attempts (``await sleep(seconds)``): an ``async``
            function, such as ``asyncio.sleep``, or an object whose ``__call__``
            is ``async``. Code, not configuration, like ``clock``.

    Example:
        >>> from datetime import timedelta
        >>> from autogen_reliability import RetryPolicy, reliable
        >>> policy = RetryPolicy(max_attempts=5, deadline=timedelta(minutes=2))
        >>> client = reliable(inner, retry=policy)  # inner: the model client you wrap
    """

    max_attempts: int = 3
    initial_delay: float | timedelta = 0.5
    max_delay: float | timedelta = 8.0
    deadline: float | timedelta = 60.0
    jitter: bool = True
    respect_retry_after: bool = True
    max_retry_after: float | timedelta = 60.0
    retry_on: AbstractSet[ErrorKind] = RETRYABLE_BY_DEFAULT  # any set of kinds, held as a frozenset
    budget: RetryBudget | None = field(default_factory=RetryBudget)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, kw_only=True)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False, kw_only=True)
    # What the layer runs, converted once here: a call never re-validates or re-converts the policy.
    _deadline: float = field(init=False, repr=False, compare=False)
    _max_retry_after: float = field(init=False, repr=False, compare=False)
    _wait: wait_base = field(init=False, repr=False, compare=False)
    _stop_after_attempts: stop_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigurationError(f"max_attempts must be an int, got {type(self.max_attempts).__name__}")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_CEILING:
            raise ConfigurationError(
                f"max_attempts must be between 1 and {MAX_ATTEMPTS_CEILING}, got {self.max_attempts}"
            )
        # Held as seconds, however written: equal policies share a breaker and a budget, and
        # timedelta(seconds=60) == 60.0 is False.
        initial = as_seconds("initial_delay", self.initial_delay)
        maximum = as_seconds("max_delay", self.max_delay)
        if initial > maximum:
            raise ConfigurationError(f"initial_delay ({initial} s) must not exceed max_delay ({maximum} s)")
        for name in ("jitter", "respect_retry_after"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be True or False, got {getattr(self, name)!r}")
        deadline = as_seconds("deadline", self.deadline, allow_zero=False)
        max_retry_after = as_seconds("max_retry_after", self.max_retry_after)
        retry_on = _kinds(self.retry_on)
        refused = retry_on & NEVER_RETRIED
        if refused:
            names = ", ".join(sorted(kind.name for kind in refused))
            raise ConfigurationError(f"retry_on may not contain {names}: a retry cannot fix these errors")
        object.__setattr__(self, "retry_on", retry_on)
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise ConfigurationError(f"budget must be a RetryBudget or None, got {type(self.budget).__name__}")
        check_clock("clock", self.clock, reads=MONOTONIC_SECONDS)
        _callable("sleep", self.sleep)
        _async("sleep", self.sleep)
        # initial * 2 ** (retry - 1), capped at max_delay; full jitter draws uniformly below that.
        exponential = wait_random_exponential if self.jitter else wait_exponential
        backoff = exponential(multiplier=initial, max=maximum)
        object.__setattr__(self, "initial_delay", initial)
        object.__setattr__(self, "max_delay", maximum)
        object.__setattr__(self, "deadline", deadline)
        object.__setattr__(self, "max_retry_after", max_retry_after)
        object.__setattr__(self, "_deadline", deadline)
        object.__setattr__(self, "_max_retry_after", max_retry_after)
        object.__setattr__(self, "_wait", WaitRetryAfter(backoff) if self.respect_retry_after else backoff)
        object.__setattr__(self, "_stop_after_attempts", stop_after_attempt(self.max_attempts))

    def to_config(self) -> dict[str, Any]:
        """A JSON-ready dict (times in seconds) that :meth:`from_config` turns back into this policy.

        ``clock`` and ``sleep`` are code, not configuration, and are left out.
        """
        return {
            "max_attempts": self.max_attempts,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
            "deadline": self._deadline,
            "jitter": self.jitter,
            "respect_retry_after": self.respect_retry_after,
            "max_retry_after": self._max_retry_after,
            "retry_on": sorted(kind.value for kind in self.retry_on),
            "budget": self.budget.to_config() if self.budget is not None else None,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RetryPolicy:
        """The policy :meth:`to_config` described."""
        values = config_options(cls, config)
        if "retry_on" in values:
            values["retry_on"] = _kinds_named(values["retry_on"])
        if values.get("budget") is not None:
            values["budget"] = RetryBudget.from_config(values["budget"])
        return cls(**values)


def _kinds(kinds: Iterable[ErrorKind]) -> frozenset[ErrorKind]:
    if isinstance(kinds, str | ErrorKind) or not isinstance(kinds, Iterable):
        raise ConfigurationError(
            f"retry_on must be a collection of ErrorKind, e.g. {{ErrorKind.RATE_LIMIT}}, got {type(kinds).__name__}"
        )
    result = frozenset(kinds)
    for kind in result:
        if not isinstance(kind, ErrorKind):
            raise ConfigurationError(f"retry_on must contain ErrorKind members, got {kind!r}")
    return result


def _kinds_named(names: object) -> frozenset[ErrorKind]:
    """``retry_on`` as a configuration gives it: a list of :class:`ErrorKind` values (``"rate_limit"``)."""
    # A string is iterable too: "rate_limit" would be read letter by letter.
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise ConfigurationError(f"retry_on must be a list of error kinds such as ['rate_limit'], got {names!r}")
    kinds = set()
    for name in names:
        try:
            kinds.add(ErrorKind(name))
        except ValueError:
            known = ", ".join(kind.value for kind in ErrorKind)
            raise ConfigurationError(f"retry_on: unknown error kind {name!r}; known: {known}") from None
    return frozenset(kinds)


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One retry about to happen, handed to ``on_retry`` hooks.

    Attributes:
        call: The logical call being retried.
        attempt: The attempt that failed (1 for the first).
        error_kind: How its error was classified.
        error: The error itself.
        wait: Seconds to wait before the next attempt.
        elapsed: Seconds since the call started, on the policy's clock.
    """

    call: Call
    attempt: int
    error_kind: ErrorKind
    error: BaseException
    wait: float
    elapsed: float


RetryObserver = Callable[[RetryEvent], None]


def log_retry(event: RetryEvent) -> None:
    """The default retry hook: one WARNING on the ``autogen_reliability`` logger, its fields in ``extra=``.

    The error's text passes through the redactor: a key a provider echoes never reaches the log. Its line breaks,
    escape sequences and bidi controls are escaped (``\\n``, ``\\x1b``): a provider's message can neither start a
    log record of its own nor act on the terminal that shows the log.
    """
    call = event.call
    logger.warning(
        "retrying model call %s in %.2f s after attempt %d failed (%s): %s",
        call.call_id,
        event.wait,
        event.attempt,
        event.error_kind.value,
        printable(redact(message_of(event.error))),
        extra={
            "call_id": str(call.call_id),
            "attempt": event.attempt,
            "error_kind": event.error_kind.value,
            "wait": event.wait,
            "elapsed": event.elapsed,
            "agent": call.attribution.agent,
            "project": call.attribution.project,
        },
    )


_DEFAULT_HOOKS: Final[tuple[RetryObserver, ...]] = (log_retry,)
_hooks: tuple[RetryObserver, ...] = _DEFAULT_HOOKS


def set_on_retry_hooks(hooks: Iterable[RetryObserver] | None) -> None:
    """Replace the hooks every wrapped client hands each :class:`RetryEvent` to (stamina's ``instrumentation``).

    They run before the wrapper's own ``on_retry`` hooks; a hook that raises is
    logged, never propagated.

    Args:
        hooks: The new hooks; ``None`` restores the default (:func:`log_retry`),
            an empty list turns retry logging off.

    Example:
        >>> set_on_retry_hooks([lambda event: print("retrying", event.error_kind.value)])  # instead of the log line
        >>> set_on_retry_hooks(None)  # the log line again
    """
    global _hooks  # noqa: PLW0603  # process-wide, like set_testing
    if hooks is None:
        _hooks = _DEFAULT_HOOKS
        return
    # A string is iterable too: each letter would be refused as "a retry hook", which names no list.
    if callable(hooks) or isinstance(hooks, str) or not isinstance(hooks, Iterable):
        raise ConfigurationError(
            f"set_on_retry_hooks takes a list of callables (or None for the default), got {type(hooks).__name__}"
        )
    found = tuple(hooks)
    for hook in found:
        _callable("a retry hook", hook)
    _hooks = found


def get_on_retry_hooks() -> tuple[RetryObserver, ...]:
    """The hooks every wrapped client hands each :class:`RetryEvent` to; by default ``(log_retry,)``."""
    return _hooks
