"""The showcase behind ``autogen-reliability demo``.

A two-agent AutoGen team (a writer and a critic in a ``RoundRobinGroupChat``)
runs against the built-in OpenAI-compatible server on 127.0.0.1: AutoGen's real
``OpenAIChatCompletionClient`` speaks HTTP to it, so no API key and no network
are needed. The scripted model fails the way real providers do (a rate limit,
an overloaded model); the team is wrapped with :func:`reliable`, which retries
those. A triage agent with structured output then gets its JSON wrapped in prose
with dangerous markup inside; the wrapper extracts, validates and sanitises it.
Every provider attempt is a row of a real usage ledger (by default the SQLite
file ``autogen-reliability-demo/usage.db`` in the working directory; ``--db``
chooses another), priced from genai-prices' offline data. The demo ends with
the usage report of its run, read back from the ledger: the table with a total
line and the waste, and ``usage-report.html`` next to the ledger, to open
afterwards.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TextIO

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import BaseTextChatMessage, StructuredMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel

from . import reliable, usage_scope
from .accounting import UsageRecorder
from .retry import RetryEvent
from .storage import UsageStore
from .testing import FakeOpenAIServer, FakeReply, RecordedRequest

__all__ = ["DEFAULT_DIRECTORY", "run_demo"]

DEFAULT_DIRECTORY = Path("autogen-reliability-demo")
"""Where the demo keeps its ledger and report unless told otherwise (relative to the working directory)."""

_MODEL = "gpt-4o-mini"
_WRITER_PROMPT = "You are the writer. Draft short, friendly replies to customer tickets."
_CRITIC_PROMPT = "You are the critic. Review the writer's draft; say APPROVE when it is good."

_DRAFTS = [
    "Hi Dana, thanks for reaching out. Your refund was issued today and should arrive within 5 business days.",
    "Hi Dana, sorry for the wait and thanks for your patience. Your refund of $42.00 was issued today; "
    "it reaches your card within 5 business days. Reply here if it does not.",
]
_REVIEWS = [
    "Good start. Apologise for the wait and state the amount, so Dana need not look it up.",
    "Clear, warm and complete. APPROVE",
]


_TRIAGE_PROMPT = "You are the triage agent. Classify the ticket."
_TRIAGE_ANSWER = (
    "Sure! Here is the triage:\n"
    '{"ticket": 4711, "priority": "high", "summary": "Refund not received <img src=x onerror=alert(1)>"}\n'
    "Let me know if you need anything else."
)


class Triage(BaseModel):
    """What the triage agent answers with."""

    ticket: int
    priority: Literal["low", "high"]
    summary: str


class _ScriptedModel:
    """Plays both roles (the system prompt says who is asking, the history how far they are),
    and fails the way real providers do: the writer's first request hits a rate limit, the
    critic's first request finds the model overloaded."""

    def __init__(self) -> None:
        self._faults = {
            ("writer", 0): FakeReply.error(429, headers={"retry-after-ms": "600"}),
            ("critic", 0): FakeReply.error(503),
        }

    def __call__(self, request: RecordedRequest) -> FakeReply:
        messages = request.messages
        system = str(messages[0].get("content", "")) if messages else ""
        if "triage" in system:
            # JSON wrapped in prose, with markup a web page would run: the wrapper cleans it up.
            return FakeReply.text(_TRIAGE_ANSWER)
        role = "critic" if "critic" in system else "writer"
        turns = sum(1 for message in messages if message.get("role") == "assistant")
        fault = self._faults.pop((role, turns), None)
        if fault is not None:
            return fault
        answers = _REVIEWS if role == "critic" else _DRAFTS
        return FakeReply.text(answers[min(turns, len(answers) - 1)])


