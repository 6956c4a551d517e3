"""A small DOM of an HTML page, parsed by the standard library's html.parser: what the report tests judge with.

Independent of how the page was made (Jinja2, our SVG module): a test asks what
elements, attributes and text a browser's parser would see.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    """An element: its tag, attributes (in order, as written), children and direct text."""

    tag: str
    attrs: list[tuple[str, str | None]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def attr(self, name: str) -> str | None:
        return next((value for key, value in self.attrs if key == name), None)

    @property
    def classes(self) -> set[str]:
        return set((self.attr("class") or "").split())

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str, *, cls: str | None = None) -> list[Node]:
        return [node for node in self.walk() if node.tag == tag and (cls is None or cls in node.classes)]

    def by_id(self, identifier: str) -> Node:
        found = [node for node in self.walk() if node.attr("id") == identifier]
        assert len(found) == 1, f"{len(found)} elements with id {identifier!r}"
        return found[0]

    def text(self) -> str:
        """All the text inside, as a browser would show it (entities decoded), pieces joined by a space."""
        parts: list[str] = []

        def collect(node: Node) -> None:
            parts.extend(node.texts)
            for child in node.children:
                collect(child)

        collect(self)
        return " ".join(parts)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, attrs)
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        # Close up to the matching element (a well-formed page closes exactly the top one).
        for index in range(len(self.stack) - 1, 0, -1):
            if self.stack[index].tag == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.stack[-1].texts.append(data)


def parse(page: str) -> Node:
    """The document's root."""
    builder = _Builder()
    builder.feed(page)
    builder.close()
    return builder.root
