"""PricingTable: exact costs from overrides, then genai-prices' offline data."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import textwrap
import threading
import traceback
import warnings
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from autogen_core.models import ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices import types as genai_types

import autogen_reliability.accounting._genai_pricing as genai_module
import autogen_reliability.accounting._price_overrides as overrides_module
from autogen_reliability._errors import ConfigurationError
from autogen_reliability.accounting._genai_pricing import GENAI_PRICES_VERSION
from autogen_reliability.accounting._price_table import Cost, PricingTable, TokenUsage
from autogen_reliability.providers import infer_provider

from .conftest import run_python

AT = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)
SOURCE = f"genai-prices {GENAI_PRICES_VERSION}"
MODEL_INFO = ModelInfo(vision=False, function_calling=True, json_output=True, family="unknown", structured_output=True)


def genai_total(model: str, provider: str | None, usage: TokenUsage, at: datetime = AT) -> Decimal:
    """What genai-prices' public API says, for the parity checks."""
    return calc_price(
        Usage(
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            cache_read_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
        ),
        model_ref=model,
        provider_id=provider,
        genai_request_timestamp=at,
    ).total_price


def nano(usd: Decimal) -> int:
    with localcontext() as context:
        context.prec = 60
        return int((usd * 1_000_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))


def price(table: PricingTable, model: str, provider: str | None = None, at: datetime = AT, **usage: Any) -> Cost | None:
    return table.price(model, provider, usage=TokenUsage(**usage), at=at)


# --------------------------------------------------------------------------------------------------
# genai-prices parity
# --------------------------------------------------------------------------------------------------

PARITY_USAGES = [
    TokenUsage(prompt_tokens=1000, completion_tokens=200),
    TokenUsage(prompt_tokens=12_345, completion_tokens=678, cached_tokens=10_240),
    TokenUsage(prompt_tokens=50_000, completion_tokens=1_500, cached_tokens=20_000, cache_write_tokens=25_000),
    TokenUsage(prompt_tokens=0, completion_tokens=0),
    TokenUsage(prompt_tokens=7, completion_tokens=3),  # fractions of a nano-USD
    # Anthropic's prompt caching with writes of both lifetimes: 10,000 of the 25,000 written for 5 minutes.
    TokenUsage(
        prompt_tokens=50_000,
        completion_tokens=1_500,
        cached_tokens=20_000,
        cache_write_tokens=25_000,
        cache_write_1h_tokens=15_000,
    ),
]


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini", "openai"),
        ("gpt-4o-mini", None),
        ("gpt-4o", "openai"),
        ("gpt-4o", "azure"),
        ("o3-mini", None),
        ("claude-3-5-sonnet-20241022", "anthropic"),
        ("claude-3-5-sonnet-20241022", None),
        ("claude-sonnet-4-20250514", "anthropic"),
        ("claude-sonnet-4-5", "anthropic"),  # tiered: above 200k prompt tokens
        ("gemini-2.5-pro", "google"),  # tiered
        ("deepseek-chat", "deepseek"),  # time-of-day prices
    ],
)
@pytest.mark.parametrize(
    "usage",
    PARITY_USAGES,
    ids=lambda usage: f"p{usage.prompt_tokens}-c{usage.cached_tokens}-w1h{usage.cache_write_1h_tokens}",
)
def test_price_equals_genai_prices_total(model: str, provider: str | None, usage: TokenUsage) -> None:
    cost = PricingTable().price(model, provider, usage=usage, at=AT)

    assert cost is not None
    assert cost.usd == genai_total(model, provider, usage)
    assert cost.nanousd == nano(cost.usd)
    assert cost.source == SOURCE
    assert cost.source == f"genai-prices {genai_prices.__version__}"


@pytest.mark.parametrize("prompt_tokens", [199_999, 200_000, 200_001, 1_000_000])
def test_tiered_prices_switch_at_the_threshold_like_genai_prices(prompt_tokens: int) -> None:
    usage = TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=1000, cached_tokens=100_000)
    for model in ("claude-sonnet-4-5", "gemini-2.5-pro"):
        cost = PricingTable().price(model, usage=usage, at=AT)
        assert cost is not None
        assert cost.usd == genai_total(model, None, usage)


@pytest.mark.parametrize("hour", [0, 1, 12, 16, 17, 23])
def test_time_of_day_prices_follow_the_hour_not_the_day(hour: int) -> None:
    # DeepSeek's off-peak prices depend on the time of day: a per-day cache would get them wrong.
    table = PricingTable()
    usage = TokenUsage(prompt_tokens=100_000, completion_tokens=10_000, cached_tokens=40_000)
    for _ in range(2):  # the second time from the cache
        at = datetime(2025, 3, 1, hour, 45, tzinfo=UTC)
        cost = table.price("deepseek-chat", "deepseek", usage=usage, at=at)
        assert cost is not None
        assert cost.usd == genai_total("deepseek-chat", "deepseek", usage, at)


def test_every_model_of_the_bundled_data_is_priced_as_genai_prices_prices_it() -> None:
    # Our fast path and genai-prices' own calculation (its public calc_price(), which also finds the
    # model its own way) must agree on every model, tier and date, to the last decimal; where
    # genai-prices cannot price (LookupError, ValueError), we say "unpriced".
    table = PricingTable()
    usages = [
        PARITY_USAGES[1],
        PARITY_USAGES[2],
        PARITY_USAGES[5],  # 1-hour cache writes: their own price where a model has one, else cache_write's
        TokenUsage(prompt_tokens=300_000, completion_tokens=9, cached_tokens=1),
    ]
    moments = [datetime(2024, 1, 1, 12, tzinfo=UTC), datetime(2026, 6, 1, 3, tzinfo=UTC)]
    checked = unpriced = fast = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            for usage in usages:
                for at in moments:
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            expected: Decimal | None = genai_total(model.id, provider.id, usage, at)
                    except (LookupError, ValueError):
                        expected = None
                    cost = table.price(model.id, provider.id, usage=usage, at=at)
                    assert (cost.usd if cost else None) == expected, (provider.id, model.id, usage, at)
                    checked += 1
                    unpriced += cost is None
                    fast += cost is not None and genai_module._FastPrices.of(model.get_prices(at)) is not None
    assert checked > 10_000
    assert unpriced < checked / 10
    assert fast > checked / 2  # most of the comparisons are of our own calculation, not genai-prices' twice


def tiers_of(model: genai_types.ModelInfo) -> set[str]:
    return {variant.when["service_tier"] for variant in model.price_variants or () if "service_tier" in variant.when}


