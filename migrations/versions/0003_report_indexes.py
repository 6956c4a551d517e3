"""Indexes for usage reports: the report index covers every column a report reads; sessions are indexed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

``ix_ar_usage_records_report`` grew from (project, day, model, agent and the
sums of tokens and cost) to every column ``UsageStore.report`` aggregates, so a
report walks only this index, in its order, and never the wide rows: the
grouped columns first (project, day, model, agent, outcome, provider,
error_kind), then what is summed, counted or bucketed. On SQLite a report of a
million rows took 1.8-2 s through a table scan that sorted for its GROUP BY,
and about a third of that walking this index (docs/reports.md has the numbers).

``ix_ar_usage_records_session`` finds the rows of a few sessions (the top
sessions of a report, a report of one session), and covers the search for the
top sessions by cost: SQLite groups by session while walking it (0.15 s for a
million rows, where the report index and a sort by session took 0.6-1.1 s).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REPORT_0001 = ["project", "day", "model", "agent", "prompt_tokens", "completion_tokens", "cost_nanousd"]
_REPORT_0002 = [
    "project",
    "day",
    "model",
    "agent",
    "outcome",
    "provider",
    "error_kind",
    "attempt",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_nanousd",
    "cache_hit",
    "latency_ms",
    "session",
]

_SESSION = ["session", "day", "project", "agent", "cost_nanousd"]


def upgrade() -> None:
    op.drop_index("ix_ar_usage_records_report", table_name="ar_usage_records")
    op.create_index("ix_ar_usage_records_report", "ar_usage_records", _REPORT_0002)
    op.create_index("ix_ar_usage_records_session", "ar_usage_records", _SESSION)


def downgrade() -> None:
    op.drop_index("ix_ar_usage_records_session", table_name="ar_usage_records")
    op.drop_index("ix_ar_usage_records_report", table_name="ar_usage_records")
    op.create_index("ix_ar_usage_records_report", "ar_usage_records", _REPORT_0001)
