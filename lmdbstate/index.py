"""The ``wf`` and ``age`` indexes: a workflow's entry, and the bookkeeping of one record.

``store.py`` keeps them in step with ``ckpt`` on every write; ``integrity.py`` checks them
against ``ckpt`` and rebuilds them from it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from . import chunkstore, codec, records
from .errors import CodecError, IntegrityError, StoreCorruptedError, WorkflowNotFoundError
from .keys import age_key, seq_of, workflow_bounds
from .kv import AGE, CKPT, META, WF, ReadTxn, WriteTxn
from .models import STATUSES, Status, WorkflowInfo

RETENTION_KEEP = "retention_keep"
"""The field of a workflow's extras naming how many of its newest checkpoints retention keeps
(``retention.WorkflowEntries.keep_newest``)."""

RETENTION_FOLLOWS = "retention_follows"
"""The field of a workflow's extras naming the workflow whose records its own go with, seq for
seq (the LangGraph saver's pending writes go with their checkpoints): retention keeps its
records at and above the oldest seq it keeps of that workflow."""

NEWEST_PARENT = "newest_parent"
"""The field of a workflow's extras holding ``[seq, parent seq]`` of the newest checkpoint its
writer put, where checkpoints fork (the LangGraph saver): should that checkpoint be damaged, a
resume falls back to its parent, and retention keeps that one."""

DELETED_NS = b"deleted_ns"
"""The ``meta`` entry holding when a workflow was last deleted whole (ns since the epoch)."""


def workflow_id_of(workflow_key: bytes) -> str:
    """The workflow id whose UTF-8 bytes are ``workflow_key`` (lenient with damaged bytes)."""
    return workflow_key.decode("utf-8", "replace")


class WorkflowEntry:
    """A workflow's ``wf`` index entry: a msgpack array of these fields, then ``extras``.

    ``extras`` is a map for fields added by later versions; it is kept as found on rewrite.
    """

    __slots__ = (
        "bytes",
        "count",
        "created_ns",
        "extras",
        "head_seq",
        "last_seq",
        "schema",
        "status",
        "updated_ns",
    )

    # ``updated_ns`` only grows, whatever the clock does: it is at least the creation time of
    # every record the workflow holds, and of every one deleted from it, which ``recover``
    # relies on to tell a record committed after a snapshot from one deleted before it.

    def __init__(self, now_ns: int) -> None:
        self.status: Status = "running"
        self.created_ns = self.updated_ns = now_ns
        self.head_seq = self.last_seq = self.count = self.bytes = 0
        self.schema = 1
        self.extras: dict[Any, Any] = {}

    @classmethod
    def decode(cls, workflow_key: bytes, raw: bytes) -> WorkflowEntry:
        """Decode a stored entry.

        Raises:
            StoreCorruptedError: the entry is not a well-formed index entry.
        """
        entry = cls.__new__(cls)
        try:
            (
                entry.status, entry.created_ns, entry.updated_ns, entry.head_seq,
                entry.last_seq, entry.count, entry.bytes, entry.schema, entry.extras,
            ) = codec.decode(raw)  # fmt: skip
            well_formed = (
                entry.status in STATUSES
                and type(entry.created_ns) is int
                and type(entry.updated_ns) is int
                and type(entry.head_seq) is int
                and type(entry.last_seq) is int
                and type(entry.count) is int
                and type(entry.bytes) is int
                and type(entry.schema) is int
                and type(entry.extras) is dict
            )
        except (CodecError, TypeError, ValueError):
            well_formed = False
        if not well_formed:
            raise StoreCorruptedError(
                f"the index entry of workflow {workflow_id_of(workflow_key)!r} is damaged",
                hint="its checkpoints are intact; rebuilding the index needs a repair tool",
            )
        return entry

    def merge_extras(self, extras: Mapping[str, object] | None) -> None:
        """Set these fields of ``extras``; a None value removes the field."""
        for name, value in (extras or {}).items():
            if value is None:
                self.extras.pop(name, None)
            else:
                self.extras[name] = value

    def encode(self) -> bytes:
        """The stored form."""
        return codec.encode(
            [
                self.status, self.created_ns, self.updated_ns, self.head_seq, self.last_seq,
                self.count, self.bytes, self.schema, self.extras,
            ]
        )  # fmt: skip

    def info(self, workflow_key: bytes) -> WorkflowInfo:
        """The entry as the API returns it."""
        return WorkflowInfo(
            workflow_id=workflow_id_of(workflow_key),
            status=self.status,
            created_ns=self.created_ns,
            updated_ns=self.updated_ns,
            head_seq=self.head_seq,
            last_seq=self.last_seq,
            checkpoints=self.count,
            bytes=self.bytes,
            schema=self.schema,
        )


def required_entry(txn: ReadTxn, workflow_key: bytes) -> WorkflowEntry:
    """The entry of a workflow.

    Raises:
        WorkflowNotFoundError: the workflow has no entry.
        StoreCorruptedError: the entry is damaged.
    """
    raw = txn.get(WF, workflow_key)
    if raw is None:
        raise WorkflowNotFoundError(workflow_id_of(workflow_key))
    return WorkflowEntry.decode(workflow_key, raw)


def created_ns_of(record: bytes | memoryview) -> int | None:
    """The creation time in a record's header; None when the record is too short to hold one."""
    if len(record) < records.HEADER_SIZE:
        return None
    created_ns: int = records.HEADER.unpack_from(record)[4]
    return created_ns


def delete_record(txn: WriteTxn, key: bytes, created_ns: int | None) -> None:
    """Delete a record, its ``age`` entry (when its creation time is known) and its chunk refs.

    A format-2 record's chunks that no record or node references any more go too.
    """
    record = txn.get(CKPT, key)
    if record is not None and records.is_chunked(record):
        try:
            _, _, body = records.check(key, record)
            refs = records.chunk_refs(body)
        except (IntegrityError, CodecError):
            refs = ()  # a damaged record: its chunks stay, verify reports them, repair frees them
        chunkstore.release(txn, refs)
    txn.delete(CKPT, key)
    if created_ns is not None:
        txn.delete(AGE, age_key(created_ns, key))


def entry_to_write(txn: ReadTxn, workflow_key: bytes, now_ns: int) -> WorkflowEntry:
    """The workflow's entry, to be changed and written back; a new one for a new workflow.

    Raises:
        StoreCorruptedError: the workflow has records but no entry (starting it again at seq 1
            would overwrite them), or its entry is damaged.
    """
    raw = txn.get(WF, workflow_key)
    if raw is not None:
        return WorkflowEntry.decode(workflow_key, raw)
    if txn.last(CKPT, *workflow_bounds(workflow_key)) is not None:
        raise StoreCorruptedError(
            f"workflow {workflow_id_of(workflow_key)!r} has checkpoints but no index entry",
            hint="`lmdbstate repair` rebuilds the index entry from the checkpoints",
        )
    return WorkflowEntry(now_ns)


def remove_checkpoint(
    txn: WriteTxn, workflow_key: bytes, entry: WorkflowEntry, key: bytes, record: bytes
) -> None:
    """Delete one checkpoint and account for it in ``entry``, which the caller writes back.

    When it was the head, the head becomes the newest checkpoint left (0: none is left).
    """
    delete_record(txn, key, created_ns_of(record))
    entry.count -= 1
    entry.bytes -= len(record)
    if entry.head_seq == seq_of(key):
        previous = txn.last(CKPT, *workflow_bounds(workflow_key))
        entry.head_seq = 0 if previous is None else seq_of(previous[0])


def forget_workflow(txn: WriteTxn, workflow_key: bytes) -> None:
    """Delete a workflow's entry, once its records are gone, and note when in ``meta``.

    A deleted workflow leaves no entry to say when: ``recover`` needs to know, to tell its
    records (which LMDB's freed pages still hold) from those of a newer commit.
    """
    txn.delete(WF, workflow_key)
    txn.put(META, DELETED_NS, codec.encode(time.time_ns()))
