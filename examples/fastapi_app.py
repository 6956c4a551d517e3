"""A FastAPI service that runs an AutoGen agent, with health checks, attribution, metrics and usage routes.

- ``POST /ask`` runs an ``AssistantAgent`` whose model client is wrapped; the
  caller's ``X-Project-ID``, ``X-Session-ID`` and ``X-Usage-Tags`` headers
  attribute every LLM call the request makes (``UsageContextMiddleware``).
- ``GET /healthz``, ``/readyz``, ``/health``: the health probe, for Kubernetes.
- ``GET /metrics/``: Prometheus metrics of every wrapped client.
- ``GET /usage/report``, ``/usage/sessions``: the ledger, behind a (toy) admin token.

Run: ``python examples/fastapi_app.py`` starts the service on 127.0.0.1 against
a local OpenAI-compatible server (no API key), calls each route once over HTTP,
prints what it got and stops; ``--serve`` keeps it running for you to call, on port
8000 or the one ``--port`` names (``0``: any free port), said on its first line::

    curl -H 'X-Project-ID: acme-support' -H 'Content-Type: application/json' -d '{"question": "hi"}' localhost:8000/ask

(without the JSON content type, curl sends a form, which FastAPI refuses with 422).
With ``OPENAI_API_KEY`` set and ``--live``, the agent talks to OpenAI instead.
Usage rows go to ``./fastapi_app.db``.

Needs the extras and a server to run it on (and, for the tour, an HTTP client):
``pip install 'autogen-reliability[fastapi,metrics]' uvicorn httpx``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel

from autogen_reliability import HealthProbe, ReliabilityError, configure, reliable
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

try:
    import httpx
    import uvicorn
    from fastapi import Depends, FastAPI, Header, HTTPException, Request
    from fastapi.responses import JSONResponse

    from autogen_reliability.fastapi import UsageContextMiddleware, health_router, usage_router
    from autogen_reliability.metrics import metrics_app
except ImportError as missing:  # what the service needs beyond the package: one line that says how to get it
    raise SystemExit(
        f"{missing}. This example needs: pip install 'autogen-reliability[fastapi,metrics]' uvicorn httpx"
    ) from None

ADMIN_TOKEN = "change-me"  # your application's real authentication goes here


class Question(BaseModel):
    question: str


class Answer(BaseModel):
    answer: str


def require_admin(authorization: str | None = Header(default=None)) -> None:
    if authorization != f"Bearer {ADMIN_TOKEN}":
        raise HTTPException(401, "not authenticated")


def make_app(model_client: OpenAIChatCompletionClient, db_url: str) -> FastAPI:
    """The service: one agent endpoint, health, metrics and usage routes, over ``model_client``."""
    settings = configure(db_url=db_url)
    client = reliable(model_client, project="support-desk", agent="helper")
    store = UsageStore(settings.db_url)
    probe = HealthProbe({"openai": client}, store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.close()
        # Rows are written about once a second. Write the last ones now: on SIGTERM (docker stop, Kubernetes)
        # uvicorn ends the process after this shutdown without running atexit, which would have written them.
        recorder = client.recorder
        if recorder is not None:
            await asyncio.to_thread(recorder.flush, 10)
        store.close()

    app = FastAPI(title="support desk", lifespan=lifespan)
    app.state.client, app.state.store, app.state.probe = client, store, probe
    # Every LLM call a request makes is attributed to the caller's project and session (400 on bad headers).
    app.add_middleware(UsageContextMiddleware, projects={"acme-support", "acme-sales"})
    app.include_router(health_router(probe))
    app.include_router(usage_router(store), dependencies=[Depends(require_admin)])
    app.mount("/metrics", metrics_app())

    @app.exception_handler(ReliabilityError)
    async def model_unavailable(_: Request, error: ReliabilityError) -> JSONResponse:
        # Retries, fallbacks and the circuit breaker have done what they could (the log has the details,
        # without secrets); the caller may try again later.
        return JSONResponse({"detail": "the language model is unavailable; try again later"}, status_code=503)

    @app.post("/ask")
    async def ask(question: Question) -> Answer:
        # An agent per request (agents keep the conversation; the wrapped client is shared).
        agent = AssistantAgent("helper", model_client=client, system_message="Answer support questions briefly.")
        result = await agent.run(task=question.question)
        last = result.messages[-1]
        return Answer(answer=last.content if isinstance(last, TextMessage) else str(last))

    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def tour(base_url: str) -> None:
    """Calls each route once, as a caller, an orchestrator, Prometheus and an admin would."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        caller = {"X-Project-ID": "acme-support", "X-Usage-Tags": "tier=gold,channel=chat"}
        asked = await http.post("/ask", json={"question": "Where is my refund?"}, headers=caller)
        print(f"POST /ask -> {asked.status_code} {asked.json()} session={asked.headers['X-Session-ID']}")
        refused = await http.post("/ask", json={"question": "hi"}, headers={"X-Project-ID": "someone-else"})
        print(f"POST /ask, unknown project -> {refused.status_code} {refused.json()}")
        for path in ("/healthz", "/readyz"):
            print(f"GET {path} -> {(await http.get(path)).status_code}")
        health = (await http.get("/health", params={"verbose": 0})).json()
        print(f"GET /health?verbose=0 -> {health['status']} {health['components']}")
        metrics = (await http.get("/metrics/")).text
        attempts = [line for line in metrics.splitlines() if line.startswith("autogen_reliability_attempts_total")]
        print(f"GET /metrics/ -> {attempts[0] if attempts else 'no attempts yet'}")
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        print(f"GET /usage/report without the token -> {(await http.get('/usage/report')).status_code}")
        # Rows reach the ledger from the recorder's thread, a moment after the call: wait for the first.
        for _ in range(100):
            report = (await http.get("/usage/report", params={"project": "acme-support"}, headers=admin)).json()
            totals = report["totals"]
            if totals["calls"]:
                break
            await asyncio.sleep(0.05)
        print(f"GET /usage/report -> {totals['calls']} call(s), {totals['attempts']} attempt(s), ${totals['cost_usd']}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="keep serving on 127.0.0.1 until interrupted")
    parser.add_argument("--live", action="store_true", help="call OpenAI (needs OPENAI_API_KEY), not a local server")
    parser.add_argument("--port", type=int, default=8000, help="the port --serve listens on (0: any free one)")
    args = parser.parse_args()
    db_url = "sqlite:///fastapi_app.db"
    if args.live:
        if not os.environ.get("OPENAI_API_KEY"):
            parser.error("--live needs OPENAI_API_KEY")
        app = make_app(OpenAIChatCompletionClient(model="gpt-4o-mini"), db_url)
        await serve_or_tour(app, serve=args.serve, port=args.port)
        return
    reply = FakeReply.text("Refunds reach your card within 5 working days.")
    async with FakeOpenAIServer(default=reply) as provider:
        model_client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-local", base_url=provider.base_url)
        await serve_or_tour(make_app(model_client, db_url), serve=args.serve, port=args.port)


async def serve_or_tour(app: FastAPI, *, serve: bool, port: int) -> None:
    port = port if serve else free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    running = asyncio.create_task(server.serve())
    for _ in range(1000):  # uvicorn says when it listens by a flag; a server that cannot start ends its task
        if server.started or running.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        await running  # raises what stopped it
        raise RuntimeError("the server did not start")
    if serve:
        listening = server.servers[0].sockets[0].getsockname()[1]
        print(f"serving on http://127.0.0.1:{listening}", flush=True)
        await running
        return
    try:
        await tour(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await running


if __name__ == "__main__":
    asyncio.run(main())
