"""The per-call pipeline inside the wrapped client.

One logical ``create()`` / ``create_stream()`` call becomes a :class:`Call` and
a :class:`Request`, and flows through a chain of :class:`Layer` objects to the
*attempt*: the one place where the inner client is actually called. Layers
control the flow (a retry layer calls ``call_next`` again, a validation layer
derives a new request and re-asks); attempt observers only watch (each
provider attempt ends in exactly one :class:`AttemptEvent`, with a result or an
error, which is what usage counters and accounting consume)::

    client.create(...)
      └─ layer 1 ─ layer 2 ─ … ─ attempt ── inner.create(...)
                                    └──── AttemptEvent ──> observers

Besides each wrapper's own observers, the process has one **feed** that what
watches every wrapped client subscribes to (Prometheus metrics, OpenTelemetry
spans): :func:`subscribe_attempts` hands over every :class:`AttemptEvent`, and
:func:`subscribe_calls` tells a :class:`CallObserver` when each logical call
starts and ends (its outermost pipeline announces it; a fallback's does not
again). Subscribers are kept in tuples that are replaced, never changed in
place, so the call path reads them without a lock. With nobody subscribed a
call pays a truth test of an empty tuple per call and per attempt, and
``Pipeline.create`` being a method rather than the first layer itself: about
0.1-0.5 µs of the ~14 µs a bare pipeline's call costs (measured against the
commit before, best of 15 rounds of 20,000 calls; the wrapped call's own
benchmark cannot tell the two apart).

This module holds the mechanism only; the policies live in their own
subpackages and plug in as layers and observers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from types import MappingProxyType
from typing import Any, Literal, Protocol

from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from ._context import Attribution, hand_down, take_back
from ._errors import IncompleteStreamError, MalformedResponseError, ProviderResponseError, TruncatedStreamError
from ._ids import time_ordered_uuid
from ._redaction import log_failure, redacted_error
from ._subscribers import Subscribers
from .providers import (
    CURRENT_SLOT,
    ProviderUsage,
    UsageSlot,
    attach_usage_tap,
    innermost,
    new_usage_slot,
    provider_arguments,
)

__all__ = [
    "AttemptEvent",
    "AttemptObserver",
    "Call",
    "CallObserver",
    "CreateHandler",
    "DeadlineExceededError",
    "Findings",
    "Layer",
    "Pipeline",
    "Request",
    "StartedAttempt",
    "StreamHandler",
    "StreamItem",
    "attempt_feed",
    "call_feed",
    "cut_by_deadline",
    "deadline_timer",
    "subscribe_attempts",
    "subscribe_calls",
]

logger = logging.getLogger("autogen_reliability")

StreamItem = str | CreateResult
CreateHandler = Callable[["Request"], Awaitable[CreateResult]]
StreamHandler = Callable[["Request"], AsyncGenerator[StreamItem, None]]
Outcome = Literal["ok", "error", "cancelled"]


_NO_CHANGES: Mapping[str, int] = MappingProxyType({})


# The deadline's timer of the retry layer an attempt runs under (set by that layer): a cancellation is the
# provider's timeout when that timer fired, the caller's own business otherwise. A context variable, not a field
# of the request: each fallback's pipeline has a retry layer, and a timer, of its own.
deadline_timer: ContextVar[asyncio.Timeout | None] = ContextVar("autogen_reliability_deadline_timer", default=None)


def cut_by_deadline(error: BaseException | None) -> bool:
    """Whether ``error``, that an attempt is ending with, is the retry layer's deadline cutting it short.

    Asked while the attempt ends, in its own context (a layer inside the retry layer): the deadline of the retry
    layer it runs under has passed. It did not answer in time, as if its SDK had timed out waiting; the caller's
    own cancellation (a task cancelled, a CancellationToken, a consumer that went away) is not.
    """
    if not isinstance(error, asyncio.CancelledError):
        return False
    timer = deadline_timer.get()
    return timer is not None and timer.expired()


class DeadlineExceededError(TimeoutError):
    """The error of an attempt the retry policy's deadline cut short (:attr:`AttemptEvent.error`).

    The attempt was cancelled because the provider had not answered in time: a timeout, as the SDK's own would
    be, which ``classify_error()`` gives as ``TIMEOUT``; its usage row, metrics, span and the health window say
    so. An attempt the caller cancelled keeps its ``CancelledError``.
    """

    def __init__(self) -> None:
        super().__init__("no answer before the retry policy's deadline, which cancelled the attempt")


@dataclass(slots=True)
class Findings:
    """What the stages found in and changed about a call's answers: the one channel from them to accounting.

    Validation and the sanitiser write here, each through its method; the
    accounting stage reads it when the call ends, and no stage reads another's
    attributes.
    """

    _violations: dict[int, int] = field(default_factory=dict)
    _sanitizer_changes: Mapping[str, int] | None = None
    _judging: bool = False
    _held: list[tuple[int, Callable[[int], None]]] | None = None

    def judged(self, attempt: int, violations: int) -> None:
        """Validation judged the answer of ``attempt``: ``violations`` problems found (0: valid)."""
        self._violations[attempt] = violations
        if self._held:
            waiting = [release for number, release in self._held if number == attempt]
            self._held = [(number, release) for number, release in self._held if number != attempt]
            for release in waiting:
                _released(release, violations)

    def will_judge(self) -> None:
        """Validation judges every answer of this call: see :meth:`hold`. It then calls :meth:`release_held`."""
        self._judging = True

    @property
    def judging(self) -> bool:
        """Whether validation judges the answers of this call (:meth:`will_judge`)."""
        return self._judging

    def hold(self, attempt: int, release: Callable[[int], None]) -> None:
        """Calls ``release(violations)`` once validation judged the answer of ``attempt``, or with 0 when it stops
        judging without having judged it (:meth:`release_held`); at once if it judged it already.

        For the end of a call a wrapped client made for ``attempt`` (see :meth:`Call.after_verdict`): its answer
        is this call's, and its rows are recorded, and its end told to its observers, once this call's validation
        said whether it was refused.
        """
        if attempt in self._violations or not self._judging:
            _released(release, self._violations.get(attempt, 0))
        else:
            self._held = [*(self._held or ()), (attempt, release)]

    def release_held(self) -> None:
        """Validation stops judging (the call ends): what still waits for a verdict is released as not judged."""
        self._judging = False
        held, self._held = self._held or [], None
        for _, release in held:
            _released(release, 0)

    def sanitized(self, changes: Mapping[str, int]) -> None:
        """The sanitiser changed the answer handed on to the agent: changes per category."""
        self._sanitizer_changes = changes

    def violations(self, attempt: int) -> int:
        """How many violations validation found in the answer of ``attempt`` (0: valid, or not judged)."""
        return self._violations.get(attempt, 0)

    @property
    def sanitizer_changes(self) -> Mapping[str, int]:
        """What the sanitiser changed in the answer handed on, per category (empty: nothing)."""
        return self._sanitizer_changes or _NO_CHANGES


def _take_verdict(call: Call, answered: int, then: Callable[[], None], violations: int) -> None:
    """``call``'s answer, that of its attempt ``answered``, was judged around it: ``violations`` found there."""
    if violations and answered == call.attempts and not call.findings.violations(answered):
        call.findings.judged(answered, violations)
    then()


