"""The bounds of a report's period as people write them: ``2025-05-01``, an instant with its offset, ``7d``.

One reading for every front end that takes a period as text: the command line
(``--since 7d``) and the usage routes of ``autogen_reliability.fastapi``
(``?since=7d``). A time ago comes back as the ``timedelta`` so that the caller
resolves every bound of one request against one reading of the clock
(:func:`resolve_time`).

Example:
    >>> from datetime import UTC, datetime
    >>> parse_time("2025-05-01")
    datetime.datetime(2025, 5, 1, 0, 0, tzinfo=datetime.timezone.utc)
    >>> resolve_time(parse_time("7d"), datetime(2025, 5, 8, tzinfo=UTC))
    datetime.datetime(2025, 5, 1, 0, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

from .._errors import ConfigurationError
from .._redaction import quoted

__all__ = ["bound_text", "parse_duration", "parse_time", "resolve_time"]

# ASCII digits: \d would take any script's (a full-width 1, U+FF11), which nobody means as a number here.
_DURATION: Final = re.compile(r"([0-9]+)([hdw])")
_UNITS: Final = {"h": "hours", "d": "days", "w": "weeks"}
# Twelve digits of hours are already more than the 10,000 years a datetime spans; a longer number
# is refused before int() reads it (which refuses past 4,300 digits, and is slow well before).
_MAX_DIGITS: Final = 12


def parse_duration(text: str) -> timedelta:
    """A whole number of hours, days or weeks (``24h``, ``90d``, ``2w``), above zero.

    Raises:
        ConfigurationError: Anything else, with the reason.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigurationError(f"{quoted(text)} is not a duration such as 24h, 90d or 2w")
    number, unit = match.groups()
    number = number.lstrip("0") or "0"
    too_long = ConfigurationError(f"{quoted(text)} is longer than any date can go back")
    if len(number) > _MAX_DIGITS:
        raise too_long
    try:
        duration = timedelta(**{_UNITS[unit]: int(number)})
    except OverflowError:
        raise too_long from None
    if not duration:
        raise ConfigurationError(f"{quoted(text)} is no time at all; give a duration above zero, such as 90d")
    return duration


def parse_time(text: str) -> datetime | timedelta:
    """A point in time: a date, a date and time with its UTC offset, or a time ago.

    ``2025-05-01`` is that day's midnight UTC; ``2025-05-01T09:30:00+02:00`` (or
    ``...Z``) is that instant, which must carry its UTC offset; ``7d``, ``24h``,
    ``2w`` are that long before now, returned as the ``timedelta``.

    Raises:
        ConfigurationError: Anything else, a date and time without an offset (the ledger is in UTC,
            the writer's clock may not be: refused rather than guessed at), or one that is outside
            the years 1 to 9999 once in UTC.
    """
    text = text.strip()
    if _DURATION.fullmatch(text):
        return parse_duration(text)
    try:
        return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"{quoted(text)} is not a date (2025-05-01), a date and time with its UTC offset "
            "(2025-05-01T09:30:00+02:00) or a time ago (24h, 7d, 2w)"
        ) from None
    if moment.utcoffset() is None:
        raise ConfigurationError(
            f"{quoted(text)} has no UTC offset; add one (Z for UTC, or +02:00): the ledger's times are UTC"
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # in range as written, not once moved to UTC: the year 1 at +05:00
        raise ConfigurationError(f"{quoted(text)} is outside the years 1 to 9999 once in UTC") from None


def resolve_time(value: datetime | timedelta | None, now: datetime) -> datetime | None:
    """What :func:`parse_time` gave, as an instant: a time ago is taken from ``now``.

    Raises:
        ConfigurationError: The time ago reaches before the year 1.
    """
    if not isinstance(value, timedelta):
        return value
    try:
        return now - value
    except OverflowError:
        raise ConfigurationError(f"{value.days} days before now is before the year 1") from None


def bound_text(value: datetime, *, seconds: bool = False) -> str:
    """A bound of a period as shown, in UTC, down to its last part that is not zero.

    So the period shown is the period used, and a common one stays short: ``2025-05-01`` (its
    midnight), ``2025-05-01 09:30``, ``2025-05-01 09:30:15``, ``2025-05-01 00:00:00.5``. With
    ``seconds``, never less than to the second (``2025-05-01 00:00:00``).

    Example:
        >>> bound_text(datetime(2025, 5, 1, 0, 0, 0, 500_000, tzinfo=UTC))
        '2025-05-01 00:00:00.5'
    """
    value = value.astimezone(UTC)
    if value.microsecond:
        return f"{value:%Y-%m-%d %H:%M:%S}.{value.microsecond:06d}".rstrip("0")
    if seconds or value.second:
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if value.time() == time(0, 0):
        return value.date().isoformat()
    return f"{value:%Y-%m-%d %H:%M}"
