"""The store-format upgrades lmdbstate ships, registered with ``migrations.store_migration``.

Format 1 -> 2 (record format 2, docs/format.md): the ``chunk`` table appears
(``upgrade_store`` creates them before the step runs), and each workflow's records are rewritten
oldest first as ``put`` would write them now, so that a list one record extends from the one
before becomes a node naming the earlier node and only the new elements. A record keeps its
key, creation time and everything it holds; its bytes, and so its digest, change. Records that
are damaged, or whose keys do not decode here, are left as they are: format 1 records stay
valid in a format 2 store.
"""

from __future__ import annotations

from typing import Any

from . import chunking, chunkstore, records
from .errors import CodecError, IntegrityError, StoreCorruptedError
from .index import WorkflowEntry
from .keys import workflow_bounds
from .kv import CKPT, WF, WriteTxn
from .migrations import store_migration


@store_migration(from_version=1)
def split_long_lists(txn: WriteTxn) -> None:
    """Format 1 to 2: a chunk table; the long lists of stored states kept once, as chunks."""
    workflow_keys = [key for key, _ in txn.scan(WF, b"")]
    for workflow_key in workflow_keys:
        raw = txn.get(WF, workflow_key)
        try:
            entry = None if raw is None else WorkflowEntry.decode(workflow_key, raw)
        except StoreCorruptedError:
            entry = None  # verify reports it and repair rebuilds it, counting the new sizes
        grown = _split_workflow(txn, workflow_key)
        if entry is not None and grown:
            entry.bytes += grown
            txn.put(WF, workflow_key, entry.encode())


def _split_workflow(txn: WriteTxn, workflow_key: bytes) -> int:
    """Rewrite one workflow's records in format 2, oldest first; returns the change in bytes."""
    keys = [key for key, _ in txn.scan(CKPT, *workflow_bounds(workflow_key))]
    previous: dict[Any, chunking.ListNode] = {}
    grown = 0
    for key in keys:
        record = txn.get(CKPT, key)
        if record is None or records.is_chunked(record):
            continue
        try:
            created_ns, _, body = records.check(key, record)
            chunked = (
                chunking.split(bytes(body), previous)
                if len(body) >= chunking.INLINE_LIMIT
                else None
            )
        except (IntegrityError, CodecError):
            previous = {}
            continue  # left as it is (verify reports a damaged one)
        if chunked is None:
            previous = {}
            continue
        rebuilt = records.build(key, chunked.body, created_ns, chunked=True)
        txn.put(CKPT, key, rebuilt)
        chunkstore.acquire(txn, chunked.refs, chunked)
        grown += len(rebuilt) - len(record)
        previous = dict(chunked.lists)
    return grown
