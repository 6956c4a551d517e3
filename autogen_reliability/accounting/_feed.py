"""The usage events of this process as they are recorded, for what must know at once (budgets, cost limits).

The ledger is the truth for every process sharing a database, but a row
reaches it only when the recorder's thread writes it. What needs this
process's spend before then subscribes here: the accounting stage publishes
each event, priced, right before handing it to the recorder, on the thread that
ran the call: an event is published before its row can be in the ledger (a
budget that read the row's sum first would count it twice). A listener must
be quick and must not raise (one that does is logged and kept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .._subscribers import Subscribers
from ._events import UsageEvent
from ._recorder import UsageRecorder

__all__ = ["RecordedListener", "listeners", "publish", "subscribe"]

logger = logging.getLogger("autogen_reliability")

RecordedListener = Callable[[UsageEvent, UsageRecorder], None]
"""Called with each event and the recorder it was handed to (which says which ledger it goes to)."""

listeners: Subscribers[RecordedListener] = Subscribers()
"""The listeners subscribed (``listeners.current``); one feed per process."""


def subscribe(listener: RecordedListener) -> Callable[[], None]:
    """Calls ``listener`` with every usage event this process records from now on; returns the unsubscriber."""
    return listeners.subscribe(listener)


def publish(event: UsageEvent, recorder: UsageRecorder) -> None:
    """Hands ``event`` to every listener; one that raises is logged, and the others still see it."""
    for listener in listeners.current:
        try:
            listener(event, recorder)
        except Exception:
            logger.exception("a usage listener failed on event %s", event.event_id)
