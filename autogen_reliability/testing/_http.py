"""HTTP plumbing: reading requests, routing them, and writing answers byte by byte, with their delays.

`FakeHTTPServer` is a stdlib ``ThreadingHTTPServer`` (one thread per connection,
HTTP/1.1 keep-alive) whose handler frames every response itself, so it can send
exactly what a test scripted: a status and headers, a body cut in half, a stream
paced by ``chunk_delay`` or held until released, a TCP reset. What to answer
comes from its owner, the `Backend` (`FakeOpenAIServer`); how a completion looks
on the wire comes from `._wire`.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol, cast
from urllib.parse import unquote

from ._replies import FakeReply, RecordedRequest
from ._wire import Completion, dumps, error_body, sse_error

__all__ = ["MODELS_PATHS", "Backend", "FakeHTTPServer", "ScriptError", "openai_route"]

_CHAT_PATHS: Final = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS: Final = frozenset({"/v1/models", "/models"})
_MODEL_PREFIXES: Final = ("/v1/models/", "/models/")
# Azure OpenAI's paths: a deployment's chat completions, the resource's models (api-version in the query).
_AZURE_DEPLOYMENT: Final = re.compile(r"^/openai/deployments/[^/]+(?=/chat/completions$)")
_AZURE_PREFIX: Final = "/openai"
_MAX_LINE: Final = 65536
# The largest request body the server reads (the stdlib reads a body into a buffer of its announced size
# at once): a larger Content-Length or chunk is refused, not waited for.
_MAX_BODY: Final = 256 * 1024 * 1024
_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
_JSON: Final = {"Content-Type": "application/json"}


def openai_route(path: str) -> str:
    """The OpenAI path an Azure OpenAI path stands for; any other path as it is.

    ``/openai/deployments/NAME/chat/completions`` is ``/chat/completions``, ``/openai/models`` is
    ``/models`` (and ``/openai/models/ID`` is ``/models/ID``): an ``AzureOpenAI`` client, or AutoGen's
    ``AzureOpenAIChatCompletionClient``, given the server's root as ``azure_endpoint`` is served as an
    OpenAI client is.
    """
    azure = _AZURE_DEPLOYMENT.match(path)
    if azure is not None:
        return path[azure.end() :]
    if path == _AZURE_PREFIX + "/models" or path.startswith(_AZURE_PREFIX + "/models/"):
        return path[len(_AZURE_PREFIX) :]
    return path


class ScriptError(Exception):
    """The server cannot produce a reply from its script; carries the HTTP error to answer with."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body
        self.headers: Mapping[str, str] = headers or {}


class Backend(Protocol):
    """What the HTTP layer asks of the server it answers for: `FakeOpenAIServer`.

    The members are underscored because they are the server's inside, not its public face.
    """

    model: str

    def _connection_opened(self) -> None:
        """Count a new TCP connection."""

    def _record(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, *, is_chat: bool
    ) -> tuple[RecordedRequest, FakeReply | None, int, threading.Event]:
        """Record a request; for a chat completion or a model listing, take the next scripted reply.

        Chat completions are numbered (the third item); other requests get 0. The fourth item is
        set when the answer is to end (the server stops or is reset): `_pause` and `_hold` take it.
        """
        ...

    def _default_reply(self, request: RecordedRequest, ordinal: int) -> FakeReply:
        """The reply when the script is empty; raises `ScriptError` when there is none."""
        ...

    def _completion(self, request: RecordedRequest, reply: FakeReply, ordinal: int) -> Completion:
        """Resolve a completion reply (ids, model, usage) for rendering."""
        ...

    def _model_object(self) -> dict[str, Any]:
        """The server's one model, as ``/v1/models`` lists it."""
        ...

    def _pause(self, seconds: float, ended: threading.Event) -> bool:
        """Wait ``seconds`` (a reply's ``delay`` or ``chunk_delay``); True if the answer is to end instead."""
        ...

    def _hold(self, ended: threading.Event) -> bool:
        """Wait for `FakeOpenAIServer.release` (``hold_after_chunks``); True if the answer is to end instead."""
        ...


def _chunk_frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _identity(data: bytes) -> bytes:
    return data


