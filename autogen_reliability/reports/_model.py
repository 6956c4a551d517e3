"""``UsageReport``: what a team lead asks of the ledger, as plain data.

The store fills it (``UsageStore.report``, aggregating in SQL); this module
only holds the numbers and turns them into JSON-ready dicts. Money is
``Decimal`` USD, the exact sum of the stored nano-USD; a dict holds it as a
string of that decimal in plain notation (``"0.000000001"``, never ``"1E-9"``),
so nothing is rounded on the way to a file.

Definitions (docs/reports.md repeats them for readers of the JSON):

- *calls*: logical calls, i.e. attempts numbered 1 (each call has exactly one);
- *attempts*: rows, one per provider attempt (first request, retry, re-ask, fallback);
- *waste*: attempts whose answer the agent never used: ``error``, ``invalid``
  (re-asked, or the call gave up) and ``cancelled`` (abandoned) ones;
- *error rate*: failed attempts / attempts;
- *retry rate*: calls that needed more than one attempt / calls;
- *re-ask rate*: answers that failed validation / answered attempts (``ok`` + ``invalid``);
- *cache-hit rate*: attempts served by a client-side cache / attempts;
- *cached-token rate*: prompt tokens read from the provider's prompt cache / prompt tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from ..accounting._price_table import nanousd_to_usd
from ._format import decimal_text

if TYPE_CHECKING:
    from rich.console import ConsoleRenderable

__all__ = [
    "GROUP_COLUMNS",
    "DailyCost",
    "Group",
    "Recommendation",
    "ReportFilters",
    "SessionGrowth",
    "Usage",
    "UsageReport",
    "WasteLine",
    "nanousd_to_usd",
]

GROUP_COLUMNS: Final = ("project", "session", "agent", "model", "provider", "day", "week", "outcome", "error_kind")
"""What ``group_by`` takes, besides ``tag:KEY`` (the value of one tag)."""


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True, slots=True)
class Usage:
    """The aggregate numbers of a set of attempts: the whole report, one group, one session.

    Attributes:
        calls: Logical calls (attempts numbered 1).
        attempts: Provider attempts (rows).
        prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens: Summed (absent counts as 0).
            ``cached_tokens`` are the prompt tokens read from the provider's prompt cache.
        cost: USD of the priced attempts, exact.
        unpriced_attempts: Attempts with no known price: not in ``cost``, never counted as free.
        errors: Attempts that failed (``error``).
        invalid: Answers that failed validation (``invalid``).
        cancelled: Attempts abandoned before they ended (``cancelled``).
        cache_hits: Attempts served by a client-side cache.
        retried_calls: Calls that needed more than one attempt.
        waste_cost: USD of the priced ``error`` / ``invalid`` / ``cancelled`` attempts.
        waste_tokens: Prompt + completion tokens of those attempts.
        latency_p50_ms, latency_p95_ms: Attempt latency percentiles (None when not computed or no attempts).
        waste_unpriced_attempts: Of the ``error`` / ``invalid`` / ``cancelled`` attempts, those with no known
            price: not in ``waste_cost``. When it is all of them, the waste's cost is not known (not $0).
        cache_write_tokens: Of the prompt tokens, those written to the provider's prompt cache (summed, absent
            counts as 0), which a provider bills above its input price.
    """

    calls: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced_attempts: int = 0
    errors: int = 0
    invalid: int = 0
    cancelled: int = 0
    cache_hits: int = 0
    retried_calls: int = 0
    waste_cost: Decimal = Decimal(0)
    waste_tokens: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    waste_unpriced_attempts: int = 0
    cache_write_tokens: int = 0

    @property
    def tokens(self) -> int:
        """Prompt + completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def error_rate(self) -> float | None:
        """Failed attempts / attempts (None with no attempts)."""
        return _rate(self.errors, self.attempts)

    @property
    def retry_rate(self) -> float | None:
        """Calls that needed more than one attempt / calls."""
        return _rate(self.retried_calls, self.calls)

    @property
    def reask_rate(self) -> float | None:
        """Answers that failed validation / answered attempts (``ok`` + ``invalid``)."""
        return _rate(self.invalid, self.attempts - self.errors - self.cancelled)

    @property
    def cache_hit_rate(self) -> float | None:
        """Attempts served by a client-side cache / attempts."""
        return _rate(self.cache_hits, self.attempts)

    @property
    def cached_token_rate(self) -> float | None:
        """Prompt tokens read from the provider's prompt cache / prompt tokens."""
        return _rate(self.cached_tokens, self.prompt_tokens)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: money as strings of exact decimals, rates as floats (None: undefined)."""
        return {
            "calls": self.calls,
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": decimal_text(self.cost),
            "unpriced_attempts": self.unpriced_attempts,
            "errors": self.errors,
            "invalid": self.invalid,
            "cancelled": self.cancelled,
            "cache_hits": self.cache_hits,
            "retried_calls": self.retried_calls,
            "waste_cost_usd": decimal_text(self.waste_cost),
            "waste_tokens": self.waste_tokens,
            "waste_unpriced_attempts": self.waste_unpriced_attempts,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "error_rate": self.error_rate,
            "retry_rate": self.retry_rate,
            "reask_rate": self.reask_rate,
            "cache_hit_rate": self.cache_hit_rate,
            "cached_token_rate": self.cached_token_rate,
        }


@dataclass(frozen=True, slots=True)
class Group:
    """One row of a breakdown: the values of the ``group_by`` columns and their numbers.

    ``key`` maps each column of ``group_by`` to its value as text (a day as
    ``2025-05-01``, a week as its Monday, ``2025-04-28``); None where the rows
    had none (an agent that was never named).
    """

    key: Mapping[str, str | None]
    usage: Usage

    def to_dict(self) -> dict[str, Any]:
        """``{"key": {...}, **usage}``."""
        return {"key": dict(self.key), **self.usage.to_dict()}


@dataclass(frozen=True, slots=True)
class DailyCost:
    """The cost of one model on one UTC day (the stacked chart of cost per day)."""

    day: date
    model: str | None
    cost: Decimal
    tokens: int
    attempts: int
    unpriced_attempts: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "day": self.day.isoformat(),
            "model": self.model,
            "cost_usd": decimal_text(self.cost),
            "tokens": self.tokens,
            "attempts": self.attempts,
            "unpriced_attempts": self.unpriced_attempts,
        }


@dataclass(frozen=True, slots=True)
class WasteLine:
    """What attempts of one outcome (``error``, ``invalid``, ``cancelled``) cost without being used."""

    outcome: str
    attempts: int
    tokens: int
    cost: Decimal
    unpriced_attempts: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "outcome": self.outcome,
            "attempts": self.attempts,
            "tokens": self.tokens,
            "cost_usd": decimal_text(self.cost),
            "unpriced_attempts": self.unpriced_attempts,
        }


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A finding grounded in the numbers: what to change, the figure that says so, what it would save.

    Attributes:
        code: Stable identifier of the rule: ``retry_waste``, ``reask_rate``, ``agent_cost_share``,
            ``prompt_growth``, ``cache_unused``, ``unpriced_models``.
        subject: What it is about, e.g. ``{"model": "gpt-4o"}`` or ``{"agent": "writer"}``.
        message: One sentence for a reader, with the figure in it.
        metric: The name of the figure, e.g. ``"retry_waste_share"``.
        value: The figure that triggered it.
        threshold: The threshold it crossed (a parameter of the report).
        saving: Estimated USD saved by acting on it (None when it cannot be priced, e.g. unpriced models).
    """

    code: str
    subject: Mapping[str, str | None]
    message: str
    metric: str
    value: float
    threshold: float
    saving: Decimal | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "code": self.code,
            "subject": dict(self.subject),
            "message": self.message,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "saving_usd": None if self.saving is None else decimal_text(self.saving),
        }