def _released(release: Callable[[int], None], violations: int) -> None:
    try:
        release(violations)
    except Exception:
        # Recording a wrapped client's rows must never break the call that judged its answer.
        log_failure(logger, "releasing rows held for validation failed")


@dataclass(slots=True)
class Call:
    """One logical call as the agent made it; all of its provider attempts share it.

    Attributes:
        call_id: Shared by every attempt of this call.
        attribution: Project / session / agent / tags, resolved when the call started.
        streamed: Whether the agent called ``create_stream``.
        extra_create_args: As the agent passed them (a ``"model"`` there is the model it asks the
            primary client for: see ``providers.ClientModel``). A fallback's attempts are sent them
            without that ``"model"`` (their :attr:`Request.extra_create_args`), asking for its own.
        started_at: When the call started (UTC).
        attempts: Provider attempts made so far.
        events: The :class:`AttemptEvent` of each finished attempt, in order; emptied once the call
            has ended and been recorded and announced (see :meth:`release`).
        findings: What the stages found in and changed about the answers (validation, the sanitiser).
        tracker: Told when each attempt starts and ends (the accounting layer's in-flight rows).
        observers: The :class:`CallObserver` objects told that this call started, who are told
            that it ended (``None`` until a pipeline announced it: none was subscribed then).
        borrowed: The accounting layer of the wrapper whose attempt made this call, when this call's
            own wrapper records no usage (``track_usage=False``) and that one does: it records this
            call's attempts, one row per provider request (see :attr:`Pipeline.borrows`).
        recorded_inside: The attempts of this call on a wrapped client that made a call of it: that call
            recorded its provider attempts itself, or through this call's accounting (``borrowed`` there), so
            they have no row of their own, and their events are :attr:`AttemptEvent.on_wrapper`. An attempt
            not among them made no call there (AutoGen's cache between the two answered it) and has its row.
        made_by: The call of the wrapper whose attempt made this call (this wrapper nested in it, or its
            fallback), and that attempt's number: this call's answer is that attempt's, which that call's
            validation may refuse (see :meth:`Findings.hold`).
        started: When the call started on ``time.perf_counter``, a monotonic clock: its duration is
            measured from here, as an attempt's latency is, not from ``started_at``, which the wall
            clock being set (NTP) would move by as much.
    """

    attribution: Attribution
    streamed: bool
    extra_create_args: Mapping[str, Any]
    call_id: uuid.UUID = field(default_factory=time_ordered_uuid)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    attempts: int = 0
    events: list[AttemptEvent] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)
    tracker: AttemptTracker | None = None
    observers: tuple[CallObserver, ...] | None = None
    borrowed: Layer | None = None
    recorded_inside: set[int] | None = None
    made_by: tuple[Call, int] | None = None
    started: float = field(default_factory=time.perf_counter, repr=False, compare=False)

    def after_verdict(self, then: Callable[[], None]) -> bool:
        """Whether the validation of a wrapper around this one judges this call's answer: then ``then`` is called
        once it did, with its verdict taken into :attr:`findings` first (see :attr:`made_by`), and True returned.

        For what a call that ended with an answer does at its end (its rows, its observers' ``call_ended``):
        each waits for the verdict, in the order they asked, so the rows are published before the call's end is.
        False, and ``then`` not called, when nothing around this call judges its answer, or it ended without one.
        """
        made_by = self.made_by
        while made_by is not None and not made_by[0].findings.judging:
            made_by = made_by[0].made_by
        events = self.events
        if made_by is None or not events or events[-1].result is None:
            return False
        judging, attempt = made_by
        judging.findings.hold(attempt, partial(_take_verdict, self, events[-1].attempt, then))
        return True

    def release(self) -> None:
        """Lets go of the attempt events: the call has ended, and what reads them (accounting, observers) has.

        A call and its events refer to each other (``event.call``), so left alone they would wait for a
        full collection of the garbage collector, holding the call's messages and answers with them: a
        busy process grew by a fifth of its heap before one came (``benchmarks/bench_memory.py``). Emptied,
        they go as soon as nothing else holds them. An event kept elsewhere still has its ``call``.
        """
        self.events = []


