"""Conversations in an SQLite file (stdlib `sqlite3`): they survive restarts, with no server to run.

One connection, used by one worker thread at a time (an anyio CapacityLimiter of 1), so the event
loop never waits on the disk and every call is serialized: appends to one conversation keep their
order. WAL mode lets other processes read while one writes. The schema carries a version number
(`PRAGMA user_version`), is created on first use and migrated from older versions. Expiry is decided
with the injected clock in every query; `purge_expired` (run by the lifespan's background task) gives the space back.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio
import anyio.to_thread
import msgspec

from piagent.exceptions import StoreUnavailable
from piagent.stores import sqlite_schema as schema
from piagent.stores.base import Conversation, ConversationSummary, Cursor, ToolCallRecord, Turn, preview_of

logger = logging.getLogger("piagent.stores.sqlite")
T = TypeVar("T")

_TOOL_CALLS = msgspec.msgpack.Encoder()
_DECODE_TOOL_CALLS = msgspec.msgpack.Decoder(tuple[ToolCallRecord, ...]).decode


def _forget(db: sqlite3.Connection, owner: str, conversation_id: str) -> None:
    db.execute("DELETE FROM turns WHERE owner = ? AND conversation_id = ?", (owner, conversation_id))
    db.execute("DELETE FROM conversations WHERE owner = ? AND id = ?", (owner, conversation_id))


def _row(turn: Turn) -> tuple[str, str, float, bool, bytes | None, str, str]:
    calls = _TOOL_CALLS.encode(turn.tool_calls) if turn.tool_calls else None
    return turn.role, turn.text, turn.at, turn.interrupted, calls, turn.tool_call_id, turn.name


def _turns(db: sqlite3.Connection, owner: str, conversation_id: str, limit: int = -1) -> list[Turn]:
    rows = db.execute(
        "SELECT role, text, at, interrupted, tool_calls, tool_call_id, name FROM turns"
        " WHERE owner = ? AND conversation_id = ? ORDER BY seq DESC LIMIT ?",
        (owner, conversation_id, limit),
    ).fetchall()
    return [
        Turn(role, text, at, bool(interrupted), _DECODE_TOOL_CALLS(calls) if calls else (), call_id, name)
        for role, text, at, interrupted, calls, call_id, name in reversed(rows)
    ]


_BUSY_TIMEOUT = 5.0


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """`PRAGMA journal_mode = WAL`, waiting out a concurrent opener.

    On a new file SQLite answers "database is locked" at once, without its busy timeout, when another
    connection (another store, another piagent) is switching the same file at that moment; so wait here,
    as the busy timeout would. Runs in a worker thread, so sleeping blocks no event loop.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SQLiteStore:
    """The MemoryStore in one SQLite file; a file that cannot be opened or written makes it unavailable."""

    name = "sqlite"

    def __init__(self, path: str, ttl: float, max_conversations: int, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._ttl = ttl
        self._max = max_conversations
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    # -- running on the worker thread

    async def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        # Not abandoned on cancellation: a call that has started finishes (and commits or rolls back).
        return await anyio.to_thread.run_sync(self._call, work, write, limiter=self._limiter)

    def _call(self, work: Callable[[sqlite3.Connection], T], write: bool) -> T:
        try:
            db = self._db if self._db is not None else self._open()
            # A transaction per call: writes take the lock up front (IMMEDIATE) so two processes never
            # deadlock upgrading; reads see one consistent snapshot.
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(db)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            # Reopen on the next call: the cause (a full disk, a missing folder, a lock) may be gone by then.
            self._close()
            logger.warning("sqlite store failed: %s", exc)
            raise StoreUnavailable(self.name, str(exc)) from exc

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            _switch_to_wal(db)
            # NORMAL in WAL mode: a crash of piagent loses nothing and the file never corrupts; only a
            # power cut may roll back the last few commits. It spares an SD card an fsync per message.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version in (0, 1):
                    for statement in schema.CREATE if version == 0 else schema.MIGRATE_FROM_1:
                        db.execute(statement)
                    if version == 1:
                        logger.info("sqlite store: migrated %s from schema version 1 to %d", self._path, schema.VERSION)
                    db.execute(f"PRAGMA user_version = {schema.VERSION}")
                    version = schema.VERSION
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if version != schema.VERSION:
                raise StoreUnavailable(
                    self.name, f"the file has schema version {version}; this piagent knows version {schema.VERSION}"
                )
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _alive(self, db: sqlite3.Connection, owner: str, conversation_id: str, now: float) -> tuple[bool, int]:
        """(whether the owner's conversation lives, its next turn number)."""
        row = db.execute(
            "SELECT updated_at, next_seq FROM conversations WHERE owner = ? AND id = ?", (owner, conversation_id)
        ).fetchone()
        if row is None or row[0] <= now - self._ttl:
            return False, 0
        return True, row[1]

    # -- the MemoryStore contract

    async def history(self, conversation_id: str, owner: str, limit: int) -> list[Turn]:
        """The last `limit` turns (oldest first); [] for an unknown or expired conversation."""
        now = self._clock()

        def read(db: sqlite3.Connection) -> list[Turn]:
            alive, _ = self._alive(db, owner, conversation_id, now)
            return _turns(db, owner, conversation_id, limit) if alive else []

        return await self._run(read)

    async def append(
        self, conversation_id: str, owner: str, turns: Sequence[Turn], max_turns: int, agent: str = ""
    ) -> None:
        """Add turns in one transaction, keep the last `max_turns`, record the agent and the time."""
        now = self._clock()

        def write(db: sqlite3.Connection) -> None:
            alive, seq = self._alive(db, owner, conversation_id, now)
            if not alive:
                _forget(db, owner, conversation_id)  # an expired one under this id starts over
            end = seq + len(turns)
            if alive:
                db.execute(
                    "UPDATE conversations SET agent = ?, updated_at = ?, next_seq = ? WHERE owner = ? AND id = ?",
                    (agent, now, end, owner, conversation_id),
                )
            else:
                db.execute(
                    "INSERT INTO conversations (owner, id, agent, preview, updated_at, next_seq)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (owner, conversation_id, agent, preview_of(turns), now, end),
                )
            db.executemany(
                "INSERT INTO turns (owner, conversation_id, seq, role, text, at, interrupted, tool_calls,"
                " tool_call_id, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(owner, conversation_id, seq + i, *_row(t)) for i, t in enumerate(turns)],
            )
            db.execute(
                "DELETE FROM turns WHERE owner = ? AND conversation_id = ? AND seq < ?",
                (owner, conversation_id, end - max_turns),
            )
            if not alive:
                self._evict_over_cap(db)

        await self._run(write, write=True)

    def _evict_over_cap(self, db: sqlite3.Connection) -> None:
        excess = db.execute("SELECT count(*) FROM conversations").fetchone()[0] - self._max
        if excess > 0:
            oldest = db.execute(
                "SELECT owner, id FROM conversations ORDER BY updated_at, owner, id LIMIT ?", (excess,)
            ).fetchall()
            for owner, conversation_id in oldest:
                _forget(db, owner, conversation_id)

    async def get(self, conversation_id: str, owner: str) -> Conversation | None:
        """The whole conversation; None when unknown, expired or another owner's."""
        horizon = self._clock() - self._ttl

        def read(db: sqlite3.Connection) -> Conversation | None:
            row = db.execute(
                "SELECT agent, updated_at FROM conversations WHERE owner = ? AND id = ? AND updated_at > ?",
                (owner, conversation_id, horizon),
            ).fetchone()
            if row is None:
                return None
            return Conversation(conversation_id, row[0], row[1], _turns(db, owner, conversation_id))

        return await self._run(read)

    async def list_conversations(
        self, owner: str, limit: int, before: Cursor | None = None
    ) -> list[ConversationSummary]:
        """Up to `limit` of the owner's conversations, newest first, strictly after the `before` cursor."""
        horizon = self._clock() - self._ttl
        sql = (
            "SELECT id, agent, updated_at, (SELECT count(*) FROM turns AS t WHERE t.owner = c.owner"
            " AND t.conversation_id = c.id), preview FROM conversations AS c WHERE owner = ? AND updated_at > ?"
        )
        params: tuple[object, ...] = (owner, horizon)
        if before is not None:
            sql += " AND (updated_at < ? OR (updated_at = ? AND id < ?))"
            params += (before[0], before[0], before[1])
        sql += " ORDER BY updated_at DESC, id DESC LIMIT ?"
        params += (limit,)

        def read(db: sqlite3.Connection) -> list[ConversationSummary]:
            return [ConversationSummary(*row) for row in db.execute(sql, params)]

        return await self._run(read)

    async def delete(self, conversation_id: str, owner: str) -> bool:
        """Forget a conversation; False when there was none (unknown, expired or another owner's)."""
        horizon = self._clock() - self._ttl

        def write(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT updated_at FROM conversations WHERE owner = ? AND id = ?", (owner, conversation_id)
            ).fetchone()
            if row is None:
                return False
            _forget(db, owner, conversation_id)
            return bool(row[0] > horizon)

        return await self._run(write, write=True)

    async def count(self) -> int:
        """How many live conversations are stored, for every owner."""
        horizon = self._clock() - self._ttl

        def read(db: sqlite3.Connection) -> int:
            found: int = db.execute("SELECT count(*) FROM conversations WHERE updated_at > ?", (horizon,)).fetchone()[0]
            return found

        return await self._run(read)

    async def purge_expired(self) -> int:
        """Delete the expired conversations and their turns; how many went."""
        horizon = self._clock() - self._ttl

        def write(db: sqlite3.Connection) -> int:
            db.execute(
                "DELETE FROM turns WHERE (owner, conversation_id) IN"
                " (SELECT owner, id FROM conversations WHERE updated_at <= ?)",
                (horizon,),
            )
            return db.execute("DELETE FROM conversations WHERE updated_at <= ?", (horizon,)).rowcount

        return await self._run(write, write=True)

    async def check(self) -> None:
        """Open the file (creating the schema) and prove it can be written, without changing anything."""

        def probe(db: sqlite3.Connection) -> None:
            # Rewriting the version to itself inside a transaction that is rolled back: a real write
            # attempt, so a read-only file or folder shows here and not on the first message.
            db.execute(f"PRAGMA user_version = {schema.VERSION}")
            raise _Probed

        with contextlib.suppress(_Probed):
            await self._run(probe, write=True)

    async def aclose(self) -> None:
        """Close the connection (on the worker thread, after any call in flight)."""
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)


class _Probed(Exception):
    """Raised on purpose to roll the write probe back."""