def test_every_service_tier_genai_prices_prices_is_priced_as_genai_prices_prices_it() -> None:
    # OpenAI's flex, priority, ... and Gemini's: the answer's tier selects genai-prices' price variant, as its
    # calc_price(price_context={"service_tier": ...}) selects it, on every model and date that has one.
    table = PricingTable()
    usages = [PARITY_USAGES[2], TokenUsage(prompt_tokens=300_000, completion_tokens=9, cached_tokens=1)]
    moments = [
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 12, 1, 3, tzinfo=UTC),
        datetime(2027, 4, 1, tzinfo=UTC),
    ]
    checked = differs = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            for tier in sorted(tiers_of(model)):
                for usage, at in ((usage, at) for usage in usages for at in moments):
                    genai_usage = Usage(
                        input_tokens=usage.prompt_tokens,
                        output_tokens=usage.completion_tokens,
                        cache_read_tokens=usage.cached_tokens,
                        cache_write_tokens=usage.cache_write_tokens,
                        cache_write_1h_tokens=usage.cache_write_1h_tokens,
                    )
                    context = {"service_tier": tier}
                    expected = calc_price(
                        genai_usage,
                        model.id,
                        provider_id=provider.id,
                        genai_request_timestamp=at,
                        price_context=context,
                    ).total_price
                    cost = table.price(model.id, provider.id, usage=usage, at=at, service_tier=tier)
                    standard = genai_total(model.id, provider.id, usage, at)
                    if cost is None:
                        # Only where genai-prices has no price of that tier at that date: it gives the standard one.
                        assert expected == standard, (provider.id, model.id, tier, at)
                        continue
                    assert cost.usd == expected, (provider.id, model.id, tier, usage, at)
                    checked += 1
                    differs += expected != standard
    assert checked > 300
    assert differs > 200


@pytest.mark.parametrize("tier", [None, "", "default", "standard", "auto"])
def test_the_standard_tier_by_any_of_its_names_is_the_standard_price(tier: str | None) -> None:
    usage = TokenUsage(prompt_tokens=10_000, completion_tokens=2_000)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    cost = PricingTable().price("gpt-5-mini", "openai", usage=usage, at=at, service_tier=tier)
    assert cost is not None
    assert cost.usd == genai_total("gpt-5-mini", "openai", usage, at) == Decimal("0.0065")


def test_flex_is_half_and_priority_more_than_the_standard_price() -> None:
    usage = TokenUsage(prompt_tokens=10_000, completion_tokens=2_000, cached_tokens=4_000)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    table = PricingTable()
    standard, flex, priority = (
        table.price("gpt-5-mini", "openai", usage=usage, at=at, service_tier=tier)
        for tier in (None, "flex", "priority")
    )
    assert standard is not None
    assert flex is not None
    assert priority is not None
    # $0.25 / $2 / $0.025 per million standard; flex $0.125 / $1 / $0.0125; priority $0.45 / $3.6 / $0.045.
    assert (standard.nanousd, flex.nanousd, priority.nanousd) == (5_600_000, 2_800_000, 10_080_000)
    assert flex.effective_from == date(2026, 10, 12)  # the tier's price, dated later than the standard one


def test_a_tier_genai_prices_has_no_price_for_is_unpriced_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # gpt-4.1 has priority prices in genai-prices but no flex price; scale is priced for no model. Standard would
    # be a guess (flex is half of it): unpriced, as a model with no price is.
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    table = PricingTable()
    with caplog.at_level("WARNING"):
        for _ in range(2):
            assert table.price("gpt-4.1", "openai", usage=usage, at=at, service_tier="flex") is None
            assert table.price("gpt-5-mini", "openai", usage=usage, at=at, service_tier="scale") is None
    assert caplog.text.count("service tier 'flex'") == 1
    assert caplog.text.count("service tier 'scale'") == 1
    # Before genai-prices' tier prices begin (2026-10-12), a flex answer's price is not known either.
    assert (
        table.price("gpt-5-mini", "openai", usage=usage, at=datetime(2026, 9, 1, tzinfo=UTC), service_tier="flex")
        is None
    )
    assert table.price("gpt-4.1", "openai", usage=usage, at=at, service_tier="priority") is not None


def test_a_tier_of_a_model_genai_prices_prices_no_tier_of_is_its_standard_price() -> None:
    # Most providers' tiers (Groq's on_demand and flex) cost the same; genai-prices prices none of them apart.
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    table = PricingTable()
    model = "llama-3.3-70b-versatile"
    standard = table.price(model, "groq", usage=usage, at=at)
    assert standard is not None
    assert table.price(model, "groq", usage=usage, at=at, service_tier="on_demand") == standard
    assert table.price(model, "groq", usage=usage, at=at, service_tier="flex") == standard


def test_the_sweep_covers_both_ways_of_computing() -> None:
    # Most price sets take the fast path; the rest (per-request prices, reasoning-token prices) are
    # computed by genai-prices itself. Both must exist in the data for the sweep above to test both.
    kinds = {"fast": 0, "genai": 0}
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            prices = [model.prices] if isinstance(model.prices, genai_types.ModelPrice) else model.prices
            for item in prices:
                model_price = item if isinstance(item, genai_types.ModelPrice) else item.prices
                kinds["fast" if genai_module._FastPrices.of(model_price) else "genai"] += 1
    assert kinds["fast"] > 1000
    assert kinds["genai"] >= 1


def test_a_price_our_calculation_does_not_follow_is_left_to_genai_prices() -> None:
    # A per-request price is charged whatever the token counts: the fast path would miss it, so such a
    # price set goes to genai-prices' calculation. A price for a more specific unit than a TokenUsage
    # reports (audio tokens) is charged nothing from the four counts, so that one stays on the fast path.
    per_request = genai_types.ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(2), requests_kcount=Decimal(5))
    with_audio = genai_types.ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(2), input_audio_mtok=Decimal(40))
    assert genai_module._FastPrices.of(per_request) is None
    assert genai_module._FastPrices.of(with_audio) is not None
    provider = genai_types.Provider(
        id="acme-cloud",
        name="Acme Cloud",
        api_pattern=r"https://api\.acme\.example",
        models=[
            genai_types.ModelInfo(id="acme-req", match=genai_types.ClauseEquals(equals="acme-req"), prices=per_request),
            genai_types.ModelInfo(
                id="acme-audio", match=genai_types.ClauseEquals(equals="acme-audio"), prices=with_audio
            ),
        ],
    )
    usage = TokenUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers=[provider], from_auto_update=False))
    try:
        table = PricingTable()
        by_request = table.price("acme-req", "acme-cloud", usage=usage, at=AT)
        by_tokens = table.price("acme-audio", "acme-cloud", usage=usage, at=AT)
        expected = (genai_total("acme-req", "acme-cloud", usage), genai_total("acme-audio", "acme-cloud", usage))
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert by_request is not None
    assert by_tokens is not None
    assert (by_request.usd, by_tokens.usd) == expected
    assert (by_request.usd, by_tokens.usd) == (Decimal("3.005"), Decimal(3))  # $5 per 1000 requests, once


def test_genai_cost_names_the_canonical_model_and_provider() -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100)
    cost = PricingTable().price("claude-3-5-sonnet-20241022", usage=usage, at=AT)
    assert cost is not None
    assert (cost.model, cost.provider) == ("claude-3-5-sonnet", "anthropic")
    azure = PricingTable().price("GPT-4o", "Azure", usage=usage, at=AT)
    assert azure is not None
    assert (azure.model, azure.provider) == ("gpt-4o", "azure")


def test_genai_dated_price_gives_its_effective_date() -> None:
    # OpenAI cut o3's price on 2025-06-10; genai-prices records the date.
    table = PricingTable()
    usage = TokenUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    before = table.price("o3", "openai", usage=usage, at=datetime(2025, 6, 9, 23, 59, tzinfo=UTC))
    after = table.price("o3", "openai", usage=usage, at=datetime(2025, 6, 10, 0, 0, tzinfo=UTC))
    assert before is not None
    assert after is not None
    assert (before.usd, before.effective_from) == (Decimal(50), None)
    assert (after.usd, after.effective_from) == (Decimal(10), date(2025, 6, 10))


