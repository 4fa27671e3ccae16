"""What each backend does beyond the shared contract: files and schema, Redis keys and their expiry, the factory."""

from __future__ import annotations

import sqlite3
import sys
from functools import partial
from pathlib import Path

import anyio
import pytest

from piagent import Settings, create_app
from piagent.cli import main
from piagent.exceptions import SettingsError, StoreUnavailable
from piagent.http.app import purge_expired_forever
from piagent.stores import sqlite_path, store_factory
from piagent.stores.base import ASSISTANT, USER, Turn
from piagent.stores.memory import InMemoryStore
from piagent.stores.redis import RedisStore
from piagent.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.redis_server import REDIS_SERVER, SKIP_REASON, RedisServer

pytestmark = pytest.mark.anyio


def exchange(n: int) -> tuple[Turn, Turn]:
    return Turn(USER, f"q{n}", 0.0), Turn(ASSISTANT, f"a{n}", 0.0)


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
        assert client.llen("piagent:t:c") == 4
        for key in ("piagent:c:c", "piagent:t:c", "piagent:o:me"):
            assert 595_000 < client.pttl(key) <= 600_000, key
        assert client.zscore("piagent:lru", "c") is not None


async def test_redis_itself_expires_a_conversation_after_a_short_real_ttl(redis_server: RedisServer) -> None:
    redis_server.flush()
    store = RedisStore(redis_server.url, 0.3, 10)  # the real wall clock: no injected time here
    await store.append("c", "", exchange(1), 10)
    with redis_server.client() as client:
        assert client.exists("piagent:c:c", "piagent:t:c") == 2
        await anyio.sleep(0.5)
        assert client.exists("piagent:c:c", "piagent:t:c") == 0
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
