"""The process-wide defaults of usage accounting: :func:`configure`, and the one place the environment is read.

Every wrapped client records its usage unless told otherwise
(``track_usage=False``), to its own ``recorder=`` or to the process default,
which :func:`configure` sets up:

    >>> from autogen_reliability import configure
    >>> configure(db_url="postgresql+psycopg://app@db/usage", capture_content=False).db_url
    'postgresql+psycopg://app@db/usage'

Without a call to :func:`configure`, the default database is
``AUTOGEN_RELIABILITY_DB_URL`` if that environment variable is set, else the
SQLite file ``autogen_reliability.db`` in the working directory.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Never

from ._errors import ConfigurationError
from ._redaction import masked_repr
from .accounting._price_table import PricingTable
from .accounting._recorder import UsageRecorder, check_spool_dir
from .budget._policy import BudgetPolicy

__all__ = ["AccountingSettings", "configure", "default_db_url", "default_recorder", "from_env", "settings"]

logger = logging.getLogger("autogen_reliability")

ENV_DB_URL: Final = "AUTOGEN_RELIABILITY_DB_URL"
ENV_SPOOL_DIR: Final = "AUTOGEN_RELIABILITY_SPOOL_DIR"
DEFAULT_DB_URL: Final = "sqlite:///autogen_reliability.db"
DEFAULT_CONTENT_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True)
class AccountingSettings:
    """What :func:`configure` set (or the defaults).

    Attributes:
        db_url: The SQLAlchemy URL of the usage store.
        pricing: The price table every wrapper without its own uses.
        capture_content: Store request and response bodies (truncated) with each row.
        content_limit: Characters kept of each captured body.
        spool_dir: Where events wait while the database is unavailable.
        budget: The budget of wrappers made without ``budget=`` (None: no budget).
    """

    db_url: str
    pricing: PricingTable = field(default_factory=PricingTable)
    capture_content: bool = False
    content_limit: int = DEFAULT_CONTENT_LIMIT
    spool_dir: Path = field(default_factory=lambda: Path.home() / ".local" / "state" / "autogen_reliability" / "spool")
    budget: BudgetPolicy | None = None

    def __repr__(self) -> str:
        # The URL is kept whole, to connect with; shown, as in every log line that shows the settings, masked.
        from .storage._engine import masked_url  # noqa: PLC0415  # SQLAlchemy loads when it is needed, not at import

        return masked_repr(self, db_url=masked_url(self.db_url))


def from_env() -> dict[str, str]:
    """The settings given by the environment: ``AUTOGEN_RELIABILITY_DB_URL`` and ``AUTOGEN_RELIABILITY_SPOOL_DIR``.

    This is the only place the library reads its settings from the environment. Only the pytest
    plugin's ``usage_store`` fixture (``AUTOGEN_RELIABILITY_TEST_DB_URL``) and the command line
    (``COLUMNS``, and ``OPENAI_API_KEY`` for ``demo --live``) read others, where they use them;
    docs/configuration.md lists them all.
    """
    found: dict[str, str] = {}
    if os.environ.get(ENV_DB_URL):
        found["db_url"] = os.environ[ENV_DB_URL]
    if os.environ.get(ENV_SPOOL_DIR):
        found["spool_dir"] = os.environ[ENV_SPOOL_DIR]
    return found


def default_db_url() -> str:
    """The usage database when none is configured: ``AUTOGEN_RELIABILITY_DB_URL``, else a SQLite file here."""
    return from_env().get("db_url") or DEFAULT_DB_URL


class _Unset:
    """The default of ``configure(budget=...)``, where None means "no budget" rather than "unchanged"."""

    def __repr__(self) -> str:
        return "<unchanged>"


_UNCHANGED: Final = _Unset()
_lock = threading.Lock()
_settings: AccountingSettings | None = None
_recorder: UsageRecorder | None = None


def _lock_in_child() -> None:
    """After a fork, in the child: a lock of its own. Another thread of the parent may have held the old one
    (making the process's recorder: imports, a thread, journal files) and is not in the child to let it go. What
    the lock guards is whole either way: settings and the recorder are each put in place by one assignment."""
    global _lock  # noqa: PLW0603
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_lock_in_child)


def configure(
    *,
    db_url: str | None = None,
    pricing: PricingTable | None = None,
    capture_content: bool | None = None,
    content_limit: int | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    budget: BudgetPolicy | _Unset | None = _UNCHANGED,
    **unknown: Never,
) -> AccountingSettings:
    """Set the process defaults of usage accounting. Wrappers made afterwards use them.

    Each call changes only the settings it names; the others keep the value
    in force (set by an earlier call, else the default). So
    ``configure(db_url=...)`` then ``configure(pricing=...)`` records to that
    database with those prices.

    Args:
        db_url: SQLAlchemy URL of the usage store (default: the environment, else
            ``sqlite:///autogen_reliability.db``). Checked now, without connecting:
            a URL that can never work (see
            :func:`~autogen_reliability.storage._engine.check_database_url`) raises here
            instead of sending every row to the spool.
        pricing: The price table (default: genai-prices' offline data, no overrides).
        capture_content: Also store request and response bodies, truncated (default False).
        content_limit: Characters kept of each captured body (default 10,000).
        spool_dir: Where events wait while the database is unavailable: a directory,
            made if missing (a file there, or on its way, is refused); a leading ``~``
            is the home directory.
        budget: The :class:`~autogen_reliability.BudgetPolicy` of every wrapper made
            afterwards without a ``budget=`` of its own (and that records usage);
            ``None`` removes it. Unlike the other settings, leaving it out keeps the
            one in force, and ``None`` is a value.

    Returns:
        The settings now in force.

    Raises:
        ConfigurationError: an unknown option or an invalid value; nothing is changed then.

    Example:
        >>> configure(db_url="sqlite:///usage.db").db_url
        'sqlite:///usage.db'
        >>> configure(capture_content=True).db_url  # the database set before is kept
        'sqlite:///usage.db'
    """
    global _settings, _recorder  # noqa: PLW0603  # the process default is process-wide state
    _refuse_unknown(unknown)
    changes: dict[str, Any] = {}
    if db_url is not None:
        changes["db_url"] = _checked_url(db_url, source="db_url")
    if pricing is not None:
        if not isinstance(pricing, PricingTable):
            raise ConfigurationError(f"pricing must be a PricingTable, got {type(pricing).__name__}")
        changes["pricing"] = pricing
    if capture_content is not None:
        if not isinstance(capture_content, bool):  # bool("no") is True: a string would switch capture on
            raise ConfigurationError(f"capture_content must be True or False, got {capture_content!r}")
        changes["capture_content"] = capture_content
    if content_limit is not None:
        if isinstance(content_limit, bool) or not isinstance(content_limit, int) or content_limit < 1:
            raise ConfigurationError(f"content_limit must be a positive int, got {content_limit!r}")
        changes["content_limit"] = content_limit
    if spool_dir is not None:
        changes["spool_dir"] = check_spool_dir(spool_dir, option="spool_dir")
    if not isinstance(budget, _Unset):
        changes["budget"] = _checked_budget(budget)
    with _lock:
        current = _settings if _settings is not None else _initial_settings(changes)
        new = replace(current, **changes)
        previous = None
        if (new.db_url, new.spool_dir) != (current.db_url, current.spool_dir):
            # Only the recorder's own settings retire it: closing it needlessly would stop the
            # recording of wrappers that already hold it.
            previous, _recorder = _recorder, None
        _settings = new
    if previous is not None:
        previous.close()
    return new


_OPTION_NAMES: Final = frozenset(inspect.signature(configure).parameters) - {"unknown"}


def _refuse_unknown(unknown: Mapping[str, object]) -> None:
    # As reliable() says it. A type checker refuses the name already: no value is a Never.
    if unknown:
        raise ConfigurationError(f"unknown option(s) {sorted(unknown)}; valid options: {sorted(_OPTION_NAMES)}")


def _checked_budget(budget: object) -> BudgetPolicy | None:
    if budget is not None and not isinstance(budget, BudgetPolicy):
        raise ConfigurationError(f"budget must be a BudgetPolicy or None (no budget), got {type(budget).__name__}")
    return budget


def _initial_settings(given: Mapping[str, Any]) -> AccountingSettings:
    """The settings before any :func:`configure`: the environment's, else the defaults.

    What the first call ``given`` overrides the environment, unread: a variable it replaces is not checked.
    """
    environment = from_env()
    if "db_url" in given:
        url = given["db_url"]
    elif "db_url" in environment:
        url = _checked_url(environment["db_url"], source=ENV_DB_URL)
    else:
        url = DEFAULT_DB_URL
    initial = AccountingSettings(db_url=url)
    spool = environment.get("spool_dir")
    if "spool_dir" in given or not spool:
        return initial
    return replace(initial, spool_dir=check_spool_dir(spool, option=ENV_SPOOL_DIR))


def _checked_url(url: object, *, source: str) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(
            f"{source} must be a SQLAlchemy URL string such as sqlite:///usage.db, got {type(url).__name__}"
        )
    # SQLAlchemy and the store's modules load here, on the configuring thread, not at import.
    from .storage._engine import check_database_url  # noqa: PLC0415

    try:
        check_database_url(url)
    except ConfigurationError as error:
        raise ConfigurationError(f"{source}: {error}") from None
    return url


def settings() -> AccountingSettings:
    """The settings in force (the defaults until :func:`configure` is called)."""
    with _lock:
        current = _settings
    return current if current is not None else configure()


def default_recorder() -> UsageRecorder:
    """The process's recorder for :func:`settings`' database, made on first use.

    The store is opened on the recorder's thread, so a database that is down
    delays nothing here: events wait in the spool until it answers.
    """
    global _recorder  # noqa: PLW0603
    current = settings()
    with _lock:
        if _recorder is None:
            # Imported here, on the calling thread (not the recorder's), and only when usage is recorded.
            from .storage._engine import masked_url  # noqa: PLC0415
            from .storage._store import UsageStore  # noqa: PLC0415

            url = current.db_url
            # Named as a store of the URL names its recorder (UsageStore.url): after the database, not its
            # password, so the process started with a rotated password replays what the old one spooled.
            _recorder = UsageRecorder(lambda: UsageStore(url), spool_dir=current.spool_dir, name=masked_url(url))
        return _recorder