def _merged(own: Mapping[str, str], scripted: Mapping[str, str]) -> dict[str, str]:
    """The server's ``own`` headers, but for those ``scripted`` names (in any case), then the ``scripted`` ones.

    A reply's ``content-type`` replaces the server's ``Content-Type``: sent next to it, the response had two,
    which a client reads joined (``application/json, text/plain``).
    """
    named = {name.lower() for name in scripted}
    return {**{name: value for name, value in own.items() if name.lower() not in named}, **scripted}


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _BadRequestError(Exception):
    """The request could not be framed; answer 400 and close the connection."""


def _content_length(values: list[str]) -> int:
    """The body's length from its ``Content-Length`` header(s): digits only, the same value if repeated (RFC 9112).

    Python's ``int()`` would also take ``+37``, ``3_7`` and ``-5``; a length past ``sys.maxsize`` cannot be
    read at all, and one of gigabytes would be allocated at once: each is refused.
    """
    found = {value.strip() for line in values for value in line.split(",")}
    if len(found) != 1:
        raise _BadRequestError(f"conflicting Content-Length values {sorted(found)}")
    (value,) = found
    if not value.isascii() or not value.isdigit():
        raise _BadRequestError(f"Content-Length {value[:40]!r} is not a number of bytes")
    if len(value.lstrip("0")) > len(str(_MAX_BODY)) or int(value) > _MAX_BODY:
        raise _BadRequestError(f"Content-Length {value[:40]} is more than the {_MAX_BODY} bytes the fake server reads")
    return int(value)


