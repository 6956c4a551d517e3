"""How the renderers write numbers, names and the period: one place, so every format says the same thing.

Money is written exactly: the stored nano-USD summed are a ``Decimal`` with at
most nine decimals, and a report that rounds them cannot be checked against the
ledger. Displays show at least two decimals (``$1.50``) and as many more as the
value has (``$0.000123456``); files (CSV) hold the plain decimal (``0.000123456``),
never scientific notation (``str(Decimal("1E-9"))`` would give ``1E-9``).
Rates are floats, shown to one decimal of a percent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from ._period import bound_text

if TYPE_CHECKING:
    from ._view import FiltersView, FindingView, ReportView, SessionGrowthView, UsageView

__all__ = [
    "NONE_LABEL",
    "column_title",
    "cost_cell",
    "count_text",
    "decimal_text",
    "filters_lines",
    "finding_figure",
    "generated_text",
    "growth_text",
    "key_text",
    "latency_text",
    "metric_text",
    "period_text",
    "plain_text",
    "rate_text",
    "report_title",
    "session_numbers",
    "subject_text",
    "tokens_compact",
    "usd_column",
    "usd_compact",
    "usd_text",
    "waste_cell",
    "waste_figure",
]

NONE_LABEL: Final = "(none)"
"""How a missing group value is shown (an agent that was never named, an unpriced model's empty price)."""

_CENT: Final = Decimal("0.01")
# Control characters (a newline in an agent name) would break a table row or a line of the terminal; the
# bidirectional marks, embeddings, overrides and isolates would reorder how the rest of the line is shown
# (a name "invoice\u202efdp.exe" shows as "invoiceexe.pdf", Trojan Source's trick).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_COLUMN_TITLES: Final = {
    "project": "Project",
    "session": "Session",
    "agent": "Agent",
    "model": "Model",
    "provider": "Provider",
    "day": "Day",
    "week": "Week",
    "outcome": "Outcome",
    "error_kind": "Error kind",
}


def decimal_text(value: Decimal) -> str:
    """The exact decimal in plain notation (``0.000000001``, never ``1E-9``): what files hold."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in {"", "-0"} else text


def usd_text(value: Decimal) -> str:
    """Exact USD for a reader: ``$1,234.50``, ``$0.000123456`` (two decimals at least, every one there is)."""
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if magnitude == magnitude.quantize(_CENT):
        return f"{sign}${magnitude:,.2f}"
    return f"{sign}${_grouped(magnitude)}"


def usd_column(values: Sequence[Decimal]) -> list[str]:
    """Exact USD for a table column: every value with the same decimals (the most any has, two at least).

    Trailing zeros are added, never digits removed, so each is still exact and the decimal points line up.
    """
    decimals = 2
    for value in values:
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int):
            decimals = max(decimals, -exponent)
    return [f"{'-' if value < 0 else ''}${abs(value):,.{decimals}f}" for value in values]


def cost_cell(text: str, attempts: int, unpriced_attempts: int) -> str:
    """A cost in a table: ``unpriced`` when none of the attempts had a price, never a $0 that reads as free."""
    return "unpriced" if attempts and unpriced_attempts >= attempts else text


def waste_cell(text: str, usage: UsageView) -> str:
    """A group's waste in a table: ``unpriced`` when none of its *wasted* attempts had a price.

    Judged on the ``error`` / ``invalid`` / ``cancelled`` attempts alone: a group whose answers were priced
    but whose failed attempts were not has a waste whose cost is not known, which a ``$0.00`` would hide.
    A group that wasted no attempt shows its ``$0.00``, whatever its other attempts cost.
    """
    return cost_cell(text, usage.errors + usage.invalid + usage.cancelled, usage.waste_unpriced_attempts)


def waste_figure(report: ReportView) -> tuple[str, str | None]:
    """The waste's cost and its share of the cost, as a summary or a total line shows them.

    ``("unpriced", None)`` when none of the wasted attempts had a price (:func:`waste_cell` of the totals):
    their cost is not known, and a ``$0.00`` (``0.0%`` of the cost) would read as no waste at all.
    """
    totals = report.totals
    if waste_cell("", totals) == "unpriced":
        return "unpriced", None
    return usd_text(totals.waste_cost), rate_text(float(totals.waste_cost / totals.cost)) if totals.cost else "—"


def _grouped(value: Decimal) -> str:
    whole, _, fraction = decimal_text(value).partition(".")
    return f"{int(whole):,}.{fraction}" if fraction else f"{int(whole):,}"


def usd_compact(value: float, *, step: float | None = None) -> str:
    """USD rounded for a chart's axis or bar label; ``step`` (a tick interval) sets the decimals."""
    if step is not None and step > 0:
        # As many decimals as the step has, so every tick shows its own value: a step of 2.5 has one more
        # than its first digit says (7.5 is $7.50, not $8; 0.025 is $0.025, not $0.03).
        exponent = Decimal(repr(step)).normalize().as_tuple().exponent
        decimals = max(0, -exponent) if isinstance(exponent, int) else 0
        decimals = 2 if decimals == 1 else decimals  # $0.50, not $0.5
        return f"${value:,.{decimals}f}"
    if value == 0:
        return "$0"
    if abs(value) >= 1000:
        return f"${value:,.0f}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    # Small amounts keep three significant digits: $0.00123, not $0.00.
    decimals = min(9, 2 - _floor_log10(abs(value)))
    return f"${value:.{decimals}f}"


def _floor_log10(value: float) -> int:
    exponent = 0
    while value >= 10:
        value /= 10
        exponent += 1
    while value < 1:
        value *= 10
        exponent -= 1
    return exponent


def count_text(value: int) -> str:
    """An integer with thousands separators."""
    return f"{value:,}"