def run_demo(out: TextIO, *, stream: bool = False, db_url: str | None = None) -> Path:
    """Runs the demo team, then writes the usage report of the run to ``out`` and to an HTML file.

    Args:
        out: Where the transcript and the report table go.
        stream: Let the agents stream their replies.
        db_url: The usage ledger (default: ``sqlite:///autogen-reliability-demo/usage.db``). The HTML report
            is written next to a SQLite file, else into ``autogen-reliability-demo/``.

    Returns:
        The path of the HTML report.
    """
    if db_url is None:
        DEFAULT_DIRECTORY.mkdir(exist_ok=True)
        db_url = f"sqlite:///{DEFAULT_DIRECTORY / 'usage.db'}"
    store = UsageStore(db_url)
    database = store.engine.url.database if store.engine.dialect.name == "sqlite" else None
    directory = Path(database).resolve().parent if database and database != ":memory:" else DEFAULT_DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    recorder = UsageRecorder(store, spool_dir=directory / "spool", close_sink=False)
    try:
        requests_seen = asyncio.run(_run_team(out, recorder, stream=stream))
        recorder.flush(30)
        report = store.report("demo", since=started)
    finally:
        recorder.close()
        store.close()
    _show(out, report.to_rich())
    out.write(f"  ({report.totals.attempts} rows recorded for this run, {requests_seen} requests served)\n\n")
    html = directory / "usage-report.html"
    html.write_text(report.to_html(), encoding="utf-8")
    out.write(f"Usage ledger: {store.url}\n")
    out.write(f"HTML report:  {html.resolve()}\n")
    out.write(f"Report again: autogen-reliability report --project demo --db {store.url}\n")
    return html


def _show(out: TextIO, renderable: object) -> None:
    from rich.console import Console  # noqa: PLC0415  # rich loads only when something is shown

    out.write("\nUsage report of this run (project 'demo'; read back from the ledger):\n")
    Console(file=out, width=110, soft_wrap=False).print(renderable)


async def _run_team(out: TextIO, recorder: UsageRecorder, *, stream: bool) -> int:
    def show_retry(event: RetryEvent) -> None:
        agent = event.call.attribution.agent
        out.write(
            f"  ~ {agent}: attempt {event.attempt} failed ({event.error_kind.value}), retrying in {event.wait:.2f} s\n"
        )

    async with FakeOpenAIServer(model=_MODEL, default=_ScriptedModel()) as server:
        # One provider client shared by both agents, as many applications do;
        # reliable() still tells the agents apart.
        provider = OpenAIChatCompletionClient(model=_MODEL, api_key="sk-demo-not-a-real-key", base_url=server.base_url)
        writer = AssistantAgent(
            "writer", model_client=provider, system_message=_WRITER_PROMPT, model_client_stream=stream
        )
        critic = AssistantAgent(
            "critic", model_client=provider, system_message=_CRITIC_PROMPT, model_client_stream=stream
        )
        termination = TextMentionTermination("APPROVE") | MaxMessageTermination(8)
        team = RoundRobinGroupChat([writer, critic], termination_condition=termination)
        reliable(team, project="demo", recorder=recorder, on_retry=show_retry)

        out.write(f"Local OpenAI-compatible server at {server.base_url}\n\n")
        async with usage_scope(session="ticket-4711"):
            result = await team.run(task="Ticket 4711 from Dana: where is my refund?")
        for message in result.messages:
            if isinstance(message, BaseTextChatMessage):
                out.write(f"[{message.source}] {message.content}\n")
        triage = reliable(
            AssistantAgent("triage", model_client=provider, system_message=_TRIAGE_PROMPT, output_content_type=Triage),
            project="demo",
            recorder=recorder,
        )
        async with usage_scope(session="ticket-4711"):
            triaged = await triage.run(task="Ticket 4711 from Dana: where is my refund?")
        answer = triaged.messages[-1]
        if isinstance(answer, StructuredMessage):
            out.write(f"[triage] {answer.content!r}\n")
            out.write("  (the model wrapped its JSON in prose, with an <img onerror> inside: validated and cleaned)\n")
        await provider.close()
        return server.request_count
