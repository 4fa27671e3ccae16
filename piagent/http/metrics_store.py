"""The memory store as the metrics see it: each call counted by operation, each failure to reach the store too.

Only built when PIAGENT_METRICS is on (the lifespan wraps the store it opened); off, the store is used as it is,
so counting costs nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from piagent.exceptions import StoreUnavailable
from piagent.stores.base import Conversation, ConversationSummary, Cursor, MemoryStore, Turn

T = TypeVar("T")
# Told (store name, operation) for each call, and again for each call that found the store down.
StoreCounter = Callable[[str, str], None]


class ObservedStore:
    """A `MemoryStore` that counts every call of the store it wraps (`aclose` aside), and each `StoreUnavailable`."""

    def __init__(self, store: MemoryStore, count_call: StoreCounter, count_error: StoreCounter) -> None:
        self.name = store.name
        self.store = store
        self._count_call = count_call
        self._count_error = count_error

    async def _counted(self, operation: str, call: Awaitable[T]) -> T:
        self._count_call(self.name, operation)
        try:
            return await call
        except StoreUnavailable:
            self._count_error(self.name, operation)
            raise

    async def history(self, conversation_id: str, owner: str, limit: int) -> list[Turn]:
        """The store's `history`, counted."""
        return await self._counted("history", self.store.history(conversation_id, owner, limit))

    async def append(
        self, conversation_id: str, owner: str, turns: Sequence[Turn], max_turns: int, agent: str = ""
    ) -> None:
        """The store's `append`, counted."""
        await self._counted("append", self.store.append(conversation_id, owner, turns, max_turns, agent))

    async def get(self, conversation_id: str, owner: str) -> Conversation | None:
        """The store's `get`, counted."""
        return await self._counted("get", self.store.get(conversation_id, owner))

    async def list_conversations(
        self, owner: str, limit: int, before: Cursor | None = None
    ) -> list[ConversationSummary]:
        """The store's `list_conversations`, counted."""
        return await self._counted("list_conversations", self.store.list_conversations(owner, limit, before))

    async def delete(self, conversation_id: str, owner: str) -> bool:
        """The store's `delete`, counted."""
        return await self._counted("delete", self.store.delete(conversation_id, owner))

    async def count(self) -> int:
        """The store's `count`, counted."""
        return await self._counted("count", self.store.count())

    async def purge_expired(self) -> int:
        """The store's `purge_expired`, counted."""
        return await self._counted("purge_expired", self.store.purge_expired())

    async def check(self) -> None:
        """The store's `check`, counted."""
        await self._counted("check", self.store.check())

    async def aclose(self) -> None:
        """Close the store (not counted: once per run)."""
        await self.store.aclose()
