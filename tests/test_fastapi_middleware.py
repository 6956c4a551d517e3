"""UsageContextMiddleware: request headers -> the usage rows of the LLM calls the request makes.

A FastAPI app with a wrapped AutoGen ``OpenAIChatCompletionClient`` talking HTTP
to a ``FakeOpenAIServer``, recording to a real SQLite ledger; the rows are read
back from the store. FastAPI's ``TestClient`` drives the app (its lifespan makes
and closes the model client on the app's own event loop).
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from autogen_core.models import CreateResult, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from fastapi import FastAPI, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from autogen_reliability import ConfigurationError, ReliableChatCompletionClient, current_attribution, reliable
from autogen_reliability.accounting import UsageEvent
from autogen_reliability.fastapi import UsageContextMiddleware
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

from .conftest import MODEL, run_python
from .storage_fixtures import Ledger, ledger_rows

HI = [UserMessage(content="hi", source="user")]
ATTRIBUTION = {
    "X-Project-ID": "acme-support",
    "X-Session-ID": "ticket-4711",
    "X-Agent-Name": "writer",
    "X-Usage-Tags": "tier=gold, region=eu-west.1",
}


def rows(ledger: Ledger) -> list[UsageEvent]:
    return ledger_rows(ledger)


def who(row: UsageEvent) -> tuple[str | None, str | None, str | None, dict[str, str]]:
    return row.project, row.session, row.agent, dict(row.tags)


def _attribution() -> dict[str, Any]:
    current = current_attribution()
    return {"project": current.project, "session": current.session, "agent": current.agent, "tags": dict(current.tags)}


def make_app(base_url: str, ledger: Ledger, *, bound: dict[str, Any] | None = None, **options: Any) -> FastAPI:
    """The service under test: one wrapped model client, the middleware with ``options``, a few endpoints."""
    clients: dict[str, ReliableChatCompletionClient] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        inner = OpenAIChatCompletionClient(model=MODEL, api_key="sk-test", base_url=base_url, max_retries=0)
        clients["llm"] = reliable(inner, recorder=ledger[1], **(bound or {}))
        yield
        await inner.close()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(UsageContextMiddleware, **options)

    @app.post("/ask")
    async def ask() -> dict[str, Any]:
        result = await clients["llm"].create(HI)
        return {"answer": result.content, "attribution": _attribution()}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "attribution": _attribution()}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            yield "start\n"  # the response has begun when the model is called
            first = await clients["llm"].create(HI)
            yield f"{first.content}\n"
            async for item in clients["llm"].create_stream(HI):
                if isinstance(item, str):
                    yield item
            await asyncio.sleep(0)
            last = await clients["llm"].create(HI)  # the very end of the stream
            yield f"\n{last.content}\n{_attribution()['session']}"

        return StreamingResponse(body(), media_type="text/plain")

    @app.websocket("/ws")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        while (question := await websocket.receive_text()) != "bye":
            result = await clients["llm"].create([UserMessage(content=question, source="user")])
            assert isinstance(result, CreateResult)
            await websocket.send_json({"answer": result.content, "attribution": _attribution()})
        await websocket.close()

    return app


@pytest.fixture
def service(fake_openai_server: FakeOpenAIServer, ledger: Ledger) -> Iterator[TestClient]:
    """The app with the middleware's defaults, started (lifespan) for the test."""
    with TestClient(make_app(fake_openai_server.base_url, ledger)) as client:
        yield client


def answers(fake_openai_server: FakeOpenAIServer, count: int) -> None:
    fake_openai_server.enqueue(*(FakeReply.text(f"answer {number}") for number in range(count)))


# --------------------------------------------------------------------------- attribution


def test_the_headers_attribute_the_rows_of_the_calls_the_request_makes(
    service: TestClient, fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 1)
    reply = service.post("/ask", headers=ATTRIBUTION)
    assert reply.status_code == 200, reply.text
    (row,) = rows(ledger)
    expected = ("acme-support", "ticket-4711", "writer", {"tier": "gold", "region": "eu-west.1"})
    assert who(row) == expected
    assert row.outcome == "ok"
    assert reply.headers["X-Session-ID"] == "ticket-4711"  # the session in effect, echoed


