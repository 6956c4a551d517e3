"""Classified retries, the circuit breaker, the retry budget and fallbacks."""

from .budget import RetryBudget
from .circuit import CircuitBreakerPolicy
from .classify import ErrorKind, classify_error, retry_after
from .policy import RetryEvent, RetryPolicy, is_testing, set_testing

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
