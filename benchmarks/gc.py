"""Garbage collection on a store of a GiB or more, and what a concurrent collection costs writers.

Part 1 fills a store (``durability="async"``) until its live pages reach ``--size`` GiB: 16
workflows of 64 KiB states and, for about a ninth of the bytes, 64 workflows of 1 KiB states,
written in step so that old and new checkpoints of both sizes interleave; a quarter of the
workflows are then completed. A byte-identical copy is made. One collection with ``max_size``
at half the live size runs on the store, one with ``keep_last`` at half the history on the copy,
both with ``durability="sync"`` (each write transaction flushed): checkpoints and MiB of records
deleted per second, and the part of that time spent reading the indexes and planning (measured
alone by a dry run).

Part 2 measures sync puts of 1 KiB and 16 KiB states by one and two writer threads on that
store, in rounds. Each round writes a pool of completed workflows (1 KiB and 64 KiB states),
then runs the writers once alone and once while another process collects the pool (a
``max_size`` at the live size before the pool was written), in an order that rotates. The
writers' p50 and p99 latencies with and without the collection are compared within the run.

    python -m benchmarks.gc [--size GIB] [--quick] [--json PATH] [--dir DIR]

Needs only lmdbstate (not the ``bench`` extras). The stores go to a temporary directory under
``--dir``, removed at the end; part 1 needs about twice ``--size`` of free disk.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from lmdbstate import CheckpointStore, GcReport, RetentionPolicy

from .machine import describe, versions
from .states import State, make_states, packed_size
from .timing import percentile

MIB = 1 << 20
GIB = 1 << 30
ROOT = Path(__file__).resolve().parent.parent
BIG_WORKFLOWS = 16
SMALL_WORKFLOWS = 64
SMALL_PER_STEP = 2
"""1 KiB puts into each small workflow per 64 KiB put into each big one."""
MAP_SIZE = 16 * GIB
"""Every process opens the store with this map size, so that the map never grows: a process
that collects fails with MDB_MAP_RESIZED when another one grew the map since its last read
(``storage_info`` does not adopt the new size as reads do)."""
PUT_SIZES = {"1 KiB": 1 << 10, "16 KiB": 16 << 10}
WRITERS = (1, 2)


@dataclass(frozen=True)
class Plan:
    size_gib: float
    rounds: int
    """Rounds of part 2 per (state size, writers)."""
    pool_seconds: float
    """About how long a collection of part 2 should run: sets the pool it deletes."""
    min_pool: int
    """Checkpoints of 1 KiB in a pool at least."""


FULL = Plan(size_gib=1.0, rounds=4, pool_seconds=2.0, min_pool=5_000)
QUICK = Plan(size_gib=0.03, rounds=1, pool_seconds=0.3, min_pool=500)


# -- part 1: filling and collecting -----------------------------------------------------------


@dataclass(frozen=True)
class Filled:
    checkpoints: int
    record_bytes: int
    live_bytes: int
    file_bytes: int
    steps: int
    """Puts into each big workflow (each small one got ``SMALL_PER_STEP`` times as many)."""
    seconds: float


def fill(path: Path, size_bytes: int) -> Filled:
    """Fill a store until its live bytes reach ``size_bytes``; complete a quarter of it."""
    big = make_states(64 << 10, 16)
    small = make_states(1 << 10, 64)
    started = time.perf_counter()
    with CheckpointStore(path, durability="async", map_size=MAP_SIZE) as store:
        live = steps = 0
        while live < size_bytes:
            with store.batch() as batch:
                for n in range(BIG_WORKFLOWS):
                    batch.put(f"big-{n:02d}", big[(steps + n) % len(big)], step=steps)
                for n in range(SMALL_WORKFLOWS * SMALL_PER_STEP):
                    state = small[(steps + n) % len(small)]
                    batch.put(f"small-{n % SMALL_WORKFLOWS:02d}", state, step=steps)
            steps += 1
            if steps % 32 == 0:  # a look at the live size costs a walk of the workflows
                live = store.stats().live_bytes
        for n in range(BIG_WORKFLOWS // 4):
            store.set_status(f"big-{n:02d}", "completed")
        for n in range(SMALL_WORKFLOWS // 4):
            store.set_status(f"small-{n:02d}", "completed")
        stats = store.stats()
    return Filled(
        stats.checkpoints, stats.record_bytes, stats.live_bytes, stats.file_bytes, steps,
        time.perf_counter() - started,
    )  # fmt: skip


@dataclass(frozen=True)
class Collection:
    policy: str
    checkpoints: int
    workflows: int
    record_bytes: int
    live_before: int
    live_after: int
    transactions: int
    seconds: float
    plan_seconds: float
    """A dry run's time: reading every index entry and checkpoint header, and planning."""

    @property
    def checkpoints_per_s(self) -> float:
        return self.checkpoints / self.seconds

    @property
    def mib_per_s(self) -> float:
        return self.record_bytes / MIB / self.seconds

    @classmethod
    def of(cls, policy: str, report: GcReport, plan_seconds: float) -> Collection:
        return cls(
            policy, report.checkpoints_removed, report.workflows_removed,
            report.record_bytes_removed, report.live_bytes_before, report.live_bytes_after,
            report.transactions, report.seconds, plan_seconds,
        )  # fmt: skip


