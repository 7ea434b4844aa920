"""LMDB lifecycle: open, named databases, map growth, readers and the fork guard.

This is also the one place where lmdb's exceptions become lmdbstate's (``translated_errors``).

One ``lmdb.Environment`` serves every ``CheckpointStore`` opened on a path in this process (py-lmdb
refuses a second open of the same path, and two handles would fight over LMDB's file locks). It
is closed when the last store using it closes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple, cast

import lmdb

from .errors import (
    ForkedStoreError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreCorruptedError,
    StoreDiskFullError,
    StoreError,
    StoreFullError,
    StoreInUseError,
    StoreNotFoundError,
    UnsupportedFormatError,
)
from .group import GroupCommitter, Item, Outcome, PutsUnderWay
from .kv import META, TABLES, ReadTxn, StorageInfo, ViewTxn, WriteTxn, copy_tables
from .lmdbfile import DATA_FILE, LOCK_FILE, DataFile, lock_holders, mirror_meta, preflight
from .locations import is_url, shown_location

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

log = logging.getLogger("lmdbstate")

DEFAULT_MAP_SIZE = 1 << 30
"""Reserved address space, not disk: without writemap the file grows with the data."""
DEFAULT_MAX_MAP_SIZE = 1 << 40
DEFAULT_MAX_READERS = 126  # LMDB's own default
MIN_MAP_SIZE = 64 * 1024
DURABILITIES = ("sync", "group", "async")
_MAX_DBS = 8  # the four tables, and room for later ones
_SNAPSHOT_ATTEMPTS = 50  # tries to read a meta page naming the transaction just begun
_RESIZE_ATTEMPTS = 100  # opening races other processes' map growth; each retry sees it
_STAGING = "compact.tmp"  # where compaction writes its copy, inside the store's directory


_IO_ERRORS = (os.strerror(errno.EIO), os.strerror(errno.ENOSPC))
_LOW_SPACE = 1 << 20


def _out_of_space(exc: lmdb.Error, path: str) -> bool:
    """Whether a failed write came from a full filesystem.

    LMDB reports a full disk as ENOSPC, or as EIO when ``write()`` stopped short, and py-lmdb
    passes both on as a plain ``lmdb.Error`` whose message is ``strerror``'s: so the message
    says I/O failed, and the filesystem says whether it is full.
    """
    if not any(text in str(exc) for text in _IO_ERRORS):
        return False
    try:
        space = os.statvfs(path)
    except OSError:
        return False
    return space.f_bavail * space.f_frsize < _LOW_SPACE


def translate(exc: lmdb.Error, path: str) -> StoreError:
    """The lmdbstate error that stands for an lmdb exception; raise it ``from exc``."""
    if isinstance(exc, lmdb.MapFullError):
        return StoreFullError(f"store {path} is full", path=path)
    if isinstance(exc, lmdb.DiskError) or _out_of_space(exc, path):
        return StoreDiskFullError(f"no space left for store {path}: {exc}", path=path)
    if isinstance(exc, lmdb.ReadonlyError):
        return ReadOnlyStoreError(f"store {path} is read-only: {exc}", path=path)
    if isinstance(exc, lmdb.VersionMismatchError):
        return UnsupportedFormatError(f"store {path}: {exc}", path=path)
    if isinstance(exc, lmdb.CorruptedError | lmdb.PageNotFoundError | lmdb.InvalidError):
        return StoreCorruptedError(f"store {path} is damaged: {exc}", path=path)
    if isinstance(exc, lmdb.PanicError):
        return StoreError(
            f"store {path} hit a fatal LMDB error: {exc}",
            path=path,
            hint="the store was reopened at its last commit: retry the operation",
        )
    if isinstance(exc, lmdb.ReadersFullError):
        return StoreError(
            f"store {path}: every LMDB reader slot is taken",
            path=path,
            hint="close idle stores or processes that hold read transactions open",
        )
    return StoreError(f"store {path}: {exc}", path=path)


@contextmanager
def translated_errors(path: str) -> Iterator[None]:
    """Turn every lmdb exception raised inside the block into an lmdbstate error.

    The hot paths (``LmdbBackend.read`` and ``write``) call :func:`translate` from a plain
    ``except`` clause instead: a generator-based context manager costs as much as a small read.
    """
    try:
        yield
    except lmdb.Error as exc:
        raise translate(exc, path) from exc


class _LmdbTxn:
    """The ``kv.WriteTxn`` interface over one lmdb transaction."""

    __slots__ = ("_dbs", "_txn")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    # A table missing from a store opened read-only (one of an older format) reads as empty.

    def get(self, table: str, key: bytes) -> bytes | None:
        db = self._dbs.get(table)
        return None if db is None else self._txn.get(key, db=db)  # type: ignore[return-value]

    def last(self, table: str, low: bytes, high: bytes) -> tuple[bytes, bytes] | None:
        db = self._dbs.get(table)
        if db is None:
            return None
        cursor = self._txn.cursor(db)
        # Seek to the first key at or past ``high`` and step back; with no such key, the last.
        found = cursor.prev() if cursor.set_range(high) else cursor.last()
        key: bytes = cursor.key()  # type: ignore[assignment]
        if found and key >= low:
            return key, cursor.value()  # type: ignore[return-value]
        return None

    def scan(
        self,
        table: str,
        low: bytes = b"",
        high: bytes | None = None,
        *,
        reverse: bool = False,
        page: int = 0,
        copy_keys: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        # ``page`` is for backends that fetch rows from a server: a cursor reads in place.
        db = self._dbs.get(table)
        if db is None:
            return
        cursor = self._txn.cursor(db)
        if reverse:
            if high is None:
                found = cursor.last()
            else:
                found = cursor.prev() if cursor.set_range(high) else cursor.last()
            if not found:
                return
            items = cursor.iterprev()
        else:
            if not cursor.set_range(low):
                return
            items = cursor.iternext()
        # Without buffers=True keys and values are bytes; with it, ``copy_keys`` makes the keys
        # bytes (a view does not compare by order).
        for key, value in cast(Iterator[tuple[bytes, bytes]], items):
            if copy_keys:
                key = bytes(key)
            if key < low if reverse else high is not None and key >= high:
                return
            yield key, value

    def table_pages(self) -> int:
        """The branch, leaf and overflow pages of every table the store has (``mdb_stat``)."""
        stats = [self._txn.stat(db) for db in self._dbs.values()]
        return sum(
            stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"] for stat in stats
        )

    def count(self, table: str) -> int:
        db = self._dbs.get(table)
        entries: int = 0 if db is None else self._txn.stat(db)["entries"]
        return entries

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[table])

    def delete(self, table: str, key: bytes) -> bool:
        deleted: bool = self._txn.delete(key, db=self._dbs[table])
        return deleted


class _LmdbViewTxn:
    """The ``kv.ViewTxn`` interface over a read transaction begun with ``buffers=True``."""

    __slots__ = ("_txn",)

    def __init__(self, txn: _LmdbTxn) -> None:
        self._txn = txn

    def scan(
        self,
        table: str,
        low: bytes = b"",
        high: bytes | None = None,
        *,
        reverse: bool = False,
        page: int = 0,
    ) -> Iterator[tuple[bytes, memoryview]]:
        # With buffers, py-lmdb hands keys out as views too; they are short and compared here.
        for key, value in self._txn.scan(table, low, high, reverse=reverse, copy_keys=True):
            yield key, cast(memoryview, value)


@dataclass(frozen=True, slots=True)
class EnvOptions:
    """How to open an environment (``CheckpointStore`` documents each)."""

    durability: str = "sync"
    readonly: bool = False
    map_size: int = DEFAULT_MAP_SIZE
    max_map_size: int = DEFAULT_MAX_MAP_SIZE
    max_readers: int = DEFAULT_MAX_READERS


class _SharedEnv:
    """One open lmdb environment and what its users in this process share."""

    def __init__(self, path: str, options: EnvOptions) -> None:
        self.path = path
        self.durability = options.durability
        self.readonly = options.readonly
        self.max_map_size = options.max_map_size
        self.options = options
        self.users = 0
        self.forked = False
        # Bumped whenever this process changes the map size or replaces the environment
        # (``_changing``), which invalidates the read transactions other threads hold: a read
        # that fails during or after such a change that began after the read did is retried.
        self.generation = 0
        self.changing = False
        # A view read hands out memoryviews into the map, which a change that unmaps or moves
        # the map would leave dangling (the process then dies of SIGSEGV or SIGBUS): changes
        # wait for the view reads under way, and view reads wait for the changes.
        self._views = threading.Condition()
        self._viewers = 0
        self._unmapping = 0
        self.write_lock = threading.Lock()
        self.committer = (
            GroupCommitter() if options.durability == "group" and not options.readonly else None
        )
        self.env = self._open_env(options.map_size, options.max_readers)
        try:
            self.dbs = self._open_dbs()
            cleared = self.env.reader_check()
        except BaseException:
            self.env.close()
            raise
        if cleared:
            log.debug("cleared %d stale reader slots in %s", cleared, path)

    def _open_env(self, map_size: int, max_readers: int) -> lmdb.Environment:
        for _ in range(_RESIZE_ATTEMPTS):
            try:
                return lmdb.open(
                    self.path,
                    subdir=True,
                    map_size=map_size,
                    max_dbs=_MAX_DBS,
                    max_readers=max_readers,
                    readonly=self.readonly,
                    create=not self.readonly,
                    sync=self.durability != "async",
                    metasync=True,
                    writemap=False,
                    lock=True,
                )
            except lmdb.MapResizedError:
                # Another process grew the map between LMDB reading the file's size and
                # beginning its first transaction: open again, with the new size.
                continue
        raise StoreError(f"store {self.path} kept growing while it was being opened")

    def _open_dbs(self) -> dict[str, Any]:
        """The handle of every table the store has; a new store's are created.

        A store of an older format may lack a table this version has: reads find it empty, and
        ``create_tables`` adds it once the store's format is known to be upgradable (a refused
        open leaves the file as it was).
        """
        for _ in range(_RESIZE_ATTEMPTS):
            try:
                handles = {name: self._open_db(name, create=False) for name in TABLES}
                if not self.readonly and all(db is None for db in handles.values()):
                    handles = {name: self._open_db(name, create=True) for name in TABLES}
                if handles[META] is None:
                    raise StoreError(
                        f"{self.path} is an LMDB environment but not an lmdbstate store "
                        f"(no {META!r} database)",
                        path=self.path,
                        hint="check the path: this is some other program's LMDB environment",
                    )
                return {name: db for name, db in handles.items() if db is not None}
            except lmdb.MapResizedError:
                # Another process grew the map after this one mapped the file.
                self._set_map_size(0)
        raise StoreError(f"store {self.path} kept growing while it was being opened")

    def _open_db(self, name: str, *, create: bool) -> Any:
        """A table's handle; None when it does not exist and ``create`` is False."""
        try:
            return self.env.open_db(name.encode("ascii"), create=create)
        except lmdb.NotFoundError:
            return None

    def create_tables(self) -> None:
        """Create the tables this version has that the store lacks (one write transaction)."""
        with self.write_lock:
            for name in TABLES:
                if name not in self.dbs:
                    self.dbs[name] = self._open_db(name, create=True)

    def reopen(self) -> None:
        """Close and open the environment again: the only way out of an LMDB panic.

        After a failed meta-page write LMDB marks the environment fatal and refuses every later
        transaction; a fresh handle reads the last good commit again.
        """
        with self.write_lock, self._changing():
            self.env.close()
            self.env = self._open_env(self.options.map_size, self.options.max_readers)
            self.dbs = self._open_dbs()
        log.warning("reopened %s after a fatal LMDB error", self.path)

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Mark the environment as changing under other threads' reads (see ``run_read``).

        Waits for the view reads under way to end, and keeps new ones waiting meanwhile.
        """
        with self._views:
            self._unmapping += 1
            self._views.wait_for(lambda: not self._viewers)
        self.changing = True
        self.generation += 1
        try:
            yield
        finally:
            self.generation += 1
            self.changing = False
            with self._views:
                self._unmapping -= 1
                self._views.notify_all()

    @contextmanager
    def _viewing(self) -> Iterator[None]:
        """Hold off changes of the map while a view read runs (see ``_changing``)."""
        with self._views:
            self._views.wait_for(lambda: not self._unmapping)
            self._viewers += 1
        try:
            yield
        finally:
            with self._views:
                self._viewers -= 1
                if not self._viewers:
                    self._views.notify_all()

    def compact(self) -> None:
        """Replace ``data.mdb`` with a compacted copy of itself; no other process may have it open.

        Every process with the store open holds a shared lock on byte 0 of lock.mdb (LMDB's own
        liveness lock). Turning this process's into an exclusive one succeeds only when no
        other process holds it, which is how another user is detected; and while it is held,
        a process that starts to open the store waits in LMDB until the compaction is over.
        The environment is closed and opened again afterwards, on the new file.

        Raises:
            StoreInUseError: another process has the store open.
            lmdb.Error: the copy failed (the store is then left as it was).
        """
        with self.write_lock:
            info = self.env.info()
            lock_fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CLOEXEC)
            try:
                self._lock_exclusively(lock_fd)
                self._replace_with_compacted_copy(info["last_txnid"])
            finally:
                # Closing the environment drops every lock this process holds on lock.mdb, the
                # exclusive one too. Only then may ``lock_fd`` close: closing it while the
                # environment is open would drop LMDB's shared lock under it.
                with self._changing():
                    self.env.close()
                    os.close(lock_fd)
                    self.env = self._open_env(info["map_size"], self.options.max_readers)
                    self.dbs = self._open_dbs()

    def _lock_exclusively(self, lock_fd: int) -> None:
        try:
            fcntl.lockf(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise StoreError(f"cannot lock store {self.path}: {exc.strerror}") from exc
            holders = lock_holders(os.fstat(lock_fd).st_ino) or []
            pids = sorted({pid for kind, start, pid in holders if start == 0} - {os.getpid()})
            named = f" (pid {', '.join(map(str, pids))})" if pids else ""
            raise StoreInUseError(
                f"store {self.path} is open in another process{named}: compaction needs it alone",
                path=self.path,
                hint="stop the processes using the store, then compact; or "
                "`lmdbstate backup DEST` writes a compacted copy while they run",
            ) from exc

    def _replace_with_compacted_copy(self, txnid: int) -> None:
        staging = os.path.join(self.path, _STAGING)
        shutil.rmtree(staging, ignore_errors=True)  # left behind by a compaction killed midway
        os.mkdir(staging)
        try:
            # No commit can land meanwhile: this process holds the write lock, and no other
            # process has the store open.
            self.env.copy(staging, compact=True)
            copied = os.path.join(staging, DATA_FILE)
            keep_access(os.path.join(self.path, DATA_FILE), copied)
            mirror_meta(copied, txnid)
            os.replace(copied, os.path.join(self.path, DATA_FILE))
            fsync_directory(self.path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def run_read(self, fn: Callable[[Any, *Ts], T], args: tuple[*Ts], *, views: bool = False) -> T:
        cleared_readers = False
        while True:
            generation = self.generation
            try:
                if views:
                    with self._viewing(), self.env.begin(buffers=True) as txn:
                        viewed = _LmdbTxn(cast(lmdb.Transaction, txn), self.dbs)
                        return fn(_LmdbViewTxn(viewed), *args)
                with self.env.begin() as txn:
                    return fn(_LmdbTxn(txn, self.dbs), *args)
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except lmdb.ReadersFullError:
                if cleared_readers or not self.env.reader_check():
                    raise
                cleared_readers = True
            except lmdb.Error:
                if generation == self.generation and not self.changing:
                    raise
                # Another thread resized the map or replaced the environment under this read:
                # py-lmdb invalidates open transactions and fails those begun meanwhile. Wait
                # for the change (it runs under the write lock), then read again.
                with self.write_lock:
                    pass

    def run_write(self, fn: Callable[[WriteTxn, *Ts], T], args: tuple[*Ts]) -> T:
        with self.write_lock:
            while True:
                try:
                    txn = self.env.begin(write=True)
                except lmdb.MapResizedError:
                    self._set_map_size(0)
                    continue
                try:
                    result = fn(_LmdbTxn(txn, self.dbs), *args)
                    txn.commit()
                except lmdb.MapFullError:
                    txn.abort()
                    self._grow()
                    continue
                except BaseException:
                    txn.abort()
                    raise
                return result

    def _adopt_map_size(self) -> None:
        # set_mapsize(0) takes the size another process grew the map to; py-lmdb refuses it
        # while this process has a write transaction open, hence the lock.
        with self.write_lock:
            self._set_map_size(0)

    def _grow(self) -> None:
        current: int = self.env.info()["map_size"]
        if current >= self.max_map_size:
            raise StoreFullError(
                f"store {self.path} reached its maximum map size of {self.max_map_size} bytes",
                path=self.path,
            )
        self._set_map_size(min(current * 2, self.max_map_size))

    def _set_map_size(self, size: int) -> None:
        with self._changing():
            self.env.set_mapsize(size)
        log.debug("map size of %s is now %d bytes", self.path, self.env.info()["map_size"])

    def storage_info(self) -> StorageInfo:
        readers = self.active_readers()  # before this method's own read transaction
        info = self.env.info()
        main = self.env.stat()
        page_size: int = main["psize"]
        # Pages holding data: every database's B-tree and overflow pages, the main database
        # that names them, and the two meta pages. Free pages awaiting reuse do not count.
        main_pages = main["branch_pages"] + main["leaf_pages"] + main["overflow_pages"]
        pages = 2 + main_pages + self.run_read(_LmdbTxn.table_pages, ())
        return StorageInfo(
            live_bytes=pages * page_size,
            file_bytes=os.path.getsize(os.path.join(self.path, DATA_FILE)),
            map_size=info["map_size"],
            max_map_size=max(self.max_map_size, info["map_size"]),
            page_size=page_size,
            readers_used=readers,
            max_readers=info["max_readers"],
        )

    def check_structure(self) -> tuple[str, ...]:
        """Problems in the shape of every table's B-tree, read from the file, not through LMDB.

        A read transaction pins the snapshot while the file is read: LMDB reuses no page of a
        snapshot a reader holds, so writers may go on meanwhile.
        """
        for _ in range(_SNAPSHOT_ATTEMPTS):
            with self.env.begin() as txn, DataFile(self.path) as data:
                meta = next((m for m in data.metas if m.valid and m.txnid == txn.id()), None)
                if meta is None:
                    continue  # commits landed since the transaction began: pin a newer one
                catalog = data.databases(meta)
                problems = [str(item) for item in catalog.skipped]
                for table in TABLES:
                    record = catalog.databases.get(table.encode("ascii"))
                    if record is None:
                        problems.append(f"the {table!r} database is missing")
                    else:
                        problems.extend(f"{table}: {item}" for item in data.check_tree(record))
                return tuple(problems)
        raise StoreError(
            f"store {self.path} kept changing: no snapshot could be pinned to check",
            path=self.path,
            hint="run verify again, or when fewer writers run",
        )

    def active_readers(self) -> int:
        """Reader slots held by a process, live or dead.

        Not LMDB's ``num_readers``: that is a high-water mark and never goes down.
        """
        listing: str = self.env.readers()
        return 0 if "no active readers" in listing else len(listing.strip().splitlines()) - 1

    def close(self) -> None:
        if self.forked:
            return  # the parent's handle: closing it here would clear the parent's reader slots
        if self.durability == "async" and not self.readonly:
            self.env.sync(True)
        self.env.close()


_registry: dict[str, _SharedEnv] = {}
_registry_lock = threading.Lock()


def _mark_forked() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # another thread may have held it at fork()
    for shared in _registry.values():
        shared.forked = True


os.register_at_fork(after_in_child=_mark_forked)


def keep_access(original: str, copy: str) -> None:
    """Give ``copy`` the permissions (and, where allowed, the owner) of ``original``.

    LMDB creates a copy with 0666 less the umask: a store kept at 0600 must not become readable
    by others through its copy (states may hold secrets).
    """
    found = os.stat(original)
    os.chmod(copy, stat.S_IMODE(found.st_mode))
    with contextlib.suppress(PermissionError):
        os.chown(copy, found.st_uid, found.st_gid)


def fsync_directory(path: str) -> None:
    """Make the entries of directory ``path`` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def require_new_directory(path: str) -> None:
    """Refuse a destination for a copy that exists and is not an empty directory.

    Raises:
        StoreError: it does, or it is a PostgreSQL URL (copies are LMDB directories).
    """
    if is_url(path):
        raise StoreError(
            f"{shown_location(path)} is a PostgreSQL URL: this writes an LMDB directory",
            hint="give a directory; `lmdbstate copy SRC URL` copies a store into PostgreSQL",
        )
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise StoreError(f"{path} already exists", path=path, hint="give a new or empty directory")


