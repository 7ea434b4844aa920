"""CheckpointStore: put / get / latest / history / workflows / delete / batch.

Everything here speaks to storage through the ``kv`` interface. Three tables change together in
every write transaction (DESIGN section 3): ``ckpt`` holds the records, ``wf`` one entry per
workflow (status, head seq, counts), and ``age`` an empty value per checkpoint keyed by creation
time, so that they can never disagree after a crash.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, TypeVarTuple

from . import (
    chunking,
    chunkstore,
    codec,
    collector,
    integrity,
    keyed,
    leases,
    migrations,
    records,
    store_upgrades,  # noqa: F401  (registers the store-format upgrades)
)
from .backends import open_backend
from .env import (
    DEFAULT_MAP_SIZE,
    DEFAULT_MAX_MAP_SIZE,
    DEFAULT_MAX_READERS,
    DURABILITIES,
    MIN_MAP_SIZE,
    EnvOptions,
    make_new_directory,
    require_new_directory,
)
from .errors import (
    CheckpointNotFoundError,
    CodecError,
    ConfigError,
    IntegrityError,
    InvalidInputError,
    InvalidStatusError,
    ReadOnlyStoreError,
    SequenceConflictError,
    StoreCorruptedError,
    StoreError,
    UnsupportedFormatError,
    WorkflowNotFoundError,
)
from .index import (
    WorkflowEntry,
    entry_to_write,
    remove_checkpoint,
    required_entry,
    workflow_id_of,
)
from .keys import (
    MAX_SEQ,
    age_key,
    checkpoint_key,
    encode_workflow_id,
    seq_of,
    split_age_key,
    split_checkpoint_key,
    validate_seq,
    workflow_bounds,
)
from .kv import (
    AGE,
    CHUNK,
    CKPT,
    META,
    WF,
    Backend,
    GroupedBackend,
    ReadTxn,
    ViewTxn,
    WriteTxn,
    get_many,
    scan_chunk,
)
from .lmdbfile import DATA_FILE, DataFile
from .locations import is_url
from .migrations import STORE_FORMAT
from .models import (
    STATUSES,
    Checkpoint,
    CheckpointInfo,
    CompactReport,
    Durability,
    GcReport,
    Lease,
    RecoverReport,
    RepairReport,
    StateMigrationReport,
    StateUpgrade,
    Status,
    StoreMigrationReport,
    StoreStats,
    VerifyReport,
    WorkflowInfo,
)
from .retention import RetentionPolicy

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

log = logging.getLogger("lmdbstate")

DEFAULT_PATH = ".lmdbstate"
DEFAULT_LEASE_TTL = 60.0
"""Seconds a lease lasts unless its holder renews it."""
_CHUNK = 256  # items read per read transaction by the iterators: short transactions
_LARGEST = 5
DEFAULT_CHUNK_CACHE = 32 << 20
"""Bytes of chunks a store keeps in memory for reads (``CheckpointStore(chunk_cache=)``)."""
_MIGRATE_BATCH = 64  # workflows whose upgraded states migrate_states writes per transaction


def _version() -> str:
    from . import __version__

    return __version__


def _check_step(step: object) -> None:
    if step is not None and type(step) not in (str, int):
        raise InvalidInputError(f"invalid step {step!r}: expected a str, an int or None")


def _check_schema(schema: object) -> None:
    if type(schema) is not int or schema < 1:
        raise InvalidInputError(f"invalid schema {schema!r}: expected an int >= 1")


def _check_limit(limit: object) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidInputError(f"invalid limit {limit!r}: expected an int >= 0 or None")


def _workflow_info(txn: ReadTxn, workflow_key: bytes) -> WorkflowInfo:
    return required_entry(txn, workflow_key).info(workflow_key)


# -- reading records --------------------------------------------------------------------------


def _body_fields(
    key: bytes, body: memoryview, decode: Callable[[memoryview], dict[str, Any]]
) -> dict[str, Any]:
    try:
        return decode(body)
    except CodecError as exc:
        workflow_key, seq = split_checkpoint_key(key)
        raise IntegrityError(workflow_id_of(workflow_key), seq, exc.reason) from exc


def _checkpoint(
    txn: ReadTxn, cache: chunkstore.ChunkCache, workflow_id: str, key: bytes, record: bytes
) -> Checkpoint:
    created_ns, digest, body = records.check(key, record)
    fields = _body_fields(key, body, records.decode_body)
    record_format = records.record_format(record)
    if record_format == records.CHUNKED_FORMAT and "state" in fields:
        fields["state"] = _joined(chunkstore.Reader(txn, cache), workflow_id, key, fields["state"])
    try:
        return Checkpoint(
            workflow_id, seq_of(key), fields["state"], fields["step"], fields["schema"],
            fields["meta"], created_ns, len(record), digest, record_format=record_format,
        )  # fmt: skip
    except KeyError as exc:
        raise IntegrityError(workflow_id, seq_of(key), f"body lacks {exc}") from exc


def _joined(reader: chunkstore.Reader, workflow_id: str, key: bytes, state: object) -> object:
    """A format-2 record's state with its chunked lists read back from the chunk tables.

    Raises:
        IntegrityError: a chunk is missing or damaged.
    """
    try:
        return chunking.join(state, reader)
    except (chunkstore.ChunkDamagedError, CodecError) as exc:
        raise IntegrityError(workflow_id, seq_of(key), f"its state's {exc}") from exc


def _checkpoint_info(workflow_id: str, key: bytes, record: bytes | memoryview) -> CheckpointInfo:
    created_ns, digest, body = records.check(key, record)
    fields = _body_fields(key, body, records.decode_body_without_state)
    return CheckpointInfo(
        workflow_id, seq_of(key), fields.get("step"), fields.get("schema", 1), created_ns,
        len(record), digest,
    )  # fmt: skip


def _info_chunk(
    txn: ViewTxn, workflow_id: str, low: bytes, high: bytes, reverse: bool, size: int
) -> tuple[list[CheckpointInfo | IntegrityError], bytes | None]:
    """Up to ``size`` checkpoints' infos (or the damage found), checked and decoded in place.

    The records are read as views into the map and only their headers and the body's fields
    but the state are decoded, so a chunk of large records costs no copy. Damage is returned,
    not raised, so that the iterator yields every intact checkpoint before it.
    """
    items = scan_chunk(txn, CKPT, low, high, reverse, size)
    infos: list[CheckpointInfo | IntegrityError] = []
    for key, record in items:
        try:
            infos.append(_checkpoint_info(workflow_id, key, record))
        except IntegrityError as exc:
            infos.append(exc)
    return infos, items[-1][0] if items else None


def _read_latest(
    txn: ReadTxn,
    cache: chunkstore.ChunkCache,
    workflow_id: str,
    workflow_key: bytes,
    skip_damaged: bool,
) -> Checkpoint | None:
    item = txn.last(CKPT, *workflow_bounds(workflow_key))
    if item is None:
        return None
    try:
        return _checkpoint(txn, cache, workflow_id, *item)
    except IntegrityError:
        if not skip_damaged:
            raise
        return _newest_intact(txn, cache, workflow_id, workflow_key)


def _newest_intact(
    txn: ReadTxn, cache: chunkstore.ChunkCache, workflow_id: str, workflow_key: bytes
) -> Checkpoint:
    """Walk back from the newest checkpoint to the first one that verifies."""
    damaged: list[IntegrityError] = []
    for key, record in txn.scan(CKPT, *workflow_bounds(workflow_key), reverse=True, page=1):
        try:
            found = _checkpoint(txn, cache, workflow_id, key, record)
        except IntegrityError as exc:
            damaged.append(exc)
            continue
        seqs = tuple(exc.seq for exc in damaged)
        log.warning(
            "workflow %r: checkpoints %s are damaged; falling back to checkpoint %d",
            workflow_id, ", ".join(map(str, seqs)), found.seq,
        )  # fmt: skip
        return dataclasses.replace(found, damaged_newer=seqs)
    raise damaged[0]


def _read_checkpoint(
    txn: ReadTxn, cache: chunkstore.ChunkCache, workflow_id: str, workflow_key: bytes, seq: int
) -> Checkpoint:
    key = checkpoint_key(workflow_key, seq)
    record = txn.get(CKPT, key)
    if record is None:
        required_entry(txn, workflow_key)
        raise CheckpointNotFoundError(workflow_id, seq)
    return _checkpoint(txn, cache, workflow_id, key, record)


# -- writing ----------------------------------------------------------------------------------


class _PendingPut:
    """A validated, encoded put waiting for its write transaction."""

    __slots__ = (
        "body",
        "chunked",
        "compress",
        "created_ns",
        "expect_seq",
        "inline_body",
        "schema",
        "step",
        "workflow_id",
        "workflow_key",
    )

    def __init__(
        self,
        workflow_id: str,
        state: object,
        step: str | int | None,
        schema: int,
        meta: dict[str, Any] | None,
        expect_seq: int | None,
        previous: Mapping[Any, chunking.ListNode] | None = None,
        *,
        compress: bool = False,
    ) -> None:
        self.workflow_key = encode_workflow_id(workflow_id)
        self.compress = compress
        _check_step(step)
        _check_schema(schema)
        if meta is not None and type(meta) is not dict:
            raise InvalidInputError(f"invalid meta of type {type(meta).__name__}: expected a dict")
        if expect_seq is not None and expect_seq != 0:
            validate_seq(expect_seq)
        self.workflow_id = workflow_id
        self.step = step
        self.schema = schema
        self.expect_seq = expect_seq
        self.inline_body = records.encode_body(state, step, schema, {} if meta is None else meta)
        self.body = self.inline_body
        self.chunked: chunking.Chunked | None = None
        if previous is not None and len(self.inline_body) >= chunking.INLINE_LIMIT:
            self._split(previous)
        self.created_ns = time.time_ns()

    def _split(self, previous: Mapping[Any, chunking.ListNode]) -> None:
        self.chunked = chunking.split(self.inline_body, previous)
        self.body = self.inline_body if self.chunked is None else self.chunked.body

    def _stored_chunks(self, txn: ReadTxn) -> dict[bytes, bytes]:
        """The stored chunks the split names, read in one go (before any write).

        A node the split extends may have been deleted since (by a delete or a gc): the state
        is then split again with flat nodes.
        """
        chunked = self.chunked
        if chunked is None:
            return {}
        named = chunked.named()
        stored = get_many(txn, CHUNK, named)
        if any(d not in stored and d not in chunked.chunks for d in named):
            self._split({})
            return self._stored_chunks(txn)
        # The counts' room is checked here too, before any write (see ``apply``): no chunk gains
        # more references than the split makes in all.
        most = len(chunked.refs) + sum(map(len, chunked.links.values()))
        if any(chunkstore.refs_of(value) > chunkstore.MAX_REFS - most for value in stored.values()):
            raise StoreError(
                f"a chunk of workflow {self.workflow_id!r}'s state is referenced "
                f"{chunkstore.MAX_REFS:,} times, as many as its count holds",
                hint="`lmdbstate verify` finds a damaged count; write this state with dedup=False",
            )
        return stored

    def apply(self, txn: WriteTxn, *, seq: int | None = None) -> CheckpointInfo:
        """Write the checkpoint and update its workflow's index entries, all in ``txn``.

        Every lmdbstate error it raises (a sequence conflict, a damaged index entry) is raised
        before its first write: group commit relies on it to fail one put of a shared
        transaction and commit the others. Keep every check and encoding ahead of the puts.
        """
        workflow_key = self.workflow_key
        entry = entry_to_write(txn, workflow_key, self.created_ns)
        if self.expect_seq is not None and entry.head_seq != self.expect_seq:
            raise SequenceConflictError(self.workflow_id, self.expect_seq, entry.head_seq)
        if seq is None:
            seq = entry.last_seq + 1
            if seq > MAX_SEQ:  # only an import at the last seq can lead here
                raise InvalidInputError(
                    f"workflow {self.workflow_id!r} has given out every seq up to {MAX_SEQ}"
                )
        stored_chunks = self._stored_chunks(txn)
        key = checkpoint_key(workflow_key, seq)
        record = records.build(key, self.body, self.created_ns, chunked=self.chunked is not None)
        entry.head_seq = entry.last_seq = seq
        entry.count += 1
        entry.bytes += len(record)
        entry.updated_ns = max(entry.updated_ns, self.created_ns)
        entry.schema = self.schema
        encoded_entry = entry.encode()
        txn.put(CKPT, key, record)
        txn.put(AGE, age_key(self.created_ns, key), b"")
        txn.put(WF, workflow_key, encoded_entry)
        if self.chunked is not None:
            chunkstore.acquire(
                txn, self.chunked.refs, self.chunked, compress=self.compress, stored=stored_chunks
            )
        return CheckpointInfo(
            self.workflow_id, seq, self.step, self.schema, self.created_ns, len(record),
            int.from_bytes(record[4:12], "little"),
        )  # fmt: skip


class Batch:
    """Many puts committed in one write transaction, all or nothing.

    Use it as ``with store.batch() as batch: batch.put(...)``. Each ``put`` is validated and
    encoded at once (a bad state raises there); the checkpoints are written together when the
    block ends without an exception, and ``checkpoints`` then holds what was written, in order.
    """

    def __init__(self, store: CheckpointStore) -> None:
        self._store = store
        self._pending: list[_PendingPut] = []
        self.checkpoints: tuple[CheckpointInfo, ...] = ()

    def put(
        self,
        workflow_id: str,
        state: object,
        *,
        step: str | int | None = None,
        schema: int = 1,
        meta: dict[str, Any] | None = None,
        expect_seq: int | None = None,
    ) -> None:
        """Queue a checkpoint; the arguments are those of :meth:`CheckpointStore.put`.

        Raises:
            InvalidInputError: a bad argument or an unencodable state; nothing is queued.
        """
        pending = self._store._pending_put(workflow_id, state, step, schema, meta, expect_seq)
        self._pending.append(pending)
        # A later put of the same workflow in this batch extends this one's lists: they are
        # written first, in the same transaction.
        self._store._lists.remember(workflow_id, pending.chunked)

    @staticmethod
    def _apply_all(txn: WriteTxn, pending: list[_PendingPut]) -> tuple[CheckpointInfo, ...]:
        return tuple(put.apply(txn) for put in pending)

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pending, self._pending = self._pending, []
        lists = self._store._lists
        if exc_type is not None or not pending:
            for put in pending:
                lists.forget(put.workflow_id)  # remembered by ``put``, never written
            return
        try:
            self.checkpoints = self._store._backend.write(self._apply_all, pending)
        except BaseException:
            for put in pending:
                lists.forget(put.workflow_id)
            raise
        for put in pending:
            self._store._remember(put.workflow_id, put.chunked)  # each workflow's last wins
        self._store._wrote(sum(info.size for info in self.checkpoints))


class CheckpointStore:
    """Checkpoints keyed by (workflow id, seq) in one LMDB environment (or PostgreSQL schema).

    Args:
        path: the store's directory; created on first writable open. ``":memory:"``
            (``MEMORY_PATH``) keeps the store in this process's memory instead: each such store
            is fresh and private, and is gone when closed; ``durability`` and the map sizes are
            then checked but have no effect. A ``postgresql://`` URL keeps it in a PostgreSQL
            schema (``?schema=name``, default ``lmdbstate``), shared by every host that opens
            the URL; the map sizes and ``max_readers`` then have no effect (docs/backends.md).
        durability: ``"sync"`` (every commit flushed to disk before ``put`` returns),
            ``"group"`` (as ``"sync"``, but ``put`` calls made concurrently by this process's
            threads share one transaction and one flush; each returns once its own checkpoint
            is on disk, and fails alone when its own checkpoint is refused) or ``"async"`` (no
            flush: survives a process crash, may lose the newest commits on power loss).
        map_size: the initial LMDB map size in bytes (address space, not disk).
        max_map_size: the map grows by doubling up to this; beyond it writes fail with
            ``StoreFullError``.
        readonly: open for reading only; writes raise ``ReadOnlyStoreError``.
        max_readers: LMDB's reader table size; the first process to open the store sets it,
            so every process should pass the same value. Slots of killed readers are reclaimed
            on open and whenever the table is found full.
        auto_migrate: upgrade a store of an older format on a writable open (after a backup
            copy beside it, ``<store>.format<N>-backup-<UTC time>-<pid>``); False refuses such a
            store with ``UnsupportedFormatError`` instead (``migrate_store`` upgrades it). A
            read-only open of an older store reads an upgraded copy in memory, never writing.
        retention: a policy that puts enforce as they go: once they have added a 64th of
            ``max_size`` (or 1 MiB) since the last look, the live size is checked, and a
            ``gc`` runs in a background thread when it is above the cap (and, for the count
            and age bounds, at most once a minute). ``close`` stops it between two of its
            transactions. Ignored when ``readonly``.
        dedup: store each long list of a state's top-level map (8 items or more, in a body of
            at least 2 KiB) as content-addressed chunks, kept once however many checkpoints
            hold them (record format 2, docs/format.md); a list that grows by appending costs
            only its new items. False writes every state whole (record format 1).
        chunk_cache: bytes of chunks this store keeps in memory once read (and checked) or
            written, so that reading a chunked list does not fetch and hash every element
            again; 0 keeps none. A chunk's key is the digest of its bytes: cached chunks are
            never stale.
        compression: ``"zstd"`` compresses each new chunk of a list item with zstd (level 3)
            when that saves bytes, flagged per chunk (needs the ``zstd`` extra, as does reading
            such a chunk); None (the default) stores chunks as they are.

    Raises:
        ConfigError: a bad option.
        StoreNotFoundError: ``readonly`` and no store at ``path``.
        StoreCorruptedError: the files are not a readable lmdbstate store.
        UnsupportedFormatError: the store was written by a newer format.
        ForkedStoreError: this process was forked from one that had the store open.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        durability: Durability = "sync",
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        readonly: bool = False,
        max_readers: int = DEFAULT_MAX_READERS,
        auto_migrate: bool = True,
        retention: RetentionPolicy | None = None,
        dedup: bool = True,
        chunk_cache: int = DEFAULT_CHUNK_CACHE,
        compression: str | None = None,
    ) -> None:
        if durability not in DURABILITIES:
            raise ConfigError(
                f"durability must be one of {', '.join(DURABILITIES)}, not {durability!r}"
            )
        for name, value in (("map_size", map_size), ("max_map_size", max_map_size)):
            if type(value) is not int or value < MIN_MAP_SIZE:
                raise ConfigError(
                    f"{name} must be an int of at least {MIN_MAP_SIZE} bytes, not {value!r}"
                )
        if max_map_size < map_size:
            raise ConfigError(
                f"max_map_size ({max_map_size}) is smaller than map_size ({map_size})"
            )
        if type(max_readers) is not int or max_readers < 1:
            raise ConfigError(f"max_readers must be an int of at least 1, not {max_readers!r}")
        if retention is not None and not isinstance(retention, RetentionPolicy):
            raise ConfigError(f"retention must be a RetentionPolicy or None, not {retention!r}")
        if type(dedup) is not bool:
            raise ConfigError(f"dedup must be a bool, not {dedup!r}")
        if type(chunk_cache) is not int or chunk_cache < 0:
            raise ConfigError(f"chunk_cache must be an int of bytes >= 0, not {chunk_cache!r}")
        self._chunks = chunkstore.ChunkCache(chunk_cache)
        chunkstore.check_compression(compression)
        self._compress = compression == "zstd"
        self._retention = retention
        self._durability: Durability = durability
        self._dedup = dedup
        # Each workflow's chunked lists as this store's last put of it wrote them: the next put
        # extends them (record format 2).
        self._lists = chunking.RecentLists()
        options = EnvOptions(durability, readonly, map_size, max_map_size, max_readers)
        self._backend: Backend = open_backend(path, options)
        # In memory there is no flush to share: "group" is then plain puts. A read-only store's
        # puts go to ``write``, which refuses them.
        self._grouped = (
            self._backend.write_grouped
            if durability == "group" and not readonly and isinstance(self._backend, GroupedBackend)
            else None
        )
        try:
            self._format = self._open_format(auto_migrate)
        except BaseException:
            self._backend.close()
            raise
        self._auto_gc = (
            collector.AutoCollector(self._backend, retention)
            if retention is not None and not readonly
            else None
        )

    def _open_format(self, auto_migrate: bool) -> int:
        found, records_present = self._backend.read(
            lambda txn: (migrations.read_format(txn), txn.count(CKPT) > 0)
        )
        if found is None:
            if records_present:
                raise StoreCorruptedError(
                    f"store {self.path} holds checkpoints but no format entry", path=self.path
                )
            # A new store, or one whose creator died before writing ``meta``: nothing to lose.
            found = STORE_FORMAT if self.readonly else self._backend.write(_initialise_meta)
        migrations.store_steps(found, self.path)  # a newer format, or a step missing: refused
        if found < STORE_FORMAT:
            if self.readonly:
                upgraded = migrations.upgraded_copy(self._backend, found)
                self._backend.close()
                self._backend = upgraded
            elif not auto_migrate:
                raise UnsupportedFormatError(
                    f"store {self.path} has format {found}; this version uses format "
                    f"{STORE_FORMAT}",
                    path=self.path,
                    hint="`lmdbstate migrate` upgrades it (after a backup), or open it with "
                    "auto_migrate=True",
                )
            else:
                backup = migrations.default_backup_dir(self.path, found)
                migrations.upgrade_store(
                    self._backend, found, backup_dir=backup, version=_version()
                )
        if not self.readonly:
            self._backend.create_tables()
            if self._backend.read(migrations.last_writer) != _version():
                self._backend.write(migrations.note_writer, _version())
        return STORE_FORMAT

    # -- properties and lifecycle -------------------------------------------------------------

    @property
    def path(self) -> str:
        """The store's directory, resolved."""
        return self._backend.location

    @property
    def durability(self) -> Durability:
        """The durability mode the store was opened with."""
        return self._durability

    @property
    def readonly(self) -> bool:
        """True when the store was opened read-only."""
        return self._backend.readonly

    @property
    def retention(self) -> RetentionPolicy | None:
        """The policy puts enforce as they go (see ``retention`` above), or None."""
        return self._retention

    def close(self) -> None:
        """Close the store; later calls raise ``StoreClosedError``. Idempotent.

        An automatic gc under way stops after its current transaction first.
        """
        if self._auto_gc is not None:
            self._auto_gc.close()
        self._backend.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else self._durability
        return f"CheckpointStore({self.path!r}, {mode})"

    # -- writes -------------------------------------------------------------------------------

    def put(
        self,
        workflow_id: str,
        state: object,
        *,
        step: str | int | None = None,
        schema: int = 1,
        meta: dict[str, Any] | None = None,
        expect_seq: int | None = None,
    ) -> CheckpointInfo:
        """Save a checkpoint of ``state`` as the workflow's next seq.

        Args:
            workflow_id: the workflow; created on its first put with status ``running``.
            state: the state to save (see ``codec`` for the types it may hold).
            step: the step that produced the state.
            schema: the version of the caller's state schema.
            meta: user metadata, stored beside the state.
            expect_seq: when given, the put succeeds only if the workflow's head seq is exactly
                this (0: the workflow has no checkpoint); a compare-and-swap between writers.

        Returns:
            The checkpoint written, with its assigned seq.

        Raises:
            InvalidWorkflowIdError: a bad workflow id.
            CodecError: ``state`` or ``meta`` holds something the codec cannot carry.
            InvalidInputError: a bad ``step``, ``schema`` or ``expect_seq``.
            SequenceConflictError: ``expect_seq`` did not match the head.
            ReadOnlyStoreError: the store is read-only.
            StoreFullError: the map reached ``max_map_size``; nothing was written.
            StoreClosedError: the store is closed, or was closed while a grouped put waited
                for room in the queue; nothing was written.
        """
        pending = self._pending_put(workflow_id, state, step, schema, meta, expect_seq)
        try:
            if self._grouped is not None:
                info = self._grouped(pending.apply)
            else:
                info = self._backend.write(pending.apply)
        except BaseException:
            self._lists.forget(workflow_id)
            raise
        self._remember(workflow_id, pending.chunked)
        self._wrote(info.size)
        return info

    def _remember(self, workflow_id: str, chunked: chunking.Chunked | None) -> None:
        """After a commit: the lists the workflow's next put extends, and the chunks written."""
        self._lists.remember(workflow_id, chunked)
        if chunked is not None:
            self._chunks.keep(chunked)

    def _pending_put(
        self,
        workflow_id: str,
        state: object,
        step: str | int | None,
        schema: int,
        meta: dict[str, Any] | None,
        expect_seq: int | None,
    ) -> _PendingPut:
        previous = self._lists.get(workflow_id) if self._dedup else None
        return _PendingPut(
            workflow_id, state, step, schema, meta, expect_seq, previous, compress=self._compress
        )

    def _wrote(self, size: int) -> None:
        if self._auto_gc is not None:
            self._auto_gc.wrote(size)

    # -- transactions for lmdbstate's own modules that keep their own keys (``langgraph.py``) --

    def _read_txn(self, fn: Callable[[ReadTxn, *Ts], T], *args: *Ts) -> T:
        """Run ``fn(txn, *args)`` in one read transaction and return its result."""
        return self._backend.read(fn, *args)

    def _write_txn(self, fn: Callable[[WriteTxn], tuple[T, int]], *, group: bool = True) -> T:
        """Run ``fn(txn)`` in one write transaction, as ``put`` runs its own, and commit.

        ``fn`` returns its result and the record bytes it wrote (counted for automatic gc).
        With ``durability="group"`` and ``group`` it shares a commit with concurrent puts, so it
        must raise lmdbstate's errors only before its first write (see ``_PendingPut.apply``);
        ``group=False`` gives it a transaction of its own, which an error aborts whole.
        """
        if group and self._grouped is not None:
            result, size = self._grouped(fn)
        else:
            result, size = self._backend.write(fn)
        self._wrote(size)
        return result

    def import_checkpoint(
        self,
        workflow_id: str,
        seq: int,
        state: object,
        *,
        created_ns: int,
        step: str | int | None = None,
        schema: int = 1,
        meta: dict[str, Any] | None = None,
    ) -> tuple[CheckpointInfo, bool]:
        """Write a checkpoint with the seq and creation time it had elsewhere (for importers).

        The record is built as ``put`` builds it: a checkpoint exported and imported with the
        same fields into a store that writes it whole (``dedup=False``, or a state too small to
        split) gets the same bytes and the same digest, and ``records.whole_digest`` gives that
        digest in any case. Importing again what is already there changes nothing: the call is
        idempotent.

        Returns:
            The checkpoint, and True when it was written (False: an identical one was there).

        Raises:
            InvalidInputError: a bad argument (``created_ns`` must be an int >= 0).
            SequenceConflictError: ``seq`` is taken by a different checkpoint, or is not above
                every seq the workflow has given out.
        """
        if type(created_ns) is not int or not 0 <= created_ns < 1 << 64:
            raise InvalidInputError(
                f"invalid created_ns {created_ns!r}: expected an int from 0 to 2**64 - 1"
            )
        pending = self._pending_put(workflow_id, state, step, schema, meta, None)
        pending.created_ns = created_ns
        try:
            result = self._backend.write(_import_checkpoint, pending, validate_seq(seq))
        except BaseException:
            self._lists.forget(workflow_id)
            raise
        if result[1]:
            self._remember(workflow_id, pending.chunked)
            self._wrote(result[0].size)
        return result

    def batch(self) -> Batch:
        """A context manager whose puts commit in one write transaction, all or nothing."""
        return Batch(self)

    def set_status(
        self, workflow_id: str, status: Status, *, extras: Mapping[str, object] | None = None
    ) -> WorkflowInfo:
        """Set a workflow's status (running, completed, failed or cancelled).

        Args:
            workflow_id: the workflow.
            status: its new status.
            extras: fields to record with the workflow in the same transaction (see
                ``acquire_lease``; a None value removes a field; the lease cannot be set here).

        Raises:
            InvalidStatusError: an unknown status.
            InvalidInputError: an ``extras`` field that is not a str, or is ``lease``.
            WorkflowNotFoundError: no such workflow.
        """
        workflow_key = encode_workflow_id(workflow_id)
        if status not in STATUSES:
            raise InvalidStatusError(status, STATUSES)
        leases.check_extras(extras)
        return self._backend.write(_set_status, workflow_key, status, extras)

    def delete(self, workflow_id: str, *, seq: int | None = None) -> int:
        """Delete a whole workflow, or one checkpoint of it; returns how many were deleted.

        Deleting one checkpoint never makes its seq available again.

        Raises:
            WorkflowNotFoundError: no such workflow.
            CheckpointNotFoundError: ``seq`` given and not present.
        """
        workflow_key = encode_workflow_id(workflow_id)
        if seq is None:
            return self._backend.write(_delete_workflow, workflow_key)
        return self._backend.write(_delete_checkpoint, workflow_key, validate_seq(seq))

    # -- reads --------------------------------------------------------------------------------

    def latest(
        self, workflow_id: str, *, skip_damaged: bool = True, migrate: bool = False
    ) -> Checkpoint | None:
        """The workflow's newest intact checkpoint, or None when it has none.

        A damaged newer checkpoint is skipped, logged as a warning, and named in the result's
        ``damaged_newer``, so that an executor resumes from the newest checkpoint it can trust.

        Args:
            workflow_id: the workflow.
            skip_damaged: False to raise instead of falling back past a damaged checkpoint.
            migrate: upgrade the state to its workflow name's current schema through the
                registered ``state_migration`` functions (the stored record is not changed).

        Raises:
            IntegrityError: the newest checkpoint is damaged and ``skip_damaged`` is False, or
                every checkpoint of the workflow is damaged.
            MigrationError: ``migrate`` and the state cannot be upgraded.
        """
        workflow_key = encode_workflow_id(workflow_id)
        found = self._backend.read(
            _read_latest, self._chunks, workflow_id, workflow_key, skip_damaged
        )
        return self._migrated(found) if migrate and found is not None else found

    def get(self, workflow_id: str, seq: int, *, migrate: bool = False) -> Checkpoint:
        """Checkpoint ``seq`` of the workflow.

        Args:
            workflow_id: the workflow.
            seq: the checkpoint.
            migrate: as in ``latest``.

        Raises:
            WorkflowNotFoundError: no such workflow.
            CheckpointNotFoundError: the workflow has no checkpoint ``seq``.
            IntegrityError: the checkpoint is damaged.
            MigrationError: ``migrate`` and the state cannot be upgraded.
        """
        workflow_key = encode_workflow_id(workflow_id)
        found = self._backend.read(
            _read_checkpoint, self._chunks, workflow_id, workflow_key, validate_seq(seq)
        )
        return self._migrated(found) if migrate else found

    def workflow_name(self, workflow_id: str) -> str:
        """The name the workflow's state migrations are registered under.

        The name of the ``Workflow`` the reference executor recorded when it started the
        workflow; for a workflow written by ``put`` alone, its id.

        Raises:
            WorkflowNotFoundError: no such workflow.
        """
        definition = self.workflow_extras(workflow_id).get("definition")
        name = definition.get("name") if isinstance(definition, dict) else None
        return name if isinstance(name, str) and name else workflow_id

    def _migrated(self, ckpt: Checkpoint) -> Checkpoint:
        name = self.workflow_name(ckpt.workflow_id)
        state, schema = migrations.upgrade_state(
            name, ckpt.state, ckpt.schema, workflow_id=ckpt.workflow_id, seq=ckpt.seq
        )
        return (
            ckpt if schema == ckpt.schema else dataclasses.replace(ckpt, state=state, schema=schema)
        )

    def workflow(self, workflow_id: str) -> WorkflowInfo:
        """The index entry of one workflow.

        Raises:
            WorkflowNotFoundError: no such workflow.
        """
        return self._backend.read(_workflow_info, encode_workflow_id(workflow_id))

    def workflow_extras(self, workflow_id: str) -> dict[str, Any]:
        """The fields an executor recorded with the workflow (see ``acquire_lease``), but the lease.

        Raises:
            WorkflowNotFoundError: no such workflow.
        """
        entry = self._backend.read(required_entry, encode_workflow_id(workflow_id))
        return {name: value for name, value in entry.extras.items() if name != leases.LEASE_FIELD}

    def history(
        self,
        workflow_id: str,
        *,
        reverse: bool = False,
        limit: int | None = None,
        on_damaged: Callable[[IntegrityError], object] | None = None,
    ) -> Iterator[CheckpointInfo]:
        """The workflow's checkpoints in seq order (newest first with ``reverse``), without state.

        Records are read in chunks, each in its own short read transaction, so a slow loop over
        the result never holds a transaction open.

        Args:
            workflow_id: the workflow.
            reverse: newest first.
            limit: at most this many records (damaged ones count).
            on_damaged: called with the error of each damaged record, which is then skipped;
                without it, the iterator raises at the first one.

        Raises:
            WorkflowNotFoundError: no such workflow (raised by this call, not by the iterator).
            IntegrityError: (from the iterator) a damaged record, unless ``on_damaged``.
        """
        workflow_key = encode_workflow_id(workflow_id)
        _check_limit(limit)
        self._backend.read(required_entry, workflow_key)
        return self._history(workflow_id, workflow_key, reverse, limit, on_damaged)

    def _history(
        self,
        workflow_id: str,
        workflow_key: bytes,
        reverse: bool,
        limit: int | None,
        on_damaged: Callable[[IntegrityError], object] | None = None,
    ) -> Iterator[CheckpointInfo]:
        low, high = workflow_bounds(workflow_key)
        remaining = limit
        while remaining is None or remaining > 0:
            size = _CHUNK if remaining is None else min(_CHUNK, remaining)
            infos, last_key = self._backend.read_views(
                _info_chunk, workflow_id, low, high, reverse, size
            )
            for info in infos:
                if not isinstance(info, IntegrityError):
                    yield info
                elif on_damaged is None:
                    raise info
                else:
                    on_damaged(info)
            if last_key is None or len(infos) < size:
                return
            if remaining is not None:
                remaining -= len(infos)
            if reverse:
                high = last_key
            else:
                low = last_key + b"\x00"

    def workflows(self, *, status: Status | None = None) -> Iterator[WorkflowInfo]:
        """Every workflow in id order, or those with ``status``; read in short chunks.

        Raises:
            InvalidStatusError: an unknown status (raised by this call).
        """
        if status is not None and status not in STATUSES:
            raise InvalidStatusError(status, STATUSES)
        return self._workflows(status)

    def _workflows(self, status: Status | None) -> Iterator[WorkflowInfo]:
        low = b""
        while True:
            items = self._backend.read(scan_chunk, WF, low, None, False, _CHUNK)
            for workflow_key, raw in items:
                entry = WorkflowEntry.decode(workflow_key, raw)
                if status is None or entry.status == status:
                    yield entry.info(workflow_key)
            if len(items) < _CHUNK:
                return
            low = items[-1][0] + b"\x00"

    # -- maintenance --------------------------------------------------------------------------

    def verify(
        self,
        *,
        workflow_id: str | None = None,
        deep: bool = False,
        progress: integrity.Progress | None = None,
    ) -> VerifyReport:
        """Check every record's header and digest, and the indexes against the records.

        Never writes. Each workflow is checked in one short read transaction, so writers may
        run meanwhile.

        Args:
            workflow_id: check only this workflow.
            deep: also decode every record's body (slower: msgpack decoding, not hashing, is
                then what limits the pace).
            progress: called with (records, bytes) checked so far, after each workflow.

        Raises:
            InvalidWorkflowIdError: a bad ``workflow_id``.
            WorkflowNotFoundError: ``workflow_id`` has neither an index entry nor a record.
        """
        workflow_key = None if workflow_id is None else encode_workflow_id(workflow_id)
        if workflow_key is not None and not self._backend.read(_known, workflow_key):
            raise WorkflowNotFoundError(workflow_id_of(workflow_key))
        return integrity.verify(
            self._backend, workflow_key=workflow_key, deep=deep, progress=progress
        )

    def repair(self, *, backup_dir: str | os.PathLike[str] | None = None) -> RepairReport:
        """Back the store up, delete damaged records, and rebuild the indexes from the records.

        Every intact record stays as it is. Afterwards ``verify()`` finds nothing.

        Args:
            backup_dir: a new directory for the backup taken first; by default one beside
                the store, named ``<store>.backup-<UTC time>``.

        Raises:
            ReadOnlyStoreError: the store is read-only.
            StoreError: the backup directory exists and is not empty, or a write failed.
        """
        if self.readonly:
            raise ReadOnlyStoreError(f"store {self.path} is open read-only", path=self.path)
        target = integrity.default_backup_dir(self.path) if backup_dir is None else backup_dir
        return integrity.repair(self._backend, backup_dir=os.fspath(target))

    def backup(self, dest: str | os.PathLike[str]) -> str:
        """Write a consistent, compacted copy of the store into the new directory ``dest``.

        Writers may run meanwhile: the copy holds exactly the commits made before it began.
        Returns the path of the copy.

        Raises:
            StoreError: ``dest`` exists and is not an empty directory, or the copy failed.
        """
        target = os.fspath(dest)
        self._backend.copy_to(target)
        return target

    def gc(
        self,
        policy: RetentionPolicy | None = None,
        *,
        dry_run: bool = False,
        progress: collector.Progress | None = None,
    ) -> GcReport:
        """Delete the checkpoints ``policy`` does not keep, oldest first; see ``docs/retention.md``.

        Deletes in write transactions of at most ``collector.BATCH`` checkpoints each, so
        writers in this and other processes go on meanwhile and wait for one such commit at
        most. A running workflow's newest intact checkpoint is never deleted.

        Args:
            policy: the bounds to enforce; by default the store's ``retention``.
            dry_run: only plan: the report lists what would be deleted; nothing is written.
            progress: called with (deleted so far, planned) after each transaction.

        Raises:
            ConfigError: no policy given and the store has none.
            ReadOnlyStoreError: the store is read-only (a dry run is allowed).
            StoreCorruptedError: an index entry is damaged (``repair`` rebuilds it).
        """
        chosen = self._retention if policy is None else policy
        if not isinstance(chosen, RetentionPolicy):
            raise ConfigError(
                "gc needs a RetentionPolicy: pass one, or open the store with retention=...",
                hint="set the retention_* settings of the config to give the store one",
            )
        if self.readonly and not dry_run:
            raise ReadOnlyStoreError(f"store {self.path} is open read-only", path=self.path)
        return collector.collect(self._backend, chosen, dry_run=dry_run, progress=progress)

    def migrate_states(
        self, workflow_id: str | None = None, *, check: bool = False
    ) -> StateMigrationReport:
        """Write each workflow's newest state, upgraded to its current schema, as a checkpoint.

        Every workflow (or only ``workflow_id``) whose newest intact checkpoint holds an older
        schema than its name's registered ``state_migration`` chain reaches gets a new
        checkpoint: the upgraded state, the same step, the new schema, and in its meta
        ``migrated_from`` (the seq and schema it came from). The history stays as it was.

        Every upgrade is computed first: when one fails, nothing is written. The states are
        then read, upgraded again (the functions must not have side effects) and written, 64
        workflows per transaction, each put expecting the head read just before; a workflow
        that advanced since the first pass is upgraded from its new head. One that advances in
        that short window fails its transaction with ``SequenceConflictError``; the
        transactions before it stay written, and running again finishes the job.

        Args:
            workflow_id: only this workflow.
            check: compute and report, write nothing.

        Raises:
            MigrationError: a state cannot be upgraded (names the workflow, seq and versions).
            SequenceConflictError: a workflow advanced while the states were being upgraded.
            ReadOnlyStoreError: the store is read-only and ``check`` is False.
        """
        started = time.perf_counter()
        if self.readonly and not check:
            raise ReadOnlyStoreError(f"store {self.path} is open read-only", path=self.path)
        selected = None if workflow_id is None else self.workflow(workflow_id)
        infos = list(self.workflows()) if selected is None else [selected]
        # First every state is upgraded and dropped: a migration that fails does so before
        # anything is written. Then the states are upgraded again and written, a bounded number
        # of workflows per transaction, so that no state is held longer than its batch.
        due: list[tuple[WorkflowInfo, StateUpgrade]] = []
        for info in infos:
            found = self._state_upgrade(info.workflow_id)
            if found is not None:
                due.append((info, found[0]))
        upgraded = [upgrade for _, upgrade in due]
        if not check:
            upgraded = []
            for start in range(0, len(due), _MIGRATE_BATCH):
                upgraded.extend(self._write_upgrades(due[start : start + _MIGRATE_BATCH]))
        current = len(infos) - len(due)
        return StateMigrationReport(tuple(upgraded), current, check, time.perf_counter() - started)

    def _state_upgrade(self, workflow_id: str) -> tuple[StateUpgrade, Checkpoint, object] | None:
        """The workflow's newest state upgraded, with what it came from; None when current."""
        ckpt = self.latest(workflow_id)
        name = self.workflow_name(workflow_id)
        target = migrations.current_schema(name)
        if ckpt is None or target is None or ckpt.schema >= target:
            return None
        state, schema = migrations.upgrade_state(
            name, ckpt.state, ckpt.schema, workflow_id=workflow_id, seq=ckpt.seq
        )
        return StateUpgrade(workflow_id, name, ckpt.seq, ckpt.schema, schema, None), ckpt, state

    def _write_upgrades(self, due: list[tuple[WorkflowInfo, StateUpgrade]]) -> list[StateUpgrade]:
        """Upgrade and write these workflows' newest states in one transaction.

        Each workflow is read again here, so that one that advanced since the first pass is
        upgraded from its new head (or skipped, when that one is current already).
        """
        written: list[StateUpgrade] = []
        with self.batch() as batch:
            for info, _ in due:
                head = self.workflow(info.workflow_id).head_seq
                found = self._state_upgrade(info.workflow_id)
                if found is None:
                    continue
                upgrade, ckpt, state = found
                meta = {**ckpt.meta, "migrated_from": {"seq": ckpt.seq, "schema": ckpt.schema}}
                batch.put(
                    info.workflow_id, state, step=ckpt.step, schema=upgrade.to_schema, meta=meta,
                    expect_seq=head,
                )  # fmt: skip
                written.append(upgrade)
        return [
            dataclasses.replace(upgrade, new_seq=info.seq)
            for upgrade, info in zip(written, batch.checkpoints, strict=True)
        ]

    def compact(self, dest: str | os.PathLike[str] | None = None) -> CompactReport:
        """Shrink the store's file to the pages in use (LMDB never gives freed pages back).

        Without ``dest``, the store is copied with compaction beside itself, flushed, and
        renamed over its own file, which needs the store to itself: no other process, and no
        other ``CheckpointStore`` in this one, may have it open (a process that starts to open it
        meanwhile waits until the compaction is over). With ``dest``, the compacted copy is
        written there instead and the store stays as it is, open to all.

        Raises:
            StoreInUseError: (in place) another process or store object has the store open.
            ReadOnlyStoreError: (in place) the store is read-only.
            StoreError: ``dest`` exists and is not empty, or the copy failed; the store is
                left as it was.
        """
        started = time.perf_counter()
        before = self._backend.storage_info()
        if dest is None:
            self._backend.compact()
            target = self.path
            after = self._backend.storage_info().file_bytes
        else:
            target = os.fspath(dest)
            self._backend.copy_to(target)
            after = os.path.getsize(os.path.join(target, DATA_FILE))
        return CompactReport(
            path=target,
            file_bytes_before=before.file_bytes,
            file_bytes_after=after,
            live_bytes=before.live_bytes,
            seconds=time.perf_counter() - started,
        )

    def stats(self) -> StoreStats:
        """Counts and sizes: workflows by status, checkpoints, live and file bytes, readers."""
        by_status: Counter[str] = Counter()
        record_bytes = 0
        largest: list[tuple[int, str, WorkflowInfo]] = []
        for info in self.workflows():
            by_status[info.status] += 1
            record_bytes += info.bytes
            entry = (info.bytes, info.workflow_id, info)
            if len(largest) < _LARGEST:
                heapq.heappush(largest, entry)
            else:
                heapq.heappushpop(largest, entry)
        checkpoints, oldest, newest = self._backend.read(_age_bounds)
        storage = self._backend.storage_info()
        return StoreStats(
            path=self.path,
            durability=self._durability,
            format_version=self._format,
            workflows=sum(by_status.values()),
            workflows_by_status={status: by_status[status] for status in STATUSES},
            checkpoints=checkpoints,
            record_bytes=record_bytes,
            live_bytes=storage.live_bytes,
            file_bytes=storage.file_bytes,
            map_size=storage.map_size,
            max_map_size=storage.max_map_size,
            page_size=storage.page_size,
            readers_used=storage.readers_used,
            max_readers=storage.max_readers,
            oldest_ns=oldest,
            newest_ns=newest,
            largest=tuple(info for _, _, info in sorted(largest, reverse=True)),
        )

    # -- leases -------------------------------------------------------------------------------
    # An executor holds a workflow's lease while it advances the workflow (DESIGN section 6).
    # The lease lives in the workflow's ``wf`` entry, so taking, renewing and dropping it are
    # each one write transaction, atomic with the status and the fields they change. Holders
    # still write their checkpoints with ``expect_seq``: one whose lease was taken over fails
    # with SequenceConflictError instead of forking the history.

    def acquire_lease(
        self,
        workflow_id: str,
        *,
        ttl: float = DEFAULT_LEASE_TTL,
        create: bool = False,
        extras: Mapping[str, object] | None = None,
    ) -> Lease:
        """Take the workflow's lease for this process and mark the workflow running.

        A lease held by another owner is taken over when it has expired, or when its holder
        ran on this host and that process has ended (its pid is gone, or now names a process
        that started at another time).

        Args:
            workflow_id: the workflow.
            ttl: seconds the lease lasts unless renewed.
            create: start a new workflow: create it when missing; an existing workflow may be
                taken only while it holds no checkpoint.
            extras: fields to record with the workflow in the same transaction (a None value
                removes the field); ``workflow_extras`` reads them back.

        Raises:
            WorkflowNotFoundError: no such workflow, and ``create`` is False.
            WorkflowExistsError: ``create`` and the workflow holds checkpoints.
            WorkflowFinishedError: the workflow is completed or cancelled.
            WorkflowLockedError: another holder's lease is live.
            InvalidInputError: a bad ``ttl`` or ``extras``.
        """
        workflow_key = encode_workflow_id(workflow_id)
        if type(ttl) not in (int, float) or not 0 < ttl < 1e9:
            raise InvalidInputError(f"invalid lease ttl {ttl!r}: expected seconds > 0")
        leases.check_extras(extras)
        lease = leases.new_lease(workflow_id, ttl)
        return self._backend.write(leases.acquire, workflow_key, lease, create, extras)

    def renew_lease(self, lease: Lease) -> Lease:
        """Extend a lease this process holds by its ttl from now.

        Raises:
            WorkflowLockedError: the lease was released or taken over meanwhile.
        """
        workflow_key = encode_workflow_id(lease.workflow_id)
        return self._backend.write(leases.renew, workflow_key, lease, time.time_ns())

    def release_lease(
        self,
        lease: Lease,
        *,
        status: Status | None = None,
        extras: Mapping[str, object] | None = None,
    ) -> WorkflowInfo:
        """Drop a lease this process holds, setting the workflow's status and fields with it.

        Raises:
            WorkflowLockedError: the lease was released or taken over meanwhile; nothing changed.
            InvalidStatusError: an unknown status.
        """
        workflow_key = encode_workflow_id(lease.workflow_id)
        if status is not None and status not in STATUSES:
            raise InvalidStatusError(status, STATUSES)
        leases.check_extras(extras)
        return self._backend.write(leases.release, workflow_key, lease, status, extras)

    def lease(self, workflow_id: str) -> Lease | None:
        """The workflow's lease as stored (it may have expired), or None when none is held.

        Raises:
            WorkflowNotFoundError: no such workflow.
        """
        entry = self._backend.read(required_entry, encode_workflow_id(workflow_id))
        return leases.stored_lease(workflow_id, entry)