def test_at_is_read_in_utc() -> None:
    table = PricingTable()
    usage = TokenUsage(prompt_tokens=1_000_000, completion_tokens=0)
    # 2025-06-10 01:00 in UTC+02:00 is still 2025-06-09 in UTC: the old price.
    east = table.price("o3", "openai", usage=usage, at=datetime(2025, 6, 10, 1, 0, tzinfo=timezone(timedelta(hours=2))))
    naive = table.price("o3", "openai", usage=usage, at=datetime(2025, 6, 10, 0, 0))  # naive: UTC
    assert east is not None
    assert naive is not None
    assert east.usd == Decimal(10)
    assert naive.usd == Decimal(2)


def test_at_defaults_to_now() -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100)
    cost = PricingTable().price("gpt-4o-mini", "openai", usage=usage)
    assert cost is not None
    assert cost.usd == genai_total("gpt-4o-mini", "openai", usage, datetime.now(UTC))


def test_a_coarse_ambient_decimal_context_does_not_round_money() -> None:
    table = PricingTable({"models": {"acme": {"input": "1.23456789", "output": "9.87654321"}}})
    usage = TokenUsage(prompt_tokens=123_456_789, completion_tokens=987_654_321, cached_tokens=5)
    with localcontext() as context:
        context.prec = 3
        override = table.price("acme", usage=usage, at=AT)
        genai = table.price("gpt-4o", "openai", usage=usage, at=AT)
    assert override is not None
    assert genai is not None
    with localcontext() as exact:
        exact.prec = 60
        expected = (Decimal("1.23456789") * 123_456_789 + Decimal("9.87654321") * 987_654_321) / 10**6
    assert override.usd == expected
    assert override.nanousd == nano(expected)
    assert genai.usd == genai_total("gpt-4o", "openai", usage)


# --------------------------------------------------------------------------------------------------
# Unpriced
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("my-fine-model", None),
        ("llama3.1", None),
        ("llama3.1", "ollama"),
        ("gpt-4o", "ollama"),  # genai-prices has no provider "ollama": not OpenAI's price
        ("gpt-4o", "localhost:11434"),
        ("gpt-4o", "groq"),  # a real provider that does not serve the model
        ("", None),
    ],
)
def test_unknown_model_or_provider_is_unpriced_not_free(model: str, provider: str | None) -> None:
    assert price(PricingTable(), model, provider, prompt_tokens=100, completion_tokens=10) is None


@pytest.mark.parametrize(
    ("model", "provider", "name", "named_provider"),
    [
        # LiteLLM's proxy and other gateways name a model by its provider: the gateway speaks OpenAI's API.
        ("openai/gpt-4o-mini", "openai", "gpt-4o-mini", "openai"),
        ("anthropic/claude-3-5-sonnet-20241022", "openai", "claude-3-5-sonnet-20241022", "anthropic"),
        ("Azure/GPT-4o", "openai", "gpt-4o", "azure"),
        ("gemini/gemini-1.5-flash", "openai", "gemini-1.5-flash", "google"),  # LiteLLM's names of providers
        ("bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0", None, "anthropic.claude-3-5-sonnet-20241022-v2:0", "aws"),
        ("xai/grok-2", "openai", "grok-2", "x-ai"),
        ("openai/gpt-4o-mini", None, "gpt-4o-mini", "openai"),
    ],
)
def test_a_model_named_with_its_provider_is_priced_at_that_provider(
    model: str, provider: str | None, name: str, named_provider: str
) -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100)
    cost = PricingTable().price(model, provider, usage=usage, at=AT)
    assert cost is not None
    assert cost.provider == named_provider
    assert cost == PricingTable().price(name, named_provider, usage=usage, at=AT)
    assert cost.usd == genai_total(name.lower(), named_provider, usage)


def test_openrouter_ids_are_its_own_models_at_its_own_prices() -> None:
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100)
    cost = PricingTable().price("openai/gpt-4o-mini", "openrouter", usage=usage, at=AT)
    assert cost is not None
    assert (cost.model, cost.provider) == ("openai/gpt-4o-mini", "openrouter")


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("meta-llama/llama-3.1-8b-instruct", "openai"),  # not a provider: a model's own name, served anywhere
        ("openai/llama3.1", "openai"),  # a provider that has no such model
        ("ollama/gpt-4o", "openai"),  # genai-prices knows no "ollama": not OpenAI's price
        ("openai/", "openai"),
        ("/gpt-4o", "openai"),
    ],
)
def test_a_provider_prefix_prices_only_a_model_that_provider_has(model: str, provider: str | None) -> None:
    assert price(PricingTable(), model, provider, prompt_tokens=100, completion_tokens=10) is None


@pytest.mark.parametrize(
    ("model", "base_url"),
    [
        # Together's own ids; genai-prices' Together list lacks these, Google's and DeepSeek's have them (gemma-3: $0).
        ("google/gemma-3-27b-it", "https://api.together.xyz/v1"),
        ("google/gemma-2-27b-it", "https://api.together.xyz/v1"),
        ("deepseek/deepseek-chat", "https://api.together.xyz/v1"),
        ("openai/gpt-oss-120b", "https://api.cerebras.ai/v1"),
        ("anthropic/claude-3-5-haiku-latest", "https://openrouter.ai/api/v1"),  # not an OpenRouter id it lists
    ],
)
def test_a_host_that_bills_its_own_models_is_never_priced_as_the_provider_its_model_names(
    model: str, base_url: str
) -> None:
    # The host (found from the client's URL) bills the request: its own price, or unpriced, never another's.
    client = OpenAIChatCompletionClient(model=model, api_key="k", base_url=base_url, model_info=MODEL_INFO)
    provider = infer_provider(client)
    assert provider not in (None, "openai")
    assert price(PricingTable(), model, provider, prompt_tokens=100, completion_tokens=10) is None


def test_without_genai_prices_only_overrides_price() -> None:
    table = PricingTable({"models": {"acme": {"input": 1, "output": 1}}}, use_genai_prices=False)
    assert price(table, "gpt-4o-mini", "openai", prompt_tokens=100, completion_tokens=10) is None
    assert price(table, "acme", prompt_tokens=100, completion_tokens=10) is not None


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------


