"""The pytest plugin's fixtures and marker, tested as a user meets them: in pytest runs of their own (``pytester``).

The plugin is loaded in those runs by its ``pytest11`` entry point, as in a user's
project (the package is installed in this environment); nothing here passes ``-p``.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import autogen_reliability.testing
from autogen_reliability.retry import is_testing
from autogen_reliability.testing._pytest_fixtures import ALLOW_UNUSED_HINT, DB_URL_ENV

from .conftest import run_python

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent

Run = Callable[..., pytest.RunResult]

# The users' side of the runs: asyncio tests without a marker each, as AutoGen users mostly configure it.
INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""

HAS_SCRIPTED = hasattr(autogen_reliability.testing, "ScriptedChatCompletionClient")
needs_scripted = pytest.mark.skipif(
    not HAS_SCRIPTED,
    reason="ScriptedChatCompletionClient is not in this tree yet (the other half of issue #13, testing/_scripted.py)",
)


class _KeepImports:
    """A plugin of the inner runs that notes the modules they imported, for this process to keep them.

    pytester removes from ``sys.modules`` what a test imported (in-process runs included), to
    isolate tests. But a library's modules first imported there stay referenced by modules
    imported before (httpx2 maps the errors of httpcore2, which it imports on the first request,
    in a table it fills once): imported again later as new modules, their exception classes no
    longer matched, and the SDK's own mapping of transport errors broke in the tests that ran after
    these. The user's test modules are not kept.
    """

    def __init__(self) -> None:
        self.imported: dict[str, ModuleType] = {}
        self.user_dir = ""

    def pytest_unconfigure(self) -> None:
        self.imported |= {
            name: module
            for name, module in sys.modules.items()
            if not (getattr(module, "__file__", None) or "").startswith(self.user_dir)
        }


@pytest.fixture
def _keep_imports() -> Iterator[_KeepImports]:
    """Set up before ``pytester`` (so torn down after its clean-up): puts the inner runs' imports back."""
    keep = _KeepImports()
    yield keep
    for name, module in keep.imported.items():
        sys.modules.setdefault(name, module)


@pytest.fixture
def run(_keep_imports: _KeepImports, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Runs ``source`` as a user's test module in a pytest of its own (in this process); returns the result."""
    pytester.makeini(INI)
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    _keep_imports.user_dir = str(pytester.path)

    def run(source: str, *args: str) -> pytest.RunResult:
        pytester.makepyfile(test_user=source)
        return pytester.runpytest("-p", "no:cacheprovider", *args, plugins=[_keep_imports])

    return run


def output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines)


# ---------------------------------------------------------------------------------------------- loading


_LOAD_PLUGIN = """
import importlib, json, sys
import autogen_reliability.testing.plugin as plugin
for module in plugin.pytest_plugins:  # what pytest imports next
    importlib.import_module(module)
heavy = {heavy!r}
print(json.dumps(sorted(name for name in heavy if name in sys.modules)))
"""

HEAVY = (
    "autogen_core",
    "autogen_agentchat",
    "autogen_ext",
    "openai",
    "sqlalchemy",
    "alembic",
    "genai_prices",
    "httpx",
    "httpx2",
    "pydantic",
)


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    done = run_python(_LOAD_PLUGIN.format(heavy=HEAVY))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_a_pytest_run_that_uses_no_fixture_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(
        f"""
        import sys

        def pytest_collection_finish(session):
            print("HEAVY", sorted(name for name in {HEAVY!r} if name in sys.modules))
        """
    )
    pytester.makepyfile("def test_nothing(): pass")
    # A fresh interpreter: this one imported everything long ago.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    assert "HEAVY []" in result.outlines, output(result)
    assert "autogen-reliability" in output(result)  # the plugins line: the entry point loaded it


def test_without_the_plugin_the_fixtures_are_unknown(run: Run) -> None:
    result = run("def test_it(fake_openai_server): pass", "-p", "no:autogen_reliability")
    result.assert_outcomes(errors=1)
    assert "fixture 'fake_openai_server' not found" in output(result)


def test_every_fixture_is_documented_and_the_marker_is_registered(run: Run) -> None:
    result = run("def test_it(): pass", "--fixtures")
    text_ = output(result)
    for fixture, says in [
        ("fake_openai_server", "A started ``FakeOpenAIServer``"),
        ("scripted_client", "Makes ``ScriptedChatCompletionClient`` objects"),
        ("usage_store", "A fresh ``UsageStore`` at the latest schema"),
        ("usage", "What the test recorded in ``usage_store``"),
        ("reliable_client", "Wraps a model client with ``reliable()``"),
    ]:
        assert re.search(rf"^{fixture}( \[.*\])? -- .*_pytest_fixtures\.py", text_, re.MULTILINE), fixture
        assert says in text_, fixture
    assert "_autogen_reliability_session_server" not in text_  # private: shown with -v only

    markers = output(run("def test_it(): pass", "--markers"))
    assert "@pytest.mark.autogen_reliability(server_scope='function', allow_unused=False" in markers


# ---------------------------------------------------------------------------------------------- fake_openai_server


