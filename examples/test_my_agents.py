"""Testing your own agents: a two-agent team that must survive a 429 burst and a malformed answer.

This is a test file of the kind you would write for your agents, using the pytest
plugin that comes with autogen-reliability (installing the package is all it
takes: pytest finds the plugin). Its fixtures give each test scripted model
clients (no HTTP, no key, no cost), wrappers that record to a throw-away ledger,
and assertions over what was recorded.

Run: ``pytest examples/test_my_agents.py`` (with ``pip install pytest pytest-asyncio``).
"""

from __future__ import annotations

from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from pydantic import BaseModel

from autogen_reliability import ValidationPolicy
from autogen_reliability.testing import faults


class Review(BaseModel):
    """What the critic must answer: the reply is approved or not, and why."""

    approved: bool
    comment: str


@pytest.mark.asyncio  # pytest-asyncio runs the coroutine (not needed with asyncio_mode = "auto")
@pytest.mark.autogen_reliability(project="support-desk")
async def test_the_team_survives_a_429_burst_and_a_malformed_answer(
    scripted_client: Any, reliable_client: Any, usage: Any
) -> None:
    # The writer's provider is rate limited twice before it answers; the critic's first answer is not JSON.
    writer_model = reliable_client(
        scripted_client(
            [
                faults.rate_limit(retry_after=1),
                faults.rate_limit(retry_after=1),
                "Dear customer, your refund was issued today and reaches your card within 5 days.",
            ]
        ),
        agent="writer",
    )
    critic_model = reliable_client(
        scripted_client([faults.malformed_json(), {"approved": True, "comment": "Clear, polite, with a date."}]),
        agent="critic",
        validation=ValidationPolicy(Review),
    )
    writer = AssistantAgent("writer", model_client=writer_model, system_message="Answer support tickets.")
    critic = AssistantAgent("critic", model_client=critic_model, system_message="Review the reply as JSON.")
    team = RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(3))

    result = await team.run(task="Ticket 4711: where is my refund?")

    # The team finished: the writer's answer, then the critic's review (validated, so it parses).
    texts = [message.content for message in result.messages if isinstance(message, TextMessage)]
    _task, writer_says, critic_says = texts
    assert "refund was issued" in writer_says
    assert Review.model_validate_json(critic_says).approved

    # What it cost to get there: every attempt is a row, with its outcome and its price.
    usage.assert_calls(2)  # one logical call per agent...
    usage.assert_attempts(5)  # ...in five attempts to the providers
    usage.assert_attempts(2, agent="writer", outcome="error")  # the 429s, retried (in test mode without waiting)
    usage.assert_attempts(1, agent="critic", outcome="invalid")  # the answer that was not JSON, re-asked
    usage.assert_no_unpriced()
    usage.assert_cost_below("0.001")  # USD, exact: the ledger sums nano-dollars
    wasted = sum((row.cost_nanousd or 0 for row in usage.rows(outcome="invalid")), 0)
    assert wasted > 0  # the re-asked answer was paid for
