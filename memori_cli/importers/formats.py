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


def messages(record: Any) -> list[RawMessage]:
    """``{"messages": [{"role", "content", ...}, ...]}``: one conversation per record."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise RecordError("expected an object with a 'messages' list")
    items = record["messages"]
    session = _conversation_session(record, items)
    out: list[RawMessage] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            out.append({"where": f"messages[{i}]", "error": "expected a JSON object"})
            continue
        message = dict(item, where=f"messages[{i}]")
        message.setdefault("session", session)
        out.append(_inherit(record, message))
    return out


_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
    "assistant": "assistant", "bard": "assistant", "model": "assistant", "bing": "assistant",
    "system": "system", "tool": "tool", "function": "tool", "observation": "tool",
    "function_call": "assistant",
}  # fmt: skip


def sharegpt(record: Any) -> list[RawMessage]:
    """ShareGPT: ``{"id"?, "conversations": [{"from", "value"}, ...]}``."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        raise RecordError("expected an object with a 'conversations' list")
    items = record["conversations"]
    session = _conversation_session(record, items)
    out: list[RawMessage] = []
    for i, turn in enumerate(items):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            out.append({"where": where, "error": "expected a JSON object"})
            continue
        speaker = turn.get("from")
        role = _SHAREGPT_ROLES.get(str(speaker).lower()) if isinstance(speaker, str) else None
        if role is None:
            out.append({"where": where, "error": f"field 'from': unknown speaker {speaker!r}"})
            continue
        message = {"role": role, "content": turn.get("value"), "session": session, "where": where}
        out.append(_inherit(record, message))
    return out


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
    if not isinstance(record, dict) or not isinstance(record.get("chat_messages"), list):
        raise RecordError("expected a conversation object with 'chat_messages'")
    session = record.get("uuid") or _conversation_session(record, record["chat_messages"])
    out: list[RawMessage] = []
    for i, msg in enumerate(record["chat_messages"]):
        where = f"chat_messages[{i}]"
        if not isinstance(msg, dict):
            out.append({"where": where, "error": "expected a JSON object"})
            continue
        sender = msg.get("sender")
        role = (
            {"human": "user", "assistant": "assistant"}.get(sender)
            if isinstance(sender, str)
            else None
        )
        if role is None:
            out.append({"where": where, "error": f"field 'sender': unknown sender {sender!r}"})
            continue
        text = msg.get("text")
        if not isinstance(text, str) or not text.strip():
            content = msg.get("content")
            blocks = content if isinstance(content, list) else []
            text = "\n".join(
                b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
        out.append(
            {
                "role": role,
                "content": text,
                "timestamp": msg.get("created_at"),
                "id": msg.get("uuid"),
                "session": session,
                "where": where,
            }
        )
    return out


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
