"""Record format 2 on its own workload: bytes on disk, put and read throughput, in one run.

python -m benchmarks.growing_history [--workflows N] [--steps N] [--rounds N] [--seconds S]
                                     [--out FILE] [--dir DIR]

The workload is ``benchmarks.dedup_study``'s (issue 10's): workflows whose state is a chat
history that grows by one message per step, put in the order an executor puts them (every
workflow's step 1, then every workflow's step 2, ...). Four stores take it:

- lmdbstate, record format 2 (``dedup=True``, the default): a state's long lists as chunks;
- lmdbstate, record format 2 with ``compression="zstd"`` (the ``zstd`` extra): the same, each
  list item's chunk compressed when that saves bytes;
- lmdbstate, record format 1 (``dedup=False``): every checkpoint whole;
- SQLite in WAL mode, a (workflow, seq) table of msgpack bodies (``peers.SqliteTable``);
- a JSON file per checkpoint, written crash-safely (``peers.JsonFiles``).

Measured:

- bytes on disk once the workload is written (and after 80 steps, when there are more): the
  files, the part of them in use, and a compacted copy, as ratios to the workload's unique
  content (``dedup_study.unique_bytes``); and, for lmdbstate, each table's share;
- put: each round writes the whole workload into a fresh store of each kind, the stores taking
  each checkpoint in turn (which goes first changes from one checkpoint to the next, so that a
  slow spell of the disk falls on all alike), every put timed; checkpoints/s over the puts of
  states under 16 KiB (as msgpack) and over the others. Every put flushed (lmdbstate ``sync``,
  SQLite ``synchronous=FULL``, JSON fsync), then none (lmdbstate ``async``, SQLite ``NORMAL``;
  the JSON files have no such mode);
- reads, on stores written once: ``latest`` of each workflow in turn, in a store stopped at the
  last step whose states are all under 16 KiB and in the whole one, and ``get(workflow, seq)``
  of every checkpoint under 16 KiB and of every other; each figure time-boxed, the order of the
  stores rotating from round to round.

Format 2 over format 1 is taken per round (both measured in that round): the median and the
range over rounds. Writes ``docs/benchmarks-dedup.md``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lmdb
import msgpack

from lmdbstate import CheckpointStore, chunking
from lmdbstate.kv import TABLES

from .dedup_study import SMALL_STATE, histories, unique_bytes
from .machine import describe, versions
from .peers import JsonFiles, SqliteTable
from .timing import rate

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks-dedup.md"
MIDWAY = 80
"""A second snapshot of the bytes on disk, after this many steps (when the run has more)."""
TARGET_BYTES = 2.0
TARGET_RATE = 0.90

FORMAT_2 = "lmdbstate, format 2"
FORMAT_2_ZSTD = "lmdbstate, format 2, zstd"
FORMAT_1 = "lmdbstate, format 1"
SQLITE = "SQLite WAL"
JSON_FILES = "JSON files"
STORES = (FORMAT_2, FORMAT_2_ZSTD, FORMAT_1, SQLITE, JSON_FILES)
LMDBSTATE = (FORMAT_2, FORMAT_2_ZSTD, FORMAT_1)
DURABILITIES = ("sync", "async")
READS = ("latest, stopped < 16 KiB", "latest, all steps", "get < 16 KiB", "get >= 16 KiB")

State = dict[str, Any]


@dataclass(frozen=True)
class Put:
    """One checkpoint of the workload; its seq is its step."""

    workflow_id: str
    step: int
    state: State
    size: int
    """The state's msgpack size."""

    @property
    def small(self) -> bool:
        return self.size < SMALL_STATE


def workload(workflows: int, steps: int) -> list[Put]:
    return [
        Put(workflow_id, step, state, len(msgpack.packb(state)))
        for workflow_id, step, state in histories(workflows, steps)
    ]


def stopped_step(puts: Sequence[Put]) -> int:
    """The last step whose states are all under 16 KiB (0: none is)."""
    return min((put.step for put in puts if not put.small), default=puts[-1].step + 1) - 1


