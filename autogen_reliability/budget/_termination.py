"""``CostTermination``: stop an AutoGen team once the priced cost of its run reaches a limit.

AutoGen's ``TokenUsageTermination`` counts tokens from the messages it is shown.
Money is not in the messages: it is priced by the accounting stage of the
wrapped clients, which publishes every usage event on the process's feed
(``accounting/_feed.py``) as soon as a call ends -- before the agent's answer
reaches the team's termination check. This condition listens to that feed.

Which events belong to "the current run"
----------------------------------------
The condition is *armed* from its construction, and again from each
:meth:`~CostTermination.reset`, until it stops the team, is reset, or is
garbage-collected. The first check of a run (AutoGen makes it with the task
messages, before any model call) fixes the run's attribution: the innermost
:func:`~autogen_reliability.usage_scope` of the context the check runs in,
with the constructor's ``project`` / ``session`` laid over it. An event counts
when every field that attribution sets (project, session, agent, each tag)
holds the same value on the event, and, with ``agents=``, when its agent is one
of them. A team run inside ``usage_scope(session=...)`` carries the scope into
AutoGen's runtime tasks, so its checks and its model calls see the same
session, and two teams running at once under different sessions do not count
each other's spend.

Events recorded between arming and the first check are kept, summed per
attribution and per AutoGen team that made them (the ``key`` of the agent whose
message handler ran the call: a team's id, the key of every agent it runs;
none outside a team), and those of the checking team are folded in at that
check: a run started without a task (a continued ``team.run()``) is checked
only after its first speaker's calls, and those calls are its spend too. What
other teams spent meanwhile (one run before, an outer team around a nested
one) and calls made outside any team are not this run's. The other side of
that choice: a nested team's calls in the first turn of a continued run (a
team participant or a ``SocietyOfMindAgent`` speaking first) are made by
another team, and are not counted.

Limits, said plainly:
- With no scope and no constructor filter, every priced event this process
  records counts (teams run one at a time are then exact; two at once are
  not).
- Only calls through wrapped clients that record usage (``track_usage=True``,
  the default) are seen; a call a tool makes under an inner
  ``usage_scope(session=other)`` belongs to that other session.
- A team on a runtime started outside the scope (``runtime=`` given to the
  team) does not see the scope in its checks; pass ``session=`` or
  ``project=`` to the condition instead.
- The check runs between turns, so a turn that makes several calls may cross
  the limit by that turn's calls; a hard per-call stop is a budget's job
  (``BudgetPolicy``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from decimal import Context, Decimal
from typing import Final, Literal, Self, cast

from autogen_agentchat.base import TerminatedException, TerminationCondition
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StopMessage
from autogen_core import Component, MessageHandlerContext
from pydantic import StrictFloat, StrictInt, StrictStr

from .._context import Attribution, current_attribution
from .._errors import ComponentConfig, ConfigurationError
from ..accounting import UsageEvent, UsageRecorder, _feed
from ._policy import limit_nanousd

__all__ = ["CostTermination", "CostTerminationConfig"]

logger = logging.getLogger("autogen_reliability")

OnUnpriced = Literal["warn", "stop"]

_EXACT: Final = Context(prec=60)  # exact for every amount below the cap (MAX_LIMIT_USD), to the nano-USD
_MAX_EARLY_KEYS: Final = 1024
"""Distinct attributions kept between arming and a run's first check; the oldest are dropped beyond it.

