"""The rollups: the ledger's sums per UTC day, kept as rows are written, that reports read instead of the rows.

A report of a million attempts summed them in SQL in about a second (docs/reports.md);
the rollups hold those sums already, so a report reads a few hundred rows a day:

- ``ar_usage_rollup`` (:data:`ROLLUP`): per (day, project, model, agent, provider),
  every sum of a report, the waste outcomes' sums in columns of their own, and a
  latency histogram;
- ``ar_usage_session_days`` (:data:`SESSION_DAYS`): per (day, project, session),
  the session's attempts and cost, for a report's top sessions.

- **Writes**: :func:`add_rows` sums the rows a transaction inserted (only those
  that were new: a replayed event is not counted twice) per key and upserts them,
  ``INSERT ... ON CONFLICT (key) DO UPDATE SET n = n + excluded.n``, in the same
  transaction as the rows. Keys go in sorted order, the rollup's before the
  sessions', so two PostgreSQL writers lock rows in the same order and never deadlock.
- **Rebuilds**: :func:`rebuild_days` recomputes both rollups for a range of days
  from the rows that are stored (retention, after deleting rows; the migration's
  backfill); :func:`select_from_records` and :func:`select_sessions_from_records`
  are those ``GROUP BY`` over any rows. On PostgreSQL, where writers go on meanwhile,
  it locks the days' rollup rows first, in the writers' key order, and sets those.

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
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    inspect,
    literal,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from ..accounting._events import ROW_FIELDS, UsageRow
from ._models import (
    ROLLUP_BUCKETS,
    WASTE_OUTCOMES,
    WASTE_SUMS,
    Base,
    UsageRecord,
    UsageRollup,
    UsageSessionDay,
)

__all__ = [
    "BOUNDS",
    "COLUMNS",
    "COST_SPLIT",
    "HISTOGRAM",
    "KEY_TEXT",
    "ROLLUP",
    "SESSION_COLUMNS",
    "SESSION_DAYS",
    "SUMS",
    "WASTE",
    "add_rows",
    "attempt_tokens",
    "bucket_of",
    "rebuild_all",
    "rebuild_days",
    "select_from_records",
    "select_sessions_from_records",
]

ROLLUP: Final = Base.metadata.tables[UsageRollup.__tablename__]
SESSION_DAYS: Final = Base.metadata.tables[UsageSessionDay.__tablename__]
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

KEY_TEXT: Final = ("project", "model", "agent", "provider")
"""The text key columns, which may be NULL in a row: ``''`` in the rollups, and bit ``2**i`` of ``nulls``."""

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
    "cache_write_tokens",
)
"""The rollup's sums: a report's sums (``storage/_report.py``), with the cost in two parts (:data:`COST_SPLIT`)."""

WASTE: Final = tuple(f"{outcome}_{name}" for outcome in WASTE_OUTCOMES for name in WASTE_SUMS)
"""Per waste outcome: its attempts, their prompt and completion tokens, their cost in two parts, the priced ones."""

COST_SPLIT: Final = 2**31
"""An attempt's cost is summed as ``high * COST_SPLIT + low`` (``0 <= low < COST_SPLIT``): both sums fit a BIGINT."""

HISTOGRAM: Final = tuple(f"h{index:02d}" for index in range(ROLLUP_BUCKETS))
_KEY: Final = ("day", *KEY_TEXT, "nulls")
_VALUES: Final = (*SUMS, "latency_min_ms", "latency_max_ms", *WASTE, *HISTOGRAM)
COLUMNS: Final = (*_KEY, *_VALUES)
"""The rollup's columns in the order :func:`select_from_records` gives them."""

_SESSION_KEY: Final = ("day", "project", "session", "nulls")
_SESSION_SUMS: Final = ("attempts", "cost_high", "cost_low")
SESSION_COLUMNS: Final = (*_SESSION_KEY, *_SESSION_SUMS)
"""The session rollup's columns in the order :func:`select_sessions_from_records` gives them."""
_SESSION_NULLS: Final = 1 << KEY_TEXT.index("project")
"""The bit of ``nulls`` the session rollup keeps: a NULL project."""

