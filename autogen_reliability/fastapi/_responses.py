"""The usage routes' response bodies as pydantic models, so the app's OpenAPI schema describes them.

They mirror ``UsageReport.to_dict()`` and ``SessionSummary.to_dict()`` field for
field (``extra="forbid"``: tests/test_usage_routes.py validates real reports
against them, so a key added to a ``to_dict`` and not here fails there). The
routes send the ``to_dict`` itself; these models describe it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DailyCostModel",
    "ErrorModel",
    "GroupModel",
    "RecommendationModel",
    "ReportFiltersModel",
    "SessionGrowthModel",
    "SessionModel",
    "SessionsModel",
    "UsageModel",
    "UsageReportModel",
    "WasteLineModel",
]

_STRICT = ConfigDict(extra="forbid")
_MONEY = "USD as an exact decimal string (never a float)"


class ErrorModel(BaseModel):
    """A refused request: what was wrong, in one sentence."""

    model_config = _STRICT
    detail: str


class UsageModel(BaseModel):
    """The aggregate numbers of a set of attempts (docs/reports.md defines each one)."""

    model_config = _STRICT
    calls: int = Field(description="Logical calls (attempts numbered 1)")
    attempts: int = Field(description="Provider attempts: first requests, retries, re-asks, fallbacks")
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int = Field(description="Of the prompt tokens, those written to the provider's prompt cache")
    reasoning_tokens: int
    cost_usd: str = Field(description=f"Cost of the priced attempts, {_MONEY}")
    unpriced_attempts: int = Field(description="Attempts with no known price: not in the cost, never counted as free")
    errors: int
    invalid: int
    cancelled: int
    cache_hits: int
    retried_calls: int
    waste_cost_usd: str = Field(description=f"Cost of the error, invalid and cancelled attempts, {_MONEY}")
    waste_tokens: int
    waste_unpriced_attempts: int = Field(
        description="Of the error, invalid and cancelled attempts, those with no known price: not in the waste cost"
    )
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    error_rate: float | None
    retry_rate: float | None
    reask_rate: float | None
    cache_hit_rate: float | None
    cached_token_rate: float | None


class GroupModel(UsageModel):
    """One group of a breakdown: the values of its columns (``key``) and its numbers."""

    key: dict[str, str | None]


class DailyCostModel(BaseModel):
    """The cost of one model on one UTC day."""

    model_config = _STRICT
    day: str = Field(description="YYYY-MM-DD (UTC)")
    model: str | None
    cost_usd: str
    tokens: int
    attempts: int
    unpriced_attempts: int


class WasteLineModel(BaseModel):
    """What the attempts of one outcome (error, invalid, cancelled) cost without being used."""

    model_config = _STRICT
    outcome: str
    attempts: int
    tokens: int
    cost_usd: str
    unpriced_attempts: int


class SessionGrowthModel(BaseModel):
    """How the prompts of one of the top sessions grew from its first call to its last."""

    model_config = _STRICT
    session: str
    model: str | None
    calls: int
    first_prompt_tokens: int
    last_prompt_tokens: int
    prompt_tokens: int
    cost_usd: str
    growth: float | None


class RecommendationModel(BaseModel):
    """A finding grounded in the numbers: what to change, the figure that says so, what it would save."""

    model_config = _STRICT
    code: str
    subject: dict[str, str | None]
    message: str
    metric: str
    value: float
    threshold: float
    saving_usd: str | None


class ReportFiltersModel(BaseModel):
    """What the report covers; the bounds in ISO 8601 (UTC)."""

    model_config = _STRICT
    project: str | None
    since: str | None
    until: str | None
    session: str | None
    agent: str | None
    tags: dict[str, str]


class UsageReportModel(BaseModel):
    """A usage report (``UsageReport.to_dict()``): totals, waste, a breakdown, cost per day, top sessions, findings."""

    model_config = _STRICT
    filters: ReportFiltersModel
    generated_at: str
    group_by: list[str]
    totals: UsageModel
    unpriced_models: list[str]
    waste: list[WasteLineModel]
    breakdown: list[GroupModel]
    by_model: list[GroupModel]
    by_agent: list[GroupModel]
    daily: list[DailyCostModel]
    top_sessions: list[GroupModel]
    session_growth: list[SessionGrowthModel]
    recommendations: list[RecommendationModel]
    percentile_method: str


class SessionModel(BaseModel):
    """One session's usage over the period (``SessionSummary.to_dict()``)."""

    model_config = _STRICT
    project: str | None
    session: str
    calls: int
    attempts: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: str = Field(description=_MONEY)
    cost_nanousd: int = Field(description="The same cost in integer nano-USD")
    unpriced_attempts: int
    first_seen: str
    last_seen: str


class SessionsModel(BaseModel):
    """The most recently active sessions, latest first, and the period they were read over."""

    model_config = _STRICT
    project: str | None
    since: str | None = Field(description="The lower bound, resolved (ISO 8601, UTC)")
    until: str | None
    limit: int
    sessions: list[SessionModel]
