"""Validating a value against a pydantic model or a JSON Schema, and describing it to the provider.

A :class:`ResponseSchema` is compiled once from either kind of schema and then
answers :meth:`~ResponseSchema.validate` with *every* violation, each located by
a JSON pointer into the value, so that a retry can tell the model exactly what
to fix.

Two backends, one result type
    * A pydantic model validates through pydantic itself (``model_validate``, in
      pydantic's default lax mode: ``"42"`` is accepted for an ``int`` field, as
      it would be from JSON), so validators, aliases and defaults behave as the
      caller wrote them. A value that fails is judged again as the JSON it came
      from (``model_validate_json``, as AutoGen parses the answer): in strict
      mode, pydantic takes a date or a UUID from a JSON string, not from a str.
    * A JSON Schema (a dict) validates with `jsonschema-rs`_ as Draft 2020-12,
      with ``format`` checked (``"email"``, ``"date"``, ...; the specification
      leaves format checking off by default, which would let such values pass).
      Unknown formats are ignored, as the specification asks. ``formats=False``
      leaves ``format`` an annotation, as it is by default: for a tool's
      parameters, whose own parser decides what a date is. ``pydantic_patterns=True``
      also takes a string that a ``pattern`` matches as pydantic reads it (where
      ``\\w`` is any letter), for the same reason.
      ``$ref`` is resolved inside the schema only: nothing is fetched over the network.

A schema that is itself invalid is refused when it is compiled, with a
:class:`~autogen_reliability._errors.ConfigurationError` that says where and why,
rather than failing on every response later.

Compiled schemas are cached (:meth:`ResponseSchema.of`): the same model class,
or an equal JSON Schema, gives back the same object, so callers can compile on
every request at the cost of a dictionary look-up (and, for a JSON Schema, one
``json.dumps`` of it to make the key).

.. _jsonschema-rs: https://github.com/Stranger6667/jsonschema
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Final

import jsonschema_rs
import pydantic
from pydantic import BaseModel
from pydantic_core import SchemaError, SchemaValidator
from pydantic_core.core_schema import str_schema

from autogen_reliability._errors import ConfigurationError, SchemaViolation, printable
from autogen_reliability.providers import strict_json_schema

__all__ = ["ResponseSchema", "SchemaViolation"]

DRAFT_2020_12: Final = "https://json-schema.org/draft/2020-12/schema"
_DRAFT_2020_12_SPELLINGS: Final = frozenset({DRAFT_2020_12, DRAFT_2020_12 + "#"})
_CACHE_SIZE: Final = 256
_MESSAGE_LIMIT: Final = 300
_META_ERRORS_SHOWN: Final = 5
_NOT_IN_NAME: Final = re.compile(r"[^a-zA-Z0-9_-]")
_TOO_DEEP_TO_LIST: Final = "the value does not match the schema (nested too deeply for its violations to be listed)"


def _pointer(segments: Sequence[str | int]) -> str:
    return "".join("/" + str(segment).replace("~", "~0").replace("/", "~1") for segment in segments)


def _concise(message: str) -> str:
    # jsonschema-rs quotes the offending value (or key) as the model wrote it, escape sequences and all; and in
    # full: a 1 MB string would make a 1 MB message.
    message = printable(message)
    if len(message) <= _MESSAGE_LIMIT:
        return message
    half = (_MESSAGE_LIMIT - 5) // 2
    return f"{message[:half]} ... {message[-half:]}"


def _instance_location(value: Any, loc: Sequence[str | int], error_type: str) -> list[str | int]:
    """The part of pydantic's ``loc`` that addresses the value.

    pydantic's ``loc`` also names union members and tags (``("x", "int")`` for a
    field ``x: int | str``); those segments are left out by walking the value:
    a segment is kept when it indexes the value there, or when it is the missing
    key of a ``missing`` error.
    """
    kept: list[str | int] = []
    node = value
    last = len(loc) - 1
    for index, segment in enumerate(loc):
        if isinstance(node, Mapping) and isinstance(segment, str):
            if segment in node:
                kept.append(segment)
                node = node[segment]
            elif index == last and error_type == "missing":
                kept.append(segment)
        elif (
            isinstance(node, Sequence) and not isinstance(node, str) and isinstance(segment, int)
        ) and 0 <= segment < len(node):
            kept.append(segment)
            node = node[segment]
    return kept


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not a JSON type")


def _canonical_json(schema: Mapping[str, Any], *, sort_keys: bool) -> str:
    try:
        return json.dumps(schema, sort_keys=sort_keys, allow_nan=False, default=_json_default)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigurationError(f"a JSON Schema must be made of JSON values only: {exc}") from None


def _kind(schema: object) -> str:
    return schema.__name__ if isinstance(schema, type) else type(schema).__name__


_meta_validator: jsonschema_rs.Validator | None = None


def _meta_errors(document: dict[str, Any]) -> list[str]:
    """Every reason why ``document`` is not a valid Draft 2020-12 schema; [] when it is."""
    global _meta_validator  # noqa: PLW0603 -- compiled on first need, then shared
    if jsonschema_rs.meta.is_valid(document):
        return []
    if _meta_validator is None:
        _meta_validator = jsonschema_rs.Draft202012Validator({"$ref": DRAFT_2020_12}, offline=True)
    # dict.fromkeys: the meta-schema's $dynamicRef reaches some keywords by several paths, with the same error.
    errors = list(dict.fromkeys(_meta_error(error) for error in _meta_validator.iter_errors(document)))
    if not errors:  # the two disagree: trust meta.validate, which is what is_valid said
        try:
            jsonschema_rs.meta.validate(document)
        except jsonschema_rs.ValidationError as error:
            errors = [_meta_error(error)]
    return errors


_JSON_TYPES: Final = "array, boolean, integer, null, number, object, string"


def _meta_error(error: jsonschema_rs.ValidationError) -> str:
    where = _pointer(error.instance_path) or "(root)"
    path = error.instance_path
    if path and path[-1] == "type" and error.kind.name == "anyOf" and not isinstance(error.instance, dict):
        # The meta-schema's own wording ("not valid under any of the schemas listed in the 'anyOf'
        # keyword") hides the usual cause, a misspelt type.
        shown = json.dumps(error.instance)[:80]
        return f"{where}: {shown} is not a JSON Schema type or list of them (types: {_JSON_TYPES})"
    return f"{where}: {_concise(error.message)}"


class _EcmaOrPydanticPattern:
    """The ``pattern`` keyword, matched as ECMA-262 reads it (the specification's dialect) or as pydantic does.

    pydantic writes a field's pattern into the schema in its own dialect (Rust's regex crate) and checks values
    so: there ``\\w``, ``\\d`` and ``\\b`` know every script, in ECMA-262 only ASCII. Both match in linear
    time, whatever the string. A pattern pydantic cannot read is matched as ECMA-262 only.
    """

    def __init__(self, parent_schema: dict[str, Any], value: Any, schema_path: list[str | int]) -> None:
        self._pattern = str(value)  # a string: the meta-schema says so, checked before compiling
        self._ecma = jsonschema_rs.Draft202012Validator({"pattern": value}, offline=True)  # raises if invalid
        try:
            self._pydantic: SchemaValidator | None = SchemaValidator(str_schema(pattern=self._pattern))
        except SchemaError:
            self._pydantic = None

    def validate(self, instance: Any) -> None:
        if not isinstance(instance, str) or self._ecma.is_valid(instance):
            return
        if self._pydantic is not None and self._pydantic.isinstance_python(instance):
            return
        raise ValueError(f'{json.dumps(instance, ensure_ascii=False)} does not match "{self._pattern}"')


def _compile_json_schema(
    schema: dict[str, Any], *, formats: bool = True, pydantic_patterns: bool = False
) -> jsonschema_rs.Validator:
    declared = schema.get("$schema", DRAFT_2020_12)
    if not isinstance(declared, str) or declared not in _DRAFT_2020_12_SPELLINGS:
        raise ConfigurationError(
            f"the JSON Schema declares $schema {declared!r}; responses are validated as Draft 2020-12 "
            f"({DRAFT_2020_12}): declare that, or leave $schema out"
        )
    try:
        problems = _meta_errors({**schema, "$schema": DRAFT_2020_12})
    except ValueError as error:  # e.g. nested beyond what jsonschema-rs follows
        raise ConfigurationError(f"cannot check JSON Schema: {_concise(str(error).splitlines()[0])}") from None
    if problems:
        shown = "; ".join(problems[:_META_ERRORS_SHOWN])
        more = f" (and {len(problems) - _META_ERRORS_SHOWN} more)" if len(problems) > _META_ERRORS_SHOWN else ""
        raise ConfigurationError(f"invalid JSON Schema (Draft 2020-12): {shown}{more}")
    try:
        keywords: dict[str, type[jsonschema_rs.KeywordValidator]] | None = (
            {"pattern": _EcmaOrPydanticPattern} if pydantic_patterns else None
        )
        return jsonschema_rs.Draft202012Validator(schema, validate_formats=formats, offline=True, keywords=keywords)
    except jsonschema_rs.ValidationError as error:
        # Valid against the meta-schema but not compilable: a bad regex, a $ref to nowhere.
        where = _pointer(error.instance_path) or "(root)"
        raise ConfigurationError(
            f"cannot compile JSON Schema: {where}: {_concise(error.message.splitlines()[0])}"
        ) from None
    except (jsonschema_rs.ReferencingError, ValueError) as error:
        raise ConfigurationError(f"cannot compile JSON Schema: {_concise(str(error).splitlines()[0])}") from None


class ResponseSchema:
    """A compiled schema: a pydantic model class or a JSON Schema dict (Draft 2020-12).

    Build it with :meth:`of`, which caches; constructing directly compiles anew.

    Attributes:
        name: The model class name, or the JSON Schema's ``"title"``, or ``"response"``.
        model: The pydantic model class, or None for a JSON Schema.
        json_schema: For a model, ``model.model_json_schema()``; for a JSON Schema, a
            deep copy of it. Shared by every user of the cached object: do not mutate
            it (:meth:`response_format` hands out copies).

    Example:
        >>> schema = ResponseSchema.of({"type": "object", "required": ["age"],
        ...                             "properties": {"age": {"type": "integer"}}})
        >>> [str(v) for v in schema.validate({"age": "ten"})]
        ['/age: "ten" is not of type "integer"']
        >>> schema.validate({"age": 10})
        []
    """

    __slots__ = ("_response_format", "_response_format_json", "_validator", "json_schema", "model", "name")

    name: str
    model: type[BaseModel] | None
    json_schema: dict[str, Any]

    def __init__(
        self, schema: type[BaseModel] | Mapping[str, Any], *, formats: bool = True, pydantic_patterns: bool = False
    ) -> None:
        """Compiles ``schema``.

        Args:
            schema: A pydantic model class or a JSON Schema dict.
            formats: For a JSON Schema, whether ``format`` is checked (``"date-time"``
                as RFC 3339, ...) or, as the specification has it by default, only an annotation.
            pydantic_patterns: For a JSON Schema, whether a string also matches a ``pattern`` that
                matches it as pydantic reads it (where ``\\w`` is any letter), besides one that matches it
                as ECMA-262, the specification's dialect, reads it.

        Raises:
            ConfigurationError: ``schema`` is neither a pydantic model class nor a
                valid Draft 2020-12 JSON Schema object; the message says why.
        """
        self._response_format: dict[str, Any] | None = None
        self._response_format_json: str | None = None  # its JSON text, which copies are made from
        self._validator: jsonschema_rs.Validator | None = None
        if isinstance(schema, type) and issubclass(schema, BaseModel) and schema is not BaseModel:
            try:
                json_schema = schema.model_json_schema()
            except pydantic.PydanticUserError as exc:
                raise ConfigurationError(f"cannot describe {schema.__name__} as a JSON Schema: {exc}") from None
            self.name, self.model, self.json_schema = schema.__name__, schema, json_schema
        elif isinstance(schema, Mapping):
            # A JSON round trip is the deep copy: plain dicts and lists, key order kept.
            document: dict[str, Any] = json.loads(_canonical_json(schema, sort_keys=False))
            self._validator = _compile_json_schema(document, formats=formats, pydantic_patterns=pydantic_patterns)
            title = document.get("title")
            self.name = title.strip() if isinstance(title, str) and title.strip() else "response"
            self.model, self.json_schema = None, document
        else:
            raise ConfigurationError(
                "a response schema is a pydantic model class or a JSON Schema object (a dict), "
                f"not {_kind(schema)}: {schema!r:.80}"
            )

    @classmethod
    def of(
        cls,
        schema: ResponseSchema | type[BaseModel] | Mapping[str, Any],
        *,
        formats: bool = True,
        pydantic_patterns: bool = False,
    ) -> ResponseSchema:
        """The compiled form of ``schema``, from a bounded cache (256 entries, least recently used out).

        The same model class, or a JSON Schema equal to one seen before (compared as
        ``json.dumps(schema, sort_keys=True)``), gives back the same object. A
        :class:`ResponseSchema` is returned as it is.

        Args:
            schema: As for the constructor.
            formats: As for the constructor; a JSON Schema is cached once per setting.
            pydantic_patterns: As for the constructor; a JSON Schema is cached once per setting.

        Raises:
            ConfigurationError: As for the constructor.

        Example:
            >>> ResponseSchema.of({"type": "string"}) is ResponseSchema.of({"type": "string"})
            True
        """
        if isinstance(schema, ResponseSchema):
            return schema
        key: Hashable
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            key = (cls, schema)
        elif isinstance(schema, Mapping):
            key = (cls, _canonical_json(schema, sort_keys=True), formats, pydantic_patterns)
        else:
            return cls(schema)  # raises the constructor's ConfigurationError
        with _cache_lock:
            cached = _cache.get(key)
            if cached is not None:
                _cache.move_to_end(key)
                return cached
        # Outside the lock: compiling may take a while.
        compiled = cls(schema, formats=formats, pydantic_patterns=pydantic_patterns)
        with _cache_lock:
            compiled = _cache.setdefault(key, compiled)  # a concurrent caller's copy wins, so one object per key
            _cache.move_to_end(key)
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return compiled

    def validate(self, value: Any) -> list[SchemaViolation]:
        """Every violation of the schema by ``value`` (as parsed from JSON); [] when it is valid.

        For a JSON Schema, an invalid value nested so deep that its violations cannot be
        listed (jsonschema-rs lists them only to 255 levels) gives one violation at the
        root that says so.

        Raises:
            ValueError: For a JSON Schema, ``value`` holds something that is not a JSON
                type (a set, an object) or is nested thousands of levels deep.

        Example:
            >>> from pydantic import BaseModel
            >>> class Person(BaseModel):
            ...     name: str
            ...     age: int
            >>> [str(v) for v in ResponseSchema.of(Person).validate({"age": "x"})]
            ['/name: Field required', '/age: Input should be a valid integer, unable to parse string as an integer']
        """
        if self.model is not None:
            try:
                self.model.model_validate(value)
            except pydantic.ValidationError as exc:
                return self._json_violations(value, exc)
            return []
        assert self._validator is not None
        if self._validator.is_valid(value):
            return []
        violations: list[SchemaViolation] = []
        try:
            for error in self._validator.iter_errors(value):
                violations.append(SchemaViolation(_pointer(error.instance_path), _concise(error.message)))
        except ValueError:
            # jsonschema-rs judges a value of any depth, but lists the errors of one only up to 255 levels
            # down ("Recursion limit reached"): the value is invalid all the same, which is what a re-ask needs.
            violations.append(SchemaViolation("", _TOO_DEEP_TO_LIST))
        return violations

    def _json_violations(self, value: Any, failure: pydantic.ValidationError) -> list[SchemaViolation]:
        """The violations of ``value``, which failed as a Python value, judged as the JSON it came from.

        The answer reaches the agent as JSON text, which AutoGen parses with ``model_validate_json``; in strict
        mode (``ConfigDict(strict=True)``, ``Field(strict=True)``) pydantic takes a date, a datetime, a UUID,
        an enum member, a tuple or a Decimal from JSON but not from the str or list ``json.loads`` makes of it.
        Python first, as it is the faster for the valid answers that are most; JSON only when that failed.
        """
        assert self.model is not None
        try:
            self.model.model_validate_json(json.dumps(value, ensure_ascii=False, allow_nan=False))
        except pydantic.ValidationError as exc:
            failure = exc
        except (TypeError, ValueError, RecursionError):
            pass  # not a JSON value (a set, NaN): the Python judgment stands
        else:
            return []
        return [
            SchemaViolation(_pointer(_instance_location(value, error["loc"], error["type"])), _concise(error["msg"]))
            for error in failure.errors(include_url=False, include_context=False, include_input=False)
        ]

    def response_format(self) -> dict[str, Any]:
        """The OpenAI ``response_format`` that asks the model for this schema (a fresh copy each call).

        For a pydantic model: exactly what the openai SDK sends for
        ``response_format=Model`` (its strict transform, ``"strict": True``). For a
        JSON Schema: the schema as given with ``"strict": False``, since OpenAI's
        strict mode needs ``additionalProperties: false`` and every property
        required, and a user's schema is not rewritten behind their back. The
        name is the schema's, with characters other than ``[a-zA-Z0-9_-]``
        replaced by ``_``, cut to 64.

        Example:
            >>> ResponseSchema.of({"title": "a b", "type": "object"}).response_format()["json_schema"]
            {'schema': {'title': 'a b', 'type': 'object'}, 'name': 'a_b', 'strict': False}
        """
        if self._response_format is None:
            name = _NOT_IN_NAME.sub("_", self.name)[:64] or "response"
            if self.model is None:
                schema, strict = copy.deepcopy(self.json_schema), False
            else:
                strict_schema = strict_json_schema(self.model)  # what the SDK sends for `response_format=Model`
                if strict_schema is None:
                    schema, strict = self.model.model_json_schema(), False
                else:
                    schema, strict = strict_schema, True
            # Same key order as the SDK, so that the request body is byte-identical to its own.
            response_format = {
                "type": "json_schema",
                "json_schema": {"schema": schema, "name": name, "strict": strict},
            }
            # JSON by construction (a JSON Schema is read through JSON, a model's is pydantic's JSON Schema):
            # each call's copy is parsed from its text, three times faster than a deepcopy.
            self._response_format_json = json.dumps(response_format)
            self._response_format = response_format
        return json.loads(self._response_format_json)  # type: ignore[no-any-return,arg-type]

    def __repr__(self) -> str:
        backend = "pydantic" if self.model is not None else "jsonschema"
        return f"<ResponseSchema {self.name!r} ({backend})>"


_cache: OrderedDict[Hashable, ResponseSchema] = OrderedDict()
_cache_lock = threading.Lock()
