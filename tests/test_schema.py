"""ResponseSchema: one compiled schema per model or JSON Schema, every violation with its JSON pointer."""

from __future__ import annotations

import copy
import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from openai.lib._parsing._completions import type_to_response_format_param
from pydantic import BaseModel, ConfigDict, Field

from autogen_reliability._errors import ConfigurationError
from autogen_reliability.validation._schema import ResponseSchema, SchemaViolation


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    qty: int = Field(ge=0)


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int
    items: list[Item]
    note: str | None = None


ORDER_SCHEMA: dict[str, Any] = {
    "title": "Order",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "qty": {"type": "integer", "minimum": 0}},
                "required": ["name", "qty"],
                "additionalProperties": False,
            },
        },
        "note": {"type": ["string", "null"]},
    },
    "required": ["id", "items"],
    "additionalProperties": False,
}

VALID = {"id": 7, "items": [{"name": "pen", "qty": 2}, {"name": "ink", "qty": 0}], "note": None}


@pytest.fixture(params=["pydantic", "jsonschema"])
def order(request: pytest.FixtureRequest) -> ResponseSchema:
    return ResponseSchema.of(Order if request.param == "pydantic" else ORDER_SCHEMA)


def located(violations: list[SchemaViolation]) -> list[str]:
    return sorted(violation.path for violation in violations)


def test_a_valid_value_has_no_violations(order: ResponseSchema) -> None:
    assert order.validate(VALID) == []
    assert order.validate({"id": 1, "items": []}) == []


def test_wrong_type(order: ResponseSchema) -> None:
    [violation] = order.validate({**VALID, "id": "seven"})
    assert violation.path == "/id"
    assert "integer" in violation.message


def test_nested_array_items_are_located(order: ResponseSchema) -> None:
    value = {"id": 1, "items": [{"name": "pen", "qty": 1}, {"name": 3, "qty": -1}]}
    assert located(order.validate(value)) == ["/items/1/name", "/items/1/qty"]


def test_every_violation_is_reported_not_just_the_first(order: ResponseSchema) -> None:
    value = {"id": "x", "items": [{"name": 1, "qty": "many"}, "pen"], "note": 5}
    assert located(order.validate(value)) == ["/id", "/items/0/name", "/items/0/qty", "/items/1", "/note"]


def test_missing_and_extra_properties_are_located_as_each_backend_does() -> None:
    value = {"items": [{"name": "pen", "qty": 1, "colour": "red"}], "extra": True}
    by_model = ResponseSchema.of(Order).validate(value)
    by_schema = ResponseSchema.of(ORDER_SCHEMA).validate(value)
    # pydantic points at the missing or extra property, JSON Schema at the object that lacks or has it.
    assert [str(v) for v in by_model] == [
        "/id: Field required",
        "/items/0/colour: Extra inputs are not permitted",
        "/extra: Extra inputs are not permitted",
    ]
    assert sorted(str(v) for v in by_schema) == [
        '(root): "id" is a required property',
        "(root): Additional properties are not allowed ('extra' was unexpected)",
        "/items/0: Additional properties are not allowed ('colour' was unexpected)",
    ]


def test_a_value_of_the_wrong_kind_is_a_root_violation(order: ResponseSchema) -> None:
    [violation] = order.validate([1, 2])
    assert violation.path == ""
    assert str(violation).startswith("(root): ")


def test_pydantic_validates_in_lax_mode() -> None:
    # As pydantic does from JSON by default: a numeric string is an int.
    assert ResponseSchema.of(Order).validate({"id": "7", "items": []}) == []
    assert ResponseSchema.of(ORDER_SCHEMA).validate({"id": "7", "items": []}) != []


class StrictTypes(BaseModel):
    model_config = ConfigDict(strict=True)
    at: datetime
    day: date
    id: uuid.UUID
    colour: Colour
    pair: tuple[int, int]
    amount: Decimal


class Colour(enum.Enum):
    RED = "red"


def test_a_strict_model_validates_the_value_as_the_json_it_came_from() -> None:
    # In strict mode pydantic takes these from JSON text, as AssistantAgent parses the answer, not from the
    # Python str and list json.loads makes: every valid answer was refused ("Input should be a valid date").
    value = {
        "at": "2024-06-01T10:00:00Z",
        "day": "2024-06-01",
        "id": "12345678-1234-5678-1234-567812345678",
        "colour": "red",
        "pair": [1, 2],
        "amount": "1.50",
    }
    schema = ResponseSchema.of(StrictTypes)
    assert schema.validate(value) == []
    assert [str(v) for v in schema.validate({**value, "day": "June", "pair": [1]})] == [
        "/day: Input should be a valid date in the format YYYY-MM-DD, input is too short",
        "/pair: Field required",  # the missing second item, located at the tuple
    ]


