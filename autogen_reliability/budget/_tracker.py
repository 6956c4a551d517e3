"""The spend a budget compares with its limit: the ledger's figure, read off the event loop, plus this process's rows.

One :class:`BudgetTracker` per (ledger, policy), shared by every wrapper that
uses that policy on that ledger (the way a circuit breaker is shared per
client), whatever its ``on_alert``, ``clock`` and ``store`` object (the hook and
the clock are the wrapper's: each alert goes to the hook of the call that found
it, each check reads the time on the clock of its call), keeps per key (a
project; a session or an agent within its project) and for the current UTC
period:

- the **ledger's figure**: ``SUM(cost_nanousd)`` and the count of unpriced
  attempts over the key's rows in the period, read in SQL on a reader thread
  (never on the event loop; at most one read in flight per key, two reader
  threads per process) and used for ``refresh`` seconds;
- the **local overlay**: the events this process recorded for the key (from
  :func:`~autogen_reliability.accounting._feed.subscribe`), by ``event_id``,
  until a read finds them in the ledger. Each read asks, in the same snapshot
  as its sum, which of them are stored now (``event_id IN (...)``), so an event
  is counted once: in the overlay until its row is in the sum, then in the sum.
  Rows waiting in the recorder's spool while the database is down stay in the
  overlay.

The check on the call path (:meth:`BudgetTracker.admit`) takes a lock and adds
two integers. When the figure is older than ``refresh`` it goes on with it and
starts a read in the background; only the first check of a key, which has no
figure yet, waits for the read (the call waits, the loop does not).

A ledger that cannot be read (the database is down, its schema is outdated)
is said once in the log; meanwhile the budget counts the last figure read
(nothing, if none was) plus this process's own spend, and tries again every
``refresh`` seconds. It fails open: the usage database going down must not
stop every agent, and the process still stops at the limit by its own spend.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import inspect
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any, Final, cast

from sqlalchemy import Connection, Select, case, func, select
from sqlalchemy.engine import make_url

from .._context import Attribution
from .._errors import BudgetExceededError, ConfigurationError, describe_budget_key
from .._redaction import first_line
from ..accounting import _feed
from ..accounting._events import UsageEvent
from ..accounting._price_table import nanousd_to_usd
from ..accounting._recorder import UsageRecorder
from ..storage._engine import masked_url
from ..storage._models import UsageRecord
from ..storage._store import UsageStore
from ._policy import BudgetAlert, BudgetPolicy, check_ledger_url, log_budget_alert, period_bounds

__all__ = ["BudgetTracker", "LedgerSource", "ledger_key", "tracker_for", "trackers"]

logger = logging.getLogger("autogen_reliability")

LedgerSource = UsageStore | str
"""Where a budget reads spend: a store, or the URL of one (opened on a reader thread when first read)."""

READER_THREADS: Final = 2
MAX_KEYS: Final = 10_000  # key states kept per tracker; those with nothing pending go first when there are more
MAX_PENDING: Final = 100_000  # unwritten events counted per key (the oldest go beyond, said once in the log)
# Unpriced models a tracker remembers having named in the log (the oldest forgotten first: said again if it comes back).
MOST_UNPRICED_MODELS: Final = 1024
_IN_CHUNK: Final = 500  # event ids per IN (...): far below every backend's limit of bound parameters

_RECORDS: Final = UsageRecord.__table__
_NEVER: Final = float("-inf")
_NO_KEY: Final = object()  # the key of a read that sums nothing: it only asks which events are stored


def ledger_key(source: LedgerSource) -> Hashable:
    """What tells one database from another: the backend and its file, or its server and database."""
    url = source.engine.url if isinstance(source, UsageStore) else make_url(source)
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        return (backend, database if url.query.get("uri") else str(Path(database).resolve()))
    return (backend, url.host or "", url.port or 0, url.database or "")


class _Ledger:
    """One database that budgets read; shared by every tracker reading it."""

    def __init__(self, source: LedgerSource) -> None:
        self._store = source if isinstance(source, UsageStore) else None
        self._url = source if isinstance(source, str) else None
        self.name = source.url if isinstance(source, UsageStore) else masked_url(make_url(source))
        self._lock = threading.Lock()
        self._down = False

    def store(self) -> UsageStore:
        """The store to read (on a reader thread: opening one connects and may migrate an empty database)."""
        with self._lock:
            if self._store is None:
                assert self._url is not None
                self._store = UsageStore(self._url)
            return self._store

    def close(self) -> None:
        """Closes the store this ledger opened from a URL (a store it was given is its owner's to close)."""
        if self._url is None:
            return
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A connection whose queries all see one snapshot of the database, as the store's schema check does."""
        with self.store().engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN")  # the sqlite3 module starts no transaction for reads
            else:
                connection.execution_options(isolation_level="REPEATABLE READ")
            yield connection

    def forked(self) -> None:
        """In a child process: a lock a thread of the parent held at the fork would stay held."""
        self._lock = threading.Lock()

    def failed(self, error: Exception) -> None:
        with self._lock:
            was_down, self._down = self._down, True
        if not was_down:
            first = first_line(error)
            logger.warning(
                "budgets cannot read the usage ledger %s (%s: %s); until it answers they count the spend last "
                "read plus this process's own",
                self.name,
                type(error).__name__,
                first,
                extra={"ledger": self.name},
            )

    def answered(self) -> None:
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            logger.warning("budgets read the usage ledger %s again", self.name, extra={"ledger": self.name})


class _Readers:
    """A few daemon threads that run ledger reads, so that none ever runs on an event loop."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._jobs: queue.SimpleQueue[tuple[Future[None], Callable[[], None]]] = queue.SimpleQueue()
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> Future[None]:
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()  # a read, once asked for, runs: its result is shared by every waiter
        self._jobs.put((future, job))
        with self._lock:
            if self._started < self._workers:
                self._started += 1
                threading.Thread(target=self._run, name="autogen-reliability-budget", daemon=True).start()
        return future

    def _run(self) -> None:
        while True:
            future, job = self._jobs.get()
            try:
                job()
            except BaseException as error:  # a job handles its own errors; this is a bug, said where it happened
                logger.exception("a budget's ledger read failed unexpectedly")
                future.set_exception(error)
            else:
                future.set_result(None)

    def forked(self) -> None:
        """In a child process: the parent's threads did not come along."""
        self._jobs = queue.SimpleQueue()
        self._started = 0
        self._lock = threading.Lock()


_readers = _Readers(READER_THREADS)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_readers.forked)


