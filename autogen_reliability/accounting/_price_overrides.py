"""Price overrides: the file format, its pydantic model, and the table a :class:`PricingTable` reads.

For the models it lists (with their provider, if the entry names one) the
override table is authoritative: a request dated before every
``effective_from`` of a listed model is *unpriced*, genai-prices is not asked.

Override format
---------------

Prices are USD **per million tokens** (``input``, ``output``, ``cached_input``,
``cache_write``, ``cache_write_1h``) or USD **per second** of request latency (``per_second``, for
self-hosted models priced by compute time). Numbers may be written as strings
or numbers; they are read as exact decimals, never through a binary float
(TOML and JSON files are parsed with ``parse_float=Decimal``)::

    [models."gpt-4o-mini"]
    input = "0.15"
    output = "0.60"
    cached_input = "0.075"          # optional; cache reads cost `input` without it
    cache_write = "0.1875"          # optional; cache writes cost `input` without it
    cache_write_1h = "0.30"         # optional; 1-hour cache writes cost `cache_write` without it
    provider = "openai"             # optional: the entry only matches this provider

    [[models."acme-llm".prices]]    # dated prices: each in force from its date (UTC)
    effective_from = 2026-01-01     #   until the next one
    input = 1
    output = 2
    [[models."acme-llm".prices]]
    effective_from = 2026-07-01
    input = "0.8"
    output = "1.6"

    [models."llama3.1:8b"]          # self-hosted: free (a known price of $0, not "unpriced")
    input = 0
    output = 0

    [models."local-gpu-model"]      # self-hosted, priced by compute time
    per_second = "0.0004"

    [[models."gpt-4o"]]             # one model, a different price per provider:
    provider = "openai"             #   a list of entries, one per provider
    input = "2.50"
    output = "10"
    [[models."gpt-4o"]]
    provider = "azure"
    input = "2.75"
    output = "11"

The same as JSON (dates as ``"YYYY-MM-DD"`` strings)::

    {"models": {"gpt-4o-mini": {"input": "0.15", "output": "0.60", "provider": "openai"},
                "acme-llm": {"prices": [{"effective_from": "2026-01-01", "input": 1, "output": 2}]},
                "local-gpu-model": {"per_second": "0.0004"}}}

Rules, checked when the table is built by the pydantic model :class:`PriceOverrides`
(``extra="forbid"``). A violation raises
:class:`~autogen_reliability._errors.ConfigurationError` naming the file (when
there is one), where in it (``models."m".prices[0].input``) and why, e.g.
``pricing file 'prices.toml': models."m".input: Input should be greater than or
equal to 0``. Every problem is listed, never a value from the file (only its
keys), and the error is raised without the pydantic error chained to it (whose
text would repeat the values).

- The top level has one key, ``models``. Model names match case-insensitively
  (as genai-prices matches them), so two names differing only in case clash.
  No key may be given twice in one table or object (TOML's parser refuses it;
  JSON's would keep the last, so a JSON file is read refusing it too).
- An entry has either token prices (``input`` and ``output`` both required,
  ``cached_input``, ``cache_write`` and ``cache_write_1h`` optional) or ``per_second``, not both,
  not neither; or a non-empty ``prices`` list of such rates, each with an
  ``effective_from`` date, no two on the same date. Unknown keys, negative,
  non-finite or unparsable numbers are errors. ``0`` is a valid price; the
  highest is the one at which a token (or a second) costs what a usage row
  holds, 2**63 - 1 nano-USD (9223372036854775.807 USD per million tokens,
  9223372036.854775807 USD per second).
- An entry with ``provider`` matches requests for that provider only (compared
  case-insensitively); an entry without one matches any provider. When both
  exist for a model, the provider's own entry wins. A request whose provider
  matches no entry of the model falls through to genai-prices.

How usage is priced by an override: of ``prompt_tokens``, ``cached_tokens`` cost
``cached_input`` and ``cache_write_tokens`` cost ``cache_write`` (each ``input``
when absent), the rest ``input``; of ``cache_write_tokens``, the
``cache_write_1h_tokens`` (Anthropic's 1-hour cache writes) cost
``cache_write_1h`` when it is given, else what the other cache writes cost, as
genai-prices prices a model without a 1-hour price (an override that leaves it
out prices Anthropic's 1-hour writes at the 5-minute rate: give it, twice
``input`` for Anthropic's models, to price them as billed);
``completion_tokens`` cost ``output``. A
``per_second`` price is multiplied by ``latency_seconds``; without a latency the
request is unpriced.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from .._errors import ConfigurationError
from ._cost import MAX_COST_NANOUSD

__all__ = ["Override", "OverrideTable", "PriceOverrides", "Rate", "overrides_from_file", "overrides_from_mapping"]

_TOKEN_KEYS: Final = ("input", "output", "cached_input", "cache_write", "cache_write_1h")
_MAX_LISTED_ERRORS: Final = 10


# --------------------------------------------------------------------------------------------------
# What the table holds
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """Prices in force from ``effective_from`` (``None``: always) until the next rate of the entry.

    Either ``per_second``, or ``input`` and ``output`` (``cached_input``, ``cache_write`` and
    ``cache_write_1h`` optional): the model guarantees it.
    """

    effective_from: date | None
    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    per_second: Decimal | None = None
    cache_write_1h: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Override:
    """One entry of a model: the prices of ``model`` (at ``provider``, or at any provider when ``None``)."""

    model: str  # as the overrides spell it; Cost.model names it so
    provider: str | None  # lower case
    rates: tuple[Rate, ...]  # ascending effective_from; a single undated rate otherwise

    def rate_on(self, day: date) -> Rate | None:
        """The rate in force on ``day``; ``None`` before the first one."""
        found: Rate | None = None
        for rate in self.rates:
            if rate.effective_from is None or rate.effective_from <= day:
                found = rate
            else:
                break
        return found


OverrideTable = dict[str, dict[str | None, Override]]
"""Model name (stripped, lower case) -> provider (lower case, ``None``: any) -> its entry."""


# --------------------------------------------------------------------------------------------------
# The file's model
# --------------------------------------------------------------------------------------------------


def _not_negative_zero(value: Decimal) -> Decimal:
    return value.copy_abs() if value.is_zero() else value  # "-0" is a price of 0


def _date_only(value: object) -> object:
    # datetime is a subclass of date: a TOML date-time must not pass as a date. Strings are read as
    # date.fromisoformat reads them; pydantic's own date parsing would also take a unix timestamp.
    if isinstance(value, datetime):
        raise PydanticCustomError("date_type", "expected a date (YYYY-MM-DD), got a date-time")
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise PydanticCustomError("date_parsing", "expected a date (YYYY-MM-DD)") from None
    return value


# The most one usage row holds (cost_nanousd is a BIGINT): a price at which one token, or one second, costs
# more would have the database refuse every row it priced (and past the decimal context's range, pricing
# itself raised Overflow), so such a price, surely a typo, is refused with the file.
_MOST_PER_TOKEN: Final = Decimal(MAX_COST_NANOUSD).scaleb(-9 + 6)  # USD per million tokens
_MOST_PER_SECOND: Final = Decimal(MAX_COST_NANOUSD).scaleb(-9)


def _at_most(most: Decimal, unit: str) -> AfterValidator:
    def check(value: Decimal) -> Decimal:
        if value > most:
            raise PydanticCustomError(
                "price_too_high",
                "more than {most} USD per {unit}: one {one} would cost more than a usage row holds",
                {"most": f"{most:f}", "unit": unit, "one": unit.removeprefix("million ").removesuffix("s")},
            )
        return value

    return AfterValidator(check)


# Python floats are read by their repr (0.1 is 0.1, not 0.1000000000000000055...), strings stripped;
# booleans, NaN and infinities are refused.
_Price = Annotated[Decimal, Field(ge=0), AfterValidator(_not_negative_zero)]
_TokenPrice = Annotated[_Price, _at_most(_MOST_PER_TOKEN, "million tokens")]
_SecondPrice = Annotated[_Price, _at_most(_MOST_PER_SECOND, "second")]
_Day = Annotated[date, Strict(), BeforeValidator(_date_only)]
_Provider = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1)]


class _RateFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: _TokenPrice | None = None
    output: _TokenPrice | None = None
    cached_input: _TokenPrice | None = None
    cache_write: _TokenPrice | None = None
    cache_write_1h: _TokenPrice | None = None
    per_second: _SecondPrice | None = None

    def _check_rate(self) -> None:
        tokens = [key for key in _TOKEN_KEYS if getattr(self, key) is not None]
        if self.per_second is not None:
            if tokens:
                raise PydanticCustomError(
                    "rate_kind",
                    "a rate is per token or per second, not both (per_second and {key})",
                    {"key": tokens[0]},
                )
            return
        if not tokens:
            raise PydanticCustomError("rate_missing", "has neither token prices (input, output) nor per_second")
        for required in ("input", "output"):
            if getattr(self, required) is None:
                raise PydanticCustomError(
                    "rate_missing", "{key} missing: token prices need both input and output", {"key": required}
                )

    def _rates_given(self) -> list[str]:
        return [key for key in (*_TOKEN_KEYS, "per_second") if getattr(self, key) is not None]

    def rate(self, effective_from: date | None) -> Rate:
        return Rate(
            effective_from,
            input=self.input,
            output=self.output,
            cached_input=self.cached_input,
            cache_write=self.cache_write,
            cache_write_1h=self.cache_write_1h,
            per_second=self.per_second,
        )


class _DatedRate(_RateFields):
    """One of a model's ``prices``: a rate and the day it takes effect."""

    effective_from: _Day

    @model_validator(mode="after")
    def _a_rate(self) -> Self:
        self._check_rate()
        return self


