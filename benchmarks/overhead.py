"""What lmdbstate costs over the same work done by hand with py-lmdb, msgpack and xxhash.

Every variant runs in one process, in rounds whose order rotates, so that machine noise hits
all of them alike. Absolute numbers swing between runs; compare the ratios.

The bare put packs the state, hashes key + body with xxh3_64 and puts ``digest + body`` under
one key of one named database in its own write transaction. The bare read seeks to the
workflow's last key (``set_range`` + ``prev``), verifies the digest and unpacks. The put
"reference" variant adds by hand what lmdbstate's put also does, the ``wf`` and ``age`` index
updates, so that the put overhead splits into index work and library layers.

    python -m benchmarks [--quick] [--json PATH] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lmdb
import msgpack
import xxhash

import lmdbstate
from lmdbstate import CheckpointStore

SEED = 20261127
SIZES = {"1 KiB": 1024, "16 KiB": 16 * 1024}
WORKFLOWS = tuple(f"wf-{index:03d}" for index in range(8))
STATES_PER_SIZE = 16
MAP_SIZE = 1 << 30  # lmdbstate's default initial map
PROFILE_TOP = 15

LMDBSTATE = "lmdbstate"
BARE = "bare"
BARE_INDEXED = "bare + wf/age index"

_SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "sa", "vo", "di", "pe", "shan", "or", "et")

Ops = Callable[[int], None]
"""Runs the next n operations of one variant."""
Opener = Callable[[Path], AbstractContextManager[Ops]]
"""Opens a fresh store of one variant at a path; closes it on exit."""
Durability = Literal["sync", "async"]


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


# -- states -----------------------------------------------------------------------------------


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))


def _text(rng: random.Random, words: int) -> str:
    return " ".join(_word(rng) for _ in range(words))


def _message(rng: random.Random) -> dict[str, Any]:
    calls = [
        {"name": _word(rng), "args": {"query": _text(rng, 4), "limit": rng.randint(1, 50)}}
        for _ in range(rng.choice((0, 0, 0, 1, 2)))
    ]
    return {
        "role": rng.choice(("user", "assistant", "tool")),
        "content": _text(rng, rng.randint(4, 24)),
        "tokens": rng.randint(5, 900),
        "tool_calls": calls,
    }


def _scratch_value(rng: random.Random) -> object:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randint(-(10**9), 10**9)
    if kind == 1:
        return rng.random() * 1000
    if kind == 2:
        return _text(rng, rng.randint(1, 8))
    if kind == 3:
        return [rng.randint(0, 10_000) for _ in range(rng.randint(1, 12))]
    if kind == 4:
        return {"done": rng.random() < 0.5, "note": None, "score": rng.random()}
    return None


def make_state(rng: random.Random, target_bytes: int) -> dict[str, Any]:
    """A nested, agent-like state whose msgpack form is just over ``target_bytes``."""
    state: dict[str, Any] = {
        "run": {
            "id": f"run-{rng.getrandbits(64):016x}",
            "attempt": rng.randint(1, 3),
            "started_at": rng.uniform(1.7e9, 1.8e9),
            "tags": [_word(rng) for _ in range(3)],
        },
        "cursor": rng.randint(0, 500),
        "messages": [],
        "scratch": {},
        "metrics": {
            "tokens_in": rng.randint(0, 10**6),
            "tokens_out": rng.randint(0, 10**6),
            "cost_usd": rng.random() * 10,
            "latency_ms": [rng.random() * 900 for _ in range(4)],
        },
    }
    while len(msgpack.packb(state)) < target_bytes:
        if rng.random() < 0.7:
            state["messages"].append(_message(rng))
        else:
            state["scratch"][f"k{len(state['scratch'])}"] = _scratch_value(rng)
    return state


def make_states(target_bytes: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{SEED}-{target_bytes}")
    return [make_state(rng, target_bytes) for _ in range(STATES_PER_SIZE)]


# -- the bare loop ----------------------------------------------------------------------------


class BareStore:
    """Checkpoints by hand: one named db (plus the index dbs for ``put_indexed``)."""

    def __init__(self, path: Path, *, sync: bool) -> None:
        self.env = lmdb.open(
            str(path), map_size=MAP_SIZE, max_dbs=3, sync=sync, metasync=True, writemap=False
        )
        self.ckpt = self.env.open_db(b"ckpt")
        self.wf = self.env.open_db(b"wf")
        self.age = self.env.open_db(b"age")
        self.seqs = dict.fromkeys(WORKFLOWS, 0)

    def put(self, workflow_id: str, state: object) -> None:
        seq = self.seqs[workflow_id] + 1
        self.seqs[workflow_id] = seq
        key = workflow_id.encode() + b"\x00" + seq.to_bytes(8, "big")
        body = msgpack.packb(state)
        digest = xxhash.xxh3_64_intdigest(key + body)
        with self.env.begin(write=True, db=self.ckpt) as txn:
            txn.put(key, digest.to_bytes(8, "little") + body)

    def put_indexed(self, workflow_id: str, state: object) -> None:
        workflow_key = workflow_id.encode()
        body = msgpack.packb(state)
        now = time.time_ns()
        with self.env.begin(write=True) as txn:
            raw = txn.get(workflow_key, db=self.wf)
            entry: dict[str, Any] = (
                {"status": "running", "created_ns": now, "last_seq": 0, "count": 0, "bytes": 0}
                if raw is None
                else msgpack.unpackb(raw)
            )
            seq = entry["last_seq"] + 1
            key = workflow_key + b"\x00" + seq.to_bytes(8, "big")
            value = xxhash.xxh3_64_intdigest(key + body).to_bytes(8, "little") + body
            txn.put(key, value, db=self.ckpt)
            txn.put(now.to_bytes(8, "big") + key, b"", db=self.age)
            entry.update(
                updated_ns=now,
                head_seq=seq,
                last_seq=seq,
                count=entry["count"] + 1,
                bytes=entry["bytes"] + len(value),
                schema=1,
            )
            txn.put(workflow_key, msgpack.packb(entry), db=self.wf)

    def latest(self, workflow_id: str) -> object:
        workflow_key = workflow_id.encode()
        with self.env.begin(db=self.ckpt) as txn:
            cursor = txn.cursor()
            found = cursor.prev() if cursor.set_range(workflow_key + b"\x01") else cursor.last()
            key = cursor.key()
            if not found or not key.startswith(workflow_key + b"\x00"):
                return None
            value = cursor.value()
            body = value[8:]
            if xxhash.xxh3_64_intdigest(key + body) != int.from_bytes(value[:8], "little"):
                raise ValueError(f"digest mismatch under {key!r}")
            return msgpack.unpackb(body)

    def __enter__(self) -> BareStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.env.sync(True)
        self.env.close()


# -- running variants -------------------------------------------------------------------------


def cycling(fn: Callable[[str, Any], object], states: Sequence[object]) -> Ops:
    """Call ``fn(workflow_id, state)`` n times, cycling through workflows and states."""
    counter = itertools.count()

    def run(n: int) -> None:
        for index in itertools.islice(counter, n):
            fn(WORKFLOWS[index % len(WORKFLOWS)], states[index % len(states)])

    return run


def reading(fn: Callable[[str], object]) -> Ops:
    """Call ``fn(workflow_id)`` n times, cycling through workflows."""
    counter = itertools.count()

    def run(n: int) -> None:
        for index in itertools.islice(counter, n):
            if fn(WORKFLOWS[index % len(WORKFLOWS)]) is None:
                raise RuntimeError("a workflow that was written has no checkpoint")

    return run


@contextmanager
def lmdbstate_puts(states: Sequence[object], durability: Durability, path: Path) -> Iterator[Ops]:
    with CheckpointStore(path, durability=durability) as store:
        yield cycling(store.put, states)


@contextmanager
def bare_puts(states: Sequence[object], sync: bool, indexed: bool, path: Path) -> Iterator[Ops]:
    with BareStore(path, sync=sync) as store:
        yield cycling(store.put_indexed if indexed else store.put, states)


def _schedule(names: list[str], rounds: int) -> Iterator[str]:
    """Every name once per round; the order rotates from one round to the next."""
    for round_index in range(rounds):
        shift = round_index % len(names)
        yield from names[shift:] + names[:shift]


def _rate(run: Ops, ops: int) -> float:
    start = time.perf_counter()
    run(ops)
    return ops / (time.perf_counter() - start)


def measure_puts(
    variants: dict[str, Opener], ops: int, rounds: int, root: Path
) -> dict[str, list[float]]:
    """Ops/s of each variant in each round, each round in fresh stores.

    Fresh stores keep every round's work identical and the data written bounded: on some
    virtual machines writing into never-touched page cache runs several times slower, and a
    store that grew through every round would cross into that regime part way.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for name in _schedule(list(variants), rounds):
        with (
            tempfile.TemporaryDirectory(dir=root) as tmp,
            variants[name](Path(tmp) / "store") as run,
        ):
            run(max(1, ops // 10))  # warm-up, not timed
            samples[name].append(_rate(run, ops))
    return samples


def measure_reads(variants: dict[str, Ops], ops: int, rounds: int) -> dict[str, list[float]]:
    """Ops/s of each variant in each round, all rounds on the same stores."""
    for run in variants.values():
        run(max(1, ops // 10))  # warm-up, not timed
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for name in _schedule(list(variants), rounds):
        samples[name].append(_rate(variants[name], ops))
    return samples


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


def _packed_size(states: Sequence[object]) -> int:
    return round(statistics.mean(len(msgpack.packb(state)) for state in states))


def run_size(size: str, states: list[dict[str, Any]], plan: Plan, root: Path) -> list[Row]:
    def row(operation: str, ops: int, samples: dict[str, list[float]]) -> Row:
        return Row(operation, size, _packed_size(states), ops, plan.rounds, samples)

    put_async = measure_puts(
        {
            LMDBSTATE: partial(lmdbstate_puts, states, "async"),
            BARE: partial(bare_puts, states, False, False),
            BARE_INDEXED: partial(bare_puts, states, False, True),
        },
        plan.async_ops[size],
        plan.rounds,
        root,
    )
    put_sync = measure_puts(
        {
            LMDBSTATE: partial(lmdbstate_puts, states, "sync"),
            BARE: partial(bare_puts, states, True, False),
            BARE_INDEXED: partial(bare_puts, states, True, True),
        },
        plan.sync_ops,
        plan.rounds,
        root,
    )
    with (
        CheckpointStore(root / "lmdbstate-read", durability="async") as store,
        BareStore(root / "bare-read", sync=False) as bare,
    ):
        cycling(store.put, states)(plan.stored)
        cycling(bare.put, states)(plan.stored)
        latest = measure_reads(
            {LMDBSTATE: reading(store.latest), BARE: reading(bare.latest)},
            plan.read_ops[size],
            plan.rounds,
        )
    return [
        row("put async", plan.async_ops[size], put_async),
        row("put sync", plan.sync_ops, put_sync),
        row("latest", plan.read_ops[size], latest),
    ]


# -- reporting --------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "lmdbstate": lmdbstate.__version__,
        "py-lmdb": lmdb.__version__,
        "LMDB": ".".join(map(str, lmdb.version())),
        "msgpack": ".".join(map(str, msgpack.version)),
        "xxhash": xxhash.VERSION,
    }


def render(rows: list[Row], plan: Plan, seconds: float) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in _versions().items())
    lines = [
        "## lmdbstate overhead over bare py-lmdb + msgpack + xxhash",
        "",
        f"{versions}; {os.cpu_count()} CPUs; {plan.rounds} rounds per variant, "
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
        "versions": _versions(),
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


def _profiled(run: Ops, ops: int) -> tuple[cProfile.Profile, float]:
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(run, ops)
    return profile, time.perf_counter() - start


def run_profile(plan: Plan) -> None:
    print("## Where lmdbstate's time goes (cProfile, durability async, top by tottime)")
    print()
    print(
        "The profiler inflates Python-level calls more than C calls: read shares, not totals. "
        "`overhead.py(run)` is this benchmark's loop; its tottime is mostly freeing the "
        "returned checkpoints."
    )
    print()
    for size, target in SIZES.items():
        states = make_states(target)
        with (
            tempfile.TemporaryDirectory(prefix="lmdbstate-profile-") as tmp,
            CheckpointStore(Path(tmp) / "store", durability="async") as store,
        ):
            put = cycling(store.put, states)
            put(plan.profile_ops // 4)  # warm-up
            profile, seconds = _profiled(put, plan.profile_ops)
            _print_profile(f"put, {size}", profile, plan.profile_ops, seconds)
            latest = reading(store.latest)
            latest(plan.profile_ops // 4)
            profile, seconds = _profiled(latest, plan.profile_ops)
            _print_profile(f"latest, {size}", profile, plan.profile_ops, seconds)


# -- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="lmdbstate's put and latest against the same work on bare py-lmdb.",
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers here")
    parser.add_argument(
        "--profile", action="store_true", help="profile lmdbstate's put and latest instead"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.profile:
        run_profile(plan)
        return 0
    start = time.perf_counter()
    rows: list[Row] = []
    for size, target in SIZES.items():
        print(f"measuring {size} states...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="lmdbstate-bench-") as tmp:
            rows += run_size(size, make_states(target), plan, Path(tmp))
    seconds = time.perf_counter() - start
    order = {"put async": 0, "put sync": 1, "latest": 2}
    rows.sort(key=lambda row: order[row.operation])
    print(render(rows, plan, seconds))
    if args.json is not None:
        write_json(args.json, rows, plan, seconds)
    return 0
