"""The markdown stage: links, images, reference definitions and autolinks to a dangerous scheme lose it.

Such a destination becomes ``#`` (``[x](#)``, ``[x]: #``, ``<#>``): the link text stays, a title goes with the
destination. A link is found by what precedes its destination (``](``, or ``]:`` with at most one line ending
after it), not by its text or label, which CommonMark lets span lines and contain brackets. The scheme is
judged by :mod:`._url_schemes`, only as far as it is in doubt, so the stage is linear in the text however dense
its links. Replacements count under ``"markdown_links"``.

For streams, :func:`open_link_start` and :func:`seal_open_links` say where a link is still open at the end of
a text, and close it.
"""

from __future__ import annotations

import re
from typing import Final

from ._url_schemes import IGNORABLE_CHARS, URL_HEAD, is_dangerous, scheme_verdict

__all__ = ["neutralise_links", "open_link_start", "seal_open_links"]

# What may follow where a destination starts for it to be worth reading (see _MAYBE_DANGEROUS); a lookahead, so
# that a text dense with links to https or anchors is passed over by the regular expression engine alone.
_CANDIDATE: Final = f"(?=[{IGNORABLE_CHARS}]*+(?:[jvdJVD]|&[{IGNORABLE_CHARS}]*+(?:[#A-Za-z]|\\Z)|\\Z))"
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
        if not is_dangerous(text, position, len(text)):
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
        window = min(len(text), start + URL_HEAD + 1)
        end = text.find("\n", start, window)
        if is_dangerous(text, start, window if end == -1 else end):
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
        if is_dangerous(text, match.start(1), match.end(1)):
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
            if scheme_verdict(text, match.end(), len(text)) == "undecided":
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
            if scheme_verdict(text, match.end(), len(text)) == "undecided":
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


def neutralise_links(text: str, counts: dict[str, int]) -> str:
    if "](" in text:
        text = _neutralise_inline_links(text, counts)
    if "]:" in text:
        text = _neutralise_reference_definitions(text, counts)
    if "<" in text:
        text = _neutralise_autolinks(text, counts)
    return text