class StartedAttempt(Protocol):
    """An attempt that has started and not yet ended, as an :class:`AttemptTracker` sees it."""

    @property
    def number(self) -> int:
        """1 for the first attempt of the call, then 2, 3, ..."""

    @property
    def client(self) -> ChatCompletionClient:
        """The client it calls."""

    @property
    def request(self) -> Request:
        """What it sends."""

    @property
    def started_at(self) -> datetime:
        """When it started (UTC)."""

    @property
    def event_id(self) -> uuid.UUID:
        """The id of the usage row it becomes; its :class:`AttemptEvent` carries the same."""


class AttemptTracker(Protocol):
    """Follows each provider attempt of one call from its start; both methods must be quick and never raise.

    The pipeline knows nothing of what a tracker does with it: the accounting
    stage sets one on a call to keep an in-flight row per attempt.
    """

    def started(self, call: Call, attempt: StartedAttempt) -> None:
        """The attempt is about to send its request."""

    def finished(self, event: AttemptEvent) -> None:
        """The attempt ended (called before the observers)."""


@dataclass(frozen=True, slots=True)
class Request:
    """What one attempt asks of a client: ``create``'s arguments plus the call it belongs to.

    Layers never mutate a request; they derive a new one with :meth:`replace`.
    """

    call: Call
    messages: Sequence[LLMMessage]
    tools: Sequence[Tool | ToolSchema] = ()
    tool_choice: Tool | Literal["auto", "required", "none"] = "auto"
    json_output: bool | type[BaseModel] | None = None
    extra_create_args: Mapping[str, Any] = field(default_factory=dict)
    cancellation_token: CancellationToken | None = None
    stream_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``create_stream`` beyond the interface's (e.g. OpenAI's ``include_usage``)."""
    response_format: Mapping[str, Any] | None = None
    """A JSON-schema ``response_format`` that the validation stage checks itself (see ``providers``)."""
    buffered: bool = False
    """Whether a layer outside holds a stream back until its final result (validation; the sanitiser, for JSON).

    The consumer then has nothing before the stream's end, so the layers inside treat a failure anywhere in
    it as :meth:`Layer.create` would a failed call: retried, or sent to a fallback, within the deadline.
    """

    def replace(self, **changes: Any) -> Request:
        """A copy of this request with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """The end of one provider attempt: a result, or the error it raised.

    Attributes:
        call: The logical call the attempt belongs to.
        attempt: 1 for the first attempt of the call, then 2, 3, ...
        client: The client that was called.
        request: What was sent.
        started_at: When the attempt started (UTC).
        latency: Seconds from start to result or error (for a stream, to its end).
        result: The ``CreateResult``, when the attempt produced one.
        error: The exception, when it failed or was cancelled; a :class:`DeadlineExceededError` (a
            ``TimeoutError``) for an attempt the retry policy's deadline cut short.
        provider_usage: The usage in the provider's own response (cached and reasoning
            tokens, the model that answered), where it could be read; for an Anthropic stream cut
            off before its end, the prompt's counts its start reported (``completion_tokens`` None);
            for a response that reported none (a stream not asked for it, or cut off), the model
            and id alone.
        event_id: The id of the usage row the attempt becomes, given when it started.
        received_chars: For an attempt that ended without a result: None if no answer had begun to
            arrive; else how many characters of text, and of tool-call names and arguments, it had
            streamed (0 when only a successful HTTP status, or chunks without either, had come). The
            provider then bills the attempt.
        on_wrapper: The client called is itself a wrapped client (a wrapped fallback, a wrapper
            wrapped again, or AutoGen's cache over one), not a provider client, and the attempt made a
            call of that wrapper, whose requests to its providers are attempts of their own, with
            events of their own. An observer counting provider requests, tokens or cost skips it.
            False for one that AutoGen's cache between the two answered: no call was made there,
            and this event (the outer wrapper's row, a cache hit) is its only record.
        cached: The result was served from a client-side cache (``CreateResult.cached``, as it was when the
            attempt ended): no request was sent. Read it here, not on the result later: AutoGen's
            ``ChatCompletionCache`` keeps the result it passed on, and sets ``cached`` on that same object
            when it answers another call with it.
    """

    call: Call
    attempt: int
    client: ChatCompletionClient
    request: Request
    started_at: datetime
    latency: float
    result: CreateResult | None = None
    error: BaseException | None = None
    provider_usage: ProviderUsage | None = None
    event_id: uuid.UUID | None = None
    received_chars: int | None = None
    on_wrapper: bool = False
    cached: bool = False

    @property
    def outcome(self) -> Outcome:
        """``"ok"``, ``"error"``, or ``"cancelled"``: the task was cancelled, the stream abandoned before its
        result, or the attempt otherwise stopped by what is not an ``Exception`` (``KeyboardInterrupt``)."""
        if self.error is None:
            return "ok"
        if not isinstance(self.error, Exception):  # as classify_error: a request to stop, not a failure
            return "cancelled"
        return "error"


