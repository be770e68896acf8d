"""Checking a GGUF model file before anything loads it.

llama.cpp reports a damaged file by failing deep inside its loader (or worse), so every place
that takes a model file (``memori model add``, the chat and embedding model loaders, ``memori
doctor``) reads the GGUF header first: the magic, the version, plausible counts, every
key/value pair and tensor description, and that the file is at least as long as its tensors
need. Only the standard library is used: the ``gguf`` package is not a dependency.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path
from typing import BinaryIO

from .errors import ModelFileError

MAGIC = b"GGUF"
VERSIONS = (1, 2, 3)
#: Far above any real model (llama.cpp itself refuses more than a few thousand tensors).
MAX_COUNT = 1 << 20
MAX_DIMS = 8
DEFAULT_ALIGNMENT = 32

# Value types: fixed sizes in bytes, 8 = string, 9 = array.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9

# ggml tensor types: (elements per block, bytes per block), as in gguf's GGML_QUANT_SIZES.
_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
    25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54),
    35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class GGUFInfo:
    """What the header of a valid GGUF file says."""

    version: int
    tensors: int
    metadata: int
    architecture: str | None
    size: int


class _Reader:
    def __init__(self, handle: BinaryIO, size: int, order: str, path: Path):
        self.handle, self.size, self.order, self.path = handle, size, order, path

    def fail(self, why: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: not a valid GGUF model file ({why})")

    def read(self, count: int, what: str) -> bytes:
        if count < 0 or self.handle.tell() + count > self.size:
            raise self.fail(f"truncated: the header ends inside {what}")
        return self.handle.read(count)

    def unpack(self, fmt: str, what: str) -> int:
        data = self.read(struct.calcsize(fmt), what)
        return int(struct.unpack(self.order + fmt, data)[0])

    def string(self, what: str) -> bytes:
        length = self.unpack("Q", what)
        if length > self.size:
            raise self.fail(f"{what} claims {length} bytes, more than the file holds")
        return self.read(length, what)

    def skip(self, count: int, what: str) -> None:
        if count < 0 or self.handle.tell() + count > self.size:
            raise self.fail(f"truncated: the header ends inside {what}")
        self.handle.seek(count, os.SEEK_CUR)

    def value(self, kind: int, what: str, depth: int = 0) -> int | bytes | None:
        """Read (or skip) one value; strings and small ints come back, the rest is skipped."""
        if kind in _SCALAR_SIZES:
            size = _SCALAR_SIZES[kind]
            if kind in (4, 5, 10, 11):
                return self.unpack({4: "I", 5: "i", 10: "Q", 11: "q"}[kind], what)
            self.skip(size, what)
            return None
        if kind == _STRING:
            return self.string(what)
        if kind == _ARRAY and depth < 2:
            item = self.unpack("I", what)
            count = self.unpack("Q", what)
            if count > self.size:
                raise self.fail(f"{what} claims {count} items, more than the file holds")
            if item in _SCALAR_SIZES:
                self.skip(count * _SCALAR_SIZES[item], what)
            else:
                for _ in range(count):
                    self.value(item, what, depth + 1)
            return None
        raise self.fail(f"{what} has unknown value type {kind}")


def check(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read the GGUF header of ``path`` through; raise :class:`ModelFileError` saying what is
    wrong if it is missing, not GGUF, of an unknown version, implausible or truncated."""
    file = Path(path)
    try:
        with open(file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return _check(_Reader(handle, size, "<", file))
    except FileNotFoundError:
        raise ModelFileError(f"{file}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{file}: a folder, not a GGUF model file") from None
    except OSError as exc:
        raise ModelFileError(f"{file}: cannot read the model file: {exc}") from None


def _check(reader: _Reader) -> GGUFInfo:
    if reader.size < 4 or reader.handle.read(4) != MAGIC:
        raise reader.fail("it does not start with 'GGUF'")
    raw = reader.read(4, "the version")
    version = struct.unpack("<I", raw)[0]
    if version not in VERSIONS and struct.unpack(">I", raw)[0] in VERSIONS:
        reader.order = ">"  # a big-endian file
        version = struct.unpack(">I", raw)[0]
    if version not in VERSIONS:
        raise reader.fail(f"unknown GGUF version {version}")
    count = "I" if version == 1 else "Q"
    tensors = reader.unpack(count, "the tensor count")
    metadata = reader.unpack(count, "the metadata count")
    for name, claimed in (("tensor", tensors), ("metadata", metadata)):
        if claimed > MAX_COUNT:
            raise reader.fail(f"implausible {name} count {claimed}")
    alignment = DEFAULT_ALIGNMENT
    architecture: str | None = None
    for index in range(metadata):
        key = reader.string(f"metadata key {index}")
        kind = reader.unpack("I", f"metadata {key!r}")
        value = reader.value(kind, f"metadata {key.decode('utf-8', 'replace')!r}")
        if key == b"general.alignment" and isinstance(value, int):
            if value <= 0 or value & (value - 1):
                raise reader.fail(f"alignment {value} is not a power of two")
            alignment = value
        elif key == b"general.architecture" and isinstance(value, bytes):
            architecture = value.decode("utf-8", "replace")
    end = 0
    for index in range(tensors):
        name = reader.string(f"tensor {index}'s name").decode("utf-8", "replace")
        dims = reader.unpack("I", f"tensor {name!r}")
        if dims > MAX_DIMS:
            raise reader.fail(f"tensor {name!r} claims {dims} dimensions")
        elements = 1
        for _ in range(dims):
            elements *= reader.unpack("Q", f"tensor {name!r}'s shape")
        kind = reader.unpack("I", f"tensor {name!r}'s type")
        offset = reader.unpack("Q", f"tensor {name!r}'s offset")
        if kind in _BLOCKS:
            block, nbytes = _BLOCKS[kind]
            need = offset + -(-elements // block) * nbytes
        else:  # a type newer than this table: its start, at least, must be in the file
            need = offset
        end = max(end, need)
    start = reader.handle.tell()
    data = start + (-start % alignment) if tensors else start
    if data + end > reader.size:
        raise reader.fail(
            f"truncated: its tensors need {data + end} bytes, the file has {reader.size}"
        )
    return GGUFInfo(version, tensors, metadata, architecture, reader.size)
