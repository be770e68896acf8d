"""The exceptions memori raises.

Every error the library raises on purpose derives from :class:`MemoriError`, so callers can
catch one type. The tree::

    MemoriError
    ├── InvalidIdError        an entity, process or session id that fails validation
    ├── StoreError            the store cannot be opened, migrated or written
    │   ├── NoStoreError      no store at the path, and the caller did not ask to create one
    │   ├── ReadOnlyStoreError  a write to a store opened read-only (file or folder not writable)
    │   ├── StoreFullError    a write failed because the disk (or quota) is full
    │   └── ExtensionError    the connection cannot load sqlite-vec
    ├── ImportFormatError     a transcript file whose format is unknown or unreadable as a whole
    ├── ModelFileError        a model file that is missing or not a valid GGUF file
    ├── EndpointError         a chat-completions endpoint that is misconfigured (bad URL,
    │                         missing API-key variable), unreachable, or answers with an error
    └── EmbeddingUnavailable  no embedding model is available (the message says how to get one)

Problems with single records of an import are not exceptions: they are collected in the
import report (see :class:`memori_cli.importers.ImportReport`) so every valid record still lands.
"""

from __future__ import annotations


class MemoriError(Exception):
    """Base class of every error memori raises on purpose."""


class InvalidIdError(MemoriError, ValueError):
    """An entity, process or session id is empty, too long or holds control characters."""


class StoreError(MemoriError):
    """The store cannot be opened, migrated or written."""


class NoStoreError(StoreError):
    """There is no store at the path given, and the caller asked not to create one."""


class ReadOnlyStoreError(StoreError):
    """A write was asked of a store that memori could open only read-only (its file or its
    folder is not writable: permissions, a read-only mount). Reading works."""


class StoreFullError(StoreError):
    """A write failed because the disk (or the user's quota) is full; the transaction was
    rolled back, so nothing was half-written."""


class ExtensionError(StoreError):
    """The SQLite connection cannot load the sqlite-vec extension."""


class ImportFormatError(MemoriError):
    """A transcript file cannot be read as any supported format."""


class ModelFileError(MemoriError):
    """A configured or given model file is missing, unreadable or not a valid GGUF file."""


class EndpointError(MemoriError):
    """An OpenAI-compatible chat-completions endpoint used for extraction is misconfigured
    (a bad URL, an API-key environment variable that is not set), cannot be reached, or
    answers with an error, after the retries. A job that meets it is retried later."""


class RecallWarning(UserWarning):
    """Recall did with less than asked: it could not use vectors (no embedding model, or a
    stale index) and fell back to words, or it cut an over-long query to its start."""


class ForgetWarning(UserWarning):
    """Forgetting could not finish wiping the files: another connection held a read
    transaction, so the write-ahead log (``memori.db-wal``) may still hold the deleted text
    until it closes and a later checkpoint (another ``forget``, or ``memori doctor``) runs."""


class PermissionsWarning(UserWarning):
    """A store file or folder was readable by others and has been tightened."""


class EmbeddingUnavailable(MemoriError):
    """No embedding model is available; the message says how to get one."""
