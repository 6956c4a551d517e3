"""The sanitising stage: every text the agent will see passes the :class:`Sanitizer`.

- the final answer's text content and its ``thought``; when JSON was asked for,
  the string leaves of the parsed JSON (a hazard escaped inside a JSON string,
  such as ``"\\u001b[31m"``, would come back when the agent parses it), whether
  the JSON is the whole answer or sits in a fenced block or in prose (then that
  JSON, the one :func:`extract_json` finds, is replaced by its sanitised copy);
- streamed chunks, as they pass. A chunk may end inside a tag, an escape
  sequence or a markdown link that the next chunk completes, so text is held
  back from where such a construct starts until it is decided: a tag or
  autolink until its ``>``, an escape sequence for a few characters, a link from
  its ``]`` until its destination's scheme is known. Held text longer than
  ``HOLD_BACK_LIMIT`` characters is sanitised and released with what is still
  open neutralised (a destination gets ``#``, a ``]`` or ``<`` is escaped), so
  what the consumer joins together is as safe as each piece. When JSON was
  asked for, the chunks are held until the end and the sanitised answer is
  handed on as one chunk, as a validated stream is.

Long answers (more than ``OFF_LOOP_CHARS`` characters) are sanitised in a worker
thread, so that the event loop keeps serving other calls meanwhile.

Tool-call arguments are not touched: they go to tools as data, not to a screen.
What was changed is reported on the result (:class:`CheckedCreateResult`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, Final, ParamSpec, TypeVar

from autogen_core.models import CreateResult

from .._pipeline import CreateHandler, Layer, Request, StreamHandler, StreamItem
from ._parse import JSONExtractionError, locate_json
from ._result import checked
from ._sanitize import EMPTY_REPORT, SanitizePolicy, Sanitizer, SanitizeReport, open_link_start, seal_open_links

__all__ = ["HOLD_BACK_LIMIT", "OFF_LOOP_CHARS", "SanitizeLayer", "StreamSanitizer", "sanitizer_for"]

HOLD_BACK_LIMIT: Final = 1024
"""How many characters of a stream may be held back, at most, waiting for an open construct to be decided."""
OFF_LOOP_CHARS: Final = 32_768
"""Texts longer than this are sanitised in a worker thread (``asyncio.to_thread``), not on the event loop."""

_ESCAPES: Final = ("\x1b", "\x9b", "\x9d")  # ESC, and the 8-bit CSI and OSC introducers
_ESCAPE_WINDOW: Final = 64  # an escape sequence this far from the end is complete or harmless
# Where a tag ("<a", "</a", "<!--", "<?") or an autolink ("<https:...>") may start; "<" alone may become one.
_OPEN_ANGLE: Final = re.compile(r"<(?:[A-Za-z/!?]|\Z)")


_P = ParamSpec("_P")
_T = TypeVar("_T")


async def _run(size: int, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``function(*args)``, in a worker thread when it works on more than ``OFF_LOOP_CHARS`` characters.

    Sanitising is linear, but a megabyte still takes a sizeable fraction of a second: the event loop, which
    serves every other call of the process, must not wait for it.
    """
    if size > OFF_LOOP_CHARS:
        return await asyncio.to_thread(function, *args, **kwargs)
    return function(*args, **kwargs)


@functools.lru_cache(maxsize=64)
def sanitizer_for(policy: SanitizePolicy) -> Sanitizer:
    """One sanitiser (and one nh3 cleaner) per policy, shared by every wrapper that uses it."""
    return Sanitizer(policy)


def _open_angle_start(text: str) -> int:
    """Where the last ``<`` that may start a tag or an autolink is, if no ``>`` follows it; else ``len(text)``."""
    position = text.rfind("<")
    if position == -1 or text.find(">", position) != -1 or _OPEN_ANGLE.match(text, position) is None:
        return len(text)
    return position


def _hold_from(text: str) -> int:
    """How much of ``text`` (received so far) can be sanitised now without cutting an open construct in two."""
    hold = min(open_link_start(text), _open_angle_start(text))
    for escape in _ESCAPES:
        position = text.rfind(escape)
        if position != -1 and len(text) - position < _ESCAPE_WINDOW:
            hold = min(hold, position)
    return hold


def _is_closed(cleaned: str) -> bool:
    """Whether sanitised text ends with nothing open that the text after it could complete.

    Sanitising can open what was closed: nh3 deletes ``<foo>`` from ``[x](<foo>``, leaving ``[x](``.
    """
    return open_link_start(cleaned) == len(cleaned) and _open_angle_start(cleaned) == len(cleaned)


def _seal(cleaned: str) -> str:
    """Sanitised text with whatever is still open closed to what may follow it (see :func:`seal_open_links`)."""
    cleaned = seal_open_links(cleaned)
    angle = _open_angle_start(cleaned)
    if angle < len(cleaned):
        cleaned = cleaned[:angle] + "\\" + cleaned[angle:]  # "\<" starts neither a tag nor an autolink
    return cleaned


