#!/usr/bin/env python3
"""Recall latency on the numpy vector path beside the sqlite-vec path, one store, one run.

Usage: .venv/bin/python scripts/bench_vector_path.py [--sizes 10k 100k] [--queries 40]

Builds the stores of ``scripts/bench_recall.py`` (one entity of 10k, then 100k messages with
random unit vectors; the query is embedded for real with the default model) and recalls from
the same file through four connections:

- ``sqlite-vec``: a path (sqlean with sqlite-vec), as memori opens stores: an entity this large
  is searched through its memory-mapped matrix;
- ``sqlite-vec, vec0 only``: the same without the matrix copy, so KNN runs in vec0;
- ``numpy``: a stdlib ``sqlite3`` connection (``Memori(conn=lambda: sqlite3.connect(path))``),
  which cannot load sqlite-vec: vectors searched in process over the matrix;
- ``numpy, no matrix``: the stdlib connection without the matrix (a store with no file
  beside it, such as an in-memory one): the entity's BLOBs read on every query.

For each it prints the median and p95 of one recall (query embedding included) and of the
vector search alone, and checks that every path returns the same hit ids.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_recall import QUESTIONS, SIZES, build, latency, opened, vocabulary

from memori_cli import Memori
from memori_cli.embed import load
from memori_cli.store import connect, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["10k", "100k"], choices=["10k", "100k"])
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()
    embedder = load("minilm")
    rng = random.Random(3)
    for size in args.sizes:
        entities, per_entity = SIZES[size]
        print(f"\n{size}: {entities} entity x {per_entity:,} messages")
        with tempfile.TemporaryDirectory() as tmp:
            built = build(Path(tmp), entities, per_entity, embedder.dim)
            path = built.store.path
            assert path is not None
            built.close()
            words = vocabulary(random.Random(1))[:2000]
            queries = [f"{rng.choice(QUESTIONS)} {' '.join(rng.choices(words, k=2))}"
                       for _ in range(args.queries)]  # fmt: skip
            query_vectors = {q: embedder.embed([q])[0] for q in queries}
            paths = {
                "sqlite-vec": opened(path, stdlib=False, matrix=True),
                "sqlite-vec, vec0 only": opened(path, stdlib=False, matrix=False),
                "numpy": opened(path, stdlib=True, matrix=True),
                "numpy, no matrix": opened(path, stdlib=True, matrix=False),
            }
            answers: dict[str, list[list[tuple[str, int]]]] = {}
            for name, mem in paths.items():
                mem._embedder = embedder
                vector_path, _ = connect.vector_path(mem.store.conn)

                def knn(
                    q: str, mem: Memori = mem, qv: dict[str, Any] = query_vectors
                ) -> list[tuple[int, float]]:
                    return vectors.knn(mem.store, "e0", qv[q], 100)

                recall: Callable[[str], object] = lambda q, mem=mem: mem.recall(  # noqa: E731
                    q, 10, entity_id="e0"
                )
                whole = latency(recall, queries)
                alone = latency(knn, queries)
                answers[name] = [
                    [(h.kind, h.id) for h in mem.recall(q, 10, entity_id="e0")] for q in queries
                ]
                print(f"  {name:<22} ({vector_path:<10}) recall median {whole[0]:6.1f} ms, "
                      f"p95 {whole[1]:6.1f} ms; vector search alone median {alone[0]:6.1f} ms, "
                      f"p95 {alone[1]:6.1f} ms")  # fmt: skip
                mem.close()
            reference = answers["sqlite-vec"]
            same = {name: sum(a == b for a, b in zip(got, reference, strict=True))
                    for name, got in answers.items()}  # fmt: skip
            print("  identical hit ids: " + ", ".join(f"{n} {c}/{len(queries)}"
                                                      for n, c in same.items()))  # fmt: skip


if __name__ == "__main__":
    main()