def test_override_wins_over_genai_prices() -> None:
    table = PricingTable({"models": {"gpt-4o-mini": {"input": "0.10", "output": "0.50"}}})
    cost = price(table, "gpt-4o-mini", "openai", prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert cost == Cost(
        nanousd=600_000_000,
        usd=Decimal("0.60"),
        source="override",
        effective_from=None,
        model="gpt-4o-mini",
        provider="openai",
    )


def test_provider_scoped_override_only_matches_its_provider() -> None:
    table = PricingTable({"models": {"gpt-4o": {"input": "100", "output": "100", "provider": "Azure"}}})
    usage: dict[str, Any] = {"prompt_tokens": 1_000_000, "completion_tokens": 0}

    azure = price(table, "gpt-4o", "azure", **usage)
    openai = price(table, "gpt-4o", "openai", **usage)
    unknown = price(table, "gpt-4o", None, **usage)

    assert azure is not None
    assert (azure.usd, azure.source, azure.provider) == (Decimal(100), "override", "azure")
    assert openai is not None
    assert (openai.usd, openai.source) == (Decimal("2.5"), SOURCE)  # genai-prices
    assert unknown is not None
    assert unknown.source == SOURCE


def test_knows_says_whether_a_model_has_a_price_at_all_as_price_looks_it_up() -> None:
    table = PricingTable(
        {
            "models": {
                "prod-chat": {"provider": "azure", "input": 1, "output": 2},
                "later-chat": {"prices": [{"effective_from": "2999-01-01", "input": 1, "output": 2}]},
            }
        }
    )
    assert table.knows("Prod-Chat", "Azure")
    assert not table.knows("prod-chat", "openai")  # its override is Azure's only, and genai-prices has no such model
    assert table.knows("later-chat", "openai")  # listed, though priced only from 2999
    assert table.knows("gpt-4o-2024-08-06", "azure")
    assert not table.knows("my-gpt4o-prod", "azure")
    assert not table.knows("")
    assert not PricingTable(use_genai_prices=False).knows("gpt-4o", "openai")


def test_per_provider_entries_and_an_unscoped_one() -> None:
    table = PricingTable(
        {
            "models": {
                "gpt-4o": [
                    {"provider": "openai", "input": 1, "output": 0},
                    {"provider": "azure", "input": 2, "output": 0},
                    {"input": 3, "output": 0},
                ]
            }
        }
    )
    usage: dict[str, Any] = {"prompt_tokens": 1_000_000, "completion_tokens": 0}
    got = {p: price(table, "gpt-4o", p, **usage) for p in ("openai", "azure", "groq", None)}
    assert {p: (c.usd, c.provider) for p, c in got.items() if c} == {
        "openai": (Decimal(1), "openai"),
        "azure": (Decimal(2), "azure"),
        "groq": (Decimal(3), "groq"),  # the unscoped entry, for the provider asked
        None: (Decimal(3), None),
    }


def test_model_names_match_ignoring_case_and_cost_names_the_override() -> None:
    table = PricingTable({"models": {"Acme-LLM": {"input": 1, "output": 1}}})
    cost = price(table, "acme-llm", prompt_tokens=10, completion_tokens=0)
    assert cost is not None
    assert cost.model == "Acme-LLM"


DATED = {
    "models": {
        "acme-llm": {
            "prices": [
                # Out of order on purpose: the table sorts them.
                {"effective_from": "2026-07-01", "input": "0.5", "output": 1},
                {"effective_from": date(2026, 1, 1), "input": 1, "output": 2},
            ]
        },
        "gpt-4o-mini": {"prices": [{"effective_from": "2030-01-01", "input": 9, "output": 9}]},
    }
}


@pytest.mark.parametrize(
    ("at", "expected_usd", "expected_from"),
    [
        (datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), None, None),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), Decimal(3), date(2026, 1, 1)),
        (datetime(2026, 6, 30, 23, 59, tzinfo=UTC), Decimal(3), date(2026, 1, 1)),
        (datetime(2026, 7, 1, 0, 0, tzinfo=UTC), Decimal("1.5"), date(2026, 7, 1)),
        (datetime(2031, 1, 1, tzinfo=UTC), Decimal("1.5"), date(2026, 7, 1)),
    ],
)
def test_dated_prices_pick_the_price_in_force(
    at: datetime, expected_usd: Decimal | None, expected_from: date | None
) -> None:
    cost = price(PricingTable(DATED), "acme-llm", at=at, prompt_tokens=1_000_000, completion_tokens=1_000_000)
    if expected_usd is None:
        assert cost is None
    else:
        assert cost is not None
        assert (cost.usd, cost.effective_from, cost.source) == (expected_usd, expected_from, "override")


def test_before_the_first_dated_override_the_model_is_unpriced_even_if_genai_prices_knows_it() -> None:
    # The override table is authoritative for the models it lists.
    table = PricingTable(DATED)
    assert price(table, "gpt-4o-mini", "openai", at=AT, prompt_tokens=1000, completion_tokens=1) is None
    later = price(
        table, "gpt-4o-mini", "openai", at=datetime(2030, 1, 1, tzinfo=UTC), prompt_tokens=10**6, completion_tokens=0
    )
    assert later is not None
    assert later.usd == Decimal(9)


def test_zero_priced_local_model_costs_zero_not_unpriced() -> None:
    table = PricingTable({"models": {"llama3.1:8b": {"input": 0, "output": "0"}}})
    cost = price(table, "llama3.1:8b", "ollama", prompt_tokens=5000, completion_tokens=900, cached_tokens=100)
    assert cost == Cost(
        nanousd=0, usd=Decimal(0), source="override", effective_from=None, model="llama3.1:8b", provider="ollama"
    )


def test_per_second_pricing_uses_the_latency() -> None:
    table = PricingTable({"models": {"local-gpu-model": {"per_second": "0.0004"}}})
    cost = price(table, "local-gpu-model", prompt_tokens=10, completion_tokens=10, latency_seconds=2.5)
    assert cost is not None
    assert cost.usd == Decimal("0.001")
    assert cost.nanousd == 1_000_000
    # 0.1 s is 0.1 as written, not the binary float 0.1000000000000000055...
    short = price(table, "local-gpu-model", prompt_tokens=0, completion_tokens=0, latency_seconds=0.1)
    assert short is not None
    assert short.usd == Decimal("0.00004")


def test_per_second_pricing_without_latency_is_unpriced() -> None:
    table = PricingTable({"models": {"local-gpu-model": {"per_second": "0.0004"}}})
    assert price(table, "local-gpu-model", prompt_tokens=10, completion_tokens=10) is None


def test_cached_and_cache_write_tokens_are_priced_at_their_own_rates() -> None:
    table = PricingTable(
        {"models": {"m": {"input": "3", "output": "15", "cached_input": "0.30", "cache_write": "3.75"}}}
    )
    cost = price(table, "m", prompt_tokens=10_000, completion_tokens=500, cached_tokens=6_000, cache_write_tokens=3_000)
    # 1,000 uncached x $3 + 6,000 cached x $0.30 + 3,000 written x $3.75 + 500 out x $15, per million:
    # 0.003 + 0.0018 + 0.01125 + 0.0075 = 0.02355
    assert cost is not None
    assert cost.usd == Decimal("0.02355")
    assert cost.nanousd == 23_550_000


def test_cache_tokens_without_their_own_rate_cost_the_input_rate() -> None:
    table = PricingTable({"models": {"m": {"input": "2", "output": "8"}}})
    cost = price(
        table, "m", prompt_tokens=10_000, completion_tokens=1_000, cached_tokens=6_000, cache_write_tokens=3_000
    )
    # all 10,000 prompt tokens x $2 + 1,000 x $8, per million = 0.02 + 0.008
    assert cost is not None
    assert cost.usd == Decimal("0.028")


# 1,000 new input tokens, 6,000 read from the cache, 3,000 written to it (2,000 of them for an hour), 500 out.
WRITES_1H = TokenUsage(
    prompt_tokens=10_000,
    completion_tokens=500,
    cached_tokens=6_000,
    cache_write_tokens=3_000,
    cache_write_1h_tokens=2_000,
)


def usd(table: PricingTable, usage: TokenUsage = WRITES_1H) -> Decimal:
    cost = table.price("m", usage=usage, at=AT)
    assert cost is not None
    return cost.usd


