"""Classified retries, the circuit breaker, the retry budget and fallbacks."""

from ._budget import RetryBudget
from ._circuit import CircuitBreakerPolicy
from ._classify import ErrorKind, classify_error, retry_after
from ._policy import RetryEvent, RetryPolicy, is_testing, set_testing

__all__ = [
    "CircuitBreakerPolicy",
    "ErrorKind",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "classify_error",
    "is_testing",
    "retry_after",
    "set_testing",
]
