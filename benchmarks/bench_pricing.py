"""What pricing one provider attempt costs: ``PricingTable.price()`` against genai-prices' ``calc_price()``.

``price()`` runs once per provider attempt. Lookups of genai-prices' data are
cached per (model, provider); a price set that only needs the four token
prices a ``TokenUsage`` can be charged (almost all of them) is computed
directly, the rest by genai-prices itself. The cold lines include the first
lookup of a model in a fresh table. Machines here are shared and noisy: read
the ratios within one run, not the absolute numbers across runs.

Run: ``python -m benchmarks.bench_pricing``
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from genai_prices import Usage, calc_price

from autogen_reliability.accounting._pricing import PricingTable, TokenUsage
from benchmarks.timing import best_per_call

CALLS = 20_000
ROUNDS = 5
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
    ("genai-prices, per request", "sonar", "perplexity"),  # computed by genai-prices itself
    ("unknown model (unpriced)", "my-own-model", None),
]


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


def main() -> None:
    start = time.perf_counter()
    table = PricingTable(OVERRIDES)
    print(f"PricingTable() with 2 overrides: {(time.perf_counter() - start) * 1e3:.2f} ms")
    print(f"{CALLS} calls x {ROUNDS} rounds, best round, per call:")
    for label, model, provider in CASES:

        def priced(model: str = model, provider: str | None = provider) -> object:
            return table.price(model, provider, usage=USAGE, at=AT)

        warm = per_call_seconds(priced)
        cold = cold_seconds(model, provider)
        print(f"  {label:<30} {warm * 1e6:7.2f} us   (first call in a new table {cold * 1e6:8.1f} us)")

    genai_usage = Usage(input_tokens=1_200, output_tokens=150, cache_read_tokens=1_024)
    for model, provider in (("gpt-4o-mini", "openai"), ("claude-sonnet-4-5", "anthropic")):

        def direct_call(model: str = model, provider: str = provider) -> object:
            return calc_price(genai_usage, model, provider_id=provider, genai_request_timestamp=AT)

        direct = per_call_seconds(direct_call, calls=CALLS // 4)
        print(f"  {'calc_price() ' + model:<30} {direct * 1e6:7.2f} us   (genai-prices directly, for comparison)")


if __name__ == "__main__":
    main()
