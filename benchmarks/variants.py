"""The registry of what is measured: put variants (with their durability class) and readers.

A variant that needs something absent says why in ``missing()``: an optional peer that is not
installed. Such a variant is reported as skipped, never replaced by something else.
"""

from __future__ import annotations

import asyncio
import importlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

from lmdbstate import AsyncCheckpointStore, CheckpointStore
from lmdbstate.models import Durability

from .peers import AppendLog, BareStore, DiskCache, JsonFiles, LangGraphSaver, Peer, SqliteTable
from .states import State
from .timing import AsyncOp, Driver, Op, Session, serial, tasks, threads

LMDBSTATE_SYNC = "lmdbstate sync"
LMDBSTATE_ASYNC = "lmdbstate async"
LMDBSTATE = "lmdbstate"
BARE_SYNC = "bare lmdb sync"
BARE_ASYNC = "bare lmdb no sync"
BARE = "bare lmdb"
SQLITE_FULL = "SQLite WAL FULL"
SAVER = "LangGraph SqliteSaver"


def group_name(writers: int) -> str:
    return f"lmdbstate group, {writers} writer{'' if writers == 1 else 's'}"


def workflow_ids(count: int) -> tuple[str, ...]:
    return tuple(f"wf-{index:03d}" for index in range(count))


WORKFLOWS = workflow_ids(8)
"""Single-writer puts cycle through these; writer i of many writes ``workflow_ids(n)[i]``."""

Requirement = Callable[[], str | None]
"""Says why a variant cannot run here, or None when it can."""


def installed(module: str, package: str) -> Requirement:
    def check() -> str | None:
        try:
            importlib.import_module(module)
        except ImportError:
            return f"{package} is not installed (pip install -e '.[bench]')"
        return None

    return check


LANGGRAPH = installed("langgraph.checkpoint.sqlite", "langgraph-checkpoint-sqlite")
DISKCACHE = installed("diskcache", "diskcache")


def _reasons(requires: Sequence[Requirement]) -> str | None:
    reasons = [reason for check in requires if (reason := check()) is not None]
    return "; ".join(reasons) if reasons else None


# -- operations -------------------------------------------------------------------------------


def cycling(
    fn: Callable[[str, Any], object], states: Sequence[State], workflows: Sequence[str] = WORKFLOWS
) -> Op:
    """Operation i: ``fn(workflow, state)``, cycling through workflows and states."""

    def op(index: int) -> object:
        return fn(workflows[index % len(workflows)], states[index % len(states)])

    return op


def reading(fn: Callable[[str], object], workflows: Sequence[str]) -> Op:
    """Operation i: ``fn(workflow)``, cycling through workflows; a miss is an error."""

    def op(index: int) -> object:
        found = fn(workflows[index % len(workflows)])
        if found is None:
            raise RuntimeError("a workflow that was written has no checkpoint")
        return found

    return op


def listing(fn: Callable[[str], Iterable[object]], workflows: Sequence[str], expected: int) -> Op:
    """Operation i: go through ``fn(workflow)`` to the end, cycling through workflows."""

    def op(index: int) -> object:
        count = sum(1 for _ in fn(workflows[index % len(workflows)]))
        if count != expected:
            raise RuntimeError(f"listed {count} checkpoints of a workflow that has {expected}")
        return count

    return op


# -- put variants -----------------------------------------------------------------------------

PutSession = Callable[[Path, Sequence[State]], AbstractContextManager[Driver]]
"""Opens a fresh store of the variant at a path and yields the driver of its puts."""
AsyncPut = Callable[[str, State], Awaitable[object]]


def lmdbstate_at(durability: str) -> Callable[[Path], CheckpointStore]:
    """Opens lmdbstate with a durability given by name."""
    mode = cast(Durability, durability)
    return lambda path: CheckpointStore(path, durability=mode)


def fresh(root: Path, session: PutSession, states: Sequence[State]) -> Session:
    """Each time it is opened, ``session`` on a new temporary directory under ``root``."""

    @contextmanager
    def open_fresh() -> Iterator[Driver]:
        with (
            tempfile.TemporaryDirectory(dir=root) as tmp,
            session(Path(tmp) / "store", states) as drive,
        ):
            yield drive

    return open_fresh


def single(open_peer: Callable[[Path], Peer]) -> PutSession:
    """One writer cycling through ``WORKFLOWS``."""

    @contextmanager
    def session(path: Path, states: Sequence[State]) -> Iterator[Driver]:
        peer = open_peer(path)
        try:
            yield serial(cycling(peer.put, states))
        finally:
            peer.close()

    return session


def threaded(open_peer: Callable[[Path], Peer], writers: int) -> PutSession:
    """``writers`` threads sharing one store, each writing its own workflow."""

    @contextmanager
    def session(path: Path, states: Sequence[State]) -> Iterator[Driver]:
        peer = open_peer(path)
        try:
            yield threads([cycling(peer.put, states, (wf,)) for wf in workflow_ids(writers)])
        finally:
            peer.close()

    return session


def tasked(open_put: Callable[[Path], AsyncIterator[AsyncPut]], count: int) -> PutSession:
    """``count`` asyncio tasks in one event loop, each writing its own workflow."""
    opener = asynccontextmanager(open_put)

    @contextmanager
    def session(path: Path, states: Sequence[State]) -> Iterator[Driver]:
        @asynccontextmanager
        async def ops() -> AsyncIterator[Sequence[AsyncOp]]:
            async with opener(path) as put:
                yield [cast(AsyncOp, cycling(put, states, (wf,))) for wf in workflow_ids(count)]

        with tasks(ops) as drive:
            yield drive

    return session


