"""The in-memory backend used when persistence is disabled.

It keeps the ``kv`` contract of ``env.LmdbBackend`` with nothing on disk: each table is a dict
for lookups plus a sorted list of its keys for ranges (``bisect``), so ``latest`` is one bisect
and a history chunk is a range of list indexes. A write transaction stages its puts and deletes
in an overlay that its own reads see; only when the caller's function returns is the overlay
applied, so a function that raises leaves nothing behind. One re-entrant lock serialises
transactions: a read sees either all of a commit or none of it.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from typing import TypeVar, TypeVarTuple

from .env import copy_into_new_store
from .errors import ReadOnlyStoreError, StoreClosedError
from .kv import TABLES, ReadTxn, StorageInfo, ViewTxn, WriteTxn

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

MEMORY_PATH = ":memory:"
"""The store path that selects this backend: ``CheckpointStore(":memory:")``."""


class _Table:
    """One table: values by key, and the keys in byte order."""

    __slots__ = ("keys", "values")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []


class _Staged:
    """A write transaction's changes to one table: a value, or None for a delete."""

    __slots__ = ("_sorted", "values")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes | None] = {}
        self._sorted: list[bytes] | None = []

    def set(self, key: bytes, value: bytes | None) -> None:
        if key not in self.values:
            self._sorted = None  # sorted again only if a scan needs it: puts rarely scan
        self.values[key] = value

    def sorted_keys(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = sorted(self.values)
        return self._sorted


def _key_range(keys: list[bytes], low: bytes, high: bytes | None, reverse: bool) -> Iterator[bytes]:
    start = bisect_left(keys, low)
    end = len(keys) if high is None else bisect_left(keys, high)
    indexes = range(end - 1, start - 1, -1) if reverse else range(start, end)
    return (keys[index] for index in indexes)


class _ReadTxn:
    """The ``kv.ReadTxn`` interface over the committed tables."""

    __slots__ = ("_tables",)

    def __init__(self, tables: dict[str, _Table]) -> None:
        self._tables = tables

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._tables[table].values.get(key)

    def last(self, table: str, low: bytes, high: bytes) -> tuple[bytes, bytes] | None:
        committed = self._tables[table]
        index = bisect_left(committed.keys, high) - 1
        if index < 0 or committed.keys[index] < low:
            return None
        key = committed.keys[index]
        return key, committed.values[key]

    def scan(
        self,
        table: str,
        low: bytes = b"",
        high: bytes | None = None,
        *,
        reverse: bool = False,
        page: int = 0,
    ) -> Iterator[tuple[bytes, bytes]]:
        values = self._tables[table].values
        keys = _key_range(self._tables[table].keys, low, high, reverse)
        return ((key, values[key]) for key in keys)

    def count(self, table: str) -> int:
        return len(self._tables[table].keys)


class _WriteTxn(_ReadTxn):
    """The ``kv.WriteTxn`` interface: reads merge the staged changes over the committed tables."""

    __slots__ = ("staged",)

    def __init__(self, tables: dict[str, _Table]) -> None:
        super().__init__(tables)
        self.staged: dict[str, _Staged] = {}

    def get(self, table: str, key: bytes) -> bytes | None:
        staged = self.staged.get(table)
        if staged is not None and key in staged.values:
            return staged.values[key]
        return self._tables[table].values.get(key)

    def last(self, table: str, low: bytes, high: bytes) -> tuple[bytes, bytes] | None:
        if table not in self.staged:
            return super().last(table, low, high)
        return next(self.scan(table, low, high, reverse=True), None)

    def scan(
        self,
        table: str,
        low: bytes = b"",
        high: bytes | None = None,
        *,
        reverse: bool = False,
        page: int = 0,
    ) -> Iterator[tuple[bytes, bytes]]:
        staged = self.staged.get(table)
        if staged is None:
            return super().scan(table, low, high, reverse=reverse)
        return self._merged(self._tables[table], staged, low, high, reverse)

    @staticmethod
    def _merged(
        committed: _Table, staged: _Staged, low: bytes, high: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """Both key sequences in scan order; a staged key hides the committed one."""
        old_keys = _key_range(committed.keys, low, high, reverse)
        new_keys = _key_range(staged.sorted_keys(), low, high, reverse)
        old = next(old_keys, None)
        for new in new_keys:
            while old is not None and (old > new if reverse else old < new):
                yield old, committed.values[old]
                old = next(old_keys, None)
            if old == new:
                old = next(old_keys, None)
            value = staged.values[new]
            if value is not None:
                yield new, value
        while old is not None:
            yield old, committed.values[old]
            old = next(old_keys, None)

    def count(self, table: str) -> int:
        total = super().count(table)
        staged = self.staged.get(table)
        if staged is not None:
            committed = self._tables[table].values
            for key, value in staged.values.items():
                if value is None:
                    total -= key in committed
                else:
                    total += key not in committed
        return total

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._stage(table, key, value)

    def delete(self, table: str, key: bytes) -> bool:
        if self.get(table, key) is None:
            return False
        self._stage(table, key, None)
        return True

    def _stage(self, table: str, key: bytes, value: bytes | None) -> None:
        staged = self.staged.get(table)
        if staged is None:
            if table not in self._tables:
                raise KeyError(table)  # as with LMDB; staged, it would fail half-way into commit
            staged = self.staged[table] = _Staged()
        staged.set(key, value)


class MemoryBackend:
    """The ``kv.Backend`` interface over tables in this process's memory.

    Every instance is a fresh, private, empty store; what it holds is gone when it is closed or
    the process ends.

    Args:
        readonly: refuse writes (the store then stays empty: useful only to test readers).
    """

    def __init__(self, *, readonly: bool = False) -> None:
        self.location = MEMORY_PATH
        self.readonly = readonly
        self._tables = {name: _Table() for name in TABLES}
        self._reader = _ReadTxn(self._tables)  # stateless: one serves every read
        self._live_bytes = 0
        self._closed = False
        self._lock = threading.RLock()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"store {self.location} is closed", path=self.location)

    def read(self, fn: Callable[[ReadTxn, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(txn, *args)`` with the tables as the last commit left them."""
        with self._lock:
            self._check_open()
            return fn(self._reader, *args)

    def read_views(self, fn: Callable[[ViewTxn, *Ts], T], *args: *Ts) -> T:
        """As ``read``: the values are the stored ``bytes`` themselves, never copies."""
        with self._lock:
            self._check_open()
            return fn(self._reader, *args)

    def write(self, fn: Callable[[WriteTxn, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(txn, *args)`` and apply its changes only if it returns.

        Raises:
            ReadOnlyStoreError: the backend is read-only.
        """
        with self._lock:
            self._check_open()
            if self.readonly:
                raise ReadOnlyStoreError(
                    f"store {self.location} is open read-only", path=self.location
                )
            txn = _WriteTxn(self._tables)
            result = fn(txn, *args)
            for name, staged in txn.staged.items():
                self._apply(self._tables[name], staged)
            return result

    def _apply(self, table: _Table, staged: _Staged) -> None:
        for key, value in staged.values.items():
            old = table.values.get(key)
            if old is not None:
                self._live_bytes -= len(key) + len(old)
            if value is None:
                if old is not None:
                    del table.values[key]
                    del table.keys[bisect_left(table.keys, key)]
                continue
            if old is None:
                insort(table.keys, key)
            table.values[key] = value
            self._live_bytes += len(key) + len(value)

    def storage_info(self) -> StorageInfo:
        """The bytes of every key and value held; the file and map fields are 0."""
        with self._lock:
            self._check_open()
            return StorageInfo(
                live_bytes=self._live_bytes,
                file_bytes=0,
                map_size=0,
                max_map_size=0,
                page_size=0,
                readers_used=0,
                max_readers=0,
            )

    def check_structure(self) -> tuple[str, ...]:
        """Nothing to check: the tables are Python objects, not pages."""
        self._check_open()
        return ()

    def create_tables(self) -> None:
        """Nothing to create: every table exists from the start."""
        self._check_open()

    def compact(self) -> None:
        """Nothing to give back: the tables hold only what is live."""
        self._check_open()

    def copy_to(self, dest: str) -> None:
        """Write every table, as the last commit left them, into a new LMDB store at ``dest``.

        Raises:
            StoreError: ``dest`` exists and is not an empty directory, or the copy failed.
        """
        frozen = self._snapshot()
        try:
            copy_into_new_store(frozen.read, dest)  # this store's writers go on meanwhile
        finally:
            frozen.close()

    def _snapshot(self) -> MemoryBackend:
        """A read-only copy of every table as the last commit left them (values shared)."""
        with self._lock:
            self._check_open()
            frozen = MemoryBackend(readonly=True)
            for name, table in self._tables.items():
                frozen._tables[name].values = dict(table.values)
                frozen._tables[name].keys = list(table.keys)
            return frozen

    def close(self) -> None:
        """Drop everything held; idempotent. Later calls raise ``StoreClosedError``."""
        with self._lock:
            self._closed = True
            for table in self._tables.values():
                table.values.clear()
                table.keys.clear()
            self._live_bytes = 0
