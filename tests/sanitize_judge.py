"""An independent judge of sanitised text: what a browser would run once the text is shown.

Two readings, both by parsers rather than by searching the text for patterns:

- as HTML, by the stdlib parser (plus a raw look at every tag, since ``html.parser`` is more lenient than a
  browser): no script-capable element, no event handler or ``style``, no URL attribute with a
  ``javascript:``, ``vbscript:`` or ``data:`` scheme;
- as markdown, rendered by markdown-it-py (CommonMark, raw HTML allowed, and its own link filter switched off,
  as a lenient renderer would have it), then judged as HTML in the same way.
"""

from __future__ import annotations

import html
import re
import sys
import unicodedata
from collections.abc import Callable
from html.parser import HTMLParser
from types import FrameType

from markdown_it import MarkdownIt

SCRIPT_CAPABLE_ELEMENTS = frozenset(
    {
        "applet",
        "audio",
        "base",
        "basefont",
        "bgsound",
        "body",
        "button",
        "embed",
        "form",
        "frame",
        "frameset",
        "head",
        "html",
        "iframe",
        "image",
        "input",
        "isindex",
        "keygen",
        "link",
        "marquee",
        "math",
        "meta",
        "noembed",
        "noframes",
        "noscript",
        "object",
        "param",
        "plaintext",
        "script",
        "select",
        "source",
        "style",
        "svg",
        "template",
        "textarea",
        "title",
        "video",
        "xml",
        "xmp",
    }
)
URL_ATTRIBUTES = frozenset(
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
        "srcdoc",
        "srcset",
        "usemap",
        "xlink:href",
    }
)
DANGEROUS_SCHEMES = ("javascript:", "vbscript:", "data:")
FILLERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")


def url_key(value: str) -> str:
    """How a permissive browser would read a URL's scheme: references decoded, nothing invisible."""
    decoded = html.unescape(value)
    kept = (
        char
        for char in decoded
        if not char.isspace()
        and unicodedata.category(char) not in {"Cc", "Cf", "Zs", "Zl", "Zp"}
        and char not in FILLERS
        and char != "\\"
    )
    return "".join(kept).lower()


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


# HTMLParser is more lenient than a browser (it reads "<!-->" or "<scr<script>" differently), so the raw text is
# also searched: no tag may open a script-capable element or carry a handler or a style, however it parses.
RAW_ELEMENT = re.compile(r"<\s*/?\s*(" + "|".join(sorted(SCRIPT_CAPABLE_ELEMENTS)) + r")(?![\w-])", re.IGNORECASE)
RAW_TAG = re.compile(r"</?[A-Za-z][^>]*>?")
QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
RAW_ATTRIBUTE = re.compile(r"[\s/\"'](on[\w-]*|style)\s*=", re.IGNORECASE)


def html_problems(text: str) -> list[str]:
    problems = [f"raw <{match.group(1)}>" for match in RAW_ELEMENT.finditer(text)]
    for tag in RAW_TAG.findall(text):
        unquoted = QUOTED.sub('""', tag)
        problems += [f"raw {match.group(1)}=" for match in RAW_ATTRIBUTE.finditer(unquoted)]
    parser = Elements()
    parser.feed(text)
    parser.close()
    for tag, attrs in parser.tags:
        if tag in SCRIPT_CAPABLE_ELEMENTS:
            problems.append(f"element <{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                problems.append(f"handler {name} on <{tag}>")
            if name == "style":
                problems.append(f"style on <{tag}>")
            if name in URL_ATTRIBUTES and url_key(value or "").startswith(DANGEROUS_SCHEMES):
                problems.append(f"{name}={value!r} on <{tag}>")
    return problems


def _lenient_renderer() -> MarkdownIt:
    renderer = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    # markdown-it drops javascript:, vbscript: and data: links itself; many renderers do not.
    renderer.validateLink = lambda url: True  # type: ignore[method-assign]
    return renderer


RENDERER = _lenient_renderer()


def render(text: str) -> str:
    """``text`` as a lenient CommonMark renderer turns it into HTML."""
    rendered: str = RENDERER.render(text)
    return rendered


def rendered_problems(text: str) -> list[str]:
    """What would run if ``text`` were shown as HTML, or rendered as markdown and shown."""
    return html_problems(text) + [f"rendered: {problem}" for problem in html_problems(render(text))]


# --- Work, counted rather than timed (the machines are shared: a time bound is either loose or flaky)


def calls_made(function: Callable[[], object]) -> int:
    """How many function calls, Python and C, ``function()`` makes: a deterministic measure of its work."""
    count = 0

    def profile(_frame: FrameType, event: str, _arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        function()
    finally:
        sys.setprofile(None)
    return count


def characters_passed(name: str, argument: str, function: Callable[[], object]) -> int:
    """The total length of the ``argument`` string over every call of the Python function ``name`` in ``function()``.

    Raises:
        AssertionError: ``name`` was never called (renamed?), so the count would mean nothing.
    """
    total, seen = 0, 0

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        nonlocal total, seen
        if event == "call" and frame.f_code.co_name == name:
            seen += 1
            total += len(frame.f_locals[argument])

    sys.setprofile(profile)
    try:
        function()
    finally:
        sys.setprofile(None)
    assert seen, f"{name}() was never called"
    return total
