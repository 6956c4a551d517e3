"""Label values with a bound: what users and callers name (projects, agents, models) cannot grow the series.

A project comes from a request header, a model name from whoever configured
the client: left alone, a caller that sends a new project per request would
make a new time series per request, and Prometheus pays for every series.
So each label keeps the first ``limit`` distinct values it sees in this
process; later ones are reported as :data:`OTHER`. Sessions are never a label.
A lone surrogate in a value (half an emoji, cut) is reported as U+FFFD: the
exposition is UTF-8, which cannot hold one.
"""

from __future__ import annotations

import threading
from typing import Final

from .._redaction import well_formed

__all__ = ["OTHER", "LabelValues"]

OTHER: Final = "__other__"
"""The value a label takes once it has seen its limit of distinct values."""


class LabelValues:
    """The values each label may take: the first ``limit`` seen per label name, then :data:`OTHER`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def value(self, label: str, value: str | None) -> str:
        """What ``label`` reports for ``value``: itself, ``""`` for None, or :data:`OTHER` past the limit."""
        if value is None:
            return ""
        seen = self._seen.get(label)
        if seen is not None and value in seen:  # the common case, without the lock: a set's lookup is atomic
            return value
        value = well_formed(value)  # Prometheus' text is UTF-8: a lone surrogate made every scrape fail
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if value in seen:
                return value
            if len(seen) < self.limit:
                seen.add(value)
                return value
        return OTHER
