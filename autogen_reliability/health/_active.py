"""Active checks: one real request to a provider, reused for ``ttl``, never more than one in flight per client.

However many health checks run at once (a busy ``/health``, every replica's
readiness probe), a client gets at most one request per ``ttl``: the first
caller starts it, every caller until it ends awaits the same result, and
callers after it get that result until it is ``ttl`` old. A failed or timed-out
result is reused as long, so a provider that is down is not hammered either.

The request is the cheapest that shows the provider answers (see
``providers``): for a client speaking the OpenAI wire protocol, the model
listing (``GET /models``, free); for any other, a completion capped at one
token, sent through a copy of the wrapped client without retries or fallbacks
(to the client under AutoGen's ``ChatCompletionCache``, if there is one: the
cache would answer it), recorded in the usage ledger like any call and tagged
``health_check=true``, under the wrapper's own attribution: the request runs
outside the ``usage_scope`` of the caller that started it.

The in-flight request is shared through a :class:`concurrent.futures.Future`,
so callers on other event loops (a server's thread, a test's) can await it; it
runs on the loop of the caller that started it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from autogen_core.models import ChatCompletionClient, UserMessage

from .._client import ReliableChatCompletionClient
from .._errors import BudgetExceededError, CircuitOpenError, ErrorKind
from .._redaction import message_of
from ..providers import loaded_class, model_listing, one_token_arguments
from ..retry._classify import classify_error
from ._report import ActiveCheck, shown
from ._window import CALLER_KINDS

__all__ = ["HEALTH_CHECK_TAG", "ActiveChecker"]

HEALTH_CHECK_TAG: Final = "health_check"
"""The tag (value ``"true"``) on the ledger rows of active checks that cost tokens."""

_PING: Final = [UserMessage(content="ping", source="health_check")]
_GRACE: Final = 1.0  # seconds a caller waits for a shared check beyond its timeout before giving up on it


@dataclass(frozen=True, slots=True)
class _Result:
    ok: bool | None
    checked_at: datetime
    latency: float
    done_at: float  # the probe's clock when it ended: the age of a reused result counts from here
    error_kind: str | None = None
    error: str | None = None


class ActiveChecker:
    """The active check of one wrapped client."""

    def __init__(
        self, client: ReliableChatCompletionClient, *, ttl: float, timeout: float, clock: Callable[[], float]
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._listing = model_listing(client.inner)
        self.method: Literal["list_models", "completion"] = "list_models" if self._listing else "completion"
        self._pinger: ReliableChatCompletionClient | None = None
        self._lock = threading.Lock()
        self._last: _Result | None = None
        self._in_flight: concurrent.futures.Future[_Result] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # a task is only weakly held by its loop

    async def check(self) -> ActiveCheck:
        """The latest result if younger than ``ttl``, else the one in flight, else a new request's."""
        with self._lock:
            last, future = self._last, self._in_flight
            fresh = last is not None and self._clock() - last.done_at < self._ttl
            start = not fresh and future is None
            if start:
                future = self._in_flight = concurrent.futures.Future()
        if fresh and last is not None:
            return self._report(last)
        assert future is not None
        if start:
            # In a context of its own: the request is every caller's, not the first one's, so the caller's
            # usage_scope (a request's project and session, an agent's name) must not bill it.
            task = asyncio.get_running_loop().create_task(self._run(future), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            # A task cancelled before it ran (its loop closing) never runs its own except clauses.
            task.add_done_callback(lambda _: self._abandon(future, "its event loop stopped"))
        try:
            # Shielded: a caller that goes away (a client that hung up) must not cancel the others' request.
            # Bounded: a check started on an event loop that stopped without cancelling it never ends.
            async with asyncio.timeout(self._timeout + _GRACE):
                result = await asyncio.shield(asyncio.wrap_future(future))
        except TimeoutError:
            result = self._abandon(future, "no result from the check in flight")
        return self._report(result)

    def _report(self, result: _Result) -> ActiveCheck:
        return ActiveCheck(
            method=self.method,
            ok=result.ok,
            checked_at=result.checked_at,
            age_seconds=round(max(0.0, self._clock() - result.done_at), 3),
            latency_ms=round(result.latency * 1000, 3),
            error_kind=result.error_kind,
            error=result.error,
        )

    async def _run(self, future: concurrent.futures.Future[_Result]) -> None:
        checked_at = datetime.now(UTC)
        start = time.perf_counter()
        ok: bool | None = True
        kind = message = None
        try:
            async with asyncio.timeout(self._timeout):
                await self._request()
        except TimeoutError:
            ok, kind, message = False, ErrorKind.TIMEOUT.value, f"no answer within {self._timeout:g} s"
        except (BudgetExceededError, CircuitOpenError) as error:
            # The budget, or the open circuit, refused before any request: that says nothing new of the provider
            # (an open circuit shows as such), and a failure kept for ttl would outlast the circuit's half-opening.
            ok, message = None, shown(f"not asked: {message_of(error)}")
        except Exception as error:
            found = classify_error(error)
            # A refusal of the probe's own request (bad_request, context_length, content_filter) is an answer
            # from a provider that is up: unknown, as the window does not count such failures either. So is a
            # 404 to the listing: a gateway that forwards completions only has none (the calls' 404s still count).
            # And a rate limit: the provider, up, asks for fewer requests; failed, a check would make every
            # replica unready at once for ttl, for a limit they share (the window forgives 429s a retry overcame).
            refused = (
                found in CALLER_KINDS
                or found is ErrorKind.RATE_LIMIT
                or (self._listing is not None and found is ErrorKind.NOT_FOUND)
            )
            ok, kind = (None if refused else False), found.value
            message = shown(f"{type(error).__name__}: {message_of(error)}")
        self._finish(future, _Result(ok, checked_at, time.perf_counter() - start, self._clock(), kind, message))

    def _finish(self, future: concurrent.futures.Future[_Result], result: _Result) -> None:
        with self._lock:
            if future.done():
                return
            self._last = result
            self._in_flight = None
            future.set_result(result)

    def _abandon(self, future: concurrent.futures.Future[_Result], why: str) -> _Result:
        """End a check that got no answer for a reason that says nothing of the provider: not kept for ttl."""
        with self._lock:
            if future.done():
                return future.result()
            result = _Result(None, datetime.now(UTC), 0.0, self._clock(), error=f"cancelled: {why}")
            if self._in_flight is future:
                self._in_flight = None  # the next check asks again
            future.set_result(result)
            return result

    async def _request(self) -> None:
        if self._listing is not None:
            await self._listing(self._timeout)
            return
        if self._pinger is None:
            client = self._client
            tags = {**client.attribution.tags, HEALTH_CHECK_TAG: "true"}
            # One attempt, to this provider only, judged by its breaker; the ledger and the budget still see it.
            pinger = client.with_options(
                fallbacks=[], retry=None, validation=None, on_attempt=None, on_retry=None, tags=tags
            )
            provider = _under_caches(client.inner)
            if provider is not client.inner:
                # AutoGen's cache would answer every check after the first itself: ask the client under it. The
                # breaker guards the cache, not that client, so a breaker of its own would refuse the checks
                # after a few failures (unknown) and hide an outage: none.
                options = pinger.options
                options["circuit"] = None
                pinger = type(client)(provider, **options)
            self._pinger = pinger
        await self._pinger.create(_PING, extra_create_args=one_token_arguments(self._client.inner))


def _under_caches(client: ChatCompletionClient) -> ChatCompletionClient:
    """The client under AutoGen's ``ChatCompletionCache`` (and caches of caches); ``client`` if it is none."""
    cache = loaded_class("autogen_ext.models.cache", "ChatCompletionCache")
    while cache is not None and isinstance(client, cache):
        client = client.client  # type: ignore[attr-defined]
    return client
