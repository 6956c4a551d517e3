"""Process-wide subscriber lists that the call path reads without taking a lock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Subscribers"]

_Subscriber = TypeVar("_Subscriber")


class Subscribers(Generic[_Subscriber]):
    """Subscribers kept as a tuple that is replaced, never changed in place.

    Subscribing and unsubscribing take a lock; reading :attr:`current` does not,
    so a publisher on the call path reads it once per event and loops over that
    tuple, whatever other threads subscribe meanwhile.
    """

    __slots__ = ("_lock", "current")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: tuple[_Subscriber, ...] = ()
        """The subscribers now, in the order they subscribed."""

    def subscribe(self, subscriber: _Subscriber) -> Callable[[], None]:
        """Adds ``subscriber``; returns the function that removes it again."""
        with self._lock:
            self.current = (*self.current, subscriber)

        def unsubscribe() -> None:
            with self._lock:
                self.current = tuple(known for known in self.current if known is not subscriber)

        return unsubscribe
