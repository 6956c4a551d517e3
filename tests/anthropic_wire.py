"""A minimal fake of Anthropic's Messages API wire protocol, for driving AutoGen's real AnthropicChatCompletionClient.

`FakeAnthropicServer` is a Starlette app served by uvicorn on a thread of its own,
on 127.0.0.1 and a free port. It answers ``POST /v1/messages`` with the next
scripted `AnthropicReply`, the way Anthropic's API does: a ``Message`` object as
JSON, or, for a request with ``"stream": true``, the ``text/event-stream`` of
``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``,
``content_block_stop``, ``message_delta`` and ``message_stop`` events, each
written as a chunk of its own (the shapes of the anthropic SDK's
``RawMessageStreamEvent`` types). The usage objects are sent as scripted, so a
test decides which fields a response carries.

A reply may also call a tool (a ``tool_use`` block after the text, its input streamed
as ``input_json_delta`` fragments), and a stream may be cut off after some of its
events (the connection dropped, no end of the chunked body), end cleanly there (the
body complete, as a proxy that drops a stream's tail sends it), or be held there until
`FakeAnthropicServer.release` (for a client that gives up while it waits).

A request the API would refuse for its extended thinking (``budget_tokens`` below 1,024, or
``max_tokens`` not above it) gets the API's 400 ``invalid_request_error`` instead of a reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["AnthropicReply", "FakeAnthropicServer"]


@dataclass(frozen=True)
class AnthropicReply:
    """One answer: its text, the model it names, and its usage objects as they go on the wire.

    Attributes:
        text: The answer's text (one ``text`` content block; streamed as two deltas).
        model: The ``model`` the response names (Anthropic's API names the dated model).
        usage: The ``usage`` of the JSON ``Message``, and of a stream's ``message_start`` (there with
            ``output_tokens`` as the API sends it at the start, ``start_output_tokens``).
        delta_usage: The ``usage`` of a stream's ``message_delta`` (cumulative counts); by default only
            ``output_tokens``, as the API has long sent it.
        start_output_tokens: The ``output_tokens`` of ``message_start``'s usage.
        headers: Response headers to send besides ``content-type`` and ``request-id``.
        tool_name: A tool the answer calls, in a ``tool_use`` block after the text (the text block is left out
            if ``text`` is empty); the stop reason is then ``tool_use``.
        tool_json: The tool call's input as a stream sends it: the ``partial_json`` of one
            ``input_json_delta`` each; joined, the JSON of its ``input``.
        cut_after_events: Send only this many of the stream's events (``ping`` included), then drop the
            connection without ending the body.
        hold_after_events: Send this many of the stream's events, then wait for
            `FakeAnthropicServer.release` (or the server's exit) before the rest (or before the cut).
        end_after_events: Send only this many of the stream's events, then end the body cleanly.
        end_within: With ``end_after_events``, also send the next event's bytes up to this text in it (the body
            then ends inside that event).
        json_body: Send this JSON object with status 200 instead of the message or stream, whatever the request
            asked for (as a gateway in front of the API may answer an error).
    """

    text: str
    model: str
    usage: Mapping[str, Any]
    delta_usage: Mapping[str, Any] | None = None
    start_output_tokens: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)
    tool_name: str | None = None
    tool_json: Sequence[str] = ()
    cut_after_events: int | None = None
    hold_after_events: int | None = None
    end_after_events: int | None = None
    end_within: str | None = None
    json_body: Mapping[str, Any] | None = None


class _CutOff(Exception):
    """Raised by a stream scripted to be cut off: uvicorn then drops the connection mid-body."""


class _QuietCutOffs(logging.Filter):
    """Keeps uvicorn from logging the cut-offs a test asked for as errors of the application."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _CutOff))


