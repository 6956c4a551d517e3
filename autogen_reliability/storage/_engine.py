"""The engines of the usage store: which URLs can work, and the settings of SQLite and PostgreSQL connections.

Shared by the store, which writes and reads, and by the migrations, which only
need a connection; neither imports the other for it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, unquote

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection, ExceptionContext
from sqlalchemy.exc import ArgumentError, InvalidatePoolError, NoSuchModuleError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection, StaticPool
from sqlalchemy.util import asbool

from .._errors import ConfigurationError
from .._redaction import quoted, redact

__all__ = [
    "POSTGRESQL_CONNECT_TIMEOUT_S",
    "POSTGRESQL_LOCK_TIMEOUT_MS",
    "POSTGRESQL_STATEMENT_TIMEOUT_MS",
    "POSTGRESQL_WRITE_TIMEOUTS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_FORK_WAIT_S",
    "SUPPORTED_BACKENDS",
    "autocommit",
    "check_database_url",
    "check_engine",
    "check_one_database_per_engine",
    "error_line",
    "fork_waits_for",
    "make_engine",
    "masked_url",
    "new_pool_after_fork",
    "postgresql_write_timeouts",
    "sqlite_engine_in_memory",
    "sqlite_file_missing",
    "sqlite_file_path",
    "sqlite_opened_file",
    "url_secrets",
    "write_transaction",
]

logger = logging.getLogger("autogen_reliability")

SQLITE_BUSY_TIMEOUT_MS: Final = 2000
"""How long a SQLite write waits for another writer's lock: short, because the recorder spools instead."""

POSTGRESQL_CONNECT_TIMEOUT_S: Final = 10
"""How long connecting to PostgreSQL may take before failing (libpq's default is to wait forever)."""

POSTGRESQL_LOCK_TIMEOUT_MS: Final = SQLITE_BUSY_TIMEOUT_MS
"""How long a PostgreSQL write waits for a lock on the usage tables before failing (and the batch is spooled)."""

POSTGRESQL_STATEMENT_TIMEOUT_MS: Final = 10_000
"""How long one PostgreSQL write may run before failing: a stuck server sends batches to the spool."""

# libpq settings of the connections make_engine opens (a URL's own query parameters win): a server
# that vanished without closing the connection (a network partition, a killed VM) is noticed in
# about 25 s by TCP keepalives while waiting for an answer, and by tcp_user_timeout while sending,
# instead of after the kernel's 15 minutes of retransmissions, so its batches go to the spool.
_LIBPQ_DEFAULTS: Final = {
    "connect_timeout": POSTGRESQL_CONNECT_TIMEOUT_S,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 25_000,
}

# Per write transaction, so that reports and migrations on the same engine keep the server's defaults.
POSTGRESQL_WRITE_TIMEOUTS: Final = (
    f"SELECT set_config('lock_timeout', '{POSTGRESQL_LOCK_TIMEOUT_MS}', true), "
    f"set_config('statement_timeout', '{POSTGRESQL_STATEMENT_TIMEOUT_MS}', true)"
)


@contextmanager
def postgresql_write_timeouts(connection: Connection) -> Iterator[None]:
    """The lock and statement timeouts of a write on PostgreSQL (:data:`POSTGRESQL_WRITE_TIMEOUTS`), for its duration.

    Fail fast, as SQLite's busy timeout does: a locked table or a stuck server must not hold the writer (and
    the queue behind it) for as long as it lasts; the batch is spooled instead. Nothing on another database.
    """
    if connection.dialect.name == "postgresql":
        # They end with the write's transaction, which an engine in AUTOCOMMIT has too (write_transaction).
        connection.exec_driver_sql(POSTGRESQL_WRITE_TIMEOUTS)
    yield


SUPPORTED_BACKENDS: Final = ("sqlite", "postgresql")


# Query parameters that can carry a secret: libpq takes password= and sslpassword= there as well as in
# the user-info part, which is all SQLAlchemy's hide_password masks.
_SECRET_NAME: Final = "pass|pwd|secret|token|key"  # noqa: S105  # parameter names, not a password
_SECRET_PARAMETER: Final = re.compile(_SECRET_NAME, re.IGNORECASE)
_SECRET_QUERY_VALUE: Final = re.compile(rf"([?&][^=&]*(?:{_SECRET_NAME})[^=&]*=)[^&]*", re.IGNORECASE)