def test_one_hour_cache_writes_are_priced_at_their_own_override_rate() -> None:
    rates = {"input": "3", "output": "15", "cached_input": "0.30", "cache_write": "3.75", "cache_write_1h": "6"}
    table = PricingTable({"models": {"m": rates}})
    cost = table.price("m", usage=WRITES_1H, at=AT)
    # 1,000 uncached x $3 + 6,000 cached x $0.30 + 1,000 written for 5 minutes x $3.75 + 2,000 written for
    # an hour x $6 + 500 out x $15, per million: 0.003 + 0.0018 + 0.00375 + 0.012 + 0.0075 = 0.02805
    assert cost is not None
    assert (cost.usd, cost.nanousd) == (Decimal("0.02805"), 28_050_000)
    # The same writes, all for 5 minutes: 3,000 x $3.75.
    assert usd(table, dataclasses.replace(WRITES_1H, cache_write_1h_tokens=0)) == Decimal("0.02355")


def test_one_hour_cache_writes_without_their_own_override_rate_cost_what_other_writes_cost() -> None:
    # As genai-prices prices a model without a 1-hour price: at its cache-write price, else at its input price.
    with_write = PricingTable({"models": {"m": {"input": "3", "output": "15", "cache_write": "3.75"}}})
    # 7,000 (cache reads too, without their own price) x $3 + 3,000 x $3.75 + 500 x $15 = 0.021 + 0.01125 + 0.0075
    assert usd(with_write) == Decimal("0.03975")
    # The same as genai-prices' own calculation with these prices:
    genai_price = genai_types.ModelPrice(
        input_mtok=Decimal(3), output_mtok=Decimal(15), cache_write_mtok=Decimal("3.75")
    )
    genai_usage = Usage(
        input_tokens=10_000,
        output_tokens=500,
        cache_read_tokens=6_000,
        cache_write_tokens=3_000,
        cache_write_1h_tokens=2_000,
    )
    assert genai_price.calc_price(genai_usage)["total_price"] == Decimal("0.03975")
    # No cache prices at all: 10,000 x $3 + 500 x $15.
    assert usd(PricingTable({"models": {"m": {"input": "3", "output": "15"}}})) == Decimal("0.0375")
    # A 1-hour price alone: the other writes cost the input price. 8,000 x $3 + 2,000 x $6 + 500 x $15.
    only_1h = PricingTable({"models": {"m": {"input": "3", "output": "15", "cache_write_1h": "6"}}})
    assert usd(only_1h) == Decimal("0.0435")


def test_one_hour_cache_writes_by_hand_on_genai_prices_data() -> None:
    # claude-sonnet-4: $3 input, $0.30 cache read, $3.75 cache write, $6 1-hour cache write, $15 output.
    usage = WRITES_1H
    cost = PricingTable().price("claude-sonnet-4-20250514", "anthropic", usage=usage, at=AT)
    assert cost is not None
    assert cost.usd == Decimal("0.02805") == genai_total("claude-sonnet-4-20250514", "anthropic", usage)
    # gpt-4o has no cache-write prices at all: its writes, 1-hour ones too, cost the input price.
    cost = PricingTable().price("gpt-4o", "openai", usage=usage, at=AT)
    assert cost is not None
    assert cost.usd == genai_total("gpt-4o", "openai", usage)


def test_genai_prices_cache_arithmetic_by_hand() -> None:
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million (the 2025 price list).
    usage = TokenUsage(prompt_tokens=2_000, completion_tokens=100, cached_tokens=1_024)
    cost = PricingTable().price("gpt-4o", "openai", usage=usage, at=AT)
    # 976 x 2.50 + 1,024 x 1.25 + 100 x 10 = 2,440 + 1,280 + 1,000 = 4,720 micro-USD
    assert cost is not None
    assert cost.usd == Decimal("0.00472")
    # claude-3-5-sonnet: $3 input, $0.30 cache read, $3.75 cache write, $15 output.
    usage = TokenUsage(prompt_tokens=10_000, completion_tokens=500, cached_tokens=6_000, cache_write_tokens=3_000)
    cost = PricingTable().price("claude-3-5-sonnet-20241022", "anthropic", usage=usage, at=AT)
    assert cost is not None
    assert cost.usd == Decimal("0.02355")


@pytest.mark.parametrize(
    ("prompt_tokens", "expected_nanousd"),
    [
        (1, 0),  # 0.5 nano-USD: to the even 0
        (2, 1),
        (3, 2),  # 1.5: to the even 2
        (5, 2),  # 2.5: to the even 2
        (7, 4),  # 3.5: to 4
        (1_000_001, 500_000),  # 500,000.5: to the even 500,000
        (1_000_003, 500_002),  # 500,001.5: to the even 500,002
    ],
)
def test_rounding_to_nano_usd_is_half_even_and_once(prompt_tokens: int, expected_nanousd: int) -> None:
    # $0.0005 per million tokens: each token costs exactly half a nano-USD.
    table = PricingTable({"models": {"m": {"input": "0.0005", "output": 0}}})
    cost = price(table, "m", prompt_tokens=prompt_tokens, completion_tokens=0)
    assert cost is not None
    assert cost.usd == Decimal("0.0005") * prompt_tokens / 1_000_000
    assert cost.nanousd == expected_nanousd


