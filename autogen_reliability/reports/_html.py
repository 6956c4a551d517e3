"""A report as one self-contained HTML page: summary cards, charts, the breakdown, the findings.

The page makes no request of any kind (no stylesheet, font, image or script
from anywhere: CSS inline, charts inline SVG, no JavaScript), so it can be
mailed, attached to a ticket or opened offline. It is rendered by Jinja2 with
autoescaping on, from ``templates/report.html.j2`` shipped inside the package:
agent names, models, tags, sessions and findings come from users and models, and
none of them may become markup. The charts are :mod:`._svg`'s, already escaped.
``jinja2`` is imported here, when a page is rendered, not with the package.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from ._format import (
    NONE_LABEL,
    column_title,
    cost_cell,
    count_text,
    filters_lines,
    generated_text,
    latency_text,
    metric_text,
    period_text,
    plain_text,
    rate_text,
    report_title,
    session_numbers,
    subject_text,
    tokens_compact,
    usd_column,
    usd_compact,
    usd_text,
    waste_cell,
    waste_figure,
)

if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

    from ._view import DailyCostView, GroupView, ReportView, UsageView

__all__ = ["render_html"]

TEMPLATE: Final = "templates/report.html.j2"
TOP_MODELS: Final = 7  # in the daily chart, with "other" as the eighth series
TOP_BARS: Final = 12  # bars of the agent and model charts, the rest as one "other" bar
MAX_DAYS: Final = 366  # a longer period shows only the days that have usage, not a year of empty columns
# Drawn at the size the page gives them at its widest (1200 px), so text is 12 px there; narrower, they shrink.
WIDE_CHART: Final = 1100
HALF_CHART: Final = 520
NOWRAP_CHARS: Final = 32
LONG_CARD_VALUE: Final = 10  # characters that fit a card's 22 px value, six cards to a row
NANO_USD: Final = 1e-9  # the ledger's unit of money: no axis ticks between two amounts it can hold


@functools.cache
def _template() -> jinja2.Template:
    import jinja2  # noqa: PLC0415 - jinja2 loads when a page is rendered

    source = resources.files("autogen_reliability.reports").joinpath(TEMPLATE).read_text(encoding="utf-8")
    environment = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return environment.from_string(source)


@dataclass(frozen=True, slots=True)
class _Card:
    label: str
    value: str
    detail: str
    tone: str = ""  # "warn" when the number asks for attention

    @property
    def long(self) -> bool:
        """Too long for the card's large type (exact money has up to nine decimals)."""
        return len(self.value) > LONG_CARD_VALUE


def _share(part: Decimal, whole: Decimal) -> float | None:
    return float(part / whole) if whole else None


def _cards(report: ReportView) -> list[_Card]:
    totals = report.totals
    per_call = f"{totals.attempts / totals.calls:.2f} per call" if totals.calls else "no logical call"
    unpriced = (
        ", ".join(plain_text(model) for model in report.unpriced_models)
        if report.unpriced_models
        else "every attempt has a price"
    )
    waste, waste_share = waste_figure(report)
    waste_tokens = f"{count_text(totals.waste_tokens)} tokens"
    return [
        _Card(
            "Cost",
            cost_cell(usd_text(totals.cost), totals.attempts, totals.unpriced_attempts),
            f"{count_text(totals.unpriced_attempts)} unpriced attempts not included"
            if totals.unpriced_attempts
            else "every attempt priced",
        ),
        _Card("Calls", count_text(totals.calls), "logical calls"),
        _Card("Attempts", count_text(totals.attempts), per_call),
        _Card(
            "Tokens",
            count_text(totals.tokens),
            f"prompt {count_text(totals.prompt_tokens)} · completion {count_text(totals.completion_tokens)} · "
            f"cached {count_text(totals.cached_tokens)} · cache writes {count_text(totals.cache_write_tokens)} · "
            f"reasoning {count_text(totals.reasoning_tokens)}",
        ),
        _Card("Error rate", rate_text(totals.error_rate), f"{count_text(totals.errors)} failed attempts"),
        _Card(
            "Retry rate",
            rate_text(totals.retry_rate),
            f"{count_text(totals.retried_calls)} calls needed another attempt",
        ),
        _Card("Re-ask rate", rate_text(totals.reask_rate), f"{count_text(totals.invalid)} answers failed validation"),
        _Card(
            "Cache-hit rate",
            rate_text(totals.cache_hit_rate),
            f"{count_text(totals.cache_hits)} attempts from cache; "
            f"{rate_text(totals.cached_token_rate)} of prompt tokens cached",
        ),
        _Card(
            "Waste",
            waste,
            waste_tokens if waste_share is None else f"{waste_share} of cost · {waste_tokens}",
            "warn" if totals.waste_cost or waste_share is None else "",
        ),
        _Card(
            "Unpriced attempts",
            count_text(totals.unpriced_attempts),
            unpriced,
            "warn" if totals.unpriced_attempts else "",
        ),
        _saving_card(report),
        _Card(
            "Latency",
            f"{latency_text(totals.latency_p50_ms)}",
            f"p50; p95 {latency_text(totals.latency_p95_ms)}",
        ),
    ]


