"""``UsageStore.report``: a :class:`~autogen_reliability.reports.UsageReport` aggregated in SQL.

Rows are never loaded into Python: every number comes out of ``GROUP BY``
queries, and Python only adds up their (small) results. All queries of one
report run in one transaction, so they see one snapshot of a ledger that is
being written to.

**From the rollups** (``storage/_rollup.py``, kept by the writes): whenever the
report names no session and no tag (as a filter or in ``group_by``) and its
breakdown has no outcome or error kind:

1. **The fine aggregate**: the sums of ``ar_usage_rollup`` (per UTC day,
   project, model, agent and provider, the waste outcomes in columns of their
   own) grouped by day, model and agent and the breakdown's columns. Whole
   days come from the rollup; a bound that is not a UTC midnight adds the part
   of its day from the rows, summed by the rollup's own query
   (:func:`select_from_records`). Totals, waste, models, agents, cost per day
   and the breakdown are sums of its rows.
2. **Latency percentiles** from the summed histograms (both backends): a
   latency is taken at its bucket's geometric middle, the smallest and largest
   exactly, and the percentile interpolated as ``percentile_cont`` does:
   within :data:`ROLLUP_RELATIVE_ERROR` (8.7 %) from 10 ms to 5 minutes,
   within :data:`ROLLUP_ABSOLUTE_ERROR_MS` (5 ms) below.
3. **Top sessions** from ``ar_usage_session_days`` (each session's cost per
   day and project), unless the report is of one agent: then from the rows.

Measured on a million attempts: see docs/reports.md.

**From the rows** otherwise:

1. **The fine aggregate**: the sums of every number of
   :class:`~autogen_reliability.reports.Usage` (the waste outcomes' counted
   with ``FILTER``) grouped by project, day, model and agent, and as many of
   outcome, provider and error kind as the breakdown needs. These are the
   leading columns of the report index (``ix_ar_usage_records_report``, which
   holds every column a report reads), so SQLite aggregates while it walks the
   index in its order, without sorting and without reading the wide rows;
   PostgreSQL hashes it in parallel. When the project is only grouped by for
   the index's sake, the groups are summed again without it, in SQL. A
   breakdown by session or by a tag has a query of its own.
2. **Latency percentiles** (p50 and p95) of the totals, each breakdown group,
   each model and each agent. PostgreSQL computes them exactly with
   ``percentile_cont`` in one query over ``GROUPING SETS``. SQLite has no
   percentile function: it counts latencies in logarithmic buckets
   (:data:`BUCKET_RATIO` wide) with their minimum and maximum, in SQL, and the
   percentiles are interpolated from those counts (in Python) as ``percentile_cont``
   interpolates. Each latency is estimated within a factor of the square root
   of the ratio (the first and last of a bucket exactly), so an estimated
   percentile is within :data:`PERCENTILE_RELATIVE_ERROR` (4.9 %) of the exact
   one, for latencies above zero.
3. **Top sessions**: the ``top`` sessions by cost, summed while walking the
   session index (``ix_ar_usage_records_session`` holds what this needs).

Either way, for the few top sessions: their numbers, latency percentiles, the
model most of their attempts asked for, and the prompt tokens of their first
and last calls, from their rows (found through the session index).

docs/reports.md has the definitions of the numbers and what a report of a
million rows costs on each backend.

Bounds: ``since`` and ``until`` select on the indexed ``day``; ``started_at``
is compared only on the first and last day, when a bound is not a UTC midnight.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Date,
    Engine,
    Select,
    String,
    Table,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression
from sqlalchemy.sql.operators import custom_op
from sqlalchemy.sql.selectable import Subquery

from .._errors import ConfigurationError
from .._redaction import quoted
from ..reports._model import (
    GROUP_COLUMNS,
    DailyCost,
    Group,
    ReportFilters,
    SessionGrowth,
    Usage,
    UsageReport,
    WasteLine,
    nanousd_to_usd,
)
from ._bulk import RECORDS, UNSTORABLE
from ._models import WASTE_OUTCOMES, WASTE_SUMS
from ._rollup import (
    BOUNDS,
    COST_SPLIT,
    HISTOGRAM,
    KEY_TEXT,
    RATIO,
    ROLLUP,
    SESSION_DAYS,
    SUMS,
    WASTE,
    attempt_tokens,
    select_from_records,
    select_sessions_from_records,
)

__all__ = [
    "BUCKET_RATIO",
    "PERCENTILES",
    "PERCENTILE_RELATIVE_ERROR",
    "ROLLUP_ABSOLUTE_ERROR_MS",
    "ROLLUP_RELATIVE_ERROR",
    "build_report",
    "check_filter",
    "check_group_by",
    "check_tag_key",
    "check_tag_value",
]

PERCENTILES: Final = (0.5, 0.95)
"""The latency percentiles of every :class:`Usage`: p50 and p95."""

BUCKET_RATIO: Final = 1.1
"""SQLite's latency buckets: each spans ``[r**k, r**(k+1))`` milliseconds for this ``r``."""

PERCENTILE_RELATIVE_ERROR: Final = math.sqrt(BUCKET_RATIO) - 1
"""The largest relative error of a percentile estimated from SQLite's buckets (0.0488)."""

ROLLUP_RELATIVE_ERROR: Final = math.sqrt(RATIO) - 1
"""The largest relative error of a percentile from the rollup's histograms, for latencies of 10 ms to 5 min (0.0867)."""

ROLLUP_ABSOLUTE_ERROR_MS: Final = BOUNDS[0] / 2
"""The largest error, in milliseconds, of a percentile from the rollup's histograms below 10 ms (5 ms)."""

TAG_PREFIX: Final = "tag:"

PERCENTILE_CONT: Final = "exact: PostgreSQL percentile_cont (linear interpolation between the two nearest latencies)"
PERCENTILE_HISTOGRAM: Final = (
    f"estimated: SQLite counts latencies in logarithmic buckets {BUCKET_RATIO - 1:.0%} wide and interpolates "
    f"as percentile_cont does; within {PERCENTILE_RELATIVE_ERROR:.1%} of the exact value (latencies above 0)"
)

