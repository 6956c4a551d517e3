"""``usage_router``: the usage ledger's report and sessions over HTTP, for the app to mount behind its own auth.

``GET /usage/report`` is :meth:`UsageStore.report` with its filters as query
parameters, as JSON (``UsageReport.to_dict()``) or, when the client's
``Accept`` prefers ``text/html`` (a browser), the self-contained HTML report.
``GET /usage/sessions`` is :meth:`UsageStore.sessions`. Times are read as the
command line reads them (``2025-05-01``, ``2025-05-01T09:30:00+02:00``, ``7d``;
``reports/_period.py``), every relative one against one reading of the clock.

A bad parameter is a 400 with one sentence in ``detail`` (the store's own
message where the store refuses it), never FastAPI's 422 list. The database
work (and rendering the HTML) runs in the thread pool, off the event loop; a
database that cannot be reached, or that the driver cannot read (a file that
is not a database, a corrupt one), or whose connection pool has none free
in time (every connection busy), is a 503.

Every answer, a refusal (400, 405, 503) too, says ``Cache-Control: private,
no-store``: no cache between keeps a customer's costs, or what was refused.
Each route answers HEAD as GET, without the body.

The routes expose what the service spends, per project and session: mounting
them, and behind which authentication, is the application's decision.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool

from .. import ConfigurationError, UsageStore
from .._redaction import quoted, redact
from ..accounting import PricingTable
from ..reports._period import parse_time, resolve_time
from ._caching import NoStoreRoute
from ._responses import ErrorModel, SessionsModel, UsageReportModel

__all__ = ["MAX_SESSIONS", "MAX_TOP", "usage_router"]

logger = logging.getLogger("autogen_reliability")

MAX_TOP: Final = 1000
"""The most top sessions ``GET /usage/report`` lists (``top``)."""
MAX_SESSIONS: Final = 1000
"""The most sessions ``GET /usage/sessions`` lists (``limit``)."""

# A date and time, a space, and a UTC offset: an offset's "+" as the query string decoded it.
_SPACED_OFFSET: Final = re.compile(
    r"(?P<moment>[0-9]{4}-?[0-9]{2}-?[0-9]{2}[T ][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?)?)"
    r" (?P<offset>[0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?)?)"
)
_TIME = "A date (2025-05-01, midnight UTC), a date and time with its UTC offset, or a time ago (24h, 7d, 2w)"
# The report page loads nothing (inline CSS and SVG); the header says so again for a browser that ignores <meta>.
_HTML_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_BAD: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": ErrorModel, "description": "A bad parameter; `detail` says which and why"},
    # Declared so the schema shows what can come instead of FastAPI's 422 (which these routes never send).
    "4XX": {"model": ErrorModel, "description": "Refused by the application's own dependencies (its auth)"},
}
_UNAVAILABLE: Final[dict[int | str, dict[str, Any]]] = {
    503: {"model": ErrorModel, "description": "The usage database cannot be reached or read"}
}


class _OneMessageRoute(NoStoreRoute):
    """A route whose bad parameters are a 400 with one sentence, not FastAPI's 422 with a list.

    Every answer says ``Cache-Control: private, no-store``, a refusal (400, 405, 503, the app's own
    dependency's) too (:class:`NoStoreRoute`).
    """

    cache_control = "private, no-store"  # costs per customer: no shared cache keeps them

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                raise HTTPException(400, detail=_first_problem(error.errors())) from None

        return handle


def _first_problem(errors: Sequence[Any]) -> str:
    """FastAPI's validation errors as one sentence: the first one, its parameter, what was sent."""
    if not errors:
        return "bad request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
    sent = first.get("input")
    shown = "" if sent is None or isinstance(sent, dict) else f", got {quoted(str(sent))}"
    return f"{where}: {first.get('msg', 'is not valid')}{shown}"


def _bad(message: str) -> HTTPException:
    return HTTPException(400, detail=message)


# Each route's parameters; the other's, sent to it, would be ignored, and its answer read as filtered by them.
_REPORT_PARAMETERS: Final = ("project", "since", "until", "session", "agent", "tag", "by", "top")
_SESSIONS_PARAMETERS: Final = ("project", "since", "until", "limit")


def _check_query(request: Request, path: str, taken: Sequence[str], names: Mapping[str, str | None]) -> None:
    """Refuses what the route would otherwise ignore or read silently: a parameter of the other usage route,
    a parameter (other than ``tag``) given twice, an empty or blank ``project``, ``session`` or ``agent``.

    Other parameters are left alone: the app's own dependencies, a gateway or a cache-buster may add some.
    """
    query = request.query_params
    for name in dict.fromkeys(query.keys()):
        if name not in taken and name in (*_REPORT_PARAMETERS, *_SESSIONS_PARAMETERS):
            raise _bad(f"{name} is not a parameter of {path}; it takes {', '.join(taken)}")
        if name in taken and name != "tag" and (count := len(query.getlist(name))) > 1:
            raise _bad(f"{name} is given {count} times; give it once")
    for name, value in names.items():
        if value is not None and not value.strip():
            raise _bad(f"{name} is empty or blank: no call is attributed to such a name")


def _bound(name: str, text: str | None, now: datetime) -> datetime | None:
    if text is None:
        return None
    try:
        return resolve_time(parse_time(text), now)
    except ConfigurationError as error:
        typed = _SPACED_OFFSET.fullmatch(text.strip())
        if typed is not None:
            # 2025-05-01T09:30:00+02:00 typed into a URL (curl, an address bar) arrives with a space for its "+":
            # a query string reads "+" as a space. No time is written so, so the space can only be that "+".
            with contextlib.suppress(ConfigurationError):
                return resolve_time(parse_time(f"{typed['moment']}+{typed['offset']}"), now)
        raise _bad(f"{name}: {error}") from None


def _tags(items: Sequence[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    tags: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise _bad(f"tag: {quoted(item)} is not KEY=VALUE")
        if key.strip() in tags:
            raise _bad(f"tag: {quoted(key.strip())} is given twice")
        tags[key.strip()] = value
    return tags


def _quality(ranges: Sequence[tuple[str, float]], media_type: str) -> float:
    """The q of ``media_type`` in an Accept header: the most specific range that matches it, else 0."""
    kind = media_type.split("/", 1)[0] + "/*"
    best: tuple[int, float] | None = None
    for media_range, q in ranges:
        specificity = {media_type: 2, kind: 1, "*/*": 0}.get(media_range)
        if specificity is not None and (best is None or specificity > best[0]):
            best = (specificity, q)
    return 0.0 if best is None else best[1]


def prefers_html(accept: str | None) -> bool:
    """Whether an ``Accept`` header ranks ``text/html`` above ``application/json`` (RFC 9110, 12.5.1).

    A browser's ``text/html,...,*/*;q=0.8`` does; ``*/*`` (curl), ``application/json`` and no
    header do not: JSON is the answer when the client has no preference.
    """
    if not accept:
        return False
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):
        media_range, *parameters = part.split(";")
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                q = min(max(q, 0.0), 1.0) if math.isfinite(q) else 0.0
        ranges.append((media_range.strip().lower(), q))
    html = _quality(ranges, "text/html")
    return html > 0 and html > _quality(ranges, "application/json")


async def _off_the_loop(work: Callable[[], Any]) -> Any:
    """``work()`` in the thread pool; the store's refusal is a 400; a database that cannot be reached or read, or
    with no connection free in the engine's pool, a 503."""
    try:
        return await run_in_threadpool(work)
    except ConfigurationError as error:
        raise _bad(str(error)) from None
    except DatabaseError as error:
        # The driver's message can name the host and the user; the log gets it (redacted), the client does not.
        first_line = (redact(str(error.orig or error)).splitlines() or [type(error).__name__])[0]
        logger.warning("the usage routes cannot read the ledger: %s", first_line)
        # OperationalError: the server or file cannot be reached; any other: it answers, and not with rows.
        detail = (
            "the usage database cannot be reached; try again later"
            if isinstance(error, OperationalError)
            else "the usage database cannot be read; see the service's log"
        )
        raise HTTPException(503, detail=detail) from None
    except PoolTimeoutError as error:
        # Every connection of the engine's pool is in use (QueuePool limit ... reached): busy, not broken.
        logger.warning("the usage routes cannot read the ledger: %s", redact(str(error)).splitlines()[0])
        raise HTTPException(503, detail="the usage database is busy; try again later") from None


def usage_router(store: UsageStore, prefix: str = "", *, pricing: PricingTable | None = None) -> APIRouter:
    """The routes ``GET {prefix}/usage/report`` and ``GET {prefix}/usage/sessions`` over ``store``.

    They show what the service spends, per project and session, so mount them
    behind the app's own authentication:
    ``app.include_router(usage_router(store), dependencies=[Depends(require_admin)])``.

    ``/usage/report`` takes ``project``, ``since``, ``until`` (``2025-05-01``,
    ``2025-05-01T09:30:00+02:00`` or a time ago: ``24h``, ``7d``, ``2w``),
    ``session``, ``agent``, ``tag=KEY=VALUE`` (repeated: all of them), ``by``
    (the breakdown's columns, comma-separated, as ``UsageStore.report``'s
    ``group_by``) and ``top``; it answers ``UsageReport.to_dict()`` as JSON, or
    the report's HTML page when the ``Accept`` header prefers ``text/html``.
    ``/usage/sessions`` takes ``project``, ``since``, ``until`` and ``limit``.
    A bad parameter is a 400 with ``{"detail": "..."}``, and so is a parameter of the other route
    (``/usage/sessions?agent=writer``), one other than ``tag`` given twice, and an empty or blank
    ``project``, ``session`` or ``agent``. Both routes answer HEAD as GET, without the body.

    Args:
        store: The usage ledger to read.
        prefix: Put before the routes' paths: ``"/admin"`` gives ``/admin/usage/report``. Empty, or
            starting with ``/`` and not ending with one.
        pricing: The prices that estimate a recommendation's saving (default: genai-prices' data;
            pass the table your wrappers price with if it has overrides).

    Raises:
        ConfigurationError: ``store`` is not a UsageStore, ``prefix`` is not a path prefix, or
            ``pricing`` not a PricingTable.

    Example:
        >>> from fastapi import FastAPI
        >>> from fastapi.testclient import TestClient
        >>> app = FastAPI()
        >>> app.include_router(usage_router(store))  # the docs' example ledger: three attempts on 1 May 2025
        >>> client = TestClient(app)
        >>> report = client.get("/usage/report", params={"project": "acme-support", "since": "2025-05-01"}).json()
        >>> report["totals"]["calls"], report["totals"]["attempts"]
        (2, 3)
        >>> client.get("/usage/report", params={"since": "last tuesday"}).json()["detail"]
        "since: 'last tuesday' is not a date (2025-05-01), ..."
    """
    if not isinstance(store, UsageStore):
        raise ConfigurationError(f"store must be a UsageStore, got {type(store).__name__}")
    if not isinstance(prefix, str) or (prefix and (not prefix.startswith("/") or prefix.endswith("/"))):
        raise ConfigurationError(f"prefix must be empty or a path such as '/admin' (no trailing /), got {prefix!r}")
    if pricing is not None and not isinstance(pricing, PricingTable):
        raise ConfigurationError(f"pricing must be a PricingTable, got {type(pricing).__name__}")

    router = APIRouter(prefix=prefix, tags=["usage"], route_class=_OneMessageRoute)

    @router.get(
        "/usage/report",
        response_model=UsageReportModel,
        summary="What the usage cost, where it went, and what to change",
        responses={
            200: {"content": {"text/html": {}}, "description": "JSON, or the HTML report when Accept prefers it"},
            **_BAD,
            **_UNAVAILABLE,
        },
    )
    async def usage_report(
        request: Request,
        *,
        project: Annotated[str | None, Query(description="Only this project (default: every project)")] = None,
        since: Annotated[str | None, Query(description=f"From this time on. {_TIME}")] = None,
        until: Annotated[str | None, Query(description="Before this time (exclusive); as since")] = None,
        session: Annotated[str | None, Query(description="Only this session")] = None,
        agent: Annotated[str | None, Query(description="Only this agent")] = None,
        tag: Annotated[list[str] | None, Query(description="KEY=VALUE: only calls with this tag (repeat: all)")] = None,
        by: Annotated[
            str | None,
            Query(
                description="The breakdown's columns, comma-separated: project, session, agent, model, provider, "
                "day, week, outcome, error_kind, tag:KEY (default: agent,model)"
            ),
        ] = None,
        top: Annotated[int, Query(ge=1, le=MAX_TOP, description="How many top sessions")] = 10,
    ) -> Response:
        # In the endpoint: after the app's own dependencies (its auth: an unknown caller gets its 401).
        _check_query(
            request, "/usage/report", _REPORT_PARAMETERS, {"project": project, "session": session, "agent": agent}
        )
        now = datetime.now(UTC)  # one reading of the clock for both bounds
        since_at, until_at = _bound("since", since, now), _bound("until", until, now)
        tags = _tags(tag)
        grouping: Mapping[str, Any] = {} if by is None else {"group_by": tuple(c.strip() for c in by.split(","))}
        html = prefers_html(request.headers.get("accept"))

        def build() -> Any:
            report = store.report(
                project,
                since=since_at,
                until=until_at,
                session=session,
                agent=agent,
                tags=tags,
                top=top,
                pricing=pricing,
                **grouping,
            )
            return report.to_html() if html else report.to_dict()

        built = await _off_the_loop(build)
        headers = {"Vary": "Accept"}  # and Cache-Control, as every answer of the route (_OneMessageRoute)
        if html:
            return HTMLResponse(built, headers={**headers, "Content-Security-Policy": _HTML_POLICY})
        return JSONResponse(built, headers=headers)

    @router.get(
        "/usage/sessions",
        response_model=SessionsModel,
        summary="The most recently active sessions, with their cost, calls and errors",
        responses={**_BAD, **_UNAVAILABLE},
    )
    async def usage_sessions(
        request: Request,
        *,
        project: Annotated[str | None, Query(description="Only this project's sessions")] = None,
        since: Annotated[str | None, Query(description=f"From this time on. {_TIME}")] = None,
        until: Annotated[str | None, Query(description="Before this time (exclusive); as since")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_SESSIONS, description="At most this many sessions")] = 50,
    ) -> Response:
        _check_query(request, "/usage/sessions", _SESSIONS_PARAMETERS, {"project": project})
        now = datetime.now(UTC)
        since_at, until_at = _bound("since", since, now), _bound("until", until, now)
        if since_at is not None and until_at is not None and until_at < since_at:
            # The report's words for the same mistake.
            raise _bad(f"until ({until_at.isoformat()}) is before since ({since_at.isoformat()})")
        found = await _off_the_loop(lambda: store.sessions(project, since=since_at, until=until_at, limit=limit))
        body = {
            "project": project,
            "since": None if since_at is None else since_at.astimezone(UTC).isoformat(),
            "until": None if until_at is None else until_at.astimezone(UTC).isoformat(),
            "limit": limit,
            "sessions": [summary.to_dict() for summary in found],
        }
        return JSONResponse(body)

    # Load balancers and uptime monitors that probe with HEAD get the GET's status and headers, not a 405 (not in
    # the schema: the GET operations describe them, and a second operation would repeat their ids).
    for path, endpoint in (("/usage/report", usage_report), ("/usage/sessions", usage_sessions)):
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
    return router
