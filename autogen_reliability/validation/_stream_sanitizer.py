"""Sanitising a text that arrives in chunks, so that what the consumer joins together is as safe as the whole.

A chunk may end inside a tag, an escape sequence or a markdown link that the
next chunk completes, so text is held back from where such a construct starts
until it is decided: a tag or autolink until its ``>``, a character reference until it has ended, an escape
sequence for a few characters, a link from its ``]`` until its destination's scheme is known, a carriage return until
what follows it shows whether it ends a line, a run of variation selectors until it has ended (a keycap's
``U+20E3`` may follow). A piece that starts with a style selector is sanitised after the character released
before it, which decides whether the selector is an emoji's style (kept) or smuggling (removed).
Held text longer than ``HOLD_BACK_LIMIT`` characters is sanitised and released
with what is still open neutralised (a destination gets ``#``, a ``]`` or ``<``
is escaped, the ``&`` of a reference becomes ``&amp;``), so what the consumer joins together is as safe as each piece.
"""

from __future__ import annotations

import re
from typing import Final

from ._characters import STYLE_SELECTORS, takes_style
from ._markdown_links import open_link_start, seal_open_links
from ._sanitizer import Sanitizer, inert

__all__ = ["HOLD_BACK_LIMIT", "StreamSanitizer"]

HOLD_BACK_LIMIT: Final = 1024
"""How many characters of a stream may be held back, at most, waiting for an open construct to be decided."""

# ESC, and the 8-bit introducers: DCS, SOS, CSI, OSC, PM, APC (what _terminal's remove_ansi removes with its body).
_ESCAPES: Final = ("\x1b", "\x90", "\x98", "\x9b", "\x9d", "\x9e", "\x9f")
_ESCAPE_WINDOW: Final = 64  # an escape sequence this far from the end is complete or harmless
# Where a tag ("<a", "</a", "<!--", "<?") or an autolink ("<https:...>") may start; "<" alone may become one.
_OPEN_ANGLE: Final = re.compile(r"<(?:[A-Za-z/!?]|\Z)")
# A character reference the next chunk may still complete ("&", "&#x20", "&rl"): "2e;" after "&#x20" is U+202E.
_OPEN_REFERENCE: Final = re.compile(r"&(?:#[xX]?[0-9A-Fa-f]*|[A-Za-z][A-Za-z0-9]*)?\Z")


def _is_variation_selector(char: str) -> bool:
    return "\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef"


def _open_angle_start(text: str) -> int:
    """Where the last ``<`` that may start a tag or an autolink is, if no ``>`` follows it; else ``len(text)``."""
    position = text.rfind("<")
    if position == -1 or text.find(">", position) != -1 or _OPEN_ANGLE.match(text, position) is None:
        return len(text)
    return position


def _open_reference_start(text: str) -> int:
    """Where a character reference that the text after ``text`` may complete starts; else ``len(text)``."""
    position = text.rfind("&")
    if position == -1 or _OPEN_REFERENCE.match(text, position) is None:
        return len(text)
    return position


def _hold_from(text: str) -> int:
    """How much of ``text`` (received so far) can be sanitised now without cutting an open construct in two."""
    hold = min(open_link_start(text), _open_angle_start(text), _open_reference_start(text))
    for escape in _ESCAPES:
        position = text.rfind(escape)
        if position != -1 and len(text) - position < _ESCAPE_WINDOW:
            hold = min(hold, position)
    if text.endswith("\r"):  # a line feed in the next chunk makes it a line end; alone, it becomes one
        hold = min(hold, len(text) - 1)
    if text and "\ud800" <= text[-1] <= "\udbff":  # the first half of a UTF-16 pair whose second may follow
        hold = min(hold, len(text) - 1)
    if text and _is_variation_selector(text[-1]):  # one alone may stay, a run goes: judged when it has ended
        start = len(text) - 1
        while start > 0 and _is_variation_selector(text[start - 1]):
            start -= 1
        hold = min(hold, start)
    return hold


def _is_closed(cleaned: str) -> bool:
    """Whether sanitised text ends with nothing open that the text after it could complete.

    Sanitising can open what was closed: nh3 deletes ``<foo>`` from ``[x](<foo>``, leaving ``[x](``.
    """
    return (
        open_link_start(cleaned) == len(cleaned)
        and _open_angle_start(cleaned) == len(cleaned)
        and _open_reference_start(cleaned) == len(cleaned)
    )


def _seal(cleaned: str) -> str:
    """Sanitised text with whatever is still open closed to what may follow it (see :func:`seal_open_links`)."""
    cleaned = seal_open_links(cleaned)
    angle = _open_angle_start(cleaned)
    if angle < len(cleaned):
        cleaned = cleaned[:angle] + "\\" + cleaned[angle:]  # "\<" starts neither a tag nor an autolink
    reference = _open_reference_start(cleaned)
    if reference < len(cleaned):
        cleaned = cleaned[:reference] + "&amp;" + cleaned[reference + 1 :]  # shown as text, whatever follows
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

    __slots__ = ("_before", "_checked", "_limit", "_pending", "_sanitizer")

    def __init__(self, sanitizer: Sanitizer, limit: int = HOLD_BACK_LIMIT) -> None:
        self._sanitizer = sanitizer
        self._limit = limit
        self._pending = ""
        self._checked = 0  # length of the pending text when it was last found all open
        self._before = ""  # the last character released

    def feed(self, chunk: str) -> str:
        """Takes the next chunk; returns what can be handed on now, sanitised ("" while everything is held)."""
        if not self._pending and inert(chunk):
            # Nothing held before it, nothing in it to hold or to clean: what the steps below would release,
            # at a fraction of their cost (most chunks of most answers).
            if chunk:
                self._before = chunk[-1]
            return chunk
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
        return self._released("".join(released))

    def finish(self) -> str:
        """What is still held, sanitised: the end of the text, after which nothing can complete it."""
        text, self._pending, self._checked = self._pending, "", 0
        return self._released(self._clean(text)) if text else ""

    def _released(self, piece: str) -> str:
        if piece:
            self._before = piece[-1]
        return piece

    def _clean(self, text: str) -> str:
        before = self._before
        if text.startswith(tuple(STYLE_SELECTORS)) and takes_style(before):
            # Whether the selector is an emoji's style depends on what it follows: judged with that.
            cleaned = self._sanitizer.text(before + text)[0]
            if cleaned.startswith(before):
                return cleaned[len(before) :]
        return self._sanitizer.text(text)[0]
