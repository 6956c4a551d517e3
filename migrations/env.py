"""Alembic environment of the autogen-reliability usage store.

Runs two ways:

- From Python (:func:`autogen_reliability.storage._migrate.upgrade`, the
  ``autogen-reliability db`` command and the store itself): the caller passes an
  open connection as ``config.attributes["connection"]`` and owns its
  transaction, lock and commit.
- From the alembic command line, for developers::

      alembic -c migrations/alembic.ini -x url=sqlite:///usage.db upgrade head
      alembic -c migrations/alembic.ini -x url=... revision --autogenerate -m "what changed"

  The URL is ``-x url=...``, else ``sqlalchemy.url`` of the ini file, else the
  library's default (``AUTOGEN_RELIABILITY_DB_URL`` or ``sqlite:///autogen_reliability.db``).

Either way our revision lives in ``ar_alembic_version`` and only ``ar_`` tables
are compared by autogenerate, so the ledger can share a database (and alembic)
with an application.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, make_url, pool

from autogen_reliability._config import default_db_url
from autogen_reliability.storage._migrate import migration_transaction
from autogen_reliability.storage._models import VERSION_TABLE, Base, include_name

config = context.config


def _url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or (default_db_url())
    )


def run_migrations_offline() -> None:
    """``--sql`` mode: writes the SQL for the URL's dialect instead of running it."""
    url = make_url(_url())
    context.configure(
        url=url,
        literal_binds=True,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        # SQLite cannot ALTER most things: batch mode re-creates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrates through the caller's connection, or through a new one to the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as new_connection, migration_transaction(new_connection):
            _run(new_connection)
    finally:
        engine.dispose()


# Logging is the application's business when we run inside it; the CLI gets the ini file's.
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