AttemptObserver = Callable[[AttemptEvent], None]
"""Called synchronously, on the event loop, once per provider attempt; must be quick and must not raise."""


class CallObserver(Protocol):
    """Told when each logical call of any wrapped client starts and ends (see :func:`subscribe_calls`).

    Both methods run synchronously on the thread that runs the call, must be
    quick, and should not raise (one that does is logged). ``call_ended`` comes
    after the call's usage events were published (``accounting._feed``), and
    after every :class:`AttemptEvent` of the call (they are in ``call.events``
    until ``call_ended`` returns: keep what you need of them, not the call).
    The end of a call whose answer a wrapper around it judges (a nested
    wrapper's, a wrapped fallback's) is told once that wrapper's validation said
    whether it refused it, the verdict in ``call.findings`` (see
    :meth:`Call.after_verdict`).
    """

    def call_started(self, call: Call, pipeline: Pipeline) -> None:
        """``call`` starts on ``pipeline``, the wrapped client's outermost one (the primary's)."""

    def call_ended(self, call: Call, pipeline: Pipeline, error: BaseException | None) -> None:
        """``call`` ended: with an answer (``error`` is None), or with ``error``.

        A stream its consumer stopped reading ends with ``GeneratorExit``, or
        with None if the final ``CreateResult`` had been handed on.
        """


# While an attempt on a wrapped client runs: the call the attempt belongs to, and the accounting layer that
# records a call made there by a wrapper that records no usage, if any (see Pipeline.lender, Pipeline.borrows
# and Pipeline.records).
_loan: ContextVar[tuple[Layer | None, Call] | None] = ContextVar("autogen_reliability_loan", default=None)

attempt_feed: Subscribers[AttemptObserver] = Subscribers()
"""Every subscriber of :func:`subscribe_attempts`."""
call_feed: Subscribers[CallObserver] = Subscribers()
"""Every subscriber of :func:`subscribe_calls`."""


