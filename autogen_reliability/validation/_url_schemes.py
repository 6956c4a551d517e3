"""Whether a URL has a dangerous scheme (``javascript:``, ``vbscript:``, ``data:``), read as a browser would.

Shared by the markdown stage (link destinations, :mod:`._markdown_links`) and the HTML stage (URL attributes,
:mod:`._html`). A scheme is judged after what a browser's URL parser or a lenient renderer would do to it:
character references decoded, whitespace, control and invisible characters and backslashes dropped, case
folded. A destination is read only as far as its scheme is in doubt, and at most ``URL_HEAD`` characters deep.
"""

from __future__ import annotations

import html
import re
from typing import Final, Literal

__all__ = ["IGNORABLE_CHARS", "URL_HEAD", "Verdict", "head_key", "is_dangerous", "scheme_verdict"]

_DANGEROUS_SCHEMES: Final = ("javascript:", "vbscript:", "data:")
# What a browser's URL parser or a lenient renderer ignores, or a reader cannot see, inside a scheme. Backslashes
# go too, since CommonMark reads "javascript\:" as "javascript:".
IGNORABLE_CHARS: Final = (
    "\\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U000e0000-\U000e0fff\\\\"
)
_IGNORABLE: Final = re.compile(f"[{IGNORABLE_CHARS}]")
# The same characters as a set, for the scheme reader below, which looks at one character at a time. Every
# character of the class is below U+3200 or in the U+FE00-U+FFFF and tag blocks.
_IGNORABLE_SET: Final = frozenset(
    _IGNORABLE.findall("".join(map(chr, (*range(0x3200), *range(0xFE00, 0x10000), *range(0xE0000, 0xE1000)))))
)
# Only these can start a dangerous scheme once ignorable characters are skipped: its first letter, or "&" which
# may encode it if a reference follows (or the end of what is read: padding). Anything else ("h" of https, "/",
# "#") settles the question without decoding.
_MAYBE_DANGEROUS: Final = re.compile(f"[{IGNORABLE_CHARS}]*(?:[jvdJVD]|&[{IGNORABLE_CHARS}]*(?:[#A-Za-z]|\\Z)|\\Z)")
# How much of a destination is read to judge its scheme; a longer run of padding fails closed (see scheme_verdict).
URL_HEAD: Final = 256
_PARTIAL_REFERENCE: Final = re.compile(r"&[#0-9A-Za-z]*\Z")
# Every beginning of a dangerous scheme, "" included: a key outside this set can never become dangerous.
_SCHEME_PREFIXES: Final = frozenset(scheme[:length] for scheme in _DANGEROUS_SCHEMES for length in range(len(scheme)))
# What may continue a character reference after its "&": "#", "x", digits, letters; ";" ends it.
_REFERENCE_CHARS: Final = frozenset("#;0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

Verdict = Literal["safe", "dangerous", "undecided"]


class _DestinationReader:
    """The characters of ``text[start:limit]`` that are not ignorable, with decoded ones read first."""

    __slots__ = ("index", "limit", "pending", "text")

    def __init__(self, text: str, start: int, limit: int) -> None:
        self.text = text
        self.index = start
        self.limit = limit
        self.pending: list[str] = []  # decoded characters still to read, the next one last

    def next(self) -> str | None:
        while True:
            if self.pending:
                char = self.pending.pop()
            elif self.index < self.limit:
                char = self.text[self.index]
                self.index += 1
            else:
                return None
            if char not in _IGNORABLE_SET:
                return char

    def reference(self) -> bool | None:
        """Decodes the character reference after an ``&`` just read, to be read next.

        Returns:
            True when there was one, False when the ``&`` is a literal one, None when ``limit`` came first.
        """
        gathered = ["&"]
        while (char := self.next()) is not None:
            if char not in _REFERENCE_CHARS:
                self.pending.append(char)
                break
            gathered.append(char)
            if char == ";":
                break
        else:
            return None
        reference = "".join(gathered)
        decoded = html.unescape(reference)
        if decoded == reference:
            return False
        self.pending.extend(reversed(decoded))
        return True


def scheme_verdict(text: str, start: int, stop: int) -> Verdict:
    """Whether the destination at ``text[start:stop]`` starts with a dangerous scheme, read as a browser might.

    Character references are decoded (again, if decoding makes another: ``&amp;#106;``), ignorable characters
    (whitespace, controls, invisible characters, backslashes) skipped, case folded. Reading stops as soon as
    the answer is known, usually after a character or two, so that a text dense with links costs time linear in
    its length (reading a fixed window of every destination took seconds per 100,000 links).

    Returns:
        ``"dangerous"`` or ``"safe"``; ``"undecided"`` when ``stop`` came first while what was read could still
        begin a dangerous scheme (the caller knows whether more text may follow: a stream does, a whole answer
        does not). When the first ``URL_HEAD`` characters are all read and could still begin one, the answer
        is ``"dangerous"``: padding that long fails closed.
    """
    reader = _DestinationReader(text, start, min(stop, start + URL_HEAD))
    key = ""  # always one of _SCHEME_PREFIXES: reading stops once it is not
    while (char := reader.next()) is not None:
        if char == "&":
            decoded = reader.reference()
            if decoded:
                continue
            if decoded is False:
                return "safe"  # a literal "&": no scheme has one
            break  # the end came inside what may be a reference, which could decode to anything
        key += char.lower()
        if key not in _SCHEME_PREFIXES:
            return "dangerous" if key.startswith(_DANGEROUS_SCHEMES) else "safe"
    return "dangerous" if reader.limit < stop else "undecided"


def is_dangerous(text: str, start: int, stop: int) -> bool:
    """Whether the whole destination at ``text[start:stop]`` has a dangerous scheme (see :func:`scheme_verdict`)."""
    if _MAYBE_DANGEROUS.match(text, start, min(stop, start + URL_HEAD)) is None:
        return False
    return scheme_verdict(text, start, stop) == "dangerous"


def _url_key(url: str) -> str:
    """``url`` as a scheme check must read it: references decoded, ignorable characters dropped, lower case."""
    # Decoding can reveal ignorable characters and dropping them can complete a reference ("&#\t106;"), so both
    # repeat until stable: a few rounds cover any real encoding, and more only makes the check stricter.
    for _ in range(4):
        decoded = _IGNORABLE.sub("", html.unescape(url))
        if decoded == url:
            break
        url = decoded
    return url.lower()


def head_key(url: str) -> tuple[str, bool]:
    """The :func:`_url_key` of the first ``URL_HEAD`` characters of ``url``, and whether ``url`` was longer."""
    if len(url) <= URL_HEAD:
        return _url_key(url), False
    # A character reference cut in half would decode to something else.
    return _url_key(_PARTIAL_REFERENCE.sub("", url[:URL_HEAD])), True
