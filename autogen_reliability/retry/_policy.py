"""Classified retries with backoff that honours ``Retry-After``, built on tenacity.

:class:`RetryPolicy` says when to retry; :class:`RetryLayer` applies it to each
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

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, TypeVar

from autogen_core.models import CreateResult
from tenacity import AsyncRetrying, RetryCallState, RetryError

from .._errors import ConfigurationError, GiveUpReason, RetriesExhaustedError
from .._pipeline import Call, CreateHandler, Layer, Request, StreamHandler, StreamItem
from .._redaction import redact, redacted_error
from ._budget import RetryBudget, RetryBudgetState
from ._classify import NEVER_RETRIED, RETRYABLE_BY_DEFAULT, ErrorKind, classify_error, retry_after

__all__ = ["RetryEvent", "RetryLayer", "RetryObserver", "RetryPolicy", "as_seconds", "is_testing", "set_testing"]

logger = logging.getLogger("autogen_reliability")
_T = TypeVar("_T")

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


class _RetryRun:
    """The tenacity strategies of one logical call: decide, wait, stop, sleep, report."""

    def __init__(
        self,
        policy: RetryPolicy,
        budget: RetryBudgetState | None,
        request: Request,
        hooks: tuple[RetryObserver, ...],
        start: float,
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.request = request
        self.hooks = hooks
        self.start = start
        self.deadline = as_seconds("deadline", policy.deadline)
        self.kinds: list[ErrorKind] = []
        self.reason: GiveUpReason = "attempts"

    def retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=self.should_retry,
            wait=self.wait,
            stop=self.should_stop,
            sleep=self.sleep,
            before_sleep=self.report,
            reraise=False,
        )

    def should_retry(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome is not None else None
        if error is None:
            return False
        kind = classify_error(error)
        self.kinds.append(kind)
        if kind not in self.policy.retry_on:
            return False
        # A server that asks for a longer wait than we accept gets its answer at once.
        asked = retry_after(error) if self.policy.respect_retry_after else None
        return asked is None or asked <= as_seconds("max_retry_after", self.policy.max_retry_after)

    def wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        backoff = self.policy.backoff(state.attempt_number)
        asked = retry_after(error) if error is not None and self.policy.respect_retry_after else None
        return 0.0 if _testing else max(backoff, asked or 0.0)

    def should_stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.policy.max_attempts:
            self.reason = "attempts"
            return True
        if time.monotonic() - self.start + (state.upcoming_sleep or 0.0) > self.deadline:
            self.reason = "deadline"
            return True
        if self.budget is not None and not self.budget.try_spend():
            self.reason = "budget"
            return True
        return False

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
        if self.request.cancellation_token is not None:
            self.request.cancellation_token.link_future(sleeper)
        await sleeper

    def report(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        assert error is not None  # tenacity only sleeps after a failure
        call = self.request.call
        event = RetryEvent(call, call.attempts, self.kinds[-1], error, state.upcoming_sleep or 0.0, self.elapsed())
        logger.warning(
            "retrying model call %s in %.2f s after attempt %d failed (%s): %s",
            call.call_id,
            event.wait,
            event.attempt,
            event.error_kind.value,
            redact(str(error)),
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
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:
                logger.exception("retry hook %r failed", hook)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def exhausted(self, error: RetryError) -> RetriesExhaustedError:
        last = error.last_attempt.exception()
        deadline = self.deadline if self.reason == "deadline" else None
        return RetriesExhaustedError(len(self.kinds), self.kinds, self.reason, redact(str(last)), deadline=deadline)

    async def attempts(self, first_error: Exception, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Judges ``first_error``, then retries ``attempt`` as the policy allows."""
        pending: Exception | None = first_error
        try:
            async for state in self.retrying():
                with state:
                    if pending is not None:
                        error, pending = pending, None
                        raise error  # the first attempt's failure, for tenacity to judge
                    return await attempt()
        except RetryError as exhausted:
            gave_up = exhausted
        else:
            raise AssertionError("unreachable: tenacity returns, raises, or gives up")  # pragma: no cover
        # Raised outside the handler, so that no __context__ leads back to the provider's error as it was:
        # the cause is a copy with the secrets a provider may echo (its key) removed.
        last = gave_up.last_attempt.exception()
        raise self.exhausted(gave_up) from (redacted_error(last) if last is not None else None)


class RetryLayer(Layer):
    """Applies a :class:`RetryPolicy` to every call that passes through it.

    The first attempt runs outside tenacity: a call that succeeds at once, the
    common case, pays for no retry machinery, only for the deadline's timer. A
    first attempt that fails hands its error to the tenacity loop, which decides
    as for any other attempt.

    The deadline bounds the attempts as well as the waits: when it passes, the
    attempt in flight is cancelled (its usage row says ``cancelled``) and
    :class:`~autogen_reliability.RetriesExhaustedError` names the deadline. A
    stream is bounded until its first chunk is handed on; after that the
    consumer reads at its own pace and retrying is over.
    """

    def __init__(
        self, policy: RetryPolicy, budget: RetryBudgetState | None = None, hooks: Iterable[RetryObserver] = ()
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.hooks = tuple(hooks)
        self.deadline = as_seconds("deadline", policy.deadline)

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        start = self._start()
        run: _RetryRun | None = None
        try:
            async with asyncio.timeout(self.deadline) as scope:
                try:
                    return await call_next(request)
                except Exception as error:
                    first_error = error
                run = _RetryRun(self.policy, self.budget, request, self.hooks, start)
                return await run.attempts(first_error, lambda: call_next(request))
        except TimeoutError:
            if not scope.expired():
                raise  # a TimeoutError of the provider's, not our deadline
        raise self._out_of_time(run) from None

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        start = self._start()
        run: _RetryRun | None = None
        try:
            # Entered and left within the first step of this generator: the timer belongs to one task.
            async with asyncio.timeout(self.deadline) as scope:
                try:
                    stream, first = await _open(call_next, request)
                except Exception as error:
                    first_error: Exception | None = error
                else:
                    first_error = None
                if first_error is not None:
                    run = _RetryRun(self.policy, self.budget, request, self.hooks, start)
                    stream, first = await run.attempts(first_error, lambda: _open(call_next, request))
        except TimeoutError:
            if not scope.expired():
                raise
            out_of_time = True
        else:
            out_of_time = False
        if out_of_time:
            raise self._out_of_time(run) from None
        if first is None:
            return  # an empty stream: nothing to hand on
        # From here on the consumer has output: errors propagate, never retried.
        async with aclosing(stream):
            yield first
            async for item in stream:
                yield item

    def _start(self) -> float:
        if self.budget is not None:
            self.budget.deposit()
        return time.monotonic()

    def _out_of_time(self, run: _RetryRun | None) -> RetriesExhaustedError:
        """The error for a call whose deadline passed while an attempt (or, rarely, a wait) was under way."""
        kinds = run.kinds if run is not None else []
        in_flight = not kinds or kinds[-1] is ErrorKind.CANCELLED
        if not kinds:
            kinds = [ErrorKind.CANCELLED]  # the first attempt, cut short
        last = "no answer before the deadline"
        return RetriesExhaustedError(len(kinds), kinds, "deadline", last, deadline=self.deadline, in_flight=in_flight)


async def _open(
    call_next: StreamHandler, request: Request
) -> tuple[AsyncGenerator[StreamItem, None], StreamItem | None]:
    """Starts a stream and waits for its first item (``None`` for an empty stream); closes it on failure."""
    stream = call_next(request)
    try:
        return stream, await anext(stream)
    except StopAsyncIteration:
        return stream, None
    except BaseException:
        await stream.aclose()
        raise
