"""What the wrapper adds to one call, measured against the same inner client called directly.

The inner client answers at once from memory, so the difference is the
wrapper's own cost on the success path: resolving attribution, the Call and
Request objects, the pipeline, the attempt event, and with the default policies
the retry layer (budget deposit; tenacity only runs after a failure), the
circuit breaker and the sanitiser (on a short answer). Machines here are shared and noisy: read the
difference and the ratio within one run, not the absolute numbers across runs.

Run: ``python -m benchmarks overhead`` (``--quick``: a smoke run)
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelInfo,
    RequestUsage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema

from autogen_reliability import ReliableChatCompletionClient, usage_scope
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.storage import UsageStore
from benchmarks.timing import quick_run, refuse_other_arguments

CALLS = 200 if quick_run() else 20_000
ROUNDS = 1 if quick_run() else 5
RESULT = CreateResult(finish_reason="stop", content="ok", usage=RequestUsage(10, 2), cached=False)
MESSAGES = [UserMessage(content="hi", source="user")]


class InstantClient(ChatCompletionClient):
    """Answers every call at once with the same result."""

    async def create(self, messages: Sequence[LLMMessage], **kwargs: Any) -> CreateResult:
        return RESULT

    async def create_stream(
        self, messages: Sequence[LLMMessage], **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        yield "ok"
        yield RESULT

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return RequestUsage(0, 0)

    def total_usage(self) -> RequestUsage:
        return RequestUsage(0, 0)

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()) -> int:
        return 0

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()) -> int:
        return 0

    @property
    def capabilities(self) -> Any:
        return {}

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(
            vision=False, function_calling=False, json_output=False, family="unknown", structured_output=False
        )


async def per_call_seconds(
    client: ChatCompletionClient,
    *,
    stream: bool,
    calls: int = CALLS,
    rounds: int = ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    # The best round estimates the cost; slower rounds measure the neighbours' load.
    best = float("inf")
    for _ in range(rounds):
        start = clock()
        for _ in range(calls):
            if stream:
                async for _item in client.create_stream(MESSAGES):
                    pass
            else:
                await client.create(MESSAGES)
        best = min(best, (clock() - start) / calls)
    return best


async def main() -> None:
    inner = InstantClient()
    directory = tempfile.mkdtemp(prefix="bench-overhead-")
    store = UsageStore(f"sqlite:///{directory}/usage.db")
    recorder = UsageRecorder(store, spool_dir=f"{directory}/spool")
    bare = {"retry": None, "circuit": None, "sanitize": None, "track_usage": False}
    wrappers = {
        "no policies": ReliableChatCompletionClient(inner, project="bench", **bare),  # type: ignore[arg-type]
        "defaults, no usage": ReliableChatCompletionClient(inner, project="bench", agent="a", track_usage=False),
        # Recording every call, with the writer thread busy on SQLite meanwhile (100k+ rows a second here).
        "defaults + usage rows": ReliableChatCompletionClient(inner, project="bench", agent="a", recorder=recorder),
    }
    print(f"{CALLS} calls x {ROUNDS} rounds, best round, per call:")
    for stream in (False, True):
        kind = "create_stream" if stream else "create"
        direct = await per_call_seconds(inner, stream=stream)
        print(f"  {kind:<14} direct {direct * 1e6:6.2f} us")
        for name, wrapped in wrappers.items():
            through = await per_call_seconds(wrapped, stream=stream)
            async with usage_scope(session="s", tags={"x": "y"}):
                scoped = await per_call_seconds(wrapped, stream=stream)
            print(
                f"  {'':<14} {name:<22} {through * 1e6:6.2f} us (+{(through - direct) * 1e6:5.2f} us); "
                f"in a usage_scope {scoped * 1e6:6.2f} us (+{(scoped - direct) * 1e6:5.2f} us)"
            )
    recorder.close()
    store.close()
    shutil.rmtree(directory)


if __name__ == "__main__":
    refuse_other_arguments("overhead")
    asyncio.run(main())
