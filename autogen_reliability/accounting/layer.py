"""The accounting stage: every provider attempt of a call becomes a :class:`UsageEvent`.

It is the outermost layer, so it sees a call end however it ends (a result, an
error, a cancellation, a consumer that stopped reading a stream) and what the
inner stages learned about each attempt: its tokens (as AutoGen reported them,
completed by the raw usage the provider sent), whether validation found its
answer invalid, what the sanitiser changed. The events are priced and handed to
the recorder, which never blocks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Final

from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage

from ..pipeline import AttemptEvent, Call, CreateHandler, Layer, Request, StreamHandler, StreamItem
from ..redaction import redact
from ..retry.classify import classify_error
from .events import Outcome, UsageEvent
from .pricing import PricingTable, TokenUsage, infer_provider, model_of
from .recorder import UsageRecorder

__all__ = ["AccountingLayer"]

logger = logging.getLogger("autogen_reliability")

_ERROR_MESSAGE_LIMIT: Final = 1000
_CHARS_PER_TOKEN: Final = 4  # the usual rule of thumb for English text; only for providers that report nothing


class AccountingLayer(Layer):
    """Records one usage event per provider attempt when a call ends."""

    def __init__(
        self,
        recorder: UsageRecorder,
        pricing: PricingTable,
        *,
        capture_content: bool = False,
        content_limit: int = 10_000,
    ) -> None:
        self.recorder = recorder
        self.pricing = pricing
        self.capture_content = capture_content
        self.content_limit = content_limit
        self._clients: dict[int, tuple[str | None, str | None]] = {}

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        try:
            return await call_next(request)
        finally:
            self._record(request.call)

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        try:
            async with aclosing(call_next(request)) as stream:
                async for item in stream:
                    yield item
        finally:
            self._record(request.call)

    def _record(self, call: Call) -> None:
        for attempt in call.events:
            try:
                event = self._event(call, attempt)
            except Exception:
                # Usage we cannot make sense of must cost the caller neither its answer nor the row.
                logger.exception(
                    "could not price attempt %d of call %s; recording it unpriced", attempt.attempt, call.call_id
                )
                event = UsageEvent(**_identity(call, attempt), outcome=attempt.outcome)
            self.recorder.record(event)

    def _event(self, call: Call, attempt: AttemptEvent) -> UsageEvent:
        provider, model = self._describe(attempt.client)
        result, error, raw = attempt.result, attempt.error, attempt.provider_usage
        prompt = result.usage.prompt_tokens if result is not None else 0
        completion = result.usage.completion_tokens if result is not None else 0
        if raw is not None:
            prompt = raw.prompt_tokens if raw.prompt_tokens is not None else prompt
            completion = raw.completion_tokens if raw.completion_tokens is not None else completion
        estimated = False
        if result is not None and not result.cached and prompt == 0 and completion == 0:
            # The provider reported nothing (some streams): estimate offline, and say so.
            prompt, completion, estimated = _estimate(attempt.request.messages), _estimate_result(result), True
        cached = raw.cached_tokens if raw is not None else None
        cache_write = raw.cache_write_tokens if raw is not None else None
        outcome: Outcome = attempt.outcome
        violations = call.violations.get(attempt.attempt, 0)
        if outcome == "ok" and violations:
            outcome = "invalid"
        cost: int | None
        source: str | None
        if result is not None and result.cached:
            cost, source, price_date = 0, "cache", None
        else:
            usage = TokenUsage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=cached or 0,
                cache_write_tokens=cache_write or 0,
                latency_seconds=attempt.latency,
            )
            price = self.pricing.price(model, provider, usage=usage, at=attempt.started_at) if model else None
            cost = price.nanousd if price is not None else None
            source = price.source if price is not None else None
            price_date = price.effective_from if price is not None else None
        status = getattr(error, "status_code", None)
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
            reasoning_tokens=raw.reasoning_tokens if raw is not None else None,
            tokens_estimated=estimated,
            cost_nanousd=cost,
            price_source=source,
            price_date=price_date,
            outcome=outcome,
            error_kind=classify_error(error).value if error is not None else None,
            http_status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            error_message=redact(str(error), limit=_ERROR_MESSAGE_LIMIT) if error is not None else None,
            finish_reason=result.finish_reason if result is not None else None,
            cache_hit=bool(result is not None and result.cached),
            sanitizer_changes=(call.sanitizer_changes or {}) if final else {},
            validation_errors=violations,
            request_content=self._content_of(attempt.request.messages) if self.capture_content else None,
            response_content=self._answer_of(result) if self.capture_content and result is not None else None,
        )

    def _describe(self, client: ChatCompletionClient) -> tuple[str | None, str | None]:
        known = self._clients.get(id(client))
        if known is None:
            model = model_of(client)
            known = self._clients[id(client)] = (infer_provider(client, model), model)
        return known

    def _content_of(self, messages: object) -> str:
        dumped = [message.model_dump(mode="json") for message in messages]  # type: ignore[attr-defined]
        return json.dumps(dumped, ensure_ascii=False)[: self.content_limit]

    def _answer_of(self, result: CreateResult) -> str:
        if isinstance(result.content, str):
            return result.content[: self.content_limit]
        calls = [{"id": call.id, "name": call.name, "arguments": call.arguments} for call in result.content]
        return json.dumps(calls, ensure_ascii=False)[: self.content_limit]


def _identity(call: Call, attempt: AttemptEvent) -> dict[str, Any]:
    """The fields of a usage event that say which attempt of which call it is, and for whom."""
    return {
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
