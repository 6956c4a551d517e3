"""Reading an HTTP response body as it flows past: undoing its Content-Encoding, splitting its SSE events.

The usage tap sees each chunk of a body once, *pushed* to it just before the
SDK gets the same chunk, and must look at it then: the consumer may stop
reading right after the last event (HTTP/2 does not drain), so nothing can wait
for "more". Both readers here are push-fed (``feed`` a chunk, ``flush`` /
``finish`` at the end), bounded (a compression bomb or an endless line costs at
most ``limit`` bytes, then :class:`BodyTooLargeError`), and work on bytes.

Why our own, and not the HTTP client's (checked with httpx2 2.16, openai 3.57):

- **Content-Encoding.** httpx2 decodes only *pulling*: ``Response.iter_bytes()``
  / ``aiter_bytes()`` over a stream the response reads itself; its decoder
  classes live in the private ``httpx2._decoders``. Driving ``aiter_bytes()``
  push-wise is possible with public names only, by building a
  ``Response(stream=...)`` over a stream that suspends when it has no data and
  stepping the generator's coroutine by hand (``.send(None)``). It decoded a
  gzip stream correctly, but that depends on httpx2 never awaiting anything
  else inside its iteration (undocumented), left "asynchronous generator is
  already running" warnings when a body was abandoned midway, and cost
  12.2 us per chunk against 1.9 us for ``zlib`` here (a 201-event gzip SSE
  stream, best of 5 x 300). So gzip and deflate - all the SDK asks for unless
  brotli or zstandard is installed - are undone with ``zlib`` directly. Other
  encodings (``br``, ``zstd``, which httpx2 asks for when their libraries are
  installed) go through httpx2's private decoders as a fallback: any surprise
  there only means the body goes uninspected.
- **SSE.** httpx2's public ``EventSource`` also pulls from a ``Response``, and
  decodes every chunk to ``str`` and every event to an object; the openai SDK's
  ``SSEDecoder`` is private (``openai._streaming``). The tap needs neither: it
  splits bytes on ``\\n`` once per chunk (one C-level split) and hands on the
  data of each event, which it parses only when it may carry a usage.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

__all__ = [
    "BodyTooLargeError",
    "Decoder",
    "SSEDataReader",
    "UnsupportedEncodingError",
    "content_decoder",
]


class BodyTooLargeError(Exception):
    """The decoded body (or one SSE line) grew beyond the reader's limit."""


class UnsupportedEncodingError(Exception):
    """A Content-Encoding that cannot be decoded here."""


class Decoder(Protocol):
    """Undoes a Content-Encoding, chunk by chunk."""

    def decode(self, data: bytes) -> bytes:
        """The decoded bytes of ``data`` that are ready; raises :class:`BodyTooLargeError` past the limit."""
        ...

    def flush(self) -> bytes:
        """What is left once the body has ended."""
        ...


# --------------------------------------------------------------------------- Content-Encoding


class _ZlibDecoder:
    """gzip / deflate with the standard library; output bounded so a compression bomb costs nothing."""

    __slots__ = ("_decompressor", "_limit", "_raw_deflate_fallback")

    def __init__(self, encoding: str, limit: int) -> None:
        # gzip: the gzip wrapper; deflate: zlib-wrapped as the RFC says, raw deflate if the server got it wrong.
        wbits = zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS
        self._decompressor = zlib.decompressobj(wbits)
        self._raw_deflate_fallback = encoding == "deflate"
        self._limit = limit

    def decode(self, data: bytes) -> bytes:
        try:
            out = self._decompressor.decompress(data, self._limit)
        except zlib.error:
            if not self._raw_deflate_fallback:
                raise
            self._raw_deflate_fallback = False
            self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._decompressor.decompress(data, self._limit)
        self._raw_deflate_fallback = False
        if self._decompressor.unconsumed_tail:
            raise BodyTooLargeError
        return out

    def flush(self) -> bytes:
        return self._decompressor.flush()


class _HttpxDecoder:
    """Any other encoding httpx2 itself can decode (br, zstd when their libraries are installed).

    httpx2's decoders are private, so this is only a fallback: any surprise in their API just
    means the body goes uninspected.
    """

    __slots__ = ("_decoder",)

    def __init__(self, encoding: str) -> None:
        from httpx2 import _decoders  # noqa: PLC0415 - private, so only touched when needed

        decoder_class = _decoders.SUPPORTED_DECODERS.get(encoding)
        if decoder_class is None:
            raise UnsupportedEncodingError(encoding)
        self._decoder: Any = decoder_class()

    @staticmethod
    def _join(out: object) -> bytes:
        if isinstance(out, bytes):
            return out
        return b"".join(cast("Iterator[bytes]", out))

    def decode(self, data: bytes) -> bytes:
        return self._join(self._decoder.decode(data))

    def flush(self) -> bytes:
        return self._join(self._decoder.flush())


