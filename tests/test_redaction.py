"""Secrets never reach an error message or a log line of ours."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from autogen_core.models import UserMessage
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, OpenAIChatCompletionClient

from autogen_reliability import (
    AllClientsFailedError,
    BudgetPolicy,
    ConfigurationError,
    ErrorKind,
    RetriesExhaustedError,
    RetryPolicy,
    ValidationPolicy,
    reliable,
    usage_scope,
)
from autogen_reliability._config import ENV_DB_URL
from autogen_reliability._pipeline import AttemptEvent, Call, Pipeline, subscribe_attempts, subscribe_calls
from autogen_reliability._redaction import redact, remember_secret
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.retry import RetryEvent
from autogen_reliability.retry._classify import RETRYABLE_BY_DEFAULT
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, ScriptedChatCompletionClient

from .conftest import OpenAIClientFactory, run_cli

HI = [UserMessage(content="hi", source="user")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Incorrect API key provided: sk-proj-abc123def456. You can find your API key at ...",
            "Incorrect API key provided: [REDACTED]. You can find your API key at ...",
        ),
        ("Incorrect API key provided: sk-test.", "Incorrect API key provided: [REDACTED]."),
        ("masked: sk-*********************xyz1", "masked: [REDACTED]"),
        ("x-api-key: sk-ant-api03-AbCdEf123456", "x-api-key: [REDACTED]"),
        ("Authorization: Bearer eyJhbGciOi.J9.abc", "Authorization: [REDACTED]"),
        # A JWT without its label (an Entra ID token a gateway echoes): its header and payload begin with eyJ.
        (
            "token eyJ0eXAiOiJKV1QiLCJhbGciOi.eyJhdWQiOiJodHRwczovL2Nv.c2lnbmF0dXJl-_x expired",
            "token [REDACTED] expired",
        ),
        ("an unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0In0. one", "an unsigned [REDACTED] one"),
        # The scheme is no secret, the credentials after it are, whatever the case of either.
        ("authorization: bearer tok-123456789abc", "authorization: [REDACTED]"),
        ("Authorization: Basic YXBwOmh1bnRlcjJsZWFr", "Authorization: [REDACTED]"),
        ('{"authorization": "basic YXBwOmh1bnRlcjJsZWFr"}', '{"authorization": "[REDACTED]"}'),
        ("Proxy-Authorization: Digest username=app", "Proxy-Authorization: [REDACTED]"),
        ("aws AKIAABCDEFGHIJKLMNOP denied", "aws [REDACTED] denied"),
        # Other providers' keys, known by their prefix, even when no client of ours was built with them.
        ("Invalid API Key: gsk_abcdefghijklmnop1234QRST", "Invalid API Key: [REDACTED]"),
        ("key xai-abcdefghijklmnopqrstuvwxyz0123456789 refused", "key [REDACTED] refused"),
        ("pplx-abcdefghijklmnopqrstuvwxyz012345 nvapi-abcdefghijklmnopqrstuvwxyz012345", "[REDACTED] [REDACTED]"),
        ("token hf_abcdefghijklmnopqrstuvwxyzABCDEF expired", "token [REDACTED] expired"),
        (
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789 github_pat_11ABCDEFG0123456789_abcdefghijklmn",
            "[REDACTED] [REDACTED]",
        ),
        (
            "GET https://x.blob.core.windows.net/c?sv=2020-08-04&sig=abcDEF%2Bxyz%3D&se=1",
            "GET https://x.blob.core.windows.net/c?sv=2020-08-04&sig=[REDACTED]&se=1",
        ),
        (
            "hf_hub_download_for_the_model and xai-grok-4-fast-reasoning",
            "hf_hub_download_for_the_model and xai-grok-4-fast-reasoning",
        ),
        ("GET https://h/v1?key=AIzaSyA1234567890123456789012&alt=json", "GET https://h/v1?key=[REDACTED]&alt=json"),
        ('{"api_key": "secret-value-1"}', '{"api_key": "[REDACTED]"}'),
        (
            "could not connect to postgresql+psycopg://app:s3cr3t-pw@db:5432/usage",
            "could not connect to postgresql+psycopg://app:[REDACTED]@db:5432/usage",
        ),
        ("proxy https://user:pa55@proxy.local failed", "proxy https://user:[REDACTED]@proxy.local failed"),
        # libpq's keyword/value connection strings, with a value bare or quoted (spaces allowed).
        (
            "invalid dsn: host=db user=app password=s3cr3t dbname=usage",
            "invalid dsn: host=db user=app password=[REDACTED] dbname=usage",
        ),
        (
            "conninfo host=db password = 'two words' sslmode=require",
            "conninfo host=db password = [REDACTED] sslmode=require",
        ),
        ("sslpassword=k3y-pass host=db", "sslpassword=[REDACTED] host=db"),
        # libpq's own reading of a bare value: up to the next space, with & and " in it, \ escaping.
        ("host=db password=abc&def123 dbname=x", "host=db password=[REDACTED] dbname=x"),
        ('host=db password=se"cret99 dbname=x', "host=db password=[REDACTED] dbname=x"),
        ('host=db password="hunter2" dbname=x', "host=db password=[REDACTED] dbname=x"),
        ("host=db password=ab\\ cd dbname=x", "host=db password=[REDACTED] dbname=x"),
        ("host=db password=s3cr\\'et99 dbname=x", "host=db password=[REDACTED] dbname=x"),
        ("the password is wrong", "the password is wrong"),
        ("GET http://127.0.0.1:8080/v1/models@latest", "GET http://127.0.0.1:8080/v1/models@latest"),
        ("a risk-free task for the desk", "a risk-free task for the desk"),
        (
            "Rate limit reached for gpt-4o-mini in organization org-123",
            "Rate limit reached for gpt-4o-mini in organization org-123",
        ),
    ],
)
def test_secrets_are_redacted_and_plain_text_kept(text: str, expected: str) -> None:
    assert redact(text) == expected


# An Entra ID access token, as an Azure OpenAI client built with azure_ad_token_provider= sends it (a JWT).
AD_TOKEN = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6Ik1HTHFqOThWTkxvWGFGZnBKQ0JwZ0I0SmFLcyJ9"
    ".eyJhdWQiOiJodHRwczovL2NvZ25pdGl2ZXNlcnZpY2VzLmF6dXJlLmNvbSIsImV4cCI6MTc5NjY3MDAwMH0"
    ".Zm9vYmFyLXNpZ25hdHVyZS1vZi10aGUtdG9rZW4tMDEyMzQ1Njc4OQ"
)


async def test_an_azure_ad_token_echoed_in_an_error_is_redacted_from_rows_logs_and_raised_errors(
    fake_openai_server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # The client sends no key: its credential is a token its provider hands the SDK for each request, never
    # known to the wrapper. A gateway that echoes it shows it without its "Bearer " label.
    async def token_provider() -> str:
        return AD_TOKEN

    store = UsageStore(f"sqlite:///{tmp_path / 'usage.db'}")
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    azure = AzureOpenAIChatCompletionClient(
        model="gpt-4o-mini",
        azure_deployment="prod-chat",
        api_version="2024-10-21",
        azure_endpoint=fake_openai_server.root_url,
        azure_ad_token_provider=token_provider,
    )
    client = reliable(azure, retry=RetryPolicy(max_attempts=2, initial_delay=0), recorder=recorder)
    echoed = f"Access token {AD_TOKEN} is not valid for this resource."
    fake_openai_server.enqueue(FakeReply.error(503, echoed), FakeReply.error(503, echoed), FakeReply.error(401, echoed))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(RetriesExhaustedError) as exhausted:
            await client.create(HI)
        with pytest.raises(openai.AuthenticationError):
            await client.create(HI)
    await client.close()

    assert fake_openai_server.requests[0].headers["authorization"] == f"Bearer {AD_TOKEN}"
    signature = AD_TOKEN.rsplit(".", 1)[1]
    assert signature not in "".join(traceback.format_exception(exhausted.value))
    assert signature not in caplog.text
    assert recorder.flush(10)
    messages = [row.error_message or "" for row in store.events()]
    assert messages == ["Error code: 503 - Access token [REDACTED] is not valid for this resource."] * 2 + [
        "Error code: 401 - Access token [REDACTED] is not valid for this resource."
    ]
    recorder.close()
    store.close()


def test_long_texts_are_bounded() -> None:
    assert redact("x" * 5000, limit=100) == "x" * 99 + "…"
    assert len(redact("y" * 5000)) == 2000


BODY = "Q7x9LmN2pR4t-V6wY8zA1bC3d_E5fG7hJ9kL0mN2pQ4rS6"
KEY = f"sk-proj-{BODY}"
ECHOES = {
    "upper-case": KEY.upper(),
    "underscores": KEY.replace("-", "_"),
    "no prefix": BODY,
}


def normal(text: str) -> str:
    """Case and the choice of ``-`` or ``_`` do not hide a key."""
    return text.lower().replace("_", "-")


def assert_no_key(text: str) -> None:
    assert normal(BODY) not in normal(text)
    assert normal(BODY[:24]) not in normal(text)


def echo(status: int, form: str, **options: Any) -> FakeReply:
    return FakeReply.error(status, message=f"Incorrect API key provided: {ECHOES[form]}. Find yours at ...", **options)


@pytest.mark.parametrize("form", ECHOES)
async def test_the_clients_own_key_is_redacted_from_rows_logs_and_raised_errors(
    form: str,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    store = UsageStore(f"sqlite:///{tmp_path / 'usage.db'}")
    recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
    client = reliable(
        make_openai_client(api_key=KEY), retry=RetryPolicy(max_attempts=2, initial_delay=0), recorder=recorder
    )
    fake_openai_server.enqueue(echo(429, form), echo(503, form), echo(401, form))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(RetriesExhaustedError) as exhausted:
            await client.create(HI)
        # A non-retryable error reaches the caller as the SDK raised it (README); what we store and log is redacted.
        with pytest.raises(openai.AuthenticationError):
            await client.create(HI)
    error = exhausted.value
    assert isinstance(error.__cause__, openai.InternalServerError)  # the same class, status and body, redacted
    assert error.__cause__.status_code == 503
    assert_no_key("".join(traceback.format_exception(error)))
    assert_no_key(repr(error.__cause__.body))
    assert_no_key(error.__cause__.response.text)
    assert "authorization" not in error.__cause__.request.headers
    assert_no_key(caplog.text)
    assert recorder.flush(10)
    messages = [row.error_message or "" for row in store.events()]
    assert len(messages) == 3
    assert all("[REDACTED]" in message for message in messages)
    for message in messages:
        assert_no_key(message)
    recorder.close()
    store.close()


async def test_errors_gathered_from_every_client_carry_no_key(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(
        echo(500, "no prefix"), echo(500, "no prefix"), echo(429, "upper-case", headers={"Retry-After": "3600"})
    )
    primary, fallback = make_openai_client(api_key=KEY), make_openai_client(api_key=KEY)
    client = reliable(
        primary, fallbacks=[fallback], retry=RetryPolicy(max_attempts=2, initial_delay=0), track_usage=False
    )
    with pytest.raises(AllClientsFailedError) as caught:
        await client.create(HI)
    assert isinstance(caught.value.exceptions[1], openai.RateLimitError)
    assert_no_key("".join(traceback.format_exception(caught.value)))


def _group() -> ExceptionGroup[Exception]:
    # What a client that races or fans out requests in a TaskGroup raises: classified UNKNOWN.
    return ExceptionGroup(f"requests failed for {KEY}", [ValueError(f"Incorrect API key provided: {KEY}.")])


async def test_an_exception_group_that_is_retried_is_kept_redacted_and_goes_to_the_fallback() -> None:
    # Copying a group to redact it called ExceptionGroup.__new__ without its arguments: a TypeError replaced the
    # RetriesExhaustedError at the end of the retries, and so the fallback was never asked.
    retry = RetryPolicy(max_attempts=2, initial_delay=0, retry_on=RETRYABLE_BY_DEFAULT | {ErrorKind.UNKNOWN})
    failing = ScriptedChatCompletionClient([_group(), _group()])
    with pytest.raises(RetriesExhaustedError) as exhausted:
        await reliable(failing, retry=retry, track_usage=False).create(HI)
    cause = exhausted.value.__cause__
    assert isinstance(cause, ExceptionGroup)
    assert [type(member) for member in cause.exceptions] == [ValueError]
    assert "[REDACTED]" in str(cause.exceptions[0])
    assert_no_key("".join(traceback.format_exception(exhausted.value)))
    primary = ScriptedChatCompletionClient([_group(), _group()])
    fallback = ScriptedChatCompletionClient(["from the fallback"])
    client = reliable(primary, retry=retry, fallbacks=[fallback], track_usage=False)
    assert (await client.create(HI)).content == "from the fallback"


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided: SK-PROJ-ABCDEF123456GHIJKL.",
        "Incorrect API key provided: sk_proj_abcdef123456ghijkl.",
        "Incorrect API key provided: sk_live_abcdef123456ghijkl.",
    ],
)
def test_key_shaped_strings_are_redacted_in_any_case_and_with_underscores(text: str) -> None:
    assert redact(text) == "Incorrect API key provided: [REDACTED]."


def test_short_or_common_keys_are_not_taken_for_secrets() -> None:
    remember_secret("EMPTY")
    remember_secret("not-needed")
    assert redact("EMPTY not-needed") == "EMPTY not-needed"


def test_a_key_that_ends_with_a_remembered_key_is_one_redaction_not_two() -> None:
    # Without the dashes of its prefix a remembered key is "0123456789abcdefABCD": it hides the tail of
    # another key, and the key pattern then its head.
    remember_secret("sk-live-mine-0123456789abcdefABCD")
    assert redact("sk-proj-Other0123456789abcdefABCD cut") == "[REDACTED] cut"
    assert (
        redact("sk-live-mine-0123456789abcdefABCD, then sk-proj-X0123456789abcdefABCD") == "[REDACTED], then [REDACTED]"
    )


class ChainingCallObserver:
    """A call observer that fails, chaining the error the call ended with."""

    def call_started(self, call: Call, pipeline: Pipeline) -> None:
        pass

    def call_ended(self, call: Call, pipeline: Pipeline, error: BaseException | None) -> None:
        raise RuntimeError("call observer failed") from error


async def test_a_failing_hook_that_chains_the_provider_error_logs_no_key(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A hook that raises "from" the provider's error: the traceback logged for it shows that error as well.
    def retry_hook(event: RetryEvent) -> None:
        raise RuntimeError("retry hook failed") from event.error

    def attempt_observer(event: AttemptEvent) -> None:
        raise RuntimeError("attempt observer failed") from event.error

    fake_openai_server.enqueue(echo(429, "upper-case"), echo(503, "underscores"))
    client = reliable(
        make_openai_client(api_key=KEY),
        retry=RetryPolicy(max_attempts=2, initial_delay=0),
        on_retry=retry_hook,
        on_attempt=attempt_observer,
        track_usage=False,
    )
    unsubscribe = [subscribe_attempts(attempt_observer), subscribe_calls(ChainingCallObserver())]
    try:
        with caplog.at_level(logging.DEBUG, logger="autogen_reliability"), pytest.raises(RetriesExhaustedError):
            await client.create(HI)
    finally:
        for stop in unsubscribe:
            stop()
    failures = [record for record in caplog.records if record.levelno == logging.ERROR]
    # The retry hook once; the wrapper's observer and the feed's for each of two attempts; the call observer once.
    assert len(failures) == 6
    for record in failures:
        text = logging.Formatter().format(record)
        assert "failed" in text
        assert "Traceback" in text  # the traceback is still logged, redacted
        assert "[REDACTED]" in text  # each shows the provider's error, its key hidden
    assert_no_key(caplog.text)


async def test_a_key_sent_in_a_header_of_the_users_choice_is_not_kept_on_the_redacted_request(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A gateway's own key header (Azure API Management, Portkey) beside the provider's: the copy of the request
    # kept on the raised error dropped only the headers it knew by name, and kept these with their keys.
    gateway_key = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    headers = {"Ocp-Apim-Subscription-Key": gateway_key, "x-portkey-api-key": gateway_key, "X-Gateway-Token": "t" * 20}
    fake_openai_server.enqueue(FakeReply.error(503), FakeReply.error(503))
    client = reliable(
        make_openai_client(default_headers=headers),
        retry=RetryPolicy(max_attempts=2, initial_delay=0),
        track_usage=False,
    )
    with pytest.raises(RetriesExhaustedError) as exhausted:
        await client.create(HI)
    cause = exhausted.value.__cause__
    assert isinstance(cause, openai.InternalServerError)
    assert fake_openai_server.requests[0].headers["ocp-apim-subscription-key"] == gateway_key  # it was sent
    kept = {name.lower(): value for name, value in cause.request.headers.items()}
    assert "content-type" in kept  # the request's other headers stay
    for name in headers:
        assert name.lower() not in kept
    assert gateway_key not in repr(cause.request.headers.raw)


# --- configuration errors: a key given by mistake to another option ------------------------------------------


def refusal(build: Callable[[], object]) -> str:
    """The text a ConfigurationError of ``build()`` shows: its message and its whole traceback, chain included."""
    with pytest.raises(ConfigurationError) as refused:
        build()
    return str(refused.value) + "\n" + "".join(traceback.format_exception(refused.value))


@pytest.mark.parametrize(
    ("build", "still_shown"),
    [
        (lambda: BudgetPolicy(limit_usd=KEY), "limit_usd must be a decimal number"),
        (lambda: BudgetPolicy(limit_usd=1, period=KEY), "period must be 'day', 'week', 'month' or None"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(retry_on=[KEY]), "retry_on must contain ErrorKind members"),  # type: ignore[arg-type]
        (lambda: ValidationPolicy(on_failure=KEY), "on_failure must be 'raise' or 'return'"),  # type: ignore[arg-type]
        (lambda: ScriptedChatCompletionClient(["hi"], model=KEY, context_window=KEY), "context_window"),  # type: ignore[arg-type]
        (lambda: usage_scope(tags={KEY: 1}), "tags must map str to str"),  # type: ignore[dict-item]
        (lambda: UsageStore(f"sqlite:///usage.db?mode={KEY}"), "SQLite reads 'mode' only from a file: URI"),
    ],
    ids=["limit_usd", "period", "retry_on", "on_failure", "context_window", "tag key", "sqlite url query"],
)
def test_a_key_given_to_the_wrong_option_is_not_repeated_by_the_error(
    build: Callable[[], object], still_shown: str
) -> None:
    shown = refusal(build)
    assert still_shown in shown
    assert "[REDACTED]" in shown
    assert_no_key(shown)


def test_a_wrapped_clients_key_of_any_shape_is_not_repeated_by_a_configuration_error() -> None:
    # An Azure OpenAI key: 32 hex digits, shaped like no known prefix; remembered when the client is wrapped.
    azure_key = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c"
    reliable(
        ScriptedChatCompletionClient(["hi"]), fallbacks=[OpenAIChatCompletionClient(model="gpt-4o", api_key=azure_key)]
    )
    shown = refusal(lambda: BudgetPolicy(limit_usd=1, scope=azure_key))  # type: ignore[arg-type]
    assert "scope must be 'project', 'session' or 'agent', got '[REDACTED]'" in shown
    assert azure_key not in shown


def test_an_ordinary_value_is_still_quoted_whole_by_a_configuration_error() -> None:
    # Long and hex-ish, but no key: no client was built with it and it has no key's prefix.
    value = "3f9a0c1e5b7d2a4c6e8f0a1b3c5d7e9f-fortnightly"
    assert f"got {value!r}" in refusal(lambda: BudgetPolicy(limit_usd=1, period=value))  # type: ignore[arg-type]
    masked = "postgresql+psycopg://app:***@db:70000/usage"
    assert masked in refusal(lambda: UsageStore("postgresql+psycopg://app:pw@db:70000/usage"))


def test_a_key_in_the_database_url_of_the_environment_is_not_printed_by_the_command_line(tmp_path: Path) -> None:
    done = run_cli("report", env={ENV_DB_URL: f"sqlite:///{tmp_path / 'usage.db'}?cache={KEY}"})
    assert done.returncode == 2
    assert "SQLite reads 'cache' only from a file: URI" in done.stderr
    assert_no_key(done.stderr + done.stdout)
