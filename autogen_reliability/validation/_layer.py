"""The two layers of the validation stage, outermost first: sanitising, then validating.

:class:`SanitizeLayer` makes every text the agent will see pass the :class:`Sanitizer`:

- the final answer's text content and its ``thought``; when JSON was asked for,
  the string leaves of the parsed JSON (a hazard escaped inside a JSON string,
  such as ``"\\u001b[31m"``, would come back when the agent parses it), whether
  the JSON is the whole answer or sits in a fenced block or in prose (then that
  JSON, the one :func:`extract_json` finds, is replaced by its sanitised copy,
  and the prose on each side is sanitised as text); only strings change, every
  number is written back as the model wrote it;
- streamed chunks, as they pass, through a :class:`StreamSanitizer`, which holds
  back what the next chunk could complete (a tag, an escape sequence, a link).
  When JSON was asked for, the chunks are held until the end and the sanitised
  answer is handed on as one chunk, as a validated stream is.

Long answers (more than ``OFF_LOOP_CHARS`` characters) are sanitised in a worker
thread, so that the event loop keeps serving other calls meanwhile.

Tool-call arguments are not touched: they go to tools as data, not to a screen.
What was changed is reported on the result (:class:`CheckedCreateResult`).

:class:`ValidationLayer` checks every answer of a call against its
:class:`ValidationPolicy` (what is checked: :class:`AnswerCheck`). An invalid
answer is re-asked with its violations; every re-ask is one more provider
attempt. When the re-asks are spent, ``on_failure`` decides: raise
:class:`~autogen_reliability.ResponseValidationError`, or return the last answer
with the violations attached. The answer handed on after re-asks carries the
tokens of every answer of the call as its ``usage``.

Validated streams are buffered: the answer is checked before any of it is
handed on, and then handed on as one chunk and the final result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import re
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import aclosing
from json.encoder import encode_basestring
from typing import Any, Final, ParamSpec, TypeVar

from autogen_core.models import CreateResult, RequestUsage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from .._errors import ConfigurationError, IncompleteStreamError, ResponseValidationError
from .._pipeline import CreateHandler, Layer, Request, StreamHandler, StreamItem
from ._parse import JSONExtractionError, locate_json
from ._policy import AnswerCheck, ValidationPolicy
from ._result import checked
from ._sanitizer import EMPTY_REPORT, SanitizePolicy, Sanitizer, SanitizeReport
from ._schema import ResponseSchema, SchemaViolation
from ._stream_sanitizer import StreamSanitizer

__all__ = ["OFF_LOOP_CHARS", "SanitizeLayer", "ValidationLayer", "sanitizer_for"]

# ---------------------------------------------------------------------------
# Sanitising

OFF_LOOP_CHARS: Final = 32_768
"""Texts longer than this are sanitised in a worker thread (``asyncio.to_thread``), not on the event loop."""

_P = ParamSpec("_P")
_T = TypeVar("_T")

_STARTS_AS_JSON: Final = re.compile(r"\s*[\[{]")
_JSON_FENCES: Final = tuple(
    (marker, re.compile(marker + r"[ \t]*(?:json\b[^\n]*)?\n\s*[\[{]", re.IGNORECASE)) for marker in ("```", "~~~")
)


def _may_hold_json(text: str) -> bool:
    """Whether a text answer may hold JSON that :func:`locate_json` reads without prose: all of it, or a fenced
    block (untagged or ``json``) that starts with a bracket. A few microseconds, before its costlier search."""
    if _STARTS_AS_JSON.match(text):
        return True
    return any(marker in text and fence.search(text) is not None for marker, fence in _JSON_FENCES)


async def _run(size: int, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``function(*args)``, in a worker thread when it works on more than ``OFF_LOOP_CHARS`` characters.

    Sanitising is linear, but a megabyte still takes a sizeable fraction of a second: the event loop, which
    serves every other call of the process, must not wait for it.
    """
    if size > OFF_LOOP_CHARS:
        return await asyncio.to_thread(function, *args, **kwargs)
    return function(*args, **kwargs)


@functools.lru_cache(maxsize=64)
def sanitizer_for(policy: SanitizePolicy) -> Sanitizer:
    """One sanitiser (and one nh3 cleaner) per policy, shared by every wrapper that uses it."""
    return Sanitizer(policy)