# -- the stores -------------------------------------------------------------------------------


class Store(Protocol):
    def put(self, workflow_id: str, state: State) -> object: ...
    def latest(self, workflow_id: str) -> object: ...
    def get(self, workflow_id: str, seq: int) -> object: ...
    def close(self) -> None: ...


class Sqlite(SqliteTable):
    """``peers.SqliteTable`` with a read by seq."""

    def get(self, workflow_id: str, seq: int) -> object:
        (body,) = self._conn.execute(
            "SELECT body FROM checkpoints WHERE workflow = ? AND seq = ?", (workflow_id, seq)
        ).fetchone()
        return msgpack.unpackb(body)


class Json(JsonFiles):
    """``peers.JsonFiles`` with a read by seq (the file of that name, read and parsed)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path

    def get(self, workflow_id: str, seq: int) -> object:
        return json.loads((self.path / workflow_id / f"{seq:012d}.json").read_bytes())


def open_store(name: str, path: Path, durability: str) -> Store | None:
    """A fresh store of kind ``name`` at ``path``; None when the kind has no such durability."""
    if name in LMDBSTATE:
        return CheckpointStore(
            path,
            durability=durability,  # type: ignore[arg-type]
            dedup=name != FORMAT_1,
            compression="zstd" if name == FORMAT_2_ZSTD else None,
        )
    if name == SQLITE:
        return Sqlite(path, synchronous="FULL" if durability == "sync" else "NORMAL")
    return Json(path) if durability == "sync" else None


def state_of(name: str, found: Any) -> object:
    """The state in what a store's ``latest`` or ``get`` returned."""
    if name in LMDBSTATE:
        return found.state
    return found["state"] if name == JSON_FILES else found


# -- bytes on disk ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """An LMDB table of a compacted copy: its entries, their key and value bytes, its pages."""

    entries: int
    data: int
    pages: int


@dataclass(frozen=True)
class Footprint:
    files: int
    """The store's files (LMDB: data.mdb; SQLite: database + WAL; JSON: their sizes)."""
    in_use: int
    """LMDB: the pages in use; SQLite: pages not on the freelist; JSON: blocks allocated."""
    compacted: int | None
    """A compacted copy (LMDB: ``compact``; SQLite: ``VACUUM INTO``); None for JSON."""
    tables: dict[str, Table] = field(default_factory=dict)
    """lmdbstate's tables, in the compacted copy."""


def footprint(name: str, store: Store, path: Path, scratch: Path) -> Footprint:
    copy = scratch / f"compacted-{time.monotonic_ns()}"
    try:
        if isinstance(store, CheckpointStore):
            stats = store.stats()
            compacted = store.compact(copy).file_bytes_after
            return Footprint(stats.file_bytes, stats.live_bytes, compacted, _tables(copy))
        if name == SQLITE:
            return _sqlite_footprint(path / "checkpoints.sqlite", copy)
        files = [entry for entry in path.rglob("*") if entry.is_file()]
        return Footprint(
            sum(entry.stat().st_size for entry in files),
            sum(entry.stat().st_blocks * 512 for entry in files),
            None,
        )
    finally:
        if copy.is_dir():
            shutil.rmtree(copy)
        copy.unlink(missing_ok=True)


def _tables(copy: Path) -> dict[str, Table]:
    """Each table of a compacted lmdbstate store, read with py-lmdb (lmdbstate never opens it)."""
    env = lmdb.open(str(copy), readonly=True, lock=False, max_dbs=len(TABLES))
    try:
        tables = {}
        for name in TABLES:
            db = env.open_db(name.encode("ascii"), create=False)
            with env.begin(db=db) as txn:
                stat = txn.stat(db)
                data = sum(len(key) + len(value) for key, value in txn.cursor())
            pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
            tables[name] = Table(stat["entries"], data, pages * stat["psize"])
        return tables
    finally:
        env.close()


