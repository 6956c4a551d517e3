"""The plugin's network guard (``--block-llm-network``) and the ``live_llm`` marker, driven through ``pytester``.

Each test runs pytest in a subprocess on a small test file, with our plugin loaded
as a user gets it: through the ``pytest11`` entry point.

The inner runs' ``conftest.py`` replaces ``socket.getaddrinfo`` *before* the guard
is installed with a resolver that knows only loopback and writes down every name
it was asked for: so the tests can tell that a blocked host was never looked up
(the guard refused it first, no DNS query left), and a host the guard lets
through fails with the fake resolver's error instead of reaching a real one. No
test here sends a packet beyond loopback, whatever the guard does.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# Installed at import time of the inner run's conftest, i.e. before pytest_configure installs the guard.
RESOLVER_CONFTEST = '''
import socket

import pytest

LOOKED_UP = []
_real_getaddrinfo = socket.getaddrinfo


def _loopback_only_resolver(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    LOOKED_UP.append(name)
    if name in (None, "localhost", "127.0.0.1", "::1"):
        return _real_getaddrinfo(host, port, *args, **kwargs)
    raise socket.gaierror(socket.EAI_NONAME, f"fake resolver: no such host {name}")


socket.getaddrinfo = _loopback_only_resolver


@pytest.fixture
def looked_up():
    """The names resolved (past the guard) during the test."""
    LOOKED_UP.clear()
    return LOOKED_UP
'''

BLOCKED_TESTS = """
import asyncio

import openai
import pytest
from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

MESSAGES = [{"role": "user", "content": "Hi"}]


def test_sync_sdk_fails_at_once(looked_up):
    client = openai.OpenAI(api_key="sk-test", base_url="https://api.openai.com/v1", timeout=5)
    # pytest.fail's exception, not openai.APIConnectionError: the SDK did not catch it, so it did not retry.
    with pytest.raises(pytest.fail.Exception, match="blocked a connection to api.openai.com:443") as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert '@pytest.mark.allow_llm_host("api.openai.com")' in str(caught.value)
    assert "--allow-llm-host=api.openai.com" in str(caught.value)
    assert looked_up == []  # refused before any DNS lookup


def test_autogen_async_client_fails_at_once(looked_up):
    async def call():
        client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-test", timeout=5)
        try:
            await client.create([UserMessage(content="Hi", source="user")])
        finally:
            await client.close()

    with pytest.raises(pytest.fail.Exception, match="blocked a connection to api.openai.com:443"):
        asyncio.run(call())
    assert looked_up == []


def test_an_ip_address_is_refused_at_connect(looked_up):
    import socket

    sock = socket.socket()
    try:
        with pytest.raises(pytest.fail.Exception, match=r"blocked a connection to 203\\.0\\.113\\.7:443"):
            sock.connect(("203.0.113.7", 443))
    finally:
        sock.close()


def test_reported_as_the_failure():
    openai.OpenAI(api_key="sk-test", base_url="https://api.anthropic.com/v1", timeout=5).models.list()
"""


def test_block_llm_network_fails_a_provider_call_at_once_naming_the_host(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RESOLVER_CONFTEST)
    pytester.makepyfile(test_blocked=BLOCKED_TESTS)

    result = pytester.runpytest_subprocess("--block-llm-network", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=3, failed=1)
    # The guard's message is the failure pytest reports, not "Connection error." after the SDK's retries.
    result.stdout.fnmatch_lines(
        [
            "*Failed: --block-llm-network blocked a connection to api.anthropic.com:443: tests may reach "
            "loopback hosts only*",
            '*@pytest.mark.allow_llm_host("api.anthropic.com") on the test*',
        ]
    )
    result.stdout.no_fnmatch_line("*APIConnectionError*")


LOOPBACK_TESTS = """
import openai
import pytest

from autogen_reliability.testing import FakeOpenAIServer, FakeReply