def _saving_card(report: ReportView) -> _Card:
    findings = report.recommendations
    savings = [finding.saving for finding in findings if finding.saving is not None]
    missing = len(findings) - len(savings)
    if not findings:
        return _Card("Possible saving", usd_text(Decimal(0)), "no recommendation")
    if not savings:  # unpriced models, say: nothing is estimated, which is no saving of $0.00
        return _Card(
            "Possible saving",
            "not estimated",
            f"{count_text(missing)} finding{'' if missing == 1 else 's'}, with no estimate",
        )
    # Findings can overlap (a model's retries and its agent's share), so the sum is an upper bound.
    detail = (
        "at most: the estimate of 1 finding"
        if len(savings) == 1
        else f"at most: the sum of {count_text(len(savings))} findings' estimates"
    )
    if missing:
        detail += f" ({count_text(missing)} more {'has' if missing == 1 else 'have'} none)"
    return _Card("Possible saving", usd_text(sum(savings, Decimal(0))), detail)


def _model_label(model: str | None) -> str:
    return plain_text(model) if model is not None else NONE_LABEL


def _days(report: ReportView) -> list[date]:
    """Every day of the period, so a day without usage shows as a gap (only the days with usage past a year)."""
    present = sorted({line.day for line in report.daily})
    if not present:
        return []
    first, last = present[0], present[-1]
    filters = report.filters
    if filters.since is not None:
        first = min(first, filters.since.astimezone(UTC).date())
    if filters.until is not None:
        last = max(last, (filters.until - timedelta(microseconds=1)).astimezone(UTC).date())
    elif filters.since is not None:
        last = max(last, report.generated_at.astimezone(UTC).date())
    if (last - first).days >= MAX_DAYS:
        return present
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def _daily(report: ReportView) -> dict[str, Any]:
    from ._svg import Column, column_chart  # noqa: PLC0415

    days = _days(report)
    cost: dict[str | None, Decimal] = defaultdict(Decimal)
    for line in report.daily:
        cost[line.model] += line.cost
    # A model with no priced attempt has nothing to stack; the page names it under the chart instead.
    ranked = sorted((model for model in cost if cost[model] > 0), key=lambda model: (-cost[model], _model_label(model)))
    unpriced_by_model: dict[str | None, int] = defaultdict(int)
    for line in report.daily:
        unpriced_by_model[line.model] += line.unpriced_attempts
    left_out = [
        f"{_model_label(model)} ({count_text(unpriced_by_model[model])} attempts)"
        for model in sorted(cost, key=_model_label)
        if cost[model] == 0 and unpriced_by_model[model]
    ]
    shown = ranked if len(ranked) <= TOP_MODELS + 1 else ranked[:TOP_MODELS]
    folded = ranked[len(shown) :]
    folded_set = set(folded)
    names = [_model_label(model) for model in shown]
    if folded:
        names.append(f"other ({len(folded)} models)")
    slot = {model: index for index, model in enumerate(shown)}
    cells: dict[date, list[DailyCostView | None]] = {day: [None] * len(names) for day in days}
    other: dict[date, list[DailyCostView]] = defaultdict(list)
    # A day's total counts the models the chart leaves out too: a day none of whose attempts had a price is unpriced.
    day_attempts: dict[date, int] = defaultdict(int)
    day_missing: dict[date, int] = defaultdict(int)
    for line in report.daily:
        day_attempts[line.day] += line.attempts
        day_missing[line.day] += line.unpriced_attempts
        if line.day not in cells:
            continue
        if line.model in slot:
            cells[line.day][slot[line.model]] = line
        elif line.model in folded_set:
            other[line.day].append(line)
    one_year = len({day.year for day in days}) <= 1
    columns = []
    rows = []
    for day in days:
        values = [line.cost if line is not None else Decimal(0) for line in cells[day]]
        attempts = [line.attempts if line is not None else 0 for line in cells[day]]
        unpriced = [line.unpriced_attempts if line is not None else 0 for line in cells[day]]
        if folded:
            values[-1] = sum((line.cost for line in other[day]), Decimal(0))
            attempts[-1] = sum(line.attempts for line in other[day])
            unpriced[-1] = sum(line.unpriced_attempts for line in other[day])
        total = sum(values, Decimal(0))
        titles = tuple(
            usd_text(value)
            + f" ({count_text(count)} attempts"
            + (f", {count_text(missing)} unpriced)" if missing else ")")
            for value, count, missing in zip(values, attempts, unpriced, strict=True)
        )
        day_unpriced = sum(unpriced)
        columns.append(
            Column(
                label=day.strftime("%m-%d") if one_year else day.isoformat(),
                title=day.isoformat() + (f" ({count_text(day_unpriced)} unpriced attempts)" if day_unpriced else ""),
                values=tuple(float(value) for value in values),
                value_titles=titles,
                total_text=usd_compact(float(total)),
            )
        )
        rows.append(
            {
                "day": day.isoformat(),
                "cells": [
                    cost_cell(usd_text(value), count, missing)
                    for value, count, missing in zip(values, attempts, unpriced, strict=True)
                ],
                "total": cost_cell(usd_text(total), day_attempts[day], day_missing[day]),
            }
        )
    priced = any(value > 0 for line in report.daily for value in (line.cost,))
    chart = column_chart(
        "cost-per-day",
        f"Cost per day by model, {len(days)} days, stacked; the table below holds the numbers",
        names,
        columns if priced else [],
        lambda tick, step: usd_compact(tick, step=step),
        other_last=bool(folded),
        width=WIDE_CHART,
        unit=NANO_USD,
        empty_message="No priced cost in this period." if report.daily else "No usage in this period.",
    )
    return {"chart": chart, "series": names, "rows": rows, "left_out": left_out}


