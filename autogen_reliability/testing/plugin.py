"""The pytest plugin of autogen-reliability, registered through the ``pytest11`` entry point.

pytest loads it in every run where the package is installed, so loading it
must cost next to nothing: the hooks and fixtures live in the modules below,
which import AutoGen, the SDKs and SQLAlchemy only when a fixture is used.

- ``_pytest_fixtures``: the fixtures (``fake_openai_server``, ``scripted_client``,
  ``usage_store``, ``reliable_client``, ``usage``) and the
  ``autogen_reliability`` marker;
- ``_pytest_network``: ``--block-llm-network``, and the ``live_llm`` marker;
- ``_pytest_cassettes``: ``--llm-record`` and the replay of cassettes.

The fixtures' types, for the annotations of a test (``def test_team(usage: RecordedUsage)``),
are importable from here: `RecordedUsage` (``usage``), `ReliableClientFactory`
(``reliable_client``), `ScriptedClientFactory` (``scripted_client``), and `MarkerOptions`
(the marker's options).
"""

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    from ._pytest_fixtures import MarkerOptions, RecordedUsage, ReliableClientFactory, ScriptedClientFactory

pytest_plugins = (
    "autogen_reliability.testing._pytest_fixtures",
    "autogen_reliability.testing._pytest_network",
    "autogen_reliability.testing._pytest_cassettes",
)

__all__ = ["MarkerOptions", "RecordedUsage", "ReliableClientFactory", "ScriptedClientFactory"]

# Loaded on first use, not here: pytest imports the modules of pytest_plugins itself, after marking them for
# its assertion rewriting, and warns about one that was imported before.
_HOMES = dict.fromkeys(__all__, "autogen_reliability.testing._pytest_fixtures")

__getattr__, __dir__ = _lazy.attach(__name__, _HOMES, globals(), __all__)
