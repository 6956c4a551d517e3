"""Usage reports: what the ledger says a project cost, where it went, and what to change.

``UsageStore.report(...)`` makes a :class:`UsageReport`, aggregating in SQL;
its renderers turn it into JSON, CSV, Markdown, a terminal table or one
self-contained HTML page with charts.
"""

from ._model import DailyCost, Group, Recommendation, ReportFilters, SessionGrowth, Usage, UsageReport, WasteLine
from ._recommend import ReportThresholds, recommend

__all__ = [
    "DailyCost",
    "Group",
    "Recommendation",
    "ReportFilters",
    "ReportThresholds",
    "SessionGrowth",
    "Usage",
    "UsageReport",
    "WasteLine",
    "recommend",
]
