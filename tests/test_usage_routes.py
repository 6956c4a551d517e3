"""usage_router: the ledger's report and sessions over HTTP, judged against the store's own answers.

The ledger is filled the way a service fills it: requests to a FastAPI app with
UsageContextMiddleware, whose endpoint calls a wrapped AutoGen
``OpenAIChatCompletionClient`` on a ``FakeOpenAIServer`` (a rate limit retried,
two projects, sessions, agents, tags), recorded to a real SQLite file. The
usage routes are mounted on the same app behind its own token dependency.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event

from autogen_reliability import ConfigurationError, ReliableChatCompletionClient, RetryPolicy, reliable
from autogen_reliability.accounting import UsageEvent
from autogen_reliability.fastapi import UsageContextMiddleware, usage_router
from autogen_reliability.fastapi._responses import SessionModel, UsageReportModel
from autogen_reliability.fastapi._usage import prefers_html
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

from .conftest import MODEL
from .storage_fixtures import Ledger, open_ledger

TOKEN = "let-me-in"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def require_admin(authorization: str | None = Header(default=None)) -> None:
    """The application's own authentication, as the docs show it."""
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(401, detail="not authenticated")


def make_service(base_url: str, ledger: Ledger, **router_options: Any) -> FastAPI:
    clients: dict[str, ReliableChatCompletionClient] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        inner = OpenAIChatCompletionClient(model=MODEL, api_key="sk-test", base_url=base_url, max_retries=0)
        retry = RetryPolicy(initial_delay=0.01, max_delay=0.02)
        clients["llm"] = reliable(inner, recorder=ledger[1], retry=retry)
        yield
        await inner.close()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(UsageContextMiddleware, exempt_paths=["/usage", "/admin", "/loop"])

    @app.post("/ask")
    async def ask() -> dict[str, Any]:
        result = await clients["llm"].create([UserMessage(content="hi", source="user")])
        return {"answer": result.content}

    @app.get("/loop")
    async def loop_thread() -> dict[str, int]:
        return {"thread": threading.get_ident()}  # the thread the event loop runs on

    app.include_router(usage_router(ledger[0], **router_options), dependencies=[Depends(require_admin)])
    return app


@dataclass
class Service:
    client: TestClient
    store: UsageStore
    server: FakeOpenAIServer


CALLS = [
    # headers, replies the provider gives
    (
        {"X-Project-ID": "acme-support", "X-Session-ID": "t-1", "X-Agent-Name": "writer", "X-Usage-Tags": "tier=gold"},
        [FakeReply.error(429, headers={"retry-after-ms": "1"}), FakeReply.text("a", usage=FakeUsage(1200, 80))],
    ),
    (
        {"X-Project-ID": "acme-support", "X-Session-ID": "t-1", "X-Agent-Name": "writer", "X-Usage-Tags": "tier=gold"},
        [FakeReply.text("b", usage=FakeUsage(1500, 60, cached_tokens=256, cache_write_tokens=1024))],
    ),
    (
        {"X-Project-ID": "acme-support", "X-Session-ID": "t-2", "X-Agent-Name": "critic"},
        [FakeReply.text("c", usage=FakeUsage(300, 20))],
    ),
    ({"X-Project-ID": "acme-sales", "X-Session-ID": "s-1"}, [FakeReply.text("d", usage=FakeUsage(50, 5))]),
]


@pytest.fixture
def service(fake_openai_server: FakeOpenAIServer, tmp_path: Path) -> Iterator[Service]:
    """The app, after four requests (five attempts) were served and recorded."""
    with (
        open_ledger(f"sqlite:///{tmp_path / 'usage.db'}", tmp_path / "spool") as ledger,
        TestClient(make_service(fake_openai_server.base_url, ledger)) as client,
    ):
        for headers, replies in CALLS:
            fake_openai_server.enqueue(*replies)
            assert client.post("/ask", headers=headers).status_code == 200
        assert ledger[1].flush(10)
        assert ledger[0].count() == 5
        yield Service(client, ledger[0], fake_openai_server)


def without_time(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key != "generated_at"}


# --------------------------------------------------------------------------- the report


