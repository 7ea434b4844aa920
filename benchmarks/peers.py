"""The stores lmdbstate is compared with, each behind the same small interface.

Every peer keeps checkpoints keyed by (workflow id, seq), seq counting from 1 per workflow, and
is opened on a directory of its own. ``put`` saves a state as the workflow's next checkpoint;
readers also have ``latest`` (the newest checkpoint, decoded) and listers ``history`` (the
workflow's checkpoints in seq order, without decoding states where the peer can avoid it).
``lmdbstate.CheckpointStore`` itself has this interface.

The optional peers (LangGraph's SqliteSaver, diskcache) are imported when opened, so that the
rest runs without them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import lmdb
import msgpack
import xxhash

MAP_SIZE = 1 << 30  # lmdbstate's default initial map


class Peer(Protocol):
    """A store that takes checkpoints."""

    def put(self, workflow_id: str, state: Any) -> object: ...

    def close(self) -> None: ...


@runtime_checkable
class Reader(Protocol):
    """A store that returns a workflow's newest checkpoint."""

    def latest(self, workflow_id: str) -> object: ...


@runtime_checkable
class Lister(Protocol):
    """A store that lists a workflow's checkpoints in seq order."""

    def history(self, workflow_id: str) -> Iterable[object]: ...


def checkpoint_key(workflow_id: str, seq: int) -> bytes:
    """lmdbstate's key layout: the id, a NUL, the seq as 8 big-endian bytes."""
    return workflow_id.encode() + b"\x00" + seq.to_bytes(8, "big")


