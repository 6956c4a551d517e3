"""The health routes in a FastAPI app: TestClient, and once a real uvicorn server on 127.0.0.1 over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn
from autogen_core.models import ChatCompletionClient
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import event

from autogen_reliability import ConfigurationError, HealthProbe, HealthReport
from autogen_reliability.fastapi import health_router
from autogen_reliability.health import HealthSummary
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, ScriptedChatCompletionClient

from .health_fixtures import *  # noqa: F403  # the fixtures store, recorder, wrap
from .health_fixtures import OPENS_AFTER_TWO, Wrap, break_the_file, calls


def app_for(probe: HealthProbe, prefix: str = "", *, closes: Sequence[ChatCompletionClient] = ()) -> FastAPI:
    """An app that mounts the health routes and, as a service would, closes its model clients when it stops.

    Closing them on the app's own event loop matters where the probe makes requests (``active=True``): the
    connections it opened belong to that loop (TestClient's, uvicorn's), which is gone once the app stops.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for client in closes:
            await client.close()

    app = FastAPI(title="an agent service", lifespan=lifespan)
    app.include_router(health_router(probe, prefix=prefix))
    return app


@pytest.fixture
def queries(store: UsageStore) -> Iterator[list[str]]:
    """Every SQL statement the store's engine runs from now on."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", before)
    yield seen
    event.remove(store.engine, "before_cursor_execute", before)


async def test_a_healthy_service_answers_every_route(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, store: UsageStore
) -> None:
    client = wrap()
    app = app_for(HealthProbe({"openai": client}, store))  # the probe sees the attempts made from now on
    fake_openai_server.enqueue(FakeReply.text("fine"), FakeReply.text("fine"))
    await calls(client, 2)
    with TestClient(app) as http:
        alive = http.get("/healthz")
        ready = http.get("/readyz")
        full = http.get("/health")
        short = http.get("/health", params={"verbose": "0"})
        false = http.get("/health", params={"verbose": "false"})
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert ready.status_code == full.status_code == short.status_code == 200
    assert ready.json()["status"] == full.json()["status"] == "healthy"
    assert full.json()["clients"]["openai"]["attempts"] == 2
    assert full.json()["usage_store"]["reachable"] is True
    assert short.json() == {
        "status": "healthy",
        "checked_at": short.json()["checked_at"],
        "components": {"openai": "healthy", "usage_store": "healthy"},
    }
    assert false.json().keys() == short.json().keys()
    assert all(answer.headers["cache-control"] == "no-store" for answer in (alive, ready, full, short))


def test_a_bad_verbose_value_is_a_422_that_says_what_is_wrong(wrap: Wrap) -> None:
    with TestClient(app_for(HealthProbe({"openai": wrap()}))) as http:
        answer = http.get("/health", params={"verbose": "maybe"})
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["query", "verbose"]
    assert problem["msg"] == "Input should be a valid boolean, unable to interpret input"


async def test_a_degraded_service_is_still_ready(fake_openai_server: FakeOpenAIServer, wrap: Wrap) -> None:
    client = wrap(circuit=None)
    app = app_for(HealthProbe({"openai": client}))
    fake_openai_server.enqueue(*[FakeReply.error(503)] * 3, *[FakeReply.text("fine")] * 7)
    await calls(client, 10)
    with TestClient(app) as http:
        ready = http.get("/readyz")
        short = http.get("/health?verbose=0")
    assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
    assert ready.json()["clients"]["openai"]["errors_by_kind"] == {"overloaded": 3}
    assert short.json()["components"] == {"openai": "degraded"}


async def test_an_unhealthy_service_is_not_ready(fake_openai_server: FakeOpenAIServer, wrap: Wrap) -> None:
    client = wrap(circuit=OPENS_AFTER_TWO)
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.error(500))
    await calls(client, 2)
    # The breaker is read when the probe checks: a probe made after the circuit opened sees it open.
    with TestClient(app_for(HealthProbe({"openai": client}, min_attempts=100))) as http:
        alive = http.get("/healthz")
        ready = http.get("/readyz")
        full = http.get("/health")
        short = http.get("/health?verbose=0")
    assert alive.status_code == 200  # the process is fine: restarting it would not close the circuit
    assert ready.status_code == full.status_code == short.status_code == 503
    assert ready.json()["status"] == "unhealthy"
    assert ready.json()["clients"]["openai"]["providers"][0]["circuit"] == "open"
    assert short.json()["components"] == {"openai": "unhealthy"}


async def test_every_answer_of_an_unhealthy_service_is_a_model_its_schema_declares(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    # A client generated from the OpenAPI document parses a 503 by the schema it declares for 503.
    client = wrap(circuit=OPENS_AFTER_TWO)
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.error(500))
    await calls(client, 2)
    app = app_for(HealthProbe({"openai": client}))
    models: dict[str, type[HealthReport | HealthSummary]] = {
        "HealthReport": HealthReport,
        "HealthSummary": HealthSummary,
    }
    responses = {path: operations["get"]["responses"] for path, operations in app.openapi()["paths"].items()}
    with TestClient(app) as http:
        for path, query in (("/readyz", ""), ("/health", ""), ("/health", "?verbose=0")):
            answer = http.get(path + query)
            assert answer.status_code == 503
            schema = responses[path]["503"]["content"]["application/json"]["schema"]
            declared = [ref["$ref"].rsplit("/", 1)[1] for ref in schema.get("anyOf", [schema])]
            parsed = []
            for name in declared:
                with contextlib.suppress(ValidationError):
                    parsed.append(models[name].model_validate(answer.json()))
            assert parsed, f"{path}{query}: a 503 whose body is none of {declared}: {answer.json()}"


async def test_head_answers_each_route_with_its_status_and_no_body(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    # Some load balancers and uptime monitors probe with HEAD: the status is the answer.
    client = wrap(circuit=OPENS_AFTER_TWO)
    fake_openai_server.enqueue(FakeReply.error(500), FakeReply.error(500))
    await calls(client, 2)
    with TestClient(app_for(HealthProbe({"openai": client}, min_attempts=100), prefix="/ops")) as http:
        answers = {path: http.head(f"/ops{path}") for path in ("/healthz", "/readyz", "/health", "/health?verbose=0")}
        assert http.head("/ops/health?verbose=maybe").status_code == 422
    assert {path: answer.status_code for path, answer in answers.items()} == {
        "/healthz": 200,
        "/readyz": 503,
        "/health": 503,
        "/health?verbose=0": 503,
    }
    assert all(answer.content == b"" for answer in answers.values())
    assert all(answer.headers["cache-control"] == "no-store" for answer in answers.values())


def test_a_method_a_route_does_not_answer_is_a_405_that_lists_get_and_head(wrap: Wrap) -> None:
    with TestClient(app_for(HealthProbe({"openai": wrap()}), prefix="/ops")) as http:
        refused = {path: http.post(f"/ops{path}") for path in ("/healthz", "/readyz", "/health")}
        allowed = {method: http.request(method, "/ops/healthz").status_code for method in ("GET", "HEAD")}
    assert allowed == {"GET": 200, "HEAD": 200}  # what the header says is true
    for answer in refused.values():
        assert answer.status_code == 405
        assert answer.headers["allow"] == "GET, HEAD"
        assert answer.json() == {"detail": "Method Not Allowed"}


def test_every_answer_of_the_routes_says_no_store_a_refusal_too(wrap: Wrap) -> None:
    # A cache between the orchestrator and the service must keep no answer of these routes: their 422, 405
    # and the app's own dependency's 401 lacked the header the reports carry.
    def require_token(authorization: str | None = Header(default=None)) -> None:
        if authorization != "Bearer t":
            raise HTTPException(401, detail="not authenticated", headers={"WWW-Authenticate": "Bearer"})

    app = app_for(HealthProbe({"openai": wrap()}), prefix="/ops")
    app.include_router(
        health_router(HealthProbe({"openai": wrap()}), prefix="/guarded"), dependencies=[Depends(require_token)]
    )

    @app.get("/mine")
    async def mine(number: int) -> dict[str, int]:
        return {"number": number}

    with TestClient(app) as http:
        answers = {
            "GET 422": http.get("/ops/health", params={"verbose": "maybe"}),
            "HEAD 422": http.head("/ops/health?verbose=maybe"),
            "POST 405": http.post("/ops/healthz"),
            "DELETE 405": http.delete("/ops/readyz"),
            "401": http.get("/guarded/health"),
            "200": http.get("/guarded/health", headers={"Authorization": "Bearer t"}),
        }
        theirs = [
            http.get("/mine", params={"number": "x"}),
            http.get("/mine", params={"number": 1}),
            http.post("/mine"),
        ]
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {"GET 422": 422, "HEAD 422": 422, "POST 405": 405, "DELETE 405": 405, "401": 401, "200": 200}
    assert {name: answer.headers.get("cache-control") for name, answer in answers.items()} == dict.fromkeys(
        answers, "no-store"
    )
    assert answers["POST 405"].headers["allow"] == "GET, HEAD"
    assert answers["401"].headers["www-authenticate"] == "Bearer"  # the app's headers kept
    # The app's own routes answer as FastAPI makes them.
    assert [answer.status_code for answer in theirs] == [422, 200, 405]
    assert [answer.headers.get("cache-control") for answer in theirs] == [None, None, None]


async def test_lone_surrogates_in_a_model_name_and_an_error_are_shown_as_u_fffd(wrap: Wrap) -> None:
    # A model's name or a provider's error cut inside an emoji: JSON in UTF-8 cannot hold the half left.
    inner = ScriptedChatCompletionClient([ValueError("cut \ud83d"), "fine"], model="gpt-\udfff")
    client = wrap(client=inner)
    app = app_for(HealthProbe({"scripted": client}))
    await calls(client, 2)
    with TestClient(app) as http:
        full = http.get("/health")
    assert full.status_code == 200
    [provider] = full.json()["clients"]["scripted"]["providers"]
    assert provider["name"] == "ScriptedChatCompletionClient(gpt-\ufffd)"
    assert [attempt["error"] for attempt in provider["recent"]] == ["ValueError: cut \ufffd", None]


async def test_control_and_bidi_characters_of_an_error_are_shown_as_escapes(wrap: Wrap) -> None:
    # JSON escapes C0 characters, not C1 ones nor bidi controls: a dashboard showing the text would act on them.
    inner = ScriptedChatCompletionClient([ValueError("boom\r\nforged\x1b[2J\x9b1m\u202eok"), "fine"])
    client = wrap(client=inner)
    app = app_for(HealthProbe({"scripted": client}))
    await calls(client, 2)
    with TestClient(app) as http:
        full = http.get("/health")
    [provider] = full.json()["clients"]["scripted"]["providers"]
    errors = [attempt["error"] for attempt in provider["recent"]]
    assert errors == ["ValueError: boom\\r\\nforged\\x1b[2J\\x9b1m\\u202eok", None]
    assert full.text.isascii()


def test_a_client_name_with_a_lone_surrogate_is_refused(wrap: Wrap) -> None:
    with pytest.raises(ConfigurationError, match="client names must not contain a lone surrogate"):
        HealthProbe({"open\ud800ai": wrap()})


def test_an_unreachable_store_makes_the_service_unready(wrap: Wrap, store: UsageStore) -> None:
    probe = HealthProbe({"openai": wrap()}, store)
    break_the_file(store)
    with TestClient(app_for(probe)) as http:
        ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["usage_store"]["reachable"] is False


def test_liveness_touches_neither_the_provider_nor_the_database(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, store: UsageStore, queries: list[str]
) -> None:
    client = wrap()
    probe = HealthProbe({"openai": client}, store, active=True)
    with TestClient(app_for(probe, closes=[client])) as http:
        for _ in range(5):
            assert http.get("/healthz").status_code == 200
        assert (fake_openai_server.all_requests, queries) == ([], [])
        assert http.get("/readyz").status_code == 200  # what /healthz did not do, /readyz does
    assert [request.path for request in fake_openai_server.all_requests] == ["/v1/models"]
    assert queries == ["SELECT 1"]


def test_one_provider_request_per_ttl_under_100_concurrent_health_requests(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap
) -> None:
    client = wrap()
    probe = HealthProbe({"openai": client}, active=True, ttl=3600)
    fake_openai_server.enqueue_models(FakeReply(delay=0.2))  # in flight while the other requests come in
    with TestClient(app_for(probe, closes=[client])) as http, ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(lambda _: http.get("/health"), range(100)))
    assert [answer.status_code for answer in answers] == [200] * 100
    assert len(fake_openai_server.models_requests) == 1
    checks = {answer.json()["clients"]["openai"]["active_check"]["checked_at"] for answer in answers}
    assert len(checks) == 1


def test_the_timeout_is_honoured_when_the_provider_hangs(fake_openai_server: FakeOpenAIServer, wrap: Wrap) -> None:
    client = wrap()
    probe = HealthProbe({"openai": client}, active=True, timeout=0.2)
    fake_openai_server.enqueue_models(FakeReply(hold_after_chunks=0))
    with TestClient(app_for(probe, closes=[client])) as http:
        ready = http.get("/readyz")
    assert ready.status_code == 503
    check = ready.json()["clients"]["openai"]["active_check"]
    assert (check["ok"], check["error_kind"]) == (False, "timeout")


def test_the_routes_and_their_models_are_in_the_openapi_schema(wrap: Wrap, store: UsageStore) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns of a duplicate operation id
        schema = app_for(HealthProbe({"openai": wrap()}, store), prefix="/ops").openapi()
    paths = schema["paths"]
    # HEAD answers too, but only the GET operations are in the schema.
    assert {path: list(operations) for path, operations in paths.items()} == {
        "/ops/healthz": ["get"],
        "/ops/readyz": ["get"],
        "/ops/health": ["get"],
    }
    ok = "200"

    def body(path: str, status: str) -> dict[str, Any]:
        schema: dict[str, Any] = paths[path]["get"]["responses"][status]["content"]["application/json"]["schema"]
        return schema

    assert body("/ops/healthz", ok) == {"$ref": "#/components/schemas/Liveness"}
    assert body("/ops/readyz", ok) == body("/ops/readyz", "503") == {"$ref": "#/components/schemas/HealthReport"}
    assert (
        body("/ops/health", ok)["anyOf"]
        == body("/ops/health", "503")["anyOf"]
        == [
            {"$ref": "#/components/schemas/HealthReport"},
            {"$ref": "#/components/schemas/HealthSummary"},
        ]
    )
    [verbose] = paths["/ops/health"]["get"]["parameters"]
    assert (verbose["name"], verbose["in"], verbose["schema"]["type"]) == ("verbose", "query", "boolean")
    models = schema["components"]["schemas"]
    assert {"HealthReport", "HealthSummary", "ClientHealth", "ProviderHealth", "UsageStoreHealth"} <= set(models)
    assert models["HealthReport"]["properties"]["status"]["enum"] == ["healthy", "degraded", "unhealthy"]
    assert models["HealthReport"]["properties"]["checked_at"]["format"] == "date-time"
    assert models["ProviderHealth"]["properties"]["circuit"]["enum"] == ["closed", "open", "half_open", "off"]


def test_health_router_checks_its_arguments(wrap: Wrap) -> None:
    probe = HealthProbe({"openai": wrap()})
    with pytest.raises(ConfigurationError, match="takes a HealthProbe"):
        health_router("probe")  # type: ignore[arg-type]
    for prefix in ("ops", "/ops/"):
        with pytest.raises(ConfigurationError, match="prefix must be empty or a path"):
            health_router(probe, prefix=prefix)
    with TestClient(app_for(probe, prefix="/ops")) as http:
        assert http.get("/ops/healthz").status_code == 200
        assert http.get("/healthz").status_code == 404


async def test_a_real_uvicorn_server_answers_over_http(
    fake_openai_server: FakeOpenAIServer, wrap: Wrap, store: UsageStore
) -> None:
    client = wrap()
    app = app_for(HealthProbe({"openai": client}, store))
    fake_openai_server.enqueue(FakeReply.text("fine"))
    await calls(client, 1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # a free port, taken before the server starts: no race for it
    listener.listen()
    port = listener.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    # Connections wait in the listening socket's backlog until the server accepts them: nothing to poll for.
    thread = threading.Thread(target=web.run, kwargs={"sockets": [listener]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            alive = await http.get("/healthz")
            ready = await http.get("/readyz")
            short = await http.get("/health", params={"verbose": 0})
            head = await http.head("/readyz")
    finally:
        web.should_exit = True
        await asyncio.to_thread(thread.join, 30)
        listener.close()
    assert not thread.is_alive()
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json()["clients"]["openai"]["attempts"] == 1
    assert short.json()["components"] == {"openai": "healthy", "usage_store": "healthy"}
    assert ready.headers["server"] == "uvicorn"
    assert (head.status_code, head.content) == (200, b"")
