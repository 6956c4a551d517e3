"""The HTML stage: markup goes through one :class:`nh3.Cleaner` (ammonia), until it settles.

nh3's safe tag set but ``<bdo>`` (a bidi override), no ``style`` or ``on*`` attributes, only ``http``, ``https``
and ``mailto`` URLs (relative ones are kept unless they would have any other scheme once invisible characters are
dropped, judged by :mod:`._url_schemes`), ``rel="noopener noreferrer"`` on links. It runs only on text that
contains markup, since nh3 escapes every ``<``, ``>`` and ``&`` of what it is given; markdown autolinks are
escaped, not deleted. nh3 decodes character references, so the earlier stages run again on what it returns, and
nh3 again, until nothing changes; markup that does not settle, or nests too deep to parse in time, is escaped
whole. ``<think>`` and ``</think>``, the marks of a reasoning model's thought, are kept; the text on either side
of them is cleaned apart. Changes count under ``"html"`` (see :mod:`._sanitizer` for how).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Final

import nh3

from ._url_schemes import head_key

__all__ = ["clean_html", "new_cleaner"]

_ALLOWED_HTML_SCHEMES: Final = frozenset({"http", "https", "mailto"})
_SCHEME: Final = re.compile(r"([a-z][a-z0-9+.\-]*):")
_SCHEME_SO_FAR: Final = re.compile(r"[a-z0-9+.\-]*")

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
# The marks of a reasoning model's thought: AutoGen's around a streamed one ("<think>" before its first piece, a chunk
# "</think>" after its last), and an R1 model's around the one it writes in its answer. What tells a consumer the
# thought from the answer, and an element no browser does anything with; nh3 would delete them. Only exactly these,
# without attributes: the text on either side is cleaned as any other, nh3's output of it closing all it opens.
_THOUGHT_MARK: Final = re.compile(r"</?think>")
# Never allowed, whatever nh3's defaults become. bdo is a bidi override in markup (U+202E, which the text stage
# removes): <bdo dir="rtl">4321</bdo> is displayed "1234". Its text stays.
_FORBIDDEN_TAGS: Final = frozenset(
    {
        "applet",
        "base",
        "basefont",
        "bdo",
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
        key, cut = head_key(value)
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


def new_cleaner() -> nh3.Cleaner:
    """The cleaner of one :class:`Sanitizer`: building one compiles ammonia's configuration."""
    return nh3.Cleaner(
        tags=_ALLOWED_TAGS,
        clean_content_tags=_CLEAN_CONTENT_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        strip_comments=True,
        link_rel="noopener noreferrer",
        url_schemes=_ALLOWED_HTML_SCHEMES,
    )


def clean_html(
    text: str, cleaner: nh3.Cleaner, counts: dict[str, int], earlier_stages: Callable[[str, dict[str, int]], str]
) -> str:
    """``text`` with its markup sanitised by ``cleaner``; ``earlier_stages`` runs again on each output of nh3."""
    if _MARKUP.search(text) and _nested_too_deep(text):
        counts["html"] = counts.get("html", 0) + 1
        return text.replace("<", "&lt;")
    if "think>" in text and _THOUGHT_MARK.search(text) is not None:
        parts = _THOUGHT_MARK.split(text)
        marks = _THOUGHT_MARK.findall(text)
        cleaned_parts = [clean_html(part, cleaner, counts, earlier_stages) for part in parts]
        return cleaned_parts[0] + "".join(mark + part for mark, part in zip(marks, cleaned_parts[1:], strict=True))
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
        text = earlier_stages(cleaned, counts)
    if _MARKUP.search(text) and cleaner.clean(text) != text:
        # Has not settled: leave no markup at all rather than something that changes on every pass.
        text = text.replace("<", "&lt;")
        counts["html"] = counts.get("html", 0) + 1
    return text