class _Sequences:
    """The next seq of each workflow, kept in memory by peers that have no index to read it from."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def next(self, workflow_id: str) -> int:
        seq = self._last.get(workflow_id, 0) + 1
        self._last[workflow_id] = seq
        return seq


class BareStore:
    """Checkpoints by hand on py-lmdb: msgpack, an xxh3 digest, one put per commit.

    The lower bound of what lmdbstate can cost: one named db, no validation, no header.
    ``put_indexed`` also maintains ``wf`` and ``age`` index dbs as lmdbstate's put does.
    """

    put: Callable[[str, object], None]
    """``put_plain``, or ``put_indexed`` when opened with ``indexed=True``."""

    def __init__(self, path: Path, *, sync: bool, indexed: bool = False) -> None:
        self.env = lmdb.open(
            str(path), map_size=MAP_SIZE, max_dbs=3, sync=sync, metasync=True, writemap=False
        )
        self.ckpt = self.env.open_db(b"ckpt")
        self.wf = self.env.open_db(b"wf")
        self.age = self.env.open_db(b"age")
        self.seqs = _Sequences()
        self.put = self.put_indexed if indexed else self.put_plain

    def put_plain(self, workflow_id: str, state: object) -> None:
        key = checkpoint_key(workflow_id, self.seqs.next(workflow_id))
        body = msgpack.packb(state)
        digest = xxhash.xxh3_64_intdigest(key + body)
        with self.env.begin(write=True, db=self.ckpt) as txn:
            txn.put(key, digest.to_bytes(8, "little") + body)

    def put_indexed(self, workflow_id: str, state: object) -> None:
        workflow_key = workflow_id.encode()
        body = msgpack.packb(state)
        now = time.time_ns()
        with self.env.begin(write=True) as txn:
            raw = txn.get(workflow_key, db=self.wf)
            entry: dict[str, Any] = (
                {"status": "running", "created_ns": now, "last_seq": 0, "count": 0, "bytes": 0}
                if raw is None
                else msgpack.unpackb(raw)
            )
            seq = entry["last_seq"] + 1
            key = checkpoint_key(workflow_id, seq)
            value = xxhash.xxh3_64_intdigest(key + body).to_bytes(8, "little") + body
            txn.put(key, value, db=self.ckpt)
            txn.put(now.to_bytes(8, "big") + key, b"", db=self.age)
            entry.update(
                updated_ns=now,
                head_seq=seq,
                last_seq=seq,
                count=entry["count"] + 1,
                bytes=entry["bytes"] + len(value),
                schema=1,
            )
            txn.put(workflow_key, msgpack.packb(entry), db=self.wf)

    @staticmethod
    def _checked_body(key: bytes, value: bytes) -> bytes:
        body = value[8:]
        if xxhash.xxh3_64_intdigest(key + body) != int.from_bytes(value[:8], "little"):
            raise ValueError(f"digest mismatch under {key!r}")
        return body

    def latest(self, workflow_id: str) -> object:
        workflow_key = workflow_id.encode()
        with self.env.begin(db=self.ckpt) as txn:
            cursor = txn.cursor()
            found = cursor.prev() if cursor.set_range(workflow_key + b"\x01") else cursor.last()
            key = cursor.key()
            if not found or not key.startswith(workflow_key + b"\x00"):
                return None
            return msgpack.unpackb(self._checked_body(key, cursor.value()))

    def history(self, workflow_id: str) -> Iterator[tuple[int, int]]:
        """(seq, record size) of each checkpoint, each digest checked; one read transaction."""
        prefix = workflow_id.encode() + b"\x00"
        with self.env.begin(db=self.ckpt) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(prefix):
                return
            for key, value in cursor:
                if not key.startswith(prefix):
                    return
                self._checked_body(key, value)
                yield int.from_bytes(key[-8:], "big"), len(value)

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()


class AppendLog:
    """The flush limit: each checkpoint (msgpack, xxh3) appended to one file, then fdatasync."""

    def __init__(self, path: Path) -> None:
        path.mkdir()
        self._file = open(path / "checkpoints.log", "ab")  # noqa: SIM115 - closed by close()
        self._seqs = _Sequences()

    def put(self, workflow_id: str, state: object) -> None:
        key = checkpoint_key(workflow_id, self._seqs.next(workflow_id))
        body = msgpack.packb(state)
        digest = xxhash.xxh3_64_intdigest(key + body)
        header = len(key).to_bytes(2, "little") + len(body).to_bytes(4, "little")
        self._file.write(b"".join((header, key, digest.to_bytes(8, "little"), body)))
        self._file.flush()
        os.fdatasync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonFiles:
    """A JSON file per checkpoint, as the systems lmdbstate replaces keep them.

    ``<dir>/<workflow>/<seq:012d>.json``, written crash-safely: write a temporary file, fsync
    it, rename it into place, fsync the directory. The newest checkpoint is the greatest name.
    """

    def __init__(self, path: Path) -> None:
        path.mkdir()
        self._root = path
        self._seqs = _Sequences()

    def put(self, workflow_id: str, state: object) -> None:
        directory = self._root / workflow_id
        seq = self._seqs.next(workflow_id)
        if seq == 1:
            directory.mkdir()
            _fsync_directory(self._root)
        document = {"seq": seq, "created_ns": time.time_ns(), "state": state}
        temporary = directory / f".{seq:012d}.json.tmp"
        with open(temporary, "wb") as file:
            file.write(json.dumps(document).encode())
            file.flush()
            os.fsync(file.fileno())
        os.rename(temporary, directory / f"{seq:012d}.json")
        _fsync_directory(directory)

    def _names(self, workflow_id: str) -> list[str]:
        return sorted(n for n in os.listdir(self._root / workflow_id) if n.endswith(".json"))

    def latest(self, workflow_id: str) -> object:
        names = self._names(workflow_id)
        if not names:
            return None
        return json.loads((self._root / workflow_id / names[-1]).read_bytes())

    def history(self, workflow_id: str) -> list[tuple[str, int]]:
        """(file name, size) of each checkpoint, from the directory listing."""
        entries = os.scandir(self._root / workflow_id)
        return sorted((e.name, e.stat().st_size) for e in entries if e.name.endswith(".json"))

    def close(self) -> None:
        """Nothing stays open between calls."""


Synchronous = Literal["FULL", "NORMAL"]


class SqliteTable:
    """SQLite in WAL mode, a table keyed by (workflow, seq) holding msgpack bodies.

    The seq is assigned inside the INSERT (max + 1), as lmdbstate assigns it inside its write
    transaction; each put is its own transaction. ``synchronous=FULL`` syncs the WAL on every
    commit (durable); ``NORMAL`` syncs only at WAL checkpoints (not durable on power loss).
    """

    def __init__(self, path: Path, *, synchronous: Synchronous) -> None:
        path.mkdir()
        self._conn = sqlite3.connect(path / "checkpoints.sqlite", isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute(
            "CREATE TABLE checkpoints (workflow TEXT NOT NULL, seq INTEGER NOT NULL, "
            "created_ns INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (workflow, seq))"
        )

    def put(self, workflow_id: str, state: object) -> None:
        self._conn.execute(
            "INSERT INTO checkpoints VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 "
            "FROM checkpoints WHERE workflow = ?), ?, ?)",
            (workflow_id, workflow_id, time.time_ns(), msgpack.packb(state)),
        )

    def latest(self, workflow_id: str) -> object:
        row = self._conn.execute(
            "SELECT body FROM checkpoints WHERE workflow = ? ORDER BY seq DESC LIMIT 1",
            (workflow_id,),
        ).fetchone()
        return None if row is None else msgpack.unpackb(row[0])

    def history(self, workflow_id: str) -> Iterable[tuple[int, int, int]]:
        """(seq, created_ns, body size) of each checkpoint."""
        return self._conn.execute(
            "SELECT seq, created_ns, length(body) FROM checkpoints WHERE workflow = ? ORDER BY seq",
            (workflow_id,),
        )

    def close(self) -> None:
        self._conn.close()


class LangGraphSaver:
    """LangGraph's SqliteSaver, given checkpoints the way LangGraph's loop gives them.

    Each state becomes a LangGraph checkpoint whose channels are the state's top-level keys,
    with a fresh checkpoint id, new channel versions and the parent checkpoint's id, stored
    through ``SqliteSaver.put``. ``latest`` is ``get_tuple`` and ``history`` is ``list``
    (which decodes every checkpoint: the saver has no listing without states). The
    connection's ``synchronous`` is set to FULL, SQLite's default, so that it is certain.
    """

    def __init__(self, path: Path) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        path.mkdir()
        self._conn = sqlite3.connect(path / "checkpoints.sqlite", check_same_thread=False)
        self._conn.execute("PRAGMA synchronous=FULL")
        self._saver = SqliteSaver(self._conn)
        self._steps = _Sequences()
        self._parents: dict[str, str] = {}

    @staticmethod
    def _config(workflow_id: str, **extra: str) -> Any:
        return {"configurable": {"thread_id": workflow_id, "checkpoint_ns": "", **extra}}

    def put(self, workflow_id: str, state: dict[str, Any]) -> None:
        from langgraph.checkpoint.base import create_checkpoint

        step = self._steps.next(workflow_id)
        parent = self._parents.get(workflow_id)
        version = self._saver.get_next_version(None, None)
        # What create_checkpoint reads of the previous checkpoint; it adds the id and time.
        previous: Any = {
            "channel_values": state,
            "channel_versions": dict.fromkeys(state, version),
            "versions_seen": {},
            "pending_sends": [],
        }
        checkpoint = create_checkpoint(previous, None, step)
        config = (
            self._config(workflow_id)
            if parent is None
            else self._config(workflow_id, checkpoint_id=parent)
        )
        metadata: Any = {"source": "loop", "step": step, "parents": {}}
        self._saver.put(config, checkpoint, metadata, checkpoint["channel_versions"])
        self._parents[workflow_id] = checkpoint["id"]

    def latest(self, workflow_id: str) -> object:
        return self._saver.get_tuple(self._config(workflow_id))

    def history(self, workflow_id: str) -> Iterator[object]:
        return self._saver.list(self._config(workflow_id))

    def close(self) -> None:
        self._conn.close()


class DiskCache:
    """diskcache's Cache (its defaults: SQLite WAL, synchronous=NORMAL, pickled values).

    Eviction is off (a checkpoint store must not drop checkpoints). Each put writes the
    checkpoint under ``(workflow, seq)`` and the workflow's head seq in one transaction;
    ``latest`` reads the head, then the checkpoint. diskcache has no ordered listing, so no
    ``history``.
    """

    def __init__(self, path: Path) -> None:
        import diskcache  # type: ignore[import-untyped]

        self._cache = diskcache.Cache(str(path), eviction_policy="none")
        self._seqs = _Sequences()

    def put(self, workflow_id: str, state: object) -> None:
        seq = self._seqs.next(workflow_id)
        with self._cache.transact():
            self._cache.set((workflow_id, seq), state)
            self._cache.set((workflow_id, "head"), seq)

    def latest(self, workflow_id: str) -> object:
        seq = self._cache.get((workflow_id, "head"))
        return None if seq is None else self._cache.get((workflow_id, seq))

    def close(self) -> None:
        self._cache.close()
