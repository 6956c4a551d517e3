"""``UsageStore.report``: every number checked against sums computed here, in Python, from the events written.

One ledger per backend (a SQLite file, and a PostgreSQL database when
``AUTOGEN_RELIABILITY_TEST_PG_URL`` is set) holds events made by a seeded
random generator: several projects, sessions, agents and models (an unpriced
one, and a few calls with no project, session, agent or model), every outcome,
error kinds, tags, three weeks of days, times in other time zones near
midnight, latencies of zero, and costs large enough that a float sum would be
wrong. The oracle below follows the definitions of ``reports/_model.py`` and
``percentile_cont``'s interpolation; it shares no code with the store.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.pool import NullPool

from autogen_reliability._errors import ConfigurationError
from autogen_reliability.accounting import UsageEvent
from autogen_reliability.reports import (
    DailyCost,
    Group,
    ReportFilters,
    SessionGrowth,
    Usage,
    UsageReport,
    WasteLine,
    recommend,
)
from autogen_reliability.storage import UsageStore
from autogen_reliability.storage._models import REPORT_INDEX
from autogen_reliability.storage._report import (
    PERCENTILE_RELATIVE_ERROR,
    PERCENTILE_ROLLUP,
    ROLLUP_ABSOLUTE_ERROR_MS,
    ROLLUP_RELATIVE_ERROR,
    _floor,
    _ln,
    build_report,
)
from autogen_reliability.storage._store import _time_bound

from .storage_fixtures import BACKENDS, drop_pg_database

FIRST = datetime(2025, 4, 20, tzinfo=UTC)  # a Sunday: the calls cover parts of four ISO weeks
DAYS = 22
MODELS = (("gpt-4o-mini", "openai"), ("gpt-4o", "openai"), ("claude-haiku", "anthropic"), ("local-llm", "ollama"))
UNPRICED = "local-llm"
ERROR_KINDS = ("rate_limit", "timeout", "server_error")
TAG_VALUES = {
    "env": ("prod", "staging"),
    "team": ("search", "support"),
    "cost.center": ("cc-1", "cc-2"),  # a dot: not a path in SQLite's JSON
    "owner's": ("ana", "bo'b"),  # quotes: rendered into the statement, escaped
}
ZONES = (UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7)))


def make_events(seed: int = 11, calls: int = 700) -> list[UsageEvent]:
    """Calls of 1 to 3 attempts, each attempt with a different start time (ties would make "first" ambiguous)."""
    rng = random.Random(seed)
    events: list[UsageEvent] = []
    sessions = {
        project: [f"{project or 'none'}-s{n}" for n in range(6)] for project in ("alpha", "beta", "gamma", None)
    }
    for number in range(calls):
        project = rng.choices(("alpha", "beta", "gamma", None), (5, 3, 2, 1))[0]
        session = rng.choice(sessions[project]) if rng.random() < 0.9 else None
        agent = rng.choices(("planner", "writer", "critic", None), (4, 4, 2, 1))[0]
        model, provider = rng.choices((*MODELS, (None, None)), (5, 3, 3, 2, 1))[0]
        tags = {key: rng.choice(values) for key, values in TAG_VALUES.items() if rng.random() < 0.7}
        # Every call a whole second apart, every attempt a millisecond: all start times differ.
        started = FIRST + timedelta(seconds=rng.randrange(DAYS * 86400 // 700) + number * (DAYS * 86400 // calls))
        attempts = rng.choices((1, 2, 3), (8, 3, 1))[0]
        call_id = uuid.UUID(int=rng.getrandbits(128))
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            if not last:
                outcome = rng.choice(("error", "error", "invalid"))
            else:
                outcome = rng.choices(("ok", "error", "invalid", "cancelled"), (14, 2, 1, 1))[0]
            at = (started + timedelta(milliseconds=attempt)).astimezone(rng.choice(ZONES))
            events.append(
                make_event(rng, call_id, attempt, at, project, session, agent, model, provider, tags, outcome)
            )
    return events


def make_event(
    rng: random.Random,
    call_id: uuid.UUID,
    attempt: int,
    at: datetime,
    project: str | None,
    session: str | None,
    agent: str | None,
    model: str | None,
    provider: str | None,
    tags: dict[str, str],
    outcome: str,
) -> UsageEvent:
    failed = outcome == "error"
    cache_hit = outcome == "ok" and rng.random() < 0.05
    prompt = 0 if failed or cache_hit else rng.randrange(1, 5000)
    completion = 0 if failed or cache_hit else rng.randrange(0, 900)
    if model is None or model == UNPRICED:
        cost = None
    elif cache_hit:
        cost = 0
    elif rng.random() < 0.01:
        cost = rng.randrange(10**15, 4 * 10**15)  # a few of these and a float sum is off by dollars
    else:
        cost = rng.randrange(0, 30_000_000)
    latency = 0.0 if rng.random() < 0.02 else round(rng.lognormvariate(math.log(800), 0.9), 3)
    cached = rng.randrange(0, prompt + 1) if prompt and rng.random() < 0.4 else None
    # Cache writes from a generator of their own, so the rest of the ledger is drawn as before they were added.
    writes = random.Random(call_id.int + attempt)
    cache_writes = writes.randrange(0, prompt - (cached or 0) + 1) if prompt and writes.random() < 0.3 else None
    return UsageEvent(
        call_id=call_id,
        attempt=attempt,
        started_at=at,
        latency_ms=latency,
        project=project,
        session=session,
        agent=agent,
        tags=tags,
        provider=provider,
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        cache_write_tokens=cache_writes,
        reasoning_tokens=rng.randrange(0, completion + 1) if completion and rng.random() < 0.2 else None,
        cost_nanousd=cost,
        outcome=outcome,  # type: ignore[arg-type]
        error_kind=rng.choice(ERROR_KINDS) if failed else ("cancelled" if outcome == "cancelled" else None),
        cache_hit=cache_hit,
    )


EVENTS = make_events()


# ---- the oracle


def percentile_cont(values: Sequence[float], fraction: float) -> float:
    """PostgreSQL's ``percentile_cont``: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    below = math.floor(position)
    if below + 1 < len(ordered):
        return ordered[below] + (position - below) * (ordered[below + 1] - ordered[below])
    return ordered[below]


