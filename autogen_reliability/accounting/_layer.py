"""The accounting stage: every provider attempt of a call becomes a :class:`UsageEvent`.

It is the outermost layer, so it sees a call end however it ends (a result, an
error, a cancellation, a consumer that stopped reading a stream) and what the
inner stages learned about each attempt: its tokens (as AutoGen reported them,
completed by the raw usage the provider sent), whether validation found its
answer invalid, what the sanitiser changed. The events are priced and handed to
the recorder, which never blocks.

A process killed while calls run would leave no row for requests the provider
received (and bills): the rows are made when the call ends. So, where the
recorder keeps a journal, each attempt also has a row in the recorder's
in-flight table (see ``_journal.py``) from the moment it starts: a provisional
one (``cancelled``, ``error_kind`` ``cancelled``, the prompt's tokens estimated
and priced) until it ends, then its real one, until the call's rows are
recorded. The next process replays the table of a killed one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import partial
from typing import Any, Final

from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage

from .._pipeline import (
    AttemptEvent,
    Call,
    CreateHandler,
    DeadlineExceededError,
    Layer,
    Request,
    StartedAttempt,
    StreamHandler,
    StreamItem,
)
from .._redaction import message_of, redact
from ..providers import AskedModels, read_timed_out
from ..retry._classify import ErrorKind, classify_error, http_status
from . import _feed
from ._cost import MAX_TOKENS, Cost
from ._events import ROW_FIELDS, Outcome, UsageEvent, UsageRow, json_text
from ._journal import InFlightTable
from ._price_table import STANDARD_TIERS, PricingTable, TokenUsage
from ._recorder import UsageRecorder

__all__ = ["AccountingLayer"]

logger = logging.getLogger("autogen_reliability")

_ERROR_MESSAGE_LIMIT: Final = 1000
_MOST_UNPRICED_SAID: Final = 1024  # kinds of pricing failure a layer remembers having said (then it says no more)
_CHARS_PER_TOKEN: Final = 4  # the usual rule of thumb for English text; only for providers that report nothing
_INTERRUPTED: Final = "the process ended before the attempt did"
# An attempt's provisional row before its identity is filled in: in flight, its tokens an estimate.
_PROVISIONAL: Final = list(
    UsageEvent(
        call_id=uuid.UUID(int=0),
        attempt=1,
        started_at=datetime(2000, 1, 1, tzinfo=UTC),
        latency_ms=0.0,
        tokens_estimated=True,
        outcome="cancelled",
        error_kind=ErrorKind.CANCELLED.value,
        error_message=_INTERRUPTED,
    ).to_row()
)
(
    _CALL_ID,
    _ATTEMPT,
    _STARTED_AT,
    _EVENT_ID,
    _PROJECT,
    _SESSION,
    _AGENT,
    _TAGS,
    _PROVIDER,
    _MODEL,
    _PROMPT,
    _COST,
    _SOURCE,
    _PRICE_DATE,
    _STREAMED,
) = (
    ROW_FIELDS.index(name)
    for name in (
        "call_id",
        "attempt",
        "started_at",
        "event_id",
        "project",
        "session",
        "agent",
        "tags",
        "provider",
        "model",
        "prompt_tokens",
        "cost_nanousd",
        "price_source",
        "price_date",
        "streamed",
    )
)


class AccountingLayer(Layer):
    """Records one usage event per provider attempt when a call ends."""

    def __init__(
        self,
        recorder: UsageRecorder,
        pricing: PricingTable,
        *,
        capture_content: bool = False,
        content_limit: int = 10_000,
        recorded_elsewhere: tuple[ChatCompletionClient, ...] = (),
        lent_to: tuple[ChatCompletionClient, ...] = (),
    ) -> None:
        self.recorder = recorder
        # Wrapped clients (a wrapper nested in this one, a wrapped fallback) that record their own provider
        # attempts: an attempt on one of them is a call of theirs, not a provider attempt, and has no row here
        # (nor an in-flight one), unless it made no call there: AutoGen's cache between the two answered it.
        self.recorded_elsewhere = recorded_elsewhere
        # Wrapped clients that record none: the calls an attempt on one of them makes are recorded through
        # this layer (its pipeline is their lender, see _pipeline.Pipeline.lender), a row per provider request
        # and none for the attempt; an attempt that made no call there (AutoGen's cache answered) keeps its row.
        self.lent_to = lent_to
        self.pricing = pricing
        self.capture_content = capture_content
        self.content_limit = content_limit
        # id(client) -> the provider and model of its requests (the clients live as long as the layer)
        self._clients: dict[int, AskedModels] = {}
        self._prompt_rates: dict[tuple[str, str | None, date], _PromptRate | None] = {}
        # (model, provider, tier, error class) of pricing failures said in the log: a table that fails on one
        # kind of answer fails on every one, and each was an ERROR with its traceback.
        self._unpriced_said: set[tuple[str, str | None, str | None, type[BaseException]]] = set()

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        self._track(request.call)
        try:
            return await call_next(request)
        finally:
            self._ended(request.call)

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        self._track(request.call)
        try:
            async with aclosing(call_next(request)) as stream:
                async for item in stream:
                    yield item
        finally:
            self._ended(request.call)

    def _ended(self, call: Call) -> None:
        # An answer that a wrapper around this one judges (this wrapper nested in it, or its fallback) may be
        # refused there: the rows wait for its verdict (their in-flight rows stay in the journal meanwhile). The
        # events are held as they are: the pipeline lets go of them once the call's end is told, after the rows.
        if call.made_by is not None and call.after_verdict(partial(self._judged, call, call.events)):
            return
        self._record(call)
        if call.observers is None:  # no call observer reads the events after us (the pipeline releases them then)
            call.release()

    def _judged(self, call: Call, events: list[AttemptEvent]) -> None:
        """Records ``call``'s rows once the wrapper around it judged its answer (the verdict is in its findings)."""
        self._record(call, events)
        if call.observers is None:
            call.release()

    def records_itself(self, client: ChatCompletionClient) -> bool:
        """Whether ``client`` is one of :attr:`recorded_elsewhere`."""
        return any(client is other for other in self.recorded_elsewhere)

    def _track(self, call: Call) -> None:
        table = self.recorder.in_flight
        if table is not None and call.tracker is None:
            call.tracker = _InFlight(self, table)

    def _record(self, call: Call, events: list[AttemptEvent] | None = None) -> None:
        tracker = call.tracker if isinstance(call.tracker, _InFlight) else None
        for attempt in call.events if events is None else events:
            if attempt.on_wrapper:
                # A wrapped client made a call of this attempt: its requests are rows already, its own or (one
                # that records nothing) recorded through us. One AutoGen's cache answered made none: its row.
                continue
            try:
                ended = tracker.ended.pop(attempt.attempt, None) if tracker is not None else None
                event = self._event(call, attempt) if ended is None else self._final(call, attempt, ended)
            except Exception:
                # An attempt we cannot make sense of must cost the caller neither its answer nor the row.
                logger.exception("could not make the usage row of attempt %d of call %s", attempt.attempt, call.call_id)
                event = UsageEvent(**_identity(call, attempt), outcome=attempt.outcome)
            if _feed.listeners.current:
                # Budgets and cost limits of this process count it before the recorder has it: once the recorder
                # has it, its thread may write it, and a budget read the sum holding it, before the event was
                # counted as not written yet; it would be counted twice until the budget's next read.
                _feed.publish(event, self.recorder)
            self.recorder.record(event)
        # Only now, with every row in the journal: there is never a moment when an attempt has neither.
        if tracker is not None:
            tracker.release()

    def _provisional(self, call: Call, attempt: StartedAttempt) -> UsageRow:
        """The row of an attempt that has not ended: what the next process records if this one is killed.

        Made as a row straight away (as :meth:`UsageEvent.to_row` would flatten the event): making the event
        would cost as much again as pricing it, on every attempt.
        """
        provider, model = self._describe(attempt.client, attempt.request.extra_create_args)
        prompt = _estimate(attempt.request.messages)
        row = _PROVISIONAL.copy()
        if model:
            try:
                rate = self._prompt_rate(model, provider, attempt.started_at)
            except Exception:
                rate = None  # priced when the attempt ends; unpriced only if the process dies first
            if rate is not None:
                nanousd = (rate.usd_per_token * prompt * _NANO).to_integral_value(ROUND_HALF_EVEN)
                row[_COST], row[_SOURCE], row[_PRICE_DATE] = int(nanousd), rate.source, rate.effective_from
        attribution = call.attribution
        row[_CALL_ID] = call.call_id.hex
        row[_ATTEMPT] = attempt.number
        row[_STARTED_AT] = attempt.started_at
        row[_EVENT_ID] = attempt.event_id.hex
        row[_PROJECT], row[_SESSION], row[_AGENT] = attribution.project, attribution.session, attribution.agent
        row[_TAGS] = json_text(attribution.tags)
        row[_PROVIDER], row[_MODEL] = provider, model
        row[_PROMPT] = prompt
        row[_STREAMED] = call.streamed
        return tuple(row)

    def _prompt_rate(self, model: str, provider: str | None, at: datetime) -> _PromptRate | None:
        """The price of one prompt token of ``model`` on ``at``'s day, looked up once a day per model.

        Only for provisional rows, whose prompt tokens are an estimate already: a full price lookup
        costs ~10 µs (35-65 µs of loop CPU inside a whole call), which every attempt would pay for a
        row that is kept only if the process dies.
        A price that changes with the prompt's size (a long-context tier) is taken at its first tier.
        """
        key = (model, provider, at.date())
        if key in self._prompt_rates:
            return self._prompt_rates[key]
        cost = self.pricing.price(
            model, provider, usage=TokenUsage(prompt_tokens=_RATE_TOKENS, completion_tokens=0), at=at
        )
        rate = None if cost is None else _PromptRate(cost.usd / _RATE_TOKENS, cost.source, cost.effective_from)
        if len(self._prompt_rates) >= _MAX_PROMPT_RATES:
            self._prompt_rates.clear()
        self._prompt_rates[key] = rate
        return rate

    def _final(self, call: Call, attempt: AttemptEvent, ended: UsageEvent) -> UsageEvent:
        """The event :meth:`_event` makes now, from the one it made when the attempt ended (not priced again).

        Only validation's verdict, the sanitiser's changes and the captured content can have changed since.
        """
        violations = call.findings.violations(attempt.attempt)
        final = attempt.result is not None and attempt.attempt == call.attempts
        changes = call.findings.sanitizer_changes if final else {}
        if not violations and not changes and not self.capture_content:
            return ended
        result = attempt.result
        return dataclasses.replace(
            ended,
            outcome="invalid" if ended.outcome == "ok" and violations else ended.outcome,
            validation_errors=violations,
            sanitizer_changes=changes,
            request_content=self._content_of(attempt.request.messages) if self.capture_content else None,
            response_content=self._answer_of(result) if self.capture_content and result is not None else None,
        )

    def _price(
        self,
        call: Call,
        attempt: AttemptEvent,
        *,
        model: str,
        provider: str | None,
        usage: dict[str, Any],
        tier: str | None,
    ) -> Cost | None:
        """The cost of an attempt's tokens; None when unpriced, or when pricing failed (said once per kind)."""
        try:
            # Asked about a tier only for one that is not the standard: a table of one's own written before
            # tiers were priced (its price() takes no service_tier) still prices every standard answer.
            tiered = {} if tier in STANDARD_TIERS else {"service_tier": tier}
            return self.pricing.price(model, provider, usage=TokenUsage(**usage), at=attempt.started_at, **tiered)
        except Exception as error:
            # Usage we cannot price must cost the row nothing but its price: its tokens, model and
            # error stay as the attempt had them.
            said = (model, provider, tier, type(error))
            if said not in self._unpriced_said and len(self._unpriced_said) < _MOST_UNPRICED_SAID:
                self._unpriced_said.add(said)
                logger.exception(
                    "could not price attempt %d of call %s (%s at %s, service tier %r); recording it unpriced, "
                    "and the next such attempts too without saying it again",
                    attempt.attempt,
                    call.call_id,
                    model,
                    provider,
                    tier,
                    extra={"model": model, "provider": provider},
                )
            return None

    def _price_as_answered(
        self,
        call: Call,
        attempt: AttemptEvent,
        *,
        model: str,
        answered: str,
        provider: str | None,
        usage: dict[str, Any],
        tier: str | None,
    ) -> Cost | None:
        """The cost of an attempt on a ``model`` the table has no price of, priced as the model that ``answered``.

        A name the table does not know (an Azure deployment's, a gateway's alias) bills as the model the provider
        says answered, and the source says so. One the table does not know either stays unpriced; a name it knows
        but cannot price (before its override's first date, at a tier) is never priced as another model.
        """
        if answered.lower() == model.lower():
            return None
        try:
            if self.pricing.knows(model, provider):
                return None
        except Exception:  # a table of one's own that cannot say: the row stays unpriced, as it priced it
            logger.debug("could not ask the pricing table whether it knows %s", model, exc_info=True)
            return None
        price = self._price(call, attempt, model=answered, provider=provider, usage=usage, tier=tier)
        return None if price is None else dataclasses.replace(price, source=f"{price.source}; priced as {answered}")

    def _event(self, call: Call, attempt: AttemptEvent, *, content: bool = True) -> UsageEvent:
        provider, model = self._describe(attempt.client, attempt.request.extra_create_args)
        result, error, raw = attempt.result, attempt.error, attempt.provider_usage
        prompt: int | None = 0
        completion: int | None = 0
        if result is not None:
            prompt, completion = _count(result.usage.prompt_tokens), _count(result.usage.completion_tokens)
        if raw is not None:
            prompt = raw.prompt_tokens if raw.prompt_tokens is not None else prompt
            completion = raw.completion_tokens if raw.completion_tokens is not None else completion
        estimated = False
        if result is not None and not attempt.cached:
            # The provider reported nothing (some streams), or no count (2**64 - 1, a provider's unsigned -1,
            # read as a count by AutoGen): estimate offline what is missing, and say so.
            nothing = prompt == 0 and completion == 0
            if nothing or prompt is None:
                prompt, estimated = _estimate(attempt.request.messages), True
            if nothing or completion is None:
                completion, estimated = _estimate_result(result), True
        elif (
            result is None
            and (
                attempt.outcome == "cancelled"
                or isinstance(error, DeadlineExceededError)
                or attempt.received_chars is not None
                or read_timed_out(error)
            )
            and (raw is None or raw.prompt_tokens is None or raw.completion_tokens is None)
        ):
            # Cancelled (a stream abandoned), cut short by the retry deadline, timed out by the SDK waiting for
            # the answer (as the deadline would have cut it), or failed once the provider had begun to answer (a
            # stream cut off half-way), without the provider's whole usage, though it got the request and bills
            # it. The prompt's tokens as the provider counted them at the stream's start (Anthropic's
            # message_start), else the estimate its in-flight row held; the completion's estimated from the text
            # and the tool calls' names and arguments that came.
            prompt = _estimate(attempt.request.messages) if raw is None or raw.prompt_tokens is None else prompt
            estimated = True
            if attempt.received_chars and (raw is None or raw.completion_tokens is None):  # else the provider's
                completion = max(1, attempt.received_chars // _CHARS_PER_TOKEN)
        prompt, completion = prompt or 0, completion or 0
        cached = raw.cached_tokens if raw is not None else None
        cache_write = raw.cache_write_tokens if raw is not None else None
        cache_write_1h = raw.cache_write_1h_tokens if raw is not None else None
        outcome: Outcome = attempt.outcome
        violations = call.findings.violations(attempt.attempt)
        if outcome == "ok" and violations:
            outcome = "invalid"
        cost: int | None = None
        source: str | None = None
        price_date: date | None = None
        if attempt.cached:
            cost, source = 0, "cache"
        elif model:
            # Cached (and cache-write) tokens are part of prompt_tokens; a provider that reports more of them
            # than the prompt had (cached_tokens 150 of 100) is priced as if the whole prompt were: never more
            # tokens than were sent. The row keeps the numbers as the provider sent them.
            # So are 1-hour cache writes of the cache writes.
            cached_priced = min(cached or 0, prompt)
            write_priced = min(cache_write or 0, prompt - cached_priced)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cached_tokens": cached_priced,
                "cache_write_tokens": write_priced,
                "latency_seconds": attempt.latency,
                "cache_write_1h_tokens": min(cache_write_1h or 0, write_priced),
                # Audio tokens are part of the prompt and completion (OpenAI's details), priced at an audio price.
                "input_audio_tokens": min(raw.input_audio_tokens or 0, prompt) if raw is not None else 0,
                "output_audio_tokens": min(raw.output_audio_tokens or 0, completion) if raw is not None else 0,
            }
            tier = raw.service_tier if raw is not None else None
            price = self._price(call, attempt, model=model, provider=provider, usage=usage, tier=tier)
            if price is None and raw is not None and raw.model:
                price = self._price_as_answered(
                    call, attempt, model=model, answered=raw.model, provider=provider, usage=usage, tier=tier
                )
            if price is not None:
                cost, source, price_date = price.nanousd, price.source, price.effective_from
        final = result is not None and attempt.attempt == call.attempts
        return UsageEvent(
            **_identity(call, attempt),
            provider=provider,
            model=model,
            response_model=raw.model if raw is not None else None,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=cache_write_1h,
            reasoning_tokens=raw.reasoning_tokens if raw is not None else None,
            tokens_estimated=estimated,
            cost_nanousd=cost,
            price_source=source,
            price_date=price_date,
            outcome=outcome,
            error_kind=classify_error(error).value if error is not None else None,
            http_status=http_status(error) if error is not None else None,
            error_message=redact(message_of(error), limit=_ERROR_MESSAGE_LIMIT) if error is not None else None,
            finish_reason=result.finish_reason if result is not None else None,
            cache_hit=attempt.cached,
            sanitizer_changes=call.findings.sanitizer_changes if final else {},
            validation_errors=violations,
            request_content=self._content_of(attempt.request.messages) if content and self.capture_content else None,
            response_content=(
                self._answer_of(result) if content and self.capture_content and result is not None else None
            ),
        )

    def _describe(
        self, client: ChatCompletionClient, extra_create_args: Mapping[str, Any]
    ) -> tuple[str | None, str | None]:
        """The provider and model an attempt on ``client`` with these ``extra_create_args`` asks for.

        AutoGen's clients send extra_create_args over their create args: a "model" there is the model the
        request asks for, and bills (the provider answers as that model).
        """
        described = self._clients.get(id(client))
        if described is None:
            described = self._clients[id(client)] = AskedModels(client)
        return described.own if not extra_create_args else described.of(client, extra_create_args)

    def _content_of(self, messages: object) -> str:
        dumped = [message.model_dump(mode="json") for message in messages]  # type: ignore[attr-defined]
        return json.dumps(dumped, ensure_ascii=False)[: self.content_limit]

    def _answer_of(self, result: CreateResult) -> str:
        if isinstance(result.content, str):
            return result.content[: self.content_limit]
        calls = [{"id": call.id, "name": call.name, "arguments": call.arguments} for call in result.content]
        return json.dumps(calls, ensure_ascii=False)[: self.content_limit]


