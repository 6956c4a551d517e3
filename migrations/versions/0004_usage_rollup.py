"""The rollup of the usage ledger: sums per UTC day and report key, kept up to date as rows are written.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

``ar_usage_rollup`` holds, per (day, project, model, agent, provider, outcome,
error_kind), the sums a usage report reads and a histogram of latencies (64
buckets, ``h00`` .. ``h63``), so that a report reads a few thousand rows instead
of every attempt (storage/_rollup.py). NULL key values are stored as ``''`` with
a bit each in ``nulls``, so the primary key is a plain unique key on every backend.

Revision 0005 replaced this table by one with fewer rows a day and filled it
from the rows; so the upgrade no longer fills this one (it used to call the
package's rebuild, which now fills the table of 0005).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ["day", "project", "model", "agent", "provider", "outcome", "error_kind", "nulls"]
_SUMS = [
    "attempts",
    "calls",
    "retried_calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_high",
    "cost_low",
    "priced_attempts",
    "cache_hits",
]


def upgrade() -> None:
    op.create_table(
        "ar_usage_rollup",
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(name, sa.String(), nullable=False) for name in _KEY[1:7]),
        sa.Column("nulls", sa.SmallInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _SUMS),
        sa.Column("latency_min_ms", sa.Double(), nullable=False),
        sa.Column("latency_max_ms", sa.Double(), nullable=False),
        *(sa.Column(f"h{index:02d}", sa.BigInteger(), nullable=False) for index in range(64)),
        sa.PrimaryKeyConstraint(*_KEY, name="pk_ar_usage_rollup"),
    )


def downgrade() -> None:
    op.drop_table("ar_usage_rollup")
