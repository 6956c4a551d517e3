"""Reliability for existing AutoGen agents: wrap the model client they already use.

Example:
    >>> from autogen_ext.models.openai import OpenAIChatCompletionClient
    >>> from autogen_reliability import reliable, usage_scope
    >>> client = reliable(OpenAIChatCompletionClient(model="gpt-4o-mini"), project="acme-support")
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .accounting import Cost, PricingTable, TokenUsage, UsageEvent, UsageRecorder
from .client import ReliableChatCompletionClient, ReliableChatCompletionClientConfig, ReliableOptions
from .config import configure
from .context import Attribution, current_attribution, usage_scope
from .errors import (
    AllClientsFailedError,
    CircuitOpenError,
    ConfigurationError,
    IncompleteStreamError,
    ReliabilityError,
    ResponseValidationError,
    RetriesExhaustedError,
)
from .pipeline import AttemptEvent
from .retry import (
    CircuitBreakerPolicy,
    ErrorKind,
    RetryBudget,
    RetryEvent,
    RetryPolicy,
    classify_error,
    is_testing,
    set_testing,
)
from .validation import CheckedCreateResult, SanitizePolicy, SanitizeReport, ValidationPolicy, extract_json
from .wrap import reliable

try:
    __version__: str = _version("autogen-reliability")
except PackageNotFoundError:  # pragma: no cover - imported from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AllClientsFailedError",
    "AttemptEvent",
    "Attribution",
    "CheckedCreateResult",
    "CircuitBreakerPolicy",
    "CircuitOpenError",
    "ConfigurationError",
    "Cost",
    "ErrorKind",
    "IncompleteStreamError",
    "PricingTable",
    "ReliabilityError",
    "ReliableChatCompletionClient",
    "ReliableChatCompletionClientConfig",
    "ReliableOptions",
    "ResponseValidationError",
    "RetriesExhaustedError",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "SanitizePolicy",
    "SanitizeReport",
    "TokenUsage",
    "UsageEvent",
    "UsageRecorder",
    "ValidationPolicy",
    "__version__",
    "classify_error",
    "configure",
    "current_attribution",
    "extract_json",
    "is_testing",
    "reliable",
    "set_testing",
    "usage_scope",
]
