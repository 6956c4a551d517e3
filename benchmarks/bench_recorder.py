"""Recording at 25k events/s: how late the event loop wakes, and whether the writer keeps pace.

A producer coroutine records usage events at a steady rate while a ticker
coroutine asks to wake every millisecond and notes how late it woke. The writer
thread writes batches to the store meanwhile. The **baseline** runs the same
producer, making the same events, without recording them: its lateness is what
the machine and the producer's own work cost, and what recording adds is the
difference. "db down" records while the database cannot be opened, so every
batch goes to the spool file. Each run starts from a collected heap (``gc.collect()``), as a
service that has been up for a while would be.

What was seen here (2 shared virtual cores, the PostgreSQL server on the same
machine), over five invocations (two for "db down"), p99 / max lateness of the
worst run, and the share of ticks later than 2 ms:

- baseline at 25k/s: 0.5-0.7 / 2.7-4.0 ms, 0.01-0.06 % (max up to 17 ms at 1k/s);
- 1k events/s: SQLite 0.3-0.4 / 2.1-6.1 ms, PostgreSQL 0.3-0.4 / 3.4-13.2 ms,
  db down 0.3-0.9 / 3.7-4.7 ms;
- 25k events/s: SQLite 0.9-1.3 / 1.9-5.7 ms, 0-0.15 %; PostgreSQL
  0.7-1.4 / 2.5-18.7 ms, 0.05-0.22 %; db down 1.2-1.3 / 3.2-4.4 ms, 0.02-0.1 %.

Before rows were queued untracked by the garbage collector, written (and
spooled) in slices with the GIL handed over between them, and ids made without
``os.urandom`` (which releases the GIL, inviting the writer in on every call),
25k events/s gave SQLite 9 / 80 ms, PostgreSQL about 280 ms, and db down a p99
of 13 ms.

First, what one :meth:`UsageRecorder.record` call costs its caller (best of a few rounds of
5,000 calls, the writer thread storing to SQLite meanwhile): 7-19 us here, over three
invocations on the 2 shared cores while other test runs were busy. The test suite checks only
that the call does no I/O (it returns while the writer is stuck in a write), no longer that it
takes under 1 ms; this is where its speed is measured.

Then the ledger's write rate on SQLite and PostgreSQL, against the driver's own
rate in the same run (see :func:`write_rates`).

Run: ``python -m benchmarks recorder`` (set ``AUTOGEN_RELIABILITY_TEST_PG_URL``
for PostgreSQL: a role that may create databases, as for the tests; each PostgreSQL part runs in a new
database, dropped at the end; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import make_url

from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.accounting._events import UsageEvent, UsageRow, time_ordered_uuid
from autogen_reliability.storage import UsageStore, _bulk
from benchmarks.bench_report import postgresql_store
from benchmarks.timing import quick_run, refuse_other_arguments

QUICK = quick_run()
RATES = (1_000,) if QUICK else (1_000, 25_000)  # events per second: a busy service, and the stress goal
SECONDS = 0.3 if QUICK else 3.0
RUNS = 1 if QUICK else 3
TICK = 0.001
STALL = 0.002  # the goal: no wake-up later than this
RECORD_CALLS = 500 if QUICK else 5_000
RECORD_ROUNDS = 1 if QUICK else 5
WRITE_ROWS = 2_000 if QUICK else 20_000
BATCH = 1_000  # the recorder's default batch size


def event() -> UsageEvent:
    # Ids as the wrapper makes them (a call's id, and the event's own by default).
    return UsageEvent(
        call_id=time_ordered_uuid(),
        attempt=1,
        started_at=datetime.now(UTC),
        latency_ms=812.5,
        project="bench",
        agent="writer",
        provider="openai",
        model="gpt-4o-mini",
        prompt_tokens=1200,
        completion_tokens=80,
        cost_nanousd=228_000,
    )


async def measure(
    record: Callable[[UsageEvent], None], rate: int, after_turn: Callable[[], None] | None = None
) -> list[float]:
    """The ticker's lateness (seconds) while ``record`` gets ``rate`` events a second.

    ``after_turn`` runs after each turn's events (``bench_journal.py`` writes a buffer there).
    """
    lateness: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            lateness.append(time.perf_counter() - before - TICK)

    async def producer() -> None:
        start = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - start) < SECONDS:
            due = int(elapsed * rate)
            while sent < due:
                record(event())
                sent += 1
            if after_turn is not None:
                after_turn()
            await asyncio.sleep(TICK)
        stop.set()

    await asyncio.gather(ticker(), producer())
    return sorted(lateness)


def report(name: str, rate: int, runs: list[list[float]], extra: str = "") -> None:
    def at(lateness: list[float], share: float) -> float:
        return lateness[min(len(lateness) - 1, int(len(lateness) * share))] * 1e3

    p99 = max(at(run, 0.99) for run in runs)
    p999 = max(at(run, 0.999) for run in runs)
    worst = max(run[-1] for run in runs) * 1e3
    maxima = ", ".join(f"{run[-1] * 1e3:.1f}" for run in runs)
    over = sum(sum(1 for lateness in run if lateness > STALL) for run in runs)
    ticks = sum(len(run) for run in runs)
    print(
        f"  {name:<17} {rate:>6}/s  lateness p99 {p99:5.2f} ms, p99.9 {p999:5.2f} ms, "
        f"max {worst:5.2f} ms (runs: {maxima}); over {STALL * 1e3:.0f} ms: {over} of {ticks} ticks{extra}"
    )


def baseline(rate: int) -> None:
    runs = []
    for _ in range(RUNS):
        gc.collect()
        runs.append(asyncio.run(measure(lambda _event: None, rate)))
    report("baseline", rate, runs, "  [events made, not recorded]")


def recording(name: str, sink: UsageStore | Callable[[], UsageStore], spool: Path, rate: int) -> None:
    """Records through a new recorder per run; ``sink`` may be a store, or a factory that fails (an outage)."""
    runs, stored, seconds = [], 0, 0.0
    for _ in range(RUNS):
        named = None if isinstance(sink, UsageStore) else name  # a recorder of a factory needs a name
        recorder = UsageRecorder(sink, spool_dir=spool, close_sink=False, name=named)
        gc.collect()
        start = time.perf_counter()
        runs.append(asyncio.run(measure(recorder.record, rate)))
        recorder.flush(120)
        seconds += time.perf_counter() - start
        recorder.close()
        stored += recorder.stats["written"] + recorder.stats["spooled"]
    where = "spooled" if recorder.stats["spooled"] else "written"
    report(name, rate, runs, f"  [{stored} rows {where}, {stored / seconds:,.0f} rows/s incl. the final flush]")


def unreachable(directory: Path) -> Callable[[], UsageStore]:
    """A database that cannot be opened (its directory is missing): every batch goes to the spool."""
    return lambda: UsageStore(f"sqlite:///{directory / 'missing' / 'usage.db'}")


def record_cost(directory: Path) -> None:
    """Microseconds per record() call on the caller's thread, with the writer storing to SQLite meanwhile."""
    store = UsageStore(f"sqlite:///{directory / 'record-cost.db'}")
    recorder = UsageRecorder(store, spool_dir=directory / "spool-record-cost", close_sink=False)
    best = float("inf")
    for _ in range(RECORD_ROUNDS):
        batch = [event() for _ in range(RECORD_CALLS)]
        gc.collect()
        start = time.perf_counter()
        for made in batch:
            recorder.record(made)
        best = min(best, (time.perf_counter() - start) / RECORD_CALLS)
        recorder.flush(120)
    recorder.close()
    store.close()
    print(f"record(): {best * 1e6:.1f} us per call (best of {RECORD_ROUNDS} rounds of {RECORD_CALLS:,})")


