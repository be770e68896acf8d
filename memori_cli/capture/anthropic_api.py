"""Anthropic's messages API: ``messages.create`` and the ``messages.stream`` helper."""

from __future__ import annotations

from typing import Any

from .core import Conversation, add_to_system_text, get, text_of, tool_call_text


class MessagesAdapter:
    """``messages.create``/``messages.stream``: memories go into ``system``."""

    source = "anthropic.messages"

    def conversation(self, kwargs: dict[str, Any]) -> Conversation:
        """The messages' query, fingerprints and the turns after the last assistant one;
        ``tool_result`` blocks become tool turns."""
        messages = list(kwargs.get("messages") or [])
        last_assistant = max(
            (i for i, m in enumerate(messages) if get(m, "role") == "assistant"), default=-1
        )
        found = Conversation()
        for i, message in enumerate(messages):
            role, content, new = get(message, "role"), get(message, "content"), i > last_assistant
            if role not in ("user", "assistant"):
                continue
            if isinstance(content, (list, tuple)):
                for block in content:
                    if get(block, "type") == "tool_result":
                        found.add("tool", text_of(get(block, "content")), new=new)
                content = [b for b in content if get(b, "type") != "tool_result"]
            found.add(role, text_of(content), new=new)
        return found

    def inject(self, kwargs: dict[str, Any], block: str) -> dict[str, Any]:
        """A copy of the arguments with the block in ``system``."""
        return {**kwargs, "system": add_to_system_text(kwargs.get("system"), block)}

    def streaming(self, kwargs: dict[str, Any]) -> bool:
        """Whether the call streams."""
        return kwargs.get("stream") is True

    def reply(self, message: Any) -> str:
        """The message's text and tool uses."""
        parts = []
        for block in get(message, "content") or []:
            kind = get(block, "type")
            if kind == "text":
                parts.append(get(block, "text") or "")
            elif kind == "tool_use":
                parts.append(tool_call_text(get(block, "name"), get(block, "input")))
        return "\n".join(p for p in parts if p)

    def collector(self) -> MessagesCollector:
        """A collector of stream events."""
        return MessagesCollector()


class MessagesCollector:
    """The reply from raw stream events: text deltas and tool uses by block index."""

    def __init__(self) -> None:
        self.blocks: dict[int, list[str]] = {}  # index -> [kind, name, text]

    def add(self, event: Any) -> None:
        """Take one event."""
        kind, index = get(event, "type"), get(event, "index") or 0
        if kind == "content_block_start":
            block = get(event, "content_block")
            self.blocks[index] = [get(block, "type") or "", get(block, "name") or "", ""]
        elif kind == "content_block_delta":
            delta = get(event, "delta")
            entry = self.blocks.setdefault(index, ["text", "", ""])
            entry[2] += get(delta, "text") or get(delta, "partial_json") or ""

    def text(self) -> str:
        """The reply so far."""
        parts = []
        for _, (kind, name, text) in sorted(self.blocks.items()):
            if kind == "tool_use":
                parts.append(tool_call_text(name, text or "{}"))
            elif kind == "text":
                parts.append(text)
        return "\n".join(p for p in parts if p)
