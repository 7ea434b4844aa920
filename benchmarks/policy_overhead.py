"""What the Checkpointer adds to each step of a workflow, per policy and durability.

Every variant runs the same steps (each one appends a record to a ~1 KiB state) with a
Checkpointer, and the same steps in a bare loop without one, in the same round; the overhead
is the difference per step. Rounds rotate the variants; the medians are reported.

    python -m benchmarks.policy_overhead [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmdbstate import MEMORY_PATH, CheckpointStore
from lmdbstate.policy import Policy, every_n_steps, every_step, manual, on_gates, time_based
from lmdbstate.runner import Checkpointer

POLICIES: dict[str, Policy] = {
    "every_step": every_step,
    "every_n_steps(10)": every_n_steps(10),
    "on_gates (1 in 10)": on_gates,
    "time_based(0.05 s)": time_based(0.05),
    "manual": manual,
}
DURABILITIES = ("memory", "async", "sync")


def step(state: dict[str, Any], n: int) -> dict[str, Any]:
    """A step: a little work on a state that stays near 1 KiB."""
    items = state["items"][-15:] + [{"n": n, "label": f"item-{n}", "score": n * 0.5}]
    return {"items": items, "count": state["count"] + 1, "note": state["note"]}


def initial_state() -> dict[str, Any]:
    return {"items": [], "count": 0, "note": "x" * 200}


def bare(steps: int) -> float:
    """Seconds for the steps alone."""
    state = initial_state()
    started = time.perf_counter()
    for n in range(steps):
        state = step(state, n)
    return time.perf_counter() - started


def checkpointed(durability: str, policy: Policy, steps: int, directory: Path) -> float:
    """Seconds for the steps with a Checkpointer writing as ``policy`` says."""
    path = MEMORY_PATH if durability == "memory" else directory / "store"
    options: dict[str, Any] = {} if durability == "memory" else {"durability": durability}
    with (
        CheckpointStore(path, **options) as store,
        Checkpointer(store, "wf", total_steps=steps, policy=policy) as ckpt,
    ):
        state = initial_state()
        ckpt.start(state)
        started = time.perf_counter()
        for n in range(steps):
            state = step(state, n)
            ckpt.after_step(n, state, gate=n % 10 == 9)
        elapsed = time.perf_counter() - started
        ckpt.complete()
    if path != MEMORY_PATH:
        shutil.rmtree(directory / "store")
    return elapsed


def measure(rounds: int, steps_for: Callable[[str], int]) -> list[dict[str, Any]]:
    """Overhead per step of every (durability, policy) pair, medians over ``rounds``."""
    pairs = [(d, name) for d in DURABILITIES for name in POLICIES]
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {pair: [] for pair in pairs}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(rounds):
            shift = round_ % len(pairs)
            for durability, name in pairs[shift:] + pairs[:shift]:
                steps = steps_for(durability)
                with_ckpt = checkpointed(durability, POLICIES[name], steps, Path(scratch))
                samples[(durability, name)].append((with_ckpt / steps, bare(steps) / steps))
    rows = []
    for (durability, name), pairs_ in samples.items():
        overhead = statistics.median(c - b for c, b in pairs_)
        rows.append(
            {
                "durability": durability,
                "policy": name,
                "steps": steps_for(durability),
                "step_us": statistics.median(b for _, b in pairs_) * 1e6,
                "overhead_us": overhead * 1e6,
            }
        )
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| durability | policy | steps | bare step µs | checkpointer overhead µs/step |",
        "|---|---|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['durability']} | {row['policy']} | {row['steps']} | {row['step_us']:.1f} "
            f"| {row['overhead_us']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    rows = measure(
        rounds=1 if args.quick else 3,
        steps_for=lambda d: (200 if d == "sync" else 2000) // scale,
    )
    print(report(rows))


if __name__ == "__main__":
    main()
