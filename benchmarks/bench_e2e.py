"""End to end over loopback HTTP: the bare AutoGen client, the wrapper feature by feature, the raw SDK and LiteLLM.

Every variant sends the same chat completion through the real openai SDK to a
local OpenAI-wire server and gets the same bytes back: a short JSON answer
(``{"reply": ...}``, so validation has something to check) with a usage object
(prompt, completion and cached tokens), or the same answer as an SSE stream of
a dozen events ending with a usage chunk. Variants:

- **bare**: AutoGen's ``OpenAIChatCompletionClient`` alone: the baseline;
- **retries+circuit**, **validation** (a pydantic schema), **sanitising**,
  **usage rows**: the wrapper with that one feature on and the others off;
- **everything on**: the defaults (retries, circuit breaker, sanitising) plus
  validation and usage rows;
- **raw SDK**: ``openai.AsyncOpenAI`` alone, what AutoGen itself adds to it;
- **LiteLLM**: ``litellm.acompletion`` (its local price map,
  ``LITELLM_LOCAL_MODEL_COST_MAP=True``), the peer a user would otherwise pick;
  skipped with a line when it is not installed (it is not a dependency).

Usage rows go to one ``UsageRecorder`` on a SQLite file, as in a service: its
writer thread stores them while the calls go on. After the run every row is
counted and summed and compared with what was sent (rows exact, none lost).

Rounds are interleaved: each round runs ``--calls`` calls of every variant in
turn (plain, then streamed), starting each round one variant further on, so
that a neighbour's load falls on all alike. Each call is timed alone; the
table shows p50 and p95 over all rounds, what a variant adds to bare, and
the ratio. These machines are shared (2 cores): compare within one run.

The server (``--server``): ``raw`` (default) is ``benchmarks/wire_server.py``,
a process of its own that writes prepared bytes; ``fake`` is
``FakeOpenAIServer`` on a thread of this process, which renders each reply in
Python and shares the GIL with the client (it makes everything slower and
noisier, and the difference between variants less clear).

``--diagnose`` adds variants that take the usage path apart: the wrapper with
everything off, rows with the writer thread held back (no batch is written
until the end; with usage alone and with everything on), without the journal
(and its table of attempts in flight), with the tap detached from the
transport (rows from AutoGen's counts, not checked), and the tap alone on a
bare client. The "loop CPU" column is the
event loop thread's CPU time per call: with a server in another process it is
nearly all of a call's time, and far less noisy than the wall clock on a shared
machine. After the timed rounds, each variant's calls are counted: the
function calls one call makes on the event loop's thread (cProfile's count),
a measure of work that is the same on a busy machine and a quiet one.
``--profile VARIANT`` profiles one variant's timed calls. ``--steps`` times the
accounting layer's steps where they run, inside the calls (each with a clock
around it, so a little slower than untimed), and the same price in a loop of
its own: the difference is what running between the SDK's work costs.

Interleaving spreads the writer thread's batches over every variant, the bare
client included, so to see what the writer costs run the held variants alone
(``--only "everything on, held"``) and compare with ``--only "everything on"``.

Run: ``python -m benchmarks e2e`` (``--quick`` for a smoke run, ``--json PATH``,
``--rounds``/``--calls``, ``--server fake``, ``--no-litellm``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import openai
from autogen_core.models import SystemMessage, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel
from sqlalchemy import text

from autogen_reliability import (
    CircuitBreakerPolicy,
    ReliableChatCompletionClient,
    RetryPolicy,
    SanitizePolicy,
    ValidationPolicy,
)
from autogen_reliability.accounting import PricingTable, TokenUsage, UsageRecorder
from autogen_reliability.accounting._layer import AccountingLayer, _InFlight
from autogen_reliability.providers import attach_usage_tap, capture_provider_usage
from autogen_reliability.providers._usage_tap import UsageTapTransport
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

from . import wire_server
from .timing import at_least_one, more_than_zero

MODEL = "gpt-4o-mini"
ANSWER = '{"reply": "Hello there, how can I help you today?"}'
CACHED_TOKENS = 1024
USAGE = FakeUsage(prompt_tokens=1200, completion_tokens=20, cached_tokens=CACHED_TOKENS)
SYSTEM = "You are a helpful assistant."
QUESTION = "Say hello."
MESSAGES = [SystemMessage(content=SYSTEM), UserMessage(content=QUESTION, source="user")]
SDK_MESSAGES: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
STREAM_OPTIONS: Any = {"include_usage": True}
MODES = ("plain", "stream")

FULL = {"rounds": 50, "calls": 40, "warmup": 40}
QUICK = {"rounds": 2, "calls": 5, "warmup": 3}


class Answer(BaseModel):
    """The schema of the answer: every variant asks for it, the validation variants check it."""

    reply: str


VALIDATION = ValidationPolicy(schema=Answer)
# Every variant sends the same request: the JSON-schema response_format the validation stage would add
# (exactly what the openai SDK sends for ``response_format=Answer``). Given by the caller, the wrapper
# leaves it as it is and checks the answer against it.
RESPONSE_FORMAT: Any = VALIDATION.compiled_schema.response_format()  # type: ignore[union-attr]


Call = Callable[[], Awaitable[object]]


@dataclass
class Variant:
    """One way of making the call: plain and streamed, and where its rows go (if it records)."""

    name: str
    plain: Call
    stream: Call
    project: str | None = None  # rows recorded under this project: counted and checked at the end
    recorder: UsageRecorder | None = None
    profiled: bool = False
    calls: int = 0
    samples: dict[str, list[int]] = field(default_factory=lambda: {mode: [] for mode in MODES})
    cpu_ns: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))  # the event loop thread's


def autogen_calls(client: Any) -> tuple[Call, Call]:
    """Plain and streamed calls through an AutoGen client (bare or wrapped), the same arguments for both."""
    plain_args = {"response_format": RESPONSE_FORMAT}
    stream_args = {"response_format": RESPONSE_FORMAT, "stream_options": STREAM_OPTIONS}

    async def plain() -> object:
        return await client.create(MESSAGES, extra_create_args=plain_args)

    async def stream() -> object:
        last = None
        async for item in client.create_stream(MESSAGES, extra_create_args=stream_args):
            last = item
        return last

    return plain, stream


def sdk_calls(sdk: openai.AsyncOpenAI) -> tuple[Call, Call]:
    async def plain() -> object:
        return await sdk.chat.completions.create(model=MODEL, messages=SDK_MESSAGES, response_format=RESPONSE_FORMAT)

    async def stream() -> object:
        chunks = await sdk.chat.completions.create(
            model=MODEL,
            messages=SDK_MESSAGES,
            stream=True,
            stream_options=STREAM_OPTIONS,
            response_format=RESPONSE_FORMAT,
        )
        last = None
        async for chunk in chunks:
            last = chunk
        return last

    return plain, stream


def litellm_calls(base_url: str) -> tuple[Call, Call] | str:
    """LiteLLM's ``acompletion`` against the server, or why it cannot run here."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # its bundled price map: no download at import
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    try:
        import litellm  # noqa: PLC0415  (optional, and slow to import)
    except Exception as error:  # not installed, or broken: the rest of the run still counts
        return f"{type(error).__name__}: {error}".splitlines()[0]
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    options = {
        "model": f"openai/{MODEL}",
        "api_base": base_url,
        "api_key": "sk-test",
        "max_retries": 0,
        "response_format": RESPONSE_FORMAT,
    }

    async def plain() -> object:
        return await litellm.acompletion(messages=SDK_MESSAGES, **options)

    async def stream() -> object:
        response = await litellm.acompletion(
            messages=SDK_MESSAGES, stream=True, stream_options=STREAM_OPTIONS, **options
        )
        last = None
        async for chunk in response:
            last = chunk
        return last

    return plain, stream


