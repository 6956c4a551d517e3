"""A report for a terminal: rich tables that fit the terminal's width without cutting a number.

This module is imported by ``UsageReport.to_rich()`` only, so ``rich`` loads when a
report is rendered, not with the package.

Every user string goes in as a ``rich.text.Text``, never as a markup string: an
agent named ``[red]x[/red]`` or ``[link=...]`` is shown as written. Money is exact
and right-aligned; the breakdown ends with a total line (the report's totals, not
a sum of rounded cells) and the waste is a table of its own, with its share of
the cost.

The width is known only when the report is printed (80 columns in a CI log, 200
in a wide terminal), so :class:`RichReport` builds its tables then. Left to
itself, rich shrinks every column of a table that is too wide, and ``$0.307287585``
becomes ``$0.3072…``; here a number is never shrunk: the least needed columns
(p95, re-asks, retries, tokens, attempts, errors) are left out instead, a
caption says which, and names fold onto more lines; in a split pane the waste
and the calls go too, and names fold narrower still, rather than the terminal
cropping an amount.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

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

__all__ = ["RichReport", "render_rich"]

# What a column of a table costs besides its text: a border and one space each side.
_COLUMN_OVERHEAD: Final = 3
_NAME_MIN_WIDTH: Final = 8  # a name column folds to this, never less
_NAME_WANTED_WIDTH: Final = 24  # names up to this long are kept whole while optional columns can make room
_SUMMARY_GAP: Final = 2  # spaces between the columns of the summary


def _text(value: str | None, style: str = "") -> Text:
    return Text(plain_text(value), style=style)


@dataclass(frozen=True, slots=True)
class _Column:
    """One column of a table: its heading, its cells (top to bottom), how it reads and when it may go."""

    heading: str
    cells: Sequence[str | Text]
    numeric: bool = True
    drop_order: int | None = None  # smaller goes first when the table is too wide; None: always shown
    # Left out only when even folded names leave no room for it (a split pane): smaller goes first.
    last_resort: int | None = None

    @property
    def natural_width(self) -> int:
        # Terminal cells, not characters: a CJK character or an emoji takes two.
        return max([cell_len(self.heading), *(cell_len(str(cell)) for cell in self.cells)])


def _name_width(column: _Column) -> int:
    """How wide a name column asks to be: the whole name, up to a cap (a model's name cut at 8 reads badly)."""
    return max(_NAME_MIN_WIDTH, min(column.natural_width, _NAME_WANTED_WIDTH))


def _needed(chosen: Iterable[_Column], *, whole_names: bool, narrow: int = _NAME_MIN_WIDTH) -> int:
    widths = (
        column.natural_width if column.numeric else _name_width(column) if whole_names else narrow for column in chosen
    )
    return sum(width + _COLUMN_OVERHEAD for width in widths) + 1


def _fit(columns: Sequence[_Column], max_width: int) -> tuple[list[_Column], list[str], int | None]:
    """The columns that fit ``max_width``, the headings left out, and the width names fold to (None: whole).

    Numbers are never cut. Optional columns go first (in their drop order) while
    names would not fit whole; names fold (to 8) only when every optional column
    is gone and the table is still too wide. Should it still be too wide then,
    the last-resort columns go too (the waste, the calls), and then names fold
    narrower than 8, rather than the terminal cropping a number: the cost and the
    names always stay.
    """
    kept = list(columns)
    dropped: list[str] = []

    def drop(order: Callable[[_Column], int | None]) -> bool:
        candidates = [column for column in kept if order(column) is not None]
        if not candidates:
            return False
        victim = min(candidates, key=lambda column: order(column) or 0)
        kept.remove(victim)
        dropped.append(victim.heading)
        return True

    while _needed(kept, whole_names=True) > max_width and drop(lambda column: column.drop_order):
        pass
    if _needed(kept, whole_names=True) <= max_width:
        return kept, dropped, None
    while _needed(kept, whole_names=False) > max_width and drop(lambda column: column.last_resort):
        pass
    narrow = _NAME_MIN_WIDTH
    names = sum(1 for column in kept if not column.numeric)
    if names and _needed(kept, whole_names=False) > max_width:
        spare = max_width - _needed(kept, whole_names=False, narrow=0)
        narrow = max(1, spare // names)
    return kept, dropped, narrow


def _table(
    title: Text,
    columns: Sequence[_Column],
    max_width: int,
    *,
    total: bool = False,
    caption: str | None = None,
) -> Table:
    """A table of ``columns``; with ``total``, the last row is a bold total line under a rule."""
    kept, dropped, narrow = _fit(columns, max_width)
    notes = [caption] if caption else []
    if dropped:
        them = "it" if len(dropped) == 1 else "them"
        notes.append(f"Not shown, for width: {', '.join(dropped)} (a wider terminal shows {them}).")
    table = Table(
        title=title,
        title_justify="left",
        caption=" ".join(notes) or None,
        caption_justify="left",
    )
    for column in kept:
        # As a Text, never a markup string: a tag column's heading is the key asked for (``tag:[/]``).
        heading = Text(column.heading)
        if column.numeric:
            # At its natural width, unwrapped: rich shrinks nothing below a column's min_width.
            table.add_column(heading, justify="right", no_wrap=True, min_width=column.natural_width)
        else:
            width = _name_width(column) if narrow is None else narrow
            table.add_column(heading, overflow="fold", min_width=width)
    rows = len(kept[0].cells) if kept else 0
    for index in range(rows):
        is_total = total and index == rows - 1
        table.add_row(
            *(column.cells[index] for column in kept),
            end_section=total and index == rows - 2,
            style="bold" if is_total else None,
        )
    return table


def _usage_columns(usages: Sequence[UsageView], costs: Sequence[str], wastes: Sequence[str]) -> list[_Column]:
    """The number columns of a breakdown, one cell per usage."""
    return [
        _Column("Calls", [count_text(usage.calls) for usage in usages], last_resort=1),
        _Column("Attempts", [count_text(usage.attempts) for usage in usages], drop_order=4),
        _Column("Tokens", [count_text(usage.tokens) for usage in usages], drop_order=3),
        _Column(
            "Cost",
            [
                cost_cell(cost, usage.attempts, usage.unpriced_attempts)
                for usage, cost in zip(usages, costs, strict=True)
            ],
        ),
        _Column(
            "Waste",
            [waste_cell(waste, usage) for usage, waste in zip(usages, wastes, strict=True)],
            last_resort=0,
        ),
        _Column("Errors", [rate_text(usage.error_rate) for usage in usages], drop_order=5),
        _Column("Retries", [rate_text(usage.retry_rate) for usage in usages], drop_order=2),
        _Column("Re-asks", [rate_text(usage.reask_rate) for usage in usages], drop_order=1),
        _Column("p95", [latency_text(usage.latency_p95_ms) for usage in usages], drop_order=0),
    ]


def _summary(report: ReportView, max_width: int) -> Table:
    """The totals, two figures to a line; one to a line when two do not fit (an amount is never cut)."""
    totals = report.totals
    waste, share = waste_figure(report)
    pairs = [
        (
            "Cost",
            cost_cell(usd_text(totals.cost), totals.attempts, totals.unpriced_attempts),
            "Error rate",
            rate_text(totals.error_rate),
        ),
        ("Calls", count_text(totals.calls), "Retry rate", rate_text(totals.retry_rate)),
        ("Attempts", count_text(totals.attempts), "Re-ask rate", rate_text(totals.reask_rate)),
        ("Tokens", count_text(totals.tokens), "Cache-hit rate", rate_text(totals.cache_hit_rate)),
        ("Waste", waste if share is None else f"{waste} ({share})", "Unpriced", count_text(totals.unpriced_attempts)),
        ("Latency p50", latency_text(totals.latency_p50_ms), "Latency p95", latency_text(totals.latency_p95_ms)),
    ]
    rows: list[tuple[str, ...]] = list(pairs)
    gaps = _SUMMARY_GAP * 3
    if sum(max(len(row[index]) for row in pairs) for index in range(4)) + gaps > max_width:
        rows = [row[:2] for row in pairs] + [row[2:] for row in pairs]
    table = Table.grid(padding=(0, _SUMMARY_GAP))
    for _ in range(len(rows[0]) // 2):
        table.add_column(style="bold")
        table.add_column(justify="right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _breakdown(report: ReportView, max_width: int) -> Table:
    columns = report.group_by
    usages = [*(group.usage for group in report.breakdown), report.totals]
    costs = usd_column([usage.cost for usage in usages])
    wastes = usd_column([usage.waste_cost for usage in usages])
    keys = [
        _Column(
            column_title(column),
            [
                *(_text(group.key.get(column)) for group in report.breakdown),
                _text("Total" if index == 0 else ""),
            ],
            numeric=False,
        )
        for index, column in enumerate(columns)
    ]
    title = ", ".join(column_title(column) for column in columns) or "everything"
    return _table(_text(f"By {title}", "bold"), [*keys, *_usage_columns(usages, costs, wastes)], max_width, total=True)


def _waste(report: ReportView, max_width: int) -> Table:
    totals = report.totals
    lines = report.waste
    waste, share = waste_figure(report)
    costs = usd_column([*(line.cost for line in lines), totals.waste_cost])
    unpriced = sum(line.unpriced_attempts for line in lines)
    attempts = sum(line.attempts for line in lines)
    columns = [
        _Column("Outcome", [*(_text(line.outcome) for line in lines), _text("Total")], numeric=False),
        _Column("Attempts", [*(count_text(line.attempts) for line in lines), count_text(attempts)], last_resort=1),
        _Column(
            "Tokens", [*(count_text(line.tokens) for line in lines), count_text(totals.waste_tokens)], drop_order=0
        ),
        _Column(
            "Cost",
            [
                *(
                    cost_cell(cost, line.attempts, line.unpriced_attempts)
                    for line, cost in zip(lines, costs, strict=False)
                ),
                cost_cell(costs[-1], attempts, unpriced),
            ],
        ),
        _Column(
            "Unpriced",
            [*(count_text(line.unpriced_attempts) for line in lines), count_text(unpriced)],
            last_resort=0,
        ),
    ]
    return _table(
        _text(f"Waste: {waste}" + ("" if share is None else f", {share} of cost"), "bold"),
        columns,
        max_width,
        total=True,
        caption="Attempts whose answer the agent never used: failed, re-asked or abandoned.",
    )


def _sessions(report: ReportView, max_width: int) -> Table:
    rows = session_numbers(report)
    cells = [[numbers[index] for _, numbers in rows] for index in range(7)]
    columns = [
        _Column("Session", [_text(session) for session, _ in rows], numeric=False),
        _Column("Calls", cells[0], last_resort=1),
        _Column("Attempts", cells[1], drop_order=2),
        _Column("Tokens", cells[2], drop_order=1),
        _Column("Cost", cells[3]),
        _Column("Waste", cells[4], last_resort=0),
        _Column("Errors", cells[5], drop_order=3),
        _Column("Prompt growth", cells[6], drop_order=0),
    ]
    return _table(_text("Top sessions by cost", "bold"), columns, max_width)


def _recommendations(report: ReportView) -> Table:
    table = Table(title=_text("Recommendations", "bold"), title_justify="left", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("Finding", ratio=1, overflow="fold")
    savings = usd_column([finding.saving for finding in report.recommendations if finding.saving is not None])
    table.add_column("Saving", justify="right", no_wrap=True, min_width=max(map(len, ["not priced", *savings])))
    for number, finding in enumerate(report.recommendations, 1):
        text = _text(finding.message)
        text.append("\n")
        text.append(plain_text(finding_figure(finding)), style="dim")
        if finding.subject:
            text.append(" · " + subject_text(finding.subject), style="dim")
        saving = "not priced" if finding.saving is None else savings.pop(0)
        table.add_row(str(number), text, saving)
    return table


def _parts(report: ReportView, max_width: int) -> Iterator[RenderableType]:
    heading = _text(report_title(report), "bold")
    heading.append(f"\n{period_text(report.filters)} · generated {generated_text(report)}", style="dim")
    for name, value in filters_lines(report.filters):
        heading.append(f"\n{name} = ", style="dim")
        heading.append(value)
    yield heading
    if report.totals.attempts == 0 and report.totals.calls == 0:
        yield _text("No usage in this period.")
        return
    yield _summary(report, max_width)
    yield _breakdown(report, max_width)
    yield _waste(report, max_width)
    if report.top_sessions:
        yield _sessions(report, max_width)
    if report.recommendations:
        yield _recommendations(report)
    else:
        yield _text("No recommendation: nothing in these numbers crossed a threshold.", "dim")
    if report.unpriced_models:
        line = _text("Unpriced models (their attempts are not in the cost): ", "bold")
        line.append(", ".join(plain_text(model) for model in report.unpriced_models))
        yield line


class RichReport:
    """A report as a rich renderable: its tables are laid out for the width it is printed at.

    Print it with ``rich.console.Console().print(report.to_rich())``.
    """

    def __init__(self, report: ReportView) -> None:
        self.report = report

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Group(*_parts(self.report, options.max_width))


def render_rich(report: ReportView) -> RichReport:
    """The report for a terminal: a heading, the totals, the breakdown with its total line, the waste, and more."""
    return RichReport(report)
