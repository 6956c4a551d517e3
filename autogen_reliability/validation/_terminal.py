"""What a terminal acts on: ANSI escape sequences and the C0/C1 control characters.

Part of the sanitiser's text stage (see :mod:`._sanitizer` for the order of the stages): escape sequences go
first, whole, so that removing the control characters afterwards does not leave a sequence's body behind once
its ESC is gone. Tab, line feed and carriage return are kept, but a carriage return that ends no line
(not followed by a line feed) becomes a line feed: a terminal would return to the start of the line and let
what follows overwrite what was shown ("approved\\rdenied  "), and the HTML stage reads it as a line break too.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["remove_ansi", "remove_controls"]

_ANSI: Final = re.compile(
    # OSC (title, OSC 8 hyperlink, OSC 52 clipboard), DCS, SOS, PM, APC: a string up to BEL or ST. A terminal
    # shows none of it. The string stops at a line feed so that an unterminated one cannot eat the answer.
    "(?:\x1b[]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\\\|\x9c)?"
    # CSI: parameter bytes, intermediate bytes, final byte (what a terminal consumes, even if the final is missing).
    "|(?:\x1b\\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    # Any other escape (charset designation, save/restore cursor, full reset...), or a lone ESC.
    "|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)
# Where a sequence can start. Scanning for these and matching _ANSI only there is much faster than _ANSI.sub, whose
# alternation defeats the regex engine's first-character scan.
_ANSI_START: Final = re.compile("[\x1b\x90\x98\x9b\x9d\x9e\x9f]")
_CONTROL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LONE_CR: Final = re.compile("\r(?!\n)")


def remove_ansi(text: str, counts: dict[str, int]) -> str:
    """``text`` without escape sequences; each one removed (a lone ESC too) counts one under ``"ansi"``."""
    pieces: list[str] = []
    done = 0
    for start in _ANSI_START.finditer(text):
        position = start.start()
        if position < done:  # inside a sequence already removed
            continue
        sequence = _ANSI.match(text, position)  # every introducer matches, alone if need be
        pieces.append(text[done:position])
        done = sequence.end() if sequence is not None else position + 1
    if not pieces:
        return text
    pieces.append(text[done:])
    counts["ansi"] = counts.get("ansi", 0) + len(pieces) - 1
    return "".join(pieces)


def remove_controls(text: str, counts: dict[str, int]) -> str:
    """``text`` without C0 and C1 control characters but tab, line feed and carriage return (``"control_chars"``).

    A carriage return not followed by a line feed becomes a line feed (and counts as one change).
    """
    text, removed = _CONTROL.subn("", text)
    if "\r" in text:
        text, lone = _LONE_CR.subn("\n", text)
        removed += lone
    if removed:
        counts["control_chars"] = counts.get("control_chars", 0) + removed
    return text
