"""OpenAI's chat completions (also llama-cpp-python's, which speaks the same dicts) and the
Responses API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .core import Conversation, add_to_system_text, get, text_of, tool_call_text


def _is_true(value: Any) -> bool:
    return value is True


class ChatAdapter:
    """``chat.completions.create`` (and ``Llama.create_chat_completion``)."""

    def __init__(self, source: str):
        self.source = source
        #: Counts tokens with the model's tokenizer (set for llama-cpp clients).
        self.count_tokens: Callable[[str], int] | None = None

    def conversation(self, kwargs: dict[str, Any]) -> Conversation:
        """The messages' query, fingerprints and the turns after the last assistant one."""
        messages = list(kwargs.get("messages") or [])
        last_assistant = max(
            (i for i, m in enumerate(messages) if get(m, "role") == "assistant"), default=-1
        )
        found = Conversation()
        for i, message in enumerate(messages):
            role = get(message, "role")
            if role in ("user", "tool", "assistant"):
                found.add(
                    role, text_of(get(message, "content")), new=i > last_assistant,
                    name=get(message, "name"),
                )  # fmt: skip
        return found

    def inject(self, kwargs: dict[str, Any], block: str) -> dict[str, Any]:
        """A copy of the arguments whose first system message carries the block."""
        messages = list(kwargs.get("messages") or [])
        first = messages[0] if messages else None
        if isinstance(first, dict) and first.get("role") in ("system", "developer"):
            messages[0] = {**first, "content": _with_block(first.get("content"), block)}
        else:
            messages.insert(0, {"role": "system", "content": block})
        return {**kwargs, "messages": messages}

    def streaming(self, kwargs: dict[str, Any]) -> bool:
        """Whether the call streams."""
        return _is_true(kwargs.get("stream"))

    def reply(self, result: Any) -> str:
        """The reply's text and tool calls."""
        choices = get(result, "choices") or []
        if not choices:
            return ""
        message = get(choices[0], "message")
        parts = [text_of(get(message, "content"))]
        for call in get(message, "tool_calls") or []:
            function = get(call, "function")
            parts.append(tool_call_text(get(function, "name"), get(function, "arguments")))
        return "\n".join(p for p in parts if p)

    def collector(self) -> ChatCollector:
        """A collector of streamed chunks."""
        return ChatCollector()


def _with_block(content: Any, block: str) -> Any:
    if isinstance(content, list):
        return [*content, {"type": "text", "text": block}]
    return add_to_system_text(content, block)


class ChatCollector:
    """The reply from ``chat.completion.chunk`` deltas: text and tool calls by index."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, list[str]] = {}

    def add(self, chunk: Any) -> None:
        """Take one chunk."""
        for choice in get(chunk, "choices") or []:
            if (get(choice, "index") or 0) != 0:
                continue
            delta = get(choice, "delta") or {}
            content = get(delta, "content")
            if isinstance(content, str):
                self.parts.append(content)
            for call in get(delta, "tool_calls") or []:
                name_args = self.calls.setdefault(get(call, "index") or 0, ["", ""])
                function = get(call, "function") or {}
                name_args[0] += get(function, "name") or ""
                name_args[1] += get(function, "arguments") or ""

    def text(self) -> str:
        """The reply so far."""
        parts = ["".join(self.parts)]
        parts += [tool_call_text(n, a) for _, (n, a) in sorted(self.calls.items())]
        return "\n".join(p for p in parts if p)


class ResponsesAdapter:
    """``responses.create``: memories go into ``instructions``."""

    source = "openai.responses"

    def conversation(self, kwargs: dict[str, Any]) -> Conversation:
        """The input's query, fingerprints and the turns after the last assistant item."""
        items = kwargs.get("input")
        found = Conversation()
        if isinstance(items, str):
            found.add("user", items, new=True)
            return found
        items = list(items or [])
        last_assistant = max(
            (
                i
                for i, item in enumerate(items)
                if get(item, "role") == "assistant" or get(item, "type") == "function_call"
            ),
            default=-1,
        )
        for i, item in enumerate(items):
            kind, role = get(item, "type"), get(item, "role")
            if kind == "function_call_output":
                found.add("tool", text_of(get(item, "output")), new=i > last_assistant)
            elif role in ("user", "assistant"):
                found.add(role, text_of(get(item, "content")), new=i > last_assistant)
        return found

    def inject(self, kwargs: dict[str, Any], block: str) -> dict[str, Any]:
        """A copy of the arguments with the block in ``instructions``."""
        return {**kwargs, "instructions": add_to_system_text(kwargs.get("instructions"), block)}

    def streaming(self, kwargs: dict[str, Any]) -> bool:
        """Whether the call streams."""
        return _is_true(kwargs.get("stream"))

    def reply(self, response: Any) -> str:
        """The response's text and function calls."""
        parts = []
        for item in get(response, "output") or []:
            kind = get(item, "type")
            if kind == "message":
                parts.append(
                    "".join(
                        get(part, "text") or ""
                        for part in get(item, "content") or []
                        if get(part, "type") == "output_text"
                    )
                )
            elif kind == "function_call":
                parts.append(tool_call_text(get(item, "name"), get(item, "arguments")))
        return "\n".join(p for p in parts if p)

    def collector(self) -> ResponsesCollector:
        """A collector of stream events."""
        return ResponsesCollector(self)


class ResponsesCollector:
    """The reply from Responses stream events: text deltas, or the completed response."""

    def __init__(self, adapter: ResponsesAdapter):
        self.adapter = adapter
        self.parts: list[str] = []
        self.final: str | None = None

    def add(self, event: Any) -> None:
        """Take one event."""
        kind = get(event, "type")
        if kind == "response.output_text.delta":
            self.parts.append(get(event, "delta") or "")
        elif kind == "response.completed":
            self.final = self.adapter.reply(get(event, "response"))

    def text(self) -> str:
        """The reply so far."""
        return self.final if self.final is not None else "".join(self.parts)