def test_float_prices_in_a_dict_are_read_as_written() -> None:
    table = PricingTable({"models": {"m": {"input": 0.1, "output": 0.2}}})
    cost = price(table, "m", prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert cost is not None
    assert cost.usd == Decimal("0.3")  # not 0.3000000000000000166...


# --------------------------------------------------------------------------------------------------
# Files and validation
# --------------------------------------------------------------------------------------------------

TOML = """
[models."gpt-4o-mini"]
input = "0.15"
output = 0.60
cached_input = "0.075"
cache_write = "0.1875"
cache_write_1h = "0.30"
provider = "openai"

[[models."acme-llm".prices]]
effective_from = 2026-01-01
input = 1
output = 2

[[models."acme-llm".prices]]
effective_from = 2026-07-01
input = "0.8"
output = "1.6"

[models."llama3.1:8b"]
input = 0
output = 0

[models."local-gpu-model"]
per_second = "0.0004"

[[models."gpt-4o"]]
provider = "openai"
input = "2.50"
output = "10"

[[models."gpt-4o"]]
provider = "azure"
input = "2.75"
output = "11"
"""

JSON = {
    "models": {
        "gpt-4o-mini": {
            "input": "0.15",
            "output": 0.60,
            "cached_input": "0.075",
            "cache_write": "0.1875",
            "cache_write_1h": "0.30",
            "provider": "openai",
        },
        "acme-llm": {
            "prices": [
                {"effective_from": "2026-01-01", "input": 1, "output": 2},
                {"effective_from": "2026-07-01", "input": "0.8", "output": "1.6"},
            ]
        },
        "llama3.1:8b": {"input": 0, "output": 0},
        "local-gpu-model": {"per_second": "0.0004"},
        "gpt-4o": [
            {"provider": "openai", "input": "2.50", "output": "10"},
            {"provider": "azure", "input": "2.75", "output": "11"},
        ],
    }
}

PROBES: list[tuple[str, str | None, datetime]] = [
    ("gpt-4o-mini", "openai", AT),
    ("gpt-4o-mini", "azure", AT),
    ("acme-llm", None, datetime(2026, 3, 1, tzinfo=UTC)),
    ("acme-llm", None, datetime(2026, 8, 1, tzinfo=UTC)),
    ("acme-llm", None, datetime(2025, 8, 1, tzinfo=UTC)),
    ("llama3.1:8b", "ollama", AT),
    ("local-gpu-model", None, AT),
    ("gpt-4o", "openai", AT),
    ("gpt-4o", "azure", AT),
    ("gpt-4o", "groq", AT),
]


def probe(table: PricingTable) -> list[Cost | None]:
    usage = TokenUsage(
        prompt_tokens=123_456,
        completion_tokens=7_890,
        cached_tokens=100_000,
        cache_write_tokens=3,
        latency_seconds=1.25,
        cache_write_1h_tokens=2,
    )
    return [table.price(model, provider, usage=usage, at=at) for model, provider, at in PROBES]


def test_toml_json_and_dict_give_the_same_table(tmp_path: Path) -> None:
    (tmp_path / "prices.toml").write_text(TOML, encoding="utf-8")
    # JSON numbers like 0.60 are read as exact decimals too.
    (tmp_path / "prices.json").write_text(json.dumps(JSON), encoding="utf-8")

    from_toml = probe(PricingTable.from_file(tmp_path / "prices.toml"))
    from_json = probe(PricingTable.from_file(str(tmp_path / "prices.json")))
    from_path_argument = probe(PricingTable(tmp_path / "prices.toml"))
    from_dict = probe(PricingTable(JSON))

    assert from_toml == from_json == from_path_argument == from_dict
    mini, mini_azure, acme_march, acme_august, acme_early, llama, gpu, gpt4o_openai, gpt4o_azure, gpt4o_groq = from_toml
    assert mini is not None
    # 23,453 x 0.15 + 100,000 x 0.075 + 1 x 0.1875 + 2 (written for an hour) x 0.30 + 7,890 x 0.60
    # = 15,752.7375 micro-USD
    assert mini.usd == Decimal("0.0157527375")
    assert mini.nanousd == 15_752_738  # ...737.5 rounds to the even ...738
    assert mini_azure is not None
    assert mini_azure.source == SOURCE
    assert acme_march is not None
    assert (acme_march.effective_from, acme_march.usd) == (date(2026, 1, 1), Decimal("0.139236"))
    assert acme_august is not None
    assert acme_august.effective_from == date(2026, 7, 1)
    assert acme_early is None
    assert llama is not None
    assert llama.nanousd == 0
    assert gpu is not None
    assert gpu.usd == Decimal("0.0005")
    assert gpt4o_openai is not None
    assert gpt4o_azure is not None
    assert (gpt4o_openai.source, gpt4o_azure.source) == ("override", "override")
    assert gpt4o_azure.usd > gpt4o_openai.usd
    assert gpt4o_groq is None  # listed for two providers, groq is neither; genai-prices has no gpt-4o at groq


@pytest.mark.parametrize("name", ["prices.toml", "prices.json"])
def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path, name: str) -> None:
    # Notepad and other Windows editors begin UTF-8 files with a BOM; TOML's parser called it an invalid
    # statement and JSON's an unexpected BOM, naming nothing the user could see in the file.
    text = TOML if name.endswith(".toml") else json.dumps(JSON)
    (tmp_path / name).write_text("\ufeff" + text, encoding="utf-8")
    assert probe(PricingTable.from_file(tmp_path / name)) == probe(PricingTable(JSON))


def test_module_docstring_example_is_valid_toml_for_the_table(tmp_path: Path) -> None:
    doc = overrides_module.__doc__ or ""
    toml = textwrap.dedent(doc.split("exact decimals")[1].split("::", 1)[1].split("The same as JSON")[0])
    (tmp_path / "doc.toml").write_text(toml, encoding="utf-8")
    table = PricingTable.from_file(tmp_path / "doc.toml")
    assert price(table, "local-gpu-model", prompt_tokens=1, completion_tokens=1, latency_seconds=1) is not None


