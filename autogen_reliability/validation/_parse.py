"""Getting the JSON value a model meant out of the text it wrote.

Models asked for JSON answer in three shapes: the bare value, the value in a
Markdown code fence, or the value inside prose ("Sure! Here it is: {...}").
:func:`extract_json` tries them in that order and returns the first value found,
or raises :class:`JSONExtractionError` with a machine-usable ``reason``.

Strict JSON only
    Values are parsed by :mod:`json` with ``NaN``, ``Infinity`` and numbers that
    overflow a double rejected, so that whatever we return can be written back
    as JSON that every other parser accepts. No JSON5, comments, trailing commas,
    single quotes or raw line breaks inside strings: a model that writes them
    gets an error that says where, and can be asked again. Nor lone surrogates
    (``"\\ud83d"``, half of an emoji's UTF-16 pair, escaped or not): :mod:`json`
    takes them, but they are no character, so no UTF-8 encoder and not pydantic's
    parser (``AssistantAgent``'s ``model_validate_json``) take the value back.

"Strict about trailing garbage", step by step
    * The whole text: the value must be all of the text, whitespace aside.
      ``{"a": 1} xyz`` is not JSON as a whole (``trailing_garbage``); the prose
      step may still find ``{"a": 1}`` in it, which is intended.
    * A fenced block: the value must be all of the block's content, whitespace
      aside. A block holding ``{"a": 1} oops`` fails (``trailing_garbage``) and is
      never cut down to its leading value; the prose step does not look inside
      fenced blocks, so it cannot quietly do that cut either.
    * Prose: the value is delimited by its balanced brackets; what follows the
      closing bracket is prose.

Fences
    A fence opens on a line that starts (after any indentation) with three or
    more backticks or tildes and closes on a line with at least as many of the
    same character; a fence left open runs to the end of the text, as in
    CommonMark. Only blocks tagged ``json`` (any case) or not tagged at all are
    read; ``json5``, ``jsonc``, ``javascript``, ``python``... are skipped, since
    their syntax is wider than JSON and code samples are not answers. Of several
    blocks, the first whose content is a JSON object or array wins.

Prose
    A single left-to-right scan over the text outside fenced blocks (of any
    language). An opening ``{`` or ``[`` starts a candidate; inside it the
    scanner follows JSON strings (with escapes, so ``{"a": "}{"}`` is one
    candidate) and nesting. The first candidate whose brackets balance and whose
    text parses wins, whatever its kind: in ``"see [1]: {...}"`` that is ``[1]``.

    A candidate that closes but does not parse, or whose brackets do not match,
    is skipped *as a whole*: the scan goes on after its end, not inside it. This
    deliberately differs from "try every ``{`` in order": that rule would turn
    ``{name: "x", "data": {"a": 1}}`` (a JavaScript-style object) into
    ``{"a": 1}``, and a reply cut off by the token limit,
    ``[{"a": 1}, {"b": 2}, {"c":``, into its first element. Here the first is an
    ``invalid_json`` error and the second ``unbalanced``. The price: a stray,
    never-closed ``{`` or ``[`` in prose hides the JSON after it (``unbalanced``).
    When no candidate parses, the error reported is that of the candidate the
    parser got furthest into, the likeliest to be the intended answer.

    Only objects and arrays are taken from fences and prose; a scalar
    (``42``, ``"x"``, ``true``) is accepted only when it is the whole text.

Bounds
    ``max_chars`` is checked before anything else is done with the text. Every
    step is linear in the text, with no unbounded backtracking: fence lines are
    found with ``str.find`` and one anchored match per line; the prose scan
    jumps between brackets and quotes with character-class searches and
    possessive patterns, visits each character once, and starts a candidate
    only outside earlier ones (``"[" * 50_000`` is one candidate, not 50,000), so
    candidates never overlap and each character is parsed at most once more.
    The first :data:`_FAST_TRIES` candidates are handed to the C parser before
    being scanned, which keeps the common case fast; not all of them, because a
    :class:`json.JSONDecodeError` counts the lines before its position, which
    for every candidate would be quadratic. Adversarial inputs of 1 MB take under
    a second (``benchmarks/bench_schema.py``: 0.9 s for a fence on every line or
    200,000 candidates that never parse, on a shared 2-core machine; the tests
    count the work instead). JSON nested deeper than Python's recursion limit is
    reported as ``too_deep``, never as :class:`RecursionError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn, cast

from autogen_reliability._errors import ConfigurationError

__all__ = [
    "ExtractionFailure",
    "JSONExtractionError",
    "extract_json",
    "json_candidates",
    "locate_json",
    "parse_whole_json",
]

ExtractionFailure = Literal[
    "empty", "too_long", "no_json", "unbalanced", "invalid_json", "trailing_garbage", "too_deep", "scalar"
]
"""Why no JSON value could be taken from a text; the ``reason`` of :class:`JSONExtractionError`."""


class JSONExtractionError(ValueError):
    """Raised when no JSON value can be taken from a text; says why.

    ``str(error)`` is ``"<reason>: <detail>"``, e.g.
    ``"invalid_json: Expecting ',' delimiter at line 1 column 9"``.

    Attributes:
        reason: Short machine-usable reason: ``"empty"``, ``"too_long"``, ``"no_json"``,
            ``"unbalanced"``, ``"invalid_json"``, ``"trailing_garbage"``, ``"too_deep"``
            or ``"scalar"`` (a fenced block held a JSON scalar, not an object or array).
        position: Index in the text where the problem is, when there is one place to point at.
        detail: The human part of the message, including the :mod:`json` error message.

    Example:
        >>> try:
        ...     extract_json('{"a": 1 "b": 2}')
        ... except JSONExtractionError as error:
        ...     print(error.reason, error.position)
        invalid_json 8
    """

    def __init__(self, reason: ExtractionFailure, detail: str, position: int | None = None) -> None:
        self.reason: ExtractionFailure = reason
        self.detail = detail
        self.position = position
        super().__init__(f"{reason}: {detail}")

    def __reduce__(self) -> tuple[type[JSONExtractionError], tuple[ExtractionFailure, str, int | None]]:
        # The default reduction would call __init__ with the formatted message only.
        return (type(self), (self.reason, self.detail, self.position))


_FAST_TRIES: Final = 4
"""How many prose candidates are handed straight to the C parser before being scanned."""

_JSON_FENCE_LANGUAGES: Final = frozenset({"", "json"})

# Matched at the start of a line only; no nested quantifiers, so a line costs O(its length).
_FENCE_LINE: Final = re.compile(r"[ \t]*(`{3,}|~{3,})([^\n]*)")
_OPENER: Final = re.compile(r"[{\[]")
_STRUCTURAL: Final = re.compile(r'[{}\[\]"]')
# Possessive quantifiers: the body of a JSON string is consumed in one linear pass, whatever follows.
_STRING_BODY: Final = re.compile(r'(?:[^"\\]++|\\.)*+', re.DOTALL)
_CLOSER_OF: Final = {"{": "}", "[": "]"}


class _NonFiniteNumberError(ValueError):
    """A number JSON cannot carry (NaN, Infinity, or a literal that overflows a double)."""


def _reject_constant(name: str) -> NoReturn:
    raise _NonFiniteNumberError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        shown = literal if len(literal) <= 40 else literal[:37] + "..."
        raise _NonFiniteNumberError(f"the number {shown} does not fit in a double")
    return value


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _where(text: str, position: int) -> str:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return f"line {line} column {column}"


def _decode_failure(text: str, offset: int, exc: BaseException, context: str) -> JSONExtractionError:
    """Turns what the json module raised while parsing ``text`` from ``offset`` into our error."""
    if isinstance(exc, RecursionError):
        return JSONExtractionError(
            "too_deep", f"{context}JSON nested too deeply to parse (beyond Python's recursion limit)", offset
        )
    if isinstance(exc, json.JSONDecodeError):
        position = offset + exc.pos
        message = exc.msg.removesuffix(" at")  # "Invalid control character at"
        return JSONExtractionError("invalid_json", f"{context}{message} at {_where(text, position)}", position)
    # NaN/Infinity, overflowing floats, integers longer than int's string-conversion limit.
    return JSONExtractionError("invalid_json", f"{context}{exc}")


# Where a surrogate can be: raw, or escaped (\uD800-\uDFFF). Only a value whose text has one is walked.
_SURROGATE_HINT: Final = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _refuse_surrogates(text: str, start: int, end: int, value: Any) -> Any:
    """``value``, parsed from ``text[start:end]``, unless one of its strings (or keys) holds a surrogate.

    An escaped pair (``"\\ud83d\\ude00"``) is decoded into the one character it encodes; what is left is
    a lone half, or raw halves, which are no character.

    Raises:
        JSONExtractionError: ``invalid_json``, naming the first surrogate found.
    """
    if _SURROGATE_HINT.search(text, start, end) is None:
        return value
    work = [value]
    while work:  # iterative: the value may be as deep as json accepts
        item = work.pop()
        strings: list[Any]
        if isinstance(item, dict):
            strings = list(item)
            work.extend(item.values())
        elif isinstance(item, list):
            strings = []
            work.extend(item)
        else:
            strings = [item]
        for string in strings:
            found = _SURROGATE.search(string) if isinstance(string, str) else None
            if found is not None:
                raise JSONExtractionError(
                    "invalid_json",
                    f"a string holds \\u{ord(found.group()):04x}, a lone surrogate "
                    "(half of a UTF-16 pair), not a character",
                )
    return value


_VALUE_FIRST: Final = frozenset('{["-0123456789tfnNI')  # how a JSON value (or NaN, Infinity) can start


class _NotWholeError(Exception):
    """Cheap stand-in for a JSONExtractionError nobody will read (its message would count lines)."""


def _parse_whole(text: str, start: int, end: int, context: str | None = "") -> Any:
    """The JSON value that is all of ``text[start:end]``, whitespace aside.

    Raises:
        JSONExtractionError: it is not, with ``context`` before the message.
        _NotWholeError: it is not, and ``context`` is None (the caller wants no message).
    """
    chunk = text[start:end]
    stripped = chunk.strip()
    if not stripped or (context is None and stripped[0] not in _VALUE_FIRST):
        if context is None:
            raise _NotWholeError
        raise JSONExtractionError("empty", f"{context}nothing but whitespace", start)
    try:
        value, stop = _DECODER.raw_decode(stripped)
    except (ValueError, RecursionError) as exc:
        if context is None:
            raise _NotWholeError from None
        raise _decode_failure(text, start + len(chunk) - len(chunk.lstrip()), exc, context) from None
    if stop != len(stripped):
        if context is None:
            raise _NotWholeError
        rest = stripped[stop:]
        position = start + len(chunk) - len(chunk.lstrip()) + stop + len(rest) - len(rest.lstrip())
        raise JSONExtractionError(
            "trailing_garbage", f"{context}unexpected text after the JSON value at {_where(text, position)}", position
        )
    return value


@dataclass(frozen=True, slots=True)
class _Fence:
    start: int  # first character of the opening fence line
    end: int  # just past the closing fence line, or the end of the text
    content_start: int
    content_end: int
    language: str  # first word of the info string, lower-cased; "" when untagged


def _fence_lines(text: str) -> Iterator[tuple[int, int, str, str]]:
    """``(line start, line end, marker, rest of line)`` of every line that starts with a fence marker.

    ``str.find`` jumps to the next three backticks or tildes (a regular expression
    anchored at every line start is several times slower on ordinary text); each
    line is then looked at once.
    """
    pos = 0
    # The next occurrence of each marker, looked for again only once passed: searching for a marker
    # that does not occur at every line would be quadratic.
    next_of = {"```": text.find("```"), "~~~": text.find("~~~")}
    while True:
        for marker, found in next_of.items():
            if 0 <= found < pos:
                next_of[marker] = text.find(marker, pos)
        hits = [found for found in next_of.values() if found >= 0]
        if not hits:
            return
        hit = min(hits)
        line_start = text.rfind("\n", pos, hit) + 1 or pos  # pos is always a line start
        line_end = text.find("\n", hit)
        line_end = len(text) if line_end < 0 else line_end
        line = _FENCE_LINE.match(text, line_start, line_end)
        if line is not None:
            yield line_start, line_end, line.group(1), line.group(2)
        pos = line_end + 1


def _find_fences(text: str) -> list[_Fence]:
    fences: list[_Fence] = []
    if "```" not in text and "~~~" not in text:
        return fences
    opening: tuple[int, int, str, str] | None = None  # start, end, marker, language
    for line_start, line_end, marker, rest in _fence_lines(text):
        if opening is None:
            if marker[0] == "`" and "`" in rest:
                continue  # CommonMark: a backtick info string cannot hold a backtick ("```x```" is inline code)
            words = rest.split(maxsplit=1)
            opening = (line_start, line_end, marker, words[0].lower() if words else "")
        elif marker[0] == opening[2][0] and len(marker) >= len(opening[2]) and not rest.strip():
            fences.append(_Fence(opening[0], line_end, min(opening[1] + 1, line_start), line_start, opening[3]))
            opening = None
    if opening is not None:  # never closed: runs to the end of the text
        fences.append(_Fence(opening[0], len(text), min(opening[1] + 1, len(text)), len(text), opening[3]))
    return fences


ScanOutcome = Literal["closed", "mismatched", "unclosed"]


class _BracketScanner:
    """Finds prose candidates in ``text[start:end]``, left to right, each character visited once.

    :meth:`next_start` gives the next opening bracket outside earlier candidates;
    :meth:`finish` follows that candidate to its end and moves past it.
    """

    __slots__ = ("_end", "_pos", "_text", "starts")

    def __init__(self, text: str, start: int, end: int) -> None:
        self._text = text
        self._pos = start
        self._end = end
        self.starts = 0  # candidates started, so that tests can check the bound

    def next_start(self) -> int | None:
        found = _OPENER.search(self._text, self._pos, self._end)
        if found is None:
            self._pos = self._end
            return None
        self.starts += 1
        return found.start()

    def skip_to(self, position: int) -> None:
        """Goes on after a candidate the parser read whole, ending at ``position``."""
        self._pos = position

    def finish(self, start: int) -> tuple[ScanOutcome, int]:
        """Scans the candidate opened at ``start``.

        Returns:
            ``("closed", end)`` when its brackets balance (``end`` is just past the
            closing bracket); ``("mismatched", position)`` when they balance only
            if a closing bracket of the wrong kind counts (the position of the
            first such bracket); ``("unclosed", start)`` when the text ends first.
        """
        text, end = self._text, self._end
        expected = [_CLOSER_OF[text[start]]]
        mismatch: int | None = None
        pos = start + 1
        while True:
            found = _STRUCTURAL.search(text, pos, end)
            if found is None:
                self._pos = end
                return "unclosed", start
            at = found.start()
            char = text[at]
            if char == '"':
                string_end = _STRING_BODY.match(text, at + 1, end)
                pos = (string_end.end() if string_end is not None else at + 1) + 1
                if pos > end:  # the text ends inside a string
                    self._pos = end
                    return "unclosed", start
            elif char in _CLOSER_OF:
                expected.append(_CLOSER_OF[char])
                pos = at + 1
            else:
                # A closer of the wrong kind still closes, so that a broken candidate is skipped as a
                # whole rather than mined for the fragments after the break.
                if char != expected.pop() and mismatch is None:
                    mismatch = at
                pos = at + 1
                if not expected:
                    self._pos = pos
                    return ("closed", pos) if mismatch is None else ("mismatched", mismatch)


@dataclass(frozen=True, slots=True)
class _FailedCandidate:
    """A prose candidate that did not give a value; its error is built only if it is the one reported."""

    start: int
    progress: int  # how far into it the parser (or the scanner) got: the likeliest intended answer got furthest
    outcome: ScanOutcome
    where: int
    failure: BaseException | None  # what the parser raised, for a closed candidate
    offset: int  # where the parser started counting: 0 for a try on the whole text, else the candidate

    def error(self, text: str) -> JSONExtractionError:
        if self.outcome == "mismatched":
            return JSONExtractionError(
                "unbalanced",
                f"{text[self.where]!r} at {_where(text, self.where)} does not close the bracket opened before it",
                self.where,
            )
        if self.outcome == "unclosed":
            return JSONExtractionError(
                "unbalanced", f"{text[self.start]!r} at {_where(text, self.start)} is never closed", self.start
            )
        if self.failure is None:
            return JSONExtractionError(
                "invalid_json",
                f"{_EXPECTED[text[self.start]]} at {_where(text, self.where)}",
                self.where,
            )
        return _decode_failure(text, self.offset, self.failure, "")


# What may follow an opening bracket in JSON; anything else fails without asking the parser (much cheaper).
_VALUE_START: Final = {
    "{": re.compile(r'[ \t\n\r]*["}]'),
    "[": re.compile(r'[ \t\n\r]*[-"0-9tfnNI\[\]{]'),  # N, I: so that NaN and Infinity get their own message
}
_EXPECTED: Final = {
    "{": "Expecting property name enclosed in double quotes",
    "[": "Expecting value",
}
_SKIP_SPACE: Final = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, pos: int, end: int) -> int:
    match = _SKIP_SPACE.match(text, pos, end)
    return pos if match is None else match.end()


def _search_prose(text: str, start: int, end: int, budget: list[int]) -> tuple[bool, Any, _FailedCandidate | None]:
    """The first candidate in ``text[start:end]`` that is balanced and parses.

    Returns ``(True, (value, start, end), None)`` when found, else ``(False, None, failed)`` with
    the failed candidate the parser got furthest into (the likeliest to be the
    intended answer), or ``None`` when there was no candidate at all. ``budget``
    holds how many fast parser tries are left for the whole extraction.
    """
    furthest: list[_FailedCandidate] = []
    for located in _prose_values(text, start, end, budget, furthest):
        return True, located, None
    return False, None, furthest[0] if furthest else None


def _failed_candidate(
    candidate: int, end: int, outcome: ScanOutcome, where: int, *, failure: BaseException | None, offset: int
) -> _FailedCandidate:
    if outcome == "unclosed":
        progress = end - candidate
    elif isinstance(failure, json.JSONDecodeError):
        progress = offset + failure.pos - candidate
    else:
        progress = where - candidate
    return _FailedCandidate(candidate, progress, outcome, where, failure, offset)


def _prose_values(
    text: str, start: int, end: int, budget: list[int], furthest_holder: list[_FailedCandidate]
) -> Iterator[tuple[Any, int, int]]:
    """Every candidate in ``text[start:end]`` that is balanced and parses, as ``(value, start, end)``, in order.

    Once exhausted, ``furthest_holder`` holds the failed candidate the parser got furthest into, if any.
    """
    scanner = _BracketScanner(text, start, end)
    furthest: _FailedCandidate | None = None
    while (candidate := scanner.next_start()) is not None:
        failure: BaseException | None = None
        offset = 0
        plausible = _VALUE_START[text[candidate]].match(text, candidate + 1, end) is not None
        if plausible and budget[0] > 0:
            budget[0] -= 1
            try:
                value, stop = _DECODER.raw_decode(text, candidate)
            except (ValueError, RecursionError) as exc:
                failure = exc
            else:
                if stop <= end:
                    scanner.skip_to(stop)
                    yield value, candidate, stop
                    continue
        outcome, where = scanner.finish(candidate)
        if outcome == "closed" and plausible and failure is None:
            try:
                # A slice, not the whole text: the JSONDecodeError of a failure counts lines up to its position.
                value = _DECODER.raw_decode(text[candidate:where])[0]
            except (ValueError, RecursionError) as exc:
                failure, offset = exc, candidate
            else:
                yield value, candidate, where
                continue
        if outcome == "closed" and not plausible:
            where = _skip_space(text, candidate + 1, end)
        failed = _failed_candidate(candidate, end, outcome, where, failure=failure, offset=offset)
        if furthest is None or failed.progress > furthest.progress:
            furthest = failed
    if furthest is not None:
        furthest_holder[:] = [furthest]


def _kind_of(value: Any) -> str:
    match value:
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case str():
            return "string"
        case None:
            return "null"
    return type(value).__name__


def _check_text(text: str, max_chars: int | None) -> None:
    if not isinstance(text, str):
        raise TypeError(f"extract_json() takes a str, not {type(text).__name__}")
    if max_chars is not None:
        if max_chars < 0:
            raise ConfigurationError(f"max_chars must be >= 0 or None, got {max_chars}")
        if len(text) > max_chars:
            raise JSONExtractionError(
                "too_long", f"the text has {len(text):,} characters, more than max_chars={max_chars:,}; not parsed"
            )
    if not text or text.isspace():
        raise JSONExtractionError("empty", "the text is empty" if not text else "the text is only whitespace")


def _search_fences(text: str, fences: list[_Fence]) -> tuple[bool, Any, JSONExtractionError | None]:
    """The first JSON object or array that is the whole content of a ``json`` or untagged block, and its span."""
    first_failed: _Fence | None = None
    for fence in fences:
        if fence.language not in _JSON_FENCE_LANGUAGES:
            continue
        try:
            value = _parse_whole(text, fence.content_start, fence.content_end, None)
        except _NotWholeError:
            first_failed = first_failed or fence
            continue
        if isinstance(value, dict | list):
            return True, (value, fence.content_start, fence.content_end), None
        first_failed = first_failed or fence
    if first_failed is None:
        return False, None, None
    # Messages are built for the reported block only: each counts the lines before it.
    context = f"in the fenced block at {_where(text, first_failed.start)}: "
    try:
        value = _parse_whole(text, first_failed.content_start, first_failed.content_end, context)
    except JSONExtractionError as error:
        return False, None, error
    return (
        False,
        None,
        JSONExtractionError(
            "scalar", f"{context}a JSON {_kind_of(value)}, not an object or array", first_failed.content_start
        ),
    )


def _search_outside(text: str, fences: list[_Fence]) -> tuple[bool, Any, _FailedCandidate | None]:
    """The prose step over every stretch of text between fenced blocks."""
    budget = [_FAST_TRIES]
    furthest: _FailedCandidate | None = None
    segment_start = 0
    for segment_end, next_start in [*((f.start, f.end) for f in fences), (len(text), len(text))]:
        found, value, failed = _search_prose(text, segment_start, segment_end, budget)
        if found:
            return True, value, None
        if failed is not None and (furthest is None or failed.progress > furthest.progress):
            furthest = failed
        segment_start = next_start
    return False, None, furthest


def _why_not_whole(text: str) -> JSONExtractionError:
    try:
        _parse_whole(text, 0, len(text))
    except JSONExtractionError as error:
        return error
    raise AssertionError("the text was found not to be JSON as a whole, then to be")  # pragma: no cover


def parse_whole_json(text: str) -> Any:
    """The JSON value that is all of ``text``, whitespace aside, parsed as strictly as :func:`extract_json` parses.

    For text that is JSON or nothing, such as a tool call's arguments: no fences, no prose; ``NaN``, ``Infinity``
    and numbers that overflow a double are refused, and JSON nested too deeply for Python is ``too_deep``
    (``json.loads`` raises :class:`RecursionError` for it).

    Raises:
        JSONExtractionError: ``text`` is empty, not JSON, or more than one value.
        TypeError: ``text`` is not a str.
    """
    _check_text(text, None)
    return _refuse_surrogates(text, 0, len(text), _parse_whole(text, 0, len(text)))


def locate_json(text: str, *, max_chars: int | None = None, allow_prose: bool = True) -> tuple[Any, int, int]:
    """What :func:`extract_json` returns, and where in ``text`` it was found: ``(value, start, end)``.

    ``text[start:end]`` is the JSON (whitespace aside): all of the text, the content of a fenced block, or the
    balanced brackets in prose. Same arguments and errors as :func:`extract_json`.
    """
    value, start, end = _locate(text, max_chars, allow_prose)
    return _refuse_surrogates(text, start, end, value), start, end


def _locate(text: str, max_chars: int | None, allow_prose: bool) -> tuple[Any, int, int]:
    _check_text(text, max_chars)
    try:
        return _parse_whole(text, 0, len(text), None), 0, len(text)
    except _NotWholeError:
        pass  # why not is worked out only if it is reported

    fences = _find_fences(text)
    found, located, fence_error = _search_fences(text, fences)
    if found:
        return cast(tuple[Any, int, int], located)
    furthest: _FailedCandidate | None = None
    if allow_prose:
        found, located, furthest = _search_outside(text, fences)
        if found:
            return cast(tuple[Any, int, int], located)

    if fence_error is not None:
        raise fence_error
    if furthest is not None:
        raise furthest.error(text)
    whole_text_error = _why_not_whole(text)
    if not allow_prose:
        raise whole_text_error
    skipped = sorted({f.language for f in fences if f.language not in _JSON_FENCE_LANGUAGES})
    note = f"; fenced blocks tagged {', '.join(skipped)} are not read as JSON" if skipped else ""
    raise JSONExtractionError(
        "no_json", f"no JSON object or array found, and the text as a whole is not JSON ({whole_text_error}){note}"
    )


def json_candidates(text: str, *, max_chars: int | None = None) -> Iterator[tuple[Any, int, int]]:
    """Every value :func:`extract_json` could take from ``text``, as ``(value, start, end)``, in the order tried.

    The first is what :func:`extract_json` returns. Then: the other ``json`` or untagged fenced blocks that hold an
    object or array, then every balanced object or array in the prose that parses (the scan goes on after each
    one, not inside it). A value holding a lone surrogate is left out. Each character is parsed a bounded number
    of times, as for :func:`extract_json`; nothing is yielded for a text that fails its checks.
    """
    try:
        _check_text(text, max_chars)
    except JSONExtractionError:
        return
    try:
        value = _parse_whole(text, 0, len(text), None)
    except _NotWholeError:
        pass
    else:
        yield from _without_surrogates(text, [(value, 0, len(text))])
        return
    fences = _find_fences(text)
    for fence in fences:
        if fence.language not in _JSON_FENCE_LANGUAGES:
            continue
        try:
            value = _parse_whole(text, fence.content_start, fence.content_end, None)
        except _NotWholeError:
            continue
        if isinstance(value, dict | list):
            yield from _without_surrogates(text, [(value, fence.content_start, fence.content_end)])
    budget = [_FAST_TRIES]
    segment_start = 0
    for segment_end, next_start in [*((f.start, f.end) for f in fences), (len(text), len(text))]:
        yield from _without_surrogates(text, _prose_values(text, segment_start, segment_end, budget, []))
        segment_start = next_start


def _without_surrogates(text: str, located: Iterable[tuple[Any, int, int]]) -> Iterator[tuple[Any, int, int]]:
    for value, start, end in located:
        try:
            _refuse_surrogates(text, start, end, value)
        except JSONExtractionError:
            continue
        yield value, start, end


def extract_json(text: str, *, max_chars: int | None = None, allow_prose: bool = True) -> Any:
    """Returns the JSON value a model meant, or raises JSONExtractionError with why.

    Tried in order (see the module documentation for the exact rules):

    1. the whole text, whitespace aside (any JSON value, scalars included);
    2. fenced blocks tagged ``json`` or untagged: the first whose content is
       exactly one JSON object or array;
    3. unless ``allow_prose`` is false, the first balanced ``{...}`` or ``[...]``
       outside fenced blocks that parses.

    Args:
        text: What the model wrote.
        max_chars: Longer texts are refused with reason ``"too_long"`` before any
            parsing. ``None`` means no limit (every step is linear anyway).
        allow_prose: Whether to look for a value inside prose (step 3).

    Returns:
        The parsed value: a dict, list, str, int, float, bool or None.

    Raises:
        JSONExtractionError: No value could be taken; ``reason`` says why. When
            fenced JSON blocks were present, it is the first block's error; else
            that of the prose candidate the parser got furthest into; else
            ``"no_json"`` (or, with ``allow_prose=False``, why the whole text is
            not JSON).
        ConfigurationError: ``max_chars`` is negative.
        TypeError: ``text`` is not a str.

    Example:
        >>> extract_json('Sure! Here it is: {"name": "Ada", "tags": ["}"]} Hope this helps.')
        {'name': 'Ada', 'tags': ['}']}
        >>> extract_json('```json\\n[1, 2]\\n```')
        [1, 2]
    """
    return locate_json(text, max_chars=max_chars, allow_prose=allow_prose)[0]
