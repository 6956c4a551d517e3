"""The documentation runs as written: every Python block of README.md and docs/, every ``>>>`` example.

**Pages.** Every ```` ```python ```` block of README.md and docs/*.md runs, unless the
line right before its fence says why it cannot (an HTML comment, invisible once
rendered; the reason is required)::

    <!-- not run: needs a PostgreSQL server named db -->
    ```python

A block whose fence is preceded by ``<!-- file: NAME -->`` is not code: its text is
written to NAME in the page's working directory before the blocks after it run
(docs/accounting.md's ``prices.toml``).

The blocks of one page run in order, in one namespace and on one event loop, as a
reader would type them into one session: a block may use what an earlier block of
the same page defined or imported (README's later blocks use the
``OpenAIChatCompletionClient`` its first block imports). A block may ``await`` at
the top level, as in a notebook or ``python -m asyncio``. Each page runs in a
process of its own, in a temporary working directory, with

- ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` pointing at a `FakeOpenAIServer` of
  this test (the openai SDK reads both), so ``OpenAIChatCompletionClient(model=...)``
  as the docs write it talks to 127.0.0.1, never to OpenAI; the server answers every
  request with a short text;
- a throw-away usage database and spool directory (``AUTOGEN_RELIABILITY_DB_URL``,
  ``AUTOGEN_RELIABILITY_SPOOL_DIR``).

A block that raises fails its page's test with the file and line of the block (and
a traceback whose lines are the page's); so does any warning but a ResourceWarning
(see `test_page_runs`).

**Docstrings.** Every ``>>>`` example in ``autogen_reliability/**/*.py`` runs with the
standard library's doctest (``ELLIPSIS`` on), one test per docstring, in the module's
namespace plus `example_namespace`: the same fake OpenAI environment, a temporary
working directory and usage database, and a few names an example may take as given
(``inner``, ``events``, ``store``). An example that cannot run is marked
``# doctest: +SKIP`` and its docstring says why, in words containing "not run".
"""

from __future__ import annotations

import ast
import asyncio
import copy
import doctest
import functools
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from autogen_ext.models.openai import OpenAIChatCompletionClient

import autogen_reliability
from autogen_reliability import _config
from autogen_reliability._config import ENV_DB_URL, ENV_SPOOL_DIR, AccountingSettings
from autogen_reliability.accounting import UsageEvent
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FAKE_ANSWER = "Done: a short answer from the local server."

# ---- pages

# A fence, indented too (in a list item); after backticks, no backtick may follow (that is inline code).
_FENCE = re.compile(r"^\s*(?:(?P<backticks>`{3,})\s*(?P<info>[^`\s]*)[^`]*|(?P<tildes>~{3,})\s*(?P<tinfo>\S*).*)$")
_MARK = re.compile(r"^<!--\s*(?P<kind>[a-z ]+?)\s*:(?P<detail>.*?)-->\s*$")
# Info strings that are Python but would escape the rule below if allowed: write ```python.
_OTHER_PYTHON = {"py", "python3", "py3", "pycon", "pytb", "ipython", "ipython3"}


@dataclass(frozen=True)
class Block:
    """A fenced block of a page and the marker comment right before it, if any."""

    page: Path
    line: int  # the line of the opening fence, 1-based
    info: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.info == "python"

    def mark(self) -> tuple[str, str] | None:
        """``(kind, detail)`` of the marker, e.g. ``("not run", "needs a key")``; None without one."""
        if self.marker is None:
            return None
        found = _MARK.match(self.marker)
        return (found["kind"], found["detail"].strip()) if found else ("?", self.marker)

    @property
    def skip_reason(self) -> str | None:
        mark = self.mark()
        return mark[1] if mark is not None and mark[0] == "not run" else None

    @property
    def file_name(self) -> str | None:
        mark = self.mark()
        return mark[1] if mark is not None and mark[0] == "file" else None


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened by ``fence``: as many fence characters or more, and nothing else."""
    stripped = line.strip()
    return stripped.startswith(fence) and not stripped.strip(fence[0])


def page_blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["backticks"] or opening["tildes"]
        info = opening["info"] if opening["backticks"] else opening["tinfo"]
        end = index + 1
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        before = lines[index - 1].strip() if index > 0 else ""
        marker = before if before.startswith("<!--") else None
        code = textwrap.dedent("\n".join(lines[index + 1 : end]) + "\n")
        blocks.append(Block(page, index + 1, info.lower(), code, marker))
        index = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in page_blocks(page)]
PYTHON_BLOCKS = [block for block in BLOCKS if block.is_python]
PAGES_WITH_CODE = sorted({block.page for block in PYTHON_BLOCKS}, key=PAGES.index)


def marker_problems(blocks: list[Block]) -> list[str]:
    """What is wrong with the blocks' languages and markers: a block must not slip past the rule unseen."""
    problems = []
    for block in blocks:
        if block.info in _OTHER_PYTHON:
            problems.append(f"{block.where}: write ```python (not ```{block.info}), so that this test runs it")
        mark = block.mark()
        if mark is None:
            continue
        kind, detail = mark
        if kind == "not run" and not block.is_python:
            problems.append(f"{block.where}: only ```python blocks run; this one needs no 'not run' marker")
        elif kind == "file" and block.is_python:
            problems.append(f"{block.where}: a 'file:' marker is for data (TOML, JSON), not Python")
        elif kind not in {"not run", "file"} and block.is_python:
            problems.append(f"{block.where}: unknown marker {block.marker!r}; use <!-- not run: REASON -->")
        elif kind in {"not run", "file"} and not detail:
            problems.append(f"{block.where}: {block.marker!r} must say {'why' if kind == 'not run' else 'which file'}")
    return problems


