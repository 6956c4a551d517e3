"""Read the provider's own usage report off the wire, without changing AutoGen and without buffering streams.

Why this exists:
    AutoGen reduces what the provider reports about a completion to
    ``CreateResult.usage = RequestUsage(prompt_tokens, completion_tokens)``. Exact
    cost needs more: OpenAI bills cached prompt tokens
    (``usage.prompt_tokens_details.cached_tokens``) at about half price, reasoning
    tokens (``usage.completion_tokens_details.reasoning_tokens``) are part of the
    completion bill but worth reporting apart, and the ``model`` that actually
    answered (a dated snapshot) decides the price. Anthropic's ``input_tokens``,
    which AutoGen reports as the prompt, leaves out the prompt's cache reads and
    writes (``cache_read_input_tokens``, ``cache_creation_input_tokens``), billed
    at their own prices (a read at a tenth of the input price, a write above it:
    1.25 times for the default 5-minute lifetime, twice for a 1-hour one, whose
    part of the writes is ``cache_creation.ephemeral_1h_input_tokens``).
    All of that is in the HTTP response body and gone by the time AutoGen returns.

How it works:
    `attach_usage_tap` wraps the transport(s) of the HTTP client that the
    ``openai.AsyncOpenAI`` inside an AutoGen OpenAI-family client (an
    ``httpx2.AsyncClient``), or the ``anthropic.AsyncAnthropic`` inside its
    ``AnthropicChatCompletionClient`` (an ``httpx.AsyncClient`` in the 0.x SDK
    AutoGen 0.7.5 runs on), sends its requests through (``client._client._client._transport`` and the per-URL
    ``_mounts``) in a `UsageTapTransport`. While a `capture_provider_usage` block is
    active, the transport replaces each response's byte stream with a pass-through
    iterator that hands every chunk on unchanged, as soon as it arrives, after
    looking at it:

    * JSON bodies (non-streaming completions) are copied into a
      bounded buffer (`MAX_JSON_BYTES`) and parsed once the body ends; of a
      larger one (``logprobs`` make 1.2 KB a token) only its first and last
      `EDGE_BYTES` are kept, and read for the ``id`` and ``model`` that begin
      a completion and the ``usage`` that ends it;
    * ``text/event-stream`` bodies (streams) are split into lines incrementally
      and only ``data:`` events that carry a ``usage`` object, a tool call
      (whose name and argument characters are counted: AutoGen yields nothing
      of a tool call until the stream ends, so a stream cut off half-way would
      leave no trace of them) or, until it is known, the ``model`` are parsed.
      A chunk of whole events none of which has a usage object or a tool call
      (all of a text stream's chunks but its last) is not even split. Nothing
      is held back. Groq's stream reports its usage in its last chunk's
      ``x_groq`` member too (and only there without ``include_usage``),
      which is read when the chunk has no ``usage``. Anthropic's stream counts the input and cache
      tokens in ``message_start`` (inside its ``message``, with the model and id)
      and the output tokens in ``message_delta`` (cumulative; newer API versions
      repeat the other fields there, or send them null): the usage is reported at
      ``message_delta``, its values over ``message_start``'s where not null.
      Until then, message_start's counts are the slot's `UsageSlot.partial_usage`
      (its completion unknown): all a stream cut off in between leaves. Its tool
      calls are a ``tool_use`` block's ``content_block_start`` (the name) and
      ``input_json_delta`` fragments, counted as OpenAI's are.

    A JSON body's ``error`` member is kept too (`UsageSlot.body_error`): OpenRouter answers a request
    that failed once accepted with status 200 and ``{"error": {"code": 502, ...}}``, which the SDK
    takes for a completion. It costs nothing more (the body is parsed anyway). A stream's events are
    not searched for one: the openai SDK raises its ``APIError`` itself on an event that has an ``error``.
    And what a successful body was, once read to its end (`UsageSlot.body_shape`): a JSON object, server-sent
    events, or neither (an HTML page from a proxy, an empty body). The openai SDK hands a body that is not JSON
    to AutoGen as a string, and reads one that has no event as an empty stream; the pipeline tells such an
    answer from a completion by it. It costs nothing per chunk: it is decided when the body ends. So is whether a
    stream read to its end said its answer had ended (a finish reason, ``data: [DONE]``) in its last `END_BYTES`,
    kept by slicing, no call per chunk (`UsageSlot.stream_cut`): the pipeline tells a stream cut off by it.

    A body is told apart as the SDKs tell it, by what it holds rather than by
    its ``Content-Type``, which only ``text/event-stream`` is trusted: a body
    labelled anything else is JSON if it begins with ``{`` and a stream of
    events otherwise (servers label streams ``application/x-ndjson``,
    ``application/json`` or ``text/plain``, and completions ``text/plain``,
    and the SDKs read them all).

    Compressed bodies (the SDK asks for ``gzip, deflate``, and ``br`` / ``zstd``
    where their libraries are installed) are decoded on a side copy for
    inspection only. Decoding and SSE framing live in ``_http_body.py``, which
    says why they are our own and not the HTTP client's.

Which slot receives the usage:
    The slot is looked up in a `contextvars.ContextVar` when the request is
    *sent* (in ``handle_async_request``), not when the body is read, so
    concurrent tasks each fill their own slot, and a stream whose chunks are
    consumed elsewhere still reports to the slot that was active when it was
    opened. AutoGen's ``create()`` runs the SDK call in ``asyncio.ensure_future``,
    which copies the caller's context, so a slot opened around ``await
    client.create(...)`` is visible there; ``create_stream()`` sends its request
    on the first ``__anext__`` of the caller's ``async for``, so a wrapper of a
    stream makes its slot current around each step (`anext_in_slot`), never
    across its own ``yield``. Captures nest: a response is recorded in the
    innermost slot and in every enclosing one.

How it stays safe:
    * Bytes always reach the SDK unchanged and unbuffered; every inspection error
      (bad JSON, unknown encoding, an oversized body with no usage at its end, an
      SSE line past `MAX_JSON_BYTES`, anything unexpected) is
      swallowed and only counted in `UsageSlot.tap_failures`.
    * Without an active capture the transport only adds one ``ContextVar.get``
      per request: response streams are not wrapped at all.
    * If the internals are not where this version of AutoGen / openai /
      anthropic / httpx2 keeps them, `attach_usage_tap` returns False, logs once at DEBUG,
      and changes nothing.
    * Attaching is idempotent, works with the SDK's default HTTP client and with
      a user-supplied ``http_client`` (``httpx2`` or legacy ``httpx``), and
      leaves ``dump_component()`` and ``close()`` as they were (the config is
      untouched; closing delegates to the wrapped transport).

Example:
    ```python
    client = OpenAIChatCompletionClient(model="gpt-4o-mini")
    attach_usage_tap(client)
    with capture_provider_usage() as slot:
        result = await client.create(messages)
    if slot.usage is not None:
        print(slot.usage.cached_tokens, slot.usage.reasoning_tokens, slot.usage.model)
    ```
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias, TypeVar, cast

import httpx2
import openai

from ._clients import sdk_client_of
from ._http_body import BodyTooLargeError, Decoder, SSEDataReader, content_decoder
from ._lookup import loaded_class

__all__ = [
    "EDGE_BYTES",
    "END_BYTES",
    "MAX_JSON_BYTES",
    "BodyShape",
    "ProviderUsage",
    "UsageSlot",
    "UsageTapTransport",
    "anext_in_slot",
    "attach_usage_tap",
    "capture_provider_usage",
    "current_usage_slot",
    "new_usage_slot",
    "read_timed_out",
    "report_provider_usage",
]

_logger = logging.getLogger(__name__)

_T = TypeVar("_T")

BodyShape: TypeAlias = Literal["completion", "object", "events", "empty", "other"]
"""What a successful response's body was, read to its end (see `UsageSlot.body_shape`)."""

