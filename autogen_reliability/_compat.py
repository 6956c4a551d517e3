"""Old import paths, kept working for one release with a ``DeprecationWarning``.

Every module used to be public (``autogen_reliability.retry.policy``, ...).
The modules are private now, behind their package's ``__init__``; importing an
old path still works, warns once per path, and gives the new module. Names that
left the top level warn when read from there, and name their new home.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from importlib.abc import Loader, MetaPathFinder
else:
    # The import system needs only the methods; importlib.abc costs 15 ms of every `import autogen_reliability`
    # (it loads importlib.resources), for nothing at run time.
    Loader = MetaPathFinder = object

_PACKAGE: Final = "autogen_reliability"

# old module (under the package) -> (the module that now holds its code, where to import from instead)
MOVED_MODULES: Final[dict[str, tuple[str, str]]] = {
    "errors": ("_errors", "autogen_reliability"),
    "context": ("_context", "autogen_reliability"),
    "redaction": ("_redaction", "autogen_reliability"),
    "config": ("_config", "autogen_reliability"),
    "client": ("_client", "autogen_reliability"),
    "wrap": ("_wrap", "autogen_reliability"),
    "cli": ("_cli", "autogen_reliability"),
    "demo": ("_demo", "autogen_reliability"),
    "pipeline": ("_pipeline", "autogen_reliability"),
    "accounting.events": ("accounting._events", "autogen_reliability.accounting"),
    "accounting.layer": ("accounting._layer", "autogen_reliability.accounting"),
    "accounting.pricing": ("accounting._pricing", "autogen_reliability.accounting"),
    "accounting.recorder": ("accounting._recorder", "autogen_reliability.accounting"),
    "accounting.usage_tap": ("providers._usage_tap", "autogen_reliability.providers"),
    "retry.budget": ("retry._budget", "autogen_reliability.retry"),
    "retry.circuit": ("retry._circuit", "autogen_reliability.retry"),
    "retry.classify": ("retry._classify", "autogen_reliability.retry"),
    "retry.fallback": ("retry._layer", "autogen_reliability.retry"),
    "retry.policy": ("retry._policy", "autogen_reliability.retry"),
    "retry.sdk": ("providers._sdk_retries", "autogen_reliability.providers"),
    "retry.shared": ("retry._shared", "autogen_reliability.retry"),
    "storage.migrate": ("storage._migrate", "autogen_reliability.storage"),
    "storage.models": ("storage._models", "autogen_reliability.storage"),
    "storage.store": ("storage._store", "autogen_reliability.storage"),
    "validation.parse": ("validation._parse", "autogen_reliability.validation"),
    # ValidationPolicy and ValidationLayer: _layer holds both (it imports the policy it applies).
    "validation.policy": ("validation._layer", "autogen_reliability.validation"),
    "validation.result": ("validation._result", "autogen_reliability.validation"),
    "validation.sanitize": ("validation._sanitizer", "autogen_reliability.validation"),
    "validation.sanitizing": ("validation._layer", "autogen_reliability.validation"),
    "validation.schema": ("validation._schema", "autogen_reliability.validation"),
}


class _MovedModuleLoader(Loader):
    def __init__(self, old: str, new: str, instead: str) -> None:
        self._old, self._new, self._instead = old, new, instead

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{self._old} is a private module now; import from {self._instead} instead "
            "(the old path goes away in the release after next)",
            DeprecationWarning,
            stacklevel=2,  # the importer: warnings.warn steps over importlib's _bootstrap frames itself
        )
        return importlib.import_module(self._new)

    def exec_module(self, module: ModuleType) -> None:
        """The module is the new one, already executed."""


class _MovedModuleFinder(MetaPathFinder):
    """Finds the old public module paths and hands out the private modules that replaced them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PACKAGE + "."):
            return None
        moved = MOVED_MODULES.get(fullname[len(_PACKAGE) + 1 :])
        if moved is None:
            return None
        new, instead = moved
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(fullname, f"{_PACKAGE}.{new}", instead))


def install() -> None:
    """Puts the finder of old module paths on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())


def moved_attribute(package: str, name: str, moved: dict[str, str]) -> object:
    """A name that left ``package``: warns, then returns it from the package that holds it now."""
    home = moved.get(name)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    warnings.warn(
        f"{package}.{name} moved; import it from {home} (the old place goes away in the release after next)",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(home), name)