def subscribe_attempts(observer: AttemptObserver) -> Callable[[], None]:
    """Calls ``observer`` with the :class:`AttemptEvent` of every attempt of every wrapped client; returns the
    unsubscriber.

    It is called after the wrapper's own ``on_attempt`` observers. One that raises is logged, and stays subscribed.
    """
    return attempt_feed.subscribe(observer)


def subscribe_calls(observer: CallObserver) -> Callable[[], None]:
    """Tells ``observer`` of the start and the end of every logical call that starts from now on; returns the
    unsubscriber.

    A call is told to the observers subscribed when it started, and only to them:
    each gets the end of every call whose start it got, even once unsubscribed.
    """
    return call_feed.subscribe(observer)


class Layer:
    """A stage of the pipeline. The defaults pass the request straight through.

    Subclasses override :meth:`create` and/or :meth:`create_stream`; each gets the
    request and ``call_next``, the rest of the chain, which they may call zero or
    more times.
    """

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        """Handle one non-streaming call."""
        return await call_next(request)

    def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        """Handle one streaming call; yields ``str`` chunks, then one ``CreateResult``."""
        return call_next(request)


class Pipeline:
    """The layers of one wrapped client, composed once, ending in the attempt on ``client``."""

    def __init__(
        self,
        client: ChatCompletionClient,
        layers: Sequence[Layer] = (),
        observers: Sequence[AttemptObserver] = (),
        *,
        on_wrapper: bool = False,
        lender: Layer | None = None,
        borrows: bool = False,
        primary: bool = False,
        untapped: bool = False,
    ) -> None:
        self.client = client
        self.untapped = untapped
        """Whether the usage tap is still to be installed on ``client``: a wrapper that records no usage
        installs it only once an observer of the process reads its attempts (metrics, spans: see
        :meth:`_tap_for_observers`), so that it pays nothing for a response it never reads."""
        self.on_wrapper = on_wrapper
        """Whether ``client`` is a wrapped client, not a provider client (see :attr:`AttemptEvent.on_wrapper`)."""
        self.lender = lender
        """On a wrapped client that records no usage, the accounting layer of the wrapper around it that does:
        the calls an attempt makes there record their provider attempts through it (see :attr:`borrows`)."""
        self.borrows = borrows
        """Whether this wrapper records no usage of its own: a call of it made by an attempt of a wrapper that
        lends it its accounting (:attr:`lender`) goes through that layer first, so each of its provider
        requests is a row of that wrapper's ledger. A call made otherwise pays one ContextVar read."""
        self.primary = primary
        """Whether this is a wrapper's own pipeline (not a fallback's inside it): a call of it made by an attempt
        of another wrapper marks that attempt as one that made a call here (see :meth:`_made_inside`), which a
        call answered by AutoGen's cache between the two is not. One ContextVar read per call."""
        self.layers = tuple(layers)
        """The layers, outermost first."""
        self._observers = tuple(observers)
        # On a wrapped client the attempt hands the call's attribution down (chosen here: a provider
        # client's attempt pays nothing for it).
        create: CreateHandler = self._attempt_create_on_wrapper if on_wrapper else self._attempt_create
        stream: StreamHandler = self._attempt_stream_on_wrapper if on_wrapper else self._attempt_stream
        for layer in reversed(layers):
            create = partial(layer.create, call_next=create)
            stream = partial(layer.create_stream, call_next=stream)
        self._create: CreateHandler = create
        self._create_stream: StreamHandler = stream

    def create(self, request: Request) -> Awaitable[CreateResult]:
        """Runs ``request`` through the layers to the attempt(s); the first pipeline of a call announces it.

        Not a coroutine function itself: with no call observer subscribed, the
        call awaits the first layer directly, without a frame of ours around it.
        """
        create = self._create
        if self.primary and (loan := _loan.get()) is not None:
            lender = self._made_inside(request.call, loan)
            if lender is not None:
                create = partial(lender.create, call_next=create)
        observers = call_feed.current
        if observers and request.call.observers is None:
            return self._observed_create(request, observers, create)
        return create(request)

    def create_stream(self, request: Request) -> AsyncGenerator[StreamItem, None]:
        """Streams ``request`` through the layers; the first pipeline of a call announces it."""
        stream = self._create_stream
        if self.primary and (loan := _loan.get()) is not None:
            lender = self._made_inside(request.call, loan)
            if lender is not None:
                stream = partial(lender.create_stream, call_next=stream)
        observers = call_feed.current
        if observers and request.call.observers is None:
            return self._observed_stream(request, observers, stream)
        return stream(request)

    def _made_inside(self, call: Call, loan: tuple[Layer | None, Call]) -> Layer | None:
        """``call`` is made by the attempt of ``loan``'s call running now, on this wrapper (or on AutoGen's cache
        over it): that attempt has no row, as the requests of ``call`` have theirs. Returns the accounting layer
        that records them when this wrapper records no usage (``call`` borrows it), else None."""
        layer, outer = loan
        if outer.recorded_inside is None:
            outer.recorded_inside = set()
        # The attempt running now (a call's attempts run one at a time), whether or not either wrapper records:
        # its event is one on a wrapper (AttemptEvent.on_wrapper), which observers counting requests skip.
        outer.recorded_inside.add(outer.attempts)
        call.made_by = (outer, outer.attempts)
        if not self.borrows or layer is None:
            return None  # recorded here, or by no one
        call.borrowed = layer
        return layer

    async def _observed_create(
        self, request: Request, observers: tuple[CallObserver, ...], create: CreateHandler
    ) -> CreateResult:
        call = request.call
        call.observers = observers
        _call_started(observers, call, self)
        try:
            result = await create(request)
        except BaseException as error:
            _call_ended(observers, call, self, error)
            call.release()
            raise
        if call.made_by is None or not call.after_verdict(partial(_answered, observers, call, self)):
            _answered(observers, call, self)
        return result

    async def _observed_stream(
        self, request: Request, observers: tuple[CallObserver, ...], create_stream: StreamHandler
    ) -> AsyncGenerator[StreamItem, None]:
        call = request.call
        call.observers = observers
        _call_started(observers, call, self)
        answered = False
        error: BaseException | None = None
        try:
            # aclosing: the layers inside (accounting's rows) finish before the observers hear of the end.
            async with aclosing(create_stream(request)) as stream:
                async for item in stream:
                    if isinstance(item, CreateResult):
                        answered = True
                    yield item
        except BaseException as exc:
            # As for an attempt: a consumer that stops reading after the final result has had its answer.
            error = None if isinstance(exc, GeneratorExit) and answered else exc
            raise
        finally:
            if (
                error is not None
                or call.made_by is None
                or not call.after_verdict(partial(_answered, observers, call, self))
            ):
                _call_ended(observers, call, self, error)
                call.release()

    def _tap_for_observers(self, request: Request) -> None:
        """Installs the usage tap on ``client`` if an observer of the process sees this attempt.

        AutoGen's ``RequestUsage`` drops the cached and reasoning tokens, its ``CreateResult`` has no model, and
        its Anthropic client counts the prompt without the tokens read from or written to the cache: metrics
        and spans of a wrapper that records no usage read those in the provider's response, as rows do.
        """
        if attempt_feed.current or request.call.observers:
            attach_usage_tap(innermost(self.client))
            self.untapped = False

    async def _attempt_create(self, request: Request) -> CreateResult:
        if self.untapped:
            self._tap_for_observers(request)
        attempt = _Attempt(self, request)
        arguments = _provider_arguments(self.client, request, streaming=False)
        # What capture_provider_usage() does, without a context manager of its own: this runs for every call. A
        # coroutine runs in one context from start to end, so the token is always reset where it was set.
        slot = new_usage_slot()
        token = CURRENT_SLOT.set(slot)
        try:
            try:
                result = await self.client.create(request.messages, **arguments)
            except BaseException as exc:
                # AutoGen fails on a 200 whose body is an error (TypeError: no choices) or no JSON object at all
                # (AttributeError: the SDK handed it a str): the error is the provider's.
                error = self._error_in_body(slot, stream=False) if isinstance(exc, Exception) else None
                received = None if _refused(error) else _received(slot, answered=False, chars=0)
                attempt.finish(None, error or exc, _usage_of(slot), received)
                if error is not None:
                    raise error from exc
                raise
        finally:
            CURRENT_SLOT.reset(token)
        if slot.body_error is not None and result.finish_reason == "unknown":
            # An error beside a choice whose finish reason AutoGen does not know (OpenRouter's "error": the
            # generation failed part-way): what came is no answer; the error is the provider's.
            error = self._error_in_body(slot, stream=False)
            if error is not None:
                attempt.finish(None, error, _usage_of(slot), _received(slot, answered=False, chars=0))
                raise error
        attempt.finish(result, None, _usage_of(slot))
        return result

    def _error_in_body(
        self, slot: UsageSlot, *, stream: bool, finish_reason: str | None = None
    ) -> ProviderResponseError | TruncatedStreamError | None:
        """The error a provider sent in place of a completion, with a successful status, if the usage tap saw one:
        an error object, or a body that is no completion at all (not a JSON object; for a stream, no event). For
        a stream whose result's finish reason is ``finish_reason``: one whose body ended before its answer did.

        Not on a wrapped client: the slot holds its provider's responses too, which that wrapper judged.
        """
        status = slot.status
        if self.on_wrapper or status is None:
            return None
        if slot.body_error is not None:
            return redacted_error(ProviderResponseError(status, slot.body_error))
        shape = slot.body_shape  # None unless a successful body was read to its end
        if shape is not None and shape != ("events" if stream else "completion"):
            return MalformedResponseError(status, shape, stream=stream)
        if slot.stream_cut and finish_reason == "unknown":
            # No finish reason, no [DONE]: AutoGen's "unknown" is what arrived before the body ended, not an answer.
            return TruncatedStreamError(status)
        return None

    async def _attempt_stream(self, request: Request) -> AsyncGenerator[StreamItem, None]:
        if self.untapped:
            self._tap_for_observers(request)
        attempt = _Attempt(self, request)
        result: CreateResult | None = None
        stream = self.client.create_stream(
            request.messages, **_provider_arguments(self.client, request, streaming=True)
        )
        # The request goes out on the first item, so the slot must be current while the inner stream
        # works, but only then: it is set around each step, never held across our own yield. The consumer
        # may run each step in a task of its own (asyncio.wait_for(anext(...))), close us from another task,
        # or leave that to the garbage collector, and a ContextVar token resets only in the context that set it.
        slot = new_usage_slot()
        # Of text streamed so far: with the tool calls the usage tap counts (see _received), what a failed or
        # abandoned stream's completion is estimated from.
        chars = 0
        answered = False
        try:
            async with aclosing(stream):
                while True:
                    # What anext_in_slot() does, without a coroutine of its own: this runs for every chunk.
                    token = CURRENT_SLOT.set(slot)
                    try:
                        item = await anext(stream)
                    except StopAsyncIteration:
                        break
                    finally:
                        CURRENT_SLOT.reset(token)
                    if isinstance(item, CreateResult):
                        in_body = self._error_in_body(slot, stream=True, finish_reason=item.finish_reason)
                        if in_body is not None:
                            # A stream answered with a JSON error body, or anything else without an event (a
                            # proxy's HTML page, a completion): the SDK finds no event in it, and AutoGen ends the
                            # stream with an empty result, nothing handed on before it: a failed attempt. Or events
                            # cut off before the answer ended, which AutoGen ends with what arrived: failed too
                            # (retried if nothing was handed on).
                            raise in_body
                        result = item
                    else:
                        chars += len(item)
                    answered = True
                    yield item
        except BaseException as exc:
            # A consumer that stops reading after the final result has had a complete answer.
            error = None if isinstance(exc, GeneratorExit) and result is not None else exc
            received = None if _refused(error) else _received(slot, answered=answered, chars=chars)
            attempt.finish(result, error, _usage_of(slot), received)
            raise
        if result is None:
            attempt.finish(
                None,
                IncompleteStreamError("the stream ended without a final CreateResult"),
                _usage_of(slot),
                _received(slot, answered=answered, chars=chars),
            )
        else:
            attempt.finish(result, None, _usage_of(slot))

    async def _attempt_create_on_wrapper(self, request: Request) -> CreateResult:
        # The wrapped client records the provider requests of this attempt: they are made for our call.
        # One that records none records them through our accounting, if we have one (lent, or borrowed).
        call = request.call
        token = hand_down(call.attribution)
        loan = _loan.set((self.lender or call.borrowed, call))
        try:
            return await self._attempt_create(request)
        finally:
            _loan.reset(loan)
            take_back(token)

    async def _attempt_stream_on_wrapper(self, request: Request) -> AsyncGenerator[StreamItem, None]:
        # As for create, around each step only (the wrapped client, or AutoGen's cache over it, may start
        # its call on the first step), never across our own yield: see _attempt_stream.
        call = request.call
        attribution = call.attribution
        lent = (self.lender or call.borrowed, call)
        async with aclosing(self._attempt_stream(request)) as stream:
            while True:
                token = hand_down(attribution)
                loan = _loan.set(lent)
                try:
                    item = await anext(stream)
                except StopAsyncIteration:
                    break
                finally:
                    _loan.reset(loan)
                    take_back(token)
                yield item

    def emit(self, event: AttemptEvent) -> None:
        """Hand ``event`` to every observer, then to the feed's; one that raises is logged, never propagated."""
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                # Watching a call must never break it.
                log_failure(logger, "attempt observer %r failed", observer)
        subscribed = attempt_feed.current
        if subscribed:
            for observer in subscribed:
                try:
                    observer(event)
                except Exception:
                    log_failure(logger, "attempt observer %r failed", observer)


