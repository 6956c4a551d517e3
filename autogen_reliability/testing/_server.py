"""A real HTTP server that speaks the OpenAI Chat Completions wire protocol.

`FakeOpenAIServer` listens on ``127.0.0.1`` (a random free port), runs on a
background thread and answers ``POST /v1/chat/completions`` from a FIFO script
of `FakeReply` objects, so tests can drive the real ``openai`` SDK and AutoGen's
``OpenAIChatCompletionClient`` over real HTTP, including the SDK's own retry,
timeout and streaming code paths. Every request is recorded as a
`RecordedRequest` before it is answered.

Example:
    ```python
    import openai

    from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

    with FakeOpenAIServer() as server:
        server.enqueue(
            FakeReply.error(429, headers={"retry-after-ms": "10"}),
            FakeReply.text("Hello!", usage=FakeUsage(prompt_tokens=12, completion_tokens=3)),
        )
        client = openai.OpenAI(api_key="sk-test", base_url=server.base_url)
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
        assert completion.choices[0].message.content == "Hello!"
        assert server.request_count == 2  # the SDK retried the 429 by itself
    ```

Routes:
    * ``POST /v1/chat/completions``: the next scripted reply (see `FakeReply`),
      else the server's ``default``, else HTTP 400 explaining that the script
      ran out.
    * ``GET /v1/models`` and ``GET /v1/models/{id}``: the server's one model. The
      listing can be scripted too (`enqueue_models`): an error, a reset, or a
      listing that waits (``delay``) or hangs until `release` (``hold_after_chunks=0``).
    * Anything else: HTTP 404 with an OpenAI-style error body.

The ``/v1`` prefix is optional on every route. Azure OpenAI's paths are served
as the routes they stand for: ``POST /openai/deployments/{deployment}/chat/completions``
as a chat completion, ``GET /openai/models`` as the listing, whatever their
``api-version``; pass `root_url` as ``azure_endpoint``.

The server is built in layers, each a module of this package: the script and
the records (`._replies`), the wire format (`._wire`), the HTTP plumbing
(`._http`), and this module, which owns the lifecycle, the script queue and the
records, and lets tests wait for requests (`FakeOpenAIServer.wait_for_requests`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self, cast

from .._errors import is_finite, shown_number
from ._http import MODELS_PATHS, FakeHTTPServer, ScriptError, openai_route
from ._replies import FakeReply, RecordedRequest, ReplyFactory, describe_message
from ._wire import Completion, error_body, estimate_usage, snapshot_name

__all__ = ["FakeOpenAIServer"]

# How often serve_forever() checks for shutdown; this bounds how long stop() takes.
_POLL_INTERVAL: Final = 0.05
_MAX_PORT: Final = 65535


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP/1.1 server on 127.0.0.1, scripted with `FakeReply` objects.

    The server runs on a daemon thread, so it serves sync and async clients alike.
    Use it as a context manager (``with`` or ``async with``), or call `start` and
    `stop` yourself.

    Each ``POST /v1/chat/completions`` consumes the next scripted reply (FIFO, see
    `enqueue`). When the script is empty the ``default`` is used: a `FakeReply`,
    or a callable that receives the `RecordedRequest` and returns one (if it
    raises, the client gets HTTP 500 with ``x-should-retry: false`` so neither
    the SDK nor a wrapper retries). With no default, the server answers HTTP 400 (which the SDK
    does not retry) with a message saying the script ran out.

    Requests whose body is not a JSON object are answered with HTTP 400 and do not
    consume a scripted reply.

    Completions report the model as the real API does: an alias comes back as its
    dated snapshot (``gpt-4o-mini`` as ``gpt-4o-mini-2024-07-18``, the snapshot
    AutoGen's client expects; it warns "Resolved model mismatch" otherwise). Other
    names are echoed. ``model_aliases`` and a reply's ``model`` override this.

    Tests synchronise with the server through events, not sleeps:
    `wait_for_requests` (or `wait_for_requests_async`) returns once requests have
    arrived, and a reply with ``hold_after_chunks`` waits at that point of its
    answer until `release` is called.

    Attributes:
        model: The model listed by ``/v1/models`` and echoed when a request names none; may be
            reassigned (a value that is not a non-empty string is refused, as by the constructor).
        default: The reply used when the script is empty; may be reassigned at any time
            (a value that is not a `FakeReply`, a callable or None is refused, with a `TypeError`).
        model_aliases: Requested model name -> model name reported in responses; may be reassigned
            (a value that is not a mapping of non-empty strings is refused, as by the constructor), not
            changed in place (it is read-only).
    """

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        default: FakeReply | ReplyFactory | None = None,
        *,
        model_aliases: Mapping[str, str] | None = None,
        port: int = 0,
    ) -> None:
        """Create a stopped server.

        Args:
            model: The model listed by ``/v1/models`` and echoed when a request names none.
            default: The reply used when the script is empty (see the class docs).
            model_aliases: Requested model name -> model name to report in responses, e.g.
                ``{"gpt-4o-mini": "gpt-4o-mini-2024-07-18"}`` as the real API does.
            port: Port to listen on, from 0 to 65535; 0 picks a free one.

        Raises:
            TypeError: If ``model`` is not a string, ``model_aliases`` not a mapping of strings to
                strings, ``port`` not an int, or ``default`` not a `FakeReply`, a callable or None.
            ValueError: If ``model`` or a name in ``model_aliases`` is blank, or ``port`` is not
                from 0 to 65535.
        """
        # Checked here: a wrong one would fail only at start() (the port) or inside the server, at a request.
        self.model = model
        self.default = default
        self.model_aliases = {} if model_aliases is None else model_aliases
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _MAX_PORT:
            error = ValueError if isinstance(port, int) and not isinstance(port, bool) else TypeError
            raise error(f"port must be an int from 0 to {_MAX_PORT} (0: a free one), got {port!r:.80}")
        self._port = port
        self._lock = threading.Lock()
        # Both share the lock that guards the records and the script: a waiter sees a consistent count.
        self._arrived = threading.Condition(self._lock)  # a chat-completions request was recorded
        self._released = threading.Condition(self._lock)  # release() was called, or the server is stopping
        self._async_waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._releases = 0
        self._queue: deque[FakeReply] = deque()
        self._models_queue: deque[FakeReply] = deque()
        self._requests: list[RecordedRequest] = []
        self._all_requests: list[RecordedRequest] = []
        self._unexpected: list[RecordedRequest] = []
        self._tool_calls_served = 0
        self._connections_opened = 0
        self._created = int(time.time())
        # Set when the answers under way are to end: the server stops, or is reset. Each request keeps the one
        # of its time (`_record`), so that a reset ends the earlier requests' delays and holds, not the later ones'.
        self._ended = threading.Event()
        self._httpd: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> Self:
        """Bind the port and start serving on a background thread.

        The port is bound and listening when this returns. A stopped server may
        be started again (on a new port unless one was given); its script and
        recorded requests are kept.

        Returns:
            The server itself, so ``server = FakeOpenAIServer().start()`` works.

        Raises:
            RuntimeError: If the server is already running.
        """
        with self._lock:
            if self._httpd is not None:
                raise RuntimeError("FakeOpenAIServer is already running")
            self._ended = threading.Event()
            httpd = FakeHTTPServer(("127.0.0.1", self._port), self)
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name=f"FakeOpenAIServer:{httpd.server_port}",
                daemon=True,
            )
            self._httpd, self._thread = httpd, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket and every open connection.

        Returns within about 50 ms (``benchmarks/bench_fake_server.py``) even when
        clients hold idle keep-alive connections or a reply is sleeping on ``delay``
        or held. Calling it again, or on a server that never started, does nothing.
        """
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None or thread is None:
            return
        with self._lock:
            self._end_answers()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # stop() blocks for up to one poll interval; keep that off the event loop.
        await asyncio.to_thread(self.stop)

    @property
    def running(self) -> bool:
        """Whether the server is currently serving."""
        return self._httpd is not None

    @property
    def port(self) -> int:
        """The bound TCP port.

        Raises:
            RuntimeError: If the server is not running.
        """
        httpd = self._httpd
        if httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running; call start() or use it as a context manager")
        return httpd.server_port

    @property
    def base_url(self) -> str:
        """The URL to pass as ``base_url`` to OpenAI clients, e.g. ``"http://127.0.0.1:54321/v1"``.

        Raises:
            RuntimeError: If the server is not running.
        """
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The server's root, ``"http://127.0.0.1:54321"``: an Azure OpenAI client's ``azure_endpoint``.

        Raises:
            RuntimeError: If the server is not running.
        """
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to hand to a client, ending in ``/v1``: the same as `base_url` (the SDK's name for it).

        Raises:
            RuntimeError: If the server is not running.
        """
        return self.base_url

    @property
    def model(self) -> str:
        """The model listed by ``/v1/models`` and echoed when a request names none."""
        return self._model

    @model.setter
    def model(self, model: str) -> None:
        if not isinstance(model, str) or not model.strip():
            error = ValueError if isinstance(model, str) else TypeError
            raise error(f"model must be a non-empty string such as 'gpt-4o-mini', got {model!r:.80}")
        self._model = model

    @property
    def model_aliases(self) -> Mapping[str, str]:
        """Requested model name -> model name reported in responses; read-only (assign a new mapping to change it)."""
        return self._model_aliases

    @model_aliases.setter
    def model_aliases(self, model_aliases: Mapping[str, str]) -> None:
        if not isinstance(model_aliases, Mapping):
            raise TypeError(
                "model_aliases must be a mapping of requested model names to reported ones, such as "
                f"{{'gpt-4o-mini': 'gpt-4o-mini-2024-07-18'}}, got {model_aliases!r:.80}"
            )
        for requested, reported in model_aliases.items():
            if not all(isinstance(name, str) and name.strip() for name in (requested, reported)):
                error = ValueError if isinstance(requested, str) and isinstance(reported, str) else TypeError
                raise error(
                    "model_aliases maps requested model names to reported ones (non-empty strings), "
                    f"got {requested!r:.80}: {reported!r:.80}"
                )
        # Read-only: a change in place would pass by the checks above.
        self._model_aliases: Mapping[str, str] = MappingProxyType(dict(model_aliases))

    @property
    def default(self) -> FakeReply | ReplyFactory | None:
        """The reply used when the script is empty (see the class docs)."""
        return self._default

    @default.setter
    def default(self, default: FakeReply | ReplyFactory | None) -> None:
        # Checked here: a wrong one would fail only when the script runs out, inside the server, as an HTTP 500.
        if not (default is None or isinstance(default, FakeReply) or callable(default)):
            hint = f" (FakeReply.text({default!r}) answers with that text)" if isinstance(default, str) else ""
            raise TypeError(
                "default must be a FakeReply, a function of the RecordedRequest returning one, or None, "
                f"got {default!r:.80}{hint}"
            )
        self._default = default

    # ---- script and records

    def enqueue(self, *replies: FakeReply) -> None:
        """Append replies to the script; each chat-completions request consumes the oldest one.

        Args:
            *replies: The replies, in the order they should be served.

        Raises:
            TypeError: If something other than a `FakeReply` is passed.
        """
        for reply in replies:
            if not isinstance(reply, FakeReply):
                raise TypeError(f"enqueue() takes FakeReply objects, got {type(reply).__name__}")
        with self._lock:
            self._queue.extend(replies)

    def enqueue_models(self, *replies: FakeReply) -> None:
        """Script the answers to ``GET /v1/models`` (the listing); each listing request consumes the oldest one.

        With the script empty, the listing is answered as usual. An ``error``, ``reset`` or
        ``malformed`` reply is served as it is for a chat completion; a completion reply
        (``FakeReply()``, its content is not used) answers with the usual listing after its
        ``delay``, and with ``hold_after_chunks=0`` only once `release` is called: a provider
        that hangs, to test a client's timeout. Stopping the server resets a held listing.

        Args:
            *replies: The replies, in the order they should be served.

        Raises:
            TypeError: If something other than a `FakeReply` is passed.
        """
        for reply in replies:
            if not isinstance(reply, FakeReply):
                raise TypeError(f"enqueue_models() takes FakeReply objects, got {type(reply).__name__}")
        with self._lock:
            self._models_queue.extend(replies)

    @property
    def models_requests(self) -> list[RecordedRequest]:
        """A snapshot of every ``GET /v1/models`` (listing) request received, oldest first."""
        with self._lock:
            return [request for request in self._all_requests if openai_route(request.path) in MODELS_PATHS]

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every chat-completions request received, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def all_requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received on any path (models, unknown paths too), oldest first."""
        with self._lock:
            return list(self._all_requests)

    @property
    def unexpected_requests(self) -> list[RecordedRequest]:
        """The chat-completions requests that found no scripted reply and no ``default`` (each got HTTP 400).

        The client saw an error, but a team, a retry or an ``except`` may have swallowed it: the
        pytest fixture ``fake_openai_server`` fails the test if any are left here.
        """
        with self._lock:
            return list(self._unexpected)

    @property
    def request_count(self) -> int:
        """How many chat-completions requests were received."""
        with self._lock:
            return len(self._requests)

    def wait_for_requests(self, n: int = 1, timeout: float | None = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` chat-completions requests have arrived, then return them.

        A request is recorded when it has arrived, before it is answered, so this
        returns while a ``delay``-ed or held reply is still pending: the moment to
        cancel a call, stop the server or look at what was sent. From a coroutine
        whose event loop also runs the client, use `wait_for_requests_async`
        instead: this call would block that loop, and the request would never be
        sent.

        Args:
            n: How many requests (counted as `request_count` counts them, since
                the server was created or last `reset`).
            timeout: Seconds to wait at most; None (or ``math.inf``) waits for ever.

        Returns:
            A snapshot of every chat-completions request received, oldest first
            (at least ``n``), as `requests` gives it.

        Raises:
            TimeoutError: ``timeout`` passed first; the message says how many arrived, and
                that the wait stopped this thread's event loop if one runs here.
            ValueError: If ``n`` is negative or ``timeout`` is negative or not a number.
        """
        _check_wait(n, timeout)
        # A wait longer than the platform's lock can time (math.inf, or some 292 years) has no end.
        limit = None if timeout is None or timeout >= threading.TIMEOUT_MAX else timeout
        with self._arrived:
            if self._arrived.wait_for(lambda: len(self._requests) >= n, limit):
                return list(self._requests)
            message = self._too_few(n, timeout)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise TimeoutError(message) from None
        # Called from a coroutine: the loop that runs it (and likely the client) stood still all along.
        raise TimeoutError(
            f"{message}; this thread runs an event loop, which this blocking wait stopped: a client on it could "
            "not send. In a coroutine, await wait_for_requests_async(n) instead."
        )

    async def wait_for_requests_async(
        self,
        n: int = 1,
        # A parameter, as in wait_for_requests, so that on expiry the error can say how many requests arrived.
        timeout: float | None = 5.0,  # noqa: ASYNC109
    ) -> list[RecordedRequest]:
        """`wait_for_requests` for a coroutine: waits without blocking the event loop.

        The server's thread wakes the waiting loop when the ``n``-th request is
        recorded; nothing polls. Cancelling the wait is safe.

        Args:
            n: See `wait_for_requests`.
            timeout: See `wait_for_requests`.

        Returns:
            See `wait_for_requests`.

        Raises:
            TimeoutError: ``timeout`` passed first; the message says how many arrived.
            ValueError: If ``n`` is negative or ``timeout`` is negative or not a number.
        """
        _check_wait(n, timeout)
        loop = asyncio.get_running_loop()
        with self._lock:
            if len(self._requests) >= n:
                return list(self._requests)
            waiter = (n, loop, loop.create_future())
            self._async_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[2], timeout)
        except TimeoutError:
            with self._lock:
                message = self._too_few(n, timeout)
            raise TimeoutError(message) from None
        finally:
            with self._lock:
                if waiter in self._async_waiters:
                    self._async_waiters.remove(waiter)
        return self.requests

    def release(self, count: int = 1) -> None:
        """Let ``count`` replies scripted with ``hold_after_chunks`` go on.

        Each held reply uses up one release; a release given before a reply
        reaches its hold is kept for it, so the order of ``release()`` and the
        server's progress does not matter.

        Args:
            count: How many holds to release.

        Raises:
            ValueError: If ``count`` is below 1.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        with self._lock:
            self._releases += count
            self._released.notify_all()

    @property
    def connection_count(self) -> int:
        """How many TCP connections clients have opened; stays at 1 for sequential keep-alive requests."""
        with self._lock:
            return self._connections_opened

    @property
    def pending(self) -> int:
        """How many scripted replies have not been served yet."""
        with self._lock:
            return len(self._queue)

    @property
    def remaining(self) -> list[FakeReply]:
        """The scripted replies not served yet, oldest first (`pending` counts them)."""
        with self._lock:
            return list(self._queue)

    @property
    def models_remaining(self) -> list[FakeReply]:
        """The replies scripted with `enqueue_models` not served yet, oldest first (`remaining` has the others)."""
        with self._lock:
            return list(self._models_queue)

    def reset(self) -> None:
        """Forget the script, every recorded request and unused releases; restart ids, indices and counters at zero.

        Answers still under way for the requests received so far end as `stop` ends them: a reply
        waiting on its ``delay`` or held (``hold_after_chunks``) resets its connection instead of
        answering later, and a `release` given after the reset goes to the replies scripted after it.
        A server shared by several tests so starts each one clean.
        """
        with self._lock:
            self._end_answers()
            self._ended = threading.Event()
            self._queue.clear()
            self._models_queue.clear()
            self._requests.clear()
            self._all_requests.clear()
            self._unexpected.clear()
            self._tool_calls_served = 0
            self._connections_opened = 0
            self._releases = 0

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"<FakeOpenAIServer {where} model={self.model!r} pending={self.pending} requests={self.request_count}>"

    # ---- used by the request handler

    def _connection_opened(self) -> None:
        with self._lock:
            self._connections_opened += 1

    def _record(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, *, is_chat: bool
    ) -> tuple[RecordedRequest, FakeReply | None, int, threading.Event]:
        """Record a request and take the next scripted reply of a well-formed chat completion or a model listing.

        Both happen under one lock so concurrent requests get replies in arrival order.

        Returns:
            The recorded request, the scripted reply (None if none applies), the 1-based
            number of this chat-completions request (0 for other requests), and the event set
            when its answer is to end (the server stops or is reset).
        """
        try:
            parsed = _json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        body = cast("dict[str, Any]", parsed) if isinstance(parsed, dict) else None
        with self._lock:
            request = RecordedRequest(
                method=method,
                path=path,
                headers=headers,
                body=body,
                raw=raw,
                received_at=datetime.now(UTC),
                index=len(self._all_requests),
            )
            self._all_requests.append(request)
            ended = self._ended
            if openai_route(path) in MODELS_PATHS and method == "GET":
                return request, self._models_queue.popleft() if self._models_queue else None, 0, ended
            if not is_chat or method != "POST":
                return request, None, 0, ended
            self._requests.append(request)
            self._request_arrived()
            reply = self._queue.popleft() if body is not None and self._queue else None
            return request, reply, len(self._requests), ended

    def _request_arrived(self) -> None:
        """Wake whoever waits for this many requests; called with the lock held."""
        self._arrived.notify_all()
        count = len(self._requests)
        for waiter in [waiter for waiter in self._async_waiters if waiter[0] <= count]:
            self._async_waiters.remove(waiter)
            _, loop, future = waiter
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future)

    def _too_few(self, n: int, timeout: float | None) -> str:
        """The message of a wait that timed out; called with the lock held."""
        arrived = len(self._requests)
        return (
            f"FakeOpenAIServer: waited {timeout:g} s for {n} chat-completions request{'s' if n != 1 else ''}, "
            f"{arrived} arrived ({len(self._queue)} scripted replies left)"
        )

    def _end_answers(self) -> None:
        """End the delays and holds of the requests received so far; called with the lock held."""
        self._ended.set()
        self._released.notify_all()

    def _pause(self, seconds: float, ended: threading.Event) -> bool:
        # A wait longer than the platform's lock can time (math.inf, or some 292 years) waits for the end.
        return ended.wait(None if seconds >= threading.TIMEOUT_MAX else seconds)

    def _hold(self, ended: threading.Event) -> bool:
        with self._lock:
            self._released.wait_for(lambda: self._releases > 0 or ended.is_set())
            if ended.is_set():  # before taking a release: it belongs to a reply of the server's present
                return True
            self._releases -= 1
            return False

    def _default_reply(self, request: RecordedRequest, ordinal: int) -> FakeReply:
        default = self.default
        if isinstance(default, FakeReply):
            return default
        if default is None:
            with self._lock:
                self._unexpected.append(request)
            last = describe_message(request.messages[-1]) if request.messages else "none"
            message = (
                f"FakeOpenAIServer: no scripted reply left for request #{ordinal}; "
                f"script one with enqueue(...) or pass default=... (its last message: {last})"
            )
            raise ScriptError(400, error_body(message, "invalid_request_error", code="no_scripted_reply"))
        # A failing factory is a bug in the test, not something for the SDK to retry.
        no_retry = {"x-should-retry": "false"}
        try:
            reply = default(request)
        except Exception as exc:
            message = f"FakeOpenAIServer: default reply factory raised {type(exc).__name__}: {exc}"
            raise ScriptError(500, error_body(message, "server_error"), no_retry) from exc
        if not isinstance(reply, FakeReply):
            message = f"FakeOpenAIServer: default reply factory returned {type(reply).__name__}, not FakeReply"
            raise ScriptError(500, error_body(message, "server_error"), no_retry)
        return reply

    def _completion(self, request: RecordedRequest, reply: FakeReply, ordinal: int) -> Completion:
        with self._lock:
            first = self._tool_calls_served + 1
            self._tool_calls_served += len(reply.calls)
        calls = tuple((f"call_{first + i}", name, arguments) for i, (name, arguments) in enumerate(reply.calls))
        requested = request.model or self.model
        return Completion(
            id=f"chatcmpl-fake-{ordinal}",
            created=int(time.time()),
            model=reply.model or self.model_aliases.get(requested) or snapshot_name(requested),
            content=reply.content,
            calls=calls,
            finish_reason=reply.finish_reason,
            usage=reply.usage or estimate_usage(request, reply),
            service_tier=reply.service_tier or _served_tier(request),
        )

    def _model_object(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": self._created, "owned_by": "fake"}


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # not cancelled or timed out meanwhile
        future.set_result(None)


def _check_wait(n: int, timeout: float | None) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (is_finite(timeout) or timeout == math.inf)
        or timeout < 0
    ):
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {shown_number(timeout)}")


def _served_tier(request: RecordedRequest) -> str:
    """The tier the real API reports for a request: the one it asked for, ``"default"`` for none or ``"auto"``."""
    asked = request.body.get("service_tier") if request.body is not None else None
    return asked if isinstance(asked, str) and asked and asked != "auto" else "default"
