"""Row-level security per entity: the database itself keeps a role to the entities granted to
it (``memori rls``), for teams whose app servers must not see each other's users even
through a bug or a hand-written query.

memori's queries always carry the entity in SQL; with row-level security on, PostgreSQL also
filters every row of every memori table by a policy: a role sees and writes only the rows of
entities whose id matches one of its grants (``LIKE`` patterns, ``acme:%``). Grants live in
``memori_entity_grants`` (role, pattern); a role has the grants of every role it is a member
of. The tables' owner (who ran the migrations: the daemon's role, typically) and superusers
are not filtered: PostgreSQL exempts them, so the daemon augments every entity, as before.

Tables that hold no entity column are filtered through the rows they point at (a memory's
sources through its memory, a triple's through its triple); ``settings``, ``processes`` and the
migration record hold no user's data and are readable by every granted role.
"""

from __future__ import annotations

from typing import Any

from ...errors import StoreError
from .qmark import unwrap as _raw

GRANTS = "memori_entity_grants"
POLICY = "memori_entity"
#: The patterns the current role may use, computed once per statement (an InitPlan).
_ALLOWED = "ARRAY(SELECT memori_allowed_entities())"
#: Each table's policy condition: on its own entity column, or through the row it points at.
_CONDITIONS = {
    "entities": f"id LIKE ANY ({_ALLOWED})",
    "memory_sources": "EXISTS (SELECT 1 FROM memories m WHERE m.id = memory_id)",
    "triple_sources": "EXISTS (SELECT 1 FROM triples t WHERE t.id = triple_id)",
}
#: memori's tables with no user data: readable (and, for the queue's bookkeeping, writable)
#: by every granted role, unfiltered.
_SHARED = frozenset({"_sqlite_migrations", "settings", "processes", "vector_changes", GRANTS})


def _tables(raw: Any) -> dict[str, bool]:
    """memori's tables in the current schema: name -> whether it has an ``entity_id``."""
    rows = raw.execute(
        """SELECT c.relname, bool_or(a.attname = 'entity_id')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE n.nspname = current_schema() AND c.relkind = 'r'
           GROUP BY c.relname ORDER BY 1"""
    ).fetchall()
    return {str(name): bool(has) for name, has in rows}


def _has_grants(raw: Any) -> bool:
    """Whether ``memori rls enable`` made the grants table here."""
    return raw.execute("SELECT to_regclass(%s)", (GRANTS,)).fetchone()[0] is not None


def _condition(table: str, has_entity: bool) -> str | None:
    if table in _CONDITIONS:
        return _CONDITIONS[table]
    if has_entity:
        return f"entity_id LIKE ANY ({_ALLOWED})"
    return None


def enable(conn: Any) -> list[str]:
    """Turn row-level security on for every memori table (idempotent); the tables filtered.
    Must run as the tables' owner."""
    raw = _raw(conn)
    tables = _tables(raw)
    if "messages" not in tables:
        raise StoreError("this schema holds no memori store: open it once with memori first")
    filtered = []
    with raw.transaction():
        raw.execute(
            f"""CREATE TABLE IF NOT EXISTS {GRANTS} (
                    role name NOT NULL, pattern text NOT NULL, PRIMARY KEY (role, pattern))"""
        )
        raw.execute(f"GRANT SELECT ON {GRANTS} TO PUBLIC")
        # Not SECURITY DEFINER: current_user is the role running the query.
        raw.execute(
            f"""CREATE OR REPLACE FUNCTION memori_allowed_entities() RETURNS SETOF text
                LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
                    SELECT pattern FROM {GRANTS} WHERE pg_has_role(current_user, role, 'MEMBER')
                $$"""
        )
        for table, has_entity in tables.items():
            condition = _condition(table, has_entity)
            if condition is None or table in _SHARED:
                continue
            raw.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
            raw.execute(f'DROP POLICY IF EXISTS {POLICY} ON "{table}"')
            raw.execute(
                f'CREATE POLICY {POLICY} ON "{table}" USING ({condition}) WITH CHECK ({condition})'
            )
            filtered.append(table)
    return filtered


def disable(conn: Any) -> None:
    """Turn row-level security off again (grants are kept)."""
    raw = _raw(conn)
    with raw.transaction():
        for table in _tables(raw):
            raw.execute(f'DROP POLICY IF EXISTS {POLICY} ON "{table}"')
            raw.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')


def grant(conn: Any, role: str, pattern: str) -> None:
    """Let ``role`` read and write the entities matching ``pattern`` (a ``LIKE`` pattern);
    gives it the table privileges memori needs. Must run as the tables' owner."""
    from psycopg import sql

    raw = _raw(conn)
    ident = sql.Identifier(role)
    if not _has_grants(raw):
        raise StoreError("row-level security is off for this store: memori rls enable first")
    if raw.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
        raise StoreError(f"there is no role {role!r} on this server (CREATE ROLE {role} LOGIN)")
    with raw.transaction():
        (schema,) = raw.execute("SELECT current_schema()").fetchone()
        names = {"schema": sql.Identifier(schema), "role": ident}
        for statement in (
            "GRANT USAGE ON SCHEMA {schema} TO {role}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
            # the grants are the owner's to change: the role only reads them
            f"REVOKE INSERT, UPDATE, DELETE ON {GRANTS} FROM {{role}}",
        ):
            raw.execute(sql.SQL(statement).format(**names))
        raw.execute(
            f"INSERT INTO {GRANTS} (role, pattern) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (role, pattern),
        )


def revoke(conn: Any, role: str, pattern: str | None = None) -> int:
    """Take back ``role``'s grant of ``pattern`` (every grant of it when None); how many."""
    raw = _raw(conn)
    if not _has_grants(raw):
        return 0
    sql = f"DELETE FROM {GRANTS} WHERE role = %s" + ("" if pattern is None else " AND pattern = %s")
    cursor = raw.execute(sql, (role,) if pattern is None else (role, pattern))
    return int(cursor.rowcount)


def status(conn: Any) -> dict[str, Any]:
    """Whether row-level security is on (every entity table filtered), and the grants."""
    raw = _raw(conn)
    tables = _tables(raw)
    on = {
        str(name)
        for (name,) in raw.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = current_schema() AND c.relrowsecurity"""
        )
    }
    wanted = {t for t, has in tables.items() if _condition(t, has) and t not in _SHARED}
    grants: list[tuple[str, str]] = []
    if GRANTS in tables:
        grants = [
            (str(r), str(p))
            for r, p in raw.execute(f"SELECT role, pattern FROM {GRANTS} ORDER BY 1, 2")
        ]
    return {
        "enabled": bool(wanted) and wanted <= on,
        "tables": sorted(on & wanted),
        "unfiltered": sorted(wanted - on),
        "grants": [{"role": r, "pattern": p} for r, p in grants],
    }
