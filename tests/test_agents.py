"""AutoGen agents and teams give the same messages through the wrapper as without it.

Each scenario runs twice against the same scripted server replies: once with
AutoGen's OpenAIChatCompletionClient as it is, once wrapped by ``reliable()``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent, MessageFilterAgent, MessageFilterConfig, PerSourceFilter
from autogen_agentchat.base import ChatAgent, TaskResult, Team
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination, TokenUsageTermination
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage, ToolCallSummaryMessage
from autogen_agentchat.teams import (
    DiGraphBuilder,
    GraphFlow,
    MagenticOneGroupChat,
    RoundRobinGroupChat,
    SelectorGroupChat,
)
from autogen_agentchat.tools import AgentTool, TeamTool
from autogen_core.models import ChatCompletionClient, ModelInfo, RequestUsage
from pydantic import BaseModel

from autogen_reliability import AttemptEvent, ReliableChatCompletionClient, reliable
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

from .conftest import OpenAIClientFactory
from .storage_fixtures import ledger_rows, open_ledger

Scenario = Callable[[ChatCompletionClient], Awaitable[TaskResult]]


def summary(result: TaskResult) -> list[tuple[Any, ...]]:
    """What an agent user sees of a run: each message's type, source, content and usage."""
    rows: list[tuple[Any, ...]] = []
    for message in result.messages:
        content = message.dump().get("content")
        if isinstance(content, BaseModel):
            content = content.model_dump()
        elif isinstance(content, list):
            content = [repr(item) for item in content]
        rows.append((type(message).__name__, message.source, content, message.models_usage))
    return rows


async def run_both(
    fake_openai_server: FakeOpenAIServer,
    make: OpenAIClientFactory,
    replies: Sequence[FakeReply],
    scenario: Scenario,
    **client_options: Any,
) -> tuple[TaskResult, TaskResult, list[AttemptEvent]]:
    events: list[AttemptEvent] = []
    fake_openai_server.enqueue(*replies)
    plain = await scenario(make(**client_options))
    assert fake_openai_server.pending == 0
    first_requests = [request.body for request in fake_openai_server.requests]
    fake_openai_server.reset()
    fake_openai_server.enqueue(*replies)
    wrapped = await scenario(reliable(make(**client_options), on_attempt=events.append))
    assert fake_openai_server.pending == 0
    assert [request.body for request in fake_openai_server.requests] == first_requests
    return plain, wrapped, events


async def test_assistant_agent(fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory) -> None:
    async def scenario(client: ChatCompletionClient) -> TaskResult:
        agent = AssistantAgent("solo", model_client=client)
        return await agent.run(task="What is 2 + 2?")

    replies = [FakeReply.text("2 + 2 = 4.", usage=FakeUsage(prompt_tokens=25, completion_tokens=6))]
    plain, wrapped, events = await run_both(fake_openai_server, make_openai_client, replies, scenario)
    assert summary(wrapped) == summary(plain)
    assert wrapped.messages[-1].dump()["content"] == "2 + 2 = 4."
    assert [(event.attempt, event.outcome, event.call.attribution.agent) for event in events] == [(1, "ok", None)]


