"""Capture through its sink alone: a wrapped client (the real openai SDK against the local
server) capturing into a fake :class:`CaptureSink`, with no store and no Memori at all."""

from __future__ import annotations

import gc
import json
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
from llm_server import LLMServer

from memori_cli import Memori
from memori_cli.attribution import Attribution
from memori_cli.capture import LLM, CaptureSink

USER = {"role": "user", "content": "Which tea should I order?"}


class FakeSink:
    """Records what capture hands over; refuses on request, like a full disk."""

    def __init__(self, spool: Path):
        self.spool = spool
        self.added: list[tuple[list[dict[str, Any]], Attribution, str]] = []
        self.sessions = 0
        self.refuse = False
        self.threads: set[str] = set()

    def session(self) -> Attribution:
        self.sessions += 1
        return Attribution(entity_id="maya", process_id="app", session_id=f"s{self.sessions}")

    def add(
        self, messages: Sequence[Mapping[str, Any]], attribution: Attribution, source: str
    ) -> object:
        self.threads.add(threading.current_thread().name)
        if self.refuse:
            raise OSError("database or disk is full")
        self.added.append(([dict(m) for m in messages], attribution, source))
        return None

    def spool_path(self) -> Path:
        return self.spool


class NoHost:
    """A host capture must not touch: injection is off, so nothing reads a store."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"capture used the host's {name!r}")


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    srv = LLMServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def sink(tmp_path: Path) -> FakeSink:
    return FakeSink(tmp_path / "spool.jsonl")


@pytest.fixture
def llm(sink: FakeSink) -> Iterator[LLM[Any]]:
    typed: CaptureSink = sink  # the fake satisfies the protocol (mypy checks this line)
    captured: LLM[Any] = LLM(NoHost(), typed)
    captured.injection.enabled = False
    yield captured
    captured.writer.close()


def client(server: LLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0)


def test_a_wrapped_call_is_captured_into_the_sink_once_with_the_attribution_of_the_call(
    llm: LLM[Any], sink: FakeSink, server: LLMServer
) -> None:
    oai = client(server)
    host = llm._mem
    assert llm.register(oai) is host  # register hands back the host, untouched
    result = oai.chat.completions.create(model="m", messages=[USER])
    assert result.choices[0].message.content == "Echo: Which tea should I order?"
    assert llm.flush(5)
    assert sink.sessions == 1  # asked once, when the call was made
    ((messages, attribution, source),) = sink.added
    assert attribution == Attribution(entity_id="maya", process_id="app", session_id="s1")
    assert source == "capture:openai.chat"
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Which tea should I order?"),
        ("assistant", "Echo: Which tea should I order?"),
    ]
    assert all(m["timestamp"] for m in messages)
    assert sink.threads == {"memori-capture"}  # written off the caller's thread
    assert llm.writer.written == 1 and llm.failures == 0


def test_a_stream_closed_early_reaches_the_sink_once_as_partial(
    llm: LLM[Any], sink: FakeSink, server: LLMServer
) -> None:
    oai = client(server)
    llm.register(oai)
    with oai.chat.completions.create(model="m", messages=[USER], stream=True) as stream:
        for n, _ in enumerate(stream):
            if n == 2:
                break
    assert llm.flush(5)
    ((messages, _, source),) = sink.added
    assert source == "capture:openai.chat:partial"
    assert [m["content"] for m in messages] == [USER["content"], "Echo: Which "]


def test_what_the_sink_refuses_goes_to_its_spool_file_and_the_call_is_unharmed(
    llm: LLM[Any], sink: FakeSink, server: LLMServer
) -> None:
    sink.refuse = True
    oai = client(server)
    llm.register(oai)
    result = oai.chat.completions.create(model="m", messages=[USER])
    assert result.choices[0].message.content.startswith("Echo")
    assert llm.flush(5)
    assert llm.failures == 1 and sink.added == []
    lines = [json.loads(line) for line in sink.spool.read_text().splitlines()]
    assert [(r["role"], r["entity"], r["process"], r["session"]) for r in lines] == [
        ("user", "maya", "app", "s1"),
        ("assistant", "maya", "app", "s1"),
    ]
    assert sink.spool.stat().st_mode & 0o077 == 0


def test_memoris_sink_does_not_keep_a_dropped_memori_alive(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "memori.db")
    writer = mem.llm.writer
    attribution = mem.llm.attribution()  # through the sink: a session is started
    assert attribution.session_id is not None and mem.current == attribution
    gone = weakref.ref(mem)
    del mem
    gc.collect()
    assert gone() is None
    # A write queued for it now finds nobody to write to, quietly (not a failure).
    from memori_cli.capture.writer import Exchange

    writer.submit(Exchange([dict(USER)], attribution, "capture:test"))
    assert writer.flush(5)
    assert writer.failures == 0 and writer.written == 0
    writer.close()