def url_secrets(url: URL) -> list[str]:
    """The secrets written in ``url``: its password and the values of secret query parameters."""
    found = [url.password] if isinstance(url.password, str) and url.password else []
    for name, value in url.query.items():
        if _SECRET_PARAMETER.search(name):
            found.extend(item for item in ((value,) if isinstance(value, str) else value) if item)
    return found


def masked_url(url: str | URL) -> str:
    """``url`` as text to show: its password, and any query parameter that can carry a secret, as ``***``.

    Never raises: a string that is not a URL SQLAlchemy parses is shown through :func:`redact`.
    """
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # as check_database_url() refuses it; a repr must still show something
            return redact(url)
    else:
        parsed = url
    try:
        shown = parsed.render_as_string(hide_password=True)
    except UnicodeEncodeError:
        shown = _render_undecoded(parsed)
    return _SECRET_QUERY_VALUE.sub(r"\1***", shown)


def _render_undecoded(url: URL) -> str:
    """``url`` rendered, password hidden, when it holds a lone surrogate, which SQLAlchemy's quoting cannot encode.

    Python reads a byte of a file name or command line that is not UTF-8 as one (and SQLite opens such a
    file). The database's bytes are %-encoded, as SQLAlchemy writes any other character of a path
    (``caf%E9.db``); a user, host or query value shows the character as its escape (``\\udce9``).
    """
    escaped = URL.create(
        url.drivername,
        username=url.username and _escaped(url.username),
        password=url.password,
        host=url.host and _escaped(url.host),
        port=url.port,
        query={
            name: _escaped(value) if isinstance(value, str) else [_escaped(item) for item in value]
            for name, value in url.query.items()
        },
    )
    head, question, query = escaped.render_as_string(hide_password=True).partition("?")
    database = "" if url.database is None else "/" + quote(_undecoded(url.database), safe=" +/")
    return head + database + question + query


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _undecoded(text: str) -> bytes:
    """The bytes Python read ``text`` from; a surrogate it cannot have read as one (given in code) as ``?``."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def error_line(error: Exception, secrets: list[str]) -> str:
    """The driver's own message, first line only (SQLAlchemy appends the SQL and a link), ``secrets`` as ``***``."""
    text = str(getattr(error, "orig", None) or error).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def check_database_url(url: str | URL) -> URL:
    """``url`` parsed, if the usage store can ever work with it; the one check of every URL the library takes.

    :func:`configure() <autogen_reliability.configure>`, :class:`UsageStore`,
    :func:`make_engine` and the ``autogen-reliability db`` commands all check
    their URL here, before anything is connected: a URL that can never work
    must fail where it is given, not make every usage row wait in the spool.

    Supported: SQLite (a file, or in memory) through the standard library's
    ``sqlite3``, and PostgreSQL through any synchronous driver that is
    installed (``postgresql+psycopg://`` is the one the ``postgresql`` extra
    installs). A SQLite file may be missing (it is created), its directory
    may not, whether the URL names the file by its path or by a ``file:``
    URI (``?uri=true``): only there does SQLite read its own parameters,
    such as ``sqlite:///file:usage.db?mode=ro&uri=true``. Whether a
    server answers is not checked: a database that is down is waited for.

    Raises:
        ConfigurationError: The URL is not a string, is malformed (its port not
            a number from 1 to 65535, an ``@`` in its password not written
            ``%40``), names another database (or PostgreSQL as ``postgres://``,
            which SQLAlchemy does not read; the message gives the URL to write), an asyncio or
            unknown driver, a driver that is not installed (the message names
            the extra to install), a SQLite file in a directory that does not
            exist, a SQLite URL with a host (``sqlite://usage.db``: the message gives the URL to
            write), SQLite's own URI parameters (``?mode=ro``) outside a
            ``file:`` URI with ``uri=true``, where they would be ignored, or
            a ``prepare_threshold`` (psycopg's) that is neither a whole
            number nor ``none``. The message never shows the password.
    """
    sync_engine = getattr(url, "sync_engine", None)  # an AsyncEngine's, whose module we do not import
    if isinstance(sync_engine, Engine):
        raise ConfigurationError(
            f"the usage store writes from a thread of its own and needs an engine made with create_engine() and a "
            f"synchronous driver, or a URL, not an AsyncEngine ({masked_url(sync_engine.url)})"
        )
    if not isinstance(url, str | URL):
        raise ConfigurationError(
            f"a database URL must be a string such as sqlite:///usage.db, got {type(url).__name__}"
        )
    try:
        parsed = make_url(url)
    except ArgumentError:
        # SQLAlchemy's message does not repeat the URL; neither do we: it may hold a password.
        raise ConfigurationError("malformed database URL; expected e.g. sqlite:///usage.db") from None
    except ValueError:  # make_url's int() of the port
        raise ConfigurationError("malformed database URL: its port is not a number") from None
    if parsed.host and "@" in parsed.host:
        # SQLAlchemy ends the password at its first "@" and takes the rest of it for the host, which
        # every message (ours, the driver's "failed to resolve host") would then show: not the URL.
        raise ConfigurationError("malformed database URL: the password contains '@'; URL-encode it as %40")
    masked = masked_url(parsed)
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ConfigurationError(f"the port of the database URL {masked} is not between 1 and 65535")
    backend = _backend(parsed)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigurationError(f"no SQLAlchemy driver {parsed.drivername!r}") from None
    if dialect.is_async:
        raise ConfigurationError(
            f"{parsed.drivername!r} is an asyncio driver; the usage store writes from a thread of its own "
            f"and needs a synchronous one, such as {backend}{'+psycopg' if backend == 'postgresql' else ''}://"
        )
    try:
        dialect.import_dbapi()
    except ImportError as error:
        hint = ""
        if backend == "postgresql":
            hint = "; pip install 'autogen-reliability[postgresql]' installs psycopg 3, for postgresql+psycopg://"
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]  # psycopg's is several lines
        raise ConfigurationError(
            f"the database driver for {parsed.drivername!r} is not installed ({reason}){hint}"
        ) from error
    if backend == "sqlite":
        _check_sqlite_host(parsed)
        _check_sqlite_query(parsed)
        _check_sqlite_path(parsed)
    if parsed.get_driver_name() == "psycopg":
        _prepare_threshold(parsed)
    return parsed