_STARTED: Final = ROW_FIELDS.index("started_at")
_TEXT_AT: Final = tuple(ROW_FIELDS.index(name) for name in KEY_TEXT)
_SESSION: Final = ROW_FIELDS.index("session")
_OUTCOME: Final = ROW_FIELDS.index("outcome")
_ATTEMPT: Final = ROW_FIELDS.index("attempt")
_PROMPT: Final = ROW_FIELDS.index("prompt_tokens")
_COMPLETION: Final = ROW_FIELDS.index("completion_tokens")
_TOKENS_AT: Final = tuple(
    ROW_FIELDS.index(name) for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")
)
_CACHE_WRITE: Final = ROW_FIELDS.index("cache_write_tokens")
_COST: Final = ROW_FIELDS.index("cost_nanousd")
_CACHE_HIT: Final = ROW_FIELDS.index("cache_hit")
_LATENCY: Final = ROW_FIELDS.index("latency_ms")
_LATENCY_MIN_AT: Final = len(SUMS)
_WASTE_AT: Final = {outcome: len(SUMS) + 2 + index * len(WASTE_SUMS) for index, outcome in enumerate(WASTE_OUTCOMES)}
"""Where each waste outcome's sums start in a row of values (:data:`_VALUES`)."""
_HISTOGRAM_AT: Final = len(SUMS) + 2 + len(WASTE)


def bucket_of(latency_ms: float) -> int:
    """The histogram bucket of a latency (0 below 10 ms, 63 from 5 minutes on)."""
    return bisect_right(BOUNDS, latency_ms)


def add_rows(connection: Connection, rows: Sequence[UsageRow]) -> None:
    """Adds ``rows`` (just inserted, each for the first time) to the rollups, in ``connection``'s transaction."""
    if not rows:
        return
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        _postgres_add(connection, rows)
        return
    sums, sessions = _summed(rows)
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        # The sqlite3 module's executemany loops in C; SQLAlchemy's spent 27 µs a row making parameters.
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(_SQLITE_UPSERT, [(key[0].isoformat(), *key[1:], *found) for key, found in sums])
            if sessions:
                cursor.executemany(
                    _SQLITE_SESSION_UPSERT, [(key[0].isoformat(), *key[1:], *spent) for key, spent in sessions]
                )
        finally:
            cursor.close()
    else:
        connection.execute(
            _upsert(dialect.name), [dict(zip(COLUMNS, (*key, *found), strict=True)) for key, found in sums]
        )
        if sessions:
            connection.execute(
                _session_upsert(dialect.name),
                [dict(zip(SESSION_COLUMNS, (*key, *spent), strict=True)) for key, spent in sessions],
            )


Summed = list[tuple[tuple[Any, ...], list[Any]]]


def _summed(rows: Sequence[UsageRow]) -> tuple[Summed, Summed]:
    """The rollup rows and the session rollup rows that ``rows`` add up to, each in key order."""
    sums: dict[tuple[Any, ...], list[Any]] = {}
    sessions: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        text = [row[index] for index in _TEXT_AT]
        nulls = sum(1 << index for index, value in enumerate(text) if value is None)
        project, model, agent, provider = (value or "" for value in text)
        day = row[_STARTED].astimezone(UTC).date()
        key = (day, project, model, agent, provider, nulls)
        found = sums.get(key)
        latency = row[_LATENCY]
        if found is None:
            found = sums[key] = [0] * len(SUMS) + [latency, latency] + [0] * (len(WASTE) + ROLLUP_BUCKETS)
        attempt = row[_ATTEMPT]
        cost = row[_COST]
        high, low = (0, 0) if cost is None else divmod(cost, COST_SPLIT)
        found[0] += 1
        found[1] += attempt == 1
        found[2] += attempt == 2
        for offset, index in enumerate(_TOKENS_AT, start=3):
            found[offset] += row[index] or 0
        found[7] += high
        found[8] += low
        found[9] += cost is not None
        found[10] += bool(row[_CACHE_HIT])
        found[11] += row[_CACHE_WRITE] or 0
        found[_LATENCY_MIN_AT] = min(found[_LATENCY_MIN_AT], latency)
        found[_LATENCY_MIN_AT + 1] = max(found[_LATENCY_MIN_AT + 1], latency)
        waste = _WASTE_AT.get(row[_OUTCOME])
        if waste is not None:
            found[waste] += 1
            found[waste + 1] += (row[_PROMPT] or 0) + (row[_COMPLETION] or 0)
            found[waste + 2] += high
            found[waste + 3] += low
            found[waste + 4] += cost is not None
        found[_HISTOGRAM_AT + bucket_of(latency)] += 1
        session = row[_SESSION]
        if session is not None:
            spent = sessions.setdefault((day, project, session, nulls & _SESSION_NULLS), [0, 0, 0])
            spent[0] += 1
            spent[1] += high
            spent[2] += low
    return sorted(sums.items()), sorted(sessions.items())


