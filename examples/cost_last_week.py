"""What did our agents cost last week, and why? Two queries on the usage ledger.

Two agents of project ``acme-support`` answer tickets through a local
OpenAI-compatible server that rate-limits one request and makes the triage
agent's first answer fail validation. Every provider attempt is a row, so the
ledger shows what the retry and the re-ask cost on top of the answers:

1. per agent and model, over the last 7 days: calls, attempts, attempts that
   did not give the answer (errors, re-asks), tokens, cost, and how much of the
   cost went to those attempts;
2. the attempts of the most expensive call, one line each.

Run: ``python examples/cost_last_week.py``. It records to a ledger of its own,
``./cost_last_week.db`` (so that running the other examples does not mix their
numbers into this one), and reads that ledger back.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from autogen_agentchat.agents import AssistantAgent
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel
from sqlalchemy import case, func, select

from autogen_reliability import reliable, usage_scope
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.storage import UsageRecord, UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

PROJECT = "acme-support"
LEDGER = "sqlite:///cost_last_week.db"


class Triage(BaseModel):
    category: str
    urgent: bool


async def run_agents(recorder: UsageRecorder) -> None:
    usage = FakeUsage(prompt_tokens=900, completion_tokens=120)
    async with FakeOpenAIServer(model="gpt-4o-mini") as server:
        server.enqueue(
            FakeReply.error(429, headers={"retry-after": "0"}),  # the writer's first attempt
            FakeReply.text("Your refund was issued today.", usage=usage),
            FakeReply.text('Sure! {"category": "billing"}', usage=usage),  # triage: "urgent" is missing
            FakeReply.text('{"category": "billing", "urgent": true}', usage=usage),
            FakeReply.text("Here is how to reset your password.", usage=usage),
        )
        provider = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-local", base_url=server.base_url)
        writer = reliable(AssistantAgent("writer", model_client=provider), project=PROJECT, recorder=recorder)
        triage = reliable(
            AssistantAgent("triage", model_client=provider, output_content_type=Triage),
            project=PROJECT,
            recorder=recorder,
        )
        async with usage_scope(session="ticket-4711"):
            await writer.run(task="Draft a reply to ticket 4711: where is my refund?")
            await triage.run(task="Triage ticket 4711")
        async with usage_scope(session="ticket-4712"):
            await writer.run(task="Draft a reply to ticket 4712: I cannot log in")
        await provider.close()


def usd(nanousd: int | None) -> str:
    # Exact: nano-USD shifted nine places, never rounded (a float or a :.6f would round sub-micro amounts).
    return "unpriced" if nanousd is None else f"${Decimal(nanousd).scaleb(-9):f}"


def report(store: UsageStore) -> None:
    row = UsageRecord
    since = (datetime.now(UTC) - timedelta(days=6)).date()  # 7 days: today (UTC) and the 6 before it
    missed = row.outcome != "ok"  # errors, re-asked answers, cancelled attempts
    per_agent = (
        select(
            row.agent,
            row.model,
            func.count(row.call_id.distinct()).label("calls"),
            func.count().label("attempts"),
            func.sum(case((missed, 1), else_=0)).label("missed"),
            func.sum(row.prompt_tokens + row.completion_tokens).label("tokens"),
            func.sum(row.cost_nanousd).label("cost"),
            func.sum(case((missed, row.cost_nanousd), else_=0)).label("missed_cost"),
            (func.count() - func.count(row.cost_nanousd)).label("unpriced"),
        )
        .where(row.project == PROJECT, row.day >= since)  # project and day lead the report index
        .group_by(row.agent, row.model)
        .order_by(func.sum(row.cost_nanousd).desc().nulls_last())  # unpriced last (PostgreSQL sorts NULL first)
    )
    print(f"Project {PROJECT}, since {since}:")
    print(f"  {'agent':<8} {'model':<12} {'calls':>5} {'attempts':>8} {'missed':>6} {'tokens':>7} {'cost':>12}  missed")
    with store.engine.connect() as connection:
        for line in connection.execute(per_agent):
            note = f" ({line.unpriced} attempts unpriced)" if line.unpriced else ""
            agent = line.agent or "(none)"  # a client not told its agent's name, outside a team
            print(
                f"  {agent:<8} {line.model:<12} {line.calls:>5} {line.attempts:>8} {line.missed:>6} "
                f"{line.tokens:>7} {usd(line.cost):>12}  {usd(line.missed_cost)}{note}"
            )
        costliest = connection.execute(
            select(row.call_id)
            .where(row.project == PROJECT, row.day >= since)
            .group_by(row.call_id)
            .order_by(func.sum(row.cost_nanousd).desc().nulls_last(), func.count().desc())
            .limit(1)
        ).scalar_one()

    print(f"\nWhy: the most expensive call, {costliest}, attempt by attempt:")
    for event in store.events(call_id=costliest):
        reason = event.error_kind or ("answer failed validation" if event.outcome == "invalid" else "")
        print(
            f"  #{event.attempt} {event.agent} {event.outcome:<8} {reason:<24} "
            f"{event.prompt_tokens + event.completion_tokens:>5} tokens {usd(event.cost_nanousd)}"
        )


def main() -> None:
    with UsageStore(LEDGER) as store:
        # The rows are written by the recorder's thread; close() waits for the last of them.
        recorder = UsageRecorder(store, spool_dir="cost_last_week.spool", close_sink=False)
        asyncio.run(run_agents(recorder))
        recorder.close()
        report(store)


if __name__ == "__main__":
    main()
