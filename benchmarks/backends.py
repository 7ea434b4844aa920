"""lmdbstate's PostgreSQL backend beside its LMDB backend and SQLite, in one run.

python -m benchmarks.backends [--seconds S] [--rounds N] [--out FILE]

Starts a throwaway PostgreSQL server on loopback (``tests/pgserver.py``, ``fsync = on``: its
commits are as durable as the others'), then measures, for 1 KiB and 16 KiB states, each store
with every put durable when it returns:

- put from 1 thread (lmdbstate ``sync``; SQLite WAL ``synchronous=FULL``),
- put from 16 threads, each its own workflow (lmdbstate ``group``; SQLite one connection per
  thread, ``busy_timeout`` 10 s),
- ``latest`` of a workflow of 200 checkpoints (digest check and decode),
- a history scan: every checkpoint's (seq, size) of a workflow of 1,000, in checkpoints/s.

Each figure is the median over rounds, the stores taking turns within each round; ratios are
over lmdbstate on LMDB in the same run. Writes the table to ``docs/benchmarks-backends.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import msgpack

from lmdbstate import CheckpointStore

from .machine import describe, versions
from .states import SIZES, State, make_states, packed_size
from .timing import rate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.pgserver import PostgresServer, find_binaries  # noqa: E402  (the tests' server)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks-backends.md"
WRITERS = 16
LATEST_DEPTH = 200
HISTORY_DEPTH = 1000
BACKENDS = ("lmdbstate, LMDB", "lmdbstate, PostgreSQL", "SQLite WAL FULL")
COLUMNS = ("put x1", f"put x{WRITERS}", "latest", "history scan")
STATE_SIZES = ("1 KiB", "16 KiB")


class Store(Protocol):
    def put(self, workflow_id: str, state: State) -> object: ...
    def latest(self, workflow_id: str) -> object: ...
    def scan(self, workflow_id: str) -> int: ...
    def close(self) -> None: ...


class Lmdbstate:
    """lmdbstate on either backend, by location."""

    def __init__(self, location: str, durability: str) -> None:
        self._store = CheckpointStore(location, durability=durability)  # type: ignore[arg-type]

    def put(self, workflow_id: str, state: State) -> object:
        return self._store.put(workflow_id, state)

    def latest(self, workflow_id: str) -> object:
        return self._store.latest(workflow_id)

    def scan(self, workflow_id: str) -> int:
        return sum(1 for _ in self._store.history(workflow_id))

    def close(self) -> None:
        self._store.close()


class Sqlite:
    """A (workflow, seq) table of msgpack bodies; one connection per thread, as apps do."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS checkpoints (workflow TEXT NOT NULL, seq INTEGER NOT NULL,"
            " body BLOB NOT NULL, PRIMARY KEY (workflow, seq))"
        )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def put(self, workflow_id: str, state: State) -> object:
        return self._conn().execute(
            "INSERT INTO checkpoints VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 "
            "FROM checkpoints WHERE workflow = ?), ?)",
            (workflow_id, workflow_id, msgpack.packb(state)),
        )

    def latest(self, workflow_id: str) -> object:
        row = (
            self._conn()
            .execute(
                "SELECT body FROM checkpoints WHERE workflow = ? ORDER BY seq DESC LIMIT 1",
                (workflow_id,),
            )
            .fetchone()
        )
        return None if row is None else msgpack.unpackb(row[0])

    def scan(self, workflow_id: str) -> int:
        rows = self._conn().execute(
            "SELECT seq, length(body) FROM checkpoints WHERE workflow = ? ORDER BY seq",
            (workflow_id,),
        )
        return sum(1 for _ in rows)

    def close(self) -> None:
        for conn in self._connections:
            conn.close()


def _puts(store: Store, states: list[State], writers: int, tag: str) -> Callable[[float], int]:
    def run(deadline: float) -> int:
        counts = [0] * writers

        def writer(index: int) -> None:
            cycle = itertools.cycle(states)
            while time.perf_counter() < deadline:
                store.put(f"{tag}-{index}", next(cycle))
                counts[index] += 1

        workers = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return sum(counts)

    return run


def _reads(op: Callable[[], object], per_call: int = 1) -> Callable[[float], int]:
    def run(deadline: float) -> int:
        count = 0
        while time.perf_counter() < deadline:
            op()
            count += per_call
        return count

    return run


