"""Part of the pytest plugin (see ``autogen_reliability.testing.plugin``): the fixtures and the marker.

Fixtures (``pytest --fixtures`` shows each one's docstring):

- ``fake_openai_server``: a started `FakeOpenAIServer`, per test or per session;
- ``scripted_client``: makes ``ScriptedChatCompletionClient`` objects (in-process, no HTTP);
- ``usage_store``: a fresh ``UsageStore`` (SQLite, or PostgreSQL with
  ``AUTOGEN_RELIABILITY_TEST_DB_URL``);
- ``usage``: what the test recorded there, with assertions (`RecordedUsage`);
- ``reliable_client``: wraps a client so that its calls are recorded there.

The marker ``@pytest.mark.autogen_reliability(...)`` configures them per test
(`MarkerOptions`). Script items a test never used, and requests its script did
not expect, fail the test at teardown.

pytest imports this module in every run where the package is installed, so it
imports only pytest and the standard library; each fixture imports what it
needs (AutoGen, the SDK, SQLAlchemy) when a test uses it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, Protocol, Unpack, get_args, get_type_hints

import pytest

if TYPE_CHECKING:
    import asyncio

    from autogen_core.models import ChatCompletionClient, ModelInfo, RequestUsage
    from sqlalchemy import Engine

    from autogen_reliability import AttemptEvent, ReliableChatCompletionClient, ReliableOptions
    from autogen_reliability.accounting import UsageEvent, UsageRecorder
    from autogen_reliability.storage import UsageStore

    from ._replies import FakeReply, FakeUsage
    from ._scripted import ScriptedChatCompletionClient, ScriptedRequest, ScriptItem
    from ._server import FakeOpenAIServer

__all__ = [
    "DB_URL_ENV",
    "MARKER",
    "MarkerOptions",
    "RecordedUsage",
    "ReliableClientFactory",
    "ScriptedClientFactory",
]

MARKER: Final = "autogen_reliability"

DB_URL_ENV: Final = "AUTOGEN_RELIABILITY_TEST_DB_URL"
"""A PostgreSQL URL: ``usage_store`` then makes a schema per test there instead of a SQLite file."""

ALLOW_UNUSED_HINT: Final = f"@pytest.mark.{MARKER}(allow_unused=True)"

# The longest session label the ledger takes (autogen_reliability._context): longer node ids are cut and hashed.
_MAX_SESSION: Final = 200

# How many rows (script items) a failure message shows; more would bury the message.
_MAX_TABLE_ROWS: Final = 40
_MAX_LISTED: Final = 10


# ---------------------------------------------------------------------------------------------- the marker


@dataclass(frozen=True, slots=True)
class MarkerOptions:
    """The options of ``@pytest.mark.autogen_reliability(...)``; a test without the marker gets these defaults.

    Markers on the module, the class and the test are merged, the closest winning option by option.

    Attributes:
        server_scope: ``"function"``: ``fake_openai_server`` is a new server for this test.
            ``"session"``: one server shared by every test that asks for this scope, its
            script, records and settings reset between tests (faster: no port per test).
        allow_unused: Script items this test never used (of ``fake_openai_server`` and of the
            ``scripted_client`` clients) do not fail it.
        model: The model of the fixtures' clients and server: what the server reports, what
            ``scripted_client`` and ``reliable_client``'s default client stand for (their rows are
            priced as this model).
        project: The project ``reliable_client`` attributes its calls to (default: none).
    """

    server_scope: Literal["function", "session"] = "function"
    allow_unused: bool = False
    model: str = "gpt-4o-mini"
    project: str | None = None


_OPTION_NAMES: Final = tuple(option.name for option in fields(MarkerOptions))
_OPTIONS_KEY: Final = pytest.StashKey[MarkerOptions]()
_CALL_FAILED_KEY: Final = pytest.StashKey[bool]()
_CALL_SKIPPED_KEY: Final = pytest.StashKey[bool]()
# Per test: what describes the requests no script expected (None while there are none), one per fixture in use.
_UNEXPECTED_KEY: Final = pytest.StashKey[list[Callable[[], str | None]]]()


def pytest_configure(config: pytest.Config) -> None:
    """Registers the marker, so that ``--strict-markers`` knows it and ``pytest --markers`` lists it."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(server_scope='function', allow_unused=False, model='gpt-4o-mini', project=None): "
        "configures autogen-reliability's fixtures for this test. server_scope='session' shares one "
        "fake_openai_server (reset between tests); allow_unused=True lets script items go unused; model is "
        "what the fixtures' clients and server stand for; project is what reliable_client attributes calls to.",
    )


