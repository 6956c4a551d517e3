"""The README's quick start, runnable without an API key.

An existing ``AssistantAgent`` is wrapped in place with ``reliable()`` and answers
a ticket; its client talks to a local OpenAI-compatible server instead of the
provider, and every provider attempt is printed with its attribution (the agent's
name among it).

Run: ``python examples/quickstart.py``. Usage rows go to a ledger of its own,
``./quickstart.db``. To use OpenAI itself, drop the server
and build the client with your real ``api_key`` (or ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import asyncio

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

from autogen_reliability import AttemptEvent, configure, reliable, usage_scope
from autogen_reliability.testing import FakeOpenAIServer, FakeReply


def show(event: AttemptEvent) -> None:
    who = event.call.attribution
    usage = event.result.usage if event.result else None
    print(f"attempt {event.attempt} of call {event.call.call_id}: {event.outcome}, "
          f"project={who.project} session={who.session} agent={who.agent}, {usage}")  # fmt: skip


async def main() -> None:
    # The ledger; without it: $AUTOGEN_RELIABILITY_DB_URL, else sqlite:///autogen_reliability.db.
    configure(db_url="sqlite:///quickstart.db")
    async with FakeOpenAIServer(default=FakeReply.text("Your refund was issued today.")) as server:
        model_client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-local", base_url=server.base_url)
        writer = AssistantAgent("writer", model_client=model_client)  # your agent, as it is
        reliable(writer, project="acme-support", on_attempt=show)  # wraps its client in place, agent="writer"
        async with usage_scope(session="ticket-4711"):
            result = await writer.run(task="Draft a reply to ticket 4711")
        reply = result.messages[-1]
        assert isinstance(reply, TextMessage)
        print(reply.content)
        await model_client.close()


if __name__ == "__main__":
    asyncio.run(main())
