"""Schema migrations of the usage store, run through alembic from Python.

The alembic scripts live in the top-level ``migrations/`` directory of a source
checkout and ship inside the wheel as ``autogen_reliability/migrations``;
:func:`script_location` finds whichever is there. Our revision is kept in our
own version table (``ar_alembic_version``), so an application that runs its
own alembic on the same database is not disturbed.

The command line does the same: ``autogen-reliability db upgrade [--url URL]``.

alembic loads only to migrate, or to answer about a revision that is not the
newest: :func:`current_revision` reads the version table with SQLAlchemy and
:func:`head_revision` reads the scripts' file names, so opening a store whose
database is at the newest revision loads no alembic (importing it takes longer,
~0.3 s, than all the rest of a first wrapper).

The errors of a database whose schema does not fit (:class:`StoreSchemaError` and
its kinds) are defined here, where migrating raises them, and raised by the store too.

Example:
    >>> from autogen_reliability.storage import current_revision, head_revision, upgrade
    >>> upgrade("sqlite:///usage.db")
    >>> current_revision("sqlite:///usage.db") == head_revision()
    True
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import Connection, Engine, column, inspect, select, table, text

from .._errors import ReliabilityError
from ._engine import check_engine, fork_waits_for, make_engine, masked_url
from ._models import VERSION_TABLE, UsageRecord

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "SQLITE_MIGRATION_WAIT_MS",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "StoreSchemaError",
    "alembic_config",
    "current_revision",
    "head_revision",
    "is_known_revision",
    "migration_transaction",
    "refuse_tables_not_ours",
    "script_location",
    "tables_not_ours",
    "upgrade",
    "upgrade_from",
]

# pg_advisory_xact_lock key that serialises our migrations on one PostgreSQL database
# (an arbitrary constant: the first 8 bytes of sha256("autogen_reliability.migrations")).
_PG_LOCK_KEY: Final = 0x2F1A_53C4_9B0E_7D61


class StoreSchemaError(ReliabilityError):
    """Raised when the database's usage tables do not fit this version of the library.

    Attributes:
        url: The database URL, password masked.
        current: The schema revision of the database (None: no usage tables).
        head: The revision this library needs.
    """

    def __init__(self, message: str, *, url: str, current: str | None, head: str) -> None:
        self.url = url
        self.current = current
        self.head = head
        super().__init__(message)


class SchemaOutdatedError(StoreSchemaError):
    """Raised when the database's usage schema is older than this library's; the message names the upgrade command."""

    def __init__(self, *, url: str, current: str | None, head: str) -> None:
        self.command = f"autogen-reliability db upgrade --url {shlex.quote(url)}"
        where = f"is at schema revision {current}" if current else "has no usage tables"
        password = " (put the password in place of ***)" if ":***@" in url else ""
        super().__init__(
            f"the usage database {url} {where}; this autogen-reliability needs revision {head}. "
            f"Upgrade it with: {self.command}{password}",
            url=url,
            current=current,
            head=head,
        )


class SchemaTooNewError(StoreSchemaError):
    """Raised when a newer autogen-reliability migrated the database to a revision this one does not know."""

    def __init__(self, *, url: str, current: str, head: str) -> None:
        super().__init__(
            f"the usage database {url} is at schema revision {current}, which this autogen-reliability "
            f"does not know (it knows up to {head}): a newer release migrated it; upgrade autogen-reliability",
            url=url,
            current=current,
            head=head,
        )


def tables_not_ours(url: str, head: str) -> StoreSchemaError:
    """The error of a database holding ``ar_usage_records`` but no revision of ours (``create_all``, by hand)."""
    return StoreSchemaError(
        f"the usage database {url} has {UsageRecord.__tablename__} but no {VERSION_TABLE}: "
        "its tables were not made by autogen-reliability's migrations; move them aside or use another database",
        url=url,
        current=None,
        head=head,
    )


def script_location() -> Path:
    """The directory holding alembic's ``env.py`` and ``versions/``.

    Raises:
        RuntimeError: When neither the installed copy nor the source checkout's is there.
    """
    package = Path(__file__).resolve().parent.parent
    candidates = (
        package / "migrations",  # installed from the wheel, which force-includes them here
        package.parent / "migrations",  # a source checkout (and its editable install)
    )
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(f"the alembic scripts of autogen-reliability are missing; looked in {candidates}")


@functools.cache
def _script_directory(location: Path) -> ScriptDirectory:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - alembic loads only to migrate (see above)

    return ScriptDirectory(str(location))


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic :class:`~alembic.config.Config` for our scripts, to run any alembic command.

    Args:
        connection: Handed to ``env.py`` (as ``config.attributes["connection"]``),
            which then migrates through it and leaves the transaction to the caller.

    Example:
        >>> from alembic import command
        >>> from sqlalchemy import create_engine
        >>> engine = create_engine("sqlite:///usage.db")
        >>> upgrade(engine)
        >>> with engine.connect() as connection, migration_transaction(connection):
        ...     command.downgrade(alembic_config(connection), "base")
        >>> current_revision(engine) is None
        True
    """
    from alembic.config import Config  # noqa: PLC0415 - alembic loads only to migrate (see above)

    config = Config()
    # ConfigParser interpolates "%": a directory name may contain one.
    config.set_main_option("script_location", str(script_location()).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


_SCRIPT_NAME: Final = re.compile(r"(\d{4})_\w+\.py")


def head_revision() -> str:
    """The newest revision of the schema this version of the library knows.

    Read from the scripts' file names, without loading alembic: each script is named after its
    revision (``0005_rollup_per_day_and_sessions.py`` holds revision ``"0005"``), and the revisions
    form one line whose numbers grow, so the highest number is alembic's head;
    ``tests/test_storage.py`` holds the scripts to that.
    """
    names = (_SCRIPT_NAME.fullmatch(path.name) for path in (script_location() / "versions").iterdir())
    head = max((found[1] for found in names if found is not None), default=None)
    if head is None:  # pragma: no cover - the scripts ship with at least one revision
        raise RuntimeError("the alembic scripts of autogen-reliability have no revision")
    return head


def is_known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of this library's revisions (False: made by a newer release)."""
    from alembic.util import CommandError  # noqa: PLC0415 - alembic loads only to migrate (see above)

    if not revision:
        return False  # alembic asserts rather than answer for an empty identifier
    try:
        return _script_directory(script_location()).get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(engine: Engine | Connection | str) -> str | None:
    """The revision the database is at; None when it has no usage tables of ours yet.

    Read as alembic's ``MigrationContext.get_current_revision`` reads it, without loading alembic.

    Args:
        engine: An engine, a connection, or a database URL.

    Raises:
        RuntimeError: The version table holds more than one revision, or an empty one (not one of ours:
            ours are one line, with a revision).
    """
    if isinstance(engine, Connection):
        if not inspect(engine).has_table(VERSION_TABLE):
            return None
        revisions: list[str] = list(
            engine.execute(select(column("version_num")).select_from(table(VERSION_TABLE))).scalars()
        )
        if len(revisions) > 1:
            raise RuntimeError(f"{VERSION_TABLE} holds more than one revision: {sorted(revisions)}")
        if revisions and not revisions[0]:
            raise RuntimeError(f"{VERSION_TABLE} holds an empty revision")
        return revisions[0] if revisions else None
    resolved, owned = _resolve(engine)
    try:
        with resolved.connect() as connection:
            return current_revision(connection)
    finally:
        if owned:
            resolved.dispose()


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Brings the database's usage tables to ``revision`` (by default the newest).

    Safe to run from several processes at once: they take turns (an advisory
    lock on PostgreSQL, a write lock on SQLite) and the later ones find nothing to do.
    Threads of one process take turns too, even on different databases.

    Args:
        engine_or_url: An engine, or a database URL (its engine is disposed afterwards).
        revision: An alembic revision identifier; ``"head"`` for the newest.

    Raises:
        SchemaTooNewError: A newer release of the library migrated the database (nothing is changed).
        ConfigurationError: An engine the store cannot work through, such as one whose
            ``schema_translate_map`` moves tables of no schema (see :class:`UsageStore`).
        StoreSchemaError: The database holds ``ar_usage_records`` that our migrations did not make (no
            revision recorded), or, on PostgreSQL, it has no usage tables and they cannot be created
            where they would go: the role lacks the CREATE privilege on that schema (the message
            names it, and the GRANT that gives it), or no schema of the search_path exists.
    """
    upgrade_from(engine_or_url, revision)


def upgrade_from(engine_or_url: Engine | str, revision: str = "head") -> str | None:
    """:func:`upgrade`, returning the revision the database was at when this upgrade had its turn.

    That is, once it held the migrations' lock: another process may have migrated the database
    between an earlier read and then (``None``: it had no usage tables).

    Raises:
        StoreSchemaError: As :func:`upgrade`.
    """
    from alembic import command  # noqa: PLC0415 - alembic loads only to migrate (see above)

    engine, owned = _resolve(engine_or_url)
    target = head_revision() if revision == "head" else revision
    try:
        with engine.connect() as connection, migration_transaction(connection):
            # Workers starting together all wait here; those after the first find the work done, and
            # must not hold the write lock while alembic loads its scripts: on SQLite every other
            # writer waits only its busy timeout (2 s) for that lock.
            found = current_revision(connection)
            if found is None:
                refuse_tables_not_ours(connection)
                if connection.dialect.name == "postgresql":
                    _check_may_create(connection)
            elif not is_known_revision(found):
                # alembic would say "Can't locate revision identified by '0007'".
                raise SchemaTooNewError(url=masked_url(connection.engine.url), current=found, head=head_revision())
            if found != target:
                with _ALEMBIC_IN_PROCESS:
                    command.upgrade(alembic_config(connection), revision)
            return found
    finally:
        if owned:
            engine.dispose()


SQLITE_MIGRATION_WAIT_MS = 60_000

# alembic keeps the migration under way in module globals (alembic.context, alembic.op), so two
# migrations at once in one process, even of two databases, break each other: they take turns here.
# Taken inside the database's own lock, never around it, so no thread waits for a database holding this.
_ALEMBIC_IN_PROCESS = threading.Lock()


def _turns_in_child() -> None:
    """After a fork, in the child: a lock of its own. A thread of the parent migrating at the fork held it for the
    whole migration, and is not in the child to let it go; the child's alembic sets its globals up afresh."""
    global _ALEMBIC_IN_PROCESS  # noqa: PLW0603
    _ALEMBIC_IN_PROCESS = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_turns_in_child)