def nano(value: int) -> Decimal:
    return Decimal(value) / Decimal(10**9)


def usage_of(events: Sequence[UsageEvent]) -> Usage:
    """The :class:`Usage` of ``events``, by the definitions of ``reports/_model.py``."""
    waste = [e for e in events if e.outcome in ("error", "invalid", "cancelled")]
    latencies = [e.latency_ms for e in events]
    return Usage(
        calls=sum(1 for e in events if e.attempt == 1),
        attempts=len(events),
        prompt_tokens=sum(e.prompt_tokens for e in events),
        completion_tokens=sum(e.completion_tokens for e in events),
        cached_tokens=sum(e.cached_tokens or 0 for e in events),
        reasoning_tokens=sum(e.reasoning_tokens or 0 for e in events),
        cost=nano(sum(e.cost_nanousd or 0 for e in events)),
        unpriced_attempts=sum(1 for e in events if e.cost_nanousd is None),
        errors=sum(1 for e in events if e.outcome == "error"),
        invalid=sum(1 for e in events if e.outcome == "invalid"),
        cancelled=sum(1 for e in events if e.outcome == "cancelled"),
        cache_hits=sum(1 for e in events if e.cache_hit),
        retried_calls=sum(1 for e in events if e.attempt == 2),
        waste_cost=nano(sum(e.cost_nanousd or 0 for e in waste)),
        waste_tokens=sum(e.prompt_tokens + e.completion_tokens for e in waste),
        latency_p50_ms=percentile_cont(latencies, 0.5) if events else None,
        latency_p95_ms=percentile_cont(latencies, 0.95) if events else None,
        waste_unpriced_attempts=sum(1 for e in waste if e.cost_nanousd is None),
        cache_write_tokens=sum(e.cache_write_tokens or 0 for e in events),
    )


def utc_day(e: UsageEvent) -> date:
    return e.started_at.astimezone(UTC).date()


