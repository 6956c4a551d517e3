"""Prompt-injection markers: found and reported, never removed.

Chat-template tokens (``<|im_start|>``, ``[INST]``, ``<<SYS>>``...), role headers at the start of a line
(``### System:``) and override phrases ("ignore all previous instructions"). Whether they matter is the
caller's decision, and deleting words silently would change what the model said. What a report holds is
bounded, whatever the model sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["add_markers", "find_markers"]

# Bounds what a report can hold, whatever the model sends.
_MAX_MARKERS: Final = 32
_MAX_MARKER_CHARS: Final = 80

_Boundary = Literal["anywhere", "word", "line"]


@dataclass(frozen=True, slots=True)
class _Marker:
    anchors: tuple[str, ...]  # the pattern runs only if one of these occurs in the lower-cased text
    pattern: re.Pattern[str]
    boundary: _Boundary  # where the match must start


_SCREEN_BELOW: Final = 256


def _marker(anchors: tuple[str, ...], pattern: str, boundary: _Boundary = "anywhere") -> _Marker:
    return _Marker(anchors, re.compile(pattern), boundary)


_OVERRIDE = (
    r"\s+(?:all\s+)?(?:of\s+)?(?:the\s+|your\s+|any\s+|my\s+|these\s+)?(?:previous|prior|above|earlier|preceding)\s+"
    r"(?:instructions?|prompts?|directions?|directives?|rules|messages?|context)\b"
)

# Every marker, in one place. Patterns are matched case-sensitively against the lower-cased text (IGNORECASE
# disables the regex engine's literal-prefix scan), and they start with a literal, which the engine scans for as
# fast as a substring test. Word and line starts are checked after the match, since a leading \b or ^ makes a scan
# of 2 KB 30 times slower. A short text (a JSON field) is first screened with the anchors, literals every match
# contains: a substring test costs a tenth of a regex call there; on longer texts it costs more than the scan.
_INJECTION_MARKERS: Final = (
    # Chat-template special tokens: <|im_start|>, <|im_end|>, <|system|>, <|endoftext|>, <|eot_id|>...,
    # Llama 2's <<SYS>> and <</SYS>>, Gemma's <start_of_turn> and <end_of_turn>.
    _marker(("<|", "sys>>", "_of_turn>"), r"<(?:\|[a-z0-9_]{1,40}\||</?sys>|(?:start|end)_of_turn)>"),
    _marker(("inst]",), r"\[/?inst\]"),
    # Role headers at the start of a line: "### System:", "## Assistant:", "### Instruction:"...
    _marker(("#",), r"##{0,5}[ \t]*(?:system|assistant|user|developer|human|instructions?|response)[ \t]*:", "line"),
    # "Ignore all previous instructions", "disregard the above instructions"...
    *(_marker((verb,), verb + _OVERRIDE, "word") for verb in ("ignore", "disregard", "forget", "override")),
    _marker(("now",), r"you\s+are\s+now\b", "word"),
    _marker(("prompt",), r"new\s+system\s+prompt\b", "word"),
)

_ALL_ANCHORS: Final = tuple(anchor for marker in _INJECTION_MARKERS for anchor in marker.anchors)


def find_markers(text: str) -> list[str]:
    folded = text.lower()
    # lower() keeps positions unless a character expands (U+0130); then report the lower-cased text.
    source = text if len(folded) == len(text) else folded
    screen = len(folded) < _SCREEN_BELOW
    if screen:
        for anchor in _ALL_ANCHORS:
            if anchor in folded:
                break
        else:
            return []
    found: list[tuple[int, str]] = []
    for marker in _INJECTION_MARKERS:
        if screen:
            for anchor in marker.anchors:
                if anchor in folded:
                    break
            else:
                continue
        kept = 0
        for match in marker.pattern.finditer(folded):
            start = match.start()
            if not _starts_where(marker.boundary, folded, start):
                continue
            found.append((start, source[start : match.end()][:_MAX_MARKER_CHARS]))
            kept += 1
            if kept == _MAX_MARKERS:  # the first _MAX_MARKERS overall are among each pattern's first
                break
    found.sort(key=lambda item: item[0])
    return [marker for _, marker in found[:_MAX_MARKERS]]


def _starts_where(boundary: _Boundary, text: str, start: int) -> bool:
    if boundary == "word":
        return start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_")
    if boundary == "line":
        # Only blanks between the line's start and the match; scanning back over blanks only keeps this linear.
        index = start - 1
        while index >= 0 and text[index] in " \t":
            index -= 1
        return index < 0 or text[index] == "\n"
    return True


def add_markers(markers: list[str], found: list[str]) -> None:
    room = _MAX_MARKERS - len(markers)
    if room > 0 and found:
        markers.extend(found[:room])
