"""A local HTTP server that speaks the OpenAI (chat completions, Responses) and Anthropic
(messages) wire formats, JSON and server-sent events, for tests and benchmarks.

Replies are deterministic: ``Echo: <last user text>``. A user text containing "weather"
gets a tool call first; a tool result then gets "It is sunny in Paris.". A user text containing
"essay" gets :data:`LONG_REPLY`, several paragraphs of Markdown (for terminal rendering).
``fail_next`` makes the next requests answer 500; ``error_after`` makes a stream send an error
event after that many text chunks; ``chunk_delay`` waits that many seconds before each
streamed chunk (a slow model, to interrupt mid-reply). For extraction through an endpoint:
``chat_replies`` scripts the content of the next chat completions (popped in order),
``reply_delay`` waits that many seconds before any answer (a request that times out),
``reject_formats`` answers 400 to a ``response_format`` of those types (a server without
structured output), ``status_next`` answers the next requests with those HTTP statuses, and
``GET /v1/models`` lists ``models``. Every request body is kept in ``requests`` (with its
headers in ``headers``).

    python scripts/llm_server.py --port 8765   # then OPENAI_BASE_URL=http://127.0.0.1:8765/v1
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# One fixed creation time: the wall clock made two identical requests straddling a second
# give different responses, which tests compare.
CREATED = 1_767_225_600


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text(p.get("text") or p.get("content") or "") for p in content)
    return ""


class LLMServer(ThreadingHTTPServer):
    """The server; ``url`` is its base address (``/v1`` is appended for OpenAI clients)."""

    daemon_threads = True

    def __init__(self, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.error_after: int | None = None
        self.chunk_delay = 0.0
        self.chat_replies: list[str] = []
        self.reply_delay = 0.0
        self.reject_formats: set[str] = set()
        self.status_next: list[int] = []
        self.models = ["scripted"]
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> LLMServer:
        """Serve in a background thread."""
        # A short poll: stop() waits for the loop to notice, which at the default 0.5 s
        # added seconds to the test suite's teardowns.
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()

    def take_failure(self) -> bool:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False


LONG_REPLY = """\
Tea is the second most consumed drink in the world after water, and every kind of it comes \
from the leaves of one evergreen shrub that grows best on misty hillsides in warm climates.

Green tea is steamed or pan fired soon after picking, which stops oxidation and keeps its \
fresh grassy taste; black tea is rolled and left to oxidise fully, which gives it a darker \
colour and a stronger flavour that holds up well to milk.

For brewing at home:

- use water just off the boil for black tea and rather cooler water for green tea
- steep for two to three minutes, then taste before you decide to leave it longer

