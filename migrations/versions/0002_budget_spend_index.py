"""Indexes for budgets kept per session and per agent: their spend in a period is read from an index alone.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

A budget reads ``SUM(cost_nanousd)`` over one key's rows in a range of days.
Per project, the report index (project, day, ...) already covers it; per
session or agent within a project, these do, so the read stays a short range
scan of an index however large the ledger grows.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_ar_usage_records_session_spend", "ar_usage_records", ["project", "session", "day", "cost_nanousd"]
    )
    op.create_index("ix_ar_usage_records_agent_spend", "ar_usage_records", ["project", "agent", "day", "cost_nanousd"])


def downgrade() -> None:
    op.drop_index("ix_ar_usage_records_agent_spend", table_name="ar_usage_records")
    op.drop_index("ix_ar_usage_records_session_spend", table_name="ar_usage_records")