def _call_started(observers: tuple[CallObserver, ...], call: Call, pipeline: Pipeline) -> None:
    for observer in observers:
        try:
            observer.call_started(call, pipeline)
        except Exception:
            log_failure(logger, "call observer %r failed", observer)


def _call_ended(
    observers: tuple[CallObserver, ...], call: Call, pipeline: Pipeline, error: BaseException | None
) -> None:
    for observer in observers:
        try:
            observer.call_ended(call, pipeline, error)
        except Exception:
            log_failure(logger, "call observer %r failed", observer)


def _answered(observers: tuple[CallObserver, ...], call: Call, pipeline: Pipeline) -> None:
    """``call`` ended with an answer (judged, if a wrapper around it validates: see :meth:`Call.after_verdict`)."""
    _call_ended(observers, call, pipeline, None)
    call.release()


def _usage_of(slot: UsageSlot) -> ProviderUsage | None:
    """What the provider reported of an attempt: its usage; without one (a stream not asked for it, or cut off
    before its usage chunk), what it reported at the stream's start (Anthropic's message_start: the prompt's
    counts, the completion None), else the model that answered and the response's id, which every chunk names."""
    usage = slot.usage
    if usage is None:
        if slot.partial_usage is not None:
            return slot.partial_usage
        if slot.model is not None:
            return ProviderUsage(None, None, None, None, None, slot.model, slot.response_id)
    return usage


