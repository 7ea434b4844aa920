"""How ``latest()`` and resume grow with the number of checkpoints in one store.

One store grows through each point (10, 100, ... checkpoints), filled in batches of up to
10,000 puts per transaction (``store.batch()``, durability async), 100 checkpoints per workflow.
At each point three things are measured, in rotating rounds, on workflows drawn at random among
those in the store:

- ``seek``: py-lmdb alone finding the newest record of a workflow (``set_range`` + ``prev``)
  and copying it out: no digest check, no decode; what the B-tree itself costs;
- ``latest``: ``store.latest()`` on an open store: seek, digest check, msgpack decode;
- ``resume``: what a restarted executor does: open the store, ``latest()``, close.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lmdb

from lmdbstate import CheckpointStore

from .states import SEED, State
from .timing import Budget, Driver, Summary, measure, ready, serial
from .variants import reading

PER_WORKFLOW = 100
BATCH = 10_000
PROBES = 1024
SEEK = "seek"
LATEST = "latest"
RESUME = "resume"


@dataclass(frozen=True)
class ScalePoint:
    checkpoints: int
    workflows: int
    file_bytes: int
    summaries: dict[str, Summary]
    """``seek``, ``latest`` and ``resume``."""


def _workflow(index: int) -> str:
    return f"wf-{index // PER_WORKFLOW:06d}"


def _fill(path: Path, states: Sequence[State], start: int, stop: int) -> None:
    with CheckpointStore(path, durability="async") as store:
        for low in range(start, stop, BATCH):
            with store.batch() as batch:
                for index in range(low, min(stop, low + BATCH)):
                    batch.put(_workflow(index), states[index % len(states)])


@contextmanager
def _latest(path: Path, probes: Sequence[str]) -> Iterator[Driver]:
    with CheckpointStore(path) as store:
        yield serial(reading(store.latest, probes))


def _resume(path: Path, workflow_id: str) -> object:
    with CheckpointStore(path) as store:
        return store.latest(workflow_id)


@contextmanager
def _seek(path: Path, probes: Sequence[str]) -> Iterator[Driver]:
    env = lmdb.open(str(path), readonly=True, max_dbs=8)
    try:
        ckpt = env.open_db(b"ckpt", create=False)
        bounds = [(wf.encode() + b"\x00", wf.encode() + b"\x01") for wf in probes]

        def seek(index: int) -> object:
            prefix, high = bounds[index % len(bounds)]
            with env.begin(db=ckpt) as txn:
                cursor = txn.cursor()
                found = cursor.prev() if cursor.set_range(high) else cursor.last()
                if not found or not cursor.key().startswith(prefix):
                    raise RuntimeError("a workflow that was written has no checkpoint")
                return cursor.value()

        yield serial(seek)
    finally:
        env.close()


def run_scaling(
    states: Sequence[State], points: Sequence[int], budget: Budget, rounds: int, root: Path
) -> list[ScalePoint]:
    """Grow one store under ``root`` through ``points`` checkpoints; measure at each."""
    path = root / "scaling-store"
    measured: list[ScalePoint] = []
    written = 0
    try:
        for checkpoints in points:
            _fill(path, states, written, checkpoints)
            written = checkpoints
            workflows = -(-checkpoints // PER_WORKFLOW)
            rng = random.Random(f"{SEED}-{checkpoints}")
            probes = [_workflow(rng.randrange(checkpoints)) for _ in range(PROBES)]
            samples = measure(
                {
                    SEEK: partial(_seek, path, probes),
                    LATEST: partial(_latest, path, probes),
                    RESUME: ready(reading(partial(_resume, path), probes)),
                },
                budget,
                rounds,
            )
            measured.append(
                ScalePoint(
                    checkpoints,
                    workflows,
                    (path / "data.mdb").stat().st_size,
                    {name: Summary.of(runs) for name, runs in samples.items()},
                )
            )
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return measured
