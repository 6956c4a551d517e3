"""What importing the library and loading its pytest plugin cost, in fresh interpreters.

pytest loads ``autogen_reliability.testing.plugin`` in every run of every
project where the package is installed (the ``pytest11`` entry point), so the
plugin must cost next to nothing until a test uses one of its fixtures. The
package's public names load on first use (``autogen_reliability/_lazy.py``).

Each case is a fresh ``python`` process, timed from outside (wall clock,
start-up of the interpreter included); rounds are interleaved and the best
and median rounds kept. The cases:

* ``python -c pass``: the interpreter alone, the floor under every other line;
* AutoGen + openai: ``autogen_agentchat`` and ``autogen_ext.models.openai``,
  what a user of AutoGen's OpenAI client pays already;
* ``import autogen_reliability`` and the plugin module alone;
* ``reliable`` (what an application imports first), and the whole public API
  (``from autogen_reliability import *``), next to AutoGen + openai: what the
  library adds to an application that uses it (issue #14's goal: <= 0.1 s);
* ``pytest --collect-only`` in an empty directory, with the plugin (loaded
  through its entry point) and without it (``-p no:autogen_reliability``).

Machines here are shared and noisy: read the differences within one run. Run it
with bytecode caching on, as users have it (not under ``PYTHONDONTWRITEBYTECODE``):
otherwise every run compiles the package's modules again.

Run: ``python -m benchmarks startup`` (``--quick`` for a smoke run,
``--json PATH`` to also write the numbers as JSON). To compare with another
checkout, run it with that checkout first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .timing import at_least_one, bytecode_env

AUTOGEN = "import autogen_agentchat, autogen_ext.models.openai"
PYTEST = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]

CASES: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "AutoGen + openai": [sys.executable, "-c", AUTOGEN],
    "import autogen_reliability": [sys.executable, "-c", "import autogen_reliability"],
    "import autogen_reliability.testing.plugin": [
        sys.executable,
        "-c",
        "import autogen_reliability.testing.plugin",
    ],
    "AutoGen + openai + reliable": [sys.executable, "-c", f"{AUTOGEN}; from autogen_reliability import reliable"],
    "AutoGen + openai + the whole public API": [
        sys.executable,
        "-c",
        f"{AUTOGEN}; from autogen_reliability import *",
    ],
    "pytest --co, empty dir, without the plugin": [*PYTEST, "-p", "no:autogen_reliability"],
    "pytest --co, empty dir, with the plugin": PYTEST,
}


def _seconds(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    # pytest exits 5 when it collects nothing: expected in an empty directory.
    done = subprocess.run(command, cwd=cwd, capture_output=True, check=False, env=bytecode_env())
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 5):
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode()}")
    return elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Times every case; prints the table and returns the numbers (seconds)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks startup")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (CI)")
    parser.add_argument("--rounds", type=at_least_one, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    options = parser.parse_args(argv)
    rounds = 1 if options.quick else options.rounds

    timings: dict[str, list[float]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as empty:
        for _ in range(rounds):
            for name, command in CASES.items():
                timings[name].append(_seconds(command, empty))

    results = {
        name: {"best_s": min(values), "median_s": statistics.median(values), "rounds": len(values)}
        for name, values in timings.items()
    }
    width = max(map(len, results))
    print(f"{'case':<{width}}  {'best':>8}  {'median':>8}")
    for name, numbers in results.items():
        print(f"{name:<{width}}  {numbers['best_s']:>7.3f}s  {numbers['median_s']:>7.3f}s")
    added = {
        "reliable over AutoGen + openai": "AutoGen + openai + reliable",
        "the whole API over AutoGen + openai": "AutoGen + openai + the whole public API",
        "the plugin in pytest's start-up": "pytest --co, empty dir, with the plugin",
    }
    bases = {
        "reliable over AutoGen + openai": "AutoGen + openai",
        "the whole API over AutoGen + openai": "AutoGen + openai",
        "the plugin in pytest's start-up": "pytest --co, empty dir, without the plugin",
    }
    print()
    for label, case in added.items():
        best = results[case]["best_s"] - results[bases[label]]["best_s"]
        median = results[case]["median_s"] - results[bases[label]]["median_s"]
        results[label] = {"best_s": best, "median_s": median}
        print(f"{label}: {best * 1000:+.0f} ms (best), {median * 1000:+.0f} ms (median)")
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
