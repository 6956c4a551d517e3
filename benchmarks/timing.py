"""The measuring loop the benchmarks share, and how a smoke run is asked for."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable


def quick_run() -> bool:
    """Whether this is a smoke run (``--quick`` on the command line): tiny sizes, so CI can run every benchmark.

    Benchmarks without an argument parser read their sizes from this when the module loads;
    the numbers of a smoke run mean nothing, only that the benchmark still runs.
    """
    return "--quick" in sys.argv[1:]


def at_least_one(text: str) -> int:
    """An argparse ``type`` for a size (rounds, calls, rows): a whole number, 1 or more.

    Refused otherwise, in argparse's one line: 0 would be taken for "not given" (the full size) by
    ``options.x or default``, and a negative one runs nothing and fails later with a traceback.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def more_than_zero(text: str) -> float:
    """An argparse ``type`` for a duration in seconds that must be more than 0 (``--switch-interval``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def refuse_other_arguments(name: str, *flags: str, requests: bool = False) -> None:
    """For a benchmark that reads ``--quick`` from ``sys.argv`` (:func:`quick_run`): refuse any other argument.

    Called in the benchmark's ``if __name__ == "__main__":`` block (other benchmarks import its module).
    ``flags`` are its own switches (``--per-attempt``); ``requests``: it takes a count as well. Anything
    else, ``--json PATH`` (which these print instead of writing) or a mistyped ``--quik``, which would
    run the full size, ends the run at once with argparse's one-line error, exit status 2.
    """
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (CI)")
    for flag in flags:
        parser.add_argument(flag, action="store_true")
    if requests:
        parser.add_argument("requests", nargs="?", type=at_least_one, help="how many requests")
    parser.parse_args(sys.argv[1:])


def bytecode_env() -> dict[str, str]:
    """This environment, with Python's bytecode cache on, for timing fresh interpreters.

    ``pip install`` compiles a package's ``.pyc`` files, so a user's imports read
    bytecode; an environment with ``PYTHONDONTWRITEBYTECODE`` set (a checkout, a
    container) would compile the package's source on every start and time that instead.
    """
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def best_per_call(call: Callable[[], object], calls: int, rounds: int) -> float:
    """Seconds per call in the fastest of ``rounds`` rounds of ``calls`` calls.

    The best round estimates the cost; slower rounds measure the neighbours' load
    (these machines are shared), so compare ratios within one run.
    """
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best
