"""OpenTelemetry spans of every wrapped client's calls, by the GenAI semantic conventions (extra ``[otel]``).

Only ``opentelemetry-api`` is needed: the application brings the SDK and the
exporter (or an OpenTelemetry distro) and sets its tracer provider, as for any
instrumented library. :func:`enable_tracing` turns the spans on: one ``chat
{model}`` span per logical call, one child span per provider attempt. What they
carry, and what they never carry: ``docs/metrics.md``, section "Tracing
with OpenTelemetry".

Example:
    >>> from autogen_reliability.otel import disable_tracing, enable_tracing
    >>> enable_tracing()  # spans go to the tracer provider the application set
    >>> disable_tracing()
"""

try:
    import opentelemetry.trace as _trace  # noqa: F401  # only to say what is missing
except ImportError as _missing:  # pragma: no cover - tested in a subprocess that hides the package
    raise ImportError(
        "autogen_reliability.otel needs opentelemetry-api: pip install 'autogen-reliability[otel]' "
        "(and the OpenTelemetry SDK with an exporter, to send the spans somewhere)"
    ) from _missing

from ._tracing import disable_tracing, enable_tracing

__all__ = ["disable_tracing", "enable_tracing"]