@contextmanager
def migration_transaction(connection: Connection) -> Iterator[Connection]:
    """One transaction that a migration runs in, committed at the end, with migrations serialised.

    PostgreSQL: DDL is transactional, and a transaction-scoped advisory lock
    makes concurrent upgrades wait for each other, also through an engine in
    ``AUTOCOMMIT`` (its connection is given a transaction). SQLite: ``BEGIN IMMEDIATE``
    takes the write lock before alembic reads the version table, and foreign
    keys are switched off meanwhile, because alembic's batch mode re-creates a
    table by dropping it, and with foreign keys on that drop would cascade into
    ``ar_usage_content`` and delete the captured content.
    """
    if connection.in_transaction():
        raise RuntimeError("migration_transaction() needs a connection outside any transaction")
    with fork_waits_for(connection):
        sqlite = connection.dialect.name == "sqlite"
        foreign_keys = False
        busy_timeout = 0
        if sqlite:
            # PRAGMA foreign_keys is ignored inside a transaction: switch it off before BEGIN.
            foreign_keys = bool(connection.exec_driver_sql("PRAGMA foreign_keys").scalar())
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            # Writes fail fast to the spool, but a migration waits its turn: others may be migrating.
            busy_timeout = int(connection.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0)
            connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_MIGRATION_WAIT_MS}")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            if getattr(connection.connection.driver_connection, "autocommit", False) is True:
                # An engine in AUTOCOMMIT (an application's own) would commit each DDL statement and release
                # the lock below at once: concurrent upgrades collide, a failed one stays half done. This
                # connection runs in a transaction; the pool puts its isolation level back when it is returned.
                connection.execution_options(isolation_level="READ COMMITTED")
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        else:
            connection.commit()
        finally:
            if sqlite:
                connection.exec_driver_sql(f"PRAGMA busy_timeout={busy_timeout}")
            if sqlite and foreign_keys:
                # The connection goes back to the pool: leave it as the store configured it.
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def refuse_tables_not_ours(connection: Connection) -> None:
    """Raises :class:`StoreSchemaError` when ``ar_usage_records`` is there but no revision of ours is recorded.

    Made by ``create_all`` or by hand: the first migration would fail on it ("table ar_usage_records already
    exists"), and the store refuses it (``tables_not_ours``).
    """
    if inspect(connection).has_table(UsageRecord.__tablename__):
        raise tables_not_ours(masked_url(connection.engine.url), head_revision())


