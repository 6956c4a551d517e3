"""``Cache-Control`` on every answer of the library's routes, their refusals included.

A route sets headers on the answers it makes itself; the others are made by
FastAPI's and the application's exception handlers (a parameter FastAPI
refuses, 422; the application's own dependency refusing a request, 401) and
carried none. The route classes of :func:`health_router` and
:func:`usage_router` hand their route's ASGI app a ``send`` from
:func:`with_cache_control`, which sets the header on whatever answer starts, so
a cache between the client and the service keeps none of them. A method the
route does not answer is refused before its app runs (a 405, raised to the
application's handler): the route class gives that exception the header. The
application's own routes are untouched.
"""

from __future__ import annotations

from starlette.types import Message, Send

__all__ = ["with_cache_control"]

_HEADER = b"cache-control"


def with_cache_control(send: Send, value: str) -> Send:
    """``send``, setting ``Cache-Control: value`` on the answer it starts (in place of one the answer had)."""
    field = value.encode("latin-1")

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, text) for name, text in message.get("headers", ()) if name.lower() != _HEADER]
            message = {**message, "headers": [*headers, (_HEADER, field)]}
        await send(message)

    return sending