def _top(
    groups: Sequence[GroupView], size: int, measure: Callable[[GroupView], float | Decimal]
) -> tuple[list[GroupView], list[GroupView]]:
    ranked = sorted(groups, key=measure, reverse=True)
    if len(ranked) <= size + 1:
        return ranked, []
    return ranked[:size], ranked[size:]


def _agents(report: ReportView) -> dict[str, Any]:
    from ._svg import Bar, bar_chart  # noqa: PLC0415

    shown, folded = _top(report.by_agent, TOP_BARS, lambda group: group.usage.cost)
    total = report.totals.cost
    entries = [(plain_text(group.key.get("agent")), [group.usage]) for group in shown]
    if folded:
        entries.append((f"other ({len(folded)} agents)", [group.usage for group in folded]))
    agents = [_AgentCost.of(name, usages) for name, usages in entries]
    bars = [
        Bar(
            label=agent.name,
            values=(float(agent.cost),),
            value_titles=(f"{agent.cell(usd_text(agent.cost))}, {count_text(agent.calls)} calls",),
            total_text=agent.cell(f"{usd_compact(float(agent.cost))} · {rate_text(_share(agent.cost, total))}"),
        )
        for agent in agents
    ]
    chart = bar_chart(
        "cost-by-agent",
        "Cost by agent, highest first; the table below holds the numbers",
        ["cost"],
        bars if total > 0 else [],
        lambda tick, step: usd_compact(tick, step=step),
        empty_message="No priced cost in this period.",
        width=HALF_CHART,
        unit=NANO_USD,
    )
    rows = [
        {
            "name": agent.name,
            "cost": agent.cell(usd_text(agent.cost)),
            "share": agent.cell(rate_text(_share(agent.cost, total))),
            "calls": count_text(agent.calls),
        }
        for agent in agents
    ]
    return {"chart": chart, "rows": rows}


@dataclass(frozen=True, slots=True)
class _AgentCost:
    """The cost of one bar of the agent chart: one agent, or the agents folded into "other"."""

    name: str
    cost: Decimal
    calls: int
    attempts: int
    unpriced_attempts: int

    @classmethod
    def of(cls, name: str, usages: list[UsageView]) -> _AgentCost:
        return cls(
            name,
            sum((usage.cost for usage in usages), Decimal(0)),
            sum(usage.calls for usage in usages),
            sum(usage.attempts for usage in usages),
            sum(usage.unpriced_attempts for usage in usages),
        )

    def cell(self, text: str) -> str:
        """``text`` (its cost, or its share of the cost), or ``unpriced`` when none of its attempts had a price."""
        return cost_cell(text, self.attempts, self.unpriced_attempts)


