"""Write tiny random-weight GGUF models for tests and benchmarks (no download, no hub).

    python scripts/make_tiny_model.py OUT.gguf    # a ~0.8 MB llama chat model (ChatML)

The llama model has a self-made SentencePiece vocabulary: control tokens for the ChatML
template, 256 byte-fallback tokens (so every string tokenizes) and a few hundred word pieces.
Its output is noise, but it loads, generates, streams, follows a JSON schema and embeds, which
is what plumbing tests need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = """the a i you we my your is are was am to of and in on at for with about do did
have has like love live lives work works city home cat dog food music book run hike berlin
paris lisbon coffee tea friend sister brother mother father today yesterday week year""".split()

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
JSON_PIECES = [*"{}[]\":,.!?'-_ ", "\u2581"]
MORE_WORDS = """fact preference skill attribute event memories triples summary content kind
about subject predicate object person place organization thing speaker user assistant
true false null name lives_in works_at likes""".split()


def llama_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types of the tiny SentencePiece vocabulary."""
    import gguf

    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 4
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(gguf.TokenType.BYTE)
    pieces = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + JSON_PIECES
    pieces += ["\u2581" + w for w in WORDS + MORE_WORDS] + [w for w in WORDS if len(w) > 2]
    for piece in dict.fromkeys(pieces):
        if piece not in tokens:
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
    # SentencePiece merges toward the highest score: prefer longer pieces.
    scores = [
        0.0 if t != gguf.TokenType.NORMAL else float(len(tok))
        for tok, t in zip(tokens, types, strict=True)
    ]
    return tokens, scores, [int(t) for t in types]


def make_llama_gguf(path: Path, *, dim: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A random-weight llama chat model (ChatML template) of about 1 MB."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens, scores, types = llama_vocab()
    heads, ff, n_ctx = 4, dim * 4, 2048

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("memori-tiny-llama")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(dim)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(dim // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    ones = np.ones(dim, np.float32)
    writer.add_tensor("token_embd.weight", weights(len(tokens), dim))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(dim, dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(ff, dim))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(ff, dim))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(dim, ff))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", weights(len(tokens), dim))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a tiny random-weight llama GGUF model.")
    parser.add_argument("out", type=Path, help="where to write the .gguf file")
    made = make_llama_gguf(parser.parse_args().out)
    print(f"wrote {made} ({made.stat().st_size} bytes)")