def test_fake_openai_server_serves_the_real_sdk_and_stops_after_the_test(run: Run) -> None:
    result = run(
        """
        import openai
        from autogen_reliability.testing import FakeReply

        SEEN = []

        async def test_a_call(fake_openai_server):
            SEEN.append(fake_openai_server)
            assert fake_openai_server.url.endswith("/v1")
            fake_openai_server.enqueue(FakeReply.text("Hello!"))
            async with openai.AsyncOpenAI(api_key="sk-test", base_url=fake_openai_server.url) as sdk:
                answer = await sdk.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
                )
            assert answer.choices[0].message.content == "Hello!"
            assert fake_openai_server.wait_for_requests(1)[0].messages == [{"role": "user", "content": "Hi"}]
            assert fake_openai_server.requests[0].model == "gpt-4o-mini"

        def test_next(fake_openai_server):
            assert not SEEN[0].running  # stopped at the first test's teardown
            assert fake_openai_server is not SEEN[0] and fake_openai_server.requests == []
        """
    )
    result.assert_outcomes(passed=2)


def test_unused_server_replies_fail_the_test_at_teardown_naming_the_opt_out(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_reliability.testing import FakeReply

        def test_leaves_two(fake_openai_server):
            fake_openai_server.enqueue(FakeReply.text("never asked for"), FakeReply.error(503))

        def test_leaves_many(fake_openai_server):
            fake_openai_server.enqueue(*[FakeReply.error(500)] * 12, FakeReply.tool_calls([("get_weather", "{}")]))

        @pytest.mark.autogen_reliability(allow_unused=True)
        def test_may_leave_some(fake_openai_server):
            fake_openai_server.enqueue(FakeReply.text("never asked for"))

        def test_failed_anyway(fake_openai_server):
            fake_openai_server.enqueue(FakeReply.text("never asked for"))
            assert 1 == 2, "the test's own failure"

        def test_skipped_on_the_way(fake_openai_server):
            fake_openai_server.enqueue(FakeReply.text("never asked for"))
            pytest.skip("not today")

        @pytest.mark.xfail(reason="known")
        def test_expected_to_fail(fake_openai_server):
            fake_openai_server.enqueue(FakeReply.text("never asked for"))
            assert False
        """
    )
    result.assert_outcomes(passed=3, failed=1, errors=2, skipped=1, xfailed=1)
    text_ = output(result)
    assert "ERROR at teardown of test_leaves_two" in text_
    assert (
        "fake_openai_server: 13 scripted replies were never requested:\n"
        + "  FakeReply.error(500)\n" * 10
        + ("  ... and 3 more\n")
        in text_
    )
    assert "fake_openai_server: 2 scripted replies were never requested:" in text_
    assert "  FakeReply.text('never asked for')\n  FakeReply.error(503)" in text_
    assert f"mark a test that may leave replies unused: {ALLOW_UNUSED_HINT}" in text_
    # A test that failed is not also reported for what it did not get to use.
    assert "ERROR at teardown of test_failed_anyway" not in text_
    assert "the test's own failure" in text_


def test_unused_listing_replies_fail_the_test_at_teardown_as_unused_replies_do(run: Run) -> None:
    result = run(
        """
        import openai
        import pytest
        from autogen_reliability.testing import FakeReply

        def test_leaves_a_listing(fake_openai_server):
            fake_openai_server.enqueue_models(FakeReply.error(503))

        def test_leaves_both(fake_openai_server):
            fake_openai_server.enqueue(FakeReply.text("never asked for"))
            fake_openai_server.enqueue_models(FakeReply.reset(), FakeReply(hold_after_chunks=0))

        def test_uses_its_listing(fake_openai_server):
            fake_openai_server.enqueue_models(FakeReply(delay=0.01))
            with openai.OpenAI(api_key="sk-test", base_url=fake_openai_server.url) as sdk:
                assert [model.id for model in sdk.models.list()] == ["gpt-4o-mini"]

        @pytest.mark.autogen_reliability(allow_unused=True)
        def test_may_leave_some(fake_openai_server):
            fake_openai_server.enqueue(FakeReply.text("never asked for"))
            fake_openai_server.enqueue_models(FakeReply.error(503))
        """
    )
    result.assert_outcomes(passed=4, errors=2)
    text_ = output(result)
    assert "ERROR at teardown of test_leaves_a_listing" in text_
    assert (
        "fake_openai_server: 1 scripted listing reply (enqueue_models) was never requested:\n"
        "  FakeReply.error(503)\n"
        f"Remove it from the script, or mark a test that may leave replies unused: {ALLOW_UNUSED_HINT}"
    ) in text_
    assert "ERROR at teardown of test_leaves_both" in text_
    assert (
        "fake_openai_server: 1 scripted reply was never requested:\n"
        "  FakeReply.text('never asked for')\n"
        "2 scripted listing replies (enqueue_models) were never requested:\n"
        "  FakeReply.reset()\n"
        "  FakeReply(hold_after_chunks=0)\n"
        f"Remove them from the script, or mark a test that may leave replies unused: {ALLOW_UNUSED_HINT}"
    ) in text_


def test_a_request_the_script_did_not_expect_fails_with_its_messages_even_when_swallowed(run: Run) -> None:
    result = run(
        """
        import openai

        async def test_swallows_it(fake_openai_server):
            async with openai.AsyncOpenAI(api_key="sk-test", base_url=fake_openai_server.url) as sdk:
                try:
                    await sdk.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What now?"}],
                    )
                except openai.BadRequestError:
                    pass  # what a team or an over-eager except does

        async def test_fails_of_it(fake_openai_server):
            async with openai.AsyncOpenAI(api_key="sk-test", base_url=fake_openai_server.url) as sdk:
                await sdk.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Anyone there?"}]
                )
        """
    )
    result.assert_outcomes(passed=1, failed=1, errors=1)
    text_ = output(result)
    assert "ERROR at teardown of test_swallows_it" in text_
    assert "fake_openai_server got 1 request its script did not expect (each was answered HTTP 400):" in text_
    assert "request #1:\n  1. system: 'Be brief.'\n  2. user: 'What now?'" in text_
    assert "fake_openai_server.enqueue(...)" in text_
    # A test that failed of it is not failed again at teardown: its report has the request in a section.
    assert "ERROR at teardown of test_fails_of_it" not in text_
    assert "BadRequestError" in text_
    assert re.search(r"-+ requests no script expected -+\nfake_openai_server got 1 request", text_), text_
    assert "  1. user: 'Anyone there?'" in text_


# What pytest-rerunfailures' --reruns 1 does (not installed here): the same item's test protocol once more.
RERUN_FAILED = """
import pytest
from _pytest.runner import runtestprotocol

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    if any(report.failed for report in reports):
        print(f"\\nRERUN {item.name}")
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
"""


def test_a_rerun_starts_clean_of_what_the_failed_run_left(run: Run, pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RERUN_FAILED)
    result = run(
        """
        import http.client, json
        import pytest
        from autogen_reliability.testing import FakeReply

        RUNS = []

        def post(server, content):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body))
            status = conn.getresponse().status
            conn.close()
            return status

        @pytest.mark.parametrize(
            "scope", [pytest.param(scope, marks=pytest.mark.autogen_reliability(server_scope=scope))
                      for scope in ("function", "session")]
        )
        def test_fails_twice(fake_openai_server, scope):
            RUNS.append(scope)
            if RUNS.count(scope) == 1:
                fake_openai_server.enqueue(FakeReply.text("left over"))
                post(fake_openai_server, f"unscripted in the first run ({scope})")  # consumes "left over"
                post(fake_openai_server, f"unscripted in the first run ({scope})")
                assert False, "the first run fails"
            assert (fake_openai_server.pending, fake_openai_server.requests) == (0, [])
            fake_openai_server.enqueue(FakeReply.text("scripted"))
            assert post(fake_openai_server, "scripted in the rerun") == 200
            post(fake_openai_server, f"unscripted in the rerun ({scope})")
            assert False, "the rerun fails too"

        @pytest.mark.parametrize(
            "scope", [pytest.param(scope, marks=pytest.mark.autogen_reliability(server_scope=scope))
                      for scope in ("function", "session")]
        )
        def test_passes_on_the_rerun(fake_openai_server, scope):
            RUNS.append(f"again {scope}")
            if RUNS.count(f"again {scope}") == 1:
                fake_openai_server.enqueue(FakeReply.text("left over"))
                assert False, "the first run fails"
            assert (fake_openai_server.pending, fake_openai_server.requests) == (0, [])
        """,
        "-s",
    )
    text_ = output(result)
    assert text_.count("RERUN test_") == 4, text_
    result.assert_outcomes(passed=2, failed=2)  # what the reruns gave
    # Each rerun's report shows the request the rerun made, once, and none of the first run's.
    for scope in ("function", "session"):
        assert text_.count(f"user: 'unscripted in the rerun ({scope})'") == 1, text_
    assert "user: 'unscripted in the first run" not in text_, text_


def test_the_session_scope_shares_one_server_and_resets_it_between_tests(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_reliability.testing import FakeReply

        pytestmark = pytest.mark.autogen_reliability(server_scope="session")
        PORTS = []

        def test_first(fake_openai_server):
            PORTS.append(fake_openai_server.port)
            fake_openai_server.default = FakeReply.text("for anything")
            fake_openai_server.model = "changed"
            fake_openai_server.enqueue(FakeReply.text("left over"))
            assert fake_openai_server.wait_for_requests(0) == []

        @pytest.mark.autogen_reliability(model="gpt-4o")
        def test_second(fake_openai_server):
            PORTS.append(fake_openai_server.port)
            assert fake_openai_server.port == PORTS[0]
            assert (fake_openai_server.pending, fake_openai_server.requests) == (0, [])
            assert fake_openai_server.default is None
            assert fake_openai_server.model == "gpt-4o"  # the marker's, not what the first test set

        @pytest.mark.autogen_reliability(server_scope="function")
        def test_own_server(fake_openai_server):
            assert fake_openai_server.port not in PORTS
        """
    )
    # The first test left a reply unused: it fails, and the second still starts from a clean server.
    result.assert_outcomes(passed=3, errors=1)
    assert "ERROR at teardown of test_first" in output(result)


