"""piagent: a small, fast agent server for Raspberry Pi class hardware, in front of a local LLM."""

from __future__ import annotations

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
