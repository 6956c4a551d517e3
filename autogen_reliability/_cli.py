"""The ``autogen-reliability`` command.

``demo`` runs a team against a local fake provider (``--live``: the real OpenAI API, with the key in
``OPENAI_API_KEY``, the one variable the command reads for it); ``db upgrade`` / ``db current``
manage the ledger's schema; ``report``, ``sessions``, ``export`` and ``cleanup``
read (and prune) the usage ledger, by default the configured one
(``$AUTOGEN_RELIABILITY_DB_URL``, else ``sqlite:///autogen_reliability.db``); they
never create or migrate it.

Exit status: 0 on success; 1 when the database cannot be used (unreachable,
refused, a SQLite file that does not exist, usage tables at an older schema --
the message names ``autogen-reliability db upgrade`` -- or migrated by a newer
release) or an output file (or standard output) cannot be written; 2 for a
bad command line (an unknown option, format or ``--by`` column, a tag key with a double quote
(``--tag``, ``--by tag:KEY``: the ledger cannot report on it), a time that does not parse,
``--until`` not after ``--since``, a count below 1, an output file in a
directory that does not exist or that is the SQLite ledger itself, ``demo
--live`` without ``OPENAI_API_KEY``) or a database URL that can never work (the
check ``configure()`` makes: another database, a driver not installed, a SQLite
file in a directory that does not exist, ...); 130 when interrupted (Ctrl-C), and but for ``demo``, 143 when
terminated (SIGTERM), stopping as cleanly (no partial ``--out`` file, whole cleanup batches, a migration rolled
back).
Errors are one line on stderr, with no traceback and no password. ``--version``
prints the version.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TextIO, TypeVar, cast

from . import __version__
from ._errors import ConfigurationError
from ._redaction import quoted, redact
from .reports import _period as period  # the reading of times the usage routes share

if TYPE_CHECKING:
    from sqlalchemy import URL, Engine

    from .storage import RetentionResult, SessionSummary, UsageStore

__all__ = ["main", "parse_duration", "parse_time"]

FORMATS: Final = ("table", "json", "csv", "md", "html")
"""The formats of ``report --format``."""

_T = TypeVar("_T")
_FILE_WIDTH: Final = 200  # a table written to a file or a pipe has no terminal to fit: wide enough not to fold it
_MIN_WIDTH: Final = 40  # a COLUMNS below it is taken for a mistake: the tables would be empty or nothing
# A count of more digits is past anything a database counts (2**63 - 1 has 19), and is taken as 10**19
# rather than read by int() (which refuses past 4,300 digits).
_COUNT_DIGITS: Final = 19


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line on stderr and exits with status 2.

    argparse quotes the arguments it could not use ("unrecognized arguments: --db postgresql://app:pw@db/usage",
    after ``db upgrade``, which takes ``--url``): the message is redacted, so that a password is not printed.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {redact(message)} (see --help)\n")


class _Failure(Exception):
    """A command that cannot go on: the one line to print and the exit status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def parse_duration(text: str) -> timedelta:
    """A duration of the command line: a whole number of hours, days or weeks (``24h``, ``90d``, ``2w``), above zero.

    Raises:
        argparse.ArgumentTypeError: Anything else, or a duration that reaches before the year 1 from now,
            with the reason (argparse prints it as the error).
    """
    return _reachable(_argument(period.parse_duration, text))


def parse_time(text: str) -> datetime | timedelta:
    """A point in time of the command line (``--since``, ``--until``).

    ``2025-05-01`` is that day's midnight UTC; ``2025-05-01T09:30:00+02:00`` (or
    ``...Z``) is that instant, which must carry its UTC offset; ``7d``, ``24h``,
    ``2w`` are that long before now, returned as the ``timedelta`` so that every
    time of one command is resolved against one reading of the clock.

    Raises:
        argparse.ArgumentTypeError: Anything else, a date and time without an offset, or a time ago
            that reaches before the year 1.
    """
    return _reachable(_argument(period.parse_time, text))


def _argument(parse: Callable[[str], _T], text: str) -> _T:
    """``parse(text)``, its ConfigurationError as the ArgumentTypeError argparse prints (a ValueError it would not)."""
    try:
        return parse(text)
    except ConfigurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _reachable(value: _T) -> _T:
    """``value``, unless it is a time ago that reaches before the year 1 from now: refused as argparse refuses.

    The command resolves it later against its own reading of the clock, which can only be later, so a
    time ago that passes here resolves there too (``_resolve`` says it, should the clock go back).
    """
    if isinstance(value, timedelta):
        try:
            period.resolve_time(value, datetime.now(UTC))
        except ConfigurationError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _resolve(
    command: argparse.ArgumentParser, option: str, value: datetime | timedelta | None, now: datetime
) -> datetime | None:
    try:
        return period.resolve_time(value, now)
    except ConfigurationError as error:
        command.error(f"argument {option}: {error}")  # as the command's parser says its other argument errors


def _positive(text: str) -> int:
    """A count of ``--top``, ``--limit``, ``--batch-size``: ASCII digits only, as a duration's are.

    Not int(), which takes any script's digits (Arabic-Indic, full-width), ``1_000``, ``+5`` and spaces around.
    A leading ``-`` is read only to say that the count must be 1 or more.
    """
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a whole number")
    if text.startswith("-") or not digits.strip("0"):
        shown = text if len(text) <= _COUNT_DIGITS else quoted(text)
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {shown}")
    if len(digits.lstrip("0")) > _COUNT_DIGITS:
        return 10**_COUNT_DIGITS  # past any count of rows: the store reads it as all of them
    return int(digits)


