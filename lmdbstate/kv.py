"""The ordered key-value transaction interface that ``store.py`` speaks to storage through.

LMDB implements it in ``env.py``. A backend holds named tables of byte keys in byte order and
runs a caller's function inside one read or one write transaction; a write transaction either
commits whole or leaves nothing. Backends may run the function more than once (LMDB does after
growing its map), so the function must not have effects outside the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice, pairwise
from typing import Protocol, TypeVar, TypeVarTuple, runtime_checkable

from .errors import StoreCorruptedError

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
V_co = TypeVar("V_co", covariant=True)

META = "meta"
CKPT = "ckpt"
WF = "wf"
AGE = "age"
CHUNK = "chunk"
TABLES = (META, CKPT, WF, AGE, CHUNK)


class ReadTxn(Protocol):
    """A consistent snapshot of every table."""

    def get(self, table: str, key: bytes) -> bytes | None:
        """The value under ``key``, or None."""
        ...

    def last(self, table: str, low: bytes, high: bytes) -> tuple[bytes, bytes] | None:
        """The greatest item with ``low <= key < high``, or None."""
        ...

    def scan(
        self,
        table: str,
        low: bytes = b"",
        high: bytes | None = None,
        *,
        reverse: bool = False,
        page: int = 0,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``low <= key < high`` (no upper bound when ``high`` is None) in key order.

        ``page``: about how many items the caller will read (0: not known). A backend that
        fetches rows from a server asks for that many first, then more as they are read.
        """
        ...

    def count(self, table: str) -> int:
        """The number of items in ``table``."""
        ...


class ViewTxn(Protocol):
    """A consistent snapshot whose values are handed out without copying them.

    A value (``bytes`` or a ``memoryview`` into the storage) is valid only until the function
    given to ``Backend.read_views`` returns: read what is needed of it there, or copy it.
    """

    def scan(
        self,
        table: str,
        low: bytes = b"",
        high: bytes | None = None,
        *,
        reverse: bool = False,
        page: int = 0,
    ) -> Iterator[tuple[bytes, bytes | memoryview]]:
        """As ``ReadTxn.scan``; keys are ``bytes``, values may be views."""
        ...


