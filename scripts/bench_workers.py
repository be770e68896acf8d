#!/usr/bin/env python3
"""Augmentation workers sharing one store's queue: jobs/s with 1, 2 and 4 worker processes.

Usage: .venv/bin/python scripts/bench_workers.py [--store postgresql://...|FILE] [--entities 50]
           [--jobs 400] [--workers 1 2 4] [--model-ms 0 200]

For each worker count and each simulated model time, a fresh store (a schema of its own on
PostgreSQL, a file in a temp folder otherwise) gets ``--jobs`` jobs over ``--entities``
entities (one short session each, three first-person lines the rule extractor turns into
memories and edges); then that many processes run ``Memori.augment()`` at once, each
extraction first sleeping ``--model-ms`` (a model call's latency; 0: the rules alone), with no
embedding model. Prints jobs/s and checks that every job ran exactly once and that no entity
holds two current memories of one slot.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_recall import postgres_schema

from memori_cli import Memori

WORKER = """
import sys, time
from memori_cli import Memori
from memori_cli.augment.rules import RuleExtractor
delay = float(sys.argv[2]) / 1000
extract = RuleExtractor.extract
def slow(self, turns, **options):
    time.sleep(delay)
    return extract(self, turns, **options)
RuleExtractor.extract = slow
mem = Memori(conn=sys.argv[1], extractor=RuleExtractor())
mem.config.embedding_model = "none"
report = mem.augment()
print(report.jobs_done, report.jobs_failed)
"""


@contextlib.contextmanager
def fresh_store(base: str | None, name: str) -> Iterator[str]:
    """An empty store: a new schema in the PostgreSQL database ``base``, else a temp file."""
    if base is not None:
        with postgres_schema(base, name) as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield str(Path(tmp) / "bench.db")


def fill(target: str, entities: int, jobs: int) -> None:
    mem = Memori(conn=target)
    for n in range(jobs):
        mem.attribution(entity_id=f"e{n % entities}")
        mem.new_session()
        mem.add_messages([
            {"role": "user", "content": f"I live in Town{n}. I love food{n}."},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": f"I work at Firm{n % 7}."},
        ])  # fmt: skip
    mem.close()


def run(target: str, workers: int, model_ms: int, jobs: int) -> float:
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, target, str(model_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    done = failed = 0
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err}")
        ran, lost = out.split()
        done, failed = done + int(ran), failed + int(lost)
    took = time.perf_counter() - started
    mem = Memori(conn=target)
    conn = mem.store.conn
    (finished,) = conn.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchone()
    (doubled,) = conn.execute(
        """SELECT count(*) FROM (SELECT entity_id, about, slot FROM memories
           WHERE valid_to IS NULL AND slot IS NOT NULL
           GROUP BY entity_id, about, slot HAVING count(*) > 1) d"""
    ).fetchone()
    mem.close()
    if done != jobs or failed or finished != jobs or doubled:
        raise SystemExit(
            f"{workers} workers: ran {done} of {jobs} jobs ({failed} failed, {finished} done in "
            f"the store), {doubled} slots with two current memories"
        )
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a PostgreSQL URL (default: SQLite files in /tmp)")
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--model-ms", type=int, nargs="*", default=[0, 200])
    args = parser.parse_args()
    engine = "PostgreSQL" if args.store else "SQLite"
    print(f"{engine}: {args.jobs} jobs over {args.entities} entities, rule extractor")
    for model_ms in args.model_ms:
        base: float | None = None
        for workers in args.workers:
            with fresh_store(args.store, f"memori_workers_{workers}_{model_ms}") as target:
                fill(target, args.entities, args.jobs)
                took = run(target, workers, model_ms, args.jobs)
            rate = args.jobs / took
            base = base or rate
            print(f"  model {model_ms:>3} ms, {workers} worker(s): {rate:6.1f} jobs/s "
                  f"({rate / base:.2f}x one worker); each job once, no doubled memory")  # fmt: skip


if __name__ == "__main__":
    main()
