"""The usage tap's body reader (``_BodyTap``) fed a stream's bytes directly, in the pieces a test chooses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from autogen_reliability.providers._usage_tap import UsageSlot, _BodyTap

__all__ = ["FAKE_COMPLETION", "SIZES", "events", "fed", "parsed_events", "pieces"]

FAKE_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
"""A completion's body as the server sends it, for tests that send their own (an ``"error"`` beside it, say)."""

SIZES = (1, 2, 3, 7, 64)
"""Piece sizes that split a stream's lines and events anywhere (with the whole body as one piece: `pieces`)."""


def fed(chunks: Iterable[bytes]) -> UsageSlot:
    """A slot whose stream body arrived as ``chunks``, one ``feed`` each, and ended."""
    slot = UsageSlot()
    tap = _BodyTap((slot,), sse=True, decoder=None)
    for chunk in chunks:
        tap.feed(chunk)
    tap.finish()
    return slot


def pieces(body: bytes, size: int) -> list[bytes]:
    """``body`` cut every ``size`` bytes."""
    return [body[start : start + size] for start in range(0, len(body), size)]


def events(body: bytes, boundary: bytes = b"\n\n") -> list[bytes]:
    """``body`` one event per chunk, as a server sends a stream."""
    return [event + boundary for event in body.split(boundary) if event]


def parsed_events(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The data of every event the tap goes on to read event by event (not passed over unsplit), in order."""
    parsed: list[bytes] = []
    on_event = _BodyTap._on_event

    def counted(tap: _BodyTap, data: bytes) -> None:
        parsed.append(data)
        on_event(tap, data)

    monkeypatch.setattr(_BodyTap, "_on_event", counted)
    return parsed
