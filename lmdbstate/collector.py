"""Garbage collection: read the indexes, plan with ``retention.plan``, delete in small commits.

``collect`` reads every workflow's entry and its checkpoints' headers (never their bodies), asks
the planner what the policy deletes, and deletes it oldest first in write transactions of at
most ``BATCH`` checkpoints, so a writer waits for at most one of them. Each transaction checks
again what the plan assumed: a checkpoint already gone, or replaced by a workflow of the same
id created since, is left alone, and a running workflow's head is never deleted, whatever the
plan says. A workflow the plan removes whole loses its entry in the transaction that deletes
its last checkpoint.

``max_size`` caps the live bytes (the pages in use, see ``StorageInfo``), while the planner
weighs record bytes: the bytes to free are scaled by the store's ratio of record bytes to live
bytes. When the deletions leave the store above the cap (a page shared by small records is freed
only once all of them go), the collection plans again from what is left, asking for twice as
much each time, until the store is under the cap or the policy allows no more deletions (at
most ``MAX_ROUNDS`` plans).

``AutoCollector`` runs collections in a background thread as puts grow the store, so that an
executor keeps its store under the cap without a cron job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from . import records
from .errors import IntegrityError, LmdbStateError
from .index import (
    NEWEST_PARENT,
    RETENTION_FOLLOWS,
    RETENTION_KEEP,
    WorkflowEntry,
    created_ns_of,
    forget_workflow,
    remove_checkpoint,
    workflow_id_of,
)
from .keys import checkpoint_key, seq_of, workflow_bounds
from .kv import CKPT, WF, Backend, ViewTxn, WriteTxn, scan_chunk
from .models import GcDeletion, GcReport
from .retention import (
    FINISHED,
    CheckpointEntry,
    Deletion,
    GcPlan,
    RetentionPolicy,
    WorkflowEntries,
    plan,
)

log = logging.getLogger("lmdbstate")

BATCH = 128
"""Checkpoints deleted per write transaction: a concurrent writer waits for one such commit."""
MAX_ROUNDS = 8
"""Plans one collection makes at most: writers that keep adding checkpoints could otherwise
keep a collection above the cap going for as long as they write."""
_READ_CHUNK = 1024  # items per read transaction while the indexes are read

Progress = Callable[[int, int], None]
"""Called with (checkpoints deleted so far, checkpoints the current plan deletes)."""


@dataclasses.dataclass(slots=True)
class _Snapshot:
    """What the indexes said of every workflow, read in short transactions."""

    workflows: list[WorkflowEntries]
    keys: dict[str, bytes]
    """workflow id -> its key (ids are read leniently from keys: keep the key itself)."""
    record_bytes: int


@dataclasses.dataclass(slots=True)
class _Tally:
    deletions: list[GcDeletion] = dataclasses.field(default_factory=list)
    workflows_removed: int = 0
    transactions: int = 0


def collect(
    backend: Backend,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    now_ns: int | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> GcReport:
    """Delete what ``policy`` says to, or with ``dry_run`` only say what that would be.

    Args:
        backend: the store's storage.
        policy: the bounds to enforce.
        dry_run: plan only; nothing is written.
        now_ns: the time the ages are measured from (default: now).
        progress: called after each write transaction.
        stop: when set, the collection ends after its current transaction.

    Raises:
        StoreCorruptedError: an index entry is damaged (``repair`` rebuilds it).
        StoreError: a write failed; what was committed before stays deleted.
    """
    started = time.perf_counter()
    now = time.time_ns() if now_ns is None else now_ns
    live_before = live = backend.storage_info().live_bytes
    tally = _Tally()
    urgency = 1  # doubled each time a plan leaves the store above the cap
    for _ in range(MAX_ROUNDS):
        snapshot = _read_snapshot(backend, stop)
        if snapshot is None:
            break  # stopped while reading the indexes
        record_policy = _record_policy(policy, live, snapshot, urgency)
        gc_plan = plan(snapshot.workflows, record_policy, now_ns=now)
        if dry_run:
            return _dry_run_report(gc_plan, snapshot, live, backend, started)
        deleted_before = len(tally.deletions)
        _execute(backend, gc_plan, snapshot.keys, tally, progress, stop)
        live = backend.storage_info().live_bytes
        stopped = stop is not None and stop.is_set()
        made_progress = len(tally.deletions) > deleted_before
        if stopped or not made_progress or policy.max_size is None or live <= policy.max_size:
            break
        if gc_plan.over_cap:
            break  # the plan deleted all the rules allow: planning again finds only new puts
        urgency *= 2
    tally.deletions.sort(key=lambda d: (d.created_ns, d.workflow_id, d.seq))
    storage = backend.storage_info()
    return GcReport(
        dry_run=False,
        checkpoints_removed=len(tally.deletions),
        workflows_removed=tally.workflows_removed,
        record_bytes_removed=sum(d.bytes for d in tally.deletions),
        live_bytes_before=live_before,
        live_bytes_after=storage.live_bytes,
        file_bytes=storage.file_bytes,
        over_cap=_over(policy, storage.live_bytes),
        by_rule=dict(Counter(d.rule for d in tally.deletions)),
        deletions=tuple(tally.deletions),
        transactions=tally.transactions,
        seconds=time.perf_counter() - started,
    )


def _over(policy: RetentionPolicy, live: int) -> int:
    return 0 if policy.max_size is None else max(0, live - policy.max_size)


def _record_policy(
    policy: RetentionPolicy, live: int, snapshot: _Snapshot, urgency: int
) -> RetentionPolicy:
    """``policy`` with ``max_size`` turned from live bytes into the record bytes the plan weighs.

    The live bytes to free, scaled by the ratio of record bytes to live bytes and multiplied by
    ``urgency``, are taken off the record bytes.
    """
    cap = policy.max_size
    records = snapshot.record_bytes
    if cap is None or live <= cap or not records:
        return dataclasses.replace(policy, max_size=None)
    to_free = (live - cap) * records * urgency // live
    return dataclasses.replace(policy, max_size=max(1, records - to_free))


def _dry_run_report(
    gc_plan: GcPlan, snapshot: _Snapshot, live: int, backend: Backend, started: float
) -> GcReport:
    freed = gc_plan.bytes_before - gc_plan.bytes_after
    # The plan weighs record bytes; the pages they take are estimated in proportion.
    deletions = tuple(_deletion(d, d.size) for d in gc_plan.deletions)
    ratio = live / snapshot.record_bytes if snapshot.record_bytes else 0.0
    return GcReport(
        dry_run=True,
        checkpoints_removed=len(deletions),
        workflows_removed=len(gc_plan.workflows_removed),
        record_bytes_removed=freed,
        live_bytes_before=live,
        live_bytes_after=max(0, live - round(freed * ratio)),
        file_bytes=backend.storage_info().file_bytes,
        over_cap=round(gc_plan.over_cap * ratio),
        by_rule=dict(Counter(d.rule for d in deletions)),
        deletions=deletions,
        transactions=0,
        seconds=time.perf_counter() - started,
    )


def _deletion(planned: Deletion, size: int) -> GcDeletion:
    return GcDeletion(planned.workflow_id, planned.seq, planned.created_ns, size, planned.rule)


# -- reading the indexes ----------------------------------------------------------------------


def _read_snapshot(backend: Backend, stop: threading.Event | None = None) -> _Snapshot | None:
    """Every workflow's entry and checkpoints; None when ``stop`` was set meanwhile."""
    workflows: list[WorkflowEntries] = []
    keys: dict[str, bytes] = {}
    follows: dict[str, str] = {}
    record_bytes = 0
    low = b""
    while True:
        items = backend.read(scan_chunk, WF, low, None, False, _READ_CHUNK)
        for workflow_key, raw in items:
            entry = WorkflowEntry.decode(workflow_key, raw)
            checkpoints = _read_checkpoints(backend, workflow_key)
            resume_seq = None
            if entry.status == "running" and checkpoints:
                hint = entry.extras.get(NEWEST_PARENT)
                resume_seq = backend.read_views(_resume_seq, workflow_key, hint)
                # Read in its own transaction: a put (or a deletion) since the headers were
                # read can name a checkpoint they do not list; the newest listed one is kept.
                listed = {c.seq for c in checkpoints}
                if resume_seq == checkpoints[-1].seq or resume_seq not in listed:
                    resume_seq = None
            workflow_id = workflow_id_of(workflow_key)
            keys[workflow_id] = workflow_key
            leader = entry.extras.get(RETENTION_FOLLOWS)
            if isinstance(leader, str):
                follows[workflow_id] = leader
            record_bytes += sum(c.size for c in checkpoints)
            workflows.append(
                WorkflowEntries(
                    workflow_id,
                    entry.status,
                    entry.updated_ns,
                    checkpoints,
                    resume_seq,
                    keep_newest(entry),
                )  # fmt: skip
            )
        if len(items) < _READ_CHUNK:
            return _Snapshot(_pair_followers(workflows, follows), keys, record_bytes)
        if stop is not None and stop.is_set():
            return None
        low = items[-1][0] + b"\x00"


