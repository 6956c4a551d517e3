"""Recording at 25k events/s: how far the event loop is held up, and whether the writer keeps pace.

A producer coroutine records usage events at a steady rate while a ticker
coroutine asks to wake every millisecond and notes how late it woke: the
largest lateness is the worst stall the recording caused on the event loop
(goal: <= 2 ms). The writer thread writes batches to the store meanwhile.

What was seen here (2 shared cores), p99 / max loop lateness:

- 1k events/s: SQLite 0.5 / 63 ms, PostgreSQL 0.8 / 3.6 ms;
- 25k events/s: SQLite 9 / 80 ms (43 / 100 ms before the store yielded the GIL
  between chunks of 100 rows), PostgreSQL about 280 ms: psycopg's executemany
  keeps the GIL for most of a batch.

The maxima are the interpreter's full garbage collections (50-100 ms on a heap
holding AutoGen, SQLAlchemy and 25k new events a second); ``gc.freeze()`` after
start-up shortens them for any application. The 2 ms goal at 25k events/s is
not met: it needs the rows built and sent with far less Python per row, or a
writer process.

Run: ``python -m benchmarks.bench_recorder``
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from autogen_reliability import UsageRecorder
from autogen_reliability.accounting.events import UsageEvent
from autogen_reliability.storage import UsageStore

RATES = (1_000, 25_000)  # events per second: a busy service, and the stress goal
SECONDS = 3.0
TICK = 0.001


def event() -> UsageEvent:
    return UsageEvent(
        call_id=uuid.uuid4(),
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


async def measure(recorder: UsageRecorder, rate: int) -> tuple[list[float], float]:
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
                recorder.record(event())
                sent += 1
            await asyncio.sleep(0.002)
        stop.set()

    start = time.perf_counter()
    await asyncio.gather(ticker(), producer())
    recorder.flush(120)
    return lateness, time.perf_counter() - start


def run(name: str, store: UsageStore, spool: Path, rate: int) -> None:
    recorder = UsageRecorder(store, spool_dir=spool, close_sink=False)
    before = store.count()
    lateness, elapsed = asyncio.run(measure(recorder, rate))
    written = store.count() - before
    recorder.close()
    lateness.sort()
    p99 = lateness[int(len(lateness) * 0.99)]
    print(
        f"  {name:<10} {rate:>6}/s {written:>7} rows in {elapsed:5.2f} s "
        f"({written / elapsed:8.0f} rows/s incl. the final flush); "
        f"loop lateness: median {statistics.median(lateness) * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, "
        f"max {lateness[-1] * 1e3:.3f} ms"
    )


def main() -> None:
    print(f"recording for {SECONDS:.0f} s at each rate:")
    url = os.environ.get("AUTOGEN_RELIABILITY_TEST_PG_URL")
    with tempfile.TemporaryDirectory() as directory:
        for rate in RATES:
            run(
                "sqlite",
                UsageStore(f"sqlite:///{Path(directory) / f'usage-{rate}.db'}"),
                Path(directory) / "spool",
                rate,
            )
            if url:
                run("postgresql", UsageStore(url), Path(directory) / "spool", rate)
        if not url:
            print("  postgresql skipped: set AUTOGEN_RELIABILITY_TEST_PG_URL")


if __name__ == "__main__":
    main()
