"""Cassettes: ``pytest --llm-record`` against a provider, then the replay through FakeOpenAIServer.

The "real" provider while recording is a second `FakeOpenAIServer`, reached the
way a user's test reaches OpenAI: through ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY`` in the environment. The tests under test run in a pytest
subprocess (``pytester``) with our plugin loaded through its entry point.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from autogen_reliability.retry import retry_after
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage, RecordedRequest
from autogen_reliability.testing._cassette import Replayer, dump_cassette, load_cassette
from autogen_reliability.testing._recorder import Recorder

pytest_plugins = ["pytester"]

KEY = "sk-proj-RECOGNISABLE0123456789abcdefXYZ"
ORG = "org-RECOGNISABLEorg42"
PROJECT = "proj_RECOGNISABLEproj42"
COOKIE = "__cf_bm=RECOGNISABLEcookie42"
SECRETS = ("RECOGNISABLE", KEY, KEY.upper(), "0123456789abcdefXYZ", ORG, PROJECT, COOKIE)

# The test a user writes: an AutoGen client from the environment (create, which the SDK retries on a
# 429), and the sync SDK streaming from llm_cassette.base_url / api_key. Same assertions in both modes.
AGENT_TEST = """
import asyncio
import os

import openai
from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient


def test_agent(llm_cassette):
    async def ask():
        client = OpenAIChatCompletionClient(model="gpt-4o-mini", max_retries=2)
        try:
            return await client.create([UserMessage(content=os.environ.get("PROMPT", "Hi"), source="user")])
        finally:
            await client.close()

    result = asyncio.run(ask())
    assert result.content == "Hello there, friend"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (12, 4)

    if os.environ.get("CALLS") != "1":
        sdk = openai.OpenAI(base_url=llm_cassette.base_url, api_key=llm_cassette.api_key, max_retries=0)
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [(chunk.choices[0].delta.content if chunk.choices else chunk.usage.total_tokens) for chunk in stream]
        assert chunks == ["", "one", " two", " three", None, 7]

    assert llm_cassette.mode == os.environ["EXPECTED_MODE"]
    assert os.environ["OPENAI_API_KEY"] == llm_cassette.api_key
    if llm_cassette.mode == "replay":
        assert llm_cassette.api_key != os.environ["REAL_KEY"]  # a placeholder: no real key in a replayed test