def column_value(e: UsageEvent, column: str) -> str | None:
    if column == "day":
        return utc_day(e).isoformat()
    if column == "week":
        day = utc_day(e)
        return (day - timedelta(days=day.weekday())).isoformat()
    if column.startswith("tag:"):
        return e.tags.get(column[4:])
    value = getattr(e, column)
    return None if value is None else str(value)


def text_order(value: str | None) -> tuple[bool, str]:
    return (value is None, value or "")


def grouped(events: Sequence[UsageEvent], columns: Sequence[str]) -> list[tuple[dict[str, str | None], Usage]]:
    """Groups by cost (highest first), then attempts (most first), then key (None last)."""
    groups: dict[tuple[str | None, ...], list[UsageEvent]] = defaultdict(list)
    for e in events:
        groups[tuple(column_value(e, column) for column in columns)].append(e)
    usages = [(key, usage_of(members)) for key, members in groups.items()]
    usages.sort(key=lambda item: (-item[1].cost, -item[1].attempts, [text_order(v) for v in item[0]]))
    return [(dict(zip(columns, key, strict=True)), usage) for key, usage in usages]


def growth_of(name: str, events: Sequence[UsageEvent]) -> SessionGrowth:
    firsts = sorted((e for e in events if e.prompt_tokens > 0), key=lambda e: e.started_at)
    models = Counter(e.model for e in events)
    model = min(models.items(), key=lambda item: (-item[1], text_order(item[0])))[0]
    usage = usage_of(events)
    return SessionGrowth(
        session=name,
        model=model,
        calls=usage.calls,
        first_prompt_tokens=firsts[0].prompt_tokens if firsts else 0,
        last_prompt_tokens=firsts[-1].prompt_tokens if firsts else 0,
        prompt_tokens=usage.prompt_tokens,
        cost=usage.cost,
    )


@dataclass
class Expected:
    totals: Usage
    unpriced_models: tuple[str, ...]
    waste: list[WasteLine]
    breakdown: list[tuple[dict[str, str | None], Usage]]
    by_model: list[tuple[dict[str, str | None], Usage]]
    by_agent: list[tuple[dict[str, str | None], Usage]]
    daily: list[DailyCost]
    top_sessions: list[tuple[dict[str, str | None], Usage]]
    session_growth: list[SessionGrowth]


def expected(
    events: Sequence[UsageEvent],
    *,
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    session: str | None = None,
    agent: str | None = None,
    tags: Mapping[str, str] | None = None,
    group_by: Sequence[str] = ("agent", "model"),
    top: int = 10,
) -> Expected:
    chosen = [
        e
        for e in events
        if (project is None or e.project == project)
        and (since is None or e.started_at >= since)
        and (until is None or e.started_at < until)
        and (session is None or e.session == session)
        and (agent is None or e.agent == agent)
        and all(e.tags.get(key) == value for key, value in (tags or {}).items())
    ]
    waste = []
    for outcome in ("error", "invalid", "cancelled"):
        lines = [e for e in chosen if e.outcome == outcome]
        waste.append(
            WasteLine(
                outcome=outcome,
                attempts=len(lines),
                tokens=sum(e.prompt_tokens + e.completion_tokens for e in lines),
                cost=nano(sum(e.cost_nanousd or 0 for e in lines)),
                unpriced_attempts=sum(1 for e in lines if e.cost_nanousd is None),
            )
        )
    daily: dict[tuple[date, str | None], list[UsageEvent]] = defaultdict(list)
    for e in chosen:
        daily[(utc_day(e), e.model)].append(e)
    sessions = grouped([e for e in chosen if e.session is not None], ("session",))[:top]
    return Expected(
        totals=usage_of(chosen),
        unpriced_models=tuple(sorted({e.model for e in chosen if e.cost_nanousd is None and e.model is not None})),
        waste=waste,
        breakdown=grouped(chosen, group_by),
        by_model=grouped(chosen, ("model",)),
        by_agent=grouped(chosen, ("agent",)),
        daily=[
            DailyCost(
                day=day,
                model=model,
                cost=nano(sum(e.cost_nanousd or 0 for e in members)),
                tokens=sum(e.prompt_tokens + e.completion_tokens for e in members),
                attempts=len(members),
                unpriced_attempts=sum(1 for e in members if e.cost_nanousd is None),
            )
            for (day, model), members in sorted(daily.items(), key=lambda item: (item[0][0], text_order(item[0][1])))
        ],
        top_sessions=sessions,
        session_growth=[
            growth_of(str(key["session"]), [e for e in chosen if e.session == key["session"]]) for key, _ in sessions
        ],
    )


