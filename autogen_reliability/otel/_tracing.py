"""A span per logical call and one per provider attempt, by the OpenTelemetry GenAI semantic conventions.

The spans are made from the call feed (``_pipeline.subscribe_calls``) and the
usage feed (``accounting._feed``):

- when a call **starts**, the caller's context is kept: the span current then
  is the parent of the call's span (the agent's own span when AutoGen's tracing
  is on, the request's span in an instrumented web application, or a span of
  the caller's);
- when the call **ends**, its attempts are known (``call.events``) and so are
  their usage rows with the exact cost and validation's verdict (published just
  before the end): the call's span is made then, with the call's start time and
  every attribute at once, and each attempt becomes a child span of it, with its
  own start time and duration. Made whole, a span is seen whole by the
  SDK's sampler, which sees only the attributes a span starts with: a rule
  such as "keep every failed call" can read ``error.type``. (Made at the
  start and filled in at the end, it cost the same: measured with
  ``python -m benchmarks observers``.)

The spans are not made current while the call runs: a stream's steps may run
in different tasks, and a context attached in one cannot be detached in
another. So spans that the provider SDK's own instrumentation makes (an HTTP
client's, say) are siblings of ours under the caller's span, not children.

No message content, no API key, no URL is put on a span; an error's text is
redacted (``_redaction``) before it becomes the status' description. A lone
surrogate in any text of a span (a project, a model's name) becomes U+FFFD: an
exporter encodes the span in UTF-8, which cannot hold one.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from autogen_core.models import ChatCompletionClient, CreateResult
from opentelemetry import trace
from opentelemetry.context import Context, get_current
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from .._errors import ConfigurationError, ResponseValidationError
from .._pipeline import AttemptEvent, Call, Pipeline, subscribe_calls
from .._redaction import message_of, redact, well_formed
from ..accounting import _feed
from ..accounting._events import UsageEvent
from ..accounting._price_table import nanousd_to_usd
from ..accounting._recorder import UsageRecorder
from ..providers import AskedModels
from ..retry._classify import classify_error, http_status

__all__ = ["ATTRIBUTE_PREFIX", "CallTracer", "disable_tracing", "enable_tracing"]

ATTRIBUTE_PREFIX: Final = "autogen_reliability."
_OPERATION: Final = "chat"
_DESCRIPTION_LIMIT: Final = 300
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

# Our provider ids (genai-prices') -> the conventions' gen_ai.provider.name, where they name it.
_PROVIDER_NAMES: Final[Mapping[str, str]] = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "aws": "aws.bedrock",
    "google": "gcp.gemini",
    "groq": "groq",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "x-ai": "x_ai",
    "cohere": "cohere",
    "perplexity": "perplexity",
}

_Attributes = dict[str, AttributeValue]


class _OpenCall:
    """A call that has started: the caller's context, and the usage rows of its attempts as they are published."""

    __slots__ = ("context", "usage")

    def __init__(self, context: Context) -> None:
        self.context = context
        self.usage: dict[int, UsageEvent] = {}


