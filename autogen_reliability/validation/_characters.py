"""Characters a reader cannot see: bidi controls, zero-width and other invisible characters, Unicode tags.

Part of the sanitiser's text stage (see :mod:`._sanitizer` for the order of the stages). Each function removes
one category and counts the characters it removed under that category's name: ``"bidi"`` (Trojan Source,
CVE-2021-42574), ``"zero_width"`` (including runs of variation selectors, which smuggle bytes) and
``"tag_chars"`` ("ASCII smuggling").
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from html.entities import html5
from typing import Final

__all__ = [
    "STYLE_SELECTORS",
    "Characters",
    "decode_references",
    "escape_references",
    "mend_surrogates",
    "remove_bidi",
    "remove_tag_chars",
    "remove_zero_width",
    "takes_style",
]

_BIDI: Final = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
# U+2061-U+2064 (invisible function application, times, separator, plus) render as nothing, like the others, and
# so do the fillers: the combining grapheme joiner U+034F, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0 and
# the Khmer inherent vowels U+17B4, U+17B5 (all Default_Ignorable; the fillers even count as letters).
# So do the deprecated format characters U+206A-U+206F, the shorthand format controls U+1BCA0-U+1BCA3, the musical
# formatting characters U+1D173-U+1D17A, and the unassigned Default_Ignorable code points (U+FFF0-U+FFF8, the rest
# of the tag characters' plane block): each can carry hidden bits as a run of zero-width spaces can.
_ZERO_WIDTH: Final = re.compile(
    "[\u200b\u200c\u200d\u2060-\u2064\ufeff\u180e\u00ad\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0"
    "\u206a-\u206f\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0080-\U000e00ff\U000e01f0-\U000e0fff]"
)
# Variation selectors: one after an emoji picks its text or emoji style, a run of them after anything encodes
# bytes that a reader cannot see and a model can read ("emoji smuggling": one selector per byte).
_VARIATION_SELECTORS: Final = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]+")
STYLE_SELECTORS: Final = "\ufe0e\ufe0f"
"""The text and the emoji style selectors: the variation selectors kept, alone after what :func:`takes_style`."""
_EMOJI_STYLE: Final = frozenset(STYLE_SELECTORS)
# Characters that take an emoji style: the emoji blocks and the older symbols that have an emoji form.
_EMOJI: Final = re.compile(
    "[\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a-\u23ff\u24c2\u25aa-\u27bf"
    "\u2934\u2935\u2b05-\u2b55\u3030\u303d\u3297\u3299\U0001f000-\U0001faff]"
)
_KEYCAP_BASES: Final = frozenset("#*0123456789")  # "1\ufe0f\u20e3" is the keycap emoji 1
_TAG_CHARS: Final = re.compile("[\U000e0000-\U000e007f]")
# Surrogates are no characters: a str holds one when a provider sent half of a UTF-16 pair ("\\ud83d", an emoji
# cut), or both halves apart (streamed in two deltas, then joined). nh3 and every UTF-8 writer refuse them.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR: Final = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def remove_bidi(text: str, counts: dict[str, int]) -> str:
    """``text`` without bidi embeddings, overrides, isolates and marks."""
    return _remove(_BIDI, text, "bidi", counts)


def remove_zero_width(text: str, counts: dict[str, int]) -> str:
    """``text`` without zero-width and other invisible characters, and without variation selectors (see below)."""
    text = _remove(_ZERO_WIDTH, text, "zero_width", counts)
    return _remove_variation_selectors(text, counts)


def mend_surrogates(text: str, counts: dict[str, int]) -> str:
    """``text`` with each pair of surrogates made the character it encodes, and each lone one U+FFFD.

    Counted under ``"control_chars"``, one per surrogate pair or lone surrogate.
    """
    if _SURROGATE.search(text) is None:
        return text
    text, pairs = _SURROGATE_PAIR.subn(
        lambda pair: pair.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le"), text
    )
    text, lone = _SURROGATE.subn("\ufffd", text)
    counts["control_chars"] = counts.get("control_chars", 0) + pairs + lone
    return text


def remove_tag_chars(text: str, counts: dict[str, int]) -> str:
    """``text`` without Unicode tag characters U+E0000-U+E007F."""
    return _remove(_TAG_CHARS, text, "tag_chars", counts)


# A character reference as a browser or a CommonMark renderer reads one (a browser takes a numeric one without ";"),
# if it may stand for a character of the text stage: a numeric one, or one of the few names of control and format
# characters (&rlm;, &ZeroWidthSpace;, &shy...). Other names ("&amp;", "AT&T") are not even looked at.
_HAZARD_NAMES: Final = sorted(
    (name for name, value in html5.items() if any(unicodedata.category(char) in ("Cc", "Cf") for char in value)),
    key=len,
    reverse=True,
)
_REFERENCE: Final = re.compile(f"&(?:#[xX][0-9A-Fa-f]+;?|#[0-9]+;?|{'|'.join(map(re.escape, _HAZARD_NAMES))})")
Characters = Callable[[str, dict[str, int]], str]
"""The character stages: ``characters(text, counts)`` is ``text`` without what they remove, counted in ``counts``."""


def _hazard(reference: str, characters: Characters) -> tuple[str, dict[str, int]] | None:
    """What ``reference`` decodes to, and what ``characters`` counts removing it, if they remove all of it."""
    decoded = html.unescape(reference)
    if decoded == reference:
        return None
    if not decoded:  # a control character or a noncharacter, which html.unescape drops and a browser keeps
        digits = reference[2:].rstrip(";")
        decoded = chr(int(digits[1:], 16) if digits[0] in "xX" else int(digits))
    found: dict[str, int] = {}
    return (decoded, found) if characters(decoded, found) == "" and found else None


def _judge(characters: Characters) -> Callable[[str], tuple[str, dict[str, int]] | None]:
    """:func:`_hazard` for ``characters``, each reference judged once: an answer may repeat one 100,000 times."""
    memo: dict[str, tuple[str, dict[str, int]] | None] = {}

    def judge(reference: str) -> tuple[str, dict[str, int]] | None:
        if reference not in memo:
            memo[reference] = _hazard(reference, characters)
        return memo[reference]

    return judge


def decode_references(text: str, characters: Characters) -> str:
    """``text`` with each character reference to what ``characters`` removes decoded, for them to remove it.

    A markdown renderer or a browser decodes them: ``&#x202e;`` in an answer shown as markdown is a real U+202E,
    ``&#x1b;[31m`` an escape sequence, which the character stages then remove whole.
    """

    judge = _judge(characters)

    def decode(match: re.Match[str]) -> str:
        hazard = judge(match.group())
        return match.group() if hazard is None else hazard[0]

    return _REFERENCE.sub(decode, text)


def escape_references(text: str, counts: dict[str, int], characters: Characters) -> str:
    """``text`` with the ``&`` of each character reference to what ``characters`` removes escaped (``&amp;``).

    For those that removing characters assembled (``&&#x202e;#x202e;``, ``&\\u200b#x202e;``): decoded once, they
    show as text. Each counts under the category of what it would have decoded to.
    """

    judge = _judge(characters)

    def escape(match: re.Match[str]) -> str:
        hazard = judge(match.group())
        if hazard is None:
            return match.group()
        for category, number in hazard[1].items():
            counts[category] = counts.get(category, 0) + number
        return "&amp;" + match.group()[1:]

    return _REFERENCE.sub(escape, text)


def takes_style(char: str) -> bool:
    """Whether a style selector (:data:`STYLE_SELECTORS`) alone after ``char`` is kept: an emoji, a keycap's base."""
    return _EMOJI.match(char) is not None or char in _KEYCAP_BASES


def _remove_variation_selectors(text: str, counts: dict[str, int]) -> str:
    """Removes variation selectors but a lone text or emoji style selector after an emoji (counted as zero-width)."""
    removed = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal removed
        run = match.group()
        start = match.start()
        if len(run) == 1 and run in _EMOJI_STYLE and start > 0:
            before = text[start - 1]
            if _EMOJI.match(before) or (before in _KEYCAP_BASES and text.startswith("\u20e3", match.end())):
                return run
        removed += len(run)
        return ""

    result = _VARIATION_SELECTORS.sub(replace, text)
    if removed:
        counts["zero_width"] = counts.get("zero_width", 0) + removed
    return result


def _remove(pattern: re.Pattern[str], text: str, category: str, counts: dict[str, int]) -> str:
    text, removed = pattern.subn("", text)
    if removed:
        counts[category] = counts.get(category, 0) + removed
    return text