def _postgres_add(connection: Connection, rows: Sequence[UsageRow]) -> None:
    """PostgreSQL: the rows' keys and numbers as arrays (one per column), summed per key by the server.

    One statement per rollup for the batch: an executemany of one upsert per key kept the server busy
    0.25 ms a key, and arrays of the summed rows (92 columns, mostly empty buckets) took psycopg 70 ms a
    batch to encode; these are 20 columns per row (and 7 per row with a session).
    """
    columns: list[list[Any]] = [[] for _ in range(len(_EVENT_COLUMNS))]
    (day, project, model, agent, provider, nulls, outcome) = columns[:7]
    (calls, retried, prompt, completion, cached, reasoning, high, low, priced, hits, cache_write, latency, bucket) = (
        columns[7:]
    )
    in_sessions: list[list[Any]] = [[] for _ in range(len(_SESSION_EVENT_COLUMNS))]
    for row in rows:
        text = [row[index] for index in _TEXT_AT]
        row_day = row[_STARTED].astimezone(UTC).date()
        day.append(row_day)
        for values, value in zip((project, model, agent, provider), text, strict=True):
            values.append(value or "")
        row_nulls = sum(1 << index for index, value in enumerate(text) if value is None)
        nulls.append(row_nulls)
        outcome.append(row[_OUTCOME])
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
        cache_write.append(row[_CACHE_WRITE] or 0)
        # A float for every row: an int latency (250 ms) in the same array as 12.5 ms is one psycopg cannot make.
        latency.append(float(row[_LATENCY]))
        bucket.append(bucket_of(row[_LATENCY]))
        session = row[_SESSION]
        if session is not None:
            for values, value in zip(
                in_sessions,
                (row_day, text[0] or "", session, row_nulls & _SESSION_NULLS, cost_high, cost_low),
                strict=True,
            ):
                values.append(value)
    with connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(_POSTGRES_UPSERT, columns)
        if in_sessions[0]:
            cursor.execute(_POSTGRES_SESSION_UPSERT, in_sessions)


def _upsert(dialect_name: str) -> Any:
    table = ROLLUP
    statement = _dialect_insert(dialect_name, table)
    least, greatest = ("least", "greatest") if dialect_name == "postgresql" else ("min", "max")  # SQLite's scalar ones
    added = statement.excluded
    set_: dict[str, Any] = {name: table.c[name] + added[name] for name in _ADDED_UP}
    set_["latency_min_ms"] = getattr(func, least)(table.c.latency_min_ms, added.latency_min_ms)
    set_["latency_max_ms"] = getattr(func, greatest)(table.c.latency_max_ms, added.latency_max_ms)
    return statement.on_conflict_do_update(index_elements=list(_KEY), set_=set_)


def _session_upsert(dialect_name: str) -> Any:
    table = SESSION_DAYS
    statement = _dialect_insert(dialect_name, table)
    added = statement.excluded
    set_ = {name: table.c[name] + added[name] for name in _SESSION_SUMS}
    return statement.on_conflict_do_update(index_elements=list(_SESSION_KEY), set_=set_)


def _dialect_insert(dialect_name: str, table: Any) -> Any:
    return postgresql.insert(table) if dialect_name == "postgresql" else sqlite.insert(table)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _nulls(columns: Sequence[ColumnElement[Any]], bits: Sequence[int]) -> ColumnElement[int]:
    """The ``nulls`` of a rollup row: the bit of each of ``columns`` that is NULL."""
    return sum(
        (case((column.is_(None), bit), else_=0) for column, bit in zip(columns, bits, strict=True)),
        literal(0),
    )


def _cost_parts(cost: ColumnElement[Any]) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """``divmod(cost, COST_SPLIT)`` in SQL (whose % truncates toward zero): the low part in [0, COST_SPLIT)."""
    split: ColumnElement[int] = literal_column(str(COST_SPLIT), BigInteger())
    low = (cost % split + split) % split
    return (cost - low) // split, low


