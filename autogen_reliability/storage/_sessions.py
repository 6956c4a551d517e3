"""``SessionSummary``: one session's usage, as :meth:`UsageStore.sessions <UsageStore>` lists them.

The numbers are one ``GROUP BY project, session`` over the stored columns: no
row is loaded into Python, so listing the sessions of a large ledger costs one
pass over the rows the filters select.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Select, case, func, select

from ._bulk import RECORDS

__all__ = ["SessionSummary", "nanousd_text", "select_sessions", "session_summary"]

_R: Final = RECORDS.c


def nanousd_text(nanousd: int) -> str:
    """Integer nano-USD as an exact decimal string with its nine places: ``1234`` is ``"0.000001234"``."""
    return f"{Decimal(nanousd).scaleb(-9):f}"


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """The usage of one session (of one project) over the period asked for.

    Attributes:
        project: The project of the session's rows (None: rows recorded without one).
        session: The session.
        calls: Logical calls (attempts numbered 1).
        attempts: Provider attempts (rows): first requests, retries, re-asks, fallbacks.
        errors: Attempts that failed (outcome ``error``).
        prompt_tokens, completion_tokens: Summed over the attempts.
        cost_nanousd: Exact cost of the priced attempts, in integer nano-USD.
        unpriced_attempts: Attempts with no known price: not in the cost, never counted as free.
        first_seen, last_seen: When its first and last attempt in the period started (UTC).
    """

    project: str | None
    session: str
    calls: int
    attempts: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_nanousd: int
    unpriced_attempts: int
    first_seen: datetime
    last_seen: datetime

    @property
    def cost(self) -> Decimal:
        """The exact USD of the priced attempts."""
        return Decimal(self.cost_nanousd).scaleb(-9)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: money as an exact decimal string (and the integer nano-USD), times in ISO 8601."""
        return {
            "project": self.project,
            "session": self.session,
            "calls": self.calls,
            "attempts": self.attempts,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": nanousd_text(self.cost_nanousd),
            "cost_nanousd": self.cost_nanousd,
            "unpriced_attempts": self.unpriced_attempts,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }


def select_sessions(project: str | None, since: datetime | None, until: datetime | None, limit: int) -> Select[Any]:
    """The query of :meth:`UsageStore.sessions`: one row per project and session, latest activity first."""
    last_seen = func.max(_R.started_at).label("last_seen")
    query = select(
        _R.project,
        _R.session,
        func.count(case((_R.attempt == 1, 1))).label("calls"),
        func.count().label("attempts"),
        func.count(case((_R.outcome == "error", 1))).label("errors"),
        func.coalesce(func.sum(_R.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(_R.completion_tokens), 0).label("completion_tokens"),
        # SUM of no priced row is NULL, and NULL is not $0: coalesce only after counting the unpriced ones.
        func.coalesce(func.sum(_R.cost_nanousd), 0).label("cost_nanousd"),
        func.count(case((_R.cost_nanousd.is_(None), 1))).label("unpriced_attempts"),
        func.min(_R.started_at).label("first_seen"),
        last_seen,
    ).where(_R.session.is_not(None))
    if project is not None:
        query = query.where(_R.project == project)
    if since is not None:
        query = query.where(_R.started_at >= since)
    if until is not None:
        query = query.where(_R.started_at < until)
    # project and session after the time: the same order on every backend when two sessions end together.
    order = (last_seen.desc(), _R.project.nulls_first(), _R.session)
    return query.group_by(_R.project, _R.session).order_by(*order).limit(limit)


def session_summary(row: Any) -> SessionSummary:
    """A row of :func:`select_sessions` as a :class:`SessionSummary` (PostgreSQL sums bigints as numeric)."""
    return SessionSummary(
        project=row.project,
        session=row.session,
        calls=int(row.calls),
        attempts=int(row.attempts),
        errors=int(row.errors),
        prompt_tokens=int(row.prompt_tokens),
        completion_tokens=int(row.completion_tokens),
        cost_nanousd=int(row.cost_nanousd),
        unpriced_attempts=int(row.unpriced_attempts),
        first_seen=row.first_seen,
        last_seen=row.last_seen,
    )