# pydantic's words for the reasons that come up most.
NEGATIVE = "Input should be greater than or equal to 0"
UNKNOWN_KEY = "Extra inputs are not permitted"
TOO_HIGH_PER_TOKEN = (
    "more than 9223372036854775.807 USD per million tokens: one token would cost more than a usage row holds"
)
TOO_HIGH_PER_SECOND = "more than 9223372036.854775807 USD per second: one second would cost more than a usage row holds"
NOT_A_NUMBER = "Decimal input should be an integer, float, string or Decimal object"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"model": {}}, "pricing overrides: model: " + UNKNOWN_KEY),
        ({"models": []}, "pricing overrides: models: Input should be a valid dictionary"),
        ({"models": {"": {"input": 1, "output": 1}}}, "pricing overrides: models: model names must not be empty"),
        ({"models": {"m": {"input": 1, "output": 1, "inptu": 2}}}, 'models."m".inptu: ' + UNKNOWN_KEY),
        ({"models": {"m": {"input": -1, "output": 1}}}, 'models."m".input: ' + NEGATIVE),
        ({"models": {"m": {"input": "1", "output": "-0.01"}}}, 'models."m".output: ' + NEGATIVE),
        ({"models": {"m": {"input": "cheap", "output": 1}}}, 'models."m".input: Input should be a valid decimal'),
        ({"models": {"m": {"input": "NaN", "output": 1}}}, 'models."m".input: Input should be a finite number'),
        ({"models": {"m": {"input": float("inf"), "output": 1}}}, 'models."m".input: Input should be a finite number'),
        ({"models": {"m": {"input": True, "output": 1}}}, 'models."m".input: ' + NOT_A_NUMBER),
        ({"models": {"m": {"input": [1], "output": 1}}}, 'models."m".input: ' + NOT_A_NUMBER),
        ({"models": {"m": {}}}, 'models."m": has neither token prices (input, output) nor per_second'),
        ({"models": {"m": {"provider": "openai"}}}, 'models."m": has neither token prices'),
        ({"models": {"m": {"input": 1}}}, 'models."m": output missing'),
        ({"models": {"m": {"output": 1, "cached_input": 1}}}, 'models."m": input missing'),
        (
            {"models": {"m": {"input": 1, "output": 1, "per_second": 1}}},
            'models."m": a rate is per token or per second, not both',
        ),
        ({"models": {"m": "free"}}, 'models."m": expected a table of prices or a list of them'),
        (
            {"models": {"m": {"input": 1, "output": 1, "provider": ""}}},
            'models."m".provider: String should have at least 1 character',
        ),
        (
            {"models": {"m": {"input": 1, "output": 1, "provider": 3}}},
            'models."m".provider: Input should be a valid string',
        ),
        ({"models": {"m": []}}, 'models."m": List should have at least 1 item'),
        (
            {"models": {"m": [{"input": 1, "output": 1, "provider": "a"}, {"input": 2, "output": 2, "provider": "A"}]}},
            "models.\"m\": two entries for provider 'a'",
        ),
        (
            {"models": {"m": [{"input": 1, "output": 1}, {"input": 2, "output": 2}]}},
            'models."m": two entries for no provider',
        ),
        ({"models": {"m": [{"input": 1, "output": 1}, {"inputs": 2}]}}, 'models."m"[1].inputs: ' + UNKNOWN_KEY),
        (
            {"models": {"GPT-X": {"input": 1, "output": 1}, "gpt-x": {"input": 1, "output": 1}}},
            "models: 'gpt-x' is listed twice (also as 'GPT-X'",
        ),
        ({"models": {"m": {"prices": []}}}, 'models."m".prices: List should have at least 1 item'),
        ({"models": {"m": {"prices": "1"}}}, 'models."m".prices: Input should be a valid list'),
        (
            {"models": {"m": {"input": 1, "prices": [{"effective_from": "2026-01-01", "input": 1, "output": 1}]}}},
            'models."m": give prices either on the model or in its `prices` list, not both (also has input)',
        ),
        (
            {"models": {"m": {"prices": [{"input": 1, "output": 1}]}}},
            'models."m".prices[0].effective_from: Field required',
        ),
        (
            {"models": {"m": {"prices": [{"effective_from": "soon", "input": 1, "output": 1}]}}},
            'models."m".prices[0].effective_from: expected a date (YYYY-MM-DD)',
        ),
        (
            {"models": {"m": {"prices": [{"effective_from": datetime(2026, 1, 1), "input": 1, "output": 1}]}}},
            'models."m".prices[0].effective_from: expected a date (YYYY-MM-DD), got a date-time',
        ),
        (
            {"models": {"m": {"prices": [{"effective_from": 20260101, "input": 1, "output": 1}]}}},
            'models."m".prices[0].effective_from: Input should be a valid date',
        ),
        (
            {"models": {"m": {"prices": [{"effective_from": "2026-01-01", "input": 1, "output": 1, "provider": "x"}]}}},
            'models."m".prices[0].provider: ' + UNKNOWN_KEY,
        ),
        (
            {"models": {"m": {"prices": [{"effective_from": "2026-01-01", "input": -1, "output": 1}]}}},
            'models."m".prices[0].input: ' + NEGATIVE,
        ),
        (
            {"models": {"m": {"prices": [{"effective_from": "2026-01-01", "input": 1}]}}},
            'models."m".prices[0]: output missing',
        ),
        (
            {"models": {"m": {"prices": [{"effective_from": "2026-01-01"}]}}},
            'models."m".prices[0]: has neither token prices',
        ),
        (
            {"models": {"m": {"prices": ["x"]}}},
            'models."m".prices[0]: expected a table',
        ),
        (
            {
                "models": {
                    "m": {
                        "prices": [
                            {"effective_from": "2026-01-01", "input": 1, "output": 1},
                            {"effective_from": date(2026, 1, 1), "input": 2, "output": 2},
                        ]
                    }
                }
            },
            'models."m": two prices take effect on 2026-01-01',
        ),
        # A price at which one token (or second) costs more than a ledger row holds: every row it priced
        # would be refused by the database, and past the decimal context's range price() raised Overflow.
        ({"models": {"m": {"input": "1e999999", "output": 1}}}, 'models."m".input: ' + TOO_HIGH_PER_TOKEN),
        ({"models": {"m": {"input": 1, "output": "1e30"}}}, 'models."m".output: ' + TOO_HIGH_PER_TOKEN),
        (
            {"models": {"m": {"input": 1, "output": 1, "cached_input": "9223372036854775.808"}}},
            'models."m".cached_input: ' + TOO_HIGH_PER_TOKEN,
        ),
        ({"models": {"m": {"per_second": "9223372036.854775808"}}}, 'models."m".per_second: ' + TOO_HIGH_PER_SECOND),
    ],
)
def test_invalid_overrides_fail_at_construction_naming_model_and_key(
    overrides: Mapping[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        PricingTable(overrides)
    assert expected in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_the_highest_prices_a_usage_row_holds_are_accepted() -> None:
    table = PricingTable(
        {
            "models": {
                "token": {"input": "9223372036854775.807", "output": "9223372036854775.807"},
                "second": {"per_second": "9223372036.854775807"},
            }
        },
        use_genai_prices=False,
    )
    one_token = table.price("token", usage=TokenUsage(prompt_tokens=1, completion_tokens=0))
    one_second = table.price("second", usage=TokenUsage(prompt_tokens=0, completion_tokens=0, latency_seconds=1))
    assert one_token is not None
    assert one_second is not None
    assert one_token.nanousd == one_second.nanousd == 2**63 - 1


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("prices.yaml", "models: {}", "expected a .toml or .json file"),
        ("missing.toml", None, "cannot be read"),
        ("broken.toml", "[models\n", "not valid TOML"),
        ("broken.json", "{", "not valid JSON"),
        ("list.json", "[]", "expected a table/object at the top level"),
        ("bad.toml", '[models."m"]\ninput = -1\noutput = 1\n', 'models."m".input: ' + NEGATIVE),
        ("bad.json", '{"models": {"m": {"input": 1, "output": 1, "cache": 1}}}', 'models."m".cache: ' + UNKNOWN_KEY),
        # A key given twice: TOML refuses it; JSON's parser kept the last one (here the other price) silently.
        ("twice.toml", '[models."m"]\ninput = 1\noutput = 2\n[models."m"]\ninput = 3\noutput = 4\n', "not valid TOML"),
        (
            "twice.json",
            '{"models": {"m": {"input": 1, "output": 2}, "m": {"input": 100, "output": 200}}}',
            'not valid JSON: the key "m" appears twice in one object',
        ),
        ("twice-in.json", '{"models": {"m": {"input": 1, "output": 2, "input": 5}}}', 'the key "input" appears twice'),
    ],
)
def test_invalid_files_fail_at_construction(tmp_path: Path, name: str, content: str | None, expected: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=re.escape(expected)) as raised:
        PricingTable.from_file(path)
    assert str(raised.value).startswith(f"pricing file {str(path)!r}: ")


def test_every_problem_is_listed_with_its_location(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."a"]\ninput = -1\noutput = 1\n[[models."b".prices]]\ninput = 1\noutput = 1\n[models."c"]\n'
        "input = 1\noutput = 1\ncache = 1\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as raised:
        PricingTable.from_file(path)
    assert str(raised.value) == (
        f"pricing file {str(path)!r}: "
        'models."a".input: Input should be greater than or equal to 0; '
        'models."b".prices[0].effective_from: Field required; '
        'models."c".cache: Extra inputs are not permitted'
    )


def test_a_bad_override_never_repeats_the_values_it_was_given() -> None:
    secret = "sk-proj-0123456789abcdef"
    for overrides in (
        {"models": {"m": {"input": 1, "output": 1, "api_key": secret}}},  # an unknown key holding a secret
        {"models": {"m": {"input": secret, "output": 1}}},  # pasted into a price
        {"models": {"m": {"provider": {"token": secret}, "input": 1, "output": 1}}},
        {"models": {"m": {"prices": [{"effective_from": secret, "input": 1, "output": 1}]}}},
        {"models": {"m": secret}},
        {"token": secret},
    ):
        with pytest.raises(ConfigurationError) as raised:
            PricingTable(overrides)
        error = raised.value
        assert secret not in str(error)
        # Nothing chained to it repeats the value either (a pydantic ValidationError would: input_value=...).
        assert error.__cause__ is None
        assert error.__suppress_context__
        assert secret not in "".join(traceback.format_exception(error))