class _ChainDecoder:
    """Several encodings, undone in the reverse order of the header."""

    __slots__ = ("_decoders",)

    def __init__(self, decoders: list[Decoder]) -> None:
        self._decoders = decoders

    def decode(self, data: bytes) -> bytes:
        for decoder in self._decoders:
            data = decoder.decode(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for decoder in self._decoders:
            data = (decoder.decode(data) if data else b"") + decoder.flush()
        return data


def content_decoder(content_encoding: str | None, *, limit: int) -> Decoder | None:
    """A decoder for the ``Content-Encoding`` header's value, or ``None`` when the body is not encoded.

    Args:
        content_encoding: The header's value (``"gzip"``, ``"gzip, br"``, ...), if any.
        limit: The most bytes one ``decode`` may produce; more raises :class:`BodyTooLargeError`
            (enforced for gzip and deflate).

    Raises:
        UnsupportedEncodingError: An encoding neither ``zlib`` nor httpx2 can undo.
    """
    if not content_encoding:
        return None
    encodings = [value.strip().lower() for value in content_encoding.split(",")]
    decoders: list[Decoder] = []
    for encoding in reversed(encodings):
        if encoding in ("", "identity"):
            continue
        if encoding in ("gzip", "deflate"):
            decoders.append(_ZlibDecoder(encoding, limit))
        else:
            decoders.append(_HttpxDecoder(encoding))
    if not decoders:
        return None
    return decoders[0] if len(decoders) == 1 else _ChainDecoder(decoders)


# --------------------------------------------------------------------------- server-sent events


class SSEDataReader:
    """Splits a ``text/event-stream`` body into the data of its events, as the bytes arrive.

    Each event's ``data:`` lines (joined with ``\\n``, as the SSE spec says) go to
    ``on_data`` once the blank line ending the event has arrived. Other fields
    (``event:``, ``id:``, ``retry:``, comments) are skipped. Lines may end in
    ``\\n`` or ``\\r\\n`` and be split anywhere across chunks; a line longer than
    ``limit`` raises :class:`BodyTooLargeError`.
    """

    __slots__ = ("_data_lines", "_limit", "_on_data", "_pending", "_size")

    def __init__(self, on_data: Callable[[bytes], None], *, limit: int) -> None:
        self._on_data = on_data
        self._limit = limit
        # The unfinished last line, and its size.
        self._pending: list[bytes] = []
        self._size = 0
        # The data lines of the event being read (one per event in practice).
        self._data_lines: list[bytes] = []

    def feed(self, data: bytes) -> None:
        """Read the next bytes of the body."""
        # One C-level split per chunk; the last piece is the start of a line that is not finished yet.
        lines = data.split(b"\n")
        if self._pending:
            if len(lines) == 1:
                self._keep(data)
                return
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
            self._pending = []
            self._size = 0
        rest = lines.pop()
        data_lines = self._data_lines
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]  # noqa: PLW2901 - CRLF framing
            if not line:
                if data_lines:
                    # The event is complete (what _dispatch does, inline: this runs once per event).
                    self._data_lines = []
                    self._on_data(data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines))
                    data_lines = self._data_lines
            elif line.startswith(b"data:"):
                data_lines.append(line[6:] if line.startswith(b"data: ") else line[5:])
            # Other fields (event:, id:, retry:, comments) carry nothing the tap needs.
        if rest:
            self._keep(rest)

    def between_events(self, data: bytes) -> bool:
        """Whether ``data``, the next bytes, holds whole events only: none begun before it, none left open after it.

        Such bytes can be looked at as they are, without splitting them into events: nothing in them
        belongs to an event that another chunk completes.
        """
        return not self._pending and not self._data_lines and (data.endswith(b"\n\n") or data.endswith(b"\r\n\r\n"))

    def finish(self) -> None:
        """The body has ended: a last line without its newline, then an event without its blank line, count."""
        if self._pending:
            self.feed(b"\n")
        self._dispatch()

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise BodyTooLargeError
        self._pending.append(data)

    def _dispatch(self) -> None:
        lines = self._data_lines
        if not lines:
            return
        self._data_lines = []
        self._on_data(lines[0] if len(lines) == 1 else b"\n".join(lines))