class _Entry(_RateFields):
    """A model's prices: a rate, or dated ``prices``; for one ``provider`` or for any."""

    provider: _Provider | None = None
    prices: Annotated[list[_DatedRate], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _a_rate_or_dated_prices(self) -> Self:
        if self.prices is None:
            self._check_rate()
            return self
        if flat := self._rates_given():
            raise PydanticCustomError(
                "rate_twice",
                "give prices either on the model or in its `prices` list, not both (also has {key})",
                {"key": flat[0]},
            )
        for earlier, later in itertools.pairwise(sorted(rate.effective_from for rate in self.prices)):
            if earlier == later:
                raise PydanticCustomError(
                    "rate_date_twice",
                    "two prices take effect on {day}: which one applies is ambiguous",
                    {"day": later.isoformat()},
                )
        return self

    def rates(self) -> tuple[Rate, ...]:
        if self.prices is None:
            return (self.rate(None),)
        return tuple(sorted((dated.rate(dated.effective_from) for dated in self.prices), key=_effective_from))


def _effective_from(rate: Rate) -> date:
    return rate.effective_from or date.min


def _one_per_provider(entries: list[_Entry]) -> list[_Entry]:
    seen: set[str | None] = set()
    for entry in entries:
        if entry.provider in seen:
            which = f"provider {entry.provider!r}" if entry.provider else "no provider"
            raise PydanticCustomError("provider_twice", "two entries for {which}", {"which": which})
        seen.add(entry.provider)
    return entries


def _shape(value: object) -> str | None:
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return "list"
    return None


# A model's value is a table (one entry) or a list of them. The tag names the branch in pydantic's error
# locations (("models", name, tag, ...)); _location leaves it out.
_SHAPES: Final = frozenset({"table", "list"})
_ModelPrices = Annotated[
    Annotated[_Entry, Tag("table")]
    | Annotated[list[_Entry], Field(min_length=1), AfterValidator(_one_per_provider), Tag("list")],
    Discriminator(
        _shape, custom_error_type="model_shape", custom_error_message="expected a table of prices or a list of them"
    ),
]


class PriceOverrides(BaseModel):
    """The price overrides file (see the module documentation): ``{"models": {name: entry or [entries]}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, _ModelPrices] = {}

    @field_validator("models")
    @classmethod
    def _names_differ_ignoring_case(cls, models: dict[str, _Entry | list[_Entry]]) -> dict[str, _Entry | list[_Entry]]:
        spelled: dict[str, str] = {}
        for name in models:
            folded = name.strip().lower()
            if not folded:
                raise PydanticCustomError("model_name", "model names must not be empty")
            if folded in spelled:
                raise PydanticCustomError(
                    "model_twice",
                    "{name} is listed twice (also as {other}; names match ignoring case)",
                    {"name": repr(name), "other": repr(spelled[folded])},
                )
            spelled[folded] = name
        return models

    def table(self) -> OverrideTable:
        """The overrides by model name (stripped, lower case), then by provider."""
        table: OverrideTable = {}
        for name, value in self.models.items():
            entries = value if isinstance(value, list) else [value]
            table[name.strip().lower()] = {
                entry.provider: Override(name, entry.provider, entry.rates()) for entry in entries
            }
        return table


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def overrides_from_mapping(data: Mapping[str, Any], *, source: str = "pricing overrides") -> OverrideTable:
    """The override table ``data`` describes.

    Raises:
        ConfigurationError: ``data`` breaks a rule; the message starts with ``source``.
    """
    try:
        overrides = PriceOverrides.model_validate(data)
    except ValidationError as error:
        # Not chained: a ValidationError's text repeats the values it was given.
        raise ConfigurationError(
            f"{source}: {_problems(error.errors(include_url=False, include_input=False))}"
        ) from None
    return overrides.table()


def overrides_from_file(path: Path) -> OverrideTable:
    """The override table of a ``.toml`` or ``.json`` file.

    Raises:
        ConfigurationError: The file cannot be read or parsed, or breaks a rule; the message names the file.
    """
    source = f"pricing file {str(path)!r}"
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigurationError(f"{source}: expected a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write, is not part of the text
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{source}: cannot be read: {error}") from error
    try:
        # parse_float=Decimal: 0.15 in the file stays exactly 0.15.
        data: object = (
            tomllib.loads(text, parse_float=Decimal)
            if suffix == ".toml"
            else json.loads(text, parse_float=Decimal, object_pairs_hook=_object_of_unique_keys)
        )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, _DuplicateKeyError) as error:
        raise ConfigurationError(f"{source}: not valid {suffix[1:].upper()}: {error}") from error
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{source}: expected a table/object at the top level")
    return overrides_from_mapping(data, source=source)


class _DuplicateKeyError(ValueError):
    """A JSON object of the overrides gives a key twice (TOML's parser refuses that itself)."""


def _object_of_unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of a repeated key: a model listed twice would get its second price silently.
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKeyError(f"the key {json.dumps(key, ensure_ascii=False)} appears twice in one object")
        found[key] = value
    return found


def _problems(errors: Sequence[ErrorDetails]) -> str:
    # Where and why only: `msg` never holds the input, and include_input=False leaves it out of the rest.
    listed = [f"{_location(error['loc'])}: {_reason(error)}" for error in errors[:_MAX_LISTED_ERRORS]]
    if len(errors) > _MAX_LISTED_ERRORS:
        listed.append(f"and {len(errors) - _MAX_LISTED_ERRORS} more")
    return "; ".join(listed)


def _reason(error: ErrorDetails) -> str:
    if error["type"] == "model_type":  # pydantic's words name our private class: "... or instance of _Entry"
        return "expected a table"
    return error["msg"]


def _location(loc: tuple[int | str, ...]) -> str:
    """``('models', 'gpt-4o', 'list', 1, 'prices', 0, 'input')`` -> ``models."gpt-4o"[1].prices[0].input``.

    Model names are quoted as TOML and JSON quote them; ``<top level>`` for the whole document.
    """
    text = ""
    for position, part in enumerate(loc):
        if position == 2 and loc[0] == "models" and part in _SHAPES:
            continue  # the branch of a model's value, table or list: not a key of the file
        if isinstance(part, int):
            text += f"[{part}]"
        elif position == 1 and loc[0] == "models":
            text += "." + json.dumps(part, ensure_ascii=False)
        elif part == "[key]":
            text += " (the name)"
        else:
            text += f".{part}" if text else part
    return text or "<top level>"
