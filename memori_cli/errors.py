"""The exceptions memori raises.

Every error the library raises on purpose derives from :class:`MemoriError`, so callers can
catch one type. The tree::

    MemoriError
    ├── InvalidIdError        an entity, process or session id that fails validation
    │                         (also a ValueError)
    ├── InvalidMessageError   a message to store that lacks a field or holds a bad one
    │                         (also a ValueError); nothing of the call is stored
    ├── InvalidQueryError     a recall or listing argument that cannot be used: a ``since``,
    │                         ``until`` or ``as_of`` that is no date, or ``since`` after
    │                         ``until`` (also a ValueError)
    ├── ConfigError           a config file that is not valid TOML, or a setting memori
    │                         cannot use
    ├── StoreError            the store cannot be opened, migrated or written
    │   ├── NoStoreError      no store at the path, and the caller did not ask to create one
    │   ├── ReadOnlyStoreError  a write to a store opened read-only (file or folder not writable)
    │   ├── StoreFullError    a write failed because the disk (or quota) is full
    │   ├── StoreUnavailable  the store's database server cannot be reached (dropped, restarting)
    │   └── ExtensionError    the connection cannot load sqlite-vec
    ├── ImportFormatError     a transcript file whose format is unknown or unreadable as a whole
    ├── ModelFileError        a model file that is missing or not a valid GGUF file
    ├── EndpointError         a chat-completions endpoint that is misconfigured (bad URL,
    │                         missing API-key variable), unreachable, or answers with an error
    ├── ExtractionError       a model's output is not valid extraction JSON, even after a retry
    ├── EmbeddingUnavailable  no embedding model is available (the message says how to get one)
    ├── GraphError            a graph operation could not be done (unknown node, bad import line)
    ├── NoBackend             no chat backend could be chosen or started (``memori chat``)
    └── AlreadyRunning        another daemon already serves the store

The warnings (:class:`RecallWarning`, :class:`ForgetWarning`, :class:`PermissionsWarning`)
derive from :class:`UserWarning`: the call did what it could and says what it could not.

Problems with single records of an import are not exceptions: they are collected in the
import report (see :class:`memori_cli.importers.ImportReport`) so every valid record still lands.
"""

from __future__ import annotations


class MemoriError(Exception):
    """Base class of every error memori raises on purpose."""


class InvalidIdError(MemoriError, ValueError):
    """An entity, process or session id is empty, too long or holds control characters."""


class InvalidMessageError(MemoriError, ValueError):
    """A message given to store (``Memori.add_messages``, a wrapped client's exchange) lacks
    a field or holds one that cannot be stored; the text names the message and the field.
    Nothing of that call is stored."""


class InvalidQueryError(MemoriError, ValueError):
    """A recall or listing argument cannot be used: ``since``, ``until`` or ``as_of`` is not
    an ISO-8601 date or time, or ``since`` is after ``until``.

    ``argument`` names the argument at fault (``"since"``), ``value`` is what was given and
    ``reason`` says what was expected, so a caller (the CLI) can word it its own way.
    """

    def __init__(self, argument: str, value: object, reason: str):
        super().__init__(f"{argument}: {reason}")
        self.argument = argument
        self.value = value
        self.reason = reason


class ConfigError(MemoriError):
    """A config file is not valid TOML, or holds a setting memori cannot use."""


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


class StoreUnavailable(StoreError):
    """The store's database server cannot be reached: the connection dropped, or the server
    is shutting down or restarting (PostgreSQL). Nothing was half-written; the next use
    opens a new connection, so the work can be retried once the server is back."""


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


class ExtractionError(MemoriError):
    """A model gave output that is not valid extraction JSON, even after one retry.

    ``raw`` keeps the output for inspection (``memori jobs show``).
    """

    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.raw = raw


class GraphError(MemoriError):
    """A graph operation could not be done (unknown node, bad import line)."""


class NoBackend(MemoriError):
    """No chat backend could be chosen or started."""


class AlreadyRunning(MemoriError):
    """Another daemon holds this store's pidfile."""
