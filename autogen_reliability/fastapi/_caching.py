"""The route class of the library's GET routes: ``Cache-Control`` on every answer, HEAD, and the 405 that says so.

A route sets headers on the answers it makes itself; the others are made by
FastAPI's and the application's exception handlers (a parameter FastAPI
refuses, 422; the application's own dependency refusing a request, 401) and
carried none. :class:`NoStoreRoute` hands its ASGI app a ``send`` from
:func:`with_cache_control`, which sets the header on whatever answer starts, so
a cache between the client and the service keeps none of them.

A method the route does not answer is refused before its app runs (a 405,
raised to the application's handler): the exception carries the header.

The application's own routes are untouched.
"""

from __future__ import annotations

from typing import ClassVar, Final

from fastapi import HTTPException
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

__all__ = ["METHODS", "NoStoreRoute", "with_cache_control"]

METHODS: Final = ("GET", "HEAD")
"""What the library's routes answer: GET, and HEAD for load balancers and uptime monitors (not in the schema)."""

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


class NoStoreRoute(APIRoute):
    """A GET or HEAD route of the library: every answer, a refusal too, says ``cache_control``.

    A path answers GET and HEAD from a route each (the HEAD one out of the schema: one operation, one
    id). A 405 comes from the first route whose path matches, the GET one, and Starlette's would name
    that route's methods only (``Allow: GET``); this one names both.
    """

    cache_control: ClassVar[str] = "no-store"

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in METHODS:
            # Starlette's 405, raised to the app's handler before the route's app (and its send) runs.
            raise HTTPException(405, headers={"Allow": ", ".join(METHODS), "Cache-Control": self.cache_control})
        await super().handle(scope, receive, with_cache_control(send, self.cache_control))