MAX_JSON_BYTES: Final = 2 * 1024 * 1024
"""Largest decoded JSON body the tap keeps whole (larger: see `EDGE_BYTES`), and longest SSE line it inspects."""

END_BYTES: Final = 4096
"""How much of a stream's end the tap keeps to tell whether it said its answer ended (see `UsageSlot.stream_cut`).

Only a usage chunk (some 500 bytes) and ``data: [DONE]`` follow the chunk that carries the finish reason.
"""

EDGE_BYTES: Final = 64 * 1024
"""Of a JSON body larger than `MAX_JSON_BYTES`, how much of its beginning and of its end the tap keeps and reads.

A completion (OpenAI's, Anthropic's) begins with its ``id`` and ``model`` and ends with its ``usage`` (only
``service_tier`` and ``system_fingerprint`` follow); what lies between, the answer and its ``logprobs``, is
what grows.
"""

# A cheap pre-filter so that stream chunks without a usage *object* (``"usage":null`` or no key at
# all, i.e. all but the last chunk) are never parsed; json.loads then decides what is really there.
_USAGE_OBJECT: Final = re.compile(rb'"usage"\s*:\s*\{')
# In a JSON body too large to keep, read as text: a usage object, its opening brace where the match ends.
_USAGE_KEY: Final = re.compile(r'"usage"\s*:\s*(?=\{)')
# After it, the completion's service tier: a string (its opening quote where the match ends).
_SERVICE_TIER_KEY: Final = re.compile(r'"service_tier"\s*:\s*(?=")')
# Before that, on a stream's raw chunk of whole events: a ``"usage"`` not followed by ``null``. OpenAI's chunks
# all say ``"usage":null`` but the last; a chunk this finds nothing in is passed on without being split into
# events (none of them would be parsed). Whatever else follows ``"usage"`` (an object, or a data line broken
# before it) is a match, and the chunk is read event by event as before.
_USAGE_NOT_NULL: Final = re.compile(rb'"usage"(?!\s*:\s*null)')
# A chunk that carries tool-call deltas (a list of objects; some servers send ``"tool_calls":null``, or ``[]``, in
# every chunk): its events are parsed to count the characters of the calls' names and arguments
# (`UsageSlot.tool_call_chars`). On a text stream's chunk it is one more search of a literal, about 0.2 us a chunk
# (measured with timeit).
_TOOL_CALLS: Final = re.compile(rb'"tool_calls"\s*:\s*\[\s*\{')
# On an Anthropic stream (from its message_start on), instead of that: the events of a tool call, its tool_use
# block's start (with the name) and its input's input_json_delta fragments. The marker is chosen per stream
# (`_BodyTap._tool_marker`), so an OpenAI stream's chunks pay for no search of Anthropic's: a text chunk's
# `_BodyTap.feed` took 630 ns before and after (timeit, best of 7 x 200,000, the same 2-core machine).
_ANTHROPIC_TOOL_USE: Final = re.compile(rb'"(?:tool_use|input_json_delta)"')
# In the last `END_BYTES` of a stream read to its end, a sign that the provider's answer had ended: Anthropic's
# message_stop or OpenAI's closing ``data: [DONE]`` (`_ENDED`), or a finish reason that is not null (OpenAI's
# ``finish_reason`` in a choice, Anthropic's ``stop_reason`` in message_delta) in a whole event, one a blank line
# ended (`_FINISHED`): the SDKs hand on no event the body ended inside, so AutoGen never saw a finish reason there.
# Searched once, when the body ends (`_BodyTap.finish`): a text chunk pays for no search (an alternation like this
# one takes 4 us a chunk, against 0.6 for one literal's).
_ENDED: Final = re.compile(rb'"message_stop"|data:\s*\[DONE\]')
_FINISHED: Final = re.compile(rb'"(?:finish_reason|stop_reason)"(?!\s*:\s*null)')
# Where a body whose Content-Type is not text/event-stream begins, and the byte that makes it JSON, not events.
_NOT_WHITESPACE: Final = re.compile(rb"[^ \t\r\n]")
_OPEN_BRACE: Final = ord("{")
# Chunks parsed just to learn the stream's model/id before giving up on them (Azure's first chunk
# can carry an empty model); after that only usage-bearing chunks are parsed.
_IDENTITY_ATTEMPTS: Final = 8


# --------------------------------------------------------------------------- public data


