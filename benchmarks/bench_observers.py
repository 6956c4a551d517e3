"""What the observers of every wrapped client cost a call: off, Prometheus metrics on, OpenTelemetry spans on.

The inner client answers at once from memory (``bench_wrapper_overhead.InstantClient``),
so the differences are the observers' own work on the call path:

- **off**: nobody subscribed to the feeds; a call pays one truth test of an
  empty tuple per call and per attempt (``_pipeline``), which is the baseline
  every other column is compared with;
- **metrics**: ``enable_metrics()``: the collector counts each attempt, each
  call and, with usage rows, each row's tokens and cost (one lock per event);
- **otel**: ``enable_tracing()`` with the OpenTelemetry SDK's ``TracerProvider``
  and a ``SimpleSpanProcessor`` whose exporter discards the spans: two spans per
  call are made, filled and ended on the call path (a ``BatchSpanProcessor``
  would export them on its own thread; making them is the same);
- **both**.

Two wrappers: no policies and no usage rows (the smallest call, so the
observers' share is largest), and the defaults with usage rows recorded to a
SQLite ledger (a realistic call; its writer thread's CPU is in every column
alike). Times are CPU time of this process (``time.process_time``) per call,
the best of the rounds; the modes take turns round by round, so a neighbour's
load falls on all of them. Compare within one run.

Run: ``python -m benchmarks observers`` (``--quick`` for a smoke run,
``--json PATH`` to also write the numbers, ``--modes off`` to time only what
an older checkout has).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autogen_core.models import ChatCompletionClient

from autogen_reliability import ReliableChatCompletionClient
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.storage import UsageStore
from benchmarks.bench_wrapper_overhead import InstantClient, per_call_seconds

MODES = ("off", "metrics", "otel", "both")
FULL = {"calls": 5_000, "rounds": 7}
QUICK = {"calls": 300, "rounds": 2}


def switch(mode: str) -> Callable[[], None]:
    """Turns ``mode``'s observers on; returns what turns them off again."""
    offs: list[Callable[[], None]] = []
    if mode in ("metrics", "both"):
        from autogen_reliability.metrics import disable_metrics, enable_metrics  # noqa: PLC0415

        enable_metrics()
        offs.append(disable_metrics)
    if mode in ("otel", "both"):
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult  # noqa: PLC0415

        from autogen_reliability.otel import disable_tracing, enable_tracing  # noqa: PLC0415

        class Discard(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Discard()))
        enable_tracing(provider)
        offs.append(disable_tracing)

    def turn_off() -> None:
        for off in offs:
            off()

    return turn_off


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks observers")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="the columns to time")
    options = parser.parse_args(argv)
    size = QUICK if options.quick else FULL
    directory = tempfile.mkdtemp(prefix="bench-observers-")
    store = UsageStore(f"sqlite:///{directory}/usage.db")
    recorder = UsageRecorder(store, spool_dir=f"{directory}/spool")
    inner = InstantClient()
    bare: dict[str, Any] = {"retry": None, "circuit": None, "sanitize": None, "track_usage": False}
    wrappers: dict[str, ChatCompletionClient] = {
        "no policies, no usage": ReliableChatCompletionClient(inner, project="bench", agent="a", **bare),
        "defaults + usage rows": ReliableChatCompletionClient(inner, project="bench", agent="a", recorder=recorder),
    }
    results: dict[str, Any] = {"calls": size["calls"], "rounds": size["rounds"]}
    try:
        for stream in (False, True):
            kind = "create_stream" if stream else "create"
            results[kind] = {}
            for name, client in wrappers.items():
                best = dict.fromkeys(options.modes, float("inf"))
                for _ in range(size["rounds"]):
                    for mode in options.modes:
                        off = switch(mode)
                        try:
                            seconds = await per_call_seconds(
                                client, stream=stream, calls=size["calls"], rounds=1, clock=time.process_time
                            )
                        finally:
                            off()
                        best[mode] = min(best[mode], seconds)
                    recorder.flush(60)  # each round starts with the writer idle
                results[kind][name] = {mode: seconds * 1e6 for mode, seconds in best.items()}
    finally:
        recorder.close()
        store.close()
        shutil.rmtree(directory)
    print(f"{size['calls']} calls x {size['rounds']} rounds, best round, us of CPU per call (the extra over off):")
    header = "".join(f"{mode:>18}" for mode in options.modes)
    for kind in ("create", "create_stream"):
        print(f"  {kind:<24}{header}")
        for name, times in results[kind].items():
            cells = []
            for mode in options.modes:
                extra = times[mode] - times["off"] if "off" in times and mode != "off" else None
                cells.append(f"{times[mode]:8.2f}" + (f" ({extra:+6.2f})" if extra is not None else " " * 9))
            print(f"    {name:<22}" + "".join(f"{cell:>18}" for cell in cells))
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    import sys

    asyncio.run(main(sys.argv[1:]))