def _refused(error: BaseException | None) -> bool:
    """Whether ``error`` is an error object a provider sent with a successful status in place of any answer.

    It refused the request as the status it names would have (a 401, a 429, a 502 upstream): nothing was generated,
    so, as for that status, nothing is estimated (`_received` is None); usage the body reported still counts.
    """
    return isinstance(error, ProviderResponseError) and not isinstance(error, MalformedResponseError)


def _received(slot: UsageSlot, *, answered: bool, chars: int) -> int | None:
    """An :attr:`AttemptEvent.received_chars` if the provider had begun to answer, else None.

    It had if a chunk arrived, or the usage tap saw a successful HTTP status (a body cut off half-way, a stream
    whose first chunks carried no text): either way it took the request, and bills it. What it had sent is
    ``chars`` of text the stream yielded and the tool calls' names and arguments the tap counted on the wire:
    AutoGen yields nothing of a tool call until the stream's end, which a stream cut off never reaches.
    """
    status = slot.status
    if answered or (status is not None and 200 <= status < 300):
        return chars + slot.tool_call_chars
    return None


def _provider_arguments(client: ChatCompletionClient, request: Request, *, streaming: bool) -> dict[str, Any]:
    """What ``client`` is sent for ``request``, all but the messages (see ``providers``)."""
    return provider_arguments(
        client,
        tools=request.tools,
        tool_choice=request.tool_choice,
        json_output=request.json_output,
        extra_create_args=request.extra_create_args,
        cancellation_token=request.cancellation_token,
        response_format=request.response_format,
        streaming=streaming,
        stream_kwargs=request.stream_kwargs,
    )


