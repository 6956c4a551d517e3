"""Latency of one chat completion through the real openai SDK to FakeOpenAIServer over loopback.

Run with ``python benchmarks/bench_fake_server.py [requests]``. Each request is sequential on one
keep-alive connection, so the numbers are per-request round trips: SDK overhead + HTTP + the fake's
handling. Roughly 40 ms per request would mean Nagle's algorithm and delayed ACKs are back.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import openai
from openai.types.chat import ChatCompletionMessageParam

from autogen_reliability.testing import FakeOpenAIServer, FakeReply

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
WARMUP = 10


def report(name: str, samples: list[float]) -> None:
    ms = sorted(sample * 1000 for sample in samples)
    p95 = ms[int(len(ms) * 0.95) - 1]
    print(
        f"{name:<24} n={len(ms):<4} mean={statistics.fmean(ms):6.2f} ms  "
        f"median={statistics.median(ms):6.2f} ms  p95={p95:6.2f} ms  max={ms[-1]:6.2f} ms"
    )


async def measure(count: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(WARMUP):
        await call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


async def main(count: int) -> None:
    with FakeOpenAIServer(default=FakeReply.text("Hello there, how can I help you today?")) as server:
        async with openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as client:

            async def completion() -> object:
                return await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

            async def stream() -> object:
                chunks = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
                return [chunk async for chunk in chunks]

            report("async completion", await measure(count, completion))
            report("async stream", await measure(count, stream))

        with openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as sync_client:
            samples = []
            for _ in range(WARMUP + count):
                start = time.perf_counter()
                sync_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                samples.append(time.perf_counter() - start)
            report("sync completion", samples[WARMUP:])
        print(f"TCP connections opened: {server.connection_count} for {server.request_count} requests")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