def _group_columns(text: str) -> tuple[str, ...]:
    from .reports._model import GROUP_COLUMNS  # noqa: PLC0415  # plain data, but only this command needs it

    columns = tuple(_group_column(column) for column in text.split(","))
    for column in columns:
        if column.startswith("tag:"):
            if column == "tag:":
                raise argparse.ArgumentTypeError(f"{column!r} names no tag; write tag:KEY, e.g. tag:customer")
            _tag_key(column[len("tag:") :])
            continue
        if column not in GROUP_COLUMNS:
            raise argparse.ArgumentTypeError(
                f"unknown column {column!r}; choose from {', '.join(GROUP_COLUMNS)}, tag:KEY (comma-separated)"
            )
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(repeated)} listed twice")
    return columns


def _group_column(text: str) -> str:
    """A column of ``--by`` without the spaces around it, and those around a tag's key (as ``--tag`` reads it)."""
    column = text.strip()
    if column.startswith("tag:"):
        return "tag:" + column[len("tag:") :].strip()
    return column


def _name(text: str) -> str:
    """A project, session or agent to filter on: never empty or blank, as the library refuses such names.

    Nor one the ledger cannot hold (a byte that is not UTF-8 is read as a lone surrogate): refused here, before
    any ledger is opened, with the store's reason.
    """
    from .storage._report import check_filter  # noqa: PLC0415  # SQLAlchemy loads on demand

    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty or blank: no call is attributed to such a name")
    return _argument(lambda name: check_filter("the name", name) or name, text)


def _tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--tag``; a tag the ledger cannot filter on is refused here, before any ledger is opened."""
    from .storage._report import check_tag_value  # noqa: PLC0415  # SQLAlchemy loads on demand

    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    key = _tag_key(key.strip())
    return key, _argument(lambda value: check_tag_value(key, value, ""), value)


def _tag_key(key: str) -> str:
    """A tag key of ``--tag`` or ``--by tag:KEY``, unless the ledger cannot take it (a ``"``): the store's reason."""
    from .storage._report import check_tag_key  # noqa: PLC0415  # SQLAlchemy loads on demand

    return _argument(lambda key: check_tag_key(key, ""), key)


class _Tags(argparse.Action):
    """``--tag KEY=VALUE``, repeated: the tags as a dict; a key given again with another value is refused.

    A call has one value per tag, so two values of one key could never both match; a key given again
    with its one value is the same filter.
    """

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        key, value = cast("tuple[str, str]", values)
        tags: dict[str, str] = dict(getattr(namespace, self.dest) or {})
        if tags.get(key, value) != value:
            twice = f"{quoted(key)} given twice, as {quoted(tags[key])} and {quoted(value)}"
            raise argparse.ArgumentError(self, f"{twice}: a call has one value per key")
        tags[key] = value
        setattr(namespace, self.dest, tags)


def _output_file(text: str) -> Path:
    if not text:  # an unset $VAR: Path("") is the current directory
        raise argparse.ArgumentTypeError("must not be empty; give the path of a file")
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # ~user of no such user
        raise argparse.ArgumentTypeError(f"cannot expand {text.split('/', 1)[0]}: no such user") from None
    try:
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory; give the path of a file")
        if text.endswith(os.sep):  # Path() drops the slash: `new/` was written as a file new, `file/` replaced file
            raise argparse.ArgumentTypeError(
                f"{text} ends with {os.sep}, so names a directory; give the path of a file"
            )
        if not path.parent.is_dir():
            raise argparse.ArgumentTypeError(f"the directory of {text} does not exist: {path.parent}")
    except OSError as error:  # a name too long, say
        raise argparse.ArgumentTypeError(f"{text}: {error.strerror or error}") from None
    return path


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autogen-reliability",
        description="Reliability, validation and cost accounting for AutoGen agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="run a three-agent team through a storm of failures on a built-in local OpenAI-compatible server",
        description="Run a three-agent AutoGen team (triage with a tool and structured output, writer, critic) "
        "against a local OpenAI-compatible server whose model rate-limits, overloads, sends bad tool arguments, "
        "cut-off JSON and hostile markup (no API key, no network); show each attempt with its exact cost, stop a "
        "runaway loop with a cost limit, then print the usage report of the run, the health probe's JSON, and "
        "write the report as HTML next to the ledger.",
    )
    demo.add_argument("--stream", action="store_true", help="let the agents stream their replies")
    demo.add_argument(
        "--live",
        action="store_true",
        help="run the same team against the real OpenAI API (needs OPENAI_API_KEY; real calls, real cost, "
        "no faults injected)",
    )
    demo.add_argument("--model", help=f"the model with --live (default: {_DEMO_MODEL})")
    demo.add_argument(
        "--db",
        metavar="URL",
        help="SQLAlchemy URL of the ledger the demo records to (default: "
        "sqlite:///autogen-reliability-demo/usage.db; the HTML report goes next to a SQLite file)",
    )
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
        # --db too, the ledger commands' name for it: a user copies it from the report command.
        command.add_argument("--url", "--db", dest="url", metavar="URL", help=_URL_HELP)
    _ledger_commands(commands)
    return parser


