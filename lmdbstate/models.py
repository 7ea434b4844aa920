"""Frozen dataclasses the API returns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["running", "completed", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("running", "completed", "failed", "cancelled")
Durability = Literal["sync", "async"]


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

    @property
    def ok(self) -> bool:
        """True when nothing is damaged and the indexes agree with the records."""
        return not self.damaged and not self.index_problems


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