@dataclass(frozen=True, slots=True)
class ProviderUsage:
    """The usage one HTTP response reported, as the provider wrote it (no estimates), in OpenAI's terms.

    Attributes:
        prompt_tokens: ``usage.prompt_tokens`` (``input_tokens`` in Responses-API shapes; Anthropic's
            ``input_tokens`` plus its cache reads and writes).
        completion_tokens: ``usage.completion_tokens`` (``output_tokens`` in Responses-API shapes), reasoning
            tokens included: where a provider counts them apart (xAI: its ``total_tokens`` is prompt +
            completion + reasoning; Gemini's OpenAI-compatible endpoint: its ``total_tokens`` is prompt +
            completion + thoughts, with no detail), they are added.
        cached_tokens: ``usage.prompt_tokens_details.cached_tokens`` (or ``cache_read_input_tokens``, or
            DeepSeek's ``prompt_cache_hit_tokens``): prompt tokens served from the provider's prompt cache,
            included in ``prompt_tokens``.
        reasoning_tokens: ``usage.completion_tokens_details.reasoning_tokens``, included in
            ``completion_tokens``; of a Gemini model (its response's ``model`` names one) reporting none,
            what its ``total_tokens`` counts beyond prompt and completion: its thoughts.
        cache_write_tokens: Anthropic-style ``cache_creation_input_tokens``, or OpenAI's
            ``usage.prompt_tokens_details.cache_write_tokens`` (``input_tokens_details`` in Responses-API shapes),
            if the provider reports it, included in ``prompt_tokens``.
        model: The ``model`` field of the response (for a stream, of its chunks), e.g. a dated snapshot.
        response_id: The ``id`` field of the response, e.g. ``"chatcmpl-..."``.
        cache_write_1h_tokens: Of ``cache_write_tokens``, those written with a 1-hour lifetime (billed at
            twice the input price, against 1.25 times for the default 5 minutes): Anthropic's
            ``cache_creation.ephemeral_1h_input_tokens``; None where the response has no such split.
        service_tier: The ``service_tier`` of the response (for a stream, of its usage chunk), beside its
            ``usage`` (in a Responses-API shape, the response's): the tier that served the request, which
            OpenAI prices by (``"default"``, ``"flex"``, ``"priority"``, ``"scale"``); it may not be the tier
            asked for. None where the response names none (Anthropic's, whose tier is inside its usage).
        input_audio_tokens: ``usage.prompt_tokens_details.audio_tokens``: of ``prompt_tokens``, those of audio,
            which an audio model (``gpt-audio``) bills at its audio input price; None where not reported.
        output_audio_tokens: ``usage.completion_tokens_details.audio_tokens``: of ``completion_tokens``, those of
            audio, billed at the model's audio output price; None where not reported.
    """

    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cache_write_tokens: int | None
    model: str | None
    response_id: str | None
    # Last, with a default: positional constructions of the seven fields above stay valid.
    cache_write_1h_tokens: int | None = None
    service_tier: str | None = None
    input_audio_tokens: int | None = None
    output_audio_tokens: int | None = None


class UsageSlot:
    """Receives the provider usage of the HTTP responses made while it is active.

    Created by `capture_provider_usage`; the tap writes it, the caller reads it
    after the call (for a stream: after the stream ended). Responses are counted
    per HTTP attempt, so SDK retries show up as extra ``responses``.

    Attributes:
        usage: The last complete usage seen (for a stream: from its usage chunk); None if no
            response reported one (an error, or a stream without ``include_usage``).
        usages: Every usage seen, in arrival order (several requests, e.g. a tool loop, or
            concurrent calls inside one capture).
        status: The HTTP status of the last response.
        model: The model named by the last response or chunk that named one, even without usage.
        response_id: The ``id`` of the last response or chunk that had one.
        request_id: The ``x-request-id`` header of the last response.
        partial_usage: What a stream that reports its usage in two parts reported of the first, until
            the second completes it (then None): Anthropic's ``message_start`` counts the prompt (input
            and cache tokens), its ``message_delta`` the output. ``completion_tokens`` is None. A stream
            cut off between the two leaves it, and no `usage`.
        tool_call_chars: How many characters of tool-call names and arguments the streams' chunks
            carried (decoded, as a stream's text is counted): what a tool-call stream cut off
            before its usage chunk is estimated from, since AutoGen yields nothing of a tool call
            before the stream ends. Anthropic's: the ``tool_use`` blocks' names and their
            ``input_json_delta`` fragments.
        body_error: The ``error`` member of the last response's JSON body, where it had one (not null or empty):
            a provider answering a successful status with an error (OpenRouter: 200 and ``{"error": {"code":
            502, "message": ...}}``). None otherwise; a body with an error status is not read at all.
        body_shape: What the last response's body was, once read to its end: ``"completion"`` (a JSON object
            with what AutoGen's clients read: a first choice with a ``message``, Anthropic's ``content`` list or
            the Responses API's ``output``), ``"object"`` (another JSON object: ``"choices": []``, a choice
            without its message),
            ``"events"`` (server-sent events, at least one besides ``[DONE]``), ``"empty"``, or ``"other"``
            (anything else: an HTML page, text, broken JSON, JSON that is not an object, an event stream
            without an event). None while it is not read to its end, for an error status (not read),
            and for a body the tap could not inspect (oversized, an encoding it cannot undo).
        stream_cut: Whether the last response was a stream of events read to its end with no sign in its last
            `END_BYTES` that the answer had ended: no finish reason that is not null (OpenAI's ``finish_reason``,
            Anthropic's ``stop_reason``) in a whole event (the SDKs drop one the body ended inside), no Anthropic
            ``message_stop``, no ``data: [DONE]``. Its body ended cleanly, but before the answer did: a proxy
            dropped its tail, a close-delimited response was cut.
            False otherwise, and for a stream not read to its end (the openai SDK may stop at ``[DONE]``).
        responses: How many HTTP responses arrived while the slot was active.
        tap_failures: How many response bodies could not be inspected (malformed, oversized with no
            usage at the end, unknown encoding); the SDK got those bytes unchanged.
    """

    __slots__ = (
        "_parent",
        "body_error",
        "body_shape",
        "model",
        "partial_usage",
        "request_id",
        "response_id",
        "responses",
        "status",
        "stream_cut",
        "tap_failures",
        "tool_call_chars",
        "usage",
        "usages",
    )

    def __init__(self, parent: UsageSlot | None = None) -> None:
        """Create an empty slot.

        Args:
            parent: The enclosing slot, which also receives everything recorded here.
        """
        self._parent = parent
        self.usage: ProviderUsage | None = None
        self.usages: list[ProviderUsage] = []
        self.partial_usage: ProviderUsage | None = None
        self.status: int | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.request_id: str | None = None
        self.body_error: object = None
        self.body_shape: BodyShape | None = None
        self.stream_cut = False
        self.responses = 0
        self.tap_failures = 0
        self.tool_call_chars = 0

    def _chain(self) -> tuple[UsageSlot, ...]:
        slots: list[UsageSlot] = []
        slot: UsageSlot | None = self
        while slot is not None:
            slots.append(slot)
            slot = slot._parent
        return tuple(slots)

    def __repr__(self) -> str:
        return (
            f"UsageSlot(usage={self.usage!r}, status={self.status!r}, model={self.model!r}, "
            f"responses={self.responses}, tap_failures={self.tap_failures})"
        )


