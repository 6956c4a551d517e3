"""Attribution: who a model call is made for.

Every provider request the wrapped client makes is attributed to a *project*, a
*session*, an *agent* and free-form *tags*. Values come from three places, the
most specific winning field by field:

1. the innermost active :func:`usage_scope` (a ContextVar, so concurrent
   asyncio tasks each see their own scope; nested scopes stack);
2. the defaults bound on the wrapper
   (``ReliableChatCompletionClient(inner, project="acme", agent="writer")``);
3. for the agent only, AutoGen's own ``MessageHandlerContext`` when the call
   runs inside an agent runtime handler (a team) and nothing else named it.

Tags are merged rather than replaced: scope tags are laid over the wrapper's.
A wrapper whose client is itself wrapped (a wrapped fallback, or one under
AutoGen's ``ChatCompletionCache``) hands its call's attribution down to it as
an active scope would be (:func:`hand_down`).

Example:
    >>> from autogen_reliability import usage_scope
    >>> with usage_scope(session="ticket-4711", tags={"tier": "gold"}):
    ...     pass  # every model call made in here is attributed to ticket-4711
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from autogen_core import MessageHandlerContext

from ._errors import ConfigurationError
from ._secret_text import ledger_text

__all__ = ["Attribution", "UsageScope", "current_attribution", "usage_scope"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_MAX_LABEL_LENGTH = 200
_EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


def _check_label(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string or None, got {type(value).__name__}")
    if not value.strip():
        raise ConfigurationError(f"{name} must not be empty or blank")
    if len(value) > _MAX_LABEL_LENGTH:
        raise ConfigurationError(f"{name} is {len(value)} characters long; the limit is {_MAX_LABEL_LENGTH}")
    # As the ledger stores it (a NUL or a lone surrogate as U+FFFD): a budget reading a key's spend, a filter,
    # a metric's label and a span see the text of the rows the calls wrote, on every backend.
    return ledger_text(value)


def _check_tags(tags: Mapping[str, str] | None) -> Mapping[str, str]:
    if tags is None:
        return _EMPTY_TAGS
    if not isinstance(tags, Mapping):  # before the emptiness test: "" or [] is no mapping either
        raise ConfigurationError(f"tags must be a mapping of str to str, got {type(tags).__name__}")
    if not tags:
        return _EMPTY_TAGS
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigurationError(
                f"tags must map str to str; {key!r}: {value!r} is {type(key).__name__}: {type(value).__name__}"
            )
    return MappingProxyType({ledger_text(key): ledger_text(value) for key, value in tags.items()})


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who a model call is made for. Every field is optional.

    Attributes:
        project: The product or cost centre the call is billed to.
        session: One conversation, ticket or job.
        agent: The AutoGen agent that made the call.
        tags: Free-form string labels, e.g. ``{"tenant": "t-42"}``.
    """

    project: str | None = None
    session: str | None = None
    agent: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY_TAGS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "project", _check_label("project", self.project))
        object.__setattr__(self, "session", _check_label("session", self.session))
        object.__setattr__(self, "agent", _check_label("agent", self.agent))
        object.__setattr__(self, "tags", _check_tags(self.tags))

    def __hash__(self) -> int:
        return hash((self.project, self.session, self.agent, tuple(sorted(self.tags.items()))))

    def over(self, defaults: Attribution) -> Attribution:
        """This attribution with its unset fields taken from ``defaults``; tags are merged."""
        if not defaults.tags:
            tags = self.tags
        elif not self.tags:
            tags = defaults.tags
        else:
            tags = MappingProxyType({**defaults.tags, **self.tags})
        return Attribution(
            project=self.project if self.project is not None else defaults.project,
            session=self.session if self.session is not None else defaults.session,
            agent=self.agent if self.agent is not None else defaults.agent,
            tags=tags,
        )


_EMPTY = Attribution()


@dataclass(frozen=True, slots=True, eq=False)
class _Entry:
    """One active entry of a scope in the current context: what it set, who set it, and what it covers.

    The ContextVar holds the innermost entry; the entries it covers hang off ``outer``.
    Exiting a scope sets the ContextVar to the entry below its own instead of resetting
    a ``Token``: a token can only be reset in the context that created it, and a scope
    object may be shared by tasks, exited out of order, or exited in another context
    (an async generator closed from another task or by the garbage collector).
    """

    attribution: Attribution
    scope: UsageScope | None = None
    outer: _Entry | None = None