class _KeyState:
    """One key's spend in the current period."""

    __slots__ = (
        "alerted",
        "checked",
        "failed",
        "local_unpriced",
        "overlay",
        "pending",
        "read_at",
        "reading",
        "stored",
        "stored_unpriced",
        "warned",
    )

    def __init__(self) -> None:
        self.stored: int | None = None  # nano-USD in the ledger as last read; None: never read
        self.stored_unpriced = 0
        self.read_at = _NEVER  # when the last read started, on the policy's clock
        self.reading: Future[None] | None = None
        # Its last read failed, the ledger answering (its sum past a statement_timeout, say): its checks decide
        # on what it has, and it is read again every `refresh` in the background, until a read of it is done.
        self.failed = False
        self.pending: dict[uuid.UUID, UsageEvent] = {}  # this process's events not yet seen in the ledger
        self.overlay = 0  # their priced cost
        self.local_unpriced = 0  # and how many have no price
        self.alerted = 0  # thresholds fired this period
        self.checked = False  # a call of this budget was checked against it (else: another budget's key, say)
        self.warned = False  # on_exceed="warn" said it this period

    def add(self, event: UsageEvent) -> None:
        self.pending[event.event_id] = event
        if event.cost_nanousd is None:
            self.local_unpriced += 1
        else:
            self.overlay += event.cost_nanousd

    @property
    def never_read(self) -> bool:
        """No read of this key was made: its first will sum what of its events is stored, so others' may let it go.

        A key whose read failed is not one: until a read of its own is done, its events are this process's
        own spend, all the budget counts of it.
        """
        return self.stored is None and self.reading is None and self.read_at == _NEVER

    def forget(self, event_id: uuid.UUID) -> None:
        event = self.pending.pop(event_id)
        if event.cost_nanousd is None:
            self.local_unpriced -= 1
        else:
            self.overlay -= event.cost_nanousd


