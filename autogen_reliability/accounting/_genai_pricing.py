"""Prices from genai-prices' bundled offline data: imported only when a table that uses them is made.

genai-prices (and its data, ~0.1 s to import) is loaded when the first
:class:`~autogen_reliability.accounting.PricingTable` that falls back to it is
constructed, not when the package is imported. It is imported with the modules
it would otherwise import lazily on its first price calculation (the bundled
data, the unit table, the validators), all on the constructing thread:
importing genai-prices for the first time on a background thread while the
openai SDK is in use raised "partially initialized module 'httpx2'" (see
DESIGN.md, Pitfalls). Nothing here starts its auto-update (``UpdatePrices``).

A price from genai-prices' data is computed here, for the price sets a
:class:`TokenUsage` can be charged (five token prices: input, output, cache
read, cache write and 1-hour cache write; tiers; prices of units more specific
than those five counts, such as image tokens, which genai-prices charges
nothing from them): 2,649 of the 2,655 price sets of the bundled
data (genai-prices 0.2.5), 79 of them with a 1-hour cache-write price. The rest (a price per request,
per reasoning token, per web search), and a usage with audio tokens for a price set with audio (or other
per-modality) prices (``gpt-audio``), go to genai-prices' own calculation
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
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import Final

import genai_prices
import genai_prices.data  # the bundled price snapshot
from genai_prices import data_snapshot, data_units  # the unit table
from genai_prices import decompose as _genai_decompose  # noqa: F401
from genai_prices import types as genai_types
from genai_prices import validation as _genai_validation  # noqa: F401

from ._cost import CONTEXT, PER_MILLION, Cost, TokenUsage, cost_of

__all__ = ["GENAI_PRICES_VERSION", "GenaiPrices"]

logger = logging.getLogger(__name__)

GENAI_PRICES_VERSION: Final[str] = genai_prices.__version__
"""The installed genai-prices version, as named in :attr:`Cost.source`."""

_SOURCE: Final = f"genai-prices {GENAI_PRICES_VERSION}"
_LOOKUP_CACHE_SIZE: Final = 1024

# The prices the five counts of a TokenUsage map to; other units are handled by _ignorable_price_key.
_FAST_PRICE_KEYS: Final = frozenset(
    {"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok"}
)
_PRICE_KEY_DIMENSIONS: Final[Mapping[str, Mapping[str, str]]] = {
    unit.get("price_key", usage_key): unit.get("dimensions", {}) for usage_key, unit in data_units.unit_data.items()
}
# A token unit with a dimension beyond these (a modality, a cache TTL) is more specific than anything a
# TokenUsage reports, so genai-prices infers a count of 0 for it and it leaves the five leaf counts alone
# (a 5-minute cache-write price, say: the writes that are not 1-hour ones cost the plain cache-write price).
_PLAIN_TOKEN_DIMENSIONS: Final = frozenset({"family", "direction", "token_type"})

_NOT_CACHED: Final = object()

# LiteLLM's names of providers, where they are not genai-prices' ids (a gateway's "gemini/gemini-1.5-flash").
_GATEWAY_PROVIDERS: Final[Mapping[str, str]] = {
    "gemini": "google",
    "vertex_ai": "google",
    "bedrock": "aws",
    "xai": "x-ai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "azure_ai": "azure",
    "cohere_chat": "cohere",
}


# The APIs a gateway speaks: the provider of a client whose URL no provider of genai-prices matches (see
# infer_provider). A model named with another provider first is asked of a gateway there, never of the API's
# own host (OpenAI serves no "anthropic/..." model), so it may be priced as the named provider's.
_GATEWAY_APIS: Final = frozenset({"openai", "anthropic"})


def _find(snapshot: data_snapshot.DataSnapshot, model: str, provider: str | None) -> _GenaiModel | None:
    try:
        provider_info, model_info = snapshot.find_provider_model(model, None, provider, None)
    except LookupError:
        return None
    return _GenaiModel(provider_info, model_info)


def _ignorable_price_key(key: str) -> bool:
    """True when genai-prices charges nothing for ``key`` given only a TokenUsage's five counts."""
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
    cache_write_1h: Decimal | genai_types.TieredPrices | None
    # The price set has a price of its own for a modality (audio input or output, text only, ...): a usage with
    # audio tokens is then priced by genai-prices, which carves them out of the prompt and completion.
    by_modality: bool = False

    @classmethod
    def of(cls, model_price: genai_types.ModelPrice) -> _FastPrices | None:
        """The reduced prices, or ``None`` when ``model_price`` charges something else (genai-prices prices it)."""
        by_modality = False
        for key, value in vars(model_price).items():
            if key.startswith("_") or value is None:
                continue
            if key in _FAST_PRICE_KEYS:
                if not isinstance(value, Decimal | genai_types.TieredPrices):
                    return None
            elif not _ignorable_price_key(key):
                return None
            else:
                by_modality = by_modality or "modality" in _PRICE_KEY_DIMENSIONS.get(key, {})
        return cls(
            model_price.input_mtok,
            model_price.output_mtok,
            model_price.cache_read_mtok,
            model_price.cache_write_mtok,
            model_price.cache_write_1h_mtok,
            by_modality,
        )

    def prices(self, usage: TokenUsage) -> bool:
        """Whether :meth:`usd` prices ``usage`` as genai-prices would: not audio tokens at a price of their own."""
        return not (self.by_modality and (usage.input_audio_tokens or usage.output_audio_tokens))

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
            total += cache_read * usage.cached_tokens / PER_MILLION
            uncached -= usage.cached_tokens
        if (cache_write := rate(self.cache_write)) is not None:
            # 1-hour writes are carved out of the writes only when they have a price of their own (which
            # genai-prices accepts only beside a cache-write price); without one they cost cache_write.
            written = usage.cache_write_tokens
            if (cache_write_1h := rate(self.cache_write_1h)) is not None:
                total += cache_write_1h * usage.cache_write_1h_tokens / PER_MILLION
                written -= usage.cache_write_1h_tokens
            total += cache_write * written / PER_MILLION
            uncached -= usage.cache_write_tokens
        if (input_price := rate(self.input)) is not None:
            total += input_price * uncached / PER_MILLION
        if (output_price := rate(self.output)) is not None:
            total += output_price * usage.completion_tokens / PER_MILLION
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
    # By id() of a ModelPrice that `model` holds, then of the price variants (of a service tier) applied over it.
    plans: dict[tuple[int, ...], _Plan] = field(default_factory=dict)
    warned: bool = False  # genai-prices refused to price it once already: said so in the log
    unpriced_tiers: set[str] = field(default_factory=set)  # service tiers said (in the log) to have no price

    def tier_variants(self, tier: str, when: datetime) -> tuple[genai_types.PriceVariant, ...] | None:
        """The price variants genai-prices applies to an answer served at ``tier`` (not a standard one) at ``when``.

        ``()``: genai-prices prices no service tier of this model (its standard price applies, as genai-prices'
        ``calc_price`` applies it: the case of most providers, whose tiers cost the same, and of a model found
        at another provider, whose tier prices genai-prices does not apply). ``None``: it prices some of the
        model's tiers, but not this one at that date, so the answer's price is not known.
        """
        found: list[genai_types.PriceVariant] = []
        tiered = False
        for variant in self.model.price_variants or ():
            if "service_tier" not in variant.when:
                continue
            tiered = True
            if variant.when.get("service_tier") != tier or len(variant.when) > 1:
                continue  # as genai-prices matches a variant: every key of its `when` equal to the context's
            if variant.constraint is None or variant.constraint.active(when):
                found.append(variant)
        if not tiered or not any(self.model is model for model in self.provider.models):
            return ()
        return tuple(found) or None

    def plan(
        self,
        model_price: genai_types.ModelPrice,
        variants: tuple[genai_types.PriceVariant, ...] = (),
        when: datetime | None = None,
        tier: str | None = None,
    ) -> _Plan:
        """How to price with ``model_price`` (one of this model's) and the ``variants`` of ``tier`` over it, in force
        at ``when``, made on first use. Call under the table's lock."""
        key = (id(model_price), *map(id, variants))
        found = self.plans.get(key)
        if found is None:
            resolved = model_price
            if variants:
                assert when is not None
                assert tier is not None
                # genai-prices' own resolution: the tier's prices over the standard ones, key by key.
                resolved = self.model.get_prices(when, {"service_tier": tier})
            found = self.plans[key] = self._make_plan(model_price, resolved, variants)
        return found

    def _make_plan(
        self,
        model_price: genai_types.ModelPrice,
        resolved: genai_types.ModelPrice,
        variants: tuple[genai_types.PriceVariant, ...],
    ) -> _Plan:
        effective_from = self.effective_from(model_price)
        for variant in variants:  # a tier's price dated later than the standard one took effect later
            if isinstance(variant.constraint, genai_types.StartDateConstraint):
                start = variant.constraint.start_date
                effective_from = start if effective_from is None else max(effective_from, start)
        try:
            # Runs genai-prices' own checks of the price set (which do not depend on the usage).
            with localcontext(CONTEXT):
                resolved.calc_price(genai_types.Usage(input_tokens=0, output_tokens=0))
        except ValueError as error:
            self.refused(error)
            return _Plan(valid=False, fast=None, effective_from=effective_from)
        return _Plan(valid=True, fast=_FastPrices.of(resolved), effective_from=effective_from)

    def tier_unpriced(self, tier: str) -> None:
        """Logs, the first time only for ``tier``, that genai-prices has no price of it. Call under the table's lock."""
        if tier in self.unpriced_tiers:
            return
        self.unpriced_tiers.add(tier)
        logger.warning(
            "genai-prices %s has no price for %s at %s served at service tier %r; recording it unpriced",
            GENAI_PRICES_VERSION,
            self.model.id,
            self.provider.id,
            tier,
        )

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
    # genai-prices' input_tokens is the total, like prompt_tokens: cache reads and writes are part of it, and audio
    # tokens too (given only when there are some: a count of 0 beside cache reads is one genai-prices refuses for
    # a model with an audio cache-read price, asking which of the reads were audio).
    audio = {
        key: count
        for key, count in (
            ("input_audio_tokens", usage.input_audio_tokens),
            ("output_audio_tokens", usage.output_audio_tokens),
        )
        if count
    }
    return genai_types.Usage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cache_read_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        **audio,
    )


