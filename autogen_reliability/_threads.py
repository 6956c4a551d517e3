"""Sharing the interpreter with the event loop, for our background threads."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Final, TypeVar

__all__ = ["GIL_HANDOFF_S", "SLICE_ROWS", "hand_over_gil", "in_slices"]

GIL_HANDOFF_S: Final = 0.0001
"""How long a background thread sleeps to let a thread waiting for the GIL take it."""

SLICE_ROWS: Final = 32
"""Rows handled between two hand-overs: well under a millisecond of encoding, inserting or spooling."""

_Item = TypeVar("_Item")


def hand_over_gil() -> None:
    """Let a thread that waits for the GIL (the event loop's) run now, not at the next switch interval.

    A thread running Python holds the GIL until it blocks or until another
    thread has waited for the interpreter's switch interval (5 ms), so an event
    loop sharing the process with a busy writer wakes up to 5 ms late, again and
    again. Releasing the GIL briefly is not enough: ``time.sleep(0)``, or a C
    call that releases it per row (the sqlite3 module does), takes it back
    before the waiting thread has woken up, and the waiter starts its 5 ms over.
    A tenth of a millisecond asleep is long enough for the waiter to take it
    (measured in ``benchmarks/bench_recorder.py``). Call this between slices of
    work that each hold the GIL well under a millisecond.
    """
    time.sleep(GIL_HANDOFF_S)


def in_slices(items: Sequence[_Item], size: int = SLICE_ROWS) -> Iterator[Sequence[_Item]]:
    """``items`` in slices of ``size``, handing the GIL over between two slices."""
    for start in range(0, len(items), size):
        if start:
            hand_over_gil()
        yield items[start : start + size]