# The slot requests sent now are recorded in. The pipeline sets and resets it itself around each attempt and each
# step of a stream (what capture_provider_usage() and anext_in_slot() do, without their calls, on the hot path).
CURRENT_SLOT: ContextVar[UsageSlot | None] = ContextVar("autogen_reliability_usage_slot", default=None)


@contextmanager
def capture_provider_usage() -> Iterator[UsageSlot]:
    """Collect the provider usage of the requests sent inside the block.

    Sets a fresh `UsageSlot` as the current one and restores the previous one on
    exit. A request belongs to the slot that was current when it was *sent*.
    Enclosing captures receive the same records.

    It is a plain (sync) context manager, fine around ``await`` and ``async for``
    in one task. Around the ``yield`` of an async generator it is fragile: a
    consumer may drive each step in a task of its own (``asyncio.wait_for(anext(gen))``)
    or close the generator from another task or the garbage collector, and the
    exit then runs in a context that never entered it. Such an exit does not raise;
    it only removes the slot if it is current there. To capture what a stream sends,
    prefer `anext_in_slot` around each step.

    Yields:
        The slot; read it after the call (for a stream: after iterating it to the end).
    """
    slot = UsageSlot(CURRENT_SLOT.get())
    token = CURRENT_SLOT.set(slot)
    try:
        yield slot
    finally:
        try:
            CURRENT_SLOT.reset(token)
        except ValueError:
            # Exited in another context than the one that entered (see above): that one is not
            # ours to change, and in this one only our own slot is ours to remove.
            if CURRENT_SLOT.get() is slot:
                CURRENT_SLOT.set(slot._parent)


def new_usage_slot() -> UsageSlot:
    """A fresh slot inside the current capture (if any), not yet current anywhere; see `anext_in_slot`."""
    return UsageSlot(CURRENT_SLOT.get())


async def anext_in_slot(stream: AsyncIterator[_T], slot: UsageSlot) -> _T:
    """The next item of ``stream``, with ``slot`` current while (and only while) it is produced.

    The slot is set and restored within this one await, so in one task and one context:
    unlike a capture held across ``yield``, it survives a consumer that drives each step
    in a new task, and a close from another task or by the garbage collector. Requests the
    step sends are recorded in ``slot`` (and its parents); the consumer's context, between
    steps, never sees it.

    Raises:
        StopAsyncIteration: The stream is exhausted.
    """
    token = CURRENT_SLOT.set(slot)
    try:
        return await anext(stream)
    finally:
        CURRENT_SLOT.reset(token)


def current_usage_slot() -> UsageSlot | None:
    """The innermost active `UsageSlot` of the current context, if any."""
    return CURRENT_SLOT.get()


def report_provider_usage(usage: ProviderUsage) -> bool:
    """Record ``usage`` as if a response carrying it had arrived now: for a client with no HTTP to tap.

    An in-process client (``autogen_reliability.testing.ScriptedChatCompletionClient``)
    answers without a response for the tap to read; it reports what a provider's
    response would have said (the model that answered, cached and reasoning
    tokens) here, into the slot current in its context, as the tap does for a
    response sent from there.

    Returns:
        Whether a capture was active to receive it.
    """
    slot = CURRENT_SLOT.get()
    if slot is None:
        return False
    for target in slot._chain():
        target.responses += 1
        target.status = 200
        if usage.model:
            target.model = usage.model
        if usage.response_id:
            target.response_id = usage.response_id
        target.usage = usage
        target.usages.append(usage)
    return True


def read_timed_out(error: BaseException | None) -> bool:
    """Whether ``error`` is (or was raised from) a read timeout of the HTTP client: the request had been sent.

    The provider had the whole request and was answering it when the client stopped waiting, as when a
    deadline cancels an attempt: it bills the request whether or not its answer is read. A connect, write or
    pool timeout, or any other failure before a response, is no sign the request was taken. The openai and
    anthropic SDKs raise their ``APITimeoutError`` from ``httpx2.ReadTimeout`` (``httpx.ReadTimeout`` for
    the anthropic 0.x SDK and a legacy ``http_client``); at most 5 ``__cause__`` links are followed.
    """
    read_timeouts: tuple[type[BaseException], ...] = (httpx2.ReadTimeout,)
    legacy = loaded_class("httpx", "ReadTimeout", BaseException)
    if legacy is not None:
        read_timeouts += (legacy,)
    current = error
    for _ in range(5):
        if current is None:
            return False
        if isinstance(current, read_timeouts):
            return True
        current = current.__cause__
    return False


# --------------------------------------------------------------------------- parsing


# The largest count the usage ledger's token columns hold (accounting's ``MAX_TOKENS``; this package
# imports nothing from the rest of the library): INTEGER, 32-bit on PostgreSQL. Beyond it is no count of
# tokens (two billion is far past any model's context) but a provider's unsigned -1 (2**64 - 1) or garbage:
# taken as not reported, so the row's tokens are estimated and flagged, rather than a number PostgreSQL
# refuses sending the row to the refused file (and SQLite, which would store it, disagreeing).
_MAX_COUNT: Final = 2**31 - 1


def _count(value: object) -> int | None:
    # On every call, for each count and detail a usage may hold: the common cases first, with no call made.
    if value is None:
        return None
    if type(value) is int:  # not a bool (an int subclass): a boolean "count" is not a count, nor a negative one
        return value if 0 <= value <= _MAX_COUNT else None
    # Some OpenAI-compatible servers write counts as 400.0 or "400", which the openai SDK (pydantic's lax mode)
    # reads as 400; so does the tap, or a cached count would be lost and the prompt priced as new input.
    if isinstance(value, float) and value.is_integer():
        return _count(int(value))
    if isinstance(value, str) and len(value) <= 10 and value.isascii() and value.isdigit():  # 2**31 - 1: 10 digits
        return _count(int(value))
    return None


