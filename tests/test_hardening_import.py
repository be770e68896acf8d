"""Hostile import files: zip bombs, broken zips, and secrets hidden from the redactor."""

from __future__ import annotations

import base64
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memori_cli import Memori
from memori_cli.cli import app
from memori_cli.errors import ImportFormatError


def conversation(text: str = "Hello there, general") -> list[dict[str, Any]]:
    return [{
        "title": "t", "current_node": "a",
        "mapping": {"a": {"id": "a", "parent": None, "message": {
            "id": "m1", "author": {"role": "user"}, "create_time": 1700000000,
            "content": {"content_type": "text", "parts": [text]}}}},
    }]  # fmt: skip


def make_zip(path: Path, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr("conversations.json", data)
    return path


def patch_headers(path: Path, *, flags: int | None = None, method: int | None = None) -> None:
    """Rewrite the flag bits or compression method in the local and central headers."""
    raw = bytearray(path.read_bytes())
    local = raw.index(b"PK\x03\x04")
    central = raw.index(b"PK\x01\x02")
    if flags is not None:
        struct.pack_into("<H", raw, local + 6, flags)
        struct.pack_into("<H", raw, central + 8, flags)
    if method is not None:
        struct.pack_into("<H", raw, local + 8, method)
        struct.pack_into("<H", raw, central + 10, method)
    path.write_bytes(bytes(raw))


def test_library_caps_what_a_zip_inflates(mem: Memori, tmp_path: Path) -> None:
    filler = "z" * (3 << 20)  # 3 MB of one letter compresses to a few KB
    path = make_zip(tmp_path / "bomb.zip", json.dumps(conversation(filler)).encode())
    assert path.stat().st_size < 50_000
    with pytest.raises(ImportFormatError, match=r"bomb\.zip:conversations\.json: .*MB"):
        mem.import_file(path, max_unzipped_mb=1)
    assert mem.import_file(path, max_unzipped_mb=8).imported == 1


def test_declared_size_cannot_hide_a_bomb(mem: Memori, tmp_path: Path) -> None:
    """The cap counts inflated bytes, not only the size the header claims."""
    path = make_zip(tmp_path / "liar.zip", json.dumps(conversation("y" * (3 << 20))).encode())
    raw = bytearray(path.read_bytes())
    local, central = raw.index(b"PK\x03\x04"), raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, 100)  # uncompressed size
    struct.pack_into("<I", raw, central + 24, 100)
    path.write_bytes(bytes(raw))
    with pytest.raises(ImportFormatError, match=r"liar\.zip:conversations\.json: "):
        mem.import_file(path, max_unzipped_mb=1)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_bad_crc_is_a_clean_error(mem: Memori, tmp_path: Path, method: int) -> None:
    data = json.dumps(conversation("The quick brown fox " * 200)).encode()
    path = make_zip(tmp_path / "crc.zip", data, method)
    raw = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).infolist()[0]
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.compress_size // 2] ^= 0x55
    path.write_bytes(bytes(raw))
    with pytest.raises(ImportFormatError, match=r"crc\.zip:conversations\.json: "):
        mem.import_file(path)


def test_encrypted_member_is_a_clean_error(mem: Memori, tmp_path: Path) -> None:
    path = make_zip(tmp_path / "locked.zip", json.dumps(conversation()).encode())
    patch_headers(path, flags=0x1)
    with pytest.raises(ImportFormatError, match=r"locked\.zip:conversations\.json: encrypted"):
        mem.import_file(path)


def test_deflate64_member_is_a_clean_error(mem: Memori, tmp_path: Path) -> None:
    path = make_zip(tmp_path / "d64.zip", json.dumps(conversation()).encode())
    patch_headers(path, method=9)
    with pytest.raises(ImportFormatError, match=r"d64\.zip:conversations\.json: unsupported"):
        mem.import_file(path)


def test_cli_reports_zip_problems_without_a_traceback(tmp_path: Path) -> None:
    bomb = make_zip(tmp_path / "bomb.zip", json.dumps(conversation("z" * (3 << 20))).encode())
    locked = make_zip(tmp_path / "locked.zip", json.dumps(conversation()).encode())
    patch_headers(locked, flags=0x1)
    runner = CliRunner()
    for path, extra in ((bomb, ["--max-unzipped-mb", "1"]), (locked, [])):
        result = runner.invoke(app, ["import", str(path), *extra])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert f"{path.name}:conversations.json:" in result.output
    ok = runner.invoke(app, ["import", str(bomb), "--max-unzipped-mb", "16"])
    assert ok.exit_code == 0, ok.output


# -- secrets ---------------------------------------------------------------------------------
KEY = "sk-ant-api03-AbCdEf1234567890GhIjKlMnOpQrStUv"
GITHUB = "ghp_" + "Zq8Rt2Lm4Np6Vx0Bc3Df5Gh7Jk9Ws1Ya2Eu4"
PGP_BODY = "lQOYBF3xyzABCDEFqwertyUIOP1234567890zxcvbnmASDFGHJKL"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if 0x21 <= ord(c) <= 0x7E else c for c in text)