def assert_usage(actual: Usage, wanted: Usage, *, method: str, where: str) -> None:
    """Every number equal; the percentiles exact (PostgreSQL's raw rows) or within the bound of the method used."""
    for name in Usage.__dataclass_fields__:
        got, want = getattr(actual, name), getattr(wanted, name)
        if name.startswith("latency_"):
            if want is None:
                assert got is None, f"{where}: {name}"
            elif method.startswith("exact"):
                assert got == pytest.approx(want, rel=1e-12, abs=1e-9), f"{where}: {name}"
            elif method == PERCENTILE_ROLLUP:
                bound = ROLLUP_RELATIVE_ERROR * want + ROLLUP_ABSOLUTE_ERROR_MS + 1e-9
                assert abs(got - want) <= bound, f"{where}: {name} {got} vs {want}"
            else:
                assert abs(got - want) <= PERCENTILE_RELATIVE_ERROR * want + 1e-9, f"{where}: {name} {got} vs {want}"
        else:
            assert got == want, f"{where}: {name} is {got!r}, expected {want!r}"


def assert_groups(
    actual: Sequence[Group], wanted: list[tuple[dict[str, str | None], Usage]], *, method: str, where: str
) -> None:
    assert [dict(group.key) for group in actual] == [key for key, _ in wanted], where
    for group, (key, usage) in zip(actual, wanted, strict=True):
        assert_usage(group.usage, usage, method=method, where=f"{where} {key}")


def assert_report(report: UsageReport, wanted: Expected) -> None:
    method = report.percentile_method
    assert_usage(report.totals, wanted.totals, method=method, where="totals")
    assert report.unpriced_models == wanted.unpriced_models
    assert list(report.waste) == wanted.waste
    assert_groups(report.breakdown, wanted.breakdown, method=method, where="breakdown")
    assert_groups(report.by_model, wanted.by_model, method=method, where="by_model")
    assert_groups(report.by_agent, wanted.by_agent, method=method, where="by_agent")
    assert list(report.daily) == wanted.daily
    assert_groups(report.top_sessions, wanted.top_sessions, method=method, where="top_sessions")
    assert list(report.session_growth) == wanted.session_growth
    # The findings are what recommend() makes of these numbers (tests/test_recommend.py tests each rule).
    assert report.recommendations == recommend(dataclasses.replace(report, recommendations=()))
    json.loads(report.to_json())  # every value is JSON-ready


# ---- the ledgers


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsageStore]:
    """A ledger holding ``EVENTS``: a SQLite file, then a PostgreSQL database of its own."""
    if request.param == "sqlite":
        with UsageStore(f"sqlite:///{tmp_path_factory.mktemp('report') / 'usage.db'}") as sqlite_store:
            sqlite_store.write(EVENTS)
            yield sqlite_store
        return
    admin_url: str = request.getfixturevalue("pg_admin_url")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"ar_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with UsageStore(url) as pg_store:
            pg_store.write(EVENTS)
            yield pg_store
    finally:
        drop_pg_database(admin, name)
        admin.dispose()


Reporter = Callable[..., UsageReport]


@pytest.fixture(params=["rollup", "rows"])
def report_of(request: pytest.FixtureRequest) -> Reporter:
    """``store.report(...)`` (from the rollup where it can), or the same report summed from the rows."""
    if request.param == "rollup":
        return lambda store, **arguments: store.report(**arguments)

    def from_rows(store: UsageStore, **arguments: Any) -> UsageReport:
        for bound in ("since", "until"):
            arguments[bound] = _time_bound(bound, arguments.get(bound))
        defaults = {"project": None, "session": None, "agent": None, "tags": None, "group_by": ("agent", "model")}
        report = build_report(store.engine, **{**defaults, "top": 10, **arguments}, rollup=False)
        assert not report.percentile_method.startswith("estimated: latency histograms of the rollup")
        return dataclasses.replace(report, recommendations=recommend(report))

    return from_rows


