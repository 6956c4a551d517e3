"""``reliable()``: wrap a model client, an agent, a team, or a factory that makes one.

Agents keep their model client where AutoGen does not expose it publicly
(``AssistantAgent``, ``SocietyOfMindAgent``, ``CodeExecutorAgent``, and
``SelectorGroupChat`` / ``MagenticOneGroupChat`` for the speaker selector /
orchestrator; ``providers`` knows where, and which agents and teams an agent runs
inside it: a ``MessageFilterAgent``'s, an ``AgentTool``'s or ``TeamTool``'s).
``reliable()`` replaces that client
with a :class:`ReliableChatCompletionClient` bound to the agent's name. Each
agent gets a wrapper of its own, so two agents sharing one underlying client
are still told apart, and an agent whose client is already wrapped is re-bound
around the same inner client rather than wrapped twice.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast, overload

from autogen_agentchat.base import ChatAgent, Team
from autogen_core.models import ChatCompletionClient
from typing_extensions import Unpack

from ._client import ReliableChatCompletionClient, ReliableOptions, check_options
from ._errors import ConfigurationError
from .providers import has_started, model_client_of, participants_of, run_inside, set_model_client

__all__ = ["reliable"]

_Target = TypeVar("_Target", bound=ChatAgent | Team)
_Factory = TypeVar("_Factory", bound=Callable[..., Any])


@overload
def reliable(target: ChatCompletionClient, /, **options: Unpack[ReliableOptions]) -> ReliableChatCompletionClient: ...
@overload
def reliable(target: _Target, /, **options: Unpack[ReliableOptions]) -> _Target: ...
@overload
def reliable(target: None = None, /, **options: Unpack[ReliableOptions]) -> Callable[[_Factory], _Factory]: ...


def reliable(target: Any = None, /, **options: Unpack[ReliableOptions]) -> Any:
    """Add reliability to a model client, an agent, a team, or a factory of one.

    - A **client** is returned wrapped in a :class:`ReliableChatCompletionClient`
      (an already wrapped client gets the new options, around the same inner client).
    - An **agent** has its model client wrapped in place, with the agent's name
      bound as ``agent``, and so have the agents and teams it runs inside it (the
      agent a ``MessageFilterAgent`` wraps, those its ``AgentTool`` / ``TeamTool`` run),
      each under its own name; the agent itself is returned.
    - A **team** has each participant wrapped that way (nested teams too; the
      speaker selector of a ``SelectorGroupChat`` and the orchestrator of a
      ``MagenticOneGroupChat`` are attributed to the team's name); the team is
      returned.
    - An ``agent=`` option names the agent of every client so wrapped, instead of
      their own names.
    - With no target, returns a decorator for a function (sync or async) that
      builds and returns any of the above.

    Args:
        target: What to wrap; omit it to get a decorator.
        **options: Options of :class:`ReliableChatCompletionClient`.

    Raises:
        ConfigurationError: an option is invalid, an agent given directly has
            no model client to wrap, or a team that has run already holds a model client
            (a ``SelectorGroupChat``'s or ``MagenticOneGroupChat``'s) that would change:
            the selector or orchestrator it made keeps the old one. Nothing is changed then.
        TypeError: ``target`` is none of the above.

    Example:
        >>> from autogen_agentchat.agents import AssistantAgent
        >>> from autogen_agentchat.teams import RoundRobinGroupChat
        >>> from autogen_ext.models.openai import OpenAIChatCompletionClient
        >>> client = reliable(OpenAIChatCompletionClient(model="gpt-4o-mini"), project="acme")
        >>> writer = AssistantAgent("writer", model_client=OpenAIChatCompletionClient(model="gpt-4o-mini"))
        >>> critic = AssistantAgent("critic", model_client=client)
        >>> team = reliable(RoundRobinGroupChat([writer, critic]), project="acme")
        >>> @reliable(project="acme")
        ... def make_team() -> RoundRobinGroupChat: ...
    """
    if target is None:
        return _decorator(options)
    if isinstance(target, ChatCompletionClient):
        return _wrap_client(target, options, agent=None)
    if isinstance(target, Team):
        check_options(options)  # a bad option is named before a team that has run is
        _refuse_started_teams(target, options)
        _wrap_in_place(target, options)
        return target
    if isinstance(target, ChatAgent):
        check_options(options)
        _refuse_started_teams(target, options)
        if not _wrap_in_place(target, options):
            raise ConfigurationError(
                f"agent {target.name!r} ({type(target).__name__}) has no model client to wrap; "
                "wrap the client it calls, or the team it belongs to"
            )
        return target
    raise TypeError(
        "reliable() takes a ChatCompletionClient, an AutoGen agent or team, or no target (as a decorator), "
        f"not {type(target).__name__}"
    )


def _wrap_client(
    client: ChatCompletionClient, options: ReliableOptions, agent: str | None
) -> ReliableChatCompletionClient:
    bound = _named(options, agent)
    if isinstance(client, ReliableChatCompletionClient):
        if _wrapped_as(client, bound):
            return client
        return client.with_options(**bound)
    return ReliableChatCompletionClient(client, **bound)


def _named(options: ReliableOptions, agent: str | None) -> ReliableOptions:
    """``options`` with ``agent`` (an agent's or a team's name) bound, unless they name an agent themselves."""
    if agent is None or options.get("agent") is not None:
        return options
    return {**options, "agent": agent}


def _wrapped_as(client: ChatCompletionClient, bound: ReliableOptions) -> bool:
    """Whether ``client`` is a wrapper with the ``bound`` options already (wrapping it again changes nothing)."""
    if not isinstance(client, ReliableChatCompletionClient):
        return False
    current: dict[str, Any] = dict(client.options)
    # An option left out is not an option given as None: retry, circuit, sanitize and budget are on by
    # default and None switches them off, so only an option given with the same value is "unchanged".
    return all(name in current and current[name] == value for name, value in bound.items())


def _refuse_started_teams(target: ChatAgent | Team, options: ReliableOptions) -> None:
    """Raises if wrapping ``target`` would change the client of a team that has run (before anything is changed).

    A team makes its speaker selector or orchestrator on its first run, with the client it held then, and
    the runtime keeps it: a client swapped in afterwards is never called, and those calls would go unrecorded.
    """
    for keeper, client in _held_clients(target):
        if isinstance(keeper, Team) and has_started(keeper) and not _wrapped_as(client, _named(options, keeper.name)):
            raise ConfigurationError(
                f"team {keeper.name!r} ({type(keeper).__name__}) has run already, and keeps the model client "
                "it started with for its speaker selection; wrap the team before its first run "
                "(or wrap its model client before building it)"
            )


def _members(owner: ChatAgent | Team) -> Iterator[ChatAgent | Team]:
    """The agents and teams ``owner`` runs: a team's participants; a ``SocietyOfMindAgent``'s inner team,
    the agent a ``MessageFilterAgent`` wraps, the agents and teams an agent's tools run."""
    found = participants_of(owner) if isinstance(owner, Team) else run_inside(owner)
    for member in found:
        if isinstance(member, Team | ChatAgent):
            yield member


def _held_clients(
    owner: ChatAgent | Team, seen: set[int] | None = None
) -> Iterator[tuple[ChatAgent | Team, ChatCompletionClient]]:
    """Each agent or team under ``owner`` (itself included) that keeps a model client, with that client.

    Each once: an agent may be a participant and another's tool as well (and a tool may run its own team).
    """
    seen = set() if seen is None else seen
    if id(owner) in seen:
        return
    seen.add(id(owner))
    client = model_client_of(owner)
    if client is not None:
        yield owner, client  # a team's: the selector or orchestrator, named after the team
    for member in _members(owner):
        yield from _held_clients(member, seen)


def _wrap_in_place(owner: ChatAgent | Team, options: ReliableOptions) -> bool:
    """Wraps every client ``owner`` keeps, each bound to its keeper's name; says whether there was one.

    Every wrapper is made before any client is replaced: an option refused for one of them (a fallback that
    is that agent's own client) leaves every agent and team as it was, not half wrapped.
    """
    held = list(_held_clients(owner))
    wrappers = [_wrap_client(client, options, agent=keeper.name) for keeper, client in held]
    for (keeper, _), wrapper in zip(held, wrappers, strict=True):
        set_model_client(keeper, wrapper)
    return bool(held)


def _decorator(options: ReliableOptions) -> Callable[[_Factory], _Factory]:
    # Validate now, so a bad option fails where the decorator is applied, not at the first call.
    check_options(options)

    def decorate(factory: _Factory) -> _Factory:
        if inspect.iscoroutinefunction(factory):
            async_factory = cast(Callable[..., Awaitable[Any]], factory)

            @functools.wraps(factory)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return reliable(await async_factory(*args, **kwargs), **options)

            return cast(_Factory, async_wrapper)

        @functools.wraps(factory)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return reliable(factory(*args, **kwargs), **options)

        return cast(_Factory, wrapper)

    return decorate