def _sqlite_footprint(database: Path, copy: Path) -> Footprint:
    conn = sqlite3.connect(database)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size, pages, free = (
            conn.execute(f"PRAGMA {pragma}").fetchone()[0]
            for pragma in ("page_size", "page_count", "freelist_count")
        )
        conn.execute("VACUUM INTO ?", (str(copy),))
    finally:
        conn.close()
    wal = database.with_name(database.name + "-wal")
    files = database.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return Footprint(files, (pages - free) * page_size, copy.stat().st_size)


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Results:
    workflows: int
    steps: int
    stopped: int
    unique: dict[int, int]
    """Unique content after each snapshot's steps."""
    footprints: dict[int, dict[str, Footprint]] = field(default_factory=dict)
    puts: dict[str, dict[str, dict[bool, list[float]]]] = field(default_factory=dict)
    """Checkpoints/s per durability, store and state class (True: under 16 KiB), per round."""
    reads: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """Reads/s per store and read, per round."""


def _path(root: Path, label: str) -> Path:
    return root / f"{label}-{time.monotonic_ns()}".replace(" ", "-").replace(",", "")


def load(
    name: str, puts: Sequence[Put], root: Path, snapshots: Sequence[int], results: Results
) -> tuple[Store, Store]:
    """The two stores reads are measured on (the whole workload; stopped), and the footprints.

    Both written with every put flushed, as a store is by default.
    """
    path = _path(root, name)
    store = open_store(name, path, "sync")
    stopped = open_store(name, _path(root, f"{name} stopped"), "sync")
    assert store is not None
    assert stopped is not None
    for index, put in enumerate(puts):
        store.put(put.workflow_id, put.state)
        if put.step <= results.stopped:
            stopped.put(put.workflow_id, put.state)
        last_of_step = index + 1 == len(puts) or puts[index + 1].step != put.step
        if last_of_step and put.step in snapshots:
            results.footprints[put.step][name] = footprint(name, store, path, root)
    for put in puts:  # each workflow's newest state reads back whole, in both stores
        if put.step == puts[-1].step:
            assert state_of(name, store.latest(put.workflow_id)) == put.state, name
        if put.step == results.stopped:
            assert state_of(name, stopped.latest(put.workflow_id)) == put.state, name
    return store, stopped


def put_rates(durability: str, puts: Sequence[Put], root: Path) -> dict[str, dict[bool, float]]:
    """Checkpoints/s of a fresh store of each kind taking the workload, by state class.

    The stores take each checkpoint in turn, the first of them changing from one checkpoint to
    the next, so that a slow spell of the disk or the CPU falls on them alike. A kind without
    ``durability`` is left out.
    """
    stores: dict[str, Store] = {}
    paths = {name: _path(root, name) for name in STORES}
    try:
        for name, path in paths.items():
            store = open_store(name, path, durability)
            if store is not None:
                stores[name] = store
        spent = {name: {True: 0, False: 0} for name in stores}
        order = list(stores.items())
        clock = time.perf_counter_ns
        for index, put in enumerate(puts):
            shift = index % len(order)
            for name, store in order[shift:] + order[:shift]:
                started = clock()
                store.put(put.workflow_id, put.state)
                spent[name][put.small] += clock() - started
    finally:
        for store in stores.values():
            store.close()
        for path in paths.values():
            shutil.rmtree(path, ignore_errors=True)
    counts = {small: sum(1 for put in puts if put.small == small) for small in (True, False)}
    return {
        name: {small: counts[small] / (ns / 1e9) for small, ns in own.items() if counts[small]}
        for name, own in spent.items()
    }


def _reads(
    op: Callable[[str, int], object], keys: Sequence[tuple[str, int]]
) -> Callable[[float], int]:
    """``run(deadline)`` for ``timing.rate``: ``op`` over ``keys`` in turn, until the deadline."""

    def run(deadline: float) -> int:
        done = 0
        for workflow_id, seq in itertools.cycle(keys):
            op(workflow_id, seq)
            done += 1
            if time.perf_counter() >= deadline:
                return done
        return done

    return run


