"""The rollup (``ar_usage_rollup``): the ledger's sums per UTC day and report key, kept as rows are written.

A report of a million attempts summed them in SQL in about a second (docs/reports.md);
the rollup holds those sums already, one row per (day, project, model, agent,
provider, outcome, error_kind), so a report reads a few thousand rows.

- **Writes**: :func:`add_rows` sums the rows a transaction inserted (only those
  that were new: a replayed event is not counted twice) in Python per key and
  upserts them, ``INSERT ... ON CONFLICT (key) DO UPDATE SET n = n + excluded.n``,
  in the same transaction as the rows. Keys go in sorted order, so two PostgreSQL
  writers lock rollup rows in the same order and never deadlock.
- **Rebuilds**: :func:`rebuild_days` recomputes the rollup rows of a range of days
  from the rows that are stored (retention, after deleting rows; the migration's
  backfill); :func:`select_from_records` is that ``GROUP BY`` over any rows.

Latency histogram: ``h00`` counts latencies below :data:`FIRST_BOUND_MS` (10 ms),
``h63`` those at or above :data:`LAST_BOUND_MS` (5 minutes), and ``hNN`` in between
``[BOUNDS[NN-1], BOUNDS[NN])``, each bucket :data:`RATIO` (about 1.181) times as wide
as the one before. The same float bounds are compared in Python (writes) and in SQL
(rebuilds), so a latency lands in the same bucket either way.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Select,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from ..accounting._events import ROW_FIELDS, UsageRow
from ._models import ROLLUP_BUCKETS, Base, UsageRecord, UsageRollup

__all__ = [
    "BOUNDS",
    "COLUMNS",
    "COST_SPLIT",
    "HISTOGRAM",
    "KEY_TEXT",
    "ROLLUP",
    "SUMS",
    "add_rows",
    "bucket_of",
    "rebuild_days",
    "select_from_records",
]

ROLLUP: Final = Base.metadata.tables[UsageRollup.__tablename__]
_RECORDS: Final = Base.metadata.tables[UsageRecord.__tablename__]

FIRST_BOUND_MS: Final = 10.0
LAST_BOUND_MS: Final = 300_000.0
RATIO: Final = (LAST_BOUND_MS / FIRST_BOUND_MS) ** (1 / (ROLLUP_BUCKETS - 2))
"""How much wider each logarithmic bucket is than the one before: ``30000 ** (1/62)``, about 1.181."""

BOUNDS: Final = (
    *(FIRST_BOUND_MS * RATIO**index for index in range(ROLLUP_BUCKETS - 2)),
    LAST_BOUND_MS,
)
"""The bucket bounds in milliseconds: bucket ``k`` holds ``BOUNDS[k-1] <= latency < BOUNDS[k]``."""

KEY_TEXT: Final = ("project", "model", "agent", "provider", "error_kind")
"""The text key columns that may be NULL in a row: ``''`` in the rollup, and bit ``2**i`` of ``nulls``."""

SUMS: Final = (
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
)
"""The rollup's sums: a report's sums (``storage/_report.py``), with the cost in two parts (:data:`COST_SPLIT`)."""

COST_SPLIT: Final = 2**31
"""An attempt's cost is summed as ``high * COST_SPLIT + low`` (``0 <= low < COST_SPLIT``): both sums fit a BIGINT."""

HISTOGRAM: Final = tuple(f"h{index:02d}" for index in range(ROLLUP_BUCKETS))
_KEY: Final = ("day", *KEY_TEXT[:4], "outcome", "error_kind", "nulls")
_VALUES: Final = (*SUMS, "latency_min_ms", "latency_max_ms", *HISTOGRAM)
COLUMNS: Final = (*_KEY, *_VALUES)
"""The rollup's columns in the order :func:`select_from_records` gives them."""