def marker_options(item: pytest.Item) -> MarkerOptions:
    """The test's options: its ``autogen_reliability`` markers merged (the closest wins), checked.

    Raises:
        pytest.fail.Exception: an unknown option, a positional argument or a bad value; the
            message names the option and what it takes.
    """
    cached = item.stash.get(_OPTIONS_KEY, None)
    if cached is not None:
        return cached
    merged: dict[str, Any] = {}
    for marker in reversed(list(item.iter_markers(MARKER))):  # the farthest first: the closest overwrites
        if marker.args:
            _refuse(f"takes keyword options only, got {marker.args!r}")
        merged.update(marker.kwargs)
    unknown = sorted(set(merged) - set(_OPTION_NAMES))
    if unknown:
        _refuse(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; known: {', '.join(_OPTION_NAMES)}"
        )
    options = MarkerOptions(**merged)
    if options.server_scope not in ("function", "session"):
        _refuse(f"server_scope must be 'function' or 'session', got {options.server_scope!r}")
    if not isinstance(options.allow_unused, bool):
        _refuse(f"allow_unused must be True or False, got {options.allow_unused!r}")
    if not isinstance(options.model, str) or not options.model.strip():
        _refuse(f"model must be a non-empty string, got {options.model!r}")
    if options.project is not None and (not isinstance(options.project, str) or not options.project.strip()):
        _refuse(f"project must be a non-empty string or None, got {options.project!r}")
    item.stash[_OPTIONS_KEY] = options
    return options


