"""The memory store contract: the types every store keeps and the promises it makes.

Every store keeps the same promises, proven by one contract suite (tests/test_stores.py): the last
`max_turns` turns of a conversation, forgotten `ttl` seconds after its last append, at most
`max_conversations` in all (the least recently used goes first), each visible only to its owner.
Time comes from an injected clock, so expiry is decided the same way by every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from piagent.exceptions import ConversationNotFound

__all__ = [
    "ASSISTANT",
    "USER",
    "Conversation",
    "ConversationNotFound",
    "ConversationSummary",
    "Cursor",
    "MemoryStore",
    "TOOL",
    "ToolCallRecord",
    "Turn",
    "preview_of",
]

USER = "user"
ASSISTANT = "assistant"
TOOL = "tool"
PREVIEW_CHARS = 80

# A position in an owner's list, newest first: the (updated_at, id) of the last conversation seen.
Cursor = tuple[float, str]


class ToolCallRecord(msgspec.Struct, frozen=True, gc=False):
    """A tool call an assistant turn asked for: its id, the tool's name and the arguments as JSON text."""

    id: str
    name: str
    arguments: str


class Turn(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One message of a conversation; `interrupted` marks a reply cut short by the client leaving.

    A step of a tool loop is a turn too: an assistant turn with the `tool_calls` it asked for, then one
    `tool` turn per result, carrying the call's id and the tool's `name`. Plain turns show neither.
    """

    role: str
    text: str
    at: float
    interrupted: bool  # no default: always shown, as before tool steps existed
    tool_calls: tuple[ToolCallRecord, ...] = ()
    tool_call_id: str = ""
    name: str = ""


class Conversation(msgspec.Struct, frozen=True):
    """One stored conversation with every turn it keeps (also the `GET /conversations/{id}` body)."""

    id: str
    agent: str
    updated_at: float
    turns: list[Turn]


class ConversationSummary(msgspec.Struct, frozen=True):
    """One entry of an owner's conversation list (`GET /conversations`)."""

    id: str
    agent: str
    updated_at: float
    turns: int
    preview: str


def preview_of(turns: Sequence[Turn]) -> str:
    """The first user message, cut to 80 characters (a short text is the same object: no copy)."""
    for turn in turns:
        if turn.role == USER:
            return turn.text[:PREVIEW_CHARS]
    return ""


class MemoryStore(Protocol):
    """Where conversations live between requests; every failure to reach it is `StoreUnavailable`.

    A store may also set `never_waits = True` when none of its methods ever awaits (the in-process store): the
    chat service then writes without a cancellation shield, which such a write cannot need.
    """

    name: str

    async def history(self, conversation_id: str, owner: str, limit: int) -> list[Turn]:
        """The last `limit` turns (oldest first); [] for an unknown or expired conversation.

        Raises `ConversationNotFound` when the conversation belongs to another owner.
        """
        ...

    async def append(
        self, conversation_id: str, owner: str, turns: Sequence[Turn], max_turns: int, agent: str = ""
    ) -> None:
        """Add turns atomically, keep the last `max_turns`, record the agent, mark the conversation used now.

        Raises `ConversationNotFound` when the conversation belongs to another owner.
        """
        ...

    async def get(self, conversation_id: str, owner: str) -> Conversation | None:
        """The whole conversation; None when unknown, expired or another owner's."""
        ...

    async def list_conversations(
        self, owner: str, limit: int, before: Cursor | None = None
    ) -> list[ConversationSummary]:
        """Up to `limit` of the owner's conversations, newest first, strictly after the `before` cursor."""
        ...

    async def delete(self, conversation_id: str, owner: str) -> bool:
        """Forget a conversation; False when there was none (unknown, expired or another owner's)."""
        ...

    async def count(self) -> int:
        """How many live conversations are stored, for every owner."""
        ...

    async def purge_expired(self) -> int:
        """Drop expired conversations now (a background task calls this); how many went."""
        ...

    async def check(self) -> None:
        """Raise `StoreUnavailable` when the store cannot serve reads and writes right now."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds open."""
        ...
