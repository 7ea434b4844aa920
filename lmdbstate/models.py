"""Frozen dataclasses the API returns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["running", "completed", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("running", "completed", "failed", "cancelled")
Durability = Literal["sync", "group", "async"]


def utc_from_ns(ns: int) -> dt.datetime:
    """Nanoseconds since the epoch as an aware UTC datetime, truncated to the microsecond."""
    # Integer arithmetic: ns / 1e9 as a float can round up into the next microsecond or second.
    seconds, rest = divmod(ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).replace(microsecond=rest // 1000)


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """A checkpoint without its state."""

    workflow_id: str
    seq: int
    step: str | int | None
    schema: int
    created_ns: int
    size: int
    """Bytes of the stored record: header and body."""
    digest: int

    @property
    def created_at(self) -> dt.datetime:
        """``created_ns`` as an aware UTC datetime."""
        return utc_from_ns(self.created_ns)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint with its decoded state, as ``latest`` and ``get`` return it."""

    workflow_id: str
    seq: int
    state: Any
    step: str | int | None
    schema: int
    meta: Mapping[str, Any]
    created_ns: int
    size: int
    digest: int
    damaged_newer: tuple[int, ...] = ()
    """Seqs of newer checkpoints that ``latest`` skipped because they are damaged."""
    record_format: int = 1
    """1: the record holds the state whole; 2: its long lists are chunks (docs/format.md)."""

    @property
    def created_at(self) -> dt.datetime:
        """``created_ns`` as an aware UTC datetime."""
        return utc_from_ns(self.created_ns)

    @property
    def info(self) -> CheckpointInfo:
        """The same checkpoint without its state."""
        return CheckpointInfo(
            self.workflow_id, self.seq, self.step, self.schema, self.created_ns, self.size,
            self.digest,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """One workflow as the ``wf`` index records it."""

    workflow_id: str
    status: Status
    created_ns: int
    updated_ns: int
    head_seq: int
    """Seq of the newest checkpoint present; 0 when none is."""
    last_seq: int
    """The highest seq ever assigned; the next put gets ``last_seq + 1``."""
    checkpoints: int
    bytes: int
    """Bytes of all the workflow's stored records."""
    schema: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts and sizes of a store, as ``stats()`` returns them."""

    path: str
    durability: Durability
    format_version: int
    workflows: int
    workflows_by_status: Mapping[str, int]
    checkpoints: int
    record_bytes: int
    """Bytes of every stored record (headers and bodies)."""
    live_bytes: int
    """Bytes of the pages holding data; LMDB reuses the rest of the file."""
    file_bytes: int
    map_size: int
    max_map_size: int
    page_size: int
    readers_used: int
    max_readers: int
    oldest_ns: int | None
    newest_ns: int | None
    largest: tuple[WorkflowInfo, ...]
    """The workflows holding the most bytes, largest first."""


@dataclass(frozen=True, slots=True)
class DamagedRecord:
    """A ``ckpt`` record that failed its checks."""

    workflow_id: str | None
    """None when the key itself is malformed and names no workflow."""
    seq: int | None
    key: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class IndexProblem:
    """A ``wf`` or ``age`` entry that disagrees with the records."""

    table: str
    workflow_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify()`` checked and found."""

    workflows: int
    records: int
    bytes: int
    """Bytes of the records checked."""
    damaged: tuple[DamagedRecord, ...]
    index_problems: tuple[IndexProblem, ...]
    deep: bool
    """True when every body was decoded too."""
    seconds: float
    structure_problems: tuple[str, ...] = ()
    """Damaged pages of the file. When there are any, the records were not read (LMDB may
    crash on such pages): ``recover`` copies what is intact into a new store."""
    chunks: int = 0
    """Chunks stored (record format 2); not counted when one workflow was verified."""
    chunk_problems: tuple[str, ...] = ()
    """Chunks nothing references, and reference counts that disagree with a recount of the
    references (a damaged or missing chunk is reported in ``damaged``, for every checkpoint
    that uses it)."""

    @property
    def ok(self) -> bool:
        """True when no page, record or chunk is damaged and the indexes agree with the records."""
        return (
            not self.structure_problems
            and not self.damaged
            and not self.index_problems
            and not self.chunk_problems
        )


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What ``repair()`` did."""

    backup_path: str | None
    removed: tuple[DamagedRecord, ...]
    workflows_rebuilt: int
    """Workflows whose ``wf`` entry was rewritten."""
    age_added: int
    age_removed: int
    seconds: float
    chunk_counts_fixed: int = 0
    """Chunk reference counts rewritten (or dropped) to match the records left."""
    chunks_removed: int = 0
    """Chunks deleted because no record reached them any more."""


@dataclass(frozen=True, slots=True)
class GcDeletion:
    """A checkpoint a garbage collection deleted (or, in a dry run, would delete)."""

    workflow_id: str
    seq: int
    created_ns: int
    bytes: int
    """The record's bytes."""
    rule: str
    """The policy bound that chose it: ``keep_last``, ``max_age``, ``max_size`` or
    ``finished_max_age``."""


@dataclass(frozen=True, slots=True)
class GcReport:
    """What ``gc()`` deleted, or with ``dry_run`` would delete."""

    dry_run: bool
    checkpoints_removed: int
    workflows_removed: int
    """Workflows deleted whole, index entry and all."""
    record_bytes_removed: int
    live_bytes_before: int
    live_bytes_after: int
    """Measured after the deletions; in a dry run, an estimate in proportion to the record
    bytes the plan frees."""
    file_bytes: int
    over_cap: int
    """Live bytes still above ``max_size``: what the policy forbids deleting (running
    workflows' newest checkpoints, finished workflows' final ones) holds more than the cap."""
    by_rule: Mapping[str, int]
    """Checkpoints removed per policy bound."""
    deletions: tuple[GcDeletion, ...]
    """Every checkpoint deleted, oldest first. A dry run lists what the first plan deletes: a
    collection under ``max_size`` that finds the store still above the cap afterwards (records
    freed leave pages shared with kept ones) plans again and deletes the next oldest too."""
    transactions: int
    """Write transactions used; each deletes a bounded number of checkpoints."""
    seconds: float


@dataclass(frozen=True, slots=True)
class CompactReport:
    """What ``compact()`` did."""

    path: str
    """The compacted store: the store itself, or the copy made at ``dest``."""
    file_bytes_before: int
    file_bytes_after: int
    live_bytes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class StateChange:
    """One difference between two states (``diff_states``)."""

    op: Literal["added", "removed", "changed"]
    path: tuple[object, ...]
    """Map keys and list indexes from the state's root to the value; () for the root itself."""
    old: object
    """The value before; None when added."""
    new: object
    """The value after; None when removed."""


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What ``copy_store()`` copied."""

    source: str
    dest: str
    workflows: int
    checkpoints: int
    items: int
    """Every key copied, index entries and ``meta`` included."""
    seconds: float


@dataclass(frozen=True, slots=True)
class StoreStep:
    """One registered upgrade of the store format."""

    from_version: int
    to_version: int
    name: str
    """The migration function's name."""
    description: str
    """The first line of its docstring."""


@dataclass(frozen=True, slots=True)
class StoreMigrationReport:
    """What an upgrade of the store format did, or with ``check`` would do."""

    path: str
    from_version: int
    to_version: int
    steps: tuple[StoreStep, ...]
    """The steps run (or to run), in order; empty when the store was current."""
    backup_path: str | None
    """The copy taken before the first step; None when nothing ran or no backup was asked."""
    check: bool
    seconds: float


@dataclass(frozen=True, slots=True)
class StateUpgrade:
    """A workflow whose newest state is (or was) upgraded to its name's current schema."""

    workflow_id: str
    name: str
    """The name its state migrations are registered under."""
    seq: int
    """The checkpoint upgraded."""
    from_schema: int
    to_schema: int
    new_seq: int | None
    """The checkpoint written with the upgraded state; None in a check."""


@dataclass(frozen=True, slots=True)
class StateMigrationReport:
    """What ``migrate_states`` wrote, or with ``check`` would write."""

    upgraded: tuple[StateUpgrade, ...]
    current: int
    """Workflows whose newest state already had the current schema (or no migrations)."""
    check: bool
    seconds: float


@dataclass(frozen=True, slots=True)
class WorkflowRecovery:
    """What ``recover()`` got back of one workflow."""

    workflow_id: str
    recovered: int
    from_scan: int
    """How many of the recovered checkpoints only the page scan found (see ``RecoverReport``)."""
    lost: int | None
    """Checkpoints the source's index counted that were not recovered; None when the source's
    index entry for the workflow could not be read."""


@dataclass(frozen=True, slots=True)
class RecoverReport:
    """What ``recover()`` salvaged from a damaged store into a fresh one."""

    source: str
    dest: str
    snapshot_txnid: int | None
    """The LMDB transaction whose B-tree was walked; None when no meta page was usable."""
    recovered: int
    from_scan: int
    """Records found only by scanning pages. A scan also finds copies that LMDB had freed, so
    such a record may be one that was deleted, or one from a commit newer than the snapshot."""
    damaged: tuple[DamagedRecord, ...]
    """Records reached that failed their checks; not copied."""
    skipped_pages: tuple[str, ...]
    """Pages or nodes of the source that could not be read, and why."""
    workflows: tuple[WorkflowRecovery, ...]
    seconds: float

    @property
    def complete(self) -> bool:
        """True when nothing was found damaged, unreadable, or missing."""
        return (
            not self.damaged and not self.skipped_pages and all(w.lost == 0 for w in self.workflows)
        )


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What ``export_jsonl()`` wrote."""

    path: str
    workflows: int
    checkpoints: int
    bytes: int
    """Bytes of the file written."""
    damaged: tuple[DamagedRecord, ...]
    """Checkpoints that failed their checks: reported, and left out of the file."""
    seconds: float

    @property
    def ok(self) -> bool:
        """True when no checkpoint was left out as damaged."""
        return not self.damaged


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """A line of an export file, or a legacy state file, that an import reports."""

    source: str
    """Where it is: ``line 12`` of the export file, or the file's path inside the legacy
    directory (``history/build-20260101-120000.json``)."""
    workflow_id: str | None
    """None when it could not be read."""
    seq: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``import_jsonl()`` did."""

    path: str
    lines: int
    """Lines of the file read, the header included."""
    workflows: int
    """Workflows whose checkpoints were imported or found already present."""
    imported: int
    """Checkpoints written."""
    already_present: int
    """Checkpoints the store already held byte for byte: not written again."""
    statuses_set: int
    """Workflows whose status and extras were set from their workflow line."""
    mismatched: tuple[ImportProblem, ...]
    """Checkpoints imported whose digest differs from the one the line carries."""
    skipped: tuple[ImportProblem, ...]
    """Lines not imported, and why."""
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every line was imported (or present) with the digest it carries."""
        return not self.mismatched and not self.skipped


@dataclass(frozen=True, slots=True)
class LegacyImportReport:
    """What ``import_legacy()`` did."""

    source: str
    files: int
    """State files read (``*.json`` and ``*.json.gz`` at the top and under ``history/``, but
    ``last.json`` and the ``*.meta.json`` files)."""
    snapshots: int
    """Distinct snapshots among them."""
    duplicates: int
    """Further copies of a snapshot (the copy under ``history/`` of a top-level file)."""
    workflows: int
    imported: int
    """Checkpoints written."""
    already_present: int
    """Snapshots an earlier import had already written: not written again."""
    statuses_set: int
    """Workflows whose status (and extras) were set from their current snapshot."""
    skipped: tuple[ImportProblem, ...]
    """Files not imported, and why."""
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every state file was imported or found already present."""
        return not self.skipped


@dataclass(frozen=True, slots=True)
class Lease:
    """An executor's claim on a workflow, kept in the workflow's ``wf`` entry."""

    workflow_id: str
    owner: str
    """A random token naming the holder: only it may renew or release the lease."""
    pid: int
    host: str
    pid_started: int | None
    """When the holder process started (clock ticks after boot, from ``/proc``), so that a
    process that reused the pid is not taken for the holder; None where it is unknown."""
    acquired_ns: int
    renewed_ns: int
    ttl_ns: int
    """How long after ``renewed_ns`` the lease expires unless renewed."""
    node: str | None = None
    """The holder's boot id and pid namespace (Linux): processes of another boot, or of another
    container sharing the host name, are not judged by their pid; None where unknown."""

    @property
    def expires_ns(self) -> int:
        """When the lease expires unless renewed."""
        return self.renewed_ns + self.ttl_ns