class SanitizeLayer(Layer):
    """Sanitises what the model returns before the agent sees it.

    Args:
        policy: What to neutralise.
        json_answers: Every answer is asked for as JSON, whatever the request says: the ``ValidationPolicy`` has
            a schema, which the validation stage inside sends as a ``response_format`` this layer does not see.
    """

    def __init__(self, policy: SanitizePolicy, *, json_answers: bool = False) -> None:
        self.sanitizer = sanitizer_for(policy)
        self._json_answers = json_answers
        # Only the character stages, for JSON that is JSON once they have run (see _content).
        self._characters = sanitizer_for(
            dataclasses.replace(policy, html=False, markdown_links=False, detect_injection=False)
        )

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        return await self._clean_result(request, await call_next(request))

    async def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        # When JSON was asked for, the chunks are JSON text whose escapes ("\u001b") only the final result's
        # parsed value is cleaned of: they are held, and that result's content is handed on instead.
        chunks = None if self._json_expected(request) else StreamSanitizer(self.sanitizer)
        if chunks is None:
            request = request.replace(buffered=True)
        async with aclosing(call_next(request)) as stream:
            async for item in stream:
                if isinstance(item, str):
                    if chunks is not None:
                        released = await _run(len(item), chunks.feed, item)
                        if released:
                            yield released
                    continue
                if chunks is not None:
                    rest = chunks.finish()
                    if rest:
                        yield rest
                result = await self._clean_result(request, item)
                if chunks is None and (text := _streamed_text(result)):  # the text held
                    yield text
                yield result

    def _json_expected(self, request: Request) -> bool:
        return self._json_answers or _asks_for_json(request)

    async def _clean_result(self, request: Request, result: CreateResult) -> CreateResult:
        size = (len(result.content) if isinstance(result.content, str) else 0) + len(result.thought or "")
        return await _run(size, self._clean, request, result)

    def _clean(self, request: Request, result: CreateResult) -> CreateResult:
        updates: dict[str, Any] = {}
        report = EMPTY_REPORT
        if isinstance(result.content, str):
            content, content_report = self._content(result.content, self._json_expected(request))
            report = report.merge(content_report)
            if content != result.content:
                updates["content"] = content
        if result.thought:
            thought, thought_report = self.sanitizer.text(result.thought)
            report = report.merge(thought_report)
            if thought != result.thought:
                updates["thought"] = thought
        if report.changed:
            request.call.findings.sanitized(report.changes)
        if not updates and not report.changed and not report.injection_markers:
            return result
        return checked(result, sanitize_report=report, **updates)

    def _content(self, content: str, json_expected: bool) -> tuple[str, SanitizeReport]:
        if not json_expected:
            text, report = self.sanitizer.text(content)
            if (report.changed or "\\" in content) and _may_hold_json(content):
                # A text answer that is JSON, or holds it in a fenced block, as an agent asks for in its prompt
                # (MagenticOneGroupChat's progress ledger, from a model without structured output): sanitised
                # as text, markup in its strings would be rewritten with quotes that end them, and an escape
                # ("\u202e", "\b") would be left for the agent's parser to turn into what it stands for.
                return self._embedded_json(content, json_expected=False) or (text, report)
            return text, report
        try:
            value = _loads(content)
        except (ValueError, RecursionError):
            # Fenced, in prose, or not JSON after all (validation off, or on_failure="return"), or nested
            # beyond Python's recursion limit (locate_json below says too_deep: it is sanitised as text).
            pass
        else:
            cleaned, report = self.sanitizer.value(value)
            return (_dumps(cleaned) if report.changed else content), report
        embedded = self._embedded_json(content)
        if embedded is not None:
            return embedded
        # Not JSON as the model wrote it; it may be once its characters are cleaned (a raw control character
        # inside a string is not JSON). The markup and link stages wait until the JSON is found.
        text, report = self._characters.text(content)
        embedded = self._embedded_json(text) if report.changed else None
        if embedded is None:
            return self.sanitizer.text(content)
        return embedded[0], report.merge(embedded[1])

    def _embedded_json(self, text: str, *, json_expected: bool = True) -> tuple[str, SanitizeReport] | None:
        """``text`` sanitised around the JSON that :func:`extract_json` finds in it; ``None`` if there is none.

        The JSON is found before anything is sanitised, then sanitised leaf by leaf and the prose on each side
        as text. Sanitised as text, the JSON would keep its escapes (``"\\u202e"``), which parsing turns back
        into hazards, and the HTML stage would rewrite markup inside its strings (quoting an attribute ends
        the string). If the spliced text would not give back the sanitised value, the value alone is handed on.

        When JSON was not asked for (``json_expected`` false), only JSON that is the whole text or a fenced
        block's counts (brackets in prose are prose, a citation ``[1]`` too), and ``None`` is returned instead
        of the value alone: the answer is the text, not the value.
        """
        try:
            _, start, end = locate_json(text, allow_prose=json_expected)
            value = _loads(text[start:end])
        except (JSONExtractionError, ValueError, RecursionError):
            return None
        cleaned, value_report = self.sanitizer.value(value)
        before, before_report = self.sanitizer.text(text[:start])
        after, after_report = self.sanitizer.text(text[end:])
        middle = text[start:end]
        if value_report.changed:
            middle = _keep_blank_edges(middle, _dumps(cleaned))
        spliced = before + middle + after
        try:
            _, start, end = locate_json(spliced, allow_prose=json_expected)
            again = _loads(spliced[start:end])
        except (JSONExtractionError, ValueError, RecursionError):
            again = None
        if again != cleaned:
            if not json_expected:
                return None
            spliced = _dumps(cleaned)
        return spliced, before_report.merge(value_report).merge(after_report)


