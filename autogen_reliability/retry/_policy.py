"""Classified retries with backoff that honours ``Retry-After``, built on tenacity.

:class:`RetryPolicy` says when to retry; ``RetryLayer`` (``_layer.py``) applies it to each
call of the wrapped client. Tenacity runs the loop, with its defaults (retry
any exception, forever, and hide the error in a ``RetryError``) replaced:

- only the :class:`~autogen_reliability.ErrorKind` values in ``retry_on`` are
  retried; anything else (a bad request, a cancellation) is re-raised at once,
  unchanged;
- attempts, the deadline of the logical call (waits included) and the retry
  budget shared by all wrappers of the same provider client all bound it;
- the wait is the longer of the server's ``Retry-After`` and an exponential
  backoff with full jitter; a server asking for more than ``max_retry_after``
  gets its error raised at once rather than a long sleep;
- when retrying stops, :class:`~autogen_reliability.RetriesExhaustedError` is
  raised *from* the last provider error.

A stream is retried only until its first chunk has been handed on: after that
the consumer has seen output that a new attempt could not take back.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from .._errors import ConfigurationError
from .._pipeline import Call
from ._budget import RetryBudget
from ._classify import NEVER_RETRIED, RETRYABLE_BY_DEFAULT, ErrorKind

__all__ = ["RetryEvent", "RetryObserver", "RetryPolicy", "as_seconds", "is_testing", "set_testing"]

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
    if not math.isfinite(seconds):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value!r}")
    return float(seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to retry a failed provider request. Validated at construction.

    Args:
        max_attempts: Attempts in all, the first included (1 turns retrying off); at most 10.
        initial_delay: Backoff before the first retry; doubled for each further one.
        max_delay: The cap of the exponential backoff.
        deadline: Seconds for the whole logical call, waits included: no retry
            starts whose wait would end past it.
        jitter: Full jitter (a uniform wait between 0 and the backoff), so that
            many clients failing together do not retry together.
        respect_retry_after: Wait at least what the server asks for
            (``retry-after-ms`` / ``Retry-After``).
        max_retry_after: A server asking for a longer wait gets its error raised
            at once instead of a long sleep.
        retry_on: The error kinds that are retried. Kinds that can never succeed
            on a retry (bad request, authentication, permission, not found,
            context length, cancellation) are refused.
        budget: The retry budget shared by every wrapper of the same provider
            client; ``None`` turns it off.

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
    retry_on: frozenset[ErrorKind] = RETRYABLE_BY_DEFAULT
    budget: RetryBudget | None = field(default_factory=RetryBudget)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigurationError(f"max_attempts must be an int, got {type(self.max_attempts).__name__}")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_CEILING:
            raise ConfigurationError(
                f"max_attempts must be between 1 and {MAX_ATTEMPTS_CEILING}, got {self.max_attempts}"
            )
        initial = as_seconds("initial_delay", self.initial_delay)
        maximum = as_seconds("max_delay", self.max_delay)
        if initial > maximum:
            raise ConfigurationError(f"initial_delay ({initial} s) must not exceed max_delay ({maximum} s)")
        for name in ("jitter", "respect_retry_after"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be True or False, got {getattr(self, name)!r}")
        as_seconds("deadline", self.deadline, allow_zero=False)
        as_seconds("max_retry_after", self.max_retry_after)
        retry_on = _kinds(self.retry_on)
        refused = retry_on & NEVER_RETRIED
        if refused:
            names = ", ".join(sorted(kind.name for kind in refused))
            raise ConfigurationError(f"retry_on may not contain {names}: a retry cannot fix these errors")
        object.__setattr__(self, "retry_on", retry_on)
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise ConfigurationError(f"budget must be a RetryBudget or None, got {type(self.budget).__name__}")

    def backoff(self, retry_number: int) -> float:
        """The backoff before retry ``retry_number`` (1 for the first retry), jitter applied."""
        initial = as_seconds("initial_delay", self.initial_delay)
        ceiling = min(as_seconds("max_delay", self.max_delay), initial * 2 ** (retry_number - 1))
        return random.uniform(0, ceiling) if self.jitter else ceiling  # noqa: S311  # jitter, not cryptography

    def to_config(self) -> dict[str, Any]:
        """A JSON-ready dict (times in seconds) that :meth:`from_config` turns back into this policy."""
        return {
            "max_attempts": self.max_attempts,
            "initial_delay": as_seconds("initial_delay", self.initial_delay),
            "max_delay": as_seconds("max_delay", self.max_delay),
            "deadline": as_seconds("deadline", self.deadline),
            "jitter": self.jitter,
            "respect_retry_after": self.respect_retry_after,
            "max_retry_after": as_seconds("max_retry_after", self.max_retry_after),
            "retry_on": sorted(kind.value for kind in self.retry_on),
            "budget": self.budget.to_config() if self.budget is not None else None,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RetryPolicy:
        """The policy :meth:`to_config` described."""
        values = dict(config)
        if "retry_on" in values:
            values["retry_on"] = frozenset(ErrorKind(kind) for kind in values["retry_on"])
        if values.get("budget") is not None:
            values["budget"] = RetryBudget.from_config(values["budget"])
        return cls(**values)


def _kinds(kinds: Iterable[ErrorKind]) -> frozenset[ErrorKind]:
    if isinstance(kinds, str | ErrorKind):
        raise ConfigurationError("retry_on must be a collection of ErrorKind, e.g. {ErrorKind.RATE_LIMIT}")
    result = frozenset(kinds)
    for kind in result:
        if not isinstance(kind, ErrorKind):
            raise ConfigurationError(f"retry_on must contain ErrorKind members, got {kind!r}")
    return result


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One retry about to happen, handed to ``on_retry`` hooks.

    Attributes:
        call: The logical call being retried.
        attempt: The attempt that failed (1 for the first).
        error_kind: How its error was classified.
        error: The error itself.
        wait: Seconds to wait before the next attempt.
        elapsed: Seconds since the call started.
    """

    call: Call
    attempt: int
    error_kind: ErrorKind
    error: BaseException
    wait: float
    elapsed: float


RetryObserver = Callable[[RetryEvent], None]
