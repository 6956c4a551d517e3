"""The usage ledger in SQL: SQLite by default, PostgreSQL for many writers, migrated with alembic."""

from .migrate import current_revision, head_revision, upgrade
from .store import SchemaOutdatedError, SchemaTooNewError, StoreSchemaError, UsageStore

__all__ = [
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "StoreSchemaError",
    "UsageStore",
    "current_revision",
    "head_revision",
    "upgrade",
]