def copy_into_new_store(
    read: Callable[[Callable[[ReadTxn, LmdbBackend], None], LmdbBackend], None], dest: str
) -> None:
    """Copy every table, as one read transaction of ``read`` shows them, into a new LMDB store.

    ``read`` is a backend's ``read``; the copy at ``dest`` is written in chunks meanwhile. Its
    file is readable by its owner only (``restrict_copy``).

    Raises:
        StoreError: ``dest`` exists and is not an empty directory, or the copy failed.
    """
    make_new_directory(dest)
    copy = LmdbBackend(dest, EnvOptions())
    try:
        read(_copy_all, copy)
    finally:
        copy.close()
    restrict_copy(dest, None)


def restrict_copy(dest: str, source: str | None) -> None:
    """Give a new store's file the access of the one it copies, or its owner's alone.

    ``source`` is the LMDB store copied (see ``keep_access``); None for a store without a file
    (PostgreSQL, memory), whose copy gets 0600: states may hold secrets.

    Raises:
        StoreError: the permissions cannot be set.
    """
    copy = os.path.join(dest, DATA_FILE)
    try:
        if source is None:
            os.chmod(copy, 0o600)
        else:
            keep_access(os.path.join(source, DATA_FILE), copy)
    except OSError as exc:
        raise StoreError(f"cannot set the permissions of {copy}: {exc.strerror}") from exc