def _models(report: ReportView) -> dict[str, Any]:
    from ._svg import Bar, bar_chart  # noqa: PLC0415

    shown, folded = _top(report.by_model, TOP_BARS, lambda group: group.usage.tokens)
    entries = [_Tokens.of(plain_text(group.key.get("model")), [group.usage]) for group in shown]
    if folded:
        entries.append(_Tokens.of(f"other ({len(folded)} models)", [group.usage for group in folded]))
    bars = [
        Bar(
            label=entry.name,
            values=(float(entry.prompt), float(entry.completion)),
            value_titles=(
                f"{count_text(entry.prompt)} tokens ({count_text(entry.cached)} cached, "
                f"{count_text(entry.cache_writes)} written to the cache)",
                f"{count_text(entry.completion)} tokens ({count_text(entry.reasoning)} reasoning)",
            ),
            total_text=tokens_compact(entry.prompt + entry.completion),
        )
        for entry in entries
    ]
    chart = bar_chart(
        "tokens-by-model",
        "Tokens by model, prompt and completion, most first; the table below holds the numbers",
        ["prompt", "completion"],
        bars if report.totals.tokens > 0 else [],
        lambda tick, step: tokens_compact(tick, trim=True),
        empty_message="No tokens in this period.",
        width=HALF_CHART,
        unit=1,
    )
    rows = [
        {
            "name": entry.name,
            "prompt": count_text(entry.prompt),
            "completion": count_text(entry.completion),
            "cached": count_text(entry.cached),
            "cache_writes": count_text(entry.cache_writes),
            "reasoning": count_text(entry.reasoning),
            "total": count_text(entry.prompt + entry.completion),
        }
        for entry in entries
    ]
    return {"chart": chart, "rows": rows}


@dataclass(frozen=True, slots=True)
class _Tokens:
    """The tokens of one bar of the model chart: one model, or the models folded into "other"."""

    name: str
    prompt: int
    completion: int
    cached: int
    reasoning: int
    cache_writes: int

    @classmethod
    def of(cls, name: str, usages: list[UsageView]) -> _Tokens:
        return cls(
            name,
            sum(usage.prompt_tokens for usage in usages),
            sum(usage.completion_tokens for usage in usages),
            sum(usage.cached_tokens for usage in usages),
            sum(usage.reasoning_tokens for usage in usages),
            sum(usage.cache_write_tokens for usage in usages),
        )


def _waste(report: ReportView) -> dict[str, Any]:
    from ._svg import Bar, bar_chart  # noqa: PLC0415

    totals = report.totals
    # An outcome none of whose attempts had a price says so on its bar, not $0 beside the priced ones.
    bars = [
        Bar(
            label=plain_text(line.outcome),
            values=(float(line.cost),),
            value_titles=(
                f"{cost_cell(usd_text(line.cost), line.attempts, line.unpriced_attempts)}, "
                f"{count_text(line.attempts)} attempts",
            ),
            total_text=f"{cost_cell(usd_compact(float(line.cost)), line.attempts, line.unpriced_attempts)} · "
            f"{count_text(line.attempts)} attempts",
        )
        for line in report.waste
    ]
    chart: Markup | None = None
    if totals.waste_cost > 0:
        chart = bar_chart(
            "waste-by-outcome",
            "Cost of attempts whose answer was not used, by outcome; the table below holds the numbers",
            ["waste"],
            bars,
            lambda tick, step: usd_compact(tick, step=step),
            width=WIDE_CHART,
            unit=NANO_USD,
        )
    costs = usd_column([*(line.cost for line in report.waste), totals.waste_cost])
    waste, share = waste_figure(report)
    attempts = sum(line.attempts for line in report.waste)
    unpriced = sum(line.unpriced_attempts for line in report.waste)
    rows = [
        {
            "outcome": plain_text(line.outcome),
            "attempts": count_text(line.attempts),
            "tokens": count_text(line.tokens),
            "cost": cost_cell(cost, line.attempts, line.unpriced_attempts),
            "share": cost_cell(rate_text(_share(line.cost, totals.cost)), line.attempts, line.unpriced_attempts),
            "unpriced": count_text(line.unpriced_attempts),
        }
        for line, cost in zip(report.waste, costs, strict=False)
    ]
    total = {
        "heading": waste if share is None else f"{waste} ({share} of cost)",
        "attempts": count_text(attempts),
        "tokens": count_text(totals.waste_tokens),
        "cost": cost_cell(costs[-1], attempts, unpriced),
        "share": cost_cell(rate_text(_share(totals.waste_cost, totals.cost)), attempts, unpriced),
        "unpriced": count_text(unpriced),
    }
    return {"chart": chart, "rows": rows, "total": total}


