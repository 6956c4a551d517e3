"""Keeping secrets out of what we store, log and raise.

Some providers echo part of the API key in their error messages ("Incorrect API
key provided: sk-proj-…"). Every provider text that leaves the library through
us (an exception message, a log line, a stored error) passes :func:`redact`.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["redact"]

DEFAULT_LIMIT: Final = 2000

# Each pattern keeps its first group (a label such as "Bearer ") and hides the rest.
_SECRETS: Final = [
    re.compile(r"()\b(?:sk|rk|pk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_*\-]{4,}"),  # OpenAI / Anthropic keys, masked ones too
    re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=\-]{6,}"),  # Authorization headers
    re.compile(r"()\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"()\bAIza[0-9A-Za-z_\-]{20,}"),  # Google API keys
    re.compile(r"([?&](?:api[_-]?key|key|token|access_token)=)[^&\s\"']+", re.IGNORECASE),  # keys in URLs
    re.compile(r"((?:api[_-]?key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}", re.IGNORECASE),
]


def redact(text: str, *, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` with API keys, bearer tokens and similar secrets replaced by ``[REDACTED]``, cut to ``limit``.

    Example:
        >>> redact("Incorrect API key provided: sk-proj-abc123def456")
        'Incorrect API key provided: [REDACTED]'
    """
    for pattern in _SECRETS:
        text = pattern.sub(r"\1[REDACTED]", text)
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text
