"""The augmentation queue: jobs claimed under a lease, finished or failed, retried, pruned.

The database is the queue. A claim is one ``BEGIN IMMEDIATE`` transaction, so two workers
never take the same job; a worker that dies leaves a lease that expires and is reclaimed. A
job's results commit in the same transaction as :func:`finish`, which checks that the lease is
still this worker's: if not (reclaimed, or the entity forgotten), the results roll back too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Collection
from typing import Any

from ..parts import JobInfo
from .core import Store, Tx, dict_rows, is_rowid, now_iso, rowids

#: A claimed job belongs to its worker for this long; long model runs renew it.
LEASE_SECONDS = 120.0
#: After this many attempts a job is parked as failed.
MAX_ATTEMPTS = 4
#: Retry delays grow as BACKOFF_SECONDS * 4 ** (attempt - 1): 10 s, 40 s, 160 s.
BACKOFF_SECONDS = 10.0
#: Finished jobs are kept this long (for `memori jobs`), then pruned.
KEEP_DONE_SECONDS = 3600.0


class LeaseLost(Exception):
    """The job is no longer this worker's (its lease was reclaimed, or its entity forgotten)."""


@dataclasses.dataclass(frozen=True)
class Job:
    """A claimed job."""

    id: int
    kind: str
    entity_id: str
    session_id: int | None
    message_ids: list[int]
    attempts: int
    owner: str


def claim(
    store: Store,
    owner: str,
    *,
    limit: int = 1,
    lease: float = LEASE_SECONDS,
    ids: Collection[int] | None = None,
) -> list[Job]:
    """Take up to ``limit`` due jobs (pending, or running with an expired lease), oldest first;
    with ``ids``, only among those jobs.

    A job whose lease expired ``MAX_ATTEMPTS`` times (its worker keeps dying on it) is parked
    as failed instead of being handed out again.
    """
    with store.write(queue=True) as tx:
        now = tx.backend.now(tx)  # the clock every worker of the store shares
        rows = store.backend.claim_jobs(
            tx,
            owner,
            now=now,
            lease=lease,
            limit=int(limit),
            ids=None if ids is None else rowids(ids),
            max_attempts=MAX_ATTEMPTS,
            stamp=now_iso(),
        )
    jobs = [
        Job(
            id=row[0],
            kind=row[1],
            entity_id=row[2],
            session_id=row[3],
            message_ids=[int(i) for i in json.loads(row[4]).get("message_ids", [])],
            attempts=row[5],
            owner=owner,
        )
        for row in rows
    ]
    return sorted(jobs, key=lambda job: job.id)


def unfinished(store: Store, ids: Collection[int]) -> dict[int, float]:
    """Of the jobs ``ids``, those not done or failed yet: id -> when it is next due (its
    ``run_after`` when pending, its lease's end when running). Jobs pruned or forgotten are
    finished."""
    wanted = rowids(ids)
    if not wanted:
        return {}
    rows = store.conn.execute(
        f"""SELECT id, CASE status WHEN 'running' THEN lease_expires ELSE run_after END
            FROM jobs WHERE status IN ('pending', 'running')
            AND id IN ({",".join(map(str, wanted))})"""
    ).fetchall()
    return {int(i): float(due or 0) for i, due in rows}


def check_lease(tx: Tx, job: Job) -> None:
    """Inside a write transaction: raise :class:`LeaseLost` unless ``job`` is still ours."""
    if not tx.backend.lease_held(tx, job.id, job.owner):
        raise LeaseLost(f"job {job.id} is no longer leased to {job.owner}")


def finish(tx: Tx, job: Job) -> None:
    """Inside the results' write transaction: mark ``job`` done (after :func:`check_lease`)."""
    check_lease(tx, job)
    tx.execute(
        """UPDATE jobs SET status = 'done', lease_owner = NULL, lease_expires = NULL,
               error = NULL, output = NULL, finished_at = ?, updated_at = ? WHERE id = ?""",
        (tx.backend.now(tx), now_iso(), job.id),
    )