"""


def provider_script() -> list[FakeReply]:
    """What the "real" provider answers while recording: a 429 that echoes the org and the key, then the answers."""
    secret_headers = {"openai-organization": ORG, "openai-project": PROJECT, "set-cookie": f"{COOKIE}; path=/"}
    return [
        FakeReply.error(
            429,
            f"Rate limit reached for organization {ORG} on requests; key sk-proj-****abcdefXYZ",
            headers={"retry-after-ms": "10", **secret_headers},
        ),
        FakeReply.text(
            "Hello there, friend",
            usage=FakeUsage(prompt_tokens=12, completion_tokens=4),
            headers={"x-ratelimit-remaining-requests": "99", **secret_headers},
        ),
        FakeReply.text("one two three", usage=FakeUsage(prompt_tokens=4, completion_tokens=3)),
    ]


def record(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str, replies: list[FakeReply] | None = None
) -> tuple[pytest.RunResult, FakeOpenAIServer]:
    """Run the inner tests with ``--llm-record`` against a fresh "real" provider; it is stopped afterwards."""
    with FakeOpenAIServer() as provider:
        provider.enqueue(*(provider_script() if replies is None else replies))
        pytester.path.joinpath("provider_url.txt").write_text(provider.base_url)
        with monkeypatch.context() as env:
            env.setenv("OPENAI_BASE_URL", provider.base_url)
            env.setenv("OPENAI_API_KEY", KEY)
            env.setenv("REAL_KEY", KEY)
            env.setenv("OPENAI_ORG_ID", ORG)
            env.setenv("OPENAI_PROJECT_ID", PROJECT)
            env.setenv("EXPECTED_MODE", "record")
            result = pytester.runpytest_subprocess("--llm-record", "-p", "no:cacheprovider", *args)
    return result, provider


def replay(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.RunResult:
    """Run the inner tests without ``--llm-record``, the network blocked, no provider and no key around."""
    with monkeypatch.context() as env:
        env.delenv("OPENAI_BASE_URL", raising=False)
        env.delenv("OPENAI_API_KEY", raising=False)
        env.setenv("REAL_KEY", KEY)
        env.setenv("EXPECTED_MODE", "replay")
        return pytester.runpytest_subprocess("--block-llm-network", "-p", "no:cacheprovider", *args)


def test_record_then_replay_round_trip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_agents=AGENT_TEST)

    recorded, provider = record(pytester, monkeypatch)

    recorded.assert_outcomes(passed=1)
    # The provider saw the 429, the SDK's retry and the stream, with the real credentials.
    assert provider.request_count == 3
    assert provider.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert provider.requests[0].headers["openai-organization"] == ORG
    assert provider.requests[1].headers["x-stainless-retry-count"] == "1"

    cassette = pytester.path / "cassettes" / "test_agents" / "test_agent.json"
    base_url, interactions = load_cassette(cassette)
    assert base_url == (pytester.path / "provider_url.txt").read_text()
    assert [item["response"]["status"] for item in interactions] == [429, 200, 200]
    assert [item["request"]["headers"]["x-stainless-retry-count"] for item in interactions] == ["0", "1", "0"]
    assert interactions[0]["response"]["headers"]["retry-after-ms"] == "10"
    assert interactions[1]["response"]["body"]["choices"][0]["message"]["content"] == "Hello there, friend"
    assert interactions[0]["request"]["body"]["messages"][-1]["content"] == "Hi"
    # The stream is kept event by event, one per line of the file.
    events = interactions[2]["response"]["stream"]
    assert [event["data"]["choices"][0]["delta"].get("content") for event in events[:5]] == [
        "",
        "one",
        " two",
        " three",
        None,
    ]
    assert events[5]["data"]["usage"]["total_tokens"] == 7
    assert events[-1] == {"data": "[DONE]"}
    assert '{"data": "[DONE]"}' in [line.strip() for line in cassette.read_text(encoding="utf-8").splitlines()]

    replayed = replay(pytester, monkeypatch)

    replayed.assert_outcomes(passed=1)
    assert provider.request_count == 3  # the provider was not asked again


def test_cassette_holds_no_credential(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_agents=AGENT_TEST)

    recorded, _ = record(pytester, monkeypatch)

    recorded.assert_outcomes(passed=1)
    text = (pytester.path / "cassettes" / "test_agents" / "test_agent.json").read_text(encoding="utf-8")
    for secret in SECRETS:
        assert secret not in text
    lowered = text.lower()
    for header in ("authorization", "openai-organization", "openai-project", "set-cookie", "cookie", "bearer"):
        assert header not in lowered
    # What the provider echoed is still readable, minus the secrets.
    assert "Rate limit reached for organization [REDACTED] on requests; key [REDACTED]" in text


def test_mismatched_request_fails_with_a_diff(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_agents=AGENT_TEST)
    record(pytester, monkeypatch)[0].assert_outcomes(passed=1)

    monkeypatch.setenv("PROMPT", "Hello")
    replayed = replay(pytester, monkeypatch)

    replayed.assert_outcomes(failed=1, errors=1)
    # In the test: the SDK's error (400, not retried); at teardown: the diff, readable.
    replayed.stdout.fnmatch_lines(["*BadRequestError: Error code: 400 - this request does not match the cassette*"])
    replayed.stdout.fnmatch_lines(
        [
            "*1 request did not match the cassette *test_agent.json:",
            "*this request does not match the cassette (method, path and JSON body must be equal)*",
            "--- cassette, exchange #1 (the next one): POST /chat/completions",
            "+++ this request: POST /chat/completions",
            '-      "content": "Hi",',
            '+      "content": "Hello",',
        ]
    )


def test_exchanges_never_requested_fail_unless_allowed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_agents=AGENT_TEST)
    record(pytester, monkeypatch)[0].assert_outcomes(passed=1)
    monkeypatch.setenv("CALLS", "1")  # the test no longer streams

    replayed = replay(pytester, monkeypatch)

    replayed.assert_outcomes(passed=1, errors=1)
    replayed.stdout.fnmatch_lines(
        [
            "*1 of the 3 exchanges in the cassette *test_agent.json were never requested*",
            "*#3: POST http://127.0.0.1:*/v1/chat/completions",
            "*@pytest.mark.llm_cassette(allow_unused=True)*",
        ]
    )

    allowed = AGENT_TEST.replace("def test_agent(", "@pytest.mark.llm_cassette(allow_unused=True)\ndef test_agent(")
    pytester.makepyfile(test_agents="import pytest\n" + allowed)
    replay(pytester, monkeypatch).assert_outcomes(passed=1)


def test_more_requests_than_recorded(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_agents=AGENT_TEST)
    monkeypatch.setenv("CALLS", "1")
    record(pytester, monkeypatch, replies=provider_script()[:2])[0].assert_outcomes(passed=1)
    monkeypatch.delenv("CALLS")

    replayed = replay(pytester, monkeypatch)

    replayed.assert_outcomes(failed=1, errors=1)
    replayed.stdout.fnmatch_lines(["*the cassette has no exchange left for this request (2 recorded, all played)*"])


def test_missing_cassette_says_how_to_record_it(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_agents=AGENT_TEST)

    replayed = replay(pytester, monkeypatch)

    replayed.assert_outcomes(errors=1)
    replayed.stdout.fnmatch_lines(
        [
            "*no cassette at *cassettes/test_agents/test_agent.json: record it once against openai with "
            "`pytest --llm-record test_agents.py::test_agent` (OPENAI_API_KEY set), then commit the file.*"
        ]
    )
    # Said once: not the loader's error as well, chained to it ("During handling of the above exception").
    assert sum("no cassette at" in line for line in replayed.outlines) == 2  # the error, and its summary line
    assert "During handling" not in replayed.stdout.str()


def test_recording_without_the_key_skips_naming_it(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_agents=AGENT_TEST)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    result = pytester.runpytest_subprocess("--llm-record", "-rs", "-p", "no:cacheprovider")

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*llm_cassette: recording needs OPENAI_API_KEY (the openai API key)*"])
    assert not (pytester.path / "cassettes").exists()


def test_a_test_that_skips_itself_while_recording_keeps_its_cassette(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A conditional skip under --llm-record (a quota check, a feature flag) wrote an empty cassette over a good one.
    pytester.makepyfile(
        test_agents="""
        import os

        import openai
        import pytest


        def test_agent(llm_cassette):
            if os.environ.get("SKIP_NOW"):
                pytest.skip("not today")
            client = openai.OpenAI(max_retries=0)
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        """
    )
    cassette = pytester.path / "cassettes" / "test_agents" / "test_agent.json"
    record(pytester, monkeypatch, replies=[FakeReply.text("Hi!")])[0].assert_outcomes(passed=1)
    recorded = cassette.read_bytes()

    with monkeypatch.context() as env:
        env.setenv("SKIP_NOW", "1")
        record(pytester, monkeypatch, replies=[])[0].assert_outcomes(skipped=1)

    assert cassette.read_bytes() == recorded
    replay(pytester, monkeypatch).assert_outcomes(passed=1)


def test_cassette_name_and_directory(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nllm_cassette_dir = recorded/llm\n")
    pytester.makepyfile(
        test_named="""
        import openai
        import pytest


        @pytest.mark.llm_cassette("shared-greeting")
        @pytest.mark.parametrize("attempt", [1])
        def test_named(llm_cassette, attempt):
            client = openai.OpenAI(max_retries=0)
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        """
    )

    recorded, _ = record(pytester, monkeypatch, replies=[FakeReply.text("Hi!")])

    recorded.assert_outcomes(passed=1)
    assert (pytester.path / "recorded" / "llm" / "test_named" / "shared-greeting.json").is_file()
    replay(pytester, monkeypatch).assert_outcomes(passed=1)


def test_recorder_keeps_a_gzip_body_decoded_and_leaves_other_hosts_alone() -> None:
    payload = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini", "choices": []}
    with FakeOpenAIServer() as provider, FakeOpenAIServer() as other:
        provider.enqueue(
            FakeReply.malformed(gzip.compress(json.dumps(payload).encode()), headers={"content-encoding": "gzip"})
        )
        other.enqueue(FakeReply.text("not recorded"))
        recorder = Recorder(provider.base_url)
        recorder.start()
        try:
            for base_url in (provider.base_url, other.base_url):
                client = openai.OpenAI(api_key=KEY, base_url=base_url, max_retries=0)
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        finally:
            recorder.stop()

    [interaction] = recorder.interactions
    assert interaction["response"]["body"] == payload
    assert "content-encoding" not in interaction["response"]["headers"]


def test_a_stream_reaches_the_client_before_it_ends_while_recording() -> None:
    # What vcrpy does not do: each chunk is handed on as it arrives, not once the provider has finished.
    with FakeOpenAIServer() as provider:
        provider.enqueue(FakeReply.text("one two three", hold_after_chunks=1))
        recorder = Recorder(provider.base_url)
        recorder.start()
        try:
            client = openai.OpenAI(api_key=KEY, base_url=provider.base_url, max_retries=0)
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Count"}], stream=True
            )
            iterator = iter(stream)
            seen = [next(iterator).choices[0].delta.content, next(iterator).choices[0].delta.content]
            assert seen == ["", "one"]  # while the provider still holds the rest
            provider.release()
            seen += [chunk.choices[0].delta.content for chunk in iterator]
        finally:
            recorder.stop()

    assert seen == ["", "one", " two", " three", None]
    [interaction] = recorder.interactions
    assert len(interaction["response"]["stream"]) == 6  # five chunks and [DONE]


def test_load_refuses_a_file_in_another_format(tmp_path: Path) -> None:
    vcr_style = tmp_path / "vcr.json"
    vcr_style.write_text(json.dumps({"version": 1, "interactions": [{"request": {}, "response": {}}]}))
    with pytest.raises(Exception, match="is not a version-1 autogen-reliability cassette"):
        load_cassette(vcr_style)

    ours = tmp_path / "ours.json"
    interactions: list[dict[str, Any]] = [{"request": {"method": "POST", "url": "http://x/v1/a"}, "error": "boom"}]
    dump_cassette(ours, "http://x/v1", interactions)
    assert load_cassette(ours) == ("http://x/v1", interactions)


# Loaded before the guard is installed, so it sits below it: it knows the "provider" by a name that is not
# loopback's, and the guard has to let that name through for the recording test.
PROVIDER_RESOLVER_CONFTEST = """
import socket

