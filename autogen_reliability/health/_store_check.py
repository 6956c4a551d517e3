"""The usage store's round trip: ``SELECT 1`` on a thread of its own, bounded by a timeout, one at a time.

A database call blocks, so it never runs on the event loop. A database that
hangs keeps its thread; the probe starts no second one meanwhile: checks that
come while a round trip is still under way wait for that one (each for its own
timeout), so a hung database costs one thread, not one per check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass

from sqlalchemy import text

from .._redaction import first_line
from ..storage._store import UsageStore
from ._report import shown

__all__ = ["RoundTrip", "StoreChecker"]


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """Whether ``SELECT 1`` answered, in how long, or why not."""

    reachable: bool
    seconds: float | None = None
    error: str | None = None


class StoreChecker:
    """Runs the round trips of one store."""

    def __init__(self, store: UsageStore, timeout: float) -> None:
        self.store = store
        self._timeout = timeout
        self._lock = threading.Lock()
        self._in_flight: concurrent.futures.Future[RoundTrip] | None = None

    async def round_trip(self) -> RoundTrip:
        """``SELECT 1`` now, or the round trip under way; unreachable after ``timeout`` without an answer."""
        with self._lock:
            future = self._in_flight
            if future is None or future.done():
                future = self._in_flight = concurrent.futures.Future()
                thread = threading.Thread(
                    target=self._select_one, args=(future,), name="autogen-reliability-health-store", daemon=True
                )
                thread.start()
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(asyncio.wrap_future(future))
        except TimeoutError:
            return RoundTrip(False, error=f"no answer within {self._timeout:g} s")

    def _select_one(self, future: concurrent.futures.Future[RoundTrip]) -> None:
        start = time.perf_counter()
        try:
            with self.store.engine.connect() as connection:
                connection.execute(text("SELECT 1")).scalar_one()
        except BaseException as error:
            # The driver's message (host, port, database, file) helps; the redaction keeps credentials out.
            message = shown(f"{type(error).__name__}: {first_line(error)}")
            future.set_result(RoundTrip(False, error=message))  # else every later check would wait on it
            if not isinstance(error, Exception):
                raise
            return
        future.set_result(RoundTrip(True, seconds=time.perf_counter() - start))
