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

genai-prices is imported only when a table that falls back to it is made
(``_genai_pricing.py``, which computes its prices and says how that was
measured); :class:`TokenUsage`, :class:`Cost` and the nano-USD arithmetic are in
``_cost.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .._errors import ConfigurationError
from ._cost import CONTEXT, PER_MILLION, Cost, TokenUsage, cost_of, nanousd_to_usd

if TYPE_CHECKING:
    from ._genai_pricing import GenaiPrices
    from ._price_overrides import Override, OverrideTable, Rate

__all__ = ["Cost", "PricingTable", "TokenUsage", "nanousd_to_usd"]

_OVERRIDE_SOURCE: Final = "override"
# The names an answer gives the standard tier (OpenAI's "default", Anthropic's "standard"), and the value a request
# asks for that some servers echo: priced at the standard price. So are None and "".
STANDARD_TIERS: Final = frozenset({None, "", "default", "standard", "auto"})


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
    # Without a 1-hour price, 1-hour writes cost what the other writes cost, as genai-prices prices them.
    write_1h_price = write_price if rate.cache_write_1h is None else rate.cache_write_1h
    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
    return (
        rate.input * uncached
        + cached_price * usage.cached_tokens
        + write_price * (usage.cache_write_tokens - usage.cache_write_1h_tokens)
        + write_1h_price * usage.cache_write_1h_tokens
        + rate.output * usage.completion_tokens
    ) / PER_MILLION


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
            # The overrides' parser (pydantic models, tomllib) loads only for a table that has some.
            from ._price_overrides import overrides_from_file  # noqa: PLC0415

            self._overrides = overrides_from_file(Path(overrides))
        elif isinstance(overrides, Mapping):
            from ._price_overrides import overrides_from_mapping  # noqa: PLC0415

            self._overrides = overrides_from_mapping(overrides)
        else:
            raise ConfigurationError(
                f"pricing overrides: expected a mapping or a file path, got {type(overrides).__name__}"
            )
        self._genai: GenaiPrices | None = None
        if use_genai_prices:
            # genai-prices and its data are imported now, on the constructing thread (see _genai_pricing).
            from ._genai_pricing import GenaiPrices  # noqa: PLC0415 - ~0.1 s, only for a table that uses it

            self._genai = GenaiPrices()

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
        source = self._genai.source if self._genai is not None else "no fallback"
        return f"PricingTable({len(self._overrides)} overridden model(s), then {source})"

    def price(
        self,
        model: str,
        provider: str | None = None,
        *,
        usage: TokenUsage,
        at: datetime | None = None,
        service_tier: str | None = None,
    ) -> Cost | None:
        """The cost of a request to ``model`` that used ``usage``, at the prices in force at ``at``.

        Args:
            model: The model id as sent to the provider (matched case-insensitively).
            provider: The provider id (``"openai"``, ``"azure"``, ``"anthropic"``, ...; see
                :func:`infer_provider`), or ``None`` to let genai-prices infer it from the model.
            usage: The tokens (and latency) to price.
            at: When the request started; naive means UTC. Default: now.
            service_tier: The service tier the provider says served the request (OpenAI's answer's
                ``service_tier``: ``"flex"``, ``"priority"``, ...), priced at that tier's price where
                genai-prices has one. None, ``"default"``, ``"standard"`` or ``"auto"``: the standard price.

        Returns:
            The cost, or ``None`` when the model has no price (for this provider, at that time, or
            without a latency for a per-second price). Never raises for an unknown model.

        Example:
            >>> table = PricingTable()
            >>> usage = TokenUsage(prompt_tokens=2000, completion_tokens=100, cached_tokens=1024)
            >>> table.price("gpt-4o", "openai", usage=usage, at=datetime(2025, 6, 1, tzinfo=UTC)).usd
            Decimal('0.00472')
            >>> flex = table.price("gpt-5-mini", "openai", usage=usage, at=datetime(2026, 11, 1, tzinfo=UTC),
            ...                    service_tier="flex")
            >>> flex.usd, table.price("gpt-5-mini", "openai", usage=usage, at=datetime(2026, 11, 1, tzinfo=UTC)).usd
            (Decimal('0.0002348'), Decimal('0.0004696'))
        """
        if not model:
            return None
        tier = None if service_tier in STANDARD_TIERS else service_tier
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
        if self._genai is None:
            return None
        return self._genai.price(model_key, provider_key, usage, when, tier)

    def knows(self, model: str, provider: str | None = None) -> bool:
        """Whether the table has a price of ``model`` (at ``provider``) at all, at whatever date or tier.

        An override that lists it for that provider (or for any), or genai-prices' data, as :meth:`price`
        looks it up. A model it knows may still be unpriced on a given day, at a tier, or without a latency.

        Example:
            >>> PricingTable().knows("gpt-4o", "azure"), PricingTable().knows("my-gpt4o-prod", "azure")
            (True, False)
        """
        if not model:
            return False
        provider_key = _normalise_provider(provider)
        model_key = model.strip().lower()
        entries = self._overrides.get(model_key)
        if entries is not None and (None in entries or (provider_key is not None and provider_key in entries)):
            return True
        return self._genai is not None and self._genai.knows(model_key, provider_key)

    @staticmethod
    def _price_override(override: Override, provider: str | None, usage: TokenUsage, day: date) -> Cost | None:
        rate = override.rate_on(day)
        if rate is None:  # before the model's first price: authoritative, so unpriced
            return None
        with localcontext(CONTEXT):
            usd = _override_usd(rate, usage)
        if usd is None:
            return None
        return cost_of(usd, _OVERRIDE_SOURCE, rate.effective_from, override.model, override.provider or provider)
