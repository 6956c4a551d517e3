"""Reliability for existing AutoGen agents: wrap the model client they already use.

The top level holds the headline API: :func:`reliable`, :func:`usage_scope`,
:func:`configure`, the policies, the errors, :class:`UsageStore`. Second-tier
types live in their subpackage: ``autogen_reliability.retry``,
``.validation``, ``.accounting``, ``.budget``, ``.storage``, ``.health``, ``.providers``, ``.testing``.

Example (the client reads its key from ``OPENAI_API_KEY``, as without the wrapper):
    >>> from autogen_ext.models.openai import OpenAIChatCompletionClient
    >>> from autogen_reliability import reliable, usage_scope
    >>> client = reliable(OpenAIChatCompletionClient(model="gpt-4o-mini"), project="acme-support")
    >>> with usage_scope(session="ticket-4711"):
    ...     pass  # every call made through client in here is attributed to ticket-4711
"""

import importlib
from typing import TYPE_CHECKING

from . import _compat, _lazy

if TYPE_CHECKING:
    # What type checkers and IDEs see; at run time each name loads on first use (``__getattr__`` below), so
    # that importing the package (pytest does, to load our plugin) imports no AutoGen, SDK or SQLAlchemy.
    from ._client import ReliableChatCompletionClient, ReliableChatCompletionClientConfig, ReliableOptions
    from ._config import AccountingSettings, configure
    from ._context import Attribution, UsageScope, current_attribution, usage_scope
    from ._errors import (
        AllClientsFailedError,
        BudgetExceededError,
        CircuitOpenError,
        ConfigurationError,
        ErrorKind,
        IncompleteStreamError,
        MalformedResponseError,
        ProviderResponseError,
        ReliabilityError,
        ResponseValidationError,
        RetriesExhaustedError,
        SchemaViolation,
        TruncatedStreamError,
    )
    from ._pipeline import AttemptEvent
    from ._wrap import reliable
    from .budget import BudgetAlert, BudgetPolicy, CostTermination
    from .health import HealthProbe, HealthReport
    from .retry import CircuitBreakerPolicy, RetryBudget, RetryPolicy
    from .storage import UsageStore
    from .validation import JSONExtractionError, SanitizePolicy, ValidationPolicy

    __version__: str

# The old module paths (``autogen_reliability.retry.policy``, ...) keep working: their finder is cheap to install.
_compat.install()

__all__ = [
    "AccountingSettings",
    "AllClientsFailedError",
    "AttemptEvent",
    "Attribution",
    "BudgetAlert",
    "BudgetExceededError",
    "BudgetPolicy",
    "CircuitBreakerPolicy",
    "CircuitOpenError",
    "ConfigurationError",
    "CostTermination",
    "ErrorKind",
    "HealthProbe",
    "HealthReport",
    "IncompleteStreamError",
    "JSONExtractionError",
    "MalformedResponseError",
    "ProviderResponseError",
    "ReliabilityError",
    "ReliableChatCompletionClient",
    "ReliableChatCompletionClientConfig",
    "ReliableOptions",
    "ResponseValidationError",
    "RetriesExhaustedError",
    "RetryBudget",
    "RetryPolicy",
    "SanitizePolicy",
    "SchemaViolation",
    "TruncatedStreamError",
    "UsageScope",
    "UsageStore",
    "ValidationPolicy",
    "__version__",
    "configure",
    "current_attribution",
    "reliable",
    "usage_scope",
]

# Second-tier names that used to be importable from the top level -> their subpackage.
_MOVED = {
    "Cost": "autogen_reliability.accounting",
    "PricingTable": "autogen_reliability.accounting",
    "TokenUsage": "autogen_reliability.accounting",
    "UsageEvent": "autogen_reliability.accounting",
    "UsageRecorder": "autogen_reliability.accounting",
    "RetryEvent": "autogen_reliability.retry",
    "classify_error": "autogen_reliability.retry",
    "is_testing": "autogen_reliability.retry",
    "set_testing": "autogen_reliability.retry",
    "CheckedCreateResult": "autogen_reliability.validation",
    "SanitizeReport": "autogen_reliability.validation",
    "extract_json": "autogen_reliability.validation",
}


# Each public name -> the module that defines it (the same as the TYPE_CHECKING imports above).
_HOMES = {
    "AccountingSettings": "._config",
    "AllClientsFailedError": "._errors",
    "AttemptEvent": "._pipeline",
    "Attribution": "._context",
    "BudgetAlert": ".budget",
    "BudgetExceededError": "._errors",
    "BudgetPolicy": ".budget",
    "CircuitBreakerPolicy": ".retry",
    "CircuitOpenError": "._errors",
    "ConfigurationError": "._errors",
    "CostTermination": ".budget",
    "ErrorKind": "._errors",
    "HealthProbe": ".health",
    "HealthReport": ".health",
    "IncompleteStreamError": "._errors",
    "JSONExtractionError": ".validation",
    "MalformedResponseError": "._errors",
    "ProviderResponseError": "._errors",
    "ReliabilityError": "._errors",
    "ReliableChatCompletionClient": "._client",
    "ReliableChatCompletionClientConfig": "._client",
    "ReliableOptions": "._client",
    "ResponseValidationError": "._errors",
    "RetriesExhaustedError": "._errors",
    "RetryBudget": ".retry",
    "RetryPolicy": ".retry",
    "SanitizePolicy": ".validation",
    "SchemaViolation": "._errors",
    "TruncatedStreamError": "._errors",
    "UsageScope": "._context",
    "UsageStore": ".storage",
    "ValidationPolicy": ".validation",
    "configure": "._config",
    "current_attribution": "._context",
    "reliable": "._wrap",
    "usage_scope": "._context",
}

# The subpackages that ``import autogen_reliability`` used to load, so that ``autogen_reliability.retry`` worked
# without importing it: they still do, loaded on first use. (The extras' packages were never loaded.)
_SUBPACKAGES = frozenset(
    {"accounting", "budget", "health", "providers", "reports", "retry", "storage", "testing", "validation"}
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - only when asked

    try:
        return version("autogen-reliability")
    except PackageNotFoundError:  # pragma: no cover - imported from a checkout that was never installed
        return "0+unknown"


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return _lazy.load(__name__, name, _HOMES, globals())
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    return _compat.moved_attribute(__name__, name, _MOVED)


def __dir__() -> list[str]:
    return _lazy.listing(globals(), __all__)