@dataclass(frozen=True, slots=True)
class SessionGrowth:
    """How the prompts of one session grew from its first call to its last: context that is never trimmed.

    Attributes:
        session: The session.
        model: The model most of its attempts asked for.
        calls: Its logical calls.
        first_prompt_tokens: Prompt tokens of its first attempt that reported any (a failed attempt
            usually reports 0: a call that began with a rate limit counts from its retry).
        last_prompt_tokens: Prompt tokens of its last attempt that reported any.
        prompt_tokens: Prompt tokens of all its attempts.
        cost: USD of its priced attempts.
    """

    session: str
    model: str | None
    calls: int
    first_prompt_tokens: int
    last_prompt_tokens: int
    prompt_tokens: int
    cost: Decimal

    @property
    def growth(self) -> float | None:
        """Last prompt / first prompt (None when the first had no tokens)."""
        return self.last_prompt_tokens / self.first_prompt_tokens if self.first_prompt_tokens else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "session": self.session,
            "model": self.model,
            "calls": self.calls,
            "first_prompt_tokens": self.first_prompt_tokens,
            "last_prompt_tokens": self.last_prompt_tokens,
            "prompt_tokens": self.prompt_tokens,
            "cost_usd": decimal_text(self.cost),
            "growth": self.growth,
        }