def _initialise_meta(txn: WriteTxn) -> int:
    found = migrations.read_format(txn)
    if found is not None:  # another process initialised it first
        return found
    for name, value in (
        (migrations.FORMAT, STORE_FORMAT),
        (b"created_ns", time.time_ns()),
        (b"created_by", _version()),
    ):
        txn.put(META, name, codec.encode(value))
    return STORE_FORMAT


def _known(txn: ReadTxn, workflow_key: bytes) -> bool:
    """True when the store has an index entry or a record of the workflow (either may be lost)."""
    return (
        txn.get(WF, workflow_key) is not None
        or txn.last(CKPT, *workflow_bounds(workflow_key)) is not None
    )


def _age_bounds(txn: ReadTxn) -> tuple[int, int | None, int | None]:
    first = next(txn.scan(AGE, page=1), None)
    last = next(txn.scan(AGE, reverse=True, page=1), None)
    oldest = None if first is None else split_age_key(first[0])[0]
    newest = None if last is None else split_age_key(last[0])[0]
    return txn.count(CKPT), oldest, newest


def _set_status(
    txn: WriteTxn, workflow_key: bytes, status: Status, extras: Mapping[str, object] | None
) -> WorkflowInfo:
    entry = required_entry(txn, workflow_key)
    entry.merge_extras(extras)
    entry.status = status
    entry.updated_ns = max(entry.updated_ns, time.time_ns())
    txn.put(WF, workflow_key, entry.encode())
    return entry.info(workflow_key)


