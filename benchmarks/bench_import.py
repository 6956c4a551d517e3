"""What ``import autogen_reliability`` costs on top of what an AutoGen user imports already (goal: at most 0.1 s).

Each measurement is a fresh interpreter (``sys.executable``, this environment,
with the bytecode cache on as after ``pip install``), so nothing is cached in the
process; the operating system's file cache and the ``.pyc`` files are warm after
the first run, as they are for an application that starts again:

- **baseline**: ``import autogen_agentchat.agents, autogen_ext.models.openai, openai``,
  what a user of AutoGen's OpenAI client pays anyway;
- **with the library**: the same, then ``from autogen_reliability import
  ReliableChatCompletionClient, reliable`` (the package's names load on first
  use, so a bare ``import autogen_reliability`` would measure almost nothing);
- **first wrapper**: the same, then one ``reliable(OpenAIChatCompletionClient(...))``
  recording to a SQLite file that exists already, as when a service starts
  again: what loads on first use (SQLAlchemy, the store's modules, genai-prices'
  data), paid once, when the first wrapper is made;
- **first wrapper, new ledger**: the same with a new file each time, which the
  recorder's thread creates, loading alembic and running every migration (the
  interpreter waits for it at exit): what the very first start pays;
- **library alone**: the import of the names in a fresh interpreter.

The added cost is measured three ways: as the difference of the medians of the
first two (wall clock of the whole interpreter, runs interleaved), and of their
minimums (on a shared machine a neighbour's load only adds time, and it can
move by half a second within minutes), and with
``python -X importtime``, as the cumulative time of every import made after
the baseline's (importtime's own bookkeeping makes every import somewhat
slower). The modules the library brings in beyond the baseline are listed,
heaviest first, with their cumulative import time.

Run: ``python -m benchmarks import`` (``--runs N``, ``--quick`` for a smoke
run, ``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .timing import at_least_one, bytecode_env

GOAL_S = 0.1
QUICK = ("baseline", "with the library")
"""What ``--quick`` times: one run each of a fresh interpreter takes seconds."""
BASELINE = "import autogen_agentchat.agents, autogen_ext.models.openai, openai"
LIBRARY = "from autogen_reliability import ReliableChatCompletionClient, reliable"
WRAP = "reliable(autogen_ext.models.openai.OpenAIChatCompletionClient(model='gpt-4o-mini', api_key='sk-none'))"
NEW_LEDGER = (
    "import tempfile, os; "
    "os.environ['AUTOGEN_RELIABILITY_DB_URL'] = 'sqlite:///' + os.path.join(tempfile.mkdtemp(), 'usage.db')"
)


def scripts(ledger: Path) -> dict[str, str]:
    """The scripts timed; ``ledger`` is the SQLite file the first wrapper records to (made by the warm-up run)."""
    existing = f"import os; os.environ['AUTOGEN_RELIABILITY_DB_URL'] = {f'sqlite:///{ledger}'!r}"
    return {
        "baseline": BASELINE,
        "with the library": f"{BASELINE}; {LIBRARY}",
        "first wrapper": f"{BASELINE}; {LIBRARY}; {existing}; {WRAP}",
        "first wrapper, new ledger": f"{BASELINE}; {LIBRARY}; {NEW_LEDGER}; {WRAP}",
        "library alone": LIBRARY,
    }


def seconds_to_run(script: str) -> float:
    """Wall seconds of a fresh interpreter that runs ``script`` (startup included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, env=bytecode_env())
    return time.perf_counter() - start


def importtime(script: str) -> list[tuple[str, int, int]]:
    """``python -X importtime`` of ``script``: (indented module, self us, cumulative us) per import, in report order."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", script],
        check=True,
        capture_output=True,
        text=True,
        env=bytecode_env(),
    )
    found = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        if self_us.strip().isdigit():  # the name keeps its indentation: two spaces per level of nesting
            found.append((name[1:].rstrip(), int(self_us), int(cumulative_us)))
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks import", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=at_least_one, default=9, help="fresh interpreters per script (median taken)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one run each")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    options = parser.parse_args(argv)
    runs = 1 if options.quick else options.runs
    with tempfile.TemporaryDirectory(prefix="bench-import-") as directory:
        every = scripts(Path(directory) / "usage.db")
        if not options.quick:
            for script in every.values():  # the file cache warm, .pyc files written, the ledger made
                seconds_to_run(script)
        timed = {name: script for name, script in every.items() if not (options.quick and name not in QUICK)}
        timings: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(runs):
            for name, script in timed.items():  # interleaved: a neighbour's load falls on all alike
                timings[name].append(seconds_to_run(script))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    added_wall = medians["with the library"] - medians["baseline"]
    # The least disturbed run of each: a neighbour's load only ever adds time, so on a shared machine
    # the difference of the minimums shows what the medians' difference hides when the load moves.
    added_least = min(timings["with the library"]) - min(timings["baseline"])
    first_wrapper = {
        name: medians[name] - medians["with the library"] for name in medians if name.startswith("first wrapper")
    }

    baseline_modules = {name.strip() for name, _, _ in importtime(BASELINE)}
    report = importtime(every["with the library"])
    # A top-level import (not indented) counts its nested ones: their sum is what the library added.
    added_importtime = (
        sum(cumulative for name, _, cumulative in report if name == name.lstrip() and name not in baseline_modules)
        / 1e6
    )
    # Imported for the library only: not in the baseline's report. Nested names are indented by importtime.
    extra = [(name.strip(), cumulative) for name, _, cumulative in report if name.strip() not in baseline_modules]
    top_level: dict[str, int] = {}
    for name, cumulative in extra:
        root = name.split(".")[0]
        if root != "autogen_reliability" and cumulative > top_level.get(root, 0):
            top_level[root] = cumulative
    heaviest = sorted(top_level.items(), key=lambda item: -item[1])[:12]

    print(f"Fresh interpreters, median of {runs} (Python {platform.python_version()}, {os.cpu_count()} cores):")
    for name, script in timed.items():
        print(f"  {name:<26} {medians[name]:6.3f} s   ({script})")
    met = added_wall <= GOAL_S
    print(
        f"  added by the library: {added_wall:.3f} s (difference of medians; {added_least:.3f} s of minimums); "
        f"{added_importtime:.3f} s (-X importtime, cumulative); goal <= {GOAL_S} s: {'met' if met else 'NOT MET'}"
    )
    for name, seconds in first_wrapper.items():
        print(f"  {name}: {seconds:.3f} s more than the import (what loads on first use, once)")
    print(f"  {len(extra)} modules imported beyond the baseline; the heaviest packages among them (cumulative):")
    for root, cumulative in heaviest:
        print(f"    {root:<28} {cumulative / 1000:7.1f} ms")
    results = {
        "benchmark": "import",
        "runs": runs,
        "python": platform.python_version(),
        "median_s": medians,
        "added_s": added_wall,
        "added_least_s": added_least,
        "added_importtime_s": added_importtime,
        "first_wrapper_s": first_wrapper,
        "goal_s": GOAL_S,
        "met": met,
        "extra_modules": len(extra),
        "heaviest_ms": {root: cumulative / 1000 for root, cumulative in heaviest},
    }
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