PERCENTILE_ROLLUP: Final = (
    f"estimated: latency histograms of the rollup (logarithmic buckets {RATIO - 1:.1%} wide from 10 ms to 5 min, "
    f"each latency taken at its bucket's geometric middle, the smallest and largest exactly), interpolated as "
    f"percentile_cont does; within {ROLLUP_RELATIVE_ERROR:.1%} of the exact value from 10 ms to 5 min, "
    f"within {ROLLUP_ABSOLUTE_ERROR_MS:g} ms below 10 ms"
)

# The columns the fine aggregate groups by, in the order of the report index: SQLite aggregates while
# it walks the index only when the grouped columns are a prefix of it (in any order).
_FINE: Final[tuple[str, ...]] = ("project", "day", "model", "agent", "outcome", "provider", "error_kind")
_ALWAYS_FINE: Final = ("day", "model", "agent")
_FROM_FINE: Final = frozenset((*_FINE, "week"))
"""Breakdown columns computed from the fine aggregate; ``session`` and tags have a query of their own."""
_IN_ROLLUP: Final = frozenset(("project", "day", "week", "model", "agent", "provider"))
"""Breakdown columns the rollup has (it has no outcome, error kind, session or tag)."""

_SQLITE_LOG_SCALE: Final = 1 / math.log(BUCKET_RATIO)
_PG_REPORT_SETTINGS: Final = (
    # The percentile sorts of a million latencies fit in memory instead of spilling to disk, and JIT
    # compilation (about 150 ms here, for a query of a few hundred) is not worth it.
    "SELECT set_config('work_mem', '128MB', true), set_config('jit', 'off', true)"
)

Key = tuple[Any, ...]
Sums = list[int]
SumRows = list[tuple[Key, Sums]]
Histogram = tuple[Key, float, float, list[int]]
"""A group's key, its smallest and largest latency, and its count in each bucket of the rollup."""

# The positions of the sums in a fine row and in the accumulators made of them: eleven sums of every attempt,
# then per waste outcome its attempts, tokens (prompt and completion), cost and priced attempts.
(_ATTEMPTS, _CALLS, _RETRIED, _PROMPT, _COMPLETION, _CACHED, _REASONING, _COST, _PRICED, _CACHE_HITS, _CACHE_WRITE) = (
    range(11)
)
_OF_WASTE: Final = {outcome: 11 + 4 * index for index, outcome in enumerate(WASTE_OUTCOMES)}
_W_ATTEMPTS, _W_TOKENS, _W_COST, _W_PRICED = range(4)
_SUMS_LENGTH: Final = 11 + 4 * len(WASTE_OUTCOMES)


MOST_ROWS: Final = 2**63 - 1
"""The most rows a ``LIMIT`` or ``OFFSET`` can name: a signed 64-bit integer on SQLite and PostgreSQL alike.

Past it SQLite's driver raises ``OverflowError``; a count above it (``top``, ``limit``, ``batch_size``) is
taken as this one, which is every row there can be.
"""


@dataclass(frozen=True, slots=True)
class _Spec:
    """The checked arguments of a report."""

    filters: ReportFilters
    group_by: tuple[str, ...]
    top: int


def check_group_by(group_by: object) -> tuple[str, ...]:
    """``group_by`` as a tuple of valid, distinct column names.

    Raises:
        ConfigurationError: Not a sequence of strings, empty, a repeat, or a name that is not a column.
    """
    choices = f"{', '.join(GROUP_COLUMNS)} or {TAG_PREFIX}KEY"
    if isinstance(group_by, str) or not isinstance(group_by, Sequence):
        raise ConfigurationError(f"group_by must be a tuple of column names ({choices}), got {group_by!r}")
    columns = tuple(group_by)
    if not columns:
        raise ConfigurationError(f"group_by needs at least one column: {choices}")
    for column in columns:
        if not isinstance(column, str):
            raise ConfigurationError(f"group_by takes column names ({choices}), got {column!r}")
        if column.startswith(TAG_PREFIX):
            check_tag_key(column[len(TAG_PREFIX) :], f"group_by column {quoted(column)}")
        elif column not in GROUP_COLUMNS:
            raise ConfigurationError(f"unknown group_by column {quoted(column)}: choose from {choices}")
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise ConfigurationError(f"group_by names {', '.join(map(quoted, repeated))} more than once")
    return columns


def check_tag_key(key: object, where: str) -> str:
    """``key``, a tag key to filter or group on: a non-empty string the ledger could hold, without ``"``.

    ``where`` starts the message (``"tags"``: ``tags: ...``); empty, for a caller that names the
    argument itself (the command line, as argparse does), the message is the reason alone.

    Raises:
        ConfigurationError: Not a string, empty, with a NUL character or a lone surrogate, or with a double quote.
    """
    at = f"{where}: " if where else ""
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"{at}a tag key must be a non-empty string, got {key!r}")
    _check_storable(f"{at}a tag key", key)
    if '"' in key:
        # SQLite's JSON paths have no escape for a quote inside a quoted key.
        raise ConfigurationError(f'{at}tag keys with a double quote (") cannot be reported on, got {quoted(key)}')
    return key


def check_tag_value(key: str, value: object, where: str) -> str:
    """``value``, the value of tag ``key`` to filter on: a string the ledger could hold.

    ``where`` starts the message, as :func:`check_tag_key`'s does.

    Raises:
        ConfigurationError: Not a string, or with a NUL character or a lone surrogate.
    """
    at = f"{where}: " if where else ""
    if not isinstance(value, str):
        raise ConfigurationError(f"{at}the value of {quoted(key)} must be a string, got {value!r}")
    _check_storable(f"{at}the value of {quoted(key)}", value)
    return value


def _check_spec(
    *,
    project: object,
    since: datetime | None,
    until: datetime | None,
    session: object,
    agent: object,
    tags: object,
    group_by: object,
    top: object,
) -> _Spec:
    checked_tags: dict[str, str] = {}
    if tags is not None:
        if not isinstance(tags, Mapping):
            raise ConfigurationError(f"tags must be a mapping of tag keys to values, got {type(tags).__name__}")
        for key, value in tags.items():
            check_tag_key(key, "tags")  # first: the value's message quotes the key
            checked_tags[key] = check_tag_value(key, value, "tags")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigurationError(f"top must be an integer >= 1, got {top!r}")
    filters = ReportFilters(
        project=check_filter("project", project),
        since=None if since is None else since.astimezone(UTC),
        until=None if until is None else until.astimezone(UTC),
        session=check_filter("session", session),
        agent=check_filter("agent", agent),
        tags=checked_tags,
    )
    return _Spec(filters, check_group_by(group_by), min(top, MOST_ROWS))


