#!/usr/bin/env python3
"""Recall latency on synthetic stores, and embedding throughput.

Usage: .venv/bin/python scripts/bench_recall.py [--sizes 10k 100k 1m] [--queries 40]
           [--postgres URL]

Builds stores of 10k and 100k messages for one entity and 1M messages across 100 entities
(synthetic text, random unit vectors; the query is embedded for real with the default model),
then prints the median and p95 latency of one recall, query embedding included, next to the
lexical-only recall this release replaced, measured in the same run at the same size, the
same store opened through the stdlib ``sqlite3`` (no sqlite-vec: the numpy vector path) at 10k
and 100k, and the time of one recall whose query is 10 MB of text (cut to its start, so it
costs what a long question costs). ``scripts/bench_vector_path.py`` splits the vector paths
further.
Targets: median <= 15 ms and p95 <= 25 ms at 100k, median <= 15 ms at 1M rows across 100
entities; embedding >= 300 sentences/s batched, <= 5 ms for one sentence.

With ``--postgres URL`` (a database memori may use; each size gets a schema of its own there,
dropped afterwards) every size is also built on PostgreSQL and its hybrid recall timed with
the same queries, beside SQLite's (target: within 1.5x of SQLite's median), then again
(the vectors of the entities searched copied into the process, as the budget allows) and
with those copies off (every vector search on the server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sqlite3
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from memori_cli import Memori, RecallWarning
from memori_cli.embed import MiniLMEmbedder, load, minilm_folder, onnx_bert
from memori_cli.recall import MAX_QUERY_CHARS
from memori_cli.store import vectors

try:
    from memori_cli.recall.query import match_expression
except ImportError:  # a tree from before the query language left the store (bench both)
    from memori_cli.store.fts import match_expression  # type: ignore[attr-defined,no-redef]

SIZES = {"10k": (1, 10_000), "100k": (1, 100_000), "1m": (100, 10_000)}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "maya.jsonl"
QUESTIONS = [
    "where does she live these days?", "what is her job?", "does she have any allergies?",
    "when is her sister's birthday?", "what sport does she do?", "who is her manager?",
    "what language is she learning?", "what did she say about the database migration?",
    "which city did she move from?", "what food does she like?", "how far does she run?",
    "what does she think about slide decks?", "who is joining her in June?",
    "what happened with the on-call rotation?", "where is she travelling this weekend?",
]  # fmt: skip


def vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)]


def build(
    folder: Path, entities: int, per_entity: int, dim: int, conn: str | None = None
) -> Memori:
    """The synthetic store, in ``folder`` or at the PostgreSQL URL ``conn``."""
    rng = random.Random(1)
    words = vocabulary(rng)
    weights = [1 / (i + 1) for i in range(len(words))]  # Zipf-like, as real text
    source = folder / "messages.jsonl"
    with open(source, "w") as handle:
        for e in range(entities):
            for i in range(per_entity):
                text = " ".join(rng.choices(words, weights, k=rng.randint(8, 30)))
                handle.write(json.dumps({"role": "user", "content": text, "entity": f"e{e}",
                                         "session": f"s{i // 40}"}) + "\n")  # fmt: skip
    mem = Memori(conn=conn or folder / "bench.db")
    started = time.perf_counter()
    mem.import_file(source)
    print(f"  imported {entities * per_entity:,} messages in {time.perf_counter() - started:.0f} s")
    # A store at rest: its augmentation done (recall does not read the queue, but on
    # PostgreSQL an entity with jobs left gets its HNSW index only once they are done).
    with mem.store.write() as tx:
        tx.execute("DELETE FROM jobs")
    started = time.perf_counter()
    model = mem.embedder().name  # type: ignore[union-attr]
    np_rng = np.random.default_rng(2)
    after = 0
    while True:
        rows = mem.store.conn.execute(
            "SELECT id FROM messages WHERE id > ? ORDER BY id LIMIT 20000", (after,)
        ).fetchall()  # the store's connection takes ? on both engines
        if not rows:
            break
        ids = [r[0] for r in rows]
        matrix = np_rng.standard_normal((len(ids), dim)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        vectors.add(mem.store, model, ids, matrix)
        after = ids[-1]
    print(f"  stored {after:,} vectors in {time.perf_counter() - started:.0f} s")
    if mem.store.backend.name == "postgres":
        # What autovacuum does to a live store within a minute: statistics for the planner,
        # and the visibility map that lets index-only scans skip the table.
        mem.store.conn.execute("VACUUM ANALYZE")
    return mem


def previous_lexical(mem: Memori, query: str, entity_id: str) -> list[int]:
    """The lexical recall of the previous release: bm25 over all entities, then filtered."""
    rows = mem.store.conn.execute(
        """SELECT m.id FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
           WHERE messages_fts MATCH ? AND m.entity_id = ?
           ORDER BY bm25(messages_fts, 1.0, 0.5, 0.0) LIMIT 10""",
        (f"{{content name}} : ({match_expression(query)})", entity_id),
    ).fetchall()
    return [r[0] for r in rows]


def latency(fn, queries: list[str]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    fn(queries[0])  # warm-up
    times = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - started)
    times.sort()
    return statistics.median(times) * 1000, times[int(0.95 * (len(times) - 1))] * 1000


def opened(path: Path, *, stdlib: bool, matrix: bool) -> Memori:
    """The store at ``path`` through the stdlib ``sqlite3`` (no sqlite-vec: the numpy path)
    or by path (sqlean with sqlite-vec), with or without its memory-mapped matrix copies."""
    if stdlib:
        mem = Memori(conn=lambda: sqlite3.connect(str(path)), create=False)
    else:
        mem = Memori(conn=path, create=False)
    mem.store.build()
    if not matrix:
        mem.store.matrices = None
    return mem


def numpy_path(mem: Memori, queries: list[str]) -> None:
    """The same store through the stdlib ``sqlite3`` (no sqlite-vec: vectors searched with
    numpy), timed beside the sqlite-vec connection, with the hit ids compared."""
    path = mem.store.path
    assert path is not None
    plain = opened(path, stdlib=True, matrix=True)
    plain._embedder = mem.embedder()
    whole = latency(lambda q: plain.recall(q, 10, entity_id="e0"), queries)
    same = sum(
        [h.id for h in plain.recall(q, 10, entity_id="e0")]
        == [h.id for h in mem.recall(q, 10, entity_id="e0")]
        for q in queries
    )
    print(f"  the same, stdlib sqlite3 (numpy path):    median {whole[0]:.1f} ms, "
          f"p95 {whole[1]:.1f} ms; identical hits {same}/{len(queries)}")  # fmt: skip
    plain.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also build and time each size on this PostgreSQL database",
    )
    args = parser.parse_args()
    embedder = load("minilm")
    rng = random.Random(3)
    turns = [json.loads(line)["content"] for line in EXAMPLES.read_text().splitlines()]
    short = (turns * 12)[:256]
    # Long turns, as LongMemEval's assistant replies: eight turns joined, cut at 128 pieces.
    long = [" ".join(turns[i : i + 8]) for i in range(len(turns))] * 4
    engines = ["numpy", *(["onnxruntime"] if onnx_bert.available() else [])]
    print("embedding throughput (all-MiniLM-L6-v2), on the example transcript's turns:")
    for engine in engines:
        model = MiniLMEmbedder(minilm_folder() or Path("."), engine=engine)
        model.embed(short[:8])
        rates = []
        for texts in (short, long):
            started = time.perf_counter()
            model.embed(texts)
            rates.append(len(texts) / (time.perf_counter() - started))
        started = time.perf_counter()
        for s in short[:50]:
            model.embed([s])
        single = (time.perf_counter() - started) / 50
        print(f"  {engine:<12} batch: {rates[0]:.0f} sentences/s ({rates[1]:.0f}/s for turns of "
              f"128 word pieces); single: {single * 1000:.1f} ms")  # fmt: skip
    print(f"  recall below embeds with {getattr(embedder, 'engine', embedder.name)}")
    for size in args.sizes:
        measure(size, args.queries, embedder.dim, rng, args.postgres)


@contextlib.contextmanager
def postgres_schema(url: str, name: str) -> Iterator[str]:
    """A fresh schema ``name`` in the database at ``url``, dropped afterwards; yields the URL
    whose connections use it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        # pgvector in public, which stays on the path: created in the bench's own schema, it
        # would go with it (DROP SCHEMA ... CASCADE) from under every other schema's tables.
        admin.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        admin.execute(f"CREATE SCHEMA {name}")
    joiner = "&" if "?" in url else "?"
    try:
        yield f"{url}{joiner}options=-csearch_path%3D{name}%2Cpublic"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def measure(
    size: str, count: int, dim: int, rng: random.Random, postgres: str | None = None
) -> None:
    entities, per_entity = SIZES[size]
    print(f"\n{size}: {entities} entit{'y' if entities == 1 else 'ies'} x {per_entity:,} messages")
    with tempfile.TemporaryDirectory() as tmp:
        mem = build(Path(tmp), entities, per_entity, dim)
        words = vocabulary(random.Random(1))[:2000]
        # Real questions (their embedding cost is real) plus words the store holds.
        queries = [f"{rng.choice(QUESTIONS)} {' '.join(rng.choices(words, k=2))}"
                   for _ in range(count)]  # fmt: skip

        def pick() -> str:
            return f"e{rng.randrange(entities)}"

        hybrid = latency(lambda q: mem.recall(q, 10, entity_id=pick()), queries)
        lexical = latency(lambda q: previous_lexical(mem, q, pick()), queries)
        print(f"  hybrid recall (query embedding included): median {hybrid[0]:.1f} ms, "
              f"p95 {hybrid[1]:.1f} ms")  # fmt: skip
        if entities == 1:
            numpy_path(mem, queries)
        print(f"  lexical recall before this release:       median {lexical[0]:.1f} ms, "
              f"p95 {lexical[1]:.1f} ms")  # fmt: skip
        huge = " ".join(rng.choices(words, k=1_700_000))[:10_000_000]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RecallWarning)  # the cut is the point here
            started = time.perf_counter()
            mem.recall(huge, 10, entity_id=pick())
        print(f"  recall of a 10 MB query (read up to {MAX_QUERY_CHARS:,} characters): "
              f"{(time.perf_counter() - started) * 1000:.0f} ms")  # fmt: skip
        mem.close()
        if postgres:
            with postgres_schema(postgres, f"memori_bench_{size}") as url:
                print("  on PostgreSQL:")
                server = build(Path(tmp), entities, per_entity, dim, conn=url)
                buffers, size = server.store.conn.execute(
                    "SELECT current_setting('shared_buffers'), "
                    "pg_size_pretty(pg_database_size(current_database()))"
                ).fetchone()
                print(f"  the server's shared_buffers: {buffers}; the database: {size}")
                on_pg = latency(lambda q: server.recall(q, 10, entity_id=pick()), queries)
                ratio = on_pg[0] / hybrid[0]
                print(f"  hybrid recall on PostgreSQL:               median {on_pg[0]:.1f} ms, "
                      f"p95 {on_pg[1]:.1f} ms ({ratio:.2f}x SQLite's median)")  # fmt: skip
                postgres_variants(server, queries, pick)
                server.close()


def postgres_variants(server: Memori, queries: list[str], pick: Any) -> None:
    """The PostgreSQL store timed again: a second pass (the copies of the entities' vectors
    the first made, as many as the budget holds, are in memory now), and with the copies
    off (every vector search on the server: exact, or the entity's HNSW index)."""
    from memori_cli.store.postgres.vectors import VectorCache

    cache = server.store.vector_cache
    held = len(cache._copies) if cache is not None else 0
    again = latency(lambda q: server.recall(q, 10, entity_id=pick()), queries)
    print(f"    again ({held} entities' vectors copied):     median {again[0]:.1f} ms, "
          f"p95 {again[1]:.1f} ms")  # fmt: skip
    server.store.vector_cache = VectorCache(0)
    off = latency(lambda q: server.recall(q, 10, entity_id=pick()), queries)
    print(f"    copies off (searched on the server):  median {off[0]:.1f} ms, "
          f"p95 {off[1]:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
