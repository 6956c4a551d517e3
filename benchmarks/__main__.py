"""Runs every ``benchmarks/bench_*.py`` in turn: ``python -m benchmarks`` (or ``make benchmark``)."""

from __future__ import annotations

import pkgutil
import runpy
from pathlib import Path

for module in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
    if module.name.startswith("bench_"):
        print(f"== {module.name}")
        runpy.run_module(f"benchmarks.{module.name}", run_name="__main__")
        print()
