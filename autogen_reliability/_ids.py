"""Ids of calls, attempts and usage rows: time-ordered UUIDs, made without a system call."""

from __future__ import annotations

import os
import random
import time
import uuid

__all__ = ["time_ordered_uuid"]

# The random bits of our ids. Not os.urandom: it releases the GIL for its system call, and an event
# loop that releases the GIL once per call hands it to the recorder's writer thread each time and
# then waits for it to come back (measured in benchmarks/bench_recorder.py: p99 loop lateness at 25k
# events/s fell from 2-3 ms to 1 ms without it). Ids must be unique, not secret: a generator of our
# own (random.seed() elsewhere does not touch it), seeded from os.urandom, and again in a forked child.
_random = random.Random()  # noqa: S311
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_random.seed)


def time_ordered_uuid() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): the Unix time in milliseconds, then 74 random bits.

    Ids made one after another sort together, so they land next to each other in
    the store's unique indexes: with random UUIDv4 ids, SQLite's insert rate fell
    to about half, and kept falling as the table grew (measured in
    ``benchmarks/bench_store.py``).
    """
    value = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | _random.getrandbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # the RFC 4122 variant
    return uuid.UUID(int=value)
