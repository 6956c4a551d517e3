"""``UsageContextMiddleware``: every LLM call a request triggers is attributed to the caller's project and session.

A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``): it runs the
whole of the application's handling of a request, the streaming of a
``StreamingResponse`` body, a WebSocket's life and background tasks included,
inside one :func:`~autogen_reliability.usage_scope`, set from four request
headers:

=================  ==========  ===================================================
header (default)   attribute   value
=================  ==========  ===================================================
``X-Project-ID``   project     one label (see below)
``X-Session-ID``   session     one label; generated when absent, and returned
``X-Agent-Name``   agent       one label; attributes *every* call of the request
``X-Usage-Tags``   tags        ``key=value`` pairs separated by commas
=================  ==========  ===================================================

A label is 1 to :data:`MAX_LABEL_LENGTH` (128) characters from
:data:`LABEL_CHARACTERS`: ASCII letters, digits and ``- _ . : @ / +``. Tags:
at most :data:`MAX_TAGS` (16) pairs; a key is 1 to :data:`MAX_TAG_KEY_LENGTH`
(64) letters, digits, ``-``, ``_`` or ``.``; a value is a label; a key given
twice, an item without ``=`` or an empty item is refused; spaces around an
item are ignored (``tier=gold, region=eu``). A header given twice is refused,
but ``X-Usage-Tags`` lines are joined with commas as HTTP lists are.

Why so strict: the values go to the ledger and from there into reports, CSV
files, dashboards and shell pipelines; a small, printable character set keeps
them one token everywhere, and the bounds keep a client from filling the
ledger (and the report's groups) with arbitrary text.

A browser's CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``)
is passed through as it is: browsers send no custom header on it.

What the caller gets back: every HTTP response carries the request's session
in ``X-Session-ID`` (the one sent, or the one generated: a UUID), unless the
application set that header itself; a WebSocket's accept carries it too, and
so does the HTTP response a WebSocket is turned away with (the denial response). A
request with a bad value gets a 400 with a JSON body
``{"detail": "...", "header": "X-Project-ID"}``; a project not in the
allow-list, a 403 of the same shape. A WebSocket handshake with a bad value is
closed before it is accepted, with code 1008 (policy violation) and the same
message as its reason.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import ConfigurationError, usage_scope
from .._ids import time_ordered_uuid
from .._redaction import quoted

__all__ = [
    "LABEL_CHARACTERS",
    "MAX_LABEL_LENGTH",
    "MAX_TAGS",
    "MAX_TAG_KEY_LENGTH",
    "TAG_KEY_CHARACTERS",
    "UsageContextMiddleware",
]

MAX_LABEL_LENGTH: Final = 128
"""The longest project, session, agent or tag value a header may carry."""
MAX_TAGS: Final = 16
"""The most ``key=value`` pairs ``X-Usage-Tags`` may carry."""
MAX_TAG_KEY_LENGTH: Final = 64
"""The longest tag key."""
LABEL_CHARACTERS: Final = frozenset(string.ascii_letters + string.digits + "-_.:@/+")
"""The characters of a project, session, agent or tag value."""
TAG_KEY_CHARACTERS: Final = frozenset(string.ascii_letters + string.digits + "-_.")
"""The characters of a tag key (a report groups by ``tag:KEY``)."""

_LABEL_RULE: Final = f"1 to {MAX_LABEL_LENGTH} ASCII letters, digits and - _ . : @ / +"
_TAG_RULE: Final = "key=value pairs separated by commas, e.g. tier=gold,region=eu"
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110, 5.6.2)
_POLICY_VIOLATION: Final = 1008  # WebSocket close code (RFC 6455, 7.4.1)
_MAX_CLOSE_REASON: Final = 123  # bytes a WebSocket close frame's reason may take
# The messages that start what the client gets back: a response, a WebSocket's accept, or its denial response.
_STARTS: Final = frozenset(("http.response.start", "websocket.accept", "websocket.http.response.start"))


class _Refused(Exception):
    """A request the middleware answers itself: its status, the header at fault and why."""

    def __init__(self, status: int, header: str, detail: str) -> None:
        self.status = status
        self.header = header
        self.detail = detail
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class _Read:
    """What a request's headers attribute it to."""

    project: str | None
    session: str | None
    agent: str | None
    tags: Mapping[str, str]


