"""What `memori serve` adds to each request, and what it sustains: the project's scripted
server (scripts/llm_server.py) called directly and through the proxy, in the same run.

Three processes: the upstream, `memori serve` (as people run it), and this one, the client.
Latency: N plain chat completions per row, the rows interleaved call by call (so drift in a
shared machine's load falls on all of them alike): direct, through the proxy with
``X-Memori-Inject: off``, and with injection on; "added" is a row's median (p99) less the
direct one's. One recall of the same queries, on the same store in this process, is the
yardstick for injection, with the whole injection a wrapped client does (``mem.llm.block``).
Throughput: 16 clients streaming at once for ``--seconds``, each request with a text of its
own, then every capture counted in the store (the proxy stopped first, so its writer has
stored everything): none may be lost or stored twice.

    .venv/bin/python scripts/bench_proxy.py [--calls 300] [--seconds 30] [--clients 16]
                                            [--sessions 300] [--embedding none|minilm]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_capture import TOPICS, seed

from memori_cli import Memori, embed
from memori_cli.attribution import Attribution
from memori_cli.capture.openai_api import ChatAdapter

HERE = Path(__file__).resolve().parent
MEMORI = str(Path(sys.executable).parent / "memori")


def ms(values: list[float]) -> tuple[float, float]:
    """(median, p99) in milliseconds."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not come up") from None
            time.sleep(0.1)


def seeded(db: Path, sessions: int, embedding: str) -> Memori:
    """A store holding earlier conversations (bench_capture's) for recall to search."""
    mem = Memori(db, embedder=None if embedding == "none" else embed.load(embedding))
    seed(mem, sessions)
    return mem


def latency(direct: str, proxy: str, calls: int) -> dict[str, list[float]]:
    rows: dict[str, tuple[str, dict[str, str]]] = {
        "direct": (direct, {}),
        "proxy, injection off": (proxy, {"X-Memori-Inject": "off"}),
        "proxy, injection on": (proxy, {}),
    }
    times: dict[str, list[float]] = {label: [] for label in rows}
    with httpx.Client(timeout=60, headers={"X-Memori-Entity": "bench"}) as client:
        for n in range(-20, calls):  # the first 20 warm up connections and caches
            text = f"What do I like about {TOPICS[n % 9]}? ({n})"
            body = {"model": "m", "messages": [{"role": "user", "content": text}]}
            for label, (base, headers) in rows.items():
                start = time.perf_counter()
                reply = client.post(base + "/chat/completions", json=body, headers=headers)
                took = time.perf_counter() - start
                reply.raise_for_status()
                if n >= 0:
                    times[label].append(took)
    return times


