"""Failures found by trying to break memori (issue 18), each pinned by a test that failed first."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HashingEmbedder
from typer.testing import CliRunner

from memori_cli import Memori, NoStoreError, StoreError, config
from memori_cli.cli import app

runner = CliRunner()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def transcript(tmp_path: Path) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text('{"role": "user", "content": "hello"}\n')
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- 1. memori never chmods a path that is not its own store ---------------------------------
def test_a_folder_given_as_the_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o1777)
    code, _, err = run("--db", str(folder), "stats")
    assert code == 1 and "is a folder" in err
    with pytest.raises(StoreError, match="is a folder"):
        Memori(conn=folder).store.build()
    assert mode(folder) == 0o1777


def test_a_device_given_as_the_store_is_refused_and_left_alone(
    tmp_path: Path, transcript: Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o666)
    os.chmod(fifo, 0o666)
    with pytest.raises(StoreError, match="not a regular file"):
        Memori(conn=fifo).store.build()
    assert mode(fifo) == 0o666
    devnull = Path("/dev/null")
    before = mode(devnull)
    code, _, err = run("--db", str(devnull), "import", str(transcript))
    assert code == 1 and "not a regular file" in err
    assert mode(devnull) == before


def test_a_symlinked_store_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    os.chmod(target, 0o644)
    link = tmp_path / "memori.db"
    link.symlink_to(target)
    with pytest.raises(StoreError, match="symbolic link"):
        Memori(conn=link).add_messages([{"role": "user", "content": "hi"}])
    assert mode(target) == 0o644 and target.read_text() == "my notes\n"


def test_a_text_file_given_as_the_store_keeps_its_mode_and_content(tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    transcript.write_text('{"role": "user", "content": "hello"}\n')
    os.chmod(transcript, 0o644)
    code, _, err = run("--db", str(transcript), "import", str(transcript))
    assert code == 1 and "not a memori store" in err
    assert mode(transcript) == 0o644
    assert transcript.read_text() == '{"role": "user", "content": "hello"}\n'


# -- 2. another application's database is never migrated -------------------------------------
def test_another_applications_database_is_refused_unchanged(
    tmp_path: Path, transcript: Path
) -> None:
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    os.chmod(other, 0o644)
    before = other.read_bytes()
    for args in (["stats"], ["import", str(transcript)], ["recall", "x"]):
        code, _, err = run("--db", str(other), *args)
        assert code == 1 and "another application's SQLite database" in err, args
        assert "notes" in err
    with pytest.raises(StoreError, match="another application"):
        Memori(conn=lambda: __import__("sqlean").connect(str(other))).store.build()
    assert other.read_bytes() == before and mode(other) == 0o644
    assert not Path(str(other) + "-wal").exists()


def test_a_memori_store_carries_its_application_id_and_reopens(tmp_path: Path) -> None:
    db = tmp_path / "memori.db"
    mem = Memori(conn=db)
    mem.add_messages([{"role": "user", "content": "hello"}])
    mem.close()
    assert Memori(conn=db).store.conn.execute("PRAGMA application_id").fetchone()[0] == 0x6D6D7269


def test_read_commands_do_not_create_a_store(
    tmp_path: Path, memori_home: Path, transcript: Path
) -> None:
    typo = tmp_path / "typo" / "memori.db"
    for args in (["--db", str(typo), "stats"], ["--db", str(typo), "recall", "x"], ["stats"]):
        code, _, err = run(*args)
        assert code == 1 and "no memori store" in err, args
    assert not typo.parent.exists() and not memori_home.exists()
    with pytest.raises(NoStoreError):
        Memori(conn=typo, create=False).store.build()
    code, out, _ = run("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(out)}
    assert code == 0 and checks["store"]["status"] == "warn"
    assert "sqlite-vec" in checks["sqlite"]["detail"]
    assert not memori_home.exists()
    code, _, err = run("--db", str(typo), "import", str(transcript))
    assert code == 0 and "Created a new memori store" in err
    assert run("--db", str(typo), "stats")[0] == 0


def test_a_file_where_the_home_folder_should_be_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transcript: Path
) -> None:
    home = tmp_path / "home-file"
    home.write_text("")
    monkeypatch.setenv("MEMORI_HOME", str(home))
    code, _, err = run("import", str(transcript))
    assert code == 1 and "is not a folder" in err


# -- 15 and 23. what memori creates is private from the start; config is real TOML -----------
def test_created_folders_and_config_are_private_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "a" / "b" / "home"
    monkeypatch.setenv("MEMORI_HOME", str(home))
    old = os.umask(0o022)
    try:
        path = config.set_model("chat", 'C:\\models\\"odd"\n.gguf')
    finally:
        os.umask(old)
    assert mode(home) == 0o700 and mode(home.parent) == 0o700 and mode(home.parent.parent) == 0o700
    assert mode(path) == 0o600
    assert config.read_file()["models"]["chat"] == 'C:\\models\\"odd"\n.gguf'


# -- hostile JSON: one line never aborts an import -------------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000  # far past the json module's recursion limit
LONG_INT = "9" * 5_000  # past Python's 4,300-digit int conversion limit
HOSTILE = {"nested": f'{{"role": "user", "content": {DEEP}}}',
           "integer": f'{{"role": "user", "content": "x", "n": {LONG_INT}}}'}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("first", [False, True], ids=["middle", "first"])
def test_a_hostile_jsonl_line_is_rejected_and_the_rest_imported(
    tmp_path: Path, kind: str, first: bool
) -> None:
    good = [json.dumps({"role": "user", "content": f"line {n}"}) for n in range(3)]
    lines = [HOSTILE[kind], *good] if first else [good[0], HOSTILE[kind], *good[1:]]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run("--db", str(tmp_path / "m.db"), "import", str(path))
    assert code == 1 and "Traceback" not in err
    bad = 1 if first else 2
    assert f"hostile.jsonl:{bad}: invalid JSON: " in err
    assert ("nested too deeply" if kind == "nested" else "more than 4,300 digits") in err
    mem = Memori(conn=tmp_path / "m.db")
    stored = [r[0] for r in mem.store.conn.execute("SELECT content FROM messages ORDER BY id")]
    assert stored == ["line 0", "line 1", "line 2"]


def _whole_file(fmt: str, hostile: str) -> str:
    """A JSON export of ``fmt`` whose second conversation holds ``hostile`` JSON."""

    def good(n: int) -> str:
        if fmt == "chatgpt":
            return json.dumps({"conversation_id": f"c{n}", "current_node": f"u{n}", "mapping": {
                f"u{n}": {"id": f"u{n}", "parent": None, "children": [],
                          "message": {"id": f"u{n}", "author": {"role": "user"},
                                      "content": {"parts": ["kept"]}}}}})  # fmt: skip
        if fmt == "claude":
            return json.dumps({"uuid": f"c{n}", "chat_messages": [
                {"uuid": f"m{n}", "sender": "human", "text": "kept"}]})  # fmt: skip
        return json.dumps({"id": f"c{n}", "conversations": [{"from": "human", "value": "kept"}]})

    bad = {
        "chatgpt": f'{{"conversation_id": "c2", "mapping": {{"x": {hostile}}}}}',
        "claude": f'{{"uuid": "c2", "chat_messages": [{{"sender": "human", "text": {hostile}}}]}}',
        "sharegpt": f'{{"id": "c2", "conversations": [{{"from": "human", "value": {hostile}}}]}}',
    }[fmt]
    return f"[\n{good(1)},\n{bad},\n{good(3)}\n]\n"


@pytest.mark.parametrize("kind", ["nested", "integer"])
@pytest.mark.parametrize("fmt", ["chatgpt", "claude", "sharegpt"])
def test_a_hostile_record_in_a_json_export_is_a_clean_rejection(
    tmp_path: Path, fmt: str, kind: str
) -> None:
    path = tmp_path / "conversations.json"
    path.write_text(_whole_file(fmt, DEEP if kind == "nested" else LONG_INT))
    code, _, err = run("--db", str(tmp_path / "m.db"), "import", str(path), "--format", fmt)
    assert code == 1 and "Traceback" not in err
    assert "conversations.json:3: invalid JSON: " in err
    mem = Memori(conn=tmp_path / "m.db")
    sessions = mem.store.conn.execute(
        "SELECT s.name FROM messages m JOIN sessions s ON s.id = m.session_id ORDER BY m.id"
    ).fetchall()
    assert [s for (s,) in sessions] == ["c1", "c3"]  # the records after it still land


def test_a_hostile_single_object_file_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    path.write_text('{\n "uuid": "c1",\n "chat_messages": ' + DEEP + "\n}\n")
    code, _, err = run("--db", str(tmp_path / "m.db"), "import", str(path), "--format", "claude")
    assert code == 1 and "Traceback" not in err
    assert "conversations.json:1: invalid JSON: nested too deeply" in err


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_graph_import_line_is_rejected_and_the_rest_imported(
    tmp_path: Path, kind: str
) -> None:
    hostile = {"nested": f'{{"type": "entity", "name": "X", "observations": {DEEP}}}',
               "integer": f'{{"type": "entity", "name": "X", "n": {LONG_INT}}}'}[kind]  # fmt: skip
    lines = [
        json.dumps({"type": "entity", "name": "Ann", "entityType": "person", "observations": []}),
        hostile,
        json.dumps({"type": "entity", "name": "Oslo", "entityType": "place", "observations": []}),
        json.dumps({"type": "relation", "from": "Ann", "to": "Oslo", "relationType": "lives_in"}),
    ]
    path = tmp_path / "graph.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run("--db", str(tmp_path / "m.db"), "graph", "import", str(path))
    assert code == 1 and "Traceback" not in err
    assert "graph.jsonl:2: invalid JSON: " in err
    assert ("nested too deeply" if kind == "nested" else "more than 4,300 digits") in err
    mem = Memori(conn=tmp_path / "m.db")
    assert sorted(n["name"] for n in mem.graph.nodes()) == ["Ann", "Oslo"]
    assert len(mem.graph.edges()) == 1


# -- real repeats are kept; only a re-import of the same source folds ------------------------
def _contents(mem: Memori) -> list[str]:
    return [r[0] for r in mem.store.conn.execute("SELECT content FROM messages ORDER BY id")]


def test_the_same_words_said_in_two_calls_are_two_messages(mem: Memori) -> None:
    mem.set_session("s")
    first = mem.add_messages([{"role": "user", "content": "yes"}])
    second = mem.add_messages([{"role": "user", "content": "yes"}])
    assert (first.inserted, second.inserted, second.duplicates) == (1, 1, 0)
    both = mem.add_messages([{"role": "user", "content": "yes"}] * 2)
    assert both.inserted == 2
    assert _contents(mem) == ["yes"] * 4
    # An external id still makes a message idempotent.
    for _ in range(2):
        mem.add_messages([{"role": "user", "content": "yes", "id": "m-1"}])
    assert len(_contents(mem)) == 5


def test_repeats_in_interleaved_sessions_are_kept_and_a_reimport_adds_nothing(
    mem: Memori, tmp_path: Path
) -> None:
    path = tmp_path / "interleaved.jsonl"
    records = [("a", "ok"), ("b", "ok"), ("a", "ok"), ("b", "hm"), ("a", "ok"), ("b", "ok")]
    path.write_text(
        "".join(json.dumps({"role": "user", "content": t, "session": s}) + "\n" for s, t in records)
    )
    first = mem.import_file(path)
    assert (first.imported, first.duplicates) == (6, 0)
    again = mem.import_file(path)
    assert (again.imported, again.duplicates) == (0, 6)
    by_session = mem.store.conn.execute(
        """SELECT s.name, count(*) FROM messages m JOIN sessions s ON s.id = m.session_id
           GROUP BY s.name ORDER BY s.name"""
    ).fetchall()
    assert by_session == [("a", 3), ("b", 3)]


# -- a huge query is cut, with a warning, and stays fast -------------------------------------
def test_a_huge_query_is_cut_with_a_warning_and_stays_fast(tmp_path: Path) -> None:
    from memori_cli import RecallWarning
    from memori_cli.recall import MAX_QUERY_CHARS

    # The test embedder reads every word, as the real tokenizer does, without the model's cost.
    mem = Memori(conn=tmp_path / "m.db", embedder=HashingEmbedder())
    mem.add_messages([{"role": "user", "content": "I keep bees on the roof"}])
    mem.augment()
    query = "bees " + "lorem ipsum dolor " * 600_000  # about 10 MB
    started = time.perf_counter()
    with pytest.warns(RecallWarning, match=f"first {MAX_QUERY_CHARS:,} characters"):
        hits = mem.recall(query)
    assert time.perf_counter() - started < 1.0  # about 3 s before the cut (2 ms after)
    assert hits and hits[0].content == "I keep bees on the roof"
    mem.close()
    code, out, err = run("--db", str(tmp_path / "m.db"), "recall", query[:200_000], "--json")
    assert code == 0 and json.loads(out)[0]["content"] == "I keep bees on the roof"
    assert "Warning:" in err and "was cut" in err


# -- ids past SQLite's integer range are clean errors ----------------------------------------
HUGE_ID = "99999999999999999999"


@pytest.mark.parametrize(
    "args",
    [
        ["memories", "show", HUGE_ID],
        ["memories", "history", HUGE_ID],
        ["memories", "forget", HUGE_ID],
        ["jobs", "retry", HUGE_ID],
        ["memories", "list", "--limit", HUGE_ID],
        ["jobs", "--limit", HUGE_ID],
        ["daemon", "logs", "--lines", HUGE_ID],
    ],
    ids=lambda args: " ".join(args[:-1]),
)
def test_an_id_or_limit_past_the_integer_range_is_a_usage_error(
    tmp_path: Path, args: list[str]
) -> None:
    Memori(conn=tmp_path / "m.db").add_messages([{"role": "user", "content": "hi"}])
    code, _, err = run("--db", str(tmp_path / "m.db"), *args)
    flat = " ".join(err.replace("│", " ").split())  # unwrap Rich's error panel
    assert code == 2 and "Traceback" not in err
    assert "Invalid value" in flat and "less than or equal to 9223372036854775807" in flat


def test_huge_ids_are_no_such_thing_in_the_library_and_the_graph(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "m.db")
    mem.add_messages([{"role": "user", "content": "hi"}])
    huge = int(HUGE_ID)
    assert mem.memory(huge) is None and mem.memory(-huge) is None
    assert mem.memory_history(huge) == [] and mem.forget_memory(huge) is False
    assert mem.retry_jobs([huge]) == 0
    for target in (f"edge:{HUGE_ID}", f"#{HUGE_ID}"):
        code, _, err = run("--db", str(tmp_path / "m.db"), "graph", "forget", target)
        assert code == 1 and "Traceback" not in err
        assert ("no edge" if target.startswith("edge") else "no node") in err
    code, _, err = run("--db", str(tmp_path / "m.db"), "graph", "show", "--node", f"#{HUGE_ID}")
    assert code == 1 and "no node" in err


@pytest.mark.slow
def test_chat_forget_with_a_huge_id_says_there_is_no_such_memory(tmp_path: Path) -> None:
    from llm_server import LLMServer

    keyless = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    server = LLMServer().start()
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "memori"), "--db", str(tmp_path / "m.db"),
             "chat", "--entity", "maya"],
            input=f"/forget {HUGE_ID}\n/quit\n", capture_output=True, text=True, timeout=120,
            env={**keyless, "OPENAI_BASE_URL": server.url + "/v1",
                 "MEMORI_EMBEDDING_MODEL": "none"},
        )  # fmt: skip
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert f"No memory {HUGE_ID} of yours." in done.stderr and "Traceback" not in done.stderr


# -- forgetting a memory: by id only within the entity, and what was made only from it -------
def _ana_with_two_facts(db: Path) -> Memori:
    mem = Memori(conn=db)
    with mem.attribution(entity_id="ana"):
        mem.add_messages(
            [{"role": "user", "content": "I live in Zorbtown. I love Quibblecake.", "name": "Ana"}]
        )
    mem.augment()
    return mem


def _summary(mem: Memori) -> str:
    row = mem.store.conn.execute("SELECT content FROM session_summaries").fetchone()
    return "" if row is None else str(row[0])


def test_forgetting_a_memory_removes_its_edge_and_its_summary_line(tmp_path: Path) -> None:
    mem = _ana_with_two_facts(tmp_path / "m.db")
    with mem.attribution(entity_id="ana"):
        lives = next(m for m in mem.memories() if "Zorbtown" in m["content"])
        assert {e["object"] for e in mem.graph.edges()} == {"Zorbtown", "Quibblecake"}
        assert f"- {lives['content']}" in _summary(mem)
        assert mem.forget_memory(lives["id"])
        # The edge stating the same fact, from the same message, goes; the other one stays.
        assert {e["object"] for e in mem.graph.edges()} == {"Quibblecake"}
        assert [n["name"] for n in mem.graph.search("Zorbtown")] == []
        summary = _summary(mem)
        assert f"- {lives['content']}" not in summary and "Quibblecake" in summary
    mem.close()


def test_memory_operations_by_id_stay_within_the_entity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = _ana_with_two_facts(tmp_path / "m.db")
    with mem.attribution(entity_id="ana"):
        memory_id = mem.memories()[0]["id"]
    with mem.attribution(entity_id="bob"):
        assert mem.memory(memory_id) is None
        assert mem.memory_history(memory_id) == []
        assert mem.forget_memory(memory_id) is False
        assert mem.memory(memory_id, entity_id="ana") is not None
    with mem.attribution(entity_id="ana"):
        assert mem.memory(memory_id) is not None
    mem.close()
    db = str(tmp_path / "m.db")
    for command in ("show", "history", "forget"):
        code, _, err = run("--db", db, "memories", command, str(memory_id), "--entity", "bob")
        assert code == 1 and f"no memory {memory_id} of entity bob" in err, (command, err)
    code, out, _ = run("--db", db, "memories", "show", str(memory_id), "--entity", "ana")
    assert code == 0 and ("Zorbtown" in out or "Quibblecake" in out)
    monkeypatch.setenv("MEMORI_ENTITY", "ana")  # the default entity, as `memories list` takes it
    code, _, err = run("--db", db, "memories", "forget", str(memory_id))
    assert code == 0 and f"Forgot memory {memory_id}" in err


# -- a worker killed with -9: the next `memori augment` takes its jobs back at once -----------
def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)  # the process has exited (and been reaped) by now


def _leased_to_a_dead_worker(db: Path) -> int:
    import socket

    mem = Memori(conn=db)
    mem.add_messages([{"role": "user", "content": "I live in Zorbtown."}])
    conn = mem.store.conn
    (job_id,) = conn.execute("SELECT id FROM jobs").fetchone()
    with mem.store.write() as write:
        write.execute(
            """UPDATE jobs SET status = 'running', lease_owner = ?, lease_expires = ?
               WHERE id = ?""",
            (f"{socket.gethostname()}:{_dead_pid()}:dead0001", time.time() + 120, job_id),
        )
    mem.close()
    return int(job_id)


def test_augment_takes_back_the_jobs_of_a_worker_killed_mid_job(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    job_id = _leased_to_a_dead_worker(db)
    _, out, _ = run("--db", str(db), "doctor", "--json")
    (check,) = [c for c in json.loads(out) if c["check"] == "stuck jobs"]
    assert check["status"] == "warn" and "1 running job" in check["detail"], check
    mem = Memori(conn=db)
    mem.augment()
    status = mem.store.conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert status is None or status[0] == "done"  # done jobs may be pruned
    assert [m["content"] for m in mem.memories()] == ["User lives in Zorbtown"]
    mem.close()
    _, out, _ = run("--db", str(db), "doctor", "--json")
    (check,) = [c for c in json.loads(out) if c["check"] == "stuck jobs"]
    assert check["status"] == "ok", check


def test_the_cli_augment_takes_back_a_dead_workers_jobs(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    _leased_to_a_dead_worker(db)
    code, _, err = run("--db", str(db), "augment")
    assert code == 0, err
    mem = Memori(conn=db)
    assert mem.jobs(status="running") == [] and len(mem.memories()) == 1
    mem.close()


# -- terminal escape sequences in stored text are shown, never sent to the terminal ----------
CONTROLS = "I live in Evil\x1b]0;pwned\x07Town\x1b[2J. I love \x9bcake\x85."


def test_stored_escape_sequences_are_printed_visibly_and_json_stays_exact(
    tmp_path: Path,
) -> None:
    from memori_cli.cli.common import visible

    assert visible("a\x1b[31mb\tc\nd\x00\x7f\x9b") == "a\\x1b[31mb\tc\nd\\x00\\x7f\\x9b"
    db = str(tmp_path / "m.db")
    mem = Memori(conn=db)
    mem.add_messages([{"role": "user", "content": CONTROLS}])
    mem.augment()
    mem.close()
    for args in (
        ["recall", "Town"],
        ["recall", "Town", "--explain"],
        ["memories", "list"],
        ["memories", "show", "2"],
        ["memories", "history", "2"],
        ["graph", "show"],
        ["graph", "search", "Evil"],
        ["graph", "export", "--format", "dot"],
        ["graph", "export", "--format", "mermaid"],
        ["graph", "export", "--format", "graphml"],
    ):
        code, out, err = run("--db", db, *args)
        assert code == 0, (args, err)
        for raw in ("\x1b", "\x07", "\x9b", "\x85"):
            assert raw not in out and raw not in err, (args, raw)
        if args[:2] not in (["graph", "export"], ["graph", "search"]):
            assert "\\x1b" in out or "\\x9b" in out, (args, out)  # shown, not dropped
    code, out, _ = run("--db", db, "recall", "Town", "--json")
    assert code == 0 and any(hit["content"] == CONTROLS for hit in json.loads(out))


# -- CLI conventions: data on stdout, usage errors exit 2, -h, `memori memories` lists -------
def test_model_list_prints_its_data_on_stdout(tmp_path: Path) -> None:
    Memori(conn=tmp_path / "m.db").add_messages([{"role": "user", "content": "hi"}])
    code, out, _ = run("--db", str(tmp_path / "m.db"), "model", "list")
    assert code == 0 and "embedding model:" in out and "chat model:" in out


def test_an_unknown_chat_backend_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("--db", str(tmp_path / "m.db"), "chat", "--backend", "nope")
    assert code == 2 and "--backend" in err


def test_a_missing_embedder_warning_joins_its_sentences_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memori_cli import embed

    def missing(spec: str) -> None:
        raise embed.EmbeddingUnavailable(embed.HOW_TO_GET_MINILM)

    monkeypatch.setattr(embed, "load", missing)
    mem = Memori(conn=tmp_path / "m.db")
    with pytest.warns(Warning) as caught:
        mem.pipeline()
    assert caught and all(".;" not in str(w.message) for w in caught)
    mem.close()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["memories"],
        ["memories", "list"],
        ["jobs"],
        ["graph"],
        ["model"],
        ["daemon"],
        ["recall"],
    ],
    ids=lambda args: " ".join(args) or "memori",
)
def test_dash_h_is_help_everywhere(args: list[str]) -> None:
    code, out, _ = run(*args, "-h")
    assert code == 0 and "Usage:" in out


def test_memories_alone_lists_them(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "m.db")
    mem.add_messages([{"role": "user", "content": "I live in Zorbtown."}])
    mem.augment()
    mem.close()
    code, out, err = run("--db", str(tmp_path / "m.db"), "memories")
    assert code == 0 and "Zorbtown" in out, err


# -- 17. the command line's conventions ---------------------------------------------------------
def test_completion_is_offered_and_help_shows_no_bool_metavar_and_reflows() -> None:
    shown = runner.invoke(app, ["--show-completion", "bash"])
    assert shown.exit_code == 0 and "_memori_completion" in shown.stdout
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout
    help_text = runner.invoke(app, ["recall", "--help"], env={"COLUMNS": "80"}).stdout
    assert "<bool>" not in help_text and "--json" in help_text
    # A hard-wrapped docstring flows into one paragraph: no line holds one stray word.
    assert "embedded so far" in " ".join(help_text.split())
    lines = [line.strip() for line in help_text.splitlines() if line.strip()]
    assert not any(len(line.split()) == 1 and line.isalpha() for line in lines)
