"""The HTML report's charts, as inline SVG: stacked columns (cost per day by model) and horizontal bars.

Why our own: chart libraries either pull numpy and matplotlib or load
JavaScript from a CDN, and the report must be one file that makes no request.
This module knows nothing of reports: it draws labelled numbers.

What every chart does, so that it reads without colour and in dark mode:

- each series has a colour *and* a pattern (solid, stripes, dots, cross-hatch ...),
  drawn from CSS classes (``s0`` ... ``s7``, ``so`` for "other") that the page
  defines for light and dark schemes, and a legend names each one beside its swatch;
- each bar or segment has a ``<title>`` (its exact label, shown on hover), a bar
  its value written at its end or top where it fits, and the value axis has ticks;
- the ``<svg>`` is ``role="img"`` with an ``aria-label`` saying what it shows (the
  page puts the numbers in a table next to it as well);
- every string (labels come from users and models) goes through
  ``markupsafe.escape``; the result is ``Markup``, so Jinja2 does not escape it twice.

Text widths are estimated, which is what keeps labels apart and inside the drawing: the
page's font is the system's, unknown here. A character of 12 px text counts 7 px, a capital
9 px, and a full em (12 px) for the wide ones: CJK ideographs, kana, Hangul, fullwidth
forms, most emoji, ``M W m w @ % …``; combining marks and zero-width characters count 0.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from markupsafe import Markup, escape

__all__ = ["Bar", "Column", "bar_chart", "column_chart", "nice_ticks", "series_class"]

WIDTH: Final = 960  # px, the default; the page scales a chart down to fit its column, never up
CHAR_WIDTH: Final = 7.0  # px per character of the 12 px labels, a little over the average of system fonts
CAPITAL_WIDTH: Final = 9.0  # px per capital letter, a little over their average (I 3.5 px ... W 11.9 px in DejaVu Sans)
WIDE_WIDTH: Final = 12.0  # px per character a full em wide
_WIDE: Final = frozenset("MWmw@%…")
SERIES_STYLES: Final = 8  # s0 ... s7; past that the caller folds series into "other"
_ID: Final = re.compile(r"^[a-z][a-z0-9-]*$")
_LEGEND_LABEL_WIDTH: Final = 32 * CHAR_WIDTH


@dataclass(frozen=True, slots=True)
class Column:
    """One stacked column: a category (a day) and its value per series, bottom first.

    Attributes:
        label: The axis label (``05-01``).
        title: The full name, for hover (``2025-05-01``).
        values: One value per series, in the legend's order (0 where none).
        value_titles: The exact text of each value, for hover.
        total_text: The column's total, written above it where it fits.
    """

    label: str
    title: str
    values: tuple[float, ...]
    value_titles: tuple[str, ...]
    total_text: str


@dataclass(frozen=True, slots=True)
class Bar:
    """One horizontal bar: a name and its value per series, left first.

    Attributes:
        label: The name shown left of the bar (cut with ``…`` when too long; the title holds it whole).
        values: One value per series.
        value_titles: The exact text of each value, for hover.
        total_text: Written right of the bar.
    """

    label: str
    values: tuple[float, ...]
    value_titles: tuple[str, ...]
    total_text: str


def series_class(index: int, *, other: bool = False) -> str:
    """The CSS class of a series: its colour (and, in :func:`_patterns`, its pattern)."""
    return "so" if other else f"s{index % SERIES_STYLES}"


def nice_ticks(maximum: float, *, count: int = 5, unit: float = 0.0) -> list[float]:
    """Ticks from 0 to at least ``maximum``, at a step of 1, 2, 2.5 or 5 times a power of ten.

    ``unit`` is the smallest quantity the values come in (1 for tokens, a nano-USD for money): the step
    is a whole number of units, so no tick falls between two values there can be (0.2 of a token).
    """
    if maximum <= 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw = max(maximum / count, unit)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(
        factor * magnitude
        for factor in (1, 2, 2.5, 5, 10)
        if factor * magnitude >= raw and (unit <= 0 or _whole(factor * magnitude / unit))
    )
    steps = math.ceil(maximum / step - 1e-9)
    # Rounded, so 0.1 * 3 prints as 0.3 and not 0.30000000000000004.
    return [round(index * step, 12) for index in range(steps + 1)]


def _whole(value: float) -> bool:
    return math.isclose(value, round(value), rel_tol=1e-9)


def _char_width(char: str) -> float:
    if unicodedata.combining(char) or unicodedata.category(char) in {"Me", "Mn", "Cf"}:
        return 0.0  # drawn on the character before it, or not drawn (a zero-width joiner)
    if char in _WIDE or unicodedata.east_asian_width(char) in {"W", "F"}:
        return WIDE_WIDTH
    return CAPITAL_WIDTH if char.isupper() else CHAR_WIDTH


def _text_width(text: str) -> float:
    return sum(map(_char_width, text))


def _cut(text: str, width: float) -> str:
    """``text``, or as much of it as fits ``width`` px followed by ``…`` (one character at least)."""
    if _text_width(text) <= width:
        return text
    kept, used = 0, WIDE_WIDTH  # the ellipsis
    for char in text:
        used += _char_width(char)
        if used > width and kept:
            break
        kept += 1
    return text[:kept] + "…"


def _n(value: float) -> str:
    """A coordinate: one decimal, no ``-0.0``."""
    text = f"{value:.1f}"
    return "0" if text in {"0.0", "-0.0"} else text.removesuffix(".0")


def _patterns(chart_id: str, count: int, *, other: bool) -> str:
    """One ``<pattern>`` per series: its colour with a texture, so series differ in grey too."""
    marks = [
        "",  # solid
        '<path class="hatch" d="M-1,1 l2,-2 M0,8 l8,-8 M7,9 l2,-2"/>',  # stripes /
        '<circle class="dot" cx="4" cy="4" r="1.6"/>',  # dots
        '<path class="hatch" d="M0,4 h8"/>',  # horizontal lines
        '<path class="hatch" d="M-1,7 l2,2 M0,0 l8,8 M7,-1 l2,2"/>',  # stripes \\
        '<path class="hatch" d="M0,0 l8,8 M8,0 l-8,8"/>',  # cross-hatch
        '<path class="hatch" d="M4,0 v8"/>',  # vertical lines
        '<path class="hatch" d="M0,4 h8 M4,0 v8"/>',  # grid
    ]
    parts = []
    for index in range(count):
        css = series_class(index, other=other and index == count - 1)
        mark = marks[index % len(marks)] if css != "so" else '<path class="hatch" d="M0,2 h8 M0,6 h8"/>'
        parts.append(
            f'<pattern id="{chart_id}-p{index}" patternUnits="userSpaceOnUse" width="8" height="8">'
            f'<rect class="{css}" width="8" height="8"/>{mark}</pattern>'
        )
    return "<defs>" + "".join(parts) + "</defs>"


def _legend(chart_id: str, names: Sequence[str], top: float, width: float) -> tuple[str, float]:
    """The legend rows from ``top``: a swatch and a name per series, wrapped to ``width``. Returns (svg, height)."""
    parts: list[str] = []
    x, y, row_height = 0.0, top, 20.0
    for index, name in enumerate(names):
        shown = _cut(name, _LEGEND_LABEL_WIDTH)
        item = 14 + 6 + _text_width(shown) + 18
        if x > 0 and x + item > width:
            x, y = 0.0, y + row_height
        parts.append(
            f'<g class="legend-item"><title>{escape(name)}</title>'
            f'<rect class="swatch" x="{_n(x)}" y="{_n(y)}" width="14" height="14" fill="url(#{chart_id}-p{index})"/>'
            f'<text x="{_n(x + 20)}" y="{_n(y + 11.5)}">{escape(shown)}</text></g>'
        )
        x += item
    return '<g class="legend">' + "".join(parts) + "</g>", (y - top) + row_height if names else 0.0


def _open(chart_id: str, label: str, width: float, height: float) -> str:
    if not _ID.match(chart_id):
        raise ValueError(f"chart id {chart_id!r} must be lower-case letters, digits and dashes")
    return (
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {_n(width)} {_n(height)}" width="{_n(width)}" '
        f'height="{_n(height)}" role="img" aria-label="{escape(label)}" preserveAspectRatio="xMinYMin meet">'
    )


def _svg(text: str) -> Markup:
    # The one place text becomes markup: every string interpolated into it went through escape().
    return Markup(text)  # noqa: S704 - built here from escaped strings and numbers only


def _empty(chart_id: str, label: str, message: str, width: float) -> Markup:
    return _svg(
        _open(chart_id, label, width, 60)
        + f'<text class="empty" x="{_n(width / 2)}" y="34" text-anchor="middle">{escape(message)}</text></svg>'
    )


def column_chart(
    chart_id: str,
    label: str,
    series: Sequence[str],
    columns: Sequence[Column],
    axis_text: Callable[[float, float], str],
    *,
    other_last: bool = False,
    empty_message: str = "No data in this period.",
    width: float = WIDTH,
    unit: float = 0.0,
) -> Markup:
    """Stacked columns, one per category, a segment per series; the value axis on the left.

    Args:
        chart_id: A token unique in the page (pattern ids derive from it).
        label: What the chart shows, for screen readers (``aria-label``).
        series: The legend: one name per series, bottom of the stack first.
        columns: The categories, left to right.
        axis_text: ``(tick, step) -> text`` of a value-axis tick.
        other_last: The last series is "other" (drawn grey).
        empty_message: Shown instead of the chart when there is no column.
        width: The drawing's width in px (its height follows from the content).
        unit: The smallest quantity of the values (see :func:`nice_ticks`); 0: any.
    """
    if not columns or not series:
        return _empty(chart_id, label, empty_message, width)
    totals = [sum(column.values) for column in columns]
    ticks = nice_ticks(max(totals), unit=unit)
    top_value = ticks[-1]
    step = ticks[1] - ticks[0]
    tick_texts = [axis_text(tick, step) for tick in ticks]
    top, plot_height = 22.0, 220.0
    # A category label is centred on its column: the margins hold what of the first and the last one reaches
    # past their column's half (a date of a long period, under columns a few px wide), not only the axis.
    axis_left, right = max(_text_width(text) for text in tick_texts) + 14, 12.0
    overhang = (
        max(_text_width(column.label) for column in columns) / 2 + 2 - (width - axis_left - right) / len(columns) / 2
    )
    left, right = max(axis_left, overhang), max(right, overhang)
    plot_width = width - left - right
    slot = plot_width / len(columns)
    bar_width = min(56.0, slot * 0.72)
    baseline = top + plot_height
    # Every k-th category is labelled, so the labels (about 5 characters) never touch.
    label_every = max(1, math.ceil((max(_text_width(column.label) for column in columns) + 10) / slot))
    show_totals = all(_text_width(column.total_text) + 4 <= slot for column in columns)

    def y_of(value: float) -> float:
        return baseline - (value / top_value) * plot_height if top_value else baseline

    parts = [_patterns(chart_id, len(series), other=other_last)]
    parts.append('<g class="axis">')
    for tick, text in zip(ticks, tick_texts, strict=True):
        y = y_of(tick)
        parts.append(
            f'<line class="grid" x1="{_n(left)}" x2="{_n(width - right)}" y1="{_n(y)}" y2="{_n(y)}"/>'
            f'<text x="{_n(left - 6)}" y="{_n(y + 4)}" text-anchor="end">{escape(text)}</text>'
        )
    parts.append(
        f'<line class="base" x1="{_n(left)}" x2="{_n(width - right)}" y1="{_n(baseline)}" y2="{_n(baseline)}"/>'
    )
    parts.append("</g>")
    for index, column in enumerate(columns):
        center = left + slot * (index + 0.5)
        x = center - bar_width / 2
        parts.append(f'<g class="column"><title>{escape(column.title)}: {escape(column.total_text)}</title>')
        stacked = 0.0
        for series_index, value in enumerate(column.values):
            if value <= 0:
                continue
            y_top, y_bottom = y_of(stacked + value), y_of(stacked)
            stacked += value
            # A segment too thin to see still gets a sliver, so hovering finds its title.
            height = max(y_bottom - y_top, 0.8)
            parts.append(
                f'<rect class="seg" x="{_n(x)}" y="{_n(y_bottom - height)}" width="{_n(bar_width)}" '
                f'height="{_n(height)}" fill="url(#{chart_id}-p{series_index})">'
                f"<title>{escape(column.title)} · {escape(series[series_index])}: "
                f"{escape(column.value_titles[series_index])}</title></rect>"
            )
        if show_totals and totals[index] > 0:
            parts.append(
                f'<text class="value" x="{_n(center)}" y="{_n(y_of(totals[index]) - 5)}" '
                f'text-anchor="middle">{escape(column.total_text)}</text>'
            )
        if index % label_every == 0:
            parts.append(
                f'<text class="tick" x="{_n(center)}" y="{_n(baseline + 20)}" '
                f'text-anchor="middle">{escape(column.label)}</text>'
            )
        parts.append("</g>")
    legend, legend_height = _legend(chart_id, series, baseline + 36, plot_width)
    parts.append(f'<g transform="translate({_n(left)},0)">{legend}</g>')
    height = baseline + 36 + legend_height + 4
    return _svg(_open(chart_id, label, width, height) + "".join(parts) + "</svg>")


def bar_chart(
    chart_id: str,
    label: str,
    series: Sequence[str],
    bars: Sequence[Bar],
    axis_text: Callable[[float, float], str],
    *,
    empty_message: str = "No data in this period.",
    width: float = WIDTH,
    unit: float = 0.0,
) -> Markup:
    """Horizontal bars, one per name (top to bottom as given), a segment per series; the value axis below.

    Args:
        chart_id: A token unique in the page (pattern ids derive from it).
        label: What the chart shows, for screen readers (``aria-label``).
        series: One name per series, left first (a legend is drawn when there are two or more).
        bars: The names and their values.
        axis_text: ``(tick, step) -> text`` of a value-axis tick.
        empty_message: Shown instead of the chart when there is no bar.
        width: The drawing's width in px (its height follows from the number of bars).
        unit: The smallest quantity of the values (see :func:`nice_ticks`); 0: any.
    """
    if not bars or not series:
        return _empty(chart_id, label, empty_message, width)
    totals = [sum(bar.values) for bar in bars]
    # Names take at most about a third of the width; longer ones are cut (the title holds them whole).
    label_width = max(10 * CHAR_WIDTH, width * 0.32)
    left = max(_text_width(_cut(bar.label, label_width)) for bar in bars) + 12
    right = max(_text_width(bar.total_text) for bar in bars) + 14
    top, row, bar_height = 6.0, 26.0, 16.0
    names_left = left
    # Fewer ticks on a narrow axis, so that their labels never touch.
    for count in (5, 4, 3, 2, 1):
        ticks = nice_ticks(max(totals), count=count, unit=unit)
        step = ticks[1] - ticks[0]
        texts = [axis_text(tick, step) for tick in ticks]
        # The first label is centred on the axis: it must start inside the drawing, however short the names.
        left = max(names_left, _text_width(texts[0]) / 2 + 2)
        plot_width = width - left - right
        if plot_width / (len(ticks) - 1) >= max(map(_text_width, texts)) + 12:
            break
    top_value = ticks[-1]
    plot_bottom = top + row * len(bars)

    def x_of(value: float) -> float:
        return left + (value / top_value) * plot_width if top_value else left

    parts = [_patterns(chart_id, len(series), other=False)]
    parts.append('<g class="axis">')
    for tick in ticks:
        x = x_of(tick)
        parts.append(
            f'<line class="grid" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(top)}" y2="{_n(plot_bottom)}"/>'
            f'<text x="{_n(x)}" y="{_n(plot_bottom + 16)}" text-anchor="middle">{escape(axis_text(tick, step))}</text>'
        )
    parts.append("</g>")
    for index, bar in enumerate(bars):
        y = top + row * index + (row - bar_height) / 2
        parts.append(
            f'<g class="bar"><title>{escape(bar.label)}: {escape(bar.total_text)}</title>'
            f'<text class="name" x="{_n(left - 8)}" y="{_n(y + 12.5)}" text-anchor="end">'
            f"{escape(_cut(bar.label, label_width))}</text>"
        )
        start = 0.0
        for series_index, value in enumerate(bar.values):
            if value <= 0:
                continue
            x0, x1 = x_of(start), x_of(start + value)
            start += value
            parts.append(
                f'<rect class="seg" x="{_n(x0)}" y="{_n(y)}" width="{_n(max(x1 - x0, 0.8))}" '
                f'height="{_n(bar_height)}" fill="url(#{chart_id}-p{series_index})">'
                f"<title>{escape(bar.label)} · {escape(series[series_index])}: "
                f"{escape(bar.value_titles[series_index])}</title></rect>"
            )
        parts.append(
            f'<text class="value" x="{_n(x_of(totals[index]) + 6)}" y="{_n(y + 12.5)}">'
            f"{escape(bar.total_text)}</text></g>"
        )
    parts.append(f'<line class="base" x1="{_n(left)}" x2="{_n(left)}" y1="{_n(top)}" y2="{_n(plot_bottom)}"/>')
    height = plot_bottom + 24
    if len(series) > 1:
        legend, legend_height = _legend(chart_id, series, height + 4, plot_width)
        parts.append(f'<g transform="translate({_n(left)},0)">{legend}</g>')
        height += legend_height + 8
    return _svg(_open(chart_id, label, width, height) + "".join(parts) + "</svg>")
