#!/usr/bin/env python3
"""Import throughput: write N native-JSONL messages, import them into a fresh store, report.

Usage: .venv/bin/python scripts/bench_import.py [--messages 100000] [--runs 3]
Prints messages/second for each run and the median. Target: 20,000/s or better.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from memori_cli import Memori

WORDS = (
    "the a I my we you coffee Berlin train hiking sister project deadline weekend dinner "
    "garden python meeting running music guitar Lisbon doctor movie book recipe flight "
    "morning evening work home friend dog cat birthday holiday tennis piano market"
).split()


def write_transcript(path: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            record = {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))),
                "session": f"s{i // 50}",
                "timestamp": f"2024-{1 + (i // 50) % 12:02d}-{1 + i % 28:02d}T12:00:00Z",
            }
            if i % 3 == 0:
                record["id"] = f"m{i}"
            if i % 2 == 0:
                record["name"] = "Alex"
            handle.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "bench.jsonl"
        write_transcript(source, args.messages)
        size = source.stat().st_size
        print(f"{args.messages:,} messages, {size / 1e6:.1f} MB of native JSONL")
        rates = []
        for run in range(args.runs):
            mem = Memori(conn=Path(tmp) / f"run{run}.db")
            mem.config.storage.build()
            start = time.perf_counter()
            report = mem.import_file(source, entity_id="bench")
            elapsed = time.perf_counter() - start
            assert report.imported == args.messages, report
            rates.append(args.messages / elapsed)
            print(f"run {run + 1}: {elapsed:.2f} s, {rates[-1]:,.0f} messages/s")
            start = time.perf_counter()
            again = mem.import_file(source, entity_id="bench")
            assert again.imported == 0 and again.duplicates == args.messages
            print(f"        re-import (all duplicates): {time.perf_counter() - start:.2f} s")
            mem.close()
        print(f"median: {statistics.median(rates):,.0f} messages/s (target: 20,000/s)")


if __name__ == "__main__":
    main()
