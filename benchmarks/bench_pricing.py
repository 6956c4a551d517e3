"""What pricing one provider attempt costs: ``PricingTable.price()`` against genai-prices' ``calc_price()``.

Two views:

* **Per call** (precise): ``price()`` in a loop, for overrides and for
  genai-prices' data, warm (the lookup cached) and cold (the first lookup of a
  model in a fresh table); genai-prices' public ``calc_price()`` for comparison.
* **In a whole call** (what a user waits for): AutoGen's
  ``OpenAIChatCompletionClient`` wrapped by ``ReliableChatCompletionClient``,
  the real openai SDK over loopback HTTP to ``FakeOpenAIServer``, a usage row per
  call written to SQLite by the recorder's thread. The same calls are made with
  three price tables, rounds interleaved, best round kept: no genai-prices (the
  model is unpriced: the baseline), ``PricingTable`` (its own calculation of
  genai-prices' prices behind a cache of lookups; see the docstring of
  ``accounting/_price_table.py`` for what was measured and decided), and a
  table that calls genai-prices' public ``calc_price()`` for every attempt. The
  time spent inside ``price()`` is measured within those calls (wall and the
  event loop thread's CPU), and given as a share of the whole call. Loopback to
  an in-process server is the fastest a call can be: against a real provider
  (hundreds of milliseconds) the share is a few hundred times smaller.

Machines here are shared and noisy: read the ratios within one run, not the
absolute numbers across runs.

Run: ``python -m benchmarks.bench_pricing``
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime

from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from genai_prices import Usage, calc_price

from autogen_reliability import ReliableChatCompletionClient
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.accounting._price_table import Cost, PricingTable, TokenUsage
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage
from benchmarks.timing import best_per_call, quick_run, refuse_other_arguments

QUICK = quick_run()
CALLS = 200 if QUICK else 20_000
ROUNDS = 1 if QUICK else 5
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USAGE = TokenUsage(prompt_tokens=1_200, completion_tokens=150, cached_tokens=1_024, latency_seconds=0.8)
OVERRIDES = {"models": {"acme-llm": {"input": "1", "output": "2"}, "local-gpu": {"per_second": "0.0004"}}}

CASES: list[tuple[str, str, str | None]] = [
    ("override, per token", "acme-llm", None),
    ("override, per second", "local-gpu", None),
    ("genai-prices, flat", "gpt-4o-mini", "openai"),
    ("genai-prices, azure fallback", "gpt-4o", "azure"),
    ("genai-prices, tiered", "claude-sonnet-4-5", "anthropic"),
    ("genai-prices, time of day", "deepseek-chat", "deepseek"),
    ("genai-prices, per request", "sonar", "perplexity"),
    ("unknown model (unpriced)", "my-own-model", None),
    ("unknown model at openai", "llama3.1", "openai"),  # a local server spoken to with OpenAI's client
]

WHOLE_CALL_ROUNDS = 1 if QUICK else 7
WHOLE_CALL_REQUESTS = 10 if QUICK else 200
WHOLE_CALL_USAGE = FakeUsage(prompt_tokens=1_200, completion_tokens=150, cached_tokens=1_024)
MESSAGES = [UserMessage(content="Say hello.", source="user")]


def per_call_seconds(call: Callable[[], object], calls: int = CALLS) -> float:
    return best_per_call(call, calls, ROUNDS)


def cold_seconds(model: str, provider: str | None) -> float:
    best = float("inf")
    for _ in range(ROUNDS * 4):
        table = PricingTable(OVERRIDES)
        start = time.perf_counter()
        table.price(model, provider, usage=USAGE, at=AT)
        best = min(best, time.perf_counter() - start)
    return best


def per_call() -> None:
    start = time.perf_counter()
    table = PricingTable(OVERRIDES)
    print(f"PricingTable() with 2 overrides: {(time.perf_counter() - start) * 1e3:.2f} ms")
    print(f"Per call, {CALLS} calls x {ROUNDS} rounds, best round:")
    for label, model, provider in CASES:

        def priced(model: str = model, provider: str | None = provider) -> object:
            return table.price(model, provider, usage=USAGE, at=AT)

        warm = per_call_seconds(priced)
        cold = cold_seconds(model, provider)
        print(f"  {label:<30} {warm * 1e6:7.2f} us   (first call in a new table {cold * 1e6:8.1f} us)")

    genai_usage = Usage(input_tokens=1_200, output_tokens=150, cache_read_tokens=1_024)
    for model, provider in (("gpt-4o-mini", "openai"), ("claude-sonnet-4-5", "anthropic"), ("llama3.1", "openai")):

        def direct_call(model: str = model, provider: str = provider) -> object:
            try:
                return calc_price(genai_usage, model, provider_id=provider, genai_request_timestamp=AT)
            except LookupError:
                return None

        direct = per_call_seconds(direct_call, calls=CALLS // 4)
        print(f"  {'calc_price() ' + model:<30} {direct * 1e6:7.2f} us   (genai-prices' public function)")


class _TimedTable(PricingTable):
    """A price table that adds up the time spent inside :meth:`price`, wall and this thread's CPU."""

    def __init__(self, *, use_genai_prices: bool = True) -> None:
        super().__init__(use_genai_prices=use_genai_prices)
        self.calls = 0
        self.wall = 0.0
        self.cpu = 0.0

    def price(
        self,
        model: str,
        provider: str | None = None,
        *,
        usage: TokenUsage,
        at: datetime | None = None,
        service_tier: str | None = None,
    ) -> Cost | None:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return super().price(model, provider, usage=usage, at=at, service_tier=service_tier)
        finally:
            self.cpu += time.thread_time() - cpu
            self.wall += time.perf_counter() - wall
            self.calls += 1


