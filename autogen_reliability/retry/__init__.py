"""Classified retries, the circuit breaker, the retry budget and fallbacks."""

from ._budget import RetryBudget
from ._circuit import CircuitBreakerPolicy
from ._classify import ErrorKind, classify_error, retry_after
from ._policy import (
    RetryEvent,
    RetryPolicy,
    get_on_retry_hooks,
    is_testing,
    log_retry,
    set_on_retry_hooks,
    set_testing,
)

__all__ = [
    "CircuitBreakerPolicy",
    "ErrorKind",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "classify_error",
    "get_on_retry_hooks",
    "is_testing",
    "log_retry",
    "retry_after",
    "set_on_retry_hooks",
    "set_testing",
]