def read_rates(store: Store, stopped: Store, puts: Sequence[Put], seconds: float) -> list[float]:
    """Reads/s of each of ``READS``."""
    workflows = [(workflow_id, 0) for workflow_id in dict.fromkeys(p.workflow_id for p in puts)]
    small = [(put.workflow_id, put.step) for put in puts if put.small]
    large = [(put.workflow_id, put.step) for put in puts if not put.small]
    runs = (
        _reads(lambda workflow_id, _: stopped.latest(workflow_id), workflows),
        _reads(lambda workflow_id, _: store.latest(workflow_id), workflows),
        _reads(store.get, small),
        _reads(store.get, large),
    )
    figures = []
    for run in runs:
        gc.collect()
        figures.append(rate(run, seconds, warm_up=0.05))
    return figures


def run(workflows: int, steps: int, rounds: int, seconds: float, root: Path) -> Results:
    puts = workload(workflows, steps)
    snapshots = sorted({min(MIDWAY, steps), steps})
    results = Results(
        workflows,
        steps,
        stopped_step(puts),
        {step: unique_bytes(workflows, step) for step in snapshots},
        footprints={step: {} for step in snapshots},
        puts={
            durability: {name: {True: [], False: []} for name in STORES}
            for durability in DURABILITIES
        },
        reads={name: {read: [] for read in READS} for name in STORES},
    )
    progress = f"{workflows} workflows x {steps} steps, {rounds} rounds"
    print(f"growing history: {progress}; loading", file=sys.stderr)
    readers = {name: load(name, puts, root, snapshots, results) for name in STORES}
    try:
        for round_index in range(rounds):
            print(f"  round {round_index + 1}/{rounds}", file=sys.stderr)
            shift = round_index % len(STORES)
            order = [*STORES[shift:], *STORES[:shift]]
            for durability in DURABILITIES:
                gc.collect()
                os.sync()  # no round pays for the previous one's writeback
                for name, by_class in put_rates(durability, puts, root).items():
                    for small, figure in by_class.items():
                        results.puts[durability][name][small].append(figure)
            for name in order:
                figures = read_rates(*readers[name], puts, seconds)
                for read, figure in zip(READS, figures, strict=True):
                    results.reads[name][read].append(figure)
    finally:
        for store, stopped in readers.values():
            store.close()
            stopped.close()
    return results


# -- the report -------------------------------------------------------------------------------


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"


def _kib(size: int) -> str:
    return f"{size / 1024:,.0f} KiB"


def _ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def _verdict(ratios: Sequence[float]) -> str:
    if min(ratios) >= TARGET_RATE:
        return "**met**"
    if statistics.median(ratios) >= TARGET_RATE:
        return "**met by the median** (not in every round)"
    return "**not met**"


def _rate_cell(values: Sequence[float], base: Sequence[float]) -> str:
    if not values:
        return "-"
    if values is base:
        return f"{statistics.median(values):,.0f}"
    ratios = _ratios(values, base)
    low, high = min(ratios), max(ratios)
    return (
        f"{statistics.median(values):,.0f} ({statistics.median(ratios):.2f}x, {low:.2f}-{high:.2f})"
    )