Only a condition that sits armed while a busy process serves many sessions reaches it. What is
dropped is the oldest spend, made long before the run's first check, so it is spend of another
run; the calls of a continued run's first turn are the newest and stay.
"""

_TagItems = tuple[tuple[str, str], ...]
_Key = tuple[str | None, str | None, str | None, str | None, _TagItems]
"""The team that made the calls, then their project, session, agent and tags."""


def _calling_team() -> str | None:
    """The AutoGen team whose agent's message handler runs the calling code (its id), or None outside one.

    A team registers its manager and every participant with the team's id as their ``AgentId.key``.
    """
    try:
        return MessageHandlerContext.agent_id().key
    except RuntimeError:  # not inside a message handler
        return None


class CostTerminationConfig(ComponentConfig):
    """The declarative form of :class:`CostTermination`.

    Money is dumped as the string of an exact decimal; a config written by hand may give a JSON number
    too, read as the constructor reads it (a float by its repr: ``0.1`` is 0.1).
    """

    max_cost_usd: StrictStr | StrictInt | StrictFloat
    project: str | None = None
    session: str | None = None
    agents: list[str] | None = None
    on_unpriced: OnUnpriced = "warn"


def _agents(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | Mapping) or not isinstance(value, Collection):
        # A mapping would be taken for its keys: {"writer": 0.5} reads as a limit per agent, which this is not.
        raise ConfigurationError(f"agents must be a collection of agent names, got {type(value).__name__}")
    names = tuple(dict.fromkeys(cast("Collection[object]", value)))
    if not names:
        raise ConfigurationError("agents must name at least one agent (omit it to count every agent)")
    for name in names:
        try:
            Attribution(agent=cast("str", name))  # the same rules as every attribution label
        except ConfigurationError as error:
            raise ConfigurationError(f"agents: {error}") from None
    return cast("tuple[str, ...]", names)


def _usd(nanousd: int) -> str:
    """An amount of nano-USD as a plain decimal string of USD, without trailing zeros (``0.0123``)."""
    amount = Decimal(nanousd).scaleb(-9, _EXACT).normalize(_EXACT)
    return format(amount, "f")


class _Match:
    """Which events belong to a run: every field its attribution sets, and one of ``agents`` if given."""

    __slots__ = ("agents", "project", "session", "single_agent", "tags")

    def __init__(self, attribution: Attribution, agents: tuple[str, ...] | None) -> None:
        self.project = attribution.project
        self.session = attribution.session
        self.single_agent = attribution.agent
        self.tags: _TagItems = tuple(attribution.tags.items())
        self.agents = frozenset(agents) if agents is not None else None

    def covers(self, project: str | None, session: str | None, agent: str | None, tags: Mapping[str, str]) -> bool:
        return (
            (self.project is None or project == self.project)
            and (self.session is None or session == self.session)
            and (self.single_agent is None or agent == self.single_agent)
            and (self.agents is None or agent in self.agents)
            and all(tags.get(key) == value for key, value in self.tags)
        )

    def describe(self) -> str:
        fields = [
            f"{name}={value!r}"
            for name, value in (("project", self.project), ("session", self.session), ("agent", self.single_agent))
            if value is not None
        ]
        if self.tags:
            fields.append(f"tags={dict(self.tags)!r}")
        if self.agents is not None:
            fields.append(f"agents={sorted(self.agents)!r}")
        return ", ".join(fields) if fields else "every call of this process"


class _Sum:
    __slots__ = ("nanousd", "priced", "unpriced", "unpriced_models")

    def __init__(self) -> None:
        self.nanousd = 0
        self.priced = 0
        self.unpriced = 0
        self.unpriced_models: set[str] = set()

    def add(self, event: UsageEvent) -> None:
        if event.cost_nanousd is None:
            self.unpriced += 1
            self.unpriced_models.add(event.model or "an unknown model")
        else:
            self.nanousd += event.cost_nanousd
            self.priced += 1

    def fold(self, other: _Sum) -> None:
        self.nanousd += other.nanousd
        self.priced += other.priced
        self.unpriced += other.unpriced
        self.unpriced_models |= other.unpriced_models


class _Tally:
    """The spend of one run as the feed reports it.

    The feed calls :meth:`add` on whatever thread ran the model call; the team's task reads
    through :meth:`start` and :meth:`snapshot`. One lock covers both. The tally, not the
    condition, is what the feed holds, so a forgotten condition can still be collected.
    """

    __slots__ = ("_early", "_lock", "_match", "_total", "unsubscribe", "warned")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._match: _Match | None = None
        self._early: dict[_Key, _Sum] = {}
        self._total = _Sum()
        self.warned = False
        self.unsubscribe: Callable[[], None] = _feed.subscribe(self.add)

    @property
    def started(self) -> bool:
        return self._match is not None

    def add(self, event: UsageEvent, recorder: UsageRecorder) -> None:
        with self._lock:
            match = self._match
            if match is not None:
                if match.covers(event.project, event.session, event.agent, event.tags):
                    self._total.add(event)
                return
            # The feed calls listeners in the context of the call, so this is the team that made it.
            key: _Key = (_calling_team(), event.project, event.session, event.agent, tuple(sorted(event.tags.items())))
            early = self._early.pop(key, None) or _Sum()
            early.add(event)
            self._early[key] = early  # re-inserted: the dict stays ordered oldest first
            if len(self._early) > _MAX_EARLY_KEYS:
                del self._early[next(iter(self._early))]

    def start(self, match: _Match, team: str | None) -> None:
        """Fixes the run's attribution and folds in what ``team`` recorded for it since arming."""
        with self._lock:
            for (made_by, project, session, agent, tags), early in self._early.items():
                if made_by == team and match.covers(project, session, agent, dict(tags)):
                    self._total.fold(early)
            self._early.clear()
            self._match = match

    def snapshot(self) -> tuple[int, int, int, tuple[str, ...]]:
        """(nano-USD, priced calls, unpriced calls, unpriced models) so far."""
        with self._lock:
            total = self._total
            return total.nanousd, total.priced, total.unpriced, tuple(sorted(total.unpriced_models))


