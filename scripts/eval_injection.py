#!/usr/bin/env python3
"""What the model sees: the injected memory block, measured on LoCoMo and LongMemEval.

Usage: .venv/bin/python scripts/eval_injection.py [--locomo PATH] [--longmemeval PATH]
           [--categories 3 4 ...] [--max-samples N] [--budgets 200 400 800]

Each sample is imported as one entity through the public API and augmented (the default
extractor and embedding model), then for every question the block is built exactly as a
wrapped call builds it (`mem.llm.select`, the question as the call's only user message) at
each budget. Reported per dataset:

- evidence rate: share of questions whose block holds an evidence turn, or a memory citing one;
- stale rate (LongMemEval knowledge-update questions): share of blocks that carry the old
  value, i.e. an evidence turn of an earlier session than the newest evidence, or a memory
  citing only such turns; also among the questions whose newest evidence a memory cites;
- share of the block (in estimated tokens) spent on questions (user turns that only ask, as
  `inject.is_question` defines them), on the assistant's words, and
  on duplicates (a memory together with its own source message);
- build time per block at the default budget (median, p95).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_locomo import evidence_ids, parse_date, session_turns, write_native

from memori_cli import Attribution, Memori
from memori_cli.capture import inject
from memori_cli.capture.core import Conversation
from memori_cli.store import memories as store_memories

KNOWLEDGE_UPDATE = "knowledge-update"


@dataclasses.dataclass
class Tally:
    """Per-dataset counts."""

    questions: int = 0
    with_evidence: dict[int, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    by_category: dict[str, list[int]] = dataclasses.field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )
    ku: int = 0
    ku_stale: int = 0
    ku_extracted: int = 0
    ku_extracted_stale: int = 0
    tokens: int = 0
    tokens_question: int = 0
    tokens_assistant: int = 0
    tokens_duplicate: int = 0
    empty_blocks: int = 0
    times: list[float] = dataclasses.field(default_factory=list)


def session_dates(sample: dict[str, Any]) -> dict[int, Any]:
    return {n: parse_date(d) for n, d, _ in session_turns(sample["conversation"])}


def old_and_new(evidence: list[str], dates: dict[int, Any]) -> tuple[set[str], set[str]]:
    """Evidence turns of the newest evidence session, and those of earlier sessions."""
    session = {e: int(e[1:].split(":")[0]) for e in evidence}
    newest = max(dates[s] for s in session.values())
    new = {e for e, s in session.items() if dates[s] == newest}
    return set(evidence) - new, new


def evaluate(
    name: str,
    data: list[dict[str, Any]],
    budgets: list[int],
    tmp: Path,
    default_budget: int,
    limit: int | None,
) -> Tally:
    tally = Tally()
    mem = Memori(conn=tmp / f"{name}.db")
    base = mem.llm.injection
    base = base if limit is None else dataclasses.replace(base, limit=limit)
    for sample in data:
        entity = sample["sample_id"]
        source = tmp / f"{entity}.jsonl"
        known = write_native(sample, source)
        started = time.perf_counter()
        if not mem.sessions(entity):
            mem.import_file(source, entity_id=entity)
            report = mem.augment()
            took = time.perf_counter() - started
            print(f"{name} {entity}: {len(known)} turns, {report.memories_created} memories, "
                  f"{took:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
        names = {str(k): v for k, v in sample.get("category_names", {}).items()}
        dates = session_dates(sample)
        attribution = Attribution(entity_id=entity)
        current = [row["id"] for row in mem.memories(entity_id=entity, limit=100_000)]
        cited = {
            source
            for row in store_memories.get_memories(mem.store, current).values()
            for source in row["source_ids"]
        }
        for qa in sample["qa"]:
            evidence = evidence_ids(qa.get("evidence", []), known)
            if not evidence:
                continue
            category = names.get(str(qa["category"]), str(qa["category"]))
            conversation = Conversation()
            conversation.add("user", qa["question"], new=True)
            tally.questions += 1
            for budget in budgets:
                settings = dataclasses.replace(base, budget_tokens=budget)
                began = time.perf_counter()
                chosen = mem.llm.select(attribution, conversation, settings)
                if budget == default_budget:
                    tally.times.append(time.perf_counter() - began)
                hit = any(set(c.hit.source_ids) & set(evidence) for c in chosen)
                tally.with_evidence[budget] += hit
                if budget != default_budget:
                    continue
                tally.by_category[category][0] += 1
                tally.by_category[category][1] += hit
                measure_block(tally, chosen)
                if category == KNOWLEDGE_UPDATE and len({e.split(":")[0] for e in evidence}) > 1:
                    old, new = old_and_new(evidence, dates)
                    stale = any(
                        set(c.hit.source_ids) & old and not set(c.hit.source_ids) & new
                        for c in chosen
                    )
                    tally.ku += 1
                    tally.ku_stale += stale
                    if new & cited:
                        tally.ku_extracted += 1
                        tally.ku_extracted_stale += stale
    mem.close()
    return tally


def measure_block(tally: Tally, chosen: list[inject.Injected]) -> None:
    if not chosen:
        tally.empty_blocks += 1
    message_ids = {c.hit.source_ids[0] for c in chosen if c.hit.kind == "message"}
    for item in chosen:
        cost = inject.estimate_tokens(item.line)
        tally.tokens += cost
        hit = item.hit
        if hit.kind == "message":
            if hit.role == "assistant":
                tally.tokens_assistant += cost
            elif inject.is_question(hit.content):
                tally.tokens_question += cost
        else:
            if "from the assistant" in item.line:
                tally.tokens_assistant += cost
            if set(hit.source_ids) & message_ids:
                tally.tokens_duplicate += cost


def report(name: str, tally: Tally, budgets: list[int], default_budget: int) -> None:
    n = tally.questions
    print(f"\n{name}: {n} questions")
    for budget in budgets:
        print(f"  block evidence rate at {budget} tokens: {tally.with_evidence[budget] / n:.3f}")
    for category, (count, hits) in sorted(tally.by_category.items()):
        print(f"    {category:<28} n={count:<4} evidence rate {hits / count:.3f}")
    if tally.ku:
        print(f"  stale rate (knowledge updates, {tally.ku} with old and new evidence): "
              f"{tally.ku_stale / tally.ku:.3f}")  # fmt: skip
        if tally.ku_extracted:
            print(f"  stale rate where a memory cites the new value ({tally.ku_extracted}): "
                  f"{tally.ku_extracted_stale / tally.ku_extracted:.3f}")  # fmt: skip
    total = tally.tokens or 1
    print(f"  block share at {default_budget} tokens: "
          f"questions {tally.tokens_question / total:.3f}, "
          f"assistant's words {tally.tokens_assistant / total:.3f}, "
          f"memory + its source {tally.tokens_duplicate / total:.3f}; "
          f"empty blocks {tally.empty_blocks / n:.3f}; "
          f"mean block {tally.tokens / n:.0f} tokens")  # fmt: skip
    times = sorted(tally.times)
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    print(f"  build time per block: median {statistics.median(times) * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locomo", type=Path, help="locomo-dev.json")
    parser.add_argument("--longmemeval", type=Path, help="longmemeval-dev.json")
    parser.add_argument("--categories", nargs="*", default=None,
                        help="LongMemEval categories (names or numbers; default all)")  # fmt: skip
    parser.add_argument("--max-samples", type=int, help="at most this many samples per dataset")
    parser.add_argument("--budgets", type=int, nargs="*", default=[200, 400, 800])
    parser.add_argument("--limit", type=int, help="lines per block (default: the setting's)")
    parser.add_argument("--only-kept", action="store_true",
                        help="with --keep: only the samples already indexed there")  # fmt: skip
    parser.add_argument("--keep", type=Path,
                        help="keep the augmented stores in this folder and reuse them next run "
                        "(only while extraction and embedding are unchanged)")  # fmt: skip
    args = parser.parse_args()
    default_budget = Memori(conn=":memory:").llm.injection.budget_tokens
    budgets = sorted(set(args.budgets) | {default_budget})
    sets: list[tuple[str, list[dict[str, Any]]]] = []
    if args.locomo:
        sets.append(("locomo", json.loads(args.locomo.read_text())))
    if args.longmemeval:
        data = json.loads(args.longmemeval.read_text())
        if args.categories:
            wanted = set(args.categories)
            data = [
                s for s in data
                if any(str(q["category"]) in wanted
                       or s["category_names"].get(str(q["category"])) in wanted
                       for q in s["qa"])
            ]  # fmt: skip
        sets.append(("longmemeval", data))
    if not sets:
        parser.error("give --locomo and/or --longmemeval")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in sets:
            data = data[: args.max_samples] if args.max_samples else data
            if args.only_kept and (folder / f"{name}.db").exists():
                kept = Memori(conn=folder / f"{name}.db", create=False)
                data = [sample for sample in data if kept.sessions(sample["sample_id"])]
                kept.close()
            tally = evaluate(name, data, budgets, folder, default_budget, args.limit)
            report(name, tally, budgets, default_budget)


if __name__ == "__main__":
    main()