def _import_checkpoint(
    txn: WriteTxn, pending: _PendingPut, seq: int
) -> tuple[CheckpointInfo, bool]:
    key = checkpoint_key(pending.workflow_key, seq)
    existing = txn.get(CKPT, key)
    if existing is not None and _holds(txn, pending, key, existing):
        return _checkpoint_info(pending.workflow_id, key, existing), False
    raw = txn.get(WF, pending.workflow_key)
    entry = WorkflowEntry.decode(pending.workflow_key, raw) if raw is not None else None
    last_seq = 0 if entry is None else entry.last_seq
    if existing is not None or seq <= last_seq:
        taken = "holds another checkpoint" if existing is not None else "was given out before"
        raise SequenceConflictError(
            pending.workflow_id,
            seq - 1,
            last_seq,
            f"workflow {pending.workflow_id!r}: cannot import checkpoint {seq}: that seq {taken} "
            f"(the workflow's last seq is {last_seq})",
        )
    pending.expect_seq = None
    info = pending.apply(txn, seq=seq)
    return info, True


def _holds(txn: ReadTxn, pending: _PendingPut, key: bytes, existing: bytes) -> bool:
    """Whether the record ``existing`` holds exactly the checkpoint ``pending`` would write.

    Records are compared as format 1 would store them: the same checkpoint split into chunks
    against other lists differs in its bytes, not in what it holds.
    """
    if existing == records.build(key, pending.inline_body, pending.created_ns):
        return True
    if not records.is_chunked(existing):
        return False
    try:
        ckpt = _checkpoint(txn, chunkstore.ChunkCache(0), pending.workflow_id, key, existing)
        body = records.encode_body(ckpt.state, ckpt.step, ckpt.schema, ckpt.meta)
    except (IntegrityError, CodecError):
        return False
    return ckpt.created_ns == pending.created_ns and body == pending.inline_body


