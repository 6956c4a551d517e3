"""Fallback clients: when the primary client cannot answer, the next one is asked.

The primary and each fallback run their own retry and circuit-breaker layers,
so a fallback is tried only once the client before it has *given up*: its
retries are exhausted, its circuit is open, or the error is one that another
model may not have (the context is too long for it). Any other error — a bad
request, a failed authentication, a cancellation — is raised as it is: another
client would not fix it. When every client failed,
:class:`~autogen_reliability.AllClientsFailedError` carries each one's error.

A stream falls back only while nothing has been handed to the consumer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from autogen_core.models import CreateResult

from .._errors import AllClientsFailedError, CircuitOpenError, ReliabilityError, RetriesExhaustedError
from .._pipeline import CreateHandler, Layer, Pipeline, Request, StreamHandler, StreamItem
from .._redaction import redacted_error
from ._circuit import describe_client
from ._classify import ErrorKind, classify_error

__all__ = ["FallbackLayer", "should_fall_back"]


def should_fall_back(error: BaseException, retry_on: frozenset[ErrorKind]) -> bool:
    """Whether ``error`` from one client is a reason to ask the next."""
    if isinstance(error, RetriesExhaustedError | CircuitOpenError):
        return True
    if not isinstance(error, Exception):
        return False  # cancellation and interpreter exits are never redirected
    kind = classify_error(error)
    # A retryable kind that was not retried (e.g. Retry-After longer than we accept) counts as given up.
    return kind is ErrorKind.CONTEXT_LENGTH or kind in retry_on


def _keepable(error: Exception) -> Exception:
    """``error`` as :class:`AllClientsFailedError` may hold it: a provider's error is redacted, ours are already."""
    return error if isinstance(error, ReliabilityError) else redacted_error(error)


class FallbackLayer(Layer):
    """Sends a call to the next pipeline when the one before it gave up."""

    def __init__(self, fallbacks: Sequence[Pipeline], retry_on: frozenset[ErrorKind]) -> None:
        self.fallbacks = tuple(fallbacks)
        self.retry_on = retry_on

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        errors: list[Exception] = []
        for handler in (call_next, *(pipeline.create for pipeline in self.fallbacks)):
            try:
                return await handler(request)
            except Exception as error:
                if not should_fall_back(error, self.retry_on):
                    raise
                errors.append(_keepable(error))
        raise self._all_failed(errors)

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        errors: list[Exception] = []
        for handler in (call_next, *(pipeline.create_stream for pipeline in self.fallbacks)):
            started = False
            try:
                async with aclosing(handler(request)) as stream:
                    async for item in stream:
                        started = True
                        yield item
                return
            except Exception as error:
                if started or not should_fall_back(error, self.retry_on):
                    raise
                errors.append(_keepable(error))
        raise self._all_failed(errors)

    def _all_failed(self, errors: list[Exception]) -> AllClientsFailedError:
        names = ", ".join(describe_client(pipeline.client) for pipeline in self.fallbacks)
        return AllClientsFailedError(f"the primary client and every fallback ({names}) failed", errors)
