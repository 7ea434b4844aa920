"""An oracle for chunk reference counts, independent of ``lmdbstate.chunkcheck``."""

from __future__ import annotations

from collections import Counter

from lmdbstate import chunking, chunkstore
from lmdbstate.kv import CHUNK, ReadTxn


def node_references(txn: ReadTxn) -> Counter[bytes]:
    """The references every stored list node holds: its elements and its previous node."""
    counts: Counter[bytes] = Counter()
    for _digest, stored in txn.scan(CHUNK):
        if stored[3] & chunkstore.FLAG_NODE:
            previous, items = chunking.decode_node(bytes(stored[chunkstore.HEADER_SIZE :]))
            counts.update(items)
            if previous is not None:
                counts[previous] += 1
    return counts


def stored_counts(txn: ReadTxn) -> Counter[bytes]:
    """The reference count each stored chunk carries."""
    return Counter({key: chunkstore.refs_of(value) for key, value in txn.scan(CHUNK)})
