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
from .wrap import reliable

__all__ = [
    "AllClientsFailedError",
    "AttemptEvent",
    "Attribution",
    "CircuitBreakerPolicy",
    "CircuitOpenError",
    "ConfigurationError",
    "ErrorKind",
    "IncompleteStreamError",
    "ReliabilityError",
    "ReliableChatCompletionClient",
    "ReliableChatCompletionClientConfig",
    "ReliableOptions",
    "RetriesExhaustedError",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "classify_error",
    "current_attribution",
    "is_testing",
    "reliable",
    "set_testing",
    "usage_scope",
]
