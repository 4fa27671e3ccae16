"""The chat service layer: agents, memory and the tool loop around the provider calls; nothing of HTTP."""

from __future__ import annotations

from piagent.chat.prepared import ChatItem, PreparedChat, new_conversation_id
from piagent.chat.service import ChatService

__all__ = ["ChatItem", "ChatService", "PreparedChat", "new_conversation_id"]
