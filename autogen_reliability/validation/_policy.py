"""What a valid answer is, and what happens to an invalid one: :class:`ValidationPolicy`.

:class:`AnswerCheck` holds what one call's answers are checked against (the
policy, the schema, the tools offered) and judges each answer:

- **text answers** are bounded by ``max_response_chars`` (longer ones fail
  without being parsed); when JSON is expected (a ``schema``, AutoGen's
  ``json_output=<model>``, or JSON mode), the JSON is extracted from fences or
  prose, checked against the schema (when the first value found does not match,
  the next ones found are tried, and the first that matches is the answer), and
  handed on as a clean JSON string, so
  ``AssistantAgent``'s own ``model_validate_json`` succeeds even when the model
  wrapped its JSON in prose;
- **tool calls** must name a tool that was offered (and that ``tool_choice`` allows; a text answer is refused when
  it asks for a call) and carry JSON arguments
  that match its parameters schema; their arguments together are bounded by
  ``max_response_chars`` too.

An invalid answer is re-asked, as instructor and pydantic-ai do: the bad answer
and a concise list of its violations (path and message) are appended to the
conversation, and the model answers again — for tool calls, as failed tool
results, the way a model expects to hear about them. :meth:`AnswerCheck.follow_up`
writes those messages; the validation layer (``_layer.py``) sends them.
"""

from __future__ import annotations

import copy
import functools
import importlib
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    UserMessage,
)
from pydantic import BaseModel

from .._errors import ConfigurationError, config_options
from ._parse import JSONExtractionError, json_candidates, locate_json, parse_whole_json
from ._schema import ResponseSchema, SchemaViolation

__all__ = ["AnswerCheck", "ValidationPolicy"]

logger = logging.getLogger("autogen_reliability")