class WriteTxn(ReadTxn, Protocol):
    """A snapshot that can also change; its changes commit together or not at all."""

    def put(self, table: str, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing any value there."""
        ...

    def delete(self, table: str, key: bytes) -> bool:
        """Remove ``key``; True when it was there."""
        ...


@dataclass(frozen=True, slots=True)
class StorageInfo:
    """What the backend knows about the space it uses."""

    live_bytes: int
    file_bytes: int
    map_size: int
    max_map_size: int
    page_size: int
    readers_used: int
    max_readers: int


class Backend(Protocol):
    """Storage for one store."""

    location: str
    readonly: bool

    def read(self, fn: Callable[[ReadTxn, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(txn, *args)`` in a read transaction and return its result."""
        ...

    def read_views(self, fn: Callable[[ViewTxn, *Ts], T], *args: *Ts) -> T:
        """As ``read``, with values not copied out of the storage (see ``ViewTxn``)."""
        ...

    def write(self, fn: Callable[[WriteTxn, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(txn, *args)`` in a write transaction, commit, and return its result."""
        ...

    def storage_info(self) -> StorageInfo:
        """Sizes and counters of the underlying storage."""
        ...

    def check_structure(self) -> tuple[str, ...]:
        """Problems in the storage's own structure that reading through it could trip on."""
        ...

    def copy_to(self, dest: str) -> None:
        """Write a consistent copy of every table into a new LMDB store at ``dest``."""
        ...

    def compact(self) -> None:
        """Give the space the store does not use back to the filesystem, in place."""
        ...

    def create_tables(self) -> None:
        """Create the tables of ``TABLES`` the storage lacks (a store of an older format's)."""
        ...

    def close(self) -> None:
        """Release the storage; idempotent."""
        ...


@runtime_checkable
class GroupedBackend(Backend, Protocol):
    """A backend that can commit concurrent writes together (``durability="group"``)."""

    def write_grouped(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn(txn)`` in a write transaction shared with other threads' grouped writes.

        Returns once that transaction has committed. ``fn`` raises lmdbstate's errors only
        before its first write (see ``group``).
        """
        ...


class Scanner(Protocol[V_co]):
    """A transaction's ``scan``: ``ReadTxn`` gives bytes values, ``ViewTxn`` views."""

    def scan(
        self,
        table: str,
        low: bytes = b"",
        high: bytes | None = None,
        *,
        reverse: bool = False,
        page: int = 0,
    ) -> Iterator[tuple[bytes, V_co]]:
        """See ``ReadTxn.scan``."""
        ...


def scan_chunk(
    txn: Scanner[T], table: str, low: bytes, high: bytes | None, reverse: bool, size: int
) -> list[tuple[bytes, T]]:
    """Up to ``size`` items of ``table`` from ``low`` to ``high`` (see ``ReadTxn.scan``).

    Raises:
        StoreCorruptedError: the keys come out of order (a damaged page of the file).
    """
    items = list(islice(txn.scan(table, low, high, reverse=reverse, page=size), size))
    keys = [key for key, _ in reversed(items)] if reverse else [key for key, _ in items]
    # LMDB seeks by the keys of branch pages, which it does not check: a damaged one can send
    # a seek back to keys already read, and the iterators built on these chunks round forever.
    if keys and (keys[0] < low or any(a >= b for a, b in pairwise(keys))):
        raise StoreCorruptedError(
            f"the keys of the {table!r} table are out of order: the store's file is damaged",
            hint="`lmdbstate verify` finds the damaged pages; `lmdbstate recover SRC DEST` "
            "copies every intact checkpoint into a new store",
        )
    return items


COPY_CHUNK = 512
"""Items read per scan query and written per write transaction when copying tables."""


def table_chunks(txn: ReadTxn, table: str) -> Iterator[list[tuple[bytes, bytes]]]:
    """Every item of ``table`` in key order, in lists of up to ``COPY_CHUNK``.

    Each chunk is checked for key order (``scan_chunk``): a damaged page cannot loop a copy.
    """
    low = b""
    while True:
        chunk = scan_chunk(txn, table, low, None, False, COPY_CHUNK)
        if chunk:
            yield chunk
        if len(chunk) < COPY_CHUNK:
            return
        low = chunk[-1][0] + b"\x00"


def get_many(txn: ReadTxn, table: str, keys: Iterable[bytes]) -> dict[bytes, bytes]:
    """The values of those of ``keys`` that ``table`` holds, by key.

    One query for a backend that offers ``get_many`` (PostgreSQL: one round trip, not one per
    key); key by key otherwise.
    """
    batch = getattr(txn, "get_many", None)
    if batch is not None:
        found: dict[bytes, bytes] = batch(table, keys)
        return found
    values = {}
    for key in keys:
        value = txn.get(table, key)
        if value is not None:
            values[key] = value
    return values


def put_items(txn: WriteTxn, table: str, items: list[tuple[bytes, bytes]]) -> None:
    """Store every ``(key, value)`` of ``items`` in ``table``."""
    for key, value in items:
        txn.put(table, key, value)


def copy_tables(
    txn: ReadTxn, dest: Backend, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Copy every table of ``txn``'s snapshot into ``dest``, byte for byte; items per table.

    ``dest`` receives one write transaction per chunk: run this inside one read transaction of
    the source, so that the copy is one snapshot whatever is committed meanwhile.
    ``progress`` is called with the number of items copied so far after each chunk.
    """
    copied: dict[str, int] = {}
    total = 0
    for table in TABLES:
        copied[table] = 0
        for chunk in table_chunks(txn, table):
            dest.write(put_items, table, chunk)
            copied[table] += len(chunk)
            total += len(chunk)
            if progress is not None:
                progress(total)
    return copied
