"""How much the process grows over 100,000 wrapped calls with usage rows on (goal of issue #14: at most 20 MB).

The inner client is ``ScriptedChatCompletionClient`` (in process: no HTTP, so
the calls are fast and many), answering a short JSON object with a usage of
1,200 prompt tokens (1,024 of them cached) and 20 completion tokens, as
``gpt-4o-mini``. The wrapper has everything on: the default retries, circuit
breaker and sanitising, validation against a pydantic schema, and a usage row
per call, priced and written by the recorder's thread to a SQLite ledger
(journal and table of attempts in flight included). Calls alternate, a thousand
at a time, between ``create`` and ``create_stream``, inside a ``usage_scope``
with a session of its own every thousand calls (sessions are what a service
makes many of).

The resident set size (``VmRSS``) is read after a warm-up (caches filled,
SQLite's page cache and the journal's first segments in use), every tenth of
the run, and at the end once a full collection has run. The growth is the end
minus the warm-up.

Each block waits for the recorder to have written its rows. A scripted answer
takes no time, so the calls come far faster than any provider answers (about
3,000 a second here) and never leave the GIL to the writer thread: unpaced,
the rows waiting in the recorder's queue (up to ``max_queue``, 100,000 by
default, then spilled to the spool) were what grew, about 0.7 KB each, not
the wrapper; and memory once taken by the heap is not all given back to the
system. The most rows left unwritten at the end of a block is printed. The scripted
client keeps every request it was sent (that is its job, in tests): the
benchmark empties that list every thousand calls so that only the wrapper's
memory is measured. The rows are counted at the end: one per call, exact.

``--distinct`` is the long-lived service's case: every call has a session, a
project, an agent and a ``request_id`` tag of its own (a request id put in a
session or a tag), and Prometheus metrics are on (``enable_metrics``), so every
per-process structure keyed by those values (label values, caches, budgets'
and windows' keys) sees a new one per call.

Run: ``python -m benchmarks memory`` (``--calls N``, ``--quick`` for a smoke
run, ``--distinct``, ``--json PATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autogen_core.models import UserMessage
from pydantic import BaseModel
from sqlalchemy import text

from autogen_reliability import ReliableChatCompletionClient, ValidationPolicy, usage_scope
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.metrics import disable_metrics, enable_metrics
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeUsage, ScriptedChatCompletionClient, ScriptedReply

from .timing import at_least_one

GOAL_MB = 20.0
BLOCK = 1_000  # calls of one kind (plain or streamed) in a row, and calls per session
FULL = {"calls": 100_000, "warmup": 5_000}
QUICK = {"calls": 2_000, "warmup": 1_000}
MESSAGES = [UserMessage(content="Summarise ticket 4711 in one sentence.", source="user")]
USAGE = FakeUsage(prompt_tokens=1200, completion_tokens=20, cached_tokens=1024)


class Answer(BaseModel):
    """The schema the answers are validated against."""

    reply: str


def rss_mb() -> float:
    """The resident set size now, in MB (Linux: ``/proc/self/status``; elsewhere the peak, from getrusage)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