def test_the_ledger_has_what_the_oracle_needs() -> None:
    # The checks below are only as good as the data: every case the report distinguishes is present.
    assert {e.outcome for e in EVENTS} == {"ok", "error", "invalid", "cancelled"}
    assert {e.attempt for e in EVENTS} == {1, 2, 3}
    assert any(e.cost_nanousd is None and e.model == UNPRICED for e in EVENTS)
    assert any(e.cost_nanousd is None and e.outcome != "ok" for e in EVENTS)  # waste whose cost is not known
    for name in ("model", "agent", "session", "project"):
        assert any(getattr(e, name) is None for e in EVENTS), name
    assert any(e.latency_ms == 0 for e in EVENTS)
    assert any(e.cache_hit for e in EVENTS)
    assert any(e.cache_write_tokens for e in EVENTS)
    assert any(e.started_at.utcoffset() for e in EVENTS)
    assert any(e.started_at.date() != utc_day(e) for e in EVENTS)  # a local date that is not the UTC day
    assert sum(e.cost_nanousd or 0 for e in EVENTS) > 2**53  # a float sum would round
    assert len({(utc_day(e) - timedelta(days=utc_day(e).weekday())) for e in EVENTS}) >= 4


def test_full_report_matches_the_rows(store: UsageStore, report_of: Reporter) -> None:
    report = report_of(store)
    assert report.group_by == ("agent", "model")
    assert report.filters == ReportFilters()
    assert report.generated_at.tzinfo is UTC
    assert (datetime.now(UTC) - report.generated_at) < timedelta(minutes=5)
    assert_report(report, expected(EVENTS))
    assert report.totals.cost == sum((e.cost_nanousd or 0 for e in EVENTS), 0) / Decimal(10**9)
    assert report.cost == report.totals.cost
    assert report.waste_cost == report.totals.waste_cost


@pytest.mark.parametrize(
    "group_by",
    [
        ("project",),
        ("session",),
        ("agent",),
        ("model",),
        ("provider",),
        ("day",),
        ("week",),
        ("outcome",),
        ("error_kind",),
        ("tag:env",),
        ("tag:cost.center",),
        ("tag:owner's",),
        ("project", "week", "outcome"),
        ("error_kind", "model"),
        ("week", "tag:team"),
        ("session", "day", "agent"),
        ("day", "week", "model", "agent", "provider", "project"),
    ],
)
def test_every_grouping_matches_the_rows(store: UsageStore, group_by: tuple[str, ...], report_of: Reporter) -> None:
    report = report_of(store, group_by=group_by, top=4)
    assert report.group_by == group_by
    assert_report(report, expected(EVENTS, group_by=group_by, top=4))


PLUS_TWO = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    "filters",
    [
        {"project": "alpha"},
        {"since": date(2025, 4, 28)},
        {"until": date(2025, 5, 5)},
        {"since": date(2025, 4, 28), "until": date(2025, 5, 5)},
        # Bounds that are not UTC midnights: only part of the first and last days.
        {"since": datetime(2025, 4, 28, 15, 30, tzinfo=PLUS_TWO), "until": datetime(2025, 5, 3, 7, 5, 9, tzinfo=UTC)},
        {"since": datetime(2025, 5, 1, 0, 0, 1, tzinfo=UTC), "until": datetime(2025, 5, 1, 23, 0, tzinfo=UTC)},
        {"session": "alpha-s3"},
        {"agent": "writer"},
        {"tags": {"env": "prod"}},
        {"tags": {"env": "staging", "cost.center": "cc-2"}},
        {"tags": {"owner's": "bo'b"}},
        {"project": "beta", "since": date(2025, 4, 25), "agent": "planner", "tags": {"team": "search"}},
        {"project": "nobody"},
    ],
    ids=",".join,
)
def test_filters_select_the_rows_they_name(store: UsageStore, filters: dict[str, Any], report_of: Reporter) -> None:
    report = report_of(store, **filters, group_by=("model", "week"), top=3)
    bounds = _aware_bounds(filters)
    assert report.filters == ReportFilters(
        project=filters.get("project"),
        since=bounds.get("since"),
        until=bounds.get("until"),
        session=filters.get("session"),
        agent=filters.get("agent"),
        tags=filters.get("tags", {}),
    )
    assert all(bound.tzinfo is UTC for bound in (report.filters.since, report.filters.until) if bound is not None)
    wanted = expected(EVENTS, **{**filters, **bounds}, group_by=("model", "week"), top=3)
    assert wanted.totals.attempts < len(EVENTS)
    assert_report(report, wanted)


