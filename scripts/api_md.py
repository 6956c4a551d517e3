"""Writes docs/api.md from each public package's ``__all__`` and docstrings.

Run ``python scripts/api_md.py`` after changing a package's public names;
``tests/test_public_api.py`` fails while the page and the code disagree.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import types
from pathlib import Path

PACKAGES = [
    "autogen_reliability",
    "autogen_reliability.retry",
    "autogen_reliability.validation",
    "autogen_reliability.accounting",
    "autogen_reliability.reports",
    "autogen_reliability.storage",
    "autogen_reliability.budget",
    "autogen_reliability.health",
    "autogen_reliability.providers",
    "autogen_reliability.testing",
    "autogen_reliability.fastapi",  # extra [fastapi]: listed where FastAPI is installed
    "autogen_reliability.metrics",
    "autogen_reliability.otel",
]

HEADER = """# Public API

Everything importable from these packages is the public API; their modules are private
(underscore-named) and may change between releases. `tests/test_public_api.py` checks that this
page lists exactly each package's `__all__`. Each name links to its entry in the API reference,
which the documentation site renders from the docstrings (`reference/`, one page per package).
"""


_ROLE = re.compile(r":[a-z]+:`~?\.?([^`]+)`")  # :meth:`~a.B.c` in a docstring; Markdown shows it as `a.B.c`


def _first_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    return _ROLE.sub(r"`\1`", line)


def _kind(obj: object) -> str:
    if inspect.ismodule(obj):
        return "module"  # a namespace of functions, such as autogen_reliability.testing.faults
    if inspect.isclass(obj):
        return "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "function"
    if getattr(obj, "__module__", None) == "typing" or hasattr(obj, "__origin__") or isinstance(obj, types.UnionType):
        return "type"  # an alias such as ReplyFactory = Callable[...]
    return "value"


def _described(page: str) -> dict[str, str]:
    """What the page says now of each name: aliases and values carry no docstring to read again."""
    found = {}
    for line in page.splitlines():
        entry = re.match(r"- \[?`(\w+)`", line)
        if entry and "): " in line:
            found[entry.group(1)] = line.split("): ", 1)[1]
    return found


def reference_page(package: str) -> str:
    """The API reference page of ``package`` on the documentation site, relative to docs/."""
    return f"reference/{package}.md"


def render(packages: list[str], known: dict[str, str]) -> str:
    parts = [HEADER]
    for name in packages:
        module = importlib.import_module(name)
        page = reference_page(name)
        parts.append(f"## `{name}`\n\n{_first_line(module)} [Reference]({page})\n")
        lines = []
        for public in module.__all__:
            obj = getattr(module, public)
            kind = _kind(obj)
            text = _first_line(obj) if kind in ("class", "function", "module") else known.get(public, "")
            if public.startswith("__"):  # __version__: said in words on the reference page, no entry of its own
                lines.append(f"- `{public}` ({kind}): {text}".rstrip())
                continue
            # The anchor is mkdocstrings' id of the entry: `mkdocs build --strict` fails if it is missing.
            lines.append(f"- [`{public}`]({page}#{name}.{public}) ({kind}): {text}".rstrip())
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts).rstrip("\n") + "\n"


def _importable(name: str) -> bool:
    if importlib.util.find_spec(name) is None:
        return False
    try:
        importlib.import_module(name)
    except ImportError:  # an extra that is not installed here: its ImportError names it
        return False
    return True


def main() -> None:
    present = [name for name in PACKAGES if _importable(name)]
    target = Path(__file__).resolve().parent.parent / "docs" / "api.md"
    page = render(present, _described(target.read_text()))
    if "--check" in sys.argv:
        raise SystemExit(0 if target.read_text() == page else 1)
    target.write_text(page)


if __name__ == "__main__":
    main()
