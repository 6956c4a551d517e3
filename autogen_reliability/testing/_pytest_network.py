"""Part of the pytest plugin (see ``autogen_reliability.testing.plugin``): the network guard and ``live_llm``.

Options and ini settings:
    * ``--block-llm-network`` (ini ``block_llm_network = true``; ``--no-block-llm-network``
      overrides the ini file): every connection from a test to a host other than
      loopback fails the test at once, naming the host (see ``_netguard``).
    * ``--allow-llm-host=HOST`` (repeatable, or comma-separated; ini ``allow_llm_hosts``,
      one per line): hosts that may be reached all the same, by name, ``*.`` pattern
      or IP address.

Markers:
    * ``@pytest.mark.allow_llm_host("db.internal", ...)``: more hosts for one test.
    * ``@pytest.mark.live_llm(provider="openai", env=None)``: a test that talks to a
      real provider. It is skipped unless the provider's API key is set (the skip
      reason names the variable: ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``,
      ``AZURE_OPENAI_API_KEY`` for ``"azure"``, else ``<PROVIDER>_API_KEY``;
      ``env=`` names another), and skipped while the guard is on: blocking the
      network is the promise that no test spends money, so a key that happens to
      be in the shell does not break it; ``--no-block-llm-network`` runs them.

Loading this module costs nothing: the guard (``_netguard``: ``socket``,
``ipaddress``) is imported in ``pytest_configure`` only when it is switched on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    from ._netguard import NetworkGuard

__all__ = [
    "allow_hosts_for_test",
    "api_key_variable",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_protocol",
    "pytest_runtest_setup",
]

_GUARD: Final = pytest.StashKey["NetworkGuard"]()
_SWITCHED_ON_BY: Final = pytest.StashKey[str]()

# Providers whose key is not <PROVIDER>_API_KEY (the name their SDK or AutoGen reads).
_KEY_VARIABLES: Final = {"azure": "AZURE_OPENAI_API_KEY", "azure_openai": "AZURE_OPENAI_API_KEY"}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--block-llm-network``, ``--no-block-llm-network``, ``--allow-llm-host`` and their ini settings."""
    group = parser.getgroup("autogen-reliability", "autogen-reliability: fakes, network guard and cassettes")
    group.addoption(
        "--block-llm-network",
        action="store_true",
        dest="block_llm_network",
        default=None,
        help="Fail any test that connects to a host other than loopback (no real LLM provider, no DNS), "
        "and skip live_llm tests. Ini: block_llm_network = true.",
    )
    group.addoption(
        "--no-block-llm-network",
        action="store_false",
        dest="block_llm_network",
        help="Let tests reach the network even when the ini file sets block_llm_network.",
    )
    group.addoption(
        "--allow-llm-host",
        action="append",
        default=[],
        dest="allow_llm_hosts",
        metavar="HOST",
        help="A host that tests may reach despite --block-llm-network: a name, *.pattern or IP "
        "(repeatable, or comma-separated).",
    )
    parser.addini(
        "block_llm_network", type="bool", default=False, help="Block the network in tests, as --block-llm-network."
    )
    parser.addini(
        "allow_llm_hosts",
        type="linelist",
        default=[],
        help="Hosts that tests may reach despite block_llm_network (one per line, or comma-separated).",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, and install the guard when the run blocks the network."""
    config.addinivalue_line(
        "markers",
        "live_llm(provider='openai', env=None): the test talks to a real provider; skipped unless its API key "
        "(OPENAI_API_KEY, or env=...) is set, and while --block-llm-network is on.",
    )
    config.addinivalue_line(
        "markers",
        "allow_llm_host(*hosts): hosts this test may reach despite --block-llm-network (names, *.patterns, IPs).",
    )
    option: bool | None = config.getoption("block_llm_network", None)
    if option is None:
        enabled, switched_on_by = bool(config.getini("block_llm_network")), "block_llm_network (ini)"
    else:
        enabled, switched_on_by = option, "--block-llm-network"
    if not enabled:
        return
    from ._netguard import NetworkGuard  # noqa: PLC0415 - socket patching only when asked for

    allowed = _split([*config.getoption("allow_llm_hosts", []), *config.getini("allow_llm_hosts")])
    guard: NetworkGuard = NetworkGuard(allowed, switched_on_by=switched_on_by)
    guard.install()
    config.add_cleanup(guard.uninstall)
    config.stash[_GUARD] = guard
    config.stash[_SWITCHED_ON_BY] = switched_on_by


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Allow the test's ``allow_llm_host`` hosts from its setup to its teardown."""
    guard = item.config.stash.get(_GUARD, None)
    if guard is None:
        return (yield)
    guard.allow_for_test(
        _split(host for marker in item.iter_markers("allow_llm_host") if _names_hosts(marker) for host in marker.args)
    )
    try:
        return (yield)
    finally:
        guard.end_test()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark a ``live_llm`` test skipped without its provider's key, or while the network is blocked.

    A ``skip`` marker (rather than ``pytest.skip()`` in a hook) so that ``-rs`` reports the test's own location.
    """
    switched_on_by = config.stash.get(_SWITCHED_ON_BY, None)
    for item in items:
        marker = item.get_closest_marker("live_llm")
        arguments = _live_llm_arguments(marker) if marker is not None else None
        if arguments is None:
            continue  # not live, or its arguments are wrong: pytest_runtest_setup fails it
        provider, variable = arguments
        if not os.environ.get(variable):
            reason = f"live_llm: {variable} is not set (the {provider} API key this test needs)"
        elif switched_on_by is not None:
            reason = (
                f"live_llm: the network is blocked by {switched_on_by}; "
                f"run with --no-block-llm-network to reach {provider}"
            )
        else:
            continue
        item.add_marker(pytest.mark.skip(reason=reason))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test whose ``live_llm`` or ``allow_llm_host`` marker has wrong arguments, with what they should be.

    Whether or not the guard is on: a marker that allows nothing would otherwise be found out
    only the day the guard is switched on, by a failure whose hint shows the form written.
    """
    marker = item.get_closest_marker("live_llm")
    if marker is not None and _live_llm_arguments(marker) is None:
        pytest.fail(
            "live_llm takes one provider name, as its argument or provider=, and env=VARIABLE (non-empty strings), "
            f"got {marker.args} {marker.kwargs}",
            pytrace=False,
        )
    for marker in item.iter_markers("allow_llm_host"):
        if not _names_hosts(marker):
            pytest.fail(
                'allow_llm_host takes host names as arguments, @pytest.mark.allow_llm_host("api.example.com", ...), '
                f"got {marker.args} {marker.kwargs}",
                pytrace=False,
            )


def api_key_variable(provider: str) -> str:
    """The environment variable that holds ``provider``'s API key, as ``live_llm`` and cassettes read it.

    Args:
        provider: A provider name such as ``"openai"``, ``"anthropic"`` or ``"azure"``.

    Returns:
        ``AZURE_OPENAI_API_KEY`` for ``"azure"``, else ``<PROVIDER>_API_KEY`` (``OPENAI_API_KEY``...).
    """
    key = provider.strip().lower()
    return _KEY_VARIABLES.get(key) or re.sub(r"[^A-Z0-9]+", "_", key.upper()) + "_API_KEY"


def allow_hosts_for_test(config: pytest.Config, hosts: Iterable[str]) -> None:
    """Let the current test reach ``hosts`` despite the guard (a cassette being recorded); no-op without it."""
    guard = config.stash.get(_GUARD, None)
    if guard is not None:
        guard.allow_for_test(hosts)


def _live_llm_arguments(marker: pytest.Mark) -> tuple[str, str] | None:
    """``(provider, key variable)`` of a ``live_llm`` marker, or None when its arguments are wrong."""
    # One provider: as the argument or as provider=, not both (one of them would be ignored).
    if len(marker.args) + ("provider" in marker.kwargs) > 1 or set(marker.kwargs) - {"provider", "env"}:
        return None
    provider = marker.kwargs.get("provider", marker.args[0] if marker.args else "openai")
    env = marker.kwargs.get("env")
    if not isinstance(provider, str) or not provider.strip() or not (env is None or (isinstance(env, str) and env)):
        return None
    return provider, env or api_key_variable(provider)


def _names_hosts(marker: pytest.Mark) -> bool:
    """Whether an ``allow_llm_host`` marker names its hosts as it should: non-empty strings, no keywords."""
    return (
        bool(marker.args) and not marker.kwargs and all(isinstance(host, str) and host.strip() for host in marker.args)
    )


def _split(values: Iterable[str]) -> list[str]:
    return [host.strip() for value in values for host in str(value).split(",") if host.strip()]