# ---------------------------------------------------------------------------------------------- the marker


def test_a_bad_marker_fails_the_test_at_setup_with_what_is_wrong(run: Run) -> None:
    result = run(
        """
        import pytest

        @pytest.mark.autogen_reliability(server_scop="session")
        def test_typo():
            pass

        @pytest.mark.autogen_reliability("session")
        def test_positional(fake_openai_server):
            pass

        @pytest.mark.autogen_reliability(server_scope="module")
        def test_bad_scope(fake_openai_server):
            pass

        @pytest.mark.autogen_reliability(allow_unused="yes")
        def test_bad_flag():
            pass

        @pytest.mark.autogen_reliability(model="")
        def test_no_model():
            pass
        """,
        "--strict-markers",  # the marker is registered: only its options are refused
    )
    result.assert_outcomes(errors=5)
    text_ = output(result)
    for expected in [
        "@pytest.mark.autogen_reliability(...) unknown option server_scop; "
        "known: server_scope, allow_unused, model, project",
        "@pytest.mark.autogen_reliability(...) takes keyword options only, got ('session',)",
        "@pytest.mark.autogen_reliability(...) server_scope must be 'function' or 'session', got 'module'",
        "@pytest.mark.autogen_reliability(...) allow_unused must be True or False, got 'yes'",
        "@pytest.mark.autogen_reliability(...) model must be a non-empty string, got ''",
    ]:
        assert expected in text_


