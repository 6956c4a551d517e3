"""``python -m autogen_reliability``: the ``autogen-reliability`` command."""

from ._cli import main

raise SystemExit(main())
