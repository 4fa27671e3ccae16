"""The in-process memory store: max turns, TTL since last use, LRU cap, owners, interrupted replies."""

from __future__ import annotations

import pytest

from piagent.memory import ASSISTANT, USER, ConversationNotFound, InMemoryStore, Turn

pytestmark = pytest.mark.anyio


class Clock:
    """A hand-moved wall clock."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def exchange(n: int, interrupted: bool = False) -> tuple[Turn, Turn]:
    return Turn(USER, f"q{n}", 0.0), Turn(ASSISTANT, f"a{n}", 0.0, interrupted)


async def test_history_keeps_the_last_max_turns_in_order() -> None:
    store = InMemoryStore(ttl=60, max_conversations=10)
    for n in range(5):
        await store.append("c", "", exchange(n), max_turns=4)
    assert [t.text for t in await store.history("c", "", limit=10)] == ["q3", "a3", "q4", "a4"]
    assert [t.text for t in await store.history("c", "", limit=2)] == ["q4", "a4"]


async def test_an_unknown_conversation_has_no_history() -> None:
    store = InMemoryStore(ttl=60, max_conversations=10)
    assert await store.history("nope", "", limit=10) == []


async def test_a_conversation_expires_ttl_seconds_after_its_last_use() -> None:
    clock = Clock()
    store = InMemoryStore(ttl=60, max_conversations=10, clock=clock)
    await store.append("c", "", exchange(1), max_turns=10)
    clock.now += 59
    await store.append("c", "", exchange(2), max_turns=10)  # a use: the TTL starts again
    clock.now += 59
    assert len(await store.history("c", "", limit=10)) == 4
    clock.now += 1
    assert await store.history("c", "", limit=10) == []
    assert await store.count() == 0


async def test_the_least_recently_used_conversation_goes_past_the_cap() -> None:
    store = InMemoryStore(ttl=60, max_conversations=2)
    await store.append("a", "", exchange(1), max_turns=10)
    await store.append("b", "", exchange(1), max_turns=10)
    await store.append("a", "", exchange(2), max_turns=10)  # a is now the most recent
    await store.append("c", "", exchange(1), max_turns=10)
    assert await store.count() == 2
    assert await store.history("b", "", limit=10) == []
    assert len(await store.history("a", "", limit=10)) == 4


async def test_a_conversation_belongs_to_its_owner() -> None:
    store = InMemoryStore(ttl=60, max_conversations=10)
    await store.append("c", "alice", exchange(1), max_turns=10)
    with pytest.raises(ConversationNotFound):
        await store.history("c", "bob", limit=10)
    with pytest.raises(ConversationNotFound):
        await store.append("c", "bob", exchange(2), max_turns=10)
    assert len(await store.history("c", "alice", limit=10)) == 2


async def test_an_interrupted_reply_keeps_its_mark() -> None:
    store = InMemoryStore(ttl=60, max_conversations=10)
    await store.append("c", "", exchange(1, interrupted=True), max_turns=10)
    assert [t.interrupted for t in await store.history("c", "", limit=10)] == [False, True]


async def test_aclose_forgets_everything() -> None:
    store = InMemoryStore(ttl=60, max_conversations=10)
    await store.append("c", "", exchange(1), max_turns=10)
    await store.aclose()
    assert await store.count() == 0
