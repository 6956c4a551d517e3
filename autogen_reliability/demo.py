"""The showcase behind ``autogen-reliability demo``.

A two-agent AutoGen team (a writer and a critic in a ``RoundRobinGroupChat``)
runs against the built-in OpenAI-compatible server on 127.0.0.1: AutoGen's real
``OpenAIChatCompletionClient`` speaks HTTP to it, so no API key and no network
are needed. The scripted model fails the way real providers do (a rate limit,
an overloaded model); the team is wrapped with :func:`reliable`, which retries
those. A triage agent with structured output then gets its JSON wrapped in prose
with dangerous markup inside; the wrapper extracts, validates and sanitises it.
Every provider attempt is tallied per agent from the wrapper's
:class:`AttemptEvent` hook.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal, TextIO
from uuid import UUID

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import BaseTextChatMessage, StructuredMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel

from . import AttemptEvent, RetryEvent, reliable, usage_scope
from .testing import FakeOpenAIServer, FakeReply, RecordedRequest

__all__ = ["run_demo"]

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


@dataclass
class _AgentTally:
    calls: set[UUID] = field(default_factory=set)
    attempts: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def run_demo(out: TextIO, *, stream: bool = False) -> None:
    """Runs the demo team and writes its transcript and per-agent token usage to ``out``."""
    tally: defaultdict[str, _AgentTally] = defaultdict(_AgentTally)
    sessions: set[str | None] = set()

    def count(event: AttemptEvent) -> None:
        row = tally[event.call.attribution.agent or "?"]
        row.calls.add(event.call.call_id)
        row.attempts += 1
        sessions.add(event.call.attribution.session)
        if event.result is None:
            row.failed += 1
        else:
            row.prompt_tokens += event.result.usage.prompt_tokens
            row.completion_tokens += event.result.usage.completion_tokens

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
        reliable(team, project="demo", on_attempt=count, on_retry=show_retry)

        out.write(f"Local OpenAI-compatible server at {server.base_url}\n\n")
        async with usage_scope(session="ticket-4711"):
            result = await team.run(task="Ticket 4711 from Dana: where is my refund?")
        for message in result.messages:
            if isinstance(message, BaseTextChatMessage):
                out.write(f"[{message.source}] {message.content}\n")
        triage = reliable(
            AssistantAgent("triage", model_client=provider, system_message=_TRIAGE_PROMPT, output_content_type=Triage),
            project="demo",
            on_attempt=count,
        )
        async with usage_scope(session="ticket-4711"):
            triaged = await triage.run(task="Ticket 4711 from Dana: where is my refund?")
        answer = triaged.messages[-1]
        if isinstance(answer, StructuredMessage):
            out.write(f"[triage] {answer.content!r}\n")
            out.write("  (the model wrapped its JSON in prose, with an <img onerror> inside: validated and cleaned)\n")
        await provider.close()
        requests_seen = server.request_count

    out.write(f"\nUsage by agent (project 'demo', session {', '.join(sorted(map(str, sessions)))}):\n")
    out.write(
        f"  {'agent':<8} {'calls':>5} {'attempts':>8} {'failed':>6} {'prompt':>7} {'completion':>10} {'total':>6}\n"
    )
    for name, row in sorted(tally.items()):
        total = row.prompt_tokens + row.completion_tokens
        out.write(
            f"  {name:<8} {len(row.calls):>5} {row.attempts:>8} {row.failed:>6} "
            f"{row.prompt_tokens:>7} {row.completion_tokens:>10} {total:>6}\n"
        )
    attempts = sum(row.attempts for row in tally.values())
    out.write(f"  ({attempts} attempts recorded, {requests_seen} requests served)\n")


def main(out: TextIO, *, stream: bool = False) -> None:
    """Synchronous entry point for the CLI."""
    asyncio.run(run_demo(out, stream=stream))