def test_pydantic_union_member_names_are_not_part_of_the_path() -> None:
    class Choice(BaseModel):
        x: int | str
        scores: dict[str, int] = {}

    violations = ResponseSchema.of(Choice).validate({"x": [1], "scores": {"a/b": "high"}})
    assert [v.path for v in violations] == ["/x", "/x", "/scores/a~1b"]


def test_formats_are_checked() -> None:
    schema = ResponseSchema.of(
        {
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "born": {"type": "string", "format": "date"},
                "at": {"type": "string", "format": "date-time"},
                "id": {"type": "string", "format": "uuid"},
            },
        }
    )
    good = {
        "email": "ada@example.com",
        "born": "1815-12-10",
        "at": "2024-01-02T03:04:05Z",
        "id": "6f1c1a4e-3b7a-4c1e-9a3d-2a4b5c6d7e8f",
    }
    assert schema.validate(good) == []
    bad = {"email": "not an email", "born": "1815-13-45", "at": "yesterday", "id": "42"}
    assert [str(v) for v in schema.validate(bad)] == [
        '/email: "not an email" is not a "email"',
        '/born: "1815-13-45" is not a "date"',
        '/at: "yesterday" is not a "date-time"',
        '/id: "42" is not a "uuid"',
    ]


def test_pointers_escape_slash_and_tilde() -> None:
    schema = ResponseSchema.of({"type": "object", "properties": {"a/b~c": {"type": "integer"}}})
    assert [v.path for v in schema.validate({"a/b~c": "x"})] == ["/a~1b~0c"]


def test_messages_stay_short_for_huge_values() -> None:
    schema = ResponseSchema.of({"type": "object", "properties": {"text": {"type": "string", "maxLength": 10}}})
    [violation] = schema.validate({"text": "y" * 100_000})
    assert len(violation.message) <= 300
    assert violation.message.endswith("is longer than 10 characters")


def test_values_that_are_not_json_are_refused_by_the_json_schema_backend() -> None:
    with pytest.raises(ValueError, match="set"):
        ResponseSchema.of(ORDER_SCHEMA).validate({"id": {1, 2}, "items": []})


def test_an_invalid_value_nested_too_deep_to_list_its_errors_is_one_root_violation() -> None:
    # jsonschema-rs judges such a value (is_valid) but raised "ValueError: Recursion limit reached" when asked
    # for its errors, from 256 levels down: the call that got such an answer failed with that bare error
    # instead of re-asking.
    schema = ResponseSchema.of({"type": "object", "properties": {"a": {"type": "integer"}}})
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    [violation] = schema.validate({"a": deep})
    assert violation.path == ""
    assert violation.message == (
        "the value does not match the schema (nested too deeply for its violations to be listed)"
    )
    assert schema.validate({"a": 1}) == []


HOSTILE_KEY = "\x1b]52;c;aGk=\x07"  # an OSC 52 clipboard write


@pytest.mark.parametrize("backend", ["pydantic", "jsonschema"])
def test_what_the_model_wrote_reaches_violation_text_only_escaped(backend: str) -> None:
    # jsonschema-rs quotes the offending value and pydantic's location names the offending key: a terminal
    # showing a ResponseValidationError (or a log of validation_errors) acted on the escapes they carried.
    schema = ResponseSchema.of(Order if backend == "pydantic" else ORDER_SCHEMA)
    value = {"id": "\x9b2J\u202e", "items": [], HOSTILE_KEY: 1}
    violations = schema.validate(value)
    assert {v.path for v in violations} >= ({"/id", "/" + HOSTILE_KEY} if backend == "pydantic" else {"/id"})
    for violation in violations:
        assert violation.message.isprintable()
        assert str(violation).isprintable()
    shown = " ".join(str(v) for v in violations)
    assert ("\\x1b]52" in shown) == (backend == "pydantic" or "was unexpected" in shown)
    if backend == "jsonschema":
        assert '"\\x9b2J\\u202e" is not of type "integer"' in shown
    assert str(SchemaViolation("/a\tb", "line\nbreak")) == "/a\\tb: line\\nbreak"


def test_violation_text() -> None:
    assert str(SchemaViolation("/items/0/name", "Input should be a valid string")) == (
        "/items/0/name: Input should be a valid string"
    )
    assert str(SchemaViolation("", "'age' is a required property")) == "(root): 'age' is a required property"


