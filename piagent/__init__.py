"""piagent: a small, fast agent server for Raspberry Pi class hardware, in front of a local LLM."""

from __future__ import annotations

import sys

# httpx imports its command-line tool (click, rich, pygments) whenever those happen to be installed: 3.7 MiB of
# idle RSS and 72 modules piagent never uses (bench/imports.py). A None entry makes that one import fail, and httpx
# falls back to a stub `main`; only before httpx is imported, so a host app's httpx is left as it is.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None is how an import is blocked

from piagent.agents import Agent, Agents, load_agents
from piagent.chat import ChatService
from piagent.exceptions import PiagentError
from piagent.http.app import create_app
from piagent.providers.ollama import OllamaProvider
from piagent.providers.openai import OpenAIProvider
from piagent.settings import Settings
from piagent.stores.base import Conversation, ConversationSummary, MemoryStore, Turn
from piagent.stores.memory import InMemoryStore
from piagent.version import __version__

__all__ = [
    "Agent",
    "Agents",
    "ChatService",
    "Conversation",
    "ConversationSummary",
    "InMemoryStore",
    "MemoryStore",
    "OllamaProvider",
    "OpenAIProvider",
    "PiagentError",
    "Settings",
    "Turn",
    "__version__",
    "create_app",
    "load_agents",
]