class _CalcPriceTable(_TimedTable):
    """Every attempt priced by genai-prices' public ``calc_price()``, as an integration without a table would."""

    def price(
        self,
        model: str,
        provider: str | None = None,
        *,
        usage: TokenUsage,
        at: datetime | None = None,
        service_tier: str | None = None,
    ) -> Cost | None:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            genai_usage = Usage(
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                cache_read_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                cache_write_1h_tokens=usage.cache_write_1h_tokens,
            )
            try:
                context = {"service_tier": service_tier} if service_tier else None
                calculation = calc_price(
                    genai_usage, model, provider_id=provider, genai_request_timestamp=at, price_context=context
                )
            except LookupError:
                return None
            usd = calculation.total_price
            return Cost(0, usd, "genai-prices", None, calculation.model.id, calculation.provider.id)
        finally:
            self.cpu += time.thread_time() - cpu
            self.wall += time.perf_counter() - wall
            self.calls += 1


async def _round(client: ReliableChatCompletionClient) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(WHOLE_CALL_REQUESTS):
        await client.create(MESSAGES)
    return (time.perf_counter() - wall) / WHOLE_CALL_REQUESTS, (time.thread_time() - cpu) / WHOLE_CALL_REQUESTS


async def whole_call() -> None:
    print(
        f"In a whole call (AutoGen client -> openai SDK -> FakeOpenAIServer, usage rows to SQLite), "
        f"best of {WHOLE_CALL_ROUNDS} interleaved rounds x {WHOLE_CALL_REQUESTS} calls:"
    )
    directory = tempfile.mkdtemp(prefix="bench-pricing-")
    store = UsageStore(f"sqlite:///{directory}/usage.db")
    recorder = UsageRecorder(store, spool_dir=f"{directory}/spool")
    tables = {
        "unpriced (no genai-prices)": _TimedTable(use_genai_prices=False),
        "PricingTable": _TimedTable(),
        "calc_price() per attempt": _CalcPriceTable(),
    }
    reply = FakeReply.text("Hello there, how can I help you today?", usage=WHOLE_CALL_USAGE)
    try:
        with FakeOpenAIServer(default=reply) as server:
            inner = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test", base_url=server.base_url)
            clients = {
                name: ReliableChatCompletionClient(inner, project="bench", recorder=recorder, pricing=table)
                for name, table in tables.items()
            }
            for client in clients.values():  # warm up the connection, the lookups, the code paths
                await _round(client)
            for table in tables.values():
                table.calls, table.wall, table.cpu = 0, 0.0, 0.0
            best = dict.fromkeys(clients, (float("inf"), float("inf")))
            for _ in range(WHOLE_CALL_ROUNDS):
                for name, client in clients.items():
                    wall, cpu = await _round(client)
                    best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
            base_wall, base_cpu = best["unpriced (no genai-prices)"]
            for name, (wall, cpu) in best.items():
                table = tables[name]
                in_price_wall, in_price_cpu = table.wall / table.calls, table.cpu / table.calls
                print(
                    f"  {name:<27} call {wall * 1e3:6.3f} ms ({(wall - base_wall) * 1e6:+6.0f} us), "
                    f"loop CPU {cpu * 1e3:6.3f} ms ({(cpu - base_cpu) * 1e6:+6.0f} us); "
                    f"in price() {in_price_wall * 1e6:6.1f} us = {in_price_wall / wall:5.1%} of the call, "
                    f"CPU {in_price_cpu * 1e6:6.1f} us = {in_price_cpu / cpu:5.1%}"
                )
    finally:
        recorder.close()
        store.close()
        shutil.rmtree(directory)


def main() -> None:
    per_call()
    asyncio.run(whole_call())


if __name__ == "__main__":
    refuse_other_arguments("pricing")
    main()
