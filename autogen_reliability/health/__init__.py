"""The health probe: whether a service's LLM clients and usage store are fit to serve.

:class:`HealthProbe` watches the attempts of wrapped clients (passive: no
provider request), reads their circuit breakers, optionally makes one cheap
real request per client and ``ttl`` (``active=True``), and checks the usage
store; :meth:`HealthProbe.check` returns a :class:`HealthReport`. The routes
that serve it to an orchestrator are in ``autogen_reliability.fastapi``; see
docs/health.md.
"""

from ._probe import HealthProbe
from ._report import (
    ActiveCheck,
    AttemptSummary,
    CircuitStatus,
    ClientHealth,
    HealthReport,
    HealthStatus,
    HealthSummary,
    ProviderHealth,
    UsageStoreHealth,
)

__all__ = [
    "ActiveCheck",
    "AttemptSummary",
    "CircuitStatus",
    "ClientHealth",
    "HealthProbe",
    "HealthReport",
    "HealthStatus",
    "HealthSummary",
    "ProviderHealth",
    "UsageStoreHealth",
]