_real_getaddrinfo = socket.getaddrinfo


def _resolve(host, port, *args, **kwargs):
    return _real_getaddrinfo("127.0.0.1" if host == "provider.test" else host, port, *args, **kwargs)


socket.getaddrinfo = _resolve
"""

GUARDED_RECORDING = """
import openai
import pytest

MESSAGES = [{"role": "user", "content": "Hi"}]


def test_recording_reaches_its_provider(llm_cassette):
    assert llm_cassette.base_url.startswith("http://provider.test:")
    openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_other_tests_do_not():
    with pytest.raises(pytest.fail.Exception, match="blocked a connection to provider.test"):
        openai.OpenAI(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
"""


def test_recording_under_the_guard_may_reach_its_provider_only(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(PROVIDER_RESOLVER_CONFTEST)
    pytester.makepyfile(test_guarded=GUARDED_RECORDING)
    with FakeOpenAIServer() as provider:
        provider.enqueue(FakeReply.text("Hi!"))
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://provider.test:{provider.port}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)

        result = pytester.runpytest_subprocess("--llm-record", "--block-llm-network", "-p", "no:cacheprovider")

        result.assert_outcomes(passed=2)
        assert provider.request_count == 1


def test_a_reset_connection_is_recorded_and_replayed_as_one() -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
    with FakeOpenAIServer() as provider:
        provider.enqueue(FakeReply.reset(), FakeReply.text("after the reset"))
        recorder = Recorder(provider.base_url)
        recorder.start()
        try:
            client = openai.OpenAI(api_key=KEY, base_url=provider.base_url, max_retries=1)
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        finally:
            recorder.stop()
        base_url = provider.base_url
    interactions = recorder.interactions
    assert "response" not in interactions[0]
    assert interactions[0]["error"].startswith(("RemoteProtocolError", "ReadError", "ConnectError"))
    assert interactions[1]["response"]["status"] == 200

    replayer = Replayer(base_url, interactions)
    with FakeOpenAIServer(default=replayer) as replaying:
        client = openai.OpenAI(api_key="sk-test", base_url=replaying.base_url, max_retries=1)
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert replaying.request_count == 2  # the reset, then the SDK's retry
    assert completion.choices[0].message.content == "after the reset"
    assert replayer.unplayed() == []
    assert replayer.mismatches == []


def test_azures_wait_of_a_429_is_recorded_and_replayed() -> None:
    # Azure OpenAI asks for its wait in x-ms-retry-after-ms, which the wrapper reads before Retry-After.
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
    wait = {"x-ms-retry-after-ms": "1500", "retry-after": "2"}
    with FakeOpenAIServer() as provider:
        provider.enqueue(FakeReply.error(429, "Rate limit is exceeded.", headers=wait), FakeReply.text("Hello"))
        deployment = f"{provider.root_url}/openai/deployments/prod-chat"
        recorder = Recorder(deployment)
        recorder.start()
        try:
            azure = openai.AzureOpenAI(
                api_key="9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c", api_version="2024-10-21", base_url=deployment, max_retries=1
            )
            azure.chat.completions.create(model="gpt-4o-mini", messages=messages)
        finally:
            recorder.stop()
    interactions = recorder.interactions
    assert interactions[0]["response"]["headers"] | wait == interactions[0]["response"]["headers"]

    with FakeOpenAIServer(default=Replayer(deployment, interactions)) as replaying:
        client = openai.OpenAI(api_key="sk-test", base_url=replaying.base_url, max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert retry_after(info.value) == 1.5


AZURE_TEST = """
import asyncio
import os

import pytest
from autogen_core.models import UserMessage
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient


@pytest.mark.llm_cassette(provider="azure", base_url=os.environ.get("DEPLOYMENT_URL"))
def test_azure(llm_cassette):
    async def ask():
        client = AzureOpenAIChatCompletionClient(
            model="gpt-4o-mini",
            base_url=llm_cassette.base_url,
            api_key=llm_cassette.api_key,
            api_version="2024-10-21",
            max_retries=0,
        )
        try:
            return await client.create([UserMessage(content="Hi", source="user")])
        finally:
            await client.close()

    result = asyncio.run(ask())
    assert result.content == "Hello from Azure"
"""


def test_an_azure_deployments_cassette_is_recorded_and_replayed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An Azure OpenAI client sends to its deployment's URL; replayed, llm_cassette.base_url was the fake server's
    # /v1, where the SDK asked for /v1/deployments/gpt-4o-mini/chat/completions: a 404, and the test failed.
    pytester.makepyfile(test_azure=AZURE_TEST)
    azure_key = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c"
    with FakeOpenAIServer() as provider:
        provider.enqueue(FakeReply.text("Hello from Azure"))
        with monkeypatch.context() as env:
            env.setenv("DEPLOYMENT_URL", f"{provider.root_url}/openai/deployments/prod-chat")
            env.setenv("AZURE_OPENAI_API_KEY", azure_key)
            recorded = pytester.runpytest_subprocess("--llm-record", "-p", "no:cacheprovider")
    recorded.assert_outcomes(passed=1)
    assert [request.path for request in provider.requests] == ["/openai/deployments/prod-chat/chat/completions"]
    assert azure_key not in (pytester.path / "cassettes" / "test_azure" / "test_azure.json").read_text()

    with monkeypatch.context() as env:
        env.delenv("AZURE_OPENAI_API_KEY", raising=False)
        replayed = pytester.runpytest_subprocess("--block-llm-network", "-p", "no:cacheprovider")
    replayed.assert_outcomes(passed=1)


def test_the_marker_refuses_what_it_would_ignore(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(
        test_markers="""
        import pytest


        @pytest.mark.llm_cassette(allow_unused="no")
        def test_allow_unused_is_not_a_bool(llm_cassette):
            pass


        @pytest.mark.llm_cassette("greeting", name="farewell")
        def test_the_name_given_twice(llm_cassette):
            pass
        """
    )

    replayed = replay(pytester, monkeypatch)

    replayed.assert_outcomes(errors=2)
    replayed.stdout.fnmatch_lines_random(
        [
            "*llm_cassette(allow_unused=...) takes True or False, got 'no'*",
            "*llm_cassette takes its name once, as the argument or as name=, got ('greeting',) {'name': 'farewell'}*",
        ]
    )
    assert "no cassette at" not in replayed.stdout.str()


def test_markers_on_the_module_and_the_test_are_merged(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The module says which provider its tests record; a test names its file. The test's marker used to hide
    # the module's: the test was recorded against OpenAI with OPENAI_API_KEY, not against Groq.
    pytester.makepyfile(
        test_groq="""
        import pytest

        pytestmark = pytest.mark.llm_cassette(provider="groq", base_url="https://api.groq.com/openai/v1")


        @pytest.mark.llm_cassette("shared-greeting")
        def test_named(llm_cassette):
            pass
        """
    )

    replayed = replay(pytester, monkeypatch)

    replayed.assert_outcomes(errors=1)
    replayed.stdout.fnmatch_lines(
        ["*no cassette at *cassettes/test_groq/shared-greeting.json: record it once against groq *(GROQ_API_KEY set)*"]
    )


def test_tests_of_one_module_get_a_cassette_each(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two classes with a method of the same name, and parameters that differ only in characters a file name
    # cannot hold: each pair used to share one file, the second recording replacing the first, so the replay of
    # the first failed with a mismatch.
    pytester.makepyfile(
        test_pairs="""
        import openai
        import pytest


        def ask(text):
            client = openai.OpenAI(max_retries=0)
            answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
            return answer.choices[0].message.content


        class TestWriter:
            def test_answer(self, llm_cassette):
                assert ask("writer") == "to writer"


        class TestCritic:
            def test_answer(self, llm_cassette):
                assert ask("critic") == "to critic"


        @pytest.mark.parametrize("text", ["a b", "a/b", "plain"])
        def test_parametrized(llm_cassette, text):
            assert ask(text) == "to " + text
        """
    )

    def echo(request: RecordedRequest) -> FakeReply:
        return FakeReply.text("to " + request.messages[-1]["content"])

    with FakeOpenAIServer(default=echo) as provider, monkeypatch.context() as env:
        env.setenv("OPENAI_BASE_URL", provider.base_url)
        env.setenv("OPENAI_API_KEY", KEY)
        recorded = pytester.runpytest_subprocess("--llm-record", "-p", "no:cacheprovider")
    recorded.assert_outcomes(passed=5)

    files = sorted(path.relative_to(pytester.path / "cassettes").as_posix() for path in pytester.path.rglob("*.json"))
    assert len(files) == 5, files
    assert "test_pairs/TestWriter/test_answer.json" in files
    assert "test_pairs/TestCritic/test_answer.json" in files
    assert "test_pairs/test_parametrized[plain].json" in files  # a name that needs no change keeps it
    with monkeypatch.context() as env:
        env.delenv("OPENAI_BASE_URL", raising=False)
        env.delenv("OPENAI_API_KEY", raising=False)
        replayed = pytester.runpytest_subprocess("--block-llm-network", "-p", "no:cacheprovider")
    replayed.assert_outcomes(passed=5)


def test_modules_of_one_name_get_a_folder_each_in_the_cassette_dir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With llm_cassette_dir, tests/a/test_x.py and tests/b/test_x.py used to share <dir>/test_x/: the second
    # recording replaced the first, and the first test's replay failed with a mismatch.
    pytester.makeini("[pytest]\nllm_cassette_dir = recorded\n")
    for package in ("a", "b"):
        pytester.path.joinpath(f"tests/{package}").mkdir(parents=True)
        pytester.path.joinpath(f"tests/{package}/__init__.py").touch()
        pytester.path.joinpath(f"tests/{package}/test_x.py").write_text(
            "import openai\n\n\n"
            "def test_agent(llm_cassette):\n"
            "    client = openai.OpenAI(max_retries=0)\n"
            f"    messages = [{{'role': 'user', 'content': '{package}'}}]\n"
            "    answer = client.chat.completions.create(model='gpt-4o-mini', messages=messages)\n"
            f"    assert answer.choices[0].message.content == 'to {package}'\n"
        )

    def echo(request: RecordedRequest) -> FakeReply:
        return FakeReply.text("to " + request.messages[-1]["content"])

    with FakeOpenAIServer(default=echo) as provider, monkeypatch.context() as env:
        env.setenv("OPENAI_BASE_URL", provider.base_url)
        env.setenv("OPENAI_API_KEY", KEY)
        pytester.runpytest_subprocess("--llm-record", "-p", "no:cacheprovider").assert_outcomes(passed=2)

    for package in ("a", "b"):
        assert (pytester.path / "recorded" / "tests" / package / "test_x" / "test_agent.json").is_file()
    replay(pytester, monkeypatch).assert_outcomes(passed=2)


def test_a_stream_cut_off_mid_way_is_replayed_cut_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The provider drops the connection after two chunks. The cassette kept those chunks, and the replay used to
    # send them as a whole answer: the test that got a connection error while recording got none in replay.
    pytester.makepyfile(
        test_cut="""
        import openai
        import pytest


        def test_cut(llm_cassette):
            client = openai.OpenAI(max_retries=0)
            messages = [{"role": "user", "content": "Count"}]
            stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
            received = []
            with pytest.raises(openai.APIError):
                for chunk in stream:
                    received.append(chunk.choices[0].delta.content)
            assert received == ["", "one", " two"]
        """
    )

    recorded, _ = record(pytester, monkeypatch, replies=[FakeReply.text("one two three", disconnect_after_chunks=2)])
    recorded.assert_outcomes(passed=1)
    replay(pytester, monkeypatch).assert_outcomes(passed=1)


def test_a_stream_with_unicode_line_separators_is_recorded_and_replayed_whole() -> None:
    # U+2028, U+0085 and the like are not line ends in server-sent events (only CR and LF are), and providers send
    # them raw in JSON. The recorder split each event at them: the event was kept as broken text, and its replay
    # made the SDK fail on invalid JSON.
    text = "one\u2028two \x85three \u2029four\x0bfive \x1csix"
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Count"}]
    with FakeOpenAIServer() as provider:
        provider.enqueue(FakeReply.text(text))
        recorder = Recorder(provider.base_url)
        recorder.start()
        try:
            client = openai.OpenAI(api_key=KEY, base_url=provider.base_url, max_retries=0)
            stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
            recorded = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        finally:
            recorder.stop()
        base_url = provider.base_url
    assert recorded == text
    [interaction] = recorder.interactions
    assert all(isinstance(event["data"], dict) for event in interaction["response"]["stream"][:-1])

    with FakeOpenAIServer(default=Replayer(base_url, [interaction])) as replaying:
        client = openai.OpenAI(api_key="sk-test", base_url=replaying.base_url, max_retries=0)
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == text


def test_an_answer_cut_inside_an_emoji_is_recorded_saved_and_replayed(tmp_path: Path) -> None:
    # Half an emoji comes as JSON's "\ud83d", which UTF-8 cannot hold as a character: the cassette kept U+FFFD
    # instead, so the replay answered "Typo \ufffd" to a test that had seen "Typo \ud83d" while recording.
    text = "Typo \ud83d"
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
    with FakeOpenAIServer() as provider:
        provider.enqueue(FakeReply.text(text), FakeReply.text(text))
        recorder = Recorder(provider.base_url)
        recorder.start()
        try:
            client = openai.OpenAI(api_key=KEY, base_url=provider.base_url, max_retries=0)
            answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
            streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        finally:
            recorder.stop()
        base_url = provider.base_url
    assert (answer.choices[0].message.content, streamed) == (text, text)
    cassette = tmp_path / "cut.json"
    dump_cassette(cassette, base_url, recorder.interactions)

    with FakeOpenAIServer(default=Replayer(*load_cassette(cassette))) as replaying:
        client = openai.OpenAI(api_key="sk-test", base_url=replaying.base_url, max_retries=0)
        replayed = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == text
    assert replayed.choices[0].message.content == text
