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
from collections.abc import Iterable, Mapping, MutableMapping


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