def _first(*values: int | None) -> int | None:
    for value in values:
        if value is not None:
            return value
    return None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _details(usage: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    for key in keys:
        details = usage.get(key)
        if isinstance(details, dict):
            return cast("Mapping[str, Any]", details)
    return {}


def _provider_usage(
    usage: Mapping[str, Any], model: str | None, response_id: str | None, service_tier: object = None
) -> ProviderUsage | None:
    """Read a ``usage`` object in the Chat Completions shape (Responses / Anthropic spellings as fallbacks).

    ``service_tier`` is the value beside it (the response's, or the chunk's): kept when it is a non-empty string.
    """
    prompt = _details(usage, "prompt_tokens_details", "input_tokens_details")
    completion = _details(usage, "completion_tokens_details", "output_tokens_details")
    prompt_tokens = _count(usage.get("prompt_tokens"))
    if prompt_tokens is None and (input_tokens := _count(usage.get("input_tokens"))) is not None:
        # Anthropic's input_tokens leaves out cache reads and writes; our prompt_tokens (as OpenAI's) includes them.
        cache_read = _count(usage.get("cache_read_input_tokens")) or 0
        cache_write = _count(usage.get("cache_creation_input_tokens")) or 0
        prompt_tokens = _count(input_tokens + cache_read + cache_write)
    completion_tokens = _first(_count(usage.get("completion_tokens")), _count(usage.get("output_tokens")))
    reasoning_tokens = _count(completion.get("reasoning_tokens"))
    if (
        reasoning_tokens
        and completion_tokens is not None
        and prompt_tokens is not None
        and _count(usage.get("total_tokens")) == prompt_tokens + completion_tokens + reasoning_tokens
    ):
        # xAI counts reasoning beside the completion, not in it as OpenAI does (its total_tokens is prompt +
        # completion + reasoning), and bills it as output: our completion_tokens, as OpenAI's, includes it.
        completion_tokens = _count(completion_tokens + reasoning_tokens)
    elif (
        reasoning_tokens is None
        and completion_tokens is not None
        and prompt_tokens is not None
        and model is not None
        and "gemini" in model.lower()
        and (total := _count(usage.get("total_tokens"))) is not None
        and total > prompt_tokens + completion_tokens
    ):
        # Gemini's OpenAI-compatible endpoint counts a thinking model's thoughts in total_tokens only, with no
        # detail to say so, and Google bills them as output: they are the reasoning, inside our completion.
        reasoning_tokens = total - prompt_tokens - completion_tokens
        completion_tokens = _count(completion_tokens + reasoning_tokens)
    result = ProviderUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=_first(
            _count(prompt.get("cached_tokens")),
            _count(usage.get("cache_read_input_tokens")),
            _count(usage.get("prompt_cache_hit_tokens")),  # DeepSeek's: prompt_tokens = hits + misses
        ),
        reasoning_tokens=reasoning_tokens,
        cache_write_tokens=_first(
            _count(usage.get("cache_creation_input_tokens")),
            _count(prompt.get("cache_creation_input_tokens")),
            _count(prompt.get("cache_write_tokens")),  # OpenAI's (and OpenRouter's): billed above the input price
        ),
        model=model,
        response_id=response_id,
        # Anthropic splits its cache writes by lifetime in a `cache_creation` object, which a 1-hour write
        # costs 2x the input price in, a 5-minute one 1.25x. Only the 1-hour part is kept: the rest of
        # cache_write_tokens is 5-minute writes. Usage objects without the split pay one dict lookup.
        cache_write_1h_tokens=(
            _count(creation.get("ephemeral_1h_input_tokens"))
            if isinstance(creation := usage.get("cache_creation"), dict)
            else None
        ),
        service_tier=service_tier if isinstance(service_tier, str) and service_tier else None,
        input_audio_tokens=_count(prompt.get("audio_tokens")),
        output_audio_tokens=_count(completion.get("audio_tokens")),
    )
    if (
        result.prompt_tokens is None
        and result.completion_tokens is None
        and result.cached_tokens is None
        and result.reasoning_tokens is None
        and result.cache_write_tokens is None
        and result.cache_write_1h_tokens is None
    ):
        return None
    return result


def _is_completion(body: object) -> bool:
    """Whether a JSON body holds what AutoGen's clients read a completion from.

    Chat Completions: a first choice with a ``message`` (the API promises at least one choice; AutoGen reads
    ``choices[0].message``); Anthropic's Messages: a ``content`` list; the Responses API: an ``output`` list.
    """
    if not isinstance(body, dict):
        return False
    choices = body.get("choices")
    if isinstance(choices, list):
        return bool(choices) and isinstance(choices[0], dict) and isinstance(choices[0].get("message"), dict)
    return isinstance(body.get("content"), list) or isinstance(body.get("output"), list)


def _openai_tool_chars(chunk: Mapping[str, Any]) -> int:
    """The characters of the tool-call names and arguments in a Chat Completions stream chunk."""
    chars = 0
    for choice in _list(chunk.get("choices")):
        delta = choice.get("delta") if isinstance(choice, dict) else None
        for call in _list(delta.get("tool_calls") if isinstance(delta, dict) else None):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for part in (function.get("name"), function.get("arguments")):
                    if isinstance(part, str):
                        chars += len(part)
    return chars


def _events_end(data: bytes) -> int:
    """Where the last whole event of ``data`` ends: at its last blank line, else 0."""
    return max(0, data.rfind(b"\n\n"), data.rfind(b"\r\r"), data.rfind(b"\n\r\n"))


def _anthropic_tool_chars(event: Mapping[str, Any]) -> int:
    """The characters of a tool call in an Anthropic stream event: a tool_use block's name, or an input fragment."""
    kind = event.get("type")
    part: object = None
    if kind == "content_block_start":
        block = event.get("content_block")
        if isinstance(block, dict) and block.get("type") == "tool_use":
            part = block.get("name")
    elif kind == "content_block_delta":
        delta = event.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
            part = delta.get("partial_json")
    return len(part) if isinstance(part, str) else 0


