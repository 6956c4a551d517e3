"""A retry budget shared by every wrapper of one provider client.

During an outage, per-call retry policies multiply load: five agents on one
provider, each allowed three attempts, send three times the traffic to a
provider that is already failing. A budget caps retries as a fraction of
requests (the SRE book's "retries ≤ 10 % of requests"; gRPC's retry throttling
and Finagle's ``RetryBudget`` are the same idea) as a token bucket:

- it starts full, with ``capacity`` tokens, so isolated failures are retried;
- every logical call deposits ``ratio`` tokens, and time deposits
  ``min_per_second`` (so a quiet client can still retry now and then);
- every retry spends one token; with less than one token left, the retry is
  refused and the call fails with ``RetriesExhaustedError(reason="budget")``;
- it never holds more than ``capacity`` tokens.

In a long outage, retries therefore settle at ``ratio * calls +
min_per_second * seconds``. A retry of a rate limit that waits the server's
own ``Retry-After`` spends nothing (see ``StopWhenBudgetSpent``): the provider
is up and paces those retries itself; attempts and the deadline bound them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigurationError, config_options, is_finite, shown_number
from ._shared import PerClient

__all__ = ["RetryBudget", "RetryBudgetState", "budget_for"]


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many retries all wrappers of one provider client may make together.

    Args:
        ratio: Tokens deposited per call; 0.1 allows retries for 10 % of calls.
        min_per_second: Tokens deposited per second whatever the traffic.
        capacity: The most tokens the bucket holds, and what it starts with.
    """

    ratio: float = 0.1
    min_per_second: float = 0.5
    capacity: float = 10.0

    def __post_init__(self) -> None:
        for name in ("ratio", "min_per_second", "capacity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigurationError(f"RetryBudget.{name} must be a number >= 0, got {shown_number(value)}")
            if not is_finite(value):
                # An infinite bucket never runs dry: that is no budget, which is budget=None.
                raise ConfigurationError(
                    f"RetryBudget.{name} must be finite, got {shown_number(value)} (budget=None turns it off)"
                )
        if self.ratio > 1:
            raise ConfigurationError(f"RetryBudget.ratio is a fraction of calls and must be <= 1, got {self.ratio}")
        if self.capacity < 1:
            raise ConfigurationError(f"RetryBudget.capacity must be >= 1 token (one retry), got {self.capacity}")

    def to_config(self) -> dict[str, Any]:
        """A JSON-ready dict for :meth:`from_config`."""
        return {"ratio": self.ratio, "min_per_second": self.min_per_second, "capacity": self.capacity}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RetryBudget:
        """The budget :meth:`to_config` described."""
        return cls(**config_options(cls, config))


class RetryBudgetState:
    """The token bucket of one provider client under one :class:`RetryBudget`."""

    def __init__(self, budget: RetryBudget, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._tokens = budget.capacity
        self._updated = clock()
        self._lock = threading.Lock()

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        with self._lock:
            self._refill()
            return self._tokens

    def deposit(self) -> None:
        """Credit one call."""
        with self._lock:
            self._refill()
            self._tokens = min(self.budget.capacity, self._tokens + self.budget.ratio)

    def try_spend(self) -> bool:
        """Take the token for one retry; ``False`` when the budget is spent."""
        with self._lock:
            self._refill()
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def refund(self) -> None:
        """Give back the token of a retry that :meth:`try_spend` granted and that was never made."""
        with self._lock:
            self._refill()
            self._tokens = min(self.budget.capacity, self._tokens + 1)

    def forked(self) -> None:
        """In a child process: a lock of its own (the parent's is held by the thread that forked)."""
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.budget.capacity, self._tokens + (now - self._updated) * self.budget.min_per_second)
        self._updated = now


_Clock = Callable[[], float]
_budgets: PerClient[tuple[RetryBudget, _Clock], RetryBudgetState] = PerClient(
    lambda client, key: RetryBudgetState(*key)
)


def budget_for(client: object, budget: RetryBudget, clock: _Clock = time.monotonic) -> RetryBudgetState:
    """The bucket shared by every wrapper of ``client`` that uses ``budget`` on ``clock`` (the retry policy's)."""
    return _budgets.get(client, (budget, clock))