def _pair_followers(
    workflows: list[WorkflowEntries], follows: dict[str, str]
) -> list[WorkflowEntries]:
    """Protect a follower's records at and above the oldest seq its leader keeps by request.

    A follower's records go with its leader's at the same seq (the LangGraph saver's pending
    writes with their checkpoints). Those at or above the floor of the leader's newest
    ``keep_newest`` checkpoints belong to checkpoints kept, or to ones not stored yet.
    """
    leaders = {workflow.workflow_id: workflow for workflow in workflows}
    paired = []
    for workflow in workflows:
        leader = leaders.get(follows.get(workflow.workflow_id, ""))
        if leader is not None and leader.checkpoints:
            floor = leader.checkpoints[-min(leader.keep_newest, len(leader.checkpoints))].seq
            if leader.resume_seq is not None:  # a resume past a damaged newest needs its writes
                floor = min(floor, leader.resume_seq)
            kept = frozenset(c.seq for c in workflow.checkpoints if c.seq >= floor)
            workflow = dataclasses.replace(workflow, protect=kept)
        paired.append(workflow)
    return paired


def keep_newest(entry: WorkflowEntry) -> int:
    """How many newest checkpoints the workflow's writer asks retention to keep (at least 1).

    Read from the entry's ``retention_keep`` field; writers set it with ``keyed.put_at``.
    """
    asked = entry.extras.get(RETENTION_KEEP)
    return asked if type(asked) is int and asked >= 1 else 1