def test_markers_on_the_module_class_and_test_merge_the_closest_winning(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_reliability.testing._pytest_fixtures import MarkerOptions, marker_options

        pytestmark = pytest.mark.autogen_reliability(model="gpt-4o", project="module")

        @pytest.mark.autogen_reliability(project="class", allow_unused=True)
        class TestTeam:
            @pytest.mark.autogen_reliability(project="test")
            def test_options(self, request):
                assert marker_options(request.node) == MarkerOptions(
                    server_scope="function", allow_unused=True, model="gpt-4o", project="test"
                )

        def test_defaults_without_a_marker_of_its_own(request):
            assert marker_options(request.node) == MarkerOptions(model="gpt-4o", project="module")
        """
    )
    result.assert_outcomes(passed=2)


# ---------------------------------------------------------------------------------------------- scripted_client


@needs_scripted
def test_scripted_client_makes_clients_of_the_markers_model(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_core.models import UserMessage

        @pytest.mark.autogen_reliability(model="gpt-4o")
        async def test_it(scripted_client):
            client = scripted_client(["Hello!", {"answer": 42}])
            assert client.model == "gpt-4o"
            first = await client.create([UserMessage(content="Hi", source="user")])
            second = await client.create([UserMessage(content="And?", source="user")])
            assert (first.content, second.content) == ("Hello!", '{"answer": 42}')
            assert client.remaining == [] and len(client.requests) == 2
            assert scripted_client(["x"], model="other").model == "other"
            await scripted_client(["x"], model="other").create([UserMessage(content="Hi", source="user")])
        """
    )
    result.assert_outcomes(passed=1, errors=1)  # the first "x" client was never called
    assert "script item never used" in output(result)


