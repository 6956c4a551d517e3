"""What a health check found: pydantic models, so a web framework can serve them and describe them in OpenAPI.

A :class:`HealthReport` holds one component per LLM client (a
:class:`ClientHealth`, with a :class:`ProviderHealth` for its primary and each
fallback) and the usage store (a :class:`UsageStoreHealth`); its
:meth:`~HealthReport.summary` is the short form (status per component). Every
text in them (a message, a reason, a name, the URL) passes :func:`shown` when
the model is made, whoever makes it: no API key, bearer token or credential in
a URL, no lone surrogate (JSON in UTF-8 cannot hold one), no line break, escape sequence or bidi control
(shown as ``\\n``, ``\\x1b``, ``\\u202e``), and a bounded length.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from .._errors import printable
from .._redaction import redact

__all__ = [
    "MESSAGE_LIMIT",
    "STORE_COMPONENT",
    "TEXT_LIMIT",
    "ActiveCheck",
    "AttemptSummary",
    "CircuitStatus",
    "ClientHealth",
    "HealthReport",
    "HealthStatus",
    "HealthSummary",
    "ProviderHealth",
    "UsageStoreHealth",
    "shown",
    "worst",
]

MESSAGE_LIMIT: Final = 300
"""The most characters of an error's message in a report."""
TEXT_LIMIT: Final = 1000
"""The most characters of any other text in a report: a reason (which may quote a message), a name, the URL."""


def shown(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as a health report shows it: secrets redacted, lone surrogates as U+FFFD, control and bidi
    characters as escapes (``\\x1b``, ``\\u202e``: JSON escapes only the C0 ones), cut to ``limit``.

    The one way a text reaches a report: the probe calls it where it captures an error's message (so the
    window holds bounded texts), and every text field of the models below passes it again (it changes
    nothing the second time).
    """
    # Redacted first: a pattern (``Bearer\\s+...``) must see the whitespace an escape would hide.
    text = printable(redact(text, limit=limit))
    return text if len(text) <= limit else text[: limit - 1] + "…"


Message = Annotated[str, AfterValidator(shown)]
Text = Annotated[str, AfterValidator(lambda text: shown(text, TEXT_LIMIT))]

STORE_COMPONENT: Final = "usage_store"
"""The name of the usage store among the components (in ``critical=`` and the summary)."""

HealthStatus = Literal["healthy", "degraded", "unhealthy"]
"""``healthy``: all is well; ``degraded``: serving, with less margin; ``unhealthy``: not fit to serve."""

CircuitStatus = Literal["closed", "open", "half_open", "off"]
"""A circuit breaker's state; ``off`` when the wrapper has none (``circuit=None``)."""

