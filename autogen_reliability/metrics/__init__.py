"""Prometheus metrics of every wrapped client in the process (extra ``[metrics]``: ``prometheus-client``).

:func:`metrics_app` returns the ASGI app to mount at ``/metrics``; it turns
metrics on (:func:`enable_metrics`) if they are not on yet. What each metric
counts, its labels and how their number is bounded: ``docs/metrics.md``.

Example:
    >>> from autogen_reliability.metrics import disable_metrics, metrics_app
    >>> app = metrics_app()  # app.mount("/metrics", app) in a FastAPI or Starlette application
    >>> disable_metrics()
"""

try:
    import prometheus_client as _prometheus_client  # noqa: F401  # only to say what is missing
except ImportError as _missing:  # pragma: no cover - tested in a subprocess that hides the package
    raise ImportError(
        "autogen_reliability.metrics needs prometheus-client: pip install 'autogen-reliability[metrics]'"
    ) from _missing

from ._enable import disable_metrics, enable_metrics, metrics_app
from ._labels import OTHER

__all__ = ["OTHER", "disable_metrics", "enable_metrics", "metrics_app"]
