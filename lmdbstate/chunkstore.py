"""Record format 2's chunk table: chunks kept once, with reference counts (see chunking.py).

The ``chunk`` table, changed only inside the write transactions that add or remove references:
key, the chunk's xxh3-128 (16 bytes); value, ``b"LC"``, a version byte (1), a flags byte, how
many records and nodes reference the chunk (4 bytes, big-endian), then the payload.

Flags: bit 0, the payload is a list node (it references other chunks); bit 1, the payload is
compressed with zstd (the ``zstd`` extra; the key is the digest of the uncompressed bytes). A
chunk whose count reaches 0 is deleted in the same transaction, and a node's references go with
it. The key is the digest of the payload, so reading a chunk checks it completely.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from . import chunking
from .chunking import Chunked
from .errors import CodecError, ConfigError, StoreError, UnsupportedFormatError
from .kv import CHUNK, ReadTxn, WriteTxn, get_many

MAGIC = b"LC"
VERSION = 1
FLAG_NODE = 1
FLAG_ZSTD = 2
KNOWN_FLAGS = FLAG_NODE | FLAG_ZSTD
HEADER_SIZE = 8
MAX_REFS = (1 << 32) - 1
COMPRESS_MIN = 64
"""Element payloads shorter than this are never compressed: zstd's frame costs more."""
ZSTD_LEVEL = 3
COMPRESSIONS = (None, "zstd")
ZSTD_HINT = "pip install 'lmdbstate[zstd]' (the zstandard package)"


def _zstd() -> Any:
    """The zstandard module.

    Raises:
        UnsupportedFormatError: it is not installed.
    """
    try:
        import zstandard
    except ImportError:
        raise UnsupportedFormatError(
            "this store holds chunks compressed with zstd, and the zstandard package is not "
            "installed",
            hint=ZSTD_HINT,
        ) from None
    return zstandard


def check_compression(compression: object) -> None:
    """Refuse an unknown compression, or zstd without the package that does it.

    Raises:
        ConfigError: either.
    """
    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression must be None or 'zstd', not {compression!r}")
    if compression == "zstd":
        try:
            _zstd()
        except UnsupportedFormatError:
            raise ConfigError(
                "compression='zstd' needs the zstandard package", hint=ZSTD_HINT
            ) from None


def _stored(data: bytes, flags: int, compress: bool) -> bytes:
    """A new chunk's table value, one reference: header and payload, compressed when smaller."""
    if compress and len(data) >= COMPRESS_MIN and not flags & FLAG_NODE:
        packed: bytes = _zstd().ZstdCompressor(level=ZSTD_LEVEL).compress(data)
        if len(packed) < len(data):
            data, flags = packed, flags | FLAG_ZSTD
    return b"".join((MAGIC, bytes((VERSION, flags)), (1).to_bytes(4, "big"), data))


def refs_of(stored: bytes | memoryview) -> int:
    """The reference count in a chunk's table value."""
    return int.from_bytes(stored[4:HEADER_SIZE], "big")


def with_refs(stored: bytes | memoryview, refs: int) -> bytes:
    """A chunk's table value with its reference count set to ``refs``.

    Raises:
        StoreError: more references than the count holds.
    """
    if refs > MAX_REFS:
        raise StoreError(f"a chunk would be referenced more than {MAX_REFS} times")
    return b"".join((stored[:4], refs.to_bytes(4, "big"), stored[HEADER_SIZE:]))


def _payload_of(digest: bytes, stored: bytes | memoryview) -> bytes:
    """The payload of a chunk's table value, decompressed, checked against ``digest``.

    Raises:
        ChunkDamagedError: a malformed header, a frame that does not decompress, or bytes that
            fail the digest.
        UnsupportedFormatError: the chunk is compressed and zstandard is not installed.
    """
    if len(stored) < HEADER_SIZE or stored[:2] != MAGIC or stored[2] != VERSION:
        raise ChunkDamagedError(digest, "not a chunk (bad header)")
    flags = stored[3]
    if flags & ~KNOWN_FLAGS:
        raise ChunkDamagedError(digest, f"unknown flags {flags:#04x}")
    data = bytes(stored[HEADER_SIZE:])
    if flags & FLAG_ZSTD:
        zstandard = _zstd()
        try:
            # Streamed: a damaged frame's header may claim any size, and is not trusted.
            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        except (zstandard.ZstdError, MemoryError, ValueError) as exc:
            raise ChunkDamagedError(digest, f"does not decompress: {exc}") from exc
    expected = chunking.node_digest(data) if flags & FLAG_NODE else chunking.digest_of(data)
    if expected != digest:
        raise ChunkDamagedError(digest, "digest mismatch")
    return data


