"""The usage report's renderers: CSV, Markdown, the rich table and the HTML page with its SVG charts.

Reports are built straight from the data model (tests/report_fixtures.py), so these
tests judge only the rendering; each output is read back by an independent reader
(the csv module, markdown-it-py, rich's recorded text, html.parser) and compared
with the numbers the report holds.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources

import pytest
from markdown_it import MarkdownIt
from rich.cells import cell_len
from rich.console import Console

from autogen_reliability.reports import (
    DailyCost,
    Group,
    ReportFilters,
    SessionGrowth,
    Usage,
    UsageReport,
    WasteLine,
)
from autogen_reliability.reports._csv import NUMBER_COLUMNS
from autogen_reliability.reports._format import (
    count_text,
    decimal_text,
    growth_text,
    plain_text,
    rate_text,
    usd_column,
    usd_compact,
    usd_text,
)
from autogen_reliability.reports._svg import Bar, bar_chart, nice_ticks

from .conftest import run_python
from .report_fixtures import (
    AGENTS,
    BIDI_CONTROLS,
    HOSTILE,
    MODELS,
    UNPRICED_MODEL,
    empty_report,
    hostile_report,
    make_report,
)
from .report_html import Node, parse

# ---- formatting


def test_money_is_written_exactly() -> None:
    assert decimal_text(Decimal("1E-9")) == "0.000000001"
    assert decimal_text(Decimal("1234.500")) == "1234.5"
    assert decimal_text(Decimal(0)) == "0"
    assert usd_text(Decimal("1234.5")) == "$1,234.50"
    assert usd_text(Decimal("0.000123456")) == "$0.000123456"
    assert usd_text(Decimal("12345.678901234")) == "$12,345.678901234"
    assert usd_text(Decimal(-3)) == "-$3.00"
    # A column shares its decimals, adding zeros only: every value is still exactly itself.
    column = usd_column([Decimal("0.307287585"), Decimal("0.07"), Decimal(0), Decimal("1500")])
    assert column == ["$0.307287585", "$0.070000000", "$0.000000000", "$1,500.000000000"]
    assert [Decimal(text.replace("$", "").replace(",", "")) for text in column] == [
        Decimal("0.307287585"),
        Decimal("0.07"),
        Decimal(0),
        Decimal(1500),
    ]


@pytest.mark.parametrize(
    ("first", "last", "shown"),
    [
        (1_200, 5_400, "1,200 → 5,400 (4.5 times)"),
        (10_000, 10_000, "10,000 → 10,000 (1.0 times)"),
        (10_000, 2_500, "10,000 → 2,500 (0.2 times)"),  # 0.25: rounded half to even, as Python does
        # A prompt that shrank to a few percent of the first is not "0.0 times", which reads as no prompt at all.
        (10_000, 300, "10,000 → 300 (0.03 times)"),
        (200_000, 150, "200,000 → 150 (0.0008 times)"),
        (2_000_000_000, 1, "2,000,000,000 → 1 (0.0000000005 times)"),  # never 5e-10
        (0, 300, "—"),
    ],
)
def test_a_sessions_growth_is_shown_with_a_digit_that_is_not_zero(first: int, last: int, shown: str) -> None:
    growth = SessionGrowth("s", "gpt-4o", 5, first, last, first + last, Decimal(0))
    assert growth_text(growth) == shown


def test_rates_and_user_strings_are_shown_on_one_line() -> None:
    assert rate_text(None) == "—"
    assert rate_text(0.0001) == "<0.1%"
    assert rate_text(0.1234) == "12.3%"
    # Nor a false 100.0%: 1,999 failed attempts of 2,000 are not all of them.
    assert rate_text(1999 / 2000) == ">99.9%"
    assert rate_text(0.9994) == "99.9%"
    assert rate_text(1.0) == "100.0%"
    assert plain_text("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert plain_text(None) == "(none)"
    # A bidirectional control would reorder the line it is shown on: it is shown as its escape too.
    assert plain_text("invoice\u202efdp.exe") == "invoice\\u202efdp.exe"
    for control in BIDI_CONTROLS:
        assert plain_text(f"a{control}b") == f"a\\u{ord(control):04x}b"


def test_no_rendering_for_a_reader_holds_a_bidirectional_control() -> None:
    report = hostile_report()
    assert any(control in hostile for hostile in HOSTILE for control in BIDI_CONTROLS)
    for name, text in (("md", report.to_markdown()), ("rich", _rich_text(report)), ("html", report.to_html())):
        assert not set(text) & set(BIDI_CONTROLS), name


@pytest.mark.parametrize("maximum", [0.0004, 0.003, 0.97, 1.0, 1.52, 7.3, 12.0, 99.0, 1234.5, 2.5e6, 218e6])
def test_nice_ticks_cover_the_maximum_at_a_round_step(maximum: float) -> None:
    ticks = nice_ticks(maximum)
    step = ticks[1] - ticks[0]
    assert ticks[0] == 0
    assert ticks[-1] >= maximum
    assert ticks[-2] < maximum  # no empty tick past the data
    assert 2 <= len(ticks) <= 7
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, factor) for factor in (1, 2, 2.5, 5)), step


@pytest.mark.parametrize("maximum", [0.0012, 0.012, 0.12, 1.2, 11.0, 12.0, 120.0, 0.97, 7.3, 1234.5, 2.5e6])
def test_a_money_axis_tick_shows_its_own_value(maximum: float) -> None:
    # A step of 2.5 (x a power of ten) has a decimal more than its first digit says: 7.5 is $7.50, not $8.
    ticks = nice_ticks(maximum)
    step = ticks[1] - ticks[0]
    for tick in ticks:
        label = usd_compact(tick, step=step)
        assert Decimal(label.removeprefix("$").replace(",", "")) == Decimal(repr(tick)), (tick, label)
    svg = bar_chart("costs", "Cost", ["cost"], [Bar("a", (12.0,), ("$12",), "$12")], usd_compact_axis)
    (axis,) = parse(svg).find_all("g", cls="axis")
    labels = [node.text() for node in axis.find_all("text")]
    assert labels[0] in {"$0", "$0.00"}
    assert not {"$2", "$8", "$12"} & set(labels), labels
    assert "$12.50" in labels or "$15" in labels, labels


def usd_compact_axis(tick: float, step: float) -> str:
    """A money axis's tick, as the HTML report writes it."""
    return usd_compact(tick, step=step)


