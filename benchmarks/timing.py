"""Timing: operations run by drivers, in time-boxed rounds whose order rotates.

An operation is a callable taking its index (``Op``); a driver runs one or more of them (one
thread, several threads, or several asyncio tasks) under a ``Budget`` and returns a ``Sample``:
how many operations ran, in how much wall time, and each one's latency. ``measure`` runs every
variant once per round, rotating the order from round to round so that machine noise hits all
variants alike; only ratios within one run mean anything on a noisy machine.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    contextmanager,
    nullcontext,
)
from dataclasses import dataclass, field

Op = Callable[[int], object]
"""Operation number i of one writer or reader."""
AsyncOp = Callable[[int], Awaitable[object]]
"""Operation number i of one asyncio task."""


@dataclass(frozen=True)
class Budget:
    """How long one variant runs in one round: until ``seconds`` pass or ``max_ops`` ran.

    ``max_ops`` counts over all writers of a driver; at least ``min_ops`` run per writer
    whatever the time.
    """

    seconds: float
    max_ops: int
    min_ops: int = 1

    @classmethod
    def fixed(cls, ops: int) -> Budget:
        """Exactly ``ops`` operations, however long they take."""
        return cls(math.inf, ops, ops)

    def warm_up(self) -> Budget:
        """A tenth of this budget, at least one operation: before the timed run, untimed."""
        return Budget(self.seconds / 10, max(1, self.max_ops // 10), 1)

    def per_writer(self, writers: int) -> tuple[float, int, int]:
        """Deadline (perf_counter), most ops and least ops for each of ``writers``."""
        most = max(self.min_ops, math.ceil(self.max_ops / writers))
        return time.perf_counter() + self.seconds, most, self.min_ops


@dataclass
class Sample:
    """One driver run: ``ops`` operations in ``seconds`` of wall time."""

    ops: int
    seconds: float
    latencies_ns: list[int] = field(repr=False)

    @property
    def rate(self) -> float:
        """Operations per second."""
        return self.ops / self.seconds


Driver = Callable[[Budget], Sample]
"""Runs operations under a budget."""


def _loop(op: Op, deadline: float, most: int, least: int, latencies: list[int]) -> None:
    clock = time.perf_counter_ns
    deadline_ns = deadline * 1e9
    for index in range(most):
        start = clock()
        op(index)
        end = clock()
        latencies.append(end - start)
        if end >= deadline_ns and index + 1 >= least:
            return


def serial(op: Op) -> Driver:
    """Run ``op`` in this thread."""

    def drive(budget: Budget) -> Sample:
        latencies: list[int] = []
        start = time.perf_counter()
        _loop(op, *budget.per_writer(1), latencies)
        return Sample(len(latencies), time.perf_counter() - start, latencies)

    return drive


def threads(ops: Sequence[Op]) -> Driver:
    """Run each of ``ops`` in its own thread, all at once."""

    def drive(budget: Budget) -> Sample:
        latencies: list[list[int]] = [[] for _ in ops]
        ready = threading.Barrier(len(ops) + 1)
        limits = budget.per_writer(len(ops))

        def worker(op: Op, own: list[int]) -> None:
            ready.wait()
            _loop(op, *limits, own)

        workers = [
            threading.Thread(target=worker, args=pair, daemon=True)
            for pair in zip(ops, latencies, strict=True)
        ]
        for thread in workers:
            thread.start()
        start = time.perf_counter()
        ready.wait()
        for thread in workers:
            thread.join()
        merged = list(itertools.chain.from_iterable(latencies))
        return Sample(len(merged), time.perf_counter() - start, merged)

    return drive


async def _task_loop(
    op: AsyncOp, deadline: float, most: int, least: int, latencies: list[int]
) -> None:
    clock = time.perf_counter_ns
    deadline_ns = deadline * 1e9
    for index in range(most):
        start = clock()
        await op(index)
        end = clock()
        latencies.append(end - start)
        if end >= deadline_ns and index + 1 >= least:
            return


@contextmanager
def tasks(
    session: Callable[[], AbstractAsyncContextManager[Sequence[AsyncOp]]],
) -> Iterator[Driver]:
    """A driver running each async op of ``session()`` (an async context manager) as a task.

    One event loop serves the whole session: the ops are created, run and closed in it.
    """
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        ops: Sequence[AsyncOp] = runner.run(stack.enter_async_context(session()))

        async def run_all(budget: Budget) -> Sample:
            latencies: list[list[int]] = [[] for _ in ops]
            limits = budget.per_writer(len(ops))
            start = time.perf_counter()
            await asyncio.gather(
                *(_task_loop(op, *limits, own) for op, own in zip(ops, latencies, strict=True))
            )
            merged = list(itertools.chain.from_iterable(latencies))
            return Sample(len(merged), time.perf_counter() - start, merged)

        try:
            yield lambda budget: runner.run(run_all(budget))
        finally:
            runner.run(stack.aclose())


def schedule(names: Sequence[str], rounds: int) -> Iterator[str]:
    """Every name once per round; the order rotates from one round to the next."""
    for round_index in range(rounds):
        shift = round_index % len(names)
        yield from [*names[shift:], *names[:shift]]


Session = Callable[[], AbstractContextManager[Driver]]
"""Sets a variant up (a fresh store, or one already loaded), yields its driver, tears down."""


def ready(op: Op) -> Session:
    """The session of an op whose store is already open: it runs in this thread."""
    drive = serial(op)
    return lambda: nullcontext(drive)


def measure(
    sessions: Mapping[str, Session], budget: Budget, rounds: int
) -> dict[str, list[Sample]]:
    """One sample per variant per round; each round opens the variant's session anew.

    Before each session the garbage collector runs and every dirty page is written out
    (``os.sync``), so that no variant pays for another's garbage or writeback.
    """
    samples: dict[str, list[Sample]] = {name: [] for name in sessions}
    for name in schedule(list(sessions), rounds):
        gc.collect()
        os.sync()
        with sessions[name]() as drive:
            drive(budget.warm_up())
            samples[name].append(drive(budget))
    return samples


def rate(run: Callable[[float], int], seconds: float, *, warm_up: float) -> float:
    """Operations per second of ``run(deadline)``, which returns how many it did by then.

    An untimed run of up to ``warm_up`` seconds (and a fifth of ``seconds``) comes first.
    """
    run(time.perf_counter() + min(warm_up, seconds / 5))
    started = time.perf_counter()
    done = run(started + seconds)
    return done / (time.perf_counter() - started)


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """The value below which ``fraction`` of ``sorted_values`` lie (nearest rank)."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Summary:
    """What a list of samples (one per round) comes to."""

    rates: tuple[float, ...]
    """Operations per second, per round."""
    ops: int
    p50_us: float
    p99_us: float

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Summary:
        latencies = sorted(itertools.chain.from_iterable(s.latencies_ns for s in samples))
        return cls(
            rates=tuple(sample.rate for sample in samples),
            ops=len(latencies),
            p50_us=percentile(latencies, 0.50) / 1e3,
            p99_us=percentile(latencies, 0.99) / 1e3,
        )

    @property
    def rate(self) -> float:
        """The median over rounds of operations per second."""
        return statistics.median(self.rates)


def paired_ratios(numerator: Summary, denominator: Summary) -> list[float]:
    """Per round, the ratio of two variants' rates measured in that same round."""
    return [a / b for a, b in zip(numerator.rates, denominator.rates, strict=True)]
