"""The metrics: counted from the process's attempt, call and usage events; gauges read when scraped.

Which event counts what (so that nothing is counted twice, with usage
recording on or off):

- every provider **attempt** (``_pipeline``'s attempt feed): attempts by
  outcome and error kind, their duration, and a retry when it is not the call's
  first attempt, by what ended the attempt before it;
- every logical **call**, when it ends (the call feed): calls by outcome, their
  duration; and the tokens of its attempts if the wrapper records no usage;
- an attempt on a wrapped client (a wrapped fallback, a nested wrapper) counts
  nothing: that client's own attempts, on its provider clients, come through
  the attempt feed, and its own calls count their tokens (or their rows do,
  when they record their attempts through the outer wrapper's accounting);
- every **usage event** (``accounting._feed``, the rows of the ledger, made
  when a call of a wrapper that records usage ends): tokens by kind and the
  exact cost. These are the ledger's own numbers (estimated tokens included,
  flagged there), so the metrics and the ledger agree.

Counts are kept here, in plain integers under one lock per event (cost in
integer nano-USD, turned into USD once, when scraped), rather than in
``prometheus_client``'s metric objects, which take a lock per child per update.
Circuit states, budgets and the recorders' backlogs are read when scraped.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

from autogen_core.models import ChatCompletionClient
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .._pipeline import AttemptEvent, Call, Pipeline
from ..accounting._events import UsageEvent
from ..accounting._layer import AccountingLayer
from ..accounting._recorder import UsageRecorder, live_recorders
from ..budget._tracker import trackers
from ..providers import ClientModel, client_model
from ..retry._circuit import breakers
from ..retry._classify import classify_error
from ._labels import LabelValues

__all__ = ["BUCKETS", "PREFIX", "ReliabilityCollector"]

PREFIX: Final = "autogen_reliability_"

BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""Seconds: the OpenTelemetry GenAI conventions' advice for ``gen_ai.client.operation.duration``.

Doubling from 10 ms to 82 s: a cached or tiny answer, a chat turn, a long
generation and a reasoning model's minutes each fall into buckets of their own.
"""

_T = TypeVar("_T")
_INF: Final = float("inf")
_CIRCUIT_STATES: Final = ("closed", "half_open", "open")
_NANO: Final = 10**9
_MAX_REMEMBERED: Final = 10_000
_REASK: Final = "invalid"
"""The reason of a retry that validation asked for: the answer before it failed the schema."""

_Key = tuple[str, ...]