def _read_checkpoints(backend: Backend, workflow_key: bytes) -> list[CheckpointEntry]:
    low, high = workflow_bounds(workflow_key)
    found: list[CheckpointEntry] = []
    while True:
        chunk, last_key = backend.read_views(_checkpoint_headers, low, high)
        found.extend(chunk)
        if len(chunk) < _READ_CHUNK or last_key is None:
            return found
        low = last_key + b"\x00"


def _checkpoint_headers(
    txn: ViewTxn, low: bytes, high: bytes
) -> tuple[list[CheckpointEntry], bytes | None]:
    """Seq, creation time and size of up to ``_READ_CHUNK`` records; bodies are not read."""
    items = scan_chunk(txn, CKPT, low, high, False, _READ_CHUNK)
    entries = [
        CheckpointEntry(seq_of(key), created_ns_of(view) or 0, len(view)) for key, view in items
    ]
    return entries, items[-1][0] if items else None


def _resume_seq(txn: ViewTxn, workflow_key: bytes, hint: object) -> int | None:
    """The seq of the checkpoint a resume loads.

    The newest whose digest holds; or, when the newest is damaged and its writer recorded its
    parent (``index.NEWEST_PARENT``), that parent.
    """
    first = True
    for key, view in txn.scan(CKPT, *workflow_bounds(workflow_key), reverse=True):
        try:
            records.check(key, view)
        except IntegrityError:
            if first and isinstance(hint, list) and len(hint) == 2 and hint[0] == seq_of(key):
                parent = checkpoint_key(workflow_key, hint[1])
                for parent_key, parent_view in txn.scan(CKPT, parent, parent + b"\x00"):
                    with contextlib.suppress(IntegrityError):
                        records.check(parent_key, parent_view)
                        return int(hint[1])
            first = False
            continue
        return seq_of(key)
    return None


# -- deleting ---------------------------------------------------------------------------------


def _execute(
    backend: Backend,
    gc_plan: GcPlan,
    keys: dict[str, bytes],
    tally: _Tally,
    progress: Progress | None,
    stop: threading.Event | None,
) -> None:
    removing = frozenset(keys[workflow_id] for workflow_id in gc_plan.workflows_removed)
    planned = gc_plan.deletions
    for start in range(0, len(planned), BATCH):
        if stop is not None and stop.is_set():
            return
        batch = [(keys[d.workflow_id], d) for d in planned[start : start + BATCH]]
        deleted, removed = backend.write(_delete_batch, batch, removing)
        tally.deletions.extend(deleted)
        tally.workflows_removed += removed
        tally.transactions += 1
        if progress is not None:
            progress(len(tally.deletions), len(planned))
    # Workflows removed whole that had no checkpoint left to delete: only their entries go.
    empty = sorted(removing)
    for start in range(0, len(empty), BATCH):
        tally.workflows_removed += backend.write(_forget_empty, empty[start : start + BATCH])
        tally.transactions += 1


