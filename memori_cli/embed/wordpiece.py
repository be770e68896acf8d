"""BERT's uncased WordPiece tokenizer in pure Python (no ``tokenizers``, no hub).

Matches ``BertTokenizer(do_lower_case=True)``: clean the text, space out CJK characters,
lower-case and strip accents, split on whitespace and punctuation, then greedy longest-match
WordPiece with ``##`` continuations. Word pieces are cached, since words repeat.

Only as much of a text as the token limit can use is read: a long turn is cut at a whitespace
well past the limit (whitespace always ends a word, so the words before it are the same as in
the whole text), and ASCII text takes a regex path that gives the same words as the general one.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

#: ASCII punctuation (every printable ASCII character that is not a letter, digit or space).
_ASCII_PUNCT = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())
#: Cleaning ASCII text: tab and newlines become spaces, other control characters go.
_ASCII_CLEAN = {c: (" " if chr(c) in "\t\n\r" else None) for c in [*range(32), 127]}
_ASCII_WORD = re.compile(f"[{re.escape(_ASCII_PUNCT)}]|[^ {re.escape(_ASCII_PUNCT)}]+")
#: Characters read per word piece of the limit before looking further (4 is typical English).
_CHARS_PER_PIECE = 12


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
        budget = max(max_tokens - 2, 0)
        window = _CHARS_PER_PIECE * budget
        while True:
            part = text
            if window < len(text):
                cut = max(text.rfind(ws, 0, window) for ws in " \t\n\r")
                part = text[:cut] if cut > 0 else ""
            ids: list[int] = []
            for word in self._basic(part):
                ids.extend(self._pieces(word))
                if len(ids) >= budget:
                    break
            if part is text or len(ids) >= budget:
                return [self.cls, *ids[:budget], self.sep]
            window *= 4

    def _basic(self, text: str) -> list[str]:
        if text.isascii():
            return _ASCII_WORD.findall(text.translate(_ASCII_CLEAN).lower())
        return self._basic_general(text)

    def _basic_general(self, text: str) -> list[str]:
        """BERT's basic tokenizer, character by character: clean, split, lower, strip accents."""
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
