"""What each backend does beyond the shared contract: files and schema, Redis keys and their expiry, the factory."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import sys
from functools import partial
from pathlib import Path

import anyio
import msgspec
import pytest

from piagent import Settings, create_app
from piagent.cli import main
from piagent.exceptions import SettingsError, StoreUnavailable
from piagent.http.app import purge_expired_forever
from piagent.stores import sqlite_path, store_factory
from piagent.stores.base import ASSISTANT, USER, Turn
from piagent.stores.memory import InMemoryStore
from piagent.stores.redis import RedisStore
from piagent.stores.sqlite import SQLiteStore
from piagent.stores.sqlite_schema import VERSION as SCHEMA_VERSION
from tests.redis_server import REDIS_SERVER, SKIP_REASON, RedisServer

pytestmark = pytest.mark.anyio


def exchange(n: int) -> tuple[Turn, Turn]:
    return Turn(USER, f"q{n}", 0.0, False), Turn(ASSISTANT, f"a{n}", 0.0, False)


async def test_sqlite_creates_a_versioned_schema_in_wal_mode_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "piagent.db"
    store = SQLiteStore(str(path), 60, 10)
    assert not path.exists()
    await store.append("c", "", exchange(1), 10)
    await store.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_two_stores_opening_one_new_file_at_once_both_serve(tmp_path: Path) -> None:
    # SQLite answers "database is locked" at once, not after its busy timeout, to the second of two
    # connections switching a new file to WAL together; it happened in about 1 of 20 tries before.
    for attempt in range(60):
        path = str(tmp_path / f"{attempt}.db")
        first, second = SQLiteStore(path, 60, 10), SQLiteStore(path, 60, 10)
        async with anyio.create_task_group() as group:
            group.start_soon(first.append, "a", "", exchange(1), 10)
            group.start_soon(second.append, "b", "", exchange(2), 10)
        assert await first.count() == 2, attempt
        await first.aclose()
        await second.aclose()


async def test_sqlite_keeps_only_max_turns_rows_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "piagent.db"
    store = SQLiteStore(str(path), 60, 10)
    for n in range(10):
        await store.append("c", "", exchange(n), 4)
    await store.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT text FROM turns ORDER BY seq").fetchall() == [("q8",), ("a8",), ("q9",), ("a9",)]


async def test_sqlite_refuses_a_file_from_a_newer_piagent_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "piagent.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SQLiteStore(str(path), 60, 10)
    with pytest.raises(StoreUnavailable, match=f"schema version {SCHEMA_VERSION + 1}"):
        await store.append("c", "", exchange(1), 10)
    await store.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


async def test_sqlite_recovers_once_its_folder_exists(tmp_path: Path) -> None:
    folder = tmp_path / "later"
    store = SQLiteStore(str(folder / "piagent.db"), 60, 10)
    with pytest.raises(StoreUnavailable, match="unable to open database file"):
        await store.check()
    folder.mkdir()
    await store.check()
    await store.append("c", "", exchange(1), 10)
    assert len(await store.history("c", "", 10)) == 2
    await store.aclose()


async def test_sqlite_check_catches_a_read_only_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "piagent.db"
    writable = SQLiteStore(str(path), 60, 10)
    await writable.append("c", "", exchange(1), 10)
    await writable.aclose()
    # The tests run as root, for whom file modes mean nothing: SQLite's read-only URI mode gives the
    # same SQLITE_READONLY a chmod'ed file gives everyone else.
    monkeypatch.setattr(sqlite3, "connect", partial(sqlite3.connect, uri=True))
    read_only = SQLiteStore(f"file:{path}?mode=ro", 60, 10)
    with pytest.raises(StoreUnavailable, match="readonly database"):
        await read_only.check()
    with pytest.raises(StoreUnavailable, match="readonly database"):
        await read_only.append("c", "", exchange(2), 10)
    assert len(await read_only.history("c", "", 10)) == 2  # what was there is still there, and readable
    await read_only.aclose()


async def test_redis_keys_expire_ttl_after_the_last_append_and_the_list_is_trimmed(redis_server: RedisServer) -> None:
    redis_server.flush()
    store = RedisStore(redis_server.url, 600, 10)
    for n in range(6):
        await store.append("c", "me", exchange(n), 4)
    await store.aclose()
    with redis_server.client() as client:
        assert client.llen("piagent:t:me:c") == 4
        for key in ("piagent:c:me:c", "piagent:t:me:c", "piagent:o:me"):
            assert 595_000 < client.pttl(key) <= 600_000, key
        assert client.zscore("piagent:lru", "me:c") is not None


async def test_redis_itself_expires_a_conversation_after_a_short_real_ttl(redis_server: RedisServer) -> None:
    redis_server.flush()
    store = RedisStore(redis_server.url, 0.3, 10)  # the real wall clock: no injected time here
    await store.append("c", "", exchange(1), 10)
    with redis_server.client() as client:
        assert client.exists("piagent:c::c", "piagent:t::c") == 2
        await anyio.sleep(0.5)
        assert client.exists("piagent:c::c", "piagent:t::c") == 0
    assert await store.history("c", "", 10) == []
    assert await store.list_conversations("", 10) == []
    assert await store.purge_expired() == 1  # the index entry Redis could not expire by itself
    await store.aclose()


@pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)
async def test_redis_store_answers_again_after_the_server_comes_back() -> None:
    with RedisServer() as server:
        store = RedisStore(server.url, 60, 10)
        await store.append("c", "", exchange(1), 10)
    try:
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            await store.history("c", "", 10)
        with RedisServer(port=server.port):  # the same address again: the pool reconnects by itself
            await store.check()
            await store.append("c", "", exchange(2), 10)
            assert len(await store.history("c", "", 10)) == 2  # nothing persisted (--save ''): a new start
    finally:
        await store.aclose()


async def test_memory_store_forgets_everything_on_close() -> None:
    store = InMemoryStore(60, 10)
    await store.append("c", "", exchange(1), 10)
    await store.aclose()
    assert await store.count() == 0


@pytest.mark.parametrize(
    ("url", "path"),
    [
        pytest.param("sqlite:///piagent.db", "piagent.db", id="relative"),
        pytest.param("sqlite:///data/piagent.db", "data/piagent.db", id="relative-folder"),
        pytest.param("sqlite:////var/lib/piagent/piagent.db", "/var/lib/piagent/piagent.db", id="absolute"),
    ],
)
def test_sqlite_urls_name_files_as_sqlalchemy_does(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        pytest.param("memory://", InMemoryStore, id="memory"),
        pytest.param("sqlite:///x.db", SQLiteStore, id="sqlite"),
        pytest.param("redis://127.0.0.1:1/0", RedisStore, id="redis"),
    ],
)
async def test_the_url_picks_the_store(url: str, kind: type) -> None:
    factory = store_factory(Settings(memory_url=url))
    assert factory is not None
    store = factory()
    assert isinstance(store, kind)
    await store.aclose()


def test_memory_off_opens_no_store() -> None:
    assert store_factory(Settings(memory_enabled=False, memory_url="redis://127.0.0.1:1/0")) is None


def test_a_redis_url_without_the_redis_package_stops_start_up_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, prompts_dir: Path
) -> None:
    for name in [name for name in sys.modules if name == "redis" or name.startswith("redis.")]:
        monkeypatch.setitem(sys.modules, name, None)  # what `import redis...` meets when it is not installed
    monkeypatch.delitem(sys.modules, "piagent.stores.redis")
    settings = Settings(memory_url="redis://127.0.0.1:6379/0", prompts_dir=str(prompts_dir))
    with pytest.raises(SettingsError, match=r"pip install 'piagent\[redis\]'"):
        create_app(settings)


def test_the_command_says_which_extra_to_install_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, prompts_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [name for name in sys.modules if name == "redis" or name.startswith("redis.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "piagent.stores.redis")
    monkeypatch.chdir(prompts_dir.parent)
    monkeypatch.setenv("PIAGENT_PROMPTS_DIR", str(prompts_dir))
    monkeypatch.setenv("PIAGENT_MEMORY_URL", "redis://127.0.0.1:6379/0")
    assert main([]) == 2
    assert "pip install 'piagent[redis]'" in capsys.readouterr().err


async def test_the_background_task_purges_expired_conversations_until_cancelled(tmp_path: Path) -> None:
    now = [1_000.0]
    store = SQLiteStore(str(tmp_path / "piagent.db"), 60, 10, lambda: now[0])
    await store.append("old", "", exchange(1), 10)
    now[0] += 60
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(purge_expired_forever, store, 0.01)
        with anyio.fail_after(5):
            while True:  # nothing but the task deletes the row
                await anyio.sleep(0.01)
                with sqlite3.connect(tmp_path / "piagent.db") as db:
                    if db.execute("SELECT count(*) FROM conversations").fetchone() == (0,):
                        break
        tasks.cancel_scope.cancel()
    await store.aclose()


OWNER = "0123456789abcdef0123456789abcdef"
V1_FILE = Path(__file__).parent / "data" / "conversations-v1.sqlite"


async def test_a_sqlite_file_of_schema_version_1_is_migrated_with_every_turn(tmp_path: Path) -> None:
    # tests/data/conversations-v1.sqlite was written by piagent 0.5.0's store (schema version 1).
    path = tmp_path / "v1.sqlite"
    shutil.copyfile(V1_FILE, path)
    store = SQLiteStore(str(path), 10**9, 10, clock=lambda: 1_700_000_010.0)
    kitchen = await store.get("kitchen", "")
    assert kitchen is not None
    assert [(t.role, t.text, t.interrupted) for t in kitchen.turns] == [
        (USER, "How hot is the Pi?", False),
        (ASSISTANT, "About 48 °C.", False),
        (USER, "And the disk?", False),
        (ASSISTANT, "Half full", True),
    ]
    assert [t.text for t in await store.history("garden", OWNER, 10)] == ["Water the plants?", "Not today."]
    assert [c.id for c in await store.list_conversations(OWNER, 10)] == ["garden"]
    assert await store.history("garden", "", 10) == []  # still the owner's alone
    await store.append("garden", "", exchange(1), 10)  # and another key may now use the same id
    assert [t.text for t in await store.history("garden", OWNER, 10)] == ["Water the plants?", "Not today."]
    await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    reopened = SQLiteStore(str(path), 10**9, 10, clock=lambda: 1_700_000_010.0)  # a second open changes nothing
    assert await reopened.count() == 3
    await reopened.aclose()


async def test_redis_keys_of_layout_1_are_renamed_on_first_use(redis_server: RedisServer) -> None:
    redis_server.flush()
    # The keys piagent 0.5.0 wrote: conversations named by id alone, turns as msgpack 4-tuples.
    turn = msgspec.msgpack.encode
    with redis_server.client() as client:
        client.hset("piagent:c:kitchen", mapping={"owner": OWNER, "agent": "general", "preview": "Hi", "updated_at": 5})
        client.rpush("piagent:t:kitchen", turn(("user", "Hi", 5.0, False)), turn(("assistant", "Hello", 5.0, True)))
        client.pexpire("piagent:c:kitchen", 600_000)
        client.pexpire("piagent:t:kitchen", 600_000)
        client.zadd(f"piagent:o:{OWNER}", {"kitchen": 5})
        client.zadd("piagent:lru", {"kitchen": 5, "expired-long-ago": 1})
    store = RedisStore(redis_server.url, 600, 10, clock=lambda: 10.0)
    assert [(t.text, t.interrupted) for t in await store.history("kitchen", OWNER, 10)] == [
        ("Hi", False),
        ("Hello", True),
    ]
    assert [c.id for c in await store.list_conversations(OWNER, 10)] == ["kitchen"]
    assert await store.history("kitchen", "", 10) == []
    assert await store.count() == 1
    await store.aclose()
    with redis_server.client() as client:
        assert client.exists("piagent:c:kitchen", "piagent:t:kitchen") == 0
        assert 590_000 < client.pttl(f"piagent:t:{OWNER}:kitchen") <= 600_000  # the expiry went along
        assert client.zrange("piagent:lru", 0, -1) == [f"{OWNER}:kitchen".encode()]
        assert client.get("piagent:schema") == b"2"


async def test_the_in_process_store_keeps_its_text_under_the_byte_cap_least_recently_used_first() -> None:
    store = InMemoryStore(600, 10_000, clock=lambda: 0.0, max_bytes=200_000)
    message = "x" * 16_000
    for n in range(100):  # 100 conversations of one 16 kB exchange: 3.2 MB offered
        await store.append(f"c{n}", "", (Turn(USER, message, 0, False), Turn(ASSISTANT, message, 0, False)), 10)
    kept = [c.id for c in await store.list_conversations("", 100)]
    assert 5 <= len(kept) <= 6  # 200 kB holds six exchanges of 32 kB at most
    assert set(kept) == {f"c{n}" for n in range(100 - len(kept), 100)}  # the newest ones
    held = 0
    for conversation_id in kept:
        held += sum(len(t.text) for t in await store.history(conversation_id, "", 10))
    assert held <= 200_000
    # One conversation alone over the cap keeps its newest exchange, never nothing.
    await store.append("big", "", (Turn(USER, "y" * 150_000, 0, False), Turn(ASSISTANT, "z" * 40_000, 0, False)), 10)
    await store.append("big", "", (Turn(USER, "w" * 150_000, 0, False), Turn(ASSISTANT, "v" * 40_000, 0, False)), 10)
    assert [t.text[0] for t in await store.history("big", "", 10)] == ["w", "v"]
    assert await store.count() == 1
    await store.delete("big", "")  # the bytes of what went are given back: five exchanges fit again
    for n in range(5):
        await store.append(f"d{n}", "", (Turn(USER, message, 0, False), Turn(ASSISTANT, message, 0, False)), 10)
    assert await store.count() == 5