def _text(raw: bytes) -> str:
    """A header's bytes as text, to check and to quote back: UTF-8 as clients send it, else Latin-1 (RFC 9110's)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _label_problem(value: str) -> str | None:
    """Why ``value`` is not a label, or None."""
    if not value:
        return "is empty"
    if len(value) > MAX_LABEL_LENGTH:
        return f"is {len(value)} characters long; the limit is {MAX_LABEL_LENGTH}"
    for position, character in enumerate(value, 1):
        if character not in LABEL_CHARACTERS:
            return f"has {character!r} at position {position}; a value is {_LABEL_RULE}"
    return None


def _header_name(option: str, value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ConfigurationError(f"{option} must be an HTTP header name (letters, digits, -) or None, got {value!r}")
    return value.lower().encode("ascii")


def _option_label(option: str, value: object) -> str:
    problem = "is not a string" if not isinstance(value, str) else _label_problem(value)
    if problem is not None:
        raise ConfigurationError(f"{option} {value!r} {problem}; it must be what a header may carry: {_LABEL_RULE}")
    assert isinstance(value, str)
    return value


def _check_bool(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{option} must be True or False, got {value!r}")
    return value


class UsageContextMiddleware:
    """Runs each request inside ``usage_scope(...)`` set from its headers, so every LLM call it makes is attributed.

    Pure ASGI: a streaming response, a WebSocket and background tasks stay
    inside the scope until they end. Add it to the app that runs the agents
    (``app.add_middleware(UsageContextMiddleware, ...)``); the header values
    are validated (module docstring: 1 to 128 characters of a small, safe set)
    and a bad one is answered with a 400 (a WebSocket: closed with code 1008)
    before the application sees the request. A field the request does not set
    is left to the wrapped client's own defaults (``reliable(..., project=...)``).

    Args:
        app: The ASGI application.
        project_header: The header naming the project (None: the project is never read from a request).
        session_header: The header naming the session, and the response header returning it
            (None: neither; then ``generate_session`` must be False).
        agent_header: The header naming the agent (None: not read). It attributes every call the
            request makes, whichever agent makes it.
        tags_header: The header carrying tags, ``key=value`` pairs separated by commas (None: not read).
        projects: An allow-list: a request naming another project gets a 403. None: any valid name.
        default_project: The project of a request without the project header (None: the wrapped
            client's own default). Must be in ``projects`` when both are given.
        require_project: Refuse (400) a request without the project header.
        generate_session: Give a request without a session header a new session id (a UUID),
            returned in the session header of the response.
        exempt_paths: Paths passed through untouched, with what is under them (``"/metrics"`` covers
            ``/metrics/...``): health probes and scrapes send none of these headers. A path is the app's
            own: an app mounted at ``/api`` (or served with ``--root-path /api``) exempts ``/api/healthz``
            with ``"/healthz"`` (the whole path, ``"/api/healthz"``, matches too).

    Raises:
        ConfigurationError: A header name is not one, two options name the same header, a project of
            ``projects`` or ``default_project`` could never come in a header, ``default_project`` is not
            in ``projects``, ``require_project`` or ``projects`` comes without a ``project_header``,
            ``require_project`` comes with a ``default_project``, ``generate_session``
            has no header to return the id in, or an exempt path does not start with ``/``. Raised when
            the middleware is made: ``app.add_middleware`` only stores the options, and Starlette makes it
            on the app's first call (its lifespan), which fails the startup only where the server runs the
            lifespan strictly (uvicorn ``--lifespan on``; its default, ``auto``, starts and answers 500s).
            ``UsageContextMiddleware(app, **options)`` before ``add_middleware`` checks them at once.

    Example:
        >>> from fastapi import FastAPI
        >>> from fastapi.testclient import TestClient
        >>> from autogen_reliability import current_attribution
        >>> app = FastAPI()
        >>> app.add_middleware(UsageContextMiddleware, projects={"acme-support"}, exempt_paths={"/healthz"})
        >>> @app.get("/whoami")
        ... async def whoami() -> dict[str, object]:
        ...     who = current_attribution()  # what a model call made here is attributed to
        ...     return {"project": who.project, "session": who.session, "tags": dict(who.tags)}
        >>> client = TestClient(app)
        >>> reply = client.get("/whoami", headers={"X-Project-ID": "acme-support", "X-Usage-Tags": "tier=gold"})
        >>> reply.json()["project"], reply.json()["tags"], reply.headers["X-Session-ID"] == reply.json()["session"]
        ('acme-support', {'tier': 'gold'}, True)
        >>> client.get("/whoami", headers={"X-Project-ID": "acme support"}).status_code
        400
        >>> client.get("/whoami", headers={"X-Project-ID": "umbrella"}).status_code
        403
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        project_header: str | None = "X-Project-ID",
        session_header: str | None = "X-Session-ID",
        agent_header: str | None = "X-Agent-Name",
        tags_header: str | None = "X-Usage-Tags",
        projects: Collection[str] | None = None,
        default_project: str | None = None,
        require_project: bool = False,
        generate_session: bool = True,
        exempt_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        names = {
            "project_header": project_header,
            "session_header": session_header,
            "agent_header": agent_header,
            "tags_header": tags_header,
        }
        keys = {option: _header_name(option, value) for option, value in names.items()}
        given = [key for key in keys.values() if key is not None]
        if len(set(given)) != len(given):
            raise ConfigurationError(f"two options name the same header: {names}")
        self._project_key, self._session_key = keys["project_header"], keys["session_header"]
        self._agent_key, self._tags_key = keys["agent_header"], keys["tags_header"]
        # The names as configured, for messages; the keys lower-cased, as ASGI servers give header names.
        self._names: dict[bytes, str] = {key: str(names[option]) for option, key in keys.items() if key is not None}

        if projects is not None:
            if isinstance(projects, str | Mapping) or not isinstance(projects, Collection):
                raise ConfigurationError(f"projects must be a collection of project names or None, got {projects!r}")
            if not projects:
                raise ConfigurationError("projects is empty, which would refuse every project; None allows any")
            projects = frozenset(_option_label("a project of projects", project) for project in projects)
        self._projects: frozenset[str] | None = projects
        if default_project is not None:
            _option_label("default_project", default_project)
            if projects is not None and default_project not in projects:
                raise ConfigurationError(f"default_project {default_project!r} is not in projects")
        self._default_project = default_project
        self._require_project = _check_bool("require_project", require_project)
        if require_project and default_project is not None:
            raise ConfigurationError("require_project refuses a request without the header; default_project fills it")
        if self._project_key is None and (require_project or projects is not None):
            # No project is read from a request: neither could ever refuse one.
            option = "require_project" if require_project else "projects"
            raise ConfigurationError(f"{option} needs a project_header to read the project from")
        self._generate_session = _check_bool("generate_session", generate_session)
        if generate_session and self._session_key is None:
            raise ConfigurationError("generate_session needs a session_header to return the id in; or pass False")

        if isinstance(exempt_paths, str | Mapping) or not isinstance(exempt_paths, Collection):
            raise ConfigurationError(f"exempt_paths must be a collection of paths, got {exempt_paths!r}")
        for path in exempt_paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(f"an exempt path must start with /, got {path!r}")
        self._exempt = tuple(sorted({path.rstrip("/") or "/" for path in exempt_paths}))

    def _is_exempt(self, scope: Scope) -> bool:
        """Whether the path the app routes (``/healthz`` of ``/api/healthz`` under a mount or ``--root-path /api``),
        or the whole path, is one of the exempt paths or under one."""
        paths = {scope.get("path", ""), _route_path(scope)}
        return any(
            path == exempt or path.startswith(exempt.rstrip("/") + "/") for path in paths for exempt in self._exempt
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handles one ASGI connection: ``http`` and ``websocket`` inside the scope, anything else (lifespan) as is."""
        if scope["type"] not in ("http", "websocket") or self._is_exempt(scope) or _preflight(scope):
            await self.app(scope, receive, send)
            return
        try:
            read = self._read(scope["headers"])
        except _Refused as refused:
            await _refuse(scope, receive, send, refused)
            return
        if read.session is not None and self._session_key is not None:
            send = _returning_header(send, self._session_key, read.session.encode("ascii"))
        with usage_scope(project=read.project, session=read.session, agent=read.agent, tags=read.tags):
            await self.app(scope, receive, send)

    def _read(self, headers: Collection[tuple[bytes, bytes]]) -> _Read:
        """The attribution the headers give; raises :class:`_Refused` at the first bad one."""
        found: dict[bytes, list[str]] = {}
        for raw_name, raw_value in headers:
            key = raw_name.lower()
            if key in self._names:
                found.setdefault(key, []).append(_text(raw_value).strip(" \t"))
        project = self._label(self._project_key, found)
        if project is None:
            if self._require_project:
                assert self._project_key is not None
                name = self._names[self._project_key]
                raise _Refused(400, name, f"{name} is required: name the project the request is made for")
            project = self._default_project
        elif self._projects is not None and project not in self._projects:
            assert self._project_key is not None
            name = self._names[self._project_key]
            raise _Refused(403, name, f"{name}: project {quoted(project)} is not allowed here")
        session = self._label(self._session_key, found)
        if session is None and self._generate_session:
            session = str(time_ordered_uuid())
        return _Read(project, session, self._label(self._agent_key, found), self._tags(found))

    def _label(self, key: bytes | None, found: Mapping[bytes, list[str]]) -> str | None:
        if key is None or key not in found:
            return None
        name = self._names[key]
        values = found[key]
        if len(values) > 1:
            raise _Refused(400, name, f"{name} is given {len(values)} times; give it once")
        problem = _label_problem(values[0])
        if problem is not None:
            shown = "" if not values[0] else f" {quoted(values[0])}"
            raise _Refused(400, name, f"{name}{shown} {problem}")
        return values[0]

    def _tags(self, found: Mapping[bytes, list[str]]) -> dict[str, str]:
        if self._tags_key is None or self._tags_key not in found:
            return {}
        name = self._names[self._tags_key]
        text = ",".join(found[self._tags_key])  # several lines of a list header are one list (RFC 9110, 5.3)
        if not text.strip(" \t"):
            return {}
        items = text.split(",")
        if len(items) > MAX_TAGS:
            raise _Refused(400, name, f"{name} has {len(items)} tags; the limit is {MAX_TAGS}")
        tags: dict[str, str] = {}
        for number, raw in enumerate(items, 1):
            item = raw.strip(" \t")
            key, equals, value = item.partition("=")
            if not item:
                raise _Refused(400, name, f"{name}: tag {number} is empty; write {_TAG_RULE}")
            if not equals:
                raise _Refused(400, name, f"{name}: tag {number} {quoted(item)} is not key=value; write {_TAG_RULE}")
            if not key or len(key) > MAX_TAG_KEY_LENGTH or not set(key) <= TAG_KEY_CHARACTERS:
                raise _Refused(
                    400,
                    name,
                    f"{name}: the key {quoted(key)} of tag {number} is not 1 to {MAX_TAG_KEY_LENGTH} "
                    "ASCII letters, digits and - _ .",
                )
            if key in tags:
                raise _Refused(400, name, f"{name}: the key {quoted(key)} is given twice")
            problem = _label_problem(value)
            if problem is not None:
                raise _Refused(400, name, f"{name}: the value of {quoted(key)} {problem}")
            tags[key] = value
        return tags


def _route_path(scope: Scope) -> str:
    """The path without the ``root_path`` before it, as Starlette routes it (a mount or a proxy's prefix)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def _preflight(scope: Scope) -> bool:
    """A browser's CORS preflight: it carries no attribution (a browser sends none on it) and calls no model."""
    return scope.get("method") == "OPTIONS" and any(
        name.lower() == b"access-control-request-method" for name, _ in scope["headers"]
    )


def _returning_header(send: Send, key: bytes, value: bytes) -> Send:
    """``send``, adding the header ``key: value`` to the response, the WebSocket's accept, or the HTTP response a
    WebSocket is turned away with (the denial response extension), if it has none."""

    async def sending(message: Message) -> None:
        if message["type"] in _STARTS:
            headers = list(message.get("headers") or [])
            if all(name.lower() != key for name, _ in headers):
                message = {**message, "headers": [*headers, (key, value)]}
        await send(message)

    return sending


async def _refuse(scope: Scope, receive: Receive, send: Send, refused: _Refused) -> None:
    """Answers a request the middleware does not let through: JSON for HTTP, a close with 1008 for a WebSocket."""
    if scope["type"] == "http":
        # Said by the request's headers, not its URL: no cache may keep it for the next caller of that URL.
        response = JSONResponse(
            {"detail": refused.detail, "header": refused.header},
            status_code=refused.status,
            headers={"Cache-Control": "no-store"},
        )
        await response(scope, receive, send)
        return
    message = await receive()  # the handshake (websocket.connect), answered by closing before accepting
    if message["type"] == "websocket.connect":
        reason = refused.detail.encode("utf-8")[:_MAX_CLOSE_REASON].decode("utf-8", "ignore")
        await send({"type": "websocket.close", "code": _POLICY_VIOLATION, "reason": reason})