_DEMO_MODEL: Final = "gpt-4o-mini"  # the demo's own default (``_demo.DEFAULT_MODEL``), without importing it
_URL_HELP: Final = (
    "SQLAlchemy URL of the database (default: $AUTOGEN_RELIABILITY_DB_URL, else "
    "sqlite:///autogen_reliability.db); prefer the variable for a URL with a password, "
    "since other users can see command lines"
)
_TIME_HELP: Final = "a date (2025-05-01, midnight UTC), a date and time with its offset, or a time ago (24h, 7d, 2w)"


def _ledger_commands(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="what the usage cost, where it went, and what to change",
        description="Report the usage of the ledger: totals, waste, a breakdown, cost per day, the costliest "
        "sessions and recommendations, as a table, JSON, CSV, Markdown or one self-contained HTML page.",
    )
    report.add_argument("--project", type=_name, help="only this project (default: every project)")
    _period(report)
    report.add_argument("--session", type=_name, help="only this session")
    report.add_argument("--agent", type=_name, help="only this agent")
    report.add_argument(
        "--tag", action=_Tags, type=_tag, metavar="KEY=VALUE", help="only calls with this tag (repeat: all of them)"
    )
    report.add_argument(
        "--by",
        type=_group_columns,
        metavar="COLUMNS",
        help="the breakdown's columns, comma-separated: project, session, agent, model, provider, day, week, "
        "outcome, error_kind, tag:KEY (default: agent,model)",
    )
    report.add_argument("--top", type=_positive, default=10, metavar="N", help="how many top sessions (default: 10)")
    report.add_argument("--format", choices=FORMATS, default="table", help="default: table (for a terminal)")
    report.add_argument(
        "--out", type=_output_file, metavar="FILE", help="write the report to FILE (default: standard output)"
    )
    _db_option(report)

    sessions = commands.add_parser(
        "sessions",
        help="the most recent sessions of a project, with their cost, calls and errors",
        description="List the most recently active sessions of a project: calls, attempts, errors, tokens, "
        "exact cost, unpriced attempts, first and last activity. Rows without a session are not listed.",
    )
    sessions.add_argument("--project", type=_name, required=True, help="the project")
    _period(sessions)
    sessions.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N sessions (default: 50)")
    sessions.add_argument("--format", choices=("table", "json"), default="table", help="default: table")
    _db_option(sessions)

    export = commands.add_parser(
        "export",
        help="write a project's usage rows to a JSON Lines file",
        description="Write the usage rows of a project to FILE, one JSON object per row in started_at order: "
        "cost as integer nano-USD (cost_nanousd) and an exact decimal string (cost_usd), ids as strings, "
        "times in ISO 8601 UTC. Rows are streamed, never all held in memory.",
    )
    export.add_argument("--project", type=_name, required=True, help="the project")
    _period(export)
    export.add_argument("--out", type=_output_file, required=True, metavar="FILE", help="the file to write (.jsonl)")
    _db_option(export)

    cleanup = commands.add_parser(
        "cleanup",
        help="delete usage rows older than a retention period",
        description="Delete the usage rows (of every project) that started more than DURATION ago, with their "
        "captured content, in batches, each its own transaction; print how many went and their dates.",
    )
    cleanup.add_argument(
        "--older-than", type=parse_duration, required=True, metavar="DURATION", help="e.g. 90d, 12w, 48h"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    cleanup.add_argument(
        "--batch-size", type=_positive, default=10_000, metavar="N", help="rows per transaction (default: 10000)"
    )
    _db_option(cleanup)


def _period(command: argparse.ArgumentParser) -> None:
    command.add_argument("--since", type=parse_time, metavar="TIME", help=f"from TIME on: {_TIME_HELP}")
    command.add_argument("--until", type=parse_time, metavar="TIME", help="before TIME (as --since)")
    # Whether --until is after --since is known only once both are resolved: the command's parser says it.
    command.set_defaults(command_parser=command)


def _db_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--db", metavar="URL", help=_URL_HELP.replace("of the database", "of the usage ledger"))


def _error(message: str) -> None:
    print(f"autogen-reliability: error: {message}", file=sys.stderr)


def _db(command: str, url: str | None) -> int:
    # SQLAlchemy and alembic load on demand: the other commands do not need them.
    from alembic.util import CommandError  # noqa: PLC0415
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from .storage import StoreSchemaError  # noqa: PLC0415
    from .storage import _migrate as migrate  # noqa: PLC0415
    from .storage._engine import error_line, masked_url, sqlite_file_missing, url_secrets  # noqa: PLC0415

    engine = _engine(url)
    masked, secrets = masked_url(engine.url), url_secrets(engine.url)
    head = migrate.head_revision()
    try:
        if command == "current" and sqlite_file_missing(engine.url):
            # Looking must not leave an empty database file behind.
            _print(f"{masked}: none (no such file; autogen-reliability db upgrade creates it)")
            return 0
        current = migrate.current_revision(engine)
        if current is None and command == "current":
            with engine.connect() as connection:
                migrate.refuse_tables_not_ours(connection)  # db upgrade: upgrade_from refuses them
        if current is not None and not migrate.is_known_revision(current):
            _error(
                f"{masked} is at schema revision {current}, which this autogen-reliability does not know "
                f"(it knows up to {head}): a newer release migrated it; upgrade autogen-reliability"
            )
            return 1
        if command == "upgrade":
            _print(_upgraded(engine, masked, current, head))
        elif current == head:
            _print(f"{masked}: {current} (head)")
        elif current is None:
            _print(f"{masked}: none (no usage tables; autogen-reliability db upgrade creates them)")
        else:
            _print(f"{masked}: {current} (outdated; head is {head}: run autogen-reliability db upgrade)")
    except StoreSchemaError as error:  # tables not ours, or that cannot be created: the message says which
        _error(str(error))
        return 1
    except (SQLAlchemyError, CommandError, RuntimeError) as error:  # RuntimeError: a version table not ours
        _error(f"cannot use the database {masked}: {error_line(error, secrets)}")
        return 1
    except KeyboardInterrupt as stop:
        # Ctrl-C: a migration still running is rolled back, as its transaction ends uncommitted.
        return _stopped(stop)
    finally:
        engine.dispose()
    return 0


def _engine(url: str | None) -> Engine:
    """An engine of the database at ``url`` (default: the configured one); a URL that can never work is a 2."""
    from ._config import ENV_DB_URL, default_db_url  # noqa: PLC0415
    from .storage._engine import make_engine  # noqa: PLC0415

    try:
        return make_engine(default_db_url() if url is None else url, pooled=False)
    except ConfigurationError as error:
        raise _Failure(2, f"bad database URL{'' if url is not None else f' (from {ENV_DB_URL})'}: {error}") from None


def _upgraded(engine: Engine, masked: str, current: str | None, head: str) -> str:
    """Upgrades the database at ``current``, unless at ``head``; ``db upgrade``'s line on what it did."""
    from .storage import _migrate as migrate  # noqa: PLC0415

    if current != head:
        # What the database was at once this upgrade had its turn: another one may have run since ``current``.
        current = migrate.upgrade_from(engine)
    if current == head:
        return f"{masked}: {current} (head), nothing to upgrade"
    return f"{masked}: upgraded from {current or 'none'} to {migrate.current_revision(engine)} (head)"


@contextmanager
def _ledger(url: str | None, out: Path | None = None) -> Iterator[UsageStore]:
    """The usage ledger at ``url`` (default: the configured one), as it is: never created, never migrated.

    Turns what can go wrong into a :class:`_Failure`: a URL that can never work
    or an output file ``out`` that is the SQLite ledger itself (2), a missing
    SQLite file, a database that cannot be reached or whose tables do not fit
    (1), and while the store is used, a database error (1) or an argument the
    store refuses (2).
    """
    # SQLAlchemy loads on demand: the other commands do not need it.
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from ._config import ENV_DB_URL  # noqa: PLC0415
    from .storage import StoreSchemaError, UsageStore  # noqa: PLC0415
    from .storage._engine import error_line, masked_url, sqlite_file_missing, url_secrets  # noqa: PLC0415

    engine = _engine(url)
    masked, secrets = masked_url(engine.url), url_secrets(engine.url)
    try:
        if out is not None and _is_the_ledger(out, engine.url):
            # Writing the output would replace the database, every project's rows with it.
            raise _Failure(2, f"argument --out: {out} is the usage ledger itself; write the output elsewhere")
        if sqlite_file_missing(engine.url):
            # The store would say "no usage tables" and name db upgrade; the likelier mistake is the path.
            raise _Failure(
                1,
                f"no usage ledger at {engine.url.database}: the file does not exist "
                f"(give the right one with --db or {ENV_DB_URL})",
            )
        try:
            store = UsageStore(engine, create=False)
        except StoreSchemaError as error:
            raise _Failure(1, str(error)) from None  # one line, password masked, naming the command to run
        yield store
    except SQLAlchemyError as error:
        raise _Failure(1, f"cannot use the database {masked}: {error_line(error, secrets)}") from None
    except ConfigurationError as error:
        raise _Failure(2, str(error)) from None
    finally:
        engine.dispose()


def _is_the_ledger(out: Path, url: URL) -> bool:
    """Whether ``out`` is the SQLite file of ``url``, or its journal, WAL or shared-memory file (through symlinks)."""
    from .storage._engine import sqlite_file_path  # noqa: PLC0415 - SQLAlchemy loads on demand

    if url.get_backend_name() != "sqlite":
        return False  # a server's database
    database = sqlite_file_path(url)  # a file: URI's path too, as SQLite reads it
    if not database:
        return False  # in memory
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            if os.path.samefile(out, database + suffix):
                return True
        except OSError:  # either is not there (or cannot be looked at): not the same file
            continue
    return False


@contextmanager
def _output(path: Path) -> Iterator[TextIO]:
    """``path`` opened to write; a regular file becomes ``path`` only once all of it is written.

    A failed export leaves no half file behind. A symlink stays one: the file
    it names is replaced, and keeps its permissions. A FIFO or a device is
    written in place; so is this process's standard output (``/dev/stdout``, a
    pipe, a terminal, or the file of ``> file`` or ``>> file``, appended to), as
    standard output is written (a reader that went away: :func:`main`).
    """
    try:
        found: os.stat_result | None = path.stat()  # through symlinks
    except FileNotFoundError:
        found = None
    except OSError as error:
        raise _Failure(1, f"cannot write {path}: {error.strerror or error}") from None
    if found is not None and _is_standard_output(found):
        # Replacing the file of `>> file` would lose what it held; and the output is all stdout gets (_done).
        with _standard_output():
            sys.stdout.flush()
            with open(sys.stdout.fileno(), "w", encoding="utf-8", newline="", closefd=False) as stream:
                yield cast("TextIO", _TerminalStream(stream)) if stream.isatty() else stream
        return
    if found is not None and not stat.S_ISREG(found.st_mode):
        # Renaming a file onto a FIFO or a device would replace it (as root, /dev/null itself) and its
        # reader would get nothing: written as a shell's > writes it.
        try:
            with path.open("w", encoding="utf-8", newline="") as stream:
                yield stream
        except OSError as error:
            raise _Failure(1, f"cannot write {path}: {error.strerror or error}") from None
        return
    # The file a symlink names is replaced, not the symlink, and the temporary file goes next to it
    # (a rename stays within one file system).
    target = Path(os.path.realpath(path))
    if found is not None:
        mode = stat.S_IMODE(found.st_mode)  # an export holds captured prompts: a private file stays private
    else:
        mask = os.umask(0)
        os.umask(mask)
        mode = 0o666 & ~mask  # a temporary file is private (0600); a new file gets the mode any new file would
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115  # closed below, then renamed
            "w",
            encoding="utf-8",
            newline="",
            dir=target.parent,
            prefix=f".{target.name}.",
            suffix=".part",
            delete=False,
        )
    except OSError as error:
        raise _Failure(1, f"cannot write {path}: {error.strerror or error}") from None
    try:
        with handle:
            yield cast("TextIO", handle)
        os.chmod(handle.name, mode)
        os.replace(handle.name, target)
    except OSError as error:
        Path(handle.name).unlink(missing_ok=True)
        raise _Failure(1, f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


# A line's end, which a terminal shows as one: kept as it is between the lines shown as their escapes.
_LINE_END: Final = re.compile(r"(\r?\n)")


def _on_terminal(text: str) -> str:
    """``text`` (JSON, CSV, Markdown, HTML) as a terminal is sent it: each line as the report's tables show names.

    Names in JSON and CSV are as stored, and come from users and models: an escape sequence in one (ESC, the
    C1 CSI, ...) would be run by the terminal (a clipboard write, a cleared screen, hidden lines), and a
    bidirectional control would reorder the line. Each is written as its escape (``\\x1b``, ``\\u202e``), as
    :func:`~autogen_reliability.reports._format.plain_text` writes it in the tables; a file or a pipe gets the
    text exact.
    """
    from .reports._format import plain_text  # noqa: PLC0415

    return "".join(part if _LINE_END.fullmatch(part) else plain_text(part) for part in _LINE_END.split(text))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed, or no file
        return False


class _TerminalStream:
    """A terminal's stream that writes text as :func:`_on_terminal` shows it (``--out /dev/stdout`` on a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(_on_terminal(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _is_standard_output(found: os.stat_result) -> bool:
    """Whether ``found`` is the file this process's standard output writes to."""
    if sys.stdout is None:  # none at all: its descriptor may be another file since
        return False
    try:
        own = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):  # stdout closed, or no file
        return False
    return (own.st_dev, own.st_ino) == (found.st_dev, found.st_ino)


