"""The memory-mapped matrix for large entities agrees with sqlite-vec and heals itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memori_cli import Memori
from memori_cli.store import matrix, vectors


class RandomEmbedder:
    """A seeded random unit vector per text: no ties, so nearest-neighbour order is exact."""

    name = "random-test"
    dim = 24

    def embed(self, texts: list[str]) -> np.ndarray:
        import hashlib

        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.array(rows, dtype=np.float32).reshape(len(texts), self.dim)


@pytest.fixture
def big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Memori:
    monkeypatch.setattr(vectors, "MATRIX_MIN_ROWS", 10)
    mem = Memori(conn=tmp_path / "big.db", embedder=RandomEmbedder())
    for entity in ("big", "small"):
        with mem.attribution(entity_id=entity):
            mem.add_messages(
                [{"role": "user", "content": f"{entity} topic {i % 7} item {i}"} for i in range(40)]
            )
    mem.augment()
    return mem


def vec0_knn(mem: Memori, entity: str, query: np.ndarray, k: int) -> list[int]:
    rows = mem.store.conn.execute(
        "SELECT message_id FROM vec_messages WHERE embedding MATCH ? AND k = ? AND entity_id = ?",
        (query.tobytes(), k, entity),
    ).fetchall()
    return [r[0] for r in rows]


def query(text: str) -> np.ndarray:
    return RandomEmbedder().embed([text])[0]


def test_matrix_search_matches_vec0(big: Memori) -> None:
    for text in ("big topic 3", "item 17", "small topic 2"):
        q = query(text)
        got = vectors.knn(big.store, "big", q, 8)
        assert [mid for mid, _ in got] == vec0_knn(big, "big", q, 8)
        assert all(0 <= d <= 2 for _, d in got)
    assert big.store.matrices is not None
    assert any(big.store.matrices.folder.glob("*.f32"))


def test_new_vectors_are_appended_and_a_lagging_copy_catches_up(big: Memori) -> None:
    q = query("big topic 1 fresh")
    vectors.knn(big.store, "big", q, 5)  # builds the copy
    with big.attribution(entity_id="big"):
        big.add_messages([{"role": "user", "content": "big topic 1 fresh arrival"}])
    big.augment()
    ids_path, _ = big.store.matrices._files("big")  # type: ignore[union-attr]
    assert len(np.fromfile(ids_path, dtype=np.int64)) == 41
    # A crash between commit and append leaves the copy behind: it catches up on its own.
    ids = np.fromfile(ids_path, dtype=np.int64)
    ids[:-3].tofile(ids_path)
    got = vectors.knn(big.store, "big", q, 5)
    assert [m for m, _ in got] == vec0_knn(big, "big", q, 5)
    assert len(np.fromfile(ids_path, dtype=np.int64)) == 41


def test_deleted_rows_trigger_a_rebuild(big: Memori) -> None:
    q = query("big topic 4")
    first = vectors.knn(big.store, "big", q, 3)
    with big.store.write() as conn:
        conn.execute("DELETE FROM messages WHERE id = ?", (first[0][0],))
    again = vectors.knn(big.store, "big", q, 3)
    assert first[0][0] not in [m for m, _ in again]
    assert [m for m, _ in again] == vec0_knn(big, "big", q, 3)


def test_augmentation_builds_the_copy_when_an_entity_grows_large(big: Memori) -> None:
    matrices = big.store.matrices
    assert matrices is not None and matrices.exists("big") and matrices.exists("small")
    with big.attribution(entity_id="tiny"):
        big.add_messages([{"role": "user", "content": f"tiny {i}"} for i in range(5)])
    big.augment()
    assert not matrices.exists("tiny")  # below the threshold: vec0 serves it
    assert len(vectors.knn(big.store, "tiny", query("tiny 1"), 3)) == 3


def test_forget_and_reembed_drop_and_rebuild_the_copies(big: Memori) -> None:
    matrices = big.store.matrices
    assert matrices is not None
    big.forget("big")
    assert not matrices.exists("big") and matrices.exists("small")
    assert len(list(matrices.folder.glob("*.f32"))) == 1
    assert big.reembed().embedded == 40
    assert matrices.exists("small")  # rebuilt by re-embedding


def test_small_entities_use_vec0(tmp_path: Path) -> None:
    mem = Memori(conn=tmp_path / "s.db", embedder=RandomEmbedder())
    mem.add_messages([{"role": "user", "content": "one small note"}])
    mem.augment()
    assert vectors.knn(mem.store, "default", query("small note"), 3)
    assert matrix.MATRIX_MIN_ROWS > 1
    assert not mem.store.matrices.folder.exists()  # type: ignore[union-attr]


def test_partition_read_matches_the_public_scan(big: Memori) -> None:
    # _read_partition reads sqlite-vec's chunk tables; the public (slow) scan must agree,
    # so an upgrade of sqlite-vec that changes its layout is caught here.
    conn = big.store.conn
    with big.store.write() as c:  # a deleted row leaves a hole in its chunk
        c.execute(
            "DELETE FROM messages WHERE id = (SELECT min(id) FROM messages WHERE entity_id = 'big')"
        )
    ids, rows = matrix._read_partition(conn, "vec_messages", "big", RandomEmbedder.dim)
    public = conn.execute(
        "SELECT message_id, embedding FROM vec_messages WHERE entity_id = 'big'"
    ).fetchall()
    assert sorted(ids.tolist()) == sorted(mid for mid, _ in public)
    by_id = {mid: np.frombuffer(blob, dtype=np.float32) for mid, blob in public}
    for mid, vector in zip(ids.tolist(), rows, strict=True):
        assert np.array_equal(vector, by_id[mid])


def test_a_checked_copy_is_reused_until_anything_commits(
    big: Memori, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy is checked against the store once per commit, not once per search: another
    process's vectors and this connection's deletions are still seen at once."""
    q = query("big topic 5 from elsewhere")
    vectors.knn(big.store, "big", q, 5)
    counted = []
    real = matrix.Matrices._checked_copy
    monkeypatch.setattr(
        matrix.Matrices, "_checked_copy", lambda self, *a: counted.append(1) or real(self, *a)
    )
    for _ in range(3):
        vectors.knn(big.store, "big", q, 5)
    assert counted == []  # nothing committed: no count of the entity's rows
    other = Memori(conn=tmp_path / "big.db", embedder=RandomEmbedder())
    with other.attribution(entity_id="big"):
        other.add_messages([{"role": "user", "content": "big topic 5 from elsewhere"}])
    other.augment()
    fresh = other.store.conn.execute("SELECT max(id) FROM messages").fetchone()[0]
    other.close()
    everything = 100
    assert fresh in dict(vectors.knn(big.store, "big", q, everything))  # another's commit
    with big.store.write() as conn:
        conn.execute("DELETE FROM messages WHERE id = ?", (fresh,))
    assert fresh not in dict(vectors.knn(big.store, "big", q, everything))  # our own delete
    assert len(counted) == 2