def _aware_bounds(filters: Mapping[str, Any]) -> dict[str, datetime]:
    """``since`` and ``until`` as the report states them: UTC datetimes, a date being its midnight UTC."""
    bounds = {}
    for name in ("since", "until"):
        bound = filters.get(name)
        if isinstance(bound, datetime):
            bounds[name] = bound.astimezone(UTC)
        elif isinstance(bound, date):
            bounds[name] = datetime(bound.year, bound.month, bound.day, tzinfo=UTC)
    return bounds


def test_an_empty_selection_is_a_report_of_zeros(store: UsageStore, report_of: Reporter) -> None:
    report = report_of(store, project="nobody", group_by=("session", "tag:env"))
    assert report.totals == Usage()
    for rate in ("error_rate", "retry_rate", "reask_rate", "cache_hit_rate", "cached_token_rate"):
        assert getattr(report.totals, rate) is None
    assert report.waste == tuple(
        WasteLine(outcome, 0, 0, Decimal(0), 0) for outcome in ("error", "invalid", "cancelled")
    )
    for empty in ("breakdown", "by_model", "by_agent", "daily", "top_sessions", "session_growth", "unpriced_models"):
        assert getattr(report, empty) == (), empty


def test_an_empty_ledger_is_a_report_of_zeros(tmp_path: Path) -> None:
    with UsageStore(f"sqlite:///{tmp_path / 'empty.db'}") as empty_store:
        report = empty_store.report()
    assert report.totals == Usage()
    assert report.totals.error_rate is None
    assert report.totals.retry_rate is None
    for empty in ("breakdown", "daily", "top_sessions", "session_growth"):
        assert getattr(report, empty) == (), empty
    assert report.to_dict()["totals"]["cost_usd"] == "0"


def test_a_period_in_the_last_day_of_the_calendar(tmp_path: Path, report_of: Reporter) -> None:
    # The rollup's part of a day ends at the next midnight, and 9999-12-31 has none: OverflowError, a traceback
    # for `report --since 9999-12-31T01:00Z`.
    last_day = datetime(9999, 12, 31, tzinfo=UTC)
    events = [
        UsageEvent(uuid.uuid4(), 1, last_day + timedelta(hours=hour), latency_ms=5.0, prompt_tokens=10, cost_nanousd=7)
        for hour in (0, 5, 23)
    ]
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as calendar_end:
        calendar_end.write(events)
        assert report_of(calendar_end, since=last_day + timedelta(hours=1)).totals.attempts == 2
        report = report_of(calendar_end, since=last_day + timedelta(hours=1), until=last_day + timedelta(hours=6))
        assert (report.totals.attempts, report.totals.prompt_tokens, report.totals.cost) == (1, 10, Decimal("7E-9"))
        assert report_of(calendar_end, until=last_day + timedelta(hours=6)).totals.attempts == 2