def renew(store: Store, job: Job, *, lease: float = LEASE_SECONDS) -> None:
    """Extend ``job``'s lease (between the chunks of a long model run)."""
    with store.write(queue=True) as conn:
        check_lease(conn, job)
        conn.execute(
            "UPDATE jobs SET lease_expires = ? WHERE id = ?",
            (conn.backend.now(conn) + lease, job.id),
        )


def fail(
    store: Store, job: Job, error: str, *, output: str | None = None, retry: bool = True
) -> str:
    """Record a failure: back to pending after a growing delay, or parked as failed when
    ``retry`` is false or the attempts are used up. Returns the new status."""
    delay = BACKOFF_SECONDS * 4 ** max(0, job.attempts - 1)
    status = "pending" if retry and job.attempts < MAX_ATTEMPTS else "failed"
    with store.write(queue=True) as conn:
        conn.execute(
            """UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires = NULL,
                   run_after = ?, error = ?, output = ?, updated_at = ?
               WHERE id = ? AND lease_owner = ?""",
            (
                status,
                conn.backend.now(conn) + delay,
                error[:2000],
                output,
                now_iso(),
                job.id,
                job.owner,
            ),
        )
    return status


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False  # not a pid this system can have
    return True


def _dead_owned(store: Store, host: str, alive: Callable[[int], bool]) -> list[int]:
    """Running jobs leased (``host:pid:token``) to a process on ``host`` that is gone."""
    dead = []
    for job_id, owner in store.conn.execute(
        "SELECT id, lease_owner FROM jobs WHERE status = 'running' AND lease_owner LIKE ?",
        (f"{host}:%",),
    ):
        pid = owner.split(":")[1] if owner.count(":") >= 2 else ""
        if pid.isdigit() and not alive(int(pid)):
            dead.append(int(job_id))
    return dead


def stuck(store: Store, host: str, alive: Callable[[int], bool] = pid_alive) -> list[int]:
    """Ids of running jobs no worker is doing: the lease ran out, or its owner on ``host``
    is dead. Taken again by the next claim (or at once after :func:`reclaim_dead`)."""
    expired = {
        int(i)
        for (i,) in store.conn.execute(
            "SELECT id FROM jobs WHERE status = 'running' AND coalesce(lease_expires, 0) < ?",
            (store.backend.now(store.conn),),
        )
    }
    return sorted(expired | set(_dead_owned(store, host, alive)))


def reclaim_dead(store: Store, host: str, alive: Callable[[int], bool] = pid_alive) -> int:
    """Expire the leases of workers on ``host`` whose process is gone (a daemon or a
    foreground ``memori augment`` killed with -9), so their jobs are taken again now instead
    of when the lease runs out."""
    dead = _dead_owned(store, host, alive)
    if dead:
        with store.write(queue=True) as conn:
            conn.executemany(
                "UPDATE jobs SET lease_expires = 0 WHERE id = ? AND status = 'running'",
                [(job_id,) for job_id in dead],
            )
    return len(dead)


def release(store: Store, job: Job) -> None:
    """Hand ``job`` back untouched (the worker is stopping); the attempt does not count."""
    _release(store, job.owner, job.id)


def release_owned(store: Store, owner: str) -> int:
    """Hand back untouched every job leased to ``owner``, a worker whose connection to the
    store dropped: a claim may have committed unseen, and a job's results may or may not
    have (if they did, the job is done and not ``owner``'s any more). Returns how many."""
    return _release(store, owner, None)


def _release(store: Store, owner: str, job_id: int | None) -> int:
    """Hand back ``owner``'s running job ``job_id`` (all of them when None); how many."""
    one, ids = ("", ()) if job_id is None else (" AND id = ?", (job_id,))
    with store.write(queue=True) as conn:
        cursor = conn.execute(
            f"""UPDATE jobs SET status = 'pending', lease_owner = NULL, lease_expires = NULL,
                   attempts = {conn.backend.greatest}(attempts - 1, 0), updated_at = ?
               WHERE lease_owner = ? AND status = 'running'{one}""",
            (now_iso(), owner, *ids),
        )
        return int(cursor.rowcount)


