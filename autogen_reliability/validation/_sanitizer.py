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
   characters so that a sequence is removed whole, not just its ESC. A
   character reference to what this stage removes (``&#x202e;``, ``&rlm;``,
   ``&#x1b;``), which a markdown renderer or a browser would decode, is
   decoded first, and so removed with it; one that the removals assemble
   (``&&#x202e;#x202e;``) has its ``&`` escaped (``&amp;#x202e;``).
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
   no ``style`` or ``on*`` attributes, no ``<bdo>`` (a bidi override in markup;
   its text stays), only ``http``, ``https`` and ``mailto`` URLs (relative ones
   are kept unless they would have any other scheme once invisible characters
   are dropped), ``rel="noopener noreferrer"`` on links.
   It runs only when the text contains markup (``<`` followed by a letter,
   ``/``, ``!`` or ``?``), because nh3 escapes every ``<``, ``>`` and ``&`` of
   the text it is given and plain text must come out unchanged. Markdown
   autolinks (``<https://example.com>``) are markup to nh3, which would delete
   them: they are escaped instead, so the address stays readable. Note that
   markup in code (``Vec<String>``) is markup too: a consumer that renders
   markdown with raw HTML disabled may prefer ``html=False``.

This module composes the stages; each lives in a module of its own: the text
stage in ``_terminal.py`` (escape sequences, control characters) and
``_characters.py`` (bidi, invisible and tag characters), the markdown stage in
``_markdown_links.py``, the HTML stage in ``_html.py``, both judging schemes
with ``_url_schemes.py``; the markers in ``_injection_markers.py``, the walk
through a JSON value in ``_json_walk.py``. Streams: ``_stream_sanitizer.py``.

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
  ``control_chars`` also counts each surrogate pair mended, and each lone surrogate made U+FFFD
  (whatever the switches: nh3 cannot encode them).
- ``ansi``: escape sequences removed (a lone ESC counts as one).
- ``normalize``: strings that NFC changed (1 per string).
- ``markdown_links``: link destinations replaced by ``#``.
- ``html``: tags, comments and declarations that did not survive nh3 verbatim
  (a tag that lost an attribute or gained ``rel`` counts once), and at least 1
  for every string nh3 changed at all, even when only text was re-escaped.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import nh3

from autogen_reliability._errors import ConfigurationError

from ._characters import (
    decode_references,
    escape_references,
    mend_surrogates,
    remove_bidi,
    remove_tag_chars,
    remove_zero_width,
)
from ._html import clean_html, new_cleaner
from ._injection_markers import add_markers, find_markers
from ._json_walk import map_strings
from ._markdown_links import neutralise_links
from ._sanitize_policy import SanitizePolicy
from ._terminal import remove_ansi, remove_controls

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

# These three only decide whether a string needs work. A pure ASCII string without controls, "<", "]" or "&" has no
# text hazard, no character reference to one, no markdown link and no markup: it is returned as it is.
# A carriage return sends a string to the work too, which changes only one that ends no line: "\r(?!\n)" here
# would cost every string twice the time, since an alternation defeats the regex engine's first-character scan.
_ASCII_HAZARD: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f<\]&]")
_ASCII_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ANY_TEXT_HAZARD: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u206f\u3164\ud800-\udfff\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


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


def inert(text: str) -> bool:
    """Whether no stage of any policy changes ``text``: pure ASCII without controls, ``<``, ``]`` or ``&``.

    Such text has no text hazard, no character reference, no markdown link and no markup; it is returned as it is
    (only injection markers are looked for in it).
    """
    return text.isascii() and _ASCII_HAZARD.search(text) is None


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
        self._cleaner: nh3.Cleaner | None = new_cleaner() if policy.html else None

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
        result = map_strings(value, self._sanitize, counts, markers)
        if not counts and not markers:
            return result, EMPTY
        return result, SanitizeReport(counts, tuple(markers))

    # -- internals ---------------------------------------------------------

    def _sanitize(self, text: str, counts: dict[str, int], markers: list[str]) -> str:
        detect = self._policy.detect_injection
        if inert(text):
            if detect:
                add_markers(markers, find_markers(text))
            return text
        result = visible = self._text_stage(text, counts)
        if self._policy.markdown_links:
            result = neutralise_links(result, counts)
        if self._cleaner is not None:
            result = clean_html(result, self._cleaner, counts, self._earlier_stages)
        if detect:
            found = find_markers(visible)
            if result != visible:
                # Markers the HTML stage revealed by decoding character references.
                earlier = Counter(found)
                for marker in find_markers(result):
                    if earlier[marker] > 0:
                        earlier[marker] -= 1
                    else:
                        found.append(marker)
            add_markers(markers, found)
        return result

    def _text_stage(self, text: str, counts: dict[str, int]) -> str:
        if "&" not in text:
            return self._characters(text, counts)
        # What a renderer would decode: a reference to a character the stages remove is removed with it.
        text = self._characters(decode_references(text, self._characters), counts)
        return escape_references(text, counts, self._characters) if "&" in text else text

    def _characters(self, text: str, counts: dict[str, int]) -> str:
        policy = self._policy
        ascii_only = text.isascii()
        if ascii_only:
            if not _ASCII_CONTROL.search(text):
                return text
        elif not _ANY_TEXT_HAZARD.search(text) and unicodedata.is_normalized("NFC", text):
            return text
        if policy.ansi:
            text = remove_ansi(text, counts)
        if policy.control_chars:
            text = remove_controls(text, counts)
        if ascii_only:
            return text
        # Whatever the switches: the HTML stage (nh3) raised UnicodeEncodeError on a lone surrogate.
        text = mend_surrogates(text, counts)
        if policy.bidi:
            text = remove_bidi(text, counts)
        if policy.zero_width:
            text = remove_zero_width(text, counts)
        if policy.tag_chars:
            text = remove_tag_chars(text, counts)
        if policy.normalize and not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
            counts["normalize"] = counts.get("normalize", 0) + 1
        return text

    def _earlier_stages(self, text: str, counts: dict[str, int]) -> str:
        """The text and markdown stages, run again on what nh3 returned (it decodes character references)."""
        text = self._text_stage(text, counts)
        if self._policy.markdown_links:
            text = neutralise_links(text, counts)
        return text