def reference_bodies() -> tuple[bytes, bytes]:
    """The two responses, as FakeOpenAIServer renders them (so both servers send the same bodies)."""
    with FakeOpenAIServer(MODEL) as server:
        server.default = FakeReply.text(ANSWER, usage=USAGE)
        payload: dict[str, Any] = {"model": MODEL, "messages": SDK_MESSAGES, "response_format": RESPONSE_FORMAT}
        with httpx2.Client() as http:
            plain = http.post(f"{server.base_url}/chat/completions", json=payload)
            streamed = http.post(
                f"{server.base_url}/chat/completions",
                json={**payload, "stream": True, "stream_options": STREAM_OPTIONS},
            )
    events = [event + b"\n\n" for event in streamed.content.split(b"\n\n") if event]
    return (
        wire_server.http_response(plain.content, content_type="application/json"),
        wire_server.http_response(b"", content_type="text/event-stream; charset=utf-8", events=events),
    )


STEPS: tuple[tuple[str, type, str], ...] = (
    ("attempt start: provisional row, journal hold", _InFlight, "started"),
    ("attempt end: event, price, row, journal update", _InFlight, "finished"),
    ("  of which the event, price included", AccountingLayer, "_event"),
    ("  of which the price", PricingTable, "price"),
    ("call end: record, journal append, release", AccountingLayer, "_ended"),
)
"""``--steps``: (label, class, method) of each step timed in place."""