def _refuse(reason: str) -> NoReturn:
    pytest.fail(f"@pytest.mark.{MARKER}(...) {reason}", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each run of a test starts clean; a test with a bad marker fails at setup, whichever fixtures it uses."""
    # The item and its stash outlive a run: a rerun (pytest-rerunfailures) runs the same item again, and must
    # not report the first run's unexpected requests as its own, nor go by whether the first run's call failed.
    item.stash[_CALL_FAILED_KEY] = False
    item.stash[_CALL_SKIPPED_KEY] = False
    item.stash[_UNEXPECTED_KEY] = []
    if item.get_closest_marker(MARKER) is not None:
        marker_options(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Notes whether the test passed; a failed test's report shows the requests no script expected.

    The fixtures check their scripts at teardown, but a test that failed already is not failed
    again there: its own failure comes first, and what no script expected (perhaps its cause)
    is a section of that failure's report.
    """
    report = yield
    if report.when == "call":
        # Skipped and xfailed too: a test that stopped early did not get to use its script.
        item.stash[_CALL_FAILED_KEY] = not report.passed
        item.stash[_CALL_SKIPPED_KEY] = report.skipped
        if report.failed:
            found = [text for describe in item.stash.get(_UNEXPECTED_KEY, []) if (text := describe()) is not None]
            if found:
                report.sections.append(("requests no script expected", "\n\n".join(found)))
    return report


def _call_failed(item: pytest.Item) -> bool:
    return item.stash.get(_CALL_FAILED_KEY, False)


def call_skipped(item: pytest.Item) -> bool:
    """Whether the test's call was skipped (``pytest.skip()`` in its body) or xfailed."""
    return item.stash.get(_CALL_SKIPPED_KEY, False)


def _watch_unexpected(item: pytest.Item, describe: Callable[[], str | None]) -> None:
    item.stash.setdefault(_UNEXPECTED_KEY, []).append(describe)


# ---------------------------------------------------------------------------------------------- fake_openai_server


@pytest.fixture(scope="session")
def _autogen_reliability_session_server() -> Iterator[FakeOpenAIServer]:
    """The server of the tests marked ``server_scope="session"``: started for the first of them."""
    from ._server import FakeOpenAIServer  # noqa: PLC0415 - the plugin loads nothing until used

    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake_openai_server(request: pytest.FixtureRequest) -> Iterator[FakeOpenAIServer]:
    """A started ``FakeOpenAIServer``: the OpenAI Chat Completions API on 127.0.0.1, answering from a script.

    Hand ``fake_openai_server.url`` (the base URL, ending in ``/v1``) to the real client,
    script answers with ``fake_openai_server.enqueue(FakeReply.text(...), FakeReply.error(429), ...)``,
    read what each request carried in ``.requests``, wait with ``.wait_for_requests(n)``.
    Stopped after the test. With ``@pytest.mark.autogen_reliability(server_scope="session")``
    the tests so marked share one server, reset between tests (script, records, settings).

    The test fails at teardown if a request found no scripted reply (the request's messages are
    shown, even if the client's error was swallowed), or if scripted replies were never
    requested, those of ``enqueue_models(...)`` (the model listing) too (allow that with
    ``@pytest.mark.autogen_reliability(allow_unused=True)``).
    """
    from ._server import FakeOpenAIServer  # noqa: PLC0415 - the plugin loads nothing until used

    options = marker_options(request.node)
    shared = options.server_scope == "session"
    if shared:
        server: FakeOpenAIServer = request.getfixturevalue("_autogen_reliability_session_server")
        _fresh(server, options.model)
    else:
        server = FakeOpenAIServer(model=options.model).start()
    _watch_unexpected(request.node, lambda: _server_unexpected(server))
    try:
        yield server
        _check_server(server, request.node, options)
    finally:
        if shared:
            _fresh(server, options.model)  # what a test scripted must not answer the next one
        else:
            server.stop()


def _fresh(server: FakeOpenAIServer, model: str) -> None:
    """A shared server as a new one would be: no script, no records, the settings a test may change reset."""
    server.reset()
    server.model = model
    server.default = None
    server.model_aliases = {}


def _server_unexpected(server: FakeOpenAIServer) -> str | None:
    unexpected = server.unexpected_requests
    if not unexpected:
        return None
    shown = "\n".join(f"request #{request.index + 1}:\n{request.describe()}" for request in unexpected)
    return (
        f"fake_openai_server got {_count(len(unexpected), 'request')} its script did not expect "
        f"(each was answered HTTP 400):\n{shown}\n"
        "Script an answer for each with fake_openai_server.enqueue(...), or set fake_openai_server.default."
    )


def _check_server(server: FakeOpenAIServer, item: pytest.Item, options: MarkerOptions) -> None:
    if _call_failed(item):
        return  # reported with the failure (pytest_runtest_makereport)
    unexpected = _server_unexpected(server)
    if unexpected is not None:
        pytest.fail(unexpected, pytrace=False)
    if options.allow_unused:
        return
    remaining, listings = server.remaining, server.models_remaining
    problems: list[str] = []
    if remaining:
        shown = _listed(_describe_reply(reply) for reply in remaining)
        noun = _count(len(remaining), "scripted reply", "scripted replies")
        problems.append(f"{noun} {'was' if len(remaining) == 1 else 'were'} never requested:\n{shown}")
    if listings:
        shown = _listed(_describe_listing_reply(reply) for reply in listings)
        noun = _count(len(listings), "scripted listing reply", "scripted listing replies")
        problems.append(f"{noun} (enqueue_models) {'was' if len(listings) == 1 else 'were'} never requested:\n{shown}")
    if problems:
        one = len(remaining) + len(listings) == 1
        pytest.fail(
            "fake_openai_server: " + "\n".join(problems) + f"\nRemove {'it' if one else 'them'} from the script, "
            f"or mark a test that may leave replies unused: {ALLOW_UNUSED_HINT}",
            pytrace=False,
        )


def _listed(entries: Iterable[str]) -> str:
    """One indented line per entry; after the first ten, how many more (a script of 50 errors reads as 11 lines)."""
    shown = list(entries)
    lines = [f"  {entry}" for entry in shown[:_MAX_LISTED]]
    if len(shown) > _MAX_LISTED:
        lines.append(f"  ... and {len(shown) - _MAX_LISTED} more")
    return "\n".join(lines)


def _describe_listing_reply(reply: FakeReply) -> str:
    """A reply scripted for ``GET /v1/models``: a completion one answers with the listing (its content is not used)."""
    if reply.kind != "completion":
        return _describe_reply(reply)
    waits = [f"delay={reply.delay!r}"] if reply.delay else []
    if reply.hold_after_chunks is not None:
        waits.append(f"hold_after_chunks={reply.hold_after_chunks!r}")
    return f"FakeReply({', '.join(waits)})"


def _describe_reply(reply: FakeReply) -> str:
    if reply.kind == "error":
        return f"FakeReply.error({reply.status})"
    if reply.kind != "completion":
        return f"FakeReply.{reply.kind}()"
    if reply.calls:
        return f"FakeReply.tool_calls({', '.join(name for name, _ in reply.calls)})"
    content = reply.content or ""
    return f"FakeReply.text({content[:60] + ('...' if len(content) > 60 else '')!r})"


# ---------------------------------------------------------------------------------------------- scripted_client


class ScriptedClientFactory(Protocol):
    """The ``scripted_client`` fixture: ``scripted_client(script, **options)`` makes a scripted client."""

    # The options of ScriptedChatCompletionClient; the model's default is the marker's.
    def __call__(
        self,
        script: Iterable[ScriptItem] = (),
        /,
        *,
        model: str = ...,
        model_info: ModelInfo | None = ...,
        usage: FakeUsage | RequestUsage | None = ...,
        default: ScriptItem | Callable[[ScriptedRequest], ScriptItem] | None = ...,
        context_window: int = ...,
        sleep: Callable[[float], Awaitable[None]] = ...,
    ) -> ScriptedChatCompletionClient:
        """A ``ScriptedChatCompletionClient(script, **options)``, checked at the test's teardown."""
        ...


@pytest.fixture
def scripted_client(request: pytest.FixtureRequest) -> Iterator[ScriptedClientFactory]:
    """Makes ``ScriptedChatCompletionClient`` objects: in-process model clients answering from a script.

    ``scripted_client(["Hello!", faults.rate_limit(retry_after=1), {"answer": 42}], **options)``
    takes the script (text, JSON, tool calls, ``CreateResult``, ``ScriptedReply``, exceptions)
    and the client's options; its ``model`` is the marker's ``model`` unless given. No HTTP.

    At teardown the test fails if a client got a request its script did not expect (the
    request's messages are shown, even if an agent or a team swallowed the client's error),
    or if script items were never used (allow that with
    ``@pytest.mark.autogen_reliability(allow_unused=True)``).
    """
    options = marker_options(request.node)
    made: list[Any] = []

    def make(script: Iterable[ScriptItem] = (), /, **client_options: Any) -> ScriptedChatCompletionClient:
        from ._scripted import ScriptedChatCompletionClient  # noqa: PLC0415 - the plugin loads nothing until used

        client_options.setdefault("model", options.model)
        client = ScriptedChatCompletionClient(script, **client_options)
        made.append(client)
        return client

    _watch_unexpected(request.node, lambda: _scripted_unexpected(made))
    yield make
    _check_scripted(made, request.node, options)


def _scripted_unexpected(clients: Sequence[Any]) -> str | None:
    several = len(clients) > 1
    problems: list[str] = []
    for number, client in enumerate(clients, 1):
        name = f"scripted client #{number} ({client!r})" if several else f"the scripted client ({client!r})"
        for request in client.unexpected_requests:
            call = "create_stream()" if request.stream else "create()"
            problems.append(
                f"{name} got a request its script did not expect: request #{request.index + 1} ({call}), "
                f"whose messages were:\n{request.describe()}\n"
                "Add an answer to the script, or give the client a default= answer."
            )
    return "\n\n".join(problems) if problems else None


def _check_scripted(clients: Sequence[Any], item: pytest.Item, options: MarkerOptions) -> None:
    if _call_failed(item):
        return  # reported with the failure (pytest_runtest_makereport)
    unexpected = _scripted_unexpected(clients)
    if unexpected is not None:
        pytest.fail(unexpected, pytrace=False)
    if options.allow_unused:
        return
    several = len(clients) > 1
    problems: list[str] = []
    for number, client in enumerate(clients, 1):
        name = f"scripted client #{number} ({client!r})" if several else f"the scripted client ({client!r})"
        remaining = client.remaining
        if remaining:
            shown = _listed(f"{entry!r:.100}" for entry in remaining)
            problems.append(f"{name}: {_count(len(remaining), 'script item')} never used:\n{shown}")
    if problems:
        pytest.fail(
            "\n\n".join(problems) + "\nRemove them from the script, or mark a test that may leave script items "
            f"unused: {ALLOW_UNUSED_HINT}",
            pytrace=False,
        )


# ---------------------------------------------------------------------------------------------- usage_store


@pytest.fixture
def usage_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsageStore]:
    """A fresh ``UsageStore`` at the latest schema, closed after the test.

    A new SQLite file in a temporary directory; with ``AUTOGEN_RELIABILITY_TEST_DB_URL`` set to a
    PostgreSQL URL (a role that may create schemas), a new schema there instead, dropped after the test.
    """
    from autogen_reliability.storage import UsageStore  # noqa: PLC0415 - the plugin loads nothing until used

    url = os.environ.get(DB_URL_ENV, "").strip()
    if not url:
        with UsageStore(f"sqlite:///{tmp_path_factory.mktemp('usage') / 'usage.db'}") as store:
            yield store
        return
    with _postgresql_schema(url) as schema_url, UsageStore(schema_url) as store:
        yield store


