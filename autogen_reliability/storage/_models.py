"""The usage ledger's tables, as SQLAlchemy 2.x typed ORM models.

Tables prefixed ``ar_`` so they can live in a database the application
already uses, next to its own tables (and its own alembic, because ours keeps
its revision in :data:`VERSION_TABLE`):

``ar_usage_records``
    One row per :class:`~autogen_reliability.accounting._events.UsageEvent`, i.e.
    per attempt that reached, or tried to reach, the provider.
``ar_usage_content``
    The request and response text of an event, only for events that captured
    content (``capture_content=True``); bodies are large and usually absent,
    so they stay out of the rows that reports scan.
``ar_usage_rollup`` and ``ar_usage_session_days``
    Sums of the records per UTC day, kept by the writes, that reports read
    instead of the records (``storage/_rollup.py``).

The schema changes only through the alembic revisions in ``migrations/``; a
test checks that these models and the migrations agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NAMING_CONVENTION",
    "REPORT_INDEX",
    "ROLLUP_BUCKETS",
    "SESSION_INDEX",
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "WASTE_OUTCOMES",
    "WASTE_SUMS",
    "Base",
    "UsageContent",
    "UsageRecord",
    "UsageRollup",
    "UsageSessionDay",
    "UtcDateTime",
    "include_name",
]

TABLE_PREFIX: Final = "ar_"
"""Every table of ours starts with this; anything else in the database belongs to someone else."""

VERSION_TABLE: Final = "ar_alembic_version"
"""Where alembic keeps our schema revision: not ``alembic_version``, which the application's own alembic may use."""

ROLLUP_BUCKETS: Final = 64
"""How many latency buckets (columns ``h00`` .. ``h63``) a row of :class:`UsageRollup` counts."""

WASTE_OUTCOMES: Final = ("error", "invalid", "cancelled")
"""The outcomes of attempts whose answer the agent did not use: a report's waste."""

WASTE_SUMS: Final = ("attempts", "tokens", "cost_high", "cost_low", "priced")
"""What :class:`UsageRollup` sums per waste outcome, in columns ``error_attempts`` .. ``cancelled_priced``."""

REPORT_INDEX: Final = "ix_ar_usage_records_report"
"""The covering index for grouped usage reports (see :class:`UsageRecord`)."""

SESSION_INDEX: Final = (
    # Found by session, filtered by the report's day, project and agent...
    "session",
    "day",
    "project",
    "agent",
    "cost_nanousd",
    # ...and what a report reads of its top sessions, so it never reads their wide rows.
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
)
"""The columns of ``ix_ar_usage_records_session``, in order (see :class:`UsageRecord`)."""

# Stable constraint and index names, so that migrations can name what they alter
# and autogenerate diffs the same on every backend.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL: binary, indexable if a report ever filters by tag. JSON (text) elsewhere.
_JSON = JSON().with_variant(JSONB(), "postgresql")

# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY (its rowid);
# PostgreSQL gets a BIGSERIAL, since a busy ledger outgrows 2^31 rows.
_ID = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` on every backend.

    PostgreSQL stores a ``timestamptz``. SQLite has no time zones: SQLAlchemy
    writes the wall-clock digits and drops the offset, so this type converts
    to UTC first and stores naive UTC, and attaches UTC again when reading.
    Naive datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """UTC for the database; naive UTC digits for SQLite."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"a timezone-aware datetime is required, got naive {value.isoformat()}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """An aware UTC datetime, whatever the session's time zone was."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """The declarative base of the usage ledger's tables (and only of those)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UsageRecord(Base):
    """One attempt that reached, or tried to reach, the provider: a stored ``UsageEvent``.

    Columns mirror ``UsageEvent`` field for field (see its docstring for their
    meaning), minus the captured content (in :class:`UsageContent`) and plus:

    - ``id``: a surrogate key, in insertion order;
    - ``day``: the UTC date of ``started_at``, stored so reports group and index by it.

    Text columns have no length limit on purpose: a row that the database
    refuses (an agent name one character too long) would wait in the spool
    forever, and the ledger must not lose rows.

    Indexes:
        ``ix_ar_usage_records_report`` covers the grouped reports (per project,
        day, model, agent and outcome, summing tokens and cost over a range of
        days): it holds every column ``UsageStore.report`` reads, so the query
        reads only the index, in group order, and never the wide rows.
        ``ix_ar_usage_records_session`` finds the rows of a few sessions and holds
        what a report reads of them (their sums, latencies, first and last
        prompts), and covers the search for the sessions that cost most;
        ``started_at`` serves time-range listings and ``call_id`` gathers the
        attempts of one call. ``ix_ar_usage_records_session_spend`` and
        ``ix_ar_usage_records_agent_spend`` (project, session or agent, day, cost)
        cover a budget's read of one session's or agent's spend in a period.
        ``event_id`` is unique: a replayed event is stored once.
    """

    __tablename__ = "ar_usage_records"
    __table_args__ = (
        Index(
            REPORT_INDEX,
            # Grouped by (a prefix of these, in any order, is aggregated while the index is walked)...
            "project",
            "day",
            "model",
            "agent",
            "outcome",
            "provider",
            "error_kind",
            # ...and summed, counted, bucketed or ranked.
            "attempt",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "cache_write_tokens",
            "cost_nanousd",
            "cache_hit",
            "latency_ms",
            "session",
        ),
        Index("ix_ar_usage_records_session", *SESSION_INDEX),
        Index("ix_ar_usage_records_started_at", "started_at"),
        Index("ix_ar_usage_records_call_id", "call_id"),
        Index("ix_ar_usage_records_session_spend", "project", "session", "day", "cost_nanousd"),
        Index("ix_ar_usage_records_agent_spend", "project", "agent", "day", "cost_nanousd"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid(), unique=True)
    call_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    attempt: Mapped[int] = mapped_column(Integer())
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    day: Mapped[date] = mapped_column(Date())
    latency_ms: Mapped[float] = mapped_column(Double())
    project: Mapped[str | None] = mapped_column(String())
    session: Mapped[str | None] = mapped_column(String())
    agent: Mapped[str | None] = mapped_column(String())
    tags: Mapped[dict[str, str]] = mapped_column(_JSON)
    provider: Mapped[str | None] = mapped_column(String())
    model: Mapped[str | None] = mapped_column(String())
    response_model: Mapped[str | None] = mapped_column(String())
    prompt_tokens: Mapped[int] = mapped_column(Integer())
    completion_tokens: Mapped[int] = mapped_column(Integer())
    cached_tokens: Mapped[int | None] = mapped_column(Integer())
    cache_write_tokens: Mapped[int | None] = mapped_column(Integer())
    # Of cache_write_tokens, those written with a 1-hour lifetime (Anthropic bills them at 2x the input price,
    # 5-minute ones at 1.25x); NULL where the provider reports no split. Revision 0006.
    cache_write_1h_tokens: Mapped[int | None] = mapped_column(Integer())
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer())
    tokens_estimated: Mapped[bool] = mapped_column(Boolean())
    # Integer nano-USD: exact sums in SQL, no floats and no Decimal. NULL means unpriced, never $0.
    cost_nanousd: Mapped[int | None] = mapped_column(BigInteger())
    price_source: Mapped[str | None] = mapped_column(String())
    price_date: Mapped[date | None] = mapped_column(Date())
    outcome: Mapped[str] = mapped_column(String())
    error_kind: Mapped[str | None] = mapped_column(String())
    http_status: Mapped[int | None] = mapped_column(Integer())
    error_message: Mapped[str | None] = mapped_column(Text())
    finish_reason: Mapped[str | None] = mapped_column(String())
    streamed: Mapped[bool] = mapped_column(Boolean())
    cache_hit: Mapped[bool] = mapped_column(Boolean())
    sanitizer_changes: Mapped[dict[str, int]] = mapped_column(_JSON)
    validation_errors: Mapped[int] = mapped_column(Integer())


class UsageContent(Base):
    """The captured request and response text of one event (only events that captured any have a row).

    Deleting a record deletes its content (``ON DELETE CASCADE``), so pruning
    old usage needs no second statement.
    """

    __tablename__ = "ar_usage_content"

    event_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey(UsageRecord.event_id, ondelete="CASCADE"), primary_key=True
    )
    request_content: Mapped[str | None] = mapped_column(Text())
    response_content: Mapped[str | None] = mapped_column(Text())


class UsageRollup(Base):
    """The ledger's sums per UTC day and report key, kept up to date as rows are written.

    One row per (day, project, model, agent, provider) that has usage rows: what
    ``UsageStore.report`` would sum from those rows, summed once when they are
    inserted (in the same transaction, only the rows that were new), so a report
    reads a few hundred rows a day instead of every attempt. The outcomes a report
    calls waste (error, invalid, cancelled) have columns of their own rather than
    rows: a day of five projects, six models and nine agents is about 270 rows.
    Retention rebuilds the days it touches from the rows that remain.

    NULL is a legitimate value of the text key columns (no project, no agent...),
    and a unique index treats two NULLs as different; so the key columns hold
    ``''`` for NULL and ``nulls`` has one bit per column that is NULL (project 1,
    model 2, agent 4, provider 8): ``''`` and NULL stay apart, and the primary key
    is a plain unique key on every backend.

    Latencies are counted in ``h00`` .. ``h63``: ``h00`` below 10 ms, ``h63`` at or
    above 5 minutes, the 62 in between logarithmic (each ``30000 ** (1/62)``, about
    1.18 times as wide as the one before); ``latency_min_ms`` and ``latency_max_ms``
    tighten the two ends (``storage/_rollup.py`` has the bounds).

    On SQLite the table is ``WITHOUT ROWID``: its rows are stored in primary key
    order, so the days a report reads are next to each other.
    """

    __tablename__ = "ar_usage_rollup"
    __table_args__ = (
        PrimaryKeyConstraint("day", "project", "model", "agent", "provider", "nulls"),
        # The waste per outcome and the histogram: plain Core columns (no attribute each), after the named ones.
        *(
            Column(f"{outcome}_{name}", BigInteger(), nullable=False)
            for outcome in WASTE_OUTCOMES
            for name in WASTE_SUMS
        ),
        *(Column(f"h{bucket:02d}", BigInteger(), nullable=False) for bucket in range(ROLLUP_BUCKETS)),
        {"sqlite_with_rowid": False},
    )

    day: Mapped[date] = mapped_column(Date())
    project: Mapped[str] = mapped_column(String())
    model: Mapped[str] = mapped_column(String())
    agent: Mapped[str] = mapped_column(String())
    provider: Mapped[str] = mapped_column(String())
    nulls: Mapped[int] = mapped_column(SmallInteger())
    attempts: Mapped[int] = mapped_column(BigInteger())
    calls: Mapped[int] = mapped_column(BigInteger())
    retried_calls: Mapped[int] = mapped_column(BigInteger())
    prompt_tokens: Mapped[int] = mapped_column(BigInteger())
    completion_tokens: Mapped[int] = mapped_column(BigInteger())
    cached_tokens: Mapped[int] = mapped_column(BigInteger())
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger())
    # Nano-USD of the priced attempts, as cost_high * 2**31 + cost_low summed per attempt: each part's sum fits
    # a BIGINT whatever the costs (one attempt may cost up to 2**63 - 1), and Python puts the whole back together.
    cost_high: Mapped[int] = mapped_column(BigInteger())
    cost_low: Mapped[int] = mapped_column(BigInteger())
    priced_attempts: Mapped[int] = mapped_column(BigInteger())
    cache_hits: Mapped[int] = mapped_column(BigInteger())
    # Added by revision 0007: rows rolled up before it were backfilled from the usage rows.
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger(), server_default="0")
    latency_min_ms: Mapped[float] = mapped_column(Double())
    latency_max_ms: Mapped[float] = mapped_column(Double())


class UsageSessionDay(Base):
    """Each session's attempts and cost per UTC day and project: the top sessions of a report.

    Kept as :class:`UsageRollup` is (same transaction, new rows only, rebuilt by
    retention); rows without a session are not counted. ``nulls`` is 1 for a NULL
    project, as in :class:`UsageRollup`. A week of a busy ledger (12,000 sessions)
    is about 12,000 rows, where finding its top sessions from the usage rows walked
    230,000 of them. There is no agent: a report of one agent finds its top
    sessions from the usage rows (a session has several agents, and a row per
    agent tripled the rows every other report reads).
    """

    __tablename__ = "ar_usage_session_days"
    __table_args__ = (
        PrimaryKeyConstraint("day", "project", "session", "nulls"),
        {"sqlite_with_rowid": False},
    )

    day: Mapped[date] = mapped_column(Date())
    project: Mapped[str] = mapped_column(String())
    session: Mapped[str] = mapped_column(String())
    nulls: Mapped[int] = mapped_column(SmallInteger())
    attempts: Mapped[int] = mapped_column(BigInteger())
    # Nano-USD in two parts, as in UsageRollup: cost_high * 2**31 + cost_low.
    cost_high: Mapped[int] = mapped_column(BigInteger())
    cost_low: Mapped[int] = mapped_column(BigInteger())


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name`` hook: only our ``ar_`` tables take part in autogenerate.

    The ledger may share a database with the application's tables; without this,
    ``alembic revision --autogenerate`` would propose dropping them.
    """
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True
