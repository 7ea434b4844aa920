"""What lmdbstate costs over the same work done by hand with py-lmdb, msgpack and xxhash.

Every variant runs in one process, in rounds whose order rotates, so that machine noise hits
all of them alike. Absolute numbers swing between runs; compare the ratios.

The bare put packs the state, hashes key + body with xxh3_64 and puts ``digest + body`` under
one key of one named database in its own write transaction. The bare read seeks to the
workflow's last key (``set_range`` + ``prev``), verifies the digest and unpacks. The put
"reference" variant adds by hand what lmdbstate's put also does, the ``wf`` and ``age`` index
updates, so that the put overhead splits into index work and library layers.

    python -m benchmarks overhead [--quick] [--json PATH] [--profile]
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from lmdbstate import CheckpointStore

from .machine import versions
from .peers import BareStore
from .states import SIZES as ALL_SIZES
from .states import State, make_states, packed_size
from .timing import Budget, Op, Sample, measure, ready, serial
from .variants import WORKFLOWS, cycling, fresh, lmdbstate_at, reading, single

SIZES = {label: ALL_SIZES[label] for label in ("1 KiB", "16 KiB")}
STATES_PER_SIZE = 16
PROFILE_TOP = 15

LMDBSTATE = "lmdbstate"
BARE = "bare"
BARE_INDEXED = "bare + wf/age index"


@dataclass(frozen=True)
class Plan:
    rounds: int
    async_ops: dict[str, int]
    sync_ops: int
    stored: int
    """Checkpoints written, over all workflows, before the reads are measured."""
    read_ops: dict[str, int]
    profile_ops: int


FULL = Plan(
    rounds=15,
    async_ops={"1 KiB": 5_000, "16 KiB": 1_500},
    sync_ops=300,
    stored=2_000,
    read_ops={"1 KiB": 20_000, "16 KiB": 3_000},
    profile_ops=5_000,
)
QUICK = Plan(
    rounds=3,
    async_ops={"1 KiB": 300, "16 KiB": 100},
    sync_ops=20,
    stored=100,
    read_ops={"1 KiB": 500, "16 KiB": 100},
    profile_ops=500,
)


# -- running variants -------------------------------------------------------------------------


def _rates(samples: dict[str, list[Sample]]) -> dict[str, list[float]]:
    return {name: [sample.rate for sample in runs] for name, runs in samples.items()}


def measure_puts(
    states: Sequence[State], durability: str, ops: int, rounds: int, root: Path
) -> dict[str, list[float]]:
    """Ops/s of each put variant in each round, each round in fresh stores."""
    sync = durability == "sync"
    sessions = {
        LMDBSTATE: single(lmdbstate_at(durability)),
        BARE: single(partial(BareStore, sync=sync)),
        BARE_INDEXED: single(partial(BareStore, sync=sync, indexed=True)),
    }
    fresh_sessions = {name: fresh(root, session, states) for name, session in sessions.items()}
    return _rates(measure(fresh_sessions, Budget.fixed(ops), rounds))


@dataclass(frozen=True)
class Row:
    operation: str
    size: str
    state_bytes: int
    ops_per_round: int
    rounds: int
    ops_per_s: dict[str, list[float]]
    """Variant name -> ops/s in each round."""

    def median_ops(self, variant: str) -> float:
        return statistics.median(self.ops_per_s[variant])

    def us_per_op(self, variant: str) -> float:
        return 1e6 / self.median_ops(variant)

    def ratios(self, variant: str = LMDBSTATE, base: str = BARE) -> list[float]:
        """Per round: the variant's time per op over the base's (paired within a round)."""
        return [b / v for v, b in zip(self.ops_per_s[variant], self.ops_per_s[base], strict=True)]

    def overhead_us(self, variant: str = LMDBSTATE, base: str = BARE) -> float:
        """Median over rounds of the variant's per-op time less the base's."""
        pairs = zip(self.ops_per_s[variant], self.ops_per_s[base], strict=True)
        return statistics.median(1e6 / v - 1e6 / b for v, b in pairs)


def run_size(size: str, states: list[State], plan: Plan, root: Path) -> list[Row]:
    def row(operation: str, ops: int, samples: dict[str, list[float]]) -> Row:
        return Row(operation, size, packed_size(states), ops, plan.rounds, samples)

    put_async = measure_puts(states, "async", plan.async_ops[size], plan.rounds, root)
    put_sync = measure_puts(states, "sync", plan.sync_ops, plan.rounds, root)
    with (
        CheckpointStore(root / "lmdbstate-read", durability="async") as store,
        closing(BareStore(root / "bare-read", sync=False)) as bare,
    ):
        for put in (store.put, bare.put):
            serial(cycling(put, states))(Budget.fixed(plan.stored))
        latest = measure(
            {
                LMDBSTATE: ready(reading(store.latest, WORKFLOWS)),
                BARE: ready(reading(bare.latest, WORKFLOWS)),
            },
            Budget.fixed(plan.read_ops[size]),
            plan.rounds,
        )
    return [
        row("put async", plan.async_ops[size], put_async),
        row("put sync", plan.sync_ops, put_sync),
        row("latest", plan.read_ops[size], _rates(latest)),
    ]


# -- reporting --------------------------------------------------------------------------------


def render(rows: list[Row], plan: Plan, seconds: float) -> str:
    libraries = ", ".join(f"{name} {version}" for name, version in versions().items())
    lines = [
        "## lmdbstate overhead over bare py-lmdb + msgpack + xxhash",
        "",
        f"{libraries}; {os.cpu_count()} CPUs; {plan.rounds} rounds per variant, "
        f"order rotating; {seconds:.0f} s.",
        "",
        "| operation | state | lmdbstate ops/s | lmdbstate µs/op | bare ops/s | bare µs/op "
        "| lmdbstate/bare time (min–max) | overhead µs/op |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        ratios = row.ratios()
        lines.append(
            f"| {row.operation} | {row.size} ({row.state_bytes} B) "
            f"| {row.median_ops(LMDBSTATE):,.0f} | {row.us_per_op(LMDBSTATE):.1f} "
            f"| {row.median_ops(BARE):,.0f} | {row.us_per_op(BARE):.1f} "
            f"| {statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f}) "
            f"| {row.overhead_us():+.1f} |"
        )
    lines += [
        "",
        "ops/s and µs/op: medians over rounds. Ratio and overhead: medians of the per-round "
        "pairs (both variants measured in the same round).",
        "",
        "### put: where the overhead goes",
        "",
        "| operation | state | bare µs/op | + wf/age index µs | + lmdbstate layers µs "
        "| lmdbstate µs/op |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for row in rows:
        if BARE_INDEXED in row.ops_per_s:
            lines.append(
                f"| {row.operation} | {row.size} | {row.us_per_op(BARE):.1f} "
                f"| {row.overhead_us(BARE_INDEXED, BARE):+.1f} "
                f"| {row.overhead_us(LMDBSTATE, BARE_INDEXED):+.1f} "
                f"| {row.us_per_op(LMDBSTATE):.1f} |"
            )
    lines += [
        "",
        f'"+ wf/age index": the bare put plus, in the same transaction, what lmdbstate\'s put '
        f"also does: read and rewrite the workflow's `wf` entry, add an `age` key "
        f'("{BARE_INDEXED}" in the JSON). "+ lmdbstate layers": the rest.',
    ]
    return "\n".join(lines)


def write_json(path: Path, rows: list[Row], plan: Plan, seconds: float) -> None:
    document = {
        "benchmark": "lmdbstate overhead",
        "versions": versions(),
        "cpus": os.cpu_count(),
        "plan": asdict(plan),
        "seconds": seconds,
        "rows": [
            {
                **asdict(row),
                "median_ops_per_s": {name: row.median_ops(name) for name in row.ops_per_s},
                "ratio_lmdbstate_over_bare_time": statistics.median(row.ratios()),
                "overhead_us": row.overhead_us(),
            }
            for row in rows
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# -- profile ----------------------------------------------------------------------------------


def _function_name(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":
        return name  # a builtin: "<method 'put' of 'lmdb.Transaction' objects>"
    return f"{Path(filename).name}:{line}({name})"


def _print_profile(title: str, profile: cProfile.Profile, ops: int, seconds: float) -> None:
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    top = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:PROFILE_TOP]
    print(f"### {title}: {ops} ops, {1e6 * seconds / ops:.1f} µs/op under the profiler")
    print()
    print("| function | calls/op | tottime µs/op | cumtime µs/op |")
    print("|---|--:|--:|--:|")
    for key, (_, calls, tottime, cumtime, _) in top:
        print(
            f"| `{_function_name(key)}` | {calls / ops:.2g} | {1e6 * tottime / ops:.2f} "
            f"| {1e6 * cumtime / ops:.2f} |"
        )
    print()


def _profiled(op: Op, ops: int) -> tuple[cProfile.Profile, float]:
    drive = serial(op)
    drive(Budget.fixed(max(1, ops // 4)))  # warm-up
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(drive, Budget.fixed(ops))
    return profile, time.perf_counter() - start


def run_profile(plan: Plan) -> None:
    print("## Where lmdbstate's time goes (cProfile, durability async, top by tottime)")
    print()
    print(
        "The profiler inflates Python-level calls more than C calls: read shares, not totals. "
        "`timing.py(_loop)` is this benchmark's loop; its tottime is mostly freeing the "
        "returned checkpoints."
    )
    print()
    for size, target in SIZES.items():
        states = make_states(target, STATES_PER_SIZE)
        with (
            tempfile.TemporaryDirectory(prefix="lmdbstate-profile-") as tmp,
            CheckpointStore(Path(tmp) / "store", durability="async") as store,
        ):
            # Puts first: the reads need the checkpoints they write.
            for title, op in (
                ("put", cycling(store.put, states)),
                ("latest", reading(store.latest, WORKFLOWS)),
            ):
                profile, seconds = _profiled(op, plan.profile_ops)
                _print_profile(f"{title}, {size}", profile, plan.profile_ops, seconds)


# -- entry point ------------------------------------------------------------------------------


def main(*, quick: bool, json_path: Path | None, profile: bool) -> None:
    """Print the overhead report (or, with ``profile``, the profiles) to stdout."""
    plan = QUICK if quick else FULL
    if profile:
        run_profile(plan)
        return
    start = time.perf_counter()
    rows: list[Row] = []
    for size, target in SIZES.items():
        print(f"measuring {size} states...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="lmdbstate-bench-") as tmp:
            rows += run_size(size, make_states(target, STATES_PER_SIZE), plan, Path(tmp))
    seconds = time.perf_counter() - start
    order = {"put async": 0, "put sync": 1, "latest": 2}
    rows.sort(key=lambda row: order[row.operation])
    print(render(rows, plan, seconds))
    if json_path is not None:
        write_json(json_path, rows, plan, seconds)