def rows_per_second(write: Callable[[list[UsageRow]], object], rows: list[UsageRow]) -> float:
    """Rows a second that ``write`` stores, called with batches of the recorder's size."""
    start = time.perf_counter()
    for first in range(0, len(rows), BATCH):
        write(rows[first : first + BATCH])
    return len(rows) / (time.perf_counter() - start)


def sqlite_driver(path: Path) -> tuple[Callable[[list[UsageRow]], object], Callable[[], None]]:
    """The sqlite3 module alone, as the store's engine sets it up: the store's insert, one transaction a batch."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")

    def write(batch: list[UsageRow]) -> None:
        values = [_bulk._sqlite_values(row) for row in batch]  # the store's encoding: a few us a row
        connection.execute("BEGIN")
        connection.executemany(_bulk._SQLITE_INSERT, values)
        connection.execute("COMMIT")

    return write, connection.close


def postgresql_driver(url: str) -> tuple[Callable[[list[UsageRow]], object], Callable[[], None]]:
    """psycopg alone: the store's COPY, one transaction a batch."""
    import psycopg  # noqa: PLC0415  (only with PostgreSQL)

    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg.connect(conninfo)

    def write(batch: list[UsageRow]) -> None:
        with connection.transaction(), connection.cursor() as cursor, cursor.copy(_bulk._COPY) as copy:
            for row in batch:
                copy.write_row(_bulk._postgres_values(row))

    return write, connection.close