def test_nothing_to_chart_is_a_message_not_a_division_by_zero() -> None:
    assert nice_ticks(0) == [0.0, 1.0]
    svg = parse(bar_chart("empty-chart", "Nothing", ["cost"], [], lambda tick, step: str(tick)))
    assert "No data in this period." in svg.text()
    zero = bar_chart("zero-chart", "Zero", ["cost"], [Bar("a", (0.0,), ("$0",), "$0")], lambda t, s: usd_compact(t))
    assert 'role="img"' in zero


def test_a_chart_id_is_a_token() -> None:
    with pytest.raises(ValueError, match="chart id"):
        bar_chart('x" onload="alert(1)', "label", ["cost"], [Bar("a", (1.0,), ("$1",), "$1")], lambda t, s: "")


def test_importing_the_package_loads_neither_jinja2_nor_rich() -> None:
    result = run_python(
        "import sys; from autogen_reliability import *; from autogen_reliability.reports import *\n"
        "print(sorted(name for name in ('jinja2', 'rich', 'playwright') if name in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---- CSV


def _csv_rows(report: UsageReport) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(report.to_csv(), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def test_csv_parses_back_to_the_same_numbers() -> None:
    report = make_report(days=9, models=MODELS[:5], agents=AGENTS[:5])
    header, rows = _csv_rows(report)
    assert header == [*report.group_by, *NUMBER_COLUMNS]
    assert len(rows) == len(report.breakdown) > 10
    for row, group in zip(rows, report.breakdown, strict=True):
        assert {column: row[column] for column in report.group_by} == dict(group.key)
        expected = group.usage.to_dict()
        for column in NUMBER_COLUMNS:
            value = expected[column]
            if column.endswith("_usd"):
                assert Decimal(row[column]) == Decimal(value), column
            elif value is None:
                assert row[column] == ""
            elif isinstance(value, float):
                assert float(row[column]) == value, column
            else:
                assert int(row[column]) == value, column
    assert sum(Decimal(row["cost_usd"]) for row in rows) == report.totals.cost
    assert sum(int(row["attempts"]) for row in rows) == report.totals.attempts


def test_csv_money_is_a_plain_decimal_and_a_missing_number_an_empty_cell() -> None:
    usage = Usage(calls=1, attempts=1, cost=Decimal(1) / Decimal(10**9), waste_cost=Decimal("1234567.123456789"))
    report = replace(make_report(days=1), group_by=("agent",), breakdown=(Group({"agent": None}, usage),))
    _, rows = _csv_rows(report)
    assert rows[0]["agent"] == ""
    assert rows[0]["cost_usd"] == "0.000000001"
    assert rows[0]["waste_cost_usd"] == "1234567.123456789"
    assert rows[0]["latency_p50_ms"] == rows[0]["cached_token_rate"] == ""  # not computed; no prompt tokens
    assert rows[0]["error_rate"] == "0.0"


def test_csv_keeps_hostile_names_as_text_and_never_as_a_formula() -> None:
    report = hostile_report()
    _, rows = _csv_rows(report)
    assert len(rows) == len(report.breakdown)
    seen = set()
    for row, group in zip(rows, report.breakdown, strict=True):
        for column in report.group_by:
            value = group.key[column]
            assert value is not None
            seen.add(value)
            if value.startswith(("=", "+", "-", "@")):
                assert row[column] == "'" + value
            else:
                assert row[column] == value  # newlines, quotes, commas and pipes survive the round trip
    assert '=HYPERLINK("evil","x")' in seen
    assert "a|b\nc\r\nd" in seen


def test_csv_of_an_empty_report_is_its_header() -> None:
    header, rows = _csv_rows(empty_report())
    assert header == ["agent", "model", *NUMBER_COLUMNS]
    assert rows == []


# ---- Markdown


# The elements a report's Markdown renders to: never a link, an image or raw HTML, whatever the names.
MARKDOWN_TAGS = {"#document", "h1", "h2", "p", "table", "thead", "tbody", "tr", "th", "td", "strong", "ol", "li"}


def _markdown_dom(text: str) -> Node:
    return parse(MarkdownIt("commonmark").enable("table").render(text))


def test_markdown_has_the_summary_totals_waste_breakdown_sessions_and_findings() -> None:
    report = make_report()
    text = report.to_markdown()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "# Usage of acme-support",
        "## Totals",
        "## Waste",
        "## By Agent, Model",
        "## Top sessions",
        "## Recommendations",
    ]
    dom = _markdown_dom(text)
    tables = dom.find_all("table")
    assert len(tables) == 4  # totals, waste, breakdown, sessions
    breakdown = tables[2]
    rows = breakdown.find_all("tr")
    assert len(rows) == 1 + len(report.breakdown) + 1  # heading, groups, total
    width = len(rows[0].find_all("th"))
    assert all(len(row.find_all("td")) == width for row in rows[1:])
    total = [cell.text() for cell in rows[-1].find_all("td")]
    costs = usd_column([*(group.usage.cost for group in report.breakdown), report.totals.cost])
    assert total[0] == "Total"
    assert costs[-1] in total
    assert count_text(report.totals.calls) in total
    for row, group, cost in zip(rows[1:-1], report.breakdown, costs, strict=False):
        cells = [cell.text() for cell in row.find_all("td")]
        assert cells[:2] == [group.key["agent"], group.key["model"]]
        assert cells[5] == ("unpriced" if group.usage.unpriced_attempts == group.usage.attempts else cost)
    assert usd_text(report.totals.waste_cost) in text
    for finding in report.recommendations:
        assert finding.message in dom.text()
    assert report.percentile_method in text


def test_markdown_shows_hostile_strings_as_text() -> None:
    report = hostile_report()
    text = report.to_markdown()
    dom = _markdown_dom(text)
    assert {node.tag for node in dom.walk()} <= MARKDOWN_TAGS
    for node in dom.walk():
        assert [name for name, _ in node.attrs] in ([], ["style"]), node  # only the cells' text-align
    shown = dom.text()
    for hostile in HOSTILE:
        assert plain_text(hostile) in shown, hostile
    # Every row of the breakdown has as many cells as its heading: no name's pipe split a row.
    breakdown = dom.find_all("table")[2]
    rows = breakdown.find_all("tr")
    assert len(rows) == 2 + len(report.breakdown)
    assert {len(row.find_all("td")) for row in rows[1:]} == {len(rows[0].find_all("th"))}


def test_markdown_on_github_shows_hostile_strings_as_text_and_links_nothing() -> None:
    # GitHub's own renderer: its autolinks make a link of a bare http://, https://, ftp:// or www. address,
    # which CommonMark (markdown-it-py above) leaves as text.
    import cmarkgfm  # noqa: PLC0415  # only this test needs it

    report = hostile_report()
    dom = parse(cmarkgfm.github_flavored_markdown_to_html(report.to_markdown()))
    assert {node.tag for node in dom.walk()} <= MARKDOWN_TAGS  # no a, no img, no raw HTML
    for node in dom.walk():
        assert [name for name, _ in node.attrs] in ([], ["align"]), node  # only the cells' alignment
    shown = dom.text()
    for hostile in HOSTILE:
        assert plain_text(hostile) in shown, hostile


def test_markdown_of_an_empty_report_says_so() -> None:
    text = empty_report().to_markdown()
    assert "No usage in this period." in text
    assert "|" not in text


# ---- rich


def _rich_text(report: UsageReport, width: int = 200) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(report.to_rich())
    return console.export_text()


def test_rich_table_has_a_total_line_the_waste_and_exact_money_right_aligned() -> None:
    report = make_report()
    text = _rich_text(report)
    lines = text.splitlines()
    costs = usd_column([*(group.usage.cost for group in report.breakdown), report.totals.cost])
    wastes = usd_column([*(group.usage.waste_cost for group in report.breakdown), report.totals.waste_cost])
    totals = [line for line in lines if line.startswith("│ Total")]
    assert len(totals) == 2  # the breakdown's and the waste's
    assert costs[-1] in totals[0]
    assert wastes[-1] in totals[0]
    assert count_text(report.totals.calls) in totals[0]
    assert count_text(report.totals.attempts) in totals[0]
    assert f"Waste: {usd_text(report.totals.waste_cost)}" in text
    # Each group's exact cost, right-aligned: every one ends in the same column as the total's.
    ends = set()
    for group, exact in zip(report.breakdown, costs, strict=False):
        cost = "unpriced" if group.usage.unpriced_attempts == group.usage.attempts else exact
        row = next(line for line in lines if re.search(rf"│ {group.key['agent']} +│ {group.key['model']} +│", line))
        assert cost in row
        ends.add(row.index(cost) + len(cost))
    ends.add(totals[0].index(costs[-1]) + len(costs[-1]))
    assert len(ends) == 1
    for finding in report.recommendations:
        assert finding.message in text
    assert UNPRICED_MODEL in text


def test_rich_in_a_narrow_terminal_leaves_columns_out_rather_than_cut_a_number() -> None:
    report = make_report()
    text = _rich_text(report, width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    costs = usd_column([*(group.usage.cost for group in report.breakdown), report.totals.cost])
    total = next(line for line in text.splitlines() if line.startswith("│ Total"))
    assert costs[-1] in total
    for group, cost in zip(report.breakdown, costs, strict=False):
        if group.usage.unpriced_attempts < group.usage.attempts:
            assert cost in text
    assert "Not shown, for width: p95, Re-asks" in text.replace("\n", " ")
    assert "Not shown, for width: p95 (a wider terminal shows it)." in _rich_text(report, width=132).replace("\n", " ")
    # A wide one leaves nothing out.
    assert "Not shown" not in _rich_text(report, width=200)


@pytest.mark.parametrize(
    ("width", "group_by"),
    [(40, ("agent", "model")), (48, ("agent", "model")), (55, ("agent", "model")), (60, ("agent", "model")),
     (70, ("agent", "model")), (45, ("agent", "model", "day", "provider"))],
)  # fmt: skip
def test_rich_narrower_than_the_numbers_leaves_out_more_columns_and_never_cuts_money(
    width: int, group_by: tuple[str, ...]
) -> None:
    # A split pane: once every optional column is gone and names are folded, the waste and the calls go
    # too (the caption names them), then names fold narrower; the cost stays. No line is cropped, no amount
    # is shown cut short, the summary's included.
    report = make_report(group_by=group_by)
    text = _rich_text(report, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    assert usd_text(report.totals.cost) in text  # the summary's
    costs = usd_column([*(group.usage.cost for group in report.breakdown), report.totals.cost])
    assert costs[-1] in text  # the total line's
    for group, cost in zip(report.breakdown, costs, strict=False):
        if group.usage.unpriced_attempts < group.usage.attempts:
            assert cost in text
    caption = " ".join(text.split())
    wastes = usd_column([*(group.usage.waste_cost for group in report.breakdown), report.totals.waste_cost])
    if "Waste" not in " ".join(re.findall(r"Not shown, for width: ([^(]*)", caption)):
        for group, waste in zip(report.breakdown, wastes, strict=False):
            assert group.usage.waste_unpriced_attempts > 0 or waste in text
    assert all(
        line.rstrip().endswith(("│", "┃", "┓", "┩", "┘", "┤")) for line in text.splitlines() if line[:1] in "│┃┏┡└├"
    )


@pytest.mark.parametrize("width", [60, 80, 100])
def test_rich_measures_wide_characters_in_names_by_the_cells_they_take(width: int) -> None:
    # A CJK character (or an emoji) takes two cells of a terminal: names measured in characters made the
    # table wider than the terminal, and the columns at its right edge were cropped ("$0.0" for "$0.00").
    agents = ["翻訳エージェント担当者です", "要約エージェント担当者です", "検索エージェント", "🤖" * 12]
    report = make_report(agents=agents, session_names=["会話セッション番号一二三四五", "セッション二"])
    text = _rich_text(report, width=width)
    assert max(cell_len(line) for line in text.splitlines()) <= width
    assert all(
        line.rstrip().endswith(("│", "┃", "┓", "┩", "┘", "┤")) for line in text.splitlines() if line[:1] in "│┃┏┡└├"
    )
    costs = usd_column([*(group.usage.cost for group in report.breakdown), report.totals.cost])
    assert costs[-1] in next(line for line in text.splitlines() if line.startswith("│ Total"))
    caption = " ".join(text.split())
    if "Waste" not in " ".join(re.findall(r"Not shown, for width: ([^(]*)", caption)):
        wastes = usd_column([*(group.usage.waste_cost for group in report.breakdown), report.totals.waste_cost])
        assert wastes[-1] in next(line for line in text.splitlines() if line.startswith("│ Total"))


def test_rich_keeps_model_names_whole_while_an_optional_column_can_make_room() -> None:
    report = make_report()
    for width in (100, 120):
        text = _rich_text(report, width=width)
        for group in report.breakdown:
            model = group.key["model"]
            if model is not None and len(model) <= 24:
                assert re.search(rf"│ {re.escape(model)} +│", text), (width, model)


def test_rich_shows_markup_in_names_as_written() -> None:
    text = _rich_text(hostile_report(), width=400)
    # As a cell of its own (the session's, in the top sessions), not only inside a longer line.
    assert re.search(r"│ \[bold red\]rich markup\[/bold red\] +│ +[0-9]", text)
    assert "a|b\\nc\\r\\nd" in text
    assert "<script>alert(1)</script>" in text


@pytest.mark.parametrize("key", ["[/]", "[bold red]team[/bold red]", "[link=https://evil.example]x"])
def test_rich_shows_markup_in_a_tag_columns_heading_as_written(key: str) -> None:
    # The heading of a tag column is the key the user asked for (--by tag:KEY): text, like every name.
    report = make_report(group_by=("agent", f"tag:{key}"), tags={key: "search"})
    text = _rich_text(report, width=400)
    assert re.search(rf"┃ Agent +┃ {re.escape(f'tag:{key}')} +┃ +Calls ┃", text)


def test_rich_of_an_empty_report_says_so() -> None:
    text = _rich_text(empty_report())
    assert "No usage in this period." in text
    assert "Total" not in text


# ---- HTML

SECTIONS = (
    "summary",
    "cost-per-day-section",
    "cost-by-agent-section",
    "tokens-by-model-section",
    "waste",
    "breakdown",
    "top-sessions",
    "recommendations",
)
CHARTS = ("cost-per-day", "cost-by-agent", "tokens-by-model", "waste-by-outcome")
# What may carry a URL; in the report each is a data: URL or a reference inside the page.
URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "poster", "data", "srcset", "background"}


def _saving_card(report: UsageReport) -> str:
    cards = parse(report.to_html()).by_id("summary").find_all("div", cls="card")
    return next(card.text() for card in cards if "Possible saving" in card.text())


def test_the_possible_saving_card_sums_only_findings_with_an_estimate() -> None:
    report = make_report()
    priced = [finding for finding in report.recommendations if finding.saving is not None]
    unpriced = [finding for finding in report.recommendations if finding.saving is None]
    assert priced
    assert unpriced
    # Findings with no estimate only: nothing is estimated, which is not a saving of $0.00.
    card = _saving_card(replace(report, recommendations=tuple(unpriced)))
    assert "$0.00" not in card
    assert "not estimated" in card
    assert "1 finding, with no estimate" in card
    # One estimate: "1 finding's", not "1 findings'"; the findings with none are counted apart.
    card = _saving_card(replace(report, recommendations=(priced[0], *unpriced)))
    assert usd_text(priced[0].saving or Decimal(0)) in card
    assert "at most: the estimate of 1 finding (1 more has none)" in card
    card = _saving_card(report)
    assert usd_text(sum((finding.saving or Decimal(0) for finding in priced), Decimal(0))) in card
    assert f"at most: the sum of {len(priced)} findings' estimates (1 more has none)" in card
    assert _saving_card(replace(report, recommendations=())).endswith("no recommendation")


def test_html_has_every_section_chart_and_number() -> None:
    report = make_report()
    page = report.to_html()
    dom = parse(page)
    for section in SECTIONS:
        dom.by_id(section)
    for chart in CHARTS:
        svg = dom.by_id(chart)
        assert svg.tag == "svg"
        assert svg.attr("role") == "img"
        assert svg.attr("aria-label")
        segments = svg.find_all("rect", cls="seg")
        assert segments
        # Every bar and segment says what it is when hovered.
        assert all(len(segment.find_all("title")) == 1 for segment in segments)
    cards = dom.by_id("summary").text()
    for figure in (
        usd_text(report.totals.cost),
        count_text(report.totals.calls),
        count_text(report.totals.attempts),
        count_text(report.totals.tokens),
        rate_text(report.totals.error_rate),
        rate_text(report.totals.retry_rate),
        rate_text(report.totals.reask_rate),
        rate_text(report.totals.cache_hit_rate),
        usd_text(report.totals.waste_cost),
        count_text(report.totals.unpriced_attempts),
    ):
        assert figure in cards, figure
    breakdown = dom.by_id("breakdown")
    rows = breakdown.find_all("tr")
    assert len(rows) == 1 + len(report.breakdown) + 1
    assert rows[-1].text().startswith("Total")
    assert usd_column([report.totals.cost])[0] in rows[-1].text()
    findings = dom.by_id("recommendations").find_all("li")
    assert len(findings) == len(report.recommendations)
    for item, finding in zip(findings, report.recommendations, strict=True):
        assert finding.message in item.text()
        assert finding.metric in item.text()
    assert usd_text(Decimal("0.412")) in dom.by_id("recommendations").text()
    assert "not priced" in dom.by_id("recommendations").text()
    footer = dom.find_all("footer")[0].text()
    assert report.percentile_method in footer
    assert "2025-05-08 09:30:12 UTC" in footer
    assert "2025-05-01 → 2025-05-08 (UTC)" in dom.find_all("header")[0].text()


def test_html_makes_no_request_of_any_kind() -> None:
    page = make_report().to_html()
    dom = parse(page)
    assert "http://" not in page
    assert "https://" not in page
    assert not dom.find_all("script")
    assert not dom.find_all("img")
    assert not dom.find_all("iframe")
    assert not dom.find_all("object")
    assert [link.attr("rel") for link in dom.find_all("link")] == ["icon"]  # href="data:,": no favicon request
    for node in dom.walk():
        for name, value in node.attrs:
            if name in URL_ATTRIBUTES:
                assert (value or "").startswith(("data:", "#")), (node.tag, name, value)
            if value and "url(" in value:
                assert re.fullmatch(r"url\(#[a-z0-9-]+\)", value), (node.tag, name, value)
    styles = " ".join(style.text() for style in dom.find_all("style"))
    assert "@import" not in styles
    assert "url(" not in styles
    assert "@font-face" not in styles
    csp = next(meta for meta in dom.find_all("meta") if meta.attr("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in (csp.attr("content") or "")


def test_html_shows_hostile_strings_as_text_never_as_markup() -> None:
    report = hostile_report()
    page = report.to_html()
    dom = parse(page)
    assert not dom.find_all("script")
    assert not dom.find_all("img")
    assert len(dom.find_all("svg")) == len(CHARTS)  # ours; "<svg onload=...>" stayed text
    for node in dom.walk():
        for name, value in node.attrs:
            assert not name.startswith("on"), (node.tag, name)
            assert "javascript:" not in (value or "").lower(), (node.tag, name)
    shown = dom.text()
    for hostile in HOSTILE:
        assert plain_text(hostile) in shown, hostile
    # The title element and the charts' labels and hover titles hold them as text too.
    assert HOSTILE[0] in dom.find_all("title")[0].text()
    chart_text = dom.by_id("cost-by-agent").text()
    assert any(plain_text(agent)[:10] in chart_text for agent in HOSTILE)


def test_html_of_an_empty_report_says_so() -> None:
    dom = parse(empty_report().to_html())
    assert "No usage in this period." in dom.by_id("empty").text()
    assert not dom.find_all("svg")


def test_an_axis_of_one_attempt_ticks_whole_tokens_and_whole_nano_usd() -> None:
    # One attempt of 1 token and $0.000000001: no tick between two whole tokens ("0 0 0 1 1 1" for 0, 0.2,
    # 0.4 ...) nor below the ledger's unit, and the first tick's label starts inside the chart.
    one = Usage(calls=1, attempts=1, prompt_tokens=1, cost=Decimal("0.000000001"))
    report = UsageReport(
        filters=ReportFilters(project="acme-support"),
        generated_at=datetime(2025, 5, 8, 9, 30, tzinfo=UTC),
        group_by=("agent", "model"),
        totals=one,
        waste=tuple(WasteLine(outcome, 0, 0, Decimal(0), 0) for outcome in ("error", "invalid", "cancelled")),
        breakdown=(Group({"agent": "a", "model": "m"}, one),),
        by_model=(Group({"model": "m"}, one),),
        by_agent=(Group({"agent": "a"}, one),),
        daily=(DailyCost(date(2025, 5, 1), "m", Decimal("0.000000001"), 1, 1, 0),),
    )
    dom = parse(report.to_html())
    tokens = [node.text() for node in dom.by_id("tokens-by-model").find_all("g", cls="axis")[0].find_all("text")]
    assert tokens == ["0", "1"]
    for chart in ("cost-per-day", "cost-by-agent"):
        axis = dom.by_id(chart).find_all("g", cls="axis")[0]
        for node in axis.find_all("text"):
            nano = Decimal(node.text().removeprefix("$")) * 10**9
            assert nano == nano.to_integral_value(), (chart, node.text())
            anchor = node.attr("text-anchor")
            start = float(node.attr("x") or 0) - (len(node.text()) * 7.0 / 2 if anchor == "middle" else 0)
            if anchor == "end":
                start -= len(node.text()) * 7.0
            assert start >= 0, (chart, node.text())


@pytest.mark.parametrize("days", [1, 7, 60])
def test_the_daily_chart_has_a_column_per_day_and_labels_that_do_not_touch(days: int) -> None:
    report = make_report(days=days, models=MODELS, agents=AGENTS[:3])
    svg = parse(report.to_html()).by_id("cost-per-day")
    columns = svg.find_all("g", cls="column")
    assert len(columns) == days
    ticks = svg.find_all("text", cls="tick")
    assert 1 <= len(ticks) <= days
    positions = [float(tick.attr("x") or 0) for tick in ticks]
    widths = [len(tick.text()) * 7.0 for tick in ticks]
    for (left, width), right in zip(zip(positions, widths, strict=True), positions[1:], strict=False):
        assert right - left >= width, (left, right)


def test_twenty_models_fold_into_the_top_seven_and_other() -> None:
    report = make_report(days=10, models=MODELS, agents=AGENTS)
    dom = parse(report.to_html())
    legend = [item.text() for item in dom.by_id("cost-per-day").find_all("g", cls="legend-item")]
    priced = {line.model for line in report.daily if line.cost > 0}
    assert len(priced) == 20
    assert len(legend) == 8
    assert legend[-1].endswith("other (13 models)")
    bars = dom.by_id("tokens-by-model").find_all("g", cls="bar")
    assert len(bars) == 13
    assert "other (9 models)" in bars[-1].text()
    # Only priced models are stacked; the unpriced one is named under the chart.
    assert f"{UNPRICED_MODEL} (" in dom.by_id("cost-per-day-section").text()


def test_the_template_is_package_data() -> None:
    template = resources.files("autogen_reliability.reports").joinpath("templates/report.html.j2")
    assert template.is_file()