def _done(line: str, out: Path) -> None:
    """``line``, which says what was written to ``out``, unless ``out`` is standard output: it would end the output."""
    try:
        if _is_standard_output(out.stat()):
            return
    except OSError:
        pass  # not there any more: said as usual
    _print(line)


def _report(args: argparse.Namespace, since: datetime | None, until: datetime | None) -> int:
    grouping = {} if args.by is None else {"group_by": args.by}  # else the store's default, agent and model
    with _ledger(args.db, args.out) as store:
        report = store.report(
            args.project,
            since=since,
            until=until,
            session=args.session,
            agent=args.agent,
            tags=args.tag,
            top=args.top,
            **grouping,
        )
    if args.format == "table":
        _print_rich(report.to_rich(), args.out)
    else:
        render: dict[str, Callable[[], str]] = {
            "json": report.to_json,
            "csv": report.to_csv,
            "md": report.to_markdown,
            "html": report.to_html,
        }
        _emit(render[args.format](), args.out)
    return 0


def _emit(text: str, out: Path | None) -> None:
    """``text`` to ``out`` (then its path to stdout), or to stdout; ends with a newline either way.

    To a terminal, as :func:`_on_terminal` shows it.
    """
    text = text if text.endswith("\n") else text + "\n"
    if out is None:
        with _standard_output():
            sys.stdout.write(_on_terminal(text) if _is_terminal(sys.stdout) else text)
        return
    with _output(out) as handle:
        handle.write(text)
    _done(f"wrote {out.resolve()}", out)


