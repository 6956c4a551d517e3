"""The public API as a user's type checker sees it: ``mypy --strict`` on a user's code (tests/typed_usage.py).

The package is checked strictly on its own (``make lint``), but that says nothing about what its users get:
a fixture annotated as a broader type than it gives, an overload that does not narrow or an ``Any`` that
leaks out are errors only in the code that uses them. The check runs as a user's would, with no
configuration of ours, against the package imported from this checkout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_users_code_passes_mypy_strict(tmp_path: Path) -> None:
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")  # a user's own configuration, not the project's
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--config-file",
        str(config),
        "--cache-dir",
        str(tmp_path / "mypy-cache"),
        "--no-error-summary",
        str(ROOT / "tests" / "typed_usage.py"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)

    assert done.returncode == 0, done.stdout + done.stderr