class ChunkDamagedError(Exception):
    """A chunk is missing or fails its digest; the caller turns it into ``IntegrityError``."""

    def __init__(self, digest: bytes, reason: str) -> None:
        super().__init__(f"chunk {digest.hex()}: {reason}")
        self.digest = digest
        self.reason = reason


def payload(txn: ReadTxn, digest: bytes) -> bytes:
    """A chunk's payload, checked against its digest.

    Raises:
        ChunkDamagedError: the chunk is missing, malformed, or its bytes fail the digest.
        UnsupportedFormatError: the chunk is compressed and zstandard is not installed.
    """
    stored = txn.get(CHUNK, digest)
    if stored is None:
        raise ChunkDamagedError(digest, "missing")
    return _payload_of(digest, stored)


class _Lru:
    """Values by key, the least recently used dropped first beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, bytes | tuple[bytes, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | tuple[bytes, ...] | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes | tuple[bytes, ...]]:
        found = {}
        with self._lock:
            for key in keys:
                value = self._entries.get(key)
                if value is not None:
                    self._entries.move_to_end(key)
                    found[key] = value
        return found

    def put(self, key: bytes, value: bytes | tuple[bytes, ...]) -> None:
        size = _size(value)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= _size(dropped)


def _size(value: bytes | tuple[bytes, ...]) -> int:
    return 64 + (len(value) if type(value) is bytes else chunking.DIGEST_SIZE * len(value))


class ChunkCache:
    """Chunks a store read and checked, or wrote and committed, kept in memory by digest.

    A chunk's key is the digest of its bytes, so a cached chunk is never stale: whatever
    record names the digest names these bytes. Three quarters of ``max_bytes`` keep chunks'
    payloads and each list node's element digests, which many checkpoints share; a quarter
    keeps whole lists as msgpack packed them, one per node, so that reading the same
    checkpoint again (a workflow's newest, most often) costs one lookup. A scan of many old
    checkpoints then cycles through the lists but leaves the shared chunks in place. The least
    recently used go first; 0 keeps nothing. Reads from the cache skip the table and the hash:
    the bytes were checked when they came in.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.pieces = _Lru(max_bytes - max_bytes // 4)
        """Payloads by digest; element digests of a list by ``b"L"`` + its node's digest."""
        self.lists = _Lru(max_bytes // 4)
        """Packed lists by their node's digest."""

    def keep(self, made: Chunked) -> None:
        """Keep what a committed put wrote: each list, packed, and its element digests."""
        for node in made.lists.values():
            self.pieces.put(b"L" + node.digest, node.items)
            self.lists.put(node.digest, made.packed[node.digest])


class Reader:
    """``chunking.ChunkSource`` over a read transaction, through a ``ChunkCache``."""

    __slots__ = ("_cache", "_txn")

    def __init__(self, txn: ReadTxn, cache: ChunkCache) -> None:
        self._txn = txn
        self._cache = cache

    def payload(self, digest: bytes) -> bytes:
        """A chunk's bytes, checked against ``digest`` unless the cache has them.

        Raises:
            ChunkDamagedError: the chunk is missing or damaged.
        """
        cached = self._cache.pieces.get(digest)
        if type(cached) is bytes:
            return cached
        data = payload(self._txn, digest)
        self._cache.pieces.put(digest, data)
        return data

    def items(self, node: bytes) -> Sequence[bytes]:
        """Every element digest of the list whose node is ``node``.

        Raises:
            ChunkDamagedError: a node is missing or damaged.
            CodecError: a node does not decode.
        """
        cached = self._cache.pieces.get(b"L" + node)
        if type(cached) is tuple:
            return cached
        items = tuple(chunking.list_items(node, self.payload))
        self._cache.pieces.put(b"L" + node, items)
        return items

    def packed_list(self, node: bytes) -> bytes:
        """The list whose node is ``node``, packed: array header, then its elements' bytes.

        Raises:
            ChunkDamagedError: a chunk is missing or damaged.
            CodecError: a node does not decode.
        """
        cached = self._cache.lists.get(node)
        if type(cached) is bytes:
            return cached
        items = self.items(node)
        payloads = self._cache.pieces.get_many(items)
        missing = [item for item in dict.fromkeys(items) if item not in payloads]
        fetched = get_many(self._txn, CHUNK, missing)  # one query for them all on PostgreSQL
        for item in missing:
            if item not in fetched:
                raise ChunkDamagedError(item, "missing")
            payloads[item] = data = _payload_of(item, fetched[item])
            self._cache.pieces.put(item, data)
        packed = chunking.pack_list(items, payloads.__getitem__)  # type: ignore[arg-type]
        self._cache.lists.put(node, packed)
        return packed


def is_whole(digest: bytes, stored: bytes | memoryview) -> bool:
    """Whether ``stored`` is a chunk value whose payload matches the key ``digest``.

    Raises:
        UnsupportedFormatError: it is compressed and zstandard is not installed.
    """
    if len(digest) != chunking.DIGEST_SIZE:
        return False
    try:
        _payload_of(digest, stored)
    except ChunkDamagedError:
        return False
    return True


def acquire(
    txn: WriteTxn,
    refs: Iterable[bytes],
    made: Chunked,
    *,
    compress: bool = False,
    stored: dict[bytes, bytes] | None = None,
) -> int:
    """Add one reference to each chunk of ``refs``, storing those not stored yet from ``made``.

    A node stored now references its own chunks in turn. Returns the bytes stored. With
    ``compress``, element chunks stored now are compressed with zstd when that saves bytes.
    ``stored``: the table values of every chunk of ``made.named()`` the store holds, read in
    this transaction (it is kept up to date here); without it, the chunks are read a level of
    references at a time (one query each on PostgreSQL).

    Raises:
        KeyError: a chunk to store is not in ``made`` (a node it extends was deleted since the
            split: split again, flat).
    """
    written = 0
    level = Counter(refs)
    values = stored
    while level:
        if stored is None:
            values = get_many(txn, CHUNK, level)
        assert values is not None
        below: Counter[bytes] = Counter()
        for digest, added in level.items():
            value = values.get(digest)
            if value is not None:
                value = with_refs(_healed(value, made.chunks.get(digest)), refs_of(value) + added)
            else:
                links = made.links.get(digest)
                flags = FLAG_NODE if links is not None else 0
                value = with_refs(_stored(made.chunks[digest], flags, compress), added)
                written += len(value)
                below.update(links or ())
            txn.put(CHUNK, digest, value)
            values[digest] = value
        level = below
    return written


def _healed(value: bytes, payload: bytes | None) -> bytes:
    """``value``, its payload replaced by ``payload`` when the stored one differs.

    A put holding a chunk's bytes rewrites a damaged copy of them (an uncompressed one: a
    compressed one is left for verify to report) rather than reference it as it is.
    """
    if payload is None or value[3] & FLAG_ZSTD or value[HEADER_SIZE:] == payload:
        return value
    return value[:HEADER_SIZE] + payload


def release(txn: WriteTxn, refs: Iterable[bytes]) -> int:
    """Drop one reference from each chunk of ``refs``; delete those left unreferenced.

    A node deleted drops its own references in turn, a level at a time. Returns the chunks
    deleted.
    """
    deleted = 0
    level = Counter(refs)
    while level:
        stored = get_many(txn, CHUNK, level)
        below: Counter[bytes] = Counter()
        for digest, dropped in level.items():
            value = stored.get(digest)
            if value is None:
                continue  # already gone (a damaged store): nothing to drop
            held = refs_of(value)
            if held > dropped:
                txn.put(CHUNK, digest, with_refs(value, held - dropped))
                continue
            txn.delete(CHUNK, digest)
            deleted += 1
            try:
                node = node_of(value)
            except CodecError:
                continue  # a damaged node: its chunks stay, and verify reports them
            if node is not None:
                previous, items = node
                below.update(items)
                if previous is not None:
                    below[previous] += 1
        level = below
    return deleted


def node_of(value: bytes | memoryview) -> tuple[bytes | None, list[bytes]] | None:
    """The previous node and elements a chunk table value references; None for an element.

    Raises:
        CodecError: it is flagged a node but does not decode as one.
    """
    if len(value) < HEADER_SIZE or not value[3] & FLAG_NODE:
        return None
    return chunking.decode_node(bytes(value[HEADER_SIZE:]))