def render(results: Results, puts: Sequence[Put], machine: dict[str, str], command: str) -> str:
    small = [put.size for put in puts if put.small]
    large = [put.size for put in puts if not put.small]
    inline = sum(1 for put in puts if put.size < chunking.INLINE_LIMIT)
    last = results.steps
    unique = results.unique[last]
    mine = results.footprints[last][FORMAT_2]
    zstd = results.footprints[last][FORMAT_2_ZSTD]
    lines = [
        "# Record format 2 on a growing chat history",
        "",
        "Written by `python -m benchmarks.growing_history` (run by `make bench`; its docstring "
        "gives the method); do not edit by hand. lmdbstate with record format 2 (`dedup=True`, "
        "the default) against format 1 (`dedup=False`), SQLite (WAL, a (workflow, seq) table "
        "of msgpack bodies) and a JSON file per checkpoint (fsynced, renamed into place), on "
        "issue 10's workload. Throughput figures are medians over rounds; in brackets, the "
        "ratio to lmdbstate format 1 measured in the same round (above 1: faster), as the "
        "median and the range over rounds.",
        "",
        f"Command: `{command}`",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in machine.items()),
        "",
        "## Workload",
        "",
        f"{results.workflows} workflows x {results.steps} steps of `benchmarks.dedup_study`'s "
        f"chat history (seed 10): {len(puts):,} checkpoints, each workflow's state one message "
        f"longer than at its previous step. {len(small):,} states are under 16 KiB as msgpack "
        f"(steps up to {max(p.step for p in puts if p.small) if small else 0}, "
        f"{min(small, default=0):,} to {max(small, default=0):,} bytes, mean "
        f"{statistics.fmean(small) if small else 0:,.0f}); {len(large):,} are 16 KiB or more "
        f"(mean {statistics.fmean(large) if large else 0:,.0f}, largest "
        f"{max(large, default=0):,}). Unique content (each distinct message once, plus the "
        "small fields of every checkpoint): "
        + ", ".join(
            f"{_mib(size)} after {step} steps" for step, size in sorted(results.unique.items())
        )
        + f". lmdbstate's settings: `INLINE_LIMIT` {chunking.INLINE_LIMIT:,} bytes (about "
        f"{inline} checkpoints are smaller and stay whole), `MIN_ITEMS` {chunking.MIN_ITEMS}, "
        f"`FLAT_EVERY` {chunking.FLAT_EVERY}.",
        "",
        "## Targets (issue 10)",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| bytes on disk <= {TARGET_BYTES:g}x the unique content ({last} steps) "
        f"| data.mdb {mine.files / unique:.2f}x; pages in use {mine.in_use / unique:.2f}x; "
        f"compacted {(mine.compacted or 0) / unique:.2f}x "
        f"| {_bytes_verdict(mine, unique)} |",
        f'| the same, `compression="zstd"` '
        f"| data.mdb {zstd.files / unique:.2f}x; pages in use {zstd.in_use / unique:.2f}x; "
        f"compacted {(zstd.compacted or 0) / unique:.2f}x "
        f"| {_bytes_verdict(zstd, unique)} |",
    ]
    for durability in DURABILITIES:
        figures = results.puts[durability]
        ratios = _ratios(figures[FORMAT_2][True], figures[FORMAT_1][True])
        lines.append(
            f"| put, states < 16 KiB, `{durability}`: >= {TARGET_RATE:.2f}x format 1 "
            f"| {_spread(ratios)} | {_verdict(ratios)} |"
        )
    for read in (READS[0], READS[2]):
        ratios = _ratios(results.reads[FORMAT_2][read], results.reads[FORMAT_1][read])
        lines.append(
            f"| {read}: >= {TARGET_RATE:.2f}x format 1 | {_spread(ratios)} | {_verdict(ratios)} |"
        )
    lines += ["", "## Bytes on disk", ""]
    for step, footprints in sorted(results.footprints.items()):
        lines += _bytes_table(step, footprints, results.unique[step])
    lines += _tables_table(results.footprints[last], last)
    lines += _puts_tables(results)
    lines += _reads_table(results)
    return "\n".join(lines)


def _bytes_verdict(mine: Footprint, unique: int) -> str:
    met = [
        label
        for label, size in (("data.mdb", mine.files), ("pages in use", mine.in_use))
        if size <= TARGET_BYTES * unique
    ]
    if len(met) == 2:
        return "**met**"
    if met:
        return f"**met by the {met[0]} only**"
    compacted = mine.compacted is not None and mine.compacted <= TARGET_BYTES * unique
    return "**not met**" + (" (met once compacted)" if compacted else "")


