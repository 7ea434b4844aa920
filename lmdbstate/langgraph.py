r"""LmdbSaver: LangGraph's checkpointer interface over a ``CheckpointStore``.

Needs the ``langgraph`` extra (``pip install 'lmdbstate[langgraph]'``). Nothing else in lmdbstate
imports this module, so ``import lmdbstate`` never imports langgraph.

Keys (``docs/langgraph.md`` gives the reasons and the measurements):

- The checkpoints of one thread and namespace are one lmdbstate workflow, whose id is
  ``f"{thread_id}\x1f{checkpoint_ns}"``. Each LangGraph checkpoint is one record of it, at the
  seq made of the top 64 bits of its checkpoint id. LangGraph's ids are uuid6, whose top bits are
  a timestamp that one process never repeats, so seq order is checkpoint-id order: the latest
  checkpoint of a thread is one cursor seek, a checkpoint is found by its id with one key, and
  ``list`` walks keys backwards from ``before``, reading only what it returns.
- The pending writes of a checkpoint are one record of a second workflow,
  ``f"{thread_id}\x1f{checkpoint_ns}\x1fw"``, at the same seq, so a checkpoint and its writes can
  be written in one transaction, and a thread's workflows are all the ids that begin with
  ``f"{thread_id}\x1f"``.
- A checkpoint record's state is the checkpoint as the saver's ``serde`` serialises it (so an
  ``EncryptedSerializer`` encrypts it); its meta holds the checkpoint id, the parent id and the
  metadata (plain msgpack, as SqliteSaver keeps it in plain JSON, so that ``filter`` reads it
  without touching the state). Digests, ``verify``, ``recover``, ``gc`` and the CLI work on these
  records as on any others.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby, islice
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from . import records
from .errors import (
    CodecError,
    IntegrityError,
    InvalidInputError,
    SequenceConflictError,
)
from .index import (
    NEWEST_PARENT,
    RETENTION_FOLLOWS,
    RETENTION_KEEP,
    WorkflowEntry,
    workflow_id_of,
)
from .keyed import delete_at, delete_workflow, put_at
from .keys import checkpoint_key, encode_workflow_id, seq_of, split_checkpoint_key
from .keys import workflow_bounds as record_bounds
from .kv import CKPT, WF, ReadTxn, WriteTxn, scan_chunk
from .models import Durability
from .store import CheckpointStore

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("lmdbstate")

OnCorruption = Literal["fallback", "raise"]
ON_CORRUPTION: tuple[OnCorruption, ...] = ("fallback", "raise")
PRUNE_STRATEGIES = ("keep_latest", "delete")
WORKERS = 32
"""Threads of a saver's pool: async calls at once, and puts that can share one group commit."""

_SEP = "\x1f"
_PARENT = NEWEST_PARENT  # wf extras: [newest seq written, its parent's seq]
_WRITES = _SEP + "w"
_CHUNK = 32  # checkpoints read per read transaction by ``list``
_WF_CHUNK = 256
_Typed = tuple[str, bytes]
_Entry = list[Any]  # a pending write as stored: [task_id, idx, channel, type, bytes, task_path]


# -- keys -------------------------------------------------------------------------------------


def _part(value: object, name: str) -> str:
    text = str(value)
    if _SEP in text:
        raise InvalidInputError(
            f"invalid {name} {text!r}: it holds the character \\x1f, which LmdbSaver's keys "
            "reserve as their separator"
        )
    return text


def _thread_ns(config: RunnableConfig) -> tuple[str, str]:
    configurable = config["configurable"]
    thread_id = _part(configurable["thread_id"], "thread_id")
    return thread_id, _part(configurable.get("checkpoint_ns") or "", "checkpoint_ns")


def _workflow_keys(thread_id: str, checkpoint_ns: str) -> tuple[bytes, bytes]:
    """The ``wf`` keys of the thread-namespace's checkpoints and of its pending writes.

    Raises:
        InvalidWorkflowIdError: the ids are too long for a key, or hold a NUL.
    """
    checkpoints = f"{thread_id}{_SEP}{checkpoint_ns}"
    return encode_workflow_id(checkpoints), encode_workflow_id(checkpoints + _WRITES)


def _thread_bounds(thread_id: str) -> tuple[bytes, bytes]:
    """The ``wf`` key range ``[low, high)`` holding every workflow of a thread."""
    return (thread_id + _SEP).encode(), (thread_id + chr(ord(_SEP) + 1)).encode()


def _seq(checkpoint_id: object) -> int | None:
    """The seq of a checkpoint id; None when it is not a UUID in canonical form."""
    try:
        parsed = uuid.UUID(str(checkpoint_id))
    except ValueError:
        return None
    seq = parsed.int >> 64
    return seq if str(parsed) == checkpoint_id and seq else None


def _required_seq(checkpoint_id: object) -> int:
    seq = _seq(checkpoint_id)
    if seq is None:
        raise InvalidInputError(
            f"invalid checkpoint id {checkpoint_id!r}: LmdbSaver needs a UUID in canonical form "
            "whose first 16 hex digits are not all zero (LangGraph's uuid6 ids are such)"
        )
    return seq


def _newest_first(listed: tuple[int, Callable[[], CheckpointTuple]]) -> int:
    """The key that orders listed checkpoints newest first: their seq, negated."""
    return -listed[0]


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


