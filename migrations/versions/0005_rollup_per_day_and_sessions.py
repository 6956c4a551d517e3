"""The rollup keyed by (day, project, model, agent, provider), and each session's spend per day.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

``ar_usage_rollup`` of 0004 had a row per outcome and error kind too: a day of a
busy ledger was 1,300 rows, and a report of the last 7 days summed 9,300 rows of
84 columns, 55 ms on SQLite. Here the waste outcomes (error, invalid, cancelled)
are columns (attempts, tokens, cost and priced attempts of each), so a day is
about 270 rows; a breakdown by outcome or error kind reads the usage rows.

``ar_usage_session_days`` holds each session's attempts and cost per day and
project: a report's top sessions are the sessions with the most cost in it, and
finding them walked every row of the period (0.12 s for a week of a million-row
ledger on SQLite).

``ix_ar_usage_records_session`` (session, day, project, agent, cost) also holds
what a report reads of its top sessions (model, attempt, outcome, tokens, cache
hit, latency, start and id), so their details are read from the index alone:
they were most of what was left of a 7-day report's time once the rollups
answered the rest.

On SQLite both tables are ``WITHOUT ROWID`` (stored in key order). The upgrade
fills both from the rows already stored with the package's own rebuild queries
(retention's), so the backfill equals what the writes would have produced.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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
_WASTE = [
    f"{outcome}_{name}"
    for outcome in ("error", "invalid", "cancelled")
    for name in ("attempts", "tokens", "cost_high", "cost_low", "priced")
]
_SESSION_INDEX = [
    "session",
    "day",
    "project",
    "agent",
    "cost_nanousd",
    "model",
    "attempt",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_hit",
    "latency_ms",
    "started_at",
    "id",
]
_OLD_KEY = ["day", "project", "model", "agent", "provider", "outcome", "error_kind", "nulls"]


def upgrade() -> None:
    op.drop_table("ar_usage_rollup")
    op.create_table(
        "ar_usage_rollup",
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(name, sa.String(), nullable=False) for name in ("project", "model", "agent", "provider")),
        sa.Column("nulls", sa.SmallInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _SUMS),
        sa.Column("latency_min_ms", sa.Double(), nullable=False),
        sa.Column("latency_max_ms", sa.Double(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _WASTE),
        *(sa.Column(f"h{index:02d}", sa.BigInteger(), nullable=False) for index in range(64)),
        sa.PrimaryKeyConstraint("day", "project", "model", "agent", "provider", "nulls", name="pk_ar_usage_rollup"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "ar_usage_session_days",
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(name, sa.String(), nullable=False) for name in ("project", "session")),
        sa.Column("nulls", sa.SmallInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in ("attempts", "cost_high", "cost_low")),
        sa.PrimaryKeyConstraint("day", "project", "session", "nulls", name="pk_ar_usage_session_days"),
        sqlite_with_rowid=False,
    )
    op.drop_index("ix_ar_usage_records_session", table_name="ar_usage_records")
    op.create_index("ix_ar_usage_records_session", "ar_usage_records", _SESSION_INDEX)
    # The backfill is the package's own rebuild (imported here, when the migration runs), so that the rollup
    # of old rows is computed exactly as retention recomputes a day.
    from autogen_reliability.storage._rollup import rebuild_all  # noqa: PLC0415

    rebuild_all(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_ar_usage_records_session", table_name="ar_usage_records")
    op.create_index("ix_ar_usage_records_session", "ar_usage_records", _SESSION_INDEX[:5])
    # 0004's table, filled from the rows as 0004's package version filled it (its query, frozen here).
    op.drop_table("ar_usage_session_days")
    op.drop_table("ar_usage_rollup")
    op.create_table(
        "ar_usage_rollup",
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(name, sa.String(), nullable=False) for name in _OLD_KEY[1:7]),
        sa.Column("nulls", sa.SmallInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _SUMS),
        sa.Column("latency_min_ms", sa.Double(), nullable=False),
        sa.Column("latency_max_ms", sa.Double(), nullable=False),
        *(sa.Column(f"h{index:02d}", sa.BigInteger(), nullable=False) for index in range(64)),
        sa.PrimaryKeyConstraint(*_OLD_KEY, name="pk_ar_usage_rollup"),
    )
    op.execute(_old_backfill())


def _old_backfill() -> str:
    """0004's rollup of every stored row: per key, outcome and error kind, 64 latency buckets."""
    ratio = (300_000.0 / 10.0) ** (1 / 62)
    bounds = [10.0 * ratio**index for index in range(62)] + [300_000.0]
    bucket = (
        "CASE "
        + " ".join(f"WHEN latency_ms < {bound!r} THEN {index}" for index, bound in enumerate(bounds))
        + f" ELSE {len(bounds)} END"
    )
    split = 2**31
    low = f"((cost_nanousd % {split} + {split}) % {split})"
    text = ["project", "model", "agent", "provider", "error_kind"]
    nulls = " + ".join(f"CASE WHEN {name} IS NULL THEN {1 << index} ELSE 0 END" for index, name in enumerate(text))
    # Our own table and column names and numbers only: nothing from outside is put into this statement.
    return (
        f"INSERT INTO ar_usage_rollup ({', '.join(_OLD_KEY)}, {', '.join(_SUMS)}, latency_min_ms, latency_max_ms, "  # noqa: S608
        + ", ".join(f"h{index:02d}" for index in range(64))
        + ") SELECT day, "
        + ", ".join(f"coalesce({name}, '')" for name in text[:4])
        + f", outcome, coalesce(error_kind, ''), {nulls}, sum(n), "
        + ", ".join(f"sum({name})" for name in _SUMS[1:])
        + ", min(low_ms), max(high_ms), "
        + ", ".join(f"coalesce(sum(n) FILTER (WHERE bucket = {index}), 0)" for index in range(64))
        + " FROM (SELECT day, project, model, agent, provider, error_kind, outcome, "
        + f"{bucket} AS bucket, count(*) AS n, "
        "count(*) FILTER (WHERE attempt = 1) AS calls, count(*) FILTER (WHERE attempt = 2) AS retried_calls, "
        "coalesce(sum(prompt_tokens), 0) AS prompt_tokens, coalesce(sum(completion_tokens), 0) AS completion_tokens, "
        "coalesce(sum(cached_tokens), 0) AS cached_tokens, coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens, "
        f"coalesce(sum((cost_nanousd - {low}) / {split}), 0) AS cost_high, coalesce(sum({low}), 0) AS cost_low, "
        "count(cost_nanousd) AS priced_attempts, count(*) FILTER (WHERE cache_hit) AS cache_hits, "
        "min(latency_ms) AS low_ms, max(latency_ms) AS high_ms "
        f"FROM ar_usage_records GROUP BY day, project, model, agent, provider, error_kind, outcome, {bucket}) AS i "
        "GROUP BY day, project, model, agent, provider, outcome, error_kind"
    )
