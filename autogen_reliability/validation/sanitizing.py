"""The sanitising stage: every text the agent will see passes the :class:`Sanitizer`.

- the final answer's text content and its ``thought``; when JSON was asked for,
  the string leaves of the parsed JSON (a hazard escaped inside a JSON string,
  such as ``"\\u001b[31m"``, would come back when the agent parses it);
- streamed chunks, as they pass. A chunk may end inside a tag or an escape
  sequence that the next chunk completes, so the text from an unclosed ``<``,
  ``[`` or escape character is held back until it is closed (at most
  ``HOLD_BACK_LIMIT`` characters). Chunks are a preview: the final result, which
  is sanitised as a whole, is what the agent keeps.

Tool-call arguments are not touched: they go to tools as data, not to a screen.
What was changed is reported on the result (:class:`CheckedCreateResult`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Final

from autogen_core.models import CreateResult

from ..pipeline import CreateHandler, Layer, Request, StreamHandler, StreamItem
from .result import checked
from .sanitize import EMPTY_REPORT, SanitizePolicy, Sanitizer, SanitizeReport

__all__ = ["SanitizeLayer", "sanitizer_for"]

HOLD_BACK_LIMIT: Final = 1024
_ESCAPES: Final = ("\x1b", "\x9b", "\x9d")  # ESC, and the 8-bit CSI and OSC introducers
_ESCAPE_WINDOW: Final = 64  # an escape sequence this far from the end is complete or harmless
_OPEN_CLOSE: Final = (("<", ">"), ("[", ")"))  # a tag; a markdown link "[text](target)"


@functools.lru_cache(maxsize=64)
def sanitizer_for(policy: SanitizePolicy) -> Sanitizer:
    """One sanitiser (and one nh3 cleaner) per policy, shared by every wrapper that uses it."""
    return Sanitizer(policy)


class SanitizeLayer(Layer):
    """Sanitises what the model returns before the agent sees it."""

    def __init__(self, policy: SanitizePolicy) -> None:
        self.sanitizer = sanitizer_for(policy)

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        return self._clean(request, await call_next(request))

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        pending = ""
        async with aclosing(call_next(request)) as stream:
            async for item in stream:
                if isinstance(item, str):
                    text = pending + item
                    cut = _safe_prefix_length(text)
                    pending = text[cut:]
                    if cut:
                        cleaned, _ = self.sanitizer.text(text[:cut])
                        if cleaned:
                            yield cleaned
                    continue
                if pending:
                    cleaned, _ = self.sanitizer.text(pending)
                    pending = ""
                    if cleaned:
                        yield cleaned
                yield self._clean(request, item)

    def _clean(self, request: Request, result: CreateResult) -> CreateResult:
        updates: dict[str, Any] = {}
        report = EMPTY_REPORT
        if isinstance(result.content, str):
            content, content_report = self._content(result.content, _json_expected(request))
            report = report.merge(content_report)
            if content != result.content:
                updates["content"] = content
        if result.thought:
            thought, thought_report = self.sanitizer.text(result.thought)
            report = report.merge(thought_report)
            if thought != result.thought:
                updates["thought"] = thought
        if report.changed:
            request.call.sanitizer_changes = report.changes
        if not updates and not report.changed and not report.injection_markers:
            return result
        return checked(result, sanitize_report=report, **updates)

    def _content(self, content: str, json_expected: bool) -> tuple[str, SanitizeReport]:
        if json_expected:
            try:
                value = json.loads(content)
            except ValueError:
                pass  # not JSON after all (validation off, or it failed with on_failure="return")
            else:
                cleaned, report = self.sanitizer.value(value)
                return (json.dumps(cleaned, ensure_ascii=False) if report.changed else content), report
        return self.sanitizer.text(content)


def _json_expected(request: Request) -> bool:
    return bool(request.json_output) or request.response_format is not None


def _safe_prefix_length(text: str) -> int:
    """How much of ``text`` can be sanitised now without cutting a tag, link or escape sequence in two."""
    hold = len(text)
    for opener, closer in _OPEN_CLOSE:
        position = text.rfind(opener)
        if position != -1 and text.find(closer, position) == -1:
            hold = min(hold, position)
    for escape in _ESCAPES:
        position = text.rfind(escape)
        if position != -1 and len(text) - position < _ESCAPE_WINDOW:
            hold = min(hold, position)
    if len(text) - hold > HOLD_BACK_LIMIT:
        return len(text)  # nothing legitimate stays open this long: hand it on, sanitised
    return hold
