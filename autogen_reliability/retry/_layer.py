"""The retry package's layers, outermost first: fallback, retry, circuit breaker.

Each applies a policy kept in its own module (:class:`~._policy.RetryPolicy`,
:class:`~._circuit.CircuitBreakerPolicy` and the breaker registry,
:class:`~._budget.RetryBudget`) to the calls that pass through it:

- :class:`FallbackLayer` sends a call to the next client's own pipeline once
  the one before it gave up;
- :class:`RetryLayer` retries classified failures on tenacity, within the
  call's deadline and the client's retry budget;
- :class:`CircuitLayer` guards every attempt with the breaker of the client it
  goes to.

A stream is retried, or falls back, only until its first chunk has been handed
on: after that the consumer has seen output that a new attempt could not take back.
A stream that a layer outside holds back until its end (``Request.buffered``:
a validated one, JSON the sanitiser cleans whole) is read to its end first, so that a failure anywhere in it is
retried, or falls back, as a failed ``create()`` is.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import aclosing
from types import TracebackType
from typing import Any, Final, TypeVar

from autogen_core import CancellationToken, Image
from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage, SystemMessage, UserMessage
from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception, wait_none

from .._errors import (
    AllClientsFailedError,
    CircuitOpenError,
    ConfigurationError,
    GiveUpReason,
    ReliabilityError,
    RetriesExhaustedError,
)
from .._pipeline import (
    CreateHandler,
    Layer,
    Pipeline,
    Request,
    StreamHandler,
    StreamItem,
    cut_by_deadline,
    deadline_timer,
)
from .._redaction import log_failure, message_of, redact, redacted_error
from ..providers import describe_client
from ._budget import RetryBudgetState
from ._circuit import CircuitBreaker, counts_as_failure
from ._classify import RETRYABLE_BY_DEFAULT, ErrorKind, classify_error, retry_after, retry_refused
from ._policy import (
    RetryEvent,
    RetryObserver,
    RetryPolicy,
    StopBeforeDeadline,
    StopWhenBudgetSpent,
    get_on_retry_hooks,
    is_testing,
)

__all__ = ["CircuitLayer", "FallbackLayer", "RetryLayer", "cut_by_deadline", "should_fall_back"]

logger = logging.getLogger("autogen_reliability")

_T = TypeVar("_T")
_NO_WAIT = wait_none()


# -- fallback ---------------------------------------------------------------------------------
#
# The primary and each fallback run their own retry and circuit-breaker layers,
# so a fallback is tried only once the client before it has *given up*: its
# retries are exhausted, its circuit is open, it raised a transient error it did
# not retry (its policy's retry_on leaves that kind out, or the server asked for a
# longer wait than it accepts), or the error is one that another model may not
# have (the context is too long for it). Any other error — a bad
# request, a failed authentication, a cancellation — is raised as it is: another
# client would not fix it. When every client failed,
# :class:`~autogen_reliability.AllClientsFailedError` carries each one's error.
# A fallback is sent the call's arguments but for a "model" in extra_create_args,
# which names the model the call asks the primary for (see _for_a_fallback).


# A client that gave up: its retries (a wrapped client's RetriesExhaustedError), its circuit breaker, or it and each
# of its own fallbacks (a wrapped client's AllClientsFailedError). Never retried, always a reason to ask the next.
_GAVE_UP: Final = (RetriesExhaustedError, CircuitOpenError, AllClientsFailedError)


def should_fall_back(error: BaseException, retry_on: frozenset[ErrorKind]) -> bool:
    """Whether ``error`` from one client is a reason to ask the next.

    ``retry_on``: the kinds that say a client is failing, not the request: the transient kinds and those its
    retry policy retries (see :class:`FallbackLayer`).
    """
    if isinstance(error, _GAVE_UP):
        return True
    if not isinstance(error, Exception):
        return False  # cancellation and interpreter exits are never redirected
    kind = classify_error(error)
    # A transient or retried kind that was not retried (left out of retry_on, a Retry-After longer than we accept)
    # counts as given up.
    return kind is ErrorKind.CONTEXT_LENGTH or kind in retry_on


def _for_a_fallback(request: Request, client: ChatCompletionClient) -> Request:
    """``request`` as the fallback ``client`` is sent it: without the ``"model"`` its ``extra_create_args`` name.

    That model is the one the call asks the primary for (AutoGen's clients send it over their own). A fallback
    was made on purpose for a model of its own, maybe of another provider: asked for the primary's, it would
    answer 404 (no such model) or, of the same provider, as the wrong model. Every other argument (temperature,
    seed, user, ...) is the fallback's too. Its attempts then ask for, and are recorded as, its own model.

    JSON mode (``json_output=True``, asked for because the wrapper's ``model_info``, its primary's, says
    ``json_output``) is not sent to a fallback whose ``model_info`` says it has none: AutoGen's clients raise
    ``Model does not support JSON output.`` for it. It is asked for a text answer, which a ``ValidationPolicy``
    checks as JSON as it does any ``json_output=True`` answer. (A ``json_output=<model>`` is adapted per client by
    ``provider_arguments``.)

    Nor are system messages apart from the first run of them (an agent's memory, after the task; a
    ``SocietyOfMindAgent``'s response prompt) sent as such to a fallback whose ``model_info`` does not say
    ``multiple_system_messages``: AutoGen's clients raise ``Multiple and Not continuous system messages are not
    supported`` for them. They are sent as user messages, as AutoGen's agents send them to such a model.
    """
    changes: dict[str, Any] = {}
    arguments = request.extra_create_args
    if "model" in arguments:
        changes["extra_create_args"] = {name: value for name, value in arguments.items() if name != "model"}
    info = client.model_info
    if request.json_output is True and not info.get("json_output", False):
        changes["json_output"] = None
    if not info.get("multiple_system_messages", False):
        messages = _one_run_of_system_messages(request.messages)
        if messages is not None:
            changes["messages"] = messages
    return request.replace(**changes) if changes else request


def _one_run_of_system_messages(messages: Sequence[LLMMessage]) -> list[LLMMessage] | None:
    """``messages`` with each system message after the first run of them made a user message; None if none is."""
    first = next((index for index, message in enumerate(messages) if isinstance(message, SystemMessage)), None)
    if first is None:
        return None
    end = first
    while end < len(messages) and isinstance(messages[end], SystemMessage):
        end += 1
    if not any(isinstance(message, SystemMessage) for message in messages[end:]):
        return None
    return [
        *messages[:end],
        *(
            UserMessage(content=message.content, source="user") if isinstance(message, SystemMessage) else message
            for message in messages[end:]
        ),
    ]


def _not_taken(request: Request, client: ChatCompletionClient, index: int) -> ConfigurationError | None:
    """Why the fallback ``client`` (``fallbacks[index]``) is not asked ``request``, if its ``model_info`` says so.

    An agent offers tools and images as the wrapper's ``model_info``, its primary's, allows; AutoGen's clients
    refuse them before sending (``ValueError: Model does not support function calling``) where their own says
    ``function_calling`` or ``vision`` is False. Raised, that error would end the call, the primary's error lost
    and the next fallback, which may take it, never asked; the fallback is passed over with this reason instead.
    """
    info = client.model_info
    if request.tools and info.get("function_calling") is False:
        asked, key = "the call offers tools", "function_calling"
    elif info.get("vision") is False and any(_has_image(message) for message in request.messages):
        asked, key = "the call has an image", "vision"
    else:
        return None
    return ConfigurationError(
        f"fallbacks[{index}] {describe_client(client)} was not asked: {asked}, and its model_info says {key}=False"
    )


def _has_image(message: LLMMessage) -> bool:
    content = message.content if isinstance(message, UserMessage) else None
    return isinstance(content, list) and any(isinstance(part, Image) for part in content)


def _keepable(error: Exception) -> Exception:
    """``error`` as :class:`AllClientsFailedError` may hold it: a provider's error is redacted, ours are already."""
    return error if isinstance(error, ReliabilityError) else redacted_error(error)


class FallbackLayer(Layer):
    """Sends a call to the next pipeline when the one before it gave up.

    ``retry_on`` is the primary's retry policy's: a kind it retries, and every transient kind whether it retries
    it or not, is a reason to ask the next client once the primary raises it.
    """

    def __init__(self, fallbacks: Sequence[Pipeline], retry_on: AbstractSet[ErrorKind]) -> None:
        self.fallbacks = tuple(fallbacks)
        # A policy that does not retry 503s (retry_on without OVERLOADED) still has a provider that is down: as with
        # retry=None, that is what fallbacks are for. Joined once here, not per call.
        self.retry_on = RETRYABLE_BY_DEFAULT | retry_on

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        errors: list[Exception] = []
        try:
            return await call_next(request)
        except Exception as error:
            if not should_fall_back(error, self.retry_on):
                raise
            errors.append(_keepable(error))
        for index, pipeline in enumerate(self.fallbacks):
            refused = _not_taken(request, pipeline.client, index)
            if refused is not None:
                errors.append(refused)
                continue
            try:
                return await pipeline.create(_for_a_fallback(request, pipeline.client))
            except Exception as error:
                if not should_fall_back(error, self.retry_on):
                    raise
                errors.append(_keepable(error))
        raise self._all_failed(errors)

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        errors: list[Exception] = []
        for index, pipeline in enumerate((None, *self.fallbacks), start=-1):
            started = False
            if pipeline is None:
                stream = call_next(request)
            elif (refused := _not_taken(request, pipeline.client, index)) is not None:
                errors.append(refused)
                continue
            else:
                stream = pipeline.create_stream(_for_a_fallback(request, pipeline.client))
            if request.buffered:
                stream = _read_whole(stream)  # nothing is handed on before its end: a failure in it falls back
            try:
                async with aclosing(stream):
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


# -- retry ------------------------------------------------------------------------------------


class _RetryRun:
    """One logical call's tenacity loop: the policy's strategies composed with this call's deadline and budget."""

    def __init__(self, layer: RetryLayer, request: Request, start: float) -> None:
        policy = layer.policy
        self.policy = policy
        self.request = request
        self.hooks = layer.hooks
        self.clock = policy.clock
        self.start = start
        self.kinds: list[ErrorKind] = []
        self.cut = False  # the deadline cut an attempt short
        self.deadline = StopBeforeDeadline(policy._deadline, start, policy.clock)
        self.budget = (
            StopWhenBudgetSpent(layer.budget, server_paced=policy.respect_retry_after)
            if layer.budget is not None
            else None
        )

    def retrying(self) -> AsyncRetrying:
        # The order of the stops matters: the budget's token is taken only if attempts and deadline allow the retry.
        stop = self.policy._stop_after_attempts | self.deadline
        if self.budget is not None:
            stop = stop | self.budget
        return AsyncRetrying(
            retry=retry_if_exception(self.should_retry),
            wait=_NO_WAIT if is_testing() else self.policy._wait,
            stop=stop,
            sleep=self.sleep,
            before_sleep=self.report,
            reraise=False,
        )

    def should_retry(self, error: BaseException) -> bool:
        if cut_by_deadline(error):
            # The deadline cut this attempt short: it timed out, and the call is over (the timer's cancellation
            # must reach the retry layer, which raises RetriesExhaustedError naming the deadline).
            self.kinds.append(ErrorKind.TIMEOUT)
            self.cut = True
            return False
        kind = classify_error(error)
        self.kinds.append(kind)
        if kind not in self.policy.retry_on or isinstance(error, _GAVE_UP):
            # Given up already: a wrapped client retried as its own policy allows (or asked its fallbacks too), or
            # the circuit is open. Their kinds (UNKNOWN, say) may be in retry_on; a retry would only repeat that.
            return False
        if retry_refused(error):
            return False  # the server said a retry will not help (x-should-retry: false), as the SDK would obey
        # A server that asks for a longer wait than we accept gets its answer at once.
        asked = retry_after(error) if self.policy.respect_retry_after else None
        return asked is None or asked <= self.policy._max_retry_after

    @property
    def reason(self) -> GiveUpReason:
        """Which stop ended the loop: tenacity's ``stop_any`` says only that one did."""
        if self.deadline.fired:
            return "deadline"
        if self.budget is not None and self.budget.fired:
            return "budget"
        return "attempts"

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        try:
            await self._wait(seconds)
        except BaseException:
            # The stops took the retry's token from the budget just before this wait (unless the provider's own
            # Retry-After paces it); cut short (the call cancelled, its deadline passed), the wait makes no retry,
            # and the token is not spent.
            if self.budget is not None and self.budget.spent:
                self.budget.budget.refund()
            raise

    async def _wait(self, seconds: float) -> None:
        waiting = self.policy.sleep(seconds)
        if not inspect.isawaitable(waiting):
            # The policy took it for async (a mock can look so); say which option, not asyncio's TypeError.
            raise ConfigurationError(
                f"RetryPolicy.sleep must be an async function: {self.policy.sleep!r} returned "
                f"{type(waiting).__name__}, which cannot be awaited"
            )
        token = self.request.cancellation_token
        if token is None:
            await waiting
            return
        with _cancelled_by(token):
            await waiting

    def report(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        assert error is not None  # tenacity only sleeps after a failure
        call = self.request.call
        event = RetryEvent(call, call.attempts, self.kinds[-1], error, state.upcoming_sleep, self.elapsed())
        # Read now, not when the layer was built: set_on_retry_hooks() applies to clients that exist already.
        for hook in (*get_on_retry_hooks(), *self.hooks):
            try:
                hook(event)
            except Exception:
                log_failure(logger, "retry hook %r failed", hook)

    def elapsed(self) -> float:
        return self.clock() - self.start

    def exhausted(self, error: RetryError) -> RetriesExhaustedError:
        last = error.last_attempt.exception()
        reason = self.reason
        deadline = self.policy._deadline if reason == "deadline" else None
        return RetriesExhaustedError(
            len(self.kinds),
            self.kinds,
            reason,
            redact(message_of(last) if last is not None else "None"),
            deadline=deadline,
        )

    async def attempts(self, first_error: Exception, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Judges ``first_error``, then retries ``attempt`` as the policy allows."""
        pending: Exception | None = first_error
        try:
            async for state in self.retrying():
                with state:
                    if pending is not None:
                        error, pending = pending, None
                        raise error  # the first attempt's failure, for tenacity to judge
                    return await attempt()
        except RetryError as exhausted:
            gave_up = exhausted
        else:
            raise AssertionError("unreachable: tenacity returns, raises, or gives up")  # pragma: no cover
        # Raised outside the handler, so that no __context__ leads back to the provider's error as it was:
        # the cause is a copy with the secrets a provider may echo (its key) removed.
        last = gave_up.last_attempt.exception()
        raise self.exhausted(gave_up) from (redacted_error(last) if last is not None else None)


@contextlib.contextmanager
def _cancelled_by(token: CancellationToken) -> Iterator[None]:
    """While inside, cancelling ``token`` cancels the task that runs the call, wherever ``cancel()`` is called.

    The wait runs in the call's own task, not in one of its own linked to the token (``token.link_future``, as
    AutoGen links its requests): a loop closed during the wait (a script's, a test framework's) left that task
    pending, reported "Task was destroyed but it is pending!" once collected, and the token, which holds what it
    links for good, raised ``RuntimeError: Event loop is closed`` from a later ``cancel()``, before cancelling
    the rest of what it held. Cancelled so, the call raises ``CancelledError`` as before, and its task is not
    left cancelling (``uncancel``): it goes on as a task whose awaited future was cancelled does.
    """
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - a retry layer always runs in a task
        yield
        return
    # Weak: the token holds its callbacks as long as it lives (a team's run, maybe more), not the call's task.
    waiter, loop = weakref.ref(task), weakref.ref(task.get_loop())
    inside, cancelled = True, False

    def cancel_now() -> None:
        nonlocal cancelled
        current = waiter()
        if inside and not cancelled and current is not None:
            cancelled = True
            current.cancel()

    def on_cancel() -> None:  # on the thread that cancelled the token
        running = loop()
        if not inside or running is None or running.is_closed():
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is running:
            cancel_now()
        else:
            with contextlib.suppress(RuntimeError):  # closed in between
                running.call_soon_threadsafe(cancel_now)

    token.add_callback(on_cancel)
    try:
        yield
    finally:
        inside = False
        if cancelled:
            task.uncancel()


class _Deadline:
    """``asyncio.timeout(seconds)``, its timer shown to the circuit layer while it runs."""

    __slots__ = ("_shown", "timer")

    def __init__(self, seconds: float) -> None:
        self.timer = asyncio.timeout(seconds)

    async def __aenter__(self) -> asyncio.Timeout:
        await self.timer.__aenter__()
        self._shown = deadline_timer.set(self.timer)
        return self.timer

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # ValueError: not in the context it was set in. The garbage collector is closing a call its event loop
        # was closed with (loop.stop(), then close()); that context is gone, with nothing to put back.
        try:  # noqa: SIM105  (contextlib.suppress is three calls more, on every call)
            deadline_timer.reset(self._shown)
        except ValueError:
            pass
        await self.timer.__aexit__(kind, error, traceback)  # turns its own cancellation into TimeoutError


class RetryLayer(Layer):
    """Applies a :class:`~._policy.RetryPolicy` to every call that passes through it.

    The first attempt runs outside tenacity: a call that succeeds at once, the
    common case, pays for no retry machinery, only for the deadline's timer. A
    first attempt that fails hands its error to the tenacity loop, which decides
    as for any other attempt.

    The deadline bounds the attempts as well as the waits: when it passes, the
    attempt in flight is cancelled, a timeout (``TIMEOUT`` in the error's kinds,
    its usage row's ``error_kind``), and
    :class:`~autogen_reliability.RetriesExhaustedError` names the deadline. A
    stream is bounded until its first chunk is handed on; after that the
    consumer reads at its own pace and retrying is over. A buffered stream
    (``Request.buffered``) is handed on only once read to its end, so the
    deadline and the retries cover all of it. The timer of the
    attempt in flight is the event loop's (``asyncio.timeout``); the policy's
    clock decides whether a wait would pass the deadline, and its sleep waits.
    """

    def __init__(
        self, policy: RetryPolicy, budget: RetryBudgetState | None = None, hooks: Iterable[RetryObserver] = ()
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.hooks = tuple(hooks)
        self.deadline = policy._deadline

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        start = self._start()
        run: _RetryRun | None = None
        try:
            async with _Deadline(self.deadline) as scope:
                try:
                    return await call_next(request)
                except Exception as error:
                    first_error = error
                run = _RetryRun(self, request, start)
                return await run.attempts(first_error, lambda: call_next(request))
        except TimeoutError:
            if not scope.expired():
                raise  # a TimeoutError of the provider's, not our deadline
        raise self._out_of_time(run) from None

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        start = self._start()
        run: _RetryRun | None = None
        try:
            # Entered and left within the first step of this generator: the timer belongs to one task.
            async with _Deadline(self.deadline) as scope:
                try:
                    stream, read = await _open(call_next, request)
                except Exception as error:
                    first_error: Exception | None = error
                else:
                    first_error = None
                if first_error is not None:
                    run = _RetryRun(self, request, start)
                    stream, read = await run.attempts(first_error, lambda: _open(call_next, request))
        except TimeoutError:
            if not scope.expired():
                raise
            out_of_time = True
        else:
            out_of_time = False
        if out_of_time:
            raise self._out_of_time(run) from None
        # From here on the consumer has output: errors propagate, never retried.
        if stream is None:  # read to its end: buffered, or empty
            for item in read:
                yield item
            return
        async with aclosing(stream):
            yield read[0]
            async for item in stream:
                yield item

    def _start(self) -> float:
        if self.budget is not None:
            self.budget.deposit()
        return self.policy.clock()

    def _out_of_time(self, run: _RetryRun | None) -> RetriesExhaustedError:
        """The error for a call whose deadline passed while an attempt (or, rarely, a wait) was under way."""
        # The attempt in flight timed out (the first, or one tenacity ran); else a wait was under way.
        if run is None or not run.kinds:
            in_flight, kinds = True, [ErrorKind.TIMEOUT]
        else:
            in_flight, kinds = run.cut, run.kinds
        last = "no answer before the deadline"
        return RetriesExhaustedError(len(kinds), kinds, "deadline", last, deadline=self.deadline, in_flight=in_flight)


async def _open(
    call_next: StreamHandler, request: Request
) -> tuple[AsyncGenerator[StreamItem, None] | None, list[StreamItem]]:
    """Starts a stream and reads what must be read before anything is handed on; closes the stream on failure.

    That is its first item, or all of a buffered stream. Returns the stream, still open, and the item read,
    or ``None`` (the stream is over) and every item: none for an empty stream.
    """
    stream = call_next(request)
    try:
        if request.buffered:
            async with aclosing(stream):
                return None, [item async for item in stream]
        return stream, [await anext(stream)]
    except StopAsyncIteration:
        return None, []
    except BaseException:
        await stream.aclose()
        raise


async def _read_whole(stream: AsyncGenerator[StreamItem, None]) -> AsyncGenerator[StreamItem, None]:
    """``stream``'s items, the first handed on only once the last was read (and the stream closed).

    For a stream a layer outside holds back until its end anyway: whatever fails, fails before anything
    was handed on, and a failed attempt's chunks are dropped with it, never joined to the next one's.
    """
    async with aclosing(stream):
        items = [item async for item in stream]
    for item in items:
        yield item


# -- circuit breaker --------------------------------------------------------------------------


def _judge(error: BaseException) -> bool | None:
    """What ``error`` says of the provider's health; an attempt our own deadline cut short timed out.

    With the defaults (the SDK's timeout 600 s, the deadline 60 s) the deadline is what ends a request to a
    provider that accepts connections and never answers: were that not counted, it would never open the circuit.
    """
    if isinstance(error, asyncio.CancelledError):
        return True if cut_by_deadline(error) else None
    return counts_as_failure(error)


class CircuitLayer(Layer):
    """Guards every attempt with the circuit breaker of the client it goes to.

    An attempt cut short by the retry layer's deadline counts as a timeout; one the caller cancelled, or one a
    client-side cache answered, as nothing.
    """

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        ticket = self.breaker.acquire()
        try:
            result = await call_next(request)
        except BaseException as error:
            self.breaker.record(_judge(error), ticket)
            raise
        # An answer from a client-side cache (AutoGen's ChatCompletionCache) sent no request: it judges nothing.
        self.breaker.record(None if result.cached else False, ticket)
        return result

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        ticket = self.breaker.acquire()
        outcome: bool | None = None
        answered = False
        try:
            async with aclosing(call_next(request)) as stream:
                async for item in stream:
                    answered = isinstance(item, CreateResult)
                    # The provider answered, unless a client-side cache did (its result says so: no request).
                    outcome = None if answered and item.cached else False  # type: ignore[union-attr]
                    yield item
        except BaseException as error:
            # Closed once its result was read (a `break`), it was a success, as its usage row says. Before that, a
            # stream cut off half-way is the provider's failure, as it is before its first chunks; a consumer that
            # stops reading (GeneratorExit) or is cancelled says nothing of the provider's health.
            if not answered:
                outcome = _judge(error)
            raise
        finally:
            self.breaker.record(outcome, ticket)