_OUTSIDE = _Entry(_EMPTY)
_current: ContextVar[_Entry] = ContextVar("autogen_reliability_attribution", default=_OUTSIDE)


def current_attribution() -> Attribution:
    """The attribution of the innermost active :func:`usage_scope` (all ``None`` outside any scope)."""
    return _current.get().attribution


def resolve_attribution(bound: Attribution) -> Attribution:
    """The attribution of a call made now by a wrapper with ``bound`` defaults."""
    current = _current.get().attribution
    if current is _EMPTY:  # outside any scope (most calls): the wrapper's own, checked when it was made
        resolved = bound
    elif bound is _EMPTY:
        resolved = current
    else:
        resolved = current.over(bound)
    if resolved.agent is None:
        agent = _agent_from_runtime()
        if agent is not None:
            resolved = Attribution(resolved.project, resolved.session, agent, resolved.tags)
    return resolved


def hand_down(attribution: Attribution) -> Token[_Entry]:
    """Makes ``attribution`` current for a call a wrapper makes on a wrapped client; undo with :func:`take_back`.

    The wrapped client (our wrapper, or one under AutoGen's cache) resolves its own calls' attribution,
    and records their rows: it must see the outer call's (its scope over the outer wrapper's bound
    project, agent and tags) as it sees an active scope, over its own defaults. Set and reset within one
    step of one task, never across a ``yield``.
    """
    return _current.set(_Entry(attribution, None, _current.get()))


def take_back(token: Token[_Entry]) -> None:
    """Undoes :func:`hand_down`, in the context that called it."""
    _current.reset(token)


def _agent_from_runtime() -> str | None:
    """The calling agent's name when the call runs inside an AutoGen runtime handler.

    A team runs each participant in a container whose agent type is
    ``f"{participant.name}_{team_id}"`` with ``key == team_id``; that naming is a
    convention, not a contract, so it is only a fallback behind explicit names. A name
    longer than a label may be is cut to 200 characters, its last one ``…``.
    """
    try:
        agent_id = MessageHandlerContext.agent_id()
    except RuntimeError:  # not inside a message handler
        return None
    suffix = "_" + agent_id.key
    name = agent_id.type
    if name.endswith(suffix) and len(name) > len(suffix):
        name = name[: -len(suffix)]
    # AutoGen takes a name of any length; the label limit is ours, and no reason to fail the agent's call.
    return name if len(name) <= _MAX_LABEL_LENGTH else name[: _MAX_LABEL_LENGTH - 1] + "…"