@contextmanager
def timed_steps() -> Iterator[dict[str, list[float]]]:
    """Puts a clock around each of :data:`STEPS` while inside; yields label -> [seconds, calls].

    Calls made under a profiler (the function counts) are left out.
    """
    found: dict[str, list[float]] = {}
    originals: list[tuple[type, str, Any]] = []
    for label, owner, method in STEPS:
        original = owner.__dict__[method]
        originals.append((owner, method, original))
        found[label] = [0.0, 0]

        def timed(*args: Any, _original: Any = original, _cell: list[float] = found[label], **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                if sys.getprofile() is None:
                    _cell[0] += time.perf_counter() - start
                    _cell[1] += 1

        setattr(owner, method, timed)
    try:
        yield found
    finally:
        for owner, method, original in originals:
            setattr(owner, method, original)


def price_in_a_loop(calls: int) -> float:
    """Seconds of one ``PricingTable.price`` of this benchmark's usage, in a loop that does nothing else."""
    table = PricingTable()
    usage = TokenUsage(prompt_tokens=1200, completion_tokens=20, cached_tokens=CACHED_TOKENS, latency_seconds=0.001)
    table.price(MODEL, "openai", usage=usage, at=datetime.now(UTC))
    start = time.perf_counter()
    for _ in range(calls):
        table.price(MODEL, "openai", usage=usage, at=datetime.now(UTC))
    return (time.perf_counter() - start) / calls


@contextmanager
def serve(kind: str) -> Iterator[str]:
    if kind == "raw":
        with wire_server.start(*reference_bodies()) as url:
            yield url
    else:
        with FakeOpenAIServer(MODEL) as server:
            server.default = FakeReply.text(ANSWER, usage=USAGE)
            yield server.base_url


@asynccontextmanager
async def variants(base_url: str, directory: Path, *, diagnose: bool, litellm: bool) -> AsyncIterator[list[Variant]]:
    """Every variant, each with an SDK client (and connection) of its own; closed at the end."""
    async with AsyncExitStack() as stack:
        store = UsageStore(f"sqlite:///{directory}/usage.db")
        stack.callback(store.close)

        def recorder(name: str, **options: Any) -> UsageRecorder:
            made = UsageRecorder(store, spool_dir=directory / f"spool-{name}", close_sink=False, **options)
            stack.callback(made.close)
            return made

        def inner() -> OpenAIChatCompletionClient:
            client = OpenAIChatCompletionClient(model=MODEL, api_key="sk-test", base_url=base_url, max_retries=0)
            stack.push_async_callback(client.close)
            return client

        shared = recorder("shared")  # one recorder for the process, as configure() makes
        off: dict[str, Any] = {"retry": None, "circuit": None, "sanitize": None, "track_usage": False}
        usage: dict[str, Any] = {**off, "track_usage": True, "recorder": shared}
        made = [Variant("bare", *autogen_calls(inner()))]

        def wrapped(name: str, client: OpenAIChatCompletionClient | None = None, **options: Any) -> Variant:
            project = f"bench-{len(made)}" if options.get("track_usage", True) else None
            wrapper = ReliableChatCompletionClient(client or inner(), project=project, agent="bench", **options)
            return Variant(name, *autogen_calls(wrapper), project=project, recorder=wrapper.recorder)

        for name, options in (
            ("retries+circuit", {**off, "retry": RetryPolicy(), "circuit": CircuitBreakerPolicy()}),
            ("validation", {**off, "validation": VALIDATION}),
            ("sanitising", {**off, "sanitize": SanitizePolicy()}),
            ("usage rows", usage),
            ("everything on", {"validation": VALIDATION, "recorder": shared}),
        ):
            made.append(wrapped(name, **options))
        if diagnose:
            made.append(wrapped("wrapper, all off", **off))
            # The writer thread held back: rows queue up (and go to the journal) but none is written until the end.
            held = recorder("held", batch_size=10_000_000, max_queue=10_000_000, flush_interval=3600)
            made.append(wrapped("usage, writer held", **{**usage, "recorder": held}))
            made.append(wrapped("everything on, held", validation=VALIDATION, recorder=held))
            made.append(wrapped("usage, no journal", **{**usage, "recorder": recorder("unjournaled", journal=False)}))
            untapped = inner()
            made.append(wrapped("usage, tap detached", untapped, **usage))
            detach_usage_tap(untapped)  # rows still made, from AutoGen's token counts, without the cached tokens
            made[-1].project = None  # those rows lack the cached tokens: not counted as exact
            tapped = inner()
            attach_usage_tap(tapped)
            made.append(Variant("bare + tap, captured", *captured(autogen_calls(tapped))))
        sdk = openai.AsyncOpenAI(api_key="sk-test", base_url=base_url, max_retries=0)
        stack.push_async_callback(sdk.close)
        made.append(Variant("raw SDK", *sdk_calls(sdk)))
        if litellm:
            found = litellm_calls(base_url)
            if isinstance(found, str):
                print(f"LiteLLM: skipped, it does not import ({found}); `pip install litellm` to include it")
            else:
                made.append(Variant("LiteLLM acompletion", *found))
        yield made  # then every recorder is closed: it writes what it holds (check_rows counts it)


def detach_usage_tap(client: OpenAIChatCompletionClient) -> None:
    """Put back the transport the tap wraps: requests go out as if the tap had never been attached."""
    http = client._client._client  # the SDK's HTTP client
    if isinstance(http._transport, UsageTapTransport):
        http._transport = http._transport.wrapped


def captured(calls: tuple[Call, Call]) -> tuple[Call, Call]:
    """The calls, each inside ``capture_provider_usage()`` (the tap reads the response), without the wrapper."""
    plain, stream = calls

    async def plain_captured() -> object:
        with capture_provider_usage():
            return await plain()

    async def stream_captured() -> object:
        with capture_provider_usage():
            return await stream()

    return plain_captured, stream_captured


async def run(
    made: list[Variant], *, rounds: int, calls: int, warmup: int, profile: cProfile.Profile | None = None
) -> None:
    """Warm every variant up, then time ``rounds`` interleaved rounds of ``calls`` calls of each, per mode.

    With ``profile``, the calls of the first variant named ``profiled`` are profiled (the event loop's thread).
    """
    for variant in made:
        for mode in MODES:
            call = variant.plain if mode == "plain" else variant.stream
            for _ in range(warmup):
                await call()
                variant.calls += 1
    clock = time.perf_counter_ns
    for number in range(rounds):
        # Each round starts one variant further on: none always runs just after the same neighbour.
        turn = made[number % len(made) :] + made[: number % len(made)]
        for mode in MODES:
            for variant in turn:
                call = variant.plain if mode == "plain" else variant.stream
                samples = variant.samples[mode]
                profiled = profile is not None and variant.profiled
                if profiled:
                    profile.enable()  # type: ignore[union-attr]
                cpu = time.thread_time_ns()
                for _ in range(calls):
                    start = clock()
                    await call()
                    samples.append(clock() - start)
                variant.cpu_ns[mode] += time.thread_time_ns() - cpu
                if profiled:
                    profile.disable()  # type: ignore[union-attr]
                variant.calls += calls


async def count_function_calls(made: list[Variant], calls: int) -> dict[str, dict[str, float]]:
    """Function calls per call (Python functions, and C functions called from Python), as cProfile counts them.

    A count of work, not a time: the same on a busy machine as on a quiet one, and the same from run to run.
    Only the event loop's thread is counted (not the recorder's writer thread).
    """
    counts: dict[str, dict[str, float]] = {mode: {} for mode in MODES}
    for variant in made:
        for mode in MODES:
            call = variant.plain if mode == "plain" else variant.stream
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(calls):
                await call()
            profile.disable()
            variant.calls += calls
            counts[mode][variant.name] = pstats.Stats(profile).total_calls / calls  # type: ignore[attr-defined]
    return counts


def writer_cpu_ns(made: list[Variant]) -> dict[int, int]:
    """CPU time so far of each recorder's writer thread, by the recorder's id."""
    return {
        id(recorder): time.clock_gettime_ns(time.pthread_getcpuclockid(recorder._thread.ident or 0))
        for recorder in {id(v.recorder): v.recorder for v in made if v.recorder is not None}.values()
    }


def percentile(samples: list[int], share: float) -> float:
    """The ``share`` quantile in microseconds (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] / 1000


def summarise(made: list[Variant]) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    for mode in MODES:
        bare = made[0].samples[mode]
        bare_p50, bare_p95 = percentile(bare, 0.5), percentile(bare, 0.95)
        table[mode] = {}
        for variant in made:
            samples = variant.samples[mode]
            p50, p95 = percentile(samples, 0.5), percentile(samples, 0.95)
            table[mode][variant.name] = {
                "p50_us": p50,
                "p95_us": p95,
                "p99_us": percentile(samples, 0.99),
                "mean_us": statistics.fmean(samples) / 1000,
                "added_p50_us": p50 - bare_p50,
                "added_p95_us": p95 - bare_p95,
                "ratio_p50": p50 / bare_p50,
                "ratio_p95": p95 / bare_p95,
                "loop_cpu_us": variant.cpu_ns[mode] / len(samples) / 1000,
                "samples": len(samples),
            }
    return table


def check_rows(store_url: str, made: list[Variant]) -> dict[str, Any]:
    """Every call of a recording variant is one row, with exactly the tokens sent and one price: none lost."""
    expected = {variant.project: variant for variant in made if variant.project is not None}
    store = UsageStore(store_url)
    try:
        with store.engine.connect() as connection:
            found = connection.execute(
                text(
                    "SELECT project, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), "
                    "count(DISTINCT cost_nanousd), count(cost_nanousd), min(cost_nanousd), "
                    "sum(CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END) FROM ar_usage_records GROUP BY project"
                )
            ).all()
    finally:
        store.close()
    checks: dict[str, Any] = {}
    by_project = {row[0]: row[1:] for row in found}
    for project, variant in expected.items():
        rows, prompt, completion, cached, prices, priced, cost, ok = by_project.get(project, (0,) * 8)
        n = variant.calls
        exact = (
            rows == n
            and ok == n
            and prompt == n * USAGE.prompt_tokens
            and completion == n * USAGE.completion_tokens
            and cached == n * CACHED_TOKENS
            and prices == 1
            and priced == n
        )
        checks[variant.name] = {"calls": n, "rows": rows, "exact": exact, "cost_nanousd_per_call": cost}
    return checks


def print_table(table: dict[str, dict[str, dict[str, float]]], made: list[Variant]) -> None:
    print(
        f"  {'':<7}{'variant':<22}{'p50 us':>9}{'p95 us':>9}{'+p50 us':>9}{'+p95 us':>9}{'x p50':>8}{'x p95':>8}"
        f"{'loop CPU':>10}{'+CPU':>7}"
    )
    for mode in MODES:
        bare_cpu = table[mode][made[0].name]["loop_cpu_us"]
        for number, variant in enumerate(made):
            row = table[mode][variant.name]
            print(
                f"  {mode if number == 0 else '':<7}{variant.name:<22}{row['p50_us']:9.0f}{row['p95_us']:9.0f}"
                f"{row['added_p50_us']:+9.0f}{row['added_p95_us']:+9.0f}{row['ratio_p50']:8.3f}{row['ratio_p95']:8.3f}"
                f"{row['loop_cpu_us']:10.0f}{row['loop_cpu_us'] - bare_cpu:+7.0f}"
            )
        sdk, peer = table[mode].get("raw SDK"), table[mode].get("LiteLLM acompletion")
        if sdk is not None and peer is not None:
            print(
                f"  {'':<7}LiteLLM vs raw SDK: +{peer['p50_us'] - sdk['p50_us']:.0f} us at p50 "
                f"(x {peer['p50_us'] / sdk['p50_us']:.2f}), +{peer['p95_us'] - sdk['p95_us']:.0f} us at p95 "
                f"(x {peer['p95_us'] / sdk['p95_us']:.2f})"
            )


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (CI)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--server", choices=("raw", "fake"), default="raw", help="the server (see above)")
    parser.add_argument("--rounds", type=at_least_one, help="interleaved rounds (default 50; 2 with --quick)")
    parser.add_argument("--calls", type=at_least_one, help="calls of each variant per round (default 40)")
    parser.add_argument("--diagnose", action="store_true", help="add the variants that take usage apart")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument(
        "--profile", metavar="VARIANT", help="profile that variant's calls (cProfile, the event loop's thread)"
    )
    parser.add_argument("--profile-dump", type=Path, help="with --profile: also write the pstats file here")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="run these variants alone (bare always runs)")
    parser.add_argument("--steps", action="store_true", help="time the accounting layer's steps inside the calls")
    parser.add_argument(
        "--switch-interval",
        type=more_than_zero,
        metavar="SECONDS",
        help="sys.setswitchinterval (default 0.005): GIL hand-offs",
    )
    options = parser.parse_args(argv)
    size = dict(QUICK if options.quick else FULL)
    if options.rounds is not None:
        size["rounds"] = options.rounds
    if options.calls is not None:
        size["calls"] = options.calls
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as name, serve(options.server) as base_url:
        directory = Path(name)
        async with variants(base_url, directory, diagnose=options.diagnose, litellm=not options.no_litellm) as made:
            if options.only:
                unknown = set(options.only) - {variant.name for variant in made}
                if unknown:
                    raise SystemExit(f"no variant {sorted(unknown)}; known: {', '.join(v.name for v in made)}")
                made[:] = [variant for variant in made if variant.name == "bare" or variant.name in options.only]
            if options.switch_interval is not None:
                sys.setswitchinterval(options.switch_interval)
            profile = None
            if options.profile is not None:
                chosen = [variant for variant in made if variant.name == options.profile]
                if not chosen:
                    raise SystemExit(f"no variant {options.profile!r}; known: {', '.join(v.name for v in made)}")
                chosen[0].profiled, profile = True, cProfile.Profile()
            gc.collect()
            with timed_steps() if options.steps else nullcontext() as steps:
                started, writer_before = time.perf_counter(), writer_cpu_ns(made)
                await run(made, **size, profile=profile)
                seconds, writer_after = time.perf_counter() - started, writer_cpu_ns(made)
            # The writer's CPU per row it stored during the run (a recorder shared by variants: their rows together).
            writer: dict[str, float] = {}
            for variant in made:
                if variant.recorder is not None:
                    sharing = [v.calls for v in made if v.recorder is variant.recorder]
                    spent = writer_after[id(variant.recorder)] - writer_before[id(variant.recorder)]
                    writer[variant.name] = spent / 1000 / max(1, sum(sharing))
            function_calls = await count_function_calls(made, 5 if options.quick else 50)
        rows = check_rows(f"sqlite:///{directory}/usage.db", made)
    table = summarise(made)
    if options.switch_interval is not None:
        print(f"sys.setswitchinterval({options.switch_interval:g})")
    print(
        f"{options.server} server, {size['rounds']} interleaved rounds x {size['calls']} calls per variant and mode "
        f"({seconds:.0f} s; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}):"
    )
    print_table(table, made)
    if profile is not None:
        print(
            f"Profile of {options.profile!r} (the event loop's thread; cProfile makes each call several times slower):"
        )
        stats = pstats.Stats(profile, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(30)
        print("The library's own functions in that profile, by their own time:")
        stats.sort_stats("tottime").print_stats("autogen_reliability", 40)
        if options.profile_dump is not None:
            stats.dump_stats(options.profile_dump)
    print("Function calls per call on the event loop's thread (cProfile's count: work, not time; no noise):")
    print(f"  {'variant':<22}{'plain':>9}{'+':>7}{'x':>7}{'stream':>10}{'+':>7}{'x':>7}")
    for variant in made:
        cells = []
        for mode in MODES:
            count, bare_count = function_calls[mode][variant.name], function_calls[mode][made[0].name]
            width = 9 if mode == "plain" else 10
            cells.append(f"{count:>{width},.0f}{count - bare_count:+7,.0f}{count / bare_count:7.3f}")
        print(f"  {variant.name:<22}" + "".join(cells))
    steps_us: dict[str, float] = {}
    if steps is not None:
        print("The accounting layer's steps, timed where they run (mean per step, every variant with rows):")
        for label, (step_seconds, step_calls) in steps.items():
            steps_us[label] = step_seconds / max(1, step_calls) * 1e6
            print(f"  {label:<50} {steps_us[label]:7.1f} us  ({step_calls:.0f} calls)")
        alone = price_in_a_loop(200 if options.quick else 20_000)
        print(f"  {'the same price, in a loop of its own':<50} {alone * 1e6:7.1f} us")
    for variant_name, cpu in writer.items():
        print(
            f"  writer thread of {variant_name!r}: {cpu:.1f} us of CPU per row (a recorder shared by variants: overall)"
        )
    for variant_name, check in rows.items():
        verdict = "exact" if check["exact"] else "NOT EXACT"
        print(f"  rows of {variant_name!r}: {check['rows']} for {check['calls']} calls, {verdict}")
    results = {
        "benchmark": "e2e",
        "server": options.server,
        "size": size,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "seconds": seconds,
        "table": table,
        "rows": rows,
        "writer_cpu_us_per_row": writer,
        "function_calls_per_call": function_calls,
        "switch_interval_s": sys.getswitchinterval(),
    }
    if steps_us:
        results["steps_us"] = steps_us
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    if not all(check["exact"] for check in rows.values()):
        raise SystemExit("usage rows were lost or wrong")
    return results


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