_NANO: Final = Decimal(10**9)
_RATE_TOKENS: Final = 1000  # priced at this size: inside every model's first tier
_MAX_PROMPT_RATES: Final = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class _PromptRate:
    usd_per_token: Decimal
    source: str
    effective_from: date | None


class _InFlight:
    """One call's attempts in the recorder's in-flight table: a row from each attempt's start to the call's end."""

    __slots__ = ("_layer", "_slots", "_table", "ended")

    def __init__(self, layer: AccountingLayer, table: InFlightTable) -> None:
        self._layer = layer
        self._table = table
        self._slots: dict[int, list[int]] = {}
        self.ended: dict[int, UsageEvent] = {}  # attempt -> its event as made when it ended (the call reuses it)

    def started(self, call: Call, attempt: StartedAttempt) -> None:
        if self._layer.recorded_elsewhere and self._layer.records_itself(attempt.client):
            return  # the wrapped client holds its own attempts' rows
        if self._layer.lent_to and any(attempt.client is client for client in self._layer.lent_to):
            return  # a wrapped client that records nothing: its calls' attempts hold rows of ours (see lent_to)
        try:
            slot = self._table.hold(self._layer._provisional(call, attempt))
        except Exception:  # the attempt goes on; its row is made when the call ends, as without a table
            logger.exception("could not hold an in-flight row for attempt %d of call %s", attempt.number, call.call_id)
            return
        if slot is not None:
            self._slots[attempt.number] = slot

    def finished(self, event: AttemptEvent) -> None:
        slot = self._slots.get(event.attempt)
        if slot is None:
            return
        try:
            # As the call's end will record it, but before validation has judged the answer: "ok" for an answer.
            ended = self._layer._event(event.call, event, content=False)
            self.ended[event.attempt] = ended
            self._table.update(slot, ended.to_row())
        except Exception:
            logger.debug("could not update the in-flight row of attempt %d", event.attempt, exc_info=True)

    def release(self) -> None:
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            self._table.release(slot)