def test_fields_a_request_does_not_set_are_the_wrappers_own(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 2)
    app = make_app(
        fake_openai_server.base_url, ledger, bound={"project": "bound-project", "agent": "bound", "tags": {"a": "1"}}
    )
    with TestClient(app) as client:
        client.post("/ask", headers={"X-Session-ID": "s-1", "X-Usage-Tags": "b=2"})
        client.post("/ask", headers={"X-Project-ID": "header-project", "X-Session-ID": "s-2"})
    first, second = rows(ledger)
    assert who(first) == ("bound-project", "s-1", "bound", {"a": "1", "b": "2"})  # tags merge over the wrapper's
    assert who(second) == ("header-project", "s-2", "bound", {"a": "1"})


def test_a_request_without_a_session_gets_one_returned_and_recorded(
    service: TestClient, fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 2)
    first = service.post("/ask", headers={"X-Project-ID": "acme-support"})
    second = service.post("/ask", headers={"X-Project-ID": "acme-support"})
    sessions = [first.headers["X-Session-ID"], second.headers["X-Session-ID"]]
    assert all(str(uuid.UUID(session)) == session for session in sessions)
    assert sessions[0] != sessions[1]
    assert [row.session for row in rows(ledger)] == sessions
    assert first.json()["attribution"]["session"] == sessions[0]


def test_no_session_is_made_up_when_generation_is_off(fake_openai_server: FakeOpenAIServer, ledger: Ledger) -> None:
    answers(fake_openai_server, 1)
    with TestClient(make_app(fake_openai_server.base_url, ledger, generate_session=False)) as client:
        reply = client.post("/ask", headers={"X-Project-ID": "acme-support"})
    assert "X-Session-ID" not in reply.headers
    (row,) = rows(ledger)
    assert (row.project, row.session) == ("acme-support", None)


def test_tag_lines_are_joined_as_an_http_list(
    service: TestClient, fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 1)
    service.post("/ask", headers=[("X-Usage-Tags", "a=1"), ("X-Usage-Tags", "b=2, c=x:y@z/w+v")])
    (row,) = rows(ledger)
    assert dict(row.tags) == {"a": "1", "b": "2", "c": "x:y@z/w+v"}


def test_header_names_are_configurable(fake_openai_server: FakeOpenAIServer, ledger: Ledger) -> None:
    answers(fake_openai_server, 1)
    app = make_app(
        fake_openai_server.base_url,
        ledger,
        project_header="X-Tenant",
        session_header="X-Conversation",
        agent_header=None,
        tags_header="X-Labels",
    )
    with TestClient(app) as client:
        reply = client.post(
            "/ask", headers={"x-tenant": "t-42", "X-Conversation": "c-1", "X-Agent-Name": "ignored", "X-Labels": "k=v"}
        )
    assert reply.headers["X-Conversation"] == "c-1"
    (row,) = rows(ledger)
    assert who(row) == ("t-42", "c-1", None, {"k": "v"})


def test_a_streaming_response_stays_attributed_to_its_end(
    service: TestClient, fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 3)
    with service.stream("GET", "/stream", headers=ATTRIBUTION) as reply:
        body = "".join(reply.iter_text())
    assert reply.status_code == 200
    assert body.startswith("start\nanswer 0\nanswer 1\nanswer 2\n")
    assert body.endswith("ticket-4711")
    recorded = rows(ledger)
    assert len(recorded) == 3
    assert [row.streamed for row in recorded] == [False, True, False]
    expected = ("acme-support", "ticket-4711", "writer", {"tier": "gold", "region": "eu-west.1"})
    assert [who(row) for row in recorded] == [expected] * 3