class UsageScope:
    """Sets an attribution for the code it wraps: ``with``, ``async with`` or a decorator.

    What :func:`usage_scope` returns (make one with it). One object may be entered any number of
    times, also by several tasks at once: every entry is independent and is kept in the entering
    context, not on the object.
    """

    __slots__ = ("_attribution",)

    def __init__(self, attribution: Attribution) -> None:
        self._attribution = attribution

    @property
    def attribution(self) -> Attribution:
        """What this scope sets (before merging with the enclosing scope)."""
        return self._attribution

    def __enter__(self) -> Attribution:
        outer = _current.get()
        entry = _Entry(self._attribution.over(outer.attribution), self, outer)
        _current.set(entry)
        return entry.attribution

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        top = _current.get()
        if top.scope is self:
            _current.set(top.outer if top.outer is not None else _OUTSIDE)
            return
        # Not the innermost entry here. Either an inner scope is still open in this context (exits
        # out of order): drop our entry and lay the inner ones again over what ours covered; or this
        # context never entered the scope (exited from another task or by the garbage collector):
        # nothing here to restore, and the entering context is not ours to change.
        covering: list[_Entry] = []
        entry: _Entry | None = top
        while entry is not None and entry.scope is not self:
            covering.append(entry)
            entry = entry.outer
        if entry is None:
            return
        rebuilt = entry.outer if entry.outer is not None else _OUTSIDE
        for inner in reversed(covering):
            if inner.scope is None:  # the bottom entry, or an outer call's attribution handed down
                continue
            rebuilt = _Entry(inner.scope.attribution.over(rebuilt.attribution), inner.scope, rebuilt)
        _current.set(rebuilt)

    async def __aenter__(self) -> Attribution:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        # Each invocation gets a scope object of its own (entries are independent anyway).
        attribution = self._attribution
        if inspect.iscoroutinefunction(func):
            async_func = cast(Callable[..., Awaitable[Any]], func)

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with UsageScope(attribution):
                    return await async_func(*args, **kwargs)

            return cast(Callable[_P, _R], async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with UsageScope(attribution):
                result = func(*args, **kwargs)
            return cast(_R, _covered(attribution, result))

        return wrapper


def _covered(attribution: Attribution, result: object) -> object:
    """What a decorated function returned, with the scope around the code that runs only later, when it is used.

    A generator function's call runs none of its body; nor does calling an object whose ``__call__`` is
    ``async``, a lambda returning ``client.create(...)``, or what a sync decorator made of a coroutine function.
    The coroutine is awaited inside the scope, the generator's steps each run inside it.
    """
    if inspect.iscoroutine(result):
        return _awaited_in_scope(attribution, result)
    if inspect.isasyncgen(result):
        return _async_steps_in_scope(attribution, result)
    if inspect.isgenerator(result):
        return _steps_in_scope(attribution, result)
    return result


async def _awaited_in_scope(attribution: Attribution, coroutine: Coroutine[Any, Any, Any]) -> Any:
    with UsageScope(attribution):
        return await coroutine


def _steps_in_scope(attribution: Attribution, steps: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """``steps``' items, each step run inside a scope of ``attribution``, the consumer's code between them outside.

    A scope entered in a generator's body and held across a ``yield`` would be the consumer's current one until the
    next step (a generator runs in its caller's context). What is sent or thrown in is passed on.
    """
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            with UsageScope(attribution):
                try:
                    item = steps.send(sent) if thrown is None else steps.throw(thrown)
                except StopIteration as stop:
                    return stop.value
            sent = thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                raise
            except BaseException as error:
                thrown = error
    finally:
        with UsageScope(attribution):
            steps.close()


async def _async_steps_in_scope(attribution: Attribution, steps: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """As :func:`_steps_in_scope`, for an async generator."""
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            with UsageScope(attribution):
                try:
                    item = await (steps.asend(sent) if thrown is None else steps.athrow(thrown))
                except StopAsyncIteration:
                    return
            sent = thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                raise
            except BaseException as error:
                thrown = error
    finally:
        with UsageScope(attribution):
            await steps.aclose()


def usage_scope(
    *,
    project: str | None = None,
    session: str | None = None,
    agent: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> UsageScope:
    """Attribute every model call made inside to a project, session, agent and tags.

    Works as ``with``, ``async with`` and as a decorator of sync or async
    functions; of a generator function (``async`` or not), it covers each step
    of the generator, never the consumer's code between two items. What any
    decorated callable returns to run later (a coroutine, a generator) is covered
    where it runs: an object whose ``__call__`` is ``async`` is an async function too. Scopes
    nest: an inner scope overrides the fields it sets and adds its tags to the
    outer ones. The values live in a ContextVar, so concurrent asyncio tasks
    keep their own scopes.

    Args:
        project: The product or cost centre.
        session: One conversation, ticket or job.
        agent: The agent name (normally bound by :func:`reliable` instead).
        tags: Free-form string labels.

    A NUL or a lone surrogate (half an emoji, cut) in a label or a tag is
    U+FFFD, as the ledger stores it: the scope's attribution, its budgets'
    keys and its rows all hold the same text.

    Raises:
        ConfigurationError: a label is not a non-blank string of at most 200
            characters, or a tag is not ``str: str``.

    Example:
        >>> async def handle(ticket_id: str) -> None:
        ...     async with usage_scope(session=ticket_id):
        ...         ...  # await team.run(task=...)
    """
    return UsageScope(
        Attribution(project=project, session=session, agent=agent, tags=_EMPTY_TAGS if tags is None else tags)
    )