class _Histogram:
    """Counts per bucket (not cumulative; the last is +Inf) and the sum, updated in place by the collector."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def copy(self) -> _Histogram:
        copied = _Histogram()
        copied.counts = list(self.counts)
        copied.total = self.total
        return copied


class ReliabilityCollector(Collector):
    """Counts the events of every wrapped client in the process and reports them, with the gauges, when scraped.

    Args:
        labels: The bound on label values (see :class:`~._labels.LabelValues`).
    """

    def __init__(self, labels: LabelValues) -> None:
        self.labels = labels
        self._lock = threading.Lock()
        self._calls: dict[_Key, int] = {}
        self._call_seconds: dict[_Key, _Histogram] = {}
        self._attempts: dict[_Key, int] = {}
        self._attempt_seconds: dict[_Key, _Histogram] = {}
        self._retries: dict[_Key, int] = {}
        self._tokens: dict[_Key, int] = {}
        self._cost_nanousd: dict[_Key, int] = {}
        self._unpriced: dict[_Key, int] = {}
        self._models: weakref.WeakKeyDictionary[ChatCompletionClient, ClientModel] = weakref.WeakKeyDictionary()
        self._records_usage: weakref.WeakKeyDictionary[Pipeline, bool] = weakref.WeakKeyDictionary()
        # (project, agent, model) as called -> as labelled: three bounded lookups become one.
        self._who_labels: dict[tuple[str | None, str | None, str | None], tuple[str, str, str]] = {}

    # -- the events ------------------------------------------------------------------

    def attempt_ended(self, event: AttemptEvent) -> None:
        """An attempt ended (the attempt feed's observer)."""
        if event.on_wrapper:
            return  # its own attempts, on its provider clients, come through the feed too
        call = event.call
        labels = self._who(call, event.client, event.request.extra_create_args)
        outcome = event.outcome
        kind = classify_error(event.error).value if event.error is not None else ""
        reason = None
        if event.attempt > 1 and len(call.events) >= 2:
            before = call.events[-2]  # the event of this attempt is the last one: it is appended before it is emitted
            reason = classify_error(before.error).value if before.error is not None else _REASK
        latency = event.latency
        with self._lock:  # error kinds are a closed set (ErrorKind): no bound needed
            key: _Key = (*labels, outcome, kind)
            self._attempts[key] = self._attempts.get(key, 0) + 1
            key = (*labels, outcome)
            histogram = self._attempt_seconds.get(key) or self._attempt_seconds.setdefault(key, _Histogram())
            histogram.counts[bisect_left(BUCKETS, latency)] += 1  # a bucket counts values <= its bound
            histogram.total += latency
            if reason is not None:
                key = (*labels, reason)
                self._retries[key] = self._retries.get(key, 0) + 1

    def call_started(self, call: Call, pipeline: Pipeline) -> None:
        """A call started (the call feed's observer): nothing to count until it ends."""

    def call_ended(self, call: Call, pipeline: Pipeline, error: BaseException | None) -> None:
        """A call ended (the call feed's observer)."""
        seconds = time.perf_counter() - call.started  # monotonic, as attempts' latencies are
        labels = self._who(call, pipeline.client, call.extra_create_args)
        if error is None:
            outcome, error_type = "ok", ""
        elif isinstance(error, Exception):
            outcome, error_type = "error", self.labels.value("error_type", type(error).__qualname__)
        else:
            outcome, error_type = "cancelled", ""
        # A call of a wrapper that records nothing, made under one that does, is recorded through that one's
        # accounting (call.borrowed): its rows count its tokens.
        recorded = call.borrowed is not None or self._recorded(pipeline)
        tokens = None if recorded else self._tokens_of(call, labels, pipeline.client)
        with self._lock:
            key: _Key = (*labels, outcome, error_type)
            self._calls[key] = self._calls.get(key, 0) + 1
            key = (*labels, outcome)
            histogram = self._call_seconds.get(key) or self._call_seconds.setdefault(key, _Histogram())
            histogram.counts[bisect_left(BUCKETS, seconds)] += 1
            histogram.total += seconds
            if tokens:
                for key, count in tokens:
                    self._tokens[key] = self._tokens.get(key, 0) + count

    def usage_recorded(self, event: UsageEvent, recorder: UsageRecorder) -> None:
        """A usage row was recorded (``accounting._feed``'s listener): its tokens and cost."""
        values = self.labels
        labels = (
            values.value("project", event.project),
            values.value("agent", event.agent),
            values.value("model", event.model),
        )
        with self._lock:
            for kind, count in (
                ("prompt", event.prompt_tokens),
                ("completion", event.completion_tokens),
                ("cached", event.cached_tokens),
                ("reasoning", event.reasoning_tokens),
            ):
                if count:
                    key = (*labels, kind)
                    self._tokens[key] = self._tokens.get(key, 0) + count
            if event.cost_nanousd is None:
                self._unpriced[labels] = self._unpriced.get(labels, 0) + 1
            else:
                self._cost_nanousd[labels] = self._cost_nanousd.get(labels, 0) + event.cost_nanousd

    def _who(
        self, call: Call, client: ChatCompletionClient, extra_create_args: Mapping[str, Any]
    ) -> tuple[str, str, str]:
        """The labels of ``call`` on ``client``: its project, agent, and the model it asks for (as its usage rows)."""
        attribution = call.attribution
        model = _per_client(self._models, client, client_model)
        # A plain call asks for the client's own model: the rule is applied only to a call that can name another.
        asked = model.asked_for(extra_create_args) if extra_create_args else model.configured
        called = (attribution.project, attribution.agent, asked)
        labels = self._who_labels.get(called)
        if labels is None:
            values = self.labels
            labels = (
                values.value("project", called[0]),
                values.value("agent", called[1]),
                values.value("model", called[2]),
            )
            if len(self._who_labels) < _MAX_REMEMBERED:  # past it, callers that name anew pay the lookups
                self._who_labels[called] = labels
        return labels

    def _model(self, client: ChatCompletionClient) -> str | None:
        """The model ``client`` is made with (its circuit breaker's, whatever a call asks for)."""
        return _per_client(self._models, client, client_model).configured

    def _recorded(self, pipeline: Pipeline) -> bool:
        """Whether the calls of ``pipeline`` become usage rows (whose events count their tokens)."""
        try:
            return self._records_usage[pipeline]
        except KeyError:
            found = self._records_usage[pipeline] = any(isinstance(layer, AccountingLayer) for layer in pipeline.layers)
            return found

    def _tokens_of(
        self, call: Call, labels: tuple[str, str, str], client: ChatCompletionClient
    ) -> list[tuple[_Key, int]]:
        """The tokens of a call no usage row counts, as the provider reported them (nothing is estimated).

        ``labels`` are those of the call on ``client``, its primary; a fallback's attempts are labelled its own.
        """
        found: list[tuple[_Key, int]] = []
        for event in call.events:
            result, raw = event.result, event.provider_usage
            if (result is None and raw is None) or event.on_wrapper:
                continue  # a failure the provider reported no usage for; a wrapped client's call, counted by it
            who = labels if event.client is client else self._who(call, event.client, event.request.extra_create_args)
            prompt = result.usage.prompt_tokens if result is not None else 0
            completion = result.usage.completion_tokens if result is not None else 0
            if raw is not None:
                prompt = raw.prompt_tokens if raw.prompt_tokens is not None else prompt
                completion = raw.completion_tokens if raw.completion_tokens is not None else completion
                if raw.cached_tokens:
                    found.append(((*who, "cached"), raw.cached_tokens))
                if raw.reasoning_tokens:
                    found.append(((*who, "reasoning"), raw.reasoning_tokens))
            if prompt:
                found.append(((*who, "prompt"), prompt))
            if completion:
                found.append(((*who, "completion"), completion))
        return found

    # -- the scrape ------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (lets a registry check names without collecting)."""
        return _Families().all()

    def collect(self) -> Iterable[Metric]:
        """Every metric, with the gauges read now."""
        with self._lock:
            calls, attempts, retries = dict(self._calls), dict(self._attempts), dict(self._retries)
            tokens, cost, unpriced = dict(self._tokens), dict(self._cost_nanousd), dict(self._unpriced)
            call_seconds = {key: histogram.copy() for key, histogram in self._call_seconds.items()}
            attempt_seconds = {key: histogram.copy() for key, histogram in self._attempt_seconds.items()}
        families = _Families()
        for counter, counts in (
            (families.calls, calls),
            (families.attempts, attempts),
            (families.retries, retries),
            (families.tokens, tokens),
            (families.unpriced, unpriced),
        ):
            for key, count in counts.items():
                counter.add_metric(key, count)
        for key, nanousd in cost.items():
            families.cost.add_metric(key, nanousd / _NANO)  # one rounding, of an exact sum
        for family, histograms in ((families.call_seconds, call_seconds), (families.attempt_seconds, attempt_seconds)):
            for key, histogram in histograms.items():
                family.add_metric(list(key), _cumulative(histogram), histogram.total)
        self._circuits(families.circuit)
        self._budgets(families.budget_remaining, families.budget_limit)
        recorders = live_recorders()
        families.queue.add_metric([], sum(recorder.pending for recorder in recorders))
        families.spool.add_metric([], sum(recorder.spooled for recorder in recorders))
        return families.all()

    def _circuits(self, family: GaugeMetricFamily) -> None:
        worst: dict[tuple[str, str], int] = {}
        for client, breaker in breakers():
            # Two breakers may describe alike (one client under two policies): report the worse state once.
            # The breaker's name holds the model's ("OpenAIChatCompletionClient(gpt-4o-mini)"): bounded alike.
            key = (self.labels.value("client", breaker.name), self.labels.value("model", self._model(client)))
            state = _CIRCUIT_STATES.index(breaker.state)
            worst[key] = max(state, worst.get(key, 0))
        for (name, model), state in worst.items():
            for index, label in enumerate(_CIRCUIT_STATES):
                family.add_metric([name, model, label], 1 if index == state else 0)

    def _budgets(self, remaining: GaugeMetricFamily, limit: GaugeMetricFamily) -> None:
        # Per label set, the budget with the least left: the one that refuses first.
        tightest: dict[tuple[str, ...], tuple[int, int]] = {}
        values = self.labels
        for tracker in trackers():
            policy = tracker.policy
            for project, value, spent in tracker.spend():
                agent = values.value("agent", value) if policy.scope == "agent" else ""
                key: tuple[str, ...] = (values.value("project", project), agent, policy.scope, policy.period or "all")
                left = policy.limit_nanousd - spent
                known = tightest.get(key)
                if known is None or left < known[0]:
                    tightest[key] = (left, policy.limit_nanousd)
        for key, (left, limit_nanousd) in tightest.items():
            remaining.add_metric(list(key), left / _NANO)
            limit.add_metric(list(key), limit_nanousd / _NANO)


class _Families:
    """The metric families of one scrape."""

    def __init__(self) -> None:
        who = ["project", "agent", "model"]
        self.calls = CounterMetricFamily(
            f"{PREFIX}calls",
            "Logical calls made through wrapped clients (retries and fallbacks inside), by how they ended.",
            labels=[*who, "outcome", "error_type"],
        )
        self.call_seconds = HistogramMetricFamily(
            f"{PREFIX}call_duration_seconds",
            "Duration of logical calls, retries, waits and fallbacks included.",
            labels=[*who, "outcome"],
        )
        self.attempts = CounterMetricFamily(
            f"{PREFIX}attempts",
            "Provider attempts (requests sent, or tried), by outcome and error kind.",
            labels=[*who, "outcome", "error_kind"],
        )
        self.attempt_seconds = HistogramMetricFamily(
            f"{PREFIX}attempt_duration_seconds",
            "Duration of provider attempts (a stream: to its end).",
            labels=[*who, "outcome"],
        )
        self.retries = CounterMetricFamily(
            f"{PREFIX}retries",
            "Attempts after a call's first, by what ended the attempt before: an error kind, or invalid "
            "(validation asked again).",
            labels=[*who, "error_kind"],
        )
        self.tokens = CounterMetricFamily(
            f"{PREFIX}tokens",
            "Tokens by kind: prompt, completion, and the parts of them that were cached (prompt) and "
            "reasoning (completion). Do not add the kinds up.",
            labels=[*who, "kind"],
        )
        self.cost = CounterMetricFamily(
            f"{PREFIX}cost_usd",
            "Cost in USD of priced attempts, as the usage ledger records it.",
            labels=who,
        )
        self.unpriced = CounterMetricFamily(
            f"{PREFIX}unpriced_attempts",
            "Attempts recorded without a cost: their model has no price (not in cost_usd).",
            labels=who,
        )
        self.circuit = GaugeMetricFamily(
            f"{PREFIX}circuit_state",
            "1 for the state each provider client's circuit breaker is in, 0 for the others.",
            labels=["client", "model", "state"],
        )
        self.budget_remaining = GaugeMetricFamily(
            f"{PREFIX}budget_remaining_usd",
            "USD a budget has left this period (negative past the limit); for session budgets, the least "
            "any session of the project has left.",
            labels=["project", "agent", "scope", "period"],
        )
        self.budget_limit = GaugeMetricFamily(
            f"{PREFIX}budget_limit_usd",
            "The limit of the budget budget_remaining_usd reports.",
            labels=["project", "agent", "scope", "period"],
        )
        self.queue = GaugeMetricFamily(
            f"{PREFIX}usage_queue_depth",
            "Usage rows recorded in this process and not yet written to the database or the spool.",
        )
        self.spool = GaugeMetricFamily(
            f"{PREFIX}usage_spool_backlog",
            "Usage rows waiting in this process's spool files for the database to come back.",
        )

    def all(self) -> list[Metric]:
        return [
            self.calls,
            self.call_seconds,
            self.attempts,
            self.attempt_seconds,
            self.retries,
            self.tokens,
            self.cost,
            self.unpriced,
            self.circuit,
            self.budget_remaining,
            self.budget_limit,
            self.queue,
            self.spool,
        ]


def _cumulative(histogram: _Histogram) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*BUCKETS, _INF), histogram.counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == _INF else repr(bound), running))
    return buckets


def _per_client(
    cache: weakref.WeakKeyDictionary[ChatCompletionClient, _T],
    client: ChatCompletionClient,
    compute: Callable[[ChatCompletionClient], _T],
) -> _T:
    """``compute(client)``, remembered for as long as ``client`` lives (computed each time if it cannot be)."""
    try:
        return cache[client]
    except KeyError:
        found = cache[client] = compute(client)
        return found
    except TypeError:  # a client that cannot be weakly referenced
        return compute(client)
