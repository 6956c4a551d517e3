"""extract_json: the JSON value a model meant, from bare JSON, fenced blocks or prose, or a reason why not."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autogen_reliability._errors import ConfigurationError
from autogen_reliability.validation._parse import (
    ExtractionFailure,
    JSONExtractionError,
    _BracketScanner,
    extract_json,
    json_candidates,
    parse_whole_json,
)

from .parse_work import work_of


def failure(text: str, **options: Any) -> JSONExtractionError:
    with pytest.raises(JSONExtractionError) as caught:
        extract_json(text, **options)
    return caught.value


# -- the whole text ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1, "b": [true, null]}', {"a": 1, "b": [True, None]}),
        ("[1, 2.5, -3e2]", [1, 2.5, -300.0]),
        ('  \n {"a": {}}\n\t ', {"a": {}}),
        # Scalars count when they are the whole text: the schema decides whether one is acceptable.
        ("42", 42),
        ('"x"', "x"),
        ("true", True),
        ("null", None),
        # A JSON string holding JSON is a string: no second decoding.
        ('"{\\"a\\": 1}"', '{"a": 1}'),
    ],
)
def test_the_whole_text_as_json(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


def test_whole_text_with_trailing_garbage_is_not_json_as_a_whole() -> None:
    error = failure('{"a": 1} xyz', allow_prose=False)
    assert error.reason == "trailing_garbage"
    assert error.position == 9
    # With prose allowed, the object is found inside the prose: intended.
    assert extract_json('{"a": 1} xyz') == {"a": 1}


def test_errors_say_what_and_where() -> None:
    error = failure('{"a": 1 "b": 2}')
    assert error.reason == "invalid_json"
    assert error.position == 8
    assert str(error) == "invalid_json: Expecting ',' delimiter at line 1 column 9"
    assert error.detail == "Expecting ',' delimiter at line 1 column 9"


def test_positions_count_from_the_start_of_the_text() -> None:
    error = failure('Result:\n  {"a": 1,\n   "b" 2}', allow_prose=True)
    assert error.reason == "invalid_json"
    assert error.position == 26
    assert "Expecting ':' delimiter at line 3 column 8" in str(error)


@pytest.mark.parametrize("text", ["NaN", "[NaN]", '{"a": Infinity}', "[-Infinity]", '{"big": 1e400}', "x [1e999]"])
def test_non_finite_numbers_are_rejected(text: str) -> None:
    error = failure(text)
    assert error.reason in {"invalid_json", "no_json"}
    assert "NaN" in str(error) or "Infinity" in str(error) or "does not fit in a double" in str(error)


def test_non_finite_numbers_in_prose_are_invalid_json() -> None:
    error = failure('Here: {"a": NaN}')
    assert error.reason == "invalid_json"
    assert "NaN is not valid JSON" in str(error)


def test_raw_control_characters_in_strings_are_invalid() -> None:
    error = failure('{"a": "line\nbreak"}')
    assert error.reason == "invalid_json"
    assert "Invalid control character at line 1 column 12" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "cut \\ud83d"}',  # half of an emoji, as the model escaped it
        'Here: {"note": "\\ude00 x"}',
        '```json\n["ok", {"\\udbff": 1}]\n```',
        '{"a": "raw \ud83d"}',  # a lone surrogate the SDK decoded from the provider's own escape
        '{"a": "\ud83d\ude00"}',  # two raw halves are still no character (no UTF-8 encoder takes them)
    ],
)
def test_lone_surrogates_are_invalid(text: str) -> None:
    # json.loads takes them; pydantic's parser (AssistantAgent's model_validate_json) and every UTF-8 encoder
    # refuse them, so the agent failed on an answer that validation had passed.
    error = failure(text)
    assert error.reason == "invalid_json"
    assert "(half of a UTF-16 pair), not a character" in str(error)
    if text.startswith("{"):  # tool-call arguments are parsed as strictly
        with pytest.raises(JSONExtractionError, match="not a character"):
            parse_whole_json(text)


def test_json_candidates_are_every_value_in_the_order_tried() -> None:
    text = (
        'See [1] and {"a": 1 "b"} or {"c": {"d": 2}} then [3]\n```json\n{"f": 0}\n```\n```\n5\n```\n{"e": "\\ud83d"} [4'
    )
    found = [(value, text[start:end].strip()) for value, start, end in json_candidates(text)]
    assert found == [
        ({"f": 0}, '{"f": 0}'),
        ([1], "[1]"),
        ({"c": {"d": 2}}, '{"c": {"d": 2}}'),  # not {"d": 2} inside it
        ([3], "[3]"),
    ]
    assert found[0][0] == extract_json(text)
    assert list(json_candidates('  {"a": 1} ')) == [({"a": 1}, 0, 11)]
    assert list(json_candidates("no json", max_chars=3)) == []


def test_escaped_surrogate_pairs_are_characters() -> None:
    assert extract_json('{"a": "\\ud83d\\ude00", "\\\\ud800": 1}') == {"a": "\U0001f600", "\\ud800": 1}


@pytest.mark.parametrize(("text", "detail"), [("", "the text is empty"), ("  \n\t ", "the text is only whitespace")])
def test_empty_text(text: str, detail: str) -> None:
    error = failure(text)
    assert error.reason == "empty"
    assert error.detail == detail


def test_prose_without_json() -> None:
    error = failure("Sorry, I cannot help with that.")
    assert error.reason == "no_json"
    assert "no JSON object or array found" in str(error)
    assert failure("Sorry.", allow_prose=False).reason == "invalid_json"


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="max_chars"):
        extract_json("{}", max_chars=-1)
    with pytest.raises(TypeError, match="str"):
        extract_json(b"{}")  # type: ignore[arg-type]


def test_the_error_pickles() -> None:
    error = failure('{"a": 1')
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.position, copy.detail, str(copy)) == (
        error.reason,
        error.position,
        error.detail,
        str(error),
    )


# -- max_chars ----------------------------------------------------------------------------------------------------


class Tripwire(str):
    """A text that fails the test if anything looks inside it; only its length may be read."""

    __slots__ = ()

    def _touched(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("the text was looked at")

    strip = lstrip = rstrip = isspace = find = count = split = splitlines = __getitem__ = __iter__ = _touched


def test_too_long_is_refused_before_parsing() -> None:
    error = failure('{"a": 1}', max_chars=7)  # would parse, were it looked at
    assert error.reason == "too_long"
    assert "8 characters, more than max_chars=7" in str(error)
    assert failure(Tripwire("x" * 100), max_chars=99).reason == "too_long"
    assert extract_json('{"a": 1}', max_chars=8) == {"a": 1}


def test_too_long_costs_nothing_for_a_huge_text() -> None:
    # Not one character of it is read, by the text's methods, a regular expression or the JSON decoder: its
    # length is checked first. Counted, not timed (benchmarks/bench_schema.py times it).
    work = work_of("{" * 20_000_000, max_chars=1000)
    assert work.reason == "too_long"
    assert work.characters == 0


# -- fenced blocks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'Here you go:\n```json\n{"a": 1}\n```\nAnything else?',
        '```\n{"a": 1}\n```',
        '```JSON\n{"a": 1}\n```',
        '~~~json\n{"a": 1}\n~~~',
        '````json title="answer"\n{"a": 1}\n````',
        '1. The answer:\n    ```json\n    {"a": 1}\n    ```',
        '```json\r\n{"a": 1}\r\n```\r\n',
        # Left open (cut off after the value), the fence runs to the end of the text, as in CommonMark.
        '```json\n{"a": 1}\n',
    ],
)
def test_fenced_blocks(text: str) -> None:
    assert extract_json(text) == {"a": 1}


def test_a_fenced_block_with_trailing_garbage_fails_and_is_not_truncated() -> None:
    text = 'Result:\n```json\n{"a": 1} oops\n```'
    error = failure(text)
    assert error.reason == "trailing_garbage"
    assert error.position == text.index("oops")
    assert str(error) == (
        "trailing_garbage: in the fenced block at line 2 column 1: "
        "unexpected text after the JSON value at line 3 column 10"
    )


def test_two_values_in_one_block_are_trailing_garbage() -> None:
    assert failure('```json\n{"a": 1}\n{"b": 2}\n```').reason == "trailing_garbage"


def test_the_first_block_that_parses_wins() -> None:
    text = '```json\n{"a": 1,}\n```\nFixed:\n```json\n{"a": 2}\n```\n```json\n{"a": 3}\n```'
    assert extract_json(text) == {"a": 2}


def test_a_fenced_block_beats_json_in_the_prose() -> None:
    assert extract_json('Input was {"x": 1}.\n```json\n{"a": 2}\n```') == {"a": 2}


def test_blocks_in_other_languages_are_not_read() -> None:
    text = 'Example:\n```python\nanswer = {"a": 1}\n```\n```jsonc\n{"b": 2}\n```'
    error = failure(text)
    assert error.reason == "no_json"
    assert "fenced blocks tagged jsonc, python are not read as JSON" in str(error)
    # A JSON block next to them is read.
    assert extract_json(text + '\n```json\n{"c": 3}\n```') == {"c": 3}


def test_a_fenced_scalar_is_not_an_answer() -> None:
    error = failure("```json\n42\n```")
    assert error.reason == "scalar"
    assert "a JSON number, not an object or array" in str(error)


def test_a_failing_block_reports_before_prose_errors() -> None:
    error = failure('Use [brackets].\n```json\n{"a": }\n```')
    assert error.reason == "invalid_json"
    assert "in the fenced block at line 2 column 1" in str(error)


def test_a_failing_block_does_not_hide_json_in_the_prose_outside_it() -> None:
    assert extract_json('```json\n{"a": }\n```\nSorry, corrected: {"a": 1}') == {"a": 1}


def test_triple_backticks_inside_a_line_are_not_a_fence() -> None:
    assert extract_json('Answer: ```json {"a": 1}``` done') == {"a": 1}


def test_fenced_errors_without_allow_prose() -> None:
    assert failure('```json\n{"a": 1} x\n```', allow_prose=False).reason == "trailing_garbage"
    assert extract_json('```json\n{"a": 1}\n```', allow_prose=False) == {"a": 1}
    assert failure('Here: {"a": 1}', allow_prose=False).reason == "invalid_json"


# -- prose --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Sure! Here it is: {"name": "Ada", "age": 36} Hope this helps', {"name": "Ada", "age": 36}),
        ('Sure! [1, {"a": [2, 3]}] done', [1, {"a": [2, 3]}]),
        # Brackets inside strings do not count.
        ('x {"a": "}{", "b": "]["} y', {"a": "}{", "b": "]["}),
        # Nor do escaped quotes end a string.
        ('x {"a": "say \\"}\\" now", "b": "\\\\"} y', {"a": 'say "}" now', "b": "\\"}),
        ('nested: {"a": {"b": {"c": [[], {}]}}}.', {"a": {"b": {"c": [[], {}]}}}),
        # A balanced group that is not JSON is skipped as a whole.
        ('Use {curly braces} like this: {"a": 1}', {"a": 1}),
        ('See [the docs](https://x.y) and {"a": 1}', {"a": 1}),
        ('{"a": 1,} was wrong; correct: {"a": 1}', {"a": 1}),
        # The first candidate that parses wins, whatever its kind.
        ('first {"a": 1} then {"b": 2}', {"a": 1}),
        ('note [1] then {"a": 1}', [1]),
        ("empty: {} and []", {}),
    ],
)
def test_json_in_prose(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


def test_a_reply_cut_off_is_unbalanced_not_its_first_element() -> None:
    error = failure('Here: [{"a": 1}, {"b": 2}, {"c":')
    assert error.reason == "unbalanced"
    assert error.position == 6
    assert str(error) == "unbalanced: '[' at line 1 column 7 is never closed"


def test_almost_json_is_not_mined_for_fragments() -> None:
    # JavaScript- and Python-style objects: the inner object must not come back as the answer.
    for text in ['{name: "x", "data": {"a": 1}}', "{'a': 1, 'b': {\"c\": 2}}", '{"a": True, "b": {"c": 1}}']:
        error = failure(text)
        assert error.reason == "invalid_json", text


def test_mismatched_brackets_are_unbalanced() -> None:
    error = failure('{"a": [1, 2}, "b": {"c": 1}}')
    assert error.reason == "unbalanced"
    assert error.position == 11
    assert "'}' at line 1 column 12 does not close the bracket opened before it" in str(error)


def test_unterminated_string_is_unbalanced() -> None:
    assert failure('Here: {"a": "abc}').reason == "unbalanced"


def test_the_reported_error_is_the_candidate_the_parser_got_furthest_into() -> None:
    error = failure('Use [brackets] here. Result: {"a": 1,}')
    assert error.reason == "invalid_json"
    assert error.position == 37


def test_deep_nesting_is_an_error_not_a_recursion_error() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for text in (deep, f"Here: {deep} ok", f"```json\n{deep}\n```"):
        error = failure(text)
        assert error.reason == "too_deep"
        assert "recursion limit" in str(error)
    # Far past the fast tries, a deep candidate is still caught.
    assert failure("[x] " * 10 + deep).reason == "too_deep"


# -- bounds -------------------------------------------------------------------------------------------------------


def count_candidates(text: str) -> int:
    scanner = _BracketScanner(text, 0, len(text))
    while (start := scanner.next_start()) is not None:
        scanner.finish(start)
    return scanner.starts


@pytest.mark.parametrize(
    ("text", "candidates"),
    [
        # One unclosed candidate swallows the rest: not one candidate per bracket (which would be quadratic).
        ("{" * 100_000, 1),
        ("[" * 50_000 + "garbage", 1),
        ('[{"' * 50_000, 1),
        ("[" * 50_000 + "]" * 50_000, 1),
        # Candidates never overlap, so each character is scanned once.
        ("[x] " * 1000, 1000),
        ("{} " * 10, 10),
    ],
)
def test_the_scan_starts_each_candidate_once(text: str, candidates: int) -> None:
    assert count_candidates(text) == candidates


# Pathological shapes, by a scale: each is about 25,000 characters at scale 1. benchmarks/bench_schema.py times
# them at a megabyte.
PATHOLOGICAL: dict[str, Callable[[int], str]] = {
    "unclosed braces": lambda scale: "{" * (25_000 * scale),
    "unclosed brackets, then garbage": lambda scale: "[" * (12_500 * scale) + "garbage" * (1_750 * scale),
    "balanced brackets, not JSON": lambda scale: "[x] " * (6_250 * scale),
    "trailing commas": lambda scale: "[1,] " * (5_000 * scale),
    "escaped quotes": lambda scale: '{"' + '{\\"' * (7_500 * scale),
    "fence lines": lambda scale: "```\n" * (6_250 * scale),
    "fences and open brackets": lambda scale: "```\n[x\n" * (3_500 * scale),
    "no brackets": lambda scale: "a" * (25_000 * scale),
    "JSON in prose": lambda scale: (
        "Here: " + json.dumps({f"k{i}": ["x" * 10, i, {"z": "a}b"}] for i in range(500 * scale)}) + " bye"
    ),
}


@pytest.mark.parametrize("shape", sorted(PATHOLOGICAL))
def test_pathological_texts_take_work_linear_in_their_length(shape: str) -> None:
    # Counted, not timed: the characters read (by the text's methods, the regular expressions and the JSON
    # decoder) and the calls made, per character of the text. Four times the text costs no more per character:
    # a quadratic step would cost four times more. Measured: at most 7.5 characters read and 11 calls per
    # character, the same at both sizes.
    per_character = []
    for scale in (1, 4):
        text = PATHOLOGICAL[shape](scale)
        work = work_of(text)
        per_character.append((work.characters / len(text), work.calls / len(text)))
    (characters, calls), (characters_4x, calls_4x) = per_character
    assert characters_4x <= 10
    assert calls_4x <= 16
    assert characters_4x <= characters * 1.1
    assert calls_4x <= calls * 1.1


# -- properties ---------------------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)
containers = st.lists(values, max_size=5) | st.dictionaries(st.text(max_size=8), values, max_size=5)
# No brackets (they would be candidates), quotes (`"` + `[1]` + `"` is a JSON string) or fence characters.
prose = st.text(st.characters(exclude_characters='{}[]"`~', exclude_categories=["Cs"]), max_size=60)


@given(values, st.booleans())
def test_any_json_value_round_trips(value: Any, ascii_only: bool) -> None:
    assert extract_json(json.dumps(value, ensure_ascii=ascii_only)) == value


@given(prose, containers, prose, st.booleans())
def test_an_object_or_array_is_found_in_prose(before: str, value: Any, after: str, indent: bool) -> None:
    text = before + json.dumps(value, indent=2 if indent else None) + after
    assert extract_json(text) == value


@given(containers)
def test_a_fenced_value_is_found(value: Any) -> None:
    assert extract_json(f"Here:\n```json\n{json.dumps(value, indent=2)}\n```\nDone.") == value


jsonish = st.text(st.sampled_from(list('{}[]":,\\ \n\t`~json0123456789.-eEtrufalsNIy')), max_size=80)


@given(jsonish | st.text(max_size=80))
def test_any_text_gives_strict_json_or_our_error(text: str) -> None:
    outcome: Any
    try:
        outcome = extract_json(text)
    except JSONExtractionError as error:
        outcome = error
    if isinstance(outcome, JSONExtractionError):
        assert outcome.reason in get_args(ExtractionFailure)
        assert outcome.position is None or 0 <= outcome.position <= len(text)
    else:
        json.dumps(outcome, allow_nan=False)  # whatever comes back, any JSON parser can take back
