"""Which hazards the sanitising stage neutralises: :class:`SanitizePolicy`, the switches and their config.

Apart from the :class:`~autogen_reliability.validation.Sanitizer` that applies it (``_sanitizer.py``), so that
the policy a user passes to :func:`~autogen_reliability.reliable` loads without the stages themselves (nh3,
the scheme and marker tables): they load when the first wrapper that sanitises is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from .._errors import ConfigurationError, config_options

__all__ = ["SanitizePolicy"]


@dataclass(frozen=True, slots=True)
class SanitizePolicy:
    """Which hazards a :class:`Sanitizer` neutralises; every switch is on by default.

    Attributes:
        control_chars: Remove C0 and C1 control characters, except tab, line feed and carriage return;
            a carriage return that ends no line becomes a line feed.
        ansi: Remove ANSI escape sequences: CSI (``ESC [``), OSC (``ESC ]`` up to BEL or ``ESC \\``) including
            OSC 8 hyperlinks and OSC 52 clipboard writes, DCS/SOS/PM/APC strings, the 8-bit C1 forms
            (``\\x9b``, ``\\x9d``...) and every other ESC sequence.
        bidi: Remove bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and the marks
            U+200E, U+200F, U+061C.
        zero_width: Remove U+200B, U+200C, U+200D, U+2060-U+2064, U+FEFF, U+180E, the soft hyphen U+00AD, the
            combining grapheme joiner U+034F, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0, U+17B4, U+17B5,
            the other invisible format characters U+206A-U+206F, U+1BCA0-U+1BCA3, U+1D173-U+1D17A, the unassigned
            invisible code points U+FFF0-U+FFF8, U+E0080-U+E00FF, U+E01F0-U+E0FFF, and the variation selectors
            U+FE00-U+FE0F and U+E0100-U+E01EF, except one U+FE0E or U+FE0F alone after an emoji (its text or
            emoji style).
        tag_chars: Remove Unicode tag characters U+E0000-U+E007F.
        normalize: NFC-normalise, as the last step of the text stage.
        html: Sanitise HTML with nh3 when the text contains markup.
        markdown_links: Replace by ``#`` the destination of markdown links, images, reference definitions and
            autolinks whose scheme is ``javascript:``, ``vbscript:`` or ``data:``, however obfuscated.
        detect_injection: Report prompt-injection markers (never removed).

    Raises:
        ConfigurationError: A switch is not a ``bool``.
    """

    control_chars: bool = True
    ansi: bool = True
    bidi: bool = True
    zero_width: bool = True
    tag_chars: bool = True
    normalize: bool = True
    html: bool = True
    markdown_links: bool = True
    detect_injection: bool = True

    def __post_init__(self) -> None:
        for option in fields(self):
            value = getattr(self, option.name)
            if not isinstance(value, bool):
                raise ConfigurationError(
                    f"SanitizePolicy.{option.name} must be True or False, not {value!r} ({type(value).__name__})"
                )

    def to_config(self) -> dict[str, bool]:
        """Every switch by name, as :meth:`from_config` reads it back."""
        return {option.name: getattr(self, option.name) for option in fields(self)}

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> SanitizePolicy:
        """The policy described by ``config``; switches it leaves out keep their default.

        Raises:
            ConfigurationError: ``config`` is not a mapping, names an unknown switch, or a value is not a ``bool``.
        """
        switches: dict[str, bool] = {}
        for name, value in config_options(cls, config).items():
            if not isinstance(value, bool):
                raise ConfigurationError(
                    f"SanitizePolicy.{name} must be True or False, not {value!r} ({type(value).__name__})"
                )
            switches[name] = value
        return cls(**switches)