_NO_THRESHOLD: Final = object()


def _prepare_threshold(url: URL) -> object:
    """psycopg's ``prepare_threshold`` given in ``url`` (``none``: never prepare), else ``_NO_THRESHOLD``.

    SQLAlchemy hands the driver a URL's query parameters as text, which psycopg compares with its count of
    runs (a TypeError at every query): ``none`` is None, a whole number its int.
    """
    if "prepare_threshold" not in url.query:
        return _NO_THRESHOLD
    value = url.query["prepare_threshold"]
    if isinstance(value, str) and value.lower() == "none":
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    shown = value if isinstance(value, str) else "&".join(value)  # given twice
    raise ConfigurationError(
        f"prepare_threshold in the database URL must be a whole number of runs, or none (never prepare), "
        f"not {quoted(shown)}"
    )


def _backend(url: URL) -> str:
    """The backend ``url`` names, if the usage store supports it."""
    backend = url.get_backend_name()
    if backend == "postgres":  # Heroku's, Render's and libpq's scheme (a DATABASE_URL), which SQLAlchemy 1.4 dropped
        written = url.set(drivername="postgresql+" + (url.get_driver_name() if "+" in url.drivername else "psycopg"))
        raise ConfigurationError(
            f"a SQLAlchemy URL names PostgreSQL postgresql://, not postgres://: write {masked_url(written)}"
        )
    if backend not in SUPPORTED_BACKENDS:
        raise ConfigurationError(f"the usage store supports SQLite and PostgreSQL databases, not {backend!r}")
    return backend


# The sqlite3 module's own connect() arguments, which SQLAlchemy takes from a SQLite URL's query string.
_PYSQLITE_PARAMETERS: Final = frozenset(
    {"uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements"}
)