def _copy_all(txn: ReadTxn, copy: LmdbBackend) -> None:
    copy_tables(txn, copy)


def make_new_directory(path: str) -> None:
    """Create ``path``, and its parents, for a copy (see ``require_new_directory``).

    Raises:
        StoreError: ``path`` exists and is not an empty directory, or cannot be created.
    """
    require_new_directory(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror}", path=path) from exc


def _check_location(path: str, readonly: bool) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreError(
            f"{path} is not a directory",
            path=path,
            hint="a store is a directory holding data.mdb and lock.mdb",
        )
    if readonly and not os.path.isfile(os.path.join(path, DATA_FILE)):
        raise StoreNotFoundError(f"no store at {path}", path=path)


def _acquire(path: str, options: EnvOptions) -> _SharedEnv:
    with _registry_lock:
        shared = _registry.get(path)
        if shared is not None:
            if shared.forked:
                raise ForkedStoreError(
                    f"store {path} was opened by the parent process before fork() and cannot "
                    f"be opened again in the child",
                    path=path,
                )
            if shared.durability != options.durability:
                raise StoreInUseError(
                    f"store {path} is already open in this process with durability "
                    f"{shared.durability!r}, not {options.durability!r}",
                    path=path,
                )
            if shared.readonly and not options.readonly:
                raise StoreInUseError(
                    f"store {path} is already open read-only in this process",
                    path=path,
                    hint="close the read-only store first, or open the writable one first",
                )
        else:
            _check_location(path, options.readonly)
            if os.path.exists(os.path.join(path, DATA_FILE)):
                # Before LMDB maps the file: damage it would crash on becomes a typed error.
                preflight(path)
            with translated_errors(path):
                shared = _SharedEnv(path, options)
            _registry[path] = shared
        shared.users += 1
        return shared


