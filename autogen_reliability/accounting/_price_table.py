"""What a provider request cost: exact prices from user overrides, then from genai-prices' offline data.

:class:`PricingTable` prices a :class:`TokenUsage` for a model (and, optionally,
a provider) at a moment in time, and returns a :class:`Cost` - or ``None`` when
the model has no known price. Unpriced is never $0: a local model is free only
when an override says so.

Sources, first match wins:

1. **User overrides** (a dict, or a TOML/JSON file; the format and its rules
   are in :mod:`~autogen_reliability.accounting._price_overrides`). For the
   models it lists (with their provider, if the entry names one) the override
   table is authoritative: a request dated before every ``effective_from`` of a
   listed model is *unpriced*, genai-prices is not asked.
2. **genai-prices' offline data** (the snapshot bundled with the installed
   package; time-aware, with cache-read/write and tiered prices). It is never
   updated from the network by this module: no call here fetches anything.

Money is computed in :class:`~decimal.Decimal` (50 significant digits) and
rounded once, half-even, to integer nano-USD (10^-9 USD).

genai-prices' prices, computed here
-----------------------------------

A price from genai-prices' data is computed here, for the price sets a
:class:`TokenUsage` can be charged (four token prices, tiers; prices of units
more specific than a TokenUsage reports, such as audio tokens, which
genai-prices charges nothing from its four counts): 2,634 of the 2,640 price
sets of the bundled data (genai-prices 0.2.3). The rest (a price per request,
per reasoning token, per web search) go to genai-prices' own calculation
(``ModelInfo.calc_price``: what its public ``calc_price()`` runs once it has
found the model), as does the check of each price set, once, when it is first
used. Both in this module's decimal context.

Measured in a loop: ~10 µs a call here, against 100-150 µs for genai-prices'
``calc_price()``. Measured inside whole calls (``benchmarks/bench_pricing.py``:
AutoGen's OpenAI client through the wrapper, the real openai SDK over loopback
HTTP to ``FakeOpenAIServer``, a usage row per call; 2.5-2.9 ms a call), this
calculation and genai-prices' in alternating runs: ``price()`` took 35-65 µs
of the event loop's CPU with ours and 185-230 µs with genai-prices' (1.5-2 %
against 7.5-8.5 % of the loop's CPU per call), and a whole call took
2.57-2.69 ms against 2.76-2.84 ms: +0.15-0.2 ms, 6-8 %.

So the calculation stays here. The end-to-end goal for the whole wrapper
(issue #14: all features on, at most 1.03 x the bare client) is about 40 µs
added per loopback call: a pricing step of 150-200 µs alone would miss it four
times over. And it is CPU on the event loop, paid on every attempt whatever the
provider's latency: a process making 100 calls a second would spend 2 % of a
core more on pricing, and each price delays every other task on the loop.

Its calculation (``_FastPrices`` below) follows genai-prices' rules by hand
(which counts a cache price carves out of the input, how a tier applies), so it
is tested against genai-prices itself: ``tests/test_pricing.py`` prices every
model of the bundled data (several usages, tiers and dates) both ways and
requires the same Decimal, and checks that the price sets it cannot compute
exist in the data and are left to genai-prices.

The lookup of a (model, provider) is cached here too, with its misses:
genai-prices caches the models it found, not the ones it did not, and a model
unknown to its provider (a local ``llama3.1`` behind OpenAI's client is looked
up at ``openai``) costs ~90 µs there on every call, ~2 µs here.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from pathlib import Path
from typing import Any, Final

# genai-prices is imported here, with the modules it would otherwise import lazily on its first
# price calculation (the bundled data, the unit table, the validators): importing it for the first
# time on a background thread while the openai SDK is in use raised "partially initialized module
# 'httpx2'" (see DESIGN.md, Pitfalls). Nothing here starts its auto-update (`UpdatePrices`).
import genai_prices
import genai_prices.data  # the bundled price snapshot
from genai_prices import data_snapshot, data_units  # the unit table
from genai_prices import decompose as _genai_decompose  # noqa: F401
from genai_prices import types as genai_types
from genai_prices import validation as _genai_validation  # noqa: F401

from .._errors import ConfigurationError
from ._price_overrides import Override, OverrideTable, Rate, overrides_from_file, overrides_from_mapping

__all__ = ["GENAI_PRICES_VERSION", "Cost", "PricingTable", "TokenUsage", "nanousd_to_usd"]

logger = logging.getLogger(__name__)

GENAI_PRICES_VERSION: Final[str] = genai_prices.__version__
"""The installed genai-prices version, as named in :attr:`Cost.source`."""

# Enough digits that no realistic price x token count is ever rounded before the one final rounding.
_CONTEXT: Final = Context(prec=50, rounding=ROUND_HALF_EVEN)
_PER_MILLION: Final = Decimal(1_000_000)
_NANO_PER_USD: Final = Decimal(1_000_000_000)
_LOOKUP_CACHE_SIZE: Final = 1024


def nanousd_to_usd(nanousd: int | None) -> Decimal:
    """Exact USD of an integer count of nano-USD, the ledger's unit (None, nothing priced: 0)."""
    return Decimal(nanousd) / _NANO_PER_USD if nanousd else Decimal(0)