def _check_sqlite_query(url: URL) -> None:
    # Any other parameter (mode=ro, cache=shared, immutable=1) is SQLite's own, read from a file: URI only:
    # without uri=true the driver drops it (a "read-only" ledger was written to, cleaned up), and with
    # uri=true but no file: prefix SQLite opens a file named "usage.db?mode=ro".
    own = [name for name in url.query if name not in _PYSQLITE_PARAMETERS]
    database = url.database or ""
    if not own or (asbool(url.query.get("uri", False)) and database.startswith("file:")):
        return
    names = ", ".join(repr(name) for name in own)
    query = "&".join(
        f"{name}={'***' if _SECRET_PARAMETER.search(name) else value}"  # shown as masked_url() shows it
        for name in own
        for value in ((url.query[name],) if isinstance(url.query[name], str) else url.query[name])
    )
    path = database.removeprefix("file:") or ":memory:"
    raise ConfigurationError(
        f"SQLite reads {names} only from a file: URI with uri=true, such as sqlite:///file:{path}?{query}&uri=true; "
        "as written it would be ignored"
    )


def _check_sqlite_host(url: URL) -> None:
    # sqlite://usage.db (two slashes) names a host, which SQLite's driver refuses only when it first connects.
    if not (url.host or url.port or url.username or url.password):
        return
    path = "/".join(part for part in (url.host, url.database) if part) or "usage.db"
    raise ConfigurationError(
        f"a SQLite URL has no host ({masked_url(url)} names one): write sqlite:///{path} (three slashes: a path "
        f"from the working directory) or sqlite:////absolute/path/{path.rsplit('/', 1)[-1]} (four: an absolute one)"
    )


def _check_sqlite_path(url: URL) -> None:
    # SQLite reports a missing directory only when it first connects ("unable to open database file"),
    # which for the recorder means on its thread, and then the rows are spooled forever.
    database = sqlite_file_path(url)  # a file: URI's path too
    if database is None:
        return
    path = Path(database)
    try:
        if path.is_dir():
            raise ConfigurationError(f"the SQLite database {path} is a directory, not a file")
        directory = path.parent
        if not directory.is_dir():
            problem = "is not a directory" if directory.exists() else "does not exist"
            # SQLAlchemy hands SQLite the path as written (made absolute), and so do alembic and the
            # user's own engines: expanding a ~ here alone would make this store open another file.
            expanded = os.path.expanduser(database)
            hint = f" (a URL's ~ is not expanded: write the full path, {expanded})" if expanded != database else ""
            raise ConfigurationError(f"the directory of the SQLite database {path} {problem}: {directory}{hint}")
    except OSError as error:  # a name too long, say
        raise ConfigurationError(f"the SQLite database {path} cannot be used: {error.strerror or error}") from None


def check_engine(engine: Engine) -> None:
    """Refuses an engine of the application's that the usage store cannot work through.

    Raises:
        ConfigurationError: Another database than SQLite or PostgreSQL, an asyncio driver, or a
            ``schema_translate_map`` that moves tables of no schema (ours) to another schema: the store's
            bulk writes (``COPY``, the rollups' upserts) and its migrations name the tables as they are, in
            the schema the connection's ``search_path`` gives, so they would not go where the map sends
            the rest (a migration failed half-way; with tables in both schemas, every row was refused).
    """
    if engine.dialect.name not in SUPPORTED_BACKENDS:
        raise ConfigurationError(
            f"the usage store supports SQLite and PostgreSQL databases, not {engine.dialect.name!r}"
        )
    if engine.dialect.is_async:
        raise ConfigurationError(
            "the engine has an asyncio driver; the usage store needs a synchronous one (create_engine)"
        )
    schema = (engine.get_execution_options().get("schema_translate_map") or {}).get(None)
    if schema is not None:
        where = (
            f"an engine whose search_path is that schema, such as create_engine(url, connect_args="
            f"{{'options': '-csearch_path={schema}'}})"
            if engine.dialect.name == "postgresql"
            else "an engine of that database's own file"
        )
        raise ConfigurationError(
            f"the engine's schema_translate_map puts the usage tables in {schema!r}, which the usage store's bulk "
            f"writes and migrations do not follow; give the store {where}, without the map"
        )


