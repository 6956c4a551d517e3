"""The budget stage: the outermost layer, so a call its budget refuses sends no request and records no row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING

from autogen_core.models import CreateResult

from .._context import Attribution
from .._pipeline import CreateHandler, Layer, Request, StreamHandler, StreamItem

if TYPE_CHECKING:
    from ._policy import BudgetAlert
    from ._tracker import BudgetTracker

__all__ = ["BudgetLayer"]


class BudgetLayer(Layer):
    """Checks the call's budget before anything else runs: over it, :class:`BudgetExceededError` and no request."""

    def __init__(
        self,
        tracker: BudgetTracker,
        on_alert: Callable[[BudgetAlert], object] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.tracker = tracker
        # This wrapper's hook and clock: the tracker is shared by wrappers whose policies have others.
        self.on_alert = on_alert
        self.clock = clock

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        await self._admit(request.call.attribution)
        return await call_next(request)

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        await self._admit(request.call.attribution)
        async with aclosing(call_next(request)) as stream:
            async for item in stream:
                yield item

    async def _admit(self, attribution: Attribution) -> None:
        reading = self.tracker.admit(attribution, on_alert=self.on_alert, clock=self.clock)
        while reading is not None:
            # The first check of a key waits for its figure, on a reader thread; shielded, so a caller
            # that is cancelled meanwhile leaves the read (shared with every other waiter) to finish. Again
            # if the key's state (and the figure read) was let go before this call could use it.
            await asyncio.shield(asyncio.wrap_future(reading))
            reading = self.tracker.admit(attribution, waited=True, on_alert=self.on_alert, clock=self.clock)