def check_filter(name: str, value: object) -> str | None:
    """A project, session or agent to select rows by: a string the ledger could hold, or None.

    Raises:
        ConfigurationError: Not a string, or with a NUL character or a lone surrogate.
    """
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string or None, got {type(value).__name__}")
    if value is not None:
        _check_storable(name, value)
    return value


def _check_storable(name: str, value: str) -> None:
    # No row holds these (the writer stores U+FFFD instead), so no filter with one can match; and
    # PostgreSQL refuses them in a query, as a database error rather than an answer.
    found = UNSTORABLE.search(value)
    if found is not None:
        raise ConfigurationError(
            f"{name} must not contain {found.group()!a} (the ledger holds none: it stores U+FFFD instead)"
        )


def build_report(
    engine: Engine,
    *,
    project: object,
    since: datetime | None,
    until: datetime | None,
    session: object,
    agent: object,
    tags: object,
    group_by: object,
    top: object,
    rollup: bool = True,
) -> UsageReport:
    """The report of ``UsageStore.report`` (its arguments checked here; bounds already checked, in UTC).

    ``rollup=False`` sums the raw rows even where the rollup could answer (tests compare both).
    """
    spec = _check_spec(
        project=project, since=since, until=until, session=session, agent=agent, tags=tags, group_by=group_by, top=top
    )
    with _snapshot(engine) as connection:
        return _Report(connection, spec, rollup=rollup).build()


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection in one read transaction, so the report's queries all see one state of the ledger."""
    with engine.connect() as opened:
        connection = opened
        sqlite = connection.dialect.name == "sqlite"
        threads = 0
        if sqlite:
            _sqlite_math(connection)
            # Sorting a million rows (the latency histograms, a breakdown by session) with helper threads:
            # 0.85-0.98 s instead of 1.4 s here, on 2 cores. SQLite caps it at its own maximum (8).
            threads = int(connection.exec_driver_sql("PRAGMA threads").scalar() or 0)
            connection.exec_driver_sql(f"PRAGMA threads={os.cpu_count() or 1}")
            connection.exec_driver_sql("BEGIN")  # the sqlite3 module starts no transaction for reads
        elif connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            connection.exec_driver_sql(_PG_REPORT_SETTINGS)
        try:
            yield connection
        finally:
            connection.rollback()
        if sqlite:
            connection.exec_driver_sql(f"PRAGMA threads={threads}")  # the pool's connection as it was


def _sqlite_math(connection: Connection) -> None:
    """``ln`` and ``floor`` for the latency buckets, as Python functions where SQLite was built without them."""
    try:
        connection.exec_driver_sql("SELECT ln(2.0), floor(2.5)")
    except OperationalError:
        raw = connection.connection.driver_connection
        raw.create_function("ln", 1, _ln, deterministic=True)  # type: ignore[union-attr]
        raw.create_function("floor", 1, _floor, deterministic=True)  # type: ignore[union-attr]


def _ln(value: float | None) -> float | None:
    return math.log(value) if value is not None and value > 0 else None


def _floor(value: float | None) -> float | None:
    return None if value is None else float(math.floor(value))


