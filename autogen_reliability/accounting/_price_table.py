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

genai-prices computes its own prices
------------------------------------

A price from genai-prices' data is computed by genai-prices
(``ModelInfo.calc_price``: what its public ``calc_price()`` runs once it has
found the model), in this module's decimal context. An earlier version computed
it here for the price sets a :class:`TokenUsage` can be charged (four token
prices, tiers): ~10 µs a call in a loop, against ~120 µs for genai-prices.

Measured inside whole calls (``benchmarks/bench_pricing.py``: AutoGen's OpenAI
client through the wrapper, the real openai SDK over loopback HTTP to
``FakeOpenAIServer``, a usage row per call; 2.5-2.9 ms a call), old and new
code in alternating runs: ``price()`` took 35-65 µs of the event loop's CPU
with the re-implementation and 185-230 µs with genai-prices' calculation
(1.5-2 % against 7.5-8.5 % of the loop's CPU per call), and a whole call took
2.57-2.69 ms against 2.76-2.84 ms: +0.15-0.2 ms, 6-8 %. (While the machine was
busy with other work the two could not be told apart: rounds of the same calls
differed by ±0.2 ms.) That is the fastest a call can be. Against a real
provider, hundreds of milliseconds a call, 0.2 ms is below 0.1 %, and a
process making 100 calls a second spends 2 % of one core more. It does not
matter end to end, so the re-implementation went, with the ~150 lines that read
genai-prices' unit table and followed its rules by hand (which counts a cache
price carves out of the input, how a tier applies); the parity test against
``calc_price()`` over every model of the bundled data stays.

What stays here is the lookup of a (model, provider), cached with its misses:
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
from dataclasses import dataclass
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
import genai_prices.data_units  # the unit table
from genai_prices import data_snapshot
from genai_prices import decompose as _genai_decompose  # noqa: F401
from genai_prices import types as genai_types
from genai_prices import validation as _genai_validation  # noqa: F401

from .._errors import ConfigurationError
from ._price_overrides import Override, OverrideTable, Rate, overrides_from_file, overrides_from_mapping

__all__ = ["GENAI_PRICES_VERSION", "Cost", "PricingTable", "TokenUsage"]

logger = logging.getLogger(__name__)

GENAI_PRICES_VERSION: Final[str] = genai_prices.__version__
"""The installed genai-prices version, as named in :attr:`Cost.source`."""

# Enough digits that no realistic price x token count is ever rounded before the one final rounding.
_CONTEXT: Final = Context(prec=50, rounding=ROUND_HALF_EVEN)
_PER_MILLION: Final = Decimal(1_000_000)
_NANO_PER_USD: Final = Decimal(1_000_000_000)
_LOOKUP_CACHE_SIZE: Final = 1024

_OVERRIDE_SOURCE: Final = "override"


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

_NOT_CACHED: Final = object()


@dataclass(slots=True)
class _GenaiModel:
    """A model genai-prices has a price for, as found for one (model, provider) of a request."""

    provider: genai_types.Provider
    model: genai_types.ModelInfo
    warned: bool = False  # genai-prices refused to price it once already: said so in the log

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
    with localcontext(_CONTEXT):
        nanousd = int((usd * _NANO_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))
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
        try:
            # genai-prices' own calculation, the one its calc_price() makes once it has found the model. It
            # chooses the price set for `when` on every call: some depend on the time of day (DeepSeek's
            # off-peak hours), so nothing here is cached per day.
            with localcontext(_CONTEXT):
                calculation = entry.model.calc_price(_genai_usage(usage), entry.provider, genai_request_timestamp=when)
        except ValueError as error:  # genai-prices finds the model's price set inconsistent: unpriced
            if not entry.warned:
                entry.warned = True
                logger.warning(
                    "genai-prices %s could not price %s at %s (%s); recording it unpriced",
                    GENAI_PRICES_VERSION,
                    entry.model.id,
                    entry.provider.id,
                    error,
                )
            return None
        source = f"genai-prices {GENAI_PRICES_VERSION}"
        if snapshot.from_auto_update:  # the application updated the data itself; say from when
            source += f" (data of {snapshot.timestamp.isoformat(timespec='seconds')})"
        return _cost(
            calculation.total_price,
            source,
            entry.effective_from(calculation.model_price),
            entry.model.id,
            entry.provider.id,
        )
