"""Verify, repair, recover and back up a store.

``verify`` reads every record and checks its header and digest (and, with ``deep``, decodes its
body), then checks the ``wf`` and ``age`` indexes against ``ckpt``. It never writes. Each
workflow is checked inside one read transaction, and the ``age`` index in chunks, each against
``ckpt`` in the same transaction: what it reports is consistent even while writers run.

``repair`` backs the store up, deletes damaged records, and rebuilds the index entries that
disagree with ``ckpt``, one workflow per write transaction.

``recover`` copies every intact record of a store, even one LMDB refuses to open, into a fresh
store. It reads the source file itself (``lmdbfile``), never through LMDB and never writing:
first the B-tree of the newest valid snapshot, then, when that walk could not read everything
or a meta page is damaged, every page of the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from . import chunkcheck, chunking, chunkstore, codec, records
from .errors import CodecError, IntegrityError, StoreCorruptedError
from .index import DELETED_NS, WorkflowEntry, created_ns_of, workflow_id_of
from .keys import SEQ_BYTES, age_key, seq_of, split_age_key, workflow_bounds
from .kv import AGE, CHUNK, CKPT, COPY_CHUNK, META, WF, Backend, ReadTxn, WriteTxn, put_items
from .lmdbfile import DataFile, LeafItem, Skipped
from .locations import path_beside
from .models import (
    DamagedRecord,
    IndexProblem,
    RecoverReport,
    RepairReport,
    VerifyReport,
    WorkflowRecovery,
)

Progress = Callable[[int, int], None]
"""Called with (records checked so far, bytes checked so far)."""

_AGE_CHUNK = 1024


def _is_checkpoint_key(key: bytes) -> bool:
    return len(key) > SEQ_BYTES + 1 and key[-SEQ_BYTES - 1] == 0


def _owner(ckpt_key: bytes) -> bytes:
    return ckpt_key[: -SEQ_BYTES - 1]


def _damaged_record(key: bytes, reason: str) -> DamagedRecord:
    if _is_checkpoint_key(key):
        return DamagedRecord(workflow_id_of(_owner(key)), seq_of(key), key, reason)
    return DamagedRecord(None, None, key, reason)


@dataclass
class _WorkflowCheck:
    """One workflow's records and index entry, read in one transaction."""

    workflow_key: bytes
    entry: WorkflowEntry | None = None
    entry_problem: str | None = None
    records: int = 0
    size: int = 0
    head_seq: int = 0
    intact: list[tuple[bytes, int, int]] = field(default_factory=list)
    """(key, created_ns, size) of every intact record."""
    damaged: list[DamagedRecord] = field(default_factory=list)
    missing_age: list[int] = field(default_factory=list)

    def problems(self) -> list[IndexProblem]:
        """Where the ``wf`` entry and the ``age`` index disagree with the records."""
        workflow_id = workflow_id_of(self.workflow_key)
        found = [
            IndexProblem("age", workflow_id, f"no age entry for checkpoint {seq}")
            for seq in self.missing_age
        ]
        if self.entry is None:
            found.append(IndexProblem("wf", workflow_id, self.entry_problem or "no entry"))
            return found
        for name, actual in (
            ("count", self.records),
            ("bytes", self.size),
            ("head_seq", self.head_seq),
        ):
            recorded = getattr(self.entry, name)
            if recorded != actual:
                found.append(
                    IndexProblem(
                        "wf", workflow_id, f"{name} is {recorded}, the records say {actual}"
                    )
                )
        if self.entry.last_seq < self.head_seq:
            found.append(
                IndexProblem(
                    "wf", workflow_id, f"last_seq {self.entry.last_seq} is below {self.head_seq}"
                )
            )
        return found


def _check_workflow(
    txn: ReadTxn, workflow_key: bytes, deep: bool, chunks: chunkcheck.ChunkReader
) -> _WorkflowCheck:
    check = _WorkflowCheck(workflow_key)
    raw = txn.get(WF, workflow_key)
    if raw is None:
        check.entry_problem = "no index entry for a workflow with checkpoints"
    else:
        try:
            check.entry = WorkflowEntry.decode(workflow_key, raw)
        except StoreCorruptedError:
            check.entry_problem = "the index entry is damaged"
    for key, record in txn.scan(CKPT, *workflow_bounds(workflow_key)):
        check.records += 1
        check.size += len(record)
        check.head_seq = seq_of(key)
        try:
            created_ns, _, body = records.check(key, record)
            if deep:
                records.decode_body(body)
            chunk_problem = chunks.record_problem(txn, body) if records.is_chunked(record) else None
        except IntegrityError as exc:
            check.damaged.append(_damaged_record(key, exc.reason))
            continue
        except CodecError as exc:
            check.damaged.append(_damaged_record(key, f"body does not decode: {exc.reason}"))
            continue
        if chunk_problem is not None:
            check.damaged.append(_damaged_record(key, chunk_problem))
            continue
        check.intact.append((key, created_ns, len(record)))
        if txn.get(AGE, age_key(created_ns, key)) is None:
            check.missing_age.append(seq_of(key))
    return check