async def _to_thread_put(path: Path) -> AsyncIterator[AsyncPut]:
    """What an asyncio executor can do today: a sync-durable put in a worker thread."""
    with CheckpointStore(path, durability="sync") as store:

        async def put(workflow_id: str, state: State) -> object:
            return await asyncio.to_thread(store.put, workflow_id, state)

        yield put


async def _async_api_put(path: Path) -> AsyncIterator[AsyncPut]:
    async with AsyncCheckpointStore(path, durability="group") as store:
        yield store.put


@dataclass(frozen=True)
class PutVariant:
    name: str
    durable: bool
    """True when every put is on disk (fsync'ed) before it returns."""
    session: PutSession
    note: str
    requires: tuple[Requirement, ...] = ()

    def missing(self) -> str | None:
        return _reasons(self.requires)


def _group(writers: int) -> PutVariant:
    if writers == 1:
        session = single(lmdbstate_at("group"))
        note = "durability='group', one writer"
    else:
        session = threaded(lmdbstate_at("group"), writers)
        note = f"durability='group', {writers} threads, each its own workflow"
    return PutVariant(group_name(writers), True, session, note)


PUTS: tuple[PutVariant, ...] = (
    PutVariant(LMDBSTATE_SYNC, True, single(lmdbstate_at("sync")), "CheckpointStore.put"),
    PutVariant(
        "lmdbstate sync, 16 threads",
        True,
        threaded(lmdbstate_at("sync"), 16),
        "16 threads, each its own workflow, one store: commits are serialised",
    ),
    PutVariant(
        "lmdbstate sync, 16 asyncio tasks",
        True,
        tasked(_to_thread_put, 16),
        "16 tasks awaiting asyncio.to_thread(store.put): an asyncio executor without the async API",
    ),
    _group(1),
    _group(4),
    _group(16),
    PutVariant(
        "lmdbstate async API, group, 16 tasks",
        True,
        tasked(_async_api_put, 16),
        "16 tasks awaiting the async API's put, durability='group'",
    ),
    PutVariant(
        BARE_SYNC,
        True,
        single(partial(BareStore, sync=True)),
        "py-lmdb by hand: msgpack, xxh3 of key + body, one put per commit, no index",
    ),
    PutVariant(
        "append + fdatasync",
        True,
        single(AppendLog),
        "msgpack, xxh3, append to one file, fdatasync: one flush per checkpoint",
    ),
    PutVariant(
        "JSON file + fsync + rename",
        True,
        single(JsonFiles),
        "json.dumps, write a temporary file, fsync, rename, fsync the directory",
    ),
    PutVariant(
        SQLITE_FULL,
        True,
        single(partial(SqliteTable, synchronous="FULL")),
        "stdlib sqlite3, msgpack body, INSERT with seq = max + 1, one transaction per put",
    ),
    PutVariant(
        SAVER,
        True,
        single(LangGraphSaver),
        "SqliteSaver.put of a LangGraph checkpoint (WAL, synchronous=FULL)",
        (LANGGRAPH,),
    ),
    PutVariant(LMDBSTATE_ASYNC, False, single(lmdbstate_at("async")), "CheckpointStore.put"),
    PutVariant(
        BARE_ASYNC, False, single(partial(BareStore, sync=False)), "as bare lmdb sync, sync=False"
    ),
    PutVariant(
        "SQLite WAL NORMAL",
        False,
        single(partial(SqliteTable, synchronous="NORMAL")),
        "as SQLite WAL FULL, synchronous=NORMAL",
    ),
    PutVariant(
        "diskcache",
        False,
        single(DiskCache),
        "Cache.set of (workflow, seq) and the head seq in one transact(); its defaults",
        (DISKCACHE,),
    ),
)


def put_reference(durable: bool) -> str:
    """The lmdbstate variant that put variants of this durability class are compared with."""
    return LMDBSTATE_SYNC if durable else LMDBSTATE_ASYNC


# -- readers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadVariant:
    name: str
    open: Callable[[Path], Peer]
    latest_note: str
    history_note: str | None
    """None: the peer has no way to list a workflow's checkpoints."""
    requires: tuple[Requirement, ...] = ()

    def missing(self) -> str | None:
        return _reasons(self.requires)


READERS: tuple[ReadVariant, ...] = (
    ReadVariant(
        LMDBSTATE,
        lmdbstate_at("async"),
        "latest(): seek, digest check, msgpack decode",
        "history(): every record's digest checked, fields but the state decoded",
    ),
    ReadVariant(
        BARE,
        partial(BareStore, sync=False),
        "cursor seek, xxh3 check, msgpack decode",
        "one cursor pass, xxh3 check of every record",
    ),
    ReadVariant(
        "JSON files",
        JsonFiles,
        "listdir, newest name, json.loads",
        "scandir and stat of the workflow's directory",
    ),
    ReadVariant(
        "SQLite WAL",
        partial(SqliteTable, synchronous="NORMAL"),
        "SELECT ... ORDER BY seq DESC LIMIT 1, msgpack decode",
        "SELECT seq, created_ns, length(body) ... ORDER BY seq",
    ),
    ReadVariant(
        SAVER,
        LangGraphSaver,
        "SqliteSaver.get_tuple",
        "SqliteSaver.list (decodes every checkpoint)",
        (LANGGRAPH,),
    ),
    ReadVariant(
        "diskcache", DiskCache, "get of the head seq, then of the checkpoint", None, (DISKCACHE,)
    ),
)
