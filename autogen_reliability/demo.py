"""The showcase behind ``autogen-reliability demo``.

A two-agent AutoGen team (a writer and a critic in a ``RoundRobinGroupChat``)
runs against the built-in OpenAI-compatible server on 127.0.0.1: AutoGen's real
``OpenAIChatCompletionClient`` speaks HTTP to it, so no API key and no network
are needed. The team is wrapped with :func:`reliable`, and every provider
attempt is tallied per agent from the wrapper's :class:`AttemptEvent` hook.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import TextIO

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import BaseTextChatMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient

from . import AttemptEvent, reliable, usage_scope
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


def _scripted_model(request: RecordedRequest) -> FakeReply:
    """Plays both roles: the system prompt says who is asking, the history how far they are."""
    messages = request.messages
    system = str(messages[0].get("content", "")) if messages else ""
    turns = sum(1 for message in messages if message.get("role") == "assistant")
    if "critic" in system:
        return FakeReply.text(_REVIEWS[min(turns, len(_REVIEWS) - 1)])
    return FakeReply.text(_DRAFTS[min(turns, len(_DRAFTS) - 1)])


@dataclass
class _AgentTally:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def run_demo(out: TextIO, *, stream: bool = False) -> None:
    """Runs the demo team and writes its transcript and per-agent token usage to ``out``."""
    tally: defaultdict[str, _AgentTally] = defaultdict(_AgentTally)
    sessions: set[str | None] = set()

    def count(event: AttemptEvent) -> None:
        row = tally[event.call.attribution.agent or "?"]
        row.calls += 1
        sessions.add(event.call.attribution.session)
        if event.result is not None:
            row.prompt_tokens += event.result.usage.prompt_tokens
            row.completion_tokens += event.result.usage.completion_tokens

    async with FakeOpenAIServer(model=_MODEL, default=_scripted_model) as server:
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
        reliable(team, project="demo", on_attempt=count)

        out.write(f"Local OpenAI-compatible server at {server.base_url}\n\n")
        async with usage_scope(session="ticket-4711"):
            result = await team.run(task="Ticket 4711 from Dana: where is my refund?")
        for message in result.messages:
            if isinstance(message, BaseTextChatMessage):
                out.write(f"[{message.source}] {message.content}\n")
        await provider.close()
        requests_seen = server.request_count

    out.write(f"\nUsage by agent (project 'demo', session {', '.join(sorted(map(str, sessions)))}):\n")
    out.write(f"  {'agent':<10} {'calls':>5} {'prompt':>8} {'completion':>11} {'total':>8}\n")
    for name, row in sorted(tally.items()):
        total = row.prompt_tokens + row.completion_tokens
        out.write(f"  {name:<10} {row.calls:>5} {row.prompt_tokens:>8} {row.completion_tokens:>11} {total:>8}\n")
    out.write(f"  ({sum(row.calls for row in tally.values())} attempts recorded, {requests_seen} requests served)\n")


def main(out: TextIO, *, stream: bool = False) -> None:
    """Synchronous entry point for the CLI."""
    asyncio.run(run_demo(out, stream=stream))
