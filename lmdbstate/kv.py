"""The ordered key-value transaction interface that ``store.py`` speaks to storage through.

LMDB implements it in ``env.py``. A backend holds named tables of byte keys in byte order and
runs a caller's function inside one read or one write transaction; a write transaction either
commits whole or leaves nothing. Backends may run the function more than once (LMDB does after
growing its map), so the function must not have effects outside the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

META = "meta"
CKPT = "ckpt"
WF = "wf"
AGE = "age"
TABLES = (META, CKPT, WF, AGE)


class ReadTxn(Protocol):
    """A consistent snapshot of every table."""

    def get(self, table: str, key: bytes) -> bytes | None:
        """The value under ``key``, or None."""
        ...

    def last(self, table: str, low: bytes, high: bytes) -> tuple[bytes, bytes] | None:
        """The greatest item with ``low <= key < high``, or None."""
        ...

    def scan(
        self, table: str, low: bytes = b"", high: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``low <= key < high`` (no upper bound when ``high`` is None) in key order."""
        ...

    def count(self, table: str) -> int:
        """The number of items in ``table``."""
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

    def close(self) -> None:
        """Release the storage; idempotent."""
        ...
