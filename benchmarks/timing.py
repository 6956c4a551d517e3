"""The measuring loop the benchmarks share."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_per_call(call: Callable[[], object], calls: int, rounds: int) -> float:
    """Seconds per call in the fastest of ``rounds`` rounds of ``calls`` calls.

    The best round estimates the cost; slower rounds measure the neighbours' load
    (these machines are shared), so compare ratios within one run.
    """
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best
