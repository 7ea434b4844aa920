"""AsyncCheckpointStore: the store's API awaited, with the event loop free while it works."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from lmdbstate import (
    AsyncCheckpointStore,
    CheckpointNotFoundError,
    CheckpointStore,
    RetentionPolicy,
    StoreClosedError,
    WorkflowNotFoundError,
    migrations,
)


def test_round_trip(store_path: Path) -> None:
    async def main() -> None:
        async with AsyncCheckpointStore(store_path, durability="sync") as store:
            assert await store.latest("wf") is None
            first = await store.put("wf", {"n": 1}, step="a", meta={"by": "test"})
            second = await store.put("wf", {"n": 2}, step="b", expect_seq=1)
            assert (first.seq, second.seq) == (1, 2)
            latest = await store.latest("wf")
            assert latest is not None
            assert (latest.seq, latest.state, latest.step) == (2, {"n": 2}, "b")
            assert (await store.get("wf", 1)).meta == {"by": "test"}
            assert [info.seq for info in await store.history("wf", reverse=True)] == [2, 1]
            assert [info.seq for info in await store.history("wf", limit=1)] == [1]
            assert (await store.workflow("wf")).head_seq == 2
            assert (await store.set_status("wf", "completed")).status == "completed"
            assert (await store.stats()).checkpoints == 2
            assert await store.delete("wf", seq=1) == 1
            with pytest.raises(CheckpointNotFoundError):
                await store.get("wf", 1)
            assert await store.delete("wf") == 1
            with pytest.raises(WorkflowNotFoundError):
                await store.workflow("wf")
        with pytest.raises(StoreClosedError):
            await store.put("wf", {})
        await store.close()  # idempotent
        with pytest.raises(StoreClosedError):
            await store.__aenter__()

    asyncio.run(main())


def test_migrations_extras_and_gc(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "_state_upgrades", {})
    migrations.state_migration("wf", from_version=1)(lambda state: {**state, "v": 2})

    async def main() -> None:
        async with AsyncCheckpointStore(
            store_path, retention=RetentionPolicy(keep_last=1)
        ) as store:
            for n in range(3):
                await store.put("wf", {"n": n})
            latest = await store.latest("wf", migrate=True)
            assert latest is not None
            assert (latest.state, latest.schema) == ({"n": 2, "v": 2}, 2)
            assert (await store.get("wf", 1, migrate=True)).state == {"n": 0, "v": 2}
            assert (await store.get("wf", 1)).state == {"n": 0}
            await store.set_status("wf", "completed", extras={"note": "done"})
            assert (await store.gc(dry_run=True)).checkpoints_removed == 2
            assert (await store.gc()).checkpoints_removed == 2
        with CheckpointStore(store_path, readonly=True) as sync:
            assert sync.workflow_extras("wf") == {"note": "done"}
            assert [info.seq for info in sync.history("wf")] == [3]

    asyncio.run(main())


def test_calls_before_opening_are_refused(store_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(StoreClosedError):
            await AsyncCheckpointStore(store_path).latest("wf")

    asyncio.run(main())


def test_concurrent_puts_from_many_tasks_share_commits(store_path: Path) -> None:
    tasks, puts = 50, 10

    async def writer(store: AsyncCheckpointStore, task: int) -> list[int]:
        return [(await store.put(f"wf-{task}", {"task": task, "n": n})).seq for n in range(puts)]

    async def main() -> list[list[int]]:
        async with AsyncCheckpointStore(store_path, durability="group") as store:
            return await asyncio.gather(*(writer(store, task) for task in range(tasks)))

    with CheckpointStore(store_path, durability="group") as store:
        env = store._backend._shared.env  # type: ignore[attr-defined]
        before = env.info()["last_txnid"]
        assert asyncio.run(main()) == [list(range(1, puts + 1))] * tasks
        assert env.info()["last_txnid"] - before < tasks * puts // 2
        for task in range(tasks):
            latest = store.latest(f"wf-{task}")
            assert latest is not None
            assert (latest.seq, latest.state) == (puts, {"task": task, "n": puts - 1})


def test_the_event_loop_keeps_running_while_puts_flush(store_path: Path) -> None:
    state = {"blob": "x" * (1 << 20)}  # a few milliseconds to encode and flush, each
    puts = 10

    async def main() -> int:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        async with AsyncCheckpointStore(store_path, durability="sync") as store:
            ticking = asyncio.create_task(ticker())
            started = time.perf_counter()
            for _ in range(puts):
                await store.put("wf", state)
            assert time.perf_counter() - started > 0.01
            done.set()
            await ticking
        return ticks

    # A put that blocked the loop would leave the ticker one tick per put.
    assert asyncio.run(main()) > 10 * puts
