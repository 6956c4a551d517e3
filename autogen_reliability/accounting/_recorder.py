"""``UsageRecorder``: usage events to the store, off the event loop, and never lost.

The LLM call path must never wait for a database, and a usage row must never
be dropped. So:

- :meth:`UsageRecorder.record` flattens the event into a row of plain values
  (:meth:`UsageEvent.to_row`, which the garbage collector does not track),
  copies it into this process's **journal** (a memory-mapped file, see
  :mod:`._journal`: no system call, about two microseconds) and appends it to an
  in-memory queue. No I/O, no lock held for long, and it never raises.
- A background thread writes the queue in batches (every ``flush_interval``
  seconds, or as soon as ``batch_size`` events wait), each batch in one
  transaction of bulk inserts, handing the GIL over every few dozen rows so the
  event loop keeps waking on time. The journal is trimmed as batches are stored.
- When a write fails (the database is down, locked, read-only, or slow past its
  timeout), the batch is appended to a local **spool** file (JSON lines, one
  ``fsync`` per batch) and the writer keeps spooling until the database answers
  again; then the spool is replayed and removed. A queue that grows past
  ``max_queue`` (the database cannot keep up) is spilled to the spool too.
- A row the database refuses (a count no column holds, a constraint it
  breaks, a PostgreSQL limit it is past: an index row too large) is not the
  database failing: the batch is written again in halves
  until that row is alone, the others are stored, and it is appended to a
  **refused** file in ``spool_dir`` (``<sink digest>.refused.jsonl``, fsynced,
  said in the log) rather than held, with its batch, in a spool no replay
  could ever empty. A spool file or journal that cannot be read does not hold
  back the others either.
- Every event carries a client-made UUID with a unique constraint in the store,
  and writes are insert-or-ignore: a batch replayed after a crash half-way, or
  a row both journaled and stored, is never counted twice.
- Each process spools and journals to files of its own; a process replays, at
  start and whenever its database is back, the spool files and journals that
  dead processes left behind (a journal is locked with ``flock`` while its
  process lives, so a live one is never replayed by another, and so is a lock
  file next to a process's spool files, which tells a dead process's from a
  live one's when its pid is reused; a spool file is locked while a process
  replays it, so only one does).

What can be lost:

- A normal exit runs :meth:`close` (atexit), which writes or spools everything.
- A process that dies outright (SIGKILL, the OOM killer, a container eviction,
  a crash of the interpreter) loses nothing that :meth:`record` accepted: the
  rows not yet stored are in its journal, which the kernel writes to disk after
  the process is gone, and the next recorder of the same database and
  ``spool_dir`` replays them. A call still running has recorded nothing yet
  (the rows of its attempts are made when the call ends), but the accounting
  layer keeps a row per attempt in the recorder's **in-flight table** (see
  :class:`._journal.InFlightTable`) from the attempt's start: the next
  recorder replays an attempt that had ended with its real row (a 429 waiting
  for its retry, say), and one still in flight, whose request the provider got
  and bills, as ``cancelled`` (``error_kind`` ``cancelled``, "the process
  ended before the attempt did") with its prompt's tokens estimated
  (``tokens_estimated``) and priced, no completion tokens.
- A crash of the machine (power loss, a kernel panic) can lose what the kernel
  had not yet written to disk: journal pages are not fsynced per row, so up to
  the rows of the last half minute (Linux writes dirty pages back after 30
  seconds by default). Stored rows and spooled batches are fsynced and survive.
- Without a journal (``journal=False``, or on Windows, or while the journal
  cannot be written: a full disk, a directory that is not writable, said once
  in the log) a process that dies outright loses the rows of its last batch
  window: ``flush_interval`` (1 s) or ``batch_size`` (1,000) events by default,
  and has no in-flight table either.
- When neither the database nor the spool can be written, events stay in
  memory, in order (and in the journal), and the writer tries both again at
  every wake-up (the database too when the queue is past ``max_queue``, whose
  excess it would otherwise only spill to the spool); a process that exits
  meanwhile leaves them to the next one in its journal, and says so in the log.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import json
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from .._errors import ConfigurationError, is_finite, shown_number
from .._redaction import first_line
from .._threads import SLICE_ROWS, hand_over_gil, in_slices
from ._events import ROW_FIELDS, ROW_JSON_FIELDS, UsageEvent, UsageRow
from ._journal import (
    InFlightTable,
    Journal,
    JournalFormatError,
    journal_supported,
    orphaned_in_flight,
    orphaned_journals,
    read_in_flight,
    read_journal,
)

try:
    import fcntl
except ImportError:  # Windows: spool files are not locked while replayed
    fcntl = None  # type: ignore[assignment]

__all__ = ["UsageRecorder", "UsageSink", "live_recorders"]

# What the writer thread survives, from a sink or a bug of ours: every exception but those that ask a thread to end
# (SystemExit, KeyboardInterrupt). A sink of the user's that runs asyncio inside can raise CancelledError, which
# is no Exception: the database failed, and the rows go to the spool.
_SURVIVED: Final = (Exception, asyncio.CancelledError)

logger = logging.getLogger("autogen_reliability")

DEFAULT_BATCH_SIZE: Final = 1000
DEFAULT_FLUSH_INTERVAL: Final = 1.0
DEFAULT_MAX_QUEUE: Final = 100_000
MAX_FLUSH_INTERVAL: Final = 3600.0  # an hour: rows wait in memory that long, and longer waits overflow timers
MAX_QUEUE_LIMIT: Final = 100_000_000  # rows held in memory; far more than any memory holds
DEFAULT_RETRY_INTERVAL: Final = 5.0  # seconds between attempts to reach a database that failed


class UsageSink(Protocol):
    """Where usage events are written: a :class:`~autogen_reliability.storage.UsageStore`, or your own."""

    def write(self, events: Sequence[UsageEvent]) -> int:
        """Writes ``events`` in one transaction, ignoring ones already stored; returns how many were new.

        A sink may also have ``write_rows(rows)``, taking the events as
        :meth:`UsageEvent.to_row` rows; the recorder then calls that instead
        (as it does for :class:`~autogen_reliability.storage.UsageStore`).
        A sink may also have ``reopen()``, which the recorder calls before it
        tries the sink again after a failure (see :meth:`UsageStore.reopen()
        <autogen_reliability.storage.UsageStore.reopen>`).
        """
        ...

    def close(self) -> None:
        """Releases the connection pool."""
        ...


class UsageRecorder:
    """Writes usage events to a sink on a background thread, spooling to disk when the sink fails.

    Args:
        sink: The store to write to, or a function that makes it (called on the
            writer thread, and again later while it fails; give ``name`` then).
        spool_dir: Where spool files go (created if missing; a leading ``~`` is the
            home directory; a path that is, or is under, something other than a
            directory is refused).
        batch_size: Events per write; a full batch is written at once.
        flush_interval: Seconds between writes of a partial batch (at most an hour).
        max_queue: Events held in memory before the writer spills them to the spool.
        close_sink: Close the sink when the recorder is closed.
        name: Names the spool files and the journal (default: the sink's URL);
            recorders of one database share a name, so one replays what another
            left behind. Required with a function as ``sink``: use the URL of
            the database it opens as ``UsageStore.url`` shows it, password masked
            (with the password in it, a process started after the password was
            rotated would not replay what was spooled before).
        retry_interval: Seconds between attempts to reach a database that failed
            (at most an hour); events wait in the spool meanwhile.
        journal: Also copy each event, as it is recorded, into a memory-mapped
            journal file in ``spool_dir``, so a process killed outright loses
            none (see the module's docstring). On by default where the platform
            has ``flock`` (not on Windows).

    Example:
        >>> from autogen_reliability import reliable
        >>> from autogen_reliability.storage import UsageStore
        >>> recorder = UsageRecorder(UsageStore("sqlite:///usage.db"), spool_dir=".usage-spool")
        >>> client = reliable(inner, recorder=recorder)  # inner: the model client you wrap
        >>> recorder.close()  # writes what is left (also done at exit)
    """

    def __init__(
        self,
        sink: UsageSink | Callable[[], UsageSink],
        *,
        spool_dir: str | os.PathLike[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_queue: int = DEFAULT_MAX_QUEUE,
        close_sink: bool = True,
        name: str | None = None,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        journal: bool = True,
    ) -> None:
        _check_int("batch_size", batch_size, 1, MAX_QUEUE_LIMIT)
        _check_int("max_queue", max_queue, batch_size, MAX_QUEUE_LIMIT, low_name="batch_size")
        _check_seconds("flush_interval", flush_interval)
        _check_seconds("retry_interval", retry_interval)
        for option, value in (("close_sink", close_sink), ("journal", journal)):
            if not isinstance(value, bool):
                raise ConfigurationError(f"{option} must be True or False, got {value!r}")
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"name must be a str, got {type(name).__name__}")
        if name is None and not _is_sink(sink):
            # The spool files and the journal are named now, before the factory has made the sink that knows
            # its URL; named after the function (every lambda is "<lambda>"), the rows spooled for one database
            # would be replayed by the recorder of another.
            raise ConfigurationError(
                "a sink made by a function needs name=, the database URL (the spool files and the journal are "
                "named after it, so that only a recorder of the same database replays them)"
            )
        # A factory is called on the writer thread: connecting never holds up the caller.
        self._factory: Callable[[], UsageSink] | None = None if _is_sink(sink) else sink  # type: ignore[assignment]
        self._sink: UsageSink | None = sink if _is_sink(sink) else None  # type: ignore[assignment]
        self._close_sink = close_sink
        self._batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._retry_interval = float(retry_interval)
        self._max_queue = max_queue
        self._spool = _Spool(check_spool_dir(spool_dir, option="spool_dir"), name or _sink_name(sink))
        self._journal = Journal(self._spool.directory, self._spool.prefix) if journal and journal_supported() else None
        self._attempts = (
            InFlightTable(self._spool.directory, self._spool.prefix, self._journal.token)
            if self._journal is not None
            else None
        )
        self._queue: deque[UsageRow] = deque()
        self._append_lock = threading.Lock()  # a row's place in the journal and in the queue is the same
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._healthy = True
        self._spool_healthy = True
        self._holding = False  # the last batch went neither to the database nor to the spool
        self._next_database_try = 0.0
        # When the database was found unavailable (monotonic), and the spooled count then: its end says both.
        self._unavailable_since = 0.0
        self._spooled_before = 0
        # "spooled" is the spool's own count (see stats): close() and a record() after it spool rows too.
        self._stats = {"written": 0, "replayed": 0, "failed_writes": 0, "refused": 0}
        self._unreadable: set[Path] = set()  # spool files and journals a replay could not read (logged once each)
        # Spool files and journals whose replay failed part-way: what the file was then, and how many of its
        # batches were stored (the next try goes on from there, counting and refusing none of them again).
        self._replayed_part: dict[Path, tuple[_FileIdentity, int]] = {}
        self._thread = threading.Thread(target=self._run, name="autogen-reliability-recorder", daemon=True)
        self._thread.start()
        self._start_pending = False  # a forked child starts its writer at its first record()
        _live_recorders.add(self)

    # -- the call path -------------------------------------------------------------

    def record(self, event: UsageEvent) -> None:
        """Queue ``event`` for writing. Never blocks on I/O, never raises."""
        try:
            row = event.to_row()
            with self._append_lock:
                queued = not self._closed
                if queued:
                    if self._start_pending:
                        self._start_writer()
                    if self._journal is not None:
                        self._journal.append(row)  # before record() returns: from now on, a killed process keeps it
                    self._queue.append(row)
            if not queued:
                # Late events (after close) still must not vanish: straight to the spool.
                self._spool.append([row])
                return
            if len(self._queue) >= self._batch_size:
                self._wake.set()
        except Exception:  # recording must never break a model call
            logger.exception("could not queue a usage event")

    # -- control ---------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event recorded so far is written or spooled; ``False`` on timeout."""
        timeout = _timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._queue or self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(0.05 if remaining is None else min(remaining, 0.05))
                self._wake.set()
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Write (or spool) everything, stop the writer thread and close the sink. Safe to call twice.

        ``timeout`` bounds the whole wait (for the writer to store what is queued, then to end); what is
        still queued then is spooled, and a batch the writer is still writing stays in the journal.
        """
        timeout = _timeout(timeout)  # before anything is closed: a bad timeout must not leave a half-closed recorder
        if self._closed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        if not self._start_pending:
            # One deadline for both waits: a write that hangs (a server gone silent) held close() twice its timeout.
            self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        # Whatever is still queued (a timeout) goes to the spool rather than nowhere.
        stuck = self._thread.is_alive()  # still writing a batch: its rows, older than these, are not stored yet
        with self._append_lock:
            leftover = self._take(len(self._queue))
            if leftover:
                try:
                    self._spool.append(leftover)
                    if not stuck:
                        self._stored(len(leftover))
                except Exception:
                    if self._journal is None:
                        fate = "they are lost"
                    elif self._journal.holds_unstored():
                        fate = "the next process replays them from the journal"
                    else:  # the disk that refused the spool refused the journal too
                        fate = "they are lost (the journal could not hold them)"
                    logger.exception("%d usage events could be neither written nor spooled; %s", len(leftover), fate)
            if self._journal is not None:
                self._journal.close(keep=stuck)  # deleted if everything is stored; else left for the next process
            if self._attempts is not None:
                self._attempts.close()  # once the calls still running have recorded (their rows go to the spool)
        if self._close_sink and self._sink is not None:
            with contextlib.suppress(Exception):
                self._sink.close()
        _live_recorders.discard(self)

    @property
    def pending(self) -> int:
        """Events recorded but not yet written or spooled."""
        return len(self._queue) + self._in_flight

    @property
    def held_in_memory(self) -> int:
        """Events held in memory because neither the database nor the spool took them at the last try; else 0.

        While some are, every event waiting is: the writer tries both again at every wake-up, in order. A
        process killed meanwhile keeps them only in its journal (none without one).
        """
        return self.pending if self._holding else 0

    @property
    def spool_path(self) -> Path:
        """The file this process spools to while the database is unavailable."""
        return self._spool.path

    @property
    def journal_paths(self) -> list[Path]:
        """The journal files of this recorder: rows recorded and not yet stored (empty without a journal)."""
        return self._journal.paths if self._journal is not None else []

    @property
    def sink(self) -> UsageSink | None:
        """The sink events are written to: the one given, or the one the factory made (None until it has).

        What reads the ledger back (a budget) learns from it which database this recorder writes to.
        """
        return self._sink

    @property
    def in_flight(self) -> InFlightTable | None:
        """The table of attempts in flight that the accounting layer keeps (None without a journal)."""
        return self._attempts

    @property
    def refused_path(self) -> Path:
        """The file that keeps the events the database refused (a count too large for its column, say).

        They are never retried: fix what the log names and write them to the store yourself
        (``UsageEvent.from_json`` reads each line back).
        """
        return self._spool.refused_path

    @property
    def spooled(self) -> int:
        """Events waiting in this process's spool files for the database to come back.

        A spool file being replayed counts until it is removed, all its events stored:
        a replay that fails leaves them waiting, and still counted.
        """
        return self._spool.count()

    @property
    def spooled_since(self) -> datetime | None:
        """When the oldest event still waiting in this process's spool files was spooled (UTC); None: none waits."""
        return self._spool.since()

    @property
    def writer_alive(self) -> bool:
        """Whether the writer thread runs: False once the recorder is closed, or if the thread died.

        Events recorded to a recorder without a writer are never written (after :meth:`close`
        they go straight to the spool, for another recorder to replay).
        """
        return (self._start_pending and not self._closed) or self._thread.is_alive()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: events ``written``, ``spooled``, ``replayed``, ``refused``; ``failed_writes`` (batches).

        ``spooled`` counts every event appended to this process's spool files: by the writer, by :meth:`close`
        (what its timeout left queued) and by :meth:`record` after it.
        """
        stats = dict(self._stats)
        return {"written": stats.pop("written"), "spooled": self._spool.appended(), **stats}

    def _forked(self) -> None:
        """In a forked child: a writer thread, spool file, journal and in-flight table of its own.

        The parent's writer thread does not come along (the child's rows were queued for no one, and its
        journal is the parent's, see ``_journal._forget_in_child``): without this a multiprocessing worker's
        rows were never written. The rows the parent had queued are the parent's to write, and a lock its
        threads held at the fork would stay held here: both start afresh.
        """
        self._queue = deque()
        self._append_lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._holding = False
        self._stats = dict.fromkeys(self._stats, 0)
        # The end of an outage under way says the events spooled since it began: the child's, counted from 0.
        self._spooled_before = 0
        self._unreadable = set()
        self._replayed_part = {}
        self._spool = _Spool(self._spool.directory, self._spool.sink_name)  # named after this process
        if self._journal is not None:
            self._journal = Journal(self._spool.directory, self._spool.prefix)
            self._attempts = InFlightTable(self._spool.directory, self._spool.prefix, self._journal.token)
        self._thread = threading.Thread(target=self._run, name="autogen-reliability-recorder", daemon=True)
        # Started by the child's first record(), not here: the other fork handlers (the engines' pools) have
        # not all run yet, and a child that records nothing needs no thread.
        self._start_pending = True

    def _start_writer(self) -> None:
        """Starts the writer thread of a forked child (called with the append lock)."""
        self._start_pending = False
        self._thread.start()

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        self._safely(self._replay)  # connects first (a factory's sink is made here, on this thread)
        while not self._closed:
            if self._journal is not None:
                self._safely(self._journal.prepare)
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self._safely(self._drain)
        self._safely(self._drain)

    @staticmethod
    def _safely(step: Callable[[], None]) -> None:
        try:
            step()
        # A bug must not end the writer thread: the queue would grow unwritten and flush() would wait for ever.
        except _SURVIVED:
            logger.exception("the usage recorder's writer failed; it carries on")

    def _drain(self) -> None:
        while self._queue:
            kept = False
            batch: list[UsageRow] = []
            try:
                if len(self._queue) > self._max_queue:
                    # The database cannot keep up: move the excess to disk, where it is safe.
                    batch = self._take(len(self._queue) - self._max_queue)
                    kept = self._spool_rows(batch)
                    if not kept:
                        # The disk refuses it: the database, if it is back, is the only way out of memory.
                        self._requeue(batch)
                        batch = []
                if not kept:
                    batch = self._take(self._batch_size)
                    kept = self._write(batch)
            except BaseException:
                self._requeue(batch)  # back to the queue, in order, for the next wake-up: never dropped
                raise
            if not kept:
                self._holding = True
                self._requeue(batch)
                return  # neither the database nor the disk took it: try again at the next wake-up
            self._holding = False
            self._stored(len(batch))
            self._done(len(batch))
            hand_over_gil()  # the event loop's thread may be waiting for the GIL
        # Spooled events go to the database once it answers: now if healthy, else at the next try.
        retry_due = time.monotonic() >= self._next_database_try
        if (self._healthy and self._spool.count()) or (not self._healthy and retry_due):
            self._replay()

    def _take(self, limit: int) -> list[UsageRow]:
        batch: list[UsageRow] = []
        with self._idle:
            while self._queue and len(batch) < limit:
                batch.append(self._queue.popleft())
            self._in_flight += len(batch)
        return batch

    def _stored(self, count: int) -> None:
        """The oldest ``count`` rows taken from the queue are in the database or the spool: trim the journal."""
        if self._journal is not None:
            try:
                self._journal.stored(count)
            except Exception:
                logger.exception("could not trim the usage journal")

    def _done(self, count: int) -> None:
        with self._idle:
            self._in_flight -= count
            self._idle.notify_all()

    def _requeue(self, batch: list[UsageRow]) -> None:
        """Puts a batch that could not be written or spooled back at the head of the queue, in order."""
        with self._idle:
            self._queue.extendleft(reversed(batch))
            self._in_flight -= len(batch)

    def _connect(self) -> UsageSink | None:
        """The sink, made on this thread by the factory if it was not made yet; ``None`` while that fails.

        A sink that failed is reopened first, if it can be: a SQLite file deleted under the process is made
        again with its tables, and a connection that was read-only is dropped; without this, the replays
        would fail (or succeed into a deleted file) for as long as the process runs.
        """
        if self._sink is None and self._factory is not None:
            try:
                self._sink = self._factory()
            except _SURVIVED as error:
                self._failed(error)
        elif self._sink is not None and not self._healthy:
            reopen = getattr(self._sink, "reopen", None)
            if callable(reopen):
                try:
                    reopen()
                except _SURVIVED as error:
                    self._failed(error)
                    return None
        return self._sink

    def _write(self, batch: list[UsageRow]) -> bool:
        """Writes the batch to the database, else to the spool; False when neither took it."""
        if self._healthy or time.monotonic() >= self._next_database_try:
            sink = self._connect()
            if sink is None:
                return self._spool_rows(batch)
            try:
                refused = self._store(sink, batch)
            except _SURVIVED as error:
                self._failed(error)
            else:
                self._stats["written"] += len(batch) - refused
                self._reachable()
                return True
        return self._spool_rows(batch)

    def _spool_rows(self, batch: list[UsageRow]) -> bool:
        """Appends the batch to the spool file; False (logged once) when the disk refuses it too."""
        try:
            self._spool.append(batch)
        except Exception as error:
            if self._spool_healthy:
                logger.error(
                    "cannot write the usage spool %s (%s: %s); keeping %d events in memory until it can be written",
                    self._spool.path,
                    type(error).__name__,
                    first_line(error),
                    self.pending,
                    extra={"spool": str(self._spool.path)},
                )
            self._spool_healthy = False
            return False
        if not self._spool_healthy:
            logger.warning("usage spool %s writable again", self._spool.path)
        self._spool_healthy = True
        return True

    def _store(self, sink: UsageSink, rows: list[UsageRow]) -> int:
        """Writes ``rows`` to the sink, setting aside those it refuses; returns how many it refused.

        The rows it refuses are kept in the refused file once the others are stored, not before: a batch
        the database fails half-way is spooled, or replayed again, whole, and its refused rows were kept (and
        counted, and said) once more each time. They are one ERROR in the log, however many: a batch of events
        that all hold a count no column holds was one line per event.

        Raises:
            Exception: The database failed (down, locked, read-only, slow), or the refused file
                cannot be written: the caller spools the rows (insert-or-ignore stores none twice).
        """
        refused: list[UsageRow] = []
        errors: list[Exception] = []  # one per refused row, in order
        self._store_in_halves(sink, rows, refused, errors)
        if refused:
            self._spool.refuse(refused)
            self._stats["refused"] += len(refused)
            logger.error(
                "the usage database refused %d usage event(s) (%s: %s); kept in %s, not retried",
                len(errors),
                type(errors[0]).__name__,
                first_line(errors[0]),
                self._spool.refused_path,
                extra={"refused": str(self._spool.refused_path), "refused_count": len(errors)},
            )
        return len(refused)

    def _store_in_halves(
        self, sink: UsageSink, rows: list[UsageRow], refused: list[UsageRow], errors: list[Exception]
    ) -> None:
        try:
            _write_rows(sink, rows)
        except Exception as error:
            if not _refuses_a_row(error):
                raise
            if len(rows) == 1:
                refused.extend(rows)
                errors.append(error)
                return
            # The database answers, but one row (or a few) can never go in: find them in halves,
            # a few transactions per bad row, and store the others.
            half = len(rows) // 2
            self._store_in_halves(sink, rows[:half], refused, errors)
            self._store_in_halves(sink, rows[half:], refused, errors)

    def _unreadable_file(self, path: Path, error: BaseException) -> None:
        """A spool file or journal a replay could not read: left where it is, the others replayed."""
        if path not in self._unreadable:
            self._unreadable.add(path)
            logger.error(
                "could not replay the usage file %s (%s: %s); left in place, the others are replayed",
                path,
                type(error).__name__,
                first_line(error),
            )

    def _reachable(self) -> None:
        """The database took a batch: the end of an outage is said once, however the database was found back.

        A replay finds it back as often as a write does (while nothing new is recorded, the writer's retry is a
        replay): without this, an outage said in the log was never said to be over.
        """
        if self._healthy:
            return
        self._healthy = True
        spooled = self._spool.appended() - self._spooled_before
        logger.warning(
            "usage database reachable again after %.1f s; replaying the %d events spooled meanwhile",
            time.monotonic() - self._unavailable_since,
            spooled,
            extra={"spool": str(self._spool.path), "spooled": spooled},
        )

    def _failed(self, error: BaseException) -> None:
        self._stats["failed_writes"] += 1
        if self._healthy:
            self._unavailable_since = time.monotonic()
            self._spooled_before = self._spool.appended()
            logger.warning(
                "usage database unavailable (%s: %s); spooling events to %s",
                type(error).__name__,
                first_line(error),
                self._spool.path,
                extra={"spool": str(self._spool.path)},
            )
        self._healthy = False
        self._next_database_try = time.monotonic() + self._retry_interval

    def _replay_spool_file(self, sink: UsageSink, path: Path) -> bool:
        """Replays one spool file, locked meanwhile, and removes it once stored; False when the database failed."""
        try:
            claim = _claim(path)
        except _UnreadableFile as error:
            self._unreadable_file(path, error.__cause__ or error)
            return True
        if claim is None:
            return True  # another process replays it now, or has replayed and removed it
        try:
            self._replay_batches(sink, path, claim, _read_batches(path, self._batch_size))
        except _UnreadableFile as error:
            self._unreadable_file(path, error.__cause__ or error)
            return True
        except _SURVIVED as error:
            if not _refuses_a_row(error):
                self._failed(error)
                return False
            self._unreadable_file(path, error)
            return True
        else:
            self._spool.remove(path)  # before the lock is let go, so nobody replays it again
            self._reachable()
            return True
        finally:
            os.close(claim)

    def _replay_batches(self, sink: UsageSink, path: Path, fd: int, batches: Iterator[list[UsageRow]]) -> None:
        """Stores the batches read from spool file or journal ``path`` (open as ``fd``), but those stored already.

        A replay that failed part-way is tried again from its first batch not stored: the batches before it
        were counted in ``replayed`` once, and their refused rows kept once, not again at every try while the
        database comes and goes (nor written again, a whole spool file at every retry).

        Raises:
            _UnreadableFile: The file cannot be read.
            Exception: The database failed, or refused what it holds (see :meth:`_store`).
        """
        identity = _file_identity(fd)
        done_before = self._replayed_part.get(path)
        skipped = done_before[1] if done_before is not None and done_before[0] == identity else 0
        for number, batch in enumerate(_reading(batches)):
            if number < skipped:
                continue
            self._stats["replayed"] += len(batch) - self._store(sink, batch)
            self._replayed_part[path] = (identity, number + 1)
            self._reachable()
        self._replayed_part.pop(path, None)

    def _replay(self) -> None:
        """Write spooled events to the sink; a file is removed only once all its events are stored."""
        sink = self._connect()
        if sink is None:
            return
        # A file whose replay failed part-way and that another process replayed and removed since.
        self._replayed_part = {path: part for path, part in self._replayed_part.items() if path.exists()}
        for path in self._spool.files():
            if not self._replay_spool_file(sink, path):
                return
        # After the spool files: a dead process's final rows (its journal) are stored before its provisional ones
        # (its in-flight table) are tried.
        for orphans, read in (
            (orphaned_journals(self._spool.directory, self._spool.prefix), read_journal),
            (orphaned_in_flight(self._spool.directory, self._spool.prefix), read_in_flight),
        ):
            for path, fd in orphans:
                try:
                    self._replay_batches(sink, path, fd, _batches(read(fd, path), self._batch_size))
                except _SURVIVED as error:
                    os.close(fd)  # the lock goes with it: this process, or the next, tries again
                    if isinstance(error, _UnreadableFile):
                        self._unreadable_file(path, error.__cause__ or error)
                        continue
                    if not _refuses_a_row(error):
                        self._failed(error)
                        return
                    self._unreadable_file(path, error)
                    continue
                self._spool.remove(path)  # before the lock is let go, so nobody replays it again
                os.close(fd)
                self._reachable()


class _Spool:
    """JSON-lines spool files of one sink: ``<sink digest>-<pid>.jsonl``, one per process.

    While a process has spool files it holds a shared ``flock`` on ``<sink digest>-<pid>.lock``, which the
    kernel lets go when it dies: a replayer that finds the pid of a spool file alive tells by that lock whether
    the process is the one that spooled or another that was given its pid since (see :func:`_orphaned`).
    """

    def __init__(self, directory: Path, sink_name: str) -> None:
        self.directory = directory
        self.sink_name = sink_name
        self.prefix = hashlib.sha256(sink_name.encode()).hexdigest()[:16]
        self.path = directory / f"{self.prefix}-{os.getpid()}.jsonl"
        self.lock_path = self.path.with_suffix(_LOCK_SUFFIX)
        self._live: int | None = None  # a descriptor holding the shared lock of lock_path, while we have spool files
        _spools.add(self)
        # Shared by the processes of one sink; not "<prefix>-*.jsonl", so never taken for a spool file to replay.
        self.refused_path = directory / f"{self.prefix}.refused.jsonl"
        self._lock = threading.Lock()  # held across the file's I/O (an fsync)
        # Guards the counts only, never held across I/O: a health check reads them on its event loop.
        self._counts = threading.Lock()
        self._count = 0  # events in self.path
        self._appended = 0  # events appended to this process's spool files, ever
        self._since: datetime | None = None  # when the first of them was spooled
        # This process's files renamed for a replay and not yet removed: their events still wait.
        self._replaying: dict[Path, tuple[int, datetime | None]] = {}

    def append(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        # The writer spools whole batches while the database is down: in slices, so the event loop keeps
        # its turns (one batch of 1,000 rows held the GIL for 20 ms in one go).
        payload = "".join(line for rows_slice in in_slices(rows) for line in map(_spool_line, rows_slice))
        with self._lock:
            self._hold()
            self._append(self.path, payload)
            with self._counts:
                if not self._count:
                    self._since = datetime.now(UTC)
                self._count += len(rows)
                self._appended += len(rows)

    def refuse(self, rows: Sequence[UsageRow]) -> None:
        """Appends rows the database refused to the refused file (one write, fsynced: other processes append too)."""
        payload = "".join(map(_spool_line, rows))
        with self._lock:
            self._append(self.refused_path, payload)

    def _append(self, path: Path, payload: str) -> None:
        """Appends ``payload`` to ``path`` in the spool directory, on disk when it returns (called with the lock)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            with open(path, "a+", encoding="utf-8", opener=_private) as file:
                if not _appendable(file.fileno(), path):
                    continue  # replayed and deleted by another process (one of our pid's, before us) meanwhile
                # An append that failed half-way (a full disk, a file size limit, a process killed mid-write) left
                # a line without its end: start on a line of our own, or the first row would be glued to that
                # fragment and skipped with it on replay (its rows are spooled again, this one would be lost).
                size = os.fstat(file.fileno()).st_size
                if size and os.pread(file.fileno(), 1, size - 1) != b"\n":
                    payload = "\n" + payload
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
                return

    def appended(self) -> int:
        """Events appended to this process's spool files since it made this spool (``stats["spooled"]``)."""
        with self._counts:
            return self._appended

    def count(self) -> int:
        with self._counts:
            return self._count + sum(count for count, _ in self._replaying.values())

    def since(self) -> datetime | None:
        with self._counts:
            waiting = [*self._replaying.values(), (self._count, self._since)]
        return min((since for count, since in waiting if count and since is not None), default=None)

    def files(self) -> Iterator[Path]:
        """This process's spool file, and those of processes no longer running."""
        with self._lock:
            if self.path.exists():
                own = self.directory / f"{self.path.stem}.replaying-{time.time_ns()}.jsonl"
                # Renamed first, so events spooled meanwhile go to a fresh file, not into the one being replayed.
                self.path.rename(own)
                with self._counts:
                    self._replaying[own] = (self._count, self._since)
                    self._count, self._since = 0, None
                yield_own = [own]
            else:
                yield_own = []
        yield from yield_own
        if self.directory.is_dir():
            for path in sorted(self.directory.glob(f"{self.prefix}-*.jsonl")):
                if path not in yield_own and _orphaned(path):
                    yield path
            # A lock file with no spool file of its process: one killed between taking it and writing its first
            # row, or a replayer killed between deleting a dead process's last file and its lock. Nobody else
            # would ever delete it; one that its process (ours too) holds is left.
            for lock_path in sorted(self.directory.glob(f"{self.prefix}-*{_LOCK_SUFFIX}")):
                if not any(self.directory.glob(f"{lock_path.stem}.*jsonl")):
                    _remove_released(lock_path)

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with self._counts:
            self._replaying.pop(path, None)
        lock_path = path.with_name(path.name.split(".", 1)[0] + _LOCK_SUFFIX)
        if lock_path == self.lock_path:
            with self._lock:
                if self._live is not None and not self._replaying and not self.path.exists():
                    # None of our spool files left: the lock file goes (made again with the next one).
                    with contextlib.suppress(OSError):
                        if os.path.samestat(os.fstat(self._live), os.stat(lock_path)):
                            lock_path.unlink()
                    os.close(self._live)
                    self._live = None
        elif path.name.endswith(".jsonl") and not any(self.directory.glob(f"{lock_path.stem}.*jsonl")):
            _remove_released(lock_path)  # a dead process's, whose last spool file this was

    def _hold(self) -> None:
        """Takes the shared lock of this process's lock file, before the first spool file is written.

        Called with ``self._lock``. A replayer deleting the lock file of a dead process of our pid takes it
        exclusively, so the lock is taken on whatever file the path names once it is ours. Without ``flock``,
        or on a file system that refuses it, there is no lock file: our pid alone says we live.
        """
        if self._live is not None or fcntl is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if os.path.samestat(os.fstat(fd), os.stat(self.lock_path)):
                    self._live = fd
                    return
            except FileNotFoundError:
                pass  # deleted by a replayer between our open and our lock: make it again
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    self.lock_path.unlink()  # an unlocked lock file would say we are dead
                return
            os.close(fd)

    def forget(self) -> None:
        """In a forked child: the parent's lock is the parent's (closed here, not unlocked: that would be for both)."""
        if self._live is not None:
            with contextlib.suppress(OSError):
                os.close(self._live)
            self._live = None


def _private(path: str, flags: int) -> int:
    """Opens a spool file made readable by its owner only, as journal segments are: its rows hold tags, error
    texts, and captured prompts and answers (the umask, 022 by default, made them readable by every user)."""
    return os.open(path, flags, 0o600)


def _orphaned(path: Path) -> bool:
    """A spool file whose process is gone (or one of ours left over from a replay that failed).

    A process of its pid that lives may be another, given the pid since (a worker of another service, the
    next worker in a container): the file's process is gone if its lock file is there and nobody holds it.
    """
    pid_part = path.stem.split("-", 1)[1].split(".", 1)[0]
    if not pid_part.isdigit():
        return False
    pid = int(pid_part)
    if pid == os.getpid():
        return ".replaying-" in path.name
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    return _released(path.with_name(path.name.split(".", 1)[0] + _LOCK_SUFFIX))


def _appendable(fd: int, path: Path) -> bool:
    """Whether ``fd``, opened to append to ``path``, is still the file there once no replay holds it.

    A process that replays a spool file holds its lock (:func:`_claim`) until it has deleted it: rows appended
    meanwhile would go with the file. Waits for that lock (shared: appends do not wait for each other); False if
    the file was deleted meanwhile (open it again). Without ``flock`` (or on a file system refusing it), True.
    """
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        return True
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _released(lock_path: Path) -> bool:
    """Whether ``lock_path`` is a lock file that no process holds. No file: a process that spooled without one
    (a release before lock files, a file system without ``flock``), taken to be alive, as its pid says."""
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its process lives
        return False
    finally:
        os.close(fd)
    return True


def _remove_released(lock_path: Path) -> None:
    """Deletes the lock file of a dead process, unless a process of its pid has taken it meanwhile."""
    if fcntl is None:
        return
    try:
        fd = os.open(lock_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.stat(lock_path)):
            lock_path.unlink()  # before the lock is let go: a process waiting for it finds the file gone
    except OSError:
        pass
    finally:
        os.close(fd)


_LOCK_SUFFIX: Final = ".lock"

_spools: weakref.WeakSet[_Spool] = weakref.WeakSet()


def _spools_in_child() -> None:
    for spool in list(_spools):
        spool.forget()


_FileIdentity = tuple[int, int, int, int]
"""A file's device, inode, size and modification time: a file left by a dead process keeps it while it waits."""


def _file_identity(fd: int) -> _FileIdentity:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _spool_line(row: UsageRow) -> str:
    """The JSON line of :meth:`UsageEvent.to_json` for a row, without making the event (twice as fast)."""
    data = dict(zip(ROW_FIELDS, row, strict=True))
    data["started_at"] = row[_STARTED].isoformat()
    if row[_PRICE_DATE] is not None:
        data["price_date"] = row[_PRICE_DATE].isoformat()
    for index in _JSON_FIELDS:
        data[ROW_FIELDS[index]] = json.loads(row[index])
    # A value JSON has no form for (a cost as a Decimal, in an event of the user's) is written as its text:
    # the store refuses it on replay, and the row goes to the refused file, rather than failing every append
    # (of the spool and of the refused file) and holding its batch, and every one after it, in memory.
    return json.dumps(data, separators=(",", ":"), default=str) + "\n"


_STARTED: Final = ROW_FIELDS.index("started_at")
_PRICE_DATE: Final = ROW_FIELDS.index("price_date")
_JSON_FIELDS: Final = tuple(ROW_FIELDS.index(name) for name in ROW_JSON_FIELDS)


class _UnreadableFile(Exception):
    """Reading a spool file or journal failed (its ``__cause__`` says why): that file is skipped, and the
    database is not taken for down (which would spool every row, and replay no other file, while it lasts)."""


def _reading(batches: Iterator[list[UsageRow]]) -> Iterator[list[UsageRow]]:
    """``batches``, read from a spool file or journal; an ``OSError`` reading them, or a journal of another
    format, is :class:`_UnreadableFile` (the file is left in place, not deleted as replayed)."""
    try:
        yield from batches
    except (OSError, JournalFormatError) as error:
        # The reading only: what the consumer of a batch raises never comes in here.
        raise _UnreadableFile from error


def _claim(path: Path) -> int | None:
    """A descriptor holding the lock (``flock``) of spool file ``path`` while it is replayed; None: not to replay.

    None when another process holds the lock (it replays the file now: the workers of a restarted service all
    start at once, and each replayed every file a dead one left, the database doing the work several times
    over), or when the file is gone (replayed and removed meanwhile). Without ``flock`` (Windows), no lock.

    Raises:
        _UnreadableFile: The file cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _UnreadableFile from error
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The process that held the lock may have removed the file between our open and our lock.
        current = os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:  # locked by another process (BlockingIOError), or the file is gone
        os.close(fd)
        return None
    if not current:
        os.close(fd)
        return None
    return fd


def _read_batches(path: Path, size: int) -> Iterator[list[UsageRow]]:
    batch: list[UsageRow] = []
    # Read as bytes and decoded line by line: bytes that are no UTF-8 (a crash of the machine can leave a
    # block of garbage in the file) are one unreadable line, not a file whose every row is never replayed.
    with open(path, "rb") as spool:
        for number, line in enumerate(spool, 1):
            if number % SLICE_ROWS == 0:
                hand_over_gil()  # replaying runs on the writer thread, next to the event loop
            if not line.strip():
                continue
            try:
                batch.append(UsageEvent.from_json(json.loads(line.decode("utf-8"))).to_row())
            except (ValueError, TypeError, KeyError, AttributeError):
                # A torn line from a crash mid-write (its events were never acknowledged as spooled), or garbage.
                logger.warning("skipping an unreadable line %d of spool file %s", number, path)
                continue
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


def _batches(rows: Iterator[UsageRow], size: int) -> Iterator[list[UsageRow]]:
    batch: list[UsageRow] = []
    for number, row in enumerate(rows, 1):
        batch.append(row)
        if number % SLICE_ROWS == 0:
            hand_over_gil()  # decoding runs on the writer thread, next to the event loop
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def check_spool_dir(spool_dir: object, *, option: str) -> Path:
    """``spool_dir`` as a ``Path``, if it is, or can be made, a directory; ``option`` names it in the error.

    A leading ``~`` or ``~user`` is that home directory, as pip and git read it (a literal ``~`` directory
    in the working directory was never what was meant). A file there would be found only when the database
    is down, and then the rows would have nowhere to go. Whether the directory is writable is not checked:
    that can change, and the recorder copes (in memory).

    Raises:
        ConfigurationError: ``spool_dir`` is not a path, starts or ends with whitespace (pasted, or left by an
            environment file: a directory of that name is never what was meant), names the home of no such
            user, is a file (or anything but a directory), or lies under something that is not a directory.
    """
    if not isinstance(spool_dir, str | os.PathLike) or not os.fspath(spool_dir):
        raise ConfigurationError(f"{option} must be a directory path, got {spool_dir!r}")
    written = os.fspath(spool_dir)
    if isinstance(written, str) and written != written.strip():
        # " /data/spool" is a directory " " in the working directory, off the volume that was meant.
        raise ConfigurationError(
            f"{option} {written!r} starts or ends with whitespace; strip it (a directory name with a space at "
            "either end is taken for a stray one)"
        )
    try:
        path = Path(spool_dir).expanduser()
    except RuntimeError:  # ~user of no such user (or no home directory to be found)
        raise ConfigurationError(f"{option} {os.fspath(spool_dir)} cannot be expanded: no such user") from None
    try:
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise ConfigurationError(f"{option} {path} is not a directory")
            return path
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
    except OSError:  # a directory on the way that may not be read: the recorder copes if it cannot write there
        return path
    if not parent.is_dir():
        raise ConfigurationError(f"{option} {path} cannot be made: {parent} is not a directory")
    return path


def _timeout(timeout: float | None) -> float | None:
    """``timeout`` for a wait: ``None`` (or infinity) waits for ever; a thread's join() overflows on inf."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigurationError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if not (is_finite(timeout) or timeout in (math.inf, -math.inf)):
        raise ConfigurationError(f"timeout must be a number of seconds or None, got {shown_number(timeout)}")
    return None if timeout == math.inf else max(0.0, float(timeout))


def _check_seconds(name: str, value: object) -> None:
    """A number of seconds above zero and at most an hour: longer waits overflow the thread's timers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not is_finite(value) or not 0 < value <= MAX_FLUSH_INTERVAL:
        raise ConfigurationError(f"{name} must be > 0 and <= {MAX_FLUSH_INTERVAL:g} seconds, got {shown_number(value)}")


def _check_int(option: str, value: object, low: int, high: int, *, low_name: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{option} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        bound = f"{low_name} ({low})" if low_name else str(low)
        raise ConfigurationError(f"{option} must be an int >= {bound} and <= {high:_}, got {value!r}")


def _write_rows(sink: UsageSink, rows: list[UsageRow]) -> None:
    write_rows = getattr(sink, "write_rows", None)
    if write_rows is not None:
        write_rows(rows)
    else:
        sink.write([UsageEvent.from_row(row) for row in rows])


def _refuses_a_row(error: BaseException) -> bool:
    """Whether ``error`` is the sink refusing what a row holds (for good) rather than the database failing.

    A number no column holds (``OverflowError`` from the ``sqlite3`` module; PostgreSQL's
    ``numeric_value_out_of_range``, a DB-API ``DataError``), a constraint the row breaks
    (``IntegrityError``), a limit of PostgreSQL's the row is past (SQLSTATE class 54, which the DB-API
    files under ``OperationalError``: an index row over 2,704 bytes, from a model name of a few
    thousand characters), a value a sink of the user's cannot take (``ValueError``, ``TypeError``).
    Anything else (an ``OperationalError``: down, locked, read-only, too slow) is the database failing,
    and is tried again.
    """
    cause = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    if isinstance(cause, ArithmeticError | ValueError | TypeError):
        return True
    # psycopg 3 says the SQLSTATE as sqlstate, psycopg2 as pgcode. A whole batch past a limit (a statement
    # too complex) is written again in halves too, each of them within it.
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_PROGRAM_LIMIT_EXCEEDED):
        return True
    return any(klass.__name__ in ("DataError", "IntegrityError") for klass in type(cause).__mro__)


_PROGRAM_LIMIT_EXCEEDED: Final = "54"
"""PostgreSQL's SQLSTATE class of what is past one of its limits (an index row too large, too many columns)."""


def _is_sink(candidate: object) -> bool:
    return callable(getattr(candidate, "write", None))


def _sink_name(sink: object) -> str:
    return str(getattr(sink, "url", None) or type(sink).__qualname__)


_live_recorders: weakref.WeakSet[UsageRecorder] = weakref.WeakSet()


def live_recorders() -> list[UsageRecorder]:
    """The recorders of this process that are not closed (for what reports their backlog: metrics, health)."""
    return list(_live_recorders)


@atexit.register
def _close_recorders() -> None:
    """On a normal exit, every recorder writes or spools what it still holds."""
    for recorder in list(_live_recorders):
        with contextlib.suppress(Exception):
            recorder.close(timeout=10.0)


def _recorders_in_child() -> None:
    """After a fork, in the child: each recorder gets a writer of its own, and closes when the child ends.

    A multiprocessing child ends with ``os._exit``, which runs no ``atexit`` function: it runs the
    functions registered with ``threading._register_atexit`` (as ``concurrent.futures`` does), when
    ``threading._shutdown()`` ends the process's run; so does the interpreter's normal exit.
    """
    recorders = list(_live_recorders)
    for recorder in recorders:
        recorder._forked()
    register = getattr(threading, "_register_atexit", None)
    if recorders and register is not None:
        with contextlib.suppress(RuntimeError):  # the child is already shutting down
            register(_close_recorders)


if hasattr(os, "register_at_fork"):
    # Registered after the journal's own hook (imported above), which runs first: the parent's maps are let go.
    os.register_at_fork(after_in_child=_spools_in_child)
    os.register_at_fork(after_in_child=_recorders_in_child)
