"""Finding an SDK's module or class only where it is already imported.

The library works with whichever provider SDKs the application uses (openai,
anthropic, ollama, httpx, httpx2, ...) and depends on none but openai. Every
question "is this object one of that SDK's?" is asked here, in ``sys.modules``:
if the object came from an SDK, the SDK is imported already, and importing
``anthropic`` or ``ollama`` just to answer "no" would cost start-up time and fail
where the SDK is not installed.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TypeVar, overload

__all__ = ["loaded_class", "loaded_module"]

_T = TypeVar("_T")


def loaded_module(name: str) -> ModuleType | None:
    """The module ``name`` if something imported it already; never imports it."""
    module = sys.modules.get(name)
    return module if isinstance(module, ModuleType) else None


@overload
def loaded_class(module: str, name: str) -> type | None: ...
@overload
def loaded_class(module: str, name: str, base: type[_T]) -> type[_T] | None: ...


def loaded_class(module: str, name: str, base: type[object] = object) -> type | None:
    """``module.name`` if that module is imported already and it is a class (a subclass of ``base``, if given).

    Never imports anything.

    Example:
        >>> loaded_class("json", "JSONDecodeError", ValueError) is __import__("json").JSONDecodeError
        True
        >>> loaded_class("an_sdk_nobody_imported", "Client") is None
        True
    """
    found: object = getattr(loaded_module(module), name, None)
    if isinstance(found, type) and issubclass(found, base):
        return found
    return None