def collect(path: Path, label: str, policy: RetentionPolicy) -> Collection:
    """A dry run, then the collection itself, on a store with every dirty page written out."""
    os.sync()  # the fill's writeback is not the collection's
    with CheckpointStore(path, durability="sync", map_size=MAP_SIZE) as store:
        plan_seconds = store.gc(policy, dry_run=True).seconds
        report = store.gc(policy)
    return Collection.of(label, report, plan_seconds)


# -- part 2: writers with and without a concurrent collection ---------------------------------

COLLECTING = "collecting"


def serve_collections(path: str) -> None:
    """The collector process: for each cap read on stdin, one collection, then its figures."""
    with CheckpointStore(path, durability="sync", map_size=MAP_SIZE) as store:
        print("ready", flush=True)
        for line in sys.stdin:
            print(COLLECTING, flush=True)
            report = store.gc(RetentionPolicy(max_size=int(line)))
            figures = {
                "checkpoints": report.checkpoints_removed,
                "record_bytes": report.record_bytes_removed,
                "transactions": report.transactions,
                "seconds": report.seconds,
            }
            print(json.dumps(figures), flush=True)


class Collector:
    """The collector process, started once and given one cap per collection."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.gc", "--serve", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._stdin: IO[str] = _pipe(self.proc.stdin)
        self._stdout: IO[str] = _pipe(self.proc.stdout)
        if self._stdout.readline() != "ready\n":
            raise RuntimeError("the collector process did not start")

    def start(self, cap: int) -> None:
        """Ask for a collection down to ``cap``; return once it has begun."""
        self._stdin.write(f"{cap}\n")
        self._stdin.flush()
        if self._stdout.readline() != f"{COLLECTING}\n":
            raise RuntimeError("the collector process failed")

    def result(self) -> dict[str, float]:
        """Wait for the collection under way to end; its figures."""
        line = self._stdout.readline()
        if not line:
            raise RuntimeError("the collector process died (its traceback is above)")
        figures: dict[str, float] = json.loads(line)
        return figures

    def close(self) -> None:
        self._stdin.close()
        self.proc.wait(timeout=60)
        self._stdout.close()


def _pipe(stream: IO[str] | None) -> IO[str]:
    if stream is None:
        raise RuntimeError("a pipe to the collector process is missing")
    return stream


class Writers:
    """Threads each putting states into its own workflow, timing every put, until stopped."""

    def __init__(self, store: CheckpointStore, states: Sequence[State], count: int) -> None:
        self._store = store
        self._states = states
        self._stop = threading.Event()
        self._errors: list[Exception] = []
        self._timings: list[list[tuple[int, int]]] = [[] for _ in range(count)]
        self._threads = [
            threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(count)
        ]

    def _write(self, index: int) -> None:
        clock = time.perf_counter_ns
        own = self._timings[index]
        workflow_id = f"writer-{index}"
        try:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                state = self._states[(index + n) % len(self._states)]
                start = clock()
                self._store.put(workflow_id, state)
                end = clock()
                own.append((end, end - start))
        except Exception as exc:  # reported by ``running``: a failed put voids the figures
            self._errors.append(exc)

    def latencies(self, start_ns: int, end_ns: int) -> list[int]:
        """The latencies of the puts that ended between ``start_ns`` and ``end_ns``."""
        return [
            latency
            for timings in self._timings
            for end, latency in timings
            if start_ns <= end <= end_ns
        ]

    @contextmanager
    def running(self) -> Iterator[Writers]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join()
        if self._errors:
            raise RuntimeError("a writer failed") from self._errors[0]


@dataclass
class Window:
    """The puts of one run of the writers: alone, or during one collection."""

    latencies_ns: list[int]
    seconds: float
    gc: dict[str, float] | None = None


def window_alone(
    store: CheckpointStore, states: Sequence[State], writers: int, seconds: float
) -> Window:
    with Writers(store, states, writers).running() as running:
        time.sleep(0.05)  # past the threads' start
        start = time.perf_counter_ns()
        time.sleep(seconds)
        end = time.perf_counter_ns()
    return Window(running.latencies(start, end), (end - start) / 1e9)


def window_with_gc(
    store: CheckpointStore, states: Sequence[State], writers: int, collector: Collector, cap: int
) -> Window:
    with Writers(store, states, writers).running() as running:
        time.sleep(0.05)
        collector.start(cap)
        start = time.perf_counter_ns()
        figures = collector.result()
        end = time.perf_counter_ns()
    return Window(running.latencies(start, end), (end - start) / 1e9, figures)


def write_pool(store: CheckpointStore, round_name: str, small: int) -> None:
    """Completed workflows for a collection to delete: ``small`` 1 KiB states, 1/16 as 64 KiB."""
    states_small = make_states(1 << 10, 16)
    states_big = make_states(64 << 10, 4)
    for start in range(0, small, 1024):
        with store.batch() as batch:  # one transaction, one flush
            for n in range(start, min(small, start + 1024)):
                workflow_id = f"pool-{round_name}-{n % 8}"
                batch.put(workflow_id, states_small[n % len(states_small)])
                if n % 256 == 0:
                    batch.put(workflow_id, states_big[n % len(states_big)])
    for n in range(8):
        store.set_status(f"pool-{round_name}-{n}", "completed")


@dataclass
class LatencyRow:
    size: str
    state_bytes: int
    writers: int
    rounds: int
    alone: list[Window] = field(default_factory=list)
    with_gc: list[Window] = field(default_factory=list)

    def summary(self, windows: list[Window]) -> dict[str, float]:
        latencies = sorted(itertools.chain.from_iterable(w.latencies_ns for w in windows))
        seconds = sum(w.seconds for w in windows)
        return {
            "puts": len(latencies),
            "seconds": seconds,
            "puts_per_s": len(latencies) / seconds,
            "p50_us": percentile(latencies, 0.50) / 1e3,
            "p99_us": percentile(latencies, 0.99) / 1e3,
            "max_us": latencies[-1] / 1e3,
        }

    def ratios(self) -> dict[str, float]:
        alone, with_gc = self.summary(self.alone), self.summary(self.with_gc)
        return {
            "p50": with_gc["p50_us"] / alone["p50_us"],
            "p99": with_gc["p99_us"] / alone["p99_us"],
            "puts_per_s": with_gc["puts_per_s"] / alone["puts_per_s"],
        }

    def gc_figures(self) -> dict[str, float]:
        figures = [w.gc for w in self.with_gc if w.gc is not None]
        seconds = sum(f["seconds"] for f in figures)
        checkpoints = sum(f["checkpoints"] for f in figures)
        return {
            "collections": len(figures),
            "checkpoints": checkpoints,
            "record_bytes": sum(f["record_bytes"] for f in figures),
            "seconds": seconds,
            "checkpoints_per_s": checkpoints / seconds,
            "mib_per_s": sum(f["record_bytes"] for f in figures) / MIB / seconds,
        }


def measure_writers(path: Path, plan: Plan, pool_small: int) -> list[LatencyRow]:
    rows: list[LatencyRow] = []
    collector = Collector(path)
    try:
        with CheckpointStore(path, durability="sync", map_size=MAP_SIZE) as store:
            for (size, target), writers in itertools.product(PUT_SIZES.items(), WRITERS):
                states = make_states(target, 16)
                row = LatencyRow(size, packed_size(states), writers, plan.rounds)
                print(f"measuring {size} puts, {writers} writer(s)...", file=sys.stderr, flush=True)
                for round_index in range(plan.rounds):
                    cap = store.stats().live_bytes
                    write_pool(store, f"{size[:-4]}k-{writers}w-{round_index}", pool_small)
                    os.sync()
                    # The order rotates, so that drift over a round hits both alike.
                    for with_gc in (round_index % 2 == 0, round_index % 2 == 1):
                        if with_gc:
                            row.with_gc.append(
                                window_with_gc(store, states, writers, collector, cap)
                            )
                        else:
                            last = row.with_gc[-1].seconds if row.with_gc else plan.pool_seconds
                            row.alone.append(window_alone(store, states, writers, last))
                rows.append(row)
    finally:
        collector.close()
    return rows


# -- report -----------------------------------------------------------------------------------


def render(
    filled: Filled,
    collections: list[Collection],
    rows: list[LatencyRow],
    seconds: float,
    load: tuple[float, float],
) -> str:
    libraries = ", ".join(f"{name} {version}" for name, version in versions().items())
    lines = [
        f"## gc on a {filled.live_bytes / GIB:.2f} GiB store",
        "",
        f"{libraries}; {os.cpu_count()} CPUs; {seconds:.0f} s in all. One-minute load "
        f"average before the run {load[0]:.1f} (other processes), after it {load[1]:.1f}.",
        "",
        f"Store: {filled.checkpoints:,} checkpoints ({BIG_WORKFLOWS} workflows of 64 KiB states, "
        f"{SMALL_WORKFLOWS} of 1 KiB states, a quarter completed), "
        f"{filled.record_bytes / MIB:,.0f} MiB of records, {filled.live_bytes / MIB:,.0f} MiB "
        f"live, file {filled.file_bytes / MIB:,.0f} MiB; filled with durability async in "
        f"{filled.seconds:.1f} s.",
        "",
        "### Collection throughput (durability sync, nothing else running)",
        "",
        "| policy | checkpoints deleted | MiB of records | workflows removed | transactions "
        "| seconds | of which read + plan | checkpoints/s | MiB/s | live MiB before → after |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in collections:
        lines.append(
            f"| {c.policy} | {c.checkpoints:,} | {c.record_bytes / MIB:,.0f} | {c.workflows} "
            f"| {c.transactions:,} | {c.seconds:.2f} | {c.plan_seconds:.2f} "
            f"| {c.checkpoints_per_s:,.0f} | {c.mib_per_s:,.0f} "
            f"| {c.live_before / MIB:,.0f} → {c.live_after / MIB:,.0f} |"
        )
    lines += [
        "",
        "### Sync puts alone and during a collection in another process",
        "",
        "| state | writers | puts alone / with gc | p50 µs alone | p50 µs with gc | p50 ratio "
        "| p99 µs alone | p99 µs with gc | p99 ratio | puts/s ratio | gc meanwhile |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        alone, with_gc = row.summary(row.alone), row.summary(row.with_gc)
        ratios, gc = row.ratios(), row.gc_figures()
        lines.append(
            f"| {row.size} ({row.state_bytes} B) | {row.writers} "
            f"| {alone['puts']:,.0f} / {with_gc['puts']:,.0f} "
            f"| {alone['p50_us']:,.0f} | {with_gc['p50_us']:,.0f} | {ratios['p50']:.2f}x "
            f"| {alone['p99_us']:,.0f} | {with_gc['p99_us']:,.0f} | {ratios['p99']:.2f}x "
            f"| {ratios['puts_per_s']:.2f}x "
            f"| {gc['checkpoints']:,.0f} ckpt in {gc['seconds']:.1f} s "
            f"({gc['checkpoints_per_s']:,.0f}/s, {gc['mib_per_s']:,.0f} MiB/s) |"
        )
    lines += [
        "",
        "Ratios: with gc over alone (latencies pooled over the rounds; both measured in each "
        "round, order rotating). A window with gc lasts exactly one collection (its reading of "
        "the indexes included); the window alone as long as the previous one with gc. "
        '"gc meanwhile": what those collections deleted, writers running.',
    ]
    return "\n".join(lines)


def write_json(
    path: Path,
    plan: Plan,
    filled: Filled,
    collections: list[Collection],
    rows: list[LatencyRow],
    seconds: float,
    load: tuple[float, float],
    command: str,
    directory: Path,
) -> None:
    document = {
        "benchmark": "lmdbstate gc",
        "command": command,
        "versions": versions(),
        "machine": describe(directory),
        "plan": asdict(plan),
        "seconds": seconds,
        "load_average": {"start": load[0], "end": load[1]},
        "store": asdict(filled),
        "collections": [
            {**asdict(c), "checkpoints_per_s": c.checkpoints_per_s, "mib_per_s": c.mib_per_s}
            for c in collections
        ],
        "puts": [
            {
                "size": row.size,
                "state_bytes": row.state_bytes,
                "writers": row.writers,
                "rounds": row.rounds,
                "alone": row.summary(row.alone),
                "with_gc": row.summary(row.with_gc),
                "ratios": row.ratios(),
                "gc_meanwhile": row.gc_figures(),
                "windows_s": {
                    "alone": [w.seconds for w in row.alone],
                    "with_gc": [w.seconds for w in row.with_gc],
                },
            }
            for row in rows
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# -- entry point ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gc",
        description="gc throughput on a large store, and sync put latency with and without a "
        "concurrent gc in another process.",
    )
    parser.add_argument(
        "--size", type=float, metavar="GIB", help="live size of the store to fill (default 1.0)"
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (30 MiB)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        metavar="DIR",
        help="where the stores are written; needs a real disk, not tmpfs (default: %(default)s)",
    )
    parser.add_argument("--serve", metavar="STORE", help=argparse.SUPPRESS)  # the collector
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.serve is not None:
        serve_collections(args.serve)
        return 0
    plan = QUICK if args.quick else FULL
    if args.size is not None:
        plan = Plan(args.size, plan.rounds, plan.pool_seconds, plan.min_pool)
    size_bytes = int(plan.size_gib * GIB)
    free = shutil.disk_usage(args.dir).free
    if free < 2.5 * size_bytes:
        print(f"{args.dir} has {free / GIB:.1f} GiB free: too little", file=sys.stderr)
        return 1
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lmdbstate-bench-gc-") as tmp:
        store, copy = Path(tmp) / "store", Path(tmp) / "copy"
        print(f"filling {plan.size_gib} GiB...", file=sys.stderr, flush=True)
        filled = fill(store, size_bytes)
        copy.mkdir()
        shutil.copyfile(store / "data.mdb", copy / "data.mdb")
        print("collecting...", file=sys.stderr, flush=True)
        cap, keep = filled.live_bytes // 2, max(1, filled.steps // 2)
        collections = [
            collect(store, f"max_size={cap / MIB:,.0f} MiB", RetentionPolicy(max_size=cap)),
            collect(copy, f"keep_last={keep}", RetentionPolicy(keep_last=keep)),
        ]
        shutil.rmtree(copy)
        small = collections[0]
        # A pool the collector takes about ``pool_seconds`` to delete, at part 1's pace.
        deleting = max(0.0, small.seconds - small.plan_seconds) / max(1, small.checkpoints)
        pool = max(plan.min_pool, round(plan.pool_seconds / max(deleting, 1e-6)))
        rows = measure_writers(store, plan, pool)
    seconds = time.perf_counter() - started
    load = (load_before, os.getloadavg()[0])  # one-minute averages
    print(render(filled, collections, rows, seconds, load))
    if args.json is not None:
        command = shlex.join(["python", "-m", "benchmarks.gc", *argv])
        write_json(args.json, plan, filled, collections, rows, seconds, load, command, args.dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
