"""Validating and sanitising what the model returns.

The names load on first use (PEP 562, ``autogen_reliability/_lazy.py``): the
policies a user passes to :func:`~autogen_reliability.reliable` import without
the stages that apply them, which load when the first wrapper is made.
"""

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    # What type checkers see; at run time each name loads on first use (``__getattr__`` below).
    from ._parse import JSONExtractionError, extract_json
    from ._policy import ValidationPolicy
    from ._result import CheckedCreateResult
    from ._sanitize_policy import SanitizePolicy
    from ._sanitizer import Sanitizer, SanitizeReport
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

# Each public name -> the module that defines it (the same as the TYPE_CHECKING imports above).
_HOMES = {
    "CheckedCreateResult": "._result",
    "JSONExtractionError": "._parse",
    "ResponseSchema": "._schema",
    "SanitizePolicy": "._sanitize_policy",
    "SanitizeReport": "._sanitizer",
    "Sanitizer": "._sanitizer",
    "SchemaViolation": "._schema",
    "StreamSanitizer": "._stream_sanitizer",
    "ValidationPolicy": "._policy",
    "extract_json": "._parse",
}

__getattr__, __dir__ = _lazy.attach(__name__, _HOMES, globals(), __all__)