Oolong sits between the two, partly oxidised, and rewards several short infusions of the \
same leaves, each one tasting a little different from the last."""


def reply_for(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """(text, tool call or None) for a conversation given as [{"role", "text"}]."""
    last = messages[-1] if messages else {"role": "user", "text": ""}
    if last["role"] == "tool":
        return "It is sunny in Paris.", None
    if "weather" in last["text"].lower():
        return "", {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
    if "essay" in last["text"].lower():
        return LONG_REPLY, None
    return f"Echo: {last['text'][:200]}", None


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


class _Handler(BaseHTTPRequestHandler):
    server: LLMServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith("/models"):
            self._json({"object": "list", "data": [{"id": m} for m in self.server.models]})
        else:
            self._json({"error": {"message": f"no route {self.path}"}}, 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        with self.server._lock:
            self.server.requests.append({"path": self.path, "body": body})
            self.server.headers.append({k.lower(): v for k, v in self.headers.items()})
            status = self.server.status_next.pop(0) if self.server.status_next else None
        if self.server.reply_delay:
            time.sleep(self.server.reply_delay)
        if status is not None:
            self._json({"error": {"message": f"scripted {status}", "type": "error"}}, status)
            return
        form = (body.get("response_format") or {}).get("type")
        if form in self.server.reject_formats:
            message = f"response_format type {form!r} is not supported"
            self._json({"error": {"message": message, "type": "invalid_request_error"}}, 400)
            return
        if self.server.take_failure():
            self._json({"error": {"message": "overloaded", "type": "server_error"}}, 500)
            return
        if self.path.endswith("/chat/completions"):
            self._chat(body)
        elif self.path.endswith("/responses"):
            self._responses(body)
        elif self.path.endswith("/messages"):
            self._messages(body)
        else:
            self._json({"error": {"message": f"no route {self.path}"}}, 404)

    # -- plumbing --------------------------------------------------------------------------
    def _json(self, data: Any, status: int = 200) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        if status >= 500:
            self.send_header("retry-after-ms", "5")
        self.end_headers()
        self.wfile.write(raw)

    def _sse(self, events: list[tuple[str | None, Any]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for event, data in events:
            if self.server.chunk_delay:
                time.sleep(self.server.chunk_delay)
            head = f"event: {event}\n" if event else ""
            payload = data if isinstance(data, str) else json.dumps(data)
            try:
                self.wfile.write(f"{head}data: {payload}\n\n".encode())
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the client closed the stream early

    def _text_chunks(self, text: str) -> tuple[list[str], bool]:
        """The reply's chunks, cut short (True) when an error is due mid-stream."""
        chunks = _words(text)
        limit = self.server.error_after
        if limit is not None and limit < len(chunks):
            return chunks[:limit], True
        return chunks, False

    # -- OpenAI chat completions -----------------------------------------------------------
    def _chat(self, body: dict[str, Any]) -> None:
        conversation = [
            {"role": m.get("role"), "text": _text(m.get("content"))} for m in body["messages"]
        ]
        text, tool = reply_for(conversation)
        with self.server._lock:
            if self.server.chat_replies:
                text, tool = self.server.chat_replies.pop(0), None
        base = {"id": "chatcmpl-1", "created": CREATED, "model": body.get("model")}
        tool_calls = (
            [
                {
                    "index": 0,
                    "id": tool["id"],
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": json.dumps(tool["arguments"])},
                }
            ]
            if tool
            else None
        )
        finish = "tool_calls" if tool else "stop"
        if not body.get("stream"):
            message = {"role": "assistant", "content": text or None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            self._json(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )
            return
        chunk = {**base, "object": "chat.completion.chunk"}

        def delta(d: dict[str, Any], finish_reason: str | None = None) -> tuple[None, Any]:
            return None, {
                **chunk,
                "choices": [{"index": 0, "delta": d, "finish_reason": finish_reason}],
            }

        events = [delta({"role": "assistant", "content": ""})]
        pieces, broken = self._text_chunks(text)
        events += [delta({"content": piece}) for piece in pieces]
        if broken:
            events.append((None, {"error": {"message": "stream broke", "type": "server_error"}}))
        else:
            if tool_calls:
                events.append(delta({"tool_calls": tool_calls}))
            events += [delta({}, finish), (None, "[DONE]")]
        self._sse(events)

    # -- OpenAI Responses ------------------------------------------------------------------
    def _responses(self, body: dict[str, Any]) -> None:
        items = body.get("input")
        if isinstance(items, str):
            conversation = [{"role": "user", "text": items}]
        else:
            conversation = [
                {
                    "role": "tool" if i.get("type") == "function_call_output" else i.get("role"),
                    "text": _text(i.get("content") or i.get("output")),
                }
                for i in items
            ]
        text, tool = reply_for(conversation)
        output: list[dict[str, Any]] = []
        if tool:
            output.append(
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": tool["id"],
                    "name": tool["name"],
                    "arguments": json.dumps(tool["arguments"]),
                    "status": "completed",
                }
            )
        else:
            output.append(
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            )
        response = {
            "id": "resp_1",
            "object": "response",
            "created_at": CREATED,
            "model": body.get("model"),
            "status": "completed",
            "output": output,
            "instructions": body.get("instructions"),
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": 1,
                "output_tokens": 1,
                "total_tokens": 2,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
        if not body.get("stream"):
            self._json(response)
            return
        events: list[tuple[str | None, Any]] = [
            (
                "response.created",
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": {**response, "status": "in_progress", "output": []},
                },
            ),
        ]
        pieces, broken = self._text_chunks(text)
        for n, piece in enumerate(pieces, start=1):
            events.append(
                (
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": n,
                        "item_id": "msg_1",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": piece,
                        "logprobs": [],
                    },
                )
            )
        if broken:
            events.append(
                (
                    "error",
                    {
                        "type": "error",
                        "sequence_number": 99,
                        "code": "server",
                        "message": "stream broke",
                        "param": None,
                    },
                )
            )
        else:
            events.append(
                (
                    "response.completed",
                    {"type": "response.completed", "sequence_number": 100, "response": response},
                )
            )
        self._sse(events)

    # -- Anthropic messages ----------------------------------------------------------------
    def _messages(self, body: dict[str, Any]) -> None:
        conversation = []
        for m in body["messages"]:
            content = m.get("content")
            blocks = content if isinstance(content, list) else []
            if any(b.get("type") == "tool_result" for b in blocks):
                conversation.append({"role": "tool", "text": _text(blocks)})
            else:
                conversation.append({"role": m.get("role"), "text": _text(content)})
        text, tool = reply_for(conversation)
        content_blocks: list[dict[str, Any]] = (
            [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": tool["name"],
                    "input": tool["arguments"],
                }
            ]
            if tool
            else [{"type": "text", "text": text}]
        )
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content_blocks,
            "stop_reason": "tool_use" if tool else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        if not body.get("stream"):
            self._json(message)
            return
        events: list[tuple[str | None, Any]] = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {**message, "content": [], "stop_reason": None},
                },
            ),
        ]
        if tool:
            events += [
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {**content_blocks[0], "input": {}},
                    },
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": json.dumps(tool["arguments"]),
                        },
                    },
                ),
            ]
        else:
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            pieces, broken = self._text_chunks(text)
            events += [
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
                for piece in pieces
            ]
            if broken:
                events.append(
                    (
                        "error",
                        {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": "stream broke"},
                        },
                    )
                )
                self._sse(events)
                return
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": 1},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        self._sse(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="Seconds to wait before each streamed chunk."
    )
    args = parser.parse_args()
    server = LLMServer(args.port)
    server.chunk_delay = args.chunk_delay
    print(f"serving on {server.url} (OpenAI base_url {server.url}/v1)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