MAX_REASK = 5
DEFAULT_MAX_RESPONSE_CHARS = 200_000
# A re-ask is sent, and paid for, in full: a 198 KB answer with 99,000 violations made a 3.75 M-character
# re-ask. A model fixes the first few violations it is shown as well as all of them, and the rest are
# counted. Each line is cut too, since a violation message may quote the offending value.
MAX_REASK_FEEDBACK_CHARS = 4000
MAX_REASK_VIOLATIONS = 20
MAX_VIOLATION_CHARS = 300
# When the first JSON value of an answer does not match the schema (a citation "[1]" or a "{}" in the prose before
# the answer), this many more are tried, in order; the first that matches is the answer.
MAX_OTHER_CANDIDATES = 16
FailureMode = Literal["raise", "return"]


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    """What a valid answer is, and what happens to an invalid one. Validated at construction.

    Args:
        schema: A pydantic model class or a JSON Schema dict (Draft 2020-12, kept as a
            copy: changing yours afterwards changes no policy) the answer's JSON must match.
            When AutoGen passes ``json_output=<model>``
            (``AssistantAgent(output_content_type=...)``), that model is the schema
            unless one is given here.
        reask: How many times an invalid answer is re-asked (0 to 5).
        validate_tool_calls: Tool calls must name an offered tool that ``tool_choice`` lets the
            model call, with arguments matching its parameters schema; when no tool was offered, or
            ``tool_choice="none"``, every call is refused, and with ``"required"`` or a tool as
            ``tool_choice`` an answer that calls none.
        max_response_chars: Longer text answers, and tool calls whose arguments are longer
            together (with ``validate_tool_calls``), fail without being parsed.
        on_failure: ``"raise"`` :class:`ResponseValidationError`, or ``"return"``
            the last answer unmodified, its violations in ``validation_errors``.

    Raises:
        ConfigurationError: an invalid value, or a JSON Schema that is not one.

    Example:
        >>> from typing import Literal
        >>> from pydantic import BaseModel
        >>> from autogen_reliability import ValidationPolicy, reliable
        >>> class Ticket(BaseModel):
        ...     id: int
        ...     priority: Literal["low", "high"]
        >>> client = reliable(inner, validation=ValidationPolicy(schema=Ticket, reask=2))  # inner: the client you wrap
    """

    schema: type[BaseModel] | Mapping[str, Any] | None = None
    reask: int = 1
    validate_tool_calls: bool = True
    max_response_chars: int = DEFAULT_MAX_RESPONSE_CHARS
    on_failure: FailureMode = "raise"
    compiled_schema: ResponseSchema | None = field(init=False, repr=False, compare=False, default=None)
    """The schema, compiled once at construction (``None`` without one)."""

    def __post_init__(self) -> None:
        if isinstance(self.reask, bool) or not isinstance(self.reask, int) or not 0 <= self.reask <= MAX_REASK:
            raise ConfigurationError(f"reask must be an int from 0 to {MAX_REASK}, got {self.reask!r}")
        chars = self.max_response_chars
        if isinstance(chars, bool) or not isinstance(chars, int) or chars < 1:
            raise ConfigurationError(f"max_response_chars must be a positive int, got {chars!r}")
        if self.on_failure not in ("raise", "return"):
            raise ConfigurationError(f"on_failure must be 'raise' or 'return', got {self.on_failure!r}")
        if not isinstance(self.validate_tool_calls, bool):
            raise ConfigurationError("validate_tool_calls must be True or False")
        if isinstance(self.schema, ResponseSchema):
            # Taken as it is, its own `format` setting would be lost on the way to and from the config.
            raise ConfigurationError(
                "schema takes a pydantic model class or a JSON Schema dict, not a compiled ResponseSchema: "
                "pass its .model or its .json_schema"
            )
        if self.schema is not None:
            # An invalid schema fails here, with the reason; a valid one is compiled once.
            object.__setattr__(self, "compiled_schema", ResponseSchema.of(self.schema))
            if not isinstance(self.schema, type):
                # A copy of the caller's dict, as compiled: changed afterwards, it would be dumped (to_config) and
                # compared as a schema other than the one the answers are checked against.
                object.__setattr__(self, "schema", copy.deepcopy(dict(self.schema)))

    def to_config(self) -> dict[str, Any]:
        """A JSON-ready dict for :meth:`from_config`.

        A model class is kept by its import path; one that cannot be imported
        again as itself (defined in ``__main__`` or a function, or made by pydantic's
        ``create_model()``) is kept as its JSON Schema.
        """
        config: dict[str, Any] = {
            "reask": self.reask,
            "validate_tool_calls": self.validate_tool_calls,
            "max_response_chars": self.max_response_chars,
            "on_failure": self.on_failure,
        }
        if isinstance(self.schema, type):
            path = f"{self.schema.__module__}:{self.schema.__qualname__}"
            config["schema"] = (
                {"model": path} if _imports_as(path, self.schema) else {"json_schema": self.schema.model_json_schema()}
            )
        elif self.schema is not None:
            config["schema"] = {"json_schema": dict(self.schema)}
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ValidationPolicy:
        """The policy :meth:`to_config` described; options it leaves out keep their default.

        Raises:
            ConfigurationError: ``config`` is not a mapping, names an unknown option, has a ``schema`` that is
                neither ``{"model": "module:Class"}`` nor ``{"json_schema": {...}}``, names a model that cannot
                be imported, or holds an invalid value.
        """
        values = config_options(cls, config)
        schema = values.pop("schema", None)
        if schema is not None:
            if not isinstance(schema, Mapping) or len(schema) != 1 or not schema.keys() <= {"model", "json_schema"}:
                raise ConfigurationError(
                    f"ValidationPolicy schema must be {{'model': 'module:Class'}} or {{'json_schema': {{...}}}}, "
                    f"got {_described(schema)}"
                )
            values["schema"] = _import_model(schema["model"]) if "model" in schema else schema["json_schema"]
        return cls(**values)


def _described(schema: object) -> str:
    """What a bad ``schema`` entry is, without repeating a whole JSON Schema in the message."""
    if isinstance(schema, Mapping):
        return f"a mapping with keys {sorted(str(key) for key in schema)}"
    return type(schema).__name__


def _imports_as(path: str, model: type[BaseModel]) -> bool:
    """Whether importing ``path`` gives ``model`` itself, in this process and in another."""
    # A class of __main__ imports in the process that dumps it, and in no other; one defined in a function
    # ("<locals>") never does; one made by pydantic's create_model() is named after its caller's module,
    # where that name may be another class, or nothing.
    module_name, _, qualname = path.partition(":")
    if module_name == "__main__" or "<locals>" in qualname:
        return False
    try:
        return _import_model(path) is model
    except ConfigurationError:
        return False


def _import_model(path: object) -> type[BaseModel]:
    if not isinstance(path, str):
        raise ConfigurationError(f"a model is named by a 'module:Class' string, not {type(path).__name__}")
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError, TypeError) as error:  # TypeError: a relative name
        raise ConfigurationError(f"cannot import the model {path}: {error}") from error
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise ConfigurationError(f"{path} is not a pydantic model class")
    return target


