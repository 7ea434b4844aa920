"""The suite of issue 6: lmdbstate against its peers, per state size, in one process run.

For each state size: every put variant in fresh stores (a new temporary directory per variant
per round, deleted at once: on some virtual machines writing into never-touched page cache runs
several times slower, so the data on disk stays bounded); then every reader loaded with the same
checkpoints and measured for ``latest`` and ``history``; then lmdbstate's ``verify`` on its
loaded store. Last, how ``latest`` and resume grow with the number of checkpoints in a store
(``scaling``).
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

from lmdbstate import CheckpointStore

from .peers import Lister, Peer, Reader
from .scaling import ScalePoint, run_scaling
from .states import SIZES, State, make_states, packed_size
from .timing import Budget, Op, Sample, Session, Summary, measure, ready, serial
from .variants import LMDBSTATE, PUTS, READERS, cycling, fresh, listing, reading, workflow_ids

PUT = "put"
LATEST = "latest"
HISTORY = "history"
NO_LISTING = "no way to list a workflow's checkpoints"
SCALING_SIZE = "1 KiB"


@dataclass(frozen=True)
class Plan:
    rounds: int
    put: dict[str, Budget]
    """Per state size, each put variant's budget in each round."""
    read: dict[str, Budget]
    states: dict[str, int]
    """Per state size, how many distinct states the variants cycle through."""
    stored: dict[str, int]
    """Per state size, checkpoints per workflow in the stores that reads are measured on."""
    read_workflows: int
    verify_runs: int
    scaling: tuple[int, ...]
    """Checkpoints in the store at each point of the scaling study."""
    scaling_budget: Budget
    scaling_rounds: int


FULL = Plan(
    rounds=9,
    # At most about 8 MiB (1 KiB) to 32 MiB (4 MiB) of checkpoints per round: more only adds
    # writeback that stalls the next variants' flushes.
    put={
        "1 KiB": Budget(0.2, 5_000),
        "16 KiB": Budget(0.25, 1_000),
        "256 KiB": Budget(0.35, 100),
        "4 MiB": Budget(0.6, 8),
    },
    read={
        "1 KiB": Budget(0.1, 50_000),
        "16 KiB": Budget(0.12, 20_000),
        "256 KiB": Budget(0.2, 2_000),
        "4 MiB": Budget(0.4, 100),
    },
    states={"1 KiB": 16, "16 KiB": 16, "256 KiB": 8, "4 MiB": 4},
    stored={"1 KiB": 500, "16 KiB": 200, "256 KiB": 24, "4 MiB": 4},
    read_workflows=4,
    verify_runs=3,
    scaling=(10, 100, 1_000, 10_000, 100_000, 1_000_000),
    scaling_budget=Budget(0.2, 100_000),
    scaling_rounds=5,
)
QUICK = Plan(
    rounds=2,
    put={size: Budget(0.03, ops) for size, ops in zip(SIZES, (50, 20, 5, 2), strict=True)},
    read={size: Budget(0.02, ops) for size, ops in zip(SIZES, (200, 50, 10, 2), strict=True)},
    states={"1 KiB": 4, "16 KiB": 4, "256 KiB": 2, "4 MiB": 2},
    stored={"1 KiB": 20, "16 KiB": 10, "256 KiB": 4, "4 MiB": 2},
    read_workflows=2,
    verify_runs=1,
    scaling=(10, 100, 1_000),
    scaling_budget=Budget(0.02, 1_000),
    scaling_rounds=2,
)


@dataclass(frozen=True)
class Result:
    """One variant's figures for one operation at one state size, or why it did not run."""

    operation: str
    size: str
    state_bytes: int
    variant: str
    summary: Summary | None
    skipped: str | None = None
    durable: bool | None = None
    """Puts only: True when each put is on disk before it returns."""
    items: int = 1
    """Checkpoints per operation (a history scan covers a workflow's checkpoints)."""


@dataclass(frozen=True)
class Verify:
    size: str
    records: int
    bytes: int
    gib_per_s: float


@dataclass(frozen=True)
class Results:
    plan: Plan
    results: list[Result]
    verify: list[Verify]
    scaling: list[ScalePoint]
    seconds: float