class FakeAnthropicServer:
    """Serves scripted `AnthropicReply` objects on ``POST /v1/messages``; records each request's JSON body.

    Use as a context manager; ``base_url`` is what ``AnthropicChatCompletionClient(base_url=...)`` takes.
    """

    def __init__(self) -> None:
        self.replies: deque[AnthropicReply] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)  # a release() was given, or the server is stopping
        self._releases = 0
        self._stopping = False
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        # Listening before uvicorn runs: a client connecting early waits in the backlog, no start-up race.
        self._socket.listen(64)
        self.port: int = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="fake-anthropic", daemon=True
        )

    def enqueue(self, *replies: AnthropicReply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self.replies.extend(replies)

    def release(self) -> None:
        """Let one stream held by ``hold_after_events`` go on (a release given before the hold is kept for it)."""
        with self._lock:
            self._releases += 1
            self._released.notify_all()

    def __enter__(self) -> FakeAnthropicServer:
        logging.getLogger("uvicorn.error").addFilter(_QUIET_CUT_OFFS)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self._stopping = True
            self._released.notify_all()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        logging.getLogger("uvicorn.error").removeFilter(_QUIET_CUT_OFFS)

    def _hold(self) -> None:
        """Wait for a release or the server's exit (on a thread: the server's event loop serves the others)."""
        with self._lock:
            self._released.wait_for(lambda: self._releases > 0 or self._stopping)
            if self._releases > 0:
                self._releases -= 1

    # ---- the endpoint

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            refused = _invalid(body)
            reply = self.replies.popleft() if self.replies and refused is None else None
        if refused is not None:  # as the API refuses it, before it answers anything
            error = {"type": "error", "error": {"type": "invalid_request_error", "message": refused}}
            return JSONResponse(error, status_code=400)
        if reply is None:
            error = {"type": "error", "error": {"type": "api_error", "message": "no reply scripted"}}
            return JSONResponse(error, status_code=500)
        ordinal = len(self.requests)
        headers = {"request-id": f"req_fake_{ordinal}", **reply.headers}
        if reply.json_body is not None:
            return JSONResponse(reply.json_body, headers=headers)
        if body.get("stream"):
            return StreamingResponse(
                self._stream(reply, ordinal), media_type="text/event-stream; charset=utf-8", headers=headers
            )
        return JSONResponse(_message(reply, ordinal), headers=headers)

    async def _stream(self, reply: AnthropicReply, ordinal: int) -> AsyncIterator[bytes]:
        for position, (name, data) in enumerate(_events(reply, ordinal)):
            if position == reply.hold_after_events:
                await asyncio.to_thread(self._hold)
            if position == reply.cut_after_events:
                raise _CutOff
            event = f"event: {name}\ndata: {json.dumps(data)}\n\n"
            if position == reply.end_after_events:
                if reply.end_within is not None:
                    yield event[: event.index(reply.end_within)].encode()
                return
            yield event.encode()


_QUIET_CUT_OFFS = _QuietCutOffs()


def _invalid(body: Mapping[str, Any]) -> str | None:
    """Why the API would refuse this request (the checks a test needs), or None."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if body.get("max_tokens", 0) <= budget:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
    return None


def _tool_use(reply: AnthropicReply, ordinal: int, *, streamed: bool) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_fake_{ordinal}",
        "name": reply.tool_name,
        "input": {} if streamed else json.loads("".join(reply.tool_json)),
    }


def _message(reply: AnthropicReply, ordinal: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text or not reply.tool_name else []
    if reply.tool_name:
        content.append(_tool_use(reply, ordinal, streamed=False))
    return {
        "id": f"msg_fake_{ordinal}",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": "tool_use" if reply.tool_name else "end_turn",
        "stop_sequence": None,
        "usage": dict(reply.usage),
    }


def _events(reply: AnthropicReply, ordinal: int) -> list[tuple[str, dict[str, Any]]]:
    """A stream's events, in order: each an SSE event's name and data."""
    start = {
        **_message(reply, ordinal),
        "content": [],
        "stop_reason": None,
        "usage": {**reply.usage, "output_tokens": reply.start_output_tokens},
    }
    half = len(reply.text) // 2
    delta_usage = (
        dict(reply.delta_usage) if reply.delta_usage is not None else {"output_tokens": reply.usage["output_tokens"]}
    )
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    index = 0
    if reply.text or not reply.tool_name:
        events += [
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            ("ping", {"type": "ping"}),
            *(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}},
                )
                for part in (reply.text[:half], reply.text[half:])
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ]
        index = 1
    if reply.tool_name:
        block = _tool_use(reply, ordinal, streamed=True)
        events += [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}),
            *(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": part},
                    },
                )
                for part in reply.tool_json
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if reply.tool_name else "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events