def tokens_compact(value: float, *, trim: bool = False) -> str:
    """Tokens for a chart label: ``950``, ``12.3k``, ``4.5M``; ``trim`` drops a ``.0`` (axis ticks: ``50M``)."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            text = f"{scaled:.1f}" if scaled < 100 else f"{scaled:.0f}"
            return (text.removesuffix(".0") if trim else text) + suffix
    return f"{value:.0f}"


def rate_text(value: float | None) -> str:
    """A rate as a percentage with one decimal; ``—`` when undefined.

    ``<0.1%`` rather than a false ``0.0%``, and ``>99.9%`` rather than a false ``100.0%`` (1,999 failed
    attempts of 2,000 are not all of them).
    """
    if value is None:
        return "—"
    percent = value * 100
    if 0 < percent < 0.05:
        return "<0.1%"
    text = f"{percent:.1f}%"
    return ">99.9%" if text == "100.0%" and percent < 100 else text


def latency_text(value: float | None) -> str:
    """Milliseconds, rounded: ``1,234 ms``; ``—`` when not computed."""
    return "—" if value is None else f"{value:,.0f} ms"


def metric_text(name: str, value: float) -> str:
    """A finding's figure: a share or a rate as a percentage, anything else as a number."""
    if name.endswith(("_rate", "_share")):
        return rate_text(value)
    return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"


def plain_text(value: str | None) -> str:
    """A user's string on one line: control characters (newlines, tabs) shown as escapes, ``(none)`` for None.

    Bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE ...) are shown as escapes too (``\\u202e``), so a
    name cannot reorder the line it is shown on.
    """
    if value is None:
        return NONE_LABEL
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), value)


def key_text(key: Mapping[str, str | None], columns: tuple[str, ...] | None = None) -> str:
    """A group's key as one label: ``writer · gpt-4o``."""
    names = columns if columns is not None else tuple(key)
    return " · ".join(plain_text(key.get(name)) for name in names)


def column_title(column: str) -> str:
    """The heading of a ``group_by`` column: ``Agent``; a tag column as written (``tag:team``)."""
    return _COLUMN_TITLES.get(column, plain_text(column))


def period_text(filters: FiltersView) -> str:
    """The period, UTC: ``2025-05-01 → 2025-05-08 (UTC)``, ``since 2025-05-01 (UTC)``, ``all time``."""
    if filters.since is None and filters.until is None:
        return "all time"
    if filters.until is None:
        assert filters.since is not None
        return f"since {bound_text(filters.since)} (UTC)"
    if filters.since is None:
        return f"until {bound_text(filters.until)} (UTC)"
    return f"{bound_text(filters.since)} → {bound_text(filters.until)} (UTC)"


def filters_lines(filters: FiltersView) -> list[tuple[str, str]]:
    """The filters besides project and period, as ``(name, value)`` pairs (values on one line)."""
    lines: list[tuple[str, str]] = []
    if filters.session is not None:
        lines.append(("session", plain_text(filters.session)))
    if filters.agent is not None:
        lines.append(("agent", plain_text(filters.agent)))
    lines.extend((f"tag {plain_text(name)}", plain_text(value)) for name, value in sorted(filters.tags.items()))
    return lines


def report_title(report: ReportView) -> str:
    """``Usage of acme-support`` or ``Usage of all projects``."""
    project = report.filters.project
    return "Usage of all projects" if project is None else f"Usage of {plain_text(project)}"


def generated_text(report: ReportView) -> str:
    """When the report was made, UTC, to the second."""
    return report.generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def finding_figure(finding: FindingView) -> str:
    """``retry_waste_share 23.0% (threshold 10.0%)``."""
    return (
        f"{finding.metric} {metric_text(finding.metric, finding.value)} "
        f"(threshold {metric_text(finding.metric, finding.threshold)})"
    )


def subject_text(subject: Mapping[str, str | None]) -> str:
    """A finding's subject: ``model gpt-4o``, ``agent writer · model gpt-4o``."""
    return " · ".join(f"{plain_text(name)} {plain_text(value)}" for name, value in subject.items())


def growth_text(growth: SessionGrowthView | None) -> str:
    """How a session's prompts grew: ``1,200 → 5,400 (4.5 times)``; ``—`` when unknown."""
    if growth is None or growth.growth is None:
        return "—"
    first, last = count_text(growth.first_prompt_tokens), count_text(growth.last_prompt_tokens)
    times = f"{growth.growth:.1f}"
    if times == "0.0" and growth.growth > 0:
        # A prompt that shrank to 3% of the first: 0.03, not 0.0 (its first digit that is not 0, never 3e-05).
        times = f"{growth.growth:.{-math.floor(math.log10(growth.growth))}f}"
    return f"{first} → {last} ({times} times)"


def session_numbers(report: ReportView) -> list[tuple[str | None, list[str]]]:
    """Each top session and its cells, as every table of them shows them.

    The cells are calls, attempts, tokens, cost, waste, errors and how its prompts grew; money
    shares its decimals down each column.
    """
    growth = {item.session: item for item in report.session_growth}
    usages = [group.usage for group in report.top_sessions]
    costs = usd_column([usage.cost for usage in usages])
    wastes = usd_column([usage.waste_cost for usage in usages])
    rows = []
    for group, usage, cost, waste in zip(report.top_sessions, usages, costs, wastes, strict=True):
        session = group.key.get("session")
        rows.append(
            (
                session,
                [
                    count_text(usage.calls),
                    count_text(usage.attempts),
                    count_text(usage.tokens),
                    cost_cell(cost, usage.attempts, usage.unpriced_attempts),
                    waste_cell(waste, usage),
                    count_text(usage.errors),
                    growth_text(growth.get(session) if session is not None else None),
                ],
            )
        )
    return rows