_ORDER: dict[HealthStatus, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def worst(*statuses: HealthStatus) -> HealthStatus:
    """The worst of ``statuses`` (``healthy`` when there are none)."""
    return max(statuses, key=_ORDER.__getitem__, default="healthy")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttemptSummary(_Model):
    """One provider attempt, as the health window remembers it."""

    started_at: AwareDatetime = Field(description="When the attempt started (UTC).")
    outcome: Literal["ok", "error", "cancelled"]
    error_kind: str | None = Field(None, description="The ErrorKind value of a failed attempt, e.g. 'rate_limit'.")
    error: Message | None = Field(None, description="The error's type and message, redacted and cut to 300 characters.")
    latency_ms: float


class ActiveCheck(_Model):
    """The result of the last real request the probe made to a client (``active=True``), reused for ``ttl``."""

    method: Literal["list_models", "completion"] = Field(
        description="list_models: GET /models (free); completion: a one-token completion, in the ledger, tagged "
        "health_check=true."
    )
    ok: bool | None = Field(
        description="Whether the provider answered; null: unknown (the budget or the open circuit refused the "
        "request, the check was cancelled, the provider refused the check's own request as bad_request, "
        "context_length or content_filter, rate-limited it (a 429: rate_limit), or has no model listing: a 404 to "
        "GET /models), which is not held "
        "against the client."
    )
    checked_at: AwareDatetime = Field(description="When the request was sent (UTC).")
    age_seconds: float = Field(description="How old the result is: it is reused until it is ttl seconds old.")
    latency_ms: float
    error_kind: str | None = None
    error: Message | None = Field(None, description="Redacted, cut to 300 characters.")


class ProviderHealth(_Model):
    """One provider client behind a wrapped client: the primary, or a fallback."""

    name: Text = Field(description="The client's class and model, e.g. 'OpenAIChatCompletionClient(gpt-4o-mini)'.")
    role: Literal["primary", "fallback"]
    status: HealthStatus
    reasons: list[Text] = Field(description="Why the status is not healthy (empty when it is).")
    circuit: CircuitStatus
    attempts: int = Field(description="Attempts seen in the window, cancelled ones included.")
    error_rate: float | None = Field(
        description="Failed attempts / attempts judged, in the window: all but the ones their callers cancelled "
        "(one the retry deadline cut short is a failure, a timeout) and the "
        "failures the request caused (bad_request, context_length, content_filter) and the rate limits (429) "
        "of calls that then succeeded on this client, which count neither as failures nor as attempts. null: "
        "no attempt judged."
    )
    failed_attempts: int = Field(description="The failed attempts that error_rate counts: its numerator.")
    judged_attempts: int = Field(description="The attempts that error_rate judges: its denominator.")
    errors_by_kind: dict[str, int] = Field(description="Failed and cancelled attempts in the window, by ErrorKind.")
    p95_latency_ms: float | None = Field(
        description="95th percentile latency of the successful attempts in the window, read from a histogram "
        "whose bins are 19% wide: at most 19% above the exact value. null: no successful attempt."
    )
    last_error: AttemptSummary | None = Field(None, description="The latest failed attempt, even if older.")
    recent: list[AttemptSummary] = Field(description="The latest attempts (at most 10), oldest first.")


class ClientHealth(_Model):
    """One wrapped client: its primary and fallbacks, judged together."""

    status: HealthStatus
    critical: bool = Field(description="Whether this component can make the service unready.")
    reasons: list[Text]
    window_seconds: float = Field(description="The span of the rolling window of attempts.")
    attempts: int
    error_rate: float | None
    failed_attempts: int
    judged_attempts: int
    errors_by_kind: dict[str, int]
    p95_latency_ms: float | None
    providers: list[ProviderHealth] = Field(description="The primary first, then each fallback in order.")
    active_check: ActiveCheck | None = Field(None, description="Only with active=True.")


class UsageStoreHealth(_Model):
    """The usage ledger: its database, and the recorders that write to it (those of the probe's clients)."""

    status: HealthStatus
    critical: bool
    reasons: list[Text]
    url: Text = Field(description="The database URL, password masked.")
    reachable: bool = Field(description="Whether SELECT 1 answered within the timeout.")
    round_trip_ms: float | None = None
    error: Message | None = Field(None, description="Why it is not reachable, redacted.")
    recorders: int = Field(description="Distinct recorders the probe's clients record to.")
    writer_alive: bool | None = Field(description="Whether every recorder's writer thread runs (null: no recorder).")
    queue_depth: int = Field(description="Rows recorded and not yet written or spooled.")
    held_in_memory: int = Field(
        description="Rows held in memory because neither the database nor the spool directory takes them "
        "(a process killed meanwhile keeps them only in its journal)."
    )
    spool_backlog: int = Field(description="Rows waiting in this process's spool files to be replayed.")
    backlog_age_seconds: float | None = Field(
        description="How long the oldest spooled row has waited; null: no backlog."
    )


class HealthSummary(_Model):
    """The short form of a report: the overall status and each component's."""

    status: HealthStatus
    checked_at: AwareDatetime
    components: dict[str, HealthStatus]


class HealthReport(_Model):
    """What :meth:`HealthProbe.check` found.

    ``status`` is the worst status among the components that are *critical*;
    any other component that is unhealthy makes it ``degraded`` at worst.
    """

    status: HealthStatus
    checked_at: AwareDatetime = Field(description="When the check ran (UTC).")
    clients: dict[str, ClientHealth]
    usage_store: UsageStoreHealth | None = None

    @property
    def ready(self) -> bool:
        """Whether the service may take traffic: healthy or degraded."""
        return self.status != "unhealthy"

    def summary(self) -> HealthSummary:
        """The overall status and each component's (``usage_store`` for the store)."""
        components: dict[str, HealthStatus] = {name: client.status for name, client in self.clients.items()}
        if self.usage_store is not None:
            components[STORE_COMPONENT] = self.usage_store.status
        return HealthSummary(status=self.status, checked_at=self.checked_at, components=components)
