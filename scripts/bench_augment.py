"""Benchmark augmentation: throughput of the whole pipeline and capture-to-recallable latency.

    python scripts/bench_augment.py [--sessions 100] [--per-session 20] [--captures 30]
                                    [--embedding minilm|none] [--model PATH.gguf]
    python scripts/bench_augment.py --history 10000 --embedding none

1. Throughput: import sessions x per-session messages, then run every job in the foreground
   (rule extractor, embedding with the configured model unless --embedding none): jobs/s and
   messages/s through extraction, dedup/supersession, vectors and the commit.
2. Latency: with the daemon running on the store, capture one message at a time and time how
   long until a memory extracted from it can be recalled (target: median under 2 s).
3. With --model, tokens per second of the LlamaCppExtractor on that GGUF model.
4. With --history N (instead of 1 and 2): N jobs of ONE entity, each a few messages the rule
   extractor turns into memories and edges ("I live in Town{n}", "I like food{n}"), captured
   and drained in batches so the queue stays short and only the entity's history grows;
   jobs/s of the batch ending at 1,000 jobs and at N (does augmentation slow as history grows?).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLACES = ["Oslo", "Lima", "Kyoto", "Quito", "Perth", "Dakar", "Hanoi", "Turin"]


def write_transcript(path: Path, sessions: int, per_session: int) -> int:
    with open(path, "w") as handle:
        for s in range(sessions):
            for i in range(per_session):
                text = (
                    f"I live in {PLACES[(s + i) % len(PLACES)]} these days. I love green tea "
                    f"and long walks. My sister Ana{s} is visiting. What about step {i}?"
                )
                record = {
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": text,
                    "session": f"s{s}",
                    "name": "Kim" if i % 2 == 0 else None,
                }
                handle.write(json.dumps(record) + "\n")
    return sessions * per_session


def throughput(home: Path, sessions: int, per_session: int) -> None:
    from memori_cli import Memori

    source = home / "bench.jsonl"
    total = write_transcript(source, sessions, per_session)
    mem = Memori(conn=home / "throughput.db")
    mem.import_file(source, entity_id="bench")
    embedder = mem.embedder()
    if embedder is not None:
        embedder.embed(["warm-up"])
    started = time.perf_counter()
    report = mem.pipeline().drain()
    seconds = time.perf_counter() - started
    mem.close()
    print(
        f"pipeline ({mem.extractor().name}, embedder {embedder.name if embedder else 'none'}):"
        f" {report.jobs_done} jobs, {total} messages in {seconds:.2f} s = "
        f"{report.jobs_done / seconds:.1f} jobs/s, {total / seconds:.0f} messages/s; "
        f"{report.memories_created} memories, {report.memories_merged} merged, "
        f"{report.memories_superseded} superseded"
    )


def latency(home: Path, captures: int) -> None:
    from memori_cli import Memori

    db = home / "latency.db"
    mem = Memori(conn=db)
    mem.store.build()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "memori_daemon", "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import memori_daemon

    while not (memori_daemon.status(db.resolve()).heartbeat or {}).get("heartbeat"):
        time.sleep(0.05)
    delays = []
    try:
        with mem.attribution(entity_id="kim"):
            for n in range(captures):
                place = f"Town{n}x"
                start = time.perf_counter()
                mem.add_messages(
                    [{"role": "user", "content": f"I live in {place} now.", "name": "Kim"}]
                )
                # The memory of this capture, not an earlier one that looks alike.
                while not any(
                    h.kind == "fact" and place in h.content
                    for h in mem.recall(place, 3, memories=True)
                ):
                    time.sleep(0.005)
                delays.append(time.perf_counter() - start)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        mem.close()
    delays.sort()
    p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
    print(
        f"capture -> recallable memory with the daemon running ({captures} captures): "
        f"median {statistics.median(delays) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
        f"(target: median < 2000 ms)"
    )


def history(home: Path, total: int, batch: int = 500) -> None:
    from memori_cli import Memori

    mem = Memori(conn=home / "history.db")
    rates: dict[int, float] = {}
    done = 0
    with mem.attribution(entity_id="bench"):
        while done < total:
            size = min(batch, total - done)
            for n in range(done, done + size):
                if n % 20 == 0:
                    mem.set_session(f"s{n // 20}")
                mem.add_messages(
                    [
                        {"role": "user", "content": f"I live in Town{n} now.", "name": "Kim"},
                        {"role": "assistant", "content": "Noted."},
                        {"role": "user", "content": f"I like food{n}.", "name": "Kim"},
                    ]
                )
            started = time.perf_counter()
            report = mem.pipeline().drain(prune=False)
            seconds = time.perf_counter() - started
            done += report.jobs_done
            rates[done] = report.jobs_done / seconds
            if report.jobs_done < size:
                raise SystemExit(f"only {report.jobs_done} of {size} jobs ran")
    memories_made = len(mem.memories(entity_id="bench", history=True, limit=10**9))
    mem.close()
    marks = sorted({min(1000, total), total})
    figures = ", ".join(
        f"{rates[min(rates, key=lambda d: abs(d - mark))]:.1f} jobs/s at {mark:,} jobs"
        for mark in marks
    )
    print(
        f"history of one entity ({total:,} jobs in batches of {batch}, {memories_made:,} "
        f"memories): {figures}"
    )


def tokens_per_second(model: Path) -> None:
    from memori_cli.augment.extract import ExtractionError, Turn
    from memori_cli.augment.llm import LlamaCppExtractor

    extractor = LlamaCppExtractor(model)
    turns = [
        Turn(
            i,
            "user",
            f"I live in {p}. I love tea and my sister Ana visits.",
            "2024-01-01T00:00:00+00:00",
            "Kim",
        )
        for i, p in enumerate(PLACES)
    ]
    try:
        extractor.extract(turns)
    except ExtractionError:  # a random-weight test model runs to max_tokens: still timed
        print("(the model's output was not valid JSON; generation is timed all the same)")
    rate = extractor.generated_tokens / max(extractor.generation_seconds, 1e-9)
    print(
        f"{extractor.name}: {extractor.generated_tokens} tokens in "
        f"{extractor.generation_seconds:.2f} s = {rate:.1f} tokens/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--per-session", type=int, default=20)
    parser.add_argument("--captures", type=int, default=30)
    parser.add_argument("--embedding", default=None, help="minilm, none or a .gguf path")
    parser.add_argument("--model", type=Path, default=None, help="a GGUF chat model")
    parser.add_argument(
        "--history", type=int, default=0, help="N jobs of one entity: jobs/s at 1k and at N"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEMORI_HOME"] = tmp
        if args.embedding:
            os.environ["MEMORI_EMBEDDING_MODEL"] = args.embedding
        os.environ.pop("MEMORI_CHAT_MODEL", None)
        if args.history:
            history(Path(tmp), args.history)
            return
        throughput(Path(tmp), args.sessions, args.per_session)
        latency(Path(tmp), args.captures)
    if args.model:
        tokens_per_second(args.model)


if __name__ == "__main__":
    main()
