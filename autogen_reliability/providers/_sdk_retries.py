"""Switching off the provider SDK's own retries, so that our policy is the only one.

The openai and anthropic SDKs retry by themselves (two retries, up to 120 s
``Retry-After`` sleeps), and AutoGen passes that through: one wrapper attempt
would be up to three HTTP requests, each uncounted by our budget, circuit and
accounting. Every wrapper sets the SDK client's ``max_retries`` to 0, also with
``retry=None`` (one usage row per HTTP request holds either way), and records it
in the AutoGen client's config, so ``dump_component()`` says so. A client that
has an SDK handle we cannot configure gets one warning; ollama's clients, which
send each request once, get none.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from autogen_core.models import ChatCompletionClient

from ._clients import innermost, raw_config_of, sdk_client_of
from ._lookup import loaded_class

__all__ = ["switch_off_sdk_retries"]

# SDK clients that never retry by themselves: each attempt is one request already.
_NO_RETRIES = (("ollama", "AsyncClient"), ("ollama", "Client"))

_warned: set[type] = set()
_warned_lock = threading.Lock()


def switch_off_sdk_retries(client: ChatCompletionClient) -> None:
    """Make each attempt of ``client`` one HTTP request, where the client allows it; warn once where it does not."""
    client = innermost(client)
    sdk: Any = sdk_client_of(client)
    if sdk is None:
        return  # no SDK handle: nothing that retries behind our back (Replay, custom clients)
    if _never_retries(sdk):
        return  # ollama's clients send a request once: nothing to switch off, nothing to warn of
    retries = getattr(sdk, "max_retries", None)
    if isinstance(retries, int) and not isinstance(retries, bool):
        if retries > 0:
            sdk.max_retries = 0
            raw_config = raw_config_of(client)
            if isinstance(raw_config, dict):  # AutoGen's own dict: what dump_component() writes
                raw_config["max_retries"] = 0
        return
    with _warned_lock:
        if type(client) in _warned:
            return
        _warned.add(type(client))
    warnings.warn(
        f"cannot switch off the SDK retries of {type(client).__name__}: one attempt may be several requests; "
        "configure its SDK client with no retries",
        RuntimeWarning,
        stacklevel=4,
    )


def _never_retries(sdk: object) -> bool:
    for module, name in _NO_RETRIES:
        cls = loaded_class(module, name)
        if cls is not None and isinstance(sdk, cls):
            return True
    return False