def test_every_python_block_runs_or_says_why() -> None:
    assert len(PYTHON_BLOCKS) >= 10, "fewer ```python blocks than the docs have: is the page list right?"
    assert not marker_problems(BLOCKS), "\n".join(marker_problems(BLOCKS))


def test_a_marker_without_a_reason_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not run: -->\n```python\nx = 1\n```\n\n"
        "<!-- skip this -->\n```python\nx = 2\n```\n\n"
        "```py\nx = 3\n```\n\n"
        "<!-- not run: needs an OpenAI key -->\n```python\nx = 4\n```\n",
        encoding="utf-8",
    )
    problems = marker_problems(page_blocks(page))
    assert [problem.split(": ", 1)[0] for problem in problems] == [f"{page}:2", f"{page}:7", f"{page}:11"]
    assert "must say why" in problems[0]


def test_a_page_runs_in_order_and_a_failing_block_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "page.md"
    text = (
        "<!-- file: greeting.txt -->\n```text\nhello\n```\n\n"  # lines 1-4
        "```python\nfrom pathlib import Path\ngreeting = Path('greeting.txt').read_text().strip()\n```\n\n"  # 6-9
        "```python\nasync def twice(text: str) -> str:\n    return text * 2\n```\n\n"  # 11-14
        "```python\nassert await twice(greeting) == 'hellohello'\n```\n\n"  # 16-18
        "<!-- not run: it would end the page here -->\n```python\nraise SystemExit(3)\n```\n\n"  # 20-23
        "```python\nfine = True\nraise ValueError(greeting)\n```\n"  # 25-28
    )
    page.write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert run_page(page) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"{page}:25: this block of the page failed:")
    assert f'File "{page}", line 27' in error
    assert error.rstrip().endswith("ValueError: hello")


@pytest.fixture(scope="module")
def docs_server() -> Iterator[FakeOpenAIServer]:
    """The local OpenAI-wire server every page's clients talk to; it answers everything with a short text."""
    with FakeOpenAIServer(model="gpt-4o-mini", default=FakeReply.text(FAKE_ANSWER)) as server:
        yield server


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=[str(page.relative_to(ROOT)) for page in PAGES_WITH_CODE])
def test_page_runs(page: Path, tmp_path: Path, docs_server: FakeOpenAIServer) -> None:
    assert_page_runs(page, tmp_path, docs_server)


def test_getting_started_runs_again_in_the_same_directory(tmp_path: Path, docs_server: FakeOpenAIServer) -> None:
    # A reader runs the page a second time where its usage.db already holds the first run's rows.
    for _ in range(2):
        assert_page_runs(ROOT / "docs" / "getting-started.md", tmp_path, docs_server)


