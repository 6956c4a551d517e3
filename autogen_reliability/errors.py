"""The exceptions autogen-reliability raises.

Errors of the provider (a rate limit, a bad request) are raised as the provider
SDK's own exceptions, unchanged; the classes here describe what *our* layer
decided or detected::

    ReliabilityError
    ├── ConfigurationError      (also a ValueError)
    ├── IncompleteStreamError
    ├── RetriesExhaustedError   (raised from the last provider error)
    ├── CircuitOpenError
    └── AllClientsFailedError   (also an ExceptionGroup: one error per client tried)

A provider error that is not retried (a bad request, a failed authentication)
is never wrapped: it reaches the caller as the SDK raised it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .retry.classify import ErrorKind

__all__ = [
    "AllClientsFailedError",
    "CircuitOpenError",
    "ConfigurationError",
    "IncompleteStreamError",
    "ReliabilityError",
    "RetriesExhaustedError",
]

GiveUpReason = Literal["attempts", "deadline", "budget"]


class ReliabilityError(Exception):
    """Base class of every exception raised by autogen-reliability itself."""


class ConfigurationError(ReliabilityError, ValueError):
    """Raised at construction when an option is invalid; the message says which and why."""


class IncompleteStreamError(ReliabilityError):
    """Describes a stream from the inner client that ended without its final ``CreateResult``."""


class RetriesExhaustedError(ReliabilityError):
    """Raised when a retryable provider error persisted and the retry policy gave up.

    The last provider error is the ``__cause__``.

    Attributes:
        attempts: How many attempts were made.
        kinds: The :class:`~autogen_reliability.ErrorKind` of each failed attempt, in order.
        reason: Why retrying stopped: ``"attempts"`` (the policy's ``max_attempts``),
            ``"deadline"`` (the next wait would pass the deadline) or ``"budget"``
            (the retry budget shared by this provider client is spent).
    """

    def __init__(self, attempts: int, kinds: Sequence[ErrorKind], reason: GiveUpReason, last_error: str) -> None:
        self.attempts = attempts
        self.kinds = tuple(kinds)
        self.reason: GiveUpReason = reason
        why = {
            "attempts": "no attempts left",
            "deadline": "the next wait would pass the deadline",
            "budget": "the retry budget for this client is spent",
        }[reason]
        kinds_text = ", ".join(kind.value for kind in self.kinds)
        super().__init__(f"gave up after {attempts} attempt(s) ({kinds_text}): {why}; last error: {last_error}")


class CircuitOpenError(ReliabilityError):
    """Raised without any request when the circuit breaker of a provider client is open.

    Attributes:
        client: A short description of the client whose circuit is open.
        retry_in: Seconds until the circuit lets a probe request through.
    """

    def __init__(self, client: str, retry_in: float, failures: int, window: int) -> None:
        self.client = client
        self.retry_in = retry_in
        super().__init__(
            f"circuit open for {client}: {failures} of the last {window} calls failed; "
            f"next probe allowed in {retry_in:.1f} s"
        )


class AllClientsFailedError(ReliabilityError, ExceptionGroup[Exception]):
    """Raised when the primary client and every fallback failed; holds one error per client, in order."""

    def __new__(cls, message: str, errors: Sequence[Exception]) -> AllClientsFailedError:
        return super().__new__(cls, message, errors)

    def derive(self, excs: Sequence[Exception]) -> AllClientsFailedError:  # type: ignore[override]
        return AllClientsFailedError(self.message, excs)
