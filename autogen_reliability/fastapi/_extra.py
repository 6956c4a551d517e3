"""The ``[fastapi]`` extra: FastAPI (and Starlette, which it brings) are imported only by this subpackage."""

from __future__ import annotations

import importlib
from typing import Final

__all__ = ["INSTALL", "require_fastapi"]

INSTALL: Final = "pip install 'autogen-reliability[fastapi]'"
"""The command that installs what ``autogen_reliability.fastapi`` needs."""


def require_fastapi() -> None:
    """Imports FastAPI and Starlette, or raises the ImportError that names the extra to install.

    Raises:
        ImportError: FastAPI or Starlette is not installed (or cannot be imported); the message names
            the command, and the original error is chained.
    """
    for name in ("fastapi", "starlette"):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImportError(
                f"autogen_reliability.fastapi needs FastAPI, and {name} cannot be imported ({error}); "
                f"install the extra: {INSTALL}",
                name=error.name,
            ) from error
