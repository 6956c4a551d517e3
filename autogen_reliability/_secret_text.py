"""Secrets in text: the patterns of what is shaped like a key, and the API keys of the clients we wrapped.

At the bottom of the package, beside the errors, so that every text of ours can pass :func:`redact`: a
:class:`~autogen_reliability.ConfigurationError` redacts its message with it (a key given by mistake to
another option is not repeated), and :mod:`autogen_reliability._redaction` builds on it for provider errors,
logs and rows. It imports nothing of the package.
"""

from __future__ import annotations

import re
import threading
from typing import Final

__all__ = ["DEFAULT_LIMIT", "redact", "remember_secret", "well_formed"]

DEFAULT_LIMIT: Final = 2000
# Each pattern keeps its first group (a label such as "Bearer ") and hides the rest.
_SECRETS: Final = [
    # OpenAI / Anthropic / Stripe-style keys, masked ones too; providers echo them upper-cased or with "_".
    re.compile(r"()\b(?:sk|rk|pk)[-_](?:[A-Za-z0-9]+[-_])*[A-Za-z0-9_*\-]{4,}", re.IGNORECASE),
    # Other providers' keys, by their fixed prefix: Groq, xAI, Perplexity, NVIDIA, Hugging Face, GitHub (Models).
    re.compile(r"()\b(?:(?:gsk_|xai-|pplx-|hf_|gh[pousr]_)[A-Za-z0-9]{20,}|(?:nvapi-|github_pat_)[A-Za-z0-9_\-]{20,})"),
    re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=\-]{6,}"),  # Authorization headers
    # JWTs without their "Bearer " label (an Entra ID token of an Azure OpenAI client, which no wrapper knows: its
    # provider hands the SDK a new one as the old expires): header and payload are base64url JSON objects, "eyJ".
    re.compile(r"()\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),
    re.compile(r"()\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"()\bAIza[0-9A-Za-z_\-]{20,}"),  # Google API keys
    # Keys, passwords and signatures (Azure SAS ``sig=``) in URL queries (libpq takes password= there too). Not
    # the *** of a URL we masked already (storage's masked_url), which a message of ours shows as it is.
    re.compile(
        r"([?&](?:api[_-]?key|key|token|access_token|(?:ssl)?password|passwd|pwd|secret|sig|signature)=)"
        r"(?!\*\*\*(?:[&\s\"']|$))[^&\s\"']+",
        re.I,
    ),
    re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s/@:]*:)(?!\*\*\*@)[^\s/@]+(?=@)", re.IGNORECASE),  # passwords in URLs
    # Passwords in libpq's keyword/value connection strings ("host=db password=x", "password = 'a b'"), read as
    # libpq reads a value: quoted, or up to the next space, a backslash escaping the character after it.
    re.compile(r"((?<![?&\w])(?:ssl)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|(?:\\.|[^\s\\])+)", re.IGNORECASE),
    # A header's value, with its scheme if it has one: "Authorization: Basic <user:password in base64>".
    re.compile(
        r"((?:api[_-]?key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)"
        r"(?:(?:Bearer|Basic|Token|Digest|Negotiate)\s+)?[^\s\"',}]{6,}",
        re.IGNORECASE,
    ),
]


# A remembered key must be long enough not to be a word: local servers take "EMPTY" or "ollama".
_MIN_SECRET_CHARS: Final = 12
_MAX_SECRETS: Final = 256  # keys rotate; the oldest are forgotten first
# A prefix segment: "sk-", "proj-", "ant-", "api03-", "live_". Stripped up to three times.
_PREFIX_SEGMENT: Final = re.compile(r"[A-Za-z0-9]{1,7}[-_]")

_lock = threading.Lock()
_secrets: dict[str, None] = {}  # insertion-ordered set
_known: re.Pattern[str] | None = None


def remember_secret(secret: str | None) -> None:
    """Make :func:`redact` hide ``secret`` (a client's API key) from now on, in every form a provider echoes.

    Keys shorter than 12 characters are not remembered: they are placeholders
    ("EMPTY", "ollama"), and hiding them would hide words.
    """
    global _known  # noqa: PLW0603  # one process-wide set: every log line and row passes redact()
    if not isinstance(secret, str) or len(secret.strip()) < _MIN_SECRET_CHARS:
        return
    secret = secret.strip()
    with _lock:
        if secret in _secrets:
            return
        _secrets[secret] = None
        while len(_secrets) > _MAX_SECRETS:
            del _secrets[next(iter(_secrets))]
        forms = {form for key in _secrets for form in _forms(key)}
        # Longest first, so that a whole key is hidden rather than its tail.
        alternatives = sorted(forms, key=len, reverse=True)
        _known = re.compile("|".join(_loose(form) for form in alternatives), re.IGNORECASE)


def _forms(secret: str) -> list[str]:
    """The key, and the key without each of up to three prefix segments (``sk-``, ``proj-``)."""
    forms = [secret]
    rest = secret
    for _ in range(3):
        segment = _PREFIX_SEGMENT.match(rest)
        if segment is None or len(rest) - segment.end() < _MIN_SECRET_CHARS:
            break
        rest = rest[segment.end() :]
        forms.append(rest)
    return forms


def _loose(form: str) -> str:
    """A pattern for ``form`` in which ``-`` and ``_`` stand for each other."""
    return "".join("[-_]" if char in "-_" else re.escape(char) for char in form)


_REPEATED: Final = re.compile(r"(?:\[REDACTED\]){2,}")
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
"""What no text of the ledger holds: PostgreSQL refuses NUL and lone surrogates, so both are stored as U+FFFD."""


def ledger_text(text: str) -> str:
    """``text`` as the usage ledger holds it: each NUL and lone surrogate replaced by U+FFFD (:data:`UNSTORABLE`).

    Example:
        >>> ledger_text("ticket\\x00") == "ticket\\ufffd"
        True
    """
    if text.isascii() and "\x00" not in text:
        return text
    return UNSTORABLE.sub("\ufffd", text)


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate (``"\\ud83d"``: half an emoji, cut) replaced by U+FFFD.

    UTF-8 cannot encode one, so a text that holds one breaks whatever encodes it: Prometheus' exposition,
    a span exporter, a JSON response. In a ``str`` every surrogate is lone: two in a row are not one character.

    Example:
        >>> well_formed("cut \\ud83d") == "cut \\ufffd"
        True
    """
    if text.isascii():  # the common case, without the regex: isascii() reads a flag
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def redact(text: str, *, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` with API keys, bearer tokens and similar secrets replaced by ``[REDACTED]``, cut to ``limit``.

    Lone surrogates are replaced by U+FFFD too (:func:`well_formed`): what leaves through us can be encoded.

    Example:
        >>> redact("Incorrect API key provided: sk-proj-abc123def456")
        'Incorrect API key provided: [REDACTED]'
    """
    text = well_formed(text)
    known = _known
    if known is not None:
        text = known.sub("[REDACTED]", text)
    for pattern in _SECRETS:
        text = pattern.sub(r"\1[REDACTED]", text)
    if "[REDACTED][REDACTED]" in text:
        # A remembered key hid the tail of another key, and a pattern its head: one secret, one mark.
        text = _REPEATED.sub("[REDACTED]", text)
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text
