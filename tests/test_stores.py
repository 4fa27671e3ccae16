"""The MemoryStore contract, proven the same way on every backend: memory, sqlite and a real Redis.

Time is a hand-moved clock injected into the store. The in-process and SQLite stores decide expiry
from it alone. The Redis store lets Redis expire keys by itself (`PEXPIRE`, in real time) and also
stores each conversation's `updated_at` from the injected clock and compares it on every read: so
here the clock moves Redis conversations past their TTL without sleeping, and the real key expiry
has its own tests in test_store_backends.py (the TTL set on the keys, and one short real expiry).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import msgspec
import pytest

from piagent.exceptions import StoreUnavailable
from piagent.stores.base import ASSISTANT, TOOL, USER, Conversation, MemoryStore, ToolCallRecord, Turn
from piagent.stores.memory import InMemoryStore
from piagent.stores.redis import RedisStore
from piagent.stores.sqlite import SQLiteStore
from tests.servers import free_socket

pytestmark = pytest.mark.anyio
BACKENDS = [pytest.param("memory", id="memory"), pytest.param("sqlite", id="sqlite"), pytest.param("redis", id="redis")]
SHARED = [pytest.param("sqlite", id="sqlite"), pytest.param("redis", id="redis")]


class Clock:
    """A hand-moved wall clock."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


MakeStore = Callable[..., MemoryStore]


