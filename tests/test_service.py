"""One service with everything mounted (examples/fastapi_app.py): the numbers each route serves agree.

The example's ``make_app`` mounts the health routes, the attribution middleware,
the metrics app and the usage routes around one agent endpoint; here it runs
against FakeOpenAIServer and a real SQLite ledger, through FastAPI's
TestClient. The example itself, run as a script over real HTTP, is
tests/test_examples.py's.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from autogen_ext.models.openai import OpenAIChatCompletionClient
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from autogen_reliability import configure
from autogen_reliability.metrics import disable_metrics
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

EXAMPLE = Path(__file__).parent.parent / "examples" / "fastapi_app.py"
ADMIN = {"Authorization": "Bearer change-me"}


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the request models' annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def app(example: ModuleType, fake_openai_server: FakeOpenAIServer, tmp_path: Path) -> Iterator[FastAPI]:
    """The example's service on a ledger of this test's; the process defaults put back afterwards."""
    before = configure()
    model_client = OpenAIChatCompletionClient(
        model="gpt-4o-mini", api_key="sk-local", base_url=fake_openai_server.base_url
    )
    service: FastAPI = example.make_app(model_client, f"sqlite:///{tmp_path / 'service.db'}")
    yield service
    disable_metrics()
    configure(db_url=before.db_url, spool_dir=before.spool_dir)


def scraped(http: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    page = http.get("/metrics/").text
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == name
    }


def test_a_request_is_attributed_counted_reported_and_healthy(
    app: FastAPI, fake_openai_server: FakeOpenAIServer
) -> None:
    fake_openai_server.enqueue(
        FakeReply.error(429, headers={"retry-after-ms": "10"}),
        FakeReply.text("Refunds take 5 days.", usage=FakeUsage(prompt_tokens=200, completion_tokens=20)),
    )
    headers = {"X-Project-ID": "acme-support", "X-Usage-Tags": "tier=gold"}
    with TestClient(app) as http:
        asked = http.post("/ask", json={"question": "Where is my refund?"}, headers=headers)
        assert asked.status_code == 200
        assert asked.json() == {"answer": "Refunds take 5 days."}
        session = asked.headers["X-Session-ID"]
        assert app.state.client.recorder.flush(timeout=10)

        rows = app.state.store.events(project="acme-support")
        assert [(row.attempt, row.outcome, row.error_kind) for row in rows] == [
            (1, "error", "rate_limit"),
            (2, "ok", None),
        ]
        assert {(row.session, row.agent, row.tags.get("tier")) for row in rows} == {(session, "helper", "gold")}

        attempts = scraped(http, "autogen_reliability_attempts_total")
        assert sum(value for labels, value in attempts.items() if ("project", "acme-support") in labels) == len(rows)
        assert all(session not in str(labels) for labels in attempts)  # sessions are never a label

        report = http.get("/usage/report", params={"project": "acme-support"}, headers=ADMIN).json()
        assert (report["totals"]["calls"], report["totals"]["attempts"]) == (1, 2)
        assert report["totals"]["prompt_tokens"] == 200
        assert http.get("/usage/report", params={"project": "acme-support"}).status_code == 401

        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 200
        summary = http.get("/health", params={"verbose": 0}).json()
        assert summary["components"] == {"openai": "healthy", "usage_store": "healthy"}


def test_an_unknown_project_reaches_neither_the_agent_nor_the_ledger(
    app: FastAPI, fake_openai_server: FakeOpenAIServer
) -> None:
    with TestClient(app) as http:
        refused = http.post("/ask", json={"question": "hi"}, headers={"X-Project-ID": "someone-else"})
        assert refused.status_code == 403
        assert refused.json()["header"] == "X-Project-ID"
        bad = http.post("/ask", json={"question": "hi"}, headers={"X-Project-ID": "acme support; drop"})
        assert bad.status_code == 400
    assert fake_openai_server.request_count == 0
    assert app.state.store.count() == 0


@pytest.mark.autogen_reliability(allow_unused=True)  # enough failures for any number of probes
def test_the_service_is_unready_while_its_only_provider_fails(
    app: FastAPI, fake_openai_server: FakeOpenAIServer
) -> None:
    # Every attempt fails (a 500 the retries see again and again): the error rate makes the client unhealthy.
    fake_openai_server.enqueue(*[FakeReply.error(500) for _ in range(60)])
    with TestClient(app) as http:
        for _ in range(4):
            failed = http.post("/ask", json={"question": "hi"}, headers={"X-Project-ID": "acme-support"})
            assert failed.status_code == 503  # the example's handler of ReliabilityError
            assert failed.json() == {"detail": "the language model is unavailable; try again later"}
        assert http.get("/healthz").status_code == 200  # alive: restarting would not help
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["clients"]["openai"]["status"] == "unhealthy"
