"""providers/_http_body.py: undoing Content-Encoding and splitting SSE events, pushed a chunk at a time.

The usage tap drives these through real responses (tests/test_usage_tap.py); here are the edges
a server rarely shows: chained encodings, compression bombs, multi-line events, unfinished tails.
"""

from __future__ import annotations

import gzip
import zlib

import pytest

from autogen_reliability.providers._http_body import (
    BodyTooLargeError,
    SSEDataReader,
    UnsupportedEncodingError,
    content_decoder,
)

BODY = b'{"id":"chatcmpl-1","usage":{"prompt_tokens":3,"completion_tokens":4}}' * 50
LIMIT = 1 << 20


def decode_in_pieces(encoding: str, data: bytes, size: int, limit: int = LIMIT) -> bytes:
    decoder = content_decoder(encoding, limit=limit)
    assert decoder is not None
    out = [decoder.decode(data[start : start + size]) for start in range(0, len(data), size)]
    return b"".join(out) + decoder.flush()


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 16])
def test_chained_encodings_are_undone_in_reverse_order(size: int) -> None:
    # "deflate, gzip": deflate was applied first, so gzip is undone first.
    encoded = gzip.compress(zlib.compress(BODY))
    assert decode_in_pieces("deflate, gzip", encoded, size) == BODY
    assert decode_in_pieces(" GZIP ", gzip.compress(BODY), size) == BODY  # as headers are written in the wild


@pytest.mark.parametrize("header", [None, "", "identity", "identity, "])
def test_no_encoding_needs_no_decoder(header: str | None) -> None:
    assert content_decoder(header, limit=LIMIT) is None


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(UnsupportedEncodingError):
        content_decoder("x-unknown", limit=LIMIT)


def test_a_compression_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (8 * LIMIT))  # 8 MiB of zeros in about 8 KiB
    decoder = content_decoder("gzip", limit=LIMIT)
    assert decoder is not None
    with pytest.raises(BodyTooLargeError):
        decoder.decode(bomb)


def read_events(body: bytes, size: int, limit: int = LIMIT) -> list[bytes]:
    events: list[bytes] = []
    reader = SSEDataReader(events.append, limit=limit)
    for start in range(0, len(body), size):
        reader.feed(body[start : start + size])
    reader.finish()
    return events


STREAM = (
    b": a comment\n"
    b"event: message\nid: 1\nretry: 100\n"
    b'data: {"a":1}\n\n'
    b"data:no-space\n\n"
    b"data: first line\ndata: second line\n\n"
    b"\n\n"  # blank lines without data are no event
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a":1}', b"no-space", b"first line\nsecond line", b"[DONE]"]


@pytest.mark.parametrize("size", [1, 2, 5, 13, len(STREAM)])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_sse_events_are_read_however_the_bytes_are_split(size: int, newline: bytes) -> None:
    assert read_events(STREAM.replace(b"\n", newline), size) == EXPECTED


def test_a_last_event_without_its_blank_line_or_newline_counts() -> None:
    assert read_events(b'data: {"a":1}\n\ndata: {"usage":{}}', 4) == [b'{"a":1}', b'{"usage":{}}']


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_between_events_only_for_whole_events_with_none_open(newline: bytes) -> None:
    reader = SSEDataReader(lambda data: None, limit=LIMIT)
    whole = b'data: {"a":1}' + newline + newline
    assert reader.between_events(whole)
    assert not reader.between_events(b'data: {"a":1}' + newline)  # the event is not ended yet
    assert not reader.between_events(b'data: {"a"')
    reader.feed(b"data: first" + newline)  # an event is open: its end may come in the next bytes
    assert not reader.between_events(whole)
    reader.feed(newline)
    assert reader.between_events(whole)
    reader.feed(b"data: a line not fini")
    assert not reader.between_events(whole)


def test_an_overlong_line_stops_at_the_limit() -> None:
    reader = SSEDataReader(lambda data: None, limit=100)
    reader.feed(b"data: " + b"x" * 50)
    with pytest.raises(BodyTooLargeError):
        reader.feed(b"x" * 60)
