"""A rolling window of one provider client's attempts, in bounded memory whatever the traffic.

The window is cut into :data:`BUCKETS` time buckets (300 s: 60 buckets of 5 s).
Each bucket counts attempts, failures by error kind, and the latencies of the
successful ones in a histogram with fixed bins, so a bucket's size does not
depend on how many attempts it saw: a provider client costs at most
``BUCKETS x (LATENCY_BINS + error kinds + a few counters)`` integers, plus its
last :data:`RECENT` attempts and its last error, each message cut to 300
characters. Measured with tracemalloc after 100,000 attempts spread over every
bin and three error kinds: 71 kB. Observing costs about 3 us per successful
attempt and 25 us per failed one (classifying and redacting its error), on
this project's 2-core test machine.

The 95th percentile comes from the histogram: bins grow by 2^(1/4) (19 %), from
1 ms to 10 minutes, and the upper edge of the bin where the 95th percentile
falls (or the slowest attempt, if lower) is reported, so it is at most 19 %
above the exact value. Prometheus histograms make the same trade.

An answer from a client-side cache (AutoGen's ``ChatCompletionCache``, ``CreateResult.cached``) is not
counted: no request reached the provider, so it says nothing of its errors or latency.

A rate-limited attempt (a 429) is a failure until a later attempt of the same call succeeds on the same
client: then it counts neither as a failure nor as an attempt, as the circuit breaker does not count it.
A storm of 429s that the retries ride out does not make the client unhealthy (a readiness probe would
take every replica out of service at once, for a limit they share), while a provider that rate-limits
calls to their end does. Which calls' 429s may still be forgiven is remembered for at most
:data:`MOST_THROTTLED_CALLS` calls (the oldest then stay failures).

An attempt the retry policy's deadline cut short is a failure, a ``timeout``, as the circuit breaker counts
it and as the SDK's own timeout would be: a provider that takes requests and never answers makes the client
unhealthy. An attempt its caller cancelled says nothing of the provider and is not judged.

A bucket holds attempts that *ended* in its span (the observer sees an attempt
when it ends), by the probe's clock; a bucket older than the window is cleared
when its slot is used again, and ignored when read.
"""

from __future__ import annotations

import bisect
import math
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from .._errors import ErrorKind
from .._pipeline import AttemptEvent
from .._redaction import message_of
from ..retry._classify import classify_error
from ._report import shown

__all__ = [
    "BUCKETS",
    "CALLER_KINDS",
    "MOST_THROTTLED_CALLS",
    "RECENT",
    "Attempt",
    "AttemptWindow",
    "WindowStats",
    "merge",
]

BUCKETS: Final = 60
RECENT: Final = 10
MOST_THROTTLED_CALLS: Final = 4096
"""Calls whose rate-limited attempts a window remembers, to count them as nothing once the call succeeds."""
# Upper edges in seconds: 1 ms * 2^(k/4) up to 10 minutes; one more bin above takes anything slower.
_EDGES: Final = tuple(0.001 * 2 ** (k / 4) for k in range(math.ceil(4 * math.log2(600 / 0.001)) + 1))
LATENCY_BINS: Final = len(_EDGES) + 1

CALLER_KINDS: Final = frozenset({ErrorKind.BAD_REQUEST, ErrorKind.CONTEXT_LENGTH, ErrorKind.CONTENT_FILTER})
"""Failures the request caused, not the provider: they do not count in the error rate, as failures or attempts."""

