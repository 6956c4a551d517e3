"""A circuit breaker per provider client: stop calling a provider that is down.

The breaker of a client is shared by every wrapper of that client (a team's
agents share it when they share the client) and judges the outcomes of
*attempts*, retries included:

- **closed**: requests go through; the last ``window`` outcomes are kept. Once
  at least ``minimum_calls`` are known and the share of failures reaches
  ``failure_rate``, the circuit opens.
- **open**: no request is sent; callers get :class:`CircuitOpenError` at once
  (or the next fallback client) until ``open_for`` has passed.
- **half-open**: up to ``half_open_probes`` requests go through as probes. If
  they all succeed the circuit closes with a clean window; a failed probe
  opens it again. Only the probes of this half-open period count: a request
  let through earlier that ends now neither judges the provider nor frees a
  probe's slot. Probes none of which ended within ``open_for`` of the last
  one's start (its event loop was closed with it, stopped without its tasks
  cancelled: it never ends) lapse: a new half-open period lets another through.

Only provider failures a retry could fix count as failures (timeouts, connection
errors, server errors, overload); an attempt the retry deadline cut short is a
timeout (see ``CircuitLayer``). A bad request or a call its caller cancelled says
nothing about the provider's health and is not counted; nor is a rate limit (429):
it is the provider, up and answering, asking this caller to slow down, which the
retries do by waiting as its Retry-After says. Counted, a storm of 429s that every
retry rode out opened the default circuit (half of the attempts failed) and made
an outage of it. Envoy's outlier detection likewise ejects a host on 5xx and
gateway failures, not on 429s. A call whose retries a rate limit outlasted gives
up in the retry layer, which sends it to a fallback.
Time is the policy's ``clock`` (``time.monotonic`` unless a test injects one).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from typing import Any, Final, Literal

from autogen_core.models import ChatCompletionClient

from .._errors import CircuitOpenError, ConfigurationError, check_clock, config_options
from ..providers import describe_client
from ._classify import RETRYABLE_BY_DEFAULT, ErrorKind, classify_error
from ._policy import MONOTONIC_SECONDS, as_seconds
from ._shared import PerClient

__all__ = ["CircuitBreaker", "CircuitBreakerPolicy", "breaker_for", "breakers", "counts_as_failure"]

logger = logging.getLogger("autogen_reliability")

CircuitState = Literal["closed", "open", "half_open"]
# A change of a circuit's state as a log line: level, the state it is in now, message, its arguments.
_Said = tuple[int, CircuitState, str, tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy:
    """When a provider client's circuit opens and how it recovers. Validated at construction.

    Args:
        window: How many recent attempt outcomes are judged.
        failure_rate: The share of failures in the window that opens the circuit (0 < rate <= 1).
        minimum_calls: Outcomes needed before the window is judged at all.
        open_for: How long an open circuit refuses requests before probing: seconds or
            a ``timedelta``, held as seconds (a ``float``).
        half_open_probes: Probe requests let through when half-open; all must succeed to close.
        clock: Seconds on a monotonic clock, for ``open_for``; read once here, it must
            be hashable and return a finite number. Code, not
            configuration: :meth:`to_config` leaves it out. A breaker is shared
            per client and policy, so wrappers with another clock get another breaker.
    """

    window: int = 20
    failure_rate: float = 0.5
    minimum_calls: int = 10
    open_for: float | timedelta = 30.0
    half_open_probes: int = 1
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        for name in ("window", "minimum_calls", "half_open_probes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"CircuitBreakerPolicy.{name} must be an int >= 1, got {value!r}")
        if self.minimum_calls > self.window:
            raise ConfigurationError(
                f"CircuitBreakerPolicy.minimum_calls ({self.minimum_calls}) cannot exceed window ({self.window})"
            )
        rate = self.failure_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            # Its type, not its range: "must be in (0, 1], got Decimal('0.5')" says 0.5 is out of range.
            raise ConfigurationError(
                f"CircuitBreakerPolicy.failure_rate must be a number (an int or a float), got {rate!r}"
            )
        if not 0 < rate <= 1:
            raise ConfigurationError(f"CircuitBreakerPolicy.failure_rate must be in (0, 1], got {rate!r}")
        # Held as seconds, however written: wrappers of one client share a breaker by equal policies.
        object.__setattr__(
            self, "open_for", as_seconds("CircuitBreakerPolicy.open_for", self.open_for, allow_zero=False)
        )
        check_clock("CircuitBreakerPolicy.clock", self.clock, reads=MONOTONIC_SECONDS)

    def to_config(self) -> dict[str, Any]:
        """A JSON-ready dict (times in seconds) for :meth:`from_config`; ``clock`` is code and is left out."""
        return {
            "window": self.window,
            "failure_rate": self.failure_rate,
            "minimum_calls": self.minimum_calls,
            "open_for": self.open_for,
            "half_open_probes": self.half_open_probes,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CircuitBreakerPolicy:
        """The policy :meth:`to_config` described."""
        return cls(**config_options(cls, config))


class CircuitBreaker:
    """The state of one provider client's circuit under one :class:`CircuitBreakerPolicy`.

    Its time is ``clock``, by default the policy's.
    """

    def __init__(
        self, policy: CircuitBreakerPolicy, name: str = "model client", clock: Callable[[], float] | None = None
    ) -> None:
        self.policy = policy
        self.name = name
        self._clock = clock if clock is not None else policy.clock
        self._open_for = as_seconds("open_for", policy.open_for)
        # The rate as the decimal it was written as (0.55 is 55/100), compared in integers: failures >= 0.55 * 100
        # in floats is 55 >= 55.00000000000001, and the circuit would stay closed at exactly its rate.
        rate = Fraction(str(policy.failure_rate))
        self._rate_numerator, self._rate_denominator = rate.numerator, rate.denominator
        self._outcomes: deque[bool] = deque(maxlen=policy.window)  # True = failure
        self._state: CircuitState = "closed"
        self._opened_at = 0.0
        self._first_opened_at = 0.0  # when it opened from closed (a failed probe opens it again): how long it was
        self._probes = 0
        self._probe_successes = 0
        self._period = 0  # counts half-open periods, so that a probe's outcome is matched to its own
        self._probed_at = 0.0  # when the last probe was let through: probes none of which ended in open_for lapse
        self._failures_when_opened = 0
        self._lock = threading.Lock()

    @property
    def state(self) -> CircuitState:
        """``"closed"``, ``"open"`` or ``"half_open"``, as of now."""
        with self._lock:
            if self._state == "open" and self._clock() - self._opened_at >= self._open_for:
                return "half_open"
            return self._state

    def acquire(self) -> int | None:
        """Let one request through, or raise :class:`CircuitOpenError`.

        Returns:
            The ticket to hand back to :meth:`record`: the half-open period of a
            probe, ``None`` for a request let through while closed.
        """
        lapsed = 0
        with self._lock:
            if self._state == "closed":
                return None
            now = self._clock()
            if self._state == "open":
                remaining = self._opened_at + self._open_for - now
                if remaining > 0:
                    raise CircuitOpenError(self.name, remaining, self._failures_when_opened, len(self._outcomes))
                self._state, self._probes, self._probe_successes = "half_open", 0, 0
                self._period += 1
            if self._probes >= self.policy.half_open_probes:  # half-open
                if now - self._probed_at < self._open_for:
                    raise CircuitOpenError(
                        self.name,
                        0.0,
                        self._failures_when_opened,
                        len(self._outcomes),
                        probes_in_flight=self._probes,
                    )
                # None of the probes ended within open_for: one whose event loop was closed with it (stopped,
                # its tasks not cancelled) never ends, and would hold the circuit half-open for good. A new
                # half-open period, whose probe this request is; what theirs end with, if they do, is not judged.
                lapsed, self._probes, self._probe_successes = self._probes, 0, 0
                self._period += 1
            self._probes += 1
            self._probed_at = now
            period = self._period
        if lapsed:
            logger.info(
                "circuit of %s: no probe request ended within %s s (%d in flight); another is let through",
                self.name,
                f"{self._open_for:g}",
                lapsed,
                extra={"circuit": self.name, "circuit_state": "half_open"},
            )
        return period

    def record(self, failure: bool | None, ticket: int | None = None) -> None:
        """Record the outcome of a request let through: a failure, a success, or ``None`` (not judged).

        Args:
            failure: The outcome.
            ticket: What :meth:`acquire` returned for the request.
        """
        with self._lock:
            said = self._judge(failure, ticket)
        if said is not None:  # logged outside the lock: a handler may be slow
            level, state, message, args = said
            logger.log(level, message, *args, extra={"circuit": self.name, "circuit_state": state})

    def forked(self) -> None:
        """In a child process: a lock of its own, and no probe of the parent's in flight.

        The parent's probes are its own tasks' requests, which the child does not make: their slots would never
        be freed, and the child's calls would be refused for as long as it lives. A half-open circuit starts a
        period of its own, whose probes are the child's; what the parent's probes end with is the parent's.
        """
        self._lock = threading.Lock()  # held at the fork, by the thread that forked
        if self._state == "half_open":
            self._probes, self._probe_successes = 0, 0
            self._period += 1

    def _judge(self, failure: bool | None, ticket: int | None) -> _Said | None:
        """Counts one outcome (called with the lock); returns the log line of the change it made, if any.

        One WARNING when the circuit opens and one when it closes again, however many calls it refused meanwhile
        (a failed probe, which opens it again, is an INFO line).
        """
        if self._state == "half_open":
            return self._judge_probe(failure, ticket)
        if failure is None or self._state != "closed":
            return None
        self._outcomes.append(failure)
        if len(self._outcomes) >= self.policy.minimum_calls:
            failures = sum(self._outcomes)
            if failures * self._rate_denominator >= self._rate_numerator * len(self._outcomes):
                self._open()
                self._first_opened_at = self._opened_at
                message = (
                    "circuit of %s opened: %d of the last %d attempts failed; its calls fail at once for %s s, "
                    "then %d probe request(s) are let through"
                )
                args = (self.name, failures, len(self._outcomes), f"{self._open_for:g}", self.policy.half_open_probes)
                return logging.WARNING, "open", message, args
        return None

    def _judge_probe(self, failure: bool | None, ticket: int | None) -> _Said | None:
        """:meth:`_judge` while half-open."""
        if ticket != self._period:
            return None  # let through before this half-open period: its outcome is not a probe's
        self._probes -= 1
        if failure:
            self._open()
            message = "circuit of %s stays open: a probe request failed; the next one in %s s"
            return logging.INFO, "open", message, (self.name, f"{self._open_for:g}")
        if failure is False:
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self._state = "closed"
                self._outcomes.clear()
                message = "circuit of %s closed again after %.1f s: %d probe request(s) succeeded"
                since = self._clock() - self._first_opened_at
                return logging.WARNING, "closed", message, (self.name, since, self._probe_successes)
        return None

    def _open(self) -> None:
        self._failures_when_opened = sum(self._outcomes) or 1
        self._state = "open"
        self._opened_at = self._clock()


# The kinds that say a provider is unhealthy: the transient ones but a rate limit (see the module's docstring).
_FAILURES: Final = RETRYABLE_BY_DEFAULT - {ErrorKind.RATE_LIMIT}


def counts_as_failure(error: BaseException) -> bool | None:
    """A provider failure (True), or an error that says nothing about the provider's health (None).

    A rate limit is the latter: the provider asks for fewer requests, and the retries wait as it says.
    """
    return True if classify_error(error) in _FAILURES else None


_breakers: PerClient[CircuitBreakerPolicy, CircuitBreaker] = PerClient(
    lambda client, policy: CircuitBreaker(policy, name=describe_client(client))  # type: ignore[arg-type]
)


def breaker_for(client: ChatCompletionClient, policy: CircuitBreakerPolicy) -> CircuitBreaker:
    """The breaker shared by every wrapper of ``client`` that uses ``policy``."""
    return _breakers.get(client, policy)


def breakers() -> list[tuple[ChatCompletionClient, CircuitBreaker]]:
    """Every breaker in use, with the client it guards (for what reports circuit states: metrics, health)."""
    return [(client, breaker) for client, breaker in _breakers.items()]  # type: ignore[misc]
