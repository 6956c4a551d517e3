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

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from . import _compat
from ._client import ReliableChatCompletionClient, ReliableChatCompletionClientConfig, ReliableOptions
from ._config import configure
from ._context import Attribution, current_attribution, usage_scope
from ._errors import (
    AllClientsFailedError,
    BudgetExceededError,
    CircuitOpenError,
    ConfigurationError,
    ErrorKind,
    IncompleteStreamError,
    ReliabilityError,
    ResponseValidationError,
    RetriesExhaustedError,
    SchemaViolation,
)
from ._pipeline import AttemptEvent
from ._wrap import reliable
from .budget import BudgetAlert, BudgetPolicy, CostTermination
from .health import HealthProbe, HealthReport
from .retry import CircuitBreakerPolicy, RetryBudget, RetryPolicy
from .storage import UsageStore
from .validation import JSONExtractionError, SanitizePolicy, ValidationPolicy

try:
    __version__: str = _version("autogen-reliability")
except PackageNotFoundError:  # pragma: no cover - imported from a checkout that was never installed
    __version__ = "0+unknown"

_compat.install()

__all__ = [
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


def __getattr__(name: str) -> object:
    return _compat.moved_attribute(__name__, name, _MOVED)