def _next_workflow(txn: ReadTxn, after: bytes | None) -> tuple[bytes | None, list[bytes]]:
    """The first workflow key past ``after`` that ``ckpt`` or ``wf`` holds.

    Also returns the malformed ``ckpt`` keys passed on the way there.
    """
    low = b"" if after is None else after + b"\x01"
    malformed: list[bytes] = []
    candidates: list[bytes] = []
    for key, _ in txn.scan(CKPT, low, page=1):
        if _is_checkpoint_key(key):
            candidates.append(_owner(key))
            break
        malformed.append(key)
    entry = next(txn.scan(WF, low, page=1), None)
    if entry is not None:
        candidates.append(entry[0])
    found = min(candidates) if candidates else None
    # Malformed keys past the workflow chosen are met again on the way to the next one.
    return found, [key for key in malformed if found is None or key < found]


def _stale_age_chunk(txn: ReadTxn, low: bytes) -> tuple[list[bytes], bytes | None]:
    """Stale ``age`` keys in one chunk from ``low``, and the key to go on from (None: the end).

    Stale: pointing at no record, or at a record created at another time.
    """
    stale: list[bytes] = []
    last = None
    for key, _ in islice(txn.scan(AGE, low), _AGE_CHUNK):
        last = key
        created_ns, ckpt_key = split_age_key(key)
        record = txn.get(CKPT, ckpt_key)
        if record is None or created_ns_of(record) != created_ns:
            stale.append(key)
    return stale, None if last is None else last + b"\x00"


def _stale_age_keys(backend: Backend) -> Iterator[bytes]:
    low: bytes | None = b""
    while low is not None:
        stale, low = backend.read(_stale_age_chunk, low)
        yield from stale


@dataclass
class _Findings:
    workflows: int = 0
    records: int = 0
    size: int = 0
    damaged: list[DamagedRecord] = field(default_factory=list)
    problems: list[IndexProblem] = field(default_factory=list)
    needs_repair: list[bytes] = field(default_factory=list)
    """Workflow keys with a damaged record or an index problem."""


def _examine(
    backend: Backend, workflow_key: bytes | None, deep: bool, progress: Progress | None
) -> _Findings:
    findings = _Findings()
    chunks = chunkcheck.ChunkReader()

    def examine(key: bytes) -> None:
        check = backend.read(_check_workflow, key, deep, chunks)
        if check.records == 0 and check.entry is None:
            return  # no such workflow
        findings.workflows += 1
        findings.records += check.records
        findings.size += check.size
        problems = check.problems()
        findings.damaged.extend(check.damaged)
        findings.problems.extend(problems)
        if check.damaged or problems:
            findings.needs_repair.append(key)
        if progress is not None:
            progress(findings.records, findings.size)

    if workflow_key is not None:
        examine(workflow_key)
        return findings
    after: bytes | None = None
    while True:
        found, malformed = backend.read(_next_workflow, after)
        findings.damaged.extend(_damaged_record(key, "not a checkpoint key") for key in malformed)
        if found is None:
            break
        if after is not None and found <= after:
            # A damaged branch key sent LMDB's seek backwards (the structure check should have
            # caught it): stop rather than go round forever.
            raise StoreCorruptedError(
                f"store {backend.location} is damaged: its keys are out of order",
                path=backend.location,
                hint="`lmdbstate recover SRC DEST` copies every intact checkpoint",
            )
        examine(found)
        after = found
    for key in _stale_age_keys(backend):
        created_ns, ckpt_key = split_age_key(key)
        findings.problems.append(
            IndexProblem(
                "age",
                workflow_id_of(_owner(ckpt_key)),
                f"age entry for checkpoint {seq_of(ckpt_key)} does not match a record "
                f"created at {created_ns}",
            )
        )
    return findings