def _identity(call: Call, attempt: AttemptEvent) -> dict[str, Any]:
    """The fields of a usage event that say which attempt of which call it is, and for whom."""
    identity = {
        "call_id": call.call_id,
        "attempt": attempt.attempt,
        "started_at": attempt.started_at,
        "latency_ms": attempt.latency * 1000.0,
        "project": call.attribution.project,
        "session": call.attribution.session,
        "agent": call.attribution.agent,
        "tags": call.attribution.tags,
        "streamed": call.streamed,
    }
    if attempt.event_id is not None:  # given when the attempt started: its in-flight row has the same id
        identity["event_id"] = attempt.event_id
    return identity


def _count(value: object) -> int | None:
    """A token count AutoGen reported, or None for one no ledger holds (as the provider tap reads the wire).

    AutoGen reports what the SDK could not read as an int as it came (``1000.5``, ``"n/a"``): no count either,
    where the row would hold a value its INTEGER column refuses. A whole float (``12.0``) is that count.
    """
    if type(value) is int:  # the common case first, with no call made; not a bool, an int subclass
        return value if 0 <= value <= MAX_TOKENS else None
    if isinstance(value, float) and value.is_integer():
        return _count(int(value))
    return None


def _text_length(messages: object) -> int:
    total = 0
    for message in messages:  # type: ignore[attr-defined]
        content = message.content
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(str(getattr(part, "content", part))) for part in content)
    return total


def _estimate(messages: list[LLMMessage] | object) -> int:
    return max(1, _text_length(messages) // _CHARS_PER_TOKEN)


def _estimate_result(result: CreateResult) -> int:
    if isinstance(result.content, str):
        return max(1, len(result.content) // _CHARS_PER_TOKEN) if result.content else 0
    return max(1, sum(len(call.arguments) + len(call.name) for call in result.content) // _CHARS_PER_TOKEN)
