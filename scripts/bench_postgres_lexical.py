#!/usr/bin/env python3
"""bm25 on PostgreSQL (memori_cli.store.postgres) beside SQLite's FTS5: top-10 agreement and cost.

Usage: MEMORI_TEST_POSTGRES=<dsn> .venv/bin/python scripts/bench_postgres_lexical.py \
    ../shared/eval/locomo-dev.json ../shared/eval/longmemeval-dev.json [SIZES...]
One entity holds the first N turns (N in SIZES, default 788 10000 50000); the questions of both
files are the queries (recall's own term selection). Prints, per size: insert time on each engine,
mean top-10 overlap (|A ∩ B| / |A|), share of identical top-10 lists, and p50/p95 query times.
"""

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from memori_cli.recall.query import terms as query_terms
from memori_cli.store.postgres import POSTGRES
from memori_cli.store.sqlite import SQLITE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_locomo import session_turns

files = [a for a in sys.argv[1:] if a.endswith(".json")]
sizes = [int(a) for a in sys.argv[1:] if a.isdigit()] or [788, 10000, 50000]
turns, questions = [], []
for path in files:
    for sample in json.loads(Path(path).read_text()):
        for _, _, session in session_turns(sample["conversation"]):
            turns += [(turn["speaker"], turn["text"]) for turn in session]
        questions += [q["question"] for q in sample["qa"]]
print(f"{len(turns)} turns, {len(questions)} questions", flush=True)
queries = [t for t in (query_terms(q) for q in questions) if t]


def fill(backend, conn, n):
    backend.begin(conn)
    conn.execute("INSERT INTO entities (id, created_at) VALUES ('alice', '2026')")
    (session,) = conn.execute(
        "INSERT INTO sessions (entity_id, name, created_at) VALUES ('alice', 's', '2026') "
        "RETURNING id"
    ).fetchone()
    backend.commit(conn)
    start = time.perf_counter()
    for lo in range(0, n, 2000):
        rows = []
        for i in range(lo, min(n, lo + 2000)):
            speaker, text = turns[i % len(turns)]
            if i >= len(turns):
                text = f"{text} r{i // len(turns)}"
            context = " ".join(turns[(i - 1) % len(turns)][1].split()[-30:]) if i else None
            rows.append(
                (
                    "alice",
                    None,
                    session,
                    "user",
                    text,
                    speaker,
                    "2026",
                    f"x{i}",
                    text,
                    1.0,
                    "t",
                    context,
                )
            )
        backend.begin(conn, entity="alice")
        backend.insert_messages(conn, rows)
        backend.commit(conn)
    return time.perf_counter() - start


def run(backend, conn):
    tops, times = [], []
    for t in queries[:5]:
        backend.lexical_messages(conn, t, entity_id="alice", where=[], params=[], limit=10)
    for t in queries:
        start = time.perf_counter()
        rows = backend.lexical_messages(conn, t, entity_id="alice", where=[], params=[], limit=10)
        times.append(time.perf_counter() - start)
        tops.append([r["external_id"] for r in rows])
    return tops, times


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


admin_dsn = __import__("os").environ["MEMORI_TEST_POSTGRES"]
for n in sizes:
    with tempfile.TemporaryDirectory() as tmp:
        lite = SQLITE.connect(str(Path(tmp) / "m.db"))
        SQLITE.configure(lite)
        SQLITE.migrate(lite)
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        pg = POSTGRES.connect(make_conninfo(admin_dsn, dbname=name))
        POSTGRES.configure(pg)
        POSTGRES.migrate(pg)
        t_lite = fill(SQLITE, lite, n)
        t_pg = fill(POSTGRES, pg, n)
        pg.execute("VACUUM ANALYZE")
        a_top, a_t = run(SQLITE, lite)
        b_top, b_t = run(POSTGRES, pg)
        overlap = [len(set(a) & set(b)) / len(a) for a, b in zip(a_top, b_top, strict=False) if a]
        same = sum(a == b for a, b in zip(a_top, b_top, strict=False)) / len(a_top)
        first = sum(
            bool(a) and bool(b) and a[0] == b[0] for a, b in zip(a_top, b_top, strict=False)
        ) / len(a_top)
        (size,) = pg.execute("SELECT pg_database_size(current_database())").fetchone()
        (post,) = pg.execute("SELECT pg_total_relation_size('messages_postings')").fetchone()
        print(
            f"n={n}: insert sqlite {n / t_lite:.0f}/s, postgres {n / t_pg:.0f}/s; "
            f"top-10 overlap mean {statistics.mean(overlap):.3f} (min {min(overlap):.2f}), "
            f"identical lists {same:.3f}, same first {first:.3f}; "
            f"query ms sqlite p50 {pct(a_t, 0.5):.2f} p95 {pct(a_t, 0.95):.2f}, "
            f"postgres p50 {pct(b_t, 0.5):.2f} p95 {pct(b_t, 0.95):.2f}; "
            f"pg db {size / 2**20:.0f} MiB (postings {post / 2**20:.0f} MiB)",
            flush=True,
        )
        pg.close()
        lite.close()
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
