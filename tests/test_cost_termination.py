"""CostTermination stops a real AutoGen team at the model call whose priced cost reaches the limit.

The teams are AutoGen's own (``RoundRobinGroupChat`` of ``AssistantAgent``s) with
``reliable(OpenAIChatCompletionClient(...))`` clients talking HTTP to a FakeOpenAIServer,
recording to a real SQLite ledger. Every reply reports the same usage, so every call
costs ``CALL`` nano-USD, priced by the same ``PricingTable`` the wrapper uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
import weakref
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent, SocietyOfMindAgent
from autogen_agentchat.base import TaskResult, TerminatedException, TerminationCondition
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core.models import ChatCompletionClient

import autogen_reliability
from autogen_reliability import ConfigurationError, CostTermination, reliable, usage_scope
from autogen_reliability.accounting import PricingTable, TokenUsage, UsageEvent, UsageRecorder, _feed
from autogen_reliability.budget import CostTermination as BudgetCostTermination
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

from .conftest import MODEL, OpenAIClientFactory
from .storage_fixtures import Ledger, ledger_rows

USAGE = FakeUsage(prompt_tokens=1200, completion_tokens=300)
_PRICE = PricingTable().price(
    MODEL, "openai", usage=TokenUsage(prompt_tokens=USAGE.prompt_tokens, completion_tokens=USAGE.completion_tokens)
)
assert _PRICE is not None
CALL = _PRICE.nanousd
"""The priced cost of one call, in nano-USD."""
SAFETY_TURNS = 12
UNPRICED_MODEL = "acme-internal-7b"
UNPRICED_INFO: Any = {
    "vision": False,
    "function_calling": True,
    "json_output": True,
    "family": "unknown",
    "structured_output": True,
}


def usd(nanousd: int) -> str:
    """nano-USD as the stop message writes USD."""
    return format((Decimal(nanousd) / 1_000_000_000).normalize(), "f")


def limit_between(calls: int) -> str:
    """A limit that ``calls`` calls reach and ``calls - 1`` do not: halfway between."""
    return usd(CALL * calls - CALL // 2)


@pytest.fixture(autouse=True)
def priced_replies(fake_openai_server: FakeOpenAIServer) -> None:
    fake_openai_server.default = FakeReply.text("noted", usage=USAGE)


def make_team(
    make_client: OpenAIClientFactory,
    recorder: UsageRecorder,
    termination: TerminationCondition,
    *,
    bob_model: str | None = None,
) -> RoundRobinGroupChat:
    def client(model: str | None = None) -> ChatCompletionClient:
        inner = make_client(model=model, model_info=UNPRICED_INFO) if model else make_client()
        return reliable(inner, recorder=recorder)

    alice = AssistantAgent("alice", model_client=client())
    bob = AssistantAgent("bob", model_client=client(bob_model))
    # max_turns: a condition that never fires must fail the test, not loop on the server's default reply.
    return RoundRobinGroupChat([alice, bob], termination_condition=termination, max_turns=SAFETY_TURNS)


def spoken(result: TaskResult) -> list[str]:
    return [message.source for message in result.messages if isinstance(message, TextMessage)]


async def test_the_team_stops_at_the_call_that_reaches_the_limit(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    limit = limit_between(3)
    team = make_team(make_openai_client, ledger[1], CostTermination(limit))
    async with usage_scope(session="s-1"):
        result = await team.run(task="plan the launch")
    assert fake_openai_server.request_count == 3
    assert spoken(result) == ["user", "alice", "bob", "alice"]
    assert result.stop_reason == f"Cost limit reached: ${usd(3 * CALL)} of ${limit}"
    rows = ledger_rows(ledger)
    assert sum(row.cost_nanousd or 0 for row in rows) == 3 * CALL
    assert {row.session for row in rows} == {"s-1"}  # the scope reached the runtime's tasks


async def test_a_limit_one_call_reaches_stops_after_that_call(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    team = make_team(make_openai_client, ledger[1], CostTermination(usd(CALL)))
    async with usage_scope(session="s-1"):
        result = await team.run(task="plan the launch")
    assert fake_openai_server.request_count == 1
    assert result.stop_reason == f"Cost limit reached: ${usd(CALL)} of ${usd(CALL)}"


async def test_each_run_counts_from_zero(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    termination = CostTermination(limit_between(2))
    team = make_team(make_openai_client, ledger[1], termination)
    async with usage_scope(session="s-1"):
        first = await team.run(task="one")
        assert fake_openai_server.request_count == 2
        assert not termination.terminated  # AutoGen reset it when it stopped the run
        assert termination.spent_usd == 0
        second = await team.run(task="two")
        assert fake_openai_server.request_count == 4
        await team.reset()
        third = await team.run(task="three")
        assert fake_openai_server.request_count == 6
    for result in (first, second, third):
        assert result.stop_reason == f"Cost limit reached: ${usd(2 * CALL)} of ${limit_between(2)}"


async def test_a_continued_run_counts_its_first_turn(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Without a task AutoGen checks the condition first after the first speaker's turn: its call is
    # recorded before that check and must still count, or the run would make one call too many.
    team = make_team(make_openai_client, ledger[1], CostTermination(limit_between(2)))
    async with usage_scope(session="s-1"):
        await team.run(task="one")
        assert fake_openai_server.request_count == 2
        continued = await team.run()
    assert fake_openai_server.request_count == 4
    assert spoken(continued) == ["alice", "bob"]
    assert continued.stop_reason == f"Cost limit reached: ${usd(2 * CALL)} of ${limit_between(2)}"


async def test_a_team_built_before_another_ran_does_not_count_what_that_team_spent(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Both teams are built first (their conditions armed), then run one after the other, with no scope:
    # the second run's calls are the only ones it may count, or it stops before its first speaker.
    first = make_team(make_openai_client, ledger[1], CostTermination(limit_between(3)))
    second = make_team(make_openai_client, ledger[1], CostTermination(limit_between(3)))
    await first.run(task="one")
    assert fake_openai_server.request_count == 3
    result = await second.run(task="two")
    assert fake_openai_server.request_count == 6
    assert spoken(result) == ["user", "alice", "bob", "alice"]
    assert result.stop_reason == f"Cost limit reached: ${usd(3 * CALL)} of ${limit_between(3)}"


async def test_a_nested_team_counts_its_own_calls_not_the_outer_teams(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # The inner team of a SocietyOfMindAgent runs once per turn of "som", in the same session as the outer
    # team: carol's call between two inner runs is the outer team's, not the next inner run's.
    inner = make_team(make_openai_client, ledger[1], CostTermination(limit_between(2)))
    som = SocietyOfMindAgent("som", team=inner, model_client=reliable(make_openai_client(), recorder=ledger[1]))
    carol = AssistantAgent("carol", model_client=reliable(make_openai_client(), recorder=ledger[1]))
    outer = RoundRobinGroupChat([som, carol], termination_condition=MaxMessageTermination(4))
    async with usage_scope(session="s-1"):
        result = await outer.run(task="plan the launch")
    assert result.stop_reason is not None
    assert result.stop_reason.startswith("Maximum number of messages 4 reached")
    assert fake_openai_server.request_count == 7
    rows = sorted(ledger_rows(ledger), key=lambda row: row.started_at)
    assert [row.agent for row in rows] == ["alice", "bob", "som", "carol", "alice", "bob", "som"]


async def test_a_selector_team_picks_the_next_speaker_after_the_check(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # As docs/budgets.md says: the selection that reaches the limit is followed by the chosen speaker's call.
    fake_openai_server.default = FakeReply.text("alice", usage=USAGE)  # the selector's answer, and alice's
    alice = AssistantAgent("alice", model_client=make_openai_client(), description="plans")
    bob = AssistantAgent("bob", model_client=make_openai_client(), description="reviews")
    team = SelectorGroupChat(
        [alice, bob],
        model_client=make_openai_client(),
        termination_condition=CostTermination(limit_between(3)),
        allow_repeated_speaker=True,
        max_turns=SAFETY_TURNS,
    )
    reliable(team, recorder=ledger[1])
    async with usage_scope(session="s-1"):
        result = await team.run(task="plan the launch")
    assert result.stop_reason == f"Cost limit reached: ${usd(4 * CALL)} of ${limit_between(3)}"
    rows = sorted(ledger_rows(ledger), key=lambda row: row.started_at)
    assert [row.agent for row in rows] == ["SelectorGroupChat", "alice", "SelectorGroupChat", "alice"]


async def test_or_with_max_messages_stops_at_whichever_comes_first(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    cost_first = make_team(make_openai_client, ledger[1], CostTermination(limit_between(2)) | MaxMessageTermination(10))
    messages_first = make_team(
        make_openai_client, ledger[1], CostTermination(limit_between(5)) | MaxMessageTermination(3)
    )
    async with usage_scope(session="s-1"):
        result = await cost_first.run(task="one")
        assert fake_openai_server.request_count == 2
        assert result.stop_reason == f"Cost limit reached: ${usd(2 * CALL)} of ${limit_between(2)}"
        result = await messages_first.run(task="two")
    assert fake_openai_server.request_count == 4  # task + 2 answers = 3 messages
    assert result.stop_reason is not None
    assert result.stop_reason.startswith("Maximum number of messages 3 reached")


async def test_and_with_max_messages_waits_for_both(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    termination = CostTermination(limit_between(2)) & MaxMessageTermination(5)
    team = make_team(make_openai_client, ledger[1], termination)
    async with usage_scope(session="s-1"):
        result = await team.run(task="one")
    assert fake_openai_server.request_count == 4  # cost reached at the 2nd call, 5 messages at the 4th
    assert result.stop_reason is not None
    cost, messages = result.stop_reason.split(", ", 1)
    assert cost == f"Cost limit reached: ${usd(2 * CALL)} of ${limit_between(2)}"  # frozen when it stopped
    assert messages.startswith("Maximum number of messages 5 reached")


async def test_agents_narrows_the_count_to_those_agents(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    team = make_team(make_openai_client, ledger[1], CostTermination(limit_between(2), agents=["bob"]))
    async with usage_scope(session="s-1"):
        result = await team.run(task="one")
    assert fake_openai_server.request_count == 4  # alice, bob, alice, bob: bob's second call reaches it
    assert spoken(result)[-1] == "bob"


async def test_teams_running_at_once_under_different_sessions_count_only_their_own(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Team A's first request waits on the server until team B has finished a run that costs more than
    # A's limit: counting B's calls, A would stop after its first call instead of its third.
    b_done = threading.Event()
    answered = 0

    def reply_to_a(_request: object) -> FakeReply:
        nonlocal answered
        answered += 1
        if answered == 1:
            assert b_done.wait(30), "team B never finished"
        return FakeReply.text("noted", usage=USAGE)

    with FakeOpenAIServer(model=MODEL, default=reply_to_a) as server_a:
        team_a = make_team(
            lambda **options: make_openai_client(base_url=server_a.base_url, **options),
            ledger[1],
            CostTermination(limit_between(3)),
        )
        team_b = make_team(make_openai_client, ledger[1], CostTermination(limit_between(5)))

        async def run_a() -> TaskResult:
            async with usage_scope(session="a"):
                return await team_a.run(task="task a")

        async def run_b() -> TaskResult:
            try:
                async with usage_scope(session="b"):
                    return await team_b.run(task="task b")
            finally:
                b_done.set()

        result_a, result_b = await asyncio.gather(run_a(), run_b())
        assert server_a.request_count == 3
    assert fake_openai_server.request_count == 5
    assert result_a.stop_reason == f"Cost limit reached: ${usd(3 * CALL)} of ${limit_between(3)}"
    assert result_b.stop_reason == f"Cost limit reached: ${usd(5 * CALL)} of ${limit_between(5)}"
    rows = ledger_rows(ledger)
    assert sorted(row.session or "" for row in rows) == ["a"] * 3 + ["b"] * 5


async def test_unpriced_calls_are_not_free_they_are_named_and_warned_about(
    ledger: Ledger,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    team = make_team(make_openai_client, ledger[1], CostTermination(limit_between(2)), bob_model=UNPRICED_MODEL)
    with caplog.at_level(logging.WARNING, logger="autogen_reliability"):
        async with usage_scope(session="s-1"):
            result = await team.run(task="one")
    assert fake_openai_server.request_count == 3  # alice (priced), bob (unpriced), alice (priced): the 2nd priced call
    assert result.stop_reason == (
        f"Cost limit reached: ${usd(2 * CALL)} of ${limit_between(2)}"
        f" (and 1 call to {UNPRICED_MODEL} with no price, not counted)"
    )
    warnings = [record.getMessage() for record in caplog.records if "CostTermination" in record.getMessage()]
    assert warnings == [
        f"CostTermination: 1 call of this run to {UNPRICED_MODEL} had no price;"
        f" the limit of ${limit_between(2)} counts only priced calls"
    ]


async def test_on_unpriced_stop_stops_at_the_first_unpriced_call(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    termination = CostTermination("1", on_unpriced="stop")
    team = make_team(make_openai_client, ledger[1], termination, bob_model=UNPRICED_MODEL)
    async with usage_scope(session="s-1"):
        result = await team.run(task="one")
    assert fake_openai_server.request_count == 2
    assert result.stop_reason == (
        f"Cost limit cannot be enforced: 1 call to {UNPRICED_MODEL} had no price (priced so far: ${usd(CALL)} of $1)"
    )


async def test_it_round_trips_as_a_component_alone_and_inside_a_team(
    ledger: Ledger, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    condition = CostTermination(Decimal("0.000001500"), project="acme", agents=["bob", "alice"], on_unpriced="stop")
    model = condition.dump_component()
    assert model.provider == "autogen_reliability.CostTermination"
    assert model.config == {
        "max_cost_usd": "0.0000015",
        "project": "acme",
        "agents": ["bob", "alice"],
        "on_unpriced": "stop",
    }
    loaded = TerminationCondition.load_component(model.model_dump(mode="json"))
    assert isinstance(loaded, CostTermination)
    assert loaded.max_cost_usd == Decimal("0.0000015")
    assert loaded.dump_component() == model

    either = CostTermination("0.25") | MaxMessageTermination(4)
    assert TerminationCondition.load_component(either.dump_component()).dump_component() == either.dump_component()

    team = make_team(make_openai_client, ledger[1], CostTermination(limit_between(3)))
    config = team.dump_component()
    again = RoundRobinGroupChat.load_component(config)
    assert again.dump_component() == config
    async with usage_scope(session="loaded"):
        result = await again.run(task="one")  # its clients record to the process default ledger
    assert fake_openai_server.request_count == 3
    assert result.stop_reason == f"Cost limit reached: ${usd(3 * CALL)} of ${limit_between(3)}"


def test_it_is_exported_from_the_top_level_and_from_budget() -> None:
    assert autogen_reliability.CostTermination is BudgetCostTermination
    assert "CostTermination" in autogen_reliability.__all__


@pytest.mark.parametrize(
    ("given", "exact"),
    [
        (Decimal("0.01"), "0.01"),
        ("0.50", "0.5"),
        (" 2 ", "2"),
        (3, "3"),
        (0.1, "0.1"),
        ("1e-9", "0.000000001"),
        ("1.5000000000000", "1.5"),
        ("1e12", "1000000000000"),
    ],
)
def test_the_limit_is_exact(given: Any, exact: str) -> None:
    condition = CostTermination(given)
    assert condition.max_cost_usd == Decimal(exact)
    assert condition.dump_component().config["max_cost_usd"] == exact


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"max_cost_usd": 0}, "max_cost_usd must be above zero"),
        ({"max_cost_usd": "-0.01"}, "above zero"),
        ({"max_cost_usd": "ten dollars"}, "an amount in USD"),
        ({"max_cost_usd": "NaN"}, "finite"),
        ({"max_cost_usd": float("inf")}, "finite"),
        ({"max_cost_usd": Decimal("Infinity")}, "finite"),
        ({"max_cost_usd": True}, "got bool"),
        ({"max_cost_usd": None}, "got NoneType"),
        ({"max_cost_usd": "0.0000000001"}, "nano-USD"),
        ({"max_cost_usd": "1.0000000001"}, "nano-USD"),
        ({"max_cost_usd": "1e99"}, "at most 1,000,000,000,000 USD"),
        ({"max_cost_usd": 10**400}, "at most 1,000,000,000,000 USD"),
        ({"max_cost_usd": "1e-999999999"}, "nano-USD"),  # refused at once: the conversion would hang
        ({"max_cost_usd": 1, "agents": "bob"}, "collection of agent names"),
        ({"max_cost_usd": 1, "agents": {"bob": "0.5"}}, "collection of agent names, got dict"),  # not limits per agent
        ({"max_cost_usd": 1, "agents": []}, "at least one agent"),
        ({"max_cost_usd": 1, "agents": ["bob", " "]}, "agents: agent must not be empty"),
        ({"max_cost_usd": 1, "agents": [7]}, "agents: agent must be a string"),
        ({"max_cost_usd": 1, "project": ""}, "project must not be empty"),
        ({"max_cost_usd": 1, "session": 4}, "session must be a string"),
        ({"max_cost_usd": 1, "on_unpriced": "ignore"}, "on_unpriced must be 'warn' or 'stop'"),
    ],
)
def test_invalid_arguments_are_refused_at_construction(arguments: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        CostTermination(**arguments)


@pytest.mark.parametrize(("written", "limit"), [(5, "5"), (0.1, "0.1"), (2.5e-5, "0.000025"), ("0.50", "0.5")])
def test_a_config_written_by_hand_may_give_the_limit_as_a_json_number(written: object, limit: str) -> None:
    model = CostTermination(1).dump_component().model_dump()
    model["config"]["max_cost_usd"] = written
    loaded = TerminationCondition.load_component(json.loads(json.dumps(model)))
    assert isinstance(loaded, CostTermination)
    assert loaded.dump_component().config["max_cost_usd"] == limit  # dumped as the string of an exact decimal


def test_an_invalid_config_is_refused_when_loaded() -> None:
    model = CostTermination(1).dump_component().model_dump()
    model["config"]["max_cost_usd"] = "-5"
    with pytest.raises(ConfigurationError, match="max_cost_usd must be above zero"):
        TerminationCondition.load_component(model)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (
            {"max_cost_usd": True},
            r"^a CostTermination config is invalid: max_cost_usd\.str: Input should be",
        ),
        ({"max_cost_usd": 0}, "max_cost_usd must be above zero, got 0"),
        ({"max_cost_usd": "1e999999999"}, "max_cost_usd must be at most 1,000,000,000,000 USD"),
        ({}, r"^a CostTermination config is invalid: max_cost_usd: Field required$"),
        ({"max_cost_usd": "1", "limit": "2"}, r"^a CostTermination config is invalid: limit: unknown option$"),
        ({"max_cost_usd": "1", "agents": "bob"}, r"^a CostTermination config is invalid: agents: Input should be"),
    ],
)
def test_a_config_of_the_wrong_shape_is_a_configuration_error(config: dict[str, Any], reason: str) -> None:
    model = CostTermination(1).dump_component().model_dump()
    model["config"] = config
    with pytest.raises(ConfigurationError, match=reason) as refused:
        TerminationCondition.load_component(model)
    assert refused.value.__cause__ is None  # pydantic's error repeats the values it was given


def _event(session: str, nanousd: int | None) -> UsageEvent:
    return UsageEvent(
        call_id=uuid.uuid4(), attempt=1, started_at=datetime.now(UTC), latency_ms=1.0, session=session,
        model=MODEL, cost_nanousd=nanousd,
    )  # fmt: skip


async def test_events_published_from_many_threads_are_all_counted(ledger: Ledger) -> None:
    condition = CostTermination("1")
    with usage_scope(session="threads"):
        assert await condition([]) is None  # the run's first check: it now counts session "threads"
    recorder = ledger[1]

    def publish(count: int) -> None:
        for _ in range(count):
            _feed.publish(_event("threads", 7), recorder)
            _feed.publish(_event("elsewhere", 1_000), recorder)

    threads = [threading.Thread(target=publish, args=(2_000,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert condition.spent_usd == Decimal(8 * 2_000 * 7) / 1_000_000_000
    assert condition.unpriced_calls == 0


async def test_a_check_after_it_stopped_raises_until_reset(ledger: Ledger) -> None:
    condition = CostTermination("0.000001")
    with usage_scope(session="manual"):
        assert await condition([]) is None
        _feed.publish(_event("manual", 1_000), ledger[1])
        stop = await condition([])
        assert stop is not None
        assert stop.content == "Cost limit reached: $0.000001 of $0.000001"
        assert stop.source == "CostTermination"
        assert condition.terminated
        _feed.publish(_event("manual", 5_000), ledger[1])  # after it stopped: not counted
        assert condition.spent_usd == Decimal("0.000001")
        with pytest.raises(TerminatedException):
            await condition([])
        await condition.reset()
        assert not condition.terminated
        assert condition.spent_usd == 0
        assert await condition([]) is None


async def test_no_subscription_outlives_the_condition() -> None:
    def subscribed(tally: object) -> int:
        return sum(1 for listener in _feed.listeners.current if getattr(listener, "__self__", None) is tally)

    condition = CostTermination("0.000001")
    first = condition._tally
    assert subscribed(first) == 1
    await condition.reset()
    second = condition._tally
    assert (subscribed(first), subscribed(second)) == (0, 1)  # a reset replaces the subscription
    with usage_scope(session="manual"):
        await condition([])
    gone = weakref.ref(condition)
    del condition  # nothing holds the condition but this test: no cycle, so it goes at once
    assert gone() is None
    assert subscribed(second) == 0


async def test_what_waits_for_a_first_check_is_bounded_and_keeps_the_newest(ledger: Ledger) -> None:
    # Armed but not yet checked, a condition keeps sums per attribution: at most 1024, dropping the oldest.
    oldest, newest = CostTermination("1"), CostTermination("1")
    _feed.publish(_event("old", 5), ledger[1])
    for number in range(1024):
        _feed.publish(_event(f"other-{number}", 1), ledger[1])
    _feed.publish(_event("recent", 7), ledger[1])
    with usage_scope(session="old"):
        await oldest([])
    with usage_scope(session="recent"):
        await newest([])
    assert oldest.spent_usd == 0
    assert newest.spent_usd == Decimal("0.000000007")
