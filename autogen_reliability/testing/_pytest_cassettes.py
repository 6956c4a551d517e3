"""Part of the pytest plugin (see ``autogen_reliability.testing.plugin``): ``--llm-record`` and ``llm_cassette``.

A test that takes ``llm_cassette`` talks to a provider through a cassette:

* by default the cassette is replayed: a `FakeOpenAIServer` answers from it, and
  ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` point the openai SDK (and every AutoGen
  client built on it without an explicit ``base_url``) at that server, with a
  placeholder key. A missing cassette fails the test, saying how to record it; a
  request the cassette does not have fails it with a diff; so does a recorded
  exchange the test never asked for (``allow_unused=True`` permits it).
* ``pytest --llm-record`` records instead: the test talks to the real provider
  (its key from the environment, or the test is skipped naming the variable;
  allowed through ``--block-llm-network`` for that test), and every exchange is
  written to the cassette when the test ends, replacing the old one.

Options, ini settings and marker:
    * ``--llm-record``: record the cassettes of the tests selected (``-k``, paths).
    * ini ``llm_cassette_dir``: where cassettes go, relative to the rootdir, in a folder per
      module path (``<dir>/tests/test_x/<test name>.json``); by default a ``cassettes/``
      folder beside each test module (``cassettes/test_x/<test name>.json``). Either way
      a test in a class has a folder per class.
    * ``@pytest.mark.llm_cassette(name=None, provider="openai", base_url=None, allow_unused=False)``:
      the file name (to share a cassette between tests), the provider whose key
      recording needs (``OPENAI_API_KEY``...), its base URL when it is not
      OpenAI's (``OPENAI_BASE_URL`` or ``https://api.openai.com/v1``), and whether
      exchanges may be left unplayed. Markers on the module, the class and the test
      are merged, the closest winning option by option; a wrong argument fails the test.

Loading this module imports nothing but pytest: the recorder (httpx2), the
server and the cassette format load when a test takes the fixture.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import pytest

from ._pytest_fixtures import call_skipped
from ._pytest_network import allow_hosts_for_test, api_key_variable

if TYPE_CHECKING:
    from ._cassette import LLMCassette

__all__ = ["llm_cassette", "pytest_addoption", "pytest_configure"]

_OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
# What replayed tests get as their key: they never hold a real one, whatever the shell exports.
_PLACEHOLDER_KEY: Final = "sk-cassette-replay-placeholder"
# What a file name keeps as it is: brackets too, so that a parametrized test's file reads as its id.
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9_.\-\[\]]+")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--llm-record`` and the ``llm_cassette_dir`` ini setting."""
    group = parser.getgroup("autogen-reliability", "autogen-reliability: fakes, network guard and cassettes")
    group.addoption(
        "--llm-record",
        action="store_true",
        default=False,
        dest="llm_record",
        help="Record the cassettes of the selected tests that use llm_cassette against the real provider "
        "(its API key from the environment), replacing the old ones. Without it, cassettes are replayed.",
    )
    parser.addini(
        "llm_cassette_dir",
        default="",
        help="Directory of llm_cassette files, relative to the rootdir (default: cassettes/ beside each test "
        "module); files are <dir>/<module path from the rootdir>/<test>.json.",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``llm_cassette`` marker."""
    config.addinivalue_line(
        "markers",
        "llm_cassette(name=None, provider='openai', base_url=None, allow_unused=False): the cassette of a test "
        "that uses the llm_cassette fixture: its file name, the provider recording needs a key for, that "
        "provider's base URL, and whether recorded exchanges may go unplayed.",
    )


def _options(node: pytest.Item) -> dict[str, Any]:
    """The test's ``llm_cassette`` markers merged, the closest winning option by option, and checked.

    As the ``autogen_reliability`` marker's are: a module's ``provider=`` and ``base_url=`` hold for a
    test whose own marker only names its file.
    """
    options: dict[str, Any] = {"name": None, "provider": "openai", "base_url": None, "allow_unused": False}
    for marker in reversed(list(node.iter_markers("llm_cassette"))):  # the farthest first: the closest overwrites
        if len(marker.args) > 1 or set(marker.kwargs) - set(options):
            pytest.fail(
                f"llm_cassette takes a name and provider=, base_url=, allow_unused=; got {marker.args} {marker.kwargs}",
                pytrace=False,
            )
        if marker.args and "name" in marker.kwargs:
            pytest.fail(
                f"llm_cassette takes its name once, as the argument or as name=, got {marker.args} {marker.kwargs}",
                pytrace=False,
            )
        options.update(marker.kwargs)
        if marker.args:
            options["name"] = marker.args[0]
    for key in ("name", "base_url"):
        if options[key] is not None and (not isinstance(options[key], str) or not options[key]):
            pytest.fail(f"llm_cassette({key}=...) takes a non-empty string, got {options[key]!r}", pytrace=False)
    if not isinstance(options["provider"], str) or not options["provider"].strip():
        pytest.fail(f"llm_cassette(provider=...) takes a provider name, got {options['provider']!r}", pytrace=False)
    if not isinstance(options["allow_unused"], bool):
        pytest.fail(
            f"llm_cassette(allow_unused=...) takes True or False, got {options['allow_unused']!r}", pytrace=False
        )
    return options


def cassette_path(node: pytest.Item, name: str | None = None) -> Path:
    """Where the cassette of ``node`` lives: ``cassettes/<module name>/<name>.json`` beside the module (or
    ``<llm_cassette_dir>/<module path from the rootdir>/...``), or ``<test name>.json`` under a folder per class
    the test is in (``TestWriter/test_answer.json``), so that no two tests share a file unasked."""
    module = Path(node.path)
    rootpath = node.config.rootpath
    setting = str(node.config.getini("llm_cassette_dir") or "")
    if setting:
        # One directory for every module: each module's folder there is its path from the rootdir, so that
        # tests/a/test_x.py and tests/b/test_x.py do not share one.
        folder = module.relative_to(rootpath).with_suffix("") if module.is_relative_to(rootpath) else module.stem
        directory = rootpath / setting / folder
    else:
        directory = module.parent / "cassettes" / module.stem
    if name is not None:
        return directory / f"{_file_name(name)}.json"
    classes = [_file_name(parent.name) for parent in node.listchain() if isinstance(parent, pytest.Class)]
    return directory.joinpath(*classes, f"{_file_name(node.name)}.json")


def _file_name(name: str) -> str:
    """``name`` as a file name: as it is if it can be one, else its unsafe characters replaced and a hash of the
    name added, so that names which differ only there (``test[a b]``, ``test[a/b]``) still get a file each."""
    safe = _UNSAFE_NAME.sub("_", name).strip("_")
    if safe == name:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe}-{digest}" if safe else digest


@pytest.fixture
def llm_cassette(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMCassette]:
    """The test's cassette: replayed through a local FakeOpenAIServer, or recorded with ``--llm-record``.

    Build the client without ``base_url`` / ``api_key`` (``OPENAI_BASE_URL`` and
    ``OPENAI_API_KEY`` are set for the test), or with ``llm_cassette.base_url`` and
    ``llm_cassette.api_key``. Replaying, a request the cassette does not hold
    fails the test with a diff, as does an exchange the test never asked for.
    The file is ``tests/cassettes/<module>/<test>.json`` by default (see the
    ``llm_cassette`` marker and the ``llm_cassette_dir`` ini setting).
    """
    from ._cassette import CassetteError, LLMCassette, Replayer, load_cassette  # noqa: PLC0415 - on use only

    node = request.node
    if not isinstance(node, pytest.Item):  # pragma: no cover - function-scoped fixtures always have an item
        raise TypeError("llm_cassette is a function-scoped fixture")
    options = _options(node)
    provider: str = options["provider"]
    variable = api_key_variable(provider)
    path = cassette_path(node, options["name"])

    if request.config.getoption("llm_record", False):
        yield from _record(
            request, monkeypatch, path=path, provider=provider, variable=variable, base_url=options["base_url"]
        )
        return

    unreadable = ""
    try:
        base_url, interactions = load_cassette(path)
    except CassetteError as exc:
        unreadable = str(exc)
    if unreadable:  # failed outside the except block: inside, the loader's error would show too, chained
        pytest.fail(
            f"{unreadable}: record it once against {provider} with `pytest --llm-record {node.nodeid}` "
            f"({variable} set), then commit the file.",
            pytrace=False,
        )
    from ._http import openai_route  # noqa: PLC0415
    from ._server import FakeOpenAIServer  # noqa: PLC0415

    # An Azure OpenAI deployment's URL keeps its path (/openai/deployments/NAME): under any other, the SDK of a
    # client built with it would ask for /deployments/MODEL/chat/completions. Anything else is served under /v1.
    recorded_path = urlsplit(base_url).path.rstrip("/")
    azure = recorded_path and openai_route(f"{recorded_path}/chat/completions") == "/chat/completions"
    served_path = recorded_path if azure else "/v1"
    replayer = Replayer(base_url, interactions, server_base_path=served_path)
    server = FakeOpenAIServer(default=replayer).start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", _PLACEHOLDER_KEY)
    served = server.root_url + served_path
    try:
        yield LLMCassette(path, "replay", served, _PLACEHOLDER_KEY, replayer=replayer, server=server)
    finally:
        server.stop()
    if replayer.mismatches:
        count = len(replayer.mismatches)
        pytest.fail(
            f"{count} request{'s' if count != 1 else ''} did not match the cassette {path}:\n\n"
            + "\n\n".join(replayer.mismatches),
            pytrace=False,
        )
    unplayed = replayer.unplayed()
    if unplayed and not options["allow_unused"]:
        listed = "\n".join(
            f"  #{index + 1}: {item['request'].get('method')} {item['request'].get('url')}" for index, item in unplayed
        )
        pytest.fail(
            f"{len(unplayed)} of the {len(interactions)} exchanges in the cassette {path} were never requested "
            f"(only chat completions are replayed):\n{listed}\n"
            "The test makes fewer requests than when it was recorded: re-record it with --llm-record, or allow "
            "it with @pytest.mark.llm_cassette(allow_unused=True).",
            pytrace=False,
        )


def _record(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    *,
    path: Path,
    provider: str,
    variable: str,
    base_url: str | None,
) -> Iterator[LLMCassette]:
    from ._cassette import LLMCassette, dump_cassette  # noqa: PLC0415
    from ._recorder import Recorder  # noqa: PLC0415

    api_key = os.environ.get(variable)
    if not api_key:
        pytest.skip(f"llm_cassette: recording needs {variable} (the {provider} API key)")
    if base_url is None:
        if provider.strip().lower() != "openai":
            pytest.fail(
                f"llm_cassette(provider={provider!r}) needs base_url=... (that provider's OpenAI-compatible URL)",
                pytrace=False,
            )
        base_url = os.environ.get("OPENAI_BASE_URL") or _OPENAI_BASE_URL
    host = urlsplit(base_url).hostname
    if host:
        allow_hosts_for_test(request.config, [host])
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    monkeypatch.setenv("OPENAI_API_KEY", api_key)
    recorder = Recorder(base_url)
    recorder.start()
    try:
        yield LLMCassette(path, "record", base_url, api_key, recorder=recorder)
    finally:
        recorder.stop()
        # A test that skipped itself (or xfailed) did not run to its end: its cassette, if it has one, stays.
        if not (call_skipped(request.node) and path.exists()):
            dump_cassette(path, base_url.rstrip("/"), recorder.interactions)
