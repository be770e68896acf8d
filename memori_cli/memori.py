"""Memori: the coordinator a program talks to (attribution, import, recall)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import os
import shutil
import socket
import sys
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import config as config_module
from . import dates, embed, gguf_file, importers, recall
from .attribution import Attribution, new_session_id, validate_id
from .augment import resolve as augment_resolve
from .augment.combine import CombinedExtractor
from .augment.embedding import embed_pending, embed_pending_memories
from .augment.extract import Extractor
from .augment.pipeline import AugmentReport, Pipeline
from .augmentation import Augmentation
from .capture import LLM, forget_spooled, spool_path
from .config import Config, StorageConfig, default_entity
from .errors import (
    EndpointError,
    ForgetWarning,
    InvalidMessageError,
    ModelFileError,
    RecallWarning,
)
from .graph import Graph
from .importers.formats import RecordError
from .importers.normalize import Defaults, Occurrences, normalize
from .parts import KINDS, EntityInfo, JobInfo, Memory, Session
from .recall import RecallHit
from .redact import redact, redact_id
from .store import Store, connect, jobs, vectors
from .store import memories as store_memories
from .store import messages as store_messages


class Memori:
    """Long-term memory over one local SQLite store.

    ``conn`` is a path, a DB-API 2.0 SQLite connection, a callable returning one (any driver:
    ``lambda: sqlite3.connect("memori.db")``, sqlean, pysqlite3, an apsw shim), or ``None``
    for the default store. A connection that cannot load sqlite-vec (the stdlib ``sqlite3`` of
    most Pythons) searches vectors in process with numpy, with the same results. Connections
    the caller hands over stay theirs: memori never closes them and uses each on one thread
    (see :class:`~memori_cli.store.Store`). Attribution (entity, process, session) is kept
    per thread and per asyncio task. ``create=False`` raises :class:`NoStoreError` on first
    use when the store file is missing, instead of creating it. Only a memori store or a new,
    empty file is ever opened.
    """

    def __init__(
        self,
        conn: str | os.PathLike[str] | connect.ConnectionFactory | None = None,
        *,
        embedder: embed.Embedder | None = None,
        extractor: Extractor | None = None,
        create: bool = True,
    ):
        self.store = Store(conn, create=create)
        self.store.vector_cache_mb = config_module.vector_cache_mb
        self.config = Config(storage=StorageConfig(self.store))
        self._embedder = embedder
        self._extractor = extractor
        self._warned: set[str] = set()
        self._attribution: contextvars.ContextVar[Attribution | None] = contextvars.ContextVar(
            f"memori_attribution_{id(self)}", default=None
        )

    # -- attribution ---------------------------------------------------------------------
    @property
    def current(self) -> Attribution:
        """The attribution in force in this thread or task."""
        return self._attribution.get() or Attribution(entity_id=default_entity())

    def attribution(
        self, entity_id: str | None = None, process_id: str | None = None
    ) -> contextlib.AbstractContextManager[Attribution]:
        """Attribute what follows, in this thread or task, to ``entity_id`` and ``process_id``.

        Takes effect at once; used as a context manager, the previous attribution comes back on
        exit. Changing the entity starts a new session.
        """
        previous = self.current
        entity = (
            validate_id(entity_id, "entity_id") if entity_id is not None else previous.entity_id
        )
        same_entity = entity == previous.entity_id
        value = Attribution(
            entity_id=entity,
            process_id=process_id if process_id is not None else previous.process_id,
            session_id=previous.session_id if same_entity else None,
        )
        return self._set(value)

    def new_session(self) -> str:
        """Start a new session (thread) for the current attribution; returns its id."""
        session = new_session_id()
        self._set(self.current.replace(session_id=session))
        return session

    def set_session(self, session_id: str) -> None:
        """Continue the session ``session_id`` in this thread or task."""
        self._set(self.current.replace(session_id=validate_id(session_id, "session_id")))

    def _set(self, value: Attribution) -> contextlib.AbstractContextManager[Attribution]:
        token = self._attribution.set(value)

        @contextlib.contextmanager
        def restore() -> Iterator[Attribution]:
            try:
                yield value
            finally:
                self._attribution.reset(token)

        return restore()

    def _session(self) -> str:
        current = self.current
        if current.session_id is None:
            return self.new_session()
        return current.session_id

    @functools.cached_property
    def llm(self) -> LLM[Memori]:
        """Wrap LLM clients: ``mem.llm.register(client, ...)`` captures every call and injects
        memories (see :mod:`memori_cli.capture`); it returns this Memori, so calls chain."""
        return LLM(self, _CaptureSink(self))

    @functools.cached_property
    def augmentation(self) -> Augmentation:
        """What augmentation did with what this process stored:
        ``mem.augmentation.wait(timeout=None)`` has it done before a short script exits."""
        return Augmentation(self)

    @functools.cached_property
    def graph(self) -> Graph:
        """The knowledge graph: look, correct, export, import (see :mod:`memori_cli.graph`)."""
        return Graph(self)

    # -- writing -------------------------------------------------------------------------
    def add_messages(
        self, messages: Iterable[Mapping[str, Any]], *, source: str = "api"
    ) -> store_messages.AddResult:
        """Store messages (``{"role", "content", "name"?, "timestamp"?, "id"?}``) under the
        current attribution, redacted and queued for augmentation.

        Every call stores its messages, even words stored before (people say "yes" twice); a
        message whose ``id`` the entity already has is skipped, so a caller that may repeat a
        call passes ids. Raises :class:`InvalidMessageError` (a ``ValueError``) naming the
        message and field at fault; nothing is stored then.
        """
        self._session()
        return self._add(messages, self.current, source)

    def _add(
        self,
        messages: Iterable[Mapping[str, Any]],
        attribution: Attribution,
        source: str,
        *,
        wait_lost: float = 0.0,
    ) -> store_messages.AddResult:
        """Store ``messages`` as one call's; a lost connection to the store's server is
        retried for up to ``wait_lost`` seconds, with the same batch (its occurrence stamps
        make a retry of a commit that landed unseen a duplicate, skipped)."""
        defaults = Defaults(
            entity=attribution.entity_id,
            session=attribution.session_id or new_session_id(),
            process=attribution.process_id,
        )
        batch = []
        # Every call is a source of its own: the same words in two calls are two utterances,
        # never a re-import (only an external id makes a call's message idempotent).
        occurrences = Occurrences(scope=uuid.uuid4().hex)
        for i, raw in enumerate(messages):
            fields = {k: raw[k] for k in ("role", "content", "name", "timestamp", "id") if k in raw}
            try:
                message = normalize(fields, defaults)
            except RecordError as exc:
                raise InvalidMessageError(f"messages[{i}]: {exc}") from None
            if message is None:
                continue
            message.source = source
            occurrences.stamp(message)
            batch.append(message)
        return self.store.retry_lost(
            lambda: store_messages.add_messages(self.store, batch), seconds=wait_lost
        )

    def import_file(
        self,
        path: str | Path | BinaryIO,
        *,
        format: str | None = None,
        entity_id: str | None = None,
        process_id: str | None = None,
        session_id: str | None = None,
        progress: importers.ProgressCallback | None = None,
        max_unzipped_mb: int = importers.MAX_UNZIPPED_MB,
    ) -> importers.ImportReport:
        """Import a transcript file; the ids given apply where the file sets none.

        ``path`` may also be ``"-"`` (standard input) or a binary stream opened for reading:
        its bytes are copied to a private temporary file first (the format is detected from
        the start of it, and a zip archive needs to be seekable), which is deleted afterwards.
        Records from a stream land in session ``import:stdin`` unless ``session_id`` or the
        records say otherwise. ``max_unzipped_mb`` caps what is inflated from a zip archive
        (see :func:`memori_cli.importers.import_file`).
        """
        if not isinstance(path, (str, os.PathLike)) or str(path) == "-":
            stream: BinaryIO = sys.stdin.buffer if isinstance(path, (str, os.PathLike)) else path
            with _spooled(stream) as spooled:
                report = self.import_file(
                    spooled,
                    format=format,
                    entity_id=entity_id,
                    process_id=process_id,
                    session_id="import:stdin" if session_id is None else session_id,
                    progress=progress,
                    max_unzipped_mb=max_unzipped_mb,
                )
            report.path = "-"
            return report
        current = self.current
        defaults = Defaults(
            entity=current.entity_id if entity_id is None else validate_id(entity_id, "entity_id"),
            session=f"import:{Path(path).name}"
            if session_id is None
            else validate_id(session_id, "session_id"),
            process=current.process_id
            if process_id is None
            else validate_id(process_id, "process_id"),
        )
        return importers.import_file(
            self.store,
            path,
            defaults=defaults,
            format=format,
            progress=progress,
            max_unzipped_mb=max_unzipped_mb,
        )

    # -- embeddings ----------------------------------------------------------------------
    def embedder(self) -> embed.Embedder | None:
        """The embedding model in use, or None (recall is then lexical only)."""
        if self._embedder is None and self.config.embedding_model != "none":
            self._embedder = embed.load(self.config.embedding_model)
        return self._embedder

    def extractor(self) -> Extractor:
        """The memory extractor: with a chat model configured (a GGUF file or an
        OpenAI-compatible endpoint) the rules and the model together, or the model alone
        (``extractors = "model"``); else the rule extractor.

        Raises :class:`ModelFileError` when the chat model file is missing or not valid GGUF,
        :class:`EndpointError` for an endpoint's bad URL or missing API-key variable.
        """
        if self._extractor is None:
            from .augment.rules import RuleExtractor

            spec = self.config.chat_model
            if spec == "none":
                self._extractor = RuleExtractor()
            else:
                choice = config_module.check_extractors(self.config.extractors)
                model = self._model_extractor(spec)
                self._extractor = (
                    CombinedExtractor(RuleExtractor(), model) if choice == "rules+model" else model
                )
        return self._extractor

    def _model_extractor(self, spec: str) -> Extractor:
        if config_module.is_endpoint(spec):
            from .augment.endpoint import EndpointExtractor

            if not self.config.chat_name:
                raise EndpointError(
                    f"the chat endpoint {spec} has no model name: "
                    "memori model add --endpoint URL --name MODEL"
                )
            return EndpointExtractor(
                spec, self.config.chat_name, api_key_env=self.config.chat_api_key_env or None
            )
        from .augment.llm import LlamaCppExtractor

        gguf_file.check(spec)  # a clear ModelFileError, not llama.cpp's failure
        try:
            return LlamaCppExtractor(spec)
        except (ValueError, OSError, RuntimeError) as exc:
            raise ModelFileError(f"{spec}: llama.cpp cannot load the chat model: {exc}") from exc

    def pipeline(self, *, stop: Any = None) -> Pipeline:
        """A job pipeline over this store with the configured extractor and embedder.

        Without a usable embedder, memories are still extracted; vectors come later.
        """
        try:
            embedder = self.embedder()
        except embed.EmbeddingUnavailable as exc:
            # The reason is a sentence of its own ("...`memori model pull`."): no ".;" join.
            reason = str(exc).rstrip(". ")
            self._warn_once("embedder", f"{reason}; memories are extracted without vectors")
            embedder = None
        return Pipeline(
            self.store, self.extractor(), embedder, stop=stop, lease=config_module.lease_seconds()
        )

    def augment(self, *, progress: importers.ProgressCallback | None = None) -> AugmentReport:
        """Run pending augmentation now, in this thread: every due job (typed memories,
        triples, summaries, message vectors), then any message or memory still without a
        vector. Safe to interrupt and to run beside the daemon.

        Without an embedding model (``none``, or a configured one that is missing) the jobs
        still run and a warning says, once, that vectors are left for later: that is no error.

        Jobs leased to a worker on this host that died (killed with -9) are taken back first,
        as the daemon does when it starts, rather than waiting for their lease to run out."""
        jobs.reclaim_dead(self.store, socket.gethostname())
        report = self.pipeline().drain(progress=progress)
        try:
            embedder = self.embedder()
        except embed.EmbeddingUnavailable:
            # No embedding model: pipeline() said so once (a RecallWarning); memories are
            # extracted, recall stays lexical, vectors come once a model is available.
            return report
        if embedder is None:
            return report
        stale = self._stale(embedder)
        if stale:
            raise embed.EmbeddingUnavailable(stale)
        report.embedded += embed_pending(self.store, embedder, progress=progress)
        embed_pending_memories(self.store, embedder)
        return report

    def index_stale(self) -> bool:
        """Whether the stored vectors were made by another model than the one configured."""
        embedder = self.embedder()
        return embedder is not None and self._stale(embedder) is not None

    def reembed(self, *, progress: importers.ProgressCallback | None = None) -> AugmentReport:
        """Drop every vector and embed all messages and memories again with the configured
        model."""
        if self.embedder() is None:
            return AugmentReport()
        vectors.reset(self.store)
        return self.augment(progress=progress)

    def _stale(self, embedder: embed.Embedder) -> str | None:
        """Why the vector index cannot serve ``embedder``, or None if it can."""
        built = vectors.stale_index(self.store, embedder.name, embedder.dim)
        if built is None:
            return None
        return (
            f"the vector index was built with {built[0]}, but the configured model is "
            f"{embedder.name}; recall is lexical until you run `memori reembed`"
        )

    def _query_vector(self, query: str) -> np.ndarray | None:
        """The query's vector, or None (with a warning, once) when vectors cannot be used."""
        if not query.strip():
            return None
        try:
            embedder = self.embedder()
        except embed.EmbeddingUnavailable as exc:
            self._warn_once("embedder", str(exc))
            return None
        if embedder is None:
            return None
        stale = self._stale(embedder)
        if stale:
            self._warn_once("stale", stale)
            return None
        return np.asarray(embedder.embed([query])[0], dtype=np.float32)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RecallWarning, stacklevel=5)

    # -- reading -------------------------------------------------------------------------
    def recall(
        self,
        query: str,
        limit: int = 10,
        *,
        entity_id: str | None = None,
        process_id: str | None = None,
        since: dates.Moment | None = None,
        until: dates.Moment | None = None,
        explain: bool = False,
        as_of: dates.Moment | None = None,
        memories: bool = True,
    ) -> list[RecallHit]:
        """What memory holds about ``query`` for the entity (current attribution by default).

        Hybrid: bm25 over every message and memory, vector search over those embedded so far,
        fused and ranked by recency, trust and use. ``since`` (inclusive) and ``until``
        (exclusive) bound when the items were written. Memories are those true now, or at
        ``as_of``. Times are ISO-8601 text (``"2024-05-01"``, ``"2024-05-01T10:30:00+02:00"``;
        no offset is UTC) or ``datetime`` values; one that is not a time, or ``since`` after
        ``until``, raises :class:`InvalidQueryError` (a ``ValueError``) naming it.
        ``explain`` adds each hit's score components. A query longer than
        ``recall.MAX_QUERY_CHARS`` is cut to its start, with a :class:`RecallWarning`.

        Each hit is a :class:`RecallHit` that also answers the upstream library's names:
        ``hit.similarity`` (the same as ``score``), and ``hit["content"]``,
        ``hit.get("created_at")`` as a mapping.
        """
        entity = (
            self.current.entity_id if entity_id is None else validate_id(entity_id, "entity_id")
        )
        if process_id is not None:
            validate_id(process_id, "process_id")
        # Checked before any work: a bad date is the caller's mistake, not an empty answer.
        request = recall.RecallRequest.of(
            query, entity, process=process_id, since=since, until=until, as_of=as_of,
            limit=limit, memories=memories, explain=explain,
        )  # fmt: skip
        clipped = recall.clip_query(query)
        if len(clipped) < len(query):
            # One text for every long query, so the default warning filter shows it once per
            # call site rather than once per length (wrapped clients recall on each call).
            warnings.warn(
                f"the query was cut to its first {recall.MAX_QUERY_CHARS:,} characters: "
                "recall reads no more of a query",
                RecallWarning,
                stacklevel=2,
            )
            request = dataclasses.replace(request, query=clipped)
        return recall.recall(self.store, request, self._query_vector, config=self.config.ranking)

    async def arecall(self, query: str, limit: int = 10, **options: Any) -> list[RecallHit]:
        """:meth:`recall` for asyncio code: runs in a worker thread, never blocking the loop."""
        return await asyncio.to_thread(self.recall, query, limit, **options)

    def mark_used(self, hits: Iterable[RecallHit]) -> int:
        """Record that these hits were used (e.g. put in a prompt); used items rank higher."""
        by_key: dict[tuple[str, bool], list[int]] = {}
        for hit in hits:
            by_key.setdefault((hit.entity, hit.kind == "message"), []).append(hit.id)
        return sum(
            (store_messages if message else store_memories).mark_used(self.store, entity, ids)
            for (entity, message), ids in by_key.items()
        )

    # -- memories and jobs ---------------------------------------------------------------
    def memories(
        self,
        entity_id: str | None = None,
        *,
        kind: str | None = None,
        as_of: dates.Moment | None = None,
        history: bool = False,
        limit: int = 100,
    ) -> list[Memory]:
        """The entity's memories, newest first: current ones, those true at ``as_of`` (a time
        as :meth:`recall` takes it; else :class:`InvalidQueryError`), or with ``history``
        every one ever made (superseded ones too)."""
        entity = (
            self.current.entity_id if entity_id is None else validate_id(entity_id, "entity_id")
        )
        when = dates.moment(as_of, "as_of")
        return store_memories.list_memories(
            self.store, entity, kind=kind, as_of=when, history=history, limit=limit
        )

    def _entity(self, entity_id: str | None) -> str:
        """``entity_id`` checked, or the current attribution's entity."""
        if entity_id is None:
            return self.current.entity_id
        return validate_id(entity_id, "entity_id")

    def memory(self, memory_id: int, *, entity_id: str | None = None) -> Memory | None:
        """One of the entity's memories (current attribution by default) with its sources,
        or None: another entity's memory is not there for this one."""
        return store_memories.get_memories(
            self.store, [memory_id], entity_id=self._entity(entity_id)
        ).get(int(memory_id))

    def memory_history(self, memory_id: int, *, entity_id: str | None = None) -> list[Memory]:
        """Every memory that held the same slot about the same person, oldest first; empty
        if the memory is not the entity's (current attribution by default)."""
        return store_memories.history(self.store, memory_id, entity_id=self._entity(entity_id))

    def forget_memory(self, memory_id: int, *, entity_id: str | None = None) -> bool:
        """Delete one of the entity's memories (current attribution by default), from FTS and
        vectors too, with the graph edges made only from it and its line in the session
        summary; True if it existed."""
        found = store_memories.forget_memory(
            self.store, memory_id, entity_id=self._entity(entity_id)
        )
        if found and not self.store.checkpoint():
            warnings.warn(
                f"forgot memory {memory_id}, but another connection holds a read transaction "
                f"on {self.store.describe()}, so its text may remain in the write-ahead log "
                "(-wal file) until that connection closes",
                ForgetWarning,
                stacklevel=2,
            )
        return found

    def add_memory(
        self,
        content: str,
        *,
        kind: str = "fact",
        about: str = "User",
        source_ids: Iterable[int] = (),
        entity_id: str | None = None,
        extractor: str = "stated",
    ) -> int:
        """Store a memory stated outright (a user or a tool saying "remember this"), not
        extracted: redacted like every message, current from now, from the entity's messages
        ``source_ids`` where given. The same text of the same kind about the same person
        already held takes the sources instead (its id is returned)."""
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
        memory_id = augment_resolve.add_memory(
            self.store, self._entity(entity_id), kind=kind, content=redact(content),
            about=redact_id(about), extractor=extractor, source_ids=list(source_ids),
        )  # fmt: skip
        assert memory_id is not None  # only a correction finds nothing to replace
        return memory_id

    def correct_memory(
        self, memory_id: int, content: str, *, entity_id: str | None = None
    ) -> Memory | None:
        """Replace one of the entity's current memories (current attribution by default) with
        ``content``: the new memory supersedes it (same kind, person and slot), the old one
        stays in :meth:`memory_history`. Returns the new memory (the same one if it says
        ``content`` already), or None if the entity has no current memory ``memory_id``
        (another entity's memory is not there for this one)."""
        new_id = augment_resolve.add_memory(
            self.store, self._entity(entity_id), kind="fact", content=redact(content),
            about="", extractor="correction", supersedes=int(memory_id),
        )  # fmt: skip
        return None if new_id is None else self.memory(new_id, entity_id=entity_id)

    def jobs(self, *, status: str | None = None, limit: int = 50) -> list[JobInfo]:
        """Augmentation jobs, newest first (all but done ones, or of one ``status``)."""
        return jobs.list_jobs(self.store, status=status, limit=limit)

    def job(self, job_id: int) -> dict[str, Any] | None:
        """One job in full (error, raw model output, message ids) with the items grounding
        rejected from it and why; None if there is no such job."""
        return jobs.get_job(self.store, job_id)

    def retry_jobs(self, job_ids: list[int] | None = None) -> int:
        """Requeue failed jobs (all, or those listed); returns how many."""
        return jobs.retry_failed(self.store, job_ids)

    def sessions(self, entity_id: str | None = None) -> list[Session]:
        """Sessions with message counts, of one entity or of all."""
        if entity_id is not None:
            validate_id(entity_id, "entity_id")
        return store_messages.list_sessions(self.store, entity_id)

    def entities(self) -> list[EntityInfo]:
        """Every entity in the store with counts of messages, current memories and sessions,
        and its last activity; most recently active first."""
        return store_messages.list_entities(self.store)

    def entity_count(self) -> int:
        """How many entities the store holds."""
        return store_messages.entity_count(self.store)

    def stats(self) -> dict[str, Any]:
        """Row counts, the store's path and its size on disk."""
        counts = store_messages.counts(self.store)
        size = self.store.backend.size_bytes(self.store.conn) or 0
        if self.store.path is not None:
            for suffix in ("", "-wal", "-shm"):
                candidate = Path(str(self.store.path) + suffix)
                if candidate.exists():
                    size += candidate.stat().st_size
        return {"path": self.store.describe(), "bytes": size, **counts}

    def forget(self, entity_id: str) -> dict[str, int]:
        """Delete everything derived from ``entity_id``; returns rows removed per table.

        The entity's lines in the capture spool file go too. Where another connection's read
        transaction keeps the write-ahead log from being wiped, a
        :class:`~memori_cli.errors.ForgetWarning` says so (the rows are gone either way).
        """
        entity_id = validate_id(entity_id, "entity_id")
        forget_spooled(self.store, entity_id)
        return store_messages.forget_entity(self.store, entity_id)

    def close(self) -> None:
        """Store what wrapped calls captured, then close the connections memori opened (a
        connection the caller handed over stays open: it is theirs)."""
        if "llm" in self.__dict__:
            self.llm.writer.close()
        self.store.close()


class _CaptureSink:
    """A Memori as capture's sink (:class:`~memori_cli.capture.CaptureSink`): what ``mem.llm``
    writes through, and nothing more of the Memori.

    It holds the Memori weakly: the capture writer's thread holds the sink, and must not keep
    alive a Memori the program dropped (a write then raises ``ReferenceError``, which the
    writer takes as "nothing to write to").
    """

    __slots__ = ("_mem",)

    def __init__(self, mem: Memori):
        self._mem: Memori = weakref.proxy(mem)

    def session(self) -> Attribution:
        self._mem._session()
        return self._mem.current

    def add(
        self, messages: Sequence[Mapping[str, Any]], attribution: Attribution, source: str
    ) -> store_messages.AddResult:
        # A quick restart of the store's server is waited out; a longer outage spools the
        # exchange, within the writer's 10 s flush at exit.
        return self._mem._add(messages, attribution, source, wait_lost=8.0)

    def spool_path(self) -> Path:
        return spool_path(self._mem.store)


@contextlib.contextmanager
def _spooled(stream: BinaryIO) -> Iterator[Path]:
    """``stream``'s bytes in a private (0600) temporary file, deleted on exit."""
    fd, name = tempfile.mkstemp(prefix="memori-import-", suffix=".tmp")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