_OVERRIDE_SOURCE: Final = "override"
_GENAI_SOURCE: Final = f"genai-prices {GENAI_PRICES_VERSION}"


# --------------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """What one provider request used, as priced.

    Attributes:
        prompt_tokens: All input tokens, cached ones included (as OpenAI reports ``prompt_tokens``;
            for Anthropic that is ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``).
        completion_tokens: All output tokens, reasoning tokens included.
        cached_tokens: Of ``prompt_tokens``, those read from the provider's prompt cache.
        cache_write_tokens: Of ``prompt_tokens``, those written to the prompt cache (Anthropic).
        latency_seconds: How long the request took, for models priced by compute time.

    Raises:
        ValueError: A count is negative or not an int, cached plus cache-write tokens exceed
            ``prompt_tokens``, or the latency is negative or not finite.

    Example:
        >>> usage = TokenUsage(prompt_tokens=1200, completion_tokens=80, cached_tokens=1024)
        >>> usage.prompt_tokens - usage.cached_tokens  # priced at the full input price
        176
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    latency_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TokenUsage.{name} must be a non-negative int, got {value!r}")
        if self.cached_tokens + self.cache_write_tokens > self.prompt_tokens:
            raise ValueError(
                f"TokenUsage: cached_tokens ({self.cached_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) exceed prompt_tokens ({self.prompt_tokens}); "
                "prompt_tokens must count every input token, cached ones included"
            )
        latency = self.latency_seconds
        if latency is not None and (
            isinstance(latency, bool)
            or not isinstance(latency, int | float)
            or not math.isfinite(latency)
            or latency < 0
        ):
            raise ValueError(f"TokenUsage.latency_seconds must be a finite number >= 0 or None, got {latency!r}")


@dataclass(frozen=True, slots=True)
class Cost:
    """The price of one provider request.

    Attributes:
        nanousd: The cost in integer nano-USD (10^-9 USD), rounded once, half-even, from ``usd``.
        usd: The exact amount before rounding.
        source: ``"override"``, or ``"genai-prices <version>"`` for the package's bundled data.
        effective_from: The date the applied price took effect, when known.
        model: The model id the price was found under (the override's name, or genai-prices'
            canonical id, e.g. ``"claude-3-5-sonnet"`` for ``"claude-3-5-sonnet-20241022"``).
        provider: The provider the price is for: genai-prices' provider id, the override's
            provider, or for an override without one the provider that was asked for.
    """

    nanousd: int
    usd: Decimal
    source: str
    effective_from: date | None
    model: str
    provider: str | None


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------


def _override_usd(rate: Rate, usage: TokenUsage) -> Decimal | None:
    """The exact cost of ``usage`` at an override's rate; ``None`` when it needs a latency that is missing."""
    if rate.per_second is not None:
        if usage.latency_seconds is None:
            return None
        # str() gives the float's shortest repr, i.e. the number the caller measured, not its binary expansion.
        return rate.per_second * Decimal(str(usage.latency_seconds))
    # The overrides' model guarantees input and output for a token rate.
    assert rate.input is not None
    assert rate.output is not None
    cached_price = rate.input if rate.cached_input is None else rate.cached_input
    write_price = rate.input if rate.cache_write is None else rate.cache_write
    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
    return (
        rate.input * uncached
        + cached_price * usage.cached_tokens
        + write_price * usage.cache_write_tokens
        + rate.output * usage.completion_tokens
    ) / _PER_MILLION


# --------------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------------
# genai-prices
# --------------------------------------------------------------------------------------------------

# The prices the four counts of a TokenUsage map to; other units are handled by _ignorable_price_key.
_FAST_PRICE_KEYS: Final = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"})
_PRICE_KEY_DIMENSIONS: Final[Mapping[str, Mapping[str, str]]] = {
    unit.get("price_key", usage_key): unit.get("dimensions", {}) for usage_key, unit in data_units.unit_data.items()
}
# A token unit with a dimension beyond these (a modality, a cache TTL) is more specific than anything a
# TokenUsage reports, so genai-prices infers a count of 0 for it and it leaves the four leaf counts alone.
_PLAIN_TOKEN_DIMENSIONS: Final = frozenset({"family", "direction", "token_type"})

