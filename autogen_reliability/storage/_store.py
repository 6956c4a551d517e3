"""``UsageStore``: the usage ledger in a SQL database (SQLite by default, PostgreSQL for many writers).

The store writes batches of :class:`~autogen_reliability.accounting._events.UsageEvent`
in one transaction each and reads them back. It is meant to be driven by the
recorder's background writer thread; it holds no state besides SQLAlchemy's
engine (whose pool is thread-safe), and never blocks an event loop because it
is never called from one.

Opening a store checks the schema: a database without our tables is brought to
the newest revision (so ``sqlite:///autogen_reliability.db`` just works), an
older one raises :class:`SchemaOutdatedError` naming the command that upgrades
it, and one migrated by a newer release raises :class:`SchemaTooNewError`::

    ReliabilityError
    └── StoreSchemaError        the database's usage tables do not fit this library
        ├── SchemaOutdatedError older than this library: run `autogen-reliability db upgrade`
        └── SchemaTooNewError   made by a newer autogen-reliability: upgrade the library

URLs appear in messages and ``repr`` with the password masked (``***``).
"""

from __future__ import annotations

import dataclasses
import logging
import time as time_module
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time
from types import TracebackType
from typing import Any, Final, Self

from sqlalchemy import URL, Engine, Select, func, inspect, select, text
from sqlalchemy.exc import OperationalError

from .._errors import ConfigurationError
from .._redaction import quoted
from ..accounting._events import ROW_FIELDS, UsageEvent, UsageRow
from ..accounting._price_table import PricingTable
from ..reports._model import UsageReport
from ..reports._recommend import ReportThresholds, recommend
from . import _bulk, _migrate, _retention, _rollup, _sessions
from ._engine import (
    autocommit,
    check_engine,
    check_one_database_per_engine,
    make_engine,
    masked_url,
    new_pool_after_fork,
    postgresql_write_timeouts,
    sqlite_engine_in_memory,
    sqlite_opened_file,
    write_transaction,
)
from ._migrate import SchemaOutdatedError, SchemaTooNewError, StoreSchemaError, tables_not_ours
from ._models import VERSION_TABLE
from ._report import MOST_ROWS, build_report, check_filter
from ._retention import RetentionResult
from ._sessions import SessionSummary

__all__ = [
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "StoreSchemaError",
    "UsageStore",
]


logger = logging.getLogger("autogen_reliability")

_RECORD_FIELDS: Final = _bulk.RECORD_FIELDS
_RECORDS: Final = _bulk.RECORDS
_CONTENT: Final = _bulk.CONTENT
_EVENT_ID: Final = ROW_FIELDS.index("event_id")
_INSERT_TRIES: Final = 5
_REPLACED: Final = "usage rows held text the database cannot store (NUL, lone surrogates): stored as U+FFFD"
# The most rows one fetch of iter_events asks for: sqlite3's fetchmany() takes a C int (OverflowError past it).
_MOST_FETCHED: Final = 2**31 - 1


class _SomeWereStored(Exception):
    """The insert-or-ignore skipped rows of a batch: which ones must be looked up (``UsageStore._insert``)."""


