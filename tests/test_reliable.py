"""reliable(): clients, agents, teams, factories; never a double wrap."""

from __future__ import annotations

import re
from typing import cast

import pytest
from autogen_agentchat.agents import AssistantAgent, SocietyOfMindAgent, UserProxyAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_agentchat.tools import AgentTool, TeamTool
from autogen_core.models import ChatCompletionClient, ModelInfo
from autogen_ext.models.replay import ReplayChatCompletionClient

from autogen_reliability import (
    AttemptEvent,
    BudgetPolicy,
    ConfigurationError,
    ReliableChatCompletionClient,
    ReliableOptions,
    configure,
    reliable,
)

from .conftest import OpenAIClientFactory


def client_of(agent: object) -> ChatCompletionClient:
    client = agent._model_client  # type: ignore[attr-defined]
    assert isinstance(client, ChatCompletionClient)
    return client


def wrapped(agent: object) -> ReliableChatCompletionClient:
    client = client_of(agent)
    assert isinstance(client, ReliableChatCompletionClient)
    assert not isinstance(client.inner, ReliableChatCompletionClient), "double-wrapped"
    return client


def test_wraps_a_client() -> None:
    inner = ReplayChatCompletionClient(["x"])
    client = reliable(inner, project="acme")
    assert isinstance(client, ReliableChatCompletionClient)
    assert client.inner is inner
    assert client.attribution.project == "acme"


def test_wrapping_twice_does_not_double_wrap() -> None:
    inner = ReplayChatCompletionClient(["x"])
    once = reliable(inner, project="acme")
    assert reliable(once) is once
    assert reliable(once, project="acme") is once
    changed = reliable(once, tags={"tier": "gold"})
    assert changed is not once
    assert changed.inner is inner
    assert changed.options == {"project": "acme", "tags": {"tier": "gold"}}


def test_options_are_kept_as_given_not_as_the_caller_changes_them_later() -> None:
    # One dict reused for every tenant's wrapper: wrapping an agent later re-wraps with the options kept, which
    # were the caller's dict itself, so acme's agent was tagged with the last tenant.
    tags: dict[str, str] = {}
    clients: dict[str, ReliableChatCompletionClient] = {}
    for tenant in ("acme", "globex"):
        tags["tenant"] = tenant
        clients[tenant] = reliable(ReplayChatCompletionClient(["x"]), tags=tags)
    writer = reliable(AssistantAgent("writer", model_client=clients["acme"]), project="p")
    assert dict(wrapped(writer).attribution.tags) == {"tenant": "acme"}
    assert clients["acme"].options["tags"] == {"tenant": "acme"}
    fallbacks: list[ChatCompletionClient] = [ReplayChatCompletionClient(["y"])]
    client = reliable(ReplayChatCompletionClient(["x"]), fallbacks=fallbacks)
    fallbacks.append(ReplayChatCompletionClient(["z"]))
    assert len(client.with_options(project="p").fallbacks) == 1
    given = client.options["fallbacks"]
    assert isinstance(given, list)
    given.clear()  # a copy: the wrapper's own stay
    assert len(client.with_options(project="p").fallbacks) == 1


def test_wraps_an_agent_with_its_name_bound() -> None:
    agent = AssistantAgent("writer", model_client=ReplayChatCompletionClient(["x"]))
    assert reliable(agent, project="acme") is agent
    client = wrapped(agent)
    assert (client.attribution.agent, client.attribution.project) == ("writer", "acme")
    reliable(agent, project="acme")
    assert client_of(agent) is client


def test_an_agent_keeps_its_own_name_over_a_wrapper_shared_with_others() -> None:
    shared = reliable(ReplayChatCompletionClient(["x"]), project="acme", agent="someone")
    alice = reliable(AssistantAgent("alice", model_client=shared))
    bob = reliable(AssistantAgent("bob", model_client=shared))
    assert wrapped(alice).attribution.agent == "alice"
    assert wrapped(bob).attribution.agent == "bob"
    assert wrapped(alice).inner is wrapped(bob).inner is shared.inner
    assert wrapped(alice).attribution.project == "acme"


async def test_an_agent_name_given_to_reliable_wins_over_the_agents_own() -> None:
    # reliable(agent, agent="support-bot") bound the agent's AutoGen name ("assistant") anyway, and dropped the
    # name asked for without a word: every row of that agent was filed under the other name.
    events: list[AttemptEvent] = []
    agent = AssistantAgent("assistant", model_client=ReplayChatCompletionClient(["hello"]))
    reliable(agent, agent="support-bot", on_attempt=events.append)
    await agent.run(task="Hi")
    assert [event.call.attribution.agent for event in events] == ["support-bot"]
    team = RoundRobinGroupChat([AssistantAgent(name, model_client=ReplayChatCompletionClient(["x"])) for name in "ab"])
    reliable(team, agent="triage")
    assert [wrapped(member).attribution.agent for member in team._participants] == ["triage", "triage"]

    @reliable(agent="writer")
    def build() -> AssistantAgent:
        return AssistantAgent("assistant", model_client=ReplayChatCompletionClient(["x"]))

    assert wrapped(build()).attribution.agent == "writer"
    # Without one, each agent is still bound under its own name, even over a client bound to another.
    shared = reliable(ReplayChatCompletionClient(["x"]), agent="someone")
    assert wrapped(reliable(AssistantAgent("alice", model_client=shared))).attribution.agent == "alice"