# -- records ----------------------------------------------------------------------------------


def _fields(key: bytes, record: bytes, *, state: bool = True) -> dict[str, Any]:
    """A checkpoint record's body fields, after its digest holds.

    Raises:
        IntegrityError: the record is damaged, or is not one LmdbSaver wrote.
    """
    _, _, body = records.check(key, record)
    try:
        fields = (records.decode_body if state else records.decode_body_without_state)(body)
    except CodecError as exc:
        workflow_key, seq = split_checkpoint_key(key)
        raise IntegrityError(workflow_id_of(workflow_key), seq, exc.reason) from exc
    meta = fields.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("checkpoint_id"), str):
        workflow_key, seq = split_checkpoint_key(key)
        raise IntegrityError(
            workflow_id_of(workflow_key), seq, "not a LangGraph checkpoint (no checkpoint id)"
        )
    return fields


def _writes_entries(key: bytes, record: bytes, checkpoint_id: str) -> list[_Entry]:
    """The pending writes a record holds for ``checkpoint_id``.

    Raises:
        IntegrityError: the record is damaged.
        SequenceConflictError: it holds the writes of another checkpoint id with the same seq.
    """
    fields = _fields(key, record)
    entries = fields.get("state")
    if not isinstance(entries, list):
        workflow_key, seq = split_checkpoint_key(key)
        raise IntegrityError(workflow_id_of(workflow_key), seq, "pending writes are not a list")
    _check_same_id(key, fields["meta"]["checkpoint_id"], checkpoint_id)
    return entries


def _check_same_id(key: bytes, stored: str, checkpoint_id: str) -> None:
    if stored != checkpoint_id:
        workflow_key, seq = split_checkpoint_key(key)
        workflow_id = workflow_id_of(workflow_key)
        raise SequenceConflictError(
            workflow_id,
            seq,
            seq,
            f"workflow {workflow_id!r}: checkpoint ids {checkpoint_id!r} and {stored!r} share "
            "their first 64 bits, which LmdbSaver uses as the seq",
        )


class _Pending:
    """A checkpoint serialised and encoded outside any transaction, waiting for one."""

    __slots__ = ("body", "checkpoint_id", "created_ns", "keep", "parent", "seq", "workflow_key")

    def __init__(
        self, workflow_key: bytes, checkpoint_id: str, body: bytes, keep: int, parent: int | None
    ) -> None:
        self.workflow_key = workflow_key
        self.checkpoint_id = checkpoint_id
        self.seq = _required_seq(checkpoint_id)
        self.body = body
        # How many newest checkpoints retention must keep: this one and those its DeltaChannels
        # rebuild their values from.
        self.keep = keep
        # The parent's seq, kept in the workflow's entry beside the record: should the record be
        # damaged, a fallback still knows where it came from (a fork's parent is not the
        # checkpoint just before it by id).
        self.parent = parent
        self.created_ns = time.time_ns()

    def apply(self, txn: WriteTxn) -> tuple[None, int]:
        """Write the checkpoint, replacing one stored under the same id.

        Raises:
            SequenceConflictError: another checkpoint id holds this seq (before any write).
            StoreCorruptedError: the workflow's index entry is damaged (before any write).
        """
        key = checkpoint_key(self.workflow_key, self.seq)
        existing = txn.get(CKPT, key)
        if existing is not None:
            try:
                stored = _fields(key, existing, state=False)["meta"]["checkpoint_id"]
            except IntegrityError:
                stored = self.checkpoint_id  # a damaged record under this seq: overwrite it
            _check_same_id(key, stored, self.checkpoint_id)
        extras = {
            RETENTION_KEEP: self.keep if self.keep > 1 else None,
            _PARENT: None if self.parent is None else [self.seq, self.parent],
        }
        written = put_at(
            txn, self.workflow_key, self.seq, self.body, self.created_ns, extras=extras
        )
        return None, written


def _merge_writes(
    txn: WriteTxn,
    workflow_key: bytes,
    seq: int,
    checkpoint_id: str,
    new: list[_Entry],
    fallback: bool,
) -> tuple[None, int]:
    """Add pending writes to the checkpoint's writes record, in the transaction that reads it.

    Special writes (negative indexes: errors, interrupts, resumes) replace what the task stored
    under the same index; ordinary ones are added only when the task stored none there yet.
    """
    key = checkpoint_key(workflow_key, seq)
    existing = txn.get(CKPT, key)
    entries: list[_Entry] = []
    if existing is not None:
        try:
            entries = _writes_entries(key, existing, checkpoint_id)
        except IntegrityError as exc:
            if not fallback:
                raise
            log.warning("%s; its pending writes are replaced by the new ones", exc)
    merged = {(entry[0], entry[1]): entry for entry in entries}
    changed = False
    for entry in new:
        slot = (entry[0], entry[1])
        if entry[1] >= 0 and slot in merged:
            continue
        merged[slot] = entry
        changed = True
    if not changed:
        return None, 0
    meta = {"checkpoint_id": checkpoint_id}
    body = records.encode_body(list(merged.values()), None, 1, meta)
    # Retention keeps a checkpoint's writes as long as it keeps the checkpoint.
    follows = {RETENTION_FOLLOWS: workflow_id_of(workflow_key.removesuffix(_WRITES.encode()))}
    return None, put_at(txn, workflow_key, seq, body, time.time_ns(), extras=follows)


