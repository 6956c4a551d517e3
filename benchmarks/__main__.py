"""Runs the benchmarks: ``python -m benchmarks`` runs every ``benchmarks/bench_*.py`` in turn (or ``make benchmark``).

``python -m benchmarks NAME [OPTIONS]`` runs ``bench_NAME.py`` alone, with the
options that follow (e.g. ``python -m benchmarks budget --quick``). Every
benchmark takes ``--quick``: tiny sizes, a smoke run whose numbers mean nothing
(``tests/test_benchmarks.py`` runs each so, so that none can rot);
``python -m benchmarks --quick`` smoke-runs them all.

The names issue #14 gives (docs/performance.md shows what each measures):
``e2e``, ``overhead``, ``recorder``, ``report``, ``memory``, ``import``.
"""

from __future__ import annotations

import pkgutil
import runpy
import sys
from pathlib import Path

ALIASES = {"overhead": "wrapper_overhead"}
"""Names a benchmark is also known by (the file keeps the name other benchmarks import it under)."""

names = sorted(module.name for module in pkgutil.iter_modules([str(Path(__file__).parent)]))
benchmarks = [name for name in names if name.startswith("bench_")]
if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
    chosen = f"bench_{ALIASES.get(sys.argv[1], sys.argv[1])}"
    if chosen not in benchmarks:
        known = ", ".join(sorted([name.removeprefix("bench_") for name in benchmarks] + list(ALIASES)))
        raise SystemExit(f"no benchmark {sys.argv[1]!r}; known: {known}")
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    runpy.run_module(f"benchmarks.{chosen}", run_name="__main__")
else:
    for name in benchmarks:
        print(f"== {name}")
        runpy.run_module(f"benchmarks.{name}", run_name="__main__")
        print()