def test_wraps_every_participant_of_a_team_sharing_one_client() -> None:
    shared = ReplayChatCompletionClient(["x"])
    agents = [AssistantAgent(name, model_client=shared) for name in ("a", "b", "c")]
    team = RoundRobinGroupChat([*agents, UserProxyAgent("human")], termination_condition=MaxMessageTermination(2))
    assert reliable(team, project="acme") is team
    assert [wrapped(agent).attribution.agent for agent in agents] == ["a", "b", "c"]
    assert all(wrapped(agent).inner is shared for agent in agents)
    before = [client_of(agent) for agent in agents]
    reliable(team, project="acme")
    assert [client_of(agent) for agent in agents] == before


def test_wraps_the_selector_of_a_selector_group_chat() -> None:
    shared = ReplayChatCompletionClient(["x"])
    team = SelectorGroupChat(
        [AssistantAgent("a", model_client=shared), AssistantAgent("b", model_client=shared)],
        model_client=shared,
        name="triage",
    )
    reliable(team)
    assert wrapped(team).attribution.agent == "triage"


def test_wraps_swarm_and_nested_teams() -> None:
    info = ModelInfo(vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False)
    shared = ReplayChatCompletionClient(["x"], model_info=info)
    drafter, editor = (AssistantAgent(name, model_client=shared) for name in ("drafter", "editor"))
    inner_team = RoundRobinGroupChat([drafter, editor], termination_condition=MaxMessageTermination(3))
    society = SocietyOfMindAgent("society", team=inner_team, model_client=shared)
    swarm = Swarm([AssistantAgent("router", model_client=shared, handoffs=["society"]), society])
    reliable(swarm, project="acme")
    assert wrapped(society).attribution.agent == "society"
    assert [wrapped(agent).attribution.agent for agent in (drafter, editor)] == ["drafter", "editor"]


def test_agent_without_a_model_client_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="has no model client"):
        reliable(UserProxyAgent("human"))


def test_rejects_what_it_cannot_wrap() -> None:
    with pytest.raises(TypeError, match="takes a ChatCompletionClient"):
        reliable("gpt-4o")  # type: ignore[call-overload]


