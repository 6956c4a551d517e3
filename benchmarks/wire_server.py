"""A minimal OpenAI-wire HTTP/1.1 server for end-to-end benchmarks, run in a process of its own.

It answers every request on a keep-alive connection with one of two responses
made beforehand (a JSON completion, or an SSE stream when the request body asks
for ``"stream": true``): no parsing beyond the head's ``Content-Length``, no
thread, no per-request allocation worth the name. So the time a client measures
is its own work plus the loopback round trip, not the server's, and since it is
another process the server never takes the GIL from the client it serves.
``FakeOpenAIServer``, by contrast, runs on a thread of the client's process and
handles each request in Python (recording it, rendering the reply): its cost,
and its share of the GIL, land in every number measured against it.

The responses are given as files (head and body, exactly as sent): `start`
writes them and starts ``python -m benchmarks.wire_server PLAIN STREAM``, which
prints its port and serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["http_response", "start"]

_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
_STREAM = re.compile(rb'"stream"\s*:\s*true')


def http_response(body: bytes, *, content_type: str, events: list[bytes] | None = None) -> bytes:
    """A whole HTTP/1.1 response: ``body`` with a Content-Length, or ``events`` each in a chunk of its own."""
    head = [
        "HTTP/1.1 200 OK",
        f"Content-Type: {content_type}",
        "x-request-id: req_bench",
        "Connection: keep-alive",
    ]
    if events is None:
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    head.append("Transfer-Encoding: chunked")
    framed = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in events)
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + framed + b"0\r\n\r\n"


class _Connection(asyncio.Protocol):
    def __init__(self, plain: bytes, stream: bytes) -> None:
        self._plain = plain
        self._stream = stream
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _CONTENT_LENGTH.search(self._buffer, 0, end + 2)
            size = int(length.group(1)) if length else 0
            if len(self._buffer) < end + 4 + size:
                return
            body = self._buffer[end + 4 : end + 4 + size]
            self._buffer = self._buffer[end + 4 + size :]
            assert self._transport is not None
            self._transport.write(self._stream if _STREAM.search(body) else self._plain)


async def _serve(plain: bytes, stream: bytes) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(plain, stream), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    # Serve until the parent closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


@contextlib.contextmanager
def start(plain: bytes, stream: bytes) -> Iterator[str]:
    """Serve the two responses from a child process; yields the base URL (``http://127.0.0.1:PORT/v1``)."""
    with tempfile.TemporaryDirectory(prefix="bench-wire-") as directory:
        paths = [Path(directory) / "plain", Path(directory) / "stream"]
        for path, data in zip(paths, (plain, stream), strict=True):
            path.write_bytes(data)
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.wire_server", *map(str, paths)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]).read_bytes()))