def attempt_tokens() -> ColumnElement[int]:
    """A usage row's prompt + completion tokens, added as 64-bit integers (what its waste counts).

    Each count fits its 32-bit column, their sum need not: PostgreSQL adds two ``integer`` columns as an
    ``integer`` and fails the whole query with "integer out of range" past 2**31 - 1.
    """
    c = _RECORDS.c
    return cast(func.coalesce(c.prompt_tokens, 0), BigInteger()) + func.coalesce(c.completion_tokens, 0)


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
    cost_high, cost_low = _cost_parts(c.cost_nanousd)
    tokens = attempt_tokens()
    waste: list[ColumnElement[Any]] = []
    for outcome in WASTE_OUTCOMES:
        of_outcome = c.outcome == outcome
        waste.extend(
            (
                func.count().filter(of_outcome),
                func.coalesce(func.sum(tokens).filter(of_outcome), 0),
                func.coalesce(func.sum(cost_high).filter(of_outcome), 0),
                func.coalesce(func.sum(cost_low).filter(of_outcome), 0),
                func.count(c.cost_nanousd).filter(of_outcome),
            )
        )
    # Grouped by key and bucket first (one CASE per row), then the buckets become columns.
    inner = (
        select(
            c.day,
            *text,
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
            func.coalesce(func.sum(c.cache_write_tokens), 0).label("cache_write_tokens"),
            func.min(latency).label("latency_min_ms"),
            func.max(latency).label("latency_max_ms"),
            *(value.label(name) for value, name in zip(waste, WASTE, strict=True)),
        )
        .where(*where)
        .group_by(c.day, *text, bucket)
        .subquery()
    )
    i = inner.c
    inner_text = [i[name] for name in KEY_TEXT]
    return select(
        i.day,
        *(func.coalesce(column, "").label(name) for column, name in zip(inner_text, KEY_TEXT, strict=True)),
        _nulls(inner_text, [1 << index for index in range(len(KEY_TEXT))]).label("nulls"),
        func.sum(i.n).label("attempts"),
        *(func.sum(i[name]).label(name) for name in SUMS[1:]),
        func.min(i.latency_min_ms).label("latency_min_ms"),
        func.max(i.latency_max_ms).label("latency_max_ms"),
        *(func.sum(i[name]).label(name) for name in WASTE),
        *(
            func.coalesce(func.sum(i.n).filter(i.bucket == index), 0).label(name)
            for index, name in enumerate(HISTOGRAM)
        ),
    ).group_by(i.day, *inner_text)


def select_sessions_from_records(*where: ColumnElement[bool]) -> Select[Any]:
    """The session rollup rows of the usage rows ``where`` selects (columns as :data:`SESSION_COLUMNS`)."""
    c = _RECORDS.c
    cost_high, cost_low = _cost_parts(c.cost_nanousd)
    return (
        select(
            c.day,
            func.coalesce(c.project, "").label("project"),
            c.session,
            _nulls([c.project], [_SESSION_NULLS]).label("nulls"),
            func.count().label("attempts"),
            func.coalesce(func.sum(cost_high), 0).label("cost_high"),
            func.coalesce(func.sum(cost_low), 0).label("cost_low"),
        )
        .where(c.session.is_not(None), *where)
        .group_by(c.day, c.project, c.session)
    )


def _on_days(first: date, last: date) -> ColumnElement[bool]:
    """The rows of the UTC days ``first`` to ``last``: a range of ``started_at``, which is indexed (``day`` is not)."""
    c = _RECORDS.c
    since = c.started_at >= _midnight(first)
    if last == date.max:  # 9999-12-31: no midnight after it
        return since
    return and_(since, c.started_at < _midnight(last + timedelta(days=1)))


def rebuild_days(connection: Connection, first: date, last: date) -> None:
    """Recomputes both rollups for the days ``first`` to ``last`` from the stored rows, in the same transaction."""
    if connection.dialect.name == "postgresql":
        for table, key, rolled_up in (
            (ROLLUP, _KEY, select_from_records),
            (SESSION_DAYS, _SESSION_KEY, select_sessions_from_records),
        ):
            _postgres_rebuild(connection, table, key, rolled_up(_on_days(first, last)), first=first, last=last)
        return
    # SQLite: the transaction holds the database's write lock, so no writer comes in between these.
    for table in (ROLLUP, SESSION_DAYS):
        connection.execute(delete(table).where(table.c.day >= first, table.c.day <= last))
    _fill(connection, _on_days(first, last))