@needs_scripted
def test_unused_script_items_fail_at_teardown_naming_the_opt_out(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_core.models import UserMessage

        async def test_leaves_one(scripted_client):
            client = scripted_client(["used", "never used"])
            await client.create([UserMessage(content="Hi", source="user")])

        @pytest.mark.autogen_reliability(allow_unused=True)
        def test_may_leave_some(scripted_client):
            scripted_client(["never used"])
        """
    )
    result.assert_outcomes(passed=2, errors=1)
    text_ = output(result)
    assert "ERROR at teardown of test_leaves_one" in text_
    assert "1 script item never used:\n  'never used'" in text_
    assert f"unused: {ALLOW_UNUSED_HINT}" in text_


@needs_scripted
def test_a_request_the_script_did_not_expect_fails_with_its_messages(run: Run) -> None:
    result = run(
        """
        from autogen_core.models import SystemMessage, UserMessage

        async def test_raised(scripted_client):
            client = scripted_client(["only answer"])
            await client.create([UserMessage(content="Hi", source="user")])
            await client.create([SystemMessage(content="Be brief."), UserMessage(content="What now?", source="user")])

        async def test_swallowed(scripted_client):
            client = scripted_client([])
            try:
                await client.create([UserMessage(content="Anyone?", source="user")])
            except AssertionError:
                pass  # what a team or an over-eager except does
        """
    )
    result.assert_outcomes(passed=1, failed=1, errors=1)
    text_ = output(result)
    # Raised: the test fails with the client's error, and its report has the section with the messages.
    assert "UnexpectedRequestError" in text_
    assert "ERROR at teardown of test_raised" not in text_
    assert re.search(
        r"-+ requests no script expected -+\n"
        r"the scripted client \(.*\) got a request its script did not expect: request #2 \(create\(\)\)",
        text_,
    ), text_
    assert "Be brief." in text_
    # Swallowed: the test passed, and fails at teardown.
    assert "ERROR at teardown of test_swallowed" in text_
    assert "got a request its script did not expect: request #1 (create()), whose messages were:" in text_
    assert "Anyone?" in text_


# ---------------------------------------------------------------------------------------------- usage_store


def test_usage_store_is_fresh_per_test_and_at_the_latest_schema(run: Run) -> None:
    result = run(
        """
        from autogen_reliability.storage import current_revision, head_revision

        URLS = []

        def test_first(usage_store):
            assert current_revision(usage_store.engine) == head_revision()
            assert usage_store.engine.dialect.name == "sqlite"
            assert usage_store.events() == []
            URLS.append(usage_store.url)

        def test_second(usage_store):
            assert usage_store.url != URLS[0]
        """
    )
    result.assert_outcomes(passed=2)


def test_usage_store_on_postgresql_is_a_schema_per_test_dropped_after(
    run: Run, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DB_URL_ENV, pg_admin_url)
    result = run(
        """
        from sqlalchemy import text
        from autogen_reliability.storage import current_revision, head_revision

        def test_first(usage_store):
            assert usage_store.engine.dialect.name == "postgresql"
            assert current_revision(usage_store.engine) == head_revision()
            with usage_store.engine.connect() as connection:
                print("SCHEMA", connection.execute(text("SELECT current_schema()")).scalar())

        def test_second(usage_store):
            with usage_store.engine.connect() as connection:
                print("SCHEMA", connection.execute(text("SELECT current_schema()")).scalar())
        """,
        "-rP",  # the passed tests' output, printed in the summary
    )
    result.assert_outcomes(passed=2)
    schemas = [line.split()[1] for line in result.outlines if line.startswith("SCHEMA ")]
    assert len(set(schemas)) == 2
    assert all(name.startswith("ar_test_") for name in schemas)
    engine = create_engine(pg_admin_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            left = connection.execute(
                text("SELECT schema_name FROM information_schema.schemata WHERE schema_name = ANY(:names)"),
                {"names": schemas},
            ).all()
    finally:
        engine.dispose()
    assert left == []


def test_a_test_database_url_that_is_not_postgresql_is_refused(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DB_URL_ENV, "sqlite:///somewhere.db")
    result = run("def test_it(usage_store): pass")
    result.assert_outcomes(errors=1)
    assert f"{DB_URL_ENV} must be a PostgreSQL URL" in output(result)


def test_a_test_database_that_cannot_be_reached_fails_in_one_line_without_the_password(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:  # a port nothing listens on: the connection is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv(DB_URL_ENV, f"postgresql+psycopg://app:hunter2@127.0.0.1:{port}/db")
    result = run("def test_it(usage_store): pass")
    result.assert_outcomes(errors=1)
    text_ = output(result)
    assert "hunter2" not in text_
    assert f"cannot use the test database postgresql+psycopg://app:***@127.0.0.1:{port}/db ({DB_URL_ENV}): " in text_
    assert "Connection refused" in text_
    # The reason alone: no frames of SQLAlchemy and psycopg (their locals hold the password), no chained error.
    assert "Traceback" not in text_
    assert "During handling" not in text_
    assert "conninfo" not in text_


# ---------------------------------------------------------------------------------------------- reliable_client, usage

_PRICES = 'PricingTable({"models": {"gpt-4o-mini": {"input": "1", "output": "2"}}})'  # USD per million tokens


def test_reliable_client_records_each_attempt_in_the_tests_session_without_waiting(run: Run) -> None:
    testing_before = is_testing()
    result = run(
        f"""
        from decimal import Decimal

        import pytest
        from autogen_core.models import UserMessage
        from autogen_reliability.accounting import PricingTable
        from autogen_reliability.retry import is_testing
        from autogen_reliability.testing import FakeReply, FakeUsage

        @pytest.mark.autogen_reliability(project="acme")
        async def test_survives_a_429(fake_openai_server, reliable_client, usage):
            fake_openai_server.enqueue(
                FakeReply.error(429, headers={{"retry-after": "30"}}),  # test mode: not waited for
                FakeReply.text("Hello!", usage=FakeUsage(prompt_tokens=1000, completion_tokens=500)),
            )
            client = reliable_client(pricing={_PRICES})
            result = await client.create([UserMessage(content="Hi", source="user")])

            assert result.content == "Hello!"
            assert is_testing()
            usage.assert_calls(1)
            usage.assert_calls(1, outcome="ok")  # judged by its last attempt
            usage.assert_calls(0, outcome="error")
            usage.assert_attempts(2)
            usage.assert_attempts(1, outcome="error", http_status=429, error_kind="rate_limit")
            assert usage.total_cost() == Decimal("0.002")  # 1000 x $1/M + 500 x $2/M
            assert usage.total_cost(outcome="error") == 0
            usage.assert_cost_below("0.0021")
            usage.assert_cost_below(0.01)
            usage.assert_no_unpriced()
            rows = usage.rows()
            assert {{(row.session, row.project) for row in rows}} == {{(usage.session, "acme")}}
            assert usage.session == "test_user.py::test_survives_a_429"
            assert [row.attempt for row in usage.rows(outcome="ok")] == [2]
        """
    )
    result.assert_outcomes(passed=1)
    assert is_testing() == testing_before  # the fixture put test mode back as it found it


def test_a_failed_usage_assertion_shows_the_recorded_rows(run: Run) -> None:
    result = run(
        f"""
        from autogen_core.models import UserMessage
        from autogen_reliability.accounting import PricingTable
        from autogen_reliability.testing import FakeReply, FakeUsage

        async def call(fake_openai_server, reliable_client):
            fake_openai_server.enqueue(
                FakeReply.error(503),
                FakeReply.text("Hello!", usage=FakeUsage(prompt_tokens=1000, completion_tokens=500)),
            )
            await reliable_client(pricing={_PRICES}, agent="writer").create([UserMessage(content="Hi", source="user")])

        async def test_calls(fake_openai_server, reliable_client, usage):
            await call(fake_openai_server, reliable_client)
            usage.assert_calls(2, agent="writer")

        async def test_attempts(fake_openai_server, reliable_client, usage):
            await call(fake_openai_server, reliable_client)
            usage.assert_attempts(1)

        async def test_cost(fake_openai_server, reliable_client, usage):
            await call(fake_openai_server, reliable_client)
            usage.assert_cost_below("0.002")

        def test_filter(usage):
            usage.rows(agnet="writer")
        """
    )
    result.assert_outcomes(failed=4)
    text_ = output(result)
    assert "expected 2 calls with agent='writer', recorded 1 (a call is judged by its last attempt)" in text_
    assert "expected 1 attempt, recorded 2" in text_
    assert "the cost is $0.002, not below $0.002" in text_
    table = [
        "Recorded rows (2):",
        "call  attempt  agent   model        outcome  error           tokens    cost USD",
        "1     1        writer  gpt-4o-mini  error    overloaded 503  0+0       0",
        "1     2        writer  gpt-4o-mini  ok       -               1000+500  0.002",
    ]
    assert "\n".join(f"E       {line}".rstrip() for line in table) in text_, text_
    assert "'agnet' is not a field of the usage rows; filter on one of: call_id, attempt," in text_


def test_unpriced_rows_fail_the_price_assertions(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_core.models import UserMessage
        from autogen_ext.models.openai import OpenAIChatCompletionClient
        from autogen_reliability.testing import FakeReply

        @pytest.fixture
        async def called(fake_openai_server, reliable_client):
            fake_openai_server.enqueue(FakeReply.text("Hello!"))
            inner = OpenAIChatCompletionClient(
                model="acme-llm", api_key="sk-test", base_url=fake_openai_server.url,
                model_info={"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
                            "structured_output": False},
            )
            await reliable_client(inner).create([UserMessage(content="Hi", source="user")])

        def test_no_unpriced(called, usage):
            usage.assert_no_unpriced()

        def test_cost_below(called, usage):
            usage.assert_cost_below(1)

        def test_total_cost(called, usage):
            assert usage.total_cost() == 0
            usage.assert_calls(1, model="acme-llm")
        """
    )
    result.assert_outcomes(passed=1, failed=2)
    text_ = output(result)
    assert "1 row is unpriced (models 'acme-llm'): give the wrapper a PricingTable with prices for them" in text_
    assert "cannot tell whether the cost is below $1: 1 row is unpriced (models 'acme-llm')" in text_
    assert re.search(r"^E +1 +1 +- +acme-llm +ok +- +\d+\+\d+ +unpriced$", text_, re.MULTILINE), text_


