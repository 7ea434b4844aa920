"""LmdbSaver against LangGraph's other savers, through the saver interface, in one run.

python -m benchmarks.langgraph_saver [--seconds S] [--dir DIR]

The state is a growing message history (LangChain messages, up to 40 of ~200 characters, as an
agent's thread holds them), serialised by each saver's own serde. Measured: ``put`` from 1 and
16 threads, ``aput`` from 1 and 16 asyncio tasks, ``get_tuple`` of a thread's latest checkpoint,
and ``list`` of 100. Durable savers flush every put: LmdbSaver with ``durability="group"``,
SqliteSaver and AsyncSqliteSaver with WAL and ``synchronous=FULL``, langgraph-checkpoint-lmdb
with LMDB's default sync. InMemorySaver keeps nothing and is shown as the ceiling. A saver whose
package is missing is reported as skipped. Ratios are LmdbSaver's rate over the other's; only
ratios within one run mean anything on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata
from langgraph.checkpoint.memory import InMemorySaver

from lmdbstate.langgraph import LmdbSaver

from .machine import describe
from .timing import rate

MAX_MESSAGES = 40
THREADS = 16
LIST_SIZE = 100
Saver = BaseCheckpointSaver[Any]


def _history(length: int) -> list[AnyMessage]:
    text = "lorem ipsum dolor sit amet " * 7
    return [
        HumanMessage(f"{n}: {text}", id=f"h{n}") if n % 2 == 0 else AIMessage(text, id=f"a{n}")
        for n in range(length)
    ]


HISTORIES = [_history(n) for n in range(1, MAX_MESSAGES + 1)]


def _checkpoint(step: int) -> Checkpoint:
    messages = HISTORIES[min(step, MAX_MESSAGES) - 1]
    return generate_checkpoint(
        channel_values={"messages": messages}, channel_versions={"messages": step}
    )


class _Thread:
    """One graph thread putting checkpoints one after another, each the child of the last."""

    def __init__(self, name: str) -> None:
        self.config: dict[str, Any] = {"configurable": {"thread_id": name, "checkpoint_ns": ""}}
        self.step = 0

    def args(self) -> tuple[Any, ...]:
        self.step += 1
        metadata = generate_metadata(step=self.step)
        return self.config, _checkpoint(self.step), metadata, {"messages": self.step}

    def done(self, stored: Any) -> None:
        self.config = stored


def put_threads(saver: Saver, writers: int, seconds: float, tag: str) -> float:
    """Puts per second from ``writers`` OS threads, each its own graph thread."""

    def run(deadline: float) -> int:
        counts = [0] * writers

        def writer(index: int) -> None:
            thread = _Thread(f"{tag}-{writers}-{index}")
            while time.perf_counter() < deadline:
                thread.done(saver.put(*thread.args()))
                counts[index] += 1

        workers = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return sum(counts)

    return rate(run, seconds, warm_up=0.3)


def aput_tasks(make: Callable[[], Any], writers: int, seconds: float, tag: str) -> float:
    """aputs per second from ``writers`` asyncio tasks, each its own graph thread."""

    async def main() -> float:
        async with make() as saver:

            async def writer(index: int, deadline: float) -> int:
                thread = _Thread(f"{tag}-{writers}-{index}")
                count = 0
                while time.perf_counter() < deadline:
                    thread.done(await saver.aput(*thread.args()))
                    count += 1
                return count

            await asyncio.gather(*(writer(i, time.perf_counter() + 0.2) for i in range(writers)))
            started = time.perf_counter()
            deadline = started + seconds
            counts = await asyncio.gather(*(writer(i, deadline) for i in range(writers)))
            return sum(counts) / (time.perf_counter() - started)

    return asyncio.run(main())


def reads(saver: Saver, seconds: float, tag: str) -> tuple[float, float]:
    """get_tuple of the latest checkpoint, and list of 100, per second, on a 200-step thread."""
    thread = _Thread(f"{tag}-reads")
    for _ in range(2 * LIST_SIZE):
        thread.done(saver.put(*thread.args()))
    latest = {"configurable": {"thread_id": f"{tag}-reads", "checkpoint_ns": ""}}
    assert saver.get_tuple(latest) is not None

    def get(deadline: float) -> int:
        count = 0
        while time.perf_counter() < deadline:
            saver.get_tuple(latest)
            count += 1
        return count

    def listing(deadline: float) -> int:
        count = 0
        while time.perf_counter() < deadline:
            assert len(list(saver.list(latest, limit=LIST_SIZE))) == LIST_SIZE
            count += 1
        return count

    return rate(get, seconds, warm_up=0.3), rate(listing, seconds, warm_up=0.3)


# -- the savers -------------------------------------------------------------------------------


@contextlib.contextmanager
def lmdb_saver(directory: Path) -> Iterator[Saver]:
    with LmdbSaver.from_path(directory / "lmdbstate", durability="group") as saver:
        yield saver


@contextlib.asynccontextmanager
async def lmdb_async(directory: Path) -> AsyncIterator[Saver]:
    async with LmdbSaver.from_path(directory / "lmdbstate-async", durability="group") as saver:
        yield saver


def _sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


@contextlib.contextmanager
def sqlite_saver(directory: Path) -> Iterator[Saver]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = _sqlite(directory / "saver.sqlite")
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def sqlite_async(directory: Path) -> AsyncIterator[Saver]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(directory / "saver-async.sqlite") as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        yield AsyncSqliteSaver(conn)


@contextlib.contextmanager
def memory_saver(directory: Path) -> Iterator[Saver]:
    yield InMemorySaver()


@contextlib.asynccontextmanager
async def memory_async(directory: Path) -> AsyncIterator[Saver]:
    yield InMemorySaver()


@contextlib.contextmanager
def peer_lmdb(directory: Path) -> Iterator[Saver]:
    import lmdb
    from langgraph_checkpoint_lmdb import LMDBSaver

    env = lmdb.open(str(directory / "peer-lmdb"), max_dbs=4, map_size=1 << 33)  # sync=True
    try:
        yield LMDBSaver(env)
    finally:
        env.close()


@contextlib.asynccontextmanager
async def peer_lmdb_async(directory: Path) -> AsyncIterator[Saver]:
    import lmdb
    from langgraph_checkpoint_lmdb import AsyncLMDBSaver

    env = lmdb.open(str(directory / "peer-lmdb-async"), max_dbs=4, map_size=1 << 33)
    try:
        yield AsyncLMDBSaver(env)
    finally:
        env.close()


SAVERS: dict[str, tuple[Any, Any]] = {
    "LmdbSaver (group)": (lmdb_saver, lmdb_async),
    "SqliteSaver / AsyncSqliteSaver (WAL, FULL)": (sqlite_saver, sqlite_async),
    "langgraph-checkpoint-lmdb (sync)": (peer_lmdb, peer_lmdb_async),
    "InMemorySaver (no disk)": (memory_saver, memory_async),
}
COLUMNS = ("put x1", f"put x{THREADS}", "aput x1", f"aput x{THREADS}", "get_tuple", "list 100")


def measure(name: str, directory: Path, seconds: float) -> dict[str, float]:
    """Every figure of one saver; raises ImportError when its package is missing."""
    sync, make_async = SAVERS[name]
    tag = name.split()[0]
    figures: dict[str, float] = {}
    with sync(directory) as saver:
        figures["put x1"] = put_threads(saver, 1, seconds, tag)
        figures[f"put x{THREADS}"] = put_threads(saver, THREADS, seconds, tag)
        figures["get_tuple"], figures["list 100"] = reads(saver, seconds, tag)
    figures["aput x1"] = aput_tasks(lambda: make_async(directory), 1, seconds, tag + "a")
    figures[f"aput x{THREADS}"] = aput_tasks(
        lambda: make_async(directory), THREADS, seconds, tag + "a"
    )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.langgraph_saver")
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure (default 2)")
    parser.add_argument("--dir", type=Path, help="where the stores go (default: a temp dir)")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float] | None] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for name in SAVERS:
            directory = Path(scratch) / str(len(results))
            os.makedirs(directory)
            try:
                results[name] = measure(name, directory, args.seconds)
            except ImportError as exc:
                print(f"skipped {name}: {exc}")
                results[name] = None
        machine = describe(Path(scratch))
    print("; ".join(f"{name} {value}" for name, value in machine.items()))
    print("operations per second (higher is better); in brackets LmdbSaver's rate / this one's")
    width = max(map(len, SAVERS))
    print(" " * width + "".join(f"{column:>20}" for column in COLUMNS))
    ours = results["LmdbSaver (group)"]
    assert ours is not None
    for name, figures in results.items():
        if figures is None:
            continue
        cells = []
        for column in COLUMNS:
            ratio = "" if figures is ours else f" ({ours[column] / figures[column]:.1f}x)"
            cells.append(f"{figures[column]:,.0f}{ratio}".rjust(20))
        print(name.ljust(width) + "".join(cells))


if __name__ == "__main__":
    main()