# -- reads (each runs inside one read transaction) ---------------------------------------------

_Found = tuple[bytes, dict[str, Any], bytes | None]
"""A checkpoint's key, its decoded fields, and its writes record (None: it has none)."""


def _read_at(txn: ReadTxn, checkpoint_wf: bytes, writes_wf: bytes, seq: int) -> _Found | None:
    key = checkpoint_key(checkpoint_wf, seq)
    record = txn.get(CKPT, key)
    if record is None:
        return None
    return key, _fields(key, record), txn.get(CKPT, checkpoint_key(writes_wf, seq))


def _newest_intact(
    txn: ReadTxn, checkpoint_wf: bytes, fallback: bool
) -> tuple[tuple[bytes, dict[str, Any]] | None, list[IntegrityError]]:
    """The newest intact checkpoint; with ``fallback`` past damaged ones, named in the list.

    Raises:
        IntegrityError: the newest is damaged and not ``fallback``, or every one is.
    """
    damaged: list[IntegrityError] = []
    # The first item of a backward scan is the newest checkpoint: one cursor seek.
    for key, record in txn.scan(CKPT, *record_bounds(checkpoint_wf), reverse=True, page=1):
        try:
            return (key, _fields(key, record)), damaged
        except IntegrityError as exc:
            if not fallback:
                raise
            damaged.append(exc)
        if len(damaged) == 1 and (parent := _recorded_parent(txn, checkpoint_wf, key)):
            return parent, damaged
    if damaged:
        raise damaged[0]
    return None, damaged


def _recorded_parent(
    txn: ReadTxn, checkpoint_wf: bytes, damaged_key: bytes
) -> tuple[bytes, dict[str, Any]] | None:
    """The intact parent of a damaged newest checkpoint, as its put recorded it; or None."""
    raw = txn.get(WF, checkpoint_wf)
    edge = None if raw is None else WorkflowEntry.decode(checkpoint_wf, raw).extras.get(_PARENT)
    if not (isinstance(edge, list) and len(edge) == 2 and edge[0] == seq_of(damaged_key)):
        return None
    key = checkpoint_key(checkpoint_wf, edge[1])
    record = txn.get(CKPT, key)
    if record is None:
        return None
    try:
        return key, _fields(key, record)
    except IntegrityError:
        return None  # damaged too: the walk by id goes on


def _read_newest(
    txn: ReadTxn, checkpoint_wf: bytes, writes_wf: bytes, fallback: bool
) -> tuple[_Found | None, list[IntegrityError]]:
    """As ``_newest_intact``, with the checkpoint's writes record."""
    newest, damaged = _newest_intact(txn, checkpoint_wf, fallback)
    if newest is None:
        return None, damaged
    key, fields = newest
    return (key, fields, txn.get(CKPT, checkpoint_key(writes_wf, seq_of(key)))), damaged


def _read_page(
    txn: ReadTxn, writes_wf: bytes, low: bytes, high: bytes, size: int
) -> list[tuple[bytes, bytes, bytes | None]]:
    """Up to ``size`` checkpoint records below ``high``, newest first, each with its writes."""
    items = scan_chunk(txn, CKPT, low, high, True, size)
    return [
        (key, record, txn.get(CKPT, checkpoint_key(writes_wf, seq_of(key))))
        for key, record in items
    ]


def _take(found: Iterator[CheckpointTuple], count: int) -> list[CheckpointTuple]:
    return [*islice(found, count)]


def _delete_seqs(
    txn: WriteTxn, workflow_keys: tuple[bytes, ...], seqs: tuple[int, ...]
) -> tuple[int, int]:
    """Delete these seqs from each workflow (a thread-namespace's checkpoints and writes)."""
    now_ns = time.time_ns()
    return sum(delete_at(txn, key, seqs, now_ns) for key in workflow_keys), 0


def _workflow_keys_in(txn: ReadTxn, low: bytes, high: bytes | None) -> list[bytes]:
    return [key for key, _ in scan_chunk(txn, WF, low, high, False, _WF_CHUNK)]


# -- maintenance (each runs in one write transaction of its own) -------------------------------


def _thread_workflows(txn: ReadTxn, thread_id: str) -> list[bytes]:
    return [key for key, _ in txn.scan(WF, *_thread_bounds(thread_id))]


def _delete_threads(txn: WriteTxn, thread_ids: list[str]) -> tuple[int, int]:
    deleted = 0
    for thread_id in thread_ids:
        for workflow_key in _thread_workflows(txn, thread_id):
            deleted += delete_workflow(txn, workflow_key)
    return deleted, 0


def _keep_latest(
    txn: WriteTxn,
    thread_ids: list[str],
    fallback: bool,
    metadata: Callable[[dict[str, Any]], CheckpointMetadata],
) -> tuple[int, int]:
    deleted = 0
    now_ns = time.time_ns()
    for thread_id in thread_ids:
        workflows = _thread_workflows(txn, thread_id)
        for workflow_key in workflows:
            if workflow_key.endswith(_WRITES.encode()):
                continue
            try:
                newest, damaged = _newest_intact(txn, workflow_key, fallback)
            except IntegrityError as every:
                if not fallback:
                    raise
                newest, damaged = None, [every]  # every checkpoint damaged: nothing to keep
            for problem in damaged:
                log.warning("prune: deleting damaged %s", problem)
            kept = set() if newest is None else _delta_chain(txn, workflow_key, newest, metadata)
            for key in (workflow_key, workflow_key + _WRITES.encode()):
                doomed = [
                    seq_of(item)
                    for item, _ in txn.scan(CKPT, *record_bounds(key))
                    if seq_of(item) not in kept
                ]
                deleted += delete_at(txn, key, doomed, now_ns)
    return deleted, 0