VARIANTS: dict[str, tuple[str, list[str]]] = {
    # name: (the text that carries it, the secret bytes that must not be stored)
    "plain": (KEY, [KEY]),
    "pgp-private-key": (
        f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{PGP_BODY}\n=abcd\n"
        "-----END PGP PRIVATE KEY BLOCK-----",
        [PGP_BODY],
    ),
    "split-by-spaces": (f"{KEY[:14]} {KEY[14:24]}\n{KEY[24:]}", [KEY[24:], KEY]),
    "zero-width": (f"{KEY[:10]}\u200b{KEY[10:20]}\u200d{KEY[20:]}", [KEY[20:], KEY]),
    "url-encoded": ("https://example.com/?k=" + KEY.replace("-", "%2D"), [KEY[-20:]]),
    "base64": (base64.b64encode(f"token={KEY}".encode()).decode(), [KEY]),
    "full-width": (fullwidth(KEY), [fullwidth(KEY)[-10:], KEY]),
    "underscore-prefixed": (f"_{KEY}", [KEY]),
    "underscore-github": (f"my_{GITHUB}", [GITHUB]),
}


def file_bytes(db: Path) -> bytes:
    return b"".join(
        Path(str(db) + suffix).read_bytes()
        for suffix in ("", "-wal")
        if Path(str(db) + suffix).exists()
    )


def assert_absent(db: Path, needles: list[str]) -> None:
    data = file_bytes(db)
    for needle in needles:
        assert needle.encode() not in data, needle
        if len(needle) > 24:
            assert needle[-16:].encode() not in data, needle[-16:]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hidden_secrets_are_redacted_on_import(tmp_path: Path, variant: str) -> None:
    carrier, needles = VARIANTS[variant]
    one_line = " ".join(carrier.split())  # ids hold no line breaks
    db = tmp_path / "memori.db"
    mem = Memori(conn=db)
    path = tmp_path / "t.jsonl"
    records = [
        {"role": "user", "content": f"here it is: {carrier} thanks", "name": f"bot {one_line}",
         "session": f"s-{one_line}", "id": f"id-{one_line}"},
        {"role": "assistant", "content": "noted", "session": f"s-{one_line}",
         "id": "plain-id-2"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    first = mem.import_file(path)
    assert (first.imported, first.rejected_total) == (2, 0), first.rejected
    again = mem.import_file(path)  # the redacted ids are the same ids: nothing is added
    assert (again.imported, again.duplicates) == (0, 2)
    stored = mem.store.conn.execute("SELECT content FROM messages ORDER BY id").fetchall()
    assert "[REDACTED:" in stored[0][0] and stored[1][0] == "noted"
    assert mem.store.conn.execute("SELECT count(DISTINCT session_id) FROM messages").fetchone() == (
        1,
    )

    mcp = tmp_path / "graph.jsonl"
    mcp.write_text(
        json.dumps({"type": "entity", "name": f"Box {one_line}", "entityType": "thing",
                    "observations": [f"the key is {carrier}"]}) + "\n"
        + json.dumps({"type": "entity", "name": "Alice", "entityType": f"t {one_line}",
                      "observations": []}) + "\n"
        + json.dumps({"type": "relation", "from": "Alice", "to": f"Box {one_line}",
                      "relationType": f"owns {one_line}"}) + "\n"
    )  # fmt: skip
    report = mem.graph.import_mcp(mcp)
    assert report["errors"] == [] and report["edges"] == 1
    assert mem.graph.import_mcp(mcp)["edges"] == 0
    mem.close()
    assert_absent(db, needles)


def test_distinct_secret_ids_stay_distinct_and_legit_ids_are_kept(mem: Memori) -> None:
    mem.add_messages([
        {"role": "user", "content": "one", "id": f"x-{KEY}"},
        {"role": "user", "content": "two", "id": f"x-{KEY[:-4]}ZZZZ"},
        {"role": "user", "content": "three", "id": "chatcmpl-9sk-AbC_123"},
    ])  # fmt: skip
    ids = [r[0] for r in mem.store.conn.execute("SELECT external_id FROM messages ORDER BY id")]
    assert len(set(ids)) == 3 and ids[2] == "chatcmpl-9sk-AbC_123"
    assert all(KEY[-16:] not in i for i in ids)


def test_ordinary_text_survives_the_normalised_checks(mem: Memori) -> None:
    texts = [
        "I use sk-learn and the task-force; ghp is fine; AKIA is a word; eyJ alone",
        fullwidth("Full") + " width words and a zero\u200bwidth joiner stay as written",
        "a%20url with 100% of its escapes and a long token " + "Ab1" * 20,
    ]
    mem.add_messages([{"role": "user", "content": t} for t in texts])
    stored = [r[0] for r in mem.store.conn.execute("SELECT content FROM messages ORDER BY id")]
    assert stored == texts