class _BodyTap:
    """Inspects one response body as it flows; records into the slots that were active when it was sent.

    ``feed`` and ``finish`` never raise: any failure turns the tap off for the rest of the body
    and is counted in the slots' ``tap_failures``.
    """

    __slots__ = (
        "_body",
        "_decoder",
        "_done",
        "_end",
        "_head",
        "_identity_attempts",
        "_model",
        "_partial",
        "_response_id",
        "_size",
        "_sse",
        "_start_usage",
        "_tail",
        "_targets",
        "_tool_marker",
        "_undecided",
    )

    def __init__(self, targets: tuple[UsageSlot, ...], *, sse: bool | None, decoder: Decoder | None) -> None:
        self._targets = targets
        # SSE: the stream's events are read as they arrive; JSON: the body is kept until it ends. None: the body
        # says which, by its first byte that is not whitespace (see `_tap_response`).
        self._sse = SSEDataReader(self._on_event, limit=MAX_JSON_BYTES) if sse else None
        self._undecided = sse is None
        self._decoder = decoder
        self._done = False
        self._body: list[bytes] = []
        self._size = 0
        # Of a JSON body past MAX_JSON_BYTES: its first and last EDGE_BYTES, instead of _body.
        self._head: bytes | None = None
        self._tail = b""
        self._model: str | None = None
        self._response_id: str | None = None
        self._identity_attempts = 0
        # An Anthropic stream's message_start usage (input and cache tokens), until its message_delta completes it,
        # and as given to the slots (their partial_usage).
        self._start_usage: dict[str, Any] | None = None
        self._partial: ProviderUsage | None = None
        # What marks an event that may carry a tool call: OpenAI's, until the stream turns out to be Anthropic's.
        self._tool_marker = _TOOL_CALLS
        # Of a stream: its last `END_BYTES` (decoded), where the signs that its answer ended are (see `_ENDED`).
        self._end = b""

    # ---- the two entry points

    def feed(self, raw: bytes) -> None:
        if self._done:
            return
        try:
            data = self._decoder.decode(raw) if self._decoder is not None else raw
            if self._undecided and not self._decide(data):
                return  # whitespace so far: neither kind of body has begun
            if self._sse is not None:
                # No call: a copy of at most END_BYTES and the chunk, about 0.2 us (timeit; 0.6 us per search).
                self._end = (self._end + data)[-END_BYTES:]
                if (
                    self._model is not None
                    and _USAGE_NOT_NULL.search(data) is None
                    and self._tool_marker.search(data) is None
                    and self._sse.between_events(data)
                ):
                    return  # whole events, no usage object or tool call in them, the model known: nothing to read
                self._sse.feed(data)
            else:
                self._keep(data)
        except Exception:
            self._fail()

    def finish(self) -> None:
        if self._done:
            return
        try:
            tail = self._decoder.flush() if self._decoder is not None else b""
            if self._undecided and not self._decide(tail):
                self._shaped("empty")  # nothing to read
                self._release()
                return
            if self._sse is not None:
                self._finish_events(self._sse, tail)
            else:
                if tail:
                    self._keep(tail)
                if self._head is not None:
                    self._observe_edges(self._head, self._tail)
                    self._release()
                    return
                try:
                    body = json.loads(b"".join(self._body))
                except ValueError:
                    self._shaped("other")  # broken JSON (or not UTF-8): what the SDK cannot read either
                    raise
                self._shaped("completion" if _is_completion(body) else "object")  # it began with "{"
                if isinstance(body, dict):
                    error = body.get("error")
                    if error:  # as the SDK reads an event's: null, {} and "" are no error
                        for slot in self._targets:
                            slot.body_error = error
                    self._observe(cast("dict[str, Any]", body))
        except Exception:
            self._fail()
            return
        self._release()

    # ---- internals

    def _finish_events(self, sse: SSEDataReader, tail: bytes) -> None:
        """Read the end of a stream of events: its shape, and whether it was cut off (`UsageSlot.stream_cut`)."""
        if tail:
            sse.feed(tail)
        sse.finish()
        # Each event but [DONE] counts as an attempt to learn the stream's model, the first at least.
        self._shaped("events" if self._identity_attempts else "other")
        # Only a usage chunk and [DONE] follow the finish reason: it is in the stream's last bytes, or there is none.
        end = self._end + tail
        if (
            self._identity_attempts
            and _ENDED.search(end) is None
            and _FINISHED.search(end, 0, _events_end(end)) is None
        ):
            for slot in self._targets:
                slot.stream_cut = True

    def _decide(self, data: bytes) -> bool:
        """Whether the body has begun in ``data``; if so, it is read as JSON if it begins with ``{``, else as events."""
        start = _NOT_WHITESPACE.search(data)
        if start is None:
            return False
        self._undecided = False
        if data[start.start()] != _OPEN_BRACE:
            self._sse = SSEDataReader(self._on_event, limit=MAX_JSON_BYTES)
        return True

    def _shaped(self, shape: BodyShape) -> None:
        for slot in self._targets:
            slot.body_shape = shape

    def _release(self) -> None:
        self._done = True
        self._body = []
        self._head = None
        self._tail = b""
        self._sse = None
        self._end = b""

    def _fail(self) -> None:
        self._release()
        for slot in self._targets:
            slot.tap_failures += 1
        _logger.debug("usage tap: could not inspect a response body; it was passed on unchanged", exc_info=True)

    def _keep(self, data: bytes) -> None:
        """Add to the JSON body: all of it up to `MAX_JSON_BYTES`, beyond that its first and last `EDGE_BYTES`."""
        self._size += len(data)
        if self._head is None:
            if self._size <= MAX_JSON_BYTES:
                self._body.append(data)
                return
            data = b"".join((*self._body, data))
            self._head, self._body = data[:EDGE_BYTES], []
        self._tail = (self._tail + data)[-EDGE_BYTES:]

    def _observe_edges(self, head: bytes, tail: bytes) -> None:
        """Read a JSON body too large to keep from its edges: the ``id`` and ``model`` that begin it, the ``usage``
        that ends it (see `EDGE_BYTES`).

        Only a key's opening quote is unescaped and followed, after the closing one, by a colon (a quote inside a
        string is escaped), so these patterns find keys only: the first ``id`` and ``model`` keys are the
        completion's own (a tool call's ``id`` comes later, in the choices), and so is the last ``usage``.

        Raises:
            BodyTooLargeError: The end holds no usage object.
        """
        decoder = json.JSONDecoder()
        found: dict[str, Any] = {}
        text = head.decode("utf-8", "replace")
        for key in ("id", "model"):
            match = re.search(rf'"{key}"\s*:\s*(?=")', text)
            if match is not None:
                found[key] = decoder.raw_decode(text, match.end())[0]
        self._identify(found)
        text = tail.decode("utf-8", "replace")
        usage = None
        for match in _USAGE_KEY.finditer(text):
            usage = match
        if usage is None:
            raise BodyTooLargeError
        found["usage"], end = decoder.raw_decode(text, usage.end())
        # The tier the request was served at follows the usage (OpenAI's completion ends with it).
        tier = _SERVICE_TIER_KEY.search(text, end)
        if tier is not None:
            found["service_tier"] = decoder.raw_decode(text, tier.end())[0]
        self._observe(found)

    def _on_event(self, data: bytes) -> None:
        """The data of one SSE event: parsed only if it may carry a usage, a tool call or (until known) the model."""
        wants_identity = self._model is None and self._identity_attempts < _IDENTITY_ATTEMPTS
        calls = self._tool_marker.search(data) is not None
        if not wants_identity and not calls and _USAGE_OBJECT.search(data) is None:
            return
        if data.startswith(b"[DONE]"):
            return
        if wants_identity:
            self._identity_attempts += 1
        try:
            event = json.loads(data)
        except ValueError:
            # Non-JSON data events exist in the wild (keep-alives, [DONE] variants); not a failure.
            return
        if isinstance(event, dict):
            if calls:
                self._count_tool_calls(cast("dict[str, Any]", event))
            self._observe(cast("dict[str, Any]", event))

    def _count_tool_calls(self, chunk: dict[str, Any]) -> None:
        """Add the characters of the tool-call names and arguments a stream chunk (or event) carries to the slots."""
        chars = _anthropic_tool_chars(chunk) if self._tool_marker is _ANTHROPIC_TOOL_USE else _openai_tool_chars(chunk)
        if chars:
            for slot in self._targets:
                slot.tool_call_chars += chars

    def _observe(self, obj: dict[str, Any]) -> None:
        """Record the model, id and usage of a completion, a chunk, a Responses-API or an Anthropic stream event."""
        kind = obj.get("type")
        if "usage" not in obj and isinstance(obj.get("response"), dict):
            obj = cast("dict[str, Any]", obj["response"])
        elif kind == "message_start" and isinstance(obj.get("message"), dict):
            # Anthropic names the model and id, and counts the input and cache tokens, only here, inside the
            # message; its output_tokens is a start value. The usage is reported once message_delta completes it.
            message = cast("dict[str, Any]", obj["message"])
            self._identify(message)
            self._tool_marker = _ANTHROPIC_TOOL_USE
            start = message.get("usage")
            if isinstance(start, dict):
                self._start_usage = cast("dict[str, Any]", start)
                # Exact but for the completion (unknown till message_delta): what a stream cut off before has.
                self._partial = _provider_usage({**start, "output_tokens": None}, self._model, self._response_id)
                if self._partial is not None:
                    for slot in self._targets:
                        slot.partial_usage = self._partial
            return
        self._identify(obj)
        usage = obj.get("usage")
        if usage is None and isinstance(groq := obj.get("x_groq"), dict):
            # Groq's stream reports it in its last chunk's x_groq member, also when include_usage was not asked for.
            usage = groq.get("usage")
        if isinstance(usage, dict):
            usage = cast("dict[str, Any]", usage)
            if kind == "message_delta" and self._start_usage is not None:
                # message_delta's counts are cumulative; the API long sent only output_tokens there, and now
                # sends the other fields too (or null). Later values that are there win.
                usage = {**self._start_usage, **{key: value for key, value in usage.items() if value is not None}}
            found = _provider_usage(usage, self._model, self._response_id, obj.get("service_tier"))
            if found is not None:
                for slot in self._targets:
                    slot.usage = found
                    slot.usages.append(found)
                    if self._partial is not None and slot.partial_usage is self._partial:
                        slot.partial_usage = None  # completed (another stream's, in an enclosing slot, stays)

    def _identify(self, obj: Mapping[str, Any]) -> None:
        """Record the ``model`` and ``id`` that ``obj`` names, if any."""
        model = obj.get("model")
        if isinstance(model, str) and model:
            self._model = model
            for slot in self._targets:
                slot.model = model
        response_id = obj.get("id")
        if isinstance(response_id, str) and response_id:
            self._response_id = response_id
            for slot in self._targets:
                slot.response_id = response_id