Outcome = Literal["ok", "error", "cancelled"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt as the window remembers it (a plain record: made on the call path, so cheap)."""

    started_at: datetime
    outcome: Outcome
    error_kind: str | None
    error: str | None
    latency: float


@dataclass(slots=True)
class _Bucket:
    index: int
    attempts: int = 0
    cancelled: int = 0
    refused: int = 0
    throttled: int = 0  # rate-limited attempts of calls that then succeeded: neither failures nor attempts
    failures: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    latencies: list[int] = field(default_factory=lambda: [0] * LATENCY_BINS)
    slowest: float = 0.0


@dataclass(slots=True)
class WindowStats:
    """What a window (or several, merged) holds now."""

    attempts: int = 0
    cancelled: int = 0
    refused: int = 0  # failures the request caused (CALLER_KINDS)
    throttled: int = 0  # rate-limited attempts of calls that then succeeded on the same client
    failures: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    latencies: list[int] = field(default_factory=lambda: [0] * LATENCY_BINS)
    slowest: float = 0.0
    recent: list[Attempt] = field(default_factory=list)
    last_error: Attempt | None = None

    @property
    def error_rate(self) -> float | None:
        """Failures / attempts judged; None without any."""
        judged = self.judged
        return self.failures / judged if judged else None

    @property
    def judged(self) -> int:
        """Attempts that count in the error rate: all but the cancelled ones, the failures the request caused and
        the rate limits a retry of their call overcame (neither a failure nor a success of the provider, as for the
        circuit breaker)."""
        return self.attempts - self.cancelled - self.refused - self.throttled

    @property
    def p95_latency(self) -> float | None:
        """Seconds; see the module docstring for its precision. None without a successful attempt."""
        total = sum(self.latencies)
        if not total:
            return None
        wanted = math.ceil(0.95 * total)
        seen = 0
        for index, count in enumerate(self.latencies):
            seen += count
            if seen >= wanted:
                upper = _EDGES[index] if index < len(_EDGES) else math.inf
                return min(upper, self.slowest)
        return self.slowest  # pragma: no cover - the loop always reaches the total

    def add(self, bucket: _Bucket | WindowStats) -> None:
        self.attempts += bucket.attempts
        self.cancelled += bucket.cancelled
        self.refused += bucket.refused
        self.throttled += bucket.throttled
        self.failures += bucket.failures
        for kind, count in bucket.kinds.items():
            self.kinds[kind] = self.kinds.get(kind, 0) + count
        self.latencies = [mine + theirs for mine, theirs in zip(self.latencies, bucket.latencies, strict=True)]
        self.slowest = max(self.slowest, bucket.slowest)


def merge(windows: list[WindowStats]) -> WindowStats:
    """The counts and latencies of several windows together (a wrapped client's primary and fallbacks)."""
    merged = WindowStats()
    for stats in windows:
        merged.add(stats)
        if stats.last_error is not None and (
            merged.last_error is None or stats.last_error.started_at > merged.last_error.started_at
        ):
            merged.last_error = stats.last_error
    return merged


class AttemptWindow:
    """The attempts of one provider client over the last ``seconds``, by ``clock`` (monotonic seconds)."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self._width = seconds / BUCKETS
        self._clock = clock
        self._buckets: list[_Bucket | None] = [None] * BUCKETS
        self._recent: deque[Attempt] = deque(maxlen=RECENT)
        self._last_error: Attempt | None = None
        # Calls with rate-limited attempts counted as failures, oldest first: the buckets those attempts are in.
        self._throttled: dict[uuid.UUID, list[int]] = {}
        # The observer runs on the event loop; a check may read from another thread (a server's).
        self._lock = threading.Lock()

    def observe(self, event: AttemptEvent) -> None:
        """Count one finished attempt; quick, on the call path."""
        if event.result is not None and event.result.cached:
            return  # answered by a client-side cache (AutoGen's ChatCompletionCache): no request reached the provider
        outcome = event.outcome
        kind: ErrorKind | None = None
        message = None
        # An attempt the retry policy's deadline cut short ends with a DeadlineExceededError: a timeout, an error.
        if event.error is not None:
            kind = ErrorKind.CANCELLED if outcome == "cancelled" else classify_error(event.error)
            message = shown(f"{type(event.error).__name__}: {message_of(event.error)}")
        attempt = Attempt(event.started_at, outcome, kind.value if kind else None, message, event.latency)
        index = math.floor(self._clock() / self._width)
        with self._lock:
            bucket = self._bucket(index)
            bucket.attempts += 1
            if outcome == "ok":
                bucket.latencies[bisect.bisect_left(_EDGES, event.latency)] += 1
                bucket.slowest = max(bucket.slowest, event.latency)
                if self._throttled:
                    self._forgive(event.call.call_id)
            elif kind is not None:
                bucket.kinds[kind.value] = bucket.kinds.get(kind.value, 0) + 1
                if outcome == "cancelled":
                    bucket.cancelled += 1
                elif kind in CALLER_KINDS:
                    bucket.refused += 1
                else:
                    bucket.failures += 1
                    if kind is ErrorKind.RATE_LIMIT:
                        self._remember_throttled(event.call.call_id, index)
            self._recent.append(attempt)
            if outcome == "error":
                self._last_error = attempt

    def stats(self) -> WindowStats:
        """The counts of the buckets still inside the window, and the latest attempts."""
        now = math.floor(self._clock() / self._width)
        stats = WindowStats()
        with self._lock:
            for bucket in self._buckets:
                if bucket is not None and now - BUCKETS < bucket.index <= now:
                    stats.add(bucket)
            stats.recent = list(self._recent)
            stats.last_error = self._last_error
        return stats

    def _remember_throttled(self, call_id: uuid.UUID, index: int) -> None:
        """A rate-limited attempt of ``call_id`` was counted as a failure in bucket ``index`` (the lock is held)."""
        self._throttled.setdefault(call_id, []).append(index)
        while len(self._throttled) > MOST_THROTTLED_CALLS:
            del self._throttled[next(iter(self._throttled))]  # its 429s stay failures

    def _forgive(self, call_id: uuid.UUID) -> None:
        """``call_id`` succeeded: its rate-limited attempts still in the window are no longer failures (lock held)."""
        for index in self._throttled.pop(call_id, ()):
            bucket = self._buckets[index % BUCKETS]
            if bucket is not None and bucket.index == index:  # else: out of the window already
                bucket.failures -= 1
                bucket.throttled += 1

    def _bucket(self, index: int) -> _Bucket:
        slot = index % BUCKETS
        bucket = self._buckets[slot]
        if bucket is None or bucket.index != index:
            bucket = self._buckets[slot] = _Bucket(index)
        return bucket