class BudgetTracker:
    """The spend of every key of one :class:`BudgetPolicy` on one ledger, in the current period."""

    def __init__(self, policy: BudgetPolicy, ledger: _Ledger) -> None:
        self.policy = policy
        self._ledger = ledger
        self._clock = policy.clock
        self._refresh = policy.refresh_seconds
        self._limit = policy.limit_nanousd
        self._limit_usd = cast(Decimal, policy.limit_usd)  # validated: a Decimal
        self._fractions = cast(tuple[Decimal, ...], policy.alert_at)
        self._alerts = policy.alert_nanousd
        self._raise = policy.on_exceed == "raise"
        fields = {"project": ("project",), "session": ("project", "session"), "agent": ("project", "agent")}
        self._key_of: Callable[[Any], Hashable] = attrgetter(*fields[policy.scope])
        self._lock = threading.Lock()
        self._states: dict[Hashable, _KeyState] = {}
        # Keys holding events that no read in flight will let go, oldest first: read again once their figure is
        # stale, even if no call checks them any more (a session that ended), so that their events go and
        # their states can (past MAX_KEYS).
        self._unread: dict[Hashable, None] = {}
        # Events of keys no call of this budget checked (another tenant's, under a budget of its own) are let go
        # by a read asking only which are stored, once per `refresh`: none of this budget's calls may read.
        self._pruning: Future[None] | None = None
        self._pruned_at = _NEVER
        self._pruning_failed = False  # the last pruning read reached the ledger, which answered with an error
        self._unreadable = False
        self._unpriced_models: dict[str | None, None] = {}  # insertion-ordered set, at most MOST_UNPRICED_MODELS
        self._dropped_said = False
        self._period = 0  # counts periods, so that a read started in one is not applied in the next
        self._first_day: date | None = None
        self._end_day: date | None = None
        self._start = self._end = 0.0
        self._period_start: datetime | None = None
        self._roll(self._clock())

    # -- the call path -------------------------------------------------------------------

    def admit(
        self,
        attribution: Attribution,
        *,
        waited: bool = False,
        on_alert: Callable[[BudgetAlert], object] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Future[None] | None:
        """Let a call with ``attribution`` go on, or raise :class:`BudgetExceededError`.

        An alert this check fires goes to ``on_alert``, the calling wrapper's hook
        (:func:`log_budget_alert` without one). ``clock`` is the calling wrapper's
        (its policy's): the time of this check, and of what the tracker does
        between checks (counting a row, reporting its spend) until another call's.

        Returns:
            ``None`` when decided; for the first check of a key, the read of its
            spend to wait for (off the loop), after which the caller admits again
            with ``waited=True`` (which decides with whatever the read left, or
            returns another read to wait for if the key's state was let go
            meanwhile: past ``MAX_KEYS``, or at the end of the period).
        """
        clock = clock or self._clock
        now = clock()
        key = self._key_of(attribution)
        fired: list[int] = []
        with self._lock:
            self._clock = clock
            if not self._start <= now < self._end:
                self._roll(now)
            state = self._states.get(key)
            if state is None:
                state = self._new_state(key)
                waited = False  # the figure read for this call went with the state it was in: read it again
            state.checked = True
            if state.stored is None and not waited and not self._unreadable and not state.failed:
                return state.reading or self._read(key, state, now)
            if state.reading is None and self._stale(state, now):
                self._read(key, state, now)  # in the background: this call goes on with the figure it has
            spent = (state.stored or 0) + state.overlay
            while state.alerted < len(self._alerts) and spent >= self._alerts[state.alerted]:
                fired.append(state.alerted)
                state.alerted += 1
            over = spent >= self._limit
            warn = over and not self._raise and not state.warned
            if warn:
                state.warned = True
            unpriced = state.stored_unpriced + state.local_unpriced
            period_start = self._period_start
        if fired:
            self._fire(fired, key, spent, unpriced, period_start, hook=on_alert or log_budget_alert)
        if over and (self._raise or warn):
            error = self._exceeded(key, spent, unpriced, period_start)
            if self._raise:
                raise error
            logger.warning(
                "%s; the call goes on (on_exceed='warn'), and this is said once this period",
                str(error).replace("; no request was sent", ""),
                extra={"budget_scope": error.scope, "budget_key": error.key, "project": error.project},
            )
        return None

    def _fire(
        self,
        fired: list[int],
        key: Hashable,
        spent: int,
        unpriced: int,
        start: datetime | None,
        *,
        hook: Callable[[BudgetAlert], object],
    ) -> None:
        policy = self.policy
        project, value = self._split(key)
        for index in fired:
            alert = BudgetAlert(
                threshold=self._fractions[index],
                spent_usd=nanousd_to_usd(spent),
                limit_usd=self._limit_usd,
                scope=policy.scope,
                key=value,
                project=project,
                period=policy.period,
                period_start=start,
                unpriced=unpriced,
            )
            try:
                result = hook(alert)
            except Exception:
                logger.exception("a budget's on_alert hook failed on %s", alert)
                continue
            if inspect.iscoroutine(result):  # a hook async in a way construction could not see (a lambda)
                result.close()  # never run: closed here, not left to a "never awaited" warning at collection
                logger.error(
                    "a budget's on_alert hook returned a coroutine, which was not run (the hook must be a plain "
                    "function): alert for %s",
                    alert,
                )

    def _exceeded(self, key: Hashable, spent: int, unpriced: int, start: datetime | None) -> BudgetExceededError:
        project, value = self._split(key)
        return BudgetExceededError(
            scope=self.policy.scope,
            key=value,
            project=project,
            period=self.policy.period,
            period_start=start,
            limit_usd=self._limit_usd,
            spent_usd=nanousd_to_usd(spent),
            unpriced=unpriced,
        )

    def _describe(self, key: Hashable) -> str:
        """``key`` as the log names it: ``project 'acme'``, ``session 't-1' of project 'acme'``."""
        project, value = self._split(key)
        return describe_budget_key(self.policy.scope, value, project)

    def _split(self, key: Hashable) -> tuple[str | None, str | None]:
        """(project, the scope's value) of a key."""
        if isinstance(key, tuple):
            return key[0], key[1]
        return key, key  # type: ignore[return-value]  # a project's key is the project

    # -- state ---------------------------------------------------------------------------

    def _stale(self, state: _KeyState, now: float) -> bool:
        """Whether ``state``'s figure is to be read again: it is ``refresh`` seconds old, or from a later time.

        The clock reads wall time, which can be set back (NTP stepping it, a VM resumed): a figure read
        "after" now would otherwise be used until the clock caught up, an hour for an hour's step, while
        other processes' spend went unseen.
        """
        return not 0 <= now - state.read_at < self._refresh

    def _roll(self, now: float) -> None:
        """Start the period that contains ``now``: every key starts again from the ledger."""
        self._first_day, self._end_day, self._start, self._end = period_bounds(self.policy.period, now)
        self._period_start = datetime.fromtimestamp(self._start, UTC) if self._first_day is not None else None
        self._period += 1
        self._states.clear()
        self._unread.clear()
        self._pruned_at = _NEVER
        self._unreadable = False

    def _new_state(self, key: Hashable) -> _KeyState:
        if len(self._states) >= MAX_KEYS:
            for known in [known for known, state in self._states.items() if not state.pending and not state.reading]:
                del self._states[known]
        state = self._states[key] = _KeyState()
        return state

    def observe(self, event: UsageEvent) -> None:
        """This process recorded ``event`` for this ledger: count it until a read finds it stored."""
        day = event.started_at.astimezone(UTC).date()
        now = self._clock()
        dropped = False
        with self._lock:
            if not self._start <= now < self._end:
                self._roll(now)
            if self._first_day is not None and not self._first_day <= day < self._end_day:  # type: ignore[operator]
                return  # another period's spend (a call that started before midnight)
            key = self._key_of(event)
            state = self._states.get(key)
            if state is None:
                state = self._new_state(key)
            if event.event_id in state.pending:
                return
            if len(state.pending) >= MAX_PENDING:
                # Only while the ledger cannot be read (or for a key no call of this budget checks, whose events
                # reads of other keys prune): memory is bounded, and the oldest stop counting here.
                state.forget(next(iter(state.pending)))
                dropped = not self._dropped_said
                self._dropped_said = True
            state.add(event)
            if state.never_read:
                self._prune(now)
            elif state.reading is None:
                # Keys read (with a figure, or whose read failed) are read again as their events come, even if
                # no call checks them any more: a read is what lets the events go. While the figure is fresh, later.
                if self._stale(state, now):
                    self._read(key, state, now)
                else:
                    self._unread[key] = None
            self._read_unread(now)
            new_model = event.cost_nanousd is None and self._new_unpriced(event.model)
        project, value = self._split(key)
        who = describe_budget_key(self.policy.scope, value, project)
        if dropped:
            logger.warning(
                "a budget holds %d unwritten usage rows of %s; older ones no longer count toward it until the "
                "ledger can be read",
                MAX_PENDING,
                who,
            )
        if new_model:
            logger.warning(
                "model %r has no price, so its calls cannot count toward the budget of %s (%s); "
                "they are counted as unpriced attempts. Give it a price (PricingTable) to count its cost",
                event.model,
                who,
                f"${self.policy.limit_usd} {'per ' + self.policy.period if self.policy.period else 'in all'}",
                extra={"model": event.model},
            )

    def _new_unpriced(self, model: str | None) -> bool:
        """Whether ``model``, unpriced, is one the log has not named (the lock is held); remembered if so."""
        if model in self._unpriced_models:
            return False
        self._unpriced_models[model] = None
        if len(self._unpriced_models) > MOST_UNPRICED_MODELS:
            del self._unpriced_models[next(iter(self._unpriced_models))]
        return True

    def _read_unread(self, now: float) -> None:
        """Start the reads of up to two keys that hold events and whose figure is stale (the lock is held).

        Each recorded event asks for this, and adds at most one key: keys gone idle are read as fast as
        events come. Not while the ledger cannot be read: their events wait for it to answer.
        """
        started = 0
        while self._unread and started < 2 and not self._unreadable:
            key = next(iter(self._unread))
            state = self._states.get(key)
            if state is not None and state.pending and state.reading is None:
                if not self._stale(state, now):
                    return  # the oldest is fresh: so, nearly, are those after it
                self._read(key, state, now)
                started += 1
            del self._unread[key]

    def _prune(self, now: float) -> None:
        """Start a read of which events of keys with no figure are stored, if none ran for ``refresh`` (lock held)."""
        if self._pruning is not None or self._unreadable or 0 <= now - self._pruned_at < self._refresh:
            return
        self._pruned_at = now
        period = self._period
        self._pruning = _readers.submit(lambda: self._read_now(_NO_KEY, period, (None, None)))

    def spend(self) -> list[tuple[str | None, str | None, int]]:
        """(project, the scope's value, nano-USD spent) of each key a call checked this period, as admit counts it.

        The ledger's figure last read plus this process's rows not yet in it;
        for a project budget the scope's value is the project. Not the keys
        whose rows it only counts in case a call of it comes for them (another
        budget's tenant): that is not what this budget has left for them.
        """
        now = self._clock()
        with self._lock:
            if not self._start <= now < self._end:
                self._roll(now)
            return [
                (*self._split(key), (state.stored or 0) + state.overlay)
                for key, state in self._states.items()
                if state.checked
            ]

    def pending_events(self) -> list[UsageEvent]:
        """Every event this tracker counts that no read found stored yet (for a new tracker of the same ledger)."""
        with self._lock:
            return [event for state in self._states.values() for event in state.pending.values()]

    # -- reading the ledger ----------------------------------------------------------------

    def _read(self, key: Hashable, state: _KeyState, now: float) -> Future[None]:
        """Start a read of ``key``'s spend (the lock is held)."""
        state.read_at = now
        period, days = self._period, (self._first_day, self._end_day)
        future = _readers.submit(lambda: self._read_now(key, period, days))
        state.reading = future
        return future

    def _read_now(self, key: Hashable, period: int, days: tuple[date | None, date | None]) -> None:
        """On a reader thread: the key's sum and which pending events are stored, from one snapshot.

        A read that cannot reach the ledger makes it unreadable (new keys no longer wait for a read that would
        wait for the database too); one the ledger answered with an error fails for its key alone.
        """
        reached = False
        try:
            with self._ledger.snapshot() as connection:
                reached = True
                total, unpriced = (
                    connection.execute(self._spend_query(key, *days)).one() if key is not _NO_KEY else (0, 0)
                )
                with self._lock:
                    candidates = self._candidates(key) if period == self._period else []
                found: set[uuid.UUID] = set()
                for start in range(0, len(candidates), _IN_CHUNK):
                    chunk = candidates[start : start + _IN_CHUNK]
                    found.update(connection.scalars(select(_RECORDS.c.event_id).where(_RECORDS.c.event_id.in_(chunk))))
        except Exception as error:
            self._failed(key, period, error, reached=reached)
            return
        with self._lock:
            pruned_again = False
            if key is _NO_KEY:
                self._pruning = None
                pruned_again, self._pruning_failed = self._pruning_failed, False
                if period == self._period:
                    self._let_go(found, key)
                    self._unreadable = False
            state = self._states.get(key) if period == self._period else None
            recovered = state is not None and state.failed
            if state is not None:
                state.stored, state.stored_unpriced = int(total or 0), int(unpriced or 0)
                state.reading = None
                state.failed = False
                self._let_go(found, key)
                if state.pending:  # not written yet: read again later
                    self._read_later(key)
                self._unreadable = False
        self._ledger.answered()
        if pruned_again:
            logger.warning(
                "budgets ask the usage ledger %s which rows of keys no call checked are stored again",
                self._ledger.name,
                extra={"ledger": self._ledger.name},
            )
        if recovered:
            logger.warning(
                "budgets read the spend of %s from the usage ledger %s again",
                self._describe(key),
                self._ledger.name,
                extra={"ledger": self._ledger.name},
            )

    def _failed(self, key: Hashable, period: int, error: Exception, *, reached: bool) -> None:
        """A read of ``key`` failed: the ledger is unreadable if it was not reached, else the key alone failed."""
        pruning_newly = False
        with self._lock:
            if key is _NO_KEY:
                self._pruning = None
                if reached:
                    pruning_newly, self._pruning_failed = not self._pruning_failed, True
            if not reached and period == self._period:
                self._unreadable = True
            state = self._states.get(key) if period == self._period else None
            newly = state is not None and not state.failed
            if state is not None:
                state.reading = None
                state.failed = True
                if state.pending:
                    self._read_later(key)
        if not reached:
            self._ledger.failed(error)
        elif pruning_newly:  # the ledger answered: said once, not as the ledger down (and up at each read)
            logger.warning(
                "budgets cannot ask the usage ledger %s which rows of keys no call checked are stored (%s: %s); "
                "they keep counting those rows, in memory, until a read of it succeeds",
                self._ledger.name,
                type(error).__name__,
                first_line(error),
                extra={"ledger": self._ledger.name},
            )
        elif newly:  # the ledger answered: said once for the key, not as the ledger down (and up at each read)
            logger.warning(
                "budgets cannot read the spend of %s from the usage ledger %s (%s: %s); until a read of it "
                "succeeds they count the spend last read plus this process's own",
                self._describe(key),
                self._ledger.name,
                type(error).__name__,
                first_line(error),
                extra={"ledger": self._ledger.name},
            )

    def _let_go(self, found: set[uuid.UUID], key: Hashable) -> None:
        """Forget the events ``found`` stored, of ``key`` and of the keys never read (the lock is held).

        Another key's events may go only while it was never read: a figure it has was read in another snapshot,
        which may not hold them, and one whose read failed counts them alone. After a pruning read (``key`` is
        ``_NO_KEY``), a key never read that holds nothing any more goes too.
        """
        empty: list[Hashable] = []
        for known, other in self._states.items():
            if known == key or other.never_read:
                for event_id in found.intersection(other.pending):
                    other.forget(event_id)
                if key is _NO_KEY and not other.pending and not other.alerted and not other.warned:
                    empty.append(known)  # nothing to keep: a call of it would read its figure first
        for known in empty:
            del self._states[known]

    def _read_later(self, key: Hashable) -> None:
        """``key`` holds events still to be let go: to the end of the keys read again once stale (it was read now)."""
        self._unread.pop(key, None)
        self._unread[key] = None

    def _candidates(self, key: Hashable) -> list[uuid.UUID]:
        """The pending events a read of ``key`` asks about: its own, and those of keys never read."""
        found: list[uuid.UUID] = []
        for known, state in self._states.items():
            if known == key or state.never_read:
                found.extend(state.pending)
        return found

    def _spend_query(self, key: Hashable, first_day: date | None, end_day: date | None) -> Select[Any]:
        columns = _RECORDS.c
        project, value = self._split(key)
        conditions = [columns.project.is_(None) if project is None else columns.project == project]
        if self.policy.scope != "project":
            column = columns[self.policy.scope]
            conditions.append(column.is_(None) if value is None else column == value)
        if first_day is not None and end_day is not None:
            conditions += [columns.day >= first_day, columns.day < end_day]
        # Both sums read only an index: the report index for a project, ix_ar_usage_records_{session,agent}_spend.
        return select(
            func.sum(columns.cost_nanousd),
            func.sum(case((columns.cost_nanousd.is_(None), 1), else_=0)),
        ).where(*conditions)

    def forked(self) -> None:
        """In a child process: the reads in flight were the parent's reader threads', which did not come along.

        Their futures would never end, and a call of the child waiting for one (a key's first check) waited
        for ever; a key with a figure would never read again. The child reads for itself, at its next check.
        """
        self._lock = threading.Lock()  # held at the fork, by the thread that forked (see _hold_for_fork)
        self._pruning = None  # the parent's, likewise: it would stop every later pruning read of the child
        self._pruned_at = _NEVER
        for key, state in self._states.items():
            if state.reading is not None:
                state.reading = None
                state.read_at = _NEVER
                if state.pending:
                    self._unread[key] = None  # read again even if no call of the child checks it

    def wait_for_reads(self, timeout: float = 10.0) -> bool:
        """Wait until no read of this tracker is in flight (for tests and benchmarks); False on timeout."""
        with self._lock:
            reading = [state.reading for state in self._states.values() if state.reading is not None]
            if self._pruning is not None:
                reading.append(self._pruning)
        for future in reading:
            try:
                future.result(timeout)
            except TimeoutError:
                return False
        return True


# -- the process-wide registry --------------------------------------------------------------

_lock = threading.Lock()
_ledgers: dict[Hashable, _Ledger] = {}
# Trackers live as long as the process, like the breakers of clients that live that long: a tracker made
# again would have lost the unwritten rows it counted (all of them, while the database is down). They are
# keyed by the ledger and the policy without what is code or an object (its on_alert, clock and store), so
# that they are as many as the budgets: a hook, a clock or a store made per request (a closure over the
# tenant) would otherwise add one for good at each request, each fed every event.
_trackers: dict[tuple[Hashable, BudgetPolicy], BudgetTracker] = {}
_by_ledger: dict[Hashable, tuple[BudgetTracker, ...]] = {}
_recorder_ledgers: weakref.WeakKeyDictionary[UsageRecorder, Hashable] = weakref.WeakKeyDictionary()
_unsubscribe: Callable[[], None] | None = None


def _hold_for_fork() -> None:
    """Before a fork: the registry and every tracker, so that no thread of the parent is midway through them.

    The child is a copy of the parent's memory at that instant, and has none of its other threads: a tracker
    registered but not yet fed this ledger's events (a wrapper being made), or an event in a key's pending rows
    but not yet in its overlay, would stay so in the child, whose calls a budget would then not count. Each is
    held for microseconds, and none while waiting for the database. The registry's lock comes first, as in
    :func:`tracker_for`.
    """
    _lock.acquire()
    for tracker in _trackers.values():
        tracker._lock.acquire()


def _release_after_fork() -> None:
    """After a fork, in the parent: what :func:`_hold_for_fork` held goes on."""
    for tracker in _trackers.values():
        tracker._lock.release()
    _lock.release()


def _trackers_in_child() -> None:
    """After a fork, in the child: what the parent's threads held or ran starts afresh (``BudgetTracker.forked``)."""
    global _lock  # noqa: PLW0603  # held at the fork, by the thread that forked (see _hold_for_fork)
    _lock = threading.Lock()
    for ledger in _ledgers.values():
        ledger.forked()
    for tracker in _trackers.values():
        tracker.forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hold_for_fork, after_in_parent=_release_after_fork, after_in_child=_trackers_in_child)