@pytest.fixture
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Stores of the backend under test; two made in one test share their data (except in memory)."""
    backend: str = request.param
    url = request.getfixturevalue("redis_url") if backend == "redis" else ""
    opened: list[MemoryStore] = []

    def make(ttl: float = 60.0, max_conversations: int = 10, clock: Callable[[], float] | None = None) -> MemoryStore:
        now = clock or Clock()
        store: MemoryStore
        if backend == "memory":
            store = InMemoryStore(ttl, max_conversations, now)
        elif backend == "sqlite":
            store = SQLiteStore(str(tmp_path / "piagent.db"), ttl, max_conversations, now)
        else:
            store = RedisStore(url, ttl, max_conversations, now)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.aclose()


def exchange(n: int, interrupted: bool = False, at: float = 0.0) -> tuple[Turn, Turn]:
    return Turn(USER, f"q{n}", at, False), Turn(ASSISTANT, f"a{n}", at, interrupted)


async def texts(store: MemoryStore, conversation_id: str, owner: str = "", limit: int = 100) -> list[str]:
    return [turn.text for turn in await store.history(conversation_id, owner, limit)]


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_history_keeps_the_last_max_turns_in_order(make_store: MakeStore) -> None:
    store = make_store()
    for n in range(5):
        await store.append("c", "", exchange(n), max_turns=4)
    assert await texts(store, "c") == ["q3", "a3", "q4", "a4"]
    assert await texts(store, "c", limit=2) == ["q4", "a4"]
    conversation = await store.get("c", "")
    assert conversation is not None
    assert [t.text for t in conversation.turns] == ["q3", "a3", "q4", "a4"]


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_an_unknown_conversation_has_no_history(make_store: MakeStore) -> None:
    store = make_store()
    assert await store.history("nope", "", limit=10) == []
    assert await store.get("nope", "") is None
    assert await store.delete("nope", "") is False


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_a_conversation_expires_ttl_seconds_after_its_last_append(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(ttl=60, clock=clock)
    await store.append("c", "", exchange(1), max_turns=10)
    clock.now += 59
    await store.append("c", "", exchange(2), max_turns=10)  # a use: the TTL starts again
    clock.now += 59
    assert len(await store.history("c", "", limit=10)) == 4  # reading is not a use...
    assert await store.get("c", "") is not None
    assert len(await store.list_conversations("", 10)) == 1
    clock.now += 1  # ...so this is exactly 60 s after the last append
    assert await store.history("c", "", limit=10) == []
    assert await store.get("c", "") is None
    assert await store.list_conversations("", 10) == []
    assert await store.count() == 0


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_an_expired_conversation_id_starts_afresh_for_anyone(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(ttl=60, clock=clock)
    await store.append("c", "alice", exchange(1), max_turns=10)
    clock.now += 60
    await store.append("c", "bob", exchange(2), max_turns=10)
    assert await texts(store, "c", "bob") == ["q2", "a2"]
    [summary] = await store.list_conversations("bob", 10)
    assert summary.preview == "q2"
    assert await store.list_conversations("alice", 10) == []


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_purge_drops_expired_conversations_and_keeps_live_ones(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(ttl=60, clock=clock)
    await store.append("old1", "", exchange(1), max_turns=10)
    await store.append("old2", "x", exchange(1), max_turns=10)
    clock.now += 30
    await store.append("live", "", exchange(1), max_turns=10)
    clock.now += 30
    assert await store.purge_expired() == 2
    assert await store.purge_expired() == 0
    assert await store.count() == 1
    assert await texts(store, "live") == ["q1", "a1"]


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_the_least_recently_used_conversation_goes_past_the_cap(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(max_conversations=2, clock=clock)
    await store.append("a", "", exchange(1), max_turns=10)
    clock.now += 1
    await store.append("b", "other", exchange(1), max_turns=10)
    clock.now += 1
    await store.append("a", "", exchange(2), max_turns=10)  # a is now the most recent
    clock.now += 1
    await store.append("c", "", exchange(1), max_turns=10)
    assert await store.count() == 2
    assert await store.history("b", "other", limit=10) == []
    assert await store.list_conversations("other", 10) == []
    assert len(await store.history("a", "", limit=10)) == 4
    assert [s.id for s in await store.list_conversations("", 10)] == ["c", "a"]


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_the_same_id_under_two_owners_is_two_conversations(make_store: MakeStore) -> None:
    store = make_store()
    await store.append("c", "alice", exchange(1), max_turns=10)
    # bob sees nothing of alice's "c": not even that it exists (no error that would let him probe ids)
    assert await store.history("c", "bob", limit=10) == []
    assert await store.get("c", "bob") is None
    assert await store.list_conversations("bob", 10) == []
    assert await store.delete("c", "bob") is False
    await store.append("c", "bob", exchange(2), max_turns=10)
    assert await texts(store, "c", "bob") == ["q2", "a2"]
    assert await texts(store, "c", "alice") == ["q1", "a1"]  # nothing bob did reached it
    assert await store.count() == 2
    assert await store.delete("c", "bob") is True
    assert await texts(store, "c", "alice") == ["q1", "a1"]
    assert [c.id for c in await store.list_conversations("alice", 10)] == ["c"]


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_tool_steps_are_kept_with_their_calls_and_results(make_store: MakeStore) -> None:
    store = make_store()
    calls = (ToolCallRecord("call_1", "clock", "{}"), ToolCallRecord("call_2", "calculator", '{"expression":"2+2"}'))
    turns = (
        Turn(USER, "what time is it, and 2+2?", 1.0, False),
        Turn(ASSISTANT, "", 1.0, False, calls),
        Turn(TOOL, "12:00 UTC", 1.0, False, tool_call_id="call_1", name="clock"),
        Turn(TOOL, "4", 1.0, False, tool_call_id="call_2", name="calculator"),
        Turn(ASSISTANT, "It is noon, and 4.", 1.0, False),
    )
    await store.append("c", "", turns, max_turns=10)
    assert await store.history("c", "", limit=10) == list(turns)
    conversation = await store.get("c", "")
    assert conversation is not None
    assert conversation.turns == list(turns)
    # Plain turns show no tool fields on the wire; tool turns show theirs.
    shown = msgspec.json.decode(msgspec.json.encode(conversation))["turns"]
    assert shown[0] == {"role": "user", "text": "what time is it, and 2+2?", "at": 1.0, "interrupted": False}
    assert shown[1]["tool_calls"][1] == {"id": "call_2", "name": "calculator", "arguments": '{"expression":"2+2"}'}
    assert (shown[2]["tool_call_id"], shown[2]["name"]) == ("call_1", "clock")


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_an_interrupted_reply_keeps_its_mark(make_store: MakeStore) -> None:
    store = make_store()
    await store.append("c", "", exchange(1, interrupted=True, at=5.5), max_turns=10)
    assert [t.interrupted for t in await store.history("c", "", limit=10)] == [False, True]
    assert await store.get("c", "") == Conversation(
        "c", "", 1_000.0, [Turn(USER, "q1", 5.5, False), Turn(ASSISTANT, "a1", 5.5, interrupted=True)]
    )


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_concurrent_appends_to_one_conversation_lose_nothing_and_keep_each_exchange_whole(
    make_store: MakeStore,
) -> None:
    store = make_store()
    async with anyio.create_task_group() as group:
        for n in range(40):
            group.start_soon(store.append, "c", "", exchange(n), 1000)
    turns = await texts(store, "c", limit=1000)
    assert len(turns) == 80
    pairs = [(turns[i], turns[i + 1]) for i in range(0, 80, 2)]
    assert all(q == f"q{a[1:]}" and q.startswith("q") for q, a in pairs), pairs
    assert sorted(q for q, _ in pairs) == sorted(f"q{n}" for n in range(40))


@pytest.mark.parametrize("make_store", SHARED, indirect=True)
async def test_two_stores_on_one_backend_share_conversations_and_lose_no_concurrent_append(
    make_store: MakeStore,
) -> None:
    first, second = make_store(), make_store()
    async with anyio.create_task_group() as group:
        for n in range(20):
            group.start_soon(first.append, "c", "", exchange(n), 1000)
            group.start_soon(second.append, "c", "", exchange(100 + n), 1000)
    turns = await texts(second, "c", limit=1000)
    assert sorted(turns[::2]) == sorted([f"q{n}" for n in range(20)] + [f"q{100 + n}" for n in range(20)])
    assert all(a == f"a{q[1:]}" for q, a in zip(turns[::2], turns[1::2], strict=True))
    assert await first.count() == 1


@pytest.mark.parametrize("make_store", SHARED, indirect=True)
async def test_conversations_outlive_the_store_that_wrote_them(make_store: MakeStore) -> None:
    writer = make_store()
    await writer.append("c", "", exchange(1), max_turns=10, agent="pirate")
    await writer.aclose()
    reader = make_store()
    assert await texts(reader, "c") == ["q1", "a1"]
    [summary] = await reader.list_conversations("", 10)
    assert summary.agent == "pirate"


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_get_returns_every_kept_turn_with_the_latest_agent_and_the_last_use(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(ttl=3600, clock=clock)
    await store.append("c", "", exchange(1, at=1.25), max_turns=10, agent="general")
    clock.now = 1_234.5
    await store.append("c", "", exchange(2, at=2.5), max_turns=10, agent="pirate")
    assert await store.get("c", "") == Conversation(
        "c",
        "pirate",
        1_234.5,
        [
            Turn(USER, "q1", 1.25, False),
            Turn(ASSISTANT, "a1", 1.25, False),
            Turn(USER, "q2", 2.5, False),
            Turn(ASSISTANT, "a2", 2.5, False),
        ],
    )


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_listing_is_the_owners_newest_first_with_turn_counts_previews_and_agents(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(clock=clock)
    long_question = "why " * 40
    await store.append(
        "first", "me", (Turn(USER, long_question, 0, False), Turn(ASSISTANT, "because", 0, False)), 10, "general"
    )
    clock.now += 1
    await store.append("theirs", "you", exchange(1), max_turns=10)
    clock.now += 1
    await store.append("second", "me", exchange(1), max_turns=10, agent="pirate")
    clock.now += 1
    await store.append("first", "me", exchange(2), max_turns=10, agent="shell")
    listed = await store.list_conversations("me", 10)
    assert [(s.id, s.agent, s.updated_at, s.turns) for s in listed] == [
        ("first", "shell", 1_003.0, 4),
        ("second", "pirate", 1_002.0, 2),
    ]
    assert listed[0].preview == long_question[:80]
    assert listed[1].preview == "q1"


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_pages_follow_each_other_without_gaps_or_repeats_even_when_times_tie(make_store: MakeStore) -> None:
    clock = Clock()
    store = make_store(max_conversations=100, clock=clock)
    ids = ["k", "b", "x", "a", "m", "c", "z"]
    for n, conversation_id in enumerate(ids):
        clock.now = 1_000.0 + n // 3  # three conversations share each second
        await store.append(conversation_id, "", exchange(n), max_turns=10)
    everything = await store.list_conversations("", 100)
    expected = sorted(((1_000.0 + n // 3, c) for n, c in enumerate(ids)), reverse=True)
    assert [(s.updated_at, s.id) for s in everything] == expected
    seen: list[str] = []
    before = None
    while True:
        page = await store.list_conversations("", 2, before)
        seen.extend(s.id for s in page)
        if len(page) < 2:
            break
        before = (page[-1].updated_at, page[-1].id)
    assert seen == [c for _, c in expected]


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_delete_forgets_the_conversation_for_good(make_store: MakeStore) -> None:
    store = make_store()
    await store.append("c", "", exchange(1), max_turns=10)
    await store.append("kept", "", exchange(1), max_turns=10)
    assert await store.delete("c", "") is True
    assert await store.delete("c", "") is False
    assert await store.get("c", "") is None
    assert await store.history("c", "", limit=10) == []
    assert [s.id for s in await store.list_conversations("", 10)] == ["kept"]
    assert await store.count() == 1


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_count_counts_the_live_conversations_of_every_owner(make_store: MakeStore) -> None:
    store = make_store()
    for n, owner in enumerate(["", "alice", "bob"]):
        await store.append(f"c{n}", owner, exchange(n), max_turns=10)
    assert await store.count() == 3
    await store.check()  # and a working store says so


@pytest.mark.parametrize("make_store", BACKENDS, indirect=True)
async def test_a_conversation_without_a_user_message_has_an_empty_preview(make_store: MakeStore) -> None:
    store = make_store()
    await store.append("c", "", (Turn(ASSISTANT, "welcome", 0, False),), max_turns=10)
    [summary] = await store.list_conversations("", 10)
    assert summary.preview == ""
    assert summary.turns == 1


@pytest.fixture(params=SHARED)
def down_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore]:
    """A store whose backing is not there: a SQLite file in a folder that is a file, a closed Redis port."""
    if request.param == "sqlite":
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        yield SQLiteStore(str(blocker / "piagent.db"), 60, 10)
        return
    with free_socket() as sock:  # bound but never listening: connections are refused
        yield RedisStore(f"redis://127.0.0.1:{sock.getsockname()[1]}/0", 60, 10)


async def test_a_store_that_is_down_says_so_by_name_from_every_call(down_store: MemoryStore) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: down_store.history("c", "", 10),
        lambda: down_store.append("c", "", exchange(1), 10),
        lambda: down_store.get("c", ""),
        lambda: down_store.list_conversations("", 10),
        lambda: down_store.delete("c", ""),
        down_store.count,
        down_store.purge_expired,
        down_store.check,
    ]
    try:
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                await call()
            assert caught.value.code == "store_unavailable"
            assert caught.value.message.startswith(f"memory store {down_store.name!r} is unavailable: ")
            assert "127.0.0.1" not in caught.value.message
    finally:
        await down_store.aclose()


async def test_sqlite_rows_are_really_gone_after_purge_and_delete(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(str(tmp_path / "p.db"), 60, 10, clock)
    await store.append("expired", "", exchange(1), 10)
    clock.now += 30
    await store.append("deleted", "", exchange(1), 10)
    await store.append("kept", "", exchange(1), 10)
    clock.now += 30
    await store.purge_expired()
    await store.delete("deleted", "")
    await store.aclose()
    with sqlite3.connect(tmp_path / "p.db") as db:
        assert db.execute("SELECT id FROM conversations").fetchall() == [("kept",)]
        assert db.execute("SELECT DISTINCT conversation_id FROM turns").fetchall() == [("kept",)]
