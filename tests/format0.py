"""A store format 0 of the tests' own, and its migration to format 1.

lmdbstate has only ever written format 1, so to prove the upgrade path (issue 7) the tests
define a plausible earlier layout, write it with raw py-lmdb (never through lmdbstate), and
register the migration that takes it to format 1.

Format 0, as this module writes it:

- ``meta``: ``format`` = 0, ``created_ns`` and ``created_by``, msgpack-encoded as lmdbstate's
  codec encodes them.
- ``ckpt``: keys as in format 1 (``workflow_id_utf8 + b"\\x00" + seq``, 8 bytes big-endian);
  each record is a 15-byte header ``<2sBQI`` (magic ``b"LS"``, record version 0, xxh64 of the
  body alone, body length) and a msgpack body ``{state, step, schema, meta, saved_ns}``: the
  state first, and the time of the save in the body rather than the header.
- ``wf``: one msgpack map per workflow, ``{status, last_seq, updated_ns}``: no counts, no head,
  no schema, no extras.
- no ``age`` table at all.

The migration (``register_format0_migration``) rewrites every record as format 1 (``created_ns``
is format 0's ``saved_ns``, the body re-encoded in format 1's field order), builds the ``age``
index, and replaces each ``wf`` map by a full format-1 entry computed from the workflow's
records (head, count, bytes and schema from the records present; status, ``last_seq`` and
``updated_ns`` from the map; ``created_ns`` from the oldest record). lmdbstate's own step 1 -> 2
(record format 2) follows. For a step after it, ``register_format2_to_3`` adds a fictional step
2 -> 3; the tests that use it move ``STORE_FORMAT`` to 3 themselves.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import lmdb
import xxhash

from lmdbstate import codec, records
from lmdbstate.index import WorkflowEntry
from lmdbstate.keys import age_key, checkpoint_key, encode_workflow_id, split_checkpoint_key
from lmdbstate.kv import AGE, CKPT, META, WF, WriteTxn
from lmdbstate.migrations import store_migration
from lmdbstate.models import Status

HEADER0 = struct.Struct("<2sBQI")
MAGIC0 = b"LS"
CREATED_BY = "0.0.9-format0"
BASE_NS = 1_700_000_000_000_000_000
"""Saves of the sample stores are this many ns after the epoch, plus a few seconds each."""
MIGRATION_DOC = "Format 0 to 1: format-1 record headers, the age index, full wf entries."


@dataclass(frozen=True)
class Record0:
    """One format-0 checkpoint as the writer stores it."""

    seq: int
    state: Any
    step: str | int | None
    schema: int
    meta: dict[str, Any]
    saved_ns: int


@dataclass(frozen=True)
class Workflow0:
    """One format-0 workflow: its ``wf`` map and the checkpoints present."""

    workflow_id: str
    status: Status
    last_seq: int
    """The highest seq ever given out; above the newest present when that one was deleted."""
    updated_ns: int
    records: tuple[Record0, ...] = field(default=())


# -- the writer -------------------------------------------------------------------------------


def encode_record0(record: Record0) -> bytes:
    """A format-0 record: the 15-byte header, then the body."""
    body = codec.encode(
        {
            "state": record.state,
            "step": record.step,
            "schema": record.schema,
            "meta": record.meta,
            "saved_ns": record.saved_ns,
        }
    )
    return HEADER0.pack(MAGIC0, 0, xxhash.xxh64_intdigest(body), len(body)) + body


def decode_record0(key: bytes, raw: bytes) -> dict[str, Any]:
    """The body of a format-0 record, after checking its header.

    Raises:
        ValueError: the record is not an intact format-0 record.
    """
    if len(raw) < HEADER0.size:
        raise ValueError(f"format-0 record {key!r} is {len(raw)} bytes, shorter than its header")
    magic, version, digest, body_len = HEADER0.unpack_from(raw)
    body = raw[HEADER0.size :]
    if magic != MAGIC0 or version != 0 or body_len != len(body):
        raise ValueError(f"format-0 record {key!r} has a bad header")
    if xxhash.xxh64_intdigest(body) != digest:
        raise ValueError(f"format-0 record {key!r} fails its digest")
    fields: dict[str, Any] = codec.decode(body)
    return fields


def write_store(path: Path, workflows: Iterable[Workflow0], *, map_size: int = 1 << 28) -> None:
    """Create a format-0 store at ``path`` holding ``workflows``, with raw py-lmdb."""
    env = lmdb.open(str(path), map_size=map_size, max_dbs=8, subdir=True)
    try:
        meta = env.open_db(b"meta")
        ckpt = env.open_db(b"ckpt")
        wf = env.open_db(b"wf")
        with env.begin(write=True) as txn:
            txn.put(b"format", codec.encode(0), db=meta)
            txn.put(b"created_ns", codec.encode(BASE_NS), db=meta)
            txn.put(b"created_by", codec.encode(CREATED_BY), db=meta)
            for workflow in workflows:
                workflow_key = encode_workflow_id(workflow.workflow_id)
                entry = {
                    "status": workflow.status,
                    "last_seq": workflow.last_seq,
                    "updated_ns": workflow.updated_ns,
                }
                txn.put(workflow_key, codec.encode(entry), db=wf)
                for record in workflow.records:
                    key = checkpoint_key(workflow_key, record.seq)
                    txn.put(key, encode_record0(record), db=ckpt)
    finally:
        env.close()


def set_meta_format(path: Path, version: int) -> None:
    """Overwrite the ``format`` entry of the store at ``path`` with raw py-lmdb."""
    env = lmdb.open(str(path), max_dbs=8, subdir=True)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"format", codec.encode(version), db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()


def dump(path: Path) -> dict[str, dict[bytes, bytes]]:
    """Every named table of the store at ``path`` and its items; never writes, not even a lock.

    Also reads a directory holding only ``data.mdb`` (a backup).
    """
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=16, subdir=True)
    try:
        tables: dict[str, dict[bytes, bytes]] = {}
        with env.begin() as txn:
            names = [bytes(name) for name, _ in txn.cursor()]
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                tables[name.decode()] = {bytes(k): bytes(v) for k, v in txn.cursor(db)}
        return tables
    finally:
        env.close()


def meta_value(tables: dict[str, dict[bytes, bytes]], name: bytes) -> Any:
    """A ``meta`` entry of a ``dump``, decoded; None when absent."""
    raw = tables["meta"].get(name)
    return None if raw is None else codec.decode(raw)


# -- the migration ----------------------------------------------------------------------------


def register_format0_migration(
    on_record: Callable[[int, int], None] | None = None,
) -> Callable[[WriteTxn], None]:
    """Register the 0 -> 1 migration; returns the registered function.

    Args:
        on_record: called as ``on_record(index, total)`` after each record is rewritten,
            inside the write transaction: the tests sleep, print or raise there.
    """

    def format0_to_1(txn: WriteTxn) -> None:
        # Materialised first: a cursor must not walk a table that is being rewritten.
        items = [(bytes(key), bytes(raw)) for key, raw in txn.scan(CKPT)]
        stats: dict[bytes, list[tuple[int, int, int, int]]] = {}
        for index, (key, raw) in enumerate(items):
            fields = decode_record0(key, raw)
            body = records.encode_body(
                fields["state"], fields["step"], fields["schema"], fields["meta"]
            )
            created_ns = fields["saved_ns"]
            record = records.build(key, body, created_ns)
            txn.put(CKPT, key, record)
            txn.put(AGE, age_key(created_ns, key), b"")
            workflow_key, seq = split_checkpoint_key(key)
            stats.setdefault(workflow_key, []).append(
                (seq, len(record), created_ns, fields["schema"])
            )
            if on_record is not None:
                on_record(index, len(items))
        entries = [(bytes(key), bytes(raw)) for key, raw in txn.scan(WF)]
        for workflow_key, raw in entries:
            old = codec.decode(raw)
            present = sorted(stats.pop(workflow_key, []))
            entry = WorkflowEntry(
                min((created for _, _, created, _ in present), default=old["updated_ns"])
            )
            entry.status = old["status"]
            entry.updated_ns = old["updated_ns"]
            entry.last_seq = old["last_seq"]
            entry.head_seq = present[-1][0] if present else 0
            entry.count = len(present)
            entry.bytes = sum(size for _, size, _, _ in present)
            entry.schema = present[-1][3] if present else 1
            txn.put(WF, workflow_key, entry.encode())
        if stats:
            orphans = sorted(key.decode("utf-8", "replace") for key in stats)
            raise ValueError(f"checkpoints without a wf entry: {orphans}")

    format0_to_1.__doc__ = MIGRATION_DOC
    return store_migration(from_version=0)(format0_to_1)


def register_format2_to_3(on_record: Callable[[int, int], None] | None = None) -> list[int]:
    """Register a (fictional) step 2 -> 3 that counts the records into ``meta``; returns calls.

    For a step after lmdbstate's own: it has no format 3, so the tests move ``STORE_FORMAT``.
    """
    calls: list[int] = []

    @store_migration(from_version=2)
    def format2_to_3(txn: WriteTxn) -> None:
        """Format 2 to 3: records how many checkpoints the store holds."""
        calls.append(1)
        total = txn.count(CKPT)
        for index in range(total):
            txn.put(META, b"format3_seen", codec.encode(index + 1))
            if on_record is not None:
                on_record(index, total)
        txn.put(META, b"format3_records", codec.encode(total))

    return calls


# -- sample content ---------------------------------------------------------------------------


def _ns(seconds: float) -> int:
    return BASE_NS + int(seconds * 1e9)


def sample_workflows() -> list[Workflow0]:
    """A small format-0 store's content: several workflows, statuses and value types.

    ``etl-1`` had its newest checkpoint (seq 4) deleted, so it gave out one seq more than it
    holds; ``report`` had seq 2 deleted; ``empty`` holds no checkpoint at all; ``big`` holds a
    record spanning several pages.
    """
    paris = dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET"))
    rich_state = {
        "tuple": (1, "two", 3.5),
        "set": {1, 2, 3},
        "frozen": frozenset({"a", "b"}),
        "when": paris,
        "day": dt.date(2024, 2, 29),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "amount": Decimal("12.50"),
        "blob": b"\x00\xffbytes",
        "nested": [{"k": None, "t": True}],
    }
    return [
        Workflow0(
            "etl-1",
            "running",
            last_seq=4,
            updated_ns=_ns(40),
            records=(
                Record0(1, {"rows": 0}, None, 1, {"trigger": "start"}, _ns(1)),
                Record0(2, {"rows": 10}, "extract", 1, {}, _ns(2)),
                Record0(3, rich_state, "transform", 2, {"note": "rich"}, _ns(3)),
            ),
        ),
        Workflow0(
            "report",
            "completed",
            last_seq=3,
            updated_ns=_ns(30),
            records=(
                Record0(1, ["a"], 0, 1, {}, _ns(10)),
                Record0(3, ["a", "b", "c"], 2, 1, {"final": True}, _ns(12)),
            ),
        ),
        Workflow0("empty", "failed", last_seq=2, updated_ns=_ns(50)),
        Workflow0(
            "big",
            "cancelled",
            last_seq=1,
            updated_ns=_ns(60),
            records=(Record0(1, {"pad": b"x" * 20_000}, "load", 3, {}, _ns(20)),),
        ),
        Workflow0(
            "données-α",
            "running",
            last_seq=1,
            updated_ns=_ns(70),
            records=(Record0(1, {"ok": "é"}, "s", 1, {}, _ns(25)),),
        ),
    ]


def sizeable_workflows(workflows: int, per_workflow: int, pad: int) -> list[Workflow0]:
    """Many workflows of many checkpoints, each state holding ``pad`` bytes."""
    result = []
    for number in range(workflows):
        records0 = tuple(
            Record0(
                seq,
                {"wf": number, "seq": seq, "pad": bytes([seq % 251]) * pad},
                f"step-{seq}",
                1,
                {"n": seq},
                _ns(number * 1000 + seq),
            )
            for seq in range(1, per_workflow + 1)
        )
        result.append(
            Workflow0(
                f"wf-{number:03d}",
                "running",
                last_seq=per_workflow,
                updated_ns=_ns(number * 1000 + per_workflow),
                records=records0,
            )
        )
    return result
