"""FastAPI integration (extra ``[fastapi]``): health routes, request attribution, and the usage ledger.

- :func:`health_router` serves a :class:`~autogen_reliability.HealthProbe` to an
  orchestrator: ``/healthz`` (liveness), ``/readyz`` (readiness) and ``/health``
  (the report).
- :class:`UsageContextMiddleware` runs every request inside ``usage_scope(...)``
  set from its ``X-Project-ID``, ``X-Session-ID``, ``X-Agent-Name`` and
  ``X-Usage-Tags`` headers (validated; a session id is generated when absent).
- :func:`usage_router` serves ``GET /usage/report`` (JSON, or the HTML report
  for a browser) and ``GET /usage/sessions``, for the app to mount behind its
  own authentication.

See docs/health.md. Importing this package without FastAPI installed raises an
ImportError that names the command to run: ``pip install 'autogen-reliability[fastapi]'``.
``import autogen_reliability`` never imports FastAPI or Starlette.
"""

from ._extra import require_fastapi

require_fastapi()

from ._health import health_router  # noqa: E402  # after the check: its error names the extra
from ._middleware import UsageContextMiddleware  # noqa: E402
from ._usage import usage_router  # noqa: E402

__all__ = ["UsageContextMiddleware", "health_router", "usage_router"]
