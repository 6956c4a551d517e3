"""A team with a spending limit: ``CostTermination`` ends its run at a cost, a ``BudgetPolicy`` refuses calls past it.

A writer and a critic (two ``AssistantAgent``) take turns in a ``RoundRobinGroupChat``
on one support ticket, each call priced by the wrapped client. Two limits, the same
amount, do two different jobs:

- ``CostTermination`` is the team's termination condition: checked between turns, it
  ends the run gracefully (``result.stop_reason`` says why) once the run's calls cost
  the limit. The call that reaches it is the last one the run makes.
- ``BudgetPolicy`` is a hard stop, checked before every call of every run, agent and
  process recording to the same ledger: once the ticket (its session) has spent the
  limit, a call raises ``BudgetExceededError`` and no request is sent. Inside a team
  run, AutoGen re-raises an agent's error as a ``RuntimeError`` whose message starts
  with ``BudgetExceededError``; that is why the team is stopped by the condition, and
  the budget is the cap that nothing passes afterwards.

Run: ``python examples/team_budget.py``. The agents talk to a local OpenAI-compatible
server that answers every request with 500 prompt and 125 completion tokens, $0.00015
at gpt-4o-mini's price; usage rows go to ``./team_budget.db``. Each run is a new
ticket, so its budget starts at $0 (the ledger, and the budgets read from it, outlive
the process).
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient

from autogen_reliability import (
    BudgetAlert,
    BudgetExceededError,
    BudgetPolicy,
    CostTermination,
    configure,
    reliable,
    usage_scope,
)
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

LIMIT_USD = Decimal("0.0004")  # what one ticket may cost
DB_URL = "sqlite:///team_budget.db"


def alert(event: BudgetAlert) -> None:
    print(f"budget alert: {event.key} has spent ${event.spent_usd}, past {event.threshold:.0%} of ${event.limit_usd}")


# What the local provider answers, in turn (and after these, the last one again), each at $0.00015.
USAGE = FakeUsage(prompt_tokens=500, completion_tokens=125)
DRAFT = FakeReply.text("Draft: Your refund was issued today and reaches your card within 5 working days.", usage=USAGE)
CRITIQUE = FakeReply.text("Critique: say sorry for the delay, and give the refund's reference.", usage=USAGE)
REVISION = FakeReply.text("Revision: Sorry for the delay. Refund R-2291 was issued today; allow 5 days.", usage=USAGE)


async def main() -> None:
    configure(db_url=DB_URL)  # without it: $AUTOGEN_RELIABILITY_DB_URL, else ./autogen_reliability.db
    ticket = f"ticket-{uuid.uuid4().hex[:8]}"
    async with FakeOpenAIServer(model="gpt-4o-mini", default=REVISION) as server:
        server.enqueue(DRAFT, CRITIQUE)
        client = reliable(
            OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-local", base_url=server.base_url),
            project="acme-support",
            budget=BudgetPolicy(limit_usd=LIMIT_USD, period=None, scope="session", alert_at=(0.5,), on_alert=alert),
        )
        # reliable(agent) gives each agent a wrapper of its own with its name bound: the rows say who spent.
        writer = reliable(AssistantAgent("writer", model_client=client, system_message="Draft replies."))
        critic = reliable(AssistantAgent("critic", model_client=client, system_message="Critique drafts."))
        stop = CostTermination(LIMIT_USD)
        team = RoundRobinGroupChat([writer, critic], termination_condition=stop | MaxMessageTermination(20))

        async with usage_scope(session=ticket):  # the condition counts this run's calls, the budget this ticket's
            result = await team.run(task="Reply to the customer: where is my refund?")
            for message in result.messages[1:]:
                assert isinstance(message, TextMessage)
                print(f"{message.source}: {message.content}")
            print(f"stopped: {result.stop_reason}")

            requests = server.request_count
            try:
                await writer.run(task="The customer asks again: any news?")
            except BudgetExceededError as error:
                print(f"refused: {error}")
                sent = server.request_count - requests
                print(f"spent ${error.spent_usd} of ${error.limit_usd}; requests sent: {sent}")
        await client.close()

    recorder = client.recorder  # None only for a wrapper made with track_usage=False
    assert recorder is not None
    recorder.flush()  # rows are written in batches off the event loop: wait for them before reading
    with UsageStore(DB_URL) as store:
        report = store.report("acme-support", session=ticket, group_by=["agent"])
    print(f"ledger for {ticket}: {report.totals.calls} call(s), ${report.totals.cost}")
    for line in report.breakdown:
        print(f"  {line.key['agent']}: {line.usage.calls} call(s), ${line.usage.cost}")


if __name__ == "__main__":
    asyncio.run(main())
