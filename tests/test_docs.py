"""The code blocks of README.md and docs/ marked runnable run as written, so the docs cannot lie.

A block is marked by an HTML comment on the line before its fence (invisible once rendered):

    <!-- runnable: tests/test_docs.py runs this block -->
    ```python
    ...
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autogen_reliability._config import ENV_DB_URL, ENV_SPOOL_DIR

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_RUNNABLE = re.compile(r"^<!-- runnable[^\n]*-->\n```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def runnable_blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(_RUNNABLE.finditer(text), start=1):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}#{number}", match.group(1)))
    return found


BLOCKS = runnable_blocks()


def test_the_docs_have_runnable_blocks() -> None:
    assert any(name.startswith("docs/testing.md") for name, _ in BLOCKS)


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[name for name, _ in BLOCKS])
def test_block_runs(name: str, code: str, tmp_path: Path) -> None:
    env = {**os.environ, ENV_DB_URL: f"sqlite:///{tmp_path / 'usage.db'}", ENV_SPOOL_DIR: str(tmp_path / "spool")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, f"{name}:\n{done.stderr}"
    assert "Warning" not in done.stderr, done.stderr
