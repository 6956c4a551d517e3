"""A user's code, for ``mypy --strict`` (tests/test_public_types.py): the documented examples, typed.

Never run, only type-checked as a user's project would check its own code against the installed package:
the README's quick start and each guide's main example (a wrapped client, ``usage_scope``, the policies,
budgets, reports, the health probe and the FastAPI routes, the test doubles and the pytest fixtures). An
``assert_type`` says what the checker must infer; an error here is one a user of the annotations would get.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal, assert_type

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core.models import ChatCompletionClient, CreateResult, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from fastapi import FastAPI
from pydantic import BaseModel

from autogen_reliability import (
    AccountingSettings,
    AttemptEvent,
    Attribution,
    BudgetAlert,
    BudgetExceededError,
    BudgetPolicy,
    CircuitBreakerPolicy,
    CostTermination,
    ErrorKind,
    HealthProbe,
    HealthReport,
    ReliableChatCompletionClient,
    RetryBudget,
    RetryPolicy,
    SanitizePolicy,
    UsageStore,
    ValidationPolicy,
    configure,
    current_attribution,
    reliable,
    usage_scope,
)
from autogen_reliability.accounting import PricingTable, UsageEvent
from autogen_reliability.fastapi import UsageContextMiddleware, health_router, usage_router
from autogen_reliability.metrics import metrics_app
from autogen_reliability.reports import UsageReport
from autogen_reliability.retry import RetryEvent, classify_error, get_on_retry_hooks, log_retry, set_on_retry_hooks
from autogen_reliability.testing import (
    FakeOpenAIServer,
    FakeReply,
    FakeUsage,
    ScriptedChatCompletionClient,
    ScriptedRequest,
    ScriptItem,
    faults,
)
from autogen_reliability.testing.plugin import (
    MarkerOptions,
    RecordedUsage,
    ReliableClientFactory,
    ScriptedClientFactory,
)
from autogen_reliability.validation import extract_json


class Ticket(BaseModel):
    id: int
    priority: Literal["low", "high"]


async def quick_start() -> TaskResult:
    writer = AssistantAgent("writer", model_client=OpenAIChatCompletionClient(model="gpt-4o-mini"))
    assert_type(reliable(writer, project="acme-support"), AssistantAgent)
    async with usage_scope(session="ticket-4711") as attribution:
        assert_type(attribution, Attribution)
        return await writer.run(task="Draft a reply to ticket 4711")


def on_attempt(event: AttemptEvent) -> None:
    print(event)


async def a_wrapped_client() -> CreateResult:
    client = reliable(
        OpenAIChatCompletionClient(model="gpt-4o-mini"),
        project="acme-support",
        agent=None,
        tags={"tier": "gold"},
        retry=RetryPolicy(max_attempts=4, deadline=timedelta(seconds=90), budget=RetryBudget()),
        circuit=CircuitBreakerPolicy(window=20, failure_rate=0.5, open_for=30),
        fallbacks=[OpenAIChatCompletionClient(model="gpt-4.1-mini")],
        validation=ValidationPolicy(schema=Ticket, reask=2),
        sanitize=SanitizePolicy(),
        budget=BudgetPolicy(limit_usd=25, period="day"),
        on_attempt=on_attempt,
        on_retry=lambda event: print(event.attempt, event.error_kind, event.wait),
    )
    assert_type(client, ReliableChatCompletionClient)
    as_interface: ChatCompletionClient = client
    AssistantAgent("critic", model_client=as_interface)
    with usage_scope(session="ticket-4711", tags={"tenant": "t-42"}):
        result = await client.create([UserMessage(content="Draft a reply", source="user")])
    try:
        await client.create([UserMessage(content="Again", source="user")])
    except BudgetExceededError as error:
        print(error.scope, error.key, error.spent_usd, error.limit_usd)
    return result


def retry_hooks() -> None:
    counts: dict[str, int] = {}

    def count_retry(event: RetryEvent) -> None:
        counts[event.error_kind.value] = counts.get(event.error_kind.value, 0) + 1

    set_on_retry_hooks([log_retry, count_retry])
    set_on_retry_hooks(None)
    assert get_on_retry_hooks() == (log_retry,)
    assert_type(classify_error(TimeoutError()), ErrorKind)
    # The kinds as a set, as the message of a wrong retry_on shows them ({ErrorKind.RATE_LIMIT}).
    policy = RetryPolicy(retry_on={ErrorKind.RATE_LIMIT, ErrorKind.OVERLOADED})
    RetryPolicy(retry_on=policy.retry_on | {ErrorKind.UNKNOWN})
    assert_type(ErrorKind.RATE_LIMIT in policy.retry_on, bool)


@usage_scope(project="acme", session="job")
def decorated(number: int) -> str:
    return str(number)


@usage_scope(session="job")
async def decorated_async(number: int) -> int:
    return number + 1


@usage_scope(session="job")
def decorated_generator() -> Iterator[int]:
    yield 1


@usage_scope(session="job")
async def decorated_async_generator() -> AsyncIterator[int]:
    yield 1


async def decorated_functions() -> None:
    assert_type(decorated(1), str)
    assert_type(await decorated_async(1), int)
    assert_type(list(decorated_generator()), list[int])
    assert_type([item async for item in decorated_async_generator()], list[int])
    assert_type(current_attribution(), Attribution)


@reliable(project="acme")
def make_team() -> RoundRobinGroupChat:
    writer = AssistantAgent("writer", model_client=OpenAIChatCompletionClient(model="gpt-4o-mini"))
    return RoundRobinGroupChat([writer], termination_condition=MaxMessageTermination(3) | CostTermination(0.5))


@reliable(project="acme")
async def make_agent() -> AssistantAgent:
    return AssistantAgent("writer", model_client=OpenAIChatCompletionClient(model="gpt-4o-mini"))


async def factories() -> None:
    assert_type(make_team(), RoundRobinGroupChat)
    assert_type(await make_agent(), AssistantAgent)


def budgets() -> None:
    def alert(event: BudgetAlert) -> None:
        print(event)

    policy = BudgetPolicy(limit_usd="0.50", period="day", scope="session", alert_at=(0.5, 0.8), on_alert=alert)
    settings = configure(db_url="sqlite:///usage.db", budget=policy, pricing=PricingTable())
    assert_type(settings, AccountingSettings)
    assert_type(settings.db_url, str)
    configure(budget=None)


def settings_in_force() -> AccountingSettings:
    return configure()  # what a typed helper of the service hands on: the settings' type is importable


def reports() -> None:
    event = UsageEvent(uuid.uuid4(), 1, datetime.now(UTC), 12.0, project="acme-support", cost_nanousd=10, outcome="ok")
    with UsageStore("sqlite:///usage.db") as store:
        store.write([event])
        report = store.report("acme-support", since=date(2025, 5, 1), group_by=("agent", "model"))
    assert_type(report, UsageReport)
    assert_type(report.totals.cost, Decimal)
    for group in report.breakdown:
        print(group.key["agent"], group.usage.cost)
    assert_type(report.to_json() + report.to_csv() + report.to_markdown() + report.to_html(), str)


async def health_and_fastapi() -> None:
    client = reliable(OpenAIChatCompletionClient(model="gpt-4o-mini"), project="acme-support")
    store = UsageStore("sqlite:///usage.db")
    probe = HealthProbe({"openai": client}, store)
    app = FastAPI()
    app.include_router(health_router(probe))
    app.include_router(usage_router(store))
    app.add_middleware(UsageContextMiddleware)
    app.mount("/metrics", metrics_app())
    report = await probe.check()
    assert_type(report, HealthReport)
    print(report.status, report.summary().components)


def test_doubles() -> None:
    server = FakeOpenAIServer(
        model="gpt-4o-mini",
        default=FakeReply.text("Your refund.", usage=FakeUsage(prompt_tokens=120, completion_tokens=30)),
    ).start()
    server.enqueue(FakeReply.error(429, headers={"Retry-After": "0"}))
    assert_type(server.request_count, int)
    client = ScriptedChatCompletionClient(["Hello!", faults.rate_limit(retry_after=1), {"answer": 42}])
    assert_type(reliable(client), ReliableChatCompletionClient)
    print(extract_json('{"answer": 42}'))
    server.stop()


def answer(request: ScriptedRequest) -> ScriptItem:
    return f"{len(request.messages)} messages"


async def test_with_the_fixtures(
    fake_openai_server: FakeOpenAIServer,
    scripted_client: ScriptedClientFactory,
    reliable_client: ReliableClientFactory,
    usage: RecordedUsage,
) -> None:
    # docs/testing.md: scripted_client([...], **options) makes a ScriptedChatCompletionClient, and what the
    # client keeps (requests, remaining, enqueue, wait_for_requests) is there for the test to read.
    scripted = scripted_client([faults.server_error(503), "A draft."], model="gpt-4o", default=answer)
    assert_type(scripted, ScriptedChatCompletionClient)
    model = reliable_client(scripted, agent="writer", retry=RetryPolicy(max_attempts=2))
    assert_type(model, ReliableChatCompletionClient)
    assert_type(reliable_client(), ReliableChatCompletionClient)
    reliable_client(scripted, retyr=None)  # type: ignore[call-arg]  # a misspelt option, as reliable() refuses it
    scripted_client(["Hello!"], modle="gpt-4o")  # type: ignore[call-arg]  # and as the client does
    await AssistantAgent("writer", model_client=model).run(task="Write the release note.")
    assert scripted.remaining == []
    assert len(scripted.requests) == 2
    scripted.enqueue("More.")
    usage.assert_calls(1, agent="writer", outcome="ok")
    assert_type(usage.total_cost(), Decimal)
    for row in usage.rows(outcome="ok"):
        assert_type(row, UsageEvent)
    assert fake_openai_server.requests == []
    assert_type(MarkerOptions().model, str)