def test_the_json_report_is_the_stores_report(service: Service) -> None:
    reply = service.client.get("/usage/report", params={"project": "acme-support"}, headers=ADMIN)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "private, no-store"
    assert reply.headers["vary"] == "Accept"
    served = reply.json()
    assert without_time(served) == without_time(service.store.report("acme-support").to_dict())
    assert (served["totals"]["calls"], served["totals"]["attempts"], served["totals"]["errors"]) == (3, 4, 1)
    assert served["totals"]["prompt_tokens"] == 1200 + 1500 + 300
    assert (served["totals"]["cached_tokens"], served["totals"]["cache_write_tokens"]) == (256, 1024)
    by_model = {group["key"]["model"]: group["cache_write_tokens"] for group in served["by_model"]}
    assert by_model == {"gpt-4o-mini": 1024}


def test_every_format_of_a_report_shows_the_cache_writes(service: Service) -> None:
    report = service.store.report("acme-support")
    assert report.totals.cache_write_tokens == 1024
    assert "| Cache-write prompt tokens | 1,024 |" in report.to_markdown()
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert sum(int(row["cache_write_tokens"]) for row in rows) == 1024
    assert sum(int(row["cached_tokens"]) for row in rows) == 256
    assert "cache writes 1,024" in report.to_html()
    assert "Cache writes" in service.client.get("/usage/report", headers={**ADMIN, "Accept": BROWSER}).text


def test_every_filter_reaches_the_store(service: Service) -> None:
    params: dict[str, Any] = {
        "project": "acme-support",
        "since": "2000-01-01",
        "until": "2100-01-01T00:00:00+02:00",
        "session": "t-1",
        "agent": "writer",
        "tag": ["tier=gold"],
        "by": "session, model",
        "top": "1",
    }
    served = service.client.get("/usage/report", params=params, headers=ADMIN).json()
    expected = service.store.report(
        "acme-support",
        since=datetime(2000, 1, 1, tzinfo=UTC),
        until=datetime(2099, 12, 31, 22, tzinfo=UTC),
        session="t-1",
        agent="writer",
        tags={"tier": "gold"},
        group_by=("session", "model"),
        top=1,
    )
    assert without_time(served) == without_time(expected.to_dict())
    assert served["totals"]["calls"] == 2
    assert [group["key"] for group in served["breakdown"]] == [{"session": "t-1", "model": MODEL}]


def test_every_project_without_a_project_filter(service: Service) -> None:
    served = service.client.get("/usage/report", headers=ADMIN).json()
    assert without_time(served) == without_time(service.store.report().to_dict())
    assert served["totals"]["calls"] == 4


def test_a_time_ago_is_taken_from_the_time_of_the_request(service: Service) -> None:
    before = datetime.now(UTC)
    served = service.client.get("/usage/report", params={"since": "7d"}, headers=ADMIN).json()
    after = datetime.now(UTC)
    since = datetime.fromisoformat(served["filters"]["since"])
    assert before - timedelta(days=7) <= since <= after - timedelta(days=7)
    assert served["totals"]["calls"] == 4
    tomorrow = (after + timedelta(days=1)).date().isoformat()
    assert service.client.get("/usage/report", params={"since": tomorrow}, headers=ADMIN).json()["totals"]["calls"] == 0


@pytest.mark.parametrize("route", ["/usage/report", "/usage/sessions"])
def test_an_offset_typed_into_the_url_with_its_plus_is_that_offset(service: Service, route: str) -> None:
    # As a person writes it in a URL (curl, a browser's address bar): the query string reads "+" as a space.
    for written, since in [
        ("2025-05-01T09:30:00+02:00", "2025-05-01T07:30:00+00:00"),
        ("2025-05-01%2009:30+0530", "2025-05-01T04:00:00+00:00"),
        ("2025-05-01T09:30:00.5+02", "2025-05-01T07:30:00.500000+00:00"),
        ("2025-05-01T09:30:00%2B02:00", "2025-05-01T07:30:00+00:00"),  # encoded, as httpx sends it
    ]:
        reply = service.client.get(f"{route}?since={written}", headers=ADMIN)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert (body["filters"] if route == "/usage/report" else body)["since"] == since
    # A space that stood for no "+" is still refused, with the text as it arrived.
    reply = service.client.get(f"{route}?since=2025-05-01%2009:30", headers=ADMIN)
    assert reply.status_code == 400
    assert reply.json()["detail"].startswith("since: '2025-05-01 09:30' has no UTC offset")


