"""State shared by every wrapper of one inner client: its circuit breaker, its retry budget.

A team's agents each get a wrapper of their own around one provider client;
an outage of that provider must be judged (circuit) and rationed (budget) once,
not once per agent. The state is kept per inner client and per policy, and goes
when the client does.

Each state is guarded by a thread lock of its own (``_lock``), as is each
registry. A process that forks (a pre-forking server, a ``multiprocessing``
pool) waits for a thread of the parent that is inside one of them, microseconds,
and the child remakes them all (``forked()``): it has none of the parent's other
threads, and a lock one of them held would stay held in the child for ever.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["PerClient"]


class _Guarded(Protocol):
    """A state guarded by its own thread lock, which every use of it holds."""

    _lock: threading.Lock

    def forked(self) -> None:
        """In a child process: a lock of its own, and none of what the parent's threads had under way."""


_Policy = TypeVar("_Policy", bound=Hashable)
_State = TypeVar("_State", bound=_Guarded)


class PerClient(Generic[_Policy, _State]):
    """One ``_State`` per (client, policy), made on first use by ``make(client, policy)``."""

    def __init__(self, make: Callable[[object, _Policy], _State]) -> None:
        self._make = make
        self._states: weakref.WeakKeyDictionary[object, dict[_Policy, _State]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        _registries.append(self)

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

    def _guarded(self) -> list[_Guarded]:
        """Every state made so far (called with the lock)."""
        return [state for states in self._states.values() for state in states.values()]


# The registries: each is made once, at import (the breakers', the budgets').
_registries: list[PerClient[Any, Any]] = []


def _hold_for_fork() -> None:
    """Before a fork: each registry, then each of its states, so that no thread of the parent is midway in one.

    Each is held for microseconds by a thread that uses it (a state's is taken inside its registry's, when
    the registry makes it).
    """
    for registry in _registries:
        registry._lock.acquire()
        for state in registry._guarded():
            state._lock.acquire()


def _release_after_fork() -> None:
    """After a fork, in the parent: what :func:`_hold_for_fork` held goes on."""
    for registry in reversed(_registries):
        for state in registry._guarded():
            state._lock.release()
        registry._lock.release()


def _remake_in_child() -> None:
    """After a fork, in the child: every lock is new (the old ones are held, by the thread that forked)."""
    for registry in _registries:
        registry._lock = threading.Lock()
        for state in registry._guarded():
            state.forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hold_for_fork, after_in_parent=_release_after_fork, after_in_child=_remake_in_child)