def write_rates(directory: Path, url: str | None) -> None:
    """The ledger's write rate: the database driver alone, ``UsageStore.write_rows``, and a recorder's writer.

    Each on a new, empty database, with the same rows, in batches of the recorder's size (1,000):

    - **driver**: the driver with the store's own statement and values (SQLite: ``executemany`` of the
      insert-or-ignore; PostgreSQL: ``COPY``), the values encoded as the store encodes them;
    - **store**: ``UsageStore.write_rows``: the same, plus checking for repeated events, the rollup
      tables (kept in the same transaction), the transaction through SQLAlchemy, the GIL handed over;
    - **recorder**: ``WRITE_ROWS`` rows recorded at once, until the writer thread has stored them all
      (journal trimmed, spool checked): its rate when nothing else runs.
    """
    rows = [event().to_row() for _ in range(WRITE_ROWS)]
    print(f"Writes of {WRITE_ROWS:,} rows in batches of {BATCH:,}, rows/s (each on an empty database):")
    backends: list[tuple[str, Callable[[str], AbstractContextManager[UsageStore]]]] = [("sqlite", _sqlite_store)]
    if url:
        backends.append(("postgresql", lambda _: postgresql_store(url)))
    for backend, open_store in backends:
        with open_store(str(directory / f"{backend}-driver.db")) as store:
            if backend == "sqlite":
                write, close = sqlite_driver(Path(store.engine.url.database or ""))
            else:
                write, close = postgresql_driver(store.engine.url.render_as_string(hide_password=False))
            driver = rows_per_second(write, rows)
            close()
        with open_store(str(directory / f"{backend}-store.db")) as store:
            through_store = rows_per_second(store.write_rows, rows)
        with open_store(str(directory / f"{backend}-recorder.db")) as store:
            recorder = UsageRecorder(store, spool_dir=directory / f"spool-rate-{backend}", close_sink=False)
            events = [UsageEvent.from_row(row) for row in rows]
            start = time.perf_counter()
            for made in events:
                recorder.record(made)
            assert recorder.flush(300)
            by_recorder = len(rows) / (time.perf_counter() - start)
            recorder.close()
        print(
            f"  {backend:<11} driver {driver:9,.0f}   store {through_store:9,.0f} "
            f"({through_store / driver:4.2f} of the driver's)   "
            f"recorder {by_recorder:9,.0f} ({by_recorder / driver:4.2f})"
        )


@contextmanager
def _sqlite_store(path: str) -> Iterator[UsageStore]:
    with UsageStore(f"sqlite:///{path}") as store:
        yield store


def main() -> None:
    url = os.environ.get("AUTOGEN_RELIABILITY_TEST_PG_URL")
    with tempfile.TemporaryDirectory() as name:
        record_cost(Path(name))
        write_rates(Path(name), url)
    print(f"{RUNS} runs of {SECONDS:g} s at each rate; lateness of a 1 ms timer, worst run shown:")
    logging.disable(logging.WARNING)  # the outage runs warn that the database is unavailable
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        for rate in RATES:
            baseline(rate)
            sqlite = UsageStore(f"sqlite:///{directory / f'usage-{rate}.db'}")
            recording("sqlite", sqlite, directory / "spool", rate)
            sqlite.close()
            if url:  # a database of its own, as for the write rates: none of its rows left in the given one
                with postgresql_store(url) as postgresql:
                    recording("postgresql", postgresql, directory / "spool", rate)
            recording("db down", unreachable(directory), directory / f"spool-down-{rate}", rate)
        if not url:
            print("  postgresql skipped: set AUTOGEN_RELIABILITY_TEST_PG_URL")


if __name__ == "__main__":
    refuse_other_arguments("recorder")
    main()