def test_unknown_or_bad_options_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) \['retries'\]"):
        reliable(ReplayChatCompletionClient(["x"]), retries=3)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="on_attempt takes callables"):
        reliable(ReplayChatCompletionClient(["x"]), on_attempt=[42])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match=r"on_attempt takes callables .*got int"):
        reliable(ReplayChatCompletionClient(["x"]), on_attempt=5)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match=r"on_retry takes callables .*got int"):
        reliable(ReplayChatCompletionClient(["x"]), on_retry=5)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="unknown option"):
        reliable(retries=3)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        # Empty values of the wrong type were taken for "none" (an empty string, a dict), while a
        # non-empty one of the same type was refused.
        ("fallbacks", "", "fallbacks must be a list of ChatCompletionClient, got str"),
        ("fallbacks", {}, "fallbacks must be a list of ChatCompletionClient, got dict"),
        ("on_attempt", "", "on_attempt takes callables (one or a list), got str"),
        ("on_retry", {}, "on_retry takes callables (one or a list), got dict"),
    ],
)
def test_an_empty_option_of_the_wrong_type_is_refused(
    make_openai_client: OpenAIClientFactory, option: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        reliable(make_openai_client(), **{option: value})  # type: ignore[call-overload]


def test_decorates_a_sync_factory() -> None:
    @reliable(project="acme")
    def make_team() -> RoundRobinGroupChat:
        return RoundRobinGroupChat([AssistantAgent("solo", model_client=ReplayChatCompletionClient(["x"]))])

    team = make_team()
    assert make_team.__name__ == "make_team"
    (solo,) = team._participants
    assert wrapped(solo).attribution.agent == "solo"
    assert wrapped(solo).attribution.project == "acme"


async def test_decorates_an_async_factory() -> None:
    @reliable(tags={"env": "test"})
    async def make_client(model: str) -> ChatCompletionClient:
        return ReplayChatCompletionClient([model])

    client = await make_client("gpt-4o")
    assert isinstance(client, ReliableChatCompletionClient)
    assert client.attribution.tags == {"env": "test"}
    assert isinstance(client.inner, ReplayChatCompletionClient)


@pytest.mark.parametrize("option", ["retry", "circuit", "sanitize", "budget"])
def test_rewrapping_with_none_switches_a_default_policy_off(option: str) -> None:
    # None is a value for these options ("off"), not "unchanged": a wrapper built without the option has
    # the default policy on, and reliable(wrapper, retry=None) must not hand that same wrapper back.
    inner = ReplayChatCompletionClient(["x"])
    if option == "budget":  # the process's default budget is the one a wrapper without budget= has
        configure(budget=BudgetPolicy(limit_usd=5))
        try:
            once = reliable(inner, project="acme")
        finally:
            configure(budget=None)
    else:
        once = reliable(inner, project="acme")
    assert getattr(once._settings, option) is not None
    switched_off = cast(ReliableOptions, {option: None})
    off = reliable(once, **switched_off)
    assert off is not once
    assert off.inner is inner
    assert getattr(off._settings, option) is None
    assert cast(dict[str, object], off.options)[option] is None
    agent = AssistantAgent("writer", model_client=once)
    reliable(agent, **switched_off)
    assert getattr(wrapped(agent)._settings, option) is None
    assert reliable(off, **switched_off) is off  # the same options again: the same wrapper


async def test_a_selector_team_that_has_run_is_refused_rather_than_half_wrapped() -> None:
    # The speaker selector is made on the first run with the client the team held then, and kept: wrapping
    # the team afterwards could only wrap its agents, and the selector's calls would go unrecorded.
    info = ModelInfo(vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False)
    agents = ReplayChatCompletionClient(["one", "two", "three", "four"], model_info=info)
    team = SelectorGroupChat(
        [AssistantAgent("a", model_client=agents), AssistantAgent("b", model_client=agents)],
        model_client=ReplayChatCompletionClient(["a", "b", "a", "b"], model_info=info),
        termination_condition=MaxMessageTermination(2),
        name="triage",
    )
    already = reliable(team, project="acme")  # before the first run: all of it
    await team.run(task="go")
    assert reliable(team, project="acme") is already  # the same options again change nothing: allowed
    before = [client_of(agent) for agent in team._participants]
    with pytest.raises(ConfigurationError, match=r"team 'triage' \(SelectorGroupChat\) has run already.*before"):
        reliable(team, project="other")
    assert [client_of(agent) for agent in team._participants] == before  # nothing was changed
    bare = SelectorGroupChat(
        [AssistantAgent("a", model_client=agents), AssistantAgent("b", model_client=agents)],
        model_client=ReplayChatCompletionClient(["a", "b"], model_info=info),
        termination_condition=MaxMessageTermination(2),
        name="late",
    )
    await bare.run(task="go")
    with pytest.raises(ConfigurationError, match="has run already"):
        reliable(RoundRobinGroupChat([AssistantAgent("c", model_client=agents), bare]))
    # A round-robin team keeps no client of its own: its agents are wrapped in place, whenever.
    plain = RoundRobinGroupChat(
        [AssistantAgent("d", model_client=agents)], termination_condition=MaxMessageTermination(2)
    )
    await plain.run(task="go")
    reliable(plain)
    assert wrapped(plain._participants[0]).attribution.agent == "d"


def test_a_team_whose_client_is_a_fallback_is_refused_before_any_agent_is_wrapped(
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The fallback check is made per agent, against its own client: the second agent's client is the fallback.
    # Found only there, after the first agent had been wrapped, it left the team half wrapped.
    first, second = make_openai_client(), make_openai_client(model="gpt-4.1")
    writer, critic = AssistantAgent("writer", model_client=first), AssistantAgent("critic", model_client=second)
    inner = SocietyOfMindAgent("panel", team=RoundRobinGroupChat([critic]), model_client=make_openai_client())
    team = RoundRobinGroupChat([writer, inner])
    with pytest.raises(ConfigurationError, match=r"fallbacks\[0\] is the primary client"):
        reliable(team, fallbacks=[second])
    assert client_of(writer) is first  # nothing was changed
    assert client_of(critic) is second
    assert not isinstance(client_of(inner), ReliableChatCompletionClient)
    with pytest.raises(ConfigurationError, match=r"fallbacks\[0\] is the primary client"):
        reliable(inner, fallbacks=[second])  # an agent: its own client and its inner team's
    assert not isinstance(client_of(inner), ReliableChatCompletionClient)
    assert client_of(critic) is second
    reliable(team, fallbacks=[make_openai_client(model="gpt-4.1-mini")])  # another client: every agent
    assert wrapped(writer).inner is first
    assert wrapped(critic).inner is second


def test_wraps_the_agents_and_teams_an_agents_tools_run() -> None:
    info = ModelInfo(vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False)
    shared = ReplayChatCompletionClient(["x"], model_info=info)
    helper = AssistantAgent("helper", model_client=shared)
    analyst = AssistantAgent("analyst", model_client=shared)
    boss = AssistantAgent(
        "boss",
        model_client=shared,
        tools=[AgentTool(helper), TeamTool(RoundRobinGroupChat([analyst]), name="desk", description="A desk.")],
    )
    # The helper is also a participant: wrapped once, under its own name.
    team = RoundRobinGroupChat([boss, helper])
    reliable(team, project="acme")
    assert [wrapped(agent).attribution.agent for agent in (boss, helper, analyst)] == ["boss", "helper", "analyst"]
    assert wrapped(analyst).attribution.project == "acme"