class StreamSanitizer:
    """Sanitises a text that arrives in chunks, so that the pieces it releases, joined, are safe.

    Each piece is sanitised whole, and cut where nothing is open (see the module documentation): a link, a tag
    or an escape sequence split across chunks is judged in one piece. Held text is looked at again only once
    it has doubled, so that a long hold costs time linear in its length, not quadratic.

    Args:
        sanitizer: What sanitises each piece.
        limit: How many characters may be held at most.
    """

    __slots__ = ("_checked", "_limit", "_pending", "_sanitizer")

    def __init__(self, sanitizer: Sanitizer, limit: int = HOLD_BACK_LIMIT) -> None:
        self._sanitizer = sanitizer
        self._limit = limit
        self._pending = ""
        self._checked = 0  # length of the pending text when it was last found all open

    def feed(self, chunk: str) -> str:
        """Takes the next chunk; returns what can be handed on now, sanitised ("" while everything is held)."""
        self._pending += chunk
        if len(self._pending) < 2 * self._checked and len(self._pending) <= self._limit:
            return ""
        released: list[str] = []
        text = self._pending
        cut = _hold_from(text)
        if cut > 0:
            cleaned = self._clean(text[:cut])
            if _is_closed(cleaned):
                released.append(cleaned)
                text = text[cut:]
        if len(text) > self._limit:
            # Open for too long: hand it on sanitised, with what is still open neutralised, rather than raw.
            released.append(_seal(self._clean(text)))
            text = ""
        self._pending = text
        self._checked = len(text)
        return "".join(released)

    def finish(self) -> str:
        """What is still held, sanitised: the end of the text, after which nothing can complete it."""
        text, self._pending, self._checked = self._pending, "", 0
        return self._clean(text) if text else ""

    def _clean(self, text: str) -> str:
        return self._sanitizer.text(text)[0]


class SanitizeLayer(Layer):
    """Sanitises what the model returns before the agent sees it."""

    def __init__(self, policy: SanitizePolicy) -> None:
        self.sanitizer = sanitizer_for(policy)

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        return await self._clean_result(request, await call_next(request))

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        # When JSON was asked for, the chunks are JSON text whose escapes ("\u001b") only the final result's
        # parsed value is cleaned of: they are held, and that result's content is handed on instead.
        chunks = None if _json_expected(request) else StreamSanitizer(self.sanitizer)
        async with aclosing(call_next(request)) as stream:
            async for item in stream:
                if isinstance(item, str):
                    if chunks is not None:
                        released = await _run(len(item), chunks.feed, item)
                        if released:
                            yield released
                    continue
                if chunks is not None:
                    rest = chunks.finish()
                    if rest:
                        yield rest
                result = await self._clean_result(request, item)
                if chunks is None and isinstance(result.content, str) and result.content:
                    yield result.content
                yield result

    async def _clean_result(self, request: Request, result: CreateResult) -> CreateResult:
        size = (len(result.content) if isinstance(result.content, str) else 0) + len(result.thought or "")
        return await _run(size, self._clean, request, result)

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
                pass  # fenced, in prose, or not JSON after all (validation off, or on_failure="return")
            else:
                cleaned, report = self.sanitizer.value(value)
                return (json.dumps(cleaned, ensure_ascii=False) if report.changed else content), report
        text, report = self.sanitizer.text(content)
        if json_expected:
            return self._embedded_json(text, report)
        return text, report

    def _embedded_json(self, text: str, report: SanitizeReport) -> tuple[str, SanitizeReport]:
        """``text`` with the JSON that :func:`extract_json` finds in it replaced by its sanitised copy.

        Sanitised as text, the JSON keeps its escapes (``"\\u202e"``), which parsing turns back into hazards.
        If the replaced text would not give back the sanitised value, the value alone is handed on.
        """
        try:
            value, start, end = locate_json(text)
        except JSONExtractionError:
            return text, report
        cleaned, value_report = self.sanitizer.value(value)
        if not value_report.changed:
            return text, report.merge(value_report)
        clean_json = json.dumps(cleaned, ensure_ascii=False)
        replaced = text[:start] + _keep_blank_edges(text[start:end], clean_json) + text[end:]
        try:
            again, _, _ = locate_json(replaced)
        except JSONExtractionError:
            again = None
        if again != cleaned:
            replaced = clean_json
        return replaced, report.merge(value_report)


def _keep_blank_edges(original: str, replacement: str) -> str:
    """``replacement`` with the whitespace that surrounded ``original`` (the lines of a fenced block)."""
    stripped = original.strip()
    if not stripped:
        return replacement
    head = original[: original.index(stripped)]
    return head + replacement + original[len(head) + len(stripped) :]


def _json_expected(request: Request) -> bool:
    return bool(request.json_output) or request.response_format is not None
