"""``health_router``: the probe's routes for an orchestrator's liveness and readiness checks.

- ``GET /healthz``, liveness: the process answers. It touches nothing external
  (no provider, no database): a liveness probe that fails because a dependency
  is down makes the orchestrator restart a process that is fine.
- ``GET /readyz``, readiness: 200 when the service is healthy or degraded, 503
  when it is unhealthy (the orchestrator stops sending it traffic), with the
  report.
- ``GET /health``: the report, for people and dashboards (``?verbose=0``: the
  status of each component only); 503 when unhealthy, as ``/readyz``.

Every answer says ``Cache-Control: no-store``, a refusal (405, 422) too: a cached health answer is a
stale one (``_caching.py``). Each route answers HEAD as GET, without the body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from .._errors import ConfigurationError
from ..health import HealthProbe, HealthReport, HealthSummary
from ._caching import NoStoreRoute

__all__ = ["Liveness", "health_router"]

_UNHEALTHY = 503


class Liveness(BaseModel):
    """The answer of ``/healthz``: the process is up."""

    status: Literal["ok"] = "ok"


def health_router(probe: HealthProbe, prefix: str = "") -> APIRouter:
    """The routes ``/healthz``, ``/readyz`` and ``/health`` serving ``probe``, under ``prefix``; GET and HEAD.

    Args:
        probe: The :class:`~autogen_reliability.HealthProbe` to serve.
        prefix: A path prefix for the three routes, e.g. ``"/ops"`` (empty: none).

    Raises:
        ConfigurationError: ``probe`` is not a HealthProbe, or ``prefix`` is not a path
            that starts with ``/`` and does not end with one.

    Example:
        >>> from fastapi import FastAPI
        >>> from autogen_reliability import HealthProbe, reliable
        >>> app = FastAPI()
        >>> app.include_router(health_router(HealthProbe({"openai": reliable(inner)})))
    """
    if not isinstance(probe, HealthProbe):
        raise ConfigurationError(f"health_router takes a HealthProbe, got {type(probe).__name__}")
    if not isinstance(prefix, str) or (prefix and (not prefix.startswith("/") or prefix.endswith("/"))):
        raise ConfigurationError(f"prefix must be empty or a path such as '/ops' (no trailing '/'), got {prefix!r}")
    router = APIRouter(prefix=prefix, tags=["health"], route_class=NoStoreRoute)

    def unhealthy(model: Any) -> dict[int | str, dict[str, Any]]:
        # The 503's body is what the route answers with 200: a client generated from the schema parses it so.
        return {_UNHEALTHY: {"model": model, "description": "Unhealthy: not fit to take traffic."}}

    @router.get(
        "/healthz",
        response_model=Liveness,
        summary="Liveness: the process answers",
        description="Touches nothing external: no provider request, no database query.",
    )
    async def healthz() -> Liveness:
        return Liveness()

    @router.get(
        "/readyz",
        response_model=HealthReport,
        responses=unhealthy(HealthReport),
        summary="Readiness: 200 when healthy or degraded, 503 when unhealthy",
    )
    async def readyz(response: Response) -> HealthReport:
        report = await probe.check()
        if not report.ready:
            response.status_code = _UNHEALTHY
        return report

    @router.get(
        "/health",
        response_model=HealthReport | HealthSummary,
        responses=unhealthy(HealthReport | HealthSummary),
        summary="The health report (503 when unhealthy)",
    )
    async def health(
        response: Response,
        verbose: Annotated[
            bool, Query(description="false (or 0): only the status of each component; true (or 1): everything.")
        ] = True,
    ) -> HealthReport | HealthSummary:
        report = await probe.check()
        if not report.ready:
            response.status_code = _UNHEALTHY
        return report if verbose else report.summary()

    # Load balancers and uptime monitors that probe with HEAD get the status line, not a 405 (not in the
    # schema: the GET operations describe them).
    for path, endpoint in (("/healthz", healthz), ("/readyz", readyz), ("/health", health)):
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
    return router