def tracker_for(policy: BudgetPolicy, recorder: UsageRecorder, database: str | None = None) -> BudgetTracker:
    """The tracker every wrapper with ``policy`` recording through ``recorder`` shares.

    Its ``policy`` is ``policy`` without ``on_alert``: wrappers whose policies differ only
    in the hook, the clock or the store object (of one database) share it, and each passes
    its own hook and clock to :meth:`BudgetTracker.admit`.

    Args:
        policy: The budget.
        recorder: The recorder the wrapper records to: its events are counted
            until they reach the ledger.
        database: The URL of the database ``recorder`` writes to, when the caller
            knows it (the process's default recorder); else its store tells.

    Raises:
        ConfigurationError: the ledger to read cannot be known (give ``store=``), or
            the budget reads another database than the one the wrapper records to.
    """
    global _unsubscribe  # noqa: PLW0603  # one subscription to the feed per process
    recorded = _recorder_source(recorder, database)
    if policy.store is not None:
        source: LedgerSource = policy.store
        if recorded is not None and ledger_key(recorded) != ledger_key(source):
            raise ConfigurationError(
                f"the budget reads spend from {_name(source)} but the wrapper records to {_name(recorded)}: "
                "its own calls would never count; leave store= out, or record to that database"
            )
    elif recorded is not None:
        source = recorded
    else:
        raise ConfigurationError(
            "a budget cannot tell which database this wrapper's recorder writes to (its sink is made by a "
            "function, or is not a UsageStore); give BudgetPolicy(store=...) the URL or UsageStore to read"
        )
    key = ledger_key(source)
    if policy.on_alert is not None:
        policy = dataclasses.replace(policy, on_alert=None)
    # The budget, whatever objects it was given: the database is the ledger's key, the clock the calling wrapper's.
    budget = dataclasses.replace(policy, store=None, clock=time.time)
    with _lock:
        ledger = _ledgers.get(key)
        if ledger is None:
            ledger = _ledgers[key] = _Ledger(source)
        # The user said where this recorder's rows end up, when its own store could not tell.
        _recorder_ledgers[recorder] = key
        tracker = _trackers.get((key, budget))
        if tracker is None:
            tracker = _trackers[key, budget] = BudgetTracker(policy, ledger)
            siblings = _by_ledger.get(key, ())
            # What the budgets already on this ledger count and the ledger does not hold yet is this one's too.
            for sibling in siblings:
                for event in sibling.pending_events():
                    tracker.observe(event)
            _by_ledger[key] = (*siblings, tracker)
        if _unsubscribe is None:
            _unsubscribe = _feed.subscribe(_recorded)
    return tracker