_NOT_CACHED: Final = object()


def _ignorable_price_key(key: str) -> bool:
    """True when genai-prices charges nothing for ``key`` given only a TokenUsage's four counts."""
    dimensions = _PRICE_KEY_DIMENSIONS.get(key)
    if dimensions is None:
        return False
    family = dimensions.get("family")
    if family == "requests":  # charged once per request, whatever the usage
        return False
    if family == "tokens":
        return not set(dimensions) <= _PLAIN_TOKEN_DIMENSIONS
    return True


@dataclass(frozen=True, slots=True)
class _FastPrices:
    """A genai-prices ``ModelPrice`` reduced to what a TokenUsage can be charged.

    It computes what ``ModelPrice.calc_price`` computes for such a usage (the parity tests run it
    against every model of the bundled data) in a few microseconds instead of about a hundred.
    """

    input: Decimal | genai_types.TieredPrices | None
    output: Decimal | genai_types.TieredPrices | None
    cache_read: Decimal | genai_types.TieredPrices | None
    cache_write: Decimal | genai_types.TieredPrices | None

    @classmethod
    def of(cls, model_price: genai_types.ModelPrice) -> _FastPrices | None:
        """The reduced prices, or ``None`` when ``model_price`` charges something else (genai-prices prices it)."""
        for key, value in vars(model_price).items():
            if key.startswith("_") or value is None:
                continue
            if key in _FAST_PRICE_KEYS:
                if not isinstance(value, Decimal | genai_types.TieredPrices):
                    return None
            elif not _ignorable_price_key(key):
                return None
        return cls(
            model_price.input_mtok,
            model_price.output_mtok,
            model_price.cache_read_mtok,
            model_price.cache_write_mtok,
        )

    def usd(self, usage: TokenUsage) -> Decimal:
        # As genai-prices does: a cache count is carved out of the input count only when the cache
        # unit has a price of its own; a tier applies to all tokens once the prompt passes its start.
        prompt = usage.prompt_tokens

        def rate(price: Decimal | genai_types.TieredPrices | None) -> Decimal | None:
            if not isinstance(price, genai_types.TieredPrices):
                return price
            for tier in reversed(price.tiers):
                if prompt > tier.start:
                    return tier.price
            return price.base

        total = Decimal(0)
        uncached = prompt
        if (cache_read := rate(self.cache_read)) is not None:
            total += cache_read * usage.cached_tokens / _PER_MILLION
            uncached -= usage.cached_tokens
        if (cache_write := rate(self.cache_write)) is not None:
            total += cache_write * usage.cache_write_tokens / _PER_MILLION
            uncached -= usage.cache_write_tokens
        if (input_price := rate(self.input)) is not None:
            total += input_price * uncached / _PER_MILLION
        if (output_price := rate(self.output)) is not None:
            total += output_price * usage.completion_tokens / _PER_MILLION
        return total


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to price with one of a model's ``ModelPrice`` objects."""

    valid: bool  # False: genai-prices rejects the price set itself, so the model is unpriced
    fast: _FastPrices | None  # None: ask genai-prices each time
    effective_from: date | None


@dataclass(slots=True)
class _GenaiModel:
    """A model genai-prices has a price for, as found for one (model, provider) of a request."""

    provider: genai_types.Provider
    model: genai_types.ModelInfo
    plans: dict[int, _Plan] = field(default_factory=dict)  # by id() of a ModelPrice that `model` holds
    warned: bool = False  # genai-prices refused to price it once already: said so in the log

    def plan(self, model_price: genai_types.ModelPrice) -> _Plan:
        """How to price with ``model_price`` (one of this model's), made on first use. Call under the table's lock."""
        found = self.plans.get(id(model_price))
        if found is None:
            found = self.plans[id(model_price)] = self._make_plan(model_price)
        return found

    def _make_plan(self, model_price: genai_types.ModelPrice) -> _Plan:
        effective_from = self.effective_from(model_price)
        try:
            # Runs genai-prices' own checks of the price set (which do not depend on the usage).
            with localcontext(_CONTEXT):
                model_price.calc_price(genai_types.Usage(input_tokens=0, output_tokens=0))
        except ValueError as error:
            self.refused(error)
            return _Plan(valid=False, fast=None, effective_from=effective_from)
        return _Plan(valid=True, fast=_FastPrices.of(model_price), effective_from=effective_from)

    def effective_from(self, model_price: genai_types.ModelPrice) -> date | None:
        """The start date of the price set genai-prices applied, when it is a dated one."""
        if isinstance(self.model.prices, genai_types.ModelPrice):
            return None
        for conditional in reversed(self.model.prices):  # as ModelInfo.get_prices chooses: last first
            if conditional.prices is model_price:
                if isinstance(conditional.constraint, genai_types.StartDateConstraint):
                    return conditional.constraint.start_date
                return None
        return None

    def refused(self, error: ValueError) -> None:
        """Logs, the first time only, that genai-prices refused to price this model. Call under the table's lock."""
        if self.warned:
            return
        self.warned = True
        logger.warning(
            "genai-prices %s could not price %s at %s (%s); recording it unpriced",
            GENAI_PRICES_VERSION,
            self.model.id,
            self.provider.id,
            error,
        )


