"""A cache store in a dict, for AutoGen's ``ChatCompletionCache`` in tests (autogen-ext has disk and Redis ones)."""

from __future__ import annotations

from typing import Any

from autogen_core import CacheStore


class MemoryStore(CacheStore[Any]):
    """Keeps what the cache sets, for the process's life: the second of two equal requests is a hit."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._values[key] = value