def _chunk_size(field: bytes) -> int:
    """The size of one chunk of a chunked body: hexadecimal digits only (RFC 9112, 7.1)."""
    if not field or not all(byte in _HEX_DIGITS for byte in field):
        raise _BadRequestError(f"chunk size {field[:40]!r} is not a hexadecimal number of bytes")
    if len(field.lstrip(b"0")) > len(f"{_MAX_BODY:x}") or int(field, 16) > _MAX_BODY:
        raise _BadRequestError(f"chunk size {field[:40]!r} is more than the {_MAX_BODY} bytes the fake server reads")
    return int(field, 16)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY every response waits ~40 ms on Nagle + the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "FakeOpenAIServer"
    sys_version = ""
    # Of the request being answered (one at a time per connection): set when its answer is to end.
    _ended: threading.Event

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean: the stdlib logs every request to stderr otherwise."""

    def do_GET(self) -> None:
        """Route a GET request."""
        self._dispatch()

    def do_POST(self) -> None:
        """Route a POST request."""
        self._dispatch()

    def do_PUT(self) -> None:
        """Route a PUT request."""
        self._dispatch()

    def do_PATCH(self) -> None:
        """Route a PATCH request."""
        self._dispatch()

    def do_DELETE(self) -> None:
        """Route a DELETE request."""
        self._dispatch()

    @property
    def _fake(self) -> Backend:
        return cast("FakeHTTPServer", self.server).owner

    # ---- routing

    def _dispatch(self) -> None:
        fake = self._fake
        framing_error: str | None = None
        try:
            raw = self._read_body()
        except (_BadRequestError, ValueError) as exc:
            raw, framing_error = b"", str(exc)
        path = self.path.split("?", 1)[0]
        route = openai_route(path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else str(value)
        is_chat = route in _CHAT_PATHS
        request, reply, ordinal, self._ended = fake._record(self.command, path, headers, raw, is_chat=is_chat)
        request_id = f"req_fake_{request.index}"

        if framing_error is not None:
            # The rest of the stream cannot be trusted to start at a request boundary.
            self.close_connection = True
            body = error_body(f"Malformed request body: {framing_error}", "invalid_request_error")
            self._send_json(400, body, request_id=request_id)
        elif is_chat and self.command == "POST":
            self._serve_chat(request, reply, ordinal, request_id)
        elif route in MODELS_PATHS and self.command == "GET":
            self._serve_models(request, reply, request_id)
        elif route.startswith(_MODEL_PREFIXES) and self.command == "GET":
            # The SDK percent-encodes the id: meta-llama/Llama-3.1-8B-Instruct comes as meta-llama%2FLlama-...
            model_id = unquote(route.split("/models/", 1)[1])
            if model_id == fake.model:
                self._send_json(200, fake._model_object(), request_id=request_id)
            else:
                message = f"The model '{model_id}' does not exist"
                body = error_body(message, "invalid_request_error", code="model_not_found", param="model")
                self._send_json(404, body, request_id=request_id)
        else:
            body = error_body(f"Invalid URL ({self.command} {path})", "invalid_request_error")
            self._send_json(404, body, request_id=request_id)

    def _serve_chat(self, request: RecordedRequest, reply: FakeReply | None, ordinal: int, request_id: str) -> None:
        fake = self._fake
        if request.body is None:
            message = "We could not parse the JSON body of your request. (FakeOpenAIServer expects a JSON object.)"
            self._send_json(400, error_body(message, "invalid_request_error"), request_id=request_id)
            return
        if reply is None:
            try:
                reply = fake._default_reply(request, ordinal)
            except ScriptError as exc:
                self._send_json(exc.status, exc.body, request_id=request_id, headers=exc.headers)
                return

        if self._wait_to_answer(reply, request):
            self._abort()
            return
        if reply.kind == "reset":
            self._abort()
        elif reply.kind == "malformed":
            self._send_malformed(reply, request_id)
        elif reply.kind == "error":
            body = error_body(
                reply.error_message or "", reply.error_type or "", code=reply.error_code, param=reply.error_param
            )
            self._send_json(reply.status, body, request_id=request_id, headers=reply.headers)
        elif request.stream:
            self._stream(fake._completion(request, reply, ordinal), reply, request, request_id)
        elif reply.error_after_chunks is not None:
            message = "FakeOpenAIServer: simulated server error (error_after_chunks on a non-streaming request)"
            self._send_json(500, error_body(message, "server_error"), request_id=request_id, headers=reply.headers)
        else:
            completion = fake._completion(request, reply, ordinal)
            payload = dumps(completion.body())
            if reply.disconnect_after_chunks is not None:
                head = self._head(200, _merged(_JSON, reply.headers), request_id, len(payload))
                self._write(head + payload[: len(payload) // 2])
                self._abort()
            else:
                self._send(200, _merged(_JSON, reply.headers), payload, request_id=request_id)

    def _serve_models(self, request: RecordedRequest, reply: FakeReply | None, request_id: str) -> None:
        listing = {"object": "list", "data": [self._fake._model_object()]}
        if reply is None:
            self._send_json(200, listing, request_id=request_id)
            return
        if self._wait_to_answer(reply, request) or reply.kind == "reset":
            self._abort()
        elif reply.kind == "malformed":
            self._send_malformed(reply, request_id)
        elif reply.kind == "error":
            body = error_body(
                reply.error_message or "", reply.error_type or "", code=reply.error_code, param=reply.error_param
            )
            self._send_json(reply.status, body, request_id=request_id, headers=reply.headers)
        else:
            self._send_json(200, listing, request_id=request_id, headers=reply.headers)

    def _send_malformed(self, reply: FakeReply, request_id: str) -> None:
        headers = _merged({"Content-Type": reply.content_type}, reply.headers)
        if reply.disconnect_after_chunks is None:
            self._send(reply.status, headers, reply.raw_body, request_id=request_id)
            return
        # The body as a chunk of a chunked response that never ends (an empty chunk would end it): the client
        # reads it, then the reset.
        body = _chunk_frame(reply.raw_body) if reply.raw_body else b""
        self._write(self._head(reply.status, headers, request_id, None, chunked=True) + body)
        self._abort()

    def _wait_to_answer(self, reply: FakeReply, request: RecordedRequest) -> bool:
        """Wait out ``delay``, and the hold of an answer that is not a stream; True if the server stops meanwhile."""
        fake = self._fake
        if reply.delay and fake._pause(reply.delay, self._ended):
            return True
        streamed = reply.kind == "completion" and request.stream
        return reply.hold_after_chunks is not None and not streamed and fake._hold(self._ended)

    def _stream(self, completion: Completion, reply: FakeReply, request: RecordedRequest, request_id: str) -> None:
        include_usage = request.include_usage
        deltas = completion.delta_chunks(include_usage=include_usage)
        cut = reply.error_after_chunks if reply.error_after_chunks is not None else reply.disconnect_after_chunks
        sent = deltas[:cut]
        events = [completion.role_chunk(include_usage=include_usage), *sent]
        reset_at_end = False
        if reply.error_after_chunks is not None:
            events.append(sse_error(f"FakeOpenAIServer: simulated error after {reply.error_after_chunks} chunks"))
        elif reply.disconnect_after_chunks is not None:
            reset_at_end = True
        else:
            events.append(completion.chunk({}, completion.finish_reason, include_usage=include_usage))
            if include_usage:
                events.append(completion.chunk(None, None, include_usage=True))
            events.append(b"data: [DONE]\n\n")

        # An HTTP/1.0 client cannot take chunked encoding; the end of the body is then the end of the connection.
        chunked = self.request_version != "HTTP/1.0"
        if not chunked:
            self.close_connection = True
        frame: Callable[[bytes], bytes] = _chunk_frame if chunked else _identity
        ending = b"" if reset_at_end or not chunked else b"0\r\n\r\n"
        headers = _merged(
            {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}, reply.headers
        )
        head = self._head(200, headers, request_id, None, chunked=chunked)

        # The hold comes after the role chunk and `hold_after_chunks` of the content/tool-call chunks.
        hold_at = None if reply.hold_after_chunks is None else 1 + min(reply.hold_after_chunks, len(sent))
        # Without a wait the whole stream is one write. Before each wait, what is due goes out, so the client
        # has it while the server waits; the terminator rides with the last event: the SDK waits up to
        # 100 ms for it after [DONE].
        due = head
        for position, event in enumerate(events):
            if position and (reply.chunk_delay or position == hold_at):
                if not self._write(due) or self._wait(reply, held=position == hold_at):
                    self._abort()
                    return
                due = b""
            due += frame(event)
        if hold_at == len(events):  # a stream cut short (disconnect_after_chunks) waits for the release to reset
            if not self._write(due) or self._wait(reply, held=True, paced=False):
                self._abort()
                return
            due = b""
        ok = self._write(due + ending)
        if reset_at_end or not ok:
            self._abort()

    def _wait(self, reply: FakeReply, *, held: bool, paced: bool = True) -> bool:
        """Wait before the next event: for the release if ``held``, then ``chunk_delay``; True if the server stops."""
        fake = self._fake
        if held and fake._hold(self._ended):
            return True
        return bool(paced and reply.chunk_delay) and fake._pause(reply.chunk_delay, self._ended)

    # ---- I/O helpers

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(_MAX_LINE + 1)
                size = _chunk_size(size_line.split(b";", 1)[0].strip())
                if size == 0:
                    while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                        pass  # trailers carry nothing the fake cares about
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(_MAX_LINE + 1)
        lengths = self.headers.get_all("Content-Length")
        if not lengths:
            return b""
        size = _content_length(lengths)
        body = self.rfile.read(size)
        if len(body) != size:
            raise _BadRequestError("request body shorter than its Content-Length")
        return body

    def _head(
        self,
        status: int,
        headers: Mapping[str, str],
        request_id: str,
        content_length: int | None,
        *,
        chunked: bool = False,
    ) -> bytes:
        own = {"Date": self.date_time_string(), "Server": self.server_version, "x-request-id": request_id}
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += (f"{name}: {value}" for name, value in _merged(own, headers).items())
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}")
        elif chunked:
            lines.append("Transfer-Encoding: chunked")
        lines.append(f"Connection: {'close' if self.close_connection else 'keep-alive'}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, headers: Mapping[str, str], body: bytes, *, request_id: str) -> None:
        # Headers and body in one write: one segment on the wire, nothing for Nagle to hold back.
        self._write(self._head(status, headers, request_id, len(body)) + body)

    def _send_json(
        self, status: int, obj: object, *, request_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, _merged(_JSON, headers or {}), dumps(obj), request_id=request_id)

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
        except OSError:
            # The client went away (e.g. it timed out); nothing left to answer.
            self.close_connection = True
            return False
        return True

    def _abort(self) -> None:
        """Drop the connection with a TCP RST instead of an orderly FIN."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile (a makefile() object) holds a reference that would postpone the real close until finish().
        self.rfile.close()
        self.connection.close()


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive connections would otherwise make server_close() wait for their threads forever.
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: Backend) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() looks up the host's FQDN, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        self.owner._connection_opened()
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        # Clients vanishing mid-request is routine here (timeouts, resets); only real bugs deserve a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake every handler blocked on an idle keep-alive connection so its thread can exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