def test_reliable_client_of_a_model_no_price_list_knows_has_every_capability_and_records_unpriced(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_agentchat.agents import AssistantAgent
        from autogen_reliability.testing import FakeReply
        from autogen_reliability.validation import ValidationPolicy

        async def add(a: int, b: int) -> int:
            \"\"\"Add two integers.\"\"\"
            return a + b

        @pytest.mark.autogen_reliability(model="acme-llm")
        async def test_unknown_model(fake_openai_server, reliable_client, usage):
            fake_openai_server.enqueue(
                FakeReply.tool_calls([("add", {"a": 19, "b": "x"})]),  # refused by validation, asked again
                FakeReply.tool_calls([("add", {"a": 19, "b": 23})]),
                FakeReply.text("42."),
            )
            client = reliable_client(validation=ValidationPolicy())
            info = client.model_info
            assert (info["function_calling"], info["json_output"], info["structured_output"], info["vision"]) == (
                True, True, True, True
            )
            agent = AssistantAgent("calculator", model_client=client, tools=[add], reflect_on_tool_use=True)
            result = await agent.run(task="What is 19 + 23?")
            assert result.messages[-1].to_text() == "42."
            usage.assert_calls(2, model="acme-llm", outcome="ok")
            usage.assert_attempts(3, model="acme-llm", cost_nanousd=None)
        """
    )
    result.assert_outcomes(passed=1)


def test_the_clients_reliable_client_made_are_closed_in_their_event_loop(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_core.models import UserMessage
        from autogen_reliability.providers._clients import sdk_client_of
        from autogen_reliability.testing import FakeReply

        SDKS = []

        async def use(fake_openai_server, reliable_client):
            fake_openai_server.enqueue(FakeReply.text("Hello!"))
            client = reliable_client()
            await client.create([UserMessage(content="Hi", source="user")])
            SDKS.append(sdk_client_of(client.inner))
            assert not SDKS[-1].is_closed()

        async def test_function_loop(fake_openai_server, reliable_client):
            await use(fake_openai_server, reliable_client)

        @pytest.mark.asyncio(loop_scope="module")
        async def test_module_loop(fake_openai_server, reliable_client):
            await use(fake_openai_server, reliable_client)  # the loop outlives the test: closed at teardown

        def test_both_closed():
            assert [sdk.is_closed() for sdk in SDKS] == [True, True]
        """
    )
    result.assert_outcomes(passed=3)


def test_a_client_made_outside_an_event_loop_is_closed_in_the_loop_that_used_it(run: Run) -> None:
    # An agent built in a sync fixture (or a sync test that calls asyncio.run) makes its client before any loop
    # runs. Left open, its connection is closed by the garbage collector after its loop: a ResourceWarning
    # that -W error turns into the failure of whichever test comes next, or of the run once all passed.
    result = run(
        """
        import asyncio
        import pytest
        from autogen_agentchat.agents import AssistantAgent
        from autogen_core.models import UserMessage
        from autogen_reliability.providers._clients import sdk_client_of
        from autogen_reliability.testing import FakeReply

        SDKS = []

        @pytest.fixture
        def writer(reliable_client):
            model = reliable_client(agent="writer")
            SDKS.append(sdk_client_of(model.inner))
            return AssistantAgent("writer", model_client=model)

        async def test_agent_from_a_sync_fixture(writer, fake_openai_server, usage):
            fake_openai_server.enqueue(FakeReply.text("Done."))
            result = await writer.run(task="Write.")
            assert result.messages[-1].content == "Done."
            usage.assert_calls(1, agent="writer")

        def test_asyncio_run_in_a_sync_test(fake_openai_server, reliable_client):
            fake_openai_server.enqueue(FakeReply.text("Hello!"))
            client = reliable_client()
            SDKS.append(sdk_client_of(client.inner))
            result = asyncio.run(client.create([UserMessage(content="Hi", source="user")]))
            assert result.content == "Hello!"

        def test_made_but_never_used(reliable_client):
            reliable_client()  # no loop ever used it: nothing to close, nothing to fail

        def test_both_closed():
            assert [sdk.is_closed() for sdk in SDKS] == [True, True]
        """
    )
    result.assert_outcomes(passed=4)


