"""Structure: only ``providers/`` knows AutoGen's and the SDKs' insides, and it sits below the rest.

An AutoGen or SDK upgrade that moves a private attribute or module should touch
``providers/`` alone. These checks read the source (with :mod:`ast`, so our own
``self._client`` or ``from ._client import ...`` are told apart from an SDK's)
and fail on any of the private names below used anywhere else in the package.
A name to add: an attribute to ``PRIVATE_ATTRIBUTES``; an SDK whose private
modules must not be imported: to ``FOREIGN_PACKAGES``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import autogen_reliability

from .test_layering import imports_in

PACKAGE = Path(autogen_reliability.__file__).parent
PROVIDERS = PACKAGE / "providers"

# Private attributes of AutoGen's clients, agents and teams and of the SDKs' and HTTP libraries' objects.
PRIVATE_ATTRIBUTES = frozenset(
    {
        "_client",  # AutoGen model client -> its SDK client; openai/anthropic SDK client -> its HTTP client
        "_raw_config",  # AutoGen model client: the arguments it was built with
        "_create_args",  # AutoGen model client: the arguments of every request
        "_resolve_create_args",  # AutoGen's OpenAI client: how those are merged per call
        "_model_client",  # AutoGen agents and group chats: the client they call
        "_team",  # AutoGen's SocietyOfMindAgent: its inner team
        "_participants",  # AutoGen teams: their members
        "_initialized",  # AutoGen teams: whether the first run made the runtime's agents
        "_transport",  # httpx / httpx2 clients: the transport requests go through
        "_mounts",  # httpx / httpx2 clients: transports per URL pattern
        "_content",  # httpx / httpx2 responses: the body once read
        "_decoders",  # httpx / httpx2: the private content decoders module
        "_model_info",  # autogen_ext.models.openai: its private model table module
        "_pydantic",  # openai.lib: its private strict-schema module
        "_streaming",  # openai, anthropic: their private SSE decoders module
    }
)
# Packages whose private modules (a dotted path with a ``_``-prefixed part) only providers/ may import.
FOREIGN_PACKAGES = frozenset(
    {"anthropic", "autogen_agentchat", "autogen_core", "autogen_ext", "httpx", "httpx2", "ollama", "openai"}
)
# Strings that are our own names, where they clash with one above: file -> the strings.
OUR_OWN_NAMES: dict[str, frozenset[str]] = {
    "_compat.py": frozenset({"'_client'"}),  # our module autogen_reliability._client, in the map of moved modules
}
# What providers/ may import from the rest of the package: the core vocabulary, nothing that imports it.
# (``_redaction`` uses providers' lookup, so an import of it from providers would be a circle.)
PROVIDERS_MAY_IMPORT = frozenset({"_errors", "_threads"})

_OWN = frozenset({"self", "cls"})
_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.\w+)+$")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")  # __version__ and the like are public


def _is_private_path(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] in FOREIGN_PACKAGES and any(_is_private(part) for part in parts[1:])


def private_names_in(source: str) -> list[str]:
    """Every use of an SDK's or AutoGen's private name in ``source``, as ``"line: what"``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            if not (isinstance(node.value, ast.Name) and node.value.id in _OWN):
                found.append(f"{line}: .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # getattr(client, "_raw_config"), importlib.import_module("httpx2._decoders"), ...
            if node.value in PRIVATE_ATTRIBUTES or (_DOTTED.match(node.value) and _is_private_path(node.value)):
                found.append(f"{line}: {node.value!r}")
        elif isinstance(node, ast.Import):
            found += [f"{line}: import {alias.name}" for alias in node.names if _is_private_path(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if _is_private_path(node.module):
                found.append(f"{line}: from {node.module} import ...")
            elif node.module.split(".")[0] in FOREIGN_PACKAGES:
                found += [
                    f"{line}: from {node.module} import {alias.name}" for alias in node.names if _is_private(alias.name)
                ]
    return found


def _outside_providers(modules: set[str]) -> set[str]:
    """``modules`` of the package that are not in ``providers``, named under the package (``"_errors"``)."""
    names = {name.removeprefix("autogen_reliability").lstrip(".") for name in modules}
    return {name for name in names if name and name.split(".")[0] != "providers"}


def _sources(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


# --------------------------------------------------------------------------- the rules


OUTSIDE_PROVIDERS = [path for path in _sources(PACKAGE) if PROVIDERS not in path.parents]


@pytest.mark.parametrize("path", OUTSIDE_PROVIDERS, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_only_providers_use_private_names_of_autogen_or_the_sdks(path: Path) -> None:
    ours = OUR_OWN_NAMES.get(str(path.relative_to(PACKAGE)), frozenset())
    found = [name for name in private_names_in(path.read_text(encoding="utf-8")) if name.split(": ", 1)[1] not in ours]
    assert found == [], f"{path.relative_to(PACKAGE.parent)} uses private names (move that code to providers/): {found}"


def test_providers_holds_the_private_names() -> None:
    # The rule above is not vacuous: the names it forbids elsewhere are really used, here.
    found = [name for path in _sources(PROVIDERS) for name in private_names_in(path.read_text(encoding="utf-8"))]
    assert len(found) >= 10, found


@pytest.mark.parametrize("path", _sources(PROVIDERS), ids=lambda path: path.name)
def test_providers_imports_only_the_core_of_the_package(path: Path) -> None:
    module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    imported = _outside_providers(imports_in(path.read_text(encoding="utf-8"), f"autogen_reliability.{module}"))
    assert imported <= PROVIDERS_MAY_IMPORT, f"{module} imports {sorted(imported - PROVIDERS_MAY_IMPORT)}"


# --------------------------------------------------------------------------- the checks check


@pytest.mark.parametrize(
    "source",
    [
        "client._raw_config['model']",
        "client._client._client._transport",
        "x = getattr(agent, '_model_client', None)",
        "setattr(team, '_participants', [])",
        "inner._create_args",
        "client._resolve_create_args({})",
        "response._content",
        "from httpx2 import _decoders",
        "from httpx2._decoders import SUPPORTED_DECODERS",
        "from openai.lib._pydantic import to_strict_json_schema",
        "from openai._streaming import SSEDecoder",
        "import autogen_ext.models.openai._model_info",
        "from autogen_ext.models.openai._model_info import resolve_model",
        "from autogen_core._component_config import Component",
        "importlib.import_module('httpx2._decoders')",
        "importlib.import_module('openai._streaming.sse')",
        "def f():\n    from anthropic._client import AsyncAnthropic\n",
    ],
)
def test_the_check_finds_a_private_name(source: str) -> None:
    assert private_names_in(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "self._client = client",  # our own attribute
        "cls._raw_config",
        "from ._client import ReliableChatCompletionClient",  # our own private module
        "from autogen_reliability._client import ReliableChatCompletionClient",
        "import autogen_reliability._client",
        "from httpx2 import AsyncByteStream",
        "from openai import __version__",
        "'a docstring that mentions _client and httpx2._decoders'",
        "'httpx2._decoders is private: a docstring that begins with the name'",
        "client.inner",
    ],
)
def test_the_check_leaves_our_own_and_public_names_alone(source: str) -> None:
    assert private_names_in(source) == []


def test_the_import_check_sees_relative_absolute_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .._errors import ConfigurationError\n"
        "from ._lookup import loaded_class\n"
        "from . import _clients\n"
        "from .. import _threads\n"
        "import autogen_reliability.retry\n"
        "from autogen_reliability.accounting._pricing import PricingTable\n"
        "from autogen_reliability.providers import innermost\n"
        "if TYPE_CHECKING:\n    from .._pipeline import Request\n"
    )
    imported = _outside_providers(imports_in(source, "autogen_reliability.providers._probe"))
    assert imported == {"_errors", "_threads", "retry", "accounting._pricing", "_pipeline"}