@contextmanager
def _standard_output() -> Iterator[None]:
    """Writing to stdout, flushed here: a write that fails (a full disk under ``> file``) is one line and status 1.

    A closed pipe is left to :func:`main`, which stops quietly. A character the stream's encoding cannot write
    (a legacy code page: Windows' cp1252 under ``> file``) is one line that says how to get UTF-8, status 1.
    """
    if sys.stdout is None:  # started without one (`>&-`): Python has no stream to write to
        raise _Failure(1, "cannot write to standard output: it is closed")
    try:
        yield
        sys.stdout.flush()  # here, where a failure can be handled, not at exit
    except BrokenPipeError:
        raise
    except UnicodeEncodeError as error:  # what was written before it stays (the stream holds no half character)
        character = ascii(error.object[error.start : error.end])
        raise _Failure(
            1,
            f"standard output's encoding, {getattr(sys.stdout, 'encoding', None) or error.encoding}, "
            f"cannot write {character}; "
            "run with PYTHONIOENCODING=utf-8 (or PYTHONUTF8=1)",
        ) from None
    except OSError as error:
        _stdout_to_nowhere()  # what is still buffered would fail again at exit, with a message of its own
        raise _Failure(1, f"cannot write to standard output: {error.strerror or error}") from None


def _print(line: str) -> None:
    """``line`` to stdout, within :func:`_standard_output`: a stdout that cannot be written is one line and status 1.

    Every line of a command goes so (``wrote FILE``, what cleanup removed, ...): a print outside left a failed
    write to Python's flush at exit ("Exception ignored", status 120) or, unbuffered, to a traceback.

    Such a line says what was done, and is no data: a character the stream's encoding cannot write (a path's
    or a project's, on an ASCII or legacy stdout) is written as its escape (``\\xe9``), not taken for a
    failure of what was done (an export written whole, then status 1).
    """
    with _standard_output():
        try:
            print(line)
        except UnicodeEncodeError:  # raised before any of the line is written
            encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
            print(line.encode(encoding, "backslashreplace").decode(encoding))


