"""ar_usage_records.cache_write_1h_tokens: of the cache writes, those written with a 1-hour lifetime.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10

Anthropic splits a request's cache writes (``cache_creation_input_tokens``) by
lifetime (``cache_creation.ephemeral_5m_input_tokens`` and
``ephemeral_1h_input_tokens``) and bills a 1-hour write at twice the input
price, a 5-minute one at 1.25 times. A row holding only the total priced every
write at the 5-minute rate. The new column is nullable: rows stored before it,
and rows of providers that report no split, hold NULL (no 1-hour writes
known). Adding a nullable column without a default changes no stored row, on
SQLite and PostgreSQL alike, so the upgrade is instant on any ledger.

The downgrade drops the column in batch mode (on SQLite, older versions of
which cannot drop a column, the table is copied without it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ar_usage_records", sa.Column("cache_write_1h_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ar_usage_records") as batch:
        batch.drop_column("cache_write_1h_tokens")
