"""The usage ledger: ar_usage_records (one row per provider attempt) and ar_usage_content.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22

Written out in full rather than importing the models: a revision is a snapshot
of the schema on the day it was written, and must not change when the models do.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ar_usage_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("call_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("project", sa.String(), nullable=True),
        sa.Column("session", sa.String(), nullable=True),
        sa.Column("agent", sa.String(), nullable=True),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("response_model", sa.String(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("cache_write_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=True),
        sa.Column("tokens_estimated", sa.Boolean(), nullable=False),
        sa.Column("cost_nanousd", sa.BigInteger(), nullable=True),
        sa.Column("price_source", sa.String(), nullable=True),
        sa.Column("price_date", sa.Date(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("error_kind", sa.String(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("finish_reason", sa.String(), nullable=True),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
        sa.Column("sanitizer_changes", _JSON, nullable=False),
        sa.Column("validation_errors", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ar_usage_records")),
        sa.UniqueConstraint("event_id", name=op.f("uq_ar_usage_records_event_id")),
    )
    # The grouped reports read only this index (project, day, model, agent and the sums).
    op.create_index(
        "ix_ar_usage_records_report",
        "ar_usage_records",
        ["project", "day", "model", "agent", "prompt_tokens", "completion_tokens", "cost_nanousd"],
    )
    op.create_index("ix_ar_usage_records_started_at", "ar_usage_records", ["started_at"])
    op.create_index("ix_ar_usage_records_call_id", "ar_usage_records", ["call_id"])
    op.create_table(
        "ar_usage_content",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("request_content", sa.Text(), nullable=True),
        sa.Column("response_content", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["ar_usage_records.event_id"],
            name=op.f("fk_ar_usage_content_event_id_ar_usage_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_ar_usage_content")),
    )


def downgrade() -> None:
    op.drop_table("ar_usage_content")
    op.drop_table("ar_usage_records")
