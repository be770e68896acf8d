"""LlamaCppExtractor: typed memories, triples and a summary from any local GGUF chat model.

:class:`ChatExtractor` holds what it shares with the endpoint extractor
(:mod:`memori_cli.augment.endpoint`): the prompt, chunking and reading the answer.

Output is constrained by a JSON schema (llama.cpp turns it into a grammar), and the schema
bounds every string and array: a model that rambles, or a test model with random weights,
still stops. llama-cpp-python's grammar lets raw control characters into strings, so output
is parsed with ``strict=False`` and then validated. Malformed output is retried once; then
:class:`ExtractionError` carries the raw text to the failed job.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ExtractionError
from .extract import (
    KINDS,
    NODE_TYPES,
    Extraction,
    MemoryDraft,
    TripleDraft,
    Turn,
)

#: Bump when the prompt or schema changes: memories record it.
PROMPT_VERSION = 1
SYSTEM_PROMPT = """You maintain the long-term memory of an assistant. Read the numbered \
conversation turns and return JSON with:
- "memories": durable things worth remembering about the people in it. Each has a "kind" \
(fact, preference, skill, attribute or event), "content" (one short third-person sentence \
that names the person, e.g. "Maya lives in Lisbon"; put dates in events), "about" (the \
person's name), "slot" (what attribute it sets, like lives_in, employer, diet, or "" if none), \
"confidence" (low, medium or high) and "turns" (the numbers of the turns it comes from).
- "triples": knowledge-graph edges: "subject", "subject_type", "predicate" (snake_case, like \
lives_in or sister_of), "object", "object_type".
- "summary": the conversation so far in at most three sentences, building on the previous \
summary if one is given.
Only use what the turns say. Skip small talk. Statements by the assistant are not facts \
about the user."""
CONFIDENCE = {"low": 0.4, "medium": 0.7, "high": 0.9}
#: Predicates that hold one object per subject at a time: a new object closes the old edge.
FUNCTIONAL = {
    "lives_in",
    "works_at",
    "employer",
    "occupation",
    "job",
    "name",
    "age",
    "partner",
    "spouse",
    "married_to",
    "manager",
    "birthday",
    "diet",
}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def schema(turns: int, *, max_items: int, max_chars: int) -> dict[str, Any]:
    """The output schema for a chunk of ``turns`` turns (every string and array bounded)."""

    def text(limit: int) -> dict[str, Any]:
        return {"type": "string", "maxLength": limit}

    memory = {
        "type": "object",
        "properties": {
            "kind": {"enum": list(KINDS)},
            "content": text(max_chars),
            "about": text(60),
            "slot": text(40),
            "confidence": {"enum": list(CONFIDENCE)},
            "turns": {
                "type": "array",
                "items": {"enum": list(range(1, turns + 1))},
                "maxItems": 4,
            },
        },
        "required": ["kind", "content", "about", "slot", "confidence", "turns"],
        "additionalProperties": False,
    }
    triple = {
        "type": "object",
        "properties": {
            "subject": text(60),
            "subject_type": {"enum": list(NODE_TYPES)},
            "predicate": text(40),
            "object": text(60),
            "object_type": {"enum": list(NODE_TYPES)},
        },
        "required": ["subject", "subject_type", "predicate", "object", "object_type"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "memories": {"type": "array", "items": memory, "maxItems": max_items},
            "triples": {"type": "array", "items": triple, "maxItems": max_items},
            "summary": text(max_chars * 3),
        },
        "required": ["memories", "triples", "summary"],
        "additionalProperties": False,
    }


class ChatModel:
    """A loaded llama.cpp model and the lock that keeps its context to one thread at a time."""

    def __init__(self, llama: Any, name: str):
        self.llama = llama
        self.name = name
        self.lock = threading.Lock()

    def close(self) -> None:
        """Free the llama.cpp model now."""
        with self.lock:
            close = getattr(self.llama, "close", None)
            if close is not None:
                close()


@functools.lru_cache(maxsize=2)
def load_chat_model(path: str, n_ctx: int = 4096) -> ChatModel:
    """Load a GGUF chat model once per process (and per context size)."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:  # pragma: no cover - the local extra is installed in tests
        raise ExtractionError(
            "llama-cpp-python is not installed: pip install 'memori-cli[local]'", ""
        ) from exc
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no model file at {file}")
    llama = Llama(str(file), n_ctx=n_ctx, verbose=False, seed=0)
    model = ChatModel(llama, model_version(file))
    # Free the model before interpreter shutdown tears down what llama-cpp-python's
    # finaliser needs (otherwise a TypeError is printed at exit).
    atexit.register(model.close)
    return model


def model_version(path: Path) -> str:
    """``name@hash``: the file name and a hash of its size and first megabyte."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
    return f"{path.name}@{digest.hexdigest()[:10]}"


class ChatExtractor:
    """What every chat-model extractor shares: the prompt, chunking to a context window, and
    reading (and validating) the model's JSON. Subclasses say how to count tokens and how
    to ask the model (:meth:`_ask`)."""

    name: str
    max_items: int
    max_chars: int
    max_tokens: int
    generated_tokens: int
    generation_seconds: float

    def extract(
        self,
        turns: list[Turn],
        *,
        summary: str | None = None,
        between: Callable[[], None] | None = None,
    ) -> Extraction:
        """Extract chunk by chunk; ``between`` runs before each chunk (lease renewal, stop)."""
        result = Extraction(summary=summary)
        for chunk in self._chunks(turns):
            if between is not None:
                between()
            data = self._ask(chunk, result.summary, between)
            self._collect(data, chunk, result)
        return result

    # -- prompting -----------------------------------------------------------------------
    def _messages(self, chunk: list[Turn], summary: str | None) -> list[dict[str, str]]:
        lines = [
            f"[{i}] {turn.speaker} ({turn.role}, {turn.created_at[:10]}): {turn.content}"
            for i, turn in enumerate(chunk, start=1)
        ]
        previous = f"Previous summary: {summary}\n\n" if summary else ""
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": previous + "\n".join(lines)},
        ]

    def _tokens(self, text: str) -> int:
        raise NotImplementedError

    def _n_ctx(self) -> int:
        raise NotImplementedError

    def _system_tokens(self) -> int:
        """What the system prompt takes of the context."""
        return self._tokens(SYSTEM_PROMPT)

    def _ask(
        self, chunk: list[Turn], summary: str | None, between: Callable[[], None] | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _chunks(self, turns: list[Turn]) -> Iterator[list[Turn]]:
        """Consecutive turns that fit the context with the prompt and the longest answer."""
        n_ctx = self._n_ctx()
        budget = n_ctx - self.max_tokens - self._system_tokens() - 200
        if budget < 64:
            raise ExtractionError(
                f"the model's context ({n_ctx} tokens) is too small for extraction", ""
            )
        chunk: list[Turn] = []
        used = 0
        for turn in turns:
            cost = self._tokens(turn.content) + 16
            if cost > budget:  # one huge message: keep its start
                ratio = budget / cost
                turn = Turn(
                    turn.id,
                    turn.role,
                    turn.content[: int(len(turn.content) * ratio)],
                    turn.created_at,
                    turn.name,
                )
                cost = budget
            if chunk and used + cost > budget:
                yield chunk
                chunk, used = [], 0
            chunk.append(turn)
            used += cost
        if chunk:
            yield chunk

    # -- reading the answer --------------------------------------------------------------
    def _collect(self, data: dict[str, Any], chunk: list[Turn], result: Extraction) -> None:
        for item in data["memories"]:
            if not isinstance(item, dict) or item.get("kind") not in KINDS:
                continue
            content = _text(item.get("content"))
            if not content:
                continue
            sources = [
                chunk[n - 1]
                for n in item.get("turns") or []
                if isinstance(n, int) and 1 <= n <= len(chunk)
            ]
            sources = sources or chunk
            result.memories.append(
                MemoryDraft(
                    kind=item["kind"],
                    content=content,
                    about=_text(item.get("about")) or sources[0].speaker,
                    source_ids=sorted({turn.id for turn in sources}),
                    confidence=CONFIDENCE.get(item.get("confidence", ""), 0.7),
                    slot=_text(item.get("slot")).lower().replace(" ", "_") or None,
                )
            )
        for item in data["triples"]:
            if not isinstance(item, dict):
                continue
            fields = {
                key: _text(item.get(key))
                for key in ("subject", "predicate", "object", "subject_type", "object_type")
            }
            if not (fields["subject"] and fields["predicate"] and fields["object"]):
                continue
            predicate = re.sub(r"\W+", "_", fields["predicate"].lower()).strip("_") or "related_to"
            result.triples.append(
                TripleDraft(
                    subject=fields["subject"],
                    predicate=predicate,
                    object=fields["object"],
                    subject_type=fields["subject_type"]
                    if fields["subject_type"] in NODE_TYPES
                    else "thing",
                    object_type=fields["object_type"]
                    if fields["object_type"] in NODE_TYPES
                    else "thing",
                    source_ids=[turn.id for turn in chunk],
                    functional=predicate in FUNCTIONAL,
                )
            )
        summary = _text(data.get("summary"))
        if summary:
            result.summary = summary


class LlamaCppExtractor(ChatExtractor):
    """Extraction by a local GGUF chat model, chunked to its context window."""

    def __init__(
        self,
        model: str | Path | ChatModel,
        *,
        n_ctx: int = 4096,
        max_items: int = 8,
        max_chars: int = 160,
        max_tokens: int = 1024,
    ):
        self.model = model if isinstance(model, ChatModel) else load_chat_model(str(model), n_ctx)
        self.name = f"llm:{self.model.name}/p{PROMPT_VERSION}"
        self.max_items = max_items
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        #: Tokens generated and seconds spent generating, for benchmarks.
        self.generated_tokens = 0
        self.generation_seconds = 0.0

    def _tokens(self, text: str) -> int:
        return len(self.model.llama.tokenize(text.encode("utf-8", "replace"), add_bos=False))

    def _n_ctx(self) -> int:
        return int(self.model.llama.n_ctx())

    def _ask(
        self, chunk: list[Turn], summary: str | None, between: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        response_format = {
            "type": "json_object",
            "schema": schema(len(chunk), max_items=self.max_items, max_chars=self.max_chars),
        }
        raw = ""
        for attempt in range(2):  # malformed output is retried once, with another seed
            started = time.perf_counter()
            with self.model.lock:
                response = self.model.llama.create_chat_completion(
                    messages=self._messages(chunk, summary),
                    response_format=response_format,
                    max_tokens=self.max_tokens,
                    temperature=0.2 if attempt == 0 else 0.7,
                    seed=attempt,
                )
            self.generation_seconds += time.perf_counter() - started
            self.generated_tokens += int(response.get("usage", {}).get("completion_tokens", 0))
            raw = response["choices"][0]["message"].get("content") or ""
            data = parse_answer(raw)
            if data is not None:
                return data
        raise ExtractionError("the model's output is not valid extraction JSON (twice)", raw)


def parse_answer(raw: str) -> dict[str, Any] | None:
    """The model's answer as extraction data, or None when it is not: JSON (inside a Markdown
    code fence too, as models without constrained output like to write it) holding a
    ``memories`` and a ``triples`` list."""
    text = raw.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text, strict=False)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and all(
        isinstance(data.get(key), list) for key in ("memories", "triples")
    ):
        return data
    return None


def _text(value: Any) -> str:
    """A string from the model, control characters removed, spaces collapsed."""
    if not isinstance(value, str):
        return ""
    return " ".join(_CONTROL.sub(" ", value).split())
