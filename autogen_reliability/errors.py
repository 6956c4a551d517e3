"""The exceptions autogen-reliability raises.

Errors of the provider (a rate limit, a bad request) are raised as the provider
SDK's own exceptions, unchanged; the classes here describe what *our* layer
decided or detected::

    ReliabilityError
    ├── ConfigurationError      (also a ValueError)
    └── IncompleteStreamError
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "IncompleteStreamError", "ReliabilityError"]


class ReliabilityError(Exception):
    """Base class of every exception raised by autogen-reliability itself."""


class ConfigurationError(ReliabilityError, ValueError):
    """Raised at construction when an option is invalid; the message says which and why."""


class IncompleteStreamError(ReliabilityError):
    """Describes a stream from the inner client that ended without its final ``CreateResult``."""