@dataclass(frozen=True, slots=True)
class AnswerCheck:
    """What one call's answers are checked against."""

    policy: ValidationPolicy
    schema: ResponseSchema | None
    expects_json: bool
    tools: Mapping[str, Mapping[str, Any]] | None  # name -> parameters schema, when tool calls are checked
    tool_choice: str | None = None  # why ``tools`` holds fewer tools than were offered ("tool_choice is 'none'")
    call_required: str | None = None  # why an answer must call a tool ("tool_choice is 'required'")

    def answer(self, result: CreateResult) -> tuple[CreateResult, list[SchemaViolation]]:
        """The answer to hand on (clean JSON when JSON is expected), and its violations."""
        content = result.content
        if not isinstance(content, str) or self.call_required is not None:
            return self._tool_call_answer(result, content)
        limit = self.policy.max_response_chars
        if len(content) > limit:
            return result, [SchemaViolation("", f"the answer is {len(content)} characters long; at most {limit}")]
        if not self.expects_json:
            return result, []
        try:
            value, start, end = locate_json(content, max_chars=limit)
        except JSONExtractionError as error:
            return result, [SchemaViolation("", f"no valid JSON in the answer: {error}")]
        violations = self.schema.validate(value) if self.schema is not None else []
        if violations:
            found = self._other_valid_value(content)
            if found is None:
                return result, violations
            start, end = found
        # The model's own text of the value (strict JSON, as every parser reads it), not the value written out
        # again: that would go through float, and 0.123456789012345678 be handed on as 0.12345678901234568.
        clean = content[start:end].strip()
        return (result if clean == content else result.model_copy(update={"content": clean})), []

    def _other_valid_value(self, content: str) -> tuple[int, int] | None:
        """Where the first value after the one extracted that the schema takes is (``[1]`` in prose before the
        answer): its ``(start, end)`` in ``content``."""
        assert self.schema is not None
        candidates = json_candidates(content, max_chars=self.policy.max_response_chars)
        next(candidates, None)  # the one locate_json took, already judged
        for value, start, end in itertools.islice(candidates, MAX_OTHER_CANDIDATES):
            if not self.schema.validate(value):
                return start, end
        return None

    def _tool_call_answer(
        self, result: CreateResult, calls: str | Sequence[FunctionCall]
    ) -> tuple[CreateResult, list[SchemaViolation]]:
        if isinstance(calls, str):  # a text answer, where tool_choice asked for a call
            return result, [SchemaViolation("", f"the answer calls no tool, but {self.call_required}")]
        if self.tools is None:
            return result, []
        violations = self._tool_calls(calls)
        if violations or all(call.arguments for call in calls):
            return result, violations
        # Empty arguments were judged as {}: handed on as {}, since the agent's json.loads("") fails the call.
        handed_on = [call if call.arguments else replace(call, arguments="{}") for call in calls]
        return result.model_copy(update={"content": handed_on}), []

    def _tool_calls(self, calls: Sequence[FunctionCall]) -> list[SchemaViolation]:
        assert self.tools is not None
        limit = self.policy.max_response_chars
        length = sum(len(call.arguments or "") for call in calls)
        if length > limit:  # bounded as a text answer is: nothing longer is parsed
            return [
                SchemaViolation(
                    "/tool_calls", f"the tool calls' arguments are {length} characters long; at most {limit}"
                )
            ]
        violations: list[SchemaViolation] = []
        for index, call in enumerate(calls):
            where = f"/tool_calls/{index}"
            parameters = self.tools.get(call.name)
            if parameters is None:
                if self.tool_choice is not None:
                    refused = f"there is no tool named {call.name!r} that may be called ({self.tool_choice})"
                else:
                    refused = f"there is no tool named {call.name!r} (tools: {', '.join(sorted(self.tools)) or 'none'})"
                violations.append(SchemaViolation(where, refused))
                continue
            try:
                # As strictly as an answer: json.loads takes NaN (which jsonschema-rs reports as null) and
                # raises RecursionError for arguments nested beyond Python's recursion limit.
                arguments = parse_whole_json(call.arguments or "{}")
            except JSONExtractionError as error:
                violations.append(SchemaViolation(f"{where}/arguments", f"the arguments are not valid JSON: {error}"))
                continue
            schema = _parameters_schema(call.name, parameters)
            if schema is None:
                continue
            for violation in schema.validate(arguments):
                violations.append(SchemaViolation(f"{where}/arguments{violation.path}", violation.message))
        return violations

    def follow_up(self, result: CreateResult, violations: Sequence[SchemaViolation]) -> list[LLMMessage]:
        """The messages that tell the model what was wrong with ``result``; bounded however many there are."""
        listed = _listed(violations)
        if isinstance(result.content, list):
            calls = result.content
            return [
                AssistantMessage(
                    content=_cut_arguments(calls, self.policy.max_response_chars),
                    thought=result.thought,
                    source="assistant",
                ),
                FunctionExecutionResultMessage(
                    content=[
                        FunctionExecutionResult(
                            call_id=call.id,
                            name=call.name,
                            is_error=True,
                            content=_tool_call_feedback(index, violations, callable_tools=bool(self.tools)),
                        )
                        for index, call in enumerate(calls)
                    ]
                ),
            ]
        if self.call_required is not None:
            ask = "Answer again by calling a tool."
        elif self.schema is not None:
            ask = "Answer again with only the JSON value, matching the required schema, and no other text."
        elif self.expects_json:  # any JSON value (json_output=True, a JSON response_format): no schema to name
            ask = "Answer again with only the JSON value, and no other text."
        else:
            ask = f"Answer again in at most {self.policy.max_response_chars} characters."
        feedback = f"Your previous answer could not be used:\n{listed}\n{ask}"
        # An answer refused for its length is echoed only as far as the limit: enough to show what went wrong.
        echoed = _cut(result.content, self.policy.max_response_chars)
        return [
            AssistantMessage(content=echoed, source="assistant"),
            UserMessage(content=feedback, source="validator"),
        ]


