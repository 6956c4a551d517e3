"""The report's recommendations, end to end: rows written to a real ledger, the report read back from SQL.

tests/test_recommend.py checks each rule's figure, threshold and saving on
numbers made by hand; this checks that the numbers the store aggregates reach
the rules: a ledger with each problem gets each finding, a healthy one none.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from autogen_reliability.accounting import UsageEvent
from autogen_reliability.reports import ReportThresholds
from autogen_reliability.storage import UsageStore

START = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
PROJECT = "acme-support"


def attempt(call: uuid.UUID, number: int, minute: int, **fields: object) -> UsageEvent:
    values: dict[str, object] = {
        "project": PROJECT,
        "provider": "openai",
        "model": "gpt-4o",
        "agent": "writer",
        "prompt_tokens": 1500,
        "completion_tokens": 200,
        "cost_nanousd": 5_750_000,  # gpt-4o: 1500 x $2.50/M + 200 x $10/M
    }
    values.update(fields)
    return UsageEvent(call, number, START + timedelta(minutes=minute), latency_ms=900.0, **values)  # type: ignore[arg-type]


def troubled() -> Iterator[UsageEvent]:
    """Re-asks and their waste on gpt-4o, an expensive planner, a growing session, no cache, an unpriced model."""
    for index in range(30):
        call = uuid.uuid4()
        if index < 10:  # a third of the writer's answers were refused and re-asked
            yield attempt(call, 1, index, outcome="invalid", validation_errors=2)
            yield attempt(call, 2, index)
        else:
            yield attempt(call, 1, index)
    for index in range(6):  # one session whose prompt grows from 1,000 to 6,000 tokens: context never trimmed
        yield attempt(uuid.uuid4(), 1, 40 + index, session="ticket-9", prompt_tokens=1000 * (index + 1))
    for index in range(2):  # 2 calls of 38, a large share of the cost
        yield attempt(uuid.uuid4(), 1, 50 + index, agent="planner", cost_nanousd=120_000_000)
    yield attempt(uuid.uuid4(), 1, 60, agent="triage", model="acme-local-7b", provider=None, cost_nanousd=None)


def healthy() -> Iterator[UsageEvent]:
    """Every answer used, the prompt cache hit, one agent, steady prompts, every model priced."""
    for index in range(40):
        yield attempt(uuid.uuid4(), 1, index, session=f"ticket-{index % 4}", cached_tokens=1200)


def report_codes(url: str, events: list[UsageEvent]) -> dict[str, list[dict[str, str | None]]]:
    with UsageStore(url) as store:
        store.write(events)
        report = store.report(PROJECT, since=date(2025, 6, 2))
    found: dict[str, list[dict[str, str | None]]] = {}
    for finding in report.recommendations:
        assert finding.message, finding
        found.setdefault(finding.code, []).append(dict(finding.subject))
    return found


def test_a_troubled_ledger_gets_each_finding(store_url: str) -> None:
    found = report_codes(store_url, list(troubled()))
    assert set(found) == {
        "retry_waste",
        "reask_rate",
        "agent_cost_share",
        "prompt_growth",
        "cache_unused",
        "unpriced_models",
    }
    assert [subject.get("model") for subject in found["retry_waste"]] == ["gpt-4o"]
    assert any(subject.get("agent") == "planner" for subject in found["agent_cost_share"])
    assert any(subject.get("session") == "ticket-9" for subject in found["prompt_growth"])
    assert found["unpriced_models"] == [{"models": "acme-local-7b"}]


def test_a_healthy_ledger_gets_none(store_url: str) -> None:
    assert report_codes(store_url, list(healthy())) == {}


def test_thresholds_are_the_reports_parameters(tmp_path: Path) -> None:
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as store:
        store.write(list(troubled()))
        lenient = ReportThresholds(
            retry_waste_share=0.9, reask_rate=0.9, agent_cost_ratio=100.0, prompt_growth=100.0, cached_token_rate=0.0
        )
        codes = {finding.code for finding in store.report(PROJECT, thresholds=lenient).recommendations}
    assert codes == {"unpriced_models"}  # any unpriced attempt is reported, whatever the thresholds
