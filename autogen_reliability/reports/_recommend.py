"""Recommendations: what a report's numbers say to change, each with its figure and an estimated saving.

:func:`recommend` reads a :class:`~autogen_reliability.reports.UsageReport` (numbers the store already
aggregated in SQL) and applies six rules, each a pure function of those numbers. A rule fires only on a
figure past its threshold (a field of :class:`ReportThresholds`), and its finding carries that figure,
the threshold and the USD it would save (the defaults here):

- ``retry_waste`` (reads ``by_model``): waste cost / the model's cost above 10 %, with at least 20
  attempts. Saving: the waste above the threshold's share of the model's cost.
- ``reask_rate`` (``by_model``, ``by_agent``): invalid / answered attempts above 5 %, with at least 20
  answered. Saving: the re-asks above the threshold's rate, each at the group's average cost of an answer.
- ``agent_cost_share`` (``by_agent``, ``totals``): an agent's share of the cost above 2 x its share of
  the calls and at least 20 % of the cost, in a report of at least 20 calls. Saving: its cost above
  2 x the report's average cost of a call, for each of its calls.
- ``prompt_growth`` (``session_growth``): last / first prompt tokens of a session at least 3, over at
  least 5 calls. Saving: the prompt tokens above 3 x the first prompt (prompts taken to grow linearly),
  at the model's input price.
- ``cache_unused`` (``by_model`` and prices): a model whose cache reads are cheaper, whose prompts
  average at least 1,024 tokens, with less than 5 % of its prompt tokens read from the cache. Saving:
  half its uncached prompt tokens at the difference between the input and the cache-read price.
- ``unpriced_models`` (``totals``, ``by_model``): any unpriced attempt. No saving: it cannot be priced.

Savings are estimates of what acting on a finding would have saved over the report's period; findings
can overlap (a model's re-asks are also waste, and its agents' re-asks), so their savings are not to be
summed. Money stays :class:`~decimal.Decimal`: thresholds enter the arithmetic as the decimals they are
written as (``0.1`` is one tenth), and each saving is rounded once, half-even, to nano-USD, the
ledger's unit. Prices (for ``prompt_growth`` and ``cache_unused``) come from a
:class:`~autogen_reliability.accounting.PricingTable` at the report's ``generated_at``: what the same
tokens cost at the prices of the day the report was made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fractions import Fraction
from typing import Final

from .._errors import ConfigurationError, is_finite, shown_number
from ..accounting import PricingTable, TokenUsage
from ._format import rate_text
from ._model import Group, Recommendation, SessionGrowth, Usage, UsageReport, nanousd_to_usd

__all__ = ["ReportThresholds", "recommend"]

_NANO_USD: Final = Decimal("0.000000001")
# Enough digits that a saving is exact until its one rounding to nano-USD (the pricing table works at 50 too).
_CONTEXT: Final = Context(prec=50, rounding=ROUND_HALF_EVEN)

_FRACTIONS: Final = ("retry_waste_share", "reask_rate", "agent_min_cost_share", "cached_token_rate", "unpriced_share")


@dataclass(frozen=True, slots=True)
class ReportThresholds:
    """When a report's numbers make a recommendation. Validated at construction.

    A rate is judged only on enough data (``min_attempts``, ``agent_min_calls``,
    ``prompt_growth_min_calls``): one re-ask in three answers says little.

    Args:
        retry_waste_share: ``retry_waste`` fires for a model whose waste (failed, re-asked and
            abandoned attempts) costs more than this share of the model's cost.
        reask_rate: ``reask_rate`` fires for a model or an agent whose answers failed validation
            more often than this (invalid / answered attempts).
        min_attempts: The attempts of a model (answered attempts, for a re-ask rate) below which
            ``retry_waste``, ``reask_rate`` and ``cache_unused`` do not judge it.
        agent_cost_ratio: ``agent_cost_share`` fires for an agent whose share of the cost is more
            than this many times its share of the calls...
        agent_min_cost_share: ...and at least this share of the cost.
        agent_min_calls: The report's calls below which ``agent_cost_share`` judges no agent.
        prompt_growth: ``prompt_growth`` fires for a session whose last prompt is at least this
            many times its first...
        prompt_growth_min_calls: ...over at least this many calls.
        cache_min_prompt_tokens: ``cache_unused`` looks at models whose prompts average at least
            this many tokens (OpenAI caches prompts from 1,024 tokens)...
        cached_token_rate: ...and fires when less than this share of their prompt tokens were
            read from the provider's prompt cache, though the model's cache reads are cheaper.
        cache_reusable_fraction: The share of the uncached prompt tokens ``cache_unused`` assumes
            a cache could serve, for its saving.
        unpriced_share: ``unpriced_models`` fires when more than this share of the attempts has
            no price (0: any unpriced attempt).

    Raises:
        ConfigurationError: A value is of the wrong type or out of its range (the message says which).

    Example:
        >>> from autogen_reliability.reports import ReportThresholds
        >>> ReportThresholds(reask_rate=0.02, min_attempts=50).reask_rate
        0.02
    """

    retry_waste_share: float = 0.10
    reask_rate: float = 0.05
    min_attempts: int = 20
    agent_cost_ratio: float = 2.0
    agent_min_cost_share: float = 0.20
    agent_min_calls: int = 20
    prompt_growth: float = 3.0
    prompt_growth_min_calls: int = 5
    cache_min_prompt_tokens: int = 1024
    cached_token_rate: float = 0.05
    cache_reusable_fraction: float = 0.5
    unpriced_share: float = 0.0

    def __post_init__(self) -> None:
        for name in _FRACTIONS:
            _number(self, name, low=0, high=1, rule="between 0 and 1")
        _number(self, "agent_cost_ratio", low=1, rule=">= 1 (a share of cost at least the share of calls)")
        _number(self, "prompt_growth", low=1, low_open=True, rule="> 1 (a prompt that grows)")
        _number(self, "cache_reusable_fraction", low=0, low_open=True, high=1, rule="> 0 and <= 1")
        _count(self, "min_attempts", 1)
        _count(self, "agent_min_calls", 1)
        _count(self, "prompt_growth_min_calls", 2)  # a first and a last call
        _count(self, "cache_min_prompt_tokens", 0)

    def to_dict(self) -> dict[str, float | int]:
        """The thresholds by name (for a report's JSON or a log line)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def _number(
    thresholds: ReportThresholds,
    name: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    rule: str,
) -> None:
    value = getattr(thresholds, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"ReportThresholds.{name} must be a number, got {type(value).__name__}")
    if not is_finite(value) or value < low or (low_open and value == low) or value > high:
        raise ConfigurationError(f"ReportThresholds.{name} must be {rule}, got {shown_number(value)}")
    object.__setattr__(thresholds, name, float(value))