def _parameters_schema(name: str, parameters: Mapping[str, Any]) -> ResponseSchema | None:
    """The compiled parameters schema of tool ``name``; ``None`` (and a warning) when it cannot be compiled.

    `format` stays an annotation: the tool's own parser decides what a date is (pydantic, for AutoGen's tools,
    takes "2024-06-01T10:00:00", which is no RFC 3339 date-time), and refuses what it cannot read. So too for a
    `pattern`, which pydantic writes and checks in its own dialect (`\\w` is any letter there). A schema
    that cannot be compiled (another dialect's `$schema`, a `$ref` to definitions left out, as McpWorkbench
    lists a tool) is the tool's business too: raising here would throw away an answer already paid for.
    """
    try:
        return ResponseSchema.of(parameters, formats=False, pydantic_patterns=True)
    except ConfigurationError as error:
        _warn_unchecked(name, str(error))
        return None


@functools.lru_cache(maxsize=256)  # once per tool and reason, not on every call
def _warn_unchecked(name: str, reason: str) -> None:
    logger.warning(
        "the arguments of tool %r are not checked: its parameters schema cannot be compiled: %s", name, reason
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def _cut_arguments(calls: Sequence[FunctionCall], limit: int) -> list[FunctionCall]:
    """``calls`` echoed in a re-ask, with arguments that every client can send back.

    Arguments longer than ``limit`` together are cut there, as a text answer is. Ollama's client ``json.loads``
    each echoed call's arguments into a mapping, and raised on cut ones before sending anything: arguments that
    are no JSON object are echoed as ``{"invalid_arguments": "<what the model wrote>"}``, empty ones as ``{}``.
    """
    left = limit
    echoed: list[FunctionCall] = []
    for call in calls:
        arguments = call.arguments or ""
        shown = arguments if len(arguments) <= left else _cut(arguments, left)
        left = max(0, left - len(arguments))
        if shown is arguments and _is_json_object(arguments):
            echoed.append(call)
        else:
            wrapped = json.dumps({"invalid_arguments": shown}, ensure_ascii=False) if shown else "{}"
            echoed.append(replace(call, arguments=wrapped))
    return echoed


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _listed(violations: Sequence[SchemaViolation]) -> str:
    """The first violations as ``- path: message`` lines, within :data:`MAX_REASK_FEEDBACK_CHARS`; the rest counted."""
    lines: list[str] = []
    size = 0
    for violation in violations[:MAX_REASK_VIOLATIONS]:
        line = "- " + _cut(str(violation), MAX_VIOLATION_CHARS)
        if size + len(line) > MAX_REASK_FEEDBACK_CHARS:
            break
        lines.append(line)
        size += len(line) + 1
    if len(violations) > len(lines):
        lines.append(f"- (and {len(violations) - len(lines)} more)")
    return "\n".join(lines)


def _tool_call_feedback(index: int, violations: Sequence[SchemaViolation], *, callable_tools: bool) -> str:
    # With no tool that may be called (none offered, tool_choice="none"), "call the tool again" was followed.
    again = "Call the tool again with valid arguments." if callable_tools else "Answer without calling a tool."
    # A violation of the whole turn ("/tool_calls": the arguments too long together) is every call's own.
    own = [
        v
        for v in violations
        if v.path in ("/tool_calls", f"/tool_calls/{index}") or v.path.startswith(f"/tool_calls/{index}/")
    ]
    if own:
        return f"Error: this call was not executed:\n{_listed(own)}\n{again}"
    # The other calls' results list their own errors: repeating them here would multiply the re-ask.
    return "Not executed, because other calls of this turn were invalid. " + (
        "Call the tools again." if callable_tools else again
    )