def verify(
    backend: Backend,
    *,
    workflow_key: bytes | None = None,
    deep: bool = False,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check every record and index entry, or those of the workflow ``workflow_key``.

    Raises:
        StoreError: the store cannot be read at all.
    """
    started = time.perf_counter()
    structure = backend.check_structure()
    if structure:
        # Reading the records goes through LMDB, which does not check its pages and can abort
        # the process on a damaged one: report the pages and stop.
        return VerifyReport(
            workflows=0,
            records=0,
            bytes=0,
            damaged=(),
            index_problems=(),
            deep=deep,
            seconds=time.perf_counter() - started,
            structure_problems=structure,
        )
    findings = _examine(backend, workflow_key, deep, progress)
    # The counts are a property of the whole store: checked in one snapshot, and only then.
    chunks, chunk_problems = (
        backend.read(chunkcheck.count_problems) if workflow_key is None else (0, [])
    )
    return VerifyReport(
        workflows=findings.workflows,
        records=findings.records,
        bytes=findings.size,
        damaged=tuple(findings.damaged),
        index_problems=tuple(findings.problems),
        deep=deep,
        seconds=time.perf_counter() - started,
        chunks=chunks,
        chunk_problems=tuple(chunk_problems),
    )


def _repair_workflow(txn: WriteTxn, workflow_key: bytes, now_ns: int) -> tuple[int, bool, int]:
    """Delete one workflow's damaged records and rewrite its ``wf`` entry from ``ckpt``.

    Returns (records deleted, whether the ``wf`` entry changed, ``age`` entries added).
    """
    check = _check_workflow(txn, workflow_key, False, chunkcheck.ChunkReader())
    for damaged in check.damaged:
        txn.delete(CKPT, damaged.key)  # its chunk references go when the counts are rebuilt
    added = 0
    for key, created_ns, _ in check.intact:
        if txn.get(AGE, age_key(created_ns, key)) is None:
            txn.put(AGE, age_key(created_ns, key), b"")
            added += 1
    if not check.intact and check.entry is None:
        return len(check.damaged), False, added  # nothing is left of it
    entry = check.entry if check.entry is not None else WorkflowEntry(now_ns)
    before = entry.encode() if check.entry is not None else b""
    seqs = [seq_of(key) for key, _, _ in check.intact]
    entry.count = len(seqs)
    entry.bytes = sum(size for _, _, size in check.intact)
    entry.head_seq = seqs[-1] if seqs else 0
    # Seqs never come back, not even those of the damaged records deleted here.
    entry.last_seq = max(entry.last_seq, check.head_seq)
    changed = entry.encode() != before
    if changed:
        entry.updated_ns = max(entry.updated_ns, now_ns)
        txn.put(WF, workflow_key, entry.encode())
    return len(check.damaged), changed, added


def _delete_malformed(txn: WriteTxn, key: bytes) -> None:
    txn.delete(CKPT, key)


def _delete_if_stale(txn: WriteTxn, key: bytes) -> int:
    created_ns, ckpt_key = split_age_key(key)
    record = txn.get(CKPT, ckpt_key)
    if record is not None and created_ns_of(record) == created_ns:
        return 0  # a writer made it right meanwhile
    txn.delete(AGE, key)
    return 1


def repair(backend: Backend, *, backup_dir: str | None) -> RepairReport:
    """Back up, delete damaged records, and rebuild index entries that disagree with them.

    The backup goes to ``backup_dir`` (None: no backup).

    Raises:
        StoreError: the backup or a write failed; what was committed before stays committed.
    """
    started = time.perf_counter()
    structure = backend.check_structure()
    if structure:
        raise StoreCorruptedError(
            f"store {backend.location} has damaged pages: {structure[0]}"
            + (f" (and {len(structure) - 1} more)" if len(structure) > 1 else ""),
            path=backend.location,
            hint="repair mends records, not pages: `lmdbstate recover SRC DEST` copies every "
            "intact checkpoint into a new store",
        )
    if backup_dir is not None:
        backend.copy_to(backup_dir)
    # Only records whose header or digest fails are damage. A body that verifies but does not
    # decode here (a time zone this host lacks, a newer version's type) is kept.
    findings = _examine(backend, None, deep=False, progress=None)
    now_ns = time.time_ns()
    rebuilt = age_added = 0
    for workflow_key in findings.needs_repair:
        _, changed, added = backend.write(_repair_workflow, workflow_key, now_ns)
        rebuilt += changed
        age_added += added
    for damaged in findings.damaged:
        if damaged.seq is None:
            backend.write(_delete_malformed, damaged.key)
    # Deleting damaged records leaves their age entries behind: sweep after the deletes.
    age_removed = sum(
        backend.write(_delete_if_stale, key) for key in list(_stale_age_keys(backend))
    )
    # And their chunk references: the counts are rebuilt from the records left.
    counts_fixed, chunks_removed = backend.write(chunkcheck.rebuild_counts)
    return RepairReport(
        backup_path=backup_dir,
        removed=tuple(findings.damaged),
        workflows_rebuilt=rebuilt,
        age_added=age_added,
        age_removed=age_removed,
        seconds=time.perf_counter() - started,
        chunk_counts_fixed=counts_fixed,
        chunks_removed=chunks_removed,
    )


def default_backup_dir(store_path: str) -> str:
    """A new directory beside the store, named after it and the current UTC time."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return path_beside(store_path, f".backup-{stamp}")


@dataclass
class _Salvage:
    """What ``recover`` found in the source, key by key."""

    records: dict[bytes, tuple[bytes, int, bool]] = field(default_factory=dict)
    """ckpt key -> (record, created_ns, found only by the page scan)."""
    chunks: dict[bytes, bytes] = field(default_factory=dict)
    """Every whole chunk found (record format 2), by digest: any copy of one is the same."""
    entries: dict[bytes, WorkflowEntry] = field(default_factory=dict)
    damaged: dict[bytes, DamagedRecord] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    txnid: int | None = None
    walk_complete: bool = False
    newest_ns: int = 0
    """The newest creation time among the snapshot's records."""

    def offer(self, key: bytes, value: bytes, *, from_scan: bool) -> None:
        """Keep ``value`` as the record of ``key`` if it proves whole and is the best copy.

        The snapshot's own copy wins; among copies only the scan found, the newest does. A
        value the scan finds that does not check out is not reported: most leaves of a file
        are not checkpoint records at all.
        """
        try:
            # The digest proves the bytes are those written; decoding is not asked of them (a
            # body this host cannot decode, say for a missing time zone, is still whole).
            created_ns, _, _ = records.check(key, value)
        except IntegrityError as exc:
            if not from_scan:
                self.damaged[key] = _damaged_record(key, exc.reason)
            return
        if from_scan and self.walk_complete and not self._newer_than_snapshot(key, created_ns):
            return  # a copy LMDB freed: a deleted checkpoint, not a lost one
        kept = self.records.get(key)
        if kept is None or (kept[2] and from_scan and created_ns > kept[1]):
            self.records[key] = (value, created_ns, from_scan)
            self.damaged.pop(key, None)  # a whole copy of a record damaged in the snapshot

    def offer_chunk(self, key: bytes, value: bytes) -> None:
        """Keep ``value`` as the chunk ``key`` if it is one and its payload matches the key."""
        if chunkstore.is_whole(key, value):
            self.chunks[key] = value

    def _newer_than_snapshot(self, key: bytes, created_ns: int) -> bool:
        """Whether a record only the scan found came after the snapshot the walk read whole.

        Past a complete walk, the scan finds two kinds of records the snapshot lacks: ones
        committed after it (its meta page is the damaged one) and ones deleted before it,
        whose pages LMDB freed but has not yet reused. Only the first are recovered: a seq above
        what the snapshot's index had given out, or a record made after the workflow's last
        update the snapshot saw (every write of a record moves its entry's ``updated_ns`` to at
        least the record's creation time, and a deletion to the time of the deletion), or, for
        a workflow the snapshot does not know, made after the last thing it saw happen (a
        record, an index update or a deletion). Writers that choose their seqs (the LangGraph
        saver writes pending writes below the last seq) are covered by the creation time.
        """
        entry = self.entries.get(_owner(key))
        if entry is not None:
            return seq_of(key) > entry.last_seq or created_ns > entry.updated_ns
        return created_ns > self.newest_ns


def _walk_snapshot(data: DataFile, salvage: _Salvage) -> None:
    meta = data.current
    if meta is None:
        return
    salvage.txnid = meta.txnid
    catalog = data.databases(meta)
    salvage.skipped.extend(str(item) for item in catalog.skipped)
    complete = not catalog.skipped and CKPT.encode() in catalog.databases
    for table, record in catalog.databases.items():
        if table not in (CKPT.encode(), WF.encode(), META.encode(), CHUNK.encode()):
            continue
        for item in data.walk(record.root):
            if isinstance(item, Skipped):
                salvage.skipped.append(str(item))
                complete = False
            elif table == CHUNK.encode():
                salvage.offer_chunk(item.key, item.value)
            elif table == META.encode():
                if item.key == DELETED_NS:
                    with contextlib.suppress(CodecError, TypeError):
                        salvage.newest_ns = max(salvage.newest_ns, int(codec.decode(item.value)))
            elif table == WF.encode():
                with contextlib.suppress(StoreCorruptedError):  # rebuilt from the records
                    salvage.entries[item.key] = WorkflowEntry.decode(item.key, item.value)
            elif _is_checkpoint_key(item.key):
                salvage.offer(item.key, item.value, from_scan=False)
            else:
                salvage.damaged[item.key] = _damaged_record(item.key, "not a checkpoint key")
    salvage.walk_complete = complete
    # The last thing the snapshot saw happen: its newest record, index update or deletion.
    salvage.newest_ns = max(
        salvage.newest_ns,
        max((created for _, created, _ in salvage.records.values()), default=0),
        max((entry.updated_ns for entry in salvage.entries.values()), default=0),
    )


def _scan_pages(data: DataFile, salvage: _Salvage) -> None:
    for item in data.scan():
        if isinstance(item, LeafItem) and _is_checkpoint_key(item.key):
            salvage.offer(item.key, item.value, from_scan=True)
        elif isinstance(item, LeafItem) and len(item.key) == chunking.DIGEST_SIZE:
            salvage.offer_chunk(item.key, item.value)


def _restore_workflow(
    txn: WriteTxn,
    workflow_key: bytes,
    found: list[tuple[bytes, bytes, int]],
    entry: WorkflowEntry,
) -> None:
    for key, record, created_ns in found:
        txn.put(CKPT, key, record)
        txn.put(AGE, age_key(created_ns, key), b"")
    head = seq_of(found[-1][0])
    entry.count = len(found)
    entry.bytes = sum(len(record) for _, record, _ in found)
    entry.head_seq = head
    entry.last_seq = max(entry.last_seq, head)
    entry.extras.pop("lease", None)  # whoever held it is gone: the copy starts unclaimed
    txn.put(WF, workflow_key, entry.encode())


def _drop_records_missing_chunks(salvage: _Salvage, dest: Backend) -> None:
    """Write the chunks found into ``dest``; report the records whose chunks are not all there.

    A format-2 record is recovered only when every chunk it reaches was found whole.
    """
    chunks = sorted(salvage.chunks.items())
    for start in range(0, len(chunks), COPY_CHUNK):
        dest.write(put_items, CHUNK, chunks[start : start + COPY_CHUNK])
    reader = chunkcheck.ChunkReader()
    for key in sorted(salvage.records):
        record = salvage.records[key][0]
        if not records.is_chunked(record):
            continue
        problem = dest.read(reader.record_problem, memoryview(record)[records.HEADER_SIZE :])
        if problem is not None:
            del salvage.records[key]
            salvage.damaged[key] = _damaged_record(key, problem)


def recover(source: str, dest: Backend, *, dest_path: str) -> RecoverReport:
    """Copy every intact record of the store at ``source`` into the new, empty store ``dest``.

    Raises:
        StoreNotFoundError: no data file at ``source``.
        StoreCorruptedError: the source is not an LMDB file, or damaged beyond reading.
    """
    started = time.perf_counter()
    salvage = _Salvage()
    with DataFile(source) as data:
        _walk_snapshot(data, salvage)
        if not salvage.walk_complete or not all(meta.valid for meta in data.metas):
            # A damaged meta page may have been the newest: its commit's pages are only
            # reachable by scanning. So are records under a page the walk could not read.
            _scan_pages(data, salvage)
    _drop_records_missing_chunks(salvage, dest)
    now_ns = time.time_ns()
    by_workflow: dict[bytes, list[tuple[bytes, bytes, int]]] = {}
    for key in sorted(salvage.records):
        record, created_ns, _ = salvage.records[key]
        by_workflow.setdefault(_owner(key), []).append((key, record, created_ns))
    workflows: list[WorkflowRecovery] = []
    for workflow_key in sorted(set(by_workflow) | set(salvage.entries)):
        found = by_workflow.get(workflow_key, [])
        source_entry = salvage.entries.get(workflow_key)
        lost = None if source_entry is None else max(0, source_entry.count - len(found))
        if found:
            entry = source_entry if source_entry is not None else WorkflowEntry(now_ns)
            dest.write(_restore_workflow, workflow_key, found, entry)
        from_scan = sum(salvage.records[key][2] for key, _, _ in found)
        workflows.append(
            WorkflowRecovery(workflow_id_of(workflow_key), len(found), from_scan, lost)
        )
    dest.write(chunkcheck.rebuild_counts)  # and the chunks no record kept reaches go
    return RecoverReport(
        source=source,
        dest=dest_path,
        snapshot_txnid=salvage.txnid,
        recovered=len(salvage.records),
        from_scan=sum(found_by_scan for _, _, found_by_scan in salvage.records.values()),
        damaged=tuple(salvage.damaged[key] for key in sorted(salvage.damaged)),
        skipped_pages=tuple(salvage.skipped),
        workflows=tuple(workflows),
        seconds=time.perf_counter() - started,
    )
