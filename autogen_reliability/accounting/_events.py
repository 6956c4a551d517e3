"""``UsageEvent``: one provider attempt, as it becomes a row of the usage ledger."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias

from .._ids import time_ordered_uuid

__all__ = [
    "ROW_FIELDS",
    "ROW_FIELDS_BEFORE_1H",
    "ROW_JSON_FIELDS",
    "Outcome",
    "UsageEvent",
    "UsageRow",
    "time_ordered_uuid",
]

Outcome = Literal["ok", "error", "invalid", "cancelled"]

UsageRow: TypeAlias = tuple[Any, ...]
"""A :class:`UsageEvent` as :meth:`UsageEvent.to_row` flattens it, for the recorder's queue and the store."""

_NO_TAGS: Mapping[str, str] = MappingProxyType({})
_NO_CHANGES: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One attempt that reached, or tried to reach, the provider.

    Attempts of one logical call share ``call_id``. Failed and re-asked attempts
    are events too: they cost money, and reports show that waste. Money is an
    integer count of nano-USD (10^-9 USD); ``None`` means *unpriced* (a model
    with no known price), never zero. Times are UTC.

    Attributes:
        event_id: Made by the client; unique in the store, so a replayed event is never counted twice.
        call_id: Shared by every attempt of one logical call.
        attempt: 1 for the first attempt of the call, then 2, 3, ...
        started_at: When the attempt started (UTC-aware).
        latency_ms: Milliseconds from start to result or error (for a stream, to its end).
        project, session, agent: The attribution of the call.
        tags: Free-form labels of the call.
        provider: ``"openai"``, ``"azure"``, ``"anthropic"``, ``"ollama"``, ... or None when unknown.
        model: The model asked for.
        response_model: The model the provider says answered.
        prompt_tokens, completion_tokens: As reported (0 for most failures), or estimated.
        cached_tokens: Prompt tokens read from the provider's cache, where reported.
        cache_write_tokens: Prompt tokens written to the provider's cache, where reported.
        cache_write_1h_tokens: Of ``cache_write_tokens``, those written with a 1-hour lifetime, where
            reported (Anthropic's, at twice the input price; the rest are 5-minute writes).
        reasoning_tokens: Completion tokens spent on reasoning, where reported.
        tokens_estimated: The token counts are an offline estimate (the provider reported none).
        cost_nanousd: Cost in nano-USD, rounded half-even once; None when unpriced.
        price_source: Where the price came from, e.g. ``"genai-prices 0.2.3"`` or ``"override"``; with
            ``"; priced as <model>"`` after it when the model asked for has no price and the one that answered
            (``response_model``) was priced instead.
        price_date: The date the applied price took effect, when known.
        outcome: ``ok``, ``error``, ``invalid`` (answered, but failed validation) or ``cancelled``.
        error_kind: The :class:`~autogen_reliability.ErrorKind` value of the error, if any.
        http_status: The HTTP status of a failed request, if any.
        error_message: The error text, secrets redacted, bounded in length.
        finish_reason: As reported by the provider client.
        streamed: The attempt was a stream.
        cache_hit: The answer came from a client-side cache (no provider request, no cost).
        sanitizer_changes: Counts per sanitiser category for the answer handed on.
        validation_errors: How many violations validation found in this attempt's answer.
        request_content: The request messages as JSON, truncated; only with ``capture_content=True``.
        response_content: The answer as text, truncated; only with ``capture_content=True``.
    """

    call_id: uuid.UUID
    attempt: int
    started_at: datetime
    latency_ms: float
    event_id: uuid.UUID = field(default_factory=time_ordered_uuid)
    project: str | None = None
    session: str | None = None
    agent: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _NO_TAGS)
    provider: str | None = None
    model: str | None = None
    response_model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    tokens_estimated: bool = False
    cost_nanousd: int | None = None
    price_source: str | None = None
    price_date: date | None = None
    outcome: Outcome = "ok"
    error_kind: str | None = None
    http_status: int | None = None
    error_message: str | None = None
    finish_reason: str | None = None
    streamed: bool = False
    cache_hit: bool = False
    sanitizer_changes: Mapping[str, int] = field(default_factory=lambda: _NO_CHANGES)
    validation_errors: int = 0
    request_content: str | None = None
    response_content: str | None = None

    def __post_init__(self) -> None:
        # A naive time would be read as local time somewhere and shift the row's day: refuse it here,
        # where the mistake is made, rather than in a batch write that would then fail forever.
        if self.started_at.tzinfo is None or self.started_at.utcoffset() is None:
            raise ValueError(f"started_at must be timezone-aware (UTC), got {self.started_at!r}")

    @property
    def day(self) -> date:
        """The UTC day of ``started_at`` (stored, so reports can group and index by it)."""
        return self.started_at.astimezone(UTC).date()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for the spool file); :meth:`from_json` reads it back."""
        data: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, uuid.UUID):
                value = str(value)
            elif isinstance(value, datetime | date):
                value = value.isoformat()
            elif isinstance(value, Mapping):
                value = dict(value)
            data[name] = value
        return data

    def to_row(self) -> UsageRow:
        """The event as a flat tuple in field order (:data:`ROW_FIELDS`); :meth:`from_row` reads it back.

        Ids become their 32 hex digits and ``tags`` / ``sanitizer_changes`` JSON
        text, so the tuple holds only strings, numbers, ``None`` and dates: none
        of them tracked by the garbage collector, and a tuple of untracked values
        is untracked after its first collection. That is why the recorder queues
        rows rather than events: events waiting in a queue (each with two UUIDs)
        are promoted to the collector's oldest generation and make it run full
        collections of the whole heap (50 ms and more in an application that
        imports AutoGen), while rows add nothing to its work.
        """
        return (
            self.call_id.hex,
            self.attempt,
            self.started_at,
            self.latency_ms,
            self.event_id.hex,
            self.project,
            self.session,
            self.agent,
            json_text(self.tags),
            self.provider,
            self.model,
            self.response_model,
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
            self.cache_write_1h_tokens,
            self.reasoning_tokens,
            self.tokens_estimated,
            self.cost_nanousd,
            self.price_source,
            self.price_date,
            self.outcome,
            self.error_kind,
            self.http_status,
            self.error_message,
            self.finish_reason,
            self.streamed,
            self.cache_hit,
            json_text(self.sanitizer_changes),
            self.validation_errors,
            self.request_content,
            self.response_content,
        )

    @classmethod
    def from_row(cls, row: UsageRow) -> UsageEvent:
        """The event :meth:`to_row` flattened."""
        values = dict(zip(ROW_FIELDS, row, strict=True))
        for name in ("event_id", "call_id"):
            values[name] = uuid.UUID(hex=values[name])
        for name in ROW_JSON_FIELDS:
            values[name] = json.loads(values[name])
        return cls(**values)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UsageEvent:
        """The event :meth:`to_json` wrote: its dict, as ``json.loads`` reads a spool line back.

        A line of ``autogen-reliability export`` reads back the same, parsed and without its
        ``cost_usd`` key. Text (the line itself) is refused with a ``TypeError`` that says so.
        """
        if not isinstance(data, Mapping):
            raise TypeError(
                f"UsageEvent.from_json takes the dict to_json makes (a line parsed with json.loads), "
                f"not {type(data).__name__}"
            )
        values = dict(data)
        for name in ("event_id", "call_id"):
            values[name] = uuid.UUID(values[name])
        values["started_at"] = datetime.fromisoformat(values["started_at"])
        if values.get("price_date") is not None:
            values["price_date"] = date.fromisoformat(values["price_date"])
        return cls(**values)


ROW_FIELDS: Final = tuple(UsageEvent.__dataclass_fields__)
"""The field names of :meth:`UsageEvent.to_row`'s tuple, in its order (the dataclass's)."""

ROW_FIELDS_BEFORE_1H: Final = tuple(name for name in ROW_FIELDS if name != "cache_write_1h_tokens")
"""The row's fields before ``cache_write_1h_tokens`` was added: what journals and in-flight tables that an
older version wrote hold (a spool line names its fields, and one without the field reads as None)."""

ROW_JSON_FIELDS: Final = ("tags", "sanitizer_changes")
"""The fields a row holds as JSON text."""

_EMPTY_JSON: Final = json.dumps({})


def json_text(mapping: Mapping[str, Any]) -> str:
    """A mapping as a row holds it (``tags``, ``sanitizer_changes``)."""
    # json.dumps with its default separators: the text SQLAlchemy's JSON type would store, byte for byte.
    return json.dumps(dict(mapping)) if mapping else _EMPTY_JSON
