"""The recommendations of a usage report: each rule fires past its threshold, not below, with its figure and saving.

The rules are pure functions of numbers the store has already aggregated, so these tests build
``UsageReport`` objects by hand and check each figure and saving against a value computed here by
hand (the comments show the arithmetic). Prices come from the real ``PricingTable``: genai-prices'
bundled data for gpt-4o (input $2.50, cache reads $1.25 per million tokens in June 2025) and
overrides where a test needs round numbers.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autogen_reliability import ConfigurationError
from autogen_reliability.accounting import PricingTable
from autogen_reliability.reports import (
    Group,
    Recommendation,
    ReportFilters,
    ReportThresholds,
    SessionGrowth,
    Usage,
    UsageReport,
    recommend,
)

AT = datetime(2025, 6, 1, tzinfo=UTC)
# Round prices (USD per million tokens) so that savings are easy to compute by hand.
ROUND_PRICES = PricingTable(
    {
        "models": {
            "flat": {"input": 1000, "output": 0},
            "cachey": {"input": 4, "output": 8, "cached_input": 1},
        }
    },
    use_genai_prices=False,
)


def make_report(
    *,
    totals: Usage | None = None,
    by_model: dict[str | None, Usage] | None = None,
    by_agent: dict[str | None, Usage] | None = None,
    sessions: tuple[SessionGrowth, ...] = (),
    unpriced_models: tuple[str, ...] = (),
) -> UsageReport:
    by_model = by_model or {}
    return UsageReport(
        filters=ReportFilters(project="acme"),
        generated_at=AT,
        group_by=("model",),
        totals=totals if totals is not None else (next(iter(by_model.values())) if by_model else Usage()),
        unpriced_models=unpriced_models,
        by_model=tuple(Group({"model": model}, usage) for model, usage in by_model.items()),
        by_agent=tuple(Group({"agent": agent}, usage) for agent, usage in (by_agent or {}).items()),
        session_growth=sessions,
    )


def only(findings: tuple[Recommendation, ...], code: str) -> list[Recommendation]:
    return [finding for finding in findings if finding.code == code]


def nano(value: Fraction | Decimal) -> Decimal:
    """``value`` rounded half-even to nano-USD, as the report writes money: the oracle of a saving."""
    fraction = Fraction(value)
    nanos = round(fraction * 10**9)  # round() of a Fraction is half-even
    return Decimal(nanos) / Decimal(10**9)


# --------------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------------


def test_the_default_thresholds() -> None:
    assert ReportThresholds().to_dict() == {
        "retry_waste_share": 0.10,
        "reask_rate": 0.05,
        "min_attempts": 20,
        "agent_cost_ratio": 2.0,
        "agent_min_cost_share": 0.20,
        "agent_min_calls": 20,
        "prompt_growth": 3.0,
        "prompt_growth_min_calls": 5,
        "cache_min_prompt_tokens": 1024,
        "cached_token_rate": 0.05,
        "cache_reusable_fraction": 0.5,
        "unpriced_share": 0.0,
    }


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"retry_waste_share": 1.5}, "retry_waste_share must be between 0 and 1, got 1.5"),
        ({"reask_rate": -0.01}, "reask_rate must be between 0 and 1, got -0.01"),
        ({"cached_token_rate": math.nan}, "cached_token_rate must be between 0 and 1, got nan"),
        ({"prompt_growth": 10**400}, "prompt_growth must be > 1 .* got an int too large for a float"),
        ({"unpriced_share": "0.1"}, "unpriced_share must be a number, got str"),
        ({"agent_min_cost_share": True}, "agent_min_cost_share must be a number, got bool"),
        ({"agent_cost_ratio": 0.5}, "agent_cost_ratio must be >= 1"),
        ({"agent_cost_ratio": math.inf}, "agent_cost_ratio must be >= 1"),
        ({"prompt_growth": 1}, "prompt_growth must be > 1"),
        ({"cache_reusable_fraction": 0}, "cache_reusable_fraction must be > 0 and <= 1, got 0"),
        ({"cache_reusable_fraction": 1.01}, "cache_reusable_fraction must be > 0 and <= 1"),
        ({"min_attempts": 0}, "min_attempts must be >= 1, got 0"),
        ({"min_attempts": 2.5}, "min_attempts must be an int, got float"),
        ({"agent_min_calls": True}, "agent_min_calls must be an int, got bool"),
        ({"prompt_growth_min_calls": 1}, "prompt_growth_min_calls must be >= 2, got 1"),
        ({"cache_min_prompt_tokens": -1}, "cache_min_prompt_tokens must be >= 0, got -1"),
    ],
)
def test_bad_thresholds_are_refused_with_the_reason(options: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigurationError, match="ReportThresholds." + reason.replace("(", r"\(")):
        ReportThresholds(**options)


def test_thresholds_take_ints_for_floats_and_are_frozen() -> None:
    thresholds = ReportThresholds(prompt_growth=4, retry_waste_share=0, cache_reusable_fraction=1)
    assert (thresholds.prompt_growth, thresholds.retry_waste_share, thresholds.cache_reusable_fraction) == (4.0, 0, 1)
    assert isinstance(thresholds.prompt_growth, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        thresholds.reask_rate = 0.5  # type: ignore[misc]


def test_recommend_refuses_thresholds_of_another_type() -> None:
    with pytest.raises(ConfigurationError, match="thresholds must be a ReportThresholds, got dict"):
        recommend(make_report(), {"reask_rate": 0.1})  # type: ignore[arg-type]


def test_an_empty_report_finds_nothing() -> None:
    assert recommend(make_report()) == ()


# --------------------------------------------------------------------------------------------------
# retry_waste
# --------------------------------------------------------------------------------------------------

GPT4O = Usage(calls=80, attempts=100, cost=Decimal("8.80"), errors=20, waste_cost=Decimal("1.232"), waste_tokens=5000)


def test_retry_waste_fires_above_its_share_with_the_figure_and_the_waste_above_the_threshold() -> None:
    (finding,) = only(recommend(make_report(by_model={"gpt-4o": GPT4O})), "retry_waste")
    assert finding.subject == {"model": "gpt-4o"}
    assert finding.metric == "retry_waste_share"
    assert finding.value == pytest.approx(0.14)  # 1.232 / 8.80
    assert finding.threshold == 0.10
    assert finding.saving == Decimal("0.352")  # 1.232 - 0.10 * 8.80
    assert "on gpt-4o cost $1.23, 14.0% of its $8.80 (threshold 10%)" in finding.message


def test_retry_waste_at_its_threshold_does_not_fire() -> None:
    at_threshold = dataclasses.replace(GPT4O, waste_cost=Decimal("0.88"))  # exactly 10 % of 8.80
    assert only(recommend(make_report(by_model={"gpt-4o": at_threshold})), "retry_waste") == []
    just_above = dataclasses.replace(GPT4O, waste_cost=Decimal("0.880000001"))
    (finding,) = only(recommend(make_report(by_model={"gpt-4o": just_above})), "retry_waste")
    assert finding.saving == Decimal("0.000000001")


def test_retry_waste_needs_enough_attempts_and_a_price() -> None:
    few = Usage(calls=10, attempts=19, cost=Decimal("1"), errors=9, waste_cost=Decimal("0.5"))
    unpriced = dataclasses.replace(GPT4O, cost=Decimal(0), waste_cost=Decimal(0), unpriced_attempts=100)
    report = make_report(totals=Usage(), by_model={"gpt-4o": few, "llama3.1:8b": unpriced})
    assert only(recommend(report), "retry_waste") == []
    assert only(recommend(report, ReportThresholds(min_attempts=19)), "retry_waste")[0].value == 0.5


def test_retry_waste_threshold_is_a_parameter() -> None:
    report = make_report(by_model={"gpt-4o": GPT4O})
    assert only(recommend(report, ReportThresholds(retry_waste_share=0.2)), "retry_waste") == []
    assert only(recommend(report, ReportThresholds(retry_waste_share=0.13)), "retry_waste") != []


def test_small_amounts_are_not_shown_as_zero_cents() -> None:
    small = Usage(calls=20, attempts=25, cost=Decimal("0.03"), errors=5, waste_cost=Decimal("0.0042"))
    (finding,) = only(recommend(make_report(by_model={"gpt-4o-mini": small})), "retry_waste")
    assert "cost $0.0042, 14.0% of its $0.03" in finding.message
    assert finding.saving == Decimal("0.0012")  # 0.0042 - 0.003


def test_shares_near_all_or_nothing_are_not_rounded_to_it() -> None:
    # $1,999.50 of $2,000 wasted read "100.0% of its $2,000.00": all of it, which it was not.
    nearly_all = Usage(calls=1000, attempts=2000, cost=Decimal(2000), errors=1000, waste_cost=Decimal("1999.5"))
    (finding,) = only(recommend(make_report(by_model={"gpt-4o": nearly_all})), "retry_waste")
    assert ">99.9% of its $2,000.00" in finding.message


# --------------------------------------------------------------------------------------------------
# reask_rate
# --------------------------------------------------------------------------------------------------

# 110 attempts: 6 failed, 4 abandoned, 8 invalid, 92 accepted; answered = 100; 8 % re-asked.
REASKED = Usage(calls=90, attempts=110, cost=Decimal(10), errors=6, cancelled=4, invalid=8, waste_cost=Decimal(1))


def test_reask_rate_fires_per_model_and_per_agent() -> None:
    report = make_report(by_model={"gpt-4o": REASKED}, by_agent={"writer": REASKED})
    model, agent = only(recommend(report), "reask_rate")
    # 8 - 5 % of 100 = 3 re-asks too many, each at (10 - 1) / 92 USD, the average accepted answer.
    saving = nano(3 * Fraction(9, 92))
    assert saving == Decimal("0.293478261")
    for finding, subject, who in ((model, {"model": "gpt-4o"}, "gpt-4o"), (agent, {"agent": "writer"}, "agent writer")):
        assert finding.subject == subject
        assert (finding.metric, finding.value, finding.threshold) == ("reask_rate", 0.08, 0.05)
        assert finding.saving == saving
        assert f"8 of 100 answers of {who} failed validation (8.0%, threshold 5%)" in finding.message


def test_reask_rate_at_its_threshold_does_not_fire() -> None:
    exactly = dataclasses.replace(REASKED, invalid=5)  # 5 of 100 answered: 5 %
    assert only(recommend(make_report(by_model={"m": exactly})), "reask_rate") == []
    just_above = dataclasses.replace(REASKED, invalid=6)
    (finding,) = only(recommend(make_report(by_model={"m": just_above})), "reask_rate")
    assert finding.saving == nano(1 * Fraction(9, 94))  # 6 - 5 re-asks at (10 - 1) / 94 accepted answers


def test_reask_rate_needs_enough_answered_attempts() -> None:
    one_in_three = Usage(calls=2, attempts=3, cost=Decimal(1), invalid=1, waste_cost=Decimal("0.3"))
    # 30 attempts but only 15 answered (15 failed): 3 of 15 is 20 %, not judged.
    many_failed = Usage(calls=15, attempts=30, cost=Decimal(1), errors=15, invalid=3, waste_cost=Decimal("0.5"))
    report = make_report(totals=Usage(), by_model={"a": one_in_three, "b": many_failed})
    assert only(recommend(report), "reask_rate") == []
    assert [f.subject for f in only(recommend(report, ReportThresholds(min_attempts=15)), "reask_rate")] == [
        {"model": "b"}
    ]


def test_reask_rate_of_an_unpriced_model_fires_without_a_saving() -> None:
    unpriced = dataclasses.replace(REASKED, cost=Decimal(0), waste_cost=Decimal(0), unpriced_attempts=110)
    (finding,) = only(recommend(make_report(by_model={"llama3.1:8b": unpriced})), "reask_rate")
    assert finding.saving is None
    assert finding.value == 0.08


def test_reask_rate_of_an_unnamed_agent_says_so() -> None:
    (finding,) = only(recommend(make_report(totals=Usage(), by_agent={None: REASKED})), "reask_rate")
    assert finding.subject == {"agent": None}
    assert "answers of calls with no agent failed validation" in finding.message


# --------------------------------------------------------------------------------------------------
# agent_cost_share
# --------------------------------------------------------------------------------------------------

TEAM = Usage(calls=100, attempts=120, cost=Decimal(10))


def agents(**spend: tuple[int, str]) -> dict[str | None, Usage]:
    return {name: Usage(calls=calls, attempts=calls, cost=Decimal(cost)) for name, (calls, cost) in spend.items()}


def test_agent_cost_share_fires_for_an_agent_out_of_line_with_its_calls() -> None:
    report = make_report(totals=TEAM, by_agent=agents(researcher=(10, "4.5"), writer=(90, "5.5")))
    (finding,) = only(recommend(report), "agent_cost_share")
    assert finding.subject == {"agent": "researcher"}
    assert finding.metric == "cost_share_over_call_share"
    assert finding.value == pytest.approx(4.5)  # 45 % of the cost / 10 % of the calls
    assert finding.threshold == 2.0
    assert finding.saving == Decimal("2.5")  # 4.50 - 2 x 10 calls x $0.10, the average call
    assert "agent researcher spent 45.0% of the cost ($4.50 of $10.00) on 10.0% of the calls (10 of 100)" in (
        finding.message
    )
    assert "4.5x its share of calls (threshold 2x and 20% of the cost)" in finding.message


def test_agent_cost_share_needs_both_the_ratio_and_the_share_of_cost() -> None:
    # 3x its share of calls but 15 % of the cost; exactly 2x its share of calls with 40 % of the cost.
    report = make_report(totals=TEAM, by_agent=agents(critic=(5, "1.5"), planner=(20, "4"), writer=(75, "4.5")))
    assert only(recommend(report), "agent_cost_share") == []
    lower = ReportThresholds(agent_min_cost_share=0.15, agent_cost_ratio=1.9)
    assert sorted(f.subject["agent"] or "" for f in only(recommend(report, lower), "agent_cost_share")) == [
        "critic",
        "planner",
    ]


def test_agent_cost_share_needs_enough_calls() -> None:
    report = make_report(totals=dataclasses.replace(TEAM, calls=19), by_agent=agents(a=(2, "9"), b=(17, "1")))
    assert only(recommend(report), "agent_cost_share") == []
    assert only(recommend(report, ReportThresholds(agent_min_calls=19)), "agent_cost_share") != []


def test_an_agent_with_no_call_in_the_period_is_not_judged() -> None:
    # Only retries of calls that began before the period: no share of calls to compare with.
    report = make_report(totals=TEAM, by_agent={"late": Usage(calls=0, attempts=3, cost=Decimal(5))})
    assert only(recommend(report), "agent_cost_share") == []


# --------------------------------------------------------------------------------------------------
# prompt_growth
# --------------------------------------------------------------------------------------------------


def growing(first: int, last: int, calls: int = 10, model: str | None = "gpt-4o") -> SessionGrowth:
    return SessionGrowth(
        session="ticket-4711",
        model=model,
        calls=calls,
        first_prompt_tokens=first,
        last_prompt_tokens=last,
        prompt_tokens=(first + last) * calls // 2,
        cost=Decimal(1),
    )


def test_prompt_growth_fires_with_the_growth_and_the_tokens_above_the_cap_at_the_input_price() -> None:
    (finding,) = only(recommend(make_report(sessions=(growing(1000, 10000),))), "prompt_growth")
    assert finding.subject == {"session": "ticket-4711", "model": "gpt-4o"}
    assert (finding.metric, finding.value, finding.threshold) == ("prompt_growth", 10.0, 3.0)
    # Prompts 1,000, 2,000, ... 10,000; above the cap of 3 x 1,000: 1,000 + 2,000 + ... + 7,000 = 28,000
    # tokens, at gpt-4o's $2.50 per million input tokens.
    assert finding.saving == Decimal("0.07")
    assert "session ticket-4711 (gpt-4o): prompts grew 10.0x over 10 calls, from 1,000 to 10,000 tokens" in (
        finding.message
    )
    assert "(threshold 3x over at least 5 calls)" in finding.message


def test_prompt_growth_at_its_threshold_fires_with_nothing_above_the_cap() -> None:
    (finding,) = only(recommend(make_report(sessions=(growing(1000, 3000, calls=5),))), "prompt_growth")
    assert finding.value == 3.0
    assert finding.saving == Decimal(0)


def test_prompt_growth_below_its_threshold_or_over_too_few_calls_does_not_fire() -> None:
    sessions = (growing(1000, 2999), growing(1000, 10000, calls=4), growing(0, 5000))
    report = make_report(sessions=sessions)
    assert only(recommend(report), "prompt_growth") == []
    lower = ReportThresholds(prompt_growth=2.9, prompt_growth_min_calls=4)
    assert len(only(recommend(report, lower), "prompt_growth")) == 2  # not the session whose first prompt was empty


def test_prompt_growth_of_an_unpriced_model_fires_without_a_saving() -> None:
    sessions = (growing(1000, 8000, model="llama3.1:8b"), growing(1000, 8000, model=None))
    findings = only(recommend(make_report(sessions=sessions)), "prompt_growth")
    assert [f.saving for f in findings] == [None, None]
    assert "session ticket-4711: prompts grew 8.0x" in findings[1].message


@settings(max_examples=200, deadline=None)
@given(
    calls=st.integers(min_value=5, max_value=300),
    first=st.integers(min_value=1, max_value=5000),
    growth=st.fractions(min_value=3, max_value=40),
    cap=st.sampled_from([3, 3.5, 4, 7.25]),
)
def test_prompt_growth_saving_is_the_sum_over_the_calls(calls: int, first: int, growth: Fraction, cap: float) -> None:
    last = math.ceil(first * growth)
    if Fraction(last, first) < Fraction(str(cap)):
        return
    thresholds = ReportThresholds(prompt_growth=cap)
    findings = recommend(make_report(sessions=(growing(first, last, calls, model="flat"),)), thresholds, ROUND_PRICES)
    # The oracle: each call's prompt on the line from first to last, what exceeds the cap, call by call.
    limit = Fraction(str(cap)) * first
    above = sum(
        (max(Fraction(0), first + Fraction((last - first) * i, calls - 1) - limit) for i in range(calls)), Fraction(0)
    )
    assert findings[0].saving == nano(above * Fraction(1000, 10**6))  # flat: $1,000 per million input tokens


# --------------------------------------------------------------------------------------------------
# cache_unused
# --------------------------------------------------------------------------------------------------

# 100 attempts of 3,000 prompt tokens on average, 1,000 of the 300,000 read from the prompt cache.
UNCACHED = Usage(calls=100, attempts=100, prompt_tokens=300_000, cached_tokens=1_000, cost=Decimal("1"))


def test_cache_unused_fires_for_a_model_with_a_cheaper_cache_read() -> None:
    (finding,) = only(recommend(make_report(by_model={"gpt-4o": UNCACHED})), "cache_unused")
    assert finding.subject == {"model": "gpt-4o"}
    assert finding.metric == "cached_token_rate"
    assert finding.value == pytest.approx(1 / 300)
    assert finding.threshold == 0.05
    # Half of the 299,000 uncached tokens at $2.50 - $1.25 per million.
    assert finding.saving == nano(Fraction(299_000, 2) * Fraction("1.25") / 10**6) == Decimal("0.186875")
    assert "gpt-4o: prompts average 3,000 tokens but 0.3% of the prompt tokens were read from the provider's" in (
        finding.message
    )
    assert "(threshold 5%), though cache reads cost 50.0% less" in finding.message


def test_cache_unused_saving_follows_the_reusable_fraction_and_the_given_prices() -> None:
    thresholds = ReportThresholds(cache_reusable_fraction=1)
    (finding,) = only(recommend(make_report(by_model={"cachey": UNCACHED}), thresholds, ROUND_PRICES), "cache_unused")
    assert finding.saving == Decimal("0.897")  # 299,000 tokens x ($4 - $1) per million
    assert "cache reads cost 75.0% less" in finding.message


def test_cache_unused_does_not_fire_at_its_rate_or_with_short_prompts() -> None:
    at_rate = dataclasses.replace(UNCACHED, cached_tokens=15_000)  # exactly 5 %
    short = dataclasses.replace(UNCACHED, prompt_tokens=102_300, cached_tokens=0)  # 1,023 tokens on average
    few = dataclasses.replace(UNCACHED, calls=19, attempts=19, prompt_tokens=57_000)
    for usage in (at_rate, short, few):
        assert only(recommend(make_report(by_model={"gpt-4o": usage})), "cache_unused") == []
    just_long_enough = dataclasses.replace(short, prompt_tokens=102_400)
    assert only(recommend(make_report(by_model={"gpt-4o": just_long_enough})), "cache_unused") != []


def test_cache_unused_needs_a_cheaper_cache_read_price() -> None:
    # gpt-4 has no cache-read price; llama3.1:8b and an unnamed model have no price at all.
    report = make_report(totals=Usage(), by_model={"gpt-4": UNCACHED, "llama3.1:8b": UNCACHED, None: UNCACHED})
    assert only(recommend(report), "cache_unused") == []


# --------------------------------------------------------------------------------------------------
# unpriced_models
# --------------------------------------------------------------------------------------------------


def test_unpriced_models_fires_for_any_unpriced_attempt_with_the_count_and_share() -> None:
    report = make_report(
        totals=Usage(calls=180, attempts=200, unpriced_attempts=12, cost=Decimal(3)),
        by_model={
            "gpt-4o": Usage(calls=170, attempts=188, cost=Decimal(3)),
            "llama3.1:8b": Usage(calls=10, attempts=11, unpriced_attempts=11),
            "my-model": Usage(calls=1, attempts=1, unpriced_attempts=1),
        },
        unpriced_models=("llama3.1:8b", "my-model"),
    )
    (finding,) = only(recommend(report), "unpriced_models")
    assert finding.subject == {"models": "llama3.1:8b, my-model"}
    assert (finding.metric, finding.value, finding.threshold, finding.saving) == (
        "unpriced_attempt_share",
        0.06,
        0.0,
        None,
    )
    assert finding.message.startswith(
        "12 attempts (6.0% of 200) have no price (llama3.1:8b: 11, my-model: 1), "
        "so the cost leaves them out (threshold: any)"
    )


def test_unpriced_models_does_not_fire_without_unpriced_attempts_or_below_its_share() -> None:
    assert only(recommend(make_report(totals=Usage(calls=5, attempts=5, cost=Decimal(1)))), "unpriced_models") == []
    some = make_report(totals=Usage(calls=100, attempts=100, unpriced_attempts=6), unpriced_models=("x",))
    assert only(recommend(some, ReportThresholds(unpriced_share=0.06)), "unpriced_models") == []
    (finding,) = only(recommend(some, ReportThresholds(unpriced_share=0.05)), "unpriced_models")
    assert "(x), so the cost leaves them out (threshold 5%)" in finding.message


# --------------------------------------------------------------------------------------------------
# All together
# --------------------------------------------------------------------------------------------------


def test_findings_come_largest_saving_first_and_unpriced_last() -> None:
    gpt4o = dataclasses.replace(
        GPT4O, invalid=10, prompt_tokens=300_000, cached_tokens=1_000, unpriced_attempts=0
    )  # retry waste 0.352; re-asks 10 of 80: (10 - 4) x 7.568 / 70; cache 0.186875
    report = make_report(
        totals=dataclasses.replace(gpt4o, attempts=103, unpriced_attempts=3),
        by_model={"gpt-4o": gpt4o},
        by_agent={"writer": Usage(calls=80, attempts=100, cost=Decimal("8.80"))},
        sessions=(growing(1000, 10000), growing(1000, 5000, model="llama3.1:8b")),
        unpriced_models=("llama3.1:8b",),
    )
    findings = recommend(report)
    assert [(f.code, f.saving) for f in findings] == [
        ("reask_rate", nano(6 * Fraction("7.568") / 70)),
        ("retry_waste", Decimal("0.352")),
        ("cache_unused", Decimal("0.186875")),
        ("prompt_growth", Decimal("0.07")),
        ("prompt_growth", None),
        ("unpriced_models", None),
    ]
    # Every finding carries its figure in its message and survives the report's JSON form.
    for finding in findings:
        assert any(char.isdigit() for char in finding.message)
        assert finding.to_dict()["saving_usd"] == (None if finding.saving is None else str(finding.saving))