class UsageStore:
    """The usage ledger in a SQL database: writes batches of events, reads them back.

    Args:
        url_or_engine: A SQLAlchemy URL (``sqlite:///usage.db``,
            ``postgresql+psycopg://user:password@host/db``; checked by
            :func:`check_database_url`) or an engine of yours.
            An engine you pass is used as it is (no pragmas added) and is not
            disposed by :meth:`close`.
        create: Bring a database without usage tables to the newest schema.
            With False the store never changes the schema (and never creates a
            missing SQLite file): a database without tables raises
            :class:`SchemaOutdatedError` like an old one.

    Raises:
        ConfigurationError: The URL can never work (malformed, another database, a driver that is
            missing, a SQLite file in a directory that does not exist), the engine cannot be written
            through (an ``AsyncEngine``, another database, an asyncio driver, a ``schema_translate_map``
            that moves tables of no schema, a SQLite database in memory whose pool is not a
            ``StaticPool``: each of its connections is a database of its own), or ``create`` is not a bool.
        SchemaOutdatedError: The schema is older than this library's (the message names the command).
        SchemaTooNewError: A newer release of the library migrated the database.
        StoreSchemaError: Any other misfit: tables our migrations did not make, a version table
            holding several revisions or an empty one, or (PostgreSQL) no tables and a role that may
            not create them (the message names the privilege) or a search_path of no existing schema.
        sqlalchemy.exc.OperationalError: The database cannot be reached.

    Example:
        >>> store = UsageStore("sqlite:///usage.db")
        >>> store.write(events)  # three UsageEvents of project acme-support
        3
        >>> [e.outcome for e in store.events(project="acme-support")]
        ['error', 'ok', 'ok']
        >>> store.close()
    """

    def __init__(self, url_or_engine: str | URL | Engine, *, create: bool = True) -> None:
        if not isinstance(create, bool):
            raise ConfigurationError(f"create must be True or False, got {create!r}")
        if isinstance(url_or_engine, Engine):
            self._engine, self._owns_engine = url_or_engine, False
            check_engine(url_or_engine)
            in_memory = sqlite_engine_in_memory(url_or_engine)  # asked of the database: a creator= may open a file
            check_one_database_per_engine(url_or_engine, in_memory=in_memory)
            # Forked with the application (gunicorn --preload, a multiprocessing pool), the child must not write
            # through the parent's connections: SQLAlchemy's own advice, engine.dispose(close=False) in the child.
            new_pool_after_fork(url_or_engine, in_memory=in_memory)
        else:
            self._engine, self._owns_engine = make_engine(url_or_engine), True
        self._url = masked_url(self._engine.url)
        self._create = create
        # Fixed now, as the engine's connections fix it: a later chdir() changes neither.
        self._sqlite_file = sqlite_opened_file(self._engine.url) if self._engine.dialect.name == "sqlite" else None
        try:
            self._check_schema_waiting(create=create)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """The database URL, password masked."""
        return self._url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for reports that query the tables directly)."""
        return self._engine

    def __repr__(self) -> str:
        return f"UsageStore({self._url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _check_schema_waiting(self, *, create: bool) -> None:
        """:meth:`_check_schema`, waiting as a migration does while another SQLite connection creates the schema.

        Workers starting together on a new SQLite file: the one creating the tables holds the file's
        lock for the whole migration, and the others' first reads (or the switch of their connection
        to WAL) can find it locked past the busy timeout that writes use. Opening waits up to the
        migration wait instead (``upgrade`` waits that long for its turn too).
        """
        deadline = time_module.monotonic() + _migrate.SQLITE_MIGRATION_WAIT_MS / 1000
        while True:
            try:
                self._check_schema(create=create)
                return
            except OperationalError as error:
                locked = self._engine.dialect.name == "sqlite" and "database is locked" in str(error)
                if not locked or time_module.monotonic() > deadline:
                    raise
                logger.debug("the usage database %s is locked while opening; waiting", self._url)
                time_module.sleep(0.05)

    def _check_schema(self, *, create: bool) -> None:
        head = _migrate.head_revision()
        if not create and self._sqlite_file is not None and not self._sqlite_file.exists():
            # Connecting would create an empty file, and create=False promises no change.
            raise SchemaOutdatedError(url=self._url, current=None, head=head)
        current, has_tables = self._schema_state()
        if current is None and not has_tables and create:
            _migrate.upgrade(self._engine)
            # Read again rather than assume head: a newer release may have won a race to create the tables.
            current, has_tables = self._schema_state()
        if current == head and has_tables:
            return
        if current == head:
            raise StoreSchemaError(
                f"the usage database {self._url} records revision {head} in {VERSION_TABLE} but has no "
                f"{_RECORDS.name}: the tables were dropped; delete the row in {VERSION_TABLE} and open it again",
                url=self._url,
                current=current,
                head=head,
            )
        if current is None:
            if has_tables:
                raise tables_not_ours(self._url, head)
            raise SchemaOutdatedError(url=self._url, current=None, head=head)
        if not _migrate.is_known_revision(current):
            raise SchemaTooNewError(url=self._url, current=current, head=head)
        raise SchemaOutdatedError(url=self._url, current=current, head=head)

    def _schema_state(self) -> tuple[str | None, bool]:
        """The recorded revision and whether the records table exists, read from one snapshot.

        A migration commits the tables and its revision together, but two reads
        outside one snapshot can fall on either side of that commit (another
        process creating the schema right now) and see tables without a revision.
        """
        with self._engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN")  # the sqlite3 module starts no transaction for reads
            else:
                connection.execution_options(isolation_level="REPEATABLE READ")
            try:
                current = _migrate.current_revision(connection)
            except RuntimeError as error:  # a version table our migrations did not write
                raise StoreSchemaError(
                    f"the usage database {self._url} cannot be used: {error}; our migrations keep one revision "
                    f"there: put the right one back, or use another database",
                    url=self._url,
                    current=None,
                    head=_migrate.head_revision(),
                ) from None
            return current, inspect(connection).has_table(_RECORDS.name)

    def write(self, events: Sequence[UsageEvent]) -> int:
        """Stores ``events`` in one transaction, skipping those already stored; returns how many were new.

        Events are matched by ``event_id``, so writing a batch again (a replay
        from the spool after a failure that happened after the commit) adds
        nothing. Captured content goes to ``ar_usage_content``, for the events
        that have any.

        Raises:
            ValueError: An event holds a number its column cannot hold on every backend (a token
                count, attempt, HTTP status or validation error count outside -2**31 .. 2**31 - 1,
                a cost outside 64 bits, a latency that is NaN, infinite or negative), refused alike on
                SQLite and PostgreSQL; nothing was written.
            sqlalchemy.exc.SQLAlchemyError: The database failed; nothing was written.
        """
        return self.write_rows([usage.to_row() for usage in events])

    def write_rows(self, rows: Sequence[UsageRow]) -> int:
        """:meth:`write` for events flattened by :meth:`UsageEvent.to_row` (the form the recorder queues).

        Rows are inserted in bulk with little Python per row, handing the GIL
        over every few dozen rows, so an event loop in the same process keeps
        waking on time while a batch is written (see ``storage/_bulk.py``).
        Text no database can hold (NUL characters in PostgreSQL, lone UTF-16
        surrogates anywhere, such as a model's answer cut inside an emoji) is
        stored with U+FFFD in its place rather than refused with its batch; a NUL
        is so on SQLite too, which would store it, so that every backend holds the
        same text and ``events(project=...)`` finds the row.
        """
        unique = _bulk.unique_rows(rows)
        if not unique:
            return 0
        _bulk.check_numbers(unique)
        if _bulk.hold_nul(unique):
            unique = _bulk.storable(unique)
            logger.warning(_REPLACED)
        try:
            return self._insert(unique)
        except Exception as error:
            # A row the database refuses would hold its whole batch in the spool forever.
            storable = _bulk.storable(unique) if _bulk.refused_text(error) else unique
            if storable == unique:
                raise
            logger.warning(_REPLACED)
            return self._insert(storable)

    def _insert(self, rows: list[UsageRow]) -> int:
        """Inserts the new rows and adds exactly those to the rollup, in one transaction.

        First on the guess that every row is new (a batch from the recorder): if the insert-or-ignore
        inserted all of them, they were. If not (a replay), the transaction is rolled back and the rows
        already stored are looked up first; the rows left are inserted, and if another writer stored one
        of them in between (the insert then counts fewer), the whole is tried again.
        """
        known_new = True
        for _ in range(_INSERT_TRIES):
            try:
                with write_transaction(self._engine) as connection, postgresql_write_timeouts(connection):
                    fresh = rows
                    # A transaction, through an engine in AUTOCOMMIT too (write_transaction): a wrong guess is
                    # taken back.
                    if not known_new:
                        stored = _bulk.stored_event_ids(connection, rows)
                        fresh = [row for row in rows if row[_EVENT_ID] not in stored]
                    new = _bulk.insert_records(connection, fresh)
                    if new != len(fresh):
                        raise _SomeWereStored
                    _rollup.add_rows(connection, fresh)
                    _bulk.insert_content(connection, rows)
                return new
            except _SomeWereStored:
                known_new = False
        raise RuntimeError(f"other writers kept storing events of this batch during {_INSERT_TRIES} tries")

    def events(
        self,
        *,
        call_id: uuid.UUID | str | None = None,
        project: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> list[UsageEvent]:
        """The stored events that match every filter given, by ``started_at`` then ``attempt``.

        Args:
            call_id: Only the attempts of this call: a ``uuid.UUID``, or its text (as an export shows it).
            project: Only this project's events.
            since: Only events that started at or after this time: a timezone-aware
                ``datetime``, or a ``date``, meaning its midnight UTC.
            until: Only events that started before this time (exclusive), given as ``since`` is:
                ``since=date(2025, 5, 1), until=date(2025, 5, 2)`` is the UTC day of May 1.

        Raises:
            ConfigurationError: ``since`` or ``until`` is a naive ``datetime`` (refused rather than
                guessed at: the ledger is in UTC, the caller's clock may not be), not a date at all, or
                outside the years 1 to 9999 once in UTC; ``until`` is before ``since``; ``call_id`` is
                not a UUID or its text; or ``project`` is not a string, or holds a NUL or a lone
                surrogate, which no row holds.

        Example:
            >>> rows = store.events(project="acme-support", since=date(2025, 5, 1))
            >>> [(row.attempt, row.outcome) for row in rows]
            [(1, 'error'), (2, 'ok'), (1, 'ok')]
        """
        query = self._select_events(call_id=call_id, project=project, since=since, until=until)
        with self._engine.connect() as connection:
            return [_event(row) for row in connection.execute(query).mappings()]

    def report(
        self,
        project: str | None = None,
        *,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        session: str | None = None,
        agent: str | None = None,
        tags: Mapping[str, str] | None = None,
        group_by: Sequence[str] = ("agent", "model"),
        top: int = 10,
        thresholds: ReportThresholds | None = None,
        pricing: PricingTable | None = None,
    ) -> UsageReport:
        """What the usage that matches every filter given cost, where it went, and what was wasted.

        The numbers are aggregated in SQL (the rows are never loaded), in one
        read transaction; docs/reports.md defines each of them. Latency
        percentiles are exact on PostgreSQL (``percentile_cont``) and estimated
        within 4.9 % on SQLite (``percentile_method`` says which). The
        ``recommendations`` are findings grounded in these numbers (see
        :func:`~autogen_reliability.reports.recommend`).

        Args:
            project: Only this project's usage (None: every project, and usage with no project).
            since: Only attempts that started at or after this time: a timezone-aware
                ``datetime``, or a ``date``, meaning its midnight UTC.
            until: Only attempts that started before this time (exclusive), given as ``since`` is.
            session: Only this session's usage.
            agent: Only this agent's usage.
            tags: Only attempts whose tags hold each of these keys with this value.
            group_by: The columns of ``breakdown``, any of ``project``, ``session``, ``agent``,
                ``model``, ``provider``, ``day``, ``week`` (its Monday), ``outcome``, ``error_kind``
                and ``tag:KEY`` (the value of tag ``KEY``).
            top: How many sessions ``top_sessions`` lists (by cost); more than there are lists them all.
            thresholds: When a recommendation is made (default: ``ReportThresholds()``).
            pricing: The prices that estimate a recommendation's saving (default: genai-prices' data;
                pass the table your wrappers price with if it has overrides).

        Raises:
            ConfigurationError: A bound is naive, not a date or outside the years 1 to 9999 once in
                UTC, ``until`` is before ``since``, a filter, tag key or tag value is not a string or
                holds what the ledger cannot (a NUL character), ``tags`` is not a mapping, ``group_by``
                is empty, repeats a column or names one that does not exist, or ``top`` is not an
                integer >= 1.
            sqlalchemy.exc.SQLAlchemyError: The database failed.

        Example:
            >>> report = store.report("acme-support", since=date(2025, 5, 1), until=date(2025, 5, 2))
            >>> report.totals.calls, report.totals.attempts, report.totals.retry_rate
            (2, 3, 0.5)
            >>> [(line.outcome, line.attempts) for line in report.waste]
            [('error', 1), ('invalid', 0), ('cancelled', 0)]
            >>> report.unpriced_models  # no price was known: not counted as $0
            ('gpt-4o-mini',)
        """
        if thresholds is not None and not isinstance(thresholds, ReportThresholds):
            raise ConfigurationError(f"thresholds must be a ReportThresholds, got {type(thresholds).__name__}")
        if pricing is not None and not isinstance(pricing, PricingTable):
            raise ConfigurationError(f"pricing must be a PricingTable, got {type(pricing).__name__}")
        since_at, until_at = _period(since, until)
        report = build_report(
            self._engine,
            project=project,
            since=since_at,
            until=until_at,
            session=session,
            agent=agent,
            tags=tags,
            group_by=group_by,
            top=top,
        )
        return dataclasses.replace(report, recommendations=recommend(report, thresholds, pricing))

    def iter_events(
        self,
        *,
        project: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        batch_size: int = 1000,
    ) -> Iterator[UsageEvent]:
        """:meth:`events` one at a time, for ledgers too large to hold in memory (an export, a migration).

        Rows are fetched ``batch_size`` at a time: from a server-side cursor on
        PostgreSQL, and as SQLite steps through its result. The iterator holds
        a connection (and, on PostgreSQL, a transaction) until it is exhausted
        or closed: use it in a ``for`` loop, or close it (``contextlib.closing``).

        Args:
            project, since, until: As for :meth:`events` (checked when this is called).
            batch_size: Rows fetched from the database at a time (at most 2**31 - 1, what SQLite's driver
                takes: a larger one is taken as that).

        Raises:
            ConfigurationError: As :meth:`events` raises it, or ``batch_size`` is not a positive int.

        Example:
            >>> [row.attempt for row in store.iter_events(project="acme-support", batch_size=2)]
            [1, 2, 1]
        """
        batch_size = _positive("batch_size", batch_size, most=_MOST_FETCHED)
        query = self._select_events(project=project, since=since, until=until)
        return self._stream(query, batch_size)

    def _stream(self, query: Select[Any], batch_size: int) -> Iterator[UsageEvent]:
        with self._engine.connect() as connection:
            if connection.dialect.name == "postgresql" and autocommit(connection):
                # The server-side cursor of yield_per lives in a transaction, which an engine in AUTOCOMMIT (an
                # application's own) never opens: this connection gets one; the pool puts its isolation level
                # back when it is returned.
                connection.execution_options(isolation_level="READ COMMITTED")
            result = connection.execution_options(yield_per=batch_size).execute(query)
            for row in result.mappings():
                yield _event(row)

    def sessions(
        self,
        project: str | None = None,
        *,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        limit: int = 50,
    ) -> list[SessionSummary]:
        """The most recently active sessions, with their calls, attempts, errors, tokens, cost and span.

        One ``GROUP BY`` in the database (no row is loaded), latest activity
        first. Rows without a session (calls made outside any) are not listed.
        A session's numbers cover only its rows inside ``since`` / ``until``.

        Args:
            project: Only this project's sessions.
            since, until: As for :meth:`events`.
            limit: At most this many sessions; more than there are lists them all.

        Raises:
            ConfigurationError: A bound is naive, not a date or outside the years 1 to 9999 once in
                UTC, ``until`` is before ``since``, ``limit`` is not a positive int, or ``project`` is
                not a string or holds what the ledger cannot (a NUL character).

        Example:
            >>> store.sessions(project="acme-support")  # the example events were made outside any session
            []
        """
        limit = _positive("limit", limit, most=MOST_ROWS)
        project = check_filter("project", project)
        query = _sessions.select_sessions(project, *_period(since, until), limit)
        with self._engine.connect() as connection:
            return [_sessions.session_summary(row) for row in connection.execute(query)]

    def delete_older_than(
        self, cutoff: datetime | date, *, batch_size: int = 10_000, dry_run: bool = False
    ) -> RetentionResult:
        """Deletes the rows (and their captured content) that started before ``cutoff``: the ledger's retention.

        Rows go ``batch_size`` at a time, oldest first, each batch in a
        transaction of its own, so writers (the recorder of a running
        application) get in between batches instead of waiting for the whole
        deletion. SQLite does not give the space back to the file system until
        ``VACUUM`` is run; the rows' pages are reused by new rows.

        Args:
            cutoff: A timezone-aware ``datetime``, or a ``date`` (its midnight UTC). Every row that
                started before it goes, whatever its project.
            batch_size: Rows deleted per transaction; more than there are deletes them in one.
            dry_run: Delete nothing; count what would be deleted.

        Returns:
            How many records and content rows were removed (or would be), and when the oldest
            and newest of them started.

        Raises:
            ConfigurationError: ``cutoff`` is naive, not a date or outside the years 1 to 9999 once
                in UTC, ``batch_size`` is not a positive int, or ``dry_run`` is not a bool.

        Example:
            >>> store.delete_older_than(date(2025, 5, 1), dry_run=True).records
            0
            >>> store.delete_older_than(date(2025, 5, 2)).records
            3
        """
        bound = _time_bound("cutoff", cutoff)
        if bound is None:
            raise ConfigurationError("cutoff must be a timezone-aware datetime or a date, got None")
        batch_size = _positive("batch_size", batch_size, most=MOST_ROWS)
        if not isinstance(dry_run, bool):
            raise ConfigurationError(f"dry_run must be True or False, got {dry_run!r}")
        return _retention.delete_older_than(self._engine, bound, batch_size=batch_size, dry_run=dry_run)

    def count(self) -> int:
        """How many events are stored."""
        with self._engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(_RECORDS)).scalar_one()

    def ping(self) -> None:
        """Returns when the database answers a query; raises (``sqlalchemy.exc.OperationalError``) when not."""
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def reopen(self) -> None:
        """Checks the database again as opening the store does, with fresh connections (the recorder's retry).

        The recorder calls it before it tries again a database that failed. A SQLite
        file deleted while the process ran is made again with the usage tables (with
        ``create=True``), so the rows spooled meanwhile are replayed into it; a file
        that was read-only is opened again. It does not wait for a locked database.

        Raises:
            StoreSchemaError: The schema no longer fits (see the constructor).
            sqlalchemy.exc.OperationalError: The database cannot be reached.
        """
        if self._owns_engine:
            self._engine.dispose()
        self._check_schema(create=self._create)

    def close(self) -> None:
        """Closes the pool's connections, if the store made the engine (an engine you passed stays open)."""
        if self._owns_engine:
            self._engine.dispose()

    @staticmethod
    def _select_events(
        *,
        call_id: uuid.UUID | str | None = None,
        project: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> Select[Any]:
        """The events matching every filter given, by ``started_at`` then ``attempt`` (filters checked here)."""
        project = check_filter("project", project)
        since, until = _period(since, until)
        columns = [_RECORDS.c[name] for name in _RECORD_FIELDS]
        query = (
            select(*columns, _CONTENT.c.request_content, _CONTENT.c.response_content)
            .select_from(_RECORDS.outerjoin(_CONTENT, _CONTENT.c.event_id == _RECORDS.c.event_id))
            .order_by(_RECORDS.c.started_at, _RECORDS.c.attempt, _RECORDS.c.id)
        )
        if call_id is not None:
            query = query.where(_RECORDS.c.call_id == _call_id(call_id))
        if project is not None:
            query = query.where(_RECORDS.c.project == project)
        if since is not None:
            query = query.where(_RECORDS.c.started_at >= since)
        if until is not None:
            query = query.where(_RECORDS.c.started_at < until)
        return query


def _call_id(value: object) -> uuid.UUID:
    """``call_id`` of :meth:`UsageStore.events` as a UUID: the column's drivers differ on anything else."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise ConfigurationError(f"call_id must be a uuid.UUID or its text, got {type(value).__name__}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ConfigurationError(f"call_id must be a uuid.UUID or its text, got {quoted(value)}") from None


def _period(since: datetime | date | None, until: datetime | date | None) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until`` as :func:`_time_bound` gives them, refused when ``until`` is before ``since``."""
    start, end = _time_bound("since", since), _time_bound("until", until)
    if start is not None and end is not None and end < start:
        raise ConfigurationError(f"until ({end.isoformat()}) is before since ({start.isoformat()})")
    return start, end


def _time_bound(name: str, value: datetime | date | None) -> datetime | None:
    """A bound of :meth:`UsageStore.events` as a datetime in UTC: a date is its midnight UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):  # before date: a datetime is a date too
        if value.utcoffset() is None:
            raise ConfigurationError(
                f"{name} must be timezone-aware, e.g. datetime(..., tzinfo=UTC), or a date (its midnight UTC); "
                f"got the naive {value.isoformat()}"
            )
        try:
            return value.astimezone(UTC)
        except OverflowError:  # in range as written, not once moved to UTC: the year 1 at +05:00
            raise ConfigurationError(f"{name} {value.isoformat()} is outside the years 1 to 9999 once in UTC") from None
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    raise ConfigurationError(f"{name} must be a timezone-aware datetime or a date, got {type(value).__name__}")


def _positive(name: str, value: object, *, most: int) -> int:
    """``value``, a positive int, as at most ``most`` (what the database takes: any more is all of the rows)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
    return min(value, most)


def _event(row: Any) -> UsageEvent:
    values = {name: row[name] for name in _RECORD_FIELDS}
    values["request_content"] = row["request_content"]
    values["response_content"] = row["response_content"]
    return UsageEvent(**values)