def test_a_team_wrapped_by_the_test_records_through_usage_recorder(run: Run) -> None:
    result = run(
        """
        from autogen_agentchat.agents import AssistantAgent
        from autogen_ext.models.openai import OpenAIChatCompletionClient
        from autogen_reliability import reliable
        from autogen_reliability.testing import FakeReply

        async def test_agent(fake_openai_server, usage):
            fake_openai_server.enqueue(FakeReply.error(429), FakeReply.text("Done."))
            model = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test", base_url=fake_openai_server.url)
            writer = reliable(AssistantAgent("writer", model_client=model), recorder=usage.recorder)
            result = await writer.run(task="Write.")
            assert result.messages[-1].content == "Done."
            usage.assert_calls(1, agent="writer", outcome="ok", session=usage.session)
            usage.assert_attempts(2, agent="writer")
        """
    )
    result.assert_outcomes(passed=1)


def test_total_cost_is_an_exact_decimal(run: Run) -> None:
    # A Decimal summed from integer nano-USD: 0.1 and 0.2 per million tokens would not add up exactly in floats.
    result = run(
        """
        from decimal import Decimal
        from autogen_core.models import UserMessage
        from autogen_reliability.accounting import PricingTable
        from autogen_reliability.testing import FakeReply, FakeUsage

        async def test_sum(fake_openai_server, reliable_client, usage):
            prices = PricingTable({"models": {"gpt-4o-mini": {"input": "0.1", "output": "0.2"}}})
            client = reliable_client(pricing=prices)
            for _ in range(3):
                fake_openai_server.enqueue(FakeReply.text("x", usage=FakeUsage(prompt_tokens=1, completion_tokens=1)))
                await client.create([UserMessage(content="Hi", source="user")])
            assert usage.total_cost() == Decimal("0.0000009")  # 3 x (0.1 + 0.2) per million: 0.3 x 3 / 1e6
            assert isinstance(usage.total_cost(), Decimal)
        """
    )
    result.assert_outcomes(passed=1)


def test_the_usage_assertions_refuse_bad_arguments(run: Run) -> None:
    result = run(
        """
        import pytest

        def test_it(usage):
            with pytest.raises(TypeError, match="the expected count must be an int >= 0, got -1"):
                usage.assert_calls(-1)
            with pytest.raises(TypeError, match="got True"):
                usage.assert_attempts(True)
            with pytest.raises(TypeError, match="usd must be a finite amount >= 0, got 'NaN'"):
                usage.assert_cost_below("NaN")
            with pytest.raises(TypeError, match="usd must be an amount of dollars, got 'ten'"):
                usage.assert_cost_below("ten")
            usage.assert_calls(0)
            usage.assert_cost_below(0.000001)  # nothing recorded costs $0
        """
    )
    result.assert_outcomes(passed=1)