@contextlib.contextmanager
def _postgresql_schema(url: str) -> Iterator[str]:
    """A new schema at the PostgreSQL ``url``; yields a URL whose connections use it; drops it at the end.

    A schema rather than a database: a role may create schemas in its database more often than
    it may create databases, and it is much faster. Connections find the tables through
    libpq's ``options`` (``-c search_path=...``), which psycopg and psycopg2 pass on.
    """
    from sqlalchemy import create_engine  # noqa: PLC0415 - the plugin loads nothing until used
    from sqlalchemy.engine import make_url  # noqa: PLC0415
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415
    from sqlalchemy.pool import NullPool  # noqa: PLC0415

    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is None or parsed.get_backend_name() != "postgresql":
        pytest.fail(
            f"{DB_URL_ENV} must be a PostgreSQL URL (postgresql+psycopg://user:password@host/db); without it, "
            "usage_store uses a SQLite file",
            pytrace=False,
        )
    schema = f"ar_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(parsed, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        _run_as_admin(admin, f'CREATE SCHEMA "{schema}"')
        own = parsed.query.get("options")
        options = " ".join([*([own] if isinstance(own, str) else own or []), f"-csearch_path={schema}"])
        try:
            yield parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)
        finally:
            _run_as_admin(admin, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        admin.dispose()


def _run_as_admin(admin: Engine, statement: str) -> None:
    """Runs ``statement`` on the test database; if it cannot, fails the test with the reason in one line.

    Not the driver's traceback: the locals of its frames, which pytest shows, hold the password.
    """
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415 - the plugin loads nothing until used

    from autogen_reliability.storage._engine import error_line, masked_url, url_secrets  # noqa: PLC0415

    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(statement)
        return
    except SQLAlchemyError as error:
        reason = error_line(error, url_secrets(admin.url))
    # Failed outside the except block: inside, the driver's error would be shown as well, chained to this one.
    pytest.fail(f"cannot use the test database {masked_url(admin.url)} ({DB_URL_ENV}): {reason}", pytrace=False)


# ---------------------------------------------------------------------------------------------- usage


class RecordedUsage:
    """What a test recorded: the ``usage`` fixture. Every read writes the recorder's pending rows first.

    Filters (``**where``) are ``UsageEvent`` fields and the value each must equal
    (``agent="writer"``, ``outcome="error"``, ``model="gpt-4o-mini"``); ``tags`` matches
    rows that have at least those tags; ``error_kind`` takes an ``ErrorKind`` or its value.
    A filter no row can match (an unknown field, outcome or error kind; ``http_status="429"``,
    ``tags="tenant=t-42"``, a value of a type the field never holds) raises ``TypeError``.
    Failed assertions show the recorded rows as a table.

    Attributes:
        store: The test's ``UsageStore`` (the ``usage_store`` fixture).
        recorder: The ``UsageRecorder`` writing to it: pass it to ``reliable(...,
            recorder=usage.recorder)`` to record an agent or a team you wrap yourself.
        session: The session the test's calls are attributed to: its node id.
    """

    def __init__(self, store: UsageStore, recorder: UsageRecorder, session: str) -> None:
        self.store = store
        self.recorder = recorder
        self.session = session

    def __repr__(self) -> str:
        return f"<RecordedUsage session={self.session!r} store={self.store.url!r}>"

    def rows(self, **where: Any) -> list[UsageEvent]:
        """The recorded rows (one per attempt) that match ``where``, oldest first."""
        __tracebackhide__ = True
        where = _checked(where)
        return [row for row in self._all() if _matches(row, where)]

    def assert_calls(self, n: int, /, **where: Any) -> None:
        """Asserts that ``n`` calls match ``where``, each judged by its last attempt (what the caller got).

        A call that was retried after a 429 and then answered counts as one call with ``outcome="ok"``.
        """
        __tracebackhide__ = True
        _check_count(n)
        where = _checked(where)
        rows = self._all()
        last: dict[uuid.UUID, UsageEvent] = {}
        for row in rows:
            if row.call_id not in last or row.attempt >= last[row.call_id].attempt:
                last[row.call_id] = row
        found = sum(1 for row in last.values() if _matches(row, where))
        if found != n:
            raise AssertionError(
                f"expected {_count(n, 'call')}{_described(where)}, recorded {found} "
                f"(a call is judged by its last attempt)\n{_table(rows)}"
            )

    def assert_attempts(self, n: int, /, **where: Any) -> None:
        """Asserts that ``n`` attempts (rows: retries and fallbacks each count) match ``where``."""
        __tracebackhide__ = True
        _check_count(n)
        where = _checked(where)
        rows = self._all()
        found = sum(1 for row in rows if _matches(row, where))
        if found != n:
            raise AssertionError(
                f"expected {_count(n, 'attempt')}{_described(where)}, recorded {found}\n{_table(rows)}"
            )

    def total_cost(self, **where: Any) -> Decimal:
        """The exact cost in USD of the rows matching ``where``; unpriced rows add nothing (`assert_no_unpriced`)."""
        __tracebackhide__ = True
        return _usd(sum(row.cost_nanousd or 0 for row in self.rows(**where)))

    def assert_cost_below(self, usd: Decimal | int | str | float, /, **where: Any) -> None:
        """Asserts that the rows matching ``where`` cost less than ``usd``, and that every one of them is priced.

        ``usd`` is read as written: ``0.01`` is one cent exactly (a float goes through its shortest repr).
        """
        __tracebackhide__ = True
        limit = _dollars(usd)
        where = _checked(where)
        rows = self._all()
        matching = [row for row in rows if _matches(row, where)]
        unpriced = [row for row in matching if row.cost_nanousd is None]
        if unpriced:
            raise AssertionError(
                f"cannot tell whether the cost is below ${_money(limit)}: "
                f"{_count(len(unpriced), 'row')}{_described(where)} {'is' if len(unpriced) == 1 else 'are'} "
                f"unpriced (models {_models(unpriced)})\n{_table(rows)}"
            )
        total = _usd(sum(row.cost_nanousd or 0 for row in matching))
        if total >= limit:
            raise AssertionError(
                f"the cost{_described(where)} is ${_money(total)}, not below ${_money(limit)}\n{_table(rows)}"
            )

    def assert_no_unpriced(self, **where: Any) -> None:
        """Asserts that every row matching ``where`` has a price (a model without one is recorded as unpriced)."""
        __tracebackhide__ = True
        where = _checked(where)
        rows = self._all()
        unpriced = [row for row in rows if row.cost_nanousd is None and _matches(row, where)]
        if unpriced:
            raise AssertionError(
                f"{_count(len(unpriced), 'row')}{_described(where)} {'is' if len(unpriced) == 1 else 'are'} "
                f"unpriced (models {_models(unpriced)}): give the wrapper a PricingTable with prices for them\n"
                f"{_table(rows)}"
            )

    def _all(self) -> list[UsageEvent]:
        __tracebackhide__ = True
        if not self.recorder.flush(10):
            raise AssertionError("the usage recorder did not write its rows within 10 s")
        if self.recorder.spooled:
            raise AssertionError(
                f"{_count(self.recorder.spooled, 'usage row')} could not be written to {self.store.url} and "
                "wait in the spool (see the log of the 'autogen_reliability' logger)"
            )
        return self.store.events()


@functools.cache
def _field_names() -> tuple[str, ...]:
    from autogen_reliability.accounting import UsageEvent  # noqa: PLC0415 - loaded already: there are rows

    return tuple(field.name for field in fields(UsageEvent))


@functools.cache
def _field_kinds() -> dict[str, tuple[str, bool]]:
    """Per text or number field of the rows: what it holds (``"str"``, ``"int"``, ...) and whether it may be None."""
    from autogen_reliability.accounting import UsageEvent  # noqa: PLC0415 - loaded already: there are rows

    kinds: dict[str, tuple[str, bool]] = {}
    for name, hint in get_type_hints(UsageEvent).items():
        held = [kind for kind in get_args(hint) or (hint,) if kind is not type(None)]
        if len(held) == 1 and held[0] in (str, int, float, bool):
            kinds[name] = (held[0].__name__, type(None) in get_args(hint))
    return kinds


@functools.cache
def _field_shapes() -> dict[str, tuple[type | tuple[type, type], bool]]:
    """Per field of another shape: its class (``UUID``, ``datetime``, ``date``), or a mapping's key and value
    classes (``tags``: str to str); and whether it may be None."""
    from collections.abc import Mapping as MappingABC  # noqa: PLC0415
    from typing import get_origin  # noqa: PLC0415

    from autogen_reliability.accounting import UsageEvent  # noqa: PLC0415 - loaded already: there are rows

    shapes: dict[str, tuple[type | tuple[type, type], bool]] = {}
    for name, hint in get_type_hints(UsageEvent).items():
        if name in _field_kinds():
            continue
        alternatives = get_args(hint) if type(None) in get_args(hint) else (hint,)
        held = [alternative for alternative in alternatives if alternative is not type(None)]
        if len(held) != 1:
            continue
        optional = len(held) != len(alternatives)
        if get_origin(held[0]) is MappingABC:
            key, value = get_args(held[0])
            shapes[name] = ((key, value), optional)
        elif isinstance(held[0], type):
            shapes[name] = (held[0], optional)
    return shapes


def _can_hold(value: object, shape: type | tuple[type, type], optional: bool) -> bool:
    if value is None:
        return optional
    if isinstance(shape, tuple):
        key, held = shape
        return isinstance(value, Mapping) and all(
            isinstance(name, key) and isinstance(item, held) for name, item in value.items()
        )
    return isinstance(value, shape)


def _shape_name(shape: type | tuple[type, type], optional: bool) -> str:
    if isinstance(shape, tuple):
        held = f"a mapping of {shape[0].__name__} to {shape[1].__name__}"
    else:
        held = f"a {shape.__name__}"  # a UUID, a datetime, a date
    return f"{held}{' or None' if optional else ''}"


def _can_match(value: object, kind: str, optional: bool) -> bool:
    if value is None:
        return optional
    return isinstance(value, str) if kind == "str" else isinstance(value, int | float)  # True == 1, 1.0 == 1


def _checked(where: Mapping[str, Any]) -> dict[str, Any]:
    """The filters as the rows hold their values (an ``ErrorKind`` as its value); one no row can match is refused."""
    __tracebackhide__ = True
    from autogen_reliability import ErrorKind  # noqa: PLC0415 - loaded already: the usage fixture is in use
    from autogen_reliability.accounting._events import Outcome  # noqa: PLC0415

    checked = dict(where)
    for name, value in where.items():
        if name not in _field_names():
            known = ", ".join(_field_names())
            raise TypeError(f"{name!r} is not a field of the usage rows; filter on one of: {known}")
        if name == "error_kind":
            if isinstance(value, ErrorKind):
                checked[name] = value.value
            elif value is not None and value not in {kind.value for kind in ErrorKind}:
                kinds = ", ".join(kind.value for kind in ErrorKind)
                raise TypeError(f"error_kind={value!r} is not an ErrorKind; one of: {kinds} (or None: no error)")
        elif name == "outcome" and (not isinstance(value, str) or value not in get_args(Outcome)):
            raise TypeError(f"outcome={value!r} is not an outcome; one of: {', '.join(get_args(Outcome))}")
        elif name in _field_kinds() and not _can_match(value, *_field_kinds()[name]):
            kind, optional = _field_kinds()[name]
            held = f"{'an' if kind == 'int' else 'a'} {kind}{' or None' if optional else ''}"
            raise TypeError(f"{name}={value!r:.100} cannot match: the rows hold {held} there")
        elif name in _field_shapes() and not _can_hold(value, *_field_shapes()[name]):
            held = _shape_name(*_field_shapes()[name])
            raise TypeError(f"{name}={value!r:.100} cannot match: the rows hold {held} there")
    return checked


def _matches(row: UsageEvent, where: Mapping[str, Any]) -> bool:
    for name, wanted in where.items():
        value = getattr(row, name)
        if name == "tags" and isinstance(wanted, Mapping):
            if any(value.get(key) != tag for key, tag in wanted.items()):
                return False
        elif value != wanted:
            return False
    return True


def _check_count(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TypeError(f"the expected count must be an int >= 0, got {n!r}")


def _dollars(usd: object) -> Decimal:
    if isinstance(usd, bool) or not isinstance(usd, Decimal | int | str | float):
        raise TypeError(f"usd must be a Decimal, an int, a str or a float, got {type(usd).__name__}")
    try:
        value = Decimal(repr(usd) if isinstance(usd, float) else usd)
    except ArithmeticError:
        raise TypeError(f"usd must be an amount of dollars, got {usd!r}") from None
    if not value.is_finite() or value < 0:
        raise TypeError(f"usd must be a finite amount >= 0, got {usd!r}")
    return value


def _usd(nanousd: int) -> Decimal:
    return Decimal(nanousd).scaleb(-9)


def _money(usd: Decimal) -> str:
    """Dollars as a person writes them: ``0.0000027``, ``0``, ``12.5`` (no exponent, no trailing zeros)."""
    return f"{usd.normalize():f}"


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _described(where: Mapping[str, Any]) -> str:
    return f" with {', '.join(f'{name}={value!r}' for name, value in where.items())}" if where else ""


def _models(rows: Iterable[UsageEvent]) -> str:
    return ", ".join(sorted({repr(row.model) for row in rows}))


def _table(rows: Sequence[UsageEvent]) -> str:
    """The rows as a small text table: the call (numbered as they appear), the attempt, who, what, the cost."""
    if not rows:
        return "Recorded rows: none"
    calls: dict[uuid.UUID, int] = {}
    header = ("call", "attempt", "agent", "model", "outcome", "error", "tokens", "cost USD")
    lines = [header]
    for row in rows[:_MAX_TABLE_ROWS]:
        call = calls.setdefault(row.call_id, len(calls) + 1)
        error = " ".join(str(part) for part in (row.error_kind, row.http_status) if part is not None)
        cost = "unpriced" if row.cost_nanousd is None else _money(_usd(row.cost_nanousd))
        lines.append(
            (
                str(call),
                str(row.attempt),
                row.agent or "-",
                row.model or "-",
                row.outcome,
                error or "-",
                f"{row.prompt_tokens}+{row.completion_tokens}",
                cost,
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    more = len(rows) - _MAX_TABLE_ROWS
    if more > 0:
        text.append(f"... and {_count(more, 'more row')}")
    return f"Recorded rows ({len(rows)}):\n" + "\n".join(text)


def _session_of(item: pytest.Item) -> str:
    """The test's node id, as the session of its calls: cut and hashed where the ledger's limit requires."""
    node_id = item.nodeid
    if len(node_id) <= _MAX_SESSION:
        return node_id
    digest = hashlib.sha256(node_id.encode()).hexdigest()[:12]
    return f"{node_id[: _MAX_SESSION - 13]}~{digest}"


@pytest.fixture
def usage(
    request: pytest.FixtureRequest, usage_store: UsageStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RecordedUsage]:
    """What the test recorded in ``usage_store``, with assertions that show the rows when they fail.

    ``usage.assert_calls(2, agent="writer", outcome="ok")``, ``usage.assert_attempts(3)``,
    ``usage.total_cost()`` (a ``Decimal`` of USD), ``usage.assert_cost_below("0.01")``,
    ``usage.assert_no_unpriced()``, ``usage.rows(outcome="error")``. Clients made by
    ``reliable_client`` record here; for an agent or a team you wrap yourself, pass
    ``recorder=usage.recorder`` to ``reliable()``.

    While it is in use, the test's calls are attributed to the session named by its node id
    (a ``usage_scope`` inside the test may name another), and the library's test mode is on:
    retries do not wait (``autogen_reliability.retry.set_testing``).
    """
    from autogen_reliability import usage_scope  # noqa: PLC0415 - the plugin loads nothing until used
    from autogen_reliability.accounting import UsageRecorder  # noqa: PLC0415
    from autogen_reliability.retry import is_testing, set_testing  # noqa: PLC0415

    recorder = UsageRecorder(usage_store, spool_dir=tmp_path_factory.mktemp("spool"), close_sink=False)
    session = _session_of(request.node)
    was_testing = is_testing()
    set_testing(True)
    try:
        with usage_scope(session=session):
            yield RecordedUsage(usage_store, recorder, session)
    finally:
        set_testing(was_testing)
        recorder.close()


# ---------------------------------------------------------------------------------------------- reliable_client


class ReliableClientFactory(Protocol):
    """The ``reliable_client`` fixture: ``reliable_client(client=None, **options)`` wraps a client."""

    def __call__(
        self, client: ChatCompletionClient | None = None, /, **options: Unpack[ReliableOptions]
    ) -> ReliableChatCompletionClient:
        """``reliable(client, **options)``, recording to the test's ``usage``."""
        ...


@pytest.fixture
def reliable_client(request: pytest.FixtureRequest, usage: RecordedUsage) -> Iterator[ReliableClientFactory]:
    """Wraps a model client with ``reliable()``, recording to the test's ``usage_store`` (see ``usage``).

    ``reliable_client(inner, retry=RetryPolicy(...), ...)`` takes the wrapper's options; its
    ``recorder`` is the test's and its ``project`` the marker's unless given. Without a client it
    wraps AutoGen's real ``OpenAIChatCompletionClient`` (the marker's ``model``) pointed at
    ``fake_openai_server``, so the openai SDK, the HTTP layer and the usage tap run as in
    production: script it with ``fake_openai_server.enqueue(...)``; a model AutoGen does not know
    gets every capability, its rows unpriced. For a client with no HTTP, pass ``scripted_client([...])``.

    Test mode is on (retries do not wait) and calls are attributed to the test's node id as the
    session, as with ``usage``.
    """
    options = marker_options(request.node)
    closer = _LoopCloser()

    def make(
        client: ChatCompletionClient | None = None, /, **wrapper_options: Unpack[ReliableOptions]
    ) -> ReliableChatCompletionClient:
        from autogen_reliability import reliable  # noqa: PLC0415 - the plugin loads nothing until used

        made: ChatCompletionClient | None = None
        in_a_loop = False
        if client is None:
            # A client the fixture made, the fixture closes; the test's own are the test's.
            client = made = _openai_client(request, options.model)
            in_a_loop = closer.add(made)
        wrapper_options.setdefault("recorder", usage.recorder)
        if options.project is not None:
            wrapper_options.setdefault("project", options.project)
        wrapped = reliable(client, **wrapper_options)
        if made is not None and not in_a_loop:
            # Made before any loop ran (in a sync fixture, or a test that calls asyncio.run): the loop of its
            # first attempt is the one its connections belong to.
            wrapped.add_attempt_observer(functools.partial(closer.add_on_attempt, made))
        return wrapped

    yield make
    closer.close()


def _openai_client(request: pytest.FixtureRequest, model: str) -> ChatCompletionClient:
    from autogen_ext.models.openai import OpenAIChatCompletionClient  # noqa: PLC0415

    from ._scripted import every_capability  # noqa: PLC0415

    server: FakeOpenAIServer = request.getfixturevalue("fake_openai_server")
    try:
        return OpenAIChatCompletionClient(model=model, api_key="sk-test", base_url=server.url)
    except ValueError:
        # A model AutoGen's table does not know needs its model_info: every capability, as the scripted
        # client has, since the server answers whatever the test scripts. (Another ValueError comes again.)
        return OpenAIChatCompletionClient(
            model=model, api_key="sk-test", base_url=server.url, model_info=every_capability()
        )


class _LoopCloser:
    """Closes clients in the event loop that used them, before that loop is closed.

    A client's HTTP connections belong to the loop of the test that used it, and pytest-asyncio
    closes a test's loop before the sync fixtures' teardown runs: closing the client then fails
    ("Event loop is closed"), and leaving it to the SDK's finaliser makes it fail later, in
    another test's loop, logged as "Task exception was never retrieved". So a client made in a
    running loop is handed to a task of that loop which closes it when cancelled: the loop's
    runner (``asyncio.run``, pytest-asyncio's) cancels the tasks left before it closes the loop,
    and a loop that outlives the test (a session-scoped one) gets the task cancelled at teardown.
    A client made outside any loop (in a sync fixture, or before ``asyncio.run``) is handed over the
    same way at the end of its first attempt, on the loop that made it.
    """

    def __init__(self) -> None:
        self._tasks: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[None], list[ChatCompletionClient]]] = []

    def add(self, client: ChatCompletionClient) -> bool:
        """Closes ``client`` when the running loop ends; False (and nothing done) outside a running loop."""
        import asyncio  # noqa: PLC0415 - 15 ms that a run without async tests need not pay

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        for known, _task, clients in self._tasks:
            if known is loop:
                if client not in clients:
                    clients.append(client)
                return True
        clients = [client]
        self._tasks.append((loop, loop.create_task(self._close_when_cancelled(clients)), clients))
        return True

    def add_on_attempt(self, client: ChatCompletionClient, _event: AttemptEvent) -> None:
        """An attempt observer: ``add(client)`` on the loop the attempt ran on."""
        self.add(client)

    @staticmethod
    async def _close_when_cancelled(clients: list[ChatCompletionClient]) -> None:
        import asyncio  # noqa: PLC0415

        try:
            await asyncio.get_running_loop().create_future()  # never set: waits for the cancellation
        finally:
            for client in clients:
                await client.close()

    def close(self) -> None:
        import asyncio  # noqa: PLC0415

        for loop, task, _clients in self._tasks:
            if task.done() or loop.is_closed() or loop.is_running():
                continue  # closed already; or another thread's loop, which closes it when it ends
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
