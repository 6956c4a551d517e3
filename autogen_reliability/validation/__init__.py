"""Validating and sanitising what the model returns."""

from ._parse import JSONExtractionError, extract_json
from ._policy import ValidationPolicy
from ._result import CheckedCreateResult
from ._sanitizer import SanitizePolicy, Sanitizer, SanitizeReport
from ._schema import ResponseSchema, SchemaViolation
from ._stream_sanitizer import StreamSanitizer

__all__ = [
    "CheckedCreateResult",
    "JSONExtractionError",
    "ResponseSchema",
    "SanitizePolicy",
    "SanitizeReport",
    "Sanitizer",
    "SchemaViolation",
    "StreamSanitizer",
    "ValidationPolicy",
    "extract_json",
]
