"""Usage reports built straight from the data model, for the renderers' tests (no ledger, no SQL).

`make_report` draws attempts cell by cell (day x agent x model x session) with a seeded
random generator and sums them into every part of a :class:`UsageReport` (totals, the
breakdown, by agent, by model, daily, waste, top sessions), so the numbers agree with each
other the way the store's would. Money is summed as integer nano-USD and converted once.
`HOSTILE` holds strings that must never become markup, a link or a formula.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from autogen_reliability.reports import (
    DailyCost,
    Group,
    Recommendation,
    ReportFilters,
    SessionGrowth,
    Usage,
    UsageReport,
    WasteLine,
)
from autogen_reliability.reports._model import nanousd_to_usd

HOSTILE = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "[click](javascript:alert(1))",
    "' onmouseover='alert(1)' x='",
    "<svg onload=alert(1)>",
    "a|b\nc\r\nd",
    "[bold red]rich markup[/bold red]",
    '=HYPERLINK("evil","x")',
    "{{ 7*7 }} *em* _u_ `code` &amp; $1$",
    "http://evil.example/x",
    "see www.evil.example (HTTPS://evil.example, ftp://evil.example)",
    # Bidirectional controls (Trojan Source): a name that would show as "invoice.pdf", or reorder its line.
    "invoice\u202efdp.exe\u202c \u2066a\u2069\u2067b\u2068c\u2069\u2069 \u202ad\u202be\u202df \u200e\u200f\u061c",
)

BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""The characters that reorder how a line of text is shown: marks, embeddings, overrides and isolates."""
"""Agent names, models, tags, sessions and messages an attacker (or a model) could choose."""

MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet-20241022",
    "o3-mini",
    "gemini-1.5-pro",
    "mistral-large-latest",
    "llama-3.1-70b-instruct",
    "gpt-4.1-nano",
    "command-r-plus",
    "deepseek-chat",
    "qwen2.5-72b-instruct",
    "gpt-3.5-turbo",
    "claude-3-haiku-20240307",
    "gemini-1.5-flash",
    "mixtral-8x7b",
    "phi-3-medium",
    "yi-large",
    "grok-2",
    "jamba-1.5-large",
    "nova-pro",
)
AGENTS = ("planner", "writer", "reviewer", "researcher", "coder", "critic", "summariser", "router")
UNPRICED_MODEL = "local-llama-finetune"
# USD per million tokens, as integer nano-USD per token (prompt, completion).
_PRICES = {model: (150 + 97 * index, 600 + 211 * index) for index, model in enumerate(MODELS)}


