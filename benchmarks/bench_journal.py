"""What the journal (a killed process loses no row) costs the call path: the candidates, measured.

Each candidate makes every recorded row survive a SIGKILL of the process, except
the buffered one, measured for comparison: a buffer in user space dies with the
process. All encode the row the same way (a marshal dump, times as numbers, a
crc32: what ``accounting/_journal.py`` does); they differ in where it goes:

- **queue only**: ``journal=False``, the recorder as it was (rows of the last
  batch window die with the process);
- **O_APPEND write**: plus one ``os.write`` per row to a file opened
  ``O_APPEND``: a system call per row, and it releases the GIL, which hands the
  GIL to the writer thread;
- **O_APPEND per tick**: rows buffered in a list, one ``os.write`` per turn of
  the event loop (not durable: the buffer dies with the process);
- **mmap journal**: ``journal=True``, the recorder as it is: a copy into a
  memory-mapped segment file, no system call.

Two measures: microseconds per ``record()`` on the calling thread (best of
several rounds of 20,000 pre-made events, the writer idle), and, as in
``bench_recorder.py``, how late a 1 ms timer wakes while a coroutine records
25,000 events/s into SQLite.

What was seen here (2 shared virtual cores, with other jobs running): per row,
queue only 0.9-1.1 µs, mmap journal 2.1-2.6 µs (+1.2-1.5 µs), O_APPEND write
3.4-4.6 µs (+2.5-3.5 µs), O_APPEND per tick 1.9-2.3 µs; at 25k events/s, p99
lateness of the worst run 1.0-1.6 ms for the queue only and the mmap journal
alike, 1.3-2.2 ms with a write per row.

Run: ``python -m benchmarks.bench_journal``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import marshal
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autogen_reliability import UsageRecorder
from autogen_reliability.accounting.events import ROW_FIELDS, UsageEvent, UsageRow
from autogen_reliability.storage import UsageStore

from .bench_recorder import baseline, event, measure, report

EVENTS = 20_000
ROUNDS = 9
RATES = (5_000, 25_000)
RUNS = 3
_STARTED = ROW_FIELDS.index("started_at")
_PRICE_DATE = ROW_FIELDS.index("price_date")


def encode(row: UsageRow) -> bytes:
    """The journal's encoding of a row (see ``accounting/_journal.py``), with its length and crc in front."""
    fields = list(row)
    fields[_STARTED] = fields[_STARTED].timestamp()
    if fields[_PRICE_DATE] is not None:
        fields[_PRICE_DATE] = fields[_PRICE_DATE].toordinal()
    payload = marshal.dumps(fields)
    return len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little") + payload


class Candidate:
    """A way to record: ``record(event)``, and ``tick()`` once per turn of the event loop."""

    def __init__(
        self, name: str, directory: Path, store: UsageStore, *, journal: bool, append: str | None, **options: Any
    ) -> None:
        self.name = name
        self.recorder = UsageRecorder(store, spool_dir=directory, close_sink=False, journal=journal, **options)
        directory.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(directory / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND) if append else None
        self.buffer: list[bytes] = []
        record = self.recorder.record
        if append == "row":
            fd = self.fd

            def write_each(item: UsageEvent) -> None:
                record(item)
                os.write(fd, encode(item.to_row()))  # type: ignore[arg-type]

            self.record: Callable[[UsageEvent], None] = write_each
        elif append == "tick":
            buffer = self.buffer

            def buffered(item: UsageEvent) -> None:
                record(item)
                buffer.append(encode(item.to_row()))

            self.record = buffered
        else:
            self.record = record

    def tick(self) -> None:
        if self.buffer and self.fd is not None:
            os.write(self.fd, b"".join(self.buffer))
            self.buffer.clear()

    def close(self) -> None:
        self.tick()
        self.recorder.close()
        if self.fd is not None:
            os.close(self.fd)


CANDIDATES = (
    ("queue only", {"journal": False, "append": None}),
    ("O_APPEND write", {"journal": False, "append": "row"}),
    ("O_APPEND per tick", {"journal": False, "append": "tick"}),
    ("mmap journal", {"journal": True, "append": None}),
)


def per_row(directory: Path, store: UsageStore) -> None:
    made = [event() for _ in range(EVENTS)]
    for name, options in CANDIDATES:
        best = float("inf")
        for round_ in range(ROUNDS):
            # The writer stays idle while the calling thread is timed: one batch larger than the round, and no
            # partial batch written within the hour.
            candidate = Candidate(
                name,
                directory / f"per-row-{round_}",
                store,
                batch_size=EVENTS + 1,
                max_queue=EVENTS + 1,
                flush_interval=3600,
                **options,
            )
            candidate.recorder.flush(30)  # its start-up replay is done: the writer waits for a batch
            gc.collect()
            record, tick = candidate.record, candidate.tick
            # CPU time of this thread: time the machine's other jobs took from it is not the candidate's cost.
            start = time.thread_time()
            for index, item in enumerate(made):
                record(item)
                if index % 25 == 24:
                    tick()  # a turn of the loop every 25 rows (25k/s at 1 ms turns)
            best = min(best, (time.thread_time() - start) / EVENTS)
            candidate.close()
        print(f"  {name:<18} {best * 1e6:5.2f} µs CPU per record() (best of {ROUNDS} x {EVENTS:,})")


def lateness(directory: Path, store: UsageStore, rate: int) -> None:
    for name, options in CANDIDATES:
        runs = []
        for run in range(RUNS):
            candidate = Candidate(name, directory / f"late-{run}", store, **options)
            candidate.recorder.flush(30)
            gc.collect()
            runs.append(asyncio.run(measure(candidate.record, rate, candidate.tick)))
            candidate.close()
        report(name, rate, runs)


def main() -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        store = UsageStore(f"sqlite:///{directory / 'usage.db'}")
        print("per record() on the calling thread:")
        per_row(directory, store)
        if "--per-row" in sys.argv:
            return
        print(f"a 1 ms timer's lateness while recording into SQLite ({RUNS} runs of 3 s, worst run shown):")
        for rate in RATES:
            baseline(rate)
            lateness(directory, store, rate)
        store.close()


if __name__ == "__main__":
    main()