# -- schemas that are not valid -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "strnig"}, '/type: "strnig" is not a JSON Schema type'),
        ({"minimum": "five"}, '/minimum: "five" is not of type "number"'),
        ({"properties": {"a": {"type": "integr"}}}, '/properties/a/type: "integr" is not a JSON Schema type'),
        ({"required": "name"}, '/required: "name" is not of type "array"'),
        ({"items": [{"type": "string"}]}, "/items: "),  # draft-07 tuple form, not 2020-12
        ({"pattern": "("}, '/pattern: "(" is not a "regex"'),
        ({"$ref": "#/$defs/Nope"}, "Pointer '/$defs/Nope' does not exist"),
        ({"$ref": "https://example.com/schema.json"}, "Retrieval is disabled"),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "responses are validated as Draft 2020-12"),
        ({"type": "object", "default": float("nan")}, "JSON values only"),
        ({"enum": {1, 2}}, "set is not a JSON type"),
    ],
)
def test_an_invalid_json_schema_is_refused_at_construction(schema: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ResponseSchema.of(schema)
    assert problem in str(caught.value)


def test_every_problem_of_an_invalid_schema_is_named() -> None:
    with pytest.raises(ConfigurationError) as caught:
        ResponseSchema.of({"type": "strnig", "minimum": "five"})
    assert str(caught.value).startswith("invalid JSON Schema (Draft 2020-12): ")
    assert "/type" in str(caught.value)
    assert "/minimum" in str(caught.value)


@pytest.mark.parametrize(
    "schema", [True, None, 42, "object", [{"type": "object"}], list[int], BaseModel, Item(name="pen", qty=1)]
)
def test_things_that_are_not_schemas_are_refused(schema: Any) -> None:
    with pytest.raises(ConfigurationError, match="pydantic model class or a JSON Schema object"):
        ResponseSchema.of(schema)


def test_the_2020_12_schema_keyword_is_accepted() -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "integer"}
    assert ResponseSchema.of(schema).validate(3) == []


def test_local_refs_resolve() -> None:
    schema = {
        "$defs": {"Name": {"type": "string", "minLength": 1}},
        "type": "object",
        "properties": {"first": {"$ref": "#/$defs/Name"}},
    }
    assert [str(v) for v in ResponseSchema.of(schema).validate({"first": ""})] == [
        '/first: "" is shorter than 1 character'
    ]


# -- compiling once -----------------------------------------------------------------------------------------------


def test_the_same_schema_gives_the_same_compiled_object() -> None:
    assert ResponseSchema.of(Order) is ResponseSchema.of(Order)
    reordered = dict(reversed(list(copy.deepcopy(ORDER_SCHEMA).items())))
    assert ResponseSchema.of(ORDER_SCHEMA) is ResponseSchema.of(reordered)
    assert ResponseSchema.of(ORDER_SCHEMA) is not ResponseSchema.of({**ORDER_SCHEMA, "title": "Other"})
    compiled = ResponseSchema.of(ORDER_SCHEMA)
    assert ResponseSchema.of(compiled) is compiled


def test_the_cache_is_bounded() -> None:
    first = ResponseSchema.of({"type": "integer", "minimum": -1})
    for bound in range(300):
        ResponseSchema.of({"type": "integer", "minimum": bound})
    assert ResponseSchema.of({"type": "integer", "minimum": -1}) is not first


def test_the_json_schema_is_a_copy() -> None:
    original = copy.deepcopy(ORDER_SCHEMA)
    original["title"] = "CopyCheck"
    compiled = ResponseSchema.of(original)
    original["properties"]["id"]["type"] = "string"
    assert compiled.json_schema["properties"]["id"] == {"type": "integer"}
    assert compiled.validate({"id": 1, "items": []}) == []


def test_names() -> None:
    assert ResponseSchema.of(Order).name == "Order"
    assert ResponseSchema.of(Order).model is Order
    assert ResponseSchema.of(Order).json_schema == Order.model_json_schema()
    assert ResponseSchema.of(ORDER_SCHEMA).name == "Order"
    assert ResponseSchema.of(ORDER_SCHEMA).model is None
    assert ResponseSchema.of({"type": "object"}).name == "response"


# -- response_format ----------------------------------------------------------------------------------------------


def test_response_format_of_a_model_is_what_the_openai_sdk_sends() -> None:
    produced = ResponseSchema.of(Order).response_format()
    sdk: Any = type_to_response_format_param(Order)
    assert produced == sdk
    assert produced["json_schema"]["strict"] is True
    assert list(produced["json_schema"]) == ["schema", "name", "strict"]


def test_response_format_of_a_json_schema_is_the_schema_unstrict() -> None:
    produced = ResponseSchema.of(ORDER_SCHEMA).response_format()
    assert produced == {
        "type": "json_schema",
        "json_schema": {"schema": ORDER_SCHEMA, "name": "Order", "strict": False},
    }


@pytest.mark.parametrize(
    ("title", "name"),
    [("My order (v2)!", "My_order__v2__"), ("Ünïcode", "_n_code"), ("x" * 80, "x" * 64), ("   ", "response")],
)
def test_response_format_names_are_sanitised(title: str, name: str) -> None:
    produced = ResponseSchema.of({"title": title, "type": "object"}).response_format()
    assert produced["json_schema"]["name"] == name


def test_response_format_hands_out_copies() -> None:
    compiled = ResponseSchema.of(Order)
    compiled.response_format()["json_schema"]["schema"]["properties"].clear()
    assert compiled.response_format() == type_to_response_format_param(Order)
