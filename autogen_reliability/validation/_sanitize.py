"""Neutralising what a model returns before an agent, a web page or a terminal sees it.

A model's answer is untrusted text: it may carry whatever a poisoned document,
web page or tool result put into the context. :class:`Sanitizer` removes what
can act on the reader without being seen, and reports what it did in a
:class:`SanitizeReport`. The stages run in this order, each switchable in
:class:`SanitizePolicy`:

1. **Text hazards**, in one stage: ANSI escape sequences (CSI, OSC including
   OSC 8 hyperlinks and OSC 52 clipboard writes, DCS/SOS/PM/APC strings, their
   8-bit C1 forms, any other ESC sequence), then the remaining C0/C1 control
   characters (tab, line feed and carriage return are kept), bidi overrides,
   isolates and marks (Trojan Source, CVE-2021-42574), zero-width and other
   invisible characters (the soft hyphen, the combining grapheme joiner, the
   Hangul fillers, variation selectors but a lone style selector after an
   emoji: a run of them smuggles bytes), Unicode tag characters ("ASCII
   smuggling"), and last NFC normalisation. ANSI goes before the control
   characters so that a sequence is removed whole, not just its ESC.
2. **Markdown links**: an inline link or image, a reference definition or an
   autolink whose destination has a ``javascript:``, ``vbscript:`` or
   ``data:`` scheme gets ``#`` as its destination (``[x](#)``, ``[x]: #``,
   ``<#>``): the link text stays, a title goes with the destination. A link is
   found by what precedes its destination (``](``, or ``]:`` with at most one
   line ending after it), not by its text or label, which CommonMark lets
   span lines and contain brackets. The scheme is judged as a browser or a
   lenient renderer would read it: character references decoded,
   backslashes, whitespace, control and invisible characters dropped, case
   folded; a destination padded beyond what is read (256 characters) fails
   closed. Each destination is read only as far as its scheme is in doubt,
   so the stage is linear in the text, however dense its links.
3. **HTML**, last, with one :class:`nh3.Cleaner` (ammonia): nh3's safe tag set,
   no ``style`` or ``on*`` attributes, only ``http``, ``https`` and ``mailto``
   URLs (relative ones are kept unless they would have any other scheme once
   invisible characters are dropped), ``rel="noopener noreferrer"`` on links.
   It runs only when the text contains markup (``<`` followed by a letter,
   ``/``, ``!`` or ``?``), because nh3 escapes every ``<``, ``>`` and ``&`` of
   the text it is given and plain text must come out unchanged. Markdown
   autolinks (``<https://example.com>``) are markup to nh3, which would delete
   them: they are escaped instead, so the address stays readable. Note that
   markup in code (``Vec<String>``) is markup too: a consumer that renders
   markdown with raw HTML disabled may prefer ``html=False``.

Why this order: the text stage must see the characters before anything reads
them as syntax, or ``java\\u200bscript:`` and ``<\\u200bscript>`` would slip
through a scheme or tag check and become live once the invisible character is
removed. HTML goes last because it is the stage that knows what a browser
will parse. But nh3 decodes character references, so its output can contain
what the text stage removed from the input (``&#x1b;`` becomes a real ESC,
``&#8203;`` a real zero-width space): when nh3 changed the text, the text and
markdown stages run again on its output, and nh3 again, until nothing changes
(nh3 is not idempotent by itself: ``<p><select><p>`` needs two passes; if it
does not settle within four rounds, every ``<`` left is escaped). Markup nested
deeper than 256 elements is escaped the same way, without parsing it: nh3's
parser takes time quadratic in the depth of some elements (16,000 nested
``<div>`` or ``<ul>``, 80 KB, took over a second per pass, with the event loop
waiting).
Hence ``text(text(x)[0])[0] == text(x)[0]``, and the second pass reports no
changes.

Prompt-injection markers (chat-template tokens such as ``<|im_start|>``,
``[INST]``, ``<<SYS>>``, role headers such as ``### System:``, phrases such as
"ignore all previous instructions") are only reported, never removed: whether
they matter is the caller's decision, and deleting words silently would change
what the model said. They are looked for after the text stage, so zero-width
characters cannot hide them, and in the final text, so character references
decoded by the HTML stage cannot either.

How :attr:`SanitizeReport.changes` counts, per category:

- ``control_chars``, ``bidi``, ``zero_width``, ``tag_chars``: characters removed.
- ``ansi``: escape sequences removed (a lone ESC counts as one).
- ``normalize``: strings that NFC changed (1 per string).
- ``markdown_links``: link destinations replaced by ``#``.
- ``html``: tags, comments and declarations that did not survive nh3 verbatim
  (a tag that lost an attribute or gained ``rel`` counts once), and at least 1
  for every string nh3 changed at all, even when only text was re-escaped.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Final, Literal, cast

import nh3

from autogen_reliability._errors import ConfigurationError

__all__ = ["CATEGORIES", "EMPTY", "EMPTY_REPORT", "SanitizePolicy", "SanitizeReport", "Sanitizer"]

CATEGORIES: Final = (
    "control_chars",
    "ansi",
    "bidi",
    "zero_width",
    "tag_chars",
    "normalize",
    "markdown_links",
    "html",
)
"""The keys :attr:`SanitizeReport.changes` may have, in the order the stages run."""

# Bounds what a report can hold, whatever the model sends.
_MAX_MARKERS: Final = 32
_MAX_MARKER_CHARS: Final = 80

# ---------------------------------------------------------------------------
# Text stage

# These three only decide whether a string needs work. A pure ASCII string without controls, "<" or "]" has no
# text hazard, no markdown link and no markup: it is returned as it is.
_ASCII_HAZARD: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f<\]]")
_ASCII_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ANY_TEXT_HAZARD: Final = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2069\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)

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
_BIDI: Final = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
# U+2061-U+2064 (invisible function application, times, separator, plus) render as nothing, like the others, and
# so do the fillers: the combining grapheme joiner U+034F, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0 and
# the Khmer inherent vowels U+17B4, U+17B5 (all Default_Ignorable; the fillers even count as letters).
_ZERO_WIDTH: Final = re.compile(
    "[\u200b\u200c\u200d\u2060-\u2064\ufeff\u180e\u00ad\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0]"
)
# Variation selectors: one after an emoji picks its text or emoji style, a run of them after anything encodes
# bytes that a reader cannot see and a model can read ("emoji smuggling": one selector per byte).
_VARIATION_SELECTORS: Final = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]+")
_EMOJI_STYLE: Final = frozenset("\ufe0e\ufe0f")
# Characters that take an emoji style: the emoji blocks and the older symbols that have an emoji form.
_EMOJI: Final = re.compile(
    "[\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a-\u23ff\u24c2\u25aa-\u27bf"
    "\u2934\u2935\u2b05-\u2b55\u3030\u303d\u3297\u3299\U0001f000-\U0001faff]"
)
_KEYCAP_BASES: Final = frozenset("#*0123456789")  # "1\ufe0f\u20e3" is the keycap emoji 1
_TAG_CHARS: Final = re.compile("[\U000e0000-\U000e007f]")

# ---------------------------------------------------------------------------
# URL schemes, for markdown destinations and HTML attributes

_DANGEROUS_SCHEMES: Final = ("javascript:", "vbscript:", "data:")
_ALLOWED_HTML_SCHEMES: Final = frozenset({"http", "https", "mailto"})
_SCHEME: Final = re.compile(r"([a-z][a-z0-9+.\-]*):")
_SCHEME_SO_FAR: Final = re.compile(r"[a-z0-9+.\-]*")
# What a browser's URL parser or a lenient renderer ignores, or a reader cannot see, inside a scheme. Backslashes
# go too, since CommonMark reads "javascript\:" as "javascript:".
_IGNORABLE_CHARS: Final = (
    "\\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U000e0000-\U000e0fff\\\\"
)
_IGNORABLE: Final = re.compile(f"[{_IGNORABLE_CHARS}]")
# The same characters as a set, for the scheme reader below, which looks at one character at a time. Every
# character of the class is below U+3200 or in the U+FE00-U+FFFF and tag blocks.
_IGNORABLE_SET: Final = frozenset(
    char
    for code in (*range(0x3200), *range(0xFE00, 0x10000), *range(0xE0000, 0xE1000))
    if _IGNORABLE.match(char := chr(code))
)
# Only these can start a dangerous scheme once ignorable characters are skipped: its first letter, or "&" which
# may encode it if a reference follows (or the end of what is read: padding). Anything else ("h" of https, "/",
# "#") settles the question without decoding.
_MAYBE_DANGEROUS: Final = re.compile(f"[{_IGNORABLE_CHARS}]*(?:[jvdJVD]|&[{_IGNORABLE_CHARS}]*(?:[#A-Za-z]|\\Z)|\\Z)")
# How much of a destination is read to judge its scheme; a longer run of padding fails closed (see _scheme_verdict).
_URL_HEAD: Final = 256
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


def _scheme_verdict(text: str, start: int, stop: int) -> Verdict:
    """Whether the destination at ``text[start:stop]`` starts with a dangerous scheme, read as a browser might.

    Character references are decoded (again, if decoding makes another: ``&amp;#106;``), ignorable characters
    (whitespace, controls, invisible characters, backslashes) skipped, case folded. Reading stops as soon as
    the answer is known, usually after a character or two, so that a text dense with links costs time linear in
    its length (reading a fixed window of every destination took seconds per 100,000 links).

    Returns:
        ``"dangerous"`` or ``"safe"``; ``"undecided"`` when ``stop`` came first while what was read could still
        begin a dangerous scheme (the caller knows whether more text may follow: a stream does, a whole answer
        does not). When the first ``_URL_HEAD`` characters are all read and could still begin one, the answer
        is ``"dangerous"``: padding that long fails closed.
    """
    reader = _DestinationReader(text, start, min(stop, start + _URL_HEAD))
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


def _is_dangerous(text: str, start: int, stop: int) -> bool:
    """Whether the whole destination at ``text[start:stop]`` has a dangerous scheme (see :func:`_scheme_verdict`)."""
    if _MAYBE_DANGEROUS.match(text, start, min(stop, start + _URL_HEAD)) is None:
        return False
    return _scheme_verdict(text, start, stop) == "dangerous"


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


def _head_key(url: str) -> tuple[str, bool]:
    """The :func:`_url_key` of the first ``_URL_HEAD`` characters of ``url``, and whether ``url`` was longer."""
    if len(url) <= _URL_HEAD:
        return _url_key(url), False
    # A character reference cut in half would decode to something else.
    return _url_key(_PARTIAL_REFERENCE.sub("", url[:_URL_HEAD])), True


# ---------------------------------------------------------------------------
# Markdown stage

# What may follow where a destination starts for it to be worth reading (see _MAYBE_DANGEROUS); a lookahead, so
# that a text dense with links to https or anchors is passed over by the regular expression engine alone.
_CANDIDATE: Final = f"(?=[{_IGNORABLE_CHARS}]*+(?:[jvdJVD]|&[{_IGNORABLE_CHARS}]*+(?:[#A-Za-z]|\\Z)|\\Z))"
# Where the destination of an inline link or image starts: after "](", whitespace (one line ending included, or
# more: reading more is only stricter) and an optional "<". The link text is not looked at: "](" is enough, so
# that neither a label spanning lines nor one cut off by a stream chunk can hide a link. Possessive quantifiers:
# no backtracking into a long run of whitespace.
_INLINE_LINK: Final = re.compile(r"\]\(\s*+<?+" + _CANDIDATE)
# Where the destination of a reference definition starts: after "]:", spaces or tabs, at most one line ending
# and what continues a block quote or a list item on the next line. As for inline links, the label is not looked
# at (CommonMark lets it span lines, "[x\ny]: ..."): any "]:" followed by a dangerous destination is neutralised.
_DEFINITION_DESTINATION: Final = re.compile(r"\]:[ \t]*+(?:\r?\n[ \t>]*+)?+<?+" + _CANDIDATE)
# Only those that could start a dangerous scheme are looked at: HTML has many <...>.
_AUTOLINK: Final = re.compile(f"<{_CANDIDATE}([^<>\\n]*)>")
# What ends an inline destination: its unbalanced ")" (parentheses nest), a line ending, or a backslash escape.
_DESTINATION_STRUCTURE: Final = re.compile(r"[\\\n()]")


def _inline_destination_end(text: str, start: int) -> int:
    """Where the destination starting at ``start`` ends: its unbalanced ``)``, the line's end or the text's."""
    depth = 0
    index = start
    while (found := _DESTINATION_STRUCTURE.search(text, index)) is not None:
        index = found.end()
        char = found.group()
        if char == "\\":
            index += 1
        elif char == "\n":
            return found.start()
        elif char == "(":
            depth += 1
        elif depth == 0:
            return found.start()
        else:
            depth -= 1
    return len(text)


def _neutralise_inline_links(text: str, counts: dict[str, int]) -> str:
    pieces: list[str] = []
    done = 0
    position = 0
    while (match := _INLINE_LINK.search(text, position)) is not None:
        position = match.end()
        if not _is_dangerous(text, position, len(text)):
            continue
        opening = match.start() + 2  # just after "]("
        end = _inline_destination_end(text, position)
        pieces += (text[done:opening], "#")
        done = position = end
        counts["markdown_links"] = counts.get("markdown_links", 0) + 1
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def _neutralise_reference_definitions(text: str, counts: dict[str, int]) -> str:
    pieces: list[str] = []
    done = 0
    position = 0
    while (match := _DEFINITION_DESTINATION.search(text, position)) is not None:
        start = position = match.end()  # may be on the next line
        # The line's end, looked for only as far as the destination is read: many definitions on one long line
        # must not cost a search to its end each.
        window = min(len(text), start + _URL_HEAD + 1)
        end = text.find("\n", start, window)
        if _is_dangerous(text, start, window if end == -1 else end):
            # The destination and a title after it go: "[x]: #".
            if end == -1:
                end = text.find("\n", window)
                end = len(text) if end == -1 else end
            opening = match.start() + 2  # just after "]:"
            pieces += (text[done:opening], " #")
            done = position = end
            counts["markdown_links"] = counts.get("markdown_links", 0) + 1
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def _neutralise_autolinks(text: str, counts: dict[str, int]) -> str:
    found = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        if _is_dangerous(text, match.start(1), match.end(1)):
            found += 1
            return "<#>"
        return match.group(0)

    result = _AUTOLINK.sub(replace, text)
    if found:
        counts["markdown_links"] = counts.get("markdown_links", 0) + found
    return result


def open_link_start(text: str) -> int:
    """Where the first link in ``text`` starts whose destination more text could still make dangerous.

    That is the ``]`` of a ``](`` or ``]:`` whose destination, read to the end of ``text``, could still begin a
    dangerous scheme (``[a](``, ``[a](java``, ``[a]:\\n``), or a ``]`` that ends the text (the next character
    could be ``(`` or ``:``). ``len(text)`` when there is none. A stream holds text back from here: sanitised in
    two pieces, such a link would be judged on half its destination.
    """
    earliest = len(text) - 1 if text.endswith("]") else len(text)
    for pattern in (_INLINE_LINK, _DEFINITION_DESTINATION):
        for match in pattern.finditer(text):
            if match.start() >= earliest:
                break
            if _scheme_verdict(text, match.end(), len(text)) == "undecided":
                earliest = match.start()
                break
    return earliest


def seal_open_links(text: str) -> str:
    """``text`` with every link :func:`open_link_start` would find closed to what may follow.

    An open destination gets ``#`` where it starts, so that whatever follows continues a fragment (``[a](#ja``),
    and a ``]`` that ends the text is escaped (``\\]``), so that a ``(`` or ``:`` after it starts no link.
    """
    inserts: list[tuple[int, str]] = []
    for pattern in (_INLINE_LINK, _DEFINITION_DESTINATION):
        for match in pattern.finditer(text):
            if _scheme_verdict(text, match.end(), len(text)) == "undecided":
                inserts.append((match.end(), "#"))
    if text.endswith("]"):
        backslashes = len(text) - 1 - len(text[:-1].rstrip("\\"))
        if backslashes % 2 == 0:  # not escaped already
            inserts.append((len(text) - 1, "\\"))
    if not inserts:
        return text
    pieces: list[str] = []
    done = 0
    for position, insert in sorted(inserts):
        pieces += (text[done:position], insert)
        done = position
    pieces.append(text[done:])
    return "".join(pieces)


def _neutralise_links(text: str, counts: dict[str, int]) -> str:
    if "](" in text:
        text = _neutralise_inline_links(text, counts)
    if "]:" in text:
        text = _neutralise_reference_definitions(text, counts)
    if "<" in text:
        text = _neutralise_autolinks(text, counts)
    return text


# ---------------------------------------------------------------------------
# HTML stage

# "<" starts a tag, an end tag, a comment, a doctype or a processing instruction only before these (HTML tokenizer,
# "tag open state"); anything else is text, which nh3 would only escape.
_MARKUP: Final = re.compile(r"<[A-Za-z/!?]")
# CommonMark autolinks (<https://example.com>, <me@example.com>) look like tags to an HTML parser, which would make
# an element of them (with attributes taken from the URL's path) and nh3 would delete them. They are links: the
# HTML stage keeps them as escaped text.
_URI_AUTOLINK: Final = re.compile(r"<([A-Za-z][A-Za-z0-9+.\-]{1,31}:[^\s<>\x00-\x1f\x7f]*)>")
_EMAIL_AUTOLINK: Final = re.compile(
    r"<([A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*)>"
)
_TAG_TOKEN: Final = re.compile(r"<[A-Za-z/!?][^<>]*>?")
# Never allowed, whatever nh3's defaults become.
_FORBIDDEN_TAGS: Final = frozenset(
    {
        "applet",
        "base",
        "basefont",
        "embed",
        "form",
        "frame",
        "frameset",
        "iframe",
        "input",
        "link",
        "math",
        "meta",
        "noembed",
        "noframes",
        "noscript",
        "object",
        "script",
        "style",
        "svg",
        "template",
        "xmp",
    }
)
# Removed with their content: code, raw-text fallbacks that look like markup (the home of mutation XSS), inert
# templates and foreign (SVG/MathML) content. Other disallowed tags are removed but their text is kept.
_CLEAN_CONTENT_TAGS: Final = frozenset(
    {
        "applet",
        "iframe",
        "math",
        "noembed",
        "noframes",
        "noscript",
        "object",
        "script",
        "style",
        "svg",
        "template",
        "xmp",
    }
)
_ALLOWED_TAGS: Final = frozenset(nh3.ALLOWED_TAGS) - _FORBIDDEN_TAGS
_ALLOWED_ATTRIBUTES: Final = {
    tag: {name for name in names if name != "style" and not name.startswith("on")}
    for tag, names in nh3.ALLOWED_ATTRIBUTES.items()
    if tag in _ALLOWED_TAGS
}
_URL_ATTRIBUTES: Final = frozenset(
    {
        "action",
        "archive",
        "background",
        "cite",
        "classid",
        "codebase",
        "data",
        "dynsrc",
        "formaction",
        "href",
        "icon",
        "longdesc",
        "lowsrc",
        "manifest",
        "ping",
        "poster",
        "profile",
        "src",
        "srcset",
        "usemap",
        "xlink:href",
    }
)


def _filter_attribute(element: str, attribute: str, value: str) -> str | None:
    """nh3 attribute filter: drops a URL whose scheme, once invisible characters are gone, is not allowed.

    nh3 checks schemes only on ``href`` and ``src`` and only as the URL parser reads them, so
    ``java\\u200bscript:`` passes as a relative URL (and would become live once the text stage drops the
    zero-width space from nh3's output), and ``cite`` is not checked at all.
    """
    if attribute in _URL_ATTRIBUTES:
        key, cut = _head_key(value)
        scheme = _SCHEME.match(key)
        if scheme is not None and scheme.group(1) not in _ALLOWED_HTML_SCHEMES:
            return None
        if scheme is None and cut and _SCHEME_SO_FAR.fullmatch(key):
            return None  # all that was read could still be a scheme: fail closed
    return value


def _html_changes(before: str, after: str) -> int:
    kept = Counter(_TAG_TOKEN.findall(after))
    removed = 0
    for token in _TAG_TOKEN.findall(before):
        if kept[token] > 0:
            kept[token] -= 1
        else:
            removed += 1
    return max(removed, 1)


# Rounds of nh3 + re-run of the text and markdown stages before giving up and escaping every "<".
_MAX_HTML_ROUNDS: Final = 4

# Deeper markup is escaped rather than parsed: html5ever (in nh3) walks the stack of open elements for
# each block element, so its time grows with depth x tags. Real answers nest a few dozen levels at most.
_MAX_HTML_DEPTH: Final = 256
_TAG_START: Final = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)")
_VOID_ELEMENTS: Final = frozenset(
    "area base br col embed hr img input keygen link meta param source track wbr".split()  # noqa: SIM905
)


def _nested_too_deep(text: str) -> bool:
    """Whether the markup may nest deeper than :data:`_MAX_HTML_DEPTH` (counts every non-void start tag)."""
    depth = 0
    for closing, name in _TAG_START.findall(text):
        if closing:
            depth = max(depth - 1, 0)
        elif name.lower() not in _VOID_ELEMENTS:
            depth += 1
            if depth > _MAX_HTML_DEPTH:
                return True
    return False


# ---------------------------------------------------------------------------
# Prompt-injection markers

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


def _find_markers(text: str) -> list[str]:
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


# ---------------------------------------------------------------------------
# Public API


@dataclass(frozen=True, slots=True)
class SanitizePolicy:
    """Which hazards a :class:`Sanitizer` neutralises; every switch is on by default.

    Attributes:
        control_chars: Remove C0 and C1 control characters, except tab, line feed and carriage return.
        ansi: Remove ANSI escape sequences: CSI (``ESC [``), OSC (``ESC ]`` up to BEL or ``ESC \\``) including
            OSC 8 hyperlinks and OSC 52 clipboard writes, DCS/SOS/PM/APC strings, the 8-bit C1 forms
            (``\\x9b``, ``\\x9d``...) and every other ESC sequence.
        bidi: Remove bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and the marks
            U+200E, U+200F, U+061C.
        zero_width: Remove U+200B, U+200C, U+200D, U+2060-U+2064, U+FEFF, U+180E, the soft hyphen U+00AD, the
            combining grapheme joiner U+034F, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0, U+17B4, U+17B5,
            and the variation selectors U+FE00-U+FE0F and U+E0100-U+E01EF, except one U+FE0E or U+FE0F alone
            after an emoji (its text or emoji style).
        tag_chars: Remove Unicode tag characters U+E0000-U+E007F.
        normalize: NFC-normalise, as the last step of the text stage.
        html: Sanitise HTML with nh3 when the text contains markup.
        markdown_links: Replace by ``#`` the destination of markdown links, images, reference definitions and
            autolinks whose scheme is ``javascript:``, ``vbscript:`` or ``data:``, however obfuscated.
        detect_injection: Report prompt-injection markers (never removed).

    Raises:
        ConfigurationError: A switch is not a ``bool``.
    """

    control_chars: bool = True
    ansi: bool = True
    bidi: bool = True
    zero_width: bool = True
    tag_chars: bool = True
    normalize: bool = True
    html: bool = True
    markdown_links: bool = True
    detect_injection: bool = True

    def __post_init__(self) -> None:
        for option in fields(self):
            value = getattr(self, option.name)
            if not isinstance(value, bool):
                raise ConfigurationError(
                    f"SanitizePolicy.{option.name} must be True or False, not {value!r} ({type(value).__name__})"
                )

    def to_config(self) -> dict[str, bool]:
        """Every switch by name, as :meth:`from_config` reads it back."""
        return {option.name: getattr(self, option.name) for option in fields(self)}

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> SanitizePolicy:
        """The policy described by ``config``; switches it leaves out keep their default.

        Raises:
            ConfigurationError: ``config`` is not a mapping, names an unknown switch, or a value is not a ``bool``.
        """
        if not isinstance(config, Mapping):
            raise ConfigurationError(f"a SanitizePolicy config must be a mapping, not {type(config).__name__}")
        known = {option.name for option in fields(cls)}
        unknown = sorted(str(name) for name in config if name not in known)
        if unknown:
            raise ConfigurationError(
                f"unknown SanitizePolicy option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        switches: dict[str, bool] = {}
        for name, value in config.items():
            if not isinstance(value, bool):
                raise ConfigurationError(
                    f"SanitizePolicy.{name} must be True or False, not {value!r} ({type(value).__name__})"
                )
            switches[name] = value
        return cls(**switches)


_EMPTY_CHANGES: Final[Mapping[str, int]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SanitizeReport:
    """What a :class:`Sanitizer` changed and found.

    Attributes:
        changes: How many things each category removed or neutralised (see the module documentation for what
            is counted); only categories with a count above zero are present, in stage order. Read-only.
        injection_markers: The prompt-injection markers found, as matched (at most 80 characters each), in order.
    """

    changes: Mapping[str, int] = field(default_factory=lambda: _EMPTY_CHANGES)
    injection_markers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, count in self.changes.items():
            if name not in CATEGORIES:
                raise ValueError(f"unknown sanitize category {name!r}; known: {', '.join(CATEGORIES)}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"the count for {name!r} must be an int >= 0, not {count!r}")
        changes = {name: self.changes[name] for name in CATEGORIES if self.changes.get(name, 0) > 0}
        object.__setattr__(self, "changes", MappingProxyType(changes) if changes else _EMPTY_CHANGES)
        object.__setattr__(self, "injection_markers", tuple(self.injection_markers))

    @property
    def changed(self) -> bool:
        """Whether anything was removed or neutralised (markers found do not count: they are left in place)."""
        return bool(self.changes)

    @property
    def total(self) -> int:
        """The sum of :attr:`changes`."""
        return sum(self.changes.values())

    def merge(self, other: SanitizeReport) -> SanitizeReport:
        """A report with the counts of both summed and the markers of ``self`` then ``other``."""
        if not other.changes and not other.injection_markers:
            return self
        if not self.changes and not self.injection_markers:
            return other
        changes = dict(self.changes)
        for name, count in other.changes.items():
            changes[name] = changes.get(name, 0) + count
        return SanitizeReport(changes, self.injection_markers + other.injection_markers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SanitizeReport):
            return NotImplemented
        return dict(self.changes) == dict(other.changes) and self.injection_markers == other.injection_markers

    def __hash__(self) -> int:
        return hash((frozenset(self.changes.items()), self.injection_markers))

    def __repr__(self) -> str:
        return f"SanitizeReport(changes={dict(self.changes)!r}, injection_markers={self.injection_markers!r})"


EMPTY: Final = SanitizeReport()
"""The report of a sanitisation that changed and found nothing."""
EMPTY_REPORT: Final = EMPTY
"""Another name for :data:`EMPTY`, for callers that import it next to other reports."""

_DEFAULT_POLICY: Final = SanitizePolicy()

# A container of the copy that Sanitizer.value builds, and a slot in it: an index or a key.
_Parent = list[object] | dict[object, object]


class Sanitizer:
    """Neutralises model output according to a :class:`SanitizePolicy`; reusable and safe to share between threads.

    Args:
        policy: Which stages run. The default runs them all.

    Raises:
        ConfigurationError: ``policy`` is not a :class:`SanitizePolicy`.

    Example:
        >>> text, report = Sanitizer().text("Click [here](javascript:alert(1))\\u200b")
        >>> text
        'Click [here](#)'
        >>> dict(report.changes)
        {'zero_width': 1, 'markdown_links': 1}
    """

    __slots__ = ("_cleaner", "_policy")

    def __init__(self, policy: SanitizePolicy = _DEFAULT_POLICY) -> None:
        if not isinstance(policy, SanitizePolicy):
            raise ConfigurationError(f"policy must be a SanitizePolicy, not {type(policy).__name__}")
        self._policy = policy
        # Building a Cleaner compiles ammonia's configuration; one per Sanitizer, reused by every call.
        self._cleaner: nh3.Cleaner | None = (
            nh3.Cleaner(
                tags=_ALLOWED_TAGS,
                clean_content_tags=_CLEAN_CONTENT_TAGS,
                attributes=_ALLOWED_ATTRIBUTES,
                attribute_filter=_filter_attribute,
                strip_comments=True,
                link_rel="noopener noreferrer",
                url_schemes=_ALLOWED_HTML_SCHEMES,
            )
            if policy.html
            else None
        )

    @property
    def policy(self) -> SanitizePolicy:
        """The policy this sanitizer applies."""
        return self._policy

    def __repr__(self) -> str:
        return f"Sanitizer({self._policy!r})"

    def text(self, text: str) -> tuple[str, SanitizeReport]:
        """Sanitises one string.

        Args:
            text: What the model returned.

        Returns:
            The sanitised text (``text`` itself when nothing changed) and what was changed and found.

        Raises:
            TypeError: ``text`` is not a ``str``.
        """
        if not isinstance(text, str):
            raise TypeError(f"Sanitizer.text() takes a str, not {type(text).__name__}")
        counts: dict[str, int] = {}
        markers: list[str] = []
        result = self._sanitize(text, counts, markers)
        if not counts and not markers:
            return result, EMPTY
        return result, SanitizeReport(counts, tuple(markers))

    def value(self, value: object) -> tuple[object, SanitizeReport]:
        """Sanitises every string in a parsed JSON value: string leaves and dict keys, through lists and dicts.

        Tuples are treated as lists (and stay tuples); other objects (numbers, booleans, ``None``...) are
        returned as they are. Containers are always new objects: ``value`` is never mutated. When two keys of
        a dict become equal once sanitised, the one that needed no sanitising wins (an invisible character
        must not let a second ``"role"`` key shadow the real one), otherwise the first.

        Args:
            value: What ``json.loads`` (or similar) produced from the model's answer.

        Returns:
            The sanitised copy and the sum of what was changed and found in every string.
        """
        counts: dict[str, int] = {}
        markers: list[str] = []
        result = self._value(value, counts, markers)
        if not counts and not markers:
            return result, EMPTY
        return result, SanitizeReport(counts, tuple(markers))

    # -- internals ---------------------------------------------------------

    def _value(self, root: object, counts: dict[str, int], markers: list[str]) -> object:
        holder: list[object] = [None]
        # Iterative, so that a value as deep as json.loads accepts cannot exhaust the interpreter's stack. Only
        # containers go on the stack; strings and other leaves are done where they are met.
        work: list[tuple[dict[object, object] | list[object] | tuple[object, ...], _Parent, object]] = []
        copies: dict[int, object] = {}  # id of a dict or list already copied -> its copy (shared or cyclic values)
        tuples: list[tuple[list[object], _Parent, object]] = []

        def place(value: object, parent: _Parent, slot: object) -> None:
            if isinstance(value, str):
                _put(parent, slot, self._sanitize(value, counts, markers))
            elif isinstance(value, dict | list | tuple):
                _put(parent, slot, None)
                work.append((value, parent, slot))
            else:
                _put(parent, slot, value)

        place(root, holder, 0)
        while work:
            item, parent, slot = work.pop()
            copy: object
            if not isinstance(item, tuple) and id(item) in copies:
                copy = copies[id(item)]
            elif isinstance(item, dict):
                new_dict: dict[object, object] = {}
                copies[id(item)] = copy = new_dict
                for key, child in self._dict_entries(item, counts, markers):
                    place(child, new_dict, key)
            else:
                new_list: list[object] = [None] * len(item)
                copy = new_list
                if isinstance(item, list):
                    copies[id(item)] = new_list
                else:
                    # Made a tuple once its items are done: tuples are finished innermost first, below.
                    tuples.append((new_list, parent, slot))
                for index, child in enumerate(item):
                    place(child, new_list, index)
            _put(parent, slot, copy)
        for items, parent, slot in reversed(tuples):
            _put(parent, slot, tuple(items))
        return holder[0]

    def _dict_entries(
        self, item: dict[object, object], counts: dict[str, int], markers: list[str]
    ) -> list[tuple[object, object]]:
        entries: dict[object, tuple[bool, object]] = {}
        for key, child in item.items():
            new_key: object = key
            if isinstance(key, str):
                new_key = self._sanitize(key, counts, markers)
            clean = new_key == key
            previous = entries.get(new_key)
            if previous is None or (clean and not previous[0]):
                entries[new_key] = (clean, child)
        return [(key, child) for key, (_, child) in entries.items()]

    def _sanitize(self, text: str, counts: dict[str, int], markers: list[str]) -> str:
        detect = self._policy.detect_injection
        if text.isascii() and not _ASCII_HAZARD.search(text):
            if detect:
                _add_markers(markers, _find_markers(text))
            return text
        result = visible = self._text_stage(text, counts)
        if self._policy.markdown_links:
            result = _neutralise_links(result, counts)
        if self._cleaner is not None:
            result = self._html_stage(result, self._cleaner, counts)
        if detect:
            found = _find_markers(visible)
            if result != visible:
                # Markers the HTML stage revealed by decoding character references.
                earlier = Counter(found)
                for marker in _find_markers(result):
                    if earlier[marker] > 0:
                        earlier[marker] -= 1
                    else:
                        found.append(marker)
            _add_markers(markers, found)
        return result

    def _text_stage(self, text: str, counts: dict[str, int]) -> str:
        policy = self._policy
        ascii_only = text.isascii()
        if ascii_only:
            if not _ASCII_CONTROL.search(text):
                return text
        elif not _ANY_TEXT_HAZARD.search(text) and unicodedata.is_normalized("NFC", text):
            return text
        if policy.ansi:
            text = _remove_ansi(text, counts)
        if policy.control_chars:
            text = _remove(_CONTROL, text, "control_chars", counts)
        if ascii_only:
            return text
        if policy.bidi:
            text = _remove(_BIDI, text, "bidi", counts)
        if policy.zero_width:
            text = _remove(_ZERO_WIDTH, text, "zero_width", counts)
            text = _remove_variation_selectors(text, counts)
        if policy.tag_chars:
            text = _remove(_TAG_CHARS, text, "tag_chars", counts)
        if policy.normalize and not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
            counts["normalize"] = counts.get("normalize", 0) + 1
        return text

    def _html_stage(self, text: str, cleaner: nh3.Cleaner, counts: dict[str, int]) -> str:
        if _MARKUP.search(text) and _nested_too_deep(text):
            counts["html"] = counts.get("html", 0) + 1
            return text.replace("<", "&lt;")
        for _ in range(_MAX_HTML_ROUNDS):
            if not _MARKUP.search(text):
                return text
            cleaned = _URI_AUTOLINK.sub(r"&lt;\1&gt;", _EMAIL_AUTOLINK.sub(r"&lt;\1&gt;", text))
            if _MARKUP.search(cleaned):
                cleaned = cleaner.clean(cleaned)
            if cleaned == text:
                return text
            counts["html"] = counts.get("html", 0) + _html_changes(text, cleaned)
            # nh3 decodes character references: what the earlier stages removed may be back.
            text = self._text_stage(cleaned, counts)
            if self._policy.markdown_links:
                text = _neutralise_links(text, counts)
        if _MARKUP.search(text) and cleaner.clean(text) != text:
            # Has not settled: leave no markup at all rather than something that changes on every pass.
            text = text.replace("<", "&lt;")
            counts["html"] = counts.get("html", 0) + 1
        return text


def _remove_ansi(text: str, counts: dict[str, int]) -> str:
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


def _add_markers(markers: list[str], found: list[str]) -> None:
    room = _MAX_MARKERS - len(markers)
    if room > 0 and found:
        markers.extend(found[:room])


def _put(parent: _Parent, slot: object, value: object) -> None:
    if isinstance(parent, list):
        parent[cast(int, slot)] = value
    else:
        parent[slot] = value