class GenaiPrices:
    """genai-prices' prices for a :class:`~autogen_reliability.accounting.PricingTable`, its lookups cached.

    Made on the thread that makes the table: the bundled data is loaded there. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lookups: OrderedDict[tuple[str, str | None], object] = OrderedDict()
        self._snapshot = data_snapshot.get_snapshot()
        self.source = _SOURCE
        """``"genai-prices <version>"``, as a :class:`Cost` from the bundled data names it."""

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
        entry = _find(snapshot, model, provider)
        if entry is None and "/" in model:
            # A gateway's name for a model, its provider first (LiteLLM's proxy: "openai/gpt-4o-mini",
            # "bedrock/anthropic.claude-..."): the provider's model, at the provider's price. Only a prefix
            # genai-prices knows as a provider: "meta-llama/llama-3.1-8b" is a model's own name, served anywhere.
            prefix, name = model.split("/", 1)
            prefix = _GATEWAY_PROVIDERS.get(prefix, prefix)
            known = {found.id for found in snapshot.providers}
            # Only behind a gateway: a host genai-prices knows (Together, Groq, OpenRouter) bills its own models
            # at its own prices, and "google/gemma-3-27b-it" there is not Google's gemma-3 at Google's price.
            gateway = provider is None or provider in _GATEWAY_APIS or provider == prefix or provider not in known
            if name and gateway and prefix in known:
                entry = _find(snapshot, name, prefix)
        with self._lock:
            # Misses are cached too: genai-prices scans every model of the provider for each one.
            self._lookups[key] = entry
            if len(self._lookups) > _LOOKUP_CACHE_SIZE:
                self._lookups.popitem(last=False)
        return entry

    def knows(self, model: str, provider: str | None) -> bool:
        """Whether genai-prices' data has ``model`` (lower case) at ``provider`` (normalised, or None)."""
        return self._lookup(data_snapshot.get_snapshot(), model, provider) is not None

    def price(
        self, model: str, provider: str | None, usage: TokenUsage, when: datetime, service_tier: str | None = None
    ) -> Cost | None:
        """The cost of ``usage`` for ``model`` (lower case) at ``provider`` (normalised, or None) at ``when`` (UTC),
        served at ``service_tier`` (None: the standard tier)."""
        snapshot = data_snapshot.get_snapshot()
        entry = self._lookup(snapshot, model, provider)
        if entry is None:
            return None
        # Chosen per call, not cached per day: some prices depend on the time of day (DeepSeek's off-peak hours).
        model_price = entry.model.get_prices(when)
        variants: tuple[genai_types.PriceVariant, ...] = ()
        if service_tier is not None:
            found = entry.tier_variants(service_tier, when)
            if found is None:
                with self._lock:
                    entry.tier_unpriced(service_tier)
                return None
            variants = found
        with self._lock:
            plan = entry.plan(model_price, variants, when, service_tier)
        if not plan.valid:
            return None
        with localcontext(CONTEXT):
            if plan.fast is not None and plan.fast.prices(usage):
                usd = plan.fast.usd(usage)
            else:
                try:
                    # A price our calculation does not follow (per request, per reasoning token, audio tokens at
                    # an audio price): genai-prices' own, the one its calc_price() makes once it has found the model.
                    usd = entry.model.calc_price(
                        _genai_usage(usage),
                        entry.provider,
                        genai_request_timestamp=when,
                        price_context={"service_tier": service_tier} if variants and service_tier else None,
                    ).total_price
                except ValueError as error:  # genai-prices finds this usage or price set inconsistent
                    with self._lock:
                        entry.refused(error)
                    return None
        source = _SOURCE
        if snapshot.from_auto_update:  # the application updated the data itself; say from when
            source += f" (data of {snapshot.timestamp.isoformat(timespec='seconds')})"
        return cost_of(usd, source, plan.effective_from, entry.model.id, entry.provider.id)
