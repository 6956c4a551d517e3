"""A report as Markdown (CommonMark with GitHub's tables): for a pull request, an issue, a wiki page.

Agent names, models, tags, sessions and findings come from users and models, so
every one of them is escaped: Markdown's punctuation (``*``, ``_``, ``[``, ``<``,
``|`` ...) gets a backslash, which renders it as itself, and a newline or another
control character is written as its escape (``\\n``), so a name can neither
end a table row nor become a link, an image or raw HTML. GitHub also makes a
link of a bare address (``http://``, ``https://``, ``ftp://``, ``www.``): the
``:`` before ``//`` and the ``.`` after ``www`` get a backslash too, which stops
that and still renders as written. A bare e-mail address (``alice@example.com``)
is the one link left: GitHub finds those in the text once the backslashes are
gone, and only an invisible character in the name would stop it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

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
    session_numbers,
    subject_text,
    usd_column,
    usd_text,
    waste_cell,
    waste_figure,
)

if TYPE_CHECKING:
    from ._view import ReportView, UsageView

__all__ = ["markdown_escape", "render_markdown"]

# ASCII punctuation that means something inline (CommonMark lets any of it be escaped; these are the ones
# that can start emphasis, code, a link, an image, raw HTML, an entity, a cell boundary or GitHub's math).
_SPECIAL: Final = re.compile(r"([\\`*_\[\]<>|~&$])")
# Where a backslash stops one of GitHub's autolinks: before the ":" of "http://" (of any "://": its parser
# looks at each one) and before the "." of "www." (in any case, as other renderers' linkify reads it).
_AUTOLINK: Final = re.compile(r"(?=://)|(?<=(?i:www))(?=\.)")


def markdown_escape(value: str | None) -> str:
    """A user's string as Markdown text that renders as itself, on one line, and never as a link.

    A bare e-mail address is the exception: GitHub still links it (see the module's docstring).
    """
    return _AUTOLINK.sub(r"\\", _SPECIAL.sub(r"\\\1", plain_text(value)))


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(headings: list[str], rows: list[list[str]], *, left: int = 1) -> list[str]:
    """A GFM table; the first ``left`` columns are text (left-aligned), the rest numbers (right-aligned)."""
    rule = ["---" if index < left else "---:" for index in range(len(headings))]
    return [_row(headings), _row(rule), *(_row(cells) for cells in rows), ""]


def _usage_cells(usage: UsageView, cost: str, waste: str) -> list[str]:
    return [
        count_text(usage.calls),
        count_text(usage.attempts),
        count_text(usage.tokens),
        cost_cell(cost, usage.attempts, usage.unpriced_attempts),
        waste_cell(waste, usage),
        rate_text(usage.error_rate),
        rate_text(usage.retry_rate),
        rate_text(usage.reask_rate),
        latency_text(usage.latency_p50_ms),
        latency_text(usage.latency_p95_ms),
        count_text(usage.unpriced_attempts),
    ]


_USAGE_HEADINGS: Final = [
    "Calls",
    "Attempts",
    "Tokens",
    "Cost",
    "Waste",
    "Error rate",
    "Retry rate",
    "Re-ask rate",
    "p50",
    "p95",
    "Unpriced",
]


def _header(report: ReportView) -> list[str]:
    lines = [f"# {markdown_escape(report_title(report))}", ""]
    lines.append(f"Period: {period_text(report.filters)}. Generated {generated_text(report)}.")
    filters = filters_lines(report.filters)
    if filters:
        lines.append(
            "Filters: " + "; ".join(f"{markdown_escape(name)} = {markdown_escape(v)}" for name, v in filters) + "."
        )
    lines.append("")
    return lines


def _totals(report: ReportView) -> list[str]:
    totals = report.totals
    waste, share = waste_figure(report)
    unpriced = count_text(totals.unpriced_attempts)
    if report.unpriced_models:
        unpriced += " (" + ", ".join(markdown_escape(model) for model in report.unpriced_models) + ")"
    rows = [
        ["Cost", cost_cell(usd_text(totals.cost), totals.attempts, totals.unpriced_attempts)],
        ["Calls", count_text(totals.calls)],
        ["Attempts", count_text(totals.attempts)],
        ["Prompt tokens", count_text(totals.prompt_tokens)],
        ["Completion tokens", count_text(totals.completion_tokens)],
        ["Cached prompt tokens", f"{count_text(totals.cached_tokens)} ({rate_text(totals.cached_token_rate)})"],
        ["Cache-write prompt tokens", count_text(totals.cache_write_tokens)],
        ["Reasoning tokens", count_text(totals.reasoning_tokens)],
        ["Error rate", rate_text(totals.error_rate)],
        ["Retry rate", rate_text(totals.retry_rate)],
        ["Re-ask rate", rate_text(totals.reask_rate)],
        ["Cache-hit rate", rate_text(totals.cache_hit_rate)],
        ["Waste", f"{waste}{'' if share is None else f' ({share} of cost)'}, {count_text(totals.waste_tokens)} tokens"],
        ["Unpriced attempts", unpriced],
        ["Latency p50 / p95", f"{latency_text(totals.latency_p50_ms)} / {latency_text(totals.latency_p95_ms)}"],
    ]
    return ["## Totals", "", *_table(["", "Value"], rows)]


def _waste(report: ReportView) -> list[str]:
    totals = report.totals
    lines = ["## Waste", "", "Attempts whose answer the agent never used: failed, re-asked or abandoned.", ""]
    if not report.waste:
        return [*lines, "None.", ""]
    costs = usd_column([*(line.cost for line in report.waste), totals.waste_cost])
    rows = [
        [
            markdown_escape(line.outcome),
            count_text(line.attempts),
            count_text(line.tokens),
            cost_cell(cost, line.attempts, line.unpriced_attempts),
            count_text(line.unpriced_attempts),
        ]
        for line, cost in zip(report.waste, costs, strict=False)
    ]
    attempts = sum(line.attempts for line in report.waste)
    unpriced = sum(line.unpriced_attempts for line in report.waste)
    rows.append(
        [
            "**Total**",
            count_text(attempts),
            count_text(totals.waste_tokens),
            cost_cell(costs[-1], attempts, unpriced),
            count_text(unpriced),
        ]
    )
    return [*lines, *_table(["Outcome", "Attempts", "Tokens", "Cost", "Unpriced"], rows)]


def _breakdown(report: ReportView) -> list[str]:
    columns = report.group_by
    title = ", ".join(markdown_escape(column_title(column)) for column in columns) or "everything"
    costs = usd_column([*(group.usage.cost for group in report.breakdown), report.totals.cost])
    wastes = usd_column([*(group.usage.waste_cost for group in report.breakdown), report.totals.waste_cost])
    rows = [
        [*(markdown_escape(group.key.get(column)) for column in columns), *_usage_cells(group.usage, cost, waste)]
        for group, cost, waste in zip(report.breakdown, costs, wastes, strict=False)
    ]
    rows.append(["**Total**", *([""] * (len(columns) - 1)), *_usage_cells(report.totals, costs[-1], wastes[-1])])
    headings = [markdown_escape(column_title(column)) for column in columns] or [""]
    if not columns:
        rows = [rows[-1]]
    return [f"## By {title}", "", *_table([*headings, *_USAGE_HEADINGS], rows, left=max(1, len(columns)))]


def _sessions(report: ReportView) -> list[str]:
    if not report.top_sessions:
        return []
    rows = [[markdown_escape(session), *numbers] for session, numbers in session_numbers(report)]
    headings = ["Session", "Calls", "Attempts", "Tokens", "Cost", "Waste", "Errors", "Prompt growth"]
    return ["## Top sessions", "", *_table(headings, rows)]


def _recommendations(report: ReportView) -> list[str]:
    lines = ["## Recommendations", ""]
    if not report.recommendations:
        return [*lines, "No finding: nothing in these numbers crossed a threshold.", ""]
    for number, finding in enumerate(report.recommendations, 1):
        saving = "not priced" if finding.saving is None else usd_text(finding.saving)
        about = f"; about {markdown_escape(subject_text(finding.subject))}" if finding.subject else ""
        lines.append(
            f"{number}. {markdown_escape(finding.message)} "
            f"(figure: {markdown_escape(finding_figure(finding))}; estimated saving: {saving}{about}; "
            f"rule {markdown_escape(finding.code)})"
        )
    return [*lines, ""]


def render_markdown(report: ReportView) -> str:
    """The report as a Markdown document: summary, totals, waste, breakdown, top sessions, recommendations."""
    lines = _header(report)
    if report.totals.attempts == 0 and report.totals.calls == 0:
        lines += ["No usage in this period.", ""]
    else:
        lines += _totals(report) + _waste(report) + _breakdown(report) + _sessions(report)
        lines += _recommendations(report)
    if report.percentile_method:
        lines += [f"Latency percentiles: {markdown_escape(report.percentile_method)}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"