def _genai_usage(usage: TokenUsage) -> genai_types.Usage:
    # genai-prices' input_tokens is the total, like prompt_tokens: cache reads and writes are part of it.
    return genai_types.Usage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cache_read_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def _as_utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:  # naive means UTC, as genai-prices reads it too
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def _normalise_provider(provider: str | None) -> str | None:
    if provider is None:
        return None
    provider = provider.strip().lower()
    return provider or None


def _cost(usd: Decimal, source: str, effective_from: date | None, model: str, provider: str | None) -> Cost:
    # The context's own arithmetic (50 digits, half-even), not a localcontext(): this runs for every row.
    nanousd = int(_CONTEXT.to_integral_value(_CONTEXT.multiply(usd, _NANO_PER_USD)))
    return Cost(nanousd=nanousd, usd=usd, source=source, effective_from=effective_from, model=model, provider=provider)


class PricingTable:
    """Prices provider requests: user overrides first, then genai-prices' bundled offline data.

    Args:
        overrides: The override table (see the module documentation for the format): a mapping,
            or the path of a ``.toml`` or ``.json`` file. ``None``: no overrides.
        use_genai_prices: Fall back to genai-prices' data for models the overrides do not list.
            ``False``: only the overrides price anything.

    Raises:
        ConfigurationError: The overrides are invalid (the message names the model and key),
            or the file cannot be read or parsed.

    Thread-safe: one table may be shared by the event loop and the recorder's thread.

    Example:
        >>> from datetime import datetime, UTC
        >>> table = PricingTable({"models": {"llama3.1:8b": {"input": 0, "output": 0}}})
        >>> usage = TokenUsage(prompt_tokens=1000, completion_tokens=200)
        >>> table.price("llama3.1:8b", "ollama", usage=usage).nanousd
        0
        >>> cost = table.price("gpt-4o-mini", "openai", usage=usage, at=datetime(2025, 6, 1, tzinfo=UTC))
        >>> cost.nanousd, cost.usd, cost.model
        (270000, Decimal('0.00027'), 'gpt-4o-mini')
        >>> table.price("my-own-model", usage=usage) is None  # unknown: unpriced, never $0
        True
    """

    def __init__(
        self,
        overrides: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        use_genai_prices: bool = True,
    ) -> None:
        self._overrides: OverrideTable
        if overrides is None:
            self._overrides = {}
        elif isinstance(overrides, str | os.PathLike):
            self._overrides = overrides_from_file(Path(overrides))
        elif isinstance(overrides, Mapping):
            self._overrides = overrides_from_mapping(overrides)
        else:
            raise ConfigurationError(
                f"pricing overrides: expected a mapping or a file path, got {type(overrides).__name__}"
            )
        self._use_genai_prices = use_genai_prices
        self._lock = threading.Lock()
        self._lookups: OrderedDict[tuple[str, str | None], object] = OrderedDict()
        # Loads the bundled data now, on the constructing thread (see the imports above).
        self._snapshot = data_snapshot.get_snapshot() if use_genai_prices else None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, use_genai_prices: bool = True) -> PricingTable:
        """A table with the overrides of a TOML (``.toml``) or JSON (``.json``) file.

        Args:
            path: The file; its extension selects the parser.
            use_genai_prices: As for the constructor.

        Raises:
            ConfigurationError: The file cannot be read or parsed, or its overrides are invalid.

        Example:
            >>> with open("prices.toml", "w") as file:
            ...     print('[models."llama3.1:8b"]', "input = 0", "output = 0", sep="\\n", file=file)
            >>> PricingTable.from_file("prices.toml")
            PricingTable(1 overridden model(s), then genai-prices ...)
        """
        return cls(Path(path), use_genai_prices=use_genai_prices)

    def __repr__(self) -> str:
        source = f"genai-prices {GENAI_PRICES_VERSION}" if self._use_genai_prices else "no fallback"
        return f"PricingTable({len(self._overrides)} overridden model(s), then {source})"

    def price(
        self,
        model: str,
        provider: str | None = None,
        *,
        usage: TokenUsage,
        at: datetime | None = None,
    ) -> Cost | None:
        """The cost of a request to ``model`` that used ``usage``, at the prices in force at ``at``.

        Args:
            model: The model id as sent to the provider (matched case-insensitively).
            provider: The provider id (``"openai"``, ``"azure"``, ``"anthropic"``, ...; see
                :func:`infer_provider`), or ``None`` to let genai-prices infer it from the model.
            usage: The tokens (and latency) to price.
            at: When the request started; naive means UTC. Default: now.

        Returns:
            The cost, or ``None`` when the model has no price (for this provider, at that time, or
            without a latency for a per-second price). Never raises for an unknown model.

        Example:
            >>> table = PricingTable()
            >>> usage = TokenUsage(prompt_tokens=2000, completion_tokens=100, cached_tokens=1024)
            >>> table.price("gpt-4o", "openai", usage=usage, at=datetime(2025, 6, 1, tzinfo=UTC)).usd
            Decimal('0.00472')
        """
        if not model:
            return None
        when = _as_utc(at)
        provider_key = _normalise_provider(provider)
        model_key = model.strip().lower()
        entries = self._overrides.get(model_key)
        if entries is not None:
            override = entries.get(provider_key) if provider_key is not None else None
            if override is None:
                override = entries.get(None)
            if override is not None:
                return self._price_override(override, provider_key, usage, when.date())
        if not self._use_genai_prices:
            return None
        return self._price_genai(model_key, provider_key, usage, when)

    @staticmethod
    def _price_override(override: Override, provider: str | None, usage: TokenUsage, day: date) -> Cost | None:
        rate = override.rate_on(day)
        if rate is None:  # before the model's first price: authoritative, so unpriced
            return None
        with localcontext(_CONTEXT):
            usd = _override_usd(rate, usage)
        if usd is None:
            return None
        return _cost(usd, _OVERRIDE_SOURCE, rate.effective_from, override.model, override.provider or provider)

    def _lookup(self, snapshot: data_snapshot.DataSnapshot, model: str, provider: str | None) -> _GenaiModel | None:
        key = (model, provider)
        with self._lock:
            if snapshot is not self._snapshot:  # someone installed another snapshot: start over
                self._lookups.clear()
                self._snapshot = snapshot
            found = self._lookups.get(key, _NOT_CACHED)
            if found is not _NOT_CACHED:
                self._lookups.move_to_end(key)
                return found if isinstance(found, _GenaiModel) else None
        try:
            provider_info, model_info = snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            entry: _GenaiModel | None = None
        else:
            entry = _GenaiModel(provider_info, model_info)
        with self._lock:
            # Misses are cached too: genai-prices scans every model of the provider for each one.
            self._lookups[key] = entry
            if len(self._lookups) > _LOOKUP_CACHE_SIZE:
                self._lookups.popitem(last=False)
        return entry

    def _price_genai(self, model: str, provider: str | None, usage: TokenUsage, when: datetime) -> Cost | None:
        snapshot = data_snapshot.get_snapshot()
        entry = self._lookup(snapshot, model, provider)
        if entry is None:
            return None
        # Chosen per call, not cached per day: some prices depend on the time of day (DeepSeek's off-peak hours).
        model_price = entry.model.get_prices(when)
        with self._lock:
            plan = entry.plan(model_price)
        if not plan.valid:
            return None
        with localcontext(_CONTEXT):
            if plan.fast is not None:
                usd = plan.fast.usd(usage)
            else:
                try:
                    # A price our calculation does not follow (per request, per reasoning token): genai-prices'
                    # own, the one its calc_price() makes once it has found the model.
                    usd = entry.model.calc_price(
                        _genai_usage(usage), entry.provider, genai_request_timestamp=when
                    ).total_price
                except ValueError as error:  # genai-prices finds this usage or price set inconsistent
                    with self._lock:
                        entry.refused(error)
                    return None
        source = _GENAI_SOURCE
        if snapshot.from_auto_update:  # the application updated the data itself; say from when
            source += f" (data of {snapshot.timestamp.isoformat(timespec='seconds')})"
        return _cost(usd, source, plan.effective_from, entry.model.id, entry.provider.id)