@dataclasses.dataclass(frozen=True, slots=True)
class _Verbatim:
    """JSON text :func:`_dumps` writes as it is: a number as the model wrote it, or punctuation."""

    text: str


def _loads(text: str) -> Any:
    """``json.loads(text)`` with every number (and NaN, Infinity) kept as its text, a :class:`_Verbatim`.

    Sanitising rewrites only strings: written out again through ``float``, ``12345678901234567.89`` would reach
    the agent as ``1.2345678901234568e+16``, though the validation stage hands on the model's own text.
    """
    return json.loads(text, parse_float=_Verbatim, parse_int=_Verbatim, parse_constant=_Verbatim)


def _dumps(value: object) -> str:
    """``json.dumps(value, ensure_ascii=False)`` for a value of :func:`_loads`, each number as it was written.

    Iterative: the value may be as deep as ``json.loads`` accepts.
    """
    pieces: list[str] = []
    work: list[object] = [value]
    while work:
        item = work.pop()
        if isinstance(item, str):
            pieces.append(encode_basestring(item))
        elif isinstance(item, _Verbatim):
            pieces.append(item.text)
        elif isinstance(item, dict | list):
            # Pushed in reverse: each entry after the text before it ("{", ", ", the key), then the closing bracket.
            work.append(_Verbatim("}" if isinstance(item, dict) else "]"))
            entries: list[object] = []
            separator = "{" if isinstance(item, dict) else "["
            if isinstance(item, dict):
                for key, child in item.items():
                    entries += (_Verbatim(f"{separator}{encode_basestring(key)}: "), child)
                    separator = ", "
            else:
                for child in item:
                    entries += (_Verbatim(separator), child)
                    separator = ", "
            if not entries:
                pieces.append(separator)
            work.extend(reversed(entries))
        else:
            pieces.append(json.dumps(item))  # true, false, null
    return "".join(pieces)


def _keep_blank_edges(original: str, replacement: str) -> str:
    """``replacement`` with the whitespace that surrounded ``original`` (the lines of a fenced block)."""
    stripped = original.strip()
    if not stripped:
        return replacement
    head = original[: original.index(stripped)]
    return head + replacement + original[len(head) + len(stripped) :]


def _asks_for_json(request: Request) -> bool:
    """Whether ``request`` asks for JSON: ``json_output``, the validation stage's ``response_format``, or the
    caller's own ``response_format`` in ``extra_create_args``."""
    if request.json_output or request.response_format is not None:
        return True
    return is_json_format(request.extra_create_args.get("response_format"))


def is_json_format(response_format: object) -> bool:
    """Whether a ``response_format`` argument (the openai SDK's) asks for JSON: ``json_object``, ``json_schema``,
    or a pydantic model."""
    if isinstance(response_format, type):
        return issubclass(response_format, BaseModel)
    return isinstance(response_format, Mapping) and response_format.get("type") in ("json_object", "json_schema")


# ---------------------------------------------------------------------------
# Validation


