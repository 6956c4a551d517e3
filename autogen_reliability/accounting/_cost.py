"""What a priced request is: :class:`TokenUsage` in, :class:`Cost` out, and the arithmetic of nano-USD.

Shared by the override prices (``_price_table.py``) and genai-prices' (``_genai_pricing.py``),
which is imported only when a table that uses genai-prices is made.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final

__all__ = [
    "CONTEXT",
    "MAX_COST_NANOUSD",
    "MAX_TOKENS",
    "PER_MILLION",
    "Cost",
    "TokenUsage",
    "cost_of",
    "nanousd_to_usd",
]

# Enough digits that no realistic price x token count is ever rounded before the one final rounding.
CONTEXT: Final = Context(prec=50, rounding=ROUND_HALF_EVEN)
"""The decimal context every price is computed in (50 digits, half-even)."""
PER_MILLION: Final = Decimal(1_000_000)
_NANO_PER_USD: Final = Decimal(1_000_000_000)
MAX_COST_NANOUSD: Final = 2**63 - 1
"""The largest cost the usage ledger holds in a row, in nano-USD (a BIGINT column)."""
MAX_TOKENS: Final = 2**31 - 1
"""The largest token count the usage ledger holds: its token columns are INTEGER, 32-bit on PostgreSQL.

Two billion tokens in one request is far past any model's context, so a larger count is a provider's
garbage (an unsigned -1, say): the provider tap and the accounting layer read it as not reported, and
the row's tokens are estimated, rather than the row being refused by one backend and kept by the other.
"""
_MOST_PRICED: Final = 2**63 - 1
"""The largest count :class:`TokenUsage` prices (a month's usage may be priced at once, past what one row holds)."""
_LARGEST_FLOAT: Final = sys.float_info.max


def nanousd_to_usd(nanousd: int | None) -> Decimal:
    """Exact USD of an integer count of nano-USD, the ledger's unit (None, nothing priced: 0)."""
    # In CONTEXT, not the caller's decimal context, which an application may have set to a few digits.
    return CONTEXT.divide(Decimal(nanousd), _NANO_PER_USD) if nanousd else Decimal(0)


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
        cache_write_1h_tokens: Of ``cache_write_tokens``, those written with a 1-hour lifetime
            (Anthropic's ``cache_creation.ephemeral_1h_input_tokens``), priced at the model's 1-hour
            cache-write price where it has one; the rest are 5-minute writes.
        input_audio_tokens: Of ``prompt_tokens``, those of audio (OpenAI's
            ``prompt_tokens_details.audio_tokens``), priced at the model's audio input price where it
            has one, else as the other prompt tokens.
        output_audio_tokens: Of ``completion_tokens``, those of audio (OpenAI's
            ``completion_tokens_details.audio_tokens``), priced at the model's audio output price where
            it has one, else as the other completion tokens.

    Raises:
        ValueError: A count is negative, above 2**63 - 1 or not an int, cached
            plus cache-write tokens exceed ``prompt_tokens``, 1-hour cache writes exceed
            ``cache_write_tokens``, audio tokens exceed the prompt or completion tokens they are
            part of, or the latency is negative or not finite.

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
    # After latency_seconds: a TokenUsage made with positional arguments means what it meant before.
    cache_write_1h_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0

    def __post_init__(self) -> None:
        # Made for every priced attempt: the common case (ints in range, a float latency) is checked without a call;
        # anything else is judged in full.
        for value in (
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
            self.cache_write_1h_tokens,
            self.input_audio_tokens,
            self.output_audio_tokens,
        ):
            if type(value) is not int or not 0 <= value <= _MOST_PRICED:
                self._check_counts()
                break
        if self.cached_tokens + self.cache_write_tokens > self.prompt_tokens:
            raise ValueError(
                f"TokenUsage: cached_tokens ({self.cached_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) exceed prompt_tokens ({self.prompt_tokens}); "
                "prompt_tokens must count every input token, cached ones included"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ValueError(
                f"TokenUsage: cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed cache_write_tokens "
                f"({self.cache_write_tokens}); cache_write_tokens must count every cache write, 1-hour ones included"
            )
        if self.input_audio_tokens > self.prompt_tokens or self.output_audio_tokens > self.completion_tokens:
            raise ValueError(
                f"TokenUsage: input_audio_tokens ({self.input_audio_tokens}) or output_audio_tokens "
                f"({self.output_audio_tokens}) exceed the prompt_tokens ({self.prompt_tokens}) or "
                f"completion_tokens ({self.completion_tokens}) they are part of"
            )
        latency = self.latency_seconds
        if latency is not None and not (type(latency) is float and 0.0 <= latency <= _LARGEST_FLOAT):
            self._check_latency()

    def _check_counts(self) -> None:
        for name in (
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "input_audio_tokens",
            "output_audio_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MOST_PRICED:
                raise ValueError(f"TokenUsage.{name} must be a non-negative int <= 2**63 - 1, got {value!r}")

    def _check_latency(self) -> None:
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


def cost_of(usd: Decimal, source: str, effective_from: date | None, model: str, provider: str | None) -> Cost:
    """The :class:`Cost` of ``usd``, rounded once, half-even, to integer nano-USD."""
    # The context's own arithmetic (50 digits, half-even), not a localcontext(): this runs for every row.
    nanousd = int(CONTEXT.to_integral_value(CONTEXT.multiply(usd, _NANO_PER_USD)))
    return Cost(nanousd=nanousd, usd=usd, source=source, effective_from=effective_from, model=model, provider=provider)
