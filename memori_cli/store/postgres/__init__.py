"""PostgreSQL with pgvector, a second :class:`~memori_cli.store.backend.Backend`.

``Memori(conn="postgresql://user@host/dbname")`` (also ``postgres://``, ``--db`` and
``MEMORI_DB``, a psycopg connection or a factory returning one) runs the whole library here:
capture, import, augmentation, recall, the graph, forget, the CLI and the daemon. Every
``Backend`` method is held to the same contract suite as SQLite
(``tests/test_backend_contract.py``) plus ``tests/test_postgres.py``; the library end to end
by ``tests/test_postgres_library.py`` and the library's own tests run again on it
(``tests/test_postgres_shared.py``, ``tests/test_postgres_graph.py``).

The shared store modules write their SQL once, with ``?`` placeholders: the store wraps each
psycopg connection in a :class:`~.qmark.QmarkConnection` that translates it (this module's
own SQL is psycopg's and runs on the connection underneath: :func:`.qmark.unwrap`). What the two
engines spell differently goes through the backend (``least``/``greatest``,
:meth:`PostgresBackend.json_array`, :meth:`PostgresBackend.after_delete`,
:meth:`PostgresBackend.now`); vectors through :mod:`.vectors` (pgvector).

Connections
    ``connect(target)`` takes a URL (``postgresql://user@host/db``) or a libpq conninfo
    string, or ``""`` for libpq's own variables (``PGHOST``, ``PGDATABASE``, ...); passwords
    come from the URL, ``PGPASSWORD`` or ``~/.pgpass`` and are never printed: ``checks``
    and ``versions`` show the URL with the password masked (they never read it). Autocommit
    (memori begins its own transactions); each connection sets ``statement_timeout``,
    ``lock_timeout``, ``plan_cache_mode = force_custom_plan`` (psycopg prepares a statement
    after 5 runs and a generic plan then ignores per-entity selectivity) and
    ``application_name``.
Schema
    The same migration names as SQLite, recorded in a ``_sqlite_migrations`` table of the same
    columns, in PostgreSQL DDL (:mod:`.schema`), all pending ones in one transaction under an
    advisory lock: two processes opening a new database at once migrate it once.
    Needs PostgreSQL 14+ and the ``vector`` extension (pgvector) on the server.
Writes
    ``begin(entity=e)`` takes a shared store-wide advisory lock and an exclusive one on a
    hash of ``e``: writers of different entities proceed in parallel, two of one entity take
    turns. ``begin()`` without an entity takes the store-wide lock exclusively (as SQLite's
    ``BEGIN IMMEDIATE``). :meth:`PostgresBackend.begin_queue` takes only the shared lock:
    for claims and lease checks, where the row locks (``FOR UPDATE SKIP LOCKED``) decide.
Search
    bm25 as FTS5 computes it (k1 1.2, b 0.75, FTS5's idf floor, the same column weights),
    over postings the write path keeps per entity in triggers (see :mod:`.schema`); a search
    reads the postings of its terms only. Statistics are per entity (FTS5's are per file):
    a store of one entity ranks as SQLite does; with several, an entity's ranking does not
    depend on the others' text. Tokens: PostgreSQL's parser after FTS5's separators, english
    Snowball stemming (FTS5: porter), no diacritics folding (FTS5: ``remove_diacritics 2``).
Changes
    ``change_token`` is a hash of the server's current snapshot: it moves when any write
    transaction on the server starts or ends (never misses a commit; a busy server moves it
    for others' work too). Commits send ``NOTIFY memori_changes``; ``watch`` listens,
    reconnecting after a dropped connection (notifications sent meanwhile are lost: the
    timer sweep stays the truth).
Forget
    Deleted rows leave the tables and indexes at commit for every new transaction; their
    bytes stay in the table files until VACUUM reuses the space and in the WAL until it is
    recycled (and in base backups and replicas' WAL). ``after_forget`` VACUUMs memori's
    tables. The SQLite "byte-search of the files" guarantee is not claimed here.

What the shared SQL needed for phase 2 (done: kept as the map of what differs). Every
statement the library runs is under
``memori_cli/store/`` (and nothing in ``daemon/``); counted over those modules except the
engines' own (``sqlite/``, ``postgres/``, ``migrations.py``, ``migrator.py``), lines as of
this phase (comments and docstrings included; the script and its file:line listing are in
the pg notes):

- ``?`` placeholders (paramstyle qmark): 148 lines in 8 files (graph 44, memories 48, jobs
  15, messages 13, vec0 11, matrix 8, vectors 8, core 1). psycopg takes ``%s``: a cursor
  that translates, or ``backend.paramstyle`` honoured where SQL is built; a literal ``%``
  must double. ``where`` clauses handed to the lexical methods are translated here already.
- ``INSERT OR IGNORE`` / ``INSERT OR REPLACE``: 2 (graph.py:307, vectors.py:185):
  ``ON CONFLICT DO NOTHING`` / ``ON CONFLICT (key) DO UPDATE``, which SQLite 3.24+ takes
  too (one spelling for both).
- ``json_extract`` / ``json_each``: 3 (graph.py:165,196, jobs.py:275): ``->>``,
  ``jsonb_array_elements``; payloads are ``text`` here, so ``payload::jsonb``.
- FTS5 (``MATCH``, ``bm25()``, ``*_fts``, the ``'delete'`` / ``'merge'`` commands):
  11 lines in 4 files (connect.py 8, memories.py:401, messages.py:194, vectors.py:247):
  the backend's lexical methods (done) and forget's index upkeep (nothing to do here: the
  triggers keep the postings).
- ``PRAGMA``: 13 lines in 4 files (connect.py 8, core.py:106,361,397, matrix.py:202) and
  ``sqlite_master`` / ``sqlite_version()``: 10 in 3 files (connect.py 7, core.py:293,364,
  vec0.py:175): backend methods, ``information_schema`` / ``to_regclass``.
- ``BEGIN IMMEDIATE`` / ``SAVEPOINT`` / ``RELEASE`` issued directly: 10 lines in 3 files
  (core.py 7, connect.py:129,139, jobs.py:3): ``backend.begin`` (``SAVEPOINT`` itself is
  the same on PostgreSQL).
- sqlite-vec (``vec0``, ``vec_messages``, ``vec_memories``, ``vector_changes``): 50 lines in
  4 files (vec0.py 27, vectors.py 16, matrix.py 4, connect.py 3): pgvector ``<=>`` over
  ``*_embeddings.embedding``: exact search under a size, a partial HNSW index per large
  entity above it (the issue's measurements).
- The sqlite3 connection API: ``conn.executemany`` / ``executescript``: 10 lines in 6 files
  (messages.py 3, memories.py 3, core.py:166, jobs.py:192, vec0.py:188, vectors.py:71):
  psycopg has ``cursor.executemany`` only.
- ``GROUP_CONCAT`` / ``IFNULL`` / ``typeof``: 3 (jobs.py:178, memories.py:343,386):
  ``string_agg``, ``coalesce``; scalar ``min(a, b)`` / ``max(a, b)``: 3 (graph.py:112,
  memories.py:129,130): ``least`` / ``greatest``; ``LIKE``: 2 (graph.py:243, jobs.py:163),
  case-sensitive on PostgreSQL (``ILIKE`` where SQLite's ASCII folding is meant);
  ``rowid``: 1 (vec0.py:159). None of ``strftime`` / ``julianday`` / ``datetime('now')`` /
  ``COLLATE NOCASE`` / ``GLOB``.
- Typing: SQLite returns what was stored; PostgreSQL's ``bigint`` / ``double precision``
  come back as ``int`` / ``float`` as well, but comparing a ``text`` time with a number (or
  the reverse) is an error, not a silent false.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from ...errors import ExtensionError, StoreError, StoreUnavailable
from . import schema
from .qmark import QmarkConnection
from .qmark import unwrap as _raw

#: Milliseconds one statement may run before the server cancels it (nothing hangs forever).
STATEMENT_TIMEOUT_MS = 300_000
#: Milliseconds a statement waits for a lock before failing with 55P03 (as SQLite's busy timeout).
LOCK_TIMEOUT_MS = 30_000
#: libpq settings of memori's connections unless the URL (or PGCONNECT_TIMEOUT) sets them: a
#: server that does not answer fails a connect in 10 s, and a connection whose peer vanished
#: without a word (a host lost, a network cut) is found dead in about a minute, not hours.
CONNECT_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
#: ``application_name`` of memori's connections (``pg_stat_activity`` shows it).
APPLICATION_NAME = "memori"
#: The NOTIFY channel commits send on; ``watch`` listens to it.
CHANNEL = "memori_changes"
#: Advisory lock keys (two-int form: never collides with the bigint form per entity).
_LOCK_SPACE = 0x6D6D7269  # "mmri", as SQLite's application id
_STORE_LOCK, _MIGRATE_LOCK = 1, 2
#: bm25's parameters, FTS5's.
BM25_K1, BM25_B = 1.2, 0.75
#: SQLSTATEs of a full disk or quota: disk_full, configuration_limit_exceeded (a hosted
#: service's size limit, such as Neon's), program_limit_exceeded is not one.
_FULL = frozenset({"53100", "53400"})
#: Distinct word lists whose tokens are remembered (a search's words: dropped when full).
TOKEN_CACHE_SIZE = 4096
#: SQLSTATEs of a server that ended the session: shut down (fast or immediate), restarting.
_SHUTDOWN = frozenset({"57P01", "57P02", "57P03"})
#: SQLSTATEs of a lock or a conflict that goes away when the transaction is retried.
_TRANSIENT = frozenset({"40001", "40P01", "55P03"})


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise StoreError(
            "the PostgreSQL backend needs psycopg: pip install 'memori-cli[postgres]'"
        ) from exc
    return psycopg


def masked_url(conn: Any) -> str:
    """``postgresql://user:***@host:port/dbname`` for ``conn`` (``***`` only where a password
    was used); the password is never read."""
    info = conn.info
    user = urllib.parse.quote(info.user or "", safe="")
    secret = ":***" if getattr(conn.pgconn, "used_password", False) else ""
    host = info.host or ""
    query = ""
    if host.startswith("/"):  # a socket folder goes in the query, as libpq's URLs write it
        query = "?host=" + urllib.parse.quote(host, safe="/")
        host = ""
    port = f":{info.port}" if info.port and not query else ""
    at = "@" if user or secret else ""
    dbname = urllib.parse.quote(info.dbname or "", safe="")
    return f"postgresql://{user}{secret}{at}{host}{port}/{dbname}{query}"


def _sqlstate(exc: BaseException) -> str:
    return str(getattr(exc, "sqlstate", None) or "")


def _params(sql: str) -> str:
    """A condition written with ``?`` placeholders (the shared modules' SQL) in psycopg's
    ``%s`` style (a literal ``%`` doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _entity_key(entity: str) -> int:
    """A signed 64-bit advisory lock key for ``entity`` (the same in every process)."""
    digest = hashlib.blake2b(entity.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresBackend:
    """The PostgreSQL engine (see the module docstring). One instance serves all stores: it
    holds no state but a cache of words' tokens (the tokenizer is the same in every store)."""

    name = "postgres"
    #: The shared modules' SQL is qmark: :meth:`adapt` translates it for psycopg.
    paramstyle = "qmark"
    #: Scalar smallest / largest of two values (SQLite's two-argument min / max).
    least, greatest = "least", "greatest"
    #: psycopg's base error (empty without the driver: nothing can be raised by it then).
    errors: tuple[type[Exception], ...]

    def __init__(self) -> None:
        self._token_cache: dict[tuple[str, ...], list[list[str]]] = {}
        try:
            import psycopg
        except ImportError:
            self.errors = ()
        else:
            self.errors = (psycopg.Error,)

    # -- connections -----------------------------------------------------------------------
    def connect(self, target: str, *, read_only: bool = False) -> Any:
        psycopg = _psycopg()
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(str(target))
        extra = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
        if os.environ.get("PGCONNECT_TIMEOUT"):
            extra.pop("connect_timeout", None)
        conn = psycopg.connect(
            str(target),
            autocommit=True,
            application_name=APPLICATION_NAME,
            cursor_factory=_cursor_class(),
            **extra,
        )
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def connect_like(self, conn: Any, target: str) -> Any:
        # A sibling from the same driver: psycopg is the only one this backend speaks.
        return self.connect(target)

    def adapt(self, conn: Any) -> Any:
        """``conn`` able to run the shared modules' ``?`` SQL (see :mod:`.qmark`)."""
        return conn if isinstance(conn, QmarkConnection) else QmarkConnection(conn)

    # -- what the shared SQL spells differently --------------------------------------------
    def json_array(self, expr: str) -> str:
        """An aggregate: the JSON text of an array of ``expr`` over the group (``[]`` for
        none), as SQLite's ``json_group_array``."""
        return f"coalesce(json_agg({expr}), '[]'::json)::text"

    def after_delete(self, tx: Any) -> None:
        """Nothing: the triggers remove deleted rows' postings in the same statement."""

    def configure(self, conn: Any, *, read_only: bool = False) -> None:
        from .vectors import EF_SEARCH

        conn = _raw(conn)
        conn.execute(
            f"SET statement_timeout = {int(STATEMENT_TIMEOUT_MS)};"
            f" SET lock_timeout = {int(LOCK_TIMEOUT_MS)};"
            " SET plan_cache_mode = force_custom_plan;"
            f" SET hnsw.ef_search = {int(EF_SEARCH)};"
            f" SET application_name = '{APPLICATION_NAME}'"
        )
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        (installed, available) = conn.execute(
            """SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'),
                      (SELECT default_version FROM pg_available_extensions
                       WHERE name = 'vector')"""
        ).fetchone()
        if installed is None and available is None:
            raise ExtensionError(
                "the PostgreSQL server has no pgvector (the 'vector' extension): install it on "
                "the server (Debian/Ubuntu: postgresql-NN-pgvector; hosted services: enable "
                "pgvector) and open the store again"
            )

    def migrate(self, conn: Any) -> None:
        """Apply the pending migrations of :data:`schema.MIGRATIONS`, all in one transaction
        under an advisory lock (a second process waits, then finds nothing pending)."""
        conn = _raw(conn)
        if not self._pending(conn):
            return
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_SPACE, _MIGRATE_LOCK))
            self._check_ours(conn)
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(schema.MIGRATIONS_TABLE)
            for name in self._pending(conn):
                schema.MIGRATIONS[name](conn)
                conn.execute(
                    'INSERT INTO "_sqlite_migrations" (migration_set, name, applied_at) '
                    "VALUES ('memori', %s, %s)",
                    (name, str(_utc_now())),
                )
            conn.execute("COMMIT")
        except BaseException:
            if self.in_transaction(conn):
                conn.execute("ROLLBACK")
            raise

    #: Whether memori's migration record is in the schema its tables are created in (the
    #: first of the search path that exists). Not the path's first match: a schema of its
    #: own, first on a path that goes on to a public holding another memori store, would
    #: have been taken for that store and left empty.
    _HAS_MIGRATIONS = (
        "SELECT to_regclass(quote_ident(current_schema()) || '._sqlite_migrations') IS NOT NULL"
    )

    def _check_ours(self, conn: Any) -> None:
        """Raise :class:`StoreError` if the schema memori would create its tables in holds
        another application's tables (no memori migrations recorded): memori opens only its
        own stores or an empty schema, and leaves anything else as it was."""
        (ours,) = conn.execute(self._HAS_MIGRATIONS).fetchone()
        if ours:
            return
        tables = [
            str(name)
            for (name,) in conn.execute(
                """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm')
                   ORDER BY 1 LIMIT 6"""
            )
        ]
        if tables:
            shown = ", ".join(tables[:5]) + (", …" if len(tables) > 5 else "")
            (schema_name,) = conn.execute("SELECT current_schema()").fetchone()
            raise StoreError(
                f"schema {schema_name!r} of this database holds another application's tables "
                f"({shown}); memori opens only its own stores or an empty schema, and left it "
                "unchanged. Use a database of its own (CREATE DATABASE memori), or a schema of "
                "its own (?options=-csearch_path%3Dmemori%2Cpublic in the URL, after CREATE "
                "SCHEMA memori; public stays on the path for pgvector's type)"
            )

    def _pending(self, conn: Any) -> list[str]:
        conn = _raw(conn)
        (exists,) = conn.execute(self._HAS_MIGRATIONS).fetchone()
        done: set[str] = set()
        if exists:
            done = {
                str(name)
                for (name,) in conn.execute(
                    "SELECT name FROM \"_sqlite_migrations\" WHERE migration_set = 'memori'"
                )
            }
        return [name for name in schema.MIGRATIONS if name not in done]

    # -- transactions ----------------------------------------------------------------------
    def begin(self, conn: Any, *, entity: str | None = None) -> None:
        conn = _raw(conn)
        conn.execute("BEGIN")
        try:
            if entity is None:
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_SPACE, _STORE_LOCK))
            else:
                conn.execute(
                    "SELECT pg_advisory_xact_lock_shared(%s, %s), pg_advisory_xact_lock(%s)",
                    (_LOCK_SPACE, _STORE_LOCK, _entity_key(entity)),
                )
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def begin_queue(self, conn: Any) -> None:
        """Begin a write that takes no entity's lock (claims, lease checks): the store-wide
        lock shared, so it runs beside other entities' writes and other claims."""
        conn = _raw(conn)
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", (_LOCK_SPACE, _STORE_LOCK))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def commit(self, conn: Any) -> None:
        conn = _raw(conn)
        # Delivered to listeners only if the transaction commits.
        conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        conn.execute("COMMIT")

    def rollback(self, conn: Any) -> None:
        conn = _raw(conn)
        conn.execute("ROLLBACK")

    def in_transaction(self, conn: Any) -> bool:
        conn = _raw(conn)
        from psycopg.pq import TransactionStatus

        return bool(conn.info.transaction_status != TransactionStatus.IDLE)

    def is_full(self, exc: BaseException, target: Path | None) -> bool:
        return _sqlstate(exc) in _FULL or "No space left on device" in str(exc)

    def is_transient(self, exc: BaseException) -> bool:
        state = _sqlstate(exc)
        if state in _TRANSIENT:
            return True
        # query_canceled is transient only when a lock timeout raised it (a statement
        # timeout or a cancel is not a lock that goes away).
        return state == "57014" and "lock timeout" in str(exc)

    def is_lost(self, exc: BaseException) -> bool:
        psycopg = _psycopg()
        state = _sqlstate(exc)
        if state in _SHUTDOWN or state.startswith("08"):  # 08: connection exceptions
            return True
        # libpq's own errors (a closed socket, a refused connect) carry no SQLSTATE; a
        # statement timeout or a cancel is an OperationalError with one (57014)
        return isinstance(exc, psycopg.OperationalError) and not state

    def is_broken(self, conn: Any) -> bool:
        conn = _raw(conn)
        return bool(conn.closed or conn.broken)

    # -- search ----------------------------------------------------------------------------
    def _bm25(
        self,
        conn: Any,
        table: str,
        doc: str,
        terms: list[str],
        entity_id: str,
        select: str,
        joins: str,
        where: list[str],
        params: list[Any],
        limit: int,
    ) -> Any:
        """bm25 over ``table``'s postings for ``terms``: FTS5's formula, this entity's
        statistics; ``select``/``joins``/``where`` over the row ``m``, best first.

        Each word is one of FTS5's quoted phrases: a word given twice, or two words of one
        stem, count twice, as FTS5's phrases do; a word the tokenizer splits in several
        tokens (``content:x``, ``foo_bar``) matches only documents holding all of them
        (FTS5 also wants them adjacent: the postings keep no positions), scored as the sum
        of its tokens.
        """
        weights: dict[str, int] = {}
        phrases: list[list[str]] = []
        for tokens in self._tokens(conn, terms):
            for token in tokens:
                weights[token] = weights.get(token, 0) + 1
            if len(tokens) > 1:
                phrases.append(sorted(tokens))
        if not weights:
            return conn.execute("SELECT 1 WHERE false")
        # float8 throughout (a bare constant is numeric, several times as slow to sum).
        score = (
            f"p.tf * {BM25_K1 + 1}::float8 / (p.tf + {BM25_K1}::float8 * ({1 - BM25_B}::float8"
            f" + {BM25_B}::float8 * p.len::float8 / st.avgdl))"
        )
        # Every phrase of several tokens must be whole in a document that it scores in.
        having = "".join(
            f" AND count(*) FILTER (WHERE p.term = ANY(%s::text[])) = {len(tokens)}"
            for tokens in phrases
        )
        conditions = " AND ".join(["m.entity_id = %s", *(_params(c) for c in where)])
        # Without conditions on the row, only the best `limit` documents are joined.
        top = "" if where else "ORDER BY score DESC, id LIMIT %s"
        return conn.execute(
            f"""
            WITH st AS (
                SELECT docs::float8 AS n, tokens::float8 / greatest(docs, 1) AS avgdl
                FROM {table}_lex_docs WHERE entity_id = %s
            ),
            idf AS (
                SELECT t.term,
                       k.n * greatest(ln((st.n - t.docs + 0.5::float8) / (t.docs + 0.5::float8)),
                                      1e-6::float8) AS idf
                FROM unnest(%s::text[], %s::int[]) AS k(term, n)
                JOIN {table}_lex_terms t ON t.entity_id = %s AND t.term = k.term, st
            ),
            s AS (
                SELECT p.{doc} AS id, sum(idf.idf * {score}) AS score
                FROM idf
                JOIN {table}_postings p ON p.entity_id = %s AND p.term = idf.term, st
                GROUP BY p.{doc}
                HAVING true{having}
                {top}
            )
            SELECT {select}, s.score
            FROM s JOIN {table} m ON m.id = s.id {joins}
            WHERE {conditions}
            ORDER BY s.score DESC, m.id
            LIMIT %s""",
            [
                entity_id, list(weights), list(weights.values()), entity_id, entity_id,
                *phrases, *([limit] if top else []), entity_id, *params, limit,
            ],
        )  # fmt: skip

    def _tokens(self, conn: Any, terms: list[str]) -> list[list[str]]:
        """Each word's distinct tokens by the store's own tokenizer (``memori_words``: the
        same function in every memori schema of this version), remembered for the next
        search of the same words (a recall searches messages, then memories)."""
        key = tuple(terms)
        found = self._token_cache.get(key)
        if found is None:
            found = [
                list(tokens)
                for (tokens,) in conn.execute(
                    "SELECT ARRAY(SELECT DISTINCT lexeme FROM unnest(memori_words(w)))"
                    " FROM unnest(%s::text[]) AS w",
                    [terms],
                ).fetchall()
            ]
            if len(self._token_cache) >= TOKEN_CACHE_SIZE:
                self._token_cache.clear()
            self._token_cache[key] = found
        return found

    def lexical_messages(
        self,
        conn: Any,
        terms: list[str],
        *,
        entity_id: str,
        where: list[str],
        params: list[Any],
        limit: int,
    ) -> list[dict[str, Any]]:
        conn = _raw(conn)
        if not terms or limit <= 0:
            return []
        cursor = self._bm25(
            conn, "messages", "message_id", terms, entity_id,
            """m.id, m.role, m.content, m.name, m.created_at, m.external_id, m.entity_id,
               m.process_id, ss.name AS session, m.trust, m.uses""",
            "JOIN sessions ss ON ss.id = m.session_id", where, params, limit,
        )  # fmt: skip
        columns = [c.name for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def lexical_memories(
        self,
        conn: Any,
        terms: list[str],
        *,
        entity_id: str,
        where: list[str],
        params: list[Any],
        limit: int,
    ) -> list[tuple[int, float]]:
        conn = _raw(conn)
        if not terms or limit <= 0:
            return []
        rows = self._bm25(
            conn, "memories", "memory_id", terms, entity_id, "m.id", "", where, params, limit
        ).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    # -- bulk writes -----------------------------------------------------------------------
    def insert_messages(self, tx: Any, rows: list[tuple[Any, ...]]) -> list[tuple[int, str, int]]:
        tx = _raw(tx)
        if not rows:
            return []
        # Rows of 12 (the last: the context the message is indexed with), or 11 without it.
        columns = list(zip(*(tuple(row) + (None,) * (12 - len(row)) for row in rows), strict=True))
        inserted = tx.execute(
            """INSERT INTO messages (entity_id, process_id, session_id, role, content, name,
                   created_at, external_id, content_hash, trust, source, context)
               SELECT e, p, s, r, c, n, t, x, h, u, o, ctx
               FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],
                           %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[],
                           %s::text[], %s::text[])
                    WITH ORDINALITY AS v(e, p, s, r, c, n, t, x, h, u, o, ctx, i)
               ORDER BY i
               ON CONFLICT DO NOTHING
               RETURNING id, entity_id, session_id""",
            [list(column) for column in columns],
        ).fetchall()
        return sorted((int(i), str(e), int(s)) for i, e, s in inserted)

    def insert_jobs(self, tx: Any, rows: list[tuple[Any, ...]]) -> list[int]:
        tx = _raw(tx)
        if not rows:
            return []
        columns = list(zip(*rows, strict=True))
        inserted = tx.execute(
            """INSERT INTO jobs (kind, entity_id, session_id, payload, created_at, updated_at)
               SELECT k, e, s, p, c, u
               FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],
                           %s::text[]) WITH ORDINALITY AS v(k, e, s, p, c, u, i)
               ORDER BY i
               ON CONFLICT DO NOTHING
               RETURNING id""",
            [list(column) for column in columns],
        ).fetchall()
        return sorted(int(i) for (i,) in inserted)

    # -- the queue -------------------------------------------------------------------------
    def now(self, conn: Any) -> float:
        """The server's clock in epoch seconds: the one clock every host's daemons share
        (phase 2 passes it as ``claim_jobs``' ``now``; hosts' own clocks differ)."""
        conn = _raw(conn)
        (value,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        return float(value)

    def claim_jobs(
        self,
        tx: Any,
        owner: str,
        *,
        now: float,
        lease: float,
        limit: int,
        ids: list[int] | None,
        max_attempts: int,
        stamp: str,
    ) -> list[tuple[Any, ...]]:
        tx = _raw(tx)
        # Rows another claim holds are skipped, never waited on: two workers never get the
        # same job, and neither waits for the other.
        tx.execute(
            """UPDATE jobs SET status = 'failed', lease_owner = NULL, lease_expires = NULL,
                   error = 'its worker stopped before finishing it ' || attempts || ' times',
                   updated_at = %s
               WHERE id IN (SELECT id FROM jobs
                            WHERE status = 'running' AND lease_expires < %s AND attempts >= %s
                            FOR UPDATE SKIP LOCKED)""",
            (stamp, now, max_attempts),
        )
        among = "" if ids is None else "AND id = ANY(%s::bigint[])"
        picked_params: list[Any] = [now, now]
        if ids is not None:
            picked_params.append([int(i) for i in ids])
        rows = tx.execute(
            f"""WITH picked AS (
                   SELECT id FROM jobs
                   WHERE ((status = 'pending' AND run_after <= %s)
                      OR (status = 'running' AND lease_expires < %s)) {among}
                   ORDER BY id LIMIT %s
                   FOR UPDATE SKIP LOCKED)
               UPDATE jobs j SET status = 'running', lease_owner = %s, lease_expires = %s,
                   attempts = j.attempts + 1, updated_at = %s
               FROM picked WHERE j.id = picked.id
               RETURNING j.id, j.kind, j.entity_id, j.session_id, j.payload, j.attempts""",
            [*picked_params, limit, owner, now + lease, stamp],
        ).fetchall()
        return sorted((tuple(row) for row in rows), key=lambda row: int(row[0]))

    def lease_held(self, tx: Any, job_id: int, owner: str) -> bool:
        tx = _raw(tx)
        row = tx.execute(
            """SELECT 1 FROM jobs WHERE id = %s AND status = 'running' AND lease_owner = %s
               FOR UPDATE""",
            (job_id, owner),
        ).fetchone()
        return row is not None

    # -- changes and housekeeping ----------------------------------------------------------
    def change_token(self, conn: Any) -> int:
        conn = _raw(conn)
        # The snapshot's xmax moves when a write transaction starts after the last reading,
        # its list of running ones when one that was running ends: a commit always moves it.
        (snapshot,) = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        digest = hashlib.blake2b(str(snapshot).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def watch(self, target: Path | str, stop: threading.Event, wake: threading.Event) -> None:
        """LISTEN for commits on the store at ``target`` (its URL or conninfo: a ``Path``
        would fold a URL's ``//``), setting ``wake``; reconnects after a dropped connection
        (and wakes then: what was sent meanwhile is lost)."""
        psycopg = _psycopg()
        delay = 0.1
        while not stop.is_set():
            try:
                with psycopg.connect(
                    str(target), autocommit=True, application_name=APPLICATION_NAME
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.1
                    wake.set()  # anything may have happened before the LISTEN
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=0.25, stop_after=1):
                            wake.set()
            except psycopg.Error:
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def after_forget(self, conn: Any, *, attempts: int = 5, wait_ms: int = 200) -> bool:
        conn = _raw(conn)
        from .vectors import drop_indexes

        # The HNSW indexes of entities with no vectors left go (they index nothing now).
        drop_indexes(conn, unused_only=True)
        # VACUUM marks the deleted rows' space free for reuse (it cannot run inside a
        # transaction: autocommit). Rows an older snapshot still sees stay until it ends.
        tables = [
            name
            for (name,) in conn.execute(
                """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind = 'r' AND n.nspname = current_schema()
                     AND c.relname = ANY(%s)""",
                (list(_FORGET_TABLES),),
            )
        ]
        if tables:
            conn.execute("VACUUM " + ", ".join(f'"{name}"' for name in tables))
        return True

    def size_bytes(self, conn: Any) -> int | None:
        """memori's tables with their indexes and TOAST in the current schema (the database
        may hold other things)."""
        conn = _raw(conn)
        (size,) = conn.execute(
            """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname = current_schema()
                 AND c.relname = ANY(%s)""",
            (list(_MEMORI_TABLES),),
        ).fetchone()
        return int(size)

    def versions(self, conn: Any) -> dict[str, str]:
        conn = _raw(conn)
        import importlib.metadata

        psycopg = _psycopg()
        server, vector = conn.execute(
            """SELECT current_setting('server_version'),
                      (SELECT extversion FROM pg_extension WHERE extname = 'vector')"""
        ).fetchone()
        try:
            adapters = importlib.metadata.version("pgvector")
        except importlib.metadata.PackageNotFoundError:
            adapters = "not installed"
        libpq = psycopg.pq.version()
        return {
            "driver": f"psycopg {psycopg.__version__}",
            "libpq": f"{libpq // 10000}.{libpq % 10000}",
            "postgresql": str(server),
            "pgvector": str(vector or "not created in this database"),
            "pgvector_python": adapters,
        }

    def checks(self, conn: Any | None) -> list[dict[str, str]]:
        """``memori doctor``'s lines: the server and pgvector versions and the URL with the
        password masked (``conn`` None: only the driver, no server to ask)."""
        psycopg = _psycopg()
        if conn is not None:
            conn = _raw(conn)
        if conn is None:
            return [
                {
                    "check": "postgres",
                    "status": "warn",
                    "detail": f"psycopg {psycopg.__version__}; no PostgreSQL store opened",
                }
            ]
        versions = self.versions(conn)
        checks = [
            {
                "check": "postgres",
                "status": "ok",
                "detail": f"PostgreSQL {versions['postgresql']} at {masked_url(conn)}, "
                f"{versions['driver']} (libpq {versions['libpq']})",
            }
        ]
        vector_ok = not versions["pgvector"].startswith("not ")
        checks.append(
            {
                "check": "pgvector",
                "status": "ok" if vector_ok else "fail",
                "detail": f"pgvector {versions['pgvector']}"
                if vector_ok
                else "the vector extension is not created in this database",
            }
        )
        checks.append(self._memory_check(conn))
        from . import rls

        security = rls.status(conn)
        grants = len(security["grants"])
        if security["enabled"]:
            detail = f"on: {grants} grant(s) (memori rls status)"
        elif security["tables"]:
            detail = "partly on: not filtered: " + ", ".join(security["unfiltered"])
        else:
            detail = "off (optional: memori rls enable)"
        checks.append(
            {
                "check": "row-level security",
                "status": "warn" if security["tables"] and not security["enabled"] else "ok",
                "detail": detail,
            }
        )
        return checks

    def _memory_check(self, conn: Any) -> dict[str, str]:
        """The server's ``shared_buffers`` beside memori's tables: a warning where it is
        still PostgreSQL's default and the tables outgrow it (at 1M messages over 100
        entities, 9.1 GB, a recall with the vector copies off took 63 ms at 128 MB and 20-22
        ms at 4 GB; README, "Running on PostgreSQL")."""
        buffers, buffer_bytes, stored, shown = conn.execute(
            """SELECT current_setting('shared_buffers'),
                      pg_size_bytes(current_setting('shared_buffers')),
                      %s::bigint, pg_size_pretty(%s::bigint)""",
            (self.size_bytes(conn),) * 2,
        ).fetchone()
        unset = int(buffer_bytes) <= _DEFAULT_SHARED_BUFFERS < int(stored)
        detail = f"shared_buffers {buffers}, memori's tables {shown}"
        if unset:
            detail += (
                ": PostgreSQL's default, smaller than the store; about a quarter of the "
                "server's RAM is advised (recall reads the pages through the OS meanwhile)"
            )
        return {"check": "server memory", "status": "warn" if unset else "ok", "detail": detail}


#: PostgreSQL's own ``shared_buffers`` (what ``initdb`` writes): a server nobody sized.
_DEFAULT_SHARED_BUFFERS = 128 * 1024 * 1024


#: The tables forget's deletes touch (those holding an entity's text, vectors or terms).
_FORGET_TABLES = (
    "messages", "messages_postings", "messages_lex_terms", "messages_lex_docs",
    "message_embeddings", "vector_counts", "memories", "memories_postings", "memories_lex_terms",
    "memories_lex_docs", "memory_embeddings", "memory_sources", "triples", "triple_sources",
    "graph_nodes", "graph_aliases", "session_summaries", "sessions", "jobs", "rejections",
    "entities",
)  # fmt: skip


#: Every table of the schema (forget's and the rest).
_MEMORI_TABLES = (*_FORGET_TABLES, "_sqlite_migrations", "processes", "settings", "vector_changes")


@functools.cache
def _cursor_class() -> type:
    """psycopg's cursor, whose statements raise :class:`StoreUnavailable` when the server is
    gone (a restart, a dropped connection): reads as well as writes, so a caller catches one
    memori error whatever it was doing. memori's own connections use it; a connection the
    caller hands over keeps its own cursors (and raises psycopg's errors)."""
    psycopg = _psycopg()

    @contextlib.contextmanager
    def lost_as_unavailable(conn: Any) -> Any:
        try:
            yield
        except psycopg.Error as exc:
            if POSTGRES.is_lost(exc):
                try:
                    where = masked_url(conn)
                except Exception:  # a closed connection may no longer say where it went
                    where = "its PostgreSQL server"
                raise StoreUnavailable(f"cannot reach the store at {where}: {exc}") from exc
            raise

    class Cursor(psycopg.Cursor):  # type: ignore[misc,name-defined]
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            with lost_as_unavailable(self.connection):
                return super().execute(*args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            with lost_as_unavailable(self.connection):
                return super().executemany(*args, **kwargs)

        @contextlib.contextmanager
        def copy(self, *args: Any, **kwargs: Any) -> Any:
            with lost_as_unavailable(self.connection), super().copy(*args, **kwargs) as copy:
                yield copy

    return Cursor


def _utc_now() -> Any:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc)


#: The PostgreSQL backend (stateless, shared).
POSTGRES = PostgresBackend()
QmarkConnection.backend = POSTGRES

__all__ = ["POSTGRES", "PostgresBackend", "masked_url"]
