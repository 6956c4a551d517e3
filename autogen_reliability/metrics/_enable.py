"""Turning the metrics on and off, and the ASGI app that serves them.

Metrics are off until something turns them on: :func:`enable_metrics`, or
:func:`metrics_app`, which calls it. Once on, one collector counts the events of
every wrapped client in the process (those made before as well as after), in
one registry; turning them on again is a no-op, so an application that mounts
the app in several places, or calls both, counts every event once.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, cast

from prometheus_client import CollectorRegistry, make_asgi_app

from .._errors import ConfigurationError
from .._pipeline import subscribe_attempts, subscribe_calls
from ..accounting import _feed
from ._collector import ReliabilityCollector
from ._labels import LabelValues

__all__ = ["DEFAULT_MAX_LABEL_VALUES", "ASGIApp", "disable_metrics", "enable_metrics", "metrics_app"]

DEFAULT_MAX_LABEL_VALUES: Final = 100

_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
ASGIApp = Callable[[_Message, _Receive, _Send], Awaitable[None]]
"""An ASGI application (``scope, receive, send``), as Starlette and FastAPI mount it."""


@dataclass(frozen=True, slots=True)
class _Enabled:
    registry: CollectorRegistry
    collector: ReliabilityCollector
    unsubscribers: tuple[Callable[[], None], ...]


_lock = threading.Lock()
_enabled: _Enabled | None = None


def enable_metrics(
    registry: CollectorRegistry | None = None, *, max_label_values: int | None = None
) -> CollectorRegistry:
    """Turns metrics on for every wrapped client of this process; returns the registry that holds them.

    Idempotent: while metrics are on, a call returns the registry in use.

    Args:
        registry: Where the metrics go: by default a ``CollectorRegistry`` of their
            own (pass ``prometheus_client.REGISTRY`` to serve them with the process's
            other metrics).
        max_label_values: How many distinct values each of the ``project``, ``agent``,
            ``model``, ``error_type`` and ``client`` (of ``circuit_state``) labels takes
            before further ones are reported as :data:`OTHER` (default 100): what callers
            name cannot grow the number of series without bound.

    Returns:
        The registry the metrics are in.

    Raises:
        ConfigurationError: an invalid argument, or metrics are on already with
            another registry or bound (call :func:`disable_metrics` first).

    Warns:
        RuntimeWarning: ``PROMETHEUS_MULTIPROC_DIR`` is set: these counts are this
            process's, not written for ``prometheus_client``'s multiprocess mode.

    Example:
        >>> from autogen_reliability.metrics import disable_metrics, enable_metrics
        >>> registry = enable_metrics()
        >>> enable_metrics() is registry
        True
        >>> disable_metrics()
    """
    return _turn_on(registry, max_label_values)


def _turn_on(registry: CollectorRegistry | None, max_label_values: int | None) -> CollectorRegistry:
    """:func:`enable_metrics`, for it and :func:`metrics_app` (whose caller a warning names)."""
    global _enabled  # noqa: PLW0603  # one collector per process
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise ConfigurationError(
            f"registry must be a prometheus_client CollectorRegistry, got {type(registry).__name__}"
        )
    if max_label_values is not None and (
        isinstance(max_label_values, bool) or not isinstance(max_label_values, int) or max_label_values < 1
    ):
        raise ConfigurationError(f"max_label_values must be an int >= 1, got {max_label_values!r}")
    with _lock:
        if _enabled is not None:
            if registry is not None and registry is not _enabled.registry:
                raise ConfigurationError(
                    "metrics are on already, in another registry; call disable_metrics() first to move them"
                )
            limit = _enabled.collector.labels.limit
            if max_label_values is not None and max_label_values != limit:
                raise ConfigurationError(
                    f"metrics are on already with max_label_values={limit}; call disable_metrics() first to change it"
                )
            return _enabled.registry
        target = registry if registry is not None else CollectorRegistry()
        collector = ReliabilityCollector(LabelValues(max_label_values or DEFAULT_MAX_LABEL_VALUES))
        try:
            target.register(collector)
        except ValueError as error:  # the registry has metrics of these names already
            raise ConfigurationError(f"cannot add the metrics to this registry: {error}") from None
        unsubscribers = (
            subscribe_attempts(collector.attempt_ended),
            subscribe_calls(collector),
            _feed.subscribe(collector.usage_recorded),
        )
        _enabled = _Enabled(target, collector, unsubscribers)
    _warn_if_multiprocess(stacklevel=4)  # once, when turned on: the line of the caller of its caller
    return target


def _warn_if_multiprocess(stacklevel: int) -> None:
    """Warns when prometheus_client's multiprocess mode is set up: our counts are not in its files.

    The directory is set for a server with several worker processes behind one port (gunicorn, ``uvicorn
    --workers N``); each scrape of ``/metrics`` then reads the one worker that answers it, and ours would
    jump from worker to worker without a word. ``stacklevel``: the application's line that turned them on,
    as :func:`warnings.warn` counts (4 from `_turn_on`, under :func:`enable_metrics` or :func:`metrics_app`).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        warnings.warn(
            "PROMETHEUS_MULTIPROC_DIR is set, but autogen_reliability's metrics count this process only and are "
            "not written there: a scrape of a server with several workers reads the one that answers it. "
            "Run one worker process per server (docs/metrics.md)",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def disable_metrics() -> None:
    """Turns metrics off: stops counting and takes them out of their registry. Safe to call when they are off."""
    global _enabled
    # All under the lock: an enable_metrics() in another thread must not find the old collector still in the registry.
    with _lock:
        enabled, _enabled = _enabled, None
        if enabled is None:
            return
        for unsubscribe in enabled.unsubscribers:
            unsubscribe()
        enabled.registry.unregister(enabled.collector)


def metrics_app(registry: CollectorRegistry | None = None, *, max_label_values: int | None = None) -> ASGIApp:
    """The ASGI app that serves the metrics in Prometheus' text format; turns them on (:func:`enable_metrics`).

    Mount it where Prometheus scrapes, e.g. ``app.mount("/metrics", metrics_app())``
    in FastAPI or Starlette. It answers every ``GET`` under that path (Starlette
    redirects ``/metrics`` to ``/metrics/``, which Prometheus follows).

    Args:
        registry: See :func:`enable_metrics`.
        max_label_values: See :func:`enable_metrics`.

    Raises:
        ConfigurationError: see :func:`enable_metrics`.
    """
    return cast(ASGIApp, make_asgi_app(_turn_on(registry, max_label_values)))