def _puts(size: str, states: Sequence[State], plan: Plan, root: Path) -> list[Result]:
    runnable = {v.name: v for v in PUTS if v.missing() is None}
    samples = measure(
        {name: fresh(root, v.session, states) for name, v in runnable.items()},
        plan.put[size],
        plan.rounds,
    )
    state_bytes = packed_size(states)
    return [
        Result(
            PUT,
            size,
            state_bytes,
            v.name,
            _summary(samples, v.name),
            v.missing(),
            durable=v.durable,
        )
        for v in PUTS
    ]


def _summary(samples: dict[str, list[Sample]], name: str) -> Summary | None:
    return Summary.of(samples[name]) if name in samples else None


def _ready(ops: dict[str, Op]) -> dict[str, Session]:
    return {name: ready(op) for name, op in ops.items()}


def _reads(
    size: str, states: Sequence[State], plan: Plan, root: Path
) -> tuple[list[Result], Verify | None]:
    workflows = workflow_ids(plan.read_workflows)
    stored = plan.stored[size]
    with ExitStack() as stack:
        peers: dict[str, Peer] = {}
        for index, variant in enumerate(READERS):
            if variant.missing() is None:
                peer = stack.enter_context(closing(variant.open(root / f"read-{index}")))
                serial(cycling(peer.put, states, workflows))(Budget.fixed(stored * len(workflows)))
                peers[variant.name] = peer
        latest = measure(
            _ready(
                {n: reading(p.latest, workflows) for n, p in peers.items() if isinstance(p, Reader)}
            ),
            plan.read[size],
            plan.rounds,
        )
        history = measure(
            _ready(
                {
                    n: listing(p.history, workflows, stored)
                    for n, p in peers.items()
                    if isinstance(p, Lister)
                }
            ),
            plan.read[size],
            plan.rounds,
        )
        store = peers.get(LMDBSTATE)
        checked = (
            _verify(size, store, plan.verify_runs) if isinstance(store, CheckpointStore) else None
        )
    state_bytes = packed_size(states)
    results: list[Result] = []
    for v in READERS:
        reason = v.missing()
        results.append(Result(LATEST, size, state_bytes, v.name, _summary(latest, v.name), reason))
        results.append(
            Result(
                HISTORY,
                size,
                state_bytes,
                v.name,
                _summary(history, v.name),
                reason or (None if v.history_note else NO_LISTING),
                items=stored,
            )
        )
    return results, checked


def _verify(size: str, store: CheckpointStore, runs: int) -> Verify:
    """``verify()`` of a loaded store, run once to warm the cache, then ``runs`` times."""
    store.verify()
    rates: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        report = store.verify()
        seconds = time.perf_counter() - start
        if not report.ok:
            raise RuntimeError(f"verify found damage in a fresh store: {report}")
        rates.append(report.bytes / seconds / (1 << 30))
    return Verify(size, report.records, report.bytes, statistics.median(rates))


def _size(size: str, plan: Plan, root: Path) -> tuple[list[Result], Verify | None]:
    states = make_states(SIZES[size], plan.states[size])
    # The benchmark's own states need not be scanned by every collection: freeze them.
    gc.collect()
    gc.freeze()
    try:
        with tempfile.TemporaryDirectory(dir=root, prefix="suite-") as tmp:
            puts = _puts(size, states, plan, Path(tmp))
            reads, checked = _reads(size, states, plan, Path(tmp))
    finally:
        gc.unfreeze()
    return puts + reads, checked


def run(plan: Plan, root: Path) -> Results:
    """Run the whole suite in temporary directories under ``root``."""
    started = time.perf_counter()
    results: list[Result] = []
    verify: list[Verify] = []
    for size in SIZES:
        print(f"{size} states: puts, then reads...", file=sys.stderr, flush=True)
        measured, checked = _size(size, plan, root)
        results += measured
        verify += [checked] if checked is not None else []
    print("scaling: latest and resume from 10 checkpoints up...", file=sys.stderr, flush=True)
    states = make_states(SIZES[SCALING_SIZE], plan.states[SCALING_SIZE])
    scaling = run_scaling(states, plan.scaling, plan.scaling_budget, plan.scaling_rounds, root)
    return Results(plan, results, verify, scaling, time.perf_counter() - started)