class CallTracer:
    """Makes the spans of every call of every wrapped client (a call observer and a usage listener).

    Args:
        tracer: The tracer the spans are made with.
    """

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._open: dict[uuid.UUID, _OpenCall] = {}
        self._clients: weakref.WeakKeyDictionary[ChatCompletionClient, AskedModels] = weakref.WeakKeyDictionary()

    def call_started(self, call: Call, pipeline: Pipeline) -> None:
        """Keeps the caller's context: its current span is the parent of the call's."""
        self._open[call.call_id] = _OpenCall(get_current())

    def usage_recorded(self, event: UsageEvent, recorder: UsageRecorder) -> None:
        """Keeps the usage row of an attempt of a call with an open span, for its attempt's span."""
        opened = self._open.get(event.call_id)
        if opened is not None:
            opened.usage[event.attempt] = event

    def call_ended(self, call: Call, pipeline: Pipeline, error: BaseException | None) -> None:
        """Makes the call's span, under the caller's, and a span per attempt under it."""
        opened = self._open.pop(call.call_id, None)
        if opened is None:
            return
        provider, model = self._describe(pipeline.client, call.extra_create_args)
        attributes = _common(provider, model, call)
        attributes[f"{ATTRIBUTE_PREFIX}call_id"] = str(call.call_id)
        attributes[f"{ATTRIBUTE_PREFIX}attempts"] = len(call.events)
        _call_totals(call, opened.usage, attributes)
        final = next((event for event in reversed(call.events) if event.result is not None), None)
        if final is not None and error is None:
            _answer(attributes, final.result, _response_model(final, opened.usage.get(final.attempt)))
        if error is None:
            attributes[f"{ATTRIBUTE_PREFIX}outcome"] = "ok"
        elif isinstance(error, Exception):
            attributes.update(_failure(error))
        else:
            attributes[f"{ATTRIBUTE_PREFIX}outcome"] = "cancelled"
        status = _error_status(error) if isinstance(error, Exception) else None
        span = self.tracer.start_span(
            _span_name(model),
            context=opened.context,
            kind=SpanKind.CLIENT,
            attributes=_well_formed(attributes),
            start_time=_nanoseconds(call.started_at),
        )
        try:  # whatever an attempt's span meets, the call's is ended: an open span is never exported
            if status is not None:
                span.set_status(status)
            parent = trace.set_span_in_context(span)
            for event in call.events:
                self._attempt_span(event, opened.usage.get(event.attempt), parent)
        finally:
            span.end()

    def _attempt_span(self, event: AttemptEvent, usage: UsageEvent | None, parent: Context) -> None:
        """The span of one attempt, with its own times."""
        provider, model = self._describe(event.client, event.request.extra_create_args)
        call = event.call
        attributes = _common(provider, model, call)
        attributes[f"{ATTRIBUTE_PREFIX}attempt"] = event.attempt
        if event.on_wrapper:
            # A call of another wrapper, with a call span of its own that carries its tokens and cost (its rows',
            # or those it records through ours when it records none): here they would count twice in a backend
            # that sums spans.
            attributes[f"{ATTRIBUTE_PREFIX}on_wrapper"] = True
        else:
            _tokens(event, usage, attributes)
        if usage is not None:
            outcome, violations = usage.outcome, usage.validation_errors
            if usage.cost_nanousd is not None and not event.on_wrapper:
                attributes[f"{ATTRIBUTE_PREFIX}cost_usd"] = _usd(usage.cost_nanousd)
            if usage.tokens_estimated:
                attributes[f"{ATTRIBUTE_PREFIX}tokens_estimated"] = True
        else:  # no usage row: validation's verdict as the row would have it
            outcome, violations = event.outcome, call.findings.violations(event.attempt)
            if outcome == "ok" and violations:
                outcome = "invalid"
        attributes[f"{ATTRIBUTE_PREFIX}outcome"] = outcome
        if violations:
            attributes[f"{ATTRIBUTE_PREFIX}validation_errors"] = violations
        if event.result is not None:
            _answer(attributes, event.result, _response_model(event, usage))
        error = event.error if isinstance(event.error, Exception) and outcome == "error" else None
        if error is not None:  # (an error that is no Exception is a cancellation)
            attributes.update(_failure(error))
            code = http_status(error)
            if code is not None:
                attributes["http.response.status_code"] = code
        start = _nanoseconds(event.started_at)
        status = _error_status(error) if error is not None else None
        span = self.tracer.start_span(
            _span_name(model),
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=_well_formed(attributes),
            start_time=start,
        )
        if status is not None:
            span.set_status(status)
        span.end(end_time=start + round(event.latency * 1e9))

    def _describe(
        self, client: ChatCompletionClient, extra_create_args: Mapping[str, Any]
    ) -> tuple[str | None, str | None]:
        """(gen_ai.provider.name, the model) of a request to ``client``: the model it asks for, as its usage row."""
        try:
            described = self._clients[client]
        except KeyError:
            described = self._clients[client] = AskedModels(client)
        except TypeError:  # not weakly referenceable: read each time
            described = AskedModels(client)
        provider, model = described.own if not extra_create_args else described.of(client, extra_create_args)
        return _provider_name(provider), model


