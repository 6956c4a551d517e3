"""Validating and sanitising what the model returns."""

from .parse import JSONExtractionError, extract_json
from .sanitize import SanitizePolicy, Sanitizer, SanitizeReport
from .schema import ResponseSchema, SchemaViolation

__all__ = [
    "JSONExtractionError",
    "ResponseSchema",
    "SanitizePolicy",
    "SanitizeReport",
    "Sanitizer",
    "SchemaViolation",
    "extract_json",
]