def test_percentile_method_names_the_method_and_its_bound(store: UsageStore) -> None:
    # From the rollup (no session or tag involved), on both backends: its histograms and their bound.
    assert store.report().percentile_method == PERCENTILE_ROLLUP
    assert f"{ROLLUP_RELATIVE_ERROR:.1%}" in PERCENTILE_ROLLUP
    assert f"{ROLLUP_ABSOLUTE_ERROR_MS:g} ms" in PERCENTILE_ROLLUP
    # A report of one agent too: the rollup has the agent; only its top sessions come from the rows.
    assert store.report(agent="writer").percentile_method == PERCENTILE_ROLLUP
    assert store.report(agent="writer", group_by=("day", "model")).percentile_method == PERCENTILE_ROLLUP
    # From the rows (a session filter): PostgreSQL exact, SQLite its own finer histograms.
    method = store.report(session="alpha-s3").percentile_method
    if store.engine.dialect.name == "postgresql":
        assert method.startswith("exact: PostgreSQL percentile_cont")
    else:
        assert method.startswith("estimated: SQLite")
        assert f"{PERCENTILE_RELATIVE_ERROR:.1%}" in method


def test_sqlite_reads_the_report_index_in_its_order(tmp_path: Path) -> None:
    # The fine aggregate is one walk of the covering index, grouped as it goes: no sort, no table rows.
    # (Its few thousand groups may then be summed again without the project, with a sort of their own.)
    statements: list[tuple[str, Any]] = []
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as sqlite_store:
        sqlite_store.write(EVENTS[:50])

        def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            statements.append((statement, parameters))

        event.listen(sqlite_store.engine, "before_cursor_execute", seen)
        # The path of a report the rollup cannot answer (a session or tag filter or breakdown); forced here.
        rows_only: dict[str, Any] = {
            "since": None,
            "until": None,
            "session": None,
            "agent": None,
            "tags": None,
            "top": 10,
        }
        build_report(sqlite_store.engine, project=None, group_by=("agent", "model"), **rows_only, rollup=False)
        build_report(sqlite_store.engine, project="alpha", group_by=("week", "error_kind"), **rows_only, rollup=False)
        event.remove(sqlite_store.engine, "before_cursor_execute", seen)
        fine = [
            (sql, parameters)
            for sql, parameters in statements
            if "GROUP BY ar_usage_records.project, ar_usage_records.day, " in sql
            or "GROUP BY ar_usage_records.day, ar_usage_records.model, " in sql
        ]
        assert len(fine) == 2
        with sqlite_store.engine.connect() as connection:
            for sql, parameters in fine:
                plan = list(connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters))
                (scan,) = [row for row in plan if f"USING COVERING INDEX {REPORT_INDEX}" in row[3]]
                sorts = [row for row in plan if "TEMP B-TREE" in row[3]]
                assert all(row[1] != scan[1] for row in sorts), (sql, plan)  # none in the scan's own query


def test_sqlite_without_math_functions_gets_the_same_report(tmp_path: Path) -> None:
    # SQLite built without its math functions gets ln() and floor() from Python: the same buckets, the same report.
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as sqlite_store:
        sqlite_store.write(EVENTS)
        built_in = sqlite_store.report(group_by=("model", "tag:env"))
        sqlite_store.engine.dispose()

        def python_math(dbapi_connection: Any, _record: Any) -> None:
            # Functions an application defines take the place of SQLite's own of the same name.
            dbapi_connection.create_function("ln", 1, _ln, deterministic=True)
            dbapi_connection.create_function("floor", 1, _floor, deterministic=True)

        event.listen(sqlite_store.engine, "connect", python_math)
        with_python = sqlite_store.report(group_by=("model", "tag:env"))
    assert dataclasses.replace(with_python, generated_at=built_in.generated_at) == built_in


