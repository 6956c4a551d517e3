"""The record side of cassettes: the exchanges of the SDK's HTTP transport with one provider, kept as they pass.

Why at the transport, and not with vcrpy:
    vcrpy 9.4 patches the same two methods (``httpx2.HTTPTransport.handle_request``
    and ``httpx2.AsyncHTTPTransport.handle_async_request``), but reads a whole
    response body before the SDK sees its first byte: a stream being recorded
    reaches the test only once the provider has finished it. Here the body is
    handed on chunk by chunk as it arrives, and a copy is kept: a test behaves
    the same while it records (first tokens, cancelling a stream, a stream cut
    off mid-way) as when it replays. See docs/testing.md, "Recording real exchanges".

While `Recorder.start`-ed, every request through those transports whose URL
starts with the recorder's base URL is recorded: the openai and anthropic SDKs'
default clients and a user's own ``httpx2`` ``http_client`` alike (a legacy
``httpx`` client is not recorded). The cassette form (headers kept, credentials
scrubbed, bodies as JSON, streams as events) is `._cassette`'s.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, Final

import httpx2

from ._cassette import ENDED_EARLY, Scrubber, body_value, kept_request_headers, kept_response_headers, sse_events

__all__ = ["Recorder"]

# A cassette keeps bodies whole; this only stops a runaway download from filling the memory.
_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
_NO_LIMIT: Final = 1 << 62


class _Body:
    """The copy of one response body, turned into its cassette form when the body ends or is closed."""

    def __init__(self, slot: dict[str, Any], content_type: str, content_encoding: str | None) -> None:
        self._slot = slot
        self._content_type = content_type
        self._content_encoding = content_encoding
        self._chunks: list[bytes] = []
        self._size = 0
        self._finished = False
        self._lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= _MAX_BODY_BYTES:
            self._chunks.append(chunk)

    def finish(self, *, complete: bool, error: BaseException | None = None) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        from ..providers import content_decoder  # noqa: PLC0415 - the providers package loads the SDK

        raw = b"".join(self._chunks)
        try:
            decoder = content_decoder(self._content_encoding, limit=_NO_LIMIT)
            data = decoder.decode(raw) + decoder.flush() if decoder is not None else raw
        except Exception as exc:  # a body we cannot decode is recorded as such, not lost
            self._slot["text"] = f"<a {self._content_encoding} body that could not be decoded: {exc}>"
            return
        if "text/event-stream" in self._content_type:
            self._slot["stream"] = sse_events(data.decode("utf-8", errors="replace"))
        else:
            key, value = body_value(data, self._content_type)
            self._slot[key] = value
        if self._size > _MAX_BODY_BYTES:
            self._slot["truncated"] = f"only the first {_MAX_BODY_BYTES} bytes were kept"
        elif not complete:
            self._slot["truncated"] = (
                f"{ENDED_EARLY}: {type(error).__name__}: {error}" if error else "the client stopped reading"
            )


class _RecordingStream(httpx2.SyncByteStream):
    """A response body passed on chunk by chunk as it arrives, a copy kept for the cassette (sync clients)."""

    def __init__(self, stream: httpx2.SyncByteStream, body: _Body) -> None:
        self._stream = stream
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._stream:
                self._body.feed(chunk)
                yield chunk
        except Exception as exc:
            self._body.finish(complete=False, error=exc)
            raise
        self._body.finish(complete=True)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._body.finish(complete=False)


class _RecordingAsyncStream(httpx2.AsyncByteStream):
    """`_RecordingStream` for async clients."""

    def __init__(self, stream: httpx2.AsyncByteStream, body: _Body) -> None:
        self._stream = stream
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        iterator = self._stream.__aiter__()
        try:
            async for chunk in iterator:
                self._body.feed(chunk)
                yield chunk
        except Exception as exc:
            self._body.finish(complete=False, error=exc)
            raise
        finally:
            # As httpx2's own streams do: close the inner generator now, not at garbage collection.
            if isinstance(iterator, AsyncGenerator):
                await iterator.aclose()
        self._body.finish(complete=True)

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._body.finish(complete=False)


class Recorder:
    """Records the exchanges of httpx2's HTTP transports with one provider while `start`-ed.

    Only requests whose URL starts with ``base_url`` are recorded (a test's other
    traffic, e.g. to a local fake, is not the provider's); the real transport sends
    every request as usual.
    """

    def __init__(self, base_url: str) -> None:
        """Create a stopped recorder.

        Args:
            base_url: The provider's base URL, e.g. ``"https://api.openai.com/v1"``.
        """
        self.base_url = base_url.rstrip("/")
        self._lock = threading.Lock()
        self._slots: list[dict[str, Any]] = []
        self._bodies: list[_Body] = []
        self._scrubber = Scrubber()
        self._undo: Callable[[], None] | None = None

    @property
    def interactions(self) -> list[dict[str, Any]]:
        """What was recorded so far, in the order the requests were sent, credentials scrubbed."""
        with self._lock:
            slots = list(self._slots)
        return [self._scrubber.interaction(slot) for slot in slots]

    def start(self) -> None:
        """Patch httpx2's HTTP transports (sync and async) to record.

        Raises:
            RuntimeError: If this recorder is recording already.
        """
        if self._undo is not None:
            raise RuntimeError("this Recorder is recording already")
        recorder = self
        sync_send = httpx2.HTTPTransport.handle_request
        async_send = httpx2.AsyncHTTPTransport.handle_async_request

        def handle_request(transport: httpx2.HTTPTransport, request: httpx2.Request) -> httpx2.Response:
            slot = recorder._begin(request, request.read())
            if slot is None:
                return sync_send(transport, request)
            try:
                response = sync_send(transport, request)
            except Exception as exc:
                slot["error"] = f"{type(exc).__name__}: {exc}"
                raise
            body = recorder._response(slot, response)
            response.stream = _RecordingStream(_sync_stream(response), body)
            return response

        async def handle_async_request(
            transport: httpx2.AsyncHTTPTransport, request: httpx2.Request
        ) -> httpx2.Response:
            slot = recorder._begin(request, await request.aread())
            if slot is None:
                return await async_send(transport, request)
            try:
                response = await async_send(transport, request)
            except Exception as exc:
                slot["error"] = f"{type(exc).__name__}: {exc}"
                raise
            body = recorder._response(slot, response)
            response.stream = _RecordingAsyncStream(_async_stream(response), body)
            return response

        httpx2.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign,assignment]
        httpx2.AsyncHTTPTransport.handle_async_request = handle_async_request  # type: ignore[method-assign,assignment]

        def undo() -> None:
            httpx2.HTTPTransport.handle_request = sync_send  # type: ignore[method-assign]
            httpx2.AsyncHTTPTransport.handle_async_request = async_send  # type: ignore[method-assign]

        self._undo = undo

    def stop(self) -> None:
        """Restore the transports; a body still open is recorded as far as it was read."""
        if self._undo is not None:
            self._undo()
            self._undo = None
        with self._lock:
            bodies = list(self._bodies)
        for body in bodies:
            body.finish(complete=False)

    def _begin(self, request: httpx2.Request, content: bytes) -> dict[str, Any] | None:
        url = str(request.url)
        if not (url == self.base_url or url.startswith((self.base_url + "/", self.base_url + "?"))):
            return None
        headers = [(name.lower(), value) for name, value in request.headers.multi_items()]
        recorded: dict[str, Any] = {"method": request.method, "url": url, "headers": kept_request_headers(headers)}
        if content:
            key, value = body_value(content, request.headers.get("content-type", ""))
            recorded[key] = value
        slot: dict[str, Any] = {"request": recorded}
        with self._lock:
            self._scrubber.learn(dict(headers))
            self._slots.append(slot)
        return slot

    def _response(self, slot: dict[str, Any], response: httpx2.Response) -> _Body:
        headers = [(name.lower(), value) for name, value in response.headers.multi_items()]
        recorded: dict[str, Any] = {"status": response.status_code, "headers": kept_response_headers(headers)}
        body = _Body(recorded, response.headers.get("content-type", ""), response.headers.get("content-encoding"))
        with self._lock:
            self._scrubber.learn(dict(headers))
            slot["response"] = recorded
            self._bodies.append(body)
        return body


def _sync_stream(response: httpx2.Response) -> httpx2.SyncByteStream:
    stream = response.stream
    if not isinstance(stream, httpx2.SyncByteStream):
        raise TypeError(f"a sync transport returned a {type(stream).__name__} body")
    return stream


def _async_stream(response: httpx2.Response) -> httpx2.AsyncByteStream:
    stream = response.stream
    if not isinstance(stream, httpx2.AsyncByteStream):
        raise TypeError(f"an async transport returned a {type(stream).__name__} body")
    return stream