async def calls(
    client: ReliableChatCompletionClient,
    inner: ScriptedChatCompletionClient,
    first: int,
    n: int,
    *,
    distinct: bool = False,
) -> int:
    """Calls ``first`` to ``first + n``: blocks of ``BLOCK``, alternating plain and streamed, a session each.

    With ``distinct``, each call has a session, project, agent and ``request_id`` tag of its own.

    Returns the most rows the recorder held unwritten at the end of a block.
    """
    recorder = client.recorder
    assert recorder is not None
    backlog = 0
    for block_start in range(first, first + n, BLOCK):
        streamed = (block_start // BLOCK) % 2 == 1
        async with usage_scope(session=f"session-{block_start // BLOCK}"):
            for number in range(block_start, block_start + min(BLOCK, first + n - block_start)):
                if distinct:
                    async with usage_scope(
                        session=f"session-{number}",
                        project=f"project-{number}",
                        agent=f"agent-{number}",
                        tags={"request_id": f"request-{number}"},
                    ):
                        await one(client, streamed=streamed)
                else:
                    await one(client, streamed=streamed)
                # A scripted answer never suspends; a real client's I/O does, and the loop then runs its
                # housekeeping (such as dropping the cancelled timers of the calls' deadlines).
                await asyncio.sleep(0)
        inner.requests.clear()  # the test double's own record of requests, not the wrapper's memory
        backlog = max(backlog, recorder.pending)
        assert recorder.flush(120), "the recorder did not write a block's rows in two minutes"
    return backlog


async def one(client: ReliableChatCompletionClient, *, streamed: bool) -> None:
    """One call, plain or streamed."""
    if streamed:
        async for _item in client.create_stream(MESSAGES):
            pass
    else:
        await client.create(MESSAGES)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks memory", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=at_least_one, help=f"calls measured (default {FULL['calls']:,})")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (CI)")
    parser.add_argument(
        "--distinct",
        action="store_true",
        help="a session, project, agent and request_id tag of its own per call, with Prometheus metrics on",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    options = parser.parse_args(argv)
    size = dict(QUICK if options.quick else FULL)
    if options.calls is not None:
        size["calls"] = options.calls
    logging.getLogger("autogen_reliability").setLevel(logging.ERROR)
    distinct = options.distinct
    if distinct:
        enable_metrics()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as name:
        directory = Path(name)
        store = UsageStore(f"sqlite:///{directory}/usage.db")
        recorder = UsageRecorder(store, spool_dir=directory / "spool", close_sink=False)
        reply = ScriptedReply.text('{"reply": "Ticket 4711: the invoice was sent twice."}', usage=USAGE)
        inner = ScriptedChatCompletionClient(default=reply)
        client = ReliableChatCompletionClient(
            inner, project="bench", agent="writer", validation=ValidationPolicy(schema=Answer), recorder=recorder
        )
        started = time.perf_counter()
        await calls(client, inner, 0, size["warmup"], distinct=distinct)
        assert recorder.flush(120)
        gc.collect()
        baseline = rss_mb()
        checkpoints: list[tuple[int, float]] = [(0, baseline)]
        step = max(BLOCK, size["calls"] // 10 // BLOCK * BLOCK)
        done = backlog = 0
        while done < size["calls"]:
            n = min(step, size["calls"] - done)
            backlog = max(backlog, await calls(client, inner, size["warmup"] + done, n, distinct=distinct))
            done += n
            checkpoints.append((done, rss_mb()))
        assert recorder.flush(300), "the recorder did not write its rows in five minutes"
        gc.collect()
        final = rss_mb()
        seconds = time.perf_counter() - started
        recorder.close()
        with store.engine.connect() as connection:
            rows, prompt, cached = connection.execute(
                text("SELECT count(*), sum(prompt_tokens), sum(cached_tokens) FROM ar_usage_records")
            ).one()
        store.close()
    if distinct:
        disable_metrics()
    total = size["warmup"] + size["calls"]
    exact = rows == total and prompt == total * USAGE.prompt_tokens and cached == total * 1024
    growth = final - baseline
    labels = "; a session, project, agent and tag per call, metrics on" if distinct else ""
    print(
        f"{size['calls']:,} wrapped calls (after {size['warmup']:,} to warm up; everything on, usage rows to SQLite"
        f"{labels}), "
        f"{seconds:.0f} s, Python {platform.python_version()}, {os.cpu_count()} cores:"
    )
    print(f"  {'calls':>9}  {'RSS MB':>8}  {'growth MB':>9}")
    for count, mb in checkpoints:
        print(f"  {count:>9,}  {mb:8.1f}  {mb - baseline:+9.1f}")
    print(f"  {'end':>9}  {final:8.1f}  {growth:+9.1f}   (rows written, full collection)")
    met = growth <= GOAL_MB
    print(f"  growth {growth:.1f} MB, goal <= {GOAL_MB:.0f} MB: {'met' if met else 'NOT MET'}")
    print(f"  rows: {rows:,} for {total:,} calls, {'exact' if exact else 'NOT EXACT'}; most unwritten: {backlog:,}")
    results = {
        "benchmark": "memory",
        "calls": size["calls"],
        "warmup": size["warmup"],
        "distinct": distinct,
        "python": platform.python_version(),
        "seconds": seconds,
        "baseline_mb": baseline,
        "final_mb": final,
        "growth_mb": growth,
        "goal_mb": GOAL_MB,
        "met": met,
        "checkpoints": checkpoints,
        "rows": rows,
        "rows_exact": exact,
        "most_unwritten_rows": backlog,
    }
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    if not exact:
        raise SystemExit("usage rows were lost or wrong")
    return results


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
