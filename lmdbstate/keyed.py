"""Records at seqs the caller chooses, for stores whose checkpoints are named from outside.

``CheckpointStore.put`` numbers a workflow's checkpoints itself. A saver for another system's
checkpoints (``langgraph.py``) derives each seq from that system's own checkpoint id instead, so
that a lookup by id is one key and seq order is id order. These functions write and delete such
records inside a write transaction, keeping the ``wf`` and ``age`` indexes exactly as ``put`` and
``delete`` keep them (``verify`` finds nothing to report): ``head_seq`` is the greatest seq
present, ``last_seq`` the greatest ever written, ``count`` and ``bytes`` those of the records.

Each function raises lmdbstate's errors only before its first write, as group commit requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import records
from .index import (
    WorkflowEntry,
    created_ns_of,
    delete_record,
    entry_to_write,
    forget_workflow,
    remove_checkpoint,
)
from .keys import age_key, checkpoint_key, workflow_bounds
from .kv import AGE, CKPT, WF, WriteTxn


def put_at(
    txn: WriteTxn,
    workflow_key: bytes,
    seq: int,
    body: bytes,
    created_ns: int,
    *,
    extras: Mapping[str, object] | None = None,
) -> int:
    """Store ``body`` as checkpoint ``seq`` of the workflow, replacing a record already there.

    The workflow is created (status ``running``) when it has no entry. ``extras`` are set in
    its entry (a None value removes the field): the retention fields ``index.RETENTION_KEEP``
    and ``index.RETENTION_FOLLOWS``, for one. Returns the bytes of the record written.

    Raises:
        StoreCorruptedError: the workflow has records but no index entry, or a damaged one.
    """
    entry = entry_to_write(txn, workflow_key, created_ns)
    key = checkpoint_key(workflow_key, seq)
    record = records.build(key, body, created_ns)
    replaced = txn.get(CKPT, key)
    if replaced is not None:
        delete_record(txn, key, created_ns_of(replaced))
        entry.count -= 1
        entry.bytes -= len(replaced)
    entry.count += 1
    entry.bytes += len(record)
    entry.head_seq = max(entry.head_seq, seq)
    entry.last_seq = max(entry.last_seq, seq)
    entry.updated_ns = max(entry.updated_ns, created_ns)
    entry.merge_extras(extras)
    txn.put(CKPT, key, record)
    txn.put(AGE, age_key(created_ns, key), b"")
    txn.put(WF, workflow_key, entry.encode())
    return len(record)


def delete_at(txn: WriteTxn, workflow_key: bytes, seqs: Iterable[int], now_ns: int) -> int:
    """Delete the workflow's checkpoints ``seqs`` that are present; returns how many were.

    A workflow left with no checkpoint is deleted whole, index entry and all.

    Raises:
        StoreCorruptedError: the workflow's index entry is damaged.
    """
    raw = txn.get(WF, workflow_key)
    if raw is None:
        return 0
    entry = WorkflowEntry.decode(workflow_key, raw)
    deleted = 0
    for seq in seqs:
        key = checkpoint_key(workflow_key, seq)
        record = txn.get(CKPT, key)
        if record is not None:
            remove_checkpoint(txn, workflow_key, entry, key, record)
            deleted += 1
    if entry.count <= 0:
        forget_workflow(txn, workflow_key)
    elif deleted:
        entry.updated_ns = max(entry.updated_ns, now_ns)
        txn.put(WF, workflow_key, entry.encode())
    return deleted


def delete_workflow(txn: WriteTxn, workflow_key: bytes) -> int:
    """Delete a workflow whole when it exists; returns the checkpoints deleted."""
    low, high = workflow_bounds(workflow_key)
    # Collect first: a cursor must not walk what is being deleted.
    doomed = [(key, created_ns_of(record)) for key, record in txn.scan(CKPT, low, high)]
    for key, created_ns in doomed:
        delete_record(txn, key, created_ns)
    if doomed or txn.get(WF, workflow_key) is not None:
        forget_workflow(txn, workflow_key)
    return len(doomed)
