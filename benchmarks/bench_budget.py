"""What a budget costs a call: the check on the call path with the spend figure cached, and the ledger read behind it.

- **check, cached**: ``BudgetTracker.admit`` for a key whose figure is fresh: the
  clock, a lock, two integers added and compared. This is what every call pays.
- **check, stale**: the same with ``refresh`` so short that the figure is always
  old: the call goes on with it and a read starts in the background (at most one
  in flight per key), so this costs about the same.
- **an event counted**: the feed's cost per recorded usage event (the local overlay).
- **the budget layer**: a pipeline of the layer and an attempt on a client that
  answers at once from memory, against the attempt alone: the check and the
  layer's ``await``.
- **a wrapped call**: the whole wrapper, recording to a SQLite ledger, with and
  without a budget (rounds interleaved). The recorder's writer thread shares the
  GIL, so this difference is within the noise; it is shown for scale.
- **the ledger read**: a key's first check waits for ``SUM(cost_nanousd)`` over
  its rows of the period, on a reader thread; measured on a SQLite ledger of
  ``ROWS`` rows (half of them the key's), per project (the report index) and per
  session (``ix_ar_usage_records_session_spend``).

Times of the checks are wall time of the best round (``timing.best_per_call``);
these machines are shared: compare within one run.

Run: ``python -m benchmarks budget`` (``--quick`` for a smoke run of a few
seconds, ``--json PATH`` to also write the numbers as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from autogen_reliability import BudgetPolicy, ReliableChatCompletionClient, usage_scope
from autogen_reliability._context import Attribution
from autogen_reliability._pipeline import Call, Pipeline, Request
from autogen_reliability.accounting import UsageEvent, UsageRecorder
from autogen_reliability.budget._layer import BudgetLayer
from autogen_reliability.budget._tracker import tracker_for
from autogen_reliability.storage import UsageStore
from benchmarks.bench_wrapper_overhead import MESSAGES, InstantClient, per_call_seconds
from benchmarks.timing import best_per_call

FULL = {"calls": 20_000, "rounds": 5, "wrapped_calls": 5_000, "rows": 200_000, "reads": 15}
QUICK = {"calls": 2_000, "rounds": 2, "wrapped_calls": 300, "rows": 2_000, "reads": 3}


def fill(store: UsageStore, rows: int) -> None:
    """``rows`` rows over the last 28 days: half for project "bench" (in 50 sessions), half for others."""
    now = datetime.now(UTC)
    batch: list[UsageEvent] = []
    for number in range(rows):
        mine = number % 2 == 0
        batch.append(
            UsageEvent(
                call_id=uuid.uuid4(),
                attempt=1,
                started_at=now - timedelta(minutes=number % (28 * 24 * 60)),
                latency_ms=100.0,
                project="bench" if mine else f"other-{number % 7}",
                session=f"s-{number % 50}",
                agent="writer",
                model="gpt-4o-mini",
                prompt_tokens=1000,
                completion_tokens=100,
                cost_nanousd=210_000,
            )
        )
        if len(batch) == 10_000:
            store.write(batch)
            batch = []
    store.write(batch)


async def pipeline_per_call(pipeline: Pipeline, attribution: Attribution, calls: int) -> float:
    """Seconds per call of one round of ``calls`` calls through ``pipeline``."""
    start = time.perf_counter()
    for _ in range(calls):
        await pipeline.create(Request(Call(attribution, streamed=False, extra_create_args={}), MESSAGES))
    return (time.perf_counter() - start) / calls


def ledger_read_ms(recorder: UsageRecorder, scope: str, reads: int) -> tuple[float, float]:
    """Best and median milliseconds of a key's first read (a new policy each time: a new tracker, no figure)."""
    attribution = Attribution(project="bench", session="s-1")
    times = []
    for number in range(reads):
        policy = BudgetPolicy(limit_usd=10**6 + number, period="month", scope=scope, alert_at=())  # type: ignore[arg-type]
        tracker = tracker_for(policy, recorder)
        start = time.perf_counter()
        reading = tracker.admit(attribution)
        assert reading is not None
        reading.result(60)
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks budget")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (CI)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    options = parser.parse_args(argv)
    size = QUICK if options.quick else FULL
    logging.getLogger("autogen_reliability").setLevel(logging.ERROR)  # the in-memory client has no price: said once
    results: dict[str, Any] = {"size": "quick" if options.quick else "full"}
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as directory:
        store = UsageStore(f"sqlite:///{directory}/usage.db")
        recorder = UsageRecorder(store, spool_dir=f"{directory}/spool", close_sink=False)
        attribution = Attribution(project="bench", session="s-1", agent="writer")

        cached = tracker_for(BudgetPolicy(limit_usd=1000, period="day", refresh=3600), recorder)
        assert cached.admit(attribution) is not None  # the first check: wait for the figure
        assert cached.wait_for_reads()
        calls, rounds = size["calls"], size["rounds"]
        results["check_cached_us"] = best_per_call(lambda: cached.admit(attribution), calls, rounds) * 1e6

        stale = tracker_for(BudgetPolicy(limit_usd=1000, period="day", refresh=0.000001), recorder)
        reading = stale.admit(attribution)
        assert reading is not None
        reading.result(60)
        results["check_stale_us"] = best_per_call(lambda: stale.admit(attribution), calls, rounds) * 1e6
        stale.wait_for_reads()

        # The layer alone: a pipeline of the budget layer and the attempt, against the attempt alone.
        inner = InstantClient()
        layer = BudgetLayer(tracker_for(BudgetPolicy(limit_usd=10**6, period="day", refresh=3600), recorder))
        bare_pipeline, budget_pipeline = Pipeline(inner), Pipeline(inner, [layer])
        await budget_pipeline.create(
            Request(Call(attribution, streamed=False, extra_create_args={}), MESSAGES)
        )  # the first read
        fastest = {"bare": float("inf"), "budget": float("inf")}
        for _ in range(rounds * 2):  # interleaved, so that both see the same neighbours
            for name, pipeline in (("bare", bare_pipeline), ("budget", budget_pipeline)):
                fastest[name] = min(fastest[name], await pipeline_per_call(pipeline, attribution, calls))
        for name, seconds in fastest.items():
            results[f"pipeline_{name}_us"] = seconds * 1e6
        results["budget_layer_us"] = results["pipeline_budget_us"] - results["pipeline_bare_us"]

        # Whole calls, recording to the ledger: the writer thread shares the GIL, so these are noisier.
        plain = ReliableChatCompletionClient(inner, recorder=recorder, project="bench", retry=None, circuit=None)
        budget = BudgetPolicy(limit_usd=10**6, period="day", refresh=3600)
        budgeted = ReliableChatCompletionClient(
            inner, recorder=recorder, project="bench", retry=None, circuit=None, budget=budget
        )
        async with usage_scope(session="s-1"):
            await budgeted.create([])  # the first check reads the ledger
            wrapped = {"without": float("inf"), "with": float("inf")}
            for _ in range(rounds * 2):  # interleaved, as above
                for name, client in (("without", plain), ("with", budgeted)):
                    seconds = await per_call_seconds(client, stream=False, calls=size["wrapped_calls"], rounds=1)
                    wrapped[name] = min(wrapped[name], seconds)
        results["call_without_budget_us"] = wrapped["without"] * 1e6
        results["call_with_budget_us"] = wrapped["with"] * 1e6
        assert recorder.flush(120)

        # A ledger of its own, so that no unwritten event of the above is asked about: the read alone.
        filled = UsageStore(f"sqlite:///{directory}/filled.db")
        fill(filled, size["rows"])
        reader = UsageRecorder(filled, spool_dir=f"{directory}/spool", close_sink=False)
        results["ledger_rows"] = size["rows"]
        for scope in ("project", "session"):
            best, median = ledger_read_ms(reader, scope, size["reads"])
            results[f"ledger_read_{scope}_ms"] = {"best": best, "median": median}
        reader.close()
        filled.close()
        # Last: these events never reach the ledger, and a new tracker of the same ledger would count them too.
        counting = tracker_for(BudgetPolicy(limit_usd=1000, period=None, refresh=3600), recorder)
        now = datetime.now(UTC)
        events = [
            UsageEvent(call_id=uuid.uuid4(), attempt=1, started_at=now, latency_ms=1.0, cost_nanousd=5)
            for _ in range(size["calls"])
        ]
        start = time.perf_counter()
        for one in events:
            counting.observe(one)
        results["event_counted_us"] = (time.perf_counter() - start) / len(events) * 1e6

        recorder.close()
        store.close()

    print(f"budget check ({size['calls']} calls x {size['rounds']} rounds, best round):")
    print(f"  check, figure cached           {results['check_cached_us']:8.2f} us")
    print(f"  check, figure stale (re-read)  {results['check_stale_us']:8.2f} us")
    print(f"  a recorded event counted       {results['event_counted_us']:8.2f} us")
    print(
        f"  the budget layer               {results['budget_layer_us']:8.2f} us "
        f"(a pipeline call {results['pipeline_budget_us']:.2f} us, without it {results['pipeline_bare_us']:.2f} us)"
    )
    print(
        f"  a wrapped call, recorded       {results['call_with_budget_us']:8.2f} us with a budget, "
        f"{results['call_without_budget_us']:.2f} us without"
    )
    print(f"ledger read of one key's spend, SQLite, {size['rows']:,} rows (a first check waits for it, off the loop):")
    for scope in ("project", "session"):
        read = results[f"ledger_read_{scope}_ms"]
        print(f"  per {scope:<8} best {read['best']:7.2f} ms, median {read['median']:7.2f} ms")
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    import sys

    asyncio.run(main(sys.argv[1:]))
