"""What mem.llm.register adds to each call: N chat completions against the local server
(scripts/llm_server.py) with the plain client and with the wrapped one, in the same run.

The wrapper's own time is measured exactly: the SDK's method is timed from inside the
wrapper, so "added" is the call's time minus the SDK's. With injection off that is capture
alone; with it on, the difference is injection, compared against one plain recall of the
same query.

    .venv/bin/python scripts/bench_capture.py [--calls 300] [--embedding minilm|none]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
from llm_server import LLMServer

from memori_cli import Memori, embed

TOPICS = ["tea", "hiking", "python", "Lisbon", "piano", "cats", "running", "budget", "books"]


def ms(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"median {statistics.median(values) * 1000:7.3f} ms   p99 {p99 * 1000:7.3f} ms"


def seed(mem: Memori, sessions: int) -> None:
    """Earlier conversations for recall to search (and their memories)."""
    with mem.attribution("bench"):
        for n in range(sessions):
            mem.set_session(f"old-{n}")
            topic = TOPICS[n % len(TOPICS)]
            mem.add_messages([
                {"role": "user", "content": f"I really like {topic}, session {n}."},
                {"role": "assistant", "content": f"Noted that you like {topic}."},
                {"role": "user", "content": f"My friend Sam also mentioned {topic} on day {n}."},
            ])  # fmt: skip
        mem.augment()


def timed(method: Any, inner: list[float]) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            inner.append(time.perf_counter() - start)

    return call


def run(client: openai.OpenAI, calls: int, stream: bool, **extra: Any) -> list[float]:
    totals = []
    for n in range(calls):
        messages = [{"role": "user", "content": f"What do I like about {TOPICS[n % 9]}? ({n})"}]
        start = time.perf_counter()
        result = client.chat.completions.create(
            model="m", messages=messages, stream=stream, **extra
        )
        if stream:
            for _ in result:
                pass
        totals.append(time.perf_counter() - start)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=500, help="earlier sessions stored")
    parser.add_argument("--embedding", default="minilm", help="minilm (default) or none")
    args = parser.parse_args()
    server = LLMServer().start()
    folder = Path(tempfile.mkdtemp(prefix="memori-bench-capture-"))
    embedder = None if args.embedding == "none" else embed.load(args.embedding)
    mem = Memori(folder / "memori.db", embedder=embedder)
    seed(mem, args.sessions)
    url = server.url + "/v1"
    print(f"{args.calls} calls per row, store with {args.sessions * 3} earlier messages, "
          f"embedding {args.embedding}")  # fmt: skip

    plain = openai.OpenAI(base_url=url, api_key="x")
    run(plain, 20, False)  # warm up the connection pool and the server
    for stream in (False, True):
        kind = "stream" if stream else "plain "
        print(f"\n[{kind.strip()}]")
        print(f"  unwrapped client           {ms(run(plain, args.calls, stream))}")
        with mem.attribution("bench", "bench"):
            inner: list[float] = []
            client = openai.OpenAI(base_url=url, api_key="x")
            client.chat.completions.create = timed(client.chat.completions.create, inner)  # type: ignore[method-assign]
            mem.llm.register(client)
            for label, inject in (("capture only", False), ("capture + injection", True)):
                inner.clear()
                totals = run(client, args.calls, stream, memori_inject=inject)
                if stream:  # the SDK's time is only the request; the stream is read after
                    print(f"  wrapped, {label:<18} {ms(totals)}")
                    continue
                added = [t - i for t, i in zip(totals, inner, strict=True)]
                print(f"  wrapped, {label:<18} {ms(totals)}")
                print(f"    added by memori          {ms(added)}")
            start = time.perf_counter()
            mem.llm.flush()
            print(f"  background writer caught up {time.perf_counter() - start:.3f} s after")
    recalls = []
    with mem.attribution("bench"):
        for n in range(args.calls):
            start = time.perf_counter()
            mem.recall(f"What do I like about {TOPICS[n % 9]}? ({n})", 16, explain=True)
            recalls.append(time.perf_counter() - start)
    print(f"\none recall of the same queries   {ms(recalls)}")
    stored = mem.store.conn.execute(
        "SELECT count(*) FROM messages WHERE source LIKE 'capture:%'"
    ).fetchone()[0]
    print(f"captured messages stored: {stored} (expected {args.calls * 2 * 2 * 2})")
    mem.close()
    server.stop()


if __name__ == "__main__":
    main()
