"""The job pipeline: claim a job, extract, embed, and commit results with the job's completion.

Everything slow (the model, the embedder) runs outside the write transaction; the commit is
one short transaction that first checks the job is still ours, so a job finishes exactly
once however many workers run and whenever one of them dies.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

import numpy as np

from ..embed import Embedder
from ..errors import ExtractionError
from ..graph.resolve import unknown_names
from ..store import Store, jobs, memories, vectors
from . import grounding, resolve
from .embedding import embedding_text
from .extract import Extraction, Extractor, Turn

log = logging.getLogger("memori.augment")


class Stopping(Exception):
    """Raised inside a long extraction when the worker has been asked to stop."""


@dataclasses.dataclass
class AugmentReport:
    """What a run of the pipeline did."""

    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_retrying: int = 0
    memories_created: int = 0
    memories_merged: int = 0
    memories_superseded: int = 0
    triples: int = 0
    embedded: int = 0
    rejected: int = 0

    def add(self, saved: resolve.SaveResult) -> None:
        """Count one finished job and what it saved."""
        self.jobs_done += 1
        self.memories_created += saved.created
        self.memories_merged += saved.merged
        self.memories_superseded += saved.superseded
        self.triples += saved.triples
        self.embedded += saved.embedded
        self.rejected += saved.rejected

    def to_dict(self) -> dict[str, int]:
        """The report as JSON-ready data."""
        return dataclasses.asdict(self)


def worker_id() -> str:
    """A lease owner name unique to this process and run: host, pid, random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Pipeline:
    """Runs augmentation jobs from one store with one extractor (and embedder, if any)."""

    def __init__(
        self,
        store: Store,
        extractor: Extractor,
        embedder: Embedder | None = None,
        *,
        owner: str | None = None,
        stop: threading.Event | None = None,
        lease: float = jobs.LEASE_SECONDS,
    ):
        self.store = store
        self.extractor = extractor
        self.embedder = embedder
        self.owner = owner or worker_id()
        self.stop = stop or threading.Event()
        #: How long a claimed job stays this worker's without a renewal (seconds): how soon
        #: another worker takes over the jobs of one that died without a word.
        self.lease = lease

    def drain(
        self,
        *,
        progress: Callable[[int, int], None] | None = None,
        report: AugmentReport | None = None,
        prune: bool = True,
    ) -> AugmentReport:
        """Run due jobs until none is left or :attr:`stop` is set (then prune old done jobs,
        unless ``prune`` is false)."""
        report = report or AugmentReport()
        total = jobs.depth(self.store)["pending"]
        handled = 0
        while not self.stop.is_set():
            claimed = jobs.claim(self.store, self.owner, lease=self.lease)
            if not claimed:
                break
            self.run(claimed[0], report)
            handled += 1
            if progress is not None:
                progress(handled, max(total, handled))
        if prune:
            jobs.prune(self.store)
        return report

    def run(self, job: jobs.Job, report: AugmentReport) -> None:
        """Run one claimed job to done, retry or failed; never raises for the job's faults.

        A lost connection to the store's server is no fault of the job: it is raised
        (:class:`~memori_cli.errors.StoreUnavailable` or the driver's error), the job left
        leased to this worker for :func:`jobs.release_owned` once the server is back."""
        try:
            saved = self._process(job)
        except Stopping:
            jobs.release(self.store, job)
            log.info("job %s released: stopping", job.id)
        except jobs.LeaseLost as exc:
            log.warning("job %s dropped: %s", job.id, exc)
        except ExtractionError as exc:
            # Already retried once inside the extractor: park it with the raw output.
            jobs.fail(self.store, job, str(exc), output=exc.raw, retry=False)
            report.jobs_failed += 1
            log.error("job %s failed: %s", job.id, exc)
        except Exception as exc:  # a worker never dies of one job
            if self.store.is_lost(exc):
                raise
            status = jobs.fail(self.store, job, f"{type(exc).__name__}: {exc}")
            if status == "failed":
                report.jobs_failed += 1
            else:
                report.jobs_retrying += 1
            log.exception("job %s attempt %s failed (%s)", job.id, job.attempts, status)
        else:
            report.add(saved)
            log.info(
                "job %s done: %s messages, %s new memories, %s merged, %s superseded",
                job.id,
                len(job.message_ids),
                saved.created,
                saved.merged,
                saved.superseded,
            )

    def _process(self, job: jobs.Job) -> resolve.SaveResult:
        rows = memories.job_turns(self.store, job)
        turns = [
            Turn(
                id=r["id"],
                role=r["role"],
                content=r["content"],
                created_at=r["created_at"],
                name=r["name"],
            )
            for r in rows
        ]

        def between() -> None:
            if self.stop.is_set():
                raise Stopping
            jobs.renew(self.store, job, lease=self.lease)

        extraction = (
            self.extractor.extract(
                turns,
                summary=memories.session_summary(self.store, job.session_id),
                between=between,
            )
            if turns
            else Extraction()
        )
        # Before anything is embedded or stored: what the sources do not support goes
        # nowhere but the job's list of rejections.
        extraction, rejected = grounding.check(extraction, turns, job.entity_id)
        return resolve.save(
            self.store,
            job,
            extraction,
            extractor=self.extractor.name,
            found=self._embed(job, extraction),
            rejected=[(r.item, r.content, r.reason) for r in rejected],
        )

    def _embed(self, job: jobs.Job, extraction: Extraction) -> resolve.Vectors | None:
        """Vectors for the job's unembedded messages and its memories, or None when there is
        no embedder or the index belongs to another model (``memori reembed`` then)."""
        embedder = self.embedder
        if embedder is None:
            return None
        if vectors.stale_index(self.store, embedder.name, embedder.dim):
            return None
        rows = vectors.pending(self.store, ids=job.message_ids, limit=len(job.message_ids) + 1)
        texts = [embedding_text(row) for row in rows]
        texts += [memory.content for memory in extraction.memories]
        names = unknown_names(
            self.store,
            job.entity_id,
            dict.fromkeys(n for t in extraction.triples for n in (t.subject, t.object)),
        )
        texts += names
        matrix = (
            np.asarray(embedder.embed(texts), dtype=np.float32)
            if texts
            else np.zeros((0, embedder.dim), dtype=np.float32)
        )
        return resolve.Vectors(
            model=embedder.name,
            message_ids=[row["id"] for row in rows],
            messages=matrix[: len(rows)],
            memories=list(matrix[len(rows) : len(texts) - len(names)]),
            names=dict(zip(names, matrix[len(texts) - len(names) :], strict=True)),
        )
