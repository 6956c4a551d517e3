"""Synthetic usage ledgers: N plausible rows, made fast and loaded fast, for the report benchmark.

The shape follows a busy team over ``DAYS`` days: ``PROJECTS`` projects,
``AGENTS`` agents (and some calls no agent was named for), ``MODELS`` models
(one of them local and unpriced), sessions of a few dozen calls whose prompts
grow as the conversation does, about 5 % of first attempts failing (most of
them retried), 3 % answering something validation refused (re-asked), a few
cancelled, cache hits, cached prompt tokens, reasoning tokens for the
reasoning models, and two tags per call. About 50,000 sessions per million
rows.

Rows are made as :meth:`UsageEvent.to_row` tuples (making a ``UsageEvent``
per row would take longer than loading it) and loaded by :func:`load` in large
transactions through the encoders of ``storage/_bulk.py``, so what is stored
is byte for byte what ``UsageStore.write`` stores: ``executemany`` of the
store's own insert on SQLite, ``COPY`` on PostgreSQL with psycopg.

Run on its own to time the loading: ``python -m benchmarks.synthetic --rows 1000000``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from autogen_reliability.accounting._events import ROW_FIELDS, UsageRow
from autogen_reliability.storage import UsageStore, _bulk, _rollup

from .timing import at_least_one

DAYS: Final = 30
PROJECTS: Final = ("acme-support", "acme-search", "billing-bot", "docs-writer", "sales-assist")
PROJECT_WEIGHTS: Final = (40, 25, 15, 12, 8)
AGENTS: Final = ("planner", "writer", "critic", "coder", "researcher", "summariser", "router", "translator", None)
AGENT_WEIGHTS: Final = (14, 18, 10, 14, 12, 10, 8, 6, 8)


@dataclass(frozen=True)
class Model:
    """A model of the synthetic ledger and its price in nano-USD per token (None: unpriced)."""

    name: str
    provider: str
    prompt_nanousd: int | None
    completion_nanousd: int | None
    reasoning: bool = False


MODELS: Final = (
    Model("gpt-4o-mini", "openai", 150, 600),
    Model("gpt-4o", "openai", 2500, 10000),
    Model("o3-mini", "openai", 1100, 4400, reasoning=True),
    Model("claude-sonnet-4", "anthropic", 3000, 15000),
    Model("claude-haiku-3.5", "anthropic", 800, 4000),
    Model("llama3.1:8b", "ollama", None, None),
)
MODEL_WEIGHTS: Final = (35, 20, 10, 15, 12, 8)
CALLS_PER_SESSION: Final = 18.5
"""Mean calls per session: with about 1.08 attempts per call, 50,000 sessions make a million rows."""

ERRORS: Final = (("rate_limit", 429), ("timeout", None), ("server_error", 503), ("connection", None))
_FIELD: Final = {name: index for index, name in enumerate(ROW_FIELDS)}
_NO_CHANGES: Final = json.dumps({})


def first_day_for(last_day: date) -> date:
    """The first of ``DAYS`` days ending with ``last_day``."""
    return last_day - timedelta(days=DAYS - 1)


def rows(count: int, *, seed: int = 1, first_day: date | None = None) -> list[UsageRow]:
    """``count`` rows in ``started_at`` order, as a recorder writes them, over ``DAYS`` days from ``first_day``.

    By default the days end today (UTC), so "the last 7 days" of a report means
    what it would mean on a live ledger.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    first = first_day or first_day_for(datetime.now(UTC).date())
    rng = random.Random(seed)
    made: list[UsageRow] = []
    session = 0
    while len(made) < count:
        made.extend(_session(rng, session, first))
        session += 1
    del made[count:]
    made.sort(key=lambda row: row[_FIELD["started_at"]])
    return made


def _session(rng: random.Random, number: int, first_day: date) -> Iterator[UsageRow]:
    project = rng.choices(PROJECTS, PROJECT_WEIGHTS)[0]
    team = rng.choice(("search", "support", "growth", "platform"))
    env = "prod" if rng.random() < 0.8 else "staging"
    tags = json.dumps({"env": env, "team": team})
    agents = rng.sample(AGENTS, 3)
    main_model = rng.choices(MODELS, MODEL_WEIGHTS)[0]
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC) + timedelta(
        seconds=rng.uniform(0, DAYS * 86400)
    )
    calls = max(1, round(rng.expovariate(1 / CALLS_PER_SESSION)))
    prompt = rng.randrange(300, 2500)
    growth = rng.choice((0, 40, 120, 400))  # some sessions trim their context, some never do
    at = start
    for _ in range(calls):
        agent = rng.choice(agents)
        model = main_model if rng.random() < 0.85 else rng.choices(MODELS, MODEL_WEIGHTS)[0]
        call_id = _uuid7(at, rng)
        yield from _call(rng, call_id, at, project, f"s-{number:06d}", agent, model, tags, prompt)
        prompt += growth + rng.randrange(0, 60)
        at += timedelta(seconds=rng.expovariate(1 / 40))


