"""The breakdown of a report as CSV: one row per group, the ``group_by`` columns first, then the numbers.

The numbers are the keys of :meth:`Usage.to_dict` (``cost_usd``, ``error_rate``,
...), so a spreadsheet and the JSON name them alike. Money is the exact decimal in
plain notation; an undefined rate or a latency that was not computed is an empty
cell; a group value that was None (an agent never named) is an empty cell too.
A group value that a spreadsheet would run as a formula (it starts with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return: agent names and tags come from
users and models) is written with a leading ``'``, which spreadsheets read as
"this is text" (OWASP's advice against CSV injection).
No total row: summing the column gives it, and a total among the groups would be
counted twice by whoever sums.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Final

from ._format import decimal_text

if TYPE_CHECKING:
    from ._view import ReportView, UsageView

__all__ = ["NUMBER_COLUMNS", "render_csv"]

_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")

NUMBER_COLUMNS: Final = (
    "calls",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_attempts",
    "errors",
    "invalid",
    "cancelled",
    "cache_hits",
    "retried_calls",
    "waste_cost_usd",
    "waste_tokens",
    "latency_p50_ms",
    "latency_p95_ms",
    "error_rate",
    "retry_rate",
    "reask_rate",
    "cache_hit_rate",
    "cached_token_rate",
    # Added last, so the columns before them keep their places for whoever reads them by position.
    "waste_unpriced_attempts",
    "cache_write_tokens",
)
"""The columns after the ``group_by`` ones, in order."""


def _cells(usage: UsageView) -> list[str]:
    values = usage.to_dict()
    values["cost_usd"] = usage.cost
    values["waste_cost_usd"] = usage.waste_cost
    cells = []
    for name in NUMBER_COLUMNS:
        value = values[name]
        if value is None:
            cells.append("")
        elif isinstance(value, float):
            cells.append(repr(value))
        elif isinstance(value, int):
            cells.append(str(value))
        else:
            cells.append(decimal_text(value))
    return cells


def _key_cell(value: str | None) -> str:
    if value is None:
        return ""
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value


def render_csv(report: ReportView) -> str:
    """The breakdown table as CSV text (``\\r\\n`` line ends, as the csv module and RFC 4180 write them)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*report.group_by, *NUMBER_COLUMNS])
    for group in report.breakdown:
        key = [_key_cell(group.key.get(column)) for column in report.group_by]
        writer.writerow([*key, *_cells(group.usage)])
    return out.getvalue()