def assert_page_runs(page: Path, cwd: Path, docs_server: FakeOpenAIServer) -> None:
    """The page's blocks run in a process of their own in ``cwd``, without an error or a warning."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENAI_")}
    env.update(
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=docs_server.base_url,
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        **{ENV_DB_URL: f"sqlite:///{cwd / 'ledger.db'}", ENV_SPOOL_DIR: str(cwd / "spool")},
    )
    # Every warning shows (and fails the test) but ResourceWarning: like most docs, the blocks never
    # close their clients, whose sockets are then still open when the interpreter exits.
    command = [sys.executable, "-W", "default", "-W", "ignore::ResourceWarning", __file__, str(page)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def run_page(page: Path) -> int:
    """Run the page's blocks in order in one namespace; 1 (and the block's place on stderr) if one fails."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with asyncio.Runner() as runner:
        for block in page_blocks(page):
            if block.file_name is not None:
                Path(block.file_name).write_text(block.code, encoding="utf-8")
            if not block.is_python or block.skip_reason is not None:
                continue
            # Padded to its place in the page, so a traceback names the page's own lines.
            source = "\n" * block.line + block.code
            try:
                code = compile(source, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
                if code.co_flags & inspect.CO_COROUTINE:  # a top-level await
                    runner.run(eval(code, namespace))
                else:
                    exec(code, namespace)
            except BaseException as error:
                print(f"{block.where}: this block of the page failed:", file=sys.stderr)
                frames = error.__traceback__  # from the page's own frame on, without this runner's
                while frames is not None and frames.tb_frame.f_code.co_filename != str(page):
                    frames = frames.tb_next
                traceback.print_exception(type(error), error, frames or error.__traceback__)
                return 1
    return 0


# ---- docstrings

_FINDER = doctest.DocTestFinder(exclude_empty=True)


def package_modules() -> list[ModuleType]:
    names = [info.name for info in pkgutil.walk_packages(autogen_reliability.__path__, "autogen_reliability.")]
    # __main__ runs the command line when imported.
    return [autogen_reliability, *(importlib.import_module(name) for name in names if not name.endswith("__main__"))]


def docstring_examples() -> list[doctest.DocTest]:
    found: dict[str, doctest.DocTest] = {}
    for module in package_modules():
        for test in _FINDER.find(module):
            if test.examples:
                found[test.name] = test
    return sorted(found.values(), key=lambda test: (test.filename or "", test.lineno or 0))


EXAMPLES = docstring_examples()


def _skipped(test: doctest.DocTest) -> int:
    return sum(1 for example in test.examples if example.options.get(doctest.SKIP))


def test_docstring_examples_are_found() -> None:
    assert sum(len(test.examples) for test in EXAMPLES) >= 80
    # The private modules behind each package's __init__ are searched, not only what __init__ exports.
    assert any(test.name.startswith("autogen_reliability.retry._policy.") for test in EXAMPLES)


def test_skipped_examples_say_why() -> None:
    silent = [test.name for test in EXAMPLES if _skipped(test) and "not run" not in (test.docstring or "")]
    assert not silent, f"a +SKIP example needs the reason next to it, in words containing 'not run': {silent}"


@pytest.fixture
def example_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """What a docstring example runs with besides its module's names.

    The working directory is a temporary one (examples write ``usage.db``, ``prices.toml``);
    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` point at a FakeOpenAIServer; the process's
    usage defaults (what ``configure()`` changes) are a throw-away database, put back
    afterwards. The names given:

    - ``inner``: an ``OpenAIChatCompletionClient`` for ``gpt-4o-mini`` on that server;
    - ``events``: three ``UsageEvent`` of project ``acme-support`` on 1 May 2025: a call
      whose first attempt hit a rate limit and whose retry succeeded, and a call that
      succeeded at once;
    - ``store``: a ``UsageStore`` (SQLite in memory) holding those events.
    """
    monkeypatch.chdir(tmp_path)
    with FakeOpenAIServer(model="gpt-4o-mini", default=FakeReply.text(FAKE_ANSWER)) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        # The process default recorder is swapped, not reconfigured: configure() would close
        # the one the rest of the suite records to.
        ledger = AccountingSettings(f"sqlite:///{tmp_path / 'ledger.db'}", spool_dir=tmp_path / "spool")
        monkeypatch.setattr(_config, "_settings", ledger)
        monkeypatch.setattr(_config, "_recorder", None)
        retried, at_once = uuid.UUID(int=1), uuid.UUID(int=2)
        event = functools.partial(
            UsageEvent, latency_ms=420.0, project="acme-support", provider="openai", model="gpt-4o-mini"
        )
        events = [
            event(
                retried,
                1,
                datetime(2025, 5, 1, 9, 0, tzinfo=UTC),
                outcome="error",
                error_kind="rate_limit",
                http_status=429,
            ),
            event(retried, 2, datetime(2025, 5, 1, 9, 0, 1, tzinfo=UTC), prompt_tokens=120, completion_tokens=30),
            event(at_once, 1, datetime(2025, 5, 1, 9, 5, tzinfo=UTC), prompt_tokens=80, completion_tokens=25),
        ]
        store = UsageStore("sqlite://")
        store.write(events)
        inner = OpenAIChatCompletionClient(model="gpt-4o-mini")
        try:
            yield {"inner": inner, "events": events, "store": store}
        finally:
            store.close()
            recorder = _config._recorder
            if recorder is not None:  # made by an example: stop its thread before the next test
                recorder.close()


@pytest.mark.parametrize("example", EXAMPLES, ids=[test.name for test in EXAMPLES])
def test_docstring_example(example: doctest.DocTest, example_namespace: dict[str, Any]) -> None:
    test = copy.copy(example)
    test.globs = {**example.globs, **example_namespace}
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)


if __name__ == "__main__":
    sys.exit(run_page(Path(sys.argv[1])))
