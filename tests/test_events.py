"""Ids of calls and usage events: UUIDv7 layout, time order, and uniqueness across processes."""

from __future__ import annotations

import os
import random
import time
import uuid
from datetime import UTC, datetime

import pytest

from autogen_reliability import _ids
from autogen_reliability._ids import time_ordered_uuid


def test_layout_is_uuid_version_7() -> None:
    before = time.time_ns() // 1_000_000
    made = time_ordered_uuid()
    after = time.time_ns() // 1_000_000
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after  # the first 48 bits: Unix milliseconds


class MillisecondClock:
    """Stands in for the ``time`` module where the ids are made: each reading is one millisecond later."""

    def __init__(self) -> None:
        self.ns = time.time_ns()

    def time_ns(self) -> int:
        self.ns += 1_000_000
        return self.ns


def test_ids_sort_in_the_order_they_were_made_across_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ids, "time", MillisecondClock())  # each id a millisecond after the last, no waiting
    made = [time_ordered_uuid() for _ in range(5)]
    assert sorted(made) == made


def test_a_hundred_thousand_ids_are_distinct() -> None:
    assert len({time_ordered_uuid() for _ in range(100_000)}) == 100_000


def test_seeding_the_global_random_does_not_repeat_ids() -> None:
    # Applications (and test suites) seed random for reproducibility; our ids must not follow.
    random.seed(42)
    first = [time_ordered_uuid().int & (2**62 - 1) for _ in range(3)]
    random.seed(42)
    second = [time_ordered_uuid().int & (2**62 - 1) for _ in range(3)]
    assert first != second


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    # A worker forked from a parent (gunicorn, multiprocessing) starts with the parent's generator state.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        os.write(write, time_ordered_uuid().bytes)
        os._exit(0)
    os.close(write)
    mine = time_ordered_uuid()
    child = uuid.UUID(bytes=os.read(read, 16))
    os.close(read)
    os.waitpid(pid, 0)
    random_bits = 2**74 - 1
    assert child.int & random_bits != mine.int & random_bits
    assert abs((child.int >> 80) - int(datetime.now(UTC).timestamp() * 1000)) < 60_000
