"""Tiny random-weight GGUF models the tests write themselves (no download, no hub)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = """the a i you we my your is are was am to of and in on at for with about do did
have has like love live lives work works city home cat dog food music book run hike berlin
paris lisbon coffee tea friend sister brother mother father today yesterday week year""".split()


def bert_vocab() -> list[str]:
    """A WordPiece vocabulary of 150 tokens: specials, letters, continuations, words."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    continuations = [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    punctuation = list(".,!?'-:;()")
    vocab = specials + letters + continuations + punctuation
    for word in WORDS:
        if word not in vocab and len(vocab) < 150:
            vocab.append(word)
    return vocab


def _phantom(token: str) -> str:
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def make_bert_gguf(path: Path, *, dim: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random-weight BERT embedding model (mean pooling) of about 140 KB."""
    import gguf

    rng = np.random.default_rng(seed)
    vocab = bert_vocab()
    ff = dim * 4
    n_ctx = 512

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(dim)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(layers)
    writer.add_head_count(2)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    writer.add_token_type_count(2)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tokenizer_model("bert")
    # llama.cpp's WordPiece wants the converted form: "▁" starts a word, "##" is dropped.
    writer.add_token_list([_phantom(t) for t in vocab])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t.startswith("[") else gguf.TokenType.NORMAL for t in vocab]
    )
    writer.add_unk_token_id(vocab.index("[UNK]"))
    writer.add_pad_token_id(vocab.index("[PAD]"))
    writer.add_bos_token_id(vocab.index("[CLS]"))  # llama.cpp's BERT: BOS is [CLS]
    writer.add_eos_token_id(vocab.index("[SEP]"))
    writer.add_sep_token_id(vocab.index("[SEP]"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    ones, zeros = np.ones(dim, np.float32), np.zeros(dim, np.float32)
    # Position and token-type tables must be F32, or llama.cpp aborts the process.
    writer.add_tensor("token_embd.weight", weights(len(vocab), dim))
    writer.add_tensor("token_types.weight", weights(2, dim))
    writer.add_tensor("position_embd.weight", weights(n_ctx, dim))
    writer.add_tensor("token_embd_norm.weight", ones)
    writer.add_tensor("token_embd_norm.bias", zeros)
    for i in range(layers):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(dim, dim))
            writer.add_tensor(f"blk.{i}.{name}.bias", zeros)
        writer.add_tensor(f"blk.{i}.attn_output_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_output_norm.bias", zeros)
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(ff, dim))
        writer.add_tensor(f"blk.{i}.ffn_up.bias", np.zeros(ff, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(dim, ff))
        writer.add_tensor(f"blk.{i}.ffn_down.bias", zeros)
        writer.add_tensor(f"blk.{i}.layer_output_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.layer_output_norm.bias", zeros)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
