"""BERT's uncased WordPiece tokenizer in pure Python (no ``tokenizers``, no hub).

Matches ``BertTokenizer(do_lower_case=True)``: clean the text, space out CJK characters,
lower-case and strip accents, split on whitespace and punctuation, then greedy longest-match
WordPiece with ``##`` continuations. Word pieces are cached, since words repeat.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPiece:
    """Text to BERT token ids."""

    def __init__(self, vocab_path: Path, *, max_chars_per_word: int = 100):
        tokens = vocab_path.read_text(encoding="utf-8").splitlines()
        self.vocab = {token: i for i, token in enumerate(tokens)}
        self.unk = self.vocab["[UNK]"]
        self.cls = self.vocab["[CLS]"]
        self.sep = self.vocab["[SEP]"]
        self.pad = self.vocab.get("[PAD]", 0)
        self.max_chars_per_word = max_chars_per_word
        self._pieces = functools.lru_cache(maxsize=65536)(self._word_pieces)

    def encode(self, text: str, max_tokens: int) -> list[int]:
        """``[CLS] pieces... [SEP]``, truncated to ``max_tokens`` ids in all."""
        ids = [self.cls]
        budget = max_tokens - 2
        for word in self._basic(text):
            ids.extend(self._pieces(word))
            if len(ids) - 1 >= budget:
                del ids[budget + 1 :]
                break
        ids.append(self.sep)
        return ids

    def _basic(self, text: str) -> list[str]:
        out: list[str] = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif unicodedata.category(ch).startswith("C"):
                continue
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        words: list[str] = []
        for token in "".join(out).lower().split():
            token = "".join(
                c for c in unicodedata.normalize("NFD", token) if unicodedata.category(c) != "Mn"
            )
            start = 0
            for i, ch in enumerate(token):
                if _is_punctuation(ch):
                    if start < i:
                        words.append(token[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(token):
                words.append(token[start:])
        return words

    def _word_pieces(self, word: str) -> tuple[int, ...]:
        if len(word) > self.max_chars_per_word:
            return (self.unk,)
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return (self.unk,)
            pieces.append(found)
            start = end
        return tuple(pieces)
