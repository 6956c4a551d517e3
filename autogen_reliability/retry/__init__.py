"""Classified retries, the circuit breaker, the retry budget and fallbacks."""

from .classify import ErrorKind, classify_error, retry_after

__all__ = ["ErrorKind", "classify_error", "retry_after"]
