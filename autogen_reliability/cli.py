"""The ``autogen-reliability`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line on stderr and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autogen-reliability",
        description="Reliability, validation and cost accounting for AutoGen agents.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="run a two-agent team against the built-in local OpenAI-compatible server",
        description="Run a two-agent AutoGen team against a local OpenAI-compatible server "
        "(no API key, no network) and print each agent's token usage.",
    )
    demo.add_argument("--stream", action="store_true", help="let the agents stream their replies")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo  # noqa: PLC0415  # the demo pulls in the test server: load it on demand

        # The demo prints its retries itself; the library's warnings would say them twice.
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
        demo(sys.stdout, stream=args.stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