def retry_failed(store: Store, job_ids: list[int] | None = None) -> int:
    """Requeue failed jobs (all, or those in ``job_ids``) with fresh attempts."""
    sql = """UPDATE jobs SET status = 'pending', attempts = 0, run_after = 0, error = NULL,
                 output = NULL, updated_at = ? WHERE status = 'failed'"""
    params: list[Any] = [now_iso()]
    if job_ids is not None:
        job_ids = rowids(job_ids)
        if not job_ids:  # none that could exist (an empty list must not mean "all")
            return 0
        sql += f" AND id IN ({','.join('?' * len(job_ids))})"
        params += job_ids
    with store.write(queue=True) as conn:
        return int(conn.execute(sql, params).rowcount)


def prune(store: Store, *, older_than: float = KEEP_DONE_SECONDS) -> int:
    """Delete jobs finished more than ``older_than`` seconds ago; returns how many."""
    with store.write(queue=True) as conn:
        cursor = conn.execute(
            "DELETE FROM jobs WHERE status = 'done' AND finished_at < ?",
            (conn.backend.now(conn) - older_than,),
        )
        return int(cursor.rowcount)


def next_due(store: Store) -> float | None:
    """When the next job becomes due (a time.time() value), or None if there is none."""
    (due,) = store.conn.execute(
        """SELECT min(CASE WHEN status = 'pending' THEN run_after ELSE lease_expires END)
           FROM jobs WHERE status IN ('pending', 'running')"""
    ).fetchone()
    return None if due is None else float(due)


def depth(store: Store, entity_id: str | None = None) -> dict[str, int]:
    """How many jobs are pending, running, failed and done (of one entity, if given)."""
    counts = dict.fromkeys(("pending", "running", "failed", "done"), 0)
    where, args = ("WHERE entity_id = ?", (entity_id,)) if entity_id is not None else ("", ())
    for status, count in store.conn.execute(
        f"SELECT status, count(*) FROM jobs {where} GROUP BY status", args
    ):
        counts[status] = int(count)
    return counts


def list_jobs(store: Store, *, status: str | None = None, limit: int = 50) -> list[JobInfo]:
    """Jobs, newest first (of one status, or all but done)."""
    where = "status = ?" if status else "status != 'done'"
    params: list[Any] = [status] if status else []
    cursor = store.conn.execute(
        f"""SELECT id, kind, entity_id AS entity, status, attempts, error, output,
                   created_at, updated_at, payload
            FROM jobs WHERE {where} ORDER BY id DESC LIMIT ?""",
        [*params, int(limit)],
    )
    out = []
    for record in dict_rows(cursor):
        payload = record.pop("payload")
        out.append(JobInfo(**record, messages=_message_count(payload)))
    return out


def _message_count(payload: str) -> int | None:
    """How many message ids a job's payload holds (None: it names none)."""
    ids = json.loads(payload).get("message_ids")
    return len(ids) if isinstance(ids, list) else None


def get_job(store: Store, job_id: int) -> dict[str, Any] | None:
    """One job with its payload's message ids and what grounding rejected from it (the
    rejections outlive the job row, which is pruned an hour after it is done)."""
    if not is_rowid(int(job_id)):
        return None
    row = store.conn.execute(
        """SELECT id, kind, entity_id AS entity, status, attempts, error, output, created_at,
                  updated_at, payload
           FROM jobs WHERE id = ?""",
        (int(job_id),),
    )
    found = dict_rows(row)
    rejected = dict_rows(
        store.conn.execute(
            """SELECT item, content, reason, extractor, created_at, entity_id AS entity
               FROM rejections WHERE job_id = ? ORDER BY id""",
            (int(job_id),),
        )
    )
    if not found and not rejected:
        return None
    job = found[0] if found else {"id": int(job_id), "status": "pruned",
                                  "entity": rejected[0]["entity"]}  # fmt: skip
    if "payload" in job:
        job["message_ids"] = json.loads(job.pop("payload")).get("message_ids")
    job["rejected"] = [{k: r[k] for k in ("item", "content", "reason", "extractor")}
                       for r in rejected]  # fmt: skip
    return job
