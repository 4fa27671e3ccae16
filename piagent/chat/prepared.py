"""A chat resolved before any byte goes upstream: the agent, the messages, the options, the tools."""

from __future__ import annotations

import secrets
from typing import Any

from piagent.agents import Agent
from piagent.loop import AgentTools
from piagent.providers.base import Message, OutputFormat, Provider, Tools
from piagent.schemas import ChatResponse, QueuedEvent, ToolCall, ToolCallEvent, ToolResultEvent

# What a reply stream yields: its place in the queue (when asked), text pieces, the client's tool calls, the
# agent's tool steps, then the reply.
ChatItem = str | ToolCall | ToolCallEvent | ToolResultEvent | QueuedEvent | ChatResponse


def new_conversation_id() -> str:
    """A random, unguessable conversation id (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


class PreparedChat:
    """Everything one provider call needs, resolved before any byte goes upstream."""

    __slots__ = (
        "acting",
        "agent",
        "conversation_id",
        "message",
        "messages",
        "options",
        "output",
        "owner",
        "provider",
        "remember",
        "tools",
    )

    def __init__(
        self,
        agent: Agent,
        conversation_id: str,
        owner: str,
        message: str,
        messages: list[Message],
        options: dict[str, Any],
        provider: Provider,
        remember: bool = True,
        tools: Tools | None = None,
        output: OutputFormat | None = None,
        acting: AgentTools | None = None,
    ) -> None:
        self.agent = agent
        self.conversation_id = conversation_id
        self.owner = owner
        self.message = message
        self.messages = messages
        self.options = options
        self.provider = provider
        # False for the stateless front doors (OpenAI, Ollama): the client keeps the history.
        self.remember = remember
        # What the client offers the model (the front doors): its tools, and the shape of a structured reply.
        self.tools = tools
        self.output = output
        # The agent's own tools, which piagent runs in a loop (when the client brought none of its own).
        self.acting = acting
