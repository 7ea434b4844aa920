"""Checking and rebuilding record format 2's chunks (for ``integrity.py``).

- ``ChunkReader`` tells whether a record's chunks are all present and whole, remembering what
  it found, so that a chunk many records share is read and hashed once per check.
- ``recount`` counts every reference the records and the reachable list nodes hold: what each
  chunk's reference count must say. ``count_problems`` compares the two; ``rebuild_counts``
  makes the counts agree with the recount, deleting chunks nothing reaches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from . import chunking, chunkstore, records
from .chunkstore import ChunkDamagedError
from .errors import CodecError, IntegrityError, StoreCorruptedError
from .kv import CHUNK, CKPT, ReadTxn, WriteTxn


def _short(digest: bytes) -> str:
    return digest.hex()


class ChunkReader:
    """Whether chunks are intact, read through one transaction and remembered by digest."""

    def __init__(self) -> None:
        self._problems: dict[bytes, str | None] = {}

    def record_problem(self, txn: ReadTxn, body: bytes | memoryview) -> str | None:
        """None when every chunk a format-2 record's ``body`` reaches is whole; else why not."""
        try:
            refs = records.chunk_refs(body)
        except CodecError:
            return None  # not msgpack, yet its digest held: deep verify reports the body
        for ref in refs:
            problem = self.node_problem(txn, ref)
            if problem is not None:
                return f"its state's {problem}"
        return None

    def node_problem(self, txn: ReadTxn, digest: bytes) -> str | None:
        """None when the list node ``digest``, its previous nodes and their elements are whole."""
        chain: list[bytes] = []
        node: bytes | None = digest
        problem: str | None = None
        while node is not None and node not in self._problems:
            if len(chain) > chunking.FLAT_EVERY:
                problem = f"list node {_short(digest)}: a chain of more than {chunking.FLAT_EVERY}"
                break
            chain.append(node)
            try:
                node, items = chunking.decode_node(chunkstore.payload(txn, node))
            except ChunkDamagedError as exc:
                problem = str(exc)
                break
            except CodecError as exc:
                problem = f"list node {_short(chain[-1])}: {exc.reason}"
                break
            problem = next(filter(None, (self._element_problem(txn, item) for item in items)), None)
            if problem is not None:
                break
        if problem is None and node is not None:
            problem = self._problems[node]  # the rest of the chain, checked before
        for checked in chain:
            self._problems[checked] = problem
        return problem

    def _element_problem(self, txn: ReadTxn, digest: bytes) -> str | None:
        if digest not in self._problems:
            try:
                chunkstore.payload(txn, digest)
                self._problems[digest] = None
            except ChunkDamagedError as exc:
                self._problems[digest] = str(exc)
        return self._problems[digest]


@dataclass
class Recount:
    """Every reference to a chunk that the records and the nodes they reach hold."""

    counts: dict[bytes, int] = field(default_factory=dict)
    unreadable_records: int = 0
    """Intact format-2 records whose references could not be read (not msgpack)."""


def _chunked_bodies(txn: ReadTxn) -> Iterator[memoryview]:
    for key, record in txn.scan(CKPT, b""):
        if not records.is_chunked(record):
            continue
        try:
            _, _, body = records.check(key, record)
        except IntegrityError:
            continue  # a damaged record's references cannot be read: it holds none
        yield body


def recount(txn: ReadTxn) -> Recount:
    """Count the references held by every intact format-2 record and every node they reach."""
    found = Recount()
    counts = found.counts
    pending: list[bytes] = []
    for body in _chunked_bodies(txn):
        try:
            refs = records.chunk_refs(body)
        except CodecError:
            found.unreadable_records += 1
            continue
        for ref in refs:
            counts[ref] = counts.get(ref, 0) + 1
            if counts[ref] == 1:
                pending.append(ref)
    while pending:
        stored = txn.get(CHUNK, pending.pop())
        try:
            node = None if stored is None else chunkstore.node_of(stored)
        except CodecError:
            node = None
        if node is None:
            continue  # missing, or not a node: what it would reference is not counted
        previous, items = node
        for item in items:
            counts[item] = counts.get(item, 0) + 1
        if previous is not None:
            counts[previous] = counts.get(previous, 0) + 1
            if counts[previous] == 1:
                pending.append(previous)  # a node first reached here: its references count too
    return found


def count_problems(txn: ReadTxn) -> tuple[int, list[str]]:
    """The chunks stored, and where their reference counts disagree with a recount.

    Run in one read transaction: the recount and the counts are then of one snapshot.
    """
    counts = recount(txn).counts
    problems: list[str] = []
    stored = 0
    for digest, value in txn.scan(CHUNK, b""):
        stored += 1
        if len(value) < chunkstore.HEADER_SIZE or value[:2] != chunkstore.MAGIC:
            problems.append(f"chunk {_short(digest)} has a damaged header")
            continue
        held, expected = chunkstore.refs_of(value), counts.get(digest, 0)
        if expected == 0:
            problems.append(f"chunk {_short(digest)} is stored but nothing references it")
        elif held != expected:
            problems.append(
                f"chunk {_short(digest)} has reference count {held}; the references say {expected}"
            )
    return stored, problems


def rebuild_counts(txn: WriteTxn) -> tuple[int, int]:
    """Make every chunk's reference count equal a recount; delete the chunks nothing reaches.

    Returns (counts rewritten, chunks deleted). Records whose chunks are damaged must be gone
    first (``integrity.repair`` deletes them): their references would keep damaged chunks.
    """
    found = recount(txn)
    if found.unreadable_records:
        raise StoreCorruptedError(
            f"the chunk references of {found.unreadable_records} intact records cannot be read: "
            "the chunk counts were not rebuilt (rebuilding would free chunks they may use)",
            hint="`lmdbstate export` keeps every readable checkpoint whole",
        )
    counts = found.counts
    rewritten = deleted = 0
    for digest, value in [(digest, bytes(value)) for digest, value in txn.scan(CHUNK, b"")]:
        expected = counts.get(digest, 0)
        if expected == 0:
            txn.delete(CHUNK, digest)
            deleted += 1
        elif len(value) >= chunkstore.HEADER_SIZE and chunkstore.refs_of(value) != expected:
            txn.put(CHUNK, digest, chunkstore.with_refs(value, expected))
            rewritten += 1
    return rewritten, deleted
