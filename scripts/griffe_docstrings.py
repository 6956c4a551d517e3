"""A griffe extension for the documentation site: the docstrings' reST habits, shown as Markdown.

The package's docstrings are Google style, read by ``help()``, doctest and IDEs, and use
two reST habits that Markdown (what mkdocstrings renders) does not know:

- roles such as ``:class:`~autogen_reliability.RetryPolicy``` or ``:meth:`events```: each
  becomes a link to the object's entry in the API reference when the name resolves
  (an *optional* autorefs reference, so a name outside the reference, say
  ``sqlalchemy.exc.OperationalError``, is shown as code instead of failing the strict build);
- ``Example:`` sections, which griffe's Google parser takes for an admonition: their
  ``>>>`` lines and the output after them would be read as Markdown (``['ok']`` as a
  link). Each run of doctest lines becomes a fenced ``pycon`` block;
- reST simple tables (columns under ``=====  =====`` borders), which Markdown would
  show as preformatted text with their borders, or worse, take the line above a
  border for a heading: each becomes a Markdown table.

mkdocs.yml loads it (``plugins.mkdocstrings.handlers.python.options.extensions``); the
package itself does not depend on it.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`(?P<tilde>~?)(?P<target>[^`]+)`")
_PROMPT = re.compile(r"^(?P<indent>\s*)>>> ")


class ReSTToMarkdown(griffe.Extension):
    """Rewrites each docstring of the package once, after the whole package is loaded (names resolve then)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # griffe's hook signature
        seen: set[int] = set()
        for obj in _walk(pkg, seen):
            if obj.docstring is not None:
                text = _markdown_tables(_fence_doctests(obj.docstring.value))
                obj.docstring.value = _ROLE.sub(lambda found, obj=obj: _reference(found, obj), text)


def _walk(obj: griffe.Object, seen: set[int]) -> list[griffe.Object]:
    """The object and everything defined inside it (aliases are skipped: their target is visited where defined)."""
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_walk(member, seen))  # type: ignore[arg-type]  # not an alias: an Object
    return found


def _reference(found: re.Match[str], obj: griffe.Object) -> str:
    target = found["target"].strip().removesuffix("()")
    shown = target.rsplit(".", 1)[-1] if found["tilde"] or target.startswith(".") else target.lstrip(".")
    code = f"<code>{html.escape(shown)}</code>"
    identifier = _resolve(target, obj)
    if identifier is None:
        return code
    return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'


def _resolve(target: str, obj: griffe.Object) -> str | None:
    """The full path of ``target`` as written in ``obj``'s docstring, or None when it cannot be told."""
    if target.startswith("autogen_reliability"):
        return target
    head, _, rest = target.lstrip(".").partition(".")
    scopes = [obj, *_parents(obj)] if not target.startswith(".") else [*_parents(obj)]
    for scope in scopes:
        if head in scope.members:
            member = scope.members[head]
            path = member.target_path if member.is_alias else member.path  # type: ignore[union-attr]
            return f"{path}.{rest}" if rest else path
    try:
        path = obj.resolve(head)
    except (griffe.NameResolutionError, AttributeError):
        return None
    return f"{path}.{rest}" if rest else path


def _parents(obj: griffe.Object) -> list[griffe.Object]:
    found = []
    parent = obj.parent
    while parent is not None:
        found.append(parent)
        parent = parent.parent
    return found


_SECTION = re.compile(r"^(?P<type>[\w][\s\w-]*):(\s+(?P<title>[^\s].*))?\s*$")  # griffe's own (admonitions too)
_EXAMPLE = re.compile(r"^Example(?:\s*\((?P<note>.*)\))?:\s*$")


def _examples_sections(text: str) -> str:
    """``Example:`` and ``Example (note):`` titles as ``Examples:``, which griffe reads as code and text.

    The note in parentheses becomes the section's first line of text.
    """
    lines = text.splitlines()
    out: list[str] = []
    for index, line in enumerate(lines):
        title = _EXAMPLE.match(line)
        below = lines[index + 1] if index + 1 < len(lines) else ""
        if title is None or not below.startswith(" "):
            out.append(line)
            continue
        out.append("Examples:")
        if title["note"]:
            note = title["note"].strip()
            out.extend([f"    {note[0].upper()}{note[1:]}:", ""])
    return "\n".join(out)


def _fence_doctests(text: str) -> str:
    """Each run of ``>>>`` lines in the body text, with its continuation and output lines, fenced as ``pycon``.

    A run ends at a blank line or at a line indented less than its first prompt; it is dedented,
    as four spaces would make the fence itself literal text. Runs in a section (``Examples:``
    above all) are left to griffe, which makes them code already.
    """
    text = _examples_sections(text)
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    in_section = False
    while index < len(lines):
        line = lines[index]
        if line.strip() and not line[0].isspace():
            below = lines[index + 1] if index + 1 < len(lines) else ""
            in_section = bool(_SECTION.match(line)) and below.startswith(" ")
        prompt = _PROMPT.match(line)
        if prompt is None or in_section:
            out.append(line)
            index += 1
            continue
        indent = prompt["indent"]
        end = index
        while end < len(lines) and lines[end].strip() and lines[end].startswith(indent):
            end += 1
        if out and out[-1].strip():
            out.append("")  # a fence must start its own block
        out.append("```pycon")
        out.extend(run_line.removeprefix(indent) for run_line in lines[index:end])
        out.append("```")
        if end < len(lines) and lines[end].strip():
            out.append("")
        index = end
    return "\n".join(out)


_BORDER = re.compile(r"^(?P<indent> *)=+(?: +=+)+ *$")


def _markdown_tables(text: str) -> str:
    """Each reST simple table (border, header, border, rows, border) as a Markdown table.

    A row whose first cell is empty continues the row above it, as in reST. The table sits
    at the indentation of the text around it, as the doctest fences do (see `_fence_doctests`).
    """
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    in_section = False
    while index < len(lines):
        line = lines[index]
        if line.strip() and not line[0].isspace():
            below = lines[index + 1] if index + 1 < len(lines) else ""
            in_section = bool(_SECTION.match(line)) and below.startswith(" ")
        top = _BORDER.match(line)
        borders = [i for i in range(index, len(lines)) if lines[i].strip() and _BORDER.match(lines[i])][:3]
        if top is None or len(borders) < 3 or borders[1] != index + 2:
            out.append(lines[index])
            index += 1
            continue
        indent = "    " if in_section else ""
        spans = [(found.start(), found.end()) for found in re.finditer(r"=+", lines[index])]
        rows: list[list[str]] = []
        for line in [lines[index + 1], *lines[borders[1] + 1 : borders[2]]]:
            if not line.strip():
                continue
            cells = [line[start : spans[n + 1][0] if n + 1 < len(spans) else None].strip() for n, (start, _) in
                     enumerate(spans)]  # fmt: skip
            if rows and len(rows) > 1 and not cells[0]:
                rows[-1] = [f"{above} {cell}".strip() for above, cell in zip(rows[-1], cells, strict=True)]
            else:
                rows.append(cells)
        if out and out[-1].strip():
            out.append("")
        for number, row in enumerate(rows):
            out.append(indent + "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
            if number == 0:
                out.append(indent + "|" + "---|" * len(row))
        index = borders[2] + 1
    return "\n".join(out)