# --------------------------------------------------------------------------- transport


class _TapStream(httpx2.AsyncByteStream):
    """Passes a response body through unchanged, showing each chunk to a `_BodyTap` first."""

    def __init__(self, stream: httpx2.AsyncByteStream, tap: _BodyTap) -> None:
        self._stream = stream
        self._tap = tap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        tap = self._tap
        iterator = self._stream.__aiter__()
        try:
            async for chunk in iterator:
                # Before the yield: the consumer may stop right after the last event (HTTP/2 does not drain).
                tap.feed(chunk)
                yield chunk
            tap.finish()
        finally:
            # Like httpx2's own BoundAsyncStream: close the inner generator now, not at garbage collection.
            if isinstance(iterator, AsyncGenerator):
                await iterator.aclose()

    async def aclose(self) -> None:
        await self._stream.aclose()


_STREAM_CLASSES: dict[type, type[_TapStream]] = {httpx2.AsyncByteStream: _TapStream}
_STREAM_CLASSES_LOCK = threading.Lock()


def _tap_stream_class(stream: object) -> type[_TapStream] | None:
    """The wrapper class whose instances the owning client's ``isinstance`` check accepts.

    httpx2 clients assert ``isinstance(response.stream, httpx2.AsyncByteStream)``; a legacy
    ``httpx.AsyncClient`` passed as ``http_client`` asserts the same against ``httpx``'s class, so
    for those the wrapper also derives from that class (httpx is then necessarily imported already).
    """
    if isinstance(stream, httpx2.AsyncByteStream):
        return _TapStream
    base = loaded_class("httpx", "AsyncByteStream")
    if base is None or not isinstance(stream, base):
        return None
    with _STREAM_CLASSES_LOCK:
        cls = _STREAM_CLASSES.get(base)
        if cls is None:
            cls = cast("type[_TapStream]", type("_LegacyHttpxTapStream", (_TapStream, base), {}))
            _STREAM_CLASSES[base] = cls
    return cls


def _content_if_read(response: httpx2.Response) -> bytes | None:
    """The body of a response that was read already, or ``None`` while it is still to come."""
    not_read: tuple[type[Exception], ...] = (httpx2.ResponseNotRead,)
    legacy = loaded_class("httpx", "ResponseNotRead", Exception)  # a legacy httpx client's response
    if legacy is not None:
        not_read += (legacy,)
    try:
        content = response.content
    except not_read:
        return None
    return content if isinstance(content, bytes) else None


def _tapped_headers(raw: list[tuple[bytes, bytes]]) -> tuple[str | None, str, str | None]:
    """The ``x-request-id``, ``content-type`` and ``content-encoding`` of a response, in one pass over its headers.

    One pass, not three ``headers.get``: each of those lowers and scans every header (a provider sends
    twenty), and this runs on every tapped response. As ``headers.get`` does, a repeated header's values
    are joined with ``", "``. Values are read as Latin-1, which never fails and reads ASCII, what these
    hold, as ASCII.
    """
    found: dict[bytes, str] = {}
    for name, value in raw:
        key = name.lower()
        if key in _TAPPED_HEADERS:
            text = value.decode("latin-1")
            found[key] = f"{found[key]}, {text}" if key in found else text
    return found.get(b"x-request-id"), found.get(b"content-type", ""), found.get(b"content-encoding")


