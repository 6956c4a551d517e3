"""Reliability for existing AutoGen agents: wrap the model client they already use.

Example:
    >>> from autogen_ext.models.openai import OpenAIChatCompletionClient
    >>> from autogen_reliability import reliable, usage_scope
    >>> client = reliable(OpenAIChatCompletionClient(model="gpt-4o-mini"), project="acme-support")
"""

from .client import ReliableChatCompletionClient, ReliableChatCompletionClientConfig, ReliableOptions
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

__all__ = [
    "AllClientsFailedError",
    "AttemptEvent",
    "Attribution",
    "CheckedCreateResult",
    "CircuitBreakerPolicy",
    "CircuitOpenError",
    "ConfigurationError",
    "ErrorKind",
    "IncompleteStreamError",
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
    "ValidationPolicy",
    "classify_error",
    "current_attribution",
    "extract_json",
    "is_testing",
    "reliable",
    "set_testing",
    "usage_scope",
]