@contextlib.contextmanager
def _opened(name: str, root: Path, server: PostgresServer, writers: int) -> Iterator[Store]:
    durability = "sync" if writers == 1 else "group"
    store: Store
    if name == BACKENDS[0]:
        store = Lmdbstate(str(root / f"lmdb-{time.monotonic_ns()}"), durability)
    elif name == BACKENDS[1]:
        store = Lmdbstate(server.url(), durability)
    else:
        store = Sqlite(root / f"sqlite-{time.monotonic_ns()}.db")
    try:
        yield store
    finally:
        store.close()


def measure_size(
    label: str, root: Path, server: PostgresServer, seconds: float, rounds: int
) -> dict[str, dict[str, float]]:
    """Each backend's figures for one state size, the median over ``rounds``."""
    states = make_states(SIZES[label], 16)
    samples: dict[str, dict[str, list[float]]] = {
        name: {column: [] for column in COLUMNS} for name in BACKENDS
    }
    readers: dict[str, Store] = {}
    with contextlib.ExitStack() as stack:
        for name in BACKENDS:  # the stores that reads are measured on, loaded once
            store = readers[name] = stack.enter_context(_opened(name, root, server, 1))
            for seq in range(HISTORY_DEPTH):
                store.put("deep", states[seq % len(states)])
                if seq < LATEST_DEPTH:
                    store.put("head", states[seq % len(states)])
        for _ in range(rounds):
            for name in BACKENDS:
                for writers in (1, WRITERS):
                    with _opened(name, root, server, writers) as store:
                        puts = rate(_puts(store, states, writers, "w"), seconds, warm_up=0.2)
                    samples[name][f"put x{writers}"].append(puts)
                reader = readers[name]
                latest = rate(_reads(lambda r=reader: r.latest("head")), seconds, warm_up=0.2)
                samples[name]["latest"].append(latest)
                scan = _reads(lambda r=reader: r.scan("deep"), per_call=HISTORY_DEPTH)
                samples[name]["history scan"].append(rate(scan, seconds, warm_up=0.2))
    print(f"  {label}: mean state {packed_size(states):,} bytes", file=sys.stderr)
    return {
        name: {column: statistics.median(values) for column, values in columns.items()}
        for name, columns in samples.items()
    }


def render(results: dict[str, dict[str, dict[str, float]]], machine: dict[str, str]) -> str:
    lines = [
        "# lmdbstate's backends side by side",
        "",
        "Written by `python -m benchmarks.backends` (run by `make bench`); do not edit by hand. "
        "Operations per second, median over rounds, every put durable when it returns; in "
        "brackets, the rate over lmdbstate on LMDB's in the same run (above 1: faster). The "
        "PostgreSQL server runs on the same 2 cores, on loopback, with `fsync = on`: a remote "
        "server adds a network round trip to every operation. History scan counts checkpoints "
        "listed per second (seq and size, no state decoded).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in machine.items()),
        "",
    ]
    for label, figures in results.items():
        base = figures[BACKENDS[0]]
        lines += [f"## {label} states", "", "| store | " + " | ".join(COLUMNS) + " |"]
        lines.append("|---|" + "--:|" * len(COLUMNS))
        for name, row in figures.items():
            cells = [
                f"{row[column]:,.0f}"
                + ("" if name == BACKENDS[0] else f" ({row[column] / base[column]:.2f}x)")
                for column in COLUMNS
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends")
    parser.add_argument("--seconds", type=float, default=0.5, help="per figure and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--out", type=Path, default=DOCS, help="the report (default: docs/)")
    parser.add_argument("--dir", type=Path, help="where the LMDB and SQLite stores go")
    args = parser.parse_args(argv)
    server = PostgresServer(fsync=True)
    server.start()
    try:
        with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
            results = {
                label: measure_size(label, Path(scratch), server, args.seconds, args.rounds)
                for label in STATE_SIZES
            }
            machine = describe(Path(scratch))
    finally:
        server.stop()
    machine["libraries"] = ", ".join(f"{k} {v}" for k, v in versions().items())
    machine["PostgreSQL"] = _server_version()
    text = render(results, machine)
    args.out.write_text(text, encoding="utf-8")
    print(text)


def _server_version() -> str:
    found = subprocess.run(
        [str(find_binaries() / "postgres"), "--version"], capture_output=True, text=True
    )
    return found.stdout.strip()


if __name__ == "__main__":
    main()
