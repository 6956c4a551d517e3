"""Validating and sanitising what the model returns."""

from ._parse import JSONExtractionError, extract_json
from ._policy import ValidationPolicy
from ._result import CheckedCreateResult
from ._sanitize import SanitizePolicy, Sanitizer, SanitizeReport
from ._schema import ResponseSchema, SchemaViolation

__all__ = [
    "CheckedCreateResult",
    "JSONExtractionError",
    "ResponseSchema",
    "SanitizePolicy",
    "SanitizeReport",
    "Sanitizer",
    "SchemaViolation",
    "ValidationPolicy",
    "extract_json",
]
