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
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Mapping
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
    """

    text: str
    model: str
    usage: Mapping[str, Any]
    delta_usage: Mapping[str, Any] | None = None
    start_output_tokens: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)


class FakeAnthropicServer:
    """Serves scripted `AnthropicReply` objects on ``POST /v1/messages``; records each request's JSON body.

    Use as a context manager; ``base_url`` is what ``AnthropicChatCompletionClient(base_url=...)`` takes.
    """

    def __init__(self) -> None:
        self.replies: deque[AnthropicReply] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
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

    def __enter__(self) -> FakeAnthropicServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    # ---- the endpoint

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            reply = self.replies.popleft() if self.replies else None
        if reply is None:
            error = {"type": "error", "error": {"type": "api_error", "message": "no reply scripted"}}
            return JSONResponse(error, status_code=500)
        ordinal = len(self.requests)
        headers = {"request-id": f"req_fake_{ordinal}", **reply.headers}
        if body.get("stream"):
            return StreamingResponse(
                _events(reply, ordinal), media_type="text/event-stream; charset=utf-8", headers=headers
            )
        return JSONResponse(_message(reply, ordinal), headers=headers)


def _message(reply: AnthropicReply, ordinal: int) -> dict[str, Any]:
    return {
        "id": f"msg_fake_{ordinal}",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": dict(reply.usage),
    }


async def _events(reply: AnthropicReply, ordinal: int) -> AsyncIterator[bytes]:
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
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
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
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    for name, data in events:
        yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
