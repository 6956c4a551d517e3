"""A real HTTP transport that says when its client has read a response body past a marker.

A tool-call stream hands its consumer nothing until it ends, so a test cannot tell from what it receives that
the client has read the fragments sent so far; this tells it from the bytes the client has taken. One for each
HTTP library an SDK sends through: ``httpx2`` (the openai SDK) and legacy ``httpx`` (the anthropic SDK 0.x).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2

__all__ = ["read_past_marker"]


def read_past_marker(http: Any, marker: bytes) -> Any:
    """A transport of ``http`` (the module ``httpx`` or ``httpx2``) whose ``read_past`` is set once ``marker`` was read.

    Set when the reader has handled the chunk that completes ``marker`` and asks for the next one.
    """
    if http not in (httpx, httpx2):
        raise TypeError(f"read_past_marker takes the httpx or httpx2 module, got {http!r}")

    class WatchedBody(http.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, stream: Any, watch: ReadPastMarker) -> None:
            self.stream, self.watch = stream, watch

        async def __aiter__(self) -> AsyncIterator[bytes]:
            seen = b""
            async for chunk in self.stream:
                seen += chunk
                yield chunk
                # Resumed: the reader has handled this chunk and asks for the next one.
                if self.watch.marker in seen:
                    self.watch.read_past.set()

        async def aclose(self) -> None:
            await self.stream.aclose()

    class ReadPastMarker(http.AsyncBaseTransport):  # type: ignore[misc]
        def __init__(self) -> None:
            self.wrapped = http.AsyncHTTPTransport()
            self.marker = marker
            self.read_past = asyncio.Event()

        async def handle_async_request(self, request: Any) -> Any:
            response = await self.wrapped.handle_async_request(request)
            response.stream = WatchedBody(response.stream, self)
            return response

        async def aclose(self) -> None:
            await self.wrapped.aclose()

    return ReadPastMarker()