def _postgres_rebuild(
    connection: Connection, table: Any, key: Sequence[str], rolled_up: Select[Any], *, first: date, last: date
) -> None:
    """PostgreSQL: the days' rollup rows locked in the writers' order, then each set to its rows' sums (or deleted).

    Writers go on during it, so deleting the days' rollup rows and inserting them again from the rows was a race:
    a writer that stored a new key of those days in between made the insert fail (duplicate key), and the delete,
    locking rollup rows in its own order while writers lock them in key order, deadlocked with them.

    So the days' rows that exist are locked first, in key order (:func:`add_rows`'s), and only those are set:
    a writer that changed one committed before the lock, so the sums (a later statement, READ COMMITTED: a later
    snapshot) count its rows; one that comes after waits, and adds its rows to the sums set. A key a writer makes
    meanwhile holds only that writer's rows, none of the deleted ones, and is left as it wrote it. A row is updated
    in place, not deleted and inserted, so another retention's lock of it follows the update.
    """
    columns = [table.c[name] for name in key]
    locked = connection.execute(
        select(*columns).where(table.c.day >= first, table.c.day <= last).order_by(*columns).with_for_update()
    ).all()
    if not locked:
        return
    keys = _unnested(columns, locked)
    sums = rolled_up.subquery()
    names = [column.name for column in sums.c]
    inserted = postgresql.insert(table).from_select(
        names,
        select(*sums.c).join(keys, and_(*(sums.c[name] == keys.c[name] for name in key))),
    )
    upsert = inserted.on_conflict_do_update(  # every key is a locked row: always the update
        index_elements=list(key),
        set_={name: inserted.excluded[name] for name in names if name not in key},
    ).returning(*columns)
    kept = {tuple(row) for row in connection.execute(upsert)}
    gone = [row for row in locked if tuple(row) not in kept]  # no rows left: the key goes
    if gone:
        connection.execute(delete(table).where(tuple_(*columns).in_(select(*_unnested(columns, gone).c))))


def _unnested(columns: Sequence[Any], rows: Sequence[Any]) -> Any:
    """``rows`` (values of ``columns``) as a table: one array a column, unnested together on the server."""
    arrays = (
        bindparam(None, [row[index] for row in rows], postgresql.ARRAY(column.type))
        for index, column in enumerate(columns)
    )
    return func.unnest(*arrays).table_valued(*(column.name for column in columns)).render_derived()


def rebuild_all(connection: Connection) -> None:
    """Recomputes both rollups from every stored row (the migrations' backfill).

    Only the rollup columns the table has are filled: a migration before the one that added a column
    (0005's backfill, run on the way to 0007's ``cache_write_tokens``) fills the table it made.
    """
    for table in (ROLLUP, SESSION_DAYS):
        connection.execute(delete(table))
    present = {column["name"] for column in inspect(connection).get_columns(ROLLUP.name)}
    _fill(connection, columns=[name for name in COLUMNS if name in present])


def _fill(connection: Connection, *where: ColumnElement[bool], columns: Sequence[str] = COLUMNS) -> None:
    rolled_up = select_from_records(*where)
    if len(columns) < len(COLUMNS):
        sums = rolled_up.subquery()
        rolled_up = select(*(sums.c[name] for name in columns))
    connection.execute(insert(ROLLUP).from_select(list(columns), rolled_up))
    connection.execute(insert(SESSION_DAYS).from_select(list(SESSION_COLUMNS), select_sessions_from_records(*where)))


