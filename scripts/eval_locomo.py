#!/usr/bin/env python3
"""Evidence-retrieval evaluation on LoCoMo, computed exactly as shared/eval/README.md defines.

Usage: .venv/bin/python scripts/eval_locomo.py PATH/locomo-dev.json [PATH/longmemeval-dev.json ...]
           [--samples conv-26 ...] [--store FILE|postgresql://... [--only-kept]]

Every file given is evaluated in the same run and printed as its own tables (LongMemEval's
file has the same layout; its categories are named in each sample's ``category_names``).

Each conversation is imported as one entity through the public API (native JSONL: id = dia_id,
name = speaker, session and timestamp from the session date), augmentation runs to completion,
and every question is recalled with limit=20 (also with graph candidates on, and messages
only). Prints R@5/10/20, All@10 and NDCG@10 per category and overall (categories 1-4),
category 5 on its own row, a 95% bootstrap interval (over questions) on the overall R@10,
recall latency, and the same metrics for an FTS5-bm25 baseline over "[date] Speaker: text"
computed in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memori_cli import Memori, recall
from memori_cli.recall.query import STOPWORDS
from memori_cli.store.backend import is_postgres_url

K_MAX = 20
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


def session_turns(conversation: dict[str, Any]) -> list[tuple[int, str, list[dict[str, Any]]]]:
    """(session number, date text, turns) for every session that has turns."""
    out = []
    for key, turns in conversation.items():
        match = re.fullmatch(r"session_(\d+)", key)
        if match and isinstance(turns, list) and turns:
            number = int(match.group(1))
            out.append((number, conversation.get(f"{key}_date_time", ""), turns))
    return sorted(out)


def parse_date(text: str) -> datetime.datetime:
    """LoCoMo's "1:56 pm on 8 May, 2023" (LongMemEval's month is lower-case) as UTC."""
    moment = datetime.datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")
    return moment.replace(tzinfo=datetime.timezone.utc)


def turn_text(turn: dict[str, Any]) -> str:
    """A turn's words, with the caption of a shared photo (never the image-search `query`)."""
    text = str(turn.get("text", ""))
    if turn.get("blip_caption"):
        text += f" [shares a photo: {turn['blip_caption']}]"
    return text


def write_native(sample: dict[str, Any], path: Path) -> set[str]:
    """The conversation as native JSONL; returns every dia_id."""
    ids = set()
    with open(path, "w", encoding="utf-8") as handle:
        for number, date_text, turns in session_turns(sample["conversation"]):
            start = parse_date(date_text)
            for i, turn in enumerate(turns):
                ids.add(turn["dia_id"])
                # LongMemEval's speakers are the roles themselves; LoCoMo's are two people.
                speaker = turn["speaker"]
                is_role = speaker in ("user", "assistant")
                record = {
                    "role": speaker if is_role else "user",
                    **({} if is_role else {"name": speaker}),
                    "content": turn_text(turn),
                    "id": turn["dia_id"],
                    "session": f"session_{number}",
                    "timestamp": (start + datetime.timedelta(seconds=i)).isoformat(),
                }
                handle.write(json.dumps(record) + "\n")
    return ids


def evidence_ids(raw: list[Any], known: set[str]) -> list[str]:
    """Split, repair ("D:11:26" -> D11:26, "D30:05" -> D30:5), keep known ids, drop repeats."""
    out: list[str] = []
    for item in raw:
        for part in re.split(r"[;,\s]+", str(item)):
            match = re.fullmatch(r"D:?(\d+):0*(\d+)", part.strip())
            if match:
                dia = f"D{int(match.group(1))}:{int(match.group(2))}"
                if dia in known and dia not in out:
                    out.append(dia)
    return out


def flatten(ranked_sources: list[list[str]], k: int) -> list[str]:
    out: list[str] = []
    for sources in ranked_sources:
        for source in sources:
            if source not in out:
                out.append(source)
    return out[:k]


def score(retrieved: list[str], evidence: list[str]) -> dict[str, float]:
    gold = set(evidence)
    metrics = {f"R@{k}": len(gold & set(retrieved[:k])) / len(gold) for k in (5, 10, 20)}
    metrics["All@10"] = float(gold <= set(retrieved[:10]))
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(retrieved[:10]) if d in gold)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(gold), 10)))
    metrics["NDCG@10"] = dcg / ideal
    return metrics


