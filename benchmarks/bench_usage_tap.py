"""What the usage tap costs: per request and per streamed chunk.

Two views:

* **In memory** (precise): the exact bytes FakeOpenAIServer sends for a completion
  and for a stream with a usage chunk are pushed through the tap's pass-through
  stream and, for comparison, through a plain pass-through, with no network.
  The difference is the tap's own work: copying/parsing a JSON body, or splitting
  SSE lines and parsing only the chunks that matter.
* **End to end** (noisy): the real openai SDK against FakeOpenAIServer over
  loopback, untapped, tapped with no capture active (the tap only does one
  ContextVar lookup per request then), and tapped inside ``capture_provider_usage``.
  Rounds are interleaved and the best round is kept. Loopback HTTP through a
  threaded Python server costs about a millisecond per request, so differences of
  a few microseconds are below the noise here: read the in-memory numbers for
  the cost, these for "nothing got slower".

Run: ``python -m benchmarks.bench_usage_tap``
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from autogen_reliability.providers._usage_tap import (
    UsageSlot,
    _BodyTap,
    _TapStream,
    attach_usage_tap,
    capture_provider_usage,
)
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage
from benchmarks.timing import quick_run, refuse_other_arguments

MODEL = "gpt-4o-mini"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
USAGE = FakeUsage(prompt_tokens=1200, completion_tokens=200, cached_tokens=1024, reasoning_tokens=64)
SHORT = "Hello there, how can I help you today?"
LONG = " ".join(f"word{i}" for i in range(200))  # 200 content chunks when streamed
CALL = [("record_words", {"words": [f"word{i}" for i in range(50)]})]  # 203 tool-call chunks when streamed
QUICK = quick_run()
MEMORY_ROUNDS = 1 if QUICK else 7
MEMORY_REPEAT = 20 if QUICK else 2_000
E2E_ROUNDS = 1 if QUICK else 5
E2E_REQUESTS = 5 if QUICK else 100


class _ChunkStream(httpx2.AsyncByteStream):
    """An in-memory response body, delivered in the given pieces."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class _PlainStream(httpx2.AsyncByteStream):
    """The baseline: a pass-through wrapper doing nothing else."""

    def __init__(self, stream: httpx2.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk


async def _body(server: FakeOpenAIServer, content: str, *, stream: bool, tool_call: bool = False) -> bytes:
    server.enqueue(FakeReply.tool_calls(CALL, usage=USAGE) if tool_call else FakeReply.text(content, usage=USAGE))
    payload: dict[str, object] = {"model": MODEL, "messages": MESSAGES}
    if stream:
        payload |= {"stream": True, "stream_options": {"include_usage": True}}
    async with httpx2.AsyncClient() as http:
        response = await http.post(f"{server.base_url}/chat/completions", json=payload)
    return response.content


def _sse_events(body: bytes) -> list[bytes]:
    # One network chunk per event, as a real stream with some latency between events arrives.
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


async def _drain_memory(chunks: list[bytes], *, tapped: bool, sse: bool) -> float:
    best = float("inf")
    for _ in range(MEMORY_ROUNDS):
        start = time.perf_counter()
        for _ in range(MEMORY_REPEAT):
            inner = _ChunkStream(chunks)
            if tapped:
                slot = UsageSlot()
                stream: httpx2.AsyncByteStream = _TapStream(inner, _BodyTap((slot,), sse=sse, decoder=None))
            else:
                stream = _PlainStream(inner)
            async for _chunk in stream:
                pass
        best = min(best, (time.perf_counter() - start) / MEMORY_REPEAT)
    if tapped:  # the last run really found the usage
        assert slot.usage is not None
        assert slot.usage.cached_tokens == USAGE.cached_tokens
    return best


async def in_memory(server: FakeOpenAIServer) -> None:
    print(f"In memory, best of {MEMORY_ROUNDS} rounds x {MEMORY_REPEAT} bodies:")
    cases = [
        ("JSON completion, short", [await _body(server, SHORT, stream=False)], False),
        ("JSON completion, 200 words", [await _body(server, LONG, stream=False)], False),
        ("SSE stream, 200 words", _sse_events(await _body(server, LONG, stream=True)), True),
        # Every chunk of a tool call is parsed, to count the characters of its arguments.
        ("SSE stream, tool call", _sse_events(await _body(server, "", stream=True, tool_call=True)), True),
    ]
    for name, chunks, sse in cases:
        plain = await _drain_memory(chunks, tapped=False, sse=sse)
        tapped = await _drain_memory(chunks, tapped=True, sse=sse)
        size = sum(len(chunk) for chunk in chunks)
        extra = tapped - plain
        line = f"  {name:<28} {size:6d} B in {len(chunks):3d} chunks: plain {plain * 1e6:7.2f} us, "
        line += f"tapped {tapped * 1e6:7.2f} us (+{extra * 1e6:6.2f} us/body"
        if len(chunks) > 1:
            line += f", +{extra / len(chunks) * 1e9:5.0f} ns/chunk"
        print(line + ")")


async def _best_round(call: Callable[[], Awaitable[object]], *, capture: bool) -> float:
    start = time.perf_counter()
    for _ in range(E2E_REQUESTS):
        if capture:
            with capture_provider_usage():
                await call()
        else:
            await call()
    return (time.perf_counter() - start) / E2E_REQUESTS


async def end_to_end(server: FakeOpenAIServer) -> None:
    print(f"End to end (openai SDK -> FakeOpenAIServer), best of {E2E_ROUNDS} interleaved rounds x {E2E_REQUESTS}:")
    async with (
        openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as plain,
        openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as tapped,
    ):
        # attach_usage_tap takes anything whose ``_client`` is an AsyncOpenAI, as AutoGen's clients are.
        assert attach_usage_tap(SimpleNamespace(_client=tapped))

        def completion(sdk: openai.AsyncOpenAI) -> Callable[[], Awaitable[object]]:
            async def call() -> object:
                return await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)

            return call

        def stream(sdk: openai.AsyncOpenAI) -> Callable[[], Awaitable[object]]:
            async def call() -> object:
                chunks = await sdk.chat.completions.create(
                    model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
                )
                return [chunk async for chunk in chunks]

            return call

        for name, make, content in (
            ("completion", completion, SHORT),
            ("stream, 200 chunks", stream, LONG),
        ):
            server.default = FakeReply.text(content, usage=USAGE)
            variants = {
                "untapped": (make(plain), False),
                "tapped, no capture": (make(tapped), False),
                "tapped, captured": (make(tapped), True),
            }
            for call, capture in variants.values():  # warm up connections and code paths
                await _best_round(call, capture=capture)
            best = dict.fromkeys(variants, float("inf"))
            for _ in range(E2E_ROUNDS):
                for label, (call, capture) in variants.items():
                    best[label] = min(best[label], await _best_round(call, capture=capture))
            base = best["untapped"]
            print(f"  {name}:")
            for label, seconds in best.items():
                print(f"    {label:<20} {seconds * 1e3:7.3f} ms/request ({(seconds - base) * 1e6:+7.1f} us)")


async def main() -> None:
    with FakeOpenAIServer(MODEL) as server:
        await in_memory(server)
        await end_to_end(server)


if __name__ == "__main__":
    refuse_other_arguments("usage_tap")
    asyncio.run(main())