async def test_streaming_assistant_agent(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    async def scenario(client: ChatCompletionClient) -> TaskResult:
        agent = AssistantAgent("streamer", model_client=client, model_client_stream=True)
        return await agent.run(task="Tell me a short story.")

    replies = [FakeReply.text("Once upon a time, a retry saved the day.")]
    plain, wrapped, events = await run_both(
        fake_openai_server, make_openai_client, replies, scenario, stream_options={"include_usage": True}
    )
    assert summary(wrapped) == summary(plain)
    assert wrapped.messages[-1].dump()["content"] == "Once upon a time, a retry saved the day."
    assert events[0].call.streamed
    assert events[0].result is not None
    assert events[0].result.usage.completion_tokens > 0


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_tool_calling_agent(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    async def scenario(client: ChatCompletionClient) -> TaskResult:
        agent = AssistantAgent("calculator", model_client=client, tools=[add], reflect_on_tool_use=True)
        return await agent.run(task="What is 19 + 23?")

    replies = [FakeReply.tool_calls([("add", {"a": 19, "b": 23})]), FakeReply.text("19 + 23 = 42.")]
    plain, wrapped, events = await run_both(fake_openai_server, make_openai_client, replies, scenario)
    assert summary(wrapped) == summary(plain)
    kinds = [type(message).__name__ for message in wrapped.messages]
    assert kinds == ["TextMessage", "ToolCallRequestEvent", "ToolCallExecutionEvent", "TextMessage"]
    assert wrapped.messages[2].dump()["content"][0]["content"] == "42"
    assert [event.attempt for event in events] == [1, 1]  # two logical calls, one attempt each
    assert events[0].call.call_id != events[1].call.call_id


async def test_tool_calling_agent_without_reflection(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    async def scenario(client: ChatCompletionClient) -> TaskResult:
        agent = AssistantAgent("calculator", model_client=client, tools=[add])
        return await agent.run(task="What is 1 + 2?")

    replies = [FakeReply.tool_calls([("add", {"a": 1, "b": 2})])]
    plain, wrapped, _ = await run_both(fake_openai_server, make_openai_client, replies, scenario)
    assert summary(wrapped) == summary(plain)
    assert isinstance(wrapped.messages[-1], ToolCallSummaryMessage)
    assert wrapped.messages[-1].content == "3"


class Answer(BaseModel):
    city: str
    population: int


# AutoGen's OpenAI client dumps the SDK's parsed completion, which pydantic warns about (upstream, harmless).
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_structured_output_agent(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    async def scenario(client: ChatCompletionClient) -> TaskResult:
        agent = AssistantAgent("geo", model_client=client, output_content_type=Answer)
        return await agent.run(task="Largest city in France?")

    replies = [FakeReply.json({"city": "Paris", "population": 2102650})]
    plain, wrapped, _ = await run_both(fake_openai_server, make_openai_client, replies, scenario)
    assert summary(wrapped) == summary(plain)
    final = wrapped.messages[-1]
    assert isinstance(final, StructuredMessage)
    assert final.content == Answer(city="Paris", population=2102650)
    body = fake_openai_server.requests[0].body
    assert body is not None
    assert body["response_format"]["type"] == "json_schema"


async def test_round_robin_team(fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory) -> None:
    async def scenario(client: ChatCompletionClient) -> TaskResult:
        writer = AssistantAgent("writer", model_client=client, system_message="Write.")
        critic = AssistantAgent("critic", model_client=client, system_message="Critique.")
        team = RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(5))
        if isinstance(client, ReliableChatCompletionClient):
            reliable(team)
        return await team.run(task="A haiku about retries.")

    replies = [FakeReply.text(f"turn {n}") for n in range(1, 5)]
    plain, wrapped, events = await run_both(fake_openai_server, make_openai_client, replies, scenario)
    assert summary(wrapped) == summary(plain)
    assert [message.source for message in wrapped.messages] == ["user", "writer", "critic", "writer", "critic"]
    assert [event.call.attribution.agent for event in events] == ["writer", "critic", "writer", "critic"]


async def test_selector_team(fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory) -> None:
    async def scenario(client: ChatCompletionClient) -> TaskResult:
        planner = AssistantAgent("planner", model_client=client, description="Plans the work.")
        coder = AssistantAgent("coder", model_client=client, description="Writes the code.")
        team = SelectorGroupChat(
            [planner, coder],
            model_client=client,
            termination_condition=TextMentionTermination("DONE") | MaxMessageTermination(6),
        )
        if isinstance(client, ReliableChatCompletionClient):
            reliable(team)
        return await team.run(task="Write a function that adds two numbers.")

    replies = [
        FakeReply.text("planner"),  # speaker selection by the model
        FakeReply.text("Plan: write add(a, b)."),
        # no selection call now: repeated speakers are not allowed, so the coder is the only candidate
        FakeReply.text("def add(a, b): return a + b  # DONE"),
    ]
    plain, wrapped, events = await run_both(fake_openai_server, make_openai_client, replies, scenario)
    assert summary(wrapped) == summary(plain)
    assert [message.source for message in wrapped.messages if isinstance(message, BaseChatMessage)] == [
        "user",
        "planner",
        "coder",
    ]
    assert [event.call.attribution.agent for event in events] == ["SelectorGroupChat", "planner", "coder"]


def progress_ledger(done: bool, instruction: str) -> dict[str, Any]:
    """A MagenticOneGroupChat orchestrator's progress ledger, handing the turn to "coder"."""
    return {
        "is_request_satisfied": {"reason": "checked", "answer": done},
        "is_in_loop": {"reason": "checked", "answer": False},
        "is_progress_being_made": {"reason": "checked", "answer": True},
        "next_speaker": {"reason": "checked", "answer": "coder"},
        "instruction_or_question": {"reason": "checked", "answer": instruction},
    }


def magentic_model_info(structured: bool) -> ModelInfo:
    """A model with structured output, or one asked for the progress ledger in plain text."""
    return ModelInfo(
        vision=False, function_calling=True, json_output=structured, structured_output=structured, family="unknown"
    )


def magentic_replies(ledger_reply: FakeReply) -> list[FakeReply]:
    """A MagenticOneGroupChat's run: facts, plan, ``ledger_reply`` (the turn to "coder"), the coder's answer, a
    ledger that ends the task, the final answer."""
    return [
        FakeReply.text("Facts: none."),
        FakeReply.text("Plan: the coder does it."),
        ledger_reply,
        FakeReply.text("Done."),
        FakeReply.json(progress_ledger(True, "Nothing left.")),
        FakeReply.text("It is done."),
    ]


def magentic_team(client: ChatCompletionClient) -> MagenticOneGroupChat:
    """A MagenticOneGroupChat of a coder and a reviewer, every agent on ``client``."""
    coder = AssistantAgent("coder", model_client=client, description="Writes the page.")
    reviewer = AssistantAgent("reviewer", model_client=client, description="Reviews the page.")
    return MagenticOneGroupChat([coder, reviewer], model_client=client)


def magentic_replies_through_an_outage(ledger_text: str) -> list[FakeReply]:
    """A MagenticOneGroupChat's run whose progress ledger the primary fails (503) and a fallback answers in
    ``ledger_text`` (the turn to "coder"), then the coder's answer, a ledger that ends the task, the final answer."""
    return [
        FakeReply.text("Facts: none."),
        FakeReply.text("Plan: the coder writes it."),
        FakeReply.error(503),
        FakeReply.text(ledger_text),
        FakeReply.text("Written."),
        FakeReply.json(progress_ledger(True, "Nothing left.")),
        FakeReply.text("The page is written."),
    ]


# AutoGen's OpenAI client dumps the SDK's parsed completion, which pydantic warns about (upstream, harmless).
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize("structured", [True, False], ids=["structured-output", "text"])
async def test_magentic_one_team(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, structured: bool
) -> None:
    # A model without structured output (o1, Claude, most local models) is asked for the progress ledger in
    # plain text and answers with it in a fenced block. The sanitiser read that answer as text and rewrote the
    # markup in its strings, quoting attributes that ended them: the orchestrator could not parse the ledger,
    # asked again, and gave up ("Failed to parse ledger information"), where the bare client's team finished.
    instruction = 'Spell out <abbr title="HyperText Markup Language">HTML</abbr> in the page title.'
    if structured:
        ledger_reply = FakeReply.json(progress_ledger(False, instruction))
    else:
        ledger_reply = FakeReply.text(
            "Updated ledger:\n```json\n" + json.dumps(progress_ledger(False, instruction), indent=2) + "\n```"
        )
    model_info = magentic_model_info(structured)

    async def scenario(client: ChatCompletionClient) -> TaskResult:
        team = magentic_team(client)
        if isinstance(client, ReliableChatCompletionClient):
            reliable(team)
        return await team.run(task="Write the page.")

    plain, wrapped, events = await run_both(
        fake_openai_server, make_openai_client, magentic_replies(ledger_reply), scenario, model_info=model_info
    )
    assert summary(wrapped) == summary(plain)
    assert [message.source for message in wrapped.messages] == [
        "user",
        "MagenticOneOrchestrator",
        "MagenticOneOrchestrator",
        "coder",
        "MagenticOneOrchestrator",
    ]
    assert wrapped.messages[2].dump()["content"] == instruction
    team_name = "MagenticOneGroupChat"
    assert [event.call.attribution.agent for event in events] == [team_name] * 3 + ["coder"] + [team_name] * 2


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize("structured", [True, False], ids=["structured-output", "text"])
async def test_escapes_in_a_magentic_one_progress_ledger_are_sanitised(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, structured: bool
) -> None:
    # Asked in plain text, the ledger's escapes ("\u001b", "\u202e") were left in the answer, as text with nothing
    # to clean: the orchestrator parsed them into an OSC 52 clipboard write and a bidi override, and sent them to
    # the team and the console. Asked for JSON, the same ledger's instruction was already clean.
    instruction = "Run \u001b]52;c;ZXZpbA==\u0007 then \u202ereverse\u202c"
    ledger = json.dumps(progress_ledger(False, instruction))
    ledger_reply = FakeReply.text(ledger if structured else f"```json\n{ledger}\n```")
    model_info = magentic_model_info(structured)
    client = reliable(make_openai_client(model_info=model_info))
    coder = AssistantAgent("coder", model_client=client, description="Writes the page.")
    reviewer = AssistantAgent("reviewer", model_client=client, description="Reviews the page.")
    fake_openai_server.enqueue(*magentic_replies(ledger_reply))
    result = await MagenticOneGroupChat([coder, reviewer], model_client=client).run(task="Run it.")
    assert [message.source for message in result.messages][2:4] == ["MagenticOneOrchestrator", "coder"]
    assert result.messages[2].dump()["content"] == "Run  then reverse"


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_a_magentic_one_team_goes_on_on_a_fallback_without_structured_output(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, tmp_path: Path
) -> None:
    # The orchestrator asks for its progress ledger as json_output=LedgerEntry, since the wrapper's model_info (its
    # primary's) says structured output. When the primary failed, the fallback's client, a model without structured
    # output, was handed json_output=LedgerEntry too and raised "Model does not support structured output.": the
    # fallback meant to carry the team through an outage ended its run instead.
    fallback = make_openai_client(model="llama3.1:8b", model_info=magentic_model_info(structured=False))
    team = magentic_team(make_openai_client())
    with open_ledger(f"sqlite:///{tmp_path / 'usage.db'}", tmp_path / "spool") as ledger:
        reliable(team, recorder=ledger[1], retry=None, fallbacks=[fallback])
        fake_openai_server.enqueue(
            *magentic_replies_through_an_outage(
                "Here it is:\n```json\n" + json.dumps(progress_ledger(False, "Write it.")) + "\n```"
            )
        )
        result = await team.run(task="Write the page.")
        rows = ledger_rows(ledger)
    assert [message.source for message in result.messages][2:] == [
        "MagenticOneOrchestrator",
        "coder",
        "MagenticOneOrchestrator",
    ]
    assert result.messages[2].dump()["content"] == "Write it."
    asked = fake_openai_server.requests[3]
    assert asked.model == "llama3.1:8b"
    assert asked.body is not None
    assert "response_format" not in asked.body  # neither the schema nor JSON mode: the model says it has none
    assert [(row.model, row.outcome) for row in rows][2:4] == [("gpt-4o-mini", "error"), ("llama3.1:8b", "ok")]


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_a_magentic_one_team_goes_on_on_a_fallback_without_json_mode(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # On a primary with JSON mode but no structured output, the orchestrator asks for its progress ledger as
    # json_output=True. When the primary failed, a fallback without JSON mode was handed json_output=True too and
    # raised "Model does not support JSON output.": the team's run ended there, no request sent to the fallback.
    json_mode = ModelInfo(vision=False, function_calling=True, json_output=True, structured_output=False, family="x")
    local = magentic_model_info(structured=False)
    team = magentic_team(make_openai_client(model_info=json_mode))
    reliable(team, retry=None, fallbacks=[make_openai_client(model="llama3.1:8b", model_info=local)])
    fake_openai_server.enqueue(
        *magentic_replies_through_an_outage("```json\n" + json.dumps(progress_ledger(False, "Write it.")) + "\n```")
    )
    result = await team.run(task="Write the page.")
    assert [message.source for message in result.messages][2:] == [
        "MagenticOneOrchestrator",
        "coder",
        "MagenticOneOrchestrator",
    ]
    assert result.messages[2].dump()["content"] == "Write it."
    primary, fallback = fake_openai_server.requests[2:4]
    assert primary.body is not None
    assert fallback.body is not None
    assert primary.body["response_format"] == {"type": "json_object"}
    assert (fallback.model, "response_format" in fallback.body) == ("llama3.1:8b", False)


async def test_streaming_round_robin_team(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    async def scenario(client: ChatCompletionClient) -> TaskResult:
        agents = [AssistantAgent(name, model_client=client, model_client_stream=True) for name in ("a", "b")]
        team = RoundRobinGroupChat(list[ChatAgent | Team](agents), termination_condition=MaxMessageTermination(3))
        if isinstance(client, ReliableChatCompletionClient):
            reliable(team)
        return await team.run(task="Go.")

    replies = [FakeReply.text("one two"), FakeReply.text("three four")]
    plain, wrapped, events = await run_both(
        fake_openai_server, make_openai_client, replies, scenario, stream_options={"include_usage": True}
    )
    assert summary(wrapped) == summary(plain)
    assert [(event.call.attribution.agent, event.call.streamed) for event in events] == [("a", True), ("b", True)]


async def test_agents_and_teams_used_as_tools_are_wrapped_and_recorded(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, tmp_path: Path
) -> None:
    # AgentTool and TeamTool run an agent or a team inside a tool call: their model calls are provider
    # requests of the team's run too. reliable(team) left their clients bare: no row, no retry, no budget.
    helper = AssistantAgent("helper", model_client=make_openai_client(), description="Looks things up.")
    researcher = AssistantAgent("researcher", model_client=make_openai_client())
    research = RoundRobinGroupChat([researcher], termination_condition=MaxMessageTermination(2))
    tools = [AgentTool(helper), TeamTool(research, name="research", description="Researches a topic.")]
    boss = AssistantAgent("boss", model_client=make_openai_client(), tools=list[Any](tools))
    team = RoundRobinGroupChat([boss], max_turns=2)
    with open_ledger(f"sqlite:///{tmp_path / 'usage.db'}", tmp_path / "spool") as ledger:
        reliable(team, recorder=ledger[1])
        fake_openai_server.enqueue(
            FakeReply.tool_calls([("helper", {"task": "look it up"})], usage=FakeUsage(10, 1)),
            FakeReply.text("found it", usage=FakeUsage(20, 2)),
            FakeReply.tool_calls([("research", {"task": "dig deeper"})], usage=FakeUsage(30, 3)),
            FakeReply.text("dug deeper", usage=FakeUsage(40, 4)),
        )
        await team.run(task="Find out.")
        assert fake_openai_server.request_count == 4
        rows = ledger_rows(ledger)
    assert sorted((row.agent, row.prompt_tokens, row.completion_tokens) for row in rows) == [
        ("boss", 10, 1),
        ("boss", 30, 3),
        ("helper", 20, 2),
        ("researcher", 40, 4),
    ]


async def test_the_agent_a_message_filter_runs_is_wrapped_and_recorded(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, tmp_path: Path
) -> None:
    # GraphFlow's MessageFilterAgent keeps no model client: the agent it wraps does. reliable(flow) left that
    # agent's client bare (no row for its requests), and reliable(filtered) refused it as having no client.
    keep_the_task = MessageFilterConfig(per_source=[PerSourceFilter(source="user", position="first", count=1)])
    drafter = MessageFilterAgent(
        "drafter",
        wrapped_agent=AssistantAgent("drafter", model_client=make_openai_client()),
        filter=keep_the_task,
    )
    reviewer = AssistantAgent("reviewer", model_client=make_openai_client())
    graph = DiGraphBuilder().add_node(drafter).add_node(reviewer).add_edge(drafter, reviewer).build()
    flow = GraphFlow([drafter, reviewer], graph=graph)
    with open_ledger(f"sqlite:///{tmp_path / 'usage.db'}", tmp_path / "spool") as ledger:
        reliable(flow, recorder=ledger[1])
        fake_openai_server.enqueue(
            FakeReply.text("a draft", usage=FakeUsage(10, 1)), FakeReply.text("looks good", usage=FakeUsage(20, 2))
        )
        result = await flow.run(task="Draft it.")
        assert [message.source for message in result.messages] == ["user", "drafter", "reviewer"]
        rows = ledger_rows(ledger)
    assert [(row.agent, row.prompt_tokens, row.completion_tokens) for row in rows] == [
        ("drafter", 10, 1),
        ("reviewer", 20, 2),
    ]
    alone = MessageFilterAgent(
        "solo", wrapped_agent=AssistantAgent("solo", model_client=make_openai_client()), filter=keep_the_task
    )
    assert reliable(alone, project="acme") is alone  # not "has no model client to wrap"


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.autogen_reliability(allow_unused=True)  # the spare answer is the turn the token limit saves
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_a_reasked_answer_carries_the_usage_of_every_answer_of_its_call(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, tmp_path: Path, stream: bool
) -> None:
    # The message's models_usage, which AutoGen's TokenUsageTermination sums, was the re-ask's answer alone: the
    # refused answer's 110 tokens were billed and in the ledger, and the team ran a turn past its token limit.
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    geo = AssistantAgent(
        "geo", model_client=make_openai_client(**options), output_content_type=Answer, model_client_stream=stream
    )
    team = RoundRobinGroupChat(
        [geo],
        termination_condition=TokenUsageTermination(max_total_token=200) | MaxMessageTermination(4),
        custom_message_types=[StructuredMessage[Answer]],
    )
    with open_ledger(f"sqlite:///{tmp_path / 'usage.db'}", tmp_path / "spool") as ledger:
        reliable(team, recorder=ledger[1])
        fake_openai_server.enqueue(
            FakeReply.json({"city": "Paris"}, usage=FakeUsage(100, 10)),  # no population: re-asked
            FakeReply.json({"city": "Paris", "population": 2102650}, usage=FakeUsage(150, 12)),
            FakeReply.json({"city": "Lyon", "population": 522250}, usage=FakeUsage(160, 12)),
        )
        result = await team.run(task="Largest city in France?")
        rows = ledger_rows(ledger)
    assert [(row.outcome, row.prompt_tokens, row.completion_tokens) for row in rows] == [
        ("invalid", 100, 10),
        ("ok", 150, 12),
    ]
    answer = result.messages[-1]
    assert isinstance(answer, StructuredMessage)
    assert answer.content == Answer(city="Paris", population=2102650)
    assert answer.models_usage == RequestUsage(prompt_tokens=250, completion_tokens=22)
    assert str(result.stop_reason).startswith("Token usage limit reached, total token count: 272")
    assert fake_openai_server.request_count == 2
