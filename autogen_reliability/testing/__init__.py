"""Test doubles for code built on AutoGen's OpenAI model clients.

`FakeOpenAIServer` is a real HTTP server speaking the OpenAI Chat Completions
wire protocol, scripted with `FakeReply` objects; see `autogen_reliability.testing._server`.
"""

from autogen_reliability.testing import _faults as faults
from autogen_reliability.testing._cassette import LLMCassette
from autogen_reliability.testing._replies import FakeReply, FakeUsage, RecordedRequest, ReplyFactory, ReplyKind
from autogen_reliability.testing._scripted import (
    ScriptedChatCompletionClient,
    ScriptedChatCompletionClientConfig,
    ScriptedReply,
    ScriptedRequest,
    ScriptItem,
    UnexpectedRequestError,
)
from autogen_reliability.testing._server import FakeOpenAIServer

__all__ = [
    "FakeOpenAIServer",
    "FakeReply",
    "FakeUsage",
    "LLMCassette",
    "RecordedRequest",
    "ReplyFactory",
    "ReplyKind",
    "ScriptItem",
    "ScriptedChatCompletionClient",
    "ScriptedChatCompletionClientConfig",
    "ScriptedReply",
    "ScriptedRequest",
    "UnexpectedRequestError",
    "faults",
]