# Our own table and column names only: nothing from outside is put into these statements.
_ADDED_UP: Final = (*SUMS, *WASTE, *HISTOGRAM)
_COLUMN_LIST: Final = ", ".join(COLUMNS)
_KEY_LIST: Final = ", ".join(_KEY)
_ADDED: Final = ", ".join(f"{name} = {ROLLUP.name}.{name} + excluded.{name}" for name in _ADDED_UP)
_SQLITE_UPSERT: Final = (
    f"INSERT INTO {ROLLUP.name} ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(COLUMNS))}) "  # noqa: S608
    f"ON CONFLICT ({_KEY_LIST}) DO UPDATE SET {_ADDED}, "
    f"latency_min_ms = min({ROLLUP.name}.latency_min_ms, excluded.latency_min_ms), "
    f"latency_max_ms = max({ROLLUP.name}.latency_max_ms, excluded.latency_max_ms)"
)
_SESSION_ADDED: Final = ", ".join(f"{name} = {SESSION_DAYS.name}.{name} + excluded.{name}" for name in _SESSION_SUMS)
_SQLITE_SESSION_UPSERT: Final = (
    f"INSERT INTO {SESSION_DAYS.name} ({', '.join(SESSION_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(SESSION_COLUMNS))}) "
    f"ON CONFLICT ({', '.join(_SESSION_KEY)}) DO UPDATE SET {_SESSION_ADDED}"
)
_EVENT_COLUMNS: Final = (
    ("day", "date"),
    *((name, "text") for name in KEY_TEXT),
    ("nulls", "smallint"),
    ("outcome", "text"),
    *((name, "bigint") for name in SUMS[1:]),
    ("latency", "float8"),
    ("bucket", "smallint"),
)
"""The per-row arrays :func:`_postgres_add` sends: the key, the outcome, what each row adds to each sum but
``attempts``, its latency and bucket."""


def _postgres_waste() -> str:
    sums: list[str] = []
    for outcome in WASTE_OUTCOMES:
        where = f"FILTER (WHERE outcome = '{outcome}')"
        sums.extend(
            (
                f"count(*) {where}",
                f"coalesce(sum(prompt_tokens + completion_tokens) {where}, 0)",
                f"coalesce(sum(cost_high) {where}, 0)",
                f"coalesce(sum(cost_low) {where}, 0)",
                f"coalesce(sum(priced_attempts) {where}, 0)",
            )
        )
    return ", ".join(sums)


_EVENT_KEY: Final = ", ".join(_KEY)
_POSTGRES_UPSERT: Final = (
    f"INSERT INTO {ROLLUP.name} ({_COLUMN_LIST}) "  # noqa: S608
    f"SELECT {_EVENT_KEY}, count(*), {', '.join(f'sum({name})' for name in SUMS[1:])}, min(latency), max(latency), "
    f"{_postgres_waste()}, "
    + ", ".join(f"count(*) FILTER (WHERE bucket = {index})" for index in range(len(HISTOGRAM)))
    + f" FROM unnest({', '.join(f'%b::{kind}[]' for _, kind in _EVENT_COLUMNS)}) "
    f"AS e({', '.join(name for name, _ in _EVENT_COLUMNS)}) "
    # Keys in one order for every writer: two transactions lock rollup rows in the same order, no deadlock.
    f"GROUP BY {_EVENT_KEY} ORDER BY {_EVENT_KEY} "
    f"ON CONFLICT ({_KEY_LIST}) DO UPDATE SET {_ADDED}, "
    f"latency_min_ms = least({ROLLUP.name}.latency_min_ms, excluded.latency_min_ms), "
    f"latency_max_ms = greatest({ROLLUP.name}.latency_max_ms, excluded.latency_max_ms)"
)
_SESSION_EVENT_COLUMNS: Final = (
    ("day", "date"),
    ("project", "text"),
    ("session", "text"),
    ("nulls", "smallint"),
    ("cost_high", "bigint"),
    ("cost_low", "bigint"),
)
_SESSION_EVENT_KEY: Final = ", ".join(_SESSION_KEY)
_POSTGRES_SESSION_UPSERT: Final = (
    f"INSERT INTO {SESSION_DAYS.name} ({', '.join(SESSION_COLUMNS)}) "  # noqa: S608
    f"SELECT {_SESSION_EVENT_KEY}, count(*), sum(cost_high), sum(cost_low) "
    f"FROM unnest({', '.join(f'%b::{kind}[]' for _, kind in _SESSION_EVENT_COLUMNS)}) "
    f"AS e({', '.join(name for name, _ in _SESSION_EVENT_COLUMNS)}) "
    f"GROUP BY {_SESSION_EVENT_KEY} ORDER BY {_SESSION_EVENT_KEY} "
    f"ON CONFLICT ({_SESSION_EVENT_KEY}) DO UPDATE SET {_SESSION_ADDED}"
)

assert math.isclose(BOUNDS[-2] * RATIO, LAST_BOUND_MS), "the last logarithmic bucket ends at 5 minutes"
