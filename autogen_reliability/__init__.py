"""Reliability for existing AutoGen agents: wrap the model client they already use.

Example:
    >>> from autogen_ext.models.openai import OpenAIChatCompletionClient
    >>> from autogen_reliability import reliable, usage_scope
    >>> client = reliable(OpenAIChatCompletionClient(model="gpt-4o-mini"), project="acme-support")
"""

from .client import ReliableChatCompletionClient, ReliableChatCompletionClientConfig, ReliableOptions
from .context import Attribution, current_attribution, usage_scope
from .errors import ConfigurationError, IncompleteStreamError, ReliabilityError
from .pipeline import AttemptEvent
from .wrap import reliable

__all__ = [
    "AttemptEvent",
    "Attribution",
    "ConfigurationError",
    "IncompleteStreamError",
    "ReliabilityError",
    "ReliableChatCompletionClient",
    "ReliableChatCompletionClientConfig",
    "ReliableOptions",
    "current_attribution",
    "reliable",
    "usage_scope",
]