_STARTED: Final = ROW_FIELDS.index("started_at")
_TEXT_AT: Final = tuple(ROW_FIELDS.index(name) for name in KEY_TEXT)
_OUTCOME: Final = ROW_FIELDS.index("outcome")
_ATTEMPT: Final = ROW_FIELDS.index("attempt")
_TOKENS_AT: Final = tuple(
    ROW_FIELDS.index(name) for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")
)
_COST: Final = ROW_FIELDS.index("cost_nanousd")
_CACHE_HIT: Final = ROW_FIELDS.index("cache_hit")
_LATENCY: Final = ROW_FIELDS.index("latency_ms")


def bucket_of(latency_ms: float) -> int:
    """The histogram bucket of a latency (0 below 10 ms, 63 from 5 minutes on)."""
    return bisect_right(BOUNDS, latency_ms)


def add_rows(connection: Connection, rows: Sequence[UsageRow]) -> None:
    """Adds ``rows`` (just inserted, each for the first time) to the rollup, in ``connection``'s transaction."""
    if not rows:
        return
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        _postgres_add(connection, rows)
        return
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        text = [row[index] for index in _TEXT_AT]
        nulls = sum(1 << index for index, value in enumerate(text) if value is None)
        project, model, agent, provider, error_kind = (value or "" for value in text)
        key = (row[_STARTED].astimezone(UTC).date(), project, model, agent, provider, row[_OUTCOME], error_kind, nulls)
        found = sums.get(key)
        latency = row[_LATENCY]
        if found is None:
            found = sums[key] = [0] * len(SUMS) + [latency, latency] + [0] * ROLLUP_BUCKETS
        found[0] += 1
        attempt = row[_ATTEMPT]
        found[1] += attempt == 1
        found[2] += attempt == 2
        for offset, index in enumerate(_TOKENS_AT, start=3):
            found[offset] += row[index] or 0
        cost = row[_COST]
        if cost is not None:
            high, low = divmod(cost, COST_SPLIT)
            found[7] += high
            found[8] += low
            found[9] += 1
        found[10] += bool(row[_CACHE_HIT])
        found[11] = min(found[11], latency)
        found[12] = max(found[12], latency)
        found[13 + bucket_of(latency)] += 1
    ordered = sorted(sums.items())
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        # The sqlite3 module's executemany loops in C; SQLAlchemy's spent 27 µs a row making parameters.
        values = [(key[0].isoformat(), *key[1:], *found) for key, found in ordered]
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(_SQLITE_UPSERT, values)
        finally:
            cursor.close()
    else:
        parameters = [dict(zip(COLUMNS, (*key, *found), strict=True)) for key, found in ordered]
        connection.execute(_upsert(dialect.name), parameters)


def _postgres_add(connection: Connection, rows: Sequence[UsageRow]) -> None:
    """PostgreSQL: the rows' keys and numbers as arrays (one per column), summed per key by the server.

    One statement for the batch: an executemany of one upsert per key kept the server busy 0.25 ms a
    key, and arrays of the summed rows (84 columns, mostly empty buckets) took psycopg 70 ms a batch to
    encode; these are 20 columns per row.
    """
    columns: list[list[Any]] = [[] for _ in range(20)]
    (day, project, model, agent, provider, outcome, error_kind, nulls) = columns[:8]
    (calls, retried, prompt, completion, cached, reasoning, high, low, priced, hits, latency, bucket) = columns[8:]
    for row in rows:
        text = [row[index] for index in _TEXT_AT]
        day.append(row[_STARTED].astimezone(UTC).date())
        for values, value in zip((project, model, agent, provider), text[:4], strict=True):
            values.append(value or "")
        outcome.append(row[_OUTCOME])
        error_kind.append(text[4] or "")
        nulls.append(sum(1 << index for index, value in enumerate(text) if value is None))
        attempt = row[_ATTEMPT]
        calls.append(int(attempt == 1))
        retried.append(int(attempt == 2))
        for values, index in zip((prompt, completion, cached, reasoning), _TOKENS_AT, strict=True):
            values.append(row[index] or 0)
        cost = row[_COST]
        cost_high, cost_low = (0, 0) if cost is None else divmod(cost, COST_SPLIT)
        high.append(cost_high)
        low.append(cost_low)
        priced.append(int(cost is not None))
        hits.append(int(bool(row[_CACHE_HIT])))
        latency.append(row[_LATENCY])
        bucket.append(bucket_of(row[_LATENCY]))
    with connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(_POSTGRES_UPSERT, columns)