class _Report:
    """The queries of one report on one connection, and the sums of their results."""

    def __init__(self, connection: Connection, spec: _Spec, *, rollup: bool = True) -> None:
        self._connection = connection
        self._spec = spec
        self._dialect = connection.dialect.name
        self._where = self._conditions(spec.filters)
        # The rollup knows no session and no tag: a filter or a breakdown by those needs the rows.
        rolled_up = rollup and spec.filters.session is None and not spec.filters.tags
        self._rollup = rolled_up and all(name in _IN_ROLLUP for name in spec.group_by)
        # The session rollup has no agent: a report of one agent finds only its top sessions in the rows.
        self._session_rollup = rolled_up and spec.filters.agent is None

    # ---- SQL pieces

    def _conditions(self, filters: ReportFilters) -> list[ColumnElement[bool]]:
        c = RECORDS.c
        conditions: list[ColumnElement[bool]] = []
        if filters.project is not None:
            conditions.append(c.project == filters.project)
        if filters.session is not None:
            conditions.append(c.session == filters.session)
        if filters.agent is not None:
            conditions.append(c.agent == filters.agent)
        if filters.since is not None:
            first = filters.since.date()
            conditions.append(c.day >= first)
            if filters.since != _midnight(first):
                # Only rows of the first day need the exact time (the indexed day decides the others).
                conditions.append(or_(c.day > first, c.started_at >= filters.since))
        if filters.until is not None:
            last = filters.until.date()
            if filters.until == _midnight(last):
                conditions.append(c.day < last)
            else:
                conditions.extend((c.day <= last, or_(c.day < last, c.started_at < filters.until)))
        for key, value in filters.tags.items():
            conditions.append(self._tag(key) == value)
        return conditions

    def _tag(self, key: str) -> ColumnElement[Any]:
        # The key is rendered into the statement (literal_execute): an expression grouped by must be
        # the same text in the select list, which two bound parameters are not.
        if self._dialect == "postgresql":
            value: ColumnElement[Any] = type_coerce(RECORDS.c.tags, JSONB)[
                bindparam(None, key, String, literal_execute=True)
            ].astext
            return value
        # SQLite (before 3.45) finds a quoted key of a path as the JSON text spells it, and the ledger's JSON
        # is written with its escapes (json.dumps: é as \u00e9, \ as \\): so is the key, or it matched nothing.
        path = "$." + json.dumps(key)
        return func.json_extract(RECORDS.c.tags, bindparam(None, path, String, literal_execute=True))

    def _column(self, name: str, *, week_as_day: bool = True) -> ColumnElement[Any]:
        """The SQL of a group column; a week is grouped by day and summed up by week, unless percentiles need it."""
        if name.startswith(TAG_PREFIX):
            return self._tag(name[len(TAG_PREFIX) :])
        if name == "week":
            if week_as_day:
                return RECORDS.c.day
            if self._dialect == "postgresql":
                week = bindparam(None, "week", String, literal_execute=True)
                return cast(func.date_trunc(week, RECORDS.c.day), Date)
            raise AssertionError("SQLite groups weeks by day")  # pragma: no cover
        if name == "session":
            return self._session()
        return RECORDS.c[name]

    def _session(self) -> ColumnElement[Any]:
        """The session column to group by (with every sum of a report).

        On SQLite, ``+session``: the same value, but no index can provide its order. Grouping by the
        plain column, SQLite walks the session index (to skip a sort) and reads a million table rows
        through it for the sums that index does not hold: 1.3-1.6 s for 1M rows, where the report
        index and a sort take 0.1-0.8 s. Filters keep the plain column, so a few sessions are still
        found through the index.
        """
        if self._dialect == "sqlite":
            return UnaryExpression(RECORDS.c.session, operator=custom_op("+"), type_=RECORDS.c.session.type)
        return RECORDS.c.session

    def _sums(self) -> list[ColumnElement[Any]]:
        """The sums of a group, in the order of a :data:`Sums` (see ``_ATTEMPTS`` .. ``_OF_WASTE``)."""
        c = RECORDS.c
        sums = [
            func.count(),
            func.count().filter(c.attempt == 1),
            func.count().filter(c.attempt == 2),  # a call's second attempt: its first retry or re-ask
            func.sum(c.prompt_tokens),
            func.sum(c.completion_tokens),
            func.sum(c.cached_tokens),
            func.sum(c.reasoning_tokens),
            func.sum(c.cost_nanousd),
            func.count(c.cost_nanousd),
            func.count().filter(c.cache_hit),
            func.sum(c.cache_write_tokens),
        ]
        tokens = attempt_tokens()
        for outcome in WASTE_OUTCOMES:
            of_outcome = c.outcome == outcome
            sums.extend(
                (
                    func.count().filter(of_outcome),
                    func.sum(tokens).filter(of_outcome),
                    func.sum(c.cost_nanousd).filter(of_outcome),
                    func.count(c.cost_nanousd).filter(of_outcome),
                )
            )
        return sums

    def _select(self, *columns: ColumnElement[Any], sessions: Sequence[str] = ()) -> Select[Any]:
        """``columns`` of the rows the filters select (and of ``sessions`` only, if given)."""
        query = select(*columns).where(*self._where)
        return query.where(RECORDS.c.session.in_(sessions)) if sessions else query

    def _sum_rows(
        self, names: Sequence[str], sessions: Sequence[str] = (), *, through: Sequence[str] = ()
    ) -> list[tuple[Key, list[int]]]:
        """``(key, sums)`` per group of the columns ``names`` (a key holds their values, in that order).

        With ``through``, the rows are grouped by those columns too first, then summed without them: a
        column the report index leads with, so that SQLite groups while it walks the index, and Python
        receives five times fewer rows for a million attempts over five projects.
        """
        keys = [self._column(name) for name in names]
        if not through:
            query = self._select(*keys, *self._sums(), sessions=sessions).group_by(*keys)
        else:
            inner_keys = [*(self._column(name) for name in through), *keys]
            labels = [f"k{index}" for index in range(len(keys))]
            sums = [f"s{index}" for index in range(_SUMS_LENGTH)]
            inner = (
                self._select(
                    *(column.label(label) for column, label in zip(keys, labels, strict=True)),
                    *(column.label(label) for column, label in zip(self._sums(), sums, strict=True)),
                    sessions=sessions,
                )
                .group_by(*inner_keys)
                .subquery()
            )
            grouped = [inner.c[label] for label in labels]
            query = select(*grouped, *(func.sum(inner.c[name]) for name in sums)).group_by(*grouped)
        width = len(keys)
        # PostgreSQL sums a bigint as numeric (a Decimal); a sum of no value at all is NULL.
        return [
            (tuple(row[:width]), [int(value or 0) for value in row[width:]]) for row in self._connection.execute(query)
        ]

    # ---- the report

    def build(self) -> UsageReport:
        spec = self._spec
        histograms: list[Histogram] = []
        if self._rollup:
            # Grouped by the breakdown's columns, the model and the agent (a week by its days), with the
            # latency histograms: the totals, models, agents, breakdown and all their percentiles are sums
            # of these rows (for a week, by day too, they would be seven times as many).
            fine = list(dict.fromkeys("day" if name == "week" else name for name in (*spec.group_by, "model", "agent")))
            rows, histograms = self._rollup_sum_rows(fine)
        else:
            # The columns up to the last one needed, so that they are a prefix of the report index (in any
            # order), which SQLite groups by while it walks the index; the project too, through _sum_rows,
            # unless one project is selected.
            needed = {*_ALWAYS_FINE, *spec.group_by}
            last = max(_FINE.index(name) for name in needed if name in _FINE)
            fine = [name for name in _FINE[: last + 1] if name != "project" or name in needed]
            through = ("project",) if spec.filters.project is None and "project" not in fine else ()
            rows = self._sum_rows(fine, through=through)
        position = {name: index for index, name in enumerate(fine)}
        if "day" in position:
            position["week"] = position["day"]  # summed up by week from the days
        model_at, agent_at = position["model"], position["agent"]
        totals = _roll_up(rows, lambda key: ()).get((), _zeros())
        by_model = _roll_up(rows, lambda key: (key[model_at],))
        by_agent = _roll_up(rows, lambda key: (key[agent_at],))
        if "day" in position:
            day_at = position["day"]
            daily = _roll_up(rows, lambda key: (key[day_at], key[model_at]))
        else:
            daily = self._rollup_daily()
        if all(name in _FROM_FINE for name in spec.group_by):
            breakdown = _roll_up(rows, _key_maker(spec.group_by, position))
        else:
            positions = {name: index for index, name in enumerate(spec.group_by)}
            breakdown = _roll_up(self._sum_rows(spec.group_by), _key_maker(spec.group_by, positions))

        percentiles = self._rollup_percentiles(histograms, position) if self._rollup else self._percentiles()
        top_sessions, growth = self._top_sessions()
        return UsageReport(
            filters=spec.filters,
            generated_at=datetime.now(UTC),
            group_by=spec.group_by,
            totals=_usage(totals, percentiles["totals"].get(())),
            unpriced_models=tuple(
                sorted(key[0] for key, sums in by_model.items() if key[0] is not None and _unpriced(sums))
            ),
            waste=tuple(_waste_line(outcome, totals) for outcome in WASTE_OUTCOMES),
            breakdown=_groups(spec.group_by, breakdown, percentiles["breakdown"]),
            by_model=_groups(("model",), by_model, percentiles["model"]),
            by_agent=_groups(("agent",), by_agent, percentiles["agent"]),
            daily=tuple(
                DailyCost(
                    day=day,
                    model=model,
                    cost=nanousd_to_usd(sums[_COST]),
                    tokens=sums[_PROMPT] + sums[_COMPLETION],
                    attempts=sums[_ATTEMPTS],
                    unpriced_attempts=_unpriced(sums),
                )
                for (day, model), sums in sorted(daily.items(), key=lambda item: (item[0][0], _text_order(item[0][1])))
            ),
            top_sessions=top_sessions,
            session_growth=growth,
            percentile_method=PERCENTILE_ROLLUP
            if self._rollup
            else PERCENTILE_CONT
            if self._dialect == "postgresql"
            else PERCENTILE_HISTOGRAM,
        )

    # ---- the rollup

    def _rollup_source(
        self,
        columns: Sequence[str],
        table: Table = ROLLUP,
        from_records: Callable[..., Select[Any]] = select_from_records,
    ) -> Subquery:
        """``columns`` of the report's rollup rows: whole days from the rollup ``table``, a part of a day from its rows.

        A bound that is not a UTC midnight cuts its day: that day's rows within the bounds are summed as
        the rollup would sum them (``from_records``, the same query as retention's rebuild), and added to the
        whole days. ``ar_usage_session_days`` is read the same way, with its own query.
        """
        filters = self._spec.filters
        r = table.c
        since, until = filters.since, filters.until
        conditions: list[ColumnElement[bool]] = []
        edges: list[tuple[datetime, datetime | None]] = []  # (start, end): None ends with the calendar
        if since is not None:
            first = since.date()
            if since == _midnight(first):
                conditions.append(r.day >= first)
            else:
                conditions.append(r.day > first)
                # 9999-12-31 has no next midnight: its part ends at until, if any.
                ends = [end for end in (until, _next_midnight(first)) if end is not None]
                edges.append((since, min(ends, default=None)))
        if until is not None:
            last = until.date()
            conditions.append(r.day < last)
            if until != _midnight(last) and not (edges and since is not None and since.date() == last):
                edges.append((_midnight(last) if since is None else max(since, _midnight(last)), until))
        records: list[ColumnElement[bool]] = []
        for name, value in (("project", filters.project), ("agent", filters.agent)):
            if value is not None:
                conditions.extend((r[name] == value, _nulls_bit(r.nulls, name) == literal_column("0")))
                records.append(RECORDS.c[name] == value)
        parts: list[Select[Any]] = [select(*(r[name] for name in columns)).where(*conditions)]
        c = RECORDS.c
        for start, end in edges:
            if end is None or start < end:
                before = () if end is None else (c.started_at < end,)
                part = from_records(c.started_at >= start, *before, *records).subquery()
                parts.append(select(*(part.c[name] for name in columns)))
        return (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("rollup")

    @staticmethod
    def _rollup_column(source: Subquery, name: str) -> ColumnElement[Any]:
        """A group column of the rollup: NULL where ``nulls`` says so; a week is grouped by day."""
        if name in KEY_TEXT:
            return case((_nulls_bit(source.c.nulls, name) != literal_column("0"), null()), else_=source.c[name])
        return source.c["day" if name == "week" else name]

    def _rollup_sum_rows(self, names: Sequence[str]) -> tuple[SumRows, list[Histogram]]:
        """:meth:`_sum_rows` from the rollup, and each group's latency histogram."""
        latencies = ["latency_min_ms", "latency_max_ms", *HISTOGRAM]
        source = self._rollup_source([*_rollup_keys(names), *SUMS, *WASTE, *latencies])
        grouped = [self._rollup_column(source, name) for name in names]
        query = select(
            *grouped,
            *(func.sum(source.c[name]) for name in (*SUMS, *WASTE)),
            func.min(source.c.latency_min_ms),
            func.max(source.c.latency_max_ms),
            *(func.sum(source.c[name]) for name in HISTOGRAM),
        ).group_by(*grouped)
        width = len(grouped)
        sums_end = width + len(SUMS) + len(WASTE)
        per_outcome = len(WASTE_SUMS)
        rows: SumRows = []
        histograms: list[Histogram] = []
        for row in self._connection.execute(query):
            key = tuple(row[:width])
            values = [int(value or 0) for value in row[width:sums_end]]
            # The cost's two parts (cost_high, cost_low) put together: eleven sums, as _sum_rows gives them.
            sums = [*values[:7], values[7] * COST_SPLIT + values[8], *values[9:12]]
            for at in range(len(SUMS), len(values), per_outcome):
                wasted, tokens, waste_high, waste_low, waste_priced = values[at : at + per_outcome]
                sums.extend((wasted, tokens, waste_high * COST_SPLIT + waste_low, waste_priced))
            rows.append((key, sums))
            counts = [int(count or 0) for count in row[sums_end + 2 :]]
            histograms.append((key, float(row[sums_end]), float(row[sums_end + 1]), counts))
        return rows, histograms

    def _rollup_daily(self) -> dict[Key, Sums]:
        """The sums of a :class:`DailyCost` per (day, model), from the rollup: attempts, tokens, cost, priced."""
        wanted = ("attempts", "prompt_tokens", "completion_tokens", "cost_high", "cost_low", "priced_attempts")
        source = self._rollup_source([*_rollup_keys(("day", "model")), *wanted])
        grouped = [self._rollup_column(source, name) for name in ("day", "model")]
        query = select(*grouped, *(func.sum(source.c[name]) for name in wanted)).group_by(*grouped)
        daily = {}
        for day, model, *values in self._connection.execute(query):
            attempts, prompt, completion, high, low, priced = (int(value or 0) for value in values)
            sums = _zeros()
            sums[_ATTEMPTS], sums[_PROMPT], sums[_COMPLETION] = attempts, prompt, completion
            sums[_COST], sums[_PRICED] = high * COST_SPLIT + low, priced
            daily[(day, model)] = sums
        return daily

    def _rollup_percentiles(
        self, histograms: Sequence[Histogram], positions: Mapping[str, int]
    ) -> dict[str, dict[Key, tuple[float, float]]]:
        """p50 and p95 per group of each target, from the histograms of :meth:`_rollup_sum_rows`."""
        results: dict[str, dict[Key, tuple[float, float]]] = {}
        for target, names in self._targets().items():
            key = _key_maker(names, positions)
            merged: dict[Key, list[Any]] = {}
            for values, low, high, counts in histograms:
                group = key(values)
                found = merged.get(group)
                if found is None:
                    merged[group] = [low, high, counts]
                else:
                    found[0] = min(found[0], low)
                    found[1] = max(found[1], high)
                    found[2] = [a + b for a, b in zip(found[2], counts, strict=True)]
            results[target] = {
                group: _rollup_percentile_pair(low, high, counts) for group, (low, high, counts) in merged.items()
            }
        return results

    # ---- percentiles

    def _targets(self) -> dict[str, tuple[str, ...]]:
        return {"breakdown": self._spec.group_by, "model": ("model",), "agent": ("agent",), "totals": ()}

    def _percentiles(self) -> dict[str, dict[Key, tuple[float, float]]]:
        """p50 and p95 per group of each target: the breakdown, the models, the agents, the totals."""
        targets = self._targets()
        if self._dialect == "postgresql":
            return self._percentile_cont(targets)
        group_by = self._spec.group_by
        sets: list[tuple[str, ...]]
        if all(name in _FROM_FINE for name in group_by):
            # One histogram per group of every column needed; models, agents and totals are its sums.
            sets = [tuple(dict.fromkeys((*group_by, "model", "agent")))]
        else:
            sets = [group_by, ("model", "agent")]
        results: dict[str, dict[Key, tuple[float, float]]] = {}
        histograms = {columns: self._histograms(columns) for columns in sets}
        for target, columns in targets.items():
            source = next(found for found in sets if set(columns) <= set(found))
            key = _key_maker(columns, {name: index for index, name in enumerate(source)})
            merged: dict[Key, dict[int | None, list[float]]] = {}
            for source_key, buckets in histograms[source].items():
                into = merged.setdefault(key(source_key), {})
                for bucket, counts in buckets.items():
                    _merge_bucket(into, bucket, counts)
            results[target] = {group: _histogram_percentiles(buckets) for group, buckets in merged.items()}
        return results

    def _bucket(self) -> ColumnElement[Any]:
        latency = RECORDS.c.latency_ms
        # NULL for a latency of 0 (no logarithm): those are counted in a bucket of their own.
        return case((latency > 0, func.floor(func.ln(latency) * literal(_SQLITE_LOG_SCALE))))

    def _histograms(
        self, columns: Sequence[str], sessions: Sequence[str] = ()
    ) -> dict[Key, dict[int | None, list[float]]]:
        """Per group of ``columns``: bucket -> ``[count, min, max]`` of the latencies (SQLite)."""
        keys = [self._column(name) for name in columns]
        bucket = self._bucket().label("bucket")
        latency = RECORDS.c.latency_ms
        query = self._select(
            *keys, bucket, func.count(), func.min(latency), func.max(latency), sessions=sessions
        ).group_by(*keys, bucket)
        width = len(keys)
        histograms: dict[Key, dict[int | None, list[float]]] = {}
        for row in self._connection.execute(query):
            bucket_value = None if row[width] is None else int(row[width])
            counts = [float(row[width + 1]), float(row[width + 2]), float(row[width + 3])]
            _merge_bucket(histograms.setdefault(tuple(row[:width]), {}), bucket_value, counts)
        return histograms

    def _percentile_cont(
        self, targets: Mapping[str, tuple[str, ...]], sessions: Sequence[str] = ()
    ) -> dict[str, dict[Key, tuple[float, float]]]:
        """Exact percentiles of every target in one query over ``GROUPING SETS`` (PostgreSQL)."""
        columns = list(dict.fromkeys(name for names in targets.values() for name in names))
        expressions = [self._column(name, week_as_day=False) for name in columns]
        sets = list(dict.fromkeys(targets.values()))
        grouping_sets = func.grouping_sets(
            *(tuple_(*(expressions[columns.index(name)] for name in names)) for names in sets)
        )
        percentiles = func.percentile_cont(array(list(PERCENTILES))).within_group(RECORDS.c.latency_ms)
        grouping = func.grouping(*expressions)
        query = self._select(*expressions, grouping, percentiles, sessions=sessions).group_by(grouping_sets)
        by_set: dict[int, dict[Key, tuple[float, float]]] = {}
        width = len(expressions)
        for row in self._connection.execute(query):
            if row[width + 1] is None:
                continue  # the grouping set () of no rows at all
            p50, p95 = row[width + 1]
            by_set.setdefault(row[width], {})[tuple(row[:width])] = (float(p50), float(p95))
        results: dict[str, dict[Key, tuple[float, float]]] = {}
        for target, names in targets.items():
            # GROUPING() sets the bit of each column the set does not group by; the first column is the highest bit.
            mask = sum(1 << (width - 1 - index) for index, name in enumerate(columns) if name not in names)
            key = _key_maker(names, {name: index for index, name in enumerate(columns)}, week_is_monday=True)
            results[target] = {key(values): found for values, found in by_set.get(mask, {}).items()}
        return results

    # ---- sessions

    def _top_session_names(self) -> list[str]:
        """The ``top`` sessions by cost, then attempts, then name (in code point order, as Python sorts)."""
        if self._session_rollup:
            source = self._rollup_source(
                ("session", "attempts", "cost_high", "cost_low"), SESSION_DAYS, select_sessions_from_records
            )
            session: ColumnElement[Any] = source.c.session
            # Ordered by the cost put together in SQL: exact on PostgreSQL (numeric); on SQLite, a sum beyond
            # 2**63 nano-USD (9.2 billion dollars) becomes a float, still in order.
            cost: ColumnElement[Any] = func.sum(source.c.cost_high) * literal(COST_SPLIT) + func.sum(source.c.cost_low)
            attempts: ColumnElement[Any] = func.sum(source.c.attempts)
            query = select(session)
        else:
            # The session index covers this query (SQLite sums while walking it, in session order).
            c = RECORDS.c
            session = c.session
            cost, attempts = func.coalesce(func.sum(c.cost_nanousd), 0), func.count()
            query = self._select(session).where(session.is_not(None))
        in_order = session.collate("C") if self._dialect == "postgresql" else session
        query = query.group_by(session).order_by(cost.desc(), attempts.desc(), in_order).limit(self._spec.top)
        return [row[0] for row in self._connection.execute(query)]

    def _top_sessions(self) -> tuple[tuple[Group, ...], tuple[SessionGrowth, ...]]:
        top = self._top_session_names()
        if not top:
            return (), ()
        rows = self._sum_rows(("session", "model"), sessions=top)
        sums = _roll_up(rows, lambda key: (key[0],))
        by_model: dict[str, dict[str | None, int]] = {}
        for (name, model), model_sums in _roll_up(rows, lambda key: (key[0], key[1])).items():
            by_model.setdefault(name, {})[model] = model_sums[_ATTEMPTS]
        if self._dialect == "postgresql":
            percentiles = self._percentile_cont({"session": ("session",)}, sessions=top)["session"]
        else:
            percentiles = {
                key: _histogram_percentiles(buckets)
                for key, buckets in self._histograms(("session",), sessions=top).items()
            }
        first_last = self._first_and_last_prompts(top)
        groups = _groups(("session",), sums, percentiles)
        growth = []
        for group in groups:
            name = group.key["session"]
            assert name is not None  # sessions without a name are not sessions
            first, last = first_last.get(name, (0, 0))
            growth.append(
                SessionGrowth(
                    session=name,
                    model=_main_model(by_model[name]),
                    calls=group.usage.calls,
                    first_prompt_tokens=first,
                    last_prompt_tokens=last,
                    prompt_tokens=group.usage.prompt_tokens,
                    cost=group.usage.cost,
                )
            )
        return groups, tuple(growth)

    def _first_and_last_prompts(self, sessions: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Per session: the prompt tokens of its first and its last attempt that reported any.

        A failed attempt usually reports none (a rate limit, a timeout: 0 tokens), and its retry sends the
        same prompt: a session whose first or last call began with one is measured from that retry, not
        from a prompt of 0 tokens (no growth at all, or a growth of 0).
        """
        c = RECORDS.c
        first = func.row_number().over(partition_by=c.session, order_by=(c.started_at, c.id))
        last = func.row_number().over(partition_by=c.session, order_by=(c.started_at.desc(), c.id.desc()))
        numbered = (
            self._select(c.session, c.prompt_tokens, first.label("first"), last.label("last"), sessions=sessions)
            .where(c.prompt_tokens > 0)
            .subquery()
        )
        query = select(numbered.c.session, numbered.c.prompt_tokens, numbered.c.first, numbered.c.last).where(
            or_(numbered.c.first == 1, numbered.c.last == 1)
        )
        found: dict[str, list[int]] = {}
        for name, prompt_tokens, first_number, last_number in self._connection.execute(query):
            pair = found.setdefault(name, [0, 0])
            # A session of one call: that call is both its first and its last.
            if first_number == 1:
                pair[0] = prompt_tokens
            if last_number == 1:
                pair[1] = prompt_tokens
        return {name: (pair[0], pair[1]) for name, pair in found.items()}


# ---- sums in Python (of aggregated rows only)


def _zeros() -> Sums:
    return [0] * _SUMS_LENGTH


def _roll_up(rows: Sequence[tuple[Key, list[int]]], key: Callable[[Key], Any]) -> dict[Any, Sums]:
    """The sums of ``rows`` (of :meth:`_Report._sum_rows`) per ``key`` of their keys.

    Rows are gathered per key first, and each column summed by ``sum`` (in C): adding them up one by
    one took a third of a second for the 27,000 rows of a million attempts.
    """
    gathered: dict[Any, list[list[int]]] = {}
    for row_key, sums in rows:
        gathered.setdefault(key(row_key), []).append(sums)
    return {group: [sum(column) for column in zip(*members, strict=True)] for group, members in gathered.items()}


def _unpriced(sums: Sums) -> int:
    return sums[_ATTEMPTS] - sums[_PRICED]


def _usage(sums: Sums, percentiles: tuple[float, float] | None) -> Usage:
    p50, p95 = percentiles if percentiles is not None else (None, None)
    return Usage(
        calls=sums[_CALLS],
        attempts=sums[_ATTEMPTS],
        prompt_tokens=sums[_PROMPT],
        completion_tokens=sums[_COMPLETION],
        cached_tokens=sums[_CACHED],
        reasoning_tokens=sums[_REASONING],
        cache_write_tokens=sums[_CACHE_WRITE],
        cost=nanousd_to_usd(sums[_COST]),
        unpriced_attempts=_unpriced(sums),
        errors=sums[_OF_WASTE["error"] + _W_ATTEMPTS],
        invalid=sums[_OF_WASTE["invalid"] + _W_ATTEMPTS],
        cancelled=sums[_OF_WASTE["cancelled"] + _W_ATTEMPTS],
        cache_hits=sums[_CACHE_HITS],
        retried_calls=sums[_RETRIED],
        waste_cost=nanousd_to_usd(sum(sums[at + _W_COST] for at in _OF_WASTE.values())),
        waste_tokens=sum(sums[at + _W_TOKENS] for at in _OF_WASTE.values()),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        waste_unpriced_attempts=sum(sums[at + _W_ATTEMPTS] - sums[at + _W_PRICED] for at in _OF_WASTE.values()),
    )


def _waste_line(outcome: str, sums: Sums) -> WasteLine:
    """The waste of ``outcome`` in a group's ``sums``."""
    at = _OF_WASTE[outcome]
    attempts = sums[at + _W_ATTEMPTS]
    return WasteLine(
        outcome=outcome,
        attempts=attempts,
        tokens=sums[at + _W_TOKENS],
        cost=nanousd_to_usd(sums[at + _W_COST]),
        unpriced_attempts=attempts - sums[at + _W_PRICED],
    )


def _groups(
    columns: Sequence[str], sums: Mapping[Key, Sums], percentiles: Mapping[Key, tuple[float, float]]
) -> tuple[Group, ...]:
    """One :class:`Group` per key, by cost (highest first), then attempts (most first), then key."""
    ordered = sorted(
        sums.items(), key=lambda item: (-item[1][_COST], -item[1][_ATTEMPTS], tuple(map(_text_order, item[0])))
    )
    return tuple(
        Group(key=dict(zip(columns, key, strict=True)), usage=_usage(group, percentiles.get(key)))
        for key, group in ordered
    )


def _text_order(value: str | None) -> tuple[bool, str]:
    """Text in code point order (SQLite's and PostgreSQL's "C" collation), None last."""
    return (value is None, value or "")


def _main_model(attempts: Mapping[str | None, int]) -> str | None:
    """The model most attempts asked for (ties: the first by name, a named one before None)."""
    return min(attempts.items(), key=lambda item: (-item[1], _text_order(item[0])))[0]


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _next_midnight(day: date) -> datetime | None:
    """The midnight that ends ``day``; None for 9999-12-31, the last day a ``date`` has."""
    return None if day == date.max else _midnight(day + timedelta(days=1))


def _key_maker(
    columns: Sequence[str], positions: Mapping[str, int], *, week_is_monday: bool = False
) -> Callable[[Key], Key]:
    """A function from a row's key values to the text key of ``columns`` (days and weeks as ISO dates)."""
    getters = [(name, positions[name]) for name in columns]

    def make(values: Key) -> Key:
        key: list[str | None] = []
        for name, index in getters:
            value = values[index]
            if value is None:
                key.append(None)
            elif name == "week" and not week_is_monday:
                key.append((value - timedelta(days=value.weekday())).isoformat())
            elif isinstance(value, date):
                key.append(value.isoformat())
            else:
                key.append(str(value))
        return tuple(key)

    return make


# ---- the rollup's latency histograms


def _rollup_keys(names: Sequence[str]) -> list[str]:
    """The rollup's columns that the group columns ``names`` are read from (``nulls`` for the text ones)."""
    columns = {"day" if name == "week" else name for name in names}
    return [name for name in ("day", *KEY_TEXT) if name in columns] + (["nulls"] if columns & set(KEY_TEXT) else [])


def _nulls_bit(nulls: ColumnElement[Any], name: str) -> ColumnElement[Any]:
    # A literal in the text: PostgreSQL groups by an expression only if its text is the select list's.
    return nulls.op("&")(literal_column(str(1 << KEY_TEXT.index(name))))


def _rollup_percentile_pair(low: float, high: float, counts: Sequence[int]) -> tuple[float, float]:
    """p50 and p95 from a rollup histogram and the smallest and largest latency, as ``percentile_cont`` does.

    The smallest and the largest latency are known exactly. Any other is estimated at the middle of its
    bucket (geometric; arithmetic below 10 ms), its bucket's ends tightened by the smallest and largest:
    within a factor ``sqrt(RATIO)`` from 10 ms to 5 min, within 5 ms below 10 ms. A percentile between
    two estimates (``percentile_cont``'s interpolation) is within the same bounds.
    """
    total = sum(counts)
    ends = (-math.inf, *BOUNDS, math.inf)

    def order_statistic(rank: int) -> float:
        if rank == 0:
            return low
        if rank == total - 1:
            return high
        seen = 0
        for bucket, count in enumerate(counts):
            if rank < seen + count:
                start, end = max(ends[bucket], low), min(ends[bucket + 1], high)
                return math.sqrt(start * end) if start > 0 else (start + end) / 2
            seen += count
        raise AssertionError(f"rank {rank} beyond {total} latencies")  # pragma: no cover

    return _interpolated(order_statistic, total)


def _interpolated(order_statistic: Callable[[int], float], total: int) -> tuple[float, float]:
    """p50 and p95 between estimated order statistics (0-based ranks), interpolated as ``percentile_cont`` does."""

    def percentile(fraction: float) -> float:
        position = fraction * (total - 1)
        below = math.floor(position)
        value = order_statistic(below)
        if position > below:
            value += (position - below) * (order_statistic(below + 1) - value)
        return value

    p50, p95 = (percentile(fraction) for fraction in PERCENTILES)
    return p50, p95


# ---- SQLite's latency histograms


def _merge_bucket(into: dict[int | None, list[float]], bucket: int | None, counts: list[float]) -> None:
    found = into.get(bucket)
    if found is None:
        into[bucket] = list(counts)
    else:
        found[0] += counts[0]
        found[1] = min(found[1], counts[1])
        found[2] = max(found[2], counts[2])


def _histogram_percentiles(buckets: Mapping[int | None, list[float]]) -> tuple[float, float]:
    """p50 and p95 from bucket counts, interpolated between order statistics as ``percentile_cont`` does."""
    ordered = sorted(buckets.items(), key=lambda item: -math.inf if item[0] is None else item[0])
    total = int(sum(counts[0] for _, counts in ordered))
    spread = math.sqrt(BUCKET_RATIO)

    def order_statistic(rank: int) -> float:
        """An estimate of the ``rank``-th smallest latency (0-based)."""
        seen = 0
        for bucket, (count, low, high) in ordered:
            if rank >= seen + count:
                seen += int(count)
                continue
            if rank == seen:
                return low  # the smallest of its bucket: known exactly
            if rank == seen + count - 1:
                return high
            share = (rank - seen) / (count - 1)
            if bucket is None:  # latencies of 0 (or less): no logarithm
                return low + share * (high - low)
            # Spread between the bucket's smallest and largest latency by rank (geometrically), kept
            # within a factor sqrt(BUCKET_RATIO) of both: then of every latency in between too.
            guess: float = low * (high / low) ** share
            return min(max(guess, high / spread), low * spread)
        raise AssertionError(f"rank {rank} beyond {total} latencies")  # pragma: no cover

    return _interpolated(order_statistic, total)
