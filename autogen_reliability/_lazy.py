"""Public names that load on first use (PEP 562), so that importing a package costs next to nothing.

``import autogen_reliability`` used to import AutoGen, the openai SDK,
SQLAlchemy, alembic and genai-prices before the first line of a user's code ran,
and so did pytest when it loaded our plugin (its module lives inside the
package). A package's ``__init__`` now names where each public name lives;
its module-level ``__getattr__`` imports that module the first time the name
is read, and keeps the value in the package's namespace, so later reads are
plain attribute reads. Type checkers see the names through the package's
``if TYPE_CHECKING:`` imports, which ``tests/test_public_api.py`` keeps equal to
the table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, MutableMapping


def load(package: str, name: str, homes: Mapping[str, str], namespace: MutableMapping[str, object]) -> object:
    """Imports the module that holds ``name`` (``homes[name]``, relative to ``package``) and caches the value.

    A public name that is a module itself (``testing.faults``, the module ``testing._faults``) names
    that module as its home: a home without an attribute of the name is the value.

    Args:
        package: The package's ``__package__``, against which relative homes resolve.
        name: A key of ``homes``.
        homes: Public name -> the module that defines it, relative (``"._client"``) or absolute.
        namespace: The package's ``globals()``: the value is stored there, so ``__getattr__`` runs once per name.
    """
    home = importlib.import_module(homes[name], package)
    value = getattr(home, name, home)
    namespace[name] = value
    return value


def listing(namespace: Iterable[str], public: Iterable[str]) -> list[str]:
    """What ``dir(package)`` shows: what is loaded already, and the public names still to load."""
    return sorted({*namespace, *public})


def attach(
    package: str, homes: Mapping[str, str], namespace: MutableMapping[str, object], public: Iterable[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's module-level ``__getattr__`` and ``__dir__`` for the names of ``homes`` (see :func:`load`).

    Example (a package's ``__init__``)::

        __getattr__, __dir__ = _lazy.attach(__name__, _HOMES, globals(), __all__)
    """
    listed = list(public)

    def __getattr__(name: str) -> object:
        if name in homes:
            return load(package, name, homes, namespace)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return listing(namespace, listed)

    return __getattr__, __dir__