def check_one_database_per_engine(engine: Engine, *, in_memory: bool) -> None:
    """Refuses an engine of the application's whose connections each open a database of their own, in memory.

    SQLAlchemy gives ``sqlite://`` a pool of one connection per thread, and every connection to SQLite's
    ``:memory:`` is a new, empty database: the store made its tables in the opening thread's, and the
    recorder, writing from a thread of its own, found none ("no such table"), so every row waited in the
    spool (with ``NullPool``, opening failed: the tables it had just made were gone). One connection for
    every thread (``StaticPool``) works; so does a ``file:`` URI that shares one database between
    connections, and a ``creator=`` that opens a file (``in_memory``: :func:`sqlite_engine_in_memory`, asked
    of the database, not of the URL).

    Raises:
        ConfigurationError: The engine's database is in memory and its pool is not a ``StaticPool``.
    """
    if not in_memory or isinstance(engine.pool, StaticPool) or (engine.url.database or "").startswith("file:"):
        return  # one connection for all threads, or a URI naming a database in memory its connections share
    raise ConfigurationError(
        f"the engine's SQLite database is in memory, and each connection its {type(engine.pool).__name__} opens "
        "is a new, empty one: the usage store writes from a thread of its own; make the engine "
        "with poolclass=StaticPool and connect_args={'check_same_thread': False} (one connection for all "
        "threads), or give the store the URL sqlite:// instead of an engine"
    )


def sqlite_engine_in_memory(engine: Engine) -> bool:
    """Whether ``engine`` opens a SQLite database in memory: its URL says so, and so does the database.

    Asked of the database when the URL names none (``sqlite://``): a ``creator=`` may open a file.
    """
    if engine.dialect.name != "sqlite" or not _sqlite_in_memory(engine.url):
        return False
    with engine.connect() as connection:
        databases = connection.exec_driver_sql("PRAGMA database_list").all()
    return not any(name == "main" and file for _number, name, file in databases)


def make_engine(url: str | URL, *, pooled: bool = True) -> Engine:
    """An engine for the usage store, configured as the store needs it.

    SQLite connections get WAL mode (readers never block the writer), a short
    busy timeout (a locked database fails fast and the recorder spools;
    the URL's own ``timeout=`` wins),
    ``synchronous=NORMAL`` (safe with WAL; a power cut can lose only the last
    commits, and the spool covers that) and foreign keys. An in-memory SQLite
    database is one connection shared by all threads, one at a time, since
    every new connection would be a new, empty database. A pooled connection to a SQLite
    file that was deleted or replaced since it connected is not used again.
    PostgreSQL gets a connect
    timeout, TCP keepalives and a user timeout (a vanished server is noticed
    in about 25 s), and a liveness check when a pooled connection is reused;
    through psycopg 3, DateStyle ISO, the only one it reads timestamps in, and
    the URL's ``prepare_threshold`` (``none``: never prepare a statement) as
    psycopg takes it; once the server has lost a prepared statement (a pooler
    in transaction mode), the pool's connections are replaced by ones that
    prepare none.

    Args:
        url: A SQLAlchemy URL of a SQLite or PostgreSQL database.
        pooled: False for one-off use (the CLI, a migration): no idle connections kept.

    Raises:
        ConfigurationError: The URL can never work (see :func:`check_database_url`).
    """
    url = check_database_url(url)
    backend = url.get_backend_name()
    options: dict[str, Any] = {}
    if not pooled:
        options["poolclass"] = NullPool
    if backend == "sqlite" and _sqlite_in_memory(url):
        options.update(poolclass=_OneThreadAtATimePool, connect_args={"check_same_thread": False})
    if backend == "postgresql":
        options["pool_pre_ping"] = True
        if url.get_driver_name() in ("psycopg", "psycopg2"):
            options["connect_args"] = {key: value for key, value in _LIBPQ_DEFAULTS.items() if key not in url.query}
        threshold = _prepare_threshold(url) if url.get_driver_name() == "psycopg" else _NO_THRESHOLD
        if threshold is not _NO_THRESHOLD:
            options["connect_args"]["prepare_threshold"] = threshold  # instead of the URL's text
    engine = create_engine(url, **options)
    new_pool_after_fork(engine)
    if backend == "postgresql" and url.get_driver_name() == "psycopg":
        preparing = _Preparing()
        event.listen(engine, "connect", functools.partial(_configure_psycopg_connection, preparing))
        event.listen(engine, "handle_error", functools.partial(_lost_prepared_statement, preparing))
    if backend == "sqlite":
        event.listen(engine, "connect", functools.partial(_configure_sqlite_connection, "timeout" in url.query))
        path = sqlite_opened_file(url)
        if path is not None:
            event.listen(engine, "connect", functools.partial(_remember_sqlite_file, path))
            event.listen(engine, "checkout", functools.partial(_check_sqlite_file, path))
    return engine