def _delete_workflow(txn: WriteTxn, workflow_key: bytes) -> int:
    required_entry(txn, workflow_key)
    return keyed.delete_workflow(txn, workflow_key)


def _delete_checkpoint(txn: WriteTxn, workflow_key: bytes, seq: int) -> int:
    entry = required_entry(txn, workflow_key)
    key = checkpoint_key(workflow_key, seq)
    record = txn.get(CKPT, key)
    if record is None:
        raise CheckpointNotFoundError(workflow_id_of(workflow_key), seq)
    remove_checkpoint(txn, workflow_key, entry, key, record)
    entry.updated_ns = max(entry.updated_ns, time.time_ns())
    txn.put(WF, workflow_key, entry.encode())
    return 1


def recover(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> RecoverReport:
    """Copy every intact checkpoint of the store at ``source`` into a new store at ``dest``.

    Works where LMDB refuses to open the source (a damaged meta page, unreadable tree pages):
    the source's file is read page by page, never through LMDB and never written. Records
    whose digest fails are left out and reported; index entries are rebuilt in ``dest``.

    Args:
        source: the damaged store's directory (or its ``data.mdb``).
        dest: a new or empty directory for the recovered store.

    Raises:
        StoreNotFoundError: no data file at ``source``.
        StoreCorruptedError: the source is damaged beyond reading (no meta page and no page).
        StoreError: ``dest`` exists and is not empty, or is the source.
    """
    source_path, dest_path = os.fspath(source), os.fspath(dest)
    if is_url(source_path) or is_url(dest_path):
        raise StoreError(
            "recover reads an LMDB store's file page by page into a new LMDB directory; a "
            "PostgreSQL store has no such file",
            hint="on PostgreSQL, `lmdbstate verify` finds damaged records and `lmdbstate repair` "
            "removes them; `lmdbstate copy` moves a recovered store to PostgreSQL",
        )
    require_new_directory(dest_path)
    source_dir = source_path if os.path.isdir(source_path) else os.path.dirname(source_path)
    if os.path.realpath(source_dir) == os.path.realpath(dest_path):
        raise StoreError(
            f"{dest_path} is the source itself", path=dest_path, hint="recover into a new directory"
        )
    DataFile(source_path).close()  # a missing or unreadable source fails before dest is made
    make_new_directory(dest_path)
    with CheckpointStore(dest_path) as fresh:
        return integrity.recover(source_path, fresh._backend, dest_path=dest_path)


def migrate_store(
    path: str | os.PathLike[str],
    *,
    backup_dir: str | os.PathLike[str] | None = None,
    check: bool = False,
) -> StoreMigrationReport:
    """Upgrade the store at ``path`` to the format this version writes, or say what would run.

    Opening a store for writing upgrades it too (``auto_migrate``); this is the explicit way,
    with the choice of where the backup goes. Each step runs in one write transaction with its
    own bookkeeping in ``meta``; an interrupted upgrade runs again from the last step done.

    Args:
        path: the store's directory.
        backup_dir: a new directory for the copy taken before the first step; by default one
            beside the store (``<store>.format<N>-backup-<UTC time>-<pid>``).
        check: only report the steps that would run; nothing is written.

    Raises:
        StoreNotFoundError: no store at ``path``.
        UnsupportedFormatError: a newer format than this version reads, or a step missing.
        MigrationError: a step raised; the steps before it stay done.
        StoreError: the backup directory exists and is not empty, or a write failed.
    """
    location = os.fspath(path)
    # A missing store is reported (read-only opens require one), never created.
    if is_url(location):
        open_backend(location, EnvOptions(readonly=True)).close()
        missing = False
    else:
        missing = not os.path.isfile(os.path.join(location, DATA_FILE))
    backend = open_backend(location, EnvOptions(readonly=check or missing))
    try:
        found = backend.read(migrations.read_format)
        if found is None:
            found = STORE_FORMAT  # a store that was never written to: nothing to upgrade
        steps = migrations.store_steps(found, backend.location)
        if check or not steps:
            return StoreMigrationReport(
                backend.location, found, STORE_FORMAT, steps, None, check, 0.0
            )
        target = (
            migrations.default_backup_dir(backend.location, found)
            if backup_dir is None
            else os.fspath(backup_dir)
        )
        return migrations.upgrade_store(backend, found, backup_dir=target, version=_version())
    finally:
        backend.close()