def _stdout_to_nowhere() -> None:
    """Points standard output at the null device, so that Python's flush at exit writes nowhere."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _print_rich(renderable: Any, out: Path | None) -> None:
    from rich.console import Console  # noqa: PLC0415  # rich loads only for a table

    if out is None:
        console = Console()
        columns = os.environ.get("COLUMNS")
        # rich takes any COLUMNS of digits (0 printed nothing, 5 an empty table) and otherwise, piped,
        # guesses 80 columns, which would fold the table.
        if not console.is_terminal and not _usable_width(columns):
            console = Console(width=_FILE_WIDTH)
        elif columns is not None and not _usable_width(columns):
            console = Console(width=_terminal_width())
        with _standard_output():
            console.print(renderable)
        return
    with _output(out) as handle:
        Console(file=handle, width=_FILE_WIDTH, color_system=None, force_terminal=False).print(renderable)
    _done(f"wrote {out.resolve()}", out)


def _usable_width(columns: str | None) -> bool:
    """Whether ``COLUMNS`` is a width a table can be printed in."""
    return columns is not None and columns.isascii() and columns.isdigit() and int(columns) >= _MIN_WIDTH


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):  # no terminal after all, or stdout is no file
        return _FILE_WIDTH


def _sessions(args: argparse.Namespace, since: datetime | None, until: datetime | None) -> int:
    with _ledger(args.db) as store:
        found = store.sessions(args.project, since=since, until=until, limit=args.limit)
    if args.format == "json":
        _emit(json.dumps([summary.to_dict() for summary in found], indent=2, ensure_ascii=False), None)
    elif not found:
        _print(f"no sessions of project {args.project!r}{_period_text(since, until)}")
    else:
        _print_rich(_sessions_table(args.project, found, since, until), None)
    return 0


def _sessions_table(
    project: str, found: Sequence[SessionSummary], since: datetime | None, until: datetime | None
) -> Any:
    from rich.text import Text  # noqa: PLC0415

    from .reports._format import cost_cell, plain_text  # noqa: PLC0415
    from .storage._sessions import nanousd_text  # noqa: PLC0415

    # Text(...), never a str: names come from users and models, and rich would read "[red]" in them as markup.
    # And as the report's tables show them: a control character (an escape sequence the terminal would run,
    # a newline) or a bidirectional one (that would reorder the line) as its escape.
    title = Text(f"Sessions of {plain_text(project)}{_period_text(since, until)}, most recent first (times UTC)")
    columns: list[tuple[str, list[str]]] = [
        ("calls", [str(summary.calls) for summary in found]),
        ("attempts", [str(summary.attempts) for summary in found]),
        ("errors", [str(summary.errors) for summary in found]),
        # A session none of whose attempts had a price is unpriced, as in the report's tables, not free.
        (
            "cost (USD)",
            [
                cost_cell(nanousd_text(summary.cost_nanousd), summary.attempts, summary.unpriced_attempts)
                for summary in found
            ],
        ),
        ("unpriced", [str(summary.unpriced_attempts) for summary in found]),
        # The date, its time below.
        ("first seen", [_stamp(summary.first_seen, seconds=False).replace(" ", "\n") for summary in found]),
        ("last seen", [_stamp(summary.last_seen, seconds=False).replace(" ", "\n") for summary in found]),
    ]
    return _SessionsTable(title, [Text(plain_text(summary.session)) for summary in found], columns)


class _SessionsTable:
    """The sessions as a rich renderable, laid out for the width it is printed at, as the report's tables are.

    Names fold and times take two lines; a number is never cut: when even then the table is too wide (a
    split pane, 60 or 40 columns), the least needed columns are left out, and a caption says which.
    """

    _SESSION_MIN_WIDTH: Final = 7
    # Which go first when the table is too wide: the unpriced count last, as a partly priced cost needs it.
    _DROP_ORDER: Final = ("attempts", "errors", "first seen", "calls", "last seen", "unpriced")

    def __init__(self, title: Any, sessions: list[Any], columns: list[tuple[str, list[str]]]) -> None:
        self.title = title
        self.sessions = sessions
        self.columns = columns

    def _fitted(self, max_width: int) -> tuple[list[tuple[str, list[str], int]], list[str]]:
        """The columns that fit ``max_width`` beside a folded session name, with their widths; those left out."""
        from rich.cells import cell_len  # noqa: PLC0415

        kept = [
            (name, cells, max(cell_len(line) for text in [name, *cells] for line in text.split("\n")))
            for name, cells in self.columns
        ]
        dropped: list[str] = []

        def needed() -> int:  # one space of padding and one of divider between two columns
            return self._SESSION_MIN_WIDTH + sum(width + 2 for _, _, width in kept)

        for victim in self._DROP_ORDER:
            if needed() <= max_width:
                break
            kept = [column for column in kept if column[0] != victim]
            dropped.append(victim)
        return kept, dropped

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich import box  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415

        kept, dropped = self._fitted(options.max_width)
        caption = None
        if dropped:
            them = "it" if len(dropped) == 1 else "them"
            caption = f"Not shown, for width: {', '.join(dropped)} (a wider terminal shows {them})."
        table = Table(
            title=self.title,
            caption=caption,
            caption_justify="left",
            box=box.SIMPLE_HEAD,
            padding=(0, 1, 0, 0),
            pad_edge=False,
            show_edge=False,
        )
        # The session is the one column that folds: rich shares a shortage among all the columns that may wrap,
        # and cut a time's column it had left too narrow for its date ("2026-12-0" at 80 columns).
        table.add_column("session", overflow="fold", min_width=self._SESSION_MIN_WIDTH)
        for name, _, width in kept:
            table.add_column(name, justify="left" if name.endswith("seen") else "right", no_wrap=True, min_width=width)
        for index, session in enumerate(self.sessions):
            table.add_row(session, *(cells[index] for _, cells, _ in kept))
        yield table


def _count(number: int, thing: str) -> str:
    return f"{number:,} {thing}{'' if number == 1 else 's'}"


def _period_text(since: datetime | None, until: datetime | None) -> str:
    return (f" since {_bound(since)}" if since else "") + (f" until {_bound(until)}" if until else "")


def _bound(moment: datetime) -> str:
    """A bound of the period given: to the second, and to its fraction, if it has one, as the command uses it."""
    return period.bound_text(moment, seconds=True)


def _stamp(moment: datetime, *, seconds: bool = True) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _export(args: argparse.Namespace, since: datetime | None, until: datetime | None) -> int:
    from .accounting import UsageEvent  # noqa: PLC0415
    from .storage._sessions import nanousd_text  # noqa: PLC0415

    fields = tuple(UsageEvent.__dataclass_fields__)
    # The C encoder, calling back only for ids and times: half the time per row of event.to_json() + json.dumps.
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_value).encode
    rows = 0
    with _ledger(args.db, args.out) as store, _output(args.out) as out:
        for event in store.iter_events(project=args.project, since=since, until=until):
            record: dict[str, Any] = {}
            for name in fields:
                record[name] = value = getattr(event, name)
                if name == "cost_nanousd":  # and right after it, the same money as an exact decimal string
                    record["cost_usd"] = None if value is None else nanousd_text(value)
            out.write(_one_line(encode(record)))
            out.write("\n")
            rows += 1
    _done(
        f"wrote {_count(rows, 'row')} of project {args.project!r}{_period_text(since, until)} to {args.out.resolve()}",
        args.out,
    )
    return 0


# What JSON leaves as it is in a string but str.splitlines() (and other readers of lines) ends a line at.
_LINE_BREAKS: Final = re.compile("[\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    """JSON ``text`` whose line breaks outside ``\\n`` and ``\\r`` (U+0085, U+2028, U+2029) are escaped too."""
    if text.isascii():  # most rows: a look at the string's kind, not a scan
        return text
    return _LINE_BREAKS.sub(lambda found: f"\\u{ord(found[0]):04x}", text)


def _json_value(value: object) -> object:
    """What JSON cannot hold as it is, as :meth:`UsageEvent.to_json` writes it: ids and times as text."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _cleanup(args: argparse.Namespace, now: datetime) -> int:
    try:
        cutoff = now - args.older_than
    except OverflowError:
        raise _Failure(
            2, f"argument --older-than: {args.older_than.days} days before now is before the year 1"
        ) from None
    with _ledger(args.db) as store:
        result = store.delete_older_than(cutoff, batch_size=args.batch_size, dry_run=args.dry_run)
        where = store.url
    _print(f"{where}: {_retention_text(result)}")
    return 0