class _CallableTools(Mapping[str, Mapping[str, Any]]):
    """The tools the model may call: name -> parameters schema, each schema read only when a call names its tool.

    A ``FunctionTool``'s ``schema`` is built by pydantic each time it is read (milliseconds for a nested model):
    read for every offered tool on every call, whatever the answer, it added half of what the inner client
    spends on the tools itself.
    """

    __slots__ = ("_parameters", "_tools")

    def __init__(self, tools: Mapping[str, Tool | ToolSchema]) -> None:
        self._tools = tools
        self._parameters: dict[str, Mapping[str, Any]] = {}

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        parameters = self._parameters.get(name)
        if parameters is None:
            tool = self._tools[name]
            schema: ToolSchema = tool if isinstance(tool, dict) else tool.schema
            parameters = self._parameters[name] = dict(schema.get("parameters") or _NO_PARAMETERS)
        return parameters

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)


_NO_PARAMETERS: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}


def _callable_tools(request: Request) -> tuple[_CallableTools, str | None, str | None]:
    """The tools ``request`` lets the model call; why fewer than offered; why an answer must call one.

    ``tool_choice="none"`` rules every tool out, a tool given as ``tool_choice`` every other one, and that tool or
    ``"required"`` rules out an answer without a call: OpenAI enforces that, but servers of its wire that ignore
    ``tool_choice`` (Ollama's ``/v1``) answer as they like.
    """
    tools = {tool["name"] if isinstance(tool, dict) else tool.name: tool for tool in request.tools}
    choice = request.tool_choice
    if not tools or choice == "auto":
        return _CallableTools(tools), None, None
    if choice == "required":
        return _CallableTools(tools), None, "tool_choice is 'required'"
    if isinstance(choice, str):  # "none"
        return _CallableTools({}), f"tool_choice is {choice!r}", None
    name = choice.name
    named = f"tool_choice names {name!r}"
    return _CallableTools({name: tools[name]} if name in tools else {}), named, named


def _raw(result: CreateResult) -> str:
    if isinstance(result.content, str):
        return result.content
    return json.dumps([{"name": call.name, "arguments": call.arguments} for call in result.content])


class ValidationLayer(Layer):
    """Checks every answer of a call, re-asking as the policy allows.

    Args:
        policy: The user's policy, or ``None``: then only answers to
            ``json_output=<model>`` are checked, against that model.
        json_answers: Every answer is asked for as JSON, whatever the request says: the client was built with a
            JSON ``response_format``.
    """

    def __init__(self, policy: ValidationPolicy | None, *, json_answers: bool = False) -> None:
        self.policy = policy
        self._implicit = ValidationPolicy(validate_tool_calls=False)
        self._json_answers = json_answers

    def _check(self, request: Request) -> AnswerCheck | None:
        json_output = request.json_output
        model = json_output if isinstance(json_output, type) and issubclass(json_output, BaseModel) else None
        policy = self.policy
        if policy is None:
            if model is None:
                return None
            policy = self._implicit
        schema = policy.compiled_schema
        if schema is None and model is not None:
            schema = ResponseSchema.of(model)
        elif model is not None and isinstance(policy.schema, type) and not issubclass(policy.schema, model):
            # The policy's schema is what the model is asked for: the agent (AssistantAgent's output_content_type)
            # would read each answer as another model, and fail on it after it was paid for.
            raise ConfigurationError(
                f"json_output={model.__name__} (an agent's output_content_type) asks for answers that "
                f"ValidationPolicy(schema={policy.schema.__name__}) does not give: the policy's schema is the one "
                "sent and checked, and the caller could not read its answers; give this agent a client without "
                f"a schema (json_output is validated then), or with schema={model.__name__} or a subclass of it"
            )
        # With no tool offered, every call names a tool that was not: {} (not None) so that it is refused.
        tools, tool_choice, call_required = _callable_tools(request) if policy.validate_tool_calls else (None,) * 3
        # JSON mode: json_output=True, or a JSON response_format of the request's or the client's own.
        expects_json = (
            schema is not None
            or json_output is True
            or self._json_answers
            or is_json_format(request.extra_create_args.get("response_format"))
        )
        return AnswerCheck(
            policy,
            schema,
            expects_json=expects_json,
            tools=tools,
            tool_choice=tool_choice,
            call_required=call_required,
        )

    def _prepare(self, request: Request, check: AnswerCheck) -> Request:
        if check.schema is None:
            return request
        return request.replace(response_format=check.schema.response_format())

    async def create(self, request: Request, call_next: CreateHandler) -> CreateResult:
        check = self._check(request)
        if check is None:
            return await call_next(request)
        request = self._prepare(request, check)
        findings = request.call.findings
        findings.will_judge()
        answers = _Answers()
        try:
            for answer in range(check.policy.reask + 1):
                result = answers.add(await call_next(request))
                handed_on, violations = _judged(check, result)
                findings.judged(request.call.attempts, len(violations))
                if not violations:
                    return answers.usage_on(handed_on)
                if result.finish_reason == "content_filter":
                    break
                if answer < check.policy.reask:
                    request = request.replace(messages=[*request.messages, *check.follow_up(result, violations)])
        finally:
            findings.release_held()
        return self._failed(check, result, violations, answers)

    def create_stream(self, request: Request, call_next: StreamHandler) -> AsyncGenerator[StreamItem, None]:
        try:
            check = self._check(request)
        except ConfigurationError as error:
            return _refused(error)  # raised on the first step, as a stream's errors are, not by create_stream()
        if check is None:
            return call_next(request)  # nothing to check: no extra generator between the chunks and the agent
        # Nothing is handed on before the answer was checked: the layers inside retry the whole stream.
        return self._checked_stream(self._prepare(request, check).replace(buffered=True), check, call_next)

    async def _checked_stream(
        self, request: Request, check: AnswerCheck, call_next: StreamHandler
    ) -> AsyncGenerator[StreamItem, None]:
        findings = request.call.findings
        findings.will_judge()
        answers = _Answers()
        try:
            for answer in range(check.policy.reask + 1):
                result = answers.add(await _final_result(call_next(request)))
                handed_on, violations = _judged(check, result)
                findings.judged(request.call.attempts, len(violations))
                if not violations or result.finish_reason == "content_filter":
                    break
                if answer < check.policy.reask:
                    request = request.replace(messages=[*request.messages, *check.follow_up(result, violations)])
        finally:
            findings.release_held()
        handed_on = self._failed(check, result, violations, answers) if violations else answers.usage_on(handed_on)
        if text := _streamed_text(handed_on):
            yield text
        yield handed_on

    @staticmethod
    def _failed(
        check: AnswerCheck, result: CreateResult, violations: list[SchemaViolation], answers: _Answers
    ) -> CreateResult:
        if check.policy.on_failure == "raise":
            raise ResponseValidationError(violations, _raw(result), answers.count)
        return checked(result, validation_errors=tuple(violations), usage=answers.usage)


