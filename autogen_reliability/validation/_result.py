"""The result type that carries what validation and sanitisation found."""

from __future__ import annotations

from typing import Any

from autogen_core.models import CreateResult
from pydantic import ConfigDict

from ._sanitizer import SanitizeReport
from ._schema import SchemaViolation

__all__ = ["CheckedCreateResult", "checked"]


class CheckedCreateResult(CreateResult):
    """A ``CreateResult`` with what the wrapper found in it; agents use it as any ``CreateResult``.

    Returned only when there is something to report (sanitised content,
    injection markers, or violations kept with ``on_failure="return"``); a
    result with nothing to report is returned as the inner client made it.

    Attributes:
        validation_errors: The violations of this answer (with ``on_failure="return"``).
        sanitize_report: What the sanitiser changed or detected, per category.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    validation_errors: tuple[SchemaViolation, ...] = ()
    sanitize_report: SanitizeReport | None = None


def checked(result: CreateResult, **updates: Any) -> CheckedCreateResult:
    """A new :class:`CheckedCreateResult` with ``result``'s fields and ``updates``; ``result`` is not touched."""
    fields: dict[str, Any] = {name: getattr(result, name) for name in type(result).model_fields}
    fields.update(updates)
    return CheckedCreateResult(**fields)
