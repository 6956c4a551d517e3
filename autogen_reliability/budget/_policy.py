"""``BudgetPolicy``: how much a project, session or agent may spend in a period, and what happens at the limit.

The policy is plain configuration, validated at construction; the spend it is
compared with is kept by :mod:`._tracker` and the check runs in
:class:`~._layer.BudgetLayer`. Money is exact: the limit is a ``Decimal`` and
is compared in integer nano-USD with the ledger's ``cost_nanousd``.

Periods are UTC: a ``"day"`` starts at midnight UTC, a ``"week"`` on Monday
(ISO weeks), a ``"month"`` on the first; ``None`` counts all time.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as midnight_time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from .._errors import (
    ConfigurationError,
    check_clock,
    config_options,
    describe_budget_key,
    describe_period,
    format_usd,
    is_finite,
    shown_number,
)
from .._redaction import QUOTED_LIMIT, masked_repr
from ..accounting._cost import CONTEXT

if TYPE_CHECKING:
    from sqlalchemy import URL

    from ..storage._store import UsageStore

__all__ = [
    "MAX_LIMIT_USD",
    "BudgetAlert",
    "BudgetPolicy",
    "Period",
    "Scope",
    "exact_decimal",
    "limit_nanousd",
    "log_budget_alert",
    "period_bounds",
    "whole_nanousd",
]

logger = logging.getLogger("autogen_reliability")

Period = Literal["day", "week", "month"]
Scope = Literal["project", "session", "agent"]
OnExceed = Literal["raise", "warn"]

MAX_LIMIT_USD: Final = Decimal(10**12)
"""The largest spending limit (a budget's, a ``CostTermination``'s): above it a limit stops nothing, so one
is a typo ("1e99"), and refusing it keeps a number of a billion digits away from the nano-USD conversion."""
DEFAULT_REFRESH: Final = 5.0
MAX_REFRESH: Final = 3600.0
_EARLIEST_CLOCK: Final = 946684800.0  # 2000-01-01 00:00 UTC: a clock below it is not seconds since the epoch
_PERIODS: Final = (*get_args(Period), None)
_SCOPES: Final = get_args(Scope)
_ON_EXCEED: Final = get_args(OnExceed)


def exact_decimal(name: str, value: object, *, what: str = "an amount in USD") -> Decimal:
    """``value`` as an exact Decimal; a float is read as the decimal it prints as (``0.1`` is ``Decimal("0.1")``).

    ``what`` the number is, for the error that refuses it.
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a number ({what}), got bool")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        # str() of a float is the shortest decimal that reads back as it: what was written, not its binary value.
        number = Decimal(str(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ConfigurationError(f"{name} must be a decimal number ({what}), got {value!r}") from None
    else:
        raise ConfigurationError(f"{name} must be a Decimal, an int or a decimal string, got {type(value).__name__}")
    if not number.is_finite():
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return number


def whole_nanousd(usd: Decimal) -> int | None:
    """``usd`` (finite) as a whole number of nano-USD, the ledger's unit; None when it is finer than that.

    In integers, not in a decimal context that could round: the amount is coefficient x 10^exponent USD.
    The caller bounds the amount from above (:data:`MAX_LIMIT_USD`): ``1e999999999`` has a billion digits.
    """
    sign, digits, exponent = usd.as_tuple()
    coefficient, shift = int("".join(map(str, digits))), int(exponent) + 9
    if -shift > len(digits):
        # Fewer digits than the division removes: a fraction of a nano-USD, or zero. Decided here, since
        # 10 ** 999999990 (for "1e-999999999") would take minutes to compute.
        return None if coefficient else 0
    scale: int = 10 ** abs(shift)
    if shift < 0 and coefficient % scale:
        return None
    scaled = coefficient * scale if shift >= 0 else coefficient // scale
    return -scaled if sign else scaled


def limit_nanousd(name: str, value: object) -> tuple[Decimal, int]:
    """``value``, a spending limit in USD, as an exact Decimal and as its whole number of nano-USD.

    Raises:
        ConfigurationError: ``value`` is not a finite decimal number, is not above zero, is above
            :data:`MAX_LIMIT_USD`, or is finer than a nano-USD; the message names ``name``.
    """
    limit = exact_decimal(name, value)
    if limit <= 0:
        raise ConfigurationError(f"{name} must be above zero, got {_amount(limit)}")
    if limit > MAX_LIMIT_USD:  # before the conversion, which takes a number's every digit
        raise ConfigurationError(
            f"{name} must be at most {MAX_LIMIT_USD:,} USD (a limit above it stops nothing), got {_amount(limit)}"
        )
    nanousd = whole_nanousd(limit)
    if nanousd is None:
        raise ConfigurationError(
            f"{name} may have at most 9 decimal places (the ledger counts nano-USD), got {_amount(limit)}"
        )
    return limit, nanousd


def _amount(number: Decimal) -> str:
    """``number`` as written, or in scientific notation when that is longer than an error should quote."""
    text = str(number)
    return text if len(text) <= QUOTED_LIMIT else f"{number:.6e}"


def _seconds(name: str, value: object) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(f"{name} must be seconds (a number) or a timedelta, got {type(value).__name__}")
    if not is_finite(seconds) or not 0 < seconds <= MAX_REFRESH:
        raise ConfigurationError(f"{name} must be > 0 and <= {MAX_REFRESH:g} seconds, got {shown_number(value)}")
    return float(seconds)


def _in_memory(url: URL) -> bool:
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or (database.startswith("file:") and "mode=memory" in database)
    )


def _check_database_url(url: str | URL) -> URL:
    # SQLAlchemy and the store's modules load when a policy names a database, not when this module is imported.
    from ..storage._engine import check_database_url  # noqa: PLC0415

    return check_database_url(url)


def _masked(url: URL) -> bool:
    """Whether :meth:`BudgetPolicy.to_config` masked a password in ``url``."""
    from ..storage._engine import url_secrets  # noqa: PLC0415  # loaded already: the URL was checked

    return "***" in url_secrets(url)


def _usage_store_type() -> type[UsageStore]:
    from ..storage._store import UsageStore  # noqa: PLC0415 - loaded already when a policy is given one

    return UsageStore


def check_ledger_url(name: str, url: str | URL) -> URL:
    """``url`` parsed, if a budget can read spend from it: any URL the store takes, but an in-memory SQLite one."""
    parsed = _check_database_url(url)
    if _in_memory(parsed):
        raise ConfigurationError(
            f"{name}: an in-memory SQLite database is private to the connection that made it, so a budget "
            "cannot read the spend recorded there; use a SQLite file or PostgreSQL"
        )
    return parsed


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """How much a project, session or agent may spend per period; validated at construction.

    Before each call, the spend of the call's scope in the current period (UTC)
    is compared with ``limit_usd``: what the usage ledger holds, so every
    process sharing the database shares the budget, plus this process's rows
    not yet written there. At or over the limit the call is refused with
    :class:`~autogen_reliability.BudgetExceededError` and no request is sent
    (``on_exceed="raise"``), or goes on with a warning logged once per period
    (``"warn"``). See ``docs/budgets.md``.

    Args:
        limit_usd: The limit in USD: a ``Decimal``, an ``int`` or a decimal string
            (``"12.50"``); a ``float`` is taken as the decimal it prints as
            (``12.5`` is ``Decimal("12.5")``). Above zero, at most 1,000,000,000,000
            (:data:`MAX_LIMIT_USD`), at most 9 decimal places (the ledger counts
            nano-USD). Kept as a ``Decimal``.
        period: ``"day"`` (from midnight UTC), ``"week"`` (from Monday, UTC),
            ``"month"`` (from the first, UTC), or ``None``: all time.
        scope: What the budget is kept per: ``"project"``, ``"session"`` or
            ``"agent"`` (a session's or agent's budget is kept within its project).
            The call's attribution decides its key; calls without one (no session,
            say) share one budget of their own.
        on_exceed: ``"raise"`` refuses the call; ``"warn"`` logs a warning once per
            period and key and lets it go on.
        alert_at: Fractions of the limit (increasing, each in (0, 1)) at which an
            alert fires, once per threshold, period and key in this process; ``()``
            turns alerts off. Kept as a tuple of ``Decimal``.
        on_alert: Called with each :class:`BudgetAlert`, on the event loop, before the
            call goes on; must be quick, and a plain function (nothing awaits it: an
            ``async def`` is refused). Without one, each alert is logged
            (:func:`log_budget_alert`, a WARNING). Code, not configuration:
            :meth:`to_config` leaves it out.
        refresh: Seconds (or a ``timedelta``, held as seconds) the spend read from the
            ledger is used before it is read again, in the background (at most an hour). Spend
            that other processes record meanwhile is seen only then; this
            process's own is counted at once.
        store: Where the spend is read: a :class:`~autogen_reliability.UsageStore`
            or a database URL. By default, the ledger the wrapper records to
            (its recorder's store, or the process's database, see
            :func:`~autogen_reliability.configure`).
        clock: Seconds since the epoch (``time.time``): the period boundaries and
            the age of the figure read are measured on it. Not a monotonic clock
            (``RetryPolicy``'s), which is refused: it reads dates in 1970. Code, not
            configuration, like ``on_alert``; a test injects one.

    Raises:
        ConfigurationError: an option is invalid; the message says which and why.

    Example:
        >>> from autogen_reliability import BudgetPolicy
        >>> policy = BudgetPolicy(limit_usd="25", period="day", scope="project")
        >>> policy.limit_usd, policy.alert_at
        (Decimal('25'), (Decimal('0.5'), Decimal('0.8')))
    """

    limit_usd: Decimal | int | float | str
    period: Period | None = "day"
    scope: Scope = "project"
    on_exceed: OnExceed = "raise"
    alert_at: Sequence[Decimal | float | str] = (Decimal("0.5"), Decimal("0.8"))
    on_alert: Callable[[BudgetAlert], object] | None = field(default=None, kw_only=True)
    refresh: float | timedelta = field(default=DEFAULT_REFRESH, kw_only=True)
    store: UsageStore | str | None = field(default=None, kw_only=True)
    clock: Callable[[], float] = field(default=time.time, repr=False, kw_only=True)
    # Converted once here: the check on the call path compares integers.
    limit_nanousd: int = field(init=False, repr=False, compare=False)
    alert_nanousd: tuple[int, ...] = field(init=False, repr=False, compare=False)
    refresh_seconds: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limit, nanousd = limit_nanousd("limit_usd", self.limit_usd)
        object.__setattr__(self, "limit_usd", limit)
        object.__setattr__(self, "limit_nanousd", nanousd)
        if self.period not in _PERIODS:
            raise ConfigurationError(f"period must be 'day', 'week', 'month' or None (all time), got {self.period!r}")
        if self.scope not in _SCOPES:
            raise ConfigurationError(f"scope must be 'project', 'session' or 'agent', got {self.scope!r}")
        if self.on_exceed not in _ON_EXCEED:
            raise ConfigurationError(f"on_exceed must be 'raise' or 'warn', got {self.on_exceed!r}")
        thresholds = _thresholds(self.alert_at)
        object.__setattr__(self, "alert_at", thresholds)
        # spent >= fraction * limit, for a whole number spent, is spent >= the ceiling of that product: exact in
        # CONTEXT, whatever precision the caller's decimal context has.
        whole = Decimal(self.limit_nanousd)
        object.__setattr__(
            self,
            "alert_nanousd",
            tuple(math.ceil(CONTEXT.multiply(fraction, whole)) for fraction in thresholds),
        )
        if self.on_alert is not None and not callable(self.on_alert):
            raise ConfigurationError(f"on_alert must be callable or None, got {type(self.on_alert).__name__}")
        if self.on_alert is not None and _is_async(self.on_alert):
            # Called on the event loop before the call goes on, and not awaited: its alert would be lost.
            name = getattr(self.on_alert, "__name__", type(self.on_alert).__name__)
            raise ConfigurationError(
                f"on_alert must be a plain function, not async ({name}): it is called before the call goes on and "
                "nothing awaits it; to do async work, start a task from a plain function"
            )
        # Held as seconds, however written: wrappers with equal policies share one tracker.
        object.__setattr__(self, "refresh_seconds", _seconds("refresh", self.refresh))
        object.__setattr__(self, "refresh", self.refresh_seconds)
        if isinstance(self.store, str):
            check_ledger_url("store", self.store)
        elif self.store is not None and isinstance(self.store, _usage_store_type()):
            check_ledger_url("store", self.store.engine.url)
        elif self.store is not None:
            raise ConfigurationError(
                f"store must be a UsageStore, a database URL or None (the wrapper's ledger), "
                f"got {type(self.store).__name__}"
            )
        _check_clock(self.clock)
        try:
            hash(self.on_alert)
        except TypeError:
            # Wrappers with equal policies share one tracker, found by the policy's hash.
            raise ConfigurationError(
                f"on_alert must be hashable (a function or a method is), got {type(self.on_alert).__name__}"
            ) from None

    def __repr__(self) -> str:
        # A store URL is shown as to_config() writes it: the password masked. A UsageStore's repr masks its own.
        if not isinstance(self.store, str):
            return masked_repr(self)
        from ..storage._engine import masked_url  # noqa: PLC0415  # loaded already: the policy checked the URL

        return masked_repr(self, store=masked_url(self.store))

    def to_config(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_config` turns back into this policy.

        Money and fractions are strings of exact decimals. ``on_alert`` and ``clock``
        are code and are left out; so is a ``store`` given as a ``UsageStore`` object
        (the loaded policy reads its wrapper's ledger). A ``store`` URL is kept with
        its password masked: a configuration must not hold a secret.
        """
        config: dict[str, Any] = {
            "limit_usd": str(self.limit_usd),
            "period": self.period,
            "scope": self.scope,
            "on_exceed": self.on_exceed,
            "alert_at": [str(fraction) for fraction in self.alert_at],
            "refresh": self.refresh_seconds,
        }
        if isinstance(self.store, str):
            from ..storage._engine import masked_url  # noqa: PLC0415  # loaded already: the policy checked the URL

            config["store"] = masked_url(_check_database_url(self.store))
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BudgetPolicy:
        """The policy :meth:`to_config` described.

        Raises:
            ConfigurationError: an invalid value, or a ``store`` URL whose password
                was masked by :meth:`to_config` (give the password another way, e.g.
                PostgreSQL's ``PGPASSWORD`` or ``~/.pgpass``, or pass ``store=`` again).
        """
        values = config_options(cls, config)
        store = values.get("store")
        if isinstance(store, str) and _masked(_check_database_url(store)):
            raise ConfigurationError(
                "the budget's store URL has its password masked (***), as dump_component() writes it; "
                "keep the password out of the URL (PGPASSWORD, ~/.pgpass) or pass store= again"
            )
        return cls(**values)


def _check_clock(clock: object) -> None:
    """Refuses a clock that does not read seconds since the epoch: periods and rows' days are measured on it.

    A monotonic clock (what ``RetryPolicy`` and ``CircuitBreakerPolicy`` take) counts from an arbitrary point, the
    boot of the machine: read as a date it is in 1970, where the ledger holds no spend and this process's calls
    are not counted either, so the budget would stop nothing. No real machine has been up since 2000.
    """
    now = check_clock("clock", clock, reads="seconds since the epoch (as time.time does)")
    if now < _EARLIEST_CLOCK:
        when = f" ({datetime.fromtimestamp(now, UTC):%Y-%m-%d %H:%M} UTC)" if now >= 0 else ""
        raise ConfigurationError(
            f"clock must read seconds since the epoch (as time.time does); it read {now:g}{when}: a monotonic "
            "clock (time.monotonic, the clock of RetryPolicy and CircuitBreakerPolicy) counts from the machine's "
            "boot, and would put every call in another period than the spend it is compared with"
        )


def _is_async(hook: object) -> bool:
    """Whether calling ``hook`` makes a coroutine: an ``async def`` (or a partial of one), or an object whose
    ``__call__`` is one."""
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)


def _thresholds(alert_at: object) -> tuple[Decimal, ...]:
    if isinstance(alert_at, str | bytes) or not isinstance(alert_at, Sequence):
        raise ConfigurationError(f"alert_at must be a sequence of fractions such as (0.5, 0.8), got {alert_at!r}")
    found = tuple(exact_decimal("alert_at", value, what="a fraction of the limit") for value in alert_at)
    for fraction in found:
        if not 0 < fraction < 1:
            raise ConfigurationError(f"alert_at takes fractions of the limit between 0 and 1, got {fraction}")
    if any(later <= earlier for earlier, later in itertools.pairwise(found)):
        raise ConfigurationError(f"alert_at must be increasing, got {', '.join(map(str, found))}")
    return found


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A budget's spend reached one of its ``alert_at`` thresholds: handed to ``on_alert``.

    Attributes:
        threshold: The fraction of the limit that was reached (e.g. ``Decimal("0.8")``).
        spent_usd: The spend counted when the alert fired, exact.
        limit_usd: The budget's limit.
        scope: ``"project"``, ``"session"`` or ``"agent"``.
        key: The scope's value for the call that found it (``None``: calls without one).
        project: That call's project.
        period: ``"day"``, ``"week"``, ``"month"`` or ``None`` (all time).
        period_start: When the period began (UTC); ``None`` for all time.
        unpriced: Attempts in the period whose cost is unknown, not in ``spent_usd``.
    """

    threshold: Decimal
    spent_usd: Decimal
    limit_usd: Decimal
    scope: Scope
    key: str | None
    project: str | None
    period: Period | None
    period_start: datetime | None
    unpriced: int = 0

    def __str__(self) -> str:
        unpriced = f"; {self.unpriced} unpriced attempt(s) not counted" if self.unpriced else ""
        return (
            f"{describe_budget_key(self.scope, self.key, self.project)}: ${format_usd(self.spent_usd)} spent, "
            f"{CONTEXT.multiply(self.threshold, 100).normalize(CONTEXT):f}% or more of ${format_usd(self.limit_usd)} "
            f"{describe_period(self.period, self.period_start)}{unpriced}"
        )


def log_budget_alert(alert: BudgetAlert) -> None:
    """The alert hook of a policy without ``on_alert``: one WARNING on the ``autogen_reliability`` logger.

    Its fields go in ``extra=``. Call it from an ``on_alert`` of yours to keep the log line too.
    """
    logger.warning(
        "budget alert for %s",
        alert,
        extra={
            "budget_scope": alert.scope,
            "budget_key": alert.key,
            "project": alert.project,
            "threshold": str(alert.threshold),
            "spent_usd": str(alert.spent_usd),
            "limit_usd": str(alert.limit_usd),
        },
    )


def period_bounds(period: Period | None, now: float) -> tuple[date | None, date | None, float, float]:
    """The UTC days ``[first, end)`` of the period containing ``now`` (epoch seconds), and its bounds in seconds.

    ``None`` (all time) has no days and bounds of minus and plus infinity.
    """
    if period is None:
        return None, None, -math.inf, math.inf
    today = datetime.fromtimestamp(now, UTC).date()
    if period == "day":
        first, end = today, today + timedelta(days=1)
    elif period == "week":
        first = today - timedelta(days=today.weekday())  # ISO weeks start on Monday
        end = first + timedelta(days=7)
    else:
        first = today.replace(day=1)
        end = (first + timedelta(days=32)).replace(day=1)
    return first, end, _epoch(first), _epoch(end)


def _epoch(day: date) -> float:
    return datetime.combine(day, midnight_time(), tzinfo=UTC).timestamp()