def _delta_depth(metadata: CheckpointMetadata) -> int:
    """How many ancestors a checkpoint's ``DeltaChannel``s rebuild their values from.

    The metadata counts, per delta channel, the supersteps since its last snapshot
    (``counters_since_delta_snapshot``): that many ancestors, and the one holding the snapshot.
    0 when the graph has no delta channel.
    """
    counters = metadata.get("counters_since_delta_snapshot") or {}
    return max((int(counter[1]) for counter in counters.values()), default=-1) + 1


def _delta_chain(
    txn: ReadTxn,
    workflow_key: bytes,
    newest: tuple[bytes, dict[str, Any]],
    metadata: Callable[[dict[str, Any]], CheckpointMetadata],
) -> set[int]:
    """The seqs ``prune`` keeps: the newest checkpoint, and the ancestors its delta channels need.

    A ``DeltaChannel`` stores a snapshot only every so many steps and rebuilds its value from
    the ancestors' writes since then; the checkpoint's metadata counts, per channel, the
    supersteps since that snapshot (``counters_since_delta_snapshot``). That many ancestors,
    and the one holding the snapshot, are kept with their writes.
    """
    key, fields = newest
    depth = _delta_depth(metadata(fields["meta"]))
    kept = {seq_of(key)}
    meta = fields["meta"]
    for _ in range(depth):
        parent = _seq(meta.get("parent_checkpoint_id"))
        record = None if parent is None else txn.get(CKPT, checkpoint_key(workflow_key, parent))
        if parent is None or record is None:
            break
        kept.add(parent)
        try:
            meta = _fields(checkpoint_key(workflow_key, parent), record, state=False)["meta"]
        except IntegrityError as exc:
            # Its own parent cannot be read: keep what is known. (With on_corruption="raise"
            # the newest was read already; an ancestor's damage is for verify to report.)
            log.warning("prune: stopping at damaged ancestor %s", exc)
            break
    return kept


def _copy_thread(txn: WriteTxn, source: str, target: str, fallback: bool) -> tuple[int, int]:
    source_prefix = len((source + _SEP).encode())
    plan = [
        (key, encode_workflow_id(target + _SEP + key[source_prefix:].decode()))
        for key in _thread_workflows(txn, source)
    ]  # every target id checked before the first write
    copied = written = 0
    # The copies are made now: stamped with this time, as ``recover`` tells records committed
    # after the last snapshot it could read by their creation time.
    now_ns = time.time_ns()
    for source_key, target_key in plan:
        extras = _copied_extras(txn, source_key, target_key)
        # Read the workflow's records first: a cursor must not walk a table being written.
        for key, record in list(txn.scan(CKPT, *record_bounds(source_key))):
            try:
                _, _, body = records.check(key, record)
            except IntegrityError as exc:
                if not fallback:
                    raise
                log.warning("copy_thread: leaving out damaged %s", exc)
                continue
            written += put_at(txn, target_key, seq_of(key), bytes(body), now_ns, extras=extras)
            copied += 1
    return copied, written


def _copied_extras(txn: ReadTxn, source_key: bytes, target_key: bytes) -> dict[str, object]:
    """The saver's fields of the source workflow's entry, for the copy's.

    The retention fields and the parent of the newest checkpoint; a writes workflow follows the
    target thread's checkpoints.
    """
    raw = txn.get(WF, source_key)
    extras = {} if raw is None else WorkflowEntry.decode(source_key, raw).extras
    copied: dict[str, object] = {
        name: extras[name] for name in (RETENTION_KEEP, _PARENT) if name in extras
    }
    if RETENTION_FOLLOWS in extras:
        copied[RETENTION_FOLLOWS] = workflow_id_of(target_key.removesuffix(_WRITES.encode()))
    return copied


# -- the saver --------------------------------------------------------------------------------


class LmdbSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer that keeps its checkpoints in a ``CheckpointStore``.

    Pass it as ``builder.compile(checkpointer=saver)``. Every method of LangGraph's
    ``BaseCheckpointSaver`` is implemented, sync and async; the async ones run the sync ones in
    the saver's thread pool, so the event loop never waits for a flush, and with the store's
    ``durability="group"`` concurrent puts share one commit.

    Args:
        store: the store to keep checkpoints in; it stays open when the saver closes.
            ``LmdbSaver.from_path`` opens (and closes) one instead.
        serde: how channel values, checkpoints and pending writes are serialised; LangGraph's
            default when None (an ``EncryptedSerializer`` encrypts them).
        on_corruption: what to do when the newest checkpoint of a thread is damaged:
            ``"fallback"`` logs a warning and returns the newest intact checkpoint before it
            (the graph runs that step again); ``"raise"`` raises ``IntegrityError``. A request
            for one checkpoint by id raises for a damaged one either way.

    Raises:
        InvalidInputError: a bad ``on_corruption``.
    """

    def __init__(
        self,
        store: CheckpointStore,
        *,
        serde: SerializerProtocol | None = None,
        on_corruption: OnCorruption = "fallback",
    ) -> None:
        super().__init__(serde=serde)
        if on_corruption not in ON_CORRUPTION:
            raise InvalidInputError(
                f"on_corruption must be one of {', '.join(ON_CORRUPTION)}, not {on_corruption!r}"
            )
        self.store = store
        self.on_corruption: OnCorruption = on_corruption
        self._fallback = on_corruption == "fallback"
        self._owns_store = False
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="lmdbstate-langgraph")

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "group",
        serde: SerializerProtocol | None = None,
        on_corruption: OnCorruption = "fallback",
        **store_options: Any,
    ) -> LmdbSaver:
        """A saver over a store it opens at ``path``, and closes with itself.

        Use it as ``with LmdbSaver.from_path("checkpoints") as saver:`` (or ``async with``).

        Args:
            path: the store's directory (or a ``postgresql://`` URL); created when missing.
            durability: the store's durability; ``"group"`` by default (every put durable when
                it returns, concurrent puts sharing a commit).
            serde: as for ``LmdbSaver``.
            on_corruption: as for ``LmdbSaver``.
            **store_options: further keyword arguments of ``CheckpointStore``.

        Raises:
            ConfigError: a bad store option.
            StoreError: as ``CheckpointStore`` raises on open.
        """
        store = CheckpointStore(path, durability=durability, **store_options)
        try:
            saver = cls(store, serde=serde, on_corruption=on_corruption)
        except BaseException:
            store.close()
            raise
        saver._owns_store = True
        return saver

    def close(self) -> None:
        """Stop the thread pool, and close the store when ``from_path`` opened it. Idempotent."""
        self._executor.shutdown(wait=True)
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> LmdbSaver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> LmdbSaver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # -- decoding -----------------------------------------------------------------------------

    def _metadata(self, meta: dict[str, Any]) -> CheckpointMetadata:
        typed = meta.get("metadata_typed")
        if typed is not None:
            loaded: CheckpointMetadata = self.serde.loads_typed((typed[0], typed[1]))
            return loaded
        return cast(CheckpointMetadata, meta.get("metadata") or {})

    def _pending_writes(
        self, key: bytes, writes: bytes | None, checkpoint_id: str, *, fallback: bool
    ) -> list[PendingWrite]:
        if writes is None:
            return []
        writes_key = checkpoint_key(split_checkpoint_key(key)[0] + _WRITES.encode(), seq_of(key))
        try:
            entries = _writes_entries(writes_key, writes, checkpoint_id)
        except IntegrityError as exc:
            if not fallback:
                raise
            log.warning("%s; its tasks run again", exc)
            return []
        entries.sort(key=lambda entry: writes_sort_key(entry[5], entry[0], entry[1]))
        return [
            (task_id, channel, self.serde.loads_typed((kind, data)))
            for task_id, _, channel, kind, data, _ in entries
        ]

    def _tuple(
        self,
        thread_id: str,
        checkpoint_ns: str,
        found: _Found,
        *,
        fallback: bool,
        metadata: CheckpointMetadata | None = None,
    ) -> CheckpointTuple:
        key, fields, writes = found
        meta = fields["meta"]
        state = fields["state"]
        checkpoint: Checkpoint = self.serde.loads_typed((state[0], state[1]))
        checkpoint_id: str = meta["checkpoint_id"]
        parent_id = meta.get("parent_checkpoint_id")
        return CheckpointTuple(
            config=_config(thread_id, checkpoint_ns, checkpoint_id),
            checkpoint=checkpoint,
            metadata=self._metadata(meta) if metadata is None else metadata,
            parent_config=(
                _config(thread_id, checkpoint_ns, parent_id) if parent_id is not None else None
            ),
            pending_writes=self._pending_writes(key, writes, checkpoint_id, fallback=fallback),
        )

    # -- the interface ------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread-namespace's newest one.

        Returns:
            The checkpoint with its pending writes (in ``writes_sort_key`` order), or None when
            there is no such checkpoint.

        Raises:
            IntegrityError: the checkpoint asked for by id is damaged; or the newest one is,
                and ``on_corruption`` is ``"raise"`` (or every checkpoint of the thread is).
            InvalidInputError: a thread id or namespace holding U+001F.
        """
        thread_id, checkpoint_ns = _thread_ns(config)
        checkpoint_wf, writes_wf = _workflow_keys(thread_id, checkpoint_ns)
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            seq = _seq(checkpoint_id)
            if seq is None:
                return None
            found = self.store._read_txn(_read_at, checkpoint_wf, writes_wf, seq)
            if found is None or found[1]["meta"]["checkpoint_id"] != checkpoint_id:
                return None
            return self._tuple(thread_id, checkpoint_ns, found, fallback=False)
        newest, damaged = self.store._read_txn(
            _read_newest, checkpoint_wf, writes_wf, self._fallback
        )
        if newest is None:
            return None
        if damaged:
            log.warning(
                "thread %r (namespace %r): checkpoints %s are damaged; falling back to %s",
                thread_id, checkpoint_ns, ", ".join(str(exc.seq) for exc in damaged),
                newest[1]["meta"]["checkpoint_id"],
            )  # fmt: skip
        return self._tuple(thread_id, checkpoint_ns, newest, fallback=self._fallback)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the interface's name
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of a thread-namespace, a thread, or the whole store.

        Checkpoints come newest first by checkpoint id: a thread's namespaces merged, and with
        no thread, each thread's in turn, in key order. Records are read in short
        transactions; a checkpoint's state is decoded only when it is returned, and with
        ``filter`` only the metadata of those that do not match is.

        Args:
            config: the thread (and namespace, when its ``checkpoint_ns`` is given; and one
                checkpoint, when its ``checkpoint_id`` is); None lists every thread.
            filter: metadata fields a checkpoint must have, with these values.
            before: only checkpoints older than this one.
            limit: at most this many checkpoints.

        Raises:
            IntegrityError: (from the iterator) a damaged checkpoint, when ``on_corruption``
                is ``"raise"``; with ``"fallback"`` it is skipped with a warning.
            InvalidInputError: a thread id or namespace holding U+001F, or a ``before`` id
                that is not a UUID.
        """
        before_seq = None
        if before is not None and (before_id := get_checkpoint_id(before)):
            before_seq = _required_seq(before_id)
        if limit is not None and limit <= 0:
            return iter(())
        found = self._list(config, filter or {}, before_seq)
        return found if limit is None else islice(found, limit)

    def _list(
        self, config: RunnableConfig | None, filter: dict[str, Any], before_seq: int | None
    ) -> Iterator[CheckpointTuple]:
        if config is None:
            namespaces = self._namespaces(b"", None)
        else:
            thread_id, checkpoint_ns = _thread_ns(config)
            any_ns = config["configurable"].get("checkpoint_ns") is None
            if (checkpoint_id := get_checkpoint_id(config)) is not None:
                yield from self._list_one(
                    thread_id, None if any_ns else checkpoint_ns, checkpoint_id, filter, before_seq
                )
                return
            if not any_ns:
                for _, build in self._list_namespace(thread_id, checkpoint_ns, filter, before_seq):
                    yield build()
                return
            namespaces = self._namespaces(*_thread_bounds(thread_id))
        # A thread's namespaces (its subgraphs) are few: each thread's are merged newest first
        # by checkpoint id, on the ids alone; only the checkpoint taken is decoded. Threads come
        # in turn, in key order.
        for _, of_thread in groupby(namespaces, key=lambda pair: pair[0]):
            listed = [
                self._list_namespace(thread, ns, filter, before_seq) for thread, ns in of_thread
            ]
            for _, build in heapq.merge(*listed, key=_newest_first):
                yield build()

    def _namespaces(self, low: bytes, high: bytes | None) -> Iterator[tuple[str, str]]:
        """Every (thread id, namespace) holding checkpoints in the ``wf`` key range."""
        while True:
            keys = self.store._read_txn(_workflow_keys_in, low, high)
            for key in keys:
                parts = workflow_id_of(key).split(_SEP)
                if len(parts) == 2:  # not a writes workflow, nor a workflow of another kind
                    yield parts[0], parts[1]
            if len(keys) < _WF_CHUNK:
                return
            low = keys[-1] + b"\x00"

    def _matching(
        self, fields: dict[str, Any], filter: dict[str, Any]
    ) -> CheckpointMetadata | None:
        metadata = self._metadata(fields["meta"])
        return metadata if all(metadata.get(k) == v for k, v in filter.items()) else None

    def _list_one(
        self,
        thread_id: str,
        checkpoint_ns: str | None,
        checkpoint_id: str,
        filter: dict[str, Any],
        before_seq: int | None,
    ) -> Iterator[CheckpointTuple]:
        """The checkpoint the config names, if it passes ``before`` and ``filter``.

        Looked for in every namespace of the thread when the config names none.
        """
        seq = _seq(checkpoint_id)
        if seq is None or (before_seq is not None and seq >= before_seq):
            return
        if checkpoint_ns is None:
            namespaces = [ns for _, ns in self._namespaces(*_thread_bounds(thread_id))]
        else:
            namespaces = [checkpoint_ns]
        for namespace in namespaces:
            try:
                found = self.get_tuple(_config(thread_id, namespace, checkpoint_id))
            except IntegrityError as exc:
                if not self._fallback:
                    raise
                log.warning("%s; left out of the list", exc)
                continue
            if found is not None and all(found.metadata.get(k) == v for k, v in filter.items()):
                yield found

    def _list_namespace(
        self, thread_id: str, checkpoint_ns: str, filter: dict[str, Any], before_seq: int | None
    ) -> Iterator[tuple[int, Callable[[], CheckpointTuple]]]:
        """The namespace's checkpoints newest first, as (seq, a function that decodes it).

        Pages grow from 1 record to ``_CHUNK``, so that a short listing reads little more than
        it returns; a checkpoint's state is decoded only when the caller asks for it.
        """
        checkpoint_wf, writes_wf = _workflow_keys(thread_id, checkpoint_ns)
        low, high = record_bounds(checkpoint_wf)
        if before_seq is not None:
            high = checkpoint_key(checkpoint_wf, before_seq)
        size = 1
        while True:
            page = self.store._read_txn(_read_page, writes_wf, low, high, size)
            for key, record, writes in page:
                try:
                    fields = _fields(key, record, state=not filter)
                except IntegrityError as exc:
                    if not self._fallback:
                        raise
                    log.warning("%s; left out of the list", exc)
                    continue
                metadata = None
                if filter:
                    metadata = self._matching(fields, filter)
                    if metadata is None:
                        continue
                build = functools.partial(
                    self._listed, thread_id, checkpoint_ns, key, record, writes, fields, metadata,
                    decoded=not filter,
                )  # fmt: skip
                yield seq_of(key), build
            if len(page) < size:
                return
            high = page[-1][0]
            size = min(size * 2, _CHUNK)

    def _listed(
        self,
        thread_id: str,
        checkpoint_ns: str,
        key: bytes,
        record: bytes,
        writes: bytes | None,
        fields: dict[str, Any],
        metadata: CheckpointMetadata | None,
        *,
        decoded: bool,
    ) -> CheckpointTuple:
        """A listed checkpoint as a tuple; its state decoded now unless it was already."""
        if not decoded:
            fields = _fields(key, record)
        return self._tuple(
            thread_id, checkpoint_ns, (key, fields, writes),
            fallback=self._fallback, metadata=metadata,
        )  # fmt: skip

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint; durable when it returns (with a ``sync`` or ``group`` store).

        The checkpoint is serialised whole with ``serde``, so every record holds a complete
        state (``new_versions`` is not needed). A checkpoint stored before under the same id is
        replaced.

        Returns:
            The config naming the checkpoint stored.

        Raises:
            InvalidInputError: a thread id or namespace holding U+001F, or a checkpoint id
                that is not a UUID.
            SequenceConflictError: another checkpoint of the thread-namespace has an id with
                the same first 64 bits.
            StoreError: as ``CheckpointStore.put`` raises.
        """
        thread_id, checkpoint_ns = _thread_ns(config)
        checkpoint_wf, _ = _workflow_keys(thread_id, checkpoint_ns)
        stored_metadata = get_serializable_checkpoint_metadata(config, metadata)
        step = stored_metadata.get("step")
        meta: dict[str, Any] = {
            "checkpoint_id": checkpoint["id"],
            "parent_checkpoint_id": config["configurable"].get("checkpoint_id"),
            "metadata": stored_metadata,
        }
        state = list(self.serde.dumps_typed(checkpoint))
        try:
            body = records.encode_body(state, step if type(step) is int else None, 1, meta)
        except CodecError:  # metadata plain msgpack cannot carry: serde serialises it instead
            meta["metadata"] = None
            meta["metadata_typed"] = list(self.serde.dumps_typed(stored_metadata))
            body = records.encode_body(state, step if type(step) is int else None, 1, meta)
        parent = _seq(config["configurable"].get("checkpoint_id"))
        pending = _Pending(
            checkpoint_wf, checkpoint["id"], body, _delta_depth(stored_metadata) + 1, parent
        )
        self.store._write_txn(pending.apply)
        return _config(thread_id, checkpoint_ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store pending writes of a task for the checkpoint ``config`` names.

        A write to a special channel (error, interrupt, resume, scheduled) replaces the task's
        earlier one; an ordinary write is stored only when the task has none at its index yet.

        Raises:
            InvalidInputError: a thread id or namespace holding U+001F, or a checkpoint id
                that is not a UUID.
            IntegrityError: the checkpoint's stored writes are damaged, and ``on_corruption``
                is ``"raise"`` (with ``"fallback"`` they are replaced, with a warning).
            SequenceConflictError: as ``put``.
        """
        thread_id, checkpoint_ns = _thread_ns(config)
        _, writes_wf = _workflow_keys(thread_id, checkpoint_ns)
        checkpoint_id = config["configurable"]["checkpoint_id"]
        seq = _required_seq(checkpoint_id)
        entries: list[_Entry] = [
            [task_id, WRITES_IDX_MAP.get(channel, index), channel, *self.serde.dumps_typed(value),
             task_path]
            for index, (channel, value) in enumerate(writes)
        ]  # fmt: skip
        self.store._write_txn(
            functools.partial(
                _merge_writes, workflow_key=writes_wf, seq=seq, checkpoint_id=checkpoint_id,
                new=entries, fallback=self._fallback,
            )
        )  # fmt: skip

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and pending write of a thread, in every namespace.

        Raises:
            InvalidInputError: a thread id holding U+001F.
        """
        thread = _part(thread_id, "thread_id")
        self.store._write_txn(functools.partial(_delete_threads, thread_ids=[thread]), group=False)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their pending writes) whose metadata names these runs.

        Reads the metadata of every checkpoint in the store, a thread-namespace per read
        transaction, and deletes each thread-namespace's matches in a write transaction of its
        own, so that writers are never held up for the whole scan. A checkpoint of these runs
        written while the scan is under way may be left.

        Raises:
            IntegrityError: a damaged checkpoint, when ``on_corruption`` is ``"raise"``.
        """
        if not run_ids:
            return
        wanted = frozenset(run_ids)
        for thread_id, checkpoint_ns in self._namespaces(b"", None):
            checkpoints, writes = _workflow_keys(thread_id, checkpoint_ns)
            doomed = self.store._read_txn(self._run_seqs, checkpoints, wanted)
            if doomed:
                delete = functools.partial(self._delete_run_seqs, checkpoints, writes, doomed)
                self.store._write_txn(delete, group=False)

    def _delete_run_seqs(
        self, checkpoints: bytes, writes: bytes, seqs: tuple[int, ...], txn: WriteTxn
    ) -> tuple[int, int]:
        """Delete these checkpoints and their writes.

        The entry's fields that describe the newest checkpoint (retention_keep,
        newest_parent) are then made to describe the new newest.
        """
        deleted, _ = _delete_seqs(txn, (checkpoints, writes), seqs)
        raw = txn.get(WF, checkpoints)
        newest = txn.last(CKPT, *record_bounds(checkpoints))
        if raw is None or newest is None:
            # No checkpoint left: writes of checkpoints never stored would be orphans forever.
            return deleted + delete_workflow(txn, writes), 0
        entry = WorkflowEntry.decode(checkpoints, raw)
        try:
            meta = _fields(*newest, state=False)["meta"]
            keep = _delta_depth(self._metadata(meta)) + 1
        except IntegrityError:
            keep = None  # the newest is damaged: what it needs cannot be read
        parent = _seq(meta.get("parent_checkpoint_id")) if keep is not None else None
        entry.merge_extras({
            RETENTION_KEEP: keep if keep is not None and keep > 1 else None,
            _PARENT: None if parent is None else [seq_of(newest[0]), parent],
        })  # fmt: skip
        txn.put(WF, checkpoints, entry.encode())
        return deleted, 0

    def _run_seqs(
        self, txn: ReadTxn, workflow_key: bytes, run_ids: frozenset[str]
    ) -> tuple[int, ...]:
        """The seqs of the workflow's checkpoints whose metadata names one of ``run_ids``."""
        found = []
        for key, record in txn.scan(CKPT, *record_bounds(workflow_key)):
            try:
                fields = _fields(key, record, state=False)
            except IntegrityError as exc:
                if not self._fallback:
                    raise
                log.warning("delete_for_runs: skipping damaged %s", exc)
                continue
            if self._metadata(fields["meta"]).get("run_id") in run_ids:
                found.append(seq_of(key))
        return tuple(found)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and pending write of a thread to another, in one transaction.

        Records are copied as they are stored (digests are recomputed for their new keys);
        the target's checkpoints with the same ids are replaced.

        Raises:
            InvalidInputError: a thread id holding U+001F.
            InvalidWorkflowIdError: the target's keys would be too long.
            IntegrityError: a damaged source checkpoint, when ``on_corruption`` is ``"raise"``
                (with ``"fallback"`` it is left out, with a warning).
        """
        source = _part(source_thread_id, "thread_id")
        target = _part(target_thread_id, "thread_id")
        self.store._write_txn(
            functools.partial(_copy_thread, source=source, target=target, fallback=self._fallback),
            group=False,
        )

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's newest intact checkpoint of these threads, or delete all.

        Args:
            thread_ids: the threads.
            strategy: ``"keep_latest"``: keep the newest intact checkpoint of each namespace
                with its pending writes; ``"delete"``: delete the threads whole.

        Raises:
            InvalidInputError: an unknown strategy, or a thread id holding U+001F.
        """
        if strategy not in PRUNE_STRATEGIES:
            raise InvalidInputError(
                f"unknown prune strategy {strategy!r}: "
                f"expected one of {', '.join(PRUNE_STRATEGIES)}"
            )
        threads = [_part(thread_id, "thread_id") for thread_id in thread_ids]
        if not threads:
            return
        if strategy == "delete":
            fn = functools.partial(_delete_threads, thread_ids=threads)
        else:
            fn = functools.partial(
                _keep_latest, thread_ids=threads, fallback=self._fallback, metadata=self._metadata
            )
        self.store._write_txn(fn, group=False)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The channel version after ``current``: a sortable string, as LangGraph's savers use."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- async: the same, in the saver's thread pool -------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """As ``get_tuple``, in the saver's thread pool.

        Raises:
            IntegrityError: as ``get_tuple``.
            InvalidInputError: as ``get_tuple``.
        """
        return await self._run(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the interface's name
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """As ``list``; checkpoints are read and decoded in the pool, a few at a time.

        Raises:
            IntegrityError: as ``list``.
            InvalidInputError: as ``list``.
        """
        found = self.list(config, filter=filter, before=before, limit=limit)
        size = 1  # grows to _CHUNK: a caller that stops early has not paid for a whole page
        while True:
            page = await self._run(_take, found, size)
            for item in page:
                yield item
            if len(page) < size:
                return
            size = min(size * 2, _CHUNK)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """As ``put``, in the saver's thread pool: the event loop never waits for the flush.

        Raises:
            InvalidInputError: as ``put``.
            SequenceConflictError: as ``put``.
            StoreError: as ``put``.
        """
        return await self._run(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """As ``put_writes``, in the saver's thread pool.

        Raises:
            InvalidInputError: as ``put_writes``.
            IntegrityError: as ``put_writes``.
        """
        await self._run(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """As ``delete_thread``, in the saver's thread pool.

        Raises:
            InvalidInputError: as ``delete_thread``.
        """
        await self._run(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """As ``delete_for_runs``, in the saver's thread pool.

        Raises:
            IntegrityError: as ``delete_for_runs``.
        """
        await self._run(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """As ``copy_thread``, in the saver's thread pool.

        Raises:
            InvalidInputError: as ``copy_thread``.
            IntegrityError: as ``copy_thread``.
        """
        await self._run(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """As ``prune``, in the saver's thread pool.

        Raises:
            InvalidInputError: as ``prune``.
        """
        await self._run(self.prune, thread_ids, strategy=strategy)


__all__ = ["LmdbSaver", "OnCorruption"]