def test_the_usage_filters_take_error_kinds_and_refuse_values_no_row_can_have(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_core.models import UserMessage
        from autogen_reliability import ErrorKind
        from autogen_reliability.testing import faults

        async def test_it(scripted_client, reliable_client, usage):
            client = reliable_client(scripted_client([faults.rate_limit(), "Hello!"]))
            await client.create([UserMessage(content="Hi", source="user")])
            usage.assert_attempts(1, error_kind=ErrorKind.RATE_LIMIT)
            usage.assert_attempts(1, error_kind="rate_limit")
            usage.assert_attempts(1, error_kind=None)
            usage.assert_calls(0, error_kind=ErrorKind.RATE_LIMIT)  # the call got past it
            assert [row.attempt for row in usage.rows(error_kind=ErrorKind.RATE_LIMIT)] == [1]
            assert usage.total_cost(outcome="error", error_kind=ErrorKind.RATE_LIMIT) == 0
            usage.assert_no_unpriced(error_kind=ErrorKind.RATE_LIMIT)
            usage.assert_cost_below(1, error_kind=ErrorKind.RATE_LIMIT)
            with pytest.raises(TypeError, match=r"error_kind='rate_limt' is not an ErrorKind; one of: rate_limit, "):
                usage.assert_attempts(0, error_kind="rate_limt")
            with pytest.raises(TypeError, match=r"error_kind=429 is not an ErrorKind; one of: rate_limit, "):
                usage.rows(error_kind=429)
            with pytest.raises(TypeError, match=r"outcome='failed' is not an outcome; one of: ok, error, invalid, can"):
                usage.assert_calls(0, outcome="failed")
            with pytest.raises(TypeError, match=r"outcome=None is not an outcome"):
                usage.total_cost(outcome=None)
            with pytest.raises(TypeError, match=r"outcome=<ErrorKind.CANCELLED: 'cancelled'> is not an outcome"):
                usage.assert_no_unpriced(outcome=ErrorKind.CANCELLED)
            with pytest.raises(TypeError, match=r"error_kind='overload' is not an ErrorKind"):
                usage.assert_cost_below(1, error_kind="overload")

        async def test_a_failed_assertion_shows_the_kind_as_rows_hold_it(scripted_client, reliable_client, usage):
            client = reliable_client(scripted_client([faults.rate_limit(), "Hello!"]))
            await client.create([UserMessage(content="Hi", source="user")])
            usage.assert_attempts(2, error_kind=ErrorKind.RATE_LIMIT)
        """
    )
    result.assert_outcomes(passed=1, failed=1)
    assert "expected 2 attempts with error_kind='rate_limit', recorded 1" in output(result)


def test_a_usage_filter_of_a_type_the_field_never_holds_is_refused(run: Run) -> None:
    result = run(
        """
        import pytest
        from autogen_core.models import UserMessage
        from autogen_reliability.testing import faults

        async def test_it(scripted_client, reliable_client, usage):
            client = reliable_client(scripted_client([faults.rate_limit(), "Hello!"]), agent="writer")
            await client.create([UserMessage(content="Hi", source="user")])
            usage.assert_attempts(1, http_status=429, agent="writer", cached_tokens=None, attempt=1)
            with pytest.raises(TypeError, match=r"http_status='429' cannot match: the rows hold an int or None there"):
                usage.assert_attempts(1, http_status="429")
            with pytest.raises(TypeError, match=r"agent=3 cannot match: the rows hold a str or None there"):
                usage.rows(agent=3)
            with pytest.raises(TypeError, match=r"attempt=None cannot match: the rows hold an int there"):
                usage.assert_calls(0, attempt=None)
            with pytest.raises(TypeError, match=r"streamed='no' cannot match: the rows hold a bool there"):
                usage.total_cost(streamed="no")
        """
    )
    result.assert_outcomes(passed=1)


def test_a_tags_or_id_filter_of_a_type_the_rows_never_hold_is_refused(run: Run) -> None:
    # tags="tenant=t-42" (the X-Usage-Tags form) and call_id as a string counted nothing: assert_attempts(0, ...)
    # passed whatever the rows held, although the docs promise a TypeError for a filter no row can match.
    result = run(
        """
        import pytest
        from autogen_core.models import UserMessage
        from autogen_reliability import usage_scope

        async def test_it(scripted_client, reliable_client, usage):
            client = reliable_client(scripted_client(["Hello!"]))
            with usage_scope(tags={"tenant": "t-42"}):
                await client.create([UserMessage(content="Hi", source="user")])
            [row] = usage.rows(tags={"tenant": "t-42"})
            usage.assert_attempts(1, call_id=row.call_id, tags={})
            with pytest.raises(TypeError, match=r"tags='tenant=t-42' cannot match: the rows hold a mapping of str"):
                usage.assert_attempts(0, tags="tenant=t-42")
            with pytest.raises(TypeError, match=r"tags={'tenant': 42} cannot match: the rows hold a mapping of str"):
                usage.rows(tags={"tenant": 42})
            with pytest.raises(TypeError, match=r"call_id='[0-9a-f]{32}' cannot match: the rows hold a UUID there"):
                usage.assert_calls(0, call_id=row.call_id.hex)
            with pytest.raises(TypeError, match=r"started_at='2026-01-01' cannot match: the rows hold a datetime"):
                usage.assert_attempts(0, started_at="2026-01-01")
        """
    )
    result.assert_outcomes(passed=1)


def test_session_names_longer_than_the_ledger_takes_are_cut_and_kept_apart(run: Run) -> None:
    result = run(
        """
        import pytest

        @pytest.mark.parametrize("case", ["a", "b"], ids=["a" * 300, "b" * 300])
        def test_it(usage, case):
            print("SESSION", len(usage.session), usage.session[-13:])
        """,
        "-rP",  # the passed tests' output, printed in the summary
    )
    result.assert_outcomes(passed=2)
    sessions = [line.split()[1:] for line in result.outlines if line.startswith("SESSION")]
    assert [length for length, _ in sessions] == ["200", "200"]
    assert sessions[0][1] != sessions[1][1]
    assert sessions[0][1].startswith("~")


# ---------------------------------------------------------------------------------------------- docs/testing.md

_DOC_MARKER = (
    "<!-- not run: a pytest test module; tests/test_pytest_plugin.py runs each such block of this page with pytest -->"
)
DOC_MODULES = re.findall(
    re.escape(_DOC_MARKER) + r"\n```python\n(.*?)\n```", (ROOT / "docs" / "testing.md").read_text(), re.DOTALL
)


@pytest.mark.parametrize("source", DOC_MODULES, ids=[f"block{number}" for number in range(1, len(DOC_MODULES) + 1)])
def test_the_test_modules_of_the_testing_page_pass(run: Run, source: str) -> None:
    if "scripted_client" in source and not HAS_SCRIPTED:
        pytest.skip("the block uses scripted_client: " + str(needs_scripted.kwargs["reason"]))
    result = run(source)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1, output(result)
    assert set(outcomes) <= {"passed", "warnings"}, output(result)


def test_the_testing_page_has_test_modules_to_run() -> None:
    assert len(DOC_MODULES) >= 3