def test_fake_server_on_loopback_works():
    with FakeOpenAIServer() as server:
        server.enqueue(FakeReply.text("still here"), FakeReply.text("and by name"))
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        assert completion.choices[0].message.content == "still here"
        # by name too
        client = openai.OpenAI(api_key="sk-test", base_url=f"http://localhost:{server.port}/v1", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        assert server.request_count == 2


def test_other_hosts_still_blocked():
    import socket

    with pytest.raises(pytest.fail.Exception, match="db.internal"):
        socket.getaddrinfo("db.internal", 5432)
"""


def test_loopback_stays_reachable(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RESOLVER_CONFTEST)
    pytester.makepyfile(test_loopback=LOOPBACK_TESTS)

    result = pytester.runpytest_subprocess("--block-llm-network", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)


ALLOWED_TESTS = """
import socket

import pytest


def _reaches_the_resolver(host, looked_up):
    # Past the guard, the (fake) resolver answers: the host was allowed.
    with pytest.raises(socket.gaierror, match="fake resolver"):
        socket.getaddrinfo(host, 443)
    assert looked_up == [host]


def test_allowed_by_option(looked_up):
    _reaches_the_resolver("models.example.test", looked_up)


def test_allowed_by_option_pattern(looked_up):
    _reaches_the_resolver("eu.gateway.example.test", looked_up)


def test_allowed_by_ini(looked_up):
    _reaches_the_resolver("db.internal", looked_up)


@pytest.mark.allow_llm_host("api.openai.com", "other.example.test")
def test_allowed_by_marker(looked_up):
    _reaches_the_resolver("API.OpenAI.com.", looked_up)


def test_marker_lasts_one_test(looked_up):
    with pytest.raises(pytest.fail.Exception, match="api.openai.com"):
        socket.getaddrinfo("api.openai.com", 443)
    assert looked_up == []
"""


def test_hosts_allowed_by_option_ini_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RESOLVER_CONFTEST)
    pytester.makeini("[pytest]\nblock_llm_network = true\nallow_llm_hosts =\n    db.internal\n")
    pytester.makepyfile(test_allowed=ALLOWED_TESTS)

    result = pytester.runpytest_subprocess(
        "--allow-llm-host=models.example.test,*.gateway.example.test", "-p", "no:cacheprovider", "-v"
    )

    result.assert_outcomes(passed=5)


SWITCH_TESTS = """
import socket

import pytest


def test_lookup(looked_up):
    with pytest.raises(socket.gaierror, match="fake resolver"):
        socket.getaddrinfo("api.openai.com", 443)
    assert looked_up == ["api.openai.com"]
"""


@pytest.mark.parametrize(
    ("ini", "args", "blocked"),
    [
        ("", (), False),
        ("[pytest]\nblock_llm_network = true\n", (), True),
        ("[pytest]\nblock_llm_network = true\n", ("--no-block-llm-network",), False),
        ("", ("--block-llm-network",), True),
    ],
    ids=["off-by-default", "ini", "no-flag-overrides-ini", "flag"],
)
def test_guard_is_off_unless_asked_for(
    pytester: pytest.Pytester, ini: str, args: tuple[str, ...], blocked: bool
) -> None:
    pytester.makeconftest(RESOLVER_CONFTEST)
    if ini:
        pytester.makeini(ini)
    pytester.makepyfile(test_switch=SWITCH_TESTS)

    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")

    if blocked:
        result.assert_outcomes(failed=1)
        switch = "block_llm_network (ini)" if ini else "--block-llm-network"
        result.stdout.fnmatch_lines([f"*Failed: {switch} blocked a connection to api.openai.com:443*"])
    else:
        result.assert_outcomes(passed=1)


LIVE_TESTS = """
import pytest


@pytest.mark.live_llm
def test_openai_by_default():
    pass


@pytest.mark.live_llm(provider="anthropic")
def test_anthropic():
    pass


@pytest.mark.live_llm("azure")
def test_azure():
    pass


@pytest.mark.live_llm(provider="openai", env="MY_GATEWAY_KEY")
def test_own_variable():
    pass
"""


def test_live_llm_skips_without_the_key_naming_the_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY", "MY_GATEWAY_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")  # empty counts as missing
    monkeypatch.setenv("COLUMNS", "300")  # -v cuts skip reasons to the terminal's width
    pytester.makepyfile(test_live=LIVE_TESTS)

    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider")

    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines_random(
        [
            "*::test_openai_by_default SKIPPED (live_llm: OPENAI_API_KEY is not set (the openai API key this test*",
            "*::test_anthropic SKIPPED (live_llm: ANTHROPIC_API_KEY is not set (the anthropic API key this test*",
            "*::test_azure SKIPPED (live_llm: AZURE_OPENAI_API_KEY is not set*",
            "*::test_own_variable SKIPPED (live_llm: MY_GATEWAY_KEY is not set*",
        ]
    )


def test_live_llm_runs_with_the_key_and_not_under_the_guard(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-test-not-a-key")
    monkeypatch.setenv("MY_GATEWAY_KEY", "gw-test")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "300")
    pytester.makepyfile(test_live=LIVE_TESTS)

    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=2)

    guarded = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider", "--block-llm-network")
    guarded.assert_outcomes(skipped=4)
    guarded.stdout.fnmatch_lines_random(
        [
            "*::test_openai_by_default SKIPPED (live_llm: the network is blocked by --block-llm-network; "
            "run with --no-block-llm-network to reach openai)*",
            "*::test_anthropic SKIPPED (live_llm: ANTHROPIC_API_KEY is not set*",
        ]
    )


def test_live_llm_with_bad_arguments_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.live_llm("openai", "anthropic")
        def test_two_providers():
            pass

        @pytest.mark.live_llm("anthropic", provider="openai")
        def test_provider_given_twice():
            pass
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(errors=2)
    takes = "live_llm takes one provider name, as its argument or provider=, and env=VARIABLE (non-empty strings)"
    assert f"{takes}, got ('openai', 'anthropic') {{}}" in result.outlines
    assert f"{takes}, got ('anthropic',) {{'provider': 'openai'}}" in result.outlines


BAD_ALLOW_TESTS = """
import pytest


@pytest.mark.allow_llm_host(host="api.openai.com")
def test_keyword():
    pass


@pytest.mark.allow_llm_host
def test_no_host():
    pass


@pytest.mark.allow_llm_host(["api.openai.com"])
def test_a_list():
    pass


@pytest.mark.allow_llm_host("api.openai.com", "")
def test_an_empty_name():
    pass
"""


@pytest.mark.parametrize("args", [(), ("--block-llm-network",)], ids=["guard-off", "guard-on"])
def test_allow_llm_host_with_bad_arguments_fails_the_test(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    # Failed whether or not the guard is on: a marker that allows nothing must not wait for the day it is.
    pytester.makepyfile(test_bad=BAD_ALLOW_TESTS)

    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")

    result.assert_outcomes(errors=4)
    takes = 'allow_llm_host takes host names as arguments, @pytest.mark.allow_llm_host("api.example.com", ...)'
    assert f"{takes}, got () {{'host': 'api.openai.com'}}" in result.outlines
    assert f"{takes}, got () {{}}" in result.outlines
    assert f"{takes}, got (['api.openai.com'],) {{}}" in result.outlines
    assert f"{takes}, got ('api.openai.com', '') {{}}" in result.outlines


def test_markers_and_options_are_registered(pytester: pytest.Pytester) -> None:
    markers = pytester.runpytest_subprocess("--markers", "-p", "no:cacheprovider")
    markers.stdout.fnmatch_lines_random(["@pytest.mark.live_llm(provider='openai', env=None)*", "*allow_llm_host*"])
    helptext = pytester.runpytest_subprocess("--help", "-p", "no:cacheprovider")
    helptext.stdout.fnmatch_lines_random(["*--block-llm-network*", "*--no-block-llm-network*", "*--allow-llm-host*"])
