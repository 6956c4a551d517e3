"""Latency of one chat completion through the real openai SDK to FakeOpenAIServer over loopback.

Run with ``python -m benchmarks fake_server [requests]`` (``--quick``: a smoke run). Each request is
sequential on one keep-alive connection, so the numbers are per-request round trips: SDK overhead + HTTP + the fake's
handling. Roughly 40 ms per request would mean Nagle's algorithm and delayed ACKs are back.

Then the server's own timing, which the tests check only by what it does, not by the clock:

- ``chunk_delay``: the gaps between a paced stream's events as a client reads them. Seen here
  at 20 ms: median 20.2 ms, p95 20.4 ms; a gap can look shorter (15 ms) when the client read the
  event before it late, the mean stays at the delay.
- ``stop()``: how long it takes with idle keep-alive connections open, and with a reply sleeping
  on an hour's ``delay``. Seen here: 50 ms (one poll interval of ``serve_forever``; max 51 and
  54 ms), never the delay, never the clients' idle time.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import openai
from openai.types.chat import ChatCompletionMessageParam

from autogen_reliability.testing import FakeOpenAIServer, FakeReply
from benchmarks.timing import quick_run, refuse_other_arguments

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
QUICK = quick_run()
WARMUP = 2 if QUICK else 10
CHUNK_DELAY = 0.02
STOPS = 2 if QUICK else 20


def report(name: str, samples: list[float]) -> None:
    ms = sorted(sample * 1000 for sample in samples)
    p95 = ms[int(len(ms) * 0.95) - 1]
    print(
        f"{name:<24} n={len(ms):<4} min={ms[0]:6.2f} ms  mean={statistics.fmean(ms):6.2f} ms  "
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


def chunk_delay_gaps(words: int = 50) -> list[float]:
    """Seconds between the events of one stream paced by ``CHUNK_DELAY``, as a client reads them."""
    reply = FakeReply.text(" ".join(["word"] * words), chunk_delay=CHUNK_DELAY)
    with FakeOpenAIServer(default=reply) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        arrivals = []
        while line := response.readline():
            if line.startswith(b"data: "):
                arrivals.append(time.perf_counter())
        conn.close()
    return [later - earlier for earlier, later in itertools.pairwise(arrivals)]


def stop_with_idle_connections() -> float:
    server = FakeOpenAIServer(default=FakeReply.text("hi")).start()
    conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(3)]
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES})
    for conn in conns:
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    start = time.perf_counter()
    server.stop()
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.close()
    return elapsed


def stop_with_a_delayed_reply() -> float:
    server = FakeOpenAIServer(default=FakeReply.text("never", delay=3600)).start()

    def call() -> None:
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        with client, contextlib.suppress(openai.APIConnectionError):  # the reset that stop() makes
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    caller = threading.Thread(target=call)
    caller.start()
    server.wait_for_requests(1)
    start = time.perf_counter()
    server.stop()
    caller.join()  # the client has its answer (the reset) too
    return time.perf_counter() - start


def server_timing() -> None:
    report(f"chunk_delay={CHUNK_DELAY * 1000:.0f} ms gaps", chunk_delay_gaps(5 if QUICK else 50))
    report("stop(), idle keep-alive", [stop_with_idle_connections() for _ in range(STOPS)])
    report("stop(), delayed reply", [stop_with_a_delayed_reply() for _ in range(STOPS)])


if __name__ == "__main__":
    refuse_other_arguments("fake_server", requests=True)
    counts = [int(argument) for argument in sys.argv[1:] if argument.isdigit()]
    asyncio.run(main(counts[0] if counts else 5 if QUICK else 200))
    server_timing()