def _retention_text(result: RetentionResult) -> str:
    before = f"before {_stamp(result.cutoff)} UTC"
    if not result.records:
        return f"no usage rows started {before}; nothing to remove"
    what = f"{_count(result.records, 'usage row')} and {_count(result.contents, 'captured content')}"
    span = f"started from {_stamp(result.oldest or result.cutoff)} to {_stamp(result.newest or result.cutoff)} UTC"
    if result.dry_run:
        return f"would remove {what}, {span} ({before}); nothing deleted (--dry-run)"
    return f"removed {what}, {span} ({before})"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command == "demo":
            return _run(args)  # raised inside asyncio, SIGTERM would have AutoGen's runtime log tracebacks: it ends it
        with _terminated_as_interrupted():
            return _run(args)
    except KeyboardInterrupt as stop:
        # Ctrl-C before a command is under way: while the arguments are read (which loads SQLAlchemy for
        # --project) or its modules load (alembic, AutoGen's for the demo). Nothing is written yet.
        return _stopped(stop)


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "demo":
            return _demo(args.stream, args.db, live=args.live, model=args.model)
        if args.command == "db":
            return _db(args.db_command, args.url)
        return _ledger_command(args)
    except _Failure as failure:
        _error(failure.message)
        return failure.status
    except BrokenPipeError:
        _stdout_to_nowhere()  # the reader went away (`... | head`): stop quietly
        return 1


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt is, so that the command stops as cleanly."""


@contextmanager
def _terminated_as_interrupted() -> Iterator[None]:
    """SIGTERM (``timeout``, systemd, Kubernetes) stops a ledger or ``db`` command as Ctrl-C does, not where it stands.

    Killed outright, an export left its hidden partial file behind. Only the main thread can take a signal's
    handler (``main`` may be called from another): there, SIGTERM keeps the handler it has.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> NoReturn:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(stop: KeyboardInterrupt) -> int:
    """The line and the exit status of a command stopped by Ctrl-C (130) or SIGTERM (143)."""
    if isinstance(stop, _Terminated):
        _error("terminated")
        return 128 + signal.SIGTERM
    _error("interrupted")
    return 130


