"""Attribution: usage_scope in every form, concurrency, and agents sharing one inner client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator
from decimal import Decimal
from pathlib import Path

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core.models import UserMessage
from autogen_ext.models.cache import ChatCompletionCache
from autogen_ext.models.replay import ReplayChatCompletionClient

from autogen_reliability import (
    AttemptEvent,
    Attribution,
    BudgetExceededError,
    BudgetPolicy,
    ConfigurationError,
    ReliableChatCompletionClient,
    current_attribution,
    reliable,
    usage_scope,
)
from autogen_reliability._context import resolve_attribution
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

from .conftest import OpenAIClientFactory
from .memory_cache import MemoryStore

HI = [UserMessage(content="hi", source="user")]


def test_a_call_outside_any_scope_takes_the_wrappers_attribution_as_it_is() -> None:
    # Resolved for every call: outside a scope the wrapper's own attribution, checked once when it was made.
    bound = Attribution(project="p", agent="a", tags={"t": "1"})
    assert resolve_attribution(bound) is bound
    with usage_scope(session="s", tags={"u": "2"}):
        assert resolve_attribution(bound) == Attribution(project="p", session="s", agent="a", tags={"t": "1", "u": "2"})
    assert resolve_attribution(bound) is bound


def test_scope_as_context_manager_nests_and_restores() -> None:
    assert current_attribution() == Attribution()
    with usage_scope(project="acme", tags={"tier": "gold"}) as outer:
        assert outer == Attribution(project="acme", tags={"tier": "gold"})
        with usage_scope(session="s1", tags={"region": "eu"}):
            assert current_attribution() == Attribution(
                project="acme", session="s1", tags={"tier": "gold", "region": "eu"}
            )
            with usage_scope(project="other", tags={"tier": "free"}):
                assert current_attribution() == Attribution(
                    project="other", session="s1", tags={"tier": "free", "region": "eu"}
                )
        assert current_attribution() == outer
    assert current_attribution() == Attribution()


def test_scope_is_restored_when_the_body_raises() -> None:
    with pytest.raises(KeyError), usage_scope(session="doomed"):
        raise KeyError("boom")
    assert current_attribution().session is None


async def test_scope_as_async_context_manager() -> None:
    async with usage_scope(session="async") as attribution:
        assert attribution.session == "async"
        assert current_attribution().session == "async"
    assert current_attribution().session is None


def test_scope_as_decorator_of_a_sync_function() -> None:
    @usage_scope(project="reports")
    def who() -> Attribution:
        return current_attribution()

    assert who() == Attribution(project="reports")
    assert who.__name__ == "who"
    assert current_attribution() == Attribution()


async def test_scope_as_decorator_of_concurrent_coroutines() -> None:
    @usage_scope(project="jobs")
    async def job(session: str) -> Attribution:
        with usage_scope(session=session):
            await asyncio.sleep(0)  # every job enters its scope before any reads its attribution
            return current_attribution()

    results = await asyncio.gather(*(job(f"s{n}") for n in range(5)))
    assert [result.session for result in results] == [f"s{n}" for n in range(5)]
    assert {result.project for result in results} == {"jobs"}
    assert current_attribution() == Attribution()


async def test_scope_as_decorator_of_an_async_generator_function(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A streaming handler: the rows of the stream it relays carry the session, and the consumer's own code
    # between two items runs outside the scope (it was entered at the call and left at once before).
    events: list[AttemptEvent] = []
    fake_openai_server.enqueue(FakeReply.text("one two three"))
    client = reliable(make_openai_client(), on_attempt=events.append)

    @usage_scope(session="streamed")
    async def relay() -> AsyncGenerator[str, None]:
        async for item in client.create_stream(HI):
            if isinstance(item, str):
                yield item

    between: list[Attribution] = []
    async for _ in relay():
        between.append(current_attribution())
    assert [event.call.attribution.session for event in events] == ["streamed"]
    assert between == [Attribution()] * 3
    assert relay.__name__ == "relay"


def test_scope_as_decorator_of_a_generator_function() -> None:
    @usage_scope(session="batch")
    def sessions() -> Generator[str | None, str, None]:
        received = yield current_attribution().session
        yield f"{received}:{current_attribution().session}"

    gen = sessions()
    assert next(gen) == "batch"
    assert current_attribution() == Attribution()
    assert gen.send("sent") == "sent:batch"
    with pytest.raises(KeyError):
        gen.throw(KeyError("passed in"))  # thrown into the body, which lets it out
    assert current_attribution() == Attribution()


async def test_scope_as_decorator_of_a_callable_that_returns_a_coroutine_or_a_generator(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Not an `async def` function, yet called as one: an object whose __call__ is async, a lambda, what a sync
    # decorator returns. The scope covered only the call that made the coroutine; the calls it made when awaited
    # were recorded with no session.
    events: list[AttemptEvent] = []
    fake_openai_server.default = FakeReply.text("ok")
    client = reliable(make_openai_client(), on_attempt=events.append)

    class Handler:
        async def __call__(self, text: str) -> str | None:
            await client.create([UserMessage(content=text, source="user")])
            return current_attribution().session

    assert await usage_scope(session="object")(Handler())("hi") == "object"
    await usage_scope(session="lambda")(lambda: client.create(HI))()

    def stream() -> AsyncGenerator[str | None, None]:
        async def relay() -> AsyncGenerator[str | None, None]:
            async for item in client.create_stream(HI):
                if isinstance(item, str):
                    yield current_attribution().session

        return relay()

    def numbers() -> Generator[str | None, None, None]:
        return (current_attribution().session for _ in range(2))

    assert [session async for session in usage_scope(session="stream")(stream)()] == ["stream"]
    assert list(usage_scope(session="lazy")(numbers)()) == ["lazy", "lazy"]
    assert [event.call.attribution.session for event in events] == ["object", "lambda", "stream"]
    assert current_attribution() == Attribution()


SHARED = usage_scope(session="shared", tags={"kind": "batch"})


@pytest.mark.parametrize("form", ["async with", "with"])
async def test_one_scope_object_entered_by_two_tasks_exits_out_of_order(
    form: str, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Task A enters, task B enters, A exits, B exits: not LIFO, yet each entry is its own.
    events: list[AttemptEvent] = []
    fake_openai_server.enqueue(FakeReply.text("a"), FakeReply.text("b"))
    client = reliable(make_openai_client(), on_attempt=events.append)
    a_entered, b_entered, a_exited = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def inside(name: str) -> Attribution:
        await client.create([UserMessage(content=name, source="user")])
        return current_attribution()

    async def task(name: str, wait_for: asyncio.Event | None, signal: asyncio.Event) -> tuple[Attribution, ...]:
        with usage_scope(project=name):
            before = current_attribution()
            if wait_for is not None:
                await wait_for.wait()
            if form == "async with":
                async with SHARED:
                    signal.set()
                    first = await inside(name)
                    await (b_entered if name == "a" else a_exited).wait()
                    second = current_attribution()
            else:
                with SHARED:
                    signal.set()
                    first = await inside(name)
                    await (b_entered if name == "a" else a_exited).wait()
                    second = current_attribution()
            if name == "a":
                a_exited.set()
            after = current_attribution()
        return before, first, second, after

    (a_before, *a_inside, a_after), (b_before, *b_inside, b_after) = await asyncio.gather(
        task("a", None, a_entered), task("b", a_entered, b_entered)
    )
    for name, before, seen, after in (("a", a_before, a_inside, a_after), ("b", b_before, b_inside, b_after)):
        assert before == after == Attribution(project=name)
        assert seen == [Attribution(project=name, session="shared", tags={"kind": "batch"})] * 2
    assert {(event.call.attribution.project, event.call.attribution.session) for event in events} == {
        ("a", "shared"),
        ("b", "shared"),
    }
    assert current_attribution() == Attribution()


def test_out_of_order_exits_in_one_context_keep_the_inner_scope() -> None:
    outer, inner = usage_scope(project="p", tags={"a": "1"}), usage_scope(session="s", tags={"b": "2"})
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the inner scope stays, now over nothing
    assert current_attribution() == Attribution(session="s", tags={"b": "2"})
    inner.__exit__(None, None, None)
    assert current_attribution() == Attribution()


def test_a_scope_reentered_in_one_context_unwinds_one_entry_per_exit() -> None:
    scope = usage_scope(tags={"x": "1"})
    with scope, usage_scope(session="between"), scope:
        assert current_attribution() == Attribution(session="between", tags={"x": "1"})
    assert current_attribution() == Attribution()


async def test_a_scope_held_across_yields_of_a_generator_driven_from_other_tasks() -> None:
    # Each anext runs in a task of its own, and the close happens in yet another: the scope's exit
    # runs in a context that never entered it, which must neither raise nor disturb the consumer.
    async def numbers() -> AsyncGenerator[str | None, None]:
        async with usage_scope(session="gen"):
            for _ in range(3):
                yield current_attribution().session

    async def step(gen: AsyncGenerator[str | None, None]) -> str | None:
        return await anext(gen)

    with usage_scope(project="consumer"):
        gen = numbers()
        seen = [await asyncio.create_task(step(gen)), await asyncio.create_task(step(gen))]
        await asyncio.create_task(gen.aclose())
        assert current_attribution() == Attribution(project="consumer")
        gen = numbers()
        seen.append(await asyncio.create_task(step(gen)))
        seen.extend([await asyncio.create_task(step(gen)), await asyncio.create_task(step(gen))])
        with pytest.raises(StopAsyncIteration):
            await asyncio.create_task(step(gen))
        assert current_attribution() == Attribution(project="consumer")
    # Only the first step of each generator ran in the context that entered the scope.
    assert seen == ["gen", None, "gen", None, None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"project": ""}, "project must not be empty"),
        ({"session": "   "}, "session must not be empty"),
        ({"agent": "x" * 201}, "limit is 200"),
        ({"project": 42}, "project must be a string"),
        ({"tags": {"n": 1}}, "tags must map str to str"),
        ({"tags": ["a"]}, "tags must be a mapping"),
        # Empty, but not a mapping: refused as a full one is, not taken for "no tags".
        ({"tags": ""}, "tags must be a mapping of str to str, got str"),
        ({"tags": []}, "tags must be a mapping of str to str, got list"),
    ],
)
def test_bad_labels_fail_at_once(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        usage_scope(**kwargs)  # type: ignore[arg-type]
    if "session" in kwargs:  # a session belongs to a request, not to a client
        message = "unknown option"
    with pytest.raises(ConfigurationError, match=message):
        ReliableChatCompletionClient(ReplayChatCompletionClient(["unused"]), **kwargs)  # type: ignore[arg-type]


async def test_wrapper_defaults_and_scope_combine(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    fake_openai_server.enqueue(FakeReply.text("a"), FakeReply.text("b"))
    client = reliable(
        make_openai_client(), project="acme", agent="writer", tags={"tier": "gold"}, on_attempt=events.append
    )
    await client.create(HI)
    with usage_scope(session="t-1", project="override", tags={"region": "eu"}):
        await client.create(HI)
    assert [event.call.attribution for event in events] == [
        Attribution(project="acme", agent="writer", tags={"tier": "gold"}),
        Attribution(project="override", session="t-1", agent="writer", tags={"tier": "gold", "region": "eu"}),
    ]


async def test_concurrent_tasks_keep_their_sessions(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    fake_openai_server.enqueue(*[FakeReply.text(f"reply {n}", delay=0.02 * (n % 3)) for n in range(12)])
    client = reliable(make_openai_client(), project="acme", on_attempt=events.append)

    async def handle(session: str) -> str | None:
        async with usage_scope(session=session):
            await asyncio.sleep(0)
            await client.create([UserMessage(content=f"ticket {session}", source="user")])
            return current_attribution().session

    sessions = [f"ticket-{n}" for n in range(12)]
    assert await asyncio.gather(*(handle(session) for session in sessions)) == sessions
    # Each request carried its own session's text; each event must name that same session.
    assert len(events) == 12
    for event in events:
        message = event.request.messages[0]
        assert isinstance(message, UserMessage)
        assert message.content == f"ticket {event.call.attribution.session}"
        assert event.call.attribution.project == "acme"


async def test_team_of_agents_sharing_one_client_is_told_apart(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    shared = make_openai_client()
    alice = AssistantAgent("alice", model_client=shared)
    bob = AssistantAgent("bob", model_client=shared)
    team = reliable(
        RoundRobinGroupChat([alice, bob], termination_condition=MaxMessageTermination(4)),
        project="acme",
        on_attempt=events.append,
    )
    fake_openai_server.enqueue(FakeReply.text("alice here"), FakeReply.text("bob here"), FakeReply.text("alice again"))
    with usage_scope(session="standup"):
        result = await team.run(task="Report.")
    assert [message.source for message in result.messages] == ["user", "alice", "bob", "alice"]
    assert [(e.call.attribution.agent, e.call.attribution.session, e.call.attribution.project) for e in events] == [
        ("alice", "standup", "acme"),
        ("bob", "standup", "acme"),
        ("alice", "standup", "acme"),
    ]


async def test_agent_name_falls_back_to_autogens_runtime_context(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # Only the shared client is wrapped (not the team): the wrapper reads the
    # calling agent from AutoGen's MessageHandlerContext inside the team.
    events: list[AttemptEvent] = []
    shared = reliable(make_openai_client(), on_attempt=events.append)
    team = RoundRobinGroupChat(
        [AssistantAgent("alice", model_client=shared), AssistantAgent("bob", model_client=shared)],
        termination_condition=MaxMessageTermination(3),
    )
    fake_openai_server.enqueue(FakeReply.text("one"), FakeReply.text("two"))
    await team.run(task="Go.")
    assert [event.call.attribution.agent for event in events] == ["alice", "bob"]
    # Outside any runtime handler there is nothing to read.
    fake_openai_server.enqueue(FakeReply.text("three"))
    await shared.create(HI)
    assert events[-1].call.attribution.agent is None


async def test_an_agent_name_longer_than_a_label_read_from_the_runtime_is_cut_not_a_failed_call(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # AutoGen takes any identifier as a name; the label limit (200 characters) is ours. A name read from the
    # runtime is no option of the user's to refuse: the call must go through, its row naming the agent cut short.
    events: list[AttemptEvent] = []
    shared = reliable(make_openai_client(), on_attempt=events.append)
    name = "triage_" + "x" * 243
    team = RoundRobinGroupChat(
        [AssistantAgent(name, model_client=shared)], termination_condition=MaxMessageTermination(2)
    )
    fake_openai_server.enqueue(FakeReply.text("one"))
    result = await team.run(task="Go.")
    assert [message.source for message in result.messages] == ["user", name]
    [event] = events
    assert event.call.attribution.agent == name[:199] + "…"


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
async def test_an_agent_wrapped_over_a_wrapped_client_under_autogens_cache_attributes_its_rows(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory, streaming: bool
) -> None:
    # The wrapped client under the cache makes the provider requests, and records them: the agent's name and
    # the project bound by reliable(agent, ...) on the wrapper outside the cache must reach its rows.
    events: list[AttemptEvent] = []
    inner = reliable(make_openai_client(), tags={"tier": "gold"}, on_attempt=events.append)
    agent = AssistantAgent(
        "writer", model_client=ChatCompletionCache(inner, MemoryStore()), model_client_stream=streaming
    )
    reliable(agent, project="acme")
    fake_openai_server.enqueue(FakeReply.text("drafted"))
    async with usage_scope(session="t-7"):
        result = await agent.run(task="Draft.")
    assert result.messages[-1].to_text() == "drafted"
    assert [event.call.attribution for event in events] == [
        Attribution(project="acme", session="t-7", agent="writer", tags={"tier": "gold"})
    ]
    assert current_attribution() == Attribution()


async def test_a_wrapped_fallback_attributes_its_rows_to_the_call_it_serves(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    events: list[AttemptEvent] = []
    backup = reliable(make_openai_client(model="gpt-4.1"), retry=None, on_attempt=events.append)
    client = reliable(make_openai_client(), project="acme", agent="writer", retry=None, fallbacks=[backup])
    fake_openai_server.enqueue(FakeReply.error(503), FakeReply.text("from the backup"))
    with usage_scope(session="t-8"):
        answer = await client.create(HI)
    assert answer.content == "from the backup"
    assert [event.call.attribution for event in events] == [Attribution(project="acme", session="t-8", agent="writer")]


@pytest.mark.autogen_reliability(allow_unused=True)  # the replies of the calls the budgets refused
@pytest.mark.parametrize("label", ["ticket\ud83d", "ticket\x00"], ids=["lone-surrogate", "nul"])
async def test_a_label_the_ledger_cannot_hold_is_the_text_it_stores_everywhere(
    label: str,
    store_url: str,
    tmp_path: Path,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The ledger holds U+FFFD for a NUL or a lone surrogate (half an emoji, cut): a scope's label is that text,
    # so that a budget reading the session's spend reads the rows its calls wrote, on SQLite and PostgreSQL.
    stored = "ticket\ufffd"
    with usage_scope(session=label, agent=label, tags={label: label}):
        assert current_attribution() == Attribution(session=stored, agent=stored, tags={stored: stored})
    with UsageStore(store_url) as store:
        recorder = UsageRecorder(store, spool_dir=tmp_path / "spool")
        spender = reliable(make_openai_client(), project="acme", budget=budget(), recorder=recorder)
        sent = 0
        with pytest.raises(BudgetExceededError), usage_scope(session=label, tags={"ticket": label}):  # noqa: PT012
            for _ in range(10):
                fake_openai_server.enqueue(FakeReply.text("a reply of some length " * 4))
                await spender.create(HI)
                sent += 1
        recorder.flush()
        rows = store.events(project="acme")
        assert [(row.session, row.tags["ticket"]) for row in rows] == [(stored, stored)] * sent
        # Another budget (as another process's): its first check reads what the session spent from the ledger.
        other = reliable(make_openai_client(), project="acme", budget=budget("0.000019"), recorder=recorder)
        fake_openai_server.enqueue(FakeReply.text("never sent"))
        with pytest.raises(BudgetExceededError) as refused, usage_scope(session=label):
            await other.create(HI)
        await spender.close()
        await other.close()
        recorder.close()
    assert len(fake_openai_server.requests) == sent  # no request for a call refused
    assert not [record.getMessage() for record in caplog.records if "cannot read" in record.getMessage()]
    assert refused.value.spent_usd == Decimal(sum(row.cost_nanousd or 0 for row in rows)) / 10**9  # the ledger's
    assert refused.value.key == stored


def budget(limit: str = "0.00002") -> BudgetPolicy:
    return BudgetPolicy(limit_usd=limit, period=None, scope="session")
