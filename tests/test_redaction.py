"""Secrets never reach an error message or a log line of ours."""

from __future__ import annotations

import pytest

from autogen_reliability.redaction import redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Incorrect API key provided: sk-proj-abc123def456. You can find your API key at ...",
            "Incorrect API key provided: [REDACTED]. You can find your API key at ...",
        ),
        ("Incorrect API key provided: sk-test.", "Incorrect API key provided: [REDACTED]."),
        ("masked: sk-*********************xyz1", "masked: [REDACTED]"),
        ("x-api-key: sk-ant-api03-AbCdEf123456", "x-api-key: [REDACTED]"),
        ("Authorization: Bearer eyJhbGciOi.J9.abc", "Authorization: [REDACTED] [REDACTED]"),
        ("aws AKIAABCDEFGHIJKLMNOP denied", "aws [REDACTED] denied"),
        ("GET https://h/v1?key=AIzaSyA1234567890123456789012&alt=json", "GET https://h/v1?key=[REDACTED]&alt=json"),
        ('{"api_key": "secret-value-1"}', '{"api_key": "[REDACTED]"}'),
        ("a risk-free task for the desk", "a risk-free task for the desk"),
        (
            "Rate limit reached for gpt-4o-mini in organization org-123",
            "Rate limit reached for gpt-4o-mini in organization org-123",
        ),
    ],
)
def test_secrets_are_redacted_and_plain_text_kept(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_long_texts_are_bounded() -> None:
    assert redact("x" * 5000, limit=100) == "x" * 99 + "…"
    assert len(redact("y" * 5000)) == 2000