_TAPPED_HEADERS: Final = frozenset({b"x-request-id", b"content-type", b"content-encoding"})


def _tap_response(response: httpx2.Response, slot: UsageSlot) -> None:
    """Record the response's status and arrange for its body to be inspected. Never raises."""
    targets = slot._chain()
    try:
        request_id, content_type, content_encoding = _tapped_headers(response.headers.raw)
        for target in targets:
            target.responses += 1
            target.status = response.status_code
            target.request_id = request_id
            target.body_error = None
            target.body_shape = None
            target.stream_cut = False
        # Error bodies never carry usage; leave them alone.
        if response.status_code >= 400:
            return
        # The openai and anthropic SDKs read a stream's body as events and a completion's as JSON, whatever its
        # Content-Type: servers label streams application/x-ndjson, application/json or text/plain (LitServe, a
        # framework's plain StreamingResponse) and completions text/plain. So only text/event-stream is taken at its
        # word; any other body is read as what it is, JSON if it begins with "{", else events.
        sse = True if "text/event-stream" in content_type.lower() else None
        try:
            decoder = content_decoder(content_encoding, limit=MAX_JSON_BYTES)
        except Exception:
            for target in targets:
                target.tap_failures += 1
            _logger.debug("usage tap: cannot decode Content-Encoding %r", content_encoding)
            return
        tap = _BodyTap(targets, sse=sse, decoder=decoder)
        # A response built in memory (e.g. by a mock transport) is already read; its stream is never iterated.
        content = _content_if_read(response)
        if content is not None:
            tap.feed(content)
            tap.finish()
            return
        stream_class = _tap_stream_class(response.stream)
        if stream_class is not None:
            response.stream = stream_class(cast("httpx2.AsyncByteStream", response.stream), tap)
    except Exception:
        for target in targets:
            target.tap_failures += 1
        _logger.debug("usage tap: could not tap a response; it was passed on unchanged", exc_info=True)


class UsageTapTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` async transport that shows response bodies to the active `UsageSlot`.

    Delegates everything to the wrapped transport. `attach_usage_tap` installs it on
    AutoGen's OpenAI and Anthropic clients; it can also wrap the transport of any ``httpx2.AsyncClient``
    used with ``openai.AsyncOpenAI(http_client=...)`` directly.
    """

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        """Wrap a transport.

        Args:
            transport: The transport that really sends the requests.
        """
        self.wrapped = transport

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send the request through the wrapped transport and tap the response if a capture is active.

        Args:
            request: The request.

        Returns:
            The wrapped transport's response; with a capture active its stream is a pass-through tap.
        """
        # Bound now, in the sending task's context: the body may be read later, or by another task.
        slot = CURRENT_SLOT.get()
        response = await self.wrapped.handle_async_request(request)
        if slot is not None:
            _tap_response(response, slot)
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.wrapped.aclose()

    async def __aenter__(self) -> UsageTapTransport:
        await self.wrapped.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.wrapped.__aexit__(exc_type, exc_value, traceback)

    def __getattr__(self, name: str) -> Any:
        # Code that inspects the transport (e.g. its connection pool) still finds what it looks for.
        # Dunder and ``wrapped`` lookups must fail normally, or copy/pickle would recurse forever.
        if name.startswith("__") or name == "wrapped":
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"<UsageTapTransport wrapping {self.wrapped!r}>"


# --------------------------------------------------------------------------- attaching

_logged: set[str] = set()


def _debug_once(key: str, message: str, *args: object) -> None:
    if key in _logged:
        return
    _logged.add(key)
    _logger.debug(message, *args)


def _tapped(transport: object) -> object:
    if isinstance(transport, UsageTapTransport):
        return transport
    return UsageTapTransport(cast("httpx2.AsyncBaseTransport", transport))


def attach_usage_tap(client: object) -> bool:
    """Install the usage tap on an AutoGen OpenAI-family or Anthropic model client.

    Works for ``OpenAIChatCompletionClient``, ``AzureOpenAIChatCompletionClient``,
    ``AnthropicChatCompletionClient`` and anything whose ``_client`` is an
    ``openai.AsyncOpenAI`` or an ``anthropic.AsyncAnthropic`` (not Bedrock's
    ``AsyncAnthropicBedrock``, whose streams are AWS's binary event stream). Idempotent. The HTTP client
    is modified in place, so every client sharing it (e.g. one ``http_client`` passed to
    several model clients) is tapped too; that is harmless, since only requests sent
    inside `capture_provider_usage` are inspected. A client rebuilt by unpickling gets a
    fresh SDK client and must be tapped again.

    Args:
        client: The model client.

    Returns:
        True if the tap is installed (now or before); False, having changed nothing, for
        other clients or when the internals are not where this version expects them
        (logged once at DEBUG).
    """
    kind = type(client).__qualname__
    try:
        sdk = sdk_client_of(client)
        anthropic_sdk = loaded_class("anthropic", "AsyncAnthropic")
        if not isinstance(sdk, openai.AsyncOpenAI) and (anthropic_sdk is None or not isinstance(sdk, anthropic_sdk)):
            _debug_once(
                f"no-sdk:{kind}",
                "usage tap: %s has no openai.AsyncOpenAI or anthropic.AsyncAnthropic at ._client; not tapped",
                kind,
            )
            return False
        http = getattr(sdk, "_client", None)
        transport = getattr(http, "_transport", None)
        mounts = getattr(http, "_mounts", None)
        if (
            http is None
            or not callable(getattr(transport, "handle_async_request", None))
            or not isinstance(mounts, dict)
        ):
            _debug_once(
                f"no-transport:{type(http).__qualname__}",
                "usage tap: the HTTP client of %s (%s) has no async _transport/_mounts; not tapped",
                kind,
                type(http).__qualname__,
            )
            return False
        # Check every mount first so a surprise leaves the client exactly as it was.
        mounts_typed = cast("dict[object, object]", mounts)
        if not all(
            value is None or callable(getattr(value, "handle_async_request", None)) for value in mounts_typed.values()
        ):
            _debug_once(f"bad-mount:{kind}", "usage tap: an unexpected mounted transport on %s; not tapped", kind)
            return False
        new_mounts = {key: None if value is None else _tapped(value) for key, value in mounts_typed.items()}
        http._transport = _tapped(transport)
        mounts_typed.update(new_mounts)
    except Exception:
        _debug_once(f"error:{kind}", "usage tap: could not attach to %s", kind)
        return False
    return True
