"""The ``autogen-reliability`` command.

Exit status: 0 on success; 1 when the database cannot be used (unreachable,
refused, or migrated by a newer release); 2 for a bad command line or a
database URL that can never work (the check ``configure()`` makes: another
database, a driver not installed, a SQLite file in a directory that does not
exist, ...). Errors are one line on stderr. ``--version`` prints the version.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line on stderr and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autogen-reliability",
        description="Reliability, validation and cost accounting for AutoGen agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="run a two-agent team against the built-in local OpenAI-compatible server",
        description="Run a two-agent AutoGen team against a local OpenAI-compatible server "
        "(no API key, no network) and print each agent's token usage.",
    )
    demo.add_argument("--stream", action="store_true", help="let the agents stream their replies")
    db = commands.add_parser(
        "db",
        help="manage the usage database's schema",
        description="Manage the schema of the usage database (alembic migrations shipped with the library).",
    )
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND", parser_class=_Parser)
    for name, text in (
        ("upgrade", "bring the usage tables to this version's schema (creating them if missing)"),
        ("current", "print the schema revision of the usage tables"),
    ):
        command = db_commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        command.add_argument(
            "--url",
            help="SQLAlchemy URL of the database (default: $AUTOGEN_RELIABILITY_DB_URL, else "
            "sqlite:///autogen_reliability.db); prefer the variable for a URL with a password, "
            "since other users can see command lines",
        )
    return parser


def _error(message: str) -> None:
    print(f"autogen-reliability: error: {message}", file=sys.stderr)


def _db(command: str, url: str | None) -> int:
    # SQLAlchemy and alembic load on demand: the other commands do not need them.
    from alembic.util import CommandError  # noqa: PLC0415
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from ._config import ENV_DB_URL, default_db_url  # noqa: PLC0415
    from ._errors import ConfigurationError  # noqa: PLC0415
    from .storage import _migrate as migrate  # noqa: PLC0415
    from .storage._engine import make_engine, sqlite_file_missing  # noqa: PLC0415

    try:
        engine = make_engine(url or default_db_url(), pooled=False)
    except ConfigurationError as error:
        _error(f"bad database URL{'' if url else f' (from {ENV_DB_URL})'}: {error}")
        return 2
    masked = engine.url.render_as_string(hide_password=True)
    head = migrate.head_revision()
    try:
        if command == "current" and sqlite_file_missing(engine.url):
            # Looking must not leave an empty database file behind.
            print(f"{masked}: none (no such file; autogen-reliability db upgrade creates it)")
            return 0
        current = migrate.current_revision(engine)
        if current is not None and not migrate.is_known_revision(current):
            _error(
                f"{masked} is at schema revision {current}, which this autogen-reliability does not know "
                f"(it knows up to {head}): a newer release migrated it; upgrade autogen-reliability"
            )
            return 1
        if command == "upgrade":
            if current == head:
                print(f"{masked}: {current} (head), nothing to upgrade")
            else:
                migrate.upgrade(engine)
                print(f"{masked}: upgraded from {current or 'none'} to {migrate.current_revision(engine)} (head)")
        elif current == head:
            print(f"{masked}: {current} (head)")
        elif current is None:
            print(f"{masked}: none (no usage tables; autogen-reliability db upgrade creates them)")
        else:
            print(f"{masked}: {current} (outdated; head is {head}: run autogen-reliability db upgrade)")
    except (SQLAlchemyError, CommandError) as error:
        _error(f"cannot use the database {masked}: {_one_line(error, engine.url.password)}")
        return 1
    finally:
        engine.dispose()
    return 0


def _one_line(error: Exception, password: str | None) -> str:
    """The driver's own message, first line only (SQLAlchemy appends the SQL and a link), never the password."""
    text = str(getattr(error, "orig", None) or error).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    return text.replace(password, "***") if password else text


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import main as demo  # noqa: PLC0415  # the demo pulls in the test server: load it on demand

        # The demo prints its retries itself; the library's warnings would say them twice.
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
        demo(sys.stdout, stream=args.stream)
    elif args.command == "db":
        return _db(args.db_command, args.url)
    return 0