class _Turn:
    """Whose turn it is to use a connection: one thread's at a time, in the order they asked.

    A thread that asks again while it holds it has it again. First come, first served: threads that read in a
    loop must not keep a writer waiting past its timeout.
    """

    def __init__(self) -> None:
        self.forked()
        _turns.add(self)

    def forked(self) -> None:
        """To start, and in a forked child: the threads that held or waited for the turn are the parent's."""
        self._lock = threading.Lock()
        self._holder: int | None = None
        self._depth = 0
        self._waiting: deque[tuple[int, threading.Event]] = deque()

    def take(self, timeout: float) -> bool:
        me = threading.get_ident()
        with self._lock:
            if self._holder in (None, me):
                self._holder = me
                self._depth += 1
                return True
            waiter = (me, threading.Event())
            self._waiting.append(waiter)
        if waiter[1].wait(timeout):
            return True  # handed over by give()
        with self._lock:
            if waiter[1].is_set():
                return True  # handed over as the wait ended
            self._waiting.remove(waiter)
            return False

    def give(self) -> None:
        with self._lock:
            self._depth = max(0, self._depth - 1)
            if self._depth:
                return
            self._holder = None
            if self._waiting:
                self._holder, handed = self._waiting.popleft()
                self._depth = 1
                handed.set()


_turns: weakref.WeakSet[_Turn] = weakref.WeakSet()


def _turns_forked() -> None:
    for turn in list(_turns):
        turn.forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_turns_forked)