def _count(thresholds: ReportThresholds, name: str, low: int) -> None:
    value = getattr(thresholds, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"ReportThresholds.{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ConfigurationError(f"ReportThresholds.{name} must be >= {low}, got {value!r}")


def recommend(
    report: UsageReport,
    thresholds: ReportThresholds | None = None,
    pricing: PricingTable | None = None,
) -> tuple[Recommendation, ...]:
    """The findings of ``report``: what to change, the figure that says so, what it would save.

    Rules, figures and savings (docs/reports.md has them with examples):

    - ``retry_waste`` (per model): waste cost / the model's cost, above ``retry_waste_share``.
      Saving: the waste above that share of the model's cost (what bringing it back to the
      threshold saves; some failures are the price of calling a network service).
    - ``reask_rate`` (per model, then per agent): invalid / answered attempts, above ``reask_rate``.
      Saving: the re-asks above that rate, each at the group's average cost of an accepted answer
      ((cost - waste cost) / ``ok`` attempts).
    - ``agent_cost_share`` (per agent): its share of the cost / its share of the calls, above
      ``agent_cost_ratio``, with at least ``agent_min_cost_share`` of the cost. Saving: its cost above
      ``agent_cost_ratio`` times the report's average cost of a call, for each of its calls.
    - ``prompt_growth`` (per session of ``session_growth``): last / first prompt tokens, at least
      ``prompt_growth``. Saving: the prompt tokens above ``prompt_growth`` times the first prompt,
      assuming the prompts grew linearly from the first call to the last, at the model's input
      price for a prompt of the last one's size.
    - ``cache_unused`` (per model): the share of prompt tokens read from the prompt cache, below
      ``cached_token_rate``, for a model whose prompts average ``cache_min_prompt_tokens`` or more
      and whose price has a cheaper cache read. Saving: ``cache_reusable_fraction`` of its uncached
      prompt tokens, at the difference between the input and the cache-read price for a prompt of
      the average size (cache-write surcharges, Anthropic's, are not counted).
    - ``unpriced_models``: the share of attempts with no price, above ``unpriced_share``; its
      figure names the count and the models. No saving: they cannot be priced.

    Args:
        report: The aggregated numbers (``UsageStore.report`` makes it).
        thresholds: When a rule fires; ``None``: :class:`ReportThresholds`' defaults.
        pricing: The prices of ``prompt_growth`` and ``cache_unused``, at ``report.generated_at``;
            ``None``: a :class:`~autogen_reliability.accounting.PricingTable` without overrides,
            made only if a rule needs a price. Pass the table your ledger was priced with if it
            has overrides.

    Returns:
        The findings, largest estimated saving first, those with no saving last.

    Raises:
        ConfigurationError: ``thresholds`` is not a :class:`ReportThresholds`.

    Example:
        >>> from datetime import UTC, datetime
        >>> from decimal import Decimal
        >>> from autogen_reliability.reports import Group, ReportFilters, Usage, UsageReport, recommend
        >>> usage = Usage(calls=80, attempts=100, cost=Decimal("8.80"), errors=20, waste_cost=Decimal("1.232"))
        >>> report = UsageReport(
        ...     filters=ReportFilters(), generated_at=datetime(2025, 6, 1, tzinfo=UTC), group_by=("model",),
        ...     totals=usage, by_model=(Group({"model": "gpt-4o"}, usage),),
        ... )
        >>> (finding,) = recommend(report)
        >>> finding.message
        'failed, re-asked and abandoned attempts on gpt-4o cost $1.23, 14.0% of its $8.80 (threshold 10%): ...'
        >>> finding.saving  # 1.232 - 10 % of 8.80
        Decimal('0.352')
    """
    if thresholds is None:
        thresholds = ReportThresholds()
    elif not isinstance(thresholds, ReportThresholds):
        raise ConfigurationError(f"thresholds must be a ReportThresholds, got {type(thresholds).__name__}")
    prices = _Prices(pricing, report)
    rules: tuple[Callable[[UsageReport, ReportThresholds, _Prices], Iterator[Recommendation]], ...] = (
        _retry_waste,
        _reask_rate,
        _agent_cost_share,
        _prompt_growth,
        _cache_unused,
        _unpriced_models,
    )
    # One context for all the arithmetic: the rules are generators, and a context entered inside one
    # would leak to the caller at each yield.
    with localcontext(_CONTEXT):
        findings = [finding for rule in rules for finding in rule(report, thresholds, prices)]
    # Stable: equal savings keep the rules' order, then the report's (by cost, highest first).
    return tuple(sorted(findings, key=lambda finding: (finding.saving is None, -(finding.saving or 0))))


# --------------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------------


def _retry_waste(report: UsageReport, limits: ReportThresholds, _prices: _Prices) -> Iterator[Recommendation]:
    threshold = _decimal(limits.retry_waste_share)
    for group in report.by_model:
        usage = group.usage
        if usage.attempts < limits.min_attempts or usage.cost <= 0 or usage.waste_cost <= threshold * usage.cost:
            continue
        share = usage.waste_cost / usage.cost
        yield Recommendation(
            code="retry_waste",
            subject=dict(group.key),
            message=(
                f"failed, re-asked and abandoned attempts on {_model(group)} cost {_usd(usage.waste_cost)}, "
                f"{_percent(share)} of its {_usd(usage.cost)} (threshold {_percent_threshold(threshold)}): "
                "break the waste down by error_kind and outcome to see what to fix"
            ),
            metric="retry_waste_share",
            value=float(share),
            threshold=limits.retry_waste_share,
            saving=_nano(usage.waste_cost - threshold * usage.cost),
        )


def _reask_rate(report: UsageReport, limits: ReportThresholds, _prices: _Prices) -> Iterator[Recommendation]:
    threshold = _decimal(limits.reask_rate)
    for column, groups in (("model", report.by_model), ("agent", report.by_agent)):
        for group in groups:
            usage = group.usage
            answered = usage.attempts - usage.errors - usage.cancelled
            if answered < limits.min_attempts or usage.invalid <= threshold * answered:
                continue
            rate = Fraction(usage.invalid, answered)
            answer_cost = _answer_cost(usage)
            excess = usage.invalid - threshold * answered  # re-asks above what the threshold tolerates
            who = _model(group) if column == "model" else _agent(group)
            yield Recommendation(
                code="reask_rate",
                subject=dict(group.key),
                message=(
                    f"{usage.invalid:,} of {answered:,} answers of {who} failed validation "
                    f"({_percent(rate)}, threshold {_percent_threshold(threshold)}): the schema or the prompt "
                    "asks for something the model does not give; make the instructions match the schema"
                ),
                metric="reask_rate",
                value=float(rate),
                threshold=limits.reask_rate,
                saving=None if answer_cost is None else _nano(excess * answer_cost),
            )


def _answer_cost(usage: Usage) -> Decimal | None:
    """What one answer of ``usage`` costs on average: an accepted one, else any priced attempt; None if unpriced."""
    accepted = usage.attempts - usage.errors - usage.invalid - usage.cancelled
    if accepted > 0 and usage.cost > usage.waste_cost:
        return (usage.cost - usage.waste_cost) / accepted
    priced = usage.attempts - usage.unpriced_attempts
    if priced > 0 and usage.cost > 0:
        return usage.cost / priced
    return None


def _agent_cost_share(report: UsageReport, limits: ReportThresholds, _prices: _Prices) -> Iterator[Recommendation]:
    totals = report.totals
    if totals.calls < limits.agent_min_calls or totals.cost <= 0:
        return
    ratio = _decimal(limits.agent_cost_ratio)
    min_share = _decimal(limits.agent_min_cost_share)
    for group in report.by_agent:
        usage = group.usage
        if usage.calls <= 0:  # only retries of calls that began before the period: no share of calls to compare
            continue
        cost_share = Fraction(usage.cost) / Fraction(totals.cost)
        call_share = Fraction(usage.calls, totals.calls)
        if cost_share <= Fraction(ratio) * call_share or usage.cost < min_share * totals.cost:
            continue
        value = cost_share / call_share
        allowed = ratio * usage.calls * totals.cost / totals.calls  # ratio x the average cost of a call, per call
        yield Recommendation(
            code="agent_cost_share",
            subject=dict(group.key),
            message=(
                f"{_agent(group)} spent {_percent(cost_share)} of the cost ({_usd(usage.cost)} of "
                f"{_usd(totals.cost)}) on {_percent(call_share)} of the calls ({usage.calls:,} of {totals.calls:,}), "
                f"{float(value):.1f}x its share of calls (threshold {limits.agent_cost_ratio:g}x and "
                f"{_percent_threshold(min_share)} of the cost): look at its model and at the context it sends"
            ),
            metric="cost_share_over_call_share",
            value=float(value),
            threshold=limits.agent_cost_ratio,
            saving=_nano(usage.cost - allowed),
        )


def _prompt_growth(report: UsageReport, limits: ReportThresholds, prices: _Prices) -> Iterator[Recommendation]:
    threshold = Fraction(_decimal(limits.prompt_growth))
    for session in report.session_growth:
        first, last = session.first_prompt_tokens, session.last_prompt_tokens
        if session.calls < limits.prompt_growth_min_calls or first <= 0 or Fraction(last, first) < threshold:
            continue
        growth = Fraction(last, first)
        excess = _tokens_above(session, threshold * first)
        saving = None
        rate = prices.input_price(session.model, None, last) if session.model is not None else None
        if rate is not None:
            total, tokens = rate
            saving = _nano(total * excess.numerator / (tokens * excess.denominator))
        model = "" if session.model is None else f" ({session.model})"
        yield Recommendation(
            code="prompt_growth",
            subject={"session": session.session, "model": session.model},
            message=(
                f"session {session.session}{model}: prompts grew {float(growth):.1f}x over {session.calls:,} calls, "
                f"from {first:,} to {last:,} tokens (threshold {limits.prompt_growth:g}x over at least "
                f"{limits.prompt_growth_min_calls} calls): the context is never trimmed; drop or summarise old turns"
            ),
            metric="prompt_growth",
            value=float(growth),
            threshold=limits.prompt_growth,
            saving=saving,
        )


def _tokens_above(session: SessionGrowth, cap: Fraction) -> Fraction:
    """Prompt tokens above ``cap``, if the session's prompts grew linearly from its first call to its last.

    The prompt of call ``i`` (0 to n - 1) is ``first + (last - first) * i / (n - 1)``; the sum of what
    exceeds ``cap`` is a sum over an arithmetic run of calls, in closed form (a session may have many calls).
    """
    n = session.calls
    first, last = session.first_prompt_tokens, session.last_prompt_tokens
    if last <= cap:
        return Fraction(0)
    step = Fraction(last - first, n - 1)
    start = math.floor((cap - first) / step) + 1  # the first call above the cap
    count = n - start
    return count * (first - cap) + step * Fraction((start + n - 1) * count, 2)


def _cache_unused(report: UsageReport, limits: ReportThresholds, prices: _Prices) -> Iterator[Recommendation]:
    threshold = _decimal(limits.cached_token_rate)
    fraction = _decimal(limits.cache_reusable_fraction)
    for group in report.by_model:
        usage = group.usage
        model = group.key.get("model")
        if (
            model is None
            or usage.attempts < limits.min_attempts
            or usage.prompt_tokens < limits.cache_min_prompt_tokens * usage.attempts
            or usage.prompt_tokens <= 0
            or usage.cached_tokens >= threshold * usage.prompt_tokens
        ):
            continue
        average = usage.prompt_tokens // usage.attempts
        discount = prices.cache_discount(model, group.key.get("provider"), average)
        if discount is None:  # no price, or no cheaper cache read: a cache would not save money
            continue
        full, cheaper = discount
        rate = Fraction(usage.cached_tokens, usage.prompt_tokens)
        saving = _nano(fraction * (usage.prompt_tokens - usage.cached_tokens) * (full - cheaper) / average)
        off = (full - cheaper) / full
        yield Recommendation(
            code="cache_unused",
            subject=dict(group.key),
            message=(
                f"{_model(group)}: prompts average {average:,} tokens but {_percent(rate)} of the prompt tokens were "
                f"read from the provider's prompt cache (threshold {_percent_threshold(threshold)}), though cache "
                f"reads cost {_percent(off)} less: put the stable part of the prompt (system message, tools, "
                "documents) first and keep it unchanged between calls"
            ),
            metric="cached_token_rate",
            value=float(rate),
            threshold=limits.cached_token_rate,
            saving=saving,
        )


def _unpriced_models(report: UsageReport, limits: ReportThresholds, _prices: _Prices) -> Iterator[Recommendation]:
    totals = report.totals
    unpriced = totals.unpriced_attempts
    if unpriced <= 0 or totals.attempts <= 0 or unpriced <= _decimal(limits.unpriced_share) * totals.attempts:
        return
    share = Fraction(unpriced, totals.attempts)
    counts = {group.key.get("model"): group.usage.unpriced_attempts for group in report.by_model}
    names = report.unpriced_models or tuple(sorted(str(model) for model, count in counts.items() if count))
    listed = ", ".join(f"{name}: {counts[name]:,}" if counts.get(name) else name for name in names)
    threshold = ": any" if limits.unpriced_share == 0 else " " + _percent_threshold(_decimal(limits.unpriced_share))
    yield Recommendation(
        code="unpriced_models",
        subject={"models": ", ".join(names) or None},
        message=(
            f"{unpriced:,} attempts ({_percent(share)} of {totals.attempts:,}) have no price"
            f"{f' ({listed})' if listed else ''}, so the cost leaves them out (threshold{threshold}): "
            "give their models a price override (docs/accounting.md)"
        ),
        metric="unpriced_attempt_share",
        value=float(share),
        threshold=limits.unpriced_share,
        saving=None,
    )


# --------------------------------------------------------------------------------------------------
# Prices
# --------------------------------------------------------------------------------------------------


class _Prices:
    """The pricing table at the report's date; the default one is made only if a rule needs a price."""

    def __init__(self, table: PricingTable | None, report: UsageReport) -> None:
        self._table = table
        self._at = report.generated_at

    def _price(self, model: str, provider: str | None, usage: TokenUsage) -> Decimal | None:
        if self._table is None:
            self._table = PricingTable()
        cost = self._table.price(model, provider, usage=usage, at=self._at)
        return None if cost is None else cost.usd

    def input_price(self, model: str, provider: str | None, tokens: int) -> tuple[Decimal, int] | None:
        """USD of a prompt of ``tokens`` uncached tokens (the tier of that size), and ``tokens``."""
        if tokens <= 0:
            return None
        usd = self._price(model, provider, TokenUsage(prompt_tokens=tokens, completion_tokens=0))
        return None if usd is None or usd <= 0 else (usd, tokens)

    def cache_discount(self, model: str, provider: str | None, tokens: int) -> tuple[Decimal, Decimal] | None:
        """USD of a prompt of ``tokens``, uncached then all read from the cache; None unless the cache is cheaper."""
        if tokens <= 0:
            return None
        full = self._price(model, provider, TokenUsage(prompt_tokens=tokens, completion_tokens=0))
        all_cached = TokenUsage(prompt_tokens=tokens, completion_tokens=0, cached_tokens=tokens)
        cached = self._price(model, provider, all_cached)
        if full is None or cached is None or cached >= full:
            return None
        return full, cached


# --------------------------------------------------------------------------------------------------
# Numbers as a reader sees them
# --------------------------------------------------------------------------------------------------


def _decimal(value: float) -> Decimal:
    """A threshold as the decimal it is written as: 0.1 is one tenth, not the binary float nearest it."""
    return Decimal(repr(value))


def _nano(usd: Decimal) -> Decimal:
    """Rounded once, half-even, to nano-USD; written as the report writes costs (``0.352``, not ``0.352000000``)."""
    return nanousd_to_usd(int((usd / _NANO_USD).to_integral_value(rounding=ROUND_HALF_EVEN)))


def _usd(usd: Decimal) -> str:
    """Cents from one cent up; below it, two significant digits (so $0.0042 does not read as $0.00)."""
    if usd == 0 or abs(usd) >= Decimal("0.01"):
        return f"${usd.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):,}"
    return f"${usd.quantize(Decimal(1).scaleb(usd.adjusted() - 1), rounding=ROUND_HALF_EVEN):f}"


def _percent(share: Decimal | Fraction) -> str:
    return rate_text(float(share))  # as the report's tables show a rate: never a false 0.0% or 100.0%


def _percent_threshold(threshold: Decimal) -> str:
    return f"{(threshold * 100).normalize():f}%"


def _model(group: Group) -> str:
    model = group.key.get("model")
    return "calls with no model" if model is None else model


def _agent(group: Group) -> str:
    agent = group.key.get("agent")
    return "calls with no agent" if agent is None else f"agent {agent}"
