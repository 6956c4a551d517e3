"""Wire rendering: a scripted completion as OpenAI's Chat Completions JSON, or as its SSE chunks.

Everything here is bytes and dicts, shaped exactly as the real API sends them
(``chat.completion`` objects, ``chat.completion.chunk`` events, error bodies);
the HTTP layer (`._http`) decides when each piece is written.
"""

from __future__ import annotations

import json as _json
import re
from dataclasses import dataclass
from typing import Any, Final

from ..providers import resolve_model_alias
from ._replies import FakeReply, FakeUsage, RecordedRequest

__all__ = ["Completion", "dumps", "error_body", "estimate_usage", "snapshot_name", "sse_error"]

_SYSTEM_FINGERPRINT: Final = "fp_fake"
# Whitespace stays attached to the following word so the pieces join back to the exact content.
_CONTENT_PIECE: Final = re.compile(r"\s*\S+|\s+")
_ARGUMENT_PIECE: Final = re.compile(r"\w+|\W+")


def error_body(message: str, type_: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON, as the API sends it.

    A lone surrogate (half an emoji, as an answer cut inside one holds) has no UTF-8: such a body is sent with
    every non-ASCII character escaped (``"\\ud83d"``), as a JSON encoder writes it, and the SDK reads it back.
    """
    text = _json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _json.dumps(obj, separators=(",", ":")).encode("ascii")


def snapshot_name(model: str) -> str:
    """The dated snapshot the real API reports for an alias, as AutoGen predicts it; else ``model``."""
    return resolve_model_alias(model)


def _count_words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def estimate_usage(request: RecordedRequest, reply: FakeReply) -> FakeUsage:
    """The deterministic usage a reply without ``usage`` reports (the rule is in `FakeReply`'s docs)."""
    prompt = 0
    for message in request.messages:
        prompt += 1
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            prompt += _count_words(content)
        elif isinstance(content, list):
            prompt += sum(
                _count_words(part.get("text"))
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
    completion = _count_words(reply.content)
    completion += sum(_count_words(name) + _count_words(arguments) for name, arguments in reply.calls)
    return FakeUsage(prompt_tokens=max(prompt, 1), completion_tokens=max(completion, 1))


@dataclass(frozen=True, slots=True)
class Completion:
    """Everything needed to render one completion reply, resolved on the server."""

    id: str
    created: int
    model: str
    content: str | None
    calls: tuple[tuple[str, str, str], ...]  # (id, name, arguments)
    finish_reason: str
    usage: FakeUsage
    service_tier: str = "default"

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None, "annotations": []}
        if self.calls:
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
                for call_id, name, arguments in self.calls
            ]
        return message

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": self.message(), "logprobs": None, "finish_reason": self.finish_reason}],
            "usage": self.usage.to_openai(),
            "service_tier": self.service_tier,
            "system_fingerprint": _SYSTEM_FINGERPRINT,
        }

    def chunk(self, delta: dict[str, Any] | None, finish_reason: str | None, *, include_usage: bool) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": self.service_tier,
            "system_fingerprint": _SYSTEM_FINGERPRINT,
            "choices": [],
        }
        if delta is not None:
            chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        if include_usage:
            chunk["usage"] = None if delta is not None else self.usage.to_openai()
        return b"data: " + dumps(chunk) + b"\n\n"

    def delta_chunks(self, *, include_usage: bool) -> list[bytes]:
        """The chunks that carry content or tool calls, i.e. the ones ``*_after_chunks`` count."""
        deltas: list[dict[str, Any]] = [{"content": piece} for piece in _CONTENT_PIECE.findall(self.content or "")]
        for index, (call_id, name, arguments) in enumerate(self.calls):
            deltas.append(
                {
                    "tool_calls": [
                        {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                    ]
                }
            )
            # Fragments like the real API's (`{"`, `city`, `":"`, ...) exercise the client's reassembly.
            deltas.extend(
                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                for piece in _ARGUMENT_PIECE.findall(arguments)
            )
        return [self.chunk(delta, None, include_usage=include_usage) for delta in deltas]

    def role_chunk(self, *, include_usage: bool) -> bytes:
        delta = {"role": "assistant", "content": "" if self.content is not None else None, "refusal": None}
        return self.chunk(delta, None, include_usage=include_usage)


def sse_error(message: str) -> bytes:
    """An ``event: error`` server-sent event with an OpenAI error body."""
    # The SDK raises openai.APIError for any SSE event whose JSON data has a truthy "error" key.
    return b"event: error\ndata: " + dumps(error_body(message, "server_error")) + b"\n\n"