def _call(
    rng: random.Random,
    call_id: str,
    at: datetime,
    project: str,
    session: str,
    agent: str | None,
    model: Model,
    tags: str,
    prompt: int,
) -> Iterator[UsageRow]:
    attempt = 1
    while True:
        draw = rng.random()
        if attempt == 1 and draw < 0.05:
            outcome = "error"
        elif attempt == 1 and draw < 0.08:
            outcome = "invalid"
        elif draw < 0.085:
            outcome = "cancelled"
        else:
            outcome = "ok"
        latency = rng.lognormvariate(math.log(900 if outcome != "error" else 2500), 0.6)
        yield _row(rng, call_id, attempt, at, latency, project, session, agent, model, tags, prompt, outcome)
        # Most failures are retried and every refused answer is re-asked: once, as a default policy does.
        if attempt == 1 and (outcome == "invalid" or (outcome == "error" and rng.random() < 0.9)):
            attempt = 2
            at += timedelta(milliseconds=latency + rng.uniform(50, 2000))
            continue
        return


def _row(
    rng: random.Random,
    call_id: str,
    attempt: int,
    at: datetime,
    latency: float,
    project: str,
    session: str,
    agent: str | None,
    model: Model,
    tags: str,
    prompt: int,
    outcome: str,
) -> UsageRow:
    failed = outcome == "error"
    cache_hit = outcome == "ok" and rng.random() < 0.01
    prompt_tokens = 0 if failed or cache_hit else prompt
    completion = 0 if failed or cache_hit else rng.randrange(20, 900)
    if outcome == "cancelled":
        completion //= 3
    cached = rng.randrange(0, prompt_tokens + 1) if prompt_tokens and rng.random() < 0.3 else None
    reasoning = completion // 2 if model.reasoning and completion else None
    if model.prompt_nanousd is None or model.completion_nanousd is None:
        cost = None
    else:
        cost = prompt_tokens * model.prompt_nanousd + completion * model.completion_nanousd
    error_kind, status = rng.choice(ERRORS) if failed else (None, None)
    # In the order of ROW_FIELDS (checked below), with no dict in between: a million of them are made.
    return (
        call_id,
        attempt,
        at,
        round(latency, 3),
        _uuid7(at, rng),
        project,
        session,
        agent,
        tags,
        model.provider,
        model.name,
        None if failed else model.name,
        prompt_tokens,
        completion,
        cached,
        None,
        None,
        reasoning,
        False,
        cost,
        None if cost is None else "genai-prices",
        None,
        outcome,
        error_kind,
        status,
        None if error_kind is None else f"synthetic {error_kind}",
        None if failed else "stop",
        False,
        cache_hit,
        _NO_CHANGES,
        2 if outcome == "invalid" else 0,
        None,
        None,
    )


_ROW_ORDER: Final = (
    "call_id",
    "attempt",
    "started_at",
    "latency_ms",
    "event_id",
    "project",
    "session",
    "agent",
    "tags",
    "provider",
    "model",
    "response_model",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "tokens_estimated",
    "cost_nanousd",
    "price_source",
    "price_date",
    "outcome",
    "error_kind",
    "http_status",
    "error_message",
    "finish_reason",
    "streamed",
    "cache_hit",
    "sanitizer_changes",
    "validation_errors",
    "request_content",
    "response_content",
)
assert tuple(_ROW_ORDER) == ROW_FIELDS, "UsageEvent's fields changed: update _row"


def _uuid7(at: datetime, rng: random.Random) -> str:
    """The hex of a UUIDv7 of time ``at``: ids that sort by time, so the unique indexes are appended to."""
    millis = int(at.timestamp() * 1000) & (2**48 - 1)
    return f"{millis << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62):032x}"


LOAD_BATCH: Final = 100_000


def load(store: UsageStore, made: Sequence[UsageRow]) -> None:
    """Stores ``made`` (rows of :func:`rows`, none stored yet) in batches of ``LOAD_BATCH`` rows per transaction.

    The store's own encoders, without the pauses its writer makes for an event
    loop (there is none here): ``executemany`` on SQLite, ``COPY`` with psycopg
    on PostgreSQL, ``UsageStore.write_rows`` on anything else; the rollup
    (``ar_usage_rollup``) is added to in the same transaction, as the store does.
    """
    dialect = store.engine.dialect
    for start in range(0, len(made), LOAD_BATCH):
        batch = made[start : start + LOAD_BATCH]
        if dialect.name == "sqlite" and dialect.driver == "pysqlite":
            with store.engine.begin() as connection:
                cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
                cursor.executemany(_bulk._SQLITE_INSERT, map(_bulk._sqlite_values, batch))
                cursor.close()
                _rollup.add_rows(connection, batch)  # as UsageStore.write keeps it, in the same transaction
        elif dialect.name == "postgresql" and dialect.driver == "psycopg":
            with store.engine.begin() as connection:
                raw = connection.connection.driver_connection
                with raw.cursor() as cursor, cursor.copy(_bulk._COPY) as copy:  # type: ignore[union-attr]
                    for row in batch:
                        copy.write_row(_bulk._postgres_values(row))
                _rollup.add_rows(connection, batch)
        else:
            store.write_rows(batch)


def analyze(store: UsageStore) -> None:
    """Statistics for the query planner, as a long-lived database has them (autovacuum, ``PRAGMA optimize``)."""
    with store.engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        connection.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=at_least_one, default=1_000_000, help="how many rows to make and load")
    args = parser.parse_args()
    start = time.perf_counter()
    made = rows(args.rows)
    made_s = time.perf_counter() - start
    sessions = len({row[_FIELD["session"]] for row in made})
    print(f"made {len(made):,} rows ({sessions:,} sessions) in {made_s:.1f} s")
    with tempfile.TemporaryDirectory() as directory, UsageStore(f"sqlite:///{directory}/synthetic.db") as store:
        start = time.perf_counter()
        load(store, made)
        print(f"SQLite: loaded in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
