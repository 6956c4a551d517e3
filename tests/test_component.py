"""dump_component() / load_component() round trips, alone and nested in an agent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core import ComponentModel
from autogen_core.models import ChatCompletionClient, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

from autogen_reliability import (
    CircuitBreakerPolicy,
    ConfigurationError,
    ErrorKind,
    ReliableChatCompletionClient,
    RetryBudget,
    RetryPolicy,
    SanitizePolicy,
    ValidationPolicy,
    reliable,
)
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

from .conftest import OpenAIClientFactory


def test_dump_nests_the_inner_client(make_openai_client: OpenAIClientFactory) -> None:
    client = ReliableChatCompletionClient(
        make_openai_client(), project="acme", agent="writer", tags={"tier": "gold"}, on_attempt=print
    )
    dumped = client.dump_component()
    assert dumped.provider == "autogen_reliability.ReliableChatCompletionClient"
    assert dumped.component_type == "model"
    assert dumped.config["project"] == "acme"
    assert dumped.config["agent"] == "writer"
    assert dumped.config["tags"] == {"tier": "gold"}
    assert "on_attempt" not in dumped.config  # hooks are code, not configuration
    inner = dumped.config["client"]
    assert inner["provider"] == "autogen_ext.models.openai.OpenAIChatCompletionClient"
    assert inner["config"]["max_retries"] == 0


async def test_round_trip_alone(fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory) -> None:
    original = ReliableChatCompletionClient(make_openai_client(), project="acme", tags={"tier": "gold"})
    loaded = ChatCompletionClient.load_component(original.dump_component())
    assert isinstance(loaded, ReliableChatCompletionClient)
    assert isinstance(loaded.inner, OpenAIChatCompletionClient)
    assert loaded.options == {
        "project": "acme",
        "tags": {"tier": "gold"},
        "retry": RetryPolicy(),
        "circuit": CircuitBreakerPolicy(),
        "sanitize": SanitizePolicy(),
    }
    assert loaded.dump_component() == original.dump_component()
    fake_openai_server.enqueue(FakeReply.text("loaded and working"))
    result = await loaded.create([UserMessage(content="hi", source="user")])
    assert result.content == "loaded and working"
    await loaded.close()


def test_round_trip_through_json_text(make_openai_client: OpenAIClientFactory) -> None:
    text = ReliableChatCompletionClient(make_openai_client(), agent="critic").dump_component().model_dump_json()
    loaded = ReliableChatCompletionClient.load_component(ComponentModel.model_validate(json.loads(text)))
    assert loaded.attribution.agent == "critic"
    assert isinstance(loaded.inner, OpenAIChatCompletionClient)
    # AutoGen writes the key as a masked SecretStr: our layer adds no secret of its own to the config.
    assert "sk-test" not in text


async def test_round_trip_nested_in_an_agent(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    agent = reliable(AssistantAgent("writer", model_client=make_openai_client()), project="acme")
    dumped = agent.dump_component()
    model_client = dumped.config["model_client"]
    assert model_client["provider"] == "autogen_reliability.ReliableChatCompletionClient"
    assert model_client["config"]["agent"] == "writer"
    assert model_client["config"]["client"]["provider"] == "autogen_ext.models.openai.OpenAIChatCompletionClient"

    loaded = AssistantAgent.load_component(dumped)
    assert loaded.dump_component() == dumped
    fake_openai_server.enqueue(FakeReply.text("hello from the loaded agent"))
    result = await loaded.run(task="hi")
    assert result.messages[-1].dump()["content"] == "hello from the loaded agent"
    await loaded.close()


def test_policies_and_fallbacks_round_trip(make_openai_client: OpenAIClientFactory) -> None:
    retry = RetryPolicy(
        max_attempts=5,
        initial_delay=0.25,
        deadline=30,
        retry_on=frozenset({ErrorKind.RATE_LIMIT, ErrorKind.OVERLOADED}),
        budget=RetryBudget(ratio=0.2, capacity=4),
    )
    circuit = CircuitBreakerPolicy(window=8, minimum_calls=4, open_for=12.5)
    fallback = make_openai_client(model="gpt-4.1")
    client = ReliableChatCompletionClient(make_openai_client(), retry=retry, circuit=circuit, fallbacks=[fallback])
    dumped = client.dump_component()
    assert dumped.config["retry"]["retry_on"] == ["overloaded", "rate_limit"]
    assert dumped.config["fallbacks"][0]["config"]["model"] == "gpt-4.1"
    loaded = ChatCompletionClient.load_component(ComponentModel.model_validate(json.loads(dumped.model_dump_json())))
    assert isinstance(loaded, ReliableChatCompletionClient)
    assert loaded.options["retry"] == retry
    assert loaded.options["circuit"] == circuit
    (loaded_fallback,) = loaded.options["fallbacks"]
    assert isinstance(loaded_fallback, OpenAIChatCompletionClient)
    # JSON text: the API key is written masked either way.
    assert loaded.dump_component().model_dump_json() == dumped.model_dump_json()


def test_switched_off_policies_stay_off_after_a_round_trip(make_openai_client: OpenAIClientFactory) -> None:
    client = ReliableChatCompletionClient(make_openai_client(), retry=None, circuit=None)
    dumped = client.dump_component()
    assert (dumped.config["retry"], dumped.config["circuit"]) == ("off", "off")
    loaded = ReliableChatCompletionClient.load_component(dumped)
    assert loaded.options["retry"] is None
    assert loaded.options["circuit"] is None


def test_a_json_schema_changed_after_the_policy_was_made_changes_neither_it_nor_its_dump(
    make_openai_client: OpenAIClientFactory,
) -> None:
    # The policy held the caller's dict: it validated with the schema compiled when made, and dumped the dict as
    # changed since, so the loaded wrapper refused answers the running one took.
    schema: dict[str, Any] = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    policy = ValidationPolicy(schema=schema)
    client = ReliableChatCompletionClient(make_openai_client(), validation=policy)
    schema["required"].append("name")
    assert policy.schema == {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    loaded = ChatCompletionClient.load_component(client.dump_component())
    assert isinstance(loaded, ReliableChatCompletionClient)
    loaded_policy = loaded.options["validation"]
    assert loaded_policy is not None
    assert loaded_policy == policy
    assert loaded_policy.compiled_schema is not None
    assert loaded_policy.compiled_schema.validate({"id": 1}) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"project": 5},
            r"^a ReliableChatCompletionClient config is invalid: project: Input should be a valid string$",
        ),
        (
            {"retry": "none"},
            r"^a ReliableChatCompletionClient config is invalid: retry\.dict\[str,any\]: Input should be",
        ),
        ({"client": None}, r"^a ReliableChatCompletionClient config is invalid: client: Input should be"),
        # A misspelt option would otherwise load a wrapper without it (here: with retries).
        ({"retyr": "off"}, r"^a ReliableChatCompletionClient config is invalid: retyr: unknown option$"),
    ],
)
def test_a_wrapper_config_of_the_wrong_shape_is_a_configuration_error(
    make_openai_client: OpenAIClientFactory, change: dict[str, Any], reason: str
) -> None:
    model = ReliableChatCompletionClient(make_openai_client(), project="p").dump_component().model_dump()
    model["config"].update(change)
    with pytest.raises(ConfigurationError, match=reason) as refused:
        ChatCompletionClient.load_component(model)
    assert refused.value.__cause__ is None  # pydantic's error repeats the values it was given


async def test_close_closes_the_fallbacks_too(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A loaded wrapper made its fallbacks itself: close() is the only close they get.
    original = ReliableChatCompletionClient(make_openai_client(), fallbacks=[make_openai_client(model="gpt-4.1")])
    loaded = ChatCompletionClient.load_component(original.dump_component())
    assert isinstance(loaded, ReliableChatCompletionClient)
    (fallback,) = loaded.fallbacks
    fake_openai_server.enqueue(FakeReply.text("fallback open"))
    assert (await fallback.create([UserMessage(content="hi", source="user")])).content == "fallback open"
    await loaded.close()
    for client in (loaded.inner, fallback):
        with pytest.raises(RuntimeError, match="closed"):  # the SDK refuses a closed HTTP client
            await client.create([UserMessage(content="hi", source="user")])
    assert fake_openai_server.request_count == 1
    await loaded.close()  # a second close is harmless, as AutoGen's


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("client", r"^a ReliableChatCompletionClient config is invalid: client\.config\.model: Field required$"),
        (
            "fallbacks",
            r"^a ReliableChatCompletionClient config is invalid: fallbacks\.0\.config\.model: Field required$",
        ),
    ],
)
def test_a_wrapped_client_config_of_the_wrong_shape_is_refused_without_its_api_key(where: str, reason: str) -> None:
    # As AutoGen Studio writes one, the key in clear: pydantic's ValidationError of the inner client's config
    # quoted the config it was given, and so a part of the key, in a message that ends up in a log.
    key = "sk-proj-live0123456789abcdefSECRET"
    misspelt = {"provider": "OpenAIChatCompletionClient", "config": {"api_key": key, "modle": "gpt-4o-mini"}}
    good = {"provider": "OpenAIChatCompletionClient", "config": {"api_key": key, "model": "gpt-4o-mini"}}
    config: dict[str, Any] = {"client": misspelt} if where == "client" else {"client": good, "fallbacks": [misspelt]}
    text = json.dumps({"provider": "autogen_reliability.ReliableChatCompletionClient", "config": config})
    with pytest.raises(ConfigurationError, match=reason) as refused:
        ChatCompletionClient.load_component(json.loads(text))
    assert "SECRET" not in str(refused.value)
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        # A termination condition where the model client goes: AutoGen's loader said only "Expected type does not
        # match", with nothing to tell which of the team's components it meant.
        (
            {"provider": "autogen_reliability.CostTermination", "config": {"max_cost_usd": "1"}},
            r"client: autogen_reliability\.CostTermination is a CostTermination, not a model client$",
        ),
        (
            {"provider": "autogen_ext.models.opnai.OpenAIChatCompletionClient", "config": {"model": "gpt-4o-mini"}},
            r"client: cannot load autogen_ext\.models\.opnai\.OpenAIChatCompletionClient: No module named",
        ),
        (
            {"provider": "autogen_reliability.OpenAIChatCompletionClient", "config": {"model": "gpt-4o-mini"}},
            r"client: cannot load autogen_reliability\.OpenAIChatCompletionClient: .*has no attribute",
        ),
        ({"provider": "builtins.dict", "config": {}}, r"client: cannot load builtins\.dict: Invalid component class$"),
    ],
)
def test_a_wrapped_client_that_does_not_load_as_a_model_client_is_refused_naming_it(
    client: dict[str, Any], reason: str
) -> None:
    config = {"client": client}
    with pytest.raises(ConfigurationError, match=r"^a ReliableChatCompletionClient config is invalid: " + reason):
        ChatCompletionClient.load_component(
            {"provider": "autogen_reliability.ReliableChatCompletionClient", "config": config}
        )