def _upsert(dialect_name: str) -> Any:
    table = ROLLUP
    if dialect_name == "postgresql":
        statement: Any = postgresql.insert(table)
        least, greatest = "least", "greatest"
    else:
        statement = sqlite.insert(table)
        least, greatest = "min", "max"  # SQLite's scalar min() and max() of two values
    added = statement.excluded
    set_: dict[str, Any] = {name: table.c[name] + added[name] for name in (*SUMS, *HISTOGRAM)}
    set_["latency_min_ms"] = getattr(func, least)(table.c.latency_min_ms, added.latency_min_ms)
    set_["latency_max_ms"] = getattr(func, greatest)(table.c.latency_max_ms, added.latency_max_ms)
    return statement.on_conflict_do_update(index_elements=list(_KEY), set_=set_)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def select_from_records(*where: ColumnElement[bool]) -> Select[Any]:
    """The rollup rows of the usage rows ``where`` selects, computed from them (columns as the rollup's)."""
    c = _RECORDS.c
    latency = c.latency_ms
    # Bounds as literals in the text (repr round-trips a float exactly): PostgreSQL groups by this CASE only
    # if the GROUP BY's text is the select list's, which two sets of bound parameters are not.
    bucket = case(
        *((latency < literal_column(repr(bound)), literal_column(str(index))) for index, bound in enumerate(BOUNDS)),
        else_=literal_column(str(len(BOUNDS))),
    ).label("bucket")
    text = [c[name] for name in KEY_TEXT]
    # Python's divmod in SQL (whose % truncates toward zero): the low part in [0, COST_SPLIT) for any sign.
    split: ColumnElement[int] = literal_column(str(COST_SPLIT), BigInteger())
    cost_low = (c.cost_nanousd % split + split) % split
    cost_high = (c.cost_nanousd - cost_low) // split
    # Grouped by key and bucket first (one CASE per row), then the buckets become columns.
    inner = (
        select(
            c.day,
            *text,
            c.outcome,
            bucket,
            func.count().label("n"),
            func.count().filter(c.attempt == 1).label("calls"),
            func.count().filter(c.attempt == 2).label("retried_calls"),
            func.coalesce(func.sum(c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(c.cached_tokens), 0).label("cached_tokens"),
            func.coalesce(func.sum(c.reasoning_tokens), 0).label("reasoning_tokens"),
            func.coalesce(func.sum(cost_high), 0).label("cost_high"),
            func.coalesce(func.sum(cost_low), 0).label("cost_low"),
            func.count(c.cost_nanousd).label("priced_attempts"),
            func.count().filter(c.cache_hit).label("cache_hits"),
            func.min(latency).label("latency_min_ms"),
            func.max(latency).label("latency_max_ms"),
        )
        .where(*where)
        .group_by(c.day, *text, c.outcome, bucket)
        .subquery()
    )
    i = inner.c
    keys = [i.day, *(i[name] for name in KEY_TEXT), i.outcome]
    nulls = sum(
        (case((i[name].is_(None), 1 << index), else_=0) for index, name in enumerate(KEY_TEXT)),
        literal(0),
    )
    return select(
        i.day,
        *(func.coalesce(i[name], "").label(name) for name in KEY_TEXT[:4]),
        i.outcome,
        func.coalesce(i.error_kind, "").label("error_kind"),
        nulls.label("nulls"),
        func.sum(i.n).label("attempts"),
        *(func.sum(i[name]).label(name) for name in SUMS[1:]),
        func.min(i.latency_min_ms).label("latency_min_ms"),
        func.max(i.latency_max_ms).label("latency_max_ms"),
        *(
            func.coalesce(func.sum(i.n).filter(i.bucket == index), 0).label(name)
            for index, name in enumerate(HISTOGRAM)
        ),
    ).group_by(*keys)


def _on_days(first: date, last: date) -> ColumnElement[bool]:
    """The rows of the UTC days ``first`` to ``last``: a range of ``started_at``, which is indexed (``day`` is not)."""
    c = _RECORDS.c
    return and_(c.started_at >= _midnight(first), c.started_at < _midnight(last + timedelta(days=1)))


def rebuild_days(connection: Connection, first: date, last: date) -> None:
    """Recomputes the rollup rows of the days ``first`` to ``last`` from the stored rows, in the same transaction."""
    connection.execute(delete(ROLLUP).where(ROLLUP.c.day >= first, ROLLUP.c.day <= last))
    columns = [*_KEY, *_VALUES]
    connection.execute(insert(ROLLUP).from_select(columns, select_from_records(_on_days(first, last))))


def rebuild_all(connection: Connection) -> None:
    """Recomputes the whole rollup from the stored rows (the migration's backfill)."""
    connection.execute(delete(ROLLUP))
    connection.execute(insert(ROLLUP).from_select([*_KEY, *_VALUES], select_from_records()))


# Our own table and column names only: nothing from outside is put into these statements.
_COLUMN_LIST: Final = ", ".join(COLUMNS)
_KEY_LIST: Final = ", ".join(_KEY)
_ADDED: Final = ", ".join(f"{name} = {ROLLUP.name}.{name} + excluded.{name}" for name in (*SUMS, *HISTOGRAM))
_SQLITE_UPSERT: Final = (
    f"INSERT INTO {ROLLUP.name} ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(COLUMNS))}) "  # noqa: S608
    f"ON CONFLICT ({_KEY_LIST}) DO UPDATE SET {_ADDED}, "
    f"latency_min_ms = min({ROLLUP.name}.latency_min_ms, excluded.latency_min_ms), "
    f"latency_max_ms = max({ROLLUP.name}.latency_max_ms, excluded.latency_max_ms)"
)
_EVENT_COLUMNS: Final = (
    *(("day", "date"),),
    *((name, "text") for name in ("project", "model", "agent", "provider", "outcome", "error_kind")),
    ("nulls", "smallint"),
    *((name, "bigint") for name in SUMS[1:]),
    ("latency", "float8"),
    ("bucket", "smallint"),
)
"""The per-row arrays :func:`_postgres_add` sends: the key, then what each row adds to each sum but ``attempts``."""
_EVENT_KEY: Final = ", ".join(_KEY)
_POSTGRES_UPSERT: Final = (
    f"INSERT INTO {ROLLUP.name} ({_COLUMN_LIST}) "  # noqa: S608
    f"SELECT {_EVENT_KEY}, count(*), {', '.join(f'sum({name})' for name in SUMS[1:])}, min(latency), max(latency), "
    + ", ".join(f"count(*) FILTER (WHERE bucket = {index})" for index in range(len(HISTOGRAM)))
    + f" FROM unnest({', '.join(f'%b::{kind}[]' for _, kind in _EVENT_COLUMNS)}) "
    f"AS e({', '.join(name for name, _ in _EVENT_COLUMNS)}) "
    # Keys in one order for every writer: two transactions lock rollup rows in the same order, no deadlock.
    f"GROUP BY {_EVENT_KEY} ORDER BY {_EVENT_KEY} "
    f"ON CONFLICT ({_KEY_LIST}) DO UPDATE SET {_ADDED}, "
    f"latency_min_ms = least({ROLLUP.name}.latency_min_ms, excluded.latency_min_ms), "
    f"latency_max_ms = greatest({ROLLUP.name}.latency_max_ms, excluded.latency_max_ms)"
)

assert math.isclose(BOUNDS[-2] * RATIO, LAST_BOUND_MS), "the last logarithmic bucket ends at 5 minutes"