class CostTermination(TerminationCondition, Component[CostTerminationConfig]):
    """Stops a team once the priced cost of the model calls of its current run reaches ``max_cost_usd``.

    The money counterpart of AutoGen's ``TokenUsageTermination``: the cost is what
    the wrapped clients (:func:`~autogen_reliability.reliable`) priced, exactly, in
    nano-USD. It is checked each time the team checks its termination condition
    (between turns), so the turn whose calls cross the limit is the last one (in a
    ``SelectorGroupChat`` the call that picks the next speaker is made after the
    check, and is that speaker's turn's); combine it with other conditions with
    ``|`` and ``&``. AutoGen resets the condition when it
    stops a run and on ``team.reset()``; the next run counts from zero.

    Which calls count: those attributed to the run's :func:`~autogen_reliability.usage_scope`
    (run the team inside ``usage_scope(session=...)``), narrowed by ``project``,
    ``session`` and ``agents``; with no scope and no filter, every call this process
    records. The module documentation says exactly how a run's calls are told apart.

    Unpriced calls (a model with no known price) are never counted as free: with
    ``on_unpriced="warn"`` they are logged as a warning once per run and named in the
    stop message (the limit then covers only the priced calls); with ``"stop"`` the
    first one stops the team, since the limit can no longer be enforced.

    Args:
        max_cost_usd: The limit in USD, as a Decimal, int, decimal string, or float
            (read by its repr: ``0.1`` is 0.1). Above zero, at most 1,000,000,000,000,
            and a whole number of nano-USD (at most 9 decimal places).
        project: Count only calls attributed to this project (instead of the scope's).
        session: Count only calls attributed to this session (instead of the scope's).
        agents: Count only calls made by these agents (by name).
        on_unpriced: ``"warn"`` (default) or ``"stop"``; see above.

    Raises:
        ConfigurationError: an argument is invalid.

    Example:
        >>> from autogen_agentchat.conditions import MaxMessageTermination
        >>> from autogen_reliability import CostTermination
        >>> stop = CostTermination("0.50") | MaxMessageTermination(20)
    """

    component_config_schema = CostTerminationConfig
    component_provider_override = "autogen_reliability.CostTermination"
    component_description = "Stops a team once the priced cost of its current run reaches a limit in USD."

    def __init__(
        self,
        max_cost_usd: Decimal | int | float | str,
        *,
        project: str | None = None,
        session: str | None = None,
        agents: Collection[str] | None = None,
        on_unpriced: OnUnpriced = "warn",
    ) -> None:
        # A float is read by its repr (0.1 is 0.1, not 0.1000000000000000055...), as a budget's limit is.
        self._limit, self._limit_nanousd = limit_nanousd("max_cost_usd", max_cost_usd)
        self._filter = Attribution(project=project, session=session)
        self._agents = _agents(agents)
        if on_unpriced not in ("warn", "stop"):
            raise ConfigurationError(f"on_unpriced must be 'warn' or 'stop', got {on_unpriced!r}")
        self._on_unpriced: OnUnpriced = on_unpriced
        self._stopped = False
        self._tally = self._arm()

    def _arm(self) -> _Tally:
        tally = _Tally()
        # The feed holds the tally, never the condition: a condition nobody holds any more unsubscribes.
        self._finalizer = weakref.finalize(self, tally.unsubscribe)
        return tally

    def _disarm(self) -> None:
        self._finalizer()  # unsubscribes, once

    @property
    def max_cost_usd(self) -> Decimal:
        """The limit in USD."""
        return self._limit

    @property
    def spent_usd(self) -> Decimal:
        """The priced cost counted in the current run so far (0 before its first check)."""
        return Decimal(self._tally.snapshot()[0]).scaleb(-9, _EXACT)

    @property
    def unpriced_calls(self) -> int:
        """How many calls of the current run so far had no price (not in :attr:`spent_usd`)."""
        return self._tally.snapshot()[2]

    @property
    def terminated(self) -> bool:
        """Whether this condition stopped the current run (until :meth:`reset`)."""
        return self._stopped

    async def __call__(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> StopMessage | None:
        """Stops the run if its priced cost has reached the limit (the messages carry no cost; the feed does).

        Raises:
            TerminatedException: the condition already stopped the run and was not reset.
        """
        if self._stopped:
            raise TerminatedException("Termination condition has already been reached")
        tally = self._tally
        if not tally.started:
            match = _Match(self._filter.over(current_attribution()), self._agents)
            tally.start(match, _calling_team())
            logger.debug("CostTermination: a run started; counting the cost of %s", match.describe())
        nanousd, _priced, unpriced, models = tally.snapshot()
        if unpriced and self._on_unpriced == "stop":
            content = (
                f"Cost limit cannot be enforced: {_calls(unpriced)} to {', '.join(models)} had no price"
                f" (priced so far: ${_usd(nanousd)} of ${self._limit_text})"
            )
        elif nanousd >= self._limit_nanousd:
            content = f"Cost limit reached: ${_usd(nanousd)} of ${self._limit_text}"
            if unpriced:
                content += f" (and {_calls(unpriced)} to {', '.join(models)} with no price, not counted)"
        else:
            if unpriced and not tally.warned:
                tally.warned = True
                logger.warning(
                    "CostTermination: %s of this run to %s had no price; the limit of $%s counts only priced calls",
                    _calls(unpriced),
                    ", ".join(models),
                    self._limit_text,
                    extra={"unpriced_calls": unpriced, "unpriced_models": models},
                )
            return None
        self._stopped = True
        self._disarm()  # the run is over for this condition: nothing more to count until reset()
        logger.info(
            "CostTermination stopped the run: %s",
            content,
            extra={"spent_nanousd": nanousd, "limit_nanousd": self._limit_nanousd, "unpriced_calls": unpriced},
        )
        return StopMessage(content=content, source="CostTermination")

    @property
    def _limit_text(self) -> str:
        return format(self._limit.normalize(_EXACT), "f")

    async def reset(self) -> None:
        """Forgets the run: zero spent, not terminated, and armed afresh for the next run."""
        self._disarm()
        self._stopped = False
        self._tally = self._arm()

    def __repr__(self) -> str:
        options = [f"max_cost_usd={self._limit_text!r}"]
        if self._filter.project is not None:
            options.append(f"project={self._filter.project!r}")
        if self._filter.session is not None:
            options.append(f"session={self._filter.session!r}")
        if self._agents is not None:
            options.append(f"agents={list(self._agents)!r}")
        if self._on_unpriced != "warn":
            options.append(f"on_unpriced={self._on_unpriced!r}")
        return f"{type(self).__name__}({', '.join(options)})"

    def _to_config(self) -> CostTerminationConfig:
        return CostTerminationConfig(
            max_cost_usd=self._limit_text,
            project=self._filter.project,
            session=self._filter.session,
            agents=list(self._agents) if self._agents is not None else None,
            on_unpriced=self._on_unpriced,
        )

    @classmethod
    def _from_config(cls, config: CostTerminationConfig) -> Self:
        return cls(
            config.max_cost_usd,
            project=config.project,
            session=config.session,
            agents=config.agents,
            on_unpriced=config.on_unpriced,
        )


def _calls(count: int) -> str:
    return f"{count} call" if count == 1 else f"{count} calls"