def _provider_name(provider: str | None) -> str | None:
    """The conventions' ``gen_ai.provider.name`` of one of our provider ids."""
    return _PROVIDER_NAMES.get(provider, provider) if provider is not None else None


def _span_name(model: str | None) -> str:
    return well_formed(f"{_OPERATION} {model}") if model else _OPERATION


def _well_formed(attributes: _Attributes) -> _Attributes:
    """``attributes`` with every lone surrogate in their texts replaced by U+FFFD (see the module's docstring)."""
    return {
        name: well_formed(value)
        if isinstance(value, str)
        else tuple(well_formed(item) if isinstance(item, str) else item for item in value)
        if isinstance(value, tuple)
        else value
        for name, value in attributes.items()
    }


def _common(provider: str | None, model: str | None, call: Call) -> _Attributes:
    """The attributes every span of a call carries."""
    attributes: _Attributes = {"gen_ai.operation.name": _OPERATION}
    if provider is not None:
        attributes["gen_ai.provider.name"] = provider
        attributes["gen_ai.system"] = provider  # the name before the conventions' 1.37; many backends read it still
    if model is not None:
        attributes["gen_ai.request.model"] = model
    attribution = call.attribution
    if attribution.session is not None:
        attributes["gen_ai.conversation.id"] = attribution.session
    for name, value in (
        ("project", attribution.project),
        ("session", attribution.session),
        ("agent", attribution.agent),
    ):
        if value is not None:
            attributes[f"{ATTRIBUTE_PREFIX}{name}"] = value
    if call.streamed:
        attributes[f"{ATTRIBUTE_PREFIX}streamed"] = True
    return attributes


def _call_totals(call: Call, usage: dict[int, UsageEvent], attributes: _Attributes) -> None:
    """Sets a call's tokens and cost: the sums over its attempts, but for those on another wrapper (see above)."""
    input_tokens = output_tokens = 0
    cost_nanousd: int | None = None
    for event in call.events:
        if event.on_wrapper:
            continue
        row = usage.get(event.attempt)
        event_input, event_output = _tokens(event, row, {})
        input_tokens += event_input
        output_tokens += event_output
        if row is not None and row.cost_nanousd is not None:
            cost_nanousd = (cost_nanousd or 0) + row.cost_nanousd
    attributes["gen_ai.usage.input_tokens"] = input_tokens
    attributes["gen_ai.usage.output_tokens"] = output_tokens
    if cost_nanousd is not None:
        attributes[f"{ATTRIBUTE_PREFIX}cost_usd"] = _usd(cost_nanousd)


def _tokens(event: AttemptEvent, usage: UsageEvent | None, attributes: _Attributes) -> tuple[int, int]:
    """Sets an attempt's token attributes: the usage row's numbers, else the provider's as the attempt saw them."""
    cached = reasoning = None
    if usage is not None:
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        cached, reasoning = usage.cached_tokens, usage.reasoning_tokens
    else:
        result, raw = event.result, event.provider_usage
        prompt = result.usage.prompt_tokens if result is not None else 0
        completion = result.usage.completion_tokens if result is not None else 0
        if raw is not None:
            prompt = raw.prompt_tokens if raw.prompt_tokens is not None else prompt
            completion = raw.completion_tokens if raw.completion_tokens is not None else completion
            cached, reasoning = raw.cached_tokens, raw.reasoning_tokens
    attributes["gen_ai.usage.input_tokens"] = prompt
    attributes["gen_ai.usage.output_tokens"] = completion
    if cached is not None:
        attributes["gen_ai.usage.cache_read.input_tokens"] = cached
    if reasoning is not None:
        attributes["gen_ai.usage.reasoning.output_tokens"] = reasoning
    return prompt, completion


