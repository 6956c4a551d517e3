"""``HealthProbe``: whether a service's LLM clients and usage store are fit to serve, for its orchestrator.

Passive by default: the probe watches the attempts each wrapped client makes
anyway (an attempt observer on the wrapper, see
:meth:`~autogen_reliability.ReliableChatCompletionClient.add_attempt_observer`)
and reads the circuit breakers, so a check costs no provider request. With
``active=True`` it also makes one real, cheap request per client and ``ttl``
(see ``_active.py``). The usage store gets a ``SELECT 1`` off the event loop
(see ``_store_check.py``) and the recorders' queue, spool and writer thread are
read.

How each component is judged (``reasons`` in the report say which rule fired):

- a provider client (the primary, or a fallback): **unhealthy** when its
  circuit is open, when its error rate reaches ``error_rate_unhealthy`` (once
  ``min_attempts`` attempts count), or when its active check failed;
  **degraded** when its circuit is half-open or its error rate reaches
  ``error_rate_degraded``;
- a wrapped client: its primary's status, except that an unhealthy primary
  with a fallback that is not unhealthy makes it **degraded** (calls are
  served by the fallback), and a fallback that is not healthy makes it
  **degraded** (less margin);
- the usage store: **unhealthy** when ``SELECT 1`` fails or times out, or a
  recorder's writer thread is not running, or rows are held in memory (neither
  the database nor the spool directory takes them); **degraded** while rows
  wait in a spool file (the database was down, or is);
- overall: the worst status of the *critical* components (all, unless
  ``critical=`` names some); a component that is not critical makes it
  **degraded** at worst.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from .._client import ReliableChatCompletionClient
from .._errors import ConfigurationError, check_clock
from .._pipeline import AttemptEvent
from .._redaction import well_formed
from ..accounting._recorder import UsageRecorder
from ..providers import describe_client
from ..retry._circuit import breaker_for
from ..retry._policy import MONOTONIC_SECONDS, as_seconds
from ..storage._store import UsageStore
from ._active import ActiveChecker
from ._report import (
    STORE_COMPONENT,
    ActiveCheck,
    AttemptSummary,
    CircuitStatus,
    ClientHealth,
    HealthReport,
    HealthStatus,
    ProviderHealth,
    UsageStoreHealth,
    worst,
)
from ._store_check import RoundTrip, StoreChecker
from ._window import Attempt, AttemptWindow, WindowStats, merge

__all__ = ["HealthProbe"]

MIN_WINDOW: Final = 1.0  # an error rate over less than a second says nothing of a provider
MAX_WINDOW: Final = 86_400.0  # a day: the window's buckets are window / 60 wide


class _Watch:
    """One wrapped client under watch: a window per provider client, fed by an observer on the wrapper."""

    def __init__(self, client: ReliableChatCompletionClient, window: float, clock: Callable[[], float]) -> None:
        self.client = client
        self.providers = [client.inner, *client.fallbacks]
        self.windows = [AttemptWindow(window, clock) for _ in self.providers]
        self._by_client = {id(provider): window for provider, window in zip(self.providers, self.windows, strict=True)}

    def observe(self, event: AttemptEvent) -> None:
        window = self._by_client.get(id(event.client))
        if window is not None:
            window.observe(event)

    def circuit(self, index: int) -> CircuitStatus:
        policy = self.client.circuit
        if policy is None:
            return "off"
        # The breaker the wrapper's pipeline uses: shared per provider client and policy.
        return breaker_for(self.providers[index], policy).state


class HealthProbe:
    """Checks the wrapped LLM clients and the usage store of a service; :meth:`check` says how they are.

    Args:
        clients: Name -> wrapped client (made by :func:`~autogen_reliability.reliable` or
            :class:`~autogen_reliability.ReliableChatCompletionClient`). The probe watches
            their attempts from now on, those of their fallbacks too.
        store: The usage ledger to check (a ``SELECT 1``), with the recorders the clients
            record to; None: no store component.
        active: Also make one real request per client and ``ttl``: ``GET /models`` for
            OpenAI-compatible clients (free), else a one-token completion (paid, recorded in
            the ledger with the tag ``health_check=true``).
        ttl: Seconds an active check's result is reused (float or timedelta).
        timeout: Seconds an active check or the store's round trip may take.
        error_rate_degraded: Error rate at which a provider client is degraded.
        error_rate_unhealthy: Error rate at which it is unhealthy.
        window: Seconds of attempts the error rate and latency are computed over (1 s to a day).
        critical: The components that can make the service unready: client names, and
            ``"usage_store"``. Default: all of them.
        min_attempts: Attempts a window needs before its error rate is judged (those the rate counts: not
            cancelled by their callers, nor refused for the request's own fault, nor rate-limited in a call that
            then succeeded).
        clock: Monotonic seconds, for the window and ``ttl`` (tests inject one); read once here, it must read a
            finite number.

    Raises:
        ConfigurationError: An invalid option, with the reason.

    Example:
        >>> import asyncio
        >>> from autogen_reliability import HealthProbe, reliable
        >>> probe = HealthProbe({"openai": reliable(inner)})
        >>> report = asyncio.run(probe.check())  # in a coroutine: await probe.check()
        >>> report.status, report.summary().components
        ('healthy', {'openai': 'healthy'})
    """

    def __init__(
        self,
        clients: Mapping[str, ReliableChatCompletionClient],
        store: UsageStore | None = None,
        *,
        active: bool = False,
        ttl: float | timedelta = 30,
        timeout: float | timedelta = 5,
        error_rate_degraded: float = 0.2,
        error_rate_unhealthy: float = 0.5,
        window: float | timedelta = 300,
        critical: Iterable[str] | None = None,
        min_attempts: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        checked = _checked_clients(clients, store)
        if not isinstance(active, bool):
            raise ConfigurationError(f"active must be True or False, got {active!r}")
        self._ttl = as_seconds("ttl", ttl, allow_zero=False)
        self._timeout = as_seconds("timeout", timeout, allow_zero=False)
        self._window = as_seconds("window", window, allow_zero=False)
        if self._window > MAX_WINDOW:
            raise ConfigurationError(f"window must be at most {MAX_WINDOW:g} seconds (a day), got {window!r}")
        if self._window < MIN_WINDOW:  # e.g. 1e-320: the clock over its buckets' width overflowed at use
            raise ConfigurationError(f"window must be at least {MIN_WINDOW:g} second, got {window!r}")
        for name, rate in (
            ("error_rate_degraded", error_rate_degraded),
            ("error_rate_unhealthy", error_rate_unhealthy),
        ):
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
                raise ConfigurationError(f"{name} must be a number in (0, 1], got {rate!r}")
        if error_rate_degraded > error_rate_unhealthy:
            raise ConfigurationError(
                f"error_rate_degraded ({error_rate_degraded}) cannot exceed "
                f"error_rate_unhealthy ({error_rate_unhealthy})"
            )
        if isinstance(min_attempts, bool) or not isinstance(min_attempts, int) or min_attempts < 1:
            raise ConfigurationError(f"min_attempts must be an int >= 1, got {min_attempts!r}")
        # Read once here: a clock that reads no number would otherwise fail every attempt's observer (logged,
        # the window left empty) and then every check().
        check_clock("clock", clock, reads=MONOTONIC_SECONDS, hashable=False)
        components = [*checked, *([STORE_COMPONENT] if store is not None else [])]
        self._critical = _checked_critical(critical, components)
        self._degraded_at = float(error_rate_degraded)
        self._unhealthy_at = float(error_rate_unhealthy)
        self._min_attempts = min_attempts
        self._clock = clock
        self._store = StoreChecker(store, self._timeout) if store is not None else None
        self._watches = {name: _Watch(client, self._window, clock) for name, client in checked.items()}
        self._active = (
            {
                name: ActiveChecker(client, ttl=self._ttl, timeout=self._timeout, clock=clock)
                for name, client in checked.items()
            }
            if active
            else {}
        )
        for watch in self._watches.values():
            watch.client.add_attempt_observer(watch.observe)
        # A probe nobody holds any more (one built per request, never closed) cannot be checked: its observers
        # would only cost every attempt time and keep windows in memory. The observers hold the watches, not
        # the probe, so it is collected, and this removes them then (or at close()).
        self._stop_watching = weakref.finalize(self, _stop_watching, tuple(self._watches.values()))

    @property
    def components(self) -> tuple[str, ...]:
        """The names of the components checked: each client's, then ``"usage_store"`` if there is a store."""
        return (*self._watches, *([STORE_COMPONENT] if self._store is not None else []))

    @property
    def critical(self) -> frozenset[str]:
        """The components that can make the service unready."""
        return self._critical

    def close(self) -> None:
        """Stop watching the clients' attempts. A closed probe still checks, on what it saw until then.

        A probe that is no longer referenced stops watching too, when it is collected.
        """
        self._stop_watching()

    def __repr__(self) -> str:
        mode = "active" if self._active else "passive"
        return f"HealthProbe({', '.join(self.components)}; {mode})"

    async def check(self) -> HealthReport:
        """Check every component now (concurrently) and say how each is, and the service overall.

        Never raises for a component's failure: that is what the report is for. Safe to
        call from many requests at once: active requests and round trips in flight are shared.
        """
        checked_at = datetime.now(UTC)
        round_trip, actives = await asyncio.gather(self._round_trip(), self._active_checks())
        clients = {name: self._client_health(name, watch, actives.get(name)) for name, watch in self._watches.items()}
        store = self._store_health(round_trip) if round_trip is not None else None
        found: dict[str, HealthStatus] = {name: client.status for name, client in clients.items()}
        if store is not None:
            found[STORE_COMPONENT] = store.status
        # A component that is not critical cannot make the service unready; it still shows as less margin.
        statuses = [
            status if name in self._critical or status != "unhealthy" else "degraded" for name, status in found.items()
        ]
        return HealthReport(status=worst(*statuses), checked_at=checked_at, clients=clients, usage_store=store)

    async def _round_trip(self) -> RoundTrip | None:
        return await self._store.round_trip() if self._store is not None else None

    async def _active_checks(self) -> dict[str, ActiveCheck]:
        names = list(self._active)
        found = await asyncio.gather(*(self._active[name].check() for name in names))
        return dict(zip(names, found, strict=True))

    # -- clients ---------------------------------------------------------------------------

    def _client_health(self, name: str, watch: _Watch, active: ActiveCheck | None) -> ClientHealth:
        stats = [window.stats() for window in watch.windows]
        providers = [
            self._provider_health(watch, index, stats[index], active if index == 0 else None)
            for index in range(len(watch.providers))
        ]
        primary, fallbacks = providers[0], providers[1:]
        reasons = [f"primary: {reason}" for reason in primary.reasons]
        status = primary.status
        if status == "unhealthy" and any(fallback.status != "unhealthy" for fallback in fallbacks):
            status = "degraded"
            reasons.append("calls go to a fallback")
        for number, fallback in enumerate(fallbacks, 1):
            if fallback.status != "healthy":
                status = worst(status, "degraded")
                reasons.extend(f"fallback {number}: {reason}" for reason in fallback.reasons)
        total = merge(stats)
        return ClientHealth(
            status=status,
            critical=name in self._critical,
            reasons=reasons,
            window_seconds=self._window,
            attempts=total.attempts,
            error_rate=total.error_rate,
            failed_attempts=total.failures,
            judged_attempts=total.judged,
            errors_by_kind=total.kinds,
            p95_latency_ms=_ms(total.p95_latency),
            providers=providers,
            active_check=active,
        )

    def _provider_health(
        self, watch: _Watch, index: int, stats: WindowStats, active: ActiveCheck | None
    ) -> ProviderHealth:
        circuit = watch.circuit(index)
        status: HealthStatus = "healthy"
        reasons: list[str] = []
        if circuit == "open":
            status = "unhealthy"
            reasons.append("circuit open: calls are refused without a request")
        elif circuit == "half_open":
            status = "degraded"
            reasons.append("circuit half-open: probing whether the provider is back")
        rate = stats.error_rate
        if rate is not None and stats.judged >= self._min_attempts:
            summary = f"error rate {rate:.0%} over the last {self._window:g} s ({stats.failures}/{stats.judged})"
            if rate >= self._unhealthy_at:
                status = "unhealthy"
                reasons.append(f"{summary} >= {self._unhealthy_at:.0%}")
            elif rate >= self._degraded_at:
                status = worst(status, "degraded")
                reasons.append(f"{summary} >= {self._degraded_at:.0%}")
        if active is not None and active.ok is False:
            status = "unhealthy"
            reasons.append(f"active check ({active.method}) failed: {active.error}")
        return ProviderHealth(
            name=describe_client(watch.providers[index]),  # shown (redacted) by the model, as every text
            role="primary" if index == 0 else "fallback",
            status=status,
            reasons=reasons,
            circuit=circuit,
            attempts=stats.attempts,
            error_rate=rate,
            failed_attempts=stats.failures,
            judged_attempts=stats.judged,
            errors_by_kind=stats.kinds,
            p95_latency_ms=_ms(stats.p95_latency),
            last_error=_summary(stats.last_error) if stats.last_error is not None else None,
            recent=[_summary(attempt) for attempt in stats.recent],
        )

    # -- the store -------------------------------------------------------------------------

    def _recorders(self) -> list[UsageRecorder]:
        found: dict[int, UsageRecorder] = {}
        for watch in self._watches.values():
            recorder = watch.client.recorder
            if recorder is not None:
                found.setdefault(id(recorder), recorder)
        return list(found.values())

    def _store_health(self, round_trip: RoundTrip) -> UsageStoreHealth:
        assert self._store is not None
        recorders = self._recorders()
        status: HealthStatus = "healthy"
        reasons: list[str] = []
        if not round_trip.reachable:
            status = "unhealthy"
            reasons.append(f"the database does not answer: {round_trip.error}")
        alive = all(recorder.writer_alive for recorder in recorders) if recorders else None
        if alive is False:
            status = "unhealthy"
            reasons.append("a recorder's writer thread is not running (closed, or died): rows are not written")
        held = sum(recorder.held_in_memory for recorder in recorders)
        if held:
            status = "unhealthy"
            reasons.append(
                f"{held} usage rows are held in memory: neither the database nor the spool directory takes them"
            )
        backlog = sum(recorder.spooled for recorder in recorders)
        oldest = min((since for recorder in recorders if (since := recorder.spooled_since) is not None), default=None)
        age = max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest is not None else None
        if backlog:
            status = worst(status, "degraded")
            waited = f", the oldest for {age:.0f} s" if age is not None else ""
            reasons.append(f"{backlog} usage rows wait in the spool to be written{waited}")
        return UsageStoreHealth(
            status=status,
            critical=STORE_COMPONENT in self._critical,
            reasons=reasons,
            url=self._store.store.url,
            reachable=round_trip.reachable,
            round_trip_ms=_ms(round_trip.seconds),
            error=round_trip.error,
            recorders=len(recorders),
            writer_alive=alive,
            queue_depth=sum(recorder.pending for recorder in recorders),
            held_in_memory=held,
            spool_backlog=backlog,
            backlog_age_seconds=age if backlog else None,
        )


