"""The usage ledger in SQL: SQLite by default, PostgreSQL for many writers, migrated with alembic."""

from ._migrate import (
    SchemaOutdatedError,
    SchemaTooNewError,
    StoreSchemaError,
    current_revision,
    head_revision,
    upgrade,
)
from ._models import UsageContent, UsageRecord
from ._retention import RetentionResult
from ._sessions import SessionSummary
from ._store import UsageStore

__all__ = [
    "RetentionResult",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SessionSummary",
    "StoreSchemaError",
    "UsageContent",
    "UsageRecord",
    "UsageStore",
    "current_revision",
    "head_revision",
    "upgrade",
]
