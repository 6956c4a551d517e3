"""A report for a terminal: rich tables (``rich`` is imported here, when a report is rendered, not with the package).

Every user string goes in as a ``rich.text.Text``, never as a markup string: an
agent named ``[red]x[/red]`` or ``[link=...]`` is shown as written, not
interpreted. Money is exact and right-aligned; the breakdown ends with a total
line (the report's totals, not a sum of rounded cells) and the waste is a table
of its own, with its share of the cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._format import (
    column_title,
    cost_cell,
    count_text,
    filters_lines,
    finding_figure,
    generated_text,
    latency_text,
    period_text,
    plain_text,
    rate_text,
    report_title,
    subject_text,
    usd_column,
    usd_text,
)

if TYPE_CHECKING:
    from rich.console import Group as RenderGroup
    from rich.console import RenderableType
    from rich.table import Table
    from rich.text import Text

    from ._view import ReportView, UsageView

__all__ = ["render_rich"]


def _text(value: str | None, style: str = "") -> Text:
    from rich.text import Text  # noqa: PLC0415 - rich loads when a report is rendered

    return Text(plain_text(value), style=style)


def _usage_cells(usage: UsageView, cost: str, waste: str) -> list[str]:
    return [
        count_text(usage.calls),
        count_text(usage.attempts),
        count_text(usage.tokens),
        cost_cell(cost, usage.attempts, usage.unpriced_attempts),
        cost_cell(waste, usage.attempts, usage.unpriced_attempts),
        rate_text(usage.error_rate),
        rate_text(usage.retry_rate),
        rate_text(usage.reask_rate),
        latency_text(usage.latency_p95_ms),
    ]


_USAGE_HEADINGS = ("Calls", "Attempts", "Tokens", "Cost", "Waste", "Errors", "Retries", "Re-asks", "p95")


def _summary(report: ReportView) -> Table:
    from rich.table import Table  # noqa: PLC0415

    totals = report.totals
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(style="bold")
    table.add_column(justify="right")
    share = rate_text(float(totals.waste_cost / totals.cost)) if totals.cost else "—"
    pairs = [
        ("Cost", usd_text(totals.cost), "Error rate", rate_text(totals.error_rate)),
        ("Calls", count_text(totals.calls), "Retry rate", rate_text(totals.retry_rate)),
        ("Attempts", count_text(totals.attempts), "Re-ask rate", rate_text(totals.reask_rate)),
        ("Tokens", count_text(totals.tokens), "Cache-hit rate", rate_text(totals.cache_hit_rate)),
        (
            "Waste",
            f"{usd_text(totals.waste_cost)} ({share})",
            "Unpriced attempts",
            count_text(totals.unpriced_attempts),
        ),
        (
            "Latency p50",
            latency_text(totals.latency_p50_ms),
            "Latency p95",
            latency_text(totals.latency_p95_ms),
        ),
    ]
    for row in pairs:
        table.add_row(*row)
    return table


def _breakdown(report: ReportView) -> Table:
    from rich.table import Table  # noqa: PLC0415

    columns = report.group_by
    title = ", ".join(column_title(column) for column in columns) or "everything"
    table = Table(title=_text(f"By {title}", "bold"), title_justify="left", show_lines=False)
    for column in columns:
        table.add_column(_text(column_title(column)), overflow="fold")
    for heading in _USAGE_HEADINGS:
        table.add_column(heading, justify="right", no_wrap=True)
    costs = usd_column([*(group.usage.cost for group in report.breakdown), report.totals.cost])
    wastes = usd_column([*(group.usage.waste_cost for group in report.breakdown), report.totals.waste_cost])
    last = len(report.breakdown) - 1
    for index, group in enumerate(report.breakdown):
        table.add_row(
            *(_text(group.key.get(column)) for column in columns),
            *_usage_cells(group.usage, costs[index], wastes[index]),
            end_section=index == last,
        )
    label: list[Text | str] = [_text("Total", "bold"), *([""] * (len(columns) - 1))] if columns else []
    table.add_row(*label, *_usage_cells(report.totals, costs[-1], wastes[-1]), style="bold")
    return table


def _waste(report: ReportView) -> Table:
    from rich.table import Table  # noqa: PLC0415

    totals = report.totals
    share = rate_text(float(totals.waste_cost / totals.cost)) if totals.cost else "—"
    table = Table(
        title=_text(f"Waste: {usd_text(totals.waste_cost)}, {share} of cost", "bold"),
        title_justify="left",
        caption="Attempts whose answer the agent never used: failed, re-asked or abandoned.",
        caption_justify="left",
    )
    table.add_column("Outcome")
    for heading in ("Attempts", "Tokens", "Cost", "Unpriced"):
        table.add_column(heading, justify="right", no_wrap=True)
    costs = usd_column([*(line.cost for line in report.waste), totals.waste_cost])
    last = len(report.waste) - 1
    for index, line in enumerate(report.waste):
        table.add_row(
            _text(line.outcome),
            count_text(line.attempts),
            count_text(line.tokens),
            cost_cell(costs[index], line.attempts, line.unpriced_attempts),
            count_text(line.unpriced_attempts),
            end_section=index == last,
        )
    table.add_row(
        _text("Total", "bold"),
        count_text(sum(line.attempts for line in report.waste)),
        count_text(totals.waste_tokens),
        costs[-1],
        count_text(sum(line.unpriced_attempts for line in report.waste)),
        style="bold",
    )
    return table


def _sessions(report: ReportView) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=_text("Top sessions by cost", "bold"), title_justify="left")
    table.add_column("Session", overflow="fold")
    for heading in ("Calls", "Attempts", "Tokens", "Cost", "Waste", "Errors"):
        table.add_column(heading, justify="right", no_wrap=True)
    costs = usd_column([group.usage.cost for group in report.top_sessions])
    wastes = usd_column([group.usage.waste_cost for group in report.top_sessions])
    for group, cost, waste in zip(report.top_sessions, costs, wastes, strict=True):
        usage = group.usage
        table.add_row(
            _text(group.key.get("session")),
            count_text(usage.calls),
            count_text(usage.attempts),
            count_text(usage.tokens),
            cost_cell(cost, usage.attempts, usage.unpriced_attempts),
            cost_cell(waste, usage.attempts, usage.unpriced_attempts),
            count_text(usage.errors),
        )
    return table


def _recommendations(report: ReportView) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=_text("Recommendations", "bold"), title_justify="left", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("Finding", ratio=1, overflow="fold")
    table.add_column("Saving", justify="right", no_wrap=True)
    savings = usd_column([finding.saving for finding in report.recommendations if finding.saving is not None])
    for number, finding in enumerate(report.recommendations, 1):
        text = _text(finding.message)
        text.append("\n")
        text.append(plain_text(finding_figure(finding)), style="dim")
        if finding.subject:
            text.append(" · " + subject_text(finding.subject), style="dim")
        saving = "not priced" if finding.saving is None else savings.pop(0)
        table.add_row(str(number), text, saving)
    return table


def render_rich(report: ReportView) -> RenderGroup:
    """The report as one rich renderable: a heading, the totals, the breakdown with its total line, the waste.

    Then the top sessions and the recommendations, when there are any. Print it with
    ``rich.console.Console().print(report.to_rich())``.
    """
    from rich.console import Group  # noqa: PLC0415

    heading = _text(report_title(report), "bold")
    heading.append(f"\n{period_text(report.filters)} · generated {generated_text(report)}", style="dim")
    for name, value in filters_lines(report.filters):
        heading.append(f"\n{name} = ", style="dim")
        heading.append(value)
    parts: list[RenderableType] = [heading]
    if report.totals.attempts == 0 and report.totals.calls == 0:
        parts.append(_text("No usage in this period."))
        return Group(*parts)
    parts += [_summary(report), _breakdown(report), _waste(report)]
    if report.top_sessions:
        parts.append(_sessions(report))
    if report.recommendations:
        parts.append(_recommendations(report))
    else:
        parts.append(_text("No recommendation: nothing in these numbers crossed a threshold.", "dim"))
    if report.unpriced_models:
        line = _text("Unpriced models (their attempts are not in the cost): ", "bold")
        line.append(", ".join(plain_text(model) for model in report.unpriced_models))
        parts.append(line)
    return Group(*parts)
