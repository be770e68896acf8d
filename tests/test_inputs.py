"""The library checks what it is given: the error tree is complete and documented, bad
messages are InvalidMessageError, and recall's and the listings' times are parsed (never
compared as raw text) with a clear InvalidQueryError naming the argument."""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import memori_cli
from memori_cli import InvalidMessageError, InvalidQueryError, Memori, MemoriError, errors
from memori_cli.cli import app
from memori_cli.recall import RecallRequest

# -- the error tree -----------------------------------------------------------------------


def _tree() -> list[tuple[int, str]]:
    """(depth, name) of each class in errors.py's docstring tree, in order."""
    doc = errors.__doc__ or ""
    found = []
    for line in doc.splitlines():
        if line.strip() == "MemoriError":
            found.append((0, "MemoriError"))
        elif match := re.match(r"^(\s*(?:[│ ]   )*)[├└]── (\w+)", line):
            found.append((len(match.group(1).strip("\n")) // 4, match.group(2)))
    return found


def _exported_exceptions() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name in memori_cli.__all__
        if isinstance(obj := getattr(memori_cli, name), type) and issubclass(obj, BaseException)
    }


def test_every_exported_error_is_in_the_tree_and_a_memori_error() -> None:
    tree = {name for _, name in _tree()}
    doc = errors.__doc__ or ""
    for name, cls in _exported_exceptions().items():
        if issubclass(cls, Warning):
            assert f":class:`{name}`" in doc, name  # warnings are named beside the tree
            continue
        assert name in tree, f"{name} is exported but not in errors.py's tree"
        assert issubclass(cls, MemoriError), name
        assert cls.__module__ == "memori_cli.errors", name


def test_the_tree_matches_the_classes() -> None:
    """Every class the tree shows exists, is exported and has the parent the tree shows; and
    every MemoriError errors.py defines is in the tree."""
    parents: list[str] = []
    exported = _exported_exceptions()
    for depth, name in _tree():
        del parents[depth:]
        cls = getattr(errors, name)
        assert exported.get(name) is cls, f"{name} is in the tree but not exported"
        if parents:
            assert parents[-1] in {base.__name__ for base in cls.__bases__}, name
        parents.append(name)
    defined = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, MemoriError)
    }
    assert defined == {name for _, name in _tree()}


def test_errors_moved_to_errors_py_are_still_importable_where_they_were() -> None:
    from memori_daemon.worker import AlreadyRunning

    from memori_cli.augment.extract import ExtractionError
    from memori_cli.chat import NoBackend
    from memori_cli.embed import EmbeddingUnavailable
    from memori_cli.graph import GraphError

    assert ExtractionError is errors.ExtractionError
    assert NoBackend is errors.NoBackend
    assert EmbeddingUnavailable is errors.EmbeddingUnavailable
    assert GraphError is errors.GraphError
    assert AlreadyRunning is errors.AlreadyRunning
    assert errors.ExtractionError("bad json", raw="{").raw == "{"


def test_a_broken_config_file_is_a_config_error(memori_home: Path) -> None:
    from memori_cli import config

    config.config_path().parent.mkdir(parents=True, exist_ok=True)
    config.config_path().write_text("[models\n", encoding="utf-8")
    with pytest.raises(errors.ConfigError, match="not valid TOML"):
        config.read_file()
    with pytest.raises(errors.ConfigError, match="is not one of"):
        config.check_extractors("everything")


def test_the_job_lease_comes_from_the_environment_or_config_toml(
    memori_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memori_cli import config

    monkeypatch.delenv("MEMORI_LEASE_SECONDS", raising=False)
    assert config.lease_seconds() == 120
    config.config_path().parent.mkdir(parents=True, exist_ok=True)
    config.config_path().write_text("[daemon]\nlease_seconds = 30\n", encoding="utf-8")
    assert config.lease_seconds() == 30
    monkeypatch.setenv("MEMORI_LEASE_SECONDS", "7.5")
    assert config.lease_seconds() == 7.5
    assert Memori(conn=memori_home / "m.db").pipeline().lease == 7.5
    for bad in ("1", "soon", "nan", "inf", "-30"):
        monkeypatch.setenv("MEMORI_LEASE_SECONDS", bad)
        with pytest.raises(errors.ConfigError, match=f"MEMORI_LEASE_SECONDS = '{bad}'"):
            config.lease_seconds()
    monkeypatch.delenv("MEMORI_LEASE_SECONDS")
    config.config_path().write_text("[daemon]\nlease_seconds = true\n", encoding="utf-8")
    with pytest.raises(errors.ConfigError, match=r"\[daemon\] lease_seconds in config.toml"):
        config.lease_seconds()


# -- messages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"role": "bot", "content": "hi"},
        {"content": "no role"},
        {"role": "user", "content": "hi", "timestamp": "yesterday"},
        {"role": "user", "content": 42},
    ],
)
def test_a_bad_message_is_an_invalid_message_error(mem: Memori, message: dict[str, object]) -> None:
    good = {"role": "user", "content": "stored only if all are good"}
    with pytest.raises(InvalidMessageError, match=r"messages\[1\]") as caught:
        mem.add_messages([good, message])
    assert isinstance(caught.value, ValueError)  # what callers caught before
    assert mem.store.conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


# -- times --------------------------------------------------------------------------------


def _said(mem: Memori, *turns: tuple[str, str]) -> None:
    mem.add_messages([{"role": "user", "content": text, "timestamp": when} for text, when in turns])


