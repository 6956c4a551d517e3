"""State shared by every wrapper of one inner client: its circuit breaker, its retry budget.

A team's agents each get a wrapper of their own around one provider client;
an outage of that provider must be judged (circuit) and rationed (budget) once,
not once per agent. The state is kept per inner client and per policy, and goes
when the client does.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["PerClient"]

_Policy = TypeVar("_Policy", bound=Hashable)
_State = TypeVar("_State")


class PerClient(Generic[_Policy, _State]):
    """One ``_State`` per (client, policy), made on first use by ``make(client, policy)``."""

    def __init__(self, make: Callable[[object, _Policy], _State]) -> None:
        self._make = make
        self._states: weakref.WeakKeyDictionary[object, dict[_Policy, _State]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, client: object, policy: _Policy) -> _State:
        """The state every wrapper of ``client`` that uses ``policy`` shares."""
        with self._lock:
            states = self._states.setdefault(client, {})
            state = states.get(policy)
            if state is None:
                state = states[policy] = self._make(client, policy)
            return state

    def items(self) -> list[tuple[object, _State]]:
        """Every (client, state) made so far whose client is still alive."""
        with self._lock:
            return [(client, state) for client, states in self._states.items() for state in states.values()]
