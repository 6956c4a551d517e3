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
    * ``GET /v1/models`` and ``GET /v1/models/{id}``: the server's one model.
    * Anything else: HTTP 404 with an OpenAI-style error body.

The ``/v1`` prefix is optional on every route.

The server is built in layers, each a module of this package: the script and
the records (`._replies`), the wire format (`._wire`), the HTTP plumbing
(`._http`), and this module, which owns the lifecycle, the script queue and the
records.
"""

from __future__ import annotations

import asyncio
import json as _json
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self, cast

from ._http import FakeHTTPServer, ScriptError
from ._replies import FakeReply, RecordedRequest, ReplyFactory
from ._wire import Completion, error_body, estimate_usage, snapshot_name

__all__ = ["FakeOpenAIServer"]

# How often serve_forever() checks for shutdown; this bounds how long stop() takes.
_POLL_INTERVAL: Final = 0.05


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP/1.1 server on 127.0.0.1, scripted with `FakeReply` objects.

    The server runs on a daemon thread, so it serves sync and async clients alike.
    Use it as a context manager (``with`` or ``async with``), or call `start` and
    `stop` yourself.

    Each ``POST /v1/chat/completions`` consumes the next scripted reply (FIFO, see
    `enqueue`). When the script is empty the ``default`` is used: a `FakeReply`,
    or a callable that receives the `RecordedRequest` and returns one (if it
    raises, the client gets HTTP 500 with ``x-should-retry: false`` so the SDK
    does not retry). With no default, the server answers HTTP 400 (which the SDK
    does not retry) with a message saying the script ran out.

    Requests whose body is not a JSON object are answered with HTTP 400 and do not
    consume a scripted reply.

    Completions report the model as the real API does: an alias comes back as its
    dated snapshot (``gpt-4o-mini`` as ``gpt-4o-mini-2024-07-18``, the snapshot
    AutoGen's client expects; it warns "Resolved model mismatch" otherwise). Other
    names are echoed. ``model_aliases`` and a reply's ``model`` override this.

    Attributes:
        model: The model listed by ``/v1/models`` and echoed when a request names none.
        default: The reply used when the script is empty; may be reassigned at any time.
        model_aliases: Requested model name -> model name reported in responses.
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
            port: Port to listen on; 0 picks a free one.
        """
        self.model = model
        self.default = default
        self.model_aliases: Mapping[str, str] = dict(model_aliases or {})
        self._port = port
        self._lock = threading.Lock()
        self._queue: deque[FakeReply] = deque()
        self._requests: list[RecordedRequest] = []
        self._all_requests: list[RecordedRequest] = []
        self._tool_calls_served = 0
        self._connections_opened = 0
        self._created = int(time.time())
        self._stopping = threading.Event()
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
            self._stopping = threading.Event()
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

        Returns within about 50 ms even when clients hold idle keep-alive
        connections or a reply is sleeping on ``delay``. Calling it again, or on a
        server that never started, does nothing.
        """
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None or thread is None:
            return
        self._stopping.set()
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
    def request_count(self) -> int:
        """How many chat-completions requests were received."""
        with self._lock:
            return len(self._requests)

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

    def reset(self) -> None:
        """Forget the script and every recorded request, and restart ids, indices and counters from zero."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._all_requests.clear()
            self._tool_calls_served = 0
            self._connections_opened = 0

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"<FakeOpenAIServer {where} model={self.model!r} pending={self.pending} requests={self.request_count}>"

    # ---- used by the request handler

    def _connection_opened(self) -> None:
        with self._lock:
            self._connections_opened += 1

    def _record(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, *, is_chat: bool
    ) -> tuple[RecordedRequest, FakeReply | None, int]:
        """Record a request and, for a well-formed chat completion, take the next scripted reply.

        Both happen under one lock so concurrent requests get replies in arrival order.

        Returns:
            The recorded request, the scripted reply (None if none applies), and the 1-based
            number of this chat-completions request (0 for other requests).
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
            if not is_chat or method != "POST":
                return request, None, 0
            self._requests.append(request)
            reply = self._queue.popleft() if body is not None and self._queue else None
            return request, reply, len(self._requests)

    def _pause(self, seconds: float) -> bool:
        return self._stopping.wait(seconds)

    def _default_reply(self, request: RecordedRequest, ordinal: int) -> FakeReply:
        default = self.default
        if isinstance(default, FakeReply):
            return default
        if default is None:
            message = (
                f"FakeOpenAIServer: no scripted reply left for request #{ordinal}; "
                "script one with enqueue(...) or pass default=..."
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
        )

    def _model_object(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": self._created, "owned_by": "fake"}