def _response_model(event: AttemptEvent, usage: UsageEvent | None) -> str | None:
    if usage is not None and usage.response_model is not None:
        return usage.response_model
    return event.provider_usage.model if event.provider_usage is not None else None


def _answer(attributes: _Attributes, result: CreateResult | None, response_model: str | None) -> None:
    if result is None:
        return
    attributes["gen_ai.response.finish_reasons"] = (result.finish_reason,)
    if response_model is not None:
        attributes["gen_ai.response.model"] = response_model


def _failure(error: Exception) -> _Attributes:
    """The attributes of a failed span: ``error.type`` (the exception's class) and our error kind."""
    return {
        "error.type": type(error).__qualname__,
        f"{ATTRIBUTE_PREFIX}outcome": "error",
        f"{ATTRIBUTE_PREFIX}error_kind": classify_error(error).value,
    }


def _error_status(error: Exception) -> Status:
    """ERROR, described by the error's text with every secret redacted.

    Not the text of a :class:`ResponseValidationError`: its violations quote the model's answer, which may hold
    the user's data (a span carries no content); how many there were is said instead.
    """
    if isinstance(error, ResponseValidationError):
        text = f"the model's answer was invalid after {error.attempts} attempt(s): {len(error.errors)} violation(s)"
    else:
        text = message_of(error)
    return Status(StatusCode.ERROR, redact(f"{type(error).__name__}: {text}", limit=_DESCRIPTION_LIMIT))


def _usd(nanousd: int) -> str:
    """Exact USD as a plain decimal string (``"0.000012"``, never ``"1.2E-5"``): a float would round it."""
    return format(nanousd_to_usd(nanousd), "f")


def _nanoseconds(moment: datetime) -> int:
    """Nanoseconds since the epoch, exactly (through a float, a microsecond is lost past 2^53 ns)."""
    return (moment - _EPOCH) // _MICROSECOND * 1000


# -- turning it on and off ---------------------------------------------------------------------

_lock = threading.Lock()
_enabled: tuple[CallTracer, TracerProvider | None, tuple[Callable[[], None], ...]] | None = None


def enable_tracing(tracer_provider: TracerProvider | None = None) -> None:
    """Turns the spans on for every wrapped client of this process. Idempotent.

    Args:
        tracer_provider: The provider to make spans with; by default the global
            one (``opentelemetry.trace.set_tracer_provider``), looked up when each
            span is made, so the application may set it before or after this call.

    Raises:
        ConfigurationError: tracing is on already with another tracer provider
            (call :func:`disable_tracing` first).

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider
        >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        >>> from autogen_reliability.otel import disable_tracing, enable_tracing
        >>> provider = TracerProvider()
        >>> provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        >>> enable_tracing(provider)
        >>> disable_tracing()
    """
    global _enabled  # noqa: PLW0603  # one tracer per process
    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise ConfigurationError(
            f"tracer_provider must be an opentelemetry TracerProvider, got {type(tracer_provider).__name__}"
        )
    with _lock:
        if _enabled is not None:
            if tracer_provider is not None and tracer_provider is not _enabled[1]:
                raise ConfigurationError(
                    "tracing is on already with another tracer provider; call disable_tracing() first to change it"
                )
            return
        tracer = trace.get_tracer("autogen_reliability", _version(), tracer_provider=tracer_provider)
        observer = CallTracer(tracer)
        unsubscribers = (subscribe_calls(observer), _feed.subscribe(observer.usage_recorded))
        _enabled = (observer, tracer_provider, unsubscribers)


def disable_tracing() -> None:
    """Turns the spans off; calls running now still end their spans. Safe to call when tracing is off."""
    global _enabled
    # All under the lock: an enable_tracing() in another thread must not run alongside the old tracer (spans twice).
    with _lock:
        enabled, _enabled = _enabled, None
        if enabled is not None:
            for unsubscribe in enabled[2]:
                unsubscribe()


def _version() -> str | None:
    try:
        return version("autogen-reliability")
    except PackageNotFoundError:  # pragma: no cover - a checkout that was never installed
        return None