class Baseline:
    """FTS5 bm25 over "[date] Speaker: text" (porter stemming, stopwords dropped, words OR-ed):
    the README's first baseline, over the same turn text memori gets. Without photo captions
    it reproduces the README's 0.622 on the development split."""

    def __init__(self, sample: dict[str, Any]):
        import sqlean

        self.conn = sqlean.connect(":memory:")
        self.conn.execute(
            "CREATE VIRTUAL TABLE t USING fts5(dia_id UNINDEXED, body, tokenize='porter unicode61')"
        )
        for _, date_text, turns in session_turns(sample["conversation"]):
            self.conn.executemany(
                "INSERT INTO t VALUES (?, ?)",
                [(t["dia_id"], f"[{date_text}] {t['speaker']}: {turn_text(t)}") for t in turns],
            )

    def __call__(self, question: str) -> list[list[str]]:
        words = list(dict.fromkeys(re.findall(r"\w+", question.lower())))
        words = [w for w in words if w not in STOPWORDS] or words
        if not words:
            return []
        rows = self.conn.execute(
            "SELECT dia_id FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT ?",
            (" OR ".join(f'"{w}"' for w in words), K_MAX),
        ).fetchall()
        return [[r[0]] for r in rows]


def evaluate(
    data: list[dict[str, Any]],
    *,
    quiet: bool = False,
    store: Path | str | None = None,
    ranking: dict[str, Any] | None = None,
) -> dict[str, Any]:
    results: dict[str, dict[int, list[dict[str, float]]]] = {
        "memori": defaultdict(list), "memori, graph on": defaultdict(list),
        "memori, messages only": defaultdict(list), "fts5 baseline": defaultdict(list),
    }  # fmt: skip
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        mem = Memori(conn=store or Path(tmp) / "eval.db")
        mem.config.ranking = dataclasses.replace(mem.config.ranking, **(ranking or {}))
        graph_on = dataclasses.replace(mem.config.ranking, graph_weight=1.0)
        for sample in data:
            entity = sample["sample_id"]
            source = Path(tmp) / f"{entity}.jsonl"
            known = write_native(sample, source)
            start = time.perf_counter()
            # A kept store (--store) already holding the sample is reused as it is.
            embedded = 0
            if not mem.sessions(entity):
                mem.import_file(source, entity_id=entity)
                embedded = mem.augment().embedded
            if not quiet:
                print(f"{entity}: {len(known)} turns, {embedded} embedded in "
                      f"{time.perf_counter() - start:.1f} s", file=sys.stderr)  # fmt: skip
            baseline = Baseline(sample)
            retrievers: dict[str, Callable[[str], list[list[str]]]] = {
                "memori": lambda q, e=entity: [
                    h.source_ids for h in mem.recall(q, K_MAX, entity_id=e)
                ],
                "memori, graph on": lambda q, e=entity: [
                    h.source_ids
                    for h in recall.recall(
                        mem.store,
                        recall.RecallRequest(q, e, limit=K_MAX),
                        mem._query_vector,
                        config=graph_on,
                    )
                ],
                "memori, messages only": lambda q, e=entity: [
                    h.source_ids for h in mem.recall(q, K_MAX, entity_id=e, memories=False)
                ],
                "fts5 baseline": baseline,
            }
            mem.recall("warm-up query", K_MAX, entity_id=entity)
            for qa in sample["qa"]:
                evidence = evidence_ids(qa.get("evidence", []), known)
                if not evidence:
                    continue
                for name, retrieve in retrievers.items():
                    began = time.perf_counter()
                    ranked = retrieve(qa["question"])
                    if name == "memori":
                        latencies.append(time.perf_counter() - began)
                    results[name][qa["category"]].append(score(flatten(ranked, K_MAX), evidence))
        mem.close()
    return {"results": results, "latencies": latencies}


