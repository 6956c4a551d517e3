"""Retention: deleting the usage rows that started before a cutoff, in batches, each its own transaction.

One ``DELETE`` of a year of rows would hold SQLite's write lock (and keep the
recorder's writes waiting, then spooling) or a PostgreSQL transaction open for
as long as it takes. Deleting ``batch_size`` rows at a time, oldest ids first,
each batch committed on its own, lets writers in between batches; a run that is
interrupted has removed whole batches and can simply be run again.

Captured content (``ar_usage_content``) is deleted explicitly, in the batch's
transaction, before its records: ``ON DELETE CASCADE`` would do it, but SQLite
enforces foreign keys only on connections that ask for it, and an engine a user
hands to :class:`UsageStore` may not have (``make_engine``'s connections do).

The rollup (``ar_usage_rollup``) is kept equal to the rows in the same
transaction: the days a batch removed rows from are summed again from the rows
that remain (none, for a day wholly before the cutoff; the rest of the cutoff's
own day otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Engine, Select, and_, delete, func, select

from ._bulk import CONTENT, RECORDS
from ._engine import write_transaction
from ._rollup import rebuild_days

__all__ = ["RetentionResult", "delete_older_than"]

_R: Final = RECORDS.c
_SPAN: Final[tuple[ColumnElement[Any], ...]] = (func.count(), func.min(_R.started_at), func.max(_R.started_at))


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What :meth:`UsageStore.delete_older_than` removed, or, in a dry run, would remove.

    Attributes:
        cutoff: Rows that started before this time (UTC) were selected.
        records: Usage rows (one per provider attempt) removed.
        contents: Rows of captured request and response text removed with them.
        oldest, newest: When the first and the last removed row started (None when none was).
        dry_run: Nothing was deleted; the counts say what would have been.
    """

    cutoff: datetime
    records: int
    contents: int
    oldest: datetime | None
    newest: datetime | None
    dry_run: bool


def delete_older_than(engine: Engine, cutoff: datetime, *, batch_size: int, dry_run: bool) -> RetentionResult:
    """Deletes the rows that started before ``cutoff`` (aware), ``batch_size`` records per transaction."""
    old = _R.started_at < cutoff
    if dry_run:
        with engine.connect() as connection:
            count, first, last = connection.execute(_span(old)).one()
            contents = connection.execute(
                select(func.count()).select_from(CONTENT.join(RECORDS, CONTENT.c.event_id == _R.event_id)).where(old)
            ).scalar_one()
        return RetentionResult(cutoff, count, contents, first, last, dry_run=True)
    records = contents = 0
    oldest = newest = None
    while True:
        with write_transaction(engine) as connection:
            # The batch is the oldest ids up to the batch_size-th: a range, so no list of ids is sent.
            last_id = connection.execute(
                select(_R.id).where(old).order_by(_R.id).offset(batch_size - 1).limit(1)
            ).scalar_one_or_none()
            batch: ColumnElement[bool] = old if last_id is None else and_(old, _R.id <= last_id)
            # Content first: on SQLite this statement also takes the write lock, so the span read next is
            # what the DELETE below removes.
            contents += connection.execute(
                delete(CONTENT).where(CONTENT.c.event_id.in_(select(_R.event_id).where(batch)))
            ).rowcount
            count, first, last = connection.execute(_span(batch)).one()
            removed = connection.execute(delete(RECORDS).where(batch)).rowcount if count else 0
            if removed:
                # The rollup stays equal to the rows: the days this batch touched, summed again from what is left.
                rebuild_days(connection, first.astimezone(UTC).date(), last.astimezone(UTC).date())
        if removed:
            records += removed
            oldest = first if oldest is None else min(oldest, first)
            newest = last if newest is None else max(newest, last)
        if last_id is None or not removed:
            return RetentionResult(cutoff, records, contents, oldest, newest, dry_run=False)


def _span(where: ColumnElement[bool]) -> Select[Any]:
    """How many rows ``where`` selects, and when the first and the last of them started."""
    return select(*_SPAN).where(where)
