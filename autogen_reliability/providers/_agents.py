"""Where AutoGen's agents and teams keep the model client they call, and their members.

AutoGen exposes none of these publicly; ``reliable()`` needs all of them:

- ``_model_client``: the client of ``AssistantAgent``, ``SocietyOfMindAgent``,
  ``CodeExecutorAgent``, and of ``SelectorGroupChat`` / ``MagenticOneGroupChat``
  (the speaker selector / the orchestrator);
- ``_team``: the inner team of a ``SocietyOfMindAgent``;
- ``_wrapped_agent``: the agent a ``MessageFilterAgent`` runs (with the messages it filtered);
- ``_workbench`` / ``_tools`` / ``_task_runner``: an ``AssistantAgent``'s workbenches, the tools of
  a static one, and the agent or team an ``AgentTool`` / ``TeamTool`` among them runs;
- ``_participants``: the members of a team;
- ``_initialized``: whether a team has made the agents its runtime runs (on its
  first run); a ``SelectorGroupChat``'s selector and a ``MagenticOneGroupChat``'s
  orchestrator keep the client the team held then.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Final

from autogen_core.models import ChatCompletionClient

# Both run a task with an agent or a team, kept as ``_task_runner`` by their (private) base class. Looked up
# where they are, never imported here: a tool of a class no one imported is none of them (and autogen_agentchat's
# tools, 15 ms to import, stay out of a process that has none).
_TASK_RUNNER_TOOLS: Final = ("autogen_agentchat.tools", ("AgentTool", "TeamTool"))

__all__ = [
    "has_started",
    "model_client_of",
    "participants_of",
    "run_inside",
    "set_model_client",
]

# Where AutoGen agents and teams keep the model client they call.
_CLIENT_ATTRIBUTE = "_model_client"


def model_client_of(owner: object) -> ChatCompletionClient | None:
    """The model client an agent or a team calls, or ``None`` if it keeps none."""
    client = getattr(owner, _CLIENT_ATTRIBUTE, None)
    return client if isinstance(client, ChatCompletionClient) else None


def set_model_client(owner: object, client: ChatCompletionClient) -> None:
    """Make an agent or a team call ``client`` from now on."""
    setattr(owner, _CLIENT_ATTRIBUTE, client)


def run_inside(agent: object) -> Iterator[object]:
    """The agents and teams ``agent`` runs inside it (not checked to be ones), if any.

    A ``SocietyOfMindAgent``'s inner team; the agent a ``MessageFilterAgent`` wraps; the agent or
    team each ``AgentTool`` / ``TeamTool`` among its tools runs. Only tools an agent holds as
    objects are seen: those of its static workbenches (``tools=[...]``).
    """
    yield getattr(agent, "_team", None)
    yield getattr(agent, "_wrapped_agent", None)
    module, names = _TASK_RUNNER_TOOLS
    imported = sys.modules.get(module)
    runners = tuple(getattr(imported, name) for name in names) if imported is not None else ()
    if not runners:
        return
    for workbench in getattr(agent, "_workbench", None) or ():
        for tool in getattr(workbench, "_tools", None) or ():
            if isinstance(tool, runners):
                yield getattr(tool, "_task_runner", None)


def participants_of(team: object) -> Iterable[object]:
    """The members of a team (agents and nested teams; not checked), or none."""
    participants: Iterable[object] = getattr(team, "_participants", ())
    return participants


def has_started(team: object) -> bool:
    """Whether a team has run: its runtime's agents (the selector, the orchestrator) exist, with their clients."""
    return getattr(team, "_initialized", False) is True