@atexit.register
def _close_ledgers() -> None:
    """On a normal exit, the stores budgets opened to read are closed: the last connection to a SQLite file
    closing is what moves its write-ahead log into the file (else ``usage.db`` alone holds no recent row)."""
    with _lock:
        ledgers = list(_ledgers.values())
    for ledger in ledgers:
        with contextlib.suppress(Exception):
            ledger.close()


def trackers() -> list[BudgetTracker]:
    """Every budget tracker of this process (for what reports what budgets have left: metrics)."""
    with _lock:
        return list(_trackers.values())


def _recorder_source(recorder: UsageRecorder, database: str | None) -> LedgerSource | None:
    if database is not None:
        check_ledger_url("the process's usage database", database)
        return database
    sink = recorder.sink
    if isinstance(sink, UsageStore):
        check_ledger_url("the recorder's store", sink.engine.url)
        return sink
    return None


def _name(source: LedgerSource) -> str:
    return source.url if isinstance(source, UsageStore) else masked_url(make_url(source))


def _recorded(event: UsageEvent, recorder: UsageRecorder) -> None:
    """The feed's listener: an event this process recorded goes to the trackers of the ledger it is written to."""
    key = _recorder_ledgers.get(recorder)
    if key is None:
        sink = recorder.sink  # None until a factory made it: asked again next time
        if not isinstance(sink, UsageStore):
            return
        key = _recorder_ledgers[recorder] = ledger_key(sink)
    for tracker in _by_ledger.get(key, ()):
        tracker.observe(event)