def _demo_refusal(*, live: bool, model: str | None, api_key: str) -> str | None:
    """Why the demo's options cannot work together, if they cannot."""
    if model is not None and not live:
        return f"--model is for --live (offline, the local server plays {_DEMO_MODEL})"
    if model is not None and not model.strip():
        return "--model must name a model"
    if live and not api_key:
        return "--live needs OPENAI_API_KEY set to an OpenAI API key (without --live the demo runs offline)"
    if live:  # a model the team cannot run on: said before a request is sent (AutoGen loaded on demand)
        from ._demo import live_model_refusal  # noqa: PLC0415

        return live_model_refusal(model or _DEMO_MODEL)
    return None


def _demo_configuration_refusal(url: str | None) -> str | None:
    """Why the demo cannot record, if it cannot: a ``--db`` URL that can never work, or a bad configuration.

    The demo records to its own ledger, but its wrapper, as any, takes the process's defaults: a bad
    ``AUTOGEN_RELIABILITY_DB_URL`` (an application's, for another directory) is said before anything runs.
    """
    from ._config import settings  # noqa: PLC0415
    from .storage._engine import check_database_url  # noqa: PLC0415

    if url is not None:
        try:
            check_database_url(url)
        except ConfigurationError as error:
            return f"bad database URL: {error}"
    try:
        settings()
    except ConfigurationError as error:
        return str(error)
    return None


def _demo(stream: bool, url: str | None, *, live: bool = False, model: str | None = None) -> int:
    api_key = os.environ.get("OPENAI_API_KEY", "").strip()
    refused = _demo_refusal(live=live, model=model, api_key=api_key)
    if refused:
        _error(refused)
        return 2

    from sqlalchemy import make_url  # noqa: PLC0415
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    # The demo pulls in AutoGen and the test server: loaded on demand.
    from ._demo import DemoFailedError, LiveAPI, run_demo  # noqa: PLC0415
    from .storage import StoreSchemaError  # noqa: PLC0415
    from .storage._engine import error_line, url_secrets  # noqa: PLC0415

    refused = _demo_configuration_refusal(url)
    if refused:
        _error(refused)
        return 2
    # The demo prints its retries itself; the library's warnings would say them twice. A team that fails is
    # said once, in a line; AutoGen's runtime would log each agent's traceback besides (with what the provider
    # said, which may quote the key).
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    runtime_log = logging.getLogger("autogen_core")
    level = runtime_log.level
    runtime_log.setLevel(logging.CRITICAL)
    try:
        with _standard_output():  # the display's writes: a failed one is one line (a closed pipe: main)
            try:
                run_demo(
                    sys.stdout,
                    stream=stream,
                    db_url=url,
                    live=LiveAPI(api_key=api_key, model=model or _DEMO_MODEL) if live else None,
                )
            except OSError as error:
                if error.filename is None:
                    raise  # standard output's (the demo names the file of each of its own)
                raise _Failure(1, f"cannot run the demo: {error.strerror or error}: {error.filename}") from None
    except (StoreSchemaError, DemoFailedError) as error:
        _error(str(error))
        return 1
    except SQLAlchemyError as error:
        _error(f"cannot use the database: {error_line(error, url_secrets(make_url(url)) if url else [])}")
        return 1
    except KeyboardInterrupt as stop:
        return _stopped(stop)
    finally:
        runtime_log.setLevel(level)
    return 0


def _ledger_command(args: argparse.Namespace) -> int:
    """Runs ``report``, ``sessions``, ``export`` or ``cleanup``; Ctrl-C is one line and 130 (the rest: ``main``).

    SIGTERM too, with 143 (:func:`_terminated_as_interrupted`).
    """
    now = datetime.now(UTC)  # one reading of the clock for every relative time of the command
    try:
        if args.command == "cleanup":
            return _cleanup(args, now)
        # The command's own parser, so that the error is said as its other argument errors are
        # ("autogen-reliability report: error: ...").
        command: argparse.ArgumentParser = args.command_parser
        since = _resolve(command, "--since", args.since, now)
        until = _resolve(command, "--until", args.until, now)
        if since is not None and until is not None and until <= since:
            command.error(f"--until ({_bound(until)} UTC) must be after --since ({_bound(since)} UTC)")
        commands = {"report": _report, "sessions": _sessions, "export": _export}
        return commands[args.command](args, since, until)
    except KeyboardInterrupt as stop:
        # Ctrl-C: cleanup has committed whole batches, export has removed its partial file.
        return _stopped(stop)