def test_overrides_of_the_wrong_type_fail() -> None:
    with pytest.raises(ConfigurationError, match="expected a mapping or a file path"):
        PricingTable(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"prompt_tokens": -1, "completion_tokens": 0}, "prompt_tokens must be a non-negative int"),
        ({"prompt_tokens": 1, "completion_tokens": 1.5}, "completion_tokens must be a non-negative int"),
        ({"prompt_tokens": 2**63, "completion_tokens": 0}, "prompt_tokens must be a non-negative int <= 2\\*\\*63 - 1"),
        (
            {"prompt_tokens": 10, "completion_tokens": 0, "cached_tokens": 8, "cache_write_tokens": 3},
            "exceed prompt_tokens",
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 0, "cache_write_tokens": 3, "cache_write_1h_tokens": 4},
            "cache_write_1h_tokens \\(4\\) exceed cache_write_tokens \\(3\\)",
        ),
        ({"prompt_tokens": 10, "completion_tokens": 0, "cache_write_1h_tokens": -1}, "cache_write_1h_tokens must be"),
        ({"prompt_tokens": 1, "completion_tokens": 0, "latency_seconds": -0.1}, "latency_seconds must be a finite"),
        (
            {"prompt_tokens": 1, "completion_tokens": 0, "latency_seconds": float("nan")},
            "latency_seconds must be a finite",
        ),
    ],
)
def test_token_usage_rejects_impossible_counts(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        TokenUsage(**fields)


class _Count(int):
    """An int of a class of its own: a count all the same."""


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt_tokens": _Count(10), "completion_tokens": 2},
        {"prompt_tokens": 10, "completion_tokens": 2, "latency_seconds": 3},
        {"prompt_tokens": 10, "completion_tokens": 2, "latency_seconds": 0.0},
    ],
)
def test_token_usage_takes_int_subclasses_and_int_latencies(fields: dict[str, Any]) -> None:
    assert TokenUsage(**fields).prompt_tokens == 10


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"prompt_tokens": True, "completion_tokens": 0}, "prompt_tokens must be a non-negative int"),
        ({"prompt_tokens": 1, "completion_tokens": 0, "latency_seconds": True}, "latency_seconds must be a finite"),
        ({"prompt_tokens": 1, "completion_tokens": 0, "latency_seconds": float("inf")}, "latency_seconds must be"),
        ({"prompt_tokens": 1, "completion_tokens": 0, "latency_seconds": "1"}, "latency_seconds must be a finite"),
    ],
)
def test_token_usage_refuses_booleans_and_infinite_latencies(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        TokenUsage(**fields)


def test_a_valid_token_usage_is_checked_without_calling_a_function() -> None:
    # Made for every priced attempt: plain ints and a float latency take no builtin call (counted, not timed).
    calls: list[str] = []

    def count(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and arg is not sys.setprofile:
            calls.append(arg.__name__)

    sys.setprofile(count)
    try:
        TokenUsage(1000, 100, cached_tokens=10, latency_seconds=0.25, input_audio_tokens=5)
    finally:
        sys.setprofile(None)
    assert calls == []


def test_a_table_is_safe_to_share_between_threads() -> None:
    table = PricingTable({"models": {"acme": {"input": 1, "output": 2}}})
    models = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-20241022", "acme", "unknown", "deepseek-chat"]
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100, cached_tokens=10)
    expected = [table.price(model, usage=usage, at=AT) for model in models]
    results: list[list[Cost | None]] = []

    def work() -> None:
        fresh = PricingTable({"models": {"acme": {"input": 1, "output": 2}}})
        for _ in range(200):
            results.append([fresh.price(model, usage=usage, at=AT) for model in models])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 800
    assert all(result == expected for result in results)


def test_an_auto_updated_snapshot_is_named_in_the_source() -> None:
    table = PricingTable()
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=100)
    before = table.price("gpt-4o-mini", "openai", usage=usage, at=AT)
    bundled = data_snapshot.get_snapshot()
    # What UpdatePrices would install (here without any network: a copy of the bundled data).
    updated = data_snapshot.DataSnapshot(
        providers=bundled.providers, from_auto_update=True, timestamp=datetime(2026, 1, 2, 3, 4, 5)
    )
    data_snapshot.set_custom_snapshot(updated)
    try:
        after = table.price("gpt-4o-mini", "openai", usage=usage, at=AT)
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert before is not None
    assert after is not None
    assert after.usd == before.usd
    assert after.source == f"{SOURCE} (data of 2026-01-02T03:04:05)"


def test_a_price_set_genai_prices_refuses_is_unpriced_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # Data updated from the network could hold a price genai-prices itself rejects (here a negative one).
    broken = genai_types.Provider(
        id="acme-cloud",
        name="Acme Cloud",
        api_pattern=r"https://api\.acme\.example",
        models=[
            genai_types.ModelInfo(
                id="acme-1",
                match=genai_types.ClauseEquals(equals="acme-1"),
                prices=genai_types.ModelPrice(input_mtok=Decimal(-1), output_mtok=Decimal(1)),
            ),
            genai_types.ModelInfo(
                id="acme-2",
                match=genai_types.ClauseEquals(equals="acme-2"),
                prices=genai_types.ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(2)),
            ),
        ],
    )
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers=[broken], from_auto_update=True))
    try:
        table = PricingTable()
        with caplog.at_level("WARNING", logger=genai_module.logger.name):
            refused = [price(table, "acme-1", "acme-cloud", prompt_tokens=10, completion_tokens=1) for _ in range(3)]
            fine = price(table, "acme-2", "acme-cloud", prompt_tokens=1_000_000, completion_tokens=0)
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert refused == [None, None, None]
    assert fine is not None
    assert fine.usd == Decimal(1)
    warnings_logged = [record.getMessage() for record in caplog.records]
    assert len(warnings_logged) == 1
    assert "could not price acme-1 at acme-cloud" in warnings_logged[0]


# --------------------------------------------------------------------------------------------------
# No network
# --------------------------------------------------------------------------------------------------

NO_NETWORK_SCRIPT = """
import socket

def refuse(*args, **kwargs):
    raise OSError("network access attempted")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from datetime import UTC, datetime
from autogen_reliability.accounting import PricingTable, TokenUsage


table = PricingTable({"models": {"acme": {"input": 1, "output": 1}}})
usage = TokenUsage(prompt_tokens=1000, completion_tokens=100, cached_tokens=500)
for model in ("gpt-4o-mini", "claude-3-5-sonnet-20241022", "deepseek-chat", "acme"):
    cost = table.price(model, usage=usage)
    assert cost is not None and cost.nanousd > 0, model
assert table.price("unknown-model", usage=usage) is None
print("priced offline")
"""


def test_pricing_never_touches_the_network() -> None:
    env = {
        **os.environ,
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    done = run_python(NO_NETWORK_SCRIPT, env=env)
    assert done.returncode == 0, done.stderr
    assert "priced offline" in done.stdout


FIRST_WRAPPER_SCRIPT = """
import sys, threading
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_reliability import reliable
from autogen_reliability.accounting import PricingTable

assert "genai_prices" not in sys.modules, "imported with the package"
loaded_on = []
real_init = PricingTable.__init__
def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    loaded_on.append(("genai_prices.data" in sys.modules, threading.current_thread() is threading.main_thread()))
PricingTable.__init__ = init
reliable(OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-none"), project="p")
assert loaded_on == [(True, True)], loaded_on
print("loaded with the first table, on the main thread")
"""


def test_genai_prices_loads_with_the_first_table_on_the_constructing_thread(tmp_path: Path) -> None:
    # Not at import (it takes ~0.1 s), and not first on a background thread (DESIGN.md, Pitfalls): the first
    # wrapper makes the process's table, and genai-prices with its bundled data is imported there.
    env = {**os.environ, "AUTOGEN_RELIABILITY_DB_URL": f"sqlite:///{tmp_path / 'usage.db'}"}
    done = run_python(FIRST_WRAPPER_SCRIPT, env=env)
    assert done.returncode == 0, done.stderr
    assert "loaded with the first table, on the main thread" in done.stdout
