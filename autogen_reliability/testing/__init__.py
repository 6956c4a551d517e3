"""Test doubles for code built on AutoGen's model clients, and the pytest plugin that hands them out.

`FakeOpenAIServer` is a real HTTP server speaking the OpenAI Chat Completions
wire protocol, scripted with `FakeReply` objects; see `autogen_reliability.testing._server`.
`ScriptedChatCompletionClient` answers in-process from a script, and `faults`
builds the provider errors to script. The pytest plugin
(``autogen_reliability.testing.plugin``, loaded by pytest through the ``pytest11``
entry point) imports this package: its names load on first use.
"""

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    # What type checkers see; at run time each name loads on first use (``__getattr__`` below).
    from . import _faults as faults
    from ._cassette import LLMCassette
    from ._replies import FakeReply, FakeUsage, RecordedRequest, ReplyFactory, ReplyKind
    from ._scripted import (
        ScriptedChatCompletionClient,
        ScriptedChatCompletionClientConfig,
        ScriptedReply,
        ScriptedRequest,
        ScriptItem,
        UnexpectedRequestError,
    )
    from ._server import FakeOpenAIServer

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

# Each public name -> the module that defines it (the same as the TYPE_CHECKING imports above).
_HOMES = {
    "FakeOpenAIServer": "._server",
    "FakeReply": "._replies",
    "FakeUsage": "._replies",
    "LLMCassette": "._cassette",
    "RecordedRequest": "._replies",
    "ReplyFactory": "._replies",
    "ReplyKind": "._replies",
    "ScriptItem": "._scripted",
    "ScriptedChatCompletionClient": "._scripted",
    "ScriptedChatCompletionClientConfig": "._scripted",
    "ScriptedReply": "._scripted",
    "ScriptedRequest": "._scripted",
    "UnexpectedRequestError": "._scripted",
    "faults": "._faults",
}

__getattr__, __dir__ = _lazy.attach(__name__, _HOMES, globals(), __all__)
