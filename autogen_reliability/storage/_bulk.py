"""Bulk inserts of usage rows: little Python per row, and the GIL handed over between chunks.

The recorder's writer thread shares the interpreter with the application's
event loop, so how a batch is inserted decides how late the loop wakes up while
the ledger is busy. Through SQLAlchemy's typed parameters a batch went in at
about 35,000 rows/s on SQLite and 20,000-29,000 on PostgreSQL, mostly Python
holding the GIL; here a row is encoded once, straight from
:meth:`UsageEvent.to_row`, into what the driver sends (47,000 and 61,000 rows/s
in ``benchmarks/bench_store.py``):

- **SQLite** (the ``sqlite3`` module): ``executemany`` of one insert-or-ignore
  statement, with the values SQLAlchemy's types would have stored, byte for
  byte (ids as 32 hex digits, times as naive UTC text, JSON text), so reads
  through the ORM and SQL comparisons see no difference.
- **PostgreSQL with psycopg 3**: ``COPY ... FROM STDIN`` into the table, the
  server's fastest way in (psycopg's per-row formatting is C). COPY cannot
  skip duplicates: a batch that meets an event already stored (a replay of a
  batch whose commit succeeded after all) is rolled back to a savepoint and
  inserted again with ``ON CONFLICT DO NOTHING``.
- Any other driver: SQLAlchemy Core's ``executemany`` of the same
  insert-or-ignore statement.

Every path returns how many rows were new; the store compares that with the
batch's size to know which rows the rollup must count (``storage/_store.py``).

Each path hands the GIL over (:func:`~autogen_reliability._threads.hand_over_gil`)
between slices of :data:`~autogen_reliability._threads.SLICE_ROWS` rows.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from functools import cache
from typing import Any, Final

from sqlalchemy import BigInteger, Boolean, Connection, Insert, Integer, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from .._secret_text import UNSTORABLE, ledger_text
from .._threads import in_slices
from ..accounting._events import ROW_FIELDS, ROW_JSON_FIELDS, UsageRow
from ._models import Base, UsageContent, UsageRecord

__all__ = [
    "COLUMNS",
    "CONTENT",
    "RECORDS",
    "RECORD_FIELDS",
    "UNSTORABLE",
    "check_numbers",
    "insert_content",
    "insert_records",
    "stored_event_ids",
    "unique_rows",
]

RECORDS: Final = Base.metadata.tables[UsageRecord.__tablename__]
CONTENT: Final = Base.metadata.tables[UsageContent.__tablename__]

CONTENT_FIELDS: Final = ("request_content", "response_content")
RECORD_FIELDS: Final = ROW_FIELDS[: -len(CONTENT_FIELDS)]
"""The fields of an event that are columns of ``ar_usage_records`` (all but the captured content, last in a row)."""
assert ROW_FIELDS[len(RECORD_FIELDS) :] == CONTENT_FIELDS, "a row ends with the captured content"

COLUMNS: Final = (*RECORD_FIELDS, "day")
"""The columns of ``ar_usage_records`` that an insert gives, in the order the encoders below produce."""

_N: Final = len(RECORD_FIELDS)
_EVENT_ID: Final = ROW_FIELDS.index("event_id")
_CALL_ID: Final = ROW_FIELDS.index("call_id")
_STARTED: Final = ROW_FIELDS.index("started_at")
_LATENCY: Final = ROW_FIELDS.index("latency_ms")
_PRICE_DATE: Final = ROW_FIELDS.index("price_date")
_JSON_FIELDS: Final = tuple(ROW_FIELDS.index(name) for name in ROW_JSON_FIELDS)
_REQUEST: Final = ROW_FIELDS.index("request_content")
_RESPONSE: Final = ROW_FIELDS.index("response_content")


def _integer_fields(big: bool) -> tuple[int, ...]:
    """Where the row fields stored in INTEGER (``big``: BIGINT) columns of ``ar_usage_records`` are."""
    return tuple(
        index
        for index, name in enumerate(RECORD_FIELDS)
        if isinstance(RECORDS.c[name].type, Integer)
        and isinstance(RECORDS.c[name].type, BigInteger) == big
        and name != "id"
    )


_INT32: Final = _integer_fields(big=False)
_INT64: Final = _integer_fields(big=True)
_FLAGS: Final = tuple(index for index, name in enumerate(RECORD_FIELDS) if isinstance(RECORDS.c[name].type, Boolean))


def check_numbers(rows: Sequence[UsageRow]) -> None:
    """Refuses ``rows`` if one holds a number its column cannot hold on every backend.

    PostgreSQL's INTEGER is 32-bit and SQLite's 64-bit: without this a token count of 2**31 would be
    stored on SQLite and refused on PostgreSQL. Checked before anything is written, so both refuse it
    alike (the recorder then keeps the row in its refused file).

    A latency must be a number of milliseconds from 0 up: PostgreSQL's double precision takes NaN, the
    infinities and negatives, SQLite's REAL all but NaN (a NOT NULL failure), and one such row made the
    percentiles of every report of its day NaN or infinite.

    So too a value of the wrong kind, which SQLite stored and PostgreSQL refused: a bool where a number
    goes (``latency_ms=True`` was stored as 1), a float in an integer column (a cost of 1.5 nano-USD was
    kept as a REAL), anything but ``True`` or ``False`` in a flag (``streamed=2``).

    Raises:
        ValueError: A row holds such a value (the message names the field and the value).
    """
    for row in rows:
        latency = row[_LATENCY]
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise ValueError(f"usage event {row[_EVENT_ID]}: latency_ms {latency!r} is not a number of milliseconds")
        if not 0 <= latency < math.inf:  # False for NaN too
            raise ValueError(
                f"usage event {row[_EVENT_ID]}: latency_ms {latency} is not a number of milliseconds from 0 up"
            )
        for index in _FLAGS:
            if not isinstance(row[index], bool):
                raise ValueError(
                    f"usage event {row[_EVENT_ID]}: {RECORD_FIELDS[index]} {row[index]!r} is not True or False"
                )
        for indexes, low, high in ((_INT32, -(2**31), 2**31 - 1), (_INT64, -(2**63), 2**63 - 1)):
            for index in indexes:
                value = row[index]
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"usage event {row[_EVENT_ID]}: {RECORD_FIELDS[index]} {value!r} is not an int")
                if not low <= value <= high:
                    raise ValueError(
                        f"usage event {row[_EVENT_ID]}: {RECORD_FIELDS[index]} {value} is outside what the "
                        f"ledger holds ({low} .. {high})"
                    )


def unique_rows(rows: Sequence[UsageRow]) -> list[UsageRow]:
    """``rows`` without repeats of an event (a spool replayed into a batch that holds the event already)."""
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row[_EVENT_ID] not in seen:
            seen.add(row[_EVENT_ID])
            unique.append(row)
    return unique


def stored_event_ids(connection: Connection, rows: Sequence[UsageRow]) -> set[str]:
    """The event ids (32 hex digits) of ``rows`` that are stored already."""
    stored: set[str] = set()
    for chunk in in_slices(rows, 1000):
        ids = [uuid.UUID(hex=row[_EVENT_ID]) for row in chunk]
        stored.update(
            found.hex
            for found in connection.execute(select(RECORDS.c.event_id).where(RECORDS.c.event_id.in_(ids))).scalars()
        )
    return stored


def insert_records(connection: Connection, rows: Sequence[UsageRow]) -> int:
    """Inserts the rows' records that are not stored yet, inside ``connection``'s transaction; returns how many.

    Raises:
        sqlalchemy.exc.DBAPIError: The database failed (the driver's error wrapped, as SQLAlchemy does).
    """
    dialect = connection.dialect
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        with _wrapped(connection, _SQLITE_INSERT):
            return _sqlite(connection, rows)
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        try:
            with _wrapped(connection, _COPY):
                if connection.connection.driver_connection.autocommit:  # type: ignore[union-attr]
                    return _copy(connection, rows)  # an engine in AUTOCOMMIT: a failed COPY undoes itself
                with connection.begin_nested():
                    return _copy(connection, rows)
        except IntegrityError:
            pass  # an event of the batch is stored already: insert-or-ignore instead
    return _core(connection, rows)


@contextmanager
def _wrapped(connection: Connection, statement: str) -> Iterator[None]:
    """The driver's errors as SQLAlchemy's (``OperationalError``, ``IntegrityError``...), as Core raises them."""
    base = connection.dialect.loaded_dbapi.Error
    try:
        yield
    except base as error:
        raise DBAPIError.instance(statement, None, error, base, dialect=connection.dialect) from error


def refused_text(error: BaseException) -> bool:
    """Whether ``error`` may be a database (or its driver) refusing a row's text.

    A lone surrogate cannot be encoded to UTF-8 (``UnicodeEncodeError``, raw
    or wrapped by SQLAlchemy); PostgreSQL refuses NUL in text and in jsonb
    (a DB-API ``DataError``).
    """
    cause = getattr(error, "orig", None) or error
    return isinstance(cause, UnicodeEncodeError) or any(klass.__name__ == "DataError" for klass in type(cause).__mro__)


def hold_nul(rows: Sequence[UsageRow]) -> bool:
    """Whether a text or JSON field of ``rows`` may hold a NUL character (raw, or as JSON's ``\\u0000``).

    SQLite stores NUL where PostgreSQL refuses it: :func:`storable` is applied before the insert then, so the
    ledger holds the same text on every backend. One join and search per batch, not a pattern per field.
    """
    joined = "".join([value for row in rows for value in row if value.__class__ is str])
    return "\x00" in joined or "\\u0000" in joined


def storable(rows: Sequence[UsageRow]) -> list[UsageRow]:
    """``rows`` with NUL characters and lone surrogates replaced by U+FFFD, in every text and JSON field."""
    return [_storable(row) for row in rows]


def _storable(row: UsageRow) -> UsageRow:
    values = list(row)
    for index, value in enumerate(values):
        if not isinstance(value, str):
            continue
        if index in _JSON_FIELDS:
            mapping = json.loads(value)
            values[index] = json.dumps(
                {
                    ledger_text(key): ledger_text(item) if isinstance(item, str) else item
                    for key, item in mapping.items()
                }
            )
        else:
            values[index] = ledger_text(value)
    return tuple(values)


def insert_content(connection: Connection, rows: Sequence[UsageRow]) -> None:
    """Inserts the captured content of the rows that have any (after their records, which it refers to)."""
    contents = [
        {
            "event_id": uuid.UUID(hex=row[_EVENT_ID]),
            "request_content": row[_REQUEST],
            "response_content": row[_RESPONSE],
        }
        for row in rows
        if row[_REQUEST] is not None or row[_RESPONSE] is not None
    ]
    if contents:
        # An event_id is one event: content already stored with it is the same content.
        connection.execute(_statements(connection.dialect.name)[1], contents)


def _sqlite(connection: Connection, rows: Sequence[UsageRow]) -> int:
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return _chunked(rows, _sqlite_values, lambda chunk: _executemany(cursor, _SQLITE_INSERT, chunk))
    finally:
        cursor.close()


def _executemany(cursor: Any, statement: str, values: list[tuple[Any, ...]]) -> int:
    cursor.executemany(statement, values)
    return int(cursor.rowcount)


def _copy(connection: Connection, rows: Sequence[UsageRow]) -> int:
    with connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        with cursor.copy(_COPY) as copy:
            for rows_slice in in_slices(rows):
                for row in rows_slice:
                    copy.write_row(_postgres_values(row))
        return int(cursor.rowcount)


def _core(connection: Connection, rows: Sequence[UsageRow]) -> int:
    insert = _statements(connection.dialect.name)[0]
    return _chunked(rows, _core_values, lambda chunk: connection.execute(insert, chunk).rowcount)


def _chunked(rows: Sequence[UsageRow], encode: Callable[[UsageRow], Any], write: Callable[[list[Any]], int]) -> int:
    return sum(write([encode(row) for row in rows_slice]) for rows_slice in in_slices(rows))


def _sqlite_values(row: UsageRow) -> tuple[Any, ...]:
    # What SQLAlchemy stores on SQLite: UtcDateTime as naive UTC "YYYY-MM-DD HH:MM:SS.ffffff", Date as ISO text.
    started = row[_STARTED].astimezone(UTC)
    price_date = row[_PRICE_DATE]
    return (
        *row[:_STARTED],
        started.replace(tzinfo=None).isoformat(" ", "microseconds"),
        *row[_STARTED + 1 : _PRICE_DATE],
        None if price_date is None else price_date.isoformat(),
        *row[_PRICE_DATE + 1 : _N],
        started.date().isoformat(),
    )


def _postgres_values(row: UsageRow) -> tuple[Any, ...]:
    # psycopg sends aware datetimes as timestamptz, with their offset as written: in UTC, as UtcDateTime binds
    # them, since PostgreSQL reads no offset with a fraction of a second or beyond 15:59 (Python's go to 23:59).
    # Hex ids and JSON text are read by the uuid and jsonb columns.
    started = row[_STARTED].astimezone(UTC)
    return (*row[:_STARTED], started, *row[_STARTED + 1 : _N], started.date())


def _core_values(row: UsageRow) -> dict[str, Any]:
    values = dict(zip(RECORD_FIELDS, row, strict=False))
    for index in (_EVENT_ID, _CALL_ID):
        values[ROW_FIELDS[index]] = uuid.UUID(hex=row[index])
    for index in _JSON_FIELDS:
        values[ROW_FIELDS[index]] = json.loads(row[index])
    values["day"] = row[_STARTED].astimezone(UTC).date()
    return values


# Our own table and column names only: nothing from outside is put into these statements.
_COLUMN_LIST: Final = ", ".join(COLUMNS)
_PLACEHOLDERS: Final = ", ".join("?" * len(COLUMNS))
_SQLITE_INSERT: Final = (
    f"INSERT INTO {RECORDS.name} ({_COLUMN_LIST}) VALUES ({_PLACEHOLDERS}) ON CONFLICT (event_id) DO NOTHING"  # noqa: S608
)
_COPY: Final = f"COPY {RECORDS.name} ({_COLUMN_LIST}) FROM STDIN"


@cache
def _statements(dialect_name: str) -> tuple[Insert, Insert]:
    """SQLAlchemy Core insert-or-ignore statements for the records and the content."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    records = (
        dialect.insert(RECORDS)
        .on_conflict_do_nothing(index_elements=["event_id"])
        # The driver's summed rowcount of an executemany says how many rows were new.
        .execution_options(preserve_rowcount=True)
    )
    return records, dialect.insert(CONTENT).on_conflict_do_nothing(index_elements=["event_id"])