def _judged(check: AnswerCheck, result: CreateResult) -> tuple[CreateResult, list[SchemaViolation]]:
    """``check.answer(result)``; an invalid answer the provider's content filter stopped says so first.

    Such an answer (Azure OpenAI's ``finish_reason: content_filter``, its text cut or empty) is not re-asked: the
    same conversation, and the filtered answer quoted back, would be filtered again, each time paid for.
    """
    handed_on, violations = check.answer(result)
    if violations and result.finish_reason == "content_filter":
        filtered = SchemaViolation(
            "", "the provider's content filter stopped the answer (finish_reason content_filter); not re-asked"
        )
        violations = [filtered, *violations]
    return handed_on, violations


class _Answers:
    """The tokens of every answer a call was given, re-asked ones included.

    The result handed on carries them all as its ``usage``: an agent reports it as its message's
    ``models_usage`` ("the usage incurred when producing this message"), which AutoGen's
    ``TokenUsageTermination`` sums, and every refused answer was paid for too.
    """

    __slots__ = ("count", "usage")

    def __init__(self) -> None:
        self.count = 0
        self.usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    def add(self, result: CreateResult) -> CreateResult:
        self.count += 1
        self.usage = RequestUsage(
            prompt_tokens=self.usage.prompt_tokens + result.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens + result.usage.completion_tokens,
        )
        return result

    def usage_on(self, result: CreateResult) -> CreateResult:
        """``result``, with the usage of every answer when there was more than one (a copy: it is not touched)."""
        if self.count < 2:
            return result
        return result.model_copy(update={"usage": self.usage})


async def _refused(error: ConfigurationError) -> AsyncGenerator[StreamItem, None]:
    raise error
    yield  # an async generator: nothing is raised until the first step  # pragma: no cover


async def _final_result(stream: AsyncGenerator[StreamItem, None]) -> CreateResult:
    result: CreateResult | None = None
    async with aclosing(stream):
        async for item in stream:
            if isinstance(item, CreateResult):
                result = item
    if result is None:
        raise IncompleteStreamError("the stream ended without a final CreateResult")
    return result


def _streamed_text(result: CreateResult) -> str | None:
    """The text a stream hands on before ``result``: the answer's, or what the model wrote with its tool calls,
    which AutoGen streams as it comes and keeps as the thought."""
    return result.content if isinstance(result.content, str) else result.thought