@dataclass(frozen=True, slots=True)
class ReportFilters:
    """What the report covers: the arguments of ``UsageStore.report``, bounds as aware UTC datetimes."""

    project: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    session: str | None = None
    agent: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "project": self.project,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "session": self.session,
            "agent": self.agent,
            "tags": dict(self.tags),
        }


@dataclass(frozen=True, slots=True)
class UsageReport:
    """The usage of a project (or of anything the filters select) over a period.

    Attributes:
        filters: What the report covers.
        generated_at: When it was made (UTC).
        group_by: The columns of ``breakdown``.
        totals: Everything the filters select (latency percentiles over all attempts).
        unpriced_models: The models of the unpriced attempts, sorted.
        waste: Per outcome (``error``, ``invalid``, ``cancelled``): attempts whose answer was not used.
        breakdown: One :class:`Group` per value of ``group_by``, by cost, highest first.
        by_model, by_agent: The same for the charts (cost by agent, tokens by model).
        daily: Cost per UTC day and model over the period, by day then model (the stacked chart).
        top_sessions: The ``top`` sessions by cost, highest first (key ``{"session": ...}``).
        session_growth: How the prompts of the top sessions grew (for the ``prompt_growth`` finding).
        recommendations: Findings grounded in the numbers, largest estimated saving first.
        percentile_method: How the latency percentiles were computed and their error bound.
    """

    filters: ReportFilters
    generated_at: datetime
    group_by: tuple[str, ...]
    totals: Usage
    unpriced_models: tuple[str, ...] = ()
    waste: tuple[WasteLine, ...] = ()
    breakdown: tuple[Group, ...] = ()
    by_model: tuple[Group, ...] = ()
    by_agent: tuple[Group, ...] = ()
    daily: tuple[DailyCost, ...] = ()
    top_sessions: tuple[Group, ...] = ()
    session_growth: tuple[SessionGrowth, ...] = ()
    recommendations: tuple[Recommendation, ...] = ()
    percentile_method: str = ""

    @property
    def cost(self) -> Decimal:
        """The exact USD of the priced attempts."""
        return self.totals.cost

    @property
    def waste_cost(self) -> Decimal:
        """USD of the attempts whose answer was not used."""
        return self.totals.waste_cost

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data with stable keys (documented in docs/reports.md)."""
        return {
            "filters": self.filters.to_dict(),
            "generated_at": self.generated_at.isoformat(),
            "group_by": list(self.group_by),
            "totals": self.totals.to_dict(),
            "unpriced_models": list(self.unpriced_models),
            "waste": [line.to_dict() for line in self.waste],
            "breakdown": [group.to_dict() for group in self.breakdown],
            "by_model": [group.to_dict() for group in self.by_model],
            "by_agent": [group.to_dict() for group in self.by_agent],
            "daily": [day.to_dict() for day in self.daily],
            "top_sessions": [group.to_dict() for group in self.top_sessions],
            "session_growth": [growth.to_dict() for growth in self.session_growth],
            "recommendations": [finding.to_dict() for finding in self.recommendations],
            "percentile_method": self.percentile_method,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_csv(self) -> str:
        """The breakdown as CSV: a header, then one row per group, the ``group_by`` columns then the numbers.

        The numbers are named as in :meth:`to_dict` (``calls``, ``cost_usd``, ``error_rate``...); money is
        the exact decimal (``0.000123456``), an undefined rate an empty cell. No total row.
        """
        from ._csv import render_csv  # noqa: PLC0415 - renderers load when used

        return render_csv(self)

    def to_markdown(self) -> str:
        """The report as Markdown (GitHub tables): totals, waste, the breakdown with its total, top sessions, findings.

        User strings (agents, models, tags, sessions, messages) are escaped: they render as written.
        """
        from ._markdown import render_markdown  # noqa: PLC0415

        return render_markdown(self)

    def to_rich(self) -> ConsoleRenderable:
        """The report for a terminal: rich tables, the breakdown with a total line, the waste, money exact.

        ``rich`` is imported when this is called. Print it with ``rich.console.Console().print(report.to_rich())``;
        the tables are laid out for the console's width when printed (a narrow one leaves out the least needed
        columns, and says which, rather than cut a number).
        """
        from ._rich import render_rich  # noqa: PLC0415

        return render_rich(self)

    def to_html(self) -> str:
        """The report as one self-contained HTML page: cards, inline SVG charts, tables, findings; no request at all.

        Rendered by Jinja2 with autoescaping (``jinja2`` is imported when this is called): a hostile agent
        name or model shows as text, never as markup. Write it to a file and open it in any browser.
        """
        from ._html import render_html  # noqa: PLC0415

        return render_html(self)
