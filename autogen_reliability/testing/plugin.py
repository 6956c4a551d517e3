"""The pytest plugin of autogen-reliability, registered through the ``pytest11`` entry point.

pytest loads it in every run where the package is installed, so loading it
must cost next to nothing: the hooks and fixtures live in the modules below,
which import AutoGen, the SDKs and SQLAlchemy only when a fixture is used.

- ``_pytest_fixtures``: the fixtures (``fake_openai_server``, ``scripted_client``,
  ``usage_store``, ``reliable_client``, ``usage``) and the
  ``autogen_reliability`` marker;
- ``_pytest_network``: ``--block-llm-network``, and the ``live_llm`` marker;
- ``_pytest_cassettes``: ``--llm-record`` and the replay of cassettes.
"""

pytest_plugins = (
    "autogen_reliability.testing._pytest_fixtures",
    "autogen_reliability.testing._pytest_network",
    "autogen_reliability.testing._pytest_cassettes",
)