def test_a_browser_gets_the_self_contained_html_report(service: Service) -> None:
    reply = service.client.get(
        "/usage/report", params={"project": "acme-support"}, headers={**ADMIN, "Accept": BROWSER}
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert reply.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    page = reply.text
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "acme-support" in page
    assert "<svg" in page  # the charts, inline
    # Self-contained: every address in the page is inline data or a place in the page; no script at all.
    addresses = re.findall(r"""\b(?:src|href|action)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.IGNORECASE)
    assert addresses
    assert all(address.startswith(("data:", "#")) for address in addresses), addresses
    assert "<script" not in page.lower()
    assert "url(" not in page.replace("url(#", "")
    report = service.store.report("acme-support")
    assert report.to_html().count("<tr") == page.count("<tr")  # the same tables as the store's report renders


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("", False),
        ("*/*", False),  # curl, httpx: no preference, JSON
        ("application/json", False),
        ("text/html", True),
        (BROWSER, True),
        ("text/*", True),
        ("application/json, text/html", False),  # a tie goes to JSON
        ("application/json;q=0.5, text/html", True),
        ("text/html;q=0.5, application/json", False),
        ("text/html;q=0", False),
        ("text/html;q=nope", False),
        ("text/html;q=nan, application/json;q=0.1", False),
        ("TEXT/HTML", True),
        ("text/html;level=1;q=0.9, */*;q=0.1", True),
        ("image/png", False),
    ],
)
def test_html_is_sent_only_when_accept_prefers_it(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


BAD_REPORTS = [
    ({"since": "last tuesday"}, "since: 'last tuesday' is not a date (2025-05-01), a date and time"),
    ({"since": "2025-05-01T09:30"}, "since: '2025-05-01T09:30' has no UTC offset; add one"),
    ({"until": "0d"}, "until: '0d' is no time at all"),
    ({"since": "2025-05-02", "until": "2025-05-01"}, "until (2025-05-01T00:00:00+00:00) is before since"),
    ({"by": "nope"}, "unknown group_by column 'nope': choose from project, session"),
    ({"by": "agent,agent"}, "group_by names 'agent' more than once"),
    ({"by": "tag:"}, "group_by column 'tag:': a tag key must be a non-empty string"),
    ({"top": "0"}, "top: Input should be greater than or equal to 1, got '0'"),
    ({"top": "1001"}, "top: Input should be less than or equal to 1000"),
    ({"top": "many"}, "top: Input should be a valid integer"),
    ({"tag": "tier"}, "tag: 'tier' is not KEY=VALUE"),
    ({"tag": ["a=1", "a=2"]}, "tag: 'a' is given twice"),
    ({"tag": 'a"b=1'}, 'tags: tag keys with a double quote (") cannot be reported on'),
    # In range as written, out of range once in UTC: the year 1 at +14:00 is the year 0.
    ({"since": "0001-01-01T00:00:00+14:00"}, "since: '0001-01-01T00:00:00+14:00' is outside the years 1 to 9999"),
    ({"until": "9999-12-31T23:59:59-14:00"}, "until: '9999-12-31T23:59:59-14:00' is outside the years 1 to 9999"),
    ({"since": "1" * 4301 + "d"}, "since: '11111111"),
    ({"since": "99999999999999w"}, "since: '99999999999999w' is longer than any date can go back"),
    ({"since": "\uff11d"}, "since: '\uff11d' is not a date"),  # a full-width 1: the digits are ASCII
]


@pytest.mark.parametrize(("params", "message"), BAD_REPORTS)
def test_a_bad_parameter_is_a_400_with_one_message(service: Service, params: dict[str, Any], message: str) -> None:
    reply = service.client.get("/usage/report", params=params, headers=ADMIN)
    assert reply.status_code == 400
    body = reply.json()
    assert list(body) == ["detail"]
    assert isinstance(body["detail"], str)
    assert body["detail"].startswith(message)


def test_a_bad_parameter_is_a_400_for_a_browser_too(service: Service) -> None:
    reply = service.client.get("/usage/report", params={"since": "soon"}, headers={**ADMIN, "Accept": BROWSER})
    assert reply.status_code == 400
    assert reply.json()["detail"].startswith("since: 'soon' is not a date")


KEY = "sk-proj-SECRETKEYabcdef1234567890XYZ"


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/usage/report", {"since": KEY}, "since: '[REDACTED]' is not a date"),
        ("/usage/sessions", {"until": KEY}, "until: '[REDACTED]' is not a date"),
        ("/usage/report", {"by": KEY}, "unknown group_by column '[REDACTED]'"),
        ("/usage/report", {"tag": f'a"{KEY}=1'}, "tag keys with a double quote"),
        ("/usage/report", {"tag": [f"{KEY}=1", f"{KEY}=2"]}, "tag: '[REDACTED]' is given twice"),
        ("/usage/report", {"since": "x" * 5000}, "since: 'xxxxxxxx"),
        ("/usage/report", {"by": "y" * 5000}, "unknown group_by column 'yyyyyyyy"),
    ],
)
def test_a_value_quoted_back_hides_a_key_and_is_cut_short(
    service: Service, path: str, params: dict[str, Any], message: str
) -> None:
    reply = service.client.get(path, params=params, headers=ADMIN)
    assert reply.status_code == 400
    detail = reply.json()["detail"]
    assert "SECRETKEY" not in detail
    assert message in detail or detail.startswith(message)
    assert len(detail) < 300


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        ("/usage/report", "project=%00", "project must not contain"),
        ("/usage/report", "session=a%00b", "session must not contain"),
        ("/usage/report", "agent=%00", "agent must not contain"),
        ("/usage/report", "tag=k=%00", "tags: the value of 'k' must not contain"),
        ("/usage/report", "tag=%00=v", "tags: a tag key must not contain"),
        ("/usage/report", "by=tag:%00", "a tag key must not contain"),
        ("/usage/sessions", "project=%00", "project must not contain"),
    ],
)
def test_a_nul_in_a_filter_is_a_400(service: Service, path: str, query: str, message: str) -> None:
    reply = service.client.get(f"{path}?{query}", headers=ADMIN)
    assert reply.status_code == 400
    assert message in reply.json()["detail"]


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        (
            "/usage/sessions",
            "agent=writer",
            "agent is not a parameter of /usage/sessions; it takes project, since, until, limit",
        ),
        ("/usage/sessions", "project=acme-support&top=3", "top is not a parameter of /usage/sessions"),
        ("/usage/sessions", "tag=tier=gold", "tag is not a parameter of /usage/sessions"),
        (
            "/usage/report",
            "limit=5",
            "limit is not a parameter of /usage/report; it takes project, since, until, session, agent, tag, by, top",
        ),
        ("/usage/sessions", "project=acme-support&project=acme-sales", "project is given 2 times; give it once"),
        ("/usage/report", "top=1&top=2", "top is given 2 times; give it once"),
        ("/usage/sessions", "project=", "project is empty or blank: no call is attributed to such a name"),
        ("/usage/report", "project=", "project is empty or blank: no call is attributed to such a name"),
        ("/usage/report", "session=%20", "session is empty or blank: no call is attributed to such a name"),
        ("/usage/report", "agent=", "agent is empty or blank: no call is attributed to such a name"),
    ],
)
def test_a_parameter_of_the_other_route_one_given_twice_or_a_blank_name_is_a_400(
    service: Service, path: str, query: str, message: str
) -> None:
    # /usage/sessions?agent=writer answered every agent's sessions, project=a&project=b read b, project= was empty.
    for method in (service.client.get, service.client.head):
        reply = method(f"{path}?{query}", headers=ADMIN)
        assert (reply.status_code, reply.headers["cache-control"]) == (400, "private, no-store")
        if method is service.client.get:
            assert reply.json() == {"detail": message}
    # The caller's authentication comes first.
    assert service.client.get(f"{path}?{query}").status_code == 401


def test_tags_repeat_and_parameters_of_neither_route_are_left_to_the_app(service: Service) -> None:
    # A gateway's or the app's own parameters (a cache-buster, a token its dependency reads) are not ours to refuse.
    assert service.client.get("/usage/report?tag=tier=gold&tag=a=b&_=1733500000", headers=ADMIN).status_code == 200
    assert service.client.get("/usage/sessions?utm_source=mail", headers=ADMIN).status_code == 200


# --------------------------------------------------------------------------- sessions


def test_the_sessions_are_the_stores_sessions(service: Service) -> None:
    reply = service.client.get("/usage/sessions", params={"project": "acme-support"}, headers=ADMIN)
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "private, no-store"
    served = reply.json()
    assert served["sessions"] == [summary.to_dict() for summary in service.store.sessions("acme-support")]
    assert {session["session"]: session["calls"] for session in served["sessions"]} == {"t-1": 2, "t-2": 1}
    assert (served["project"], served["since"], served["until"], served["limit"]) == ("acme-support", None, None, 50)
    t1 = next(session for session in served["sessions"] if session["session"] == "t-1")
    assert (t1["attempts"], t1["errors"], t1["prompt_tokens"]) == (3, 1, 2700)


def test_sessions_of_every_project_limited_and_bounded(service: Service) -> None:
    everything = service.client.get("/usage/sessions", headers=ADMIN).json()["sessions"]
    assert sorted((s["project"], s["session"]) for s in everything) == [
        ("acme-sales", "s-1"),
        ("acme-support", "t-1"),
        ("acme-support", "t-2"),
    ]
    latest = service.client.get("/usage/sessions", params={"limit": 1}, headers=ADMIN).json()["sessions"]
    assert latest == everything[:1]
    future = service.client.get("/usage/sessions", params={"since": "2100-01-01"}, headers=ADMIN).json()
    assert future["sessions"] == []
    assert future["since"] == "2100-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit: Input should be greater than or equal to 1, got '0'"),
        ({"limit": "1001"}, "limit: Input should be less than or equal to 1000"),
        ({"since": "yesterday"}, "since: 'yesterday' is not a date"),
        ({"until": "9999-12-31T23:59:59-14:00"}, "until: '9999-12-31T23:59:59-14:00' is outside the years"),
        ({"since": "2" * 5000 + "h"}, "since: '22222222"),
        ({"since": "2025-05-02", "until": "2025-05-01"}, "until (2025-05-01T00:00:00+00:00) is before since"),
    ],
)
def test_bad_session_parameters_are_a_400(service: Service, params: dict[str, str], message: str) -> None:
    reply = service.client.get("/usage/sessions", params=params, headers=ADMIN)
    assert reply.status_code == 400
    assert reply.json()["detail"].startswith(message)


# --------------------------------------------------------------------------- mounting


def test_the_apps_own_dependency_guards_the_routes(service: Service) -> None:
    for path in ("/usage/report", "/usage/sessions"):
        assert service.client.get(path).status_code == 401
        assert service.client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert service.client.get(path, headers=ADMIN).status_code == 200


def test_every_answer_of_the_routes_says_private_no_store_a_refusal_too(service: Service) -> None:
    # Costs per customer, and what was refused about them: no cache between keeps either. A 400, a 405 and the
    # app's own dependency's 401 lacked the header the reports carry.
    http = service.client
    answers = {
        "400 report": http.get("/usage/report", params={"since": "yesterday"}, headers=ADMIN),
        "400 top": http.get("/usage/report", params={"top": "0"}, headers={**ADMIN, "Accept": BROWSER}),
        "400 sessions": http.get("/usage/sessions", params={"limit": "ten"}, headers=ADMIN),
        "401": http.get("/usage/report"),
        "405": http.post("/usage/report", headers=ADMIN),
        "405 sessions": http.delete("/usage/sessions", headers=ADMIN),
    }
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "400 report": 400,
        "400 top": 400,
        "400 sessions": 400,
        "401": 401,
        "405": 405,
        "405 sessions": 405,
    }
    assert {name: answer.headers.get("cache-control") for name, answer in answers.items()} == dict.fromkeys(
        answers, "private, no-store"
    )
    assert answers["405"].headers["allow"] == answers["405 sessions"].headers["allow"] == "GET, HEAD"
    # The app's own routes answer as FastAPI makes them.
    assert http.get("/ask").status_code == 405
    assert "cache-control" not in http.get("/ask").headers
    assert "cache-control" not in http.get("/loop").headers


def test_head_answers_each_route_as_get_does_without_a_body(service: Service) -> None:
    # Uptime monitors and load balancers probe with HEAD: it was a 405.
    http = service.client
    for path, params in (("/usage/report", {"project": "acme-support"}), ("/usage/sessions", {"limit": "1"})):
        got, head = http.get(path, params=params, headers=ADMIN), http.head(path, params=params, headers=ADMIN)
        assert (got.status_code, head.status_code, head.content) == (200, 200, b"")
        assert {**head.headers, "x-session-id": ""} == {**got.headers, "x-session-id": ""}
    refused = {
        "400": http.head("/usage/report", params={"since": "yesterday"}, headers=ADMIN),
        "401": http.head("/usage/sessions"),
    }
    assert {name: (answer.status_code, answer.headers["cache-control"]) for name, answer in refused.items()} == {
        "400": (400, "private, no-store"),
        "401": (401, "private, no-store"),
    }


def test_a_prefix_goes_before_the_paths(tmp_path: Path) -> None:
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as store:
        app = FastAPI()
        app.include_router(usage_router(store, prefix="/admin"))
        client = TestClient(app)
        assert client.get("/admin/usage/report").json()["totals"]["calls"] == 0
        assert client.get("/admin/usage/sessions").json()["sessions"] == []
        assert client.get("/usage/report").status_code == 404


def test_the_database_work_runs_off_the_event_loop(service: Service) -> None:
    threads: set[int] = set()

    def executed(*_: Any) -> None:
        threads.add(threading.get_ident())

    event.listen(service.store.engine, "before_cursor_execute", executed)
    try:
        assert service.client.get("/usage/report", headers=ADMIN).status_code == 200
        assert service.client.get("/usage/sessions", headers=ADMIN).status_code == 200
    finally:
        event.remove(service.store.engine, "before_cursor_execute", executed)
    loop = service.client.get("/loop").json()["thread"]
    assert threads
    assert loop not in threads


def test_an_unreachable_database_is_a_503_that_names_no_path(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "ledger-dir"
    directory.mkdir()
    with (
        open_ledger(f"sqlite:///{directory / 'usage.db'}", tmp_path / "spool") as ledger,
        TestClient(make_service(fake_openai_server.base_url, ledger)) as client,
    ):
        ledger[0].close()  # no connection left open in the pool
        shutil.rmtree(directory)  # SQLite cannot open a file in a directory that is gone
        reply = client.get("/usage/report", headers=ADMIN)
        sessions = client.get("/usage/sessions", headers=ADMIN)
    assert (reply.status_code, sessions.status_code) == (503, 503)
    assert reply.json() == {"detail": "the usage database cannot be reached; try again later"}
    assert reply.headers["cache-control"] == sessions.headers["cache-control"] == "private, no-store"
    assert str(directory) not in reply.text
    logged = [record.getMessage() for record in caplog.records if record.name == "autogen_reliability"]
    assert "the usage routes cannot read the ledger: unable to open database file" in logged


def not_a_database(path: Path) -> None:
    path.write_bytes(b"these are not the rows you are looking for\n" * 200)


def malformed(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # SQLite's header kept, every page after it garbage
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "said"),
    [(not_a_database, "file is not a database"), (malformed, "database disk image is malformed")],
)
def test_a_ledger_file_the_database_cannot_read_is_a_503_logged_redacted(
    service: Service, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None], said: str
) -> None:
    path = Path(str(service.store.engine.url.database))
    service.store.close()  # no connection left open in the pool
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    damage(path)
    reply = service.client.get("/usage/report", headers=ADMIN)
    html = service.client.get("/usage/report", headers={**ADMIN, "Accept": BROWSER})
    sessions = service.client.get("/usage/sessions", headers=ADMIN)
    assert (reply.status_code, html.status_code, sessions.status_code) == (503, 503, 503)
    assert {answer.headers["cache-control"] for answer in (reply, html, sessions)} == {"private, no-store"}
    assert reply.json() == sessions.json() == {"detail": "the usage database cannot be read; see the service's log"}
    assert str(path) not in reply.text
    logged = [record.getMessage() for record in caplog.records if record.name == "autogen_reliability"]
    assert f"the usage routes cannot read the ledger: {said}" in logged


def test_a_database_with_no_connection_free_is_a_503(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    # A pool of one connection, held by someone else: every report waits pool_timeout, then SQLAlchemy gives up.
    engine = create_engine(service.store.engine.url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    app = FastAPI()
    app.include_router(usage_router(UsageStore(engine)), dependencies=[Depends(require_admin)])
    held = engine.connect()
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            reply = client.get("/usage/report", headers=ADMIN)
            sessions = client.get("/usage/sessions", headers=ADMIN)
    finally:
        held.close()
        engine.dispose()
    assert (reply.status_code, sessions.status_code) == (503, 503)
    assert reply.json() == sessions.json() == {"detail": "the usage database is busy; try again later"}
    assert {answer.headers["cache-control"] for answer in (reply, sessions)} == {"private, no-store"}
    logged = [record.getMessage() for record in caplog.records if record.name == "autogen_reliability"]
    assert any(message.startswith("the usage routes cannot read the ledger: QueuePool limit") for message in logged)


def test_the_openapi_schema_describes_the_routes(service: Service) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns of a duplicate operation id
        schema = service.client.app.openapi()  # type: ignore[attr-defined]
    report = schema["paths"]["/usage/report"]["get"]
    # A bad parameter is a 400, never FastAPI's 422; 4XX: what the app's own dependencies refuse (its auth).
    assert set(report["responses"]) == {"200", "400", "4XX", "503"}
    ok = report["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/UsageReportModel"}
    assert "text/html" in ok
    assert report["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorModel"
    }
    top = next(parameter for parameter in report["parameters"] if parameter["name"] == "top")
    assert (top["schema"]["minimum"], top["schema"]["maximum"], top["schema"]["default"]) == (1, 1000, 10)
    sessions = schema["paths"]["/usage/sessions"]["get"]
    assert set(sessions["responses"]) == {"200", "400", "4XX", "503"}
    # HEAD answers too, but only the GET operations are in the schema: no second operation, no duplicate id.
    assert {path: list(operations) for path, operations in schema["paths"].items() if path.startswith("/usage")} == {
        "/usage/report": ["get"],
        "/usage/sessions": ["get"],
    }
    components = schema["components"]["schemas"]
    assert components["SessionModel"]["properties"]["cost_usd"]["type"] == "string"
    assert "totals" in components["UsageReportModel"]["properties"]


# --------------------------------------------------------------------------- the response models


def _events() -> list[UsageEvent]:
    """A day of usage that fills every part of a report: retries, a re-ask, an unpriced model, growing sessions."""
    start = datetime(2025, 5, 1, 9, tzinfo=UTC)
    made = []
    for number in range(12):
        call = uuid.uuid4()
        model = "acme-internal-7b" if number == 11 else "gpt-4o-mini"
        at = start + timedelta(minutes=number)
        prompt, completion = 1000 * (number + 1), 50

        def attempt(
            attempt: int,
            outcome: str,
            tokens: tuple[int, int],
            agent: str,
            *,
            call: uuid.UUID = call,
            at: datetime = at,
            model: str = model,
            number: int = number,
        ) -> UsageEvent:
            # gpt-4o-mini at $0.15 / $0.60 per million tokens: 150 and 600 nano-USD a token; the other has no price.
            cost = tokens[0] * 150 + tokens[1] * 600 if model == "gpt-4o-mini" else None
            return UsageEvent(
                call,
                attempt,
                at + timedelta(seconds=attempt),
                latency_ms=400.0 + number,
                project="acme",
                session=f"session-{number % 2}",
                agent=agent,
                provider="openai",
                model=model,
                prompt_tokens=tokens[0],
                completion_tokens=tokens[1],
                cost_nanousd=cost,
                outcome=outcome,  # type: ignore[arg-type]
                error_kind="rate_limit" if outcome == "error" else None,
            )

        if number % 3 == 0:
            made += [attempt(1, "error", (0, 0), "writer"), attempt(2, "ok", (prompt, completion), "writer")]
        else:
            made.append(attempt(1, "invalid" if number == 4 else "ok", (prompt, completion), "critic"))
    return made


def test_the_response_models_are_the_reports_dicts_exactly() -> None:
    with UsageStore("sqlite://") as store:
        store.write(_events())
        report = store.report("acme", top=5).to_dict()
        sessions = [summary.to_dict() for summary in store.sessions("acme")]
    for part in ("breakdown", "by_model", "by_agent", "daily", "top_sessions", "session_growth", "recommendations"):
        assert report[part], f"the example fills no {part}: the check below would not cover it"
    assert UsageReportModel.model_validate(report).model_dump() == report
    assert [SessionModel.model_validate(summary).model_dump() for summary in sessions] == sessions


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"store": "sqlite:///usage.db"}, "store must be a UsageStore, got str"),
        ({"prefix": "admin"}, "prefix must be empty or a path such as '/admin'"),
        ({"prefix": "/admin/"}, "prefix must be empty or a path"),
        ({"pricing": {"models": {}}}, "pricing must be a PricingTable, got dict"),
    ],
)
def test_bad_arguments_are_refused_when_the_router_is_made(arguments: dict[str, Any], message: str) -> None:
    with UsageStore("sqlite://") as store, pytest.raises(ConfigurationError, match=re.escape(message)):
        usage_router(**{"store": store, **arguments})