def _release(shared: _SharedEnv) -> None:
    with _registry_lock:
        shared.users -= 1
        if shared.users > 0:
            return
        if _registry.get(shared.path) is shared:
            del _registry[shared.path]
        with translated_errors(shared.path):
            shared.close()


class LmdbBackend:
    """The ``kv.Backend`` interface over an LMDB environment directory."""

    def __init__(self, path: str | os.PathLike[str], options: EnvOptions) -> None:
        self.location = os.path.realpath(Path(path))
        self.readonly = options.readonly
        self._closed = False
        self._shared = _acquire(self.location, options)
        self._puts = PutsUnderWay()

    def _usable(self) -> _SharedEnv:
        if self._closed:
            raise StoreClosedError(f"store {self.location} is closed", path=self.location)
        if self._shared.forked:
            raise ForkedStoreError(
                f"store {self.location} was opened before fork() and used in the child",
                path=self.location,
            )
        return self._shared

    def read(self, fn: Callable[[ReadTxn, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(txn, *args)`` in a read transaction, retrying after a map resize."""
        shared = self._usable()
        try:
            return shared.run_read(fn, args)
        except lmdb.Error as exc:
            raise self._failed(exc) from exc

    def read_views(self, fn: Callable[[ViewTxn, *Ts], T], *args: *Ts) -> T:
        """As ``read``, with values handed out as views into the map (``kv.ViewTxn``)."""
        shared = self._usable()
        try:
            return shared.run_read(fn, args, views=True)
        except lmdb.Error as exc:
            raise self._failed(exc) from exc

    def write(self, fn: Callable[[WriteTxn, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(txn, *args)`` in a write transaction and commit; grow the map when full."""
        shared = self._usable()
        if self.readonly:
            raise ReadOnlyStoreError(f"store {self.location} is open read-only", path=self.location)
        try:
            return shared.run_write(fn, args)
        except lmdb.Error as exc:
            raise self._failed(exc) from exc

    def write_grouped(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn(txn)`` in a write transaction shared with other threads' grouped writes.

        Returns once the transaction holding ``fn``'s writes has committed. ``fn`` must raise
        lmdbstate's errors only before its first write (see ``group``). Only for a writable
        store opened with ``durability="group"``.

        Raises:
            StoreClosedError: the store is closed, or was closed while the put waited for room
                in the queue; nothing was written.
        """
        committer = self._shared.committer
        assert committer is not None, "group commit needs a writable group-mode environment"
        return self._puts.commit(committer, fn, self._write_group, self._usable)

    def _write_group(
        self, fn: Callable[[WriteTxn, list[Item]], list[Outcome]], items: list[Item]
    ) -> list[Outcome]:
        # Not ``write``: this store may be closing, but every grouped put under way keeps the
        # environment open until it returns, and the queued ones are committed, not refused.
        try:
            return self._shared.run_write(fn, (items,))
        except lmdb.Error as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: lmdb.Error) -> StoreError:
        """The error to raise for ``exc``; after a panic, the environment is reopened first."""
        if isinstance(exc, lmdb.PanicError):
            with translated_errors(self.location):
                self._shared.reopen()
        return translate(exc, self.location)

    def create_tables(self) -> None:
        """Create the tables this version has that the store lacks (an older format's)."""
        shared = self._usable()
        if self.readonly:
            raise ReadOnlyStoreError(f"store {self.location} is open read-only", path=self.location)
        with translated_errors(self.location):
            shared.create_tables()

    def copy_to(self, dest: str) -> None:
        """A compacted, consistent hot copy of the environment into the new directory ``dest``.

        LMDB copies inside one read transaction, so writers go on meanwhile and the copy holds
        exactly the commits before it began.

        Raises:
            StoreError: ``dest`` exists and is not an empty directory, or the copy failed.
        """
        shared = self._usable()
        make_new_directory(dest)
        with translated_errors(self.location):
            shared.env.copy(dest, compact=True)
        try:
            keep_access(os.path.join(self.location, DATA_FILE), os.path.join(dest, DATA_FILE))
            fd = os.open(os.path.join(dest, DATA_FILE), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_directory(dest)
        except OSError as exc:
            raise StoreError(f"cannot flush the copy at {dest}: {exc.strerror}", path=dest) from exc

    def compact(self) -> None:
        """Rewrite the store's file compacted, in place (see ``_SharedEnv.compact``).

        Raises:
            ReadOnlyStoreError: the store is open read-only.
            StoreInUseError: the store is open elsewhere in this process, or in another one.
            StoreError: the copy failed; the store is left as it was.
        """
        shared = self._usable()
        if self.readonly:
            raise ReadOnlyStoreError(f"store {self.location} is open read-only", path=self.location)
        with _registry_lock:  # no store opens this path in this process meanwhile
            if shared.users > 1:
                raise StoreInUseError(
                    f"store {self.location} is open {shared.users} times in this process: "
                    f"compaction needs it alone",
                    path=self.location,
                    hint="close the other CheckpointStore objects on this path first",
                )
            with translated_errors(self.location):
                try:
                    shared.compact()
                except OSError as exc:
                    raise StoreError(
                        f"cannot compact store {self.location}: {exc.strerror}",
                        path=self.location,
                    ) from exc

    def check_structure(self) -> tuple[str, ...]:
        """Problems in the shape of the B-trees, read from the file without LMDB."""
        shared = self._usable()
        with translated_errors(self.location):
            return shared.check_structure()

    def storage_info(self) -> StorageInfo:
        """Page and file sizes, map size and reader slots of the environment."""
        shared = self._usable()
        with translated_errors(self.location):
            return shared.storage_info()

    def close(self) -> None:
        """Stop using the environment; the last user in this process closes it."""
        if self._closed:
            return
        self._puts.close(self._mark_closed, self._shared.committer)
        _release(self._shared)

    def _mark_closed(self) -> None:
        self._closed = True
