"""Shared fixtures: AutoGen clients that talk HTTP to the plugin's ``fake_openai_server``, the test databases."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pty
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import CreateResult
from autogen_ext.models.openai import OpenAIChatCompletionClient

from autogen_reliability import ReliableChatCompletionClient, ValidationPolicy, configure, reliable
from autogen_reliability._config import ENV_DB_URL
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

from .storage_fixtures import *  # noqa: F403  # store_url (SQLite and PostgreSQL), make_pg_database, ledger
from .storage_fixtures import NO_POSTGRESQL, PG_URL_ENV

MODEL = "gpt-4o-mini"

OpenAIClientFactory = Callable[..., OpenAIChatCompletionClient]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``autogen-reliability ARGS`` in a subprocess, without a database URL from this environment unless given."""
    environment = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    environment.update(env or {})
    command = [sys.executable, "-m", "autogen_reliability", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=environment, cwd=cwd)


def run_cli_in_terminal(*args: str) -> tuple[int, str, str]:
    """``autogen-reliability ARGS`` in a subprocess whose standard output is a terminal (a pseudo-terminal).

    Returns the exit status, what the terminal was sent (as text, the pseudo-terminal's ``\\r\\n`` for
    ``\\n`` as it gives it) and stderr.
    """
    environment = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "autogen_reliability", *args]
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE, env=environment
    ) as process:
        os.close(follower)
        received = bytearray()
        while True:  # read as it comes: a terminal's buffer is small, and a writer waits on a full one
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command closed the terminal's last writer
                break
            if not chunk:
                break
            received += chunk
        os.close(leader)
        assert process.stderr is not None
        err = process.stderr.read().decode()
        status = process.wait(timeout=120)
    return status, received.decode(), err


def run_python(
    script: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -c SCRIPT ARGS`` in a fresh interpreter (this one's), from the repository unless ``cwd`` says."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=cwd or Path(__file__).parent.parent,
    )


async def final_result(stream: AsyncIterator[str | CreateResult]) -> CreateResult:
    """Consumes a ``create_stream`` to its end; its final ``CreateResult``."""
    final: CreateResult | None = None
    async for item in stream:
        if isinstance(item, CreateResult):
            final = item
    assert final is not None
    return final


class contextlib_entered:  # used as a function: `with contextlib_entered() as entered:`
    """The names of the functions of ``contextlib`` called inside the block, on this thread (a count, not a time).

    A class, not a ``contextlib.contextmanager``: its own exit would be counted.
    """

    def __init__(self) -> None:
        self.entered: list[str] = []

    def _count(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename == contextlib.__file__:
            self.entered.append(frame.f_code.co_name)

    def __enter__(self) -> list[str]:
        sys.setprofile(self._count)
        return self.entered

    def __exit__(self, *exc_info: object) -> None:
        sys.setprofile(None)


def fork_child(work: Callable[[], None], *, forked: threading.Event | None = None, timeout: float = 30) -> int | None:
    """Forks a child that runs ``work`` and waits for it: its exit code (call it from no event loop's thread).

    ``forked`` is set once the child has started. ``None`` for a child still running after ``timeout`` s: it is
    killed then, so that a test fails rather than hangs.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "fork() of a multi-threaded process"
        child = multiprocessing.get_context("fork").Process(target=work)
        child.start()
    if forked is not None:
        forked.set()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        return None
    return child.exitcode


def validating_around_a_wrapped_client(
    inner: str, recorder: UsageRecorder, server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> ReliableChatCompletionClient:
    """A wrapper validating ``{"n": integer}`` around a wrapped client that answers for it, first with text.

    ``inner``: ``nested`` (the wrapped client is the one it wraps) or ``fallback`` (its fallback, the primary
    failing with a 500 before each answer), and ``-unrecorded`` when the wrapped client records nothing. Each
    answer is 20 + 2 tokens: ``no json``, which validation refuses, then ``{"n": 1}``.
    """
    usage = FakeUsage(prompt_tokens=20, completion_tokens=2)
    records = not inner.endswith("-unrecorded")
    wrapped = reliable(
        make_openai_client(), retry=None, **({"recorder": recorder} if records else {"track_usage": False})
    )
    validation = ValidationPolicy(
        schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    )
    if inner.startswith("nested"):
        server.enqueue(FakeReply.text("no json", usage=usage), FakeReply.json({"n": 1}, usage=usage))
        return ReliableChatCompletionClient(wrapped, recorder=recorder, retry=None, validation=validation)
    server.enqueue(
        FakeReply.error(500),
        FakeReply.text("no json", usage=usage),
        FakeReply.error(500),
        FakeReply.json({"n": 1}, usage=usage),
    )
    return reliable(make_openai_client(), recorder=recorder, retry=None, fallbacks=[wrapped], validation=validation)


@pytest.fixture(scope="session", autouse=True)
def usage_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Wrappers without a recorder of their own record to a throw-away database, never the working directory."""
    directory = tmp_path_factory.mktemp("usage")
    configure(db_url=f"sqlite:///{directory / 'usage.db'}", spool_dir=directory / "spool")
    yield
    configure(db_url=f"sqlite:///{directory / 'closed.db'}", spool_dir=directory / "spool")  # closes the recorder


@pytest.fixture
async def make_openai_client(fake_openai_server: FakeOpenAIServer) -> AsyncIterator[OpenAIClientFactory]:
    """Builds AutoGen's real OpenAIChatCompletionClient pointed at ``fake_openai_server``; closes them after the test.

    ``fake_openai_server`` is the pytest plugin's (autogen_reliability.testing.plugin), as a user's tests get it.

    The SDK's own retries are off (``max_retries=0``) unless a test asks for them.
    """
    made: list[OpenAIChatCompletionClient] = []

    def make(**overrides: Any) -> OpenAIChatCompletionClient:
        options: dict[str, Any] = {
            "model": MODEL,
            "api_key": "sk-test",
            "base_url": fake_openai_server.base_url,
            "max_retries": 0,
        }
        options.update(overrides)
        client = OpenAIChatCompletionClient(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly whether the PostgreSQL half of the storage suite ran."""
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if NO_POSTGRESQL in str(report.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"PostgreSQL: {len(skipped)} tests SKIPPED ({NO_POSTGRESQL})", yellow=True, bold=True
        )
    elif any(PG_URL_ENV in key for key in os.environ):
        terminalreporter.write_line(f"PostgreSQL: ran against the server in {PG_URL_ENV}", green=True)