class _OneThreadAtATimePool(StaticPool):
    """The one connection of a SQLite database in memory, lent to one thread at a time.

    A ``StaticPool`` lends its connection to every thread at once: a report's ``BEGIN``, or the rollback of a
    read's return, fell inside the recorder's write transaction on the same connection, which failed ("cannot
    start a transaction within a transaction", its batch spooled) or was undone after being counted written.
    Another thread waits for its turn as a SQLite write waits for a lock: :data:`SQLITE_BUSY_TIMEOUT_MS`, then
    fails (``sqlalchemy.exc.TimeoutError``; a batch goes to the spool).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn = _Turn()

    def _do_get(self) -> ConnectionPoolEntry:
        if not self._turn.take(SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise PoolTimeoutError(
                f"the SQLite database in memory was in use by another thread for {SQLITE_BUSY_TIMEOUT_MS} ms"
            )
        try:
            return super()._do_get()
        except BaseException:
            self._turn.give()
            raise

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        self._turn.give()


_forked_pools: weakref.WeakSet[Engine] = weakref.WeakSet()


def new_pool_after_fork(engine: Engine, *, in_memory: bool | None = None) -> None:
    """In a forked child, ``engine`` opens connections of its own (see below): ours, and one a user passed us.

    Not on a SQLite database in memory: it is the process's, and the child works on its own copy. Whether
    it is one is read from the URL, unless ``in_memory`` says (:func:`sqlite_engine_in_memory`, for an engine
    of the application's, whose ``creator=`` may open a file behind ``sqlite://``).
    """
    if in_memory is None:
        in_memory = engine.dialect.name == "sqlite" and _sqlite_in_memory(engine.url)
    if not in_memory:
        _forked_pools.add(engine)


def _forget_connections_in_child() -> None:
    """In a forked child, the engines of our stores open connections of their own (SQLAlchemy's recipe).

    A parent's SQLite connection used in the child holds none of the parent's file locks (SQLite says never
    to), and a PostgreSQL connection's socket is shared with the parent: the child's pool starts empty, and
    leaves the parent's connections open for the parent.
    """
    for engine in list(_forked_pools):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections_in_child)


SQLITE_FORK_WAIT_S: Final = 30.0
"""How long a fork of the process waits for a write transaction on a SQLite database to end."""


class _SQLiteWrites:
    """The write transactions on SQLite databases under way in this process's threads, which a fork waits for.

    The child of a fork is a copy of the parent's memory, SQLite's record of the locks its connections hold
    included. Forked while a thread of the parent held a database's write lock, the child believes that lock
    held for good: its every write to the database fails with "database is locked" (and its rows are spooled).
    A fork waits here (up to :data:`SQLITE_FORK_WAIT_S`) until no such transaction is under way, and none
    begins until it is done. One lock and a counter per transaction: the recorder's batches, retention's
    batches and migrations; reads go on.
    """

    def __init__(self) -> None:
        self.forked()

    def forked(self) -> None:
        """To start, and after a fork in the child: no transaction of the parent's threads is under way there
        (none was, unless the fork gave up waiting), and one of them may have held the condition's lock."""
        self.changed = threading.Condition()
        self.under_way = 0
        self.forking = False

    def before_fork(self) -> None:
        with self.changed:
            self.forking = True
            if not self.changed.wait_for(lambda: not self.under_way, SQLITE_FORK_WAIT_S):
                logger.warning(
                    "a fork waited %g s for a write transaction on a SQLite database of this process, and goes "
                    "on: the child cannot write to that database, and keeps its usage rows in its spool",
                    SQLITE_FORK_WAIT_S,
                )

    def after_fork_in_parent(self) -> None:
        with self.changed:
            self.forking = False
            self.changed.notify_all()

    @contextmanager
    def waited_for(self, bind: Engine | Connection) -> Iterator[None]:
        if bind.dialect.name != "sqlite":
            yield
            return
        with self.changed:
            self.changed.wait_for(lambda: not self.forking)
            self.under_way += 1
        try:
            yield
        finally:
            with self.changed:
                self.under_way -= 1
                if not self.under_way:
                    self.changed.notify_all()


_sqlite_writes = _SQLiteWrites()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_sqlite_writes.before_fork,
        after_in_parent=_sqlite_writes.after_fork_in_parent,
        after_in_child=_sqlite_writes.forked,
    )


def fork_waits_for(bind: Engine | Connection) -> AbstractContextManager[None]:
    """A write transaction on the database of ``bind``, which a fork of the process waits for (SQLite only).

    Entered before the transaction begins and left after its commit: around ``engine.begin()``.
    """
    return _sqlite_writes.waited_for(bind)


def autocommit(connection: Connection) -> bool:
    """Whether the driver commits every statement (an engine made with ``isolation_level="AUTOCOMMIT"``)."""
    driver = connection.connection.driver_connection
    if connection.dialect.name == "sqlite":
        return getattr(driver, "isolation_level", "") is None
    return getattr(driver, "autocommit", False) is True


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes the usage tables, committed at the end: READ COMMITTED on PostgreSQL.

    The writes are made for READ COMMITTED, the server's default and that of our engines: a rollup row's
    upsert adds to what the writers before it committed, whatever the transaction saw first. An engine of an
    application made with ``isolation_level="REPEATABLE READ"`` or ``"SERIALIZABLE"`` (or a server whose
    ``default_transaction_isolation`` is) had another writer's update of the day's rollup row fail the write
    with "could not serialize access due to concurrent update", said as the database unavailable, and the
    batch spooled. Its connection is given READ COMMITTED for the transaction (the pool puts its own level
    back when it is returned). So is one of an engine in ``AUTOCOMMIT``, where each statement of a write
    committed on its own: a batch whose rows went in and whose rollup upsert then failed (a lock timeout) was
    spooled, and its replay, finding the rows stored, never added them to the rollup. On SQLite such a
    connection is given the driver's default for the write, a transaction. A fork waits for it
    (:func:`fork_waits_for`).
    """
    with fork_waits_for(engine), engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="READ COMMITTED")
        elif autocommit(connection):
            # SQLite's driver in AUTOCOMMIT: the same, a write half stored for good; a transaction, as SQLite's
            # driver begins one by default (its SERIALIZABLE), for this write.
            connection.execution_options(isolation_level="SERIALIZABLE")
        with connection.begin():
            yield connection


def _sqlite_in_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or (database.startswith("file:") and "mode=memory" in database)


def sqlite_file_path(url: URL) -> str | None:
    """The file a SQLite ``url`` opens, as SQLite finds it; ``None`` for a database in memory.

    A ``file:`` URI (``uri=true``) is read as SQLite reads one: ``file:PATH`` or ``file://localhost/PATH``
    (an empty authority too), its ``%XX`` escapes decoded.
    """
    database = url.database or ""
    if _sqlite_in_memory(url):
        return None
    if not (asbool(url.query.get("uri", False)) and database.startswith("file:")):
        return database
    if url.query.get("mode") == "memory":
        return None
    name = database.removeprefix("file:")
    if name.startswith("//"):
        authority, slash, rest = name[2:].partition("/")
        name = slash + rest if authority in ("", "localhost") else name
    name = unquote(name)
    return None if name == ":memory:" else name


def sqlite_opened_file(url: URL) -> Path | None:
    """The file the connections of an engine made now for ``url`` open; ``None`` for a database in memory.

    SQLAlchemy makes a relative path absolute when the engine is made (a ``file:`` URI is left to SQLite,
    which reads it when each connection opens): a process that changes its working directory afterwards
    still writes to the file it opened first, and so must every check of that file.
    """
    database = sqlite_file_path(url)
    if database is None:
        return None
    if asbool(url.query.get("uri", False)) and (url.database or "").startswith("file:"):
        return Path(database)
    return Path(os.path.abspath(database))


def sqlite_file_missing(url: URL) -> bool:
    """Whether ``url`` names a SQLite file that does not exist (connecting would create it, empty)."""
    if url.get_backend_name() != "sqlite":
        return False
    database = sqlite_file_path(url)  # a file: URI's path too
    return database is not None and not Path(database).exists()


class _Preparing:
    """Whether the connections of one psycopg engine may prepare statements: not once the server lost one."""

    lost = False


# invalid_sql_statement_name ('prepared statement "_pg3_0" does not exist') and duplicate_prepared_statement
# ('... already exists'): what psycopg's prepared statements meet behind a pooler that hands each transaction
# to any server connection (PgBouncer's transaction pooling, before 1.21 or without max_prepared_statements).
_LOST_PREPARED_STATEMENT: Final = ("26000", "42P05")


def _lost_prepared_statement(preparing: _Preparing, context: ExceptionContext) -> None:
    # psycopg prepares a query on its 5th run on a connection, and runs it by name after that: behind such a
    # pooler every write and report then failed, again after each reconnection, and the recorder's rows waited
    # in the spool for as long as the process ran. The failed statement's error goes on (its batch is spooled);
    # the pool's connections are dropped, and the new ones prepare nothing, as psycopg advises for PgBouncer.
    error = context.original_exception
    if preparing.lost or getattr(error, "sqlstate", None) not in _LOST_PREPARED_STATEMENT:
        return
    preparing.lost = True
    context.is_disconnect = True  # invalidates the pool: its connections hold the lost statements' names
    logger.warning(
        "the PostgreSQL server of %s lost a statement prepared on the connection (a pooler in transaction mode, "
        "such as PgBouncer?); its connections no longer prepare statements",
        masked_url(context.engine.url) if context.engine is not None else "the usage store",
    )


def _configure_psycopg_connection(
    preparing: _Preparing, dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry
) -> None:
    # psycopg 3 reads a timestamp only in DateStyle ISO (psycopg2 sets ISO itself when it connects): on a
    # server or database with another (SQL, DMY is common in Europe), every read of started_at failed with
    # NotImplementedError "can't parse timestamptz with DateStyle 'SQL, DMY'". Only the output style is set;
    # the order (DMY) the server reads ambiguous input in stays, and our times go in as ISO, which it always reads.
    raw: Any = dbapi_connection
    if preparing.lost:
        raw.prepare_threshold = None
    if str(raw.info.parameter_status("DateStyle") or "ISO").startswith("ISO"):
        return
    with raw.cursor() as cursor:
        cursor.execute("SET DateStyle TO ISO")
    raw.commit()  # kept for the session, whatever the transactions after it do


def _configure_sqlite_connection(
    own_timeout: bool, dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry
) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # The timeout first: switching a new file to WAL briefly needs the lock another connection may hold. A
        # URL's own timeout= (sqlite3's, in seconds) was set by the driver as it connected, and wins.
        if not own_timeout:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_file_identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _remember_sqlite_file(path: Path, _dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    record.info["sqlite_file"] = _sqlite_file_identity(path)


def _check_sqlite_file(
    path: Path, _dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    # A connection keeps the file it opened: once that file is deleted (or another is moved to its path), its
    # writes succeed into an inode no one will ever read, and a recorder counts them written. One stat per
    # checkout (a few microseconds) sees it; the pool then drops every connection it holds and opens the file
    # at the path, made again if it is gone (the store's reopen() gives it the usage tables).
    current = _sqlite_file_identity(path)
    if current is None or current != record.info.get("sqlite_file"):
        raise InvalidatePoolError(f"the SQLite database {path} was deleted or replaced since it was opened")
