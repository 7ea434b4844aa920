"""AsyncCheckpointStore: the store's API for asyncio, never blocking the event loop on a flush.

Every call runs the blocking ``CheckpointStore`` method in a small thread pool owned by the
store. A dedicated pool rather than ``asyncio.to_thread``: the default executor has only
``cpu_count + 4`` threads, shared with the rest of the program, and with ``durability="group"``
the number of puts that can share a commit is the number of threads waiting in ``put`` at once.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from .env import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE, DEFAULT_MAX_READERS
from .errors import StoreClosedError
from .models import (
    Checkpoint,
    CheckpointInfo,
    Durability,
    GcReport,
    Status,
    StoreStats,
    WorkflowInfo,
)
from .retention import RetentionPolicy
from .store import DEFAULT_PATH, CheckpointStore

P = ParamSpec("P")
T = TypeVar("T")

WORKERS = 32
"""Threads of a store's pool: at most this many calls (and puts per group commit) at once."""


class AsyncCheckpointStore:
    """A ``CheckpointStore`` for asyncio: the same methods, awaited.

    Use it as ``async with AsyncCheckpointStore(path) as store: await store.put(...)``; the
    store is opened (in a worker thread) when the block is entered and closed when it ends.
    With ``durability="group"``, puts awaited concurrently by many tasks share commits.

    Args:
        path: as for ``CheckpointStore``; so are the keyword arguments.
        durability: as for ``CheckpointStore``.
        map_size: as for ``CheckpointStore``.
        max_map_size: as for ``CheckpointStore``.
        readonly: as for ``CheckpointStore``.
        max_readers: as for ``CheckpointStore``.
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
    ) -> None:
        self._open = functools.partial(
            CheckpointStore, path, durability=durability, map_size=map_size,
            max_map_size=max_map_size, readonly=readonly, max_readers=max_readers,
            auto_migrate=auto_migrate, retention=retention,
        )  # fmt: skip
        self._path = os.fspath(path)
        self._store: CheckpointStore | None = None
        self._entered = False
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="lmdbstate")

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _opened(self) -> CheckpointStore:
        if self._store is None:
            raise StoreClosedError(
                f"store {self._path} is not open: use it in `async with`", path=self._path
            )
        return self._store

    async def __aenter__(self) -> AsyncCheckpointStore:
        """Open the store in a worker thread (a new store's first commit is flushed).

        Raises:
            StoreClosedError: the store was opened before (it can be entered once).
            StoreError: as ``CheckpointStore`` raises on open.
        """
        if self._entered:
            raise StoreClosedError(f"store {self._path} was opened before", path=self._path)
        self._entered = True
        try:
            self._store = await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the store after the calls under way; later calls raise ``StoreClosedError``.

        Idempotent. With ``durability="group"``, puts already queued are committed first.
        """
        store, self._store = self._store, None
        if store is None:
            return
        await self._run(store.close)
        self._executor.shutdown(wait=False)

    async def put(
        self,
        workflow_id: str,
        state: object,
        *,
        step: str | int | None = None,
        schema: int = 1,
        meta: dict[str, Any] | None = None,
        expect_seq: int | None = None,
    ) -> CheckpointInfo:
        """Save a checkpoint, as ``CheckpointStore.put``; returns once it is durable.

        Raises:
            StoreClosedError: the store is not open.
            LmdbStateError: as ``CheckpointStore.put``.
        """
        store = self._opened()
        return await self._run(
            store.put, workflow_id, state, step=step, schema=schema, meta=meta,
            expect_seq=expect_seq,
        )  # fmt: skip

    async def latest(
        self, workflow_id: str, *, skip_damaged: bool = True, migrate: bool = False
    ) -> Checkpoint | None:
        """The workflow's newest intact checkpoint, as ``CheckpointStore.latest``.

        Raises:
            StoreClosedError: the store is not open.
            IntegrityError: as ``CheckpointStore.latest``.
            MigrationError: ``migrate`` and the state cannot be upgraded.
        """
        store = self._opened()
        return await self._run(
            store.latest, workflow_id, skip_damaged=skip_damaged, migrate=migrate
        )

    async def get(self, workflow_id: str, seq: int, *, migrate: bool = False) -> Checkpoint:
        """Checkpoint ``seq`` of the workflow, as ``CheckpointStore.get``.

        Raises:
            StoreClosedError: the store is not open.
            NotFoundError: no such workflow or checkpoint.
            IntegrityError: the checkpoint is damaged.
            MigrationError: ``migrate`` and the state cannot be upgraded.
        """
        return await self._run(self._opened().get, workflow_id, seq, migrate=migrate)

    async def history(
        self, workflow_id: str, *, reverse: bool = False, limit: int | None = None
    ) -> list[CheckpointInfo]:
        """The workflow's checkpoints without state, as a list (see ``CheckpointStore.history``).

        Raises:
            StoreClosedError: the store is not open.
            WorkflowNotFoundError: no such workflow.
            IntegrityError: a damaged record.
        """
        history = self._opened().history
        return await self._run(lambda: list(history(workflow_id, reverse=reverse, limit=limit)))

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        """The index entry of one workflow.

        Raises:
            StoreClosedError: the store is not open.
            WorkflowNotFoundError: no such workflow.
        """
        return await self._run(self._opened().workflow, workflow_id)

    async def set_status(
        self, workflow_id: str, status: Status, *, extras: Mapping[str, object] | None = None
    ) -> WorkflowInfo:
        """Set a workflow's status, as ``CheckpointStore.set_status``.

        Raises:
            StoreClosedError: the store is not open.
            InvalidStatusError: an unknown status.
            InvalidInputError: a bad ``extras`` field.
            WorkflowNotFoundError: no such workflow.
        """
        return await self._run(self._opened().set_status, workflow_id, status, extras=extras)

    async def delete(self, workflow_id: str, *, seq: int | None = None) -> int:
        """Delete a workflow or one checkpoint, as ``CheckpointStore.delete``.

        Raises:
            StoreClosedError: the store is not open.
            NotFoundError: no such workflow or checkpoint.
        """
        return await self._run(self._opened().delete, workflow_id, seq=seq)

    async def gc(self, policy: RetentionPolicy | None = None, *, dry_run: bool = False) -> GcReport:
        """Delete what the retention policy does not keep, as ``CheckpointStore.gc``.

        Raises:
            StoreClosedError: the store is not open.
            ConfigError: no policy given and the store has none.
            ReadOnlyStoreError: the store is read-only (a dry run is allowed).
        """
        return await self._run(self._opened().gc, policy, dry_run=dry_run)

    async def stats(self) -> StoreStats:
        """Counts and sizes, as ``CheckpointStore.stats``.

        Raises:
            StoreClosedError: the store is not open.
        """
        return await self._run(self._opened().stats)