def _delete_batch(
    txn: WriteTxn, batch: list[tuple[bytes, Deletion]], removing: frozenset[bytes]
) -> tuple[list[GcDeletion], int]:
    """Delete what still stands of ``batch``; return what was deleted and workflows removed."""
    entries: dict[bytes, WorkflowEntry | None] = {}
    deleted: list[GcDeletion] = []
    for workflow_key, planned in batch:
        if workflow_key not in entries:
            raw = txn.get(WF, workflow_key)
            entries[workflow_key] = None if raw is None else WorkflowEntry.decode(workflow_key, raw)
        entry = entries[workflow_key]
        if entry is None or not _still_doomed(entry, planned, workflow_key in removing):
            continue
        key = checkpoint_key(workflow_key, planned.seq)
        record = txn.get(CKPT, key)
        if record is None or (created_ns_of(record) or 0) != planned.created_ns:
            continue  # deleted meanwhile, or a record of a workflow made again since
        remove_checkpoint(txn, workflow_key, entry, key, record)
        deleted.append(_deletion(planned, len(record)))
    touched = {workflow_key for workflow_key, _ in batch}
    removed = 0
    for workflow_key in touched:
        entry = entries[workflow_key]
        if entry is None:
            continue
        if workflow_key in removing and _removable(entry):
            forget_workflow(txn, workflow_key)
            removed += 1
        else:
            # updated_ns stays: a collection is not activity (finished_max_age counts from the
            # last change), and recover needs no bump (see index.WorkflowEntry).
            txn.put(WF, workflow_key, entry.encode())
    return deleted, removed


def _still_doomed(entry: WorkflowEntry, planned: Deletion, removing: bool) -> bool:
    """Whether the plan's reason to delete still holds in this transaction."""
    if removing and entry.status not in FINISHED:
        return False  # resumed since the plan was made: no longer to be removed whole
    return not (entry.status == "running" and planned.seq == entry.head_seq)


def _removable(entry: WorkflowEntry) -> bool:
    return entry.count == 0 and entry.status in FINISHED


def _forget_empty(txn: WriteTxn, workflow_keys: list[bytes]) -> int:
    removed = 0
    for workflow_key in workflow_keys:
        raw = txn.get(WF, workflow_key)
        if raw is not None and _removable(WorkflowEntry.decode(workflow_key, raw)):
            forget_workflow(txn, workflow_key)
            removed += 1
    return removed


# -- automatic collection ---------------------------------------------------------------------

AUTO_INTERVAL = 60.0
"""Seconds between automatic collections for count and age bounds (the size cap is checked as
puts add bytes, see ``AutoCollector``)."""
_MIN_CHECK_BYTES = 1 << 20


class AutoCollector:
    """Collects in a background thread when puts have taken the store past the policy.

    ``wrote`` is called after each put with the bytes it added; it costs an addition until
    ``check_bytes`` have been written since the last look, then one look at the live size (a
    few LMDB statistics). A collection starts when the live size is above ``max_size``, or,
    for the count and age bounds, when ``AUTO_INTERVAL`` seconds have passed since the last.
    At most one runs at a time; ``close`` stops it after its current transaction.
    """

    def __init__(self, backend: Backend, policy: RetentionPolicy) -> None:
        self._backend = backend
        self._policy = policy
        cap = policy.max_size
        self.check_bytes = _MIN_CHECK_BYTES if cap is None else max(cap // 64, 1)
        self._timed = any(
            bound is not None
            for bound in (policy.keep_last, policy.max_age, policy.finished_max_age)
        )
        self._written = 0
        self._last_run = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report: GcReport | None = None
        self.last_error: LmdbStateError | None = None

    def wrote(self, size: int) -> None:
        """Count ``size`` bytes written; start a collection when one is due."""
        self._written += size
        if self._written < self.check_bytes:
            return
        with self._lock:
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._written = 0
            if not self._due():
                return
            self._thread = threading.Thread(target=self._run, name="lmdbstate-gc", daemon=True)
            self._thread.start()

    def _due(self) -> bool:
        cap = self._policy.max_size
        if cap is not None:
            try:
                live = self._backend.storage_info().live_bytes
            except LmdbStateError as exc:
                # Called after a put committed: its caller must not see this as the put failing.
                log.warning(
                    "automatic gc of %s: cannot read the live size: %s", self._backend.location, exc
                )
                return False
            if live > cap:
                return True
        return self._timed and time.monotonic() - self._last_run >= AUTO_INTERVAL

    def _run(self) -> None:
        try:
            report = collect(self._backend, self._policy, stop=self._stop)
        except LmdbStateError as exc:
            self.last_error = exc
            log.warning("automatic gc of %s failed: %s", self._backend.location, exc)
        else:
            self.last_report = report
            log.info(
                "automatic gc of %s deleted %d checkpoints; live bytes %d -> %d",
                self._backend.location, report.checkpoints_removed,
                report.live_bytes_before, report.live_bytes_after,
            )  # fmt: skip
        finally:
            self._last_run = time.monotonic()

    def wait(self) -> None:
        """Wait for the collection under way, if any, to finish."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def close(self) -> None:
        """Stop the collection under way after its current transaction, and wait for it.

        Takes no lock: a process forked while another thread held ``_lock`` can still close.
        A collection started just as ``close`` runs sees the stop at its first check.
        """
        self._stop.set()
        self.wait()
