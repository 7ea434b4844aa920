"""Workflows for the runner tests, importable by entrypoint (``tests.workflows:...``) in children.

Every step is a pure function of the state, so a step run again gives what it gave before.
"""

from __future__ import annotations

import os
import time
from typing import Any

from lmdbstate.runner import Step, Workflow, request_checkpoint

State = dict[str, Any]
PACE = 0.004
"""Seconds each step of ``KILLABLE`` waits, so that kills land inside steps too."""


def advance(index: int, state: State) -> State:
    """Step ``index``: append to the log and fold the index into a running value."""
    return {
        **state,
        "log": [*state["log"], index],
        "acc": (state["acc"] * 31 + index + 7) % 1_000_003,
        "pad": "x" * (index * 100),
    }


def _step(index: int, *, pace: float = 0.0, gate: bool = False) -> Step:
    def fn(state: State) -> State:
        if pace:
            time.sleep(pace)
        if index == 5:
            request_checkpoint()  # the "step asks" of the manual policy
        return advance(index, state)

    return Step(f"s{index:02d}", fn, gate=gate)


def initial() -> State:
    return {"log": [], "acc": 1, "pad": ""}


def prefix_states(count: int) -> list[State]:
    """The state after 0, 1, ..., ``count`` steps of an uninterrupted run."""
    states = [initial()]
    for index in range(count):
        states.append(advance(index, states[-1]))
    return states


STEPS = 10
SIMPLE = Workflow("simple", [_step(i, gate=i in (3, 7)) for i in range(STEPS)])
KILLABLE = Workflow("killable", [_step(i, pace=PACE, gate=i in (3, 7)) for i in range(STEPS)])


def _wait_for_release(state: State) -> State:
    """Block until the file named in the state exists (or 30 s pass), saying so first."""
    print("waiting", flush=True)
    deadline = time.monotonic() + 30
    while not os.path.exists(state["release"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {**state, "released": True}


BLOCKING = Workflow(
    "blocking",
    [
        Step("prepare", lambda state: {**state, "prepared": True}),
        Step("wait", _wait_for_release),
        Step("finish", lambda state: {**state, "finished": True}),
    ],
)