def _bytes_table(step: int, footprints: dict[str, Footprint], unique: int) -> list[str]:
    lines = [
        f"After {step} steps (unique content {_mib(unique)}): each size, and in brackets its "
        "ratio to the unique content. Files: LMDB's data.mdb; SQLite's database and WAL after "
        "`wal_checkpoint(TRUNCATE)`; the JSON files' sizes. In use: the LMDB pages holding "
        "data (`stats().live_bytes`; LMDB reuses the others); SQLite's pages not on its "
        "freelist; the JSON files' allocated blocks. Compacted: `compact()`, `VACUUM INTO`.",
        "",
        "| store | files | in use | compacted |",
        "|---|--:|--:|--:|",
    ]
    for name, found in footprints.items():
        cells = [
            "-" if size is None else f"{_mib(size)} ({size / unique:.2f}x)"
            for size in (found.files, found.in_use, found.compacted)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _tables_table(footprints: dict[str, Footprint], step: int) -> list[str]:
    lines = [
        f"lmdbstate's tables after {step} steps, in the compacted copy: entries, the bytes of "
        "their keys and values, and the pages holding them (B-tree and overflow pages).",
        "",
        "| table | " + " | ".join(f"{name}: entries, data, pages" for name in LMDBSTATE) + " |",
        "|---|--:|--:|--:|",
    ]
    for table in TABLES:
        cells = []
        for name in LMDBSTATE:
            found = footprints[name].tables[table]
            cells.append(f"{found.entries:,}, {_kib(found.data)}, {_kib(found.pages)}")
        lines.append(f"| {table} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _puts_tables(results: Results) -> list[str]:
    lines = [
        "## Put",
        "",
        "Checkpoints/s. Each round writes the whole workload into a fresh store of each kind, "
        "the stores taking each checkpoint in turn (the first of them changing from one "
        "checkpoint to the next), every put timed; the rate over the puts of states under "
        "16 KiB and over the others. `sync`: every put flushed before it returns (SQLite "
        "`synchronous=FULL`, the JSON file and its directory fsynced); `async`: no flush "
        "(SQLite `synchronous=NORMAL`; the JSON files have no such mode).",
        "",
        "| store | "
        + " | ".join(
            f"`{durability}`, {label}"
            for durability in DURABILITIES
            for label in ("< 16 KiB", ">= 16 KiB")
        )
        + " |",
        "|---|--:|--:|--:|--:|",
    ]
    for name in STORES:
        cells = [
            _rate_cell(
                results.puts[durability][name][small], results.puts[durability][FORMAT_1][small]
            )
            for durability in DURABILITIES
            for small in (True, False)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _reads_table(results: Results) -> list[str]:
    lines = [
        "## Reads",
        "",
        f"Reads/s on stores written once. `latest` of each workflow in turn, in a store "
        f"stopped after step {results.stopped} (the last whose states are all under 16 KiB) and "
        "in the whole one; `get` of each checkpoint of a state under 16 KiB, and of each "
        "other, in the whole one. lmdbstate checks each record's digest (and each chunk's) and "
        "decodes the state; SQLite selects the body (`ORDER BY seq DESC LIMIT 1` for latest) "
        "and decodes it with msgpack; the JSON files are listed (latest), read and parsed.",
        "",
        "| store | " + " | ".join(READS) + " |",
        "|---|--:|--:|--:|--:|",
    ]
    for name in STORES:
        cells = [
            _rate_cell(results.reads[name][read], results.reads[FORMAT_1][read]) for read in READS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.growing_history")
    parser.add_argument("--workflows", type=int, default=8, help="default 8")
    parser.add_argument("--steps", type=int, default=150, help="default 150")
    parser.add_argument("--rounds", type=int, default=9, help="default 9")
    parser.add_argument(
        "--seconds", type=float, default=0.25, help="per read figure and round (default 0.25)"
    )
    parser.add_argument("--out", type=Path, default=DOCS, help="the report (default: docs/)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where stores are written; a real disk, not tmpfs (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lmdbstate-growing-") as scratch:
        root = Path(scratch)
        results = run(args.workflows, args.steps, args.rounds, args.seconds, root)
        machine = describe(root)
    machine["libraries"] = ", ".join(f"{k} {v}" for k, v in versions().items())
    machine["SQLite"] = sqlite3.sqlite_version
    machine["run time"] = f"{time.perf_counter() - started:.0f} s"
    command = shlex.join(["python", "-m", "benchmarks.growing_history", *argv])
    text = render(results, workload(args.workflows, args.steps), machine, command)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