@dataclass
class _Sum:
    """Attempts summed: the fields of Usage, money as nano-USD."""

    calls: int = 0
    attempts: int = 0
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0
    cost_nano: int = 0
    unpriced: int = 0
    errors: int = 0
    invalid: int = 0
    cancelled: int = 0
    cache_hits: int = 0
    retried: int = 0
    waste_nano: int = 0
    waste_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    by_outcome: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))

    def add(self, other: _Sum) -> None:
        for name in (
            "calls",
            "attempts",
            "prompt",
            "completion",
            "cached",
            "reasoning",
            "cost_nano",
            "unpriced",
            "errors",
            "invalid",
            "cancelled",
            "cache_hits",
            "retried",
            "waste_nano",
            "waste_tokens",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies += other.latencies
        for outcome, numbers in other.by_outcome.items():
            mine = self.by_outcome[outcome]
            for index, value in enumerate(numbers):
                mine[index] += value

    def usage(self) -> Usage:
        ordered = sorted(self.latencies)
        p50 = ordered[len(ordered) // 2] if ordered else None
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] if ordered else None
        return Usage(
            calls=self.calls,
            attempts=self.attempts,
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            cached_tokens=self.cached,
            reasoning_tokens=self.reasoning,
            cost=nanousd_to_usd(self.cost_nano),
            unpriced_attempts=self.unpriced,
            errors=self.errors,
            invalid=self.invalid,
            cancelled=self.cancelled,
            cache_hits=self.cache_hits,
            retried_calls=self.retried,
            waste_cost=nanousd_to_usd(self.waste_nano),
            waste_tokens=self.waste_tokens,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            waste_unpriced_attempts=sum(numbers[3] for numbers in self.by_outcome.values()),
        )


@dataclass(frozen=True)
class _Cell:
    day: date
    agent: str | None
    model: str
    session: str
    numbers: _Sum


def _draw_cell(rng: random.Random, model: str) -> _Sum:
    cell = _Sum()
    calls = rng.randint(1, 40)
    cell.calls = calls
    prompt_price, completion_price = _PRICES.get(model, (310, 1250))
    priced = model != UNPRICED_MODEL
    for _ in range(calls):
        outcomes = ["ok"]
        if rng.random() < 0.12:
            outcomes.insert(0, rng.choice(["error", "error", "invalid", "cancelled"]))
            cell.retried += 1
        for outcome in outcomes:
            prompt = rng.randint(200, 6000)
            completion = rng.randint(20, 900) if outcome != "error" else 0
            cached = rng.randint(0, prompt // 2) if rng.random() < 0.3 else 0
            reasoning = completion // 3 if model.startswith("o3") else 0
            cost = prompt * prompt_price + completion * completion_price
            cell.attempts += 1
            cell.prompt += prompt
            cell.completion += completion
            cell.cached += cached
            cell.reasoning += reasoning
            cell.latencies.append(round(rng.uniform(180, 4200), 1))
            if rng.random() < 0.03:
                cell.cache_hits += 1
            if priced:
                cell.cost_nano += cost
            else:
                cell.unpriced += 1
            if outcome != "ok":
                counter = {"error": "errors", "invalid": "invalid", "cancelled": "cancelled"}[outcome]
                setattr(cell, counter, getattr(cell, counter) + 1)
                cell.waste_tokens += prompt + completion
                line = cell.by_outcome[outcome]
                line[0] += 1
                line[1] += prompt + completion
                if priced:
                    cell.waste_nano += cost
                    line[2] += cost
                else:
                    line[3] += 1
    return cell


def _groups(cells: Iterable[_Cell], key: Callable[[_Cell], dict[str, str | None]]) -> tuple[Group, ...]:
    sums: dict[tuple[tuple[str, str | None], ...], _Sum] = defaultdict(_Sum)
    for cell in cells:
        sums[tuple(key(cell).items())].add(cell.numbers)
    groups = [Group(dict(items), total.usage()) for items, total in sums.items()]
    return tuple(sorted(groups, key=lambda group: (-group.usage.cost, str(sorted(group.key.items())))))


def make_report(
    *,
    days: int = 7,
    models: Sequence[str] = MODELS[:4],
    agents: Sequence[str | None] = AGENTS[:4],
    sessions: int = 12,
    unpriced: bool = True,
    seed: int = 11,
    group_by: tuple[str, ...] = ("agent", "model"),
    top: int = 10,
    recommendations: Sequence[Recommendation] | None = None,
    filters: ReportFilters | None = None,
    session_names: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
) -> UsageReport:
    """A report of ``days`` days ending 2025-05-08 (UTC), every part summed from the same drawn attempts."""
    rng = random.Random(seed)
    end = date(2025, 5, 8)
    start = end - timedelta(days=days)
    names = (
        list(session_names) if session_names is not None else [f"ticket-{4700 + index}" for index in range(sessions)]
    )
    all_models = [*models, *([UNPRICED_MODEL] if unpriced else [])]
    cells: list[_Cell] = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        for agent in agents:
            for model in all_models:
                # Not every agent uses every model every day: some cells are empty.
                if rng.random() < 0.35:
                    continue
                cells.append(_Cell(day, agent, model, rng.choice(names), _draw_cell(rng, model)))
    total = _Sum()
    for cell in cells:
        total.add(cell.numbers)

    def column(cell: _Cell, name: str) -> str | None:
        values: dict[str, str | None] = {
            "agent": cell.agent,
            "model": cell.model,
            "day": cell.day.isoformat(),
            "session": cell.session,
            "project": "acme-support",
            "provider": "openai",
        }
        return values[name] if name in values else (tags or {}).get(name.removeprefix("tag:"))

    daily_sums: dict[tuple[date, str], _Sum] = defaultdict(_Sum)
    for cell in cells:
        daily_sums[(cell.day, cell.model)].add(cell.numbers)
    daily = tuple(
        DailyCost(
            day=day,
            model=model,
            cost=nanousd_to_usd(numbers.cost_nano),
            tokens=numbers.prompt + numbers.completion,
            attempts=numbers.attempts,
            unpriced_attempts=numbers.unpriced,
        )
        for (day, model), numbers in sorted(daily_sums.items())
    )
    waste = tuple(
        WasteLine(outcome, numbers[0], numbers[1], nanousd_to_usd(numbers[2]), numbers[3])
        for outcome, numbers in sorted(total.by_outcome.items())
    )
    sessions_by_cost = _groups(cells, lambda cell: {"session": cell.session})[:top]
    growth = tuple(
        SessionGrowth(
            session=str(group.key["session"]),
            model=all_models[index % len(all_models)],
            calls=group.usage.calls,
            first_prompt_tokens=800 + 37 * index,
            last_prompt_tokens=(800 + 37 * index) * (1 + index % 5),
            prompt_tokens=group.usage.prompt_tokens,
            cost=group.usage.cost,
        )
        for index, group in enumerate(sessions_by_cost)
    )
    totals = total.usage()
    return UsageReport(
        filters=filters
        or ReportFilters(
            project="acme-support",
            since=datetime(start.year, start.month, start.day, tzinfo=UTC),
            until=datetime(end.year, end.month, end.day, tzinfo=UTC),
        ),
        generated_at=datetime(2025, 5, 8, 9, 30, 12, tzinfo=UTC),
        group_by=group_by,
        totals=totals,
        unpriced_models=(UNPRICED_MODEL,) if unpriced and totals.unpriced_attempts else (),
        waste=waste,
        breakdown=_groups(cells, lambda cell: {name: column(cell, name) for name in group_by}),
        by_model=_groups(cells, lambda cell: {"model": cell.model}),
        by_agent=_groups(cells, lambda cell: {"agent": cell.agent}),
        daily=daily,
        top_sessions=sessions_by_cost,
        session_growth=growth,
        recommendations=tuple(recommendations if recommendations is not None else _findings(totals)),
        percentile_method="nearest rank over every attempt (exact), computed in SQL",
    )


def _findings(totals: Usage) -> list[Recommendation]:
    return [
        Recommendation(
            code="retry_waste",
            subject={"model": "gpt-4o"},
            message="Retries of gpt-4o wasted 14.2% of its cost: look at its timeouts and rate limits.",
            metric="retry_waste_share",
            value=0.142,
            threshold=0.1,
            saving=(totals.waste_cost / 3).quantize(Decimal("0.000000001")),
        ),
        Recommendation(
            code="prompt_growth",
            subject={"session": "ticket-4703"},
            message="Prompts in ticket-4703 grew 4.0 times from the first call to the last: trim the context.",
            metric="prompt_growth",
            value=4.0,
            threshold=3.0,
            saving=Decimal("0.412"),
        ),
        Recommendation(
            code="unpriced_models",
            subject={"model": UNPRICED_MODEL},
            message=f"{UNPRICED_MODEL} has no price: its attempts are counted but not in the cost.",
            metric="unpriced_attempts",
            value=float(totals.unpriced_attempts),
            threshold=0.0,
            saving=None,
        ),
    ]


def hostile_report() -> UsageReport:
    """Every user string of a report is one of `HOSTILE`: agents, models, tags, sessions, outcomes, findings."""
    findings = [
        Recommendation(
            code=HOSTILE[index % len(HOSTILE)],
            subject={HOSTILE[index]: HOSTILE[(index + 1) % len(HOSTILE)]},
            message=text,
            metric=HOSTILE[(index + 2) % len(HOSTILE)],
            value=0.5,
            threshold=0.1,
            saving=Decimal("1.5"),
        )
        for index, text in enumerate(HOSTILE)
    ]
    base = make_report(
        days=3,
        models=HOSTILE[:5],
        agents=HOSTILE,
        session_names=HOSTILE,
        group_by=("agent", "model", "tag:" + HOSTILE[0]),
        tags={HOSTILE[0]: HOSTILE[1]},
        recommendations=findings,
        filters=ReportFilters(
            project=HOSTILE[0],
            since=datetime(2025, 5, 5, tzinfo=UTC),
            until=datetime(2025, 5, 8, tzinfo=UTC),
            session=HOSTILE[1],
            agent=HOSTILE[2],
            tags={HOSTILE[3]: HOSTILE[4], "team": HOSTILE[5]},
        ),
    )
    waste = tuple(
        WasteLine(HOSTILE[index], line.attempts, line.tokens, line.cost, line.unpriced_attempts)
        for index, line in enumerate(base.waste)
    )
    return UsageReport(
        filters=base.filters,
        generated_at=base.generated_at,
        group_by=base.group_by,
        totals=base.totals,
        unpriced_models=(*HOSTILE[6:], UNPRICED_MODEL),
        waste=waste,
        breakdown=base.breakdown,
        by_model=base.by_model,
        by_agent=base.by_agent,
        daily=base.daily,
        top_sessions=base.top_sessions,
        session_growth=base.session_growth,
        recommendations=base.recommendations,
        percentile_method=HOSTILE[0],
    )


def empty_report() -> UsageReport:
    """What the store makes of a period with no attempt: zero totals, nothing to break down."""
    return UsageReport(
        filters=ReportFilters(project="acme-support", since=datetime(2025, 5, 1, tzinfo=UTC)),
        generated_at=datetime(2025, 5, 8, 9, 30, tzinfo=UTC),
        group_by=("agent", "model"),
        totals=Usage(),
        percentile_method="nearest rank over every attempt (exact), computed in SQL",
    )
