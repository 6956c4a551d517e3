"""ar_usage_rollup.cache_write_tokens: the cache writes of each day and key, so reports show them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

Each usage row holds its cache writes (``cache_write_tokens``: OpenAI's
``prompt_tokens_details.cache_write_tokens``, Anthropic's
``cache_creation_input_tokens``), but the rollup a report reads summed only the
cache reads, so no report could show what the writes, billed above the input
price, came to. The upgrade adds the sum (a BIGINT, 0 for a row added without
it) and fills it for every stored day from the rows; the other sums are
recomputed with it by the same query, so they are unchanged.

The report index (``ix_ar_usage_records_report``) covers the rows' cache writes
too, so a report read from the rows (a session's, a tag's) still walks only the
index; the downgrade puts back 0003's.

The downgrade drops the column in batch mode, keeping the table ``WITHOUT
ROWID`` on SQLite (older versions of which cannot drop a column: the table is
copied without it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The report index of 0003, and with the cache writes summed beside the other tokens.
_REPORT_0003 = [
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
_REPORT_0007 = [*_REPORT_0003[:12], "cache_write_tokens", *_REPORT_0003[12:]]


def upgrade() -> None:
    op.drop_index("ix_ar_usage_records_report", table_name="ar_usage_records")
    op.create_index("ix_ar_usage_records_report", "ar_usage_records", _REPORT_0007)
    op.add_column(
        "ar_usage_rollup", sa.Column("cache_write_tokens", sa.BigInteger(), server_default="0", nullable=False)
    )
    # The backfill is the package's own rebuild (retention's), so the old rows are summed as writes sum them.
    from autogen_reliability.storage._rollup import rebuild_all  # noqa: PLC0415

    rebuild_all(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_ar_usage_records_report", table_name="ar_usage_records")
    op.create_index("ix_ar_usage_records_report", "ar_usage_records", _REPORT_0003)
    with op.batch_alter_table("ar_usage_rollup", table_kwargs={"sqlite_with_rowid": False}) as batch:
        batch.drop_column("cache_write_tokens")
