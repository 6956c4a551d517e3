"""Helpers of the command-line tests: a small usage ledger, and running the command in this process.

The ledger has sessions, retries, re-asks, unpriced and old rows, and names that look like markup.

Times are relative to the moment the events are made, and none lies near a
boundary the tests use (``7d``, ``30d``, ``90d``), so a command run a little
later selects the same rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from autogen_reliability._cli import main
from autogen_reliability.accounting._events import UsageEvent

__all__ = ["PROJECT", "assert_one_line_error", "event", "exact_usd", "run_main", "sample_events"]

PROJECT = "acme-support"


def event(started_at: datetime, **changes: Any) -> UsageEvent:
    """A first attempt of a new call of ``PROJECT`` by the writer on gpt-4o-mini, priced, unless ``changes`` say."""
    values: dict[str, Any] = {
        "call_id": uuid.uuid4(),
        "attempt": 1,
        "started_at": started_at,
        "latency_ms": 250.0,
        "project": PROJECT,
        "agent": "writer",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cost_nanousd": 1_000,
    }
    values.update(changes)
    return UsageEvent(**values)


def sample_events(now: datetime | None = None) -> list[UsageEvent]:
    """The ledger: recent sessions of ``PROJECT``, a row outside any session, old rows, another project."""
    now = now or datetime.now(UTC)
    day = timedelta(days=1)
    retried, reasked = uuid.uuid4(), uuid.uuid4()
    return [
        # ticket-1, two days ago: a rate limit then a success (with captured content), and a costly critic call.
        event(now - 2 * day, call_id=retried, session="ticket-1", outcome="error", error_kind="rate_limit",
              http_status=429, prompt_tokens=0, completion_tokens=0, cost_nanousd=None),
        event(now - 2 * day + timedelta(seconds=2), call_id=retried, attempt=2, session="ticket-1",
              cost_nanousd=1_234_567, request_content='[{"role": "user", "content": "hi"}]', response_content="Hello"),
        event(now - 2 * day + timedelta(minutes=5), session="ticket-1", agent="critic", model="gpt-4o",
              cost_nanousd=2_000_000_001, tags={"customer": "globex"}),
        # ticket-2, ten days ago: an answer that failed validation, re-asked.
        event(now - 10 * day, call_id=reasked, session="ticket-2", outcome="invalid", validation_errors=2,
              cost_nanousd=500, tags={"customer": "initech"}),
        event(now - 10 * day + timedelta(seconds=3), call_id=reasked, attempt=2, session="ticket-2",
              cost_nanousd=700, tags={"customer": "initech"}),
        # A session named like rich markup, on a model without a price.
        event(now - 5 * day, session="[red]boom[/red]", agent="<script>x</script>", model="local-llm",
              provider=None, cost_nanousd=None),
        # Outside any session, yesterday.
        event(now - day, cost_nanousd=42),
        # Old: kept by a 120-day retention, gone with 90 days; one with content.
        event(now - 100 * day, session="ticket-old", cost_nanousd=3, response_content="old answer"),
        event(now - 200 * day, session="ticket-older", cost_nanousd=4, request_content="old question"),
        # Another project.
        event(now - 3 * day, project="other", session="x-1", cost_nanousd=9_999),
    ]  # fmt: skip


def exact_usd(nanousd: int) -> Decimal:
    """What ``nanousd`` nano-USD are in USD, computed here independently of the library."""
    return Decimal(nanousd) / Decimal(10**9)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``autogen-reliability ARGS`` in this process: exit status, stdout, stderr."""
    try:
        status = main(list(args))
    except SystemExit as exit_:  # argparse's errors
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, out: str, err: str, expected: int, *fragments: str) -> None:
    """The command failed with ``expected``, said so in exactly one line on stderr, and nothing else."""
    assert status == expected, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("autogen-reliability")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]