# ---- bad arguments


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"since": datetime(2025, 5, 1)}, "timezone-aware"),
        ({"until": datetime(2025, 5, 1)}, "timezone-aware"),
        ({"since": "2025-05-01"}, "datetime or a date"),
        ({"since": date(2025, 5, 2), "until": date(2025, 5, 1)}, "before since"),
        ({"group_by": ()}, "at least one column"),
        ({"group_by": "agent"}, "tuple of column names"),
        ({"group_by": ("agent", "agent")}, "more than once"),
        ({"group_by": ("agent", "colour")}, "unknown group_by column 'colour'"),
        ({"group_by": ("agent", 3)}, "column names"),
        ({"group_by": ("tag:",)}, "non-empty"),
        ({"group_by": ('tag:a"b',)}, "double quote"),
        ({"group_by": None}, "tuple of column names"),
        ({"top": 0}, "top must be an integer >= 1"),
        ({"top": -3}, "top must be"),
        ({"top": True}, "top must be"),
        ({"top": 2.5}, "top must be"),
        ({"tags": ["env"]}, "mapping"),
        ({"tags": {"env": 1}}, "must be a string"),
        ({"tags": {"": "x"}}, "non-empty"),
        ({"project": 7}, "project must be a string"),
        ({"session": b"s"}, "session must be a string"),
        ({"agent": ("writer",)}, "agent must be a string"),
    ],
)
def test_bad_arguments_raise_configuration_error(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as sqlite_store, pytest.raises(ConfigurationError) as raised:
        sqlite_store.report(**arguments)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"project": "\x00"}, "project must not contain"),
        ({"session": "a\x00b"}, "session must not contain"),
        ({"agent": "\x00"}, "agent must not contain"),
        ({"agent": "\ud800"}, "agent must not contain"),
        ({"tags": {"k": "\x00"}}, "tags: the value of 'k' must not contain"),
        ({"tags": {"\x00": "v"}}, "tags: a tag key must not contain"),
        ({"group_by": ("tag:\x00",)}, "a tag key must not contain"),
        ({"group_by": ("tag:\udfff",)}, "a tag key must not contain"),
    ],
)
def test_a_filter_the_ledger_can_never_hold_is_refused(store_url: str, arguments: dict[str, Any], message: str) -> None:
    # The writer stores NUL and lone surrogates as U+FFFD; PostgreSQL refuses them in a query.
    with UsageStore(store_url) as any_store, pytest.raises(ConfigurationError) as raised:
        any_store.report(**arguments)
    assert message in str(raised.value)
    assert "\x00" not in str(raised.value)


@pytest.mark.parametrize("project", ["\x00", "acme\x00", "\ud83d"])
def test_a_sessions_project_the_ledger_can_never_hold_is_refused(store_url: str, project: str) -> None:
    with UsageStore(store_url) as any_store, pytest.raises(ConfigurationError, match="project must not contain"):
        any_store.sessions(project)


def test_an_unknown_column_names_the_valid_choices(tmp_path: Path) -> None:
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as sqlite_store, pytest.raises(ConfigurationError) as raised:
        sqlite_store.report(group_by=("team",))
    for choice in (
        "project",
        "session",
        "agent",
        "model",
        "provider",
        "day",
        "week",
        "outcome",
        "error_kind",
        "tag:KEY",
    ):
        assert choice in str(raised.value)


def test_session_growth_skips_failed_attempts_that_reported_no_prompt(tmp_path: Path) -> None:
    # Six calls whose prompts grow 1,000 to 6,000 tokens; the first and the last began with a rate limit,
    # which reports 0 tokens, and their retries sent the prompt. The growth is 6, not unknown (0 / 0).
    start = datetime(2025, 5, 1, 9, tzinfo=UTC)

    def attempt(
        call: uuid.UUID, number: int, at: datetime, tokens: int, outcome: Literal["ok", "error"] = "ok"
    ) -> UsageEvent:
        return UsageEvent(
            call,
            number,
            at,
            900.0,
            project="p",
            session="s",
            agent="a",
            model="gpt-4o",
            prompt_tokens=tokens,
            cost_nanousd=tokens * 2500,
            outcome=outcome,
            error_kind="rate_limit" if outcome == "error" else None,
        )

    events = []
    for index in range(6):
        call, at, number = uuid.uuid4(), start + timedelta(minutes=index), 1
        if index in (0, 5):
            events.append(attempt(call, 1, at, 0, "error"))
            at, number = at + timedelta(seconds=5), 2
        events.append(attempt(call, number, at, 1000 * (index + 1)))
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as sqlite_store:
        sqlite_store.write(events)
        report = sqlite_store.report("p")
    (growth,) = report.session_growth
    assert (growth.first_prompt_tokens, growth.last_prompt_tokens, growth.growth) == (1000, 6000, 6.0)
    assert [finding.code for finding in report.recommendations] == ["prompt_growth"]