@pytest.mark.parametrize(
    ("argument", "value"),
    [("since", "yesterday"), ("until", "May 2024"), ("as_of", "last tuesday-ish"),
     ("since", "2024-13-01"), ("until", "x" * 10_000)],
)  # fmt: skip
def test_recall_rejects_what_is_not_a_time(mem: Memori, argument: str, value: str) -> None:
    _said(mem, ("kiwi in May", "2024-05-10T00:00:00Z"))
    with pytest.raises(InvalidQueryError) as caught:
        mem.recall("kiwi", **{argument: value})  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.argument, error.value) == (argument, value)
    assert str(error).startswith(f"{argument}: expected an ISO-8601 date or time, got ")
    assert len(str(error)) < 200  # a hostile value is not echoed back whole


def test_since_after_until_is_an_error_and_equal_bounds_find_nothing(mem: Memori) -> None:
    _said(mem, ("kiwi in May", "2024-05-10T00:00:00Z"))
    with pytest.raises(InvalidQueryError, match="since: 2024-06-01T00:00:00\\+00:00 is after"):
        mem.recall("kiwi", since="2024-06-01", until="2024-01-01")
    assert mem.recall("kiwi", since="2024-05-10T00:00:00Z", until="2024-05-10T00:00:00Z") == []


def test_times_compare_as_times_not_text(mem: Memori) -> None:
    _said(mem, ("kiwi late on the 31st", "2024-05-31T23:30:00Z"))
    # 01:00 at +02:00 is 23:00 UTC, before the message: as text it sorted after it.
    assert mem.recall("kiwi", until="2024-06-01T01:00:00+02:00") == []
    assert len(mem.recall("kiwi", until="2024-06-01T03:00:00+02:00")) == 1
    # Date and datetime values work as ISO text does.
    assert len(mem.recall("kiwi", since=datetime.date(2024, 5, 31))) == 1
    aware = datetime.datetime(2024, 6, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert mem.recall("kiwi", until=aware) == []
    assert mem.recall("kiwi", since="2024-06-01") == []


def test_memories_and_graph_check_as_of(mem: Memori) -> None:
    with pytest.raises(InvalidQueryError, match="as_of: expected an ISO-8601"):
        mem.memories(as_of="yesterday")
    with pytest.raises(InvalidQueryError, match="as_of"):
        mem.graph.nodes(as_of="soon")
    with pytest.raises(InvalidQueryError, match="as_of"):
        mem.graph.edges(as_of="2024-02-30")
    assert mem.memories(as_of="2024-01-01T00:00:00+05:00") == []


def test_the_recall_request_is_normalised_once() -> None:
    request = RecallRequest.of(
        "q", "e", since="2024-05-01", until="2024-06-01T02:00:00+02:00", as_of="2024-05-15Z",
        limit=-3,
    )  # fmt: skip
    assert (request.since, request.until, request.as_of) == (
        "2024-05-01T00:00:00+00:00",
        "2024-06-01T00:00:00+00:00",
        "2024-05-15T00:00:00+00:00",
    )
    assert request.limit == 0
    assert request.before == "2024-05-15T00:00:00+00:00\uffff"  # as_of is the earlier bound
    assert request.filtered and request.searches_memories
    assert not dataclasses.replace(request, process="p").searches_memories
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.since = None  # type: ignore[misc]
    # Built directly (as recall.recall's callers may), it is checked all the same.
    with pytest.raises(InvalidQueryError, match="until"):
        RecallRequest("q", "e", until="tomorrow")
    assert RecallRequest("q", "e").message_filters() == {
        "process_id": None, "since": None, "until": None,
    }  # fmt: skip


def test_graph_and_neighbour_messages_obey_the_filters_in_sql(tmp_path: Path) -> None:
    """Rows reached by id (neighbours of a bm25 hit) are fetched with the filters."""
    from memori_cli.store.messages import get_messages

    mem = Memori(conn=tmp_path / "m.db")
    with mem.attribution(entity_id="e", process_id="p1"):
        _said(mem, ("kiwi early", "2024-01-01T00:00:00Z"))
    with mem.attribution(entity_id="e", process_id="p2"):
        _said(mem, ("kiwi late", "2024-09-01T00:00:00Z"))
    ids = [mid for (mid,) in mem.store.conn.execute("SELECT id FROM messages ORDER BY id")]
    assert set(get_messages(mem.store, ids)) == set(ids)
    assert list(get_messages(mem.store, ids, process_id="p2")) == [ids[1]]
    assert list(get_messages(mem.store, ids, until="2024-06-01T00:00:00+00:00")) == [ids[0]]
    assert get_messages(mem.store, ids, since="2024-06-01T00:00:00+00:00", process_id="p1") == {}
    mem.close()


# -- the CLI translates -------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "option", "words"),
    [
        (["recall", "x", "--since", "yesterday"], "--since", "got 'yesterday'"),
        (["recall", "x", "--until", "May 2024"], "--until", "got 'May 2024'"),
        (["recall", "x", "--as-of", "soon"], "--as-of", "got 'soon'"),
        (["recall", "x", "--since", "2024-06-01", "--until", "2024-01-01"], "--since",
         "is after until"),
        (["memories", "list", "--as-of", "soon"], "--as-of", "got 'soon'"),
        (["graph", "show", "--as-of", "soon"], "--as-of", "got 'soon'"),
    ],
)  # fmt: skip
def test_the_cli_shows_a_bad_time_as_a_usage_error(
    args: list[str], option: str, words: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    shown = " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())  # Rich's box, unwrapped
    assert f"Invalid value for {option}: " in shown
    assert words in shown and "Traceback" not in shown
