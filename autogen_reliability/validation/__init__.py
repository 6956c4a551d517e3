"""Validating and sanitising what the model returns."""

from .parse import JSONExtractionError, extract_json
from .policy import ValidationPolicy
from .result import CheckedCreateResult
from .sanitize import SanitizePolicy, Sanitizer, SanitizeReport
from .schema import ResponseSchema, SchemaViolation

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