class _Attempt:
    """Numbers one attempt of a call and times it until :meth:`finish` reports it (a :class:`StartedAttempt`)."""

    __slots__ = ("_start", "client", "event_id", "number", "pipeline", "request", "started_at")

    def __init__(self, pipeline: Pipeline, request: Request) -> None:
        call = request.call
        call.attempts += 1
        self.number = call.attempts
        self.pipeline = pipeline
        self.client = pipeline.client
        self.request = request
        self.event_id = time_ordered_uuid()  # now, so a row made before the attempt ends has the final row's id
        self.started_at = datetime.now(UTC)
        self._start = time.perf_counter()
        if call.tracker is not None:
            call.tracker.started(call, self)

    def finish(
        self,
        result: CreateResult | None,
        error: BaseException | None,
        usage: ProviderUsage | None,
        received_chars: int | None = None,
    ) -> None:
        latency = time.perf_counter() - self._start
        if error is not None and cut_by_deadline(error):
            error = DeadlineExceededError()  # the provider did not answer in time: a timeout, not the caller's cancel
        request = self.request
        call = request.call
        event = AttemptEvent(
            call,
            self.number,
            self.client,
            request,
            self.started_at,
            latency,
            result,
            error,
            usage,
            self.event_id,
            received_chars,
            # On a wrapped client, only if the attempt made a call of it (see Call.recorded_inside).
            self.pipeline.on_wrapper and call.recorded_inside is not None and self.number in call.recorded_inside,
            result is not None and result.cached,
        )
        call.events.append(event)
        if call.tracker is not None:
            call.tracker.finished(event)
        self.pipeline.emit(event)