async def load(proxy: str, clients: int, seconds: float) -> tuple[int, int, list[float]]:
    """(requests answered in full, failed, their times) for ``clients`` streaming at once."""
    deadline = time.monotonic() + seconds
    done: list[float] = []
    failed = 0

    async def client(k: int) -> None:
        nonlocal failed
        async with httpx.AsyncClient(timeout=60, headers={"X-Memori-Entity": "bench"}) as http:
            i = 0
            while time.monotonic() < deadline:
                text = f"load {k}-{i}: what do I like about {TOPICS[i % 9]}?"
                body = {"model": "m", "stream": True,
                        "messages": [{"role": "user", "content": text}]}  # fmt: skip
                start = time.perf_counter()
                try:
                    async with http.stream("POST", proxy + "/chat/completions", json=body) as r:
                        data = b"".join([chunk async for chunk in r.aiter_bytes()])
                    if r.status_code != 200 or not data.rstrip().endswith(b"data: [DONE]"):
                        failed += 1
                    else:
                        done.append(time.perf_counter() - start)
                except httpx.HTTPError:
                    failed += 1
                i += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    return len(done), failed, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per latency row")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load runs")
    parser.add_argument("--clients", type=int, default=16, help="streaming clients at once")
    parser.add_argument("--sessions", type=int, default=300, help="earlier sessions stored")
    parser.add_argument("--embedding", default="none", help="none (default) or minilm")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="memori-bench-proxy-"))
    env = {**os.environ, "MEMORI_HOME": str(folder / "home"),
           "MEMORI_EMBEDDING_MODEL": args.embedding}  # fmt: skip
    os.environ["MEMORI_HOME"] = env["MEMORI_HOME"]  # this process's settings too: none
    db = folder / "memori.db"
    mem = seeded(db, args.sessions, args.embedding)
    up_port, proxy_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "llm_server.py"), "--port", str(up_port)],
        stdout=subprocess.DEVNULL,
    )
    direct = f"http://127.0.0.1:{up_port}/v1"
    proxy = subprocess.Popen(
        [MEMORI, "--db", str(db), "serve", "--upstream", direct, "--port", str(proxy_port),
         "--log-level", "warning"],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    via = f"http://127.0.0.1:{proxy_port}/v1"
    try:
        wait_until_up(direct + "/models", upstream, "scripts/llm_server.py")
        wait_until_up(f"http://127.0.0.1:{proxy_port}/memori/health", proxy, "memori serve")
        print(f"memori serve over scripts/llm_server.py: {args.calls} calls per row, "
              f"{args.sessions * 3} earlier messages, embedding {args.embedding}, "
              f"{os.cpu_count()} CPUs")  # fmt: skip
        times = latency(direct, via, args.calls)
        base = ms(times["direct"])
        for label, values in times.items():
            median, p99 = ms(values)
            added = (
                ""
                if label == "direct"
                else f"   added: median {median - base[0]:+6.2f} ms, p99 {p99 - base[1]:+6.2f} ms"
            )
            print(f"  {label:<22} median {median:6.2f} ms   p99 {p99:6.2f} ms{added}")
        # The yardsticks, in this process on the same store: one recall of the same query,
        # and the whole injection a wrapped client does (mem.llm.block: recall and selection).
        recalls: list[float] = []
        blocks: list[float] = []
        adapter = ChatAdapter("bench")
        who = Attribution("bench", "bench", "bench")
        for n in range(args.calls):
            text = f"What do I like about {TOPICS[n % 9]}? ({n})"
            start = time.perf_counter()
            mem.recall(text, 60, entity_id="bench", explain=True)
            recalls.append(time.perf_counter() - start)
            conversation = adapter.conversation({"messages": [{"role": "user", "content": text}]})
            start = time.perf_counter()
            mem.llm.block(who, conversation)
            blocks.append(time.perf_counter() - start)
        for label, values in (("one recall, in process", recalls),
                              ("injection, in process", blocks)):  # fmt: skip
            median, p99 = ms(values)
            print(f"  {label:<22} median {median:6.2f} ms   p99 {p99:6.2f} ms")

        answered, failed, took = asyncio.run(load(via, args.clients, args.seconds))
        median, p99 = ms(took or [0.0])
        print(f"\n{args.clients} clients streaming through the proxy for {args.seconds:g} s "
              f"(injection on): {answered} requests, {answered / args.seconds:.1f} req/s, "
              f"{failed} failed; per request median {median:.1f} ms, p99 {p99:.1f} ms")  # fmt: skip
    finally:
        proxy.send_signal(signal.SIGTERM)  # a clean stop: the writer stores what it holds
        code = proxy.wait(60)
        upstream.terminate()
        upstream.wait(10)
    rows: Any = mem.store.conn.execute(
        """SELECT role, count(*), count(DISTINCT content) FROM messages
           WHERE source = 'capture:serve:openai.chat' AND content LIKE '%load %' GROUP BY role"""
    ).fetchall()
    counts = {role: (n, distinct) for role, n, distinct in rows}
    users, distinct = counts.get("user", (0, 0))
    replies = counts.get("assistant", (0, 0))[0]
    lost = answered - distinct
    print(f"captures: {users} requests and {replies} replies stored for {answered} answered "
          f"(proxy exited {code}): {max(lost, 0)} lost, {users - distinct} duplicated")  # fmt: skip
    mem.close()
    if lost > 0 or users != distinct or replies != users:
        sys.exit(1)


if __name__ == "__main__":
    main()
