"""`memori serve`: the real openai and anthropic SDKs pointed at the proxy (uvicorn on a free
port in this process), which forwards to the project's scripted server
(scripts/llm_server.py); one test runs `memori serve` as a process, one the daemon with
[serve], one a GGUF model served in process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from conftest import HashingEmbedder
from llm_server import LONG_REPLY, LLMServer
from typer.testing import CliRunner

from memori_cli import Memori
from memori_cli.attribution import Attribution
from memori_cli.capture import inject
from memori_cli.capture.openai_api import ChatAdapter
from memori_cli.cli import app
from memori_cli.errors import MemoriError
from memori_cli.serve import Running, ServeOptions, start
from memori_cli.serve.sse import EventReader

KEY = "sk-test-secret-0123456789"
TOKEN = "a-token-of-twenty-chars"
MEMORI = str(Path(sys.executable).parent / "memori")
ASK = {"role": "user", "content": "Which tea should I order?"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[LLMServer]:
    srv = LLMServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def llm(upstream: LLMServer) -> LLMServer:
    upstream.requests.clear()
    upstream.headers.clear()
    upstream.fail_next, upstream.error_after, upstream.chunk_delay = 0, None, 0.0
    upstream.status_next = []
    return upstream


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memori]:
    memori = Memori(tmp_path / "memori.db", embedder=HashingEmbedder())
    yield memori
    memori.close()


def serving(mem: Memori, upstream: LLMServer, **options: Any) -> Running:
    settings = ServeOptions(
        upstream=upstream.url + "/v1", anthropic_upstream=upstream.url, port=0, **options
    )
    return start(mem, settings)


@pytest.fixture
def proxy(mem: Memori, llm: LLMServer) -> Iterator[Running]:
    running = serving(mem, llm)
    yield running
    running.stop()


def oai(proxy: Running, entity: str | None = "maya", **headers: str) -> openai.OpenAI:
    if entity is not None:
        headers["X-Memori-Entity"] = entity
    return openai.OpenAI(
        base_url=proxy.url + "/v1", api_key=KEY, max_retries=0, default_headers=headers
    )


def claude(proxy: Running, entity: str | None = "maya", **headers: str) -> anthropic.Anthropic:
    if entity is not None:
        headers["X-Memori-Entity"] = entity
    return anthropic.Anthropic(
        base_url=proxy.url, api_key=KEY, max_retries=0, default_headers=headers
    )


def stored(mem: Memori, entity: str = "maya", at_least: int = 0) -> list[tuple[str, str, str]]:
    """The entity's messages; with ``at_least``, once that many are in (a stream's capture
    is queued as its last bytes go out, so a client can be done a moment before)."""
    deadline = time.monotonic() + 10
    while True:
        assert mem.llm.flush(10)
        count = mem.store.conn.execute(
            "SELECT count(*) FROM messages WHERE entity_id = ?", (entity,)
        ).fetchone()[0]
        if count >= at_least or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    rows = mem.store.conn.execute(
        "SELECT role, content, source FROM messages WHERE entity_id = ? ORDER BY id", (entity,)
    )
    return [tuple(row) for row in rows]


def remember(mem: Memori, entity: str, text: str) -> None:
    """An earlier conversation of ``entity``, augmented, for injection to find."""
    with mem.attribution(entity):
        mem.set_session("earlier")
        mem.add_messages([{"role": "user", "content": text}])
    mem.augment()


def system_sent(server: LLMServer, index: int = -1) -> str:
    body = server.requests[index]["body"]
    if "system" in body:
        system = body["system"]
        return system if isinstance(system, str) else "\n".join(b["text"] for b in system)
    if "instructions" in body:
        return str(body["instructions"] or "")
    first = body["messages"][0]
    return str(first["content"]) if first["role"] == "system" else ""


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- OpenAI chat completions ---------------------------------------------------------------
def test_chat_gets_the_block_register_would_give_and_is_captured_once(
    mem: Memori, llm: LLMServer, proxy: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    remember(mem, "maya", "My favourite tea is genmaicha.")
    messages = [{"role": "system", "content": "You are terse."}, ASK]
    # What mem.llm.register's wrapped client would send for the same call and attribution.
    adapter = ChatAdapter("x")
    body = {"model": "m", "messages": messages}
    block = mem.llm.block(Attribution("maya", "serve", "s1"), adapter.conversation(body))
    assert block is not None and "genmaicha" in block
    expected = adapter.inject(body, block)["messages"]

    client = oai(proxy, **{"X-Memori-Session": "s1"})
    result = client.chat.completions.create(model="m", messages=messages)
    assert result.choices[0].message.content == "Echo: Which tea should I order?"
    assert llm.requests[-1]["body"]["messages"] == expected
    assert system_sent(llm).startswith("You are terse.\n\n<memori-memories>")
    assert stored(mem)[-2:] == [
        ("user", "Which tea should I order?", "capture:serve:openai.chat"),
        ("assistant", "Echo: Which tea should I order?", "capture:serve:openai.chat"),
    ]
    (session,) = {
        r[0]
        for r in mem.store.conn.execute(
            "SELECT s.name FROM messages m JOIN sessions s ON s.id = m.session_id "
            "WHERE m.source LIKE 'capture:%'"
        )
    }
    assert session == "s1"
    processes = mem.store.conn.execute(
        "SELECT DISTINCT process_id FROM messages WHERE source LIKE 'capture:%'"
    ).fetchall()
    assert processes == [("serve",)]
    # The key went upstream and nowhere else; memori's own headers did not go upstream.
    sent = llm.headers[-1]
    assert sent["authorization"] == f"Bearer {KEY}"
    assert not [name for name in sent if name.startswith("x-memori-")]
    mem.close()
    db = Path(str(mem.store.path))
    on_disk = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert KEY.encode() not in on_disk and KEY not in caplog.text


def test_a_stream_passes_byte_for_byte_and_is_captured_once(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    body = {"model": "m", "messages": [ASK], "stream": True}
    direct = httpx.post(llm.url + "/v1/chat/completions", json=body).content
    via = httpx.post(
        proxy.url + "/v1/chat/completions", json=body, headers={"X-Memori-Inject": "off"}
    )
    assert via.headers["content-type"].startswith("text/event-stream")
    assert via.content == direct and b"data: [DONE]" in direct
    chunks = list(oai(proxy).chat.completions.create(model="m", messages=[ASK], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: Which tea should I order?"
    captured = [
        ("user", "Which tea should I order?", "capture:serve:openai.chat"),
        ("assistant", "Echo: Which tea should I order?", "capture:serve:openai.chat"),
    ]
    assert stored(mem, "maya", 2) == stored(mem, "default", 2) == captured


def test_tool_calls_plain_and_streamed_then_the_tool_result(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    client = oai(proxy)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    plain = client.chat.completions.create(model="m", messages=[ask], tools=tools)
    (call,) = plain.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    stream = client.chat.completions.create(model="m", messages=[ask], tools=tools, stream=True)
    deltas = [d for c in stream for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather"
    follow = client.chat.completions.create(
        model="m",
        messages=[
            ask,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"},
        ],
    )
    assert follow.choices[0].message.content == "It is sunny in Paris."
    tool_line = '[tool call] get_weather({"city": "Paris"})'
    assert [(r, c) for r, c, _ in stored(mem, "maya", 6)] == [
        ("user", "What is the weather in Paris?"),
        ("assistant", tool_line),
        ("user", "What is the weather in Paris?"),
        ("assistant", tool_line),
        ("tool", "sunny, 24C"),
        ("assistant", "It is sunny in Paris."),
    ]


def test_responses_api_plain_and_streamed(mem: Memori, llm: LLMServer, proxy: Running) -> None:
    remember(mem, "maya", "My favourite tea is genmaicha.")
    client = oai(proxy)
    result = client.responses.create(model="m", input="Which tea should I order?")
    assert result.output_text == "Echo: Which tea should I order?"
    assert "genmaicha" in system_sent(llm)
    events = list(
        client.responses.create(model="m", input="Which tea should I order?", stream=True)
    )
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Echo: Which tea should I order?"
    assert "genmaicha" in system_sent(llm)
    assert (
        stored(mem, "maya", 5)[-4:]
        == [
            ("user", "Which tea should I order?", "capture:serve:openai.responses"),
            ("assistant", "Echo: Which tea should I order?", "capture:serve:openai.responses"),
        ]
        * 2
    )


def test_models_and_unknown_routes_pass_through_untouched(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    assert [m.id for m in oai(proxy).models.list()] == ["scripted"]
    assert llm.headers == []  # GET /models is not recorded; POSTs are
    for method, path, body in [
        ("GET", "/v1/files/f1?limit=2", None),
        ("POST", "/v1/embeddings", {"input": "tea"}),
    ]:
        direct = httpx.request(method, llm.url + path, json=body)
        via = httpx.request(method, proxy.url + path, json=body)
        assert (
            (via.status_code, via.content)
            == (direct.status_code, direct.content)
            == (404, json.dumps({"error": {"message": f"no route {path}"}}).encode())
        )
    assert llm.requests[-1] == {"path": "/v1/embeddings", "body": {"input": "tea"}}
    assert stored(mem) == []


class Echo(ThreadingHTTPServer):
    """An upstream that answers every POST with the bytes it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.bodies: list[bytes] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _EchoHandler(BaseHTTPRequestHandler):
    server: Echo

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.bodies.append(body)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("body", [b'{"model": "m", "messages": [', b"[1, 2]", b"\xff\xfe"])
def test_a_body_memori_cannot_read_is_forwarded_unchanged(
    mem: Memori, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    echo = Echo()
    running = start(
        mem, ServeOptions(upstream=f"http://127.0.0.1:{echo.server_address[1]}", port=0)
    )
    try:
        reply = httpx.post(
            running.url + "/v1/chat/completions", content=body, headers={"X-Memori-Entity": "maya"}
        )
    finally:
        running.stop()
        echo.shutdown()
    assert (reply.status_code, reply.content, echo.bodies) == (200, body, [body])
    assert "nothing injected or captured" in reply.headers["x-memori-warning"]
    assert "not a JSON object" in caplog.text
    assert stored(mem) == []


# -- Anthropic messages --------------------------------------------------------------------
def test_anthropic_create_and_stream_with_metadata_user(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    remember(mem, "bob", "My favourite tea is earl grey.")
    client = claude(proxy, entity=None)
    ask = [{"role": "user", "content": "Which tea should I order?"}]
    message = client.messages.create(
        model="c", max_tokens=50, messages=ask, system="Be brief.", metadata={"user_id": "bob"}
    )
    assert message.content[0].text == "Echo: Which tea should I order?"
    assert system_sent(llm).startswith("Be brief.\n\n<memori-memories>")
    assert "earl grey" in system_sent(llm)
    with client.messages.stream(
        model="c", max_tokens=50, messages=ask, metadata={"user_id": "bob"}
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "Echo: Which tea should I order?" and "earl grey" in system_sent(llm)
    assert (
        stored(mem, "bob", 5)[-4:]
        == [
            ("user", "Which tea should I order?", "capture:serve:anthropic.messages"),
            ("assistant", "Echo: Which tea should I order?", "capture:serve:anthropic.messages"),
        ]
        * 2
    )
    assert llm.headers[-1]["authorization"] == f"Bearer {KEY}"
    assert stored(mem, "maya") == [] and stored(mem, "default") == []


# -- errors --------------------------------------------------------------------------------
def test_an_upstream_error_reaches_the_client_as_it_was(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    llm.fail_next = 1
    with pytest.raises(openai.InternalServerError) as caught:
        oai(proxy).chat.completions.create(model="m", messages=[ASK], stream=True)
    assert caught.value.status_code == 500
    assert caught.value.body == {"message": "overloaded", "type": "server_error"}
    assert caught.value.response.headers["retry-after-ms"] == "5"
    llm.status_next = [529]
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude(proxy).messages.create(model="c", max_tokens=5, messages=[ASK])
    assert refused.value.status_code == 529 and "scripted 529" in str(refused.value)
    assert stored(mem) == []  # a failed call captures nothing
    oai(proxy).chat.completions.create(model="m", messages=[ASK])
    assert len(stored(mem)) == 2


def test_an_unreachable_upstream_is_a_502(mem: Memori) -> None:
    running = start(mem, ServeOptions(upstream=f"http://127.0.0.1:{free_port()}/v1", port=0))
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            oai(running).chat.completions.create(model="m", messages=[ASK])
        assert caught.value.status_code == 502
        assert "the upstream cannot be reached" in caught.value.message
        with pytest.raises(anthropic.NotFoundError, match="no Anthropic upstream"):
            claude(running).messages.create(model="c", max_tokens=5, messages=[ASK])
    finally:
        running.stop()
    assert stored(mem) == []


def test_a_client_that_leaves_mid_stream_is_captured_once_as_partial(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    llm.chunk_delay = 0.03
    ask = {"role": "user", "content": "Write me an essay about tea"}
    stream = oai(proxy).chat.completions.create(model="m", messages=[ask], stream=True)
    got = "".join(next(stream).choices[0].delta.content or "" for _ in range(4))
    stream.close()
    wait_for(lambda: len(stored(mem)) >= 2)
    time.sleep(0.5)  # were it captured twice, the second would be in by now
    rows = stored(mem)
    assert [(r, s) for r, _, s in rows] == [
        ("user", "capture:serve:openai.chat:partial"),
        ("assistant", "capture:serve:openai.chat:partial"),
    ]
    reply = rows[1][1]
    assert reply.startswith(got.strip()) and LONG_REPLY.startswith(reply)
    assert len(reply) < len(LONG_REPLY) / 2  # the upstream was let go, not read to its end


def test_an_error_event_mid_stream_captures_the_partial_reply(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    llm.error_after = 2
    client = claude(proxy)
    with (
        pytest.raises(anthropic.APIStatusError, match="stream broke"),
        client.messages.stream(model="c", max_tokens=50, messages=[ASK]) as stream,
    ):
        "".join(stream.text_stream)
    assert stored(mem, "maya", 2) == [
        ("user", "Which tea should I order?", "capture:serve:anthropic.messages:partial"),
        ("assistant", "Echo: Which ", "capture:serve:anthropic.messages:partial"),
    ]


# -- identity ------------------------------------------------------------------------------
def test_two_entities_by_header_never_see_each_other(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    remember(mem, "alice", "My favourite tea is genmaicha.")
    remember(mem, "bob", "My favourite tea is earl grey.")
    oai(proxy, "alice").chat.completions.create(model="m", messages=[ASK])
    alice = system_sent(llm)
    # The header wins over the body's user.
    oai(proxy, "bob").chat.completions.create(model="m", messages=[ASK], user="alice")
    bob = system_sent(llm)
    assert "genmaicha" in alice and "earl grey" not in alice
    assert "earl grey" in bob and "genmaicha" not in bob
    oai(proxy, None).chat.completions.create(model="m", messages=[ASK], user="alice")
    assert "genmaicha" in system_sent(llm)
    assert len(stored(mem, "alice")) == 1 + 4 and len(stored(mem, "bob")) == 1 + 2


def test_the_second_call_carries_what_the_first_one_said(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    client = oai(proxy, "carol")
    said = {"role": "user", "content": "My favourite tea is genmaicha."}
    client.chat.completions.create(model="m", messages=[said])
    assert system_sent(llm) == ""  # nothing known yet
    assert mem.llm.flush(10)
    mem.augment()
    assert any("genmaicha" in m["content"] for m in mem.memories("carol"))
    client.chat.completions.create(model="m", messages=[ASK])
    assert "genmaicha" in system_sent(llm)


@pytest.mark.parametrize(
    ("headers", "body", "field"),
    [
        ({"X-Memori-Entity": ""}, {}, "X-Memori-Entity: must not be empty"),
        ({"X-Memori-Entity": "x" * 201}, {}, "X-Memori-Entity: 201 characters"),
        ({"X-Memori-Entity": b"\xff"}, {}, "x-memori-entity: not UTF-8"),
        ({"X-Memori-Session": "s" * 300}, {}, "X-Memori-Session: 300 characters"),
        ({"X-Memori-Process": ""}, {}, "X-Memori-Process: must not be empty"),
        ({}, {"user": 42}, "user: must be a string"),
        ({}, {"user": "bad\u0007id"}, "user: contains a control character"),
        ({"X-Memori-Inject": "maybe"}, {}, "X-Memori-Inject"),
        ({"X-Memori-Budget": "-1"}, {}, "X-Memori-Budget"),
    ],
)
def test_odd_ids_and_switches_are_a_clear_400_that_reaches_nobody(
    mem: Memori,
    llm: LLMServer,
    proxy: Running,
    headers: dict[str, Any],
    body: dict[str, Any],
    field: str,
) -> None:
    remember(mem, "x", "My favourite tea is genmaicha.")
    reply = httpx.post(
        proxy.url + "/v1/chat/completions",
        headers=headers,
        json={"model": "m", "messages": [ASK], **body},
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert field in error["message"] and error["type"] == "invalid_request_error"
    assert llm.requests == [] and stored(mem, "default") == []


def test_anthropic_refusals_have_the_anthropic_shape(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=r"metadata\.user_id: must be a string"):
        claude(proxy, None).messages.create(
            model="c", max_tokens=5, messages=[ASK], metadata={"user_id": 7}
        )
    assert llm.requests == []


def test_inject_off_and_budget_per_request(mem: Memori, llm: LLMServer) -> None:
    for i, food in enumerate(["genmaicha tea", "sencha tea", "oolong tea", "matcha tea"]):
        remember(mem, "maya", f"Note {i}: I like {food} in the morning and {food} at night.")
    running = serving(mem, llm)
    try:
        oai(running).chat.completions.create(model="m", messages=[ASK])
        full = system_sent(llm)
        oai(running, **{"X-Memori-Budget": "70"}).chat.completions.create(model="m", messages=[ASK])
        small = system_sent(llm)
        for headers in ({"X-Memori-Inject": "off"}, {"X-Memori-Budget": "0"}):
            oai(running, **headers).chat.completions.create(model="m", messages=[ASK])
            assert llm.requests[-1]["body"]["messages"] == [ASK]
    finally:
        running.stop()
    assert full.count("\n- ") > small.count("\n- ") >= 1
    assert inject.estimate_tokens(small) <= 70 < inject.estimate_tokens(full)
    running = serving(mem, llm, inject=False)  # off by default, on by header
    try:
        oai(running).chat.completions.create(model="m", messages=[ASK])
        assert llm.requests[-1]["body"]["messages"] == [ASK]
        oai(running, **{"X-Memori-Inject": "on"}).chat.completions.create(model="m", messages=[ASK])
        assert system_sent(llm) == full
    finally:
        running.stop()


def test_a_token_guards_every_route_but_health(mem: Memori, llm: LLMServer) -> None:
    with pytest.raises(MemoriError, match="only with a token"):
        ServeOptions(upstream=llm.url, host="0.0.0.0").check()
    with pytest.raises(MemoriError, match="too short"):
        ServeOptions(upstream=llm.url, token="abc").check()
    ServeOptions(upstream=llm.url, host="0.0.0.0", token=TOKEN).check()
    running = serving(mem, llm, token=TOKEN)
    try:
        for headers in ({}, {"X-Memori-Token": TOKEN + "x"}):
            with pytest.raises(openai.AuthenticationError, match="X-Memori-Token"):
                oai(running, **headers).chat.completions.create(model="m", messages=[ASK])
            with pytest.raises(openai.AuthenticationError):
                oai(running, **headers).models.list()
            with pytest.raises(anthropic.AuthenticationError):
                claude(running, **headers).messages.create(model="c", max_tokens=5, messages=[ASK])
        assert llm.requests == []
        assert httpx.get(running.url + "/memori/health").json() == {"status": "ok"}
        oai(running, **{"X-Memori-Token": TOKEN}).chat.completions.create(model="m", messages=[ASK])
    finally:
        running.stop()
    assert "x-memori-token" not in llm.headers[-1]
    assert TOKEN not in json.dumps(llm.requests)
    assert len(stored(mem)) == 2


def test_recall_never_blocks_the_event_loop(
    mem: Memori, llm: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    recall = mem.recall

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.6)
        return recall(*args, **kwargs)

    monkeypatch.setattr(mem, "recall", slow)
    running = serving(mem, llm)
    try:
        client = oai(running)
        threads = [
            threading.Thread(
                target=client.chat.completions.create, kwargs={"model": "m", "messages": [ASK]}
            )
            for _ in range(3)
        ]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(0.2)
        health = time.monotonic()
        assert httpx.get(running.url + "/memori/health").status_code == 200
        health = time.monotonic() - health
        for thread in threads:
            thread.join()
        took = time.monotonic() - began
    finally:
        running.stop()
    assert health < 0.3  # answered while three recalls were sleeping
    assert took < 1.5  # the three ran side by side (one after another: 1.8 s)
    assert len(stored(mem)) == 6


# -- the stream watcher --------------------------------------------------------------------
def test_events_are_read_wherever_the_bytes_are_cut() -> None:
    stream = (
        b': ping\r\n\r\nevent: delta\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        b"data: [DONE]\n\ndata: caf\xc3\xa9\r\r\n"
    )
    whole = EventReader().feed(stream)
    assert whole == [("delta", '{"a":\n1}'), ("message", "[DONE]"), ("message", "café")]
    for cut in range(1, len(stream)):
        reader = EventReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == whole, cut


# -- as people run it ----------------------------------------------------------------------
@pytest.mark.slow
def test_memori_serve_runs_as_a_process(tmp_path: Path, llm: LLMServer) -> None:
    port = free_port()
    db = tmp_path / "cli.db"
    env = {**os.environ, "MEMORI_EMBEDDING_MODEL": "none"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [
                MEMORI,
                "--db",
                str(db),
                "serve",
                "--port",
                str(port),
                "--upstream",
                llm.url + "/v1",
                "--entity",
                "zed",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                httpx.get(url + "/memori/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[ASK])
        assert reply.choices[0].message.content == "Echo: Which tea should I order?"
        # A key in a query string (some hosted APIs take one so) is not logged either.
        assert httpx.get(f"{url}/v1/files?key={KEY}").status_code == 404  # passed through
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    said = log.read_text()
    assert code == 0, said
    assert f"memori serve on {url}" in said and '"GET /v1/files HTTP/1.1" 404' in said
    assert KEY not in said
    check = Memori(db)
    try:
        assert stored(check, "zed") == [
            ("user", "Which tea should I order?", "capture:serve:openai.chat"),
            ("assistant", "Echo: Which tea should I order?", "capture:serve:openai.chat"),
        ]
    finally:
        check.close()


def test_cli_refuses_options_that_cannot_work(tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(tmp_path / "x.db")
    result = runner.invoke(app, ["--db", db, "serve"])
    assert result.exit_code == 2 and "--upstream URL" in result.output
    result = runner.invoke(
        app, ["--db", db, "serve", "--upstream", "http://127.0.0.1:9/v1", "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2 and "only with a token" in result.output
    result = runner.invoke(app, ["--db", db, "serve", "--upstream", "ftp://x"])
    assert result.exit_code == 2 and "not an http:// or https:// URL" in result.output
    result = runner.invoke(app, ["--db", db, "serve", "--upstream", "http://127.0.0.1:9",
                                 "--log-level", "bogus"])  # fmt: skip
    assert result.exit_code == 2 and "'bogus' is not one of" in result.output, result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(
            app, ["--db", db, "serve", "--upstream", "http://127.0.0.1:9", "--port", port]
        )
    assert result.exit_code == 1 and "the port is in use" in result.output


def test_the_daemon_serves_the_proxy_beside_augmentation(
    tmp_path: Path, llm: LLMServer, memori_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memori_daemon.worker import Daemon

    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    port = free_port()
    memori_home.mkdir(parents=True, exist_ok=True)
    (memori_home / "config.toml").write_text(
        f'[serve]\nupstream = "{llm.url}/v1"\nport = {port}\nentity = "dora"\n'
    )
    db = tmp_path / "daemon.db"
    daemon = Daemon(db)
    thread = threading.Thread(target=daemon.serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=30)
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        said = {"role": "user", "content": "My favourite tea is genmaicha."}
        client.chat.completions.create(model="m", messages=[said])
        check = Memori(db)
        try:  # the daemon augments what its proxy captured
            wait_for(lambda: any("genmaicha" in m["content"] for m in check.memories("dora")), 30)
        finally:
            check.close()
        client.chat.completions.create(model="m", messages=[ASK])
        assert "genmaicha" in system_sent(llm)
        status = CliRunner().invoke(app, ["--db", str(db), "daemon", "status", "--json"])
        assert json.loads(status.stdout)["proxy"] == url
    finally:
        daemon.stop.set()
        daemon.wake.set()
        thread.join(30)
    assert not thread.is_alive() and not _answers(url)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/memori/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_a_gguf_model_served_in_process(mem: Memori, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp.server.app")
    from make_tiny_model import make_llama_gguf

    model = make_llama_gguf(tmp_path / "tiny.gguf")
    running = start(mem, ServeOptions(model=model, port=0))
    try:
        client = oai(running)
        ask = [{"role": "user", "content": "hello there"}]
        plain = client.chat.completions.create(model="tiny", messages=ask, max_tokens=4)
        assert plain.object == "chat.completion"
        chunks = list(
            client.chat.completions.create(model="tiny", messages=ask, max_tokens=4, stream=True)
        )
        assert chunks and chunks[0].object == "chat.completion.chunk"
    finally:
        running.stop()
    wait_for(lambda: [r for r, _, _ in stored(mem)].count("user") == 2)
    users = [c for r, c, _ in stored(mem) if r == "user"]
    assert users == ["hello there", "hello there"]
    assert {s for _, _, s in stored(mem)} == {"capture:serve:openai.chat"}


def test_an_upstream_that_breaks_off_mid_stream_is_captured_as_partial(mem: Memori) -> None:
    chunk = {
        "choices": [{"index": 0, "delta": {"content": "Half a rep"}}],
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
    }
    event = f"data: {json.dumps(chunk)}\n\n".encode()
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_then_drop() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
                + f"{len(event):x}\r\n".encode()
                + event
                + b"\r\n"
            )
            time.sleep(0.2)  # then gone, without the last chunk

    threading.Thread(target=answer_then_drop, daemon=True).start()
    running = start(
        mem, ServeOptions(upstream=f"http://127.0.0.1:{listener.getsockname()[1]}", port=0)
    )
    try:
        with pytest.raises(openai.APIError):
            for _ in oai(running).chat.completions.create(model="m", messages=[ASK], stream=True):
                pass
    finally:
        running.stop()
        listener.close()
    assert stored(mem, "maya", 2) == [
        ("user", "Which tea should I order?", "capture:serve:openai.chat:partial"),
        ("assistant", "Half a rep", "capture:serve:openai.chat:partial"),
    ]


def test_serve_settings_in_config_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVE_TOKEN", TOKEN)
    options = ServeOptions.from_config(
        {
            "upstream": "http://h:1",
            "port": 9000,
            "timeout": 5,
            "token_env": "MY_SERVE_TOKEN",
            "enabled": True,
        }
    )
    assert (options.port, options.token, options.timeout, options.process) == (
        9000,
        TOKEN,
        5,
        "serve",
    )
    assert options.replace(port=None, host="::1").check().host == "::1"
    for table, said in [
        ({"prot": 1}, "has no setting 'prot'"),
        ({"port": "80"}, "port = '80': not a whole number"),
        ({"port": True}, "not a whole number"),
        ({"enabled": "yes"}, "not true or false"),
    ]:
        with pytest.raises(MemoriError, match=said):
            ServeOptions.from_config(table)


# -- review fixes --------------------------------------------------------------------------
def test_a_lone_surrogate_in_a_body_that_gets_memories_is_forwarded_not_a_500(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    # "\ud800" is valid JSON but no UTF-8: re-encoding the injected body must not fail.
    remember(mem, "maya", "I drink oolong tea every morning.")
    body = (
        b'{"model": "m", "messages": [{"role": "system", "content": "Be brief \\ud800"},'
        b' {"role": "user", "content": "Which oolong tea?"}]}'
    )
    reply = httpx.post(
        proxy.url + "/v1/chat/completions", content=body, headers={"X-Memori-Entity": "maya"}
    )
    assert reply.status_code == 200
    assert "oolong" in system_sent(llm)
    assert system_sent(llm).startswith("Be brief \ud800\n\n<memori-memories>")
    assert [role for role, _, _ in stored(mem, at_least=3)][-2:] == ["user", "assistant"]


def test_an_empty_key_after_bearer_still_reaches_the_upstream(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    # The README's curl with $OPENAI_API_KEY unset sends "Authorization: Bearer " (a local
    # llama.cpp server needs no key): httpx refuses a value ending in a space.
    import http.client  # httpx itself will not send such a header; curl and http.client do

    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": [ASK]}),
                 {"Authorization": "Bearer ", "Content-Type": "application/json"})  # fmt: skip
    reply = conn.getresponse()
    assert reply.status == 200, reply.read()
    conn.close()
    assert llm.headers[-1]["authorization"] == "Bearer"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Host": "evil.example:8765"}, 403),
        ({"Origin": "http://localhost:3000"}, 200),
        ({"Host": "[::1"}, 403),
        ({"Host": "localhost"}, 200),
        ({"Host": "0.0.0.0:8765"}, 200),
        ({"Origin": "http://[::1]:5173"}, 200),
    ],
)
def test_without_a_token_web_pages_and_rebound_names_are_refused(
    mem: Memori, llm: LLMServer, proxy: Running, headers: dict[str, str], status: int
) -> None:
    # Any site the user visits can POST to 127.0.0.1 (text/plain needs no preflight), and
    # llama.cpp's server answers with Access-Control-Allow-Origin: *: without this, a page
    # could read what memori injects, or plant memories.
    remember(mem, "maya", "My bank is Tidepool Savings.")
    before = len(stored(mem))
    reply = httpx.post(
        proxy.url + "/v1/chat/completions",
        content=json.dumps({"user": "maya", "messages": [{"role": "user", "content": "bank?"}]}),
        headers={"Content-Type": "text/plain", **headers},
    )
    assert reply.status_code == status, reply.text
    if status == 403:
        assert "--token" in reply.json()["error"]["message"]
        assert llm.requests == [] and len(stored(mem)) == before
    # The pass-through routes and Anthropic's are guarded alike.
    assert httpx.get(proxy.url + "/v1/models", headers=headers).status_code == (
        403 if status == 403 else 200
    )
    refused = httpx.post(proxy.url + "/v1/messages", json={"messages": []}, headers=headers)
    assert (refused.status_code == 403) == (status == 403)


def test_with_a_token_a_browser_that_has_it_gets_in(mem: Memori, llm: LLMServer) -> None:
    running = serving(mem, llm, token=TOKEN)
    try:
        reply = httpx.post(
            running.url + "/v1/chat/completions",
            content=json.dumps({"model": "m", "messages": [ASK]}),
            headers={"Origin": "https://my-app.example", "X-Memori-Token": TOKEN},
        )
    finally:
        running.stop()
    assert reply.status_code == 200


def test_a_forwarded_reply_has_one_date_and_the_upstreams_server(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    for reply in (
        httpx.get(proxy.url + "/v1/models"),
        httpx.post(proxy.url + "/v1/chat/completions", json={"model": "m", "messages": [ASK]}),
    ):
        assert reply.status_code == 200
        assert len(reply.headers.get_list("date")) == 1
        [server] = reply.headers.get_list("server")
        assert server.startswith("BaseHTTP/")  # the upstream's, not uvicorn's beside it


def test_a_passed_through_path_keeps_its_escapes(
    mem: Memori, llm: LLMServer, proxy: Running
) -> None:
    # A model or file id with a slash ("org/model" as org%2Fmodel) is one path segment; the
    # decoded path would send the upstream another route.
    path = "/v1/models/meta-llama%2FLlama-3%20x?limit=2"
    direct = httpx.post(llm.url + path, json={})
    via = httpx.post(proxy.url + path, json={})
    assert (via.status_code, via.content) == (direct.status_code, direct.content)
    assert b"meta-llama%2FLlama-3%20x" in via.content


@pytest.mark.parametrize(
    ("path", "events"),
    [
        ("/v1/chat/completions", [
            {"choices": [{"index": 0, "delta": {"content": "All of it"}}], "id": "c",
             "object": "chat.completion.chunk", "created": 0, "model": "m"},
            "[DONE]",
        ]),
        ("/v1/messages", [
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "All of it"}},
            {"type": "message_stop"},
        ]),
    ],
)  # fmt: skip
def test_a_client_that_closes_after_the_last_event_got_it_all(
    mem: Memori, path: str, events: list[Any]
) -> None:
    # The SDKs close the stream on [DONE] / message_stop; an upstream that closes its end a
    # moment later (sse-starlette, llama-cpp-python's server) must not make the capture partial.
    body = b"".join(
        f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events
    )
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_then_linger() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body
                + b"\r\n"
            )  # fmt: skip
            time.sleep(3)  # the end of the stream comes late
            with contextlib.suppress(OSError):
                conn.sendall(b"0\r\n\r\n")

    threading.Thread(target=answer_then_linger, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    running = start(mem, ServeOptions(upstream=url, anthropic_upstream=url, port=0))
    try:
        sent = {"model": "m", "max_tokens": 5, "messages": [ASK], "stream": True}
        with httpx.stream("POST", running.url + path, json=sent,
                          headers={"X-Memori-Entity": "maya"}) as reply:  # fmt: skip
            seen = b""
            for chunk in reply.iter_bytes():
                seen += chunk
                if body in seen:
                    break  # as the SDKs do: the last event came, the stream is closed
        assert seen == body
        sources = {s for _, _, s in stored(mem, "maya", 2)}
    finally:
        running.stop()
        listener.close()
    flavour = "openai.chat" if "chat" in path else "anthropic.messages"
    assert sources == {f"capture:serve:{flavour}"}


def test_a_chunk_with_a_null_error_field_is_not_a_failed_stream() -> None:
    """Some servers send ``"error": null`` in every chunk: only a real error marks it."""
    from types import SimpleNamespace

    from memori_cli.capture.openai_api import ChatAdapter
    from memori_cli.serve.app import Tap

    captured: list[tuple[str, bool]] = []
    call = SimpleNamespace(
        adapter=ChatAdapter("test"),
        capture=lambda reply, partial: captured.append((reply, partial)),
    )
    tap = Tap(call)  # type: ignore[arg-type]
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}}], "error": None}
    tap.feed(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
    tap.finish(complete=True)
    assert captured == [("Hi", False)]
    broken = Tap(call)  # type: ignore[arg-type]
    broken.feed(b'data: {"error": {"message": "overloaded"}}\n\n')
    broken.finish(complete=True)
    assert captured[-1][1] is True
