"""Fixtures for tests that need a real database: a SQLite file, and a fresh PostgreSQL database per test.

PostgreSQL comes from ``AUTOGEN_RELIABILITY_TEST_PG_URL``, the URL of a role that
may create databases (``scripts/ci-postgres.sh`` starts such a server and prints
its URL; ``.ci/run`` exports it). Without it, PostgreSQL tests are skipped.

Use them from a test module with ``from .storage_fixtures import *`` (or list
this module in ``pytest_plugins`` of ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.pool import NullPool

from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.accounting._events import UsageEvent
from autogen_reliability.storage import UsageStore

__all__ = [
    "NO_POSTGRESQL",
    "PG_URL_ENV",
    "drop_pg_database",
    "ledger",
    "make_pg_database",
    "pg_admin_url",
    "store_url",
]

Ledger = tuple[UsageStore, UsageRecorder]

PG_URL_ENV = "AUTOGEN_RELIABILITY_TEST_PG_URL"
NO_POSTGRESQL = f"no PostgreSQL server: set {PG_URL_ENV} (.ci/run starts one)"

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The URL of the test PostgreSQL server (from ``AUTOGEN_RELIABILITY_TEST_PG_URL``); skips the test without one."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(NO_POSTGRESQL)
    return url


@pytest.fixture
def make_pg_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory of new, empty PostgreSQL databases (returns each one's URL); they are dropped after the test.

    Each test sees only its own rows and schema, and tests may run in parallel.
    """
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    made: list[str] = []

    def make() -> str:
        name = f"ar_test_{uuid.uuid4().hex[:16]}"
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)

    yield make
    try:
        for name in made:
            drop_pg_database(admin, name)
    finally:
        admin.dispose()


def drop_pg_database(admin: Engine, name: str) -> None:
    """Drops database ``name`` through ``admin`` (an AUTOCOMMIT engine), its open connections ended."""
    # FORCE: a connection a failed test left open must not keep the database alive. But FORCE refuses to
    # end an autovacuum worker that a role without pg_signal_backend cannot signal: it is done in a moment.
    deadline = time.monotonic() + 30
    while True:
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except ProgrammingError as error:
            if "pg_signal_backend" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of an empty database, once per backend: a new SQLite file, and a new PostgreSQL database.

    The PostgreSQL run is skipped without ``AUTOGEN_RELIABILITY_TEST_PG_URL``.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('usage') / 'usage.db'}"
    make: Callable[[], str] = request.getfixturevalue("make_pg_database")
    return make()


@contextmanager
def open_ledger(url: str, spool_dir: Path) -> Iterator[Ledger]:
    """A real usage store at ``url`` and a recorder writing to it, both closed at the end."""
    store = UsageStore(url)
    recorder = UsageRecorder(store, spool_dir=spool_dir, close_sink=False)
    try:
        yield store, recorder
    finally:
        recorder.close()
        store.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A real SQLite ledger in the test's directory and a recorder writing to it."""
    with open_ledger(f"sqlite:///{tmp_path / 'usage.db'}", tmp_path / "spool") as opened:
        yield opened


def ledger_rows(ledger: Ledger) -> list[UsageEvent]:
    """Every row recorded so far, once the recorder has written them."""
    store, recorder = ledger
    assert recorder.flush(10)
    return store.events()