def summarise(
    per_category: dict[int, list[dict[str, float]]],
    names: dict[str, str] | None = None,
) -> list[tuple[str, int, dict[str, float]]]:
    """Rows per category and overall. ``names`` are a dataset's own category names
    (LongMemEval's ``category_names``): then every category is pooled, else LoCoMo's 1-4."""
    rows = []
    keys = ("R@5", "R@10", "R@20", "All@10", "NDCG@10")
    label_of = {int(k): v for k, v in names.items()} if names else CATEGORIES
    for category in sorted(per_category):
        items = per_category[category]
        rows.append((f"{category} {label_of.get(category, '')}"[:26], len(items),
                     {k: statistics.fmean(m[k] for m in items) for k in keys}))  # fmt: skip
    pooled_categories = sorted(per_category) if names else [1, 2, 3, 4]
    pooled = [m for c in pooled_categories for m in per_category.get(c, [])]
    if pooled:
        label = "overall" if names else "overall (1-4)"
        rows.append((label, len(pooled), {k: statistics.fmean(m[k] for m in pooled) for k in keys}))
    return rows


def bootstrap(values: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of the mean of ``values``, resampled ``rounds`` times."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def pooled_values(
    per_category: dict[int, list[dict[str, float]]], names: dict[str, str] | None, key: str
) -> list[float]:
    categories = sorted(per_category) if names else [1, 2, 3, 4]
    return [m[key] for c in categories for m in per_category.get(c, [])]


def store_target(value: str) -> Path | str:
    """``--store``: a file, or a PostgreSQL URL kept as given (a Path would fold its ``//``)."""
    return value if is_postgres_url(value) else Path(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", type=Path, nargs="+",
                        help="dataset JSON files (e.g. ../shared/eval/locomo-dev.json "
                        "../shared/eval/longmemeval-dev.json)")  # fmt: skip
    parser.add_argument("--samples", nargs="*", help="only these sample_ids")
    parser.add_argument("--store", type=store_target,
                        help="keep the augmented store in this file (or PostgreSQL database, "
                        "by URL) and reuse the samples it holds (only while extraction and "
                        "embedding are unchanged)")  # fmt: skip
    parser.add_argument("--only-kept", action="store_true",
                        help="with --store: only the samples already in it")  # fmt: skip
    parser.add_argument("--set", dest="ranking", action="append", default=[], metavar="KEY=VALUE",
                        help="a ranking weight for this run (RankingConfig field), "
                        "repeatable")  # fmt: skip
    args = parser.parse_args()
    ranking: dict[str, Any] = {}
    for item in args.ranking:
        key, _, value = item.partition("=")
        for kind in (int, float, str):
            try:
                ranking[key.strip()] = kind(value)
                break
            except ValueError:
                continue
    for path in args.paths:
        data = json.loads(path.read_text())
        if args.samples:
            data = [s for s in data if s["sample_id"] in args.samples]
        if args.only_kept and args.store and (isinstance(args.store, str) or args.store.exists()):
            kept = Memori(conn=args.store, create=False)
            data = [s for s in data if kept.sessions(s["sample_id"])]
            kept.close()
        if data:
            report(path, data, evaluate(data, store=args.store, ranking=ranking))


def report(path: Path, data: list[dict[str, Any]], outcome: dict[str, Any]) -> None:
    """One dataset's tables: per category and overall for each retriever, then latency."""
    names = next((s["category_names"] for s in data if s.get("category_names")), None)
    print(f"\n=== {path.name}: {len(data)} samples ===")
    for name, per_category in outcome["results"].items():
        low, high = bootstrap(pooled_values(per_category, names, "R@10"))
        print(f"\n{name}  (overall R@10 95% CI {low:.3f}-{high:.3f})")
        print(
            f"{'category':<28}{'n':>5}"
            + "".join(f"{k:>9}" for k in ("R@5", "R@10", "R@20", "All@10", "NDCG@10"))
        )
        for label, n, metrics in summarise(per_category, names):
            print(f"{label:<28}{n:>5}" + "".join(f"{v:>9.3f}" for v in metrics.values()))
    lat = sorted(outcome["latencies"])
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    print(f"\nmemori recall latency: median {statistics.median(lat) * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms over {len(lat)} queries")  # fmt: skip


if __name__ == "__main__":
    main()