def _stop_watching(watches: tuple[_Watch, ...]) -> None:
    for watch in watches:
        watch.client.remove_attempt_observer(watch.observe)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or math.isinf(seconds) else round(seconds * 1000, 3)


def _summary(attempt: Attempt) -> AttemptSummary:
    return AttemptSummary(
        started_at=attempt.started_at,
        outcome=attempt.outcome,
        error_kind=attempt.error_kind,
        error=attempt.error,
        latency_ms=round(attempt.latency * 1000, 3),
    )


def _checked_clients(clients: object, store: object) -> dict[str, ReliableChatCompletionClient]:
    if not isinstance(clients, Mapping):
        raise ConfigurationError(
            f"clients must be a mapping of names to wrapped clients, e.g. {{'openai': reliable(client)}}, "
            f"got {type(clients).__name__}"
        )
    if store is not None and not isinstance(store, UsageStore):
        raise ConfigurationError(f"store must be a UsageStore or None, got {type(store).__name__}")
    if not clients and store is None:
        raise ConfigurationError("nothing to check: give clients, a store, or both")
    checked: dict[str, ReliableChatCompletionClient] = {}
    for name, client in clients.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"client names must be non-empty strings, got {name!r}")
        if well_formed(name) != name:  # a key of the report's JSON, which UTF-8 could not encode
            raise ConfigurationError(f"client names must not contain a lone surrogate, got {name!r}")
        if not isinstance(client, ReliableChatCompletionClient):
            raise ConfigurationError(
                f"clients[{name!r}] is a {type(client).__name__}, not a wrapped client: pass reliable(client), "
                "whose attempts the probe can watch"
            )
        if name == STORE_COMPONENT and store is not None:
            raise ConfigurationError(f"{STORE_COMPONENT!r} names the store component; give the client another name")
        checked[name] = client
    return checked


def _checked_critical(critical: Iterable[str] | None, components: list[str]) -> frozenset[str]:
    if critical is None:
        return frozenset(components)
    if isinstance(critical, str) or not isinstance(critical, Iterable):
        raise ConfigurationError(f"critical must be a list of component names, got {critical!r}")
    names = list(critical)
    unknown = sorted(str(name) for name in names if name not in components)
    if unknown:
        raise ConfigurationError(f"critical names unknown components {unknown}; the components are {components}")
    return frozenset(names)
