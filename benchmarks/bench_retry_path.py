"""What the retry layer costs a call: on success, and when the first attempt fails and a retry succeeds.

The inner client answers at once from memory; the "flaky" one raises a
``TimeoutError`` (classified ``TIMEOUT``, retried) on every other attempt.
Test mode is on, so the retry's wait is zero and what is left is the layer's
own cost: the deadline's timer and the budget on success; the tenacity loop
(classifying, the composed stop and wait strategies, the RetryEvent, the
hooks) and a second attempt on the retry path. The log line is switched off
(``set_on_retry_hooks([])``): its cost is the logging configuration's, not the
layer's. Circuit, sanitiser and accounting are off.

Times are CPU time of this process (``time.process_time``), best of the
rounds: on the shared 2-core machines here wall time under load varied by
half between runs, CPU time by a few per cent.

Measured here for ``create``, µs of CPU per call, median of three interleaved
runs each, with the ``autogen_reliability`` logger disabled in both (the
hand-written strategies logged without a hook to remove): the hand-written
strategies cost 13.6 on success (over no retry layer) and 166.5 more on the
retry path; tenacity's composed strategies 15.0 and 166.9.

Run: ``python -m benchmarks.bench_retry_path``
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage

from autogen_reliability import ReliableChatCompletionClient, RetryBudget, RetryPolicy
from autogen_reliability.retry import set_on_retry_hooks, set_testing
from benchmarks.bench_wrapper_overhead import RESULT, InstantClient, per_call_seconds
from benchmarks.timing import quick_run, refuse_other_arguments

CALLS = 100 if quick_run() else 2_000
ROUNDS = 1 if quick_run() else 15


class FlakyClient(InstantClient):
    """Fails every other attempt with a retryable error, answers the rest at once."""

    def __init__(self) -> None:
        self.attempts = 0

    async def create(self, messages: Sequence[LLMMessage], **kwargs: Any) -> CreateResult:
        self.attempts += 1
        if self.attempts % 2:
            raise TimeoutError("slow")
        return RESULT

    async def create_stream(
        self, messages: Sequence[LLMMessage], **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        self.attempts += 1
        if self.attempts % 2:
            raise TimeoutError("slow")
        yield "ok"
        yield RESULT


async def cpu_per_call(client: ChatCompletionClient, *, stream: bool) -> float:
    return await per_call_seconds(client, stream=stream, calls=CALLS, rounds=ROUNDS, clock=time.process_time)


async def main() -> None:
    set_testing(True)
    set_on_retry_hooks([])
    try:
        bare: dict[str, Any] = {"circuit": None, "sanitize": None, "track_usage": False}
        # A budget that refills by a token per call: every failure of this benchmark is retried.
        policy = RetryPolicy(budget=RetryBudget(ratio=1.0))
        none = ReliableChatCompletionClient(InstantClient(), retry=None, **bare)
        succeeding = ReliableChatCompletionClient(InstantClient(), retry=policy, **bare)
        flaky = ReliableChatCompletionClient(FlakyClient(), retry=policy, **bare)
        print(f"{CALLS} calls x {ROUNDS} rounds, best round, CPU time per call:")
        for stream in (False, True):
            kind = "create_stream" if stream else "create"
            bare_cost = await cpu_per_call(none, stream=stream)
            success = await cpu_per_call(succeeding, stream=stream)
            retried = await cpu_per_call(flaky, stream=stream)
            print(
                f"  {kind:<14} no retry layer {bare_cost * 1e6:6.1f} us; "
                f"success {success * 1e6:6.1f} us (+{(success - bare_cost) * 1e6:5.1f}); "
                f"one failure + retry {retried * 1e6:6.1f} us (+{(retried - success) * 1e6:6.1f})"
            )
    finally:
        set_testing(False)
        set_on_retry_hooks(None)


if __name__ == "__main__":
    refuse_other_arguments("retry_path")
    asyncio.run(main())
