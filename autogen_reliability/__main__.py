"""``python -m autogen_reliability``, and the ``autogen-reliability`` command's entry point (:func:`run`)."""

import sys


def run() -> int:
    """Runs the command; Ctrl-C while its modules load is one line and 130, as it is once it runs.

    The command's module loads pydantic and AutoGen before its ``main`` can take Ctrl-C: a second or two in which
    it was a traceback of the imports.
    """
    try:
        from ._cli import main  # noqa: PLC0415
    except KeyboardInterrupt:
        print("autogen-reliability: error: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
