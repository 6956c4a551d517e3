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

Two measures: CPU microseconds per ``record()`` on the calling thread, for the
steps ``record()`` takes (flatten, lock, journal, queue; best of nine rounds of
14,000 pre-made events, the candidates in turn), and, as in
``bench_recorder.py``, how late a 1 ms timer wakes while a coroutine records
into SQLite through a real recorder (there the O_APPEND candidates flatten each
event twice).

What was seen here, on 2 virtual cores shared with four other jobs (so every
figure is slow: ``to_row()`` alone took 1.4 µs, about a microsecond on a quiet
machine), over four invocations:

- per ``record()``: queue only 2.3-2.4 µs; **mmap journal +2.5-2.6 µs**
  (+2.75 before the writer thread faulted the next segment's pages in);
  O_APPEND write +4.0-4.3 µs; O_APPEND per tick +2.6-3.0 µs (not durable). The
  encoding (a list, a timestamp, marshal, crc32) is about 1.9 µs of the
  journal's cost; the copy into the map the rest.
- loop lateness at 5,000 events/s, p99 of the worst run: baseline 0.4 ms,
  queue only 2.2 ms, O_APPEND write 1.8 ms, per tick 1.6 ms, mmap journal
  1.5 ms (the machine's noise is larger than the differences). At 25,000
  events/s the machine was saturated (the baseline itself woke 1.6 ms late at
  p99): queue only 3.6 ms, mmap journal 8.0 ms, per tick 12 ms, and O_APPEND
  write 157 ms: a system call per row, each releasing the GIL to the writer
  thread, is what the loop cannot afford.

In-flight rows (a row per provider attempt from its start, so a killed
process leaves one for every request the provider got; see ``InFlightTable``
in ``accounting/_journal.py``): CPU microseconds per one-attempt call on the
calling thread, the attempt and the accounting layer's recording of the call,
with and without the table: at the start, a provisional row made, priced and
put in a slot; at the end, the attempt's row made (reused when the call ends,
not made again) and written into the slot's other half; the slot freed once
the call has recorded. Real ``_Attempt`` objects on a real
``OpenAIChatCompletionClient`` (no request sent), the real price table. Seen
here on the same busy machine, over three invocations: 49-50 µs without,
90-92 µs with: **+41-42 µs per attempt**. Of it, making and pricing the
provisional row about 17 µs (the price lookup 14 µs: a second lookup per
attempt), holding and freeing the slot 8 µs, writing the end's row into the
slot 6 µs (flattening, marshal, crc32), the rest allocation and the garbage
collector. Since the provisional row takes its price from a per-token rate
looked up once a day per model, interleaved with the earlier code on a machine
busy with a test run: +27-33 µs against +51-64 µs for the earlier code in the
same minutes. collector. No system call (but one per 1,024 attempts in flight at once, to
make a file of slots). An attempt is a network request of tens of
milliseconds or more: this is about a thousandth of it.

Run: ``python -m benchmarks.bench_journal`` (``--per-attempt`` for the
in-flight figure only).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import marshal
import os
import sys
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autogen_core.models import CreateResult, RequestUsage, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

from autogen_reliability._context import Attribution
from autogen_reliability._pipeline import Call, Pipeline, Request, _Attempt
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.accounting._events import ROW_FIELDS, UsageEvent, UsageRow
from autogen_reliability.accounting._journal import Journal
from autogen_reliability.accounting._layer import AccountingLayer, _InFlight
from autogen_reliability.accounting._pricing import PricingTable
from autogen_reliability.storage import UsageStore

from .bench_recorder import SECONDS, baseline, event, measure, report
from .timing import quick_run, refuse_other_arguments

QUICK = quick_run()
EVENTS = 500 if QUICK else 14_000  # one segment of journal (the recorder's writer thread prepares the next one ahead)
ROUNDS = 1 if QUICK else 9
RATES = (5_000,) if QUICK else (5_000, 25_000)
RUNS = 1 if QUICK else 3
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


def call_path(name: str, directory: Path) -> tuple[Callable[[UsageEvent], None], Callable[[], None], Journal]:
    """What ``record()`` does on the calling thread for a candidate (the same steps as the recorder's)."""
    directory.mkdir(parents=True, exist_ok=True)
    queue: deque[UsageRow] = deque()
    lock = threading.Lock()
    journal = Journal(directory, "bench")
    journal.prepare()  # as the writer thread does ahead of time
    fd = os.open(directory / "append.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    buffer: list[bytes] = []

    def queue_only(item: UsageEvent) -> None:
        row = item.to_row()
        with lock:
            queue.append(row)

    def write_each(item: UsageEvent) -> None:
        row = item.to_row()
        with lock:
            os.write(fd, encode(row))
            queue.append(row)

    def buffered(item: UsageEvent) -> None:
        row = item.to_row()
        with lock:
            buffer.append(encode(row))
            queue.append(row)

    def mapped(item: UsageEvent) -> None:
        row = item.to_row()
        with lock:
            journal.append(row)
            queue.append(row)

    def tick() -> None:
        if buffer:
            os.write(fd, b"".join(buffer))
            buffer.clear()

    records = {"queue only": queue_only, "O_APPEND write": write_each, "O_APPEND per tick": buffered}
    return records.get(name, mapped), tick, journal


def per_row(directory: Path) -> None:
    made = [event() for _ in range(EVENTS)]
    best = dict.fromkeys((name for name, _ in CANDIDATES), float("inf"))
    for round_ in range(ROUNDS):
        for name in best:  # the candidates in turn, round after round: the machine's load hits all alike
            record, tick, journal = call_path(name, directory / f"per-row-{round_}-{len(name)}")
            gc.collect()
            # CPU time of this thread: time the machine's other jobs took from it is not the candidate's cost.
            start = time.thread_time()
            for index, item in enumerate(made):
                record(item)
                if index % 25 == 24:
                    tick()  # a turn of the loop every 25 rows (25k/s at 1 ms turns)
            best[name] = min(best[name], (time.thread_time() - start) / EVENTS)
            tick()
            journal.close(keep=False)
    for name, seconds in best.items():
        extra = seconds - best["queue only"]
        print(f"  {name:<18} {seconds * 1e6:5.2f} µs CPU per record(), {extra * 1e6:+5.2f} µs (best of {ROUNDS})")


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


def per_attempt(directory: Path) -> None:
    """CPU µs per one-attempt call that the in-flight rows add: start, end, the call's rows, the slot freed."""
    client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-bench")
    pipeline = Pipeline(client)
    recorder = UsageRecorder(
        UsageStore(f"sqlite:///{directory / 'attempts.db'}"), spool_dir=directory / "attempts", flush_interval=3600
    )
    table = recorder.in_flight
    assert table is not None
    layer = AccountingLayer(recorder, PricingTable())
    attribution = Attribution(project="bench", session="s-1", agent="agent")
    messages = [UserMessage(content="Summarise the ticket in two sentences. " * 20, source="user")]
    result = CreateResult(finish_reason="stop", content="A short answer.", usage=RequestUsage(200, 12), cached=False)
    attempts = 200 if QUICK else 2_000

    def run(tracked: bool) -> float:
        calls = [Call(attribution=attribution, streamed=False, extra_create_args={}) for _ in range(attempts)]
        requests = [Request(call=call, messages=messages) for call in calls]
        gc.collect()
        start = time.thread_time()
        for call, request in zip(calls, requests, strict=True):
            tracker = _InFlight(layer, table) if tracked else None
            call.tracker = tracker
            _Attempt(pipeline, request).finish(result, None, None)
            layer._record(call)  # the call's end: its rows made (reused from the attempt's end) and recorded
        return (time.thread_time() - start) / attempts

    best = {"no table": float("inf"), "in-flight rows": float("inf")}
    for _ in range(ROUNDS):
        best["no table"] = min(best["no table"], run(False))
        best["in-flight rows"] = min(best["in-flight rows"], run(True))
    recorder.close()
    extra = best["in-flight rows"] - best["no table"]
    for name, seconds in best.items():
        print(f"  {name:<18} {seconds * 1e6:6.2f} µs CPU per attempt (best of {ROUNDS})")
    print(f"  in-flight rows add {extra * 1e6:+.2f} µs per attempt")


def main() -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        print("per provider attempt, the in-flight rows (start, end, slot freed):")
        per_attempt(directory)
        if "--per-attempt" in sys.argv:
            return
        store = UsageStore(f"sqlite:///{directory / 'usage.db'}")
        print(f"per record() on the calling thread ({EVENTS:,} events a round):")
        per_row(directory)
        if "--per-row" in sys.argv:
            return
        print(f"a 1 ms timer's lateness while recording into SQLite ({RUNS} runs of {SECONDS:g} s, worst run shown):")
        for rate in RATES:
            baseline(rate)
            lateness(directory, store, rate)
        store.close()


if __name__ == "__main__":
    refuse_other_arguments("journal", "--per-attempt", "--per-row")
    main()