def test_a_streaming_response_without_a_session_records_the_one_it_returned(
    service: TestClient, fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 3)
    with service.stream("GET", "/stream", headers={"X-Project-ID": "acme-support"}) as reply:
        body = "".join(reply.iter_text())
    session = reply.headers["X-Session-ID"]
    assert body.endswith(session)
    assert {row.session for row in rows(ledger)} == {session}


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` served by a real uvicorn on 127.0.0.1 (a free port) on a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            thread.join(0.01)  # uvicorn sets a flag (no event) once it listens: polled; no duration is asserted
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_over_http_a_stream_that_has_begun_is_still_attributed(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    # The model is called only once the client holds the stream's first line: the response has begun for real.
    fake_openai_server.enqueue(
        FakeReply.text("answer 0", hold_after_chunks=0), FakeReply.text("answer 1"), FakeReply.text("end")
    )
    with (
        serving(make_app(fake_openai_server.base_url, ledger)) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as http,
        http.stream("GET", "/stream", headers=ATTRIBUTION) as reply,
    ):
        lines = reply.iter_lines()
        assert next(lines) == "start"
        assert reply.headers["X-Session-ID"] == "ticket-4711"
        fake_openai_server.wait_for_requests(1)  # the first model call, made while the response streams, is waiting
        fake_openai_server.release()
        rest = list(lines)
    assert rest[0] == "answer 0"
    assert rest[-1] == "ticket-4711"
    expected = ("acme-support", "ticket-4711", "writer", {"tier": "gold", "region": "eu-west.1"})
    assert [who(row) for row in rows(ledger)] == [expected] * 3


def accept_headers(websocket: WebSocketTestSession) -> dict[bytes, bytes]:
    """The headers the app sent with its accept of the handshake."""
    headers: list[tuple[bytes, bytes]] = list(websocket.extra_headers or [])
    return dict(headers)


def test_a_websocket_is_attributed_for_its_whole_life(
    service: TestClient, fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 2)
    with service.websocket_connect("/ws", headers=ATTRIBUTION) as websocket:
        accepted_with = accept_headers(websocket)
        websocket.send_text("first")
        assert websocket.receive_json()["attribution"]["session"] == "ticket-4711"
        websocket.send_text("second")
        websocket.receive_json()
        websocket.send_text("bye")
    assert accepted_with[b"x-session-id"] == b"ticket-4711"
    expected = ("acme-support", "ticket-4711", "writer", {"tier": "gold", "region": "eu-west.1"})
    assert [who(row) for row in rows(ledger)] == [expected] * 2


def test_a_websocket_without_a_session_gets_one_in_its_accept(
    service: TestClient, fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 1)
    with service.websocket_connect("/ws", headers={"X-Project-ID": "acme-support"}) as websocket:
        session = accept_headers(websocket)[b"x-session-id"].decode()
        websocket.send_text("hi")
        assert websocket.receive_json()["attribution"]["session"] == session
        websocket.send_text("bye")
    assert [row.session for row in rows(ledger)] == [session]


def test_a_websocket_turned_away_with_a_response_gets_the_session_too() -> None:
    # The denial response extension (websocket.http.response.start): an HTTP response, which lacked X-Session-ID.
    app = FastAPI()
    app.add_middleware(UsageContextMiddleware)

    @app.websocket("/ws")
    async def refuse(websocket: WebSocket) -> None:
        await websocket.send_denial_response(JSONResponse({"detail": "sign in first"}, status_code=403))

    client = TestClient(app)
    sessions = []
    for headers in ({"X-Session-ID": "ticket-4711"}, {}):
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws", headers=headers):
            pass
        assert (denied.value.status_code, denied.value.json()) == (403, {"detail": "sign in first"})
        sessions.append(denied.value.headers.get("x-session-id"))
    assert sessions[0] == "ticket-4711"
    assert sessions[1] is not None
    assert uuid.UUID(sessions[1]).version == 7  # generated, as for an HTTP request


async def test_concurrent_requests_keep_their_own_attribution(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    # All requests are inside the middleware at once (the barrier) before any of them calls the model.
    count = 12
    barrier = asyncio.Barrier(count)
    inner = OpenAIChatCompletionClient(
        model=MODEL, api_key="sk-test", base_url=fake_openai_server.base_url, max_retries=0
    )
    llm = reliable(inner, recorder=ledger[1])
    app = FastAPI()
    app.add_middleware(UsageContextMiddleware)

    @app.post("/ask")
    async def ask() -> dict[str, Any]:
        before = _attribution()
        async with asyncio.timeout(30):
            await barrier.wait()
        await llm.create(HI)
        return {"before": before, "after": _attribution()}

    answers(fake_openai_server, count)

    def headers(number: int) -> dict[str, str]:
        return {
            "X-Project-ID": f"p{number}",
            "X-Session-ID": f"s{number}",
            "X-Agent-Name": f"a{number}",
            "X-Usage-Tags": f"n={number}",
        }

    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            replies = await asyncio.gather(*(client.post("/ask", headers=headers(n)) for n in range(count)))
    finally:
        await inner.close()
    for number, reply in enumerate(replies):
        assert (
            reply.json()["before"]
            == reply.json()["after"]
            == {
                "project": f"p{number}",
                "session": f"s{number}",
                "agent": f"a{number}",
                "tags": {"n": str(number)},
            }
        )
    recorded = sorted(who(row) for row in rows(ledger))
    assert recorded == sorted((f"p{n}", f"s{n}", f"a{n}", {"n": str(n)}) for n in range(count))


def test_exempt_paths_are_passed_through_untouched(fake_openai_server: FakeOpenAIServer, ledger: Ledger) -> None:
    app = make_app(fake_openai_server.base_url, ledger, require_project=True, exempt_paths=["/healthz", "/metrics/"])
    with TestClient(app) as client:
        probe = client.get("/healthz", headers={"X-Project-ID": "not a valid name"})
        refused = client.post("/ask")
    assert probe.status_code == 200
    assert probe.json()["attribution"] == {"project": None, "session": None, "agent": None, "tags": {}}
    assert "X-Session-ID" not in probe.headers
    assert refused.status_code == 400
    assert refused.json() == {
        "detail": "X-Project-ID is required: name the project the request is made for",
        "header": "X-Project-ID",
    }
    assert fake_openai_server.request_count == 0


@pytest.mark.parametrize("mounted", [True, False], ids=["mounted", "root_path"])
def test_exempt_paths_are_the_apps_own_under_a_mount_or_a_root_path(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger, mounted: bool
) -> None:
    app = make_app(fake_openai_server.base_url, ledger, require_project=True, exempt_paths=["/healthz"])
    if mounted:  # app.mount("/api", service): the paths it routes are its own, under /api
        outer = FastAPI()
        outer.mount("/api", app)
        client = TestClient(outer)
    else:  # behind a proxy that strips /api (uvicorn --root-path /api): the path still holds it
        client = TestClient(app, root_path="/api")
    with client:
        probe = client.get("/api/healthz")
        refused = client.post("/api/ask")
    assert probe.status_code == 200, probe.text
    assert probe.json()["attribution"]["project"] is None
    assert "X-Session-ID" not in probe.headers
    assert refused.status_code == 400
    assert refused.json()["header"] == "X-Project-ID"


def test_a_cors_preflight_passes_and_the_browser_may_read_the_session(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 1)
    app = make_app(fake_openai_server.base_url, ledger, require_project=True)
    # Outermost, as CORSMiddleware should be: its headers then reach the middleware's own 400s too.
    origin = "https://app.example"
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[origin],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Session-ID"],
    )
    preflight_headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-project-id",
    }
    with TestClient(app) as client:
        preflight = client.options("/ask", headers=preflight_headers)
        refused = client.post("/ask", headers={"Origin": origin})
        answered = client.post("/ask", headers={"Origin": origin, "X-Project-ID": "acme-support"})
    assert preflight.status_code == 200
    assert refused.status_code == 400
    assert refused.headers["access-control-allow-origin"] == origin  # the browser can read why
    assert answered.headers["access-control-expose-headers"] == "X-Session-ID"
    assert [row.session for row in rows(ledger)] == [answered.headers["X-Session-ID"]]


def test_a_preflight_is_passed_through_even_when_the_middleware_is_outermost(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    app = FastAPI()
    app.add_middleware(UsageContextMiddleware, require_project=True)
    app.add_middleware(CORSMiddleware, allow_origins=["https://app.example"], allow_methods=["*"], allow_headers=["*"])
    app.user_middleware.reverse()  # ours outside CORS: a plain OPTIONS is refused, a preflight is not
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(app) as client:
        assert client.options("/anything", headers=preflight).status_code == 200
        assert client.options("/anything").status_code == 400


# --------------------------------------------------------------------------- refusals

LONG = "p" * 129

BAD_HEADERS = [
    pytest.param({"X-Project-ID": "acme support"}, "X-Project-ID", "has ' ' at position 5", id="space"),
    pytest.param({"X-Project-ID": LONG}, "X-Project-ID", "is 129 characters long; the limit is 128", id="too-long"),
    pytest.param({"X-Project-ID": ""}, "X-Project-ID", "X-Project-ID is empty", id="empty"),
    pytest.param({"X-Project-ID": "caf\xe9".encode("latin-1")}, "X-Project-ID", "'é' at position 4", id="non-ascii"),
    pytest.param({"X-Session-ID": "<script>"}, "X-Session-ID", "has '<' at position 1", id="markup"),
    pytest.param({"X-Agent-Name": "writer;drop"}, "X-Agent-Name", "has ';' at position 7", id="agent"),
    pytest.param(
        [("X-Session-ID", "a"), ("X-Session-ID", "b")], "X-Session-ID", "is given 2 times; give it once", id="twice"
    ),
    pytest.param({"X-Usage-Tags": "tier"}, "X-Usage-Tags", "tag 1 'tier' is not key=value", id="tag-no-equals"),
    pytest.param({"X-Usage-Tags": "a=1,,b=2"}, "X-Usage-Tags", "tag 2 is empty", id="tag-empty-item"),
    pytest.param({"X-Usage-Tags": "a=1,a=2"}, "X-Usage-Tags", "the key 'a' is given twice", id="tag-repeated"),
    pytest.param({"X-Usage-Tags": "a b=1"}, "X-Usage-Tags", "the key 'a b' of tag 1 is not", id="tag-key-space"),
    pytest.param({"X-Usage-Tags": "=1"}, "X-Usage-Tags", "the key '' of tag 1", id="tag-key-empty"),
    pytest.param({"X-Usage-Tags": "k" * 65 + "=1"}, "X-Usage-Tags", "is not 1 to 64 ASCII", id="tag-key-long"),
    pytest.param({"X-Usage-Tags": "a=b=c"}, "X-Usage-Tags", "the value of 'a' has '=' at position 2", id="tag-value"),
    pytest.param({"X-Usage-Tags": "a="}, "X-Usage-Tags", "the value of 'a' is empty", id="tag-value-empty"),
    pytest.param({"X-Usage-Tags": f"a={LONG}"}, "X-Usage-Tags", "is 129 characters long", id="tag-value-long"),
    pytest.param(
        {"X-Usage-Tags": ",".join(f"k{n}=v" for n in range(17))},
        "X-Usage-Tags",
        "has 17 tags; the limit is 16",
        id="17",
    ),
]


@pytest.mark.parametrize(("headers", "header", "reason"), BAD_HEADERS)
def test_a_bad_header_is_a_400_naming_it_and_the_model_is_never_called(
    service: TestClient, fake_openai_server: FakeOpenAIServer, ledger: Ledger, headers: Any, header: str, reason: str
) -> None:
    reply = service.post("/ask", headers=headers)
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"  # the headers refused it: not for the URL's next caller
    body = reply.json()
    assert body["header"] == header
    assert body["detail"].startswith(header)
    assert reason in body["detail"]
    assert fake_openai_server.request_count == 0
    assert rows(ledger) == []


def test_the_limits_themselves_are_accepted(
    service: TestClient, fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 1)
    tags = ",".join([f"{'k' * 64}={'v' * 128}", *(f"k{n}=v" for n in range(15))])
    reply = service.post("/ask", headers={"X-Project-ID": "p" * 128, "X-Usage-Tags": tags})
    assert reply.status_code == 200, reply.text
    (row,) = rows(ledger)
    assert row.project == "p" * 128
    assert len(row.tags) == 16


def test_an_echoed_value_hides_a_secret_and_is_cut_short(service: TestClient) -> None:
    key = "sk-proj-" + "A1b2C3d4" * 6
    detail = service.post("/ask", headers={"X-Agent-Name": f"Bearer {key}"}).json()["detail"]
    assert key[:20] not in detail
    assert len(detail) < 200


def test_an_unknown_project_is_a_403_with_an_allow_list(fake_openai_server: FakeOpenAIServer, ledger: Ledger) -> None:
    answers(fake_openai_server, 2)
    app = make_app(
        fake_openai_server.base_url, ledger, projects={"acme-support", "acme-sales"}, default_project="acme-sales"
    )
    with TestClient(app) as client:
        refused = client.post("/ask", headers={"X-Project-ID": "umbrella"})
        allowed = client.post("/ask", headers={"X-Project-ID": "acme-support"})
        defaulted = client.post("/ask")
    assert refused.status_code == 403
    assert refused.headers["cache-control"] == "no-store"
    assert refused.json() == {
        "detail": "X-Project-ID: project 'umbrella' is not allowed here",
        "header": "X-Project-ID",
    }
    assert (allowed.status_code, defaulted.status_code) == (200, 200)
    assert [row.project for row in rows(ledger)] == ["acme-support", "acme-sales"]
    assert fake_openai_server.request_count == 2


def test_a_refused_project_that_looks_like_a_key_is_not_quoted_back(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    key = "sk-proj-" + "A1b2C3d4" * 6  # a label by its characters: the allow-list refuses it
    with TestClient(make_app(fake_openai_server.base_url, ledger, projects={"acme-support"})) as client:
        refused = client.post("/ask", headers={"X-Project-ID": key})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "X-Project-ID: project '[REDACTED]' is not allowed here"
    assert fake_openai_server.request_count == 0


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-Project-ID": "acme support"}, "X-Project-ID 'acme support' has ' ' at position 5"),
        ({"X-Project-ID": "umbrella"}, "X-Project-ID: project 'umbrella' is not allowed here"),
        ({"X-Usage-Tags": "x" * 300}, "X-Usage-Tags: tag 1"),
    ],
)
def test_a_websocket_with_a_bad_header_is_closed_before_it_is_accepted(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger, headers: dict[str, str], reason: str
) -> None:
    client = TestClient(make_app(fake_openai_server.base_url, ledger, projects=["acme-support"]))
    with client, pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws", headers=headers):
        pytest.fail("the handshake was accepted")
    assert closed.value.code == 1008  # policy violation
    assert closed.value.reason.startswith(reason)
    assert len(closed.value.reason.encode()) <= 123
    assert fake_openai_server.request_count == 0


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"project_header": "X Project"}, "project_header must be an HTTP header name"),
        ({"tags_header": ""}, "tags_header must be an HTTP header name"),
        ({"agent_header": "x-project-id"}, "two options name the same header"),
        ({"projects": "acme"}, "projects must be a collection"),
        ({"projects": {"acme": "gold"}}, "projects must be a collection"),  # a mapping, taken for its keys
        ({"projects": []}, "projects is empty"),
        ({"projects": ["acme", "acme support"]}, "a project of projects 'acme support' has ' '"),
        ({"projects": ["acme"], "default_project": "other"}, "default_project 'other' is not in projects"),
        ({"default_project": "x" * 129}, "default_project 'xxx"),
        ({"require_project": True, "default_project": "acme"}, "require_project refuses"),
        ({"require_project": True, "project_header": None}, "require_project needs a project_header"),
        ({"projects": ["acme"], "project_header": None}, "projects needs a project_header to read the project from"),
        ({"require_project": "yes"}, "require_project must be True or False"),
        ({"generate_session": 1}, "generate_session must be True or False"),
        ({"session_header": None}, "generate_session needs a session_header"),
        ({"exempt_paths": "/healthz"}, "exempt_paths must be a collection"),
        ({"exempt_paths": {"/healthz": True}}, "exempt_paths must be a collection"),
        ({"exempt_paths": ["healthz"]}, "an exempt path must start with /"),
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        UsageContextMiddleware(FastAPI(), **options)


def test_an_app_with_bad_options_does_not_start(fake_openai_server: FakeOpenAIServer, ledger: Ledger) -> None:
    app = make_app(fake_openai_server.base_url, ledger, projects=[])
    with pytest.raises(ConfigurationError, match="projects is empty"), TestClient(app):
        pass


@pytest.mark.parametrize("lifespan", ["on", "auto"])
def test_under_uvicorn_a_bad_option_fails_the_startup_only_with_lifespan_on(lifespan: Literal["on", "auto"]) -> None:
    # Starlette builds its middleware on the first call, the lifespan's. uvicorn's default, "auto",
    # takes an app that raises there for one without lifespan support: it starts, and every request
    # is a 500. docs/health.md says so, and which check to make instead; this keeps it true.
    app = FastAPI()
    app.add_middleware(UsageContextMiddleware, projects="acme-support")  # a str, not a collection

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan=lifespan))
    exits: list[object] = []

    def run() -> None:
        try:
            server.run()
        except SystemExit as exit_:  # how uvicorn ends a startup that failed
            exits.append(exit_.code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            thread.join(0.01)  # polled, as serving() does
        if lifespan == "on":
            assert not server.started
            assert exits == [3]  # "Application startup failed. Exiting."
        else:
            assert server.started
            port = server.servers[0].sockets[0].getsockname()[1]
            assert httpx.get(f"http://127.0.0.1:{port}/hello").status_code == 500
    finally:
        server.should_exit = True
        thread.join(30)
    # The check the docs give for any server: the middleware made once, where its options are written.
    with pytest.raises(ConfigurationError, match="projects must be a collection"):
        UsageContextMiddleware(app, projects="acme-support")


def test_session_header_off_with_generation_off_reads_and_returns_no_session(
    fake_openai_server: FakeOpenAIServer, ledger: Ledger
) -> None:
    answers(fake_openai_server, 1)
    with TestClient(
        make_app(fake_openai_server.base_url, ledger, session_header=None, generate_session=False)
    ) as client:
        reply = client.post("/ask", headers={"X-Session-ID": "ignored", "X-Project-ID": "p"})
    assert "X-Session-ID" not in reply.headers
    assert who(rows(ledger)[0]) == ("p", None, None, {})


# --------------------------------------------------------------------------- the extra

_WITHOUT_FASTAPI = """
import sys

class HideFastAPI:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fastapi", "starlette"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideFastAPI())
import autogen_reliability
try:
    import autogen_reliability.fastapi
except ImportError as error:
    print(type(error).__name__, error.name, str(error), sep="|")
else:
    print("imported")
"""


def test_without_fastapi_the_import_error_names_the_extra() -> None:
    done = run_python(_WITHOUT_FASTAPI)
    assert done.returncode == 0, done.stderr
    kind, name, message = done.stdout.strip().split("|")
    assert (kind, name) == ("ImportError", "fastapi")
    assert "pip install 'autogen-reliability[fastapi]'" in message


def test_importing_the_library_imports_neither_fastapi_nor_starlette() -> None:
    script = (
        "import sys; from autogen_reliability import *; print(sorted(m for m in sys.modules if m.split('.')[0] in {0}))"
    )
    done = run_python(script.format(("fastapi", "starlette")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
