"""The SQLite store's tables, by schema version, and the migration from each older version."""

# Version 2: conversations are keyed by (owner, id), so two keys never share or probe an id; turns
# hold tool steps. A version 1 file is migrated in place on first open (see MIGRATE_FROM_1).
VERSION = 2
CONVERSATIONS = """CREATE TABLE IF NOT EXISTS conversations (
        owner TEXT NOT NULL,
        id TEXT NOT NULL,
        agent TEXT NOT NULL,
        preview TEXT NOT NULL,
        updated_at REAL NOT NULL,
        next_seq INTEGER NOT NULL,
        PRIMARY KEY (owner, id)
    ) WITHOUT ROWID"""
TURNS = """CREATE TABLE IF NOT EXISTS turns (
        owner TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        text TEXT NOT NULL,
        at REAL NOT NULL,
        interrupted INTEGER NOT NULL,
        tool_calls BLOB,
        tool_call_id TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (owner, conversation_id, seq)
    ) WITHOUT ROWID"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, updated_at, id)",
    "CREATE INDEX IF NOT EXISTS conversations_by_use ON conversations (updated_at, owner, id)",
)
CREATE = (CONVERSATIONS, TURNS, *INDEXES)
# Version 1 keyed conversations by id alone (the owner a column) and turns by (conversation_id, seq).
MIGRATE_FROM_1 = (
    "ALTER TABLE conversations RENAME TO conversations_v1",
    "ALTER TABLE turns RENAME TO turns_v1",
    "DROP INDEX IF EXISTS conversations_by_owner",
    "DROP INDEX IF EXISTS conversations_by_use",
    *CREATE,
    "INSERT INTO conversations (owner, id, agent, preview, updated_at, next_seq)"
    " SELECT owner, id, agent, preview, updated_at, next_seq FROM conversations_v1",
    "INSERT INTO turns (owner, conversation_id, seq, role, text, at, interrupted)"
    " SELECT c.owner, t.conversation_id, t.seq, t.role, t.text, t.at, t.interrupted"
    " FROM turns_v1 AS t JOIN conversations_v1 AS c ON c.id = t.conversation_id",
    "DROP TABLE turns_v1",
    "DROP TABLE conversations_v1",
)
