"""Transcript formats: each converter turns one record into raw messages.

A raw message is a dict with ``role`` and ``content`` and optionally ``name``, ``session``,
``timestamp``, ``id``, ``entity``, ``process``; ``where`` names its place inside the record for
error messages (``messages[3]``). Field validation happens once, in :mod:`.normalize`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

RawMessage = dict[str, Any]


class RecordError(ValueError):
    """A record (line or array element) that cannot be converted; the message says why."""


def _conversation_session(record: dict[str, Any], messages: list[Any]) -> str | None:
    """The session a conversation record names, else a stable one derived from its start."""
    for key in ("session", "conversation_id", "id", "uuid"):
        value = record.get(key)
        if isinstance(value, (str, int)) and str(value).strip():
            return str(value)
    if not messages:
        return None
    # Stable under appending messages: derived from the first two only.
    head = json.dumps(messages[:2], sort_keys=True, default=str).encode("utf-8", "surrogatepass")
    return "conv-" + hashlib.sha256(head).hexdigest()[:16]


def _inherit(record: dict[str, Any], message: RawMessage) -> RawMessage:
    for key in ("entity", "process"):
        if key in record and key not in message:
            message[key] = record[key]
    return message


def native(record: Any) -> list[RawMessage]:
    """A native JSONL line: one message, or ``{"messages": [...]}`` (a whole conversation)."""
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record and "role" not in record:
        return messages(record)
    return [dict(record, where="")]


def _turns(
    record: Any, key: str, convert: Callable[[dict[str, Any]], RawMessage | str]
) -> list[RawMessage]:
    """The messages of a conversation record whose turns are the list ``record[key]``.

    ``convert`` maps one turn to a raw message, or to an error string naming what is wrong.
    """
    if not isinstance(record, dict) or not isinstance(record.get(key), list):
        raise RecordError(f"expected an object with a '{key}' list")
    items = record[key]
    session = _conversation_session(record, items)
    out: list[RawMessage] = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        converted = convert(item) if isinstance(item, dict) else "expected a JSON object"
        if isinstance(converted, str):
            out.append({"where": where, "error": converted})
            continue
        converted["where"] = where
        converted.setdefault("session", session)
        out.append(_inherit(record, converted))
    return out


def messages(record: Any) -> list[RawMessage]:
    """``{"messages": [{"role", "content", ...}, ...]}``: one conversation per record."""
    return _turns(record, "messages", dict)


_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
    "assistant": "assistant", "bard": "assistant", "model": "assistant", "bing": "assistant",
    "system": "system", "tool": "tool", "function": "tool", "observation": "tool",
    "function_call": "assistant",
}  # fmt: skip


def sharegpt(record: Any) -> list[RawMessage]:
    """ShareGPT: ``{"id"?, "conversations": [{"from", "value"}, ...]}``."""

    def convert(turn: dict[str, Any]) -> RawMessage | str:
        speaker = turn.get("from")
        role = _SHAREGPT_ROLES.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            return f"field 'from': unknown speaker {speaker!r}"
        return {"role": role, "content": turn.get("value")}

    return _turns(record, "conversations", convert)


def chatgpt(record: Any) -> list[RawMessage]:
    """A ChatGPT export conversation: the ``current_node`` branch of its ``mapping`` tree."""
    if not isinstance(record, dict) or not isinstance(record.get("mapping"), dict):
        raise RecordError("expected a conversation object with a 'mapping'")
    mapping: dict[str, Any] = record["mapping"]
    node_id = record.get("current_node")
    if node_id is None:  # older exports: the last leaf
        leaves = [k for k, v in mapping.items() if isinstance(v, dict) and not v.get("children")]
        node_id = leaves[-1] if leaves else None
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    while isinstance(node_id, str) and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        node = mapping[node_id]
        if not isinstance(node, dict):
            break
        chain.append(node)
        node_id = node.get("parent")
    session = str(record.get("conversation_id") or record.get("id") or "") or None
    out: list[RawMessage] = []
    for node in reversed(chain):
        msg = node.get("message")
        if not isinstance(msg, dict):
            continue
        metadata = msg.get("metadata") or {}
        if isinstance(metadata, dict) and metadata.get("is_visually_hidden_from_conversation"):
            continue
        author = msg.get("author") or {}
        role = author.get("role") if isinstance(author, dict) else None
        text = _chatgpt_text(msg.get("content"))
        if not text or role not in ("user", "assistant", "system", "tool"):
            continue
        out.append(
            {
                "role": role,
                "content": text,
                "name": author.get("name") if role == "tool" else None,
                "timestamp": msg.get("create_time"),
                "id": msg.get("id") or node.get("id"),
                "session": session or _conversation_session(record, []),
                "where": f"mapping[{node.get('id')!r}]",
            }
        )
    if session is None and out:
        fallback = _conversation_session({}, [m["content"] for m in out])
        for m in out:
            m["session"] = fallback
    return out


def _chatgpt_text(content: Any) -> str:
    if not isinstance(content, dict):
        return ""
    parts = content.get("parts")
    if isinstance(parts, list):
        texts = [p for p in parts if isinstance(p, str)]
        texts += [
            p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return "\n".join(t for t in texts if t.strip())
    text = content.get("text")
    return text if isinstance(text, str) else ""


def claude(record: Any) -> list[RawMessage]:
    """A Claude.ai export conversation: ``chat_messages`` with ``sender`` human/assistant."""

    def convert(msg: dict[str, Any]) -> RawMessage | str:
        sender = msg.get("sender")
        role = (
            {"human": "user", "assistant": "assistant"}.get(sender)
            if isinstance(sender, str)
            else None
        )
        if role is None:
            return f"field 'sender': unknown sender {sender!r}"
        text = msg.get("text")
        if not isinstance(text, str) or not text.strip():
            content = msg.get("content")
            blocks = content if isinstance(content, list) else []
            text = "\n".join(
                b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
        return {
            "role": role,
            "content": text,
            "timestamp": msg.get("created_at"),
            "id": msg.get("uuid"),
        }

    return _turns(record, "chat_messages", convert)


CONVERTERS: dict[str, Callable[[Any], list[RawMessage]]] = {
    "native": native,
    "messages": messages,
    "sharegpt": sharegpt,
    "chatgpt": chatgpt,
    "claude": claude,
}
FORMATS = tuple(CONVERTERS)


def sniff(record: Any) -> str | None:
    """The format a sample record looks like, or None."""
    if not isinstance(record, dict):
        return None
    if "mapping" in record:
        return "chatgpt"
    if "chat_messages" in record:
        return "claude"
    if isinstance(record.get("conversations"), list):
        return "sharegpt"
    if isinstance(record.get("messages"), list):
        return "messages"
    if "role" in record or "content" in record:
        return "native"
    return None