def _numbers(usage: UsageView, total_cost: Decimal, cost: str, waste: str) -> list[str]:
    return [
        count_text(usage.calls),
        count_text(usage.attempts),
        count_text(usage.tokens),
        cost_cell(cost, usage.attempts, usage.unpriced_attempts),
        cost_cell(rate_text(_share(usage.cost, total_cost)), usage.attempts, usage.unpriced_attempts),
        waste_cell(waste, usage),
        rate_text(usage.error_rate),
        rate_text(usage.retry_rate),
        rate_text(usage.reask_rate),
        _latencies(usage),
        count_text(usage.unpriced_attempts),
    ]


_NUMBER_HEADINGS: Final = [
    "Calls",
    "Attempts",
    "Tokens",
    "Cost",
    "Share",
    "Waste",
    "Errors",
    "Retries",
    "Re-asks",
    "p50 / p95 ms",
    "Unpriced",
]


def _latencies(usage: UsageView) -> str:
    p50, p95 = usage.latency_p50_ms, usage.latency_p95_ms
    if p50 is None and p95 is None:
        return "—"
    return " / ".join("—" if value is None else f"{value:,.0f}" for value in (p50, p95))


def _key_cell(value: str | None) -> dict[str, Any]:
    text = plain_text(value)
    # A short name stays on one line (a model name broken at its dashes is hard to read); a long one wraps.
    return {"text": text, "nowrap": len(text) <= NOWRAP_CHARS}


def _breakdown(report: ReportView) -> dict[str, Any]:
    total_cost = report.totals.cost
    costs = usd_column([*(group.usage.cost for group in report.breakdown), total_cost])
    wastes = usd_column([*(group.usage.waste_cost for group in report.breakdown), report.totals.waste_cost])
    return {
        "title": ", ".join(column_title(column) for column in report.group_by) or "everything",
        "key_titles": [column_title(column) for column in report.group_by],
        "numbers": _NUMBER_HEADINGS,
        "rows": [
            {
                "key_cells": [_key_cell(group.key.get(column)) for column in report.group_by],
                "numbers": _numbers(group.usage, total_cost, cost, waste),
            }
            for group, cost, waste in zip(report.breakdown, costs, wastes, strict=False)
        ],
        "total": _numbers(report.totals, total_cost, costs[-1], wastes[-1]),
    }


def _sessions(report: ReportView) -> list[dict[str, Any]]:
    return [{"session": plain_text(session), "numbers": numbers} for session, numbers in session_numbers(report)]


def _recommendations(report: ReportView) -> list[dict[str, str]]:
    return [
        {
            "code": plain_text(finding.code),
            "message": plain_text(finding.message),
            "metric": plain_text(finding.metric),
            "value": metric_text(finding.metric, finding.value),
            "threshold": metric_text(finding.metric, finding.threshold),
            "saving": "not priced" if finding.saving is None else usd_text(finding.saving),
            "subject": subject_text(finding.subject),
        }
        for finding in report.recommendations
    ]


def render_html(report: ReportView) -> str:
    """The report as one HTML page (a string), self-contained: no request of any kind when it is opened."""
    empty = report.totals.attempts == 0 and report.totals.calls == 0
    context: dict[str, Any] = {
        "title": report_title(report),
        "period": period_text(report.filters),
        "filters": filters_lines(report.filters),
        "group_by": ", ".join(column_title(column) for column in report.group_by) or "nothing",
        "generated": generated_text(report),
        "percentile_method": report.percentile_method,
        "empty": empty,
        "unpriced_models": [plain_text(model) for model in report.unpriced_models],
    }
    if not empty:
        context |= {
            "cards": _cards(report),
            "daily": _daily(report),
            "agents": _agents(report),
            "models": _models(report),
            "waste": _waste(report),
            "breakdown": _breakdown(report),
            "sessions": _sessions(report),
            "recommendations": _recommendations(report),
        }
    return _template().render(context)
