"""Schema migrations: append-only, applied on open, so a fresh and an old store take one path.

Never edit a migration that has shipped; add a new one below it. They run on memori's own
migrator (:mod:`memori_cli.store.migrator`), which records them in sqlite-utils' table and
format, as sqlite-utils' ``Migrations`` did when they were written (``db`` has the same
``execute``, ``executescript`` and ``conn``).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from . import connect
from .migrator import Migrations, Script
from .reply import reply_context

migrations = Migrations("memori")


def migrate(conn: Any) -> list[str]:
    """Bring the schema of the store behind ``conn`` up to date; the names applied.

    Under one ``BEGIN IMMEDIATE``, so two processes opening a fresh store never race (the
    migrations become savepoints inside it), and all or nothing. A store that is up to date
    is only read: no write lock is taken, so opening it never waits on a writer.
    """
    if not migrations.pending(conn) and not connect.fts_needs_downgrade(conn):
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        # SQLite before 3.44 cannot read FTS5 indexes written with secure-delete.
        connect.downgrade_fts(conn)
        applied = migrations.apply(conn)  # pending again: another process may have migrated
        conn.execute("COMMIT")
    except BaseException:
        if getattr(conn, "in_transaction", False):  # a failed COMMIT may have ended it
            conn.execute("ROLLBACK")
        raise
    return applied


def _fts_secure_delete(db: Script, table: str) -> None:
    """FTS5 ``secure-delete`` on ``table`` where this SQLite has it (3.44+): a deleted row's
    tokens leave the index at once. Elsewhere forgetting merges the index instead."""
    (version,) = db.execute("SELECT sqlite_version()").fetchone()
    if tuple(int(p) for p in str(version).split(".")[:3]) >= (3, 44, 0):
        db.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('secure-delete', 1)")


@migrations(name="m001_initial")
def m001_initial(db: Script) -> None:
    db.executescript(
        """
        CREATE TABLE entities (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL
        );
        CREATE TABLE processes (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL
        );
        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            process_id TEXT REFERENCES processes(id),
            created_at TEXT NOT NULL,
            UNIQUE (entity_id, name)
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
            process_id TEXT REFERENCES processes(id),
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
            content TEXT NOT NULL,
            name TEXT,
            created_at TEXT NOT NULL,
            external_id TEXT,
            content_hash TEXT NOT NULL,
            trust REAL NOT NULL,
            source TEXT NOT NULL
        );
        CREATE UNIQUE INDEX messages_external_id
            ON messages (entity_id, external_id) WHERE external_id IS NOT NULL;
        CREATE UNIQUE INDEX messages_content_hash
            ON messages (session_id, content_hash) WHERE external_id IS NULL;
        CREATE INDEX messages_entity_created ON messages (entity_id, created_at);
        CREATE INDEX messages_session ON messages (session_id, id);

        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
            session_id INTEGER REFERENCES sessions(id) ON DELETE CASCADE,
            payload TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'done', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_expires REAL,
            run_after REAL NOT NULL DEFAULT 0,
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX jobs_status ON jobs (status, run_after);
        CREATE INDEX jobs_entity ON jobs (entity_id);

        -- External-content FTS5 index over messages, kept in sync by triggers.
        -- secure-delete removes a deleted row's tokens from the index at once. entity_id is
        -- indexed so a search can AND it in: FTS5 then intersects posting lists instead of
        -- scoring every entity's matches (1M rows, 100 entities: 17 ms -> 2 ms).
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, name, entity_id,
            content='messages', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, content, name, entity_id)
                VALUES (new.id, new.content, coalesce(new.name, ''), new.entity_id);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content, name, entity_id)
                VALUES ('delete', old.id, old.content, coalesce(old.name, ''), old.entity_id);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, name, entity_id ON messages
        BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content, name, entity_id)
                VALUES ('delete', old.id, old.content, coalesce(old.name, ''), old.entity_id);
            INSERT INTO messages_fts (rowid, content, name, entity_id)
                VALUES (new.id, new.content, coalesce(new.name, ''), new.entity_id);
        END;
        """
    )
    # secure-delete (SQLite 3.44+) was in the script above; older SQLite (the stdlib sqlite3 of
    # many Pythons) refuses the option, so it is set where the library has it. Same schema.
    _fts_secure_delete(db, "messages_fts")


@migrations(name="m002_vectors")
def m002_vectors(db: Script) -> None:
    # Which model made each message's vector. The vectors themselves live in a sqlite-vec
    # vec0 table (vec_messages) created for the model's dimension when the first one arrives.
    db.executescript(
        """
        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE message_embeddings (
            message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
            entity_id TEXT NOT NULL,
            model TEXT NOT NULL,
            dim INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX message_embeddings_entity ON message_embeddings (entity_id, message_id);
        -- How often a message was recalled and used; recall ranks used ones higher.
        ALTER TABLE messages ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
        -- Recall looks up an entity's speakers to tell who a question is about.
        CREATE INDEX messages_entity_name ON messages (entity_id, name);
        """
    )


@migrations(name="m003_memories")
def m003_memories(db: Script) -> None:
    # Typed memories, knowledge-graph triples and per-session summaries made by augmentation.
    # Nothing here is ever deleted by augmentation itself: a duplicate raises `count`, a
    # contradiction closes the old row (`valid_to`, `superseded_by`). Times are the source
    # messages' times, so imported history keeps its real dates.
    db.executescript(
        """
        CREATE TABLE memories (
            id INTEGER PRIMARY KEY,
            entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
            session_id INTEGER REFERENCES sessions(id) ON DELETE SET NULL,
            kind TEXT NOT NULL
                CHECK (kind IN ('fact', 'preference', 'skill', 'attribute', 'event')),
            content TEXT NOT NULL,
            norm TEXT NOT NULL,
            about TEXT NOT NULL,
            slot TEXT,
            confidence REAL NOT NULL,
            trust REAL NOT NULL,
            extractor TEXT NOT NULL,
            count INTEGER NOT NULL DEFAULT 1,
            uses INTEGER NOT NULL DEFAULT 0,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            valid_from TEXT NOT NULL,
            valid_to TEXT,
            superseded_by INTEGER REFERENCES memories(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX memories_entity ON memories (entity_id, valid_to);
        CREATE INDEX memories_slot ON memories (entity_id, about, slot) WHERE slot IS NOT NULL;
        CREATE INDEX memories_norm ON memories (entity_id, norm);
        CREATE TABLE memory_sources (
            memory_id INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            PRIMARY KEY (memory_id, message_id)
        ) WITHOUT ROWID;
        CREATE INDEX memory_sources_message ON memory_sources (message_id);
        CREATE TABLE memory_embeddings (
            memory_id INTEGER PRIMARY KEY REFERENCES memories(id) ON DELETE CASCADE,
            entity_id TEXT NOT NULL,
            model TEXT NOT NULL,
            dim INTEGER NOT NULL
        );
        CREATE INDEX memory_embeddings_entity ON memory_embeddings (entity_id);

        CREATE VIRTUAL TABLE memories_fts USING fts5(
            content, about, entity_id,
            content='memories', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
            INSERT INTO memories_fts (rowid, content, about, entity_id)
                VALUES (new.id, new.content, new.about, new.entity_id);
        END;
        CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, content, about, entity_id)
                VALUES ('delete', old.id, old.content, old.about, old.entity_id);
        END;

        CREATE TABLE triples (
            id INTEGER PRIMARY KEY,
            entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
            subject TEXT NOT NULL,
            subject_type TEXT NOT NULL,
            predicate TEXT NOT NULL,
            object TEXT NOT NULL,
            object_type TEXT NOT NULL,
            confidence REAL NOT NULL,
            extractor TEXT NOT NULL,
            memory_id INTEGER REFERENCES memories(id) ON DELETE SET NULL,
            count INTEGER NOT NULL DEFAULT 1,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            valid_from TEXT NOT NULL,
            valid_to TEXT,
            superseded_by INTEGER REFERENCES triples(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX triples_entity ON triples (entity_id, subject, predicate);
        CREATE TABLE triple_sources (
            triple_id INTEGER NOT NULL REFERENCES triples(id) ON DELETE CASCADE,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            PRIMARY KEY (triple_id, message_id)
        ) WITHOUT ROWID;
        CREATE INDEX triple_sources_message ON triple_sources (message_id);

        CREATE TABLE session_summaries (
            session_id INTEGER PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
            entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
            content TEXT NOT NULL,
            extractor TEXT NOT NULL,
            last_message_id INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        );

        -- A failed job keeps the model's raw output for inspection; done jobs are pruned.
        ALTER TABLE jobs ADD COLUMN output TEXT;
        ALTER TABLE jobs ADD COLUMN finished_at REAL;
        """
    )
    _fts_secure_delete(db, "memories_fts")


@migrations(name="m004_graph")
def m004_graph(db: Script) -> None:
    # Graph nodes: one per real thing per entity; every spelling that resolved to a node is an
    # alias keyed by its folded form (see store/graph.py). Edges stay the `triples` rows, now
    # pointing at their nodes. Existing triples get their nodes here.
    db.executescript(
        """
        CREATE TABLE graph_nodes (
            id INTEGER PRIMARY KEY,
            entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            type TEXT NOT NULL,
            vector BLOB,
            created_at TEXT NOT NULL
        );
        CREATE INDEX graph_nodes_entity ON graph_nodes (entity_id, type);
        CREATE TABLE graph_aliases (
            entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            node_id INTEGER NOT NULL REFERENCES graph_nodes(id) ON DELETE CASCADE,
            alias TEXT NOT NULL,
            PRIMARY KEY (entity_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX graph_aliases_node ON graph_aliases (node_id);
        ALTER TABLE triples ADD COLUMN subject_id INTEGER
            REFERENCES graph_nodes(id) ON DELETE CASCADE;
        ALTER TABLE triples ADD COLUMN object_id INTEGER
            REFERENCES graph_nodes(id) ON DELETE CASCADE;
        CREATE INDEX triples_subject_node ON triples (subject_id);
        CREATE INDEX triples_object_node ON triples (object_id);
        """
    )
    _m004_backfill(db.conn)


# m004's node resolution, frozen as it shipped: a migration must give the same result whatever
# later code does with node keys (store/graph.py holds the live version).
_M004_POSSESSIVE = re.compile(r"['\u2019]s?$")


def _m004_key(name: str) -> str:
    words = " ".join(name.casefold().split()).strip(' .,;:!?"()[]{}').split(" ")
    last = _M004_POSSESSIVE.sub("", words[-1])
    if len(last) > 3 and last.endswith("ies"):
        last = last[:-3] + "y"
    elif len(last) > 3 and last.endswith("s") and last[-2:] not in ("ss", "us", "is"):
        last = last[:-1]
    words[-1] = last
    return " ".join(words) or name.casefold()


def _m004_node(conn: Any, entity_id: str, name: str, node_type: str, when: str) -> int:
    key = _m004_key(name)
    row = conn.execute(
        "SELECT node_id FROM graph_aliases WHERE entity_id = ? AND key = ?", (entity_id, key)
    ).fetchone()
    if row is not None:
        return int(row[0])
    (node_id,) = conn.execute(
        """INSERT INTO graph_nodes (entity_id, name, type, vector, created_at)
           VALUES (?, ?, ?, NULL, ?) RETURNING id""",
        (entity_id, name.strip(), node_type, when),
    ).fetchone()
    conn.execute(
        "INSERT INTO graph_aliases (entity_id, key, node_id, alias) VALUES (?, ?, ?, ?)",
        (entity_id, key, node_id, name.strip()),
    )
    return int(node_id)


def _m004_backfill(conn: Any) -> None:
    """Give every triple its subject and object nodes (by key; no vectors then)."""
    when = datetime.datetime.now(datetime.timezone.utc).isoformat()
    for triple_id, entity_id, subject, s_type, obj, o_type in conn.execute(
        """SELECT id, entity_id, subject, subject_type, object, object_type FROM triples
           WHERE subject_id IS NULL OR object_id IS NULL ORDER BY id"""
    ).fetchall():
        conn.execute(
            "UPDATE triples SET subject_id = ?, object_id = ? WHERE id = ?",
            (_m004_node(conn, entity_id, subject, s_type, when),
             _m004_node(conn, entity_id, obj, o_type, when), triple_id),
        )  # fmt: skip


# "mmri": marks the file as a memori store in its header, so `--db` pointed at another
# application's database is recognised and refused before anything is written to it.
APPLICATION_ID = 0x6D6D7269


@migrations(name="m005_application_id")
def m005_application_id(db: Script) -> None:
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


@migrations(name="m006_rejections")
def m006_rejections(db: Script) -> None:
    # What grounding refused to store (augment/grounding.py), per job: kept apart from the
    # jobs table, whose done rows are pruned, and deleted with the entity.
    db.executescript(
        """
        CREATE TABLE rejections (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL,
            entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
            item TEXT NOT NULL,
            content TEXT NOT NULL,
            reason TEXT NOT NULL,
            extractor TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX rejections_job ON rejections (job_id);
        CREATE INDEX rejections_entity ON rejections (entity_id);
        """
    )


@migrations(name="m007_current_indexes")
def m007_current_indexes(db: Script) -> None:
    # Augmentation looks up the *current* row of a slot (supersede) and the current edges of a
    # subject and predicate (merge, close a functional edge) on every job. The older indexes
    # stop at (entity, about, slot) and at subject_id, so those lookups walked the whole
    # history of the slot or the subject: a job slowed as the entity's history grew (99 -> 13
    # jobs/s over 10,000 jobs). Partial indexes over current rows keep them one seek each.
    db.executescript(
        """
        CREATE INDEX memories_slot_current ON memories (entity_id, about, slot, valid_from)
            WHERE slot IS NOT NULL AND valid_to IS NULL;
        CREATE INDEX triples_current ON triples (entity_id, subject_id, predicate, object_id)
            WHERE valid_to IS NULL;
        """
    )


@migrations(name="m008_vector_blobs")
def m008_vector_blobs(db: Script) -> None:
    # Vectors as BLOBs in ordinary tables: the store's own copy, readable and writable by any
    # SQLite connection (the stdlib sqlite3 of most Pythons cannot load sqlite-vec). Where
    # sqlite-vec loads, its vec0 tables are an index over these rows, kept in step through
    # vector_changes (rows written or deleted where vec0 could not be touched). The vec0
    # delete triggers go: a connection without sqlite-vec cannot run them.
    db.executescript(
        """
        ALTER TABLE message_embeddings ADD COLUMN embedding BLOB;
        ALTER TABLE memory_embeddings ADD COLUMN embedding BLOB;
        CREATE TABLE vector_changes (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('message', 'memory', 'all')),
            item_id INTEGER NOT NULL
        );
        DROP TRIGGER IF EXISTS message_embeddings_delete;
        DROP TRIGGER IF EXISTS memory_embeddings_delete;
        CREATE TRIGGER message_embeddings_changed AFTER DELETE ON message_embeddings
        WHEN EXISTS (SELECT 1 FROM settings WHERE key = 'vec0_dim') BEGIN
            INSERT INTO vector_changes (kind, item_id) VALUES ('message', old.message_id);
        END;
        CREATE TRIGGER memory_embeddings_changed AFTER DELETE ON memory_embeddings
        WHEN EXISTS (SELECT 1 FROM settings WHERE key = 'vec0_dim') BEGIN
            INSERT INTO vector_changes (kind, item_id) VALUES ('memory', old.memory_id);
        END;
        """
    )
    from .vec0 import backfill_blobs

    backfill_blobs(db.conn)


_MESSAGES_FTS_COLUMNS = "rowid, content, name, entity_id, context"
_NEW_MESSAGE = (
    "new.id, new.content, coalesce(new.name, ''), new.entity_id, coalesce(new.context, '')"
)
_OLD_MESSAGE = (
    "old.id, old.content, coalesce(old.name, ''), old.entity_id, coalesce(old.context, '')"
)


@migrations(name="m009_reply_context")
def m009_reply_context(db: Script) -> None:
    # Each message is also indexed with the end of the turn before it (messages.context, see
    # store.reply), so a reply is found by the words of what it answers.
    # Kept in the row, not computed by the triggers: an external-content index must be given
    # the very values it indexed to delete a row, and a row's predecessor may be gone by then.
    db.execute("ALTER TABLE messages ADD COLUMN context TEXT")
    _m009_backfill(db.conn)
    db.executescript(
        f"""
        DROP TRIGGER messages_fts_insert;
        DROP TRIGGER messages_fts_delete;
        DROP TRIGGER messages_fts_update;
        DROP TABLE messages_fts;
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, name, entity_id, context,
            content='messages', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts ({_MESSAGES_FTS_COLUMNS}) VALUES ({_NEW_MESSAGE});
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, {_MESSAGES_FTS_COLUMNS})
                VALUES ('delete', {_OLD_MESSAGE});
        END;
        CREATE TRIGGER messages_fts_update
        AFTER UPDATE OF content, name, entity_id, context ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, {_MESSAGES_FTS_COLUMNS})
                VALUES ('delete', {_OLD_MESSAGE});
            INSERT INTO messages_fts ({_MESSAGES_FTS_COLUMNS}) VALUES ({_NEW_MESSAGE});
        END;
        INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
        """
    )
    _fts_secure_delete(db, "messages_fts")


def _m009_backfill(conn: Any) -> None:
    """Give every stored message its context, session by session in id order."""
    previous: tuple[int, str] | None = None
    updates = []
    for message_id, session_id, content in conn.execute(
        "SELECT id, session_id, content FROM messages ORDER BY session_id, id"
    ):
        if previous is not None and previous[0] == session_id:
            updates.append((reply_context(previous[1]), message_id))
        previous = (session_id, content)
    conn.executemany("UPDATE messages SET context = ? WHERE id = ?", updates)


@migrations(name="m010_vector_counts")
def m010_vector_counts(db: Script) -> None:
    # PostgreSQL only: per-entity counts of message vectors, kept by triggers, tell a process
    # when its copy of an entity's vectors is current (postgres/vectors.py). A SQLite store's
    # copies check the file's own change counter instead; nothing changes here.
    del db