def _check_may_create(connection: Connection) -> None:
    """On PostgreSQL, raises :class:`StoreSchemaError` if the role cannot create tables where ours would go.

    Asked before alembic starts: its first ``CREATE TABLE`` would fail with the server's "permission denied
    for schema public", a raw ``ProgrammingError`` that names neither the privilege nor the remedy.
    """
    user, schema, search_path, allowed = connection.execute(
        text(
            "SELECT current_user, current_schema(), current_setting('search_path'), "
            "has_schema_privilege(current_schema(), 'CREATE')"
        )
    ).one()
    if schema is None:
        problem = f"no schema of its search_path ({search_path}) exists: create one, or set search_path to one"
    elif not allowed:
        quote = connection.dialect.identifier_preparer.quote
        problem = (
            f"the role {user} lacks the CREATE privilege on schema {schema}: grant it "
            f"(GRANT CREATE ON SCHEMA {quote(schema)} TO {quote(user)}), or run autogen-reliability db upgrade "
            "once as a role that has it"
        )
    else:
        return
    url = masked_url(connection.engine.url)
    raise StoreSchemaError(
        f"the usage database {url} has no usage tables, and they cannot be created: {problem}",
        url=url,
        current=None,
        head=head_revision(),
    )


def _resolve(engine_or_url: Engine | str) -> tuple[Engine, bool]:
    """The engine to use, and whether we made it (and so must dispose of it)."""
    if isinstance(engine_or_url, Engine):
        check_engine(engine_or_url)
        return engine_or_url, False

    return make_engine(engine_or_url, pooled=False), True
