"""What response validation costs per call: schema validation with each backend, and JSON extraction.

* A 30-field object validated against a compiled 30-field JSON Schema
  (jsonschema-rs, formats on) and against the equivalent pydantic model, valid
  and with three violations.
* :func:`extract_json` on a 2 KB answer: bare, fenced, and wrapped in prose.
* :func:`extract_json` on adversarial megabytes (unclosed brackets, fences on
  every line, candidates that never parse...): every step is linear, which
  ``tests/test_parse.py`` checks by counting work; here it is timed. And the
  refusal of a 20 MB text over ``max_chars``, which reads none of it.
* :meth:`ResponseSchema.of` on a cache hit (the cost of compiling "on every request").

Machines here are shared and noisy: the best of several rounds is printed, and
only the ratios within one run are worth comparing.

Run: ``python -m benchmarks.bench_schema``
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import BaseModel, create_model

from autogen_reliability.validation import JSONExtractionError, ResponseSchema, extract_json
from benchmarks.timing import best_per_call, quick_run, refuse_other_arguments

QUICK = quick_run()
ROUNDS = 1 if QUICK else 7
FIELDS = 30


def per_call_seconds(call: Callable[[], object], calls: int) -> float:
    return best_per_call(call, max(1, calls // 1000) if QUICK else calls, ROUNDS)


def thirty_fields() -> tuple[dict[str, Any], type[BaseModel], dict[str, Any]]:
    """A JSON Schema, the pydantic model that matches it, and a valid value, with 30 fields of mixed types."""
    kinds: list[tuple[str, Any, dict[str, Any], Any]] = [
        ("int", int, {"type": "integer", "minimum": 0}, 42),
        ("str", str, {"type": "string", "maxLength": 100}, "some text"),
        ("float", float, {"type": "number"}, 3.5),
        ("bool", bool, {"type": "boolean"}, True),
        ("tags", list[str], {"type": "array", "items": {"type": "string"}}, ["a", "b", "c"]),
    ]
    properties: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    value: dict[str, Any] = {}
    for index in range(FIELDS):
        kind, annotation, schema, sample = kinds[index % len(kinds)]
        name = f"{kind}_{index}"
        properties[name] = schema
        fields[name] = (annotation, ...)
        value[name] = sample
    properties["str_1"] = {"type": "string", "format": "date"}
    value["str_1"] = "2024-05-06"
    schema = {
        "title": "Thirty",
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    return schema, create_model("Thirty", **fields), value


# The shapes tests/test_parse.py counts the work of, at about a megabyte each.
ADVERSARIAL: dict[str, str] = {
    "unclosed braces": "{" * 1_000_000,
    "unclosed brackets, then garbage": "[" * 500_000 + "garbage" * 70_000,
    "balanced brackets, not JSON": "[x] " * 250_000,
    "trailing commas": "[1,] " * 200_000,
    "escaped quotes": '{"' + '{\\"' * 300_000,
    "fence lines": "```\n" * 250_000,
    "fences and open brackets": "```\n[x\n" * 140_000,
    "no brackets": "a" * 1_000_000,
    "JSON in prose": "Here: " + json.dumps({f"k{i}": ["x" * 10, i, {"z": "a}b"}] for i in range(20_000)}) + " bye",
}
ADVERSARIAL_ROUNDS = 1 if QUICK else 3


def extract_or_fail(text: str, **options: Any) -> None:
    with contextlib.suppress(JSONExtractionError):
        extract_json(text, **options)


def main() -> None:
    schema, model, value = thirty_fields()
    invalid = {**value, "int_0": "x", "bool_3": None, "tags_4": [1]}
    by_schema, by_model = ResponseSchema.of(schema), ResponseSchema.of(model)
    for compiled in (by_schema, by_model):
        assert compiled.validate(value) == []
        assert len(compiled.validate(invalid)) == 3

    print(f"best of {ROUNDS} rounds, per call:")
    print(f"  validate a {FIELDS}-field object")
    for label, compiled in (("jsonschema-rs", by_schema), ("pydantic", by_model)):
        valid = per_call_seconds(partial(compiled.validate, value), 20_000)
        broken = per_call_seconds(partial(compiled.validate, invalid), 5_000)
        print(f"    {label:<14} valid {valid * 1e6:7.2f} us   3 violations {broken * 1e6:7.2f} us")
    hit = per_call_seconds(lambda: ResponseSchema.of(schema), 5_000)
    hit_model = per_call_seconds(lambda: ResponseSchema.of(model), 50_000)
    print(f"  ResponseSchema.of cache hit: JSON Schema {hit * 1e6:.2f} us, model {hit_model * 1e6:.2f} us")

    answer = json.dumps({**value, "summary": "lorem ipsum dolor sit amet " * 45}, indent=2)
    assert 1800 < len(answer) < 2600, len(answer)
    texts = {
        "bare": answer,
        "fenced": f"Here is the result:\n```json\n{answer}\n```\nLet me know if you need anything else.",
        "in prose": f"Sure! Here it is: {answer} Hope this helps, and tell me if a field should change.",
    }
    print(f"  extract_json on a {len(answer) / 1000:.1f} KB answer")
    for label, text in texts.items():
        assert extract_json(text) == json.loads(answer)
        seconds = per_call_seconds(partial(extract_json, text), 5_000)
        print(f"    {label:<9} {seconds * 1e6:7.2f} us")
    print(f"    (json.loads alone: {per_call_seconds(lambda: json.loads(answer), 5_000) * 1e6:.2f} us)")

    print(f"  extract_json on adversarial texts (best of {ADVERSARIAL_ROUNDS})")
    for label, full_text in ADVERSARIAL.items():
        text = full_text[: len(full_text) // 100] if QUICK else full_text  # a smoke run: a hundredth
        seconds = best_per_call(partial(extract_or_fail, text), 1, ADVERSARIAL_ROUNDS)
        print(f"    {label:<32} {len(text) / 1e6:4.2f} MB {seconds * 1e3:8.1f} ms")
    huge = "{" * (200_000 if QUICK else 20_000_000)
    refused = per_call_seconds(partial(extract_or_fail, huge, max_chars=1000), 5_000)
    print(f"    {'refused: longer than max_chars':<32} {len(huge) / 1e6:5.2f} MB {refused * 1e6:8.2f} us")


if __name__ == "__main__":
    refuse_other_arguments("schema")
    main()
